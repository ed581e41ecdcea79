#include "proxied_cluster.h"

#include <sys/stat.h>

#include <algorithm>
#include <fstream>

#include "core/pg.h"
#include "core/sharding.h"

namespace pgdog_reshard::test {
namespace {

std::string dsn(const PgInstance &pg) { return "host=127.0.0.1 port=" + std::to_string(pg.port()) + " dbname=postgres"; }

ConnParams bouncer_params(const PgBouncer &bouncer, const std::string &db) {
  ConnParams p;
  p.host = bouncer.host();
  p.port = bouncer.port();
  p.dbname = db;
  p.user = "postgres";
  p.application_name = "pgdog_reshard test client";
  return p;
}

}  // namespace

const char *const kProxiedSchema = R"sql(
CREATE TABLE items (id bigint PRIMARY KEY, client int NOT NULL, n int NOT NULL, note text);
CREATE TABLE tags (name text PRIMARY KEY, hits bigint NOT NULL DEFAULT 0);
CREATE SEQUENCE tickets START 1000;
INSERT INTO items SELECT g, -1, 0, 'before' FROM generate_series(1, 3000) g;
INSERT INTO tags VALUES ('a', 0), ('b', 0);
SELECT nextval('tickets') FROM generate_series(1, 500);
CREATE PUBLICATION pgdog FOR ALL TABLES;
)sql";

std::string proxied_config(const PgInstance &src, const std::vector<std::unique_ptr<PgInstance>> &dst) {
  return "[general]\nport = 6432\n\n" + databases_toml(src, dst, "prod_2x") +
         "[[sharded_tables]]\ndatabase = \"prod_2x\"\nname = \"items\"\ncolumn = \"id\"\ndata_type = \"bigint\"\n";
}

const std::string kProxiedUsers = users_toml("prod_2x");

Writers::Writers(const PgBouncer &bouncer, int clients) {
  for (int c = 0; c < clients; c++) threads_.emplace_back([this, &bouncer, c] { run(bouncer, c); });
}

void Writers::stop() {
  stop_ = true;
  for (std::thread &t : threads_) {
    if (t.joinable()) t.join();
  }
}

std::set<long> Writers::acknowledged() {
  std::lock_guard<std::mutex> lock(mutex_);
  return acked_;
}

std::vector<std::string> Writers::errors() {
  std::lock_guard<std::mutex> lock(mutex_);
  return errors_;
}

bool Writers::advance(long more, int timeout_ms) {
  long target = writes_ + more;
  return wait_until([&] { return writes_ >= target; }, timeout_ms);
}

void Writers::run(const PgBouncer &bouncer, int client) {
  try {
    PollWaiter waiter;
    Connection shard0(bouncer_params(bouncer, "shard_0"), waiter), shard1(bouncer_params(bouncer, "shard_1"), waiter);
    long next = 1000000L * (client + 1);
    for (long i = 0; !stop_; i++) {
      long key = next++;
      Connection &conn = hash_shard(DataType::Bigint, Key(static_cast<int64_t>(key)), 2) == 0 ? shard0 : shard1;
      conn.exec("INSERT INTO items VALUES (" + std::to_string(key) + ", " + std::to_string(client) + ", 0, 'w')");
      {
        std::lock_guard<std::mutex> lock(mutex_);
        acked_.insert(key);
      }
      if (i % 3 == 2) conn.exec("UPDATE items SET n = n + 1, note = 'u' WHERE id = " + std::to_string(key));
      writes_++;
    }
  } catch (const std::exception &e) {
    std::lock_guard<std::mutex> lock(mutex_);
    errors_.push_back(e.what());
  }
}

