// copy_table() and truncate_destinations() (src/engine/table_copy.h) between real PostgreSQL 15
// servers: one source, up to three destination shards. Every copy is checked against the source
// row by row (an md5 of each row's text form, keyed by primary key, over the union of the shards),
// for placement (hash keys with PostgreSQL's own satisfies_hash_partition, list and range keys
// with the rule written in SQL), and for what it must not do: copy rows committed after the
// watermark, fire destination triggers, write to the source, leave a slot behind, or commit
// anything when it fails or is cancelled.
#include <gtest/gtest.h>

#include "expect_error.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/config.h"
#include "core/error.h"
#include "core/lsn.h"
#include "core/pg.h"
#include "engine/table_copy.h"
#include "engine/table_plan.h"
#include "engine/task_context.h"
#include "harness.h"

namespace pgdog_reshard {
namespace {

using test::InstanceOptions;
using test::PgInstance;
using Clock = std::chrono::steady_clock;

constexpr int kDestinations = 3;
constexpr int kBigRows = 1000000;

bool has(const std::string &text, const std::string &needle) {
  return text.find(needle) != std::string::npos;
}

// Records what the copy reports, and lets a test act at the snapshot or on progress.
class Recorder : public TableCopyObserver {
 public:
  void snapshot_taken(Lsn watermark) override {
    this->watermark = watermark;
    if (on_snapshot) on_snapshot(watermark);
  }
  void progress(uint64_t rows, uint64_t bytes) override {
    progress_calls++;
    last_rows = rows;
    last_bytes = bytes;
    if (on_progress) on_progress(rows);
  }

  std::function<void(Lsn)> on_snapshot;
  std::function<void(uint64_t)> on_progress;
  std::optional<Lsn> watermark;
  int progress_calls = 0;
  uint64_t last_rows = 0;
  uint64_t last_bytes = 0;
};

Mapping list_of(std::vector<int64_t> values, int shard) {
  Mapping m;
  m.kind = Mapping::Kind::List;
  for (int64_t v : values) m.values.emplace_back(v);
  m.shard = shard;
  return m;
}

Mapping range_of(std::optional<int64_t> start, std::optional<int64_t> end, int shard) {
  Mapping m;
  m.kind = Mapping::Kind::Range;
  if (start) m.start = Key(*start);
  if (end) m.end = Key(*end);
  m.shard = shard;
  return m;
}

Mapping default_to(int shard) {
  Mapping m;
  m.kind = Mapping::Kind::Default;
  m.shard = shard;
  return m;
}

ShardedTable rule_for(const std::string &table, const std::string &column, DataType type,
                      std::vector<Mapping> mappings = {}) {
  ShardedTable rule;
  rule.database = "destination";
  rule.schema = "public";
  rule.table = table;
  rule.column = column;
  rule.data_type = type;
  rule.mappings = std::move(mappings);
  return rule;
}

// A plan as pre-flight would make it: `key` must be one of `columns`; no rule = omnisharded.
TablePlan plan_for(const std::string &table, std::vector<std::string> columns,
                   const ShardedTable *rule = nullptr, KeyType key_type = KeyType::Int8) {
  TablePlan plan;
  plan.schema = "public";
  plan.name = table;
  plan.columns = std::move(columns);
  if (rule) {
    ShardingKey key;
    key.column = rule->column;
    for (size_t i = 0; i < plan.columns.size(); i++) {
      if (plan.columns[i] == rule->column) key.index = static_cast<int>(i);
    }
    key.type = key_type;
    key.rule = rule;
    plan.key = key;
  }
  return plan;
}

// Primary key (as text) -> md5 of the row's text form.
using RowDigests = std::map<std::string, std::string>;

class TableCopy : public ::testing::Test {
 protected:
  // Four servers started at once: the source and three destination shards.
  static void SetUpTestSuite() {
    std::vector<std::future<std::unique_ptr<PgInstance>>> starting;
    for (int i = 0; i <= kDestinations; i++) {
      starting.push_back(std::async(std::launch::async, [i] {
        InstanceOptions options;
        options.name = i == 0 ? "tcopy_source" : "tcopy_dest" + std::to_string(i - 1);
        return std::make_unique<PgInstance>(options);
      }));
    }
    source_ = starting[0].get();
    for (int i = 1; i <= kDestinations; i++) destinations_.push_back(starting[i].get());
    for (auto &destination : destinations_) {
      destination->exec(
          "CREATE TABLE oracle_bigint (k bigint) PARTITION BY HASH (k);"
          "CREATE TABLE oracle_varchar (k varchar) PARTITION BY HASH (k);"
          "CREATE TABLE oracle_uuid (k uuid) PARTITION BY HASH (k)");
    }
  }
  static void TearDownTestSuite() {
    destinations_.clear();
    source_.reset();
    big_ready_ = false;
  }

