// Faults during reshard_schema_sync / reshard_copy_data, end to end through SQL on real instances:
// a control node with the extension, one source shard, two destination shards. A destination that
// restarts mid-copy, a copy worker killed by SIGKILL (a crash of the control node's backends), a
// reshard_stop() during the copy and a table whose every attempt fails: each ends in the state the
// contract names, with complete data or with every replication slot released.
//
// The source (with a table big enough that its copy takes seconds) and the control node are shared
// by the suite; every test gets two fresh destination shards and ends every task it started.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgdog_reshard::test {
namespace {

using Clock = std::chrono::steady_clock;

// Narrow rows, sharded by id: its copy takes a few seconds, long enough to act on it mid-way.
constexpr long kBigRows = 4000000;

const char *kSchema = R"sql(
CREATE TABLE big (id bigint PRIMARY KEY, v integer NOT NULL);
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, created date);
CREATE UNIQUE INDEX users_email ON users (email);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id), total numeric(10,2),
  CONSTRAINT orders_total_positive CHECK (total >= 0));
CREATE INDEX orders_user ON orders (user_id);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE SEQUENCE invoice_no START 500 CACHE 10;
CREATE SEQUENCE countdown INCREMENT -1 START 0 MINVALUE -100000 MAXVALUE 0;
CREATE SEQUENCE unused_seq;
CREATE PUBLICATION pgdog FOR ALL TABLES;
)sql";

const std::string kData = R"sql(
INSERT INTO big SELECT g, (g::bigint * 7919) % 100000 FROM generate_series(1, )sql" +
                          std::to_string(kBigRows) + R"sql() g;
INSERT INTO users SELECT g, 'user' || g || '@example.com', '2024-01-01'::date + g % 365 FROM generate_series(1, 3000) g;
INSERT INTO orders SELECT g, g % 3000 + 1, (g % 1000) / 7.0 FROM generate_series(1, 4000) g;
INSERT INTO countries VALUES ('fr', 'France'), ('de', 'Germany'), ('jp', 'Japan'), ('br', 'Brazil');
SELECT count(nextval('invoice_no')) FROM generate_series(1, 1234);
SELECT count(nextval('countdown')) FROM generate_series(1, 77);
ANALYZE;
)sql";

struct Table {
  const char *name;
  const char *key;  // sharding column; "" = omnisharded
};
const Table kTables[] = {{"big", "id"}, {"users", "id"}, {"orders", "user_id"}, {"countries", ""}};

const char *kUsers = R"(
[[users]]
name = "postgres"
database = "prod"
[[users]]
name = "postgres"
database = "prod_new"
)";

std::string config_toml(const PgInstance &source, const std::vector<std::unique_ptr<PgInstance>> &destinations) {
  std::string toml = database_entry("prod", 0, source) + cluster_entries("prod_new", destinations);
  toml += R"(
[[sharded_tables]]
database = "prod_new"
column = "user_id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_new"
name = "users"
column = "id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_new"
name = "big"
column = "id"
data_type = "bigint"
)";
  return toml;
}

// Count and an order-independent checksum of the rows (the sum of each row's 64-bit hash, shifted so
// that the sum cannot overflow): summed over the destination shards it must equal the source's.
struct Digest {
  long long rows = 0;
  std::string checksum;  // numeric, as text
};

Digest digest(const PgInstance &pg, const std::string &table) {
  Row r =
      pg.query("SELECT count(*), coalesce(sum(hash_record_extended(t, 0) >> 8), 0)::text FROM " + table + " t").at(0);
  return Digest{std::stoll(*r[0]), *r[1]};
}

class CopyTaskFaults : public ::testing::Test {
 protected:
  static std::unique_ptr<PgInstance> control_;
  static std::unique_ptr<PgInstance> source_;
  static std::string setup_error_;

