#include "core/shard_sql.h"

#include <gtest/gtest.h>

namespace pgdog_reshard {
namespace {

Mapping list_of(std::vector<Key> values, int shard) {
  Mapping m;
  m.kind = Mapping::Kind::List;
  m.values = std::move(values);
  m.shard = shard;
  return m;
}

Mapping range_of(std::optional<Key> start, std::optional<Key> end, int shard) {
  Mapping m;
  m.kind = Mapping::Kind::Range;
  m.start = std::move(start);
  m.end = std::move(end);
  m.shard = shard;
  return m;
}

Mapping default_to(int shard) {
  Mapping m;
  m.kind = Mapping::Kind::Default;
  m.shard = shard;
  return m;
}

TEST(ShardSql, ListAndRangeInRuleOrderWithDefaultLast) {
  std::vector<Mapping> rules = {default_to(2), list_of({Key(int64_t(1)), Key(int64_t(-2))}, 0),
                                range_of(Key(int64_t(100)), std::nullopt, 1)};
  EXPECT_EQ(mapped_shard_sql(DataType::Bigint, rules, "t.\"k\""),
            "(CASE WHEN t.\"k\" IN ('1'::pg_catalog.int8, '-2'::pg_catalog.int8) THEN 0"
            " WHEN t.\"k\" >= '100'::pg_catalog.int8 THEN 1 ELSE 2 END)::pg_catalog.int4");
}

TEST(ShardSql, NoDefaultMapsToNull) {
  std::vector<Mapping> rules = {range_of(std::nullopt, Key(int64_t(10)), 0),
                                range_of(Key(int64_t(10)), Key(int64_t(20)), 1)};
  EXPECT_EQ(mapped_shard_sql(DataType::Bigint, rules, "k"),
            "(CASE WHEN k < '10'::pg_catalog.int8 THEN 0 WHEN k >= '10'::pg_catalog.int8 AND k < "
            "'20'::pg_catalog.int8"
            " THEN 1 ELSE NULL END)::pg_catalog.int4");
  EXPECT_EQ(mapped_shard_sql(DataType::Bigint, {default_to(3)}, "k"), "(3)::pg_catalog.int4");
}

TEST(ShardSql, VarcharComparesBytesAndQuotesValues) {
  std::vector<Mapping> rules = {list_of({Key(std::string("it's")), Key(std::string("a\\b"))}, 1)};
  EXPECT_EQ(mapped_shard_sql(DataType::Varchar, rules, "k"),
            "(CASE WHEN (k)::pg_catalog.text COLLATE \"C\" IN ('it''s'::pg_catalog.text, "
            "E'a\\\\b'::pg_catalog.text)"
            " THEN 1 ELSE NULL END)::pg_catalog.int4");
}

TEST(ShardSql, UuidValuesAreTyped) {
  Key id = parse_key(DataType::Uuid, "550e8400-e29b-41d4-a716-446655440000");
  EXPECT_EQ(mapped_shard_sql(DataType::Uuid, {list_of({id}, 0)}, "k"),
            "(CASE WHEN k IN ('550e8400-e29b-41d4-a716-446655440000'::pg_catalog.uuid) THEN 0 ELSE NULL END)"
            "::pg_catalog.int4");
}

TEST(ShardSql, MisplacedForHashAndMappedRules) {
  ShardedTable hash;
  hash.column = "id";
  EXPECT_EQ(
      misplaced_sql(hash, "t.\"id\"", 3, 1, 16384),
      "(t.\"id\" IS NULL OR NOT pg_catalog.satisfies_hash_partition(16384::pg_catalog.oid, 3, 1, t.\"id\"))");
  ShardedTable list = hash;
  list.mappings = {list_of({Key(int64_t(5))}, 1)};
  EXPECT_EQ(misplaced_sql(list, "k", 2, 0, 0),
            "(k IS NULL OR (CASE WHEN k IN ('5'::pg_catalog.int8) THEN 1 ELSE NULL END)::pg_catalog.int4"
            " IS DISTINCT FROM 0)");
}

}  // namespace
}  // namespace pgdog_reshard
