// Permanent logical replication slots on the source shards: the position streaming starts from.
#pragma once

#include <string>

#include "core/lsn.h"
#include "core/pg.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

// Creates a permanent pgoutput slot (no snapshot exported) and returns its consistent point. If a
// slot of that name exists already (a resumed task, or a slot the user named), it is reused: its
// confirmed_flush_lsn is returned, and it must be a pgoutput slot of this database (55000 if not).
Lsn create_or_reuse_slot(const ConnParams &source, const std::string &name, TaskContext &ctx);

// Drops the slot if it exists (waiting up to a few seconds for a consumer to let go of it).
// Returns false if there was no such slot.
bool drop_slot(const ConnParams &source, const std::string &name, TaskContext &ctx);

// A slot name that is valid for PostgreSQL (lower-case letters, digits, underscore; <= 63 bytes).
std::string slot_name(const std::string &prefix, long long task, int shard);

}  // namespace pgdog_reshard
