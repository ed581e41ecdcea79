// The cutover phase of schema sync: every destination sequence moved past what any source shard
// handed out, so the new cluster never issues a value the old one already did. Read from the
// source sequences' own state (pg_sequences.last_value), never from max(id): a value handed out and
// rolled back, or deleted, must not come back either.
#pragma once

#include <vector>

#include "core/pg.h"
#include "engine/schema_sync.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

// One `SELECT setval(...)` statement per sequence used on any source shard, for apply_schema:
// the furthest value over the source shards (the largest for ascending sequences, the smallest for
// descending ones), and never behind the destination's own value, so re-running is harmless.
std::vector<SchemaStatement> sequence_statements(const std::vector<ConnParams> &sources, TaskContext &ctx);

}  // namespace pgdog_reshard
