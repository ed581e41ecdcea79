// ChangeApplier (src/engine/apply.h) against two real PostgreSQL 15 destination shards, fed
// pgoutput messages built by hand. Placement is checked with PostgreSQL's own
// satisfies_hash_partition (hash rules) or the rule written in SQL (list, range); idempotency by
// applying the same changes twice and comparing every row; batching by looking at the shards from
// other sessions; failure by a shard that rejects a row, and by a cancel while a shard is blocked;
// exactly-once replays with a replication origin by replaying transactions onto shards whose
// origins say they have them (a third server plays the source a replayed key move reads from, and
// streams through stream_changes from two slots, the second one a replay of the first).
#include <gtest/gtest.h>

#include "expect_error.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/lsn.h"
#include "core/pg.h"
#include "core/pgoutput.h"
#include "core/sharding.h"
#include "engine/apply.h"
#include "engine/apply_origin.h"
#include "engine/replication_stream.h"
#include "engine/table_plan.h"
#include "engine/task_context.h"
#include "harness.h"

namespace pgdog_reshard {
namespace {

using test::InstanceOptions;
using test::PgInstance;
using Clock = std::chrono::steady_clock;

constexpr int kShards = 2;
constexpr uint32_t kInt8 = 20, kInt4 = 23, kText = 25, kVarchar = 1043, kUuid = 2950, kJson = 114;

bool has(const std::string &text, const std::string &needle) {
  return text.find(needle) != std::string::npos;
}

// One value of a hand-built tuple.
struct V {
  ColumnValue::Kind kind = ColumnValue::Kind::Null;
  std::string text;
};
V val(std::string text) { return V{ColumnValue::Kind::Text, std::move(text)}; }
V val(int64_t n) { return val(std::to_string(n)); }
V bin(std::string bytes) { return V{ColumnValue::Kind::Binary, std::move(bytes)}; }
// Big-endian bytes of an integer, as int8send/int4send make them.
V bin_int(int64_t n, int size = 8) {
  std::string out;
  for (int i = size - 1; i >= 0; i--) out += static_cast<char>((static_cast<uint64_t>(n) >> (8 * i)) & 0xff);
  return bin(out);
}
std::string from_hex(const std::string &hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}
const V kNull{ColumnValue::Kind::Null, {}};
const V kUnchanged{ColumnValue::Kind::Unchanged, {}};

struct Col {
  std::string name;
  uint32_t type = kInt8;
  bool key = false;  // part of the replica identity, as the Relation message flags it
};

// Builds pgoutput messages and hands them to an applier. The strings the messages' views point
// into live here, as long as the Feed.
class Feed {
 public:
  explicit Feed(ChangeApplier &applier) : applier_(applier) {}

  void relation(uint32_t oid, const std::string &name, const std::vector<Col> &columns,
                char identity = 'd') {
    Relation rel;
    rel.oid = oid;
    rel.schema = "public";
    rel.name = name;
    rel.replica_identity = identity;
    for (const Col &c : columns) rel.columns.push_back(RelationColumn{c.key, c.name, c.type, -1});
    applier_.on_relation(rel);
  }
  // BEGIN (final_lsn = lsn) ... COMMIT (end_lsn = lsn + 16) around `body`.
  void txn(uint64_t lsn, const std::function<void()> &body) {
    applier_.on_begin(Begin{Lsn(lsn), 0, 1});
    body();
    applier_.on_commit(Commit{0, Lsn(lsn), Lsn(lsn + 16), 0});
  }
  void insert(uint32_t oid, const std::vector<V> &row) {
    Insert m;
    m.relation = oid;
    m.new_tuple = tuple(row);
    applier_.on_insert(m);
  }
  void update(uint32_t oid, const std::vector<V> &row, char old_kind = 0,
              const std::vector<V> &old = {}) {
    Update m;
    m.relation = oid;
    m.old_kind = old_kind;
    if (old_kind) m.old_tuple = tuple(old);
    m.new_tuple = tuple(row);
    applier_.on_update(m);
  }
  void remove(uint32_t oid, const std::vector<V> &old, char old_kind = 'K') {
    Delete m;
    m.relation = oid;
    m.old_kind = old_kind;
    m.old_tuple = tuple(old);
    applier_.on_delete(m);
  }
  void truncate(const std::vector<uint32_t> &oids, bool restart_identity = false) {
    Truncate m;
    m.relations = oids;
    m.restart_identity = restart_identity;
    applier_.on_truncate(m);
  }

 private:
  Tuple tuple(const std::vector<V> &values) {
    Tuple out;
    for (const V &v : values) {
      store_.push_back(v.text);
      out.push_back(ColumnValue{v.kind, store_.back()});
    }
    return out;
  }

  ChangeApplier &applier_;
  std::deque<std::string> store_;
};

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

// A plan as pre-flight makes it. No rule: omnisharded. identity empty: REPLICA IDENTITY FULL.
ApplyTable table_for(const std::string &name, std::vector<std::string> columns,
                     std::vector<std::string> identity, const ShardedTable *rule = nullptr,
                     KeyType key_type = KeyType::Int8, Lsn watermark = Lsn()) {
  ApplyTable t;
  t.plan.schema = "public";
  t.plan.name = name;
  t.plan.columns = std::move(columns);
  t.plan.replica_identity_full = identity.empty();
  t.plan.identity_columns = identity.empty() ? t.plan.columns : std::move(identity);
  if (rule) {
    ShardingKey key;
    key.column = rule->column;
    for (size_t i = 0; i < t.plan.columns.size(); i++) {
      if (t.plan.columns[i] == rule->column) key.index = static_cast<int>(i);
    }
    key.type = key_type;
    key.rule = rule;
    t.plan.key = key;
  }
  t.watermark = watermark;
  return t;
}

int shard_of(int64_t key) { return hash_shard(DataType::Bigint, Key(key), kShards); }

// The first key >= from that hashes to `shard`.
int64_t key_on(int shard, int64_t from) {
  while (shard_of(from) != shard) from++;
  return from;
}

// 32 hex digits from a counter, as a uuid.
std::string uuid_of(uint64_t n) {
  auto mix = [](uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  };
  char buf[40];
  uint64_t a = mix(n), b = mix(n + 0x1234567);
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>(a >> 16) & 0xffff, static_cast<unsigned>(a) & 0xffff,
                static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffffull));
  return buf;
}

// A text that PostgreSQL stores out of line (TOASTed): long and not compressible.
std::string big_text(int seed) {
  std::string out;
  uint64_t x = static_cast<uint64_t>(seed) * 2654435761u + 1;
  while (out.size() < 200000) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    out += static_cast<char>('a' + (x >> 59) % 26);
  }
  return out;
}

long vm_rss_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

class Apply : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::vector<std::future<std::unique_ptr<PgInstance>>> starting;
    for (int i = 0; i < kShards; i++) {
      starting.push_back(std::async(std::launch::async, [i] {
        InstanceOptions options;
        options.name = "apply_dest" + std::to_string(i);
        return std::make_unique<PgInstance>(options);
      }));
    }
    auto source = std::async(std::launch::async, [] {
      InstanceOptions options;
      options.name = "apply_source";
      return std::make_unique<PgInstance>(options);
    });
    for (auto &s : starting) shards_.push_back(s.get());
    source_ = source.get();
    everywhere(
        "CREATE TABLE oracle_bigint (k bigint) PARTITION BY HASH (k);"
        "CREATE TABLE oracle_varchar (k varchar) PARTITION BY HASH (k);"
        "CREATE TABLE oracle_uuid (k uuid) PARTITION BY HASH (k)");
  }
  static void TearDownTestSuite() {
    shards_.clear();
    source_.reset();
  }

  static PgInstance &shard(int i) { return *shards_[i]; }
  static void everywhere(const std::string &sql) {
    for (auto &s : shards_) s->exec(sql);
  }
  static std::vector<ConnParams> destinations() {
    std::vector<ConnParams> out;
    for (auto &s : shards_) {
      ConnParams p;
      p.host = s->host();
      p.port = s->port();
      p.dbname = "postgres";
      p.user = "postgres";
      p.application_name = "apply_test";
      out.push_back(p);
    }
    return out;
  }

  static ConnParams source_params() {
    ConnParams p;
    p.host = source_->host();
    p.port = source_->port();
    p.dbname = "postgres";
    p.user = "postgres";
    p.application_name = "apply_test_source";
    return p;
  }

  // The stream origin's progress on shard s as text ("" for none).
  static std::string origin_lsn(int s, const std::string &stream_origin) {
    return shard(s).value("SELECT coalesce(pg_replication_origin_progress('" + shard_origin(stream_origin, s) +
                          "', true)::text, '')");
  }
  static int64_t origins_named(int s, const std::string &stream_origin) {
    return std::stoll(shard(s).value("SELECT count(*) FROM pg_replication_origin WHERE roname = '" +
                                     shard_origin(stream_origin, s) + "'"));
  }
  // Shard s as if it had committed the source transactions up to `lsn` of the stream. The session
  // of an applier just destroyed may hold the origin a moment longer.
  static void advance_origin(int s, const std::string &stream_origin, const std::string &lsn) {
    const std::string origin = shard_origin(stream_origin, s);
    shard(s).exec("SELECT pg_replication_origin_create('" + origin + "') WHERE pg_replication_origin_oid('" +
                  origin + "') IS NULL");
    bool advanced = test::wait_until([&] {
      try {
        shard(s).exec("SELECT pg_replication_origin_advance('" + origin + "', '" + lsn + "')");
        return true;
      } catch (const test::ServerError &e) {
        if (e.sqlstate != "55006") throw;
        return false;
      }
    });
    ASSERT_TRUE(advanced) << "origin " << origin << " stays in use on shard " << s;
  }

  std::unique_ptr<ChangeApplier> applier(std::vector<ApplyTable> tables, ApplyOptions options = {}) {
    return std::make_unique<ChangeApplier>(std::move(tables), destinations(), ctx_, options);
  }

  static int64_t count(int s, const std::string &table, const std::string &where = "true") {
    return std::stoll(shard(s).value("SELECT count(*) FROM " + table + " WHERE " + where));
  }
  static int64_t total(const std::string &table) { return count(0, table) + count(1, table); }
  // The rows of a table on one shard, as text, in a stable order.
  static std::string rows_of(int s, const std::string &table) {
    return shard(s).value("SELECT coalesce(string_agg(t::text, ' ' ORDER BY t::text), '') FROM " +
                          table + " t");
  }
  // Every row of a table, shard by shard.
  static std::string contents(const std::string &table) {
    std::string out;
    for (int s = 0; s < kShards; s++) out += "shard " + std::to_string(s) + ": " + rows_of(s, table) + "\n";
    return out;
  }
  // Rows of shard s that PostgreSQL's hash partitioning would not put in partition s of kShards.
  static int64_t misplaced(int s, const std::string &table, const std::string &key,
                           const std::string &oracle) {
    return count(s, table,
                 "NOT satisfies_hash_partition('" + oracle + "'::regclass, " +
                     std::to_string(kShards) + ", " + std::to_string(s) + ", " + key + ")");
  }
  void expect_hash_placement(const std::string &table, const std::string &key,
                             const std::string &oracle, int64_t rows) {
    EXPECT_EQ(total(table), rows) << table;
    for (int s = 0; s < kShards; s++) {
      EXPECT_EQ(misplaced(s, table, key, oracle), 0) << table << " shard " << s;
      EXPECT_GT(count(s, table), 0) << table << " shard " << s << " got nothing";
    }
  }

  std::vector<std::string> logs_;
  std::atomic<bool> stop_{false};
  SimpleTaskContext ctx_{[this] { return stop_.load(); },
                         [this](LogLevel, const std::string &m) { logs_.push_back(m); }};
  static std::vector<std::unique_ptr<PgInstance>> shards_;
  static std::unique_ptr<PgInstance> source_;
};

