// bench-memcached: memcached's own throughput for 4 KiB values through
// libmemcached, with the batching RemoteStore (swapdev/remote_store.h)
// uses, as the baseline of tools/bench-reclaim --remote-compare:
//   set      one set per value, one round trip each, THREADS connections
//   pset     the same sets pipelined as RemoteStore sends a writeback pass
//            (swapdev/memcached_pipe.h: 64 a round trip), THREADS connections
//   get      multi-gets of BATCH random keys, THREADS connections
//   seal     the remote tier's seal (swapdev/seal.h, AES-256-GCM) of a 4 KiB
//            page and its open, one thread, no network: what sealing adds
//            to each page the pool moves
// Prints one line: "set_MBps get_pages_per_s set_us get_us seal_us open_us
// pset_MBps" (MB = 1e6 bytes): the two rates; one set's round trip on one connection
// (the set phase's time x THREADS / PAGES) and one page's share of a
// multi-get (get phase's time x THREADS / pages got), in microseconds;
// one seal and one open, in microseconds; the pipelined sets' rate.
//
// Usage: bench-memcached HOST:PORT [PAGES (65536)] [THREADS (2)] [BATCH (32)]
//        [SECONDS of gets (5)]
#include <libmemcached-1.0/memcached.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "swapdev/memcached_pipe.h"
#include "swapdev/seal.h"

namespace {

memcached_st* connect(const std::string& host, unsigned port) {
  memcached_st* st = memcached_create(nullptr);
  memcached_server_add(st, host.c_str(), port);
  memcached_behavior_set(st, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
  return st;
}

std::string key(uint64_t i) { return "bench:" + std::to_string(i); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench-memcached HOST:PORT [PAGES] [THREADS] [BATCH] [SECONDS]\n");
    return 2;
  }
  const std::string hp = argv[1];
  const size_t colon = hp.rfind(':');
  const std::string host = hp.substr(0, colon);
  const unsigned port = colon == std::string::npos ? 11211 : std::stoul(hp.substr(colon + 1));
  const uint64_t pages = argc > 2 ? std::stoull(argv[2]) : 65536;
  const unsigned threads = argc > 3 ? std::stoul(argv[3]) : 2;
  const unsigned batch = argc > 4 ? std::stoul(argv[4]) : 32;
  const double seconds = argc > 5 ? std::stod(argv[5]) : 5;
  using clock = std::chrono::steady_clock;
  std::atomic<uint64_t> failed{0};

  std::vector<std::thread> ts;
  const auto t0 = clock::now();
  for (unsigned t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      memcached_st* st = connect(host, port);
      std::string value(4096, 'v');
      for (uint64_t i = t; i < pages; i += threads) {
        const std::string k = key(i);
        value[0] = char(i);
        if (!memcached_success(
                memcached_set(st, k.data(), k.size(), value.data(), value.size(), 0, 0)))
          failed.fetch_add(1);
      }
      memcached_free(st);
    });
  }
  for (auto& t : ts) t.join();
  const double set_s = std::chrono::duration<double>(clock::now() - t0).count();
  ts.clear();

  const auto tp = clock::now();
  for (unsigned t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      tmpfsd::swapdev::MemcachedPipe pipe(host, static_cast<uint16_t>(port),
                                          std::chrono::milliseconds(5000));
      std::vector<std::byte> value(4096, std::byte{'p'});
      std::vector<std::string> keys;
      std::vector<tmpfsd::swapdev::MemcachedPipe::Set> sets;
      std::vector<int> results;
      uint64_t windows = 0;
      for (uint64_t i = t; i < pages;) {
        keys.clear();
        sets.clear();
        for (; i < pages && keys.size() < tmpfsd::swapdev::MemcachedPipe::kWindow; i += threads)
          keys.push_back("p" + key(i));
        for (const auto& k : keys) sets.push_back({k, value});
        results.assign(sets.size(), 0);
        if (!pipe.set_all(sets, results, &windows)) failed.fetch_add(1);
        for (int r : results) failed.fetch_add(r != 0);
      }
    });
  }
  for (auto& t : ts) t.join();
  const double pset_s = std::chrono::duration<double>(clock::now() - tp).count();
  ts.clear();

  std::atomic<uint64_t> got{0};
  const auto t1 = clock::now();
  const auto end = t1 + std::chrono::duration<double>(seconds);
  for (unsigned t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      memcached_st* st = connect(host, port);
      std::mt19937_64 rng(t + 1);
      std::vector<std::string> keys(batch);
      std::vector<const char*> ptrs(batch);
      std::vector<size_t> lens(batch);
      while (clock::now() < end) {
        for (unsigned b = 0; b < batch; ++b) {
          keys[b] = key(rng() % pages);
          ptrs[b] = keys[b].data();
          lens[b] = keys[b].size();
        }
        memcached_return_t rc = memcached_mget(st, ptrs.data(), lens.data(), batch);
        if (!memcached_success(rc)) {
          failed.fetch_add(1);
          continue;
        }
        while (memcached_result_st* r = memcached_fetch_result(st, nullptr, &rc)) {
          if (memcached_result_length(r) == 4096) got.fetch_add(1, std::memory_order_relaxed);
          memcached_result_free(r);
        }
      }
      memcached_free(st);
    });
  }
  for (auto& t : ts) t.join();
  const double get_s = std::chrono::duration<double>(clock::now() - t1).count();

  // The seal, as RemoteStore::write() and perform_reads() call it.
  using tmpfsd::swapdev::SealBinding;
  using tmpfsd::swapdev::Sealer;
  using tmpfsd::swapdev::SealTag;
  std::string why;
  auto sealer = Sealer::create(&why);
  if (!sealer) {
    std::fprintf(stderr, "bench-memcached: %s\n", why.c_str());
    return 1;
  }
  std::vector<SealBinding> bindings(4096);
  std::vector<std::byte> page(4096, std::byte{'v'}), sealed(bindings.size() * 4096);
  std::vector<SealTag> tags(bindings.size());
  const int rounds = 32;  // x 4096 pages: about 0.3 s
  double seal_s = 0, open_s = 0;
  for (int r = 0; r < rounds; ++r) {
    const auto a = clock::now();
    for (size_t i = 0; i < bindings.size(); ++i) {
      bindings[i] = {.where = i, .file = 1, .index = i};
      if (!sealer->seal(bindings[i], page, {sealed.data() + i * 4096, 4096}, &tags[i]))
        failed.fetch_add(1);
    }
    const auto b = clock::now();
    for (size_t i = 0; i < bindings.size(); ++i)
      if (!sealer->open(bindings[i], {sealed.data() + i * 4096, 4096}, tags[i]))
        failed.fetch_add(1);
    const auto c = clock::now();
    seal_s += std::chrono::duration<double>(b - a).count();
    open_s += std::chrono::duration<double>(c - b).count();
  }
  const double sealed_pages = double(rounds) * double(bindings.size());

  if (failed.load() != 0) std::fprintf(stderr, "bench-memcached: %lu failures\n", failed.load());
  const double got_pages = std::max<double>(1, double(got.load()));
  std::printf("%.0f %.0f %.1f %.2f %.2f %.2f %.0f\n", double(pages) * 4096 / set_s / 1e6,
              double(got.load()) / get_s, set_s * threads / double(pages) * 1e6,
              get_s * threads / got_pages * 1e6, seal_s / sealed_pages * 1e6,
              open_s / sealed_pages * 1e6, double(pages) * 4096 / pset_s / 1e6);
  return failed.load() == 0 ? 0 : 1;
}
