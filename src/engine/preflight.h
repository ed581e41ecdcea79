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
  // true: the rows will be copied, so every destination table must be absent or empty.
  // false (reshard_replicate: stream only): every destination table must exist, holding anything.
  bool copy = true;
  // copy: whether the task creates the destination schema (pg_dump of the source's major version
  // needed). false: every destination table must exist already, empty.
  bool schema_sync = true;
  // false (reshard_verify: reads only): wal_level, REPLICATION, free slots, WAL senders and origins
  // are not checked.
  bool replicate = true;
};

struct ReshardPlan {
  int source_shards = 0;       // N
  int destination_shards = 0;  // M
  // The published tables (leaf partitions), with their sharding keys, sorted by schema then name.
  // Columns, identity and key are the same on every source shard (checked); estimated_rows and
  // estimated_bytes are summed over the source shards.
  std::vector<TablePlan> tables;
  // server_encoding of every shard of both clusters (checked equal): the client_encoding the COPY
  // connections must use, so that text keys are hashed as the bytes the servers store.
  std::string encoding;
};

// Checks, in order, and throws at the first failure:
//  - source and destination clusters exist in the config (42704) and differ (22023);
//    parallel_copies is not negative (22023);
//  - every shard's primary of both clusters is reachable with the configured user (08001 / 28P01);
//  - no two shards of either cluster are the same database of the same server (22023: compared by
//    system_identifier, postmaster start time and current_database(), so host aliases are caught);
//  - no shard is a standby (55000);
//  - each source shard (unless !request.replicate): wal_level = logical (55000); the user has REPLICATION (42501); enough free
//    replication slots and WAL senders for 1 permanent + parallel_copies temporary slots
//    (53400 configuration_limit_exceeded);
//    the publication exists (42704), publishes INSERT, UPDATE and DELETE (55000), filters no rows
//    or columns (0A000), publishes at least one table (55000) and the same tables on every source
//    shard (55000);
//  - each destination shard (unless !request.replicate): the user may use replication origins
//    (42501) and one is free per source shard (53400);
//  - every published table has a usable replica identity: primary key, index, or FULL (55000);
//  - the sharding column a rule names exists in that table (42703), is not generated (0A000), has
//    a type the rule can hash (42804); a nullable key column holding NULLs is refused (22004);
//    a table's columns, identity and key type are the same on every source shard (55000);
//    a rule naming a table that is not published is logged as a warning through ctx;
//  - the destination's encoding equals the source's (55000);
//  - copy with schema sync: the pg_dump of every source's major version is installed (58P01);
//  - copy: every destination table is absent or empty (55000), and present (42P01) without schema
//    sync; not copy: every destination table
//    exists (42P01, naming the table and the shard), whatever rows it holds, and unless its
//    identity is FULL has a unique index on its replica identity columns for the upserts (55000).
// Reads only: creates nothing anywhere.
ReshardPlan preflight(const Config &config, const ReshardRequest &request, TaskContext &ctx);

// The rule of `rules` that applies to a table with these columns: a rule naming the table (and
// schema, if given) wins; else a rule naming only a column the table has. nullptr: omnisharded.
// Among rules of one kind, one with a schema wins over one without.
// Throws Error 42703 when a rule names this table but a column it lacks, 55000 when two
// column-only rules (or two rules naming the table) match it equally.
// (preflight also applies a rule naming a leaf partition's partitioned ancestor to the leaf.)
const ShardedTable *rule_for_table(const std::vector<const ShardedTable *> &rules, const std::string &schema,
                                   const std::string &table, const std::vector<std::string> &columns);

}  // namespace pgdog_reshard
