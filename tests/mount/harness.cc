// Mount-level differential tests: the harness (see harness.h).
#include "harness.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#define CATCH_CONFIG_EXTERNAL_INTERFACES  // TestEventListenerBase, for the watchdog
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace mt {

// ---------------------------------------------------------------------------
// Emergency table: what this process mounted and started, readable from a
// signal handler (fixed storage, async-signal-safe calls only).

namespace {

constexpr int kSlots = 64;
struct Slot {
  volatile sig_atomic_t used;
  pid_t pid;
  char path[256];
  char log[300];  // the daemon's --log-file, for the watchdog's report
};
Slot g_slots[kSlots];

int register_slot(const std::string& path) {
  for (int i = 0; i < kSlots; ++i) {
    if (!g_slots[i].used) {
      std::snprintf(g_slots[i].path, sizeof g_slots[i].path, "%s", path.c_str());
      g_slots[i].pid = -1;
      g_slots[i].log[0] = '\0';
      g_slots[i].used = 1;
      return i;
    }
  }
  throw std::runtime_error("too many mounts at once");
}

void emergency_cleanup() {
  for (int i = 0; i < kSlots; ++i) {
    if (!g_slots[i].used) continue;
    if (g_slots[i].pid > 0) ::kill(g_slots[i].pid, SIGTERM);
    ::umount2(g_slots[i].path, MNT_DETACH);
  }
}

void fatal_signal(int sig) {
  emergency_cleanup();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

struct SignalSetup {
  SignalSetup() {
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) {
      struct sigaction sa {};
      sa.sa_handler = fatal_signal;
      sigemptyset(&sa.sa_mask);
      ::sigaction(sig, &sa, nullptr);
    }
    ::signal(SIGPIPE, SIG_IGN);
  }
};
SignalSetup g_signal_setup;

std::vector<std::string> g_anomalies;

bool is_mounted(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mnt;
    ls >> id >> parent >> devno >> root >> mnt;
    if (mnt == path) return true;
  }
  return false;
}

uint64_t parse_size(const std::string& s) {
  char* end = nullptr;
  uint64_t v = std::strtoull(s.c_str(), &end, 10);
  switch (end && *end ? *end : 0) {
    case 'k':
    case 'K':
      return v << 10;
    case 'm':
    case 'M':
      return v << 20;
    case 'g':
    case 'G':
      return v << 30;
    case 't':
    case 'T':
      return v << 40;
    default:
      return v;
  }
}

std::string tmp_dir(const char* prefix) {
  std::string tmpl = fmt::format("/tmp/{}XXXXXX", prefix);
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data()))
    throw std::runtime_error(fmt::format("mkdtemp: {}", std::strerror(errno)));
  return buf.data();
}

}  // namespace

void record_anomaly(const std::string& what) {
  g_anomalies.push_back(what);
  std::fprintf(stderr, "mount tests: ANOMALY: %s\n", what.c_str());
}

// ---------------------------------------------------------------------------

std::string MountOptions::kernel_option_string() const {
  std::string s = fmt::format("size={},nr_inodes={}", size, nr_inodes);
  if (mode) s += fmt::format(",mode={:o}", *mode);
  if (uid) s += fmt::format(",uid={}", *uid);
  if (gid) s += fmt::format(",gid={}", *gid);
  return s;
}

std::string tmpfsd_bin() {
  const char* b = std::getenv("TMPFSD_BIN");
  return b ? b : "";
}
bool testing_tmpfsd() { return !tmpfsd_bin().empty(); }
namespace {
// MT_IGNORE=blocks,mc: fields left out of stat records, to look past a known
// difference for the next one. Never set by the registered meson test.
bool ignored(const char* what) {
  const char* v = std::getenv("MT_IGNORE");
  if (!v) return false;
  std::string list = std::string(",") + v + ",";
  return list.find(std::string(",") + what + ",") != std::string::npos;
}
}  // namespace

std::string mode_description() {
  std::string extra;
  if (const char* v = std::getenv("MT_IGNORE"); v && *v) extra += fmt::format("; MT_IGNORE={}", v);
  if (const char* v = std::getenv("MT_MC_TICKS"); v && *v)
    extra += fmt::format("; MT_MC_TICKS={}", v);
  if (const char* v = std::getenv("MT_TMPFSD_ARGS"); v && *v && testing_tmpfsd())
    extra += fmt::format("; MT_TMPFSD_ARGS={}", v);
  if (!extra.empty())
    return (testing_tmpfsd() ? "tmpfs-vs-tmpfsd (" + tmpfsd_bin() + ")" : "tmpfs-vs-tmpfs") + extra;
  return testing_tmpfsd()
             ? fmt::format("tmpfs-vs-tmpfsd ({})", tmpfsd_bin())
             : std::string("tmpfs-vs-tmpfs (TMPFSD_BIN unset: B is a second kernel tmpfs)");
}

