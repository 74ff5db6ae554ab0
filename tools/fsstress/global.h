/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tools/fsstress/global.h: a minimal replacement for xfstests' src/global.h
 * (Copyright (c) 2000-2003 Silicon Graphics, Inc.), enough for
 * ltp/fsstress.c on Linux without xfsprogs' headers.
 *
 * It includes the system headers the original pulls in through config.h's
 * HAVE_* macros, and in place of <xfs/xfs.h> declares the handful of XFS
 * types and ioctl names fsstress.c uses, with xfsctl() refusing every
 * XFS-only request with ENOTTY (what a non-XFS file system answers). Only the
 * generic VFS FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR (which xfsprogs' headers
 * alias as XFS_IOC_FSGETXATTR / XFS_IOC_FSSETXATTR) reach the kernel.
 * XFS_IOC_EXCHANGE_RANGE stays undefined, so exchangerange is a no-op.
 */
#ifndef GLOBAL_H
#define GLOBAL_H

#include "config.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>             /* getopt_long; xfsprogs' platform_defs.h has it */
#include <libgen.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/param.h>          /* MIN, MAX */
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <linux/fs.h>           /* struct fsxattr, FS_IOC_*, FS_XFLAG_* */
#include <linux/types.h>        /* __u64 */

#ifdef HAVE_LINUX_FALLOC_H
#include <linux/falloc.h>
#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE		0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE		0x02
#endif
#ifndef FALLOC_FL_NO_HIDE_STALE
#define FALLOC_FL_NO_HIDE_STALE		0x04
#endif
#ifndef FALLOC_FL_COLLAPSE_RANGE
#define FALLOC_FL_COLLAPSE_RANGE	0x08
#endif
#ifndef FALLOC_FL_ZERO_RANGE
#define FALLOC_FL_ZERO_RANGE		0x10
#endif
#ifndef FALLOC_FL_INSERT_RANGE
#define FALLOC_FL_INSERT_RANGE		0x20
#endif
#endif /* HAVE_LINUX_FALLOC_H */

/* ---- stand-ins for <xfs/xfs.h> --------------------------------------- */

/* XFS-only requests: never passed to ioctl(2), see xfsctl() below. */
#define XFS_IOC_FSGEOMETRY		1
#define XFS_IOC_ERROR_INJECTION		2
#define XFS_IOC_ERROR_CLEARALL		3
#define XFS_IOC_DIOINFO			4
#define XFS_IOC_FSBULKSTAT		5
#define XFS_IOC_FSBULKSTAT_SINGLE	6
#define XFS_IOC_RESVSP64		7
#define XFS_IOC_UNRESVSP64		8

/* Generic VFS requests, as xfsprogs' xfs_fs.h aliases them (setxattr op). */
#define XFS_IOC_FSGETXATTR		FS_IOC_FSGETXATTR
#define XFS_IOC_FSSETXATTR		FS_IOC_FSSETXATTR
#define XFS_XFLAG_REALTIME		FS_XFLAG_REALTIME
#define XFS_XFLAG_EXTSIZE		FS_XFLAG_EXTSIZE

/* Only the members fsstress.c touches; the XFS ioctls above never run. */
struct xfs_fsop_geom {
	uint32_t blocksize;
	uint32_t rtextsize;
	__u64	datablocks;
	__u64	rtblocks;
};

typedef struct xfs_error_injection {
	int32_t	fd;
	int32_t	errtag;
} xfs_error_injection_t;

struct dioattr {
	uint32_t d_mem;		/* data buffer memory alignment */
	uint32_t d_miniosz;	/* min xfer size */
	uint32_t d_maxiosz;	/* max xfer size */
};

struct xfs_bstat {
	__u64	bs_ino;
	char	bs_rest[128];
};

struct xfs_fsop_bulkreq {
	__u64	*lastip;
	int32_t	icount;
	void	*ubuffer;
	int32_t	*ocount;
};

struct xfs_flock64 {
	int16_t	l_type;
	int16_t	l_whence;
	int64_t	l_start;
	int64_t	l_len;
	int32_t	l_sysid;
	uint32_t l_pid;
	int32_t	l_pad[4];
};

static inline int
xfsctl(const char *path, int fd, unsigned long cmd, void *arg)
{
	(void)path;
	if (cmd == FS_IOC_FSGETXATTR || cmd == FS_IOC_FSSETXATTR)
		return ioctl(fd, cmd, arg);
	errno = ENOTTY;
	return -1;
}

/* ---- from xfstests' src/global.h ------------------------------------- */

static inline unsigned long long
rounddown_64(unsigned long long x, unsigned int y)
{
	x /= y;
	return x * y;
}

static inline unsigned long long
roundup_64(unsigned long long x, unsigned int y)
{
	return rounddown_64(x + y - 1, y);
}

#endif /* GLOBAL_H */
