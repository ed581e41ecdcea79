// Schema sync (src/engine/schema_sync.h) between real PostgreSQL 15 instances: a source with a rich
// schema, pg_dump through dump_schema, and the two phases applied on two destination shards,
// compared catalog by catalog with the source. Also: re-running, failures, cancellation, and
// pg_dump's own failures.
#include <dirent.h>
#include <gtest/gtest.h>

#include "expect_error.h"
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "core/pg.h"
#include "engine/schema_sync.h"
#include "harness.h"

namespace pgdog_reshard {
namespace {

using test::InstanceOptions;
using test::PgInstance;
using test::Row;
using Clock = std::chrono::steady_clock;

constexpr const char *kSourceDb = "app";
constexpr const char *kDumper = "dumper";
constexpr const char *kDumperPassword = "Dump-Secret:9\\x7";  // ':' and '\' test the passfile escaping
constexpr const char *kLimited = "limited";
constexpr const char *kLimitedPassword = "Limited-Secret-5e1b";

// Every kind of object the phases must carry (test/unit/data/schema_dump_pg15.sql is its dump).
constexpr const char *kRichSchema = R"sql(
CREATE EXTENSION citext;
CREATE SCHEMA billing;
CREATE TYPE public.order_status AS ENUM ('new', 'paid', 'shipped');
CREATE DOMAIN public.positive_amount AS numeric(12,2) CHECK (VALUE > 0);
CREATE TYPE public.address AS (street text, city text, zip text);
CREATE SEQUENCE public.invoice_seq START 1000 INCREMENT 5;
CREATE TABLE public.customers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  email public.citext NOT NULL,
  name text DEFAULT 'it''s; unnamed',
  home public.address,
  tags text[] DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customers_email_idx ON public.customers (lower(email::text));
CREATE TABLE public.orders (
  id bigserial PRIMARY KEY,
  customer_id bigint NOT NULL REFERENCES public.customers(id),
  status public.order_status NOT NULL DEFAULT 'new',
  amount public.positive_amount,
  total numeric(14,4) CHECK (total >= 0),
  tax numeric(14,4) GENERATED ALWAYS AS (total * 0.2) STORED,
  details jsonb,
  blob bytea,
  invoice_no bigint DEFAULT nextval('public.invoice_seq'),
  updated_at timestamptz
);
CREATE INDEX orders_open_idx ON public.orders (customer_id) WHERE status <> 'shipped';
CREATE FUNCTION public.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now(); -- a comment; with a semicolon
  RETURN NEW;
END;
$$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON public.orders FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();
CREATE FUNCTION public.order_total(o public.orders) RETURNS numeric LANGUAGE sql STABLE
BEGIN ATOMIC
  SELECT o.total + coalesce(o.tax, 0);
  SELECT CASE WHEN o.total > 0 THEN o.total ELSE 0 END;
END;
ALTER TABLE public.orders REPLICA IDENTITY FULL;
CREATE TABLE public.events (
  id bigint NOT NULL,
  happened_at timestamptz NOT NULL,
  payload jsonb,
  PRIMARY KEY (id, happened_at)
) PARTITION BY RANGE (happened_at);
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE INDEX events_payload_idx ON public.events USING gin (payload);
CREATE TABLE public."Order Items" (
  "Id" integer PRIMARY KEY,
  "select" text,
  order_id bigint REFERENCES public.orders(id) ON DELETE CASCADE,
  qty integer CHECK (qty > 0),
  UNIQUE (order_id, "select")
);
CREATE TABLE billing.invoices (
  id integer PRIMARY KEY DEFAULT nextval('public.invoice_seq'),
  order_id bigint REFERENCES public.orders(id),
  amounts numeric[]
);
ALTER TABLE billing.invoices ENABLE ROW LEVEL SECURITY;
CREATE POLICY invoices_all ON billing.invoices USING (true);
CREATE TABLE public.audit_log (id bigserial PRIMARY KEY, note text);
CREATE RULE customers_audit AS ON DELETE TO public.customers DO ALSO (
  INSERT INTO public.audit_log (note) VALUES ('deleted; one');
  INSERT INTO public.audit_log (note) VALUES ('twice')
);
CREATE VIEW billing.open_orders AS SELECT id, customer_id FROM public.orders WHERE status <> 'shipped';
COMMENT ON TABLE public.orders IS 'Orders; one per checkout';
COMMENT ON COLUMN public.orders.status IS 'it''s the state';
COMMENT ON SCHEMA billing IS 'money /* not a comment */ -- nor this';
CREATE PUBLICATION everything FOR ALL TABLES;
CREATE TABLE public.settings (key text NOT NULL, value text);
CREATE UNIQUE INDEX settings_key_idx ON public.settings (key);
ALTER TABLE public.settings REPLICA IDENTITY USING INDEX settings_key_idx;
COMMENT ON INDEX public.orders_open_idx IS 'open; orders';
)sql";

constexpr const char *kUserSchemas = "('public', 'billing')";

std::string in_user_schemas(const std::string &column) {
  return column + " IN " + kUserSchemas;
}

// Catalog views of everything schema sync carries; equal rows on source and destination = same
// schema. Objects that belong to an extension (citext's functions) are the extension's business.
struct CatalogQuery {
  const char *what;
  std::string sql;
};

std::vector<CatalogQuery> definition_queries() {
  return {
      {"columns",
       "SELECT table_schema, table_name, column_name, ordinal_position, data_type, udt_name,"
       " column_default, is_nullable, is_identity, identity_generation, is_generated,"
       " generation_expression FROM information_schema.columns WHERE " +
           in_user_schemas("table_schema") + " ORDER BY 1, 2, 4"},
      {"types",
       "SELECT t.typname, t.typtype, format_type(t.oid, NULL),"
       " (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum e"
       "  WHERE e.enumtypid = t.oid)"
       " FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
       " WHERE " + in_user_schemas("n.nspname") + " AND t.typtype IN ('e', 'd', 'c') ORDER BY 1"},
      {"functions",
       "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p"
       " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE " + in_user_schemas("n.nspname") +
           " AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass"
           "  AND d.objid = p.oid AND d.deptype = 'e') ORDER BY 1"},
      {"partitions",
       "SELECT i.inhparent::regclass::text, i.inhrelid::regclass::text,"
       " pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
       " WHERE c.relkind IN ('r', 'p') ORDER BY 1, 2"},
      {"views",
       "SELECT schemaname, viewname, definition FROM pg_views WHERE " +
           in_user_schemas("schemaname") + " ORDER BY 1, 2"},
      {"sequences",
       "SELECT schemaname, sequencename, start_value, increment_by, data_type::text FROM pg_sequences"
       " WHERE " + in_user_schemas("schemaname") + " ORDER BY 1, 2"},
      {"extensions", "SELECT extname FROM pg_extension ORDER BY 1"},
  };
}

std::vector<CatalogQuery> post_data_queries() {
  return {
      {"indexes",
       "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes WHERE " +
           in_user_schemas("schemaname") + " ORDER BY 1, 2, 3"},
      {"constraints",
       "SELECT n.nspname, CASE WHEN c.conrelid <> 0 THEN c.conrelid::regclass::text"
       " ELSE c.contypid::regtype::text END, c.conname, c.contype, pg_get_constraintdef(c.oid),"
       " c.convalidated FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
       " WHERE " + in_user_schemas("n.nspname") + " ORDER BY 1, 2, 3"},
      {"triggers",
       "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger"
       " WHERE NOT tgisinternal ORDER BY 1, 2"},
      {"relations",
       "SELECT c.oid::regclass::text, c.relkind, c.relreplident, c.relrowsecurity,"
       " (SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = c.oid AND indisreplident)"
       " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
       " WHERE " + in_user_schemas("n.nspname") + " ORDER BY 1"},
      {"rules",
       "SELECT tablename, rulename, definition FROM pg_rules WHERE " +
           in_user_schemas("schemaname") + " ORDER BY 1, 2"},
      {"policies",
       "SELECT schemaname, tablename, policyname, cmd, qual FROM pg_policies ORDER BY 1, 2, 3"},
      {"comments",
       "SELECT d.classoid::regclass::text, CASE WHEN d.classoid = 'pg_class'::regclass"
       " THEN d.objoid::regclass::text WHEN d.classoid = 'pg_namespace'::regclass"
       " THEN (SELECT nspname FROM pg_namespace WHERE oid = d.objoid)::text END, d.objsubid,"
       " d.description FROM pg_description d"
       " WHERE d.classoid IN ('pg_class'::regclass, 'pg_namespace'::regclass)"
       " AND d.objoid >= 16384 ORDER BY 1, 2, 3"},
  };
}

// Collects observer calls (from the worker threads) for the test to inspect.
class RecordingObserver : public SchemaSyncObserver {
 public:
  struct Event {
    int shard;
    SchemaPhase phase;
    size_t index;
    StatementOutcome outcome;
    std::string error;
  };

