// Verification of a reshard: per table, is the destination cluster the source's rows, each on the
// shard its key names? Everything is computed on the servers; only aggregates and, for the few
// buckets that differ, the identities of their rows come back.
//
// Per table and side (the source shards together, the destination shards together):
//  - the rows and an order-independent checksum: the sum, as numeric, of
//    hashtextextended(ROW(c1, c2, ...)::text, 0) over the rows, with the planned columns named in
//    plan order, so physical column order does not matter;
//  - misplaced rows, counted on each destination shard: a key the rule sends to another shard, or a
//    NULL key. Hash rules ask PostgreSQL's own satisfies_hash_partition() (bit-identical to PgDog's
//    router) against a temporary hash-partitioned table of the key's type made in the verifying
//    session; list and range rules become a CASE over the mappings (core/shard_sql.h);
//  - missing, extra and differing rows by replica identity (all columns for REPLICA IDENTITY FULL):
//    rows are bucketed by the low bits of hashtextextended(ROW(identity)::text, 0); one query per side
//    compares (rows, checksum) of 256 buckets; only the buckets that differ are narrowed, 8 more bits
//    at a time, until each holds at most `leaf_rows` rows per side; then those buckets' (identity,
//    row hash) pairs are fetched from both sides and diffed (core/row_diff.h). A bucket that one
//    side lacks entirely is counted without fetching its rows. Memory stays bounded by the bucket
//    counts of one query and one fetch batch, whatever the table's size.
// Omnisharded tables (no key) are compared whole with each destination shard in turn: every shard
// must hold exactly the source's rows. The source side of an omnisharded table is source shard 0,
// the one the copy reads it from.
//
// While replication runs, the two sides are read at different moments. After each read of the
// source, each source shard's WAL insert position is taken. When something differs and
// VerifyOptions::wait_applied is set, the differing buckets are re-checked, up to `max_rechecks`
// times: the source is read, wait_applied is called with its positions (it returns once the stream
// has applied up to them), the destination is read, then the source again. The destination then
// holds a state between the two source reads, so a bucket the source did not change meanwhile
// must be equal, and one it changed is re-checked again (after the last re-check its rows are
// changing_rows, verdict "unsettled" if nothing else differs). "Did not change" means the same
// content and the same row versions (xmin and ctid): a value set and set back between the two
// reads is a change, since the destination may hold the value in between. A REPLICA IDENTITY FULL
// row changes bucket whenever it changes, so for such a table a change anywhere counts for every
// bucket. Only what still differs in the last round is reported; nothing is dropped silently: the
// last round's differences are the result.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/lsn.h"
#include "engine/preflight.h"
#include "engine/table_plan.h"
#include "engine/task_context.h"

namespace pgdog_reshard {

struct VerifyExample {
  std::string kind;            // "missing", "extra", "differing", "misplaced"
  std::string identity;        // ROW(identity columns)::text, e.g. (42) or (7,"2024-01-01")
  int destination_shard = -1;  // misplaced: where it is; omnisharded tables: the shard compared
};

// One destination shard's part of a table.
struct VerifyShard {
  int64_t rows = 0;
  std::string checksum;  // decimal
  int64_t misplaced = 0;
};

struct VerifyResult {
  std::string schema;
  std::string table;
  int64_t source_rows = 0;
  int64_t destination_rows = 0;
  std::string source_checksum;  // decimal sum of the row hashes
  std::string destination_checksum;
  // Omnisharded tables: source and destination totals are those of the first destination shard
  // that differs from the source (shard 0 when none does); each shard's are in destination_shards.
  std::vector<VerifyShard> destination_shards;
  int64_t misplaced = 0;   // rows on a destination shard their key does not name
  uint64_t missing = 0;    // rows of the source the destination lacks
  uint64_t extra = 0;      // rows of the destination the source lacks (a duplicate counts)
  uint64_t differing = 0;  // rows present on both sides with other content
  // Differing buckets left undiffed because the query budget ran out: their larger side's rows.
  // Non-zero means the counts above are a lower bound.
  uint64_t unresolved_rows = 0;
  // Rows of the level-0 buckets the source kept changing through the last re-check (each re-check
  // reads the source before and after the destination; a bucket changed in between cannot be
  // compared). Not compared, so not counted above.
  uint64_t changing_rows = 0;
  std::vector<VerifyExample> examples;  // at most VerifyOptions::max_examples of each kind
  // "ok": equal rows and checksums, nothing misplaced/missing/extra/differing/unresolved;
  // "differs": something is; "unsettled": nothing differs but changing_rows kept changing.
  std::string verdict;

  // How the answer was found.
  int rounds = 0;             // comparison rounds: 1, plus one per re-check after wait_applied
  int deepest_level = 0;      // 0: 256 buckets; each level 8 more bits of the identity hash
  uint64_t queries = 0;       // bucket and fetch statements, one per shard each (WAL positions aside)
  uint64_t rows_fetched = 0;  // (identity, row hash) rows brought to this process

  // "missing: (1), (2); extra: (9) on shard 1; ..." (empty when there are none).
  std::string examples_text() const;
};

class VerifyObserver {
 public:
  virtual ~VerifyObserver() = default;
  virtual void table_started(const TablePlan &table) { (void)table; }
  // After each query on a table: rows the servers have read for it so far (a full pass per
  // query and shard) and (identity, hash) rows fetched so far.
  virtual void progress(const TablePlan &table, uint64_t rows_scanned, uint64_t rows_fetched) {
    (void)table, (void)rows_scanned, (void)rows_fetched;
  }
  virtual void table_finished(const VerifyResult &result) { (void)result; }
};

struct VerifyOptions {
  // Blocks until the stream has applied, on the destination, everything up to these positions of
  // the source shards (in shard order: where each one's WAL stood after its latest read; 0/0 for a
  // shard not read yet). Empty: the data is static, a difference is reported at once.
  std::function<void(const std::vector<Lsn> &source_positions)> wait_applied;
  int max_rechecks = 3;       // re-reads of what differs, each after wait_applied
  uint64_t leaf_rows = 1000;  // narrow a bucket until a side holds at most this many rows
  size_t max_examples = 10;   // per kind and table
  // Narrowing and fetch queries per side, table and round; what is left then is unresolved_rows.
  // Each such query reads the whole table, so this bounds the time a very different table takes.
  int max_queries = 256;
};

// Verifies every table of `plan` (from preflight()) between the primaries of the `source` and
// `destination` clusters of `config`, in plan order. Reads only, but for the empty temporary tables
// of the hash check (one per key type and destination session, gone with the session). Checks
// ctx.check_interrupts() between queries, and every wait is the context's, so a cancel stops a
// running query. Throws Error: a server's error names the table ("verify of table "s"."t": ...)
// and keeps its SQLSTATE; 22023 when the plan's shard counts are not the clusters'.
std::vector<VerifyResult> verify_tables(const Config &config, const std::string &source,
                                        const std::string &destination, const ReshardPlan &plan,
                                        VerifyObserver &observer, TaskContext &ctx,
                                        VerifyOptions options = {});

}  // namespace pgdog_reshard
