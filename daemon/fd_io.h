// write_all and read_full: whole transfers on a file descriptor, retrying
// EINTR and short counts (the hibernation image: daemon/persist.cc,
// daemon/image_seal.cc).
// Threads: any.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <span>

#include "core/result.h"

namespace tmpfsd {

// Every byte of `b` to `fd`, or the errno of the write that failed.
inline Status write_all(int fd, std::span<const std::byte> b) {
  while (!b.empty()) {
    const ssize_t n = ::write(fd, b.data(), b.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Errno{errno};
    b = b.subspan(static_cast<size_t>(n));
  }
  return {};
}

// Fills `out` from `fd`, or as much of it as the file has left: the bytes
// read (fewer than out.size() only at the end), or the errno of a failure.
inline Result<size_t> read_full(int fd, std::span<std::byte> out) {
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Errno{errno};
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  return got;
}

}  // namespace tmpfsd
