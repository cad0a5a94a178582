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
  liburing-dev libaio-dev libdpdk-dev
  libfuse3-dev fuse3
  clang libclang-rt-14-dev
  e2fsprogs fio iproute2 iputils-ping iperf3 util-linux
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
  # One plain closing line, counted from meson's machine-readable log.
  python3 - "$BUILD_DIR/meson-logs/testlog.json" <<'PY'
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0}
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    key = {"OK": "OK", "SKIP": "SKIP", "EXPECTEDFAIL": "OK"}.get(r, "FAIL")
    counts[key] += 1
print(f"{counts['OK']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
PY
  return $rc
}

run_main() {
  "$BUILD_DIR/bench/ring_bench" --benchmark_min_time=0.2
}

install_packages
build
case "${1:-}" in
  run) run_main ;;
  test) run_tests ;;
  "") ;;
  *) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac
