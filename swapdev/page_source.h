// PageSource: where a device that keeps pages in memory (the compressed
// pool, zpool.h) takes them from. The page cache hands its frame pool over
// (core/page_cache/page_cache.cc, SwapDevice::use_pages), so that the
// memory counts against --memory like any frame; tests use a counted heap.
//
// Threads: any thread may call take() and give() concurrently.
#pragma once

#include <cstddef>

namespace tmpfsd::swapdev {

class PageSource {
 public:
  virtual ~PageSource() = default;
  virtual size_t page_size() const = 0;
  // A page of memory (contents undefined), or null when none is free.
  virtual std::byte* take() = 0;
  // A page take() returned.
  virtual void give(std::byte* page) = 0;
  // Called once by the device that takes pages, before the first take(): a
  // source may promise it a few pages now, so that take() finds one even
  // when everything else is taken (FramePages).
  virtual void keep_spare() {}
};

}  // namespace tmpfsd::swapdev
