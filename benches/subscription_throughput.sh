#!/usr/bin/env bash
# Subscription absorption benchmark: fastrouter vs the real uWSGI 2.0.21 fastrouter, side by
# side, on 127.0.0.1.
#
#   benches/subscription_throughput.sh                      # the default run, about 4 minutes
#   RATES="50000 100000" benches/subscription_throughput.sh  # other rate steps (0 = unpaced)
#   TRIALS=5 benches/subscription_throughput.sh             # blasts per rate step (3)
#   PORT_BASE=46101 benches/subscription_throughput.sh      # if 45101-45103 are taken
#   OUT=/tmp/sub benches/subscription_throughput.sh         # where rows and logs go
#   IMPLS=fastrouter FASTROUTER=/path/to/fastrouter benches/subscription_throughput.sh
#                                                           # one router only; another build
#
# Two measurements, each router in turn (uWSGI first), a fresh router for each step:
#
# 1. Absorption. For each rate of RATES (datagrams/s; 0 = as fast as the generator goes),
#    `subscription-blast` sends KEYS x NODES distinct subscribe datagrams (10,000 x 3) and
#    keeps cycling through them as refreshes for DURATION seconds (at least one full round).
#    A blast has NO LOSS when the router's subscription socket dropped nothing (the kernel's
#    per-socket drop counter, `ss -m` skmem `d`, which counts every datagram discarded
#    because the receive buffer was full: refreshes included), the generator had no send
#    error, and the router's stats JSON lists all KEYS x NODES nodes afterwards. A rate is
#    sustained when all its TRIALS blasts (each on a fresh router) have no loss; the
#    router's result is the highest rate sustained with every slower rate sustained too.
#    Per router the climb stops after two unsustained rates in a row.
# 2. CPU. A fresh router gets CPU_COUNT datagrams (100,000: the 30,000 new nodes, then
#    refreshes), then CPU_REPS more rounds of CPU_COUNT refreshes, at each rate of
#    CPU_RATES (chosen so that both routers absorb them). CPU = the router process's
#    on-CPU time from /proc/PID/schedstat (ns, all threads), with utime+stime from
#    /proc/PID/stat (clock ticks) as a cross-check. uWSGI's router is its `fastrouter 1`
#    gateway process (the master does not touch subscriptions; its CPU is logged too).
#
# Loopback delivery runs in the sender's context, so the kernel's cost of getting a
# datagram into the socket is charged to the generator, not the router, for both.
#
# Output: the tables on stdout, the rows in $OUT/absorb.tsv and $OUT/cpu.tsv, each router's
# log in $OUT/logs/. Needs: bash >= 5, uwsgi (2.0.21, Debian uwsgi-core, with the fastrouter
# plugin), ss (iproute2), cargo. The host's socket buffer limits are reported, never changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RATES=${RATES:-10000 25000 50000 75000 100000 150000 200000 300000 400000 0}
DURATION=${DURATION:-3}
TRIALS=${TRIALS:-3}
KEYS=${KEYS:-10000}
NODES=${NODES:-3}
CPU_RATES=${CPU_RATES:-10000 50000}
CPU_COUNT=${CPU_COUNT:-100000}
CPU_REPS=${CPU_REPS:-3}
PORT_BASE=${PORT_BASE:-45101}
OUT=${OUT:-target/subscription-throughput}
IMPLS=${IMPLS:-uwsgi fastrouter}
FASTROUTER=${FASTROUTER:-target/release/fastrouter}
BLAST=target/release/subscription-blast
UWSGI=$(command -v uwsgi || true)

die() { echo "subscription_throughput.sh: $*" >&2; exit 1; }
[[ ${BASH_VERSINFO[0]} -ge 5 ]] || die "needs bash >= 5"
[[ -n $UWSGI ]] || die "uwsgi is not installed (Debian: apt-get install uwsgi-core)"
for n in "$DURATION" "$TRIALS" "$KEYS" "$NODES" "$CPU_COUNT" "$CPU_REPS" "$PORT_BASE"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "DURATION, TRIALS, KEYS, NODES, CPU_COUNT, CPU_REPS, PORT_BASE: positive integers"
done
for n in $RATES $CPU_RATES; do [[ $n =~ ^[0-9]+$ ]] || die "RATES, CPU_RATES: integers"; done
for n in $IMPLS; do [[ $n == uwsgi || $n == fastrouter ]] || die "IMPLS: uwsgi and/or fastrouter"; done
DISTINCT=$((KEYS * NODES))
TICK=$(getconf CLK_TCK)

