#!/usr/bin/env bash
# mount8_test.sh TMPFSD [BUILDDIR]: tmpfsd mounted the way mount(8) and fstab mount it:
# `mount -t fuse.tmpfsd SOURCE DIR -o OPTS` runs mount.fuse3,
# which runs `tmpfsd SOURCE DIR -o OPTS` through /bin/sh.
#
# mount(8) (util-linux 2.38) clears PATH before it runs a helper, so the
# shell that mount.fuse3 starts searches its default path, which begins
# with /usr/local/sbin. The test puts the built tmpfsd first in PATH (a
# temporary directory with a symlink) and, so that mount(8) finds that one
# and no installed tmpfsd, re-runs itself in a private mount namespace
# where that directory is bind-mounted over /usr/local/sbin. Nothing
# outside the namespace sees either mount.
#
# Cases: a mount with options (quiet success, findmnt SOURCE/FSTYPE, data
# byte for byte, df size, mount -o remount,size= growing and refused below
# use as kernel tmpfs refuses it, the daemon gone within 10 s of umount); a bad
# option (non-zero, one line naming it, nothing mounted or running);
# mount(8)'s generic options (ro gives EROFS; the rest accepted; noatime,
# strictatime and nodiratime change when reads move atime); an fstab
# line through `mount -T FSTAB DIR`; `mount -o remount,ro` and back (the
# same daemon, the data kept); with BUILDDIR, `meson install
# --destdir` and a mount(8) that runs the installed tmpfsd. Needs root. Mounts only under its own
# mktemp directory, unmounts in every exit path, kills only daemons it
# started (found by their pid file or their command line naming its
# directory).
set -u
tmpfsd_bin=$(realpath "${1:?usage: mount8_test.sh TMPFSD [BUILDDIR]}")
build_dir=${2:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "$(id -u)" -ne 0 ]; then echo "SKIP: needs root"; exit 77; fi
for tool in mount umount findmnt unshare; do
  command -v "$tool" >/dev/null || { echo "SKIP: no $tool"; exit 77; }
done
[ -x /sbin/mount.fuse3 ] || [ -x /usr/sbin/mount.fuse3 ] || { echo "SKIP: no mount.fuse3 (package fuse3)"; exit 77; }

if [ -z "${MOUNT8_IN_NS:-}" ]; then
  exec unshare --mount --propagation private env MOUNT8_IN_NS=1 bash "$0" "$@"
fi

# shellcheck source=tmpfsd_lib.sh
. "$here/tmpfsd_lib.sh"

work=$(mktemp -d /tmp/mount8_test.XXXXXX)
mkdir "$work/bin" "$work/mnt"
ln -s "$tmpfsd_bin" "$work/bin/tmpfsd"
export PATH="$work/bin:$PATH"
mount --bind "$work/bin" /usr/local/sbin || { echo "FAIL: cannot bind $work/bin over /usr/local/sbin"; exit 1; }
mnt=$work/mnt

# Daemons whose command line names our mount point (mount.fuse3 runs
# `tmpfsd SOURCE DIR -o OPTS`): only ours, since DIR is our mktemp name.
daemons_on() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    tr '\0' '\n' 2>/dev/null < "$p/cmdline" | grep -qxF "$1" || continue
    tr '\0' '\n' 2>/dev/null < "$p/cmdline" | head -1 | grep -q 'tmpfsd$' || continue
    echo "${p#/proc/}"
  done
}

