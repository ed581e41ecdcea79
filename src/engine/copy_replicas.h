// Read replicas as copy sources: a source shard's table copies read from its standbys, leaving
// the primary to the application and to the stream's slot. A standby's copy takes a plain
// snapshot at a known replay position (table_copy.h), so it needs no slot, no WAL sender and no
// particular version there.
//
// Pre-flight of every configured copy replica (Config::copy_replicas) of the source cluster. A
// replica serves only when it:
//  - accepts the configured user's connection;
//  - is in recovery (a standby) of the shard's primary (the same system_identifier), with its WAL
//    receiver streaming;
//  - has hot_standby_feedback on (else the primary's vacuum removes row versions a copy's
//    snapshot still reads, and the standby cancels the copy);
//  - has replayed to within max_lag_bytes of the primary's WAL.
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
                                             int64_t max_lag_bytes, TaskContext &ctx);

}  // namespace pgdog_reshard
