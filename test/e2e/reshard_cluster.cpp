#include "reshard_cluster.h"

#include <algorithm>
#include <utility>

namespace pgdog_reshard::test {

std::string databases_toml(const PgInstance &src, const std::vector<std::unique_ptr<PgInstance>> &dst,
                           const std::string &destination) {
  return database_entry("prod", 0, src) + cluster_entries(destination, dst);
}

std::string users_toml(const std::string &destination) {
  return "[[users]]\nname = \"postgres\"\ndatabase = \"prod\"\n[[users]]\nname = \"postgres\"\ndatabase = \"" +
         destination + "\"\n";
}

const char *const kProdNewRules =
    "[[sharded_tables]]\ndatabase = \"prod_new\"\ncolumn = \"user_id\"\ndata_type = \"bigint\"\n\n"
    "[[sharded_tables]]\ndatabase = \"prod_new\"\nname = \"users\"\ncolumn = \"id\"\ndata_type = \"bigint\"\n\n"
    "[[sharded_tables]]\ndatabase = \"prod_new\"\nname = \"accounts\"\ncolumn = \"code\"\ndata_type = \"varchar\"\n";

void ReshardCluster::start_cluster(const std::string &schema, const std::vector<std::string> &control_conf) {
  InstanceOptions c;
  c.name = "control";
  c.preload_extension = true;
  c.extra_conf = control_conf;
  control_ = std::make_unique<PgInstance>(c);
  InstanceOptions s;
  s.name = "source";
  source_ = std::make_unique<PgInstance>(s);
  for (int i = 0; i < 2; i++) {
    InstanceOptions d;
    d.name = "dst" + std::to_string(i);
    dests_.push_back(std::make_unique<PgInstance>(d));
  }
  source_->exec(schema);
  control_->exec("CREATE EXTENSION pgdog_reshard");
}

void ReshardCluster::load_config(const std::string &pgdog_toml, const std::string &users_toml) const {
  control_->exec("SELECT reshard_load_config($t$" + pgdog_toml + "$t$, $u$" + users_toml + "$u$)");
}

std::string ReshardCluster::state(const std::string &task) const {
  return control_->value("SELECT state || ' ' || coalesce(phase, '') || ' ' || coalesce(error, '') FROM reshard_status WHERE id = " +
                         task);
}

bool ReshardCluster::wait_state(const std::string &task, const std::string &want, int ms) const {
  auto ended = [&](const std::string &s) {
    return s.rfind(want, 0) == 0 || s.rfind("failed", 0) == 0 || s.rfind("cancelled", 0) == 0;
  };
  wait_until([&] {
    try {
      return ended(state(task));
    } catch (const std::exception &) {
      return false;  // the control node may be restarting
    }
  }, ms);
  return state(task).rfind(want, 0) == 0;
}

bool ReshardCluster::wait_copying(const std::string &task, const std::string &table) const {
  return wait_until([&] {
    try {
      return control_->value("SELECT count(*) FROM reshard_table_copies WHERE task_id = " + task + " AND \"table\" = '" +
                             table + "' AND state = 'running' AND rows > 0") == "1";
    } catch (const std::exception &) {
      return false;  // the control node restarting
    }
  }, 120000);
}

bool ReshardCluster::wait_caught_up(const std::string &task, int ms) const {
  std::vector<std::pair<std::string, std::string>> targets;  // a slot's server port, its position now
  for (const Row &r : control_->query("SELECT port FROM reshard_replication_slots WHERE task_id = " + task +
                                      " AND dropped_at IS NULL AND NOT temporary")) {
    for (const PgInstance *pg : {source_.get(), dests_[0].get(), dests_[1].get()}) {
      if (std::to_string(pg->port()) == *r[0]) targets.emplace_back(*r[0], pg->value(kCommittedWalEndSql));
    }
  }
  return !targets.empty() && wait_until([&] {
    try {
      for (const auto &[port, at] : targets) {
        if (control_->value("SELECT count(*) FROM reshard_replication_slots WHERE task_id = " + task + " AND port = " +
                            port + " AND dropped_at IS NULL AND coalesce(confirmed_lsn, lsn) < '" + at + "'::pg_lsn") != "0") {
          return false;
        }
      }
      return true;
    } catch (const std::exception &) {
      return false;  // the control node may be restarting
    }
  }, ms);
}

std::string ReshardCluster::verify_differences(const std::string &source, const std::string &destination,
                                               const std::string &publication) const {
  std::vector<Row> rows = control_->query(
      "SELECT schema || '.' || \"table\", verdict, source_rows, destination_rows, missing, extra, differing, misplaced,"
      " unresolved, examples FROM reshard_verify('" + source + "', '" + destination + "', '" + publication + "')");
  if (rows.empty()) return "reshard_verify returned no table";
  std::string out;
  for (const Row &r : rows) {
    if (*r[1] == "ok") continue;
    out += *r[0] + ": " + *r[1] + ", rows " + *r[2] + " -> " + *r[3] + ", missing " + *r[4] + ", extra " + *r[5] +
           ", differing " + *r[6] + ", misplaced " + *r[7] + ", unresolved " + *r[8] + " (" + *r[9] + ")\n";
  }
  return out;
}

std::vector<std::string> ReshardCluster::row_hashes(const PgInstance &pg, const std::string &table,
                                                   const std::string &where) {
  std::vector<std::string> out;
  for (const Row &r : pg.query("SELECT md5(x::text) FROM " + table + " x WHERE " + where)) out.push_back(*r[0]);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace pgdog_reshard::test