  static void SetUpTestSuite() {
    try {
      InstanceOptions c;
      c.name = "control";
      c.preload_extension = true;
      // Catalog writes must survive the crash restart that SIGKILL of a worker causes.
      c.extra_conf = {"pgdog_reshard.parallel_copies = 2", "synchronous_commit = on"};
      control_ = std::make_unique<PgInstance>(c);
      control_->exec("CREATE EXTENSION pgdog_reshard");
      InstanceOptions s;
      s.name = "src";
      source_ = std::make_unique<PgInstance>(s);
      source_->exec(kSchema);
      source_->exec(kData);
    } catch (const std::exception &e) {
      setup_error_ = e.what();
    }
  }

  static void TearDownTestSuite() {
    source_.reset();
    control_.reset();
  }

  void SetUp() override {
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    log_offset_ = control_->log().size();
    for (int i = 0; i < 2; i++) {
      InstanceOptions o;
      o.name = "dst" + std::to_string(i);
      // Destinations keep the harness's synchronous_commit = off: a destination restarted
      // "immediate" must still keep every copy it committed, because the copy forces it on.
      destinations_.push_back(std::make_unique<PgInstance>(o));
    }
    control_->exec("SELECT reshard_load_config($t$" + config_toml(*source_, destinations_) + "$t$, $u$" + kUsers +
                   "$u$)");
  }

  // Every task of this test ends and every slot on the source goes, so that the next test starts
  // clean even after a failure here.
  void TearDown() override {
    if (!control_ || !source_) return;
    try {
      wait_until([&] { return safe_value("SELECT 1") == "1"; }, 60000);
      for (const Row &r :
           control_->query("SELECT id FROM reshard_status WHERE state NOT IN ('done', 'failed', 'cancelled')")) {
        control_->value("SELECT reshard_stop(" + *r[0] + ")");
      }
      wait_until(
          [&] {
            return safe_value(
                       "SELECT count(*) FROM reshard_status WHERE state NOT IN ('done', 'failed', 'cancelled')") ==
                       "0" &&
                   safe_value(
                       "SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('pgdog_reshard copy', "
                       "'pgdog_reshard task')") == "0";
          },
          30000);
      wait_until([&] { return source_->value("SELECT count(*) FROM pg_replication_slots WHERE active") == "0"; },
                 15000);
      source_->exec("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE NOT active");
    } catch (const std::exception &e) {
      ADD_FAILURE() << "cleanup: " << e.what();
    }
  }

  // The control node's log since this test started: what a failure message shows.
  std::string log() const {
    std::string all = control_->log();
    return "\ncontrol node log:\n" + (all.size() > log_offset_ ? all.substr(log_offset_) : all);
  }

  // A query that may meet the control node while it restarts after a crash: "" then.
  std::string safe_value(const std::string &sql) const {
    try {
      return control_->value(sql);
    } catch (const std::exception &) {
      return "";
    }
  }

  // "state phase error" of a task once it reaches `state` or an end state (done, failed, cancelled),
  // or as last seen when the timeout passes. The caller asserts the state it got.
  std::string wait_state(const std::string &task, const std::string &state, int timeout_ms = 240000) const {
    std::string last;
    wait_until(
        [&] {
          last = safe_value(
              "SELECT state || ' ' || coalesce(phase, '') || ' ' || coalesce(error, '') FROM reshard_status"
              " WHERE id = " +
              task);
          for (const char *end : {"done", "failed", "cancelled"}) {
            if (last.rfind(end, 0) == 0) return true;
          }
          return last.rfind(state, 0) == 0;
        },
        timeout_ms);
    return last;
  }

  static bool starts_with(const std::string &s, const std::string &prefix) { return s.rfind(prefix, 0) == 0; }

