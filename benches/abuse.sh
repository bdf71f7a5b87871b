#!/usr/bin/env bash
# A healthy tenant's latency while other tenants trip every limit at once (issue 14): the
# hello component of tenant `healthy` is measured with wrk, first on a quiet node, then while
# abusive tenants, each on its own, keep the node busy:
#
#   cpu      the spin component (burns CPU until [limits] cpu_time_ms)
#   mem      membomb (allocates until [limits] memory)
#   out      logger with ?flood=1024&stream=both (1 GiB to stdout and stderr, cut at
#            [limits] guest_log_bytes, until the CPU time is spent)
#   conc     sleepy (sleeps until [limits] wall_time_ms), twice its tenant's concurrency cap
#   sql      dbprobe running a recursive query until the statement or CPU time is spent
#   fill     cacheprobe filling the tenant's cache with 60 KB values until its quota
#   deploy   a deploy flood: new components (each would compile) from 4 clients at once
#
# Every tenant's concurrency cap ([http] max_concurrent_requests_per_tenant) is set to the
# healthy tenant's connections (CONNS), and each abuser runs with twice as many (wrk), so that
# every abuser meets its own cap while together they stay under the node's
# max_concurrent_requests (256). The table gives the
# healthy tenant's requests/s, p50 and p99 (ms) and errors, quiet and under abuse, the p99
# ratio (target: within 2x), and what the abusers were answered.
#
# Usage: benches/abuse.sh [--duration S] [--conns N] [--abuse-conns N] [--only LIST]
#   --duration S       seconds of each measurement (default 10)
#   --conns N          the healthy tenant's wrk connections, and every tenant's cap (default 8)
#   --only LIST        comma-separated abusers among cpu,mem,out,conc,sql,fill,deploy
#                      (default: all at once), to find which one costs the healthy tenant
#   --healthy-rate R   the healthy tenant's requests/s, paced over its connections (default
#                      500, a busy but healthy app); 0 sends as fast as the node answers, which
#                      makes the healthy tenant a CPU-hungry one itself: under the node's fair
#                      share it then gets its share of the cores, and its latency follows
#   --abusers-nice N   run the abusers' own clients (their wrk and `zero deploy` processes) at
#                      this `nice` (default 0): on this one machine they compete with the node
#                      for its cores, which attackers elsewhere would not; 19 leaves the node
#                      and the healthy tenant's client the CPU they want, and measures what the
#                      node itself lets abusers do to the healthy tenant
#   --guest-slots N    the node's [engine] guest_slots (default 0, the node's own default: one
#                      per core); a large N (e.g. 1000) lets every guest run at once, which
#                      turns the fair share between tenants off, for comparison
# Needs: wrk (installed from apt-get when missing), the release build (`cargo build --release
# -p zero`; skipped with BENCH_NO_BUILD=1) and the guests (scripts/build-guests.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DURATION=10
CONNS=8
ONLY="cpu,mem,out,conc,sql,fill,deploy"
GUEST_SLOTS=0
HEALTHY_RATE=500
ABUSERS_NICE=0
while [ $# -gt 0 ]; do
    case $1 in
    --duration) DURATION=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --guest-slots) GUEST_SLOTS=$2; shift ;;
    --healthy-rate) HEALTHY_RATE=$2; shift ;;
    --abusers-nice) ABUSERS_NICE=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown argument \`$1\` (see --help)"; exit 2 ;;
    esac
    shift
done
for s in ${ONLY//,/ }; do
    case $s in cpu | mem | out | conc | sql | fill | deploy) ;;
    *) say "unknown abuser \`$s\` in --only (cpu, mem, out, conc, sql, fill, deploy)"; exit 2 ;;
    esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

ensure_wrk
if [ -z "${BENCH_NO_BUILD:-}" ]; then
    say "building (release) ..."
    bash scripts/build-guests.sh >/dev/null
    cargo build --release -q -p zero
fi

PER_TENANT=$CONNS
ABUSE_CONNS=$((2 * CONNS))
WRK_CONNS=$CONNS
# Deploy flood clients: each is a `zero deploy` process per attempt, which costs this machine's
# CPU too, so there are only a few.
DEPLOY_CLIENTS=4
DATA=$WORK/node
API=http://127.0.0.1:18312
BASE=http://127.0.0.1:18311
# The node: loopback, warn-level logs (as node_config in lib.rs), each tenant's concurrency cap.
cat >"$WORK/node.toml" <<TOML
[node]
data_dir = "$DATA"
[log]
level = "warn"
[http]
listen = "127.0.0.1:18311"
max_concurrent_requests = 256
max_concurrent_requests_per_tenant = $PER_TENANT
[admin]
listen = "127.0.0.1:18312"
[cache]
tenant_quota = "4 MiB"
[engine]
guest_slots = $GUEST_SLOTS
TOML
start_bg "$WORK/node.log" "$ZERO" serve --config "$WORK/node.toml"
NODE=$LAST_PID
wait_up "$API/v1/node" "$WORK/node.log"
for _ in $(seq 1 100); do [ -e "$DATA/admin.key" ] && break; sleep 0.1; done

# deploy TENANT COMPONENT ROUTE: a tenant of its own, the component signed with every right in
# the tenant, deployed at ROUTE.
deploy() {
    dev_tenant "$API" "$DATA" "$1"
    sign_deploy "$API" "$1" "$GUESTS/$2.wasm" "$3" / '[]'
}
deploy healthy hello /healthy
HEALTHY=$BASE/healthy
wait_http "$HEALTHY" "$WORK/node.log"
want cpu && deploy cpu spin /cpu
want mem && deploy mem membomb /mem
want out && deploy out logger /out
want conc && deploy conc sleepy /conc
want sql && deploy sql dbprobe /sql
want fill && deploy fill cacheprobe /fill
want deploy && dev_tenant "$API" "$DATA" deployer

cat >"$WORK/sql.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"db": "d", "op": "query", "sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c", "params": []}'
LUA
cat >"$WORK/fill.lua" <<'LUA'
local n, value = 0, string.rep("x", 60000)
request = function()
    n = n + 1
    return wrk.format("POST", nil, nil, '{"op": "set", "key": "k' .. n .. '", "value": "' .. value .. '"}')
end
LUA

# The healthy tenant's pace: each connection waits CONNS/RATE seconds before each request
# (wrk measures a request's latency from when it is sent).
PACE=()
if [ "$HEALTHY_RATE" != 0 ]; then
    awk -v c="$CONNS" -v r="$HEALTHY_RATE" 'BEGIN { printf "function delay() return %.3f end\n", 1000 * c / r }' \
        >"$WORK/pace.lua"
    PACE=(-s "$WORK/pace.lua")
fi

# measure LABEL: one wrk run on the healthy tenant; sets the row LABEL.
declare -A ROW
measure() {
    wrk_run "$HEALTHY" "$DURATION" "${PACE[@]}"
    ROW[$1]="$W_RPS $W_P50 $W_P99"
    ROW_ERR[$1]=${W_ERRORS:-none}
}
declare -A ROW_ERR

say "quiet: the healthy tenant alone for ${DURATION} s ($([ "$HEALTHY_RATE" = 0 ] && echo "as fast as answered" || echo "$HEALTHY_RATE requests/s"))"
measure quiet

# ---- the abuse -------------------------------------------------------------------------------
ABUSE_SECS=$((DURATION + 4))
abuse() { # NAME URL [wrk args...]: NAME's wrk in the background, its summary kept.
    local name=$1 url=$2
    shift 2
    nice -n "$ABUSERS_NICE" "${DIE_WITH_BENCH[@]}" wrk -t1 -c"$ABUSE_CONNS" -d"${ABUSE_SECS}s" "$@" "$url" >"$WORK/abuse-$name.out" 2>&1 &
    BENCH_PIDS+=("$!")
    ABUSERS+=("$!")
}
ABUSERS=()
want cpu && abuse cpu "$BASE/cpu"
want mem && abuse mem "$BASE/mem"
want out && abuse out "$BASE/out?flood=1024&stream=both"
want conc && abuse conc "$BASE/conc"
want sql && abuse sql "$BASE/sql" -s "$WORK/sql.lua"
want fill && abuse fill "$BASE/fill" -s "$WORK/fill.lua"
if want deploy; then
    # A deploy flood: every component new (a custom section with a counter), so each would be
    # compiled; answered 200 or 429 TooManyDeploys.
    for c in $(seq 1 "$DEPLOY_CLIENTS"); do
        (
            end=$((SECONDS + ABUSE_SECS))
            n=0
            while [ $SECONDS -lt $end ]; do
                n=$((n + 1))
                f=$WORK/flood-$c.wasm
                { cat "$GUESTS/hello.wasm"; printf '\000\024\003pad%08d%08d' "$c" "$n"; } >"$f"
                if nice -n "$ABUSERS_NICE" "$ZERO" deploy "$f" --tenant deployer --app flood --route /flood \
                    --key "$WORK/deployer.key" --proof "$WORK/deployer.ucan" --api "$API" \
                    >/dev/null 2>>"$WORK/deploy-$c.err"; then
                    echo ok >>"$WORK/deploy-$c.out"
                else
                    echo refused >>"$WORK/deploy-$c.out"
                fi
            done
        ) &
        BENCH_PIDS+=("$!")
        ABUSERS+=("$!")
    done
fi
sleep 2
reset_peak_rss "$NODE"
say "under abuse ($ONLY) for ${DURATION} s"
measure abuse
for p in "${ABUSERS[@]}"; do wait "$p" 2>/dev/null || true; done

# ---- the table -------------------------------------------------------------------------------
read -r q_rps q_p50 q_p99 <<<"${ROW[quiet]}"
read -r a_rps a_p50 a_p99 <<<"${ROW[abuse]}"
printf '\n%-14s %10s %9s %9s  %s\n' "healthy hello" "req/s" "p50 ms" "p99 ms" "errors"
printf '%-14s %10s %9s %9s  %s\n' quiet "$q_rps" "$q_p50" "$q_p99" "${ROW_ERR[quiet]}"
printf '%-14s %10s %9s %9s  %s\n' "under abuse" "$a_rps" "$a_p50" "$a_p99" "${ROW_ERR[abuse]}"
awk -v q="$q_p99" -v a="$a_p99" -v qp="$q_p50" -v ap="$a_p50" 'BEGIN {
    printf "p50 ratio %.2fx, p99 ratio %.2fx (target: p99 within 2x of quiet)\n", ap / qp, a / q }'
printf 'node peak RSS under abuse: %s MiB\n\nabusers (wrk: requests, non-2xx):\n' "$(peak_rss_mib "$NODE")"
for name in cpu mem out conc sql fill; do
    want "$name" || continue
    f=$WORK/abuse-$name.out
    printf '  %-6s %s requests; %s\n' "$name" \
        "$(awk '/requests in/ {print $1}' "$f")" \
        "$(awk '/Non-2xx|Socket errors|Requests\/sec/ {printf "%s; ", $0}' "$f")"
done
if want deploy; then
    printf '  deploy %s deployed, %s refused (%s of them TooManyDeploys)\n' \
        "$(cat "$WORK"/deploy-*.out 2>/dev/null | grep -c '^ok' || true)" \
        "$(cat "$WORK"/deploy-*.out 2>/dev/null | grep -c '^refused' || true)" \
        "$(cat "$WORK"/deploy-*.err 2>/dev/null | grep -c TooManyDeploys || true)"
fi
