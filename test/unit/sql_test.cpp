#include "core/sql.h"

#include <gtest/gtest.h>

namespace pgdog_reshard {
namespace {

TEST(Sql, QuotesIdentifiersAlways) {
  EXPECT_EQ(quote_ident("users"), "\"users\"");
  EXPECT_EQ(quote_ident("Order Items"), "\"Order Items\"");
  EXPECT_EQ(quote_ident("select"), "\"select\"");
  EXPECT_EQ(quote_ident("we\"ird"), "\"we\"\"ird\"");
  EXPECT_EQ(quote_ident("\"; DROP TABLE x; --"), "\"\"\"; DROP TABLE x; --\"");
  EXPECT_EQ(quote_ident("tâble"), "\"tâble\"");
  EXPECT_EQ(quote_qualified("public", "My Table"), "\"public\".\"My Table\"");
  EXPECT_EQ(quote_ident_list({"a", "B c"}), "\"a\", \"B c\"");
}

TEST(Sql, QuotesLiterals) {
  EXPECT_EQ(quote_literal("abc"), "'abc'");
  EXPECT_EQ(quote_literal("it's"), "'it''s'");
  EXPECT_EQ(quote_literal("a\\b'c"), "E'a\\\\b''c'");
  EXPECT_EQ(quote_literal("'; DROP TABLE x; --"), "'''; DROP TABLE x; --'");
  EXPECT_EQ(quote_literal(""), "''");
}

}  // namespace
}  // namespace pgdog_reshard
