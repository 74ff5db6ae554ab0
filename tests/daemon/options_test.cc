// Options: what the command line means, and the one-line errors (exit 2)
// for what it cannot mean. No mounting.
#define CATCH_CONFIG_MAIN
#include <sys/mount.h>
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "daemon/options.h"
#include "daemon/remount.h"

using namespace tmpfsd;

namespace {

ParseOutcome parse(std::vector<std::string> args) {
  args.insert(args.begin(), "tmpfsd");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_options(int(argv.size()), argv.data());
}

}  // namespace

TEST_CASE("sizes are read as tmpfs reads them", "[options]") {
  const uint64_t ram = 8ull << 30;
  CHECK(parse_size("0", ram) == 0u);
  CHECK(parse_size("4096", ram) == 4096u);
  CHECK(parse_size("16k", ram) == 16384u);
  CHECK(parse_size("512M", ram) == 512ull << 20);
  CHECK(parse_size("2g", ram) == 2ull << 30);
  CHECK(parse_size("1t", ram) == 1ull << 40);
  CHECK(parse_size("50%", ram) == 4ull << 30);
  CHECK_FALSE(parse_size("", ram));
  CHECK_FALSE(parse_size("12q", ram));
  CHECK_FALSE(parse_size("-1", ram));
  CHECK_FALSE(parse_size("g", ram));
  CHECK_FALSE(parse_size("99999999999999999999", ram));
  CHECK_FALSE(parse_size("20000000000000e", ram));
}

TEST_CASE("mount options", "[options]") {
  auto r = parse({"-o", "size=1g,nr_inodes=10k,mode=755,uid=1000,gid=100,allow_other", "--memory",
                  "64m", "/tmp"});
  REQUIRE(r.options);
  CHECK(r.options->size_bytes == 1ull << 30);
  CHECK(r.options->nr_inodes == 10240u);
  CHECK(r.options->mode == 0755);
  CHECK(r.options->uid == 1000u);
  CHECK(r.options->gid == 100u);
  CHECK(r.options->allow_other);
  CHECK(r.options->memory_bytes == 64ull << 20);
  CHECK_FALSE(r.options->writeback_cache);
}

TEST_CASE("defaults follow tmpfs: half of RAM, root mode 1777", "[options]") {
  auto r = parse({"/tmp"});
  REQUIRE(r.options);
  CHECK(r.options->size_bytes == physical_memory() / 2);
  CHECK(r.options->mode == 01777);
  CHECK(r.options->nr_inodes == 0u);
  CHECK(r.options->memory_bytes <= r.options->size_bytes);
}

