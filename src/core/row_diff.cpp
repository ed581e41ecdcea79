#include "core/row_diff.h"

#include <algorithm>
#include <tuple>

namespace pgdog_reshard {

namespace {

bool digest_less(const RowDigest &a, const RowDigest &b) {
  return std::tie(a.identity, a.hash) < std::tie(b.identity, b.hash);
}

// Sorted by (identity, hash) with equal pairs merged: one entry per pair, counts added.
std::vector<RowDigest> normalized(std::vector<RowDigest> rows) {
  std::sort(rows.begin(), rows.end(), digest_less);
  std::vector<RowDigest> out;
  for (RowDigest &row : rows) {
    if (!out.empty() && out.back().identity == row.identity && out.back().hash == row.hash) {
      out.back().count += row.count;
    } else {
      out.push_back(std::move(row));
    }
  }
  return out;
}

void note(std::vector<std::string> &examples, const std::string &identity, size_t max_examples) {
  if (examples.size() < max_examples) examples.push_back(identity);
}

// The rows of one identity on both sides: [s, s_end) and [d, d_end), both sorted by hash.
using Iter = std::vector<RowDigest>::const_iterator;
void diff_identity(Iter s, Iter s_end, Iter d, Iter d_end, size_t max_examples, RowDiff &diff) {
  const std::string &identity = s != s_end ? s->identity : d->identity;
  uint64_t source_rows = 0, destination_rows = 0, paired = 0;
  for (Iter i = s; i != s_end; ++i) source_rows += i->count;
  for (Iter i = d; i != d_end; ++i) destination_rows += i->count;
  while (s != s_end && d != d_end) {  // rows with equal content pair off
    if (s->hash < d->hash) {
      ++s;
    } else if (d->hash < s->hash) {
      ++d;
    } else {
      paired += std::min(s->count, d->count);
      ++s;
      ++d;
    }
  }
  uint64_t source_left = source_rows - paired, destination_left = destination_rows - paired;
  uint64_t differing = std::min(source_left, destination_left);
  if (differing > 0) note(diff.differing_examples, identity, max_examples);
  if (source_left > differing) note(diff.missing_examples, identity, max_examples);
  if (destination_left > differing) note(diff.extra_examples, identity, max_examples);
  diff.differing += differing;
  diff.missing += source_left - differing;
  diff.extra += destination_left - differing;
}

// The end of the run of entries with this identity, from `it`.
Iter run_end(Iter it, Iter end, const std::string &identity) {
  while (it != end && it->identity == identity) ++it;
  return it;
}

}  // namespace

void diff_rows(std::vector<RowDigest> source, std::vector<RowDigest> destination, size_t max_examples,
               RowDiff &diff) {
  const std::vector<RowDigest> s = normalized(std::move(source));
  const std::vector<RowDigest> d = normalized(std::move(destination));
  Iter si = s.begin(), di = d.begin();
  while (si != s.end() || di != d.end()) {
    // The smaller identity of the two fronts; the side whose front is greater has no rows of it.
    bool take_source = si != s.end() && (di == d.end() || si->identity <= di->identity);
    bool take_destination = di != d.end() && (si == s.end() || di->identity <= si->identity);
    const std::string &identity = take_source ? si->identity : di->identity;
    Iter s_end = take_source ? run_end(si, s.end(), identity) : si;
    Iter d_end = take_destination ? run_end(di, d.end(), identity) : di;
    diff_identity(si, s_end, di, d_end, max_examples, diff);
    si = s_end;
    di = d_end;
  }
}

}  // namespace pgdog_reshard
