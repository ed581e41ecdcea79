// reshard_replicate end to end: a control node, one source shard, two destination shards. The task
// streams without copying: rows the source held before its slot are not on the destinations, every
// change made after it is, on the shard satisfies_hash_partition names; pre-flight wants the
// destination tables to exist; a slot named by the caller is reused from where it stands.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "reshard_cluster.h"

namespace pgdog_reshard::test {
namespace {

const char *kSchema = R"sql(
CREATE TABLE users (id bigint PRIMARY KEY, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, status text);
CREATE TABLE accounts (code varchar(32) PRIMARY KEY, amount bigint);
CREATE TABLE settings (key text PRIMARY KEY, value text);
INSERT INTO users SELECT g, 'old ' || g FROM generate_series(1, 1000) g;
INSERT INTO orders SELECT g, 1 + g % 1000, 'old' FROM generate_series(1, 2000) g;
INSERT INTO accounts SELECT 'old-' || g, g FROM generate_series(1, 500) g;
INSERT INTO settings VALUES ('mode', 'a'), ('level', '1');
CREATE PUBLICATION pgdog FOR ALL TABLES;
)sql";

// Writes made while the task streams: inserts, updates (a sharding-key move among them) and deletes
// of rows with id > base (accounts: 'new-<base>-n'), and one settings row.
std::string changes(long base) {
  std::string b = std::to_string(base);
  return "INSERT INTO users SELECT " + b + " + g, 'new ' || g FROM generate_series(1, 200) g;"
         "INSERT INTO orders SELECT " + b + " + g, " + b + " + 1 + g % 200, 'new' FROM generate_series(1, 300) g;"
         "INSERT INTO accounts SELECT 'new-" + b + "-' || g, g FROM generate_series(1, 100) g;"
         "UPDATE users SET name = 'updated' WHERE id BETWEEN " + b + " + 1 AND " + b + " + 50;"
         "UPDATE orders SET user_id = user_id + 1, status = 'moved' WHERE id BETWEEN " + b + " + 1 AND " + b + " + 40;"
         "UPDATE accounts SET amount = amount * 10 WHERE code LIKE 'new-" + b + "-1%';"
         "DELETE FROM users WHERE id > " + b + " + 180;"
         "DELETE FROM orders WHERE id BETWEEN " + b + " + 100 AND " + b + " + 120;"
         "DELETE FROM accounts WHERE code LIKE 'new-" + b + "-9%';";
}

struct Checked {
  const char *table;
  const char *key;       // "" = omnisharded
  const char *key_type;  // for the hash oracle
};
const Checked kTables[] = {{"users", "id", "bigint"},
                           {"orders", "user_id", "bigint"},
                           {"accounts", "code", "varchar"},
                           {"settings", "", ""}};


class Replicate : public ReshardCluster {
 protected:
  void SetUp() override {
    start_cluster(kSchema);
    load_config(databases_toml(*source_, dests_, "prod_new") + kProdNewRules, users_toml("prod_new"));
  }

  void schema_sync(const std::string &phase) const {
    std::string task = control_->value("SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog', '" + phase + "')");
    ASSERT_TRUE(wait_state(task, "done")) << state(task) << control_->log();
  }
  // The tables with their keys and indexes, as streaming without a copy needs them.
  void schema_pre_and_post() const {
    schema_sync("pre");
    schema_sync("post");
  }

