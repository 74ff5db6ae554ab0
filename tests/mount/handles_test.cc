// File handles: name_to_handle_at / open_by_handle_at after the kernel has
// dropped its dentries and inodes (drop_caches), so that on tmpfsd the
// kernel must ask the daemon to find the node again (LOOKUP of "." by node
// ID, and of ".." to reconnect a directory to the tree). The handles'
// bytes differ between tmpfs and FUSE and are never compared; what they
// open is: contents, stat fields, the path the kernel reconnects, ESTALE.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstring>
#include <memory>
#include <string>

#include "daemon/control.h"
#include "harness.h"

using mt::Side;

namespace {

#ifndef AT_HANDLE_CONNECTABLE
#define AT_HANDLE_CONNECTABLE 0x002  // Linux 6.13; bookworm's headers lack it
#endif

// A file handle of MAX_HANDLE_SZ bytes, as open_by_handle(8) in xfstests.
struct Handle {
  Handle() { get()->handle_bytes = MAX_HANDLE_SZ; }
  file_handle* get() { return reinterpret_cast<file_handle*>(storage); }
  alignas(file_handle) unsigned char storage[sizeof(file_handle) + MAX_HANDLE_SZ] = {};
};

// name_to_handle_at(path, flags), recorded as ok or the errno.
Handle handle_of(Side& s, const std::string& rel, int flags = 0) {
  Handle h;
  int mount_id;
  errno = 0;
  int r = ::name_to_handle_at(AT_FDCWD, s.p(rel), h.get(), &mount_id, flags);
  s.rec_ok("name_to_handle_at(" + rel + ", " + std::to_string(flags) + ")", r, errno);
  return h;
}

// Every dentry and inode the kernel can drop, on every file system: on
// tmpfsd each unused inode is forgotten (FUSE FORGET) and must be found
// again by its node ID.
void drop_caches(Side& s) {
  ::sync();
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
  bool ok = fd >= 0 && ::write(fd, "2", 1) == 1;
  if (fd >= 0) ::close(fd);
  s.note("drop_caches", ok ? "done" : "failed");
}

// open_by_handle_at through the mount's root; the descriptor, or -1.
int open_handle(Side& s, Handle& h, int flags, const std::string& what) {
  int root = ::open(s.mount_root().c_str(), O_RDONLY | O_DIRECTORY);
  errno = 0;
  int fd = ::open_by_handle_at(root, h.get(), flags);
  int err = errno;
  ::close(root);
  s.rec_ok("open_by_handle_at(" + what + ")", fd, err);
  return fd;
}

// The path of an open descriptor, relative to the test's directory.
void record_path(Side& s, int fd, const std::string& what) {
  char buf[4096];
  ssize_t n = ::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), buf, sizeof buf - 1);
  std::string path = n < 0 ? "?" : std::string(buf, size_t(n));
  if (path.starts_with(s.dir())) path = "<dir>" + path.substr(s.dir().size());
  s.note("path of " + what, path);
}

void read_fd(Side& s, int fd, const std::string& what) {
  char buf[256];
  errno = 0;
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  s.blob("pread(" + what + ")", n < 0 ? "-1 " + mt::errno_name(errno) : std::to_string(n),
         n < 0 ? "" : std::string(buf, size_t(n)));
}

// Whether fd is the same inode as the object at `rel`.
void same_inode(Side& s, int fd, const std::string& rel, const std::string& what) {
  struct stat a {
  }, b{};
  bool same = ::fstat(fd, &a) == 0 && ::stat(s.p(rel), &b) == 0 && a.st_ino == b.st_ino &&
              a.st_dev == b.st_dev;
  s.note(what + " is " + (rel.empty() ? "<dir>" : rel), same ? "yes" : "no");
}

// The daemon's count of LOOKUP requests (tmpfsctl stats), 0 if unknown.
uint64_t lookup_requests() {
  int fd = ::open(mt::shared_pair().b->path().c_str(), O_RDONLY | O_DIRECTORY);
  auto reply = std::make_unique<tmpfsd::control::StatsReply>();
  bool ok = fd >= 0 && ::ioctl(fd, tmpfsd::control::kStatsIoctl, reply.get()) == 0;
  if (fd >= 0) ::close(fd);
  if (!ok) return 0;
  std::string text(reply->text, strnlen(reply->text, sizeof reply->text));
  const std::string key = "\nrequests_lookup ";
  size_t at = text.find(key);
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + key.size()));
}

