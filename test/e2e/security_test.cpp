// Security of the SQL surface, end to end:
//  - passwords never leak: shard users authenticating with scram-sha-256, a copy_data task run to
//    replicating, reshard_verify, a wrong password refused once; the password is then in no column
//    of any reshard_* view, no error field, no server's log, no pg_stat_activity query text;
//  - privileges: a user without pgdog_reshard_admin can call nothing and read nothing (42501); a
//    member of the role can verify and read reshard_status, but never the stored configuration;
//  - identifiers with quotes, spaces, unicode and reserved words copy and stream intact, on the
//    shard PostgreSQL's own hash partitioning names;
//  - a configuration whose names try SQL injection is only ever taken as names.
#include <libpq-fe.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/sql.h"
#include "harness.h"
#include "reshard_cluster.h"

namespace pgdog_reshard::test {
namespace {

constexpr const char *kSecret = "Sup3r-S3cret-pw-XYZ";
constexpr const char *kWrongSecret = "Wr0ng-S3cret-pw-QRS";
constexpr const char *kPwRole = "reshard_pw";

bool has(const std::string &text, const std::string &needle) { return text.find(needle) != std::string::npos; }

// The entries of a server log holding `needle`: each hit with the line its entry starts on (a
// statement or message over several lines continues on lines starting with a tab).
std::string log_hits(const std::string &log, const std::string &needle) {
  std::string out, entry_start;
  size_t start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    const std::string line = log.substr(start, end - start);
    if (line.empty() || line[0] != '\t') entry_start = line;
    if (has(line, needle)) out += (line == entry_start ? "" : entry_start.substr(0, 160) + " ... ") + line + "\n";
    start = end + 1;
  }
  return out;
}

// What a statement run as some user gave: its rows, or its error.
struct Outcome {
  std::vector<Row> rows;
  std::optional<ServerError> error;
};

// Runs `sql` on `pg` as `user` over a connection of its own (the harness's helpers are postgres's).
Outcome run_as(const PgInstance &pg, const std::string &user, const std::string &sql) {
  PGconn *conn = PQconnectdb((pg.conninfo("postgres", user) + " connect_timeout=10").c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = PQerrorMessage(conn);
    PQfinish(conn);
    throw std::runtime_error("cannot connect as " + user + ": " + why);
  }
  PGresult *res = PQexec(conn, sql.c_str());
  Outcome out;
  if (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK) {
    for (int r = 0; r < PQntuples(res); r++) {
      Row row;
      for (int c = 0; c < PQnfields(res); c++) {
        if (PQgetisnull(res, r, c)) row.emplace_back(std::nullopt);
        else row.emplace_back(std::string(PQgetvalue(res, r, c)));
      }
      out.rows.push_back(std::move(row));
    }
  } else {
    auto field = [&](int code) { const char *v = PQresultErrorField(res, code); return std::string(v ? v : ""); };
    out.error = ServerError(field(PG_DIAG_SQLSTATE), field(PG_DIAG_MESSAGE_PRIMARY), field(PG_DIAG_MESSAGE_DETAIL),
                            field(PG_DIAG_MESSAGE_HINT));
  }
  PQclear(res);
  PQfinish(conn);
  return out;
}

// The libpq error of connecting with `conninfo`; "" if it connects.
std::string connect_failure(const std::string &conninfo) {
  PGconn *conn = PQconnectdb((conninfo + " connect_timeout=10").c_str());
  std::string why = PQstatus(conn) == CONNECTION_OK ? "" : std::string("failed: ") + PQerrorMessage(conn);
  PQfinish(conn);
  return why;
}

// Every view of the extension, as text: each row as JSON, one per line.
const char *const kViews[] = {"reshard_status",      "reshard_databases",        "reshard_sharded_tables",
                              "reshard_table_copies", "reshard_schema_sync",      "reshard_replication_slots",
                              "reshard_cutover",     "reshard_verify_results",   "reshard_copy_replicas"};

std::string views_text(const PgInstance &control) {
  std::string out;
  for (const char *view : kViews) {
    out += std::string(view) + ":\n" +
           control.value(std::string("SELECT coalesce(string_agg(row_to_json(v)::text, E'\\n'), '') FROM ") + view + " v") +
           "\n";
  }
  return out;
}

std::string error_text(const ServerError &e) { return e.message + "\n" + e.detail + "\n" + e.hint; }

// The rows of reshard_verify(source, destination, 'pgdog') that are not 'ok' (source passed as a
// literal, whatever it holds); "no table" when it returns none.
std::string verify_not_ok(const PgInstance &control, const std::string &source, const std::string &destination) {
  std::vector<Row> rows = control.query("SELECT schema || '.' || \"table\", verdict, examples FROM reshard_verify(" +
                                        quote_literal(source) + ", " + quote_literal(destination) + ", 'pgdog')");
  if (rows.empty()) return "no table";
  std::string out;
  for (const Row &r : rows) {
    if (*r[1] != "ok") out += *r[0] + ": " + *r[1] + " " + *r[2] + "\n";
  }
  return out;
}

const char *const kSmallSchema = R"sql(
CREATE TABLE users (id bigint PRIMARY KEY, name text);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, status text);
CREATE TABLE settings (key text PRIMARY KEY, value text);
INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 300) g;
INSERT INTO orders SELECT g, 1 + g % 300, 'new' FROM generate_series(1, 600) g;
INSERT INTO settings VALUES ('mode', 'a');
CREATE PUBLICATION pgdog FOR ALL TABLES;
)sql";