  std::string start_copy() const { return control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')"); }

  // Waits until the big table is being copied with rows already written; false if it never is.
  bool wait_big_copying(const std::string &task) const {
    return wait_until(
        [&] {
          return safe_value("SELECT count(*) FROM reshard_table_copies WHERE task_id = " + task +
                            " AND \"table\" = 'big' AND state = 'running' AND rows > 0") == "1";
        },
        120000);
  }

  std::string copies(const std::string &task) const {
    std::string out;
    for (const Row &r :
         control_->query("SELECT \"table\", state, attempts, rows, coalesce(error, '') FROM reshard_table_copies"
                         " WHERE task_id = " +
                         task + " ORDER BY 1")) {
      out += "  " + *r[0] + ": " + *r[1] + ", attempts " + *r[2] + ", rows " + *r[3] + " " + *r[4] + "\n";
    }
    return out;
  }

  // Every table's rows are on the destinations exactly once, on the shard PostgreSQL's own hash
  // partitioning names, with the source's content; the omnisharded table whole on every shard.
  // (A duplicate shows as an extra row, a lost or altered row in the count or the checksum.)
  void expect_complete_copy() const {
    for (const Table &t : kTables) {
      SCOPED_TRACE(t.name);
      Digest expected = digest(*source_, t.name);
      ASSERT_GT(expected.rows, 0);
      if (t.key[0] == '\0') {
        for (auto &d : destinations_) {
          Digest got = digest(*d, t.name);
          EXPECT_EQ(got.rows, expected.rows);
          EXPECT_EQ(got.checksum, expected.checksum);
        }
        continue;
      }
      long long rows = 0;
      std::string checksum = "0";
      for (size_t i = 0; i < destinations_.size(); i++) {
        const PgInstance &d = *destinations_[i];
        Digest got = digest(d, t.name);
        EXPECT_GT(got.rows, 0) << "shard " << i;
        rows += got.rows;
        checksum = d.value("SELECT (" + checksum + "::numeric + " + got.checksum + "::numeric)::text");
        d.exec("CREATE TABLE IF NOT EXISTS oracle_bigint (k bigint) PARTITION BY HASH (k)");
        EXPECT_EQ(d.value(std::string("SELECT count(*) FROM ") + t.name +
                          " WHERE NOT satisfies_hash_partition("
                          "'oracle_bigint'::regclass, " +
                          std::to_string(destinations_.size()) + ", " + std::to_string(i) + ", " + t.key + ")"),
                  "0")
            << "rows on the wrong shard " << i;
      }
      EXPECT_EQ(rows, expected.rows);
      EXPECT_EQ(checksum, expected.checksum) << "row contents differ";
    }
  }

  std::vector<std::unique_ptr<PgInstance>> destinations_;
  size_t log_offset_ = 0;
};

std::unique_ptr<PgInstance> CopyTaskFaults::control_;
std::unique_ptr<PgInstance> CopyTaskFaults::source_;
std::string CopyTaskFaults::setup_error_;

TEST_F(CopyTaskFaults, SchemaSyncThroughSql) {
  const std::string count_tasks = "SELECT count(*) FROM reshard_status";
  std::string pre = control_->value("SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog', 'pre')");
  ASSERT_FALSE(pre.empty());
  std::string end = wait_state(pre, "done");
  ASSERT_TRUE(starts_with(end, "done")) << end << log();

  // Every statement ran on both shards, in the same order, and is done.
  auto statements = [&](const std::string &task, int shard) {
    return control_->query("SELECT seq, kind, state, statement FROM reshard_schema_sync WHERE task_id = " + task +
                           " AND shard = " + std::to_string(shard) + " ORDER BY seq");
  };
  EXPECT_EQ(
      control_->value("SELECT string_agg(DISTINCT shard::text, ',') FROM reshard_schema_sync WHERE task_id = " + pre),
      "0,1");
  EXPECT_EQ(control_->value("SELECT string_agg(DISTINCT phase, ',') FROM reshard_schema_sync WHERE task_id = " + pre),
            "pre");
  std::vector<Row> shard0 = statements(pre, 0), shard1 = statements(pre, 1);
  ASSERT_GE(shard0.size(), 4u);  // at least the four tables
  EXPECT_EQ(shard0, shard1);
  for (const Row &r : shard0) EXPECT_EQ(*r[2], "done") << *r[3];
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_schema_sync WHERE task_id = " + pre + " AND kind = 'TABLE'"),
            "8");

