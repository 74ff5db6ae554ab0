// bench-swapdev: swapdev against fio on the same directory and sizes.
//
// Rows: random 4 KiB writes and reads at queue depth 1 and 32, and clustered
// sequential 1 MiB transfers (one run of 256 consecutive slots per I/O) at
// depth 4. swapdev runs a closed loop: each completion callback submits the
// next request, so exactly `depth` requests are in flight, as fio's io_uring
// engine keeps them. Both sides use O_DIRECT, a registered file and
// registered buffers. The swap file is written in full before timing, as fio
// lays out its file, so neither side measures unwritten-extent conversion.
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "swapdev/uring_swap_device.h"

using namespace tmpfsd::swapdev;
using Clock = std::chrono::steady_clock;

namespace {

struct Row {
  std::string name;  // also the fio job name
  bool write;
  bool sequential;
  uint32_t pages;        // per I/O
  unsigned depth;        // in flight per submitting thread
  unsigned threads = 0;  // 0: closed loop driven by the completion callbacks;
                         // n: n threads submit, callbacks only hand back
};

const std::vector<Row> kRows = {
    {"randwrite-4k-qd1", true, false, 1, 1},
    {"randread-4k-qd1", false, false, 1, 1},
    {"randwrite-4k-qd32", true, false, 1, 32},
    {"randread-4k-qd32", false, false, 1, 32},
    {"seqwrite-1m-qd4", true, true, 256, 4},
    {"seqread-1m-qd4", false, true, 256, 4},
    // Many submitters at once (FUSE workers): the SQ lock under contention.
    {"randwrite-4k-4x8", true, false, 1, 8, 4},
    {"randread-4k-4x8", false, false, 1, 8, 4},
};

struct Result {
  double iops = 0;
  double mib_s = 0;
};

// --- swapdev side ----------------------------------------------------------

class Runner {
 public:
  Runner(UringSwapDevice& dev, std::vector<SwapSlot> runs, std::byte* mem, uint32_t pages_per_run)
      : dev_(dev), runs_(std::move(runs)), mem_(mem), ppr_(pages_per_run) {}

