// The write load of the streaming and reliability tests: a source schema of six tables (bigint and
// varchar keys, TOASTed values, REPLICA IDENTITY FULL, an omnisharded table, one to truncate), and
// clients writing it directly on the source: inserts, updates of ordinary columns, of TOASTed rows
// and of the sharding key, deletes and multi-table transactions, at random. With
// databases_toml(..., "prod_new") and kProdNewRules, every table but settings is sharded.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgdog_reshard::test {

extern const char *const kLoadSchema;

struct LoadTable {
  const char *table;
  const char *key;  // "" = omnisharded
  const char *key_type;
};
extern const std::vector<LoadTable> kLoadTables;

// Clients writing kLoadSchema's tables until finish(). With truncates, client 0 also truncates
// and refills scratch now and then.
class Load {
 public:
  Load(const PgInstance &src, int clients, bool truncates = false);
  ~Load();
  void finish();
  long writes() const { return writes_; }
  // Errors the clients met (a restarted source is one; the client then reconnects).
  long errors() const { return errors_; }

 private:
  void run(const PgInstance &src, int client, bool truncates);

  std::atomic<bool> stop_{false};
  std::atomic<long> writes_{0};
  std::atomic<long> errors_{0};
  std::vector<std::thread> threads_;
};

// Every kLoadTables table on the destination shards together equals the source's, row for row
// (omnisharded: on every shard), and every row of a sharded table sits on the shard PostgreSQL's
// own hash partitioning (satisfies_hash_partition) names. Reports failures through gtest.
void expect_identical(const PgInstance &source, const std::vector<std::unique_ptr<PgInstance>> &dests);

}  // namespace pgdog_reshard::test
