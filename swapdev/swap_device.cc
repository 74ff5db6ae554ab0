#include "swapdev/swap_device.h"

#include <algorithm>
#include <chrono>
#include <thread>

namespace tmpfsd::swapdev {

namespace {
// The device this thread is plugged on (innermost IoBatch), or null.
thread_local const SwapDevice* tl_plugged = nullptr;
}  // namespace

SwapDevice::~SwapDevice() = default;

void SwapDevice::wait_until(const std::function<bool()>& done) {
  flush();
  auto nap = std::chrono::microseconds(20);
  while (!done()) {
    std::this_thread::sleep_for(nap);
    nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(1));
  }
}

IoBatch::IoBatch(SwapDevice& dev) : dev_(dev), outer_(tl_plugged) { tl_plugged = &dev; }

IoBatch::~IoBatch() {
  tl_plugged = outer_;
  // Nested batches on the same device flush only at the outermost one.
  if (outer_ != &dev_) dev_.flush();
}

bool IoBatch::plugged(const SwapDevice* dev) {
  return dev != nullptr && tl_plugged != nullptr && (tl_plugged == dev || tl_plugged->plugs(dev));
}

}  // namespace tmpfsd::swapdev
