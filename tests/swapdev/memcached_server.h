// MemcachedServer: a real memcached started by a test on loopback, on a
// free port, and killed by its PID when the object goes (every exit path of
// a test, failures included; PR_SET_PDEATHSIG kills it if the test process
// itself dies). Skips nothing: a machine without /usr/bin/memcached fails
// the test that needs one (tools/deps installs it).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

namespace tmpfsd::swapdev::test {

class MemcachedServer {
 public:
  // memcached with `megabytes` of memory; `full_errors`: -M (answer "out of
  // memory" instead of evicting).
  explicit MemcachedServer(unsigned megabytes = 16, bool full_errors = true) {
    port_ = free_port();
    const std::string port = std::to_string(port_), mem = std::to_string(megabytes);
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (full_errors)
        execl("/usr/bin/memcached", "memcached", "-u", "root", "-l", "127.0.0.1", "-p",
              port.c_str(), "-U", "0", "-m", mem.c_str(), "-t", "1", "-M", nullptr);
      else
        execl("/usr/bin/memcached", "memcached", "-u", "root", "-l", "127.0.0.1", "-p",
              port.c_str(), "-U", "0", "-m", mem.c_str(), "-t", "1", nullptr);
      _exit(127);
    }
    // Ready when it accepts a connection (at most 5 s).
    for (int i = 0; i < 500 && pid_ > 0; ++i) {
      if (accepts()) {
        ready_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~MemcachedServer() { kill(); }
  MemcachedServer(const MemcachedServer&) = delete;
  MemcachedServer& operator=(const MemcachedServer&) = delete;

  bool ready() const { return ready_; }
  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // SIGSTOP / SIGCONT: a server that answers nothing, as a slow or hung one.
  void pause() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }
  // SIGKILL and reap: the server and everything it held are gone.
  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);  // a stopped process dies of it too
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  static uint16_t free_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    close(fd);
    return ntohs(a.sin_port);
  }
  bool accepts() const {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
    close(fd);
    return ok;
  }

  pid_t pid_ = -1;
  uint16_t port_ = 0;
  bool ready_ = false;
};

}  // namespace tmpfsd::swapdev::test
