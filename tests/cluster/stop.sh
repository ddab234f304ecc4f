#!/bin/sh
# Stops the private cluster of tests/cluster/start.sh and removes its data,
# logs and cookie ($PQ_CLUSTER_DIR, default /tmp/plan-queue-cluster). Only
# the pq-cluster nodes are addressed (with their own cookie); the machine's
# broker is never touched.
set -u

DIR=${PQ_CLUSTER_DIR:-/tmp/plan-queue-cluster}
if [ ! -d "$DIR" ]; then
    echo "no cluster at $DIR"
    exit 0
fi
COOKIE=$(cat "$DIR/cookie" 2>/dev/null || true)

for n in 3 2 1; do
    node="pq-cluster-$n@localhost"
    [ -d "$DIR/node-$n" ] || continue
    if [ -n "$COOKIE" ]; then
        rabbitmqctl -q -n "$node" --erlang-cookie "$COOKIE" stop 2>/dev/null && continue
    fi
    # not answering: end the node's own process (its pid file), nothing else
    pid=$(cat "$DIR/node-$n/pid" 2>/dev/null || true)
    # (its environment names the node; the command line does not)
    if [ -n "$pid" ] && { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null |
        grep -qx "RABBITMQ_NODENAME=$node"; then
        kill -9 "$pid"
    fi
done
rm -rf "$DIR"
echo "cluster stopped, $DIR removed"
