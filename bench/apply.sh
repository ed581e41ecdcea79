#!/usr/bin/env bash
# Apply benchmark: pgdog_reshard's stream (1 -> 2 shards) against native logical replication
# (CREATE SUBSCRIPTION, 1 -> 1) over the same backlog of a pgbench workload, then the lag of each
# under a steady load. Not part of the test suite: run by hand, as root, usually through
# bench/run.sh (`bash bench/run.sh`, or `ONLY=apply bash bench/run.sh`), which runs every benchmark and
# writes bench/RESULTS.md; alone:
#
#   bash bench/apply.sh                                       130,000 transactions a backlog, 3 rounds
#   TRANSACTIONS=20000 REPEAT=1 STEADY_SECONDS=10 RESULTS=/tmp/r.md bash bench/apply.sh   a quick run
#
# Needs the extension installed (`make install`) and PostgreSQL's binaries (pgbench among them).
# It starts, on loopback and as the postgres OS user, a source, two destination shards (prod_2x),
# a native subscriber and a control node, then:
#
#  1. pgbench -i on the source (pgbench_history gets REPLICA IDENTITY FULL: it has no primary key,
#     and only ever takes INSERTs); the same on the native subscriber (pgbench -i's data is
#     deterministic); reshard_copy_data into prod_2x, stopped once it replicates. Every
#     destination now holds the source's rows.
#  2. Per round: a slot for each consumer on the source, both consumers off; a backlog of
#     TRANSACTIONS pgbench transactions (TPC-B like: 3 UPDATEs and 1 INSERT each, so 4 changes)
#     between two marker rows. Then each consumer in turn (the order alternates between rounds)
#     starts and drains it: reshard_replicate('prod', 'prod_2x', 'pgdog', <its slot>), or
#     ALTER SUBSCRIPTION ... ENABLE. Two times, each to the last marker's arrival, stamped by an
#     ENABLE ALWAYS trigger on each destination (clock_timestamp(), the same machine clock): from
#     the first marker's arrival (applying only), and from the start (pgdog_reshard's pre-flight and
#     worker start, native's worker start, included). After each round, every table on
#     the destinations is compared with the source (an order-independent checksum of all rows).
#     One more round follows with pgbench's simple-update script (2 changes a transaction, no hot
#     rows), reported apart: the target workload's hot rows let the stream merge updates.
#  3. Steady load: pgbench -R RATE for STEADY_SECONDS with one consumer live at a time; every
#     250 ms the lag is the age of the newest pgbench_history row (mtime, set by the source's
#     now()) on the destination that is furthest behind.
#
# During each pgdog_reshard drain and its steady load, the memory of the control node's
# pgdog_reshard workers is sampled (sample_memory in lib.sh): their peaks per worker type go into the
# results. With SUMMARY set, the rows of bench/run.sh's "summary against the targets" are appended
# to that file: changes/s against native, the lag under load, the control node's peak memory.
#
# Settings (environment): SCALE (10: 1,000,000 accounts), TRANSACTIONS (130000), CLIENTS (4),
# REPEAT (3), RATE (1000), STEADY_SECONDS (30), FSYNC (off), RESULTS (a new /tmp/RESULTS-apply.*.md:
# bench/run.sh gathers the results), SUMMARY (none), PGBIN (pg_config --bindir), KEEP=1 keeps the
# data directories and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

SCALE=${SCALE:-10}
TRANSACTIONS=${TRANSACTIONS:-130000}
CLIENTS=${CLIENTS:-4}
REPEAT=${REPEAT:-3}
RATE=${RATE:-1000}
STEADY_SECONDS=${STEADY_SECONDS:-30}
FSYNC=${FSYNC:-off}
RESULTS=${RESULTS:-}
KEEP=${KEEP:-0}

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

