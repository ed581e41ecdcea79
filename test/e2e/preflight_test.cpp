// Pre-flight (src/engine/preflight.h) against real instances: two source shards, two destination
// shards. The happy path returns the plan; every failure names its object with the right SQLSTATE
// and leaves every server exactly as it was (no slot, publication, table or database created).
//
// Each test gets databases of its own (sources cloned from a template holding the fixture), so the
// four instances are shared by the whole suite and no test undoes another's changes.
#include "engine/preflight.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "expect_error.h"
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "harness.h"

namespace pgdog_reshard {
namespace {

using test::InstanceOptions;
using test::PgInstance;

constexpr const char *kPwUser = "pw_user";
constexpr const char *kRightPassword = "Right-Secret-5d1e";
constexpr const char *kWrongPassword = "Wrong-Secret-0b7c";

// The source schema: a PK table with a generated column, a REPLICA IDENTITY FULL table, a
// range-partitioned table, varchar- and uuid-keyed tables, an omnisharded table, and names that
// need quoting. Two publications: leaves (the default) and via the partition root.
constexpr const char *kSourceSchema = R"(
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, total numeric NOT NULL DEFAULT 0,
                     total_x2 numeric GENERATED ALWAYS AS (total * 2) STORED, note text);
CREATE TABLE audit (user_id bigint NOT NULL, message text);
ALTER TABLE audit REPLICA IDENTITY FULL;
CREATE TABLE events (tenant_id integer NOT NULL, user_id bigint, at date NOT NULL, payload text,
                     PRIMARY KEY (tenant_id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE accounts (code varchar(32) PRIMARY KEY, name text);
CREATE TABLE sessions (sid uuid NOT NULL, data text);
CREATE UNIQUE INDEX sessions_sid ON sessions (sid);
ALTER TABLE sessions REPLICA IDENTITY USING INDEX sessions_sid;
CREATE TABLE countries (code text PRIMARY KEY, name text);
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Line ""Items""" (id bigint PRIMARY KEY, user_id bigint);
INSERT INTO orders (id, user_id, total) SELECT g, g % 7, g FROM generate_series(1, 500) g;
INSERT INTO audit SELECT g, 'm' FROM generate_series(1, 20) g;
-- user_id is NULL here: harmless, events is sharded by tenant_id (the rule naming its parent).
INSERT INTO events VALUES (1, NULL, '2024-05-01', 'x'), (2, NULL, '2025-05-01', 'y');
INSERT INTO accounts VALUES ('a1', 'A'), ('b2', 'B');
INSERT INTO sessions VALUES (gen_random_uuid(), 's');
INSERT INTO countries VALUES ('fr', 'France');
INSERT INTO "Odd Schema"."Line ""Items""" VALUES (1, 1), (2, 2);
CREATE PUBLICATION pub FOR ALL TABLES;
CREATE PUBLICATION pub_root FOR ALL TABLES WITH (publish_via_partition_root = true);
ANALYZE;
)";

// Rules for the destination: a column-only rule, a rule naming a partitioned parent (and winning
// over the column-only rule on its leaves), varchar and uuid rules, and one naming no table.
constexpr const char *kRules = R"(
[[sharded_tables]]
database = "prod_2x"
column = "user_id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_2x"
name = "events"
column = "tenant_id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_2x"
name = "accounts"
column = "code"
data_type = "varchar"

[[sharded_tables]]
database = "prod_2x"
schema = "public"
name = "sessions"
column = "sid"
data_type = "uuid"

[[sharded_tables]]
database = "prod_2x"
name = "ghost"
column = "id"
)";

constexpr const char *kUsers = R"(
[[users]]
name = "postgres"
database = "prod"

[[users]]
name = "postgres"
database = "prod_2x"
)";

std::string rule(const std::string &table, const std::string &column, const std::string &type) {
  return "\n[[sharded_tables]]\ndatabase = \"prod_2x\"\n" +
         (table.empty() ? std::string() : "name = \"" + table + "\"\n") + "column = \"" + column +
         "\"\ndata_type = \"" + type + "\"\n";
}

std::string db_entry(const std::string &cluster, int shard, const std::string &host, int port,
                     const std::string &db, const std::string &extra = "") {
  return "[[databases]]\nname = \"" + cluster + "\"\nhost = \"" + host +
         "\"\nport = " + std::to_string(port) + "\ndatabase_name = \"" + db +
         "\"\nshard = " + std::to_string(shard) + "\n" + extra + "\n";
}

