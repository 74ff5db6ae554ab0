// MemcachedPipe: one connection to one memcached server that sends many
// sets before it reads their answers, so that the pages of a writeback
// pass cost one round trip per server and window instead of one each, and
// still each gets its own answer: memcached's text protocol answers the
// commands of a connection in order, one line per set.
//
// Why not libmemcached's own pipelining: with MEMCACHED_BEHAVIOR_BUFFER_
// REQUESTS it sends sets without waiting (binary: quiet SETQ; text: the
// answers are read and thrown away before the next command), so a set that
// failed (the server out of memory, say) goes unnoticed, and a page whose
// set failed must fail its write and go to the swap file instead.
//
// The connection is made on first use and closed on any failure (refused,
// a time-out past `timeout` for any one wait, an answer it cannot place);
// the next call connects again. Threads: one at a time (each RemoteStore
// I/O thread has its own).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tmpfsd::swapdev {

class MemcachedPipe {
 public:
  struct Set {
    std::string_view key;
    std::span<const std::byte> value;
  };
  // Sets sent before their answers are read: 64 pages are 256 KiB in
  // flight, within loopback's socket buffers.
  static constexpr size_t kWindow = 64;

  MemcachedPipe(std::string host, uint16_t port, std::chrono::milliseconds timeout)
      : host_(std::move(host)), port_(port), timeout_(timeout) {}
  ~MemcachedPipe() { close(); }
  MemcachedPipe(const MemcachedPipe&) = delete;
  MemcachedPipe& operator=(const MemcachedPipe&) = delete;

  // Stores every item (no expiry, flags 0); results[i] (results.size() ==
  // items.size()): 0 stored, -ENOSPC the server is out of memory, -EIO any
  // other failure. False when the connection failed on the way: every item
  // without an answer is then -EIO. *windows: round trips made.
  bool set_all(std::span<const Set> items, std::span<int> results, uint64_t* windows);
  void close();

 private:
  bool connect();
  bool wait(short events);  // poll() for events, at most timeout_
  bool send_window(std::span<const Set> items);
  bool read_line(std::string& line);  // one answer line, without "\r\n"

  const std::string host_;
  const uint16_t port_;
  const std::chrono::milliseconds timeout_;
  int fd_ = -1;
  std::string in_;  // bytes read, not yet taken as lines
  size_t in_pos_ = 0;
};

}  // namespace tmpfsd::swapdev