Mount::Mount(Kind kind, const MountOptions& opts) : kind_(kind) {
  path_ = tmp_dir(kind == Kind::Tmpfsd ? "tmpfsd-mt-B." : "tmpfsd-mt-A.");
  slot_ = register_slot(path_);
  struct stat parent {};
  ::stat("/tmp", &parent);

  if (kind == Kind::KernelTmpfs) {
    std::string o = opts.kernel_option_string();
    if (::mount("none", path_.c_str(), "tmpfs", 0, o.c_str()) != 0) {
      int e = errno;
      g_slots[slot_].used = 0;
      ::rmdir(path_.c_str());
      throw std::runtime_error(fmt::format("mount tmpfs {} -o {}: {}", path_, o, std::strerror(e)));
    }
    return;
  }

  log_path_ = path_ + ".log";
  pid_path_ = path_ + ".pid";
  std::snprintf(g_slots[slot_].log, sizeof g_slots[slot_].log, "%s", log_path_.c_str());
  std::string memory = opts.memory;
  if (memory.empty()) {
    uint64_t sz = parse_size(opts.size);
    memory = sz < (64ull << 20) ? std::string("64m") : opts.size;
  }
  // allow_other: kernel tmpfs is reachable by every user; a FUSE mount only
  // by its owner unless mounted with allow_other. MT_NO_ALLOW_OTHER=1 leaves
  // it off (the non-root tests then see EACCES everywhere on B).
  std::string o = opts.kernel_option_string();
  if (const char* v = std::getenv("MT_NO_ALLOW_OTHER"); !(v && *v)) o += ",allow_other";
  std::vector<std::string> args = {tmpfsd_bin(), "-o",         o,        "--memory",
                                   memory,       "--log-file", log_path_};
  if (opts.foreground)
    args.push_back("-f");
  else
    args.insert(args.end(), {"--pid-file", pid_path_});
  for (const auto& a : opts.daemon_args) args.push_back(a);
  // MT_TMPFSD_ARGS: extra daemon arguments, space-separated (exploration,
  // e.g. "--no-writeback-cache").
  if (const char* extra = std::getenv("MT_TMPFSD_ARGS")) {
    std::istringstream in(extra);
    for (std::string a; in >> a;) args.push_back(a);
  }
  args.push_back(path_);
  // What the starting command prints: nothing at all when it succeeds.
  const std::string out_path = path_ + ".out";
  pid_t starter = ::fork();
  if (starter < 0) throw std::runtime_error("fork failed");
  if (starter == 0) {
    int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    int nul = ::open("/dev/null", O_RDONLY);
    if (nul >= 0) ::dup2(nul, 0);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "execv %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  auto read_file = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  auto give_up = [&](const std::string& what) {
    std::string out = read_file(out_path);
    ::unlink(out_path.c_str());
    std::string tail = log_tail();
    if (is_mounted(path_)) ::umount2(path_.c_str(), MNT_DETACH);
    g_slots[slot_].used = 0;
    ::rmdir(path_.c_str());
    return std::runtime_error(fmt::format("tmpfsd: {}; args: {}\noutput:\n{}\nlog:\n{}", what,
                                          fmt::join(args, " "), out, tail));
  };

  if (opts.foreground) {
    pid_ = starter;
    g_slots[slot_].pid = pid_;
  }
  // Daemonised, the command returns once the mount answers; in the
  // foreground the mount appears while the daemon runs.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (;;) {
    int status = 0;
    if (!opts.foreground && ::waitpid(starter, &status, WNOHANG) == starter) {
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw give_up(fmt::format("the start command failed (status {:#x})", status));
      std::ifstream in(pid_path_);
      if (!(in >> pid_) || pid_ <= 0) {
        pid_ = -1;
        throw give_up("the start command succeeded but wrote no pid file");
      }
      g_slots[slot_].pid = pid_;
      if (!is_mounted(path_)) {
        std::string e = fmt::format("the start command returned before the mount was live");
        stop();
        throw std::runtime_error(e);
      }
      std::string out = read_file(out_path);
      if (!out.empty()) record_anomaly(fmt::format("tmpfsd printed on success: {}", out));
      break;
    }
    if (opts.foreground) {
      struct stat st {};
      if (::stat(path_.c_str(), &st) == 0 && st.st_dev != parent.st_dev) break;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        g_slots[slot_].pid = -1;
        throw give_up(fmt::format("exited before the mount was ready (status {:#x})", status));
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      if (!opts.foreground) {
        std::ifstream in(pid_path_);
        pid_t daemon = -1;
        if (in >> daemon && daemon > 0) {
          pid_ = daemon;
          g_slots[slot_].pid = pid_;
        }
        ::kill(starter, SIGKILL);
        ::waitpid(starter, nullptr, 0);
      }
      if (pid_ > 0) hang_report(pid_, log_path_);
      std::string e = fmt::format("tmpfsd mount not ready after 20 s; args: {}\nlog:\n{}",
                                  fmt::join(args, " "), log_tail());
      stop();
      throw std::runtime_error(e);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::unlink(out_path.c_str());
}

bool Mount::daemon_alive() {
  if (pid_ <= 0) return kind_ == Kind::KernelTmpfs;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD && ::kill(pid_, 0) != 0)) {
    record_anomaly(fmt::format("tmpfsd pid {} exited unexpectedly (status {:#x}) log:\n{}", pid_,
                               status, log_tail()));
    pid_ = -1;
    g_slots[slot_].pid = -1;
    return false;
  }
  return true;
}

std::string Mount::log_tail() const {
  if (log_path_.empty()) return {};
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  if (s.size() > 2000) s = "..." + s.substr(s.size() - 2000);
  return s;
}

