// op.cc — text form of an Op (print and parse) and the write pattern.
#include "op.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

#include <fmt/core.h>

namespace fsdiff {
namespace {

// Which fields a kind prints; the parser accepts any field for any kind.
enum Field : uint32_t {
  F_PATH = 1,
  F_PATH2 = 2,
  F_NAME = 4,
  F_FD = 8,
  F_FD2 = 16,
  F_OFF = 32,
  F_OFF2 = 64,
  F_LEN = 128,
  F_FLAGS = 256,
  F_MODE = 512,
  F_OWNER = 1024,
  F_TIMES = 2048,
  F_DSEED = 4096,
};

// How Op::flags is spelled for a kind.
enum class FlagSet { None, Open, Falloc, Rename, Xattr, Whence, At, Inode };

struct KindInfo {
  const char* name;
  uint32_t fields;
  FlagSet flagset;
};

const KindInfo kKinds[] = {
    {"open", F_PATH | F_FLAGS | F_MODE | F_FD, FlagSet::Open},
    {"close", F_FD, FlagSet::None},
    {"read", F_FD | F_LEN, FlagSet::None},
    {"write", F_FD | F_LEN | F_DSEED, FlagSet::None},
    {"pread", F_FD | F_OFF | F_LEN, FlagSet::None},
    {"pwrite", F_FD | F_OFF | F_LEN | F_DSEED, FlagSet::None},
    {"truncate", F_PATH | F_LEN, FlagSet::None},
    {"ftruncate", F_FD | F_LEN, FlagSet::None},
    {"fallocate", F_FD | F_FLAGS | F_OFF | F_LEN, FlagSet::Falloc},
    {"lseek", F_FD | F_OFF | F_FLAGS, FlagSet::Whence},
    {"rename", F_PATH | F_PATH2 | F_FLAGS, FlagSet::Rename},
    {"link", F_PATH | F_PATH2, FlagSet::None},
    {"unlink", F_PATH, FlagSet::None},
    {"mkdir", F_PATH | F_MODE, FlagSet::None},
    {"rmdir", F_PATH, FlagSet::None},
    {"symlink", F_PATH | F_PATH2, FlagSet::None},
    {"readlink", F_PATH | F_LEN, FlagSet::None},
    {"mkfifo", F_PATH | F_MODE, FlagSet::None},
    {"chmod", F_PATH | F_MODE, FlagSet::None},
    {"chown", F_PATH | F_OWNER | F_FLAGS, FlagSet::At},
    {"utimens", F_PATH | F_TIMES | F_FLAGS, FlagSet::At},
    {"setxattr", F_PATH | F_NAME | F_LEN | F_DSEED | F_FLAGS, FlagSet::Xattr},
    {"getxattr", F_PATH | F_NAME | F_LEN, FlagSet::None},
    {"listxattr", F_PATH | F_LEN, FlagSet::None},
    {"removexattr", F_PATH | F_NAME, FlagSet::None},
    {"mmapwrite", F_FD | F_OFF | F_LEN | F_DSEED, FlagSet::None},
    {"mmapread", F_FD | F_OFF | F_LEN, FlagSet::None},
    {"fsync", F_FD, FlagSet::None},
    {"fdatasync", F_FD, FlagSet::None},
    {"copyrange", F_FD | F_OFF | F_FD2 | F_OFF2 | F_LEN, FlagSet::None},
    {"statfs", F_PATH, FlagSet::None},
    {"stat", F_PATH, FlagSet::None},
    {"fstat", F_FD, FlagSet::None},
    {"readdir", F_PATH, FlagSet::None},
    {"tmpfile", F_PATH | F_FLAGS | F_MODE | F_FD, FlagSet::Open},
    {"linkfd", F_FD | F_PATH2, FlagSet::None},
    {"statx", F_PATH, FlagSet::None},
    {"setacl", F_PATH | F_NAME | F_LEN | F_DSEED, FlagSet::None},
    {"setflags", F_PATH | F_FLAGS, FlagSet::Inode},
    {"getflags", F_PATH, FlagSet::None},
};
static_assert(sizeof(kKinds) / sizeof(kKinds[0]) == size_t(OpKind::Count_));

struct FlagName {
  uint32_t bit;
  const char* name;
};

#define FN(x) \
  { uint32_t(x), #x }
const FlagName kOpenFlags[] = {FN(O_WRONLY), FN(O_RDWR),   FN(O_CREAT),     FN(O_EXCL),
                               FN(O_TRUNC),  FN(O_APPEND), FN(O_DIRECTORY), FN(O_NOFOLLOW)};
const FlagName kFallocFlags[] = {FN(FALLOC_FL_KEEP_SIZE), FN(FALLOC_FL_PUNCH_HOLE),
                                 FN(FALLOC_FL_ZERO_RANGE)};
const FlagName kRenameFlags[] = {FN(RENAME_NOREPLACE), FN(RENAME_EXCHANGE)};
const FlagName kXattrFlags[] = {FN(XATTR_CREATE), FN(XATTR_REPLACE)};
const FlagName kAtFlags[] = {FN(AT_SYMLINK_NOFOLLOW)};
const FlagName kInodeFlags[] = {FN(FS_IMMUTABLE_FL), FN(FS_APPEND_FL), FN(FS_NODUMP_FL),
                                FN(FS_NOATIME_FL),   FN(FS_SYNC_FL),   FN(FS_COMPR_FL)};
const FlagName kWhence[] = {FN(SEEK_SET), FN(SEEK_CUR), FN(SEEK_END), FN(SEEK_DATA), FN(SEEK_HOLE)};
#undef FN

template <size_t N>
std::string bits_text(uint32_t v, const FlagName (&tab)[N], const char* zero) {
  std::string s;
  for (const auto& f : tab) {
    if (v & f.bit) {
      if (!s.empty()) s += '|';
      s += f.name;
      v &= ~f.bit;
    }
  }
  if (v) {
    if (!s.empty()) s += '|';
    s += fmt::format("{:#x}", v);
  }
  return s.empty() ? zero : s;
}

std::string flags_text(FlagSet fs, uint32_t v) {
  switch (fs) {
    case FlagSet::Open: {
      std::string s = bits_text(v & ~uint32_t(O_ACCMODE | O_WRONLY | O_RDWR), kOpenFlags, "");
      const char* acc = (v & O_ACCMODE) == O_WRONLY ? "O_WRONLY"
                        : (v & O_ACCMODE) == O_RDWR ? "O_RDWR"
                                                    : "O_RDONLY";
      return s.empty() ? acc : std::string(acc) + "|" + s;
    }
    case FlagSet::Falloc:
      return bits_text(v, kFallocFlags, "0");
    case FlagSet::Rename:
      return bits_text(v, kRenameFlags, "0");
    case FlagSet::Xattr:
      return bits_text(v, kXattrFlags, "0");
    case FlagSet::At:
      return bits_text(v, kAtFlags, "0");
    case FlagSet::Inode:
      return bits_text(v, kInodeFlags, "0");
    case FlagSet::Whence:
      for (const auto& w : kWhence)
        if (w.bit == v) return w.name;
      return std::to_string(v);
    case FlagSet::None:
      break;
  }
  return std::to_string(v);
}

bool parse_flags(const std::string& s, uint32_t* out) {
  static const std::pair<const FlagName*, size_t> tables[] = {
      {kOpenFlags, std::size(kOpenFlags)},     {kFallocFlags, std::size(kFallocFlags)},
      {kRenameFlags, std::size(kRenameFlags)}, {kXattrFlags, std::size(kXattrFlags)},
      {kAtFlags, std::size(kAtFlags)},         {kWhence, std::size(kWhence)},
      {kInodeFlags, std::size(kInodeFlags)}};
  uint32_t v = 0;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, '|')) {
    if (tok == "O_RDONLY") continue;
    bool found = false;
    for (const auto& [tab, n] : tables) {
      for (size_t i = 0; i < n && !found; i++) {
        if (tok == tab[i].name) {
          v |= tab[i].bit;
          found = true;
        }
      }
    }
    if (!found) {
      char* end = nullptr;
      unsigned long x = strtoul(tok.c_str(), &end, 0);
      if (tok.empty() || *end) return false;
      v |= uint32_t(x);
    }
  }
  *out = v;
  return true;
}

std::string time_text(int64_t t) {
  if (t == kTimeNow) return "NOW";
  if (t == kTimeOmit) return "OMIT";
  return fmt::format("{}.{:09}", t / 1000000000, t % 1000000000);
}

bool parse_time(const std::string& s, int64_t* out) {
  if (s == "NOW") {
    *out = kTimeNow;
    return true;
  }
  if (s == "OMIT") {
    *out = kTimeOmit;
    return true;
  }
  long long sec = 0, ns = 0;
  if (sscanf(s.c_str(), "%lld.%lld", &sec, &ns) != 2) return false;
  *out = sec * 1000000000LL + ns;
  return true;
}

bool parse_i64(const std::string& s, int64_t* out) {
  char* end = nullptr;
  errno = 0;
  long long v = strtoll(s.c_str(), &end, 0);
  if (s.empty() || *end || errno) return false;
  *out = v;
  return true;
}

}  // namespace

