// Cutover end to end, with a real PgBouncer (transaction pooling) as the proxy: clients route each
// write by the sharding hash to PgBouncer databases shard_0 and shard_1, which point at the source
// before the cutover and at the two new shards after it (the cutover_command swaps PgBouncer's ini
// file, pgdog_reshard RELOADs it). Clients write through the cutover and a rollback: none gets an
// error, every acknowledged write is in the new cluster after the cutover, writes made after it
// reach the old cluster through reverse replication, and after the rollback the old cluster has
// every row and traffic is back on it. Aborts: an unreachable proxy admin, a failing hook, a drain
// that cannot finish in time; each resumes traffic on the source and leaves the task replicating.
#include <atomic>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>

#include "core/config.h"
#include "harness.h"
#include "proxied_cluster.h"

namespace pgdog_reshard::test {
namespace {

class Cutover : public ProxiedCluster {
 protected:
  void SetUp() override { start_proxied(kProxiedSchema, {"synchronous_commit = on"}); }

  std::string cutover_state(const std::string &id) const {
    return control_->value("SELECT state || ' ' || coalesce(error, '') FROM reshard_cutover WHERE id = " + id);
  }
  // Waits for a cutover to end; returns its final state line.
  std::string finish(const std::string &id, int ms = 60000) const {
    wait_until([&] {
      std::string s = cutover_state(id);
      return s.rfind("done", 0) == 0 || s.rfind("aborted", 0) == 0;
    }, ms);
    return cutover_state(id);
  }
  std::string start_copy() {
    std::string task = control_->value("SELECT reshard_copy_data('prod', 'prod_2x', 'pgdog')");
    EXPECT_TRUE(wait_state(task, "replicating")) << state(task) << control_->log();
    return task;
  }
};

TEST_F(Cutover, WritesThroughPgBouncerSurviveTheCutoverAndTheRollback) {
  std::string task = start_copy();
  Writers writers(*bouncer_, 4);
  ASSERT_TRUE(writers.advance(200)) << "the clients do not write";
  EXPECT_EQ(port_behind("shard_1"), std::to_string(source_->port()));

  // Cut over while the clients write.
  std::string cutover = control_->value("SELECT reshard_cutover(" + task + ")");
  EXPECT_EQ(finish(cutover), "done ") << control_->log();
  ASSERT_TRUE(writers.errors().empty()) << writers.errors().front() << "\n" << bouncer_->log();
  EXPECT_TRUE(wait_state(task, "done")) << state(task);
  std::set<long> acked = writers.acknowledged();
  std::set<long> on_new = new_cluster_ids();
  EXPECT_TRUE(contains_all(on_new, acked)) << "acknowledged writes missing from the new cluster: " << missing(acked, on_new);
  EXPECT_EQ(port_behind("shard_0"), std::to_string(dests_[0]->port()));
  EXPECT_EQ(port_behind("shard_1"), std::to_string(dests_[1]->port()));
  Row c = control_->query("SELECT pause_ms, reverse_task_id, paused_at <= switched_at AND switched_at <= resumed_at"
                          " FROM reshard_cutover WHERE id = " + cutover).at(0);
  ASSERT_TRUE(c[0].has_value());
  EXPECT_GT(std::stod(*c[0]), 0.0);
  EXPECT_EQ(*c[2], "t");
  std::string reverse = *c[1];
  // The configuration now calls the new shards "prod"; the source keeps no slot of the task.
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_databases WHERE name = 'prod'"), "2");
  EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgdog_reshard_" + task + "%'"), "0");
  // Sequences: the new shards hand out no value the source already did.
  for (auto &d : dests_) EXPECT_GE(std::stol(d->value("SELECT last_value FROM tickets")), 1499);
  for (int s = 0; s < 2; s++) EXPECT_EQ(misplaced(s), "0") << "shard " << s;

  // Writes made now go to the new cluster and come back to the old one by reverse replication.
  ASSERT_TRUE(wait_state(reverse, "replicating")) << state(reverse) << control_->log();
  ASSERT_TRUE(writers.advance(200));
  ASSERT_TRUE(wait_caught_up(reverse)) << state(reverse) << control_->log();
  std::set<long> acked_after = writers.acknowledged();
  EXPECT_GT(acked_after.size(), acked.size());
  // Every row the new cluster has is on the old one (the reverse stream confirmed its position).
  EXPECT_TRUE(contains_all(ids(*source_), acked)) << "a write made before the cutover is missing from the old cluster";

  // Roll back while the clients write.
  std::string rollback = control_->value("SELECT reshard_cutover(" + reverse + ")");
  EXPECT_EQ(finish(rollback), "done ") << control_->log();
  ASSERT_TRUE(writers.advance(200));
  writers.stop();
  ASSERT_TRUE(writers.errors().empty()) << writers.errors().front() << "\n" << bouncer_->log();
  EXPECT_EQ(port_behind("shard_0"), std::to_string(source_->port()));
  EXPECT_EQ(port_behind("shard_1"), std::to_string(source_->port()));
  EXPECT_TRUE(contains_all(ids(*source_), writers.acknowledged())) << "an acknowledged write is missing from the old cluster";
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_databases WHERE name = 'prod'"), "1");

  // The rollback's own reverse replication (old -> new) brings the new cluster level again.
  std::string again = control_->value("SELECT reverse_task_id FROM reshard_cutover WHERE id = " + rollback);
  ASSERT_TRUE(wait_state(again, "replicating")) << state(again) << control_->log();
  ASSERT_TRUE(wait_caught_up(again)) << state(again);
  EXPECT_TRUE(new_cluster_equals_source()) << "the new cluster differs from the old one row for row";

  // Stopping the last task leaves no slot or publication of pgdog_reshard anywhere.
  control_->value("SELECT reshard_stop(" + again + ")");
  EXPECT_TRUE(wait_state(again, "cancelled")) << state(again);
  for (const PgInstance *pg : {source_.get(), dests_[0].get(), dests_[1].get()}) {
    EXPECT_EQ(pg->value("SELECT count(*) FROM pg_replication_slots"), "0") << pg->name();
    EXPECT_EQ(pg->value("SELECT count(*) FROM pg_publication WHERE pubname LIKE 'pgdog_reshard%'"), "0") << pg->name();
    EXPECT_EQ(pg->value("SELECT count(*) FROM pg_replication_origin"), "0") << pg->name();
  }
}

// Each abort resumes traffic on the source, keeps the task replicating, and says why.
TEST_F(Cutover, AbortsResumeTrafficOnTheSourceAndKeepReplicating) {
  std::string task = start_copy();
  Writers writers(*bouncer_, 2);
  ASSERT_TRUE(writers.advance(100));

  auto expect_aborted = [&](const std::string &why) {
    std::string cutover = control_->value("SELECT reshard_cutover(" + task + ")");
    std::string end = finish(cutover);
    EXPECT_EQ(end.rfind("aborted", 0), 0u) << end;
    EXPECT_NE(end.find(why), std::string::npos) << end;
    EXPECT_EQ(state(task).rfind("replicating", 0), 0u) << state(task);
    ASSERT_TRUE(writers.advance(100)) << "the clients are still paused";
    EXPECT_EQ(port_behind("shard_1"), std::to_string(source_->port()));
    EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_databases WHERE name = 'prod'"), "1");
    for (auto &d : dests_) {
      EXPECT_EQ(d->value("SELECT count(*) FROM pg_replication_slots"), "0");
      EXPECT_EQ(d->value("SELECT count(*) FROM pg_publication"), "0");
    }
  };

  // 1. The proxy's admin database is unreachable.
  set("pgdog_reshard.proxy_admin", "host=127.0.0.1 port=1 dbname=pgbouncer user=postgres password=hunter2");
  expect_aborted("PAUSE");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_cutover WHERE error LIKE '%hunter2%'"), "0");
  // 2. The hook fails.
  set("pgdog_reshard.proxy_admin", bouncer_->admin_conninfo());
  set("pgdog_reshard.cutover_command", "echo no such ini >&2; exit 3");
  expect_aborted("exit code 3");
  // 3. The drain cannot finish in time: every stream worker of the task is held back.
  set("pgdog_reshard.cutover_command", hook_);
  set("pgdog_reshard.cutover_timeout", "300");
  for (auto &d : dests_) d->exec("ALTER SYSTEM SET default_transaction_read_only = on");
  for (auto &d : dests_) d->exec("SELECT pg_reload_conf()");
  source_->exec("UPDATE tags SET hits = hits + 1");
  expect_aborted("cutover_timeout");
  for (auto &d : dests_) d->exec("ALTER SYSTEM RESET default_transaction_read_only");
  for (auto &d : dests_) d->exec("SELECT pg_reload_conf()");

  writers.stop();
  ASSERT_TRUE(writers.errors().empty()) << writers.errors().front() << "\n" << bouncer_->log();
  // Nothing was lost: the task catches up and the new cluster holds every acknowledged write.
  ASSERT_TRUE(wait_caught_up(task)) << state(task);
  EXPECT_TRUE(contains_all(new_cluster_ids(), writers.acknowledged()));
  // And a cutover now succeeds.
  set("pgdog_reshard.cutover_timeout", "10000");
  std::string cutover = control_->value("SELECT reshard_cutover(" + task + ")");
  EXPECT_EQ(finish(cutover), "done ") << control_->log();
}

// A passive proxy: LISTEN pgdog_reshard on the control node, acknowledge 'paused' after the pause
// event and 'switched' after the switch event (unless told not to), and keep every event's name.
class PassiveProxy {
 public:
  PassiveProxy(const PgInstance &control, bool acknowledge) : control_(control), acknowledge_(acknowledge) {
    conn_ = PQconnectdb(control.conninfo().c_str());
    PGresult *r = PQexec(conn_, "LISTEN pgdog_reshard");
    PQclear(r);
    thread_ = std::thread([this] { run(); });
  }
  ~PassiveProxy() {
    stop_ = true;
    thread_.join();
    PQfinish(conn_);
  }
  std::vector<std::string> events() {
    std::lock_guard<std::mutex> lock(mutex_);
    return events_;
  }
  std::vector<std::string> payloads() {
    std::lock_guard<std::mutex> lock(mutex_);
    return payloads_;
  }

