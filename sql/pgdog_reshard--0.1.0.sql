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

-- Tasks: every command the extension runs in the background, durable across restarts.
CREATE TABLE pgdog_reshard.tasks (
  id bigserial PRIMARY KEY,
  command text NOT NULL CHECK (command IN ('schema_sync', 'copy_data', 'replicate', 'reshard', 'verify')),
  source text NOT NULL,
  destination text NOT NULL,
  publication text NOT NULL,
  options jsonb NOT NULL DEFAULT '{}',   -- schema phase, slot name, ...
  state text NOT NULL DEFAULT 'pending'
    CHECK (state IN ('pending', 'running', 'replicating', 'done', 'failed', 'cancelled')),
  phase text,
  error text,
  stop_requested boolean NOT NULL DEFAULT false,
  worker_pid integer,
  created_by name NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  -- The configuration the task was started with (holds passwords: never exposed by a view).
  pgdog_toml text NOT NULL,
  users_toml text
);
REVOKE ALL ON pgdog_reshard.tasks FROM PUBLIC;

-- One row per table and source shard to copy ('skipped': streamed only, by reshard_replicate).
CREATE TABLE pgdog_reshard.table_copies (
  task_id bigint NOT NULL REFERENCES pgdog_reshard.tasks (id) ON DELETE CASCADE,
  source_shard integer NOT NULL,
  schema_name text NOT NULL,
  table_name text NOT NULL,
  ordinal integer NOT NULL,              -- the table's position in the plan
  columns jsonb NOT NULL,                -- copied columns, in order (generated ones left out)
  key_column text,                       -- NULL: omnisharded
  key_type text,
  identity_columns jsonb NOT NULL,
  replica_identity_full boolean NOT NULL DEFAULT false,
  state text NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'running', 'done', 'failed', 'skipped')),
  attempts integer NOT NULL DEFAULT 0,
  rows bigint NOT NULL DEFAULT 0,
  bytes bigint NOT NULL DEFAULT 0,
  estimated_bytes bigint NOT NULL DEFAULT 0,
  watermark pg_lsn,                      -- changes at or below it are in the copy already (NULL: none are)
  source_host text,                      -- the server the copy reads (read) from: the primary or a replica
  source_port integer,
  worker_pid integer,
  started_at timestamptz,
  updated_at timestamptz,
  finished_at timestamptz,
  error text,
  PRIMARY KEY (task_id, source_shard, schema_name, table_name)
);
REVOKE ALL ON pgdog_reshard.table_copies FROM PUBLIC;

-- One row per schema statement and destination shard.
CREATE TABLE pgdog_reshard.schema_statements (
  task_id bigint NOT NULL REFERENCES pgdog_reshard.tasks (id) ON DELETE CASCADE,
  phase text NOT NULL,
  shard integer NOT NULL,
  seq integer NOT NULL,
  kind text NOT NULL,
  schema_name text,
  object_name text,
  statement text NOT NULL,
  state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'exists', 'failed', 'cancelled')),
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  error text,
  PRIMARY KEY (task_id, phase, shard, seq)
);
REVOKE ALL ON pgdog_reshard.schema_statements FROM PUBLIC;

-- Every replication slot a task created, so that none is ever leaked.
CREATE TABLE pgdog_reshard.replication_slots (
  task_id bigint NOT NULL REFERENCES pgdog_reshard.tasks (id) ON DELETE CASCADE,
  source_shard integer NOT NULL,
  host text NOT NULL,
  port integer NOT NULL,
  database_name text NOT NULL,
  slot_name text NOT NULL,
  lsn pg_lsn NOT NULL,                   -- where the slot starts
  confirmed_lsn pg_lsn,                  -- what the destinations have committed
  source_lsn pg_lsn,                     -- the source's WAL end as last seen by the stream
  temporary boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  dropped_at timestamptz,
  last_commit_at timestamptz,
  PRIMARY KEY (task_id, source_shard, slot_name)
);
REVOKE ALL ON pgdog_reshard.replication_slots FROM PUBLIC;

