#!/usr/bin/env bash
# load.sh - strangler beside nginx, HAProxy and Caddy under wrk, on loopback only.
#
# Builds the release binary, writes a route file for the chosen scenario, and hands
# strangler to the shared peer harness (../shared/bench/peers.sh, relative to the repo
# root) as its candidate. Every process the harness starts is stopped when it ends.
#
#   benches/load.sh                                  # pass-through, 3 x 10 s, all peers
#   SCENARIO=routes100 benches/load.sh               # 100 prefix routes before the default
#   REPS=1 DURATION=5 PEERS="nginx-w1 haproxy-t1" benches/load.sh
#
# Knobs (environment, defaults in brackets):
#   SCENARIO [passthrough]  passthrough: upstreams + default + `routes: []` (step 1)
#                           routes100:   100 `path_prefix` routes that GET / does not
#                                        match, then the default: the matcher's cost
#                           shadow:      GET / shadowed to the slow origin (18082, 200 ms):
#                                        compare with nginx's `mirror-slow` experiment
#   SHADOW_IN_FLIGHT [256]  the shadow scenario's `max_in_flight` (the default; copies
#                           per second ~ this / 0.2 s)
#                           canary:      GET / split 50/50 between two names of the origin,
#                                        sticky on a cookie, with a gate
#                           hooks:       a Lua on_response hook setting one header: compare
#                                        with nginx's `lua-header` experiment
#   EXPERIMENTS [exp-plain] the harness's nginx experiments to run beside the peers
#   REPS, DURATION, PIN, PEERS, CONNS, THREADS, LAT_DURATION, WARMUP, OUT, ...
#                           passed through to peers.sh unchanged (see the top of peers.sh)
#   SKIP_BUILD [0]          1 = use the existing binary, do not run cargo
#   STRANGLER_BIN           binary to measure [<target dir>/release/strangler]
#   PEERS_SH                the harness [<repo>/../shared/bench/peers.sh]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIO=${SCENARIO:-passthrough}
SHADOW_IN_FLIGHT=${SHADOW_IN_FLIGHT:-256}
PEERS_SH=${PEERS_SH:-$ROOT/../shared/bench/peers.sh}
ADMIN=127.0.0.1:18198
export EXPERIMENTS=${EXPERIMENTS-exp-plain}
export OUT=${OUT:-/tmp/peers-bench-results/strangler-$SCENARIO-$(date +%Y%m%d-%H%M%S)}

NAME=load.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

case $SCENARIO in
    passthrough|routes100|shadow|canary|hooks) ;;
    *) die "unknown SCENARIO '$SCENARIO' (passthrough|routes100|shadow|canary|hooks)" ;;
esac
[ -f "$PEERS_SH" ] || die "peer harness not found at $PEERS_SH (set PEERS_SH)"

build_strangler
"$BIN" run --help 2>/dev/null | grep -q -- '--access-log' \
    || die "$BIN run --help does not list --access-log (stale or incomplete build?)"
port_free "${ADMIN##*:}" || die "port ${ADMIN##*:} (strangler's admin in this benchmark) is already in use"
work_dir strangler-load
ROUTES=$WORK/routes.yaml
{
    echo "# benches/load.sh, scenario $SCENARIO"
    echo "upstreams:"
    echo '  origin: { url: "http://127.0.0.1:18080" }'
    case $SCENARIO in
        routes100) echo '  service: { url: "http://127.0.0.1:18081" }' ;;
        shadow) echo '  slow: { url: "http://127.0.0.1:18082" }' ;;
        canary) echo '  origin-new: { url: "http://127.0.0.1:18080" }' ;;
    esac
    echo "default: origin"
    case $SCENARIO in
        routes100)
            echo "routes:"
            for i in $(seq -w 0 99); do
                echo "  - name: svc-$i"
                echo "    match: { path_prefix: /svc-$i }"
                echo "    to: service"
            done
            ;;
        shadow)
            echo "routes:"
            echo "  - name: root"
            echo "    match: { path_prefix: / }"
            echo "    shadow: { primary: origin, candidate: slow, max_in_flight: $SHADOW_IN_FLIGHT, timeout: 1s }"
            ;;
        canary)
            echo "routes:"
            echo "  - name: root"
            echo "    match: { path_prefix: / }"
            echo "    canary:"
            echo "      split: { origin: 50, origin-new: 50 }"
            echo "      sticky: { cookie: session }"
            echo "      gate: { min_requests: 100, max_error_rate: 1%, max_p99_ratio: 3 }"
            ;;
        hooks)
            echo 'function on_response(req, res) res.headers:set("x-bench", "1") end' > "$WORK/header.lua"
            echo "routes:"
            echo "  - name: root"
            echo "    match: { path_prefix: / }"
            echo "    to: origin"
            echo "    hooks: [header.lua]"
            ;;
        *) echo "routes: []" ;;
    esac
} > "$ROUTES"
"$BIN" check "$ROUTES" >&2 || die "the generated route file does not validate: $ROUTES"

# $BENCH_LISTEN stays literal: peers.sh exports it to the candidate's `bash -c`.
CANDIDATE_CMD="$(printf '%q' "$BIN") run --routes $(printf '%q' "$ROUTES")"
CANDIDATE_CMD+=' --listen $BENCH_LISTEN --admin '"$ADMIN"' --access-log off'
export CANDIDATE_CMD CANDIDATE_PORT=18199 CANDIDATE_NAME=strangler

log "scenario $SCENARIO, route file $ROUTES"
log "candidate: $CANDIDATE_CMD"
rc=0
(cd "$ROOT" && bash "$PEERS_SH") || rc=$?
echo
log "results: $OUT/summary.md (table), $OUT/results.tsv (raw rows), $OUT/meta.txt (settings)"
exit "$rc"
