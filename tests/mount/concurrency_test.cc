// Concurrency on B: 4 threads create, write, rename, read and delete in
// the same directories for a few seconds. Each thread owns a set of names
// and knows what it last wrote to each, so the end state can be checked
// exactly; a set of shared names is raced on with O_EXCL creates, renames
// and unlinks, where only ENOENT/EEXIST are acceptable failures. Afterwards
// the tree is consistent and the daemon still answers. The last case (direct
// writes racing buffered reads) runs on both sides.
#include <dirent.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "harness.h"

namespace {

constexpr int kThreads = 4;
constexpr int kDirs = 3;
constexpr int kOwnNames = 40;
constexpr int kSharedNames = 12;
constexpr auto kDuration = std::chrono::seconds(8);

struct Own {
  std::optional<std::string> content;  // nullopt: does not exist
  int dir = 0;
};

std::string read_file(const std::string& path, int* err) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    *err = errno;
    return {};
  }
  std::string out;
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      *err = errno;
      ::close(fd);
      return out;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  *err = 0;
  return out;
}

bool write_file(const std::string& path, const std::string& data, int flags) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | flags, 0644);
  if (fd < 0) return false;
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n <= 0) {
      ::close(fd);
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return ::close(fd) == 0;
}

struct Worker {
  int id;
  std::string root;
  std::map<int, Own> own;
  std::vector<std::string> errors;
  long ops = 0;
  long dup_names = 0;
  std::vector<std::string> dup_examples;

  std::string dir(int d) const { return fmt::format("{}/d{}", root, d); }
  std::string own_path(int k, int d) const { return fmt::format("{}/t{}_{}", dir(d), id, k); }
  std::string shared_path(int k) const { return fmt::format("{}/shared{}", dir(0), k); }
  void fail(const std::string& what) {
    if (errors.size() < 20) errors.push_back(fmt::format("thread {}: {}", id, what));
  }

  void run(std::chrono::steady_clock::time_point deadline) {
    std::mt19937 rng(1234 + id);
    auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
    while (std::chrono::steady_clock::now() < deadline && errors.size() < 20) {
      ++ops;
      int k = pick(kOwnNames);
      Own& o = own[k];
      switch (pick(10)) {
        case 0:
        case 1: {  // (re)write
          std::string data = fmt::format("t{} k{} op{} ", id, k, ops);
          data.append(static_cast<size_t>(pick(20000)), static_cast<char>('a' + pick(26)));
          if (!write_file(own_path(k, o.dir), data, O_TRUNC))
            fail(fmt::format("write t{}_{}: {}", id, k, std::strerror(errno)));
          else
            o.content = data;
          break;
        }
        case 2: {  // append
          if (!o.content) break;
          std::string more = fmt::format("+{}", ops);
          if (!write_file(own_path(k, o.dir), more, O_APPEND))
            fail(fmt::format("append t{}_{}: {}", id, k, std::strerror(errno)));
          else
            *o.content += more;
          break;
        }
        case 3: {  // rename to another shared directory
          if (!o.content) break;
          int to = pick(kDirs);
          if (::rename(own_path(k, o.dir).c_str(), own_path(k, to).c_str()) != 0)
            fail(fmt::format("rename t{}_{} d{}->d{}: {}", id, k, o.dir, to, std::strerror(errno)));
          else
            o.dir = to;
          break;
        }
        case 4: {  // unlink
          if (!o.content) break;
          if (::unlink(own_path(k, o.dir).c_str()) != 0)
            fail(fmt::format("unlink t{}_{}: {}", id, k, std::strerror(errno)));
          else
            o.content.reset();
          break;
        }
        case 5:
        case 6: {  // read back and verify
          int err = 0;
          std::string got = read_file(own_path(k, o.dir), &err);
          if (o.content && (err || got != *o.content))
            fail(fmt::format("read t{}_{}: err={} size {} expected {}", id, k, err, got.size(),
                             o.content->size()));
          if (!o.content && err != ENOENT)
            fail(fmt::format("t{}_{} should not exist, open gave {}", id, k, err));
          break;
        }
        case 7: {  // shared names: racing creates, renames, unlinks
          int a = pick(kSharedNames), b = pick(kSharedNames);
          int r;
          switch (pick(3)) {
            case 0: {
              int fd = ::open(shared_path(a).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
              if (fd >= 0) {
                ::close(fd);
                r = 0;
              } else
                r = -1;
              if (r != 0 && errno != EEXIST)
                fail(fmt::format("create shared{}: {}", a, std::strerror(errno)));
              break;
            }
            case 1:
              r = ::rename(shared_path(a).c_str(), shared_path(b).c_str());
              if (r != 0 && errno != ENOENT)
                fail(fmt::format("rename shared{}->{}: {}", a, b, std::strerror(errno)));
              break;
            default:
              r = ::unlink(shared_path(a).c_str());
              if (r != 0 && errno != ENOENT)
                fail(fmt::format("unlink shared{}: {}", a, std::strerror(errno)));
          }
          break;
        }
        case 8: {  // list a directory: no duplicate names
          DIR* d = ::opendir(dir(pick(kDirs)).c_str());
          if (!d) {
            fail(fmt::format("opendir: {}", std::strerror(errno)));
            break;
          }
          std::set<std::string> names;
          while (struct dirent* de = ::readdir(d))
            if (!names.insert(de->d_name).second) {
              // POSIX leaves entries added or removed during the pass
              // unspecified, and names here are reused by renames: a name
              // seen twice is counted and reported, not failed.
              ++dup_names;
              if (dup_examples.size() < 3) dup_examples.push_back(de->d_name);
            }
          ::closedir(d);
          break;
        }
        default: {  // stat and truncate
          struct stat st {};
          int r = ::stat(own_path(k, o.dir).c_str(), &st);
          if (o.content && (r != 0 || st.st_size != static_cast<off_t>(o.content->size())))
            fail(fmt::format("stat t{}_{}: r={} size {} expected {}", id, k, r, st.st_size,
                             o.content->size()));
          if (o.content && o.content->size() > 10 && pick(3) == 0) {
            size_t n = o.content->size() / 2;
            if (::truncate(own_path(k, o.dir).c_str(), static_cast<off_t>(n)) != 0)
              fail("truncate");
            else
              o.content->resize(n);
          }
        }
      }
    }
  }
};

}  // namespace

