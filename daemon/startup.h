// Start-up: how tmpfsd becomes a daemon, and how whoever started it learns
// whether the mount came up.
//
// The rule: no thread, no io_uring ring and no swap file before
// Startup::daemonise(). fork() copies only the calling thread; a PageCache
// built before it has, in the child, no Reclaimer, no I/O completer, no
// discarder and no prefault thread, and the first write beyond --memory
// waits for ever for a frame that nobody frees. So the process
// forks first, and the child (the daemon) builds everything, mounts, and
// reports over a pipe; the parent only waits for that report:
//
//   parent                      child (setsid, cwd /, stdio on /dev/null)
//   daemonise() ----fork----->  pid file, log sink, swap file, PageCache,
//     read(pipe)                threads, fuse_session_mount, INIT answered
//     <------- "ready" ------   ready()            (or fail(code, line))
//   exit 0 (or print the line, reap the child, detach a mount it left, exit code)
//
// In the foreground (-f) nothing forks: ready() and fail() only log.
//
// Under a service manager (NOTIFY_SOCKET, daemon/notify.h) the same two
// moments are told to it by the main process: -f, ready() sends READY=1;
// daemonised, the parent sends READY=1 and MAINPID=<child> when the child
// reports ready, and STATUS=failed: ... when it reports a failure.
//
// Threads: one. ready() may be called from the FUSE worker that answers
// INIT; ready() and fail() are idempotent after the first report.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <string>

namespace tmpfsd {

class Startup {
 public:
  // Stays in this process. `mountpoint` is for the READY=1 status line.
  static Startup foreground(const std::string& mountpoint);
  // Forks. Returns only in the child, which runs in a new session with
  // its working directory at / and stdin, stdout and stderr on /dev/null.
  // The parent waits for the child's report and exits with it: 0 once
  // ready(), or the code given to fail() after printing its message on
  // stderr; if the child dies without a report, 1 and a line that says
  // how it died. Before exiting the parent reaps a failed child and
  // detaches a mount on `mountpoint` that the child made and left.
  // `mountpoint` must be absolute. Call with no other thread running.
  static Startup daemonise(const std::string& mountpoint);
  // A daemon started by another to take its mount over (daemon/restart.h):
  // already detached as its predecessor was; ready() and fail() report over
  // `report_fd` to the predecessor, which waits as daemonise()'s parent does.
  static Startup takeover(const std::string& mountpoint, int report_fd, bool daemonised);

  Startup(Startup&& o) noexcept;
  Startup& operator=(Startup&&) = delete;
  Startup(const Startup&) = delete;
  ~Startup();

  // The mount answers requests: the parent exits 0.
  void ready() noexcept;
  // Start-up failed: logs `message` (one line) as an error and hands it and
  // `exit_code` to the parent. After ready() or fail(), does nothing.
  void fail(int exit_code, const std::string& message) noexcept;
  bool daemonised() const { return daemonised_; }

 private:
  Startup(int fd, bool daemonised, std::string mountpoint)
      : fd_(fd), daemonised_(daemonised), mountpoint_(std::move(mountpoint)) {}
  void report(const std::string& line) noexcept;

  std::atomic<int> fd_;                // write end of the pipe to the parent; -1 once reported
  std::atomic<bool> reported_{false};  // ready() or fail() was called
  bool daemonised_;
  bool takeover_ = false;  // reports to the daemon it takes over from
  std::string mountpoint_;
};

}  // namespace tmpfsd
