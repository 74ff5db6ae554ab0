// minimize.cc — shrinking a diverging op sequence (delta debugging).
//
// ddmin: split the sequence into n chunks and try dropping each; if the rest
// still diverges keep it (and coarsen), otherwise split finer, down to single
// ops. Then each remaining op's length and offsets are shrunk where the
// divergence survives it. "Still diverges" means: diverges at an op of the same kind as the
// original divergence (so shrinking does not wander off to an unrelated,
// maybe shallower difference), or at any op if asked. Ops after the diverging
// step are dropped after every success, since they never ran.
#include <algorithm>
#include <chrono>

#include <fmt/core.h>

#include "runner.h"

namespace fsdiff {

std::vector<Op> minimize(const RunConfig& cfg, std::vector<Op> ops, const RunResult& first,
                         bool any_divergence, double budget_seconds) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(
                                           std::chrono::duration<double>(budget_seconds));
  const OpKind kind = ops[first.step].kind;
  ops.resize(first.step + 1);

  RunConfig quiet = cfg;
  quiet.verbose = false;
  size_t tries = 0;
  auto still_fails = [&](std::vector<Op>* cand) {
    tries++;
    RunResult r = run_ops(quiet, cand);
    if (!r.ok || !r.diverged) return false;
    if (!any_divergence && (*cand)[r.step].kind != kind) return false;
    cand->resize(r.step + 1);
    return true;
  };

  size_t n = 2;
  bool timed_out = false;
  while (ops.size() >= 2) {
    if (clock::now() > deadline) {
      timed_out = true;
      break;
    }
    size_t chunk = (ops.size() + n - 1) / n;
    bool reduced = false;
    for (size_t start = 0; start < ops.size(); start += chunk) {
      std::vector<Op> cand(ops.begin(), ops.begin() + long(start));
      cand.insert(cand.end(), ops.begin() + long(std::min(ops.size(), start + chunk)), ops.end());
      if (!cand.empty() && still_fails(&cand)) {
        ops = std::move(cand);
        n = std::max<size_t>(n - 1, 2);
        reduced = true;
        break;
      }
      if (clock::now() > deadline) break;
    }
    if (!reduced) {
      if (n >= ops.size()) break;
      n = std::min(n * 2, ops.size());
    }
  }
  // Then make the survivors smaller: lengths and offsets as small as still
  // diverges, so the printed sequence reads like a hand-written test.
  for (size_t i = 0; i < ops.size() && !timed_out; i++) {
    for (int64_t Op::*field : {&Op::len, &Op::off, &Op::off2}) {
      int64_t v = ops[i].*field;
      if (v <= 0) continue;
      for (int64_t t : {int64_t(0), int64_t(1), v / 64, v / 8, v / 2}) {
        // A zero length on the diverging op itself would turn, say, a data
        // difference into a different (size) one; keep at least a byte.
        if (t >= v || (t == 0 && field == &Op::len && i + 1 == ops.size())) continue;
        std::vector<Op> cand = ops;
        cand[i].*field = t;
        if (still_fails(&cand) && cand.size() == ops.size()) {
          ops = std::move(cand);
          break;
        }
      }
      if (clock::now() > deadline) {
        timed_out = true;
        break;
      }
    }
  }
  fmt::print("minimize: {} ops after {} runs{}\n", ops.size(), tries,
             timed_out ? " (time budget reached; may shrink further)" : "");
  return ops;
}

}  // namespace fsdiff
