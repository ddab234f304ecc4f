#!/usr/bin/env bash
# The deadline sweep's benchmarks (issue 18, bench/BENCHMARKS.md "Deadlines"):
#
# a. How long after its queue deadline a pair really ends: RUNS runs (10) of
#    plan 9000 (1000 pairs, framework type JUNIT, no runner), started 1.3 s
#    apart against `plan-queue serve` with QUEUE_TIMEOUT_SECS=5 and the
#    default DEADLINE_SWEEP_MS (2000); from the database, per pair,
#    finished_at - (requested_at + 5 s): min, p50, p90, p99, max.
# b. What the sweep costs the database at IN_FLIGHT (100 000) in-flight pairs
#    (9 in 10 QUEUED, 1 in 10 RUNNING, deadlines far away: the steady
#    state): EXPLAIN (ANALYZE, BUFFERS) of each statement of one round, and
#    ROUNDS (300) rounds replayed by pgbench (bench/deadlines-sweep.pgbench),
#    scaled to the 30 rounds a minute of the default interval; then the
#    service itself runs SWEEP_SECS (60) with no traffic and the database's
#    counters (pg_stat_database) over that minute are printed (they include
#    the relay's and the other background tasks' polls).
#
# Needs PostgreSQL and RabbitMQ as the tests do, psql and pgbench. Its own
# database (plan_queue_bench_deadlines) and exchange (bench-deadlines), both
# removed at the end. BENCH_BIN (default: the release build), BENCH_NO_BUILD.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
IN_FLIGHT=${IN_FLIGHT:-100000}
ROUNDS=${ROUNDS:-300}
SWEEP_SECS=${SWEEP_SECS:-60}
BENCH_PORT=${BENCH_PORT:-18093}
# shellcheck source=bench/common.sh
. bench/common.sh
export DATABASE_URL="$DB_SERVER/plan_queue_bench_deadlines"
export AMQP_EXCHANGE=bench-deadlines
export FRAMEWORK_TYPES=APPIUM,JUNIT
OUT=$(mktemp -d)
PSQL=(psql -X -q -At -v ON_ERROR_STOP=1 "$DATABASE_URL")

SERVICE_PID=
stop_service() {
  if [[ -n "$SERVICE_PID" ]]; then kill "$SERVICE_PID" 2>/dev/null || true; wait "$SERVICE_PID" 2>/dev/null || true; fi
  SERVICE_PID=
}
cleanup() {
  stop_service
  psql -X -q "$DB_SERVER/postgres" -c "DROP DATABASE IF EXISTS plan_queue_bench_deadlines WITH (FORCE)" || true
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep -E '^bench-deadlines(\.|$)'); do
    rabbitmqctl -q delete_queue "$q" >/dev/null || true
  done
  for x in $(rabbitmqctl -q list_exchanges name 2>/dev/null | grep -E '^bench-deadlines(\.|$)'); do
    rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$x\">>), false, <<\"bench\">>)." >/dev/null || true
  done
  rm -rf "$OUT"
}
trap cleanup EXIT
start_service() { # extra environment, as NAME=value words
  env "$@" "$BIN" serve >>"$OUT/service.log" 2>&1 &
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
  cargo build --release --quiet --bin plan-queue
fi
log "binary: $BIN"
psql -X -q "$DB_SERVER/postgres" -c "DROP DATABASE IF EXISTS plan_queue_bench_deadlines WITH (FORCE)"
"$BIN" seed --file fixtures/demo.json >/dev/null
"${PSQL[@]}" -f bench/deadlines-dataset.sql

# a. lateness
start_service QUEUE_TIMEOUT_SECS=5
TOKEN=$("$BIN" token --user-id 13)
for _ in $(seq 1 "$RUNS"); do
  curl -fsS "http://127.0.0.1:$PORT/queue/run" -H "Authorization: Bearer $TOKEN" \
    -H 'Content-Type: application/json' \
    -d '{"planId": 9000, "userId": 13, "force": true}' >/dev/null
  sleep 1.3
done
for _ in $(seq 1 600); do
  left=$("${PSQL[@]}" -c "SELECT count(*) FROM execution_pairs p JOIN executions x ON x.id = p.execution_id \
                          WHERE x.plan_id = 9000 AND p.status = 'QUEUED'")
  [[ "$left" == 0 ]] && break
  sleep 0.1
done
[[ "$left" == 0 ]] || { log "pairs still QUEUED: $left"; exit 1; }
stop_service
log "a. lateness after the queue deadline (QUEUE_TIMEOUT_SECS=5, DEADLINE_SWEEP_MS=2000), seconds:"
"${PSQL[@]}" -F ' ' -c "
  SELECT 'pairs', count(*),
         'min', round(min(l)::numeric, 3), 'p50', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY l)::numeric, 3),
         'p90', round(percentile_cont(0.9) WITHIN GROUP (ORDER BY l)::numeric, 3),
         'p99', round(percentile_cont(0.99) WITHIN GROUP (ORDER BY l)::numeric, 3),
         'max', round(max(l)::numeric, 3),
         'reason', string_agg(DISTINCT reason, ',')
    FROM (SELECT extract(epoch FROM p.finished_at - (x.requested_at + interval '5 seconds')) AS l, p.reason
            FROM execution_pairs p JOIN executions x ON x.id = p.execution_id
           WHERE x.plan_id = 9000) t"