# Ports: router TCP PORT_BASE, subscription UDP PORT_BASE+1, stats TCP PORT_BASE+2.
ROUTER_PORT=$PORT_BASE SUB_PORT=$((PORT_BASE + 1)) STATS_PORT=$((PORT_BASE + 2))
[[ -z $(ss -Hnua "sport = :$SUB_PORT") ]] || die "UDP port $SUB_PORT is in use (set PORT_BASE)"
for p in "$ROUTER_PORT" "$STATS_PORT"; do
  [[ -z $(ss -Hntl "sport = :$p") ]] || die "TCP port $p is in use (set PORT_BASE)"
done

echo "building fastrouter and subscription-blast (release)..." >&2
cargo build --release -q -p examples --bin fastrouter --bin subscription-blast

mkdir -p "$OUT/logs"
ABSORB=$OUT/absorb.tsv
CPU=$OUT/cpu.tsv
printf 'impl\trate\ttrial\tsent\tachieved_pps\telapsed_s\tmax_lag\tsend_errors\tdrops\tnodes\trcvbuf\tcpu_ms\tno_loss\tslipped\n' > "$ABSORB"
printf 'impl\trate\tphase\trep\tpackets\tcpu_ns\tcpu_ticks\tdrops\tnodes\tmaster_ticks\n' > "$CPU"

ROUTER_PID='' # what we signal: our fastrouter, or uWSGI's master
WORKER_PID='' # the process that reads the subscription socket
cleanup() { [[ -z $ROUTER_PID ]] || kill -KILL "$ROUTER_PID" 2> /dev/null || true; }
trap cleanup EXIT

# stats_doc: the router's stats JSON (empty if it does not answer).
stats_doc() {
  timeout 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$STATS_PORT && cat <&3" 2> /dev/null || true
}

# start_router IMPL LOG: a fresh router; sets ROUTER_PID and WORKER_PID.
start_router() {
  local impl=$1 log=$2 i
  if [[ $impl == uwsgi ]]; then
    "$UWSGI" --plugin fastrouter --master --fastrouter "127.0.0.1:$ROUTER_PORT" \
      --fastrouter-subscription-server "127.0.0.1:$SUB_PORT" \
      --fastrouter-stats "127.0.0.1:$STATS_PORT" < /dev/null > "$log" 2>&1 &
  else
    "$FASTROUTER" --fastrouter "127.0.0.1:$ROUTER_PORT" --subscription-server "127.0.0.1:$SUB_PORT" \
      --stats "127.0.0.1:$STATS_PORT" < /dev/null > "$log" 2>&1 &
  fi
  ROUTER_PID=$!
  WORKER_PID=''
  for i in $(seq 200); do
    if [[ $impl == uwsgi ]]; then
      WORKER_PID=$(pgrep -P "$ROUTER_PID" | head -1 || true)
    else
      WORKER_PID=$ROUTER_PID
    fi
    if [[ -n $WORKER_PID && -n $(ss -Hnua "sport = :$SUB_PORT") ]] && [[ -n $(stats_doc | head -c 1) ]]; then
      return 0
    fi
    kill -0 "$ROUTER_PID" 2> /dev/null || die "$impl router exited at start (log: $log)"
    sleep 0.05
  done
  die "$impl router did not come up within 10 s (log: $log)"
}

stop_router() {
  local i
  kill -INT "$ROUTER_PID" 2> /dev/null || true
  for i in $(seq 50); do kill -0 "$ROUTER_PID" 2> /dev/null || break; sleep 0.1; done
  kill -KILL "$ROUTER_PID" 2> /dev/null || true
  wait "$ROUTER_PID" 2> /dev/null || true
  ROUTER_PID=''
  # uWSGI's gateway may outlive its master by a moment; the port must be free again.
  for i in $(seq 100); do [[ -z $(ss -Hnua "sport = :$SUB_PORT") ]] && return 0; sleep 0.05; done
  die "UDP port $SUB_PORT still bound after the router stopped"
}

# skmem FIELD: a field of the subscription socket's skmem (d = drops, rb = receive buffer).
skmem() {
  ss -Hnuam "sport = :$SUB_PORT" | grep -oE "[(,]$1[0-9]+" | head -1 | tr -dc 0-9
}

# drain: waits (at most 20 s) until the subscription socket's queue is empty twice in a row.
drain() {
  local i zero=0 q
  for i in $(seq 400); do
    q=$(ss -Hnua "sport = :$SUB_PORT" | awk '{ print $2; exit }')
    if [[ $q == 0 ]]; then ((++zero >= 2)) && return 0; else zero=0; fi
    sleep 0.05
  done
  echo "warning: the subscription socket did not drain within 20 s" >&2
}

cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f", s }'; }
cpu_ticks() { sed 's/.*) //' /proc/"$1"/stat | awk '{ print $12 + $13 }'; }
node_count() { stats_doc | grep -c '"name":' || true; }

