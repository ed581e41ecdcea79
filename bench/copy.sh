#!/usr/bin/env bash
# Copy benchmark: pgdog_reshard's 1 -> 2 copy (reshard_copy_data) against the raw binary COPY pipe,
# on the same servers and the same data. Not part of the test suite: run it by hand, as root:
#
#   bash bench/copy.sh                               3,000,000 rows (about 440 MB), 3 repetitions
#   ROWS=300000 REPEAT=1 RESULTS=/tmp/r.md bash bench/copy.sh      a quick run, results elsewhere
#
# Needs the extension installed (`make install`) and PostgreSQL's binaries; nothing else beyond bash
# and coreutils (the arithmetic is done in SQL). It starts, on loopback and as the postgres OS user,
# a source, two destination shards and a control node, builds the data set on the source, then per
# repetition (in rotating order, each after dropping the destination tables and a CHECKPOINT on every
# server) times:
#   raw 1->1    psql COPY TO STDOUT (FORMAT binary) | psql COPY FROM STDIN into one destination
#   raw split   two such pipes at once, id % 2 = 0 / 1, one into each destination
#   pgdog 1->2  reshard_copy_data('prod', 'prod_2x', 'pgdog'): copy proper (the table copy's
#               started_at..finished_at), wall time from the call to the table copied (includes
#               pre-flight, schema sync pre and the slot) and to 'replicating' (also schema sync
#               post); then reshard_stop() and wait for 'cancelled'
# and samples the peak memory of the control node's pgdog_reshard copy and task workers. Prints the
# medians and writes them to $RESULTS (default bench/RESULTS.md). Every server is stopped on exit.
#
# Every method writes into the same destination table: the source's, primary key included (schema
# sync pre creates primary keys before the copy, so the raw pipes get one too). One untimed warm-up
# pass of every method comes first (WARMUP=0 skips it): the first writes into a fresh server create
# its WAL segments, later ones recycle them.
#
# Settings (environment): ROWS (3000000), REPEAT (3), WARMUP (1), FSYNC (off), SHARED_BUFFERS (256MB),
# MAX_WAL_SIZE (8GB), RESULTS (bench/RESULTS.md), PGBIN (pg_config --bindir), KEEP=1 keeps the
# data directories and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ROWS=${ROWS:-3000000}
REPEAT=${REPEAT:-3}
WARMUP=${WARMUP:-1}
FSYNC=${FSYNC:-off}
SHARED_BUFFERS=${SHARED_BUFFERS:-256MB}
MAX_WAL_SIZE=${MAX_WAL_SIZE:-8GB}
RESULTS=${RESULTS:-$root/bench/RESULTS.md}
KEEP=${KEEP:-0}

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

[[ $ROWS =~ ^[0-9]+$ && $ROWS -ge 2 ]] || die "ROWS must be an integer >= 2 (got '$ROWS')"
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -ge 1 ]] || die "REPEAT must be an integer >= 1 (got '$REPEAT')"
[[ $WARMUP == 0 || $WARMUP == 1 ]] || die "WARMUP must be 0 or 1 (got '$WARMUP')"
[[ $FSYNC == on || $FSYNC == off ]] || die "FSYNC must be on or off (got '$FSYNC')"
bench_setup copy

settings="fsync = $FSYNC
shared_buffers = $SHARED_BUFFERS
max_wal_size = $MAX_WAL_SIZE
min_wal_size = 2GB
checkpoint_timeout = 30min
autovacuum = off"

# --- servers -------------------------------------------------------------------------------------

say "starting a source, two destination shards and a control node in $base (fsync = $FSYNC)"
start_instance src "$settings"
start_instance dst0 "$settings"
start_instance dst1 "$settings"
start_instance ctl "$settings" preload
say "source :${port[src]}   prod_2x shard 0 :${port[dst0]}   shard 1 :${port[dst1]}   control :${port[ctl]}"

# --- data set ------------------------------------------------------------------------------------

