// core/acl: the xattr form of POSIX ACLs and the kernel's mode rules
// (fs/posix_acl.c), value by value.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <string>

#include "core/acl.h"

using namespace tmpfsd;

namespace {

acl::Acl named_acl() {
  return {{acl::kUserObj, 6, uint32_t(-1)},
          {acl::kUser, 7, 1000},
          {acl::kGroupObj, 4, uint32_t(-1)},
          {acl::kMask, 6, uint32_t(-1)},
          {acl::kOther, 0, uint32_t(-1)}};
}

}  // namespace

TEST_CASE("acl: the xattr value round-trips and invalid ones are refused", "[acl]") {
  std::string v = acl::format(named_acl());
  CHECK(v.size() == 4 + 5 * 8);
  auto back = acl::parse(v);
  REQUIRE(back);
  CHECK(acl::format(*back) == v);
  CHECK_FALSE(acl::parse(v.substr(0, 10)));  // not whole entries
  CHECK_FALSE(acl::parse(""));
  std::string bad_version = v;
  bad_version[0] = 1;
  CHECK_FALSE(acl::parse(bad_version));
  acl::Acl no_mask = named_acl();
  no_mask.erase(no_mask.begin() + 3);  // a named entry needs a mask
  CHECK_FALSE(acl::parse(acl::format(no_mask)));
  acl::Acl unsorted = named_acl();
  std::swap(unsorted[0], unsorted[2]);
  CHECK_FALSE(acl::parse(acl::format(unsorted)));
  acl::Acl two_users = named_acl();
  two_users.insert(two_users.begin() + 1, {acl::kUser, 1, 1000});  // the same id twice
  CHECK_FALSE(acl::parse(acl::format(two_users)));
  acl::Acl bad_perm = named_acl();
  bad_perm[0].perm = 8;
  CHECK_FALSE(acl::parse(acl::format(bad_perm)));
}

TEST_CASE("acl: mode bits from an access ACL, and chmod back into it", "[acl]") {
  mode_t mode = S_IFREG | 04777;
  CHECK(acl::to_mode(named_acl(), &mode));  // more than the mode can say
  CHECK(mode == (S_IFREG | 04660));         // the mask is the group bits
  acl::Acl minimal = {{acl::kUserObj, 7, uint32_t(-1)},
                      {acl::kGroupObj, 5, uint32_t(-1)},
                      {acl::kOther, 1, uint32_t(-1)}};
  mode = S_IFREG;
  CHECK_FALSE(acl::to_mode(minimal, &mode));
  CHECK(mode == (S_IFREG | 0751));
  acl::Acl a = named_acl();
  acl::chmod(a, 0751);
  CHECK(a[0].perm == 7);
  CHECK(a[1].perm == 7);  // named entries stay
  CHECK(a[2].perm == 4);  // the group entry stays: the mask takes the bits
  CHECK(a[3].perm == 5);
  CHECK(a[4].perm == 1);
  acl::chmod(minimal, 0640);
  CHECK(minimal[1].perm == 4);  // no mask: the group entry takes them
}

TEST_CASE("acl: a default ACL and the create mode restrict each other", "[acl]") {
  acl::Acl d = {{acl::kUserObj, 7, uint32_t(-1)},
                {acl::kUser, 7, 1000},
                {acl::kGroupObj, 5, uint32_t(-1)},
                {acl::kMask, 7, uint32_t(-1)},
                {acl::kOther, 5, uint32_t(-1)}};
  mode_t mode = S_IFREG | 0666;
  CHECK(acl::create_masq(d, &mode));
  CHECK(mode == (S_IFREG | 0664));
  CHECK(d[0].perm == 6);
  CHECK(d[1].perm == 7);  // named entries are not masked, the mask limits them
  CHECK(d[3].perm == 6);
  CHECK(d[4].perm == 4);
  acl::Acl plain = {{acl::kUserObj, 7, uint32_t(-1)},
                    {acl::kGroupObj, 0, uint32_t(-1)},
                    {acl::kOther, 0, uint32_t(-1)}};
  mode = S_IFDIR | 0777;
  CHECK_FALSE(acl::create_masq(plain, &mode));  // the mode says it all
  CHECK(mode == (S_IFDIR | 0700));
}