std::string Mount::stop() {
  if (stopped_) return {};
  stopped_ = true;
  std::string problems;
  if (kind_ == Kind::Tmpfsd && pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    bool exited = false;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      // Not our child (no subreaper): exited, status unknown.
      if (r == pid_ || (r < 0 && errno == ECHILD && ::kill(pid_, 0) != 0)) {
        exited = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!exited) {
      problems += "tmpfsd did not exit within 10 s of SIGTERM (killed); ";
      hang_report(pid_, log_path_);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      problems += fmt::format("tmpfsd exit status after SIGTERM: {}; ",
                              WIFEXITED(status) ? fmt::format("exit {}", WEXITSTATUS(status))
                                                : fmt::format("signal {}", WTERMSIG(status)));
    }
    pid_ = -1;
    g_slots[slot_].pid = -1;
    if (is_mounted(path_)) {
      problems += "mount still present after tmpfsd exited (detached); ";
      ::umount2(path_.c_str(), MNT_DETACH);
    }
    if (!problems.empty()) problems += "log:\n" + log_tail();
  } else if (kind_ == Kind::KernelTmpfs) {
    if (::umount2(path_.c_str(), 0) != 0) ::umount2(path_.c_str(), MNT_DETACH);
  } else if (is_mounted(path_)) {
    ::umount2(path_.c_str(), MNT_DETACH);
  }
  if (slot_ >= 0) g_slots[slot_].used = 0;
  ::rmdir(path_.c_str());
  if (!log_path_.empty() && problems.empty()) ::unlink(log_path_.c_str());
  if (!pid_path_.empty()) ::unlink(pid_path_.c_str());
  return problems;
}

Mount::~Mount() {
  std::string p = stop();
  if (!p.empty()) record_anomaly(fmt::format("stopping {}: {}", path_, p));
}

// The hang report runs in a process forked at start-up, before any test
// opened a file on a mount. A process forked later would inherit the test's
// descriptors on the hung mount, and closing them (at exec or exit) sends
// FLUSH to the daemon that cannot answer: the report itself would hang.
namespace {
int g_report_request = -1;  // write end: "PID LOG\n"
int g_report_done = -1;     // read end: one byte per finished report

void reporter_loop(int requests, int done) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  const char* script = std::getenv("TMPFSD_HANG_REPORT");
  FILE* in = ::fdopen(requests, "r");
  char line[512];
  while (in && std::fgets(line, sizeof line, in)) {
    int pid = 0;
    char log[400] = "";
    if (std::sscanf(line, "%d %399s", &pid, log) >= 1 && script && *script) {
      std::string cmd = fmt::format("'{}' {} '{}' 1>&2", script, pid, log);
      if (std::system(cmd.c_str()) != 0)
        std::fprintf(stderr, "mount tests: %s failed\n", cmd.c_str());
    } else if (!script || !*script) {
      std::fprintf(stderr, "mount tests: no hang report (TMPFSD_HANG_REPORT unset) for pid %d\n",
                   pid);
    }
    std::fflush(stderr);
    if (::write(done, "x", 1) != 1) break;
  }
  ::_exit(0);
}

void start_reporter() {
  int req[2], done[2];
  if (::pipe2(req, O_CLOEXEC) != 0 || ::pipe2(done, O_CLOEXEC) != 0) return;
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(req[1]);
    ::close(done[0]);
    reporter_loop(req[0], done[1]);
  }
  ::close(req[0]);
  ::close(done[1]);
  if (pid < 0) {
    ::close(req[1]);
    ::close(done[0]);
    return;
  }
  g_report_request = req[1];
  g_report_done = done[0];
}
}  // namespace

void hang_report(pid_t pid, const std::string& log_path) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (g_report_request < 0) {
    std::fprintf(stderr, "mount tests: no hang reporter for pid %d\n", int(pid));
    return;
  }
  std::string req = fmt::format("{} {}\n", pid, log_path.empty() ? "-" : log_path);
  if (::write(g_report_request, req.data(), req.size()) != ssize_t(req.size())) return;
  pollfd p{g_report_done, POLLIN, 0};
  char c;
  if (::poll(&p, 1, 150'000) == 1 && ::read(g_report_done, &c, 1) == 1) return;
  std::fprintf(stderr, "mount tests: the hang report of pid %d did not finish in 150 s\n",
               int(pid));
}

namespace {
std::atomic<int64_t> g_case_deadline{0};  // steady_clock seconds; 0: no case running
std::mutex g_case_mu;
std::string g_case_name;

int64_t now_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int case_timeout() {
  const char* v = std::getenv("MT_CASE_TIMEOUT");
  int t = v ? std::atoi(v) : 0;
  return t > 0 ? t : 240;
}

struct CaseListener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    {
      std::lock_guard lk(g_case_mu);
      g_case_name = info.name;
    }
    g_case_deadline = now_seconds() + case_timeout();
  }
  void testCaseEnded(const Catch::TestCaseStats&) override { g_case_deadline = 0; }
};
}  // namespace
CATCH_REGISTER_LISTENER(CaseListener)

void start_watchdog() {
  start_reporter();
  std::thread([] {
    for (;;) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      int64_t d = g_case_deadline;
      if (d == 0 || now_seconds() < d) continue;
      std::string name;
      {
        std::lock_guard lk(g_case_mu);
        name = g_case_name;
      }
      std::fprintf(stderr,
                   "mount tests: TIMEOUT: test case \"%s\" ran past %d s (MT_CASE_TIMEOUT)\n",
                   name.c_str(), case_timeout());
      for (int i = 0; i < kSlots; ++i)
        if (g_slots[i].used && g_slots[i].pid > 0) hang_report(g_slots[i].pid, g_slots[i].log);
      emergency_cleanup();
      std::this_thread::sleep_for(std::chrono::seconds(2));
      for (int i = 0; i < kSlots; ++i)
        if (g_slots[i].used && g_slots[i].pid > 0) ::kill(g_slots[i].pid, SIGKILL);
      std::fflush(nullptr);
      ::_exit(1);
    }
  }).detach();
}