  // The tables exist on both destinations without any index, primary keys included, or foreign
  // key: those are built after the copy.
  const std::string tables =
      "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'r'"
      " AND relnamespace = 'public'::regnamespace";
  const std::string indexes =
      "SELECT coalesce(string_agg(indexname, ',' ORDER BY indexname), '') FROM pg_indexes"
      " WHERE schemaname = 'public'";
  // CHECK constraints are part of pg_dump's CREATE TABLE (pre); keys come with post.
  const std::string constraints =
      "SELECT coalesce(string_agg(conname, ',' ORDER BY conname), '') FROM pg_constraint"
      " WHERE connamespace = 'public'::regnamespace AND contype <> 'c'";
  for (auto &d : destinations_) {
    EXPECT_EQ(d->value(tables), "big,countries,orders,users");
    EXPECT_EQ(d->value(indexes), "");
    EXPECT_EQ(d->value(constraints), "");
    EXPECT_EQ(d->value("SELECT count(*) FROM big"), "0");
  }

  // post adds the keys, indexes and constraints: the destinations now match the source.
  std::string post = control_->value("SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog', 'post')");
  end = wait_state(post, "done");
  ASSERT_TRUE(starts_with(end, "done")) << end << log();
  EXPECT_EQ(
      control_->value("SELECT count(*) FROM reshard_schema_sync WHERE task_id = " + post + " AND state <> 'done'"),
      "0");
  EXPECT_EQ(control_->value("SELECT string_agg(DISTINCT phase, ',') FROM reshard_schema_sync WHERE task_id = " + post),
            "post");
  EXPECT_EQ(statements(post, 0).size(), statements(post, 1).size());
  for (auto &d : destinations_) {
    EXPECT_EQ(d->value(indexes), source_->value(indexes));
    EXPECT_EQ(d->value(constraints), source_->value(constraints));
    EXPECT_EQ(d->value(indexes), "big_pkey,countries_pkey,orders_pkey,orders_user,users_email,users_pkey");
    EXPECT_EQ(d->value(constraints), "big_pkey,countries_pkey,orders_pkey,orders_user_id_fkey,users_pkey");
  }

  // pre again: harmless, every statement finds its object in place.
  std::string again = control_->value("SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog', 'pre')");
  end = wait_state(again, "done");
  ASSERT_TRUE(starts_with(end, "done")) << end << log();
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_schema_sync WHERE task_id = " + again),
            std::to_string(2 * shard0.size()));
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_schema_sync WHERE task_id = " + again +
                            " AND state NOT IN ('done', 'exists')"),
            "0");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_schema_sync WHERE task_id = " + again +
                            " AND kind = 'TABLE' AND state = 'exists'"),
            "8");
  EXPECT_EQ(
      control_->value("SELECT count(*) FROM reshard_schema_sync WHERE task_id = " + again + " AND state = 'exists'" +
                      " AND error IS NOT NULL"),
      control_->value("SELECT count(*) FROM reshard_schema_sync WHERE task_id = " + again + " AND state = 'exists'"));

  // Unknown and not yet supported phases: refused in the caller, no task created.
  std::string before = control_->value(count_tasks);
  ServerError bogus = control_->error_of("SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog', 'bogus')");
  EXPECT_EQ(bogus.sqlstate, "22023") << bogus.message;
  EXPECT_NE(bogus.message.find("bogus"), std::string::npos) << bogus.message;
  EXPECT_EQ(control_->value(count_tasks), before);
}

