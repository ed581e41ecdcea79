#include "extension/cutover.h"

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/config_swap.h"
#include "core/json.h"
#include "engine/cluster.h"
#include "engine/cutover_command.h"
#include "engine/cutover_steps.h"
#include "engine/proxy_admin.h"
#include "engine/slots.h"
#include "extension/catalog.h"
#include "extension/cutover_catalog.h"
#include "extension/guc.h"
#include "extension/launcher.h"
#include "extension/pg_server.h"
#include "extension/transaction.h"
#include "extension/verify_run.h"
#include "extension/worker.h"

namespace pgdog_reshard {

namespace {

using Clock = std::chrono::steady_clock;

// A context whose waits end, with Error(57014) naming what was going on, at the cutover's deadline:
// a PAUSE stuck behind a long transaction, a drain that does not finish, a hook that hangs.
class DeadlineContext : public TaskContext {
 public:
  explicit DeadlineContext(TaskContext &inner) : inner_(inner) {}

  void start(Clock::time_point deadline) { deadline_ = deadline; }
  void doing(std::string what) { doing_ = std::move(what); }
  const std::string &doing() const { return doing_; }

  void wait_socket(int fd, bool for_read, bool for_write, int timeout_ms) override {
    check_interrupts();
    if (deadline_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline_ - Clock::now()).count();
      int cap = static_cast<int>(std::max<long long>(1, left));
      timeout_ms = timeout_ms < 0 ? cap : std::min(timeout_ms, cap);
    }
    inner_.wait_socket(fd, for_read, for_write, timeout_ms);
    check_interrupts();
  }
  void check_interrupts() override {
    inner_.check_interrupts();
    if (deadline_ && Clock::now() >= *deadline_) {
      throw Error(sqlstate::kQueryCanceled,
                  "pgdog_reshard.cutover_timeout (" + std::to_string(guc_cutover_timeout_ms) + " ms) passed while " + doing_,
                  {}, "Raise pgdog_reshard.cutover_timeout, or lower pgdog_reshard.cutover_lag_threshold so that less is left "
                      "to drain once writes are paused.");
    }
  }
  void log(LogLevel level, const std::string &message) override { inner_.log(level, message); }
  void sleep_ms(int ms) { wait_socket(-1, false, false, ms); }

 private:
  TaskContext &inner_;
  std::optional<Clock::time_point> deadline_;
  std::string doing_ = "cutting over";
};

// The proxies' admin databases, as pgdog_reshard.proxy_admin names them now.
std::vector<ConnParams> configured_proxies() { return parse_proxy_admin(guc_proxy_admin ? guc_proxy_admin : ""); }

struct CreatedObject {
  int shard = 0;
  ConnParams params;
  std::string host, database_name;
  int port = 0;
  Lsn lsn;  // slots: where the reverse stream starts
};

class Cutover {
 public:
  Cutover(const TaskRow &task, const Config &config, int64_t id, CutoverHooks &hooks, BackendTaskContext &ctx)
      : task_(task), config_(config), id_(id), hooks_(hooks), ctx_(ctx), timed_(ctx),
        reverse_name_("pgdog_reshard_reverse_" + std::to_string(task.id)) {}

  CutoverOutcome run() {
    log("cutover " + std::to_string(id_) + " started: " + task_.source + " -> " + task_.destination);
    try {
      proxies_.emplace(configured_proxies(), timed_);
      wait_for_lag();
      if (guc_verify_before_cutover) {
        verify();
        wait_for_lag();  // what was written while it verified: the pause drains only the rest
      }
      pause();
      drain();
      doing("setting the destination's sequences");
      hooks_.apply_sequences();
      timed_.check_interrupts();
      prepare_reverse();
      run_hook();
      swap_config();
      doing("stopping the streams");
      hooks_.stop_streams();
      reload();
      switch_clusters();
    } catch (const Error &e) {
      abort(e);
      if (worker_stop_requested) throw;
      return CutoverOutcome::Aborted;
    }
    finish();
    return CutoverOutcome::Done;
  }

  // The worker stopped mid-cutover, before the switch: whatever it had made is undone (by name, as
  // it may not have been recorded) and traffic resumes on the source cluster.
  CutoverOutcome abort_interrupted() {
    paused_ = true;
    for (int shard = 0; shard < config_.shard_count(task_.destination); shard++) {
      const Database &db = config_.primary(task_.destination, shard);
      CreatedObject created{shard, connection_params(db), db.host, db.database_name, db.port, Lsn()};
      publications_.push_back(created);
      slots_.push_back(created);
    }
    abort(Error(sqlstate::kObjectNotInPrerequisiteState, "the task worker stopped during the cutover"));
    return CutoverOutcome::Aborted;
  }