TEST_CASE("bad options give a one-line error naming the option and exit status 2", "[options]") {
  struct Case {
    std::vector<std::string> args;
    std::string names;
  };
  std::vector<Case> cases = {
      {{"-o", "size=12q", "/tmp"}, "size"},
      {{"-o", "nr_inodes=x", "/tmp"}, "nr_inodes"},
      {{"-o", "mode=999", "/tmp"}, "mode"},
      {{"-o", "uid=-3", "/tmp"}, "uid"},
      {{"-o", "bogus=1", "/tmp"}, "bogus"},
      {{"-o", "nonsense", "/tmp"}, "nonsense"},
      {{"-o", "size=1g,bogus=1", "mysrc", "/tmp"}, "bogus"},
      {{"-o", "memory=lots", "/tmp"}, "-o memory=lots"},
      {{"-o", "memory=4k", "/tmp"}, "memory="},
      {{"-o", "memory", "/tmp"}, "memory"},
      {{"-o", "swap=x", "/tmp"}, "swap="},
      {{"-o", "swap_dir=", "/tmp"}, "swap_dir"},
      {{"-o", "page_size=5000", "/tmp"}, "page_size="},
      {{"-o", "writeback_conflict=skip", "/tmp"}, "writeback_conflict"},
      {{"-o", "seal=maybe", "/tmp"}, "-o seal=maybe"},
      {{"-o", "seal", "/tmp"}, "seal"},
      {{"--seal", "no", "/tmp"}, "--seal"},
      {{"-o", "seal=off", "--seal", "off", "/tmp"}, "both given"},
      {{"-o", "persist=", "/tmp"}, "persist"},
      {{"-o", "persist=/a", "--persist", "/a", "/tmp"}, "both given"},
      {{"--persist-key", "/k", "/tmp"}, "only with --persist"},
      {{"--compress", "gzip", "/tmp"}, "--compress"},
      {{"-o", "compress=gzip", "/tmp"}, "-o compress=gzip"},
      {{"--compress-pool", "95%", "/tmp"}, "--compress-pool 95%"},
      {{"--compress-pool", "20", "/tmp"}, "--compress-pool 20"},
      {{"-o", "compress=lz4", "--compress", "lz4", "/tmp"}, "both given"},
      {{"-o", "persist=/a,persist_key=", "/tmp"}, "persist_key"},
      {{"-o", "threads=many", "/tmp"}, "threads="},
      {{"-o", "log_level=loud", "/tmp"}, "log_level"},
      {{"-o", "log_file=", "/tmp"}, "log_file"},
      {{"-o", "pid_file=", "/tmp"}, "pid_file"},
      {{"-o", "writeback_cache=1", "/tmp"}, "writeback_cache"},
      {{"-o", "rw=1", "/tmp"}, "rw"},
      {{"-o", "memory=16m", "--memory", "16m", "/tmp"}, "both given"},
      {{"--swap", "0", "-o", "swap=0", "/tmp"}, "both given"},
      {{"-o", "swap_dir=/var/tmp", "--swap-dir", "/var/tmp", "/tmp"}, "both given"},
      {{"-o", "page_size=8192", "--page-size", "8192", "/tmp"}, "both given"},
      {{"-o", "writeback_cache", "--writeback-cache", "/tmp"}, "both given"},
      {{"-o", "writeback_conflict=copy", "--writeback-conflict", "copy", "/tmp"}, "both given"},
      {{"-o", "threads=2", "--threads", "2", "/tmp"}, "both given"},
      {{"-o", "log_level=warn", "--log-level", "warn", "/tmp"}, "both given"},
      {{"-o", "log_file=/tmp/l", "--log-file", "/tmp/l", "/tmp"}, "both given"},
      {{"-o", "pid_file=/tmp/p", "--pid-file", "/tmp/p", "/tmp"}, "both given"},
      {{"a", "/tmp", "extra"}, "unexpected argument extra"},
      {{"", "/tmp"}, "SOURCE"},
      {{"mysrc", "/nonexistent/mountpoint"}, "mountpoint"},
      {{"--memory", "lots", "/tmp"}, "--memory"},
      {{"--memory", "4k", "/tmp"}, "--memory"},
      {{"--page-size", "5000", "/tmp"}, "--page-size"},
      {{"--page-size", "2048", "/tmp"}, "--page-size"},
      {{"--log-level", "loud", "/tmp"}, "log-level"},
      {{"--writeback-conflict", "skip", "/tmp"}, "writeback-conflict"},
      {{"/nonexistent/mountpoint"}, "mountpoint"},
      {{"/etc/passwd"}, "not a directory"},
      {{}, "mountpoint"},
  };
  for (auto& c : cases) {
    auto r = parse(c.args);
    INFO(r.message);
    CHECK_FALSE(r.options);
    CHECK(r.exit_code == 2);
    CHECK(r.message.find(c.names) != std::string::npos);
    CHECK(r.message.find('\n') == std::string::npos);
  }
}

TEST_CASE("--writeback-conflict takes wait or copy", "[options]") {
  auto def = parse({"/tmp"});
  REQUIRE(def.options);
  CHECK(def.options->writeback_conflict == "wait");
  auto copy = parse({"--writeback-conflict", "copy", "/tmp"});
  REQUIRE(copy.options);
  CHECK(copy.options->writeback_conflict == "copy");
}

