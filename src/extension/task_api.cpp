// SQL functions that start and stop tasks. Pre-flight runs here, in the caller's session, so a bad
// request fails before any task or server object exists; the task itself runs in background workers.
#include <csignal>

#include "core/json.h"
#include "engine/cluster.h"
#include "engine/preflight.h"
#include "extension/backend_context.h"
#include "extension/boundary.h"
#include "extension/catalog.h"
#include "extension/guc.h"
#include "extension/launcher.h"
#include "extension/pg_server.h"
#include "extension/spi.h"
#include "extension/task_catalog.h"

using namespace pgdog_reshard;

namespace {

// The launcher may only look for the new task once it is committed.
// A stop is signalled once committed too, so the worker reads stop_requested = true.
bool wake_registered = false;
bool wake_at_commit = false;
int signal_at_commit = 0;

void on_xact_end(XactEvent event, void *) {
  if (event == XACT_EVENT_COMMIT) {
    if (signal_at_commit > 0) kill(signal_at_commit, SIGTERM);
    if (wake_at_commit) launcher_wake();
  }
  if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT) {
    wake_at_commit = false;
    signal_at_commit = 0;
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

int64_t start_task(const std::string &command, const ReshardRequest &request, const std::string &options_json,
                   bool full_preflight) {
  StoredConfig stored = current_stored_config();
  Config config = catalog_current_config();
  BackendTaskContext ctx;
  if (full_preflight) {
    preflight(config, request, ctx);
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
    std::string options = "{}";
    if (!PG_ARGISNULL(3)) options = "{\"slot\": " + json_string(text_arg(fcinfo, 3, "slot")) + "}";
    return Int64GetDatum(start_task("copy_data", request, options, true));
  });
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
        " WHERE a.pid = worker_pid AND a.backend_type = 'pgdog_reshard task'), 0)",
        {std::to_string(task)}, false);
    if (rows.empty()) {
      auto exists = spi.query("SELECT 1 FROM pgdog_reshard.tasks WHERE id = $1::bigint", {std::to_string(task)});
      if (exists.empty()) throw Error(sqlstate::kUndefinedObject, "task " + std::to_string(task) + " does not exist");
      return BoolGetDatum(false);
    }
    wake_launcher_at_commit();  // a task with no worker yet is cancelled by the one it gets
    signal_at_commit = std::stoi(*rows[0][0]);  // the worker then reads stop_requested and cleans up
    return BoolGetDatum(true);
  });
}

}  // extern "C"