std::vector<std::unique_ptr<PgInstance>> Apply::shards_;
std::unique_ptr<PgInstance> Apply::source_;

// ---------------------------------------------------------------------------------------------
// Routing

TEST_F(Apply, InsertsRoutedByHashForBigintIntegerVarcharAndUuidKeys) {
  everywhere(
      "CREATE TABLE hb (id bigint PRIMARY KEY, v text);"
      "CREATE TABLE hi (id integer PRIMARY KEY, v text);"
      "CREATE TABLE hv (k varchar(40) PRIMARY KEY, n int);"
      "CREATE TABLE hu (k uuid PRIMARY KEY, n int)");
  ShardedTable rb = rule_for("hb", "id", DataType::Bigint), ri = rule_for("hi", "id", DataType::Bigint),
               rv = rule_for("hv", "k", DataType::Varchar), ru = rule_for("hu", "k", DataType::Uuid);
  auto a = applier({table_for("hb", {"id", "v"}, {"id"}, &rb),
                    table_for("hi", {"id", "v"}, {"id"}, &ri, KeyType::Int4),
                    table_for("hv", {"k", "n"}, {"k"}, &rv, KeyType::Text),
                    table_for("hu", {"k", "n"}, {"k"}, &ru, KeyType::Uuid)});
  Feed feed(*a);
  feed.relation(1, "hb", {{"id", kInt8, true}, {"v", kText}});
  feed.relation(2, "hi", {{"id", kInt4, true}, {"v", kText}});
  feed.relation(3, "hv", {{"k", kVarchar, true}, {"n", kInt4}});
  feed.relation(4, "hu", {{"k", kUuid, true}, {"n", kInt4}});
  feed.txn(0x1000, [&] {
    for (int i = 0; i < 300; i++) {
      int64_t n = i * 7919 - 1000000;
      feed.insert(1, {val(n), val("v" + std::to_string(i))});
      feed.insert(2, {val(n / 3), val("w")});
      feed.insert(3, {val("key-" + std::to_string(i) + "-ü"), val(i)});
      feed.insert(4, {val(uuid_of(i)), val(i)});
    }
  });
  EXPECT_EQ(a->flush(), Lsn(0x1010));
  expect_hash_placement("hb", "id", "oracle_bigint", 300);
  expect_hash_placement("hi", "id::bigint", "oracle_bigint", 300);
  expect_hash_placement("hv", "k", "oracle_varchar", 300);
  expect_hash_placement("hu", "k", "oracle_uuid", 300);
  EXPECT_EQ(a->stats().applied, 1200u);
  EXPECT_EQ(a->stats().transactions, 1u);
  EXPECT_EQ(a->stats().batches, 1u);
}

// Binary values (what pgoutput sends with binary 'true'): keys of every type are routed from their
// send format exactly as their text would be, and values of other types are stored as the server
// that made them has them. The binary forms come from PostgreSQL's own send functions.
TEST_F(Apply, BinaryValuesAreRoutedAndStoredExactly) {
  everywhere(
      "CREATE TABLE bb (id bigint PRIMARY KEY, v text);"
      "CREATE TABLE bi (id integer PRIMARY KEY, v text);"
      "CREATE TABLE bv (k varchar(40) PRIMARY KEY, n int);"
      "CREATE TABLE bu (k uuid PRIMARY KEY, n int);"
      "CREATE TABLE bt (id bigint PRIMARY KEY, ts timestamptz, arr int[], amount numeric, p point, "
      "                 j jsonb)");
  ShardedTable rb = rule_for("bb", "id", DataType::Bigint), ri = rule_for("bi", "id", DataType::Bigint),
               rv = rule_for("bv", "k", DataType::Varchar), ru = rule_for("bu", "k", DataType::Uuid),
               rt = rule_for("bt", "id", DataType::Bigint);
  auto a = applier({table_for("bb", {"id", "v"}, {"id"}, &rb),
                    table_for("bi", {"id", "v"}, {"id"}, &ri, KeyType::Int4),
                    table_for("bv", {"k", "n"}, {"k"}, &rv, KeyType::Text),
                    table_for("bu", {"k", "n"}, {"k"}, &ru, KeyType::Uuid),
                    table_for("bt", {"id", "ts", "arr", "amount", "p", "j"}, {"id"}, &rt)});
  Feed feed(*a);
  feed.relation(1, "bb", {{"id", kInt8, true}, {"v", kText}});
  feed.relation(2, "bi", {{"id", kInt4, true}, {"v", kText}});
  feed.relation(3, "bv", {{"k", kVarchar, true}, {"n", kInt4}});
  feed.relation(4, "bu", {{"k", kUuid, true}, {"n", kInt4}});
  feed.relation(5, "bt", {{"id", kInt8, true}, {"ts", 1184}, {"arr", 1007}, {"amount", 1700}, {"p", 600}, {"j", 3802}});
  // Per row i: the send formats of a uuid, a timestamptz, an int[], a numeric, a point and a
  // jsonb, and the text the destination must show for that row of bt.
  constexpr const char *kSendSql = R"SQL(
    SELECT encode(uuid_send(u), 'hex'), encode(timestamptz_send(ts), 'hex'), encode(array_send(arr), 'hex'),
           encode(numeric_send(amount), 'hex'), encode(point_send(p), 'hex'), encode(jsonb_send(j), 'hex'),
           u::text, row(i, ts, arr, amount, p, j)::text
    FROM (SELECT i, md5(i::text)::uuid AS u, timestamptz '2024-02-29 12:34:56.789+00' + i * interval '1 day' AS ts,
                 ARRAY[i, -i, NULL] AS arr, (i * 1.25 - 7)::numeric AS amount, point(i, -i / 3.0) AS p,
                 jsonb_build_object('i', i, 'ü', 'x') AS j
          FROM generate_series(0, 299) i) v ORDER BY i)SQL";
  std::vector<std::vector<std::string>> sent;
  {
    Connection conn(destinations()[0], ctx_);
    Result r = conn.exec(kSendSql);
    for (int i = 0; i < r.rows(); i++) {
      std::vector<std::string> row;
      for (int c = 0; c < 8; c++) row.emplace_back(r.value(i, c));
      sent.push_back(std::move(row));
    }
  }
  ASSERT_EQ(sent.size(), 300u);
  std::string expected_bt;
  feed.txn(0x1000, [&] {
    for (int i = 0; i < 300; i++) {
      int64_t n = i * 7919 - 1000000;
      const std::vector<std::string> &s = sent[i];
      feed.insert(1, {bin_int(n), bin("v" + std::to_string(i))});
      feed.insert(2, {bin_int(n / 3, 4), bin("w")});
      feed.insert(3, {bin("key-" + std::to_string(i) + "-ü"), bin_int(i, 4)});
      feed.insert(4, {bin(from_hex(s[0])), bin_int(i, 4)});
      feed.insert(5, {bin_int(i), bin(from_hex(s[1])), bin(from_hex(s[2])), bin(from_hex(s[3])),
                      bin(from_hex(s[4])), bin(from_hex(s[5]))});
    }
  });
  a->flush();
  expect_hash_placement("bb", "id", "oracle_bigint", 300);
  expect_hash_placement("bi", "id::bigint", "oracle_bigint", 300);
  expect_hash_placement("bv", "k", "oracle_varchar", 300);
  expect_hash_placement("bu", "k", "oracle_uuid", 300);
  expect_hash_placement("bt", "id", "oracle_bigint", 300);
  EXPECT_EQ(count(0, "bv", "k LIKE 'key-%-ü'") + count(1, "bv", "k LIKE 'key-%-ü'"), 300);
  // Every value as the sending server printed it, whichever shard the row is on.
  for (int i : {0, 1, 150, 299}) {
    std::string where = "id = " + std::to_string(i);
    std::string on0 = shard(0).value("SELECT coalesce((SELECT b::text FROM bt b WHERE " + where + "), '')");
    std::string on1 = shard(1).value("SELECT coalesce((SELECT b::text FROM bt b WHERE " + where + "), '')");
    EXPECT_EQ(on0 + on1, sent[i][7]) << "row " << i;
    EXPECT_EQ(shard(0).value("SELECT count(*) FROM bu WHERE k = '" + sent[i][6] + "'::uuid") == "1" ||
                  shard(1).value("SELECT count(*) FROM bu WHERE k = '" + sent[i][6] + "'::uuid") == "1",
              true);
  }
}