  static PgInstance &source() { return *source_; }
  static PgInstance &destination(int shard) { return *destinations_[shard]; }

  static ConnParams params(const PgInstance &pg, const std::string &db = "postgres") {
    ConnParams p;
    p.host = pg.host();
    p.port = pg.port();
    p.dbname = db;
    p.user = "postgres";
    p.application_name = "table_copy_test";
    return p;
  }
  static std::vector<ConnParams> shard_params(int shards, const std::string &db = "postgres") {
    std::vector<ConnParams> out;
    for (int r = 0; r < shards; r++) out.push_back(params(destination(r), db));
    return out;
  }

  // The same DDL on the source and on the first `shards` destinations (schema sync's job in
  // production); `data` runs on the source only.
  static void create_everywhere(const std::string &ddl, const std::string &data, int shards,
                                const std::string &db = "postgres") {
    source().exec(ddl + ";" + data, db);
    for (int r = 0; r < shards; r++) destination(r).exec(ddl, db);
  }

  static TableCopyResult run_copy(const TablePlan &plan, int shards, Recorder *recorder = nullptr,
                                  const std::string &db = "postgres") {
    SimpleTaskContext ctx;
    return copy_table(plan, params(source(), db), shard_params(shards, db), "tc_" + plan.name, ctx,
                      recorder);
  }

  static RowDigests digests(const PgInstance &pg, const std::string &table,
                            const std::string &pk = "id", const std::string &db = "postgres") {
    RowDigests out;
    for (const test::Row &row :
         pg.query("SELECT " + pk + "::text, md5(t::text) FROM " + table + " t", db)) {
      out[*row[0]] = *row[1];
    }
    return out;
  }

  // The union of the shards' rows; a row found on two shards is counted in `duplicates`.
  static RowDigests shard_union(const std::string &table, int shards, int *duplicates,
                                const std::string &pk = "id", const std::string &db = "postgres") {
    RowDigests all;
    *duplicates = 0;
    for (int r = 0; r < shards; r++) {
      for (const auto &[key, digest] : digests(destination(r), table, pk, db)) {
        if (!all.emplace(key, digest).second) ++*duplicates;
      }
    }
    return all;
  }

  static int64_t count(const PgInstance &pg, const std::string &table,
                       const std::string &where = "true", const std::string &db = "postgres") {
    return std::stoll(pg.value("SELECT count(*) FROM " + table + " WHERE " + where, db));
  }

  // Every source row on exactly one shard with identical content; shard counts as reported.
  static void expect_exact_copy(const std::string &table, int shards,
                                const TableCopyResult &result, const std::string &db = "postgres") {
    RowDigests expected = digests(source(), table, "id", db);
    int duplicates = 0;
    RowDigests copied = shard_union(table, shards, &duplicates, "id", db);
    EXPECT_EQ(duplicates, 0) << table;
    EXPECT_EQ(copied.size(), expected.size()) << table;
    EXPECT_TRUE(copied == expected) << table << ": the shards' rows differ from the source's";
    EXPECT_EQ(result.rows, expected.size());
    ASSERT_EQ(result.rows_per_shard.size(), static_cast<size_t>(shards));
    for (int r = 0; r < shards; r++) {
      EXPECT_EQ(static_cast<int64_t>(result.rows_per_shard[r]),
                count(destination(r), table, "true", db))
          << table << " shard " << r;
      EXPECT_GT(result.rows_per_shard[r], 0u) << table << " shard " << r << " got nothing";
    }
  }

  // No row on shard r for which `misplaced(r)` (an SQL condition) holds.
  static void expect_placement(const std::string &table, int shards,
                               const std::function<std::string(int)> &misplaced,
                               const std::string &db = "postgres") {
    for (int r = 0; r < shards; r++) {
      EXPECT_EQ(count(destination(r), table, misplaced(r), db), 0) << table << " shard " << r;
    }
  }

