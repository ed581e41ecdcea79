-- pgdog_reshard 0.1.0: the SQL surface. Public objects go into the extension's schema (@extschema@);
-- the catalog lives in the internal schema pgdog_reshard, readable only through the functions below.
\echo Use "CREATE EXTENSION pgdog_reshard" to load this file. \quit

-- Callers: superusers, and members of pgdog_reshard_admin (GRANT pgdog_reshard_admin TO alice).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgdog_reshard_admin') THEN
    CREATE ROLE pgdog_reshard_admin NOLOGIN;
  END IF;
END
$$;

CREATE SCHEMA pgdog_reshard;
REVOKE ALL ON SCHEMA pgdog_reshard FROM PUBLIC;

-- The loaded configuration: PgDog's own texts, re-parsed on use. Holds passwords: no grants at all.
CREATE TABLE pgdog_reshard.config (
  id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  pgdog_toml text NOT NULL,
  users_toml text,
  pgdog_path text NOT NULL,
  users_path text NOT NULL,
  origin text NOT NULL,
  loaded_at timestamptz NOT NULL DEFAULT now(),
  loaded_by name NOT NULL DEFAULT session_user
);
REVOKE ALL ON pgdog_reshard.config FROM PUBLIC;
-- Keep the configuration in pg_dump of the control node.
SELECT pg_catalog.pg_extension_config_dump('pgdog_reshard.config', '');

-- Configuration ---------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.reshard_load_config(pgdog_toml text, users_toml text DEFAULT NULL)
RETURNS void
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_load_config';
COMMENT ON FUNCTION @extschema@.reshard_load_config(text, text) IS
  'Validate PgDog''s pgdog.toml (and users.toml) and make it the configuration; refused whole if invalid';

CREATE FUNCTION @extschema@.reshard_reload_config()
RETURNS void
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_reload_config';
COMMENT ON FUNCTION @extschema@.reshard_reload_config() IS
  'Re-read the files named by pgdog_reshard.config_file and pgdog_reshard.users_file';

CREATE FUNCTION pgdog_reshard.config_databases(
  OUT name text, OUT shard integer, OUT host text, OUT port integer, OUT database_name text,
  OUT role text, OUT resharding_only boolean, OUT "user" text)
RETURNS SETOF record
LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_config_databases';

CREATE FUNCTION pgdog_reshard.config_sharded_tables(
  OUT database text, OUT schema_name text, OUT table_name text, OUT column_name text,
  OUT data_type text, OUT method text, OUT mappings text)
RETURNS SETOF record
LANGUAGE C STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_config_sharded_tables';

-- One row per host of every cluster; never a password.
CREATE VIEW @extschema@.reshard_databases AS
  SELECT name, shard, host, port, database_name, role, resharding_only, "user"
  FROM pgdog_reshard.config_databases();

-- One row per sharding rule; table_name NULL = every table with the column; method hash or mapping.
CREATE VIEW @extschema@.reshard_sharded_tables AS
  SELECT database, schema_name, table_name, column_name, data_type, method, mappings::jsonb AS mappings
  FROM pgdog_reshard.config_sharded_tables();

-- Sharding -----------------------------------------------------------------------------------------

-- PostgreSQL's hash partitioning of one key (and so PgDog's router): the shard of `value` among
-- `shards`. int2/int4 arguments resolve to the bigint version and hash like the same bigint.
CREATE FUNCTION @extschema@.reshard_hash_shard(value bigint, shards integer)
RETURNS integer
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reshard_hash_shard_bigint';

CREATE FUNCTION @extschema@.reshard_hash_shard(value text, shards integer)
RETURNS integer
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reshard_hash_shard_text';

CREATE FUNCTION @extschema@.reshard_hash_shard(value uuid, shards integer)
RETURNS integer
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'reshard_hash_shard_uuid';

-- Privileges -----------------------------------------------------------------------------------------

REVOKE ALL ON FUNCTION @extschema@.reshard_load_config(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_reload_config() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgdog_reshard.config_databases() FROM PUBLIC;
REVOKE ALL ON FUNCTION pgdog_reshard.config_sharded_tables() FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_hash_shard(bigint, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_hash_shard(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_hash_shard(uuid, integer) FROM PUBLIC;
REVOKE ALL ON @extschema@.reshard_databases FROM PUBLIC;
REVOKE ALL ON @extschema@.reshard_sharded_tables FROM PUBLIC;

GRANT EXECUTE ON FUNCTION @extschema@.reshard_load_config(text, text) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_reload_config() TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION pgdog_reshard.config_databases() TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION pgdog_reshard.config_sharded_tables() TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_hash_shard(bigint, integer) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_hash_shard(text, integer) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_hash_shard(uuid, integer) TO pgdog_reshard_admin;
GRANT SELECT ON @extschema@.reshard_databases TO pgdog_reshard_admin;
GRANT SELECT ON @extschema@.reshard_sharded_tables TO pgdog_reshard_admin;
