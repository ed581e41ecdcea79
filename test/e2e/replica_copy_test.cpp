// Copies from read replicas: a PostgreSQL 17 primary with two streaming standbys marked
// resharding_only, resharded 1 -> 2 (PostgreSQL 17 destinations) under a write load on the
// primary. The servers' own statement logs are the oracle for where each table COPY ran; the
// destinations are compared with the source row for row, every row on the shard PostgreSQL's hash
// partitioning names.
#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "harness.h"
#include "reshard_cluster.h"
#include "write_load.h"

namespace pgdog_reshard::test {
namespace {

// A table large enough that its copy runs for a while: what a standby is stopped during.
const char *kBigTable = "CREATE TABLE big (id bigint PRIMARY KEY, user_id bigint NOT NULL, pad text);\n";
const char *kBigRows = "INSERT INTO big SELECT g, 1 + g % 2000, repeat(md5(g::text), 4) FROM generate_series(1, 400000) g;\n";

// The destination schema, made beforehand (no pg_dump 17 here): the load schema's tables, keys
// and storage, without its rows or publication.
std::string destination_schema() {
  std::istringstream in(kLoadSchema);
  std::string line, out = kBigTable;
  while (std::getline(in, line)) {
    if (line.rfind("CREATE TABLE", 0) == 0 || line.rfind("ALTER TABLE", 0) == 0) out += line + "\n";
  }
  return out;
}

// Every COPY ... TO STDOUT a server ran, from its statement log (log_statement = all).
int copies_logged(const PgInstance &pg) {
  std::string lines = lines_with(pg.log(), "TO STDOUT (FORMAT binary)");
  return static_cast<int>(std::count(lines.begin(), lines.end(), '\n'));
}

class ReplicaCopy : public ReshardCluster {
 protected:
  void SetUp() override {
    bindir_ = pg17_bindir();
    if (bindir_.empty()) {
      if (const char *ci = std::getenv("CI"); ci && std::string(ci) == "true") {
        FAIL() << "no PostgreSQL 17 binaries: scripts/install-pg17.sh did not run";
      }
      GTEST_SKIP() << "no PostgreSQL 17 binaries (scripts/install-pg17.sh installs them)";
    }
    InstanceOptions c;
    c.name = "control";
    c.preload_extension = true;
    c.extra_conf = {"pgdog_reshard.parallel_copies = 1"};
    control_ = std::make_unique<PgInstance>(c);
    InstanceOptions p;
    p.name = "primary17";
    p.bindir = bindir_;
    p.extra_conf = {"log_statement = 'all'"};
    source_ = std::make_unique<PgInstance>(p);
    source_->exec(std::string(kLoadSchema) + kBigTable + kBigRows);
    for (int i = 0; i < 2; i++) {
      InstanceOptions s;
      s.name = "standby" + std::to_string(i);
      s.standby_of = source_.get();
      standbys_.push_back(std::make_unique<PgInstance>(s));
    }
    for (int i = 0; i < 2; i++) {
      InstanceOptions d;
      d.name = "dst17_" + std::to_string(i);
      d.bindir = bindir_;
      dests_.push_back(std::make_unique<PgInstance>(d));
      dests_.back()->exec(destination_schema());
    }
    for (auto &s : standbys_) s->wait_for_replay(*source_);
    control_->exec("CREATE EXTENSION pgdog_reshard");
  }

