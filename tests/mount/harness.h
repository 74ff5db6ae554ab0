// Mount-level differential tests: the harness.
//
// Every behaviour is run through the kernel twice: on A, a kernel tmpfs
// mounted by the test (the oracle), and on B, the mount under test (tmpfsd,
// or a second kernel tmpfs when TMPFSD_BIN is unset or empty). A scenario is
// a function `void(Side&)` that performs system calls through the small
// recorder API of Side; each call appends an Entry (what was done, what came
// back) to the side's transcript. The test then compares the two transcripts
// entry by entry and reports the first difference (and a few more).
//
// What is never recorded, because it legitimately differs between two
// mounts: inode numbers, st_dev, absolute timestamps (except values the
// scenario itself set with utimensat), st_blksize, file descriptor numbers,
// and statfs free counts unless the scenario asks for them.
//
// Mounts are owned by RAII guards (Mount); every mount point is also
// registered in a fixed table so that a fatal signal or the end of the
// program still unmounts what this process mounted and stops the daemons it
// started, and nothing else.
//
// Thread-safety: none. Scenarios run on the main thread; the concurrency test
// uses its own threads on B directly, not through Side.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "known_divergences.h"

namespace mt {

// Options for a pair of mounts; both sides get the same ones.
struct MountOptions {
  std::string size = "256m";    // size=
  uint64_t nr_inodes = 100000;  // nr_inodes=
  std::optional<mode_t> mode;   // mode= (octal)
  std::optional<uid_t> uid;     // uid=
  std::optional<gid_t> gid;     // gid=
  std::string memory;           // tmpfsd --memory; empty: same as size, at least 64m
  // tmpfsd is started as users start it: daemonised (no -f), and the mount
  // is live when the command returns. foreground: -f, for a test that
  // needs the daemon as its own child on purpose.
  bool foreground = false;
  std::vector<std::string> daemon_args;  // more tmpfsd arguments (--swap, ...)

  std::string kernel_option_string() const;  // "size=..,nr_inodes=..[,mode=..]..."
};

// Prints what tmpfsd `pid` is doing (thread stacks, counters: the script
// hang_report.sh, TMPFSD_HANG_REPORT) to stderr. For a test out of time.
void hang_report(pid_t pid, const std::string& log_path);

// Every test case has a time bound (MT_CASE_TIMEOUT seconds, default 240):
// past it, the watchdog prints the hang report of every daemon this process
// started, stops them, and ends the run as a failure.
void start_watchdog();

// True when B is tmpfsd (TMPFSD_BIN set and non-empty).
bool testing_tmpfsd();
std::string tmpfsd_bin();
// "tmpfs-vs-tmpfs" or "tmpfs-vs-tmpfsd(<path>)".
std::string mode_description();

// One mounted file system in its own mkdtemp directory under /tmp.
// Destruction unmounts it (SIGTERM to the daemon, waitpid with a timeout,
// MNT_DETACH if still mounted) and removes the directory.
class Mount {
 public:
  enum class Kind { KernelTmpfs, Tmpfsd };
  // Throws std::runtime_error (with the daemon's log tail) on failure.
  Mount(Kind kind, const MountOptions& opts);
  ~Mount();
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  const std::string& path() const { return path_; }
  Kind kind() const { return kind_; }
  pid_t pid() const { return pid_; }
  // True while the daemon process (if any) has not exited.
  bool daemon_alive();
  // Stops the daemon (or unmounts the kernel tmpfs) now. Returns an empty
  // string when everything went as the contract says (exit status 0, mount
  // gone), else a description of what went wrong. Idempotent.
  std::string stop();
  std::string log_tail() const;
  const std::string& log_path() const { return log_path_; }

 private:
  Kind kind_;
  std::string path_;
  std::string log_path_;
  std::string pid_path_;
  pid_t pid_ = -1;
  bool stopped_ = false;
  int slot_ = -1;  // index in the emergency table
};

// A and B, created with the same options.
struct MountPair {
  explicit MountPair(const MountOptions& opts = {});
  MountOptions opts;
  std::unique_ptr<Mount> a;  // kernel tmpfs, the oracle
  std::unique_ptr<Mount> b;  // under test
};

// The pair with default options shared by all tests that need nothing else.
MountPair& shared_pair();
// Called at program end: destroys the shared pair and checks that nothing
// this process mounted is still mounted. Returns the number of problems
// (daemon exit anomalies + leftover mounts), after printing them.
int shutdown_all();
// Record a problem that is not attached to a test (e.g. a daemon that did
// not exit 0 on SIGTERM while a shared pair was torn down).
void record_anomaly(const std::string& what);

struct Entry {
  std::string op;   // what was done, e.g. "open(f, O_RDONLY)"
  std::string out;  // the outcome, e.g. "ret=3" or "-1 ENOENT"
  bool has_blob = false;
  std::string blob;  // data compared byte for byte (file contents)
  int known = -1;    // a Known marked on this step (see known_divergences.h), or -1
};

std::string errno_name(int e);

// Which stat fields to record. Times are recorded as "moved / same" relative
// to the previous snapshot with the same key, plus the order of mtime and
// ctime.
enum StatFlags : unsigned {
  kStatTimes = 1u << 0,    // record mtime/ctime movement (default)
  kStatAtime = 1u << 1,    // also atime movement
  kStatBlocks = 1u << 2,   // st_blocks (regular files: default)
  kStatExactAM = 1u << 3,  // exact atime/mtime values (after explicit utimensat)
  kStatNoSize = 1u << 4,   // do not record st_size (e.g. directory sizes)
  kStatDefault = kStatTimes | kStatBlocks,
};

class Side {
 public:
  Side(std::string name, std::string mount_root, std::string dir);

