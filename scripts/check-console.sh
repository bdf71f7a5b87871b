#!/usr/bin/env bash
# Checks that the committed web console build (console/dist, embedded in the node binary) is
# exactly what console/'s sources build to. Usage: scripts/check-console.sh [--update]
# (--update rebuilds console/dist in place instead; commit the result).
set -euo pipefail
cd "$(dirname "$0")/../console"
if [ ! -d node_modules ]; then
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
if [ "${1:-}" = "--update" ]; then
    npx vite build --logLevel warn
    exit 0
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
npx vite build --logLevel warn --outDir "$scratch/dist" --emptyOutDir
if ! diff -r dist "$scratch/dist" >"$scratch/diff"; then
    echo "error: console/dist is not what console/ builds to; run scripts/check-console.sh --update and commit console/dist" >&2
    head -20 "$scratch/diff" >&2
    exit 1
fi
echo "console/dist matches its sources"
