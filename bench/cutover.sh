#!/usr/bin/env bash
# Cutover benchmark: how long writes wait while pgdog_reshard cuts over (pause_ms) under a steady
# write load through a real PgBouncer, cutover and rollback in turn. Not part of the test suite:
# run by hand, as root, usually through bench/run.sh (`bash bench/run.sh`, or
# `ONLY=cutover bash bench/run.sh`), which runs every benchmark and writes bench/RESULTS.md; alone:
#
#   bash bench/cutover.sh                               3 cutovers and 3 rollbacks at 500 writes/s
#   CYCLES=1 RESULTS=/tmp/r.md bash bench/cutover.sh    a quick run
#
# Needs the extension installed (`make install`), PostgreSQL's binaries (pgbench among them) and
# pgbouncer. It starts, on loopback and as the postgres OS user, a source, two destination shards
# (prod_2x), a control node and PgBouncer (transaction pooling; database "app" points at the
# source). The control node is set up as in production: pgdog_reshard.proxy_admin names PgBouncer's
# admin database, and pgdog_reshard.cutover_command swaps PgBouncer's ini for the one pointing at
# the other cluster. Then:
#  1. reshard_copy_data('prod', 'prod_2x', 'pgdog') of a table of 100,000 rows, until it replicates;
#  2. pgbench -R RATE through PgBouncer (an INSERT per transaction) for the whole run, logging
#     every transaction's latency;
#  3. CYCLES times: reshard_cutover(task), then reshard_cutover(its reverse task) (the rollback),
#     each after WAIT seconds of load; pause_ms read from the reshard_cutover view.
# Reports pause_ms per cutover, the slowest client transactions, pgbench's failures (none
# expected: writes only wait), and the peak memory per worker type of the control node's
# pgdog_reshard workers, sampled from the start of the load to the last rollback (sample_memory in
# lib.sh). With SUMMARY set, the rows of bench/run.sh's "summary against the targets" are appended to
# that file: pause_ms, the control node's peak memory.
#
# Settings (environment): CYCLES (3), RATE (500), WAIT (5), CLIENTS (4), RESULTS (a new
# /tmp/RESULTS-cutover.*.md: bench/run.sh gathers the results), SUMMARY (none), PGBIN
# (pg_config --bindir), KEEP=1 keeps the directories and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

CYCLES=${CYCLES:-3}
RATE=${RATE:-500}
WAIT=${WAIT:-5}
CLIENTS=${CLIENTS:-4}
RESULTS=${RESULTS:-}
KEEP=${KEEP:-0}

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

for v in CYCLES RATE WAIT CLIENTS; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer (got '${!v}')"
done
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || die "pgbouncer is not installed"
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
bench_setup cutover

settings="fsync = off
shared_buffers = 128MB
autovacuum = off"

say "starting a source, two destination shards and a control node in $base"
for name in src dst0 dst1; do start_instance "$name" "$settings"; done
start_instance ctl "$settings" preload

# --- PgBouncer -------------------------------------------------------------------------------------

bouncer_port=$(free_port)
ini="$base/pgbouncer.ini"
write_ini() {  # file, server
  cat >"$1" <<INI
[databases]
app = host=127.0.0.1 port=${port[$2]} dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir = $base
auth_type = trust
auth_file = $base/userlist.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
logfile = $base/pgbouncer.log
pidfile = $base/pgbouncer.pid
INI
  chown postgres "$1"
}
echo '"postgres" ""' >"$base/userlist.txt"
chown postgres "$base/userlist.txt"
write_ini "$ini" src
write_ini "$ini.other" dst0  # prod_2x's shard 0: the load below writes one table, routed there
as_pg "$PGBOUNCER" -d "$ini" || die "pgbouncer did not start (see $base/pgbouncer.log)"
for _ in $(seq 50); do [ -f "$base/pgbouncer.pid" ] && break; sleep 0.1; done
bg_pids+=("$(cat "$base/pgbouncer.pid")")
say "source :${port[src]}   prod_2x :${port[dst0]} :${port[dst1]}   control :${port[ctl]}   pgbouncer :$bouncer_port"

# --- data, configuration, copy --------------------------------------------------------------------

