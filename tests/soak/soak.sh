#!/usr/bin/env bash
# Soak (not CI): guests keep working for a given time while the backends are killed.
#
#   tests/soak/soak.sh [-t SECONDS] [-k KILL_EVERY_S] [-s SAMPLE_EVERY_S] [BUILD_DIR]
#
# Runs, in a run dir of its own:
#   - domains 41 and 42: user-mode guests with a PV disk (FUSE), fio randrw with crc32c
#     verification back to back;
#   - domains 43 and 44: user-mode guests with a PV NIC each (TAP in a network namespace of
#     its own), iperf3 TCP streams (500 Mbit/s) from 43 to 44 back to back;
#   - domain 45: the HVM test guest under pvio-hv, booted again and again with a verified PV
#     disk workload;
# while pvio-blkback and pvio-netback are killed with SIGKILL in turn every KILL_EVERY_S
# seconds (default 180) and brought back with `pvio up`. Every SAMPLE_EVERY_S seconds
# (default 30) it records each daemon's and each guest process's RSS and open fds in
# samples.csv. Fails on any fio/iperf3/guest error, on a daemon that does not come back, or
# when a process that is never killed (pvio-xenstored, the user-mode guests) grows by more
# than 32 MiB RSS or 32 fds from its first sample after warm-up, or a restarted backend
# instance peaks more than that above the first instance's peak. Needs root, /dev/kvm, FUSE, fio,
# iperf3, ip.
set -uo pipefail
duration=3600 kill_every=180 sample_every=30
while getopts "t:k:s:h" opt; do
  case $opt in
    t) duration=$OPTARG ;;
    k) kill_every=$OPTARG ;;
    s) sample_every=$OPTARG ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
build=$(realpath "${1:-$(dirname "$0")/../../build}")
pvio=$build/tools/pvio
kernel=$build/guest/pvio-guest.elf
for p in fio iperf3 ip; do command -v $p >/dev/null || { echo "soak: needs $p"; exit 2; }; done
[[ $(id -u) -eq 0 && -c /dev/kvm && -c /dev/fuse ]] || { echo "soak: needs root, /dev/kvm, /dev/fuse"; exit 2; }
[[ -x $pvio && -f $kernel ]] || { echo "soak: build $build first"; exit 2; }

export PVIO_RUN_DIR=${PVIO_RUN_DIR:-$(mktemp -d)}
run=$PVIO_RUN_DIR
out=$run/soak
mkdir -p "$out"
echo "soak: ${duration}s, kills every ${kill_every}s, samples every ${sample_every}s; results in $out"
stop=$out/stop
ns=(pvio-soak-43 pvio-soak-44)
cleanup() {
  touch "$stop"
  sleep 1
  for n in "${ns[@]}"; do ip netns pids "$n" 2>/dev/null | xargs -r kill -9; done
  jobs -p | xargs -r kill 2>/dev/null
  wait 2>/dev/null
  for d in 41 42 43 44 45; do "$pvio" destroy $d >/dev/null 2>&1; done
  for n in "${ns[@]}"; do ip netns del "$n" 2>/dev/null; done
  "$pvio" down >/dev/null 2>&1
}
trap cleanup EXIT
fail() { echo "soak: FAIL: $*" | tee -a "$out/failures"; }

"$pvio" up >/dev/null || { echo "soak: pvio up failed"; exit 1; }

# ---- disk guests ----
for d in 41 42; do
  truncate -s 256M "$run/disk$d.img"
  "$pvio" create --domid $d --memory-mib 64 --vbd 51712 --fuse "$run/mnt$d" >/dev/null || { fail "create $d"; exit 1; }
  "$pvio" block-attach $d "$run/disk$d.img" >/dev/null || { fail "block-attach $d"; exit 1; }