  CutoverOutcome finish_switched(int64_t reverse_task) {
    log("cutover " + std::to_string(id_) + " was switched before the worker stopped: finishing it");
    reverse_task_ = reverse_task;
    hooks_.stop_streams();
    finish();
    return CutoverOutcome::Done;
  }

 private:
  void log(const std::string &message, LogLevel level = LogLevel::Info) {
    ctx_.log(level, "task " + std::to_string(task_.id) + ": " + message);
  }
  void doing(std::string what) { timed_.doing(std::move(what)); }

  // NOTIFY pgdog_reshard payload: {"event": ..., "task": ..., "cutover": ..., "source": ..., ...}.
  std::string payload(const std::string &event, const std::string &extra = "") const {
    return "{\"event\": " + json_string(event) + ", \"task\": " + std::to_string(task_.id) +
           ", \"cutover\": " + std::to_string(id_) + ", \"source\": " + json_string(task_.source) +
           ", \"destination\": " + json_string(task_.destination) + extra + "}";
  }

  // Every source shard's lag (its WAL position minus what its stream confirmed) under the threshold.
  void wait_for_lag() {
    in_transaction([&] { cutover_step(id_, "waiting_for_lag"); });
    std::vector<ConnParams> sources = primaries(config_, task_.source);
    for (;;) {
      ctx_.check_interrupts();
      std::vector<Lsn> at = source_positions(sources, WalPosition::Written, ctx_);
      std::vector<Lsn> confirmed = in_transaction([&] { return slot_confirmed_positions(task_.id); });
      if (confirmed.size() != at.size()) {
        throw Error(sqlstate::kObjectNotInPrerequisiteState,
                    "task " + std::to_string(task_.id) + " streams " + std::to_string(confirmed.size()) +
                        " slots for " + std::to_string(at.size()) + " source shards");
      }
      uint64_t lag = 0;
      for (size_t i = 0; i < at.size(); i++) lag = std::max(lag, at[i].bytes_since(confirmed[i]));
      if (lag <= static_cast<uint64_t>(guc_cutover_lag_threshold)) return;
      hooks_.tend_streams();  // a stream that died would otherwise keep the lag up for ever
      ctx_.sleep_ms(100);
    }
  }

  // pgdog_reshard.verify_before_cutover: the destination must equal the source before traffic is
  // paused (the streams keep applying meanwhile; a difference is re-checked once they have caught
  // up with it). The results are the task's rows in reshard_verify_results.
  void verify() {
    in_transaction([&] { cutover_step(id_, "verifying"); });
    log("cutover " + std::to_string(id_) + ": verifying before the pause");
    ReshardPlan plan = verify_plan(config_, task_.source, task_.destination, task_.publication, ctx_);
    VerifyRun run;
    run.record_task = task_.id;
    run.stream_task = task_.id;
    run.while_waiting = [&] { hooks_.tend_streams(); };
    std::vector<VerifyResult> results = run_verify(config_, task_.source, task_.destination, plan, run, ctx_);
    std::string summary = verify_summary(results);
    // Unsettled rows (changing too fast to compare while traffic flows) do not stop it: the drain
    // during the pause is what moves their last changes.
    for (const VerifyResult &r : results) {
      if (r.verdict != "differs") continue;
      throw Error(sqlstate::kObjectNotInPrerequisiteState, "verify before cutover: " + summary,
                  "pgdog_reshard.verify_before_cutover is on; the destination must equal the source before traffic is paused.",
                  "See reshard_verify_results for task " + std::to_string(task_.id) + ".");
    }
    log("cutover " + std::to_string(id_) + ": " + summary);
  }

  // From the pause signal on, the clock runs: cutover_timeout until the switch.
  void pause() {
    timed_.start(Clock::now() + std::chrono::milliseconds(guc_cutover_timeout_ms));
    doing("pausing the proxy");
    in_transaction([&] {
      cutover_step(id_, "pausing", "lag_reached_at");
      notify_proxy(payload("pause"));
    });
    paused_ = true;  // from here on an abort resumes the proxy
    proxies_->pause();
    if (guc_cutover_wait_for_ack) wait_for_ack("paused", timed_);
    in_transaction([&] { cutover_step(id_, "draining", "paused_at"); });
  }

  // Until a passive proxy acknowledged `ack`, or ctx's deadline.
  void wait_for_ack(const std::string &ack, DeadlineContext &ctx) {
    ctx.doing("waiting for reshard_cutover_ack(" + std::to_string(task_.id) + ", '" + ack + "')");
    while (!in_transaction([&] { return cutover_acked(id_, ack); })) ctx.sleep_ms(10);
  }