// Binary REPLICA IDENTITY FULL rows are matched as a whole, json and point (compared by their text
// form) included; a key move with an unchanged TOASTed value takes it from the old shard's row (as
// text) and writes it with the binary rest of the new row.
TEST_F(Apply, BinaryFullIdentityRowsAndKeyMoves) {
  everywhere(
      "CREATE TABLE bfull (k bigint NOT NULL, j json, p point, note text);"
      "CREATE TABLE bmove (id bigint PRIMARY KEY, v text, doc text)");
  ShardedTable rf = rule_for("bfull", "k", DataType::Bigint), rm = rule_for("bmove", "id", DataType::Bigint);
  auto a = applier({table_for("bfull", {"k", "j", "p", "note"}, {}, &rf),
                    table_for("bmove", {"id", "v", "doc"}, {"id"}, &rm)});
  Feed feed(*a);
  feed.relation(1, "bfull", {{"k", kInt8, true}, {"j", kJson, true}, {"p", 600, true}, {"note", kText, true}}, 'f');
  feed.relation(2, "bmove", {{"id", kInt8, true}, {"v", kText}, {"doc", kText}});
  std::string point = shard(0).value("SELECT encode(point_send(point(1.5, -2)), 'hex')");
  int64_t k0 = key_on(0, 10), k1 = key_on(1, 10), from = key_on(0, 5000), to = key_on(1, 6000);
  std::string doc = big_text(9);
  std::vector<V> row{bin_int(k0), bin("{\"a\": [1, 2]}"), bin(from_hex(point)), kNull};
  feed.txn(0x1000, [&] {
    feed.insert(1, row);
    feed.insert(1, row);
    feed.insert(2, {bin_int(from), bin("old"), bin(doc)});
  });
  a->flush();
  EXPECT_EQ(count(0, "bfull", "p ~= point(1.5, -2) AND j::text = '{\"a\": [1, 2]}'"), 2);
  feed.txn(0x2000, [&] {
    feed.update(1, {bin_int(k0), row[1], row[2], bin("one")}, 'O', row);
    feed.update(2, {bin_int(to), bin("new"), kUnchanged}, 'K', {bin_int(from), kNull, kNull});
  });
  a->flush();
  EXPECT_EQ(count(0, "bfull", "note = 'one'"), 1);
  EXPECT_EQ(count(0, "bfull", "note IS NULL"), 1);
  EXPECT_EQ(count(0, "bmove"), 0);
  EXPECT_EQ(shard(1).value("SELECT id || ' ' || v || ' ' || (md5(doc) = md5('" + doc + "')) FROM bmove"),
            std::to_string(to) + " new true");
  feed.txn(0x3000, [&] {
    feed.remove(1, row, 'O');
    feed.update(1, {bin_int(k1), row[1], row[2], bin("moved")}, 'O', {bin_int(k0), row[1], row[2], bin("one")});
  });
  a->flush();
  EXPECT_EQ(count(0, "bfull"), 0);
  EXPECT_EQ(shard(1).value("SELECT k || ' ' || note || ' ' || p::text FROM bfull"),
            std::to_string(k1) + " moved (1.5,-2)");
}

TEST_F(Apply, ListAndRangeRulesPlaceRowsAndRefuseUnmappedValues) {
  everywhere(
      "CREATE TABLE lt (id bigint PRIMARY KEY, region bigint NOT NULL);"
      "CREATE TABLE rt (id bigint PRIMARY KEY, v text)");
  Mapping low, high, range_low, range_high;
  low.values = {Key(int64_t{1}), Key(int64_t{2}), Key(int64_t{3})};
  low.shard = 0;
  high.values = {Key(int64_t{4}), Key(int64_t{5})};
  high.shard = 1;
  range_low.kind = range_high.kind = Mapping::Kind::Range;
  range_low.end = Key(int64_t{1000});
  range_low.shard = 0;
  range_high.start = Key(int64_t{1000});
  range_high.shard = 1;
  ShardedTable rl = rule_for("lt", "region", DataType::Bigint, {low, high});
  ShardedTable rr = rule_for("rt", "id", DataType::Bigint, {range_low, range_high});
  auto a = applier({table_for("lt", {"id", "region"}, {"id"}, &rl),
                    table_for("rt", {"id", "v"}, {"id"}, &rr)});
  Feed feed(*a);
  feed.relation(1, "lt", {{"id", kInt8, true}, {"region", kInt8}});
  feed.relation(2, "rt", {{"id", kInt8, true}, {"v", kText}});
  feed.txn(0x1000, [&] {
    for (int i = 0; i < 50; i++) feed.insert(1, {val(i), val(i % 5 + 1)});
    for (int i = 0; i < 50; i++) feed.insert(2, {val(i * 50 - 200), val("x")});
  });
  a->flush();
  EXPECT_EQ(total("lt"), 50);
  EXPECT_EQ(count(0, "lt", "region NOT IN (1, 2, 3)"), 0);
  EXPECT_EQ(count(1, "lt", "region NOT IN (4, 5)"), 0);
  EXPECT_EQ(count(1, "lt"), 20);
  EXPECT_EQ(total("rt"), 50);
  EXPECT_EQ(count(0, "rt", "id >= 1000"), 0);
  EXPECT_EQ(count(1, "rt", "id < 1000"), 0);
  EXPECT_EQ(count(1, "rt"), 26);  // -200, -150, ..., 2250: 26 of them at 1000 or above

  Error e = error_of([&] { feed.txn(0x2000, [&] { feed.insert(1, {val(99), val(7)}); }); });
  EXPECT_EQ(e.sqlstate(), "23514");
  EXPECT_TRUE(has(e.what(), "\"region\"") && has(e.what(), "\"public\".\"lt\"") && has(e.what(), "7"))
      << e.what();
  EXPECT_EQ(total("lt"), 50);
}

TEST_F(Apply, NullShardingKeyIsRefused) {
  everywhere("CREATE TABLE nk (id bigint PRIMARY KEY, k bigint)");
  ShardedTable rule = rule_for("nk", "k", DataType::Bigint);
  auto a = applier({table_for("nk", {"id", "k"}, {"id"}, &rule)});
  Feed feed(*a);
  feed.relation(1, "nk", {{"id", kInt8, true}, {"k", kInt8}});
  Error e = error_of([&] { feed.txn(0x1000, [&] { feed.insert(1, {val(1), kNull}); }); });
  EXPECT_EQ(e.sqlstate(), "22004");
  EXPECT_TRUE(has(e.what(), "\"k\"") && has(e.what(), "\"public\".\"nk\"")) << e.what();
}

TEST_F(Apply, ChangeOfATableOutsideThePlanIsRefused) {
  everywhere("CREATE TABLE inplan (id bigint PRIMARY KEY)");
  auto a = applier({table_for("inplan", {"id"}, {"id"})});
  Feed feed(*a);
  feed.relation(7, "latecomer", {{"id", kInt8, true}});  // a Relation alone is harmless
  Error e = error_of([&] { feed.txn(0x1000, [&] { feed.insert(7, {val(1)}); }); });
  EXPECT_EQ(e.sqlstate(), "0A000");
  EXPECT_TRUE(has(e.what(), "\"public\".\"latecomer\"")) << e.what();
  // The applier is done: later calls say so rather than apply onto a half-failed batch.
  Error after = error_of([&] { a->flush(); });
  EXPECT_EQ(after.sqlstate(), "55000");
  EXPECT_TRUE(has(after.detail(), "latecomer")) << after.detail();
}

// ---------------------------------------------------------------------------------------------
// Idempotent apply

TEST_F(Apply, ApplyingTheSameChangesTwiceGivesTheSameRows) {
  everywhere(
      "CREATE TABLE idem (id bigint PRIMARY KEY, v text, n int);"
      "CREATE TABLE idem_all (id bigint PRIMARY KEY, v text)");
  ShardedTable rule = rule_for("idem", "id", DataType::Bigint);
  auto run = [&] {
    auto a = applier({table_for("idem", {"id", "v", "n"}, {"id"}, &rule),
                      table_for("idem_all", {"id", "v"}, {"id"})});
    Feed feed(*a);
    feed.relation(1, "idem", {{"id", kInt8, true}, {"v", kText}, {"n", kInt4}});
    feed.relation(2, "idem_all", {{"id", kInt8, true}, {"v", kText}});
    feed.txn(0x1000, [&] {
      for (int i = 1; i <= 40; i++) feed.insert(1, {val(i), val("first"), val(i)});
      for (int i = 1; i <= 40; i += 3) feed.update(1, {val(i), val("second"), kNull});
      for (int i = 2; i <= 40; i += 5) feed.remove(1, {val(i), kNull, kNull});
      feed.insert(1, {val(2), val("again"), val(0)});
      // Omnisharded, with a change of identity: replayed, the INSERT puts id 1 back next to id 100.
      feed.insert(2, {val(1), val("a")});
      feed.update(2, {val(100), val("b")}, 'K', {val(1), kNull});
      feed.insert(2, {val(5), val("c")});
    });
    feed.txn(0x2000, [&] { feed.update(1, {val(3), val("third"), val(33)}); });
    EXPECT_EQ(a->flush(), Lsn(0x2010));
  };
  run();
  std::string once = contents("idem") + contents("idem_all");
  EXPECT_EQ(total("idem"), 40 - 8 + 1);
  EXPECT_EQ(shard(0).value("SELECT v FROM idem_all WHERE id = 100"), "b");
  EXPECT_EQ(count(0, "idem_all"), 2);
  run();
  EXPECT_EQ(contents("idem") + contents("idem_all"), once);
}

TEST_F(Apply, UpdateSetsOrdinaryColumns) {
  everywhere("CREATE TABLE upd (id bigint PRIMARY KEY, a text, b int, c text)");
  ShardedTable rule = rule_for("upd", "id", DataType::Bigint);
  auto a = applier({table_for("upd", {"id", "a", "b", "c"}, {"id"}, &rule)});
  Feed feed(*a);
  feed.relation(1, "upd", {{"id", kInt8, true}, {"a", kText}, {"b", kInt4}, {"c", kText}});
  feed.txn(0x1000, [&] {
    for (int i = 1; i <= 20; i++) feed.insert(1, {val(i), val("a"), val(i), val("c")});
  });
  feed.txn(0x2000, [&] {
    for (int i = 1; i <= 20; i += 2) feed.update(1, {val(i), val("A"), val(i * 10), kNull});
  });
  a->flush();
  for (int s = 0; s < kShards; s++) {
    EXPECT_EQ(count(s, "upd", "id % 2 = 1 AND (a <> 'A' OR b <> id * 10 OR c IS NOT NULL)"), 0);
    EXPECT_EQ(count(s, "upd", "id % 2 = 0 AND (a <> 'a' OR b <> id OR c <> 'c')"), 0);
  }
  EXPECT_EQ(total("upd"), 20);
}

