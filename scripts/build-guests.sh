#!/usr/bin/env bash
# Builds every guest (WebAssembly) crate of the guest/ workspace in release:
#   - all wasi:http components and the cli-hello command for wasm32-wasip2 (components),
#     sdk-p3 (zerosdk with its `p3` feature) in a build of its own,
#   - p1-command for wasm32-wasip1 (a core module),
#   - the C and AssemblyScript preview1 probes (scripts/build-wasip1.sh),
# then lists the produced .wasm files with their sizes.
# Artifacts: guest/target/wasm32-wasip2/release/*.wasm and
#            guest/target/wasm32-wasip1/release/p1-command.wasm
#            guest/target/wasip1/{c,as}-probe.wasm
set -euo pipefail

cd "$(dirname "$0")/../guest"

rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null 2>&1 ||
    rustup target add wasm32-wasip2 wasm32-wasip1

cargo build --release --target wasm32-wasip2 --workspace --exclude p1-command --exclude sdk-p3
# Apart: its zerosdk `p3` feature would make every zerosdk app of the build a WASI 0.3 one.
cargo build --release --target wasm32-wasip2 -p sdk-p3
cargo build --release --target wasm32-wasip1 -p p1-command
bash ../scripts/build-wasip1.sh

echo "guest artifacts:"
for f in target/wasm32-wasip2/release/*.wasm target/wasm32-wasip1/release/*.wasm target/wasip1/*.wasm; do
    [ -e "$f" ] || continue
    printf '%10d  %s\n' "$(stat -c %s "$f")" "guest/$f"
done
