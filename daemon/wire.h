// Wire: the one place that speaks the FUSE protocol itself.
//
// Debian's libfuse 3.14 parses the requests of its own protocol version and
// answers the rest with ENOSYS; the kernel speaks more. Through
// fuse_session_custom_io() every raw request read from /dev/fuse passes
// here first and every reply written to it passes here last, so that this
// module can
//   - answer requests libfuse does not know (FUSE_TMPFILE, FUSE_STATX)
//     itself, on the worker thread that read them, writing the reply to the
//     descriptor the request came from (with clone_fd, not
//     fuse_session_fd());
//   - amend libfuse's INIT reply with the flags tmpfsd implements but
//     libfuse never asks for (parallel directory operations,
//     HANDLE_KILLPRIV_V2, POSIX ACLs with DONT_MASK, EXPORT_SUPPORT);
//   - note what a request carries that libfuse drops (the kernel's
//     "kill set-user-ID" flags, whether a read or write is direct I/O) for
//     the op that handles it;
//   - count the requests of each opcode (tmpfsctl stats);
//   - carry requests and replies over io_uring instead of /dev/fuse when
//     the kernel offers it (daemon/uring_transport.h): the INIT reply
//     accepts FUSE_OVER_IO_URING, the rings start once it is written, the
//     queue threads hand each request to dispatch() and every reply that
//     answers a ring request goes back through its entry;
//   - for a restart without unmounting (daemon/restart.h): hold every
//     reader at a gate before its next read of /dev/fuse and count the
//     requests read and not yet answered (quiesce), and in the next daemon
//     hand libfuse the saved INIT and keep its reply from the kernel.
// Everything else goes to libfuse unchanged. This module (wire.cc and
// uring_transport.cc) is the only code that touches the structures of
// <linux/fuse.h>; the 7.39 ones the installed header lacks are declared in
// wire.cc, the io_uring ones (7.42) in wire_uring_abi.h.
//
// An inode returned from here counts a lookup like any other (Namespace),
// given back by the kernel's FORGET through libfuse. An INTERRUPT for a
// request answered here reaches libfuse, which finds no such request and
// lets the kernel retry it until the request is done: harmless.
//
// Threads: every worker thread calls read() and writev(), every queue
// thread dispatch(), any thread writev() (replies sent later); the state
// shared between them is atomic or set once (at INIT, before any other
// request).
#pragma once

#include <fuse_lowlevel.h>

#include <pthread.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/uring_transport.h"

struct fuse_in_header;  // <linux/fuse.h>, included by wire.cc only

namespace tmpfsd {

struct Filesystem;

class Wire {
 public:
  explicit Wire(Filesystem& fs) : fs_(fs) {}
  Wire(const Wire&) = delete;
  Wire& operator=(const Wire&) = delete;

  // After fuse_session_mount(): the session (whose userdata is the
  // Filesystem given to the constructor) reads and writes through this
  // object from now on; sets Filesystem::wire. Returns 0 or a negative errno.
  int attach(fuse_session* se);

  // A thread that reads /dev/fuse (wire.cc).
  struct Reader;

  // Restart without unmounting (daemon/restart.h). The INIT the kernel sent
  // and the flags its reply agreed: what the next daemon replays.
  struct Handshake {
    std::string init_request;  // the raw request, header and body
    uint64_t agreed_flags = 0;
  };
  Handshake handshake() const;
  // In the next daemon, instead of attach() on a fresh mount: the session
  // reads and writes through this object on `fd` (the old daemon's
  // /dev/fuse, already initialised). The first read hands libfuse the saved
  // INIT; its reply is taken here and not written (the kernel answered INIT
  // long ago), and no other request is read until it has been.
  int attach_initialised(fuse_session* se, int fd, Handshake saved);
  // Stops taking requests: readers wait before their next read of
  // /dev/fuse (those blocked in one are woken by a signal), and waits until
  // every request read has been answered. False after `timeout` (the readers
  // go on then). Not with the rings (transport() "uring").
  bool quiesce(std::chrono::milliseconds timeout);
  // After a quiesce(): readers go on.
  void resume();

  // Before the session starts: makes the io_uring rings (`depth` entries per
  // queue); requests go over them once INIT is answered, if the kernel
  // offers FUSE over io_uring then (else over /dev/fuse, said in one log
  // line). False and `error` when io_uring refuses to make them.
  bool use_rings(unsigned depth, std::string& error);
  // Once the session loop has ended and no reply is still to come: ends the
  // queue threads and closes the rings.
  void stop_rings();
  // "uring" once the rings carry the requests, else "dev".
  std::string_view transport() const;
  // The transport's figures for tmpfsctl stats, in fuse_ops.cc's line().
  void visit_transport(
      const std::function<void(std::string_view name, uint64_t value, std::string_view kind,
                               std::string_view what)>& line) const;

