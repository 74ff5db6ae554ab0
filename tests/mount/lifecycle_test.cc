// The daemon's contract with whoever starts it: the mount appears (st_dev
// changes) while it runs in the foreground, SIGTERM unmounts it and exits 0,
// a bad option makes it exit before mounting.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <stdexcept>
#include <string>

#include "harness.h"

TEST_CASE("lifecycle: mounted while running, SIGTERM unmounts and exits 0", "[lifecycle]") {
  mt::MountOptions o;
  o.size = "16m";
  o.nr_inodes = 100;
  auto kind = mt::testing_tmpfsd() ? mt::Mount::Kind::Tmpfsd : mt::Mount::Kind::KernelTmpfs;
  mt::Mount m(kind, o);
  struct stat st {
  }, parent{};
  REQUIRE(::stat(m.path().c_str(), &st) == 0);
  REQUIRE(::stat("/tmp", &parent) == 0);
  CHECK(st.st_dev != parent.st_dev);
  // Some data, so that the daemon has something to free on the way out.
  std::string f = m.path() + "/f";
  int fd = ::open(f.c_str(), O_CREAT | O_WRONLY, 0644);
  CHECK(fd >= 0);
  CHECK(::write(fd, "x", 1) == 1);
  CHECK(::close(fd) == 0);
  CHECK(m.daemon_alive());
  std::string problems = m.stop();
  INFO("mode: " << mt::mode_description());
  CHECK(problems == "");
  struct stat after {};
  CHECK(::stat(m.path().c_str(), &after) == -1);  // directory removed after unmount
}

TEST_CASE("lifecycle: in the foreground (-f) too, data in, SIGTERM unmounts and exits 0",
          "[lifecycle]") {
  if (!mt::testing_tmpfsd()) {
    SUCCEED("tmpfs-vs-tmpfs mode: no daemon");
    return;
  }
  // Every other test starts tmpfsd daemonised, as users do; -f is a mode
  // users run too (systemd Type=simple, debugging), so one test keeps it.
  mt::MountOptions o;
  o.size = "16m";
  o.nr_inodes = 100;
  o.foreground = true;
  mt::Mount m(mt::Mount::Kind::Tmpfsd, o);
  std::string f = m.path() + "/f";
  std::string data(3 * 4096 + 5, 'q');
  int fd = ::open(f.c_str(), O_CREAT | O_RDWR, 0644);
  REQUIRE(fd >= 0);
  CHECK(::pwrite(fd, data.data(), data.size(), 0) == ssize_t(data.size()));
  std::string back(data.size(), '\0');
  CHECK(::pread(fd, back.data(), back.size(), 0) == ssize_t(back.size()));
  CHECK(back == data);
  CHECK(::close(fd) == 0);
  CHECK(m.daemon_alive());
  CHECK(m.stop() == "");
}

TEST_CASE("lifecycle: a daemon that cannot mount fails the start clearly", "[lifecycle]") {
  if (!mt::testing_tmpfsd()) {
    SUCCEED("tmpfs-vs-tmpfs mode: kernel tmpfs rejects a bad size= at mount(2)");
    mt::MountOptions bad;
    bad.size = "nonsense";
    CHECK_THROWS_AS(mt::Mount(mt::Mount::Kind::KernelTmpfs, bad), std::runtime_error);
    return;
  }
  mt::MountOptions bad;
  bad.size = "nonsense";
  CHECK_THROWS_AS(mt::Mount(mt::Mount::Kind::Tmpfsd, bad), std::runtime_error);
}
