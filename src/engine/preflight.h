// Pre-flight: everything that can be checked before anything is created on any server.
// Each failure is an Error with a precise SQLSTATE, a message naming the object, detail and hint.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "engine/table_plan.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

struct ReshardRequest {
  std::string source;       // cluster names in the config
  std::string destination;
  std::string publication;
  int parallel_copies = 2;  // per source shard: temporary slots and WAL senders needed at once
};

struct ReshardPlan {
  int source_shards = 0;       // N
  int destination_shards = 0;  // M
  std::vector<TablePlan> tables;  // the published tables (leaf partitions), with their sharding keys
};

// Checks, in order, and throws at the first failure:
//  - source and destination clusters exist in the config (42704) and differ (22023);
//  - every shard's primary of both clusters is reachable with the configured user (08001 / 28P01);
//  - each source shard: wal_level = logical (55000); enough free replication slots and WAL senders
//    for 1 permanent + parallel_copies temporary slots (53400 configuration_limit_exceeded);
//    the publication exists (42704) and publishes the same tables on every source shard (55000);
//  - every published table has a usable replica identity: primary key, index, or FULL (55000);
//  - the sharding column a rule names exists in that table (42703) with a type the rule can hash
//    (42804); a nullable key column holding NULLs is refused (22004);
//  - the destination's encoding equals the source's (55000);
//  - every destination table is absent or empty (55000).
// Reads only: creates nothing anywhere.
ReshardPlan preflight(const Config &config, const ReshardRequest &request, TaskContext &ctx);

// The rule of `rules` that applies to a table with these columns: a rule naming the table (and
// schema, if given) wins; else a rule naming only a column the table has. nullptr: omnisharded.
// Throws Error 42703 when a rule names this table but a column it lacks, 55000 when two
// column-only rules match the same table.
const ShardedTable *rule_for_table(const std::vector<const ShardedTable *> &rules, const std::string &schema,
                                   const std::string &table, const std::vector<std::string> &columns);

}  // namespace pgdog_reshard
