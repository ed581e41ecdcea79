#include "engine/sequences.h"

#include <map>
#include <utility>

#include "core/sql.h"

namespace pgdog_reshard {

namespace {

struct SequenceState {
  bool ascending = true;
  int64_t furthest = 0;
};

using SequenceKey = std::pair<std::string, std::string>;  // schema, name

void read_shard(const ConnParams &source, TaskContext &ctx, std::map<SequenceKey, SequenceState> &states) {
  Connection conn(source, ctx);
  // last_value is NULL for a sequence never used: nothing was handed out, nothing to move.
  Result rows = conn.exec(
      "SELECT schemaname, sequencename, increment_by > 0, last_value FROM pg_catalog.pg_sequences"
      " WHERE last_value IS NOT NULL ORDER BY 1, 2");
  for (int i = 0; i < rows.rows(); i++) {
    SequenceKey key{std::string(rows.value(i, 0)), std::string(rows.value(i, 1))};
    bool ascending = rows.value(i, 2) == "t";
    int64_t value = std::stoll(std::string(rows.value(i, 3)));
    auto [it, inserted] = states.try_emplace(key, SequenceState{ascending, value});
    if (!inserted) {
      it->second.furthest = ascending ? std::max(it->second.furthest, value) : std::min(it->second.furthest, value);
    }
  }
}

SchemaStatement setval_statement(const SequenceKey &key, const SequenceState &state) {
  std::string seq = quote_qualified(key.first, key.second);
  std::string value = std::to_string(state.furthest);
  // The destination's own last_value is read from the sequence relation itself: pg_sequences may
  // hide it from a role without privileges on it, the relation does not hide it from its owner.
  std::string keep = state.ascending ? "greatest" : "least";
  SchemaStatement s;
  s.sql = "SELECT pg_catalog.setval(" + quote_literal(seq) + ", " + keep + "(" + value + ", (SELECT last_value FROM " +
          seq + ")), true);";
  s.kind = "SEQUENCE SET";
  s.schema = key.first;
  s.name = key.second;
  return s;
}

}  // namespace

std::vector<SchemaStatement> sequence_statements(const std::vector<ConnParams> &sources, TaskContext &ctx) {
  std::map<SequenceKey, SequenceState> states;
  for (const ConnParams &source : sources) read_shard(source, ctx, states);
  std::vector<SchemaStatement> statements;
  for (const auto &[key, state] : states) statements.push_back(setval_statement(key, state));
  return statements;
}

}  // namespace pgdog_reshard
