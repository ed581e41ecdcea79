// A verification run from a background worker (a verify task's, or a cutover's under
// pgdog_reshard.verify_before_cutover): each table's result is recorded in the catalog as it
// finishes, and a difference seen while a task streams is re-checked once that task's streams have
// confirmed the source positions the engine asks for.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/verify.h"
#include "extension/backend_context.h"

namespace pgdog_reshard {

struct VerifyRun {
  int64_t record_task = 0;             // verify_results rows are this task's
  std::optional<int64_t> stream_task;  // the task replicating source -> destination, if any
  bool show_phase = false;             // the record task's phase names the table being verified
  std::function<void()> while_waiting; // called while waiting for the streams (e.g. restart exited ones)
};

// Pre-flight for a verification: reads only, and asks nothing of replication (slots, origins).
ReshardPlan verify_plan(const Config &config, const std::string &source, const std::string &destination,
                        const std::string &publication, TaskContext &ctx);

std::vector<VerifyResult> run_verify(const Config &config, const std::string &source, const std::string &destination,
                                     const ReshardPlan &plan, const VerifyRun &run, BackendTaskContext &ctx);

// "2 of 12 tables differ: "public"."a": 1 missing, ... (missing: (7)); ..." or "12 tables verified,
// none differs", then the unsettled tables, if any.
std::string verify_summary(const std::vector<VerifyResult> &results);

}  // namespace pgdog_reshard
