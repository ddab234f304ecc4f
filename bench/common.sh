# Shell helpers shared by bench/run.sh and bench/loop.sh (sourced).

# The benchmark service's environment: its own database and exchange, a
# port, MAX_ATTEMPTS lifted (the load reruns the same pairs thousands of
# times), and the release binaries (under CARGO_TARGET_DIR when set).
PORT=${BENCH_PORT:-18080}
DB_SERVER=${BENCH_DATABASE_SERVER:-postgres://postgres@127.0.0.1:5432}
BENCH_DATABASE=${BENCH_DATABASE:-plan_queue_bench}
export DATABASE_URL="$DB_SERVER/$BENCH_DATABASE"
export AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
export AMQP_EXCHANGE=${BENCH_EXCHANGE:-bench-runs}
export BENCH_QUEUE=$AMQP_EXCHANGE.APPIUM
export JWT_SECRET=bench-only-secret
export MAX_ATTEMPTS=2000000000
export BIND_ADDR=127.0.0.1:$PORT
export RUST_LOG=${RUST_LOG:-warn}
export BENCH_URL=http://127.0.0.1:$PORT/queue/rerun
BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/plan-queue}
EXAMPLES=${CARGO_TARGET_DIR:-target}/release/examples

log() { echo "bench: $*" >&2; }
result() { awk -v k="$1" '$1 == "result" && $2 == k { print $3 }' "$2"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# CPU ticks used so far by each live process: "pid name ticks" (kernel
# workers, which rename themselves with their work item, as one "kworker").
cpu_ticks() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
    match($0, /\(.*\)/); comm = substr($0, RSTART + 1, RLENGTH - 2)
    if (comm ~ /^kworker/) comm = "kworker"
    split(substr($0, RSTART + RLENGTH + 1), f, " "); print $1, comm, f[12] + f[13]
  }'
}
# Where the cores went between two cpu_ticks snapshots, per process name:
# "name share%" of wall time x cores (a process born in between counts whole).
cpu_split() { # before after seconds
  awk -v secs="$3" -v hz="$(getconf CLK_TCK)" -v cores="$(nproc)" '
    NR == FNR { before[$1] = $3; next }
    { d = $3 - before[$1]; if (d > 0) used[$2] += d }
    END { for (c in used) printf "%s %.0f\n", c, 100 * used[c] / hz / secs / cores }' "$1" "$2" \
  | sort -k2 -nr | head -6 | awk '{ printf "%s%s %s%%", (NR > 1 ? ", " : ""), $1, $2 }'
}
# CPU milliseconds per request between two cpu_ticks snapshots, all processes,
# then the four biggest by name: "total X ms: postgres a, ... ms".
cpu_ms() { # before after requests
  awk -v n="$3" -v hz="$(getconf CLK_TCK)" '
    NR == FNR { before[$1] = $3; next }
    { d = $3 - before[$1]; if (d > 0) { used[$2] += d; total += d } }
    END {
      if (n <= 0) { print "n/a"; exit }
      printf "total %.2f ms", 1000 * total / hz / n
      for (c in used) printf "\n%s %.2f", c, 1000 * used[c] / hz / n
    }' "$1" "$2" \
  | { read -r first; sorted=$(sort -k2 -nr | head -4 | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }'); echo "$first: $sorted ms"; }
}
# Busy CPU ticks of the whole machine so far (user, nice, system, irq,
# softirq; not idle, iowait or steal): counts processes that came and went
# between two readings, as pgbench's server backends do.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# Milliseconds of machine CPU per transaction between two machine_ticks readings.
machine_ms() { # before after transactions
  awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { if (n <= 0) print "n/a"; else printf "%.2f ms", 1000 * (b - a) / hz / n }'
}

# The yardsticks (reference-2pair, results-batch/single pgbench) must not move
# with our code: while they run, every trigger of ours on the tables they
# write is off (migration 15's results_version bumps, migration 17's read
# model); `TRIGGER USER` leaves the foreign keys' internal triggers on. The
# service's statements pay for the triggers; the reference does the work it
# did before them. Callers delete the reference's rows before switching back.
our_triggers() { # ENABLE | DISABLE
  "${PSQL[@]}" -c "ALTER TABLE executions $1 TRIGGER USER;
                   ALTER TABLE execution_pairs $1 TRIGGER USER;
                   ALTER TABLE dispatches $1 TRIGGER USER" >/dev/null
}