cleanup() {
  local pid
  for pid in $(daemons_on "$mnt"); do kill -KILL "$pid" 2>/dev/null; done
  while mountpoint -q "$mnt"; do umount -l "$mnt" || break; done
  umount /usr/local/sbin 2>/dev/null
  [ -n "${bin_bound:-}" ] && umount "$bin_bound" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok: $*"; }

# Waits up to 10 s for PID to be gone; true when it is.
gone_within_10s() {
  local i
  for i in $(seq 100); do
    kill -0 "$1" 2>/dev/null || return 0
    grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# umount DIR, then the daemon PID must be gone within 10 s.
unmount_and_wait() {
  local pid=$1 what=$2
  if ! bounded 20 umount "$mnt"; then fail "$what: umount $mnt failed"; return; fi
  if mountpoint -q "$mnt"; then fail "$what: still mounted after umount"; return; fi
  if [ -z "$pid" ]; then fail "$what: no daemon found to wait for"; return; fi
  if gone_within_10s "$pid"; then
    pass "$what: daemon $pid exited after umount"
  else
    fail "$what: daemon $pid still running 10 s after umount"
    "$here/hang_report.sh" "$pid" "${tmpfsd_log:--}"
    kill -KILL "$pid" 2>/dev/null
  fi
  tmpfsd_pid= tmpfsd_log=
}

# ---- 1. mount -t fuse.tmpfsd SOURCE DIR -o OPTS
out=$(timeout 30 mount -t fuse.tmpfsd mysrc "$mnt" -o size=64m,memory=16m,rw,noatime,nofail 2>&1)
rc=$?
tmpfsd_pid=$(daemons_on "$mnt" | head -1)
if [ $rc -ne 0 ]; then
  fail "mount -t fuse.tmpfsd exited $rc: $out"
elif [ -n "$out" ]; then
  fail "mount -t fuse.tmpfsd printed on success: $out"
else
  pass "mount -t fuse.tmpfsd mysrc DIR -o size=64m,memory=16m,rw,noatime,nofail: exit 0, no output"
fi
if mountpoint -q "$mnt"; then
  got=$(findmnt -n -o SOURCE,FSTYPE "$mnt" | tr -s ' ')
  [ "$got" = "mysrc fuse.tmpfsd" ] && pass "findmnt: $got" || fail "findmnt SOURCE,FSTYPE: '$got', wanted 'mysrc fuse.tmpfsd'"
  opts=$(findmnt -n -o OPTIONS "$mnt")
  case ",$opts," in *,noatime,*) pass "noatime reached the kernel mount ($opts)" ;;
    *) fail "noatime not in the kernel mount's options: $opts" ;; esac
  head -c $((3 << 20)) /dev/urandom > "$work/data"
  if bounded 60 cp "$work/data" "$mnt/file" && bounded 60 cmp "$work/data" "$mnt/file"; then
    pass "3 MiB written and read back byte for byte"
  else
    fail "data through the mount differs or the copy failed"
  fi
  # noatime is the daemon's to keep (the FUSE kernel client leaves atime
  # to it): a read that reaches the daemon leaves an old atime alone.
  touch -a -d 2001-01-01 "$mnt/file"
  bounded 30 dd if="$mnt/file" of=/dev/null bs=64k iflag=direct status=none
  year=$(date -d "@$(stat -c %X "$mnt/file")" +%Y)
  [ "$year" = 2001 ] && pass "noatime: a read left atime at 2001" || fail "noatime: a read moved atime to $year"
  size=$(df -B1 --output=size "$mnt" | tail -1 | tr -d ' ')
  [ "$size" = $((64 << 20)) ] && pass "df: size 64 MiB" || fail "df size $size, wanted $((64 << 20))"
  src=$(df --output=source "$mnt" | tail -1 | tr -d ' ')
  [ "$src" = mysrc ] && pass "df: source mysrc" || fail "df source '$src', wanted mysrc"
  # ---- 1b. mount -o remount,size=: mount(8) runs mount.fuse3 and so
  # tmpfsd with "remount" in -o, which changes the live daemon's limits
  # (daemon/options.h); the same daemon serves on, and none is added.
  out=$(timeout 30 mount -o remount,size=32m "$mnt" 2>&1)
  rc=$?
  size=$(df -B1 --output=size "$mnt" | tail -1 | tr -d ' ')
  if [ $rc -ne 0 ] || [ -n "$out" ] || [ "$size" != $((32 << 20)) ]; then
    fail "remount,size=32m: exit $rc, output '$out', df size $size (want $((32 << 20)))"
  else
    pass "remount,size=32m: exit 0, quiet, df size 32 MiB"
  fi
  [ "$(daemons_on "$mnt")" = "$tmpfsd_pid" ] && pass "remount: the same daemon $tmpfsd_pid, no other" \
    || fail "remount: daemons on $mnt: $(daemons_on "$mnt" | tr '\n' ' ') (want only $tmpfsd_pid)"
  cmp "$work/data" "$mnt/file" || fail "remount: the data changed"
  # Below what is in use (3 MiB): refused as kernel tmpfs refuses it
  # (EINVAL, "Too small a size for current use"; mount(8) exits 32), and
  # nothing changes.
  out=$(timeout 30 mount -o remount,size=1m "$mnt" 2>&1)
  rc=$?
  size=$(df -B1 --output=size "$mnt" | tail -1 | tr -d ' ')
  if [ $rc -ne 32 ] || ! grep -q 'Too small a size for current use' <<<"$out" || [ "$size" != $((32 << 20)) ]; then
    fail "remount,size=1m: exit $rc (want 32), output '$out', df size $size (want $((32 << 20)))"
  else
    pass "remount,size=1m refused: exit 32, '$out', df still 32 MiB"
  fi
  mkdir "$work/k"
  if mount -t tmpfs -o size=8m ktmpfs "$work/k"; then
    head -c $((3 << 20)) /dev/zero > "$work/k/f"
    timeout 30 mount -o remount,size=1m "$work/k" >/dev/null 2>&1
    krc=$?
    ksize=$(df -B1 --output=size "$work/k" | tail -1 | tr -d ' ')
    umount "$work/k"
    [ $krc -eq 32 ] && [ "$ksize" = $((8 << 20)) ] && pass "kernel tmpfs refuses the same remount alike (exit $krc, size kept)" \
      || fail "kernel tmpfs: remount,size=1m exit $krc, size $ksize: tmpfsd's answer no longer matches it"
  fi
  unmount_and_wait "$tmpfsd_pid" "mount -t fuse.tmpfsd"
