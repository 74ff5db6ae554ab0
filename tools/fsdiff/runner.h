// runner.h — applying an op sequence to both directories and comparing.
//
// A run starts from an empty subdirectory (DIR/pK) on each side, applies each
// op to A and then to B — alternating, so that "did the time move" is asked
// of both sides at the same point of the sequence — and compares the two
// outcomes after every step; every walk_every steps (and after the last) the
// whole tree is compared too. It stops at the first divergence.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "op.h"
#include "outcome.h"

namespace fsdiff {

struct RunConfig {
  std::string dir_a, dir_b;  // the directories given on the command line
  std::string sub = "p0";    // this run's subdirectory of both
  Ignore ignore;
  int walk_every = 16;
  bool verbose = false;  // print every op as it runs
  bool stats = false;    // print per-kind success counts at the end
  std::string label;     // "seed=N proc=K", for reports
};

struct RunResult {
  bool ok = true;  // false: could not set up (error says why)
  std::string error;
  bool diverged = false;
  size_t step = 0;     // index of the diverging op
  std::string report;  // human-readable, multi-line
};

class Generator;

// Runs *ops. With gen, first generates `count` ops one at a time (telling gen
// each outcome on side A) and appends them to *ops as they run.
RunResult run_ops(const RunConfig& cfg, std::vector<Op>* ops, Generator* gen = nullptr,
                  size_t count = 0);

// Delta debugging: returns a shorter sequence that still diverges at an op
// of the same kind (or at any op if any_divergence). Gives up shrinking
// further after budget_seconds. Every try re-runs from empty directories.
std::vector<Op> minimize(const RunConfig& cfg, std::vector<Op> ops, const RunResult& first,
                         bool any_divergence, double budget_seconds);

}  // namespace fsdiff