MountPair::MountPair(const MountOptions& o) : opts(o) {
  a = std::make_unique<Mount>(Mount::Kind::KernelTmpfs, o);
  b = std::make_unique<Mount>(testing_tmpfsd() ? Mount::Kind::Tmpfsd : Mount::Kind::KernelTmpfs, o);
}

namespace {
std::unique_ptr<MountPair> g_shared;
}

MountPair& shared_pair() {
  if (g_shared && !g_shared->b->daemon_alive()) {
    record_anomaly("shared tmpfsd died; making a new shared pair");
    g_shared.reset();
  }
  if (!g_shared) g_shared = std::make_unique<MountPair>();
  return *g_shared;
}

int shutdown_all() {
  if (g_shared) {
    std::string p = g_shared->b->stop();
    if (!p.empty()) record_anomaly("stopping the shared tmpfsd: " + p);
    g_shared.reset();
  }
  int leftovers = 0;
  for (int i = 0; i < kSlots; ++i) {
    if (!g_slots[i].used) continue;
    ++leftovers;
    std::fprintf(stderr, "mount tests: leftover mount %s (detaching)\n", g_slots[i].path);
  }
  emergency_cleanup();
  for (auto& a : g_anomalies) std::fprintf(stderr, "mount tests: anomaly: %s\n", a.c_str());
  return leftovers + static_cast<int>(g_anomalies.size());
}

// ---------------------------------------------------------------------------

std::string errno_name(int e) {
  switch (e) {
#define E(x) \
  case x:    \
    return #x
    E(EPERM);
    E(ENOENT);
    E(ESRCH);
    E(EINTR);
    E(EIO);
    E(ENXIO);
    E(E2BIG);
    E(EBADF);
    E(EAGAIN);
    E(ENOMEM);
    E(EACCES);
    E(EFAULT);
    E(EBUSY);
    E(EEXIST);
    E(EXDEV);
    E(ENODEV);
    E(ENOTDIR);
    E(EISDIR);
    E(EINVAL);
    E(ENFILE);
    E(EMFILE);
    E(ETXTBSY);
    E(EFBIG);
    E(ENOSPC);
    E(ESPIPE);
    E(EROFS);
    E(EMLINK);
    E(EPIPE);
    E(ERANGE);
    E(ENAMETOOLONG);
    E(ENOSYS);
    E(ENOTEMPTY);
    E(ELOOP);
    E(ENODATA);
    E(EOVERFLOW);
    E(EOPNOTSUPP);
    E(ENOTCONN);
    E(EADDRINUSE);
    E(EDQUOT);
    E(ENOTTY);
    E(ESTALE);
    E(ENOTSOCK);
    E(EPROTONOSUPPORT);
#undef E
    default:
      return fmt::format("errno{}", e);
  }
}

Side::Side(std::string name, std::string mount_root, std::string dir)
    : name_(std::move(name)), mount_root_(std::move(mount_root)), dir_(std::move(dir)) {}

const char* Side::p(std::string_view rel) {
  paths_.push_back(rel.empty() ? dir_ : dir_ + "/" + std::string(rel));
  return paths_.back().c_str();
}

const char* Side::root_p(std::string_view rel) {
  paths_.push_back(rel.empty() ? mount_root_ : mount_root_ + "/" + std::string(rel));
  return paths_.back().c_str();
}

long Side::rec(const std::string& op, long ret, int err) {
  push({op, ret == -1 ? "-1 " + errno_name(err) : fmt::format("ret={}", ret), false, {}});
  return ret;
}

long Side::rec_ok(const std::string& op, long ret, int err) {
  push({op, ret < 0 ? fmt::format("{} {}", ret, errno_name(err)) : "ok", false, {}});
  return ret;
}

void Side::note(const std::string& op, const std::string& value) { push({op, value, false, {}}); }

void Side::blob(const std::string& op, const std::string& out, std::string data) {
  push({op, out, true, std::move(data)});
}

void Side::push(Entry e) {
  e.known = pending_known_;
  pending_known_ = -1;
  entries_.push_back(std::move(e));
}

void Side::known(Known id) {
  if (known_divergence(id).scope == KnownDivergence::Scope::Rule)
    throw std::logic_error("known(): a Rule entry is applied by the harness, not marked on a step");
  pending_known_ = static_cast<int>(id);
}

bool Side::dependent_steps_run(Known id) {
  if (!testing_tmpfsd()) return true;
  const KnownDivergence& k = known_divergence(id);
  note(fmt::format("steps depending on known divergence {} ({})", k.list_entry, k.name), "skipped");
  return false;
}

namespace {
const char* type_name(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG:
      return "reg";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "lnk";
    case S_IFIFO:
      return "fifo";
    case S_IFSOCK:
      return "sock";
    case S_IFCHR:
      return "chr";
    case S_IFBLK:
      return "blk";
    default:
      return "?";
  }
}
int cmp_ts(const timespec& x, const timespec& y) {
  if (x.tv_sec != y.tv_sec) return x.tv_sec < y.tv_sec ? -1 : 1;
  if (x.tv_nsec != y.tv_nsec) return x.tv_nsec < y.tv_nsec ? -1 : 1;
  return 0;
}
const char* moved(const timespec& now, const timespec& before) {
  int c = cmp_ts(now, before);
  return c == 0 ? "same" : c > 0 ? "moved" : "BACKWARDS";
}
int64_t ns(const timespec& t) { return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec; }
// One tick of the coarse clock the kernel stamps most changes with.
int64_t coarse_tick_ns() {
  static const int64_t tick = [] {
    struct timespec r {};
    if (::clock_getres(CLOCK_REALTIME_COARSE, &r) != 0) return int64_t(4000000);
    return ns(r);
  }();
  return tick;
}
}  // namespace

