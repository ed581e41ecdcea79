#include "extension/task_catalog.h"

#include "core/json.h"
#include "extension/spi.h"

namespace pgdog_reshard {

namespace {

std::string json_array(const std::vector<std::string> &items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); i++) out += (i ? ", " : "") + json_string(items[i]);
  return out + "]";
}

std::vector<std::string> column_values(const std::vector<SpiRow> &rows) {
  std::vector<std::string> out;
  for (const SpiRow &row : rows) out.push_back(row[0].value_or(""));
  return out;
}

std::string num(int64_t v) { return std::to_string(v); }

}  // namespace

int64_t task_insert(const std::string &command, const ReshardRequest &request, const std::string &options_json,
                    const StoredConfig &config, const std::string &created_by) {
  SpiSession spi;
  auto rows = spi.query(
      "INSERT INTO pgdog_reshard.tasks (command, source, destination, publication, options, created_by,"
      " pgdog_toml, users_toml) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) RETURNING id",
      {command, request.source, request.destination, request.publication, options_json,
       created_by.empty() ? calling_role() : created_by, config.pgdog_toml, config.users_toml},
      false);
  return std::stoll(*rows.at(0)[0]);
}

std::optional<TaskRow> task_load(int64_t id) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT id, command, source, destination, publication, options::text, state, coalesce(phase, ''),"
      " stop_requested, pgdog_toml, users_toml, created_by FROM pgdog_reshard.tasks WHERE id = $1::bigint",
      {num(id)});
  if (rows.empty()) return std::nullopt;
  const SpiRow &r = rows[0];
  TaskRow task;
  task.id = std::stoll(*r[0]);
  task.command = *r[1];
  task.source = *r[2];
  task.destination = *r[3];
  task.publication = *r[4];
  task.options = *r[5];
  task.state = *r[6];
  task.phase = *r[7];
  task.stop_requested = *r[8] == "t";
  task.config = StoredConfig{*r[9], r[10], "pgdog.toml", "users.toml"};
  task.created_by = *r[11];
  return task;
}

void task_update(int64_t id, const std::string &state, const std::string &phase,
                 const std::optional<std::string> &error) {
  SpiSession spi;
  spi.exec(
      "UPDATE pgdog_reshard.tasks SET state = $2, phase = $3, error = coalesce($4, error), updated_at = now(),"
      " finished_at = CASE WHEN $2 IN ('done', 'failed', 'cancelled') THEN now() END WHERE id = $1::bigint",
      {num(id), state, phase, error});
}

void task_set_worker(int64_t id, int pid) {
  SpiSession spi;
  spi.exec("UPDATE pgdog_reshard.tasks SET worker_pid = $2::int, updated_at = now() WHERE id = $1::bigint",
           {num(id), num(pid)});
}

bool task_stop_requested(int64_t id) {
  std::optional<TaskRow> row = task_load(id);
  return row && row->stop_requested;
}

bool task_end_unstarted(int64_t id, const std::string &error) {
  SpiSession spi;
  return spi.exec(
             "UPDATE pgdog_reshard.tasks SET state = CASE WHEN stop_requested THEN 'cancelled' ELSE 'failed' END,"
             " error = CASE WHEN stop_requested THEN 'stopped by reshard_stop()' ELSE $2 END,"
             " updated_at = now(), finished_at = now() WHERE id = $1::bigint AND state = 'pending' AND worker_pid IS NULL",
             {num(id), error}) > 0;
}

std::vector<int64_t> tasks_needing_worker() {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT id FROM pgdog_reshard.tasks t WHERE state IN ('pending', 'running', 'replicating')"
      " AND (worker_pid IS NULL OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = t.worker_pid"
      " AND a.backend_type = 'pgdog_reshard task')) AND command <> 'verify' ORDER BY id");
  std::vector<int64_t> ids;
  for (const SpiRow &r : rows) ids.push_back(std::stoll(*r[0]));
  return ids;
}

std::string task_option(const TaskRow &task, const char *key) {
  SpiSession spi;
  auto rows = spi.query("SELECT $1::jsonb ->> $2", {task.options, std::string(key)});
  return rows.empty() ? "" : rows[0][0].value_or("");
}

