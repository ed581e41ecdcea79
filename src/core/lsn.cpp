#include "core/lsn.h"

#include <cstdio>

#include "core/error.h"

namespace pgdog_reshard {

namespace {

// pg_lsn_in accepts 1 to 8 hex digits per half: each half is 32 bits.
constexpr size_t kMaxHalfDigits = 8;

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// One 32-bit half; nullopt if empty, too long, or not all hex. No sign, no spaces, no "0x":
// PostgreSQL rejects those too, and accepting more than the server would hide bad input.
std::optional<uint32_t> parse_half(std::string_view text) {
  if (text.empty() || text.size() > kMaxHalfDigits) return std::nullopt;
  uint32_t value = 0;
  for (char c : text) {
    int digit = hex_digit(c);
    if (digit < 0) return std::nullopt;
    value = (value << 4) | static_cast<uint32_t>(digit);
  }
  return value;
}

}  // namespace

std::optional<Lsn> Lsn::parse(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto high = parse_half(text.substr(0, slash));
  auto low = parse_half(text.substr(slash + 1));  // a second '/' fails here as a non-hex digit
  if (!high || !low) return std::nullopt;
  return Lsn((static_cast<uint64_t>(*high) << 32) | *low);
}

Lsn Lsn::parse_or_throw(std::string_view text) {
  if (auto lsn = parse(text)) return *lsn;
  throw Error(sqlstate::kInvalidTextRepresentation,
              "invalid input syntax for type pg_lsn: \"" + std::string(text) + "\"",
              "An LSN is two hexadecimal numbers of up to 8 digits each, separated by a slash.",
              "Write it as PostgreSQL prints it, e.g. 16/B374D848.");
}

std::string Lsn::to_string() const {
  char buf[2 * kMaxHalfDigits + 2];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(value_ >> 32),
                static_cast<unsigned>(value_ & 0xFFFFFFFFu));
  return buf;
}

bool all_reached(const std::vector<Lsn> &at, const std::vector<Lsn> &target) {
  if (at.size() != target.size()) return false;
  for (size_t i = 0; i < at.size(); i++) {
    if (at[i] < target[i]) return false;
  }
  return true;
}

}  // namespace pgdog_reshard
