#!/bin/sh
# One node of the private cluster of tests/cluster/start.sh (pq-cluster-N@localhost,
# AMQP port PQ_CLUSTER_PORT + N - 1, data under $PQ_CLUSTER_DIR/node-N, the
# cluster's own cookie). Used by start.sh and by the node-loss tests
# (tests/cluster/node-loss.sh) to kill a node and bring it back. Only
# pq-cluster nodes are addressed; the machine's broker is never touched.
#
# Usage: tests/cluster/node.sh launch N      start node N detached, do not wait
#        tests/cluster/node.sh wait N        wait until node N has booted (120 s)
#        tests/cluster/node.sh start N       launch, then wait (a killed node
#                                            rejoins the cluster with its data)
#        tests/cluster/node.sh kill N        SIGKILL node N's Erlang VM (its pid
#                                            file), wait until it is gone
#        tests/cluster/node.sh pid N         print the VM's pid
#        tests/cluster/node.sh ctl N ARGS…   rabbitmqctl ARGS… on node N
#        tests/cluster/node.sh queues-cmd N ARGS…  rabbitmq-queues ARGS… on node N
# Environment: PQ_CLUSTER_DIR (default /tmp/plan-queue-cluster),
# PQ_CLUSTER_PORT (first AMQP port, default 5681).
set -eu

DIR=${PQ_CLUSTER_DIR:-/tmp/plan-queue-cluster}
BASE_PORT=${PQ_CLUSTER_PORT:-5681}

usage() {
    sed -n '8,16p' "$0" >&2
    exit 2
}
[ $# -ge 2 ] || usage
ACTION=$1
N=$2
shift 2
case $N in 1 | 2 | 3) ;; *) usage ;; esac

NODE="pq-cluster-$N@localhost"
NODE_DIR="$DIR/node-$N"
cookie() { cat "$DIR/cookie"; }

launch() {
    RABBITMQ_NODENAME=$NODE \
        RABBITMQ_NODE_PORT=$((BASE_PORT + N - 1)) \
        RABBITMQ_DIST_PORT=$((BASE_PORT + N - 1 + 20000)) \
        RABBITMQ_CONFIG_FILE="$NODE_DIR/rabbitmq.conf" \
        RABBITMQ_MNESIA_BASE="$NODE_DIR/mnesia" \
        RABBITMQ_LOG_BASE="$NODE_DIR/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$NODE_DIR/enabled_plugins" \
        RABBITMQ_PID_FILE="$NODE_DIR/pid" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-setcookie $(cookie)" \
        rabbitmq-server -detached
}

ctl() {
    rabbitmqctl -q -n "$NODE" --erlang-cookie "$(cookie)" "$@"
}

# -detached returns before the node registers; await_startup needs it registered
wait_booted() {
    tries=0
    until ctl ping >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 120 ]; then
            echo "$NODE did not start; see $NODE_DIR/log" >&2
            exit 1
        fi
        sleep 1
    done
    ctl await_startup --timeout 120
}

# the VM's pid, only if that process really is this node's VM (its
# environment names the node: the command line does not)
vm_pid() {
    pid=$(cat "$NODE_DIR/pid" 2>/dev/null || true)
    if [ -n "$pid" ] && { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null |
        grep -qx "RABBITMQ_NODENAME=$NODE"; then
        echo "$pid"
    fi
}

# a second VM for a running node would fail and remove the first one's pid file
launch_stopped() {
    if [ -n "$(vm_pid)" ]; then
        echo "$NODE is running (pid $(vm_pid))" >&2
        exit 1
    fi
    launch
}

case $ACTION in
launch) launch_stopped ;;
wait) wait_booted ;;
start)
    launch_stopped
    wait_booted
    ;;
kill)
    pid=$(vm_pid)
    [ -n "$pid" ] || {
        echo "$NODE is not running" >&2
        exit 1
    }
    kill -9 "$pid"
    while [ -e "/proc/$pid" ]; do sleep 0.05; done
    ;;
pid)
    pid=$(vm_pid)
    [ -n "$pid" ] || exit 1
    echo "$pid"
    ;;
ctl) ctl "$@" ;;
queues-cmd) rabbitmq-queues -q -n "$NODE" --erlang-cookie "$(cookie)" "$@" ;;
*) usage ;;
esac
