// The table of known divergences (see known_divergences.h and
// tools/fsdiff-known-divergences.md).
#include "known_divergences.h"

#include <stdexcept>

namespace mt {

namespace {
using S = KnownDivergence::Scope;
// In enum order; known_divergence() checks that.
constexpr KnownDivergence kTable[] = {
    {Known::StatxAttrFlags, "statx-attr-flags", 9, S::Step,
     "FUSE 7.38 has no statx op: the FUSE client fills no file-system STATX_ATTR_* bits", "0"},
    {Known::FifoTimes, "fifotimes", 6, S::Times,
     "pipe I/O never reaches the daemon and FUSE marks fifos S_NOCMTIME: their times stay put",
     "m:same c:same"},
    {Known::DirSeek, "dirseek", 7, S::Step,
     "the kernel seeks FUSE directories with generic_file_llseek without asking the daemon",
     "ret=0"},
    {Known::McWithinTick, "mc-tick", 10, S::Rule,
     "tmpfsd sees the kernel's internal GETATTRs as queries of ctime, so it may stamp fine where "
     "tmpfs stamps coarse",
     nullptr},
    {Known::AppendFcntl, "append-fcntl", 11, S::Step,
     "the FUSE client does not refuse fcntl() dropping O_APPEND on an append-only file (it "
     "never sets S_APPEND); the daemon still appends for that descriptor",
     "ret=0"},
    {Known::CopyNothingImmutable, "cfr-nothing-immutable", 14, S::Step,
     "the VFS checks S_IMMUTABLE before it shortens the copy to the source's end, and the FUSE "
     "client returns 0 for a copy of nothing without asking the daemon",
     "ret=0"},
    {Known::ChownSetidNonOwner, "chown-setid-non-owner", 15, S::Step,
     "the FUSE client strips the mode change chown implies on a set-ID file (HANDLE_KILLPRIV_V2), "
     "and the daemon cannot tell chown(-1, -1) from the kernel's own request before a write",
     "ret=0"},
};
}  // namespace

const KnownDivergence& known_divergence(Known id) {
  size_t i = static_cast<size_t>(id);
  if (i >= std::size(kTable) || kTable[i].id != id)
    throw std::logic_error("known_divergences: table out of enum order");
  return kTable[i];
}

const KnownDivergence* known_divergences(size_t* count) {
  *count = std::size(kTable);
  return kTable;
}

}  // namespace mt
