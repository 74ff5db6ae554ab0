// RemoteStore against real memcached servers on loopback (started and
// killed by each test, memcached_server.h): pages round-trip sealed, a full
// pool and a dead server fail the write (the caller falls back), a page
// whose every copy is gone or whose value was replaced reads as EIO, and a
// replica keeps pages through a server's death.
#include <catch2/catch.hpp>

#include <libmemcached-1.0/memcached.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "swapdev/remote_store.h"
#include "tests/swapdev/memcached_server.h"
#include "tests/swapdev/test_util.h"

using namespace tmpfsd::swapdev;
using namespace tmpfsd::swapdev::test;

namespace {

RemoteOptions options_for(std::initializer_list<const MemcachedServer*> servers,
                          unsigned replicas = 0, uint64_t slots = 4096) {
  RemoteOptions o;
  for (const MemcachedServer* s : servers) o.servers.push_back({"127.0.0.1", s->port()});
  o.replicas = replicas;
  o.slots = slots;
  o.timeout = std::chrono::milliseconds(300);
  return o;
}

std::unique_ptr<RemoteStore> make_store(const RemoteOptions& o) {
  std::string why;
  auto st = RemoteStore::create(o, &why);
  INFO(why);
  REQUIRE(st);
  return st;
}

// A client of our own, as someone with access to the server would use.
class Client {
 public:
  explicit Client(const MemcachedServer& s) : st_(memcached_create(nullptr)) {
    memcached_server_add(st_, "127.0.0.1", s.port());
  }
  ~Client() { memcached_free(st_); }
  std::string get(const std::string& key) {
    size_t len = 0;
    uint32_t flags = 0;
    memcached_return_t rc;
    char* v = memcached_get(st_, key.data(), key.size(), &len, &flags, &rc);
    std::string out = v ? std::string(v, len) : std::string();
    std::free(v);
    return out;
  }
  bool set(const std::string& key, const std::string& value) {
    return memcached_success(
        memcached_set(st_, key.data(), key.size(), value.data(), value.size(), 0, 0));
  }

 private:
  memcached_st* st_;
};

bool contains(const std::string& hay, std::span<const std::byte> needle) {
  const std::string n(reinterpret_cast<const char*>(needle.data()), needle.size());
  return hay.find(n.substr(0, 64)) != std::string::npos;
}

}  // namespace

TEST_CASE("parse_remote_url: servers, ports, replicas, and clear errors", "[remote]") {
  RemoteOptions o;
  std::string why;
  REQUIRE(parse_remote_url("memcached://h1:11211,h2:11300?replicas=1", &o, &why));
  REQUIRE(o.servers.size() == 2);
  CHECK(o.servers[0].host == "h1");
  CHECK(o.servers[1].port == 11300);
  CHECK(o.replicas == 1);
  REQUIRE(parse_remote_url("memcached://localhost", &o, &why));
  CHECK(o.servers.size() == 1);
  CHECK(o.servers[0].port == 11211);
  CHECK(o.replicas == 0);
  CHECK_FALSE(o.local_copy);
  REQUIRE(parse_remote_url("memcached://[::1]:5000", &o, &why));
  CHECK(o.servers[0].host == "::1");
  REQUIRE(parse_remote_url("memcached://h1,h2?replicas=1&local_copy=1", &o, &why));
  CHECK(o.replicas == 1);
  CHECK(o.local_copy);
  for (const char* bad :
       {"", "memcache://h1", "memcached://", "memcached://h1:0", "memcached://h1:99999",
        "memcached://h1:x", "memcached://h1,,h2", "memcached://h1?replicas=1",
        "memcached://h1,h2?copies=1", "memcached://:11211", "memcached://h1?replicas=x",
        "memcached://h1?local_copy=2"}) {
    INFO(bad);
    why.clear();
    CHECK_FALSE(parse_remote_url(bad, &o, &why));
    CHECK(why.find("bad remote URL") != std::string::npos);
  }
}

