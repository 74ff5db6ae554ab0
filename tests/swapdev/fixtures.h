// Device fixtures for the behavioural tests every SwapDevice must pass. Each
// builds a device of `slots` slots and knows how to corrupt a slot behind the
// device's back and what bytes a slot holds on its medium.
#pragma once

#include <unistd.h>
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "swapdev/memory_swap_device.h"
#include "swapdev/uring_swap_device.h"
#include "tests/swapdev/test_util.h"

namespace tmpfsd::swapdev::test {

struct MemoryInline {
  static constexpr const char* kName = "memory-inline";
  std::unique_ptr<MemorySwapDevice> dev;
  explicit MemoryInline(uint64_t slots, uint32_t cluster = 256)
      : dev(std::make_unique<MemorySwapDevice>(MemorySwapDevice::Options{
            .slots = slots, .page_size = 4096, .cluster_slots = cluster})) {}
  SwapDevice& d() { return *dev; }
  void corrupt(SwapSlot s) { dev->corrupt(s, 100); }
  std::vector<std::byte> stored(SwapSlot s) { return dev->stored(s); }
};

struct MemoryThreaded {
  static constexpr const char* kName = "memory-thread";
  std::unique_ptr<MemorySwapDevice> dev;
  explicit MemoryThreaded(uint64_t slots, uint32_t cluster = 256)
      : dev(std::make_unique<MemorySwapDevice>(
            MemorySwapDevice::Options{.slots = slots,
                                      .page_size = 4096,
                                      .cluster_slots = cluster,
                                      .completion = MemorySwapDevice::Completion::Thread,
                                      .delay = std::chrono::microseconds(20)})) {}
  SwapDevice& d() { return *dev; }
  void corrupt(SwapSlot s) { dev->corrupt(s, 100); }
  std::vector<std::byte> stored(SwapSlot s) { return dev->stored(s); }
};

inline std::unique_ptr<UringSwapDevice> open_uring(UringOptions o) {
  UringOpenResult r = open_uring_swap_device(o);
  INFO(r.error);
  REQUIRE(r.err == 0);
  REQUIRE(r.device);
  return std::move(r.device);
}

// The slot's bytes in the file, read through the device's descriptor.
inline std::vector<std::byte> stored_in_file(UringSwapDevice& dev, SwapSlot s) {
  Pages p(1, dev.page_size());
  off_t off = static_cast<off_t>(s.value * dev.page_size());
  REQUIRE(::pread(dev.fd(), p.data(), dev.page_size(), off) ==
          static_cast<ssize_t>(dev.page_size()));
  return {p.data(), p.data() + dev.page_size()};
}

// Flips a byte of the slot in the file through the device's descriptor.
inline void corrupt_file(UringSwapDevice& dev, SwapSlot s) {
  Pages p(1, dev.page_size());
  off_t off = static_cast<off_t>(s.value * dev.page_size());
  REQUIRE(::pread(dev.fd(), p.data(), dev.page_size(), off) ==
          static_cast<ssize_t>(dev.page_size()));
  p.data()[100] ^= std::byte{0x5a};
  REQUIRE(::pwrite(dev.fd(), p.data(), dev.page_size(), off) ==
          static_cast<ssize_t>(dev.page_size()));
}

struct UringDirect {
  static constexpr const char* kName = "uring-direct";
  std::unique_ptr<UringSwapDevice> dev;
  explicit UringDirect(uint64_t slots, uint32_t cluster = 256)
      : dev(open_uring({.dir = "/var/tmp", .size_bytes = slots * 4096, .cluster_slots = cluster})) {
    REQUIRE(dev->direct_io());
  }
  SwapDevice& d() { return *dev; }
  void corrupt(SwapSlot s) { corrupt_file(*dev, s); }
  std::vector<std::byte> stored(SwapSlot s) { return stored_in_file(*dev, s); }
};

// Buffered I/O (the fallback where O_DIRECT is refused), on /dev/shm. The
// kernel's tmpfs takes O_DIRECT since 6.6, so the fallback is forced.
struct UringBuffered {
  static constexpr const char* kName = "uring-buffered";
  std::unique_ptr<UringSwapDevice> dev;
  explicit UringBuffered(uint64_t slots, uint32_t cluster = 256)
      : dev(open_uring({.dir = "/dev/shm",
                        .size_bytes = slots * 4096,
                        .cluster_slots = cluster,
                        .direct_io = false,
                        .allow_tmpfs = true})) {
    REQUIRE_FALSE(dev->direct_io());
  }
  SwapDevice& d() { return *dev; }
  void corrupt(SwapSlot s) { corrupt_file(*dev, s); }
  std::vector<std::byte> stored(SwapSlot s) { return stored_in_file(*dev, s); }
};

// Sealed devices (AES-256-GCM, swapdev/seal.h): what the slots hold is
// ciphertext, so stored() is not the page.
struct MemorySealed {
  static constexpr const char* kName = "memory-sealed";
  std::unique_ptr<MemorySwapDevice> dev;
  explicit MemorySealed(uint64_t slots, uint32_t cluster = 256)
      : dev(std::make_unique<MemorySwapDevice>(MemorySwapDevice::Options{
            .slots = slots, .page_size = 4096, .cluster_slots = cluster, .seal = true})) {
    REQUIRE(dev->sealed());
  }
  SwapDevice& d() { return *dev; }
  void corrupt(SwapSlot s) { dev->corrupt(s, 100); }
  std::vector<std::byte> stored(SwapSlot s) { return dev->stored(s); }
  void overwrite(SwapSlot s, std::span<const std::byte> b) { dev->overwrite(s, b); }
};

// Puts `bytes` in the slot of the file, as someone with the disk would.
inline void overwrite_file(UringSwapDevice& dev, SwapSlot s, std::span<const std::byte> bytes) {
  Pages p(1, dev.page_size());
  std::memcpy(p.data(), bytes.data(), dev.page_size());
  REQUIRE(::pwrite(dev.fd(), p.data(), dev.page_size(),
                   static_cast<off_t>(s.value * dev.page_size())) ==
          static_cast<ssize_t>(dev.page_size()));
}

struct UringSealed {
  static constexpr const char* kName = "uring-sealed";
  std::unique_ptr<UringSwapDevice> dev;
  explicit UringSealed(uint64_t slots, uint32_t cluster = 256)
      : dev(open_uring({.dir = "/var/tmp",
                        .size_bytes = slots * 4096,
                        .cluster_slots = cluster,
                        .seal = true})) {
    REQUIRE(dev->sealed());
  }
  SwapDevice& d() { return *dev; }
  void corrupt(SwapSlot s) { corrupt_file(*dev, s); }
  std::vector<std::byte> stored(SwapSlot s) { return stored_in_file(*dev, s); }
  void overwrite(SwapSlot s, std::span<const std::byte> b) { overwrite_file(*dev, s, b); }
};

// Every fixture above: the list behavioural TEMPLATE_TEST_CASEs run on.
#define SWAPDEV_ALL_DEVICES MemoryInline, MemoryThreaded, UringDirect, UringBuffered
#define SWAPDEV_SEALED_DEVICES MemorySealed, UringSealed

}  // namespace tmpfsd::swapdev::test