class Security : public ReshardCluster {
 protected:
  // Like start_cluster, with every shard server asking kPwRole for its password (scram-sha-256)
  // and that role, a superuser so that privileges play no part here, holding kSecret.
  void start_with_passwords(const std::string &schema) {
    InstanceOptions c;
    c.name = "sec_control";
    c.preload_extension = true;
    control_ = std::make_unique<PgInstance>(c);
    control_->exec("CREATE EXTENSION pgdog_reshard");
    auto shard_server = [](const std::string &name) {
      InstanceOptions o;
      o.name = name;
      o.hba_lines = {std::string("host all ") + kPwRole + " 127.0.0.1/32 scram-sha-256",
                     std::string("host replication ") + kPwRole + " 127.0.0.1/32 scram-sha-256"};
      auto pg = std::make_unique<PgInstance>(o);
      pg->exec(std::string("CREATE ROLE ") + kPwRole + " LOGIN SUPERUSER REPLICATION PASSWORD '" + kSecret + "'");
      return pg;
    };
    source_ = shard_server("sec_source");
    for (int i = 0; i < 2; i++) dests_.push_back(shard_server("sec_dst" + std::to_string(i)));
    source_->exec(schema);
  }

  std::vector<const PgInstance *> servers() const { return {control_.get(), source_.get(), dests_[0].get(), dests_[1].get()}; }

  // reshard_stop(task), then the task must end cancelled: "" if it does, else what happened.
  std::string stop_task(const std::string &task) const {
    const std::string accepted = control_->value("SELECT reshard_stop(" + task + ") || ' at ' || clock_timestamp()");
    wait_until([&] {
      const std::string s = state(task);
      return s.rfind("cancelled", 0) == 0 || s.rfind("failed", 0) == 0 || s.rfind("done", 0) == 0;
    }, 120000);
    if (state(task).rfind("cancelled", 0) == 0) return "";
    return "reshard_stop(" + task + ") returned " + accepted + ", yet the task is \"" + state(task) + "\" (" +
           control_->value("SELECT 'stop_requested ' || stop_requested || ', worker_pid ' || worker_pid FROM pgdog_reshard.tasks"
                           " WHERE id = " + task) + "); its log:\n" +
           lines_with(control_->log(), "task " + task + " ") + lines_with(control_->log(), "task " + task + ":");
  }
};

// ---------------------------------------------------------------------------------------------
// a. Passwords never leak