// The cutover phase moves every destination sequence past what the source handed out, from the
// source sequence's own state (not max(id)), in both directions, and re-running it is harmless.
TEST_F(CopyTaskFaults, SchemaSyncCutoverSetsSequencesFromTheSource) {
  std::string pre = control_->value("SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog', 'pre')");
  ASSERT_TRUE(starts_with(wait_state(pre, "done"), "done")) << log();
  std::string source_before = source_->value("SELECT string_agg(sequencename || '=' || coalesce(last_value::text, '-'), ',' ORDER BY 1) FROM pg_sequences");
  for (int run = 0; run < 2; run++) {
    std::string task = control_->value("SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog', 'cutover')");
    ASSERT_TRUE(starts_with(wait_state(task, "done"), "done")) << log();
    // Two used sequences on two shards; the unused one is left alone.
    EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_schema_sync WHERE task_id = " + task +
                              " AND phase = 'cutover' AND kind = 'SEQUENCE SET' AND state = 'done'"),
              "4");
  }
  // invoice_no handed out 500..1733, and with CACHE 10 the source may have handed out up to the end
  // of its cached chunk: its own last_value says how far; countdown handed out 0..-76.
  std::string invoice_last = source_->value("SELECT last_value FROM pg_sequences WHERE sequencename = 'invoice_no'");
  ASSERT_GE(std::stoll(invoice_last), 1733);
  for (auto &d : destinations_) {
    EXPECT_EQ(d->value("SELECT nextval('invoice_no')"), std::to_string(std::stoll(invoice_last) + 1));
    EXPECT_EQ(d->value("SELECT nextval('countdown')"), "-77");
    EXPECT_EQ(d->value("SELECT nextval('unused_seq')"), "1");
  }
  // Reading the source's sequences did not advance them.
  EXPECT_EQ(source_->value("SELECT string_agg(sequencename || '=' || coalesce(last_value::text, '-'), ',' ORDER BY 1) FROM pg_sequences"),
            source_before);
}

TEST_F(CopyTaskFaults, DestinationRestartDuringCopyIsRetried) {
  std::string task = start_copy();
  ASSERT_TRUE(wait_big_copying(task)) << wait_state(task, "none", 1) << "\n" << copies(task) << log();

  destinations_[1]->restart("immediate");

  std::string end = wait_state(task, "replicating");
  ASSERT_TRUE(starts_with(end, "replicating")) << end << "\n" << copies(task) << log();
  // Every attempt counts in table_copies.attempts, retries inside the worker included.
  int attempts = std::stoi(
      control_->value("SELECT attempts FROM reshard_table_copies WHERE task_id = " + task + " AND \"table\" = 'big'"));
  EXPECT_GE(attempts, 2) << "the copy of big was not retried\n" << copies(task) << log();
  EXPECT_EQ(
      control_->value("SELECT count(*) FROM reshard_table_copies WHERE task_id = " + task + " AND state <> 'done'"),
      "0");
  EXPECT_EQ(control_->value("SELECT rows FROM reshard_table_copies WHERE task_id = " + task + " AND \"table\" = 'big'"),
            std::to_string(kBigRows));
  expect_complete_copy();
}