  void statement_started(int shard, SchemaPhase, size_t index, const SchemaStatement &) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (std::this_thread::get_id() == caller_) called_from_caller_ = true;
    started_.emplace_back(shard, index);
  }
  void statement_finished(int shard, SchemaPhase phase, size_t index, StatementOutcome outcome,
                          const std::string &error) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (std::this_thread::get_id() == caller_) called_from_caller_ = true;
    finished_.push_back({shard, phase, index, outcome, error});
  }

  std::vector<Event> finished() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return finished_;
  }
  size_t started_count(size_t index) const {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t n = 0;
    for (const auto &[shard, i] : started_) n += i == index;
    return n;
  }
  bool called_from_caller() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return called_from_caller_;
  }
  size_t count(StatementOutcome outcome) const {
    size_t n = 0;
    for (const Event &e : finished()) n += e.outcome == outcome;
    return n;
  }

 private:
  mutable std::mutex mutex_;
  std::thread::id caller_ = std::this_thread::get_id();
  bool called_from_caller_ = false;
  std::vector<std::pair<int, size_t>> started_;
  std::vector<Event> finished_;
};

bool has(const std::string &text, const std::string &needle) {
  return text.find(needle) != std::string::npos;
}

long elapsed_ms(Clock::time_point since) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count());
}

