#include "extension/verify_task.h"

#include <cstddef>
#include <vector>

#include "extension/backend_context.h"
#include "extension/boundary.h"
#include "extension/catalog.h"
#include "extension/pg_server.h"
#include "extension/task_catalog.h"
#include "extension/transaction.h"
#include "extension/verify_catalog.h"
#include "extension/verify_run.h"
#include "extension/worker.h"

namespace pgdog_reshard {

namespace {

// The segment: filled by the caller (args) and by the worker (task id, or its error).
struct VerifyShared {
  int64 task_id;  // 0 until the task row is committed
  char sqlstate[6];
  char message[2048];
  char detail[2048];
  char hint[1024];
  uint32 args_size;
  char args[1];  // source, destination, publication, calling role: each NUL-terminated
};

constexpr size_t kArgsOffset = offsetof(VerifyShared, args);

std::vector<std::string> unpack_args(const VerifyShared &shared) {
  std::vector<std::string> out;
  const char *p = shared.args;
  const char *end = shared.args + shared.args_size;
  while (p < end) {
    out.emplace_back(p);
    p += out.back().size() + 1;
  }
  return out;
}

void store_error(VerifyShared &shared, const Error &e) {
  strlcpy(shared.sqlstate, e.sqlstate().c_str(), sizeof(shared.sqlstate));
  strlcpy(shared.message, e.what(), sizeof(shared.message));
  strlcpy(shared.detail, e.detail().c_str(), sizeof(shared.detail));
  strlcpy(shared.hint, e.hint().c_str(), sizeof(shared.hint));
}

// The worker's part. Pre-flight comes first, so bad input leaves no task behind.
void verify_task_body(VerifyShared &shared) {
  std::vector<std::string> args = unpack_args(shared);
  if (args.size() != 4) throw Error(sqlstate::kInternalError, "reshard_verify's worker got " + std::to_string(args.size()) + " arguments");
  const std::string &source = args[0], &destination = args[1], &publication = args[2], &caller = args[3];
  std::optional<StoredConfig> stored = in_transaction([] { return catalog_load_config(); });
  if (!stored) in_transaction([] { catalog_current_config(); });  // throws the "no configuration" error
  Config config = stored->parse();
  BackendTaskContext ctx(&worker_stop_requested);
  ReshardPlan plan = verify_plan(config, source, destination, publication, ctx);

  ReshardRequest request{source, destination, publication, 0};
  VerifyRun run;
  run.show_phase = true;
  run.record_task = in_transaction([&] {
    int64_t id = task_insert("verify", request, "{\"tables\": " + std::to_string(plan.tables.size()) + "}", *stored, caller);
    task_set_worker(id, MyProcPid);
    task_update(id, "running", "starting");
    return id;
  });
  shared.task_id = run.record_task;
  try {
    run.stream_task = in_transaction([&] { return replicating_task(source, destination); });
    std::vector<VerifyResult> results = run_verify(config, source, destination, plan, run, ctx);
    in_transaction([&] { task_update(run.record_task, "done", verify_summary(results)); });
  } catch (const Error &e) {
    bool stopped = worker_stop_requested || in_transaction([&] { return task_stop_requested(run.record_task); });
    std::string why = stopped ? "stopped before it finished" : e.what();
    in_transaction([&] { task_update(run.record_task, stopped ? "cancelled" : "failed", "verify", why); });
    if (stopped) {
      throw Error(sqlstate::kQueryCanceled, "verify task " + std::to_string(run.record_task) + " was stopped", {},
                  "Its results so far are in reshard_verify_results.");
    }
    throw;
  }
}

}  // namespace

int64_t verify_in_worker(const std::string &source, const std::string &destination, const std::string &publication) {
  std::string packed;
  for (const std::string &arg : {source, destination, publication, calling_role()}) {
    packed += arg;
    packed.push_back('\0');
  }
  dsm_segment *segment = pg_call([&] { return dsm_create(kArgsOffset + packed.size() + 1, 0); });
  auto *shared = static_cast<VerifyShared *>(dsm_segment_address(segment));
  memset(shared, 0, kArgsOffset);
  memcpy(shared->args, packed.data(), packed.size());
  shared->args_size = static_cast<uint32>(packed.size());

  BackgroundWorkerHandle *handle = nullptr;
  bool started = pg_call([&] {
    // The worker works in this database (its index is the database's oid), whatever
    // pgdog_reshard.database_name says: the caller reads the results here.
    return worker_launch("pgdog_reshard_verify_main", "pgdog_reshard verify", dsm_segment_handle(segment),
                         static_cast<int>(MyDatabaseId), &handle, "pgdog_reshard verify");
  });
  if (!started) {
    throw Error(sqlstate::kConfigurationLimitExceeded, "no free background worker slot to run reshard_verify",
                "max_worker_processes = " + std::to_string(max_worker_processes) + ".",
                "Try again when a task has ended, or raise max_worker_processes (needs a restart).");
  }
  try {
    pg_call([&] { (void)WaitForBackgroundWorkerShutdown(handle); });
  } catch (...) {
    TerminateBackgroundWorker(handle);  // a cancel of the caller stops the verification
    throw;
  }
  pg_memory_barrier();
  int64_t task = shared->task_id;
  std::optional<Error> failure;
  if (shared->sqlstate[0] != '\0') failure.emplace(shared->sqlstate, shared->message, shared->detail, shared->hint);
  pg_call([&] { dsm_detach(segment); });
  if (failure) throw *failure;
  if (task == 0) throw Error(sqlstate::kInternalError, "the reshard_verify worker exited before it made its task");
  return task;
}

}  // namespace pgdog_reshard

extern "C" PGDLLEXPORT void pgdog_reshard_verify_main(Datum arg) {
  using namespace pgdog_reshard;
  Oid database = InvalidOid;
  memcpy(&database, MyBgworkerEntry->bgw_extra, sizeof(database));
  worker_start(database);
  dsm_segment *segment = dsm_attach(DatumGetUInt32(arg));
  if (segment == nullptr) proc_exit(0);  // the caller is gone already
  auto *shared = static_cast<VerifyShared *>(dsm_segment_address(segment));
  worker_run([&] {
    try {
      verify_task_body(*shared);
    } catch (const Error &e) {
      store_error(*shared, e);
    } catch (const std::exception &e) {
      store_error(*shared, Error(sqlstate::kInternalError, e.what()));
    }
    pg_write_barrier();
  });
}
