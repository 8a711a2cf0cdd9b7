# lib.sh - what the benchmark scripts share; sourced by them, never run on its own.
#
# Before sourcing, a script sets NAME (how its messages begin). It then has:
#   die MESSAGE / log MESSAGE      stop with an error / say what happens, on stderr
#   port_free PORT                 nothing listens on 127.0.0.1:PORT
#   ensure_ports_free PORT...      die naming the first port in use
#   work_dir PREFIX                make $WORK; it and every process in $PIDS go at exit
#                                  (KEEP=1 keeps $WORK and says where)
#   forget PID                     a process that exited is no longer ours to stop
#   wait_hello URL WHAT LOG [N]    wait (N tenths of a second, default 100) until URL
#                                  answers "hello"; else show LOG's tail and die
#   build_strangler                cargo build --release -p strangler unless SKIP_BUILD=1,
#                                  then check that $BIN exists
#   build_bench_upstream           build the shared harness's origin into $ORIGIN_BIN
#                                  (/tmp/peers-bench-target) when it is missing
#   route_files DIR PORT           write DIR/passthrough.yaml (`routes: []`),
#                                  DIR/hooks.yaml (one route whose on_response hook,
#                                  DIR/header.lua, sets x-bench: 1) and DIR/route.yaml
#                                  (the same route without its hook: what the hook is
#                                  measured against, as nginx's is against the same
#                                  location without it) for an origin on PORT
# It reads ROOT (the repository) and sets BIN (the strangler binary: STRANGLER_BIN, else
# the release build of CARGO_TARGET_DIR or target/), ORIGIN_BIN (unless set) and PIDS.

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
BIN=${STRANGLER_BIN:-$TARGET_DIR/release/strangler}
ORIGIN_BIN=${ORIGIN_BIN:-/tmp/peers-bench-target/release/bench-upstream}

die() { echo "$NAME: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $NAME: $*" >&2; }

port_free() { [ -z "$(ss -Hltn "sport = :$1" 2> /dev/null)" ]; }
ensure_ports_free() {
    local port
    for port in "$@"; do
        port_free "$port" || die "port $port is already in use (another benchmark running?)"
    done
}

PIDS=()
WORK=
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2> /dev/null || true; done
    [ -n "$WORK" ] || return 0
    if [ "${KEEP:-0}" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
work_dir() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    trap cleanup EXIT
}
forget() {
    local kept=() pid
    for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    PIDS=("${kept[@]}")
}

wait_hello() {
    local i
    for i in $(seq 1 "${4:-100}"); do
        [ "$(curl -s --max-time 2 "$1" 2> /dev/null)" = hello ] && return 0
        sleep 0.1
    done
    tail -n 20 "$3" >&2
    die "$2 does not answer 'hello' at $1"
}

build_strangler() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        log "cargo build --release -p strangler"
        (cd "$ROOT" && cargo build --release -p strangler) || die "cargo build failed"
    fi
    [ -x "$BIN" ] || die "no binary at $BIN"
}

build_bench_upstream() {
    local source=$ROOT/../shared/bench/upstream
    [ -x "$ORIGIN_BIN" ] && return 0
    [ -d "$source" ] || die "no origin at $ORIGIN_BIN and no sources at $source"
    log "building bench-upstream (cargo build --release, into /tmp/peers-bench-target)"
    (cd "$source" && CARGO_TARGET_DIR=/tmp/peers-bench-target cargo build --release -q) \
        || die "cargo build of the origin failed"
}

route_files() {
    cat > "$1/passthrough.yaml" << EOF
upstreams:
  origin: { url: "http://127.0.0.1:$2" }
default: origin
routes: []
EOF
    cat > "$1/route.yaml" << EOF
upstreams:
  origin: { url: "http://127.0.0.1:$2" }
default: origin
routes:
  - name: hooked
    match: { path_prefix: / }
    to: origin
EOF
    { cat "$1/route.yaml"; echo '    hooks: [header.lua]'; } > "$1/hooks.yaml"
    echo 'function on_response(req, res) res.headers:set("x-bench", "1") end' > "$1/header.lua"
}
