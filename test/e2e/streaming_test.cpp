// Streaming end to end: a write load runs on the source during the copy and after it; when it stops
// and the stream has confirmed the source's last position, every destination table together equals
// the source row for row, and every row is on the shard satisfies_hash_partition names.
#include <signal.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "reshard_cluster.h"
#include "write_load.h"

namespace pgdog_reshard::test {
namespace {

class Streaming : public ReshardCluster {
 protected:
  void SetUp() override {
    start_cluster(kLoadSchema, {"synchronous_commit = on"});
    load_config(databases_toml(*source_, dests_, "prod_new") + kProdNewRules, users_toml("prod_new"));
  }
};

TEST_F(Streaming, ChangesDuringAndAfterTheCopyArriveExactlyOnce) {
  Load load(*source_, 4);
  std::string task = control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating", 180000)) << state(task) << control_->log();
  // A TRUNCATE in the stream, then more load after the copy.
  source_->exec("TRUNCATE scratch");
  source_->exec("INSERT INTO scratch SELECT g, g FROM generate_series(1, 300) g");
  wait_until([&] { return load.writes() > 3000; }, 30000);
  load.finish();
  ASSERT_TRUE(wait_caught_up(task, 120000)) << control_->log();
  EXPECT_GT(load.writes(), 500);
  expect_identical(*source_, dests_);
  EXPECT_EQ(verify_differences("prod", "prod_new"), "");
  EXPECT_EQ(control_->value("SELECT lag_bytes FROM reshard_status WHERE id = " + task), "0");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_replication_slots WHERE task_id = " + task + " AND last_commit_at IS NOT NULL"), "1");
  control_->value("SELECT reshard_stop(" + task + ")");
  EXPECT_TRUE(wait_state(task, "cancelled", 180000));
}

// Eight clients for the whole copy and stream: key moves, TOAST updates, deletes, multi-table
// transactions and TRUNCATEs. reshard_verify finds no difference while they write, and none once
// they stop and the stream has caught up; the row-by-row comparison agrees.
TEST_F(Streaming, EightClientsWithTruncatesThroughoutLoseNothing) {
  Load load(*source_, 8, true);
  ASSERT_TRUE(wait_until([&] { return load.writes() > 500; }, 30000));
  std::string task = control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating", 240000)) << state(task) << control_->log();
  long at_copy_end = load.writes();
  ASSERT_TRUE(wait_until([&] { return load.writes() > at_copy_end + 2000; }, 120000));
  std::vector<Row> live = control_->query(
      "SELECT \"table\", examples FROM reshard_verify('prod', 'prod_new', 'pgdog') WHERE verdict = 'differs'");
  for (const Row &r : live) ADD_FAILURE() << "differs under load: " << *r[0] << " " << *r[1];
  load.finish();
  EXPECT_EQ(load.errors(), 0);
  ASSERT_TRUE(wait_caught_up(task, 180000)) << control_->log();
  EXPECT_EQ(verify_differences("prod", "prod_new"), "");
  expect_identical(*source_, dests_);
  control_->value("SELECT reshard_stop(" + task + ")");
  EXPECT_TRUE(wait_state(task, "cancelled", 180000));
}

TEST_F(Streaming, KilledStreamWorkerAndRestartedControlNodeLoseNothing) {
  Load load(*source_, 4);
  std::string task = control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating", 180000)) << state(task) << control_->log();
  const std::string stream_pid =
      "SELECT coalesce((SELECT pid::text FROM pg_stat_activity WHERE backend_type = 'pgdog_reshard stream'), '')";
  std::string killed;
  for (int kill_round = 0; kill_round < 2; kill_round++) {
    std::string pid;
    // Right after a SIGKILL, pg_stat_activity can still list the dead worker until the postmaster
    // notices and restarts: wait for a live worker that is not the one just killed.
    ASSERT_TRUE(wait_until([&] {
      try {
        pid = control_->value(stream_pid);
      } catch (const std::exception &) {
        pid.clear();
      }
      return !pid.empty() && pid != killed && kill(std::stoi(pid), 0) == 0;
    }, 60000)) << control_->log();
    long before = load.writes();
    wait_until([&] { return load.writes() > before + 500; }, 20000);
    ASSERT_EQ(kill(std::stoi(pid), SIGKILL), 0) << "stream worker " << pid << " gone before the kill";
    killed = pid;
  }
  control_->restart("immediate");
  long before = load.writes();
  wait_until([&] { return load.writes() > before + 1000; }, 30000);
  load.finish();
  ASSERT_TRUE(wait_state(task, "replicating", 180000)) << state(task) << control_->log();
  ASSERT_TRUE(wait_caught_up(task, 120000)) << control_->log();
  expect_identical(*source_, dests_);
  EXPECT_EQ(verify_differences("prod", "prod_new"), "");
  control_->value("SELECT reshard_stop(" + task + ")");
  EXPECT_TRUE(wait_state(task, "cancelled", 180000));
}

}  // namespace
}  // namespace pgdog_reshard::test
