// Sharding rules as SQL: conditions a server evaluates on its own rows to tell which of them belong
// to another shard, so that verification counts misplaced rows without reading them out.
//
// Hash rules use PostgreSQL's own satisfies_hash_partition() against a hash-partitioned table
// whose key has the column's type (the caller creates it, e.g. as a temporary table): the server's
// partition hash is the one PgDog routes with (see sharding.h), so the answer is bit-identical.
// List and range rules become a CASE over the mappings, in the order mapped_shard() applies them,
// comparing varchar keys byte by byte (COLLATE "C") as compare_keys() does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/sharding.h"

namespace pgdog_reshard {

// CASE WHEN <key matches the first mapping> THEN <its shard> ... ELSE <default shard, or NULL> END:
// the shard mapped_shard() gives the key's value. `key` is an SQL expression (a quoted column).
std::string mapped_shard_sql(DataType type, const std::vector<Mapping> &mappings, std::string_view key);

// True for a row on shard `shard` of `shards` whose key belongs elsewhere, or is NULL (no shard
// holds a NULL key: pre-flight refuses them). `hash_parent` is the OID of a table PARTITION BY
// HASH on one column of the key's type, used for hash rules only.
std::string misplaced_sql(const ShardedTable &rule, std::string_view key, int shards, int shard,
                          uint32_t hash_parent);

}  // namespace pgdog_reshard
