// POSIX ACL rules, as the kernel's fs/posix_acl.c. See acl.h.
#include "core/acl.h"

#include <sys/stat.h>

#include <bit>
#include <cstring>

namespace tmpfsd::acl {
namespace {

constexpr uint32_t kVersion = 2;
constexpr uint32_t kUndefinedId = uint32_t(-1);
constexpr size_t kHeader = 4, kEntry = 8;

void put16(std::string& out, uint16_t v) { out.append(reinterpret_cast<const char*>(&v), 2); }
void put32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }

// The entry that stands for the group class: the mask, else the owning
// group's entry (fs/posix_acl.c's choice in chmod_masq and create_masq).
Entry* group_class(Acl& acl) {
  Entry* group_obj = nullptr;
  for (Entry& e : acl) {
    if (e.tag == kMask) return &e;
    if (e.tag == kGroupObj) group_obj = &e;
  }
  return group_obj;
}

}  // namespace

std::optional<Acl> parse(std::string_view value) {
  if (value.size() < kHeader || (value.size() - kHeader) % kEntry != 0) return std::nullopt;
  uint32_t version;
  std::memcpy(&version, value.data(), 4);
  if (version != kVersion) return std::nullopt;
  Acl acl;
  int count[6] = {};  // entries of each tag, by the tag's bit
  for (size_t off = kHeader; off < value.size(); off += kEntry) {
    Entry e;
    std::memcpy(&e.tag, value.data() + off, 2);
    std::memcpy(&e.perm, value.data() + off + 2, 2);
    std::memcpy(&e.id, value.data() + off + 4, 4);
    if (e.perm & ~uint16_t(S_IRWXO)) return std::nullopt;
    if (e.tag == 0 || e.tag > kOther || (e.tag & (e.tag - 1))) return std::nullopt;
    bool named = e.tag == kUser || e.tag == kGroup;
    if (!acl.empty()) {  // posix_acl_valid: tags in order, named ids ascending
      const Entry& prev = acl.back();
      if (e.tag < prev.tag) return std::nullopt;
      if (e.tag == prev.tag && (!named || e.id <= prev.id)) return std::nullopt;
    }
    if (!named) e.id = kUndefinedId;
    ++count[std::countr_zero(e.tag)];
    acl.push_back(e);
  }
  auto n = [&count](Tag t) { return count[std::countr_zero(uint16_t(t))]; };
  if (n(kUserObj) != 1 || n(kGroupObj) != 1 || n(kOther) != 1) return std::nullopt;
  if (n(kUser) + n(kGroup) > 0 && n(kMask) == 0) return std::nullopt;
  return acl;
}

std::string format(const Acl& acl) {
  std::string out;
  out.reserve(kHeader + kEntry * acl.size());
  put32(out, kVersion);
  for (const Entry& e : acl) {
    put16(out, e.tag);
    put16(out, e.perm);
    put32(out, e.id);
  }
  return out;
}

bool to_mode(const Acl& acl, mode_t* mode) {
  mode_t bits = 0;
  bool not_equiv = false;
  for (const Entry& e : acl) {
    switch (e.tag) {
      case kUserObj:
        bits |= mode_t(e.perm & S_IRWXO) << 6;
        break;
      case kGroupObj:
        bits |= mode_t(e.perm & S_IRWXO) << 3;
        break;
      case kOther:
        bits |= e.perm & S_IRWXO;
        break;
      case kMask:
        bits = (bits & ~mode_t(S_IRWXG)) | (mode_t(e.perm & S_IRWXO) << 3);
        not_equiv = true;
        break;
      default:
        not_equiv = true;
        break;
    }
  }
  *mode = (*mode & ~mode_t(S_IRWXU | S_IRWXG | S_IRWXO)) | bits;
  return not_equiv;
}

void chmod(Acl& acl, mode_t mode) {
  for (Entry& e : acl) {
    if (e.tag == kUserObj) e.perm = uint16_t((mode & S_IRWXU) >> 6);
    if (e.tag == kOther) e.perm = uint16_t(mode & S_IRWXO);
  }
  if (Entry* g = group_class(acl)) g->perm = uint16_t((mode & S_IRWXG) >> 3);
}

bool create_masq(Acl& acl, mode_t* mode_p) {
  mode_t mode = *mode_p;
  bool not_equiv = false;
  for (Entry& e : acl) {
    if (e.tag == kUserObj) {
      e.perm &= uint16_t((mode >> 6) | ~mode_t(S_IRWXO));
      mode &= (mode_t(e.perm) << 6) | ~mode_t(S_IRWXU);
    } else if (e.tag == kOther) {
      e.perm &= uint16_t(mode | ~mode_t(S_IRWXO));
      mode &= mode_t(e.perm) | ~mode_t(S_IRWXO);
    } else if (e.tag != kGroupObj) {
      not_equiv = true;  // named entries and the mask
    }
  }
  if (Entry* g = group_class(acl)) {
    g->perm &= uint16_t((mode >> 3) | ~mode_t(S_IRWXO));
    mode &= (mode_t(g->perm) << 3) | ~mode_t(S_IRWXG);
  }
  *mode_p = (*mode_p & ~mode_t(S_IRWXU | S_IRWXG | S_IRWXO)) | mode;
  return not_equiv;
}

}  // namespace tmpfsd::acl
