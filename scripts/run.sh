#!/usr/bin/env bash
# Sets up a fresh machine and starts a node on the embedded default serving the hello example.
# Usage: scripts/run.sh   (Ctrl-C stops the node)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-guests.sh >/dev/null
cargo build -p zero
echo
echo "Starting the node; in another terminal run:  curl http://127.0.0.1:8080/"
echo
exec target/debug/zero serve --config examples/zerocore.toml
