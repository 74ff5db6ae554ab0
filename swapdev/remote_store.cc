#include "swapdev/remote_store.h"

#include "swapdev/memcached_pipe.h"

#include <libmemcached-1.0/memcached.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <unordered_map>

namespace tmpfsd::swapdev {

namespace {

constexpr size_t kMaxPagesPerRequest = 1024;
constexpr size_t kMaxServers = 32;  // holders_ is a 32-bit mask
constexpr size_t kBatchOps = 256;   // requests an I/O thread takes at once, at most
constexpr size_t kMinShare = 32;    // ... and at least, when as many are queued
constexpr int64_t kUsPerMs = 1000;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// After a failure (a time-out, above all) the connection may still owe
// the answer to the request that failed; read later, it would pass for the
// next request's. Closed, the next request starts on a fresh connection.
void drop_connection(memcached_st* st) { memcached_quit(st); }

}  // namespace

// One request: pages to write (already sealed) or read, or slots to delete.
struct RemoteStore::Op {
  enum class Kind { kWrite, kRead, kDelete } kind = Kind::kWrite;
  uint64_t first = 0;
  std::vector<std::span<std::byte>> pages;  // read: where the pages go
  PageOwner owner;
  std::vector<std::byte> sealed;  // write: every page's ciphertext
  std::vector<PageProof> proofs;  // write: recorded when every copy is in
  std::vector<uint64_t> slots;    // delete
  int err = 0;
  bool rejected = false;  // err decided at submission: touch nothing
  IoDone done;            // null for deletes
};

// An I/O thread's connection to one server.
struct RemoteStore::Conn {
  memcached_st* st = nullptr;           // gets and deletes
  std::unique_ptr<MemcachedPipe> pipe;  // sets, pipelined
  Conn() = default;
  Conn(const Conn&) = delete;
  Conn(Conn&& o) noexcept : st(std::exchange(o.st, nullptr)), pipe(std::move(o.pipe)) {}
  ~Conn() {
    if (st) memcached_free(st);
  }
};

std::unique_ptr<RemoteStore> RemoteStore::create(const RemoteOptions& opt, std::string* error) {
  if (opt.servers.empty() || opt.servers.size() > kMaxServers) {
    *error = "the remote pool needs 1 to 32 servers";
    return nullptr;
  }
  if (opt.replicas >= opt.servers.size()) {
    *error = "replicas must be fewer than the servers";
    return nullptr;
  }
  if (opt.slots == 0) {
    *error = "the remote pool has no room (--remote-size)";
    return nullptr;
  }
  std::string why;
  std::unique_ptr<Sealer> sealer = Sealer::create(&why);
  if (!sealer) {
    *error = "cannot make the remote tier's key: " + why;
    return nullptr;
  }
  RemoteOptions o = opt;
  while (o.mount_id == 0) {
    // Any 64 bits unlikely to repeat across mounts sharing a pool: they
    // keep two mounts' keys apart (their seals differ anyway: one key each).
    o.mount_id = XXH3_64bits_withSeed(&o, sizeof(o), static_cast<uint64_t>(now_ns())) ^
                 static_cast<uint64_t>(getpid());
  }
  o.threads = std::max(1u, o.threads);
  return std::unique_ptr<RemoteStore>(new RemoteStore(o, std::move(sealer)));
}

RemoteStore::RemoteStore(const RemoteOptions& opt, std::unique_ptr<Sealer> sealer)
    : SlotDevice(opt.page_size, static_cast<unsigned>(std::countr_zero(opt.page_size)),
                 {.total_slots = opt.slots, .cluster_slots = 256, .shards = 0, .discard = false},
                 std::move(sealer)),
      opt_(opt),
      copies_(opt.replicas + 1),
      holders_(new std::atomic<uint32_t>[opt.slots]()),
      down_until_(new std::atomic<int64_t>[opt.servers.size()]()) {
  for (unsigned i = 0; i < opt_.threads; ++i)
    threads_.emplace_back([this](std::stop_token st) { worker(st); });
}

RemoteStore::~RemoteStore() {
  flush();
  for (auto& t : threads_) t.request_stop();
  cv_.notify_all();
  threads_.clear();  // the I/O threads finish the queue, then exit
  std::deque<std::unique_ptr<Op>> left;
  {
    MutexLock lk(mu_);
    left.swap(queue_);
  }
  for (auto& op : left) {  // queued by a callback after the threads stopped
    if (op->kind == Op::Kind::kDelete) {
      for (uint64_t s : op->slots) alloc_.free(SwapSlot(s), 1);
    } else if (op->done) {
      op->done(-EIO);
    }
  }
}

std::string RemoteStore::key(SwapSlot slot) const {
  return fmt::format("tmpfsd:{:016x}:{}", opt_.mount_id, slot.value);
}

uint64_t RemoteStore::where(uint64_t slot) const {
  return XXH3_64bits_withSeed(&slot, sizeof(slot), opt_.mount_id);
}

unsigned RemoteStore::home(uint64_t slot) const {
  return static_cast<unsigned>(slot % opt_.servers.size());
}

bool RemoteStore::up(unsigned server) const {
  return now_ns() >= down_until_[server].load(std::memory_order_relaxed);
}

void RemoteStore::failed(unsigned server, bool full) {
  failures_.fetch_add(1, std::memory_order_relaxed);
  const int64_t until =
      now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(opt_.retry_after).count();
  if (full) {
    full_.fetch_add(1, std::memory_order_relaxed);
    full_until_.store(until, std::memory_order_relaxed);
  } else {
    down_until_[server].store(until, std::memory_order_relaxed);
  }
}

bool RemoteStore::healthy() const {
  if (now_ns() < full_until_.load(std::memory_order_relaxed)) return false;
  unsigned n = 0;
  for (unsigned s = 0; s < opt_.servers.size(); ++s) n += up(s);
  return n >= copies_;
}

RemoteCounters RemoteStore::remote_counters() const {
  RemoteCounters c;
  c.pages = alloc_.used_slots();
  c.round_trips = round_trips_.load(std::memory_order_relaxed);
  c.failures = failures_.load(std::memory_order_relaxed);
  c.full = full_.load(std::memory_order_relaxed);
  c.seal_failures = seal_failures_.load(std::memory_order_relaxed);
  for (unsigned s = 0; s < opt_.servers.size(); ++s) c.servers_up += up(s);
  return c;
}

SlotRun RemoteStore::allocate(uint32_t want, SwapSlot hint) { return alloc_.allocate(want, hint); }

void RemoteStore::free(SwapSlot first, uint32_t count) {
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kDelete;
  for (uint64_t s = first.value; first.valid() && s < first.value + count; ++s) {
    if (s >= total_slots() || !alloc_.allocated(SwapSlot(s))) {
      alloc_.free(SwapSlot(s), 1);  // logged and counted as a double free
      continue;
    }
    clear_proof(s);  // reads get -ENODATA from now on
    op->slots.push_back(s);
  }
  if (!op->slots.empty()) submit(std::move(op));
}

template <class Pages>
void RemoteStore::check_request(Op& op, SwapSlot first, Pages pages) {
  bool bad = pages.empty() || pages.size() > kMaxPagesPerRequest ||
             !alloc_.all_allocated(first, pages.size());
  for (auto p : pages) bad |= p.size() != page_size_;
  if (bad) {
    op.err = -EINVAL;
    op.rejected = true;
  } else if (int e = inject_.take()) {
    op.err = e;
    DeviceStats::add(stats_.injected_errors);
  }
}

void RemoteStore::write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) {
  DeviceStats::add(stats_.write_requests);
  auto op = std::make_unique<Op>();
  op->first = first.value;
  op->owner = owner;
  op->done = std::move(done);
  check_request(*op, first, pages);
  if (op->err == 0) {
    op->sealed.resize(pages.size() * page_size_);
    op->proofs.resize(pages.size());
    for (size_t i = 0; i < pages.size(); ++i) {
      SealBinding b{
          .where = where(op->first + i), .file = owner.page(i).file, .index = owner.page(i).index};
      if (!sealer_->seal(b, pages[i], {op->sealed.data() + i * page_size_, page_size_},
                         &op->proofs[i].tag)) {
        op->err = -EIO;
        op->rejected = true;
        break;
      }
      op->proofs[i].sum_or_version = b.version;
    }
  }
  submit(std::move(op));
}

