// runner.cc — one run: prepare the subdirectories, step, compare, report.
#include "runner.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "gen.h"
#include "side.h"

namespace fsdiff {
namespace {

// Makes DIR/sub exist and be empty, with a fixed mode (so that the parent of
// every top-level name compares equal whatever DIR itself looks like).
bool fresh_subdir(const std::string& dir, const std::string& sub, std::string* err) {
  std::string p = dir + "/" + sub;
  struct stat st;
  if (lstat(p.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      *err = p + " exists and is not a directory";
      return false;
    }
    if (!empty_dir(p, err)) return false;
    if (rmdir(p.c_str()) < 0) {
      *err = fmt::format("cannot remove {}: {}", p, strerror(errno));
      return false;
    }
  }
  if (mkdir(p.c_str(), 0755) < 0 || chmod(p.c_str(), 0755) < 0) {
    *err = fmt::format("cannot create {}: {}", p, strerror(errno));
    return false;
  }
  return true;
}

}  // namespace

RunResult run_ops(const RunConfig& cfg, std::vector<Op>* opsp, Generator* gen, size_t count) {
  std::vector<Op>& ops = *opsp;
  if (gen) ops.reserve(ops.size() + count);
  RunResult res;
  if (!fresh_subdir(cfg.dir_a, cfg.sub, &res.error) ||
      !fresh_subdir(cfg.dir_b, cfg.sub, &res.error)) {
    res.ok = false;
    return res;
  }
  Side a(cfg.dir_a + "/" + cfg.sub, cfg.ignore);
  Side b(cfg.dir_b + "/" + cfg.sub, cfg.ignore);
  if (!a.open(&res.error) || !b.open(&res.error)) {
    res.ok = false;
    return res;
  }
  const size_t walk_every = size_t(cfg.walk_every > 0 ? cfg.walk_every : 1);
  // --stats: how many ops of each kind succeeded, and how many time answers
  // were certain, to judge whether a seed exercises anything.
  size_t total[size_t(OpKind::Count_)] = {}, okc[size_t(OpKind::Count_)] = {};
  size_t sure_times = 0, unsure_times = 0;
  const size_t n = gen ? ops.size() + count : ops.size();
  for (size_t i = 0; i < n; i++) {
    if (gen) ops.push_back(gen->next());
    const Op& op = ops[i];
    if (cfg.verbose) fmt::print("{:6} {}\n", i, to_text(op));
    Outcome oa = a.apply(op);
    if (gen) gen->feedback(op, oa.ret);
    Outcome ob = b.apply(op);
    if ((i + 1) % walk_every == 0 || i + 1 == n) {
      a.walk(&oa, i + 1 == n);
      b.walk(&ob, i + 1 == n);
    }
    std::string diff = compare_outcomes(oa, ob);
    if (cfg.stats) {
      total[size_t(op.kind)]++;
      okc[size_t(op.kind)] += oa.ret >= 0;
      for (const auto& [k, v] : oa.facts) {
        for (const char* t : {"m=", "c=", "a="}) {
          size_t p = v.find(std::string(" ") + t);
          if (p == std::string::npos) continue;
          (v.compare(p + 3, 4, "any?") == 0 || v.compare(p + 3, 5, "same?") == 0 ? unsure_times
                                                                                 : sure_times)++;
        }
      }
    }
    if (diff.empty()) continue;

    res.diverged = true;
    res.step = i;
    std::string r =
        fmt::format("DIVERGENCE {} step={}\n  op: {}\n{}", cfg.label, i, to_text(op), diff);
    size_t from = i > 8 ? i - 8 : 0;
    if (from < i) {
      r += "  preceding ops:\n";
      for (size_t j = from; j < i; j++) r += fmt::format("    {:6} {}\n", j, to_text(ops[j]));
    }
    res.report = r;
    return res;
  }
  if (cfg.stats) {
    std::string s = "stats: kind ok/total:";
    for (size_t k = 0; k < size_t(OpKind::Count_); k++)
      s += fmt::format(" {}={}/{}", kind_name(OpKind(k)), okc[k], total[k]);
    s += fmt::format("\nstats: time answers certain={} uncertain={}\n", sure_times, unsure_times);
    fmt::print("{}", s);
  }
  return res;
}

}  // namespace fsdiff
