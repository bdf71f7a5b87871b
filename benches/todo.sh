#!/usr/bin/env bash
# zerodb point-read benchmark: `GET /todos/1` of the todo example vs hello on the same node. Now
# one scenario of benches/run.sh, which holds the shared setup.
#
# Usage: benches/todo.sh [DURATION_SECONDS] [CONNECTIONS]
exec "$(dirname "$0")/run.sh" --only todo --duration "${1:-10}" --conns "${2:-32}"
