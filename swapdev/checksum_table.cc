#include "swapdev/checksum_table.h"

#include <xxh_x86dispatch.h>
#include <xxhash.h>

#include <cerrno>

namespace tmpfsd::swapdev {

ChecksumTable::ChecksumTable(uint64_t slots)
    : sums_(std::make_unique<std::atomic<uint64_t>[]>(slots)) {
  for (uint64_t i = 0; i < slots; ++i) sums_[i].store(0, std::memory_order_relaxed);
}

uint64_t ChecksumTable::hash(std::span<const std::byte> page) {
  // The same XXH3-64 as XXH3_64bits(), with the widest vector unit the CPU
  // has (AVX2/AVX-512) chosen at run time instead of the library's SSE2.
  return XXH3_64bits_dispatch(page.data(), page.size());
}

int ChecksumTable::verify(uint64_t slot, std::span<const std::byte> page) const {
  uint64_t want = sums_[slot].load(std::memory_order_acquire);
  if (want == 0) return -ENODATA;
  if (want == kPoisoned) return -EIO;
  return encode(hash(page)) == want ? 0 : -EIO;
}

}  // namespace tmpfsd::swapdev
