// Restart without unmounting: the old daemon's hand-over and the new one's
// take-over. See restart.h.
#include "daemon/restart.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <spdlog/spdlog.h>

#include "core/image.h"
#include "core/namespace.h"
#include "daemon/fd_io.h"
#include "daemon/fuse_ops.h"
#include "daemon/notify.h"

extern char** environ;

namespace tmpfsd {
namespace {

constexpr uint64_t kHandoverMagic = 0x31486473666d7074ULL;  // "tmpfsdH1"
constexpr uint32_t kHandoverVersion = 1;
constexpr size_t kInitMax = 4096;

using Clock = std::chrono::steady_clock;
long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// How the state goes over (docs/measurements.md compares them): a pipe the
// new daemon reads while this one writes (the default: loading overlaps
// writing), a memfd written whole before the new daemon starts
// (TMPFSD_RESTART_STATE=memfd), or an unnamed file in a directory
// (TMPFSD_RESTART_STATE_DIR=DIR).
enum class StateVia { kPipe, kMemfd, kFile };
StateVia state_via() {
  if (const char* dir = std::getenv("TMPFSD_RESTART_STATE_DIR"); dir && *dir)
    return StateVia::kFile;
  if (const char* v = std::getenv("TMPFSD_RESTART_STATE"); v && std::string_view(v) == "memfd")
    return StateVia::kMemfd;
  return StateVia::kPipe;
}

// The memfd or the file.
int state_file(std::string* why) {
  if (const char* dir = std::getenv("TMPFSD_RESTART_STATE_DIR"); dir && *dir) {
    const int fd = ::open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) *why = errno_text(std::string("cannot make the state file in ") + dir);
    return fd;
  }
  const int fd = ::memfd_create("tmpfsd-restart-state", MFD_CLOEXEC);
  if (fd < 0) *why = errno_text("memfd_create");
  return fd;
}

// The state: the handshake, the directory handles, the live image (which
// ends with the trailer that covers all of it).
// All of `b` to the pipe `fd` (non-blocking), or ETIMEDOUT at `deadline`
// (a new daemon that stopped reading), EPIPE (one that is gone).
Status write_all_by(int fd, std::span<const std::byte> b, Clock::time_point deadline) {
  while (!b.empty()) {
    const ssize_t n = ::write(fd, b.data(), b.size());
    if (n > 0) {
      b = b.subspan(size_t(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return Errno{errno};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return Errno{ETIMEDOUT};
    pollfd p{fd, POLLOUT, 0};
    ::poll(&p, 1, int(left.count()));
  }
  return {};
}

bool write_state(const RestartContext& c, const ImageWriter::Sink& sink, uint64_t* bytes,
                 std::string* why) {
  ImageWriter w([&sink, bytes](std::span<const std::byte> b) {
    *bytes += b.size();
    return sink(b);
  });
  const Wire::Handshake hs = c.wire->handshake();
  w.u64(kHandoverMagic);
  w.u32(kHandoverVersion);
  w.u32(0);
  w.str(hs.init_request);
  w.u64(hs.agreed_flags);
  // The limits as tmpfsctl set or mount -o remount left them.
  const Limits limits = c.ns->limits();
  w.u64(*limits.max_pages);
  w.u64(*limits.max_inodes);
  c.fs->dir_handles.save(w);
  if (Status s = c.ns->save_image(w, /*live=*/true); !s) {
    *why = std::string("cannot write the state: ") +
           (s.code() == EPIPE ? "the new daemon stopped reading it" : std::strerror(s.code()));
    return false;
  }
  return true;
}

// One line from the new daemon ("ready", "fail CODE MESSAGE"), or "" when
// it closed the pipe without one (it died) or took longer than `wait`.
std::string read_report(int fd, std::chrono::milliseconds wait, bool* timed_out) {
  const auto deadline = Clock::now() + wait;
  std::string line;
  char buf[512];
  *timed_out = false;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      *timed_out = true;
      return "";
    }
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, int(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return line.substr(0, line.find('\n'));
    line.append(buf, size_t(n));
    if (line.find('\n') != std::string::npos) return line.substr(0, line.find('\n'));
  }
}

}  // namespace

bool parse_takeover(const std::string& text, Takeover* out) {
  int v[4] = {-1, -1, -1, -1};
  int n = 0;
  size_t pos = 0;
  while (n < 4 && pos <= text.size()) {
    const size_t comma = std::min(text.find(',', pos), text.size());
    const std::string part = text.substr(pos, comma - pos);
    char* end = nullptr;
    const long x = std::strtol(part.c_str(), &end, 10);
    if (part.empty() || *end != '\0' || x < 0 || x > 65535) return false;
    v[n++] = int(x);
    pos = comma + 1;
  }
  if (n < 3 || pos <= text.size()) return false;
  *out = Takeover{v[0], v[1], v[2], v[3]};
  return true;
}

int restart_possible(const RestartContext& c, const std::string& binary, std::string* why) {
  if (c.wire->transport() == "uring") {
    *why =
        "not with FUSE over io_uring: the rings' entries belong to this process and end with it "
        "(mount with --transport dev to restart without unmounting)";
    return EOPNOTSUPP;
  }
  const std::string& path = binary.empty() ? c.default_binary : binary;
  if (path.empty() || path[0] != '/') {
    *why = "the binary to restart into must be an absolute path (" + path + ")";
    return EINVAL;
  }
  if (::access(path.c_str(), X_OK) != 0) {
    *why = errno_text("cannot execute " + path);
    return errno == ENOENT ? ENOENT : EACCES;
  }
  return 0;
}

bool restart(const RestartContext& c, const std::string& binary, std::string* why) {
  const std::string path = binary.empty() ? c.default_binary : binary;
  if (int e = restart_possible(c, path, why); e != 0) return false;
  const auto start = Clock::now();
  spdlog::info("restart: handing the mount over to a new {}", path);
  if (!c.wire->quiesce(kQuiesceWait)) {
    *why = "requests still unanswered after " + std::to_string(kQuiesceWait.count()) + " s";
    return false;
  }
  const long long quiesce_ms = ms_since(start);
  const StateVia via = state_via();
  int state = -1;    // what the new daemon reads the state from
  int state_w = -1;  // the pipe's write end (kPipe)
  int ready[2] = {-1, -1};
  uint64_t bytes = 0;
  long long write_ms = 0;
  auto give_up = [&](const std::string& reason) {
    *why = reason;
    for (int fd : {state, state_w, ready[0], ready[1]})
      if (fd >= 0) ::close(fd);
    c.wire->resume();
    return false;
  };
  if (via == StateVia::kPipe) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return give_up(errno_text("pipe"));
    state = p[0];
    state_w = p[1];
    ::fcntl(state_w, F_SETFL, O_NONBLOCK);
    ::fcntl(state_w, F_SETPIPE_SZ, 1 << 20);  // fewer wake-ups; the default is 64 KiB
  } else {
    if ((state = state_file(why)) < 0) return give_up(*why);
    const auto write_start = Clock::now();
    if (!write_state(
            c, [state](std::span<const std::byte> b) { return write_all(state, b); }, &bytes, why))
      return give_up(*why);
    write_ms = ms_since(write_start);
  }
  if (::pipe2(ready, O_CLOEXEC) != 0) return give_up(errno_text("pipe"));

  // Everything the child needs, made before fork(): after it, a child of
  // a threaded process may only call async-signal-safe functions.
  std::string takeover =
      std::to_string(c.fuse_fd) + "," + std::to_string(state) + "," + std::to_string(ready[1]);
  if (c.lock_fd >= 0) takeover += "," + std::to_string(c.lock_fd);
  std::vector<std::string> args;
  args.push_back(path);
  args.insert(args.end(), c.args.begin(), c.args.end());
  args.push_back("--takeover");
  args.push_back(takeover);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int inherit[] = {c.fuse_fd, state, ready[1], c.lock_fd};
  const char* cwd = c.cwd.empty() ? "/" : c.cwd.c_str();
  sigset_t none;
  sigemptyset(&none);

  const auto spawn = Clock::now();
  const pid_t child = ::fork();
  if (child < 0) return give_up(errno_text("fork"));
  if (child == 0) {
    // Nothing else goes over (a log file opened without O_CLOEXEC would
    // pile up, one more with every restart).
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    for (int fd : inherit)
      if (fd >= 0) ::fcntl(fd, F_SETFD, 0);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::chdir(cwd) != 0) ::_exit(126);
    ::execve(argv[0], argv.data(), environ);
    ::_exit(127);
  }
  ::close(ready[1]);
  ready[1] = -1;
  bool timed_out = false;
  std::string line;
  std::string write_failed;  // why the state could not be written to the pipe
  if (via == StateVia::kPipe) {
    // Written while the new daemon reads it; a write to a pipe it has
    // closed fails with EPIPE here (SIGPIPE blocked in this thread).
    ::close(state);
    state = -1;
    sigset_t pipe_signal, old_mask;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, &old_mask);
    const auto write_start = Clock::now();
    const auto deadline = write_start + kReadyWait;
    const bool written = write_state(
        c, [&](std::span<const std::byte> b) { return write_all_by(state_w, b, deadline); }, &bytes,
        why);
    write_ms = ms_since(write_start);
    ::close(state_w);
    state_w = -1;
    const timespec at_once{0, 0};
    while (sigtimedwait(&pipe_signal, nullptr, &at_once) == SIGPIPE) {
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    if (!written) {  // its reason, if it gives one; it is ended either way
      write_failed = *why;
      line = read_report(ready[0], std::chrono::seconds(5), &timed_out);
      if (line.empty()) line = "-";
    }
  }
  if (line.empty()) line = read_report(ready[0], kReadyWait, &timed_out);
  if (line == "ready") {
    spdlog::info(
        "restart: pid {} serves the mount now; {} ms in all (quiesce {} ms, state {} bytes "
        "written{} in {} ms, new daemon ready in {} ms)",
        child, ms_since(start), quiesce_ms, bytes,
        via == StateVia::kPipe    ? " to a pipe"
        : via == StateVia::kMemfd ? " to a memfd"
                                  : " to a file",
        write_ms, ms_since(spawn));
    // The service's main process is this one, about to exit.
    if (notify::wanted() && !notify::main_pid(child))
      spdlog::warn("restart: cannot send MAINPID={} to the service manager", child);
    spdlog::default_logger()->flush();
    ::_exit(0);  // no unmount, no save: the mount and the state are the new daemon's
  }
  if (timed_out || !write_failed.empty()) ::kill(child, SIGKILL);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  std::string reason;
  if (line.rfind("fail ", 0) == 0)
    reason = "the new daemon failed: " + line.substr(line.find(' ', 5) + 1);
  else if (WIFEXITED(status))
    reason = "the new daemon exited with status " + std::to_string(WEXITSTATUS(status)) +
             (WEXITSTATUS(status) == 127 ? " (could not execute " + path + ")" : "");
  else if (!write_failed.empty())
    reason = write_failed;
  else if (timed_out)
    reason = "the new daemon was not ready within " + std::to_string(kReadyWait.count()) + " s";
  else if (WIFSIGNALED(status))
    reason = std::string("the new daemon was killed by signal ") + ::strsignal(WTERMSIG(status));
  else
    reason = "the new daemon ended without a word";
  return give_up(reason + "; this daemon serves on");
}

