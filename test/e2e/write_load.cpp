#include "write_load.h"

#include <algorithm>
#include <random>

#include <gtest/gtest.h>

#include "core/pg.h"
#include "reshard_cluster.h"

namespace pgdog_reshard::test {

const char *const kLoadSchema = R"sql(
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

const std::vector<LoadTable> kLoadTables = {{"users", "id", "bigint"},       {"orders", "user_id", "bigint"},
                                            {"accounts", "code", "varchar"}, {"events", "user_id", "bigint"},
                                            {"scratch", "user_id", "bigint"}, {"settings", "", ""}};

Load::Load(const PgInstance &src, int clients, bool truncates) {
  for (int i = 0; i < clients; i++) threads_.emplace_back([this, &src, i, truncates] { run(src, i, truncates); });
}

Load::~Load() { finish(); }

void Load::finish() {
  stop_ = true;
  for (auto &t : threads_) t.join();
  threads_.clear();
}

void Load::run(const PgInstance &src, int client, bool truncates) {
  PollWaiter waiter;
  ConnParams params;
  params.host = src.host();
  params.port = src.port();
  params.dbname = "postgres";
  params.user = "postgres";
  std::mt19937_64 rng(client * 7919 + 1);
  long next_id = 1000000L * (client + 1);
  std::unique_ptr<Connection> conn;
  while (!stop_) {
    long user = 1 + rng() % 2000, order = 1 + rng() % 6000;
    std::string u = std::to_string(user), o = std::to_string(order);
    std::string sql;
    switch (rng() % 9) {
      case 0: sql = "INSERT INTO orders VALUES (" + std::to_string(next_id++) + ", " + u + ", 'new', 'load')"; break;
      case 1: sql = "UPDATE orders SET status = 'paid' WHERE id = " + o; break;
      case 2: sql = "UPDATE orders SET user_id = 1 + (user_id + 7) % 2000 WHERE id = " + o; break;  // key move
      case 3: sql = "UPDATE orders SET status = 'shipped' WHERE id = (SELECT min(id) FROM orders WHERE length(note) > 1000 AND id > " + o + ")"; break;
      case 4: sql = "DELETE FROM orders WHERE id = " + o; break;
      case 5:
        sql = "BEGIN; UPDATE users SET balance = balance + 1 WHERE id = " + u + "; INSERT INTO events VALUES (" +
              std::to_string(next_id++) + ", " + u + ", 'tx'); UPDATE accounts SET amount = amount + 1 WHERE code = 'acct-" +
              std::to_string(1 + rng() % 1000) + "'; COMMIT";
        break;
      case 6: sql = "UPDATE events SET payload = payload || '+' WHERE id = " + std::to_string(1 + rng() % 1000); break;
      case 7: sql = "INSERT INTO users VALUES (" + std::to_string(next_id++) + ", 'new', 0)"; break;
      default: sql = "UPDATE settings SET value = '" + std::to_string(rng() % 100) + "' WHERE key = 'level'"; break;
    }
    if (truncates && client == 0 && rng() % 400 == 0) {
      sql = "BEGIN; TRUNCATE scratch; INSERT INTO scratch SELECT g, g FROM generate_series(1, 300) g; COMMIT";
    }
    try {
      if (!conn) conn = std::make_unique<Connection>(params, waiter);
      conn->exec(sql);
      writes_++;
    } catch (const std::exception &) {
      // A source restarted by the test: reconnect and go on (the statement may or may not have
      // committed; the comparison is with the source, whatever it holds).
      errors_++;
      conn.reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
}

void expect_identical(const PgInstance &source, const std::vector<std::unique_ptr<PgInstance>> &dests) {
  for (const LoadTable &t : kLoadTables) {
    SCOPED_TRACE(t.table);
    std::vector<std::string> expected = ReshardCluster::row_hashes(source, t.table);
    if (t.key[0] == '\0') {
      for (auto &d : dests) EXPECT_TRUE(ReshardCluster::row_hashes(*d, t.table) == expected) << "omnisharded table differs on " << d->name();
      continue;
    }
    std::vector<std::string> actual;
    for (auto &d : dests) {
      auto h = ReshardCluster::row_hashes(*d, t.table);
      actual.insert(actual.end(), h.begin(), h.end());
    }
    std::sort(actual.begin(), actual.end());
    EXPECT_EQ(actual.size(), expected.size());
    EXPECT_TRUE(actual == expected) << "rows differ between the source and the destinations";
    for (size_t d = 0; d < dests.size(); d++) {
      dests[d]->exec(std::string("CREATE TABLE IF NOT EXISTS oracle_") + t.key_type + " (k " + t.key_type + ") PARTITION BY HASH (k)");
      EXPECT_EQ(dests[d]->value(std::string("SELECT count(*) FROM ") + t.table + " WHERE NOT satisfies_hash_partition('oracle_" +
                                t.key_type + "'::regclass, " + std::to_string(dests.size()) + ", " + std::to_string(d) + ", " +
                                t.key + ")"),
                "0")
          << "misplaced rows on shard " << d;
    }
  }
}

}  // namespace pgdog_reshard::test
