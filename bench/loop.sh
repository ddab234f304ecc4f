#!/usr/bin/env bash
# The loop's benchmarks (issue 10, bench/BENCHMARKS.md "The loop"), in one run:
#
# 1. Result ingestion: RERUNS x 1000 QUEUED pairs with message ids
#    (bench/loop-dataset.sql); a RUNNING and a PASSED result for each are
#    published with confirms as fast as the broker confirms (bench/results.rs)
#    and timed until the database shows them all applied; against, in the
#    same run, limit_db (pgbench of the minimal writes per result,
#    bench/results-batch.pgbench, 250 results a transaction, and
#    bench/results-single.pgbench, one) and limit_broker (bench/broker.rs
#    --mode roundtrip: a confirmed persistent publish of the results' mean
#    size through a fanout exchange to a quorum queue, delivered to a minimal
#    consumer that acks with one multiple ack per 250, prefetch 500; the
#    publish-only rate is printed as a diagnostic).
# 2. Read latency under the 50 % rerun load: the ingestion leaves the big
#    plan's chain at 1000 pairs x (RERUNS + 1) attempts; a closed-loop 2-pair
#    rerun saturation gives the rate, then an open-loop rerun load at 50 % of
#    it runs while `bench-load get` reads GET /plans/{big}/results, then
#    GET /executions/{a 1000-pair rerun}, open loop. With BENCH_BIN_BEFORE
#    set, the reads phase runs again on that binary (before/after, one run).
#
# Needs what bench/run.sh needs. Knobs: PLANS (500), RERUNS (49), PG_SECS (5),
# READ_SECS (30), RESULTS_READ_RATE (5/s), EXECUTION_READ_RATE (10/s),
# LOOP_PHASES (all; `ingestion` stops after part 1, as bench/run.sh runs it),
# LOOP_PERF (a file: `perf record -a -g` of the ingestion into it; LOOP_PERF_HZ),
# BENCH_BIN, BENCH_BIN_BEFORE, BENCH_NO_BUILD, and the service's own
# (RESULTS_BATCH_SIZE, RESULTS_PREFETCH, ...) which are passed through.
set -euo pipefail
cd "$(dirname "$0")/.."

PLANS=${PLANS:-500}
SCENARIOS=15
RERUNS=${RERUNS:-49}
PG_SECS=${PG_SECS:-5}
READ_SECS=${READ_SECS:-30}
RESULTS_READ_RATE=${RESULTS_READ_RATE:-5}
EXECUTION_READ_RATE=${EXECUTION_READ_RATE:-10}
# shellcheck source=bench/common.sh
. bench/common.sh
OUT=$(mktemp -d)
PSQL=(psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL")
BIG=$((PLANS + 1))
PAIRS=$((RERUNS * 1000))

SERVICE_PID=
stop_service() {
  if [[ -n "$SERVICE_PID" ]]; then kill "$SERVICE_PID" 2>/dev/null || true; wait "$SERVICE_PID" 2>/dev/null || true; fi
  SERVICE_PID=
}
cleanup() { stop_service; rm -rf "$OUT"; }
trap cleanup EXIT
start_service() { # binary
  "$1" serve >>"$OUT/service.log" 2>&1 &
  SERVICE_PID=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$OUT/service.log" >&2
  exit 1
}

log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S) UTC"
if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
  log "building (release)"
  cargo build --release --quiet --bin plan-queue --example bench-load --example bench-broker --example bench-results
fi

log "database $BENCH_DATABASE: drop, migrate, seed $PLANS plans and $RERUNS reruns of the big plan"
psql -X -q "$DB_SERVER/postgres" -c "DROP DATABASE IF EXISTS $BENCH_DATABASE WITH (FORCE)"
"$BIN" migrate >/dev/null 2>&1
"${PSQL[@]}" -v plans="$PLANS" -v scenarios="$SCENARIOS" -f bench/seed.sql >/dev/null
"${PSQL[@]}" -v plans="$PLANS" -v reruns="$RERUNS" -f bench/loop-dataset.sql >/dev/null

# ---- limit_db for results: pgbench of the minimal writes ----
# the yardstick does not move with our code (our_triggers, bench/common.sh):
# our triggers are off meanwhile; loop-reset.sql puts the pairs back as
# they were inserted (QUEUED), which is what the read model still holds
our_triggers DISABLE
best_batch=0 best_batch_c=0
for c in 1 2 4; do
  tps=$(pgbench -n -M prepared -f bench/results-batch.pgbench -D batches=$((PAIRS / 250)) \
          -c "$c" -j "$c" -T "$PG_SECS" "$DATABASE_URL" 2>/dev/null | awk '/^tps/ { print $3 }')
  rps=$(awk -v t="$tps" 'BEGIN { printf "%.0f", t * 250 }')
  log "limit_db results, 250 a transaction: $c clients: $tps tx/s = $rps results/s"
  if ((rps > best_batch)); then best_batch=$rps best_batch_c=$c; fi
