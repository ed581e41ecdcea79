// The fixture of tests that move traffic: ReshardCluster's servers (clusters "prod", the source,
// and "prod_2x", two shards of items by id) behind a real PgBouncer in transaction pooling, whose
// databases shard_0 and shard_1 point at the source until a cutover. The cutover_command hook
// swaps PgBouncer's ini with the other side's, and pgdog_reshard RELOADs it through proxy_admin.
// Writers are clients writing through PgBouncer, routed by the sharding hash.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "pgbouncer.h"
#include "reshard_cluster.h"

namespace pgdog_reshard::test {

// The source's schema the cutover and reshard tests share: 3000 rows of items, a table with a text
// key (tags), a sequence that handed out 500 values (tickets), and the publication pgdog.
extern const char *const kProxiedSchema;

// pgdog.toml and users.toml of the two clusters.
std::string proxied_config(const PgInstance &src, const std::vector<std::unique_ptr<PgInstance>> &dst);
extern const std::string kProxiedUsers;

// Writing clients: each inserts rows into items(id, client, n, note) with keys of its own and
// updates them, every statement sent to PgBouncer database shard_<reshard hash of the key>. A key
// is acknowledged once its INSERT returned; any error is recorded (the proxy must only make
// writes wait).
class Writers {
 public:
  Writers(const PgBouncer &bouncer, int clients);
  ~Writers() { stop(); }

  void stop();
  std::set<long> acknowledged();
  std::vector<std::string> errors();
  long count() const { return writes_; }
  // Waits until `more` writes were acknowledged after now (the clients are moving).
  bool advance(long more, int timeout_ms = 30000);

 private:
  void run(const PgBouncer &bouncer, int client);

  std::atomic<bool> stop_{false};
  std::atomic<long> writes_{0};
  std::mutex mutex_;
  std::set<long> acked_;
  std::vector<std::string> errors_;
  std::vector<std::thread> threads_;
};

class ProxiedCluster : public ReshardCluster {
 protected:
  // `schema` (kProxiedSchema, or more) must create items(id bigint PRIMARY KEY, client int, n int,
  // note text) and the publication pgdog; the control node gets `control_conf` too.
  void start_proxied(const std::string &schema, const std::vector<std::string> &control_conf = {});

  // PgBouncer's ini with another [databases] section, written beside the live one.
  void write_ini(const std::string &path, const std::map<std::string, std::string> &databases);
  static void chmod_for_postgres(const std::string &path);
  // ALTER SYSTEM SET on the control node, then a reload.
  void set(const std::string &guc, const std::string &value) const;

  // Which server PgBouncer's database `db` reaches now (its port).
  std::string port_behind(const std::string &db) const;
  // Rows of the writers (client >= 0) on a server, and on the two new shards together.
  static std::set<long> ids(const PgInstance &pg, const std::string &where = "client >= 0");
  std::set<long> new_cluster_ids() const;
  // Up to ten keys of `want` that `have` lacks, and where the source stands on each.
  std::string missing(const std::set<long> &want, const std::set<long> &have) const;
  static bool contains_all(const std::set<long> &have, const std::set<long> &want);
  // Rows of new shard s that PostgreSQL's hash partitioning would put on the other shard.
  std::string misplaced(int s) const;
  // items on the two new shards together equal the source's, row for row.
  bool new_cluster_equals_source() const;

  std::unique_ptr<PgBouncer> bouncer_;
  std::map<std::string, std::string> before_, after_;
  std::string hook_;
};

}  // namespace pgdog_reshard::test
