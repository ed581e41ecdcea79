#include "engine/copy_replicas.h"

#include <algorithm>

#include "core/error.h"
#include "core/lsn.h"
#include "core/sql.h"
#include "engine/cluster.h"

namespace pgdog_reshard {

namespace {

struct PrimaryFacts {
  std::string system_identifier;
  Lsn wal_end;
};

PrimaryFacts read_primary(const Database &db, TaskContext &ctx) {
  Connection conn(connection_params(db), ctx);
  Result r = conn.exec("SELECT (SELECT system_identifier FROM pg_control_system())::text, pg_current_wal_lsn()::text");
  return {std::string(r.value(0, 0)), Lsn::parse_or_throw(r.value(0, 1))};
}

constexpr const char *kReplicaFactsSql = R"(
SELECT pg_is_in_recovery(),
       (SELECT system_identifier FROM pg_control_system())::text,
       coalesce((SELECT status FROM pg_stat_wal_receiver), 'not running'),
       current_setting('hot_standby_feedback'),
       coalesce(pg_last_wal_replay_lsn(), '0/0')::text)";

// "" when the replica can serve, else why not.
std::string replica_problem(const Result &r, const PrimaryFacts &primary, int64_t max_lag_bytes) {
  if (r.value(0, 0) != "t") return "it is not a standby (pg_is_in_recovery() is false)";
  if (r.value(0, 1) != primary.system_identifier) {
    return "it is not a standby of the shard's primary (system_identifier " + std::string(r.value(0, 1)) +
           ", the primary's is " + primary.system_identifier + ")";
  }
  if (r.value(0, 2) != "streaming") {
    return "its WAL receiver is " + std::string(r.value(0, 2)) + ", not streaming from the primary";
  }
  if (r.value(0, 3) != "on") {
    return "hot_standby_feedback is off: the primary's vacuum would remove rows a copy still reads";
  }
  Lsn replayed = Lsn::parse_or_throw(r.value(0, 4));
  int64_t lag = static_cast<int64_t>(primary.wal_end.bytes_since(replayed));
  if (lag > max_lag_bytes) {
    return "it is " + std::to_string(lag) + " bytes of WAL behind the primary (pgdog_reshard.replica_max_lag is " +
           std::to_string(max_lag_bytes) + ")";
  }
  return {};
}

CopyReplica check_replica(int shard, const Database &db, const PrimaryFacts &primary, int64_t max_lag_bytes,
                          TaskContext &ctx) {
  CopyReplica replica;
  replica.shard = shard;
  replica.db = &db;
  try {
    ConnParams params = connection_params(db);
    params.application_name = "pgdog_reshard preflight";
    Connection conn(params, ctx);
    Result facts = conn.exec(kReplicaFactsSql);
    replica.problem = replica_problem(facts, primary, max_lag_bytes);
  } catch (const Error &e) {
    if (e.sqlstate() == sqlstate::kQueryCanceled || e.sqlstate() == sqlstate::kAdminShutdown) throw;
    replica.problem = e.what();
  }
  replica.usable = replica.problem.empty();
  return replica;
}

std::string where(const CopyReplica &r) {
  return r.db->host + ":" + std::to_string(r.db->port) + " (replica of source shard " + std::to_string(r.shard) + ")";
}

}  // namespace

std::vector<CopyReplica> check_copy_replicas(const Config &config, const std::string &cluster,
                                             int64_t max_lag_bytes, TaskContext &ctx) {
  std::vector<CopyReplica> out;
  for (int shard = 0; shard < config.shard_count(cluster); shard++) {
    std::vector<const Database *> replicas = config.copy_replicas(cluster, shard);
    if (replicas.empty()) continue;
    PrimaryFacts primary = read_primary(config.primary(cluster, shard), ctx);
    std::vector<CopyReplica> checked;
    for (size_t i = 0; i < replicas.size(); i++) {
      checked.push_back(check_replica(shard, *replicas[i], primary, max_lag_bytes, ctx));
      checked.back().replica = static_cast<int>(i);
    }
    std::string problems;
    for (const CopyReplica &r : checked) {
      if (r.usable) continue;
      ctx.log(LogLevel::Warning, "copies will not read from " + where(r) + ": " + r.problem);
      problems += (problems.empty() ? "" : "\n") + where(r) + ": " + r.problem;
    }
    if (std::none_of(checked.begin(), checked.end(), [](const CopyReplica &r) { return r.usable; })) {
      throw Error(sqlstate::kObjectNotInPrerequisiteState,
                  "no replica of source shard " + std::to_string(shard) + " of database " + quote_literal(cluster) +
                      " can serve the copy",
                  problems,
                  "Fix the replicas, or take resharding_only (and role = \"replica\") off their entries in "
                  "pgdog.toml so that the primary serves the copy.");
    }
    out.insert(out.end(), checked.begin(), checked.end());
  }
  return out;
}

}  // namespace pgdog_reshard
