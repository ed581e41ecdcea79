// Bad input through SQL on the control node: reshard() and reshard_copy_data() with an unknown
// cluster, the same cluster twice, a non-empty destination, a publication missing on one source
// shard, a table without replica identity, a missing or unhashable sharding column, an unreachable
// host, a wrong password, wal_level = replica, no free replication slot; and reshard_load_config()
// with a broken pgdog.toml. Each must fail in the caller with its SQLSTATE and a message naming the
// object, and leave nothing behind: no task, and on every server no slot, replication origin,
// publication, schema, relation or database that was not there before (refused_untouched()).
//
// The control node and the four shard servers are shared by the suite; each test gets databases
// of its own (sources cloned from a template holding the fixture) so no test sees another's.
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/sql.h"
#include "harness.h"
#include "reshard_cluster.h"

namespace pgdog_reshard::test {
namespace {

constexpr const char *kPwUser = "bad_input_pw_user";
constexpr const char *kRightPassword = "Right-Bad-Input-7f3a";
constexpr const char *kWrongPassword = "Wrong-Bad-Input-91c4";

// Two sharded tables (bigint keys), columns of types no sharding key may have, an omnisharded
// table, and the publication every test streams from.
constexpr const char *kSourceSchema = R"sql(
CREATE TABLE users (id bigint PRIMARY KEY, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, total numeric NOT NULL,
                     weight float8 NOT NULL, paid boolean NOT NULL);
CREATE TABLE countries (code text PRIMARY KEY, name text);
INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 50) g;
INSERT INTO orders SELECT g, 1 + g % 50, g, g / 3.0, g % 2 = 0 FROM generate_series(1, 100) g;
INSERT INTO countries VALUES ('fr', 'France'), ('jp', 'Japan');
CREATE PUBLICATION pub FOR ALL TABLES;
)sql";

std::string rule(const std::string &table, const std::string &column, const std::string &type) {
  return "\n[[sharded_tables]]\ndatabase = \"prod_2x\"\nname = \"" + table + "\"\ncolumn = \"" + column +
         "\"\ndata_type = \"" + type + "\"\n";
}

const std::string kUsersRule = rule("users", "id", "bigint");
const std::string kRules = kUsersRule + rule("orders", "user_id", "bigint");

const std::string kUsers = users_toml("prod_2x");

const char *const kArgs = "'prod', 'prod_2x', 'pub'";

bool has(const std::string &text, const std::string &needle) { return text.find(needle) != std::string::npos; }

