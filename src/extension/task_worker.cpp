// A task worker: runs one task's phases in order (copy_data: schema pre, slots, copies, schema post,
// then replicating; replicate: plan, slots, then replicating; reshard: as copy_data, then cuts over
// by itself), recording each step in the catalog.
// Every phase is idempotent, so a task restarted after a crash or a server restart runs them again
// and skips what is done; one that was already streaming goes straight back to streaming.
#include <algorithm>
#include <mutex>
#include <optional>
#include <vector>

#include "engine/apply_origin.h"
#include "engine/cluster.h"
#include "engine/copy_replicas.h"
#include "engine/preflight.h"
#include "engine/schema_sync.h"
#include "engine/sequences.h"
#include "engine/slots.h"
#include "engine/cutover_steps.h"
#include "extension/backend_context.h"
#include "extension/cutover.h"
#include "extension/cutover_catalog.h"
#include "extension/guc.h"
#include "extension/task_catalog.h"
#include "extension/transaction.h"
#include "extension/worker.h"

namespace pgdog_reshard {

namespace {

constexpr int kMaxCopyWorkerRestarts = 3;
// reshard()'s own cutover: tried this many times, each abort followed by a longer pause.
constexpr int kAutoCutoverAttempts = 3;
constexpr double kAutoCutoverRetrySeconds = 15;

// apply_schema reports from one thread per shard; PostgreSQL may only be called from this one.
// Events wait here until the engine next checks for interrupts, then go to the catalog.
class SchemaEventQueue : public SchemaSyncObserver {
 public:
  explicit SchemaEventQueue(int64_t task) : task_(task) {}

  void statement_started(int shard, SchemaPhase phase, size_t index, const SchemaStatement &s) override {
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back({shard, schema_phase_name(phase), index, "running", s.kind, s.schema, s.name, s.sql, {}});
  }
  void statement_finished(int shard, SchemaPhase phase, size_t index, StatementOutcome outcome,
                          const std::string &error) override {
    const char *state = outcome == StatementOutcome::Done            ? "done"
                        : outcome == StatementOutcome::AlreadyExists ? "exists"
                        : outcome == StatementOutcome::Cancelled     ? "cancelled"
                                                                     : "failed";
    std::lock_guard<std::mutex> lock(mutex_);
    events_.push_back({shard, schema_phase_name(phase), index, state, {}, {}, {}, {},
                       error.empty() ? std::nullopt : std::optional<std::string>(error)});
  }

  void drain() {
    std::vector<Event> events;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      events.swap(events_);
    }
    if (events.empty()) return;
    in_transaction([&] {
      for (const Event &e : events) {
        if (e.state == "running") {
          schema_statement_started(task_, e.phase, e.shard, e.seq, e.kind, e.schema, e.name, e.sql);
        } else {
          schema_statement_finished(task_, e.phase, e.shard, e.seq, e.state, e.error);
        }
      }
    });
  }

