// The tasks' durable state in the control node's catalog (pgdog_reshard.tasks and friends), via SPI.
// Callers provide the transaction: a SQL function's own, or in_transaction() in a worker.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/lsn.h"
#include "engine/copy_replicas.h"
#include "engine/preflight.h"
#include "engine/table_plan.h"
#include "extension/catalog.h"

namespace pgdog_reshard {

struct TaskRow {
  int64_t id = 0;
  std::string command, source, destination, publication, options, state, phase, created_by;
  bool stop_requested = false;
  StoredConfig config;

  // A replicate task copies nothing: its destination tables must exist, and it takes no temporary slots.
  ReshardRequest request(int parallel_copies) const {
    ReshardRequest r{source, destination, publication, parallel_copies};
    r.copy = command != "replicate";
    if (!r.copy) r.parallel_copies = 0;
    return r;
  }
};

// created_by: the calling role unless given (a worker inserting a task for the session that asked).
int64_t task_insert(const std::string &command, const ReshardRequest &request, const std::string &options_json,
                    const StoredConfig &config, const std::string &created_by = {});
std::optional<TaskRow> task_load(int64_t id);
// state/phase/error of a task; a terminal state (done, failed, cancelled) sets finished_at.
void task_update(int64_t id, const std::string &state, const std::string &phase,
                 const std::optional<std::string> &error = std::nullopt);
void task_set_worker(int64_t id, int pid);
// Whether reshard_stop() asked the task to stop (false for a task that does not exist).
bool task_stop_requested(int64_t id);
// A task no worker ever ran (so it made nothing anywhere) ends without one: 'cancelled' if it was
// asked to stop, else 'failed' with `error`. False if the task has started meanwhile.
bool task_end_unstarted(int64_t id, const std::string &error);
// Tasks that should have a worker and have none alive (pending, running, replicating).
std::vector<int64_t> tasks_needing_worker();
std::string task_option(const TaskRow &task, const char *key);  // options->>key, "" if absent

// Table copies: one row per table and source shard, with what the copy needs to rebuild its plan.
// state 'waiting' (to copy) or 'skipped' (streamed only, never copied: no watermark).
void table_copies_insert(int64_t task, const ReshardPlan &plan, const std::string &state = "waiting");
bool table_copies_planned(int64_t task);  // whether the task's plan is stored (any row, whatever its state)
// Claims the next table none of whose copies started; returns its ordinal.
std::optional<int> table_copy_claim(int64_t task, int pid);
// The table's plan as pre-flight made it (the rule itself is re-derived by the caller).
TablePlan table_copy_plan(int64_t task, int ordinal);
void table_copy_progress(int64_t task, int ordinal, int shard, const std::string &state, uint64_t rows,
                         uint64_t bytes, std::optional<Lsn> watermark, const std::optional<std::string> &error);
// Attempts at a table so far (a claim counts one; so does each retry): the catalog is the only
// counter, so attempts lost to a crashed worker count against the limit too.
int table_copy_attempts(int64_t task, int ordinal);
void table_copy_next_attempt(int64_t task, int ordinal);
struct CopyCounts {
  int waiting = 0, running = 0, done = 0, failed = 0;
};
CopyCounts table_copy_counts(int64_t task);
void table_copy_release_dead(int64_t task);  // rows claimed by workers that are gone -> waiting
std::optional<std::string> table_copy_failure(int64_t task);  // the first final failure, if any
std::vector<int> table_copy_shards(int64_t task, int ordinal);  // source shards to read the table from

// The server a table's copy from one source shard reads: shown by reshard_table_copies.
void table_copy_source(int64_t task, int ordinal, int shard, const std::string &host, int port);

// Source permits: session advisory locks on the control node, one per concurrent copy a source
// server may serve (pgdog_reshard.parallel_copies). `server` 0 is the shard's primary, 1 + i its
// copy replica i. Keys: (task, (shard * 64 + server) * 64 + permit).
bool source_permit_try(int64_t task, int shard, int server, int permit);
void source_permit_release(int64_t task, int shard, int server, int permit);

// Copy replicas: pre-flight's verdict on each (a restarted task records its new verdict), and the
// ones a copy lost on the way.
void copy_replicas_record(int64_t task, const std::vector<CopyReplica> &replicas);
std::vector<int> copy_replicas_usable(int64_t task, int shard);  // positions, usable and not lost
void copy_replica_lost(int64_t task, int shard, int replica, const std::string &error);

// Schema statements as they run.
void schema_statement_started(int64_t task, const std::string &phase, int shard, size_t seq, const std::string &kind,
                              const std::string &schema, const std::string &name, const std::string &sql);
void schema_statement_finished(int64_t task, const std::string &phase, int shard, size_t seq,
                               const std::string &state, const std::optional<std::string> &error);

// Replication slots a task made.
struct SlotRow {
  int source_shard = 0;
  std::string host, database_name, slot_name;
  int port = 0;
  Lsn lsn;
  bool dropped = false;
};
void slot_insert(int64_t task, int shard, const std::string &host, int port, const std::string &dbname,
                 const std::string &slot, Lsn lsn);
// A table copy's temporary slot, on the server it reads (a retry's replaces the last attempt's).
// It goes with its session: slot_mark_dropped records the end, no one drops it.
void copy_slot_insert(int64_t task, int shard, const std::string &host, int port, const std::string &dbname,
                      const std::string &slot, Lsn lsn);
std::vector<SlotRow> slots_of(int64_t task);  // the permanent ones
void slot_mark_dropped(int64_t task, int shard, const std::string &slot);
// Streaming progress of a source shard's slot: what the destinations committed, and the source's
// WAL end as last seen (for lag).
void slot_confirmed(int64_t task, int shard, Lsn confirmed, int64_t commit_time_us);
void slot_source_position(int64_t task, int shard, Lsn wal_end);
// The permanent slot of a source shard and where its stream resumes.
struct StreamStart {
  std::string slot;
  Lsn lsn;
};
std::optional<StreamStart> slot_stream_start(int64_t task, int shard);
// The task's planned tables (schema, name), each once.
std::vector<std::pair<std::string, std::string>> task_tables(int64_t task);
// Per source shard (in shard order), the position its stream has confirmed (the slot's start if none).
std::vector<Lsn> slot_confirmed_positions(int64_t task);
// Per table (by ordinal), the copy watermark for one source shard (omnisharded tables: shard 0's).
std::vector<std::pair<int, Lsn>> table_watermarks(int64_t task, int shard);

}  // namespace pgdog_reshard