TEST_F(Apply, UpdateLeavesAnUnchangedToastedColumnAlone) {
  everywhere("CREATE TABLE toasty (id bigint PRIMARY KEY, v text, doc text)");
  ShardedTable rule = rule_for("toasty", "id", DataType::Bigint);
  auto a = applier({table_for("toasty", {"id", "v", "doc"}, {"id"}, &rule)});
  Feed feed(*a);
  feed.relation(1, "toasty", {{"id", kInt8, true}, {"v", kText}, {"doc", kText}});
  std::string doc = big_text(1);
  feed.txn(0x1000, [&] { feed.insert(1, {val(42), val("before"), val(doc)}); });
  feed.txn(0x2000, [&] { feed.update(1, {val(42), val("after"), kUnchanged}); });
  a->flush();
  int s = shard_of(42);
  EXPECT_EQ(shard(s).value("SELECT v FROM toasty WHERE id = 42"), "after");
  EXPECT_EQ(shard(s).value("SELECT md5(doc) = md5('" + doc + "') FROM toasty WHERE id = 42"), "t");
  EXPECT_NE(shard(s).value("SELECT reltoastrelid FROM pg_class WHERE relname = 'toasty'"), "0");
}

// The key is the primary key: the old tuple ('K', other columns NULL as pgoutput sends them)
// names the old shard, which returns the unchanged TOASTed value as it gives the row up.
TEST_F(Apply, UpdateMovingTheKeyMovesTheRowWithItsUnchangedValues) {
  everywhere("CREATE TABLE mover (id bigint PRIMARY KEY, v text, doc text)");
  ShardedTable rule = rule_for("mover", "id", DataType::Bigint);
  int64_t from = key_on(0, 1000), to = key_on(1, 2000);
  std::string doc = big_text(2);
  auto run = [&](bool with_insert) {
    auto a = applier({table_for("mover", {"id", "v", "doc"}, {"id"}, &rule)});
    Feed feed(*a);
    feed.relation(1, "mover", {{"id", kInt8, true}, {"v", kText}, {"doc", kText}});
    if (with_insert) feed.txn(0x1000, [&] { feed.insert(1, {val(from), val("old"), val(doc)}); });
    feed.txn(0x2000, [&] {
      feed.update(1, {val(to), val("new"), kUnchanged}, 'K', {val(from), kNull, kNull});
    });
    a->flush();
  };
  auto expect_moved = [&] {
    EXPECT_EQ(count(0, "mover"), 0);
    EXPECT_EQ(count(1, "mover"), 1);
    EXPECT_EQ(shard(1).value("SELECT id || ' ' || v || ' ' || (md5(doc) = md5('" + doc +
                             "')) FROM mover"),
              std::to_string(to) + " new true");
  };
  run(true);
  expect_moved();
  run(false);  // the UPDATE replayed: the old row is gone, the new one is updated again
  expect_moved();
  run(true);  // the whole stream replayed: the INSERT puts the old row back, the move takes it
  expect_moved();
}

// The key is not part of the replica identity: pgoutput sends no old tuple when it changes, so
// the row is looked for on every other shard.
TEST_F(Apply, UpdateMovingAKeyOutsideTheIdentityMovesTheRow) {
  everywhere("CREATE TABLE orders (id bigint PRIMARY KEY, customer bigint NOT NULL, doc text)");
  ShardedTable rule = rule_for("orders", "customer", DataType::Bigint);
  auto a = applier({table_for("orders", {"id", "customer", "doc"}, {"id"}, &rule)});
  EXPECT_TRUE(std::any_of(logs_.begin(), logs_.end(),
                          [](const std::string &m) { return has(m, "not part of its replica identity"); }));
  Feed feed(*a);
  feed.relation(1, "orders", {{"id", kInt8, true}, {"customer", kInt8}, {"doc", kText}});
  int64_t c0 = key_on(0, 1), c1 = key_on(1, 1);
  std::string doc = big_text(3);
  feed.txn(0x1000, [&] {
    feed.insert(1, {val(1), val(c0), val(doc)});
    feed.insert(1, {val(2), val(c0), val("small")});
  });
  feed.txn(0x2000, [&] {
    feed.update(1, {val(1), val(c1), kUnchanged});       // moves, TOASTed value fetched
    feed.update(1, {val(2), val(c1), val("changed")});   // moves, complete row
  });
  a->flush();
  EXPECT_EQ(count(0, "orders"), 0);
  EXPECT_EQ(count(1, "orders"), 2);
  EXPECT_EQ(shard(1).value("SELECT md5(doc) = md5('" + doc + "') FROM orders WHERE id = 1"), "t");
  EXPECT_EQ(shard(1).value("SELECT doc FROM orders WHERE id = 2"), "changed");
  feed.txn(0x3000, [&] { feed.remove(1, {val(1), kNull, kNull}); });
  a->flush();
  EXPECT_EQ(total("orders"), 1);
}

TEST_F(Apply, DeleteRemovesTheRowAndItsReplayIsANoOp) {
  everywhere("CREATE TABLE del (id bigint PRIMARY KEY, v text)");
  ShardedTable rule = rule_for("del", "id", DataType::Bigint);
  auto run = [&](bool with_insert) {
    auto a = applier({table_for("del", {"id", "v"}, {"id"}, &rule)});
    Feed feed(*a);
    feed.relation(1, "del", {{"id", kInt8, true}, {"v", kText}});
    if (with_insert) {
      feed.txn(0x1000, [&] {
        for (int i = 1; i <= 10; i++) feed.insert(1, {val(i), val("x")});
      });
    }
    feed.txn(0x2000, [&] {
      for (int i = 1; i <= 10; i += 2) feed.remove(1, {val(i), kNull});
    });
    a->flush();
  };
  run(true);
  std::string after = contents("del");
  EXPECT_EQ(total("del"), 5);
  run(false);
  EXPECT_EQ(contents("del"), after);
}

// REPLICA IDENTITY FULL: no key to conflict on, so INSERT adds a row (identical rows are
// legitimate); UPDATE and DELETE touch exactly one row equal to the old one (NULLs and json
// compared too), and a key change moves it with values from the old tuple.
TEST_F(Apply, ReplicaIdentityFullInsertUpdateDeleteAndMove) {
  everywhere("CREATE TABLE fulltab (k bigint NOT NULL, note text, j json, doc text)");
  ShardedTable rule = rule_for("fulltab", "k", DataType::Bigint);
  auto a = applier({table_for("fulltab", {"k", "note", "j", "doc"}, {}, &rule)});
  Feed feed(*a);
  feed.relation(1, "fulltab",
                {{"k", kInt8, true}, {"note", kText, true}, {"j", kJson, true}, {"doc", kText, true}},
                'f');
  int64_t k0 = key_on(0, 10), k1 = key_on(1, 10);
  std::string doc = big_text(4);
  std::vector<V> row{val(k0), kNull, val("{\"a\": [1, 2]}"), val(doc)};
  feed.txn(0x1000, [&] {
    feed.insert(1, row);
    feed.insert(1, row);
    feed.insert(1, row);
  });
  a->flush();
  EXPECT_EQ(count(0, "fulltab"), 3);
  feed.txn(0x2000, [&] { feed.update(1, {val(k0), val("one"), row[2], kUnchanged}, 'O', row); });
  a->flush();
  EXPECT_EQ(count(0, "fulltab", "note = 'one'"), 1);
  EXPECT_EQ(count(0, "fulltab", "note IS NULL"), 2);
  feed.txn(0x3000, [&] { feed.remove(1, row, 'O'); });
  a->flush();
  EXPECT_EQ(count(0, "fulltab"), 2);
  std::vector<V> one{val(k0), val("one"), row[2], val(doc)};
  feed.txn(0x4000, [&] { feed.update(1, {val(k1), val("moved"), row[2], kUnchanged}, 'O', one); });
  a->flush();
  EXPECT_EQ(count(0, "fulltab"), 1);
  EXPECT_EQ(count(0, "fulltab", "note IS NULL"), 1);
  EXPECT_EQ(shard(1).value("SELECT note || ' ' || (md5(doc) = md5('" + doc + "')) FROM fulltab"),
            "moved true");
}

TEST_F(Apply, TruncateEmptiesMappedTablesOnEveryShard) {
  everywhere(
      "CREATE TABLE tr_parent (id bigint PRIMARY KEY);"
      "CREATE TABLE tr_child (id bigint PRIMARY KEY, parent bigint REFERENCES tr_parent);"
      "CREATE TABLE tr_kept (id bigint PRIMARY KEY)");
  ShardedTable rule = rule_for("tr_child", "id", DataType::Bigint);
  auto a = applier({table_for("tr_parent", {"id"}, {"id"}),
                    table_for("tr_child", {"id", "parent"}, {"id"}, &rule),
                    table_for("tr_kept", {"id"}, {"id"})});
  Feed feed(*a);
  feed.relation(1, "tr_parent", {{"id", kInt8, true}});
  feed.relation(2, "tr_child", {{"id", kInt8, true}, {"parent", kInt8}});
  feed.relation(3, "tr_kept", {{"id", kInt8, true}});
  feed.relation(4, "not_planned", {{"id", kInt8, true}});
  feed.txn(0x1000, [&] {
    for (int i = 1; i <= 10; i++) {
      feed.insert(1, {val(i)});
      feed.insert(2, {val(i), val(i)});
      feed.insert(3, {val(i)});
    }
  });
  a->flush();
  ASSERT_EQ(total("tr_child"), 10);
  ASSERT_EQ(count(0, "tr_parent") + count(1, "tr_parent"), 20);
  feed.txn(0x2000, [&] { feed.truncate({1, 2, 4}); });
  a->flush();
  for (int s = 0; s < kShards; s++) {
    EXPECT_EQ(count(s, "tr_parent"), 0);
    EXPECT_EQ(count(s, "tr_child"), 0);
    EXPECT_EQ(count(s, "tr_kept"), 10);
  }
  EXPECT_TRUE(std::any_of(logs_.begin(), logs_.end(),
                          [](const std::string &m) { return has(m, "not_planned"); }));
}