TEST_CASE("RemoteStore: pages round-trip, sealed on the server, completed off the caller",
          "[remote]") {
  MemcachedServer srv;
  REQUIRE(srv.ready());
  auto st = make_store(options_for({&srv}));
  CHECK(st->healthy());
  CHECK(st->sealed());
  Pages pages(16, 4096);
  for (size_t i = 0; i < 8; ++i) pages.fill_random(i, 100 + i);
  SlotRun run = st->allocate(8);
  REQUIRE(run.count == 8);

  Latch l;
  std::thread::id cb_thread;
  st->write(run.first, pages.const_spans(0, 8), PageOwner{3, 40}, [&](int err) {
    cb_thread = std::this_thread::get_id();
    l.cb()(err);
  });
  REQUIRE(l.wait(1));
  CHECK(l.errors()[0] == 0);
  CHECK(cb_thread != std::this_thread::get_id());
  CHECK(st->remote_counters().round_trips == 1);  // the eight sets pipelined

  // The server holds ciphertext only.
  Client c(srv);
  const std::string stored = c.get(st->key(run.first + 2));
  CHECK(stored.size() == 4096);
  CHECK_FALSE(contains(stored, pages.page(2)));

  Latch r;
  st->read(run.first, pages.spans(8, 8), PageOwner{3, 40}, r.cb());
  REQUIRE(r.wait(1));
  CHECK(r.errors()[0] == 0);
  for (size_t i = 0; i < 8; ++i)
    CHECK(std::equal(pages.page(i).begin(), pages.page(i).end(), pages.page(8 + i).begin()));
  // Another owner (file, index) cannot read them.
  Latch w;
  st->read(run.first, pages.spans(8, 1), PageOwner{3, 41}, w.cb());
  REQUIRE(w.wait(1));
  CHECK(w.errors()[0] == -EIO);
  const RemoteCounters rc = st->remote_counters();
  CHECK(rc.pages == 8);
  CHECK(rc.round_trips == 1 + 2);  // the write's pipeline, two multi-gets
  CHECK(rc.seal_failures == 1);
  CHECK(st->counters().checksum_failures == 1);

  // free() deletes the values, asynchronously.
  st->free(run.first, 8);
  for (int i = 0; i < 200 && st->remote_counters().pages != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(st->remote_counters().pages == 0);
  CHECK(c.get(st->key(run.first + 2)).empty());
}

TEST_CASE("RemoteStore: a pool that answers out of memory fails the write with ENOSPC",
          "[remote]") {
  MemcachedServer srv(2, /*full_errors=*/true);
  REQUIRE(srv.ready());
  auto st = make_store(options_for({&srv}, 0, 8192));
  Pages page(1, 4096);
  page.fill_random(0, 7);
  int err = 0;
  size_t written = 0;
  for (; written < 8192 && err == 0; ++written) {
    SlotRun run = st->allocate(1);
    REQUIRE(run.count == 1);
    err = write_sync(*st, run.first, page.const_spans(0, 1));
  }
  CHECK(err == -ENOSPC);
  CHECK(written < 8192);
  CHECK_FALSE(st->healthy());  // new pages go elsewhere for a while
  CHECK(st->remote_counters().full >= 1);
}

TEST_CASE("RemoteStore: a killed server fails writes; its pages read as EIO", "[remote]") {
  MemcachedServer srv;
  REQUIRE(srv.ready());
  auto st = make_store(options_for({&srv}));
  Pages pages(2, 4096);
  pages.fill_random(0, 9);
  SlotRun a = st->allocate(1), b = st->allocate(1);
  REQUIRE(write_sync(*st, a.first, pages.const_spans(0, 1)) == 0);
  srv.kill();
  CHECK(read_sync(*st, a.first, pages.spans(1, 1)) == -EIO);
  const int werr = write_sync(*st, b.first, pages.const_spans(0, 1));
  CHECK(werr != 0);
  CHECK_FALSE(st->healthy());
  CHECK(st->remote_counters().failures >= 1);
  // A slot whose write failed holds nothing.
  CHECK(read_sync(*st, b.first, pages.spans(1, 1)) == -ENODATA);
}

TEST_CASE("RemoteStore: a value replaced on the server, or an old one put back, is EIO",
          "[remote]") {
  MemcachedServer srv;
  REQUIRE(srv.ready());
  auto st = make_store(options_for({&srv}));
  Client c(srv);
  Pages pages(3, 4096);
  pages.fill_random(0, 11);
  pages.fill_random(1, 12);
  SlotRun run = st->allocate(1);
  REQUIRE(write_sync(*st, run.first, pages.const_spans(0, 1)) == 0);
  const std::string old = c.get(st->key(run.first));
  REQUIRE(old.size() == 4096);
  // Another value under the key.
  REQUIRE(c.set(st->key(run.first), std::string(4096, 'x')));
  CHECK(read_sync(*st, run.first, pages.spans(2, 1)) == -EIO);
  CHECK(std::all_of(pages.page(2).begin(), pages.page(2).end(),
                    [](std::byte b) { return b == std::byte{0}; }));
  // The page rewritten, then its old value written back: stale, EIO.
  REQUIRE(write_sync(*st, run.first, pages.const_spans(1, 1)) == 0);
  REQUIRE(c.set(st->key(run.first), old));
  CHECK(read_sync(*st, run.first, pages.spans(2, 1)) == -EIO);
  CHECK(st->remote_counters().seal_failures == 2);
}

TEST_CASE("RemoteStore: with replicas=1 no page is lost when one server dies", "[remote]") {
  MemcachedServer s1, s2, s3;
  REQUIRE((s1.ready() && s2.ready() && s3.ready()));
  auto st = make_store(options_for({&s1, &s2, &s3}, 1));
  constexpr size_t kPages = 64;
  Pages pages(2 * kPages, 4096);
  for (size_t i = 0; i < kPages; ++i) pages.fill_random(i, 1000 + i);
  std::vector<SwapSlot> slots;
  for (size_t i = 0; i < kPages; ++i) {
    SlotRun r = st->allocate(1);
    REQUIRE(r.count == 1);
    slots.push_back(r.first);
    REQUIRE(write_sync(*st, r.first, pages.const_spans(i, 1)) == 0);
  }
  s2.kill();
  Latch l;
  {
    IoBatch plug(*st);  // one batch: a multi-get per server
    for (size_t i = 0; i < kPages; ++i) st->read(slots[i], pages.spans(kPages + i, 1), l.cb());
  }
  REQUIRE(l.wait(kPages));
  const std::vector<int> errs = l.errors();
  CHECK(std::count(errs.begin(), errs.end(), 0) == kPages);
  for (size_t i = 0; i < kPages; ++i)
    CHECK(std::equal(pages.page(i).begin(), pages.page(i).end(), pages.page(kPages + i).begin()));
  // Two servers are left: still enough for two copies of new pages.
  CHECK(st->healthy());
  SlotRun r = st->allocate(1);
  CHECK(write_sync(*st, r.first, pages.const_spans(0, 1)) == 0);
  CHECK(read_sync(*st, r.first, pages.spans(kPages, 1)) == 0);
}

TEST_CASE("RemoteStore: a server that stops answering fails the write after the time-out",
          "[remote]") {
  MemcachedServer srv;
  REQUIRE(srv.ready());
  auto st = make_store(options_for({&srv}));  // 300 ms time-out
  Pages pages(2, 4096);
  pages.fill_random(0, 21);
  SlotRun a = st->allocate(1), b = st->allocate(1);
  REQUIRE(write_sync(*st, a.first, pages.const_spans(0, 1)) == 0);
  srv.pause();
  const auto t0 = std::chrono::steady_clock::now();
  const int err = write_sync(*st, b.first, pages.const_spans(0, 1));
  const auto waited = std::chrono::steady_clock::now() - t0;
  WARN("a write to a stopped server failed after "
       << std::chrono::duration_cast<std::chrono::milliseconds>(waited).count() << " ms");
  CHECK(err != 0);
  CHECK(waited < std::chrono::seconds(3));
  CHECK_FALSE(st->healthy());  // the caller's next page goes to the file
  // While it rests, a read of its page fails at once, and the write path
  // does not knock again.
  const auto t1 = std::chrono::steady_clock::now();
  CHECK(read_sync(*st, a.first, pages.spans(1, 1)) == -EIO);
  CHECK(std::chrono::steady_clock::now() - t1 < std::chrono::milliseconds(200));
  srv.resume();
  // After retry_after (1 s) the server is tried again and its page is there.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  CHECK(st->healthy());
  CHECK(read_sync(*st, a.first, pages.spans(1, 1)) == 0);
  CHECK(std::equal(pages.page(0).begin(), pages.page(0).end(), pages.page(1).begin()));
}