  std::string replica_entry(const PgInstance &pg) const {
    return database_entry("prod", 0, pg, "postgres", "role = \"replica\"\nresharding_only = true");
  }
  std::string config(const std::vector<const PgInstance *> &replicas) const {
    std::string toml = database_entry("prod", 0, *source_);
    for (const PgInstance *r : replicas) toml += replica_entry(*r);
    return toml + cluster_entries("prod_new", dests_) + kProdNewRules;
  }
  std::string start_copy() const {
    return control_->value("SET pgdog_reshard.schema_sync = off; SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  }
  std::string copy_ports(const std::string &task) const {
    return control_->value("SELECT string_agg(DISTINCT source_port::text, ',' ORDER BY source_port::text)"
                           " FROM reshard_table_copies WHERE task_id = " + task);
  }
  std::string ports(std::initializer_list<const PgInstance *> servers) const {
    std::set<std::string> sorted;
    for (const PgInstance *pg : servers) sorted.insert(std::to_string(pg->port()));
    std::string out;
    for (const std::string &p : sorted) out += (out.empty() ? "" : ",") + p;
    return out;
  }
  // The big table, row for row, and every row on its user_id's shard (expect_identical's oracle
  // table, a hash-partitioned parent, serves satisfies_hash_partition).
  void expect_big_identical() const {
    std::vector<std::string> expected = row_hashes(*source_, "big"), actual;
    for (size_t d = 0; d < dests_.size(); d++) {
      auto h = row_hashes(*dests_[d], "big");
      actual.insert(actual.end(), h.begin(), h.end());
      dests_[d]->exec("CREATE TABLE IF NOT EXISTS oracle_bigint (k bigint) PARTITION BY HASH (k)");
      EXPECT_EQ(dests_[d]->value("SELECT count(*) FROM big WHERE NOT satisfies_hash_partition('oracle_bigint'::regclass, " +
                                 std::to_string(dests_.size()) + ", " + std::to_string(d) + ", user_id)"),
                "0")
          << "rows of big on the wrong shard " << d;
    }
    std::sort(actual.begin(), actual.end());
    EXPECT_EQ(actual.size(), expected.size());
    EXPECT_TRUE(actual == expected) << "big differs";
  }
  void stop_and_expect_no_slots(const std::string &task) {
    control_->exec("SELECT reshard_stop(" + task + ")");
    EXPECT_TRUE(wait_state(task, "cancelled"));
    for (const PgInstance *pg : {source_.get(), standbys_[0].get(), standbys_[1].get()}) {
      if (!pg->running()) continue;
      EXPECT_TRUE(wait_until([&] { return pg->value("SELECT count(*) FROM pg_replication_slots") == "0"; }))
          << "slots left on " << pg->name();
    }
  }

  std::string bindir_;
  std::vector<std::unique_ptr<PgInstance>> standbys_;
};

// Pre-flight, then the copy from both standbys under load.
TEST_F(ReplicaCopy, TwoStandbysServeEveryCopyUnderLoad) {
  // A server that is no standby posing as a replica, and a standby without hot_standby_feedback.
  InstanceOptions o;
  o.name = "not_a_standby";
  PgInstance impostor(o);
  InstanceOptions nf;
  nf.name = "no_feedback";
  nf.standby_of = source_.get();
  nf.extra_conf = {"hot_standby_feedback = off"};
  PgInstance no_feedback(nf);
  no_feedback.wait_for_replay(*source_);

  // No replica can serve: the call fails before anything is made, naming each and why.
  load_config(config({&impostor, &no_feedback}), users_toml("prod_new"));
  ServerError none = control_->error_of(
      "SET pgdog_reshard.schema_sync = off; SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  EXPECT_EQ(none.sqlstate, "55000") << none.message;
  EXPECT_NE(none.message.find("no replica of source shard 0"), std::string::npos) << none.message;
  EXPECT_NE(none.detail.find("is not a standby"), std::string::npos) << none.detail;
  EXPECT_NE(none.detail.find("hot_standby_feedback is off"), std::string::npos) << none.detail;
  EXPECT_EQ(control_->value("SELECT count(*) FROM pgdog_reshard.tasks"), "0");
  EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots"), "0");

  // Schema sync on, with no pg_dump 17 on this machine: a pre-flight error, not a failure halfway.
  load_config(config({standbys_[0].get(), standbys_[1].get(), &impostor}), users_toml("prod_new"));
  ServerError dump = control_->error_of("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  EXPECT_EQ(dump.sqlstate, "58P01") << dump.message;
  EXPECT_NE(dump.message.find("pg_dump for PostgreSQL 17"), std::string::npos) << dump.message;
  EXPECT_NE(dump.hint.find("pgdog_reshard.schema_sync = off"), std::string::npos) << dump.hint;
  EXPECT_EQ(control_->value("SELECT count(*) FROM pgdog_reshard.tasks"), "0");

  Load load(*source_, 2);
  std::string task = start_copy();
  ASSERT_TRUE(wait_state(task, "replicating", 180000)) << state(task) << "\n" << control_->log();

  // The impostor was reported and left out; both standbys served, the primary served no table.
  std::map<int, std::string> verdicts = {{standbys_[0]->port(), "usable"},
                                          {standbys_[1]->port(), "usable"},
                                          {impostor.port(), "left out"}};
  std::string expected_verdicts;
  for (const auto &[port, verdict] : verdicts) {
    expected_verdicts += (expected_verdicts.empty() ? "" : ",") + std::to_string(port) + ":" + verdict;
  }
  EXPECT_EQ(control_->value("SELECT string_agg(port || ':' || state, ',' ORDER BY port) FROM reshard_copy_replicas"
                            " WHERE task_id = " + task),
            expected_verdicts);
  EXPECT_EQ(copy_ports(task), ports({standbys_[0].get(), standbys_[1].get()}));
  // A standby's copy takes no slot: the only one is the stream's, on the primary.
  EXPECT_EQ(control_->value("SELECT string_agg(port || ' ' || temporary, ',') FROM reshard_replication_slots"
                            " WHERE task_id = " + task),
            std::to_string(source_->port()) + " false");
  EXPECT_EQ(copies_logged(*source_), 0) << lines_with(source_->log(), "TO STDOUT");
  int first = copies_logged(*standbys_[0]), second = copies_logged(*standbys_[1]);
  EXPECT_GT(first, 0);
  EXPECT_GT(second, 0);
  EXPECT_EQ(first + second, 7) << "one COPY per table";

  load.finish();
  EXPECT_GT(load.writes(), 0);
  ASSERT_TRUE(wait_caught_up(task, 120000)) << state(task);
  expect_identical(*source_, dests_);
  expect_big_identical();

  // The cutover on PostgreSQL 17 servers: its reverse stream (a publication and slots on the new
  // shards) brings a write made on the new cluster back to the old primary.
  std::string cutover = control_->value("SELECT reshard_cutover(" + task + ")");
  std::string outcome;
  wait_until([&] {
    outcome = control_->value("SELECT state || ' ' || coalesce(error, '') FROM reshard_cutover WHERE id = " + cutover);
    return outcome.rfind("done", 0) == 0 || outcome.rfind("aborted", 0) == 0;
  }, 60000);
  ASSERT_EQ(outcome, "done ") << control_->log();
  std::string reverse = control_->value("SELECT reverse_task_id FROM reshard_cutover WHERE id = " + cutover);
  ASSERT_TRUE(wait_state(reverse, "replicating")) << state(reverse);
  dests_[1]->exec("INSERT INTO users VALUES (987654321, 'after the cutover', 0)");
  EXPECT_TRUE(wait_until([&] { return source_->value("SELECT count(*) FROM users WHERE id = 987654321") == "1"; }, 30000))
      << state(reverse);
  control_->exec("SELECT reshard_stop(" + reverse + ")");
  EXPECT_TRUE(wait_state(reverse, "cancelled"));
  for (auto &d : dests_) {
    EXPECT_TRUE(wait_until([&] { return d->value("SELECT count(*) FROM pg_replication_slots") == "0"; })) << d->name();
  }
  EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots"), "0");
}

// The standby a copy reads is stopped mid-copy: that copy starts again at once on the other one
// (no attempt spent), the replica is shown lost, and nothing is lost or doubled.
TEST_F(ReplicaCopy, AStandbyStoppedMidCopyHandsItsTablesOver) {
  load_config(config({standbys_[0].get(), standbys_[1].get()}), users_toml("prod_new"));
  Load load(*source_, 2);
  std::string task = start_copy();
  ASSERT_TRUE(wait_copying(task, "big")) << state(task);
  std::string port = control_->value("SELECT source_port FROM reshard_table_copies WHERE \"table\" = 'big' AND task_id = " + task);
  PgInstance &lost = std::to_string(standbys_[0]->port()) == port ? *standbys_[0] : *standbys_[1];
  PgInstance &kept = &lost == standbys_[0].get() ? *standbys_[1] : *standbys_[0];
  lost.stop("fast");
  ASSERT_TRUE(wait_state(task, "replicating", 180000)) << state(task) << "\n" << control_->log();

  EXPECT_EQ(control_->value("SELECT state FROM reshard_copy_replicas WHERE task_id = " + task + " AND port = " + port),
            "lost");
  EXPECT_EQ(control_->value("SELECT source_port || ' ' || attempts FROM reshard_table_copies WHERE \"table\" = 'big'"
                            " AND task_id = " + task),
            std::to_string(kept.port()) + " 1");
  EXPECT_EQ(copies_logged(*source_), 0);

  load.finish();
  ASSERT_TRUE(wait_caught_up(task, 120000)) << state(task);
  expect_identical(*source_, dests_);
  expect_big_identical();
  stop_and_expect_no_slots(task);
}

}  // namespace
}  // namespace pgdog_reshard::test
