# Shared setup of the benchmarks (sourced by benches/run.sh and benches/callgrind.sh; not run on
# its own): building, installing the peers and the load generator, starting and stopping
# servers, waiting for them, reading wrk's output and a process's peak memory, and the
# development-mode tenant that signed components are deployed into.
#
# Everything runs on loopback. Every process started here is killed on exit (bench_cleanup).

# Servers run as in production, without Rust backtraces: with RUST_BACKTRACE set, every error
# wasmtime creates (one per successful request) unwinds the stack (docs/performance.md).
unset RUST_BACKTRACE RUST_LIB_BACKTRACE

# The repository root; every path below is relative to it.
BENCH_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$BENCH_ROOT"

# The binaries (overridable, e.g. to compare a saved build with the current one).
ZERO=${ZERO:-target/release/zero}
NATIVE=${NATIVE:-target/release/native-hello}
FIRST_BYTE=${FIRST_BYTE:-target/release/first-byte}
GUESTS=guest/target/wasm32-wasip2/release
WASMTIME_VERSION=48.0.8

BENCH_PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zero-bench.XXXXXX")

bench_cleanup() {
    local p
    for p in "${BENCH_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${BENCH_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap bench_cleanup EXIT

say() { printf '%s\n' "$*" >&2; }

# wrk from apt when missing.
ensure_wrk() {
    command -v wrk >/dev/null && return 0
    say "installing wrk (apt-get)"
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
}

# valgrind from apt when missing.
ensure_valgrind() {
    command -v valgrind >/dev/null && return 0
    say "installing valgrind (apt-get)"
    (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null
}

# wasmtime-cli 48.0.8 from crates.io when missing: the runtime features of the default build
# (cranelift, pooling allocator, component model, wasi-http, GC, threads), without the tools
# `serve` does not use (explorer, wast, objdump, wizer, winch, pulley, wasi-nn/-tls/-keyvalue),
# so that the one-time build stays under a quarter of an hour on two cores.
ensure_wasmtime() {
    if command -v wasmtime >/dev/null && wasmtime --version | grep -q "$WASMTIME_VERSION"; then
        return 0
    fi
    say "installing wasmtime-cli $WASMTIME_VERSION with cargo install (once; takes a while)"
    cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --quiet --no-default-features \
        --features run,serve,cranelift,pooling-allocator,component-model,component-model-async,wasi-http,wat,parallel-compilation,backtrace,cache,config,logging,demangle,addr2line,gc,gc-drc,gc-null,threads
}

# The guests and the release binaries the benchmarks run (skipped with BENCH_NO_BUILD=1).
bench_build() {
    [ -n "${BENCH_NO_BUILD:-}" ] && return 0
    bash scripts/setup.sh
    bash scripts/build-guests.sh >/dev/null
    cargo build --release -q -p zero -p native-hello -p zero-bench
}

# The benchmark's servers die with it: on Linux, setpriv gives each the parent-death signal
# SIGKILL, so that a run killed where no trap can run (SIGKILL, a lost terminal) leaves no node
# behind to load the machine and skew every later figure.
DIE_WITH_BENCH=()
command -v setpriv >/dev/null && DIE_WITH_BENCH=(setpriv --pdeathsig KILL)
# And a run ended by SIGINT, SIGTERM or SIGHUP exits through bench_cleanup.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# start_bg LOG CMD ARGS...: starts a server in the background; its pid is in $LAST_PID.
start_bg() {
    local log=$1
    shift
    "${DIE_WITH_BENCH[@]}" "$@" >/dev/null 2>>"$log" &
    LAST_PID=$!
    BENCH_PIDS+=("$LAST_PID")
}

# stop PID: stops a server (SIGTERM, then waits for it).
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# wait_http URL [LOG]: waits up to 60 s until URL answers with a 2xx.
wait_http() {
    local i
    for i in $(seq 1 600); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    say "$1 did not answer within 60 s"
    [ -n "${2:-}" ] && cat "$2" >&2
    exit 1
}

# to_ms VALUE: wrk's latency (1.23ms, 456.00us, 1.02s) in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000} else print v }'
}

# wrk_run URL SECONDS [WRK ARGS...]: one wrk run (WRK_THREADS threads, WRK_CONNS connections) after a 1 s
# warm-up; sets W_RPS, W_P50, W_P99 (ms) and W_ERRORS (non-2xx answers and socket errors).
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-32}
wrk_run() {
    local out
    wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d1s "${@:3}" "$1" >/dev/null
    out=$(wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${2}s" --latency "${@:3}" "$1")
    W_RPS=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    W_P50=$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")
    W_P99=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
    W_ERRORS=$(echo "$out" | awk '/Non-2xx|Socket errors/ {printf "%s; ", $0}')
}

# peak_rss_mib PID: the process's peak resident memory (VmHWM) in MiB.
peak_rss_mib() {
    awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "-"
}

# rss_mib PID: the process's current resident memory (VmRSS) in MiB.
rss_mib() {
    awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "-"
}

# reset_peak_rss PID: sets the process's VmHWM back to its current RSS (Linux clear_refs 5), so
# that the next peak_rss_mib reads the peak of what follows only.
reset_peak_rss() {
    echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true
}

# median VALUES...: the median (the lower middle for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{ if (NR==0) print "-"; else print v[int((NR+1)/2)] }'
}

# max VALUES...
max() {
    printf '%s\n' "$@" | sort -g | tail -n1
}

# node_config FILE DATA_DIR HTTP_PORT ADMIN_PORT [EXTRA_TOML]: a node configuration on loopback
# with warn-level logs (an access line per request would measure the terminal, not the node).
node_config() {
    cat >"$1" <<TOML
[node]
data_dir = "$2"
[log]
level = "warn"
[http]
listen = "127.0.0.1:$3"
[admin]
listen = "127.0.0.1:$4"
${5:-}
TOML
}

# dev_tenant API DATA_DIR TENANT: in development mode the node wrote its Admin key into the data
# dir; this creates TENANT with a new owner, whose key and chain are $WORK/TENANT.key and
# $WORK/TENANT.ucan.
dev_tenant() {
    local owner
    owner=$("$ZERO" key new -o "$WORK/$3.key" | tail -n1)
    "$ZERO" tenant create "$3" --owner "$owner" --key "$2/admin.key" \
        -o "$WORK/$3.ucan" --api "$1" >/dev/null
}

# sign_deploy API TENANT COMPONENT ROUTE CMD POLICY: signs COMPONENT for TENANT with one grant
# (CMD scoped by POLICY) and deploys it at ROUTE.
sign_deploy() {
    local name
    name=$(basename "$3" .wasm)
    "$ZERO" sign "$3" --key "$WORK/$2.key" --proof "$WORK/$2.ucan" \
        --cmd "$5" --policy "$6" -o "$WORK/$name.zero.wasm" >/dev/null
    "$ZERO" deploy "$WORK/$name.zero.wasm" --tenant "$2" --route "$4" \
        --key "$WORK/$2.key" --proof "$WORK/$2.ucan" --api "$1" >/dev/null
}

# wait_up URL [LOG]: waits up to 60 s until something answers at URL (any status).
wait_up() {
    local i
    for i in $(seq 1 600); do
        curl -sS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    say "nothing answered at $1 within 60 s"
    [ -n "${2:-}" ] && cat "$2" >&2
    exit 1
}