TEST_F(CopyTaskFaults, KilledCopyWorkerIsReplaced) {
  std::string task = start_copy();
  ASSERT_TRUE(wait_big_copying(task)) << wait_state(task, "none", 1) << "\n" << copies(task) << log();
  std::string task_worker = control_->value("SELECT worker_pid FROM pgdog_reshard.tasks WHERE id = " + task);
  std::string pid = control_->value(
      "SELECT coalesce(max(a.pid), 0) FROM pgdog_reshard.table_copies c JOIN pg_stat_activity a ON a.pid = c.worker_pid"
      " AND a.backend_type = 'pgdog_reshard copy' WHERE c.task_id = " +
      task + " AND c.table_name = 'big'");
  ASSERT_NE(pid, "0") << "no copy worker holds big\n" << copies(task);
  ASSERT_EQ(kill(std::stoi(pid), SIGKILL), 0);

  // The postmaster restarts every backend; the launcher gives the task a new worker.
  ASSERT_TRUE(wait_until(
      [&] {
        std::string now = safe_value("SELECT worker_pid FROM pgdog_reshard.tasks WHERE id = " + task);
        return !now.empty() && now != task_worker;
      },
      60000))
      << "the task got no new worker" << log();

  std::string end = wait_state(task, "replicating");
  ASSERT_TRUE(starts_with(end, "replicating")) << end << "\n" << copies(task) << log();
  EXPECT_NE(control_->log().find("terminated by signal 9"), std::string::npos) << log();
  EXPECT_GE(std::stoi(control_->value("SELECT attempts FROM reshard_table_copies WHERE task_id = " + task +
                                      " AND \"table\" = 'big'")),
            2)
      << copies(task);
  EXPECT_EQ(
      control_->value("SELECT count(*) FROM reshard_table_copies WHERE task_id = " + task + " AND state <> 'done'"),
      "0");
  expect_complete_copy();

  // Only the task's permanent slot is left on the source: the temporary ones went with their sessions.
  const std::string permanent = "pgdog_reshard_" + task + "_0";
  const std::string slots =
      "SELECT coalesce(string_agg(slot_name || ':' || temporary, ',' ORDER BY slot_name), '')"
      " FROM pg_replication_slots";
  std::string left;
  wait_until([&] { return (left = source_->value(slots)) == permanent + ":false"; }, 10000);
  EXPECT_EQ(left, permanent + ":false");
  EXPECT_EQ(control_->value("SELECT string_agg(slot, ',') FROM reshard_replication_slots WHERE task_id = " + task +
                            " AND dropped_at IS NULL AND NOT temporary"),
            permanent);
}

TEST_F(CopyTaskFaults, StopDuringCopyCancelsAndDropsSlots) {
  std::string task = start_copy();
  ASSERT_TRUE(wait_big_copying(task)) << wait_state(task, "none", 1) << "\n" << copies(task) << log();
  ASSERT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots WHERE NOT temporary"), "1");
  ASSERT_GE(std::stoi(source_->value("SELECT count(*) FROM pg_replication_slots WHERE temporary")), 1);

  auto stopped_at = Clock::now();
  EXPECT_EQ(control_->value("SELECT reshard_stop(" + task + ")"), "t");
  std::string end = wait_state(task, "cancelled", 30000);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - stopped_at).count();
  ASSERT_TRUE(starts_with(end, "cancelled")) << end << "\n" << copies(task) << log();
  EXPECT_LE(took, 10000) << "cancelling took " << took << " ms";
  EXPECT_NE(control_->value("SELECT error FROM reshard_status WHERE id = " + task).find("stopped"), std::string::npos);
  EXPECT_NE(control_->value("SELECT finished_at FROM reshard_status WHERE id = " + task), "");

  // The permanent slot is dropped before the task says cancelled; the temporary ones go with the
  // copy sessions the stop ended.
  EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots WHERE NOT temporary"), "0");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_replication_slots WHERE task_id = " + task +
                            " AND dropped_at IS NULL"),
            "0");
  std::string slots, workers;
  wait_until(
      [&] {
        slots = source_->value("SELECT count(*) FROM pg_replication_slots");
        workers = control_->value(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('pgdog_reshard copy',"
            " 'pgdog_reshard task')");
        return slots == "0" && workers == "0";
      },
      5000);
  EXPECT_EQ(slots, "0") << source_->value("SELECT string_agg(slot_name, ',') FROM pg_replication_slots");
  EXPECT_EQ(workers, "0");
  // And it stays stopped: nothing restarts it.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_TRUE(starts_with(control_->value("SELECT state FROM reshard_status WHERE id = " + task), "cancelled"));
  EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots"), "0");
}

