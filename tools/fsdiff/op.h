// op.h — one file system operation, as fsdiff generates, prints and replays it.
//
// An Op is plain data: everything needed to apply it is in its fields, so a
// sequence can be shrunk (ops dropped) and still replayed. Ops never refer to
// outcomes of earlier ops except through fd *slots*: each side keeps its own
// small table of open descriptors, and an op names a slot, not a number.
//
// The text form is one line, "kind key=value ...", printing only the fields
// that kind uses; flags are printed symbolically. parse_op() reads it back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fsdiff {

enum class OpKind : uint8_t {
  Open,
  Close,
  Read,
  Write,
  Pread,
  Pwrite,
  Truncate,
  Ftruncate,
  Fallocate,
  Lseek,
  Rename,
  Link,
  Unlink,
  Mkdir,
  Rmdir,
  Symlink,
  Readlink,
  Mkfifo,
  Chmod,
  Chown,
  Utimens,
  Setxattr,
  Getxattr,
  Listxattr,
  Removexattr,
  MmapWrite,
  MmapRead,
  Fsync,
  Fdatasync,
  CopyRange,
  Statfs,
  Stat,
  Fstat,
  Readdir,
  // O_TMPFILE and naming it, birth time, POSIX ACLs, inode flags.
  Tmpfile,   // open(dir, O_TMPFILE | flags, mode) into slot fd
  Linkfd,    // linkat(slot fd, "", root, path2, AT_EMPTY_PATH)
  Statx,     // statx(path, STATX_BTIME): btime's relation to ctime/mtime and to itself
  Setacl,    // setxattr(path, name = system.posix_acl_*, acl_value(dseed, len))
  Setflags,  // FS_IOC_SETFLAGS(flags) on path, opened O_RDONLY|O_NOFOLLOW
  Getflags,  // FS_IOC_GETFLAGS on path
  Count_     // not an op: number of kinds
};

// Special values of Op::atime / Op::mtime (utimensat); others are ns since epoch.
inline constexpr int64_t kTimeNow = -1;
inline constexpr int64_t kTimeOmit = -2;

inline constexpr int kSlots = 6;  // fd slots per side

struct Op {
  OpKind kind = OpKind::Stat;
  std::string path;    // main path, relative to the run's root
  std::string path2;   // rename/link destination; symlink target
  std::string name;    // xattr name
  int fd = 0;          // slot
  int fd2 = 0;         // second slot (copy_file_range destination)
  int64_t off = 0;     // offset (pread, pwrite, fallocate, lseek, mmap, cfr source)
  int64_t off2 = 0;    // copy_file_range destination offset
  int64_t len = 0;     // length / size / buffer size
  uint32_t flags = 0;  // open, fallocate mode, rename, xattr, lseek whence, *at flags
  uint32_t mode = 0;   // permission bits
  uint32_t uid = 0, gid = 0;
  int64_t atime = kTimeOmit, mtime = kTimeOmit;
  uint64_t dseed = 0;  // seed of the bytes written (write, pwrite, mmap, setxattr)
};

const char* kind_name(OpKind k);
std::string to_text(const Op& op);
// Parses one line of to_text() output; nullopt and *err set on failure.
std::optional<Op> parse_op(const std::string& line, std::string* err);

// Reads a replay file: '#' lines and blank lines are ignored.
bool read_ops_file(const std::string& file, std::vector<Op>* ops, std::string* err);
bool write_ops_file(const std::string& file, const std::vector<Op>& ops, const std::string& header,
                    std::string* err);

// The value of a POSIX ACL xattr for setacl: made from dseed alone, so the
// text form of the op is enough to replay it. variant 0 is a valid ACL
// (USER_OBJ, some USER, GROUP_OBJ, some GROUP, MASK when needed, OTHER,
// sorted); 1..kAclInvalidVariants are invalid ones (see op.cc).
inline constexpr int kAclInvalidVariants = 5;
std::vector<uint8_t> acl_value(uint64_t dseed, int variant);

// Deterministic bytes for a write: byte i of the stream seeded by dseed.
void fill_pattern(uint64_t dseed, uint8_t* buf, size_t n);

std::string errno_name(int e);

}  // namespace fsdiff
