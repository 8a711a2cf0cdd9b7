#!/usr/bin/env bash
# shadow.sh - what a parallel run costs the primary: the same strangler binary serving
# GET / as plain pass-through and as a shadowed route, in interleaved pairs, under wrk.
#
# Issue 4's figure is "primary throughput and p99 as a ratio to plain pass-through" with a
# candidate that answers after 200 ms. The peer harness (load.sh, SCENARIO=shadow) puts
# strangler beside nginx's `mirror`, but runs one strangler configuration only; this script
# gives the ratio to strangler's own pass-through, measured back to back so that the
# machine's drift between runs cancels out. Each pair restarts strangler twice (once per
# route file); origin and candidate run for the whole script.
#
# The candidate (bench-upstream --delay-ms 200) is a process of its own: on a one-CPU layout
# its work (~35 us per copy) competes with the primary's. CANDIDATE_CPU places it, so the
# proxy's own cost can be told apart from the candidate's: on the proxy's CPU (the harness's
# PIN=one, the default) or on another CPU (a new service on other hosts, as in production).
#
#   benches/shadow.sh                                   # 5 pairs, candidate on CPU 1
#   CANDIDATE_CPU=0 PAIRS=8 SKIP_BUILD=1 benches/shadow.sh
#
# Knobs (environment, defaults in brackets):
#   PAIRS [5]            interleaved (pass-through, shadow) pairs
#   DURATION [8]         seconds of each measured wrk run (after a 2 s warm-up)
#   CONNS [64]           wrk connections (2 threads)
#   CPU [1]              the CPU of wrk, origin and strangler
#   CANDIDATE_CPU [$CPU] the CPU of the slow candidate
#   IN_FLIGHT [256]      the shadowed route's `max_in_flight` (copies/s ~ this / 0.2 s)
#   DELAY_MS [200]       how long the candidate takes to answer
#   SPARE_CPU []         strangler's --shadow-spare-cpu (unset: its default, 5%); 0% makes
#                        every copy the bounds allow however busy the CPU is (copies/s then
#                        ~ IN_FLIGHT / 0.2 s even at saturation)
#   THINK_MS [0]         pause of each wrk connection between its requests (wrk's delay()):
#                        0 = saturate the CPU (p99 then mostly measures queueing, i.e. CPU
#                        cost); e.g. 4 = ~half the CPU's capacity, a production-like load
#                        at which p99 measures what a copy does to a request's own latency
#   ORIGIN_PORT [28080] CANDIDATE_PORT [28082] PROXY_PORT [28199] ADMIN_PORT [28198]
#   SKIP_BUILD [0]       1 = use the existing binary, do not run cargo
#   STRANGLER_BIN        binary to measure [<target dir>/release/strangler]
#   ORIGIN_BIN           [/tmp/peers-bench-target/release/bench-upstream, built from
#                        ../shared/bench/upstream when missing]
# Every process started here is stopped on exit; traffic stays on 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PAIRS=${PAIRS:-5}
DURATION=${DURATION:-8}
CONNS=${CONNS:-64}
CPU=${CPU:-1}
CANDIDATE_CPU=${CANDIDATE_CPU:-$CPU}
IN_FLIGHT=${IN_FLIGHT:-256}
DELAY_MS=${DELAY_MS:-200}
THINK_MS=${THINK_MS:-0}
SPARE_ARGS=()
[ -n "${SPARE_CPU:-}" ] && SPARE_ARGS=(--shadow-spare-cpu "$SPARE_CPU")
ORIGIN_PORT=${ORIGIN_PORT:-28080}
CANDIDATE_PORT=${CANDIDATE_PORT:-28082}
PROXY_PORT=${PROXY_PORT:-28199}
ADMIN_PORT=${ADMIN_PORT:-28198}
NAME=shadow.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

for tool in wrk curl ss awk taskset python3; do
    command -v "$tool" > /dev/null || die "$tool is not installed"
done
ensure_ports_free "$ORIGIN_PORT" "$CANDIDATE_PORT" "$PROXY_PORT" "$ADMIN_PORT"
build_bench_upstream
build_strangler
work_dir strangler-shadow

# CPU time (user + system, clock ticks) of PID so far
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# comparisons (match + mismatch + noise + candidate_error) counted so far
comparisons() {
    curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk '/^strangler_shadow_comparisons_total/ && !/dropped/ { n += $2 } END { print n + 0 }'
}

taskset -c "$CPU" "$ORIGIN_BIN" --port "$ORIGIN_PORT" --threads 1 \
    > "$WORK/origin.log" 2>&1 < /dev/null &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
taskset -c "$CANDIDATE_CPU" "$ORIGIN_BIN" --port "$CANDIDATE_PORT" --threads 1 \
    --delay-ms "$DELAY_MS" > "$WORK/candidate.log" 2>&1 < /dev/null &
CANDIDATE_PID=$!
PIDS+=("$CANDIDATE_PID")
wait_hello "http://127.0.0.1:$ORIGIN_PORT/" origin "$WORK/origin.log"
wait_hello "http://127.0.0.1:$CANDIDATE_PORT/" candidate "$WORK/candidate.log"

