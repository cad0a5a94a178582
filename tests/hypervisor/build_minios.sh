#!/bin/sh
# Builds the Mini-OS test peer into the build tree: runs the peers folder's build script into a
# scratch directory (the peers folder may be read-only) and copies the kernel to OUT.
#   build_minios.sh BUILD_SCRIPT OUT [extra CFLAGS...]
set -eu
script=$1; out=$2; shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sh "$script" "$work" "$@" >/dev/null
cp "$work/mini-os" "$out"