for v in SCALE TRANSACTIONS CLIENTS REPEAT RATE STEADY_SECONDS; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $FSYNC == on || $FSYNC == off ]] || die "FSYNC must be on or off (got '$FSYNC')"
((TRANSACTIONS % CLIENTS == 0)) || die "TRANSACTIONS must be a multiple of CLIENTS"
bench_setup apply

settings="fsync = $FSYNC
shared_buffers = 256MB
max_wal_size = 8GB
min_wal_size = 1GB
checkpoint_timeout = 30min
autovacuum = off
max_replication_slots = 16
max_wal_senders = 16"

tables=(pgbench_accounts pgbench_branches pgbench_tellers pgbench_history bench_marker)

# --- servers and data ----------------------------------------------------------------------------

say "starting a source, two destination shards, a native subscriber and a control node in $base"
for name in src dst0 dst1 native; do start_instance "$name" "$settings"; done
start_instance ctl "$settings" preload
say "source :${port[src]}   prod_2x :${port[dst0]} :${port[dst1]}   native :${port[native]}   control :${port[ctl]}"

say "pgbench -i -s $SCALE on the source and on the native subscriber"
for name in src native; do
  as_pg "$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "${port[$name]}" -U postgres postgres >/dev/null 2>&1 ||
    die "pgbench -i failed on $name"
done
psql_at src <<'SQL'
ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
CREATE TABLE bench_marker (id int PRIMARY KEY, applied_at timestamptz);
CREATE PUBLICATION pgdog FOR ALL TABLES;
SQL
psql_at native -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; CREATE TABLE bench_marker (id int PRIMARY KEY, applied_at timestamptz)"

psql_at ctl -c "CREATE EXTENSION pgdog_reshard"
load_config '[[sharded_tables]]
database = "prod_2x"
name = "pgbench_accounts"
column = "aid"
data_type = "bigint"

[[sharded_tables]]
database = "prod_2x"
name = "pgbench_history"
column = "aid"
data_type = "bigint"

[[sharded_tables]]
database = "prod_2x"
name = "pgbench_tellers"
column = "tid"
data_type = "bigint"

[[sharded_tables]]
database = "prod_2x"
name = "pgbench_branches"
column = "bid"
data_type = "bigint"'

task_state() { value ctl "SELECT state || ' ' || coalesce(error, '') FROM reshard_status WHERE id = $1"; }

wait_state() {  # task, state, seconds
  local waited=0 s
  while :; do
    s=$(task_state "$1")
    [[ $s == "$2"* ]] && return
    [[ $s == failed* || $s == cancelled* || $s == done* ]] && die "task $1 ended: $s"
    ((waited++ < $3 * 10)) || die "task $1 is not $2 after $3 s: $s"
    sleep 0.1
  done
}

stop_task() {  # task
  value ctl "SELECT reshard_stop($1)" >/dev/null
  local waited=0
  until [ "$(value ctl "SELECT state FROM reshard_status WHERE id = $1")" = cancelled ]; do
    ((waited++ < 600)) || die "task $1 did not reach 'cancelled' within 60 s"
    sleep 0.1
  done
}

say "copying the source into prod_2x with reshard_copy_data"
task=$(value ctl "SELECT reshard_copy_data('prod', 'prod_2x', 'pgdog')")
wait_state "$task" replicating 600
stop_task "$task"
[ "$(value src "SELECT count(*) FROM pg_replication_slots")" = 0 ] || die "a slot is left after the copy task"

# The marker's arrival time on each destination, whatever applies it.
for name in dst0 dst1 native; do
  psql_at "$name" <<'SQL'
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN NEW.applied_at := clock_timestamp(); RETURN NEW; END$$;
CREATE TRIGGER stamp BEFORE INSERT ON bench_marker FOR EACH ROW EXECUTE FUNCTION stamp();
ALTER TABLE bench_marker ENABLE ALWAYS TRIGGER stamp;
SQL
done
value src "SELECT pg_create_logical_replication_slot('native_bench', 'pgoutput')" >/dev/null
psql_at native -c "CREATE SUBSCRIPTION native CONNECTION '$(conninfo src)' PUBLICATION pgdog
                   WITH (create_slot = false, slot_name = 'native_bench', enabled = false, copy_data = false)"