TEST_F(Security, PasswordsNeverLeak) {
  start_with_passwords(kSmallSchema);
  // The role really needs its password: without one the servers refuse it.
  for (const PgInstance *pg : {source_.get(), dests_[0].get(), dests_[1].get()}) {
    std::string why = connect_failure(pg->conninfo("postgres", kPwRole));
    ASSERT_TRUE(has(why, "password")) << pg->name() << " lets " << kPwRole << " in without a password: " << why;
  }
  const std::string users = std::string("[[users]]\nname = \"") + kPwRole + "\"\ndatabase = \"prod\"\npassword = \"" + kSecret +
                            "\"\n[[users]]\nname = \"" + kPwRole + "\"\ndatabase = \"prod_new\"\npassword = \"" + kSecret +
                            "\"\n[[users]]\nname = \"" + kPwRole + "\"\ndatabase = \"prod_wrongpw\"\npassword = \"" +
                            kWrongSecret + "\"\n";
  load_config(databases_toml(*source_, dests_, "prod_new") + database_entry("prod_wrongpw", 0, *source_) + kProdNewRules, users);
  // The secret is stored (only superusers read it): the checks below are about something real.
  ASSERT_TRUE(has(control_->value("SELECT users_toml FROM pgdog_reshard.config"), kSecret));

  std::vector<std::string> errors_seen;
  // A wrong password, once for a task and once for a verification (which runs in a worker).
  ServerError wrong = control_->error_of("SELECT reshard_copy_data('prod_wrongpw', 'prod_new', 'pgdog')");
  EXPECT_EQ(wrong.sqlstate, "28P01") << wrong.what();
  errors_seen.push_back(error_text(wrong));
  ServerError wrong_verify = control_->error_of("SELECT * FROM reshard_verify('prod_wrongpw', 'prod_new', 'pgdog')");
  EXPECT_EQ(wrong_verify.sqlstate, "28P01") << wrong_verify.what();
  errors_seen.push_back(error_text(wrong_verify));

  std::string task = control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating", 240000)) << state(task) << control_->log();
  source_->exec("INSERT INTO users SELECT g, 'late' FROM generate_series(1001, 1100) g; UPDATE orders SET status = 'paid' WHERE id < 50");
  ASSERT_TRUE(wait_caught_up(task)) << state(task);
  EXPECT_EQ(verify_not_ok(*control_, "prod", "prod_new"), "");
  // The extension's sessions on every server, as pg_stat_activity shows them while it streams.
  std::string activity;
  for (const PgInstance *pg : servers()) {
    activity += pg->value("SELECT coalesce(string_agg(application_name || ' ' || coalesce(query, ''), E'\\n'), '') FROM pg_stat_activity");
  }
  std::string views_streaming = views_text(*control_);
  ASSERT_EQ(stop_task(task), "");
  std::string views_after = views_text(*control_);
  ASSERT_TRUE(has(views_after, "verify")) << "the views hold the tasks: " << views_after;

  for (const char *secret : {kSecret, kWrongSecret}) {
    SCOPED_TRACE(secret);
    for (const std::string &text : errors_seen) EXPECT_EQ(lines_with(text, secret), "") << "in an error";
    EXPECT_EQ(lines_with(views_streaming, secret), "") << "in a view while streaming";
    EXPECT_EQ(lines_with(views_after, secret), "") << "in a view after the stop";
    EXPECT_EQ(lines_with(activity, secret), "") << "in pg_stat_activity";
    for (const PgInstance *pg : servers()) EXPECT_EQ(log_hits(pg->log(), secret), "") << "in the log of " << pg->name();
  }
}

// ---------------------------------------------------------------------------------------------
// b. Privileges

