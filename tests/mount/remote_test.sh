#!/usr/bin/env bash
# tests/mount/remote_test.sh TMPFSD TMPFSCTL: the remote tier at mount
# level (issue 17), nothing mocked. Three memcached servers on loopback
# (free ports, -m 64 -M), a daemonised tmpfsd with --memory 8M and
# --remote memcached://...?replicas=1: a working set of 32 MiB (4x
# --memory) of random bytes is written in two halves, one server is
# killed between them, and everything reads back byte for byte with
# O_DIRECT (so the daemon pages it in). tmpfsctl shows remote pages
# (stats, and 'R' runs in where); the pool saw no seal failures and the
# daemon's swap-ins show that pages came back. Then without replicas, on
# the two servers left: 16 MiB written, one server killed, and every page
# read on its own: the pages that were on it are EIO, every other page
# reads back right, the daemon goes on and new writes go elsewhere.
# Last, ?local_copy=1 on the one server left: 16 MiB written, that server
# killed, and the file reads back whole from the copies in the swap file.
# Servers and the daemon are killed by PID, the mount unmounted, in every
# exit path.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "remote_test: needs root to mount; skipped"; exit 77; }
bin=$(realpath "$1")
ctl=$(realpath "$2")
memcached=${MEMCACHED:-/usr/bin/memcached}
[ -x "$memcached" ] || { echo "FAIL: no $memcached (tools/deps installs memcached)"; exit 1; }
source "$(dirname "$0")/tmpfsd_lib.sh"
tmpfsd_scratch remote mnt
mnt=$work/mnt
servers=() ports=()
remote_cleanup() {
  local p
  for p in "${servers[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  tmpfsd_scratch_cleanup
}
trap remote_cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
for i in 0 1 2; do
  port=$(free_port)
  "$memcached" -u root -l 127.0.0.1 -p "$port" -U 0 -m 64 -M -t 1 &
  servers+=($!) ports+=("$port")
done
for port in "${ports[@]}"; do  # ready when it answers
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
    sleep 0.05
  done
done
url="memcached://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}?replicas=1"
fail=0
start=$(date +%s)

tmpfsd_start "$bin" "$work/daemon.log" "$mnt" --memory 8M --swap 64M --swap-dir "$swapdir" \
  --remote "$url" --remote-size 48M -o size=64M || exit 1
grep -q "remote tier: memcached://" "$work/daemon.log" || { echo "FAIL: the log does not name the pool"; fail=1; }

half=$((16 << 20))
head -c $((2 * half)) /dev/urandom >"$work/ref"
bounded 60 dd if="$work/ref" of="$mnt/f" bs=1M count=16 status=none conv=notrunc
kill -KILL "${servers[1]}"; wait "${servers[1]}" 2>/dev/null || true
echo "killed memcached on port ${ports[1]} after 16 MiB"
bounded 60 dd if="$work/ref" of="$mnt/f" bs=1M skip=16 seek=16 count=16 status=none conv=notrunc

bounded 30 "$ctl" where "$mnt/f" >"$work/where" || { echo "FAIL: tmpfsctl where"; fail=1; }
grep -q "remote" "$work/where" || { echo "FAIL: where shows no remote pages"; cat "$work/where"; fail=1; }
bounded 60 dd if="$mnt/f" bs=1M iflag=direct status=none | cmp - "$work/ref" ||
  { echo "FAIL: the file does not read back"; fail=1; }
bounded 30 "$ctl" stats "$mnt" >"$work/stats" || { echo "FAIL: tmpfsctl stats"; fail=1; }
stat_of() { awk -v k="$1" '$1 == k || $1 == k":" { print $2 }' "$work/stats"; }
for k in remote_pages remote_round_trips remote_failures remote_fallbacks remote_seal_failures \
  remote_bytes_read swap_ins; do
  echo "$k $(stat_of $k)"
done
[ "$(stat_of remote_pages)" -gt 0 ] || { echo "FAIL: no pages in the pool"; fail=1; }
[ "$(stat_of remote_bytes_read)" -gt 0 ] || { echo "FAIL: nothing read back from the pool"; fail=1; }
[ "$(stat_of remote_failures)" -gt 0 ] || { echo "FAIL: the dead server cost no failure?"; fail=1; }
[ "$(stat_of remote_seal_failures)" -eq 0 ] || { echo "FAIL: seal failures"; fail=1; }
[ "$(stat_of swap_ins)" -gt 0 ] || { echo "FAIL: nothing paged in"; fail=1; }
tmpfsd_stop || fail=1
grep -q "remote tier: [0-9]* pages" "$work/daemon.log" || { echo "FAIL: no remote line at unmount"; fail=1; }