TEST_F(Apply, OmnishardedTableChangesReachEveryShard) {
  everywhere("CREATE TABLE omni (code text PRIMARY KEY, label text)");
  auto a = applier({table_for("omni", {"code", "label"}, {"code"})});
  Feed feed(*a);
  feed.relation(1, "omni", {{"code", kText, true}, {"label", kText}});
  feed.txn(0x1000, [&] {
    for (int i = 0; i < 10; i++) feed.insert(1, {val("c" + std::to_string(i)), val("l")});
    feed.update(1, {val("c1"), val("changed")});
    feed.remove(1, {val("c2"), kNull});
  });
  a->flush();
  EXPECT_EQ(count(0, "omni"), 9);
  EXPECT_EQ(rows_of(0, "omni"), rows_of(1, "omni"));
  EXPECT_EQ(shard(1).value("SELECT label FROM omni WHERE code = 'c1'"), "changed");
}

// ---------------------------------------------------------------------------------------------
// Merged updates

// The same changes applied with and without merging give the same rows, and the rows the changes
// say: hot rows updated hundreds of times, an unchanged TOASTed value kept across merged updates,
// a row deleted and inserted again between its updates, a row updated and then moved to another
// shard (its held update must reach the old shard before the move takes the row from it), and a
// table updated and then truncated.
TEST_F(Apply, MergedUpdatesGiveTheRowsTheChangesSay) {
  const std::string d1 = big_text(11), d2 = big_text(12);
  int64_t moved_to = key_on(1 - shard_of(20), 5000);
  auto play = [&](const std::string &suffix, bool merge) {
    const std::string hot = "hot" + suffix, tr = "hot_tr" + suffix;
    everywhere("CREATE TABLE " + hot + " (id bigint PRIMARY KEY, n bigint, v text, doc text);"
               "CREATE TABLE " + tr + " (id bigint PRIMARY KEY, v text)");
    ShardedTable rule = rule_for(hot, "id", DataType::Bigint);
    ApplyTable hot_table = table_for(hot, {"id", "n", "v", "doc"}, {"id"}, &rule);
    ApplyTable tr_table = table_for(tr, {"id", "v"}, {"id"});
    hot_table.merge_updates = tr_table.merge_updates = merge;
    auto a = applier({hot_table, tr_table});
    Feed feed(*a);
    feed.relation(1, hot, {{"id", kInt8, true}, {"n", kInt8}, {"v", kText}, {"doc", kText}});
    feed.relation(2, tr, {{"id", kInt8, true}, {"v", kText}});
    feed.txn(0x1000, [&] {
      for (int i = 1; i <= 20; i++) feed.insert(1, {val(i), val(0), val("v0"), val(i <= 2 ? d1 : "d")});
      for (int i = 1; i <= 5; i++) feed.insert(2, {val(i), val("old")});
    });
    feed.txn(0x2000, [&] {
      for (int i = 1; i <= 200; i++) feed.update(1, {val(1 + i % 5), val(i), val("v" + std::to_string(i)), kUnchanged});
      feed.update(1, {val(3), val(1000), val("w"), val("new doc")});
      feed.update(1, {val(3), val(1001), val("w2"), kUnchanged});
      feed.remove(1, {val(4), kNull, kNull, kNull});
      feed.insert(1, {val(4), val(-4), val("back"), val("d4")});
      feed.update(1, {val(4), val(44), val("again"), kUnchanged});
      feed.update(1, {val(20), val(20), val("before the move"), val(d2)});
      feed.update(1, {val(moved_to), val(21), val("moved"), kUnchanged}, 'K', {val(20), kNull, kNull, kNull});
    });
    feed.txn(0x3000, [&] {
      feed.update(2, {val(5), val("updated")});
      feed.truncate({2});
      feed.insert(2, {val(5), val("fresh")});
    });
    a->flush();
    EXPECT_EQ(total(hot), 20);
    EXPECT_EQ(count(shard_of(1), hot, "id = 1 AND n = 200 AND v = 'v200' AND md5(doc) = md5('" + d1 + "')"), 1);
    EXPECT_EQ(count(shard_of(2), hot, "id = 2 AND n = 196 AND v = 'v196' AND md5(doc) = md5('" + d1 + "')"), 1);
    EXPECT_EQ(count(shard_of(3), hot, "id = 3 AND n = 1001 AND v = 'w2' AND doc = 'new doc'"), 1);
    EXPECT_EQ(count(shard_of(4), hot, "id = 4 AND n = 44 AND v = 'again' AND doc = 'd4'"), 1);
    EXPECT_EQ(count(0, hot, "id = 20") + count(1, hot, "id = 20"), 0);
    EXPECT_EQ(count(shard_of(moved_to), hot,
                    "id = " + std::to_string(moved_to) + " AND n = 21 AND v = 'moved' AND md5(doc) = md5('" + d2 + "')"),
              1);
    EXPECT_EQ(rows_of(0, tr), "(5,fresh)");
    EXPECT_EQ(rows_of(1, tr), "(5,fresh)");
    EXPECT_EQ(a->stats().applied, 20u + 5 + 207 + 3);
    return std::make_pair(contents(hot) + contents(tr), a->stats().merged);
  };
  auto [merged_rows, merged] = play("_merged", true);
  auto [plain_rows, plain_merged] = play("_plain", false);
  EXPECT_EQ(plain_merged, 0u);
  EXPECT_EQ(merged, 197u);  // 200 updates of 5 rows, and both later updates of row 3
  EXPECT_TRUE(merged_rows == plain_rows) << "merged:\n" << merged_rows.substr(0, 2000) << "\nplain:\n" << plain_rows.substr(0, 2000);
}

// More rows than the held set keeps, and more bytes: the least recently updated are sent as the set
// overflows, a row updated all along stays held and merged, and every row ends right.
TEST_F(Apply, UpdatesOverflowingTheHeldSetAllArrive) {
  everywhere("CREATE TABLE held_many (id bigint PRIMARY KEY, n bigint, doc text)");
  ShardedTable rule = rule_for("held_many", "id", DataType::Bigint);
  ApplyTable table = table_for("held_many", {"id", "n", "doc"}, {"id"}, &rule);
  table.merge_updates = true;
  auto a = applier({table});
  Feed feed(*a);
  feed.relation(1, "held_many", {{"id", kInt8, true}, {"n", kInt8}, {"doc", kText}});
  feed.txn(0x1000, [&] {
    for (int i = 1; i <= 3000; i++) feed.insert(1, {val(i), val(0), val("d")});
  });
  a->flush();
  feed.txn(0x2000, [&] {
    for (int round = 1; round <= 2; round++) {
      for (int i = 2; i <= 3000; i++) {
        feed.update(1, {val(i), val(round), kUnchanged});
        feed.update(1, {val(1), val(round * 10000 + i), kUnchanged});
      }
    }
    // 100 values of 200 kB: more than the held set's bytes.
    for (int i = 1; i <= 100; i++) feed.update(1, {val(i), val(7), val(big_text(100 + i))});
  });
  a->flush();
  EXPECT_EQ(total("held_many"), 3000);
  EXPECT_EQ(count(0, "held_many", "n <> CASE WHEN id <= 100 THEN 7 ELSE 2 END") +
                count(1, "held_many", "n <> CASE WHEN id <= 100 THEN 7 ELSE 2 END"),
            0);
  for (int i : {1, 50, 100}) {
    EXPECT_EQ(count(shard_of(i), "held_many", "id = " + std::to_string(i) + " AND md5(doc) = md5('" + big_text(100 + i) + "')"), 1) << i;
  }
  EXPECT_EQ(count(0, "held_many", "id > 100 AND doc <> 'd'") + count(1, "held_many", "id > 100 AND doc <> 'd'"), 0);
  // Row 1's updates merge (about 6,000); the cold rows' second updates come too late to.
  EXPECT_GT(a->stats().merged, 5900u);
  EXPECT_LT(a->stats().merged, 6200u);
}

// The watermark is the copy slot's consistent point: the end of the WAL record that made its
// snapshot consistent. A transaction whose commit record starts before it is in the copy; one whose
// commit record starts exactly there (the next record in the WAL, often a commit under load) is
// not, and must be applied (PostgreSQL's own rule: SnapBuildXactNeedsSkip skips commit < point).
TEST_F(Apply, ChangesCommittedBeforeTheWatermarkAreSkipped) {
  everywhere("CREATE TABLE wm (id bigint PRIMARY KEY, v text)");
  ShardedTable rule = rule_for("wm", "id", DataType::Bigint);
  auto a = applier({table_for("wm", {"id", "v"}, {"id"}, &rule, KeyType::Int8, Lsn(0x5000))});
  Feed feed(*a);
  feed.relation(1, "wm", {{"id", kInt8, true}, {"v", kText}});
  feed.txn(0x4000, [&] { feed.insert(1, {val(1), val("in the copy")}); });
  feed.txn(0x4fe8, [&] {
    feed.insert(1, {val(2), val("in the copy too")});
    feed.truncate({1});
  });
  feed.txn(0x5000, [&] { feed.insert(1, {val(3), val("at the watermark")}); });
  feed.txn(0x6000, [&] { feed.insert(1, {val(4), val("after")}); });
  EXPECT_EQ(a->flush(), Lsn(0x6010));
  EXPECT_EQ(total("wm"), 2);
  EXPECT_EQ(shard(shard_of(3)).value("SELECT v FROM wm WHERE id = 3"), "at the watermark");
  EXPECT_EQ(shard(shard_of(4)).value("SELECT v FROM wm WHERE id = 4"), "after");
  EXPECT_EQ(a->stats().skipped, 3u);
  EXPECT_EQ(a->stats().applied, 2u);
  EXPECT_EQ(a->stats().transactions, 4u);
}