std::string db_entry(const std::string &cluster, int shard, const PgInstance &pg, const std::string &db,
                     const std::string &extra = "") {
  return db_entry(cluster, shard, pg.host(), pg.port(), db, extra);
}

bool has(const std::string &text, const std::string &needle) {
  return text.find(needle) != std::string::npos;
}

// A port nothing listens on: bound once to learn a free number, then released.
int unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&addr), len) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) != 0) {
    throw std::runtime_error("could not find a free port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// What a pre-flight must never change, on one instance, seen from one database.
std::string footprint(const PgInstance &pg, const std::string &db) {
  return pg.value(
      "SELECT (SELECT count(*) FROM pg_replication_slots) || '/' || (SELECT count(*) FROM pg_database)"
      " || '/' || (SELECT count(*) FROM pg_class) || '/' || (SELECT count(*) FROM pg_publication)"
      " || '/' || (SELECT count(*) FROM pg_subscription)",
      db);
}

InstanceOptions named(const std::string &name) {
  InstanceOptions options;
  options.name = name;
  return options;
}

class Preflight : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    InstanceOptions options;
    options.name = "preflight_src0";
    options.hba_lines = {std::string("host all ") + kPwUser + " 127.0.0.1/32 scram-sha-256"};
    src0_ = std::make_unique<PgInstance>(options);
    src1_ = std::make_unique<PgInstance>(named("preflight_src1"));
    dst0_ = std::make_unique<PgInstance>(named("preflight_dst0"));
    dst1_ = std::make_unique<PgInstance>(named("preflight_dst1"));
    for (PgInstance *src : {src0_.get(), src1_.get()}) {
      src->exec("CREATE DATABASE fixture");
      src->exec(kSourceSchema, "fixture");
    }
    src0_->exec(std::string("CREATE ROLE ") + kPwUser + " LOGIN PASSWORD '" + kRightPassword + "'");
  }
  static void TearDownTestSuite() {
    for (auto *pg : {&src0_, &src1_, &dst0_, &dst1_, &limits_}) pg->reset();
  }

  static std::vector<PgInstance *> instances() {
    return {src0_.get(), src1_.get(), dst0_.get(), dst1_.get()};
  }

  // Fresh databases named `db`: sources cloned from the fixture, destinations empty.
  void make_databases(const std::string &db) {
    db_ = db;
    for (PgInstance *src : {src0_.get(), src1_.get()})
      src->exec("CREATE DATABASE " + db + " TEMPLATE fixture");
    for (PgInstance *dst : {dst0_.get(), dst1_.get()}) dst->exec("CREATE DATABASE " + db);
  }

  std::string source_entries() const {
    return db_entry("prod", 0, *src0_, db_) + db_entry("prod", 1, *src1_, db_);
  }
  std::string destination_entries() const {
    return db_entry("prod_2x", 0, *dst0_, db_) + db_entry("prod_2x", 1, *dst1_, db_);
  }
  Config config(const std::string &rules = kRules) const {
    return parse_config(source_entries() + destination_entries() + rules, std::string(kUsers));
  }
  Config config_with(const std::string &sources, const std::string &destinations,
                     const std::string &rules = kRules) const {
    return parse_config(sources + destinations + rules, std::string(kUsers));
  }

  static ReshardRequest request(const std::string &publication = "pub") {
    ReshardRequest r;
    r.source = "prod";
    r.destination = "prod_2x";
    r.publication = publication;
    return r;
  }

  ReshardPlan run(const Config &config, const ReshardRequest &req) {
    SimpleTaskContext ctx(
        {}, [this](LogLevel level, const std::string &message) { logs_.emplace_back(level, message); });
    return preflight(config, req, ctx);
  }

  // Every (instance, database) whose catalogs a failed pre-flight must leave as they were: the
  // test's own databases and "postgres" on the suite's four instances, "postgres" on `extra`.
  std::vector<std::pair<const PgInstance *, std::string>> watched(
      const std::vector<const PgInstance *> &extra) const {
    std::vector<std::pair<const PgInstance *, std::string>> out;
    for (const PgInstance *pg : extra) out.emplace_back(pg, "postgres");
    for (const PgInstance *pg : instances()) {
      out.emplace_back(pg, "postgres");
      out.emplace_back(pg, db_);
    }
    return out;
  }

  // Runs a pre-flight that must fail, and checks that it changed nothing anywhere (no slot,
  // database, relation, publication or subscription more or less) and left no session behind.
  Error failure(const Config &config, const ReshardRequest &req,
                const std::vector<const PgInstance *> &extra = {}) {
    auto places = watched(extra);
    std::vector<std::string> before;
    for (const auto &[pg, db] : places) before.push_back(footprint(*pg, db));
    Error error("", "");
    try {
      run(config, req);
      ADD_FAILURE() << "pre-flight succeeded";
    } catch (const Error &e) {
      error = e;
    }
    for (size_t i = 0; i < places.size(); i++) {
      EXPECT_EQ(footprint(*places[i].first, places[i].second), before[i])
          << places[i].first->name() << "/" << places[i].second;
    }
    for (const PgInstance *pg : extra) expect_no_session(*pg);
    for (const PgInstance *pg : instances()) expect_no_session(*pg);
    return error;
  }

  static void expect_no_session(const PgInstance &pg) {
    EXPECT_TRUE(test::wait_until([&] {
      const char *sql =
          "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgdog_reshard preflight'";
      return pg.value(sql) == "0";
    })) << pg.name()
        << " still has a pre-flight session";
  }

  // Shared by the two limit tests: few WAL senders, a normal number of slots.
  static PgInstance &limits() {
    if (!limits_) {
      InstanceOptions options;
      options.name = "preflight_limits";
      options.extra_conf = {"max_wal_senders = 2", "max_replication_slots = 20"};
      limits_ = std::make_unique<PgInstance>(options);
      limits_->exec("CREATE TABLE t (id bigint PRIMARY KEY); CREATE PUBLICATION pub FOR ALL TABLES");
    }
    return *limits_;
  }

  bool logged(LogLevel level, const std::string &needle) const {
    for (const auto &[l, message] : logs_) {
      if (l == level && has(message, needle)) return true;
    }
    return false;
  }

  static std::unique_ptr<PgInstance> src0_, src1_, dst0_, dst1_, limits_;
  std::string db_;
  std::vector<std::pair<LogLevel, std::string>> logs_;
};