// The tolerance of the mtime/ctime order: two coarse clock ticks, inclusive,
// plus 1 us (the kernel's multigrain floor can put a stamp a nanosecond off
// the tick). Two, because the coarse clock itself lags the fine one by up to
// ~1.7 ticks on the test machines (known divergence 10). MT_MC_TICKS=n makes
// it n ticks (exploration only).
int64_t mc_tolerance_ns() {
  static const int64_t tolerance = [] {
    const char* v = std::getenv("MT_MC_TICKS");
    long n = v && *v ? std::strtol(v, nullptr, 10) : 2;
    return coarse_tick_ns() * (n > 0 ? n : 1) + 1000;
  }();
  return tolerance;
}

namespace {
// The order of mtime and ctime as "m<c:D", "m~c:D" or "m>c:D", D = m - c in
// ns; "m~c" when |D| is within the tolerance. Known divergence McWithinTick
// (tools/fsdiff-known-divergences.md, entry 10): two orders match when they
// are the same and both beyond the tolerance, or when the two D are within
// the tolerance of each other (see mc_compatible). Applied on both sides,
// so tmpfs-vs-tmpfs compares the same thing.
std::string mc_relation(const timespec& m, const timespec& c) {
  int64_t d = ns(m) - ns(c);
  const char* r = (d >= -mc_tolerance_ns() && d <= mc_tolerance_ns()) ? "m~c"
                  : d < 0                                             ? "m<c"
                                                                      : "m>c";
  return fmt::format("{}:{}", r, d);
}
}  // namespace

void Side::record_stat(const std::string& op, const std::string& key, int ret, int err,
                       const struct stat& st, unsigned flags) {
  if (ret != 0) {
    note(op, "-1 " + errno_name(err));
    return;
  }
  std::string out = fmt::format("type={} mode={:04o} nlink={}", type_name(st.st_mode),
                                st.st_mode & 07777, st.st_nlink);
  if (!(flags & kStatNoSize)) out += fmt::format(" size={}", st.st_size);
  out += fmt::format(" uid={} gid={}", st.st_uid, st.st_gid);
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))
    out += fmt::format(" rdev={}:{}", major(st.st_rdev), minor(st.st_rdev));
  if ((flags & kStatBlocks) && S_ISREG(st.st_mode) && !ignored("blocks"))
    out += fmt::format(" blocks={}", st.st_blocks);
  if (flags & kStatExactAM)
    out += fmt::format(" atime={}.{:09} mtime={}.{:09}", st.st_atim.tv_sec, st.st_atim.tv_nsec,
                       st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  if (flags & (kStatTimes | kStatAtime)) {
    // A Times-scope known divergence (e.g. fifo times) marked on this record
    // applies to its "moved / same" part only: that part becomes a step of
    // its own, and the rest of the record is compared as usual.
    int times_known = -1;
    if (pending_known_ >= 0 && known_divergence(static_cast<Known>(pending_known_)).scope ==
                                   KnownDivergence::Scope::Times) {
      times_known = pending_known_;
      pending_known_ = -1;
    }
    std::string moves;
    auto it = snapshots_.find(key);
    if (it == snapshots_.end()) {
      moves = "times:first";
    } else {
      if (flags & kStatTimes)
        moves = fmt::format("m:{} c:{}", moved(st.st_mtim, it->second.m),
                            moved(st.st_ctim, it->second.c));
      if (flags & kStatAtime)
        moves += fmt::format("{}a:{}", moves.empty() ? "" : " ", moved(st.st_atim, it->second.a));
    }
    if (times_known < 0) out += " " + moves;
    if ((flags & kStatTimes) && !ignored("mc")) out += " " + mc_relation(st.st_mtim, st.st_ctim);
    if (std::getenv("MT_MC_DEBUG")) {
      struct timespec now {};
      ::clock_gettime(CLOCK_REALTIME, &now);
      std::fprintf(stderr, "%s %s: m-c = %lld ns; m, c = now - %lld, %lld ns\n", name_.c_str(),
                   op.c_str(), (long long)(ns(st.st_mtim) - ns(st.st_ctim)),
                   (long long)(ns(now) - ns(st.st_mtim)), (long long)(ns(now) - ns(st.st_ctim)));
    }
    snapshots_[key] = Times{st.st_atim, st.st_mtim, st.st_ctim};
    note(op, out);
    if (times_known >= 0) {
      pending_known_ = times_known;
      note(fmt::format("times of {}", key), moves);
    }
    tick();
    return;
  }
  note(op, out);
}

void Side::stat(std::string_view rel, unsigned flags, std::string key) {
  struct stat st {};
  errno = 0;
  int r = ::stat(p(rel), &st);
  int e = errno;
  if (key.empty()) key = std::string(rel);
  record_stat(fmt::format("stat({})", rel), key, r, e, st, flags);
}

void Side::lstat(std::string_view rel, unsigned flags, std::string key) {
  struct stat st {};
  errno = 0;
  int r = ::lstat(p(rel), &st);
  int e = errno;
  if (key.empty()) key = "l:" + std::string(rel);
  record_stat(fmt::format("lstat({})", rel), key, r, e, st, flags);
}

