// The FUSE edge: the only code that touches libfuse's request and reply
// structures. Each op turns a request into a Namespace call, turns the
// Result into a reply, replies exactly once, and never lets an exception
// reach libfuse's C code.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>

#include "core/namespace.h"
#include "core/page_cache.h"
#include "daemon/dir_handles.h"

namespace tmpfsd {

struct Filesystem {
  PageCache* cache = nullptr;
  Namespace* ns = nullptr;
  // Seconds the kernel may cache names (positive and negative) and
  // attributes. Long: every change to a name or an attribute passes through
  // this one kernel, which updates or drops its copy as it goes (create,
  // link, unlink, rename, setattr, write, read's atime). What changes
  // without the kernel knowing is invalidated by the daemon as it happens
  // (set-ID bits cleared by a write: Namespace::set_attr_hook; chattr's
  // ctime: reply_flags_set). A stat then costs no request.
  double entry_timeout = 86400.0;
  double attr_timeout = 86400.0;
  // The kernel caches writes and sends them in large batches; it then owns
  // the file size, O_APPEND offsets and mtime/ctime until it flushes them.
  bool writeback_cache = false;
  // -o strictatime: opens do not keep the kernel's cached pages (see
  // set_open_flags in fuse_ops.cc).
  bool strict_atime = false;
  // Called once INIT is answered-to-be: the mount serves requests from here
  // on (Startup::ready). Must not throw.
  std::function<void()> on_init;
  std::chrono::steady_clock::time_point started;
  // The raw protocol module (daemon/wire.h): libfuse hands its custom I/O
  // callbacks the session's userdata, this struct, and they find it here.
  class Wire* wire = nullptr;
  // For notifications to the kernel (set once the session exists).
  fuse_session* session = nullptr;  // INIT answered (tmpfsctl's uptime)
  // Which files the kernel may cache pages of; drops them before a direct
  // write is answered (daemon/kernel_cache.h). Null: replies at once.
  class KernelCache* kernel_cache = nullptr;
  // --persist: DIR's image, for tmpfsctl stats. Null: none.
  const class Persist* persist = nullptr;
  // Open directories (fi->fh), by number.
  DirHandles dir_handles;
  // tmpfsctl restart (daemon/restart.h): checks that a restart into
  // `binary` (empty: the installed one) can be tried and arranges it, to
  // start once the request is answered: 0, or an errno and the reason.
  // Null: restarts are not offered.
  std::function<int(const std::string& binary, std::string* why)> request_restart;
  std::atomic<uint64_t> restarts_failed{0};  // tmpfsctl stats
};

const fuse_lowlevel_ops& fuse_operations();

}  // namespace tmpfsd
