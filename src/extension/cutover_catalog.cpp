#include "extension/cutover_catalog.h"

#include <cstring>

#include "core/error.h"
#include "extension/catalog.h"
#include "extension/spi.h"

namespace pgdog_reshard {

namespace {

std::string num(int64_t v) { return std::to_string(v); }

// The columns cutover_step may stamp: the name goes into the SQL text, so only these.
bool stampable(const char *column) {
  for (const char *known : {"lag_reached_at", "paused_at", "drained_at", "switched_at", "resumed_at"}) {
    if (std::strcmp(column, known) == 0) return true;
  }
  return false;
}

}  // namespace

int64_t cutover_insert(int64_t task, const std::string &requested_by) {
  SpiSession spi;
  auto busy = spi.query(
      "SELECT id, state FROM pgdog_reshard.cutovers WHERE task_id = $1::bigint AND state NOT IN ('done', 'aborted')",
      {num(task)});
  if (!busy.empty()) {
    throw Error(sqlstate::kObjectInUse,
                "task " + num(task) + " has a cutover in progress already (cutover " + *busy[0][0] + ", " + *busy[0][1] + ")",
                {}, "Follow it in the reshard_cutover view.");
  }
  auto rows = spi.query("INSERT INTO pgdog_reshard.cutovers (task_id, requested_by) VALUES ($1::bigint, $2) RETURNING id",
                        {num(task), requested_by.empty() ? calling_role() : requested_by}, false);
  return std::stoll(*rows.at(0)[0]);
}

CutoverHistory cutover_history(int64_t task) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT count(*), coalesce((array_agg(error ORDER BY id DESC))[1], ''),"
      " coalesce(extract(epoch FROM clock_timestamp() - max(finished_at)), 0)"
      " FROM pgdog_reshard.cutovers WHERE task_id = $1::bigint AND state = 'aborted'",
      {num(task)});
  return CutoverHistory{std::stoi(*rows.at(0)[0]), *rows[0][1], std::stod(*rows[0][2])};
}

std::optional<CutoverRow> cutover_active(int64_t task) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT id, state, coalesce(reverse_task_id, 0) FROM pgdog_reshard.cutovers"
      " WHERE task_id = $1::bigint AND state NOT IN ('done', 'aborted') ORDER BY id LIMIT 1",
      {num(task)});
  if (rows.empty()) return std::nullopt;
  return CutoverRow{std::stoll(*rows[0][0]), *rows[0][1], std::stoll(*rows[0][2])};
}

void cutover_step(int64_t id, const std::string &state, const char *stamp) {
  std::string set = "state = $2";
  if (stamp) {
    if (!stampable(stamp)) throw Error(sqlstate::kInternalError, std::string("cutover column ") + stamp + " cannot be stamped");
    set += std::string(", ") + stamp + " = clock_timestamp()";
    if (std::strcmp(stamp, "resumed_at") == 0) {
      set += ", pause_ms = extract(epoch FROM clock_timestamp() - paused_at) * 1000";
    }
  }
  SpiSession spi;
  spi.exec(("UPDATE pgdog_reshard.cutovers SET " + set + " WHERE id = $1::bigint").c_str(), {num(id), state});
}

void cutover_set_drain(int64_t id, const std::string &drain_lsns_json) {
  SpiSession spi;
  spi.exec("UPDATE pgdog_reshard.cutovers SET drain_lsns = $2::jsonb WHERE id = $1::bigint", {num(id), drain_lsns_json});
}

void cutover_set_reverse_task(int64_t id, int64_t reverse_task) {
  SpiSession spi;
  spi.exec("UPDATE pgdog_reshard.cutovers SET reverse_task_id = $2::bigint WHERE id = $1::bigint",
           {num(id), num(reverse_task)});
}

void cutover_finish(int64_t id, const std::string &state, const std::optional<std::string> &error) {
  SpiSession spi;
  spi.exec("UPDATE pgdog_reshard.cutovers SET state = $2, error = $3, finished_at = clock_timestamp() WHERE id = $1::bigint",
           {num(id), state, error});
}

double cutover_pause_ms(int64_t id) {
  SpiSession spi;
  auto rows = spi.query("SELECT coalesce(pause_ms, 0) FROM pgdog_reshard.cutovers WHERE id = $1::bigint", {num(id)});
  return rows.empty() ? 0 : std::stod(*rows[0][0]);
}

bool cutover_ack(int64_t task, const std::string &ack) {
  SpiSession spi;
  return spi.exec(
             "UPDATE pgdog_reshard.cutovers SET acks = acks || jsonb_build_object($2::text, clock_timestamp())"
             " WHERE task_id = $1::bigint AND state NOT IN ('done', 'aborted')",
             {num(task), ack}) > 0;
}

bool cutover_acked(int64_t id, const std::string &ack) {
  SpiSession spi;
  auto rows = spi.query("SELECT acks ? $2 FROM pgdog_reshard.cutovers WHERE id = $1::bigint", {num(id), ack});
  return !rows.empty() && rows[0][0] == std::optional<std::string>("t");
}

void publication_insert(int64_t task, int shard, const std::string &host, int port, const std::string &dbname,
                        const std::string &name) {
  SpiSession spi;
  spi.exec(
      "INSERT INTO pgdog_reshard.publications (task_id, source_shard, host, port, database_name, name)"
      " VALUES ($1::bigint, $2::int, $3, $4::int, $5, $6) ON CONFLICT DO NOTHING",
      {num(task), num(shard), host, num(port), dbname, name});
}

std::vector<PublicationRow> publications_of(int64_t task) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT source_shard, name, dropped_at IS NOT NULL FROM pgdog_reshard.publications WHERE task_id = $1::bigint"
      " ORDER BY source_shard",
      {num(task)});
  std::vector<PublicationRow> out;
  for (const SpiRow &r : rows) out.push_back(PublicationRow{std::stoi(*r[0]), *r[1], *r[2] == "t"});
  return out;
}

void publication_mark_dropped(int64_t task, int shard, const std::string &name) {
  SpiSession spi;
  spi.exec(
      "UPDATE pgdog_reshard.publications SET dropped_at = now()"
      " WHERE task_id = $1::bigint AND source_shard = $2::int AND name = $3",
      {num(task), num(shard), name});
}

void notify_proxy(const std::string &payload_json) {
  SpiSession spi;
  spi.query("SELECT pg_catalog.pg_notify('pgdog_reshard', $1)", {payload_json}, false);
}

}  // namespace pgdog_reshard
