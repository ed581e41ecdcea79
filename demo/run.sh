#!/usr/bin/env bash
# The demo, on a fresh Debian 12 machine (as root): installs and builds pgdog_reshard, starts a source
# database, two empty destination shards and a control node on loopback, creates sample data, loads
# a PgDog configuration into the control node and shows where every row of the source will land on
# the 2-shard cluster, checked against PostgreSQL's own hash partitioning. Stops everything it started.
#
# The online copy, replication and cutover steps join this demo as they land (see the issues).
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
    p=$((20000 + RANDOM % 30000))
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

echo "== where the source's rows will land on prod_2x, per the control node's reshard_hash_shard"
psql_at "$src" -At -c "COPY (SELECT id FROM users) TO STDOUT" >"$base/user_ids"
psql_at "$ctl" <<SQL
CREATE TEMP TABLE ids (id bigint);
\copy ids FROM '$base/user_ids'
CREATE TEMP TABLE hp (id bigint) PARTITION BY HASH (id);
SELECT reshard_hash_shard(id, 2) AS shard, count(*) AS users,
       count(*) FILTER (WHERE satisfies_hash_partition('hp'::regclass, 2, reshard_hash_shard(id, 2), id)) AS agrees_with_postgres
FROM ids GROUP BY 1 ORDER BY 1;
SQL
echo "== demo done; stopping the servers"
