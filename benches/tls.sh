#!/usr/bin/env bash
# tls.sh - strangler's HTTPS listener beside nginx with the same certificate, under wrk.
#
# The shared harness (../shared/bench/peers.sh) has no TLS target, so this script runs its
# own small comparison on loopback: an origin ("hello" on 127.0.0.1:18080, the harness's
# nginx-origin.conf), nginx terminating TLS and proxying to it (1 worker, keep-alive both
# ways), and strangler with --listen-tls in front of the same origin. Both serve one
# ECDSA P-256 certificate made here with openssl, TLS 1.2 + 1.3. wrk drives each over
# https with keep-alive (handshakes amortised, so this measures the TLS record layer and
# the proxying, not the handshake). Targets are interleaved REPS times; the median req/s
# of each, their ratio, and the server's CPU time per request (from /proc: steadier than
# req/s when other work shares the CPU) are printed. Every process started here is
# stopped on exit.
#
#   benches/tls.sh                        # 3 x 10 s per target, everything on CPU 1
#   REPS=1 DURATION=5 benches/tls.sh
#   PLAIN=1 benches/tls.sh                # also both over plain http, to separate the TLS cost
#
# Knobs (environment, defaults in brackets):
#   DURATION [10]  seconds per measured run     WARMUP [2]  unrecorded seconds before each
#   CONNS [64]     wrk connections              THREADS [2] wrk threads
#   REPS [3]       interleaved repetitions
#   CPUS [1]       CPU list for everything (like peers.sh PIN=one); empty = no pinning
#   PLAIN [0]      1 = add plain-http runs of both (nginx-http, strangler-http)
#   SKIP_BUILD [0] 1 = use the existing binary     STRANGLER_BIN [<target>/release/strangler]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
CPUS=${CPUS-1}
PLAIN=${PLAIN:-0}
ORIGIN_CONF=${ORIGIN_CONF:-$ROOT/../shared/bench/conf/nginx-origin.conf}
ORIGIN_PORT=18080 NGINX_PORT=18444 STRANGLER_PORT=18443 ADMIN_PORT=18198
NGINX_PLAIN_PORT=18445 PLAIN_PORT=18190

NAME=tls.sh
# shellcheck source=benches/lib.sh
. "$ROOT/benches/lib.sh"

for tool in nginx wrk openssl curl ss; do
    command -v "$tool" > /dev/null || die "$tool is not installed"
