// Restart without unmounting: `tmpfsctl restart DIR` or SIGUSR2 hands the
// mount to a new daemon process (the installed binary, perhaps newer), and
// the mount never goes away (docs/design.md, "Restart without unmounting").
//
//   old daemon                                 new daemon (exec'd by the old)
//   quiesce: readers stop before their next
//     read of /dev/fuse (requests wait in the
//     kernel), in-flight ones are answered
//   fork + exec BINARY ARGS... --takeover F,S,R[,L] --> start-up
//   the state into the pipe S: the handshake, ------> loads it as it comes;
//     the limits, the directory handles, the          a session on fd F
//     live image (core/namespace_image.cc)            without mounting;
//                                                     libfuse answers the
//                                                     replayed INIT
//   reads R <------------------------- "ready" ---------- serves requests
//   MAINPID=new (sd_notify), _exit(0): no unmount
//
// Until "ready" the old daemon serves again on any failure (the new one
// exits, says "fail ...", or takes longer than kReadyWait: it is killed).
// F is /dev/fuse (the same open file: the kernel sees one connection), S the
// state's pipe (or a memfd or file: restart.cc), R the report pipe's write
// end, L the --persist lock (the same flock).
//
// Not with FUSE over io_uring: the rings' entries belong to the old
// process's io_uring and go with it (refused, with the reason).
//
// Threads: restart() on the stats thread, while the FUSE loop runs.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "daemon/wire.h"

namespace tmpfsd {

struct Filesystem;
class Namespace;
class Persist;

// The hidden option --takeover F,S,R[,L] of the new daemon.
struct Takeover {
  int fuse_fd = -1, state_fd = -1, ready_fd = -1, lock_fd = -1;
};
bool parse_takeover(const std::string& text, Takeover* out);

struct RestartContext {
  Filesystem* fs = nullptr;
  Namespace* ns = nullptr;
  Wire* wire = nullptr;
  int fuse_fd = -1;
  int lock_fd = -1;               // --persist's lock, or -1
  std::string default_binary;     // the path this daemon was started from
  std::vector<std::string> args;  // its arguments, without argv[0]
  std::string cwd;                // the directory it was started in (args are relative to it)
};

inline constexpr std::chrono::seconds kQuiesceWait{10};
inline constexpr std::chrono::seconds kReadyWait{120};

// Whether a restart into `binary` can be tried now: 0, or an errno and why.
int restart_possible(const RestartContext& c, const std::string& binary, std::string* why);
// Hands over as drawn above. On success does not return (the process
// exits 0 without unmounting); otherwise false with `why`, serving again.
bool restart(const RestartContext& c, const std::string& binary, std::string* why);

// The new daemon's side: fills `ns` (fresh) and `fs`'s directory handles
// from the state on `fd`; the handshake for Wire::attach_initialised.
bool load_handover(int fd, Namespace& ns, Filesystem& fs, Wire::Handshake* hs, std::string* why);
// At the end of a daemon that took a mount over (libfuse did not mount it,
// so fuse_session_unmount does nothing): unmounts it unless it is gone.
void unmount_taken_over(const std::string& mountpoint, int fuse_fd);

}  // namespace tmpfsd