void write_file(Side& s, const std::string& rel, const std::string& data) {
  int fd = REC_OK(s, ::open(s.p(rel), O_CREAT | O_WRONLY | O_TRUNC, 0644));
  REC(s, ::write(fd, data.data(), data.size()));
  REC(s, ::close(fd));
}

}  // namespace

TEST_CASE("file handles: files after the kernel dropped its inodes", "[handle]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("d"), 0755));
    write_file(s, "d/f", "contents of f");
    write_file(s, "d/linked", "two names");
    REC(s, ::link(s.p("d/linked"), s.p("other")));
    write_file(s, "moved", "renamed later");
    REC(s, ::symlink("d/f", s.p("sym")));
    Handle f = handle_of(s, "d/f");
    Handle linked = handle_of(s, "d/linked");
    Handle moved = handle_of(s, "moved");
    Handle sym = handle_of(s, "sym");
    REC(s, ::unlink(s.p("d/linked")));
    REC(s, ::rename(s.p("moved"), s.p("d/moved-here")));
    drop_caches(s);

    int fd = open_handle(s, f, O_RDONLY, "d/f");
    read_fd(s, fd, "d/f");
    s.fstat(fd, "d/f");
    same_inode(s, fd, "d/f", "handle of d/f");
    REC(s, ::close(fd));
    // Written through the handle, read back by name.
    fd = open_handle(s, f, O_WRONLY | O_APPEND, "d/f, O_WRONLY");
    REC(s, ::write(fd, "+more", 5));
    REC(s, ::close(fd));
    s.read_all("d/f");

    fd = open_handle(s, linked, O_RDONLY, "linked, one name left");
    read_fd(s, fd, "linked");
    s.fstat(fd, "linked");
    REC(s, ::close(fd));
    fd = open_handle(s, moved, O_RDONLY, "moved");
    read_fd(s, fd, "moved");
    same_inode(s, fd, "d/moved-here", "handle of moved");
    REC(s, ::close(fd));
    // A symlink's handle opens with O_PATH only.
    fd = open_handle(s, sym, O_PATH | O_NOFOLLOW, "sym, O_PATH");
    if (fd >= 0) {
      char target[64];
      REC(s, ::readlinkat(fd, "", target, sizeof target));
      REC(s, ::close(fd));
    }
  });
}

TEST_CASE("file handles: a deleted file is ESTALE, an open one is not", "[handle]") {
  mt::compare([](Side& s) {
    write_file(s, "gone", "deleted");
    write_file(s, "open", "deleted but open");
    REC(s, ::mkdir(s.p("rmdir"), 0755));
    Handle gone = handle_of(s, "gone");
    Handle open = handle_of(s, "open");
    Handle rmdir = handle_of(s, "rmdir");
    int keep = REC_OK(s, ::open(s.p("open"), O_RDONLY));
    REC(s, ::unlink(s.p("gone")));
    REC(s, ::unlink(s.p("open")));
    REC(s, ::rmdir(s.p("rmdir")));
    drop_caches(s);
    int fd = open_handle(s, gone, O_RDONLY, "gone");
    if (fd >= 0) ::close(fd);
    fd = open_handle(s, rmdir, O_RDONLY | O_DIRECTORY, "rmdir");
    if (fd >= 0) ::close(fd);
    // Still open: the kernel holds the inode, on both.
    fd = open_handle(s, open, O_RDONLY, "open");
    if (fd >= 0) {
      read_fd(s, fd, "open");
      REC(s, ::close(fd));
    }
    REC(s, ::close(keep));
    drop_caches(s);
    fd = open_handle(s, open, O_RDONLY, "open, closed since");
    if (fd >= 0) ::close(fd);

    // A handle nobody made: every byte of a real one inverted (another
    // node ID and generation on FUSE, another inode and generation on tmpfs).
    write_file(s, "real", "x");
    Handle forged = handle_of(s, "real");
    unsigned char* bytes = forged.storage + offsetof(file_handle, f_handle);
    for (size_t i = 0; i < forged.get()->handle_bytes; ++i) bytes[i] = ~bytes[i];
    drop_caches(s);
    fd = open_handle(s, forged, O_RDONLY, "forged");
    if (fd >= 0) ::close(fd);
    s.read_all("real");
  });
}