# --- checks --------------------------------------------------------------------------------------

# Per table: rows and the sum of a 60-bit hash of each row's text; the same on both sides means the
# same rows (order-independent, computed on each server).
# bench_marker's arrival stamps differ by design: only its ids count.
checksum() {  # server, table
  local row="t::text"
  [ "$2" = bench_marker ] && row="t.id::text"
  value "$1" "SELECT count(*) || ' ' || coalesce(sum(('x' || substr(md5($row), 1, 15))::bit(60)::bigint), 0)
              FROM $2 t"
}

# prod_2x's two shards together, and the native subscriber, equal the source row for row.
check_content() {
  local t want a b n c0 s0 c1 s1
  for t in "${tables[@]}"; do
    want=$(checksum src "$t")
    read -r c0 s0 <<<"$(checksum dst0 "$t")"
    read -r c1 s1 <<<"$(checksum dst1 "$t")"
    a="$(value src "SELECT ($c0 + $c1) || ' ' || ($s0::numeric + $s1::numeric)")"
    [ "$t" = bench_marker ] && a="$(value src "SELECT $c0 || ' ' || $s0")"  # omnisharded: whole on each
    b=$(checksum native "$t")
    [ "$a" = "$want" ] || die "prod_2x differs from the source in $t: $a, source $want"
    [ "$b" = "$want" ] || die "the native subscriber differs from the source in $t: $b, source $want"
  done
  for t in pgbench_accounts pgbench_history; do
    for n in 0 1; do
      psql_at "dst$n" -c "SET client_min_messages = warning; CREATE TABLE IF NOT EXISTS oracle (k bigint) PARTITION BY HASH (k)"
      c0=$(value "dst$n" "SELECT count(*) FROM $t WHERE NOT satisfies_hash_partition('oracle'::regclass, 2, $n, aid::bigint)")
      [ "$c0" = 0 ] || die "$c0 rows of $t on prod_2x shard $n belong on the other shard"
    done
  done
}

# --- drain a backlog -----------------------------------------------------------------------------

runs="$base/runs.tsv"      # consumer, round, workload, changes, seconds from the start, seconds applying
memory="$base/memory.tsv"  # phase (drain, steady), round, worker type, peak VmHWM kB, VmRSS kB, RssAnon kB
: >"$runs"
: >"$memory"

backlog() {  # round, pgbench built-in script (tpcb-like: 4 changes a transaction; simple-update: 2)
  local out tx
  workload=$2
  value src "SELECT pg_create_logical_replication_slot('pgdog_bench', 'pgoutput')" >/dev/null
  psql_at native -c "ALTER SUBSCRIPTION native DISABLE"
  say "  backlog: $TRANSACTIONS pgbench $workload transactions on $CLIENTS clients, both consumers off"
  # A first marker (id -round) opens the backlog: from its arrival to the last one's, a consumer
  # only applies; before it, it starts (pre-flight, workers, connections).
  value src "INSERT INTO bench_marker VALUES (-$1, NULL)" >/dev/null
  out=$(as_pg "$PGBIN/pgbench" -n -b "$workload" -c "$CLIENTS" -j 2 -t $((TRANSACTIONS / CLIENTS)) \
          -h 127.0.0.1 -p "${port[src]}" -U postgres postgres 2>&1) || die "pgbench failed: $out"
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  [ "$tx" = "$TRANSACTIONS" ] || die "pgbench processed '$tx' transactions, expected $TRANSACTIONS: $out"
  say "  $(grep -E '^tps' <<<"$out" | head -1)"
  value src "INSERT INTO bench_marker VALUES ($1, NULL)" >/dev/null
  if [ "$workload" = tpcb-like ]; then changes=$((4 * TRANSACTIONS + 2)); else changes=$((2 * TRANSACTIONS + 2)); fi
  say "  $changes changes, $(value src "SELECT pg_size_pretty(pg_current_wal_lsn() - restart_lsn) FROM pg_replication_slots WHERE slot_name = 'pgdog_bench'") of WAL"
}