  // Placement as PostgreSQL's PARTITION BY HASH (MODULUS shards) would do it.
  static void expect_hash_placement(const std::string &table, const std::string &key,
                                    const std::string &oracle, int shards,
                                    const std::string &db = "postgres") {
    expect_placement(
        table, shards,
        [&](int r) {
          return "NOT satisfies_hash_partition('" + oracle + "'::regclass, " +
                 std::to_string(shards) + ", " + std::to_string(r) + ", " + key + ")";
        },
        db);
  }

  // The temporary slot goes with its session, which ends as the copy returns.
  static void expect_no_slot_left() {
    EXPECT_TRUE(test::wait_until(
        [] { return source().value("SELECT count(*) FROM pg_replication_slots") == "0"; }, 5000))
        << "a replication slot was left on the source";
  }

  // A 1M-row table on the source and the first two destinations, made once for the tests that
  // need a copy long enough to interrupt.
  static void ensure_big_table() {
    if (big_ready_) return;
    create_everywhere("CREATE TABLE big (id bigint PRIMARY KEY, k bigint NOT NULL, payload text)",
                      "INSERT INTO big SELECT g, g * 31, md5(g::text) || md5((g * 7)::text)"
                      " FROM generate_series(1, " + std::to_string(kBigRows) + ") g",
                      2);
    big_ready_ = true;
  }

