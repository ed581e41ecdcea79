#include "extension/verify_catalog.h"

#include "extension/spi.h"

namespace pgdog_reshard {

namespace {

std::string shard_rows_array(const VerifyResult &r) {
  std::string out = "{";
  for (size_t i = 0; i < r.destination_shards.size(); i++) {
    out += (i ? "," : "") + std::to_string(r.destination_shards[i].rows);
  }
  return out + "}";
}

}  // namespace

void verify_result_record(int64_t task, int ordinal, const VerifyResult &r) {
  SpiSession spi;
  spi.exec(
      "INSERT INTO pgdog_reshard.verify_results AS v (task_id, ordinal, schema_name, table_name, source_rows,"
      " destination_rows, source_checksum, destination_checksum, destination_shard_rows, misplaced, missing, extra,"
      " differing, unresolved, changing, verdict, examples, rounds) VALUES ($1::bigint, $2::int, $3, $4, $5::bigint,"
      " $6::bigint, $7::numeric, $8::numeric, $9::bigint[], $10::bigint, $11::bigint, $12::bigint, $13::bigint,"
      " $14::bigint, $18::bigint, $15, $16, $17::int)"
      " ON CONFLICT (task_id, schema_name, table_name) DO UPDATE SET ordinal = excluded.ordinal,"
      " source_rows = excluded.source_rows, destination_rows = excluded.destination_rows,"
      " source_checksum = excluded.source_checksum, destination_checksum = excluded.destination_checksum,"
      " destination_shard_rows = excluded.destination_shard_rows, misplaced = excluded.misplaced,"
      " missing = excluded.missing, extra = excluded.extra, differing = excluded.differing,"
      " unresolved = excluded.unresolved, changing = excluded.changing, verdict = excluded.verdict, examples = excluded.examples,"
      " rounds = excluded.rounds, verified_at = now()",
      {std::to_string(task), std::to_string(ordinal), r.schema, r.table, std::to_string(r.source_rows),
       std::to_string(r.destination_rows), r.source_checksum, r.destination_checksum, shard_rows_array(r),
       std::to_string(r.misplaced), std::to_string(r.missing), std::to_string(r.extra), std::to_string(r.differing),
       std::to_string(r.unresolved_rows), r.verdict, r.examples_text(), std::to_string(r.rounds),
       std::to_string(r.changing_rows)});
}

void verify_results_clear(int64_t task) {
  SpiSession spi;
  spi.exec("DELETE FROM pgdog_reshard.verify_results WHERE task_id = $1::bigint", {std::to_string(task)});
}

std::optional<int64_t> replicating_task(const std::string &source, const std::string &destination) {
  SpiSession spi;
  auto rows = spi.query(
      "SELECT id FROM pgdog_reshard.tasks WHERE source = $1 AND destination = $2 AND state = 'replicating'"
      " ORDER BY id DESC LIMIT 1",
      {source, destination});
  if (rows.empty()) return std::nullopt;
  return std::stoll(*rows[0][0]);
}

int verify_tasks_fail_orphaned() {
  SpiSession spi;
  return static_cast<int>(spi.exec(
      "UPDATE pgdog_reshard.tasks t SET state = 'failed', updated_at = now(), finished_at = now(),"
      " error = 'the verify worker exited before it finished (a crash or a server restart); run reshard_verify() again'"
      " WHERE command = 'verify' AND state NOT IN ('done', 'failed', 'cancelled')"
      " AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = t.worker_pid"
      " AND a.backend_type = 'pgdog_reshard verify')"));
}

}  // namespace pgdog_reshard
