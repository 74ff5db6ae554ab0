// The FUSE-over-io_uring ABI (protocol 7.42, kernel 6.14 and later), which
// Debian's <linux/fuse.h> (linux-libc-dev 6.1, protocol 7.38) predates.
// Declared here as the kernel has them, for the wire module only
// (daemon/wire.cc and daemon/uring_transport.cc): no other file touches the
// FUSE protocol.
//
// Source: include/uapi/linux/fuse.h of Linux 6.18 (FUSE_OVER_IO_URING,
// fuse_uring_ent_in_out, fuse_uring_req_header, fuse_uring_cmd,
// fuse_uring_cmd_req); how the kernel fills and reads them:
// fs/fuse/dev_uring.c (fuse_uring_args_to_ring, fuse_uring_commit,
// fuse_uring_create_ring_ent).
#pragma once

#include <cstddef>
#include <cstdint>

namespace tmpfsd::uring_abi {

// INIT flags2 bit 9: offered by the kernel when the fuse module's
// parameter enable_uring is Y; the daemon's INIT reply accepts it.
constexpr uint64_t kOverIoUring = 1ULL << 41;

constexpr size_t kInOutHeaderBytes = 128;  // FUSE_URING_IN_OUT_HEADER_SZ
constexpr size_t kOpInBytes = 128;         // FUSE_URING_OP_IN_OUT_SZ

// struct fuse_uring_ent_in_out: written by the kernel with a request
// (commit_id = the request's unique, payload_sz = bytes of payload), by the
// daemon with the reply (payload_sz = bytes of the reply's arguments).
struct EntInOut {
  uint64_t flags;
  uint64_t commit_id;
  uint32_t payload_sz;
  uint32_t padding;
  uint64_t reserved;
};

// struct fuse_uring_req_header: the first of an entry's two buffers.
//   in_out: the request's fuse_in_header, then the reply's fuse_out_header;
//   op_in: the request's first argument (the opcode's fixed struct, e.g.
//     fuse_read_in; empty for opcodes without one, such as LOOKUP);
//   the rest of the request's arguments and every argument of the reply
//   travel in the second buffer, the payload.
struct ReqHeader {
  char in_out[kInOutHeaderBytes];
  char op_in[kOpInBytes];
  EntInOut ring_ent_in_out;
};
static_assert(sizeof(EntInOut) == 32 && sizeof(ReqHeader) == 288);

// enum fuse_uring_cmd: the cmd_op of an IORING_OP_URING_CMD on /dev/fuse.
enum : uint32_t {
  kCmdRegister = 1,        // FUSE_IO_URING_CMD_REGISTER: iovecs {header, payload}
  kCmdCommitAndFetch = 2,  // FUSE_IO_URING_CMD_COMMIT_AND_FETCH
};

// struct fuse_uring_cmd_req: in the 80-byte command area of an SQE128.
struct CmdReq {
  uint64_t flags;
  uint64_t commit_id;  // COMMIT_AND_FETCH: the unique of the request replied to
  uint16_t qid;        // the queue (the CPU whose requests it takes)
  uint8_t padding[6];
};
static_assert(sizeof(CmdReq) == 24);

// The smallest payload buffer the kernel accepts (fs/fuse/fuse_i.h).
constexpr size_t kMinReadBuffer = 8192;  // FUSE_MIN_READ_BUFFER
// Pages per request when INIT did not agree FUSE_MAX_PAGES.
constexpr size_t kDefaultMaxPages = 32;  // FUSE_DEFAULT_MAX_PAGES_PER_REQ

}  // namespace tmpfsd::uring_abi
