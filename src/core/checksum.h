// An order-independent checksum of a table: the sum of a 64-bit hash of every row, as PostgreSQL's
// sum(bigint) returns it (a numeric). It is kept in 128 bits, which no table can overflow: each
// term is below 2^63 in magnitude, so 2^64 rows would still fit.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace pgdog_reshard {

class Checksum {
 public:
  Checksum() = default;

  // A decimal integer as PostgreSQL prints a numeric sum ("-123", "0"); an empty string (the sum of
  // no rows, NULL) is 0. nullopt for anything else, or a value beyond 128 bits.
  static std::optional<Checksum> parse(std::string_view text);

  void add(const Checksum &other) { value_ += other.value_; }
  void subtract(const Checksum &other) { value_ -= other.value_; }
  std::string to_string() const;  // decimal, "-" for a negative sum

  friend bool operator==(const Checksum &a, const Checksum &b) { return a.value_ == b.value_; }
  friend bool operator!=(const Checksum &a, const Checksum &b) { return a.value_ != b.value_; }

 private:
  // Two's complement in an unsigned type: additions wrap instead of being undefined behaviour.
  unsigned __int128 value_ = 0;
};

}  // namespace pgdog_reshard