-- The replicas a task's copies may read from (pgdog.toml's resharding_only or replica entries),
-- as pre-flight found them: 'usable', 'left out' (with the problem), or 'lost' during the copy.
CREATE TABLE pgdog_reshard.copy_replicas (
  task_id bigint NOT NULL REFERENCES pgdog_reshard.tasks (id) ON DELETE CASCADE,
  source_shard integer NOT NULL,
  replica integer NOT NULL,              -- its position among the shard's copy replicas in the config
  host text NOT NULL,
  port integer NOT NULL,
  database_name text NOT NULL,
  state text NOT NULL CHECK (state IN ('usable', 'left out', 'lost')),
  problem text,
  checked_at timestamptz NOT NULL DEFAULT now(),
  lost_at timestamptz,
  PRIMARY KEY (task_id, source_shard, replica)
);
REVOKE ALL ON pgdog_reshard.copy_replicas FROM PUBLIC;

-- Every publication a task created (the reverse replication's, on the new cluster's shards).
CREATE TABLE pgdog_reshard.publications (
  task_id bigint NOT NULL REFERENCES pgdog_reshard.tasks (id) ON DELETE CASCADE,
  source_shard integer NOT NULL,
  host text NOT NULL,
  port integer NOT NULL,
  database_name text NOT NULL,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  dropped_at timestamptz,
  PRIMARY KEY (task_id, source_shard, name)
);
REVOKE ALL ON pgdog_reshard.publications FROM PUBLIC;