TEST_CASE("--transport takes auto, uring or dev; auto by default", "[options]") {
  auto def = parse({"/tmp"});
  REQUIRE(def.options);
  CHECK(def.options->transport == "auto");
  CHECK(def.options->uring_depth == 0);
  auto uring = parse({"--transport", "uring", "--uring-depth", "8", "/tmp"});
  REQUIRE(uring.options);
  CHECK(uring.options->transport == "uring");
  CHECK(uring.options->uring_depth == 8);
  auto dev = parse({"-o", "transport=dev,uring_depth=64", "/tmp"});
  REQUIRE(dev.options);
  CHECK(dev.options->transport == "dev");
  CHECK(dev.options->uring_depth == 64);
  for (auto args :
       std::vector<std::vector<std::string>>{{"-o", "transport=ring", "/tmp"},
                                             {"--transport", "fuse", "/tmp"},
                                             {"-o", "transport=dev", "--transport", "dev", "/tmp"},
                                             {"-o", "uring_depth=0", "/tmp"},
                                             {"--uring-depth", "x", "/tmp"}}) {
    auto r = parse(args);
    CHECK_FALSE(r.options);
    CHECK(r.exit_code == 2);
    CHECK(r.message.find('\n') == std::string::npos);
  }
}

TEST_CASE("--help exits 0 with the usage", "[options]") {
  auto r = parse({"--help"});
  CHECK_FALSE(r.options);
  CHECK(r.exit_code == 0);
  CHECK(r.message.find("--memory") != std::string::npos);
}

TEST_CASE("SOURCE before MOUNTPOINT is the fsname; without it, tmpfsd", "[options]") {
  auto plain = parse({"/tmp"});
  REQUIRE(plain.options);
  CHECK(plain.options->source == "tmpfsd");
  CHECK(plain.options->mountpoint == "/tmp");
  // As mount.fuse3 runs it: SOURCE DIR -o OPTS, options after the positionals.
  auto helper = parse({"mysrc", "/tmp", "-o", "rw,noatime,size=64m,memory=16m,dev,suid"});
  REQUIRE(helper.options);
  CHECK(helper.options->source == "mysrc");
  CHECK(helper.options->mountpoint == "/tmp");
  CHECK(helper.options->size_bytes == 64ull << 20);
  CHECK(helper.options->memory_bytes == 16ull << 20);
  CHECK(helper.options->atime == "noatime");
  CHECK_FALSE(helper.options->read_only);
  auto flags_first = parse({"--memory", "32m", "scratch,x", "/tmp"});
  REQUIRE(flags_first.options);
  CHECK(flags_first.options->source == "scratch,x");
  CHECK(flags_first.options->memory_bytes == 32ull << 20);
}

TEST_CASE("--seal takes on or off, on by default; -o seal= the same", "[options]") {
  auto def = parse({"/tmp"});
  REQUIRE(def.options);
  CHECK(def.options->seal);
  for (auto args : {std::vector<std::string>{"--seal", "off", "/tmp"},
                    std::vector<std::string>{"-o", "seal=off", "/tmp"},
                    std::vector<std::string>{"-o", "size=1g,seal=off,memory=64m", "/tmp"}}) {
    auto off = parse(args);
    INFO(off.message);
    REQUIRE(off.options);
    CHECK_FALSE(off.options->seal);
  }
  for (auto args : {std::vector<std::string>{"--seal", "on", "/tmp"},
                    std::vector<std::string>{"-o", "seal=on", "/tmp"}}) {
    auto on = parse(args);
    REQUIRE(on.options);
    CHECK(on.options->seal);
  }
}

TEST_CASE("--compress lz4|zstd|off and --compress-pool N%; off and not given by default",
          "[options]") {
  auto def = parse({"/tmp"});
  REQUIRE(def.options);
  CHECK(def.options->compress == "off");
  CHECK(def.options->compress_pool_percent == 0);  // 90% with a swap file, 75% alone
  auto alone = parse({"--compress", "lz4", "--swap", "0", "/tmp"});  // the pool alone
  INFO(alone.message);
  CHECK(alone.options);
  for (auto args :
       {std::vector<std::string>{"--compress", "zstd", "--compress-pool", "40%", "/tmp"},
        std::vector<std::string>{"-o", "size=1g,compress=zstd,compress_pool=40%", "/tmp"}}) {
    auto p = parse(args);
    INFO(p.message);
    REQUIRE(p.options);
    CHECK(p.options->compress == "zstd");
    CHECK(p.options->compress_pool_percent == 40);
  }
}

