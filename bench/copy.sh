#!/usr/bin/env bash
# Copy benchmark: pgdog_reshard's copy (reshard_copy_data) 1 -> 1, 1 -> 2 and 2 -> 2 against raw
# binary COPY pipes, pgcopydb clone and a native logical replication subscription, on the same
# servers and the same data. Not part of the test suite: run it by hand, as root:
#
#   bash bench/copy.sh                      3,000,000 orders + 18,000 documents (~630 MB), 3 repetitions
#   ROWS=100000 DOC_ROWS=1000 REPEAT=1 RESULTS=/tmp/r.md bash bench/copy.sh      a quick run
#
# Needs the extension installed (`make install`), PostgreSQL's binaries and pgcopydb (the Debian
# package); nothing else beyond bash and coreutils (the arithmetic is done in SQL). It starts, on
# loopback and as the postgres OS user, a source (`prod`), a two-shard source (`prod_2src`: srca and
# srcb, each with half of every table's rows, id % 2), two destination shards (dst0 and dst1: `prod_2x`;
# dst0 alone is `prod_1x`) and a control node. The data set, on the source: `orders` (ROWS rows, about
# 150 bytes each) and `documents` (DOC_ROWS rows of two 3-6 kB text values of hex digests each, which
# pglz cannot compress, so they live in TOAST). Every method copies both tables and is timed to the
# point where the data AND the primary keys are in place on the destination(s):
#   raw 1->1     pre-data (tables without primary keys), one psql COPY TO STDOUT (FORMAT binary) |
#                psql COPY FROM STDIN pipe per table at once into dst0, then post-data (the primary
#                keys): what pg_restore does, and what pgdog_reshard's schema sync is meant to do
#                (keys in `post`; the results say which phase its primary keys were made in)
#   raw split    the same into dst0 and dst1: one pipe per table and destination (id % 2 = 0 / 1) at
#                once, pre-data and post-data on both destinations at once
#   pgcopydb     pgcopydb clone 1 -> 1 into dst0, the two tables only (--filters), 2 table jobs and
#                2 index jobs; wall clock of the command (its own schema dump and restore included)
#   native       native logical replication 1 -> 1 into dst0: the source's full schema (primary keys
#                included, as a subscriber is set up), CREATE SUBSCRIPTION (copy_data, binary), until
#                every table of pg_subscription_rel is 'r' (ready); then DROP SUBSCRIPTION
#   pgdog 1->1   reshard_copy_data('prod', 'prod_1x', 'pgdog')
#   pgdog 1->2   reshard_copy_data('prod', 'prod_2x', 'pgdog')
#   pgdog 2->2   reshard_copy_data('prod_2src', 'prod_2x', 'pgdog')
# A pgdog_reshard run is timed with the control node's clock, from the call to the task's switch to
# 'replicating' (pre-flight, schema sync pre, slots, the copy, schema sync post: the headline figure);
# the copy proper (first table copy's start to the last one's end) is reported too. Then
# reshard_stop() and a wait for 'cancelled' and for its slots and origins to be gone. During each
# pgdog_reshard run the peak memory of the control node's pgdog_reshard workers is sampled
# (sample_memory in lib.sh). Before every run: no table on dst0 and dst1, and a CHECKPOINT on every
# server; after it, the row counts of both tables on the destinations are checked. The methods run in
# turn, in an order that rotates between repetitions; one untimed warm-up pass of every method comes
# first (WARMUP=0 skips it): the first writes into a fresh server create its WAL segments, later ones
# recycle them. Prints the medians and writes them to $RESULTS; with SUMMARY set, appends to that file
# the rows of the summary against the targets (pgdog_reshard 1->2 against the raw split pipes,
# pgcopydb and the native subscription; the control node's peak memory). Every server is stopped on
# exit.
#
# Settings (environment): ROWS (3000000 orders, about 440 MB), DOC_ROWS (18000 documents, about
# 185 MB), REPEAT (3), WARMUP (1), FSYNC (off), SHARED_BUFFERS (256MB), MAX_WAL_SIZE (8GB), RESULTS
# (bench/RESULTS.md), SUMMARY (none), PGCOPYDB (pgcopydb on the PATH), PGBIN (pg_config --bindir),
# KEEP=1 keeps the data directories and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

ROWS=${ROWS:-3000000}
DOC_ROWS=${DOC_ROWS:-18000}
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
[[ $DOC_ROWS =~ ^[0-9]+$ && $DOC_ROWS -ge 2 ]] || die "DOC_ROWS must be an integer >= 2 (got '$DOC_ROWS')"
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -ge 1 ]] || die "REPEAT must be an integer >= 1 (got '$REPEAT')"
[[ $WARMUP == 0 || $WARMUP == 1 ]] || die "WARMUP must be 0 or 1 (got '$WARMUP')"
[[ $FSYNC == on || $FSYNC == off ]] || die "FSYNC must be on or off (got '$FSYNC')"
PGCOPYDB=${PGCOPYDB:-$(command -v pgcopydb || echo /usr/bin/pgcopydb)}
[ -x "$PGCOPYDB" ] || die "no pgcopydb at '$PGCOPYDB': apt-get install pgcopydb (or set PGCOPYDB)"
bench_setup copy
pgcopydb_version=$("$PGCOPYDB" --version 2>/dev/null | sed -n 's/^pgcopydb version //p' | head -n1)

