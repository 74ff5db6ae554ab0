// outcome.h — what one op did on one side, and comparing two of them.
//
// An Outcome is the return value and errno of the op, the bytes it returned
// (read data, link target, xattr value, sorted names), and named "facts":
// text summaries of observations made right after the op (lstat of the paths
// it touched, fstat of its descriptors, a whole-tree walk now and then).
// Facts are already normalised to what is comparable across two file
// systems — no inode numbers, no st_dev, no absolute times — so comparing is
// plain string equality, and a report can print them as they are.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fsdiff {

// Fields the user asked not to compare (--ignore), e.g. known divergences.
struct Ignore {
  bool atime = false;  // "did atime move"
  bool mtime = false;
  bool ctime = false;
  bool dirsize = false;   // st_size of directories (tmpfs counts 20 bytes per entry)
  bool blocks = false;    // st_blocks == 0 or not
  bool seekdata = false;  // SEEK_DATA / SEEK_HOLE answers
  bool xattr = false;     // xattr values and lists in tree walks
  // st_blocks and SEEK_DATA/SEEK_HOLE of files that have been read through a
  // shared mapping: tmpfs allocates a page for a read fault on a hole, which
  // a FUSE daemon cannot tell from a read(2) (see fsdiff-known-divergences.md).
  bool mmaphole = false;
  // Times of fifos: a pipe read or write stamps the fifo's inode on tmpfs;
  // through FUSE the kernel stamps nothing and the daemon never hears of it.
  bool fifotimes = false;
  // lseek on directories: tmpfs allows SEEK_SET/SEEK_CUR only; FUSE answers
  // with generic_file_llseek in the kernel, without asking the daemon.
  bool dirseek = false;
  // unlink/rmdir/rename near an immutable or append-only inode: tmpfs says
  // EPERM before EISDIR/ENOTDIR; through FUSE the VFS gives the type error
  // first, as it never sees the flags (fsdiff-known-divergences.md, 12).
  bool flagerrno = false;
};

struct Outcome {
  int64_t ret = 0;
  int err = 0;
  bool has_data = false;
  std::vector<uint8_t> data;
  std::map<std::string, std::string> facts;
};

// Returns "" when equal, else a multi-line description of every difference.
std::string compare_outcomes(const Outcome& a, const Outcome& b);

}  // namespace fsdiff