void RemoteStore::write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                               uint64_t block_mask, unsigned block_shift, IoDone done) {
  const bool bad = page.size() != page_size_ || !slot.valid() || slot.value >= total_slots() ||
                   !alloc_.allocated(slot) ||
                   !valid_block_mask(page_size_, block_mask, block_shift);
  int err = bad ? -EINVAL : !has_data(slot.value) ? -ENODATA : 0;
  if (err == 0 && block_mask != 0) {
    write(slot, {&page, 1}, owner, std::move(done));
    return;
  }
  DeviceStats::add(stats_.write_requests);
  auto op = std::make_unique<Op>();
  op->first = slot.value;
  op->err = err;
  op->rejected = true;  // nothing to do, or nothing it may do
  op->done = std::move(done);
  submit(std::move(op));
}

void RemoteStore::read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) {
  DeviceStats::add(stats_.read_requests);
  auto op = std::make_unique<Op>();
  op->kind = Op::Kind::kRead;
  op->first = first.value;
  op->owner = owner;
  op->done = std::move(done);
  op->pages.assign(pages.begin(), pages.end());
  check_request(*op, first, pages);
  submit(std::move(op));
}

void RemoteStore::submit(std::unique_ptr<Op> op) {
  if (op->kind != Op::Kind::kDelete) {
    DeviceStats::add(stats_.ios_submitted);
    if (op->pages.size() > 1) DeviceStats::add(stats_.multi_page_ios);
    stats_.io_started();
  }
  {
    MutexLock lk(mu_);
    if (IoBatch::plugged(this)) {
      held_.push_back(std::move(op));
      return;
    }
    for (auto& h : held_) queue_.push_back(std::move(h));
    held_.clear();
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
}

void RemoteStore::flush() {
  {
    MutexLock lk(mu_);
    if (held_.empty()) return;
    for (auto& h : held_) queue_.push_back(std::move(h));
    held_.clear();
  }
  cv_.notify_all();
}

void RemoteStore::worker(std::stop_token stop) {
  pthread_setname_np(pthread_self(), "remote-io");  // how stack dumps and /proc/PID/task name it
  std::vector<Conn> conns(opt_.servers.size());
  for (size_t s = 0; s < conns.size(); ++s) {
    memcached_st* st = memcached_create(nullptr);
    if (!st) continue;
    memcached_server_add(st, opt_.servers[s].host.c_str(), opt_.servers[s].port);
    const uint64_t ms = static_cast<uint64_t>(opt_.timeout.count());
    memcached_behavior_set(st, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(st, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms);
    memcached_behavior_set(st, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms);
    memcached_behavior_set(st, MEMCACHED_BEHAVIOR_SND_TIMEOUT, ms * kUsPerMs);
    memcached_behavior_set(st, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, ms * kUsPerMs);
    // Our own health (failed()) decides when to try a server again.
    memcached_behavior_set(st, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 0);
    conns[s].st = st;
    conns[s].pipe =
        std::make_unique<MemcachedPipe>(opt_.servers[s].host, opt_.servers[s].port, opt_.timeout);
  }
  std::vector<std::unique_ptr<Op>> batch;
  for (;;) {
    {
      UniqueLock lk(mu_);
      cv_.wait(lk.native(), stop, [&]() REQUIRES(mu_) { return !queue_.empty(); });
      if (queue_.empty()) return;  // stopped, and nothing left to do
      // A fair share, so that the other I/O threads' connections carry
      // the rest of a large batch at the same time; but never less than
      // kMinShare, so that reads queued a few at a time still meet in one
      // multi-get rather than one each on every thread.
      const size_t share = std::min(
          kBatchOps, std::max(kMinShare, (queue_.size() + opt_.threads - 1) / opt_.threads));
      while (!queue_.empty() && batch.size() < share) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    std::vector<Op*> writes, reads, deletes;
    for (auto& op : batch) {
      if (op->rejected || op->err != 0) continue;
      (op->kind == Op::Kind::kWrite  ? writes
       : op->kind == Op::Kind::kRead ? reads
                                     : deletes)
          .push_back(op.get());
    }
    perform_writes(conns, writes);
    perform_reads(conns, reads);
    perform_deletes(conns, deletes);
    for (auto& op : batch) {
      if (op->kind == Op::Kind::kDelete) continue;
      stats_.io_finished();
      if (op->err != 0) {
        DeviceStats::add(stats_.errors);
        if (op->kind == Op::Kind::kRead && !op->rejected)
          for (auto p : op->pages) std::memset(p.data(), 0, p.size());
      } else if (!op->pages.empty() || !op->sealed.empty()) {
        const uint64_t n = op->kind == Op::Kind::kRead ? op->pages.size() : op->proofs.size();
        DeviceStats::add(op->kind == Op::Kind::kRead ? stats_.bytes_read : stats_.bytes_written,
                         n * page_size_);
      }
      op->done(op->err);
    }
    batch.clear();
  }
}

void RemoteStore::perform_writes(std::vector<Conn>& conns, std::span<Op* const> ops) {
  const unsigned n = static_cast<unsigned>(conns.size());
  // Which servers take each page's copies: the first copies_ that are up,
  // from the slot's home server on. Every copy of the batch bound for one
  // server then goes out in one pipeline (MemcachedPipe).
  struct Copy {
    Op* op;
    size_t i;
  };
  std::vector<std::vector<Copy>> to(n);
  std::vector<std::vector<uint32_t>> masks(ops.size());
  std::vector<std::string> keys;
  for (size_t o = 0; o < ops.size(); ++o) {
    Op* op = ops[o];
    masks[o].assign(op->proofs.size(), 0);
    for (size_t i = 0; i < op->proofs.size() && op->err == 0; ++i) {
      const uint64_t slot = op->first + i;
      unsigned got = 0;
      for (unsigned j = 0; j < n && got < copies_; ++j) {
        const unsigned s = (home(slot) + j) % n;
        if (!up(s) || !conns[s].pipe) continue;
        masks[o][i] |= uint32_t{1} << s;
        to[s].push_back({op, i});
        ++got;
      }
      if (got < copies_) op->err = -EHOSTDOWN;  // too few servers up
    }
  }
  std::vector<MemcachedPipe::Set> sets;
  std::vector<int> results;
  for (unsigned s = 0; s < n; ++s) {
    if (to[s].empty()) continue;
    keys.clear();
    sets.clear();
    for (const Copy& c : to[s]) keys.push_back(key(SwapSlot(c.op->first + c.i)));
    for (size_t x = 0; x < to[s].size(); ++x) {
      const Copy& c = to[s][x];
      sets.push_back({keys[x], {c.op->sealed.data() + c.i * page_size_, page_size_}});
    }
    results.assign(sets.size(), 0);
    uint64_t windows = 0;
    const bool connected = conns[s].pipe->set_all(sets, results, &windows);
    round_trips_.fetch_add(windows, std::memory_order_relaxed);
    bool full = false, bad = !connected;
    for (size_t x = 0; x < to[s].size(); ++x) {
      if (results[x] == 0) continue;
      full |= results[x] == -ENOSPC;
      bad |= results[x] == -EIO;
      Op* op = to[s][x].op;
      if (op->err == 0) op->err = results[x];
    }
    if (bad || full) {
      failed(s, !bad);
      spdlog::debug("remote: sets on {}:{} failed: {}", opt_.servers[s].host, opt_.servers[s].port,
                    !connected ? "connection lost"
                    : bad      ? "server error"
                               : "out of memory");
    }
  }
  for (size_t o = 0; o < ops.size(); ++o) {
    Op* op = ops[o];
    for (size_t i = 0; i < op->proofs.size(); ++i) {
      const uint64_t slot = op->first + i;
      // Copies a rewrite no longer uses are deleted, so that a read never
      // meets them (they could not open, but would count as tampering).
      const uint32_t mask = masks[o][i];
      const uint32_t old = holders_[slot].exchange(mask, std::memory_order_relaxed);
      for (uint32_t stale = old & ~mask; stale != 0; stale &= stale - 1) {
        const unsigned s = static_cast<unsigned>(std::countr_zero(stale));
        if (!up(s) || !conns[s].st) continue;
        const std::string k = key(SwapSlot(slot));
        round_trips_.fetch_add(1, std::memory_order_relaxed);
        (void)memcached_delete(conns[s].st, k.data(), k.size(), 0);
      }
      if (op->err == 0)
        seals_.set(slot, op->proofs[i].sum_or_version, op->proofs[i].tag);
      else
        clear_proof(slot);  // a failed write leaves its slots without data
    }
  }
}

void RemoteStore::perform_reads(std::vector<Conn>& conns, std::span<Op* const> ops) {
  struct Item {
    Op* op;
    size_t i;
    uint64_t slot;
    uint64_t version;
    uint32_t untried;  // holders not asked yet
    bool done = false;
  };
  std::vector<Item> items;
  for (Op* op : ops) {
    for (size_t i = 0; i < op->pages.size(); ++i) {
      const uint64_t slot = op->first + i;
      const uint64_t v = seals_.version(slot);
      if (v == 0) {
        op->err = -ENODATA;
        break;
      }
      items.push_back({op, i, slot, v, holders_[slot].load(std::memory_order_relaxed)});
    }
  }
  const unsigned n = static_cast<unsigned>(conns.size());
  std::vector<std::vector<size_t>> by_server(n);
  std::vector<std::string> keys;
  std::vector<const char*> key_ptrs;
  std::vector<size_t> key_lens;
  std::unordered_map<std::string_view, size_t> wanted;
  for (unsigned round = 0; round < n; ++round) {
    bool any = false;
    for (auto& v : by_server) v.clear();
    for (size_t x = 0; x < items.size(); ++x) {
      Item& it = items[x];
      if (it.done || it.op->err != 0) continue;
      // The slot's next copy, from its home server on, on a server up.
      for (unsigned j = 0; j < n; ++j) {
        const unsigned s = (home(it.slot) + j) % n;
        if (!(it.untried >> s & 1)) continue;
        it.untried &= ~(uint32_t{1} << s);
        if (!up(s) || !conns[s].st) continue;
        by_server[s].push_back(x);
        any = true;
        break;
      }
    }
    if (!any) break;
    for (unsigned s = 0; s < n; ++s) {
      if (by_server[s].empty()) continue;
      keys.clear();
      key_ptrs.clear();
      key_lens.clear();
      wanted.clear();
      for (size_t x : by_server[s]) keys.push_back(key(SwapSlot(items[x].slot)));
      for (size_t y = 0; y < keys.size(); ++y) {
        key_ptrs.push_back(keys[y].data());
        key_lens.push_back(keys[y].size());
        wanted.emplace(keys[y], by_server[s][y]);
      }
      memcached_st* st = conns[s].st;
      round_trips_.fetch_add(1, std::memory_order_relaxed);
      memcached_return_t rc = memcached_mget(st, key_ptrs.data(), key_lens.data(), keys.size());
      bool ok = memcached_success(rc);
      while (ok) {
        memcached_result_st* r = memcached_fetch_result(st, nullptr, &rc);
        if (r == nullptr) {
          ok = rc == MEMCACHED_END || rc == MEMCACHED_SUCCESS || rc == MEMCACHED_NOTFOUND;
          break;
        }
        auto w = wanted.find(
            std::string_view(memcached_result_key_value(r), memcached_result_key_length(r)));
        if (w != wanted.end()) {
          Item& it = items[w->second];
          std::span<std::byte> page = it.op->pages[it.i];
          bool opened = false;
          if (memcached_result_length(r) == page_size_) {
            std::memcpy(page.data(), memcached_result_value(r), page_size_);
            const PageOwner o = it.op->owner.page(it.i);
            SealBinding b{
                .where = where(it.slot), .file = o.file, .index = o.index, .version = it.version};
            opened = sealer_->open(b, page, seals_.tag(it.slot));
          }
          if (opened) {
            it.done = true;
          } else {
            std::memset(page.data(), 0, page.size());
            seal_failures_.fetch_add(1, std::memory_order_relaxed);
            DeviceStats::add(stats_.checksum_failures);
            spdlog::error("remote: the value of {} on {}:{} does not open (tampered or stale)",
                          w->first, opt_.servers[s].host, opt_.servers[s].port);
          }
        }
        memcached_result_free(r);
      }
      if (!ok) {
        failed(s, false);
        drop_connection(st);
        spdlog::debug("remote: multi-get on {}:{} failed: {}", opt_.servers[s].host,
                      opt_.servers[s].port, memcached_strerror(st, rc));
      }
    }
  }
  for (Item& it : items)
    if (!it.done && it.op->err == 0) it.op->err = -EIO;  // every copy gone or bad
}

void RemoteStore::perform_deletes(std::vector<Conn>& conns, std::span<Op* const> ops) {
  for (Op* op : ops) {
    for (uint64_t slot : op->slots) {
      const std::string k = key(SwapSlot(slot));
      for (uint32_t m = holders_[slot].exchange(0, std::memory_order_relaxed); m != 0; m &= m - 1) {
        const unsigned s = static_cast<unsigned>(std::countr_zero(m));
        if (!up(s) || !conns[s].st) continue;  // it took the copy with it
        round_trips_.fetch_add(1, std::memory_order_relaxed);
        const memcached_return_t rc = memcached_delete(conns[s].st, k.data(), k.size(), 0);
        if (!memcached_success(rc) && rc != MEMCACHED_NOTFOUND) {
          failed(s, false);
          drop_connection(conns[s].st);
        }
      }
      alloc_.free(SwapSlot(slot), 1);  // reusable now that no delete can follow a new write
    }
  }
}

}  // namespace tmpfsd::swapdev
