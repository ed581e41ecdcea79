// reshard_copy_data end to end: a control node with the extension, N source shards, M destination
// shards, a schema covering the types and shapes users have; after the copy every row is on exactly
// the shard PostgreSQL's own satisfies_hash_partition (or the list/range rule) names, with identical
// content, and the source is unchanged.
#include <algorithm>
#include <memory>
#include <set>

#include <gtest/gtest.h>

#include "harness.h"

namespace pgdog_reshard::test {
namespace {

const char *kSchema = R"sql(
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE SCHEMA billing;
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text, created timestamptz);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id), total numeric(12,2),
  items jsonb, tags text[], status order_status NOT NULL DEFAULT 'new');
CREATE INDEX orders_user ON orders (user_id);
CREATE TABLE "Order Items" (id bigint PRIMARY KEY, user_id bigint NOT NULL, "select" integer, note text);
CREATE TABLE documents (id uuid PRIMARY KEY, user_id bigint NOT NULL, body text, payload bytea);
CREATE TABLE billing.accounts (account_key varchar(40) PRIMARY KEY, balance numeric, tier positive_int);
CREATE TABLE sessions (token uuid PRIMARY KEY, data jsonb);
CREATE TABLE tenants (tenant_id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE events (event_id bigint PRIMARY KEY, seq bigint GENERATED ALWAYS AS IDENTITY,
  region_id bigint NOT NULL, doubled bigint GENERATED ALWAYS AS (region_id * 2) STORED, at timestamptz);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE measurements (id bigint, user_id bigint NOT NULL, taken date NOT NULL, value float8,
  PRIMARY KEY (id, taken)) PARTITION BY RANGE (taken);
CREATE TABLE measurements_2024 PARTITION OF measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measurements_2025 PARTITION OF measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'trigger fired'; END $$;
CREATE TRIGGER users_touch BEFORE INSERT ON users FOR EACH ROW WHEN (NEW.name = 'never') EXECUTE FUNCTION touch();
CREATE PUBLICATION pgdog FOR ALL TABLES;
)sql";

// Rows of sharded tables go to source shard `shard` of `shards` by id; omnisharded tables to all.
std::string data_sql(int shard, int shards) {
  std::string mine = "g % " + std::to_string(shards) + " = " + std::to_string(shard);
  return R"sql(
INSERT INTO users SELECT g, 'user' || g || '@example.com', CASE WHEN g % 7 = 0 THEN NULL ELSE 'User ' || g END,
  '2024-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 3000) g WHERE )sql" + mine + R"sql(;
INSERT INTO orders SELECT g, g, (g % 1000) / 7.0, jsonb_build_object('n', g, 'k', ARRAY[g, g + 1]),
  ARRAY['t' || g % 5, NULL], (ARRAY['new', 'paid', 'shipped'])[1 + g % 3]::order_status
  FROM generate_series(1, 3000) g WHERE )sql" + mine + R"sql(;
INSERT INTO "Order Items" SELECT g, g % 3000 + 1, g % 11, CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END
  FROM generate_series(1, 4000) g WHERE (g % 3000 + 1) % )sql" + std::to_string(shards) + " = " + std::to_string(shard) + R"sql(;
INSERT INTO documents SELECT md5('doc' || g)::uuid, g,
  CASE WHEN g % 500 = 0 THEN repeat(md5(g::text), 4000) ELSE 'short ' || g END, decode(md5(g::text), 'hex')
  FROM generate_series(1, 2000) g WHERE )sql" + mine + R"sql(;
INSERT INTO billing.accounts SELECT 'acct-' || g, g * 1.5, 1 + g % 9 FROM generate_series(1, 1500) g WHERE )sql" + mine + R"sql(;
INSERT INTO sessions SELECT md5('s' || g)::uuid, jsonb_build_object('g', g) FROM generate_series(1, 1500) g WHERE )sql" + mine + R"sql(;
INSERT INTO tenants SELECT g, 'tenant ' || g FROM generate_series(1, 8) g WHERE )sql" + mine + R"sql(;
INSERT INTO events (event_id, region_id, at) SELECT g, g % 250, now() FROM generate_series(1, 2000) g WHERE )sql" + mine + R"sql(;
INSERT INTO measurements SELECT g, g % 3000 + 1, '2024-06-01'::date + (g % 400), g / 3.0
  FROM generate_series(1, 3000) g WHERE )sql" + mine + R"sql(;
INSERT INTO countries VALUES ('fr', 'France'), ('de', 'Germany'), ('jp', 'Japan'), ('br', 'Brazil');
)sql";
}