psql_at src <<'SQL'
CREATE TABLE pings (id bigint PRIMARY KEY, client int NOT NULL, at timestamptz NOT NULL DEFAULT now());
INSERT INTO pings SELECT g, -1 FROM generate_series(1, 100000) g;
CREATE PUBLICATION pgdog FOR ALL TABLES;
SQL
psql_at ctl -c "CREATE EXTENSION pgdog_reshard"
load_config '[[sharded_tables]]
database = "prod_2x"
name = "pings"
column = "id"
data_type = "bigint"'
hook="mv $ini $ini.tmp && mv $ini.other $ini && mv $ini.tmp $ini.other"
psql_at ctl -c "ALTER SYSTEM SET pgdog_reshard.proxy_admin = 'host=127.0.0.1 port=$bouncer_port dbname=pgbouncer user=postgres'" \
  -c "ALTER SYSTEM SET pgdog_reshard.cutover_command = \$\$$hook\$\$" -c "SELECT pg_reload_conf()" >/dev/null

wait_for() {  # sql that returns t when done, seconds, what
  local waited=0
  until [ "$(value ctl "$1")" = t ]; do
    ((waited++ < $2 * 10)) || die "$3 did not happen within $2 s"
    sleep 0.1
  done
}

task=$(value ctl "SELECT reshard_copy_data('prod', 'prod_2x', 'pgdog')")
wait_for "SELECT state = 'replicating' FROM reshard_status WHERE id = $task" 300 "the copy"
say "task $task replicates"

# --- load and cutovers -----------------------------------------------------------------------------

# Each client inserts keys of its own: client c writes c, c + CLIENTS, ... above the copied rows.
cat >"$base/insert.sql" <<SQL
\set id 1000000 + :client_id + $CLIENTS * random(1, 1000000000)
INSERT INTO pings (id, client) VALUES (:id, :client_id) ON CONFLICT (id) DO NOTHING;
SQL
chown postgres "$base/insert.sql"
duration=$((2 * CYCLES * (WAIT + 2) + WAIT))
memory="$base/memory.tsv"  # phase, worker type, peak VmHWM kB, VmRSS kB, RssAnon kB
: >"$memory"
memory_start
say "pgbench -R $RATE through PgBouncer for up to $duration s"
(cd "$base" && runuser -u postgres -- "$PGBIN/pgbench" -n -f "$base/insert.sql" -c "$CLIENTS" -j 2 -R "$RATE" \
  -T "$duration" -l --log-prefix="$base/latency" -h 127.0.0.1 -p "$bouncer_port" -U postgres app \
  >"$base/pgbench.out" 2>&1) &
pgbench_pid=$!
bg_pids+=("$pgbench_pid")

cutovers="$base/cutovers.tsv"  # n, direction, pause_ms
: >"$cutovers"
current=$task
for ((n = 1; n <= 2 * CYCLES; n++)); do
  sleep "$WAIT"
  direction=cutover
  ((n % 2 == 0)) && direction=rollback
  id=$(value ctl "SELECT reshard_cutover($current)")
  wait_for "SELECT state IN ('done', 'aborted') FROM reshard_cutover WHERE id = $id" 120 "cutover $id"
  IFS='|' read -r state pause reverse error < <(value ctl "SELECT state, round(pause_ms::numeric, 1), reverse_task_id, coalesce(error, '')
                                                            FROM reshard_cutover WHERE id = $id")
  [ "$state" = done ] || die "cutover $id ended $state: $error"
  say "  $direction $n: task $current cut over in $pause ms of pause; reverse task $reverse"
  printf '%s\t%s\t%s\n' "$n" "$direction" "$pause" >>"$cutovers"
  wait_for "SELECT state = 'replicating' FROM reshard_status WHERE id = $reverse" 60 "reverse task $reverse replicating"
  current=$reverse
done
memory_stop "$memory" cutovers
say "waiting for pgbench to finish its $duration s"
wait "$pgbench_pid" || true
bg_forget "$pgbench_pid"
grep -E '^(number of (transactions|failed)|latency|tps)' "$base/pgbench.out" || true
failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$base/pgbench.out")

# --- results -------------------------------------------------------------------------------------

cat "$base"/latency* | awk '{print $3}' | sort -n >"$base/latencies_us"
samples=$(wc -l <"$base/latencies_us")
p99=$(awk -v n="$samples" 'NR == int(n * 0.99) + 1 {print $1 / 1000; exit}' "$base/latencies_us")
max=$(tail -n 1 "$base/latencies_us" | awk '{print $1 / 1000}')
targets="$base/targets.md"  # rows of bench/run.sh's summary against the targets
summary=$(psql_at ctl -At <<SQL
CREATE TEMP TABLE c (n int, direction text, pause_ms float8);
CREATE TEMP TABLE memory (phase text, worker text, hwm_kb bigint, rss_kb bigint, anon_kb bigint);
\copy c FROM '$cutovers'
\copy memory FROM '$memory'
SELECT '| cutover | direction | pause_ms |';
SELECT '|---:|---|---:|';
SELECT format('| %s | %s | %s |', n, direction, pause_ms) FROM c ORDER BY n;
SELECT '';
SELECT format('pause_ms: median **%s**, max %s over %s cutovers (target: under 500).',
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY pause_ms)::numeric, 1), max(pause_ms), count(*))
FROM c;
SELECT '';
SELECT '| control node worker (backend type) | peak VmHWM MB | peak RssAnon MB |';
SELECT '|---|---:|---:|';
SELECT format('| pgdog_reshard %s | %s | %s |', worker, to_char(max(hwm_kb) / 1024.0, 'FM9990.0'),
              to_char(max(anon_kb) / 1024.0, 'FM9990.0'))