void Side::fstat(int fd, const std::string& key, unsigned flags) {
  struct stat st {};
  errno = 0;
  int r = ::fstat(fd, &st);
  int e = errno;
  record_stat(fmt::format("fstat({})", key), key, r, e, st, flags);
}

void Side::read_all(std::string_view rel) {
  std::string op = fmt::format("read_all({})", rel);
  int fd = ::open(p(rel), O_RDONLY);
  if (fd < 0) {
    note(op, "open: -1 " + errno_name(errno));
    return;
  }
  // Read cold: write back and drop this file's pages from the kernel's page
  // cache first, so that on a FUSE mount the bytes come from the daemon and
  // not from the kernel's own copy. (On tmpfs this changes nothing.)
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::string data;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      int e = errno;
      ::close(fd);
      blob(op, "read: -1 " + errno_name(e), data);
      return;
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  std::string out = fmt::format("{} bytes", data.size());
  blob(op, out, std::move(data));
}

void Side::pread(int fd, off_t off, size_t len, const std::string& label, bool cold) {
  std::string data(len, '\0');
  if (cold) {
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  errno = 0;
  ssize_t n = ::pread(fd, data.data(), len, off);
  if (n < 0) {
    note(fmt::format("pread({}, off={}, len={})", label, off, len), "-1 " + errno_name(errno));
    return;
  }
  data.resize(static_cast<size_t>(n));
  blob(fmt::format("pread({}, off={}, len={})", label, off, len), fmt::format("ret={}", n),
       std::move(data));
}

void Side::readdir(std::string_view rel) {
  std::string op = fmt::format("readdir({})", rel);
  DIR* d = ::opendir(p(rel));
  if (!d) {
    note(op, "-1 " + errno_name(errno));
    return;
  }
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* de = ::readdir(d))
    names.push_back(fmt::format("{}:{}", de->d_name, int(de->d_type)));
  int e = errno;
  ::closedir(d);
  std::sort(names.begin(), names.end());
  std::string out = fmt::format("{} entries: {}", names.size(), fmt::join(names, " "));
  if (e) out += " ERROR " + errno_name(e);
  note(op, out);
}

void Side::listxattr(std::string_view rel) {
  std::string op = fmt::format("listxattr({})", rel);
  std::vector<char> buf(1 << 16);
  errno = 0;
  ssize_t n = ::llistxattr(p(rel), buf.data(), buf.size());
  if (n < 0) {
    note(op, "-1 " + errno_name(errno));
    return;
  }
  std::vector<std::string> names;
  for (ssize_t i = 0; i < n;) {
    std::string nm(&buf[i]);
    i += static_cast<ssize_t>(nm.size()) + 1;
    names.push_back(nm);
  }
  std::sort(names.begin(), names.end());
  note(op, fmt::format("len={} {{{}}}", n, fmt::join(names, ",")));
}

void Side::getxattr(std::string_view rel, const std::string& name, size_t size) {
  std::string op = fmt::format("getxattr({}, {}, size={})", rel, name, size);
  std::string buf(size, '\0');
  errno = 0;
  ssize_t n = ::lgetxattr(p(rel), name.c_str(), size ? buf.data() : nullptr, size);
  if (n < 0) {
    note(op, "-1 " + errno_name(errno));
    return;
  }
  if (size == 0) {
    note(op, fmt::format("ret={}", n));
    return;
  }
  buf.resize(static_cast<size_t>(n));
  blob(op, fmt::format("ret={}", n), std::move(buf));
}

void Side::readlink(std::string_view rel) {
  std::string op = fmt::format("readlink({})", rel);
  std::string buf(8192, '\0');
  errno = 0;
  ssize_t n = ::readlink(p(rel), buf.data(), buf.size());
  if (n < 0) {
    note(op, "-1 " + errno_name(errno));
    return;
  }
  buf.resize(static_cast<size_t>(n));
  blob(op, fmt::format("ret={}", n), std::move(buf));
}

void Side::statfs(std::string_view rel, bool free_counts) {
  std::string op = fmt::format("statfs({}{})", rel, free_counts ? ", free counts" : "");
  struct statfs sf {};
  errno = 0;
  if (::statfs(p(rel), &sf) != 0) {
    note(op, "-1 " + errno_name(errno));
    return;
  }
  std::string out = fmt::format("bsize={} blocks={} files={} namelen={}", sf.f_bsize, sf.f_blocks,
                                sf.f_files, sf.f_namelen);
  if (free_counts)
    out += fmt::format(" bfree={} bavail={} ffree={}", sf.f_bfree, sf.f_bavail, sf.f_ffree);
  note(op, out);
}

void Side::tick() { std::this_thread::sleep_for(std::chrono::milliseconds(10)); }

namespace {
void put_str(std::string& out, const std::string& s) {
  uint32_t n = static_cast<uint32_t>(s.size());
  out.append(reinterpret_cast<const char*>(&n), 4);
  out += s;
}
bool get_str(const std::string& in, size_t& pos, std::string& s) {
  if (pos + 4 > in.size()) return false;
  uint32_t n;
  std::memcpy(&n, in.data() + pos, 4);
  pos += 4;
  if (pos + n > in.size()) return false;
  s = in.substr(pos, n);
  pos += n;
  return true;
}
}  // namespace