const char* kind_name(OpKind k) { return kKinds[size_t(k)].name; }

std::string to_text(const Op& op) {
  const KindInfo& ki = kKinds[size_t(op.kind)];
  std::string s = ki.name;
  auto add = [&](const char* key, const std::string& v) { s += fmt::format(" {}={}", key, v); };
  uint32_t f = ki.fields;
  if (f & F_FD) add("fd", std::to_string(op.fd));
  if (f & F_PATH) add("path", op.path);
  if (f & F_PATH2) add("to", op.path2);
  if (f & F_NAME) add("name", op.name);
  if (f & F_OFF) add("off", std::to_string(op.off));
  if (f & F_FD2) add("fd2", std::to_string(op.fd2));
  if (f & F_OFF2) add("off2", std::to_string(op.off2));
  if (f & F_LEN) add("len", std::to_string(op.len));
  if (f & F_FLAGS) add("flags", flags_text(ki.flagset, op.flags));
  if (f & F_MODE) add("mode", fmt::format("{:#o}", op.mode));
  if (f & F_OWNER) {
    add("uid", std::to_string(op.uid));
    add("gid", std::to_string(op.gid));
  }
  if (f & F_TIMES) {
    add("atime", time_text(op.atime));
    add("mtime", time_text(op.mtime));
  }
  if (f & F_DSEED) add("dseed", std::to_string(op.dseed));
  return s;
}