  const std::string& name() const { return name_; }  // "A" or "B"
  const std::string& dir() const { return dir_; }    // this test's directory
  const std::string& mount_root() const { return mount_root_; }
  // Absolute path of `rel` inside this test's directory; the pointer stays
  // valid for the life of the Side. rel may be empty (the directory itself).
  const char* p(std::string_view rel);
  // Absolute path relative to the mount root.
  const char* root_p(std::string_view rel);

  // Records ret (and errno when ret == -1). Returns ret.
  long rec(const std::string& op, long ret, int err);
  // Records only success ("ok") or the errno: for values that are not
  // comparable (file descriptors, mapping addresses). Returns ret.
  long rec_ok(const std::string& op, long ret, int err);
  void note(const std::string& op, const std::string& value);
  void blob(const std::string& op, const std::string& out, std::string data);

  // Known divergences (known_divergences.h). known(id) marks the next step
  // recorded (for a Times entry: the "moved / same" part of the next stat
  // record) as the step where `id` shows; when B is tmpfsd, that step must
  // give the table's b_outcome on B and is not compared with A.
  void known(Known id);
  // False on both sides when B is tmpfsd (the steps that depend on the
  // divergent one are skipped, and a note says so); true in tmpfs-vs-tmpfs
  // mode, where nothing is excused.
  bool dependent_steps_run(Known id);

  // stat/lstat/fstat snapshot. `key` names the object for time tracking;
  // empty key: the path.
  void stat(std::string_view rel, unsigned flags = kStatDefault, std::string key = {});
  void lstat(std::string_view rel, unsigned flags = kStatDefault, std::string key = {});
  void fstat(int fd, const std::string& key, unsigned flags = kStatDefault);
  // Records everything comparable from a struct stat.
  void record_stat(const std::string& op, const std::string& key, int ret, int err,
                   const struct stat& st, unsigned flags);

  // Whole contents through open+read (blob), or the errno. Reads cold: the
  // file's pages are written back and dropped from the kernel's page cache
  // first (fdatasync + POSIX_FADV_DONTNEED), so a FUSE daemon must serve them.
  void read_all(std::string_view rel);
  // pread of up to len bytes at off (blob); cold: as read_all.
  void pread(int fd, off_t off, size_t len, const std::string& label, bool cold = false);
  // Directory listing (readdir) as a sorted set of "name:type".
  void readdir(std::string_view rel);
  void listxattr(std::string_view rel);
  void getxattr(std::string_view rel, const std::string& name, size_t size);
  void readlink(std::string_view rel);
  // statfs fields that must match when both mounts have the same options:
  // f_bsize, f_blocks, f_files, f_namelen; with `free_counts` also f_bfree,
  // f_bavail, f_ffree.
  void statfs(std::string_view rel, bool free_counts);

  // Sleep long enough for the coarse kernel clock to move (HZ=250).
  static void tick();

  // Runs fn in a forked child with real/effective/saved uid and gid set to
  // uid/gid and no supplementary groups; its transcript entries come back
  // through a pipe and are appended here.
  void as_user(uid_t uid, gid_t gid, const std::function<void(Side&)>& fn);

  const std::vector<Entry>& transcript() const { return entries_; }

 private:
  struct Times {
    struct timespec a, m, c;
  };
  std::string name_;
  std::string mount_root_;
  std::string dir_;
  std::deque<std::string> paths_;  // storage for p()
  std::map<std::string, Times> snapshots_;
  std::vector<Entry> entries_;
  int pending_known_ = -1;  // set by known(), taken by the next push()

  void push(Entry e);
};

using Scenario = std::function<void(Side&)>;

// Runs the scenario on A then on B (each in a fresh subdirectory of its
// mount), compares transcripts, and fails the current Catch2 test with the
// first difference. Returns true when they match.
bool compare(const Scenario& scenario);
bool compare(MountPair& pair, const Scenario& scenario);
// Same, on a fresh pair with these options (created and destroyed here;
// the daemon's exit status on SIGTERM is checked too).
bool compare(const MountOptions& opts, const Scenario& scenario);

// The tolerance (ns) of the mtime/ctime order in stat records: one coarse
// clock tick (known divergence McWithinTick).
int64_t mc_tolerance_ns();

// Human-readable comparison; empty when the transcripts match. With
// `excuse_known` (the default when B is tmpfsd), a step marked with a known
// divergence matches when B's outcome is the table's b_outcome, whatever A's.
std::string diff_transcripts(const std::vector<Entry>& a, const std::vector<Entry>& b);
std::string diff_transcripts(const std::vector<Entry>& a, const std::vector<Entry>& b,
                             bool excuse_known);

// Recursively removes a directory tree (best effort).
void remove_tree(const std::string& path);

std::string hex_preview(std::string_view data, size_t off, size_t n);

}  // namespace mt

// REC(s, expr): evaluate a system call expression and record its result and
// errno, labelled with the expression's text.
#define REC(s, expr)                      \
  ([&]() -> long {                        \
    errno = 0;                            \
    long mt_r_ = static_cast<long>(expr); \
    int mt_e_ = errno;                    \
    return (s).rec(#expr, mt_r_, mt_e_);  \
  }())
// REC_OK(s, expr): as REC, but only success/errno is recorded (fds, etc.).
#define REC_OK(s, expr)                     \
  ([&]() -> long {                          \
    errno = 0;                              \
    long mt_r_ = static_cast<long>(expr);   \
    int mt_e_ = errno;                      \
    return (s).rec_ok(#expr, mt_r_, mt_e_); \
  }())
