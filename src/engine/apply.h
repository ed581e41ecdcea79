// The apply side of streaming: decoded pgoutput changes routed to the destination shards and
// applied idempotently, many source transactions per destination transaction, pipelined.
//
// - A change is skipped when its transaction's commit record starts (Begin::final_lsn) before its
//   table's copy watermark, the copy slot's consistent point: the copy already holds it. A commit
//   record starting exactly at the watermark is after the snapshot, and is applied.
// - INSERT is an upsert on the replica identity; UPDATE sets the changed columns by identity
//   (unchanged TOASTed columns are left alone); DELETE by identity; TRUNCATE on every shard. An
//   UPDATE that moves the sharding key to another shard is a delete there and an upsert here, with
//   unchanged TOASTed values taken from the old shard's row. Replaying any of it converges.
// - Destination sessions run with session_replication_role = replica.
// - Statements are prepared once per table, shard and shape, and sent in libpq pipeline mode; no
//   shard waits for another. A batch ends on a size or age limit at a source commit boundary: every
//   shard commits, and only then is the batch's last end LSN reported as flushed.
// - With a replication origin (ApplyOptions::origin, see apply_origin.h), each shard commits the
//   origin's progress with its batch, and a source transaction a shard already committed sends it
//   nothing: a replay after a crash is exactly-once per shard, REPLICA IDENTITY FULL inserts
//   included.
// - Repeated UPDATEs of one row inside a batch are merged and sent once, with the latest values
//   (ApplyTable::merge_updates, for tables where that cannot change the outcome): a hot row, such
//   as a counter, costs one statement per batch instead of one per change.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/lsn.h"
#include "core/pg.h"
#include "core/pgoutput.h"
#include "engine/table_plan.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

struct ApplyTable {
  TablePlan plan;  // columns, replica identity and sharding key (with its rule)
  Lsn watermark;   // transactions whose commit record starts before it are in the copy already
  // Whether an UPDATE may be held back and merged with the next ones of the same row in the batch.
  // Sending a row's update later than the changes of other rows that came after it is safe only
  // when no other row can conflict with it: the replica identity's index is the table's only
  // unique or exclusion constraint, and no destination trigger fires for it (ENABLE ALWAYS or
  // REPLICA). The stream sets it from the source's catalog (replication_stream.cpp).
  bool merge_updates = false;
};

struct ApplyOptions {
  size_t batch_changes = 2000;   // commit the destination transactions after this many changes...
  int batch_ms = 100;            // ...or when the open batch is this old, at a commit boundary
  // The stream's replication origin, kept on every destination shard (as shard_origin(origin, i),
  // created if missing); empty: none, and a replay re-applies what a shard already committed
  // (harmless except for REPLICA IDENTITY FULL inserts). An origin is bound to one session at a
  // time: one per stream (task, source shard).
  std::string origin;
  // The source shard (a plain connection, opened on first need), read by a key move replayed onto
  // a shard that never got the row while its old shard already committed the move (see apply.cpp).
  // Unset: that replay updates the new shard as if the move were done there too.
  std::optional<ConnParams> source;
};

struct ApplyStats {
  uint64_t applied = 0;  // changes sent to destinations
  uint64_t skipped = 0;  // changes the copy already held (committed before a watermark)
  // Changes not sent to a shard (or shards) because its origin shows it committed their transaction.
  // A change sent to some shards and not to others counts here and in `applied`.
  uint64_t already_applied = 0;
  uint64_t transactions = 0;
  uint64_t batches = 0;
  uint64_t merged = 0;  // UPDATEs merged into an earlier held one of the same row (counted applied)
};

class ChangeApplier : public PgOutputHandler {
 public:
  // destinations: shard i's primary. Connects at once (throws like Connection does).
  ChangeApplier(std::vector<ApplyTable> tables, const std::vector<ConnParams> &destinations, TaskContext &ctx,
                ApplyOptions options = {});
  ~ChangeApplier() override;

  void on_begin(const Begin &begin) override;
  void on_commit(const Commit &commit) override;
  void on_relation(const Relation &relation) override;  // maps a source relation to its ApplyTable
  void on_insert(const Insert &insert) override;
  void on_update(const Update &update) override;
  void on_delete(const Delete &del) override;
  void on_truncate(const Truncate &truncate) override;

  // True when the open batch should be committed (size or age reached) and a commit boundary has
  // been seen. The caller then calls flush().
  bool batch_due() const;
  // The source's position while nothing is in flight (no source transaction open, no batch left
  // uncommitted): every change before it has been applied, so flushed() may move there (what lets
  // an idle stream confirm the source's current position). True if it moved.
  bool advance_idle(Lsn position);
  // Commits the open batch on every shard; returns the end LSN of the last source transaction now
  // durable on all of them (the position to confirm to the source). No-op if nothing is open.
  // With an origin, refused (XX000) inside a source transaction: a shard's progress says which
  // transactions it holds whole, so none may be committed in part.
  Lsn flush();
  // Between BEGIN and COMMIT of a source transaction.
  bool in_transaction() const;
  // With an origin: each shard's progress (the end of the last source transaction it committed),
  // nullopt for a shard without any yet. Empty without an origin.
  std::vector<std::optional<Lsn>> origin_progress() const;
  // The last position flush() returned (or the start position, before any).
  Lsn flushed() const;
  void set_start(Lsn start);  // the position streaming starts from: flushed() until the first flush
  const ApplyStats &stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pgdog_reshard