done
best_single=0 best_single_c=0
for c in 1 4 16; do
  tps=$(pgbench -n -M prepared -f bench/results-single.pgbench -D pairs=$PAIRS \
          -c "$c" -j 2 -T "$PG_SECS" "$DATABASE_URL" 2>/dev/null | awk '/^tps/ { print int($3) }')
  log "limit_db results, one a transaction: $c clients: $tps results/s"
  if ((tps > best_single)); then best_single=$tps best_single_c=$c; fi
done
"${PSQL[@]}" -f bench/loop-reset.sql >/dev/null
our_triggers ENABLE

# ---- limit_broker for results: what ingesting one costs the broker alone ----
# a confirmed persistent publish to a fanout exchange and quorum queue of
# their own AND its delivery to a consumer acking with one multiple ack per
# 250 (prefetch 500): bench/broker.rs --mode roundtrip, fixed numbers, no code
# of ours. The publish-only rate (no-ack consumer) is printed as a diagnostic.
size=$("$EXAMPLES/bench-results" --size-only true | awk '$2 == "size" { print $3 }')
"$EXAMPLES/bench-broker" --secs 3 --size "$size" --windows 64,256,1024 >"$OUT/broker_publish"
for w in 64 256 1024; do log "broker publish-only (diagnostic): window $w: $(result "window_$w" "$OUT/broker_publish") msg/s ($size B)"; done
publish_only=$(result best "$OUT/broker_publish")
cpu_ticks >"$OUT/cpu_broker0"; machine_start=$(machine_ticks)
"$EXAMPLES/bench-broker" --mode roundtrip --secs 3 --size "$size" --windows 64,256,1024 >"$OUT/broker"
cpu_ticks >"$OUT/cpu_broker1"; machine_end=$(machine_ticks)
broker_cpu="machine $(machine_ms "$machine_start" "$machine_end" "$(result messages "$OUT/broker")"); $(cpu_ms "$OUT/cpu_broker0" "$OUT/cpu_broker1" "$(result messages "$OUT/broker")")"
for w in 64 256 1024; do log "limit_broker: publish + consume + ack: window $w: $(result "window_$w" "$OUT/broker") msg/s ($size B)"; done
log "  CPU per message of limit_broker (/proc, all three windows): $broker_cpu"
best_broker=$(result best "$OUT/broker")
best_window=$(awk -v b="$best_broker" '$1 == "result" && $3 == b && $2 ~ /^window_/ { sub("window_", "", $2); print $2; exit }' "$OUT/broker")

# ---- the service ingesting them ----
start_service "$BIN"
export BENCH_TOKEN=$("$BIN" token --user-id 1 --ttl-secs 36000)
cpu_ticks >"$OUT/cpu_start"; machine_start=$(machine_ticks)
"$EXAMPLES/bench-results" --window "$best_window" >"$OUT/results" &
results_pid=$!
perf_pid=
if [[ -n "${LOOP_PERF:-}" ]]; then # a whole-machine profile of the ingestion, to that file
  perf record -a -g -F "${LOOP_PERF_HZ:-499}" -o "$LOOP_PERF" >/dev/null 2>&1 &
  perf_pid=$!