 private:
  struct Event {
    int shard;
    std::string phase;
    size_t seq;
    std::string state, kind, schema, name, sql;
    std::optional<std::string> error;
  };
  int64_t task_;
  std::mutex mutex_;
  std::vector<Event> events_;
};

struct TaskRun {
  TaskRow task;
  Config config;
  // The source's schema, dumped once per run: a copy's post-data comes from the same dump as its
  // pre-data (objects created on the source during the copy are not the reshard's to create, and
  // could name tables pre-data never made), and costs no second pg_dump. A worker restarted
  // between the two dumps again.
  mutable std::optional<SchemaDump> dump;
};

void log_task(int64_t task, const std::string &message) {
  pg_call([&] { elog(LOG, "pgdog_reshard: task %lld: %s", static_cast<long long>(task), message.c_str()); });
}

void set_phase(const TaskRun &run, const char *state, const char *phase) {
  in_transaction([&] { task_update(run.task.id, state, phase); });
  log_task(run.task.id, std::string(state) + " (" + phase + ")");
}

std::vector<SchemaStatement> phase_statements(const TaskRun &run, SchemaPhase phase, TaskContext &ctx) {
  if (phase == SchemaPhase::Cutover) return sequence_statements(primaries(run.config, run.task.source), ctx);
  if (!run.dump) run.dump = dump_schema(connection_params(run.config.primary(run.task.source, 0)), ctx);
  return phase == SchemaPhase::Pre ? run.dump->pre : run.dump->post;
}

// Runs a schema phase's statements on the destination, recording each in the catalog.
void apply_schema_phase(const TaskRun &run, SchemaPhase phase) {
  SchemaEventQueue queue(run.task.id);
  BackendTaskContext ctx(&worker_stop_requested, [&] { queue.drain(); });
  std::vector<SchemaStatement> statements = phase_statements(run, phase, ctx);
  try {
    apply_schema(phase, statements, primaries(run.config, run.task.destination), queue, ctx);
  } catch (...) {
    queue.drain();
    throw;
  }
  queue.drain();
}

void schema_phase(const TaskRun &run, SchemaPhase phase) {
  // pgdog_reshard.schema_sync was off when the task was created: the destination schema is the
  // user's, made beforehand (pre-flight checked its tables exist).
  if (phase != SchemaPhase::Cutover && in_transaction([&] { return task_option(run.task, "schema_sync"); }) == "false") {
    log_task(run.task.id, std::string("schema ") + schema_phase_name(phase) + " skipped: pgdog_reshard.schema_sync was off");
    return;
  }
  set_phase(run, "running", (std::string("schema_") + schema_phase_name(phase)).c_str());
  apply_schema_phase(run, phase);
}

void create_slots(const TaskRun &run, BackendTaskContext &ctx) {
  set_phase(run, "running", "slots");
  std::string given = in_transaction([&] { return task_option(run.task, "slot"); });
  for (int shard = 0; shard < run.config.shard_count(run.task.source); shard++) {
    const Database &db = run.config.primary(run.task.source, shard);
    std::string name = given.empty() ? slot_name("pgdog_reshard", run.task.id, shard) : given;
    Lsn lsn = create_or_reuse_slot(connection_params(db), name, ctx);
    in_transaction([&] { slot_insert(run.task.id, shard, db.host, db.port, db.database_name, name, lsn); });
  }
}

// Checks the source's copy replicas again (pre-flight did when the task was created; a restarted
// task finds them as they are now) and records which serve. Returns how many servers the copies
// read from at once: each shard's usable replicas, or its primary.
int copy_servers_checked(const TaskRun &run, BackendTaskContext &ctx) {
  std::vector<CopyReplica> replicas =
      check_copy_replicas(run.config, run.task.source, guc_replica_max_lag, ctx);
  in_transaction([&] { copy_replicas_record(run.task.id, replicas); });
  int servers = 0;
  for (int shard = 0; shard < run.config.shard_count(run.task.source); shard++) {
    int usable = static_cast<int>(std::count_if(replicas.begin(), replicas.end(), [&](const CopyReplica &r) {
      return r.shard == shard && r.usable;
    }));
    servers += std::max(usable, 1);
  }
  return servers;
}

// Starts the copy workers and waits for every table to be copied.
void copy_tables(const TaskRun &run, BackendTaskContext &ctx) {
  set_phase(run, "running", "copy");
  bool planned = in_transaction([&] {
    CopyCounts c = table_copy_counts(run.task.id);
    return c.waiting + c.running + c.done + c.failed > 0;
  });
  if (!planned) {
    ReshardRequest request = run.task.request(guc_parallel_copies);
    request.schema_sync = in_transaction([&] { return task_option(run.task, "schema_sync"); }) != "false";
    ReshardPlan plan = preflight(run.config, request, ctx);
    in_transaction([&] { table_copies_insert(run.task.id, plan); });
  }
  in_transaction([&] { table_copy_release_dead(run.task.id); });  // left by a crashed worker
  int workers = guc_parallel_copies * copy_servers_checked(run, ctx);
  std::vector<BackgroundWorkerHandle *> handles;
  auto launch_all = [&] {
    handles.clear();
    for (int i = 0; i < workers; i++) {
      BackgroundWorkerHandle *handle = nullptr;
      bool ok = pg_call([&] { return worker_launch("pgdog_reshard_copy_main", "pgdog_reshard copy", run.task.id, i, &handle); });
      if (!ok) {
        throw Error(sqlstate::kConfigurationLimitExceeded, "no free background worker slot for a copy worker",
                    std::to_string(handles.size()) + " of " + std::to_string(workers) + " copy workers started",
                    "Raise max_worker_processes (needs a restart) or lower pgdog_reshard.parallel_copies.");
      }
      handles.push_back(handle);
    }
  };
  // A task reports its final state only once none of its copy workers is left.
  auto stop_all = [&] {
    for (BackgroundWorkerHandle *h : handles) TerminateBackgroundWorker(h);
    for (BackgroundWorkerHandle *h : handles) pg_call([&] { return WaitForBackgroundWorkerShutdown(h); });
  };
  try {
    launch_all();
    int restarts = 0;
    for (;;) {
      // Often enough that the last copy's end is seen at once (schema post waits for it); the
      // look is one small catalog query.
      ctx.sleep_ms(100);
      CopyCounts counts = in_transaction([&] { return table_copy_counts(run.task.id); });
      if (counts.failed > 0) {
        std::string why = in_transaction([&] { return table_copy_failure(run.task.id); }).value_or("a table copy failed");
        throw Error(sqlstate::kSystemError, why);
      }
      if (counts.waiting + counts.running == 0) break;
      bool any_alive = false;
      for (BackgroundWorkerHandle *h : handles) {
        pid_t pid;
        if (GetBackgroundWorkerPid(h, &pid) != BGWH_STOPPED) any_alive = true;
      }
      if (any_alive) continue;
      // Every copy worker is gone but tables remain: a worker crashed. Free its tables and restart.
      if (++restarts > kMaxCopyWorkerRestarts) throw Error(sqlstate::kSystemError, "copy workers keep exiting");
      in_transaction([&] { table_copy_release_dead(run.task.id); });
      launch_all();
    }
  } catch (...) {
    stop_all();
    throw;
  }
}

// replicate: the plan stored with every table 'skipped' (no copy, no watermark: the stream applies
// every change from the slot's position). Pre-flight runs before the slots are made, so that the
// task's own slots do not count against the free ones it checks; a resumed task has its plan.
void replicate_without_copy(const TaskRun &run, BackendTaskContext &ctx) {
  std::optional<ReshardPlan> plan;
  if (!in_transaction([&] { return table_copies_planned(run.task.id); })) {
    set_phase(run, "running", "plan");
    plan = preflight(run.config, run.task.request(guc_parallel_copies), ctx);
  }
  create_slots(run, ctx);
  if (plan) in_transaction([&] { table_copies_insert(run.task.id, *plan, "skipped"); });
}

void drop_task_objects(const TaskRun &run);

// One stream worker per source shard, restarted (with a growing pause) whenever one exits: it
// resumes from its last confirmed position, and the apply is idempotent, so a restart loses nothing.
// Also the cutover's hooks: it stops them for the switch (and they come back if it aborts).
class StreamWorkers : public CutoverHooks {
 public:
  StreamWorkers(const TaskRun &run, BackendTaskContext &ctx)
      : run_(run), ctx_(ctx), handles_(run.config.shard_count(run.task.source), nullptr),
        backoff_ms_(handles_.size(), 1000) {}

