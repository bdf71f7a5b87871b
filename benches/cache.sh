#!/usr/bin/env bash
# zerocache hit benchmark: the cacheprobe component reading one cached key vs hello on the same
# node. Now one scenario of benches/run.sh, which holds the shared setup.
#
# Usage: benches/cache.sh [DURATION_SECONDS] [CONNECTIONS]
exec "$(dirname "$0")/run.sh" --only cache --duration "${1:-10}" --conns "${2:-32}"
