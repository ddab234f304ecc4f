#!/usr/bin/env bash
# Fuzzes the running service against its own OpenAPI document with
# schemathesis: every operation of GET /openapi.json gets its documented
# examples, the coverage phase's boundary and invalid values, and random
# requests (positive and negative), sent with a valid bearer token. Fails on
# any 5xx, any status, content type, header or body not in the document, a
# schema-invalid request accepted, a missing or broken token not refused, an
# undeclared method not answered 405 with `Allow`, and a panic in the server's log.
#
# Usage: tests/schemathesis/run.sh
# Environment (all optional):
#   SCHEMATHESIS_MAX_EXAMPLES  examples per operation and phase (default 500)
#   SCHEMATHESIS_CHECKS        comma-separated schemathesis checks (default: see `checks` below)
#   SCHEMATHESIS_SEED          reproduce a run (the seed is printed by schemathesis)
#   SCHEMATHESIS_VENV          virtualenv holding requirements.txt (default target/schemathesis-venv)
#   PG_URL                     PostgreSQL server, without database (default postgres://postgres@127.0.0.1:5432)
#   AMQP_URL                   RabbitMQ (default amqp://guest:guest@127.0.0.1:5672/%2f)
#
# Needs python3 (3.9+) with venv and pip reaching PyPI on first use, cargo,
# and the PostgreSQL and RabbitMQ servers above. It makes its own database
# `plan_queue_schemathesis_<id>` (seeded with fixtures/demo.json) and exchange
# `schemathesis-<id>`, and removes both, with the queues, when it ends.
set -euo pipefail
cd "$(dirname "$0")/../.."

here=tests/schemathesis
max_examples=${SCHEMATHESIS_MAX_EXAMPLES:-500}
# every check that fits a stateless run of this API; not positive_data_acceptance:
# schema-valid bodies naming plans or users that do not exist are rightly 400
# (codes 1000, 1002), and floats like 614.0 are JSON Schema integers but 1001
checks=${SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
missing_required_header,unsupported_method,allow_header_conformance,ignored_auth}
venv=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
pg_url=${PG_URL:-postgres://postgres@127.0.0.1:5432}
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}

# schemathesis and pika, pinned, in a virtualenv re-made when requirements.txt changes
if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt" 2>/dev/null; then
  echo "installing $here/requirements.txt into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

cargo build --locked --quiet --bin plan-queue
bin=target/debug/plan-queue

id=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
work=$PWD/target/schemathesis/$id
mkdir -p "$work"
export SCHEMATHESIS_WORK=$work
export DATABASE_URL="$pg_url/plan_queue_schemathesis_$id"
export AMQP_EXCHANGE="schemathesis-$id"
# one framework type: one queue to remove, and the examples' APPIUM is valid
export FRAMEWORK_TYPES=APPIUM
export JWT_SECRET="schemathesis-$id-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export RUST_LOG=${RUST_LOG:-info}
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export BIND_ADDR="127.0.0.1:$port"
url="http://127.0.0.1:$port"

server=
cleanup() {
  status=$?
  if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    wait "$server" 2>/dev/null || true
  fi
  psql "$pg_url/postgres" -qAt -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS \"plan_queue_schemathesis_$id\" WITH (FORCE)" \
    || { echo "could not drop database plan_queue_schemathesis_$id" >&2; status=1; }
  "$venv/bin/python" "$here/cleanup_amqp.py" "$AMQP_URL" "$AMQP_EXCHANGE" "$FRAMEWORK_TYPES" >/dev/null \
    || { echo "could not delete exchange $AMQP_EXCHANGE and its queues" >&2; status=1; }
  exit "$status"
}
trap cleanup EXIT

"$bin" seed --file fixtures/demo.json
token=$("$bin" token --user-id 13)
"$bin" serve >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
  if curl -fsS -o /dev/null "$url/health/ready" 2>/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "plan-queue serve exited:" >&2
    tail -n 20 "$work/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS -o /dev/null "$url/health/ready" || { echo "$url never became ready" >&2; exit 1; }
echo "plan-queue serves $url (database plan_queue_schemathesis_$id, exchange $AMQP_EXCHANGE)"

seed_args=()
if [[ -n ${SCHEMATHESIS_SEED:-} ]]; then seed_args=(--seed "$SCHEMATHESIS_SEED"); fi
fuzz=0
"$venv/bin/st" --config-file "$here/schemathesis.toml" run "$url/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks "$checks" \
  --phases examples,coverage,fuzzing \
  --max-examples "$max_examples" \
  --generation-database none \
  --request-timeout 20 \
  --report junit --report-dir "$work" \
  --no-color \
  "${seed_args[@]}" || fuzz=$?

if grep -n "panicked" "$work/server.log" >&2; then
  echo "the server panicked (log: $work/server.log)" >&2
  fuzz=1
fi
if [[ $fuzz -ne 0 ]]; then
  echo "schemathesis: FAILED (server log: $work/server.log, report: $work;" \
    "replay a test case against a running server with" \
    "SCHEMATHESIS_WORK=$work $venv/bin/st --config-file $here/schemathesis.toml replay <id>)" >&2
  exit "$fuzz"
fi
echo "schemathesis: no failures at $max_examples examples per operation"