  // Writes have stopped: every stream must confirm its source's position as of now. (Should WAL
  // that is no commit follow the last commit and stay unflushed, the streams cannot confirm it and
  // the cutover times out: an abort, never a lost write.)
  void drain() {
    doing("draining the streams to the source's position");
    std::vector<Lsn> target = source_positions(primaries(config_, task_.source), WalPosition::Inserted, timed_);
    std::string json = "{";
    for (size_t i = 0; i < target.size(); i++) {
      json += (i ? ", " : "") + json_string(std::to_string(i)) + ": " + json_string(target[i].to_string());
    }
    in_transaction([&] { cutover_set_drain(id_, json + "}"); });
    for (;;) {
      std::vector<Lsn> confirmed = in_transaction([&] { return slot_confirmed_positions(task_.id); });
      if (all_reached(confirmed, target)) break;
      timed_.sleep_ms(10);
    }
    in_transaction([&] { cutover_step(id_, "switching", "drained_at"); });
  }

  // The new cluster's shards publish the task's tables and keep a slot each from now on: every
  // write after the resume reaches the old cluster through the reverse task.
  void prepare_reverse() {
    doing("creating the reverse replication's publications and slots");
    std::vector<std::pair<std::string, std::string>> tables = in_transaction([&] { return task_tables(task_.id); });
    for (int shard = 0; shard < config_.shard_count(task_.destination); shard++) {
      const Database &db = config_.primary(task_.destination, shard);
      CreatedObject created{shard, connection_params(db), db.host, db.database_name, db.port, Lsn()};
      create_publication(created.params, reverse_name_, tables, timed_);
      publications_.push_back(created);
      created.lsn = create_or_reuse_slot(created.params, reverse_name_, timed_);
      slots_.push_back(created);
    }
  }

  void run_hook() {
    if (guc_cutover_command == nullptr || *guc_cutover_command == '\0') return;
    doing("running pgdog_reshard.cutover_command");
    run_cutover_command(expand_cutover_command(guc_cutover_command, task_.id, task_.source, task_.destination), timed_);
  }

  // The stored configuration with the two clusters' names exchanged; with cutover_save_config,
  // written to pgdog_reshard.config_file too (the old file kept aside, and put back on abort).
  void swap_config() {
    doing("swapping the clusters in the configuration");
    std::optional<StoredConfig> current = in_transaction([&] { return catalog_load_config(); });
    if (!current) throw Error(sqlstate::kObjectNotInPrerequisiteState, "no configuration is loaded");
    stored_ = *current;
    ConfigTexts swapped = swap_cluster_names(ConfigTexts{current->pgdog_toml, current->users_toml}, task_.source,
                                             task_.destination);
    stored_.pgdog_toml = swapped.pgdog_toml;
    stored_.users_toml = swapped.users_toml;
    if (!guc_cutover_save_config) return;
    if (guc_config_file == nullptr || *guc_config_file == '\0') {
      throw Error(sqlstate::kObjectNotInPrerequisiteState,
                  "pgdog_reshard.cutover_save_config is on, but pgdog_reshard.config_file is not set", {},
                  "Set pgdog_reshard.config_file to PgDog's pgdog.toml, or turn cutover_save_config off.");
    }
    write_file_atomically(guc_config_file, stored_.pgdog_toml);
    saved_previous_ = current->pgdog_toml;
    if (guc_users_file != nullptr && *guc_users_file != '\0' && stored_.users_toml) {
      write_file_atomically(guc_users_file, *stored_.users_toml);
      saved_previous_users_ = *current->users_toml;
    }
  }

  void reload() {
    if (proxies_->empty()) return;
    doing("reloading the proxy");
    reloaded_ = true;  // an abort reloads again, with the files put back
    proxies_->reload();
    timed_.check_interrupts();
  }

  // The switch point, one catalog transaction: the swapped configuration, the reverse task with its
  // slots and publications, the cutover's state.
  void switch_clusters() {
    doing("committing the switch");
    reverse_task_ = in_transaction([&] {
      catalog_store_config(stored_, "cutover " + std::to_string(id_) + " of task " + std::to_string(task_.id));
      ReshardRequest request{task_.source, task_.destination, reverse_name_, 0};
      request.copy = false;
      std::string options = "{\"slot\": " + json_string(reverse_name_) + ", \"reverse_of\": " + std::to_string(task_.id) + "}";
      int64_t reverse = task_insert("replicate", request, options, stored_);
      for (const CreatedObject &s : slots_) slot_insert(reverse, s.shard, s.host, s.port, s.database_name, reverse_name_, s.lsn);
      for (const CreatedObject &p : publications_) publication_insert(reverse, p.shard, p.host, p.port, p.database_name, reverse_name_);
      cutover_set_reverse_task(id_, reverse);
      cutover_step(id_, "resuming", "switched_at");
      notify_proxy(payload("switch", ", \"reverse_task\": " + std::to_string(reverse)));
      return reverse;
    });
    launcher_wake();
    log("switched: " + task_.source + " is now the former " + task_.destination + "; reverse replication is task " +
        std::to_string(reverse_task_));
  }