void table_copies_insert(int64_t task, const ReshardPlan &plan, const std::string &state) {
  SpiSession spi;
  for (size_t i = 0; i < plan.tables.size(); i++) {
    const TablePlan &t = plan.tables[i];
    // Omnisharded tables hold the same rows on every source shard: read them from shard 0 only.
    int shards = t.omnisharded() ? 1 : plan.source_shards;
    for (int shard = 0; shard < shards; shard++) {
      SpiParams params = {num(task), num(shard), t.schema, t.name, num(static_cast<int64_t>(i)),
                          json_array(t.columns), std::nullopt, std::nullopt, json_array(t.identity_columns),
                          t.replica_identity_full ? "true" : "false", num(t.estimated_bytes), state};
      if (t.key) {
        params[6] = t.key->column;
        params[7] = std::string(key_type_name(t.key->type));
      }
      spi.exec(
          "INSERT INTO pgdog_reshard.table_copies (task_id, source_shard, schema_name, table_name, ordinal,"
          " columns, key_column, key_type, identity_columns, replica_identity_full, estimated_bytes, state)"
          " VALUES ($1::bigint, $2::int, $3, $4, $5::int, $6::jsonb, $7, $8, $9::jsonb, $10::boolean, $11::bigint,"
          " $12)"
          " ON CONFLICT DO NOTHING",
          params);
    }
  }
}

bool table_copies_planned(int64_t task) {
  SpiSession spi;
  return !spi.query("SELECT 1 FROM pgdog_reshard.table_copies WHERE task_id = $1::bigint LIMIT 1", {num(task)}).empty();
}

std::optional<int> table_copy_claim(int64_t task, int pid) {
  SpiSession spi;
  // The lowest table none of whose rows are taken; the row lock keeps two workers apart.
  auto rows = spi.query(
      "WITH next AS (SELECT ordinal FROM pgdog_reshard.table_copies c WHERE task_id = $1::bigint"
      "   AND state = 'waiting' AND NOT EXISTS (SELECT 1 FROM pgdog_reshard.table_copies o"
      "     WHERE o.task_id = c.task_id AND o.ordinal = c.ordinal AND o.state <> 'waiting')"
      "   ORDER BY ordinal LIMIT 1 FOR UPDATE SKIP LOCKED)"
      " UPDATE pgdog_reshard.table_copies c SET state = 'running', worker_pid = $2::int, updated_at = now(),"
      "   attempts = attempts + 1, error = NULL"
      " FROM next WHERE c.task_id = $1::bigint AND c.ordinal = next.ordinal RETURNING c.ordinal",
      {num(task), num(pid)}, false);
  if (rows.empty()) return std::nullopt;
  return std::stoi(*rows[0][0]);
}

TablePlan table_copy_plan(int64_t task, int ordinal) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT schema_name, table_name, key_column, key_type, replica_identity_full::text, estimated_bytes"
      " FROM pgdog_reshard.table_copies WHERE task_id = $1::bigint AND ordinal = $2::int LIMIT 1",
      {num(task), num(ordinal)});
  if (rows.empty()) {
    throw Error(sqlstate::kInternalError, "task " + num(task) + " has no table copy " + num(ordinal));
  }
  TablePlan plan;
  plan.schema = *rows[0][0];
  plan.name = *rows[0][1];
  plan.replica_identity_full = *rows[0][4] == "true";
  plan.estimated_bytes = std::stoll(*rows[0][5]);
  const char *elements =
      "SELECT e FROM pgdog_reshard.table_copies, jsonb_array_elements_text(%s) WITH ORDINALITY AS x(e, n)"
      " WHERE task_id = $1::bigint AND ordinal = $2::int AND source_shard = (SELECT min(source_shard)"
      " FROM pgdog_reshard.table_copies WHERE task_id = $1::bigint AND ordinal = $2::int) ORDER BY n";
  char sql[1024];
  snprintf(sql, sizeof(sql), elements, "columns");
  plan.columns = column_values(spi.query(sql, {num(task), num(ordinal)}));
  snprintf(sql, sizeof(sql), elements, "identity_columns");
  plan.identity_columns = column_values(spi.query(sql, {num(task), num(ordinal)}));
  if (rows[0][2]) {
    ShardingKey key;
    key.column = *rows[0][2];
    for (size_t i = 0; i < plan.columns.size(); i++) {
      if (plan.columns[i] == key.column) key.index = static_cast<int>(i);
    }
    key.type = key_type_from_name(rows[0][3].value_or("")).value_or(KeyType::Int8);
    plan.key = key;  // the rule itself is re-derived from the task's configuration by the caller
  }
  return plan;
}