  // The destinations hold exactly the source rows `new_rows` selects (what was written while the task
  // streamed): sharded tables split across the shards as satisfies_hash_partition says, omnisharded
  // ones whole on every shard.
  void expect_streamed(const Checked &t, const std::string &new_rows) const {
    SCOPED_TRACE(t.table);
    std::vector<std::string> expected = row_hashes(*source_, t.table, new_rows);
    EXPECT_FALSE(expected.empty());
    if (t.key[0] == '\0') {
      for (auto &d : dests_) EXPECT_TRUE(row_hashes(*d, t.table) == expected) << "omnisharded table differs on a shard";
      return;
    }
    std::vector<std::string> actual;
    for (size_t i = 0; i < dests_.size(); i++) {
      auto h = row_hashes(*dests_[i], t.table);
      EXPECT_FALSE(h.empty()) << "shard " << i;
      actual.insert(actual.end(), h.begin(), h.end());
      dests_[i]->exec(std::string("CREATE TABLE IF NOT EXISTS oracle_") + t.key_type + " (k " + t.key_type + ") PARTITION BY HASH (k)");
      EXPECT_EQ(dests_[i]->value(std::string("SELECT count(*) FROM ") + t.table + " WHERE NOT satisfies_hash_partition('oracle_" +
                                 t.key_type + "'::regclass, 2, " + std::to_string(i) + ", " + t.key + ")"),
                "0")
          << "misplaced rows on shard " << i;
    }
    std::sort(actual.begin(), actual.end());
    EXPECT_EQ(actual.size(), expected.size());
    EXPECT_TRUE(actual == expected) << "the destinations differ from the source's new rows";
  }

  void stop(const std::string &task) const {
    EXPECT_EQ(control_->value("SELECT reshard_stop(" + task + ")"), "t");
    EXPECT_TRUE(wait_state(task, "cancelled", 30000)) << state(task) << control_->log();
    EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots"), "0");
    EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_replication_slots WHERE task_id = " + task +
                              " AND dropped_at IS NULL"),
              "0");
  }
};

TEST_F(Replicate, StreamsChangesWithoutCopying) {
  schema_pre_and_post();
  std::string task = control_->value("SELECT reshard_replicate('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating")) << state(task) << control_->log();
  EXPECT_EQ(control_->value("SELECT command FROM reshard_status WHERE id = " + task), "replicate");

  source_->exec(changes(100000));
  source_->exec("INSERT INTO settings VALUES ('fresh', 'x'); UPDATE settings SET value = 'y' WHERE key = 'fresh'");
  ASSERT_TRUE(wait_caught_up(task)) << state(task) << control_->log();

  expect_streamed(kTables[0], "id > 100000");
  expect_streamed(kTables[1], "id > 100000");
  expect_streamed(kTables[2], "code LIKE 'new-%'");
  expect_streamed(kTables[3], "key = 'fresh'");  // 'mode' and 'level' predate the task: not copied

  // One 'skipped' row per table, no watermark; the status claims no copy.
  EXPECT_EQ(control_->value("SELECT string_agg(\"table\" || ':' || state || ':' || coalesce(watermark::text, '-'), ','"
                            " ORDER BY \"table\") FROM reshard_table_copies WHERE task_id = " + task),
            "accounts:skipped:-,orders:skipped:-,settings:skipped:-,users:skipped:-");
  Row status = control_->query("SELECT progress, tables_copied, rows_copied, state FROM reshard_status WHERE id = " + task).at(0);
  EXPECT_FALSE(status[0].has_value()) << "progress " << *status[0];
  EXPECT_EQ(*status[1], "0");
  EXPECT_EQ(*status[2], "0");
  EXPECT_EQ(*status[3], "replicating");
  // No table was ever claimed by a copy; the only slot on the source is the task's permanent one.
  EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_table_copies WHERE task_id = " + task +
                            " AND (attempts > 0 OR started_at IS NOT NULL)"),
            "0");
  EXPECT_EQ(source_->value("SELECT string_agg(slot_name || ':' || temporary, ',') FROM pg_replication_slots"),
            "pgdog_reshard_" + task + "_0:false");
  // Every published column has a built-in type: values travel in binary.
  EXPECT_NE(control_->log().find("values in binary"), std::string::npos) << control_->log();

  stop(task);
}