# Without replicas: a page whose only copy dies is EIO, for that page only.
url0="memcached://127.0.0.1:${ports[0]},127.0.0.1:${ports[2]}"
tmpfsd_start "$bin" "$work/daemon0.log" "$mnt" --memory 8M --swap 64M --swap-dir "$swapdir" \
  --remote "$url0" -o size=64M || exit 1
bounded 60 dd if="$work/ref" of="$mnt/g" bs=1M count=16 status=none
kill -KILL "${servers[2]}"; wait "${servers[2]}" 2>/dev/null || true
echo "killed memcached on port ${ports[2]}; replicas=0"
# Every page on its own, O_DIRECT: "ok", "eio" or "wrong" per page.
cat >"$work/pages.py" <<'PY'
import errno, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
ref = open(sys.argv[2], "rb")
buf = mmap.mmap(-1, 4096)
for page in range(4096):
    ref.seek(page * 4096)
    want = ref.read(4096)
    try:
        n = os.preadv(fd, [buf], page * 4096)
        print("ok" if n == 4096 and buf[:] == want else "wrong")
    except OSError as e:
        print("eio" if e.errno == errno.EIO else "errno%d" % e.errno)
PY
bounded 120 python3 "$work/pages.py" "$mnt/g" "$work/ref" >"$work/pages" || fail=1
ok=$(grep -c '^ok$' "$work/pages" || true)
eio=$(grep -c '^eio$' "$work/pages" || true)
other=$(grep -vc '^ok$\|^eio$' "$work/pages" || true)
echo "replicas=0, one of two servers killed: $ok pages read back, $eio EIO, $other other"
[ "$other" -eq 0 ] || { echo "FAIL: pages read wrong or with another error"; fail=1; }
[ "$eio" -gt 0 ] || { echo "FAIL: no page was lost with its server?"; fail=1; }
[ "$ok" -gt 0 ] || { echo "FAIL: every page lost"; fail=1; }
tmpfsd_alive || { echo "FAIL: the daemon died"; fail=1; }
# New data still goes somewhere and reads back.
t0=$(date +%s%N)
bounded 60 dd if="$work/ref" of="$mnt/h" bs=1M count=16 status=none
echo "16 MiB written after the kill in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
bounded 60 dd if="$mnt/h" bs=1M iflag=direct status=none | cmp - <(head -c $((16 << 20)) "$work/ref") ||
  { echo "FAIL: a file written after the kill does not read back"; fail=1; }
tmpfsd_stop || fail=1

# local_copy instead of replicas: the last server killed, nothing is lost.
url1="memcached://127.0.0.1:${ports[0]}?local_copy=1"
tmpfsd_start "$bin" "$work/daemon1.log" "$mnt" --memory 8M --swap 64M --swap-dir "$swapdir" \
  --remote "$url1" -o size=64M || exit 1
bounded 60 dd if="$work/ref" of="$mnt/k" bs=1M count=16 status=none
kill -KILL "${servers[0]}"; wait "${servers[0]}" 2>/dev/null || true
echo "killed memcached on port ${ports[0]}, the pool's only server; local_copy=1"
bounded 60 dd if="$mnt/k" bs=1M iflag=direct status=none | cmp - <(head -c $((16 << 20)) "$work/ref") ||
  { echo "FAIL: with local copies, the file does not read back"; fail=1; }
bounded 30 "$ctl" stats "$mnt" >"$work/stats" || { echo "FAIL: tmpfsctl stats"; fail=1; }
echo "remote_local_copies $(stat_of remote_local_copies), remote_local_reads $(stat_of remote_local_reads)"
[ "$(stat_of remote_local_reads)" -gt 0 ] || { echo "FAIL: nothing read from the local copies"; fail=1; }
tmpfsd_stop || fail=1
echo "remote_test: $(($(date +%s) - start)) s"
[ $fail = 0 ] && echo "remote_test: ok"
exit $fail