TEST_CASE("concurrency: 4 threads in the same directories of B", "[concurrency]") {
  auto& pair = mt::shared_pair();
  std::string root = pair.b->path() + "/concurrency";
  mt::remove_tree(root);
  REQUIRE(::mkdir(root.c_str(), 0755) == 0);
  for (int d = 0; d < kDirs; ++d)
    REQUIRE(::mkdir(fmt::format("{}/d{}", root, d).c_str(), 0755) == 0);

  std::vector<Worker> workers;
  for (int t = 0; t < kThreads; ++t) workers.push_back(Worker{t, root, {}, {}, 0, 0, {}});
  auto deadline = std::chrono::steady_clock::now() + kDuration;
  {
    std::vector<std::jthread> threads;
    for (auto& w : workers) threads.emplace_back([&w, deadline] { w.run(deadline); });
  }
  long total = 0, dups = 0;
  std::string dup_examples;
  for (auto& w : workers) {
    total += w.ops;
    dups += w.dup_names;
    for (auto& n : w.dup_examples) dup_examples += " " + n;
    for (auto& e : w.errors) FAIL_CHECK(e);
  }
  INFO("mode: " << mt::mode_description() << "; " << total << " operations");
  REQUIRE(pair.b->daemon_alive());

  // End state: every owned name exactly where and as its owner left it.
  std::map<int, std::set<std::string>> expected_in_dir;
  int checked = 0;
  for (auto& w : workers) {
    for (auto& [k, o] : w.own) {
      for (int d = 0; d < kDirs; ++d) {
        std::string path = w.own_path(k, d);
        int err = 0;
        std::string got = read_file(path, &err);
        if (o.content && d == o.dir) {
          ++checked;
          CHECK(err == 0);
          if (got != *o.content)
            FAIL_CHECK(path << ": content differs (" << got.size() << " bytes, expected "
                            << o.content->size() << ")");
          expected_in_dir[d].insert(fmt::format("t{}_{}", w.id, k));
        } else if (err != ENOENT) {
          FAIL_CHECK(path << " exists but should not (open: " << std::strerror(err) << ")");
        }
      }
    }
  }
  // Directory listings agree with lookups: no duplicates, no strays, and
  // every shared name listed can be stat'ed and vice versa.
  for (int d = 0; d < kDirs; ++d) {
    std::string dir = fmt::format("{}/d{}", root, d);
    DIR* dp = ::opendir(dir.c_str());
    REQUIRE(dp != nullptr);
    std::set<std::string> names;
    while (struct dirent* de = ::readdir(dp)) {
      std::string n = de->d_name;
      if (n == "." || n == "..") continue;
      CHECK(names.insert(n).second);
    }
    ::closedir(dp);
    std::set<std::string> own_names, shared_names;
    for (auto& n : names) (n.rfind("shared", 0) == 0 ? shared_names : own_names).insert(n);
    CHECK(own_names == expected_in_dir[d]);
    if (d != 0) CHECK(shared_names.empty());
    for (int k = 0; k < kSharedNames && d == 0; ++k) {
      std::string n = fmt::format("shared{}", k);
      struct stat st {};
      bool exists = ::stat((dir + "/" + n).c_str(), &st) == 0;
      CHECK(exists == (shared_names.count(n) == 1));
      if (exists) CHECK(st.st_nlink == 1);
    }
    struct stat dst {};
    REQUIRE(::stat(dir.c_str(), &dst) == 0);
    CHECK(dst.st_nlink == 2);
  }
  CHECK(checked > 0);
  // Still answers, and the tree can be removed.
  mt::remove_tree(root);
  struct stat st {};
  CHECK(::stat(root.c_str(), &st) == -1);
  CHECK(errno == ENOENT);
  CHECK(::stat(pair.b->path().c_str(), &st) == 0);
  WARN("concurrency: " << total << " operations in " << kDuration.count() << " s, " << checked
                       << " files verified, " << dups
                       << " names returned twice within one readdir pass"
                       << (dups ? " (e.g." + dup_examples + ")" : std::string()) << " ("
                       << mt::mode_description() << ")");
}