upstreams="upstreams:
  origin: { url: \"http://127.0.0.1:$ORIGIN_PORT\" }
  candidate: { url: \"http://127.0.0.1:$CANDIDATE_PORT\" }
default: origin"
printf '%s\nroutes: []\n' "$upstreams" > "$WORK/passthrough.yaml"
printf '%s\nroutes:\n  - name: root\n    match: { path_prefix: / }\n    shadow: { primary: origin, candidate: candidate, max_in_flight: %s, timeout: 1s }\n' \
    "$upstreams" "$IN_FLIGHT" > "$WORK/shadow.yaml"
WRK_SCRIPT=()
if [ "$THINK_MS" != 0 ]; then
    printf 'function delay()\n    return %s\nend\n' "$THINK_MS" > "$WORK/think.lua"
    WRK_SCRIPT=(-s "$WORK/think.lua")
fi
for mode in passthrough shadow; do
    "$BIN" check "$WORK/$mode.yaml" > /dev/null || die "generated $mode route file is invalid"
done

# measure MODE PAIR : one fresh strangler with MODE's route file; appends a row to rows.tsv
measure() {
    local mode=$1 pair=$2 pid out p0 p1 o0 o1 c0 c1 n0 n1
    taskset -c "$CPU" "$BIN" run --routes "$WORK/$mode.yaml" --listen "127.0.0.1:$PROXY_PORT" \
        --admin "127.0.0.1:$ADMIN_PORT" --access-log off --workers 1 "${SPARE_ARGS[@]}" \
        > "$WORK/strangler.log" 2>&1 < /dev/null &
    pid=$!
    PIDS+=("$pid")
    wait_hello "http://127.0.0.1:$PROXY_PORT/" strangler "$WORK/strangler.log"
    taskset -c "$CPU" wrk -t2 -c"$CONNS" -d2s "http://127.0.0.1:$PROXY_PORT/" > /dev/null
    n0=$(comparisons)
    p0=$(ticks "$pid") o0=$(ticks "$ORIGIN_PID") c0=$(ticks "$CANDIDATE_PID")
    out=$(taskset -c "$CPU" wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${WRK_SCRIPT[@]}" \
        "http://127.0.0.1:$PROXY_PORT/")
    p1=$(ticks "$pid") o1=$(ticks "$ORIGIN_PID") c1=$(ticks "$CANDIDATE_PID")
    n1=$(comparisons)
    kill "$pid"
    wait "$pid" 2> /dev/null || true
    if grep -qE 'Non-2xx|Socket errors' <<< "$out"; then
        echo "$out" >&2
        die "$mode: wrk saw errors"
    fi
    awk -v mode="$mode" -v pair="$pair" -v p="$((p1 - p0))" -v o="$((o1 - o0))" \
        -v c="$((c1 - c0))" -v n="$((n1 - n0))" -v hz="$(getconf CLK_TCK)" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
        / requests in / { requests = $1 }
        /^Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        END {
            us = 1e6 / hz / requests
            printf "%s\t%s\t%.0f\t%.3f\t%.3f\t%.2f\t%.2f\t%.2f\t%d\t%d\n", mode, pair, rps,
                p50, p99, p * us, o * us, c * us, n, requests
        }' <<< "$out" >> "$WORK/rows.tsv"
}

log "$PAIRS pairs of ${DURATION}s runs, $CONNS connections; wrk, origin, strangler on CPU $CPU, candidate on CPU $CANDIDATE_CPU (answers after ${DELAY_MS} ms), max_in_flight $IN_FLIGHT, think time ${THINK_MS} ms, shadow-spare-cpu ${SPARE_CPU:-default}"
: > "$WORK/rows.tsv"
for pair in $(seq 1 "$PAIRS"); do
    # Alternate which mode goes first, so a drift within a pair does not favour one.
    if [ $((pair % 2)) = 1 ]; then order="passthrough shadow"; else order="shadow passthrough"; fi
    for mode in $order; do measure "$mode" "$pair"; done
    log "pair $pair done"
done

python3 - "$WORK/rows.tsv" "$DURATION" << 'EOF'
import statistics, sys

duration = float(sys.argv[2])
rows = [line.split("\t") for line in open(sys.argv[1]).read().splitlines()]
runs = {}
for mode, pair, rps, p50, p99, proxy, origin, candidate, compared, requests in rows:
    runs[(mode, int(pair))] = dict(rps=float(rps), p50=float(p50), p99=float(p99),
        proxy=float(proxy), origin=float(origin), candidate=float(candidate),
        compared=int(compared), requests=int(requests))
pairs = sorted({pair for _, pair in runs})
print("pair  pass req/s  shadow req/s  ratio   pass p99  shadow p99  ratio   "
      "CPU us/request pass/shadow: proxy, origin   copies/s  candidate us/copy")
ratios = {"rps": [], "p99": [], "p50": [], "proxy": []}
for pair in pairs:
    a, b = runs[("passthrough", pair)], runs[("shadow", pair)]
    for key in ("rps", "p99", "p50"):
        ratios[key].append(b[key] / a[key])
    # Proxy CPU per request relative to the origin's: the machine's speed cancels out.
    ratios["proxy"].append((b["proxy"] / b["origin"]) / (a["proxy"] / a["origin"]))
    per_copy = b["candidate"] * b["requests"] / b["compared"] if b["compared"] else 0
    print(f"{pair:>4}  {a['rps']:>10.0f}  {b['rps']:>12.0f}  {b['rps'] / a['rps']:.3f}  "
          f"{a['p99']:>7.2f}ms  {b['p99']:>8.2f}ms  {b['p99'] / a['p99']:.3f}   "
          f"{a['proxy']:.1f}/{b['proxy']:.1f}, {a['origin']:.1f}/{b['origin']:.1f}   "
          f"{b['compared'] / duration:>8.0f}  {per_copy:.1f}")
med = {key: statistics.median(values) for key, values in ratios.items()}
print(f"median shadow / pass-through: throughput {med['rps']:.3f}, p50 {med['p50']:.3f}, "
      f"p99 {med['p99']:.3f}, proxy CPU per request (relative to the origin's) {med['proxy']:.3f}")
EOF
