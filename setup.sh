#!/usr/bin/env bash
# pvio set-up: installs the Debian packages the project needs (idempotent), configures and
# builds with meson + ninja, then runs what was asked for.
#
#   ./setup.sh run     set up, then run the main job on its built-in default
#   ./setup.sh test    set up, then run the whole test suite
#   ./setup.sh         set up only
set -euo pipefail
cd "$(dirname "$0")"

BUILD_DIR=${PVIO_BUILD_DIR:-build}

PACKAGES=(
  build-essential g++ meson ninja-build pkg-config
  libspdlog-dev libgtest-dev libgmock-dev libbenchmark-dev
  libxen-dev xenstore-utils
  zlib1g-dev  # CRC-32 of pvio-xenstored's journal records
  liburing-dev libaio-dev libdpdk-dev
  libfuse3-dev fuse3
  clang libclang-rt-14-dev g++-multilib g++-mingw-w64-x86-64
  e2fsprogs fio mount iproute2 iputils-ping iperf3 util-linux python3
  socat ethtool
  xz-utils  # unpacks the Mini-OS test peer (tests/hypervisor/build_minios.sh)
)

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
  if [[ ! -f $BUILD_DIR/build.ninja ]]; then
    meson setup "$BUILD_DIR" >/dev/null
  fi
  ninja -C "$BUILD_DIR"
}

run_tests() {
  local rc=0
  meson test -C "$BUILD_DIR" --print-errorlogs --num-processes "$(nproc)" || rc=$?
  run_sanitized || rc=$?
  FUZZ_PASSED=0 FUZZ_FAILED=0
  run_fuzzers || rc=$?
  # One plain closing line, counted from meson's machine-readable logs plus the fuzz runs.
  python3 - "$FUZZ_PASSED" "$FUZZ_FAILED" "$BUILD_DIR/meson-logs/testlog.json" \
    "$BUILD_DIR-asan/meson-logs/testlog.json" <<'PY'
import json, os, sys
counts = {"OK": int(sys.argv[1]), "FAIL": int(sys.argv[2]), "SKIP": 0}
for log in sys.argv[3:]:
    if not os.path.exists(log):
        continue
    for line in open(log):
        r = json.loads(line)["result"]
        key = {"OK": "OK", "SKIP": "SKIP", "EXPECTEDFAIL": "OK"}.get(r, "FAIL")
        counts[key] += 1
print(f"{counts['OK']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
PY
  return $rc
}

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer: hostile-input
# tests must pass with no sanitizer report, and any report fails the run.
run_sanitized() {
  local dir=${BUILD_DIR}-asan
  if [[ ! -f $dir/build.ninja ]]; then
    meson setup "$dir" -Db_sanitize=address,undefined -Db_lundef=false -Dbenchmarks=false \
      >/dev/null
  fi
  ninja -C "$dir"
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1} \
    meson test -C "$dir" --print-errorlogs --num-processes "$(nproc)" --timeout-multiplier 3
}

# libFuzzer targets (clang), built in their own directory and each run for a short, fixed time;
# a crash, leak or sanitizer report fails the run. FUZZ_SECONDS sets the time per target.
run_fuzzers() {
  local dir=${BUILD_DIR}-fuzz seconds=${FUZZ_SECONDS:-20} rc=0
  if [[ ! -f $dir/build.ninja ]]; then
    CC=clang CXX=clang++ meson setup "$dir" -Dfuzzers=true -Dbenchmarks=false >/dev/null
  fi
  local targets
  targets=$(cd "$dir" && meson introspect --targets | python3 -c '
import json, sys
for t in json.load(sys.stdin):
    if t["name"].endswith("_fuzz"): print(t["filename"][0])')
  local names=()
  for t in $targets; do names+=("${t#"$PWD/$dir/"}"); done
  ninja -C "$dir" "${names[@]}"
  FUZZ_PASSED=0 FUZZ_FAILED=0
  for t in $targets; do
    local corpus
    corpus=$(mktemp -d)
    # New inputs go to the temporary directory; the committed seeds (tests/fuzz/corpus) are read.
    local seeds=tests/fuzz/corpus/$(basename "$t")
    [[ -d $seeds ]] || seeds=
    if "$t" -max_total_time="$seconds" -print_final_stats=0 -artifact_prefix="$corpus/" "$corpus" $seeds >"$corpus.log" 2>&1; then
      echo "fuzz: $(basename "$t") ran ${seconds}s clean"
      FUZZ_PASSED=$((FUZZ_PASSED + 1))
    else
      echo "fuzz: $(basename "$t") FAILED"; tail -40 "$corpus.log"
      FUZZ_FAILED=$((FUZZ_FAILED + 1)); rc=1
    fi
    rm -rf "$corpus" "$corpus.log"
  done
  return $rc
}

run_main() {
  # pvio bench: emulated IDE vs PV disk vs host io_uring on one file (docs/bench.md).
  "$BUILD_DIR/tools/pvio" bench
}

install_packages
build
case "${1:-}" in
  run) run_main ;;
  test) run_tests ;;
  "") ;;
  *) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac
