#!/usr/bin/env bash
# callgrind.sh - instructions per request of strangler and of nginx, counted by valgrind.
#
# Each proxy runs under `valgrind --tool=callgrind` in front of a small origin and is
# driven by wrk twice, for a short and a long run, each time in a fresh process. Start-up,
# warm-up and shutdown cost the same in both runs, so
#
#     instructions per request = (Ir_long - Ir_short) / (requests_long - requests_short)
#
# is the steady-state cost of one pass-through request. It counts instructions, not time:
# the figure repeats to within 1-2 % and hardly moves when other work shares the CPU
# (valgrind runs the proxy many times slower, which only changes how many requests each
# run gets through). nginx runs as one process (`master_process off`, one worker,
# keep-alive both ways, access log off), strangler with `--access-log off --workers 1`
# (its single-threaded runtime): the same job. More targets measure a Lua hook that sets
# one response header (issue 6): `strangler-hooks` (a route whose `on_response` hook does it)
# against `strangler-route` (the same route without the hook), as `nginx-lua`
# (`header_filter_by_lua_block`, needs Debian's libnginx-mod-http-lua) is against `nginx`
# (the same location without it).
# Every process started here is stopped on exit; traffic stays on 127.0.0.1.
#
#   benches/callgrind.sh                    # both; under a minute after the build
#   TARGETS=strangler SKIP_BUILD=1 benches/callgrind.sh
#   TARGETS="strangler-route strangler-hooks nginx nginx-lua" benches/callgrind.sh
#
# Knobs (environment, defaults in brackets):
#   TARGETS [strangler nginx]   what to measure (also strangler-route, strangler-hooks,
#                               nginx-lua)
#   SHORT [2], LONG [8]         seconds of the two wrk runs
#   CONNS [8]                   wrk connections (one wrk thread)
#   ORIGIN_PORT [28080]  PROXY_PORT [28199]  ADMIN_PORT [28198] (strangler's admin)
#   SKIP_BUILD [0]              1 = use the existing binary, do not run cargo
#   STRANGLER_BIN               binary to measure [<target dir>/release/strangler]
#   ORIGIN_BIN                  the origin [/tmp/peers-bench-target/release/bench-upstream,
#                               built from ../shared/bench/upstream when missing]; when
#                               ORIGIN_PORT is already in use, whatever answers `hello`
#                               there is used instead
#   KEEP [0]                    1 = keep the work directory (callgrind.out.* files for
#                               callgrind_annotate, logs) and print its path
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGETS=${TARGETS:-strangler nginx}
SHORT=${SHORT:-2}
LONG=${LONG:-8}
CONNS=${CONNS:-8}
ORIGIN_PORT=${ORIGIN_PORT:-28080}
PROXY_PORT=${PROXY_PORT:-28199}
ADMIN_PORT=${ADMIN_PORT:-28198}
NAME=callgrind.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

for tool in valgrind wrk curl ss awk; do
    command -v "$tool" > /dev/null || die "$tool is not installed (apt-get install valgrind wrk curl iproute2)"
done
case " $TARGETS " in *" nginx"*) command -v nginx > /dev/null || die "nginx is not installed" ;; esac
[ "$LONG" -gt "$SHORT" ] || die "LONG ($LONG) must be longer than SHORT ($SHORT)"
for target in $TARGETS; do
    case $target in
        strangler | strangler-route | strangler-hooks | nginx | nginx-lua) ;;
        *) die "unknown target '$target' (strangler|strangler-route|strangler-hooks|nginx|nginx-lua)" ;;
    esac
done
ensure_ports_free "$PROXY_PORT" "$ADMIN_PORT"
START_ORIGIN=1
port_free "$ORIGIN_PORT" || START_ORIGIN=0

if [ "$START_ORIGIN" = 1 ]; then build_bench_upstream; fi
case " $TARGETS " in *" strangler"*) build_strangler ;; esac

work_dir strangler-callgrind

# The origin, natively (not under valgrind): one thread, answers `hello`.
if [ "$START_ORIGIN" = 1 ]; then
    "$ORIGIN_BIN" --port "$ORIGIN_PORT" --threads 1 > "$WORK/origin.log" 2>&1 < /dev/null &
    PIDS+=("$!")
else
    log "port $ORIGIN_PORT is in use: assuming an origin that answers 'hello' runs there"
    : > "$WORK/origin.log"
fi

route_files "$WORK" "$ORIGIN_PORT"
mkdir -p "$WORK/nginx/tmp"
# nginx_conf [MODULES] [DIRECTIVE] : the pass-through configuration; nginx-lua's loads the
# Lua module and sets the header in its location.
nginx_conf() {
    cat << EOF
${1:-}
daemon off;
master_process off;
worker_processes 1;
error_log $WORK/nginx/error.log warn;
pid $WORK/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_requests 10000000;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            ${2:-}
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}
nginx_conf > "$WORK/nginx/nginx.conf"
nginx_conf 'load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;' \
    'header_filter_by_lua_block { ngx.header["X-Bench"] = "1" }' > "$WORK/nginx/nginx-lua.conf"

wait_hello "http://127.0.0.1:$ORIGIN_PORT/" origin "$WORK/origin.log"

# alive PID TARGET SECONDS : the process under test still runs (if it could not bind its
# port, the answers came from someone else's process)
alive() {
    kill -0 "$1" 2> /dev/null && return 0
    tail -n 20 "$WORK/$2.$3.log" >&2
    die "$2 exited early (port $PROXY_PORT taken by another process?)"
}

# measure TARGET SECONDS : one fresh process under callgrind, wrk for SECONDS; sets
# REQUESTS and IR (instructions executed by the whole process, all threads)
measure() {
    local target=$1 seconds=$2 out="$WORK/callgrind.out.$1.$2" pid stop output
    local -a cmd
    case $target in
        strangler | strangler-route | strangler-hooks)
            local routes=passthrough.yaml
            [ "$target" = strangler-route ] && routes=route.yaml
            [ "$target" = strangler-hooks ] && routes=hooks.yaml
            # --poll 1h: no periodic re-read of the route file, whose cost grows with time.
            cmd=("$BIN" run --routes "$WORK/$routes" --listen "127.0.0.1:$PROXY_PORT"
                --admin "127.0.0.1:$ADMIN_PORT" --access-log off --poll 1h --workers 1)
            stop=INT ;;
        nginx | nginx-lua)
            cmd=(nginx -p "$WORK/nginx/" -e "$WORK/nginx/error.log" -c "$WORK/nginx/$target.conf")
            stop=QUIT ;;
    esac
    valgrind --tool=callgrind --callgrind-out-file="$out" "${cmd[@]}" \
        > "$WORK/$target.$seconds.log" 2>&1 < /dev/null &
    pid=$!
    PIDS+=("$pid")
    # One request through the proxy: the same in both runs, so it cancels out.
    # Up to 30 s: valgrind starts slowly.
    wait_hello "http://127.0.0.1:$PROXY_PORT/" "$target" "$WORK/$target.$seconds.log" 300
    alive "$pid" "$target" "$seconds"
    output=$(wrk -t1 -c"$CONNS" -d"${seconds}s" "http://127.0.0.1:$PROXY_PORT/")
    alive "$pid" "$target" "$seconds"
    if grep -qE 'Non-2xx|Socket errors' <<< "$output"; then
        echo "$output" >&2
        die "$target: wrk saw errors"
    fi
    REQUESTS=$(awk '/ requests in / { print $1 }' <<< "$output")
    # Graceful stop; callgrind writes its totals when the process exits.
    kill -"$stop" "$pid"
    local i
    for i in $(seq 1 300); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2> /dev/null && die "$target did not exit within 30 s of SIG$stop"
    wait "$pid" || true
    forget "$pid"
    IR=$(awk '/^totals:/ { t = $2 } /^summary:/ { s = $2 } END { print (t != "" ? t : s) }' "$out")
    [ -n "$REQUESTS" ] && [ -n "$IR" ] || die "$target: no request count or no totals in $out"
}

log "wrk -t1 -c$CONNS for ${SHORT}s and ${LONG}s against each of: $TARGETS"
declare -A PER_REQUEST=()
for target in $TARGETS; do
    measure "$target" "$SHORT"
    n1=$REQUESTS i1=$IR
    measure "$target" "$LONG"
    n2=$REQUESTS i2=$IR
    [ "$n2" -gt "$n1" ] || die "$target: the long run served no more requests than the short one"
    PER_REQUEST[$target]=$(((i2 - i1) / (n2 - n1)))
    log "$target: ${SHORT}s: $n1 requests, $i1 Ir; ${LONG}s: $n2 requests, $i2 Ir"
done

echo
printf '%-16s %14s\n' target "Ir/request"
for target in $TARGETS; do
    printf '%-16s %14s\n' "$target" "${PER_REQUEST[$target]}"
done
if [ -n "${PER_REQUEST[strangler]:-}" ] && [ -n "${PER_REQUEST[nginx]:-}" ]; then
    awk -v s="${PER_REQUEST[strangler]}" -v n="${PER_REQUEST[nginx]}" \
        'BEGIN { printf "strangler / nginx: %.2f\n", s / n }'
fi
# The hook against the same route without it when that was measured (as nginx's is against
# the same location without it), else against pass-through.
hook_plain=strangler
[ -n "${PER_REQUEST[strangler-route]:-}" ] && hook_plain=strangler-route
for pair in "$hook_plain strangler-hooks" "nginx nginx-lua"; do
    read -r plain hooked <<< "$pair"
    if [ -n "${PER_REQUEST[$plain]:-}" ] && [ -n "${PER_REQUEST[$hooked]:-}" ]; then
        awk -v p="${PER_REQUEST[$plain]}" -v h="${PER_REQUEST[$hooked]}" -v name="$hooked" \
            'BEGIN { printf "%s: %+d Ir/request (x%.3f)\n", name, h - p, h / p }'
    fi
done
