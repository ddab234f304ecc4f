#!/usr/bin/env bash
# Catalogue writes (issue 20, bench/BENCHMARKS.md "Catalogue writes"): how
# many `PUT /catalog/plans/{id}` a second plan-queue takes for a plan of
# 1 000 scenarios x 20 environments, against the limit of the same database
# work measured in the same run.
#
# Dataset (`seed --file`, the catalogue's own code path): user 1, project 1,
# scenarios 1-2000, environments 1-40, PLANS plans (64) on body A
# (scenarios 1-1000, environments 1-20); body B is scenarios 1001-2000,
# environments 21-40.
#  - limit: pgbench of bench/reference-catalog-plan.pgbench (lock the plan,
#    version + 1, the 1 020 list rows removed and the other body's 1 020
#    inserted, one round trip) and bench/reference-catalog-plan-same.pgbench
#    (lock and read the plan with its lists: an unchanged PUT), at each of
#    CONCURRENCY (1 4 16) clients, PG_SECS (5) each;
#  - the service: wrk (bench/catalog.lua) at the same concurrencies,
#    BENCH_SECS (8) each, bodies A and B alternating per plan (every PUT
#    replaces all 1 020 rows), then body A again and again (unchanged);
#    answers other than 200 are counted and fail the run;
#  - per changed PUT: machine CPU (/proc/stat) and where it went, database
#    rows and commits (pg_stat_*), in both the pgbench and the wrk phase.
# Every phase starts from bench/catalog-reset.sql (all plans on A, version 1,
# vacuumed).
#
# Needs PostgreSQL and RabbitMQ as the tests do (the service starts only with
# a broker), psql, pgbench and wrk (apt-get install wrk). Its own database
# (plan_queue_bench_catalog) and exchange (bench-catalog), removed at the end.
# BENCH_BIN runs another binary; BENCH_NO_BUILD=1 skips the release build.
#
#   bench/catalog.sh             # about 2 minutes
#   bench/catalog.sh --smoke     # seconds: checks the harness, numbers mean nothing
set -euo pipefail
cd "$(dirname "$0")/.."

PLANS=${PLANS:-64}
CONCURRENCY=${CONCURRENCY:-"1 4 16"}
PG_SECS=${PG_SECS:-5}
BENCH_SECS=${BENCH_SECS:-8}
if [[ "${1:-}" == "--smoke" ]]; then PLANS=8 CONCURRENCY="1 4" PG_SECS=1 BENCH_SECS=1; fi
BENCH_PORT=${BENCH_PORT:-18094}
# shellcheck source=bench/common.sh
. bench/common.sh
export DATABASE_URL="$DB_SERVER/plan_queue_bench_catalog"
export AMQP_EXCHANGE=bench-catalog
OUT=$(mktemp -d)
PSQL=(psql -X -q -At -v ON_ERROR_STOP=1 "$DATABASE_URL")

SERVICE_PID=
cleanup() {
  if [[ -n "$SERVICE_PID" ]]; then kill "$SERVICE_PID" 2>/dev/null || true; wait "$SERVICE_PID" 2>/dev/null || true; fi
  psql -X -q "$DB_SERVER/postgres" -c "DROP DATABASE IF EXISTS plan_queue_bench_catalog WITH (FORCE)" || true
  for q in $(rabbitmqctl -q list_queues name 2>/dev/null | grep -E '^bench-catalog(\.|$)'); do
    rabbitmqctl -q delete_queue "$q" >/dev/null || true
  done
  for x in $(rabbitmqctl -q list_exchanges name 2>/dev/null | grep -E '^bench-catalog(\.|$)'); do
    rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$x\">>), false, <<\"bench\">>)." >/dev/null || true
  done
  rm -rf "$OUT"
}
trap cleanup EXIT

log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S) UTC"
if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
  log "building (release)"
  cargo build --release --quiet --bin plan-queue
fi
log "binary: $BIN"

