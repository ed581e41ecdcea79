// Streaming one source shard's permanent slot into the destination shards: START_REPLICATION with
// pgoutput, every message decoded and handed to the ChangeApplier, keepalives answered, and the
// flush position confirmed to the source only after the destinations committed up to it.
#pragma once

#include <string>
#include <vector>

#include "core/lsn.h"
#include "core/pg.h"
#include "engine/apply.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

class StreamObserver {
 public:
  virtual ~StreamObserver() = default;
  // The destinations committed everything up to `lsn` (the last applied commit at `commit_time`,
  // microseconds since 2000-01-01; 0 if none yet). Persist it: streaming resumes from here.
  virtual void flushed(Lsn lsn, int64_t commit_time) = 0;
  // The source's WAL end as of its latest message, for lag.
  virtual void source_position(Lsn wal_end) = 0;
};

struct StreamRequest {
  ConnParams source;  // the source shard's primary (a replication connection is made from it)
  std::string slot;
  std::string publication;
  Lsn start;          // the last confirmed position (the slot never goes back before its own)
  std::vector<ApplyTable> tables;
  std::vector<ConnParams> destinations;
  ApplyOptions apply;  // its source, if set, is read in the stream's client_encoding
  // Standby status updates, each asking for a reply, at least this often: the reply's position
  // keeps the lag fresh and lets an idle stream confirm the source's current position.
  int status_interval_ms = 100;
  bool binary = true;  // binary values when every published column's type allows (else text)
};

// Runs until ctx stops it (its Error propagates) or a connection fails (Error; the caller restarts
// from the last flushed position, and idempotent apply makes the replay harmless).
void stream_changes(const StreamRequest &request, StreamObserver &observer, TaskContext &ctx);

}  // namespace pgdog_reshard
