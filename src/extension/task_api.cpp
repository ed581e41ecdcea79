// SQL functions that start and stop tasks. Pre-flight runs here, in the caller's session, so a bad
// request fails before any task or server object exists; the task itself runs in background workers.
#include <csignal>

#include "core/json.h"
#include "engine/cluster.h"
#include "engine/copy_replicas.h"
#include "engine/preflight.h"
#include "extension/backend_context.h"
#include "extension/boundary.h"
#include "extension/catalog.h"
#include "extension/cutover_catalog.h"
#include "extension/guc.h"
#include "extension/launcher.h"
#include "extension/pg_server.h"
#include "extension/spi.h"
#include "extension/task_catalog.h"
#include "extension/verify_task.h"

using namespace pgdog_reshard;

namespace {

// The launcher may only look for the new task once it is committed.
// A stop is signalled once committed too, so the worker reads stop_requested = true.
// A cutover request wakes the task's worker (SIGUSR1 sets a background worker's latch).
bool wake_registered = false;
bool wake_at_commit = false;
int signal_at_commit = 0;
int signal_number = SIGTERM;

void on_xact_end(XactEvent event, void *) {
  if (event == XACT_EVENT_COMMIT) {
    if (signal_at_commit > 0) kill(signal_at_commit, signal_number);
    if (wake_at_commit) launcher_wake();
  }
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT) {
    wake_at_commit = false;
    signal_at_commit = 0;
    signal_number = SIGTERM;
  }
}

void wake_launcher_at_commit() {
  if (!wake_registered) {
    pg_call([] { RegisterXactCallback(on_xact_end, nullptr); });
    wake_registered = true;
  }
  wake_at_commit = true;
}

std::string text_arg(FunctionCallInfo fcinfo, int n, const char *name) {
  if (PG_ARGISNULL(n)) {
    throw Error(sqlstate::kNullValueNotAllowed, std::string(name) + " must not be null");
  }
  char *value = pg_call([&] { return text_to_cstring(PG_GETARG_TEXT_PP(n)); });
  return value;
}

ReshardRequest request_args(FunctionCallInfo fcinfo) {
  return ReshardRequest{text_arg(fcinfo, 0, "source"), text_arg(fcinfo, 1, "destination"),
                        text_arg(fcinfo, 2, "publication"), guc_parallel_copies};
}

StoredConfig current_stored_config() {
  std::optional<StoredConfig> stored = catalog_load_config();
  if (!stored) catalog_current_config();  // throws the "no configuration" error with its hint
  return *stored;
}

// Both clusters known, distinct and reachable: what every task needs before it is created.
void check_clusters(const Config &config, const ReshardRequest &request, TaskContext &ctx) {
  for (const std::string *name : {&request.source, &request.destination}) {
    if (!config.has_cluster(*name)) {
      throw Error(sqlstate::kUndefinedObject, "database \"" + *name + "\" is not in the configuration", {},
                  "Check reshard_databases for the configured names.");
    }
  }
  if (request.source == request.destination) {
    throw Error(sqlstate::kInvalidParameterValue, "source and destination are the same database \"" + request.source + "\"");
  }
  for (const std::string *name : {&request.source, &request.destination}) {
    for (const ConnParams &params : primaries(config, *name)) Connection(params, ctx);
  }
}

// One task at a time per cluster: a second copy or stream into or out of a cluster that a task is
// already moving would fight over its slots, its tables and, at the cutover, its configuration.
// Tasks asked to stop do not count. The lock makes concurrent calls take turns, so two cannot both
// find the cluster free; it is held until the caller's transaction ends.
void refuse_busy_clusters(const ReshardRequest &request) {
  SpiSession spi;
  spi.query("SELECT pg_catalog.pg_advisory_xact_lock(7450023710580109633)", {}, false);  // 'pgdog_reshard tasks'
  auto rows = spi.query(
      "SELECT id, command, source, destination, state, CASE WHEN source IN ($1, $2) THEN source ELSE destination END"
      " FROM pgdog_reshard.tasks WHERE command IN ('copy_data', 'replicate', 'reshard')"
      " AND state NOT IN ('done', 'failed', 'cancelled') AND NOT stop_requested"
      " AND (source IN ($1, $2) OR destination IN ($1, $2)) ORDER BY id LIMIT 1",
      {request.source, request.destination}, false);
  if (rows.empty()) return;
  const SpiRow &r = rows[0];
  throw Error(sqlstate::kObjectInUse, "cluster \"" + *r[5] + "\" is already being resharded by task " + *r[0],
              "Task " + *r[0] + " (" + *r[1] + " " + *r[2] + " -> " + *r[3] + ") is " + *r[4] + ".",
              "Wait for it to end, cut it over, or stop it with reshard_stop(" + *r[0] + ").");
}

