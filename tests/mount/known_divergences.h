// Known divergences: the one table of steps where B (tmpfsd) may differ from
// A (kernel tmpfs) because FUSE makes the difference unavoidable, or because a
// feature is a declared gap. Each entry is an entry of
// tools/fsdiff-known-divergences.md (the project's one list) and names its
// number there; keep the two in step.
//
// How a test uses an entry: `s.known(mt::Known::X)` right before a step marks
// that step (the next transcript entry) as the place where X shows. When B is
// tmpfsd, the comparison then does not compare A's outcome with B's; it
// requires B's outcome to be exactly `b_outcome` (tmpfsd's documented
// behaviour), so a change in tmpfsd fails the test until the entry is updated
// or removed. Steps that only make sense after the divergent step (using the
// fd O_TMPFILE did not give, say) go under `if (s.dependent_steps_run(X))`,
// which is false on both sides when B is tmpfsd, and records that it skipped
// them. In tmpfs-vs-tmpfs mode nothing is excused: marks are ignored and
// dependent steps run.
//
// A `Scope::Times` entry marks the next stat record, and only its "moved /
// same" part becomes the excused step ("times of KEY"); every other field of
// the record is still compared. A `Scope::Rule` entry is not attached to
// steps: the harness applies it everywhere, on both sides (see record_stat).
//
// Thread-safety: the table is constant.
#pragma once

#include <cstddef>

namespace mt {

enum class Known {
  StatxAttrFlags,        // statx: file-system bits of stx_attributes_mask
  FifoTimes,             // fifo mtime/ctime after pipe I/O
  DirSeek,               // lseek on a directory with SEEK_DATA/SEEK_HOLE/SEEK_END
  McWithinTick,          // order of mtime and ctime within one coarse clock tick
  AppendFcntl,           // fcntl(F_SETFL) dropping O_APPEND on an append-only file
  CopyNothingImmutable,  // copy_file_range of nothing into an immutable file
  ChownSetidNonOwner,    // chown(f, -1, -1) of a set-ID file by a non-owner
};

struct KnownDivergence {
  enum class Scope { Step, Times, Rule };
  Known id;
  const char* name;  // short name printed in transcripts
  int list_entry;    // number in tools/fsdiff-known-divergences.md
  Scope scope;
  const char* reason;     // one line: why B differs
  const char* b_outcome;  // what B records for the marked step, exactly (null for a Rule)
};

const KnownDivergence& known_divergence(Known id);
// The whole table, in enum order (for printing and self-tests).
const KnownDivergence* known_divergences(size_t* count);

}  // namespace mt
