#!/usr/bin/env bash
# All of zerocore's benchmarks in one run, against their peers on this machine, printed as one
# table (see docs/performance.md for a recorded run and what the figures mean):
#
#   hello     the hello component on the node vs `wasmtime serve -Scli` 48 (same component),
#             plain and tuned with keep-resident pooling, vs a native hyper hello server
#   p3        the same hello built for WASI 0.3 (wasi:http/handler@0.3, hello_p3.wasm) on a node
#             vs `wasmtime serve -Scli` 48 with that component
#   https     the hello component on a node serving TLS (rustls, a self-signed P-256 certificate
#             made with openssl, HTTP/1.1 keep-alive) vs the cleartext hello node
#   todo      a zerodb point read through the todo example (GET /todos/1), vs hello on the node
#   cache     a zerocache hit through the cacheprobe component, vs hello on the node
#   idle      1,000 deployed idle apps on one node: its RSS, and a request to the last-routed
#             app vs hello on a node with one app (the per-request routing cost)
#   static    a 100 MiB file from zerofs through the static-site component, vs `cat`
#   deploy    deploy of a never-seen ~90 KB component -> first byte (Winch code, tiered
#             compilation), and -> optimized code serving (its Cranelift artifact is written)
#   restart   node restart -> first byte of a deployed app (loaded from its AOT artifact)
#
# Load: wrk with 1 thread and 32 connections (WRK_THREADS, WRK_CONNS), a 1 s warm-up before
# each measurement. Rounds are interleaved (every server once per round, in turn) so that noise
# from other work on the machine spreads over all of them; the table shows medians over rounds,
# and each ratio is the median of the ratios measured within the same round.
#
# Usage: benches/run.sh [--quick] [--rounds N] [--duration S] [--conns N] [--size MIB] [--only LIST]
#   --quick       1 round of 2 s, a 20 MiB file, 200 idle apps (for development)
#   --only LIST   comma-separated scenarios among hello,p3,https,todo,cache,idle,static,deploy,restart
# Defaults: 3 rounds of 5 s, 100 MiB, 1,000 apps, every scenario.
# Needs (installed when missing): wrk (apt-get), wasmtime-cli 48.0.8 (cargo install, for hello;
# BENCH_NO_WASMTIME=1 leaves those two peers out).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

