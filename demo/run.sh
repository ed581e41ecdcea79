#!/usr/bin/env bash
# The demo, on a fresh Debian 12 machine (as root): installs and builds pgdog_reshard, starts a source
# database, two empty destination shards, a control node and PgBouncer on loopback, creates sample
# data, loads a PgDog configuration into the control node, and runs reshard('prod', 'prod_2x',
# 'pgdog') while two clients write through PgBouncer (each to the database of its shard, as PgDog's
# router would). A progress bar follows reshard_status until the task has cut over by itself:
# PgBouncer paused, the streams drained, the clusters swapped, PgBouncer reloaded onto the new shards,
# reverse replication started, traffic resumed. Then every row's placement is checked with
# PostgreSQL's own hash partitioning, every acknowledged write is looked for, the two clusters are
# compared row for row, and a summary is printed. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh >/dev/null

bindir=$(pg_config --bindir)
base=$(mktemp -d /tmp/pgdog_reshard_demo.XXXXXX)
chown postgres "$base"
ports=()

as_pg() { runuser -u postgres -- "$@"; }
stop_all() {
  touch "$base/stop_writers" 2>/dev/null || true
  [ -f "$base/pgbouncer.pid" ] && kill "$(cat "$base/pgbouncer.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  for dir in "$base"/*/; do
    [ -f "$dir/postmaster.pid" ] && as_pg "$bindir/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
  done
  rm -rf "$base"
}
trap stop_all EXIT

free_port() {  # a random port nothing listens on
  local p
  while :; do
    p=$((10000 + RANDOM % 20000))  # below the ephemeral range (32768+), where clients bind
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

start_instance() {  # name [preload]
  local dir="$base/$1" port
  port=$(free_port)
  as_pg "$bindir/initdb" -D "$dir" -U postgres -A trust --no-sync -E UTF8 >/dev/null
  {
    echo "listen_addresses = '127.0.0.1'"; echo "port = $port"; echo "unix_socket_directories = '$base'"
    echo "wal_level = logical"; echo "fsync = off"
    [ "${2:-}" = preload ] && echo "shared_preload_libraries = 'pgdog_reshard'"
  } >>"$dir/postgresql.conf"
  as_pg "$bindir/pg_ctl" -D "$dir" -l "$base/$1.log" -w start >/dev/null
  ports+=("$port")
  echo "$port"
}

psql_at() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -p "$1" -d postgres "${@:2}"; }

echo "== starting a source, two destination shards and a control node"
src=$(start_instance source); dst0=$(start_instance shard0); dst1=$(start_instance shard1)
ctl=$(start_instance control preload)
echo "source :$src   prod_2x shard 0 :$dst0   shard 1 :$dst1   control node :$ctl"

echo "== sample data on the source"
psql_at "$src" <<'SQL'
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);
CREATE SEQUENCE order_numbers;
CREATE TABLE orders (id bigint PRIMARY KEY DEFAULT nextval('order_numbers'), user_id bigint NOT NULL,
                     total numeric NOT NULL, note text);
INSERT INTO users SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 10000) g;
INSERT INTO orders (user_id, total) SELECT 1 + g % 10000, (g % 500) / 10.0 FROM generate_series(1, 200000) g;
CREATE PUBLICATION pgdog FOR ALL TABLES;
SQL

echo "== PgBouncer on loopback (transaction pooling): databases shard_0 and shard_1, both on the source for now"
bouncer=$(free_port)
ini="$base/pgbouncer.ini"
write_ini() {  # file shard0-port shard1-port
  cat >"$1" <<INI
[databases]
shard_0 = host=127.0.0.1 port=$2 dbname=postgres
shard_1 = host=127.0.0.1 port=$3 dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer
unix_socket_dir = $base
auth_type = trust
auth_file = $base/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 4
min_pool_size = 4
ignore_startup_parameters = extra_float_digits,options
logfile = $base/pgbouncer.log
pidfile = $base/pgbouncer.pid
INI
  chown postgres "$1"
}
echo '"postgres" ""' >"$base/userlist.txt"; chown postgres "$base/userlist.txt"
write_ini "$ini" "$src" "$src"
write_ini "$ini.new" "$dst0" "$dst1"   # what the cutover swaps in (and a rollback swaps back)
as_pg pgbouncer -d "$ini"
for _ in $(seq 1 50); do psql_at "$bouncer" -d pgbouncer -c "SHOW VERSION" >/dev/null 2>&1 && break; sleep 0.1; done
echo "pgbouncer :$bouncer"

echo "== PgDog's configuration, loaded into the control node"
psql_at "$ctl" -c "CREATE EXTENSION pgdog_reshard" >/dev/null
# How the cutover reaches the proxy: PAUSE, RELOAD and RESUME on its admin database, and at the
# switch point a command that puts the new cluster's ini in place.
psql_at "$ctl" <<SQL >/dev/null
ALTER SYSTEM SET pgdog_reshard.proxy_admin = 'host=127.0.0.1 port=$bouncer dbname=pgbouncer user=postgres';
ALTER SYSTEM SET pgdog_reshard.cutover_command = 'mv $ini $ini.tmp && mv $ini.new $ini && mv $ini.tmp $ini.new';
SELECT pg_reload_conf();
SQL
psql_at "$ctl" <<SQL
SELECT reshard_load_config(\$toml\$
[[databases]]
name = "prod"
host = "127.0.0.1"
port = $src
database_name = "postgres"

[[databases]]
name = "prod_2x"
host = "127.0.0.1"
port = $dst0
database_name = "postgres"
shard = 0

[[databases]]
name = "prod_2x"
host = "127.0.0.1"
port = $dst1
database_name = "postgres"
shard = 1

[[sharded_tables]]
database = "prod_2x"
column = "user_id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_2x"
name = "users"
column = "id"
data_type = "bigint"
\$toml\$, \$users\$
[[users]]
name = "postgres"
database = "prod"
password = "demo-password"
schema_admin = true

[[users]]
name = "postgres"
database = "prod_2x"
password = "demo-password"
\$users\$);
\echo reshard_databases (no password shown):
SELECT * FROM reshard_databases ORDER BY name, shard;
\echo reshard_sharded_tables:
SELECT database, table_name, column_name, data_type, method FROM reshard_sharded_tables;
SQL

echo "== two clients write through PgBouncer, each to the database of its shard"
# Each sends INSERT ... RETURNING id and an UPDATE of that row, one statement per transaction,
# through one psql session; the ids psql printed are the acknowledged writes. psql stops at the
# first error (ON_ERROR_STOP): its exit status says whether any client saw one.
writer() {  # shard
  local shard=$1 i=0 uid
  local -a uids
  read -ra uids < <(psql_at "$ctl" -At -c \
    "SELECT string_agg(u::text, ' ') FROM generate_series(1, 10000) u WHERE reshard_hash_shard(u::bigint, 2) = $shard")
  while [ ! -f "$base/stop_writers" ]; do
    i=$((i + 1)); uid=${uids[$((RANDOM % ${#uids[@]}))]}
    echo "INSERT INTO orders (id, user_id, total, note) VALUES ($((10000000 * (shard + 1) + i)), $uid, $((RANDOM % 100)), 'live') RETURNING id;"
    echo "UPDATE orders SET total = total + 1, note = 'live, updated' WHERE id = $((10000000 * (shard + 1) + i));"
    sleep 0.01
  done | psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$bouncer" -U postgres -d "shard_$shard" >"$base/acked_$shard" 2>"$base/writer_$shard.err"
}
writer 0 & w0=$!
writer 1 & w1=$!
sleep 1

echo "== SELECT reshard('prod', 'prod_2x', 'pgdog'): pre-flight, schema, binary COPY routed by key, streaming, cutover"
task=$(psql_at "$ctl" -At -c "SELECT reshard('prod', 'prod_2x', 'pgdog')")
started=$SECONDS
while :; do
  IFS='|' read -r state phase progress filled rows rate lag cutover error < <(psql_at "$ctl" -At -c \
    "SELECT s.state, s.phase, coalesce(s.progress, 0), floor(coalesce(s.progress, 0) / 5)::int, s.rows_copied,
            coalesce(pg_size_pretty(s.bytes_per_sec) || '/s', '-'), coalesce(pg_size_pretty(s.lag_bytes), '-'),
            coalesce((SELECT c.state FROM reshard_cutover c WHERE c.task_id = s.id ORDER BY c.id DESC LIMIT 1), '-'),
            coalesce(s.error, '')
     FROM reshard_status s WHERE s.id = $task")
  bar=$(printf '%*s' "$filled" '' | tr ' ' '#'); gap=$(printf '%*s' $((20 - filled)) '')
  printf '\r  task %s [%s%s] %5s%%  %-11s %-10s rows %-7s %-10s lag %-8s cutover %-16s' \
    "$task" "$bar" "$gap" "$progress" "$state" "$phase" "$rows" "$rate" "$lag" "$cutover"
  case "$state" in
    done) echo; break ;;
    failed|cancelled) echo; echo "task $state: $error" >&2; exit 1 ;;
  esac
  sleep 0.3
done
elapsed=$((SECONDS - started))
psql_at "$ctl" -c "SELECT \"table\", source_shard, rows, pg_size_pretty(bytes) AS bytes, pg_size_pretty(bytes_per_sec) || '/s' AS rate, elapsed FROM reshard_table_copies WHERE task_id = $task ORDER BY 1, 2"
psql_at "$ctl" -c "SELECT id, state, round(pause_ms::numeric, 1) AS pause_ms, reverse_task_id, acks, error FROM reshard_cutover WHERE task_id = $task"
reverse=$(psql_at "$ctl" -At -c "SELECT reverse_task_id FROM reshard_cutover WHERE task_id = $task AND state = 'done'")
echo "PgBouncer's shard_1 now reaches port $(psql_at "$bouncer" -d shard_1 -At -c "SELECT current_setting('port')") (prod_2x shard 1 is :$dst1)"

echo "== the clients keep writing to the new cluster; reverse replication (task $reverse) brings it to the old one"
sleep 2
touch "$base/stop_writers"
wait "$w0" || { echo "client 0 got an error: $(cat "$base/writer_0.err")" >&2; exit 1; }
wait "$w1" || { echo "client 1 got an error: $(cat "$base/writer_1.err")" >&2; exit 1; }
acked=$(cat "$base/acked_0" "$base/acked_1" | wc -l)
target0=$(psql_at "$dst0" -At -c "SELECT pg_current_wal_lsn()"); target1=$(psql_at "$dst1" -At -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 300); do
  behind=$(psql_at "$ctl" -At -c "SELECT count(*) FROM reshard_replication_slots WHERE task_id = $reverse
    AND coalesce(confirmed_lsn, lsn) < CASE source_shard WHEN 0 THEN '$target0'::pg_lsn ELSE '$target1'::pg_lsn END")
  [ "$behind" = 0 ] && break
  sleep 0.2
done

echo "== checked independently: placement by PostgreSQL's satisfies_hash_partition, content row for row"
misplaced=0
for shard in 0 1; do
  port=$([ "$shard" = 0 ] && echo "$dst0" || echo "$dst1")
  psql_at "$port" -At -c "CREATE TABLE oracle (k bigint) PARTITION BY HASH (k)" >/dev/null
  line=$(psql_at "$port" -At -F ' ' -c "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM orders),
    (SELECT count(*) FROM users WHERE NOT satisfies_hash_partition('oracle'::regclass, 2, $shard, id))
     + (SELECT count(*) FROM orders WHERE NOT satisfies_hash_partition('oracle'::regclass, 2, $shard, user_id))")
  read -r users orders bad <<<"$line"
  echo "prod_2x shard $shard: $users users, $orders orders, misplaced: $bad"
  misplaced=$((misplaced + bad))
  psql_at "$port" -c "DROP TABLE oracle" >/dev/null
done
[ "$misplaced" = 0 ] || { echo "MISPLACED ROWS" >&2; exit 1; }
missing=0
for shard in 0 1; do
  port=$([ "$shard" = 0 ] && echo "$dst0" || echo "$dst1")
  [ -s "$base/acked_$shard" ] || continue
  found=$(psql_at "$port" -At -c "SELECT count(*) FROM orders WHERE id IN ($(paste -sd, "$base/acked_$shard"))")
  missing=$((missing + $(wc -l <"$base/acked_$shard") - found))
done
[ "$missing" = 0 ] || { echo "$missing ACKNOWLEDGED WRITES MISSING" >&2; exit 1; }
echo "every one of the $acked acknowledged writes is on its shard"
digest() { psql_at "$1" -At -c "SELECT md5(x::text) FROM $2 x"; }
for table in users orders; do
  if diff <(digest "$src" "$table" | sort) <(cat <(digest "$dst0" "$table") <(digest "$dst1" "$table") | sort) >/dev/null; then
    echo "$table: the old cluster and the new one hold the same rows, each row once"
  else
    echo "$table: CONTENT DIFFERS" >&2; exit 1
  fi
done

pause_ms=$(psql_at "$ctl" -At -c "SELECT round(pause_ms::numeric, 1) FROM reshard_cutover WHERE task_id = $task AND state = 'done'")
rows=$(psql_at "$ctl" -At -c "SELECT rows_copied FROM reshard_status WHERE id = $task")
echo "== reshard_stop($reverse): reverse replication ends (a rollback would be reshard_cutover($reverse))"
psql_at "$ctl" -At -c "SELECT reshard_stop($reverse)" >/dev/null
psql_at "$ctl" -At -c "SELECT reshard_wait($reverse, '60 s')" >/dev/null
slots=0
for port in "$src" "$dst0" "$dst1"; do slots=$((slots + $(psql_at "$port" -At -c "SELECT count(*) FROM pg_replication_slots"))); done
psql_at "$ctl" -c "SELECT id, command, source, destination, state, phase, error FROM reshard_status ORDER BY id"

cat <<SUMMARY
== summary
  reshard('prod', 'prod_2x', 'pgdog'), task $task: done in ${elapsed%.*} s; $rows rows copied
  writes paused for $pause_ms ms at the cutover; $acked writes acknowledged through PgBouncer, 0 errors
  misplaced rows: 0; acknowledged writes missing: 0; old and new cluster identical
  replication slots left on any server: $slots
SUMMARY
[ "$slots" = 0 ] || exit 1
echo "== demo done; stopping the servers"