  // After the switch nothing is undone: problems are reported, and traffic resumes whatever happens.
  void finish() {
    std::string problems;
    auto attempt = [&](const char *what, const std::function<void()> &step) {
      try {
        step();
      } catch (const Error &e) {
        problems += std::string(problems.empty() ? "" : "; ") + what + ": " + e.what();
        log(std::string("cutover ") + std::to_string(id_) + ": " + what + " failed: " + e.what(), LogLevel::Warning);
      }
    };
    BackendTaskContext cleanup;
    DeadlineContext acks(cleanup);
    acks.start(Clock::now() + std::chrono::milliseconds(guc_cutover_timeout_ms));
    if (guc_cutover_wait_for_ack) {
      attempt("waiting for the switched acknowledgement", [&] { wait_for_ack("switched", acks); });
    }
    attempt("dropping the source's slots", [&] { hooks_.drop_source_slots(); });
    attempt("resuming the proxy", [&] { ProxyAdmin(configured_proxies(), cleanup).resume(); });
    in_transaction([&] {
      cutover_step(id_, "resuming", "resumed_at");
      notify_proxy(payload("resume"));
    });
    double pause_ms = in_transaction([&] { return cutover_pause_ms(id_); });
    in_transaction([&] {
      cutover_finish(id_, "done", problems.empty() ? std::nullopt : std::optional<std::string>(problems));
      notify_proxy(payload("done", ", \"reverse_task\": " + std::to_string(reverse_task_) +
                                       ", \"pause_ms\": " + std::to_string(pause_ms)));
    });
    log("cutover " + std::to_string(id_) + " done; writes were paused for " + std::to_string(pause_ms) + " ms");
  }

  // Before the switch: traffic back on the source cluster, the new cluster's reverse objects
  // dropped, the configuration files put back; the caller keeps streaming.
  void abort(const Error &e) {
    std::string reason = e.what();
    log("cutover " + std::to_string(id_) + " aborted: " + reason, LogLevel::Warning);
    BackendTaskContext cleanup;  // no stop flag: the proxy must resume even while stopping
    auto attempt = [&](const char *what, const std::function<void()> &step) {
      try {
        step();
      } catch (const Error &failure) {
        reason += std::string("; then ") + what + " failed: " + failure.what();
      }
    };
    if (saved_previous_) attempt("restoring pgdog_reshard.config_file", [&] { write_file_atomically(guc_config_file, *saved_previous_); });
    if (saved_previous_users_) {
      attempt("restoring pgdog_reshard.users_file", [&] { write_file_atomically(guc_users_file, *saved_previous_users_); });
    }
    if (paused_) {
      attempt("resuming the proxy", [&] {
        ProxyAdmin proxies(configured_proxies(), cleanup);
        if (reloaded_) proxies.reload();
        proxies.resume();
      });
    }
    for (const CreatedObject &s : slots_) attempt("dropping a reverse slot", [&] { drop_slot(s.params, reverse_name_, cleanup); });
    for (const CreatedObject &p : publications_) {
      attempt("dropping a reverse publication", [&] { drop_publication(p.params, reverse_name_, cleanup); });
    }
    in_transaction([&] {
      if (paused_) cutover_step(id_, "aborted", "resumed_at");
      cutover_finish(id_, "aborted", reason);
      notify_proxy(payload("abort", ", \"reason\": " + json_string(reason)));
    });
  }

  const TaskRow &task_;
  const Config &config_;
  int64_t id_;
  CutoverHooks &hooks_;
  BackendTaskContext &ctx_;
  DeadlineContext timed_;
  std::string reverse_name_;
  std::optional<ProxyAdmin> proxies_;
  StoredConfig stored_;
  std::optional<std::string> saved_previous_;
  std::optional<std::string> saved_previous_users_;
  std::vector<CreatedObject> publications_, slots_;
  bool paused_ = false, reloaded_ = false;
  int64_t reverse_task_ = 0;
};

}  // namespace

CutoverOutcome run_cutover(const TaskRow &task, const Config &config, const CutoverRow &cutover, CutoverHooks &hooks,
                           BackendTaskContext &ctx) {
  Cutover run(task, config, cutover.id, hooks, ctx);
  if (cutover.state == "resuming") return run.finish_switched(cutover.reverse_task);
  if (cutover.state == "pausing" || cutover.state == "draining" || cutover.state == "switching") {
    return run.abort_interrupted();
  }
  return run.run();
}

}  // namespace pgdog_reshard
