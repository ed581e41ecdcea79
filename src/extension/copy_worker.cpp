// A copy worker: claims tables of its task one at a time and copies each from every source shard
// that holds it, restarting a failed table cleanly a bounded number of times.
#include <cstring>

#include "core/config.h"
#include "core/error.h"
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

// Writes a table copy's progress to the catalog, where reshard_table_copies shows it, and a
// primary's temporary slot, where reshard_replication_slots shows it (a standby's copy takes none).
class CatalogCopyObserver : public TableCopyObserver {
 public:
  CatalogCopyObserver(int64_t task, int ordinal, int shard, const Database &server, std::string slot, bool with_slot)
      : task_(task), ordinal_(ordinal), shard_(shard), server_(server), slot_(std::move(slot)), with_slot_(with_slot) {}
  ~CatalogCopyObserver() override {
    if (!slot_taken_) return;
    try {
      in_transaction([&] { slot_mark_dropped(task_, shard_, slot_); });  // it went with the copy's session
    } catch (...) {
      // a worker that is going away: table_copy_release_dead records it
    }
  }
  void snapshot_taken(Lsn watermark) override {
    in_transaction([&] {
      table_copy_progress(task_, ordinal_, shard_, "running", 0, 0, watermark, std::nullopt);
      if (with_slot_) copy_slot_insert(task_, shard_, server_.host, server_.port, server_.database_name, slot_, watermark);
    });
    slot_taken_ = with_slot_;
  }
  void progress(uint64_t rows, uint64_t bytes) override {
    in_transaction(
        [&] { table_copy_progress(task_, ordinal_, shard_, "running", rows, bytes, std::nullopt, std::nullopt); });
  }

 private:
  int64_t task_;
  int ordinal_, shard_;
  const Database &server_;
  std::string slot_;
  bool with_slot_;
  bool slot_taken_ = false;
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

// A server a source shard's copies can read: 0 is the shard's primary, 1 + i its copy replica i.
struct CopyServer {
  int number;
  const Database *db;
  bool replica() const { return number > 0; }
};

// The shard's usable replicas that no copy has lost; the primary only when there are none (none
// configured, or every one lost mid-copy).
std::vector<CopyServer> copy_servers(const CopyJob &job, int shard) {
  std::vector<const Database *> replicas = job.config.copy_replicas(job.task.source, shard);
  std::vector<CopyServer> out;
  for (int i : in_transaction([&] { return copy_replicas_usable(job.task.id, shard); })) {
    if (i < static_cast<int>(replicas.size())) out.push_back({1 + i, replicas[static_cast<size_t>(i)]});
  }
  if (out.empty()) out.push_back({0, &job.config.primary(job.task.source, shard)});
  return out;
}

// At most parallel_copies copies read from one server at once (what pre-flight counted a
// primary's slots and WAL senders for). A copy holds one of its server's permits while it reads.
class SourcePermit {
 public:
  static std::optional<SourcePermit> try_take(int64_t task, int shard, const CopyServer &server, int permit) {
    if (!in_transaction([&] { return source_permit_try(task, shard, server.number, permit); })) return std::nullopt;
    return SourcePermit(task, shard, server, permit);
  }
  SourcePermit(SourcePermit &&other) noexcept
      : task_(other.task_), shard_(other.shard_), server_(other.server_), permit_(other.permit_) {
    other.permit_ = -1;
  }
  ~SourcePermit() {
    if (permit_ < 0) return;
    try {
      in_transaction([&] { source_permit_release(task_, shard_, server_.number, permit_); });
    } catch (...) {
      // The lock is session-level: it goes with this worker at the latest.
    }
  }
  const CopyServer &server() const { return server_; }

 private:
  SourcePermit(int64_t task, int shard, const CopyServer &server, int permit)
      : task_(task), shard_(shard), server_(server), permit_(permit) {}
  int64_t task_;
  int shard_;
  CopyServer server_;
  int permit_;
};

// A free permit on one of the shard's servers. Each server's first permit is tried before any
// server's second, so that copies spread over the replicas rather than fill one first.
std::optional<SourcePermit> take_permit(const CopyJob &job, int shard) {
  std::vector<CopyServer> servers = copy_servers(job, shard);
  for (int permit = 0; permit < guc_parallel_copies; permit++) {
    for (const CopyServer &server : servers) {
      if (std::optional<SourcePermit> taken = SourcePermit::try_take(job.task.id, shard, server, permit)) return taken;
    }
  }
  return std::nullopt;
}

void copy_one_shard(const CopyJob &job, int ordinal, const TablePlan &plan, int shard, const CopyServer &server) {
  ConnParams source = connection_params(*server.db);
  std::optional<StandbySource> standby;
  if (server.replica()) {
    std::optional<StreamStart> stream = in_transaction([&] { return slot_stream_start(job.task.id, shard); });
    if (!stream) throw Error(sqlstate::kInternalError, "source shard " + std::to_string(shard) + " has no stream slot");
    standby = StandbySource{stream->lsn};
  }
  std::string slot =
      "pgdog_reshard_copy_" + std::to_string(job.task.id) + "_" + std::to_string(ordinal) + "_" + std::to_string(shard);
  CatalogCopyObserver observer(job.task.id, ordinal, shard, *server.db, slot, !server.replica());
  in_transaction([&] {
    table_copy_source(job.task.id, ordinal, shard, server.db->host, server.db->port);
    table_copy_progress(job.task.id, ordinal, shard, "running", 0, 0, std::nullopt, std::nullopt);
  });
  TableCopyResult result =
      copy_table(plan, source, job.destinations, slot, job.ctx, &observer, standby ? &*standby : nullptr);
  in_transaction([&] {
    table_copy_progress(job.task.id, ordinal, shard, "done", result.rows, result.bytes, result.watermark, std::nullopt);
  });
}

// A replica that went away mid-copy: no copy reads it again in this task, and this one is tried
// again at once elsewhere. A copy whose source fails has committed nothing on any destination
// (the source is done with before the destinations commit), so the retry needs no truncate, and
// it costs none of the table's attempts.
bool replica_lost(const CopyJob &job, int ordinal, int shard, const CopyServer &server, const Error &e) {
  if (!server.replica() || worker_stop_requested || !lost_the_source(e)) return false;
  std::string why = std::string("lost during a copy: ") + e.what();
  job.ctx.log(LogLevel::Warning, "task " + std::to_string(job.task.id) + ": replica " + server.db->host + ":" +
                                     std::to_string(server.db->port) + " " + why + "; its copies go elsewhere");
  in_transaction([&] {
    copy_replica_lost(job.task.id, shard, server.number - 1, why);
    table_copy_progress(job.task.id, ordinal, shard, "running", 0, 0, std::nullopt, e.what());
  });
  return true;
}

void copy_every_shard(const CopyJob &job, int ordinal, const TablePlan &plan, const std::vector<int> &shards) {
  // A clean start: the table holds nothing from an earlier, interrupted attempt.
  truncate_destinations(plan, job.destinations, job.ctx);
  std::vector<int> left = shards;
  while (!left.empty()) {
    bool progressed = false;
    for (auto it = left.begin(); it != left.end(); ++it) {
      std::optional<SourcePermit> permit = take_permit(job, *it);
      if (!permit) continue;  // that shard's servers are busy: read another one of this table first
      try {
        copy_one_shard(job, ordinal, plan, *it, permit->server());
      } catch (const Error &e) {
        if (!replica_lost(job, ordinal, *it, permit->server(), e)) throw;
        progressed = true;
        break;
      }
      left.erase(it);
      progressed = true;
      break;
    }
    if (!progressed) job.ctx.sleep_ms(200);
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