TEST_F(Security, OnlyAdminsCallAndOnlySuperusersReadTheConfiguration) {
  start_cluster(kSmallSchema);
  load_config(databases_toml(*source_, dests_, "prod_new") + kProdNewRules, users_toml("prod_new"));
  // The destinations hold exactly what a reshard would have put there, placed by PostgreSQL's own
  // hash partitioning: a verification of it is all 'ok'.
  for (size_t i = 0; i < dests_.size(); i++) {
    const std::string on_me = "satisfies_hash_partition('oracle.by_bigint'::regclass, 2, " + std::to_string(i) + ", ";
    dests_[i]->exec(std::string(kSmallSchema).substr(0, std::string(kSmallSchema).find("INSERT")) +
                    "CREATE SCHEMA oracle; CREATE TABLE oracle.by_bigint (k bigint) PARTITION BY HASH (k);"
                    "INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 300) g WHERE " + on_me + "g::bigint);"
                    "INSERT INTO orders SELECT g, 1 + g % 300, 'new' FROM generate_series(1, 600) g WHERE " + on_me + "(1 + g % 300)::bigint);"
                    "INSERT INTO settings VALUES ('mode', 'a')");
  }
  control_->exec("CREATE ROLE sec_nobody LOGIN; CREATE ROLE sec_operator LOGIN; GRANT pgdog_reshard_admin TO sec_operator");
  const std::string config_before = control_->value("SELECT md5(pgdog_toml) FROM pgdog_reshard.config");

  const char *const denied[] = {
      "SELECT reshard('prod', 'prod_new', 'pgdog')",
      "SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')",
      "SELECT reshard_replicate('prod', 'prod_new', 'pgdog')",
      "SELECT reshard_schema_sync('prod', 'prod_new', 'pgdog')",
      "SELECT * FROM reshard_verify('prod', 'prod_new', 'pgdog')",
      "SELECT pgdog_reshard.verify_task('prod', 'prod_new', 'pgdog')",
      "SELECT reshard_stop(1)",
      "SELECT reshard_cutover(1)",
      "SELECT reshard_wait(1)",
      "SELECT reshard_load_config('[[databases]]\nname = \"x\"\nhost = \"127.0.0.1\"\n')",
      "SELECT * FROM reshard_status",
      "SELECT * FROM reshard_databases",
      "SELECT * FROM reshard_replication_slots",
      "SELECT * FROM reshard_table_copies",
      "SELECT * FROM reshard_copy_replicas",
      "SELECT * FROM pgdog_reshard.config",
      "SELECT * FROM pgdog_reshard.tasks",
  };
  for (const char *sql : denied) {
    Outcome o = run_as(*control_, "sec_nobody", sql);
    ASSERT_TRUE(o.error.has_value()) << "sec_nobody may run: " << sql;
    EXPECT_EQ(o.error->sqlstate, "42501") << sql << ": " << o.error->what();
  }
  EXPECT_EQ(control_->value("SELECT count(*) FROM pgdog_reshard.tasks"), "0") << "a refused call created a task";
  EXPECT_EQ(control_->value("SELECT md5(pgdog_toml) FROM pgdog_reshard.config"), config_before);

  // A member of pgdog_reshard_admin verifies and reads the status...
  Outcome verified = run_as(*control_, "sec_operator",
                            "SELECT schema || '.' || \"table\", verdict, source_rows FROM reshard_verify('prod', 'prod_new', 'pgdog')");
  ASSERT_FALSE(verified.error) << verified.error->what();
  ASSERT_EQ(verified.rows.size(), 3u);
  for (const Row &r : verified.rows) EXPECT_EQ(*r[1], "ok") << *r[0];
  Outcome status = run_as(*control_, "sec_operator", "SELECT command || ' ' || state || ' ' || created_by FROM reshard_status");
  ASSERT_FALSE(status.error) << status.error->what();
  ASSERT_EQ(status.rows.size(), 1u);
  EXPECT_EQ(*status.rows[0][0], "verify done sec_operator");
  Outcome databases = run_as(*control_, "sec_operator", "SELECT count(*) FROM reshard_databases");
  ASSERT_FALSE(databases.error) << databases.error->what();
  EXPECT_EQ(*databases.rows[0][0], "3");
  // ...but never reads the stored configuration (it holds passwords), nor the catalog behind the views.
  for (const char *sql : {"SELECT * FROM pgdog_reshard.config", "SELECT pgdog_toml FROM pgdog_reshard.tasks"}) {
    Outcome o = run_as(*control_, "sec_operator", sql);
    ASSERT_TRUE(o.error.has_value()) << "sec_operator may run: " << sql;
    EXPECT_EQ(o.error->sqlstate, "42501") << sql << ": " << o.error->what();
  }
}

// ---------------------------------------------------------------------------------------------
// c. Identifiers that need quoting

const char *const kOddSchema = R"sql(
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Order ""x"" ü" (id bigint PRIMARY KEY, "User Id" bigint NOT NULL, "select" text,
                                          "Straße ""q""" numeric);
