#include "swapdev/memcached_pipe.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace tmpfsd::swapdev {

namespace {
constexpr size_t kReadChunk = 4096;
}  // namespace

void MemcachedPipe::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  in_.clear();
  in_pos_ = 0;
}

bool MemcachedPipe::wait(short events) {
  pollfd p{.fd = fd_, .events = events, .revents = 0};
  for (;;) {
    const int n = ::poll(&p, 1, static_cast<int>(timeout_.count()));
    if (n > 0) return true;
    if (n == 0 || errno != EINTR) return false;
  }
}

bool MemcachedPipe::connect() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (::getaddrinfo(host_.c_str(), fmt::format("{}", port_).c_str(), &hints, &res) != 0)
    return false;
  for (addrinfo* a = res; a != nullptr && fd_ < 0; a = a->ai_next) {
    fd_ = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd_ < 0) continue;
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int err = 0;
    socklen_t len = sizeof err;
    const bool ok = (::connect(fd_, a->ai_addr, a->ai_addrlen) == 0 ||
                     (errno == EINPROGRESS && wait(POLLOUT) &&
                      ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0));
    if (!ok) close();
  }
  ::freeaddrinfo(res);
  return fd_ >= 0;
}

bool MemcachedPipe::send_window(std::span<const Set> items) {
  static constexpr char kCrlf[] = "\r\n";
  std::vector<std::string> heads;
  heads.reserve(items.size());
  std::vector<iovec> iov;
  iov.reserve(items.size() * 3);
  for (const Set& s : items) {
    heads.push_back(fmt::format("set {} 0 0 {}\r\n", s.key, s.value.size()));
    iov.push_back({heads.back().data(), heads.back().size()});
    iov.push_back({const_cast<std::byte*>(s.value.data()), s.value.size()});
    iov.push_back({const_cast<char*>(kCrlf), 2});
  }
  size_t at = 0;
  while (at < iov.size()) {
    msghdr m{};
    m.msg_iov = iov.data() + at;
    m.msg_iovlen = std::min<size_t>(iov.size() - at, IOV_MAX);
    const ssize_t n = ::sendmsg(fd_, &m, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && wait(POLLOUT)) continue;
      return false;
    }
    size_t left = static_cast<size_t>(n);
    while (left > 0 && at < iov.size()) {
      const size_t take = std::min(left, iov[at].iov_len);
      iov[at].iov_base = static_cast<char*>(iov[at].iov_base) + take;
      iov[at].iov_len -= take;
      left -= take;
      if (iov[at].iov_len == 0) ++at;
    }
  }
  return true;
}

bool MemcachedPipe::read_line(std::string& line) {
  for (;;) {
    const size_t end = in_.find("\r\n", in_pos_);
    if (end != std::string::npos) {
      line.assign(in_, in_pos_, end - in_pos_);
      in_pos_ = end + 2;
      return true;
    }
    in_.erase(0, in_pos_);
    in_pos_ = 0;
    if (in_.size() > kReadChunk) return false;  // no answer is this long
    char buf[kReadChunk];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      in_.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      return false;  // the server closed the connection
    } else if (errno != EINTR && !(errno == EAGAIN && wait(POLLIN))) {
      return false;
    }
  }
}

bool MemcachedPipe::set_all(std::span<const Set> items, std::span<int> results, uint64_t* windows) {
  std::fill(results.begin(), results.end(), -EIO);
  if (fd_ < 0 && !connect()) return false;
  std::string line;
  for (size_t from = 0; from < items.size(); from += kWindow) {
    const size_t n = std::min(kWindow, items.size() - from);
    ++*windows;
    if (!send_window(items.subspan(from, n))) {
      close();
      return false;
    }
    for (size_t i = from; i < from + n; ++i) {
      if (!read_line(line)) {
        close();
        return false;
      }
      if (line == "STORED") {
        results[i] = 0;
      } else if (line.starts_with("SERVER_ERROR")) {
        // The server read the value and refused it (memcached -M: "out of
        // memory storing object"); the next answer is the next set's.
        results[i] = line.find("out of memory") != std::string::npos ? -ENOSPC : -EIO;
      } else {
        close();  // ERROR, CLIENT_ERROR: the stream cannot be trusted
        return false;
      }
    }
  }
  return true;
}

}  // namespace tmpfsd::swapdev
