#!/usr/bin/env bash
# Instructions per request through the node, counted by callgrind: stable on a busy machine
# (no timing involved), so a change that slows the hot path shows up as a number.
#
# Runs `hotpath` (benches/tools): a node in one process, on one thread, serving the hello
# component; callgrind collects only while it sends N requests over one keep-alive connection
# (client, hyper, zeroproxy, the core, wasmtime and the guest; start-up and 20 warm-up requests
# excluded), then prints instructions / N. `--apps` also counts the same request with 1,000
# apps deployed (the routing cost); `--annotate` prints the most expensive functions.
#
# Usage: benches/callgrind.sh [--requests N] [--apps] [--annotate] [--keep DIR]
# Needs: valgrind (installed with apt-get if missing).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

REQUESTS=200
APPS=0
ANNOTATE=0
KEEP=""
while [ $# -gt 0 ]; do
    case $1 in
    --requests) REQUESTS=$2; shift ;;
    --apps) APPS=1 ;;
    --annotate) ANNOTATE=1 ;;
    --keep) KEEP=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown argument \`$1\` (see --help)"; exit 2 ;;
    esac
    shift
done

ensure_valgrind
if [ -z "${BENCH_NO_BUILD:-}" ]; then # BENCH_NO_BUILD=1: use the binaries and guests as built
    bash scripts/setup.sh
    bash scripts/build-guests.sh >/dev/null
    cargo build --release -q -p zero-bench
fi

# count NAME APPS: one callgrind run; prints NAME and the instructions per request.
count() {
    local out="$WORK/callgrind.$1.out" total
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*hotpath*measured*' \
        --callgrind-out-file="$out" target/release/hotpath "$GUESTS/hello.wasm" --aot target/hotpath \
        --requests "$REQUESTS" --apps "$2" >/dev/null 2>"$WORK/valgrind.$1.log" ||
        { cat "$WORK/valgrind.$1.log" >&2; exit 1; }
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
    printf '%-34s %14s %12s\n' "$1" "$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN{ printf "%d", t / n }')" "$REQUESTS"
    if [ "$ANNOTATE" = 1 ]; then
        callgrind_annotate --inclusive=no "$out" 2>/dev/null | sed -n '1,60p' | cut -c1-160 >&2
    fi
    [ -n "$KEEP" ] && mkdir -p "$KEEP" && cp "$out" "$KEEP/"
    return 0
}

printf '%-34s %14s %12s\n' scenario instructions/req requests
count "hello, 1 app" 1
[ "$APPS" = 1 ] && count "hello, 1000 apps (last route)" 1000
exit 0
