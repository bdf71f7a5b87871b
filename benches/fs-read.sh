#!/usr/bin/env bash
# File-read benchmark: a 100 MiB file stored in zerofs, served through the static-site component
# (wasi:filesystem over zerofs -> guest -> wasi:http response) and fetched with curl, vs `cat` of
# a 100 MiB file on local disk to /dev/null. One run each (after one warm-up read of each, so both
# come from the page cache); prints MiB/s for both and the ratio. Release build. Not a test.
#
# Usage: benches/fs-read.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB="${1:-100}"

bash scripts/build-guests.sh >/dev/null
cargo build --release -q -p zero -p zerofs --bin zero --example put

WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ZERO=target/release/zero
API=http://127.0.0.1:18191

cat > "$WORK/zerocore.toml" <<TOML
[node]
data_dir = "$WORK/data"
[log]
level = "warn"
[admin]
listen = "127.0.0.1:18191"
[http]
listen = "127.0.0.1:18181"
max_response_body = "1 GiB"
[limits]
cpu_time_ms = 60000
wall_time_ms = 120000
TOML

start() {
    "$ZERO" serve --config "$WORK/zerocore.toml" >/dev/null 2>>"$WORK/zero.log" & PID=$!
    for _ in $(seq 1 600); do
        curl -s -o /dev/null "$API/" && return 0
        sleep 0.1
    done
    echo "the node did not start; log:" >&2; cat "$WORK/zero.log" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }

# A tenant and an owner key, the component signed with /fs/read on /site.
start
OWNER=$("$ZERO" key new -o "$WORK/owner.key" | tail -n1)
"$ZERO" tenant create bench --owner "$OWNER" --key "$WORK/data/admin.key" -o "$WORK/bench.ucan" --api "$API" >/dev/null
"$ZERO" sign guest/target/wasm32-wasip2/release/static_site.wasm --key "$WORK/owner.key" \
    --proof "$WORK/bench.ucan" --cmd /fs/read --policy '[["==", ".path", "/site"]]' \
    -o "$WORK/site.zero.wasm" >/dev/null
stop

# The file: random bytes, on local disk and in zerofs (seeded while the node is stopped).
head -c "$((SIZE_MIB << 20))" /dev/urandom > "$WORK/big.bin"
target/release/examples/put "$WORK/data/fs" bench /site/big.bin "$WORK/big.bin" >/dev/null

start
"$ZERO" deploy "$WORK/site.zero.wasm" --tenant bench --route / --key "$WORK/owner.key" \
    --proof "$WORK/bench.ucan" --api "$API" >/dev/null

URL=http://127.0.0.1:18181/big.bin
# Warm-up (page cache, compiled component), then one timed run each.
curl -sf -o /dev/null "$URL"
cat "$WORK/big.bin" > /dev/null
now() { date +%s.%N; }
t0=$(now); curl -sf -o "$WORK/got.bin" "$URL"; t1=$(now)
cmp -s "$WORK/got.bin" "$WORK/big.bin" || { echo "served bytes differ from the file" >&2; exit 1; }
rm -f "$WORK/got.bin"
t2=$(now); curl -sf -o /dev/null "$URL"; t3=$(now)
t4=$(now); cat "$WORK/big.bin" > /dev/null; t5=$(now)

awk -v n="$SIZE_MIB" -v z="$(echo "$t3 - $t2" | bc -l)" -v c="$(echo "$t5 - $t4" | bc -l)" 'BEGIN {
    printf "file size:                         %d MiB\n", n
    printf "zerofs -> static-site -> curl:     %8.1f MiB/s (%.3f s)\n", n / z, z
    printf "cat from local disk -> /dev/null:  %8.1f MiB/s (%.3f s)\n", n / c, c
    printf "ratio (cat / zerocore):            %8.2f x\n", (n / c) / (n / z)
}'
