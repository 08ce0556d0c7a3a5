#!/usr/bin/env bash
# Emperor benchmark: our `emperor` (examples/src/bin/emperor.rs, on emperor_core's driver)
# vs the real `uwsgi --emperor` 2.0.21, side by side in one run, each on its own directory
# with the same contents.
#
#   benches/emperor.sh                       # the default run, about 8 minutes
#   ITER=10 benches/emperor.sh               # samples per reaction test (20)
#   SIZES="200" IDLE=30 benches/emperor.sh   # idle test sizes (200 1000) and window (60 s)
#   IMPLS=ours benches/emperor.sh            # one emperor only (uwsgi ours)
#   TESTS=idle benches/emperor.sh            # one test only (reaction idle)
#   OURS_ARGS="--emperor-freq 60" IMPLS=ours TESTS=idle benches/emperor.sh
#                                            # extra options for our emperor
#   PORT_BASE=44700 benches/emperor.sh       # if 44600-44621 are taken
#   OUT=/tmp/emp benches/emperor.sh          # where samples and logs go (target/emperor-bench)
#
# 1. Reaction, with REAL uWSGI vassals (python3 plugin, master, 1 worker, an http-socket),
#    measured on the vassal side so both emperors are measured the same way: every vassal
#    ini carries uWSGI's own hooks
#        exec-asap = date +%%s.%%N >> LOGDIR/%n.spawn                 (runs at every exec)
#        hook-emperor-reload = exec:date +%%s.%%N >> LOGDIR/%n.reload  (runs on byte 1)
#    (`%%` is a literal `%` after uWSGI's magic-variable expansion; `%n` = the ini's name).
#    * reload: `r.ini` runs from the emperor's start; ITER times: a random pause, then the
#      clock is read and the ini's mtime set to a whole second strictly greater than the
#      last one (os.utime, what `touch -d @<epoch+k>` does); sample = the vassal's
#      hook-emperor-reload stamp minus that clock reading. Before the next one the vassal
#      must have re-exec'd (a new exec-asap line) and answer HTTP again.
#    * spawn: ITER times: the ini `sNN.ini` is written under a name no emperor reads
#      (`.sNN.tmp`), a random pause, the clock is read and the file renamed into place;
#      sample = the new vassal's exec-asap stamp minus that reading. It must answer HTTP
#      before the next one; spawned vassals stay up until the emperor stops.
#    The pauses are uniform in [0, 3] s for uWSGI, whose dir monitor only looks at the
#    directory when its loop wakes up (every --emperor-freq = 3 s, or on a vassal byte), so
#    the change falls anywhere in its scan period; [0.1, 0.6] s for ours (inotify: there is
#    no phase to randomise). A baseline (no emperor) times the same ini started directly
#    by the measuring script (`uwsgi --ini`, clock read just before the fork) to its
#    exec-asap stamp: the vassal's own start-up cost, included in every spawn sample.
# 2. Idle cost, for each N of SIZES: N configs `[uwsgi]` with no socket whose vassal is
#    `vassal-demo` (release) for both (uWSGI: --emperor-wrapper, ours: --vassal-bin), so the
#    vassals are idle and speak only the emperor channel. Once the emperor has N children
#    (bounded wait) and 5 s more, the emperor process's own CPU over an IDLE-second window:
#    utime+stime from /proc/PID/stat (clock ticks) and, finer, the sum of
#    /proc/PID/task/*/schedstat (ns); its VmRSS; its wake-ups (voluntary context
#    switches); the vassals' summed VmRSS for context. Both emperors keep their default
#    3 s rescan (uWSGI's scan; ours is the safety net behind inotify).
#
# Output: tables on stdout; samples in $OUT/reaction.tsv and $OUT/idle.tsv, logs in
# $OUT/logs/. Needs: bash >= 5, uwsgi 2.0.21 (Debian uwsgi-core + uwsgi-plugin-python3),
# python3, ss (iproute2), cargo. Raises `ulimit -n` (1000 vassals need ~2000 fds in an
# emperor). Every process it starts is killed on exit, also on failure or Ctrl-C.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
ITER=${ITER:-20}
BASELINE=${BASELINE:-10}
SIZES=${SIZES:-200 1000}
IDLE=${IDLE:-60}
PORT_BASE=${PORT_BASE:-44600}
OUT=${OUT:-target/emperor-bench}
IMPLS=${IMPLS:-uwsgi ours}
TESTS=${TESTS:-reaction idle}
OURS_ARGS=${OURS_ARGS:-}
EMPEROR=$ROOT/target/release/emperor
VASSAL_DEMO=$ROOT/target/release/vassal-demo
UWSGI=$(command -v uwsgi || true)

