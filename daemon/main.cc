// tmpfsd: parse options, daemonise, build the page cache and namespace,
// mount, serve FUSE requests on a multithreaded loop until unmounted or
// signalled.
//
// THE RULE: no thread, no io_uring ring and no swap file before
// Startup::daemonise(). fork() keeps only the calling thread: a PageCache
// made before it would have no Reclaimer, I/O completer, discarder or
// prefault thread in the daemon, and writes beyond --memory would wait for
// ever (daemon/startup.h draws the start-up). Everything that
// starts a thread lives in serve(), which runs in the daemon.
//
// SIGTERM, SIGINT and SIGHUP end the loop (libfuse's handlers); the mount is
// then removed and the process exits 0. SIGUSR1 logs the page cache's
// counters (what a hung test prints beside the thread stacks). SIGUSR2 (and
// tmpfsctl restart) hands the mount to a new daemon (daemon/restart.h). Only the
// main thread and libfuse's workers take the three: libfuse's handler only
// sets a flag, which the main thread sees when the signal interrupts its
// wait and a worker when it interrupts its read of /dev/fuse. Taken by a
// thread of ours (reclaimer, swap completions, ...), it would wake neither,
// and the daemon would not end until the next request; so every thread of
// ours starts with them blocked.
#include <fcntl.h>
#include <fuse_log.h>
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>

#include "core/namespace.h"
#include "core/page_cache.h"
#include "daemon/control.h"
#include "daemon/fuse_ops.h"
#include "daemon/kernel_cache.h"
#include "daemon/notify.h"
#include "daemon/options.h"
#include "daemon/persist.h"
#include "daemon/remount.h"
#include "daemon/restart.h"
#include "daemon/startup.h"
#include "daemon/wire.h"
#include "swapdev/compressed_swap_device.h"
#include "swapdev/remote_store.h"
#include "swapdev/slot_only_device.h"
#include "swapdev/tiered_swap_device.h"
#include "swapdev/uring_swap_device.h"