  void start() {
    for (size_t shard = 0; shard < handles_.size(); shard++) launch(static_cast<int>(shard));
  }
  // Restarts the workers that exited (a failed connection, a crash, a cutover that aborted).
  void restart_exited() {
    for (size_t shard = 0; shard < handles_.size(); shard++) {
      pid_t pid;
      if (handles_[shard] != nullptr && GetBackgroundWorkerPid(handles_[shard], &pid) != BGWH_STOPPED) continue;
      if (handles_[shard] != nullptr) {
        log_task(run_.task.id, "stream worker of source shard " + std::to_string(shard) + " exited; restarting it");
        ctx_.sleep_ms(backoff_ms_[shard]);
        backoff_ms_[shard] = std::min(backoff_ms_[shard] * 2, 30000L);
      }
      launch(static_cast<int>(shard));
    }
  }

  void apply_sequences() override { apply_schema_phase(run_, SchemaPhase::Cutover); }
  void stop_streams() override {
    for (BackgroundWorkerHandle *h : handles_) {
      if (h != nullptr) TerminateBackgroundWorker(h);
    }
    for (BackgroundWorkerHandle *&h : handles_) {
      if (h != nullptr) pg_call([&] { return WaitForBackgroundWorkerShutdown(h); });
      h = nullptr;
    }
  }
  void drop_source_slots() override { drop_task_objects(run_); }
  void tend_streams() override { restart_exited(); }

