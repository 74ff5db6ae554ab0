#!/usr/bin/env bash
# tests/mount/remote_test.sh TMPFSD TMPFSCTL: the remote tier at mount
# level (issue 17), nothing mocked. Three memcached servers on loopback
# (free ports, -m 64 -M), a daemonised tmpfsd with --memory 8M and
# --remote memcached://...?replicas=1: a working set of 32 MiB (4x
# --memory) of random bytes is written in two halves, one server is
# killed between them, and everything reads back byte for byte with
# O_DIRECT (so the daemon pages it in). tmpfsctl shows remote pages
# (stats, and 'R' runs in where); the pool saw no seal failures and the
# daemon's swap-ins show that pages came back. Servers and the daemon are
# killed by PID, the mount unmounted, in every exit path.
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
echo "remote_test: $(($(date +%s) - start)) s"
[ $fail = 0 ] && echo "remote_test: ok"
exit $fail