  Result run(const Row& row, double seconds) {
    if (row.threads) return run_threads(row, seconds);
    row_ = &row;
    stop_at_ = Clock::now() +
               std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    done_ios_ = 0;
    errors_ = 0;
    inflight_ = row.depth;
    auto t0 = Clock::now();
    for (unsigned slot = 0; slot < row.depth; ++slot) issue(slot, slot);
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return inflight_ == 0; });
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (errors_) spdlog::error("bench: {} I/O errors in {}", errors_.load(), row.name);
    Result r;
    r.iops = static_cast<double>(done_ios_) / secs;
    r.mib_s = r.iops * row.pages * dev_.page_size() / (1024.0 * 1024.0);
    return r;
  }

  // `threads` submitters, each keeping `depth` requests in flight; the
  // callback returns the buffer. A submitter waits for a free buffer in
  // dev_.wait_until(), reaping completions itself as a fio job does, or
  // (--wait cv) on a condition variable the callback notifies, the
  // completion thread running every callback.
  Result run_threads(const Row& row, double seconds) {
    auto stop = Clock::now() +
                std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    std::atomic<uint64_t> done{0}, errors{0};
    size_t ps = dev_.page_size();
    auto t0 = Clock::now();
    std::vector<std::jthread> ts;
    for (unsigned t = 0; t < row.threads; ++t)
      ts.emplace_back([&, t] {
        std::mutex mu;
        std::condition_variable cv;
        std::vector<unsigned> free_lanes;  // guarded by mu
        for (unsigned k = 0; k < row.depth; ++k) free_lanes.push_back(t * row.depth + k);
        std::mt19937_64 rng(t + 99);
        uint64_t total = runs_.size() * ppr_;
        while (Clock::now() < stop) {
          unsigned lane;
          if (reap_) {
            dev_.wait_until([&] {
              std::lock_guard lk(mu);
              return !free_lanes.empty();
            });
          }
          {
            std::unique_lock lk(mu);
            cv.wait(lk, [&] { return !free_lanes.empty(); });
            lane = free_lanes.back();
            free_lanes.pop_back();
          }
          uint64_t page = rng() % total;
          SwapSlot slot = runs_[page / ppr_] + page % ppr_;
          std::byte* buf = mem_ + uint64_t{lane} * ppr_ * ps;
          auto cb = [&, lane](int err) {
            if (err) ++errors;
            ++done;
            std::lock_guard lk(mu);
            free_lanes.push_back(lane);
            cv.notify_one();
          };
          if (row.write) {
            std::span<const std::byte> pg(buf, ps);
            dev_.write(slot, {&pg, 1}, cb);
          } else {
            std::span<std::byte> pg(buf, ps);
            dev_.read(slot, {&pg, 1}, cb);
          }
        }
        if (reap_) {
          dev_.wait_until([&] {
            std::lock_guard lk(mu);
            return free_lanes.size() == row.depth;
          });
        }
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return free_lanes.size() == row.depth; });
      });
    ts.clear();  // joins
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (errors) spdlog::error("bench: {} I/O errors in {}", errors.load(), row.name);
    Result r;
    r.iops = static_cast<double>(done) / secs;
    r.mib_s = r.iops * row.pages * ps / (1024.0 * 1024.0);
    return r;
  }

  void set_reap(bool reap) { reap_ = reap; }

  // Writes every run once so reads find data and writes find allocated blocks.
  bool prefill() {
    Row fill{"fill", true, true, ppr_, 4};
    row_ = &fill;
    stop_at_ = Clock::time_point::max();
    seq_ = 0;
    fill_limit_ = runs_.size();
    inflight_ = fill.depth;
    for (unsigned i = 0; i < fill.depth; ++i) issue(i, i);
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return inflight_ == 0; });
    fill_limit_ = SIZE_MAX;
    return errors_ == 0;
  }

 private:
  // One request of the closed loop; `lane` picks its buffer.
  void issue(unsigned lane, uint64_t n) {
    const Row& row = *row_;
    SwapSlot first;
    if (row.sequential) {
      uint64_t k = seq_.fetch_add(1);
      if (k >= fill_limit_) return retire();
      first = runs_[k % runs_.size()];
    } else {
      thread_local std::mt19937_64 rng(n * 7919 + 1);
      uint64_t total = runs_.size() * ppr_;
      uint64_t page = rng() % total;
      first = runs_[page / ppr_] + page % ppr_;
    }
    std::byte* buf = mem_ + uint64_t{lane} * ppr_ * dev_.page_size();
    auto done = [this, lane, n](int err) {
      if (err) ++errors_;
      ++done_ios_;
      if (Clock::now() >= stop_at_) return retire();
      issue(lane, n + row_->depth);
    };
    size_t ps = dev_.page_size();
    if (row.write) {
      std::vector<std::span<const std::byte>> pages;
      for (uint32_t i = 0; i < row.pages; ++i) pages.emplace_back(buf + i * ps, ps);
      dev_.write(first, pages, done);
    } else {
      std::vector<std::span<std::byte>> pages;
      for (uint32_t i = 0; i < row.pages; ++i) pages.emplace_back(buf + i * ps, ps);
      dev_.read(first, pages, done);
    }
  }
  void retire() {
    std::lock_guard lk(mu_);
    if (--inflight_ == 0) cv_.notify_all();
  }

  UringSwapDevice& dev_;
  std::vector<SwapSlot> runs_;
  std::byte* mem_;
  uint32_t ppr_;
  const Row* row_ = nullptr;
  Clock::time_point stop_at_;
  std::atomic<uint64_t> done_ios_{0}, errors_{0}, seq_{0};
  uint64_t fill_limit_ = SIZE_MAX;
  std::mutex mu_;
  std::condition_variable cv_;
  unsigned inflight_ = 0;  // guarded by mu_
  bool reap_ = true;       // run_threads waits in wait_until()
};

// --- fio side ----------------------------------------------------------------

// Just enough JSON to read fio's report: objects, arrays, strings, numbers.
struct Json {
  std::map<std::string, Json> obj;
  std::vector<Json> arr;
  std::string str;
  double num = 0;

  const Json& operator[](const std::string& k) const {
    static const Json none;
    auto it = obj.find(k);
    return it == obj.end() ? none : it->second;
  }
};

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}
  bool parse(Json& out) { return value(out); }

 private:
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  bool value(Json& v) {
    ws();
    if (i_ >= s_.size()) return false;
    char c = s_[i_];
    if (c == '{') {
      ++i_;
      for (;;) {
        ws();
        if (s_[i_] == '}') return ++i_, true;
        std::string k;
        if (!string(k)) return false;
        ws();
        if (s_[i_++] != ':') return false;
        if (!value(v.obj[k])) return false;
        ws();
        if (s_[i_] == ',') ++i_;
      }
    }
    if (c == '[') {
      ++i_;
      for (;;) {
        ws();
        if (s_[i_] == ']') return ++i_, true;
        v.arr.emplace_back();
        if (!value(v.arr.back())) return false;
        ws();
        if (s_[i_] == ',') ++i_;
      }
    }
    if (c == '"') return string(v.str);
    size_t start = i_;
    while (i_ < s_.size() && std::strchr(",}] \n\t\r", s_[i_]) == nullptr) ++i_;
    v.num = std::strtod(s_.substr(start, i_ - start).c_str(), nullptr);
    return i_ > start;
  }
  bool string(std::string& out) {
    if (s_[i_] != '"') return false;
    for (++i_; i_ < s_.size() && s_[i_] != '"'; ++i_) {
      if (s_[i_] == '\\') ++i_;
      out += s_[i_];
    }
    ++i_;
    return true;
  }
  const std::string& s_;
  size_t i_ = 0;
};

