#!/usr/bin/env bash
# `meson install` into a scratch root: the daemons, pvio-hv, pvio-domain, the guest kernel and
# the systemd units land where they should; the units pass `systemd-analyze verify`; and each
# unit's ExecStart, run as systemd would run it (its Environment, under the scratch root), starts
# a daemon that serves: pvio-xenstored answers Debian's xenstore-ls, pvio-blkback stays up and
# pvio-netback writes its stats file.
# Usage: install_units.sh BUILD_ROOT. Exit 77 (skipped) where a prerequisite is missing.
set -euo pipefail
build=$1
command -v systemd-analyze >/dev/null || { echo "skip: systemd-analyze not installed"; exit 77; }
command -v xenstore-ls >/dev/null || { echo "skip: xenstore-ls not installed"; exit 77; }
root=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT

meson install -C "$build" --no-rebuild --destdir "$root" --quiet >/dev/null
prefix=$(meson introspect "$build" --buildoptions | python3 -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
for f in bin/pvio bin/pvio-xenstored bin/pvio-blkback bin/pvio-domain bin/pvio-hv \
         share/pvio/pvio-guest.elf lib/systemd/system/pvio-xenstored.service \
         bin/pvio-netback lib/systemd/system/pvio-blkback.service \
         lib/systemd/system/pvio-netback.service; do
  [[ -e $root$prefix/$f ]] || { echo "not installed: $prefix/$f"; exit 1; }
done
units=$root$prefix/lib/systemd/system
# verify resolves ExecStart binaries: give it the scratch root.
SYSTEMD_LOG_LEVEL=err systemd-analyze verify --root="$root" --man=no --recursive-errors=no \
  "$units/pvio-xenstored.service" "$units/pvio-blkback.service" \
  "$units/pvio-netback.service" 2>&1 | tee "$root/verify.log"
if grep -v -e 'Failed to .*dbus' -e 'not-found' "$root/verify.log" | grep -qi 'error\|invalid\|unknown'; then
  echo "systemd-analyze verify reported problems"; exit 1
fi

# Each unit's ExecStart and Environment, with /run/pvio moved under the scratch root.
run_dir=$root/run/pvio
mkdir -p "$run_dir"
exec_of() {
  sed -n 's/^ExecStart=//p' "$units/$1" | sed "s|/run/pvio|$run_dir|g; s|$prefix/bin|$root$prefix/bin|g"
}
export PVIO_RUN_DIR=$run_dir
# shellcheck disable=SC2046
$(exec_of pvio-xenstored.service) >"$root/xenstored.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  XENSTORED_PATH=$run_dir/xenstored.sock xenstore-ls / >/dev/null 2>&1 && break
  sleep 0.05
done
XENSTORED_PATH=$run_dir/xenstored.sock xenstore-ls / >/dev/null || {
  echo "pvio-xenstored from its unit does not answer"; cat "$root/xenstored.log"; exit 1; }
# shellcheck disable=SC2046
$(exec_of pvio-blkback.service) >"$root/blkback.log" 2>&1 & pids+=($!)
sleep 0.5
kill -0 "${pids[1]}" || { echo "pvio-blkback from its unit exited"; cat "$root/blkback.log"; exit 1; }
# shellcheck disable=SC2046
$(exec_of pvio-netback.service) >"$root/netback.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [[ -e $run_dir/netback.stats ]] && break; sleep 0.05; done
kill -0 "${pids[2]}" || { echo "pvio-netback from its unit exited"; cat "$root/netback.log"; exit 1; }
[[ -e $run_dir/netback.stats ]] || { echo "pvio-netback from its unit wrote no stats file"; exit 1; }
# The installed CLI sees the daemons the units started.
"$root$prefix/bin/pvio" list >/dev/null
echo "installed units verified and their daemons serve"
