#!/usr/bin/env bash
# A time-boxed smoke run of every fuzz target (not part of the default tests).
# Usage: fuzz/smoke.sh [SECONDS_PER_TARGET]   (default 30)
# Installs what it needs (the nightly toolchain and cargo-fuzz), builds every target once with
# optimizations, then runs each for SECONDS_PER_TARGET on its seeds (seeds/TARGET, when there
# are any) and its corpus (corpus/TARGET, kept between runs). Stops at the first target that
# finds a crash; the input is saved under artifacts/TARGET/ (see README.md to replay it).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
case "$secs" in
    '' | *[!0-9]*) echo "usage: fuzz/smoke.sh [SECONDS_PER_TARGET] (a whole number, e.g. 30)" >&2; exit 2 ;;
esac

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

targets=$(cargo +nightly fuzz list)
echo "== building $(echo "$targets" | wc -l) targets"
cargo +nightly fuzz build -O

for t in $targets; do
    mkdir -p "corpus/$t"
    dirs=("corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    echo "== $t (${secs}s)"
    log="$(mktemp)"
    status=0
    cargo +nightly fuzz run -O "$t" "${dirs[@]}" -- -max_total_time="$secs" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    if [ "$status" -ne 0 ]; then
        grep -E -A25 "panicked|ERROR: libFuzzer|SUMMARY" "$log" | head -60 >&2 || tail -40 "$log" >&2
        echo "!! $t found a crash (exit $status): the input is under fuzz/artifacts/$t/" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
done
echo "== every target ran ${secs}s without a crash"
