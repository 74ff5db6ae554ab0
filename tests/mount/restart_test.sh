#!/usr/bin/env bash
# tests/mount/restart_test.sh TMPFSD TMPFSCTL FSSTRESS: restart without
# unmounting (issue 32). On a daemonised mount (--transport dev, --memory 8M
# so that most data lives in the swap file):
#   - a tree with one of everything, and descriptors held across the
#     restart by a helper: a file open for reading and writing, an open
#     file that has been unlinked, a directory half-read; after
#     `tmpfsctl restart` the manifest (stat fields to the nanosecond, inode
#     numbers, sha256, xattrs, flags) is the same, the descriptors still
#     read and write, the unlinked file still holds its data, the directory
#     reads on to the end with every name once;
#   - a writer that checks every byte it writes, and fsstress, run across
#     three restarts (SIGUSR2 for one): no operation fails, the mount point
#     is never gone (a watcher stats it every 10 ms), the daemon never dies;
#   - a restart into a binary that exits at once, and into one that does
#     not exist: refused or failed, the same daemon serves on, nothing lost;
#     a good one then keeps the limits tmpfsctl set changed;
#   - with --persist: the new daemon holds DIR's lock and saves at its stop;
#   - under a (played) service manager: MAINPID= names the new daemon, and
#     SIGTERM to it unmounts;
#   - with the rings (when enable_uring is Y): refused, with the reason.
# Prints the restart times.
set -euo pipefail
[ -n "${RESTART_TEST_TRACE:-}" ] && set -x
bin=$(realpath "$1")
ctl=$(realpath "$2")
fsstress=$(realpath "$3")
source "$(dirname "$0")/tmpfsd_lib.sh"
tmpfsd_scratch restart mnt mnt2 ctl
mnt=$work/mnt
ctldir=$work/ctl
opts=(--transport dev --memory 8M --swap 1G --swap-dir "$swapdir" -o size=1G)
fail=0
check() { if ! "$@"; then echo "FAIL: $*"; fail=1; fi; }

manifest() { tmpfsd_manifest "$mnt" load many; }  # the load's files change

# `tmpfsctl restart` and the new daemon's pid; prints the time it took.
restart() {
  local out
  if ! out=$("$ctl" restart "$@" "$mnt" 2>&1); then
    echo "FAIL: tmpfsctl restart $*: $out"
    fail=1
    return 1
  fi
  echo "  $out"
  tmpfsd_pid=$(cat "$tmpfsd_log.pid")
}

tmpfsd_start "$bin" "$work/daemon.log" "$mnt" "${opts[@]}" || exit 1
echo "== a tree, held descriptors, a restart"
tmpfsd_tree "$mnt"
# Reads move no atime from here on (relatime: an atime after mtime and
# ctime, less than a day old), whether the kernel's cache answers or not.
find "$mnt" -exec touch -a -h -d '+1 hour' {} +
chattr +i "$mnt/dir/sub/empty"

# The helper holds its descriptors across the restart: it says "held" once
# they are open (the directory half-read), waits for "go", checks them.
python3 - "$mnt" "$ctldir" > "$work/helper.out" 2>&1 <<'PY' &
import os, sys, time
mnt, ctl = sys.argv[1], sys.argv[2]
bad = []
names = {f"entry-{i:05d}-" + "n" * 100 for i in range(3000)}
os.mkdir(f"{mnt}/many")
for n in names:
    open(f"{mnt}/many/{n}", "w").close()
rw = os.open(f"{mnt}/rw", os.O_RDWR | os.O_CREAT, 0o644)
os.write(rw, b"A" * 10000)
gone_data = os.urandom(3 << 20)
gone = os.open(f"{mnt}/gone", os.O_RDWR | os.O_CREAT, 0o600)
os.write(gone, gone_data)
os.unlink(f"{mnt}/gone")
d = os.scandir(f"{mnt}/many")
seen = []
for e in d:
    seen.append(e.name)
    if len(seen) == 100:
        break
open(f"{ctl}/held", "w").close()
while not os.path.exists(f"{ctl}/go"):
    time.sleep(0.01)
for e in d:
    seen.append(e.name)
if len(seen) != len(set(seen)) or set(seen) != names:
    bad.append(f"readdir across the restart: {len(seen)} names, {len(set(seen))} distinct, "
               f"{len(names - set(seen))} missing")
if os.pread(rw, 10000, 0) != b"A" * 10000:
    bad.append("the rw descriptor reads other bytes")
