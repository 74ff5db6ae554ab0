// tmpfsd: parse options, build the page cache and namespace, mount, serve
// FUSE requests on a multithreaded loop until unmounted or signalled.
//
// SIGTERM, SIGINT and SIGHUP end the loop (libfuse's handlers); the mount is
// then removed and the process exits 0.
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>

#include "core/namespace.h"
#include "core/page_cache.h"
#include "daemon/fuse_ops.h"
#include "daemon/options.h"
#include "swapdev/uring_swap_device.h"

namespace tmpfsd {
namespace {

// libfuse's argument vector, freed in every exit path.
struct FuseArgs {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ~FuseArgs() { fuse_opt_free_args(&args); }
  void add(const std::string& a) { fuse_opt_add_arg(&args, a.c_str()); }
};

void log_to_stderr(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("tmpfsd");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

void log_to_syslog(const std::string& level) {
  auto logger = spdlog::syslog_logger_mt("tmpfsd-syslog", "tmpfsd", LOG_PID, LOG_DAEMON);
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

int serve(const Options& o) {
  PageCacheConfig pc;
  pc.page_size = o.page_size;
  pc.memory_bytes = o.memory_bytes;
  pc.max_pages = (o.size_bytes + o.page_size - 1) / o.page_size;
  pc.writeback_copy = o.writeback_conflict == "copy";
  std::unique_ptr<swapdev::SwapDevice> swap;
  if (o.swap_bytes > 0) {
    swapdev::UringOptions uo;
    uo.dir = o.swap_dir;
    uo.size_bytes = o.swap_bytes;
    uo.page_size = o.page_size;
    swapdev::UringOpenResult r = swapdev::open_uring_swap_device(uo);
    if (!r.device) {
      if (o.swap_given) {
        spdlog::error("cannot make the swap file: {}", r.error);
        return 1;
      }
      spdlog::warn("running without swap (frames are all the space there is): {}", r.error);
    } else {
      spdlog::info("swap: {} bytes in {} ({})", o.swap_bytes, o.swap_dir,
                   r.device->direct_io() ? "O_DIRECT" : "buffered");
      swap = std::move(r.device);
    }
  }
  auto cache = swap ? PageCache::create(pc, std::move(swap)) : PageCache::create(pc);
  if (!cache) {
    spdlog::error("cannot set up the page cache: {}", std::strerror(cache.code()));
    return 1;
  }
  NamespaceConfig nc;
  nc.max_inodes = o.nr_inodes;
  nc.root_mode = o.mode;
  nc.root_uid = o.uid;
  nc.root_gid = o.gid;
  Namespace ns(nc, **cache);
  Filesystem fs{cache->get(), &ns};
  fs.writeback_cache = o.writeback_cache;

  FuseArgs args;
  args.add("tmpfsd");
  std::string fuse_opts = "default_permissions,fsname=tmpfsd,subtype=tmpfsd";
  if (o.allow_other) fuse_opts += ",allow_other";
  // libfuse mounts nosuid,nodev unless told otherwise; tmpfs does not. Only
  // root may lift them (fusermount3 refuses for other users).
  if (geteuid() == 0) {
    fuse_opts += o.nosuid ? ",nosuid" : ",suid";
    fuse_opts += o.nodev ? ",nodev" : ",dev";
  }
  if (o.noexec) fuse_opts += ",noexec";
  args.add("-o");
  args.add(fuse_opts);
  if (o.fuse_debug) args.add("-d");

  fuse_session* se = fuse_session_new(&args.args, &fuse_operations(), sizeof(fuse_lowlevel_ops), &fs);
  if (!se) {
    spdlog::error("cannot create the FUSE session");
    return 1;
  }
  int rc = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, o.mountpoint.c_str()) == 0) {
      spdlog::info("mounted {} (size={} bytes, nr_inodes={}, memory={} bytes, page size {})", o.mountpoint,
                   o.size_bytes, o.nr_inodes, o.memory_bytes, o.page_size);
      if (!o.foreground) {
        log_to_syslog(o.log_level);
        fuse_daemonize(0);
      } else {
        std::fprintf(stderr, "tmpfsd: mounted on %s; unmount with: fusermount3 -u %s\n", o.mountpoint.c_str(),
                     o.mountpoint.c_str());
      }
      fuse_loop_config* loop = fuse_loop_cfg_create();
      if (o.max_threads) fuse_loop_cfg_set_max_threads(loop, o.max_threads);
      // libfuse reports the signal that ended the loop (SIGTERM: 15) as its
      // result: that is the normal way to stop, not a failure.
      int loop_rc = fuse_session_loop_mt(se, loop);
      rc = (loop_rc == 0 || loop_rc == SIGTERM || loop_rc == SIGINT || loop_rc == SIGHUP) ? 0 : 1;
      fuse_loop_cfg_destroy(loop);
      // Reads waiting for swap-in reply from the I/O completion: let them
      // finish while the session they reply to still exists.
      (*cache)->drain_reads();
      fuse_session_unmount(se);
      PageCacheStats s = (*cache)->stats();
      spdlog::info("unmounted {}: {} pages allocated, {} frames used, {} bytes of metadata", o.mountpoint,
                   s.pages_allocated, s.frames_used, s.metadata_bytes);
      spdlog::info(
          "page cache: frames {} used / {} free / {} total ({} prefaulted); pages {} resident ({} also in swap), {} swapped; "
          "swap slots {} / {}; swap-ins {} ({} errors; {} reads and {} writes replied from the completion; "
          "readahead {} pages, {} used); writebacks {} ({} background, {} partial, {} errors); "
          "evicted {}; reclaim scans {}; writes that waited for writeback {}, copied instead {}, "
          "waited for frames {}; "
          "metadata {} bytes",
          s.frames_used, s.frames_free, s.frames_total, s.frames_prefaulted, s.pages_resident, s.swap_cached, s.pages_swapped,
          s.swap_slots_used, s.swap_slots_total, s.swap_ins, s.swap_in_errors, s.reads_async, s.writes_async,
          s.readahead_pages, s.readahead_hits, s.writebacks,
          s.background_cleaned, s.partial_writebacks, s.writeback_errors, s.pages_evicted, s.reclaim_scans, s.writeback_waits,
          s.writeback_copies, s.frame_waits, s.metadata_bytes);
      if (s.swap_slots_total) {
        spdlog::info("swap device: {} I/Os, {} MiB written, {} MiB read, at most {} in flight; "
                     "{} errors ({} checksum failures)",
                     s.swap_ios, s.swap_bytes_written >> 20, s.swap_bytes_read >> 20,
                     s.swap_max_queue_depth, s.swap_errors, s.swap_checksum_failures);
      }
    } else {
      spdlog::error("cannot mount on {}", o.mountpoint);
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  return rc;
}

}  // namespace
}  // namespace tmpfsd

int main(int argc, char** argv) {
  // One malloc arena that grows in 64 MiB steps. The page cache allocates a
  // little metadata for every page it takes in (a Pmap, a share of an index
  // chunk: ~22 KiB per MiB written), and glibc grows a thread's arena one
  // 4 KiB mprotect at a time: 5,533 mprotect calls in 1 GiB of sequential
  // writes, each taking the mmap lock for writing against the frame
  // prefaulting and the FUSE copies. With these settings that run made 1
  // call, and 1 MiB O_DIRECT writes into fresh frames went from 1,073 to
  // 1,627 MB/s (medians of 4 alternating runs, --memory 2G). Large blocks
  // (copy_file_range's bounce buffer, libfuse's request buffers) stay in the
  // heap too instead of an mmap and 256 page faults each time.
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_TOP_PAD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  tmpfsd::ParseOutcome parsed = tmpfsd::parse_options(argc, argv);
  if (!parsed.options) {
    std::fprintf(parsed.exit_code ? stderr : stdout, "%s\n", parsed.message.c_str());
    return parsed.exit_code;
  }
  tmpfsd::log_to_stderr(parsed.options->log_level);
  try {
    return tmpfsd::serve(*parsed.options);
  } catch (const std::exception& e) {
    spdlog::critical("tmpfsd: {}", e.what());
    return 1;
  }
}
