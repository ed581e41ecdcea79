// Streaming end to end: a write load runs on the source during the copy and after it; when it stops
// and the stream has confirmed the source's last position, every destination table together equals
// the source row for row, and every row is on the shard satisfies_hash_partition names.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "core/pg.h"
#include "harness.h"
#include "reshard_cluster.h"

namespace pgdog_reshard::test {
namespace {

const char *kSchema = R"sql(
CREATE TABLE users (id bigint PRIMARY KEY, name text, balance numeric NOT NULL DEFAULT 0);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, status text, note text);
ALTER TABLE orders ALTER COLUMN note SET STORAGE EXTERNAL;
CREATE TABLE accounts (code varchar(32) PRIMARY KEY, owner bigint, amount bigint);
CREATE TABLE events (id bigint, user_id bigint NOT NULL, payload text);
ALTER TABLE events REPLICA IDENTITY FULL;
CREATE TABLE settings (key text PRIMARY KEY, value text);
CREATE TABLE scratch (id bigint PRIMARY KEY, user_id bigint NOT NULL);
INSERT INTO users SELECT g, 'user ' || g, g FROM generate_series(1, 2000) g;
INSERT INTO orders SELECT g, 1 + g % 2000, 'new', CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 3500) ELSE 'n' || g END
  FROM generate_series(1, 6000) g;
INSERT INTO accounts SELECT 'acct-' || g, g % 2000, g FROM generate_series(1, 1000) g;
INSERT INTO events SELECT g, 1 + g % 2000, 'e' || g FROM generate_series(1, 1000) g;
INSERT INTO settings VALUES ('mode', 'a'), ('level', '1');
INSERT INTO scratch SELECT g, g FROM generate_series(1, 500) g;
CREATE PUBLICATION pgdog FOR ALL TABLES;
)sql";

struct Checked {
  const char *table;
  const char *key;       // "" = omnisharded
  const char *key_type;
};
const Checked kTables[] = {{"users", "id", "bigint"},       {"orders", "user_id", "bigint"},
                           {"accounts", "code", "varchar"}, {"events", "user_id", "bigint"},
                           {"scratch", "user_id", "bigint"}, {"settings", "", ""}};


// One writing client: inserts, updates (ordinary, TOASTed-row and sharding-key), deletes and
// multi-table transactions, at random, until told to stop.
void write_load(const PgInstance &src, int client, std::atomic<bool> &stop, std::atomic<long> &writes) {
  PollWaiter waiter;
  ConnParams params;
  params.host = src.host();
  params.port = src.port();
  params.dbname = "postgres";
  params.user = "postgres";
  Connection conn(params, waiter);
  std::mt19937_64 rng(client * 7919 + 1);
  long next_id = 1000000L * (client + 1);
  while (!stop) {
    long user = 1 + rng() % 2000, order = 1 + rng() % 6000;
    std::string u = std::to_string(user), o = std::to_string(order);
    switch (rng() % 9) {
      case 0: conn.exec("INSERT INTO orders VALUES (" + std::to_string(next_id++) + ", " + u + ", 'new', 'load')"); break;
      case 1: conn.exec("UPDATE orders SET status = 'paid' WHERE id = " + o); break;
      case 2: conn.exec("UPDATE orders SET user_id = 1 + (user_id + 7) % 2000 WHERE id = " + o); break;  // key move
      case 3: conn.exec("UPDATE orders SET status = 'shipped' WHERE id = (SELECT min(id) FROM orders WHERE length(note) > 1000 AND id > " + o + ")"); break;
      case 4: conn.exec("DELETE FROM orders WHERE id = " + o); break;
      case 5:
        conn.exec("BEGIN; UPDATE users SET balance = balance + 1 WHERE id = " + u + "; INSERT INTO events VALUES (" +
                  std::to_string(next_id++) + ", " + u + ", 'tx'); UPDATE accounts SET amount = amount + 1 WHERE code = 'acct-" +
                  std::to_string(1 + rng() % 1000) + "'; COMMIT");
        break;
      case 6: conn.exec("UPDATE events SET payload = payload || '+' WHERE id = " + std::to_string(1 + rng() % 1000)); break;
      case 7: conn.exec("INSERT INTO users VALUES (" + std::to_string(next_id++) + ", 'new', 0)"); break;
      default: conn.exec("UPDATE settings SET value = '" + std::to_string(rng() % 100) + "' WHERE key = 'level'"); break;
    }
    writes++;
  }
}

