// The table copy's data path against real PostgreSQL 15 servers: CopyBinaryReader on streams the
// server produced (every common type, a TOASTed value, any chunking), and RowRouter + one
// CopyBinaryWriter per shard feeding COPY FROM STDIN on the destination, checked row by row with
// PostgreSQL's own satisfies_hash_partition and an ordered checksum of both sides.
//
// It also keeps the unit tests' fixture honest: test/unit/data/copy_types.bin must be what the
// server sends for the `fixture` table below. To regenerate it (after changing that table):
//   PGDOG_WRITE_FIXTURES=1 <build>/e2e_tests --gtest_filter='CopyCapture.Fixture*'
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/copy_binary.h"
#include "core/pg.h"
#include "core/router.h"
#include "harness.h"

namespace pgdog_reshard {
namespace {

using test::InstanceOptions;
using test::PgInstance;

constexpr int kShards = 3;
constexpr int kRoutedRows = 100000;

// The table whose binary COPY is the unit tests' fixture (test/unit/copy_binary_test.cpp states
// the bytes each field must have). Deterministic, small, every field kind the reader meets.
constexpr const char *kFixtureTable = R"sql(
CREATE TABLE fixture (id int4, big int8, small int2, label text, u uuid, n numeric, j jsonb,
                      a int4[], b bytea, ts timestamptz, flag bool, v varchar(20));
INSERT INTO fixture VALUES
  (1, 9223372036854775807, -32768, 'héllo wörld €', '550e8400-e29b-41d4-a716-446655440000',
   1.5, '{"a": [1, 2]}', '{1,NULL,3}', '\x00ff10', '2000-01-01 00:00:00+00', true, 'apples'),
  (2, -1, 0, '', '00000000-0000-0000-0000-000000000000', -123456.789, 'null', '{}', '\x',
   '1999-12-31 23:59:59.999999+00', false, ''),
  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
)sql";

// Every type a table copy commonly meets, NULLs in every column, and a value over 100 kB that is
// stored TOASTed (compressed and out of line) but arrives whole.
constexpr const char *kTypesTable = R"sql(
CREATE TABLE types (id int4, big int8, small int2, label text, huge text, u uuid, n numeric,
                    j jsonb, a text[], b bytea, ts timestamptz, flag bool);
INSERT INTO types
  SELECT g, g::int8 * 1000000007, (g % 30000)::int2,
         CASE WHEN g % 5 = 0 THEN NULL ELSE 'ünïcødé ' || g || ' 日本語 🐘' END,
         CASE WHEN g = 7 THEN (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i)
              WHEN g % 3 = 0 THEN NULL ELSE repeat('x', g) END,
         CASE WHEN g % 4 = 0 THEN NULL ELSE md5(g::text)::uuid END,
         CASE WHEN g % 6 = 0 THEN NULL ELSE (g * 3.14159)::numeric(20, 5) END,
         CASE WHEN g % 7 = 0 THEN NULL
              ELSE jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g)) END,
         CASE WHEN g % 8 = 0 THEN NULL ELSE ARRAY['x' || g, NULL, 'z'] END,
         CASE WHEN g % 9 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
         CASE WHEN g % 10 = 0 THEN NULL
              ELSE '2024-02-29 12:00:00+00'::timestamptz + g * interval '1 hour' END,
         CASE WHEN g % 11 = 0 THEN NULL ELSE g % 2 = 0 END
  FROM generate_series(1, 200) g;
INSERT INTO types VALUES (0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
)sql";

// The server's own binary send function per column of `types`: the oracle for each field's bytes.
constexpr const char *kTypesSendQuery =
    "SELECT int4send(id), int8send(big), int2send(small), textsend(label), textsend(huge),"
    " uuid_send(u), numeric_send(n), jsonb_send(j), array_send(a), byteasend(b),"
    " timestamptz_send(ts), boolsend(flag) FROM types";

