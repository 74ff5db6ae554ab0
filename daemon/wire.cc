// The raw FUSE protocol around libfuse's session. See wire.h.
#include "daemon/wire.h"

#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <functional>
#include <new>
#include <sstream>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/namespace.h"
#include "daemon/fuse_ops.h"
#include "daemon/wire_uring_abi.h"

namespace tmpfsd {
namespace {

// Protocol 7.39 (kernel 6.6), which <linux/fuse.h> of bookworm (7.38) lacks.
constexpr uint32_t kOpStatx = 52;
struct fuse_sx_time {
  int64_t tv_sec;
  uint32_t tv_nsec;
  int32_t reserved;
};
struct fuse_statx {
  uint32_t mask;
  uint32_t blksize;
  uint64_t attributes;
  uint32_t nlink;
  uint32_t uid;
  uint32_t gid;
  uint16_t mode;
  uint16_t spare0[1];
  uint64_t ino;
  uint64_t size;
  uint64_t blocks;
  uint64_t attributes_mask;
  fuse_sx_time atime, btime, ctime, mtime;
  uint32_t rdev_major, rdev_minor;
  uint32_t dev_major, dev_minor;
  uint64_t spare2[14];
};
struct fuse_statx_in {
  uint32_t getattr_flags;
  uint32_t reserved;
  uint64_t fh;
  uint32_t sx_flags;
  uint32_t sx_mask;
};
struct fuse_statx_out {
  uint64_t attr_valid;
  uint32_t attr_valid_nsec;
  uint32_t flags;
  uint64_t spare[2];
  fuse_statx stat;
};
static_assert(sizeof(fuse_statx) == 256 && sizeof(fuse_statx_out) == 288);
static_assert(sizeof(fuse_statx_in) == 24);

// What the INIT reply asks for beyond libfuse, when the kernel offers it:
//   PARALLEL_DIROPS: lookups and readdirs of one directory run at once (the
//     namespace locks for itself);
//   HANDLE_KILLPRIV_V2: the daemon clears set-user-ID and set-group-ID on
//     write, truncate and chown as the kernel's flags say, so the kernel
//     stops asking GETXATTR security.capability before every write.
//   POSIX_ACL: the kernel enforces system.posix_acl_* and leaves storing
//     them, the mode/ACL rules and inheritance to the namespace (core/acl.h);
//   DONT_MASK: with it, the umask, which applies only where the parent has no
//     default ACL;
//   EXPORT_SUPPORT: file handles (open_by_handle_at, NFS) outlive the
//     kernel's inode: to open one the kernel looks up "." in the handle's
//     node ID, and ".." to reconnect a directory (Namespace::lookup).
//     libfuse knows this one (FUSE_CAP_EXPORT_SUPPORT) but never asks for it
//     unless told; here it is with the others.
constexpr uint64_t kAmendFlags = FUSE_PARALLEL_DIROPS | FUSE_HANDLE_KILLPRIV_V2 | FUSE_POSIX_ACL |
                                 FUSE_DONT_MASK | FUSE_EXPORT_SUPPORT;

constexpr std::string_view kOpcodeNames[] = {
    "",
    "lookup",
    "forget",
    "getattr",
    "setattr",
    "readlink",
    "symlink",
    "",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "statfs",
    "release",
    "",
    "fsync",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "flush",
    "init",
    "opendir",
    "readdir",
    "releasedir",
    "fsyncdir",
    "getlk",
    "setlk",
    "setlkw",
    "access",
    "create",
    "interrupt",
    "bmap",
    "destroy",
    "ioctl",
    "poll",
    "notify_reply",
    "batch_forget",
    "fallocate",
    "readdirplus",
    "rename2",
    "lseek",
    "copy_file_range",
    "setupmapping",
    "removemapping",
    "syncfs",
    "tmpfile",
    "statx",
    "copy_file_range_64",
};

// Wakes a reader blocked in read(2) of /dev/fuse (Wire::quiesce): a signal
// with a handler that does nothing, installed without SA_RESTART, so that
// the read ends with EINTR and the reader comes back to the gate.
int wake_signal() { return SIGRTMIN + 1; }
void on_wake_signal(int) {}

// FORGET, BATCH_FORGET, INTERRUPT and NOTIFY_REPLY are not answered.
bool expects_reply(uint32_t opcode) {
  return opcode != FUSE_FORGET && opcode != FUSE_BATCH_FORGET && opcode != FUSE_INTERRUPT &&
         opcode != FUSE_NOTIFY_REPLY;
}

thread_local std::optional<bool> t_kill_suidgid;
thread_local bool t_direct_io = false;

// The caller of a request answered here: as libfuse's fuse_req_ctx and
// fuse_req_getgroups give it to the ops.
Caller caller_of(const fuse_in_header& in) {
  Caller who;
  who.uid = in.uid;
  who.gid = in.gid;
  pid_t pid = pid_t(in.pid);
  who.in_group = [pid](gid_t g) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (!line.starts_with("Groups:")) continue;
      std::istringstream groups(line.substr(7));
      for (gid_t x; groups >> x;)
        if (x == g) return true;
    }
    return false;
  };
  return who;
}

