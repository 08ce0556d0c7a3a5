#!/usr/bin/env bash
# Legion failover benchmark: legiond vs the real uWSGI 2.0.21, side by side, on 127.0.0.1.
#
#   benches/failover.sh                 # RUNS=5 samples per scenario
#   RUNS=10 benches/failover.sh         # more samples
#   PORT_BASE=43001 benches/failover.sh # if 42001-42006 are taken
#   OUT=/tmp/fo benches/failover.sh     # where samples and per-run logs go (target/failover)
#
# Every scenario starts three fresh nodes (valor 10, 20, 30) listing each other, waits
# until valor 30 is lord and the other two vote for it (their --stats), waits a random
# fraction of one announce period (so the kill falls anywhere in the announce phase), then
# stops the lord and times from the signal to the `lord` event of the valor-20 node:
#
#   uwsgi-crash       3 uWSGI, freq 1 s / tolerance 3 s, SIGKILL of the lord
#   legiond-crash     3 legiond, same timers, SIGKILL
#   legiond-crash-ms  3 legiond, --legion-freq-ms 50 --legion-tolerance-ms 200, SIGKILL
#   uwsgi-graceful    3 uWSGI, 1 s / 3 s, SIGINT (death announce)
#   legiond-graceful  3 legiond, 1 s / 3 s, SIGINT
#   legiond-graceful-ms  3 legiond, 50 ms / 200 ms, SIGINT
#
# uWSGI's event is its `--legion-lord "lg log:LEGION-EVENT lord"` log line, legiond's the
# `"event":"lord"` line of --events-json. Both are timestamped by the same reader as they
# arrive (bash's $EPOCHREALTIME, no fork per line), and the signal time is taken just
# before `kill`, so both sides are measured the same way.
#
# Output: a table (min/median/max per scenario) on stdout, the raw samples in
# $OUT/samples.tsv, each run's logs in $OUT/runs/. Needs: bash >= 5, uwsgi (2.0.21,
# Debian uwsgi-core), ss (iproute2), cargo. Takes about 6 minutes with RUNS=5.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-5}
PORT_BASE=${PORT_BASE:-42001}
OUT=${OUT:-target/failover}
CRYPT='aes-128-cbc:secret'
LEGIOND=target/release/legiond
UWSGI=$(command -v uwsgi || true)

die() { echo "failover.sh: $*" >&2; exit 1; }
[[ ${BASH_VERSINFO[0]} -ge 5 ]] || die "needs bash >= 5 (\$EPOCHREALTIME)"
[[ -n $UWSGI ]] || die "uwsgi is not installed (Debian: apt-get install uwsgi-core)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"

# Ports: legion UDP PORT_BASE..+2, stats TCP PORT_BASE+3..+5. All must be free.
UDP_PORTS=("$PORT_BASE" "$((PORT_BASE + 1))" "$((PORT_BASE + 2))")
TCP_PORTS=("$((PORT_BASE + 3))" "$((PORT_BASE + 4))" "$((PORT_BASE + 5))")
for p in "${UDP_PORTS[@]}"; do
  [[ -z $(ss -Hnua "sport = :$p") ]] || die "UDP port $p is in use (set PORT_BASE)"
done
for p in "${TCP_PORTS[@]}"; do
  [[ -z $(ss -Hntl "sport = :$p") ]] || die "TCP port $p is in use (set PORT_BASE)"
done

echo "building legiond (release)..." >&2
cargo build --release -q -p examples --bin legiond

mkdir -p "$OUT/runs"
SAMPLES=$OUT/samples.tsv
printf 'scenario\timpl\tstop\ttimers\trun\tseconds\n' > "$SAMPLES"

declare -a PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2> /dev/null || true; done
}
trap cleanup EXIT

# Prefixes every line of stdin with its arrival time (seconds, microseconds).
stamp() {
  local line
  while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done
}

