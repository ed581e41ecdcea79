#include "core/sharding.h"

#include <charconv>
#include <cstring>

#include "core/error.h"

// From PostgreSQL's libpgcommon (src/common/hashfn.c); linked, not re-typed, so our hash is the
// server's hash. Inside the server these resolve to the postgres binary's own copies.
extern "C" {
uint64_t hash_bytes_extended(const unsigned char *k, int keylen, uint64_t seed);
uint64_t hash_bytes_uint32_extended(uint32_t k, uint64_t seed);
}

namespace pgdog_reshard {

namespace {

// PostgreSQL's HASH_PARTITION_SEED (partition.h) and the constant of hash_combine64 (hashfn.h).
constexpr uint64_t kPartitionSeed = UINT64_C(0x7A5B22367996DCFD);
constexpr uint64_t kCombineConstant = UINT64_C(0x49a0f4dd15e5a8e3);

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

[[noreturn]] void bad_key(DataType type, std::string_view text) {
  throw Error(sqlstate::kInvalidTextRepresentation,
              std::string("invalid input syntax for type ") + data_type_name(type) + ": \"" +
                  std::string(text) + "\"");
}

// uuid_in's forms: 32 hex digits, optionally in braces, optionally with a hyphen after any
// group of four digits (the canonical 8-4-4-4-12 among them).
std::string parse_uuid(std::string_view text) {
  std::string_view s = text;
  if (s.size() >= 2 && s.front() == '{' && s.back() == '}') s = s.substr(1, s.size() - 2);
  std::string bytes;
  int high = -1;
  size_t digits = 0;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '-' && digits > 0 && digits % 4 == 0 && i + 1 < s.size() && s[i + 1] != '-') continue;
    int d = hex_digit(s[i]);
    if (d < 0) bad_key(DataType::Uuid, text);
    digits++;
    if (high < 0) {
      high = d;
    } else {
      bytes.push_back(static_cast<char>(high << 4 | d));
      high = -1;
    }
  }
  if (digits != 32) bad_key(DataType::Uuid, text);
  return bytes;
}

std::string format_uuid(const std::string &bytes) {
  static const char *hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes.size(); i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    auto b = static_cast<unsigned char>(bytes[i]);
    out.push_back(hex[b >> 4]);
    out.push_back(hex[b & 15]);
  }
  return out;
}

int64_t parse_bigint(std::string_view text) {
  std::string_view s = text;
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  int64_t value = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) bad_key(DataType::Bigint, text);
  return value;
}

}  // namespace

const char *data_type_name(DataType type) {
  switch (type) {
    case DataType::Bigint: return "bigint";
    case DataType::Varchar: return "varchar";
    case DataType::Uuid: return "uuid";
  }
  return "unknown";
}

std::optional<DataType> parse_data_type(std::string_view name) {
  if (name == "bigint") return DataType::Bigint;
  if (name == "varchar") return DataType::Varchar;
  if (name == "uuid") return DataType::Uuid;
  return std::nullopt;
}

Key parse_key(DataType type, std::string_view text) {
  switch (type) {
    case DataType::Bigint: return parse_bigint(text);
    case DataType::Varchar: return std::string(text);
    case DataType::Uuid: return parse_uuid(text);
  }
  bad_key(type, text);
}

std::string format_key(DataType type, const Key &key) {
  if (const auto *v = std::get_if<int64_t>(&key)) return std::to_string(*v);
  const auto &bytes = std::get<std::string>(key);
  return type == DataType::Uuid ? format_uuid(bytes) : bytes;
}

uint64_t hash_bigint(int64_t value) {
  // hashint8extended: fold the 64-bit value into 32 bits so that int2/int4/int8 of equal value
  // hash alike, then hash those 32 bits.
  auto lo = static_cast<uint32_t>(value);
  auto hi = static_cast<uint32_t>(static_cast<uint64_t>(value) >> 32);
  lo ^= value >= 0 ? hi : ~hi;
  return hash_bytes_uint32_extended(lo, kPartitionSeed);
}

uint64_t hash_bytes(const void *data, size_t len) {
  return hash_bytes_extended(static_cast<const unsigned char *>(data), static_cast<int>(len),
                             kPartitionSeed);
}

int shard_of_hash(uint64_t type_hash, int shards) {
  if (shards < 1) {
    throw Error(sqlstate::kInvalidParameterValue,
                "number of shards must be at least 1, not " + std::to_string(shards));
  }
  // hash_combine64(0, h) for the single key column, then the modulus, as the partition router does.
  uint64_t row_hash = type_hash + kCombineConstant;
  return static_cast<int>(row_hash % static_cast<uint64_t>(shards));
}

int hash_shard(DataType type, const Key &key, int shards) {
  if (type == DataType::Bigint) return shard_of_hash(hash_bigint(std::get<int64_t>(key)), shards);
  const auto &bytes = std::get<std::string>(key);
  return shard_of_hash(hash_bytes(bytes.data(), bytes.size()), shards);
}

int compare_keys(const Key &a, const Key &b) {
  if (a.index() != b.index()) return a.index() < b.index() ? -1 : 1;
  if (const auto *x = std::get_if<int64_t>(&a)) {
    int64_t y = std::get<int64_t>(b);
    return *x < y ? -1 : (*x > y ? 1 : 0);
  }
  // std::string compares chars as unsigned char: byte order, which is uuid_cmp's memcmp order too.
  int c = std::get<std::string>(a).compare(std::get<std::string>(b));
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

std::optional<int> mapped_shard(const std::vector<Mapping> &mappings, const Key &key) {
  std::optional<int> fallback;
  for (const Mapping &m : mappings) {
    switch (m.kind) {
      case Mapping::Kind::List:
        for (const Key &v : m.values) {
          if (compare_keys(v, key) == 0) return m.shard;
        }
        break;
      case Mapping::Kind::Range:
        if ((!m.start || compare_keys(*m.start, key) <= 0) && (!m.end || compare_keys(key, *m.end) < 0)) {
          return m.shard;
        }
        break;
      case Mapping::Kind::Default:
        fallback = m.shard;
        break;
    }
  }
  return fallback;
}

}  // namespace pgdog_reshard

#include "core/json.h"

namespace pgdog_reshard {

namespace {
std::string key_json(DataType type, const std::optional<Key> &key) {
  if (!key) return "null";
  if (type == DataType::Bigint) return format_key(type, *key);
  return json_string(format_key(type, *key));
}
}  // namespace

std::string mappings_json(DataType type, const std::vector<Mapping> &mappings) {
  std::string out = "[";
  for (size_t i = 0; i < mappings.size(); i++) {
    const Mapping &m = mappings[i];
    if (i > 0) out += ", ";
    out += "{";
    switch (m.kind) {
      case Mapping::Kind::List: {
        out += "\"values\": [";
        for (size_t j = 0; j < m.values.size(); j++) {
          if (j > 0) out += ", ";
          out += key_json(type, m.values[j]);
        }
        out += "]";
        break;
      }
      case Mapping::Kind::Range:
        out += "\"start\": " + key_json(type, m.start) + ", \"end\": " + key_json(type, m.end);
        break;
      case Mapping::Kind::Default:
        out += "\"default\": true";
        break;
    }
    out += ", \"shard\": " + std::to_string(m.shard) + "}";
  }
  return out + "]";
}

}  // namespace pgdog_reshard
