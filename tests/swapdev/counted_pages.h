// CountedPages: a PageSource of heap pages with a limit, for the tests of
// the compressed pool and device; its destructor checks every page came back.
#pragma once

#include <catch2/catch.hpp>

#include <atomic>

#include "swapdev/page_source.h"

namespace tmpfsd::swapdev {

// Pages from the heap, at most `limit` out at once.
class CountedPages final : public PageSource {
 public:
  CountedPages(size_t page, size_t limit) : page_(page), limit_(limit) {}
  ~CountedPages() override { CHECK(out_ == 0); }
  size_t page_size() const override { return page_; }
  std::byte* take() override {
    if (out_.fetch_add(1) >= limit_) {
      --out_;
      return nullptr;
    }
    return new std::byte[page_];
  }
  void give(std::byte* p) override {
    --out_;
    delete[] p;
  }
  size_t used() const { return out_; }
  void set_limit(size_t n) { limit_ = n; }

 private:
  const size_t page_;
  std::atomic<size_t> limit_;
  std::atomic<size_t> out_{0};
};

}  // namespace tmpfsd::swapdev