# blast RATE COUNT: runs the generator; prints its JSON line.
blast() {
  local rate=$1 count=$2 args=(--target "127.0.0.1:$SUB_PORT" --keys "$KEYS" --nodes "$NODES" --rate "$1")
  if ((rate == 0)); then args+=(--count 100000000 --duration "$DURATION"); else args+=(--count "$count"); fi
  "$BLAST" "${args[@]}"
}
field() { grep -oE "\"$1\":[0-9.]+" <<< "$2" | cut -d: -f2; }

# absorb_step IMPL RATE TRIAL: one fresh router, one blast; appends a row; returns 1 on loss.
absorb_step() {
  local impl=$1 rate=$2 trial=$3 count out d0 d1 c0 c1 nodes drops errs ok
  count=$((rate * DURATION))
  ((count >= DISTINCT)) || count=$DISTINCT
  start_router "$impl" "$OUT/logs/absorb-$impl-$rate-$trial.log"
  d0=$(skmem d)
  c0=$(cpu_ns "$WORKER_PID")
  out=$(blast "$rate" "$count")
  drain
  c1=$(cpu_ns "$WORKER_PID")
  d1=$(skmem d)
  nodes=$(node_count)
  local rb
  rb=$(skmem rb)
  stop_router
  drops=$((d1 - d0))
  errs=$(field send_errors "$out")
  ok=no
  ((drops == 0 && errs == 0 && nodes == DISTINCT)) && ok=yes
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$impl" "$rate" "$trial" "$(field sent "$out")" \
    "$(field achieved_pps "$out")" "$(field elapsed_s "$out")" "$(field max_lag "$out")" "$errs" \
    "$drops" "$nodes" "$rb" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')" \
    "$ok" "$(field slipped "$out")" >> "$ABSORB"
  printf '  %-10s rate %-7s #%s achieved %10s/s  slipped %-6s drops %-7s nodes %-6s no loss: %s\n' \
    "$impl" "$rate" "$trial" "$(field achieved_pps "$out")" "$(field slipped "$out")" "$drops" "$nodes" "$ok" >&2
  [[ $ok == yes ]]
}

# cpu_run IMPL RATE: a fresh router, the first CPU_COUNT datagrams, then CPU_REPS rounds.
cpu_run() {
  local impl=$1 rate=$2 rep phase n0 n1 t0 t1 m0 m1 d0 d1 nodes
  start_router "$impl" "$OUT/logs/cpu-$impl-$rate.log"
  for rep in $(seq 0 "$CPU_REPS"); do
    phase=refresh
    ((rep == 0)) && phase=first
    d0=$(skmem d) n0=$(cpu_ns "$WORKER_PID") t0=$(cpu_ticks "$WORKER_PID") m0=$(cpu_ticks "$ROUTER_PID")
    blast "$rate" "$CPU_COUNT" > /dev/null
    drain
    d1=$(skmem d) n1=$(cpu_ns "$WORKER_PID") t1=$(cpu_ticks "$WORKER_PID") m1=$(cpu_ticks "$ROUTER_PID")
    nodes=$(node_count)
    if [[ $impl == uwsgi ]]; then m1=$((m1 - m0)); else m1=0; m0=0; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$impl" "$rate" "$phase" "$rep" "$CPU_COUNT" \
      "$((n1 - n0))" "$((t1 - t0))" "$((d1 - d0))" "$nodes" "$m1" >> "$CPU"
    printf '  %-8s rate %-6s %-7s %6.1f ms CPU (%s ticks), drops %s, nodes %s\n' "$impl" "$rate" \
      "$phase" "$(awk -v n="$((n1 - n0))" 'BEGIN { print n / 1e6 }')" "$((t1 - t0))" "$((d1 - d0))" \
      "$nodes" >&2
  done
  stop_router
}

START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "absorption: $KEYS keys x $NODES nodes, $DURATION s per step (fresh router per step)" >&2
for impl in $IMPLS; do
  lossy=0
  for rate in $RATES; do
    sustained=1
    for trial in $(seq "$TRIALS"); do absorb_step "$impl" "$rate" "$trial" || sustained=0; done
    if ((sustained)); then lossy=0; else lossy=$((lossy + 1)); fi
    ((lossy < 2)) || break
  done
done
echo "CPU: $CPU_COUNT datagrams per round, first round from a fresh router, then $CPU_REPS refresh rounds" >&2
for rate in $CPU_RATES; do
  for impl in $IMPLS; do cpu_run "$impl" "$rate"; done
done