std::optional<Op> parse_op(const std::string& line, std::string* err) {
  std::stringstream ss(line);
  std::string word;
  if (!(ss >> word)) {
    *err = "empty line";
    return std::nullopt;
  }
  Op op;
  bool known = false;
  for (size_t i = 0; i < size_t(OpKind::Count_); i++) {
    if (word == kKinds[i].name) {
      op.kind = OpKind(i);
      known = true;
    }
  }
  if (!known) {
    *err = "unknown op '" + word + "'";
    return std::nullopt;
  }
  while (ss >> word) {
    size_t eq = word.find('=');
    if (eq == std::string::npos) {
      *err = "expected key=value: " + word;
      return std::nullopt;
    }
    std::string k = word.substr(0, eq), v = word.substr(eq + 1);
    int64_t n = 0;
    bool ok = true;
    if (k == "path")
      op.path = v;
    else if (k == "to")
      op.path2 = v;
    else if (k == "name")
      op.name = v;
    else if (k == "flags")
      ok = parse_flags(v, &op.flags);
    else if (k == "atime")
      ok = parse_time(v, &op.atime);
    else if (k == "mtime")
      ok = parse_time(v, &op.mtime);
    else if (k == "mode") {
      ok = parse_i64(v, &n);
      op.mode = uint32_t(n);
    } else if (k == "dseed") {
      char* end = nullptr;
      errno = 0;
      op.dseed = strtoull(v.c_str(), &end, 0);
      ok = !v.empty() && !*end && !errno;
    } else if (!(ok = parse_i64(v, &n))) {
    } else if (k == "fd")
      op.fd = int(n);
    else if (k == "fd2")
      op.fd2 = int(n);
    else if (k == "off")
      op.off = n;
    else if (k == "off2")
      op.off2 = n;
    else if (k == "len")
      op.len = n;
    else if (k == "uid")
      op.uid = uint32_t(n);
    else if (k == "gid")
      op.gid = uint32_t(n);
    else {
      *err = "unknown key '" + k + "'";
      return std::nullopt;
    }
    if (!ok) {
      *err = "bad value for " + k + ": " + v;
      return std::nullopt;
    }
  }
  if (op.fd < 0 || op.fd >= kSlots || op.fd2 < 0 || op.fd2 >= kSlots) {
    *err = "fd slot out of range";
    return std::nullopt;
  }
  if (op.path.find("..") != std::string::npos || (!op.path.empty() && op.path[0] == '/') ||
      op.path2.find("..") != std::string::npos || (!op.path2.empty() && op.path2[0] == '/')) {
    // Paths must stay inside the run's directory: replay files are input too.
    *err = "paths must be relative and must not contain '..'";
    return std::nullopt;
  }
  return op;
}