TEST_CASE("concurrency: 4 threads write one file at interleaved offsets and append to another",
          "[concurrency]") {
  auto& pair = mt::shared_pair();
  std::string root = pair.b->path() + "/concurrency2";
  mt::remove_tree(root);
  REQUIRE(::mkdir(root.c_str(), 0755) == 0);
  std::string shared = root + "/interleaved";
  std::string log = root + "/appended";
  int sfd = ::open(shared.c_str(), O_CREAT | O_RDWR, 0644);
  int lfd = ::open(log.c_str(), O_CREAT | O_WRONLY | O_APPEND, 0644);
  REQUIRE(sfd >= 0);
  REQUIRE(lfd >= 0);
  // Blocks of 3000 bytes: neighbouring blocks of different threads share
  // pages, so the daemon sees concurrent partial writes to the same page.
  constexpr size_t kBlock = 3000;
  constexpr int kBlocks = 4000;
  constexpr int kRecords = 3000;
  constexpr size_t kRecord = 32;
  auto block = [](int i, int round) {
    std::string b(kBlock, static_cast<char>('a' + (i + round) % 26));
    std::snprintf(b.data(), 32, "block %4d round %d", i % 10000, round % 10);
    return b;
  };
  std::atomic<int> errors{0};
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int round = 0; round < 2; ++round)
          for (int i = t; i < kBlocks; i += kThreads) {
            std::string b = block(i, round);
            if (::pwrite(sfd, b.data(), b.size(), static_cast<off_t>(i) * kBlock) !=
                static_cast<ssize_t>(kBlock))
              ++errors;
          }
        for (int k = 0; k < kRecords; ++k) {
          char rec[64];
          std::snprintf(rec, sizeof rec, "thread %d record %8d ......\n", t, k);
          if (::write(lfd, rec, kRecord) != static_cast<ssize_t>(kRecord)) ++errors;
        }
      });
    }
  }
  CHECK(errors == 0);
  CHECK(::close(sfd) == 0);
  CHECK(::close(lfd) == 0);
  REQUIRE(pair.b->daemon_alive());
  // Read back cold.
  auto cold = [](const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
    int err = 0;
    return read_file(path, &err);
  };
  std::string got = cold(shared);
  REQUIRE(got.size() == kBlock * kBlocks);
  int bad = 0;
  for (int i = 0; i < kBlocks; ++i)
    if (got.compare(static_cast<size_t>(i) * kBlock, kBlock, block(i, 1)) != 0) {
      if (bad++ == 0)
        FAIL_CHECK("block " << i
                            << " differs: " << got.substr(static_cast<size_t>(i) * kBlock, 24));
    }
  CHECK(bad == 0);
  std::string lg = cold(log);
  CHECK(lg.size() == kThreads * kRecords * kRecord);
  std::vector<int> next(kThreads, 0);
  int torn = 0;
  for (size_t off = 0; off + kRecord <= lg.size(); off += kRecord) {
    int t = -1, k = -1;
    if (std::sscanf(lg.c_str() + off, "thread %d record %d", &t, &k) != 2 || t < 0 ||
        t >= kThreads || lg[off + kRecord - 1] != '\n') {
      ++torn;
      continue;
    }
    if (k != next[t]) ++torn;
    next[t] = k + 1;
  }
  CHECK(torn == 0);
  for (int t = 0; t < kThreads; ++t) CHECK(next[t] == kRecords);
  mt::remove_tree(root);
}