# start_node IMPL INDEX VALOR DIR TIMER-ARGS...: starts node INDEX on UDP_PORTS[INDEX].
start_node() {
  local impl=$1 i=$2 valor=$3 dir=$4
  shift 4
  local args=(--legion "lg 127.0.0.1:${UDP_PORTS[$i]} $valor $CRYPT")
  local j
  for j in 0 1 2; do
    [[ $j == "$i" ]] || args+=(--legion-node "lg 127.0.0.1:${UDP_PORTS[$j]}")
  done
  args+=("$@" --stats "127.0.0.1:${TCP_PORTS[$i]}")
  if [[ $impl == uwsgi ]]; then
    "$UWSGI" --master --die-on-term "${args[@]}" --legion-lord "lg log:LEGION-EVENT lord" \
      < /dev/null > >(stamp > "$dir/n$i.log") 2>&1 &
  else
    "$LEGIOND" "${args[@]}" --events-json < /dev/null > >(stamp > "$dir/n$i.log") 2> "$dir/n$i.err" &
  fi
  PIDS[$i]=$!
}

# lord_pattern IMPL: the log line of a `lord` event.
lord_pattern() {
  if [[ $1 == uwsgi ]]; then echo ' LEGION-EVENT lord$'; else echo '"event":"lord"'; fi
}

# first_after FILE PATTERN T: the timestamp of the first line after time T matching PATTERN.
first_after() {
  awk -v t="$3" -v pat="$2" '$1 > t && $0 ~ pat { print $1; exit }' "$1" 2> /dev/null
}

# wait_line FILE PATTERN T LIMIT_S: polls every 10 ms for such a line; prints its time.
wait_line() {
  local deadline=$((${EPOCHREALTIME%.*} + $4)) ts
  while :; do
    ts=$(first_after "$1" "$2" "$3")
    [[ -n $ts ]] && { echo "$ts"; return 0; }
    ((${EPOCHREALTIME%.*} < deadline)) || return 1
    sleep 0.01
  done
}

# lord_valor INDEX: the lord_valor of node INDEX's stats (empty if it does not answer).
lord_valor() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/${TCP_PORTS[$1]} && cat <&3" 2> /dev/null |
    tr -d ' \n' | grep -oE '"lord_valor":[0-9]+' | head -1 | cut -d: -f2 || true
}

# stop_all: SIGINT every node, SIGKILL after 5 s, and wait for all of them.
stop_all() {
  local pid waited=0
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2> /dev/null || true; done
  for pid in "${PIDS[@]}"; do
    while kill -0 "$pid" 2> /dev/null && ((waited < 50)); do sleep 0.1; waited=$((waited + 1)); done
    kill -KILL "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
  done
  PIDS=()
}

# run_once SCENARIO IMPL SIGNAL RUN PERIOD_S TIMER-ARGS...: one sample, in seconds, in
# $SAMPLE (not printed: a subshell would lose the node pids of the cleanup trap).
run_once() {
  local scenario=$1 impl=$2 sig=$3 run=$4 period=$5
  shift 5
  local dir="$OUT/runs/$scenario-$run" pat t0 ts v start
  rm -rf "$dir" && mkdir -p "$dir"
  pat=$(lord_pattern "$impl")
  start=$EPOCHREALTIME
  start_node "$impl" 0 10 "$dir" "$@"
  start_node "$impl" 1 20 "$dir" "$@"
  start_node "$impl" 2 30 "$dir" "$@"
  wait_line "$dir/n2.log" "$pat" "$start" 20 > /dev/null ||
    { stop_all; die "$scenario run $run: valor 30 never became lord (logs: $dir)"; }
  # The others vote for valor 30 (uWSGI's stats lord_valor is the node's vote).
  for _ in $(seq 100); do
    v="$(lord_valor 0)/$(lord_valor 1)"
    [[ $v == 30/30 ]] && break
    sleep 0.1
  done
  [[ $v == 30/30 ]] || { stop_all; die "$scenario run $run: no agreement on 30 ($v; logs: $dir)"; }
  # Settle one period, then a random phase within the next one.
  sleep "$(awk -v p="$period" -v r="$RANDOM" 'BEGIN { printf "%.3f", p + p * r / 32768 }')"
  t0=$EPOCHREALTIME
  kill "-$sig" "${PIDS[2]}"
  # Reap a SIGKILLed node now, so bash does not report "Killed" later. This does not
  # delay the measurement: lines are timestamped by their own readers.
  if [[ $sig == KILL ]]; then
    wait "${PIDS[2]}" 2> /dev/null || true
    unset 'PIDS[2]' # reaped: its pid may be reused, never signal it again
  fi
  if ! ts=$(wait_line "$dir/n1.log" "$pat" "$t0" 30); then
    stop_all
    die "$scenario run $run: valor 20 did not become lord within 30 s of SIG$sig (logs: $dir)"
  fi
  if [[ -n $(first_after "$dir/n0.log" "$pat" "$start") ]]; then
    echo "warning: $scenario run $run: valor 10 was lord at some point (logs: $dir)" >&2
  fi
  stop_all
  SAMPLE=$(awk -v a="$ts" -v b="$t0" 'BEGIN { printf "%.4f", a - b }')
}

