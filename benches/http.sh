#!/usr/bin/env bash
# HTTP hello-world benchmark: the zerocore node vs `wasmtime serve` 48 (same component) vs a
# native hyper server, on this machine, with the same wrk settings, in one run. Prints
# requests/second, p50 and p99 latency for each, and the ratios. Not part of the tests.
#
# Usage: benches/http.sh [DURATION_SECONDS] [CONNECTIONS]
# Needs: wrk (installed with apt-get if missing), wasmtime-cli 48.0.8 (cargo install if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS="${2:-32}"
THREADS=2

bash scripts/setup.sh
if ! command -v wrk >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
if ! command -v wasmtime >/dev/null || ! wasmtime --version | grep -q '48\.0\.8'; then
    echo "installing wasmtime-cli 48.0.8 (takes a while, once)"
    cargo install wasmtime-cli --version 48.0.8 --locked --quiet
fi
bash scripts/build-guests.sh >/dev/null
cargo build --release -q -p zero -p native-hello

HELLO=guest/target/wasm32-wasip2/release/hello.wasm
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/zerocore.toml" <<TOML
[node]
data_dir = "$WORK/data"
[log]
level = "warn"
[http]
listen = "127.0.0.1:18081"
[[app]]
tenant = "bench"
name = "hello"
component = "$PWD/$HELLO"
routes = ["/"]
TOML

target/release/zero serve --config "$WORK/zerocore.toml" >/dev/null 2>"$WORK/zero.log" & PIDS+=($!)
wasmtime serve -Scli --addr 127.0.0.1:18082 "$HELLO" >/dev/null 2>"$WORK/wasmtime.log" & PIDS+=($!)
target/release/native-hello 127.0.0.1:18083 2>/dev/null & PIDS+=($!)

wait_up() {
    for _ in $(seq 1 600); do
        if curl -fsS "http://127.0.0.1:$1/" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2; cat "$WORK"/*.log >&2; exit 1
}
wait_up 18081; wait_up 18082; wait_up 18083

to_ms() { # wrk latency like 1.23ms / 456.00us / 1.02s -> milliseconds
    awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000} else print v }'
}
declare -A RPS P50 P99
for name in zero wasmtime native; do
    case $name in zero) port=18081;; wasmtime) port=18082;; native) port=18083;; esac
    wrk -t"$THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null   # warm-up
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/")
    RPS[$name]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    P50[$name]=$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")
    P99[$name]=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
    [ -n "$errors" ] && echo "$name: $errors"
done

printf '\nhello world, wrk -t%s -c%s -d%ss, one run, same machine\n' "$THREADS" "$CONNS" "$DURATION"
printf '%-10s %12s %10s %10s\n' server req/s p50_ms p99_ms
for name in zero wasmtime native; do
    printf '%-10s %12s %10s %10s\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}"
done
awk -v z="${RPS[zero]}" -v w="${RPS[wasmtime]}" -v n="${RPS[native]}" \
    'BEGIN{ printf "\nratio zero/wasmtime-serve req/s: %.2f\nratio zero/native req/s:         %.2f\n", z/w, z/n }'
