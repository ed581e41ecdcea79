#include "extension/verify_run.h"

#include <chrono>

#include "core/sql.h"
#include "engine/preflight.h"
#include "extension/task_catalog.h"
#include "extension/transaction.h"
#include "extension/verify_catalog.h"

namespace pgdog_reshard {

namespace {

// A stream that has not applied a position by then will not soon: what still differs is reported
// (and the log says the stream was behind).
constexpr auto kAppliedWait = std::chrono::seconds(120);

class RecordingObserver : public VerifyObserver {
 public:
  RecordingObserver(const VerifyRun &run, size_t tables) : run_(run), tables_(tables) {}

  void table_started(const TablePlan &table) override {
    ordinal_++;
    if (!run_.show_phase) return;
    std::string phase = "verifying " + quote_qualified(table.schema, table.name) + " (" + std::to_string(ordinal_) +
                        " of " + std::to_string(tables_) + ")";
    in_transaction([&] { task_update(run_.record_task, "running", phase); });
  }
  void table_finished(const VerifyResult &result) override {
    in_transaction([&] { verify_result_record(run_.record_task, ordinal_, result); });
  }

 private:
  const VerifyRun &run_;
  size_t tables_;
  int ordinal_ = 0;
};

// Returns once the stream task has confirmed every source shard's position in `positions`, or it
// stopped streaming, or kAppliedWait passed.
void wait_until_applied(const VerifyRun &run, const std::vector<Lsn> &positions, BackendTaskContext &ctx) {
  auto deadline = std::chrono::steady_clock::now() + kAppliedWait;
  for (;;) {
    std::vector<Lsn> confirmed = in_transaction([&] { return slot_confirmed_positions(*run.stream_task); });
    if (confirmed.size() != positions.size()) return;  // its slots are gone: it no longer streams
    if (all_reached(confirmed, positions)) return;
    if (std::chrono::steady_clock::now() > deadline) {
      ctx.log(LogLevel::Warning, "task " + std::to_string(*run.stream_task) + " has not applied the source's changes in " +
                                     std::to_string(kAppliedWait.count()) + " s; the differences it may still apply are reported");
      return;
    }
    if (run.while_waiting) run.while_waiting();
    ctx.sleep_ms(100);
  }
}

}  // namespace

ReshardPlan verify_plan(const Config &config, const std::string &source, const std::string &destination,
                        const std::string &publication, TaskContext &ctx) {
  ReshardRequest request{source, destination, publication, 0};
  request.copy = false;       // the destination tables must exist; their rows are what is checked
  request.replicate = false;  // reads only
  return preflight(config, request, ctx);
}

std::vector<VerifyResult> run_verify(const Config &config, const std::string &source, const std::string &destination,
                                     const ReshardPlan &plan, const VerifyRun &run, BackendTaskContext &ctx) {
  in_transaction([&] { verify_results_clear(run.record_task); });
  RecordingObserver observer(run, plan.tables.size());
  VerifyOptions options;
  if (run.stream_task) {
    options.wait_applied = [&](const std::vector<Lsn> &positions) { wait_until_applied(run, positions, ctx); };
  }
  return verify_tables(config, source, destination, plan, observer, ctx, options);
}

std::string verify_summary(const std::vector<VerifyResult> &results) {
  std::string differing, unsettled;
  size_t count = 0;
  for (const VerifyResult &r : results) {
    if (r.verdict == "unsettled") {
      unsettled += (unsettled.empty() ? "" : ", ") + quote_qualified(r.schema, r.table) + " (" +
                   std::to_string(r.changing_rows) + " rows kept changing)";
    }
    if (r.verdict != "differs") continue;
    count++;
    if (count > 5) continue;  // the rest are in reshard_verify_results
    differing += (differing.empty() ? "" : "; ") + quote_qualified(r.schema, r.table) + ": " +
                 std::to_string(r.missing) + " missing, " + std::to_string(r.extra) + " extra, " +
                 std::to_string(r.differing) + " differing, " + std::to_string(r.misplaced) + " misplaced";
    if (r.unresolved_rows > 0) differing += ", " + std::to_string(r.unresolved_rows) + " unresolved";
    std::string examples = r.examples_text();
    if (!examples.empty()) differing += " (" + examples + ")";
  }
  std::string out = count == 0 ? std::to_string(results.size()) + " tables verified, none differs"
                               : std::to_string(count) + " of " + std::to_string(results.size()) +
                                     " tables differ: " + differing;
  if (!unsettled.empty()) out += "; unsettled: " + unsettled;
  return out;
}

}  // namespace pgdog_reshard
