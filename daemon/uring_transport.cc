// FUSE over io_uring: the queue threads and their entries. See
// uring_transport.h; the ABI is in wire_uring_abi.h.
#include "daemon/uring_transport.h"

#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "daemon/wire_uring_abi.h"

namespace tmpfsd {
namespace {

// An entry's memory: the header buffer at the start, the payload buffer
// kHeadroom bytes further. A request is handed on as one contiguous buffer
// (fuse_in_header, op_in, payload) by copying the first two into the bytes
// just before the payload, so the payload itself is never copied.
constexpr size_t kHeadroom = 4096;
static_assert(sizeof(uring_abi::ReqHeader) + sizeof(fuse_in_header) + uring_abi::kOpInBytes <=
              kHeadroom);

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// The queue whose thread this is (null on every other thread).
thread_local const void* t_queue = nullptr;

}  // namespace

struct UringTransport::Entry {
  Queue* queue = nullptr;
  char* region = nullptr;  // mmap'd, region_bytes
  size_t region_bytes = 0;
  uring_abi::ReqHeader* header = nullptr;  // region
  char* payload = nullptr;                 // region + kHeadroom
  iovec iov[2] = {};                       // what REGISTER lends: header, payload
  uint64_t commit_id = 0;                  // Held: the request's unique
  bool fetched = false;                    // queue thread only: a request came
  bool dead = false;                       // queue thread only
};

struct UringTransport::Queue {
  UringTransport* owner = nullptr;
  unsigned qid = 0;
  io_uring ring{};
  bool ring_made = false;
  int wake_fd = -1;  // eventfd: replies from other threads, stop()
  uint64_t wake_value = 0;
  std::vector<Entry> entries;
  std::atomic<bool> stopping{false};
  std::mutex mu;
  std::vector<Entry*> replied;  // guarded by mu: Replied by other threads, to commit
  bool woken = false;           // guarded by mu: wake_fd written, not yet seen
  std::thread thread;

  ~Queue() {
    for (Entry& e : entries)
      if (e.region) ::munmap(e.region, e.region_bytes);
    if (ring_made) io_uring_queue_exit(&ring);
    if (wake_fd >= 0) ::close(wake_fd);
  }

  // One SQE per entry (a register or a commit) and one for the wake read
  // are all this ring ever holds unsubmitted, and it has room for them.
  io_uring_sqe* sqe() {
    io_uring_sqe* s = io_uring_get_sqe(&ring);
    while (!s) {
      io_uring_submit(&ring);
      s = io_uring_get_sqe(&ring);
    }
    return s;
  }

  // An URING_CMD for entry e; the 80-byte command area holds the CmdReq.
  void prep_cmd(io_uring_sqe* s, Entry& e, uint32_t op) {
    io_uring_prep_rw(IORING_OP_URING_CMD, s, owner->fuse_fd_, nullptr, 0, 0);
    s->cmd_op = op;
    s->__pad1 = 0;
    // SQE128: the command area is the 80 bytes after the 48 of the header.
    std::memset(reinterpret_cast<char*>(s) + offsetof(io_uring_sqe, cmd), 0, 80);
    io_uring_sqe_set_data(s, &e);
    auto* req = reinterpret_cast<uring_abi::CmdReq*>(s->cmd);
    req->qid = uint16_t(qid);
    req->commit_id = op == uring_abi::kCmdCommitAndFetch ? e.commit_id : 0;
  }

  void prep_register(Entry& e) {
    io_uring_sqe* s = sqe();
    prep_cmd(s, e, uring_abi::kCmdRegister);
    s->addr = reinterpret_cast<uint64_t>(e.iov);
    s->len = 2;
  }

  void prep_commit(Entry& e) { prep_cmd(sqe(), e, uring_abi::kCmdCommitAndFetch); }

  void arm_wake() {
    io_uring_sqe* s = sqe();
    io_uring_prep_read(s, wake_fd, &wake_value, sizeof wake_value, 0);
    io_uring_sqe_set_data(s, &wake_value);
  }

  // From reply(): on this queue's thread the commit goes straight into the
  // ring; from any other, to the queue thread.
  void commit(Entry& e) {
    if (t_queue == this) return prep_commit(e);
    bool write_fd = false;
    {
      std::lock_guard lk(mu);
      replied.push_back(&e);
      write_fd = !woken;
      woken = true;
    }
    if (write_fd) wake();
  }

  void wake() {
    uint64_t one = 1;
    ssize_t n = ::write(wake_fd, &one, sizeof one);
    (void)n;  // an eventfd write fails only at 2^64-1, which one reader never lets it reach
  }

  void run();
};

void UringTransport::Queue::run() {
  t_queue = this;
  char name[16];
  std::snprintf(name, sizeof name, "fuse-ring-%u", qid);
  pthread_setname_np(pthread_self(), name);
  // Near the requests it serves: they come from CPU qid. Not an error if
  // that CPU is offline now.
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(qid, &cpus);
  pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);

