-- The extension installs (the temp instance preloads it) and its launcher worker is running.
CREATE EXTENSION pgdog_reshard;
SELECT extname, extversion FROM pg_extension WHERE extname = 'pgdog_reshard';
SHOW pgdog_reshard.database_name;
-- The prefix is reserved: a typo in a pgdog_reshard.* name is an error, not a silent placeholder.
SET pgdog_reshard.no_such_setting = 1;
\echo :LAST_ERROR_SQLSTATE
-- Only superusers may point the extension at files.
CREATE ROLE regress_plain LOGIN;
SET ROLE regress_plain;
SET pgdog_reshard.config_file = '/etc/passwd';
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_plain;
-- The launcher starts with the server.
DO $$
BEGIN
  FOR i IN 1..100 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pgdog_reshard launcher');
    PERFORM pg_sleep(0.1);
  END LOOP;
END
$$;
SELECT backend_type, datname FROM pg_stat_activity WHERE backend_type = 'pgdog_reshard launcher';
