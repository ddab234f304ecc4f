#!/usr/bin/env bash
# Issue 12's node-loss tests, in one command: starts a private three-node
# RabbitMQ cluster (tests/cluster/start.sh, its own PQ_CLUSTER_DIR), creates
# and seeds a PostgreSQL database of its own (fixtures/demo.json), runs the
# three scenarios of tests/cluster/node_loss.rs against real `plan-queue
# serve` processes, and always stops the cluster and drops its databases.
#
#   1. the ledger: 2 000 reruns through two instances on different nodes
#      while the node leading the run queue is SIGKILLed and started again;
#   2. results: 2 000 runners' results while the node leading the results
#      queue is SIGKILLed and started again;
#   3. one instance SIGKILLed mid-load holding a claim on unpublished rows
#      (its relay's row locks): the other publishes them once the claim
#      ended with the killed instance's database session, not before.
#
# Each prints accepted / consumed / duplicates / lost (results: published /
# applied / duplicates-ignored / lost) and what the fault cost; the exit
# status is non-zero when anything was lost or failed.
#
# Usage: tests/cluster/node-loss.sh [test name filter]
# Needs: rabbitmq-server (not running on the cluster's ports 5681-5683 and
# 25681-25683, see PQ_CLUSTER_PORT), PostgreSQL on 127.0.0.1:5432 (user
# postgres, trust; NODE_LOSS_DATABASE_SERVER), psql, cargo. The machine's
# own RabbitMQ (5672) is never used or touched.
set -euo pipefail
cd "$(dirname "$0")/../.."

started=$(date +%s)
RUN=$$
export PQ_CLUSTER_DIR=${PQ_CLUSTER_DIR:-/tmp/plan-queue-node-loss-$RUN}
export NODE_LOSS_DATABASE_SERVER=${NODE_LOSS_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}
export NODE_LOSS_DATABASE=plan_queue_cluster_$RUN
export NODE_LOSS_LOGS=${TMPDIR:-/tmp}/plan-queue-node-loss-logs-$RUN
TARGET=${CARGO_TARGET_DIR:-target}
OUTPUT=$NODE_LOSS_LOGS/cargo-test.txt
CLUSTER_STARTED=0

log() { echo "node-loss: [$(($(date +%s) - started)) s] $*" >&2; }

cleanup() {
    status=$?
    set +e
    # only a cluster this command started (never one it found at PQ_CLUSTER_DIR)
    [ "$CLUSTER_STARTED" = 1 ] && tests/cluster/stop.sh >/dev/null 2>&1
    psql -X -q -At "$NODE_LOSS_DATABASE_SERVER/postgres" -c \
        "SELECT datname FROM pg_database WHERE datname LIKE '${NODE_LOSS_DATABASE}%'" 2>/dev/null |
        while read -r db; do
            psql -X -q "$NODE_LOSS_DATABASE_SERVER/postgres" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
        done
    if [ "$status" = 0 ]; then
        rm -rf "$NODE_LOSS_LOGS"
    else
        log "FAILED (exit $status); the instances' logs are in $NODE_LOSS_LOGS"
    fi
    log "cluster stopped, databases dropped; wall time $(($(date +%s) - started)) s"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$NODE_LOSS_LOGS"
log "building the tests and plan-queue"
cargo test --test cluster --no-run --quiet >&2
BIN=$TARGET/debug/plan-queue
[ -x "$BIN" ] || { log "no $BIN after the build"; exit 1; }

if [ -e "$PQ_CLUSTER_DIR" ]; then
    log "$PQ_CLUSTER_DIR exists: set PQ_CLUSTER_DIR to a new directory"
    exit 1
fi
log "starting the cluster in $PQ_CLUSTER_DIR"
CLUSTER_STARTED=1
tests/cluster/start.sh >&2
log "seeding $NODE_LOSS_DATABASE"
DATABASE_URL=$NODE_LOSS_DATABASE_SERVER/$NODE_LOSS_DATABASE RUST_LOG=warn \
    "$BIN" seed --file fixtures/demo.json >&2

log "running the scenarios"
scenarios=$(date +%s)
set +e
cargo test --quiet --test cluster -- --ignored --nocapture --test-threads=1 "$@" 2>&1 | tee "$OUTPUT"
result=${PIPESTATUS[0]}
set -e
echo
echo "node-loss summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores):"
grep -oE '(ledger under node loss|results under node loss|instance killed mid-load):.*' "$OUTPUT" |
    sed 's/^/  /' || true
echo "  whole command: $(($(date +%s) - started)) s (the scenarios $(($(date +%s) - scenarios)) s)"
exit "$result"
