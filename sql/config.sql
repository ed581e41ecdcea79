-- PgDog's configuration: loading, the views, and refusal of bad input (whole, never half-loaded).
\set SHOW_CONTEXT never
-- Nothing loaded yet: empty views.
SELECT count(*) FROM reshard_databases;
SELECT count(*) FROM reshard_sharded_tables;
-- reshard_reload_config needs pgdog_reshard.config_file.
SELECT reshard_reload_config();
\echo :LAST_ERROR_SQLSTATE

-- A PgDog config as users have it: other sections and keys are ignored.
SELECT reshard_load_config($toml$
[general]
host = "0.0.0.0"
port = 6432
default_pool_size = 10

[[databases]]
name = "prod"
host = "10.0.0.1"
database_name = "app"

[[databases]]
name = "prod"
host = "10.0.0.9"
database_name = "app"
role = "replica"
resharding_only = true

[[databases]]
name = "prod_2x"
host = "10.0.1.1"
port = 5433
database_name = "app"
shard = 0

[[databases]]
name = "prod_2x"
host = "10.0.1.2"
database_name = "app"
shard = 1
pool_size = 20

[[sharded_tables]]
database = "prod_2x"
column = "user_id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_2x"
name = "users"
column = "id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_2x"
name = "tenants"
column = "tenant_id"
data_type = "bigint"

[[sharded_tables.mapping]]
values = [1, 2, 3]
shard = 0

[[sharded_tables.mapping]]
start = 100
end = 200
shard = 1

[[sharded_tables.mapping]]
shard = 0

[admin]
name = "admin"
user = "admin"
password = "admin-secret-pw"
$toml$, $toml$
[[users]]
name = "app"
database = "prod"
password = "prod-secret-pw"

[[users]]
name = "pgdog_admin"
database = "prod"
password = "prod-admin-secret-pw"
schema_admin = true

[[users]]
name = "app"
database = "prod_2x"
password = "new-secret-pw"
$toml$);
SELECT * FROM reshard_databases ORDER BY name, shard, host;
SELECT * FROM reshard_sharded_tables ORDER BY database, table_name NULLS FIRST;
-- No password in any view.
SELECT count(*) AS leaks FROM reshard_databases d WHERE d::text LIKE '%secret%';
SELECT count(*) AS leaks FROM reshard_sharded_tables t WHERE t::text LIKE '%secret%';

-- A TOML syntax error names the file, line and column.
SELECT reshard_load_config($toml$
[[databases]]
name = "prod"
host = "10.0.0.1
$toml$, NULL);
\echo :LAST_ERROR_SQLSTATE
-- Semantic errors name the database or the table.
SELECT reshard_load_config($toml$
[[databases]]
name = "prod"
host = "a"
[[databases]]
name = "prod_3x"
host = "b"
shard = 0
[[databases]]
name = "prod_3x"
host = "c"
shard = 2
$toml$, $u$
[[users]]
name = "u"
database = "prod"
[[users]]
name = "u"
database = "prod_3x"
$u$);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_load_config($toml$
[[databases]]
name = "prod"
host = "a"
[[databases]]
name = "prod"
host = "b"
role = "primary"
$toml$, $u$
[[users]]
name = "u"
database = "prod"
$u$);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_load_config($toml$
[[databases]]
name = "prod"
host = "a"
[[sharded_tables]]
database = "prod"
name = "orders"
column = "customer_id"
data_type = "integer"
$toml$, $u$
[[users]]
name = "u"
database = "prod"
$u$);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_load_config($toml$
[[databases]]
name = "prod"
host = "a"
[[databases]]
name = "prod"
host = "b"
shard = 1
[[sharded_tables]]
database = "prod"
name = "tenants"
column = "tenant_id"
data_type = "bigint"
[[sharded_tables.mapping]]
start = 1
end = 100
shard = 0
[[sharded_tables.mapping]]
start = 50
end = 150
shard = 1
$toml$, $u$
[[users]]
name = "u"
database = "prod"
$u$);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_load_config($toml$
[[databases]]
name = "prod"
host = "a"
[[databases]]
name = "orphan"
host = "b"
$toml$, $u$
[[users]]
name = "u"
database = "prod"
$u$);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_load_config(NULL);
\echo :LAST_ERROR_SQLSTATE
-- Every refusal left the previous configuration in place, whole.
SELECT name, count(*) AS hosts FROM reshard_databases GROUP BY name ORDER BY name;
SELECT count(*) AS rules FROM reshard_sharded_tables;

-- reshard_reload_config reads the files named by the settings (written here with lo_export).
SELECT lo_from_bytea(0, convert_to($toml$
[[databases]]
name = "src"
host = "127.0.0.1"
port = 6000
[[databases]]
name = "dst"
host = "127.0.0.1"
port = 6001
user = "direct_user"
password = "direct-secret-pw"
$toml$, 'UTF8')) AS pgdog_oid \gset
SELECT lo_export(:pgdog_oid, 'regress_pgdog.toml') AS written;
SELECT lo_from_bytea(0, convert_to($u$
[[users]]
name = "from_users_file"
database = "src"
password = "file-secret-pw"
$u$, 'UTF8')) AS users_oid \gset
SELECT lo_export(:users_oid, 'regress_users.toml') AS written;
SET pgdog_reshard.config_file = 'regress_pgdog.toml';
SET pgdog_reshard.users_file = 'regress_users.toml';
SELECT reshard_reload_config();
SELECT name, shard, host, port, database_name, "user" FROM reshard_databases ORDER BY name;
SELECT count(*) AS leaks FROM reshard_databases d WHERE d::text LIKE '%secret%';
-- A missing file is a clear error and changes nothing.
SET pgdog_reshard.users_file = 'no_such_users.toml';
SELECT reshard_reload_config();
\echo :LAST_ERROR_SQLSTATE
SELECT name, "user" FROM reshard_databases ORDER BY name;
RESET pgdog_reshard.config_file;
RESET pgdog_reshard.users_file;
SELECT lo_unlink(oid) FROM pg_largeobject_metadata;
