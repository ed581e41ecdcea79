#include "engine/slots.h"

#include <chrono>

#include "core/sql.h"

namespace pgdog_reshard {

namespace {

ConnParams replication(ConnParams params) {
  params.replication = true;
  return params;
}

}  // namespace

Lsn create_or_reuse_slot(const ConnParams &source, const std::string &name, TaskContext &ctx) {
  Connection conn(source, ctx);
  Result existing = conn.exec_params(
      "SELECT plugin, database = current_database(), coalesce(confirmed_flush_lsn, restart_lsn)::text"
      " FROM pg_replication_slots WHERE slot_name = $1",
      {name});
  if (existing.rows() > 0) {
    if (existing.value(0, 0) != "pgoutput" || existing.value(0, 1) != "t") {
      throw Error(sqlstate::kObjectNotInPrerequisiteState,
                  "replication slot \"" + name + "\" on " + source.describe() +
                      " exists but is not a pgoutput slot of this database",
                  "plugin " + std::string(existing.value(0, 0)), "Name another slot, or drop this one.");
    }
    ctx.log(LogLevel::Info, "reusing replication slot \"" + name + "\" on " + source.describe());
    return Lsn::parse_or_throw(existing.value(0, 2));
  }
  Connection repl(replication(source), ctx);
  // A permanent slot with no snapshot: the table copies take their own, later, each with its own LSN.
  Result created = repl.exec("CREATE_REPLICATION_SLOT " + quote_ident(name) + " LOGICAL pgoutput (SNAPSHOT 'nothing')");
  return Lsn::parse_or_throw(created.value(0, created.column_index("consistent_point")));
}

bool drop_slot(const ConnParams &source, const std::string &name, TaskContext &ctx) {
  Connection conn(source, ctx);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    Result slot = conn.exec_params(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", {name});
    if (slot.rows() == 0) return false;
    if (slot.is_null(0, 0) || std::chrono::steady_clock::now() > deadline) break;
    ctx.wait_socket(-1, false, false, 200);  // a consumer is still detaching
  }
  conn.exec_params("SELECT pg_drop_replication_slot($1)", {name});
  return true;
}

std::string slot_name(const std::string &prefix, long long task, int shard) {
  return prefix + "_" + std::to_string(task) + "_" + std::to_string(shard);
}

}  // namespace pgdog_reshard
