// reshard_verify() through SQL on the control node: clean while a task streams under writes, the
// differences a damaged destination holds (missing, extra, differing, misplaced, with examples),
// progress in reshard_status, a cancel and reshard_stop ending the worker, bad input refused before
// any task exists, and pgdog_reshard.verify_before_cutover refusing a cutover on a difference.
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "reshard_cluster.h"
#include "write_load.h"

namespace pgdog_reshard::test {
namespace {

// A table big enough that verifying it takes a few seconds: time to cancel or stop it.
const std::string kSchemaWithBig = std::string(kLoadSchema) + R"sql(
CREATE TABLE big (id bigint PRIMARY KEY, user_id bigint NOT NULL, pad text NOT NULL);
INSERT INTO big SELECT g, g % 5000, repeat('x', 60) FROM generate_series(1, 1500000) g;
)sql";

class VerifySql : public ReshardCluster {
 protected:
  void start(const std::string &schema = kLoadSchema) {
    start_cluster(schema, {"synchronous_commit = on"});
    load_config(databases_toml(*source_, dests_, "prod_new") + kProdNewRules, users_toml("prod_new"));
  }

  // A copy_data task, replicating.
  std::string replicating_task() {
    std::string task = control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
    EXPECT_TRUE(wait_state(task, "replicating", 240000)) << state(task) << control_->log();
    return task;
  }

  std::string last_verify_task() const {
    return control_->value("SELECT coalesce(max(id)::text, '') FROM reshard_status WHERE command = 'verify'");
  }