std::unique_ptr<PgInstance> Preflight::src0_, Preflight::src1_, Preflight::dst0_, Preflight::dst1_,
    Preflight::limits_;

const TablePlan &table(const ReshardPlan &plan, const std::string &schema, const std::string &name) {
  for (const TablePlan &t : plan.tables) {
    if (t.schema == schema && t.name == name) return t;
  }
  throw std::runtime_error("no plan for " + schema + "." + name);
}

using Names = std::vector<std::string>;

// ---------------------------------------------------------------------------------------------
// The plan

TEST_F(Preflight, PlansEveryPublishedLeafWithItsKey) {
  make_databases("happy");
  // A destination table that exists but is empty is fine.
  dst0_->exec("CREATE TABLE countries (code text PRIMARY KEY, name text)", "happy");
  Config cfg = config();
  auto places = watched({});
  std::vector<std::string> before;
  for (const auto &[pg, db] : places) before.push_back(footprint(*pg, db));

  ReshardPlan plan = run(cfg, request());

  EXPECT_EQ(plan.source_shards, 2);
  EXPECT_EQ(plan.destination_shards, 2);
  EXPECT_EQ(plan.encoding, "UTF8");
  std::vector<std::string> names;
  for (const TablePlan &t : plan.tables) names.push_back(t.qualified());
  EXPECT_EQ(names, (Names{"\"Odd Schema\".\"Line \"\"Items\"\"\"", "\"public\".\"accounts\"",
                          "\"public\".\"audit\"", "\"public\".\"countries\"", "\"public\".\"events_2024\"",
                          "\"public\".\"events_2025\"", "\"public\".\"orders\"", "\"public\".\"sessions\""}));

  const TablePlan &orders = table(plan, "public", "orders");
  EXPECT_EQ(orders.columns, (Names{"id", "user_id", "total", "note"}));  // no generated total_x2
  EXPECT_EQ(orders.identity_columns, Names{"id"});
  EXPECT_FALSE(orders.replica_identity_full);
  ASSERT_TRUE(orders.key);
  EXPECT_EQ(orders.key->column, "user_id");
  EXPECT_EQ(orders.key->index, 1);
  EXPECT_EQ(orders.key->type, KeyType::Int8);
  ASSERT_NE(orders.key->rule, nullptr);
  EXPECT_TRUE(orders.key->rule->table.empty());  // the column-only rule
  EXPECT_EQ(orders.estimated_rows, 1000);        // 500 on each source shard, after ANALYZE
  EXPECT_GT(orders.estimated_bytes, 0);

  const TablePlan &audit = table(plan, "public", "audit");
  EXPECT_TRUE(audit.replica_identity_full);
  EXPECT_EQ(audit.identity_columns, (Names{"user_id", "message"}));
  ASSERT_TRUE(audit.key);
  EXPECT_EQ(audit.key->index, 0);

  for (const char *leaf : {"events_2024", "events_2025"}) {
    const TablePlan &events = table(plan, "public", leaf);
    EXPECT_EQ(events.columns, (Names{"tenant_id", "user_id", "at", "payload"}));
    EXPECT_EQ(events.identity_columns, (Names{"tenant_id", "at"}));
    ASSERT_TRUE(events.key) << leaf;
    EXPECT_EQ(events.key->column, "tenant_id");  // the parent's rule beats the column-only rule
    EXPECT_EQ(events.key->type, KeyType::Int4);
    EXPECT_EQ(events.key->rule->table, "events");
  }

  const TablePlan &accounts = table(plan, "public", "accounts");
  ASSERT_TRUE(accounts.key);
  EXPECT_EQ(accounts.key->type, KeyType::Text);
  EXPECT_EQ(accounts.key->rule->data_type, DataType::Varchar);

  const TablePlan &sessions = table(plan, "public", "sessions");
  EXPECT_EQ(sessions.identity_columns, Names{"sid"});  // REPLICA IDENTITY USING INDEX
  ASSERT_TRUE(sessions.key);
  EXPECT_EQ(sessions.key->type, KeyType::Uuid);

  const TablePlan &countries = table(plan, "public", "countries");
  EXPECT_TRUE(countries.omnisharded());
  EXPECT_EQ(countries.identity_columns, Names{"code"});

  const TablePlan &items = table(plan, "Odd Schema", "Line \"Items\"");
  ASSERT_TRUE(items.key);
  EXPECT_EQ(items.key->column, "user_id");

  EXPECT_TRUE(logged(LogLevel::Warning, "\"ghost\"")) << "a rule naming no published table is reported";
  for (size_t i = 0; i < places.size(); i++) {
    EXPECT_EQ(footprint(*places[i].first, places[i].second), before[i]) << places[i].first->name();
    expect_no_session(*places[i].first);
  }
}