// A published column of a user-defined type (an enum, and an array of it, whose binary form names
// the element type's OID, which differs between servers) makes the stream ask for text values;
// they arrive intact all the same.
TEST_F(Replicate, UserDefinedTypesStreamAsText) {
  source_->exec("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');"
                "CREATE TABLE feelings (id bigint PRIMARY KEY, m mood, history mood[], at timestamptz)");
  schema_pre_and_post();
  std::string task = control_->value("SELECT reshard_replicate('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating")) << state(task) << control_->log();
  source_->exec(changes(100000));
  source_->exec("INSERT INTO feelings SELECT g, (ARRAY['sad','ok','happy'])[1 + g % 3]::mood,"
                " ARRAY['ok', 'happy']::mood[], timestamptz '2024-01-01 00:00+00' + g * interval '1 hour'"
                " FROM generate_series(1, 50) g;"
                "UPDATE feelings SET m = 'happy', history = history || 'sad'::mood WHERE id <= 10");
  ASSERT_TRUE(wait_caught_up(task)) << state(task) << control_->log();
  expect_streamed(kTables[0], "id > 100000");
  expect_streamed(kTables[1], "id > 100000");
  expect_streamed(Checked{"feelings", "", ""}, "true");
  EXPECT_NE(control_->log().find("values in text"), std::string::npos) << control_->log();
  stop(task);
}

