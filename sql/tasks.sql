-- reshard() and reshard_wait(): what they refuse before anything is created, and how waiting ends.
\set SHOW_CONTEXT never
-- reshard_wait: bad arguments.
SELECT reshard_wait(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_wait(424242);
\echo :LAST_ERROR_SQLSTATE
-- A task that ended returns its final state at once; in REPEATABLE READ the wait is refused.
INSERT INTO pgdog_reshard.tasks (command, source, destination, publication, state, phase, created_by, pgdog_toml)
  VALUES ('reshard', 'a', 'b', 'p', 'failed', 'copy', current_user, '') RETURNING id AS failed_task \gset
SELECT reshard_wait(:failed_task);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT reshard_wait(:failed_task);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Uncommitted rows (no worker must see them), each statement under a savepoint.
\set ON_ERROR_ROLLBACK on
BEGIN;
INSERT INTO pgdog_reshard.tasks (command, source, destination, publication, state, phase, created_by, pgdog_toml)
  VALUES ('replicate', 'a', 'b', 'p', 'replicating', 'streaming', current_user, '') RETURNING id AS busy_task \gset
-- A timeout returns the state the task has then.
SELECT reshard_wait(:busy_task, '0.3 s') AS after_timeout;
-- The wait ends when the task does (here: this session ends it).
UPDATE pgdog_reshard.tasks SET state = 'cancelled' WHERE id = :busy_task;
SELECT reshard_wait(:busy_task);
UPDATE pgdog_reshard.tasks SET state = 'replicating' WHERE id = :busy_task;
-- A cluster that a task is moving, as source or destination, cannot start another task.
SELECT reshard('a', 'c', 'p');
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_copy_data('c', 'b', 'p');
\echo :LAST_ERROR_SQLSTATE
SELECT reshard_replicate('b', 'a', 'p');
\echo :LAST_ERROR_SQLSTATE
-- A task asked to stop no longer holds its clusters (here the next error is the missing configuration).
UPDATE pgdog_reshard.tasks SET stop_requested = true WHERE id = :busy_task;
SELECT reshard('a', 'c', 'p');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
\set ON_ERROR_ROLLBACK off
DELETE FROM pgdog_reshard.tasks;
-- reshard_verify: bad arguments, the isolation it needs, and an unknown cluster (found by its worker,
-- whose error comes back with its SQLSTATE, detail and hint): no task is left behind.
SELECT * FROM reshard_verify(NULL, 'b', 'p');
\echo :LAST_ERROR_SQLSTATE
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM reshard_verify('a', 'b', 'p');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT * FROM reshard_verify('a', 'b', 'p');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS verify_tasks FROM pgdog_reshard.tasks WHERE command = 'verify';
