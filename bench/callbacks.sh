#!/usr/bin/env bash
# Callback throughput (contract, section 21): 5 000 finished executions, each
# with a callbackUrl and a due delivery, sent by `serve`'s deliverer (8 at
# once, connections kept alive) to a local HTTP/1.1 receiver that answers 204
# at once; against the limit of the same receiver driven by wrk with the same
# concurrency and body: 8 kept-alive connections (the limit the ratio is
# against, as the deliverer reuses its connections), and for comparison a new
# connection per request (`Connection: close`).
# Usage: bench/callbacks.sh   (BENCH_BIN=target/debug/plan-queue for a debug
# build; EXECUTIONS, LIMIT_SECS, RECEIVER_PORT are knobs). Needs psql, wrk,
# python3.
set -euo pipefail
cd "$(dirname "$0")/.."
# a port and exchange of its own: bench/run.sh may run beside it on 18080
BENCH_PORT=${BENCH_PORT:-18098}
source bench/common.sh
export AMQP_EXCHANGE=bench-callbacks
export DATABASE_URL="$DB_SERVER/plan_queue_callbacks_bench"
EXECUTIONS=${EXECUTIONS:-5000}
LIMIT_SECS=${LIMIT_SECS:-10}
RECEIVER_PORT=${RECEIVER_PORT:-18099}
HOOK="http://127.0.0.1:$RECEIVER_PORT/hook"
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# the receiver: a threaded Python HTTP/1.1 server (a thread per connection,
# kept alive unless the client asks to close), 204 to every POST
python3 - "$RECEIVER_PORT" <<'PY' & PIDS+=($!)
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
ThreadingHTTPServer.request_queue_size = 128
# wrk resets its kept-alive connections when it stops: not worth a traceback
ThreadingHTTPServer.handle_error = lambda *args: None
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
PY
log "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%S) UTC"
for _ in $(seq 50); do curl -s -o /dev/null -X POST "$HOOK" && break; sleep 0.1; done

psql -X -q "$DB_SERVER/postgres" -c "DROP DATABASE IF EXISTS plan_queue_callbacks_bench WITH (FORCE)" \
  -c "CREATE DATABASE plan_queue_callbacks_bench"
"$BIN" migrate >/dev/null
"$BIN" seed --file fixtures/demo.json >/dev/null
# EXECUTIONS copies of a finished demo execution, each with the callbackUrl
# and one due delivery of a ~700-byte execution.finished body
psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" <<SQL
INSERT INTO executions
SELECT (jsonb_populate_record(NULL::executions,
          to_jsonb(x) || jsonb_build_object('id', 900000 + g, 'callback_url', '$HOOK'))).*
  FROM executions x, generate_series(1, $EXECUTIONS) g
 WHERE x.id = (SELECT min(id) FROM executions WHERE finished_at IS NOT NULL);
INSERT INTO callback_deliveries (event_id, execution_id, url, body)
SELECT gen_random_uuid(), id, callback_url,
       json_build_object('eventId', gen_random_uuid(), 'event', 'execution.finished',
                         'executionId', id, 'planId', plan_id, 'status', 'FINISHED',
                         'padding', repeat('x', 500))::text
  FROM executions WHERE id > 900000;
SQL
BODY=$(psql -X -Atc "SELECT body FROM callback_deliveries LIMIT 1" "$DATABASE_URL")
log "$(psql -X -Atc "SELECT count(*) FROM callback_deliveries" "$DATABASE_URL") deliveries due, body $(printf %s "$BODY" | wc -c) bytes"

# the limits: the receiver under wrk, 8 connections, kept alive (the limit)
# and a new connection each request (for comparison)
wrk_limit() { # name, extra lua line
  cat > "$WORK/$1.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["Content-Type"] = "application/json"
$2
LUA
  wrk -t2 -c8 -d"${LIMIT_SECS}s" -s "$WORK/$1.lua" "$HOOK" > "$WORK/$1.txt"
  log "limit $1: $(grep -E 'Requests/sec|Socket errors|Non-2xx' "$WORK/$1.txt" | tr -s ' ' | paste -sd';')"
  awk '/^Requests\/sec/ { print $2 }' "$WORK/$1.txt"
}
LIMIT=$(wrk_limit keepalive "")
LIMIT_CLOSE=$(wrk_limit close 'wrk.headers["Connection"] = "close"')

# plan-queue delivers them
CALLBACK_ALLOWED_HOSTS=127.0.0.1 CALLBACK_SECRET=bench-secret "$BIN" serve & SERVE=$!
PIDS+=("$SERVE")
STARTED=$(date +%s)
until [ "$(psql -X -Atc "SELECT count(*) FROM callback_deliveries WHERE delivered_at IS NULL" "$DATABASE_URL")" = 0 ]; do
  kill -0 "$SERVE" 2>/dev/null || { log "serve exited"; exit 1; }
  [ $(($(date +%s) - STARTED)) -lt 300 ] || { log "not all delivered within 300 s"; exit 1; }
  sleep 0.5
done
psql -X -At -F ' ' "$DATABASE_URL" <<SQL | tee "$WORK/result.txt"
SELECT 'result delivered', count(*) FROM callback_deliveries WHERE delivered_at IS NOT NULL;
SELECT 'result attempts', sum(attempts) FROM callback_deliveries;
-- a settlement statement stamps its rows with one clock_timestamp()
SELECT 'result settle_statements', count(DISTINCT delivered_at) FROM callback_deliveries;
SELECT 'result deliveries_per_s',
       round(((count(*) - 1) / extract(epoch FROM max(delivered_at) - min(delivered_at)))::numeric, 1)
  FROM callback_deliveries;
SQL
RATE=$(result deliveries_per_s "$WORK/result.txt")
echo "result limit_wrk_keepalive_per_s $LIMIT"
echo "result limit_wrk_close_per_s $LIMIT_CLOSE"
awk -v r="$RATE" -v l="$LIMIT" 'BEGIN { printf "result ratio %.2f\n", r / l }'
awk -v r="$RATE" -v l="$LIMIT_CLOSE" 'BEGIN { printf "result ratio_to_close %.2f\n", r / l }'
log "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
