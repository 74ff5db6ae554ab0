// UringTransport: FUSE requests and replies over io_uring instead of
// read() and writev() on /dev/fuse (the kernel's fs/fuse/dev_uring.c).
//
// The idea. With /dev/fuse each request costs the daemon a read() and a
// writev(), and a wake-up of a worker between them. Over io_uring the
// daemon lends the kernel buffers ("entries"), each held by an
// IORING_OP_URING_CMD on the /dev/fuse descriptor; the kernel copies a
// request into a free entry and completes its command; the daemon answers
// in the same buffers and, in one submission, commits the reply and hands
// the entry back for the next request (COMMIT_AND_FETCH).
//
//   kernel queue q (CPU q)       queue thread q (its own ring)
//   request --> free entry ---> CQE: header + payload in the entry
//                                 dispatch (Wire, libfuse) ... reply()
//   reply <-- COMMIT_AND_FETCH <-- SQE: reply in the entry, commit_id
//
// Queues. The kernel has one queue per possible CPU and puts a request on
// the queue of the CPU that sends it; it uses the rings only once every
// queue has an entry (until then, and for FORGET, INTERRUPT and the
// daemon's notifications, /dev/fuse as before). So there is one queue
// thread per possible CPU ("fuse-ring-N", pinned to its CPU when online),
// each with its own SQE128 ring and `depth` entries.
//
// Entry states (owner in brackets):
//   Free [kernel]: its command is in flight, waiting for a request;
//   Held [daemon]: a request arrived (the CQE); the entry is in the map by
//     the request's unique until its reply;
//   Replied [queue thread]: the reply is in the buffers; COMMIT_AND_FETCH
//     is queued on the queue thread's ring, which makes it Free again.
// Dead: the command ended with an error (the connection ended, the ring
// was closed); the entry is not given back.
//
// Replies sent later (a read answered from a swap-in completion, a direct
// write answered by the cache-inval thread) reach reply() on another
// thread: it fills the entry and hands it to the queue thread, which
// submits the commit. Only the queue thread submits to its ring: the
// kernel delivers the entry's next request as task work of the thread that
// submitted the command, and a thread that may sleep elsewhere (waiting for
// the kernel's page locks, say) must never be the one a request waits for.
//
// Threads: create() and start() from any one thread (start() after the
// INIT reply that accepted FUSE_OVER_IO_URING is written); reply() from any
// thread; stop() and the destructor from the thread that owns the object,
// after the dispatch can no longer be called for a request it needs to
// finish.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace tmpfsd {

class UringTransport {
 public:
  // Handles one request: `buf` holds it as read() from /dev/fuse would have
  // (fuse_in_header, arguments), `len` bytes. Called on a queue thread.
  using Dispatch = std::function<void(void* buf, size_t len)>;

  // The kernel's switch for FUSE over io_uring.
  static constexpr const char* kParameter = "/sys/module/fuse/parameters/enable_uring";
  // Whether kParameter reads Y.
  static bool enabled_in_kernel();
  // The kernel's queue count: nr_cpu_ids (/sys/devices/system/cpu/possible).
  static unsigned possible_cpus();

  // Makes the rings (one per possible CPU, `depth` entries each). Null and
  // `error` when io_uring refuses.
  static std::unique_ptr<UringTransport> create(unsigned depth, Dispatch dispatch,
                                                std::string& error);
  ~UringTransport();
  UringTransport(const UringTransport&) = delete;
  UringTransport& operator=(const UringTransport&) = delete;

  // Lends the kernel the entries through the /dev/fuse descriptor
  // `fuse_fd` (payload buffers of `payload_bytes`, at least what the kernel
  // computed from INIT) and starts the queue threads.
  void start(int fuse_fd, size_t payload_bytes) noexcept;
  // When iov[0]'s fuse_out_header answers a request held by an entry: the
  // reply is committed through that entry and true returned (whatever
  // became of it: a connection that ended drops it, as writev would).
  // False: not a ring request; the caller writes it to /dev/fuse.
  bool reply(const iovec* iov, int count);
  // Ends the queue threads and closes the rings (the kernel cancels the
  // commands in flight); reply() returns false from then on. Idempotent.
  void stop();

  unsigned queues() const { return unsigned(queues_.size()); }
  unsigned depth() const { return depth_; }
  // The queue threads run and the kernel took their entries (none refused).
  bool started() const {
    return started_.load(std::memory_order_relaxed) && !refused_.load(std::memory_order_relaxed);
  }
  uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }

 private:
  struct Queue;
  struct Entry;
  UringTransport(unsigned depth, Dispatch dispatch);
  void handle_request(Entry& e);
  // Makes the kernel turn the rings off (an entry it refuses), on q's ring
  // from this thread: for a queue whose thread could not start.
  void refuse(Queue& q);

  const unsigned depth_;
  int fuse_fd_ = -1;  // set by start()
  const Dispatch dispatch_;
  size_t payload_bytes_ = 0;  // set by start()
  std::vector<std::unique_ptr<Queue>> queues_;
  std::atomic<bool> started_{false};
  std::atomic<bool> refused_{false};  // a REGISTER failed: the kernel stays on /dev/fuse
  std::atomic<uint64_t> requests_{0};

  std::mutex held_mu_;
  std::unordered_map<uint64_t, Entry*> held_;  // guarded by held_mu_: unique -> Held entry
  bool stopped_ = false;                       // guarded by held_mu_: stop() ran
};

}  // namespace tmpfsd