else
  fail "nothing mounted on $mnt after mount -t fuse.tmpfsd"
fi

# ---- 2. an unknown option through mount(8): one line, nothing mounted
out=$(timeout 30 mount -t fuse.tmpfsd mysrc "$mnt" -o size=1g,bogus=1 2>&1)
rc=$?
lines=$(printf '%s\n' "$out" | grep -c .)
if [ $rc -eq 0 ]; then fail "-o bogus=1 mounted (exit 0)"
elif [ "$lines" -ne 1 ] || ! grep -q bogus <<<"$out"; then fail "-o bogus=1: wanted one line naming bogus, got: $out"
else pass "-o size=1g,bogus=1: exit $rc, one line: $out"; fi
mountpoint -q "$mnt" && { fail "-o bogus=1 left a mount"; umount -l "$mnt"; }
[ -z "$(daemons_on "$mnt")" ] || fail "-o bogus=1 left a daemon: $(daemons_on "$mnt")"

# ---- 3. mount(8)'s generic options: ro reaches the kernel; the rest are accepted
out=$(timeout 30 mount -t fuse.tmpfsd rosrc "$mnt" -o size=8m,ro,nosuid,nodev,noexec,sync,dirsync,relatime,strictatime,lazytime,nodiratime,noauto,_netdev,users,defaults,x-systemd.automount,comment=test 2>&1)
rc=$?
tmpfsd_pid=$(daemons_on "$mnt" | head -1)
if [ $rc -ne 0 ] || [ -n "$out" ]; then
  fail "generic options: exit $rc, output: $out"
elif ! mountpoint -q "$mnt"; then
  fail "generic options: nothing mounted"
else
  opts=$(findmnt -n -o OPTIONS "$mnt")
  missing=
  for want in ro nosuid nodev noexec dirsync; do
    case ",$opts," in *,$want,*) ;; *) missing="$missing $want" ;; esac
  done
  [ -z "$missing" ] && pass "generic options: mounted with $opts" || fail "generic options: missing$missing in $opts"
  if touch "$mnt/x" 2>"$work/err"; then fail "ro mount: touch succeeded"
  elif grep -q 'Read-only file system' "$work/err"; then pass "ro mount: touch gets EROFS"
  else fail "ro mount: touch failed otherwise: $(cat "$work/err")"; fi
fi
mountpoint -q "$mnt" && unmount_and_wait "$tmpfsd_pid" "generic options"

# ---- 3b. strictatime,nodiratime through mount(8): every read moves a
# file's atime (even one in the future), no readdir moves a directory's.
out=$(timeout 30 mount -t fuse.tmpfsd atimesrc "$mnt" -o size=8m,strictatime,nodiratime 2>&1)
rc=$?
tmpfsd_pid=$(daemons_on "$mnt" | head -1)
if [ $rc -ne 0 ] || [ -n "$out" ] || ! mountpoint -q "$mnt"; then
  fail "strictatime,nodiratime: exit $rc, output: $out"