  // For the op handling the current request on this thread: whether the
  // kernel asked that set-user-ID and set-group-ID be cleared (write,
  // truncate and open with O_TRUNC by a caller without CAP_FSETID, under
  // HANDLE_KILLPRIV_V2). nullopt: the request carries no such flag, or the
  // kernel does not use KILLPRIV_V2; the namespace decides by itself.
  static std::optional<bool> kill_suidgid();
  // For the op handling the current READ or WRITE on this thread: it comes
  // from the kernel's direct I/O path (fs/fuse/file.c fuse_direct_io, the
  // only sender of FUSE_READ_LOCKOWNER / FUSE_WRITE_LOCKOWNER): the bytes
  // bypass the kernel's page cache, and the sender holds no lock on a page
  // of it. False: a page-cache fill or write-through (or writeback).
  static bool direct_io();

  // Requests read of each opcode, by name ("lookup", "write", ...), for
  // every opcode seen at least once.
  void visit_requests(const std::function<void(std::string_view name, uint64_t count)>& f) const;
  // The INIT flags the kernel offered, and those the reply asked for after
  // amendment (64 bits: flags2 above flags).
  uint64_t kernel_flags() const { return kernel_flags_.load(std::memory_order_relaxed); }
  uint64_t agreed_flags() const { return agreed_flags_.load(std::memory_order_relaxed); }
  // FUSE_DONT_MASK was agreed: the kernel sends the caller's umask with each
  // create (fuse_ctx's umask), and the namespace applies it or the parent's
  // default ACL.
  bool umask_left_to_us() const;

 private:
  static ssize_t read_cb(int fd, void* buf, size_t len, void* userdata);
  // A request from a ring entry (a queue thread): as read() hands it on.
  void dispatch(void* buf, size_t len);
  // One reply of a request answered here, header and arguments in one
  // writev() (through writev(), so that a ring request's reply goes back to
  // its entry). False when the kernel no longer waits for it.
  bool send_reply(int fd, uint64_t unique, int error, const void* arg1 = nullptr, size_t len1 = 0,
                  const void* arg2 = nullptr, size_t len2 = 0);
  static ssize_t writev_cb(int fd, iovec* iov, int count, void* userdata);
  ssize_t read(int fd, void* buf, size_t len);
  ssize_t writev(int fd, iovec* iov, int count);
  ssize_t write_reply(int fd, iovec* iov, int count);
  // True when the request was answered here (the caller reads the next one).
  bool answer(int fd, const void* buf, size_t len);
  void answer_tmpfile(int fd, const fuse_in_header& in, const void* buf, size_t len);
  void answer_statx(int fd, const fuse_in_header& in, const void* buf, size_t len);
  // Returns the rings' payload size when the reply accepts them, else 0.
  size_t amend_init(iovec* iov, int count);

  // The gate every read of /dev/fuse passes (quiesce, attach_initialised).
  // With the gate closed: waits for it to open. >0: the replayed INIT,
  // copied to buf; 0: try again; -1 (errno EINTR): the session ended.
  ssize_t wait_at_gate(void* buf, size_t len);
  Reader& reader();  // this thread's, registered on its first read
  void forget_reader(Reader* r);

  Filesystem& fs_;
  fuse_session* se_ = nullptr;  // set by attach()
  // Requests read (or dispatched from a ring) that expect a reply and have
  // none yet: FORGET, BATCH_FORGET, INTERRUPT and NOTIFY_REPLY expect none.
  std::atomic<int64_t> in_flight_{0};
  std::string init_request_;  // set while INIT is answered, before any other request
  mutable std::mutex gate_mu_;
  std::condition_variable gate_cv_;
  // Closed gate: written under gate_mu_, read without it by each reader
  // (after it has said it is in read(2): see Reader in wire.cc).
  std::atomic<bool> paused_{false};
  std::vector<Reader*> readers_;           // guarded by gate_mu_: every thread that reads /dev/fuse
  std::string replay_init_;                // guarded by gate_mu_: the INIT to hand libfuse
  std::atomic<bool> swallow_init_{false};  // its reply is not written
  uint64_t saved_agreed_flags_ = 0;        // set before the session starts
  std::unique_ptr<UringTransport> rings_;  // set before the session starts
  std::atomic<bool> rings_on_{false};      // INIT accepted them: replies go there
  std::atomic<uint64_t> dev_requests_{0};  // requests read from /dev/fuse
  static constexpr size_t kOpcodes = 64;
  std::array<std::atomic<uint64_t>, kOpcodes> requests_{};
  std::atomic<uint64_t> other_requests_{0};  // opcodes >= kOpcodes (CUSE, future)
  std::atomic<uint64_t> init_unique_{0};
  std::atomic<uint64_t> kernel_flags_{0};
  std::atomic<uint64_t> agreed_flags_{0};
};

}  // namespace tmpfsd