 private:
  void run() {
    while (!stop_) {
      pollfd fd{PQsocket(conn_), POLLIN, 0};
      poll(&fd, 1, 50);
      PQconsumeInput(conn_);
      while (PGnotify *n = PQnotifies(conn_)) {
        std::string payload = n->extra;
        PQfreemem(n);
        std::string event = field(payload, "event"), task = number(payload, "task");
        {
          std::lock_guard<std::mutex> lock(mutex_);
          events_.push_back(event);
          payloads_.push_back(payload);
        }
        if (!acknowledge_) continue;
        if (event == "pause") control_.exec("SELECT reshard_cutover_ack(" + task + ", 'paused')");
        if (event == "switch") control_.exec("SELECT reshard_cutover_ack(" + task + ", 'switched')");
      }
    }
  }
  static std::string field(const std::string &json, const std::string &key) {
    size_t at = json.find("\"" + key + "\": \"");
    if (at == std::string::npos) return "";
    at += key.size() + 5;
    return json.substr(at, json.find('"', at) - at);
  }
  static std::string number(const std::string &json, const std::string &key) {
    size_t at = json.find("\"" + key + "\": ");
    if (at == std::string::npos) return "";
    at += key.size() + 4;
    return json.substr(at, json.find_first_of(",}", at) - at);
  }

