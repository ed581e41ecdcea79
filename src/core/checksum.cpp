#include "core/checksum.h"

#include <algorithm>

namespace pgdog_reshard {

namespace {
using U128 = unsigned __int128;
constexpr U128 kSignBit = U128(1) << 127;
}  // namespace

std::optional<Checksum> Checksum::parse(std::string_view text) {
  Checksum out;
  if (text.empty()) return out;
  bool negative = text.front() == '-';
  if (negative) text.remove_prefix(1);
  if (text.empty()) return std::nullopt;
  U128 magnitude = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    unsigned digit = static_cast<unsigned>(c - '0');
    if (magnitude > (kSignBit - digit) / 10) return std::nullopt;  // keeps the magnitude <= 2^127
    magnitude = magnitude * 10 + digit;
  }
  if (magnitude > kSignBit || (magnitude == kSignBit && !negative)) return std::nullopt;
  out.value_ = negative ? U128(0) - magnitude : magnitude;
  return out;
}

std::string Checksum::to_string() const {
  bool negative = (value_ & kSignBit) != 0;
  U128 magnitude = negative ? U128(0) - value_ : value_;
  std::string digits;
  do {
    digits.push_back(static_cast<char>('0' + static_cast<int>(magnitude % 10)));
    magnitude /= 10;
  } while (magnitude != 0);
  if (negative) digits.push_back('-');
  std::reverse(digits.begin(), digits.end());
  return digits;
}

}  // namespace pgdog_reshard