TEST_CASE("file handles: directories reconnect through their parents", "[handle]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("a"), 0755));
    REC(s, ::mkdir(s.p("a/b"), 0755));
    REC(s, ::mkdir(s.p("a/b/c"), 0755));
    write_file(s, "a/b/c/f", "deep");
    write_file(s, "a/b/g", "beside c");
    Handle c = handle_of(s, "a/b/c");
    Handle dir = handle_of(s, "");
    // The kernel must find c's new path: ".." up to a directory it still
    // knows, and the names on the way by reading each parent.
    REC(s, ::rename(s.p("a"), s.p("a2")));
    drop_caches(s);

    int fd = open_handle(s, c, O_RDONLY | O_DIRECTORY, "a/b/c");
    record_path(s, fd, "a/b/c");
    same_inode(s, fd, "a2/b/c", "handle of a/b/c");
    int up = REC_OK(s, ::openat(fd, "..", O_RDONLY | O_DIRECTORY));
    same_inode(s, up, "a2/b", "a/b/c/..");
    record_path(s, up, "a/b/c/..");
    s.readdir("a2/b");
    int g = REC_OK(s, ::openat(up, "g", O_RDONLY));
    read_fd(s, g, "a/b/c/../g");
    REC(s, ::close(g));
    int up2 = REC_OK(s, ::openat(up, "../..", O_RDONLY | O_DIRECTORY));
    same_inode(s, up2, "", "a/b/c/../../..");
    REC(s, ::close(up2));
    REC(s, ::close(up));
    int inner = REC_OK(s, ::openat(fd, "f", O_RDONLY));
    read_fd(s, inner, "a/b/c/f");
    REC(s, ::close(inner));
    REC(s, ::close(fd));

    fd = open_handle(s, dir, O_RDONLY | O_DIRECTORY, "<dir>");
    same_inode(s, fd, "", "handle of <dir>");
    s.fstat(fd, "<dir>", mt::kStatNoSize);
    REC(s, ::close(fd));
  });
}

// Connectable handles (AT_HANDLE_CONNECTABLE, Linux 6.13) hold the parent's
// node too, and the kernel reconnects the file under it. Kernel tmpfs has
// no fh_to_parent and refuses them (EOPNOTSUPP), so there is no oracle:
// tmpfsd alone, against what the file is. The daemon's LOOKUP count shows
// that it, not the kernel's cache, found the nodes.
TEST_CASE("file handles: connectable handles of files (tmpfsd only)", "[handle]") {
  if (!mt::testing_tmpfsd()) {
    SUCCEED("tmpfs-vs-tmpfs mode: kernel tmpfs has no connectable handles");
    return;
  }
  const std::string dir = mt::shared_pair().b->path() + "/connectable";
  mt::remove_tree(dir);
  REQUIRE(::mkdir(dir.c_str(), 0755) == 0);
  REQUIRE(::mkdir((dir + "/p").c_str(), 0755) == 0);
  {
    int fd = ::open((dir + "/p/f").c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "connected", 9) == 9);
    ::close(fd);
  }
  Handle h;
  int mount_id;
  REQUIRE(::name_to_handle_at(AT_FDCWD, (dir + "/p/f").c_str(), h.get(), &mount_id,
                              AT_HANDLE_CONNECTABLE) == 0);
  REQUIRE(::rename((dir + "/p").c_str(), (dir + "/q").c_str()) == 0);

  const uint64_t lookups_before = lookup_requests();
  Side s("B", mt::shared_pair().b->path(), dir);
  drop_caches(s);
  int fd = open_handle(s, h, O_RDONLY, "q/f, connectable");
  REQUIRE(fd >= 0);
  CHECK(lookup_requests() > lookups_before);
  char buf[16] = {};
  CHECK(::pread(fd, buf, sizeof buf, 0) == 9);
  CHECK(std::string(buf) == "connected");
  char path[4096] = {};
  CHECK(::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), path, sizeof path - 1) > 0);
  CHECK(std::string(path) == dir + "/q/f");
  ::close(fd);

  // The parent gone: ESTALE, as for any handle of a deleted file.
  REQUIRE(::unlink((dir + "/q/f").c_str()) == 0);
  REQUIRE(::rmdir((dir + "/q").c_str()) == 0);
  drop_caches(s);
  errno = 0;
  CHECK(open_handle(s, h, O_RDONLY, "q/f, deleted") == -1);
  CHECK(errno == ESTALE);
  mt::remove_tree(dir);
}
