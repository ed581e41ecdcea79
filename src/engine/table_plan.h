// What the engine knows of one table to copy: found by pre-flight on the source, used by the copy,
// the replication apply and verification.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/router.h"

namespace pgdog_reshard {

struct ShardingKey {
  std::string column;
  int index = -1;                      // position in TablePlan::columns
  KeyType type = KeyType::Int8;        // the column's type on the source
  const ShardedTable *rule = nullptr;  // the rule (owned by the Config) that names this table
};

struct TablePlan {
  std::string schema;                // as in the catalog (unquoted); quote with sql.h when used
  std::string name;                  // a leaf partition for partitioned tables (data lives there)
  std::vector<std::string> columns;  // copied columns in attnum order: generated columns left out
  std::vector<std::string> identity_columns;  // replica identity (primary key, index, or all: FULL)
  bool replica_identity_full = false;
  std::optional<ShardingKey> key;    // absent: omnisharded, the whole table to every shard
  int64_t estimated_rows = 0;        // pg_class.reltuples, for progress and ETA
  int64_t estimated_bytes = 0;       // pg_relation_size

  bool omnisharded() const { return !key.has_value(); }
  std::string qualified() const;     // "schema"."name", quoted
};

}  // namespace pgdog_reshard
