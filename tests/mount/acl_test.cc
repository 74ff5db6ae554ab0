// POSIX ACLs against kernel tmpfs: the xattr values, the mode bits they
// move and that move them, inheritance of default ACLs, and the access
// checks the kernel makes from them for users other than root.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"

using mt::Side;

namespace {

constexpr uid_t kUser = 1000, kOther = 1001;
constexpr gid_t kGroup = 1000, kOtherGroup = 1001;

// Tags of <linux/posix_acl.h>.
constexpr uint16_t kUserObj = 0x01, kNamedUser = 0x02, kGroupObj = 0x04, kNamedGroup = 0x08,
                   kMask = 0x10, kOtherEnt = 0x20;
constexpr uint32_t kNoId = uint32_t(-1);

struct Ent {
  uint16_t tag, perm;
  uint32_t id = kNoId;
};

// The system.posix_acl_* value (version 2) of these entries, in order.
std::string acl_value(const std::vector<Ent>& entries) {
  std::string v;
  auto put = [&v](const void* p, size_t n) { v.append(static_cast<const char*>(p), n); };
  uint32_t version = 2;
  put(&version, 4);
  for (const Ent& e : entries) {
    put(&e.tag, 2);
    put(&e.perm, 2);
    put(&e.id, 4);
  }
  return v;
}

long set_acl(Side& s, std::string_view rel, const char* name, const std::string& value) {
  errno = 0;
  long r = ::setxattr(s.p(rel), name, value.data(), value.size(), 0);
  return s.rec(std::string("setxattr(") + std::string(rel) + ", " + name + ")", r, errno);
}

constexpr const char* kAccess = "system.posix_acl_access";
constexpr const char* kDefault = "system.posix_acl_default";

}  // namespace

TEST_CASE("POSIX ACLs: set, get, mode bits and the mask, access checks", "[acl][nonroot]") {
  mt::compare([](Side& s) {
    REC(s, ::chmod(s.p(""), 0755));
    REC(s, ::close(::open(s.p("f"), O_CREAT | O_WRONLY, 0640)));
    // A named user with rw, a mask of rw: the group bits show the mask.
    std::string named = acl_value(
        {{kUserObj, 6}, {kNamedUser, 6, kUser}, {kGroupObj, 4}, {kMask, 6}, {kOtherEnt, 0}});
    set_acl(s, "f", kAccess, named);
    s.stat("f");
    s.getxattr("f", kAccess, 0);
    s.getxattr("f", kAccess, 256);
    s.getxattr("f", kAccess, 4);  // ERANGE
    s.listxattr("f");
    s.as_user(kUser, kGroup, [](Side& c) {
      REC(c, ::close(::open(c.p("f"), O_RDWR)));  // the named entry allows it
    });
    s.as_user(kOther, kOtherGroup, [](Side& c) {
      REC(c, ::open(c.p("f"), O_RDONLY));  // other: nothing
    });
    // chmod sets the mask: the named user loses write.
    REC(s, ::chmod(s.p("f"), 0640));
    s.getxattr("f", kAccess, 256);
    s.as_user(kUser, kGroup, [](Side& c) {
      REC(c, ::open(c.p("f"), O_RDWR));
      REC(c, ::close(::open(c.p("f"), O_RDONLY)));
    });
    // An ACL the mode can say on its own is no ACL: only the mode changes.
    set_acl(s, "f", kAccess, acl_value({{kUserObj, 7}, {kGroupObj, 5}, {kOtherEnt, 1}}));
    s.stat("f");
    s.getxattr("f", kAccess, 256);
    set_acl(s, "f", kAccess, named);
    REC(s, ::removexattr(s.p("f"), kAccess));
    s.stat("f");
    s.getxattr("f", kAccess, 256);
    REC(s, ::removexattr(s.p("f"), kAccess));  // none left: still fine on tmpfs
    // Malformed values: no mask with a named entry, a bad version, a short value.
    set_acl(s, "f", kAccess,
            acl_value({{kUserObj, 6}, {kNamedUser, 6, kUser}, {kGroupObj, 4}, {kOtherEnt, 0}}));
    std::string bad = named;
    bad[0] = 3;
    set_acl(s, "f", kAccess, bad);
    set_acl(s, "f", kAccess, named.substr(0, 10));
    // A default ACL belongs on a directory only.
    set_acl(s, "f", kDefault, named);
    s.stat("f");
  });
}

