#include "core/checksum.h"

#include <gtest/gtest.h>

namespace pgdog_reshard {
namespace {

Checksum of(const char *text) {
  auto c = Checksum::parse(text);
  EXPECT_TRUE(c.has_value()) << text;
  return c.value_or(Checksum());
}

TEST(Checksum, ParsesAndPrintsWhatPostgresPrints) {
  for (const char *text : {"0", "1", "-1", "9223372036854775807", "-9223372036854775808",
                           "1234567890123456789012345678", "-99999999999999999999999999999999"}) {
    EXPECT_EQ(of(text).to_string(), text);
  }
  EXPECT_EQ(of("").to_string(), "0");  // sum() of no rows is NULL
  EXPECT_EQ(of("007").to_string(), "7");
}

TEST(Checksum, RefusesWhatIsNotAnInteger) {
  for (const char *text : {"-", "1.5", "1e3", " 1", "+1", "abc", "12a"}) {
    EXPECT_FALSE(Checksum::parse(text).has_value()) << text;
  }
}

TEST(Checksum, HoldsExactly128Bits) {
  EXPECT_EQ(of("170141183460469231731687303715884105727").to_string(),
            "170141183460469231731687303715884105727");
  EXPECT_EQ(of("-170141183460469231731687303715884105728").to_string(),
            "-170141183460469231731687303715884105728");
  EXPECT_FALSE(Checksum::parse("170141183460469231731687303715884105728").has_value());
  EXPECT_FALSE(Checksum::parse("-170141183460469231731687303715884105729").has_value());
  EXPECT_FALSE(Checksum::parse("1000000000000000000000000000000000000000").has_value());
}

TEST(Checksum, AddsBeyond64BitsAndBackAcrossZero) {
  Checksum sum;
  for (int i = 0; i < 4; i++) sum.add(of("9223372036854775807"));
  EXPECT_EQ(sum.to_string(), "36893488147419103228");
  for (int i = 0; i < 5; i++) sum.add(of("-9223372036854775808"));
  EXPECT_EQ(sum.to_string(), "-9223372036854775812");
  sum.subtract(of("-9223372036854775812"));
  EXPECT_EQ(sum, Checksum());
  EXPECT_NE(of("1"), of("-1"));
}

}  // namespace
}  // namespace pgdog_reshard
