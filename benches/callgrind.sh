#!/usr/bin/env bash
# Instructions per request through the node, counted by callgrind: stable on a busy machine
# (no timing involved), so a change that slows the hot path shows up as a number.
#
# Runs `hotpath` (benches/tools): a node in one process, on one thread, serving one component;
# callgrind collects only while it sends N requests over one keep-alive connection (client,
# hyper, zeroproxy, the core, wasmtime and the guest; start-up and 20 warm-up requests
# excluded), then prints instructions / N. `--apps` also counts the hello request with 1,000
# apps deployed (the routing cost); `--annotate` prints the most expensive functions.
#
# `--scenario LIST` (comma-separated, default hello) chooses what one request is:
#   hello   GET of the hello component (WASI 0.2), configured as an [[app]]
#   todo    GET /todos/1 of the todo example: a zerodb point read. todo.wasm is signed with
#           `/db` on database `todo` by a new tenant's owner and deployed through the
#           management API (as `zero sign` and `zero deploy` do); one POST seeds the row
#   p3      GET of the same hello built for WASI 0.3 (hello_p3.wasm, wasi:http/handler@0.3)
#           under the default limits (a fresh instance per request)
#
# Usage: benches/callgrind.sh [--scenario LIST] [--requests N] [--apps] [--annotate] [--keep DIR]
# Needs: valgrind (installed with apt-get if missing). HOTPATH=FILE runs that hotpath binary
# instead of target/release/hotpath (with BENCH_NO_BUILD=1: e.g. one built in another profile).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

REQUESTS=200
APPS=0
ANNOTATE=0
KEEP=""
SCENARIOS=hello
while [ $# -gt 0 ]; do
    case $1 in
    --requests) REQUESTS=$2; shift ;;
    --apps) APPS=1 ;;
    --annotate) ANNOTATE=1 ;;
    --keep) KEEP=$2; shift ;;
    --scenario) SCENARIOS=$2; shift ;;
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

HOTPATH=${HOTPATH:-target/release/hotpath}

for s in ${SCENARIOS//,/ }; do
    case $s in hello | todo | p3) ;;
    *) say "unknown scenario \`$s\` in --scenario (hello, todo, p3)"; exit 2 ;;
    esac
done

# count NAME HOTPATH_ARGS...: one callgrind run; prints NAME and the instructions per request.
count() {
    local name=$1 out="$WORK/callgrind.$1.out" total
    shift
    # Once natively first, so that the compiled component is in the AOT directory and the
    # measured run under valgrind loads it instead of compiling it.
    "$HOTPATH" "$@" --aot target/hotpath --requests 1 >/dev/null 2>"$WORK/prime.log" ||
        { cat "$WORK/prime.log" >&2; exit 1; }
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*hotpath*measured*' \
        --callgrind-out-file="$out" "$HOTPATH" "$@" --aot target/hotpath \
        --requests "$REQUESTS" >/dev/null 2>"$WORK/valgrind.$name.log" ||
        { cat "$WORK/valgrind.$name.log" >&2; exit 1; }
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
    printf '%-34s %14s %12s\n' "$name" "$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN{ printf "%d", t / n }')" "$REQUESTS"
    if [ "$ANNOTATE" = 1 ]; then
        callgrind_annotate --inclusive=no "$out" 2>/dev/null | sed -n '1,60p' | cut -c1-160 >&2
    fi
    [ -n "$KEEP" ] && mkdir -p "$KEEP" && cp "$out" "$KEEP/"
    return 0
}

printf '%-34s %14s %12s\n' scenario instructions/req requests
want_scenario() { [[ ",$SCENARIOS," == *",$1,"* ]]; }
if want_scenario hello; then
    count "hello, 1 app" "$GUESTS/hello.wasm" --apps 1
    [ "$APPS" = 1 ] && count "hello, 1000 apps (last route)" "$GUESTS/hello.wasm" --apps 1000
fi
want_scenario todo && count "todo point read (zerodb)" "$GUESTS/todo.wasm" \
    --deploy /todos --grant /db '[["==", ".db", "todo"]]' \
    --post /todos '{"title": "benchmark"}' --path /todos/1
want_scenario p3 && count "hello WASI 0.3" "$GUESTS/hello_p3.wasm" --apps 1
exit 0
