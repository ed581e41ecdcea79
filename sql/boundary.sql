-- The C++ / PostgreSQL error boundary: an ERROR raised by the server inside C++ code (here by a
-- trigger on the catalog table, under the SPI call of reshard_load_config) crosses into C++ as an
-- exception and comes back out as the same error: SQLSTATE, message, detail and hint intact.
\set SHOW_CONTEXT never
CREATE FUNCTION regress_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'refused by regress trigger' USING ERRCODE = 'P0042',
    DETAIL = 'the detail survives', HINT = 'the hint survives';
END
$$;
CREATE TRIGGER regress_refuse BEFORE INSERT OR UPDATE ON pgdog_reshard.config
  FOR EACH ROW EXECUTE FUNCTION regress_refuse();
SELECT reshard_load_config($toml$
[[databases]]
name = "boundary"
host = "127.0.0.1"
user = "u"
$toml$);
\echo :LAST_ERROR_SQLSTATE
-- The session is healthy afterwards, and the refused configuration was not stored.
SELECT count(*) AS boundary_rows FROM reshard_databases WHERE name = 'boundary';
DROP TRIGGER regress_refuse ON pgdog_reshard.config;
DROP FUNCTION regress_refuse();
SELECT reshard_load_config($toml$
[[databases]]
name = "boundary"
host = "127.0.0.1"
user = "u"
$toml$);
SELECT name, "user" FROM reshard_databases;
