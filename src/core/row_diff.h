// The comparison of two small sets of rows, each row known by its identity (the text form of its
// replica identity columns) and a hash of its whole content: which rows one side lacks, which the
// other has in excess, and which differ in content. Verification fetches such sets one bucket of
// the identity hash at a time, so a call here never sees a whole table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pgdog_reshard {

// One distinct (identity, content) pair of one side, with how many rows of that side have it
// (duplicates of a REPLICA IDENTITY FULL table, or one row on two shards). The same pair may come
// more than once (once per shard): the counts are added.
struct RowDigest {
  std::string identity;
  int64_t hash = 0;
  uint64_t count = 1;
};

struct RowDiff {
  uint64_t missing = 0;                       // rows of the source without a counterpart on the destination
  uint64_t extra = 0;                         // rows of the destination without a counterpart on the source
  uint64_t differing = 0;                     // pairs of rows with the same identity and other content
  std::vector<std::string> missing_examples;  // identities, at most max_examples each
  std::vector<std::string> extra_examples;
  std::vector<std::string> differing_examples;
};

// Adds the differences between `source` and `destination` to `diff` (so batches accumulate),
// keeping at most `max_examples` identities per kind. Rows are counted, not identities: per
// identity, rows with equal content pair off first; of the rest, as many as both sides have are
// `differing`, what only the source has left is `missing`, what only the destination has, `extra`.
// So a row copied to two shards is one extra row, and a changed row is one differing row.
void diff_rows(std::vector<RowDigest> source, std::vector<RowDigest> destination, size_t max_examples,
               RowDiff &diff);

}  // namespace pgdog_reshard