TEST_CASE("The compressed pool's pages: its share, less the page cache's floor", "[options]") {
  Options o;
  o.page_size = 4096;
  o.memory_bytes = uint64_t{1} << 30;  // 262,144 frames
  CHECK(compress_pool_pages(o, false) == 262144 * 90 / 100);
  CHECK(compress_pool_pages(o, true) == 262144 * 75 / 100);
  o.compress_pool_percent = 40;
  CHECK(compress_pool_pages(o, false) == 262144 * 40 / 100);
  // 64 MiB: 90% would leave 6.4 MiB; the floor keeps 16 MiB.
  o.compress_pool_percent = 0;
  o.memory_bytes = uint64_t{64} << 20;
  CHECK(compress_pool_pages(o, false) == 16384 - 4096);
  // 2 MiB: a quarter stays with the page cache.
  o.memory_bytes = uint64_t{2} << 20;
  CHECK(compress_pool_pages(o, false) == 512 - 128);
  CHECK(compress_pool_pages(o, true) == 384);
}

TEST_CASE("--persist DIR and -o persist=DIR; none by default", "[options]") {
  auto def = parse({"/tmp"});
  REQUIRE(def.options);
  CHECK(def.options->persist.empty());
  for (auto args : {std::vector<std::string>{"--persist", "/var/lib/t", "/tmp"},
                    std::vector<std::string>{"-o", "size=1g,persist=/var/lib/t", "/tmp"}}) {
    auto p = parse(args);
    INFO(p.message);
    REQUIRE(p.options);
    CHECK(p.options->persist == "/var/lib/t");
  }
}

TEST_CASE("every daemon option has a mount-option form", "[options]") {
  auto r = parse(
      {"-o",
       "size=1g,memory=64m,swap=128m,swap_dir=/srv,page_size=8192,writeback_cache,"
       "writeback_conflict=copy,threads=3,log_level=warn,log_file=/tmp/t.log,pid_file=/tmp/t.pid",
       "/tmp"});
  INFO(r.message);
  REQUIRE(r.options);
  const Options& o = *r.options;
  CHECK(o.memory_bytes == 64ull << 20);
  CHECK(o.swap_bytes == 128ull << 20);
  CHECK(o.swap_given);
  CHECK(o.swap_dir == "/srv");
  CHECK(o.page_size == 8192u);
  CHECK(o.writeback_cache);
  CHECK(o.writeback_conflict == "copy");
  CHECK(o.max_threads == 3u);
  CHECK(o.log_level == "warn");
  CHECK(o.log_file == "/tmp/t.log");
  CHECK(o.pid_file == "/tmp/t.pid");
  // The flags still work and mean the same.
  auto f = parse({"--memory",
                  "64m",
                  "--swap",
                  "128m",
                  "--swap-dir",
                  "/srv",
                  "--page-size",
                  "8192",
                  "--writeback-cache",
                  "--writeback-conflict",
                  "copy",
                  "--threads",
                  "3",
                  "--log-level",
                  "warn",
                  "--log-file",
                  "/tmp/t.log",
                  "--pid-file",
                  "/tmp/t.pid",
                  "-o",
                  "size=1g",
                  "/tmp"});
  REQUIRE(f.options);
  CHECK(f.options->memory_bytes == o.memory_bytes);
  CHECK(f.options->swap_bytes == o.swap_bytes);
  CHECK(f.options->swap_dir == o.swap_dir);
  CHECK(f.options->page_size == o.page_size);
  CHECK(f.options->writeback_cache);
  CHECK(f.options->writeback_conflict == "copy");
  CHECK(f.options->max_threads == 3u);
  CHECK(f.options->log_level == "warn");
  CHECK(f.options->log_file == o.log_file);
  CHECK(f.options->pid_file == o.pid_file);
  // page_size= counts before memory='s 16-page minimum, wherever it stands.
  auto order = parse({"-o", "memory=100k,page_size=8192", "/tmp"});
  CHECK_FALSE(order.options);
  CHECK(order.message.find("-o memory=100k: must be at least 16 pages") != std::string::npos);
  // The same -o key twice: the last one counts, as with mount(8).
  auto twice = parse({"-o", "memory=16m,size=1g", "-o", "memory=32m", "/tmp"});
  REQUIRE(twice.options);
  CHECK(twice.options->memory_bytes == 32ull << 20);
}