void ProxiedCluster::start_proxied(const std::string &schema, const std::vector<std::string> &control_conf) {
  start_cluster(schema, control_conf);
  before_ = {{"shard_0", dsn(*source_)}, {"shard_1", dsn(*source_)}};
  after_ = {{"shard_0", dsn(*dests_[0])}, {"shard_1", dsn(*dests_[1])}};
  // Pools of a fixed size, opened ahead: PgBouncer fails the next client of a pool fast ("server
  // login has been failing") when a PAUSE closed a server while it was logging in, so servers
  // should not be opened on demand at the moment a cutover pauses (see the README).
  PgBouncerOptions pools;
  pools.default_pool_size = 4;
  pools.min_pool_size = 4;
  bouncer_ = std::make_unique<PgBouncer>(before_, pools);
  // The hook swaps PgBouncer's ini with the one prepared for the other side: run at each switch
  // point, it points the proxy at the new cluster, and at a rollback back at the old one.
  write_ini(bouncer_->ini_path() + ".other", after_);
  std::string ini = bouncer_->ini_path();
  hook_ = "mv " + ini + " " + ini + ".tmp && mv " + ini + ".other " + ini + " && mv " + ini + ".tmp " + ini + ".other";
  load_config(proxied_config(*source_, dests_), kProxiedUsers);
  set("pgdog_reshard.proxy_admin", bouncer_->admin_conninfo());
  set("pgdog_reshard.cutover_command", hook_);
}

void ProxiedCluster::write_ini(const std::string &path, const std::map<std::string, std::string> &databases) {
  std::ifstream in(bouncer_->ini_path());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string section = "[databases]\n";
  for (const auto &[name, target] : databases) section += name + " = " + target + "\n";
  size_t start = text.find("[databases]");
  size_t end = text.find("\n[", start + 1);
  text = text.substr(0, start) + section + (end == std::string::npos ? "" : text.substr(end + 1));
  std::ofstream(path) << text;
  chmod_for_postgres(path);
}

void ProxiedCluster::chmod_for_postgres(const std::string &path) { ::chmod(path.c_str(), 0644); }

void ProxiedCluster::set(const std::string &guc, const std::string &value) const {
  control_->exec("ALTER SYSTEM SET " + guc + " = $v$" + value + "$v$");
  control_->exec("SELECT pg_reload_conf()");
}

std::string ProxiedCluster::port_behind(const std::string &db) const {
  PollWaiter waiter;
  Connection conn(bouncer_params(*bouncer_, db), waiter);
  return std::string(conn.exec("SELECT current_setting('port')").value(0, 0));
}

std::set<long> ProxiedCluster::ids(const PgInstance &pg, const std::string &where) {
  std::set<long> out;
  for (const Row &r : pg.query("SELECT id FROM items WHERE " + where)) out.insert(std::stol(*r[0]));
  return out;
}

std::set<long> ProxiedCluster::new_cluster_ids() const {
  std::set<long> out = ids(*dests_[0]);
  std::set<long> more = ids(*dests_[1]);
  out.insert(more.begin(), more.end());
  return out;
}

std::string ProxiedCluster::missing(const std::set<long> &want, const std::set<long> &have) const {
  std::string out;
  int n = 0;
  for (long k : want) {
    if (have.count(k) || n++ >= 10) continue;
    out += std::to_string(k) + (ids(*source_, "id = " + std::to_string(k)).empty() ? " (not on the source) " : " (on the source) ");
  }
  return out + "of " + std::to_string(want.size());
}

bool ProxiedCluster::contains_all(const std::set<long> &have, const std::set<long> &want) {
  return std::includes(have.begin(), have.end(), want.begin(), want.end());
}

std::string ProxiedCluster::misplaced(int s) const {
  dests_[s]->exec("CREATE TABLE IF NOT EXISTS oracle (k bigint) PARTITION BY HASH (k)");
  return dests_[s]->value("SELECT count(*) FROM items WHERE NOT satisfies_hash_partition('oracle'::regclass, 2, " +
                          std::to_string(s) + ", id)");
}

bool ProxiedCluster::new_cluster_equals_source() const {
  std::vector<std::string> merged = row_hashes(*dests_[0], "items"), one = row_hashes(*dests_[1], "items");
  merged.insert(merged.end(), one.begin(), one.end());
  std::sort(merged.begin(), merged.end());
  return merged == row_hashes(*source_, "items");
}

}  // namespace pgdog_reshard::test
