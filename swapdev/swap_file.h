// SwapFile: creates the private backing file of a UringSwapDevice. Internal
// to swapdev.
//
// The file has no name (O_TMPFILE, or create+unlink where that is
// missing), mode 0600, so nobody else can open it and it vanishes with the
// process, crash included; with SwapFileOptions::name (--persist) it is
// DIR/name instead, opened as it is and kept. Its whole size is reserved
// with fallocate up front so the swap cannot run out of disk mid-eviction.
// A tmpfs (or ramfs) directory is refused: swapping memory into memory
// only doubles the cost. O_DIRECT is used when the file system takes it,
// buffered I/O otherwise (with a warning).
#pragma once

#include <cstdint>
#include <string>

namespace tmpfsd::swapdev {

struct SwapFileOptions {
  std::string dir;
  // Non-empty: the file is dir/name, created if missing, opened as it is
  // (not truncated) and kept after the process (--persist: its slots are
  // read back by the next start); the size is reserved all the same.
  std::string name{};
  uint64_t size_bytes = 0;
  bool direct_io = true;
  bool allow_tmpfs = false;  // tests of the buffered fallback only
  // Tests only: behave as if the file system lacked O_TMPFILE, refused
  // O_DIRECT at open, or accepted it at open and refused it at I/O time.
  bool test_no_tmpfile = false;
  bool test_refuse_direct_open = false;
  bool test_refuse_direct_io = false;
};

struct SwapFile {
  int fd = -1;          // owned by the caller on success
  bool direct = false;  // O_DIRECT in effect
  bool can_punch = true;
  unsigned dio_shift = 12;  // O_DIRECT: log2 of the smallest aligned write
  int err = 0;              // 0 or -errno
  std::string error;        // why, for a person, when err != 0
};

SwapFile create_swap_file(const SwapFileOptions& opt) noexcept;

}  // namespace tmpfsd::swapdev
