#!/usr/bin/env bash
# zerocache hit benchmark: `GET /cache?key=bench:hit` of the cacheprobe component (one
# zero:cache get per request, always a hit, answering the cached value) vs `GET /hello` of the
# hello app, on the same node, with the same wrk settings, in one run. Prints requests/second,
# p50 and p99 latency for both, and the ratio (target: at least 0.8). Not part of the tests.
#
# Usage: benches/cache.sh [DURATION_SECONDS] [CONNECTIONS]
# Needs: wrk (installed with apt-get if missing), curl.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNS="${2:-32}"
THREADS=2

bash scripts/setup.sh
if ! command -v wrk >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi
bash scripts/build-guests.sh >/dev/null
cargo build --release -q -p zero

ZERO=target/release/zero
HELLO=guest/target/wasm32-wasip2/release/hello.wasm
PROBE=guest/target/wasm32-wasip2/release/cacheprobe.wasm
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
listen = "127.0.0.1:18093"
[admin]
listen = "127.0.0.1:18094"
[[app]]
tenant = "bench"
name = "hello"
component = "$PWD/$HELLO"
routes = ["/hello"]
TOML

"$ZERO" serve --config "$WORK/zerocore.toml" >/dev/null 2>"$WORK/zero.log" & PIDS+=($!)
for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:18093/hello" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:18093/hello" >/dev/null || { cat "$WORK/zero.log" >&2; exit 1; }

# Development mode: the node wrote its Admin key into the data dir. Create a tenant and its
# owner, sign the probe to read the `bench:` keys only, deploy it, and store the value it reads.
API=http://127.0.0.1:18094
OWNER_DID=$("$ZERO" key new -o "$WORK/owner.key")
"$ZERO" tenant create bench --owner "$OWNER_DID" --key "$WORK/data/admin.key" \
    -o "$WORK/bench.ucan" --api "$API" >/dev/null
"$ZERO" sign "$PROBE" --key "$WORK/owner.key" --proof "$WORK/bench.ucan" \
    --cmd /cache/read --policy '[["like", ".key", "bench:*"]]' -o "$WORK/probe.zero.wasm" >/dev/null
"$ZERO" deploy "$WORK/probe.zero.wasm" --tenant bench --route /cache \
    --key "$WORK/owner.key" --proof "$WORK/bench.ucan" --api "$API" >/dev/null
"$ZERO" cache set bench bench:hit "Hello from the cache" \
    --key "$WORK/owner.key" --proof "$WORK/bench.ucan" --api "$API" >/dev/null
curl -fsS "http://127.0.0.1:18093/cache?key=bench:hit" | grep -q "Hello from the cache"

to_ms() { # wrk latency like 1.23ms / 456.00us / 1.02s -> milliseconds
    awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000} else print v }'
}
declare -A RPS P50 P99
for name in hello cache; do
    case $name in hello) path=/hello;; cache) path="/cache?key=bench:hit";; esac
    url="http://127.0.0.1:18093$path"
    wrk -t"$THREADS" -c"$CONNS" -d2s "$url" >/dev/null   # warm-up
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url")
    RPS[$name]=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    P50[$name]=$(to_ms "$(echo "$out" | awk '$1=="50%" {print $2}')")
    P99[$name]=$(to_ms "$(echo "$out" | awk '$1=="99%" {print $2}')")
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}')
    [ -n "$errors" ] && echo "$name: $errors"
done

printf '\nsame node, wrk -t%s -c%s -d%ss, one run, same machine\n' "$THREADS" "$CONNS" "$DURATION"
printf '%-26s %12s %10s %10s\n' app req/s p50_ms p99_ms
printf '%-26s %12s %10s %10s\n' "hello GET /hello" "${RPS[hello]}" "${P50[hello]}" "${P99[hello]}"
printf '%-26s %12s %10s %10s\n' "cacheprobe GET (hit)" "${RPS[cache]}" "${P50[cache]}" "${P99[cache]}"
awk -v c="${RPS[cache]}" -v h="${RPS[hello]}" \
    'BEGIN{ printf "\nratio cache hit / hello req/s: %.2f (target >= 0.8)\n", c/h }'