class Streaming : public ReshardCluster {
 protected:
  void SetUp() override {
    start_cluster(kSchema, {"synchronous_commit = on"});
    load_config(databases_toml(*source_, dests_, "prod_new") + kProdNewRules, users_toml("prod_new"));
  }

  void expect_identical() const {
    for (const Checked &t : kTables) {
      SCOPED_TRACE(t.table);
      std::vector<std::string> expected = row_hashes(*source_, t.table);
      if (t.key[0] == '\0') {
        for (auto &d : dests_) EXPECT_TRUE(row_hashes(*d, t.table) == expected) << "omnisharded table differs on a shard";
        continue;
      }
      std::vector<std::string> actual;
      for (auto &d : dests_) {
        auto h = row_hashes(*d, t.table);
        actual.insert(actual.end(), h.begin(), h.end());
      }
      std::sort(actual.begin(), actual.end());
      EXPECT_EQ(actual.size(), expected.size());
      EXPECT_TRUE(actual == expected) << "rows differ between the source and the destinations";
      for (size_t d = 0; d < dests_.size(); d++) {
        dests_[d]->exec(std::string("CREATE TABLE IF NOT EXISTS oracle_") + t.key_type + " (k " + t.key_type + ") PARTITION BY HASH (k)");
        EXPECT_EQ(dests_[d]->value(std::string("SELECT count(*) FROM ") + t.table + " WHERE NOT satisfies_hash_partition('oracle_" +
                                   t.key_type + "'::regclass, 2, " + std::to_string(d) + ", " + t.key + ")"),
                  "0")
            << "misplaced rows on shard " << d;
      }
    }
  }

};

struct Load {
  std::atomic<bool> stop{false};
  std::atomic<long> writes{0};
  std::vector<std::thread> threads;
  Load(const PgInstance &src, int clients) {
    for (int i = 0; i < clients; i++) threads.emplace_back([&, i] { write_load(src, i, stop, writes); });
  }
  void finish() {
    stop = true;
    for (auto &t : threads) t.join();
    threads.clear();
  }
  ~Load() {
    if (!threads.empty()) finish();
  }
};

TEST_F(Streaming, ChangesDuringAndAfterTheCopyArriveExactlyOnce) {
  Load load(*source_, 4);
  std::string task = control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating", 180000)) << state(task) << control_->log();
  // A TRUNCATE in the stream, then more load after the copy.
  source_->exec("TRUNCATE scratch");
  source_->exec("INSERT INTO scratch SELECT g, g FROM generate_series(1, 300) g");
  wait_until([&] { return load.writes > 3000; }, 30000);
  load.finish();
  ASSERT_TRUE(wait_caught_up(task, 120000)) << control_->log();
  EXPECT_GT(load.writes.load(), 500);
  expect_identical();
  EXPECT_EQ(control_->value("SELECT lag_bytes FROM reshard_status WHERE id = " + task), "0");
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_replication_slots WHERE task_id = " + task + " AND last_commit_at IS NOT NULL"), "1");
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
    long before = load.writes;
    wait_until([&] { return load.writes > before + 500; }, 20000);
    ASSERT_EQ(kill(std::stoi(pid), SIGKILL), 0) << "stream worker " << pid << " gone before the kill";
    killed = pid;
  }
  control_->restart("immediate");
  long before = load.writes;
  wait_until([&] { return load.writes > before + 1000; }, 30000);
  load.finish();
  ASSERT_TRUE(wait_state(task, "replicating", 180000)) << state(task) << control_->log();
  ASSERT_TRUE(wait_caught_up(task, 120000)) << control_->log();
  expect_identical();
  control_->value("SELECT reshard_stop(" + task + ")");
  EXPECT_TRUE(wait_state(task, "cancelled", 180000));
}

}  // namespace
}  // namespace pgdog_reshard::test
