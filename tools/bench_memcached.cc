// bench-memcached: memcached's own throughput for 4 KiB values through
// libmemcached, with the batching RemoteStore (swapdev/remote_store.h)
// uses, as the baseline of tools/bench-reclaim --remote-compare:
//   set      one set per value, one round trip each, THREADS connections
//   get      multi-gets of BATCH random keys, THREADS connections
// Prints one line: "set_MBps get_pages_per_s" (MB = 1e6 bytes).
//
// Usage: bench-memcached HOST:PORT [PAGES (65536)] [THREADS (2)] [BATCH (32)]
//        [SECONDS of gets (5)]
#include <libmemcached-1.0/memcached.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

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
  if (failed.load() != 0) std::fprintf(stderr, "bench-memcached: %lu failures\n", failed.load());
  std::printf("%.0f %.0f\n", double(pages) * 4096 / set_s / 1e6, double(got.load()) / get_s);
  return failed.load() == 0 ? 0 : 1;
}
