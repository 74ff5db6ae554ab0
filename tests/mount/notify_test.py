#!/usr/bin/env python3
"""tmpfsd under a service manager's notify protocol (sd_notify(3)).

The test plays systemd: it binds an AF_UNIX SOCK_DGRAM socket in a mktemp
directory, sets NOTIFY_SOCKET to it and starts tmpfsd, once with -f and
once daemonised. It checks, for each:
  - READY=1 arrives, and at the moment it arrives the mount is live: the
    mount point's st_dev differs from its parent's, and a file can be made;
  - every message comes from the service's main process as systemd sees it
    (SO_PASSCRED): the started process, or after MAINPID= the PID it names,
    so that NotifyAccess=main accepts all of them;
  - daemonised: MAINPID= comes with READY=1, names the live daemon (its pid
    file), and the command that was started exits 0 with no output;
  - every STATUS= line matches STATUS_RE (daemon/notify.h: kStatusRegex);
    after 24 MiB are written through --memory 8M, a STATUS refresh (every
    5 s) reports at least 24 MiB of data and at most 8 MiB in frames;
  - SIGTERM to the daemon: STOPPING=1 arrives, no usage STATUS after it, the
    daemon exits 0 and the mount is gone;
  - -f runs with --persist: after STOPPING=1, EXTEND_TIMEOUT_USEC asks for
    time for the save (systemd would otherwise kill a long one at the
    unit's TimeoutStopSec).
And with NOTIFY_SOCKET naming a socket nobody listens on, a daemonised start
still mounts, exits 0 and prints nothing. (Without NOTIFY_SOCKET every other
mount-level test runs.)

Usage: notify_test.py TMPFSD_BIN. Needs root and /dev/fuse (exit 77
otherwise). Mounts only under its own mktemp directory, unmounts in every
exit path, kills only the PIDs it started (it is their subreaper).
"""
import ctypes
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

STATUS_RE = re.compile(
    r"^(mounted on (/.*); ([0-9]+) MiB of data, ([0-9]+) MiB in frames, ([0-9]+) MiB in swap"
    r"|unmounting (/.*)|failed: .*)$")
HERE = os.path.dirname(os.path.abspath(__file__))
TIME_LIMIT_S = 100
DATA_MIB = 24
MEMORY_MIB = 8

failures = 0


def fail(msg):
    global failures
    failures += 1
    print("FAIL:", msg, flush=True)


def ok(msg):
    print("ok:", msg, flush=True)