CREATE TABLE public."user" (id bigint PRIMARY KEY, "group" text, "from" date);
INSERT INTO "My Schema"."Order ""x"" ü" SELECT g, g % 97, 'sel ' || g, g / 7.0 FROM generate_series(1, 1000) g;
INSERT INTO public."user" SELECT g, 'g' || g % 5, date '2024-01-01' + g FROM generate_series(1, 500) g;
CREATE PUBLICATION pgdog FOR ALL TABLES;
)sql";

const char *const kOddRules = R"(
[[sharded_tables]]
database = "prod_new"
schema = "My Schema"
name = 'Order "x" ü'
column = "User Id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_new"
name = "user"
column = "id"
data_type = "bigint"
)";

TEST_F(Security, QuotedSpacedUnicodeAndReservedIdentifiersWork) {
  start_cluster(kOddSchema);
  load_config(databases_toml(*source_, dests_, "prod_new") + kOddRules, users_toml("prod_new"));
  std::string task = control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating", 240000)) << state(task) << control_->log();

  // Changes after the copy: inserts, updates (of the sharding key too: rows change shard), deletes.
  source_->exec(R"sql(
INSERT INTO "My Schema"."Order ""x"" ü" SELECT g, g % 89, 'new', 1 FROM generate_series(2001, 2200) g;
UPDATE "My Schema"."Order ""x"" ü" SET "select" = 'moved', "User Id" = "User Id" + 1 WHERE id BETWEEN 1 AND 100;
UPDATE "My Schema"."Order ""x"" ü" SET "Straße ""q""" = 0 WHERE id BETWEEN 101 AND 150;
DELETE FROM "My Schema"."Order ""x"" ü" WHERE id BETWEEN 900 AND 950;
INSERT INTO public."user" SELECT g, 'new', NULL FROM generate_series(1001, 1100) g;
UPDATE public."user" SET "group" = 'renumbered', id = id + 10000 WHERE id <= 20;
UPDATE public."user" SET "from" = NULL WHERE id BETWEEN 30 AND 40;
DELETE FROM public."user" WHERE id BETWEEN 400 AND 420;
)sql");
  ASSERT_TRUE(wait_caught_up(task)) << state(task) << control_->log();
  EXPECT_EQ(verify_differences("prod", "prod_new"), "");

  // Independently: the destinations together hold the source's rows, each where
  // satisfies_hash_partition puts its key.
  const std::pair<const char *, const char *> tables[] = {{"\"My Schema\".\"Order \"\"x\"\" ü\"", "\"User Id\""},
                                                         {"public.\"user\"", "id"}};
  for (const auto &[table, key] : tables) {
    SCOPED_TRACE(table);
    std::vector<std::string> expected = row_hashes(*source_, table), actual;
    for (size_t i = 0; i < dests_.size(); i++) {
      std::vector<std::string> h = row_hashes(*dests_[i], table);
      EXPECT_FALSE(h.empty()) << "shard " << i;
      actual.insert(actual.end(), h.begin(), h.end());
      dests_[i]->exec("CREATE TABLE IF NOT EXISTS oracle_bigint (k bigint) PARTITION BY HASH (k)");
      EXPECT_EQ(dests_[i]->value(std::string("SELECT count(*) FROM ") + table +
                                 " WHERE NOT satisfies_hash_partition('oracle_bigint'::regclass, 2, " + std::to_string(i) +
                                 ", " + key + ")"),
                "0")
          << "misplaced rows on shard " << i;
    }
    std::sort(actual.begin(), actual.end());
    EXPECT_EQ(actual.size(), expected.size());
    EXPECT_TRUE(actual == expected) << "the destinations differ from the source";
  }
  EXPECT_EQ(stop_task(task), "");
}

// ---------------------------------------------------------------------------------------------
// d. SQL injection through the configuration

