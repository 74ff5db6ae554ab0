#include "daemon/options.h"

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <sstream>

#include "swapdev/remote_store.h"

namespace tmpfsd {
namespace {

// An -o item that continues remote='s server list: HOST:PORT or
// [V6]:PORT, maybe with the URL's ?query.
bool continues_remote(const std::string& opt) {
  static const std::regex server(R"((\[[^\]=]*\]|[^=:\[\]]+):[0-9]+(\?.*)?)");
  return std::regex_match(opt, server);
}

std::optional<uint64_t> parse_number(const std::string& text, int base) {
  if (text.empty() || text[0] == '-' || text[0] == '+') return std::nullopt;
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(text.c_str(), &end, base);
  if (errno != 0 || end != text.c_str() + text.size()) return std::nullopt;
  return v;
}

// tmpfs's memparse: an unsigned number, then an optional k/m/g/t/p/e.
std::optional<uint64_t> parse_scaled(const std::string& text) {
  if (text.empty()) return std::nullopt;
  std::string digits = text;
  unsigned shift = 0;
  switch (text.back()) {
    case 'k':
    case 'K':
      shift = 10;
      break;
    case 'm':
    case 'M':
      shift = 20;
      break;
    case 'g':
    case 'G':
      shift = 30;
      break;
    case 't':
    case 'T':
      shift = 40;
      break;
    case 'p':
    case 'P':
      shift = 50;
      break;
    case 'e':
    case 'E':
      shift = 60;
      break;
    default:
      break;
  }
  if (shift) digits.pop_back();
  auto v = parse_number(digits, 10);
  if (!v) return std::nullopt;
  if (shift && *v > (UINT64_MAX >> shift)) return std::nullopt;
  return *v << shift;
}

}  // namespace

uint64_t physical_memory() {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
}

std::optional<uint64_t> parse_size(const std::string& text, uint64_t ram) {
  if (!text.empty() && text.back() == '%') {
    auto pct = parse_number(text.substr(0, text.size() - 1), 10);
    if (!pct || *pct > 100000) return std::nullopt;
    // As shmem_parse_one: whole pages of RAM, times the percentage.
    const uint64_t page = 4096;
    return ram / page * *pct / 100 * page;
  }
  return parse_scaled(text);
}

namespace {

// Options for mount(8) and fstab, and lazytime (no disk to write times
// to): accepted so that fstab lines and mount(8) work, without effect.
bool ignored_generic(const std::string& opt) {
  static const char* const names[] = {"lazytime", "nolazytime", "defaults", "nofail",
                                      "noauto",   "auto",       "user",     "nouser",
                                      "users",    "owner",      "group",    "_netdev"};
  for (const char* n : names)
    if (opt == n) return true;
  return opt.rfind("x-", 0) == 0 || opt.rfind("X-", 0) == 0 || opt.rfind("comment=", 0) == 0;
}

}  // namespace

ParseOutcome parse_options(int argc, char** argv) {
  ParseOutcome out;
  Options o;
  o.uid = geteuid();  // tmpfs's root belongs to whoever mounts it
  o.gid = getegid();
  std::vector<std::string> mount_opts;
  std::vector<std::string> positionals;
  std::string memory;
  std::string swap;
  std::string page_size;
  std::string threads;
  std::string remote_size;
  std::string compress_pool;
  std::string uring_depth;
  CLI::App app{
      "tmpfsd: a tmpfs served from user space, with a memory budget\n"
      "Usage: tmpfsd [options] [SOURCE] MOUNTPOINT   (mount(8): mount -t fuse.tmpfsd SOURCE "
      "MOUNTPOINT -o OPTS)"};
  app.add_option("SOURCE MOUNTPOINT", positionals,
                 "SOURCE (optional): the name findmnt and df show (default: tmpfsd); MOUNTPOINT: "
                 "directory to mount on")
      ->expected(0, 64);
  app.add_option("-o", mount_opts,
                 "Mount options, comma-separated: size=SIZE, nr_inodes=N, mode=OCTAL, uid=N, "
                 "gid=N, allow_other, "
                 "nosuid, nodev, noexec, ro, rw, sync, async, dirsync, noatime, atime, relatime, "
                 "strictatime, nodiratime, "
                 "diratime; memory=, swap=, swap_dir=, seal=, persist=, persist_key=, remote=, "
                 "remote_size=, compress=, compress_pool=, "
                 "page_size=, writeback_cache, writeback_conflict=, threads=, log_level=, "
                 "log_file=, pid_file=, transport=, uring_depth= "
                 "(the daemon options below); lazytime, defaults, nofail, noauto, _netdev, x-* ... "
                 "are accepted "
                 "and ignored; remount (as mount -o remount runs it) changes the live mount's "
                 "flags and exits")
      ->delimiter(',')
      ->allow_extra_args(false);  // one list per -o: what follows may be SOURCE or MOUNTPOINT
  app.add_option("--memory", memory,
                 "Frame budget: SIZE or N% of RAM (default: size=, at most 50% of RAM)");
  app.add_option("--swap", swap,
                 "Swap file size: SIZE or N% of RAM; the most data the file system holds; 0 = no "
                 "swap (default: size=)");
  app.add_option("--swap-dir", o.swap_dir,
                 "Directory of the private swap file (not a tmpfs; the file has no name)")
      ->capture_default_str();
  std::string seal;
  app.add_option("--seal", seal,
                 "on: pages in the swap file are sealed (AES-256-GCM, a key made at mount and "
                 "kept only in memory); off: written as they are, with a checksum (default: on)")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--persist", o.persist,
                 "Keep the file system in DIR across a stop and a start: saved there when the "
                 "daemon stops cleanly (umount, SIGTERM), restored at the next start");
  app.add_option("--persist-key", o.persist_key,
                 "With --persist: seal the image (AES-256-GCM) under the key in FILE (32 bytes, "
                 "or 64 hex digits)");
  app.add_option("--remote", o.remote,
                 "Remote tier: evicted pages go to this memcached pool (sealed) while it is "
                 "healthy and below --remote-size, else to the swap file: "
                 "memcached://HOST[:PORT][,HOST[:PORT]...][?replicas=N][&local_copy=1]");
  app.add_option("--compress", o.compress,
                 "lz4 or zstd: pages evicted from memory are kept compressed in memory first "
                 "(a share of --memory, --compress-pool), the rest go to the swap file; off: "
                 "none (default: off)")
      ->check(CLI::IsMember({"lz4", "zstd", "off"}));
  app.add_option(
      "--compress-pool", compress_pool,
      "The compressed pool's share of --memory: N% (default: 90%; 75% with no swap file; "
      "either leaves the page cache 16 MiB or a quarter of --memory, whichever is less)");
  app.add_option("--remote-size", remote_size,
                 "Most the remote pool holds: SIZE or N% of RAM (default: the swap size)");
  app.add_option("--page-size", page_size,
                 "Page size in bytes: a power of two, 4096 or more (default: 4096)");
  app.add_flag("-f,--foreground", o.foreground, "Stay in the foreground and log to stderr");
  app.add_flag("-d,--debug", o.fuse_debug, "Log every FUSE request (implies -f)");
  app.add_flag("--writeback-cache", o.writeback_cache,
               "Let the kernel cache writes (faster small writes; a full file system then reports "
               "ENOSPC at close/fsync, not at write)");
  app.add_option(
         "--writeback-conflict", o.writeback_conflict,
         "A write to a page being written to swap: wait for that I/O, or copy the page to a "
         "free frame and go on")
      ->capture_default_str()
      ->check(CLI::IsMember({"wait", "copy"}));
  app.add_option("--threads", threads, "Most FUSE worker threads (default: libfuse's)");
  app.add_option("--transport", o.transport,
                 "How requests reach the daemon: uring (io_uring rings; needs Y in "
                 "/sys/module/fuse/parameters/enable_uring), dev (/dev/fuse), or auto (uring when "
                 "the kernel offers it, else dev)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "uring", "dev"}));
  app.add_option("--uring-depth", uring_depth,
                 "Ring entries per queue (one queue per possible CPU) with the uring transport");
  app.add_option("--log-file", o.log_file,
                 "Append the log to this file (default: syslog when daemonised, stderr with -f)");
  app.add_option("--pid-file", o.pid_file,
                 "Write the daemon's process ID to this file (removed at exit)");
  app.add_option("--takeover", o.takeover, "(internal: tmpfsctl restart)")->group("");
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error or critical")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    out.message = app.help();
    return out;
  } catch (const CLI::ParseError& e) {
    out.exit_code = 2;
    out.message = std::string("tmpfsd: ") + e.what();
    return out;
  }
  auto fail = [&](const std::string& msg) {
    out.exit_code = 2;
    out.message = "tmpfsd: " + msg;
    return out;
  };
  if (positionals.empty())
    return fail("a mountpoint is required (usage: tmpfsd [options] [SOURCE] MOUNTPOINT)");
  if (positionals.size() > 2)
    return fail("unexpected argument " + positionals[2] +
                " (usage: tmpfsd [options] [SOURCE] MOUNTPOINT)");
  o.mountpoint = positionals.back();
  if (positionals.size() == 2) {
    if (positionals[0].empty()) return fail("SOURCE: empty");
    o.source = positionals[0];
  }