def become_subreaper():
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class Notify:
    """The manager's end of NOTIFY_SOCKET: datagrams with the sender's PID."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def recv(self, timeout):
        """(pid, {key: value}) or None after `timeout` seconds."""
        self.sock.settimeout(max(timeout, 0.01))
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return None
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        fields = {}
        for line in data.decode().split("\n"):
            if line:
                k, _, v = line.partition("=")
                fields[k] = v
        return pid, fields

    def close(self):
        self.sock.close()

    def from_main(self, timeout, main_pid, name):
        """The next message's fields, or None after `timeout` s; a message
        from any process but the main one (as systemd sees it) fails."""
        m = self.recv(timeout)
        if m is None:
            return None
        pid, fields = m
        if pid != main_pid:
            fail(f"{name}: a message from PID {pid}, not the main process {main_pid}: {fields}")
        return fields


def mounted(path):
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path)).st_dev
    except OSError:
        return False


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(l.startswith("State:") and "Z" in l for l in f)
    except OSError:
        return False


def run_case(tmpfsd, work, foreground):
    name = "-f" if foreground else "daemonised"
    mnt = os.path.join(work, "mnt-" + name.strip("-"))
    os.mkdir(mnt)
    swap_dir = tempfile.mkdtemp(prefix="notify_test.", dir="/var/tmp")  # not a tmpfs
    log = os.path.join(work, name.strip("-") + ".log")
    sock_path = os.path.join(work, "notify-" + name.strip("-"))
    notify = Notify(sock_path)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    cmd = [tmpfsd, "--log-file", log, "--pid-file", log + ".pid", "-o", "size=64m",
           "--memory", f"{MEMORY_MIB}M", "--swap", "48M", "--swap-dir", swap_dir]
    if foreground:
        # With --persist the stop saves an image after STOPPING=1, asking
        # systemd for time as it goes.
        cmd += ["-f", "--persist", os.path.join(swap_dir, "persist")]
    cmd.append(mnt)
    started = []  # PIDs we started (the command; the daemon)
    main_pid = None
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(proc.pid)
        main_pid = proc.pid
        deadline = time.monotonic() + 30
        ready = None
        statuses = []
        while ready is None and time.monotonic() < deadline:
            fields = notify.from_main(deadline - time.monotonic(), main_pid, name)
            if fields is None:
                break
            if "READY" in fields:
                # The moment READY=1 arrives: the mount must be live.
                live = mounted(mnt)
                try:
                    with open(os.path.join(mnt, "probe"), "w") as f:
                        f.write("ready\n")
                    made = True
                except OSError as e:
                    made = e
                ready = (main_pid, fields, live, made)
            if "STATUS" in fields:
                statuses.append(fields["STATUS"])
        if ready is None:
            fail(f"{name}: no READY=1 within 30 s")
            return
        pid, fields, live, made = ready
        if fields.get("READY") != "1":
            fail(f"{name}: READY={fields.get('READY')}")
        if live and made is True:
            ok(f"{name}: READY=1 arrived with the mount live (st_dev differs from the parent's; a file was made)")
        else:
            fail(f"{name}: at READY=1 the mount was live: {live}; creating a file: {made}")
        daemon_pid = proc.pid
        if foreground:
            if "MAINPID" in fields and fields["MAINPID"] != str(proc.pid):
                fail(f"{name}: MAINPID={fields['MAINPID']}, not the process itself ({proc.pid})")
        else:
            try:
                out, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                fail(f"{name}: the command did not exit within 10 s of READY=1")
                return
            started.remove(proc.pid)  # reaped: its PID may be reused
            if proc.returncode != 0 or out or err:
                fail(f"{name}: the command exited {proc.returncode}, printed {out!r} {err!r}")
            else:
                ok(f"{name}: the command exited 0 and printed nothing")
            try:
                with open(log + ".pid") as f:
                    file_pid = int(f.read())
            except (OSError, ValueError):
                file_pid = None
            if not file_pid:
                fail(f"{name}: no daemon PID in the pid file {log}.pid")
                return
            started.append(file_pid)
            daemon_pid = file_pid
            mp = fields.get("MAINPID")
            if mp is None:
                fail(f"{name}: no MAINPID= with READY=1")
            elif not mp.isdigit() or int(mp) != file_pid or not alive(int(mp)) or int(mp) == proc.pid:
                fail(f"{name}: MAINPID={mp}; the pid file says {file_pid}; the command was {proc.pid}")
            else:
                ok(f"{name}: MAINPID={mp} names the live daemon (its pid file), not the command ({proc.pid})")
            main_pid = daemon_pid  # as systemd sees it once MAINPID= is taken
        if "STATUS" not in fields:
            fail(f"{name}: no STATUS= with READY=1")

        # Data beyond --memory, then a STATUS refresh that counts it.
        with open(os.path.join(mnt, "data"), "wb") as f:
            for _ in range(DATA_MIB):
                f.write(os.urandom(1 << 20))
        deadline = time.monotonic() + 15
        counted = None
        while counted is None and time.monotonic() < deadline:
            fields = notify.from_main(deadline - time.monotonic(), main_pid, name)
            if fields is None:
                break
            if "STATUS" in fields:
                statuses.append(fields["STATUS"])
                g = STATUS_RE.match(fields["STATUS"])
                if g and g.group(2) and int(g.group(3)) >= DATA_MIB:
                    counted = g
        if counted is None:
            fail(f"{name}: no STATUS reporting {DATA_MIB} MiB of data within 15 s: {statuses}")
        else:
            data, frames, swap = (int(counted.group(i)) for i in (3, 4, 5))
            if counted.group(2) != mnt or frames > MEMORY_MIB:
                fail(f"{name}: STATUS {counted.group(0)!r}: wanted {mnt} and at most {MEMORY_MIB} MiB in frames")
            else:
                ok(f"{name}: STATUS refreshed: {counted.group(0)!r}")

        # SIGTERM: STOPPING=1, the daemon exits 0, the mount is gone.
        os.kill(daemon_pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        stopping = False
        extended = None
        after_stop = []
        while time.monotonic() < deadline:
            fields = notify.from_main(min(deadline - time.monotonic(), 2 if stopping else 15), main_pid, name)
            if fields is None:
                break
            if "STATUS" in fields:
                statuses.append(fields["STATUS"])
                if stopping:
                    after_stop.append(fields["STATUS"])
            if "EXTEND_TIMEOUT_USEC" in fields and stopping:
                extended = fields["EXTEND_TIMEOUT_USEC"]
            if fields.get("STOPPING") == "1":
                stopping = True
                if fields.get("STATUS") != "unmounting " + mnt:
                    fail(f"{name}: STOPPING=1 came with STATUS={fields.get('STATUS')}")
        if stopping:
            ok(f"{name}: STOPPING=1 after SIGTERM")
        else:
            fail(f"{name}: no STOPPING=1 within 15 s of SIGTERM")
        if after_stop:
            fail(f"{name}: STATUS after STOPPING=1: {after_stop}")
        if foreground:
            if extended is not None and extended.isdigit() and int(extended) >= 30_000_000:
                ok(f"{name}: --persist: EXTEND_TIMEOUT_USEC={extended} after STOPPING=1, for the save")
            else:
                fail(f"{name}: --persist: no EXTEND_TIMEOUT_USEC of 30 s or more after STOPPING=1 "
                     f"(got {extended})")
        rc = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                got, status = os.waitpid(daemon_pid, os.WNOHANG)
            except ChildProcessError:
                break
            if got == daemon_pid:
                rc = os.waitstatus_to_exitcode(status)
                started.remove(daemon_pid)  # reaped: its PID may be reused
                break
            time.sleep(0.05)
        if rc == 0 and not mounted(mnt):
            ok(f"{name}: the daemon exited 0 after SIGTERM and the mount is gone")
        else:
            fail(f"{name}: after SIGTERM the daemon's exit status is {rc}, still mounted: {mounted(mnt)}")
            subprocess.run([os.path.join(HERE, "hang_report.sh"), str(daemon_pid), log])
        bad = [s for s in statuses if not STATUS_RE.match(s)]
        if bad:
            fail(f"{name}: STATUS lines that do not parse: {bad}")
        else:
            ok(f"{name}: all {len(statuses)} STATUS lines parse")
    finally:
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        while mounted(mnt):
            if subprocess.run(["umount", "-l", mnt]).returncode != 0:
                break
        for pid in started:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        notify.close()
        shutil.rmtree(swap_dir, ignore_errors=True)


def run_no_listener(tmpfsd, work):
    """NOTIFY_SOCKET names nothing: the start is as without it."""
    mnt = os.path.join(work, "mnt-nolistener")
    os.mkdir(mnt)
    log = os.path.join(work, "nolistener.log")
    env = dict(os.environ, NOTIFY_SOCKET=os.path.join(work, "nobody-listens"))
    pid = None
    try:
        r = subprocess.run([tmpfsd, "--log-file", log, "--pid-file", log + ".pid", "-o", "size=8m",
                            "--swap", "0", mnt], env=env, capture_output=True, timeout=30)
        try:
            with open(log + ".pid") as f:
                pid = int(f.read())
        except (OSError, ValueError):
            pass
        if r.returncode == 0 and not r.stdout and not r.stderr and mounted(mnt):
            ok("NOTIFY_SOCKET with no listener: mounted, exit 0, nothing printed")
        else:
            fail(f"NOTIFY_SOCKET with no listener: exit {r.returncode}, {r.stdout!r} {r.stderr!r}, "
                 f"mounted: {mounted(mnt)}")
        if pid:
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
            pid = None
            if os.waitstatus_to_exitcode(status) != 0 or mounted(mnt):
                fail(f"NOTIFY_SOCKET with no listener: after SIGTERM exit status {status}, "
                     f"mounted: {mounted(mnt)}")
    finally:
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
        while mounted(mnt):
            if subprocess.run(["umount", "-l", mnt]).returncode != 0:
                break


def main():
    if len(sys.argv) != 2:
        print("usage: notify_test.py TMPFSD_BIN", file=sys.stderr)
        return 2
    tmpfsd = os.path.abspath(sys.argv[1])
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("SKIP: needs root and /dev/fuse")
        return 77
    become_subreaper()  # the daemonised tmpfsd becomes our child: its exit status

    def on_alarm(*_):
        raise TimeoutError(f"past {TIME_LIMIT_S} s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TIME_LIMIT_S)
    work = tempfile.mkdtemp(prefix="notify_test.")
    try:
        run_case(tmpfsd, work, foreground=True)
        run_case(tmpfsd, work, foreground=False)
        run_no_listener(tmpfsd, work)
    except TimeoutError as e:
        fail(str(e))
    finally:
        signal.alarm(0)
        shutil.rmtree(work, ignore_errors=True)
    if failures:
        print(f"notify: {failures} failed")
        return 1
    print("notify: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