# scenario NAME IMPL SIGNAL TIMERS PERIOD_S TIMER-ARGS...
scenario() {
  local name=$1 impl=$2 sig=$3 timers=$4 period=$5
  shift 5
  local run
  printf '%-20s' "$name" >&2
  for run in $(seq "$RUNS"); do
    run_once "$name" "$impl" "$sig" "$run" "$period" "$@"
    printf ' %s' "$SAMPLE" >&2
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$impl" "SIG$sig" "$timers" "$run" "$SAMPLE" >> "$SAMPLES"
  done
  echo >&2
}

SLOW=(--legion-freq 1 --legion-tolerance 3)
FAST=(--legion-freq-ms 50 --legion-tolerance-ms 200)
echo "samples (s), $RUNS per scenario:" >&2
scenario uwsgi-crash uwsgi KILL 1s/3s 1 "${SLOW[@]}"
scenario legiond-crash legiond KILL 1s/3s 1 "${SLOW[@]}"
scenario legiond-crash-ms legiond KILL 50ms/200ms 0.05 "${FAST[@]}"
scenario uwsgi-graceful uwsgi INT 1s/3s 1 "${SLOW[@]}"
scenario legiond-graceful legiond INT 1s/3s 1 "${SLOW[@]}"
scenario legiond-graceful-ms legiond INT 50ms/200ms 0.05 "${FAST[@]}"

# The table: min / median / max per scenario, and the goal of each.
echo
echo "| scenario | implementation | stop | freq/tolerance | runs | min | median | max | goal |"
echo "|---|---|---|---|---:|---:|---:|---:|---|"
for name in uwsgi-crash legiond-crash legiond-crash-ms uwsgi-graceful legiond-graceful legiond-graceful-ms; do
  case $name in
    uwsgi-*) goal="reference" ;;
    legiond-crash) goal="≤ uWSGI; ≤ 3 s + 1 s + 20 ms = 4.020 s" ;;
    legiond-crash-ms) goal="≤ 200 + 50 + 20 ms = 0.270 s" ;;
    legiond-graceful) goal="≤ uWSGI; < 0.050 s" ;;
    legiond-graceful-ms) goal="< 0.050 s" ;;
  esac
  read -r impl stop timers < <(awk -F'\t' -v n="$name" '$1 == n { print $2, $3, $4; exit }' "$SAMPLES")
  awk -F'\t' -v n="$name" '$1 == n { print $6 }' "$SAMPLES" | sort -g |
    awk -v n="$name" -v impl="$impl" -v stop="$stop" -v timers="$timers" -v goal="$goal" '
      { v[++k] = $1 }
      END {
        med = (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
        printf "| %s | %s | %s | %s | %d | %.3f s | %.3f s | %.3f s | %s |\n", n, impl, stop, timers, k, v[1], med, v[k], goal
      }'
done

# legiond / uWSGI at equal timers (1 s / 3 s), by median and by max.
median() {
  awk -F'\t' -v n="$1" '$1 == n { print $6 }' "$SAMPLES" | sort -g |
    awk '{ v[++k] = $1 } END { print (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2 }'
}
maximum() { awk -F'\t' -v n="$1" '$1 == n { print $6 }' "$SAMPLES" | sort -g | tail -1; }
echo
for kind in crash graceful; do
  awk -v kind="$kind" -v lm="$(median "legiond-$kind")" -v um="$(median "uwsgi-$kind")" \
    -v lx="$(maximum "legiond-$kind")" -v ux="$(maximum "uwsgi-$kind")" \
    'BEGIN { printf "legiond/uWSGI, %s at 1 s / 3 s: median %.4f, max %.4f\n", kind, lm / um, lx / ux }'
done
echo
echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
  "Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "peers: $("$UWSGI" --version), legiond $("$LEGIOND" --version | awk '{ print $2 }') (release)," \
  "$(rustc --version | cut -d' ' -f1-2); date $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "raw samples: $SAMPLES; per-run logs: $OUT/runs/"
