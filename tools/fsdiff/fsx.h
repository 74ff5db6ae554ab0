// fsx.h — the classic file system exerciser: one file, random reads, writes,
// truncates, fallocate (punch, zero, keep-size) and shared-mmap reads and
// writes, every read checked against an in-memory model of the file.
#pragma once

#include <cstdint>
#include <string>

namespace fsdiff {

struct FsxOptions {
  std::string file;  // created (truncated) and removed at the end on success
  size_t ops = 100000;
  uint64_t seed = 0;
  int64_t max_dense = 1 << 20;  // most offsets fall below this; a few land near 1 GiB
  bool check_holes = true;      // SEEK_HOLE answers must read as zeros (off: --ignore seekdata)
};

// Returns 0 on success, 1 on a mismatch (after printing the last ops), 2 if
// the file cannot be created.
int fsx_main(const FsxOptions& opt);

}  // namespace fsdiff