void table_copy_progress(int64_t task, int ordinal, int shard, const std::string &state, uint64_t rows,
                         uint64_t bytes, std::optional<Lsn> watermark, const std::optional<std::string> &error) {
  SpiSession spi;
  std::optional<std::string> lsn;
  if (watermark) lsn = watermark->to_string();
  spi.exec(
      "UPDATE pgdog_reshard.table_copies SET state = $4, rows = $5::bigint, bytes = $6::bigint,"
      " watermark = coalesce($7::pg_lsn, watermark), error = $8, updated_at = now(),"
      " started_at = CASE WHEN $4 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,"
      " finished_at = CASE WHEN $4 IN ('done', 'failed') THEN now() END"
      " WHERE task_id = $1::bigint AND ordinal = $2::int AND source_shard = $3::int",
      {num(task), num(ordinal), num(shard), state, num(static_cast<int64_t>(rows)), num(static_cast<int64_t>(bytes)),
       lsn, error});
}

int table_copy_attempts(int64_t task, int ordinal) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT coalesce(max(attempts), 0) FROM pgdog_reshard.table_copies WHERE task_id = $1::bigint AND ordinal = $2::int",
      {num(task), num(ordinal)});
  return std::stoi(*rows[0][0]);
}

void table_copy_next_attempt(int64_t task, int ordinal) {
  SpiSession spi;
  spi.exec(
      "UPDATE pgdog_reshard.table_copies SET attempts = attempts + 1, updated_at = now()"
      " WHERE task_id = $1::bigint AND ordinal = $2::int",
      {num(task), num(ordinal)});
}

CopyCounts table_copy_counts(int64_t task) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT count(*) FILTER (WHERE state = 'waiting'), count(*) FILTER (WHERE state = 'running'),"
      " count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed')"
      " FROM pgdog_reshard.table_copies WHERE task_id = $1::bigint",
      {num(task)});
  return CopyCounts{std::stoi(*rows[0][0]), std::stoi(*rows[0][1]), std::stoi(*rows[0][2]), std::stoi(*rows[0][3])};
}

void table_copy_release_dead(int64_t task) {
  SpiSession spi;
  // The dead worker's temporary slots went with its sessions (copy_worker names them
  // pgdog_reshard_copy_<task>_<ordinal>_<shard>).
  spi.exec(
      "WITH released AS (UPDATE pgdog_reshard.table_copies c SET state = 'waiting', worker_pid = NULL, rows = 0,"
      " bytes = 0, watermark = NULL, updated_at = now() WHERE task_id = $1::bigint AND state = 'running'"
      " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.worker_pid"
      " AND a.backend_type = 'pgdog_reshard copy') RETURNING ordinal, source_shard)"
      " UPDATE pgdog_reshard.replication_slots s SET dropped_at = now() FROM released r"
      " WHERE s.task_id = $1::bigint AND s.temporary AND s.dropped_at IS NULL AND s.source_shard = r.source_shard"
      " AND s.slot_name = format('pgdog_reshard_copy_%s_%s_%s', $1::bigint, r.ordinal, r.source_shard)",
      {num(task)});
}

std::optional<std::string> table_copy_failure(int64_t task) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT format('copy of %I.%I from source shard %s failed: %s', schema_name, table_name, source_shard, error)"
      " FROM pgdog_reshard.table_copies WHERE task_id = $1::bigint AND state = 'failed' ORDER BY ordinal LIMIT 1",
      {num(task)});
  if (rows.empty()) return std::nullopt;
  return rows[0][0];
}

std::vector<int> table_copy_shards(int64_t task, int ordinal) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT source_shard FROM pgdog_reshard.table_copies WHERE task_id = $1::bigint AND ordinal = $2::int"
      " ORDER BY source_shard",
      {num(task), num(ordinal)});
  std::vector<int> shards;
  for (const SpiRow &r : rows) shards.push_back(std::stoi(*r[0]));
  return shards;
}

void table_copy_source(int64_t task, int ordinal, int shard, const std::string &host, int port) {
  SpiSession spi;
  spi.exec(
      "UPDATE pgdog_reshard.table_copies SET source_host = $4, source_port = $5::int"
      " WHERE task_id = $1::bigint AND ordinal = $2::int AND source_shard = $3::int",
      {num(task), num(ordinal), num(shard), host, num(port)});
}

namespace {
std::string permit_key(int shard, int server, int permit) { return num((shard * 64 + server) * 64 + permit); }
}  // namespace

bool source_permit_try(int64_t task, int shard, int server, int permit) {
  SpiSession spi;
  auto rows = spi.query("SELECT pg_try_advisory_lock($1::int, $2::int)",
                        {num(static_cast<int32_t>(task)), permit_key(shard, server, permit)}, false);
  return rows[0][0] == std::string("t");
}