# Waits for the marker on the given servers; prints the latest arrival (microseconds since epoch).
marker_arrival() {  # round, server...
  local round=$1 name at latest=0 waited=0
  shift
  for name in "$@"; do
    until at=$(value "$name" "SELECT (extract(epoch FROM applied_at) * 1000000)::bigint FROM bench_marker WHERE id = $round") && [ -n "$at" ]; do
      ((waited++ < 36000)) || die "the marker of round $round did not reach $name within an hour"
      sleep 0.1
    done
    ((at > latest)) && latest=$at
  done
  echo "$latest"
}

drain_pgdog() {  # round
  local t0 t1 task
  memory_start
  t0=$(now_us)
  task=$(value ctl "SELECT reshard_replicate('prod', 'prod_2x', 'pgdog', 'pgdog_bench')")
  t1=$(marker_arrival "$1" dst0 dst1)
  memory_stop "$memory" drain "$1"
  record_drain pgdog "$1" "$t0" "$(marker_arrival "-$1" dst0 dst1)" "$t1" "pgdog_reshard 1 -> 2 (task $task)"
  pgdog_task=$task
}

drain_native() {  # round
  local t0 t1
  t0=$(now_us)
  psql_at native -c "ALTER SUBSCRIPTION native ENABLE"
  t1=$(marker_arrival "$1" native)
  record_drain native "$1" "$t0" "$(marker_arrival "-$1" native)" "$t1" "native subscription 1 -> 1"
}

# Two times per drain: from the start (the call, or ENABLE) to the last marker, and from the first
# marker to the last (applying only: the changes between the markers over that time).
record_drain() {  # consumer, round, started us, first marker us, last marker us, label
  local all=$(seconds $(($5 - $3))) applying=$(seconds $(($5 - $4)))
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$workload" "$changes" "$all" "$applying" >>"$runs"
  say "  $6: $all s, $(value ctl "SELECT round($changes / $all)") changes/s from the start; $(value ctl "SELECT round(($changes - 1) / $applying)") changes/s applying"
}

pgdog_task=""
# The rounds of the target workload, then one of pgbench's simple-update (an UPDATE of a random
# account and an INSERT per transaction): no hot rows, so nothing for the stream's merging of a
# row's repeated updates to fold; it shows what the per-change apply alone does.
for ((round = 1; round <= REPEAT + 1; round++)); do
  if ((round <= REPEAT)); then
    say "round $round of $REPEAT"
    backlog "$round" tpcb-like
  else
    say "one more round, without hot rows"
    backlog "$round" simple-update
  fi
  if ((round % 2)); then drain_pgdog "$round"; drain_native "$round"; else drain_native "$round"; drain_pgdog "$round"; fi
  check_content
  say "  content checked: prod_2x and the native subscriber equal the source"
  stop_task "$pgdog_task"  # drops its slot: the next round makes a new one
done

# --- steady load ---------------------------------------------------------------------------------

lags="$base/lags.tsv"  # consumer, seconds behind
: >"$lags"

# The age of the newest pgbench_history row on the destination furthest behind, every 250 ms.
sample_lag() {  # consumer, stop file, server...
  local consumer=$1 stop=$2 name newest oldest
  shift 2
  while [ ! -e "$stop" ]; do
    oldest=""
    for name in "$@"; do
      newest=$(value "$name" "SELECT (extract(epoch FROM max(mtime)) * 1000000)::bigint FROM pgbench_history") || continue
      [ -n "$newest" ] || continue
      [ -z "$oldest" ] || ((newest < oldest)) && oldest=$newest
    done
    [ -n "$oldest" ] && printf '%s\t%s\n' "$consumer" "$(seconds $(($(now_us) - oldest)))" >>"$lags"
    sleep 0.25
  done
}