die() { echo "emperor.sh: $*" >&2; exit 1; }
[[ ${BASH_VERSINFO[0]} -ge 5 ]] || die "needs bash >= 5"
[[ -n $UWSGI ]] || die "uwsgi is not installed (Debian: apt-get install uwsgi-core uwsgi-plugin-python3)"
command -v python3 > /dev/null || die "needs python3"
for n in "$ITER" "$BASELINE" "$IDLE" "$PORT_BASE"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "ITER, BASELINE, IDLE, PORT_BASE: positive integers"
done
for n in $SIZES; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "SIZES: positive integers"; done
for n in $IMPLS; do [[ $n == uwsgi || $n == ours ]] || die "IMPLS: uwsgi and/or ours"; done
for n in $TESTS; do [[ $n == reaction || $n == idle ]] || die "TESTS: reaction and/or idle"; done
"$UWSGI" --plugin python3 --version > /dev/null 2>&1 || die "uwsgi has no python3 plugin (uwsgi-plugin-python3)"

# Ports: r.ini on PORT_BASE, sNN.ini on PORT_BASE+1+NN, the baseline on PORT_BASE+ITER+1.
LAST_PORT=$((PORT_BASE + ITER + 1))
ports_free() {
  local p
  for p in $(seq "$PORT_BASE" "$LAST_PORT"); do
    [[ -z $(ss -Hntl "sport = :$p") ]] || return 1
  done
}
ports_free || die "a TCP port in $PORT_BASE-$LAST_PORT is in use (set PORT_BASE)"

echo "building emperor and vassal-demo (release)..." >&2
cargo build --release -q -p examples --bin emperor --bin vassal-demo

# 1000 vassals: the emperors hold one channel (+ one pidfd for ours) per vassal.
ulimit -n 65536 2> /dev/null || ulimit -n "$(ulimit -Hn)"
TICK=$(getconf CLK_TCK)

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Only what a previous run wrote (OUT may be any directory).
rm -rf "$OUT"/logs "$OUT"/baseline "$OUT"/reaction-* "$OUT"/idle-* "$OUT"/reaction.py "$OUT"/app.py
mkdir -p "$OUT/logs"
REACTION=$OUT/reaction.tsv
IDLE_TSV=$OUT/idle.tsv
printf 'impl\tkind\titer\tseconds\n' > "$REACTION"
printf 'impl\tvassals\twindow_s\tcpu_ticks\tcpu_ms_ticks\tcpu_ms_schedstat\twakeups\temperor_rss_kb\tvassals_rss_kb\tvassals_at_end\tload\n' > "$IDLE_TSV"

