#!/usr/bin/env bash
# Latency of GET /plans/614/flakiness?runs=100 on 100 runs x 1 000 pairs with
# reruns (bench/flakiness-dataset.sql): a database of its own, the service
# started on it, REQUESTS sequential requests after WARMUP, p50/p90/p99/max
# from curl's time_total. Also the query's EXPLAIN (ANALYZE, BUFFERS), unless
# BENCH_NO_EXPLAIN is set (bench/run.sh). Knobs: REQUESTS, WARMUP, BENCH_PORT,
# BENCH_DATABASE (its database is that name + _flakiness).
# Usage: bench/flakiness.sh   (BENCH_BIN=target/debug/plan-queue for a debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
export DATABASE_URL="$DB_SERVER/${BENCH_DATABASE}_flakiness"
REQUESTS=${REQUESTS:-500}
WARMUP=${WARMUP:-50}

psql "$DB_SERVER/postgres" -qc "DROP DATABASE IF EXISTS ${BENCH_DATABASE}_flakiness WITH (FORCE)" \
  -c "CREATE DATABASE ${BENCH_DATABASE}_flakiness"
"$BIN" migrate >&2
"$BIN" seed --file fixtures/demo.json >&2
psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -qf bench/flakiness-dataset.sql
psql "$DATABASE_URL" -qc "VACUUM ANALYZE execution_pairs, plan_pair_latest"
log "$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM execution_pairs") pairs"

"$BIN" serve >&2 & SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break
  sleep 0.2
done
TOKEN=$("$BIN" token --user-id 13 --authority PLAN_READ)
URL="http://127.0.0.1:$PORT/plans/614/flakiness?runs=100"
curl -sf -H "Authorization: Bearer $TOKEN" "$URL" \
  | python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print("bench: runs", d["runs"], "pairs", len(d["pairs"]), "environments", [(e["environmentId"], e["flaky"], e["flakeRate"], e["suspect"]) for e in d["environments"]])' >&2
for _ in $(seq "$WARMUP"); do curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$URL"; done
for _ in $(seq "$REQUESTS"); do
  curl -sf -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" "$URL"
done | sort -n | awk '{ t[NR] = $1 * 1000 } END {
  printf "result flakiness_p50_ms %.1f\nresult flakiness_p90_ms %.1f\nresult flakiness_p99_ms %.1f\nresult flakiness_max_ms %.1f\nresult requests %d\n",
    t[int(NR * 0.5)], t[int(NR * 0.9)], t[int(NR * 0.99)], t[NR], NR }'

[[ -n "${BENCH_NO_EXPLAIN:-}" ]] && exit 0
psql "$DATABASE_URL" -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
WITH runs AS (SELECT x.id FROM executions x WHERE x.plan_id = 614 AND x.kind = 'RUN'
               ORDER BY x.requested_at DESC, x.id DESC LIMIT 100)
SELECT l.scenario_id, l.environment_id, count(*) AS runs,
       count(*) FILTER (WHERE l.first_failed = 1) AS failed_first,
       count(*) FILTER (WHERE l.first_failed < l.last_passed) AS flaky
  FROM runs r JOIN plan_pair_latest l ON l.source_execution_id = r.id
 GROUP BY l.scenario_id, l.environment_id ORDER BY l.scenario_id, l.environment_id"