steady() {  # consumer, server...
  local consumer=$1 stop="$base/lag.stop" out load sampler
  shift
  rm -f "$stop"
  say "  $consumer: pgbench -R $RATE for $STEADY_SECONDS s"
  # The lag is only sampled once the load runs: the first sample comes after the first write.
  as_pg "$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -R "$RATE" -T "$STEADY_SECONDS" \
    -h 127.0.0.1 -p "${port[src]}" -U postgres postgres >"$base/steady-$consumer.out" 2>&1 &
  load=$!
  bg_pids+=("$load")
  sleep 1
  sample_lag "$consumer" "$stop" "$@" &
  sampler=$!
  bg_pids+=("$sampler")
  wait "$load" || die "pgbench -R failed: $(cat "$base/steady-$consumer.out")"
  touch "$stop"
  wait "$sampler" || true
  bg_forget "$load" "$sampler"
  out=$(grep -E '^tps' "$base/steady-$consumer.out" | head -1)
  say "  $out"
}

say "steady load, one consumer at a time"
value src "SELECT pg_create_logical_replication_slot('pgdog_bench', 'pgoutput')" >/dev/null
memory_start
pgdog_task=$(value ctl "SELECT reshard_replicate('prod', 'prod_2x', 'pgdog', 'pgdog_bench')")
wait_state "$pgdog_task" replicating 60
steady pgdog dst0 dst1
# What the memory figures are of: the control node's pgdog_reshard processes while it streams.
workers=$(value ctl "SELECT string_agg(backend_type || ' x' || n, ', ' ORDER BY backend_type)
                     FROM (SELECT backend_type, count(*) AS n FROM pg_stat_activity
                           WHERE backend_type LIKE 'pgdog\_reshard %' GROUP BY backend_type) w")
say "  control node's pgdog_reshard workers while it streams: $workers"
memory_stop "$memory" steady 0
stop_task "$pgdog_task"
psql_at native -c "ALTER SUBSCRIPTION native ENABLE"
value src "INSERT INTO bench_marker VALUES (1000, NULL)" >/dev/null
marker_arrival 1000 native >/dev/null  # caught up with the pgdog run's writes first
steady native native

# --- results -------------------------------------------------------------------------------------

summary="$base/summary.md"
targets="$base/targets.md"  # rows of bench/run.sh's summary against the targets
psql_at ctl -At >"$summary" <<SQL
CREATE TEMP TABLE runs (consumer text, round int, workload text, changes bigint, seconds float8, applying float8);
CREATE TEMP TABLE lags (consumer text, seconds float8);
CREATE TEMP TABLE memory (phase text, round int, worker text, hwm_kb bigint, rss_kb bigint, anon_kb bigint);
\copy runs FROM '$runs'
\copy lags FROM '$lags'
\copy memory FROM '$memory'
CREATE TEMP VIEW med_all AS
  SELECT consumer, workload, percentile_cont(0.5) WITHIN GROUP (ORDER BY changes / seconds) AS rate,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY (changes - 1) / applying) AS arate,
         min((changes - 1) / applying) AS lo, max((changes - 1) / applying) AS hi,
         string_agg(to_char((changes - 1) / applying, 'FM999,999,990'), ', ' ORDER BY round) AS every,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS s
  FROM runs GROUP BY consumer, workload;
CREATE TEMP VIEW med AS SELECT * FROM med_all WHERE workload = 'tpcb-like';
CREATE TEMP VIEW cold AS SELECT * FROM med_all WHERE workload = 'simple-update';
SELECT '| consumer | median changes/s applying | min - max | every round | median changes/s from the start | median s from the start |';
SELECT '|---|---:|---:|---|---:|---:|';
SELECT format('| %s | %s | %s - %s | %s | %s | %s |', label, to_char(arate, 'FM999,999,990'),
              to_char(lo, 'FM999,999,990'), to_char(hi, 'FM999,999,990'), every,
              to_char(rate, 'FM999,999,990'), to_char(s, 'FM9990.00'))