namespace tmpfsd {
namespace {

// libfuse's argument vector, freed in every exit path.
struct FuseArgs {
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  ~FuseArgs() { fuse_opt_free_args(&args); }
  void add(const std::string& a) { fuse_opt_add_arg(&args, a.c_str()); }
};

// The log: a file when asked for, else stderr in the foreground and syslog
// once daemonised (syslog(3) without /dev/log drops lines quietly).
void set_logger(const Options& o, bool daemonised) {
  std::shared_ptr<spdlog::logger> logger;
  spdlog::drop_all();
  if (!o.log_file.empty()) {
    try {
      logger = spdlog::basic_logger_mt("tmpfsd", o.log_file);
    } catch (const spdlog::spdlog_ex&) {
      logger.reset();  // unwritable: fall back below, and say so there
    }
  }
  if (!logger) {
    logger = daemonised ? spdlog::syslog_logger_mt("tmpfsd", "tmpfsd", LOG_PID, LOG_DAEMON)
                        : spdlog::stderr_color_mt("tmpfsd");
    if (!o.log_file.empty()) logger->warn("cannot write the log file {}; logging here", o.log_file);
  }
  logger->set_level(spdlog::level::from_str(o.log_level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

// libfuse's own messages (a refused mount says why here) go to the log; the
// last error is kept for the one-line start-up failure.
std::mutex g_fuse_error_mu;
std::string g_fuse_error;

void fuse_log_to_spdlog(enum fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  std::string line(buf);
  while (!line.empty() && line.back() == '\n') line.pop_back();
  if (level <= FUSE_LOG_ERR) {
    std::lock_guard lk(g_fuse_error_mu);
    g_fuse_error = line;
  }
  spdlog::log(level <= FUSE_LOG_ERR       ? spdlog::level::err
              : level <= FUSE_LOG_WARNING ? spdlog::level::warn
              : level <= FUSE_LOG_INFO    ? spdlog::level::info
                                          : spdlog::level::debug,
              "libfuse: {}", line);
}

std::string last_fuse_error() {
  std::lock_guard lk(g_fuse_error_mu);
  return g_fuse_error.empty() ? std::string() : ": " + g_fuse_error;
}

void log_stats(const char* what, const std::string& mountpoint, const PageCacheStats& s) {
  spdlog::info("{} {}: {} pages allocated, {} frames used, {} bytes of metadata", what, mountpoint,
               s.pages_allocated, s.frames_used, s.metadata_bytes);
  spdlog::info(
      "page cache: frames {} used / {} free / {} total ({} prefaulted); pages {} resident ({} also "
      "in swap), {} swapped; "
      "swap slots {} / {}; swap-ins {} ({} errors; {} reads and {} writes replied from the "
      "completion; "
      "readahead {} pages, {} used); writebacks {} ({} background, {} partial, {} errors); "
      "evicted {}; reclaim scans {}; writes that waited for writeback {}, copied instead {}, "
      "waited for frames {}; "
      "metadata {} bytes",
      s.frames_used, s.frames_free, s.frames_total, s.frames_prefaulted, s.pages_resident,
      s.swap_cached, s.pages_swapped, s.swap_slots_used, s.swap_slots_total, s.swap_ins,
      s.swap_in_errors, s.reads_async, s.writes_async, s.readahead_pages, s.readahead_hits,
      s.writebacks, s.background_cleaned, s.partial_writebacks, s.writeback_errors, s.pages_evicted,
      s.reclaim_scans, s.writeback_waits, s.writeback_copies, s.frame_waits, s.metadata_bytes);
  if (s.swap_slots_total) {
    spdlog::info(
        "swap device: {} I/Os, {} MiB written, {} MiB read, at most {} in flight; "
        "{} errors ({} checksum failures)",
        s.swap_ios, s.swap_bytes_written >> 20, s.swap_bytes_read >> 20, s.swap_max_queue_depth,
        s.swap_errors, s.swap_checksum_failures);
  }
  if (s.remote_round_trips || s.remote_fallbacks) {
    spdlog::info(
        "remote tier: {} pages, {} MiB written, {} MiB read, {} round trips, {} failures, "
        "{} fallbacks to the swap file, {} seal failures; {} local copies, {} read from them",
        s.remote_pages, s.remote_bytes_written >> 20, s.remote_bytes_read >> 20,
        s.remote_round_trips, s.remote_failures, s.remote_fallbacks, s.remote_seal_failures,
        s.remote_local_copies, s.remote_local_reads);
  }
  if (s.zpool_stored || s.zpool_rejects) {
    spdlog::info(
        "compressed pool: {} pages in {} bytes ({} frames, {} same-filled); {} stored, {} "
        "rejected, {} sent on full, {} written on, {} loads",
        s.zpool_pages, s.zpool_bytes, s.zpool_frames, s.zpool_same_filled, s.zpool_stored,
        s.zpool_rejects, s.zpool_full, s.zpool_writebacks, s.zpool_loads);
  }
}

// The pid file: written when the daemon starts, removed when it ends (only
// if it still names this process).
class PidFile {
 public:
  // `now` false: write() later (a take-over: once it serves the mount).
  explicit PidFile(std::string path, bool now = true) : path_(std::move(path)) {
    if (now) write();
  }
  void write() const {
    if (path_.empty()) return;
    std::ofstream out(path_, std::ios::trunc);
    out << ::getpid() << "\n";
    if (!out) spdlog::warn("cannot write the pid file {}", path_);
  }
  ~PidFile() {
    if (path_.empty()) return;
    std::ifstream in(path_);
    long pid = 0;
    if (in >> pid && pid == ::getpid()) ::unlink(path_.c_str());
  }
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;

 private:
  std::string path_;
};

// What a restart needs to start this daemon again: the path of its binary
// (as installed now: a newer one there is what a restart runs) and its
// arguments, set by main().
std::string g_binary;
std::vector<std::string> g_args;
std::string g_cwd;  // where it was started: relative paths in g_args are from there

// The usage line of the service manager's STATUS= (daemon/notify.h).
std::string usage_status(const std::string& mountpoint, const PageCacheStats& s) {
  return notify::usage(mountpoint, s.pages_allocated * s.page_size, s.frames_used * s.page_size,
                       s.pages_swapped * s.page_size);
}

// SIGUSR1 logs the counters, SIGUSR2 calls on_restart (once the mount is
// live). The signals are blocked in every thread (the mask is set before
// the first one starts) and taken here with sigwait.
// Under a service manager (NOTIFY_SOCKET) the thread also refreshes
// STATUS= every 5 s once the mount is `live`, when the usage changed.
class StatsOnSignal {
 public:
  StatsOnSignal(PageCache& cache, const std::string& mountpoint, const std::atomic<bool>& live,
                std::function<void()> on_restart)
      : thread_([&cache, mountpoint, &live, on_restart](std::stop_token stop) {
          pthread_setname_np(pthread_self(), "stats");
          sigset_t set;
          sigemptyset(&set);
          sigaddset(&set, SIGUSR1);
          sigaddset(&set, SIGUSR2);
          const timespec tick{0, 200'000'000};
          constexpr int kStatusTicks = 25;  // 5 s
          int ticks = 0;
          bool warned = false;
          std::string last = notify::usage(mountpoint, 0, 0, 0);  // sent with READY=1
          while (!stop.stop_requested()) {
            const int sig = sigtimedwait(&set, nullptr, &tick);
            if (sig == SIGUSR1) log_stats("counters of", mountpoint, cache.stats());
            if (sig == SIGUSR2 && !live.load())
              spdlog::warn("restart: SIGUSR2 before the mount is live: ignored");
            else if (sig == SIGUSR2)
              on_restart();
            if (!notify::wanted() || !live.load() || ++ticks < kStatusTicks) continue;
            ticks = 0;
            std::string now = usage_status(mountpoint, cache.stats());
            if (now == last) continue;
            last = now;
            if (!notify::status(now) && !warned) {
              warned = true;
              spdlog::warn("cannot send STATUS= to the service manager");
            }
          }
        }) {}

 private:
  std::jthread thread_;
};

// SIGUSR1 is waited for by the stats thread alone; the exit signals are
// for the main thread and libfuse's workers (see the top of this file).
sigset_t exit_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

void block_signals_for_our_threads() {
  sigset_t set = exit_signals();
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// --transport: the rings are made before the mount (so that --transport
// uring fails without mounting) and used once INIT is answered
// (daemon/wire.h). False: the mount must not go on; startup.fail said why.
constexpr unsigned kRingDepth = 32;  // entries per queue unless --uring-depth
bool choose_transport(const Options& o, Wire& wire, Startup& startup) {
  if (o.transport == "dev") {
    spdlog::info("transport: /dev/fuse (--transport dev)");
    return true;
  }
  const bool required = o.transport == "uring";
  if (!UringTransport::enabled_in_kernel()) {
    const std::string why = std::string("the kernel does not offer FUSE over io_uring: ") +
                            UringTransport::kParameter + " is not Y (as root: echo Y > " +
                            UringTransport::kParameter + ")";
    if (required) {
      startup.fail(1, "--transport uring: " + why);
      return false;
    }
    spdlog::info("transport: /dev/fuse ({})", why);
    return true;
  }
  std::string error;
  if (wire.use_rings(o.uring_depth ? o.uring_depth : kRingDepth, error)) return true;
  if (required) {
    startup.fail(1, "--transport uring: cannot make the io_uring rings: " + error);
    return false;
  }
  spdlog::warn("transport: /dev/fuse (cannot make the io_uring rings: {})", error);
  return true;
}

// `takeover`: this process takes the mount over from the daemon that
// started it (daemon/restart.h); null: it mounts.
int serve(const Options& o, Startup& startup, const Takeover* takeover, const PidFile& pid_file) {
  block_signals_for_our_threads();  // before the first thread, so that all inherit it
  PageCacheConfig pc;
  pc.page_size = o.page_size;
  pc.memory_bytes = o.memory_bytes;
  pc.max_pages = (o.size_bytes + o.page_size - 1) / o.page_size;
  pc.writeback_copy = o.writeback_conflict == "copy";
  // --persist: DIR's lock first (a daemon that has just been unmounted may
  // still be saving), then the swap file DIR/swap, kept: the image names
  // its slots (lazy restore). A takeover's daemon uses a private swap file
  // (the live state comes with its data) and so saves an image with data.
  std::unique_ptr<Persist> persist;
  if (!o.persist.empty()) {
    std::string why;
    persist = Persist::open(o.persist, o.persist_key, &why, takeover ? takeover->lock_fd : -1);
    if (!persist) {
      startup.fail(1, "--persist: " + why);
      return 1;
    }
  }
  std::unique_ptr<swapdev::SwapDevice> swap;
  swapdev::UringSwapDevice* kept_swap = nullptr;  // DIR/swap, when the image may name its slots
  if (o.swap_bytes > 0) {
    swapdev::UringOptions uo;
    uo.dir = o.swap_dir;
    uo.size_bytes = o.swap_bytes;
    uo.seal = o.seal;
    uo.page_size = o.page_size;
    swapdev::UringOpenResult r;
    if (persist && !takeover && o.remote.empty() && o.compress == "off") {
      swapdev::UringOptions named = uo;
      named.dir = o.persist;
      named.file_name = "swap";
      r = swapdev::open_uring_swap_device(named);
      if (r.device)
        kept_swap = r.device.get();
      else
        spdlog::warn("--persist: no swap file in {} ({}): images will hold the data", o.persist,
                     r.error);
    }
    if (!r.device) r = swapdev::open_uring_swap_device(uo);
    if (!r.device) {
      if (o.swap_given) {
        startup.fail(1, "cannot make the swap file: " + r.error);
        return 1;
      }
      spdlog::warn("running without swap (frames are all the space there is): {}", r.error);
    } else {
      spdlog::info("swap: {} bytes in {} ({}, {})", o.swap_bytes, o.swap_dir,
                   r.device->direct_io() ? "O_DIRECT" : "buffered",
                   r.device->sealed() ? "sealed" : "not sealed (--seal off)");
      swap = std::move(r.device);
    }
  }
  if (!o.remote.empty()) {
    if (!swap) {
      startup.fail(1, "--remote needs the swap file, which could not be made");
      return 1;
    }
    swapdev::RemoteOptions ro;
    std::string why;
    (void)swapdev::parse_remote_url(o.remote, &ro, &why);  // checked by parse_options
    ro.slots = o.remote_bytes / o.page_size;
    ro.page_size = o.page_size;
    std::unique_ptr<swapdev::RemoteStore> remote = swapdev::RemoteStore::create(ro, &why);
    if (!remote) {
      startup.fail(1, "cannot set up the remote tier: " + why);
      return 1;
    }
    spdlog::info("remote tier: {} ({} servers, {} replicas{}), at most {} bytes, sealed", o.remote,
                 ro.servers.size(), ro.replicas,
                 ro.local_copy ? ", a local copy in the swap file while it has room" : "",
                 ro.slots * o.page_size);
    swap = std::make_unique<swapdev::TieredSwapDevice>(std::move(swap), std::move(remote));
  }
  if (o.compress != "off") {
    swapdev::CompressedSwapDevice::Options co;
    co.codec = *swapdev::parse_codec(o.compress);  // checked by parse_options
    co.pool_only = !swap;
    co.max_pages = compress_pool_pages(o, co.pool_only);
    spdlog::info("compressed pool: {}, at most {} bytes ({}% of --memory){}", o.compress,
                 co.max_pages * o.page_size, co.max_pages * o.page_size * 100 / o.memory_bytes,
                 co.pool_only ? ", no swap file: the pool alone" : "");
    if (co.pool_only) {
      // Slot numbers for the pool's pages: as many as size= allows pages.
      const uint64_t slots = pc.max_pages ? pc.max_pages : uint64_t{1} << 40;
      swap = std::make_unique<swapdev::SlotOnlyDevice>(o.page_size, slots);
      // Dirty pages that do not compress stay in frames: writes leave room
      // for a read of pooled pages (one FUSE read, 1 MiB, or an eighth of
      // the frames if more; at most half of them).
      const uint64_t frames = o.memory_bytes / o.page_size;
      pc.write_headroom =
          std::min(frames / 2, std::max<uint64_t>((1u << 20) / o.page_size, frames / 8));
    }
    swap = std::make_unique<swapdev::CompressedSwapDevice>(std::move(swap), co);
  }
  auto cache = swap ? PageCache::create(pc, std::move(swap)) : PageCache::create(pc);
  if (!cache) {
    startup.fail(1, std::string("cannot set up the page cache: ") + std::strerror(cache.code()));
    return 1;
  }
  NamespaceConfig nc;
  nc.max_inodes = o.nr_inodes;
  nc.root_mode = o.mode;
  nc.root_uid = o.uid;
  nc.root_gid = o.gid;
  nc.atime = o.atime == "noatime"       ? NamespaceConfig::Atime::Noatime
             : o.atime == "strictatime" ? NamespaceConfig::Atime::Strictatime
                                        : NamespaceConfig::Atime::Relatime;
  nc.nodiratime = o.nodiratime;
  Namespace ns(nc, **cache);
  if (persist) {
    std::string why;
    persist->set_swap(kept_swap);
    if (!takeover && !persist->load(ns, &why)) {
      startup.fail(1, "--persist: " + why);
      return 1;
    }
  }
  Filesystem fs;
  Wire::Handshake handshake;
  if (std::string why; takeover && !load_handover(takeover->state_fd, ns, fs, &handshake, &why)) {
    startup.fail(1, "restart: " + why);
    return 1;
  }
  fs.persist = persist.get();
  fs.cache = cache->get();
  fs.ns = &ns;
  fs.writeback_cache = o.writeback_cache;
  fs.strict_atime = o.atime == "strictatime";
  std::atomic<bool> live{false};
  fs.on_init = [&startup, &live, &pid_file, takeover] {
    if (takeover) pid_file.write();  // the mount is this process's now
    startup.ready();
    live = true;
  };

  FuseArgs args;
  args.add("tmpfsd");
  // SOURCE is the fsname (findmnt, df); libfuse splits -o at commas and
  // takes a backslash as an escape.
  std::string fsname;
  for (char c : o.source) {
    if (c == ',' || c == '\\') fsname += '\\';
    fsname += c;
  }
  std::string fuse_opts = "default_permissions,fsname=" + fsname + ",subtype=tmpfsd";
  if (o.allow_other) fuse_opts += ",allow_other";
  // mount(8)'s generic flags that libfuse 3.14 passes to mount(2).
  if (o.read_only) fuse_opts += ",ro";
  if (o.sync) fuse_opts += ",sync";
  if (o.dirsync) fuse_opts += ",dirsync";
  if (o.atime == "noatime") fuse_opts += ",noatime";
  if (!o.ignored.empty()) {
    std::string list;
    for (const std::string& i : o.ignored) list += (list.empty() ? "" : ",") + i;
    spdlog::info("mount options accepted without effect: {}", list);
  }
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

  Wire wire(fs);  // outlives the session, which reads and writes through it
  fuse_session* se =
      fuse_session_new(&args.args, &fuse_operations(), sizeof(fuse_lowlevel_ops), &fs);
  fs.session = se;
  if (!se) {
    startup.fail(1, "cannot create the FUSE session" + last_fuse_error());
    return 1;
  }
  // Set-ID bits cleared where the kernel expects only size and times to
  // change (Namespace::set_attr_hook): its cached attributes go, so that
  // stat and exec see the new mode.
  ns.set_attr_hook([se](uint64_t ino) { fuse_lowlevel_notify_inval_inode(se, ino, -1, 0); });
  int rc = 1;
  bool up = false;
  if (takeover) {
    spdlog::info("transport: /dev/fuse (taken over from the previous daemon)");
    if (fuse_set_signal_handlers(se) != 0)
      startup.fail(1, "cannot set the signal handlers" + last_fuse_error());
    else if (int err = wire.attach_initialised(se, takeover->fuse_fd, std::move(handshake)); err)
      startup.fail(1, std::string("cannot serve the mount taken over: ") + strerror(-err));
    else
      up = true;
  } else if (!choose_transport(o, wire, startup)) {
    // said
  } else if (fuse_set_signal_handlers(se) != 0) {
    startup.fail(1, "cannot set the signal handlers" + last_fuse_error());
  } else if (fuse_session_mount(se, o.mountpoint.c_str()) != 0) {
    startup.fail(1, "cannot mount on " + o.mountpoint + last_fuse_error());
  } else if (int err = wire.attach(se); err != 0) {
    startup.fail(
        1, std::string("cannot route the FUSE session through the wire module: ") + strerror(-err));
    fuse_session_unmount(se);
  } else {
    up = true;
  }
  if (up) {
    spdlog::info("{} {} on {} (size={} bytes, nr_inodes={}, memory={} bytes, page size {})",
                 takeover ? "serving" : "mounted", o.source, o.mountpoint, o.size_bytes,
                 o.nr_inodes, o.memory_bytes, o.page_size);
    if (!startup.daemonised() && !takeover) {
      std::fprintf(stderr, "tmpfsd: mounted on %s; unmount with: fusermount3 -u %s\n",
                   o.mountpoint.c_str(), o.mountpoint.c_str());
    }
    RestartContext restart_ctx;
    restart_ctx.fs = &fs;
    restart_ctx.ns = &ns;
    restart_ctx.wire = &wire;
    restart_ctx.fuse_fd = fuse_session_fd(se);
    restart_ctx.lock_fd = persist ? persist->lock_fd() : -1;
    restart_ctx.default_binary = g_binary;
    restart_ctx.args = g_args;
    restart_ctx.cwd = g_cwd;
    std::mutex restart_mu;
    std::mutex restart_running;       // held by a restart: the loop's end waits for it
    std::atomic<bool> serving{true};  // false once the loop has ended
    std::string restart_binary;       // guarded by restart_mu: tmpfsctl restart's binary
    fs.request_restart = [&](const std::string& binary, std::string* why) {
      const int e = restart_possible(restart_ctx, binary, why);
      if (e == 0) {
        std::lock_guard lk(restart_mu);
        restart_binary = binary;
      }
      return e;
    };
    auto on_restart = [&] {
      std::string binary;
      {
        std::lock_guard lk(restart_mu);
        binary.swap(restart_binary);
      }
      std::lock_guard running(restart_running);
      if (!serving.load()) return;  // the loop has ended: nothing to hand over
      if (std::string why; !restart(restart_ctx, binary, &why)) {
        spdlog::error("restart: {}", why);
        fs.restarts_failed.fetch_add(1);
      }
    };
    StatsOnSignal stats_on_signal(**cache, o.mountpoint, live, on_restart);
    std::optional<KernelCache> kernel_cache(std::in_place, se);
    fs.kernel_cache = &*kernel_cache;
    fuse_loop_config* loop = fuse_loop_cfg_create();
    if (o.max_threads) fuse_loop_cfg_set_max_threads(loop, o.max_threads);
    // libfuse reports the signal that ended the loop (SIGTERM: 15) as its
    // result: that is the normal way to stop, not a failure.
    // The exit signals again, for this thread and the workers the loop
    // starts from it (one that came meanwhile was kept pending: the loop
    // then ends at once).
    sigset_t exits = exit_signals();
    pthread_sigmask(SIG_UNBLOCK, &exits, nullptr);
    int loop_rc = fuse_session_loop_mt(se, loop);
    rc = (loop_rc == 0 || loop_rc == SIGTERM || loop_rc == SIGINT || loop_rc == SIGHUP) ? 0 : 1;
    fuse_loop_cfg_destroy(loop);
    // A restart under way (SIGTERM came meanwhile): if it succeeds this
    // process ends there and the new daemon serves; if not, the stop goes on.
    serving = false;
    { std::lock_guard wait_for_restart(restart_running); }
    notify::stopping(o.mountpoint);
    // A loop that ended before INIT (the kernel aborted the connection):
    // the parent must not wait for a ready that never comes.
    startup.fail(1, "the FUSE session ended before it was initialised");
    // Reads waiting for swap-in reply from the I/O completion: let them
    // finish while the session they reply to still exists (and the rings
    // that carry the replies).
    (*cache)->drain_reads();
    // The rings' queue threads, which dispatch requests like the workers
    // the loop has ended: none runs an op from here on (the kernel cancels
    // the rings' commands; a request still held ends with the connection).
    wire.stop_rings();
    // Then the direct writes whose replies wait for the kernel's cache.
    fs.kernel_cache = nullptr;
    kernel_cache.reset();
    fuse_session_unmount(se);
    if (takeover) unmount_taken_over(o.mountpoint, takeover->fuse_fd);
    log_stats("unmounted", o.mountpoint, (*cache)->stats());
    // Served no more: what it holds now is what the next start restores.
    if (std::string why; persist && !persist->save(ns, &why)) {
      spdlog::error("--persist: {}", why);
      rc = 1;
    }
  }
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  return rc;
}

// Paths the daemon uses after chdir("/"), made absolute against the
// directory tmpfsd was started in.
// -o remount (options.h): the live mount's limits, as tmpfsctl set. Exit 0,
// or 32 (mount(8)'s "mount failure", what a refused tmpfs remount gives)
// with one line.
int remount_limits(const Options& o) {
  if (o.remount_options.empty()) return 0;  // nothing tmpfsd can change was asked for
  const control::SetOutcome r = control::request_set(o.mountpoint, o.remount_options);
  std::string why;
  if (r.sys_error == ENOTTY || r.sys_error == EINVAL)
    why = "not a tmpfsd mount";
  else if (r.sys_error != 0)
    why = std::strerror(r.sys_error);
  else if (r.error != 0)
    why = r.message + " (" + std::strerror(r.error) + ")";
  if (!why.empty()) {
    std::fprintf(stderr, "tmpfsd: remount %s: %s\n", o.mountpoint.c_str(), why.c_str());
    return 32;
  }
  if (!r.message.empty())
    std::fprintf(stderr, "tmpfsd: remount %s: %s\n", o.mountpoint.c_str(), r.message.c_str());
  return 0;
}

// The path this process's binary was run from, as the file there is now:
// once a newer one is installed over it, /proc/self/exe says "PATH
// (deleted)", and PATH is the newer one, which a restart runs.
std::string installed_binary() {
  char exe[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return {};
  std::string path(exe, size_t(n));
  constexpr std::string_view kDeleted = " (deleted)";
  if (path.ends_with(kDeleted)) path.resize(path.size() - kDeleted.size());
  return path;
}

// `lexical`: without looking at the path (a take-over's mount point: the
// mount's daemon waits for this one).
std::string absolute(const std::string& path, bool lexical = false) {
  if (path.empty() || path[0] == '/') return path;
  char buf[PATH_MAX];
  if (!lexical && ::realpath(path.c_str(), buf)) return buf;
  char cwd[PATH_MAX];
  if (!::getcwd(cwd, sizeof cwd)) return path;
  return std::string(cwd) + "/" + path;
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
  tmpfsd::Options o = *parsed.options;
  // For a restart: this binary's path and the arguments but --takeover.
  tmpfsd::g_binary = tmpfsd::installed_binary();
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--takeover") {
      ++i;
      continue;
    }
    if (a.starts_with("--takeover=")) continue;
    tmpfsd::g_args.push_back(a);
  }
  std::optional<tmpfsd::Takeover> takeover;
  if (!o.takeover.empty()) {
    takeover.emplace();
    if (!tmpfsd::parse_takeover(o.takeover, &*takeover)) {
      std::fprintf(stderr, "tmpfsd: --takeover %s: not F,S,R[,L]\n", o.takeover.c_str());
      return 2;
    }
    // Inherited without it (for the exec); a restart passes them on itself.
    ::fcntl(takeover->fuse_fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(takeover->state_fd, F_SETFD, FD_CLOEXEC);
  }
  o.mountpoint = tmpfsd::absolute(o.mountpoint, !o.takeover.empty());
  o.swap_dir = tmpfsd::absolute(o.swap_dir);
  o.log_file = tmpfsd::absolute(o.log_file);
  o.pid_file = tmpfsd::absolute(o.pid_file);
  o.persist = tmpfsd::absolute(o.persist);
  o.persist_key = tmpfsd::absolute(o.persist_key);
  if (char cwd[PATH_MAX]; ::getcwd(cwd, sizeof cwd)) tmpfsd::g_cwd = cwd;
  if (!o.takeover.empty() && ::chdir("/") != 0)
    spdlog::warn("cannot change to /: {}", std::strerror(errno));
  if (o.remount) {  // mount -o remount: the running daemon stays (daemon/remount.h)
    std::string error;
    if (tmpfsd::remount(o, error) != 0) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 32;  // mount(8)'s "mount failure"
    }
    return tmpfsd::remount_limits(o);
  }
  // From here on, see THE RULE at the top: daemonise before anything starts
  // a thread.
  // A take-over is already where its predecessor was: no fork.
  tmpfsd::Startup startup =
      takeover       ? tmpfsd::Startup::takeover(o.mountpoint, takeover->ready_fd, !o.foreground)
      : o.foreground ? tmpfsd::Startup::foreground(o.mountpoint)
                     : tmpfsd::Startup::daemonise(o.mountpoint);
  tmpfsd::set_logger(o, startup.daemonised());
  fuse_set_log_func(tmpfsd::fuse_log_to_spdlog);
  tmpfsd::PidFile pid_file(o.pid_file, !takeover);
  try {
    return tmpfsd::serve(o, startup, takeover ? &*takeover : nullptr, pid_file);
  } catch (const std::exception& e) {
    startup.fail(1, e.what());
    return 1;
  }
}
