// A copy worker: claims tables of its task one at a time and copies each from every source shard
// that holds it, restarting a failed table cleanly a bounded number of times.
#include <cstring>

#include "core/config.h"
#include "engine/cluster.h"
#include "engine/preflight.h"
#include "engine/table_copy.h"
#include "extension/backend_context.h"
#include "extension/guc.h"
#include "extension/task_catalog.h"
#include "extension/transaction.h"
#include "extension/worker.h"

namespace pgdog_reshard {

namespace {

constexpr int kMaxAttempts = 3;
constexpr long kFirstBackoffMs = 1000;

// Writes a table copy's progress to the catalog, where reshard_table_copies shows it.
class CatalogCopyObserver : public TableCopyObserver {
 public:
  CatalogCopyObserver(int64_t task, int ordinal, int shard) : task_(task), ordinal_(ordinal), shard_(shard) {}
  void snapshot_taken(Lsn watermark) override {
    watermark_ = watermark;
    in_transaction([&] { table_copy_progress(task_, ordinal_, shard_, "running", 0, 0, watermark, std::nullopt); });
  }
  void progress(uint64_t rows, uint64_t bytes) override {
    in_transaction(
        [&] { table_copy_progress(task_, ordinal_, shard_, "running", rows, bytes, std::nullopt, std::nullopt); });
  }

 private:
  int64_t task_;
  int ordinal_, shard_;
  Lsn watermark_;
};

struct CopyJob {
  const TaskRow &task;
  const Config &config;
  const std::vector<ConnParams> &destinations;
  BackendTaskContext &ctx;
};

TablePlan load_plan(const CopyJob &job, int ordinal) {
  TablePlan plan = in_transaction([&] { return table_copy_plan(job.task.id, ordinal); });
  if (plan.key) {
    // The rule is derived again from the task's own configuration: the same pure function the
    // pre-flight used, so the copy routes exactly as planned.
    plan.key->rule = rule_for_table(job.config.rules_for(job.task.destination), plan.schema, plan.name, plan.columns);
  }
  return plan;
}

// At most parallel_copies copies read from one source shard at once, which is what pre-flight
// counted slots and WAL senders for. A copy holds one of the shard's permits while it reads.
class ShardPermit {
 public:
  static std::optional<ShardPermit> try_take(int64_t task, int shard) {
    for (int permit = 0; permit < guc_parallel_copies; permit++) {
      if (in_transaction([&] { return shard_permit_try(task, shard, permit); }))
        return ShardPermit(task, shard, permit);
    }
    return std::nullopt;
  }
  ShardPermit(ShardPermit &&other) noexcept : task_(other.task_), shard_(other.shard_), permit_(other.permit_) {
    other.permit_ = -1;
  }
  ~ShardPermit() {
    if (permit_ < 0) return;
    try {
      in_transaction([&] { shard_permit_release(task_, shard_, permit_); });
    } catch (...) {
      // The lock is session-level: it goes with this worker at the latest.
    }
  }

 private:
  ShardPermit(int64_t task, int shard, int permit) : task_(task), shard_(shard), permit_(permit) {}
  int64_t task_;
  int shard_;
  int permit_;
};

void copy_one_shard(const CopyJob &job, int ordinal, const TablePlan &plan, int shard) {
  ConnParams source = connection_params(job.config.primary(job.task.source, shard));
  std::string slot =
      "pgdog_reshard_copy_" + std::to_string(job.task.id) + "_" + std::to_string(ordinal) + "_" + std::to_string(shard);
  CatalogCopyObserver observer(job.task.id, ordinal, shard);
  in_transaction(
      [&] { table_copy_progress(job.task.id, ordinal, shard, "running", 0, 0, std::nullopt, std::nullopt); });
  TableCopyResult result = copy_table(plan, source, job.destinations, slot, job.ctx, &observer);
  in_transaction([&] {
    table_copy_progress(job.task.id, ordinal, shard, "done", result.rows, result.bytes, result.watermark, std::nullopt);
  });
}

void copy_every_shard(const CopyJob &job, int ordinal, const TablePlan &plan, const std::vector<int> &shards) {
  // A clean start: the table holds nothing from an earlier, interrupted attempt.
  truncate_destinations(plan, job.destinations, job.ctx);
  std::vector<int> left = shards;
  while (!left.empty()) {
    bool copied = false;
    for (auto it = left.begin(); it != left.end(); ++it) {
      std::optional<ShardPermit> permit = ShardPermit::try_take(job.task.id, *it);
      if (!permit) continue;  // that shard is busy: read another one of this table first
      copy_one_shard(job, ordinal, plan, *it);
      left.erase(it);
      copied = true;
      break;
    }
    if (!copied) job.ctx.sleep_ms(200);
  }
}

void mark_failed(const CopyJob &job, int ordinal, const std::vector<int> &shards, const std::string &state,
                 const std::string &error) {
  in_transaction([&] {
    for (int shard : shards) table_copy_progress(job.task.id, ordinal, shard, state, 0, 0, std::nullopt, error);
  });
}

// Returns false when the table failed for good (the task will fail; this worker stops claiming).
bool copy_with_retries(const CopyJob &job, int ordinal) {
  TablePlan plan = load_plan(job, ordinal);
  std::vector<int> shards = in_transaction([&] { return table_copy_shards(job.task.id, ordinal); });
  long backoff = kFirstBackoffMs;
  for (;;) {
    int attempt = in_transaction([&] { return table_copy_attempts(job.task.id, ordinal); });
    try {
      copy_every_shard(job, ordinal, plan, shards);
      return true;
    } catch (const Error &e) {
      if (worker_stop_requested) throw;
      std::string error = std::string(e.what()) + " (attempt " + std::to_string(attempt) + " of " +
                          std::to_string(kMaxAttempts) + ")";
      job.ctx.log(LogLevel::Warning, "task " + std::to_string(job.task.id) + ": " + error);
      if (attempt >= kMaxAttempts) {
        mark_failed(job, ordinal, shards, "failed", error);
        return false;
      }
      mark_failed(job, ordinal, shards, "running", error);
      job.ctx.sleep_ms(backoff);
      backoff *= 2;
      in_transaction([&] { table_copy_next_attempt(job.task.id, ordinal); });
    }
  }
}

void run_copy_worker(int64_t task_id) {
  std::optional<TaskRow> task = in_transaction([&] { return task_load(task_id); });
  if (!task) return;
  Config config = task->config.parse();
  std::vector<ConnParams> destinations = primaries(config, task->destination);
  BackendTaskContext ctx(&worker_stop_requested);
  CopyJob job{*task, config, destinations, ctx};
  while (std::optional<int> ordinal = in_transaction([&] { return table_copy_claim(task_id, MyProcPid); })) {
    if (!copy_with_retries(job, *ordinal)) return;
  }
}

}  // namespace

}  // namespace pgdog_reshard

extern "C" PGDLLEXPORT void pgdog_reshard_copy_main(Datum arg) {
  using namespace pgdog_reshard;
  worker_start();
  int64_t task = DatumGetInt64(arg);
  worker_run([&] { run_copy_worker(task); });
}