// A copy task records whether it creates the destination schema (pgdog_reshard.schema_sync as
// the caller had it), for its worker, which does not see the caller's settings.
std::string copy_options(const std::string &slot_json) {
  std::string options = slot_json;
  if (!guc_schema_sync) options += std::string(options.empty() ? "" : ", ") + "\"schema_sync\": false";
  return "{" + options + "}";
}

int64_t start_task(const std::string &command, ReshardRequest request, const std::string &options_json,
                   bool full_preflight) {
  if (command != "schema_sync") refuse_busy_clusters(request);
  StoredConfig stored = current_stored_config();
  Config config = catalog_current_config();
  BackendTaskContext ctx;
  if (full_preflight) {
    request.schema_sync = guc_schema_sync;
    preflight(config, request, ctx);
    // Replicas that cannot serve are reported to the caller now (and fail the call when a shard
    // has none left); the task checks them again when its copy starts.
    if (request.copy) check_copy_replicas(config, request.source, guc_replica_max_lag, ctx);
  } else {
    check_clusters(config, request, ctx);
  }
  int64_t id = task_insert(command, request, options_json, stored);
  wake_launcher_at_commit();
  pg_call([&] { elog(LOG, "pgdog_reshard: task %lld created: %s %s -> %s (publication %s)", static_cast<long long>(id),
                     command.c_str(), request.source.c_str(), request.destination.c_str(), request.publication.c_str()); });
  return id;
}

}  // namespace

extern "C" {

PG_FUNCTION_INFO_V1(reshard_schema_sync);
Datum reshard_schema_sync(PG_FUNCTION_ARGS) {
  return cpp_entry([&]() -> Datum {
    ReshardRequest request = request_args(fcinfo);
    std::string phase = PG_ARGISNULL(3) ? "pre" : text_arg(fcinfo, 3, "phase");
    if (phase != "pre" && phase != "post" && phase != "cutover") {
      throw Error(sqlstate::kInvalidParameterValue, "schema sync phase \"" + phase + "\" is not supported", {},
                  "Use 'pre' (before the copy), 'post' (after it) or 'cutover' (sequences, while writes are paused).");
    }
    return Int64GetDatum(start_task("schema_sync", request, "{\"phase\": " + json_string(phase) + "}", false));
  });
}

PG_FUNCTION_INFO_V1(reshard_copy_data);
Datum reshard_copy_data(PG_FUNCTION_ARGS) {
  return cpp_entry([&]() -> Datum {
    ReshardRequest request = request_args(fcinfo);
    std::string slot;
    if (!PG_ARGISNULL(3)) slot = "\"slot\": " + json_string(text_arg(fcinfo, 3, "slot"));
    return Int64GetDatum(start_task("copy_data", request, copy_options(slot), true));
  });
}

// The whole reshard in one call: pre-flight here, then the task id is returned at once; the task
// runs schema pre, the copies, schema post, streaming, and cuts over by itself as soon as the lag
// allows (see reshard_status and reshard_cutover; reshard_wait() waits for the end).
PG_FUNCTION_INFO_V1(reshard);
Datum reshard(PG_FUNCTION_ARGS) {
  return cpp_entry([&]() -> Datum { return Int64GetDatum(start_task("reshard", request_args(fcinfo), copy_options(""), true)); });
}

// Streams the source into destination tables that already hold what they should (a previous copy,
// a restore, logical replicas needing no initial sync): no schema sync, no copy. Pre-flight as for
// a copy, except that every destination table must exist (its rows are left as they are).
PG_FUNCTION_INFO_V1(reshard_replicate);
Datum reshard_replicate(PG_FUNCTION_ARGS) {
  return cpp_entry([&]() -> Datum {
    ReshardRequest request = request_args(fcinfo);
    request.copy = false;
    request.parallel_copies = 0;  // one permanent slot per source shard, no temporary ones
    std::string options = "{}";
    if (!PG_ARGISNULL(3)) options = "{\"slot\": " + json_string(text_arg(fcinfo, 3, "slot")) + "}";
    return Int64GetDatum(start_task("replicate", request, options, true));
  });
}

// Asks a task to stop: its workers stop within seconds, the slots it made are dropped, and it ends
// 'cancelled'. False if the task had already ended.
PG_FUNCTION_INFO_V1(reshard_stop);
Datum reshard_stop(PG_FUNCTION_ARGS) {
  int64 task = PG_GETARG_INT64(0);
  return cpp_entry([&]() -> Datum {
    SpiSession spi;
    auto rows = spi.query(
        "UPDATE pgdog_reshard.tasks SET stop_requested = true, updated_at = now() WHERE id = $1::bigint"
        " AND state NOT IN ('done', 'failed', 'cancelled') RETURNING coalesce((SELECT a.pid FROM pg_stat_activity a"
        " WHERE a.pid = worker_pid AND a.backend_type IN ('pgdog_reshard task', 'pgdog_reshard verify')), 0)",
        {std::to_string(task)}, false);
    if (rows.empty()) {
      auto exists = spi.query("SELECT 1 FROM pgdog_reshard.tasks WHERE id = $1::bigint", {std::to_string(task)});
      if (exists.empty()) throw Error(sqlstate::kUndefinedObject, "task " + std::to_string(task) + " does not exist");
      return BoolGetDatum(false);
    }
    wake_launcher_at_commit();  // a task with no worker yet is cancelled by the one it gets
    signal_at_commit = std::stoi(*rows[0][0]);  // the worker then reads stop_requested and cleans up
    signal_number = SIGTERM;
    return BoolGetDatum(true);
  });
}

// reshard_verify's worker, waited for here (reshard_verify reads the results it recorded).
PG_FUNCTION_INFO_V1(pgdog_reshard_verify_task);
Datum pgdog_reshard_verify_task(PG_FUNCTION_ARGS) {
  return cpp_entry([&]() -> Datum {
    ReshardRequest request = request_args(fcinfo);
    current_stored_config();  // the "no configuration" error, before any worker starts
    return Int64GetDatum(verify_in_worker(request.source, request.destination, request.publication));
  });
}

// The task to cut over: the one given, or the only replicating one. It must be replicating.
int64_t cutover_task(FunctionCallInfo fcinfo) {
  SpiSession spi;
  if (PG_ARGISNULL(0)) {
    auto rows = spi.query("SELECT id FROM pgdog_reshard.tasks WHERE state = 'replicating' ORDER BY id");
    if (rows.empty()) {
      throw Error(sqlstate::kObjectNotInPrerequisiteState, "no task is replicating", {},
                  "Start one with reshard_copy_data() or reshard_replicate(), and cut over once reshard_status shows it "
                  "replicating.");
    }
    if (rows.size() > 1) {
      std::string ids;
      for (const SpiRow &r : rows) ids += (ids.empty() ? "" : ", ") + *r[0];
      throw Error(sqlstate::kInvalidParameterValue, "several tasks are replicating: " + ids, {},
                  "Name the task: SELECT reshard_cutover(<task id>).");
    }
    return std::stoll(*rows[0][0]);
  }
  int64_t task = PG_GETARG_INT64(0);
  auto rows = spi.query("SELECT state, coalesce(phase, '') FROM pgdog_reshard.tasks WHERE id = $1::bigint",
                        {std::to_string(task)});
  if (rows.empty()) throw Error(sqlstate::kUndefinedObject, "task " + std::to_string(task) + " does not exist");
  if (*rows[0][0] != "replicating") {
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "task " + std::to_string(task) + " is not replicating (state " + *rows[0][0] + ", phase " + *rows[0][1] + ")",
                {}, "A task can be cut over once it streams: wait for reshard_status to show it replicating.");
  }
  return task;
}

