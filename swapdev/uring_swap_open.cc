// The factory of UringSwapDevice: checks the options, creates the private
// file, sets up the ring. Errors come back as values with a sentence.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <new>

#include "swapdev/swap_file.h"
#include "swapdev/uring_swap_device.h"

namespace tmpfsd::swapdev {

namespace {
UringOpenResult error(int err, std::string msg) {
  UringOpenResult r;
  r.err = err;
  r.error = std::move(msg);
  return r;
}
}  // namespace

UringOpenResult open_uring_swap_device(const UringOptions& opt) noexcept {
  try {
    if (opt.page_size < 4096 || !std::has_single_bit(opt.page_size))
      return error(-EINVAL,
                   fmt::format("swap page size {} is not a power of two >= 4096", opt.page_size));
    uint64_t slots = opt.size_bytes / opt.page_size;
    if (slots == 0)
      return error(-EINVAL, fmt::format("swap size {} is smaller than one page ({})",
                                        opt.size_bytes, opt.page_size));
    if (opt.queue_depth == 0 || opt.cluster_slots == 0)
      return error(-EINVAL, "swap queue depth and cluster size must be positive");

    SwapFile f = create_swap_file({.dir = opt.dir,
                                   .name = opt.file_name,
                                   .size_bytes = slots * opt.page_size,
                                   .direct_io = opt.direct_io,
                                   .allow_tmpfs = opt.allow_tmpfs,
                                   .test_no_tmpfile = opt.test_no_tmpfile,
                                   .test_refuse_direct_open = opt.test_refuse_direct_open,
                                   .test_refuse_direct_io = opt.test_refuse_direct_io});
    if (f.err) return error(f.err, f.error);

    // Buffered I/O writes any block; O_DIRECT the file system's alignment,
    // never more than a page.
    const unsigned page_shift = static_cast<unsigned>(std::countr_zero(opt.page_size));
    const unsigned min_shift = f.direct ? std::min(f.dio_shift, page_shift) : 9;
    std::unique_ptr<Sealer> sealer;
    if (opt.seal) {
      std::string why;
      sealer = Sealer::create_with(opt.seal_key, opt.seal_counter, &why);
      if (!sealer) {
        ::close(f.fd);
        return error(-EIO, why);
      }
    }
    std::unique_ptr<UringSwapDevice> dev(
        new UringSwapDevice(opt, f.fd, f.direct, f.can_punch, min_shift, std::move(sealer)));
    std::string why;
    if (int r = dev->init_ring(opt.queue_depth, why); r < 0)
      return error(r, fmt::format("cannot set up io_uring for the swap file: {}", why));
    spdlog::info("swapdev: {} slots of {} bytes in {} ({}, {}-byte blocks, discard {}, {})", slots,
                 opt.page_size, opt.dir, f.direct ? "O_DIRECT" : "buffered", 1u << min_shift,
                 f.can_punch ? "on" : "off",
                 opt.seal ? "sealed: AES-256-GCM" : "not sealed: XXH3 checksums");
    UringOpenResult r;
    r.device = std::move(dev);
    return r;
  } catch (const std::bad_alloc&) {
    return error(-ENOMEM, "out of memory setting up the swap device");
  } catch (const std::exception& e) {
    return error(-EIO, fmt::format("cannot set up the swap device: {}", e.what()));
  }
}

}  // namespace tmpfsd::swapdev
