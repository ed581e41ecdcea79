#include "core/lsn.h"

#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"

namespace pgdog_reshard {
namespace {

TEST(Lsn, ParsesWhatPostgresPrints) {
  auto lsn = Lsn::parse("16/B374D848");
  ASSERT_TRUE(lsn.has_value());
  EXPECT_EQ(lsn->value(), 0x16B374D848ull);
  EXPECT_EQ(lsn->to_string(), "16/B374D848");
}

TEST(Lsn, ParsingIsCaseInsensitive) {
  EXPECT_EQ(Lsn::parse("ab/cdef"), Lsn::parse("AB/CDEF"));
  EXPECT_EQ(Lsn::parse("aB/cDeF")->value(), 0xAB0000CDEFull);
}

TEST(Lsn, AcceptsLeadingZerosUpToEightDigits) {
  EXPECT_EQ(Lsn::parse("00000001/00000002")->value(), 0x100000002ull);
  EXPECT_EQ(Lsn::parse("0/0")->value(), 0u);
}

TEST(Lsn, ExtremesRoundTrip) {
  EXPECT_EQ(Lsn::parse("FFFFFFFF/FFFFFFFF")->value(), UINT64_MAX);
  EXPECT_EQ(Lsn(UINT64_MAX).to_string(), "FFFFFFFF/FFFFFFFF");
  EXPECT_EQ(Lsn(0).to_string(), "0/0");
  EXPECT_EQ(Lsn(0x100000000ull).to_string(), "1/0");
  const uint64_t values[] = {0, 1, 0xFFFFFFFF, 0x100000000, 0x16B374D848, UINT64_MAX};
  for (uint64_t v : values) {
    EXPECT_EQ(Lsn::parse(Lsn(v).to_string())->value(), v) << v;
  }
}

TEST(Lsn, RejectsWhatPgLsnInRejects) {
  for (const char *bad : {"", "/", "1/", "/1", "1", "12345", "123456789/0", "0/123456789",
                          "1/2/3", "g/0", "0/g", " 1/0", "1/0 ", "1 /0", "+1/0", "-1/0",
                          "0x1/0", "1//0", "1/0\n"}) {
    EXPECT_FALSE(Lsn::parse(bad).has_value()) << '"' << bad << '"';
  }
}

TEST(Lsn, RejectsEmbeddedNul) {
  EXPECT_FALSE(Lsn::parse(std::string_view("1/0\0", 4)).has_value());
}

TEST(Lsn, ParseOrThrowNamesTheText) {
  EXPECT_EQ(Lsn::parse_or_throw("1/A").value(), 0x10000000Aull);
  try {
    Lsn::parse_or_throw("not-an-lsn");
    FAIL() << "expected an Error";
  } catch (const Error &e) {
    EXPECT_EQ(e.sqlstate(), "22P02");
    EXPECT_NE(std::string(e.what()).find("\"not-an-lsn\""), std::string::npos) << e.what();
  }
}

TEST(Lsn, ValidityAndOrdering) {
  EXPECT_FALSE(Lsn().is_valid());
  EXPECT_TRUE(Lsn(1).is_valid());
  Lsn a = *Lsn::parse("0/FFFFFFFF");
  Lsn b = *Lsn::parse("1/0");
  EXPECT_LT(a, b);
  EXPECT_LE(a, b);
  EXPECT_GT(b, a);
  EXPECT_GE(b, b);
  EXPECT_NE(a, b);
  EXPECT_EQ(b.bytes_since(a), 1u);
  EXPECT_EQ(a.bytes_since(b), 0u);  // lag never goes negative
}

TEST(Lsn, AllReachedComparesPositionByPosition) {
  using V = std::vector<Lsn>;
  EXPECT_TRUE(all_reached(V{Lsn(5), Lsn(9)}, V{Lsn(5), Lsn(8)}));
  EXPECT_FALSE(all_reached(V{Lsn(5), Lsn(7)}, V{Lsn(5), Lsn(8)}));
  EXPECT_FALSE(all_reached(V{Lsn(9)}, V{Lsn(5), Lsn(8)}));  // a position missing is not reached
  EXPECT_TRUE(all_reached(V{}, V{}));
}

}  // namespace
}  // namespace pgdog_reshard