TEST_F(Security, InjectionThroughConfigurationIsHarmless) {
  start_cluster(kSmallSchema);
  const std::string cluster = "prod'; DROP TABLE pgdog_reshard.tasks; --";
  const std::string database = "src'db\"; DROP DATABASE postgres; --";
  const std::string user = "o'brien\"; DROP ROLE postgres; --";
  // The database and user exist on the source, so that a request with them can work end to end.
  source_->exec("CREATE DATABASE \"src'db\"\"; DROP DATABASE postgres; --\"");
  source_->exec(kSmallSchema, database);
  source_->exec("CREATE ROLE \"o'brien\"\"; DROP ROLE postgres; --\" LOGIN SUPERUSER REPLICATION");
  auto toml_string = [](const std::string &s) {  // a TOML basic string
    std::string out = "\"";
    for (char c : s) out += c == '"' ? std::string("\\\"") : std::string(1, c);
    return out + "\"";
  };
  const std::string pgdog_toml = "[[databases]]\nname = " + toml_string(cluster) + "\nhost = \"127.0.0.1\"\nport = " +
                                 std::to_string(source_->port()) + "\ndatabase_name = " + toml_string(database) +
                                 "\nuser = " + toml_string(user) + "\nshard = 0\n\n" + cluster_entries("prod_new", dests_) +
                                 kProdNewRules;

  // What must survive whatever happens: the extension's catalog, every database and role.
  auto inventory = [&] {
    std::string out = control_->value("SELECT coalesce(to_regclass('pgdog_reshard.tasks')::text, 'GONE')") + "\n";
    for (const PgInstance *pg : {control_.get(), source_.get(), dests_[0].get(), dests_[1].get()}) {
      out += pg->name() + ": " + pg->value("SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database") + " / " +
             pg->value("SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%'") + "\n";
    }
    return out + source_->value("SELECT count(*) FROM users") + " " + source_->value("SELECT count(*) FROM users", database);
  };
  const std::string before = inventory();
  ASSERT_TRUE(has(before, "pgdog_reshard.tasks")) << before;

  std::optional<ServerError> load_error;
  try {
    control_->exec("SELECT reshard_load_config(" + quote_literal(pgdog_toml) + ", " + quote_literal(users_toml("prod_new")) + ")");
  } catch (const ServerError &e) {
    load_error = e;
  }
  if (load_error) {
    EXPECT_EQ(load_error->sqlstate, "F0000") << "refused, but not as a configuration error: " << load_error->what();
  } else {
    // Taken verbatim, as names.
    EXPECT_EQ(control_->value("SELECT count(*) FROM reshard_databases WHERE name = " + quote_literal(cluster) +
                              " AND database_name = " + quote_literal(database) + " AND \"user\" = " + quote_literal(user)),
              "1");
    // reshard_copy_data works end to end with those names, or refuses cleanly.
    const std::string args = quote_literal(cluster) + ", 'prod_new', 'pgdog'";
    std::string task;
    try {
      task = control_->value("SELECT reshard_copy_data(" + args + ")");
    } catch (const ServerError &e) {
      EXPECT_NE(e.sqlstate.substr(0, 2), "XX") << "an internal error: " << e.what();
    }
    if (!task.empty()) {
      ASSERT_TRUE(wait_state(task, "replicating", 240000)) << state(task) << control_->log();
      EXPECT_EQ(verify_not_ok(*control_, cluster, "prod_new"), "");
      EXPECT_EQ(stop_task(task), "");
      // Empty destinations again, so that reshard() gets past pre-flight too.
      for (auto &d : dests_) d->exec("DROP TABLE users, orders, settings");
    }
    // reshard() with the name: a task (stopped at once), or a clean refusal.
    try {
      task = control_->value("SELECT reshard(" + args + ")");
      EXPECT_EQ(stop_task(task), "");
    } catch (const ServerError &e) {
      EXPECT_NE(e.sqlstate.substr(0, 2), "XX") << "an internal error: " << e.what();
    }
  }
  EXPECT_EQ(inventory(), before) << "something was dropped or created";
  // A name run as SQL would have been a syntax error somewhere.
  for (const PgInstance *pg : {control_.get(), source_.get(), dests_[0].get(), dests_[1].get()}) {
    EXPECT_EQ(lines_with(pg->log(), "syntax error"), "") << pg->name();
  }
}

}  // namespace
}  // namespace pgdog_reshard::test
