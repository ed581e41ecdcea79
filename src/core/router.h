// Which destination shard(s) a row read by binary COPY belongs to.
//
// The key is read straight from the tuple in its binary send format and hashed (or matched against
// list/range rules) exactly as PostgreSQL's partition routing would, so a row lands on the shard
// PgDog routes its queries to. Built once per table copy; route() costs one hash of the key bytes
// and allocates nothing.
//
// The COPY connections must use the server encoding as client_encoding: text is sent in the
// client encoding, and the hash is of the bytes the destination stores.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/config.h"
#include "core/copy_binary.h"
#include "core/sharding.h"

namespace pgdog_reshard {

// The column types a sharding key may have, as they arrive in binary COPY.
//  - int2/int4/int8 (2/4/8 bytes, big-endian) hash as the same bigint value, as PostgreSQL's
//    integer hash opclasses do, and match rules declared with data_type = "bigint";
//  - text/varchar (raw bytes) hash alike and match "varchar" rules;
//  - uuid (16 bytes) matches "uuid" rules.
// bpchar (char(n)) is not supported: PostgreSQL hashes it without its padding, PgDog hashes the
// value a query carries, and whether that is padded depends on the client. Refusing is safer.
enum class KeyType { Int2, Int4, Int8, Text, Uuid };

const char *key_type_name(KeyType type);  // "smallint", "integer", "bigint", "text", "uuid"
// From a type name as format_type() or pg_type.typname spells it ("bigint", "int8", "character
// varying(64)", "varchar", "text", "uuid", ...); nullopt for an unsupported type.
std::optional<KeyType> key_type_from_name(std::string_view name);
// From a pg_type OID (int2 21, int4 23, int8 20, text 25, varchar 1043, uuid 2950).
std::optional<KeyType> key_type_from_oid(uint32_t oid);

// The shard of a sharding key given in its text form (a pgoutput text value, a literal), under
// `rule`: parsed as the rule's data_type (int2/int4 text parses as bigint, which hashes alike),
// then hashed or matched against the list/range mappings. `table` ("schema"."name", quoted) and
// the rule's column name the key in messages. NULL is the caller's to refuse (22004): text has
// none. Throws Error: 22P02 for text that is not of the rule's type, 23514 for a value no mapping
// (nor a default) maps, 22023 for a mapping to a shard outside [0, shards).
int route_text_key(const ShardedTable &rule, std::string_view text, int shards,
                   std::string_view table);

struct RouteSpec {
  std::string schema;                  // for messages
  std::string table;                   // for messages
  const ShardedTable *rule = nullptr;  // nullptr: omnisharded, every row to every shard
  int key_index = -1;                  // the key's position in the COPY column list
  KeyType key_type = KeyType::Int8;    // the key column's type on the source
  int shards = 1;                      // M, the destination's shard count
};

class RowRouter {
 public:
  static constexpr int kAllShards = -1;

  // Validates the spec: throws Error 22023 for a bad shard count, key index or a mapping to a shard
  // the destination lacks, 42804 when the key's type does not match the rule's data_type.
  explicit RowRouter(const RouteSpec &spec);

  // The shard in [0, shards) the tuple belongs to, or kAllShards for an omnisharded table.
  // Throws Error: 22004 for a NULL key, 23514 for a value no list/range rule (nor a default)
  // maps, 22P04 when the key field is not the size its type has. Each names table and column.
  int route(const TupleView &tuple);
  // The same for a key given alone in its binary send format (a pgoutput binary value): the copy
  // and the stream route the same bytes the same way. Throws like route().
  int route_key(const CopyField &key);

  bool omnisharded() const { return omnisharded_; }
  int shards() const { return shards_; }

 private:
  CopyField key_field(const TupleView &tuple) const;
  uint64_t key_hash(const CopyField &key) const;
  int64_t key_integer(const CopyField &key) const;
  const Key &key_value(const CopyField &key);
  int mapped(const CopyField &key);
  void validate(const RouteSpec &spec) const;
  std::string describe_column() const;  // column "c" of table "s"."t"
  [[noreturn]] void wrong_size(const CopyField &key, int expected) const;

  std::string table_;   // "schema"."table", quoted for messages
  std::string column_;
  bool omnisharded_ = true;
  bool hash_ = true;
  int key_index_ = -1;
  KeyType key_type_ = KeyType::Int8;
  DataType data_type_ = DataType::Bigint;
  int shards_ = 1;
  std::vector<Mapping> mappings_;
  Key scratch_;  // the key for list/range matching, reused so matching allocates nothing per row
};

}  // namespace pgdog_reshard