settings="fsync = $FSYNC
shared_buffers = $SHARED_BUFFERS
max_wal_size = $MAX_WAL_SIZE
min_wal_size = 2GB
checkpoint_timeout = 30min
autovacuum = off"
# The native subscriber (dst0): its table sync workers at their default, said explicitly so that
# the results name the parallelism the native copy had (one sync worker per table here).
subscriber_settings="max_sync_workers_per_subscription = 2"

servers=(src srca srcb dst0 dst1 ctl)
tables=(orders documents)
total_rows=$((ROWS + DOC_ROWS))
declare -A expected=([orders]=$ROWS [documents]=$DOC_ROWS)

# --- servers -------------------------------------------------------------------------------------

say "starting a source, two source shards, two destination shards and a control node in $base (fsync = $FSYNC)"
start_instance src "$settings"
start_instance srca "$settings"
start_instance srcb "$settings"
start_instance dst0 "$settings
$subscriber_settings"
start_instance dst1 "$settings"
start_instance ctl "$settings" preload
say "prod :${port[src]}   prod_2src :${port[srca]} :${port[srcb]}   prod_2x / prod_1x shard 0 :${port[dst0]}   prod_2x shard 1 :${port[dst1]}   control :${port[ctl]}"

# --- data set ------------------------------------------------------------------------------------

say "building the data set on the source: $ROWS orders, $DOC_ROWS documents"
started=$(now_us)
psql_at src -v rows="$ROWS" -v docs="$DOC_ROWS" <<'SQL'
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
-- Wide rows: body and summary are 96 to 187 MD5 hex digests of distinct seeds each (3,072 to 5,984
-- bytes). Hex digits of digests have no repeats for pglz to find, so the values stay uncompressed and,
-- the row being over the TOAST threshold (2 kB), go out of line into the TOAST table.
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
INSERT INTO documents
SELECT g,
       1 + (g * 104729) % 100003,
       (ARRAY['invoice', 'contract', 'report'])[1 + g % 3],
       1 + g % 5,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
       CASE WHEN g % 10 <> 0 THEN 'document ' || g END,
       (SELECT string_agg(md5(g || '/body/' || i), '') FROM generate_series(1, 96 + g % 92) i),
       (SELECT string_agg(md5(g || '/summary/' || i), '') FROM generate_series(1, 96 + (g * 7) % 92) i)