TEST_F(Preflight, PublicationViaPartitionRootPlansTheSameLeaves) {
  make_databases("viaroot");
  Config cfg = config();
  ReshardPlan leaves = run(cfg, request("pub"));
  ReshardPlan via_root = run(cfg, request("pub_root"));
  ASSERT_EQ(via_root.tables.size(), leaves.tables.size());
  for (size_t i = 0; i < leaves.tables.size(); i++) {
    EXPECT_EQ(via_root.tables[i].qualified(), leaves.tables[i].qualified());
    EXPECT_EQ(via_root.tables[i].columns, leaves.tables[i].columns);
  }
  EXPECT_TRUE(logged(LogLevel::Info, "partition root"));
}

// ---------------------------------------------------------------------------------------------
// The request and the connections

TEST_F(Preflight, UnknownClusterListsTheConfiguredOnes) {
  make_databases("unknown");
  Config cfg = config();
  ReshardRequest req = request();
  req.source = "nope";
  Error e = failure(cfg, req);
  EXPECT_EQ(e.sqlstate(), "42704");
  EXPECT_TRUE(has(e.what(), "source cluster \"nope\"")) << e.what();
  EXPECT_TRUE(has(e.hint(), "prod, prod_2x")) << e.hint();

  req = request();
  req.destination = "prod_3x";
  e = failure(cfg, req);
  EXPECT_EQ(e.sqlstate(), "42704");
  EXPECT_TRUE(has(e.what(), "destination cluster \"prod_3x\"")) << e.what();
}

