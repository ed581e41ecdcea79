// One table's copy from one source shard: a consistent snapshot, its LSN watermark, and every row
// routed by its sharding key to the destination shards over binary COPY.
//
// On a replication=database connection to the source: BEGIN READ ONLY ISOLATION LEVEL REPEATABLE
// READ; CREATE_REPLICATION_SLOT <slot> TEMPORARY LOGICAL pgoutput (SNAPSHOT 'use') whose consistent
// point is the watermark (changes of this table committed after it come from replication); COPY
// (columns) TO STDOUT (FORMAT binary); rows parsed and routed to COPY (columns) FROM STDIN (FORMAT
// binary) on each destination shard, whose sessions run with session_replication_role = replica so
// triggers and foreign keys do not fire. Streaming: nothing is held but one bounded buffer per shard.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/lsn.h"
#include "core/pg.h"
#include "engine/table_plan.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

class TableCopyObserver {
 public:
  virtual ~TableCopyObserver() = default;
  virtual void snapshot_taken(Lsn watermark) = 0;
  // Called now and then while rows flow (at most a few times a second), and once at the end.
  virtual void progress(uint64_t rows, uint64_t bytes) = 0;
};

// A copy that reads from a standby of the shard's primary (any version: the snapshot is a plain
// standby snapshot taken while the replay position stands still, and that position is the
// watermark; see table_copy.cpp for why not a slot on the standby).
struct StandbySource {
  // The stream's slot position on the primary. A watermark below it would leave the changes in
  // between to nobody, so the copy first waits for the standby to replay this far.
  Lsn stream_start;
};

// What copy_table throws for a failure of one of its servers: the message names the side.
class TableCopyError : public Error {
 public:
  TableCopyError(bool at_source, const std::string &sqlstate, const std::string &message,
                 const std::string &detail = {}, const std::string &hint = {})
      : Error(sqlstate, message, detail, hint), at_source_(at_source) {}
  bool at_source() const { return at_source_; }

 private:
  bool at_source_;
};

// True when the copy failed because its source server went away (lost or refused connection,
// shutdown, crash): the copy may be retried at once on another server of the shard.
bool lost_the_source(const std::exception &e);

struct TableCopyResult {
  Lsn watermark;
  uint64_t rows = 0;                      // read from the source
  uint64_t bytes = 0;                     // of binary COPY data read
  std::vector<uint64_t> rows_per_shard;   // written to each destination shard
};

// Runs the copy. The destination table must exist and be empty of this source's rows (the caller
// truncates before a retry). Throws Error on any failure; every connection is closed and the
// temporary slot goes with its connection.
// Every session uses the source's server encoding as client_encoding. Each shard copies in a
// transaction committed only once every shard's COPY has ended, so a failure leaves no rows
// (only one between the shards' final commits can leave some committed). An error keeps its
// SQLSTATE and names the side that failed: "copy of "s"."t" from source host:port failed: ..."
// or "... to destination shard N (host:port) failed: ..."; a cancel is "... stopped: ..."
// (57014 / 57P01). A text sharding key with a destination in another server encoding is
// refused (0A000) before any row moves.
TableCopyResult copy_table(const TablePlan &table, const ConnParams &source,
                           const std::vector<ConnParams> &destinations, const std::string &slot_name,
                           TaskContext &ctx, TableCopyObserver *observer = nullptr,
                           const StandbySource *standby = nullptr);

// TRUNCATE the table on every destination shard, to restart a failed copy cleanly.
void truncate_destinations(const TablePlan &table, const std::vector<ConnParams> &destinations,
                           TaskContext &ctx);

}  // namespace pgdog_reshard
