#!/usr/bin/env bash
# Client-side zerg attach: the real uWSGI 2.0.21 client (`uwsgi --zerg POOL`) against ours
# (`zerg-http --zerg POOL`, which attaches with zerg_fdpass::driver::attach_all), side by
# side, on the same server (our `zergpool`, release build) offering N TCP listeners on
# 127.0.0.1:0.
#
#   benches/zerg_attach.sh                   # RUNS=30 attaches per client and size, N = 1 and 64
#   RUNS=50 SIZES="1 8 9 64" benches/zerg_attach.sh
#   OUT=/tmp/za benches/zerg_attach.sh       # where the traces and the rows go (target/zerg-attach)
#   SERVER_CPU=1 CLIENT_CPU=1 benches/zerg_attach.sh   # the CPUs (taskset) of server and client (0, 1)
#
# uWSGI attaches once, at startup, inside its own process, so it cannot be called in a loop
# like `benches/zerg_fdpass.rs` calls ours: each run starts the client under
# `perf trace -e connect,recvmsg` (only those two syscalls are traced, the same for both
# clients), waits until it is up (uWSGI: its worker spawned; zerg-http: its `listening`
# event), stops it (SIGINT to the traced process, by pid) and reads the trace:
#
#   window = from the start of the connect() that began the hand-off to the end of the
#            recvmsg() that completed it (the one returning the 14 bytes, for uWSGI with
#            more than 8 fds the second one: it reconnects, spec §2.6)
#
# i.e. connect -> every fd received, without the per-fd work that follows (uWSGI: one
# getsockname per fd and a log line; ours: SO_TYPE, SO_ACCEPTCONN and getsockname per fd;
# benches/zerg_fdpass.rs times ours with that work included). The tracer adds a few
# microseconds per traced syscall, so uWSGI's second connection costs it a little more here
# than it does untraced. Also reported: connects and recvmsg calls per attach.
#
# These are cold attaches (a fresh client, an idle server) under a tracer: on a shared VM
# they mostly measure how fast an idle vCPU wakes up, and medians move by 2x between runs;
# BENCHMARKS.md says what can and cannot be read from them. About 7 minutes with RUNS=30.
#
# Output: one row per client and size on stdout (median, min, p90 of the window in µs),
# the rows in $OUT/attach.tsv, the traces in $OUT/traces/. Needs: bash >= 5, perf (root or
# perf_event_paranoid <= 1), uwsgi (Debian uwsgi-core), and the release programs
# (cargo build --release -p examples --bin zergpool --bin zerg-http).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-30}
SIZES=${SIZES:-1 64}
OUT=${OUT:-target/zerg-attach}
ZERGPOOL=${ZERGPOOL:-target/release/zergpool}
ZERG_HTTP=${ZERG_HTTP:-target/release/zerg-http}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
UWSGI=$(command -v uwsgi || true)
PERF=$(command -v perf || true)

die() { echo "zerg_attach.sh: $*" >&2; exit 1; }
[[ ${BASH_VERSINFO[0]} -ge 5 ]] || die "needs bash >= 5"
[[ -n $UWSGI ]] || die "uwsgi is not installed (Debian: apt-get install uwsgi-core)"
[[ -n $PERF ]] || die "perf is not installed (Debian: apt-get install linux-perf)"
[[ -x $ZERGPOOL && -x $ZERG_HTTP ]] ||
  die "build the programs first: cargo build --release -p examples --bin zergpool --bin zerg-http"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS: a positive integer"

mkdir -p "$OUT/traces"
work=$(mktemp -d /tmp/zerg-attach.XXXXXX)
pool_pid=""
perf_pid=""

stop_pid() { # pid: SIGINT, then SIGKILL after 5 s; reaps it
  local pid=$1 i
  kill -INT "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  # A traced client still running (perf leaves its workload behind when it is stopped).
  if [[ -n $perf_pid ]]; then
    for c in $(pgrep -P "$perf_pid" || true); do stop_pid "$c"; done
    stop_pid "$perf_pid"
  fi
  [[ -n $pool_pid ]] && stop_pid "$pool_pid"
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # file regex what: waits (at most 10 s) until file has a line matching regex
  local i
  for ((i = 0; i < 200; i++)); do
    grep -Eq -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  cat "$1" >&2 || true
  die "$3: not ready within 10 s"
}

