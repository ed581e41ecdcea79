// The steps of a cutover that talk to the clusters (the control node's catalog and the proxy are
// the glue's and ProxyAdmin's): where each source shard's WAL stands once writes have stopped, and
// the publication the reverse replication reads on the new cluster.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/lsn.h"
#include "core/pg.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

// Where each source shard's WAL ends, in shard order. `Inserted`: pg_current_wal_insert_lsn(), at
// or after every commit record, also those of transactions committed with synchronous_commit =
// off, which a client has seen succeed but whose WAL may not be written yet (pg_current_wal_lsn(),
// the write position, can be behind them): what the streams must have confirmed before the
// clusters are swapped. `Written`: pg_current_wal_lsn(), for the lag.
enum class WalPosition { Written, Inserted };
// The query behind `Inserted` (one row, the LSN as text), for callers with their own sessions: the
// insert position, less the page header it points past when the last record ended exactly at a
// page boundary (24 bytes; 40 at the start of a segment): no record is there, and WAL senders,
// which send what is flushed, never report a position inside a header.
extern const char *const kInsertedPositionSql;
std::vector<Lsn> source_positions(const std::vector<ConnParams> &sources, WalPosition which, TaskContext &ctx);

// CREATE PUBLICATION name FOR TABLE (the given schema-qualified tables) on one shard. An existing
// publication of that name (a retried cutover) is kept if it lists exactly those tables, and
// refused otherwise (55000): it is someone else's.
void create_publication(const ConnParams &shard, const std::string &name,
                        const std::vector<std::pair<std::string, std::string>> &tables, TaskContext &ctx);

// DROP PUBLICATION IF EXISTS; true if it existed.
bool drop_publication(const ConnParams &shard, const std::string &name, TaskContext &ctx);

}  // namespace pgdog_reshard