  // The daemon options' -o forms. Each names the flag it stands for; both
  // forms of one option is an error, so that which one counts never
  // depends on the order.
  std::string page_size_label = "--page-size", memory_label = "--memory", swap_label = "--swap",
              threads_label = "--threads";
  auto both = [&](const std::string& key, const std::string& flag) {
    return fail("-o " + key + "= and " + flag + " both given: give one of them");
  };
  const uint64_t ram = physical_memory();
  bool size_given = false;
  // mount(8) gives a remount's helper the kernel mount's options as
  // /proc/mounts shows them, FUSE's own among them.
  bool remounting = false;
  for (const std::string& opt : mount_opts) remounting = remounting || opt == "remount";
  auto fuse_kernel_option = [](const std::string& key) {
    return key == "user_id" || key == "group_id" || key == "default_permissions" ||
           key == "rootmode" || key == "max_read" || key == "blksize" || key == "fd";
  };
  // The -o form of a pool of several servers is split at its commas:
  // items that follow remote= and look like HOST:PORT[?...] continue it.
  bool in_remote = false;
  for (const std::string& opt : mount_opts) {
    if (opt.empty()) continue;
    if (in_remote && continues_remote(opt)) {
      o.remote += "," + opt;
      continue;
    }
    in_remote = false;
    auto eq = opt.find('=');
    std::string key = opt.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : opt.substr(eq + 1);
    // A remount changes the kernel mount's flags (below) and the live
    // daemon's size=, nr_inodes= and memory= (kept for it as given); every
    // other option of the first mount, which mount(8) repeats, is ignored.
    if (remounting && eq != std::string::npos) {
      if (key == "size" || key == "nr_inodes" || key == "memory")
        o.remount_options += (o.remount_options.empty() ? "" : ",") + opt;
      continue;
    }
    if (key == "allow_other" && eq == std::string::npos) {
      o.allow_other = true;
    } else if (opt == "remount") {
      o.remount = true;
    } else if (remounting && fuse_kernel_option(key)) {
      o.ignored.push_back(opt);
    } else if (opt == "ro" || opt == "rw") {
      o.read_only = opt == "ro";
    } else if (opt == "sync" || opt == "async") {
      o.sync = opt == "sync";
    } else if (opt == "dirsync") {
      o.dirsync = true;
    } else if (opt == "noatime") {
      o.atime = "noatime";
    } else if (opt == "atime" || opt == "relatime" || opt == "nostrictatime") {
      o.atime = "relatime";  // the kernel's default since 2.6.30
    } else if (opt == "strictatime" || opt == "norelatime") {
      o.atime = "strictatime";
    } else if (opt == "nodiratime" || opt == "diratime") {
      o.nodiratime = opt == "nodiratime";
    } else if (ignored_generic(opt)) {
      o.ignored.push_back(opt);
    } else if (opt == "writeback_cache") {
      if (app.count("--writeback-cache"))
        return fail("-o writeback_cache and --writeback-cache both given: give one of them");
      o.writeback_cache = true;
    } else if (opt == "nosuid" || opt == "nodev" || opt == "noexec") {
      (opt == "nosuid" ? o.nosuid : opt == "nodev" ? o.nodev : o.noexec) = true;
    } else if (opt == "suid" || opt == "dev" || opt == "exec") {
      (opt == "suid" ? o.nosuid : opt == "dev" ? o.nodev : o.noexec) = false;
    } else if (key == "seal") {
      if (app.count("--seal")) return both(key, "--seal");
      if (value != "on" && value != "off") return fail("-o seal=" + value + ": must be on or off");
      seal = value;
    } else if (key == "persist_key") {
      if (app.count("--persist-key")) return both(key, "--persist-key");
      if (value.empty()) return fail("-o persist_key: needs a file (persist_key=FILE)");
      o.persist_key = value;
    } else if (key == "persist") {
      if (app.count("--persist")) return both(key, "--persist");
      if (value.empty()) return fail("-o persist: needs a directory (persist=DIR)");
      o.persist = value;
    } else if (key == "remote") {
      if (app.count("--remote")) return both(key, "--remote");
      o.remote = value;
      in_remote = true;
    } else if (key == "compress") {
      if (app.count("--compress")) return both(key, "--compress");
      if (value != "lz4" && value != "zstd" && value != "off")
        return fail("-o compress=" + value + ": must be lz4, zstd or off");
      o.compress = value;
    } else if (key == "compress_pool") {
      if (app.count("--compress-pool")) return both(key, "--compress-pool");
      compress_pool = value;
    } else if (key == "remote_size") {
      if (app.count("--remote-size")) return both(key, "--remote-size");
      remote_size = value;
    } else if (key == "memory" || key == "swap" || key == "swap_dir" || key == "page_size" ||
               key == "writeback_conflict" || key == "threads" || key == "log_level" ||
               key == "log_file" || key == "pid_file" || key == "transport" ||
               key == "uring_depth") {
      if (value.empty()) return fail("-o " + key + ": needs a value (" + key + "=...)");
      if (key == "memory") {
        if (app.count("--memory")) return both(key, "--memory");
        memory = value, memory_label = "-o memory=";
      } else if (key == "swap") {
        if (app.count("--swap")) return both(key, "--swap");
        swap = value, swap_label = "-o swap=";
      } else if (key == "swap_dir") {
        if (app.count("--swap-dir")) return both(key, "--swap-dir");
        o.swap_dir = value;
      } else if (key == "page_size") {
        if (app.count("--page-size")) return both(key, "--page-size");
        page_size = value, page_size_label = "-o page_size=";
      } else if (key == "writeback_conflict") {
        if (app.count("--writeback-conflict")) return both(key, "--writeback-conflict");
        if (value != "wait" && value != "copy")
          return fail("-o writeback_conflict=" + value + ": must be wait or copy");
        o.writeback_conflict = value;
      } else if (key == "threads") {
        if (app.count("--threads")) return both(key, "--threads");
        threads = value, threads_label = "-o threads=";
      } else if (key == "log_level") {
        if (app.count("--log-level")) return both(key, "--log-level");
        static const char* const levels[] = {"trace", "debug",    "info", "warn",
                                             "error", "critical", "off"};
        bool ok = false;
        for (const char* l : levels) ok = ok || value == l;
        if (!ok)
          return fail("-o log_level=" + value +
                      ": must be trace, debug, info, warn, error, critical or off");
        o.log_level = value;
      } else if (key == "transport") {
        if (app.count("--transport")) return both(key, "--transport");
        if (value != "auto" && value != "uring" && value != "dev")
          return fail("-o transport=" + value + ": must be auto, uring or dev");
        o.transport = value;
      } else if (key == "uring_depth") {
        if (app.count("--uring-depth")) return both(key, "--uring-depth");
        uring_depth = value;
      } else if (key == "log_file") {
        if (app.count("--log-file")) return both(key, "--log-file");
        o.log_file = value;
      } else {
        if (app.count("--pid-file")) return both(key, "--pid-file");
        o.pid_file = value;
      }
    } else if (eq == std::string::npos) {
      return fail("-o " + opt + ": unknown option");
    } else if (key == "size") {
      auto v = parse_size(value, ram);
      if (!v) return fail("-o size=" + value + ": not a size (examples: 512m, 4g, 50%)");
      o.size_bytes = *v;
      size_given = true;
    } else if (key == "nr_inodes") {
      auto v = parse_scaled(value);
      if (!v) return fail("-o nr_inodes=" + value + ": not a number");
      o.nr_inodes = *v;
    } else if (key == "mode") {
      auto v = parse_number(value, 8);
      if (!v || *v > 07777) return fail("-o mode=" + value + ": not an octal mode up to 7777");
      o.mode = mode_t(*v);
    } else if (key == "uid") {
      auto v = parse_number(value, 10);
      if (!v || *v >= UINT32_MAX) return fail("-o uid=" + value + ": not a user id");
      o.uid = uid_t(*v);
    } else if (key == "gid") {
      auto v = parse_number(value, 10);
      if (!v || *v >= UINT32_MAX) return fail("-o gid=" + value + ": not a group id");
      o.gid = gid_t(*v);
    } else {
      return fail("-o " + key + ": unknown option");
    }
  }
  if (!size_given) o.size_bytes = ram / 2;  // tmpfs's default
  if (o.remount) {
    out.options = o;
    return out;
  }