TEST_F(Preflight, SourceEqualToDestinationIsRefused) {
  make_databases("same");
  ReshardRequest req = request();
  req.destination = "prod";
  Error e = failure(config(), req);
  EXPECT_EQ(e.sqlstate(), "22023");
  EXPECT_TRUE(has(e.what(), "\"prod\"")) << e.what();

  // A destination shard reached through another host name is still the source's database.
  Config aliased = config_with(source_entries(), db_entry("prod_2x", 0, *dst0_, db_) +
                                                     db_entry("prod_2x", 1, "localhost", src1_->port(), db_));
  e = failure(aliased, request());
  EXPECT_EQ(e.sqlstate(), "22023");
  EXPECT_TRUE(has(e.what(), "shard 1 of source cluster \"prod\"")) << e.what();
  EXPECT_TRUE(has(e.what(), "shard 1 of destination cluster \"prod_2x\" (localhost:")) << e.what();
}

TEST_F(Preflight, UnreachableShardNamesClusterShardAndHost) {
  make_databases("unreachable");
  int port = unused_port();
  Config cfg = config_with(
      source_entries(), db_entry("prod_2x", 0, *dst0_, db_) + db_entry("prod_2x", 1, "127.0.0.1", port, db_));
  Error e = failure(cfg, request());
  EXPECT_EQ(e.sqlstate(), "08001");
  EXPECT_TRUE(has(e.what(), "shard 1 of destination cluster \"prod_2x\" (127.0.0.1:" + std::to_string(port)))
      << e.what();
  EXPECT_FALSE(e.hint().empty());
}

TEST_F(Preflight, WrongPasswordIsReportedWithoutThePassword) {
  make_databases("password");
  std::string credentials =
      std::string("user = \"") + kPwUser + "\"\npassword = \"" + kWrongPassword + "\"\n";
  Config cfg = config_with(db_entry("prod", 0, *src0_, db_, credentials) + db_entry("prod", 1, *src1_, db_),
                           destination_entries());
  Error e = failure(cfg, request());
  EXPECT_EQ(e.sqlstate(), "28P01");
  EXPECT_TRUE(has(e.what(), "shard 0 of source cluster \"prod\"")) << e.what();
  for (const std::string &text : {std::string(e.what()), e.detail(), e.hint()}) {
    EXPECT_FALSE(has(text, kWrongPassword)) << text;
  }

  // The right password connects; the role then lacks REPLICATION, which the stream needs.
  credentials = std::string("user = \"") + kPwUser + "\"\npassword = \"" + kRightPassword + "\"\n";
  cfg = config_with(db_entry("prod", 0, *src0_, db_, credentials) + db_entry("prod", 1, *src1_, db_),
                    destination_entries());
  e = failure(cfg, request());
  EXPECT_EQ(e.sqlstate(), "42501");
  EXPECT_TRUE(has(e.what(), std::string("user \"") + kPwUser + "\"")) << e.what();
  EXPECT_TRUE(has(e.hint(), "REPLICATION")) << e.hint();
  for (const std::string &text : {std::string(e.what()), e.detail(), e.hint()}) {
    EXPECT_FALSE(has(text, kRightPassword)) << text;
  }
}

// ---------------------------------------------------------------------------------------------
// Source servers

TEST_F(Preflight, WalLevelNotLogicalIsRefused) {
  InstanceOptions options;
  options.name = "preflight_replica_wal";
  options.extra_conf = {"wal_level = replica"};
  PgInstance replica_wal(options);
  make_databases("wal");
  Config cfg = config_with(db_entry("prod", 0, replica_wal, "postgres"), destination_entries());
  Error e = failure(cfg, request(), {&replica_wal});
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(has(e.what(), "wal_level is 'replica' on shard 0 of source cluster \"prod\"")) << e.what();
  EXPECT_TRUE(has(e.hint(), "wal_level = logical")) << e.hint();
}

TEST_F(Preflight, TooFewFreeReplicationSlotsIsRefused) {
  PgInstance &pg = limits();
  make_databases("slots");
  pg.exec("SELECT pg_create_physical_replication_slot('taken')");
  Config cfg = config_with(db_entry("prod", 0, pg, "postgres"), destination_entries());
  ReshardRequest req = request();
  req.parallel_copies = 19;  // 20 slots needed, 19 free
  Error e = failure(cfg, req, {&pg});
  pg.exec("SELECT pg_drop_replication_slot('taken')");
  EXPECT_EQ(e.sqlstate(), "53400");
  EXPECT_TRUE(has(e.what(), "shard 0 of source cluster \"prod\"")) << e.what();
  EXPECT_TRUE(has(e.what(), "19 free replication slots, needs 20")) << e.what();
  EXPECT_TRUE(has(e.hint(), "max_replication_slots to at least 21")) << e.hint();
}