TEST_CASE("mount(8)'s generic options: passed on or accepted", "[options]") {
  auto ro = parse({"-o", "ro,sync,dirsync,noatime", "/tmp"});
  REQUIRE(ro.options);
  CHECK(ro.options->read_only);
  CHECK(ro.options->sync);
  CHECK(ro.options->dirsync);
  CHECK(ro.options->atime == "noatime");
  CHECK(ro.options->ignored.empty());
  // The later of a pair wins.
  auto back = parse({"-o", "ro,sync,noatime,rw,async,atime", "/tmp"});
  REQUIRE(back.options);
  CHECK_FALSE(back.options->read_only);
  CHECK_FALSE(back.options->sync);
  CHECK(back.options->atime == "relatime");
  // The atime family: when the daemon moves atime.
  struct Atime {
    std::string opts, mode;
    bool nodiratime;
  };
  const std::vector<Atime> atimes = {
      {"size=1m", "relatime", false},
      {"noatime", "noatime", false},
      {"strictatime", "strictatime", false},
      {"norelatime", "strictatime", false},
      {"noatime,relatime", "relatime", false},
      {"strictatime,nostrictatime", "relatime", false},
      {"noatime,atime", "relatime", false},
      {"nodiratime", "relatime", true},
      {"nodiratime,diratime", "relatime", false},
      {"strictatime,nodiratime", "strictatime", true},
  };
  for (const Atime& a : atimes) {
    auto r = parse({"-o", a.opts, "/tmp"});
    INFO(a.opts << ": " << r.message);
    REQUIRE(r.options);
    CHECK(r.options->atime == a.mode);
    CHECK(r.options->nodiratime == a.nodiratime);
    CHECK(r.options->ignored.empty());
  }
  auto sec = parse({"-o", "nosuid,nodev,noexec", "/tmp"});
  REQUIRE(sec.options);
  CHECK(sec.options->nosuid);
  CHECK(sec.options->nodev);
  CHECK(sec.options->noexec);
  auto unsec = parse({"-o", "nosuid,nodev,noexec,suid,dev,exec", "/tmp"});
  REQUIRE(unsec.options);
  CHECK_FALSE(unsec.options->nosuid);
  CHECK_FALSE(unsec.options->nodev);
  CHECK_FALSE(unsec.options->noexec);
  const std::vector<std::string> accepted = {"lazytime",
                                             "nolazytime",
                                             "defaults",
                                             "nofail",
                                             "noauto",
                                             "auto",
                                             "user",
                                             "nouser",
                                             "users",
                                             "owner",
                                             "group",
                                             "_netdev",
                                             "x-systemd.automount",
                                             "x-systemd.requires=foo.service",
                                             "X-mount.mode=0755",
                                             "comment=fstab"};
  for (const std::string& a : accepted) {
    auto r = parse({"-o", "size=64m," + a, "/tmp"});
    INFO(a << ": " << r.message);
    REQUIRE(r.options);
    CHECK(r.options->ignored == std::vector<std::string>{a});
    CHECK(r.options->size_bytes == 64ull << 20);
  }
  // README's fstab line, as mount.fuse3 hands it on (nofail stripped)
  // and as given directly.
  auto fstab = parse({"scratch", "/tmp", "-o", "rw,size=2G,memory=256M,nofail"});
  REQUIRE(fstab.options);
  CHECK(fstab.options->source == "scratch");
  CHECK(fstab.options->size_bytes == 2ull << 30);
  CHECK(fstab.options->memory_bytes == 256ull << 20);
}

// mount -o remount,size=... DIR: what mount.fuse3 passes (measured on
// bookworm) is the mount's own options, "remount" and the new ones; only
// size=, nr_inodes= and memory= are kept, for the live daemon.
TEST_CASE("-o remount: the limits to change, the rest ignored", "[options]") {
  auto r = parse({"tmpfsd", "/nonexistent/dir", "-o",
                  "rw,relatime,remount,user_id=0,group_id=0,default_permissions,size=2G,"
                  "nr_inodes=1k,dev,suid"});
  REQUIRE(r.options);
  CHECK(r.options->remount);
  CHECK(r.options->mountpoint == "/nonexistent/dir");
  CHECK(r.options->remount_options == "size=2G,nr_inodes=1k");
  auto plain = parse({"/tmp", "-o", "size=2G"});
  REQUIRE(plain.options);
  CHECK_FALSE(plain.options->remount);
}