bool read_ops_file(const std::string& file, std::vector<Op>* ops, std::string* err) {
  std::ifstream in(file);
  if (!in) {
    *err = "cannot open " + file + ": " + strerror(errno);
    return false;
  }
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    lineno++;
    size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos || line[b] == '#') continue;
    std::string e;
    auto op = parse_op(line, &e);
    if (!op) {
      *err = fmt::format("{}:{}: {}", file, lineno, e);
      return false;
    }
    ops->push_back(*op);
  }
  return true;
}

bool write_ops_file(const std::string& file, const std::vector<Op>& ops, const std::string& header,
                    std::string* err) {
  std::ofstream out(file);
  if (!out) {
    *err = "cannot create " + file + ": " + strerror(errno);
    return false;
  }
  out << header;
  for (const Op& op : ops) out << to_text(op) << '\n';
  out.close();
  if (!out) {
    *err = "write failed: " + file;
    return false;
  }
  return true;
}

std::vector<uint8_t> acl_value(uint64_t dseed, int variant) {
  // Tags and layout of linux/posix_acl_xattr.h: a u32 version (2), then
  // {u16 tag, u16 perm, u32 id} entries sorted by tag, then by id.
  enum : uint16_t {
    kUserObj = 1,
    kUser = 2,
    kGroupObj = 4,
    kGroup = 8,
    kMask = 0x10,
    kOther = 0x20
  };
  uint64_t x = dseed;
  auto take = [&](uint64_t n) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return (x >> 33) % n;
  };
  struct Entry {
    uint16_t tag, perm;
    uint32_t id;
  };
  std::vector<Entry> es;
  auto perm = [&] { return uint16_t(take(8)); };
  es.push_back({kUserObj, perm(), ~0u});
  // Named users and groups from a small set of ids, so that two ACLs often
  // name the same ones; each id at most once (a duplicate is invalid).
  for (uint32_t id = 1000; id < 1004; id++)
    if (take(3) == 0) es.push_back({kUser, perm(), id});
  es.push_back({kGroupObj, perm(), ~0u});
  for (uint32_t id = 1000; id < 1004; id++)
    if (take(3) == 0) es.push_back({kGroup, perm(), id});
  bool named = es.size() > 2;
  if (named || take(2)) es.push_back({kMask, perm(), ~0u});
  es.push_back({kOther, perm(), ~0u});
  uint32_t version = 2;
  switch (variant) {
    case 0:
      break;
    case 1:  // a named entry and no mask
      es.erase(std::remove_if(es.begin(), es.end(), [](const Entry& e) { return e.tag == kMask; }),
               es.end());
      if (!named) es.insert(es.begin() + 1, Entry{kUser, 7, 1000});
      break;
    case 2:  // wrong version
      version = 1;
      break;
    case 3:  // out of order
      std::swap(es.front(), es.back());
      break;
    case 4:  // an unknown tag
      es.back().tag = 0x40;
      break;
    default:  // no OTHER entry
      es.pop_back();
      break;
  }
  std::vector<uint8_t> v(4 + 8 * es.size());
  memcpy(v.data(), &version, 4);
  for (size_t i = 0; i < es.size(); i++) {
    memcpy(&v[4 + 8 * i], &es[i].tag, 2);
    memcpy(&v[6 + 8 * i], &es[i].perm, 2);
    memcpy(&v[8 + 8 * i], &es[i].id, 4);
  }
  return v;
}

void fill_pattern(uint64_t dseed, uint8_t* buf, size_t n) {
  // splitmix64 over the word index: fast, and any byte is a pure function of
  // (dseed, index), so two sides write identical bytes. With FSDIFF_FILL=half
  // every other 32 bytes are zeros: pages compress about 2:1, so that a
  // compressed pool keeps them (tests/mount/fsdiff_compress.sh).
  static const bool half = [] {
    const char* f = getenv("FSDIFF_FILL");
    return f && std::string_view(f) == "half";
  }();
  uint64_t x = dseed * 0x9E3779B97F4A7C15ULL + 1;
  size_t i = 0;
  while (i < n) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    if (half && (i >> 5) % 2 == 1) z = 0;
    size_t k = std::min<size_t>(8, n - i);
    memcpy(buf + i, &z, k);
    i += k;
  }
}

std::string errno_name(int e) {
  if (e == 0) return "0";
  const char* n = strerrorname_np(e);
  return n ? n : std::to_string(e);
}

}  // namespace fsdiff
