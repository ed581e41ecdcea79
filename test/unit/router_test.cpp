// RowRouter: keys in binary send format routed like PostgreSQL's partition hash (the vectors of
// pgdog-facts.md, computed by PostgreSQL 15), list/range rules, and the errors that must name the
// table, the column and the value instead of silently broadcasting a row.
#include "core/router.h"

#include <gtest/gtest.h>

#include "expect_error.h"

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace pgdog_reshard {
namespace {

std::string be(uint64_t v, int width) {
  std::string out;
  for (int i = width - 1; i >= 0; i--) out.push_back(static_cast<char>((v >> (8 * i)) & 255));
  return out;
}

std::string uuid(const char *text) { return std::get<std::string>(parse_key(DataType::Uuid, text)); }

// A tuple built by hand: its bytes and field offsets, as CopyBinaryReader would report them.
class Tuple {
 public:
  explicit Tuple(const std::vector<std::optional<std::string>> &fields) {
    bytes_ = be(fields.size(), 2);
    for (const auto &f : fields) {
      offsets_.push_back(bytes_.size());
      bytes_ += f ? be(f->size(), 4) + *f : be(0xffffffff, 4);
    }
  }
  TupleView view() const {
    return TupleView(bytes_.data(), bytes_.size(), offsets_.data(), static_cast<int>(offsets_.size()));
  }

 private:
  std::string bytes_;
  std::vector<size_t> offsets_;
};

ShardedTable rule(DataType type, std::vector<Mapping> mappings = {}) {
  ShardedTable r;
  r.database = "prod_2x";
  r.table = "orders";
  r.column = "user_id";
  r.data_type = type;
  r.mappings = std::move(mappings);
  return r;
}

// Routes a single key placed as the second of three fields (the key is rarely first).
int route_key(const ShardedTable &r, KeyType type, const std::optional<std::string> &key, int shards) {
  RowRouter router(RouteSpec{"public", "orders", &r, 1, type, shards});
  return router.route(Tuple({std::string("x"), key, std::nullopt}).view());
}

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << (text) << "\" lacks \"" << (part) << "\""

struct Vector {
  KeyType type;
  std::string key;  // binary send format
  int n2, n3, n4, n8;
};

TEST(Router, HashMatchesPostgresVectors) {
  const Vector vectors[] = {
      {KeyType::Int8, be(0, 8), 0, 2, 0, 0},
      {KeyType::Int8, be(1, 8), 0, 2, 0, 0},
      {KeyType::Int8, be(3, 8), 1, 1, 1, 1},
      {KeyType::Int8, be(42, 8), 0, 0, 2, 2},
      {KeyType::Int8, be(uint64_t(-1), 8), 1, 2, 1, 5},
      {KeyType::Int8, be(1000000, 8), 1, 0, 3, 3},
      // Narrower integers hash as the same bigint (sign-extended).
      {KeyType::Int4, be(42, 4), 0, 0, 2, 2},
      {KeyType::Int4, be(uint32_t(-1), 4), 1, 2, 1, 5},
      {KeyType::Int4, be(1000000, 4), 1, 0, 3, 3},
      {KeyType::Int2, be(3, 2), 1, 1, 1, 1},
      {KeyType::Int2, be(uint16_t(-1), 2), 1, 2, 1, 5},
      {KeyType::Text, "", 0, 2, 2, 6},
      {KeyType::Text, "apples", 1, 1, 1, 5},
      {KeyType::Text, "abcdefghijklm", 0, 1, 2, 6},
      {KeyType::Uuid, uuid("00000000-0000-0000-0000-000000000000"), 1, 0, 1, 5},
      {KeyType::Uuid, uuid("550e8400-e29b-41d4-a716-446655440000"), 1, 2, 1, 1},
  };
  for (const Vector &v : vectors) {
    SCOPED_TRACE(std::string(key_type_name(v.type)) + " key of " + std::to_string(v.key.size()) +
                 " bytes");
    DataType data_type = v.type == KeyType::Text   ? DataType::Varchar
                         : v.type == KeyType::Uuid ? DataType::Uuid
                                                   : DataType::Bigint;
    ShardedTable r = rule(data_type);
    EXPECT_EQ(route_key(r, v.type, v.key, 1), 0);
    EXPECT_EQ(route_key(r, v.type, v.key, 2), v.n2);
    EXPECT_EQ(route_key(r, v.type, v.key, 3), v.n3);
    EXPECT_EQ(route_key(r, v.type, v.key, 4), v.n4);
    EXPECT_EQ(route_key(r, v.type, v.key, 8), v.n8);
  }
}

// The same hash as sharding.h's, on keys across the whole range of each type.
TEST(Router, HashAgreesWithShardingForManyKeys) {
  ShardedTable bigint = rule(DataType::Bigint), text = rule(DataType::Varchar);
  for (int64_t i = -5000; i < 5000; i++) {
    int64_t v = i * 1000003 * 1000003;
    ASSERT_EQ(route_key(bigint, KeyType::Int8, be(uint64_t(v), 8), 7),
              hash_shard(DataType::Bigint, Key{v}, 7));
    std::string s = "key-" + std::to_string(i);
    ASSERT_EQ(route_key(text, KeyType::Text, s, 5), hash_shard(DataType::Varchar, Key{s}, 5));
  }
}

TEST(Router, OmnishardedTableGoesToAllShards) {
  RowRouter router(RouteSpec{"public", "countries", nullptr, -1, KeyType::Int8, 4});
  EXPECT_TRUE(router.omnisharded());
  EXPECT_EQ(router.shards(), 4);
  // No key is looked at: not even a NULL in every field matters.
  EXPECT_EQ(router.route(Tuple({std::nullopt, std::nullopt}).view()), RowRouter::kAllShards);
}

TEST(Router, ListRangeAndDefaultRules) {
  std::vector<Mapping> mappings(3);
  mappings[0].kind = Mapping::Kind::List;
  mappings[0].values = {Key{int64_t{1}}, Key{int64_t{2}}, Key{int64_t{3}}};
  mappings[0].shard = 0;
  mappings[1].kind = Mapping::Kind::Range;
  mappings[1].start = Key{int64_t{100}};
  mappings[1].end = Key{int64_t{200}};
  mappings[1].shard = 1;
  mappings[2].kind = Mapping::Kind::Range;
  mappings[2].start = Key{int64_t{200}};  // no end: up to the largest bigint
  mappings[2].shard = 2;
  ShardedTable r = rule(DataType::Bigint, mappings);

  EXPECT_EQ(route_key(r, KeyType::Int8, be(2, 8), 3), 0);
  EXPECT_EQ(route_key(r, KeyType::Int4, be(3, 4), 3), 0);  // an int4 key against bigint values
  EXPECT_EQ(route_key(r, KeyType::Int8, be(100, 8), 3), 1);  // start is inclusive
  EXPECT_EQ(route_key(r, KeyType::Int8, be(199, 8), 3), 1);
  EXPECT_EQ(route_key(r, KeyType::Int2, be(200, 2), 3), 2);  // end is exclusive
  EXPECT_EQ(route_key(r, KeyType::Int8, be(INT64_MAX, 8), 3), 2);

  Error e = error_of([&] { route_key(r, KeyType::Int8, be(uint64_t(-50), 8), 3); });
  EXPECT_EQ(e.sqlstate(), "23514");
  EXPECT_EQ(std::string(e.what()),
            "value -50 of sharding key \"user_id\" of table \"public\".\"orders\" matches no "
            "sharding rule");
  EXPECT_CONTAINS(e.hint(), "default mapping");

  Mapping fallback;
  fallback.kind = Mapping::Kind::Default;
  fallback.shard = 2;
  r.mappings.push_back(fallback);
  EXPECT_EQ(route_key(r, KeyType::Int8, be(uint64_t(-50), 8), 3), 2);
  EXPECT_EQ(route_key(r, KeyType::Int8, be(1, 8), 3), 0);  // explicit rules still win
}

TEST(Router, TextAndUuidRules) {
  Mapping fruit;
  fruit.kind = Mapping::Kind::List;
  fruit.values = {Key{std::string("apples")}, Key{std::string("p\xc3\xa9" "ches")}};
  fruit.shard = 1;
  ShardedTable text = rule(DataType::Varchar, {fruit});
  EXPECT_EQ(route_key(text, KeyType::Text, std::string("p\xc3\xa9" "ches"), 2), 1);
  Error e = error_of([&] { route_key(text, KeyType::Text, std::string("pears"), 2); });
  EXPECT_CONTAINS(e.what(), "value 'pears' of sharding key \"user_id\"");

  // A long value is cut in the message, at a character boundary.
  std::string long_value = std::string(63, 'a') + "\xc3\xa9" + std::string(100, 'z');
  Error cut = error_of([&] { route_key(text, KeyType::Text, long_value, 2); });
  EXPECT_CONTAINS(cut.what(), "value '" + std::string(63, 'a') + "...' of");

  Mapping low, high;
  low.kind = high.kind = Mapping::Kind::Range;
  low.end = Key{uuid("80000000-0000-0000-0000-000000000000")};
  low.shard = 0;
  high.start = low.end;
  high.shard = 1;
  ShardedTable ids = rule(DataType::Uuid, {low, high});
  EXPECT_EQ(route_key(ids, KeyType::Uuid, uuid("7fffffff-ffff-ffff-ffff-ffffffffffff"), 2), 0);
  EXPECT_EQ(route_key(ids, KeyType::Uuid, uuid("80000000-0000-0000-0000-000000000000"), 2), 1);
  EXPECT_EQ(route_key(ids, KeyType::Uuid, uuid("ffffffff-0000-0000-0000-000000000000"), 2), 1);
}

TEST(Router, NullKeyIsAnErrorNamingTableAndColumn) {
  ShardedTable hash = rule(DataType::Bigint);
  Error e = error_of([&] { route_key(hash, KeyType::Int8, std::nullopt, 3); });
  EXPECT_EQ(e.sqlstate(), "22004");
  EXPECT_EQ(std::string(e.what()), "sharding key \"user_id\" of table \"public\".\"orders\" is NULL");
  EXPECT_CONTAINS(e.hint(), "NOT NULL");
  // Even with one shard, where every row would go to shard 0 anyway.
  EXPECT_EQ(error_of([&] { route_key(hash, KeyType::Int8, std::nullopt, 1); }).sqlstate(), "22004");
}

TEST(Router, KeyOfTheWrongSizeIsAnError) {
  ShardedTable bigint = rule(DataType::Bigint), ids = rule(DataType::Uuid);
  Error e = error_of([&] { route_key(bigint, KeyType::Int8, be(7, 4), 2); });
  EXPECT_EQ(e.sqlstate(), "22P04");
  EXPECT_EQ(std::string(e.what()),
            "sharding key \"user_id\" of table \"public\".\"orders\" has 4 bytes in binary format, "
            "expected 8 for type bigint");
  EXPECT_EQ(error_of([&] { route_key(bigint, KeyType::Int2, be(7, 4), 2); }).sqlstate(), "22P04");
  EXPECT_EQ(error_of([&] { route_key(ids, KeyType::Uuid, "short", 2); }).sqlstate(), "22P04");

  RowRouter router(RouteSpec{"public", "orders", &bigint, 5, KeyType::Int8, 2});
  Error few = error_of([&] { router.route(Tuple({be(1, 8)}).view()); });
  EXPECT_EQ(few.sqlstate(), "22P04");
  EXPECT_CONTAINS(few.what(), "has 1 fields, too few for its sharding key \"user_id\" (field 6)");
}

Error spec_error(const RouteSpec &spec) {
  return error_of([&] { RowRouter router(spec); });
}

TEST(Router, RefusesInconsistentSpecs) {
  ShardedTable text = rule(DataType::Varchar);
  Error mismatch = spec_error({"public", "orders", &text, 0, KeyType::Int8, 2});
  EXPECT_EQ(mismatch.sqlstate(), "42804");
  EXPECT_EQ(std::string(mismatch.what()),
            "sharding key \"user_id\" of table \"public\".\"orders\" is of type bigint, but its "
            "sharding rule has data_type \"varchar\"");
  EXPECT_CONTAINS(mismatch.hint(), "data_type = \"bigint\"");
  EXPECT_CONTAINS(mismatch.hint(), "database \"prod_2x\"");

  ShardedTable bigint = rule(DataType::Bigint);
  Error no_key = spec_error({"public", "orders", &bigint, -1, KeyType::Int8, 2});
  EXPECT_EQ(no_key.sqlstate(), "22023");
  EXPECT_CONTAINS(no_key.what(), "not in the COPY column list");

  Error no_shards = spec_error({"public", "orders", nullptr, -1, KeyType::Int8, 0});
  EXPECT_EQ(no_shards.sqlstate(), "22023");

  Mapping beyond;
  beyond.kind = Mapping::Kind::Default;
  beyond.shard = 2;
  ShardedTable listed = rule(DataType::Bigint, {beyond});
  Error shard = spec_error({"public", "orders", &listed, 0, KeyType::Int8, 2});
  EXPECT_EQ(shard.sqlstate(), "22023");
  EXPECT_CONTAINS(shard.what(), "maps values to shard 2, but the destination has 2 shards");
}

TEST(Router, QuotesNamesInMessages) {
  ShardedTable r = rule(DataType::Bigint);
  r.column = "User \"Id\"";
  RowRouter router(RouteSpec{"My Schema", "we\"ird", &r, 0, KeyType::Int8, 2});
  Error e = error_of([&] { router.route(Tuple({std::nullopt}).view()); });
  EXPECT_EQ(std::string(e.what()),
            "sharding key \"User \"\"Id\"\"\" of table \"My Schema\".\"we\"\"ird\" is NULL");
}

TEST(Router, KeyTypesFromNamesAndOids) {
  EXPECT_EQ(key_type_from_name("bigint"), KeyType::Int8);
  EXPECT_EQ(key_type_from_name("int8"), KeyType::Int8);
  EXPECT_EQ(key_type_from_name("pg_catalog.int8"), KeyType::Int8);
  EXPECT_EQ(key_type_from_name("integer"), KeyType::Int4);
  EXPECT_EQ(key_type_from_name("smallint"), KeyType::Int2);
  EXPECT_EQ(key_type_from_name("text"), KeyType::Text);
  EXPECT_EQ(key_type_from_name("character varying(64)"), KeyType::Text);
  EXPECT_EQ(key_type_from_name("varchar"), KeyType::Text);
  EXPECT_EQ(key_type_from_name("uuid"), KeyType::Uuid);
  EXPECT_EQ(key_type_from_name("character(8)"), std::nullopt);  // bpchar: refused, see router.h
  EXPECT_EQ(key_type_from_name("numeric"), std::nullopt);
  EXPECT_EQ(key_type_from_oid(20), KeyType::Int8);
  EXPECT_EQ(key_type_from_oid(23), KeyType::Int4);
  EXPECT_EQ(key_type_from_oid(21), KeyType::Int2);
  EXPECT_EQ(key_type_from_oid(25), KeyType::Text);
  EXPECT_EQ(key_type_from_oid(1043), KeyType::Text);
  EXPECT_EQ(key_type_from_oid(2950), KeyType::Uuid);
  EXPECT_EQ(key_type_from_oid(1042), std::nullopt);
}

// Keys as a real server sent them (data/copy_types.bin; see copy_binary_test.cpp), routed by
// different columns of the same rows.
TEST(Router, RoutesServerCapturedRows) {
  std::ifstream file(std::string(PGDOG_TEST_DATA_DIR) + "/copy_types.bin", std::ios::binary);
  std::stringstream content;
  content << file.rdbuf();
  std::string stream = content.str();

  ShardedTable bigint = rule(DataType::Bigint), text = rule(DataType::Varchar);
  ShardedTable ids = rule(DataType::Uuid);
  RowRouter by_id(RouteSpec{"public", "fixture", &bigint, 0, KeyType::Int4, 3});
  RowRouter by_big(RouteSpec{"public", "fixture", &bigint, 1, KeyType::Int8, 8});
  RowRouter by_label(RouteSpec{"public", "fixture", &text, 3, KeyType::Text, 8});
  RowRouter by_uuid(RouteSpec{"public", "fixture", &ids, 4, KeyType::Uuid, 8});
  RowRouter by_v(RouteSpec{"public", "fixture", &text, 11, KeyType::Text, 8});
  std::vector<std::vector<int>> routed;
  CopyBinaryReader reader([&](const TupleView &t) {
    if (t.field(1).is_null()) {  // the all-NULL row
      EXPECT_EQ(error_of([&] { by_big.route(t); }).sqlstate(), "22004");
      return;
    }
    routed.push_back(
        {by_id.route(t), by_big.route(t), by_label.route(t), by_uuid.route(t), by_v.route(t)});
  });
  reader.feed(stream.data(), stream.size());
  reader.finish();
  ASSERT_EQ(routed.size(), 2u);
  EXPECT_EQ(routed[1][1], 5);  // bigint -1, N=8
  EXPECT_EQ(routed[1][2], 6);  // text '', N=8
  EXPECT_EQ(routed[1][3], 5);  // uuid 0000..., N=8
  EXPECT_EQ(routed[0][0], 2);  // int4 1, N=3
  EXPECT_EQ(routed[0][3], 1);  // uuid 550e8400-..., N=8
  EXPECT_EQ(routed[0][4], 5);  // varchar 'apples', N=8
}

}  // namespace
}  // namespace pgdog_reshard
