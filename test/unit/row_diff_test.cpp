#include "core/row_diff.h"

#include <gtest/gtest.h>

namespace pgdog_reshard {
namespace {

using Rows = std::vector<RowDigest>;
using Names = std::vector<std::string>;

RowDiff diff(Rows source, Rows destination, size_t max_examples = 10) {
  RowDiff out;
  diff_rows(std::move(source), std::move(destination), max_examples, out);
  return out;
}

TEST(RowDiff, EqualSetsInAnyOrderHaveNoDifference) {
  RowDiff d = diff({{"(1)", 11}, {"(2)", 22}, {"(3)", 33}}, {{"(3)", 33}, {"(1)", 11}, {"(2)", 22}});
  EXPECT_EQ(d.missing + d.extra + d.differing, 0u);
  EXPECT_TRUE(d.missing_examples.empty() && d.extra_examples.empty() && d.differing_examples.empty());
}

TEST(RowDiff, MissingExtraAndDiffering) {
  RowDiff d = diff({{"(1)", 11}, {"(2)", 22}, {"(4)", 44}}, {{"(2)", 23}, {"(3)", 33}, {"(4)", 44}});
  EXPECT_EQ(d.missing, 1u);
  EXPECT_EQ(d.extra, 1u);
  EXPECT_EQ(d.differing, 1u);
  EXPECT_EQ(d.missing_examples, Names{"(1)"});
  EXPECT_EQ(d.extra_examples, Names{"(3)"});
  EXPECT_EQ(d.differing_examples, Names{"(2)"});
}

TEST(RowDiff, OneSideEmpty) {
  RowDiff d = diff({{"(1)", 1}, {"(2)", 2}}, {});
  EXPECT_EQ(d.missing, 2u);
  EXPECT_EQ(d.extra, 0u);
  d = diff({}, {{"(1)", 1}});
  EXPECT_EQ(d.extra, 1u);
  EXPECT_EQ(d.missing, 0u);
}

TEST(RowDiff, RowOnTwoShardsIsOneExtraRow) {
  // The same row comes once from each destination shard.
  RowDiff d = diff({{"(7)", 70}}, {{"(7)", 70}, {"(7)", 70}});
  EXPECT_EQ(d.extra, 1u);
  EXPECT_EQ(d.missing + d.differing, 0u);
  EXPECT_EQ(d.extra_examples, Names{"(7)"});
}

TEST(RowDiff, CountsAreRowsNotIdentities) {
  // REPLICA IDENTITY FULL: three identical rows on the source, one on the destination.
  RowDiff d = diff({{"(a)", 5, 3}}, {{"(a)", 5, 1}});
  EXPECT_EQ(d.missing, 2u);
  // Two rows of one identity, one of them changed: one differing, nothing missing.
  d = diff({{"(k)", 1}, {"(k)", 2}}, {{"(k)", 1}, {"(k)", 3}});
  EXPECT_EQ(d.differing, 1u);
  EXPECT_EQ(d.missing + d.extra, 0u);
  // Counts split over shards add up.
  d = diff({{"(a)", 5, 2}}, {{"(a)", 5, 1}, {"(a)", 5, 1}});
  EXPECT_EQ(d.missing + d.extra + d.differing, 0u);
}

TEST(RowDiff, AccumulatesAndCapsExamples) {
  RowDiff d;
  Rows source;
  for (int i = 0; i < 30; i++) source.push_back({"(" + std::to_string(i) + ")", i});
  diff_rows(source, {}, 5, d);
  diff_rows({{"(x)", 1}}, {}, 5, d);
  EXPECT_EQ(d.missing, 31u);
  EXPECT_EQ(d.missing_examples.size(), 5u);
}

}  // namespace
}  // namespace pgdog_reshard
