// RemoteStore: a SwapDevice whose slots live in a pool of memcached servers
// (the remote tier, docs/design.md "The remote binding"). A slot is a key,
// "tmpfsd:<mount id>:<slot>"; its value is the page sealed with AES-256-GCM
// (seal.h) and nothing else: the tag and the version stay here, in memory,
// so a server, or anyone on the path, can neither read a page nor hand back
// another one (another key's value, an old value of this key, another
// mount's) without the read failing with -EIO and checksum_failures moving.
// The binding (SealBinding) is the mount id with the slot, the page's file
// and index, and the version drawn for this write.
//
//   write(slots) --queue--> I/O thread: for each page, a set on each of the
//                           1 + replicas servers chosen for it (the first
//                           servers that are up, from the slot's home
//                           server on), pipelined per server; the servers
//                           sent a copy are remembered per slot
//   read(slots)  --queue--> I/O thread: one multi-get per server for the
//                           batch; a miss, a failure or a seal that does
//                           not open tries the slot's next copy; none left:
//                           -EIO
//   free(slots)  --queue--> I/O thread: deletes of every copy, then the
//                           slots go back to the allocator (so a slot is
//                           never reused while its delete is in flight)
//
// Health: a server that fails (connection refused, a time-out past
// Options::timeout, a protocol error) is left alone for retry_after; a
// server that answers "out of memory" (memcached -M) marks the pool full
// for retry_after. healthy() is false while fewer than 1 + replicas servers
// are up or the pool is full: the tiered device (tiered_swap_device.h) then
// sends pages to the swap file. A write that fails on any of its copies
// fails as a whole (-EIO, -ENOSPC for a full pool): its slots hold nothing.
//
// Contract: SwapDevice's (swap_device.h). Every completion runs on an I/O
// thread ("remote-io"), never inside write()/read(); a caller never waits
// on the network. The sets of a batch go out pipelined, one round trip
// per server and 64 pages (MemcachedPipe: each still gets its own
// answer); a read batch is one multi-get per server (round_trips counts
// both).
//
// Threads: any thread may call anything. mu_ guards the queues; the I/O
// threads own their memcached connections (one per server each, since a
// memcached_st is not thread-safe); health and per-slot holders are
// atomics. The destructor runs the callbacks of every queued request.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "swapdev/slot_device.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd::swapdev {

struct RemoteServer {
  std::string host;
  uint16_t port = 11211;
};

struct RemoteOptions {
  std::vector<RemoteServer> servers;
  unsigned replicas = 0;  // extra copies of each page, each on another server
  // Keep a copy of each pool page in the swap file too, while it has room
  // (TieredSwapDevice does; the pool itself ignores it).
  bool local_copy = false;
  uint64_t slots = 0;  // how many pages the pool may hold (--remote-size)
  size_t page_size = 4096;
  std::chrono::milliseconds timeout{500};       // one network operation, at most
  std::chrono::milliseconds retry_after{1000};  // a failed server, or a full pool, rests
  unsigned threads = 4;                         // I/O threads, each with a connection per server
  uint64_t mount_id = 0;                        // names this mount's keys; 0: random
};

// "memcached://h1:11211,h2[:port][?replicas=N][&local_copy=0|1]" into
// opt->servers, opt->replicas and opt->local_copy. False with a sentence in *error for anything
// else (no server, a bad port, an unknown parameter, replicas >= servers).
bool parse_remote_url(std::string_view url, RemoteOptions* opt, std::string* error);

// The remote figures (monotonic unless noted).
struct RemoteCounters {
  uint64_t pages = 0;          // gauge: slots holding a page
  uint64_t round_trips = 0;    // sets, deletes, and multi-gets (one per server and batch)
  uint64_t failures = 0;       // network operations that failed (server gone, slow, full)
  uint64_t full = 0;           // of failures: "out of memory" answers
  uint64_t seal_failures = 0;  // values that did not open (tampered, stale, other)
  uint64_t servers_up = 0;     // gauge
};

class RemoteStore final : public SlotDevice {
 public:
  // Starts the I/O threads; connects lazily. Null and a sentence in *error
  // if the options are unusable (no server, no slots) or randomness fails.
  static std::unique_ptr<RemoteStore> create(const RemoteOptions& opt, std::string* error);
  ~RemoteStore() override;

  SlotRun allocate(uint32_t want, SwapSlot hint = {}) override;
  void free(SwapSlot first, uint32_t count = 1) override;
  using SwapDevice::read;
  using SwapDevice::write;
  using SwapDevice::write_blocks;
  void write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) override;
  void read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) override;
  // Writes the whole page, sealed afresh (as a sealed file does).
  void write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                    uint64_t block_mask, unsigned block_shift, IoDone done) override;
  void flush() override;

  // Up to 1 + replicas servers up and the pool not full: new pages may come.
  bool healthy() const;
  RemoteCounters remote_counters() const;
  // The memcached key of a slot (tests use it to tamper with a value).
  std::string key(SwapSlot slot) const;
  const RemoteOptions& options() const { return opt_; }

 private:
  struct Op;
  struct Conn;
  RemoteStore(const RemoteOptions& opt, std::unique_ptr<Sealer> sealer);

  void submit(std::unique_ptr<Op> op);
  // Marks a write's or read's op rejected (-EINVAL: bad slots or pages) or
  // failed (an injected error) before it goes out.
  template <class Pages>
  void check_request(Op& op, SwapSlot first, Pages pages);
  void worker(std::stop_token stop);
  void perform_writes(std::vector<Conn>& conns, std::span<Op* const> ops);
  void perform_reads(std::vector<Conn>& conns, std::span<Op* const> ops);
  void perform_deletes(std::vector<Conn>& conns, std::span<Op* const> ops);
  uint64_t where(uint64_t slot) const;  // the seal's binding of a slot
  unsigned home(uint64_t slot) const;   // the server a slot's first copy tries
  bool up(unsigned server) const;
  void failed(unsigned server, bool full);

  const RemoteOptions opt_;
  const unsigned copies_;  // 1 + replicas

  mutable Mutex mu_;
  std::deque<std::unique_ptr<Op>> queue_ GUARDED_BY(mu_);  // for the I/O threads
  std::vector<std::unique_ptr<Op>> held_ GUARDED_BY(mu_);  // queued under an IoBatch
  std::condition_variable_any cv_;                         // queue_ not empty

  // Per slot: bit s set when server s holds a copy (or may: a failed
  // write's copies are deleted with the slot).
  std::unique_ptr<std::atomic<uint32_t>[]> holders_;
  // Per server: steady-clock nanoseconds before which it is not tried.
  std::unique_ptr<std::atomic<int64_t>[]> down_until_;
  std::atomic<int64_t> full_until_{0};  // the pool answered "out of memory"

  std::atomic<uint64_t> round_trips_{0}, failures_{0}, full_{0}, seal_failures_{0};
  std::vector<std::jthread> threads_;  // last: stopped and joined first
};

}  // namespace tmpfsd::swapdev