else
  echo data > "$mnt/f" && mkdir "$mnt/d" && touch "$mnt/d/x"
  touch -a -d 2030-01-01 "$mnt/f"
  touch -a -d 2001-01-01 "$mnt/d"
  bounded 30 dd if="$mnt/f" of=/dev/null iflag=direct status=none
  ls "$mnt/d" > /dev/null
  fyear=$(date -d "@$(stat -c %X "$mnt/f")" +%Y) dyear=$(date -d "@$(stat -c %X "$mnt/d")" +%Y)
  if [ "$fyear" = "$(date +%Y)" ] && [ "$dyear" = 2001 ]; then
    pass "strictatime,nodiratime: a read moved the file's atime from 2030 to $fyear; ls left the directory's at 2001"
  else
    fail "strictatime,nodiratime: file atime year $fyear (want $(date +%Y)), directory $dyear (want 2001)"
  fi
fi
mountpoint -q "$mnt" && unmount_and_wait "$tmpfsd_pid" "strictatime,nodiratime"

# ---- 3c. mount -o remount,ro and back: mount(8) runs the helper again,
# with the options /proc/mounts shows; the daemon that serves the mount
# stays (no second one), the data with it, and the kernel flag changes.
out=$(timeout 30 mount -t fuse.tmpfsd remountsrc "$mnt" -o size=8m 2>&1)
rc=$?
tmpfsd_pid=$(daemons_on "$mnt" | head -1)
if [ $rc -ne 0 ] || [ -n "$out" ] || ! mountpoint -q "$mnt"; then
  fail "remount: first mount: exit $rc, output: $out"