done
[ -f "$ORIGIN_CONF" ] || die "origin configuration not found at $ORIGIN_CONF (set ORIGIN_CONF)"
build_strangler
"$BIN" run --help | grep -q -- '--listen-tls' || die "$BIN has no --listen-tls (stale build?)"
ensure_ports_free "$NGINX_PORT" "$NGINX_PLAIN_PORT" "$STRANGLER_PORT" "$PLAIN_PORT" "$ADMIN_PORT"
work_dir strangler-tls-bench
pin() { if [ -n "$CPUS" ]; then taskset -c "$CPUS" "$@"; else "$@"; fi; }
declare -A SERVER_PID=()
start() { # NAME CMD... : start in the background, log to $WORK/NAME.log
    local name=$1; shift
    [ -n "$CPUS" ] && set -- taskset -c "$CPUS" "$@"
    # A plain command (not a function) in the background: $! is its own pid (taskset execs).
    "$@" > "$WORK/$name.log" 2>&1 < /dev/null &
    PIDS+=("$!")
    SERVER_PID[$name]=$!
}
cpu_ticks() { # PID : user+system clock ticks of PID and its children (nginx's worker)
    local pid total=0 ticks
    for pid in "$1" $(ps -o pid= --ppid "$1"); do
        ticks=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2> /dev/null) || ticks=0
        total=$((total + ${ticks:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
wait_https() { # URL NAME : bounded wait for "hello"
    local i
    for i in $(seq 1 100); do
        [ "$(curl -sk --max-time 1 "$1" 2> /dev/null)" = hello ] && return 0
        sleep 0.1
    done
    tail -n 20 "$WORK/$2.log" >&2
    die "$2 does not answer 'hello' at $1"
}

# One certificate for both servers: a leaf for localhost/127.0.0.1 signed by a local CA.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2> /dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" 2> /dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/ext" -out "$WORK/server.crt" 2> /dev/null

mkdir -p "$WORK/tmp"
if port_free "$ORIGIN_PORT"; then
    start origin nginx -p "$WORK" -e "$WORK/origin.error.log" -c "$ORIGIN_CONF" \
        -g "pid $WORK/origin.pid;"
else
    log "port $ORIGIN_PORT is in use: assuming an origin that answers 'hello' runs there"
fi

cat > "$WORK/nginx-tls.conf" << EOF
daemon off;
worker_processes 1;
error_log $WORK/nginx-tls.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT ssl backlog=4096;
        ssl_certificate $WORK/server.crt;
        ssl_certificate_key $WORK/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:$NGINX_PLAIN_PORT backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
start nginx-tls nginx -p "$WORK" -c "$WORK/nginx-tls.conf" -g "pid $WORK/nginx-tls.pid;"

printf 'upstreams:\n  origin: { url: "http://127.0.0.1:%s" }\ndefault: origin\nroutes: []\n' \
    "$ORIGIN_PORT" > "$WORK/routes.yaml"
start strangler "$BIN" run --routes "$WORK/routes.yaml" --access-log off \
    --listen "127.0.0.1:$PLAIN_PORT" --admin "127.0.0.1:$ADMIN_PORT" \
    --listen-tls "127.0.0.1:$STRANGLER_PORT" \
    --tls-cert "$WORK/server.crt" --tls-key "$WORK/server.key"

wait_https "https://127.0.0.1:$NGINX_PORT/" nginx-tls
wait_https "https://127.0.0.1:$STRANGLER_PORT/" strangler

declare -A URL=(
    [nginx-tls]=https://127.0.0.1:$NGINX_PORT/
    [strangler-tls]=https://127.0.0.1:$STRANGLER_PORT/
    [nginx-http]=http://127.0.0.1:$NGINX_PLAIN_PORT/
    [strangler-http]=http://127.0.0.1:$PLAIN_PORT/
)
TARGETS=(nginx-tls strangler-tls)
[ "$PLAIN" = 1 ] && TARGETS+=(nginx-http strangler-http)
declare -A RESULTS=() CPU=()
declare -A SERVER_OF=([nginx-tls]=nginx-tls [nginx-http]=nginx-tls [strangler-tls]=strangler [strangler-http]=strangler)
RATIOS="" PLAIN_RATIOS=""

run_wrk() { # TARGET SECONDS : print "req/s cpu-us-per-request" (fails on errors or non-2xx)
    local out pid before after
    pid=${SERVER_PID[${SERVER_OF[$1]}]}
    before=$(cpu_ticks "$pid")
    out=$(pin wrk -t"$THREADS" -c"$CONNS" -d"${2}s" "${URL[$1]}")
    after=$(cpu_ticks "$pid")
    if grep -qE 'Non-2xx|Socket errors' <<< "$out"; then
        echo "$out" >&2
        die "$1: wrk saw errors"
    fi
    awk -v ticks=$((after - before)) -v hz="$CLK_TCK" '
        / requests in / { requests = $1 }
        /^Requests\/sec:/ { rps = $2 }
        END { printf "%s %.1f\n", rps, requests ? ticks / hz * 1e6 / requests : 0 }' <<< "$out"
}

log "wrk -t$THREADS -c$CONNS, ${DURATION}s (+${WARMUP}s warm-up), $REPS reps, CPUs '${CPUS:-all}'"
for rep in $(seq 1 "$REPS"); do
    # Rotate the order each repetition so neither target always runs first.
    order=("${TARGETS[@]:$(( (rep - 1) % ${#TARGETS[@]} ))}" "${TARGETS[@]:0:$(( (rep - 1) % ${#TARGETS[@]} ))}")
    for target in "${order[@]}"; do
        [ "$WARMUP" -gt 0 ] && run_wrk "$target" "$WARMUP" > /dev/null
        read -r rps cpu < <(run_wrk "$target" "$DURATION")
        log "rep $rep $target: $rps req/s, $cpu CPU us/request"
        RESULTS[$target]+="$rps "
        CPU[$target]+="$cpu "
        eval "RPS_${target//-/_}=$rps"
    done
    # Ratios within one repetition are steadier than ratios of medians on a shared machine.
    RATIOS+=" $(awk -v a="$RPS_strangler_tls" -v b="$RPS_nginx_tls" 'BEGIN { printf "%.3f", a / b }')"
    if [ "$PLAIN" = 1 ]; then
        PLAIN_RATIOS+=" $(awk -v a="$RPS_strangler_http" -v b="$RPS_nginx_http" 'BEGIN { printf "%.3f", a / b }')"
    fi
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo
printf '%-16s %12s %12s   %s\n' target "median req/s" "CPU us/req" "runs (req/s)"
for target in "${TARGETS[@]}"; do
    printf '%-16s %12.0f %12.1f   %s\n' "$target" "$(median <<< "${RESULTS[$target]}")" \
        "$(median <<< "${CPU[$target]}")" "${RESULTS[$target]}"
done
echo
printf 'strangler-tls / nginx-tls:   median %.2f  (per rep:%s)\n' "$(median <<< "$RATIOS")" "$RATIOS"
awk -v a="$(median <<< "${CPU[nginx-tls]}")" -v b="$(median <<< "${CPU[strangler-tls]}")" \
    'BEGIN { if (b > 0) printf "CPU per request, nginx-tls / strangler-tls: %.2f (1 = as efficient)\n", a / b }'
if [ "$PLAIN" = 1 ]; then
    printf 'strangler-http / nginx-http: median %.2f  (per rep:%s)\n' \
        "$(median <<< "$PLAIN_RATIOS")" "$PLAIN_RATIOS"
fi
