/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tools/fsstress/config.h: stands in for the config.h that xfstests'
 * autoconf run generates (include/config.h there). The values are fixed for
 * what tmpfsd builds on: Debian bookworm's glibc 2.36 and linux-libc-dev
 * 6.1 headers, plus liburing-dev (which the project already requires). No
 * xfsprogs headers: HAVE_XFS_XFS_H, HAVE_XFS_LIBXFS_H, HAVE_XFS_JDM_H stay
 * undefined and global.h supplies the few XFS names fsstress.c mentions.
 *
 * _GNU_SOURCE and _FILE_OFFSET_BITS=64 are passed on the compiler command
 * line (tools/fsstress/meson.build), as xfstests' builddefs does, because
 * fsstress.c includes system headers before global.h.
 */
#ifndef FSSTRESS_CONFIG_H
#define FSSTRESS_CONFIG_H

/* Headers (autoconf AC_CHECK_HEADERS in xfstests' configure.ac). */
#define HAVE_ASSERT_H 1
#define HAVE_DIRENT_H 1
#define HAVE_ERRNO_H 1
#define HAVE_LIBGEN_H 1
#define HAVE_MALLOC_H 1
#define HAVE_STDLIB_H 1
#define HAVE_STRING_H 1
#define HAVE_STRINGS_H 1
#define HAVE_UNISTD_H 1
#define HAVE_SYS_FCNTL_H 1
#define HAVE_SYS_IOCTL_H 1
#define HAVE_SYS_MMAN_H 1
#define HAVE_SYS_PARAM_H 1
#define HAVE_SYS_STAT_H 1
#define HAVE_SYS_STATVFS_H 1
#define HAVE_SYS_TIME_H 1
#define HAVE_SYS_TYPES_H 1
#define HAVE_SYS_WAIT_H 1
#define STDC_HEADERS 1

/* Linux-specific features fsstress.c tests for. */
#define HAVE_LINUX_FALLOC_H 1   /* fallocate, punch, zero, collapse, insert, unshare */
#define HAVE_LINUX_FIEMAP_H 1   /* fiemap */
#define HAVE_SYS_PRCTL_H 1      /* children get PR_SET_PDEATHSIG(SIGKILL) */
#define HAVE_RENAMEAT2 1        /* glibc >= 2.28 declares renameat2() */
#define HAVE_COPY_FILE_RANGE 1  /* copyrange (Makefile: -DHAVE_COPY_FILE_RANGE) */

/* io_uring (Makefile: -DURING, -luring): uring_read, uring_write. */
#define HAVE_LIBURING 1
#define URING 1

/*
 * Deliberately off:
 *   AIO               - libaio is not a tmpfsd dependency (aread, awrite,
 *                       afsync become no-ops)
 *   HAVE_BTRFSUTIL_H  - no libbtrfsutil (snapshot, subvol_* are zeroed by
 *                       non_btrfs_freq() anyway)
 *   HAVE_XFS_*        - no xfsprogs headers (see global.h)
 */

/*
 * fsstress's internal consistency checks (check_cwd() stats "." after every
 * operation, get_fname() aborts on a corrupt file list): on by default in
 * xfstests, whose configure sets DEBUG=-DDEBUG unless told otherwise.
 */
#define DEBUG 1

#endif /* FSSTRESS_CONFIG_H */
