// What the namespace charges against nr_inodes= and the xattr budget, as
// tmpfs counts it; shared by namespace.cc and namespace_data.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tmpfsd {

constexpr uint64_t kInodeSpace =
    1024;  // tmpfs's BOGO_INODE_SIZE: an inode's share of the xattr budget

// The xattr namespace that counts against the budget (user.*).
inline bool is_user_xattr(std::string_view name) { return name.starts_with("user."); }

// What one stored xattr costs the budget (tmpfs's simple_xattr size).
inline uint64_t xattr_space(std::string_view name, size_t size) { return 40 + size + name.size(); }

}  // namespace tmpfsd