void source_permit_release(int64_t task, int shard, int server, int permit) {
  SpiSession spi;
  spi.query("SELECT pg_advisory_unlock($1::int, $2::int)",
            {num(static_cast<int32_t>(task)), permit_key(shard, server, permit)}, false);
}

void copy_replicas_record(int64_t task, const std::vector<CopyReplica> &replicas) {
  SpiSession spi;
  for (const CopyReplica &r : replicas) {
    std::optional<std::string> problem;
    if (!r.usable) problem = r.problem;
    spi.exec(
        "INSERT INTO pgdog_reshard.copy_replicas (task_id, source_shard, replica, host, port, database_name, state,"
        " problem) VALUES ($1::bigint, $2::int, $3::int, $4, $5::int, $6, $7, $8)"
        " ON CONFLICT (task_id, source_shard, replica) DO UPDATE SET host = excluded.host, port = excluded.port,"
        " database_name = excluded.database_name, state = excluded.state, problem = excluded.problem,"
        " checked_at = now(), lost_at = NULL",
        {num(task), num(r.shard), num(r.replica), r.db->host, num(r.db->port), r.db->database_name,
         std::string(r.usable ? "usable" : "left out"), problem});
  }
}

std::vector<int> copy_replicas_usable(int64_t task, int shard) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT replica FROM pgdog_reshard.copy_replicas WHERE task_id = $1::bigint AND source_shard = $2::int"
      " AND state = 'usable' ORDER BY replica",
      {num(task), num(shard)});
  std::vector<int> out;
  for (const SpiRow &r : rows) out.push_back(std::stoi(*r[0]));
  return out;
}

void copy_replica_lost(int64_t task, int shard, int replica, const std::string &error) {
  SpiSession spi;
  spi.exec(
      "UPDATE pgdog_reshard.copy_replicas SET state = 'lost', problem = $4, lost_at = now()"
      " WHERE task_id = $1::bigint AND source_shard = $2::int AND replica = $3::int AND state = 'usable'",
      {num(task), num(shard), num(replica), error});
}

void schema_statement_started(int64_t task, const std::string &phase, int shard, size_t seq, const std::string &kind,
                              const std::string &schema, const std::string &name, const std::string &sql) {
  SpiSession spi;
  spi.exec(
      "INSERT INTO pgdog_reshard.schema_statements (task_id, phase, shard, seq, kind, schema_name, object_name,"
      " statement) VALUES ($1::bigint, $2, $3::int, $4::int, $5, $6, $7, $8)"
      " ON CONFLICT (task_id, phase, shard, seq) DO UPDATE SET state = 'running', started_at = now(),"
      " finished_at = NULL, error = NULL",
      {num(task), phase, num(shard), num(static_cast<int64_t>(seq)), kind, schema, name, sql});
}

void schema_statement_finished(int64_t task, const std::string &phase, int shard, size_t seq,
                               const std::string &state, const std::optional<std::string> &error) {
  SpiSession spi;
  spi.exec(
      "UPDATE pgdog_reshard.schema_statements SET state = $5, error = $6, finished_at = now()"
      " WHERE task_id = $1::bigint AND phase = $2 AND shard = $3::int AND seq = $4::int",
      {num(task), phase, num(shard), num(static_cast<int64_t>(seq)), state, error});
}

void slot_insert(int64_t task, int shard, const std::string &host, int port, const std::string &dbname,
                 const std::string &slot, Lsn lsn) {
  SpiSession spi;
  spi.exec(
      "INSERT INTO pgdog_reshard.replication_slots (task_id, source_shard, host, port, database_name,"
      " slot_name, lsn) VALUES ($1::bigint, $2::int, $3, $4::int, $5, $6, $7::pg_lsn)"
      " ON CONFLICT DO NOTHING",
      {num(task), num(shard), host, num(port), dbname, slot, lsn.to_string()});
}

void copy_slot_insert(int64_t task, int shard, const std::string &host, int port, const std::string &dbname,
                      const std::string &slot, Lsn lsn) {
  SpiSession spi;
  spi.exec(
      "INSERT INTO pgdog_reshard.replication_slots (task_id, source_shard, host, port, database_name,"
      " slot_name, lsn, temporary) VALUES ($1::bigint, $2::int, $3, $4::int, $5, $6, $7::pg_lsn, true)"
      " ON CONFLICT (task_id, source_shard, slot_name) DO UPDATE SET host = excluded.host, port = excluded.port,"
      " database_name = excluded.database_name, lsn = excluded.lsn, created_at = now(), dropped_at = NULL",
      {num(task), num(shard), host, num(port), dbname, slot, lsn.to_string()});
}