 private:
  void launch(int shard) {
    BackgroundWorkerHandle *handle = nullptr;
    bool ok = pg_call([&] { return worker_launch("pgdog_reshard_stream_main", "pgdog_reshard stream", run_.task.id, shard, &handle); });
    if (!ok) {
      throw Error(sqlstate::kConfigurationLimitExceeded, "no free background worker slot for a stream worker", {},
                  "Raise max_worker_processes (needs a restart).");
    }
    handles_[shard] = handle;
  }

  const TaskRun &run_;
  BackendTaskContext &ctx_;
  std::vector<BackgroundWorkerHandle *> handles_;
  std::vector<long> backoff_ms_;
};

// reshard() cuts over by itself (unless pgdog_reshard.auto_cutover is off): a cutover is requested
// as soon as it streams (the cutover waits for the lag itself). An aborted one is tried again after
// a pause, kAutoCutoverAttempts times in all; after that the task keeps replicating, with the
// reason in its error, for reshard_cutover().
void request_auto_cutover(const TaskRun &run, bool &gave_up) {
  if (run.task.command != "reshard" || gave_up || !guc_auto_cutover) return;
  CutoverHistory history = in_transaction([&] { return cutover_history(run.task.id); });
  if (history.aborted >= kAutoCutoverAttempts) {
    gave_up = true;
    std::string why = "automatic cutover aborted " + std::to_string(history.aborted) +
                      " times, last: " + history.last_error + "; the task keeps replicating: call reshard_cutover(" +
                      std::to_string(run.task.id) + ") to try again";
    in_transaction([&] { task_update(run.task.id, "replicating", "streaming", why); });
    log_task(run.task.id, why);
    return;
  }
  if (history.aborted > 0 && history.seconds_since_last < kAutoCutoverRetrySeconds * history.aborted) return;
  int64_t id = in_transaction([&] { return cutover_insert(run.task.id, run.task.created_by); });
  log_task(run.task.id, "automatic cutover " + std::to_string(id) + " requested");
}

// Streams until the task is stopped (an Error) or cut over (returns). A cutover that aborts leaves
// the task replicating.
void stream_until_cut_over(const TaskRun &run, BackendTaskContext &ctx) {
  set_phase(run, "replicating", "streaming");
  StreamWorkers streams(run, ctx);
  bool gave_up = false;
  try {
    streams.start();
    for (;;) {
      ctx.sleep_ms(250);
      std::optional<CutoverRow> cutover = in_transaction([&] { return cutover_active(run.task.id); });
      if (!cutover) request_auto_cutover(run, gave_up);
      if (cutover && run_cutover(run.task, run.config, *cutover, streams, ctx) == CutoverOutcome::Done) {
        streams.stop_streams();
        set_phase(run, "done", "cut over");
        return;
      }
      streams.restart_exited();
    }
  } catch (...) {
    streams.stop_streams();  // a task reports its final state only once its stream workers are gone
    throw;
  }
}

// What the task made: slots and publications on its source cluster, and its streams' replication
// origins on the destination shards (which record how far each shard applied each stream).
void drop_task_objects(const TaskRun &run) {
  BackendTaskContext cleanup;  // no stop flag: cleanup must run even while stopping
  for (const PublicationRow &pub : in_transaction([&] { return publications_of(run.task.id); })) {
    if (pub.dropped) continue;
    try {
      drop_publication(connection_params(run.config.primary(run.task.source, pub.source_shard)), pub.name, cleanup);
      in_transaction([&] { publication_mark_dropped(run.task.id, pub.source_shard, pub.name); });
    } catch (const Error &e) {
      cleanup.log(LogLevel::Warning, "task " + std::to_string(run.task.id) + ": could not drop publication \"" +
                                         pub.name + "\": " + e.what());
    }
  }
  for (const SlotRow &slot : in_transaction([&] { return slots_of(run.task.id); })) {
    if (slot.dropped) continue;
    try {
      drop_slot(connection_params(run.config.primary(run.task.source, slot.source_shard)), slot.slot_name, cleanup);
      in_transaction([&] { slot_mark_dropped(run.task.id, slot.source_shard, slot.slot_name); });
    } catch (const Error &e) {
      cleanup.log(LogLevel::Warning, "task " + std::to_string(run.task.id) + ": could not drop replication slot \"" +
                                         slot.slot_name + "\": " + e.what());
    }
  }
  if (run.task.command == "schema_sync") return;
  for (int shard = 0; shard < run.config.shard_count(run.task.source); shard++) {
    try {
      drop_apply_origin(primaries(run.config, run.task.destination), stream_origin(run.task.id, shard), cleanup);
    } catch (const Error &e) {
      cleanup.log(LogLevel::Warning, "task " + std::to_string(run.task.id) + ": could not drop replication origin \"" +
                                         stream_origin(run.task.id, shard) + "\": " + e.what());
    }
  }
}

void run_phases(const TaskRun &run) {
  BackendTaskContext ctx(&worker_stop_requested);
  const std::string &command = run.task.command;
  if (command == "schema_sync") {
    std::string phase = in_transaction([&] { return task_option(run.task, "phase"); });
    schema_phase(run, phase == "post" ? SchemaPhase::Post : phase == "cutover" ? SchemaPhase::Cutover : SchemaPhase::Pre);
    set_phase(run, "done", phase.c_str());
    return;
  }
  // A task that reached streaming before a restart resumes there: its copies and post-data schema
  // are done, and going back through them would show it 'running' again for no reason.
  if ((command == "copy_data" || command == "reshard" || command == "replicate") && run.task.state == "replicating") {
    stream_until_cut_over(run, ctx);
    return;
  }
  if (command == "copy_data" || command == "reshard") {
    schema_phase(run, SchemaPhase::Pre);
    create_slots(run, ctx);
    copy_tables(run, ctx);
    schema_phase(run, SchemaPhase::Post);
    stream_until_cut_over(run, ctx);
    return;
  }
  if (command == "replicate") {
    replicate_without_copy(run, ctx);
    stream_until_cut_over(run, ctx);
    return;
  }
  throw Error(sqlstate::kFeatureNotSupported, "task command \"" + command + "\" is not supported by this version");
}

void run_task(int64_t task_id) {
  // The worker's pid first, then the task: a reshard_stop() committed before the pid is recorded
  // is then seen in stop_requested, and one committed after it signals this process.
  in_transaction([&] { task_set_worker(task_id, MyProcPid); });
  std::optional<TaskRow> task = in_transaction([&] { return task_load(task_id); });
  if (!task) return;
  TaskRun run{*task, task->config.parse()};
  try {
    if (task->stop_requested) throw Error(sqlstate::kQueryCanceled, "task stopped before it started");
    run_phases(run);
  } catch (const Error &e) {
    bool stopped = in_transaction([&] { return task_stop_requested(task_id); });
    if (worker_stop_requested && !stopped) {
      // A server shutdown, not a stop: leave the task as it is; it resumes when the server is back.
      log_task(task_id, "interrupted by shutdown; it resumes when the server is back");
      return;
    }
    drop_task_objects(run);
    std::string phase = in_transaction([&] { return task_load(task_id)->phase; });
    std::string why = stopped ? "stopped by reshard_stop()" : e.what();
    in_transaction([&] { task_update(task_id, stopped ? "cancelled" : "failed", phase, why); });
    log_task(task_id, std::string(stopped ? "cancelled: " : "failed: ") + why);
  }
}

}  // namespace

}  // namespace pgdog_reshard

extern "C" PGDLLEXPORT void pgdog_reshard_task_main(Datum arg) {
  using namespace pgdog_reshard;
  worker_start();
  int64_t task = DatumGetInt64(arg);
  worker_run([&] { run_task(task); });
}