TEST_F(CopyTaskFaults, FinalFailureFailsTaskAndDropsSlots) {
  // The tables exist on the destinations; shard 0 then refuses some of the orders rows routed to it.
  std::string pre = control_->value("SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog', 'pre')");
  std::string end = wait_state(pre, "done");
  ASSERT_TRUE(starts_with(end, "done")) << end << log();
  destinations_[0]->exec("ALTER TABLE orders ADD CONSTRAINT reject_some CHECK (id % 10 <> 7)");

  std::string task = start_copy();
  end = wait_state(task, "replicating");
  ASSERT_TRUE(starts_with(end, "failed")) << end << "\n" << copies(task) << log();
  std::string error = control_->value("SELECT error FROM reshard_status WHERE id = " + task);
  EXPECT_NE(error.find("orders"), std::string::npos) << error;
  EXPECT_NE(error.find("reject_some"), std::string::npos) << error;
  EXPECT_NE(control_->value("SELECT finished_at FROM reshard_status WHERE id = " + task), "");

  Row orders = control_
                   ->query("SELECT state, attempts, error FROM reshard_table_copies WHERE task_id = " + task +
                           " AND \"table\" = 'orders'")
                   .at(0);
  EXPECT_EQ(*orders[0], "failed") << copies(task);
  // Every attempt is counted where operators look (the error says "attempt 3 of 3").
  // Three attempts, all counted, then the table fails for good.
  EXPECT_EQ(*orders[1], "3") << copies(task);
  EXPECT_NE(orders[2].value_or("").find("attempt 3 of 3"), std::string::npos) << orders[2].value_or("");
  // Nothing of orders was committed on either shard.
  for (auto &d : destinations_) EXPECT_EQ(d->value("SELECT count(*) FROM orders"), "0");

  // The permanent slot is dropped (and recorded so); the temporary ones go with the copy sessions.
  EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots WHERE NOT temporary"), "0");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_replication_slots WHERE task_id = " + task + " AND NOT temporary"),
            "1");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_replication_slots WHERE task_id = " + task +
                            " AND dropped_at IS NULL"),
            "0");
  std::string slots, workers;
  wait_until(
      [&] {
        slots = source_->value("SELECT count(*) FROM pg_replication_slots");
        workers = control_->value(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type IN ('pgdog_reshard copy',"
            " 'pgdog_reshard task')");
        return slots == "0" && workers == "0";
      },
      5000);
  EXPECT_EQ(slots, "0") << source_->value("SELECT string_agg(slot_name, ',') FROM pg_replication_slots");
  EXPECT_EQ(workers, "0");
  // A failed task is over: stopping it changes nothing.
  EXPECT_EQ(control_->value("SELECT reshard_stop(" + task + ")"), "f");
  EXPECT_TRUE(starts_with(control_->value("SELECT state FROM reshard_status WHERE id = " + task), "failed"));
}

TEST_F(CopyTaskFaults, StopOfFinishedTaskReturnsFalse) {
  std::string task = control_->value("SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog', 'pre')");
  std::string end = wait_state(task, "done");
  ASSERT_TRUE(starts_with(end, "done")) << end << log();
  std::string finished = control_->value("SELECT finished_at FROM reshard_status WHERE id = " + task);
  EXPECT_EQ(control_->value("SELECT reshard_stop(" + task + ")"), "f");
  Row r = control_->query("SELECT state, coalesce(error, ''), finished_at::text FROM reshard_status WHERE id = " + task)
              .at(0);
  EXPECT_EQ(*r[0], "done");
  EXPECT_EQ(*r[1], "");
  EXPECT_EQ(*r[2], finished);
  EXPECT_EQ(control_->value("SELECT stop_requested FROM pgdog_reshard.tasks WHERE id = " + task), "f");
}

TEST_F(CopyTaskFaults, StopOfUnknownTaskIs42704) {
  std::string before = control_->value("SELECT count(*) FROM reshard_status");
  std::string unknown = control_->value("SELECT coalesce(max(id), 0) + 1000 FROM pgdog_reshard.tasks");
  ServerError e = control_->error_of("SELECT reshard_stop(" + unknown + ")");
  EXPECT_EQ(e.sqlstate, "42704") << e.message;
  EXPECT_NE(e.message.find(unknown), std::string::npos) << e.message;
  EXPECT_EQ(control_->value("SELECT reshard_stop(NULL)"), "");  // STRICT: NULL in, NULL out
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_status"), before);
}

}  // namespace
}  // namespace pgdog_reshard::test
