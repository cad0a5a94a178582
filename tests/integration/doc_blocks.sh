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
  ["README.md|./setup.sh run "]="installs packages and runs the whole suite (it is what CI runs)"
  ["README.md|export PVIO_RUN_DIR=\$(mktemp -d)               # sockets"]="run by readme_blocks.sh, which also checks what it leaves behind"
  ["docs/bench.md|build/tools/pvio bench "]="benchmark runs of minutes each"
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
  why=
  for key in "${!not_run[@]}"; do
    # Keyed by the block's first line (its start, so a comment after it may change).
    if [[ ${key%%|*} == "$file" && $first == "${key#*|}"* ]]; then why=${not_run[$key]}; fi
  done
  if [[ -n $why ]]; then
    echo "=== $file:$line not run: $why"
    skipped=$((skipped + 1))
    continue
  fi
  echo "=== $file:$line"
  scratch=$(mktemp -d)
  ln -s "$build" "$scratch/build"
  mkdir -m 0700 "$scratch/xdg" "$scratch/tmp"
  printf '%s\n' "$body" > "$scratch/.block"
  rc=0
  # TMPDIR keeps what the block makes with mktemp (its run dir) in the scratch directory, so
  # whatever it leaves is found and stopped below; each block gets three minutes.
  (
    cd "$scratch"
    export PATH="$build/tools:$build/xenstore:$build/hypervisor:$PATH"
    export XDG_RUNTIME_DIR=$scratch/xdg TMPDIR=$scratch/tmp
    unset PVIO_RUN_DIR XENSTORED_PATH
    exec timeout 180 bash -euxo pipefail .block
  ) || rc=$?
  leftovers=
  for run_dir in "$scratch"/tmp/*/; do
    run_dir=${run_dir%/}
    [[ -e $run_dir/xenstored.log ]] || continue
    # A block that ends cleanly stops what it started.
    if [[ $rc -eq 0 ]]; then
      leftovers+=$(ls "$run_dir" | grep -E '^(domain-[0-9]+(\.monitor)?|xenstored|blkback|netback)\.pid$' || true)
    fi
    { grep -o " $run_dir/[^ ]*" /proc/self/mountinfo || true; } | sort -r |
      while read -r m; do umount -l "$m" || true; done
    for pidf in "$run_dir"/domain-*.pid; do
      [[ -e $pidf ]] || continue
      n=${pidf##*/domain-}; n=${n%%.*}
      PVIO_RUN_DIR=$run_dir "$build/tools/pvio" destroy "$n" >/dev/null 2>&1 || true
    done
    PVIO_RUN_DIR=$run_dir "$build/tools/pvio" down >/dev/null 2>&1 || true
  done
  { grep -o " $scratch/[^ ]*" /proc/self/mountinfo || true; } | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf "$scratch"
  if [[ $rc -ne 0 ]]; then
    echo "--- FAILED: $file:$line (exit $rc)"
    failed=$((failed + 1))
    if [[ $file == docs/netfront.md ]]; then
      for ns in guest1 guest2; do { ip netns pids $ns 2>/dev/null || true; } | xargs -r kill; ip netns del $ns 2>/dev/null || true; done
    fi
  elif [[ -n ${leftovers:-} ]]; then
    echo "--- FAILED: $file:$line left $leftovers behind"
    failed=$((failed + 1))
  fi
  ran=$((ran + 1))
done
rm -rf "$blocks"
echo "doc blocks: $ran run, $failed failed, $skipped not run (reasons above)"
[[ $ran -gt 0 && $failed -eq 0 ]]
