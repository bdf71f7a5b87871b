#!/usr/bin/env bash
# Builds the preview1 probes of other toolchains than Rust, for the `zero convert` tests
# (tests/convert.rs), from their sources in guest/wasip1:
#   - C (clang's wasm32-wasi target with wasi-libc):   guest/target/wasip1/c-probe.wasm
#   - AssemblyScript (asc with @assemblyscript/wasi-shim): guest/target/wasip1/as-probe.wasm
# The toolchains come from scripts/setup.sh. (The Rust probe is p1-command, built by
# build-guests.sh, which runs this script.)
set -euo pipefail

cd "$(dirname "$0")/../guest"
out=target/wasip1
mkdir -p "$out"

for tool in clang wasm-ld npm; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool is missing: run scripts/setup.sh first (it installs the C and AssemblyScript toolchains)" >&2
        exit 1
    fi
done

clang --target=wasm32-wasi -O2 -Wall -Werror -o "$out/c-probe.wasm" wasip1/c/probe.c

(
    cd wasip1/as
    # Reinstall only when the lock file changed since the last install.
    if [ ! -e node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --silent --no-audit --no-fund
    fi
    npx --no-install asc assembly/index.ts --target release
)
