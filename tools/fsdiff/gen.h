// gen.h — the seeded random op generator.
//
// The generator works over a small pool of names (six, up to three levels
// deep) so that operations collide: creates hit existing names, renames land
// on directories, unlinks race open descriptors. To choose useful arguments
// (paths that exist, slots that hold a descriptor) it is told the outcome of
// each op on side A (feedback()) and keeps a rough model of the tree. So a
// sequence depends on the seed and on A's answers; every run records the ops
// it generated, and it is that record, not the seed, that --minimize shrinks
// and --replay reads back.
#pragma once

#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "op.h"

namespace fsdiff {

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}
  Op next();
  // The outcome of op on side A: ret (>= 0 success) only.
  void feedback(const Op& op, int64_t ret);

 private:
  uint64_t below(uint64_t n) { return n ? rng_() % n : 0; }
  bool chance(int percent) { return below(100) < uint64_t(percent); }
  std::string random_path();
  std::string pick_existing(char type);  // type 0: any
  std::string pick_path();               // mostly a path that exists
  std::string pick_file_path();          // mostly an existing regular file
  std::string pick_new_path();           // mostly a new name in an existing directory
  void remove_tree(const std::string& p);
  void move_tree(const std::string& from, const std::string& to);
  int pick_slot();
  int64_t pick_off();
  int64_t pick_len();
  uint32_t pick_mode();

  std::mt19937_64 rng_;
  std::map<std::string, char> tree_;     // path -> 'f' file, 'd' dir, 'l' link, 'p' fifo
  bool open_[kSlots] = {};               // slot holds a descriptor on side A
  std::string slot_path_[kSlots];        // the path it was opened by (empty: none, O_TMPFILE)
  std::set<std::string> ia_flagged_;     // paths given immutable or append-only on side A
  std::string xattr_path_, xattr_name_;  // the last xattr set on side A
};

}  // namespace fsdiff