  static std::unique_ptr<PgInstance> source_;
  static std::vector<std::unique_ptr<PgInstance>> destinations_;
  static bool big_ready_;
};

std::unique_ptr<PgInstance> TableCopy::source_;
std::vector<std::unique_ptr<PgInstance>> TableCopy::destinations_;
bool TableCopy::big_ready_ = false;

// Types and column kinds that travel as opaque bytes, a TOASTed value, NULLs, an identity column
// copied as is and a generated column the destination computes; hash on a bigint key, 1 -> 2.
TEST_F(TableCopy, HashBigintKeyOneToTwoWithEveryColumnKind) {
  create_everywhere(
      "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');"
      "CREATE DOMAIN positive AS integer CHECK (VALUE > 0);"
      "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
      " customer bigint NOT NULL, amount numeric(14, 3), doc jsonb, tags text[], counts int[],"
      " blob bytea, placed timestamptz, feeling mood, qty positive, note text,"
      " doubled numeric GENERATED ALWAYS AS (amount * 2) STORED)",
      "INSERT INTO orders (customer, amount, doc, tags, counts, blob, placed, feeling, qty, note)"
      " SELECT g * 7919 - 40000000,"
      "  CASE WHEN g % 5 = 0 THEN NULL ELSE g * 1.125 - 5000 END,"
      "  CASE WHEN g % 6 = 0 THEN NULL"
      "       ELSE jsonb_build_object('g', g, 'l', jsonb_build_array(g, 'x')) END,"
      "  CASE WHEN g % 7 = 0 THEN NULL ELSE ARRAY['t' || g, NULL, 'ü'] END,"
      "  ARRAY[g, -g],"
      "  CASE WHEN g % 8 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,"
      "  '2024-02-29 12:00:00+00'::timestamptz + g * interval '1 minute',"
      "  (ARRAY['sad', 'ok', 'happy']::mood[])[g % 3 + 1],"
      "  CASE WHEN g % 9 = 0 THEN NULL ELSE g END,"
      "  CASE WHEN g % 4000 = 1"
      "       THEN (SELECT string_agg(md5(i::text || g), '') FROM generate_series(1, 4000) i)"
      "       WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g || ' 日本' END"
      " FROM generate_series(1, 20000) g",
      2);
  ASSERT_GT(std::stoll(source().value("SELECT max(length(note)) FROM orders")), 100000);
  ASSERT_NE(source().value("SELECT reltoastrelid FROM pg_class WHERE relname = 'orders'"), "0");

  const ShardedTable rule = rule_for("orders", "customer", DataType::Bigint);
  TablePlan plan = plan_for("orders",
                            {"id", "customer", "amount", "doc", "tags", "counts", "blob", "placed",
                             "feeling", "qty", "note"},
                            &rule, KeyType::Int8);
  Recorder recorder;
  TableCopyResult result = run_copy(plan, 2, &recorder);

  expect_exact_copy("orders", 2, result);
  expect_hash_placement("orders", "customer", "oracle_bigint", 2);
  EXPECT_TRUE(result.watermark.is_valid());
  EXPECT_EQ(recorder.watermark, result.watermark);
  EXPECT_GE(recorder.progress_calls, 1);  // at least the final report
  EXPECT_EQ(recorder.last_rows, result.rows);
  EXPECT_EQ(recorder.last_bytes, result.bytes);
  EXPECT_GT(result.bytes, 20000u * 100);
  expect_no_slot_left();
}

TEST_F(TableCopy, HashVarcharKeyOneToThree) {
  create_everywhere(
      "CREATE TABLE accounts (id bigint PRIMARY KEY, email varchar(200) NOT NULL, name text,"
      " balance numeric)",
      "INSERT INTO accounts SELECT g,"
      "  CASE WHEN g = 1 THEN '' ELSE 'user' || g || repeat('é', g % 4) || '@example.com' END,"
      "  CASE WHEN g % 3 = 0 THEN NULL ELSE 'Ünïcødé ' || g END, g * 0.01"
      " FROM generate_series(1, 30000) g",
      3);
  const ShardedTable rule = rule_for("accounts", "email", DataType::Varchar);
  TableCopyResult result =
      run_copy(plan_for("accounts", {"id", "email", "name", "balance"}, &rule, KeyType::Text), 3);
  expect_exact_copy("accounts", 3, result);
  expect_hash_placement("accounts", "email", "oracle_varchar", 3);
  expect_no_slot_left();
}

TEST_F(TableCopy, HashUuidKeyOneToThree) {
  create_everywhere(
      "CREATE TABLE events (id bigint PRIMARY KEY, device uuid NOT NULL, payload jsonb,"
      " seen timestamptz)",
      "INSERT INTO events SELECT g, md5(g::text)::uuid,"
      "  CASE WHEN g % 5 = 0 THEN NULL ELSE jsonb_build_object('n', g) END,"
      "  CASE WHEN g % 7 = 0 THEN NULL ELSE now() - g * interval '1 second' END"
      " FROM generate_series(1, 30000) g",
      3);
  const ShardedTable rule = rule_for("events", "device", DataType::Uuid);
  TableCopyResult result = run_copy(
      plan_for("events", {"id", "device", "payload", "seen"}, &rule, KeyType::Uuid), 3);
  expect_exact_copy("events", 3, result);
  expect_hash_placement("events", "device", "oracle_uuid", 3);
  expect_no_slot_left();
}

// An integer key (int4 on the source) under list mappings with a default shard.
TEST_F(TableCopy, ListRuleOneToThree) {
  create_everywhere(
      "CREATE TABLE regions (id bigint PRIMARY KEY, region integer NOT NULL, label text)",
      "INSERT INTO regions SELECT g, g % 9, 'label ' || g FROM generate_series(1, 9000) g", 3);
  const ShardedTable rule = rule_for("regions", "region", DataType::Bigint,
                                     {list_of({1, 2, 3}, 0), list_of({4, 5}, 1), default_to(2)});
  TableCopyResult result =
      run_copy(plan_for("regions", {"id", "region", "label"}, &rule, KeyType::Int4), 3);
  expect_exact_copy("regions", 3, result);
  expect_placement("regions", 3, [](int r) {
    return "(CASE WHEN region IN (1, 2, 3) THEN 0 WHEN region IN (4, 5) THEN 1 ELSE 2 END) <> " +
           std::to_string(r);
  });
  expect_no_slot_left();
}

TEST_F(TableCopy, RangeRuleOneToThree) {
  create_everywhere(
      "CREATE TABLE readings (id bigint PRIMARY KEY, bucket bigint NOT NULL, v float8)",
      "INSERT INTO readings SELECT g, g - 2000, g / 3.0 FROM generate_series(1, 9000) g", 3);
  const ShardedTable rule = rule_for(
      "readings", "bucket", DataType::Bigint,
      {range_of(std::nullopt, 1000, 0), range_of(1000, 5000, 1), range_of(5000, std::nullopt, 2)});
  TableCopyResult result =
      run_copy(plan_for("readings", {"id", "bucket", "v"}, &rule, KeyType::Int8), 3);
  expect_exact_copy("readings", 3, result);
  expect_placement("readings", 3, [](int r) {
    return "(CASE WHEN bucket < 1000 THEN 0 WHEN bucket < 5000 THEN 1 ELSE 2 END) <> " +
           std::to_string(r);
  });
  expect_no_slot_left();
}

TEST_F(TableCopy, OmnishardedTableGoesWholeToEveryShard) {
  create_everywhere("CREATE TABLE countries (id bigint PRIMARY KEY, code text, name text)",
                    "INSERT INTO countries SELECT g, 'c' || g, CASE WHEN g % 4 = 0 THEN NULL"
                    " ELSE 'Country ' || g END FROM generate_series(1, 2500) g",
                    3);
  TableCopyResult result = run_copy(plan_for("countries", {"id", "code", "name"}), 3);
  RowDigests expected = digests(source(), "countries");
  EXPECT_EQ(result.rows, expected.size());
  for (int r = 0; r < 3; r++) {
    EXPECT_TRUE(digests(destination(r), "countries") == expected) << "shard " << r;
    EXPECT_EQ(result.rows_per_shard[r], expected.size()) << "shard " << r;
  }
  expect_no_slot_left();
}

// Two source shards, each with half of the rows, copied at the same time into the same three
// destination shards: the union is exactly both sources.
TEST_F(TableCopy, TwoSourcesIntoThreeShards) {
  const std::string ddl =
      "CREATE TABLE payments (id bigint PRIMARY KEY, payer bigint NOT NULL, memo text)";
  for (const char *db : {"src_a", "src_b"}) source().exec(std::string("CREATE DATABASE ") + db);
  const std::string rows = "; INSERT INTO payments SELECT g, g * 13, 'memo ' || g FROM ";
  source().exec(ddl + rows + "generate_series(1, 15000) g", "src_a");
  source().exec(ddl + rows + "generate_series(15001, 30000) g", "src_b");
  for (int r = 0; r < 3; r++) destination(r).exec(ddl);

  const ShardedTable rule = rule_for("payments", "payer", DataType::Bigint);
  const TablePlan plan = plan_for("payments", {"id", "payer", "memo"}, &rule, KeyType::Int8);
  auto copy_from = [&](const std::string &db) {
    SimpleTaskContext ctx;
    return copy_table(plan, params(source(), db), shard_params(3), "tc_payments_" + db, ctx);
  };
  auto a = std::async(std::launch::async, copy_from, "src_a");
  auto b = std::async(std::launch::async, copy_from, "src_b");
  TableCopyResult from_a = a.get(), from_b = b.get();
  EXPECT_EQ(from_a.rows, 15000u);
  EXPECT_EQ(from_b.rows, 15000u);

  RowDigests expected = digests(source(), "payments", "id", "src_a");
  for (const auto &entry : digests(source(), "payments", "id", "src_b")) expected.insert(entry);
  ASSERT_EQ(expected.size(), 30000u);
  int duplicates = 0;
  EXPECT_TRUE(shard_union("payments", 3, &duplicates) == expected);
  EXPECT_EQ(duplicates, 0);
  for (int r = 0; r < 3; r++) {
    EXPECT_EQ(static_cast<int64_t>(from_a.rows_per_shard[r] + from_b.rows_per_shard[r]),
              count(destination(r), "payments"));
  }
  expect_hash_placement("payments", "payer", "oracle_bigint", 3);
  expect_no_slot_left();
}

// Rows committed before the snapshot are copied, rows committed after it are not (replication
// brings them), and the watermark is the temporary slot's consistent point.
TEST_F(TableCopy, WatermarkSeparatesCopiedFromLaterRows) {
  create_everywhere("CREATE TABLE marks (id bigint PRIMARY KEY, k bigint NOT NULL, v text)",
                    "INSERT INTO marks SELECT g, g, 'old' FROM generate_series(1, 1000) g", 2);
  source().exec("INSERT INTO marks VALUES (1001, 1001, 'committed before the copy')");
  Lsn before = Lsn::parse_or_throw(source().value("SELECT pg_current_wal_lsn()"));

  Recorder recorder;
  std::optional<std::string> slot_lsn, slot_temporary;
  recorder.on_snapshot = [&](Lsn) {
    for (const test::Row &row : source().query(
             "SELECT confirmed_flush_lsn::text, temporary::text FROM pg_replication_slots"
             " WHERE slot_name = 'tc_marks'")) {
      slot_lsn = row[0];
      slot_temporary = row[1];
    }
    source().exec("INSERT INTO marks VALUES (1002, 1002, 'committed after the snapshot')");
  };
  const ShardedTable rule = rule_for("marks", "k", DataType::Bigint);
  TableCopyResult result = run_copy(plan_for("marks", {"id", "k", "v"}, &rule), 2, &recorder);
  Lsn after = Lsn::parse_or_throw(source().value("SELECT pg_current_wal_lsn()"));

  ASSERT_TRUE(slot_lsn.has_value()) << "no slot tc_marks while the copy ran";
  EXPECT_EQ(*slot_lsn, result.watermark.to_string());
  EXPECT_EQ(slot_temporary, "true");
  EXPECT_GT(result.watermark, before);
  EXPECT_LE(result.watermark, after);
  EXPECT_EQ(result.rows, 1001u);
  int64_t copied_before = 0, copied_after = 0;
  for (int r = 0; r < 2; r++) {
    copied_before += count(destination(r), "marks", "id = 1001");
    copied_after += count(destination(r), "marks", "id = 1002");
  }
  EXPECT_EQ(copied_before, 1);
  EXPECT_EQ(copied_after, 0);
  expect_no_slot_left();
}

// Destination triggers (one that fails every insert, one that audits), a foreign key to an empty
// table, and a truncate trigger that fails: none fires for the copy or the truncate of a retry.
TEST_F(TableCopy, DestinationTriggersAndForeignKeysDoNotFire) {
  create_everywhere("CREATE TABLE watched (id bigint PRIMARY KEY, k bigint NOT NULL, v text)",
                    "INSERT INTO watched SELECT g, g, 'v' || g FROM generate_series(1, 3000) g", 2);
  for (int r = 0; r < 2; r++) {
    destination(r).exec(
        "CREATE TABLE audit_log (what text);"
        "CREATE TABLE parents (id bigint PRIMARY KEY);"
        "ALTER TABLE watched ADD FOREIGN KEY (k) REFERENCES parents (id);"
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'trigger fired on %', TG_OP; END $$;"
        "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN INSERT INTO audit_log VALUES (TG_OP); RETURN NULL; END $$;"
        "CREATE TRIGGER refuse_insert BEFORE INSERT ON watched"
        " FOR EACH ROW EXECUTE FUNCTION refuse();"
        "CREATE TRIGGER audit_insert AFTER INSERT ON watched"
        " FOR EACH ROW EXECUTE FUNCTION audit();"
        "CREATE TRIGGER refuse_truncate BEFORE TRUNCATE ON watched EXECUTE FUNCTION refuse();"
        "CREATE TRIGGER audit_truncate AFTER TRUNCATE ON watched EXECUTE FUNCTION audit()");
  }
  const ShardedTable rule = rule_for("watched", "k", DataType::Bigint);
  const TablePlan plan = plan_for("watched", {"id", "k", "v"}, &rule);
  TableCopyResult result = run_copy(plan, 2);
  expect_exact_copy("watched", 2, result);
  for (int r = 0; r < 2; r++) EXPECT_EQ(count(destination(r), "audit_log"), 0) << "shard " << r;

  // The retry path: truncate (its triggers do not fire either), then copy again.
  SimpleTaskContext ctx;
  truncate_destinations(plan, shard_params(2), ctx);
  for (int r = 0; r < 2; r++) {
    EXPECT_EQ(count(destination(r), "watched"), 0) << "shard " << r;
    EXPECT_EQ(count(destination(r), "audit_log"), 0) << "shard " << r;
  }
  expect_exact_copy("watched", 2, run_copy(plan, 2));
}

// The copy only reads the source: its write counters do not move and no slot is left.
TEST_F(TableCopy, SourceIsLeftUnchanged) {
  create_everywhere("CREATE TABLE untouched (id bigint PRIMARY KEY, k bigint NOT NULL, v text)",
                    "INSERT INTO untouched SELECT g, g, 'v' FROM generate_series(1, 5000) g;"
                    "UPDATE untouched SET v = 'w' WHERE id <= 10;"
                    "DELETE FROM untouched WHERE id > 4995",
                    2);
  const std::string stats =
      "SELECT n_tup_ins || '/' || n_tup_upd || '/' || n_tup_del || '/' || n_tup_hot_upd"
      " FROM pg_stat_user_tables WHERE relname = 'untouched'";
  // Statistics reach the shared counters when a session ends: wait for the writer's.
  ASSERT_TRUE(test::wait_until([&] { return has(source().value(stats), "5000/10/5"); }))
      << source().value(stats);
  const std::string counters = source().value(stats);

  const ShardedTable rule = rule_for("untouched", "k", DataType::Bigint);
  expect_exact_copy("untouched", 2, run_copy(plan_for("untouched", {"id", "k", "v"}, &rule), 2));
  expect_no_slot_left();
  ASSERT_TRUE(test::wait_until([] {
    return source().value("SELECT count(*) FROM pg_stat_activity"
                          " WHERE application_name = 'table_copy_test'") == "0";
  }));
  EXPECT_EQ(source().value(stats), counters);
}

// Text travels in the client encoding, but the shard is decided by the bytes the source stores:
// a LATIN1 database whose sessions default to UTF8 must still be hashed as LATIN1, exactly as
// PostgreSQL partitions it. A destination in another encoding is refused for a text key.
TEST_F(TableCopy, TextKeyHashedAsStoredWhateverTheClientEncoding) {
  const std::string create =
      "CREATE DATABASE latin TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'";
  const std::string utf8_clients = "ALTER DATABASE latin SET client_encoding = 'UTF8'";
  source().exec(create);
  source().exec(utf8_clients);
  for (int r = 0; r < 3; r++) {
    destination(r).exec(create);
    destination(r).exec(utf8_clients);
    destination(r).exec("CREATE TABLE oracle_varchar (k varchar) PARTITION BY HASH (k)", "latin");
  }
  create_everywhere("CREATE TABLE people (id bigint PRIMARY KEY, name varchar NOT NULL, city text)",
                    "INSERT INTO people SELECT g, 'Zoë Müller-' || g || repeat('é', g % 5),"
                    " 'Besançon ' || g FROM generate_series(1, 6000) g",
                    3, "latin");
  ASSERT_EQ(source().value("SELECT octet_length(name) FROM people WHERE id = 1", "latin"),
            std::to_string(std::string("Zoë Müller-1é").size() - 3));  // one byte per letter

  const ShardedTable rule = rule_for("people", "name", DataType::Varchar);
  const TablePlan plan = plan_for("people", {"id", "name", "city"}, &rule, KeyType::Text);
  TableCopyResult result = run_copy(plan, 3, nullptr, "latin");
  expect_exact_copy("people", 3, result, "latin");
  expect_hash_placement("people", "name", "oracle_varchar", 3, "latin");

  // Into UTF8 destinations the stored bytes would not be the hashed ones: refused up front.
  for (int r = 0; r < 3; r++) {
    destination(r).exec("CREATE TABLE people (id bigint PRIMARY KEY, name varchar, city text)");
  }
  SimpleTaskContext ctx;
  Error e = error_of([&] {
    copy_table(plan, params(source(), "latin"), shard_params(3), "tc_people_utf8", ctx);
  });
  EXPECT_EQ(e.sqlstate(), sqlstate::kFeatureNotSupported) << e.what();
  EXPECT_TRUE(has(e.what(), "destination shard 0")) << e.what();
  EXPECT_TRUE(has(e.what(), "LATIN1")) << e.what();
  expect_no_slot_left();
}

// A statement_timeout meant for applications (here on the copying role, on every server) does not
// cut a COPY that runs longer.
TEST_F(TableCopy, RoleStatementTimeoutDoesNotCutTheCopy) {
  const std::string role = "CREATE ROLE copier SUPERUSER LOGIN;"
                           "ALTER ROLE copier SET statement_timeout = '50ms'";
  source().exec(role);
  for (int r = 0; r < 2; r++) destination(r).exec(role);
  create_everywhere("CREATE TABLE slow (id bigint PRIMARY KEY, k bigint NOT NULL, v text)",
                    "INSERT INTO slow SELECT g, g, repeat(md5(g::text), 4)"
                    " FROM generate_series(1, 200000) g",
                    2);
  ConnParams from = params(source());
  std::vector<ConnParams> to = shard_params(2);
  from.user = "copier";
  for (ConnParams &shard : to) shard.user = "copier";
  const ShardedTable rule = rule_for("slow", "k", DataType::Bigint);
  SimpleTaskContext ctx;
  auto started = Clock::now();
  TableCopyResult result =
      copy_table(plan_for("slow", {"id", "k", "v"}, &rule), from, to, "tc_slow", ctx);
  ASSERT_GT(Clock::now() - started, std::chrono::milliseconds(100)) << "too fast to prove anything";
  expect_exact_copy("slow", 2, result);
  expect_no_slot_left();
}

TEST_F(TableCopy, NullShardingKeyAbortsTheCopy) {
  create_everywhere("CREATE TABLE keyless (id bigint PRIMARY KEY, k bigint, v text)",
                    "INSERT INTO keyless SELECT g, CASE WHEN g = 40000 THEN NULL ELSE g END, 'v'"
                    " FROM generate_series(1, 50000) g",
                    2);
  const ShardedTable rule = rule_for("keyless", "k", DataType::Bigint);
  Error e = error_of([&] { run_copy(plan_for("keyless", {"id", "k", "v"}, &rule), 2); });
  EXPECT_EQ(e.sqlstate(), sqlstate::kNullValueNotAllowed) << e.what();
  EXPECT_TRUE(has(e.what(), "\"public\".\"keyless\"")) << e.what();
  EXPECT_TRUE(has(e.what(), "\"k\"")) << e.what();
  EXPECT_TRUE(has(e.what(), "from source " + source().host())) << e.what();
  for (int r = 0; r < 2; r++) EXPECT_EQ(count(destination(r), "keyless"), 0) << "shard " << r;
  expect_no_slot_left();
}

// A cancel after the copy got going stops it within the promised time, with query_canceled,
// and leaves neither a slot nor a committed row.
TEST_F(TableCopy, CancelStopsPromptlyAndCommitsNothing) {
  ensure_big_table();
  const ShardedTable rule = rule_for("big", "k", DataType::Bigint);
  std::atomic<bool> stop{false};
  Clock::time_point stopped_at;
  Recorder recorder;
  recorder.on_progress = [&](uint64_t) {
    if (stop.exchange(true)) return;
    stopped_at = Clock::now();
  };
  SimpleTaskContext ctx([&] { return stop.load(); });
  Error e = error_of([&] {
    copy_table(plan_for("big", {"id", "k", "payload"}, &rule), params(source()), shard_params(2),
               "tc_big_cancel", ctx, &recorder);
  });
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - stopped_at);
  ASSERT_TRUE(stop.load()) << "no progress was reported before the copy ended";
  EXPECT_EQ(e.sqlstate(), sqlstate::kQueryCanceled) << e.what();
  EXPECT_TRUE(has(e.what(), "\"public\".\"big\"")) << e.what();
  EXPECT_LT(took.count(), 2000);
  EXPECT_LT(recorder.last_rows, static_cast<uint64_t>(kBigRows));
  expect_no_slot_left();
  for (int r = 0; r < 2; r++) EXPECT_EQ(count(destination(r), "big"), 0) << "shard " << r;
}

// A destination shard that dies mid-copy: the error names it, nothing is committed elsewhere and
// the source's slot is gone.
TEST_F(TableCopy, DestinationDeathNamesTheShard) {
  ensure_big_table();
  struct Restart {
    ~Restart() { destination(1).start(); }
  } restart_afterwards;
  const ShardedTable rule = rule_for("big", "k", DataType::Bigint);
  Recorder recorder;
  bool killed = false;
  recorder.on_progress = [&](uint64_t) {
    if (killed) return;
    killed = true;
    destination(1).stop("immediate");
  };
  SimpleTaskContext ctx;
  Error e = error_of([&] {
    copy_table(plan_for("big", {"id", "k", "payload"}, &rule), params(source()), shard_params(2),
               "tc_big_death", ctx, &recorder);
  });
  ASSERT_TRUE(killed) << "no progress was reported before the copy ended";
  EXPECT_TRUE(has(e.what(), "to destination shard 1 (" + destination(1).host() + ":" +
                                std::to_string(destination(1).port()) + ")"))
      << e.what();
  EXPECT_FALSE(e.sqlstate().empty());
  expect_no_slot_left();
  EXPECT_EQ(count(destination(0), "big"), 0);
}

}  // namespace
}  // namespace pgdog_reshard
