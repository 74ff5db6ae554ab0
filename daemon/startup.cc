#include "daemon/startup.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <spdlog/spdlog.h>

#include "daemon/notify.h"

namespace tmpfsd {
namespace {

// How /proc/self/mountinfo spells a path: space, tab, newline and
// backslash as octal escapes.
std::string mountinfo_escape(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\\') {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\%03o", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

// Mounts stacked on `path` now.
int mounts_on(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  const std::string want = mountinfo_escape(path);
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mnt;
    ls >> id >> parent >> devno >> root >> mnt;
    if (mnt == want) ++n;
  }
  return n;
}

// A failed child may die between mounting and serving; the mount it left
// answers ENOTCONN to everyone. Remove it (only it: the count of mounts on
// the path was taken before the fork).
void detach_left_mount(const std::string& mountpoint, int mounts_before) {
  if (mounts_on(mountpoint) <= mounts_before) return;
  if (::umount2(mountpoint.c_str(), MNT_DETACH) == 0) return;
  pid_t pid = ::fork();  // not root: fusermount3 may unmount what we mounted
  if (pid == 0) {
    int nul = ::open("/dev/null", O_RDWR);
    if (nul >= 0) ::dup2(nul, 1), ::dup2(nul, 2);
    ::execlp("fusermount3", "fusermount3", "-u", "-z", mountpoint.c_str(),
             static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid > 0) ::waitpid(pid, nullptr, 0);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + ::strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// The parent's side: wait for one line from the child and exit with it.
// Lines: "ready", or "fail CODE MESSAGE".
[[noreturn]] void wait_for_child(int fd, pid_t child, const std::string& mountpoint,
                                 int mounts_before) {
  std::string line;
  char buf[512];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line.append(buf, size_t(n));
    if (line.find('\n') != std::string::npos) break;
  }
  ::close(fd);
  line = line.substr(0, line.find('\n'));
  if (line == "ready") {
    // The service's main process is this one, about to exit: hand the
    // service over to the daemon, which is live.
    notify::ready(notify::usage(mountpoint, 0, 0, 0), child);
    ::_exit(0);
  }
  int code = 1;
  std::string message;
  if (line.rfind("fail ", 0) == 0) {
    char* end = nullptr;
    code = int(std::strtol(line.c_str() + 5, &end, 10));
    message = *end == ' ' ? std::string(end + 1) : std::string(end);
    if (code <= 0 || code > 255) code = 1;
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  if (message.empty())
    message = "the daemon ended during start-up (" + describe_status(status) + ")";
  detach_left_mount(mountpoint, mounts_before);
  notify::failed(message);
  std::fprintf(stderr, "tmpfsd: %s\n", message.c_str());
  ::_exit(code);
}

}  // namespace

Startup Startup::foreground(const std::string& mountpoint) {
  return Startup(-1, false, mountpoint);
}

Startup Startup::daemonise(const std::string& mountpoint) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    std::fprintf(stderr, "tmpfsd: pipe: %s\n", std::strerror(errno));
    std::exit(1);
  }
  const int mounts_before = mounts_on(mountpoint);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    std::fprintf(stderr, "tmpfsd: fork: %s\n", std::strerror(errno));
    std::exit(1);
  }
  if (pid > 0) {
    ::close(p[1]);
    wait_for_child(p[0], pid, mountpoint, mounts_before);
  }
  ::close(p[0]);
  ::setsid();
  if (::chdir("/") != 0) {
  }
  int nul = ::open("/dev/null", O_RDWR);
  if (nul >= 0) {
    ::dup2(nul, 0);
    ::dup2(nul, 1);
    ::dup2(nul, 2);
    if (nul > 2) ::close(nul);
  }
  // A parent killed while waiting must not take the daemon with it.
  ::signal(SIGPIPE, SIG_IGN);
  return Startup(p[1], true, mountpoint);
}

Startup Startup::takeover(const std::string& mountpoint, int report_fd, bool daemonised) {
  ::fcntl(report_fd, F_SETFD, FD_CLOEXEC);
  Startup s(report_fd, daemonised, mountpoint);
  s.takeover_ = true;
  return s;
}

Startup::Startup(Startup&& o) noexcept
    : fd_(o.fd_.exchange(-1)),
      reported_(o.reported_.load()),
      daemonised_(o.daemonised_),
      takeover_(o.takeover_),
      mountpoint_(std::move(o.mountpoint_)) {}

Startup::~Startup() {
  int fd = fd_.exchange(-1);
  if (fd >= 0) ::close(fd);  // no report: the parent says the daemon ended
}

void Startup::report(const std::string& line) noexcept {
  int fd = fd_.exchange(-1);
  if (fd < 0) return;
  std::string l = line + "\n";
  size_t off = 0;
  while (off < l.size()) {
    ssize_t n = ::write(fd, l.data() + off, l.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    off += size_t(n);
  }
  ::close(fd);
}

void Startup::ready() noexcept {
  if (reported_.exchange(true)) return;
  if (daemonised_ || takeover_) {
    report("ready");
    return;
  }
  try {
    if (notify::wanted() && !notify::ready(notify::usage(mountpoint_, 0, 0, 0)))
      spdlog::warn("cannot send READY=1 to the service manager (NOTIFY_SOCKET={})",
                   std::getenv("NOTIFY_SOCKET"));
  } catch (...) {
  }
}

void Startup::fail(int exit_code, const std::string& message) noexcept {
  if (reported_.exchange(true)) return;
  try {
    spdlog::error("{}", message);
    std::string one_line = message.substr(0, message.find('\n'));
    if (!daemonised_ && !takeover_) notify::failed(one_line);
    report("fail " + std::to_string(exit_code) + " " + one_line);
  } catch (...) {
    report("fail " + std::to_string(exit_code));
  }
}

}  // namespace tmpfsd
