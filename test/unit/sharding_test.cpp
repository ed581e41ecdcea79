// The hash must be bit-identical with PostgreSQL's partition hash. The vectors below were computed
// by PostgreSQL 15 itself (pgdog-facts.md); the regress test hash_oracle checks 100,000 random
// values per type against satisfies_hash_partition on a live server.
#include "core/sharding.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace pgdog_reshard {
namespace {

struct Vector {
  DataType type;
  const char *key;
  int n2, n3, n4, n8;
};

const Vector kVectors[] = {
    {DataType::Bigint, "0", 0, 2, 0, 0},
    {DataType::Bigint, "1", 0, 2, 0, 0},
    {DataType::Bigint, "3", 1, 1, 1, 1},
    {DataType::Bigint, "42", 0, 0, 2, 2},
    {DataType::Bigint, "-1", 1, 2, 1, 5},
    {DataType::Bigint, "1000000", 1, 0, 3, 3},
    {DataType::Varchar, "", 0, 2, 2, 6},
    {DataType::Varchar, "apples", 1, 1, 1, 5},
    {DataType::Varchar, "abcdefghijklm", 0, 1, 2, 6},
    {DataType::Uuid, "00000000-0000-0000-0000-000000000000", 1, 0, 1, 5},
    {DataType::Uuid, "550e8400-e29b-41d4-a716-446655440000", 1, 2, 1, 1},
};

TEST(Sharding, MatchesPostgresVectors) {
  for (const Vector &v : kVectors) {
    Key key = parse_key(v.type, v.key);
    SCOPED_TRACE(std::string(data_type_name(v.type)) + " '" + v.key + "'");
    EXPECT_EQ(hash_shard(v.type, key, 2), v.n2);
    EXPECT_EQ(hash_shard(v.type, key, 3), v.n3);
    EXPECT_EQ(hash_shard(v.type, key, 4), v.n4);
    EXPECT_EQ(hash_shard(v.type, key, 8), v.n8);
    EXPECT_EQ(hash_shard(v.type, key, 1), 0);
  }
}

TEST(Sharding, RejectsZeroShards) {
  try {
    hash_shard(DataType::Bigint, Key{int64_t{1}}, 0);
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_EQ(e.sqlstate(), "22023");
  }
}

TEST(Sharding, ParsesAndFormatsKeys) {
  EXPECT_EQ(std::get<int64_t>(parse_key(DataType::Bigint, "-9223372036854775808")), INT64_MIN);
  EXPECT_EQ(std::get<int64_t>(parse_key(DataType::Bigint, "+17")), 17);
  EXPECT_THROW(parse_key(DataType::Bigint, "9223372036854775808"), Error);
  EXPECT_THROW(parse_key(DataType::Bigint, "12abc"), Error);
  EXPECT_THROW(parse_key(DataType::Bigint, ""), Error);

  const std::string canonical = "550e8400-e29b-41d4-a716-446655440000";
  for (const char *form : {"550e8400-e29b-41d4-a716-446655440000", "550E8400E29B41D4A716446655440000",
                           "{550e8400-e29b-41d4-a716-446655440000}", "550e-8400-e29b-41d4-a716-4466-5544-0000"}) {
    Key k = parse_key(DataType::Uuid, form);
    EXPECT_EQ(std::get<std::string>(k).size(), 16u) << form;
    EXPECT_EQ(format_key(DataType::Uuid, k), canonical) << form;
  }
  EXPECT_THROW(parse_key(DataType::Uuid, "550e8400-e29b-41d4-a716-44665544000"), Error);
  EXPECT_THROW(parse_key(DataType::Uuid, "550e8400--e29b-41d4-a716-446655440000"), Error);
  EXPECT_THROW(parse_key(DataType::Uuid, "z50e8400-e29b-41d4-a716-446655440000"), Error);
  try {
    parse_key(DataType::Uuid, "nope");
    FAIL();
  } catch (const Error &e) {
    EXPECT_EQ(e.sqlstate(), "22P02");
    EXPECT_NE(std::string(e.what()).find("\"nope\""), std::string::npos);
  }
}

TEST(Sharding, ParsesDataTypes) {
  EXPECT_EQ(parse_data_type("bigint"), DataType::Bigint);
  EXPECT_EQ(parse_data_type("varchar"), DataType::Varchar);
  EXPECT_EQ(parse_data_type("uuid"), DataType::Uuid);
  EXPECT_FALSE(parse_data_type("vector").has_value());
  EXPECT_FALSE(parse_data_type("BIGINT").has_value());
}

TEST(Sharding, ListRangeAndDefault) {
  std::vector<Mapping> rules;
  rules.push_back({Mapping::Kind::List, {Key{int64_t{1}}, Key{int64_t{2}}}, {}, {}, 0});
  rules.push_back({Mapping::Kind::Range, {}, Key{int64_t{100}}, Key{int64_t{200}}, 1});
  rules.push_back({Mapping::Kind::Range, {}, Key{int64_t{200}}, std::nullopt, 2});
  EXPECT_EQ(mapped_shard(rules, Key{int64_t{1}}), 0);
  EXPECT_EQ(mapped_shard(rules, Key{int64_t{2}}), 0);
  EXPECT_EQ(mapped_shard(rules, Key{int64_t{100}}), 1);   // start is inclusive
  EXPECT_EQ(mapped_shard(rules, Key{int64_t{199}}), 1);
  EXPECT_EQ(mapped_shard(rules, Key{int64_t{200}}), 2);   // end is exclusive
  EXPECT_EQ(mapped_shard(rules, Key{INT64_MAX}), 2);
  EXPECT_FALSE(mapped_shard(rules, Key{int64_t{3}}).has_value());
  EXPECT_FALSE(mapped_shard(rules, Key{int64_t{-5}}).has_value());
  rules.push_back({Mapping::Kind::Default, {}, {}, {}, 3});
  EXPECT_EQ(mapped_shard(rules, Key{int64_t{3}}), 3);
  EXPECT_EQ(mapped_shard(rules, Key{int64_t{150}}), 1);  // an explicit rule beats the default
}

TEST(Sharding, VarcharRangesUseByteOrder) {
  std::vector<Mapping> rules;
  rules.push_back({Mapping::Kind::Range, {}, std::nullopt, Key{std::string("m")}, 0});
  rules.push_back({Mapping::Kind::Range, {}, Key{std::string("m")}, std::nullopt, 1});
  EXPECT_EQ(mapped_shard(rules, Key{std::string("apple")}), 0);
  EXPECT_EQ(mapped_shard(rules, Key{std::string("Zebra")}), 0);  // 'Z' < 'm' in byte order
  EXPECT_EQ(mapped_shard(rules, Key{std::string("m")}), 1);
  EXPECT_EQ(mapped_shard(rules, Key{std::string("\xc3\xa9t\xc3\xa9")}), 1);  // multibyte > ASCII
}

}  // namespace
}  // namespace pgdog_reshard