FROM memory GROUP BY worker ORDER BY worker;

\o $targets
-- Met when every cutover's pause is under the target, the slowest included.
SELECT format('| cutover: pause_ms median / max | %s / %s ms (%s cutovers) | < 500 ms | %s |',
              coalesce(to_char(percentile_cont(0.5) WITHIN GROUP (ORDER BY pause_ms), 'FM99990.0'), '?'),
              coalesce(to_char(max(pause_ms), 'FM99990.0'), '?'), count(*), CASE WHEN max(pause_ms) < 500 THEN 'yes' ELSE 'no' END)
FROM c;
SELECT format('| cutover: control node peak memory (VmHWM, any worker) | %s MB (%s) | < 256 MB | %s |',
              coalesce(to_char(hwm_kb / 1024.0, 'FM9990.0'), '?'), coalesce('pgdog_reshard ' || worker, 'no worker sampled'),
              CASE WHEN hwm_kb < 256 * 1024 THEN 'yes' ELSE 'no' END)
FROM (VALUES (1)) AS one(x)
LEFT JOIN (SELECT worker, hwm_kb FROM memory ORDER BY hwm_kb DESC LIMIT 1) m ON true;
\o
SQL
)
echo
echo "$summary"
echo
echo "client transactions: $samples, p99 latency ${p99:-?} ms, max ${max:-?} ms, failed ${failed:-0}"
echo
cat "$targets"
summary_rows "$targets"

[ -n "$RESULTS" ] || RESULTS=$(mktemp --suffix=.md /tmp/RESULTS-cutover.XXXXXX)
cat >"$RESULTS" <<EOF
# Cutover benchmark: pause under a steady write load through PgBouncer

Written by \`bench/cutover.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (pgdog_reshard commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)).

## Reproduce

As root on Debian 12 with the extension installed (\`make install\`):

    bash bench/cutover.sh   (CYCLES=$CYCLES RATE=$RATE WAIT=$WAIT CLIENTS=$CLIENTS)

## Machine

$(machine_lines)
- $("$PGBOUNCER" --version | head -1)

## Settings

- A source, two destination shards (\`prod_2x\`), a control node and PgBouncer (transaction pooling),
  all on loopback, started by the script; \`fsync = off\`, \`autovacuum = off\`, the rest default
  (\`synchronous_commit = on\`). Cutover settings at their defaults (lag threshold 1 MB, timeout 10 s).
- Table \`pings\` (bigint primary key, sharded by hash of \`id\`), 100,000 rows copied by
  \`reshard_copy_data\` first. Load: \`pgbench -R $RATE -c $CLIENTS\` through PgBouncer, one INSERT per
  transaction, for the whole run.
- The load writes through one PgBouncer database, so after a cutover all of it lands on shard 0
  whatever its key: this measures the pause, not placement (the end-to-end test routes each write by
  its key and checks where it lands).
- $CYCLES cutovers and $CYCLES rollbacks in turn, one every $WAIT s. \`pause_ms\` is the
  \`reshard_cutover\` view's: from PgBouncer's \`PAUSE\` returning (every server connection released)
  to \`RESUME\` sent; it covers the drain, the sequences, the reverse publication and slots, the hook,
  the configuration swap and \`RELOAD\`.
- Memory: \`/proc/<pid>/status\` of the control node's pgdog_reshard background workers (found in
  \`pg_stat_activity\`; VmHWM and RssAnon read every 100 ms) from the start of the load to the last
  rollback's reverse task replicating. A cutover runs in the task's \`pgdog_reshard task\` worker; each
  task streams through a \`pgdog_reshard stream\` worker per source shard. VmHWM counts the shared
  memory pages a process touched too (\`shared_buffers = 128MB\` here); RssAnon is its private memory.

## Results

$summary

Client side (pgbench's per-transaction log, the whole run): $samples transactions, p99 latency
${p99:-?} ms, slowest ${max:-?} ms (a transaction that waited through a pause, plus PAUSE's own wait
for transactions in flight); failed transactions: ${failed:-0}.
EOF
say "results written to $RESULTS"
