#!/usr/bin/env bash
# Long fuzzing runs outside CI: each libFuzzer target (ASan + UBSan, clang) starts from its
# committed seed corpus in tests/fuzz/corpus/<target>/ and runs for a given time or number of
# executions. Prints one table row per target: executions, edge coverage, features, corpus
# size and findings (crash/leak/timeout artefacts, kept in the work directory).
#
#   tests/fuzz/run.sh [-t SECONDS] [-n RUNS] [-j JOBS] [--merge] [TARGET...]
#
#   -t SECONDS  time per target (default 3600); -n RUNS: stop after RUNS executions (first wins)
#   --merge     fold the new inputs, minimised, back into tests/fuzz/corpus/<target>/
#   TARGET      e.g. xenstore_fuzz; default: every *_fuzz target
# FUZZ_TIMEOUT: seconds one input may take before it counts as a hang (default 10; raise it
# on a loaded machine, where a starved process trips it).
# The work directory is $FUZZ_WORK_DIR (default: a new temporary directory); its <target>.log
# files hold libFuzzer's own output.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=$PWD
seconds=3600 runs=-1 merge=0 targets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -t) seconds=$2; shift 2 ;;
    -n) runs=$2; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
dir=${BUILD_DIR:-build}-fuzz
if [[ ! -f $dir/build.ninja ]]; then
  CC=clang CXX=clang++ meson setup "$dir" -Dfuzzers=true -Dbenchmarks=false >/dev/null
fi
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cd "$dir" && meson introspect --targets | python3 -c '
import json, sys
for t in json.load(sys.stdin):
    if t["name"].endswith("_fuzz"): print(t["name"])' | sort)
fi
ninja -C "$dir" $(for t in "${targets[@]}"; do echo "tests/fuzz/$t"; done) >/dev/null
work=${FUZZ_WORK_DIR:-$(mktemp -d)}
mkdir -p "$work"
printf '%-18s %12s %8s %8s %8s %s\n' target executions cov ft corpus findings
failed=0
for t in "${targets[@]}"; do
  seeds=$src/tests/fuzz/corpus/$t
  mkdir -p "$work/$t.corpus" "$work/$t.findings"
  args=(-print_final_stats=1 -artifact_prefix="$work/$t.findings/" -timeout="${FUZZ_TIMEOUT:-10}" -rss_limit_mb=4096)
  [[ $seconds -gt 0 ]] && args+=(-max_total_time="$seconds")
  [[ $runs -ge 0 ]] && args+=(-runs="$runs")
  dirs=("$work/$t.corpus")
  [[ -d $seeds ]] && dirs+=("$seeds")
  rc=0
  "$dir/tests/fuzz/$t" "${args[@]}" "${dirs[@]}" >"$work/$t.log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)' "$work/$t.log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
  corp=$(ls "$work/$t.corpus" | wc -l)
  findings=$(ls "$work/$t.findings" | wc -l)
  [[ $rc -ne 0 || $findings -ne 0 ]] && failed=1
  printf '%-18s %12s %8s %8s %8s %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$corp" \
    "$findings$([[ $rc -ne 0 ]] && echo " (exit $rc, see $work/$t.log)")"
  if [[ $merge -eq 1 ]]; then
    mkdir -p "$seeds"
    "$dir/tests/fuzz/$t" -merge=1 "$seeds" "$work/$t.corpus" >>"$work/$t.log" 2>&1
  fi
done
echo "work directory: $work"
exit $failed
