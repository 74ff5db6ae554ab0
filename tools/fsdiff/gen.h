// gen.h — the seeded random op generator.
//
// The generator works over a small pool of names (six, up to three levels
// deep) so that operations collide: creates hit existing names, renames land
// on directories, unlinks race open descriptors. It keeps a rough guess of
// what exists (paths it has tried to create, slots it has tried to open) only
// to choose useful arguments more often; it never looks at real outcomes, so
// a sequence depends on the seed alone and can be shrunk and replayed.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "op.h"

namespace fsdiff {

class Generator {
 public:
  explicit Generator(uint64_t seed) : rng_(seed) {}
  Op next();

 private:
  uint64_t below(uint64_t n) { return n ? rng_() % n : 0; }
  bool chance(int percent) { return below(100) < uint64_t(percent); }
  std::string random_path();
  std::string pick_path();        // mostly a path that probably exists
  std::string pick_dir_path();    // for mkdir: a parent that probably exists
  int pick_slot();
  int64_t pick_off();
  int64_t pick_len();
  uint32_t pick_mode();

  std::mt19937_64 rng_;
  std::vector<std::string> known_;  // paths create ops have been generated for
  std::vector<std::string> dirs_;   // paths mkdir ops have been generated for
  bool open_[kSlots] = {};
};

}  // namespace fsdiff