FROM med JOIN (VALUES (1, 'pgdog', '**pgdog_reshard stream 1 -> 2**'),
                      (2, 'native', 'native subscription 1 -> 1 (CREATE SUBSCRIPTION)')) AS l(n, consumer, label)
     USING (consumer)
ORDER BY n;
SELECT '';
SELECT format('Ratio (pgdog_reshard changes/s / native changes/s, medians): **%s** applying (from the first '
              'marker''s arrival to the last''s); %s from the start (the call or ENABLE, so pgdog_reshard''s '
              'pre-flight and worker start, and native''s worker start, count too)',
              to_char(p.arate / n.arate, 'FM990.00'), to_char(p.rate / n.rate, 'FM990.00'))
FROM med p, med n WHERE p.consumer = 'pgdog' AND n.consumer = 'native';
SELECT '';
SELECT format('Without hot rows (one round of pgbench simple-update: %s changes, an UPDATE of a random account '
              'and an INSERT per transaction): pgdog_reshard %s changes/s applying, native %s: **%s** '
              '(from the start: %s)', to_char(r.changes, 'FM999,999,990'), to_char(p.arate, 'FM999,999,990'),
              to_char(n.arate, 'FM999,999,990'), to_char(p.arate / n.arate, 'FM990.00'),
              to_char(p.rate / n.rate, 'FM990.00'))
FROM cold p, cold n, (SELECT max(changes) AS changes FROM runs WHERE workload = 'simple-update') r
WHERE p.consumer = 'pgdog' AND n.consumer = 'native';
SELECT '';
SELECT '| consumer under pgbench -R $RATE | samples | median lag s | p99 lag s | max lag s |';
SELECT '|---|---:|---:|---:|---:|';
SELECT format('| %s | %s | %s | %s | %s |', label, count(*),
              to_char(percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds), 'FM990.000'),
              to_char(percentile_cont(0.99) WITHIN GROUP (ORDER BY seconds), 'FM990.000'),
              to_char(max(seconds), 'FM990.000'))
FROM lags JOIN (VALUES (1, 'pgdog', 'pgdog_reshard stream 1 -> 2'), (2, 'native', 'native subscription 1 -> 1'))
       AS l(n, consumer, label) USING (consumer)
GROUP BY n, label ORDER BY n;
SELECT '';
SELECT '| control node worker (backend type) | peak VmHWM MB: drains / steady load | peak RssAnon MB: drains / steady load |';
SELECT '|---|---:|---:|';
SELECT format('| pgdog_reshard %s | %s / %s | %s / %s |', worker,
              coalesce(to_char(max(hwm_kb) FILTER (WHERE phase = 'drain') / 1024.0, 'FM9990.0'), '-'),
              coalesce(to_char(max(hwm_kb) FILTER (WHERE phase = 'steady') / 1024.0, 'FM9990.0'), '-'),
              coalesce(to_char(max(anon_kb) FILTER (WHERE phase = 'drain') / 1024.0, 'FM9990.0'), '-'),
              coalesce(to_char(max(anon_kb) FILTER (WHERE phase = 'steady') / 1024.0, 'FM9990.0'), '-'))
FROM memory GROUP BY worker ORDER BY worker;

\o $targets
SELECT format('| apply: pgdog_reshard stream 1->2 / native subscription 1->1, changes/s applying (medians) | %s (%s vs %s) | >= 1.00 | %s |',
              to_char(p.arate / n.arate, 'FM990.00'), to_char(p.arate, 'FM999,999,990'), to_char(n.arate, 'FM999,999,990'),
              CASE WHEN p.arate >= n.arate THEN 'yes' ELSE 'no' END)