TEST_CASE("-o remount, as mount -o remount,ro DIR runs the helper, asks for the flags",
          "[options]") {
  auto r = parse({"tmpfsd_scratch", "/mnt", "-o", "rw,remount,ro,nosuid,dev,suid,noatime"});
  REQUIRE(r.options);
  CHECK(r.options->remount);
  CHECK(r.options->read_only);
  CHECK_FALSE(r.options->nosuid);  // suid came later
  CHECK(remount_flags(*r.options) == (MS_REMOUNT | MS_RDONLY | MS_NOATIME));
  auto rw = parse({"src", "/mnt", "-o", "remount,rw,nodev,noexec,sync,dirsync,nodiratime"});
  REQUIRE(rw.options);
  CHECK(remount_flags(*rw.options) == (MS_REMOUNT | MS_NODEV | MS_NOEXEC | MS_SYNCHRONOUS |
                                       MS_DIRSYNC | MS_RELATIME | MS_NODIRATIME));
  // mount(8) passes what /proc/mounts shows, FUSE's options too.
  auto proc = parse({"src", "/mnt", "-o",
                     "remount,ro,relatime,user_id=0,group_id=0,default_permissions,allow_other"});
  REQUIRE(proc.options);
  CHECK(proc.options->remount);
  auto fresh = parse({"src", "/mnt", "-o", "user_id=0"});
  CHECK_FALSE(fresh.options);
  CHECK(fresh.message == "tmpfsd: -o user_id: unknown option");
  auto plain = parse({"src", "/mnt", "-o", "ro"});
  REQUIRE(plain.options);
  CHECK_FALSE(plain.options->remount);
}

TEST_CASE("--remote and --remote-size, and their -o forms", "[options]") {
  auto cli = parse({"--swap", "64m", "--remote", "memcached://h1:11211,h2:11300?replicas=1",
                    "--remote-size", "32m", "/tmp"});
  INFO(cli.message);
  REQUIRE(cli.options);
  CHECK(cli.options->remote == "memcached://h1:11211,h2:11300?replicas=1");
  CHECK(cli.options->remote_bytes == 32u << 20);
  // -o splits at commas: the servers after the first continue remote=.
  auto mnt =
      parse({"-o", "swap=64m,remote=memcached://h1:11211,h2:11300?replicas=1,noatime", "/tmp"});
  INFO(mnt.message);
  REQUIRE(mnt.options);
  CHECK(mnt.options->remote == "memcached://h1:11211,h2:11300?replicas=1");
  CHECK(mnt.options->atime == "noatime");
  CHECK(mnt.options->remote_bytes == 64u << 20);  // the swap size by default
  auto sized = parse({"-o", "swap=64m,remote=memcached://h1,remote_size=16m", "/tmp"});
  REQUIRE(sized.options);
  CHECK(sized.options->remote_bytes == 16u << 20);
  CHECK(parse({"/tmp"}).options->remote.empty());

  struct Case {
    std::vector<std::string> args;
    std::string names;
  };
  const std::vector<Case> bad = {
      {{"--remote", "redis://h1", "/tmp"}, "bad remote URL"},
      {{"--remote", "memcached://h1:0", "/tmp"}, "bad port"},
      {{"--remote", "memcached://h1?replicas=1", "/tmp"}, "replicas=1"},
      {{"--remote", "memcached://h1?copies=2", "/tmp"}, "unknown parameter"},
      {{"-o", "remote=memcached://h1,bogus", "/tmp"}, "bogus"},
      {{"--swap", "0", "--remote", "memcached://h1", "/tmp"}, "needs a swap file"},
      {{"--remote-size", "1g", "/tmp"}, "without --remote"},
      {{"--remote", "memcached://h1", "--remote-size", "lots", "/tmp"}, "--remote-size"},
      {{"-o", "remote=memcached://h1", "--remote", "memcached://h1", "/tmp"}, "both given"},
  };
  for (const Case& c : bad) {
    auto r = parse(c.args);
    INFO(r.message);
    CHECK_FALSE(r.options);
    CHECK(r.exit_code == 2);
    CHECK(r.message.find(c.names) != std::string::npos);
    CHECK(r.message.find('\n') == std::string::npos);
  }
}