std::vector<SlotRow> slots_of(int64_t task) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT source_shard, host, port, database_name, slot_name, lsn::text, dropped_at IS NOT NULL"
      " FROM pgdog_reshard.replication_slots WHERE task_id = $1::bigint AND NOT temporary"
      " ORDER BY source_shard, slot_name",
      {num(task)});
  std::vector<SlotRow> out;
  for (const SpiRow &r : rows) {
    SlotRow slot;
    slot.source_shard = std::stoi(*r[0]);
    slot.host = *r[1];
    slot.port = std::stoi(*r[2]);
    slot.database_name = *r[3];
    slot.slot_name = *r[4];
    slot.lsn = Lsn::parse(*r[5]).value_or(Lsn());
    slot.dropped = *r[6] == "t";
    out.push_back(slot);
  }
  return out;
}

void slot_mark_dropped(int64_t task, int shard, const std::string &slot) {
  SpiSession spi;
  spi.exec(
      "UPDATE pgdog_reshard.replication_slots SET dropped_at = now()"
      " WHERE task_id = $1::bigint AND source_shard = $2::int AND slot_name = $3",
      {num(task), num(shard), slot});
}

std::vector<std::pair<std::string, std::string>> task_tables(int64_t task) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT DISTINCT schema_name, table_name FROM pgdog_reshard.table_copies WHERE task_id = $1::bigint ORDER BY 1, 2",
      {num(task)});
  std::vector<std::pair<std::string, std::string>> out;
  for (const SpiRow &r : rows) out.emplace_back(*r[0], *r[1]);
  return out;
}

std::vector<Lsn> slot_confirmed_positions(int64_t task) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT coalesce(confirmed_lsn, lsn)::text FROM pgdog_reshard.replication_slots"
      " WHERE task_id = $1::bigint AND NOT temporary AND dropped_at IS NULL ORDER BY source_shard",
      {num(task)});
  std::vector<Lsn> out;
  for (const SpiRow &r : rows) out.push_back(Lsn::parse_or_throw(*r[0]));
  return out;
}

void slot_confirmed(int64_t task, int shard, Lsn confirmed, int64_t commit_time_us) {
  SpiSession spi;
  std::optional<std::string> commit_time;
  // PostgreSQL's epoch (2000-01-01) in microseconds, as pgoutput sends it.
  if (commit_time_us != 0) commit_time = std::to_string(commit_time_us);
  spi.exec(
      "UPDATE pgdog_reshard.replication_slots SET confirmed_lsn = $3::pg_lsn,"
      " last_commit_at = coalesce('2000-01-01 00:00:00+00'::timestamptz + $4::bigint * interval '1 microsecond',"
      " last_commit_at) WHERE task_id = $1::bigint AND source_shard = $2::int AND NOT temporary",
      {num(task), num(shard), confirmed.to_string(), commit_time});
}

void slot_source_position(int64_t task, int shard, Lsn wal_end) {
  SpiSession spi;
  spi.exec(
      "UPDATE pgdog_reshard.replication_slots SET source_lsn = greatest(source_lsn, $3::pg_lsn)"
      " WHERE task_id = $1::bigint AND source_shard = $2::int AND NOT temporary",
      {num(task), num(shard), wal_end.to_string()});
}

std::optional<StreamStart> slot_stream_start(int64_t task, int shard) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT slot_name, coalesce(confirmed_lsn, lsn)::text FROM pgdog_reshard.replication_slots"
      " WHERE task_id = $1::bigint AND source_shard = $2::int AND NOT temporary AND dropped_at IS NULL",
      {num(task), num(shard)});
  if (rows.empty()) return std::nullopt;
  return StreamStart{*rows[0][0], Lsn::parse_or_throw(*rows[0][1])};
}

std::vector<std::pair<int, Lsn>> table_watermarks(int64_t task, int shard) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT ordinal, coalesce((SELECT watermark FROM pgdog_reshard.table_copies c WHERE c.task_id = o.task_id"
      "   AND c.ordinal = o.ordinal AND c.source_shard = $2::int), min(watermark))::text"
      " FROM pgdog_reshard.table_copies o WHERE task_id = $1::bigint GROUP BY task_id, ordinal ORDER BY ordinal",
      {num(task), num(shard)});
  std::vector<std::pair<int, Lsn>> out;
  for (const SpiRow &r : rows) out.emplace_back(std::stoi(*r[0]), r[1] ? Lsn::parse_or_throw(*r[1]) : Lsn());
  return out;
}

}  // namespace pgdog_reshard