TEST_F(Apply, DestinationTriggersDoNotFire) {
  everywhere(
      "CREATE TABLE audited (id bigint PRIMARY KEY, v text);"
      "CREATE TABLE audit_log (what text);"
      "CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS"
      " $$BEGIN INSERT INTO audit_log VALUES (TG_OP); RETURN NULL; END$$;"
      "CREATE TRIGGER audited_rows AFTER INSERT OR UPDATE OR DELETE ON audited"
      " FOR EACH ROW EXECUTE FUNCTION audit();"
      "CREATE TRIGGER audited_truncate AFTER TRUNCATE ON audited"
      " FOR EACH STATEMENT EXECUTE FUNCTION audit()");
  ShardedTable rule = rule_for("audited", "id", DataType::Bigint);
  auto a = applier({table_for("audited", {"id", "v"}, {"id"}, &rule)});
  Feed feed(*a);
  feed.relation(1, "audited", {{"id", kInt8, true}, {"v", kText}});
  feed.txn(0x1000, [&] {
    for (int i = 1; i <= 10; i++) feed.insert(1, {val(i), val("x")});
    feed.update(1, {val(1), val("y")});
    feed.remove(1, {val(2), kNull});
    feed.truncate({1});
  });
  a->flush();
  EXPECT_EQ(total("audit_log"), 0);
  shard(0).exec("INSERT INTO audited VALUES (1, 'by hand')");  // the trigger works
  EXPECT_EQ(count(0, "audit_log"), 1);
}

// ---------------------------------------------------------------------------------------------
// Batches

TEST_F(Apply, FlushCommitsEveryShardAndReturnsTheLastCommitEnd) {
  everywhere("CREATE TABLE fl (id bigint PRIMARY KEY)");
  ShardedTable rule = rule_for("fl", "id", DataType::Bigint);
  ApplyOptions options;
  options.batch_changes = 5;
  options.batch_ms = 60000;
  auto a = applier({table_for("fl", {"id"}, {"id"}, &rule)}, options);
  a->set_start(Lsn(0x500));
  EXPECT_EQ(a->flushed(), Lsn(0x500));
  EXPECT_EQ(a->flush(), Lsn(0x500));  // nothing open: a no-op
  Feed feed(*a);
  feed.relation(1, "fl", {{"id", kInt8, true}});
  feed.txn(0x1000, [&] {
    for (int i = 1; i <= 3; i++) feed.insert(1, {val(i)});
  });
  EXPECT_FALSE(a->batch_due());
  a->on_begin(Begin{Lsn(0x2000), 0, 2});
  for (int i = 4; i <= 8; i++) feed.insert(1, {val(i)});
  EXPECT_FALSE(a->batch_due()) << "never due inside a source transaction";
  a->on_commit(Commit{0, Lsn(0x2000), Lsn(0x2010), 0});
  EXPECT_TRUE(a->batch_due());
  EXPECT_EQ(total("fl"), 0) << "nothing is visible before the flush";
  EXPECT_EQ(a->flushed(), Lsn(0x500));
  EXPECT_EQ(a->flush(), Lsn(0x2010));
  EXPECT_EQ(a->flushed(), Lsn(0x2010));
  EXPECT_EQ(count(0, "fl") + count(1, "fl"), 8);
  EXPECT_GT(count(0, "fl"), 0);
  EXPECT_GT(count(1, "fl"), 0);
  EXPECT_FALSE(a->batch_due());
  // A transaction with nothing to apply still moves the position once the batch is old enough.
  ApplyOptions quick;
  quick.batch_ms = 20;
  auto b = applier({table_for("fl", {"id"}, {"id"}, &rule)}, quick);
  b->on_begin(Begin{Lsn(0x3000), 0, 3});
  b->on_commit(Commit{0, Lsn(0x3000), Lsn(0x3010), 0});
  EXPECT_TRUE(test::wait_until([&] { return b->batch_due(); }, 2000));
  EXPECT_EQ(b->flush(), Lsn(0x3010));
  EXPECT_EQ(b->stats().batches, 0u);  // no shard had anything to commit
}

// A shard rejects a row (a CHECK that only shard 1 has): the error names the statement with the
// server's SQLSTATE, and the other shard, which took its part of the batch, commits none of it.
TEST_F(Apply, AShardFailingMidBatchLeavesNoPartOfTheBatchAnywhere) {
  everywhere("CREATE TABLE fails (id bigint PRIMARY KEY, v text)");
  shard(1).exec("ALTER TABLE fails ADD CONSTRAINT no_bad CHECK (v <> 'bad')");
  ShardedTable rule = rule_for("fails", "id", DataType::Bigint);
  auto a = applier({table_for("fails", {"id", "v"}, {"id"}, &rule)});
  Feed feed(*a);
  feed.relation(1, "fails", {{"id", kInt8, true}, {"v", kText}});
  feed.txn(0x1000, [&] { feed.insert(1, {val(key_on(0, 1)), val("committed")}); });
  ASSERT_EQ(a->flush(), Lsn(0x1010));
  int64_t bad = key_on(1, 1);
  Error e = error_of([&] {
    feed.txn(0x2000, [&] {
      for (int i = 100; i < 110; i++) feed.insert(1, {val(i), val("good")});
      feed.insert(1, {val(bad), val("bad")});
      for (int i = 200; i < 210; i++) feed.insert(1, {val(i), val("good")});
    });
    a->flush();
  });
  EXPECT_EQ(e.sqlstate(), "23514");
  EXPECT_TRUE(has(e.what(), std::to_string(shard(1).port())) && has(e.what(), "no_bad")) << e.what();
  EXPECT_TRUE(has(e.detail(), "INSERT INTO \"public\".\"fails\"")) << e.detail();
  EXPECT_EQ(count(0, "fails"), 1) << "shard 0 kept part of the failed batch";
  EXPECT_EQ(count(1, "fails"), 0);
  EXPECT_EQ(a->flushed(), Lsn(0x1010));
  EXPECT_EQ(error_of([&] { a->flush(); }).sqlstate(), "55000");
  EXPECT_TRUE(test::wait_until([&] {
    return shard(0).value(
               "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'apply_test'") == "0";
  })) << "the sessions of a failed applier stay open";
}

// A shard blocked on a lock, and the owner asks to stop: the wait ends with the waiter's error,
// and neither shard commits the batch.
TEST_F(Apply, CancelWhileAShardIsBlockedCommitsNothing) {
  everywhere("CREATE TABLE blocked (id bigint PRIMARY KEY)");
  ShardedTable rule = rule_for("blocked", "id", DataType::Bigint);
  auto a = applier({table_for("blocked", {"id"}, {"id"}, &rule)});
  Feed feed(*a);
  feed.relation(1, "blocked", {{"id", kInt8, true}});
  PollWaiter plain;
  Connection locker(destinations()[1], plain);
  locker.exec("BEGIN; LOCK TABLE blocked IN ACCESS EXCLUSIVE MODE");
  feed.txn(0x1000, [&] {
    feed.insert(1, {val(key_on(0, 1))});
    feed.insert(1, {val(key_on(1, 1))});
  });
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop_ = true;
  });
  auto started = Clock::now();
  Error e = error_of([&] { a->flush(); });
  stopper.join();
  EXPECT_EQ(e.sqlstate(), "57014");
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(5));
  locker.exec("COMMIT");
  EXPECT_EQ(total("blocked"), 0);
}

// 200,000 changes in one source transaction stream through: memory stays flat (nothing waits for
// the source COMMIT on our side), and the throughput is printed.
TEST_F(Apply, HugeSourceTransactionStreamsInBoundedMemory) {
  constexpr int kRows = 200000;
  everywhere("CREATE TABLE huge (id bigint PRIMARY KEY, k bigint NOT NULL, payload text)");
  ShardedTable rule = rule_for("huge", "k", DataType::Bigint);
  auto a = applier({table_for("huge", {"id", "k", "payload"}, {"id"}, &rule)});
  Relation rel;
  rel.oid = 1;
  rel.schema = "public";
  rel.name = "huge";
  rel.columns = {{true, "id", kInt8, -1}, {false, "k", kInt8, -1}, {false, "payload", kText, -1}};
  a->on_relation(rel);
  long before = vm_rss_kb(), peak = before;
  auto started = Clock::now();
  a->on_begin(Begin{Lsn(0x10000), 0, 9});
  std::string id, k, payload;
  Insert ins;
  ins.relation = 1;
  ins.new_tuple.resize(3);
  for (int i = 0; i < kRows; i++) {
    id = std::to_string(i);
    k = std::to_string(i * 31 + 7);
    payload = "payload of row " + id + " with some text to make it a realistic size";
    ins.new_tuple[0] = ColumnValue{ColumnValue::Kind::Text, id};
    ins.new_tuple[1] = ColumnValue{ColumnValue::Kind::Text, k};
    ins.new_tuple[2] = ColumnValue{ColumnValue::Kind::Text, payload};
    a->on_insert(ins);
    if (i % 10000 == 0) peak = std::max(peak, vm_rss_kb());
  }
  a->on_commit(Commit{0, Lsn(0x10000), Lsn(0x10010), 0});
  EXPECT_EQ(a->flush(), Lsn(0x10010));
  double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  peak = std::max(peak, vm_rss_kb());
  std::printf("[ apply    ] %d inserts into %d shards in %.2f s: %.0f changes/s; VmRSS %ld -> peak %ld kB\n",
              kRows, kShards, seconds, kRows / seconds, before, peak);
  EXPECT_LT(peak - before, 50 * 1024) << "memory grew with the transaction";
  EXPECT_EQ(total("huge"), kRows);
  EXPECT_EQ(misplaced(0, "huge", "k", "oracle_bigint") + misplaced(1, "huge", "k", "oracle_bigint"), 0);
}

// A shard that stops taking statements (a lock held elsewhere) makes the stream wait on its socket
// instead of piling statements up in memory; once it is released, everything arrives.
TEST_F(Apply, ABlockedShardHoldsTheStreamBackInsteadOfBuffering) {
  constexpr int kRows = 100000;
  everywhere("CREATE TABLE held (id bigint PRIMARY KEY, payload text)");
  ShardedTable rule = rule_for("held", "id", DataType::Bigint);
  auto a = applier({table_for("held", {"id", "payload"}, {"id"}, &rule)});
  Feed feed(*a);
  feed.relation(1, "held", {{"id", kInt8, true}, {"payload", kText}});
  PollWaiter plain;
  Connection locker(destinations()[1], plain);
  locker.exec("BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE");
  std::atomic<int> sent{0};
  std::thread release([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    EXPECT_LT(sent.load(), kRows) << "the stream did not wait for the blocked shard";
    locker.exec("COMMIT");
  });
  long before = vm_rss_kb(), peak = before;
  a->on_begin(Begin{Lsn(0x10000), 0, 9});
  std::string id, payload(400, 'p');
  Insert ins;
  ins.relation = 1;
  ins.new_tuple.resize(2);
  for (int i = 0; i < kRows; i++, sent++) {
    id = std::to_string(i);
    ins.new_tuple[0] = ColumnValue{ColumnValue::Kind::Text, id};
    ins.new_tuple[1] = ColumnValue{ColumnValue::Kind::Text, payload};
    a->on_insert(ins);
    if (i % 5000 == 0) peak = std::max(peak, vm_rss_kb());
  }
  a->on_commit(Commit{0, Lsn(0x10000), Lsn(0x10010), 0});
  release.join();
  EXPECT_EQ(a->flush(), Lsn(0x10010));
  EXPECT_LT(peak - before, 50 * 1024) << "statements for the blocked shard piled up in memory";
  EXPECT_EQ(total("held"), kRows);
}

