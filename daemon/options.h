// Options: what `tmpfsd [options] [SOURCE] MOUNTPOINT` was asked to do.
//
// Parsed with CLI11. The -o list mirrors tmpfs (size=, nr_inodes=, mode=,
// uid=, gid=) and takes sizes the way tmpfs does: a number with an optional
// k/m/g/t/p/e suffix (powers of 1024), or N% of physical memory. Parsing
// is pure (no mounting, no files opened) so that tests can call it.
//
// mount(8): `mount -t fuse.tmpfsd SOURCE DIR -o OPTS` makes mount.fuse3 run
// `tmpfsd SOURCE DIR -o OPTS`. So every daemon option also has a -o form
// (--memory: memory=, --swap-dir: swap_dir=, --writeback-cache:
// writeback_cache, ...); giving both forms of one option is an error (exit
// 2), giving the -o form twice keeps the last, as mount(8) does. mount(8)'s
// generic options are passed to the kernel mount where libfuse 3.14 can
// (ro/rw, sync/async, dirsync, noatime, nosuid/nodev/noexec); the atime
// family (noatime, atime, relatime, strictatime, nodiratime, diratime and
// the no- forms) sets when the daemon moves atime, since the FUSE kernel
// client leaves that to the daemon; lazytime/nolazytime (no disk to write
// times to) and the options for mount(8) and fstab only (defaults, nofail,
// noauto, auto, user, nouser, users, owner, group, _netdev, comment=, x-*)
// are accepted and ignored.
//
// `mount -o remount,OPTS DIR` on a fuse.tmpfsd mount: mount(8) runs
// mount.fuse3 as for a mount (the kernel does not pass a FUSE remount to
// the daemon), with OPTS after the mount's own options, "remount" among
// them; mount.fuse3 runs tmpfsd with that list. tmpfsd then mounts
// nothing: it asks the daemon of DIR to change size=, nr_inodes= (and
// memory=, which it refuses) as `tmpfsctl set` does, and ignores the other
// options (the mount's own, which mount(8) repeats).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tmpfsd {