done
fio_loop() {
  local d=$1 n=0
  while [[ ! -e $stop ]]; do
    n=$((n + 1))
    if ! fio --name=soak$d --filename="$run/mnt$d/disk" --ioengine=libaio --direct=1 --rw=randrw \
        --bssplit=512/10:4k/40:16k/25:64k/15:128k/10 --iodepth=16 --size=64M --verify=crc32c \
        --verify_fatal=1 --verify_state_save=0 >"$out/fio$d.last" 2>&1 || ! grep -q "err= 0" "$out/fio$d.last"; then
      [[ -e $stop ]] && break
      cp "$out/fio$d.last" "$out/fio$d.fail.$n"
      fail "fio on domain $d, run $n (fio$d.fail.$n)"
    fi
    echo "$n" >"$out/fio$d.runs"
  done
}

# ---- network guests ----
ips=(10.241.0.43 10.241.0.44)
for i in 0 1; do
  d=$((43 + i))
  tap=pvsoak$d
  "$pvio" create --domid $d --memory-mib 32 --vif 00:16:3e:50:00:$d --tap $tap >/dev/null || { fail "create $d"; exit 1; }
  for _ in $(seq 100); do ip link show $tap >/dev/null 2>&1 && break; sleep 0.1; done
  ip netns add "${ns[$i]}" && ip link set $tap netns "${ns[$i]}" &&
    ip netns exec "${ns[$i]}" ip addr add "${ips[$i]}/24" dev $tap &&
    ip netns exec "${ns[$i]}" ip link set $tap up && ip netns exec "${ns[$i]}" ip link set lo up ||
    { fail "network set-up of $d"; exit 1; }
done
ip netns exec "${ns[1]}" iperf3 -s -D -B "${ips[1]}" -I "$out/iperf3.pid"
sleep 1
iperf_loop() {
  local n=0
  while [[ ! -e $stop ]]; do
    n=$((n + 1))
    if ! ip netns exec "${ns[0]}" iperf3 -c "${ips[1]}" -t 20 -b 500M --connect-timeout 30000 >"$out/iperf3.last" 2>&1; then
      [[ -e $stop ]] && break
      cp "$out/iperf3.last" "$out/iperf3.fail.$n"
      fail "iperf3 run $n (iperf3.fail.$n)"
      sleep 2
    fi
    echo "$n" >"$out/iperf3.runs"
  done
}

# ---- the HVM test guest ----
truncate -s 64M "$run/disk45.img"
hvm_loop() {
  local n=0
  while [[ ! -e $stop ]]; do
    n=$((n + 1))
    "$pvio" create --kernel "$kernel" --domid 45 --mem 64M --vbd "51712:$run/disk45.img" \
      --cmdline "mode=workload disk=pv rw=randwrite bs=4096 qd=8 time=3000 verify=1 seed=$n" \
      >"$out/hvm.create" 2>&1 || { fail "HVM create, run $n: $(cat "$out/hvm.create")"; sleep 5; continue; }
    local pid
    pid=$(cat "$run/domain-45.pid" 2>/dev/null)
    for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; [[ -e $stop ]] && break; sleep 0.1; done
    [[ -e $stop ]] && break
    local result
    result=$(grep -a "PVIO-RESULT" "$run/domain-45.log" | tail -1)
    if ! grep -q '"errors":0' <<<"$result" || ! grep -q '"verify_failures":0' <<<"$result"; then
      cp "$run/domain-45.log" "$out/hvm.fail.$n"
      fail "HVM guest run $n: ${result:-no result} (hvm.fail.$n)"
    fi
    "$pvio" destroy 45 >/dev/null 2>&1
    echo "$n" >"$out/hvm.runs"
  done
}

# ---- sampling ----
sample() {
  local t=$1 name pid
  for name in xenstored blkback netback domain-41 domain-42 domain-43 domain-44; do
    pid=$(cat "$run/$name.pid" 2>/dev/null) || continue
    [[ -d /proc/$pid ]] || continue
    local rss fds
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    fds=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
    echo "$t,$name,$pid,${rss:-0},$fds" >>"$out/samples.csv"
  done
}