// ---------------------------------------------------------------------------------------------
// Exactly once per shard with a replication origin

using Progress = std::vector<std::optional<Lsn>>;

std::string id_list(std::initializer_list<std::pair<int64_t, const char *>> rows) {
  std::string out;
  for (const auto &[id, v] : rows) out += (out.empty() ? "" : ",") + std::to_string(id) + ":" + v;
  return out;
}

// A crash after the destinations committed and before the source confirmed: the stream replays
// from the last confirmed position. REPLICA IDENTITY FULL inserts have no key to conflict on, so
// without an origin the replay adds every row again; with one, each shard gets none of what it
// committed, and what follows is applied as usual.
TEST_F(Apply, AnOriginMakesAReplayOfFullIdentityInsertsExactlyOnce) {
  everywhere("CREATE TABLE once_full (k bigint NOT NULL, note text)");
  ShardedTable rule = rule_for("once_full", "k", DataType::Bigint);
  const std::string origin = "apply_test_full";
  ApplyOptions with_origin;
  with_origin.origin = origin;
  struct Outcome {
    ApplyStats stats;
    Progress progress;
  };
  // Transactions at 0x1000, 0x2000, ..., each inserting keys 0..9 twice (identical rows).
  auto replay = [&](const ApplyOptions &options, int transactions, Lsn start) {
    auto a = applier({table_for("once_full", {"k", "note"}, {}, &rule)}, options);
    a->set_start(start);
    Feed feed(*a);
    feed.relation(1, "once_full", {{"k", kInt8, true}, {"note", kText, true}}, 'f');
    for (int t = 1; t <= transactions; t++) {
      feed.txn(0x1000 * t, [&] {
        for (int i = 0; i < 20; i++) feed.insert(1, {val(i / 2), val("t" + std::to_string(t))});
      });
    }
    EXPECT_EQ(a->flush(), Lsn(0x1000 * transactions + 16));
    return Outcome{a->stats(), a->origin_progress()};
  };

  Outcome first = replay(with_origin, 2, Lsn());
  EXPECT_EQ(first.progress, (Progress{Lsn(0x2010), Lsn(0x2010)}));
  for (int s = 0; s < kShards; s++) {
    EXPECT_EQ(origin_lsn(s, origin), "0/2010") << "shard " << s;
    EXPECT_GT(count(s, "once_full"), 0) << "shard " << s;
  }
  ASSERT_EQ(total("once_full"), 40);
  std::string committed = contents("once_full");

  // Replayed from before both, and a new transaction after them (a new applier: a restarted worker).
  Outcome again = replay(with_origin, 3, Lsn(0x800));
  EXPECT_EQ(again.stats.already_applied, 40u);
  EXPECT_EQ(again.stats.applied, 20u);
  EXPECT_EQ(again.progress, (Progress{Lsn(0x3010), Lsn(0x3010)}));
  EXPECT_EQ(total("once_full"), 60);
  EXPECT_EQ(count(0, "once_full", "note = 't3'") + count(1, "once_full", "note = 't3'"), 20);
  shard(0).exec("DELETE FROM once_full WHERE note = 't3'");
  shard(1).exec("DELETE FROM once_full WHERE note = 't3'");
  EXPECT_EQ(contents("once_full"), committed) << "the replay changed the committed rows";
  for (int s = 0; s < kShards; s++) EXPECT_EQ(origin_lsn(s, origin), "0/3010") << "shard " << s;

  // Without an origin the same replay adds every row again: what the origin is for.
  replay(ApplyOptions(), 2, Lsn(0x800));
  EXPECT_EQ(total("once_full"), 80);
}

// A shard's progress names whole source transactions: no flush may commit part of one.
TEST_F(Apply, WithAnOriginAFlushInsideASourceTransactionIsRefused) {
  everywhere("CREATE TABLE midtxn (id bigint PRIMARY KEY)");
  const std::string origin = "apply_test_midtxn";
  ApplyOptions options;
  options.origin = origin;
  auto a = applier({table_for("midtxn", {"id"}, {"id"})}, options);
  Feed feed(*a);
  feed.relation(1, "midtxn", {{"id", kInt8, true}});
  EXPECT_FALSE(a->in_transaction());
  a->on_begin(Begin{Lsn(0x1000), 0, 1});
  feed.insert(1, {val(1)});
  EXPECT_TRUE(a->in_transaction());
  Error e = error_of([&] { a->flush(); });
  EXPECT_EQ(e.sqlstate(), "XX000");
  EXPECT_TRUE(has(e.what(), "part of a source transaction")) << e.what();
  EXPECT_EQ(total("midtxn"), 0);
  EXPECT_EQ(origin_lsn(0, origin), "");
}

// A crash between the shards' COMMITs: shard 0 committed the batch that moved rows to shard 1,
// shard 1 did not. The replay must not look for the rows on shard 0 (it has the transaction), and
// shard 1 must get them whole: the unchanged TOASTed value comes from the source's current row.
// A moved row the source no longer has is not written (the replay goes on to its DELETE).
TEST_F(Apply, AKeyMoveReplayedOntoTheShardThatMissedItTakesUnchangedValuesFromTheSource) {
  const std::string ddl = "CREATE TABLE pmove (id bigint PRIMARY KEY, v text, doc text)";
  everywhere(ddl);
  source_->exec(ddl);
  ShardedTable rule = rule_for("pmove", "id", DataType::Bigint);
  const std::string origin = "apply_test_partial";
  int64_t from = key_on(0, 1000), to = key_on(1, 2000);
  int64_t gone_from = key_on(0, from + 1), gone_to = key_on(1, to + 1);
  std::string doc = big_text(5), gone_doc = big_text(6);
  // The source as it is now: the first row moved, the second moved and then deleted.
  source_->exec("INSERT INTO pmove VALUES (" + std::to_string(to) + ", 'new', '" + doc + "')");
  ApplyOptions options;
  options.origin = origin;
  options.source = source_params();
  auto tables = [&] { return std::vector<ApplyTable>{table_for("pmove", {"id", "v", "doc"}, {"id"}, &rule)}; };
  auto describe = [](Feed &feed) {
    feed.relation(1, "pmove", {{"id", kInt8, true}, {"v", kText}, {"doc", kText}});
  };
  {
    auto a = applier(tables(), options);
    Feed feed(*a);
    describe(feed);
    feed.txn(0x1000, [&] {
      feed.insert(1, {val(from), val("old"), val(doc)});
      feed.insert(1, {val(gone_from), val("old"), val(gone_doc)});
    });
    ASSERT_EQ(a->flush(), Lsn(0x1010));
  }
  ASSERT_EQ(origin_lsn(1, origin), "") << "shard 1 got nothing so far";
  // Shard 0 committed the batch of the moves (0x2000), shard 1 did not.
  shard(0).exec("DELETE FROM pmove");
  advance_origin(0, origin, "0/2010");

  auto a = applier(tables(), options);
  a->set_start(Lsn(0x1010));
  EXPECT_EQ(a->origin_progress(), (Progress{Lsn(0x2010), std::nullopt}));
  Feed feed(*a);
  describe(feed);
  feed.txn(0x2000, [&] {
    feed.update(1, {val(to), val("new"), kUnchanged}, 'K', {val(from), kNull, kNull});
    feed.update(1, {val(gone_to), val("new"), kUnchanged}, 'K', {val(gone_from), kNull, kNull});
  });
  feed.txn(0x3000, [&] { feed.remove(1, {val(gone_to), kNull, kNull}); });
  EXPECT_EQ(a->flush(), Lsn(0x3010));
  EXPECT_EQ(count(0, "pmove"), 0);
  EXPECT_EQ(shard(1).value("SELECT string_agg(id || ' ' || v || ' ' || (md5(doc) = md5('" + doc +
                           "')), ',') FROM pmove"),
            std::to_string(to) + " new true");
  EXPECT_EQ(a->stats().already_applied, 2u);
  EXPECT_EQ(origin_lsn(0, origin), "0/2010") << "shard 0 was sent nothing";
  EXPECT_EQ(origin_lsn(1, origin), "0/3010");
}