struct Table {
  const char *name;     // qualified, quoted as needed
  const char *key;      // sharding column, "" = omnisharded
  const char *key_type; // for the hash oracle
  const char *order;    // a total order
};

const Table kTables[] = {
    {"users", "id", "bigint", "id"},
    {"orders", "user_id", "bigint", "id"},
    {"\"Order Items\"", "user_id", "bigint", "id"},
    {"documents", "user_id", "bigint", "id"},
    {"billing.accounts", "account_key", "varchar", "account_key"},
    {"sessions", "token", "uuid", "token"},
    {"measurements", "user_id", "bigint", "id, taken"},
    {"tenants", "", "", "tenant_id"},  // list rule, checked separately
    {"events", "", "", "event_id"},    // range rule, checked separately
    {"countries", "", "", "code"},     // omnisharded
};

std::string config_toml(const std::vector<std::unique_ptr<PgInstance>> &sources,
                        const std::vector<std::unique_ptr<PgInstance>> &destinations) {
  std::string toml = cluster_entries("prod", sources) + cluster_entries("prod_new", destinations);
  int last = static_cast<int>(destinations.size()) - 1;
  toml += R"(
[[sharded_tables]]
database = "prod_new"
column = "user_id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_new"
name = "users"
column = "id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_new"
schema = "billing"
name = "accounts"
column = "account_key"
data_type = "varchar"

[[sharded_tables]]
database = "prod_new"
name = "sessions"
column = "token"
data_type = "uuid"

[[sharded_tables]]
database = "prod_new"
name = "tenants"
column = "tenant_id"
data_type = "bigint"

[[sharded_tables.mapping]]
values = [1, 2, 3, 4]
shard = 0

[[sharded_tables.mapping]]
values = [5, 6, 7, 8]
shard = )" + std::to_string(last) + R"(

[[sharded_tables]]
database = "prod_new"
name = "events"
column = "region_id"
data_type = "bigint"

[[sharded_tables.mapping]]
start = 0
end = 100
shard = 0

[[sharded_tables.mapping]]
start = 100
shard = )" + std::to_string(last) + "\n";
  return toml;
}

const char *kUsers = R"(
[[users]]
name = "postgres"
database = "prod"
[[users]]
name = "postgres"
database = "prod_new"
)";

std::vector<std::string> row_hashes(const PgInstance &pg, const Table &t) {
  std::vector<std::string> out;
  for (const Row &r : pg.query(std::string("SELECT md5(x::text) FROM ") + t.name + " x")) out.push_back(*r[0]);
  return out;
}

// What the catalog of a source looks like, to show the copy changed nothing but slots.
std::string catalog_fingerprint(const PgInstance &pg) {
  return pg.value(
      "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM ("
      " SELECT c.oid::text || c.relname || c.relkind::text || c.relnatts AS x FROM pg_class c"
      " WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)"
      " AND c.relname NOT LIKE 'pg_toast%'"
      " UNION ALL SELECT conname || pg_get_constraintdef(oid) FROM pg_constraint"
      " UNION ALL SELECT pubname FROM pg_publication) s");
}

std::string write_counters(const PgInstance &pg) {
  return pg.value(
      "SELECT string_agg(relname || ':' || n_tup_ins || '/' || n_tup_upd || '/' || n_tup_del, ',' ORDER BY relname)"
      " FROM pg_stat_user_tables");
}

class CopyData : public ::testing::TestWithParam<std::pair<int, int>> {};

void wait_for_state(const PgInstance &control, const std::string &task, const std::string &state) {
  std::string last;
  bool reached = wait_until([&] {
    last = control.value("SELECT state || ' ' || coalesce(phase, '') || ' ' || coalesce(error, '') FROM reshard_status WHERE id = " + task);
    return last.rfind(state, 0) == 0 || last.rfind("failed", 0) == 0;
  }, 180000);
  ASSERT_TRUE(reached) << "task " << task << " stuck at: " << last << "\n" << control.log();
  ASSERT_EQ(last.rfind(state, 0), 0u) << "task " << task << ": " << last << "\n" << control.log();
}