# ---- dataset ----
awk -v plans="$PLANS" 'BEGIN {
  printf "{\"users\": [{\"id\": 1, \"username\": \"bench\"}],\n"
  printf " \"projects\": [{\"id\": 1, \"name\": \"Catalogue bench\", \"memberIds\": [1]}],\n \"scenarios\": ["
  for (s = 1; s <= 2000; s++) printf "%s{\"id\": %d, \"projectId\": 1, \"name\": \"Scenario %d\"}", (s > 1 ? ",\n  " : ""), s, s
  printf "],\n \"environments\": ["
  for (e = 1; e <= 40; e++) printf "%s{\"id\": %d, \"name\": \"Device %d\", \"platform\": \"ANDROID\", \"version\": \"14\"}", (e > 1 ? ",\n  " : ""), e, e
  printf "],\n \"plans\": ["
  for (p = 1; p <= plans; p++) {
    printf "%s{\"id\": %d, \"projectId\": 1, \"name\": \"Plan %d\", \"frameworkType\": \"APPIUM\", \"scenarioIds\": [", (p > 1 ? ",\n  " : ""), p, p
    for (s = 1; s <= 1000; s++) printf "%s%d", (s > 1 ? "," : ""), s
    printf "], \"environmentIds\": ["
    for (e = 1; e <= 20; e++) printf "%s%d", (e > 1 ? "," : ""), e
    printf "]}"
  }
  print "]}"
}' >"$OUT/dataset.json"
psql -X -q "$DB_SERVER/postgres" -c "DROP DATABASE IF EXISTS plan_queue_bench_catalog WITH (FORCE)"
"$BIN" seed --file "$OUT/dataset.json" >/dev/null
reset_db() { "${PSQL[@]}" -f bench/catalog-reset.sql >/dev/null; sleep 0.7; } # then its rows are in pg_stat_*, not in the next phase's
# rows inserted, deleted and fetched in the plan tables; commits; rollbacks
db_counters() {
  "${PSQL[@]}" -F' ' -c "SELECT sum(n_tup_ins), sum(n_tup_del), sum(seq_tup_read + coalesce(idx_tup_fetch, 0)),
                                (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
                                (SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database())
                           FROM pg_stat_user_tables"
}
# Rows per operation: exact for pgbench (its backends report when they exit);
# a lower bound for the service, whose pooled connections, idle after the
# load, report their last second or so only up to 10 s later (PostgreSQL 15).
per_op() { # before after ops -> "rows inserted / deleted / read, commits per op"
  sleep 0.7 # statistics reach pg_stat_* shortly after each transaction
  read -r i0 d0 f0 c0 r0 <<<"$1"
  read -r i1 d1 f1 c1 r1 <<<"$(db_counters)"
  awk -v n="$2" -v i=$((i1 - i0)) -v d=$((d1 - d0)) -v f=$((f1 - f0)) -v c=$((c1 - c0)) -v r=$((r1 - r0)) \
    'BEGIN { if (n <= 0) { print "n/a"; exit } printf "rows inserted %.0f, deleted %.0f, read %.0f; commits %.2f, rollbacks %.2f", i / n, d / n, f / n, c / n, r / n }'
}

declare -A R
# ---- limit: pgbench ----
pg_phase() { # script clients -> "tps"; logs CPU and rows per transaction
  local script=$1 c=$2 t0 tps counters
  reset_db
  counters=$(db_counters); t0=$(machine_ticks)
  tps=$(pgbench -n -M prepared -f "$script" -D plans="$PLANS" -D clients="$c" \
          -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$PG_SECS" "$DATABASE_URL" 2>"$OUT/pgbench.err" \
        | awk '/^tps/ { printf "%.1f", $3 }')
  [[ -n "$tps" ]] || { cat "$OUT/pgbench.err" >&2; exit 1; }
  log "$(basename "$script") $c clients: $tps tx/s; machine CPU per tx $(machine_ms "$t0" "$(machine_ticks)" "$(awk -v t="$tps" -v s="$PG_SECS" 'BEGIN { print int(t * s) }')"); $(per_op "$counters" "$(awk -v t="$tps" -v s="$PG_SECS" 'BEGIN { print int(t * s) }')")"
  echo "$tps"
}
for c in $CONCURRENCY; do
  R[limit_$c]=$(pg_phase bench/reference-catalog-plan.pgbench "$c")
  R[limit_same_$c]=$(pg_phase bench/reference-catalog-plan-same.pgbench "$c")
done

# ---- the service ----
reset_db
"$BIN" serve >"$OUT/service.log" 2>&1 &
SERVICE_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null || { cat "$OUT/service.log" >&2; exit 1; }
export BENCH_TOKEN=$("$BIN" token --user-id 1 --authority CATALOG_WRITE --ttl-secs 36000)
# one PUT by hand: the body is accepted and changes the plan (version 2)
answer=$(curl -fsS -X PUT "http://127.0.0.1:$PORT/catalog/plans/1" \
  -H "Authorization: Bearer $BENCH_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"projectId\":1,\"name\":\"Plan 1\",\"frameworkType\":\"APPIUM\",\"scenarioIds\":[$(seq -s, 1001 2000)],\"environmentIds\":[$(seq -s, 21 40)]}")
[[ "$(jq -r '.data.version' <<<"$answer")" == 2 ]] || { echo "bench: unexpected answer: ${answer:0:300}" >&2; exit 1; }

wrk_phase() { # mode connections -> "writes/s"; logs CPU split, CPU and rows per PUT, non-200 answers
  local mode=$1 c=$2 threads=$(( $2 < 2 ? 1 : 2 )) rps n counters m0 t0
  reset_db
  counters=$(db_counters); m0=$(machine_ticks); cpu_ticks >"$OUT/cpu0"; t0=$(date +%s.%N)
  MODE=$mode PLANS=$PLANS THREADS=$threads wrk -t"$threads" -c"$c" -d"${BENCH_SECS}s" --latency \
    -s bench/catalog.lua "http://127.0.0.1:$PORT" >"$OUT/wrk" 2>&1
  cpu_ticks >"$OUT/cpu1"
  local secs; secs=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }')
  rps=$(awk '/^Requests\/sec/ { printf "%.1f", $2 }' "$OUT/wrk")
  n=$(awk '/requests in/ { print $1 }' "$OUT/wrk")
  local bad; bad=$(awk '/Non-2xx/ { n = $5 } /Socket errors/ { n += 1 } END { print n + 0 }' "$OUT/wrk")
  if ((bad > 0)); then cat "$OUT/wrk" >&2; tail -5 "$OUT/service.log" >&2; exit 1; fi
  log "PUT ($mode) $c connections: $rps writes/s (p50 $(awk '$1 == "50%" { print $2 }' "$OUT/wrk"), p99 $(awk '$1 == "99%" { print $2 }' "$OUT/wrk"); $n PUTs, all 200)"
  log "  machine CPU per PUT $(machine_ms "$m0" "$(machine_ticks)" "$n"); $(cpu_ms "$OUT/cpu0" "$OUT/cpu1" "$n")"
  log "  CPU share of all cores: $(cpu_split "$OUT/cpu0" "$OUT/cpu1" "$secs")"
  log "  per PUT: $(per_op "$counters" "$n")"
  echo "$rps"
}
log "warm-up"
MODE=same PLANS=$PLANS THREADS=1 wrk -t1 -c1 -d1s -s bench/catalog.lua "http://127.0.0.1:$PORT" >/dev/null 2>&1
for c in $CONCURRENCY; do
  R[put_$c]=$(wrk_phase change "$c")
  R[put_same_$c]=$(wrk_phase same "$c")
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
printf '\n| concurrency | PUT changed, writes/s | limit (reference-catalog-plan.pgbench), tx/s | ratio | PUT unchanged, writes/s | limit (…-same.pgbench), tx/s | ratio |\n|---|---|---|---|---|---|---|\n'
for c in $CONCURRENCY; do
  printf '| %s | %s | %s | **%s** | %s | %s | %s |\n' "$c" "${R[put_$c]}" "${R[limit_$c]}" "$(ratio "${R[put_$c]}" "${R[limit_$c]}")" \
    "${R[put_same_$c]}" "${R[limit_same_$c]}" "$(ratio "${R[put_same_$c]}" "${R[limit_same_$c]}")"
done
printf '\nplans %s (1 000 scenarios x 20 environments each); load average at the end: %s\n' "$PLANS" "$(cut -d' ' -f1-3 /proc/loadavg)"
warnings=$(grep -c -E ' (WARN|ERROR) ' "$OUT/service.log" || true)
printf 'service log: %s warnings or errors\n' "$warnings"
