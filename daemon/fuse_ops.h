// The FUSE edge: the only code that touches libfuse's request and reply
// structures. Each op turns a request into a Namespace call, turns the
// Result into a reply, replies exactly once, and never lets an exception
// reach libfuse's C code.
#pragma once

#include <fuse_lowlevel.h>

#include "core/namespace.h"
#include "core/page_cache.h"

namespace tmpfsd {

struct Filesystem {
  PageCache* cache;
  Namespace* ns;
  double entry_timeout = 1.0;  // seconds the kernel may cache names and attributes
  double attr_timeout = 1.0;
  // The kernel caches writes and sends them in large batches; it then owns
  // the file size, O_APPEND offsets and mtime/ctime until it flushes them.
  bool writeback_cache = false;
};

const fuse_lowlevel_ops& fuse_operations();

}  // namespace tmpfsd
