#include "daemon/notify.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <mutex>
#include <string>

namespace tmpfsd::notify {
namespace {

// Orders STATUS against STOPPING: no STATUS once stopping() has sent.
std::mutex g_mu;
bool g_stopping = false;

bool send(const std::string& message) {
  if (!wanted()) return false;
  // unset_environment = 0: the daemonised child sends too, after the parent.
  return ::sd_notify(0, message.c_str()) > 0;
}

// A STATUS= value is one line.
std::string one_line(const std::string& s) { return s.substr(0, s.find('\n')); }

}  // namespace

bool wanted() {
  static const bool on = [] {
    const char* s = std::getenv("NOTIFY_SOCKET");
    return s && *s;
  }();
  return on;
}

std::string usage(const std::string& mountpoint, uint64_t data_bytes, uint64_t frame_bytes,
                  uint64_t swap_bytes) {
  return "mounted on " + mountpoint + "; " + std::to_string(data_bytes >> 20) + " MiB of data, " +
         std::to_string(frame_bytes >> 20) + " MiB in frames, " + std::to_string(swap_bytes >> 20) +
         " MiB in swap";
}

bool ready(const std::string& status_line, pid_t main_pid) {
  std::string m = "READY=1\n";
  if (main_pid > 0) m += "MAINPID=" + std::to_string(main_pid) + "\n";
  m += "STATUS=" + one_line(status_line);
  return send(m);
}

bool status(const std::string& line) {
  if (!wanted()) return false;
  std::lock_guard lk(g_mu);
  if (g_stopping) return true;  // by design, not a failure
  return send("STATUS=" + one_line(line));
}

bool stopping(const std::string& mountpoint) {
  std::lock_guard lk(g_mu);
  g_stopping = true;
  return send("STOPPING=1\nSTATUS=unmounting " + one_line(mountpoint));
}

bool extend_timeout(uint64_t seconds) {
  return send("EXTEND_TIMEOUT_USEC=" + std::to_string(seconds * 1000000));
}

bool failed(const std::string& message) { return send("STATUS=failed: " + one_line(message)); }

bool main_pid(pid_t pid) { return send("MAINPID=" + std::to_string(pid)); }

}  // namespace tmpfsd::notify
