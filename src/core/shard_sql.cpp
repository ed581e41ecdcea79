#include "core/shard_sql.h"

#include "core/sql.h"

namespace pgdog_reshard {

namespace {

// A key value as a typed literal, so the comparison uses the rule's type whatever the column's.
std::string literal(DataType type, const Key &value) {
  const char *cast = type == DataType::Bigint ? "::pg_catalog.int8"
                     : type == DataType::Uuid ? "::pg_catalog.uuid"
                                              : "::pg_catalog.text";
  return quote_literal(format_key(type, value)) + cast;
}

std::string list_condition(DataType type, const Mapping &m, const std::string &key) {
  if (m.values.empty()) return "false";
  std::string values;
  for (const Key &v : m.values) values += (values.empty() ? "" : ", ") + literal(type, v);
  return key + " IN (" + values + ")";
}

std::string range_condition(DataType type, const Mapping &m, const std::string &key) {
  std::string out;
  if (m.start) out = key + " >= " + literal(type, *m.start);
  if (m.end) out += (out.empty() ? "" : " AND ") + key + " < " + literal(type, *m.end);
  return out.empty() ? "true" : out;
}

}  // namespace

std::string mapped_shard_sql(DataType type, const std::vector<Mapping> &mappings, std::string_view key) {
  // Varchar rules compare bytes (compare_keys), whatever collation the column has.
  std::string k = type == DataType::Varchar ? "(" + std::string(key) + ")::pg_catalog.text COLLATE \"C\""
                                            : std::string(key);
  std::string whens, fallback = "NULL";
  for (const Mapping &m : mappings) {
    std::string shard = std::to_string(m.shard);
    switch (m.kind) {
      case Mapping::Kind::List:
        whens += " WHEN " + list_condition(type, m, k) + " THEN " + shard;
        break;
      case Mapping::Kind::Range:
        whens += " WHEN " + range_condition(type, m, k) + " THEN " + shard;
        break;
      case Mapping::Kind::Default:
        fallback = shard;  // the last default wins, as in mapped_shard()
        break;
    }
  }
  if (whens.empty()) return "(" + fallback + ")::pg_catalog.int4";
  return "(CASE" + whens + " ELSE " + fallback + " END)::pg_catalog.int4";
}

std::string misplaced_sql(const ShardedTable &rule, std::string_view key, int shards, int shard,
                          uint32_t hash_parent) {
  std::string k(key);
  if (rule.is_hash()) {
    return "(" + k + " IS NULL OR NOT pg_catalog.satisfies_hash_partition(" + std::to_string(hash_parent) +
           "::pg_catalog.oid, " + std::to_string(shards) + ", " + std::to_string(shard) + ", " + k + "))";
  }
  return "(" + k + " IS NULL OR " + mapped_shard_sql(rule.data_type, rule.mappings, k) +
         " IS DISTINCT FROM " + std::to_string(shard) + ")";
}

}  // namespace pgdog_reshard
