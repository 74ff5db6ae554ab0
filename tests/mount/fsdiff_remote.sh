#!/usr/bin/env bash
# fsdiff_remote.sh FSDIFF_BIN TMPFSD_BIN [budget-scale]: fsdiff and fsx
# against kernel tmpfs (fsdiff_tmpfsd.sh) with tmpfsd at --memory 2M and
# the remote tier on, one memcached on loopback (a free port, -M), so that
# every kind of operation meets pages that live in the pool. memcached is
# killed by its PID in every exit path. Needs root (77: skipped).
set -u
[ "$(id -u)" -eq 0 ] || { echo "fsdiff_remote: needs root to mount; skipped"; exit 77; }
fsdiff=$1 tmpfsd=$2 scale=${3:-0.33}
here=$(cd "$(dirname "$0")" && pwd)
memcached=${MEMCACHED:-/usr/bin/memcached}
[ -x "$memcached" ] || { echo "FAIL: no $memcached (tools/deps installs memcached)"; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$memcached" -u root -l 127.0.0.1 -p "$port" -U 0 -m 256 -M -t 1 &
mc=$!
trap 'kill -KILL $mc 2>/dev/null; wait $mc 2>/dev/null' EXIT
trap 'exit 1' INT TERM
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.05; done
"$here/fsdiff_tmpfsd.sh" "$fsdiff" "$tmpfsd" "$scale" --memory 2M \
  --remote "memcached://127.0.0.1:$port"