// Everything a refused call must leave as it was on one server, seen from one database: slots,
// replication origins, publications, subscriptions, databases, roles, and every schema and relation
// outside the system ones (a table created on a destination shows here).
std::string footprint(const PgInstance &pg, const std::string &db) {
  return pg.value(R"sql(
SELECT concat_ws(E'\n',
  'slots: ' || (SELECT coalesce(string_agg(slot_name, ',' ORDER BY slot_name), '') FROM pg_replication_slots),
  'origins: ' || (SELECT coalesce(string_agg(roname, ',' ORDER BY roname), '') FROM pg_replication_origin),
  'publications: ' || (SELECT coalesce(string_agg(pubname, ',' ORDER BY pubname), '') FROM pg_publication),
  'subscriptions: ' || (SELECT coalesce(string_agg(subname, ',' ORDER BY subname), '') FROM pg_subscription),
  'databases: ' || (SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database),
  'roles: ' || (SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles),
  'schemas: ' || (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace
                  WHERE nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'),
  'relations: ' || (SELECT coalesce(string_agg(format('%I.%I:%s', n.nspname, c.relname, c.relkind), ','
                                               ORDER BY n.nspname, c.relname), '')
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                      AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'))
)sql",
                  db);
}

InstanceOptions named(const std::string &name, std::vector<std::string> conf = {}) {
  InstanceOptions options;
  options.name = name;
  options.extra_conf = std::move(conf);
  return options;
}

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    control_ = std::make_unique<PgInstance>([] {
      InstanceOptions o = named("bad_input_control");
      o.preload_extension = true;
      return o;
    }());
    control_->exec("CREATE EXTENSION pgdog_reshard");
    InstanceOptions src0 = named("bad_input_src0");
    // The password user must authenticate; every other user keeps the harness's trust rules.
    src0.hba_lines = {std::string("host all ") + kPwUser + " 127.0.0.1/32 scram-sha-256"};
    src0_ = std::make_unique<PgInstance>(src0);
    src1_ = std::make_unique<PgInstance>(named("bad_input_src1"));
    dst0_ = std::make_unique<PgInstance>(named("bad_input_dst0"));
    dst1_ = std::make_unique<PgInstance>(named("bad_input_dst1"));
    for (PgInstance *src : {src0_.get(), src1_.get()}) {
      src->exec("CREATE DATABASE fixture");
      src->exec(kSourceSchema, "fixture");
    }
    src0_->exec(std::string("CREATE ROLE ") + kPwUser + " LOGIN SUPERUSER REPLICATION PASSWORD '" + kRightPassword + "'");
  }
  static void TearDownTestSuite() {
    for (auto *pg : {&control_, &src0_, &src1_, &dst0_, &dst1_}) pg->reset();
  }

  // Fresh databases named `db`: sources cloned from the fixture, destinations empty.
  void make_databases(const std::string &db) {
    db_ = db;
    for (PgInstance *src : {src0_.get(), src1_.get()}) src->exec("CREATE DATABASE " + db + " TEMPLATE fixture");
    for (PgInstance *dst : {dst0_.get(), dst1_.get()}) dst->exec("CREATE DATABASE " + db);
  }

  std::string sources() const { return database_entry("prod", 0, *src0_, db_) + database_entry("prod", 1, *src1_, db_); }
  std::string destinations() const { return database_entry("prod_2x", 0, *dst0_, db_) + database_entry("prod_2x", 1, *dst1_, db_); }

  void load(const std::string &databases, const std::string &rules = kRules) const {
    control_->exec("SELECT reshard_load_config(" + quote_literal(databases + rules) + ", " + quote_literal(kUsers) + ")");
  }

  // Every (server, database) a refused call must leave as it was.
  std::vector<std::pair<const PgInstance *, std::string>> places(const std::vector<const PgInstance *> &extra) const {
    std::vector<std::pair<const PgInstance *, std::string>> out;
    for (const PgInstance *pg : {src0_.get(), src1_.get(), dst0_.get(), dst1_.get()}) {
      out.emplace_back(pg, "postgres");
      if (!db_.empty()) out.emplace_back(pg, db_);
    }
    for (const PgInstance *pg : extra) out.emplace_back(pg, "postgres");
    out.emplace_back(control_.get(), "postgres");
    return out;
  }

  // THE check of this file: `sql` fails on the control node and creates nothing anywhere: no task
  // (reshard_status, and the catalog behind it), and on every server of `places` no slot, origin,
  // publication, table, schema, database or role more or less than before.
  ServerError refused_untouched(const std::string &sql, const std::vector<const PgInstance *> &extra = {}) const {
    auto watched = places(extra);
    std::vector<std::string> before;
    for (const auto &[pg, db] : watched) before.push_back(footprint(*pg, db));
    const std::string tasks_before = control_->value("SELECT count(*) FROM pgdog_reshard.tasks");
    ServerError error("", "", "", "");
    try {
      error = control_->error_of(sql);
    } catch (const std::exception &e) {
      ADD_FAILURE() << "not refused: " << sql << ": " << e.what();
    }
    EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_status"), "0") << "a task is left after: " << sql;
    EXPECT_EQ(control_->value("SELECT count(*) FROM pgdog_reshard.tasks"), tasks_before) << sql;
    EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_replication_slots"), "0") << sql;
    for (size_t i = 0; i < watched.size(); i++) {
      EXPECT_EQ(footprint(*watched[i].first, watched[i].second), before[i])
          << "changed by " << sql << " on " << watched[i].first->name() << "/" << watched[i].second;
    }
    return error;
  }

  // reshard(args) and reshard_copy_data(args) both refused with `sqlstate`, each message naming
  // every needle, nothing created; returns reshard_copy_data's error.
  ServerError refused(const std::string &sqlstate, const std::vector<std::string> &needles,
                      const std::vector<const PgInstance *> &extra = {}, const std::string &args = kArgs) const {
    ServerError last("", "", "", "");
    for (const char *function : {"reshard", "reshard_copy_data"}) {
      SCOPED_TRACE(function);
      last = refused_untouched(std::string("SELECT ") + function + "(" + args + ")", extra);
      EXPECT_EQ(last.sqlstate, sqlstate) << last.what();
      for (const std::string &needle : needles) EXPECT_TRUE(has(last.message, needle)) << needle << " not in: " << last.what();
    }
    return last;
  }

  static std::unique_ptr<PgInstance> control_, src0_, src1_, dst0_, dst1_;
  std::string db_;
};

