#include "core/router.h"

#include <cctype>

#include "core/error.h"

namespace pgdog_reshard {

namespace {

// Values shown in messages are cut to this many bytes: a key may be a whole document.
constexpr size_t kShownValueBytes = 64;

std::string quote_ident(const std::string &name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string quote_table(const std::string &schema, const std::string &table) {
  return schema.empty() ? quote_ident(table) : quote_ident(schema) + "." + quote_ident(table);
}

// A key as a message shows it: 42, 'apples'. Long text is cut at a UTF-8 character boundary so
// the message stays valid text.
std::string shown_value(DataType type, const Key &key) {
  std::string text = format_key(type, key);
  if (type == DataType::Bigint) return text;
  if (text.size() > kShownValueBytes) {
    size_t cut = kShownValueBytes;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) cut--;
    text.resize(cut);
    text += "...";
  }
  return "'" + text + "'";
}

// "character varying(64)" -> "character varying"; "pg_catalog.int8" -> "int8".
std::string_view bare_type_name(std::string_view name) {
  size_t paren = name.find('(');
  if (paren != std::string_view::npos) name = name.substr(0, paren);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.remove_suffix(1);
  constexpr std::string_view kCatalog = "pg_catalog.";
  if (name.substr(0, kCatalog.size()) == kCatalog) name.remove_prefix(kCatalog.size());
  return name;
}

bool is_integer(KeyType type) {
  return type == KeyType::Int2 || type == KeyType::Int4 || type == KeyType::Int8;
}

// The rule data_type each key type can be sharded by: the one whose hash PostgreSQL computes the
// same way for this column type.
DataType rule_type_of(KeyType type) {
  if (is_integer(type)) return DataType::Bigint;
  return type == KeyType::Uuid ? DataType::Uuid : DataType::Varchar;
}

}  // namespace

const char *key_type_name(KeyType type) {
  switch (type) {
    case KeyType::Int2: return "smallint";
    case KeyType::Int4: return "integer";
    case KeyType::Int8: return "bigint";
    case KeyType::Text: return "text";
    case KeyType::Uuid: return "uuid";
  }
  return "unknown";
}

std::optional<KeyType> key_type_from_name(std::string_view name) {
  std::string_view bare = bare_type_name(name);
  if (bare == "smallint" || bare == "int2") return KeyType::Int2;
  if (bare == "integer" || bare == "int4" || bare == "int") return KeyType::Int4;
  if (bare == "bigint" || bare == "int8") return KeyType::Int8;
  if (bare == "text" || bare == "character varying" || bare == "varchar") return KeyType::Text;
  if (bare == "uuid") return KeyType::Uuid;
  return std::nullopt;
}

std::optional<KeyType> key_type_from_oid(uint32_t oid) {
  switch (oid) {
    case 21: return KeyType::Int2;
    case 23: return KeyType::Int4;
    case 20: return KeyType::Int8;
    case 25:
    case 1043: return KeyType::Text;
    case 2950: return KeyType::Uuid;
    default: return std::nullopt;
  }
}

int route_text_key(const ShardedTable &rule, std::string_view text, int shards,
                   std::string_view table) {
  std::string column = quote_ident(rule.column) + " of table " + std::string(table);
  Key key;
  try {
    key = parse_key(rule.data_type, text);
  } catch (const Error &e) {
    throw Error(e.sqlstate(), std::string(e.what()) + " in sharding key " + column);
  }
  if (rule.is_hash()) return hash_shard(rule.data_type, key, shards);
  std::optional<int> shard = mapped_shard(rule.mappings, key);
  if (!shard) {
    throw Error(sqlstate::kCheckViolation,
                "value " + shown_value(rule.data_type, key) + " of sharding key " + column +
                    " matches no sharding rule",
                "The rule has list or range mappings and no default mapping.",
                "Add a mapping for this value, or a default mapping (a [[sharded_tables.mapping]] "
                "with only shard = N).");
  }
  if (*shard < 0 || *shard >= shards) {
    throw Error(sqlstate::kInvalidParameterValue,
                "the sharding rule of " + column + " maps value " +
                    shown_value(rule.data_type, key) + " to shard " + std::to_string(*shard) +
                    ", but the destination has " + std::to_string(shards) + " shards");
  }
  return *shard;
}

RowRouter::RowRouter(const RouteSpec &spec)
    : table_(quote_table(spec.schema, spec.table)),
      omnisharded_(spec.rule == nullptr),
      key_index_(spec.key_index),
      key_type_(spec.key_type),
      shards_(spec.shards) {
  if (spec.rule) {
    column_ = spec.rule->column;
    hash_ = spec.rule->is_hash();
    data_type_ = spec.rule->data_type;
    mappings_ = spec.rule->mappings;
  }
  validate(spec);
}

void RowRouter::validate(const RouteSpec &spec) const {
  if (shards_ < 1) {
    throw Error(sqlstate::kInvalidParameterValue,
                "cannot copy table " + table_ + " to " + std::to_string(shards_) + " shards",
                "A destination needs at least one shard.");
  }
  if (omnisharded_) return;
  if (key_index_ < 0) {
    throw Error(sqlstate::kInvalidParameterValue,
                "sharding key " + describe_column() + " is not in the COPY column list");
  }
  if (rule_type_of(key_type_) != data_type_) {
    throw Error(sqlstate::kDatatypeMismatch,
                "sharding key " + describe_column() + " is of type " + key_type_name(key_type_) +
                    ", but its sharding rule has data_type \"" + data_type_name(data_type_) + "\"",
                "The hash of a key depends on its type; routing it as another type would put rows "
                "where the proxy does not look for them.",
                std::string("Set data_type = \"") + data_type_name(rule_type_of(key_type_)) +
                    "\" in the [[sharded_tables]] entry of database \"" + spec.rule->database +
                    "\".");
  }
  for (const Mapping &m : mappings_) {
    if (m.shard < 0 || m.shard >= shards_) {
      throw Error(sqlstate::kInvalidParameterValue,
                  "the sharding rule of " + describe_column() + " maps values to shard " +
                      std::to_string(m.shard) + ", but the destination has " +
                      std::to_string(shards_) + " shards",
                  {}, "Map values only to shards 0 to " + std::to_string(shards_ - 1) + ".");
    }
  }
}

int RowRouter::route(const TupleView &tuple) {
  if (omnisharded_) return kAllShards;
  return route_key(key_field(tuple));
}

int RowRouter::route_key(const CopyField &key) {
  if (omnisharded_) return kAllShards;
  if (key.is_null()) {
    throw Error(sqlstate::kNullValueNotAllowed, "sharding key " + describe_column() + " is NULL",
                "A row without a sharding key belongs to no shard.",
                "Give every row a key and make the column NOT NULL, then start again.");
  }
  if (hash_) return shard_of_hash(key_hash(key), shards_);
  return mapped(key);
}

CopyField RowRouter::key_field(const TupleView &tuple) const {
  if (key_index_ >= tuple.field_count()) {
    throw Error(sqlstate::kBadCopyFileFormat,
                "a row of table " + table_ + " has " + std::to_string(tuple.field_count()) +
                    " fields, too few for its sharding key " + quote_ident(column_) +
                    " (field " + std::to_string(key_index_ + 1) + ")");
  }
  return tuple.field(key_index_);
}

uint64_t RowRouter::key_hash(const CopyField &key) const {
  if (is_integer(key_type_)) return hash_bigint(key_integer(key));
  if (key_type_ == KeyType::Uuid && key.length != 16) wrong_size(key, 16);
  return hash_bytes(key.data, static_cast<size_t>(key.length));
}

// int2/int4 are sign-extended: PostgreSQL hashes an integer of any width as the same int64.
int64_t RowRouter::key_integer(const CopyField &key) const {
  switch (key_type_) {
    case KeyType::Int2:
      if (key.length != 2) wrong_size(key, 2);
      return static_cast<int16_t>(load_be16(key.data));
    case KeyType::Int4:
      if (key.length != 4) wrong_size(key, 4);
      return static_cast<int32_t>(load_be32(key.data));
    default:
      if (key.length != 8) wrong_size(key, 8);
      return static_cast<int64_t>(load_be64(key.data));
  }
}

// The key as sharding.h's Key, in scratch_: assign() reuses the string's capacity.
const Key &RowRouter::key_value(const CopyField &key) {
  if (is_integer(key_type_)) {
    scratch_ = key_integer(key);
    return scratch_;
  }
  if (key_type_ == KeyType::Uuid && key.length != 16) wrong_size(key, 16);
  if (auto *bytes = std::get_if<std::string>(&scratch_)) {
    bytes->assign(key.data, static_cast<size_t>(key.length));
  } else {
    scratch_ = std::string(key.data, static_cast<size_t>(key.length));
  }
  return scratch_;
}

int RowRouter::mapped(const CopyField &key) {
  const Key &value = key_value(key);
  std::optional<int> shard = mapped_shard(mappings_, value);
  if (shard) return *shard;
  // Never broadcast a value no rule maps: that would copy the row to every shard.
  throw Error(sqlstate::kCheckViolation,
              "value " + shown_value(data_type_, value) + " of sharding key " +
                  describe_column() + " matches no sharding rule",
              "The rule has list or range mappings and no default mapping.",
              "Add a mapping for this value, or a default mapping (a [[sharded_tables.mapping]] "
              "with only shard = N).");
}

std::string RowRouter::describe_column() const {
  return quote_ident(column_) + " of table " + table_;
}

void RowRouter::wrong_size(const CopyField &key, int expected) const {
  throw Error(sqlstate::kBadCopyFileFormat,
              "sharding key " + describe_column() + " has " + std::to_string(key.length) +
                  " bytes in binary format, expected " + std::to_string(expected) + " for type " +
                  key_type_name(key_type_),
              "The column's type on the source is not the type the copy was planned with.");
}

}  // namespace pgdog_reshard