struct Options {
  std::string mountpoint;
  // SOURCE: the mount's fsname, shown by findmnt and df ("tmpfsd" when not
  // given).
  std::string source = "tmpfsd";
  uint64_t size_bytes = 0;  // size=; 0 = unlimited (as on tmpfs)
  uint64_t nr_inodes = 0;   // nr_inodes=; 0 = unlimited
  mode_t mode = 01777;      // of the root directory
  uid_t uid = 0;
  gid_t gid = 0;
  bool allow_other = false;
  // Generic mount flags, as for tmpfs: set-ID bits and device nodes work
  // unless nosuid/nodev are given; noexec forbids exec.
  bool nosuid = false, nodev = false, noexec = false;
  // mount(8)'s generic flags that libfuse passes to the kernel mount.
  bool read_only = false;  // ro (rw: false)
  bool sync = false;       // sync (async: false)
  bool dirsync = false;
  // When reads move atime (the daemon keeps it; noatime also goes to the
  // kernel mount): "relatime" (relatime, atime, nostrictatime; the
  // default), "noatime", "strictatime" (strictatime, norelatime).
  std::string atime = "relatime";
  bool nodiratime = false;  // nodiratime (diratime: false)
  // Generic or fstab-only options accepted without effect (logged once the
  // daemon runs), in the order given.
  std::vector<std::string> ignored;
  uint64_t memory_bytes = 0;  // --memory: the frame budget
  // --swap: size of the private swap file; the file system holds at most
  // this much data (frames are a cache in front of it). 0 = no swap. When
  // not given: size=, and a swap file that cannot be made is only a warning.
  uint64_t swap_bytes = 0;
  bool swap_given = false;
  std::string swap_dir = "/var/tmp";  // --swap-dir: where the swap file lives
  // --seal on|off (-o seal=): pages in the swap file sealed with
  // AES-256-GCM under a key that lives only in the daemon's memory (on), or
  // written as they are with an XXH3 checksum (off).
  bool seal = true;
  // --persist DIR (-o persist=): the file system is saved to DIR when the
  // daemon stops cleanly and restored from it when it starts
  // (daemon/persist.h). Empty: nothing survives the daemon, as on tmpfs.
  std::string persist;
  // --persist-key FILE (-o persist_key=): the image is sealed under the key
  // in FILE (daemon/image_seal.h). Empty: not sealed.
  std::string persist_key;
  // --remote URL (-o remote=): the remote tier, a memcached pool
  // ("memcached://h1:11211,h2:11211[?replicas=N]", checked by
  // swapdev::parse_remote_url); empty: none. In the -o form the servers
  // after the first need their :port (the comma also separates options).
  std::string remote;
  // --remote-size (-o remote_size=): the most the pool holds, in bytes of
  // pages (each copy counted once). Default, with --remote: --swap's size.
  uint64_t remote_bytes = 0;
  // --compress lz4|zstd|off (-o compress=): the compressed pool in front of
  // the swap file (swapdev/compressed_swap_device.h); "off": none.
  std::string compress = "off";
  // --compress-pool N% (-o compress_pool=): the pool's share of --memory;
  // 0: not given, kCompressPoolWithSwap or, with no swap file,
  // kCompressPoolAlone. The pool takes frames only for pages that
  // compress, so its share costs nothing on data that does not.
  unsigned compress_pool_percent = 0;
  static constexpr unsigned kCompressPoolWithSwap = 90;
  static constexpr unsigned kCompressPoolAlone = 75;
  // Whatever the share, the pool leaves the page cache this much of
  // --memory, or a quarter of it if that is less: readahead, a 1 MiB FUSE
  // read and the writers' frames (docs/measurements.md, the pool's share).
  static constexpr uint64_t kPageCacheFloor = uint64_t{16} << 20;
  size_t page_size = 4096;
  bool foreground = false;
  bool fuse_debug = false;
  // --writeback-cache: faster small writes, but ENOSPC then shows at close or
  // fsync instead of write(), so it is off unless asked for.
  bool writeback_cache = false;
  // --writeback-conflict: what a write does to a page whose swap write is
  // in flight: "wait" for the I/O, or "copy" the page to a free frame.
  std::string writeback_conflict = "wait";
  unsigned max_threads = 0;  // 0 = libfuse's default
  // --transport auto|uring|dev (-o transport=): how requests reach the
  // daemon (daemon/uring_transport.h). auto: io_uring rings when the kernel
  // offers them (the fuse module's enable_uring), else /dev/fuse; uring:
  // the rings or no mount; dev: /dev/fuse.
  std::string transport = "auto";
  unsigned uring_depth = 0;  // --uring-depth (-o uring_depth=): entries per queue; 0 = default
  std::string log_level = "info";
  // --log-file: where the log goes instead of syslog (daemonised) or
  // stderr (-f); appended to.
  std::string log_file;
  // --pid-file: the daemon's process ID, written by the daemon when it
  // starts and removed when it exits.
  std::string pid_file;
  // --takeover F,S,R[,L] (hidden): this process takes a mount over from the
  // daemon that started it (daemon/restart.h). Empty: a start of its own.
  std::string takeover;
  // -o remount: instead of mounting, change the flags of the live mount on
  // MOUNTPOINT (ro/rw, nosuid, ..., daemon/remount.h) and the live
  // daemon's limits: remount_options are its size=, nr_inodes= and memory=
  // in order, as tmpfsctl set takes them.
  bool remount = false;
  std::string remount_options;
};

struct ParseOutcome {
  std::optional<Options> options;  // set when the program should mount
  int exit_code = 0;               // when it should not: 0 (--help) or 2
  std::string message;             // what to print (help text or one-line error)
};

ParseOutcome parse_options(int argc, char** argv);

// "16g", "512M", "50%", "0": bytes, or nullopt for a malformed size.
// `ram` is the physical memory that % refers to.
std::optional<uint64_t> parse_size(const std::string& text, uint64_t ram);
// The pages the compressed pool may hold: its share of --memory
// (compress_pool_percent, or the default with or without a swap file),
// less what Options::kPageCacheFloor keeps for the page cache.
uint64_t compress_pool_pages(const Options& o, bool pool_only);
uint64_t physical_memory();

}  // namespace tmpfsd
