// The end-to-end fixture tests of whole tasks share: a control node with pgdog_reshard, a source
// and two destination shards, and waits on the tasks' state and streams as the views show them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"

namespace pgdog_reshard::test {

// pgdog.toml's [[databases]] of cluster "prod" (`src`, one shard) and `destination` (`dst`, shard i
// on dst[i]), every one database "postgres" on loopback.
std::string databases_toml(const PgInstance &src, const std::vector<std::unique_ptr<PgInstance>> &dst,
                           const std::string &destination);
// users.toml: user postgres for "prod" and `destination`.
std::string users_toml(const std::string &destination);
// The rules of "prod_new" in the Streaming and Replicate tests: users by id, accounts by code
// (varchar), every other table with a user_id column by it.
extern const char *const kProdNewRules;

class ReshardCluster : public ::testing::Test {
 public:
  // md5 of every row of a table (`where` selects), sorted: equal lists mean the same rows.
  static std::vector<std::string> row_hashes(const PgInstance &pg, const std::string &table,
                                             const std::string &where = "true");

 protected:
  // Starts the control node (pgdog_reshard preloaded and created; `control_conf` added to its
  // postgresql.conf), the source with `schema` run on it, and two destination shards.
  void start_cluster(const std::string &schema, const std::vector<std::string> &control_conf = {});
  void load_config(const std::string &pgdog_toml, const std::string &users_toml) const;

  // "state phase error" of a task in reshard_status.
  std::string state(const std::string &task) const;
  // Until the task's state starts with `want`; false if it ends failed or cancelled first, or
  // ms passes. A control node restarting meanwhile is waited out.
  bool wait_state(const std::string &task, const std::string &want, int ms = 120000) const;
  // Until the copy of `table` runs with rows already written; false if it never does within two
  // minutes. A control node restarting meanwhile is waited out.
  bool wait_copying(const std::string &task, const std::string &table) const;
  // Until the task's streams confirmed each of their source shards' position as of the call
  // (writes may go on: what was committed before the call has arrived).
  bool wait_caught_up(const std::string &task, int ms = 60000) const;
  // reshard_verify(source, destination, publication) on the control node: "" when it returns a
  // row per table and every verdict is ok, else what differs (table: verdict, counts, examples).
  std::string verify_differences(const std::string &source, const std::string &destination,
                                 const std::string &publication = "pgdog") const;

  std::unique_ptr<PgInstance> control_, source_;
  std::vector<std::unique_ptr<PgInstance>> dests_;
};

}  // namespace pgdog_reshard::test