// libfuse's calc_timeout_sec / calc_timeout_nsec.
uint64_t timeout_sec(double t) {
  if (t > double(ULONG_MAX)) return ULONG_MAX;
  return t < 0 ? 0 : uint64_t(t);
}
uint32_t timeout_nsec(double t) {
  double f = t - double(timeout_sec(t));
  return f < 0 ? 0 : f >= 0.999999999 ? 999999999 : uint32_t(f * 1.0e9);
}

void fill_attr(fuse_attr& fa, const Attr& a, uint32_t blksize) {
  fa.ino = a.ino;
  fa.size = a.size;
  fa.blocks = a.blocks;
  fa.atime = uint64_t(a.atime.tv_sec);
  fa.mtime = uint64_t(a.mtime.tv_sec);
  fa.ctime = uint64_t(a.ctime.tv_sec);
  fa.atimensec = uint32_t(a.atime.tv_nsec);
  fa.mtimensec = uint32_t(a.mtime.tv_nsec);
  fa.ctimensec = uint32_t(a.ctime.tv_nsec);
  fa.mode = a.mode;
  fa.nlink = uint32_t(a.nlink);
  fa.uid = a.uid;
  fa.gid = a.gid;
  fa.rdev = uint32_t(a.rdev);
  fa.blksize = blksize;
}

fuse_sx_time sx_time(const timespec& t) { return {int64_t(t.tv_sec), uint32_t(t.tv_nsec), 0}; }

template <class T>
bool body_as(const void* buf, size_t len, T* out) {
  if (len < sizeof(fuse_in_header) + sizeof(T)) return false;
  std::memcpy(out, static_cast<const char*>(buf) + sizeof(fuse_in_header), sizeof(T));
  return true;
}

}  // namespace

// One reply, header and arguments in one writev, as the kernel requires.
bool Wire::send_reply(int fd, uint64_t unique, int error, const void* arg1, size_t len1,
                      const void* arg2, size_t len2) {
  fuse_out_header out{};
  out.unique = unique;
  out.error = -error;
  out.len = uint32_t(sizeof out + len1 + len2);
  iovec iov[3] = {
      {&out, sizeof out}, {const_cast<void*>(arg1), len1}, {const_cast<void*>(arg2), len2}};
  int count = 1 + (len1 ? 1 : 0) + (len2 ? 1 : 0);
  if (!len1 && len2) iov[1] = iov[2];
  ssize_t n = writev(fd, iov, count);
  if (n == ssize_t(out.len)) return true;
  if (n < 0 && errno != ENOENT)
    spdlog::warn("cannot write a reply to /dev/fuse: {}", strerror(errno));
  return false;
}

