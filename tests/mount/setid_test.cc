// Set-user-ID and set-group-ID bits after each way of changing a file's
// data: write, O_DIRECT write, io_uring, copy_file_range,
// fallocate, punch hole, truncate, ftruncate, an O_TRUNC open and chown, by
// a user, by root and by root without CAP_FSETID, on files of every set-ID
// mode, owned by root and by the user. The mode is read twice after the
// change: as stat -c %A reads it (statx asking for STATX_MODE alone, which
// the kernel answers from its cached attributes while they are valid: the
// chmod before the change filled them) and with a full stat. Times are
// not compared here (the order of mtime and ctime, from the setup's
// ftruncate and chmod, depends on the machine's load).
#include <fcntl.h>
#include <liburing.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>

#include <fmt/format.h>

#include "harness.h"

using mt::Side;

namespace {
constexpr uid_t kUser = 1000;
constexpr gid_t kGroup = 1000;
constexpr unsigned kNoTimes = mt::kStatBlocks;

// Every combination a write treats differently: set-user-ID with or without
// set-group-ID, group-executable or not, user-executable or not.
constexpr mode_t kModes[] = {06666, 06676, 06766, 06777, 02676, 02666, 04666};

// Who changes the file.
enum class Who { kAUser, kRoot, kRootWithoutFsetid };

// Drops CAP_FSETID from this (forked) process's effective set.
bool drop_fsetid() {
  __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct d[2];
  if (::syscall(SYS_capget, &h, d) != 0) return false;
  d[0].effective &= ~(1u << CAP_FSETID);
  return ::syscall(SYS_capset, &h, d) == 0;
}

// The mode as stat -c %A sees it (see the top of the file).
void mode_as_stat_sees_it(Side& s, const std::string& rel) {
  struct statx sx {};
  errno = 0;
  int r = ::statx(AT_FDCWD, s.p(rel), 0, STATX_MODE, &sx);
  s.note("statx(" + rel + ", STATX_MODE)",
         r == 0 ? fmt::format("{:o}", sx.stx_mode & 07777) : mt::errno_name(errno));
}

// What the caller does to one file (its path); records its result.
using Change = std::function<void(Side&, const char* path)>;

// Each of kModes on a file owned by root:root and on one owned by the user,
// changed by `who`, with the mode recorded before and after.
void check_change(Side& s, Who who, const Change& change) {
  REC(s, ::chmod(s.p(""), 0777));
  REC(s, ::close(::open(s.p("src"), O_CREAT | O_WRONLY, 0644)));
  REC(s, ::truncate(s.p("src"), 8192));
  std::vector<std::string> files;
  for (mode_t mode : kModes) {
    for (bool user_owned : {false, true}) {
      std::string f = fmt::format("{}{:o}", user_owned ? "u" : "r", mode);
      int fd = REC_OK(s, ::open(s.p(f), O_CREAT | O_WRONLY, 0644));
      REC(s, ::ftruncate(fd, 8192));
      REC(s, ::close(fd));
      if (user_owned) REC(s, ::chown(s.p(f), kUser, kGroup));
      REC(s, ::chmod(s.p(f), mode));
      s.stat(f, kNoTimes);
      files.push_back(f);
    }
  }
  uid_t uid = who == Who::kAUser ? kUser : 0;
  gid_t gid = who == Who::kAUser ? kGroup : 0;
  s.as_user(uid, gid, [&](Side& c) {
    if (who == Who::kRootWithoutFsetid && !drop_fsetid()) c.note("capset", "failed");
    for (const std::string& f : files) change(c, c.p(f));
  });
  for (const std::string& f : files) {
    mode_as_stat_sees_it(s, f);
    s.stat(f, kNoTimes);
  }
}

void check_all_callers(const Change& change) {
  for (Who who : {Who::kAUser, Who::kRoot, Who::kRootWithoutFsetid}) {
    const char* name = who == Who::kAUser  ? "a user"
                       : who == Who::kRoot ? "root"
                                           : "root without CAP_FSETID";
    SECTION(name) {
      mt::compare([&](Side& s) { check_change(s, who, change); });
    }
  }
}

int open_for_writing(Side& c, const char* path, int flags = 0) {
  return int(REC_OK(c, ::open(path, O_WRONLY | flags)));
}

}  // namespace

