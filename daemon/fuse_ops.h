// The FUSE edge: the only code that touches libfuse's request and reply
// structures. Each op turns a request into a Namespace call, turns the
// Result into a reply, replies exactly once, and never lets an exception
// reach libfuse's C code.
#pragma once

#include <fuse_lowlevel.h>

#include <chrono>
#include <functional>

#include "core/namespace.h"
#include "core/page_cache.h"

namespace tmpfsd {

struct Filesystem {
  PageCache* cache = nullptr;
  Namespace* ns = nullptr;
  double entry_timeout = 1.0;  // seconds the kernel may cache names and attributes
  double attr_timeout = 1.0;
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
};

const fuse_lowlevel_ops& fuse_operations();

}  // namespace tmpfsd