// Children of this process called `comm`, alive or zombie (from /proc/<pid>/stat).
std::vector<pid_t> children_named(const std::string &comm) {
  std::vector<pid_t> found;
  DIR *proc = opendir("/proc");
  if (!proc) return found;
  while (dirent *entry = readdir(proc)) {
    pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
    if (pid <= 0) continue;
    std::ifstream in("/proc/" + std::string(entry->d_name) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2) continue;
    if (ppid == getpid() && stat.substr(open + 1, close - open - 1) == comm) found.push_back(pid);
  }
  closedir(proc);
  return found;
}

class SchemaSync : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    InstanceOptions source_options;
    source_options.name = "schema_source";
    source_options.hba_lines = {std::string("host all ") + kDumper + " 127.0.0.1/32 scram-sha-256",
                                std::string("host all ") + kLimited + " 127.0.0.1/32 scram-sha-256"};
    source_ = std::make_unique<PgInstance>(source_options);
    source_->exec(std::string("CREATE ROLE ") + kDumper + " LOGIN SUPERUSER PASSWORD '" +
                  kDumperPassword + "'");
    source_->exec(std::string("CREATE ROLE ") + kLimited + " LOGIN PASSWORD '" + kLimitedPassword +
                  "'");
    source_->exec(std::string("CREATE DATABASE ") + kSourceDb);
    source_->exec(kRichSchema, kSourceDb);
    for (int i = 0; i < 2; i++) {
      InstanceOptions options;
      options.name = "schema_dest" + std::to_string(i);
      destinations_.push_back(std::make_unique<PgInstance>(options));
    }
  }
  static void TearDownTestSuite() {
    destinations_.clear();
    source_.reset();
  }

  // A fresh database per test on every destination, named after the test.
  void SetUp() override {
    db_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    for (char &c : db_) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (auto &dest : destinations_) dest->exec("CREATE DATABASE " + db_);
  }

  static ConnParams params(const PgInstance &instance, const std::string &db,
                           const std::string &user = "postgres", const std::string &password = "") {
    ConnParams p;
    p.host = instance.host();
    p.port = instance.port();
    p.dbname = db;
    p.user = user;
    p.password = password;
    p.application_name = "schema_sync_test";
    return p;
  }
  static ConnParams source_params() { return params(*source_, kSourceDb, kDumper, kDumperPassword); }
  std::vector<ConnParams> destination_params() const {
    std::vector<ConnParams> out;
    for (auto &dest : destinations_) out.push_back(params(*dest, db_));
    return out;
  }

  static SchemaDump dump() {
    SimpleTaskContext ctx;
    return dump_schema(source_params(), ctx, PGDOG_PG_BINDIR);
  }

  void apply(SchemaPhase phase, const std::vector<SchemaStatement> &statements,
             RecordingObserver &observer) {
    SimpleTaskContext ctx;
    apply_schema(phase, statements, destination_params(), observer, ctx);
  }

  std::vector<Row> on_source(const std::string &sql) const { return source_->query(sql, kSourceDb); }

  // Every query gives the same rows on the source and on each destination.
  void expect_same(const std::vector<CatalogQuery> &queries) const {
    for (const CatalogQuery &query : queries) {
      std::vector<Row> expected = on_source(query.sql);
      EXPECT_FALSE(expected.empty()) << query.what;
      for (size_t shard = 0; shard < destinations_.size(); shard++) {
        EXPECT_EQ(destinations_[shard]->query(query.sql, db_), expected)
            << query.what << " differ on shard " << shard;
      }
    }
  }

  std::string count_on(size_t shard, const std::string &sql) const {
    return destinations_[shard]->value(sql, db_);
  }

  static std::unique_ptr<PgInstance> source_;
  static std::vector<std::unique_ptr<PgInstance>> destinations_;
  std::string db_;
};