  const PgInstance &control_;
  bool acknowledge_;
  PGconn *conn_ = nullptr;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  std::vector<std::string> events_, payloads_;
};

// Signalling without an admin database: NOTIFY events in order, acknowledged by the proxy through
// reshard_cutover_ack (awaited with cutover_wait_for_ack); with cutover_save_config, the swapped
// pgdog.toml replaces config_file atomically and the old one is kept beside it. A proxy that never
// acknowledges makes the cutover abort at cutover_timeout.
TEST_F(Cutover, PassiveProxyFollowsNotifyAcknowledgesAndGetsTheSavedConfig) {
  std::string original = proxied_config(*source_, dests_);
  std::string file = bouncer_->base_dir() + "/pgdog.toml";
  std::ofstream(file) << original;
  chmod_for_postgres(file);
  set("pgdog_reshard.proxy_admin", "");
  set("pgdog_reshard.cutover_command", "");
  set("pgdog_reshard.cutover_wait_for_ack", "on");
  set("pgdog_reshard.cutover_save_config", "on");
  set("pgdog_reshard.config_file", file);
  set("pgdog_reshard.cutover_timeout", "2000");
  std::string task = start_copy();

  {
    PassiveProxy silent(*control_, false);
    std::string cutover = control_->value("SELECT reshard_cutover(" + task + ")");
    std::string end = finish(cutover);
    EXPECT_EQ(end.rfind("aborted", 0), 0u) << end;
    EXPECT_NE(end.find("reshard_cutover_ack"), std::string::npos) << end;
    wait_until([&] { return silent.events().size() >= 2; });
    EXPECT_EQ(silent.events(), (std::vector<std::string>{"pause", "abort"}));
    std::ifstream in(file);
    EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), original)
        << "an aborted cutover left config_file changed";
  }
  EXPECT_EQ(state(task).rfind("replicating", 0), 0u) << state(task);

  PassiveProxy proxy(*control_, true);
  std::string cutover = control_->value("SELECT reshard_cutover(" + task + ")");
  EXPECT_EQ(finish(cutover), "done ") << control_->log();
  wait_until([&] { return proxy.events().size() >= 4; });
  EXPECT_EQ(proxy.events(), (std::vector<std::string>{"pause", "switch", "resume", "done"}));
  for (const std::string &payload : proxy.payloads()) {
    EXPECT_NE(payload.find("\"task\": " + task), std::string::npos) << payload;
    EXPECT_NE(payload.find("\"source\": \"prod\""), std::string::npos) << payload;
  }
  EXPECT_EQ(control_->value("SELECT (acks ? 'paused') AND (acks ? 'switched') AND pause_ms > 0 FROM reshard_cutover"
                            " WHERE id = " + cutover),
            "t");
  // The saved file is PgDog's config with the clusters exchanged; the old one is kept.
  std::ifstream saved(file), backup(file + ".pgdog_reshard.bak");
  std::string saved_text((std::istreambuf_iterator<char>(saved)), std::istreambuf_iterator<char>());
  std::string backup_text((std::istreambuf_iterator<char>(backup)), std::istreambuf_iterator<char>());
  EXPECT_EQ(backup_text, original);
  Config swapped = parse_config(saved_text, std::string(kProxiedUsers));
  EXPECT_EQ(swapped.shard_count("prod"), 2);
  EXPECT_EQ(swapped.shard_count("prod_2x"), 1);
  EXPECT_EQ(swapped.primary("prod", 1).port, dests_[1]->port());
  EXPECT_EQ(swapped.rules_for("prod").size(), 1u);
}

}  // namespace
}  // namespace pgdog_reshard::test
