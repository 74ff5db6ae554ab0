#!/usr/bin/env bash
# verify_units.sh BUILDDIR: `systemd-analyze verify` on the installed units:
# tmpfsd.service, the template tmpfsd@.service and an instance
# of it (tmpfsd@mnt-scratch.service). Each must verify with exit 0 and
# print nothing (systemd-analyze only warns, exit 0, about an unknown key).
#
# The units are staged with `meson install --destdir` into a mktemp
# directory. verify checks that every Exec*= command exists, and the
# installed path (PREFIX/bin/tmpfsd) need not exist here, so the copies
# verified name the staged binary instead; nothing else is changed.
# systemd-analyze works without systemd as PID 1. Skips (77) only when
# systemd-analyze is absent.
set -u
build_dir=${1:?usage: verify_units.sh BUILDDIR}
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze"; exit 77; }

work=$(mktemp -d /tmp/verify_units.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

read -r prefix bindir < <(meson introspect "$build_dir" --buildoptions |
  python3 -c "import json,sys; d={o['name']:o['value'] for o in json.load(sys.stdin)}; print(d['prefix'], d['bindir'])")
case $bindir in /*) ;; *) bindir=$prefix/$bindir ;; esac
unitdir=$prefix/lib/systemd/system
if ! out=$(meson install -C "$build_dir" --destdir "$work/dest" --no-rebuild --quiet 2>&1); then
  echo "FAIL: meson install --destdir: $out"; exit 1
fi
mkdir "$work/units"
for u in tmpfsd.service tmpfsd@.service; do
  if [ ! -f "$work/dest$unitdir/$u" ]; then fail "meson install put no $u in $unitdir"; continue; fi
  grep -q "^ExecStart=$bindir/tmpfsd " "$work/dest$unitdir/$u" || fail "$u: ExecStart does not run $bindir/tmpfsd"
  sed "s#^ExecStart=$bindir/tmpfsd #ExecStart=$work/dest$bindir/tmpfsd #" "$work/dest$unitdir/$u" > "$work/units/$u"
done
cp "$work/units/tmpfsd@.service" "$work/units/tmpfsd@mnt-scratch.service"
# The top-level tmpfsd.service (to copy by hand) is systemd/tmpfsd.service.in
# for the default prefix /usr/local: the two must not drift apart.
top=$(cd "$(dirname "$0")/../.." && pwd)
sed -e 's#@bindir@#/usr/local/bin#g' -e 's#@docdir@#/usr/local/share/doc/tmpfsd#g' \
  "$top/systemd/tmpfsd.service.in" | cmp -s - "$top/tmpfsd.service" ||
  fail "tmpfsd.service differs from systemd/tmpfsd.service.in rendered for /usr/local"
[ "$(systemd-escape --unescape --path mnt-scratch)" = /mnt/scratch ] || fail "systemd-escape: mnt-scratch is not /mnt/scratch"

cd "$work" || exit 1
for u in tmpfsd.service tmpfsd@.service tmpfsd@mnt-scratch.service; do
  [ -f "units/$u" ] || continue
  out=$(systemd-analyze verify --man=no "units/$u" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || [ -n "$out" ]; then fail "systemd-analyze verify $u: exit $rc: $out"
  else echo "ok: systemd-analyze verify $u: exit 0, no output"; fi
done

if [ $failures -ne 0 ]; then echo "verify_units: $failures failed"; exit 1; fi
echo "verify_units: all passed"
