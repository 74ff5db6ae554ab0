// Self-tests of the harness: a difference is found and reported, and a pair
// of mounts really is two distinct mounted file systems.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

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
  struct stat sa {}, sb {}, st {};
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
