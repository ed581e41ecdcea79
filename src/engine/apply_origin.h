// Replication origins on the destination shards: what makes the apply exactly-once per shard.
//
// One origin per stream (task and source shard) and destination shard: the caller names the
// stream's, and shard i's is that name with "_to_<i>" (shard_origin), since origins belong to a
// server, not a database, and two destination shards may be databases of one server.
// Each batch a shard commits sets the origin's progress (the end LSN of the batch's last source
// transaction) in the same transaction as the batch's changes, so the two are durable together:
// after a crash, whatever the source confirmation says, a shard's progress tells which source
// transactions it already holds, and a replay sends it none of them again.
//
// The origin functions are revoked from PUBLIC: the destination user must be a superuser or have
// been granted EXECUTE on them (see kOriginPrivilegeHint).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/lsn.h"
#include "core/pg.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

// The stream origin of a task's source shard (what ApplyOptions::origin is set to).
std::string stream_origin(int64_t task, int source_shard);

// The name of stream origin `origin` on destination shard `shard`.
std::string shard_origin(const std::string &origin, size_t shard);

// The hint of a 42501 from an origin function.
extern const char *const kOriginPrivilegeHint;

// On an idle session: creates the origin if missing and binds it to the session (a killed worker's
// old session may hold it for a moment: 55006 is retried for about 10 s, then thrown with a clear
// message). Returns the origin's progress on this server, nullopt if it has none yet.
std::optional<Lsn> setup_origin_session(Connection &conn, const std::string &origin, TaskContext &ctx);

// The statement that makes the open transaction of a session set up above set the origin's
// progress when it commits: $1 the LSN (text, "X/Y"), $2 the source commit time (microseconds
// since 2000-01-01). A constant, to be prepared once per session.
extern const char *const kOriginProgressSql;

// Drops the stream origin `origin` (shard_origin of it on each shard) on every destination shard
// that has it, waiting briefly (about 10 s) for a session that still holds it; a missing origin is
// fine. Every shard is tried; the first error (an unreachable shard, an origin still held) is
// thrown once all were.
void drop_apply_origin(const std::vector<ConnParams> &destinations, const std::string &origin,
                       TaskContext &ctx);

}  // namespace pgdog_reshard