  for (Entry& e : entries) prep_register(e);
  arm_wake();
  unsigned live = unsigned(entries.size());
  bool warned = false;
  while (!stopping.load(std::memory_order_relaxed)) {
    int r = io_uring_submit_and_wait(&ring, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      spdlog::error("FUSE ring queue {}: io_uring_enter: {}", qid, strerror(-r));
      break;
    }
    io_uring_cqe* cqe;
    unsigned head, seen = 0;
    bool rearm = false;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      void* data = io_uring_cqe_get_data(cqe);
      if (data == &wake_value) {
        rearm = true;
        continue;
      }
      Entry& e = *static_cast<Entry*>(data);
      if (cqe->res == 0) {
        owner->handle_request(e);
        continue;
      }
      // The command ended without a request: the connection is gone
      // (ENOTCONN, ECONNABORTED) or the ring is closing (ECANCELED); or
      // the kernel refused the entry.
      e.dead = true;
      --live;
      int err = -cqe->res;
      if (!e.fetched && err != ENOTCONN && err != ECONNABORTED && err != ECANCELED) {
        // REGISTER refused: the kernel turns the rings off for the
        // connection (fuse_uring_cmd) and requests stay on /dev/fuse.
        if (!owner->refused_.exchange(true))
          spdlog::warn("transport: /dev/fuse (the kernel refused the ring entries: {})",
                       strerror(err));
        warned = true;
      }
      if (!warned && err != ENOTCONN && err != ECONNABORTED && err != ECANCELED) {
        warned = true;
        spdlog::warn("FUSE ring queue {}: the kernel ended an entry: {}{}", qid, strerror(err),
                     live ? "" : " (no entry left on this queue)");
      }
    }
    io_uring_cq_advance(&ring, seen);
    if (rearm) {
      std::vector<Entry*> batch;
      {
        std::lock_guard lk(mu);
        batch.swap(replied);
        woken = false;
      }
      for (Entry* e : batch) prep_commit(*e);
      arm_wake();
    }
  }
  t_queue = nullptr;
}

bool UringTransport::enabled_in_kernel() {
  std::ifstream in(kParameter);
  char c = 0;
  return in >> c && (c == 'Y' || c == 'y' || c == '1');
}

unsigned UringTransport::possible_cpus() {
  // "0-3,5": the count of CPUs listed (the kernel's num_possible_cpus()).
  std::ifstream in("/sys/devices/system/cpu/possible");
  std::string list;
  if (!(in >> list)) return unsigned(std::max(1L, sysconf(_SC_NPROCESSORS_CONF)));
  unsigned n = 0;
  std::istringstream ranges(list);
  for (std::string r; std::getline(ranges, r, ',');) {
    unsigned a = 0, b = 0;
    if (std::sscanf(r.c_str(), "%u-%u", &a, &b) == 2)
      n += b >= a ? b - a + 1 : 0;
    else if (std::sscanf(r.c_str(), "%u", &a) == 1)
      n += 1;
  }
  return n ? n : 1;
}

UringTransport::UringTransport(unsigned depth, Dispatch dispatch)
    : depth_(depth), dispatch_(std::move(dispatch)) {}

std::unique_ptr<UringTransport> UringTransport::create(unsigned depth, Dispatch dispatch,
                                                       std::string& error) {
  std::unique_ptr<UringTransport> t(new UringTransport(depth, std::move(dispatch)));
  const unsigned n = possible_cpus();
  for (unsigned qid = 0; qid < n; ++qid) {
    auto q = std::make_unique<Queue>();
    q->owner = t.get();
    q->qid = qid;
    q->entries.resize(depth);
    for (Entry& e : q->entries) e.queue = q.get();
    q->wake_fd = ::eventfd(0, EFD_CLOEXEC);
    if (q->wake_fd < 0) {
      error = std::string("eventfd: ") + strerror(errno);
      return nullptr;
    }
    // One SQE per entry (a register or a commit) and one for the wake read.
    int r = io_uring_queue_init(depth + 1, &q->ring, IORING_SETUP_SQE128);
    if (r < 0) {
      error = std::string("io_uring_setup: ") + strerror(-r);
      return nullptr;
    }
    q->ring_made = true;
    t->queues_.push_back(std::move(q));
  }
  return t;
}

UringTransport::~UringTransport() { stop(); }

