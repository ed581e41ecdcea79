-- Only superusers and members of pgdog_reshard_admin may call the functions or read the views;
-- nobody but superusers reads the stored configuration (it holds passwords).
\set SHOW_CONTEXT never
CREATE ROLE regress_nobody LOGIN;
CREATE ROLE regress_operator LOGIN;
GRANT pgdog_reshard_admin TO regress_operator;
SET ROLE regress_nobody;
SELECT reshard_load_config('', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_reload_config();
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM reshard_databases;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM reshard_sharded_tables;
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_hash_shard(1::bigint, 2);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_cutover(1);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_cutover_ack(1, 'paused');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM reshard_cutover;
\echo :LAST_ERROR_SQLSTATE
SELECT reshard('a', 'b', 'p');
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_wait(1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM reshard_status;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM reshard_verify('a', 'b', 'p');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM reshard_verify_results;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgdog_reshard.config;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- Whatever the list above misses: no function of the extension is executable without the role.
SELECT p.oid::regprocedure AS callable_by_anyone
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pgdog_reshard'
WHERE has_function_privilege('regress_nobody', p.oid, 'EXECUTE');
SET ROLE regress_operator;
SELECT reshard_load_config($toml$
[[databases]]
name = "ops"
host = "127.0.0.1"
user = "ops_user"
password = "ops-secret-pw"
$toml$);
SELECT name, host, "user" FROM reshard_databases;
SELECT reshard_hash_shard(42::bigint, 4);
-- The granted role still cannot read the raw configuration.
SELECT * FROM pgdog_reshard.config;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT origin, loaded_by FROM pgdog_reshard.config;
DROP OWNED BY regress_nobody, regress_operator;
DROP ROLE regress_nobody, regress_operator;