TEST_F(Preflight, TooFewWalSendersIsRefused) {
  PgInstance &pg = limits();
  make_databases("senders");
  Config cfg = config_with(db_entry("prod", 0, pg, "postgres"), destination_entries());
  Error e = failure(cfg, request(), {&pg});  // parallel_copies 2: 3 senders needed, 2 configured
  EXPECT_EQ(e.sqlstate(), "53400");
  EXPECT_TRUE(has(e.what(), "2 free WAL senders, needs 3")) << e.what();
  EXPECT_TRUE(has(e.hint(), "max_wal_senders to at least 3")) << e.hint();
}

// The apply keeps one replication origin per source shard on every destination shard.
TEST_F(Preflight, TooFewFreeReplicationOriginsOnADestinationIsRefused) {
  PgInstance &pg = limits();
  make_databases("origins");
  pg.exec("SELECT count(pg_replication_origin_create('taken_' || g)) FROM generate_series(1, 19) g");
  Config cfg = config_with(source_entries(), db_entry("prod_2x", 0, pg, "postgres") + db_entry("prod_2x", 1, *dst1_, db_));
  Error e = failure(cfg, request(), {&pg});
  pg.exec("SELECT count(pg_replication_origin_drop('taken_' || g)) FROM generate_series(1, 19) g");
  EXPECT_EQ(e.sqlstate(), "53400");
  EXPECT_TRUE(has(e.what(), "shard 0 of destination cluster \"prod_2x\"")) << e.what();
  EXPECT_TRUE(has(e.what(), "1 free replication origins, needs 2")) << e.what();
  EXPECT_TRUE(has(e.hint(), "max_replication_slots to at least 21")) << e.hint();
}

TEST_F(Preflight, DestinationUserWithoutReplicationOriginsIsRefused) {
  make_databases("noorigin");
  dst0_->exec("CREATE ROLE plain_destination LOGIN");
  Config cfg = config_with(source_entries(), db_entry("prod_2x", 0, *dst0_, db_, "user = \"plain_destination\"\n") +
                                                 db_entry("prod_2x", 1, *dst1_, db_));
  Error e = failure(cfg, request());
  dst0_->exec("DROP ROLE plain_destination");
  EXPECT_EQ(e.sqlstate(), "42501");
  EXPECT_TRUE(has(e.what(), "user \"plain_destination\" may not use replication origins")) << e.what();
  EXPECT_TRUE(has(e.hint(), "pg_replication_origin_session_setup(text)")) << e.hint();
}

// ---------------------------------------------------------------------------------------------
// The publication

TEST_F(Preflight, PublicationMissingOnOneSourceShard) {
  make_databases("nopub");
  src1_->exec("DROP PUBLICATION pub", "nopub");
  Error e = failure(config(), request());
  EXPECT_EQ(e.sqlstate(), "42704");
  EXPECT_TRUE(has(e.what(), "publication \"pub\" does not exist on shard 1 of source cluster \"prod\""))
      << e.what();
  EXPECT_EQ(e.hint(), "CREATE PUBLICATION \"pub\" FOR ALL TABLES");
}

TEST_F(Preflight, PublicationWithDifferentTablesOnTwoShards) {
  make_databases("difftables");
  src1_->exec("CREATE TABLE extra (id bigint PRIMARY KEY)", "difftables");
  Error e = failure(config(), request());
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(has(e.what(), "publication \"pub\" publishes different tables")) << e.what();
  EXPECT_TRUE(has(e.detail(), "Only on shard 1: \"public\".\"extra\"")) << e.detail();
}

TEST_F(Preflight, PublicationThatFiltersOrSkipsChangesIsRefused) {
  make_databases("filtered");
  for (PgInstance *src : {src0_.get(), src1_.get()}) {
    src->exec(
        "CREATE PUBLICATION rows_only FOR TABLE orders WHERE (user_id > 0);"
        "CREATE PUBLICATION inserts_only FOR ALL TABLES WITH (publish = 'insert')",
        "filtered");
  }
  Error e = failure(config(), request("rows_only"));
  EXPECT_EQ(e.sqlstate(), "0A000");
  EXPECT_TRUE(has(e.what(), "table \"public\".\"orders\"")) << e.what();
  e = failure(config(), request("inserts_only"));
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(has(e.what(), "does not publish every INSERT, UPDATE and DELETE")) << e.what();
}

