// split_sql_script / statement_words (src/core/sql_script.h), and split_schema_dump
// (src/engine/schema_sync.h) on a real pg_dump output.
//
// test/unit/data/schema_dump_pg15.sql is what pg_dump 15.20 wrote for the schema built by
// test/e2e/schema_sync_test.cpp (kRichSchema), with dump_schema's options except
// --no-publications (so that dropping the publication is tested on real output):
//   pg_dump --schema-only --no-owner --no-privileges --no-tablespaces --no-subscriptions
//           --no-password --encoding=UTF8 app
#include "core/sql_script.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "engine/schema_sync.h"

namespace pgdog_reshard {
namespace {

std::vector<std::string> sqls(std::string_view script) {
  std::vector<std::string> out;
  for (const ScriptStatement &s : split_sql_script(script)) out.push_back(s.sql);
  return out;
}

using Sqls = std::vector<std::string>;

TEST(SqlScript, SplitsOnSemicolonsOutsideStrings) {
  EXPECT_EQ(sqls("SELECT 1; SELECT 2;"), (Sqls{"SELECT 1;", "SELECT 2;"}));
  EXPECT_EQ(sqls("SELECT 'a;b', 'it''s; here';\nSELECT ';'"),
            (Sqls{"SELECT 'a;b', 'it''s; here';", "SELECT ';'"}));
  EXPECT_EQ(sqls(""), Sqls{});
  EXPECT_EQ(sqls("  \n\t "), Sqls{});
  EXPECT_EQ(sqls(";;"), (Sqls{";", ";"}));
}

TEST(SqlScript, EscapeStringsTakeBackslashesStandardStringsDoNot) {
  // E'a\';b' is one string; in 'a\' the backslash is a plain character.
  EXPECT_EQ(sqls("SELECT E'a\\';b'; SELECT 2;"), (Sqls{"SELECT E'a\\';b';", "SELECT 2;"}));
  EXPECT_EQ(sqls("SELECT e'x\\\\'; SELECT 2;"), (Sqls{"SELECT e'x\\\\';", "SELECT 2;"}));
  EXPECT_EQ(sqls("SELECT E'it''s;'; SELECT 2;"), (Sqls{"SELECT E'it''s;';", "SELECT 2;"}));
  EXPECT_EQ(sqls("SELECT 'a\\'; SELECT 2;"), (Sqls{"SELECT 'a\\';", "SELECT 2;"}));
  // A word ending in e is not an escape prefix.
  EXPECT_EQ(sqls("SELECT type'x;'; SELECT 2;"), (Sqls{"SELECT type'x;';", "SELECT 2;"}));
}

TEST(SqlScript, QuotedIdentifiersHoldSemicolonsAndQuotes) {
  EXPECT_EQ(sqls("CREATE TABLE \"a;b\" (\"x\"\";y\" int); SELECT 1;"),
            (Sqls{"CREATE TABLE \"a;b\" (\"x\"\";y\" int);", "SELECT 1;"}));
}

TEST(SqlScript, DollarQuotedBodies) {
  EXPECT_EQ(sqls("DO $$ BEGIN PERFORM 1; END $$; SELECT 2;"),
            (Sqls{"DO $$ BEGIN PERFORM 1; END $$;", "SELECT 2;"}));
  // A tagged body may contain $$ and other tags; only its own tag closes it.
  EXPECT_EQ(sqls("DO $fn$ SELECT $$;$$; $x$ ; $fn$; SELECT 2;"),
            (Sqls{"DO $fn$ SELECT $$;$$; $x$ ; $fn$;", "SELECT 2;"}));
  // $1 is a parameter and a$b$ an identifier: neither opens a quote.
  EXPECT_EQ(sqls("SELECT $1; SELECT a$b$; SELECT 3;"),
            (Sqls{"SELECT $1;", "SELECT a$b$;", "SELECT 3;"}));
  EXPECT_EQ(sqls("SELECT $_t1$;$_t1$; SELECT 2;"), (Sqls{"SELECT $_t1$;$_t1$;", "SELECT 2;"}));
}

TEST(SqlScript, CommentsHoldSemicolonsAndLeadAStatement) {
  auto statements = split_sql_script(
      "-- first; not a statement\n"
      "SELECT 1 /* a /* nested; */ comment; */ + 1; -- trailing; comment\n"
      "/* block */ SELECT 2;\n"
      "-- nothing after this;\n");
  ASSERT_EQ(statements.size(), 2u);
  EXPECT_EQ(statements[0].sql, "SELECT 1 /* a /* nested; */ comment; */ + 1;");
  EXPECT_EQ(statements[0].leading_comments, "-- first; not a statement\n");
  EXPECT_EQ(statements[1].sql, "SELECT 2;");
  EXPECT_EQ(statements[1].leading_comments, " -- trailing; comment\n/* block */ ");
  EXPECT_FALSE(statements[0].meta_command);
  // Comments only: nothing to run.
  EXPECT_EQ(sqls("-- a;\n/* b; */\n"), Sqls{});
}

TEST(SqlScript, ParenthesesKeepARuleActionListTogether) {
  EXPECT_EQ(sqls("CREATE RULE r AS ON DELETE TO t DO (INSERT INTO a VALUES (1); INSERT INTO b "
                 "VALUES (2);); SELECT 1;"),
            (Sqls{"CREATE RULE r AS ON DELETE TO t DO (INSERT INTO a VALUES (1); INSERT INTO b "
                  "VALUES (2););",
                  "SELECT 1;"}));
}

TEST(SqlScript, BeginAtomicBodiesOfRoutinesStayWhole) {
  std::string body =
      "CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT x; "
      "SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END; END;";
  EXPECT_EQ(sqls(body + " SELECT 2;"), (Sqls{body, "SELECT 2;"}));
  std::string procedure =
      "create or replace procedure p() language sql begin atomic insert into t values (1); end;";
  EXPECT_EQ(sqls(procedure + "SELECT 2;"), (Sqls{procedure, "SELECT 2;"}));
  // Outside a routine, BEGIN is a transaction and ';' ends it.
  EXPECT_EQ(sqls("BEGIN; SELECT 1; END;"), (Sqls{"BEGIN;", "SELECT 1;", "END;"}));
  // A parameter named begin, in parentheses, opens nothing.
  EXPECT_EQ(sqls("CREATE FUNCTION g(begin int) RETURNS int AS 'SELECT 1' LANGUAGE sql; SELECT 2;"),
            (Sqls{"CREATE FUNCTION g(begin int) RETURNS int AS 'SELECT 1' LANGUAGE sql;",
                  "SELECT 2;"}));
}

TEST(SqlScript, PsqlMetaCommandsAreLinesOfTheirOwn) {
  auto statements = split_sql_script("--\n\\restrict Key1\n\nSELECT 1;\n\\unrestrict Key1\n");
  ASSERT_EQ(statements.size(), 3u);
  EXPECT_TRUE(statements[0].meta_command);
  EXPECT_EQ(statements[0].sql, "\\restrict Key1");
  EXPECT_EQ(statements[0].leading_comments, "--\n");
  EXPECT_FALSE(statements[1].meta_command);
  EXPECT_EQ(statements[1].sql, "SELECT 1;");
  EXPECT_TRUE(statements[2].meta_command);
  EXPECT_EQ(statements[2].sql, "\\unrestrict Key1");
}

TEST(SqlScript, UnterminatedTextIsTheLastStatement) {
  EXPECT_EQ(sqls("SELECT 1; SELECT 2  \n"), (Sqls{"SELECT 1;", "SELECT 2"}));
  EXPECT_EQ(sqls("SELECT 1; SELECT 'abc;"), (Sqls{"SELECT 1;", "SELECT 'abc;"}));
  EXPECT_EQ(sqls("SELECT $$ ;"), (Sqls{"SELECT $$ ;"}));
  EXPECT_EQ(sqls("SELECT 1 /* ;"), (Sqls{"SELECT 1 /* ;"}));
  EXPECT_EQ(sqls("SELECT E'\\"), (Sqls{"SELECT E'\\"}));
}

TEST(SqlScript, StatementWordsSkipCommentsAndKeepQuotedTokens) {
  EXPECT_EQ(statement_words("alter /* x */ table only public.\"Order Items\"\n"
                            "  -- c\n  ADD CONSTRAINT \"pk\" PRIMARY KEY (\"Id\");",
                            100),
            (Sqls{"ALTER", "TABLE", "ONLY", "PUBLIC", ".", "\"Order Items\"", "ADD", "CONSTRAINT",
                  "\"pk\"", "PRIMARY", "KEY", "(", "\"Id\"", ")", ";"}));
  EXPECT_EQ(statement_words("SELECT 'a b', E'c', $$d$$ FROM t", 4),
            (Sqls{"SELECT", "'a b'", ",", "E'c'"}));
  EXPECT_EQ(statement_words("", 3), Sqls{});
}

// ---------------------------------------------------------------------------------------------

std::string read_fixture(const std::string &name) {
  std::ifstream in(std::string(PGDOG_TEST_DATA_DIR) + "/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << name;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

const SchemaDump &fixture_dump() {
  static const SchemaDump dump = split_schema_dump(read_fixture("schema_dump_pg15.sql"));
  return dump;
}

const SchemaStatement *find(const std::vector<SchemaStatement> &statements, const std::string &kind,
                            const std::string &name) {
  for (const SchemaStatement &s : statements) {
    if (s.kind == kind && s.name == name) return &s;
  }
  return nullptr;
}

size_t count_kind(const std::vector<SchemaStatement> &statements, const std::string &kind) {
  return std::count_if(statements.begin(), statements.end(),
                       [&](const SchemaStatement &s) { return s.kind == kind; });
}

bool contains(const std::string &text, const std::string &needle) {
  return text.find(needle) != std::string::npos;
}

TEST(SchemaDump, FixtureSplitsIntoPreAndPost) {
  const SchemaDump &dump = fixture_dump();
  // pre: 31 pre-data statements (orders' REPLICA IDENTITY FULL moved out).
  // post: 8 primary keys, 6 indexes, 4 index attachments, 1 unique constraint, 3 foreign keys,
  // trigger, rule, policy, row security, the index's comment, 2 REPLICA IDENTITY.
  EXPECT_EQ(dump.pre.size(), 31u);
  EXPECT_EQ(dump.post.size(), 29u);
  for (const auto *phase : {&dump.pre, &dump.post}) {
    for (const SchemaStatement &s : *phase) {
      EXPECT_EQ(s.sql.back(), ';') << s.sql;
      EXPECT_FALSE(s.kind.empty()) << s.sql;
    }
  }
}

TEST(SchemaDump, DropsSessionSettingsMetaCommandsAndPublications) {
  const SchemaDump &dump = fixture_dump();
  for (const auto *phase : {&dump.pre, &dump.post}) {
    for (const SchemaStatement &s : *phase) {
      EXPECT_NE(s.sql.rfind("SET ", 0), 0u) << s.sql;
      EXPECT_FALSE(contains(s.sql, "set_config")) << s.sql;
      EXPECT_FALSE(contains(s.sql, "\\restrict")) << s.sql;
      EXPECT_FALSE(contains(s.sql, "PUBLICATION")) << s.sql;
      EXPECT_NE(s.kind, "PUBLICATION");
    }
  }
}

TEST(SchemaDump, PreHoldsDefinitionsAndNoKeyOrIndex) {
  const std::vector<SchemaStatement> &pre = fixture_dump().pre;
  const std::set<std::string> pre_kinds = {"SCHEMA", "EXTENSION", "TYPE", "DOMAIN", "FUNCTION",
                                           "SEQUENCE", "SEQUENCE OWNED BY", "TABLE", "TABLE ATTACH",
                                           "DEFAULT", "COMMENT", "VIEW"};
  for (const SchemaStatement &s : pre) {
    EXPECT_TRUE(pre_kinds.count(s.kind)) << s.kind << ": " << s.sql;
    EXPECT_FALSE(contains(s.sql, "PRIMARY KEY")) << s.sql;
  }
  // TOC fields: kind, schema ("" for none) and pg_dump's name.
  const SchemaStatement *schema = find(pre, "SCHEMA", "billing");
  ASSERT_NE(schema, nullptr);
  EXPECT_EQ(schema->schema, "");
  EXPECT_EQ(schema->sql, "CREATE SCHEMA billing;");
  EXPECT_NE(find(pre, "EXTENSION", "citext"), nullptr);
  EXPECT_NE(find(pre, "TYPE", "order_status"), nullptr);
  EXPECT_NE(find(pre, "DOMAIN", "positive_amount"), nullptr);
  EXPECT_NE(find(pre, "TABLE ATTACH", "events_2025"), nullptr);
  EXPECT_NE(find(pre, "VIEW", "open_orders"), nullptr);
  // The identity column's ALTER TABLE is in its SEQUENCE entry.
  const SchemaStatement *identity = find(pre, "SEQUENCE", "customers_id_seq");
  ASSERT_NE(identity, nullptr);
  EXPECT_TRUE(contains(identity->sql, "ADD GENERATED ALWAYS AS IDENTITY"));
}

TEST(SchemaDump, PostHoldsIndexesConstraintsTriggersAndReplicaIdentity) {
  const std::vector<SchemaStatement> &post = fixture_dump().post;
  EXPECT_EQ(count_kind(post, "INDEX"), 6u);
  EXPECT_EQ(count_kind(post, "INDEX ATTACH"), 4u);
  EXPECT_EQ(count_kind(post, "FK CONSTRAINT"), 3u);
  EXPECT_EQ(count_kind(post, "TRIGGER"), 1u);
  EXPECT_EQ(count_kind(post, "RULE"), 1u);
  EXPECT_EQ(count_kind(post, "POLICY"), 1u);
  EXPECT_EQ(count_kind(post, "ROW SECURITY"), 1u);
  EXPECT_EQ(count_kind(post, "REPLICA IDENTITY"), 2u);
  // Primary keys (one per table and partition) and the unique constraint, in pg_dump's order.
  const SchemaStatement *unique = find(post, "CONSTRAINT", "Order Items Order Items_order_id_select_key");
  ASSERT_NE(unique, nullptr);
  const SchemaStatement *items_key = find(post, "CONSTRAINT", "Order Items Order Items_pkey");
  ASSERT_NE(items_key, nullptr);
  EXPECT_EQ(items_key->schema, "public");
  EXPECT_EQ(items_key->sql,
            "ALTER TABLE ONLY public.\"Order Items\"\n    ADD CONSTRAINT \"Order Items_pkey\" "
            "PRIMARY KEY (\"Id\");");
  EXPECT_EQ(count_kind(post, "CONSTRAINT"), 9u);
  // Foreign keys come after every key they may reference.
  auto first_fk = std::find_if(post.begin(), post.end(),
                               [](const SchemaStatement &s) { return s.kind == "FK CONSTRAINT"; });
  for (auto it = first_fk; it != post.end(); ++it) EXPECT_NE(it->kind, "CONSTRAINT") << it->sql;
  // FULL comes out of the orders TABLE entry; USING INDEX out of the index's entry.
  const SchemaStatement *full = find(post, "REPLICA IDENTITY", "orders");
  ASSERT_NE(full, nullptr);
  EXPECT_EQ(full->sql, "ALTER TABLE ONLY public.orders REPLICA IDENTITY FULL;");
  const SchemaStatement *using_index = find(post, "REPLICA IDENTITY", "settings_key_idx");
  ASSERT_NE(using_index, nullptr);
  EXPECT_TRUE(contains(using_index->sql, "REPLICA IDENTITY USING INDEX settings_key_idx"));
  // A comment on an index is post-data, like the index.
  EXPECT_NE(find(post, "COMMENT", "INDEX orders_open_idx"), nullptr);
  EXPECT_EQ(find(fixture_dump().pre, "COMMENT", "INDEX orders_open_idx"), nullptr);
}

TEST(SchemaDump, BodiesStringsAndRulesStayWhole) {
  const SchemaDump &dump = fixture_dump();
  const SchemaStatement *plpgsql = find(dump.pre, "FUNCTION", "touch_updated_at()");
  ASSERT_NE(plpgsql, nullptr);
  EXPECT_TRUE(contains(plpgsql->sql, "-- a comment; with a semicolon"));
  EXPECT_EQ(plpgsql->sql.substr(plpgsql->sql.size() - 3), "$$;");
  const SchemaStatement *atomic = find(dump.pre, "FUNCTION", "order_total(public.orders)");
  ASSERT_NE(atomic, nullptr);
  EXPECT_TRUE(contains(atomic->sql, "BEGIN ATOMIC"));
  EXPECT_EQ(atomic->sql.substr(atomic->sql.size() - 4), "END;");
  const SchemaStatement *rule = find(dump.post, "RULE", "customers customers_audit");
  ASSERT_NE(rule, nullptr);
  EXPECT_TRUE(contains(rule->sql, "'deleted; one'") && contains(rule->sql, "'twice'"));
  const SchemaStatement *comment = find(dump.pre, "COMMENT", "SCHEMA billing");
  ASSERT_NE(comment, nullptr);
  EXPECT_EQ(comment->sql, "COMMENT ON SCHEMA billing IS 'money /* not a comment */ -- nor this';");
  const SchemaStatement *customers = find(dump.pre, "TABLE", "customers");
  ASSERT_NE(customers, nullptr);
  EXPECT_TRUE(contains(customers->sql, "'it''s; unnamed'::text"));
}

TEST(SchemaDump, AnythingAfterTheBoundaryIsPost) {
  SchemaDump dump = split_schema_dump(
      "--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\n"
      "CREATE TABLE public.t (id int NOT NULL);\n"
      "--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\n"
      "ALTER TABLE public.t ADD PRIMARY KEY (id);\n"
      "ALTER TABLE public.t CLUSTER ON t_pkey;\n"
      "--\n-- Name: s; Type: SOMETHING NEW; Schema: public; Owner: -\n--\n\n"
      "CREATE SOMETHING public.s;\n"
      "--\n-- Name: p; Type: PUBLICATION TABLE; Schema: public; Owner: -\n--\n\n"
      "ALTER PUBLICATION p ADD TABLE ONLY public.t;\n"
      "COMMENT ON SUBSCRIPTION s IS 'x';\n");
  ASSERT_EQ(dump.pre.size(), 1u);
  ASSERT_EQ(dump.post.size(), 3u);
  EXPECT_EQ(dump.post[0].sql, "ALTER TABLE public.t ADD PRIMARY KEY (id);");
  EXPECT_EQ(dump.post[1].sql, "ALTER TABLE public.t CLUSTER ON t_pkey;");
  EXPECT_EQ(dump.post[1].kind, "CONSTRAINT");
  EXPECT_EQ(dump.post[2].kind, "SOMETHING NEW");
  EXPECT_EQ(dump.post[2].schema, "public");
}

TEST(SchemaDump, NamesMayHoldSemicolons) {
  SchemaDump dump = split_schema_dump(
      "-- Name: a; Type: b; Type: TABLE; Schema: my schema; Owner: -\nCREATE TABLE \"my schema\".\"a; Type: b\" ();\n");
  ASSERT_EQ(dump.pre.size(), 1u);
  EXPECT_EQ(dump.pre[0].name, "a; Type: b");
  EXPECT_EQ(dump.pre[0].kind, "TABLE");
  EXPECT_EQ(dump.pre[0].schema, "my schema");
}

}  // namespace
}  // namespace pgdog_reshard
