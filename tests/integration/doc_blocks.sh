#!/usr/bin/env bash
# Runs every ```sh block of the README, docs/*.md and the libraries' README.md files verbatim,
# as a user pastes them: each in a scratch directory whose `build` is this build tree, with the
# build's programs on PATH (the docs say `pvio`, `pvio-xenstored`), under `set -euo pipefail`
# so any failing line fails the test. A few blocks are not run here; the list below says why.
# Usage: doc_blocks.sh SOURCE_ROOT BUILD_ROOT. Exit 77 (skipped) without root, FUSE or KVM.
set -euo pipefail
src=$1 build=$(cd "$2" && pwd)
[[ $(id -u) -eq 0 ]] || { echo "skip: needs root (FUSE, TAP, network namespaces)"; exit 77; }
[[ -c /dev/fuse ]] || { echo "skip: no /dev/fuse"; exit 77; }
[[ -c /dev/kvm ]] || { echo "skip: no /dev/kvm"; exit 77; }
for tool in xenstore-ls iperf3 mkfs.ext4 ip; do
  command -v $tool >/dev/null || { echo "skip: $tool not installed"; exit 77; }
done

# Blocks not run, by file and first line, with the reason.
declare -A not_run=(
  ["README.md|./setup.sh run"]="installs packages and runs the whole suite (it is what CI runs)"
  ["README.md|export PVIO_RUN_DIR=\$(mktemp -d)               # sockets, pid files, logs"]="run by readme_blocks.sh, which also checks what it leaves behind"
  ["docs/bench.md|build/tools/pvio bench                              # defaults: ~40 s here"]="benchmark runs of minutes each"
  ["docs/domain-control-protocol.md|CXX=clang++ CC=clang meson setup build-fuzz -Dfuzzers=true"]="a second build tree with clang; setup.sh test builds and runs the fuzzers"
  ["docs/toolstack.md|systemctl enable --now pvio-xenstored pvio-blkback pvio-netback"]="changes the host's systemd; install_units.sh runs the units' ExecStart from a scratch root"
)

blocks=$(mktemp -d)
python3 - "$src" "$blocks" <<'PY'
import glob, os, re, sys
src, out = sys.argv[1], sys.argv[2]
files = ["README.md"] + sorted(glob.glob("docs/*.md", root_dir=src)) + \
        sorted(f for f in glob.glob("*/**/README.md", root_dir=src, recursive=True)
               if not f.startswith(("build", "subprojects")))
n = 0
for f in files:
    text = open(os.path.join(src, f)).read()
    for m in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M):
        n += 1
        line = text[:m.start()].count("\n") + 1
        with open(os.path.join(out, "%03d" % n), "w") as b:
            b.write("%s\n%d\n%s" % (f, line, m.group(1)))
PY

ran=0 skipped=0 failed=0
for b in "$blocks"/*; do
  file=$(sed -n 1p "$b") line=$(sed -n 2p "$b") first=$(sed -n 3p "$b")
  body=$(tail -n +3 "$b")
  if [[ -n ${not_run["$file|$first"]+x} ]]; then
    echo "=== $file:$line not run: ${not_run["$file|$first"]}"
    skipped=$((skipped + 1))
    continue
  fi
  echo "=== $file:$line"
  scratch=$(mktemp -d)
  ln -s "$build" "$scratch/build"
  mkdir -m 0700 "$scratch/xdg"
  rc=0
  (
    cd "$scratch"
    export PATH="$build/tools:$build/xenstore:$build/hypervisor:$PATH" XDG_RUNTIME_DIR=$scratch/xdg
    unset PVIO_RUN_DIR XENSTORED_PATH
    trap 'echo "${PVIO_RUN_DIR:-}" > "'"$scratch"'/.run_dir"' EXIT
    set -x
    eval "$body"
  ) || rc=$?
  # Whatever the block left running if a line failed half-way.
  run_dir=$(cat "$scratch/.run_dir" 2>/dev/null || true)
  if [[ -n $run_dir && -d $run_dir ]]; then
    # A block that ends cleanly stops what it started.
    [[ $rc -eq 0 ]] && leftovers=$(ls "$run_dir" | grep -E '^(domain-[0-9]+(\.monitor)?|xenstored|blkback|netback)\.pid$' || true)
    grep -o " $run_dir/[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" || true; done
    for pidf in "$run_dir"/domain-*.pid; do
      [[ -e $pidf ]] || continue
      n=${pidf##*/domain-}; n=${n%%.*}
      PVIO_RUN_DIR=$run_dir "$build/tools/pvio" destroy "$n" >/dev/null 2>&1 || true
    done
    PVIO_RUN_DIR=$run_dir "$build/tools/pvio" down >/dev/null 2>&1 || true
    rm -rf "$run_dir"
  fi
  rm -rf "$scratch"
  if [[ $rc -ne 0 ]]; then
    echo "--- FAILED: $file:$line (exit $rc)"
    failed=$((failed + 1))
    [[ $file == docs/netfront.md ]] && { ip netns del guest1 2>/dev/null || true; ip netns del guest2 2>/dev/null || true; }
  elif [[ -n ${leftovers:-} ]]; then
    echo "--- FAILED: $file:$line left $leftovers behind"
    failed=$((failed + 1))
  fi
  leftovers=
  ran=$((ran + 1))
done
rm -rf "$blocks"
echo "doc blocks: $ran run, $failed failed, $skipped not run (reasons above)"
[[ $ran -gt 0 && $failed -eq 0 ]]
