-- reshard_cutover and reshard_cutover_ack refuse what cannot be cut over, before anything changes;
-- the cutover settings are superuser-only where they hold secrets or run commands.
\set SHOW_CONTEXT never
-- No task at all, and a task that does not exist.
SELECT reshard_cutover();
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_cutover(424242);
\echo :LAST_ERROR_SQLSTATE
-- A task that is not replicating (a schema sync that failed at once: nothing to connect to).
INSERT INTO pgdog_reshard.tasks (command, source, destination, publication, state, phase, created_by, pgdog_toml)
  VALUES ('schema_sync', 'a', 'b', 'p', 'failed', 'schema_pre', current_user, '') RETURNING id AS failed_task \gset
SELECT reshard_cutover(:failed_task);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS cutovers FROM reshard_cutover;
-- Acknowledgements: a known state only, and only while a cutover is in progress.
SELECT reshard_cutover_ack(:failed_task, 'ready');
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_cutover_ack(:failed_task, 'paused');
\echo :LAST_ERROR_SQLSTATE
-- Two replicating tasks: the task must be named. The rows stay uncommitted (no worker must see
-- them): each statement runs under a savepoint, so an error does not end the transaction.
\set ON_ERROR_ROLLBACK on
BEGIN;
INSERT INTO pgdog_reshard.tasks (command, source, destination, publication, state, phase, created_by, pgdog_toml)
  SELECT 'replicate', 'a', 'b', 'p', 'replicating', 'streaming', current_user, '' FROM generate_series(1, 2);
SELECT reshard_cutover();
\echo :LAST_ERROR_SQLSTATE
-- A second request for a task whose cutover is in progress is refused.
SELECT min(id) AS replicating_task FROM pgdog_reshard.tasks WHERE state = 'replicating' \gset
SELECT reshard_cutover(:replicating_task) > 0 AS requested;
SELECT reshard_cutover(:replicating_task);
\echo :LAST_ERROR_SQLSTATE
SELECT state, requested_by = current_user AS by_me, pause_ms FROM reshard_cutover;
SELECT reshard_cutover_ack(:replicating_task, 'paused');
SELECT acks ? 'paused' AS acked FROM reshard_cutover;
ROLLBACK;
\set ON_ERROR_ROLLBACK off
DELETE FROM pgdog_reshard.tasks;
-- Settings: the proxy conninfos (passwords) and the hook are superuser-only.
CREATE ROLE regress_plain LOGIN;
SET ROLE regress_plain;
SHOW pgdog_reshard.proxy_admin;
\echo :LAST_ERROR_SQLSTATE
SHOW pgdog_reshard.cutover_command;
\echo :LAST_ERROR_SQLSTATE
SHOW pgdog_reshard.cutover_timeout;
RESET ROLE;
DROP ROLE regress_plain;
SET pgdog_reshard.cutover_command = 'true';
\echo :LAST_ERROR_SQLSTATE
