#include "engine/cutover_steps.h"

#include <algorithm>

#include "core/sql.h"

namespace pgdog_reshard {

const char *const kInsertedPositionSql = R"SQL(
SELECT CASE WHEN (lsn - '0/0'::pg_lsn) % seg = 40 THEN lsn - 40
            WHEN (lsn - '0/0'::pg_lsn) % blk = 24 THEN lsn - 24
            ELSE lsn END::text
FROM (SELECT pg_catalog.pg_current_wal_insert_lsn() AS lsn,
             pg_catalog.current_setting('wal_block_size')::numeric AS blk,
             (SELECT setting::numeric FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size') AS seg) s
)SQL";

std::vector<Lsn> source_positions(const std::vector<ConnParams> &sources, WalPosition which, TaskContext &ctx) {
  const char *sql = which == WalPosition::Inserted ? kInsertedPositionSql : "SELECT pg_catalog.pg_current_wal_lsn()::text";
  std::vector<Lsn> positions;
  for (const ConnParams &source : sources) {
    Connection conn(source, ctx);
    positions.push_back(Lsn::parse_or_throw(conn.exec(sql).value(0, 0)));
  }
  return positions;
}

namespace {

std::vector<std::string> qualified_names(const std::vector<std::pair<std::string, std::string>> &tables) {
  std::vector<std::string> names;
  for (const auto &[schema, table] : tables) names.push_back(quote_qualified(schema, table));
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

std::string join(const std::vector<std::string> &items) {
  std::string out;
  for (const std::string &item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

void create_publication(const ConnParams &shard, const std::string &name,
                        const std::vector<std::pair<std::string, std::string>> &tables, TaskContext &ctx) {
  std::vector<std::string> wanted = qualified_names(tables);
  Connection conn(shard, ctx);
  if (conn.exec_params("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", {name}).rows() == 0) {
    conn.exec("CREATE PUBLICATION " + quote_ident(name) + " FOR TABLE " + join(wanted));
    return;
  }
  // format('%I.%I') quotes as quote_ident does; both lists are sorted here, byte-wise.
  Result listed = conn.exec_params(
      "SELECT format('%I.%I', schemaname, tablename) FROM pg_catalog.pg_publication_tables WHERE pubname = $1",
      {name});
  std::vector<std::string> has;
  for (int i = 0; i < listed.rows(); i++) has.emplace_back(listed.value(i, 0));
  std::sort(has.begin(), has.end());
  if (has != wanted) {
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "publication " + quote_ident(name) + " on " + shard.describe() + " exists with other tables",
                "It lists " + join(has) + "; the reverse replication needs " + join(wanted) + ".",
                "Drop it, or rename it, and cut over again.");
  }
}

bool drop_publication(const ConnParams &shard, const std::string &name, TaskContext &ctx) {
  Connection conn(shard, ctx);
  Result existing = conn.exec_params("SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", {name});
  if (existing.rows() == 0) return false;
  conn.exec("DROP PUBLICATION IF EXISTS " + quote_ident(name));
  return true;
}

}  // namespace pgdog_reshard