std::unique_ptr<PgInstance> SchemaSync::source_;
std::vector<std::unique_ptr<PgInstance>> SchemaSync::destinations_;

TEST_F(SchemaSync, PreThenPostReproducesTheSourceSchema) {
  SchemaDump schema = dump();
  ASSERT_FALSE(schema.pre.empty());
  ASSERT_FALSE(schema.post.empty());

  RecordingObserver pre_observer;
  apply(SchemaPhase::Pre, schema.pre, pre_observer);
  EXPECT_EQ(pre_observer.count(StatementOutcome::Done), 2 * schema.pre.size());
  EXPECT_FALSE(pre_observer.called_from_caller());

  // After pre: definitions and inline checks; nothing of post-data yet, primary keys included
  // (they are built after the data).
  expect_same(definition_queries());
  std::string checks =
      "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
      " WHERE contype = 'c' AND connamespace::regnamespace::text IN " + std::string(kUserSchemas) + " ORDER BY 1, 2";
  std::vector<Row> source_checks = on_source(checks);
  ASSERT_EQ(source_checks.size(), 3u);  // 2 table checks, 1 domain check
  for (size_t shard = 0; shard < 2; shard++) {
    EXPECT_EQ(destinations_[shard]->query(checks, db_), source_checks);
    EXPECT_EQ(count_on(shard, "SELECT count(*) FROM pg_constraint WHERE contype IN ('p', 'f', 'u')"
                              " AND connamespace::regnamespace::text IN " + std::string(kUserSchemas)),
              "0");
    EXPECT_EQ(count_on(shard, "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
                              " WHERE c.relnamespace::regnamespace::text IN " + std::string(kUserSchemas)),
              "0");
    EXPECT_EQ(count_on(shard, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"), "0");
    EXPECT_EQ(count_on(shard, "SELECT count(*) FROM pg_rules WHERE schemaname = 'public'"), "0");
    EXPECT_EQ(count_on(shard, "SELECT relreplident FROM pg_class WHERE oid = 'public.orders'::regclass"), "d");
    EXPECT_EQ(count_on(shard, "SELECT relrowsecurity FROM pg_class WHERE oid = 'billing.invoices'::regclass"), "f");
    EXPECT_EQ(count_on(shard, "SELECT count(*) FROM pg_publication"), "0");
  }

  RecordingObserver post_observer;
  apply(SchemaPhase::Post, schema.post, post_observer);
  EXPECT_EQ(post_observer.count(StatementOutcome::Done), 2 * schema.post.size());
  expect_same(definition_queries());
  expect_same(post_data_queries());
  for (size_t shard = 0; shard < 2; shard++) {
    EXPECT_EQ(count_on(shard, "SELECT relreplident FROM pg_class WHERE oid = 'public.orders'::regclass"), "f");
    EXPECT_EQ(count_on(shard, "SELECT count(*) FROM pg_publication"), "0");
  }
}

TEST_F(SchemaSync, RerunningBothPhasesFindsEverythingInPlace) {
  SchemaDump schema = dump();
  RecordingObserver first;
  apply(SchemaPhase::Pre, schema.pre, first);
  apply(SchemaPhase::Post, schema.post, first);
  ASSERT_EQ(first.count(StatementOutcome::Done), 2 * (schema.pre.size() + schema.post.size()));

  RecordingObserver again;
  apply(SchemaPhase::Pre, schema.pre, again);
  apply(SchemaPhase::Post, schema.post, again);
  EXPECT_EQ(again.count(StatementOutcome::Failed), 0u);
  EXPECT_EQ(again.count(StatementOutcome::Done) + again.count(StatementOutcome::AlreadyExists),
            2 * (schema.pre.size() + schema.post.size()));
  // Every CREATE (but CREATE EXTENSION IF NOT EXISTS) and every ADD CONSTRAINT, identity column
  // and partition attachment meets its object.
  for (const RecordingObserver::Event &event : again.finished()) {
    const auto &phase = event.phase == SchemaPhase::Pre ? schema.pre : schema.post;
    const std::string &sql = phase[event.index].sql;
    bool creates = (sql.rfind("CREATE ", 0) == 0 && !has(sql, "IF NOT EXISTS")) ||
                   has(sql, "ADD CONSTRAINT") || has(sql, "AS IDENTITY") ||
                   has(sql, "ATTACH PARTITION public.events_20");
    bool index_attach = sql.rfind("ALTER INDEX", 0) == 0;  // a no-op when already attached
    if (creates && !index_attach) {
      EXPECT_EQ(event.outcome, StatementOutcome::AlreadyExists) << sql;
      EXPECT_FALSE(event.error.empty());
    }
  }
  expect_same(definition_queries());
  expect_same(post_data_queries());
}

TEST_F(SchemaSync, AConflictingObjectStopsEverythingAndNamesTheShard) {
  // Shard 1 already has a sequence where the source has the table public.orders: CREATE TABLE
  // meets "relation already exists", the next statement about the table cannot work.
  destinations_[1]->exec("CREATE SEQUENCE public.orders", db_);
  SchemaDump schema = dump();
  RecordingObserver observer;
  Error error = error_of([&] { apply(SchemaPhase::Pre, schema.pre, observer); });
  EXPECT_EQ(error.sqlstate(), "42809");  // wrong_object_type: the server's own SQLSTATE
  EXPECT_TRUE(has(error.what(), "schema sync (pre) failed on destination shard 1")) << error.what();
  EXPECT_TRUE(has(error.what(), "COMMENT \"TABLE orders\" in schema \"public\"")) << error.what();
  EXPECT_TRUE(has(error.what(), "\"orders\" is not a table")) << error.what();
  EXPECT_TRUE(has(error.detail(), "statement: COMMENT ON TABLE public.orders")) << error.detail();

  size_t failed_on_shard1 = 0;
  for (const RecordingObserver::Event &event : observer.finished()) {
    if (event.outcome == StatementOutcome::Failed) {
      EXPECT_EQ(event.shard, 1);
      failed_on_shard1++;
    }
  }
  EXPECT_EQ(failed_on_shard1, 1u);
  // Shard 1 went no further than the failing statement.
  EXPECT_EQ(count_on(1, "SELECT count(*) FROM pg_proc WHERE proname = 'touch_updated_at'"), "0");
}

TEST_F(SchemaSync, FailureOnOneShardCancelsTheOthersAtOnce) {
  // Shard 0 sleeps in statement 0; shard 1 passes it (after 2 s, time enough for shard 0 to be
  // sleeping) and fails statement 1 (division by zero).
  destinations_[1]->exec("CREATE TABLE public.marker ()", db_);
  std::vector<SchemaStatement> statements = {
      {"SELECT pg_sleep(CASE WHEN to_regclass('public.marker') IS NULL THEN 60 ELSE 2 END);",
       "TEST", "public", "sleep"},
      {"SELECT 1 / 0 FROM pg_class WHERE relname = 'marker';", "TEST", "public", "divide"},
  };
  RecordingObserver observer;
  Clock::time_point start = Clock::now();
  Error error = error_of([&] { apply(SchemaPhase::Post, statements, observer); });
  EXPECT_LT(elapsed_ms(start), 10000);
  EXPECT_EQ(error.sqlstate(), "22012");
  EXPECT_TRUE(has(error.what(), "failed on destination shard 1 at statement 2 of 2 (TEST \"divide\""))
      << error.what();
  bool shard0_cancelled = false;
  for (const RecordingObserver::Event &event : observer.finished()) {
    if (event.shard == 0) shard0_cancelled = event.index == 0 && event.outcome == StatementOutcome::Cancelled;
  }
  EXPECT_TRUE(shard0_cancelled);
  EXPECT_TRUE(test::wait_until([&] {
    return count_on(0, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(CASE%'") == "0";
  }));
}

TEST_F(SchemaSync, StopFlagStopsPromptlyMidStatement) {
  std::vector<SchemaStatement> statements = {
      {"CREATE TABLE public.before_sleep (id int);", "TABLE", "public", "before_sleep"},
      {"SELECT pg_sleep(60);", "TEST", "", "sleep"},
      {"CREATE TABLE public.after_sleep (id int);", "TABLE", "public", "after_sleep"},
  };
  RecordingObserver observer;
  std::atomic<bool> stop{false};
  SimpleTaskContext ctx([&] { return stop.load(); });
  Clock::time_point stopped_at;
  std::thread stopper([&] {
    test::wait_until([&] { return observer.started_count(1) == 2; });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stopped_at = Clock::now();
    stop = true;
  });
  Error error = error_of([&] { apply_schema(SchemaPhase::Pre, statements, destination_params(), observer, ctx); });
  stopper.join();
  EXPECT_LT(elapsed_ms(stopped_at), 3000);
  EXPECT_EQ(error.sqlstate(), sqlstate::kQueryCanceled);
  EXPECT_EQ(observer.count(StatementOutcome::Cancelled), 2u);
  EXPECT_EQ(observer.count(StatementOutcome::Failed), 0u);
  for (size_t shard = 0; shard < 2; shard++) {
    EXPECT_EQ(count_on(shard, "SELECT count(*) FROM pg_class WHERE relname = 'before_sleep'"), "1");
    EXPECT_EQ(count_on(shard, "SELECT count(*) FROM pg_class WHERE relname = 'after_sleep'"), "0");
    EXPECT_TRUE(test::wait_until([&] {
      return count_on(shard, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60);'") == "0";
    })) << "the sleep still runs on shard " << shard;
  }
}

// The calling thread is woken after each statement, so a glue that writes the observer's queued
// events in check_interrupts shows progress while a phase runs, not only at its end.
TEST_F(SchemaSync, CallerChecksInterruptsAsStatementsFinish) {
  std::vector<SchemaStatement> statements = {
      {"CREATE TABLE public.first (id int);", "TABLE", "public", "first"},
      {"SELECT pg_sleep(0.5);", "TEST", "", "sleep"},
      {"CREATE TABLE public.last (id int);", "TABLE", "public", "last"},
  };
  RecordingObserver observer;
  struct ProgressContext : SimpleTaskContext {
    explicit ProgressContext(const RecordingObserver &observer) : observer(observer) {}
    void check_interrupts() override {
      size_t finished = observer.finished().size();
      if (finished > 0 && finished < 6) mid_phase_checks++;
      EXPECT_EQ(std::this_thread::get_id(), caller);
    }
    const RecordingObserver &observer;
    std::thread::id caller = std::this_thread::get_id();
    int mid_phase_checks = 0;
  } ctx(observer);
  apply_schema(SchemaPhase::Pre, statements, destination_params(), observer, ctx);
  EXPECT_EQ(observer.count(StatementOutcome::Done), 6u);
  EXPECT_GT(ctx.mid_phase_checks, 0);
}

TEST_F(SchemaSync, UnreachableShardIsNamed) {
  std::vector<ConnParams> targets = destination_params();
  targets[1].dbname = "no_such_database";
  SchemaDump schema = dump();
  RecordingObserver observer;
  SimpleTaskContext ctx;
  Error error = error_of([&] { apply_schema(SchemaPhase::Pre, schema.pre, targets, observer, ctx); });
  EXPECT_EQ(error.sqlstate(), sqlstate::kUnableToConnect);
  EXPECT_TRUE(has(error.what(), "schema sync (pre) on destination shard 1: could not connect"))
      << error.what();
}

TEST_F(SchemaSync, DumpUsesAPrivatePassfileThenRemovesIt) {
  // A private TMPDIR shows every file dump_schema leaves behind.
  char dir_template[] = "/tmp/pgdog_reshard_schema_tmp.XXXXXX";
  ASSERT_NE(mkdtemp(dir_template), nullptr);
  const char *old_tmpdir = getenv("TMPDIR");
  std::string saved = old_tmpdir ? old_tmpdir : "";
  setenv("TMPDIR", dir_template, 1);
  SchemaDump schema;
  try {
    schema = dump();  // the dumper's password is only good through scram: the passfile worked
  } catch (...) {
    old_tmpdir ? setenv("TMPDIR", saved.c_str(), 1) : unsetenv("TMPDIR");
    throw;
  }
  old_tmpdir ? setenv("TMPDIR", saved.c_str(), 1) : unsetenv("TMPDIR");
  EXPECT_FALSE(schema.pre.empty());
  DIR *dir = opendir(dir_template);
  ASSERT_NE(dir, nullptr);
  std::vector<std::string> left;
  while (dirent *entry = readdir(dir)) {
    if (std::strcmp(entry->d_name, ".") != 0 && std::strcmp(entry->d_name, "..") != 0) {
      left.push_back(entry->d_name);
    }
  }
  closedir(dir);
  rmdir(dir_template);
  EXPECT_TRUE(left.empty()) << left.front();
  EXPECT_TRUE(children_named("pg_dump").empty());
}

TEST_F(SchemaSync, PgDumpFailureNamesPgDumpWithoutThePassword) {
  // `limited` may connect but not read the tables: pg_dump fails locking them.
  SimpleTaskContext ctx;
  ConnParams limited = params(*source_, kSourceDb, kLimited, kLimitedPassword);
  Error error = error_of([&] { dump_schema(limited, ctx, PGDOG_PG_BINDIR); });
  EXPECT_EQ(error.sqlstate(), sqlstate::kSystemError);
  EXPECT_TRUE(has(error.what(), "pg_dump failed (exit code 1) for host=127.0.0.1")) << error.what();
  EXPECT_TRUE(has(error.what(), "permission denied")) << error.what();
  for (const std::string &text : {std::string(error.what()), error.detail(), error.hint()}) {
    EXPECT_FALSE(has(text, kLimitedPassword)) << text;
  }
  EXPECT_TRUE(children_named("pg_dump").empty());

  // A wrong database name is found by the version probe, before pg_dump runs.
  ConnParams wrong_db = params(*source_, "no_such_db", kDumper, kDumperPassword);
  Error db_error = error_of([&] { dump_schema(wrong_db, ctx, PGDOG_PG_BINDIR); });
  EXPECT_EQ(db_error.sqlstate(), sqlstate::kUnableToConnect);
  EXPECT_TRUE(has(db_error.what(), "no_such_db")) << db_error.what();
  for (const std::string &text : {std::string(db_error.what()), db_error.detail(), db_error.hint()}) {
    EXPECT_FALSE(has(text, kDumperPassword)) << text;
  }
}

TEST_F(SchemaSync, MissingPgDumpNamesThePackage) {
  SimpleTaskContext ctx;
  Error error = error_of([&] { dump_schema(source_params(), ctx, "/nonexistent/pg/bin"); });
  EXPECT_EQ(error.sqlstate(), sqlstate::kUndefinedFile);
  EXPECT_TRUE(has(error.what(), "pg_dump for PostgreSQL 15 not found at \"/nonexistent/pg/bin/pg_dump\""))
      << error.what();
  EXPECT_TRUE(has(error.hint(), "postgresql-client-15")) << error.hint();
}

TEST_F(SchemaSync, StopFlagKillsAndReapsPgDump) {
  // A session holding an exclusive lock on a table makes pg_dump wait for its own lock.
  PollWaiter waiter;
  Connection locker(params(*source_, kSourceDb), waiter);
  locker.exec("BEGIN; LOCK TABLE public.orders IN ACCESS EXCLUSIVE MODE");

  std::atomic<bool> stop{false};
  SimpleTaskContext ctx([&] { return stop.load(); });
  Clock::time_point stopped_at;
  std::thread stopper([&] {
    test::wait_until([&] {
      return source_->value("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'"
                            " AND wait_event_type = 'Lock'") == "1";
    });
    stopped_at = Clock::now();
    stop = true;
  });
  Error error = error_of([&] { dump_schema(source_params(), ctx, PGDOG_PG_BINDIR); });
  stopper.join();
  EXPECT_EQ(error.sqlstate(), sqlstate::kQueryCanceled);
  EXPECT_LT(elapsed_ms(stopped_at), 2000);
  EXPECT_TRUE(children_named("pg_dump").empty()) << "pg_dump left running or unreaped";
  // pg_dump cancelled its query on the way out: its backend is gone while the lock is still held.
  EXPECT_TRUE(test::wait_until([&] {
    return source_->value("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'") == "0";
  }));
  locker.exec("ROLLBACK");
}

}  // namespace
}  // namespace pgdog_reshard