ROUNDS=3
DURATION=5
SIZE_MIB=100
IDLE_APPS=1000
ONLY="hello,p3,https,todo,cache,idle,static,deploy,restart"
while [ $# -gt 0 ]; do
    case $1 in
    --quick) ROUNDS=1 DURATION=2 SIZE_MIB=20 IDLE_APPS=200 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --conns) WRK_CONNS=$2; shift ;;
    --size) SIZE_MIB=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown argument \`$1\` (see --help)"; exit 2 ;;
    esac
    shift
done
for s in ${ONLY//,/ }; do
    case $s in hello | p3 | https | todo | cache | idle | static | deploy | restart) ;;
    *) say "unknown scenario \`$s\` in --only (hello, p3, https, todo, cache, idle, static, deploy, restart)"; exit 2 ;;
    esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }
# The node's hello runs whenever a scenario is measured against it.
want hello || want https || want todo || want cache || want idle && NODE_HELLO=1 || NODE_HELLO=0

ensure_wrk
# BENCH_NO_WASMTIME=1 leaves the two `wasmtime serve` peers out (the other rows are unchanged).
WASMTIME_PEERS=1
[ -n "${BENCH_NO_WASMTIME:-}" ] && WASMTIME_PEERS=0
{ want hello || want p3; } && [ "$WASMTIME_PEERS" = 1 ] && ensure_wasmtime
say "building (release) ..."
bench_build

HELLO=$PWD/$GUESTS/hello.wasm
HELLO_P3=$PWD/$GUESTS/hello_p3.wasm
declare -A PID URL
declare -A RPS P50 P99 RATIO # space-separated values, one per round

# ---- servers ---------------------------------------------------------------------------------
if [ "$NODE_HELLO" = 1 ]; then
    node_config "$WORK/a.toml" "$WORK/a" 18301 18302 "
[[app]]
tenant = \"bench\"
name = \"hello\"
component = \"$HELLO\"
routes = [\"/hello\"]"
    start_bg "$WORK/a.log" "$ZERO" serve --config "$WORK/a.toml"
    PID[zero]=$LAST_PID URL[zero]=http://127.0.0.1:18301/hello
    wait_http "${URL[zero]}" "$WORK/a.log"
    for _ in $(seq 1 50); do curl -fsS -o /dev/null "${URL[zero]}"; done
    RSS_ONE_APP=$(rss_mib "${PID[zero]}")
fi
if want todo || want cache; then
    API=http://127.0.0.1:18302
    dev_tenant "$API" "$WORK/a" bench
fi
if want todo; then
    sign_deploy "$API" bench "$GUESTS/todo.wasm" /todos /db '[["==", ".db", "todo"]]'
    curl -fsS -XPOST http://127.0.0.1:18301/todos -d '{"title": "benchmark"}' >/dev/null
    URL[todo]=http://127.0.0.1:18301/todos/1 PID[todo]=${PID[zero]}
    curl -fsS "${URL[todo]}" | grep -q benchmark
fi
if want cache; then
    sign_deploy "$API" bench "$GUESTS/cacheprobe.wasm" /cache /cache/read '[["like", ".key", "bench:*"]]'
    "$ZERO" cache set bench bench:hit "Hello from the cache" \
        --key "$WORK/bench.key" --proof "$WORK/bench.ucan" --api "$API" >/dev/null
    URL[cache]="http://127.0.0.1:18301/cache?key=bench:hit" PID[cache]=${PID[zero]}
    curl -fsS "${URL[cache]}" | grep -q "Hello from the cache"
fi
if want hello && [ "$WASMTIME_PEERS" = 1 ]; then
    start_bg "$WORK/wasmtime.log" wasmtime serve -Scli --addr 127.0.0.1:18303 "$HELLO"
    PID[wasmtime]=$LAST_PID URL[wasmtime]=http://127.0.0.1:18303/hello
    start_bg "$WORK/tuned.log" wasmtime serve -Scli --addr 127.0.0.1:18304 \
        -O pooling-memory-keep-resident=2097152,pooling-table-keep-resident=524288 "$HELLO"
    PID[tuned]=$LAST_PID URL[tuned]=http://127.0.0.1:18304/hello
    for s in wasmtime tuned; do wait_http "${URL[$s]}" "$WORK/$s.log"; done
fi
if want p3; then
    # Its own node, so that the hello node's figures (its RSS with one app) do not change.
    node_config "$WORK/p.toml" "$WORK/p" 18308 18309 "
[[app]]
tenant = \"bench\"
name = \"hello-p3\"
component = \"$HELLO_P3\"
routes = [\"/hello\"]"
    start_bg "$WORK/p.log" "$ZERO" serve --config "$WORK/p.toml"
    PID[p3zero]=$LAST_PID URL[p3zero]=http://127.0.0.1:18308/hello
    wait_http "${URL[p3zero]}" "$WORK/p.log"
    for _ in $(seq 1 50); do curl -fsS -o /dev/null "${URL[p3zero]}"; done
    if [ "$WASMTIME_PEERS" = 1 ]; then
        start_bg "$WORK/p3wasmtime.log" wasmtime serve -Scli --addr 127.0.0.1:18310 "$HELLO_P3"
        PID[p3wasmtime]=$LAST_PID URL[p3wasmtime]=http://127.0.0.1:18310/hello
        wait_http "${URL[p3wasmtime]}" "$WORK/p3wasmtime.log"
    fi
fi
if want https; then
    # The same hello on its own node serving TLS, with a self-signed certificate for localhost.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
    cat >"$WORK/t.toml" <<TOML
[node]
data_dir = "$WORK/t"
[log]
level = "warn"
[http]
listen = "127.0.0.1:18313"
tls_cert = "$WORK/tls.crt"
tls_key = "$WORK/tls.key"
[admin]
listen = "127.0.0.1:18314"
[[app]]
tenant = "bench"
name = "hello"
component = "$HELLO"
routes = ["/hello"]
TOML
    start_bg "$WORK/t.log" "$ZERO" serve --config "$WORK/t.toml"
    PID[https]=$LAST_PID URL[https]=https://127.0.0.1:18313/hello
    for _ in $(seq 1 600); do curl -kfsS -o /dev/null "${URL[https]}" 2>/dev/null && break; sleep 0.1; done
    curl -kfsS -o /dev/null "${URL[https]}" || { cat "$WORK/t.log" >&2; exit 1; }
    for _ in $(seq 1 50); do curl -kfsS -o /dev/null "${URL[https]}"; done
fi
if want hello; then
    start_bg "$WORK/native.log" "$NATIVE" 127.0.0.1:18305
    PID[native]=$LAST_PID URL[native]=http://127.0.0.1:18305/hello
    wait_http "${URL[native]}" "$WORK/native.log"
fi
if want idle; then
    {
        for i in $(seq 0 $((IDLE_APPS - 1))); do
            printf '[[app]]\ntenant = "idle"\nname = "app%d"\ncomponent = "%s"\nroutes = ["/app%d"]\n' \
                "$i" "$HELLO" "$i"
        done
    } >"$WORK/idle-apps.toml"
    node_config "$WORK/c.toml" "$WORK/c" 18306 18307 "$(cat "$WORK/idle-apps.toml")"
    t0=$(date +%s%N)
    start_bg "$WORK/c.log" "$ZERO" serve --config "$WORK/c.toml"
    PID[idle]=$LAST_PID URL[idle]=http://127.0.0.1:18306/app$((IDLE_APPS - 1))
    IDLE_START_MS=$("$FIRST_BYTE" "${URL[idle]}" "$t0" 120000)
    for _ in $(seq 1 50); do curl -fsS -o /dev/null "${URL[idle]}"; done
    RSS_IDLE=$(rss_mib "${PID[idle]}")
fi
if want static || want deploy || want restart; then
    cat >"$WORK/b.toml" <<TOML
[node]
data_dir = "$WORK/b"
[log]
level = "warn"
[http]
listen = "127.0.0.1:18311"
max_response_body = "1 GiB"
[admin]
listen = "127.0.0.1:18312"
[limits]
cpu_time_ms = 60000
wall_time_ms = 120000
TOML
    start_bg "$WORK/b.log" "$ZERO" serve --config "$WORK/b.toml"
    PID[site]=$LAST_PID
    BAPI=http://127.0.0.1:18312
    wait_up "$BAPI/" "$WORK/b.log"
    dev_tenant "$BAPI" "$WORK/b" site
    echo '<h1>hello</h1>' >"$WORK/index.html"
    "$ZERO" fs put "$WORK/index.html" site:/site/index.html -p \
        --key "$WORK/site.key" --proof "$WORK/site.ucan" --api "$BAPI" >/dev/null
    sign_deploy "$BAPI" site "$GUESTS/static_site.wasm" / /fs/read '[["==", ".path", "/site"]]'
    URL[site]=http://127.0.0.1:18311/index.html
    curl -fsS "${URL[site]}" | grep -q hello
fi
if want static; then
    head -c "$((SIZE_MIB << 20))" /dev/urandom >"$WORK/big.bin"
    "$ZERO" fs put "$WORK/big.bin" site:/site/big.bin \
        --key "$WORK/site.key" --proof "$WORK/site.ucan" --api "$BAPI" >/dev/null
    curl -fsS -o "$WORK/got.bin" http://127.0.0.1:18311/big.bin
    cmp -s "$WORK/got.bin" "$WORK/big.bin" || { say "served bytes differ from the file"; exit 1; }
    rm -f "$WORK/got.bin"
    cat "$WORK/big.bin" >/dev/null
fi

# ---- rounds ----------------------------------------------------------------------------------
add() { eval "$1[\$2]+=\" \$3\""; } # add ARRAY KEY VALUE
measure() {                         # measure KEY: one wrk run on URL[KEY]
    wrk_run "${URL[$1]}" "$DURATION"
    [ -n "$W_ERRORS" ] && say "  $1: $W_ERRORS"
    add RPS "$1" "$W_RPS"
    add P50 "$1" "$W_P50"
    add P99 "$1" "$W_P99"
    ROUND_RPS[$1]=$W_RPS
}
ratio() { # ratio NAME A B: A/B of this round
    add RATIO "$1" "$(awk -v a="$2" -v b="$3" 'BEGIN{ printf "%.3f", (b > 0 ? a / b : 0) }')"
}
declare -A ROUND_RPS PEAK
ms() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.2f", (b - a) / 1e6 }'; }

for round in $(seq 1 "$ROUNDS"); do
    say "round $round/$ROUNDS"
    if [ "$NODE_HELLO" = 1 ]; then
        for s in zero wasmtime tuned native https todo cache idle; do
            [ -n "${URL[$s]:-}" ] || continue
            [ -n "${PID[$s]:-}" ] && reset_peak_rss "${PID[$s]}"
            measure "$s"
            [ -n "${PID[$s]:-}" ] && add PEAK "$s" "$(peak_rss_mib "${PID[$s]}")"
        done
        if want hello && [ "$WASMTIME_PEERS" = 1 ]; then
            ratio hello/wasmtime "${ROUND_RPS[zero]}" "${ROUND_RPS[wasmtime]}"
            ratio hello/tuned "${ROUND_RPS[zero]}" "${ROUND_RPS[tuned]}"
        fi
        want hello && ratio hello/native "${ROUND_RPS[zero]}" "${ROUND_RPS[native]}"
        want https && ratio https/hello "${ROUND_RPS[https]}" "${ROUND_RPS[zero]}"
        want todo && ratio todo/hello "${ROUND_RPS[todo]}" "${ROUND_RPS[zero]}"
        want cache && ratio cache/hello "${ROUND_RPS[cache]}" "${ROUND_RPS[zero]}"
        want idle && ratio idle/hello "${ROUND_RPS[idle]}" "${ROUND_RPS[zero]}"
    fi
    if want p3; then
        for s in p3zero p3wasmtime; do
            [ -n "${URL[$s]:-}" ] || continue
            reset_peak_rss "${PID[$s]}"
            measure "$s"
            add PEAK "$s" "$(peak_rss_mib "${PID[$s]}")"
        done
        [ "$WASMTIME_PEERS" = 1 ] && ratio p3/wasmtime "${ROUND_RPS[p3zero]}" "${ROUND_RPS[p3wasmtime]}"
    fi
    if want static; then
        reset_peak_rss "${PID[site]}"
        zt=$(curl -fsS -o /dev/null -w '%{time_total}' http://127.0.0.1:18311/big.bin)
        add PEAK static "$(peak_rss_mib "${PID[site]}")"
        t0=$(date +%s%N)
        cat "$WORK/big.bin" >/dev/null
        ct=$(ms "$t0" "$(date +%s%N)")
        zmbs=$(awk -v n="$SIZE_MIB" -v t="$zt" 'BEGIN{ printf "%.1f", n / t }')
        cmbs=$(awk -v n="$SIZE_MIB" -v t="$ct" 'BEGIN{ printf "%.1f", n / (t / 1000) }')
        add RPS static "$zmbs"
        add RPS cat "$cmbs"
        ratio static/cat "$zmbs" "$cmbs"
    fi
    if want deploy; then
        # A component never seen before (a nonce in a custom section), so that it is compiled.
        nonce=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
        { cat "$GUESTS/static_site.wasm"; printf '\x00\x1c\x0bbench-nonce%s' "$nonce"; } >"$WORK/d$round.wasm"
        "$ZERO" sign "$WORK/d$round.wasm" --key "$WORK/site.key" --proof "$WORK/site.ucan" \
            --cmd /fs/read --policy '[["==", ".path", "/site"]]' -o "$WORK/d$round.zero.wasm" >/dev/null
        artifacts=$(find "$WORK/b/aot" -name '*.cwasm' 2>/dev/null | wc -l)
        t0=$(date +%s%N)
        "$ZERO" deploy "$WORK/d$round.zero.wasm" --tenant site --route "/d$round" \
            --key "$WORK/site.key" --proof "$WORK/site.ucan" --api "$BAPI" >/dev/null
        first=$("$FIRST_BYTE" "http://127.0.0.1:18311/d$round/index.html" "$t0")
        add RPS deploy "$first"
        # Tiered compilation: the first byte came from Winch's code; Cranelift's is ready (and
        # serving) when its artifact appears.
        for _ in $(seq 1 3000); do
            [ "$(find "$WORK/b/aot" -name '*.cwasm' 2>/dev/null | wc -l)" -gt "$artifacts" ] && break
            sleep 0.01
        done
        optimized=$(ms "$t0" "$(date +%s%N)")
        add RPS optimized "$optimized"
        say "  deploy -> first byte $first ms, -> optimized code $optimized ms"
    fi
    if want restart; then
        stop "${PID[site]}"
        t0=$(date +%s%N)
        start_bg "$WORK/b.log" "$ZERO" serve --config "$WORK/b.toml"
        PID[site]=$LAST_PID
        first=$("$FIRST_BYTE" "${URL[site]}" "$t0")
        add RPS restart "$first"
        say "  restart -> first byte $first ms"
    fi
done

# ---- table -----------------------------------------------------------------------------------
med() { local v; eval "v=\${$1[\$2]:-}"; median $v; }
worst() { local v; eval "v=\${$1[\$2]:-}"; max $v; }
row() { printf '%-44s %10s %8s %8s %10s\n' "$@"; }
echo
echo "zerocore benchmarks: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r)"
echo "wrk -t$WRK_THREADS -c$WRK_CONNS, ${DURATION} s x $ROUNDS interleaved rounds; medians over rounds"
echo
row scenario "req/s" p50_ms p99_ms peak_MiB
for s in zero wasmtime tuned native https p3zero p3wasmtime todo cache idle; do
    [ -n "${RPS[$s]:-}" ] || continue
    case $s in
    zero) label="hello: zerocore" ;;
    wasmtime) label="hello: wasmtime serve -Scli" ;;
    tuned) label="hello: wasmtime serve -Scli, keep-resident" ;;
    native) label="hello: native hyper" ;;
    https) label="hello over HTTPS (rustls, h1): zerocore" ;;
    p3zero) label="hello WASI 0.3: zerocore" ;;
    p3wasmtime) label="hello WASI 0.3: wasmtime serve -Scli" ;;
    todo) label="todo point read (zerodb): zerocore" ;;
    cache) label="cache hit (zerocache): zerocore" ;;
    idle) label="hello among $IDLE_APPS apps: zerocore" ;;
    esac
    row "$label" "$(med RPS $s)" "$(med P50 $s)" "$(med P99 $s)" "$(worst PEAK $s)"
done
if want static; then
    row "${SIZE_MIB} MiB file, zerofs->static-site->curl" "$(med RPS static) MiB/s" "" "" "$(worst PEAK static)"
    row "${SIZE_MIB} MiB file, cat > /dev/null" "$(med RPS cat) MiB/s" "" "" ""
fi
want deploy && row "deploy -> first byte (~90 KB, new code)" "$(med RPS deploy) ms" "" "" ""
want deploy && row "deploy -> optimized code serving" "$(med RPS optimized) ms" "" "" ""
want restart && row "restart -> first byte (AOT artifact)" "$(med RPS restart) ms" "" "" ""
if want idle; then
    row "node RSS: 1 app / $IDLE_APPS apps (MiB)" "${RSS_ONE_APP:--} / $RSS_IDLE" "" "" ""
    row "node start with $IDLE_APPS apps -> first byte" "$IDLE_START_MS ms" "" "" ""
fi
echo
printf '%-44s %10s %10s\n' "ratio (median of per-round ratios)" value target
t() { [ -n "${RATIO[$1]:-}" ] && printf '%-44s %10s %10s\n' "$2" "$(med RATIO "$1")" "$3" || true; }
t hello/wasmtime "hello: zerocore / wasmtime serve" ">= 2.0"
t hello/tuned "hello: zerocore / wasmtime serve tuned" ">= 1.5"
t hello/native "hello: zerocore / native hyper" ">= 0.40"
t https/hello "hello: HTTPS / cleartext, same node" "report"
t p3/wasmtime "hello WASI 0.3: zerocore / wasmtime serve" "report"
[ -n "${P99[zero]:-}" ] && printf '%-44s %10s %10s\n' "hello: zerocore p99 ms (worst round)" "$(worst P99 zero)" "<= 2"
t todo/hello "todo point read / hello" ">= 0.8"
t cache/hello "cache hit / hello" ">= 0.8"
t static/cat "${SIZE_MIB} MiB file: zerocore / cat" ">= 0.5"
t idle/hello "hello among $IDLE_APPS apps / hello" "flat: 1.0"
if want idle; then
    awk -v a="${RSS_ONE_APP:-0}" -v b="$RSS_IDLE" -v n="$IDLE_APPS" \
        'BEGIN{ if (a > 0) printf "%-44s %10.1f %10s\n", "RSS per idle app (KiB)", (b - a) * 1024 / (n - 1), "report" }'
fi
want deploy && printf '%-44s %10s %10s\n' "deploy -> first byte ms" "$(med RPS deploy)" "<= 50"
want restart && printf '%-44s %10s %10s\n' "restart -> first byte ms" "$(med RPS restart)" "<= 5"
exit 0
