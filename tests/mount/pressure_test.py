#!/usr/bin/env python3
"""Mount-level pressure test of reclaim, writeback and swap-in.

tmpfsd runs with --memory 32M and its swap file in a mktemp dir under
/var/tmp (--swap-dir). Phase 1 writes 512 MiB over many files, overwrites
random ranges (partial pages, page-crossing), truncates some, and compares
everything read back with an in-memory model (SHA-256 per file). Phase 2
does the same with 4 concurrent writers on their own files. Between writing
and reading, the kernel's page cache of each file is dropped
(POSIX_FADV_DONTNEED), so reads reach the daemon and its swapped pages.

The daemon's peak RSS (VmHWM) must stay below the frame budget plus a
metadata allowance: ALLOWANCE_MIB below, 32 MiB; measured peak 50 MiB in all (libfuse's worker buffers of 1 MiB+
each, thread stacks, io_uring rings, allocator slack, and the index of 512
MiB of pages at ~9 bytes per swapped page). The swap is sealed (the
default): add a quarter of --memory for the bounce buffers of the pages
under writeback (the page cache lets a quarter of its frames be in
writeback; each sealed write needs a page for its ciphertext) and the seal
table (24 bytes per slot used); measured peak 65 MiB sealed, 48 MiB with
--seal off.

With --compress CODEC the daemon keeps evicted pages compressed in memory
first (--compress CODEC, the pool a share of --memory) and the data written
compresses about 2:1 (each page half random bytes, half zeros, as fio's
buffer_compress_percentage=50): the same RSS bound must hold, the pool's
memory being part of --memory.

Usage: pressure_test.py TMPFSD_BIN [--quick] [--compress CODEC]. Needs /dev/fuse (root or
fusermount3). Always unmounts and kills the daemon (by PID) on the way out.
"""
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

MEMORY_MIB = 32
ALLOWANCE_MIB = 32 + MEMORY_MIB // 4  # metadata, + the sealed swap's bounce buffers
PAGE = 4096


HERE = os.path.dirname(os.path.abspath(__file__))
TIME_LIMIT_S = 240  # past it: the daemon's stacks and counters, then failure


def become_subreaper():
    """A daemonised tmpfsd's parent exits at once; as subreaper this process
    inherits the daemon and can wait for its exit status."""
    import ctypes
    PR_SET_CHILD_SUBREAPER = 36
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class Daemon:
    """tmpfsd started as users start it: daemonised; the command returns
    once the mount is live and prints nothing."""

    def __init__(self, binary, extra=()):
        self.mnt = tempfile.mkdtemp(prefix="tmpfsd-pressure-mnt.")
        self.swapdir = tempfile.mkdtemp(prefix="tmpfsd-pressure-swap.", dir="/var/tmp")
        self.log_path = os.path.join(self.swapdir, "log")
        self.pid_path = os.path.join(self.swapdir, "pid")
        self.pid = None
        self.status = None
        become_subreaper()
        start = subprocess.run(
            [binary, "--memory", f"{MEMORY_MIB}M", "--swap", "1G", "--swap-dir",
             self.swapdir, "-o", "size=1G", "--log-file", self.log_path, "--pid-file",
             self.pid_path, *extra, self.mnt],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        if start.returncode != 0 or not os.path.ismount(self.mnt):
            raise RuntimeError(f"tmpfsd did not mount (exit {start.returncode}): "
                               f"{start.stdout.decode()}\n" + self.read_log())
        if start.stdout:
            raise RuntimeError(f"tmpfsd printed on success: {start.stdout.decode()!r}")
        with open(self.pid_path) as f:
            self.pid = int(f.read())
        # The watchdog is a process forked now, before any file on the mount
        # is open: one forked later would inherit those descriptors, and
        # closing them sends FLUSH to the daemon that cannot answer.
        sys.stdout.flush()
        self.watchdog = os.fork()
        if self.watchdog == 0:
            self.hung(os.getppid())

    def hung(self, test_pid):
        time.sleep(TIME_LIMIT_S)
        print(f"TIMEOUT: the pressure test ran past {TIME_LIMIT_S} s", flush=True)
        subprocess.run([os.path.join(HERE, "hang_report.sh"), str(self.pid), self.log_path])
        os.kill(self.pid, signal.SIGKILL)
        subprocess.run(["umount", "-l", self.mnt], check=False)
        print("FAIL: timed out", flush=True)
        os.kill(test_pid, signal.SIGKILL)
        os._exit(1)

    def read_log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def hwm_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
        return int(m.group(1))

    def stop(self):
        """SIGTERM: the daemon unmounts and exits 0 within 10 s."""
        if self.pid is not None:
            os.kill(self.watchdog, signal.SIGKILL)
            os.waitpid(self.watchdog, 0)
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.time() + 10
            while self.status is None and time.time() < deadline:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid == self.pid:
                    self.status = status
                else:
                    time.sleep(0.02)
            if self.status is None:
                subprocess.run([os.path.join(HERE, "hang_report.sh"), str(self.pid), self.log_path])
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        if os.path.ismount(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], check=False)
        log = self.read_log()
        for f in (self.log_path, self.pid_path):
            try:
                os.unlink(f)
            except OSError:
                pass
        for d in (self.mnt, self.swapdir):
            try:
                os.rmdir(d)
            except OSError:
                pass
        return log


HALF_ZEROS = False  # --compress: pages half random, half zeros (about 2:1)