FROM med p, med n WHERE p.consumer = 'pgdog' AND n.consumer = 'native';
SELECT format('| apply: the same from the start (pre-flight and worker start included) | %s (%s vs %s) | >= 1.00 | %s |',
              to_char(p.rate / n.rate, 'FM990.00'), to_char(p.rate, 'FM999,999,990'), to_char(n.rate, 'FM999,999,990'),
              CASE WHEN p.rate >= n.rate THEN 'yes' ELSE 'no' END)
FROM med p, med n WHERE p.consumer = 'pgdog' AND n.consumer = 'native';
SELECT format('| apply without hot rows (pgbench simple-update, one round), changes/s applying | %s (%s vs %s) | none: shows the apply without merging''s help | - |',
              to_char(p.arate / n.arate, 'FM990.00'), to_char(p.arate, 'FM999,999,990'), to_char(n.arate, 'FM999,999,990'))
FROM cold p, cold n WHERE p.consumer = 'pgdog' AND n.consumer = 'native';
-- Met when every sample is under the target, the max included.
SELECT format('| apply: lag under pgbench -R $RATE, pgdog_reshard p99 / max | %s / %s s | < 1 s | %s |',
              coalesce(to_char(p99, 'FM990.000'), '?'), coalesce(to_char(top, 'FM990.000'), '?'),
              CASE WHEN top < 1 THEN 'yes' ELSE 'no' END)
FROM (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY seconds) AS p99, max(seconds) AS top
      FROM lags WHERE consumer = 'pgdog') l;
SELECT format('| apply: control node peak memory (VmHWM, any worker) | %s MB (%s) | < 256 MB | %s |',
              coalesce(to_char(hwm_kb / 1024.0, 'FM9990.0'), '?'), coalesce('pgdog_reshard ' || worker, 'no worker sampled'),
              CASE WHEN hwm_kb < 256 * 1024 THEN 'yes' ELSE 'no' END)
FROM (VALUES (1)) AS one(x)
LEFT JOIN (SELECT worker, hwm_kb FROM memory ORDER BY hwm_kb DESC LIMIT 1) m ON true;
\o
SQL

echo
cat "$summary"
echo
cat "$targets"
summary_rows "$targets"
echo

command="bash bench/apply.sh"
for v in SCALE:10 TRANSACTIONS:130000 CLIENTS:4 REPEAT:3 RATE:1000 STEADY_SECONDS:30 FSYNC:off; do
  name=${v%%:*}
  [ "${!name}" = "${v#*:}" ] || command="$name=${!name} $command"
done
steady_tps=$(grep -E '^tps' "$base/steady-pgdog.out" | head -1 | sed 's/^tps = \([0-9.]*\).*/\1/')

[ -n "$RESULTS" ] || RESULTS=$(mktemp --suffix=.md /tmp/RESULTS-apply.XXXXXX)
cat >"$RESULTS" <<EOF
# Apply benchmark: pgdog_reshard's stream (1 -> 2) against native logical replication (1 -> 1)