say "building the data set on the source: $ROWS rows"
started=$(now_us)
psql_at src -v rows="$ROWS" <<'SQL'
CREATE TABLE orders (
  id bigint PRIMARY KEY,
  customer_id bigint NOT NULL,          -- the sharding key
  status text NOT NULL,
  email text,                           -- NULL in 1 row of 5
  amount numeric(12,2) NOT NULL,
  created_at timestamptz NOT NULL,
  shipped_at timestamptz,               -- NULL in 1 row of 3
  attributes jsonb,                     -- NULL in 1 row of 7
  note text                             -- NULL in 3 rows of 4
);
INSERT INTO orders
SELECT g,
       1 + (g * 7919) % 1000003,
       (ARRAY['new', 'paid', 'shipped', 'refunded'])[1 + g % 4],
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'user' || (g % 1000003) || '@example.com' END,
       (g % 100000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '7 seconds',
       CASE WHEN g % 3 = 0 THEN NULL ELSE timestamptz '2024-01-02 00:00:00+00' + g * interval '7 seconds' END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('sku', 'SKU-' || g % 5000, 'qty', 1 + g % 9) END,
       CASE WHEN g % 4 = 0 THEN 'deliver after ' || (8 + g % 10) || ':00' END
FROM generate_series(1::bigint, :rows) g;
VACUUM (FREEZE, ANALYZE) orders;
CREATE PUBLICATION pgdog FOR ALL TABLES;
CHECKPOINT;
SQL
table_bytes=$(value src "SELECT pg_table_size('orders')")
say "data set built in $(seconds $(($(now_us) - started))) s: $(value src "SELECT pg_size_pretty(pg_table_size('orders'))") on disk (heap + TOAST), $(value src "SELECT pg_size_pretty(pg_indexes_size('orders'))") of primary key"

# The destination table of the raw pipes: the source's table with its primary key, what
# pgdog_reshard's schema sync pre creates before its copy too.
as_pg "$PGBIN/pg_dump" -h 127.0.0.1 -p "${port[src]}" -U postgres -d postgres --schema-only -t orders \
  -f "$base/orders_schema.sql"
grep -q 'PRIMARY KEY' "$base/orders_schema.sql" || die "pg_dump -t orders has no primary key"

psql_at ctl -c "CREATE EXTENSION pgdog_reshard"
load_config '[[sharded_tables]]
database = "prod_2x"
name = "orders"
column = "customer_id"
data_type = "bigint"'

# --- one run of each method ----------------------------------------------------------------------

runs="$base/runs.tsv"      # method, repetition, seconds
memory="$base/memory.tsv"  # repetition, backend type, peak VmHWM kB, peak VmRSS kB, peak RssAnon kB
: >"$runs"
: >"$memory"

# Before every run: no destination table, and nothing dirty to flush on any server.
prepare() {  # method
  local d
  for d in dst0 dst1; do
    psql_at "$d" -c "SET client_min_messages = warning; DROP TABLE IF EXISTS orders"
    [ "$1" = pgdog ] || psql_at "$d" -f "$base/orders_schema.sql" >/dev/null
  done
  for d in src dst0 dst1 ctl; do psql_at "$d" -c "CHECKPOINT"; done
}

check_rows() {  # what, expected total on dst0 + dst1
  local a b
  a=$(value dst0 "SELECT count(*) FROM orders")
  b=$(value dst1 "SELECT count(*) FROM orders")
  [ $((a + b)) -eq "$2" ] || die "$1: $((a + b)) rows on the destinations ($a + $b), expected $2"
  echo "$a + $b rows"
}

run_raw_1to1() {  # repetition
  local t0 t1 counts
  t0=$(now_us)
  psql_at src -c "COPY orders TO STDOUT (FORMAT binary)" |
    psql_at dst0 -c "COPY orders FROM STDIN (FORMAT binary)"
  t1=$(now_us)
  printf 'raw_1to1\t%s\t%s\n' "$1" "$(seconds $((t1 - t0)))" >>"$runs"
  counts=$(check_rows "raw 1->1" "$ROWS")
  say "  raw 1->1 pipe: $(seconds $((t1 - t0))) s ($counts)"
}

run_raw_split() {  # repetition
  local t0 t1 p0 p1 counts
  t0=$(now_us)
  psql_at src -c "COPY (SELECT * FROM orders WHERE id % 2 = 0) TO STDOUT (FORMAT binary)" |
    psql_at dst0 -c "COPY orders FROM STDIN (FORMAT binary)" &
  p0=$!
  psql_at src -c "COPY (SELECT * FROM orders WHERE id % 2 = 1) TO STDOUT (FORMAT binary)" |
    psql_at dst1 -c "COPY orders FROM STDIN (FORMAT binary)" &
  p1=$!
  wait "$p0" || die "raw split: the pipe into shard 0 failed"
  wait "$p1" || die "raw split: the pipe into shard 1 failed"
  t1=$(now_us)
  printf 'raw_split\t%s\t%s\n' "$1" "$(seconds $((t1 - t0)))" >>"$runs"
  counts=$(check_rows "raw split" "$ROWS")
  say "  raw split pipes (2 x half): $(seconds $((t1 - t0))) s ($counts)"
}

run_pgdog() {  # repetition
  local task state st ph pr rc last_report now counts stop="$base/sampler.stop" out="$base/sampler.out" line
  rm -f "$stop" "$out"
  sample_memory "$stop" "$out" &
  bg_pids=($!)
  task=$(value ctl "SELECT reshard_copy_data('prod', 'prod_2x', 'pgdog')")
  last_report=$(now_us)
  while :; do
    state=$(value ctl "SELECT state || ' ' || coalesce(phase, '-') || ' ' || coalesce(progress::text, '-')
                       || ' ' || rows_copied FROM reshard_status WHERE id = $task")
    case $state in
      replicating*) break ;;
      failed* | cancelled* | done*)
        die "pgdog_reshard task $task ended: $(value ctl "SELECT state || ': ' || coalesce(error, '') FROM reshard_status WHERE id = $task")" ;;
    esac
    now=$(now_us)
    if ((now - last_report >= 5000000)); then
      read -r st ph pr rc <<<"$state"
      say "    task $task: $st, phase $ph, $pr %, $rc rows copied"
      last_report=$now
    fi
    sleep 0.5  # the times come from the server's clock: polling often would only take CPU
  done
  touch "$stop"
  wait "${bg_pids[0]}" || true
  bg_pids=()
  while IFS=$'\t' read -r line; do printf '%s\t%s\n' "$1" "$line" >>"$memory"; done <"$out"

  # Times from the control node's own clock: the call (the task's created_at) to the table copy's
  # finished_at, the copy proper, and the call to the task's switch to 'replicating'.
  local copy wall ready rows
  IFS='|' read -r copy wall ready rows < <(value ctl "
    SELECT extract(epoch FROM max(c.finished_at) - min(c.started_at)),
           extract(epoch FROM max(c.finished_at) - s.started_at),
           extract(epoch FROM s.updated_at - s.started_at),
           sum(c.rows)
    FROM reshard_table_copies c JOIN reshard_status s ON s.id = c.task_id
    WHERE c.task_id = $task AND c.state = 'done'
    GROUP BY s.started_at, s.updated_at")
  [ "$rows" = "$ROWS" ] || die "pgdog_reshard task $task copied '$rows' rows, expected $ROWS"
  printf 'pgdog_copy\t%s\t%s\npgdog_wall\t%s\t%s\npgdog_ready\t%s\t%s\n' "$1" "$copy" "$1" "$wall" "$1" "$ready" >>"$runs"
  counts=$(check_rows pgdog_reshard "$ROWS")
  say "  pgdog_reshard 1->2: copy $copy s, call -> copied $wall s, call -> replicating $ready s ($counts)"

  # Stop the task (it drops its slot) and wait for it to end.
  value ctl "SELECT reshard_stop($task)" >/dev/null
  local waited=0
  until [ "$(value ctl "SELECT state FROM reshard_status WHERE id = $task")" = cancelled ]; do
    ((waited++ < 600)) || die "task $task did not reach 'cancelled' within 60 s"
    sleep 0.1
  done
  waited=0
  until [ "$(value src "SELECT count(*) FROM pg_replication_slots")" = 0 ]; do
    ((waited++ < 300)) || die "replication slots left on the source after task $task was cancelled"
    sleep 0.1
  done
}

methods=(raw_1to1 raw_split pgdog)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
bench_started=$(now_us)
for ((rep = 1 - WARMUP; rep <= REPEAT; rep++)); do
  if ((rep == 0)); then say "warm-up pass (not counted)"; else say "repetition $rep of $REPEAT"; fi
  for ((k = 0; k < ${#methods[@]}; k++)); do
    method=${methods[$(((k + rep + 2) % ${#methods[@]}))]}  # rotate the order between repetitions
    prepare "$method"
    "run_$method" "$rep"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
say "measurements done in $(seconds $(($(now_us) - bench_started))) s"

# --- results -------------------------------------------------------------------------------------

stream_bytes=$(value ctl "SELECT max(bytes) FROM reshard_table_copies")
machine=$(machine_lines)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)

summary="$base/summary.md"
psql_at ctl -At -v rows="$ROWS" -v bytes="$table_bytes" >"$summary" <<SQL
CREATE TEMP TABLE runs (method text, rep int, seconds float8);
CREATE TEMP TABLE memory (rep int, worker text, hwm_kb bigint, rss_kb bigint, anon_kb bigint);
\copy runs FROM '$runs'
\copy memory FROM '$memory'
CREATE TEMP VIEW med AS
  SELECT method, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS s, min(seconds) AS lo, max(seconds) AS hi,
         string_agg(to_char(seconds, 'FM9990.00'), ', ' ORDER BY rep) AS every
  FROM runs WHERE rep >= 1 GROUP BY method;
SELECT '| method | median s | rows/s | MB/s | min - max s | every run (s) |';
SELECT '|---|---:|---:|---:|---:|---|';
SELECT format('| %s | %s | %s | %s | %s - %s | %s |', label, to_char(s, 'FM9990.00'),
              to_char(:rows / s, 'FM999,999,990'), to_char(:bytes / 1e6 / s, 'FM9990.0'),
              to_char(lo, 'FM9990.00'), to_char(hi, 'FM9990.00'), every)
FROM med JOIN (VALUES (1, 'raw_1to1', 'raw pipe 1 -> 1 (psql COPY TO piped into psql COPY FROM)'),
                      (2, 'raw_split', 'raw split pipes 1 -> 2 (two such pipes at once, half the rows each)'),
                      (3, 'pgdog_copy', '**pgdog_reshard 1 -> 2, copy** (table copy started_at..finished_at)'),
                      (4, 'pgdog_wall', 'pgdog_reshard 1 -> 2, call -> copied (+ pre-flight, schema sync pre, slot)'),
                      (5, 'pgdog_ready', 'pgdog_reshard 1 -> 2, call -> replicating (+ schema sync post)'))
       AS l(n, method, label) USING (method)
ORDER BY n;
SELECT '';
SELECT 'Ratios (raw median time / pgdog_reshard median time; > 1.0 means pgdog_reshard is faster):';
SELECT '';
SELECT format('- %s: **%s** (copy proper), %s (call -> copied)', label,
              to_char(r.s / c.s, 'FM990.00'), to_char(r.s / w.s, 'FM990.00'))
FROM (VALUES (1, 'raw_1to1', 'vs the raw 1 -> 1 pipe'), (2, 'raw_split', 'vs the raw split pipes (1 -> 2)'))
       AS l(n, method, label)
JOIN med r USING (method)
CROSS JOIN (SELECT s FROM med WHERE method = 'pgdog_copy') c
CROSS JOIN (SELECT s FROM med WHERE method = 'pgdog_wall') w
ORDER BY n;
SELECT '';
SELECT format('Control node memory while pgdog_reshard copies (max over %s runs, warm-up included): \`pgdog_reshard copy\` worker '
              'peak VmHWM %s MB (peak sampled RssAnon, its private memory: %s MB); \`pgdog_reshard task\` worker '
              'peak VmHWM %s MB (RssAnon %s MB). VmHWM counts the shared memory pages a process touched too.',
              count(DISTINCT rep),
              to_char(max(hwm_kb) FILTER (WHERE worker = 'copy') / 1024.0, 'FM9990.0'),
              to_char(max(anon_kb) FILTER (WHERE worker = 'copy') / 1024.0, 'FM9990.0'),
              to_char(max(hwm_kb) FILTER (WHERE worker = 'task') / 1024.0, 'FM9990.0'),
              to_char(max(anon_kb) FILTER (WHERE worker = 'task') / 1024.0, 'FM9990.0'))
FROM memory;
SQL

echo
cat "$summary"
echo

mb=$(value ctl "SELECT to_char($table_bytes / 1e6, 'FM99990.0')")
stream_mb=$(value ctl "SELECT to_char(${stream_bytes:-0} / 1e6, 'FM99990.0')")
command="bash bench/copy.sh"
[ "$ROWS" = 3000000 ] || command="ROWS=$ROWS $command"
[ "$REPEAT" = 3 ] || command="REPEAT=$REPEAT $command"
[ "$WARMUP" = 1 ] || command="WARMUP=$WARMUP $command"
[ "$FSYNC" = off ] || command="FSYNC=$FSYNC $command"
[ "$SHARED_BUFFERS" = 256MB ] || command="SHARED_BUFFERS=$SHARED_BUFFERS $command"
[ "$MAX_WAL_SIZE" = 8GB ] || command="MAX_WAL_SIZE=$MAX_WAL_SIZE $command"

cat >"$RESULTS" <<EOF
# Copy benchmark: pgdog_reshard 1 -> 2 against the raw binary COPY pipe

Written by \`bench/copy.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (pgdog_reshard commit $commit).

## Reproduce

As root on Debian 12 with the extension installed (\`make install\`):

    $command

## Machine

$machine
- load average (1, 5, 15 min) before the runs: $load_before; after: $load_after

## Settings

- Four servers on loopback, each started by the script: a source, two destination shards (\`prod_2x\`)
  and a control node (\`shared_preload_libraries = 'pgdog_reshard'\`, \`pgdog_reshard.parallel_copies\`
  at its default). Every connection, the tool's included, goes over TCP to 127.0.0.1.
- Every server: \`wal_level = logical\`, \`fsync = $FSYNC\`, \`shared_buffers = $SHARED_BUFFERS\`,
  \`max_wal_size = $MAX_WAL_SIZE\`, \`min_wal_size = 2GB\`, \`checkpoint_timeout = 30min\`,
  \`autovacuum = off\`; the rest default
  (\`synchronous_commit = on\`, \`full_page_writes = on\`).
- Data: one table \`orders\`, $ROWS rows, ${mb} MB on disk (\`pg_table_size\`, heap + TOAST; MB = 10^6
  bytes; ${stream_mb} MB as a binary COPY stream): bigint primary key, bigint sharding key
  \`customer_id\`, text, numeric(12,2), two timestamptz, jsonb, and four nullable columns (NULL in 1/5,
  1/3, 1/7 and 3/4 of the rows); \`VACUUM (FREEZE, ANALYZE)\` after loading; a publication FOR ALL TABLES.
- $REPEAT repetitions$( ((WARMUP)) && echo ", after one untimed warm-up pass of every method (the first
  writes into a fresh server create its WAL segments; \`min_wal_size = 2GB\` keeps them for the next
  runs)"); in each, the three methods in turn (the order rotates between repetitions), each run after
  dropping the destination tables and a \`CHECKPOINT\` on all four servers. Every method writes into the
  same table: the source's, primary key included (pgdog_reshard's schema sync \`pre\` creates primary
  keys before its copy, so the raw pipes get theirs from \`pg_dump --schema-only -t orders\`). Rows per
  second and MB per second are the table's rows and size on disk over the median time. Every run's row
  count on the destinations is checked.
- pgdog_reshard run: \`SELECT reshard_copy_data('prod', 'prod_2x', 'pgdog')\` on the control node, timed
  with the control node's clock (the task's start, the table copy's \`started_at\`/\`finished_at\` in
  \`reshard_table_copies\`, the switch to \`replicating\`); then \`reshard_stop()\`, waiting for
  \`cancelled\` and for the slot to be gone from the source. Memory: \`/proc/<pid>/status\` of the
  \`pgdog_reshard copy\` and \`pgdog_reshard task\` workers (from \`pg_stat_activity\`) every 100 ms.

## Results

$(cat "$summary")

## What limits these figures

All four servers, the psql processes of the pipes and pgdog_reshard's workers share the same $(nproc)
CPUs, so every figure here is bounded by CPU contention on one small machine, not by the network or the
disks (loopback, fsync = $FSYNC, the data in the page cache): the ratios mostly say how much CPU each
method spends per row. A raw pipe runs two psql processes that each handle every byte, and the split
pipes scan the source table twice; pgdog_reshard runs one copy worker that routes each row by its key
without decoding the rest. On separate hosts with cores to spare, parallel pipes would gain more than
they can here, so these ratios do not carry over as they are to a real cluster.$(
  ((${load_before%%.*} >= 1)) && printf '%s' " The machine was not idle
either (load average $load_before before the runs): other work on it adds noise to every figure.")
EOF
say "results written to $RESULTS"
