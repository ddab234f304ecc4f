#!/usr/bin/env bash
# The benchmark of bench/BENCHMARKS.md, in one run on this machine:
# limit_db (pgbench of bench/reference-2pair.pgbench, the unavoidable database
# work, for 2 and 20 pairs; the service's own statement replayed as a
# diagnostic), limit_broker (lapin publisher), then plan-queue itself at
# saturation (reruns spread over the plans, on one plan's disjoint pairs, on
# one pair), CPU milliseconds per rerun from /proc, open-loop 25 % and 50 %,
# one 1000-pair request and a soak, the reads of issue 22 under the 50 % load,
# flakiness (bench/flakiness.sh) and result ingestion (bench/loop.sh's first
# part); prints one table with issue 11's and issue 22's ratios.
#
# Needs PostgreSQL and RabbitMQ as for `cargo test` (127.0.0.1, postgres trust
# auth, guest/guest), pgbench and psql. Uses its own database and exchange.
#
#   bench/run.sh                  # quick run, a few minutes
#   SOAK_SECS=600 bench/run.sh    # with the 10-minute soak
#   bench/run.sh --smoke          # seconds: checks the harness works, numbers mean nothing
#
# Knobs (environment): BENCH_SECS (each load phase, default 8), SOAK_SECS
# (default 20), PG_SECS (each pgbench client count, default 5), PLANS (default
# 500), RERUNS (the big plan's reruns for the reads, 49), READ_SECS (each
# read row, 10), BENCH_PORT (18080), BENCH_DATABASE, BENCH_EXCHANGE, and the service's own (DB_POOL_SIZE, RELAY_BATCH_SIZE,
# RUST_LOG, ...) which are passed through. BENCH_BIN runs another plan-queue
# binary (e.g. an older build, for before/after); BENCH_NO_BUILD=1 skips cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[[ "${1:-}" == "--smoke" ]] && SMOKE=1
BENCH_SECS=${BENCH_SECS:-8}
SOAK_SECS=${SOAK_SECS:-20}
PG_SECS=${PG_SECS:-5}
PLANS=${PLANS:-500}
RERUNS=${RERUNS:-49}
READ_SECS=${READ_SECS:-10}
SCENARIOS=15
PG_CLIENTS=${PG_CLIENTS:-"1 4 8 16 32"}
LOAD_CONNECTIONS=${LOAD_CONNECTIONS:-"8 32"}
ONE_PLAN_CONNECTIONS=${ONE_PLAN_CONNECTIONS:-32}
BROKER_WINDOWS=${BROKER_WINDOWS:-"1,16,64,256,1024"}
BROKER_SECS=${BROKER_SECS:-3}
if ((SMOKE)); then
  BENCH_SECS=1 SOAK_SECS=1 PG_SECS=1 PLANS=20 PG_CLIENTS="4" LOAD_CONNECTIONS="4" ONE_PLAN_CONNECTIONS=4
  BROKER_WINDOWS="64" BROKER_SECS=1 RERUNS=3 READ_SECS=1
  export REQUESTS=20 WARMUP=2