# ----- tables ------------------------------------------------------------------------------
echo
echo "| router | rate (pps) | blasts | no loss | achieved (pps, median) | slipped (max) | drops (total) | nodes (min) | router CPU per 100k (ms, median) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
# Columns: 1 impl 2 rate 3 trial 4 sent 5 achieved 6 elapsed 7 max_lag 8 send_errors 9 drops
# 10 nodes 11 rcvbuf 12 cpu_ms 13 no_loss 14 slipped. One line per impl and rate, run order.
awk -F'\t' 'NR > 1 {
  k = $1 SUBSEP $2
  if (!(k in n)) { order[++m] = k; impl[k] = $1; rate[k] = $2; minnodes[k] = $10 }
  n[k]++; ok[k] += ($13 == "yes"); drops[k] += $9
  if ($14 > slip[k]) slip[k] = $14
  if ($10 < minnodes[k]) minnodes[k] = $10
  ach[k, n[k]] = $5; cpu[k, n[k]] = $12 / $4 * 1e5
}
function med(a, k, c,   i, j, t, v) {
  for (i = 1; i <= c; i++) v[i] = a[k, i]
  for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  return (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
}
END {
  for (i = 1; i <= m; i++) {
    k = order[i]
    printf "| %s | %s | %d | %d | %.0f | %d | %d | %d | %.1f |\n", impl[k], (rate[k] == 0 ? "unpaced" : rate[k]),
      n[k], ok[k], med(ach, k, n[k]), slip[k], drops[k], minnodes[k], med(cpu, k, n[k])
  }
}' "$ABSORB"

# best IMPL: the lowest achieved rate among the blasts of the last sustained rate before the
# first unsustained one.
best() {
  awk -F'\t' -v i="$1" 'NR > 1 && $1 == i {
    if ($2 != cur) { if (cur != "" && bad) exit; if (cur != "") b = a; cur = $2; bad = 0; a = $5 }
    bad += ($13 != "yes"); if ($5 < a) a = $5
  }
  END { if (cur != "" && !bad) b = a; printf "%.0f", b + 0 }' "$ABSORB"
}
# ms100k IMPL RATE PHASE: median CPU ms per 100,000 datagrams.
ms100k() {
  awk -F'\t' -v i="$1" -v r="$2" -v p="$3" 'NR > 1 && $1 == i && $2 == r && $3 == p { print $6 / $5 * 1e5 / 1e6 }' "$CPU" |
    sort -g | awk '{ v[++k] = $1 } END { if (k) printf "%.1f", (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2 }'
}
ticks100k() {
  awk -F'\t' -v i="$1" -v r="$2" -v p="$3" 'NR > 1 && $1 == i && $2 == r && $3 == p { s += $7; n += $5 } END { if (n) printf "%.0f", s / n * 1e5 * 1000 / '"$TICK"' }' "$CPU"
}
U=$(best uwsgi) F=$(best fastrouter)
echo
echo "| | uWSGI 2.0.21 fastrouter | fastrouter | fastrouter / uWSGI | goal |"
echo "|---|---:|---:|---:|---|"
awk -v u="$U" -v f="$F" 'BEGIN { printf "| max sustained no-loss rate (pps) | %d | %d | %.2f | ≥ 3 |\n", u, f, (u ? f / u : 0) }'
for rate in $CPU_RATES; do
  for phase in first refresh; do
    u=$(ms100k uwsgi "$rate" "$phase") f=$(ms100k fastrouter "$rate" "$phase")
    ut=$(ticks100k uwsgi "$rate" "$phase") ft=$(ticks100k fastrouter "$rate" "$phase")
    awk -v u="$u" -v f="$f" -v ut="$ut" -v ft="$ft" -v r="$rate" -v p="$phase" 'BEGIN {
      what = (p == "first") ? "first 100k (new nodes + refreshes)" : "100k refreshes"
      printf "| CPU ms per 100k, %s at %d pps (ticks: %s / %s ms) | %.1f | %.1f | %.2f | ≤ 0.33 |\n", what, r, ut, ft, u, f, (u ? f / u : 0)
    }'
  done
done
echo
echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
  "Linux $(uname -r), load average $LOAD0 at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
echo "socket buffers: net.core.rmem_default $(cat /proc/sys/net/core/rmem_default)," \
  "rmem_max $(cat /proc/sys/net/core/rmem_max); subscription socket rb (ss -m):" \
  "$(awk -F'\t' 'NR > 1 { print $1 "=" $11 }' "$ABSORB" | sort -u | tr '\n' ' ')"
echo "peers: $("$UWSGI" --version), fastrouter $("$FASTROUTER" --version | awk '{ print $2 }') (release)," \
  "$(rustc --version | cut -d' ' -f1-2); date $START"
echo "rows: $ABSORB, $CPU; logs: $OUT/logs/"