else
  echo kept > "$mnt/f"
  out=$(timeout 30 mount -o remount,ro "$mnt" 2>&1)
  rc=$?
  opts=$(findmnt -n -o OPTIONS "$mnt")
  if [ $rc -ne 0 ] || [ -n "$out" ]; then fail "mount -o remount,ro: exit $rc, output: $out"
  elif [ "${opts%%,*}" != ro ]; then fail "mount -o remount,ro: the mount is $opts"
  elif touch "$mnt/g" 2>/dev/null; then fail "remount,ro: touch succeeded"
  elif [ "$(cat "$mnt/f")" != kept ]; then fail "remount,ro: the file is gone or changed"
  else pass "mount -o remount,ro: exit 0, $opts, EROFS, the data kept"; fi
  out=$(timeout 30 mount -o remount,rw "$mnt" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || [ -n "$out" ]; then fail "mount -o remount,rw: exit $rc, output: $out"
  elif ! touch "$mnt/g"; then fail "remount,rw: touch failed"
  else pass "mount -o remount,rw: writable again"; fi
  daemons=$(daemons_on "$mnt" | wc -l)
  [ "$daemons" -eq 1 ] && pass "remount: one daemon ($tmpfsd_pid) throughout" ||
    fail "remount: $daemons daemons on $mnt"
fi
mountpoint -q "$mnt" && unmount_and_wait "$tmpfsd_pid" "remount"

# ---- 4. an fstab line, through mount -T FSTAB DIR (mount(8) reads the
# options from the line, as for /etc/fstab)
printf '# a test fstab\nscratch %s fuse.tmpfsd size=2G,memory=256M,nofail,pid_file=%s,log_file=%s 0 0\n' \
  "$mnt" "$work/fstab.pid" "$work/fstab.log" > "$work/fstab"
out=$(timeout 30 mount -T "$work/fstab" "$mnt" 2>&1)
rc=$?
tmpfsd_pid=$(cat "$work/fstab.pid" 2>/dev/null) tmpfsd_log=$work/fstab.log
if [ $rc -ne 0 ] || [ -n "$out" ]; then
  fail "mount -T fstab: exit $rc, output: $out"
elif ! mountpoint -q "$mnt"; then
  fail "mount -T fstab: nothing mounted"
else
  pass "mount -T fstab $mnt: exit 0, no output"
  got=$(findmnt -n -o SOURCE,FSTYPE "$mnt" | tr -s ' ')
  [ "$got" = "scratch fuse.tmpfsd" ] && pass "fstab findmnt: $got" || fail "fstab findmnt: '$got'"
  size=$(df -B1 --output=size "$mnt" | tail -1 | tr -d ' ')
  [ "$size" = $((2 << 30)) ] && pass "fstab df: size 2 GiB" || fail "fstab df size $size, wanted $((2 << 30))"
  [ -n "$tmpfsd_pid" ] && kill -0 "$tmpfsd_pid" 2>/dev/null && pass "pid_file= names the running daemon $tmpfsd_pid" \
    || fail "pid_file= $work/fstab.pid: '$tmpfsd_pid' is not a running daemon"
  grep -q 'memory=268435456 bytes' "$work/fstab.log" && pass "log_file= has the log; memory=256M counted" \
    || fail "log_file=: no 'memory=268435456 bytes' in $work/fstab.log"
  echo fstab > "$mnt/f" && [ "$(cat "$mnt/f")" = fstab ] || fail "fstab mount: write/read failed"
  # A remount repeats the line's options (memory=256M among them, which
  # cannot change but is the same): only size= moves.
  out=$(timeout 30 mount -T "$work/fstab" -o remount,size=3G "$mnt" 2>&1)
  rc=$?
  size=$(df -B1 --output=size "$mnt" | tail -1 | tr -d ' ')
  if [ $rc -ne 0 ] || [ "$size" != $((3 << 30)) ]; then
    fail "fstab remount,size=3G: exit $rc, output '$out', df size $size (want $((3 << 30)))"
  else
    pass "fstab remount,size=3G (memory=256M repeated): exit 0, df 3 GiB"
  fi
  unmount_and_wait "$tmpfsd_pid" "fstab"
  [ -e "$work/fstab.pid" ] && fail "the pid file outlived the daemon"
fi

# ---- 5. meson install --destdir puts tmpfsd where mount.fuse3 finds it:
# bindir must be on the path the helper's shell searches (mount(8) clears
# PATH), and a mount(8) run with the installed file there must use it.
if [ -n "$build_dir" ]; then
  read -r prefix bindir < <(meson introspect "$build_dir" --buildoptions |
    python3 -c "import json,sys; d={o['name']:o['value'] for o in json.load(sys.stdin)}; print(d['prefix'], d['bindir'])")
  case $bindir in /*) ;; *) bindir=$prefix/$bindir ;; esac
  dest=$work/dest
  if ! out=$(meson install -C "$build_dir" --destdir "$dest" --no-rebuild --quiet 2>&1); then
    fail "meson install --destdir: $out"
  elif [ ! -x "$dest$bindir/tmpfsd" ]; then
    fail "meson install --destdir put no tmpfsd in $dest$bindir: $(find "$dest" -type f)"
  else
    pass "meson install --destdir $dest: $bindir/tmpfsd"
    if [ -x "$dest$bindir/tmpfsctl" ]; then pass "meson install: $bindir/tmpfsctl beside it"
    else fail "meson install put no tmpfsctl in $dest$bindir"; fi
    shell_path=$(env -u PATH /bin/sh -c 'echo "$PATH"')
    case ":$shell_path:" in *:"$bindir":*) pass "$bindir is on the helper shell's path ($shell_path)" ;;
      *) fail "$bindir is not on the path mount.fuse3's shell searches: $shell_path" ;; esac
    # Only the installed copy may answer now: no symlink in /usr/local/sbin.
    umount /usr/local/sbin
    if [ -d "$bindir" ] && mount --bind "$dest$bindir" "$bindir"; then
      bin_bound=$bindir
      out=$(timeout 30 mount -t fuse.tmpfsd installed "$mnt" -o size=16m 2>&1)
      rc=$?
      tmpfsd_pid=$(daemons_on "$mnt" | head -1)
      exe=$(readlink "/proc/$tmpfsd_pid/exe" 2>/dev/null)
      if [ $rc -ne 0 ] || [ -n "$out" ] || ! mountpoint -q "$mnt"; then
        fail "mount with the installed tmpfsd: exit $rc, output: $out"
      elif [ "$exe" != "$bindir/tmpfsd" ]; then
        fail "the daemon runs $exe, not the installed $bindir/tmpfsd"
      else
        pass "mount(8) ran the installed $exe"
      fi
      mountpoint -q "$mnt" && unmount_and_wait "$tmpfsd_pid" "installed"
      umount "$bindir" && bin_bound=
    else
      fail "cannot bind $dest$bindir over $bindir"
    fi
  fi
fi

if [ $failures -ne 0 ]; then echo "mount8: $failures failed"; exit 1; fi
echo "mount8: all passed"