// Every path sends nothing to a shard whose origin is past the transaction. Shard 0 says it has
// everything up to 0/2010 and refuses 'bad' values: anything sent there would fail the batch or
// show in its rows. Shard 1, without progress, gets its part.
TEST_F(Apply, ATransactionBelowAShardsProgressSendsItNothing) {
  everywhere("CREATE TABLE below (id bigint PRIMARY KEY, v text, doc text)");
  shard(0).exec("ALTER TABLE below ADD CONSTRAINT no_bad CHECK (v <> 'bad')");
  ShardedTable rule = rule_for("below", "id", DataType::Bigint);
  const std::string origin = "apply_test_below";
  int64_t a0 = key_on(0, 1), b0 = key_on(0, a0 + 1), c0 = key_on(0, b0 + 1), d0 = key_on(0, c0 + 1);
  int64_t a1 = key_on(1, 1), z1 = key_on(1, a1 + 1), moved = key_on(1, z1 + 1);
  shard(0).exec("INSERT INTO below VALUES (" + std::to_string(a0) + ", 'keep', 'doc'), (" +
                std::to_string(d0) + ", 'keep', 'doc')");
  shard(1).exec("INSERT INTO below VALUES (" + std::to_string(z1) + ", 'truncated', 'doc')");
  advance_origin(0, origin, "0/2010");
  ApplyOptions options;
  options.origin = origin;
  auto a = applier({table_for("below", {"id", "v", "doc"}, {"id"}, &rule)}, options);
  EXPECT_EQ(a->origin_progress(), (Progress{Lsn(0x2010), std::nullopt}));
  Feed feed(*a);
  feed.relation(1, "below", {{"id", kInt8, true}, {"v", kText}, {"doc", kText}});
  feed.txn(0x800, [&] { feed.truncate({1}); });
  feed.txn(0x1000, [&] {
    feed.insert(1, {val(b0), val("bad"), val("doc")});
    feed.insert(1, {val(a1), val("x"), val("doc")});
    feed.update(1, {val(a0), val("bad"), kUnchanged});
    feed.remove(1, {val(d0), kNull, kNull});
  });
  // The last transaction shard 0 has: a key move off it, whose old row is not looked for there
  // (without a source, the new shard gets the update of a move already done, as without an origin).
  feed.txn(0x2000, [&] {
    feed.update(1, {val(moved), val("moved"), kUnchanged}, 'K', {val(a0), kNull, kNull});
  });
  feed.txn(0x3000, [&] { feed.insert(1, {val(c0), val("after"), val("doc")}); });
  EXPECT_EQ(a->flush(), Lsn(0x3010));
  const std::string rows = "SELECT coalesce(string_agg(id || ':' || v, ',' ORDER BY id), '') FROM below";
  EXPECT_EQ(shard(0).value(rows), id_list({{a0, "keep"}, {c0, "after"}, {d0, "keep"}}));
  EXPECT_EQ(shard(1).value(rows), id_list({{a1, "x"}}));
  EXPECT_EQ(a->stats().already_applied, 5u);  // the truncate, 3 changes of 0x1000, the move
  EXPECT_EQ(a->stats().applied, 4u);          // the truncate, a1, the move (on shard 1), c0
  for (int s = 0; s < kShards; s++) EXPECT_EQ(origin_lsn(s, origin), "0/3010") << "shard " << s;
}

// Through stream_changes, from the source's slots: a second slot made with the first has confirmed
// nothing, so streaming it replays every transaction, which the shards' origins skip.
TEST_F(Apply, AStreamWithAnOriginReplaysNothingTheShardsCommitted) {
  const std::string ddl = "CREATE TABLE sfull (k bigint NOT NULL, note text)";
  everywhere(ddl);
  source_->exec(ddl + "; ALTER TABLE sfull REPLICA IDENTITY FULL; CREATE PUBLICATION apply_pub FOR TABLE sfull");
  Lsn start = Lsn::parse_or_throw(source_->value(
      "SELECT lsn FROM pg_create_logical_replication_slot('apply_first', 'pgoutput')"));
  source_->exec("SELECT pg_create_logical_replication_slot('apply_replay', 'pgoutput')");
  ShardedTable rule = rule_for("sfull", "k", DataType::Bigint);
  StreamRequest request;
  request.source = source_params();
  request.publication = "apply_pub";
  request.start = start;
  request.tables = {table_for("sfull", {"k", "note"}, {}, &rule)};
  request.destinations = destinations();
  request.apply.origin = "apply_test_stream";
  request.apply.source = source_params();
  struct Observer : StreamObserver {
    void flushed(Lsn lsn, int64_t) override { position = lsn.value(); }
    void source_position(Lsn) override {}
    std::atomic<uint64_t> position{0};
  };
  // Streams `slot` until every transaction committed on the source is applied and confirmed.
  auto stream = [&](const std::string &slot) {
    request.slot = slot;
    Observer observer;
    std::atomic<bool> stop{false};
    SimpleTaskContext ctx([&] { return stop.load(); }, [&](LogLevel, const std::string &m) { logs_.push_back(m); });
    std::thread streaming([&] {
      try {
        stream_changes(request, observer, ctx);
      } catch (const Error &e) {
        if (e.sqlstate() != "57014") ADD_FAILURE() << e.what();
      }
    });
    Lsn end = Lsn::parse_or_throw(source_->value(test::kCommittedWalEndSql));
    EXPECT_TRUE(test::wait_until([&] { return observer.position.load() >= end.value(); }));
    stop = true;
    streaming.join();
  };
  source_->exec("INSERT INTO sfull SELECT i % 10, 'one' FROM generate_series(1, 50) i");
  source_->exec("INSERT INTO sfull SELECT i % 10, 'two' FROM generate_series(1, 50) i");
  stream("apply_first");
  ASSERT_EQ(total("sfull"), 100);
  std::string committed = contents("sfull");
  std::string progress = origin_lsn(0, "apply_test_stream");
  EXPECT_NE(progress, "");
  EXPECT_EQ(origin_lsn(1, "apply_test_stream"), progress);
  EXPECT_TRUE(std::any_of(logs_.begin(), logs_.end(), [](const std::string &m) {
    return has(m, "origin \"apply_test_stream\" (shard 0 at none, shard 1 at none)");
  }));

  source_->exec("INSERT INTO sfull SELECT i % 10, 'three' FROM generate_series(1, 50) i");
  stream("apply_replay");
  EXPECT_TRUE(std::any_of(logs_.begin(), logs_.end(), [&](const std::string &m) {
    return has(m, "(shard 0 at " + progress + ", shard 1 at " + progress + ")");
  }));
  EXPECT_EQ(total("sfull"), 150);
  EXPECT_EQ(count(0, "sfull", "note = 'three'") + count(1, "sfull", "note = 'three'"), 50);
  shard(0).exec("DELETE FROM sfull WHERE note = 'three'");
  shard(1).exec("DELETE FROM sfull WHERE note = 'three'");
  EXPECT_EQ(contents("sfull"), committed) << "the replay changed what the shards had committed";
  source_->exec("SELECT pg_drop_replication_slot('apply_first'); SELECT pg_drop_replication_slot('apply_replay')");
}

// Origins belong to a server, not a database: two destination shards that are databases of one
// server each get their own.
TEST_F(Apply, ShardsThatAreDatabasesOfOneServerEachHaveTheirOrigin) {
  shard(0).exec("CREATE DATABASE apply_second");
  const std::string ddl = "CREATE TABLE samesrv (id bigint PRIMARY KEY)";
  shard(0).exec(ddl);
  shard(0).exec(ddl, "apply_second");
  std::vector<ConnParams> both{destinations()[0], destinations()[0]};
  both[1].dbname = "apply_second";
  ShardedTable rule = rule_for("samesrv", "id", DataType::Bigint);
  ApplyOptions options;
  options.origin = "apply_test_samesrv";
  {
    ChangeApplier a({table_for("samesrv", {"id"}, {"id"}, &rule)}, both, ctx_, options);
    Feed feed(a);
    feed.relation(1, "samesrv", {{"id", kInt8, true}});
    feed.txn(0x1000, [&] {
      for (int i = 0; i < 20; i++) feed.insert(1, {val(i)});
    });
    EXPECT_EQ(a.flush(), Lsn(0x1010));
    EXPECT_EQ(a.origin_progress(), (Progress{Lsn(0x1010), Lsn(0x1010)}));
  }
  EXPECT_EQ(std::stoll(shard(0).value("SELECT count(*) FROM samesrv")) +
                std::stoll(shard(0).value("SELECT count(*) FROM samesrv", "apply_second")),
            20);
  EXPECT_EQ(shard(0).value("SELECT string_agg(roname || ' ' || remote_lsn, ',' ORDER BY roname) FROM "
                           "pg_replication_origin_status JOIN pg_replication_origin ON roident = local_id "
                           "WHERE roname LIKE 'apply_test_samesrv%'"),
            "apply_test_samesrv_to_0 0/1010,apply_test_samesrv_to_1 0/1010");
  drop_apply_origin(both, options.origin, ctx_);
  EXPECT_EQ(shard(0).value("SELECT count(*) FROM pg_replication_origin WHERE roname LIKE 'apply_test_samesrv%'"), "0");
}

// drop_apply_origin removes the origin from every shard, waits for a session that still holds it,
// and is a no-op where it is missing. A second applier on an origin in use waits for it too, and
// gives up with 55006 when it stays in use.
TEST_F(Apply, OriginsAreDroppedAndAnOriginInUseIsWaitedFor) {
  everywhere("CREATE TABLE dropo (id bigint PRIMARY KEY)");
  const std::string origin = "apply_test_drop";
  ApplyOptions options;
  options.origin = origin;
  auto tables = [] { return std::vector<ApplyTable>{table_for("dropo", {"id"}, {"id"})}; };
  auto release_later = [](std::unique_ptr<ChangeApplier> &a) {
    return std::thread([&a] {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      a.reset();
    });
  };
  auto first = applier(tables(), options);
  for (int s = 0; s < kShards; s++) EXPECT_EQ(origins_named(s, origin), 1) << "shard " << s;
  std::thread releasing = release_later(first);
  auto second = applier(tables(), options);  // the first one's sessions end meanwhile
  releasing.join();

  releasing = release_later(second);
  drop_apply_origin(destinations(), origin, ctx_);
  releasing.join();
  for (int s = 0; s < kShards; s++) EXPECT_EQ(origins_named(s, origin), 0) << "shard " << s;
  drop_apply_origin(destinations(), origin, ctx_);  // missing everywhere: fine

  auto holder = applier(tables(), options);
  auto started = Clock::now();
  Error e = error_of([&] { applier(tables(), options); });
  EXPECT_EQ(e.sqlstate(), "55006");
  EXPECT_TRUE(has(e.what(), "\"apply_test_drop_to_0\"") && has(e.what(), "another session")) << e.what();
  EXPECT_GE(Clock::now() - started, std::chrono::seconds(9));
  holder.reset();

  // Every origin the tests made (some on one shard only) dropped by its stream's name: none left.
  std::vector<std::string> streams;
  for (int s = 0; s < kShards; s++) {
    for (const test::Row &row : shard(s).query("SELECT roname FROM pg_replication_origin")) {
      streams.push_back(row[0]->substr(0, row[0]->rfind("_to_")));
    }
  }
  for (const std::string &stream : streams) drop_apply_origin(destinations(), stream, ctx_);
  for (int s = 0; s < kShards; s++) {
    EXPECT_EQ(shard(s).value("SELECT count(*) FROM pg_replication_origin"), "0") << "shard " << s;
  }
}

}  // namespace
}  // namespace pgdog_reshard