// ---------------------------------------------------------------------------------------------
// Tables and sharding rules

TEST_F(Preflight, TableWithoutReplicaIdentityIsRefused) {
  make_databases("noidentity");
  for (PgInstance *src : {src0_.get(), src1_.get()})
    src->exec("CREATE TABLE nokey (id bigint, note text)", "noidentity");
  Error e = failure(config(), request());
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_EQ(std::string(e.what()), "table \"public\".\"nokey\" has no primary key or replica identity");
  EXPECT_TRUE(has(e.detail(), "shard 0 of source cluster \"prod\"")) << e.detail();
  EXPECT_TRUE(has(e.hint(), "ALTER TABLE \"public\".\"nokey\" ADD PRIMARY KEY")) << e.hint();
  EXPECT_TRUE(has(e.hint(), "REPLICA IDENTITY FULL")) << e.hint();

  // Fixed on shard 0 only: shard 1 is still checked.
  src0_->exec("ALTER TABLE nokey REPLICA IDENTITY FULL", "noidentity");
  src1_->exec("ALTER TABLE nokey ADD PRIMARY KEY (id); ALTER TABLE nokey REPLICA IDENTITY NOTHING",
              "noidentity");
  e = failure(config(), request());
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(has(e.what(), "\"public\".\"nokey\" has REPLICA IDENTITY NOTHING")) << e.what();
  EXPECT_TRUE(has(e.detail(), "shard 1 of source cluster \"prod\"")) << e.detail();
}

TEST_F(Preflight, TableDifferingBetweenSourceShardsIsRefused) {
  make_databases("drift");
  src1_->exec("ALTER TABLE countries ADD COLUMN population bigint", "drift");
  Error e = failure(config(), request());
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(has(e.what(), "table \"public\".\"countries\" differs between")) << e.what();
  EXPECT_TRUE(has(e.detail(), "\"population\"")) << e.detail();
}

TEST_F(Preflight, ShardingColumnMissingIsRefused) {
  make_databases("nocolumn");
  Error e = failure(config(std::string(kRules) + rule("countries", "country_id", "bigint")), request());
  EXPECT_EQ(e.sqlstate(), "42703");
  EXPECT_EQ(std::string(e.what()),
            "sharding column \"country_id\" does not exist in table \"public\".\"countries\"");
  EXPECT_TRUE(has(e.detail(), "\"code\", \"name\"")) << e.detail();
}

TEST_F(Preflight, ShardingColumnOfUnsupportedTypeIsRefused) {
  make_databases("badtype");
  Error e = failure(config(std::string(kRules) + rule("orders", "total", "bigint")), request());
  EXPECT_EQ(e.sqlstate(), "42804");
  EXPECT_TRUE(has(e.what(), "sharding column \"total\" of table \"public\".\"orders\" has type numeric"))
      << e.what();
}

TEST_F(Preflight, RuleTypeMismatchIsRefused) {
  make_databases("mismatch");
  Error e = failure(config(std::string(kRules) + rule("countries", "code", "bigint")), request());
  EXPECT_EQ(e.sqlstate(), "42804");
  EXPECT_TRUE(has(e.what(), "sharding column \"code\" of table \"public\".\"countries\" has type text"))
      << e.what();
  EXPECT_TRUE(has(e.hint(), "data_type = \"varchar\"")) << e.hint();
}

TEST_F(Preflight, TwoColumnRulesMatchingOneTableAreAmbiguous) {
  make_databases("ambiguous");
  Error e = failure(config(std::string(kRules) + rule("", "id", "bigint")), request());
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(
      has(e.what(), "more than one sharding rule applies to table \"Odd Schema\".\"Line \"\"Items\"\"\""))
      << e.what();
}

TEST_F(Preflight, NullShardingKeysAreRefused) {
  make_databases("nullkey");
  src1_->exec("INSERT INTO \"Odd Schema\".\"Line \"\"Items\"\"\" VALUES (100, NULL)", "nullkey");
  Error e = failure(config(), request());
  EXPECT_EQ(e.sqlstate(), "22004");
  EXPECT_TRUE(has(e.what(),
                  "sharding column \"user_id\" of table \"Odd Schema\".\"Line \"\"Items\"\"\" holds NULL "
                  "on shard 1 of source cluster \"prod\""))
      << e.what();
  EXPECT_TRUE(has(e.hint(), "SET NOT NULL")) << e.hint();
}