std::unique_ptr<PgInstance> BadInput::control_, BadInput::src0_, BadInput::src1_, BadInput::dst0_, BadInput::dst1_;

TEST_F(BadInput, UnknownCluster) {
  make_databases("unknown");
  load(sources() + destinations());
  refused("42704", {"\"nowhere\""}, {}, "'nowhere', 'prod_2x', 'pub'");
  refused("42704", {"\"nowhere\""}, {}, "'prod', 'nowhere', 'pub'");
}

TEST_F(BadInput, SourceEqualToDestination) {
  make_databases("same");
  load(sources() + destinations());
  refused("22023", {"\"prod\""}, {}, "'prod', 'prod', 'pub'");
}

TEST_F(BadInput, DestinationNotEmpty) {
  make_databases("notempty");
  dst1_->exec("CREATE TABLE orders (id bigint PRIMARY KEY); INSERT INTO orders VALUES (1)", db_);
  load(sources() + destinations());
  ServerError e = refused("55000", {"\"public\".\"orders\"", "shard 1 of destination cluster \"prod_2x\""});
  EXPECT_TRUE(has(e.hint, "TRUNCATE")) << e.what();
}

TEST_F(BadInput, PublicationMissingOnOneOfTwoSourceShards) {
  make_databases("nopub");
  src1_->exec("DROP PUBLICATION pub", db_);
  load(sources() + destinations());
  refused("42704", {"publication \"pub\"", "shard 1 of source cluster \"prod\""});
}

TEST_F(BadInput, TableWithoutReplicaIdentity) {
  make_databases("noidentity");
  for (PgInstance *src : {src0_.get(), src1_.get()}) src->exec("CREATE TABLE nokey (id bigint, note text)", db_);
  load(sources() + destinations());
  refused("55000", {"\"public\".\"nokey\"", "replica identity"});
}

TEST_F(BadInput, ShardingColumnMissing) {
  make_databases("nocolumn");
  load(sources() + destinations(), std::string(kRules) + rule("countries", "country_id", "bigint"));
  refused("42703", {"\"country_id\"", "\"public\".\"countries\""});
}

// numeric, float8 and boolean cannot be hashed: preflight reports 42804 (datatype_mismatch) for each.
TEST_F(BadInput, ShardingColumnOfUnsupportedType) {
  make_databases("badtype");
  const std::pair<const char *, const char *> columns[] = {{"total", "numeric"}, {"weight", "double precision"}, {"paid", "boolean"}};
  for (const auto &[column, type] : columns) {
    SCOPED_TRACE(column);
    // The only rule naming orders names this column.
    load(sources() + destinations(), kUsersRule + rule("orders", column, "bigint"));
    ServerError e = refused("42804", {std::string("\"") + column + "\"", "\"public\".\"orders\"", type});
  }
}

TEST_F(BadInput, UnreachableHost) {
  make_databases("unreachable");
  const int port = pick_free_port();  // nothing listens there, and this process never starts a server on it
  load(sources() + database_entry("prod_2x", 0, *dst0_, db_) + database_entry("prod_2x", 1, "127.0.0.1", port, db_));
  ServerError e = refused("08001", {"shard 1 of destination cluster \"prod_2x\"", "127.0.0.1:" + std::to_string(port)});
  EXPECT_FALSE(e.hint.empty());
}