FROM generate_series(1::bigint, :docs) g;
VACUUM (FREEZE, ANALYZE) orders, documents;
CREATE PUBLICATION pgdog FOR ALL TABLES;
CHECKPOINT;
SQL
# The documents' text must really be in TOAST, uncompressed: the TOAST relation at least as big as
# the values' bytes (a compressed or inline value would leave it smaller).
IFS='|' read -r orders_bytes docs_bytes toast_bytes text_bytes toasted < <(value src "
  SELECT pg_table_size('orders'), pg_table_size('documents'), pg_relation_size(c.reltoastrelid),
         t.bytes, pg_relation_size(c.reltoastrelid) >= 0.95 * t.bytes
  FROM pg_class c,
       (SELECT sum(octet_length(body) + octet_length(summary)) AS bytes FROM documents) t
  WHERE c.oid = 'documents'::regclass")
[ "$toasted" = t ] || die "documents' TOAST relation holds $toast_bytes bytes for $text_bytes bytes of text: values compressed or inline"
table_bytes=$((orders_bytes + docs_bytes))
say "data set built in $(seconds $(($(now_us) - started))) s: $(value src "SELECT pg_size_pretty($orders_bytes::bigint)") of orders, $(value src "SELECT pg_size_pretty($docs_bytes::bigint)") of documents ($(value src "SELECT pg_size_pretty($toast_bytes::bigint)") of it TOAST) on disk, $(value src "SELECT pg_size_pretty(pg_indexes_size('orders') + pg_indexes_size('documents'))") of primary keys"

# The source's schema in pg_restore's two sections: the tables without their primary keys, and the
# primary keys. The raw pipes run one before and one after their copy (so they build the keys after
# the data, as pg_restore and pgdog_reshard's schema sync do); the native subscriber gets both before.
for section in pre-data post-data; do
  as_pg "$PGBIN/pg_dump" -h 127.0.0.1 -p "${port[src]}" -U postgres -d postgres --section="$section" \
    -t orders -t documents -f "$base/$section.sql"
done
! grep -q 'PRIMARY KEY' "$base/pre-data.sql" || die "pg_dump --section=pre-data has a primary key"
[ "$(grep -c 'PRIMARY KEY' "$base/post-data.sql")" = 2 ] || die "pg_dump --section=post-data does not have the 2 primary keys"
# The keys are built with the sort memory pgdog_reshard's schema sync gives its sessions (256MB, over
# the server default of 64MB, which spills a 1.5-million-row key's sort to disk): the same build.
sed -i "1i SET maintenance_work_mem = '256MB';" "$base/post-data.sql"

# The two-shard source, not timed: every table's rows split by id % 2 with binary COPY pipes, the
# primary keys built after, a publication on each shard.
say "building the two source shards of prod_2src (id % 2 = 0 on srca, 1 on srcb)"
pids=()
for s in 0 1; do
  shard=$([ "$s" = 0 ] && echo srca || echo srcb)
  (
    psql_at "$shard" -f "$base/pre-data.sql" >/dev/null
    for t in "${tables[@]}"; do
      psql_at src -c "COPY (SELECT * FROM $t WHERE id % 2 = $s) TO STDOUT (FORMAT binary)" |
        psql_at "$shard" -c "COPY $t FROM STDIN (FORMAT binary)"
    done
    psql_at "$shard" -f "$base/post-data.sql" >/dev/null
    psql_at "$shard" -c "VACUUM (FREEZE, ANALYZE) orders, documents" -c "CREATE PUBLICATION pgdog FOR ALL TABLES" -c "CHECKPOINT"
  ) &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || die "building a source shard of prod_2src failed"; done
for t in "${tables[@]}"; do
  a=$(value srca "SELECT count(*) FROM $t")
  b=$(value srcb "SELECT count(*) FROM $t")
  [ $((a + b)) -eq "${expected[$t]}" ] || die "prod_2src holds $((a + b)) $t rows ($a + $b), expected ${expected[$t]}"
done

# The control node's configuration: the two source clusters and the two destination clusters, both
# destinations with the same sharding rules (prod_1x is dst0 alone, so everything goes to its shard 0).
load_copy_config() {
  local cluster rules=""
  for cluster in prod_1x prod_2x; do
    rules+="[[sharded_tables]]
database = \"$cluster\"
name = \"orders\"
column = \"customer_id\"
data_type = \"bigint\"

[[sharded_tables]]
database = \"$cluster\"
name = \"documents\"
column = \"owner_id\"
data_type = \"bigint\"

"
  done
  load_toml "$(database_entry prod src)
$(database_entry prod_2src srca 0)
$(database_entry prod_2src srcb 1)
$(database_entry prod_1x dst0 0)
$(database_entry prod_2x dst0 0)
$(database_entry prod_2x dst1 1)
$rules" prod prod_2src prod_1x prod_2x
}

psql_at ctl -c "CREATE EXTENSION pgdog_reshard"
load_copy_config
[ "$(value ctl "SELECT count(*) FROM reshard_sharded_tables")" = 4 ] || die "the control node does not have the 4 sharding rules"

# pgcopydb's filter: the two tables only.
printf '[include-only-table]\npublic.orders\npublic.documents\n' >"$base/pgcopydb.filters"
chown postgres "$base/pgcopydb.filters"

# --- one run of each method ----------------------------------------------------------------------

runs="$base/runs.tsv"      # method, repetition, seconds
memory="$base/memory.tsv"  # method, repetition, backend type, peak VmHWM kB, peak VmRSS kB, peak RssAnon kB
: >"$runs"
: >"$memory"

# Before every run: no destination table, and nothing dirty to flush on any server. pgcopydb restores
# the source's publication with the rest of post-data (it does not filter it out): a second restore
# would fail on it, so it goes too.
prepare() {
  local d
  for d in dst0 dst1; do
    psql_at "$d" -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS orders, documents" \
      -c "DROP PUBLICATION IF EXISTS pgdog"
  done
  for d in "${servers[@]}"; do psql_at "$d" -c "CHECKPOINT"; done
}

check_rows() {  # what, destination server...
  local t d n sum parts out=""
  for t in "${tables[@]}"; do
    sum=0
    parts=""
    for d in "${@:2}"; do
      n=$(value "$d" "SELECT count(*) FROM $t") || die "$1: no table $t on $d"
      sum=$((sum + n))
      parts+="${parts:+ + }$n"
    done
    [ "$sum" -eq "${expected[$t]}" ] || die "$1: $sum $t rows on the destinations ($parts), expected ${expected[$t]}"
    out+="${out:+, }$t $parts"
  done
  echo "$out rows"
}

record() {  # method, repetition, microseconds
  printf '%s\t%s\t%s\n' "$1" "$2" "$(seconds "$3")" >>"$runs"
}

# One binary COPY pipe, in a subshell so that its exit status is the pipeline's (pipefail).
copy_pipe() {  # source server, COPY ... TO STDOUT statement, destination server, table
  psql_at "$1" -c "$2" | psql_at "$3" -c "COPY $4 FROM STDIN (FORMAT binary)"
}

# Runs "$@" once per server named in $1 (the word {} replaced by it) at once; dies if one fails.
on_each() {  # "servers", what, command with {}...
  local s p pids=() a args
  for s in $1; do
    args=()
    for a in "${@:3}"; do args+=("${a//\{\}/$s}"); done
    "${args[@]}" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "$2 failed"; done
}

run_raw_1to1() {  # repetition
  local t0 t1 t p pids=() counts
  t0=$(now_us)
  psql_at dst0 -f "$base/pre-data.sql" >/dev/null
  for t in "${tables[@]}"; do
    copy_pipe src "COPY $t TO STDOUT (FORMAT binary)" dst0 "$t" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || die "raw 1->1: a pipe failed"; done
  psql_at dst0 -f "$base/post-data.sql" >/dev/null
  t1=$(now_us)
  record raw_1to1 "$1" $((t1 - t0))
  counts=$(check_rows "raw 1->1" dst0)
  say "  raw 1->1 pipes: $(seconds $((t1 - t0))) s ($counts)"
}

run_raw_split() {  # repetition
  local t0 t1 t s p pids=() counts
  t0=$(now_us)
  on_each "dst0 dst1" "raw split: pre-data" psql_at {} -q -o /dev/null -f "$base/pre-data.sql"
  for t in "${tables[@]}"; do
    for s in 0 1; do
      copy_pipe src "COPY (SELECT * FROM $t WHERE id % 2 = $s) TO STDOUT (FORMAT binary)" "dst$s" "$t" &
      pids+=($!)
    done
  done
  for p in "${pids[@]}"; do wait "$p" || die "raw split: a pipe failed"; done
  on_each "dst0 dst1" "raw split: post-data" psql_at {} -q -o /dev/null -f "$base/post-data.sql"
  t1=$(now_us)
  record raw_split "$1" $((t1 - t0))
  counts=$(check_rows "raw split" dst0 dst1)
  say "  raw split pipes (2 tables x 2 halves): $(seconds $((t1 - t0))) s ($counts)"
}

# pgcopydb creates the tables itself (prepare dropped them); its work directory starts empty, and it
# uses the pg_dump and pg_restore of the servers under test. It looks its tools up in every PATH
# directory: a short PATH keeps root's own (unreadable to the postgres user) out of its log.
run_pgcopydb() {  # repetition
  local t0 t1 counts dir="$base/pgcopydb"
  rm -rf "$dir"
  echo "---- run $1" >>"$base/pgcopydb.log"
  t0=$(now_us)
  as_pg env PATH="$PGBIN:/usr/bin:/bin" "$PGCOPYDB" clone --source "$(conninfo src)" --target "$(conninfo dst0)" \
    --dir "$dir" --filters "$base/pgcopydb.filters" --table-jobs 2 --index-jobs 2 \
    --no-owner --no-acl --no-comments --skip-extensions >>"$base/pgcopydb.log" 2>&1 ||
    die "pgcopydb clone failed (see $base/pgcopydb.log)"
  t1=$(now_us)
  record pgcopydb "$1" $((t1 - t0))
  counts=$(check_rows "pgcopydb clone" dst0)
  say "  pgcopydb clone 1->1: $(seconds $((t1 - t0))) s ($counts)"
}

# Native logical replication: the subscriber's tables made first from the source's full schema, as a
# subscriber is set up; ready when every table's sync is over ('r'). The subscriber's log is watched
# meanwhile, so that a sync worker that keeps failing (and being restarted) ends the run.
run_native() {  # repetition
  local t0 t1 now last_report log_from states counts sub=bench_native
  log_from=$(($(stat -c %s "$base/dst0.log") + 1))
  t0=$(now_us)
  psql_at dst0 -f "$base/pre-data.sql" -f "$base/post-data.sql" >/dev/null
  psql_at dst0 -c "SET client_min_messages = warning" \
    -c "CREATE SUBSCRIPTION $sub CONNECTION '$(conninfo src)' PUBLICATION pgdog WITH (copy_data = true, binary = true)"
  last_report=$t0
  while :; do
    states=$(value dst0 "SELECT count(*) FILTER (WHERE r.srsubstate = 'r') || ' ' || count(*)
                         FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                         WHERE s.subname = '$sub'")
    [ "$states" = "${#tables[@]} ${#tables[@]}" ] && break
    now=$(now_us)
    if ((now - last_report >= 5000000)); then
      ! tail -c "+$log_from" "$base/dst0.log" | grep -q 'ERROR:' ||
        die "native subscription: errors on the subscriber: $(tail -c "+$log_from" "$base/dst0.log" | grep -m1 'ERROR:')"
      say "    native subscription: ${states% *} of ${states#* } tables ready"
      last_report=$now
    fi
    sleep 0.15
  done
  t1=$(now_us)
  record native "$1" $((t1 - t0))
  counts=$(check_rows "native subscription" dst0)
  say "  native subscription 1->1: $(seconds $((t1 - t0))) s ($counts)"
  # DROP SUBSCRIPTION drops its slot on the source too; nothing may be left there.
  psql_at dst0 -c "SET client_min_messages = warning" -c "DROP SUBSCRIPTION $sub"
  no_slots_left "native subscription" src
}

no_slots_left() {  # what, source server...
  local s waited
  for s in "${@:2}"; do
    waited=0
    until [ "$(value "$s" "SELECT count(*) FROM pg_replication_slots")" = 0 ]; do
      ((waited++ < 300)) || die "replication slots left on $s after $1: $(value "$s" "SELECT string_agg(slot_name, ', ') FROM pg_replication_slots")"
      sleep 0.1
    done
  done
}

run_pgdog() {  # repetition, method, source cluster, destination cluster, "source servers", "destination servers"
  local rep=$1 method=$2 task counts
  local -a sources dests
  read -r -a sources <<<"$5"
  read -r -a dests <<<"$6"
  memory_start
  task=$(value ctl "SELECT reshard_copy_data('$3', '$4', 'pgdog')")
  wait_replicating "$task" ""
  memory_stop "$memory" "$method" "$rep"

  # Times from the control node's own clock: the call (the task's created_at) to the switch to
  # 'replicating' (the headline: data and primary keys in place), the copy proper (first table
  # copy's started_at to the last one's finished_at), and the call to the last table copied.
  local copy wall ready rows copies
  IFS='|' read -r copy wall ready rows copies < <(value ctl "
    SELECT extract(epoch FROM max(c.finished_at) - min(c.started_at)),
           extract(epoch FROM max(c.finished_at) - s.started_at),
           extract(epoch FROM s.updated_at - s.started_at),
           sum(c.rows), count(*)
    FROM reshard_table_copies c JOIN reshard_status s ON s.id = c.task_id
    WHERE c.task_id = $task AND c.state = 'done'
    GROUP BY s.started_at, s.updated_at")
  [ "$copies" = $((${#tables[@]} * ${#sources[@]})) ] ||
    die "pgdog_reshard task $task: '$copies' table copies done, expected $((${#tables[@]} * ${#sources[@]}))"
  [ "$rows" = "$total_rows" ] || die "pgdog_reshard task $task copied '$rows' rows, expected $total_rows"
  printf '%s_ready\t%s\t%s\n%s_copy\t%s\t%s\n%s_wall\t%s\t%s\n' \
    "$method" "$rep" "$ready" "$method" "$rep" "$copy" "$method" "$rep" "$wall" >>"$runs"
  counts=$(check_rows "pgdog_reshard $3 -> $4" "${dests[@]}")
  say "  pgdog_reshard $3 -> $4 (task $task): call -> replicating $ready s, copy $copy s, call -> copied $wall s ($counts)"

  # Stop the task (it drops its slots and the destinations' origins) and wait for it to end.
  value ctl "SELECT reshard_stop($task)" >/dev/null
  local waited=0 d
  until [ "$(value ctl "SELECT state FROM reshard_status WHERE id = $task")" = cancelled ]; do
    ((waited++ < 600)) || die "task $task did not reach 'cancelled' within 60 s"
    sleep 0.1
  done
  no_slots_left "task $task was cancelled" "${sources[@]}"
  for d in "${dests[@]}"; do
    [ "$(value "$d" "SELECT count(*) FROM pg_replication_origin")" = 0 ] ||
      die "replication origins left on $d after task $task was cancelled: $(value "$d" "SELECT string_agg(roname, ', ') FROM pg_replication_origin")"
  done
}

run_pgdog_1to1() { run_pgdog "$1" pgdog_1to1 prod prod_1x "src" "dst0"; }
run_pgdog_1to2() { run_pgdog "$1" pgdog_1to2 prod prod_2x "src" "dst0 dst1"; }
run_pgdog_2to2() { run_pgdog "$1" pgdog_2to2 prod_2src prod_2x "srca srcb" "dst0 dst1"; }

methods=(raw_1to1 raw_split pgcopydb native pgdog_1to1 pgdog_1to2 pgdog_2to2)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
bench_started=$(now_us)
for ((rep = 1 - WARMUP; rep <= REPEAT; rep++)); do
  if ((rep == 0)); then say "warm-up pass (not counted)"; else say "repetition $rep of $REPEAT"; fi
  for ((k = 0; k < ${#methods[@]}; k++)); do
    method=${methods[$(((k + rep + 2) % ${#methods[@]}))]}  # rotate the order between repetitions
    prepare
    "run_$method" "$rep"
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
say "measurements done in $(seconds $(($(now_us) - bench_started))) s"

# Where pgdog_reshard's schema sync put the primary keys: after the data (phase post) is the shape the
# raw pipes copy; before it (pre), the comparison would not be like for like, and the results say so.
pk_phases=$(value ctl "SELECT coalesce(string_agg(DISTINCT phase, ', '), 'none') FROM reshard_schema_sync
                       WHERE statement ILIKE '%PRIMARY KEY%' AND state IN ('done', 'exists')")
pk_note="in these runs: phase \`$pk_phases\`, from \`reshard_schema_sync\`"
[ "$pk_phases" = post ] ||
  say "warning: pgdog_reshard created its primary keys in phase(s) '$pk_phases', not after the data (post) as the raw pipes do"

# --- results -------------------------------------------------------------------------------------

# The binary COPY stream of one copy of both tables (the bytes pgdog_reshard read from the source).
stream_bytes=$(value ctl "SELECT max(b) FROM (SELECT sum(bytes) AS b FROM reshard_table_copies
                                              WHERE state = 'done' GROUP BY task_id) t")
machine=$(machine_lines)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)

summary="$base/summary.md"
targets="$base/targets.md"  # rows of the summary against the targets
psql_at ctl -At -v rows="$total_rows" -v bytes="$table_bytes" >"$summary" <<SQL
CREATE TEMP TABLE runs (method text, rep int, seconds float8);
CREATE TEMP TABLE memory (method text, rep int, worker text, hwm_kb bigint, rss_kb bigint, anon_kb bigint);
\copy runs FROM '$runs'
\copy memory FROM '$memory'
CREATE TEMP VIEW med AS
  SELECT method, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) AS s, min(seconds) AS lo, max(seconds) AS hi,
         string_agg(to_char(seconds, 'FM9990.00'), ', ' ORDER BY rep) AS every
  FROM runs WHERE rep >= 1 GROUP BY method;
-- A method's row of the timing tables, after its label.
CREATE TEMP VIEW timing AS
  SELECT method, format('%s | %s | %s | %s - %s | %s |', to_char(s, 'FM9990.00'),
                        to_char(:rows / s, 'FM999,999,990'), to_char(:bytes / 1e6 / s, 'FM9990.0'),
                        to_char(lo, 'FM9990.00'), to_char(hi, 'FM9990.00'), every) AS cells
  FROM med;
SELECT 'Time to the data and the primary keys in place on the destination(s), both tables:';
SELECT '';
SELECT '| method | median s | rows/s | MB/s | min - max s | every run (s) |';
SELECT '|---|---:|---:|---:|---:|---|';
SELECT format('| %s | %s', label, cells)
FROM timing JOIN (VALUES
  (1, 'raw_1to1', 'raw pipes 1 -> 1 (pre-data; one psql COPY TO piped into psql COPY FROM per table, at once; post-data)'),
  (2, 'raw_split', 'raw split pipes 1 -> 2 (the same with one pipe per table and destination, half the rows each)'),
  (3, 'pgcopydb', 'pgcopydb clone 1 -> 1 (--table-jobs 2 --index-jobs 2)'),
  (4, 'native', 'native logical replication 1 -> 1 (CREATE SUBSCRIPTION ... copy_data, until every table is ready)'),
  (5, 'pgdog_1to1_ready', '**pgdog_reshard 1 -> 1** (call -> replicating: schema pre, copy, schema post)'),
  (6, 'pgdog_1to2_ready', '**pgdog_reshard 1 -> 2** (call -> replicating)'),
  (7, 'pgdog_2to2_ready', '**pgdog_reshard 2 -> 2** (call -> replicating)'))
  AS l(n, method, label) USING (method)
ORDER BY n;
SELECT '';
SELECT 'pgdog_reshard, the copy alone (first table copy''s started_at to the last one''s finished_at; no primary key yet):';
SELECT '';
SELECT '| method | median s | rows/s | MB/s | min - max s | every run (s) |';
SELECT '|---|---:|---:|---:|---:|---|';
SELECT format('| %s | %s', label, cells)
FROM timing JOIN (VALUES
  (1, 'pgdog_1to1_copy', 'pgdog_reshard 1 -> 1, copy'),
  (2, 'pgdog_1to2_copy', 'pgdog_reshard 1 -> 2, copy'),
  (3, 'pgdog_1to2_wall', 'pgdog_reshard 1 -> 2, call -> copied (+ pre-flight, schema sync pre, slot)'),
  (4, 'pgdog_2to2_copy', 'pgdog_reshard 2 -> 2, copy'))
  AS l(n, method, label) USING (method)
ORDER BY n;
SELECT '';
SELECT 'Ratios (the other method''s median time / pgdog_reshard''s median time, both to the data and primary keys in place; > 1.0 means pgdog_reshard is faster):';
SELECT '';
SELECT format('- %s: **%s** (%s s / %s s)', label, to_char(o.s / p.s, 'FM990.00'),
              to_char(o.s, 'FM9990.00'), to_char(p.s, 'FM9990.00'))
FROM (VALUES (1, 'raw_split', 'pgdog_1to2_ready', 'pgdog_reshard 1 -> 2 vs the raw split pipes 1 -> 2 (its limit)'),
             (2, 'raw_1to1', 'pgdog_1to1_ready', 'pgdog_reshard 1 -> 1 vs the raw pipes 1 -> 1 (its limit)'),
             (3, 'pgcopydb', 'pgdog_1to2_ready', 'pgdog_reshard 1 -> 2 vs pgcopydb clone 1 -> 1'),
             (4, 'native', 'pgdog_1to2_ready', 'pgdog_reshard 1 -> 2 vs the native subscription 1 -> 1'),
             (5, 'pgcopydb', 'pgdog_1to1_ready', 'pgdog_reshard 1 -> 1 vs pgcopydb clone 1 -> 1 (same shape)'),
             (6, 'native', 'pgdog_1to1_ready', 'pgdog_reshard 1 -> 1 vs the native subscription 1 -> 1 (same shape)'))
       AS l(n, other, pgdog, label)
JOIN med o ON o.method = l.other
JOIN med p ON p.method = l.pgdog
ORDER BY n;
SELECT format('- pgdog_reshard 2 -> 2: **%s rows/s**, %s MB/s (median, call -> replicating); %s of 1 -> 2''s time',
              to_char(:rows / t.s, 'FM999,999,990'), to_char(:bytes / 1e6 / t.s, 'FM9990.0'),
              to_char(t.s / o.s, 'FM990.00'))
FROM med t, med o WHERE t.method = 'pgdog_2to2_ready' AND o.method = 'pgdog_1to2_ready';
SELECT '';
SELECT format('Control node memory while pgdog_reshard copies (peak over %s runs, warm-up included; VmHWM counts the '
              'shared memory pages a process touched too, RssAnon is its private memory):', count(DISTINCT (method, rep)))
FROM memory;
SELECT '';
SELECT '| control node worker (backend type) | peak VmHWM MB: 1 -> 1 / 1 -> 2 / 2 -> 2 | peak VmHWM MB, all runs | peak RssAnon MB, all runs |';
SELECT '|---|---:|---:|---:|';
SELECT format('| pgdog_reshard %s | %s / %s / %s | %s | %s |', worker,
              coalesce(to_char(max(hwm_kb) FILTER (WHERE method = 'pgdog_1to1') / 1024.0, 'FM9990.0'), '-'),
              coalesce(to_char(max(hwm_kb) FILTER (WHERE method = 'pgdog_1to2') / 1024.0, 'FM9990.0'), '-'),
              coalesce(to_char(max(hwm_kb) FILTER (WHERE method = 'pgdog_2to2') / 1024.0, 'FM9990.0'), '-'),
              to_char(max(hwm_kb) / 1024.0, 'FM9990.0'), to_char(max(anon_kb) / 1024.0, 'FM9990.0'))
FROM memory GROUP BY worker ORDER BY worker;

\o $targets
SELECT format('| copy: %s, time to data + primary keys (medians) | %s (%s s vs %s s) | %s %s | %s |',
              label, to_char(o.s / p.s, 'FM990.00'), to_char(o.s, 'FM9990.00'), to_char(p.s, 'FM9990.00'),
              op, to_char(target, 'FM990.00'),
              CASE WHEN (op = '>=' AND o.s / p.s >= target) OR (op = '>' AND o.s / p.s > target) THEN 'yes' ELSE 'no' END)
FROM (VALUES (1, 'raw_split', 'raw split pipes 1->2 / pgdog_reshard 1->2', '>=', 1.0),
             (2, 'pgcopydb', 'pgcopydb clone 1->1 / pgdog_reshard 1->2', '>', 1.0),
             (3, 'native', 'native subscription 1->1 / pgdog_reshard 1->2', '>', 1.0))
       AS l(n, other, label, op, target)
JOIN med o ON o.method = l.other
JOIN med p ON p.method = 'pgdog_1to2_ready'
ORDER BY n;
SELECT format('| copy: control node peak memory during the copy (VmHWM, any worker) | %s MB (%s) | < 256 MB | %s |',
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

mb() { value ctl "SELECT to_char(${1:-0} / 1e6, 'FM99990.0')"; }
command=""
for v in ROWS:3000000 DOC_ROWS:18000 REPEAT:3 WARMUP:1 FSYNC:off SHARED_BUFFERS:256MB MAX_WAL_SIZE:8GB; do
  name=${v%%:*}
  [ "${!name}" = "${v#*:}" ] || command+="$name=${!name} "
done
command+="bash bench/copy.sh"

cat >"$RESULTS" <<EOF
# Copy benchmark: pgdog_reshard against raw binary COPY pipes, pgcopydb and native logical replication

Written by \`bench/copy.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (pgdog_reshard commit $commit).

## Reproduce

As root on Debian 12 with the extension installed (\`make install\`) and pgcopydb (\`apt-get install
pgcopydb\`):

    $command

## Machine

$machine
- pgcopydb ${pgcopydb_version:-unknown}
- load average (1, 5, 15 min) before the runs: $load_before; after: $load_after

## Settings

- Six servers on loopback, each started by the script: a source (\`prod\`), a two-shard source
  (\`prod_2src\`), two destination shards (\`prod_2x\`; the first alone is \`prod_1x\`) and a control node
  (\`shared_preload_libraries = 'pgdog_reshard'\`, \`pgdog_reshard.parallel_copies\` at its default, 2
  table copies at once per source shard). Every connection, the tools' included, goes over TCP to
  127.0.0.1.
- Every server: \`wal_level = logical\`, \`fsync = $FSYNC\`, \`shared_buffers = $SHARED_BUFFERS\`,
  \`max_wal_size = $MAX_WAL_SIZE\`, \`min_wal_size = 2GB\`, \`checkpoint_timeout = 30min\`,
  \`autovacuum = off\`; the rest default (\`synchronous_commit = on\`, \`full_page_writes = on\`). The
  native subscriber (destination shard 0) has \`$subscriber_settings\` set explicitly (its default;
  with two tables, one sync worker per table) and the default \`max_logical_replication_workers = 4\`.
- Data, on the source: \`orders\`, $ROWS rows, $(mb "$orders_bytes") MB (bigint primary key, bigint sharding
  key \`customer_id\`, text, numeric(12,2), two timestamptz, jsonb, and four nullable columns: NULL in 1/5,
  1/3, 1/7 and 3/4 of the rows); \`documents\`, $DOC_ROWS rows, $(mb "$docs_bytes") MB, $(mb "$toast_bytes") MB of it
  in TOAST (bigint primary key, bigint sharding key \`owner_id\`, four small columns, and two text
  columns of 3,072 to 5,984 bytes of MD5 hex digests each: too random for pglz, so stored
  uncompressed out of line, which the script checks). Sizes are \`pg_table_size\` (heap + TOAST; MB =
  10^6 bytes): $(mb "$table_bytes") MB for both tables, $(mb "$stream_bytes") MB as binary COPY streams.
  \`VACUUM (FREEZE, ANALYZE)\` after loading; a publication \`pgdog\` FOR ALL TABLES. \`prod_2src\`'s two
  shards hold the rows with even and odd ids of both tables (built once, untimed), each with its
  primary keys and the same publication. Both destination clusters shard \`orders\` by \`customer_id\`
  and \`documents\` by \`owner_id\` (hash, bigint).
- Every method copies both tables and is timed to the point where the data and the primary keys are
  in place on the destination(s); every table is created inside the timed interval.
  - Raw pipes: \`psql -f\` of \`pg_dump --section=pre-data -t orders -t documents\` (the tables, no
    primary key), then one \`psql -c "COPY t TO STDOUT (FORMAT binary)" | psql -c "COPY t FROM STDIN
    (FORMAT binary)"\` per table at once (split: per table and destination, \`WHERE id % 2 = 0 / 1\`,
    four at once), then \`psql -f\` of \`--section=post-data\` (the two \`ADD PRIMARY KEY\`s, one after
    the other; split: on both destinations at once), with \`maintenance_work_mem = 256MB\` as
    pgdog_reshard's schema sync sets it. This is what pg_restore does, and what
    pgdog_reshard's schema sync is meant to do: primary keys in its \`post\` phase, after the data
    ($pk_note).
  - pgcopydb: \`pgcopydb clone --filters <[include-only-table] orders, documents> --table-jobs 2
    --index-jobs 2 --no-owner --no-acl --no-comments --skip-extensions\` into destination shard 0, a fresh
    \`--dir\` each run; the wall clock of the command. It restores the source's publication with the
    rest of post-data (its filters do not cover publications); the next run's preparation drops it.
  - Native logical replication: the tables with their primary keys (pre-data and post-data), then
    \`CREATE SUBSCRIPTION ... PUBLICATION pgdog WITH (copy_data = true, binary = true)\` on destination
    shard 0, until every row of \`pg_subscription_rel\` for it is \`r\` (ready; polled every 150 ms);
    then \`DROP SUBSCRIPTION\` and a check that no slot is left on the source.
  - pgdog_reshard: \`SELECT reshard_copy_data('prod', 'prod_1x' | 'prod_2x', 'pgdog')\` and
    \`reshard_copy_data('prod_2src', 'prod_2x', 'pgdog')\` on the control node, timed with the control
    node's clock from the call (the task's start) to its switch to \`replicating\` (pre-flight, schema
    sync \`pre\`, slots, the copies, schema sync \`post\` with the primary keys); the copy alone is the
    table copies' first \`started_at\` to last \`finished_at\` in \`reshard_table_copies\`. Then
    \`reshard_stop()\`, waiting for \`cancelled\`, for the slots to be gone from the source(s) and the
    replication origins from the destinations. Memory: \`/proc/<pid>/status\` of the control node's
    \`pgdog_reshard\` workers (from \`pg_stat_activity\`) every 100 ms.
- $REPEAT repetition$( ((REPEAT > 1)) && echo s)$( ((WARMUP)) && echo ", after one untimed warm-up pass of every method (the first
  writes into a fresh server create its WAL segments; \`min_wal_size = 2GB\` keeps them for the next
  runs)"); in each, the seven methods in turn (the order rotates between repetitions), each run after
  dropping both tables on both destination shards and a \`CHECKPOINT\` on all six servers. Rows per
  second and MB per second are both tables' rows and size on disk over the median time. Every run's
  row counts on the destinations are checked.

## Results

$(cat "$summary")

Against the targets:

| what | figure | target | met |
|---|---|---|---|
$(cat "$targets")

## What limits these figures

All six servers (three or four busy at a time), the psql processes of the pipes, pgcopydb's
processes and pgdog_reshard's workers share the same $(nproc) CPUs, so every figure here is bounded by
CPU contention on one small machine, not by the network or the disks (loopback, fsync = $FSYNC, the
data in the page cache): the ratios mostly say how much CPU each method spends per row and how well it
overlaps its steps. What each method does differently:

- Raw pipes: two psql processes per pipe that each handle every byte; the split pipes scan each
  source table twice. The primary keys are built after the data by one \`ALTER TABLE ... ADD PRIMARY
  KEY\` per table, one table after the other on each destination.
- pgdog_reshard: one copy worker per table (two at once per source shard) that routes each row by its
  key without decoding the rest; the primary keys are made by its schema sync ($pk_note). Its time
  also holds the pre-flight, a permanent slot per source shard and a temporary slot per table copy.
- pgcopydb: copies in text format (\`COPY ... TO STDOUT\` / \`FROM STDIN\`, decoded and encoded by
  the servers), runs pg_dump and pg_restore for the schema, builds each primary key as a unique index
  (index jobs, as soon as that table's copy is done) and then attaches it with \`ADD PRIMARY KEY USING
  INDEX\`, and also runs \`VACUUM ANALYZE\` on every table within its time (pgcopydb
  ${pgcopydb_version:-0.10} has no option to skip it).
- Native subscription: its primary keys exist before the copy and are maintained row by row during
  it, not built after; its table sync workers copy in text format (PostgreSQL 15: \`binary = true\`
  only applies to the changes streamed after the copy); each table sync creates and drops a slot on
  the source; its time ends when the apply worker has marked every table ready, seen through a poll.

On separate hosts with cores to spare, parallel pipes and jobs would gain more than they can here, so
these ratios do not carry over as they are to a real cluster.$(
  ((ROWS < 1000000)) && printf '%s' " With a data set this small, fixed costs (pre-flight, slots,
schema dumps, process starts) weigh on every figure: these ratios are not those of a full-size run.")$(
  ((${load_before%%.*} >= 1)) && printf '%s' " The machine was not idle either (load average
$load_before before the runs): other work on it adds noise to every figure.")
EOF
say "results written to $RESULTS"
