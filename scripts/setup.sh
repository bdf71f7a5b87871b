#!/usr/bin/env bash
# Installs what zerocore needs on a fresh machine: the wasm targets for the guest workspace.
# Idempotent; sourced by run.sh and test.sh.
set -euo pipefail
if ! command -v cargo >/dev/null; then
    echo "error: cargo is not installed; install Rust 1.95 with rustup first" >&2
    exit 1
fi
rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip2 wasm32-wasip1
