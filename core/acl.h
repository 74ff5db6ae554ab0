// POSIX ACLs as tmpfs keeps them: the xattr form (system.posix_acl_access
// and system.posix_acl_default, version 2) and the kernel's rules that tie
// an access ACL to the mode bits (fs/posix_acl.c).
//
// The FUSE kernel client, with FUSE_POSIX_ACL, checks permissions against
// the ACLs itself but leaves these rules to the daemon: setting an access
// ACL updates the mode (posix_acl_update_mode), chmod updates the ACL
// (posix_acl_chmod), and a new inode takes its parent's default ACL
// (posix_acl_create). Pure functions; the Namespace calls them under its lock.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tmpfsd::acl {

inline constexpr std::string_view kAccess = "system.posix_acl_access";
inline constexpr std::string_view kDefault = "system.posix_acl_default";
inline bool is_acl_name(std::string_view name) { return name == kAccess || name == kDefault; }

// Tags (linux/posix_acl.h), in the order a valid ACL lists them.
enum Tag : uint16_t {
  kUserObj = 0x01,
  kUser = 0x02,
  kGroupObj = 0x04,
  kGroup = 0x08,
  kMask = 0x10,
  kOther = 0x20,
};

struct Entry {
  uint16_t tag;
  uint16_t perm;  // rwx in the low three bits
  uint32_t id;    // uid or gid for kUser / kGroup
};

using Acl = std::vector<Entry>;

// The xattr value, or nullopt when it is not a valid ACL (EINVAL): version
// 2, entries sorted by tag and id, exactly one USER_OBJ, GROUP_OBJ and
// OTHER, a MASK when there are named entries, perms within rwx.
std::optional<Acl> parse(std::string_view value);
std::string format(const Acl& acl);

// posix_acl_equiv_mode: the mode's permission bits as the ACL says (the
// mask stands for the group bits); returns true when the ACL says more than
// the mode can (named entries or a mask).
bool to_mode(const Acl& acl, mode_t* mode);
// posix_acl_chmod: the ACL's owner, other and mask (or group) entries
// follow a new mode.
void chmod(Acl& acl, mode_t mode);
// posix_acl_create_masq: the parent's default ACL, cloned, and the create
// mode restrict each other; returns true when the result says more than
// the mode (then it becomes the new inode's access ACL).
bool create_masq(Acl& acl, mode_t* mode);

}  // namespace tmpfsd::acl