fi
sleep 1; cpu_ticks >"$OUT/cpu0"; t0=$(date +%s.%N)
sleep 4; cpu_ticks >"$OUT/cpu1"
split=$(cpu_split "$OUT/cpu0" "$OUT/cpu1" "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }')")
wait "$results_pid"
cpu_ticks >"$OUT/cpu_end"; machine_end=$(machine_ticks)
if [[ -n "$perf_pid" ]]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
applied=$(result applied_rps "$OUT/results")
log "service: $(result results "$OUT/results") results ($(result pairs "$OUT/results") pairs, $(result size "$OUT/results") B): published and confirmed in $(result publish_secs "$OUT/results") s ($(result publish_rps "$OUT/results")/s), all applied after $(result applied_secs "$OUT/results") s: $applied results/s"
log "  CPU share of all cores while ingesting: $split"
per_result="machine $(machine_ms "$machine_start" "$machine_end" "$(result results "$OUT/results")"); $(cpu_ms "$OUT/cpu_start" "$OUT/cpu_end" "$(result results "$OUT/results")")"
log "  CPU per result (/proc, from bench-results' start to its end, its set-up and polling included): $per_result"
ceiling=$(awk -v d="$best_batch" -v b="$best_broker" 'BEGIN { c = d; if (b < c) c = b; print c }')
ratio=$(awk -v s="$applied" -v c="$ceiling" 'BEGIN { printf "%.2f", s / c }')
log "ingestion ratio: applied / min(limit_db 250-batch $best_batch, limit_broker publish+consume+ack $best_broker) = $applied / $ceiling = $ratio"
log "  (against the broker's publish-only rate, $publish_only msg/s: $(awk -v s="$applied" -v c="$publish_only" 'BEGIN { printf "%.2f", s / c }'))"
log "  (against one result a transaction, $best_single results/s: $(awk -v s="$applied" -v c="$best_single" 'BEGIN { printf "%.2f", s / c }'))"
# for bench/run.sh, which calls this phase alone (LOOP_PHASES=ingestion)
echo "result applied_rps $applied"
echo "result ingestion_limit $ceiling"
echo "result ingestion_ratio $ratio"
echo "result ingestion_limit_db $best_batch"
echo "result ingestion_limit_broker $best_broker"
echo "result ingestion_broker_publish_only $publish_only"
if [[ "${LOOP_PHASES:-all}" == ingestion ]]; then exit 0; fi

# ---- read latency under the 50 % rerun load ----
"${PSQL[@]}" -c "VACUUM ANALYZE executions, execution_pairs, dispatches" >/dev/null
attempts=$("${PSQL[@]}" -At -c "SELECT count(*) FROM execution_pairs WHERE source_execution_id = $BIG")
log "big plan $BIG: $attempts attempts in its chain"
reset_reruns() { # every rerun but the big plan's history
  "${PSQL[@]}" -c "DELETE FROM executions WHERE kind = 'RERUN' AND id < 1000000" \
               -c "TRUNCATE idempotency_keys" -c "VACUUM ANALYZE executions, execution_pairs, dispatches" >/dev/null
}
load() { "$EXAMPLES/bench-load" "$@" --plans "$PLANS" --scenarios "$SCENARIOS"; }
reads() { # label binary
  local label=$1 bin=$2 sat rate path rps
  stop_service; start_service "$bin"
  reset_reruns
  load closed --pairs 2 --connections 2 --secs 2 >/dev/null # warm-up
  reset_reruns
  load closed --pairs 2 --connections 32 --secs 8 >"$OUT/sat"
  sat=$(result e2e_rps "$OUT/sat")
  rate=$(awk -v r="$sat" 'BEGIN { printf "%.0f", r / 2 }')
  log "$label: rerun 2-pair saturation $sat req/s; load at 50 %: $rate req/s"
  for path in "/plans/$BIG/results" "/executions/$((1000000 + RERUNS))"; do
    reset_reruns
    if [[ "$path" == */results ]]; then rps=$RESULTS_READ_RATE; else rps=$EXECUTION_READ_RATE; fi
    load open --pairs 2 --rate "$rate" --secs "$((READ_SECS + 2))" >"$OUT/open" &
    local open_pid=$!
    sleep 1
    load get --path "$path" --rate "$rps" --secs "$READ_SECS" >"$OUT/get"
    wait "$open_pid"
    log "$label: GET $path at $rps/s: p50 $(result latency_p50_ms "$OUT/get") / p90 $(result latency_p90_ms "$OUT/get") / p99 $(result latency_p99_ms "$OUT/get") / max $(result latency_max_ms "$OUT/get") ms ($(result requests "$OUT/get") answers, errors $(result errors "$OUT/get")); reruns meanwhile: p99 $(result latency_p99_ms "$OUT/open") ms, errors $(result errors "$OUT/open")"
  done
  for path in "/plans/$BIG/results" "/executions/$((1000000 + RERUNS))"; do
    log "$label: GET $path body $(curl -fsS -H "authorization: Bearer $BENCH_TOKEN" "http://127.0.0.1:$PORT$path" | wc -c) bytes, sha256 $(curl -fsS -H "authorization: Bearer $BENCH_TOKEN" "http://127.0.0.1:$PORT$path" | sha256sum | cut -c1-16)"
  done
}
if [[ -n "${BENCH_BIN_BEFORE:-}" ]]; then reads before "$BENCH_BIN_BEFORE"; fi
reads after "$BIN"

log "machine load at the end: $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S) UTC"
warnings=$(grep -c -E ' (WARN|ERROR) ' "$OUT/service.log" || true)
log "service log: $warnings warnings or errors"
grep -E ' (WARN|ERROR) ' "$OUT/service.log" | head -5 >&2 || true
