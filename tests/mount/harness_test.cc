// Self-tests of the harness: a difference is found and reported, and a pair
// of mounts really is two distinct mounted file systems.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "harness.h"

TEST_CASE("harness: transcripts that differ are reported", "[harness]") {
  std::vector<mt::Entry> a = {{"x", "ret=0", false, {}}, {"y", "5 bytes", true, "hello"}};
  std::vector<mt::Entry> b = a;
  CHECK(mt::diff_transcripts(a, b).empty());
  b[1].blob = "hellO";
  std::string d = mt::diff_transcripts(a, b);
  CHECK(d.find("data differs at byte 4") != std::string::npos);
  b = a;
  b[0].out = "-1 ENOENT";
  d = mt::diff_transcripts(a, b);
  CHECK(d.find("step 0") != std::string::npos);
  CHECK(d.find("ENOENT") != std::string::npos);
  b = a;
  b.pop_back();
  CHECK(mt::diff_transcripts(a, b).find("lengths differ") != std::string::npos);
}

TEST_CASE("harness: A and B are distinct mounts", "[harness]") {
  auto& pair = mt::shared_pair();
  struct stat sa {
  }, sb{}, st{};
  REQUIRE(::stat(pair.a->path().c_str(), &sa) == 0);
  REQUIRE(::stat(pair.b->path().c_str(), &sb) == 0);
  REQUIRE(::stat("/tmp", &st) == 0);
  CHECK(sa.st_dev != sb.st_dev);
  CHECK(sa.st_dev != st.st_dev);
  CHECK(sb.st_dev != st.st_dev);
  // A scenario that branches on the side must be caught as a difference.
  std::vector<mt::Entry> ta, tb;
  for (auto* m : {pair.a.get(), pair.b.get()}) {
    mt::Side s(m == pair.a.get() ? "A" : "B", m->path(), m->path());
    REC(s, ::access(s.p(m == pair.a.get() ? "." : "nonexistent"), F_OK));
    (m == pair.a.get() ? ta : tb) = s.transcript();
  }
  CHECK_FALSE(mt::diff_transcripts(ta, tb).empty());
}

TEST_CASE("harness: a fresh pair with options starts and stops cleanly", "[harness]") {
  mt::MountOptions o;
  o.size = "8m";
  o.nr_inodes = 64;
  o.mode = 0710;
  o.uid = 1234;
  o.gid = 4321;
  mt::compare(o, [](mt::Side& s) {
    s.stat(std::string_view(".."), mt::kStatNoSize);
    s.statfs("", true);
  });
}

TEST_CASE("harness: a known divergence excuses one step, only with B's documented outcome",
          "[harness]") {
  const auto& k = mt::known_divergence(mt::Known::DirSeek);
  int id = static_cast<int>(mt::Known::DirSeek);
  std::vector<mt::Entry> a = {{"lseek(dirfd, 0, SEEK_DATA)", "-1 EINVAL", false, {}, id},
                              {"after", "ret=0", false, {}}};
  std::vector<mt::Entry> b = {{"lseek(dirfd, 0, SEEK_DATA)", k.b_outcome, false, {}, id},
                              {"after", "ret=0", false, {}}};
  CHECK(mt::diff_transcripts(a, b, true).empty());
  // tmpfs-vs-tmpfs: nothing is excused.
  CHECK(mt::diff_transcripts(a, b, false).find("step 0") != std::string::npos);
  // B changed: the entry no longer describes tmpfsd.
  b[0].out = "-1 ENXIO";
  CHECK(mt::diff_transcripts(a, b, true).find("known divergence 7 (dirseek)") != std::string::npos);
  // Unmarked steps are still compared.
  b[0].out = k.b_outcome;
  b[1].out = "-1 EIO";
  CHECK(mt::diff_transcripts(a, b, true).find("step 1") != std::string::npos);
  // The table is in enum order and every step entry has a B outcome.
  size_t n = 0;
  const mt::KnownDivergence* t = mt::known_divergences(&n);
  for (size_t i = 0; i < n; ++i) {
    CHECK(&mt::known_divergence(t[i].id) == &t[i]);
    CHECK((t[i].b_outcome != nullptr) == (t[i].scope != mt::KnownDivergence::Scope::Rule));
  }
}

TEST_CASE("harness: mtime/ctime orders match within one coarse tick", "[harness]") {
  const int64_t t = mt::mc_tolerance_ns();
  auto rec = [](const char* order, int64_t d) {
    return std::vector<mt::Entry>{
        {"stat(f)", fmt::format("type=reg m:moved c:moved {}:{}", order, d), false, {}}};
  };
  // tmpfs m==c, tmpfsd one tick apart: match, either way round.
  CHECK(mt::diff_transcripts(rec("m~c", 0), rec("m<c", -t), false).empty());
  CHECK(mt::diff_transcripts(rec("m<c", -t), rec("m~c", 0), false).empty());
  // Same order beyond the tolerance, different distances: match.
  CHECK(mt::diff_transcripts(rec("m<c", -8 * t), rec("m<c", -30 * t), false).empty());
  // One side just inside the tolerance, the other far beyond it, both more
  // than a tick apart in the same direction (a loaded machine between two
  // steps): match.
  CHECK(mt::diff_transcripts(rec("m~c", -t + 2000), rec("m<c", -2 * t), false).empty());
  // More than a tick between the two sides' m - c: a difference.
  CHECK(!mt::diff_transcripts(rec("m~c", 0), rec("m<c", -2 * t), false).empty());
  CHECK(!mt::diff_transcripts(rec("m>c", 3 * t), rec("m<c", -3 * t), false).empty());
  // moved/same stays strict.
  auto b = rec("m~c", 0);
  b[0].out = "type=reg m:moved c:same m~c:0";
  CHECK(!mt::diff_transcripts(rec("m~c", 0), b, false).empty());
}