TEST_F(BadInput, WrongPasswordIsNotShown) {
  make_databases("password");
  const std::string credentials = std::string("user = \"") + kPwUser + "\"\npassword = \"" + kWrongPassword + "\"\n";
  load(database_entry("prod", 0, *src0_, db_, credentials) + database_entry("prod", 1, *src1_, db_) + destinations());
  // Only what the refused calls logged: loading the configuration is security_test.cpp's matter.
  const size_t log_start = control_->log().size();
  ServerError e = refused("28P01", {"shard 0 of source cluster \"prod\""});
  for (const std::string &text : {e.message, e.detail, e.hint}) EXPECT_FALSE(has(text, kWrongPassword)) << text;
  EXPECT_EQ(lines_with(control_->log().substr(log_start), kWrongPassword), "")
      << "the refused calls put the password in the control node's log";
}

TEST_F(BadInput, WalLevelNotLogicalOnASource) {
  make_databases("wal");
  PgInstance replica_wal(named("bad_input_replica_wal", {"wal_level = replica"}));
  replica_wal.exec(kSourceSchema);
  load(database_entry("prod", 0, replica_wal, "postgres") + destinations());
  ServerError e = refused("55000", {"wal_level", "shard 0 of source cluster \"prod\""}, {&replica_wal});
  EXPECT_TRUE(has(e.hint, "wal_level = logical")) << e.what();
}

TEST_F(BadInput, NoFreeReplicationSlot) {
  make_databases("slots");
  PgInstance full(named("bad_input_full_slots", {"max_replication_slots = 1"}));
  full.exec(kSourceSchema);
  full.exec("SELECT pg_create_physical_replication_slot('taken')");  // the only one there is
  load(database_entry("prod", 0, full, "postgres") + destinations());
  ServerError e = refused("53400", {"replication slots", "shard 0 of source cluster \"prod\""}, {&full});
  EXPECT_TRUE(has(e.hint, "max_replication_slots")) << e.what();
}

// A broken pgdog.toml is refused whole (F0000, config_file_error) and the configuration loaded
// before stays the one in use, also when the broken line holds a password (not shown).
TEST_F(BadInput, MalformedConfigKeepsThePreviousOne) {
  make_databases("config");
  load(sources() + destinations());
  const std::string loaded = "SELECT string_agg(name || '/' || shard || '/' || port || '/' || database_name, ',' ORDER BY name, shard) FROM reshard_databases";
  const std::string before = control_->value(loaded);
  ASSERT_TRUE(has(before, "prod_2x/1/" + std::to_string(dst1_->port()) + "/config")) << before;

  const std::string broken[] = {
      "[[databases]\nname = \"broken\"\nhost = \"127.0.0.1\"\n",                    // unclosed table header
      "[[databases]]\nname = \"broken\"\nhost = \"127.0.0.1\"\nport = \"many\"\n",   // port not a number
      "[[databases]]\nname = \"broken\"\nhost = \"127.0.0.1\"\npassword = \"Leaky-Config-Pw-42\n",  // unterminated
  };
  for (const std::string &toml : broken) {
    SCOPED_TRACE(toml);
    ServerError e = refused_untouched("SELECT reshard_load_config(" + quote_literal(toml) + ", " + quote_literal(kUsers) + ")");
    EXPECT_EQ(e.sqlstate, "F0000") << e.what();
    EXPECT_FALSE(e.message.empty());
    for (const std::string &text : {e.message, e.detail, e.hint}) EXPECT_FALSE(has(text, "Leaky-Config-Pw-42")) << text;
    EXPECT_EQ(control_->value(loaded), before) << "the previous configuration was replaced";
  }
  // Still usable: a request against the kept configuration gets as far as pre-flight's checks.
  refused("22023", {"\"prod\""}, {}, "'prod', 'prod', 'pub'");
}

}  // namespace
}  // namespace pgdog_reshard::test
