// The kernel's caches of names and attributes on a tmpfsd mount: kept for a
// day (daemon/fuse_ops.h), so what stat shows must stay true without the
// daemon being asked again, and a file's life must cost only the requests
// the kernel cannot do without (issue 30, rows e and f).
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <memory>
#include <string>

#include "daemon/control.h"
#include "harness.h"

using mt::Side;

namespace {

// Longer than the 1 s the kernel used to keep what it was told.
void past_old_timeout() { ::usleep(1'200'000); }

void write_file(Side& s, const std::string& rel, const std::string& data) {
  int fd = REC_OK(s, ::open(s.p(rel), O_CREAT | O_WRONLY | O_TRUNC, 0644));
  REC(s, ::write(fd, data.data(), data.size()));
  REC(s, ::close(fd));
}

// The daemon's FUSE request counts by opcode (tmpfsctl stats), empty if
// they cannot be had.
std::map<std::string, uint64_t> requests() {
  std::map<std::string, uint64_t> out;
  int fd = ::open(mt::shared_pair().b->path().c_str(), O_RDONLY | O_DIRECTORY);
  auto reply = std::make_unique<tmpfsd::control::StatsReply>();
  bool ok = fd >= 0 && ::ioctl(fd, tmpfsd::control::kStatsIoctl, reply.get()) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) return out;
  std::string text(reply->text, strnlen(reply->text, sizeof reply->text));
  const std::string prefix = "requests_";
  size_t at = 0;
  while ((at = text.find("\n" + prefix, at)) != std::string::npos) {
    at += 1 + prefix.size();
    size_t space = text.find(' ', at);
    if (space == std::string::npos) break;
    out[text.substr(at, space - at)] = std::stoull(text.substr(space + 1));
  }
  return out;
}

uint64_t delta(const std::map<std::string, uint64_t>& before,
               const std::map<std::string, uint64_t>& after, const std::string& op) {
  auto a = after.find(op);
  auto b = before.find(op);
  return (a == after.end() ? 0 : a->second) - (b == before.end() ? 0 : b->second);
}

}  // namespace

TEST_CASE("attribute cache: names and attributes stay true past the old timeout", "[cache]") {
  mt::compare([](Side& s) {
    write_file(s, "f", std::string(100, 'f'));
    REC(s, ::mkdir(s.p("d"), 0755));
    REC(s, ::link(s.p("f"), s.p("d/g")));
    s.stat("f");
    s.stat("d/g");
    s.stat("absent");  // a negative entry the kernel keeps
    past_old_timeout();
    // Changes through one name, seen through the other.
    REC(s, ::chmod(s.p("d/g"), 0600));
    s.stat("f");
    int fd = REC_OK(s, ::open(s.p("d/g"), O_WRONLY | O_APPEND));
    REC(s, ::write(fd, "more", 4));
    REC(s, ::close(fd));
    s.stat("f");
    REC(s, ::unlink(s.p("f")));
    s.stat("d/g");
    s.stat("f");
    write_file(s, "absent", "now here");
    s.stat("absent");
    past_old_timeout();
    REC(s, ::rename(s.p("d/g"), s.p("h")));
    s.stat("h");
    s.stat("d");
    REC(s, ::setxattr(s.p("h"), "user.x", "1", 1, 0));
    s.stat("h");
    REC(s, ::truncate(s.p("h"), 10));
    s.stat("h");
    REC(s, ::chown(s.p("h"), 12345, 12345));
    s.stat("h");
    past_old_timeout();
    s.stat("h");
    s.stat("d");
    s.stat("absent");
    s.read_all("h");
  });
}

TEST_CASE("attribute cache: a file's life costs the kernel's minimum of requests", "[cache]") {
  if (!mt::testing_tmpfsd()) return;  // counts the daemon's requests
  const std::string dir = mt::shared_pair().b->path() + "/cache-requests";
  REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
  constexpr int kFiles = 50;
  auto name = [&](int i) { return dir + "/f" + std::to_string(i); };
  auto before = requests();
  REQUIRE(!before.empty());
  for (int i = 0; i < kFiles; ++i) {
    int fd = ::open(name(i).c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::close(fd) == 0);
  }
  auto created = requests();
  // Each: the negative LOOKUP, CREATE, RELEASE and the directory's GETATTR
  // (default_permissions, after the kernel dropped its attributes on the
  // change). No FLUSH: the daemon answers none, and the kernel stops.
  CHECK(delta(before, created, "flush") == 0);
  CHECK(delta(before, created, "create") == kFiles);
  CHECK(delta(before, created, "lookup") <= kFiles);
  past_old_timeout();
  auto stat_from = requests();
  for (int i = 0; i < kFiles; ++i) {
    struct stat st {};
    REQUIRE(::stat(name(i).c_str(), &st) == 0);
    CHECK(st.st_size == 0);
    CHECK((st.st_mode & 07777) == 0644);
  }
  auto statted = requests();
  // From the kernel's caches: no LOOKUP, and at most the GETATTRs of the
  // mount's root for tmpfsctl's own open.
  CHECK(delta(stat_from, statted, "lookup") == 0);
  CHECK(delta(stat_from, statted, "getattr") <= 2);
  for (int i = 0; i < kFiles; ++i) REQUIRE(::unlink(name(i).c_str()) == 0);
  auto unlinked = requests();
  CHECK(delta(statted, unlinked, "lookup") == 0);
  CHECK(delta(statted, unlinked, "unlink") == kFiles);
  REQUIRE(::rmdir(dir.c_str()) == 0);
}
