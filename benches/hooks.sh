#!/usr/bin/env bash
# hooks.sh - what a header-setting Lua hook costs, strangler beside nginx, measured in turns.
#
# Issue 6's goal: our hook's overhead relative to our pass-through no larger than nginx+Lua's
# (`header_filter_by_lua_block`) relative to nginx. The peer harness (load.sh,
# SCENARIO=hooks) runs each target in its own stretch, and on a shared VM the drift between
# stretches is as large as the overhead itself. This script keeps four targets running on
# one CPU with one origin and measures them in turns, round after round:
#   exp-plain   nginx pass-through             (the harness's nginx-exp.conf, port 18110)
#   lua-header  the same nginx, plus the hook  (port 18115: ngx.header["X-Bench"] = "1")
#   route       strangler, one route that forwards everything to the origin
#   hooks       strangler, the same route with an on_response hook that sets x-bench: 1
# (each hook is measured against the same route or location without it).
# Each row gives the target's CPU per request and that CPU relative to the origin's in the
# same turn (the origin does the same work for every target, so its CPU per request tracks
# the machine's speed); the summary gives each hooked target over its plain one, per round
# and as medians.
#
#   benches/hooks.sh                      # 6 rounds of 6 s per target
#   ROUNDS=10 SKIP_BUILD=1 benches/hooks.sh
#
# Knobs (environment, defaults in brackets):
#   ROUNDS [6]     rounds (each target once per round)
#   DURATION [6]   seconds of each measured wrk run (after a 1 s warm-up)
#   CONNS [64]     wrk connections (2 threads)
#   CPU [1]        the CPU of wrk, origin, nginx and strangler
#   SKIP_BUILD [0] 1 = use the existing binary
#   KEEP [0]       1 = keep the work directory (logs, route files)
# Needs nginx with the Lua module (Debian: nginx, libnginx-mod-http-lua), wrk, curl, taskset.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-6}
CONNS=${CONNS:-64}
CPU=${CPU:-1}
NGINX_CONF=${NGINX_CONF:-$ROOT/../shared/bench/conf/nginx-exp.conf}
ORIGIN_PORT=18080
NGINX_PLAIN_PORT=18110
NGINX_LUA_PORT=18115
PLAIN_PORT=28199
HOOKS_PORT=28299
NAME=hooks.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

for tool in nginx wrk curl ss awk taskset python3; do
    command -v "$tool" > /dev/null || die "$tool is not installed"
done
[ -f "$NGINX_CONF" ] || die "no nginx configuration at $NGINX_CONF"
ensure_ports_free "$ORIGIN_PORT" "$NGINX_PLAIN_PORT" "$NGINX_LUA_PORT" "$PLAIN_PORT" \
    "$((PLAIN_PORT - 1))" "$HOOKS_PORT" "$((HOOKS_PORT - 1))"
build_strangler
build_bench_upstream
work_dir strangler-hooks

route_files "$WORK" "$ORIGIN_PORT"
mkdir -p "$WORK/nginx/tmp"

taskset -c "$CPU" "$ORIGIN_BIN" --port "$ORIGIN_PORT" --threads 1 \
    > "$WORK/origin.log" 2>&1 < /dev/null &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
taskset -c "$CPU" nginx -p "$WORK/nginx/" -e "$WORK/nginx/error.log" -c "$NGINX_CONF" \
    -g "pid $WORK/nginx/nginx.pid;" > "$WORK/nginx.log" 2>&1 < /dev/null &
PIDS+=("$!")
for mode in route hooks; do
    port=$PLAIN_PORT
    [ "$mode" = hooks ] && port=$HOOKS_PORT
    taskset -c "$CPU" "$BIN" run --routes "$WORK/$mode.yaml" --listen "127.0.0.1:$port" \
        --admin "127.0.0.1:$((port - 1))" --access-log off --workers 1 \
        > "$WORK/$mode.log" 2>&1 < /dev/null &
    PIDS+=("$!")
    eval "${mode}_PID=$!"