int Wire::attach(fuse_session* se) {
  fs_.wire = this;
  se_ = se;
  fuse_custom_io io{};
  io.read = read_cb;
  io.writev = writev_cb;
  // No splice: every request must pass read_cb (op_init never wants
  // FUSE_CAP_SPLICE_READ, so libfuse does not splice without this either).
  return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

Wire::Handshake Wire::handshake() const {
  std::lock_guard lk(gate_mu_);
  return Handshake{init_request_, agreed_flags()};
}

int Wire::attach_initialised(fuse_session* se, int fd, Handshake saved) {
  fuse_in_header in{};
  fuse_init_in init{};
  if (saved.init_request.size() < sizeof in + offsetof(fuse_init_in, flags) + sizeof init.flags)
    return -EINVAL;
  std::memcpy(&in, saved.init_request.data(), sizeof in);
  if (in.opcode != FUSE_INIT) return -EINVAL;
  std::memcpy(&init, saved.init_request.data() + sizeof in,
              std::min(sizeof init, saved.init_request.size() - sizeof in));
  uint64_t flags = init.flags;
  if (flags & FUSE_INIT_EXT) flags |= uint64_t(init.flags2) << 32;
  kernel_flags_.store(flags, std::memory_order_relaxed);
  init_unique_.store(in.unique, std::memory_order_relaxed);
  saved_agreed_flags_ = saved.agreed_flags;
  {
    std::lock_guard lk(gate_mu_);
    init_request_ = saved.init_request;
    replay_init_ = std::move(saved.init_request);
    paused_.store(true);  // until libfuse has answered the replayed INIT
  }
  swallow_init_.store(true, std::memory_order_release);
  fs_.wire = this;
  se_ = se;
  fuse_custom_io io{};
  io.read = read_cb;
  io.writev = writev_cb;
  return fuse_session_custom_io(se, &io, fd);
}

// A thread that reads /dev/fuse. The gate costs a reader no lock: it says
// it is in read(2) (in_read), then looks at paused_; quiesce() sets paused_,
// then looks at each in_read. Both sequentially consistent, so at least one
// sees the other: the reader waits at the gate, or quiesce() signals it
// out of read(2) (again until it is out).
struct Wire::Reader {
  pthread_t thread = pthread_self();
  std::atomic<bool> in_read{false};
};

namespace {
// Unregisters the thread's Reader when the thread ends (libfuse ends idle
// workers, and cancels the rest at the loop's end; the Wire outlives them).
struct ReaderSlot {
  Wire* wire = nullptr;
  Wire::Reader* reader = nullptr;
  std::function<void()> forget;
  ~ReaderSlot() {
    if (forget) forget();
  }
};
thread_local ReaderSlot t_reader;
}  // namespace

Wire::Reader& Wire::reader() {
  if (t_reader.wire == this) return *t_reader.reader;
  auto* r = new Reader;
  {
    std::lock_guard lk(gate_mu_);
    readers_.push_back(r);
  }
  t_reader.wire = this;
  t_reader.reader = r;
  t_reader.forget = [this, r] { forget_reader(r); };
  return *r;
}

void Wire::forget_reader(Reader* r) {
  {
    std::lock_guard lk(gate_mu_);
    std::erase(readers_, r);
  }
  delete r;
}

ssize_t Wire::wait_at_gate(void* buf, size_t len) {
  std::unique_lock lk(gate_mu_);
  // Waits, but not past the session's end (SIGTERM during a restart): the
  // reader then returns to libfuse, which ends the loop.
  while (paused_.load() && replay_init_.empty()) {
    gate_cv_.wait_for(lk, std::chrono::milliseconds(50));
    if (paused_.load() && se_ && fuse_session_exited(se_)) {
      errno = EINTR;
      return -1;
    }
  }
  if (replay_init_.empty()) return 0;
  // The saved INIT, for libfuse alone; the gate stays closed until its reply.
  const size_t n = replay_init_.size();
  if (n > len) {
    errno = EINVAL;
    return -1;
  }
  std::memcpy(buf, replay_init_.data(), n);
  replay_init_.clear();
  return ssize_t(n);
}

bool Wire::quiesce(std::chrono::milliseconds timeout) {
  static std::once_flag installed;
  std::call_once(installed, [] {
    struct sigaction sa {};
    sa.sa_handler = on_wake_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a blocked read ends with EINTR
    sigaction(wake_signal(), &sa, nullptr);
  });
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lk(gate_mu_);  // no reader registers or ends meanwhile
  paused_.store(true);
  for (;;) {
    // Again and again: a reader may take the signal just before it enters
    // read(2), and then block in it.
    size_t reading = 0;
    for (Reader* r : readers_) {
      if (!r->in_read.load()) continue;
      ++reading;
      pthread_kill(r->thread, wake_signal());
    }
    if (reading == 0 && in_flight_.load() == 0) return true;
    if (std::chrono::steady_clock::now() >= deadline) {
      spdlog::warn("restart: {} requests still unanswered and {} readers in read(2) after {} ms",
                   in_flight_.load(), reading, timeout.count());
      paused_.store(false);
      gate_cv_.notify_all();
      return false;
    }
    lk.unlock();
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    lk.lock();
  }
}

void Wire::resume() {
  std::lock_guard lk(gate_mu_);
  paused_.store(false);
  gate_cv_.notify_all();
}

std::optional<bool> Wire::kill_suidgid() { return t_kill_suidgid; }

bool Wire::direct_io() { return t_direct_io; }

bool Wire::umask_left_to_us() const { return agreed_flags() & FUSE_DONT_MASK; }

void Wire::visit_requests(
    const std::function<void(std::string_view name, uint64_t count)>& f) const {
  for (size_t op = 0; op < kOpcodes; ++op) {
    uint64_t n = requests_[op].load(std::memory_order_relaxed);
    if (n == 0) continue;
    std::string_view name = op < std::size(kOpcodeNames) ? kOpcodeNames[op] : "";
    if (name.empty())
      f("opcode_" + std::to_string(op), n);
    else
      f(name, n);
  }
  if (uint64_t n = other_requests_.load(std::memory_order_relaxed)) f("other", n);
}

// libfuse passes the session's userdata, the Filesystem, to both.
ssize_t Wire::read_cb(int fd, void* buf, size_t len, void* userdata) {
  return static_cast<Filesystem*>(userdata)->wire->read(fd, buf, len);
}

ssize_t Wire::writev_cb(int fd, iovec* iov, int count, void* userdata) {
  return static_cast<Filesystem*>(userdata)->wire->writev(fd, iov, count);
}

bool Wire::use_rings(unsigned depth, std::string& error) {
  rings_ = UringTransport::create(
      depth, [this](void* buf, size_t len) { dispatch(buf, len); }, error);
  return rings_ != nullptr;
}

void Wire::stop_rings() {
  if (rings_) rings_->stop();
}

std::string_view Wire::transport() const {
  return rings_on_.load(std::memory_order_acquire) && rings_->started() ? "uring" : "dev";
}

void Wire::visit_transport(
    const std::function<void(std::string_view name, uint64_t value, std::string_view kind,
                             std::string_view what)>& line) const {
  const bool uring = transport() == "uring";
  line("transport_uring", uring, "gauge",
       "1: requests travel over io_uring rings (--transport); 0: over /dev/fuse");
  line("transport_requests_dev", dev_requests_.load(std::memory_order_relaxed), "counter",
       "FUSE requests read from /dev/fuse (INIT, FORGET and INTERRUPT always)");
  line("transport_requests_uring", rings_ ? rings_->requests() : 0, "counter",
       "FUSE requests taken from io_uring ring entries");
  if (uring) {
    line("transport_uring_queues", rings_->queues(), "gauge", "io_uring queues (possible CPUs)");
    line("transport_uring_depth", rings_->depth(), "gauge", "ring entries per queue");
  }
}

void Wire::dispatch(void* buf, size_t len) {
  try {
    if (answer(fuse_session_fd(se_), buf, len)) return;
  } catch (...) {
    // As in read(): libfuse answers it.
  }
  fuse_buf fb{};
  fb.mem = buf;
  fb.size = len;
  fuse_session_process_buf(se_, &fb);
}

ssize_t Wire::read(int fd, void* buf, size_t len) {
  for (;;) {
    Reader& me = reader();
    me.in_read.store(true);
    if (paused_.load()) {
      me.in_read.store(false);
      if (ssize_t replayed = wait_at_gate(buf, len); replayed != 0) return replayed;  // or -1
      continue;
    }
    // A thread cancelled in read(2) at the loop's end leaves in_read set;
    // it ends, and its Reader with it.
    const ssize_t n = ::read(fd, buf, len);
    me.in_read.store(false, std::memory_order_release);
    if (n < ssize_t(sizeof(fuse_in_header))) return n;  // errors and short reads: libfuse's
    dev_requests_.fetch_add(1, std::memory_order_relaxed);
    try {
      if (!answer(fd, buf, size_t(n))) return n;
    } catch (...) {
      // Out of memory in a handler: the request goes to libfuse, which
      // answers ENOSYS for it (never an exception into libfuse's C code).
      return n;
    }
  }
}

bool Wire::answer(int fd, const void* buf, size_t len) {
  fuse_in_header in;
  std::memcpy(&in, buf, sizeof in);
  if (expects_reply(in.opcode)) in_flight_.fetch_add(1, std::memory_order_acq_rel);
  if (in.opcode < kOpcodes)
    requests_[in.opcode].fetch_add(1, std::memory_order_relaxed);
  else
    other_requests_.fetch_add(1, std::memory_order_relaxed);

  t_kill_suidgid.reset();
  t_direct_io = false;
  bool killpriv_v2 = agreed_flags_.load(std::memory_order_relaxed) & FUSE_HANDLE_KILLPRIV_V2;
  switch (in.opcode) {
    case FUSE_INIT: {
      fuse_init_in init{};
      if (!body_as(buf, len, &init)) return false;
      uint64_t flags = init.flags;
      if (flags & FUSE_INIT_EXT) flags |= uint64_t(init.flags2) << 32;
      kernel_flags_.store(flags, std::memory_order_relaxed);
      init_unique_.store(in.unique, std::memory_order_relaxed);
      {
        std::lock_guard lk(gate_mu_);
        init_request_.assign(static_cast<const char*>(buf), len);
      }
      spdlog::debug("INIT from the kernel: protocol {}.{}", init.major, init.minor);
      return false;
    }
    case FUSE_WRITE: {
      fuse_write_in w{};
      if (!body_as(buf, len, &w)) return false;
      if (killpriv_v2) t_kill_suidgid = (w.write_flags & FUSE_WRITE_KILL_SUIDGID) != 0;
      t_direct_io = (w.write_flags & FUSE_WRITE_LOCKOWNER) != 0;
      return false;
    }
    case FUSE_READ: {
      fuse_read_in r{};
      if (body_as(buf, len, &r)) t_direct_io = (r.read_flags & FUSE_READ_LOCKOWNER) != 0;
      return false;
    }
    case FUSE_SETATTR: {
      fuse_setattr_in s{};
      if (killpriv_v2 && body_as(buf, len, &s) && (s.valid & FATTR_SIZE))
        t_kill_suidgid = (s.valid & FATTR_KILL_SUIDGID) != 0;
      return false;
    }
    case FUSE_OPEN: {
      fuse_open_in o{};
      if (killpriv_v2 && body_as(buf, len, &o))
        t_kill_suidgid = (o.open_flags & FUSE_OPEN_KILL_SUIDGID) != 0;
      return false;
    }
    case FUSE_TMPFILE:
      answer_tmpfile(fd, in, buf, len);
      return true;
    case kOpStatx:
      answer_statx(fd, in, buf, len);
      return true;
    default:
      return false;
  }
}

// O_TMPFILE: CREATE's reply (fuse_entry_out, then fuse_open_out) for a file
// with no name (Namespace::tmpfile).
void Wire::answer_tmpfile(int fd, const fuse_in_header& in, const void* buf, size_t len) {
  fuse_create_in c{};
  if (!body_as(buf, len, &c)) return void(send_reply(fd, in.unique, EINVAL));
  Caller who = caller_of(in);
  if (umask_left_to_us()) who.umask = mode_t(c.umask);
  auto r = fs_.ns->tmpfile(in.nodeid, mode_t(c.mode), int(c.flags), who);
  if (!r) return void(send_reply(fd, in.unique, r.code()));
  fuse_entry_out entry{};
  entry.nodeid = r->ino;
  entry.generation = r->generation;
  entry.entry_valid = timeout_sec(fs_.entry_timeout);
  entry.entry_valid_nsec = timeout_nsec(fs_.entry_timeout);
  entry.attr_valid = timeout_sec(fs_.attr_timeout);
  entry.attr_valid_nsec = timeout_nsec(fs_.attr_timeout);
  fill_attr(entry.attr, *r, uint32_t(fs_.cache->page_size()));
  fuse_open_out open{};
  open.open_flags = FOPEN_KEEP_CACHE;  // as set_open_flags() in fuse_ops.cc
  if (!send_reply(fd, in.unique, 0, &entry, sizeof entry, &open, sizeof open)) {
    fs_.ns->release(r->ino);  // no RELEASE and no FORGET will come
    fs_.ns->forget(r->ino, 1);
  }
}

// statx with more than the basic fields (the kernel asks for btime): the
// same attributes and validity as GETATTR, plus birth time and inode flags.
void Wire::answer_statx(int fd, const fuse_in_header& in, const void* buf, size_t len) {
  fuse_statx_in sx_in{};
  if (!body_as(buf, len, &sx_in)) return void(send_reply(fd, in.unique, EINVAL));
  auto r = fs_.ns->getattr(in.nodeid);
  if (!r) return void(send_reply(fd, in.unique, r.code()));
  fuse_statx_out out{};
  out.attr_valid = timeout_sec(fs_.attr_timeout);
  out.attr_valid_nsec = timeout_nsec(fs_.attr_timeout);
  fuse_statx& sx = out.stat;
  sx.mask = STATX_BASIC_STATS | STATX_BTIME;
  sx.blksize = uint32_t(fs_.cache->page_size());
  sx.nlink = uint32_t(r->nlink);
  sx.uid = r->uid;
  sx.gid = r->gid;
  sx.mode = uint16_t(r->mode);
  sx.ino = r->ino;
  sx.size = r->size;
  sx.blocks = r->blocks;
  sx.atime = sx_time(r->atime);
  sx.btime = sx_time(r->btime);
  sx.ctime = sx_time(r->ctime);
  sx.mtime = sx_time(r->mtime);
  // What tmpfs reports of its inode flags (statx's generic_fillattr
  // and shmem_getattr).
  constexpr uint64_t kAttrs = STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND | STATX_ATTR_NODUMP;
  sx.attributes_mask = kAttrs;
  if (r->iflags & FS_IMMUTABLE_FL) sx.attributes |= STATX_ATTR_IMMUTABLE;
  if (r->iflags & FS_APPEND_FL) sx.attributes |= STATX_ATTR_APPEND;
  if (r->iflags & FS_NODUMP_FL) sx.attributes |= STATX_ATTR_NODUMP;
  sx.rdev_major = major(r->rdev);
  sx.rdev_minor = minor(r->rdev);
  send_reply(fd, in.unique, 0, &out, sizeof out);
}

ssize_t Wire::writev(int fd, iovec* iov, int count) {
  const auto* header = count >= 1 && iov[0].iov_len >= sizeof(fuse_out_header)
                           ? static_cast<const fuse_out_header*>(iov[0].iov_base)
                           : nullptr;
  if (header && swallow_init_.load(std::memory_order_acquire) &&
      header->unique == init_unique_.load(std::memory_order_relaxed)) {
    // libfuse's answer to the replayed INIT: the kernel agreed long ago,
    // with the old daemon; the flags are what it agreed then.
    if (header->error == 0 && count >= 2) {
      const uint64_t now = (amend_init(iov, count), agreed_flags());
      if (now != saved_agreed_flags_)
        spdlog::warn(
            "restart: this tmpfsd would agree flags {:#x}, the kernel agreed {:#x} with the "
            "previous one: those stay",
            now, saved_agreed_flags_);
    } else {
      spdlog::warn("restart: libfuse refused the replayed INIT (error {})", header->error);
    }
    agreed_flags_.store(saved_agreed_flags_, std::memory_order_relaxed);
    init_unique_.store(0, std::memory_order_relaxed);
    swallow_init_.store(false, std::memory_order_release);
    resume();
    size_t n = 0;
    for (int i = 0; i < count; ++i) n += iov[i].iov_len;
    return ssize_t(n);
  }
  // A reply (not a notification, unique 0; not an INTERRUPT's, whose
  // unique is odd: the kernel's FUSE_INT_REQ_BIT) ends a request in flight.
  const bool ends_request = header && header->unique != 0 && !(header->unique & 1);
  const ssize_t n = write_reply(fd, iov, count);
  if (ends_request) in_flight_.fetch_sub(1, std::memory_order_acq_rel);
  return n;
}

ssize_t Wire::write_reply(int fd, iovec* iov, int count) {
  if (rings_on_.load(std::memory_order_acquire) && rings_->reply(iov, count)) {
    size_t n = 0;
    for (int i = 0; i < count; ++i) n += iov[i].iov_len;
    return ssize_t(n);
  }
  uint64_t init = init_unique_.load(std::memory_order_relaxed);
  if (init != 0 && count >= 2 && iov[0].iov_len >= sizeof(fuse_out_header)) {
    auto* out = static_cast<fuse_out_header*>(iov[0].iov_base);
    if (out->unique == init && out->error == 0) {
      size_t payload = amend_init(iov, count);
      init_unique_.store(0, std::memory_order_relaxed);
      ssize_t n = ::writev(fd, iov, count);
      // The kernel has taken the reply (fc->initialized): the rings may
      // register now.
      if (n > 0 && payload) {
        rings_on_.store(true, std::memory_order_release);
        rings_->start(fd, payload);  // noexcept: a failure turns the rings off
      }
      return n;
    }
  }
  return ::writev(fd, iov, count);
}

size_t Wire::amend_init(iovec* iov, int /*count*/) {
  constexpr size_t kFlags2End = offsetof(fuse_init_out, flags2) + sizeof(uint32_t);
  if (iov[1].iov_len < offsetof(fuse_init_out, flags) + sizeof(uint32_t)) return 0;
  auto* out = static_cast<fuse_init_out*>(iov[1].iov_base);
  bool has_flags2 = iov[1].iov_len >= kFlags2End;
  uint64_t flags = out->flags;
  if (has_flags2 && (flags & FUSE_INIT_EXT)) flags |= uint64_t(out->flags2) << 32;
  uint64_t libfuse = flags;
  flags |= kAmendFlags & kernel_flags();
  // The rings: accepted when the kernel offers them. Their payload buffers
  // must hold what the kernel computes (fuse_uring_create): the largest of
  // FUSE_MIN_READ_BUFFER, max_write and max_pages pages.
  size_t ring_payload = 0;
  if (rings_ && has_flags2 && (kernel_flags() & uring_abi::kOverIoUring)) {
    flags |= uring_abi::kOverIoUring;
    size_t pages =
        (flags & FUSE_MAX_PAGES) &&
                iov[1].iov_len >= offsetof(fuse_init_out, max_pages) + sizeof out->max_pages
            ? out->max_pages
            : uring_abi::kDefaultMaxPages;
    ring_payload = std::max({uring_abi::kMinReadBuffer, size_t(out->max_write),
                             std::max<size_t>(pages, 1) * size_t(sysconf(_SC_PAGESIZE))});
    spdlog::info("transport: io_uring ({} queues of {} entries, {} KiB payloads)", rings_->queues(),
                 rings_->depth(), ring_payload >> 10);
  } else if (rings_) {
    spdlog::info(
        "transport: /dev/fuse (the kernel did not offer FUSE over io_uring at INIT; "
        "{} is Y?)",
        UringTransport::kParameter);
  }
  if (!has_flags2) flags &= 0xffffffffULL;
  out->flags = uint32_t(flags);
  if (flags >> 32) {
    out->flags |= FUSE_INIT_EXT;
    out->flags2 = uint32_t(flags >> 32);
  }
  agreed_flags_.store(flags, std::memory_order_relaxed);
  spdlog::info(
      "FUSE protocol {}.{}: the kernel offered flags {:#x}, libfuse asked for {:#x}, "
      "the reply asks for {:#x}",
      out->major, out->minor, kernel_flags(), libfuse, flags);
  return ring_payload;
}

}  // namespace tmpfsd