  std::string verify_backends() const {
    return control_->value("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgdog_reshard verify'");
  }
};

TEST_F(VerifySql, CleanWhileStreamingUnderWritesAndShownInStatus) {
  start();
  Load load(*source_, 4);
  std::string task = replicating_task();
  ASSERT_TRUE(wait_until([&] { return load.writes() > 2000; }, 60000));
  // While the clients write: nothing may be reported as differing (a row changing through every
  // re-check is "unsettled", not a difference).
  std::vector<Row> live = control_->query(
      "SELECT \"table\", verdict, examples FROM reshard_verify('prod', 'prod_new', 'pgdog') WHERE verdict = 'differs'");
  for (const Row &r : live) ADD_FAILURE() << *r[0] << ": " << *r[1] << " " << *r[2];
  load.finish();
  ASSERT_TRUE(wait_caught_up(task, 120000)) << control_->log();
  EXPECT_EQ(verify_differences("prod", "prod_new"), "");
  expect_identical(*source_, dests_);

  std::string verify = last_verify_task();
  Row status = control_->query("SELECT command, state, progress, phase, created_by, finished_at IS NOT NULL"
                               " FROM reshard_status WHERE id = " + verify).at(0);
  EXPECT_EQ(*status[0], "verify");
  EXPECT_EQ(*status[1], "done");
  EXPECT_EQ(*status[2], "100.0");
  EXPECT_EQ(*status[3], "6 tables verified, none differs");
  EXPECT_EQ(*status[4], "postgres");
  EXPECT_EQ(*status[5], "t");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_verify_results WHERE task_id = " + verify + " AND verdict = 'ok'"), "6");
  // Per-shard rows add up, and the users rows are spread over both shards.
  EXPECT_EQ(control_->value("SELECT destination_shard_rows[1] + destination_shard_rows[2] = destination_rows"
                            " AND destination_shard_rows[1] > 0 AND destination_shard_rows[2] > 0"
                            " FROM reshard_verify_results WHERE task_id = " + verify + " AND \"table\" = 'users'"),
            "t");
  // The verify made no task of the cluster busy: the replicating task is untouched.
  EXPECT_EQ(control_->value("SELECT state FROM reshard_status WHERE id = " + task), "replicating");
  control_->value("SELECT reshard_stop(" + task + ")");
  EXPECT_TRUE(wait_state(task, "cancelled"));
}

// Damage made on the destination behind the stream's back is found, with the rows named.
TEST_F(VerifySql, DamagedDestinationIsReportedRowByRow) {
  start();
  std::string task = replicating_task();
  ASSERT_TRUE(wait_caught_up(task)) << control_->log();
  control_->value("SELECT reshard_stop(" + task + ")");
  ASSERT_TRUE(wait_state(task, "cancelled"));
  // users 7 lost, users 8 changed, users 9 copied to the shard it does not belong on as well.
  auto holder = [&](const std::string &id) {
    return dests_[0]->value("SELECT count(*) FROM users WHERE id = " + id) == "1" ? 0 : 1;
  };
  dests_[holder("7")]->exec("DELETE FROM users WHERE id = 7");
  dests_[holder("8")]->exec("UPDATE users SET name = 'tampered' WHERE id = 8");
  int nine = holder("9");
  dests_[1 - nine]->exec("INSERT INTO users VALUES (9, 'user 9', 9)");

  std::vector<Row> rows = control_->query(
      "SELECT verdict, source_rows, destination_rows, missing, extra, differing, misplaced, examples"
      " FROM reshard_verify('prod', 'prod_new', 'pgdog') WHERE \"table\" = 'users'");
  ASSERT_EQ(rows.size(), 1u);
  const Row &r = rows[0];
  EXPECT_EQ(*r[0], "differs");
  EXPECT_EQ(*r[1], "2000");
  EXPECT_EQ(*r[2], "2000");  // one lost, one extra
  EXPECT_EQ(*r[3], "1");
  EXPECT_EQ(*r[4], "1");
  EXPECT_EQ(*r[5], "1");
  EXPECT_EQ(*r[6], "1");
  EXPECT_NE(r[7]->find("missing: (7)"), std::string::npos) << *r[7];
  EXPECT_NE(r[7]->find("(8)"), std::string::npos) << *r[7];
  EXPECT_NE(r[7]->find("(9)"), std::string::npos) << *r[7];
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_verify('prod', 'prod_new', 'pgdog') WHERE verdict <> 'ok'"), "1");
  EXPECT_EQ(control_->value("SELECT phase FROM reshard_status WHERE id = " + last_verify_task()).rfind("1 of 6 tables differ: \"public\".\"users\"", 0), 0u);
}

// A statement timeout cancels the caller; the worker stops with it and its task ends cancelled.
// reshard_stop() from another session ends a running verify the same way.
TEST_F(VerifySql, CancelAndStopEndTheWorker) {
  start(kSchemaWithBig);
  std::string task = replicating_task();
  control_->value("SELECT reshard_stop(" + task + ")");
  ASSERT_TRUE(wait_state(task, "cancelled"));

  ServerError timeout = control_->error_of(
      "SET statement_timeout = '1500ms'; SELECT * FROM reshard_verify('prod', 'prod_new', 'pgdog')");
  EXPECT_EQ(timeout.sqlstate, "57014") << timeout.message;
  std::string verify = last_verify_task();
  ASSERT_FALSE(verify.empty());
  EXPECT_TRUE(wait_state(verify, "cancelled", 30000)) << state(verify);
  EXPECT_TRUE(wait_until([&] { return verify_backends() == "0"; }, 30000));

  std::thread stopper([&] {
    wait_until([&] {
      return control_->value("SELECT count(*) FROM reshard_status WHERE command = 'verify' AND state = 'running'") == "1";
    }, 30000);
    control_->value("SELECT reshard_stop(max(id)) FROM reshard_status WHERE command = 'verify' AND state = 'running'");
  });
  ServerError stopped = control_->error_of("SELECT * FROM reshard_verify('prod', 'prod_new', 'pgdog')");
  stopper.join();
  EXPECT_EQ(stopped.sqlstate, "57014") << stopped.message;
  EXPECT_NE(stopped.message.find("was stopped"), std::string::npos) << stopped.message;
  EXPECT_EQ(state(last_verify_task()).rfind("cancelled", 0), 0u);
  EXPECT_EQ(verify_backends(), "0");
}

TEST_F(VerifySql, BadInputIsRefusedBeforeAnyTask) {
  start();
  ServerError unknown = control_->error_of("SELECT * FROM reshard_verify('prod', 'nope', 'pgdog')");
  EXPECT_EQ(unknown.sqlstate, "42704") << unknown.message;
  EXPECT_NE(unknown.message.find("\"nope\""), std::string::npos) << unknown.message;
  ServerError same = control_->error_of("SELECT * FROM reshard_verify('prod', 'prod', 'pgdog')");
  EXPECT_EQ(same.sqlstate, "22023") << same.message;
  ServerError publication = control_->error_of("SELECT * FROM reshard_verify('prod', 'prod_new', 'nopub')");
  EXPECT_EQ(publication.sqlstate, "42704") << publication.message;
  // The destination has no tables yet: verification needs them there.
  ServerError tables = control_->error_of("SELECT * FROM reshard_verify('prod', 'prod_new', 'pgdog')");
  EXPECT_EQ(tables.sqlstate, "42P01") << tables.message;
  ServerError null = control_->error_of("SELECT * FROM reshard_verify(NULL, 'prod_new', 'pgdog')");
  EXPECT_EQ(null.sqlstate, "22004") << null.message;
  ServerError isolation = control_->error_of(
      "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM reshard_verify('prod', 'prod_new', 'pgdog')");
  EXPECT_EQ(isolation.sqlstate, "25000") << isolation.message;
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_status"), "0");
  EXPECT_EQ(verify_backends(), "0");
}

// With verify_before_cutover on, a difference aborts the cutover before any pause, and the task
// keeps replicating; once the destination is repaired the cutover goes through.
TEST_F(VerifySql, VerifyBeforeCutoverRefusesADifference) {
  start();
  control_->exec("ALTER SYSTEM SET pgdog_reshard.verify_before_cutover = on");
  control_->value("SELECT pg_reload_conf()");
  std::string task = replicating_task();
  ASSERT_TRUE(wait_caught_up(task)) << control_->log();
  int shard = dests_[0]->value("SELECT count(*) FROM accounts WHERE code = 'acct-5'") == "1" ? 0 : 1;
  dests_[shard]->exec("DELETE FROM accounts WHERE code = 'acct-5'");

  std::string cutover = control_->value("SELECT reshard_cutover(" + task + ")");
  ASSERT_TRUE(wait_until([&] {
    return control_->value("SELECT state FROM reshard_cutover WHERE id = " + cutover) == "aborted";
  }, 120000)) << control_->log();
  Row c = control_->query("SELECT error, paused_at IS NULL FROM reshard_cutover WHERE id = " + cutover).at(0);
  EXPECT_NE(c[0]->find("verify before cutover"), std::string::npos) << *c[0];
  EXPECT_NE(c[0]->find("(acct-5)"), std::string::npos) << *c[0];
  EXPECT_EQ(*c[1], "t") << "traffic was paused before the verification";
  EXPECT_EQ(control_->value("SELECT state FROM reshard_status WHERE id = " + task), "replicating");
  EXPECT_EQ(control_->value("SELECT verdict FROM reshard_verify_results WHERE task_id = " + task + " AND \"table\" = 'accounts'"),
            "differs");

  dests_[shard]->exec("INSERT INTO accounts SELECT 'acct-5', 5, 5");
  source_->exec("UPDATE accounts SET amount = amount WHERE code = 'acct-5'");  // the row as the source has it
  cutover = control_->value("SELECT reshard_cutover(" + task + ")");
  ASSERT_TRUE(wait_until([&] {
    std::string s = control_->value("SELECT state FROM reshard_cutover WHERE id = " + cutover);
    return s == "done" || s == "aborted";
  }, 120000)) << control_->log();
  EXPECT_EQ(control_->value("SELECT coalesce(error, state) FROM reshard_cutover WHERE id = " + cutover), "done");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_verify_results WHERE task_id = " + task + " AND verdict = 'ok'"), "6");
  std::string reverse = control_->value("SELECT reverse_task_id FROM reshard_cutover WHERE id = " + cutover);
  ASSERT_TRUE(wait_state(reverse, "replicating")) << state(reverse);
  control_->value("SELECT reshard_stop(" + reverse + ")");
  EXPECT_TRUE(wait_state(reverse, "cancelled"));
}

}  // namespace
}  // namespace pgdog_reshard::test