void UringTransport::start(int fuse_fd, size_t payload_bytes) noexcept {
  fuse_fd_ = fuse_fd;
  {
    std::lock_guard lk(held_mu_);
    held_.reserve(queues_.size() * depth_);  // no rehash while requests come
  }
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  payload_bytes_ = round_up(payload_bytes, page);
  for (auto& q : queues_) {
    for (Entry& e : q->entries) {
      e.region_bytes = kHeadroom + payload_bytes_;
      void* m = ::mmap(nullptr, e.region_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) {
        // The entry is registered with no payload: the kernel refuses it
        // and turns the ring off for the connection (requests stay on
        // /dev/fuse), rather than waiting for an entry that never comes.
        spdlog::error("FUSE ring: no memory for an entry's buffers: {}", strerror(errno));
        e.region = nullptr;
        e.region_bytes = 0;
        static uring_abi::ReqHeader dummy;
        e.iov[0] = {&dummy, sizeof dummy};
        e.iov[1] = {nullptr, 0};
        continue;
      }
      e.region = static_cast<char*>(m);
      e.header = reinterpret_cast<uring_abi::ReqHeader*>(e.region);
      e.payload = e.region + kHeadroom;
      e.iov[0] = {e.header, sizeof(uring_abi::ReqHeader)};
      e.iov[1] = {e.payload, payload_bytes_};
    }
  }
  // The queue threads take no signal (daemon/main.cc: the exit signals are
  // for libfuse's workers and the main thread).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (auto& q : queues_) {
    try {
      q->thread = std::thread([q = q.get()] { q->run(); });
    } catch (const std::exception& e) {
      // Without this queue's entries the kernel would hold every request
      // for ever (it waits for all queues): hand it an entry it refuses,
      // which turns the rings off for the connection (fuse_uring_cmd).
      spdlog::error("FUSE ring queue {}: cannot start its thread: {}", q->qid, e.what());
      refuse(*q);
      break;
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  started_.store(true, std::memory_order_relaxed);
}

void UringTransport::refuse(Queue& q) {
  static uring_abi::ReqHeader header;
  Entry& e = q.entries.front();
  e.iov[0] = {&header, sizeof header};
  e.iov[1] = {nullptr, 0};  // smaller than any payload the kernel accepts
  q.prep_register(e);
  io_uring_submit_and_wait(&q.ring, 1);
  if (!refused_.exchange(true)) spdlog::warn("transport: /dev/fuse (the rings could not start)");
}

void UringTransport::stop() {
  for (auto& q : queues_) {
    if (!q->thread.joinable()) continue;
    q->stopping.store(true, std::memory_order_relaxed);
    q->wake();
    q->thread.join();
  }
  // Closing the rings cancels the commands in flight (the kernel's
  // fuse_uring_cancel); requests still held get no reply and end when the
  // connection does. A reply sent from now on goes to /dev/fuse, which
  // no longer knows the request (ENOENT, as for an interrupted one). The
  // entries' memory stays until the destructor: a reply() that found its
  // entry before this may still be copying into it.
  for (auto& q : queues_) {
    if (!q->ring_made) continue;
    io_uring_queue_exit(&q->ring);
    q->ring_made = false;
  }
  std::lock_guard lk(held_mu_);
  held_.clear();
  stopped_ = true;
}

void UringTransport::handle_request(Entry& e) {
  fuse_in_header in;
  std::memcpy(&in, e.header->in_out, sizeof in);
  const size_t payload = e.header->ring_ent_in_out.payload_sz;
  e.commit_id = e.header->ring_ent_in_out.commit_id;
  e.fetched = true;
  try {
    std::lock_guard lk(held_mu_);
    if (stopped_) return;
    held_[in.unique] = &e;
  } catch (const std::bad_alloc&) {
    // No memory for the map's node: ENOMEM straight back through the entry.
    fuse_out_header out{sizeof(fuse_out_header), -ENOMEM, in.unique};
    std::memcpy(e.header->in_out, &out, sizeof out);
    e.header->ring_ent_in_out.payload_sz = 0;
    e.queue->commit(e);
    return;
  }
  requests_.fetch_add(1, std::memory_order_relaxed);
  // The kernel put the first argument in op_in and the rest in the
  // payload; in.len counts them all.
  if (in.len < sizeof in + payload || in.len - sizeof in - payload > uring_abi::kOpInBytes ||
      payload > payload_bytes_) {
    spdlog::error("FUSE ring: malformed request (opcode {}, len {}, payload {})", in.opcode, in.len,
                  payload);
    fuse_out_header out{sizeof(fuse_out_header), -EIO, in.unique};
    iovec iov{&out, sizeof out};
    reply(&iov, 1);
    return;
  }
  const size_t op = in.len - sizeof in - payload;
  char* start = e.payload - op - sizeof in;
  std::memcpy(start + sizeof in, e.header->op_in, op);
  std::memcpy(start, &in, sizeof in);
  dispatch_(start, in.len);
}

bool UringTransport::reply(const iovec* iov, int count) {
  if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return false;
  fuse_out_header out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique == 0) return false;  // a notification: /dev/fuse
  Entry* e;
  {
    std::lock_guard lk(held_mu_);
    auto it = held_.find(out.unique);
    if (it == held_.end()) return false;
    e = it->second;
    held_.erase(it);
  }
  size_t n = 0;
  for (int i = 1; i < count; ++i) {
    if (n + iov[i].iov_len > payload_bytes_) {
      spdlog::error("FUSE ring: a reply of more than {} bytes (opcode reply {})", payload_bytes_,
                    out.unique);
      out.error = -EIO;
      n = 0;
      break;
    }
    std::memmove(e->payload + n, iov[i].iov_base, iov[i].iov_len);
    n += iov[i].iov_len;
  }
  if (out.error != 0) n = 0;
  out.len = uint32_t(sizeof out + n);
  std::memcpy(e->header->in_out, &out, sizeof out);
  e->header->ring_ent_in_out.payload_sz = uint32_t(n);
  e->queue->commit(*e);
  return true;
}

}  // namespace tmpfsd