void copy_and_check(const PgInstance &control, int n, int m);

TEST_P(CopyData, EveryRowOnItsShardWithIdenticalContent) {
  auto [n, m] = GetParam();
  InstanceOptions control_options;
  control_options.name = "control";
  control_options.preload_extension = true;
  PgInstance control(control_options);
  try {
    copy_and_check(control, n, m);
  } catch (const std::exception &e) {
    FAIL() << e.what() << "\ncontrol node log:\n" << control.log();
  }
}

void copy_and_check(const PgInstance &control, int n, int m) {
  std::vector<std::unique_ptr<PgInstance>> sources, destinations;
  for (int i = 0; i < n; i++) {
    InstanceOptions o;
    o.name = "src" + std::to_string(i);
    sources.push_back(std::make_unique<PgInstance>(o));
    sources.back()->exec(kSchema);
    sources.back()->exec(data_sql(i, n));
    sources.back()->exec("ANALYZE");
  }
  for (int i = 0; i < m; i++) {
    InstanceOptions o;
    o.name = "dst" + std::to_string(i);
    destinations.push_back(std::make_unique<PgInstance>(o));
  }
  control.exec("CREATE EXTENSION pgdog_reshard");
  control.exec("SELECT reshard_load_config($t$" + config_toml(sources, destinations) + "$t$, $u$" + kUsers + "$u$)");

  std::vector<std::string> catalogs_before, counters_before;
  for (auto &s : sources) {
    catalogs_before.push_back(catalog_fingerprint(*s));
    counters_before.push_back(write_counters(*s));
  }

  std::string task = control.value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  wait_for_state(control, task, "replicating");

  // Every table copy is done, with rows counted.
  EXPECT_EQ(control.value("SELECT count(*) FROM reshard_table_copies WHERE task_id = " + task + " AND state <> 'done'"), "0");
  EXPECT_EQ(control.value("SELECT count(*) FROM reshard_table_copies WHERE task_id = " + task + " AND watermark IS NULL"), "0");
  EXPECT_EQ(control.value("SELECT progress FROM reshard_status WHERE id = " + task), "100.0");
  // A permanent slot on every source shard, recorded.
  EXPECT_EQ(control.value("SELECT count(*) FROM reshard_replication_slots WHERE task_id = " + task + " AND NOT temporary"),
            std::to_string(n));
  // Each table copy's temporary slot, recorded on the server it read, and gone with its session.
  EXPECT_EQ(control.value("SELECT count(*) > 0 AND count(*) FILTER (WHERE dropped_at IS NULL) = 0"
                          " FROM reshard_replication_slots WHERE temporary AND task_id = " + task),
            "t");
  for (auto &s : sources) {
    EXPECT_EQ(s->value("SELECT count(*) FROM pg_replication_slots WHERE NOT temporary"), "1");
  }

  for (const Table &t : kTables) {
    SCOPED_TRACE(t.name);
    // Content: the multiset of rows across destinations equals the source's (omnisharded: per shard).
    std::vector<std::string> expected;
    if (std::string(t.name) == "countries") {
      expected = row_hashes(*sources[0], t);
    } else {
      for (auto &s : sources) {
        auto h = row_hashes(*s, t);
        expected.insert(expected.end(), h.begin(), h.end());
      }
    }
    std::sort(expected.begin(), expected.end());
    std::vector<std::string> actual;
    for (auto &d : destinations) {
      auto h = row_hashes(*d, t);
      if (std::string(t.name) == "countries") {
        std::sort(h.begin(), h.end());
        EXPECT_EQ(h, expected) << "omnisharded table incomplete on a shard";
      } else {
        actual.insert(actual.end(), h.begin(), h.end());
      }
    }
    if (std::string(t.name) != "countries") {
      std::sort(actual.begin(), actual.end());
      EXPECT_EQ(actual.size(), expected.size());
      EXPECT_TRUE(actual == expected) << "rows differ between source and destinations";
    }
    // Placement by PostgreSQL's own partition hash.
    if (t.key[0] != '\0') {
      for (int d = 0; d < m; d++) {
        destinations[d]->exec(std::string("CREATE TABLE IF NOT EXISTS oracle_") + t.key_type + " (k " + t.key_type +
                              ") PARTITION BY HASH (k)");
        std::string misplaced = destinations[d]->value(
            std::string("SELECT count(*) FROM ") + t.name + " WHERE NOT satisfies_hash_partition('oracle_" + t.key_type +
            "'::regclass, " + std::to_string(m) + ", " + std::to_string(d) + ", " + t.key + "::" + t.key_type + ")");
        EXPECT_EQ(misplaced, "0") << "shard " << d;
      }
    }
  }
  // List and range rules.
  int last = m - 1;
  for (int d = 0; d < m; d++) {
    std::string wrong_tenants = destinations[d]->value(
        "SELECT count(*) FROM tenants WHERE CASE WHEN tenant_id <= 4 THEN 0 ELSE " + std::to_string(last) + " END <> " +
        std::to_string(d));
    EXPECT_EQ(wrong_tenants, "0") << "shard " << d;
    std::string wrong_events = destinations[d]->value(
        "SELECT count(*) FROM events WHERE CASE WHEN region_id < 100 THEN 0 ELSE " + std::to_string(last) + " END <> " +
        std::to_string(d));
    EXPECT_EQ(wrong_events, "0") << "shard " << d;
    // Indexes, constraints and foreign keys exist on every shard, as on the source.
    for (const char *q : {"SELECT count(*) FROM pg_indexes WHERE schemaname IN ('public', 'billing')",
                          "SELECT count(*) FROM pg_constraint WHERE contype = 'f'",
                          "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"}) {
      EXPECT_EQ(destinations[d]->value(q), sources[0]->value(q)) << q << " on shard " << d;
    }
  }

  // The source is unchanged: same catalog, no writes; only the slot is new.
  for (int i = 0; i < n; i++) {
    EXPECT_EQ(catalog_fingerprint(*sources[i]), catalogs_before[i]);
    EXPECT_EQ(write_counters(*sources[i]), counters_before[i]);
  }

  // Stopping the task drops its slots.
  EXPECT_EQ(control.value("SELECT reshard_stop(" + task + ")"), "t");
  wait_for_state(control, task, "cancelled");
  for (auto &s : sources) EXPECT_EQ(s->value("SELECT count(*) FROM pg_replication_slots"), "0");
}

