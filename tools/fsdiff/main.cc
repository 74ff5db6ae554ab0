// fsdiff — differential tester for file systems: applies the same seeded
// random operations to two directories and reports the first step at which
// they behave differently. Also hosts fsx (--fsx FILE), the classic
// single-file data integrity exerciser.
//
// Exit status: 0 no divergence, 1 divergence (or fsx failure), 2 usage or
// setup error.
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <random>
#include <sstream>

#include <fmt/core.h>
#include <CLI/CLI.hpp>

#include "fsx.h"
#include "gen.h"
#include "runner.h"
#include "side.h"

namespace {

using namespace fsdiff;

struct Args {
  uint64_t seed = 0;
  bool seed_given = false;
  size_t ops = 1000;
  int procs = 1;
  bool minimize = false;
  bool any = false;
  double minimize_budget = 120;
  std::string replay, save, fsx_file, ignore;
  std::string dir_a, dir_b;
  int walk_every = 16;
  bool verbose = false;
  bool stats = false;
  int64_t fsx_max = 1 << 20;
};

bool parse_ignore(const std::string& list, Ignore* ig, std::string* err) {
  std::stringstream ss(list);
  std::string f;
  while (std::getline(ss, f, ',')) {
    if (f == "atime")
      ig->atime = true;
    else if (f == "mtime")
      ig->mtime = true;
    else if (f == "ctime")
      ig->ctime = true;
    else if (f == "dirsize")
      ig->dirsize = true;
    else if (f == "blocks")
      ig->blocks = true;
    else if (f == "seekdata")
      ig->seekdata = true;
    else if (f == "xattr")
      ig->xattr = true;
    else if (f == "mmaphole")
      ig->mmaphole = true;
    else if (f == "fifotimes")
      ig->fifotimes = true;
    else if (f == "dirseek")
      ig->dirseek = true;
    else if (f == "flagerrno")
      ig->flagerrno = true;
    else if (!f.empty()) {
      *err =
          "unknown --ignore field '" + f +
          "' "
          "(atime,mtime,ctime,dirsize,blocks,seekdata,xattr,mmaphole,fifotimes,dirseek,flagerrno)";
      return false;
    }
  }
  return true;
}

void print_block(const std::string& s) {
  // One write per report, so that reports of parallel processes do not interleave.
  fwrite(s.data(), 1, s.size(), stdout);
  fflush(stdout);
}

// Runs (or replays) one sequence on DIR/pK and reports; returns the exit status.
// With gen, generates args.ops ops as it goes; else replays ops.
int run_one(const Args& args, const RunConfig& base, int proc, std::vector<Op> ops,
            Generator* gen = nullptr) {
  RunConfig cfg = base;
  cfg.sub = fmt::format("p{}", proc);
  cfg.label = args.replay.empty() ? fmt::format("seed={} proc={}", args.seed + uint64_t(proc), proc)
                                  : fmt::format("replay={}", args.replay);
  RunResult r = run_ops(cfg, &ops, gen, gen ? args.ops : 0);
  if (!r.ok) {
    print_block(fmt::format("fsdiff: {}\n", r.error));
    return 2;
  }
  if (!r.diverged) {
    print_block(fmt::format("fsdiff: {}: {} ops, no divergence\n", cfg.label, ops.size()));
    return 0;
  }
  print_block(r.report);
  std::vector<Op> keep(ops.begin(), ops.begin() + long(r.step + 1));
  if (args.minimize) {
    keep = minimize(cfg, std::move(ops), r, args.any, args.minimize_budget);
    RunResult again = run_ops(cfg, &keep);
    std::string out = "minimized sequence (replay with --replay FILE):\n--- 8< ---\n";
    for (const Op& op : keep) out += to_text(op) + "\n";
    out += "--- >8 ---\n";
    if (again.diverged) out += again.report;
    print_block(out);
  }
  if (!args.save.empty()) {
    std::string file = args.procs > 1 ? fmt::format("{}.p{}", args.save, proc) : args.save;
    std::string err;
    std::string header = fmt::format("# fsdiff {}{}: diverges at the last op\n", cfg.label,
                                     args.minimize ? " (minimized)" : "");
    if (!write_ops_file(file, keep, header, &err))
      print_block("fsdiff: " + err + "\n");
    else
      print_block(fmt::format("fsdiff: sequence saved to {}\n", file));
  }
  return 1;
}

int run_procs(const Args& args, const RunConfig& cfg) {
  std::vector<pid_t> kids;
  fflush(stdout);
  const pid_t parent = getpid();
  for (int k = 0; k < args.procs; k++) {
    pid_t pid = fork();
    if (pid < 0) {
      perror("fork");
      return 2;
    }
    if (pid == 0) {
      // A killed parent (a CI timeout) must not leave runs behind.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(2);  // it died before the prctl
      Args mine = args;
      Generator gen(args.seed + uint64_t(k));
      int rc = run_one(mine, cfg, k, {}, &gen);
      fflush(stdout);
      _exit(rc);
    }
    kids.push_back(pid);
  }
  int worst = 0;
  for (size_t k = 0; k < kids.size(); k++) {
    int st = 0;
    waitpid(kids[k], &st, 0);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    if (!WIFEXITED(st)) print_block(fmt::format("fsdiff: proc {} died (status {:#x})\n", k, st));
    if (rc == 1 || (rc == 2 && worst == 0)) worst = rc;
  }
  return worst;
}

// --selftest: the text form must round-trip, or saved sequences would not
// replay what ran. Feeds the generator fake successes to reach every path.
int selftest(uint64_t seed, size_t n) {
  Generator gen(seed);
  for (size_t i = 0; i < n; i++) {
    Op op = gen.next();
    gen.feedback(op, i % 3 ? 0 : -1);
    std::string text = to_text(op), err;
    auto back = parse_op(text, &err);
    if (!back || to_text(*back) != text) {
      fmt::print("selftest: op {} does not round-trip: {} -> {}\n", i, text,
                 back ? to_text(*back) : err);
      return 1;
    }
  }
  fmt::print("selftest: {} ops round-trip\n", n);
  return 0;
}

bool check_dir(const std::string& d, std::string* err) {
  struct stat st;
  if (stat(d.c_str(), &st) < 0 || !S_ISDIR(st.st_mode)) {
    *err = d + " is not a directory";
    return false;
  }
  if (d == "/" || d.empty()) {
    *err = "refusing to use / (its contents would be removed)";
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  CLI::App app{"fsdiff: compare two file systems under the same random operations"};
  app.add_option("--seed", args.seed, "random seed (default: random, printed)");
  app.add_option("--ops", args.ops, "number of operations (per process)");
  app.add_option("--procs", args.procs, "processes, each on its own subtree DIR/pK with seed+K")
      ->check(CLI::Range(1, 64));
  app.add_flag("--minimize", args.minimize, "shrink a diverging sequence and print it");
  app.add_flag("--any", args.any,
               "with --minimize: accept any divergence, not only the same op kind");
  app.add_option("--minimize-budget", args.minimize_budget, "seconds to spend minimizing");
  app.add_option("--replay", args.replay, "replay the ops in FILE instead of generating");
  app.add_option("--save", args.save, "write the diverging (or minimized) sequence to FILE");
  app.add_option("--walk-every", args.walk_every, "compare the whole tree every N ops")
      ->check(CLI::Range(1, 1000000));
  app.add_option("--ignore", args.ignore,
                 "comma-separated fields not to compare: "
                 "atime,mtime,ctime,dirsize,blocks,seekdata,xattr,mmaphole,fifotimes,dirseek,"
                 "flagerrno");
  app.add_flag("-v,--verbose", args.verbose, "print every op");
  app.add_flag("--stats", args.stats, "print per-kind success counts after a run");
  app.add_option("--fsx", args.fsx_file, "fsx mode: exercise this one file against a model");
  app.add_option("--fsx-max", args.fsx_max, "fsx: largest offset of the dense region");
  size_t selftest_ops = 0;
  app.add_option("--selftest", selftest_ops, "check that N generated ops survive print and parse")
      ->group("");
  app.add_option("dir_a", args.dir_a, "first directory (its contents are removed)");
  app.add_option("dir_b", args.dir_b, "second directory (its contents are removed)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  args.seed_given = app.count("--seed") > 0;
  if (!args.seed_given) args.seed = std::random_device{}() % 1000000;
  setvbuf(stdout, nullptr, _IOLBF, 0);

  if (selftest_ops) return selftest(args.seed, selftest_ops);
  std::string err;
  if (!args.fsx_file.empty()) {
    FsxOptions fo;
    fo.file = args.fsx_file;
    fo.ops = app.count("--ops") ? args.ops : 100000;
    fo.seed = args.seed;
    fo.max_dense = args.fsx_max;
    Ignore ig;
    if (!parse_ignore(args.ignore, &ig, &err)) {
      fmt::print(stderr, "fsdiff: {}\n", err);
      return 2;
    }
    fo.check_holes = !ig.seekdata;
    return fsx_main(fo);
  }

  RunConfig cfg;
  if (args.dir_a.empty() || args.dir_b.empty()) {
    fmt::print(stderr, "fsdiff: need DIR_A and DIR_B (or --fsx FILE)\n{}", app.help());
    return 2;
  }
  if (!check_dir(args.dir_a, &err) || !check_dir(args.dir_b, &err) ||
      !parse_ignore(args.ignore, &cfg.ignore, &err)) {
    fmt::print(stderr, "fsdiff: {}\n", err);
    return 2;
  }
  struct stat sa, sb;
  if (stat(args.dir_a.c_str(), &sa) == 0 && stat(args.dir_b.c_str(), &sb) == 0 &&
      sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino) {
    fmt::print(stderr, "fsdiff: DIR_A and DIR_B are the same directory\n");
    return 2;
  }
  cfg.dir_a = args.dir_a;
  cfg.dir_b = args.dir_b;
  cfg.walk_every = args.walk_every;
  cfg.verbose = args.verbose;
  cfg.stats = args.stats;
  // Modes of created files must not depend on the caller's umask.
  umask(022);

  // Read a replay file before removing anything: a typo must not cost data.
  std::vector<Op> ops;
  if (!args.replay.empty() && !read_ops_file(args.replay, &ops, &err)) {
    fmt::print(stderr, "fsdiff: {}\n", err);
    return 2;
  }
  if (!empty_dir(args.dir_a, &err) || !empty_dir(args.dir_b, &err)) {
    fmt::print(stderr, "fsdiff: {}\n", err);
    return 2;
  }
  if (!args.replay.empty()) {
    args.procs = 1;
    return run_one(args, cfg, 0, std::move(ops));
  }
  fmt::print("fsdiff: seed={} ops={} procs={}\n", args.seed, args.ops, args.procs);
  if (args.procs == 1) {
    Generator gen(args.seed);
    return run_one(args, cfg, 0, {}, &gen);
  }
  return run_procs(args, cfg);
}