TEST_CASE("set-ID bits: write", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) {
    int fd = open_for_writing(c, path);
    REC(c, ::pwrite(fd, "data", 4, 100));
    REC(c, ::close(fd));
  });
}

TEST_CASE("set-ID bits: O_DIRECT write", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) {
    void* buf = nullptr;
    if (::posix_memalign(&buf, 4096, 4096) != 0) return c.note("posix_memalign", "failed");
    std::memset(buf, 'd', 4096);
    int fd = open_for_writing(c, path, O_DIRECT);
    REC(c, ::pwrite(fd, buf, 4096, 4096));
    REC(c, ::close(fd));
    std::free(buf);
  });
}

TEST_CASE("set-ID bits: io_uring write", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) {
    void* buf = nullptr;
    if (::posix_memalign(&buf, 4096, 4096) != 0) return c.note("posix_memalign", "failed");
    std::memset(buf, 'u', 4096);
    int fd = open_for_writing(c, path, O_DIRECT);
    io_uring ring;
    if (io_uring_queue_init(2, &ring, 0) != 0) {
      std::free(buf);
      return c.note("io_uring_queue_init", "failed");
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    io_uring_prep_write(sqe, fd, buf, 4096, 0);
    io_uring_submit(&ring);
    io_uring_cqe* cqe = nullptr;
    int r = io_uring_wait_cqe(&ring, &cqe);
    c.note("io_uring write", r == 0 ? std::to_string(cqe->res) : mt::errno_name(-r));
    io_uring_queue_exit(&ring);
    REC(c, ::close(fd));
    std::free(buf);
  });
}

TEST_CASE("set-ID bits: copy_file_range", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) {
    int in = int(REC_OK(c, ::open(c.p("src"), O_RDONLY)));
    int out = open_for_writing(c, path);
    off64_t off_in = 0, off_out = 10;
    REC(c, ::copy_file_range(in, &off_in, out, &off_out, 100, 0));
    REC(c, ::close(out));
    REC(c, ::close(in));
  });
}

TEST_CASE("set-ID bits: fallocate", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) {
    int fd = open_for_writing(c, path);
    REC(c, ::fallocate(fd, 0, 4096, 65536));
    REC(c, ::close(fd));
  });
}

TEST_CASE("set-ID bits: fallocate keeping the size", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) {
    int fd = open_for_writing(c, path);
    REC(c, ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 65536));
    REC(c, ::close(fd));
  });
}

TEST_CASE("set-ID bits: punch hole", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) {
    int fd = open_for_writing(c, path);
    REC(c, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096));
    REC(c, ::close(fd));
  });
}

TEST_CASE("set-ID bits: truncate and ftruncate", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) {
    REC(c, ::truncate(path, 100));
    int fd = open_for_writing(c, path);
    REC(c, ::ftruncate(fd, 50));
    REC(c, ::close(fd));
  });
}

TEST_CASE("set-ID bits: O_TRUNC open", "[perm][setid][nonroot]") {
  check_all_callers(
      [](Side& c, const char* path) { REC(c, ::close(open_for_writing(c, path, O_TRUNC))); });
}

// chown clears set-ID bits whoever calls it (a user may chown only its own
// files, to itself or to its group; the others are EPERM).
TEST_CASE("set-ID bits: chown(-1, -1)", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) {
    // tmpfs refuses a non-owner (the bits would change); tmpfsd answers 0
    // and keeps them too.
    struct stat st {};
    if (::getuid() != 0 && ::stat(path, &st) == 0 && st.st_uid != ::getuid())
      c.known(mt::Known::ChownSetidNonOwner);
    REC(c, ::chown(path, -1, -1));
  });
}

TEST_CASE("set-ID bits: chown to the caller", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) { REC(c, ::chown(path, ::getuid(), -1)); });
}

TEST_CASE("set-ID bits: chgrp to the user's group", "[perm][setid][nonroot]") {
  check_all_callers([](Side& c, const char* path) { REC(c, ::chown(path, -1, kGroup)); });
}
