// reshard() end to end, the one call users make: 1 -> 2 shards under clients writing through a real
// PgBouncer, ending done with the data identical and on its shards, PgBouncer on the new shards
// and reverse replication running; the control node restarted (immediate) during the copy and
// during the streaming; reshard_stop during both, leaving no slot or publication anywhere; a second
// task on a cluster being moved refused; no worker slot a clear failure; pg_cron scheduling
// reshard() with the real pg_cron.
#include <chrono>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "proxied_cluster.h"

namespace pgdog_reshard::test {
namespace {

// With a table whose copy takes seconds: long enough to restart or stop the control node mid-copy.
const std::string kSchemaWithBig = std::string(kProxiedSchema) + R"sql(
CREATE TABLE big (id bigint PRIMARY KEY, v integer NOT NULL, pad text NOT NULL);
INSERT INTO big SELECT g, (g::bigint * 7919) % 100000, repeat('x', 40) FROM generate_series(1, 1500000) g;
)sql";

class Reshard : public ProxiedCluster {
 protected:
  std::string start_reshard() const { return control_->value("SELECT reshard('prod', 'prod_2x', 'pgdog')"); }

  // reshard_wait() from the test: the state the task ends in (or has after `seconds`).
  std::string wait_end(const std::string &task, int seconds = 240) const {
    return control_->value("SELECT reshard_wait(" + task + ", '" + std::to_string(seconds) + " s')");
  }

  // Row count and an order-independent checksum of a table.
  static std::string digest(const PgInstance &pg, const std::string &table) {
    return pg.value("SELECT count(*) || ' ' || coalesce(sum(hash_record_extended(t, 0) >> 8), 0) FROM " + table + " t");
  }

  // Slots, publications and replication origins of pgdog_reshard on every server.
  std::string leftovers() const {
    std::string out;
    for (const PgInstance *pg : {source_.get(), dests_[0].get(), dests_[1].get()}) {
      std::string slots = pg->value("SELECT count(*) FROM pg_replication_slots");
      std::string pubs = pg->value("SELECT count(*) FROM pg_publication WHERE pubname LIKE 'pgdog_reshard%'");
      std::string origins = pg->value("SELECT count(*) FROM pg_replication_origin");
      if (slots != "0" || pubs != "0" || origins != "0") {
        out += pg->name() + ": " + slots + " slots, " + pubs + " publications, " + origins + " origins; ";
      }
    }
    return out;
  }

  // The reverse replication `task`'s cutover started: it streams, catches up (the two clusters then
  // equal row for row), and stops cleanly.
  void expect_reverse_catches_up_and_stops(const std::string &task) const {
    std::string reverse = control_->value("SELECT reverse_task_id FROM reshard_cutover WHERE task_id = " + task);
    ASSERT_TRUE(wait_state(reverse, "replicating")) << why(reverse);
    ASSERT_TRUE(wait_caught_up(reverse)) << why(reverse);
    EXPECT_TRUE(new_cluster_equals_source());
    control_->value("SELECT reshard_stop(" + reverse + ")");
    EXPECT_EQ(wait_end(reverse), "cancelled");
  }