done
wait_hello "http://127.0.0.1:$ORIGIN_PORT/" origin "$WORK/origin.log"
wait_hello "http://127.0.0.1:$NGINX_PLAIN_PORT/" nginx "$WORK/nginx/error.log"
wait_hello "http://127.0.0.1:$PLAIN_PORT/" strangler "$WORK/route.log"
wait_hello "http://127.0.0.1:$HOOKS_PORT/" "hooked strangler" "$WORK/hooks.log"
[ "$(curl -s -o /dev/null -w '%header{x-bench}' "http://127.0.0.1:$HOOKS_PORT/")" = 1 ] \
    || die "the hooked strangler does not set x-bench"
[ "$(curl -s -o /dev/null -w '%header{x-bench}' "http://127.0.0.1:$NGINX_LUA_PORT/")" = 1 ] \
    || die "nginx's lua-header server does not set x-bench (is the Lua module installed?)"
NGINX_WORKER=$(pgrep -f "nginx: worker process" -P "$(cat "$WORK/nginx/nginx.pid")" | head -n 1)
[ -n "$NGINX_WORKER" ] || die "no nginx worker process found"

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure TARGET PORT PID ROUND : one warm-up and one measured wrk run; appends a row
measure() {
    local target=$1 port=$2 pid=$3 round=$4 out p0 p1 o0 o1
    taskset -c "$CPU" wrk -t2 -c"$CONNS" -d1s "http://127.0.0.1:$port/" > /dev/null
    p0=$(ticks "$pid") o0=$(ticks "$ORIGIN_PID")
    out=$(taskset -c "$CPU" wrk -t2 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$port/")
    p1=$(ticks "$pid") o1=$(ticks "$ORIGIN_PID")
    if grep -qE 'Non-2xx|Socket errors' <<< "$out"; then
        echo "$out" >&2
        die "$target: wrk saw errors"
    fi
    awk -v t="$target" -v r="$round" -v p="$((p1 - p0))" -v o="$((o1 - o0))" \
        -v hz="$(getconf CLK_TCK)" '
        / requests in / { requests = $1 }
        /^Requests\/sec/ { rps = $2 }
        END { us = 1e6 / hz / requests; printf "%s\t%s\t%.0f\t%.2f\t%.2f\n", t, r, rps, p * us, o * us }
        ' <<< "$out" >> "$WORK/rows.tsv"
}

log "$ROUNDS rounds of ${DURATION}s per target, $CONNS connections, everything on CPU $CPU"
: > "$WORK/rows.tsv"
for round in $(seq 1 "$ROUNDS"); do
    measure exp-plain "$NGINX_PLAIN_PORT" "$NGINX_WORKER" "$round"
    measure lua-header "$NGINX_LUA_PORT" "$NGINX_WORKER" "$round"
    # shellcheck disable=SC2154 # set by the eval above
    measure route "$PLAIN_PORT" "$route_PID" "$round"
    # shellcheck disable=SC2154
    measure hooks "$HOOKS_PORT" "$hooks_PID" "$round"
    log "round $round done"
done

python3 - "$WORK/rows.tsv" << 'EOF'
import statistics, sys

runs = {}
for line in open(sys.argv[1]).read().splitlines():
    target, round_, rps, cpu, origin = line.split("\t")
    runs[(target, int(round_))] = dict(rps=float(rps), cpu=float(cpu), origin=float(origin))
rounds = sorted({r for _, r in runs})
print("round  target       req/s   CPU us/req  ÷ origin's")
for r in rounds:
    for target in ("exp-plain", "lua-header", "route", "hooks"):
        run = runs[(target, r)]
        print(f"{r:5d}  {target:11s} {run['rps']:7.0f} {run['cpu']:9.2f} {run['cpu'] / run['origin']:11.3f}")
print()
print("hooked ÷ plain, per round and median:   CPU per request | ÷ origin's | req/s")
for plain, hooked, who in (("exp-plain", "lua-header", "nginx"), ("route", "hooks", "strangler")):
    cpu = [runs[(hooked, r)]["cpu"] / runs[(plain, r)]["cpu"] for r in rounds]
    rel = [(runs[(hooked, r)]["cpu"] / runs[(hooked, r)]["origin"])
           / (runs[(plain, r)]["cpu"] / runs[(plain, r)]["origin"]) for r in rounds]
    rps = [runs[(hooked, r)]["rps"] / runs[(plain, r)]["rps"] for r in rounds]
    print(f"  {who:9s} {' '.join(f'{x:.3f}' for x in cpu)}")
    print(f"  {'':9s} median {statistics.median(cpu):.3f} | {statistics.median(rel):.3f} | {statistics.median(rps):.3f}")
cpu = [runs[("route", r)]["cpu"] / runs[("exp-plain", r)]["cpu"] for r in rounds]
rps = [runs[("route", r)]["rps"] / runs[("exp-plain", r)]["rps"] for r in rounds]
print(f"strangler route ÷ nginx exp-plain: CPU per request {statistics.median(cpu):.3f}, req/s {statistics.median(rps):.3f}")
EOF