// ---------------------------------------------------------------------------------------------
// Destination

TEST_F(Preflight, NonEmptyDestinationTableIsRefused) {
  make_databases("notempty");
  dst1_->exec("CREATE TABLE orders (id bigint PRIMARY KEY); INSERT INTO orders VALUES (1)", "notempty");
  Error e = failure(config(), request());
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(has(e.what(), "table \"public\".\"orders\" on shard 1 of destination cluster \"prod_2x\""))
      << e.what();
  EXPECT_TRUE(has(e.hint(), "TRUNCATE \"public\".\"orders\"")) << e.hint();
}

TEST_F(Preflight, DestinationEncodingDifferentFromSourceIsRefused) {
  make_databases("encoding");
  dst1_->exec(
      "CREATE DATABASE encoding_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
  Config cfg = config_with(source_entries(), db_entry("prod_2x", 0, *dst0_, db_) +
                                                 db_entry("prod_2x", 1, *dst1_, "encoding_latin1"));
  Error e = failure(cfg, request());
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(has(e.what(), "the encoding of shard 1 of destination cluster \"prod_2x\"")) << e.what();
  EXPECT_TRUE(has(e.detail(), "LATIN1")) << e.detail();
  EXPECT_TRUE(has(e.detail(), "UTF8")) << e.detail();
}

TEST_F(Preflight, StopRequestInterruptsIt) {
  make_databases("stop");
  SimpleTaskContext ctx([] { return true; });
  try {
    preflight(config(), request(), ctx);
    ADD_FAILURE() << "pre-flight succeeded";
  } catch (const Error &e) {
    EXPECT_EQ(e.sqlstate(), "57014");
  }
}

// ---------------------------------------------------------------------------------------------
// rule_for_table alone

ShardedTable make_rule(const std::string &schema, const std::string &table, const std::string &column) {
  ShardedTable r;
  r.database = "prod_2x";
  r.schema = schema;
  r.table = table;
  r.column = column;
  return r;
}

TEST(PreflightRules, NamedRuleWinsThenSchemaThenColumnOnly) {
  ShardedTable by_column = make_rule("", "", "user_id");
  ShardedTable named = make_rule("", "orders", "id");
  ShardedTable named_in_schema = make_rule("sales", "orders", "region_id");
  std::vector<const ShardedTable *> rules{&by_column, &named, &named_in_schema};
  Names cols{"id", "user_id", "region_id"};
  EXPECT_EQ(rule_for_table(rules, "public", "orders", cols), &named);
  EXPECT_EQ(rule_for_table(rules, "sales", "orders", cols), &named_in_schema);
  EXPECT_EQ(rule_for_table(rules, "public", "items", cols), &by_column);
  EXPECT_EQ(rule_for_table(rules, "public", "items", Names{"id"}), nullptr);  // omnisharded

  // Two rules naming one table without a schema: one with the schema settles it.
  ShardedTable named_again = make_rule("", "orders", "user_id");
  rules.push_back(&named_again);
  EXPECT_EQ(rule_for_table(rules, "sales", "orders", cols), &named_in_schema);
  Error e = error_of([&] { rule_for_table(rules, "public", "orders", cols); });
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(has(e.what(), "table \"public\".\"orders\"")) << e.what();
}

TEST(PreflightRules, ConflictsAndMissingColumns) {
  ShardedTable a = make_rule("", "", "user_id");
  ShardedTable b = make_rule("", "", "tenant_id");
  std::vector<const ShardedTable *> rules{&a, &b};
  Error e = error_of([&] { rule_for_table(rules, "public", "t", Names{"user_id", "tenant_id"}); });
  EXPECT_EQ(e.sqlstate(), "55000");
  EXPECT_TRUE(has(e.what(), "\"public\".\"t\"")) << e.what();
  EXPECT_EQ(rule_for_table(rules, "public", "t", Names{"tenant_id"}), &b);

  ShardedTable named = make_rule("", "t", "missing");
  rules.push_back(&named);
  e = error_of([&] { rule_for_table(rules, "public", "t", Names{"user_id"}); });
  EXPECT_EQ(e.sqlstate(), "42703");
  EXPECT_EQ(std::string(e.what()), "sharding column \"missing\" does not exist in table \"public\".\"t\"");
}

}  // namespace
}  // namespace pgdog_reshard