# Reads a perf trace: prints "window_us connects recvmsgs".
window() {
  awk '
    / connect\(/ && / = 0$/ { if (!started) last_connect = $1; else connects++ }
    / recvmsg\(/ && / = 14$/ {
      if (!started) { started = 1; start = last_connect; connects = 1 }
      d = $3; sub(/^\(/, "", d); end = $1 + d; recvs++
    }
    END {
      if (!started) { print "NA NA NA"; exit }
      printf "%.0f %d %d\n", (end - start) * 1000, connects, recvs
    }' "$1"
}

# One attach of client ($1: uwsgi|ours) to pool socket $2, trace in $3.
run_one() {
  local client=$1 pool=$2 trace=$3 log=$3.log marker pid i
  if [[ $client == uwsgi ]]; then
    marker="spawned uWSGI worker 1"
    "$PERF" trace -o "$trace" -e connect,recvmsg -- taskset -c "$CLIENT_CPU" \
      "$UWSGI" --master --die-on-term --zerg "$pool" >"$log" 2>&1 &
  else
    marker='"event":"listening".*"pid":[0-9]+}'
    "$PERF" trace -o "$trace" -e connect,recvmsg -- taskset -c "$CLIENT_CPU" \
      "$ZERG_HTTP" --zerg "$pool" --events-json >"$log" 2>&1 &
  fi
  perf_pid=$!
  wait_for "$log" "$marker" "$client"
  # The traced process's pid, as it reports it (the uWSGI master; zerg-http).
  if [[ $client == uwsgi ]]; then
    wait_for "$log" '^spawned uWSGI master process \(pid: [0-9]+\)' "$client"
    pid=$(sed -n 's/^spawned uWSGI master process (pid: \([0-9]*\)).*/\1/p' "$log" | head -1)
  else
    pid=$(sed -n 's/.*"event":"listening".*"pid":\([0-9]*\)}.*/\1/p' "$log" | head -1)
  fi
  [[ -n $pid ]] || die "$client: no pid in $log"
  stop_pid "$pid"
  # perf exits once its workload has; bounded like everything else.
  for ((i = 0; i < 100; i++)); do
    kill -0 "$perf_pid" 2>/dev/null || break
    sleep 0.05
  done
  stop_pid "$perf_pid"
  perf_pid=""
}

stats() { # values on stdin: median min p90
  sort -n | awk '{ v[NR] = $1 } END {
    m = v[int((NR + 1) / 2)]; p = v[int(NR * 0.9 + 0.999)]; if (p == "") p = v[NR]
    printf "%d %d %d\n", m, v[1], p }'
}

echo "# $(date -u +%FT%TZ) $(uname -srm), $(nproc) CPUs, uWSGI $("$UWSGI" --version), RUNS=$RUNS" |
  tee "$OUT/attach.tsv"
printf "client\tN\tmedian_us\tmin_us\tp90_us\tconnects\trecvmsgs\n" | tee -a "$OUT/attach.tsv"
for n in $SIZES; do
  items=$(printf '127.0.0.1:0,%.0s' $(seq 1 "$n"))
  pool="$work/pool-$n.sock"
  taskset -c "$SERVER_CPU" "$ZERGPOOL" --events-json --zergpool "$pool:${items%,}" >"$work/pool-$n.out" 2>&1 &
  pool_pid=$!
  wait_for "$work/pool-$n.out" '"event":"listening".*\]}' "zergpool ($n sockets)"
  : >"$work/uwsgi.txt"
  : >"$work/ours.txt"
  for ((r = 1; r <= RUNS; r++)); do
    # Alternate the order so that drift on the machine hits both clients alike.
    if ((r % 2)); then order="uwsgi ours"; else order="ours uwsgi"; fi
    for client in $order; do
      trace="$OUT/traces/$client-$n-$r.txt"
      run_one "$client" "$pool" "$trace"
      read -r w c m < <(window "$trace")
      [[ $w != NA ]] || die "$client, $n sockets, run $r: no hand-off in $trace"
      echo "$w $c $m" >>"$work/$client.txt"
    done
  done
  stop_pid "$pool_pid"
  pool_pid=""
  for client in uwsgi ours; do
    read -r med min p90 < <(cut -d' ' -f1 "$work/$client.txt" | stats)
    read -r c m < <(head -1 "$work/$client.txt" | cut -d' ' -f2,3)
    printf "%s\t%d\t%d\t%d\t%d\t%d\t%d\n" "$client" "$n" "$med" "$min" "$p90" "$c" "$m" | tee -a "$OUT/attach.tsv"
  done
done
