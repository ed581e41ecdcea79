#!/usr/bin/env bash
# The demo, on a fresh Debian 12 machine (as root): installs and builds pgdog_reshard, starts a source
# database, two empty destination shards and a control node on loopback, creates sample data, loads
# a PgDog configuration into the control node, copies the source into the 2-shard cluster with
# reshard_copy_data (progress from reshard_status), writes to the source while the task streams the
# changes, waits for zero lag, checks every row's placement with PostgreSQL's own hash partitioning
# and its content against the source, then stops the task. Stops everything it started.
#
# The cutover joins this demo when it lands (see the issues).
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
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, total numeric NOT NULL);
INSERT INTO users SELECT g, 'user' || g || '@example.com' FROM generate_series(1, 10000) g;
INSERT INTO orders SELECT g, 1 + g % 10000, (g % 500) / 10.0 FROM generate_series(1, 50000) g;
CREATE PUBLICATION pgdog FOR ALL TABLES;
SQL

echo "== PgDog's configuration, loaded into the control node"
psql_at "$ctl" -c "CREATE EXTENSION pgdog_reshard" >/dev/null
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

echo "== reshard_copy_data('prod', 'prod_2x', 'pgdog'): schema, slot, parallel binary COPY, routed by key"
task=$(psql_at "$ctl" -At -c "SELECT reshard_copy_data('prod', 'prod_2x', 'pgdog')")
while :; do
  IFS='|' read -r state phase progress filled rows error < <(psql_at "$ctl" -At -c \
    "SELECT state, phase, coalesce(progress, 0), floor(coalesce(progress, 0) / 5)::int, rows_copied, coalesce(error, '')
     FROM reshard_status WHERE id = $task")
  bar=$(printf '%*s' "$filled" '' | tr ' ' '#'); gap=$(printf '%*s' $((20 - filled)) '')
  printf '\r  task %s [%s%s] %5s%%  %-12s %-12s rows %s ' "$task" "$bar" "$gap" "$progress" "$state" "$phase" "$rows"
  case "$state" in replicating|done) echo; break ;; failed|cancelled) echo; echo "task $state: $error" >&2; exit 1 ;; esac
  sleep 0.5
done
psql_at "$ctl" -c "SELECT \"table\", source_shard, state, rows, bytes, bytes_per_sec, elapsed FROM reshard_table_copies WHERE task_id = $task"

echo "== writes on the source while the task replicates: they stream to the right shards"
psql_at "$src" <<'SQL'
INSERT INTO users SELECT g, 'late' || g || '@example.com' FROM generate_series(10001, 10500) g;
UPDATE orders SET total = total + 1 WHERE id % 10 = 0;
UPDATE orders SET user_id = 1 + user_id % 10000 WHERE id % 97 = 0;   -- sharding-key changes: rows move
DELETE FROM orders WHERE id % 13 = 0;
SQL
target=$(psql_at "$src" -At -c "SELECT pg_current_wal_lsn()")
for _ in $(seq 1 200); do
  behind=$(psql_at "$ctl" -At -c "SELECT count(*) FROM reshard_replication_slots WHERE task_id = $task AND coalesce(confirmed_lsn, lsn) < '$target'")
  [ "$behind" = 0 ] && break
  sleep 0.2
done
psql_at "$ctl" -c "SELECT slot, confirmed_lsn, lag_bytes, last_commit_at FROM reshard_replication_slots WHERE task_id = $task"

echo "== checked independently: placement by PostgreSQL's satisfies_hash_partition, content against the source"
for port in "$dst0" "$dst1"; do
  shard=$([ "$port" = "$dst0" ] && echo 0 || echo 1)
  psql_at "$port" -At -c "CREATE TABLE oracle (k bigint) PARTITION BY HASH (k)" >/dev/null
  psql_at "$port" -At -c "SELECT 'shard $shard: ' || (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM orders) || ' orders, misplaced: '
    || (SELECT count(*) FROM users WHERE NOT satisfies_hash_partition('oracle'::regclass, 2, $shard, id))
     + (SELECT count(*) FROM orders WHERE NOT satisfies_hash_partition('oracle'::regclass, 2, $shard, user_id))"
done
digest() { psql_at "$1" -At -c "SELECT md5(x::text) FROM $2 x"; }
for table in users orders; do
  if diff <(digest "$src" "$table" | sort) <(cat <(digest "$dst0" "$table") <(digest "$dst1" "$table") | sort) >/dev/null; then
    echo "$table: every source row is on exactly one shard, identical"
  else
    echo "$table: CONTENT DIFFERS" >&2; exit 1
  fi
done

echo "== reshard_stop($task): the task ends, its replication slot is dropped"
psql_at "$ctl" -At -c "SELECT reshard_stop($task)" >/dev/null
for _ in $(seq 1 100); do
  [ "$(psql_at "$ctl" -At -c "SELECT state FROM reshard_status WHERE id = $task")" = cancelled ] && break
  sleep 0.2
done
psql_at "$ctl" -c "SELECT id, state, error FROM reshard_status"
echo "slots left on the source: $(psql_at "$src" -At -c 'SELECT count(*) FROM pg_replication_slots')"
echo "== demo done; stopping the servers"
