// A WAL position (pg_lsn): 64 bits, printed by PostgreSQL as two hex halves "16/B374D848".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgdog_reshard {

class Lsn {
 public:
  constexpr Lsn() = default;
  constexpr explicit Lsn(uint64_t value) : value_(value) {}

  // Parses "X/Y" (hex, case-insensitive, as pg_lsn_in accepts); nullopt if malformed.
  static std::optional<Lsn> parse(std::string_view text);
  // Like parse, but throws Error(22P02) naming the text.
  static Lsn parse_or_throw(std::string_view text);

  std::string to_string() const;  // "16/B374D848" (upper-case hex, like PostgreSQL)
  constexpr uint64_t value() const { return value_; }
  constexpr bool is_valid() const { return value_ != 0; }  // 0/0 is InvalidXLogRecPtr

  // Bytes from `older` to this position; 0 if older is ahead (lag never goes negative).
  constexpr uint64_t bytes_since(Lsn older) const {
    return value_ > older.value_ ? value_ - older.value_ : 0;
  }

  friend constexpr bool operator==(Lsn a, Lsn b) { return a.value_ == b.value_; }
  friend constexpr bool operator!=(Lsn a, Lsn b) { return a.value_ != b.value_; }
  friend constexpr bool operator<(Lsn a, Lsn b) { return a.value_ < b.value_; }
  friend constexpr bool operator<=(Lsn a, Lsn b) { return a.value_ <= b.value_; }
  friend constexpr bool operator>(Lsn a, Lsn b) { return a.value_ > b.value_; }
  friend constexpr bool operator>=(Lsn a, Lsn b) { return a.value_ >= b.value_; }

 private:
  uint64_t value_ = 0;
};

// Whether each position of `at` is at or past the one in the same place of `target` (per source
// shard, say: have the streams confirmed these positions?). False when the two differ in length.
bool all_reached(const std::vector<Lsn> &at, const std::vector<Lsn> &target);

}  // namespace pgdog_reshard