  // Everything that ran, as the control node logged it (for failure messages).
  std::string why(const std::string &task) const { return state(task) + "\n" + control_->log(); }
};

TEST_F(Reshard, OneCallUnderLoadEndsDoneWithReverseReplication) {
  start_proxied(kProxiedSchema, {"synchronous_commit = on"});
  Writers writers(*bouncer_, 4);
  ASSERT_TRUE(writers.advance(200)) << "the clients do not write";

  std::string task = start_reshard();
  ASSERT_EQ(wait_end(task), "done") << why(task);
  ASSERT_TRUE(writers.advance(200)) << "the clients stay paused after the cutover";
  ASSERT_TRUE(writers.errors().empty()) << writers.errors().front() << "\n" << bouncer_->log();
  std::set<long> acked = writers.acknowledged();
  EXPECT_TRUE(contains_all(new_cluster_ids(), acked)) << "acknowledged writes missing from the new cluster: "
                                                      << missing(acked, new_cluster_ids());
  EXPECT_EQ(port_behind("shard_0"), std::to_string(dests_[0]->port()));
  EXPECT_EQ(port_behind("shard_1"), std::to_string(dests_[1]->port()));
  for (int s = 0; s < 2; s++) EXPECT_EQ(misplaced(s), "0") << "shard " << s;

  // What reshard_status and reshard_cutover tell about it.
  Row status = control_->query(
      "SELECT command, phase, progress, rows_copied >= 3000, bytes_per_sec > 0, finished_at IS NOT NULL"
      " FROM reshard_status WHERE id = " + task).at(0);
  EXPECT_EQ(*status[0], "reshard");
  EXPECT_EQ(*status[1], "cut over");
  EXPECT_EQ(*status[2], "100.0");
  EXPECT_EQ(*status[3], "t");
  EXPECT_EQ(*status[4], "t");
  EXPECT_EQ(*status[5], "t");
  Row cutover = control_->query(
      "SELECT c.state, c.requested_by = t.created_by, c.reverse_task_id FROM reshard_cutover c"
      " JOIN reshard_status t ON t.id = c.task_id WHERE c.task_id = " + task).at(0);
  EXPECT_EQ(*cutover[0], "done");
  EXPECT_EQ(*cutover[1], "t");
  std::string reverse = *cutover[2];
  EXPECT_NE(control_->log().find("task " + task + ": automatic cutover"), std::string::npos);

  // Reverse replication runs: writes made on the new cluster reach the old one.
  ASSERT_TRUE(wait_state(reverse, "replicating")) << why(reverse);
  ASSERT_TRUE(writers.advance(200));
  writers.stop();
  ASSERT_TRUE(writers.errors().empty()) << writers.errors().front();
  ASSERT_TRUE(wait_caught_up(reverse)) << why(reverse);
  EXPECT_TRUE(contains_all(ids(*source_), writers.acknowledged())) << "a write is missing from the old cluster";
  EXPECT_TRUE(new_cluster_equals_source()) << "the two clusters differ row for row";

  control_->value("SELECT reshard_stop(" + reverse + ")");
  EXPECT_EQ(wait_end(reverse), "cancelled");
  EXPECT_EQ(leftovers(), "");
}

// Immediate restarts of the control node, one while big is being copied and one while the task
// streams (automatic cutover held off until then): the task resumes each time and ends done with
// every table equal to the source's.
TEST_F(Reshard, ControlNodeRestartsDuringTheCopyAndTheStreaming) {
  start_proxied(kSchemaWithBig, {"synchronous_commit = on", "pgdog_reshard.parallel_copies = 1"});
  set("pgdog_reshard.auto_cutover", "off");
  Writers writers(*bouncer_, 2);
  ASSERT_TRUE(writers.advance(100));

  std::string task = start_reshard();
  ASSERT_TRUE(wait_copying(task, "big")) << why(task);
  control_->restart("immediate");
  ASSERT_TRUE(wait_state(task, "replicating", 240000)) << why(task);
  EXPECT_GE(std::stoi(control_->value("SELECT attempts FROM reshard_table_copies WHERE task_id = " + task +
                                      " AND \"table\" = 'big'")), 2)
      << "big was not copied again after the restart";

  ASSERT_TRUE(writers.advance(200));
  // A task that was streaming resumes streaming: it does not go back through its earlier phases
  // (it once did, showing 'running' again for a while).
  auto restarts_from_the_top = [&] { return lines_with(control_->log(), "task " + task + ": running (schema_pre)"); };
  const std::string before = restarts_from_the_top();
  control_->restart("immediate");
  ASSERT_TRUE(wait_state(task, "replicating", 120000)) << why(task);
  ASSERT_TRUE(writers.advance(200));
  EXPECT_EQ(restarts_from_the_top(), before);
  EXPECT_EQ(state(task).rfind("replicating", 0), 0u) << state(task);
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_cutover WHERE task_id = " + task), "0");

  set("pgdog_reshard.auto_cutover", "on");
  ASSERT_EQ(wait_end(task), "done") << why(task);
  ASSERT_TRUE(writers.advance(100));
  writers.stop();
  ASSERT_TRUE(writers.errors().empty()) << writers.errors().front() << "\n" << bouncer_->log();
  EXPECT_TRUE(contains_all(new_cluster_ids(), writers.acknowledged()));
  // big has no sharding rule: every shard holds all of it.
  for (auto &d : dests_) EXPECT_EQ(digest(*d, "big"), digest(*source_, "big")) << d->name();
  expect_reverse_catches_up_and_stops(task);
}

// reshard_stop mid-copy, then (on emptied destinations) mid-streaming: each ends cancelled within
// seconds and leaves no slot or publication on any server. While the second task runs, another
// one on the same clusters is refused.
// A stop that lands while the task's worker is starting is never lost (it once was, when the
// worker read the task before recording its pid: the stop found no one to signal).
TEST_F(Reshard, StopRightAfterTheStartIsNeverLost) {
  start_proxied(kProxiedSchema);
  for (int round = 0; round < 30; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    std::string task = start_reshard();
    // A few ms later each round: before, during and after the worker's start.
    std::this_thread::sleep_for(std::chrono::milliseconds(round));
    EXPECT_EQ(control_->value("SELECT reshard_stop(" + task + ")"), "t");
    ASSERT_EQ(wait_end(task, 60), "cancelled") << why(task);
    ASSERT_EQ(leftovers(), "");
    for (auto &d : dests_) d->exec("DROP SCHEMA public CASCADE; CREATE SCHEMA public");
  }
}

TEST_F(Reshard, StopDuringTheCopyAndTheStreamingLeavesNothingBehind) {
  start_proxied(kSchemaWithBig, {"pgdog_reshard.parallel_copies = 1"});
  set("pgdog_reshard.auto_cutover", "off");

  std::string task = start_reshard();
  ASSERT_TRUE(wait_copying(task, "big")) << why(task);
  control_->value("SELECT reshard_stop(" + task + ")");
  EXPECT_EQ(wait_end(task, 30), "cancelled") << why(task);
  EXPECT_EQ(leftovers(), "");

  for (auto &d : dests_) d->exec("DROP SCHEMA public CASCADE; CREATE SCHEMA public");
  std::string second = start_reshard();
  ASSERT_TRUE(wait_state(second, "replicating", 240000)) << why(second);
  try {
    control_->value("SELECT reshard('prod', 'prod_2x', 'pgdog')");
    ADD_FAILURE() << "a second reshard of prod was accepted";
  } catch (const ServerError &e) {
    EXPECT_EQ(e.sqlstate, "55006");
    EXPECT_NE(e.message.find("task " + second), std::string::npos) << e.message;
    EXPECT_NE(e.hint.find("reshard_stop(" + second + ")"), std::string::npos) << e.hint;
  }
  control_->value("SELECT reshard_stop(" + second + ")");
  EXPECT_EQ(wait_end(second, 30), "cancelled") << why(second);
  EXPECT_EQ(leftovers(), "");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_cutover"), "0");
}

// No background worker slot for the task (max_worker_processes taken by the launcher and the logical
// replication launcher): the task fails after pgdog_reshard's 30 s with a message that says so,
// rather than staying pending unseen; a stop of such a task ends it at once. Nothing is created.
TEST_F(Reshard, NoWorkerSlotIsAClearErrorNotAHang) {
  start_cluster(kProxiedSchema, {"max_worker_processes = 2"});
  load_config(proxied_config(*source_, dests_), kProxiedUsers);
  std::string task = start_reshard();
  ASSERT_EQ(wait_end(task, 90), "failed") << why(task);
  std::string error = control_->value("SELECT error FROM reshard_status WHERE id = " + task);
  EXPECT_NE(error.find("no free background worker slot"), std::string::npos) << error;
  EXPECT_NE(error.find("max_worker_processes = 2"), std::string::npos) << error;

  std::string second = start_reshard();
  control_->value("SELECT reshard_stop(" + second + ")");
  EXPECT_EQ(wait_end(second, 15), "cancelled") << why(second);
  EXPECT_EQ(leftovers(), "");
  EXPECT_EQ(dests_[0]->value("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
}

// pg_cron (1.4 on Debian 12: minute schedules) runs reshard(): the job returns at once with the task
// id, and the task then runs to done in the background. The next minute's run is refused, since the
// cluster is being moved (or done), so a schedule left in place does no harm.
TEST_F(Reshard, PgCronJobStartsTheReshardAndReturnsAtOnce) {
  start_proxied(kProxiedSchema, {"shared_preload_libraries = 'pgdog_reshard,pg_cron'", "cron.database_name = 'postgres'",
                          "cron.use_background_workers = on"});
  control_->exec("CREATE EXTENSION pg_cron");
  control_->exec("SELECT cron.schedule('reshard-prod', '0 3 * * *', $$SELECT reshard('prod', 'prod_2x', 'pgdog')$$)");
  EXPECT_EQ(control_->value("SELECT count(*) FROM cron.job WHERE jobname = 'reshard-prod'"), "1");
  // Every minute, so that the test need not wait for 3 a.m.
  control_->exec("SELECT cron.schedule('reshard-prod', '* * * * *', $$SELECT reshard('prod', 'prod_2x', 'pgdog')$$)");

  ASSERT_TRUE(wait_until([&] {
    return control_->value("SELECT count(*) FROM cron.job_run_details WHERE status IN ('succeeded', 'failed')") != "0";
  }, 90000)) << control_->log();
  Row run = control_->query(
      "SELECT status, return_message, extract(epoch FROM end_time - start_time) FROM cron.job_run_details"
      " ORDER BY runid LIMIT 1").at(0);
  EXPECT_EQ(*run[0], "succeeded") << run[1].value_or("");
  EXPECT_LT(std::stod(*run[2]), 10.0) << "the job waited for the reshard";
  std::string task = control_->value("SELECT max(id) FROM reshard_status WHERE command = 'reshard'");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_status WHERE command = 'reshard'"), "1");
  ASSERT_EQ(wait_end(task), "done") << why(task);

  // The next run is refused: the clusters are held by the reverse replication now.
  ASSERT_TRUE(wait_until([&] {
    return control_->value("SELECT count(*) FROM cron.job_run_details WHERE status IN ('succeeded', 'failed')") == "2";
  }, 90000));
  Row second = control_->query("SELECT status, return_message FROM cron.job_run_details ORDER BY runid DESC LIMIT 1").at(0);
  EXPECT_EQ(*second[0], "failed");
  EXPECT_NE(second[1].value_or("").find("already being resharded"), std::string::npos) << second[1].value_or("");
  control_->exec("SELECT cron.unschedule('reshard-prod')");

  expect_reverse_catches_up_and_stops(task);
}

}  // namespace
}  // namespace pgdog_reshard::test
