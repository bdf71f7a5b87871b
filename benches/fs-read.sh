#!/usr/bin/env bash
# File-read benchmark: a file in zerofs through the static-site component vs `cat`. Now one
# scenario of benches/run.sh, which holds the shared setup.
#
# Usage: benches/fs-read.sh [SIZE_MIB]
exec "$(dirname "$0")/run.sh" --only static --size "${1:-100}"