bool load_handover(int fd, Namespace& ns, Filesystem& fs, Wire::Handshake* hs, std::string* why) {
  const auto start = Clock::now();
  if (::lseek(fd, 0, SEEK_SET) != 0 && errno != ESPIPE) {  // a pipe is read as it comes
    *why = errno_text("the state");
    return false;
  }
  ImageReader r([fd](std::span<std::byte> out) { return read_full(fd, out); });
  uint64_t magic;
  uint32_t version, reserved;
  bool ok = r.u64(&magic) && r.u32(&version) && r.u32(&reserved);
  if (ok && magic != kHandoverMagic) ok = r.fail("not a tmpfsd restart state");
  if (ok && version != kHandoverVersion)
    ok = r.fail("restart state version " + std::to_string(version) + ", this tmpfsd reads " +
                std::to_string(kHandoverVersion));
  uint64_t max_pages = 0, max_inodes = 0;
  ok = ok && r.str(&hs->init_request, kInitMax) && r.u64(&hs->agreed_flags) && r.u64(&max_pages) &&
       r.u64(&max_inodes) && fs.dir_handles.load(r);
  // The previous daemon's limits, before anything is in the namespace (the
  // command line's may be smaller than what it holds).
  if (std::string limits_why; ok && !ns.set_limits(Limits{max_pages, max_inodes}, &limits_why))
    ok = r.fail("the previous daemon's limits (size=" + std::to_string(max_pages) +
                " pages, nr_inodes=" + std::to_string(max_inodes) + "): " + limits_why);
  if (ok) {
    const Status s = ns.load_image(r);
    if (!s && r.why().empty()) r.fail(std::strerror(s.code()));
    ok = bool(s);
  }
  ::close(fd);
  if (!ok) {
    *why = "the restart state: " + (r.why().empty() ? std::string("cut short") : r.why());
    return false;
  }
  spdlog::info("restart: took over {} inodes in {} ms", ns.inode_count(), ms_since(start));
  return true;
}

void unmount_taken_over(const std::string& mountpoint, int fuse_fd) {
  // Unmounted already (umount, fusermount3 -u): the connection reports an
  // error on the descriptor, as fuse_kern_unmount checks.
  pollfd p{fuse_fd, 0, 0};
  if (::poll(&p, 1, 0) == 1 && (p.revents & POLLERR)) return;
  if (::umount2(mountpoint.c_str(), MNT_DETACH) == 0) return;
  const pid_t pid = ::fork();  // not root: fusermount3 may unmount what we mounted
  if (pid == 0) {
    const int nul = ::open("/dev/null", O_RDWR);
    if (nul >= 0) ::dup2(nul, 1), ::dup2(nul, 2);
    ::execlp("fusermount3", "fusermount3", "-u", "-z", mountpoint.c_str(),
             static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid > 0) ::waitpid(pid, nullptr, 0);
}

}  // namespace tmpfsd