INSTANTIATE_TEST_SUITE_P(Shards, CopyData,
                         ::testing::Values(std::make_pair(1, 2), std::make_pair(2, 3), std::make_pair(3, 1)),
                         [](const auto &info) {
                           return std::to_string(info.param.first) + "to" + std::to_string(info.param.second);
                         });

// Pre-flight runs in the caller's session: a bad request is an error there, and nothing is created.
TEST(CopyDataPreflight, MissingPublicationFailsInTheCallerAndCreatesNothing) {
  InstanceOptions control_options;
  control_options.name = "control";
  control_options.preload_extension = true;
  PgInstance control(control_options);
  std::vector<std::unique_ptr<PgInstance>> sources, destinations;
  sources.push_back(std::make_unique<PgInstance>());
  destinations.push_back(std::make_unique<PgInstance>());
  destinations.push_back(std::make_unique<PgInstance>());
  sources[0]->exec("CREATE TABLE t (id bigint PRIMARY KEY)");
  control.exec("CREATE EXTENSION pgdog_reshard");
  control.exec("SELECT reshard_load_config($t$" + config_toml(sources, destinations) + "$t$, $u$" + kUsers + "$u$)");
  ServerError e = control.error_of("SELECT reshard_copy_data('prod', 'prod_new', 'no_such_pub')");
  EXPECT_EQ(e.sqlstate, "42704") << e.message;
  EXPECT_NE(e.message.find("no_such_pub"), std::string::npos) << e.message;
  EXPECT_EQ(control.value("SELECT count(*) FROM reshard_status"), "0");
  EXPECT_EQ(sources[0]->value("SELECT count(*) FROM pg_replication_slots"), "0");
  for (auto &d : destinations) EXPECT_EQ(d->value("SELECT count(*) FROM pg_class WHERE relname = 't'"), "0");
  ServerError unknown = control.error_of("SELECT reshard_copy_data('prod', 'nope', 'pgdog')");
  EXPECT_EQ(unknown.sqlstate, "42704");
}

}  // namespace
}  // namespace pgdog_reshard::test
