// A stream worker: one per source shard of a replicating task. It streams the shard's permanent
// slot into the destination shards from the last confirmed position, and records that position in
// the catalog after every destination commit, so a restarted worker resumes where it left off.
#include <chrono>
#include <cstring>

#include "engine/apply_origin.h"
#include "engine/cluster.h"
#include "engine/preflight.h"
#include "engine/replication_stream.h"
#include "extension/backend_context.h"
#include "extension/guc.h"
#include "extension/task_catalog.h"
#include "extension/transaction.h"
#include "extension/worker.h"

namespace pgdog_reshard {

namespace {

class CatalogStreamObserver : public StreamObserver {
 public:
  CatalogStreamObserver(int64_t task, int shard) : task_(task), shard_(shard) {}

  void flushed(Lsn lsn, int64_t commit_time) override {
    in_transaction([&] { slot_confirmed(task_, shard_, lsn, commit_time); });
  }

  // At most once a second: the lag needs no more, and the catalog should not take a write per message.
  void source_position(Lsn wal_end) override {
    auto now = std::chrono::steady_clock::now();
    if (wal_end <= recorded_ || now - last_write_ < std::chrono::seconds(1)) return;
    in_transaction([&] { slot_source_position(task_, shard_, wal_end); });
    recorded_ = wal_end;
    last_write_ = now;
  }

 private:
  int64_t task_;
  int shard_;
  Lsn recorded_;
  std::chrono::steady_clock::time_point last_write_;
};

// Every planned table with its watermark for this source shard; the rule comes from the task's
// configuration, exactly as the copy derived it.
std::vector<ApplyTable> apply_tables(const TaskRow &task, const Config &config, int shard) {
  std::vector<ApplyTable> tables;
  auto rules = config.rules_for(task.destination);
  for (const auto &[ordinal, watermark] : in_transaction([&] { return table_watermarks(task.id, shard); })) {
    ApplyTable table{in_transaction([&] { return table_copy_plan(task.id, ordinal); }), watermark};
    if (table.plan.key) {
      table.plan.key->rule = rule_for_table(rules, table.plan.schema, table.plan.name, table.plan.columns);
    }
    tables.push_back(std::move(table));
  }
  return tables;
}

void run_stream_worker(int64_t task_id, int shard) {
  std::optional<TaskRow> task = in_transaction([&] { return task_load(task_id); });
  if (!task) return;
  std::optional<StreamStart> start = in_transaction([&] { return slot_stream_start(task_id, shard); });
  if (!start) throw Error(sqlstate::kUndefinedObject, "task " + std::to_string(task_id) + " has no slot on source shard " + std::to_string(shard));
  Config config = task->config.parse();
  StreamRequest request;
  request.source = connection_params(config.primary(task->source, shard));
  request.slot = start->slot;
  request.publication = task->publication;
  request.start = start->lsn;
  request.tables = apply_tables(*task, config, shard);
  request.destinations = primaries(config, task->destination);
  // Exactly-once per destination shard: the origin's progress is committed with each batch there.
  // One per source shard, since an origin serves one session at a time (the applier suffixes it
  // per destination shard: see shard_origin). drop_apply_origin takes the same name.
  request.apply.origin = stream_origin(task_id, shard);
  request.apply.batch_changes = static_cast<size_t>(guc_apply_batch_changes);
  request.apply.batch_ms = guc_apply_batch_ms;
  request.apply.source = request.source;
  request.apply.source->replication = false;
  request.apply.source->application_name = "pgdog_reshard apply";
  BackendTaskContext ctx(&worker_stop_requested);
  CatalogStreamObserver observer(task_id, shard);
  pg_call([&] {
    elog(LOG, "pgdog_reshard: task %lld: streaming source shard %d from slot \"%s\" at %s, replication origin \"%s\"",
         static_cast<long long>(task_id), shard, request.slot.c_str(), request.start.to_string().c_str(),
         request.apply.origin.c_str());
  });
  stream_changes(request, observer, ctx);
}

}  // namespace

}  // namespace pgdog_reshard

extern "C" PGDLLEXPORT void pgdog_reshard_stream_main(Datum arg) {
  using namespace pgdog_reshard;
  worker_start();
  int64_t task = DatumGetInt64(arg);
  int shard = 0;
  memcpy(&shard, MyBgworkerEntry->bgw_extra, sizeof(shard));
  worker_run([&] { run_stream_worker(task, shard); });
}