echo "t_s,process,pid,rss_kib,fds" >"$out/samples.csv"
fio_loop 41 & fio_loop 42 & iperf_loop & hvm_loop &
start=$(date +%s)
next_kill=$kill_every next_sample=0 victim=blkback kills=0
while :; do
  now=$(( $(date +%s) - start ))
  [[ $now -ge $duration ]] && break
  if [[ $now -ge $next_sample ]]; then sample "$now"; next_sample=$((next_sample + sample_every)); fi
  if [[ $now -ge $next_kill ]]; then
    pid=$(cat "$run/$victim.pid" 2>/dev/null)
    if [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null; then
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      "$pvio" up >/dev/null 2>&1 || fail "pvio up after killing $victim"
      newpid=$(cat "$run/$victim.pid" 2>/dev/null)
      if [[ -z $newpid || $newpid == "$pid" ]] || ! kill -0 "$newpid" 2>/dev/null; then
        fail "$victim did not come back"
      fi
      kills=$((kills + 1))
      echo "$now,$victim,$pid,$newpid" >>"$out/kills.csv"
    else
      fail "$victim was not running at ${now}s"
    fi
    [[ $victim == blkback ]] && victim=netback || victim=blkback
    next_kill=$((next_kill + kill_every))
  fi
  sleep 1
done
sample "$duration"
touch "$stop"
wait

# ---- verdict ----
python3 - "$out/samples.csv" "$duration" <<'PY' || fail "resource growth (see above)"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
warm = min(120, int(sys.argv[2]) // 4)
bad = False
by_proc = {}
for r in rows:
    by_proc.setdefault(r["process"], []).append(r)
print(f"{'process':<12} {'instances':>9} {'rss first':>10} {'rss last':>10} {'rss max':>10} {'fds first':>9} {'fds last':>8} {'fds max':>7}")
for name, rs in sorted(by_proc.items()):
    pids = []
    for r in rs:
        if r["pid"] not in pids: pids.append(r["pid"])
    steady = [r for r in rs if int(r["t_s"]) >= warm] or rs
    rss = [int(r["rss_kib"]) for r in steady]
    fds = [int(r["fds"]) for r in steady]
    print(f"{name:<12} {len(pids):>9} {rss[0]:>9}K {rss[-1]:>9}K {max(rss):>9}K {fds[0]:>9} {fds[-1]:>8} {max(fds):>7}")
    if len(pids) == 1:  # never killed: must not grow
        if max(rss) > rss[0] + 32 * 1024 or max(fds) > fds[0] + 32:
            print(f"  {name}: grew beyond 32 MiB / 32 fds"); bad = True
    else:  # restarted: each instance's peak against the first instance's peak (a backend's
           # RSS follows how many guests are connected, so single samples go up and down)
        def peak(p, key): return max(int(r[key]) for r in rs if r["pid"] == p)
        r0, f0 = peak(pids[0], "rss_kib"), peak(pids[0], "fds")
        for p in pids[1:]:
            if peak(p, "rss_kib") > r0 + 32 * 1024 or peak(p, "fds") > f0 + 32:
                print(f"  {name}: instance {p} peaked at {peak(p, 'rss_kib')}K / {peak(p, 'fds')} fds"); bad = True
sys.exit(1 if bad else 0)
PY
echo "kills: $kills; fio runs: 41=$(cat "$out/fio41.runs" 2>/dev/null || echo 0) 42=$(cat "$out/fio42.runs" 2>/dev/null || echo 0); iperf3 runs: $(cat "$out/iperf3.runs" 2>/dev/null || echo 0); HVM guest runs: $(cat "$out/hvm.runs" 2>/dev/null || echo 0)"
if [[ -s $out/failures ]]; then
  echo "soak: $(wc -l <"$out/failures") failure(s):"; cat "$out/failures"; exit 1
fi
echo "soak: passed"
