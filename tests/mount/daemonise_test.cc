// tmpfsd started as users start it (no -f: it daemonises) must be the same
// daemon as in the foreground: its background threads alive, pages spilling
// to the swap file and coming back, SIGTERM ending it even while writers
// wait for frames, and a failed start that says why and leaves nothing.
// A daemon that forks after starting its threads keeps none of them, and
// its first write beyond --memory waits for ever.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace {

// Deterministic bytes: xorshift64*, so a mismatch reproduces.
std::string bytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; i += 8) {
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    uint64_t v = x * 0x2545F4914F6CDD1Dull;
    for (size_t j = 0; j < 8 && i + j < n; ++j) s[i + j] = char(v >> (8 * j));
  }
  return s;
}

std::set<std::string> thread_names(pid_t pid) {
  std::set<std::string> names;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (!d) return names;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name + "/comm");
    std::string name;
    if (std::getline(in, name)) names.insert(name);
  }
  ::closedir(d);
  return names;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The daemon's counters, logged on SIGUSR1: the value after `label`.
uint64_t counter(mt::Mount& m, const std::string& label) {
  ::kill(m.pid(), SIGUSR1);
  std::regex re(label + " (\\d+)");
  for (int i = 0; i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::string log = read_all(m.log_path());
    auto pos = log.rfind("counters of");
    if (pos == std::string::npos) continue;
    std::smatch match;
    std::string tail = log.substr(pos);
    if (std::regex_search(tail, match, re)) return std::stoull(match[1]);
  }
  return UINT64_MAX;
}

struct SwapDir {
  std::string path;
  SwapDir() {
    char t[] = "/var/tmp/tmpfsd-daemonise.XXXXXX";
    path = ::mkdtemp(t) ? t : "/var/tmp";
  }
  ~SwapDir() { ::rmdir(path.c_str()); }
};

mt::MountOptions spilling(const SwapDir& swap) {
  mt::MountOptions o;
  o.size = "512m";
  o.nr_inodes = 1000;
  o.memory = "4M";
  o.daemon_args = {"--swap", "512M", "--swap-dir", swap.path};
  return o;
}

// Processes whose command line names `needle`.
int processes_naming(const std::string& needle) {
  int n = 0;
  DIR* d = ::opendir("/proc");
  while (dirent* e = d ? ::readdir(d) : nullptr) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string cmd = read_all(std::string("/proc/") + e->d_name + "/cmdline");
    if (cmd.find(needle) != std::string::npos) ++n;
  }
  if (d) ::closedir(d);
  return n;
}

}  // namespace

TEST_CASE(
    "daemonised: background threads alive, 64 MiB through --memory 4M read back byte for byte",
    "[daemonise]") {
  if (!mt::testing_tmpfsd()) {
    SUCCEED("tmpfs-vs-tmpfs mode: nothing daemonises");
    return;
  }
  SwapDir swap;
  mt::Mount m(mt::Mount::Kind::Tmpfsd, spilling(swap));
  std::set<std::string> names = thread_names(m.pid());
  INFO("threads of pid " << m.pid());
  for (const char* want : {"reclaimer", "prefault", "uring-complete", "uring-discard"}) {
    INFO("thread " << want);
    CHECK(names.count(want) == 1);
  }

  const size_t kChunk = 1 << 20, kTotal = 64 << 20;
  std::string path = m.path() + "/spill";
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  for (size_t off = 0; off < kTotal; off += kChunk) {
    std::string b = bytes(kChunk, off / kChunk);
    REQUIRE(::pwrite(fd, b.data(), b.size(), off_t(off)) == ssize_t(b.size()));
  }
  REQUIRE(::fsync(fd) == 0);
  // Reads must reach the daemon, not the kernel's copy of the pages.
  REQUIRE(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0);
  std::string got(kChunk, '\0');
  size_t bad_chunks = 0;
  for (size_t off = 0; off < kTotal; off += kChunk) {
    REQUIRE(::pread(fd, got.data(), got.size(), off_t(off)) == ssize_t(got.size()));
    if (got != bytes(kChunk, off / kChunk)) ++bad_chunks;
  }
  CHECK(bad_chunks == 0);
  struct stat st {};
  REQUIRE(::fstat(fd, &st) == 0);
  CHECK(st.st_size == off_t(kTotal));
  CHECK(st.st_blocks == off_t(kTotal / 512));
  ::close(fd);
  // The pages went through the swap file and came back.
  CHECK(counter(m, "writebacks") >= (kTotal - (4 << 20)) / 4096);
  CHECK(counter(m, "swap-ins") > 0);
  CHECK(m.daemon_alive());
  CHECK(m.stop() == "");
}

TEST_CASE("daemonised: SIGTERM ends the daemon while writers wait for frames", "[daemonise]") {
  if (!mt::testing_tmpfsd()) {
    SUCCEED("tmpfs-vs-tmpfs mode: nothing daemonises");
    return;
  }
  SwapDir swap;
  mt::Mount m(mt::Mount::Kind::Tmpfsd, spilling(swap));
  constexpr int kWriters = 4;
  std::atomic<int> finished{0}, failed{0};
  std::atomic<bool> started{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      std::string path = m.path() + "/w" + std::to_string(w);
      int fd = ::open(path.c_str(), O_CREAT | O_WRONLY, 0644);
      if (fd < 0) {
        failed++;
        return;
      }
      std::string b = bytes(1 << 20, uint64_t(w));
      bool ok = true;
      for (int i = 0; i < 96 && ok; ++i) {
        ok = ::pwrite(fd, b.data(), b.size(), off_t(i) << 20) == ssize_t(b.size());
        started = true;
      }
      ::close(fd);
      (ok ? finished : failed)++;
    });
  }
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  uint64_t waits = counter(m, "waited for frames");
  INFO("writes that had waited for frames before SIGTERM: " << waits);
  std::string problems = m.stop();  // SIGTERM; 10 s to exit 0 and unmount
  CHECK(problems == "");
  for (auto& t : writers) t.join();  // every writer returned: error or done
  CHECK(finished + failed == kWriters);
}

TEST_CASE(
    "daemonised: success prints nothing; a start that fails in the daemon prints one line, leaves "
    "nothing",
    "[daemonise]") {
  if (!mt::testing_tmpfsd()) {
    SUCCEED("tmpfs-vs-tmpfs mode: nothing daemonises");
    return;
  }
  // The harness records an anomaly (a failure at the end) if a successful
  // start prints anything; here a start the daemon itself refuses: a swap
  // file asked for on a tmpfs (/dev/shm), found only after the fork.
  char t[] = "/tmp/tmpfsd-daemonise-fail.XXXXXX";
  REQUIRE(::mkdtemp(t));
  std::string dir = t;
  std::string out_path = dir + ".out";
  std::string cmd =
      mt::tmpfsd_bin() + " --swap 64M --swap-dir /dev/shm " + dir + " >" + out_path + " 2>&1";
  int status = std::system(cmd.c_str());
  std::string out = read_all(out_path);
  ::unlink(out_path.c_str());
  INFO("output: " << out);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(out.rfind("tmpfsd: cannot make the swap file: ", 0) == 0);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
  struct stat st {
  }, parent{};
  REQUIRE(::stat(dir.c_str(), &st) == 0);
  REQUIRE(::stat("/tmp", &parent) == 0);
  CHECK(st.st_dev == parent.st_dev);  // nothing mounted
  CHECK(processes_naming(dir) == 0);  // no daemon left
  ::rmdir(dir.c_str());
}