def file_data(rng, n):
    if not HALF_ZEROS:
        return bytearray(rng.randbytes(n))
    r = rng.randbytes(n // 2)
    zeros = bytes(PAGE // 2)
    return bytearray(b"".join(r[i:i + PAGE // 2] + zeros for i in range(0, len(r), PAGE // 2)))


def workload(root, name, nfiles, file_bytes, rng, ops):
    """Writes nfiles files, overwrites and truncates; returns the model."""
    model = {}
    for i in range(nfiles):
        path = os.path.join(root, f"{name}-{i}")
        data = file_data(rng, file_bytes)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            for off in range(0, file_bytes, 1 << 20):
                os.pwrite(fd, data[off:off + (1 << 20)], off)
        finally:
            os.close(fd)
        model[path] = data
    paths = sorted(model)
    for _ in range(ops):
        path = rng.choice(paths)
        data = model[path]
        fd = os.open(path, os.O_WRONLY)
        try:
            if rng.random() < 0.01:
                new = rng.randrange(len(data) // 2, len(data) + 1)
                os.ftruncate(fd, new)
                del data[new:]
            else:
                off = rng.randrange(0, max(1, len(data) + PAGE))
                n = rng.choice([1, 17, PAGE - 1, PAGE, PAGE + 3, 3 * PAGE + 100,
                                rng.randrange(1, 64 * 1024)])
                b = rng.randbytes(n)
                os.pwrite(fd, b, off)
                if off > len(data):
                    data.extend(bytes(off - len(data)))
                data[off:off + n] = b
        finally:
            os.close(fd)
    return model


def verify(model):
    bad = []
    for path, data in model.items():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            h = hashlib.sha256()
            size = 0
            while True:
                b = os.pread(fd, 1 << 20, size)
                if not b:
                    break
                h.update(b)
                size += len(b)
        finally:
            os.close(fd)
        if size != len(data) or h.digest() != hashlib.sha256(data).digest():
            bad.append(f"{path}: size {size} vs model {len(data)}, contents differ")
    return bad


def main():
    binary = sys.argv[1]
    quick = "--quick" in sys.argv
    total_mib = 128 if quick else 512
    extra = []
    if "--compress" in sys.argv:
        global HALF_ZEROS
        HALF_ZEROS = True
        extra = ["--compress", sys.argv[sys.argv.index("--compress") + 1]]
    d = Daemon(binary, extra)
    failures = []
    try:
        t0 = time.time()
        # Phase 1: one writer, 64 files of 8 MiB (512 MiB).
        rng = random.Random(5)
        nfiles = total_mib // 8
        model = workload(d.mnt, "seq", nfiles, 8 << 20, rng, 2000)
        t1 = time.time()
        failures += verify(model)
        t2 = time.time()
        print(f"phase 1: wrote {total_mib} MiB + 2000 overwrites/truncates in {t1 - t0:.1f} s "
              f"({total_mib / (t1 - t0):.0f} MiB/s), verified in {t2 - t1:.1f} s; "
              f"VmHWM {d.hwm_kib() // 1024} MiB", flush=True)
        for p in model:
            os.unlink(p)
        del model
        # Phase 2: 4 concurrent writers, each on its own files.
        results = [None] * 4
        errors = []

        def writer(k):
            try:
                r = random.Random(100 + k)
                results[k] = workload(d.mnt, f"par{k}", nfiles // 4, 8 << 20, r, 500)
            except Exception as e:  # noqa: BLE001 -- reported below
                errors.append(f"writer {k}: {e!r}")

        ts = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        failures += errors
        for m in results:
            if m is not None:
                failures += verify(m)
        t3 = time.time()
        hwm = d.hwm_kib()
        print(f"phase 2: 4 writers, {total_mib} MiB + 2000 overwrites/truncates, verified, "
              f"in {t3 - t2:.1f} s; VmHWM {hwm // 1024} MiB", flush=True)
        limit = (MEMORY_MIB + ALLOWANCE_MIB) * 1024
        if hwm > limit:
            failures.append(f"peak RSS {hwm} KiB > --memory {MEMORY_MIB} MiB + allowance "
                            f"{ALLOWANCE_MIB} MiB")
    except Exception as e:  # noqa: BLE001
        failures.append(f"exception: {e!r}")
    finally:
        log = d.stop()
    if d.status != 0:
        failures.append(f"tmpfsd's exit after SIGTERM: status {d.status} (want 0, within 10 s)")
    m = re.search(r"swap-ins (\d+)", log)
    swap_ins = int(m.group(1)) if m else -1
    print("\n".join(l for l in log.splitlines() if "page cache:" in l or "error" in l)[:4000])
    if extra and f"compressed pool: {extra[1]}" not in log:
        failures.append(f"the log does not say the compressed pool ({extra[1]}) is on")
    if swap_ins <= 0:
        failures.append(f"no swap-in happened (swap-ins {swap_ins}): the test did not test reclaim")
    # The overwrites land in part of swapped pages: the paths that leave a
    # write's bytes to the swap-in and rewrite only dirty blocks must run.
    m = re.search(r"(\d+) writes replied from the completion", log)
    if not m or int(m.group(1)) == 0:
        failures.append("no write was replied from a swap-in completion: the pending-write path "
                        "went untested")
    m = re.search(r"(\d+) partial,", log)
    if not m or int(m.group(1)) == 0:
        failures.append("no partial writeback happened: the per-block path went untested")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures[:20]))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
