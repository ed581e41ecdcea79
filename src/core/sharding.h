// Sharding functions: which destination shard a sharding key belongs to.
//
// Hash sharding is bit-identical to PostgreSQL's PARTITION BY HASH on one column (and so to PgDog's
// router): shard r holds exactly the rows PostgreSQL would put in partition (MODULUS n, REMAINDER r).
// List and range rules map explicit values to shards, with an optional default shard.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace pgdog_reshard {

// The column types a sharding rule can hash. int2/int4 keys hash as the same bigint value;
// text and varchar hash alike.
enum class DataType { Bigint, Varchar, Uuid };

const char *data_type_name(DataType type);
// Accepts PgDog's names ("bigint", "varchar", "uuid") and returns nullopt for anything else.
std::optional<DataType> parse_data_type(std::string_view name);

// A sharding key value: int64 for bigint; the raw bytes for varchar; the 16 raw bytes for uuid.
using Key = std::variant<int64_t, std::string>;

// Parses a key's text form ("42", "apples", "550e8400-e29b-41d4-a716-446655440000") for a type;
// throws Error(22P02) naming the value when it is not of that type.
Key parse_key(DataType type, std::string_view text);
// The text form of a key, as PostgreSQL would print it.
std::string format_key(DataType type, const Key &key);

// --- Hash sharding (PostgreSQL's partition hash, via libpgcommon's hash_bytes*_extended) ---
uint64_t hash_bigint(int64_t value);
uint64_t hash_bytes(const void *data, size_t len);  // varchar/text bytes, or a uuid's 16 bytes
// Shard of an already computed per-type hash; shards >= 1.
int shard_of_hash(uint64_t type_hash, int shards);
int hash_shard(DataType type, const Key &key, int shards);

// --- List and range rules ---
struct Mapping {
  enum class Kind { List, Range, Default };
  Kind kind = Kind::List;
  std::vector<Key> values;   // List: exact values
  std::optional<Key> start;  // Range: start <= key (inclusive); absent = unbounded
  std::optional<Key> end;    // Range: key < end (exclusive); absent = unbounded
  int shard = 0;
};

// Compares two keys of one type in PostgreSQL's order for bigint and uuid, and byte order
// (the C collation) for varchar.
int compare_keys(const Key &a, const Key &b);

// The shard a key goes to under list/range rules, or nullopt when no rule (and no default) matches.
// With no mappings at all the rule is a hash rule: see hash_shard.
std::optional<int> mapped_shard(const std::vector<Mapping> &mappings, const Key &key);

}  // namespace pgdog_reshard

namespace pgdog_reshard {
// The rules as a JSON array for the reshard_sharded_tables view, e.g.
// [{"values": [1, 2], "shard": 0}, {"start": 100, "end": null, "shard": 1}, {"default": true, "shard": 2}]
std::string mappings_json(DataType type, const std::vector<Mapping> &mappings);
}  // namespace pgdog_reshard