fi
# shellcheck source=bench/common.sh
. bench/common.sh
LOAD=$EXAMPLES/bench-load
BROKER=$EXAMPLES/bench-broker
OUT=$(mktemp -d)
PSQL=(psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL")
declare -A R

reset_db() { "${PSQL[@]}" -f bench/reset.sql >/dev/null; }

SERVICE_PID=
cleanup() {
  if [[ -n "$SERVICE_PID" ]]; then kill "$SERVICE_PID" 2>/dev/null || true; wait "$SERVICE_PID" 2>/dev/null || true; fi
  rm -rf "$OUT"
}
trap cleanup EXIT

log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
  log "building (release)"
  cargo build --release --quiet --bin plan-queue --example bench-load --example bench-broker --example bench-results
fi

log "database $BENCH_DATABASE: drop, migrate and seed $PLANS plans"
psql -X -q "$DB_SERVER/postgres" -c "DROP DATABASE IF EXISTS $BENCH_DATABASE WITH (FORCE)"
"$BIN" migrate >/dev/null 2>&1
"${PSQL[@]}" -v plans="$PLANS" -v scenarios="$SCENARIOS" -f bench/seed.sql >/dev/null

# ---- limit_db: the unavoidable database work of a rerun (bench/reference-2pair.pgbench) ----
pg_sweep() { # script half -> "best_tps best_clients"; logs each client count; CPU of the best in $OUT/pgcpu-<script>-<half>
  local script=$1 half=$2 best=0 best_c=0 c tps cpu t0
  for c in $PG_CLIENTS; do
    reset_db
    t0=$(machine_ticks)
    tps=$(pgbench -n -M prepared -f "$script" -D plans="$PLANS" -D scenarios="$SCENARIOS" -D half="$half" \
            -c "$c" -j 2 -T "$PG_SECS" "$DATABASE_URL" 2>/dev/null \
          | awk '/^tps/ { print int($3) }')
    cpu=$(machine_ms "$t0" "$(machine_ticks)" "$((${tps:-0} * PG_SECS))")
    log "$(basename "$script") ($((2 * half)) pairs): $c clients: $tps tx/s; machine CPU per tx: $cpu"
    if ((${tps:-0} > best)); then best=$tps best_c=$c; echo "$cpu" >"$OUT/pgcpu-$(basename "$script")-$half"; fi
  done
  echo "$best $best_c"
}
# the yardstick must not move with our code (our_triggers, bench/common.sh)
our_triggers DISABLE
read -r best_db best_db_clients < <(pg_sweep bench/reference-2pair.pgbench 1)
R[limit_db]="$best_db tx/s ($best_db_clients clients)"
read -r best_db20 best_db20_clients < <(pg_sweep bench/reference-2pair.pgbench 10)
R[limit_db20]="$best_db20 tx/s = $((best_db20 * 20)) msg/s ($best_db20_clients clients)"
reset_db
our_triggers ENABLE
# diagnostic: the service's own statement replayed (moves with our SQL)
read -r best_own best_own_clients < <(pg_sweep bench/rerun-2pair.pgbench 1)
R[own_sql]="$best_own tx/s ($best_own_clients clients)"
reset_db

# ---- the service ----
"$BIN" serve >"$OUT/service.log" 2>&1 &
SERVICE_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null || { cat "$OUT/service.log" >&2; exit 1; }
export BENCH_TOKEN=$("$BIN" token --user-id 1 --ttl-secs 36000)
load() { "$LOAD" "$@" --plans "$PLANS" --scenarios "$SCENARIOS"; }
rss_idle=$(rss_kib "$SERVICE_PID")

log "warm-up"
load closed --pairs 2 --connections 8 --secs 2 >/dev/null

# ---- limit_broker: confirmed persistent publishes of our message size ----
size=$("${PSQL[@]}" -At -c "SELECT coalesce(round(avg(octet_length(body))), 330) FROM dispatches")
"$BROKER" --secs "$BROKER_SECS" --size "$size" --windows "$BROKER_WINDOWS" >"$OUT/broker"
for w in ${BROKER_WINDOWS//,/ }; do log "limit_broker: window $w: $(result "window_$w" "$OUT/broker") msg/s"; done
best_broker=$(result best "$OUT/broker")
best_window=$(awk -v b="$best_broker" '$1 == "result" && $3 == b && $2 ~ /^window_/ { sub("window_", "", $2); print $2; exit }' "$OUT/broker")
R[limit_broker]="$best_broker msg/s (window $best_window, $size B)"

reset_db

saturate() { # label pairs connections [load args...] -> $OUT/best "rps connections"; records peak RSS
  local label=$1 pairs=$2 conns=$3 best=0 best_c=0 r hwm t0 m0 m1 secs split cpu
  shift 3
  for c in $conns; do
    reset_db
    echo 5 >"/proc/$SERVICE_PID/clear_refs" 2>/dev/null || true
    load closed --pairs "$pairs" --connections "$c" --secs "$BENCH_SECS" "$@" >"$OUT/sat" &
    sleep 1; cpu_ticks >"$OUT/cpu0"; t0=$(date +%s.%N); m0=$(machine_ticks)
    sleep "$(awk -v s="$BENCH_SECS" 'BEGIN { print (s > 2 ? s - 2 : 0.5) }')"
    cpu_ticks >"$OUT/cpu1"; m1=$(machine_ticks)
    secs=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { print a - b }')
    split=$(cpu_split "$OUT/cpu0" "$OUT/cpu1" "$secs")
    wait $!
    r=$(result e2e_rps "$OUT/sat")
    result requests "$OUT/sat" >>"$OUT/requests-$label"
    cpu=$(cpu_ms "$OUT/cpu0" "$OUT/cpu1" "$(awk -v r="$r" -v s="$secs" 'BEGIN { print r * s }')")
    cpu="machine $(machine_ms "$m0" "$m1" "$(awk -v r="$r" -v s="$secs" 'BEGIN { print r * s }')"); $cpu"
    log "$label: $c connections: e2e $r req/s (http $(result http_rps "$OUT/sat") req/s, errors $(result errors "$OUT/sat")), peak RSS $(mib "$(hwm_kib "$SERVICE_PID")") MiB"
    log "  CPU share of all cores while loaded: $split"
    log "  CPU per request: $cpu"
    if awk -v a="$r" -v b="$best" 'BEGIN { exit !(a > b) }'; then
      best=$r best_c=$c
      echo "$split" >"$OUT/split-$label"
      echo "$cpu" >"$OUT/cpu-$label"
    fi
    hwm=$(hwm_kib "$SERVICE_PID"); if ((hwm > PEAK_RSS)); then PEAK_RSS=$hwm; fi
  done
  echo "$best $best_c" >"$OUT/best"
}
PEAK_RSS=0
db_counters() { # -> "commits dispatch_updates"
  "${PSQL[@]}" -At -F' ' -c "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
                                   (SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'dispatches')"
}
read -r commits0 updates0 < <(db_counters)
saturate spread2 2 "$LOAD_CONNECTIONS"; read -r sat2 sat2_c <"$OUT/best"
sleep 1 # statistics are reported at the end of each transaction, with a short delay
read -r commits1 updates1 < <(db_counters)
reruns=$(awk '{ n += $1 } END { print n }' "$OUT/requests-spread2")
R[relay_db]="$(awk -v c="$((commits1 - commits0))" -v u="$((updates1 - updates0))" -v r="$reruns" 'BEGIN { printf "%.2f commits per rerun, %.2f dispatch-row updates per message (%d reruns)", c / r, u / (2 * r), r }')"
R[service_2pair]="$sat2 req/s ($sat2_c connections)"
saturate oneplan2 2 "$ONE_PLAN_CONNECTIONS" --target one-plan; read -r one2 one2_c <"$OUT/best"
R[one_plan]="$one2 req/s ($one2_c connections)"
saturate samepair2 2 "$ONE_PLAN_CONNECTIONS" --target same-pair; read -r same2 same2_c <"$OUT/best"
R[same_pair]="$same2 req/s ($same2_c connections)"
if command -v wrk >/dev/null; then # the HTTP side alone, by a standard tool
  reset_db
  PLANS=$PLANS SCENARIOS=$SCENARIOS wrk -t2 -c"$sat2_c" -d"${BENCH_SECS}s" -s bench/rerun.lua \
    "http://127.0.0.1:$PORT" >"$OUT/wrk" 2>&1 || true
  R[wrk]="$(awk '/^Requests\/sec/ { print $2 }' "$OUT/wrk") req/s answered ($sat2_c connections; non-2xx: $(awk '/Non-2xx/ { n = $5 } END { print n + 0 }' "$OUT/wrk"))"
  log "wrk 2-pair HTTP only: ${R[wrk]}"
  sleep 2 # let the relay drain before the next phase resets the data
else
  R[wrk]="skipped: wrk not installed (apt-get install wrk)"
fi
saturate spread20 20 "$LOAD_CONNECTIONS"; read -r sat20 sat20_c <"$OUT/best"
msg20=$(awk -v r="$sat20" 'BEGIN { printf "%.0f", r * 20 }')
R[service_20pair]="$sat20 req/s ($sat20_c connections; $msg20 msg/s)"

confirm_latency() { # -> "p50 p99" of created_at -> published_at, ms
  "${PSQL[@]}" -At -F' ' -c "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY d))::numeric, 1),
                                   round((percentile_cont(0.99) WITHIN GROUP (ORDER BY d))::numeric, 1)
                              FROM (SELECT extract(epoch FROM published_at - created_at) * 1000 AS d
                                      FROM dispatches WHERE published_at IS NOT NULL) x"
}
for pct in 25 50; do
  reset_db
  rate=$(awk -v r="$sat2" -v p="$pct" 'BEGIN { printf "%.0f", r * p / 100 }')
  load open --pairs 2 --rate "$rate" --secs "$BENCH_SECS" >"$OUT/open$pct"
  read -r c50 c99 < <(confirm_latency)
  R[open$pct]="$rate req/s: p50 $(result latency_p50_ms "$OUT/open$pct") / p99 $(result latency_p99_ms "$OUT/open$pct") / p99.9 $(result latency_p999_ms "$OUT/open$pct") ms (errors $(result errors "$OUT/open$pct"))"
  R[confirm$pct]="p50 $c50 / p99 $c99 ms (consumed: p50 $(result consumed_p50_ms "$OUT/open$pct") / p99 $(result consumed_p99_ms "$OUT/open$pct") ms)"
done

reset_db
load single >"$OUT/single"
exec_id=$(result execution_id "$OUT/single")
confirmed_ms=$("${PSQL[@]}" -At -c "SELECT round((extract(epoch FROM max(published_at) - min(created_at)) * 1000)::numeric, 1)
                                      FROM dispatches WHERE execution_id = $exec_id")
R[big]="$(result pairs "$OUT/single") pairs: 200 after $(result answered_ms "$OUT/single") ms; all confirmed $confirmed_ms ms after the transaction began; all consumed after $(result consumed_ms "$OUT/single") ms"

reset_db
rss_before=$(rss_kib "$SERVICE_PID")
rate=$(awk -v r="$sat2" 'BEGIN { printf "%.0f", r / 2 }')
load open --pairs 2 --rate "$rate" --secs "$SOAK_SECS" >"$OUT/soak"
rss_after=$(rss_kib "$SERVICE_PID")
R[rss]="idle $(mib "$rss_idle") MiB; peak at saturation $(mib "$PEAK_RSS") MiB; soak ${SOAK_SECS} s at $rate req/s: before $(mib "$rss_before") MiB, after $(mib "$rss_after") MiB (soak p99 $(result latency_p99_ms "$OUT/soak") ms, errors $(result errors "$OUT/soak"))"

# ---- reads a live page polls (issue 22), under the 50 % rerun load ----
# The big plan's chain grows to 1000 pairs x (RERUNS + 1) attempts
# (bench/loop-dataset.sql, every attempt then set terminal, some FAILED);
# the open-loop 2-pair rerun load at 50 % of saturation (other plans) runs
# while bench-load get reads, open loop, one row after the other:
# attempts=none; attempts=all (served from the results cache after the
# first read); attempts=all with the plan's results_version bumped every
# 50 ms by a psql loop, so (nearly) every read is a cache miss; and a 304
# (If-None-Match: the current tag). After the soak, so that the RSS row
# stays that of the rerun path.
reset_db
"${PSQL[@]}" -v plans="$PLANS" -v reruns="$RERUNS" -f bench/loop-dataset.sql >/dev/null
"${PSQL[@]}" -c "UPDATE execution_pairs SET status = CASE WHEN (scenario_id + environment_id + attempt) % 7 = 0 THEN 'FAILED' ELSE 'PASSED' END WHERE execution_id > 1000000" \
             -c "UPDATE executions SET open_pairs = 0 WHERE id > 1000000" -c "VACUUM ANALYZE executions, execution_pairs, plan_pair_latest" >/dev/null
BIG=$((PLANS + 1))
rate=$(awk -v r="$sat2" 'BEGIN { printf "%.0f", r / 2 }')
load open --pairs 2 --rate "$rate" --secs "$((4 * READ_SECS + 6))" >"$OUT/open-reads" &
open_pid=$!
sleep 1
read_row() { # name path rate [get args...] -> R[name]
  local name=$1 path=$2 rps=$3
  shift 3
  load get --path "$path" --rate "$rps" --secs "$READ_SECS" "$@" >"$OUT/get-$name"
  R[$name]="p50 $(result latency_p50_ms "$OUT/get-$name") / p99 $(result latency_p99_ms "$OUT/get-$name") / max $(result latency_max_ms "$OUT/get-$name") ms ($(result requests "$OUT/get-$name") answers at $rps/s, $(result not_modified "$OUT/get-$name") of them 304, errors $(result errors "$OUT/get-$name"))"
  log "GET $path $*: ${R[$name]}"
}
read_row results_none "/plans/$BIG/results?attempts=none" 10
read_row results_all "/plans/$BIG/results" 5
PGAPPNAME=bench-bump "${PSQL[@]}" -c "DO \$\$ BEGIN FOR i IN 1..$((READ_SECS * 20 + 40)) LOOP
                   UPDATE plans SET results_version = results_version + 1 WHERE id = $BIG;
                   COMMIT; PERFORM pg_sleep(0.05); END LOOP; END \$\$" >/dev/null 2>&1 &
bump_pid=$!
sleep 0.5
read_row results_all_miss "/plans/$BIG/results" 5
"${PSQL[@]}" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bench-bump'" >/dev/null
wait "$bump_pid" 2>/dev/null || true
read_row results_304 "/plans/$BIG/results" 20 --if-none-match current
wait "$open_pid"
R[open_reads]="$rate req/s: p99 $(result latency_p99_ms "$OUT/open-reads") ms (errors $(result errors "$OUT/open-reads")); service RSS after the reads $(mib "$(rss_kib "$SERVICE_PID")") MiB"
R[results_size]="$(curl -fsS -H "authorization: Bearer $BENCH_TOKEN" "http://127.0.0.1:$PORT/plans/$BIG/results" | wc -c) B (attempts=all), $(curl -fsS -H "authorization: Bearer $BENCH_TOKEN" "http://127.0.0.1:$PORT/plans/$BIG/results?attempts=none" | wc -c) B (attempts=none)"

# ---- flakiness over 100 runs x 1000 pairs (bench/flakiness.sh: its own database and service) ----
kill "$SERVICE_PID" 2>/dev/null || true; wait "$SERVICE_PID" 2>/dev/null || true; SERVICE_PID=
BENCH_NO_EXPLAIN=1 bench/flakiness.sh >"$OUT/flakiness" 2>"$OUT/flakiness.log" || { cat "$OUT/flakiness.log" >&2; exit 1; }
R[flakiness]="p50 $(result flakiness_p50_ms "$OUT/flakiness") / p99 $(result flakiness_p99_ms "$OUT/flakiness") / max $(result flakiness_max_ms "$OUT/flakiness") ms ($(result requests "$OUT/flakiness") sequential requests, idle service)"

# ---- result ingestion (bench/loop.sh's first part: its own database, exchange and port) ----
log "result ingestion: bench/loop.sh, LOOP_PHASES=ingestion"
loop_env=(BENCH_NO_BUILD=1 LOOP_PHASES=ingestion BENCH_DATABASE="${BENCH_DATABASE}_loop"
          BENCH_EXCHANGE="$AMQP_EXCHANGE-loop" BENCH_PORT=$((PORT + 1)) PLANS="$PLANS" PG_SECS="$PG_SECS")
((SMOKE)) && loop_env+=(RERUNS=1)
env "${loop_env[@]}" bench/loop.sh >"$OUT/loop" 2>"$OUT/loop.log" || { cat "$OUT/loop.log" >&2; exit 1; }
R[ingestion]="$(result applied_rps "$OUT/loop") results/s applied, against min(limit_db 250 a transaction $(result ingestion_limit_db "$OUT/loop"), limit_broker publish + consume + ack $(result ingestion_limit_broker "$OUT/loop")) = $(result ingestion_limit "$OUT/loop") results/s (publish-only: $(result ingestion_broker_publish_only "$OUT/loop") msg/s)"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
limit20=$(awk -v d="$((best_db20 * 20))" -v b="$best_broker" 'BEGIN { print (d < b ? d : b) }')

# What the machine allows at most, if PostgreSQL did per rerun exactly the
# reference's work and every other process (service, broker, load generator)
# what it did in the saturation phase: cores x 1000 ms / (the reference's
# machine CPU per transaction + the CPU per rerun of every process but
# postgres), as a ratio of the row's limit. A ratio above it needs the
# database to do less than the reference, or the others less than measured.
ms_of() { # "<name>" file -> the number after "<name> " in a cpu line
  sed -n "s/.*$1 \([0-9.]*\).*/\1/p" "$2" | head -1
}
ceiling() { # reference-cpu-file service-cpu-file messages-per-request limit -> "ceiling_rps ratio nonpg_ms ref_ms"
  local ref total pg
  ref=$(ms_of machine "$1" 2>/dev/null || true); [[ -n "$ref" ]] || ref=$(sed -n 's/^\([0-9.]*\) ms.*/\1/p' "$1")
  total=$(ms_of total "$2"); pg=$(ms_of postgres "$2")
  awk -v c="$(nproc)" -v r="$ref" -v t="$total" -v p="${pg:-0}" -v m="$3" -v l="$4" 'BEGIN {
    n = t - p; x = (r + n > 0 ? c * 1000 / (r + n) : 0)
    printf "%.0f %.2f %.2f %.2f\n", x, (l > 0 ? x * m / l : 0), n, r }'
}
read -r ceil2 ceil2_ratio nonpg2 ref2 < <(ceiling "$OUT/pgcpu-reference-2pair.pgbench-1" "$OUT/cpu-spread2" 1 "$best_db")
read -r ceil20 ceil20_ratio nonpg20 ref20 < <(ceiling "$OUT/pgcpu-reference-2pair.pgbench-10" "$OUT/cpu-spread20" 20 "$limit20")

printf '\n| row | result | ratio (target) |\n|---|---|---|\n'
printf '| limit_db (reference-2pair.pgbench, 2 pairs) | %s | |\n' "${R[limit_db]}"
printf '| limit_db, 20 pairs (reference-2pair.pgbench, half=10) | %s | |\n' "${R[limit_db20]}"
printf '| diagnostic: the service statement replayed (rerun-2pair.pgbench) | %s | %s of limit_db |\n' "${R[own_sql]}" "$(ratio "$best_own" "$best_db")"
printf '| machine CPU per transaction under pgbench (server and client), reference / the service statement | %s / %s | |\n' "$(cat "$OUT/pgcpu-reference-2pair.pgbench-1")" "$(cat "$OUT/pgcpu-rerun-2pair.pgbench-1")"
printf '| limit_broker (confirmed persistent publishes) | %s | |\n' "${R[limit_broker]}"
printf '| relay and service statements in the database, 2-pair saturation phases | %s | |\n' "${R[relay_db]}"
printf '| 2-pair reruns over %s plans, end to end | %s | **%s** of limit_db (≥ 0.8) |\n' "$PLANS" "${R[service_2pair]}" "$(ratio "$sat2" "$best_db")"
printf '| 2-pair reruns, one plan, a different pair each | %s | **%s** of the row above (≥ 0.8) |\n' "${R[one_plan]}" "$(ratio "$one2" "$sat2")"
printf '| 2-pair reruns, one plan, the same pair each time | %s | %s of the spread row (serial by design) |\n' "${R[same_pair]}" "$(ratio "$same2" "$sat2")"
printf '| CPU per 2-pair rerun (all processes, /proc) | %s | |\n' "$(cat "$OUT/cpu-spread2")"
printf '| CPU share of all cores at 2-pair saturation | %s | |\n' "$(cat "$OUT/split-spread2")"
printf '| ceiling of the 2-pair row on this machine: postgres doing only the reference'"'"'s work (%s ms a rerun), the other processes %s ms | %s req/s | %s of limit_db |\n' "$ref2" "$nonpg2" "$ceil2" "$ceil2_ratio"
printf '| service 2-pair, HTTP answers only (wrk) | %s | |\n' "${R[wrk]}"
printf '| 20-pair reruns, end to end | %s | **%s** of min(limit_db 20-pair, limit_broker) = %s msg/s (≥ 0.6) |\n' "${R[service_20pair]}" "$(ratio "$msg20" "$limit20")" "$limit20"
printf '| CPU per 20-pair rerun (all processes, /proc) | %s | |\n' "$(cat "$OUT/cpu-spread20")"
printf '| ceiling of the 20-pair row on this machine: postgres doing only the reference'"'"'s work (%s ms a rerun), the other processes %s ms | %s req/s | %s of its limit |\n' "$ref20" "$nonpg20" "$ceil20" "$ceil20_ratio"
printf '| latency at 25 %% (open loop) | %s | |\n' "${R[open25]}"
printf '| latency at 50 %% (open loop) | %s | p99 ≤ 10 ms |\n' "${R[open50]}"
printf '| accept → confirm at 25 %% | %s | |\n' "${R[confirm25]}"
printf '| accept → confirm at 50 %% | %s | p99 ≤ 20 ms |\n' "${R[confirm50]}"
printf '| one 1000-pair request | %s | |\n' "${R[big]}"
printf '| GET /plans/{big}/results?attempts=none, 1000 pairs x %s attempts, under the 50 %% rerun load | %s | p99 ≤ 50 ms |\n' "$((RERUNS + 1))" "${R[results_none]}"
printf '| the same, attempts=all (results cache hit) | %s | p99 ≤ 150 ms |\n' "${R[results_all]}"
printf '| the same, attempts=all, every read a cache miss (version bumped every 50 ms) | %s | p99 ≤ 150 ms |\n' "${R[results_all_miss]}"
printf '| a 304 of the same (If-None-Match current) | %s | p99 ≤ 5 ms |\n' "${R[results_304]}"
printf '| reruns meanwhile (open loop, 50 %%); answer sizes | %s; %s | |\n' "${R[open_reads]}" "${R[results_size]}"
printf '| GET /plans/614/flakiness?runs=100, 100 runs x 1000 pairs (bench/flakiness.sh) | %s | p99 ≤ 100 ms |\n' "${R[flakiness]}"
printf '| results applied/s (bench/loop.sh, RUNNING and PASSED for each pair) | %s | **%s** of its limit (≥ 0.8) |\n' "${R[ingestion]}" "$(result ingestion_ratio "$OUT/loop")"
printf '| RSS | %s | flat, ≤ 64 MiB |\n' "${R[rss]}"
printf '\nload average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
warnings=$(grep -c -E ' (WARN|ERROR) ' "$OUT/service.log" || true)
printf 'service log: %s warnings or errors%s\n' "$warnings" "$( ((warnings > 0)) && echo ", first ones:" )"
grep -E ' (WARN|ERROR) ' "$OUT/service.log" | head -5 || true