std::string from_hex(std::string_view text) {
  if (text.substr(0, 2) != "\\x") throw std::runtime_error("not a hex bytea: " + std::string(text));
  std::string out;
  for (size_t i = 2; i + 1 < text.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(std::string(text.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

using Fields = std::vector<std::optional<std::string>>;

Fields fields_of(const TupleView &tuple) {
  Fields out;
  for (int i = 0; i < tuple.field_count(); i++) {
    CopyField f = tuple.field(i);
    out.push_back(f.is_null() ? std::nullopt : std::optional<std::string>(std::string(f.bytes())));
  }
  return out;
}

// What the reader makes of `stream` fed in chunks of `chunk` bytes, and the most it buffered.
struct Parsed {
  std::vector<Fields> rows;
  size_t max_buffered = 0;
};

Parsed parse_in_chunks(const std::string &stream, size_t chunk, int expected_fields) {
  Parsed parsed;
  CopyBinaryReader reader([&](const TupleView &t) { parsed.rows.push_back(fields_of(t)); },
                          expected_fields);
  for (size_t at = 0; at < stream.size(); at += chunk) {
    reader.feed(stream.data() + at, std::min(chunk, stream.size() - at));
    parsed.max_buffered = std::max(parsed.max_buffered, reader.buffered());
  }
  reader.finish();
  EXPECT_EQ(reader.bytes(), stream.size());
  EXPECT_EQ(reader.tuples(), parsed.rows.size());
  return parsed;
}

// One sharding-key case of the routing test: a key column type and how to fill it.
struct KeyCase {
  std::string name;      // table suffix
  std::string sql_type;  // the key column's type
  std::string key_expr;  // the key of row g (g = 1..kRoutedRows)
  DataType rule_type;
};

class CopyCapture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    InstanceOptions source_options;
    source_options.name = "copy_source";
    source_ = std::make_unique<PgInstance>(source_options);
    InstanceOptions destination_options;
    destination_options.name = "copy_destination";
    destination_ = std::make_unique<PgInstance>(destination_options);
    source_->exec(kFixtureTable);
    source_->exec(kTypesTable);
    destination_->exec(kTypesTable);
    destination_->exec("TRUNCATE types");
  }
  static void TearDownTestSuite() {
    source_.reset();
    destination_.reset();
  }

  static ConnParams params(const PgInstance &instance) {
    ConnParams p;
    p.host = instance.host();
    p.port = instance.port();
    p.dbname = "postgres";
    p.user = "postgres";
    p.application_name = "copy_capture_test";
    return p;
  }

  std::string capture(const std::string &copy_sql, std::vector<size_t> *chunk_sizes = nullptr) {
    Connection conn(params(*source_), waiter_);
    std::string stream;
    conn.copy_out(copy_sql, [&](const char *data, size_t len) {
      stream.append(data, len);
      if (chunk_sizes) chunk_sizes->push_back(len);
    });
    return stream;
  }

  void route_and_verify(const KeyCase &key);

  static std::unique_ptr<PgInstance> source_;
  static std::unique_ptr<PgInstance> destination_;
  PollWaiter waiter_;
};

std::unique_ptr<PgInstance> CopyCapture::source_;
std::unique_ptr<PgInstance> CopyCapture::destination_;

TEST_F(CopyCapture, FixtureIsWhatTheServerSends) {
  std::string stream = capture("COPY fixture TO STDOUT (FORMAT binary)");
  std::string path = std::string(PGDOG_SOURCE_DIR) + "/test/unit/data/copy_types.bin";
  if (std::getenv("PGDOG_WRITE_FIXTURES")) {
    std::ofstream(path, std::ios::binary) << stream;
  }
  std::ifstream file(path, std::ios::binary);
  ASSERT_TRUE(file) << path << " is missing; see the comment at the top of this file";
  std::stringstream saved;
  saved << file.rdbuf();
  EXPECT_EQ(saved.str(), stream) << path << " is stale; see the comment at the top of this file";
  EXPECT_EQ(parse_in_chunks(stream, 1, 12).rows.size(), 3u);
}

TEST_F(CopyCapture, ParsesEveryTypeInAnyChunking) {
  std::vector<size_t> messages;
  std::string stream = capture("COPY types TO STDOUT (FORMAT binary)", &messages);
  ASSERT_GT(stream.size(), 100u * 1024);

  // The oracle: each field as the type's send function produces it, keyed by id (field 0).
  std::map<std::string, Fields> expected;
  for (const test::Row &row : source_->query(kTypesSendQuery)) {
    Fields fields;
    for (const auto &value : row) {
      fields.push_back(value ? std::optional<std::string>(from_hex(*value)) : std::nullopt);
    }
    expected[*fields[0]] = fields;
  }
  ASSERT_EQ(expected.size(), 201u);

  for (size_t chunk : {size_t{1}, size_t{7}, size_t{8192}, stream.size()}) {
    SCOPED_TRACE("chunks of " + std::to_string(chunk) + " bytes");
    Parsed parsed = parse_in_chunks(stream, chunk, 12);
    ASSERT_EQ(parsed.rows.size(), expected.size());
    for (const Fields &row : parsed.rows) {
      ASSERT_TRUE(row[0]);
      EXPECT_EQ(row, expected[*row[0]]);
    }
    size_t huge = expected[std::string("\0\0\0\7", 4)][4]->size();
    EXPECT_EQ(huge, 128000u);
    EXPECT_LE(parsed.max_buffered, huge + 1024);  // at most the one tuple being completed
  }

  // As libpq delivers it (one CopyData message per row), nothing is ever buffered.
  Parsed parsed;
  CopyBinaryReader reader([&](const TupleView &t) { parsed.rows.push_back(fields_of(t)); }, 12);
  size_t at = 0;
  for (size_t len : messages) {
    reader.feed(stream.data() + at, len);
    at += len;
    EXPECT_EQ(reader.buffered(), 0u);
  }
  reader.finish();
  EXPECT_EQ(parsed.rows.size(), expected.size());
}

TEST_F(CopyCapture, WriterStreamRestoresTheTableExactly) {
  std::string stream = capture("COPY types TO STDOUT (FORMAT binary)");

  // Through reader and writer: the same bytes, whatever the flush threshold.
  for (size_t threshold : {size_t{1}, size_t{100}, CopyBinaryWriter::kDefaultFlushBytes}) {
    std::string out;
    CopyBinaryWriter writer([&](const char *d, size_t n) { out.append(d, n); }, threshold);
    CopyBinaryReader reader([&](const TupleView &t) { writer.write(t); });
    reader.feed(stream.data(), stream.size());
    reader.finish();
    writer.finish();
    EXPECT_EQ(out, stream) << "threshold " << threshold;
    EXPECT_EQ(writer.rows(), 201u);
    EXPECT_EQ(writer.bytes(), stream.size());
  }

  // And the server takes it back: the destination's copy equals the source's rows.
  Connection destination(params(*destination_), waiter_);
  destination.copy_in_begin("COPY types FROM STDIN (FORMAT binary)");
  CopyBinaryWriter writer([&](const char *d, size_t n) { destination.copy_in_put(d, n); });
  CopyBinaryReader reader([&](const TupleView &t) { writer.write(t); });
  reader.feed(stream.data(), stream.size());
  reader.finish();
  writer.finish();
  EXPECT_EQ(destination.copy_in_end(), 201u);
  const std::string checksum =
      "SELECT md5(string_agg(t::text, E'\\n' ORDER BY t.id)) FROM types t";
  EXPECT_EQ(destination_->value(checksum), source_->value(checksum));
}

// Routes kRoutedRows rows of a table keyed by `key` to kShards destination tables, each through
// its own writer and COPY FROM STDIN, then checks placement and content against PostgreSQL.
void CopyCapture::route_and_verify(const KeyCase &key) {
  const std::string src = "src_" + key.name, oracle = "oracle_" + key.name;
  const std::string columns = "(payload, k, n, note)";  // the key is not the first column
  source_->exec("CREATE TABLE " + src + " (payload text, k " + key.sql_type +
                " NOT NULL, n int, note text);"
                "INSERT INTO " + src + " SELECT md5(g::text), " + key.key_expr +
                ", g, CASE WHEN g % 7 = 0 THEN NULL ELSE repeat('é', g % 50) END"
                " FROM generate_series(1, " + std::to_string(kRoutedRows) + ") g");
  std::vector<std::string> dst;
  for (int r = 0; r < kShards; r++) {
    dst.push_back("dst_" + key.name + "_" + std::to_string(r));
    destination_->exec("CREATE TABLE " + dst.back() + " (payload text, k " + key.sql_type +
                       ", n int, note text)");
  }
  destination_->exec("CREATE TABLE " + oracle + " (k " + key.sql_type + ") PARTITION BY HASH (k)");

  ShardedTable rule;
  rule.database = "prod_3x";
  rule.table = src;
  rule.column = "k";
  rule.data_type = key.rule_type;
  RouteSpec spec{"public", src, &rule, 1, *key_type_from_name(key.sql_type), kShards};
  RowRouter router(spec);

  Connection source(params(*source_), waiter_);
  std::vector<std::unique_ptr<Connection>> shards;
  std::vector<std::unique_ptr<CopyBinaryWriter>> writers;
  for (int r = 0; r < kShards; r++) {
    shards.push_back(std::make_unique<Connection>(params(*destination_), waiter_));
    Connection *conn = shards.back().get();
    conn->copy_in_begin("COPY " + dst[r] + " " + columns + " FROM STDIN (FORMAT binary)");
    writers.push_back(std::make_unique<CopyBinaryWriter>(
        [conn](const char *d, size_t n) { conn->copy_in_put(d, n); }));
  }
  CopyBinaryReader reader([&](const TupleView &t) { writers[router.route(t)]->write(t); }, 4);
  uint64_t out_rows = source.copy_out("COPY " + src + " " + columns + " TO STDOUT (FORMAT binary)",
                                      [&](const char *d, size_t n) { reader.feed(d, n); });
  reader.finish();
  EXPECT_EQ(out_rows, static_cast<uint64_t>(kRoutedRows));

  uint64_t in_rows = 0;
  for (int r = 0; r < kShards; r++) {
    writers[r]->finish();
    uint64_t rows = shards[r]->copy_in_end();
    EXPECT_EQ(rows, writers[r]->rows());
    EXPECT_GT(rows, kRoutedRows / kShards * 9 / 10) << "shard " << r << " is short";
    in_rows += rows;
  }
  EXPECT_EQ(in_rows, static_cast<uint64_t>(kRoutedRows));

  // Every row is where PostgreSQL's own partition routing would put it.
  for (int r = 0; r < kShards; r++) {
    EXPECT_EQ(destination_->value("SELECT count(*) FROM " + dst[r] +
                                  " WHERE NOT satisfies_hash_partition('" + oracle + "'::regclass, " +
                                  std::to_string(kShards) + ", " + std::to_string(r) + ", k)"),
              "0")
        << dst[r];
  }
  // And the shards together hold exactly the source's rows: same ordered checksum.
  std::string all = "SELECT * FROM " + dst[0] + " UNION ALL SELECT * FROM " + dst[1] +
                    " UNION ALL SELECT * FROM " + dst[2];
  const std::string digest =
      "SELECT count(*) || ' ' || md5(string_agg(t::text, E'\\n' ORDER BY t::text)) FROM (";
  EXPECT_EQ(destination_->value(digest + all + ") t"),
            source_->value(digest + "SELECT payload, k, n, note FROM " + src + ") t"));
}

TEST_F(CopyCapture, RoutesBigintKeyLikePartitionHash) {
  route_and_verify({"bigint", "bigint", "g::bigint * 7919 - 400000000", DataType::Bigint});
}

TEST_F(CopyCapture, RoutesIntegerKeyLikePartitionHash) {
  route_and_verify({"int4", "integer", "g * 37 - 1850000", DataType::Bigint});
}

TEST_F(CopyCapture, RoutesUuidKeyLikePartitionHash) {
  route_and_verify({"uuid", "uuid", "md5(g::text)::uuid", DataType::Uuid});
}

TEST_F(CopyCapture, RoutesTextKeyLikePartitionHash) {
  route_and_verify({"text", "text",
                    "CASE WHEN g = 1 THEN '' ELSE 'user-' || g || repeat('€', g % 3) END",
                    DataType::Varchar});
}

TEST_F(CopyCapture, OmnishardedTableReachesEveryShard) {
  source_->exec("CREATE TABLE omni (id int, label text);"
                "INSERT INTO omni SELECT g, 'label ' || g FROM generate_series(1, 1000) g");
  RowRouter router(RouteSpec{"public", "omni", nullptr, -1, KeyType::Int8, kShards});
  std::vector<std::string> streams(kShards);
  std::vector<std::unique_ptr<CopyBinaryWriter>> writers;
  for (int r = 0; r < kShards; r++) {
    writers.push_back(std::make_unique<CopyBinaryWriter>(
        [&streams, r](const char *d, size_t n) { streams[r].append(d, n); }));
  }
  CopyBinaryReader reader([&](const TupleView &t) {
    ASSERT_EQ(router.route(t), RowRouter::kAllShards);
    for (auto &writer : writers) writer->write(t);
  });
  std::string stream = capture("COPY omni (id, label) TO STDOUT (FORMAT binary)");
  reader.feed(stream.data(), stream.size());
  reader.finish();
  for (int r = 0; r < kShards; r++) {
    writers[r]->finish();
    EXPECT_EQ(streams[r], stream) << "shard " << r;  // every shard gets the table, byte for byte
  }
}

}  // namespace
}  // namespace pgdog_reshard
