// The service manager's notify protocol (sd_notify(3)): every message
// tmpfsd sends to systemd, in one place.
//
// When NOTIFY_SOCKET is not set (no service manager listens: started by
// hand, by mount(8), or on a machine whose PID 1 is not systemd), every
// call here does nothing, says nothing and returns false.
//
// What is sent, and when:
//   READY=1              once the mount is live (INIT answered; Startup):
//                        -f: from the daemon; daemonised: from the parent,
//                        which is the service's main process, together with
//                        MAINPID=<the daemon> just before it exits, so that
//                        Type=notify works with NotifyAccess=main either way
//   STATUS=<usage>       with READY=1, then whenever it changes (checked
//                        every 5 s by the daemon's stats thread)
//   STOPPING=1           when the FUSE loop ends (SIGTERM, umount), with
//                        STATUS=unmounting DIR; no STATUS after it
//   EXTEND_TIMEOUT_USEC= while --persist saves the image after STOPPING=1:
//                        at its start and every 5 s, each time 60 s more
//                        (Persist::save), so that the unit's TimeoutStopSec
//                        does not kill a save that is progressing
//   STATUS=failed: ...   when the start fails (the one line the command prints)
//   MAINPID=<new daemon> from a daemon that handed the mount to a new one
//                        (daemon/restart.h), just before it exits
//
// STATUS lines match (ECMAScript / Python re):
//   ^(mounted on (/.*); ([0-9]+) MiB of data, ([0-9]+) MiB in frames, ([0-9]+) MiB in
//   swap|unmounting (/.*)|failed: .*)$
// kStatusRegex below; tests/mount/notify_test.py checks it.
//
// Threads: any; safe to call concurrently.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace tmpfsd::notify {

inline constexpr const char* kStatusRegex =
    "^(mounted on (/.*); ([0-9]+) MiB of data, ([0-9]+) MiB in frames, ([0-9]+) MiB in swap"
    "|unmounting (/.*)|failed: .*)$";

// NOTIFY_SOCKET is set: a service manager listens.
bool wanted();

// The usage line: "mounted on DIR; N MiB of data, N MiB in frames, N MiB in swap".
std::string usage(const std::string& mountpoint, uint64_t data_bytes, uint64_t frame_bytes,
                  uint64_t swap_bytes);

// READY=1 and STATUS=status; with main_pid > 0 also MAINPID=main_pid.
bool ready(const std::string& status, pid_t main_pid = 0);
// STATUS=line; after stopping(), sends nothing (and returns true).
bool status(const std::string& line);
// STOPPING=1 and STATUS=unmounting DIR.
bool stopping(const std::string& mountpoint);
// EXTEND_TIMEOUT_USEC=seconds * 1e6: the stop (or start) in progress may take
// that much longer from now.
bool extend_timeout(uint64_t seconds);
// STATUS=failed: message.
bool failed(const std::string& message);
// MAINPID=pid: the service's main process is `pid` from now on.
bool main_pid(pid_t pid);

}  // namespace tmpfsd::notify
