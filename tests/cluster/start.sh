#!/bin/sh
# Starts a private three-node RabbitMQ cluster on this machine for the
# cluster tests (issue 12): nodes pq-cluster-1..3@localhost on AMQP ports
# 5681-5683 (distribution ports 25681-25683), data and logs under
# $PQ_CLUSTER_DIR (default /tmp/plan-queue-cluster), one Erlang cookie of
# their own. It never touches the machine's own broker (5672, rabbit@localhost):
# every rabbitmqctl call names a pq-cluster node and carries the private
# cookie, which the machine's node does not accept.
#
# Usage: tests/cluster/start.sh      (prints the AMQP_URL of the three nodes)
#        tests/cluster/stop.sh       (stops them and removes $PQ_CLUSTER_DIR)
#        tests/cluster/node.sh       (one node: kill, start again, rabbitmqctl)
# Environment: PQ_CLUSTER_DIR, PQ_CLUSTER_PORT (first AMQP port, default 5681).
set -eu

DIR=${PQ_CLUSTER_DIR:-/tmp/plan-queue-cluster}
BASE_PORT=${PQ_CLUSTER_PORT:-5681}
NODES="1 2 3"

if [ -e "$DIR" ]; then
    echo "$DIR exists: a cluster is running or was not removed; run tests/cluster/stop.sh first" >&2
    exit 1
fi
command -v rabbitmq-server >/dev/null || { echo "rabbitmq-server is not installed" >&2; exit 1; }

port_in_use() {
    ss -ltn 2>/dev/null | grep -q "[:.]$1 "
}
for n in $NODES; do
    for port in $((BASE_PORT + n - 1)) $((BASE_PORT + n - 1 + 20000)); do
        if port_in_use "$port"; then
            echo "port $port is in use; set PQ_CLUSTER_PORT to another first port" >&2
            exit 1
        fi
    done
done

mkdir -p "$DIR"
COOKIE=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
printf '%s' "$COOKIE" >"$DIR/cookie"
chmod 600 "$DIR/cookie"

node_name() { echo "pq-cluster-$1@localhost"; }

ctl() { # ctl <n> <rabbitmqctl args…>
    n=$1
    shift
    rabbitmqctl -q -n "$(node_name "$n")" --erlang-cookie "$COOKIE" "$@"
}

for n in $NODES; do
    node_dir="$DIR/node-$n"
    mkdir -p "$node_dir"
    echo "[]." >"$node_dir/enabled_plugins"
    printf 'listeners.tcp.local = 127.0.0.1:%s\n' \
        $((BASE_PORT + n - 1)) >"$node_dir/rabbitmq.conf"
done
# the server scripts switch to the rabbitmq user when run as root
if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
    chown -R rabbitmq:rabbitmq "$DIR"
fi

HERE=$(dirname "$0")
export PQ_CLUSTER_DIR="$DIR" PQ_CLUSTER_PORT="$BASE_PORT"
for n in $NODES; do
    "$HERE/node.sh" launch "$n"
done
for n in $NODES; do
    "$HERE/node.sh" wait "$n"
done
for n in 2 3; do
    ctl "$n" stop_app
    ctl "$n" join_cluster "$(node_name 1)"
    ctl "$n" start_app
    ctl "$n" await_startup --timeout 120
done
ctl 1 cluster_status --formatter json |
    grep -o '"running_nodes":\[[^]]*\]' || ctl 1 cluster_status

URLS=""
for n in $NODES; do
    URLS="$URLS${URLS:+,}amqp://guest:guest@127.0.0.1:$((BASE_PORT + n - 1))/%2f"
done
echo "$URLS" >"$DIR/amqp_url"
echo "AMQP_URL=$URLS"
