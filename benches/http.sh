#!/usr/bin/env bash
# HTTP hello-world benchmark: the node vs `wasmtime serve` 48 (plain and tuned, same component)
# vs a native hyper server. Now one scenario of benches/run.sh, which holds the shared setup.
#
# Usage: benches/http.sh [DURATION_SECONDS] [CONNECTIONS]
exec "$(dirname "$0")/run.sh" --only hello --duration "${1:-10}" --conns "${2:-32}"