TEST_F(Replicate, MissingDestinationTablesAreRefusedInTheCaller) {
  ServerError e = control_->error_of("SELECT reshard_replicate('prod', 'prod_new', 'pgdog')");
  EXPECT_EQ(e.sqlstate, "42P01") << e.message;
  EXPECT_NE(e.message.find("accounts"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("shard 0 of destination cluster"), std::string::npos) << e.message;
  EXPECT_NE(e.hint.find("reshard_schema_sync('prod', 'prod_new', 'pgdog', 'pre')"), std::string::npos) << e.hint;

  // Present on shard 0 only (with rows: a destination's rows may be anything): shard 1 is named.
  dests_[0]->exec(
      "CREATE TABLE users (id bigint PRIMARY KEY, name text);"
      "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, status text);"
      "CREATE TABLE accounts (code varchar(32) PRIMARY KEY, amount bigint);"
      "CREATE TABLE settings (key text PRIMARY KEY, value text);"
      "INSERT INTO settings VALUES ('mode', 'a')");
  e = control_->error_of("SELECT reshard_replicate('prod', 'prod_new', 'pgdog', 'given_slot')");
  EXPECT_EQ(e.sqlstate, "42P01") << e.message;
  EXPECT_NE(e.message.find("shard 1 of destination cluster"), std::string::npos) << e.message;

  // Tables from schema sync pre alone have no keys yet: the upserts would have nothing to conflict
  // on. The table and the shard are named, and the hint gives the call that builds the keys.
  dests_[0]->exec("DROP TABLE users, orders, accounts, settings");
  schema_sync("pre");
  e = control_->error_of("SELECT reshard_replicate('prod', 'prod_new', 'pgdog')");
  EXPECT_EQ(e.sqlstate, "55000") << e.message;
  EXPECT_NE(e.message.find("has no unique index on ("), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("of destination cluster"), std::string::npos) << e.message;
  EXPECT_NE(e.hint.find("reshard_schema_sync('prod', 'prod_new', 'pgdog', 'post')"), std::string::npos) << e.hint;

  // Nothing was created: no task (but the schema sync's), no slot.
  EXPECT_EQ(control_->value("SELECT string_agg(command, ',') FROM reshard_status"), "schema_sync");
  EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots"), "0");
}

TEST_F(Replicate, GivenSlotIsReusedWithTheChangesSinceItWasCreated) {
  schema_pre_and_post();
  // The destinations already hold some of the data (as after a restore): the stream applies onto it.
  for (auto &d : dests_) d->exec("INSERT INTO settings VALUES ('mode', 'a')");
  source_->exec("SELECT pg_create_logical_replication_slot('my_slot', 'pgoutput')");
  std::string created_at = source_->value("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'my_slot'");
  // Changes after the slot, before the task: streamed too.
  source_->exec(changes(200000));
  source_->exec("UPDATE settings SET value = 'b' WHERE key = 'mode'");

  std::string task = control_->value("SELECT reshard_replicate('prod', 'prod_new', 'pgdog', 'my_slot')");
  ASSERT_TRUE(wait_state(task, "replicating")) << state(task) << control_->log();
  Row slot = control_->query("SELECT slot, lsn::text FROM reshard_replication_slots WHERE task_id = " + task).at(0);
  EXPECT_EQ(*slot[0], "my_slot");
  EXPECT_EQ(*slot[1], created_at) << "the slot was not taken from where it stood";
  EXPECT_EQ(source_->value("SELECT string_agg(slot_name, ',') FROM pg_replication_slots"), "my_slot");

  source_->exec(changes(300000));
  ASSERT_TRUE(wait_caught_up(task)) << state(task) << control_->log();
  expect_streamed(kTables[0], "id > 200000");
  expect_streamed(kTables[1], "id > 200000");
  expect_streamed(kTables[2], "code LIKE 'new-%'");
  expect_streamed(kTables[3], "key = 'mode'");  // the destinations' own row, updated by the stream
  EXPECT_EQ(dests_[0]->value("SELECT value FROM settings WHERE key = 'mode'"), "b");

  stop(task);
}

// Hot rows: the stream merges a row's repeated UPDATEs within a batch (one statement per row per
// batch on the destination), on tables whose only unique index is the primary key. A table with a
// second unique key is not merged: its rows swap emails through a third value in one transaction,
// which only works applied in the source's order. Both end equal to the source.
TEST_F(Replicate, HotRowsMergeAndASecondUniqueKeyKeepsItsOrder) {
  source_->exec("CREATE TABLE counters (id bigint PRIMARY KEY, n bigint, note text);"
                "CREATE TABLE logins (id bigint PRIMARY KEY, email text UNIQUE)");
  schema_pre_and_post();
  std::string task = control_->value("SELECT reshard_replicate('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating")) << state(task) << control_->log();

  source_->exec("INSERT INTO counters SELECT g, 0, 'c' FROM generate_series(1, 10) g;"
                "INSERT INTO logins VALUES (1, 'x'), (2, 'y')");
  source_->exec(R"sql(DO $$ BEGIN
    FOR i IN 1..300 LOOP
      UPDATE counters SET n = n + 1 WHERE id = 1 + i % 3;
      UPDATE logins SET email = 'swapping' WHERE id = 1;
      UPDATE logins SET email = CASE WHEN i % 2 = 1 THEN 'x' ELSE 'y' END WHERE id = 2;
      UPDATE logins SET email = CASE WHEN i % 2 = 1 THEN 'y' ELSE 'x' END WHERE id = 1;
    END LOOP;
  END $$)sql");
  std::string small;
  for (int i = 1; i <= 50; i++) {
    small += "BEGIN; UPDATE counters SET n = n + 10 WHERE id = 5; DELETE FROM counters WHERE id = 6;"
             "INSERT INTO counters VALUES (6, " + std::to_string(i) + ", 'again'); COMMIT;";
  }
  source_->exec(small);
  ASSERT_TRUE(wait_caught_up(task)) << state(task) << control_->log();
  expect_streamed(Checked{"counters", "", ""}, "true");
  expect_streamed(Checked{"logins", "", ""}, "true");
  EXPECT_EQ(source_->value("SELECT string_agg(id || email, ',' ORDER BY id) FROM logins"), "1x,2y");

  // The destination sessions' statistics arrive a moment after their commits. logins took every one
  // of its 900 updates; counters far fewer than the source's 350.
  auto updates = [&](size_t shard, const char *table) {
    return std::stoll(dests_[shard]->value(std::string("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = '") +
                                           table + "'"));
  };
  for (size_t i = 0; i < dests_.size(); i++) {
    EXPECT_TRUE(wait_until([&] { return updates(i, "logins") >= 900; }, 20000)) << "shard " << i;
    EXPECT_EQ(updates(i, "logins"), 900) << "shard " << i;
    EXPECT_LE(updates(i, "counters"), 100) << "shard " << i << ": the counters' updates were not merged";
  }
  EXPECT_TRUE(wait_until([&] {
    return source_->value("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'counters'") == "350";
  })) << "the source's counters took 350 updates";
  stop(task);
}

}  // namespace
}  // namespace pgdog_reshard::test