log "per run (max - min of its pairs: how long ending 1000 pairs took):"
"${PSQL[@]}" -F ' ' -c "
  SELECT x.id, round(extract(epoch FROM min(p.finished_at) - (x.requested_at + interval '5 seconds'))::numeric, 3),
         round(extract(epoch FROM max(p.finished_at) - min(p.finished_at))::numeric, 3)
    FROM execution_pairs p JOIN executions x ON x.id = p.execution_id
   WHERE x.plan_id = 9000 GROUP BY x.id ORDER BY x.id"

# b. the sweep's cost at IN_FLIGHT in-flight pairs
"${PSQL[@]}" -v executions=$((IN_FLIGHT / 1000)) -f bench/deadlines-inflight.sql
log "b. in flight: $("${PSQL[@]}" -c "SELECT count(*) FILTER (WHERE status = 'QUEUED') || ' QUEUED, ' || count(*) FILTER (WHERE status = 'RUNNING') || ' RUNNING' FROM execution_pairs WHERE status IN ('QUEUED', 'RUNNING')")"
log "one round, EXPLAIN (ANALYZE, BUFFERS), each statement (rolled back):"
grep -E '^(WITH|SELECT)' bench/deadlines-sweep.pgbench | while IFS= read -r statement; do
  "${PSQL[@]}" -c "BEGIN" -c "EXPLAIN (ANALYZE, BUFFERS, SUMMARY) $statement" -c "ROLLBACK" >"$OUT/plan.txt"
  echo "  $(grep -oE '^ *(Update|Aggregate|Result|Limit)[^(]*' "$OUT/plan.txt" | head -1 | xargs): \
$(grep -m1 -oE 'Buffers: [^)]*' "$OUT/plan.txt" | head -1), $(grep -E 'Execution Time' "$OUT/plan.txt" | xargs)"
done
pgbench -n -r -t "$ROUNDS" -f bench/deadlines-sweep.pgbench "$DATABASE_URL" >"$OUT/pgbench.txt" 2>&1
round_ms=$(awk '/latency average/ { print $4 }' "$OUT/pgbench.txt")
log "$ROUNDS rounds replayed: $round_ms ms a round (all statements, one client), so $(awk -v r="$round_ms" 'BEGIN { printf "%.1f", r * 30 }') ms of database time a minute at 30 rounds a minute; per statement (ms):"
awk '/^ +[0-9.]+ +[0-9]+ +(BEGIN|WITH|COMMIT|SELECT)/ { printf "  %s %s\n", $1, substr($3, 1, 6) }' "$OUT/pgbench.txt" >&2

db_counters() {
  "${PSQL[@]}" -F ' ' -c "SELECT xact_commit, blks_hit, blks_read, tup_returned, tup_fetched, tup_updated
                            FROM pg_stat_database WHERE datname = 'plan_queue_bench_deadlines'"
}
start_service
sleep 2
before=$(db_counters)
sleep "$SWEEP_SECS"
after=$(db_counters)
stop_service
log "the service idle for ${SWEEP_SECS}s at $IN_FLIGHT in-flight pairs (sweep, relay, consumers), database counters:"
paste <(echo "$before" | tr ' ' '\n') <(echo "$after" | tr ' ' '\n') \
  | awk 'BEGIN { split("commits blocks_hit blocks_read tuples_returned tuples_fetched tuples_updated", n, " ") }
         { printf "  %s %d\n", n[NR], $2 - $1 }' >&2