os.pwrite(rw, b"B" * 5000, 2500)
with open(f"{mnt}/rw", "rb") as f:
    if f.read() != b"A" * 2500 + b"B" * 5000 + b"A" * 2500:
        bad.append("a write through the old descriptor is not in the file")
if os.fstat(gone).st_nlink != 0:
    bad.append("the unlinked file has a name again")
if os.pread(gone, len(gone_data) + 1, 0) != gone_data:
    bad.append("the unlinked file lost its data")
os.pwrite(gone, b"more", len(gone_data))
if os.pread(gone, 10, len(gone_data)) != b"more":
    bad.append("the unlinked file takes no write")
os.close(gone)
os.close(rw)
print("\n".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
PY
helper=$!
for _ in $(seq 1500); do [ -e "$ctldir/held" ] || ! kill -0 $helper 2>/dev/null && break; sleep 0.02; done
check test -e "$ctldir/held"
manifest > /dev/null   # atimes move once (relatime)
manifest > "$work/m.before"
old_pid=$tmpfsd_pid
restart
check test "$tmpfsd_pid" != "$old_pid"
check mountpoint -q "$mnt"
manifest > "$work/m.after"
check diff "$work/m.before" "$work/m.after"
: > "$ctldir/go"
if ! wait $helper; then echo "FAIL: held descriptors: $(cat "$work/helper.out")"; fail=1; fi
check grep -q "restart: pid $tmpfsd_pid serves the mount now" "$work/daemon.log"
manifest | grep -v '^\. type=' > "$work/m.base"   # the root changes below

echo "== restarts under load: a checking writer, fsstress, a watcher"
mkdir -p "$mnt/load/stress"
rm -f "$ctldir/stop"
python3 - "$mnt/load" "$ctldir/stop" > "$work/writer.out" 2>&1 <<'PY' &
import os, sys
d, stop = sys.argv[1], sys.argv[2]
n = errors = 0
try:
    while not os.path.exists(stop):
        p = f"{d}/w{n % 50}"
        data = os.urandom(4096 * (1 + n % 16))
        with open(p, "wb") as f:
            f.write(data)
        with open(p, "rb") as f:
            if f.read() != data:
                print(f"op {n}: {p} reads other bytes"); errors += 1
        os.rename(p, p + ".r")
        os.stat(p + ".r")
        os.mkdir(f"{d}/dir{n}")
        os.rmdir(f"{d}/dir{n}")
        os.unlink(p + ".r")
        n += 1
except OSError as e:
    print(f"op {n}: {e}"); errors += 1
print(f"{n} rounds, {errors} errors")
sys.exit(1 if errors or n == 0 else 0)
PY
writer=$!
"$fsstress" -d "$mnt/load/stress" -p 4 -n 100000000 -s 7 > "$work/fsstress.out" 2>&1 &
stress=$!
(while [ ! -e "$ctldir/stop" ]; do
   mountpoint -q "$mnt" || echo "gone: $(date +%T.%N)"
   stat "$mnt/dir/text" > /dev/null || echo "stat failed: $(date +%T.%N)"
   sleep 0.01
 done) > "$work/watch.out" 2>&1 &
watcher=$!
sleep 2
restart
sleep 1
old_pid=$tmpfsd_pid
kill -USR2 "$tmpfsd_pid"
for _ in $(seq 500); do ! tmpfsd_alive && break; sleep 0.02; done   # the old one exits
tmpfsd_pid=$(cat "$tmpfsd_log.pid")
check test "$tmpfsd_pid" != "$old_pid"
echo "  SIGUSR2: $(grep -o "restart: pid $tmpfsd_pid serves the mount now; [0-9]* ms" "$work/daemon.log")"
sleep 1
restart
sleep 1
: > "$ctldir/stop"
kill "$stress" 2>/dev/null || true
wait "$stress" 2>/dev/null || true
if ! wait "$writer"; then echo "FAIL: the writer: $(cat "$work/writer.out")"; fail=1; fi
echo "  writer: $(tail -1 "$work/writer.out")"
grep -o 'restart: pid .* serves the mount now.*' "$work/daemon.log" | sed 's/^/  /'
grep -o 'restart: took over.*' "$work/daemon.log" | sed 's/^/  /'
wait "$watcher" || true
if [ -s "$work/watch.out" ]; then echo "FAIL: the watcher saw: $(head -5 "$work/watch.out")"; fail=1; fi
check tmpfsd_alive
check mountpoint -q "$mnt"
grep -E 'critical|underflow' "$work/daemon.log" && { echo "FAIL: the daemon log has the above"; fail=1; }
rm -rf "$mnt/load"
manifest | grep -v '^\. type=' > "$work/m.after2"
check diff "$work/m.base" "$work/m.after2"
manifest > "$work/m.base2"

echo "== failed restarts: the same daemon serves on"
old_pid=$tmpfsd_pid
if "$ctl" restart --binary /bin/false "$mnt" 2> "$work/false.err"; then
  echo "FAIL: a restart into /bin/false succeeded"; fail=1
fi
check grep -q "restart failed" "$work/false.err"
check grep -q "the new daemon exited with status 1; this daemon serves on" "$work/daemon.log"
if "$ctl" restart --binary "$work/no-such-tmpfsd" "$mnt" 2> "$work/nosuch.err"; then
  echo "FAIL: a restart into a missing binary succeeded"; fail=1
fi
check grep -q "restart refused: cannot execute" "$work/nosuch.err"
check test "$(cat "$tmpfsd_log.pid")" = "$old_pid"
check tmpfsd_alive
manifest > "$work/m.after3"
check diff "$work/m.base2" "$work/m.after3"
# And a good one after them, which keeps what tmpfsctl set changed.
check "$ctl" set "$mnt" size=900m
restart
check test "$(df -B1 --output=size "$mnt" | tail -1 | tr -d ' ')" = $((900 << 20))
manifest > "$work/m.after4"
check diff "$work/m.base2" "$work/m.after4"
tmpfsd_stop || fail=1

echo "== --persist: the lock goes over, the new daemon saves"
mnt=$work/mnt2
tmpfsd_start "$bin" "$work/persist.log" "$mnt" --transport dev --persist "$work/state" || exit 1
echo kept > "$mnt/file"
restart
echo more >> "$mnt/file"
tmpfsd_stop || fail=1
check grep -q "persist: saved" "$work/persist.log"
tmpfsd_start "$bin" "$work/persist2.log" "$mnt" --transport dev --persist "$work/state" || exit 1
check test "$(cat "$mnt/file")" = "$(printf 'kept\nmore')"
tmpfsd_stop || fail=1

echo "== under a service manager: MAINPID= names the new daemon"
# As the units run it (-f, Type=notify, NotifyAccess=main): a notify socket
# of our own plays systemd's.
if ! python3 - "$bin" "$ctl" "$work" > "$work/notify.out" 2>&1 <<'PY'
import os, socket, subprocess, sys
bin, ctl, work = sys.argv[1:4]
mnt = os.path.join(work, "mnt2")
path = os.path.join(work, "notify")
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
s.settimeout(30)
p = subprocess.Popen([bin, "-f", "--transport", "dev", "--log-file", work + "/notify.log",
                      "tmpfsd", mnt], env=dict(os.environ, NOTIFY_SOCKET=path),
                     stderr=subprocess.DEVNULL)
def wait_for(word):
    while True:
        m = s.recv(4096).decode()
        if word in m:
            return m
try:
    wait_for("READY=1")
    out = subprocess.run([ctl, "restart", mnt], capture_output=True, text=True, timeout=60)
    print(out.stdout.strip(), out.stderr.strip())
    new = int(wait_for("MAINPID=").split("MAINPID=")[1].split()[0])
    assert p.wait(timeout=10) == 0, "the old daemon did not exit 0"
    assert f"pid {new} serves" in out.stdout, "MAINPID= is not the pid that serves"
    os.kill(new, 15)
    for _ in range(200):
        if not os.path.ismount(mnt):
            break
        __import__("time").sleep(0.05)
    assert not os.path.ismount(mnt), "the new daemon did not unmount at SIGTERM"
    print("ok")
finally:
    if p.poll() is None:
        p.kill()
    if os.path.ismount(mnt):
        subprocess.run(["umount", "-l", mnt])
PY
then
  echo "FAIL: notify: $(cat "$work/notify.out")"
  fail=1
fi

if [ "$(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null)" = Y ]; then
  echo "== the rings: refused"
  tmpfsd_start "$bin" "$work/uring.log" "$mnt" --transport uring || exit 1
  if "$ctl" restart "$mnt" 2> "$work/uring.err"; then echo "FAIL: restarted with the rings"; fail=1; fi
  check grep -q "not with FUSE over io_uring" "$work/uring.err"
  check tmpfsd_alive
  tmpfsd_stop || fail=1
fi

[ $fail -eq 0 ] && echo "restart: all passed"
exit $fail