TEST_CASE("POSIX ACLs: the owner's ACL change clears set-group-ID outside the group",
          "[acl][setid][nonroot]") {
  mt::compare([](Side& s) {
    REC(s, ::chmod(s.p(""), 0777));
    REC(s, ::close(::open(s.p("g"), O_CREAT | O_WRONLY, 0644)));
    REC(s, ::chown(s.p("g"), kUser, kOtherGroup));
    REC(s, ::chmod(s.p("g"), 02775));
    std::string named = acl_value(
        {{kUserObj, 7}, {kNamedUser, 5, kOther}, {kGroupObj, 5}, {kMask, 5}, {kOtherEnt, 5}});
    set_acl(s, "g", kAccess, named);  // root: set-group-ID stays
    s.stat("g");
    REC(s, ::chmod(s.p("g"), 02775));
    s.as_user(kUser, kGroup, [&](Side& c) {
      set_acl(c, "g", kAccess, named);  // the owner, not in the group: it goes
      c.stat("g");
    });
    s.as_user(kOther, kOtherGroup, [&](Side& c) {
      set_acl(c, "g", kAccess, named);  // not the owner: EPERM
    });
  });
}

TEST_CASE("POSIX ACLs: default ACLs are inherited, the umask only without one", "[acl][umask]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("d"), 0755));
    std::string def = acl_value({{kUserObj, 7},
                                 {kNamedUser, 7, kUser},
                                 {kGroupObj, 5},
                                 {kNamedGroup, 6, kOtherGroup},
                                 {kMask, 7},
                                 {kOtherEnt, 1}});
    set_acl(s, "d", kDefault, def);
    s.getxattr("d", kDefault, 256);
    s.getxattr("d", kAccess, 256);
    mode_t old = ::umask(077);  // ignored where a default ACL applies
    REC(s, ::close(::open(s.p("d/f"), O_CREAT | O_WRONLY, 0666)));
    REC(s, ::mkdir(s.p("d/sub"), 0750));
    REC(s, ::mknod(s.p("d/fifo"), S_IFIFO | 0644, 0));
    REC(s, ::symlink("f", s.p("d/link")));
    int t = REC_OK(s, ::open(s.p("d"), O_TMPFILE | O_RDWR, 0640));
    REC(s, ::linkat(t, "", AT_FDCWD, s.p("d/tmp"), AT_EMPTY_PATH));
    REC(s, ::close(t));
    REC(s, ::close(::open(s.p("plain"), O_CREAT | O_WRONLY, 0666)));  // the umask applies
    REC(s, ::mkdir(s.p("plaindir"), 0777));
    ::umask(old);
    for (const char* n : {"d/f", "d/sub", "d/fifo", "d/tmp", "plain", "plaindir"}) {
      s.stat(n);
      s.getxattr(n, kAccess, 256);
      s.getxattr(n, kDefault, 256);
    }
    s.lstat("d/link");
    // The subdirectory passes the default on again.
    REC(s, ::close(::open(s.p("d/sub/deeper"), O_CREAT | O_WRONLY, 0600)));
    s.stat("d/sub/deeper");
    s.getxattr("d/sub/deeper", kAccess, 256);
    s.as_user(kUser, kGroup, [](Side& c) {
      REC(c, ::close(::open(c.p("d/f"), O_RDWR)));  // inherited named entry, masked to rw
      REC(c, ::close(::open(c.p("d/sub/x"), O_CREAT | O_WRONLY, 0600)));  // rwx on d/sub
    });
    s.as_user(kOther, kOtherGroup, [](Side& c) {
      REC(c, ::open(c.p("d/f"), O_RDWR));
      REC(c, ::open(c.p("d/sub/y"), O_CREAT | O_WRONLY, 0600));
    });
    // Removing the default ACL: new files take the umask again.
    REC(s, ::removexattr(s.p("d"), kDefault));
    old = ::umask(027);
    REC(s, ::close(::open(s.p("d/after"), O_CREAT | O_WRONLY, 0666)));
    ::umask(old);
    s.stat("d/after");
    s.getxattr("d/after", kAccess, 256);
  });
}
