// PgDog's configuration (pgdog.toml + users.toml), parsed and validated as a whole.
//
// Only what resharding needs is read; every other section and key of a real PgDog config
// ([general], pool settings, plugins, ...) is accepted and ignored, so users load the file they have.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/sharding.h"

namespace pgdog_reshard {

enum class Role { Primary, Replica, Auto };
const char *role_name(Role role);

// One [[databases]] entry: one host of one shard of one cluster (entries sharing `name` form a cluster).
struct Database {
  std::string name;           // cluster name, as used by reshard('prod', 'prod_2x', ...)
  std::string host;
  int port = 5432;
  std::string database_name;  // defaults to name
  int shard = 0;
  Role role = Role::Primary;
  bool resharding_only = false;
  // Resolved credentials: the entry's own `user`/`password` if set, else the users.toml user for
  // this cluster (the one with schema_admin = true, else the first). Never shown to users.
  std::string user;
  std::string password;
};

// One users.toml [[users]] entry.
struct User {
  std::string name;
  std::string database;  // cluster name
  std::string password;
  bool schema_admin = false;
};

// One [[sharded_tables]] entry (with its list/range mappings, from [[sharded_tables.mapping]]
// or PgDog's older top-level [[sharded_mappings]]).
struct ShardedTable {
  std::string database;  // the cluster the rule is declared for
  std::string schema;    // empty: any schema
  std::string table;     // empty: every table that has `column`
  std::string column;
  DataType data_type = DataType::Bigint;
  std::vector<Mapping> mappings;  // empty: hash sharding

  bool is_hash() const { return mappings.empty(); }
};

struct Config {
  std::vector<Database> databases;
  std::vector<User> users;
  std::vector<ShardedTable> sharded_tables;

  bool has_cluster(std::string_view name) const;
  // M for a cluster: its shards are exactly 0..M-1 (validated by parse_config). 0 if unknown.
  int shard_count(std::string_view cluster) const;
  // The primary entry of one shard of a cluster; throws Error(42704) if there is none.
  const Database &primary(std::string_view cluster, int shard) const;
  // The replicas a shard's table copies read from: its entries marked resharding_only = true or,
  // if it has none, its role = "replica" entries; never its primary. Empty: the primary serves.
  std::vector<const Database *> copy_replicas(std::string_view cluster, int shard) const;
  // The sharding rules declared for a cluster.
  std::vector<const ShardedTable *> rules_for(std::string_view cluster) const;
};

// Parses and validates both files. On any problem throws Error(F0000, config_file_error):
//  - TOML syntax: the message names the file, line and column;
//  - semantics: the message names the database (cluster) or table concerned.
// Nothing is returned unless everything is valid, so a caller never sees a half-loaded config.
// users_toml may be absent (credentials then come from the [[databases]] entries themselves).
Config parse_config(std::string_view pgdog_toml, std::optional<std::string_view> users_toml,
                    std::string_view pgdog_path = "pgdog.toml",
                    std::string_view users_path = "users.toml");

}  // namespace pgdog_reshard