namespace {

// Asynchronous O_DIRECT writes of the whole of `path`, one byte value per
// round, each waited for and then read back buffered, while two threads
// read the file buffered in a loop (xfstests generic/451). Returns the
// first difference ("" if none) and counts the rounds done.
std::string direct_writes_racing_reads(const std::string& path, int* rounds_done) {
  constexpr size_t kSize = 640 * 1024;  // generic/451's, 160 pages
  constexpr auto kTime = std::chrono::seconds(3);
  constexpr int kMaxRounds = 4000;
  int fd = ::open(path.c_str(), O_CREAT | O_RDWR | O_DIRECT, 0644);
  if (fd < 0) return fmt::format("open O_DIRECT: {}", std::strerror(errno));
  void* mem = nullptr;
  if (::posix_memalign(&mem, 4096, kSize) != 0) return "posix_memalign";
  std::unique_ptr<char, decltype(&std::free)> wbuf(static_cast<char*>(mem), &std::free);
  auto value = [](int round) { return static_cast<char>(1 + round % 255); };
  std::memset(wbuf.get(), value(0), kSize);
  if (::pwrite(fd, wbuf.get(), kSize, 0) != static_cast<ssize_t>(kSize))
    return fmt::format("first pwrite: {}", std::strerror(errno));
  aio_context_t ctx = 0;
  if (::syscall(SYS_io_setup, 1, &ctx) != 0)
    return fmt::format("io_setup: {}", std::strerror(errno));
  std::atomic<bool> stop{false};
  std::string diff;
  int round = 1;
  {
    std::vector<std::jthread> readers;
    for (int t = 0; t < 2; ++t)
      readers.emplace_back([&] {
        std::string buf(kSize, '\0');
        while (!stop.load()) {
          int r = ::open(path.c_str(), O_RDONLY);
          if (r < 0) continue;
          (void)!::pread(r, buf.data(), kSize, 0);
          ::close(r);
        }
      });
    std::string got(kSize, '\0');
    auto end = std::chrono::steady_clock::now() + kTime;
    for (; round < kMaxRounds && std::chrono::steady_clock::now() < end; ++round) {
      std::memset(wbuf.get(), value(round), kSize);
      iocb cb{};
      cb.aio_lio_opcode = IOCB_CMD_PWRITE;
      cb.aio_fildes = static_cast<uint32_t>(fd);
      cb.aio_buf = reinterpret_cast<uint64_t>(wbuf.get());
      cb.aio_nbytes = kSize;
      iocb* cbs[1] = {&cb};
      io_event ev{};
      if (::syscall(SYS_io_submit, ctx, 1, cbs) != 1 ||
          ::syscall(SYS_io_getevents, ctx, 1, 1, &ev, nullptr) != 1) {
        diff = fmt::format("round {}: aio: {}", round, std::strerror(errno));
        break;
      }
      if (ev.res != static_cast<int64_t>(kSize)) {
        diff = fmt::format("round {}: aio write returned {}", round, ev.res);
        break;
      }
      // The write has completed: a buffered read must see it, every byte.
      int r = ::open(path.c_str(), O_RDONLY);
      ssize_t n = r < 0 ? -1 : ::pread(r, got.data(), kSize, 0);
      if (r >= 0) ::close(r);
      if (n != static_cast<ssize_t>(kSize)) {
        diff = fmt::format("round {}: buffered pread returned {}", round, n);
        break;
      }
      size_t at = got.find_first_not_of(value(round));
      if (at != std::string::npos) {
        size_t stale = got.find_first_of(value(round), at);
        diff = fmt::format(
            "round {}: a buffered read after the direct write of {:#04x} completed reads {:#04x} "
            "at bytes {}..{}, an earlier round's",
            round, value(round) & 0xff, got[at] & 0xff, at,
            (stale == std::string::npos ? kSize : stale) - 1);
        break;
      }
    }
    stop = true;
  }
  ::syscall(SYS_io_destroy, ctx);
  ::close(fd);
  *rounds_done = round - 1;
  return diff;
}

}  // namespace

// A buffered read after an asynchronous O_DIRECT write completed returns
// the written bytes, never older ones the kernel cached from reads racing
// the write (xfstests generic/451; daemon/kernel_cache.h). Run on both mounts: kernel
// tmpfs must pass it too.
TEST_CASE("direct writes racing buffered reads: a read after the write sees it",
          "[concurrency][direct]") {
  auto& pair = mt::shared_pair();
  for (const mt::Mount* m : {pair.a.get(), pair.b.get()}) {
    std::string path = m->path() + "/direct-racing-reads";
    int rounds = 0;
    std::string diff = direct_writes_racing_reads(path, &rounds);
    const char* side = m == pair.a.get() ? "A (kernel tmpfs)" : "B";
    INFO(side << ", " << rounds << " rounds");
    CHECK(diff == "");
    WARN("direct writes racing buffered reads on " << side << ": " << rounds << " rounds");
    ::unlink(path.c_str());
  }
  REQUIRE(pair.b->daemon_alive());
}