-- Verification results: one row per table, written as each table is verified (by reshard_verify's
-- task, or by a cutover under pgdog_reshard.verify_before_cutover, under the replicating task's id).
CREATE TABLE pgdog_reshard.verify_results (
  task_id bigint NOT NULL REFERENCES pgdog_reshard.tasks (id) ON DELETE CASCADE,
  ordinal integer NOT NULL,              -- the table's position in the plan
  schema_name text NOT NULL,
  table_name text NOT NULL,
  source_rows bigint NOT NULL,
  destination_rows bigint NOT NULL,
  source_checksum numeric NOT NULL,
  destination_checksum numeric NOT NULL,
  destination_shard_rows bigint[] NOT NULL,
  misplaced bigint NOT NULL,
  missing bigint NOT NULL,
  extra bigint NOT NULL,
  differing bigint NOT NULL,
  unresolved bigint NOT NULL,            -- rows left unnarrowed (query budget): the counts are a lower bound
  changing bigint NOT NULL,              -- rows the source kept changing through every re-check (not compared)
  verdict text NOT NULL CHECK (verdict IN ('ok', 'differs', 'unsettled')),
  examples text NOT NULL,
  rounds integer NOT NULL,               -- 1, plus one per re-check after the stream caught up
  verified_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (task_id, schema_name, table_name)
);
REVOKE ALL ON pgdog_reshard.verify_results FROM PUBLIC;

-- Cutovers: one row per reshard_cutover() call, its steps' times and the proxy's acknowledgements.
CREATE TABLE pgdog_reshard.cutovers (
  id bigserial PRIMARY KEY,
  task_id bigint NOT NULL REFERENCES pgdog_reshard.tasks (id) ON DELETE CASCADE,
  state text NOT NULL DEFAULT 'requested'
    CHECK (state IN ('requested', 'waiting_for_lag', 'verifying', 'pausing', 'draining', 'switching', 'resuming',
                     'done', 'aborted')),
  requested_by name NOT NULL,
  requested_at timestamptz NOT NULL DEFAULT now(),
  lag_reached_at timestamptz,
  paused_at timestamptz,                 -- the pause acknowledged: writes have stopped
  drain_lsns jsonb,                      -- per source shard: the position drained to
  drained_at timestamptz,
  switched_at timestamptz,
  resumed_at timestamptz,                -- resume sent
  pause_ms double precision,             -- paused_at .. resumed_at
  reverse_task_id bigint,
  acks jsonb NOT NULL DEFAULT '{}',      -- state -> time, from reshard_cutover_ack()
  error text,
  finished_at timestamptz
);
REVOKE ALL ON pgdog_reshard.cutovers FROM PUBLIC;
CREATE UNIQUE INDEX cutovers_one_active ON pgdog_reshard.cutovers (task_id)
  WHERE state NOT IN ('done', 'aborted');

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

-- Tasks ----------------------------------------------------------------------------------------------

CREATE FUNCTION @extschema@.reshard_schema_sync(source text, destination text, publication text,
                                                phase text DEFAULT 'pre')
RETURNS bigint
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_schema_sync';
COMMENT ON FUNCTION @extschema@.reshard_schema_sync(text, text, text, text) IS
  'Copy the source''s schema to every destination shard: phase pre (before the copy), post (after it), or cutover (sequences)';

CREATE FUNCTION @extschema@.reshard_copy_data(source text, destination text, publication text,
                                              slot text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_copy_data';
COMMENT ON FUNCTION @extschema@.reshard_copy_data(text, text, text, text) IS
  'Pre-flight, schema pre, a replication slot per source shard, every table copied and routed, schema post';

CREATE FUNCTION @extschema@.reshard_replicate(source text, destination text, publication text,
                                              slot text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_replicate';
COMMENT ON FUNCTION @extschema@.reshard_replicate(text, text, text, text) IS
  'Pre-flight (destination tables must exist), a replication slot per source shard, then stream every change without copying';

CREATE FUNCTION @extschema@.reshard(source text, destination text, publication text)
RETURNS bigint
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard';
COMMENT ON FUNCTION @extschema@.reshard(text, text, text) IS
  'The whole reshard in the background: pre-flight, schema, copy, streaming, then an automatic cutover with reverse replication. Returns the task id at once';

-- Functions that watch what background workers commit need a new snapshot per statement.
CREATE FUNCTION pgdog_reshard.require_read_committed(what text, why text)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION '% in a % transaction', what, current_setting('transaction_isolation')
      USING ERRCODE = 'invalid_transaction_state', DETAIL = why,
            HINT = 'Call it outside an explicit transaction, or in a READ COMMITTED one.';
  END IF;
END
$$;
REVOKE ALL ON FUNCTION pgdog_reshard.require_read_committed(text, text) FROM PUBLIC;

-- Waits in the caller's session, cancellably. A REPEATABLE READ snapshot would never see the task
-- change, so only READ COMMITTED is accepted.
CREATE FUNCTION @extschema@.reshard_wait(task bigint, timeout interval DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  deadline timestamptz := clock_timestamp() + timeout;
  task_state text;
BEGIN
  IF task IS NULL THEN
    RAISE EXCEPTION 'task must not be null' USING ERRCODE = 'null_value_not_allowed';
  END IF;
  PERFORM pgdog_reshard.require_read_committed('reshard_wait() cannot wait',
    'Its snapshot would keep showing the task as it was when the transaction began.');
  LOOP
    SELECT t.state INTO task_state FROM pgdog_reshard.tasks t WHERE t.id = task;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'task % does not exist', task USING ERRCODE = 'undefined_object';
    END IF;
    IF task_state IN ('done', 'failed', 'cancelled') OR clock_timestamp() >= deadline THEN
      RETURN task_state;
    END IF;
    PERFORM pg_sleep(0.1);
  END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.reshard_wait(bigint, interval) IS
  'Wait until the task ends (done, failed or cancelled) and return that state; with a timeout, the state it has when the timeout passes';

-- Runs a verify task in a background worker and waits for it (cancellable: a cancel stops the
-- worker); returns the task's id. Its errors are the worker's, with their SQLSTATE.
CREATE FUNCTION pgdog_reshard.verify_task(source text, destination text, publication text)
RETURNS bigint
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'pgdog_reshard_verify_task';
REVOKE ALL ON FUNCTION pgdog_reshard.verify_task(text, text, text) FROM PUBLIC;

-- The task's results are read once it has ended, with a new snapshot (so READ COMMITTED only, as
-- for reshard_wait); the task and its results stay in the catalog (reshard_verify_results).
CREATE FUNCTION @extschema@.reshard_verify(source text, destination text, publication text,
  OUT schema text, OUT "table" text, OUT source_rows bigint, OUT destination_rows bigint,
  OUT source_checksum numeric, OUT destination_checksum numeric, OUT destination_shard_rows bigint[],
  OUT misplaced bigint, OUT missing bigint, OUT extra bigint, OUT differing bigint, OUT unresolved bigint,
  OUT changing bigint, OUT verdict text, OUT examples text, OUT task_id bigint)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  task bigint;
BEGIN
  PERFORM pgdog_reshard.require_read_committed('reshard_verify() cannot run',
    'Its snapshot would not show the results the verify task writes.');
  task := pgdog_reshard.verify_task(source, destination, publication);
  RETURN QUERY
    SELECT v.schema_name, v.table_name, v.source_rows, v.destination_rows, v.source_checksum,
           v.destination_checksum, v.destination_shard_rows, v.misplaced, v.missing, v.extra, v.differing,
           v.unresolved, v.changing, v.verdict, v.examples, v.task_id
    FROM pgdog_reshard.verify_results v WHERE v.task_id = task ORDER BY v.ordinal;
END
$$;
COMMENT ON FUNCTION @extschema@.reshard_verify(text, text, text) IS
  'Compare the source and destination clusters table by table, on the servers: rows, checksums, rows on the wrong shard, missing, extra and differing rows, and a verdict (ok, differs, or unsettled: rows kept changing through every re-check). Runs while replication streams (a difference is re-checked once the stream has caught up); progress in reshard_status';

-- Every verification's results, including those of a cutover's own (pgdog_reshard.verify_before_cutover).
CREATE VIEW @extschema@.reshard_verify_results AS
  SELECT v.task_id, t.command, t.source, t.destination, v.schema_name AS schema, v.table_name AS "table",
         v.source_rows, v.destination_rows, v.source_checksum, v.destination_checksum, v.destination_shard_rows,
         v.misplaced, v.missing, v.extra, v.differing, v.unresolved, v.changing, v.verdict, v.examples, v.rounds,
         v.verified_at
  FROM pgdog_reshard.verify_results v JOIN pgdog_reshard.tasks t ON t.id = v.task_id;

CREATE FUNCTION @extschema@.reshard_stop(task bigint)
RETURNS boolean
LANGUAGE C VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_stop';
COMMENT ON FUNCTION @extschema@.reshard_stop(bigint) IS
  'Stop a task: its workers stop, the slots it made are dropped, it ends cancelled';

CREATE FUNCTION @extschema@.reshard_cutover(task bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_cutover';
COMMENT ON FUNCTION @extschema@.reshard_cutover(bigint) IS
  'Ask a replicating task (the only one if NULL) to cut over: lag under the threshold, pause the proxy, drain, sequences, swap the clusters, reverse replication, resume. Returns the cutover id (see reshard_cutover)';

CREATE FUNCTION @extschema@.reshard_cutover_ack(task bigint, state text)
RETURNS void
LANGUAGE C VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'reshard_cutover_ack';
COMMENT ON FUNCTION @extschema@.reshard_cutover_ack(bigint, text) IS
  'A passive proxy acknowledges a cutover signal of the task: paused or switched';

-- One row per cutover (a rollback is the reverse task's cutover).
CREATE VIEW @extschema@.reshard_cutover AS
  SELECT c.id, c.task_id, t.source, t.destination, c.state, c.requested_at, c.lag_reached_at, c.paused_at,
         c.drained_at, c.switched_at, c.resumed_at, c.pause_ms, c.reverse_task_id, c.acks, c.drain_lsns,
         c.error, c.requested_by, c.finished_at
  FROM pgdog_reshard.cutovers c JOIN pgdog_reshard.tasks t ON t.id = c.task_id;

-- One row per task. Copy figures count copies only: a 'skipped' table (streamed, never copied) is no
-- progress, so a task without copies (schema_sync, replicate) has NULL progress.
CREATE VIEW @extschema@.reshard_status AS
  SELECT t.id, t.command, t.source, t.destination, t.publication, t.state, t.phase,
         -- A done table counts whole; a running one by its COPY bytes against its size estimate.
         CASE WHEN t.command = 'verify' THEN
                round(100.0 * (SELECT count(*) FROM pgdog_reshard.verify_results v WHERE v.task_id = t.id)
                      / nullif((t.options ->> 'tables')::numeric, 0), 1)
              WHEN c.tables = 0 THEN NULL
              WHEN c.done = c.tables THEN 100.0
              WHEN c.estimated_bytes > 0 THEN round(least(99.9, 100.0 * c.progress_bytes / c.estimated_bytes), 1)
              ELSE round(100.0 * c.done / c.tables, 1) END AS progress,
         c.done AS tables_copied, c.tables AS tables_total, c.rows AS rows_copied, c.bytes AS bytes_copied,
         CASE WHEN c.copy_seconds > 0 THEN round(c.bytes / c.copy_seconds)::bigint END AS bytes_per_sec,
         -- The bytes left at the copy's rate so far.
         CASE WHEN c.done < c.tables AND c.copy_seconds > 0 AND c.progress_bytes > 0 AND c.estimated_bytes > c.progress_bytes
              THEN make_interval(secs => c.copy_seconds * (c.estimated_bytes - c.progress_bytes) / c.progress_bytes) END AS eta,
         (SELECT max(greatest(0, s.source_lsn - coalesce(s.confirmed_lsn, s.lsn)))::bigint
            FROM pgdog_reshard.replication_slots s WHERE s.task_id = t.id AND s.dropped_at IS NULL) AS lag_bytes,
         t.error, t.created_by, t.created_at AS started_at, t.updated_at, t.finished_at,
         coalesce(t.finished_at, now()) - t.created_at AS elapsed
  FROM pgdog_reshard.tasks t
  CROSS JOIN LATERAL (
    SELECT count(*) AS tables, count(*) FILTER (WHERE x.state = 'done') AS done,
           coalesce(sum(x.rows), 0) AS rows, coalesce(sum(x.bytes), 0) AS bytes,
           coalesce(sum(x.estimated_bytes), 0) AS estimated_bytes,
           coalesce(sum(CASE WHEN x.state = 'done' THEN x.estimated_bytes ELSE least(x.bytes, x.estimated_bytes) END), 0)
             AS progress_bytes,
           -- From the first table copy's start to the last one's end (or now, while copying).
           extract(epoch FROM CASE WHEN count(*) FILTER (WHERE x.state <> 'done') = 0 THEN max(x.finished_at)
                                   ELSE now() END - min(x.started_at))::float8 AS copy_seconds
    FROM pgdog_reshard.table_copies x WHERE x.task_id = t.id AND x.state <> 'skipped') c;

-- One row per table and source shard of a copy; bytes are binary COPY bytes read from the source.
CREATE VIEW @extschema@.reshard_table_copies AS
  SELECT c.task_id, c.schema_name AS schema, c.table_name AS "table", c.source_shard, c.state,
         c.rows, c.bytes,
         CASE WHEN e.seconds > 0 THEN round(c.bytes / e.seconds)::bigint END AS bytes_per_sec,
         make_interval(secs => e.seconds) AS elapsed,
         CASE WHEN c.state = 'running' AND c.bytes > 0 AND c.estimated_bytes > c.bytes
              THEN make_interval(secs => e.seconds * (c.estimated_bytes - c.bytes) / c.bytes) END AS eta,
         c.estimated_bytes, c.attempts, c.watermark, c.started_at, c.finished_at, c.error,
         c.source_host, c.source_port
  FROM pgdog_reshard.table_copies c
  CROSS JOIN LATERAL (SELECT extract(epoch FROM coalesce(c.finished_at, CASE WHEN c.state = 'running' THEN now() END)
                                     - c.started_at)::float8 AS seconds) e;

-- One row per schema statement and destination shard.
CREATE VIEW @extschema@.reshard_schema_sync AS
  SELECT task_id, shard, phase, seq, kind, schema_name, object_name, state, started_at,
         coalesce(finished_at, now()) - started_at AS elapsed, statement, error
  FROM pgdog_reshard.schema_statements;

-- The replication slots tasks created on the source shards: the streams' permanent ones, and each
-- table copy's temporary one on the server it reads (a replica's host shows which copies read there).
CREATE VIEW @extschema@.reshard_replication_slots AS
  SELECT task_id, source_shard, host, port, database_name, slot_name AS slot, lsn, confirmed_lsn,
         greatest(0, source_lsn - coalesce(confirmed_lsn, lsn))::bigint AS lag_bytes, temporary, created_at,
         dropped_at, last_commit_at
  FROM pgdog_reshard.replication_slots;

-- The replicas copies may read from, per task and source shard, and why any was left out or lost.
CREATE VIEW @extschema@.reshard_copy_replicas AS
  SELECT task_id, source_shard, host, port, database_name, state, problem, checked_at, lost_at
  FROM pgdog_reshard.copy_replicas;

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
REVOKE ALL ON FUNCTION @extschema@.reshard_schema_sync(text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_copy_data(text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_replicate(text, text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_wait(bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_stop(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_cutover(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_cutover_ack(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.reshard_verify(text, text, text) FROM PUBLIC;
REVOKE ALL ON @extschema@.reshard_status, @extschema@.reshard_table_copies, @extschema@.reshard_schema_sync,
  @extschema@.reshard_replication_slots, @extschema@.reshard_cutover, @extschema@.reshard_verify_results,
  @extschema@.reshard_copy_replicas FROM PUBLIC;
REVOKE ALL ON @extschema@.reshard_databases FROM PUBLIC;
REVOKE ALL ON @extschema@.reshard_sharded_tables FROM PUBLIC;

GRANT EXECUTE ON FUNCTION @extschema@.reshard_load_config(text, text) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_reload_config() TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION pgdog_reshard.config_databases() TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION pgdog_reshard.config_sharded_tables() TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_hash_shard(bigint, integer) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_hash_shard(text, integer) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_hash_shard(uuid, integer) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_schema_sync(text, text, text, text) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_copy_data(text, text, text, text) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_replicate(text, text, text, text) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard(text, text, text) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_wait(bigint, interval) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_stop(bigint) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_cutover(bigint) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_cutover_ack(bigint, text) TO pgdog_reshard_admin;
GRANT EXECUTE ON FUNCTION @extschema@.reshard_verify(text, text, text) TO pgdog_reshard_admin;
GRANT SELECT ON @extschema@.reshard_status, @extschema@.reshard_table_copies, @extschema@.reshard_schema_sync,
  @extschema@.reshard_replication_slots, @extschema@.reshard_cutover, @extschema@.reshard_verify_results,
  @extschema@.reshard_copy_replicas TO pgdog_reshard_admin;
GRANT SELECT ON @extschema@.reshard_databases TO pgdog_reshard_admin;
GRANT SELECT ON @extschema@.reshard_sharded_tables TO pgdog_reshard_admin;