  auto sep = [](const std::string& label) { return label.back() == '=' ? "" : " "; };
  if (!threads.empty()) {
    auto v = parse_number(threads, 10);
    if (!v || *v > 100000)
      return fail(threads_label + sep(threads_label) + threads +
                  ": not a number of threads (0: libfuse's default)");
    o.max_threads = unsigned(*v);
  }
  if (!uring_depth.empty()) {
    auto v = parse_number(uring_depth, 10);
    if (!v || *v < 1 || *v > 1024)
      return fail("uring_depth " + uring_depth + ": must be a number of entries from 1 to 1024");
    o.uring_depth = unsigned(*v);
  }
  if (!page_size.empty()) {
    auto v = parse_number(page_size, 10);
    if (!v || *v < 4096 || (*v & (*v - 1)) != 0 || *v > (1ull << 30))
      return fail(page_size_label + sep(page_size_label) + page_size +
                  ": must be a power of two, 4096 or more");
    o.page_size = size_t(*v);
  }
  if (!memory.empty()) {
    auto v = parse_size(memory, ram);
    const std::string m = memory_label + sep(memory_label) + memory;
    if (!v) return fail(m + ": not a size (examples: 256m, 2g, 25%)");
    if (*v < 16 * o.page_size) return fail(m + ": must be at least 16 pages");
    o.memory_bytes = *v;
  } else {
    uint64_t cap = ram / 2;
    o.memory_bytes = o.size_bytes == 0 ? cap : std::min(o.size_bytes, cap);
    o.memory_bytes = std::max<uint64_t>(o.memory_bytes, 16 * o.page_size);
  }
  if (!swap.empty()) {
    auto v = parse_size(swap, ram);
    const std::string m = swap_label + sep(swap_label) + swap;
    if (!v) return fail(m + ": not a size (examples: 16g, 0)");
    if (*v != 0 && *v < 16 * o.page_size) return fail(m + ": must be 0 or at least 16 pages");
    o.swap_bytes = *v;
    o.swap_given = true;
  } else {
    o.swap_bytes = o.size_bytes;
  }
  if (o.swap_dir.empty()) return fail("--swap-dir: empty");
  if (!o.persist_key.empty() && o.persist.empty())
    return fail("--persist-key: only with --persist DIR (it seals DIR's image)");
  if (!remote_size.empty() && o.remote.empty())
    return fail("--remote-size without --remote: there is no pool to size");
  if (!o.remote.empty()) {
    swapdev::RemoteOptions ro;
    std::string why;
    if (!swapdev::parse_remote_url(o.remote, &ro, &why)) return fail("--remote: " + why);
    if (o.swap_bytes == 0)
      return fail(
          "--remote needs a swap file (--swap above 0): pages go there when the pool "
          "cannot take them");
    o.remote_bytes = o.swap_bytes;
    if (!remote_size.empty()) {
      auto v = parse_size(remote_size, ram);
      if (!v || *v < o.page_size)
        return fail("--remote-size " + remote_size + ": not a size of at least one page");
      o.remote_bytes = *v;
    }
  }
  if (!compress_pool.empty()) {
    unsigned n = 0;
    const auto [end, ec] =
        std::from_chars(compress_pool.data(), compress_pool.data() + compress_pool.size(), n);
    if (ec != std::errc() || end + 1 != compress_pool.data() + compress_pool.size() ||
        *end != '%' || n < 1 || n > 90)
      return fail("--compress-pool " + compress_pool + ": a share of --memory, 1% to 90%");
    o.compress_pool_percent = n;
  }
  o.seal = seal != "off";
  if (o.fuse_debug) o.foreground = true;

  // A take-over does not look: the mount point is the live mount, whose
  // daemon waits for this one (daemon/restart.h).
  if (!o.takeover.empty()) {
    out.options = o;
    return out;
  }
  struct stat st;
  if (stat(o.mountpoint.c_str(), &st) != 0)
    return fail("mountpoint " + o.mountpoint + ": " + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return fail("mountpoint " + o.mountpoint + ": not a directory");
  out.options = o;
  return out;
}

uint64_t compress_pool_pages(const Options& o, bool pool_only) {
  const unsigned percent = o.compress_pool_percent ? o.compress_pool_percent
                           : pool_only             ? Options::kCompressPoolAlone
                                                   : Options::kCompressPoolWithSwap;
  const uint64_t frames = o.memory_bytes / o.page_size;
  const uint64_t floor = std::min(frames / 4, Options::kPageCacheFloor / o.page_size);
  return std::min(frames * percent / 100, frames - floor);
}

}  // namespace tmpfsd