Written by \`bench/apply.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (pgdog_reshard commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)).

## Reproduce

As root on Debian 12 with the extension installed (\`make install\`):

    $command

## Machine

$(machine_lines)

## Settings

- Five servers on loopback, each started by the script: a source, two destination shards
  (\`prod_2x\`), a native subscriber and a control node (\`shared_preload_libraries = 'pgdog_reshard'\`).
  Every server: \`wal_level = logical\`, \`fsync = $FSYNC\`, \`shared_buffers = 256MB\`,
  \`autovacuum = off\`; the rest default. The native subscription runs with its defaults (one apply
  worker, \`streaming = off\`, \`synchronous_commit = off\`); pgdog_reshard's apply sessions force
  \`synchronous_commit = on\`.
- Data: \`pgbench -i -s $SCALE\` ($((SCALE * 100000)) accounts); \`pgbench_history\` gets
  \`REPLICA IDENTITY FULL\` (no primary key; INSERTs only). prod_2x shards \`pgbench_accounts\` and
  \`pgbench_history\` by \`aid\`, \`pgbench_tellers\` by \`tid\`, \`pgbench_branches\` by \`bid\`
  (hash, as bigint); every change goes to one shard.
- Backlog, per round: $TRANSACTIONS transactions of pgbench's built-in TPC-B-like script on $CLIENTS clients
  (3 UPDATEs and 1 INSERT each: $((4 * TRANSACTIONS)) changes) between two marker rows, written while
  both consumers are off. Each consumer then starts and drains it alone (the order alternates
  between rounds), then one more round of pgbench's simple-update script (an UPDATE of a random
  account and an INSERT: $((2 * TRANSACTIONS)) changes, no hot rows). Two times end at the last marker's arrival, stamped by an \`ENABLE ALWAYS\`
  trigger on the destination: *applying* starts at the first marker's arrival; *from the start*
  starts at the call (\`reshard_replicate(..., slot)\`, with its pre-flight and worker start;
  \`ALTER SUBSCRIPTION ... ENABLE\`). After each round the destinations are compared with
  the source, table by table (rows and an order-independent checksum of every row), and rows'
  placement with \`satisfies_hash_partition\`: all equal.
- Steady load: \`pgbench -R $RATE\` for $STEADY_SECONDS s (achieved: ${steady_tps:-?} tps in the pgdog_reshard run) with one
  consumer live; every 250 ms, the lag is now minus the newest \`pgbench_history.mtime\` (the source's
  \`now()\` at the write) on the destination furthest behind. It includes up to 250 ms of sampling
  granularity and the source transaction's own duration.
- Memory: \`/proc/<pid>/status\` of the control node's pgdog_reshard background workers (found in
  \`pg_stat_activity\`; VmHWM and RssAnon read every 100 ms) from each \`reshard_replicate\` call to the
  marker's arrival, and through the steady load. Per source shard, one \`pgdog_reshard stream\` worker
  reads the slot and applies every change to the destination shards itself (a pipelined libpq session
  per destination shard: no apply process of its own on the control node); the task's
  \`pgdog_reshard task\` worker starts and watches it, and the \`pgdog_reshard launcher\` starts task
  workers. In \`pg_stat_activity\` while it streamed: ${workers:-?}.
  VmHWM counts the shared memory pages a process touched too (\`shared_buffers = 256MB\` here);
  RssAnon is its private memory. The sampler's own reads take a little CPU during the drains.

## Results

$(cat "$summary")

## What limits these figures

All servers, pgbench and the consumers share the same $(nproc) CPUs, so a drain is bounded by the CPU
time each consumer spends per change, not by the network or the disks (loopback, \`fsync = off\`).
Both read the same WAL through a WAL sender on the source, which decodes it (about a third of the
CPU). The native apply worker then changes the heap and its indexes directly, one source transaction
per local transaction, so one commit per pgbench transaction. pgdog_reshard routes each change in its
stream worker and sends it, pipelined, as a prepared statement (an upsert, an UPDATE or a DELETE by the
replica identity) to the destination shard, many source transactions per destination transaction:
each statement pays the executor's start-up, but there are far fewer commits and two shards apply in
parallel. In the TPC-B-like rounds each transaction also updates one of $SCALE branches and one of
$((10 * SCALE)) tellers: within a batch (2,000 changes, 500 transactions) those rows are updated again and
again, and pgdog_reshard merges a row's updates into one statement with the latest values (its tables
have no unique index but their primary key), so a batch sends about 1,100 statements instead of 2,000;
native applies every one of them. The simple-update round has no hot rows: nothing is merged there,
and its figure is the per-change apply's alone. Rows are found by their key's index
(\`enable_seqscan = off\` in the apply sessions): before, the generic plan of a key lookup on pgbench's
small branches table was a sequential scan over every version the open batch had made of the row,
and the apply ran at half speed. The "from the start" figures also count \`reshard_replicate\`'s
pre-flight (it connects to every server) and the start of its task and stream workers, once per task.
EOF
say "results written to $RESULTS"
