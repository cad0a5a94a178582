#!/usr/bin/env bash
# Runs the README's "Using it" command block verbatim, as a new user pastes it: in a scratch
# directory whose `build` is this build tree, with `set -e` so any failing line fails the test.
# Usage: readme_blocks.sh SOURCE_ROOT BUILD_ROOT. Exit 77 (skipped) without root, FUSE or KVM.
set -euo pipefail
src=$1 build=$2
[[ $(id -u) -eq 0 ]] || { echo "skip: needs root (FUSE mounts, loop of the toolstack)"; exit 77; }
[[ -c /dev/fuse ]] || { echo "skip: no /dev/fuse"; exit 77; }
[[ -c /dev/kvm ]] || { echo "skip: no /dev/kvm (the block boots pvio-hv)"; exit 77; }
command -v xenstore-ls >/dev/null || { echo "skip: xenstore-ls not installed"; exit 77; }

block=$(python3 - "$src/README.md" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
section = text.split("## Using it", 1)[1]
m = re.search(r"```sh\n(.*?)```", section, re.S)
print(m.group(1))
PY
)
scratch=$(mktemp -d)
cleanup() {
  # Whatever the block left running if a line failed half-way.
  if [[ -n ${PVIO_RUN_DIR:-} && -d ${PVIO_RUN_DIR:-/nonexistent} ]]; then
    umount -l "$PVIO_RUN_DIR/mnt" 2>/dev/null || true
    "$build/tools/pvio" down >/dev/null 2>&1 || true
  fi
  rm -rf "$scratch" "${PVIO_RUN_DIR:-/nonexistent}"
}
trap cleanup EXIT
ln -s "$build" "$scratch/build"
cd "$scratch"
echo "--- running the README block:"
echo "$block"
echo "---"
set -x
eval "$block"
set +x
# What the block promises, checked afterwards.
[[ ! -e disk.img ]] && { echo "disk.img missing"; exit 1; }
if grep -q " $PVIO_RUN_DIR/mnt " /proc/self/mountinfo; then echo "FUSE mount left behind"; exit 1; fi
echo "README block ran clean"