// Runs fio with the given jobs (after the [global] section) and returns each
// job's figures by name.
std::map<std::string, Result> run_fio(const std::string& file, uint64_t size, double seconds,
                                      const std::string& jobs, std::string& err) {
  std::map<std::string, Result> out;
  std::string jobfile = fmt::format("/tmp/bench-swapdev-{}.fio", ::getpid());
  FILE* jf = std::fopen(jobfile.c_str(), "w");
  if (!jf) {
    err = "cannot write the fio job file";
    return out;
  }
  fmt::print(jf,
             "[global]\nioengine=io_uring\ndirect=1\nfilename={}\nsize={}\ntime_based=1\n"
             "runtime={}ms\nrandrepeat=0\nnorandommap=1\nregisterfiles=1\nfixedbufs=1\n"
             "thread=1\n{}",
             file, size, static_cast<long>(seconds * 1000), jobs);
  std::fclose(jf);
  std::string cmd = fmt::format("fio --output-format=json {} 2>&1", jobfile);
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string text;
  char buf[65536];
  for (size_t n; p && (n = std::fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, n);
  int status = p ? ::pclose(p) : -1;
  std::remove(jobfile.c_str());
  size_t brace = text.find('{');  // fio may print notes before the JSON
  Json root;
  if (status != 0 || brace == std::string::npos || !JsonParser(text.substr(brace)).parse(root)) {
    err = fmt::format("fio failed (status {}): {}", status, text.substr(0, 400));
    return out;
  }
  for (const Json& job : root["jobs"].arr) {
    if (job["error"].num != 0) err = fmt::format("fio job {} failed", job["jobname"].str);
    const std::string& name = job["jobname"].str;
    bool w = name.find("write") != std::string::npos || name == "fill";
    const Json& side = job[w ? "write" : "read"];
    out[name] = {side["iops"].num, side["bw"].num / 1024.0};  // bw is KiB/s
  }
  return out;
}

std::string fio_job(const Row& r) {
  std::string job = fmt::format(
      "[{}]\nrw={}\nbs={}\niodepth={}\n", r.name,
      r.sequential ? (r.write ? "write" : "read") : (r.write ? "randwrite" : "randread"),
      r.pages * 4096, r.depth);
  if (r.threads) job += fmt::format("numjobs={}\ngroup_reporting=1\n", r.threads);
  return job;
}

uint64_t parse_size(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  switch (end && *end ? std::toupper(*end) : 0) {
    case 'K':
      v *= 1024;
      break;
    case 'M':
      v *= 1024 * 1024;
      break;
    case 'G':
      v *= 1024.0 * 1024 * 1024;
      break;
    default:
      break;
  }
  return static_cast<uint64_t>(v);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"swapdev vs fio: random 4 KiB and sequential 1 MiB, O_DIRECT via io_uring"};
  std::string dir = "/var/tmp";
  std::string size_s = "1G";
  double seconds = 0.8;
  int rounds = 3;
  bool no_fio = false;
  std::string only;
  std::string wait = "reap";
  app.add_option("--dir", dir, "directory for the swap file and fio's file (not a tmpfs)");
  app.add_option("--size", size_s, "bytes of each file, e.g. 512M, 1G");
  app.add_option("--runtime", seconds, "seconds per row, side and round");
  app.add_option("--rounds", rounds, "alternating runs per row; the best counts");
  app.add_flag("--no-fio", no_fio, "measure swapdev only");
  app.add_option("--only", only, "run only the rows whose name contains this");
  app.add_option("--wait", wait,
                 "how the threaded rows wait: reap (in wait_until, reaping) or cv (a "
                 "condition variable; the completion thread runs the callbacks)")
      ->check(CLI::IsMember({"reap", "cv"}));
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  uint64_t size = parse_size(size_s) / (1 << 20) * (1 << 20);
  UringOpenResult o = open_uring_swap_device({.dir = dir, .size_bytes = size, .queue_depth = 64});
  if (o.err) {
    fmt::print(stderr, "bench-swapdev: {}\n", o.error);
    return 1;
  }
  UringSwapDevice& dev = *o.device;
  const uint32_t ppr = 256;
  std::vector<SwapSlot> runs;
  for (SlotRun r; (r = dev.allocate(ppr)).count == ppr;) runs.push_back(r.first);
  size_t lanes = 32;
  size_t mem_len = lanes * ppr * dev.page_size();
  auto* mem = static_cast<std::byte*>(std::aligned_alloc(4096, mem_len));
  std::memset(mem, 0xa5, mem_len);
  if (int r = dev.register_memory(mem, mem_len); r < 0)
    fmt::print(stderr, "bench-swapdev: no fixed buffers ({})\n", std::strerror(-r));

  Runner runner(dev, runs, mem, ppr);
  runner.set_reap(wait == "reap");
  fmt::print("bench-swapdev: {} MiB in {} ({}), best of {} x {:.2f} s per row and side\n",
             size >> 20, dir, dev.direct_io() ? "O_DIRECT" : "buffered", rounds, seconds);
  if (!runner.prefill()) {
    fmt::print(stderr, "bench-swapdev: prefill failed\n");
    return 1;
  }
  // fio's file is written in full first, as the swap file was: reads of a
  // fallocated but never written range return zeros without touching the
  // disk, and writes into it pay for extent conversion.
  std::string fio_file = dir + "/bench-swapdev-fio.dat";
  std::string err;
  if (!no_fio) {
    run_fio(fio_file, size, seconds,
            "[fill]\nrw=write\nbs=1M\niodepth=4\ntime_based=0\nruntime=0\n", err);
    if (!err.empty()) {
      fmt::print(stderr, "bench-swapdev: {}\n", err);
      no_fio = true;
    }
  }
  // Rows alternate between the two sides, `rounds` times, and the best run
  // of each side counts: load from elsewhere on the machine then hits both
  // alike instead of deciding the ratio. The disk is shared and its speed
  // drifts by tens of percent from one minute to the next, so the ratio of
  // each round's pair (taken seconds apart) is kept too; their median is the
  // steadier figure.
  std::map<std::string, Result> mine, fio;
  std::map<std::string, std::vector<double>> pair_ratios;
  for (const Row& r : kRows) {
    if (r.name.find(only) == std::string::npos) continue;
    for (int round = 0; round < rounds; ++round) {
      Result a = runner.run(r, seconds);
      if (a.iops > mine[r.name].iops) mine[r.name] = a;
      if (no_fio) continue;
      auto got = run_fio(fio_file, size, seconds, fio_job(r), err);
      if (!err.empty()) fmt::print(stderr, "bench-swapdev: {}\n", err);
      if (got[r.name].iops > fio[r.name].iops) fio[r.name] = got[r.name];
      if (got[r.name].iops > 0) pair_ratios[r.name].push_back(a.iops / got[r.name].iops);
    }
  }
  std::remove(fio_file.c_str());
  SwapCounters c = dev.counters();
  o.device.reset();
  std::free(mem);

  fmt::print("\n| {:<18} | {:>14} | {:>14} | {:>10} | {:>10} | {:>6} | {:>12} |\n", "row",
             "swapdev IOPS", "fio IOPS", "swapdev MiB/s", "fio MiB/s", "ratio", "median pair");
  fmt::print("|{:-<20}|{:->16}|{:->16}|{:->12}|{:->12}|{:->8}|{:->14}|\n", "", "", "", "", "", "",
             "");
  for (const Row& r : kRows) {
    Result a = mine[r.name];
    Result b = fio.count(r.name) ? fio[r.name] : Result{};
    std::vector<double>& pr = pair_ratios[r.name];
    std::sort(pr.begin(), pr.end());
    std::string med = pr.empty() ? "-"
                      : pr.size() % 2
                          ? fmt::format("{:.2f}x", pr[pr.size() / 2])
                          : fmt::format("{:.2f}x", (pr[pr.size() / 2 - 1] + pr[pr.size() / 2]) / 2);
    fmt::print("| {:<18} | {:>14.0f} | {:>14.0f} | {:>12.1f} | {:>10.1f} | {:>6} | {:>12} |\n",
               r.name, a.iops, b.iops, a.mib_s, b.mib_s,
               b.iops > 0 ? fmt::format("{:.2f}x", a.iops / b.iops) : "-", med);
  }
  fmt::print(
      "\nswapdev: {} I/Os, {} retries, {} errors, {} checksum failures, {} fixed-buffer I/Os, "
      "max queue depth {}\n",
      c.ios_submitted, c.retries, c.errors, c.checksum_failures, c.fixed_ios, c.max_queue_depth);
  return c.errors == 0 && c.checksum_failures == 0 ? 0 : 1;
}
