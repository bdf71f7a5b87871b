#!/usr/bin/env bash
# Sets up a fresh machine and runs every check and test: formatting, clippy, the guest
# components, and the unit, property and end-to-end tests (which start real nodes on loopback).
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== formatting"
cargo fmt --all -- --check
(cd guest && cargo fmt --all -- --check)

echo "== web console build"
# console/dist is committed (so that `cargo build` needs no npm) and must be what its sources
# build to: rebuild it into a scratch directory and compare.
bash scripts/check-console.sh

echo "== guest components"
bash scripts/build-guests.sh

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests"
cargo test --workspace --no-fail-fast