# ----- process bookkeeping ----------------------------------------------------------------
declare -a STARTED=() # every emperor this script started
# descendants PID: every descendant pid, depth first.
descendants() {
  local p
  for p in $(cat /proc/"$1"/task/*/children 2> /dev/null); do
    echo "$p"
    descendants "$p"
  done
}
# kill_tree PID: SIGKILL a process and everything below it (the tree is read first: the
# vassals would otherwise be re-parented and lost from sight).
kill_tree() {
  local tree
  tree=$(descendants "$1")
  kill -KILL "$1" 2> /dev/null || true
  # shellcheck disable=SC2086
  [[ -z $tree ]] || kill -KILL $tree 2> /dev/null || true
}
cleanup() {
  local pid
  for pid in "${STARTED[@]}"; do kill_tree "$pid"; done
  # Whatever else this shell started (the measuring python, a baseline uwsgi).
  for pid in $(descendants $$); do
    [[ $pid == "$BASHPID" ]] || kill -KILL "$pid" 2> /dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# run CMD...: CMD in the background, then wait for it: bash defers a trap until the
# foreground command ends, but interrupts `wait`, so a signal cleans up at once.
run() {
  "$@" &
  wait "$!"
}

# start_emperor IMPL DIR LOG [VASSAL_BIN]: sets EMP_PID.
start_emperor() {
  local impl=$1 dir=$2 log=$3 bin=${4:-}
  if [[ $impl == uwsgi ]]; then
    local args=(--emperor "$dir")
    [[ -z $bin ]] || args+=(--emperor-wrapper "$bin")
    "$UWSGI" "${args[@]}" < /dev/null > "$log" 2>&1 &
  else
    local args=(--emperor "$dir" --events-json)
    # shellcheck disable=SC2206
    [[ -z $OURS_ARGS ]] || args+=($OURS_ARGS)
    [[ -z $bin ]] || args+=(--vassal-bin "$bin")
    "$EMPEROR" "${args[@]}" < /dev/null > "$log" 2>&1 &
  fi
  EMP_PID=$!
  STARTED+=("$EMP_PID")
}

# stop_emperor: SIGINT (both stop every vassal, then exit), SIGKILL of the whole tree
# after LIMIT seconds.
stop_emperor() {
  local limit=${1:-60} i
  kill -INT "$EMP_PID" 2> /dev/null || true
  for ((i = 0; i < limit * 10; i++)); do
    kill -0 "$EMP_PID" 2> /dev/null || break
    sleep 0.1
  done
  if kill -0 "$EMP_PID" 2> /dev/null; then
    echo "warning: emperor $EMP_PID still alive ${limit}s after SIGINT: killed" >&2
  fi
  kill_tree "$EMP_PID"
  wait "$EMP_PID" 2> /dev/null || true
}

children_count() { cat /proc/"$1"/task/*/children 2> /dev/null | wc -w; }
cpu_ticks() { sed 's/.*) //' /proc/"$1"/stat | awk '{ print $12 + $13 }'; }
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f", s }'; }
wakeups() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt_switches/ { s += $2 } END { print s + 0 }'; }
rss_kb() { awk '/^VmRSS/ { print $2; exit }' /proc/"$1"/status 2> /dev/null || echo 0; }
children_rss_kb() {
  local p s=0 r
  for p in $(cat /proc/"$1"/task/*/children 2> /dev/null); do
    r=$(rss_kb "$p")
    s=$((s + ${r:-0}))
  done
  echo "$s"
}
load() { cut -d' ' -f1-3 /proc/loadavg; }

# ----- 1. reaction with real uWSGI vassals ----------------------------------------------
cat > "$OUT/app.py" << 'EOF'
def application(env, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok\n']
EOF

# The vassal program for the reaction test, the same for both emperors (uWSGI:
# --emperor-wrapper, ours: --vassal-bin): it stamps the moment the emperor exec'd the
# vassal into LOGDIR/NAME.exec, then becomes uWSGI in place (same pid). The stamp is the
# emperor's own reaction; the exec-asap stamp adds uWSGI's start-up to it.
write_wrapper() {
  local logdir=$1 path=$2
  cat > "$path" << EOF2
#!/bin/sh
for last; do :; done
name=\${last##*/}
name=\${name%.ini}
date +%s.%N >> "$logdir/\$name.exec"
exec uwsgi "\$@"
EOF2
  chmod +x "$path"
}

# The measuring side, one emperor (or the baseline) per call:
#   reaction.py emperor IMPL DIR LOGDIR PORT_BASE ITER PAUSE_MIN PAUSE_MAX OUT.tsv
#   reaction.py baseline DIR LOGDIR PORT N OUT.tsv
cat > "$OUT/reaction.py" << 'EOF'
import os, random, signal, socket, subprocess, sys, time

def ini(port, app, logdir):
    return (
        "[uwsgi]\nplugins = python3\nmaster = true\nprocesses = 1\n"
        f"http-socket = 127.0.0.1:{port}\nwsgi-file = {app}\n"
        f"exec-asap = date +%%s.%%N >> {logdir}/%n.spawn\n"
        f"hook-emperor-reload = exec:date +%%s.%%N >> {logdir}/%n.reload\n"
    )

def lines(path):
    try:
        with open(path) as f:
            return [l for l in f.read().split("\n") if l.strip()]
    except FileNotFoundError:
        return []

def wait_lines(path, n, limit):
    end = time.time() + limit
    while time.time() < end:
        got = lines(path)
        if len(got) >= n:
            return float(got[n - 1])
        time.sleep(0.002)
    sys.exit(f"reaction.py: {path}: no line {n} within {limit} s")

def http_ok(port, limit):
    end = time.time() + limit
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
                s.settimeout(2)
                if s.recv(64).startswith(b"HTTP/1.") :
                    return
        except OSError:
            pass
        time.sleep(0.01)
    sys.exit(f"reaction.py: 127.0.0.1:{port} did not answer within {limit} s")

def emit(out, impl, kind, i, s):
    out.write(f"{impl}\t{kind}\t{i}\t{s:.6f}\n")
    out.flush()
    print(f" {s * 1000:.1f}", end="", file=sys.stderr, flush=True)

def emperor(impl, d, logdir, port_base, n, pmin, pmax, out_path):
    app = os.path.join(os.path.dirname(out_path), "app.py")
    out = open(out_path, "a")
    r = os.path.join(d, "r.ini")
    wait_lines(f"{logdir}/r.spawn", 1, 30)
    http_ok(port_base, 30)
    print(f"{impl} reload (ms):", end="", file=sys.stderr)
    mtime = int(os.stat(r).st_mtime)
    for k in range(1, n + 1):
        time.sleep(random.uniform(pmin, pmax))
        mtime += 1
        t0 = time.time()
        os.utime(r, (mtime, mtime))
        t1 = wait_lines(f"{logdir}/r.reload", k, 15)
        emit(out, impl, "reload", k, t1 - t0)
        wait_lines(f"{logdir}/r.spawn", k + 1, 30)  # re-exec'd
        http_ok(port_base, 30)
    print(f"\n{impl} spawn (ms):", end="", file=sys.stderr)
    for i in range(n):
        name, port = f"s{i:02d}", port_base + 1 + i
        tmp = os.path.join(d, f".{name}.tmp")
        with open(tmp, "w") as f:
            f.write(ini(port, app, logdir))
        time.sleep(random.uniform(pmin, pmax))
        t0 = time.time()
        os.rename(tmp, os.path.join(d, f"{name}.ini"))
        t1 = wait_lines(f"{logdir}/{name}.spawn", 1, 15)
        emit(out, impl, "spawn", i + 1, t1 - t0)
        t2 = wait_lines(f"{logdir}/{name}.exec", 1, 15)
        emit(out, impl, "exec", i + 1, t2 - t0)
        http_ok(port, 30)
    print(file=sys.stderr)

def baseline(d, logdir, port, n, out_path):
    app = os.path.join(os.path.dirname(out_path), "app.py")
    out = open(out_path, "a")
    print("baseline, uwsgi --ini without an emperor (ms):", end="", file=sys.stderr)
    for i in range(n):
        name = f"b{i:02d}"
        path = os.path.join(d, f"{name}.ini")
        with open(path, "w") as f:
            f.write(ini(port, app, logdir))
        time.sleep(random.uniform(0.1, 0.3))
        log = open(os.path.join(logdir, f"{name}.log"), "w")
        t0 = time.time()
        p = subprocess.Popen(["uwsgi", "--ini", path], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, cwd=d, start_new_session=True)
        try:
            t1 = wait_lines(f"{logdir}/{name}.spawn", 1, 15)
            emit(out, "none", "baseline", i + 1, t1 - t0)
            http_ok(port, 30)
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    print(file=sys.stderr)

if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "emperor":
        emperor(a[1], a[2], a[3], int(a[4]), int(a[5]), float(a[6]), float(a[7]), a[8])
    else:
        baseline(a[1], a[2], int(a[3]), int(a[4]), a[5])
EOF

START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD0=$(load)
echo "load average at start: $LOAD0" >&2

if [[ $TESTS == *reaction* ]]; then
    mkdir -p "$OUT/baseline" "$OUT/logs/baseline"
    run python3 "$OUT/reaction.py" baseline "$OUT/baseline" "$OUT/logs/baseline" "$LAST_PORT" "$BASELINE" "$REACTION"
fi

for impl in $IMPLS; do
  [[ $TESTS == *reaction* ]] || break
  dir=$OUT/reaction-$impl
  logdir=$OUT/logs/reaction-$impl
  mkdir -p "$dir" "$logdir"
  python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import reaction
open(sys.argv[2], "w").write(reaction.ini(int(sys.argv[3]), sys.argv[4], sys.argv[5]))' \
    "$OUT" "$dir/r.ini" "$PORT_BASE" "$OUT/app.py" "$logdir"
  if [[ $impl == uwsgi ]]; then pmin=0 pmax=3; else pmin=0.1 pmax=0.6; fi
  echo "reaction, $impl (load $(load)):" >&2
  write_wrapper "$logdir" "$OUT/wrapper-$impl.sh"
  start_emperor "$impl" "$dir" "$OUT/logs/emperor-$impl-reaction.log" "$OUT/wrapper-$impl.sh"
  run python3 "$OUT/reaction.py" emperor "$impl" "$dir" "$logdir" "$PORT_BASE" "$ITER" "$pmin" "$pmax" "$REACTION" ||
    die "reaction test of $impl failed (logs: $OUT/logs/)"
  stop_emperor 60
  for _ in $(seq 200); do ports_free && break; sleep 0.1; done
  ports_free || die "vassal ports still bound after the $impl emperor stopped"
done

# ----- 2. idle cost ------------------------------------------------------------------------
for n in $SIZES; do
  [[ $TESTS == *idle* ]] || break
  for impl in $IMPLS; do
    dir=$OUT/idle-$impl-$n
    mkdir -p "$dir"
    for ((i = 0; i < n; i++)); do printf '[uwsgi]\n' > "$dir/$(printf 'i%04d' "$i").ini"; done
    start_emperor "$impl" "$dir" "$OUT/logs/emperor-$impl-idle-$n.log" "$VASSAL_DEMO"
    t0=$EPOCHREALTIME
    for ((i = 0; i < 1200; i++)); do
      (($(children_count "$EMP_PID") >= n)) && break
      kill -0 "$EMP_PID" 2> /dev/null || die "$impl emperor died (log: $OUT/logs/emperor-$impl-idle-$n.log)"
      sleep 0.1
    done
    up=$(children_count "$EMP_PID")
    ((up >= n)) || die "$impl: only $up of $n vassals after 120 s"
    spawn_s=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    run sleep 5
    l=$(load)
    t_a=$(cpu_ticks "$EMP_PID") n_a=$(cpu_ns "$EMP_PID") w_a=$(wakeups "$EMP_PID")
    run sleep "$IDLE"
    t_b=$(cpu_ticks "$EMP_PID") n_b=$(cpu_ns "$EMP_PID") w_b=$(wakeups "$EMP_PID")
    rss=$(rss_kb "$EMP_PID") vrss=$(children_rss_kb "$EMP_PID") left=$(children_count "$EMP_PID")
    ticks=$((t_b - t_a))
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$impl" "$n" "$IDLE" "$ticks" \
      "$((ticks * 1000 / TICK))" "$(awk -v a="$n_a" -v b="$n_b" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')" \
      "$((w_b - w_a))" "$rss" "$vrss" "$left" "$l" >> "$IDLE_TSV"
    echo "idle, $impl, $n vassals (all up after ${spawn_s}s, load $l): $ticks ticks," \
      "$(awk -v a="$n_a" -v b="$n_b" 'BEGIN { printf "%.1f", (b - a) / 1e6 }') ms on CPU in ${IDLE}s," \
      "$((w_b - w_a)) wake-ups, RSS $rss kB, vassals $vrss kB, $left vassals at the end" >&2
    stop_emperor 60
  done
done

# ----- tables ------------------------------------------------------------------------------
# stats IMPL KIND: n, min, p50, p99, max, mean in ms (nearest-rank percentiles).
stats() {
  awk -F'\t' -v i="$1" -v k="$2" '$1 == i && $2 == k { print $4 * 1000 }' "$REACTION" | sort -g |
    awk '{ v[++n] = $1; s += $1 }
      function rank(p,   r) { r = int(p * n + 0.999999); if (r < 1) r = 1; return v[r] }
      END { if (n) printf "%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n", n, v[1], rank(0.5), rank(0.99), v[n], s / n }'
}
if [[ $TESTS == *reaction* ]]; then
  echo
  echo "Reaction, ms from the change to the vassal's hook (real uWSGI vassals; p99 = nearest rank)."
  echo "exec: to the moment the emperor exec'd the vassal (a wrapper's stamp, then uWSGI in place);"
  echo "spawn: to uWSGI's exec-asap hook (exec + uWSGI's own start-up); reload: to hook-emperor-reload:"
  echo
  echo "| emperor | test | samples | min | p50 | p99 | max | mean |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  for kind in reload exec spawn; do
    for impl in $IMPLS; do
      s=$(stats "$impl" "$kind")
      [[ -z $s ]] || { IFS=$'\t' read -r c a b p m e <<< "$s"; echo "| $impl | $kind | $c | $a | $b | $p | $m | $e |"; }
    done
  done
  s=$(stats none baseline)
  [[ -z $s ]] || { IFS=$'\t' read -r c a b p m e <<< "$s"; echo "| (none) | uwsgi --ini to exec-asap | $c | $a | $b | $p | $m | $e |"; }
fi
if [[ $IMPLS == *uwsgi* && $IMPLS == *ours* && $TESTS == *reaction* ]]; then
  echo
  for kind in reload exec spawn; do
    u=$(stats uwsgi "$kind") o=$(stats ours "$kind")
    awk -v u="$u" -v o="$o" -v k="$kind" 'BEGIN { split(u, a, "\t"); split(o, b, "\t")
      printf "ours/uWSGI, %s: p50 %.4f, p99 %.4f, mean %.4f\n", k, b[3] / a[3], b[4] / a[4], b[6] / a[6] }'
  done
fi
if [[ $TESTS == *idle* ]]; then
  echo
  echo "Idle, the emperor process alone over ${IDLE} s (CPU ms per minute = ms on CPU x 60 / window):"
  echo
  echo "| emperor | vassals | CPU ticks | CPU ms/min (ticks) | CPU ms/min (schedstat) | wake-ups/min | emperor RSS (MiB) | vassals' RSS (MiB) | load |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---|"
  awk -F'\t' 'NR > 1 { f = 60 / $3
    printf "| %s | %d | %d | %.0f | %.1f | %.0f | %.1f | %.0f | %s |\n", $1, $2, $4, $5 * f, $6 * f, $7 * f, $8 / 1024, $9 / 1024, $11 }' "$IDLE_TSV"
fi
if [[ $IMPLS == *uwsgi* && $IMPLS == *ours* && $TESTS == *idle* ]]; then
  echo
  for n in $SIZES; do
    awk -F'\t' -v n="$n" 'NR > 1 && $2 == n { c[$1] = $6; r[$1] = $8 }
      END { printf "ours/uWSGI at %d vassals: CPU %.3f, emperor RSS %.2f\n", n, (c["uwsgi"] ? c["ours"] / c["uwsgi"] : 0), r["ours"] / r["uwsgi"] }' "$IDLE_TSV"
  done
fi
echo
echo "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
  "Linux $(uname -r), load average $LOAD0 at start, $(load) at end"
echo "peers: uWSGI $("$UWSGI" --version), emperor${OURS_ARGS:+ $OURS_ARGS} + vassal-demo (release), $(rustc --version | cut -d' ' -f1-2); date $START"
echo "samples: $REACTION, $IDLE_TSV; logs: $OUT/logs/"
