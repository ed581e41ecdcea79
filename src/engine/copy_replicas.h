// Read replicas as copy sources: a source shard's table copies read from its standbys (PostgreSQL
// 16+ decodes on a standby, so each copy's temporary slot and snapshot can live there), leaving
// the primary to the application and to the stream's permanent slot.
//
// Pre-flight of every configured copy replica (Config::copy_replicas) of the source cluster. A
// replica serves only when it:
//  - accepts the configured user's connection, with REPLICATION;
//  - runs PostgreSQL 16 or later and is in recovery (a standby);
//  - is a standby of the shard's primary (the same system_identifier) and its WAL receiver is
//    streaming;
//  - has hot_standby_feedback on (else the primary's vacuum removes rows a copy's snapshot still
//    reads, and the copy is cancelled) and wal_level = logical;
//  - has replayed to within max_lag_bytes of the primary's WAL;
//  - has free replication slots and WAL senders for parallel_copies copies at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

struct CopyReplica {
  int shard = 0;
  const Database *db = nullptr;
  bool usable = false;
  int replica = 0;      // its position in config.copy_replicas(cluster, shard)
  std::string problem;  // why it is left out ("" when usable)
};

// Checks every copy replica of every shard of `cluster`; reads only. A replica that fails is
// logged as a warning through ctx and returned with usable = false and its problem. Throws
// Error 55000 when a shard has copy replicas and none is usable (its detail lists each and why):
// the configuration asked that the copy spare the primary, so it does not fall back silently.
std::vector<CopyReplica> check_copy_replicas(const Config &config, const std::string &cluster,
                                             int parallel_copies, int64_t max_lag_bytes, TaskContext &ctx);

}  // namespace pgdog_reshard
