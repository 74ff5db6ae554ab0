// gen.cc — choosing ops and arguments.
#include "gen.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>

namespace fsdiff {
namespace {

const char* const kNames[] = {"a", "b", "c", "d", "e", "f"};
const char* const kXattrNames[] = {"user.x", "user.y", "user.long_attribute_name", "user.z"};
const char* const kAclNames[] = {"system.posix_acl_access", "system.posix_acl_default"};

// Relative weights of the kinds, in OpKind order. Data ops and opens are
// frequent; the namespace ops come often enough to make descriptors outlive
// their names.
const int kWeights[] = {
    12,  // open
    4,   // close
    5,   // read
    7,   // write
    6,   // pread
    8,   // pwrite
    3,   // truncate
    3,   // ftruncate
    4,   // fallocate
    5,   // lseek
    5,   // rename
    3,   // link
    4,   // unlink
    5,   // mkdir
    2,   // rmdir
    3,   // symlink
    2,   // readlink
    1,   // mkfifo
    2,   // chmod
    2,   // chown
    3,   // utimens
    4,   // setxattr
    3,   // getxattr
    2,   // listxattr
    2,   // removexattr
    3,   // mmapwrite
    2,   // mmapread
    1,   // fsync
    1,   // fdatasync
    3,   // copyrange
    1,   // statfs
    3,   // stat
    2,   // fstat
    3,   // readdir
    // O_TMPFILE, btime, ACL and inode-flag ops: 11 of 130 (8.5%) together.
    3,  // tmpfile
    2,  // linkfd
    2,  // statx
    2,  // setacl
    1,  // setflags (i and a rarely: see next())
    1,  // getflags
};
static_assert(sizeof(kWeights) / sizeof(kWeights[0]) == size_t(OpKind::Count_));

}  // namespace

std::string Generator::random_path() {
  // Depth 1 most of the time, so that deeper paths have existing parents.
  int depth = chance(55) ? 1 : chance(75) ? 2 : 3;
  std::string p;
  for (int i = 0; i < depth; i++) {
    if (i) p += '/';
    p += kNames[below(std::size(kNames))];
  }
  return p;
}

std::string Generator::pick_existing(char type) {
  std::vector<const std::string*> c;
  for (const auto& [p, t] : tree_)
    if (!type || t == type) c.push_back(&p);
  return c.empty() ? random_path() : *c[below(c.size())];
}

std::string Generator::pick_path() {
  uint64_t r = below(100);
  if (r < 65) return pick_existing(0);
  if (r < 80) return pick_new_path();
  return random_path();
}

std::string Generator::pick_file_path() { return chance(60) ? pick_existing('f') : pick_path(); }

std::string Generator::pick_new_path() {
  if (chance(60)) {
    std::string d = pick_existing('d');
    if (tree_.count(d) && tree_[d] == 'd') return d + "/" + kNames[below(std::size(kNames))];
  }
  return random_path();
}

void Generator::remove_tree(const std::string& p) {
  tree_.erase(p);
  auto it = tree_.lower_bound(p + "/");
  while (it != tree_.end() && it->first.compare(0, p.size() + 1, p + "/") == 0)
    it = tree_.erase(it);
}

void Generator::move_tree(const std::string& from, const std::string& to) {
  std::vector<std::pair<std::string, char>> moved;
  for (const auto& [p, t] : tree_)
    if (p == from || p.compare(0, from.size() + 1, from + "/") == 0)
      moved.emplace_back(to + p.substr(from.size()), t);
  remove_tree(from);
  for (auto& [p, t] : moved) tree_[p] = t;
}

void Generator::feedback(const Op& op, int64_t ret) {
  if (ret < 0) {
    if (op.kind == OpKind::Open || op.kind == OpKind::Close || op.kind == OpKind::Tmpfile) {
      open_[op.fd] = false;
      slot_path_[op.fd].clear();
    }
    return;
  }
  switch (op.kind) {
    case OpKind::Tmpfile:
      open_[op.fd] = true;
      slot_path_[op.fd].clear();
      break;
    case OpKind::Setflags:
      if (op.flags & (FS_IMMUTABLE_FL | FS_APPEND_FL))
        ia_flagged_.insert(op.path);
      else
        ia_flagged_.erase(op.path);
      break;
    case OpKind::Linkfd:
      if (!tree_.count(op.path2)) tree_[op.path2] = 'f';
      break;
    case OpKind::Open:
      open_[op.fd] = true;
      slot_path_[op.fd] = op.path;
      if ((op.flags & O_CREAT) && !tree_.count(op.path)) tree_[op.path] = 'f';
      break;
    case OpKind::Close:
      open_[op.fd] = false;
      slot_path_[op.fd].clear();
      break;
    case OpKind::Setxattr:
    case OpKind::Setacl:  // so that getxattr and removexattr find it
      xattr_path_ = op.path, xattr_name_ = op.name;
      break;
    case OpKind::Mkdir:
      tree_[op.path] = 'd';
      break;
    case OpKind::Symlink:
      tree_[op.path] = 'l';
      break;
    case OpKind::Mkfifo:
      tree_[op.path] = 'p';
      break;
    case OpKind::Link:
      tree_[op.path2] = tree_.count(op.path) ? tree_[op.path] : 'f';
      break;
    case OpKind::Unlink:
    case OpKind::Rmdir:
      remove_tree(op.path);
      break;
    case OpKind::Rename:
      if (op.flags & RENAME_EXCHANGE) {
        move_tree(op.path, "\x01tmp");
        move_tree(op.path2, op.path);
        move_tree("\x01tmp", op.path2);
      } else if (op.path != op.path2) {
        remove_tree(op.path2);
        move_tree(op.path, op.path2);
      }
      break;
    default:
      break;
  }
}

int Generator::pick_slot() {
  // Prefer slots we believe are open; a closed slot still yields a useful EBADF.
  int open_slots[kSlots], n = 0;
  for (int i = 0; i < kSlots; i++)
    if (open_[i]) open_slots[n++] = i;
  if (n && chance(90)) return open_slots[below(n)];
  return int(below(kSlots));
}

int64_t Generator::pick_off() {
  uint64_t r = below(100);
  if (r < 45) return int64_t(below(64 * 1024));
  if (r < 60) return int64_t(below(16) * 4096 + (chance(50) ? 0 : 4096 - below(8)));  // page edges
  if (r < 90) return int64_t(below(4 << 20));
  if (r < 97) return int64_t(below(16 << 20));
  return int64_t((1LL << 30) + below(1 << 20));  // far and sparse
}

int64_t Generator::pick_len() {
  uint64_t r = below(100);
  if (r < 55) return int64_t(below(8192));
  if (r < 85) return int64_t(below(128 * 1024));
  if (r < 98) return int64_t(below(1 << 20));
  return int64_t(below(4 << 20));
}

uint32_t Generator::pick_mode() {
  static const uint32_t modes[] = {0644, 0600, 0755, 0700, 0444, 0000, 01777, 02755, 04711, 0666};
  return modes[below(std::size(modes))];
}

Op Generator::next() {
  int total = 0;
  for (int w : kWeights) total += w;
  int r = int(below(total));
  size_t k = 0;
  while (r >= kWeights[k]) r -= kWeights[k++];

  Op op;
  op.kind = OpKind(k);
  op.dseed = rng_();
  switch (op.kind) {
    case OpKind::Open: {
      static const uint32_t acc[] = {O_RDONLY, O_WRONLY, O_RDWR, O_RDWR};
      op.flags = acc[below(std::size(acc))];
      if (chance(60)) op.flags |= O_CREAT;
      if (chance(20)) op.flags |= O_EXCL;
      if (chance(15)) op.flags |= O_TRUNC;
      if (chance(15)) op.flags |= O_APPEND;
      if (chance(5)) op.flags |= O_DIRECTORY;
      if (chance(5)) op.flags |= O_NOFOLLOW;
      op.mode = chance(80) ? 0644 : pick_mode();
      op.path = (op.flags & O_CREAT) && chance(40) ? pick_new_path() : pick_file_path();
      // Prefer a free slot, so that descriptors accumulate (and outlive names).
      op.fd = int(below(kSlots));
      for (int i = 0; i < kSlots && open_[op.fd] && chance(70); i++) op.fd = (op.fd + 1) % kSlots;
      break;
    }
    case OpKind::Close:
      op.fd = pick_slot();
      break;
    case OpKind::Read:
      op.fd = pick_slot();
      op.len = pick_len();
      break;
    case OpKind::Write:
      op.fd = pick_slot();
      op.len = pick_len();
      break;
    case OpKind::Pread:
    case OpKind::Pwrite:
    case OpKind::MmapWrite:
    case OpKind::MmapRead:
      op.fd = pick_slot();
      op.off = pick_off();
      op.len = pick_len();
      break;
    case OpKind::Truncate:
      op.path = pick_file_path();
      op.len = chance(30) ? 0 : pick_off();
      break;
    case OpKind::Ftruncate:
      op.fd = pick_slot();
      op.len = chance(30) ? 0 : pick_off();
      break;
    case OpKind::Fallocate: {
      op.fd = pick_slot();
      static const uint32_t modes[] = {0, FALLOC_FL_KEEP_SIZE,
                                       FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                       FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE};
      op.flags = modes[below(std::size(modes))];
      op.off = pick_off();
      op.len = std::max<int64_t>(1, pick_len());
      break;
    }
    case OpKind::Lseek: {
      op.fd = pick_slot();
      static const uint32_t wh[] = {SEEK_SET,  SEEK_CUR,  SEEK_END, SEEK_DATA,
                                    SEEK_HOLE, SEEK_DATA, SEEK_HOLE};
      op.flags = wh[below(std::size(wh))];
      op.off = chance(10) ? -int64_t(below(8192)) : pick_off();
      break;
    }
    case OpKind::Rename:
      op.path = pick_path();
      op.path2 = chance(50) ? pick_path() : pick_new_path();
      op.flags = chance(60) ? 0 : chance(50) ? RENAME_NOREPLACE : RENAME_EXCHANGE;
      break;
    case OpKind::Link:
      op.path = pick_file_path();
      op.path2 = chance(70) ? pick_new_path() : pick_path();
      break;
    case OpKind::Unlink:
    case OpKind::Statfs:
    case OpKind::Stat:
      op.path = pick_path();
      break;
    case OpKind::Rmdir:
    case OpKind::Readdir:
      op.path = chance(60) ? pick_existing('d') : pick_path();
      break;
    case OpKind::Mkdir:
      op.path = chance(85) ? pick_new_path() : pick_path();
      op.mode = chance(85) ? 0755 : pick_mode();
      break;
    case OpKind::Symlink:
      op.path = chance(80) ? pick_new_path() : pick_path();
      // Targets are relative pool paths (never absolute, never ".."), so even a
      // followed link stays inside the run's directory.
      op.path2 = chance(20) ? std::string(kNames[below(std::size(kNames))]) + "/" +
                                  kNames[below(std::size(kNames))]
                            : random_path();
      break;
    case OpKind::Readlink:
      op.path = chance(60) ? pick_existing('l') : pick_path();
      op.len = chance(80) ? 256 : int64_t(below(4));
      break;
    case OpKind::Mkfifo:
      op.path = chance(80) ? pick_new_path() : pick_path();
      op.mode = 0644;
      break;
    case OpKind::Chmod:
      op.path = pick_path();
      op.mode = pick_mode();
      break;
    case OpKind::Chown:
      op.path = pick_path();
      op.uid = chance(50) ? 0 : uint32_t(1000 + below(3));
      op.gid = chance(50) ? 0 : uint32_t(1000 + below(3));
      op.flags = chance(30) ? AT_SYMLINK_NOFOLLOW : 0;
      break;
    case OpKind::Utimens: {
      op.path = pick_path();
      auto t = [&]() -> int64_t {
        uint64_t c = below(10);
        if (c < 3) return kTimeNow;
        if (c < 5) return kTimeOmit;
        return int64_t(1000000000LL * (1500000000 + below(200000000)) + below(1000000000));
      };
      op.atime = t();
      op.mtime = t();
      op.flags = chance(20) ? AT_SYMLINK_NOFOLLOW : 0;
      break;
    }
    case OpKind::Setxattr:
      op.path = pick_path();
      op.name = kXattrNames[below(std::size(kXattrNames))];
      // Mostly small values; sometimes large enough to meet per-fs limits.
      op.len = chance(90) ? int64_t(below(200)) : chance(70) ? int64_t(below(8192)) : 70000;
      op.flags = chance(60) ? 0 : chance(50) ? XATTR_CREATE : XATTR_REPLACE;
      break;
    case OpKind::Getxattr:
      op.path = pick_path();
      op.name = kXattrNames[below(std::size(kXattrNames))];
      if (!xattr_path_.empty() && chance(60)) op.path = xattr_path_, op.name = xattr_name_;
      if (chance(15)) op.name = kAclNames[below(std::size(kAclNames))];
      op.len = chance(80) ? 65536 : chance(50) ? 0 : int64_t(below(16));  // 0 asks for the size
      break;
    case OpKind::Listxattr:
      op.path = !xattr_path_.empty() && chance(50) ? xattr_path_ : pick_path();
      op.len = chance(80) ? 65536 : chance(50) ? 0 : int64_t(below(16));
      break;
    case OpKind::Removexattr:
      op.path = pick_path();
      op.name = kXattrNames[below(std::size(kXattrNames))];
      if (!xattr_path_.empty() && chance(60)) op.path = xattr_path_, op.name = xattr_name_;
      if (chance(15)) op.name = kAclNames[below(std::size(kAclNames))];
      break;
    case OpKind::Fsync:
    case OpKind::Fdatasync:
    case OpKind::Fstat:
      op.fd = pick_slot();
      break;
    case OpKind::CopyRange: {
      op.fd = pick_slot();
      op.fd2 = pick_slot();
      // Often into a descriptor whose file became immutable or append-only
      // after it was opened (generic_copy_file_checks' EPERM; xfstests generic/553).
      std::vector<int> flagged;
      for (int i = 0; i < kSlots; i++)
        if (open_[i] && ia_flagged_.count(slot_path_[i])) flagged.push_back(i);
      if (!flagged.empty() && chance(50)) op.fd2 = flagged[below(flagged.size())];
      // Mostly from inside the source, so that something is copied.
      op.off = chance(50) ? int64_t(below(8192)) : pick_off();
      op.off2 = pick_off();
      op.len = pick_len();
      break;
    }
    case OpKind::Tmpfile: {
      static const uint32_t acc[] = {O_RDWR, O_RDWR, O_WRONLY, O_RDONLY};  // O_RDONLY: EINVAL
      op.flags = acc[below(std::size(acc))] | (chance(30) ? O_EXCL : 0);
      op.mode = chance(70) ? 0644 : pick_mode();
      op.path = chance(75) ? pick_existing('d') : pick_path();
      if (chance(20)) op.path = ".";
      op.fd = int(below(kSlots));
      for (int i = 0; i < kSlots && open_[op.fd] && chance(70); i++) op.fd = (op.fd + 1) % kSlots;
      break;
    }
    case OpKind::Linkfd:
      op.fd = pick_slot();
      op.path2 = chance(80) ? pick_new_path() : pick_path();
      break;
    case OpKind::Statx:
      op.path = chance(20) ? "." : pick_path();
      break;
    case OpKind::Setacl:
      op.name = kAclNames[chance(60) ? 0 : 1];
      op.path = op.name == kAclNames[1] && chance(80) ? pick_existing('d') : pick_path();
      if (chance(10)) op.path = ".";
      op.len = chance(85) ? 0 : int64_t(1 + below(kAclInvalidVariants));
      break;
    case OpKind::Setflags: {
      // Immutable and append-only make most later ops on the file fail, so
      // they are rare; nodump and noatime are harmless and common.
      op.path = pick_path();
      // Sometimes the file of an open descriptor, which keeps writing; then
      // i and a are common, so that copy_file_range meets them.
      bool of_slot = false;
      if (chance(30)) {
        for (int i = 0, start = int(below(kSlots)); i < kSlots && !of_slot; i++) {
          int slot = (start + i) % kSlots;
          if (open_[slot] && !slot_path_[slot].empty()) {
            op.path = slot_path_[slot];
            of_slot = true;
          }
        }
      }
      if (chance(of_slot ? 40 : 10)) op.flags |= FS_IMMUTABLE_FL;
      if (chance(of_slot ? 30 : 12)) op.flags |= FS_APPEND_FL;
      if (chance(50)) op.flags |= FS_NODUMP_FL;
      if (chance(50)) op.flags |= FS_NOATIME_FL;
      if (chance(5)) op.flags |= chance(50) ? FS_SYNC_FL : FS_COMPR_FL;  // EOPNOTSUPP
      break;
    }
    case OpKind::Getflags:
      op.path = pick_path();
      break;
    case OpKind::Count_:
      break;
  }
  return op;
}

}  // namespace fsdiff