// Asks a replicating task's worker to cut over; returns the cutover's id at once (pg_cron safe).
// Progress, pause_ms and the outcome (an abort's reason) are in the reshard_cutover view.
PG_FUNCTION_INFO_V1(reshard_cutover);
Datum reshard_cutover(PG_FUNCTION_ARGS) {
  return cpp_entry([&]() -> Datum {
    int64_t task = cutover_task(fcinfo);
    int64_t id = cutover_insert(task);
    SpiSession spi;
    auto worker = spi.query(
        "SELECT coalesce((SELECT a.pid FROM pg_stat_activity a WHERE a.pid = t.worker_pid"
        " AND a.backend_type = 'pgdog_reshard task'), 0) FROM pgdog_reshard.tasks t WHERE t.id = $1::bigint",
        {std::to_string(task)});
    wake_launcher_at_commit();
    signal_at_commit = std::stoi(*worker.at(0)[0]);
    signal_number = SIGUSR1;
    pg_call([&] { elog(LOG, "pgdog_reshard: task %lld: cutover %lld requested", static_cast<long long>(task),
                       static_cast<long long>(id)); });
    return Int64GetDatum(id);
  });
}

// A passive proxy's acknowledgement of a cutover signal ('paused' after pause, 'switched' after switch).
PG_FUNCTION_INFO_V1(reshard_cutover_ack);
Datum reshard_cutover_ack(PG_FUNCTION_ARGS) {
  int64 task = PG_GETARG_INT64(0);
  return cpp_entry([&]() -> Datum {
    std::string state = text_arg(fcinfo, 1, "state");
    if (state != "paused" && state != "switched") {
      throw Error(sqlstate::kInvalidParameterValue, "cutover acknowledgement \"" + state + "\" is not known", {},
                  "Acknowledge 'paused' once the proxy holds new writes, and 'switched' once it routes to the new cluster.");
    }
    if (!cutover_ack(task, state)) {
      throw Error(sqlstate::kObjectNotInPrerequisiteState, "task " + std::to_string(task) + " has no cutover in progress");
    }
    PG_RETURN_VOID();
  });
}

}  // extern "C"