void Side::as_user(uid_t uid, gid_t gid, const std::function<void(Side&)>& fn) {
  int pfd[2];
  if (::pipe(pfd) != 0) throw std::runtime_error("pipe");
  size_t start = entries_.size();
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::close(pfd[0]);
    std::string out;
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(uid, uid, uid) != 0) {
      note(fmt::format("as_user({}, {})", uid, gid), "setresuid failed");
    } else {
      try {
        fn(*this);
      } catch (const std::exception& ex) {
        note("exception in as_user scenario", ex.what());
      } catch (...) {
        note("exception in as_user scenario", "unknown");
      }
    }
    for (size_t i = start; i < entries_.size(); ++i) {
      put_str(out, entries_[i].op);
      put_str(out, entries_[i].out);
      put_str(out, entries_[i].has_blob ? "1" : "0");
      put_str(out, entries_[i].blob);
      put_str(out, std::to_string(entries_[i].known));
    }
    size_t off = 0;
    while (off < out.size()) {
      ssize_t n = ::write(pfd[1], out.data() + off, out.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::_exit(0);
  }
  ::close(pfd[1]);
  std::string in;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(pfd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  ::close(pfd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  size_t pos = 0;
  for (;;) {
    Entry e;
    std::string hb, kn;
    if (!get_str(in, pos, e.op) || !get_str(in, pos, e.out) || !get_str(in, pos, hb) ||
        !get_str(in, pos, e.blob) || !get_str(in, pos, kn))
      break;
    e.has_blob = hb == "1";
    e.known = std::stoi(kn);
    entries_.push_back(std::move(e));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    note(fmt::format("as_user({}, {}) child", uid, gid),
         fmt::format("abnormal status {:#x}", status));
}

// ---------------------------------------------------------------------------

std::string hex_preview(std::string_view data, size_t off, size_t n) {
  std::string s;
  for (size_t i = off; i < data.size() && i < off + n; ++i)
    s += fmt::format("{:02x}", static_cast<unsigned char>(data[i]));
  if (off + n < data.size()) s += "...";
  return s.empty() ? "(none)" : s;
}

namespace {
std::string clip(const std::string& s, size_t around) {
  constexpr size_t kMax = 400;
  if (s.size() <= kMax) return s;
  size_t from = around > kMax / 2 ? around - kMax / 2 : 0;
  std::string r = s.substr(from, kMax);
  if (from > 0) r = "..." + r;
  if (from + kMax < s.size()) r += "...";
  return r;
}
size_t first_mismatch(const std::string& x, const std::string& y) {
  size_t n = std::min(x.size(), y.size());
  for (size_t i = 0; i < n; ++i)
    if (x[i] != y[i]) return i;
  return n;
}
}  // namespace

std::string diff_transcripts(const std::vector<Entry>& a, const std::vector<Entry>& b) {
  return diff_transcripts(a, b, testing_tmpfsd());
}

namespace {
// Parses "m<c:D" (see mc_relation) into its order and D.
bool parse_mc(const std::string& t, std::string& order, int64_t& d) {
  if (t.size() < 5 || t[0] != 'm' || t[3] != ':' ||
      (t.compare(0, 3, "m<c") && t.compare(0, 3, "m>c") && t.compare(0, 3, "m~c")))
    return false;
  order = t.substr(0, 3);
  char* end = nullptr;
  d = std::strtoll(t.c_str() + 4, &end, 10);
  return end && *end == '\0';
}
// Two outcomes match when every token is the same except mtime/ctime
// orders, which match when they are the same order beyond the tolerance,
// when their m - c are within the tolerance of each other, or when both are
// more than one coarse tick apart in the same direction.
bool mc_compatible(const std::string& x, const std::string& y) {
  std::istringstream xs(x), ys(y);
  std::string tx, ty;
  for (;;) {
    bool gx = static_cast<bool>(xs >> tx), gy = static_cast<bool>(ys >> ty);
    if (gx != gy) return false;
    if (!gx) return true;
    if (tx == ty) continue;
    std::string ox, oy;
    int64_t dx, dy;
    if (!parse_mc(tx, ox, dx) || !parse_mc(ty, oy, dy)) return false;
    if (ox == oy && ox != "m~c") continue;
    if (dx - dy > mc_tolerance_ns() || dy - dx > mc_tolerance_ns()) {
      // Both more than a tick apart in the same direction: two different
      // operations set them on both sides, and the gap is the wall time
      // between the steps, which a loaded machine stretches on one side.
      const int64_t tick = coarse_tick_ns();
      if ((dx < -tick && dy < -tick) || (dx > tick && dy > tick)) continue;
      return false;
    }
  }
}
}  // namespace

std::string diff_transcripts(const std::vector<Entry>& a, const std::vector<Entry>& b,
                             bool excuse_known) {
  std::string first;
  std::vector<std::string> more;
  size_t ndiff = 0;
  size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    if (i >= a.size() || i >= b.size()) {
      ++ndiff;
      std::string d = fmt::format(
          "step {}: transcript lengths differ (A {} entries, B {}); next on the longer side: {} -> "
          "{}",
          i, a.size(), b.size(), i < a.size() ? a[i].op : b[i].op,
          i < a.size() ? a[i].out : b[i].out);
      if (first.empty())
        first = d;
      else
        more.push_back(d);
      break;
    }
    const Entry& x = a[i];
    const Entry& y = b[i];
    std::string d;
    if (excuse_known && x.op == y.op && x.known >= 0 && x.known == y.known) {
      // A known divergence: B must give tmpfsd's documented outcome; A's is
      // not compared.
      const KnownDivergence& k = known_divergence(static_cast<Known>(y.known));
      if (!y.has_blob && y.out == k.b_outcome) continue;
      ++ndiff;
      d = fmt::format(
          "step {}: {}: known divergence {} ({}) expects B to give `{}`\n"
          "    A (tmpfs):   {}\n    B (tmpfsd): {}\n"
          "    tmpfsd changed here: update tests/mount/known_divergences.cc and "
          "tools/fsdiff-known-divergences.md (or drop the entry)",
          i, x.op, k.list_entry, k.name, k.b_outcome, x.out, y.out);
      if (first.empty())
        first = d;
      else if (more.size() < 5)
        more.push_back(d);
      continue;
    }
    bool same = x.op == y.op && (x.out == y.out || mc_compatible(x.out, y.out)) &&
                x.has_blob == y.has_blob && x.blob == y.blob;
    if (same) continue;
    ++ndiff;
    if (x.op != y.op) {
      d = fmt::format("step {}: scenario diverged: A did `{}`, B did `{}`", i, x.op, y.op);
    } else if (x.out != y.out) {
      size_t at = first_mismatch(x.out, y.out);
      d = fmt::format("step {}: {}\n    A (tmpfs):   {}\n    B ({}): {}", i, x.op, clip(x.out, at),
                      testing_tmpfsd() ? "tmpfsd" : "tmpfs ", clip(y.out, at));
    } else {
      size_t at = first_mismatch(x.blob, y.blob);
      d = fmt::format(
          "step {}: {} ({}): data differs at byte {} (A {} bytes, B {} bytes)\n"
          "    A: {}\n    B: {}",
          i, x.op, x.out, at, x.blob.size(), y.blob.size(), hex_preview(x.blob, at, 32),
          hex_preview(y.blob, at, 32));
    }
    if (first.empty())
      first = d;
    else if (more.size() < 5)
      more.push_back(d);
  }
  if (first.empty()) return {};
  std::string r = fmt::format("{} differing step(s). First difference:\n  {}", ndiff, first);
  for (auto& m : more) r += "\n  also " + m;
  return r;
}

void remove_tree(const std::string& path) {
  ::nftw(
      path.c_str(),
      [](const char* fpath, const struct stat* sb, int typeflag, struct FTW*) -> int {
        if (typeflag == FTW_DP || (sb && S_ISDIR(sb->st_mode)))
          ::rmdir(fpath);
        else
          ::unlink(fpath);
        return 0;
      },
      32, FTW_DEPTH | FTW_PHYS);
}

namespace {
int g_test_counter = 0;

std::vector<Entry> run_side(const char* name, Mount& m, const std::string& sub,
                            const Scenario& scenario) {
  std::string dir = m.path() + "/" + sub;
  Side s(name, m.path(), dir);
  if (::mkdir(dir.c_str(), 0755) != 0 || ::chmod(dir.c_str(), 0755) != 0) {
    s.note("mkdir test directory", "-1 " + errno_name(errno));
    return s.transcript();
  }
  try {
    scenario(s);
  } catch (const std::exception& ex) {
    s.note("exception", ex.what());
  }
  if (!m.daemon_alive()) s.note("daemon", "DIED during the scenario");
  return s.transcript();
}
}  // namespace

bool compare(MountPair& pair, const Scenario& scenario) {
  std::string sub = fmt::format("t{}", ++g_test_counter);
  auto ta = run_side("A", *pair.a, sub, scenario);
  auto tb = run_side("B", *pair.b, sub, scenario);
  remove_tree(pair.a->path() + "/" + sub);
  if (pair.b->daemon_alive()) remove_tree(pair.b->path() + "/" + sub);
  std::string d = diff_transcripts(ta, tb);
  // MT_VERBOSE=1 prints A's transcript, MT_VERBOSE=2 both.
  if (const char* v = std::getenv("MT_VERBOSE"); v && *v) {
    for (const auto* t : {&ta, &tb}) {
      if (t == &tb && std::string(v) != "2") break;
      std::printf("  --- %s\n", t == &ta ? "A (tmpfs)" : "B");
      for (size_t i = 0; i < t->size(); ++i) {
        const Entry& e = (*t)[i];
        std::printf("  [%zu] %s -> %s%s\n", i, e.op.c_str(), e.out.c_str(),
                    e.has_blob ? fmt::format(" [{} bytes]", e.blob.size()).c_str() : "");
      }
    }
  }
  std::string excused;
  if (testing_tmpfsd())
    for (const Entry& e : tb)
      if (e.known >= 0)
        excused += fmt::format(" {}", known_divergence(static_cast<Known>(e.known)).name);
  INFO("mode: " << mode_description() << "; " << ta.size() << " steps"
                << (excused.empty() ? "" : "; steps under known divergences:" + excused));
  if (!d.empty()) {
    FAIL_CHECK(d);
    return false;
  }
  SUCCEED();
  return true;
}

bool compare(const Scenario& scenario) { return compare(shared_pair(), scenario); }

bool compare(const MountOptions& opts, const Scenario& scenario) {
  MountPair pair(opts);
  bool ok = compare(pair, scenario);
  // The daemon's exit on SIGTERM is the subject of its own test
  // ("[lifecycle]"); here a problem is recorded (and fails the run at the
  // end) without hiding the scenario's own result.
  std::string p = pair.b->stop();
  if (!p.empty()) record_anomaly("stopping B after a scenario: " + p);
  return ok;
}

}  // namespace mt
