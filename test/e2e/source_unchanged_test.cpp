// The source is never written to: a reshard_copy_data task run to replicating, reshard_verify, then
// reshard_stop, with no write by anyone meanwhile, leaves the source's catalog (schemas, relations
// with their relfilenode, which any rewrite changes, columns, indexes, constraints, triggers,
// functions, sequences' positions, publications, roles, databases, replication origins), its
// transaction counter and its write statistics (per table and for the database) exactly as they
// were. Only replication slots may come and go (and are gone after the stop).
#include <algorithm>
#include <chrono>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "reshard_cluster.h"

namespace pgdog_reshard::test {
namespace {

// Tables sharded and omnisharded, a sequence, an index, a constraint, a trigger, a function, a view,
// a partitioned table, TOASTed values and a schema of its own.
const char *const kSchema = R"sql(
CREATE SCHEMA app;
CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id), note text,
                     total numeric CHECK (total >= 0));
CREATE INDEX orders_user ON orders (user_id);
CREATE TABLE app.events (id bigint, user_id bigint NOT NULL, at date NOT NULL, PRIMARY KEY (id, at))
  PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE settings (key text PRIMARY KEY, value text);
CREATE FUNCTION app.no_op() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER orders_no_op BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION app.no_op();
CREATE VIEW app.big_orders AS SELECT * FROM orders WHERE total > 100;
INSERT INTO users (name, email) SELECT 'user ' || g, 'u' || g || '@example.com' FROM generate_series(1, 500) g;
INSERT INTO orders SELECT g, 1 + g % 500, CASE WHEN g % 100 = 0 THEN repeat(md5(g::text), 300) ELSE 'n' END, g % 250
  FROM generate_series(1, 1500) g;
UPDATE orders SET total = total + 1 WHERE id <= 10;
DELETE FROM orders WHERE id > 1490;
INSERT INTO app.events SELECT g, 1 + g % 500, date '2024-01-01' + g % 300 FROM generate_series(1, 600) g;
INSERT INTO settings VALUES ('mode', 'a');
CREATE PUBLICATION pgdog FOR ALL TABLES;
)sql";

const char *const kRules =
    "[[sharded_tables]]\ndatabase = \"prod_new\"\ncolumn = \"user_id\"\ndata_type = \"bigint\"\n\n"
    "[[sharded_tables]]\ndatabase = \"prod_new\"\nname = \"users\"\ncolumn = \"id\"\ndata_type = \"bigint\"\n";

// Everything on the source but replication slots, one line per object, from the user-visible
// schemas (temporary ones excluded). Statistics of reads (seq_scan, ...) and what VACUUM or
// ANALYZE would change (reltuples, relfrozenxid) are left out: autovacuum is off meanwhile anyway.
const char *const kCatalogSql = R"sql(
WITH ns AS (SELECT oid, nspname FROM pg_namespace
            WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
              AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%')
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
  SELECT 'schema ' || nspname || ' ' || nspowner::regrole || ' ' || coalesce(nspacl::text, '') FROM pg_namespace
    WHERE oid IN (SELECT oid FROM ns)
  UNION ALL
  SELECT format('relation %I.%I kind=%s filenode=%s persistence=%s natts=%s replident=%s owner=%s acl=%s triggers=%s',
                ns.nspname, c.relname, c.relkind, c.relfilenode, c.relpersistence, c.relnatts, c.relreplident,
                c.relowner::regrole, c.relacl, c.relhastriggers)
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT format('column %s.%s #%s %s notnull=%s default=%s dropped=%s identity=%s generated=%s', a.attrelid::regclass,
                a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef, a.attisdropped,
                a.attidentity, a.attgenerated)
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace WHERE a.attnum > 0
  UNION ALL
  SELECT format('index %s on %s keys=%s primary=%s unique=%s replident=%s valid=%s', i.indexrelid::regclass,
                i.indrelid::regclass, i.indkey, i.indisprimary, i.indisunique, i.indisreplident, i.indisvalid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
  SELECT format('constraint %s on %s %s', conname, conrelid::regclass, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace IN (SELECT oid FROM ns)
  UNION ALL
  SELECT format('trigger %s on %s enabled=%s', tgname, tgrelid::regclass, tgenabled) FROM pg_trigger
    WHERE NOT tgisinternal
  UNION ALL
  SELECT format('function %s %s', p.oid::regprocedure, md5(p.prosrc)) FROM pg_proc p WHERE pronamespace IN (SELECT oid FROM ns)
  UNION ALL
  SELECT format('sequence %I.%I last=%s', schemaname, sequencename, last_value) FROM pg_sequences
  UNION ALL
  SELECT format('publication %s all=%s ops=%s%s%s%s root=%s tables=%s', pubname, puballtables, pubinsert, pubupdate,
                pubdelete, pubtruncate, pubviaroot, (SELECT count(*) FROM pg_publication_rel r WHERE r.prpubid = p.oid))
    FROM pg_publication p
  UNION ALL
  SELECT format('role %s super=%s login=%s replication=%s', rolname, rolsuper, rolcanlogin, rolreplication) FROM pg_roles
  UNION ALL
  SELECT 'database ' || datname FROM pg_database
  UNION ALL
  SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension
  UNION ALL
  SELECT 'subscription ' || subname FROM pg_subscription
  UNION ALL
  SELECT 'origin ' || roname FROM pg_replication_origin
  UNION ALL
  -- The next transaction id: any write (even one rolled back, or a temporary table) takes one.
  SELECT 'next xid ' || pg_snapshot_xmax(pg_current_snapshot())
) lines(line)
)sql";

// What was written, as the cumulative statistics count it: per user table, and for the database
// (which counts the system catalogs' rows too, so a temporary table would show there).
const char *const kStatsSql = R"sql(
SELECT string_agg(line, E'\n' ORDER BY line) FROM (
  SELECT format('table %I.%I ins=%s upd=%s del=%s hot=%s', schemaname, relname, n_tup_ins, n_tup_upd, n_tup_del,
                n_tup_hot_upd) FROM pg_stat_user_tables
  UNION ALL
  SELECT format('database %s inserted=%s updated=%s deleted=%s', datname, tup_inserted, tup_updated, tup_deleted)
    FROM pg_stat_database WHERE datname = current_database()
) lines(line)
)sql";

std::vector<std::string> sorted_lines(const std::string &text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  return lines;
}

// The lines only `before` has ("- ...") and only `after` has ("+ ..."): "" when they are the same.
std::string changed_lines(const std::string &before, const std::string &after) {
  std::vector<std::string> b = sorted_lines(before), a = sorted_lines(after), gone, added;
  std::set_difference(b.begin(), b.end(), a.begin(), a.end(), std::back_inserter(gone));
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(added));
  std::string out;
  for (const std::string &l : gone) out += "- " + l + "\n";
  for (const std::string &l : added) out += "+ " + l + "\n";
  return out;
}

class SourceUnchanged : public ReshardCluster {
 protected:
  // Once no session but ours is left on the source (a session flushes its statistics as it ends),
  // the statistics as two reads a second apart agree on them.
  std::string settled_stats() const {
    EXPECT_TRUE(wait_until([&] {
      return source_->value("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                            " AND backend_type IN ('client backend', 'walsender')") == "0";
    }, 60000)) << source_->value("SELECT string_agg(backend_type || ' ' || application_name, ', ') FROM pg_stat_activity");
    std::string last = source_->value(kStatsSql);
    wait_until([&] {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      std::string now = source_->value(kStatsSql);
      bool same = now == last;
      last = now;
      return same;
    }, 30000);
    return last;
  }
};

TEST_F(SourceUnchanged, CopyVerifyAndStopWriteNothingToTheSource) {
  start_cluster(kSchema);
  // No autovacuum or autoanalyze during the measured window: their writes are not the extension's.
  source_->exec("ALTER SYSTEM SET autovacuum = off");
  source_->exec("SELECT pg_reload_conf()");
  source_->exec("VACUUM ANALYZE");
  ASSERT_TRUE(wait_until([&] { return source_->value("SHOW autovacuum") == "off"; }));
  load_config(databases_toml(*source_, dests_, "prod_new") + kRules, users_toml("prod_new"));

  const std::string catalog_before = source_->value(kCatalogSql);
  const std::string stats_before = settled_stats();
  ASSERT_TRUE(stats_before.find("table public.orders ins=1500 upd=10 del=10") != std::string::npos) << stats_before;

  std::string task = control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')");
  ASSERT_TRUE(wait_state(task, "replicating", 240000)) << state(task) << control_->log();
  EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots"), "1");  // the task's own: allowed
  ASSERT_TRUE(wait_caught_up(task)) << state(task);
  EXPECT_EQ(verify_differences("prod", "prod_new"), "");
  EXPECT_EQ(control_->value("SELECT reshard_stop(" + task + ")"), "t");
  ASSERT_TRUE(wait_state(task, "cancelled", 60000)) << state(task);
  EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots"), "0");

  EXPECT_EQ(changed_lines(catalog_before, source_->value(kCatalogSql)), "") << "the source's catalog changed";
  EXPECT_EQ(changed_lines(stats_before, settled_stats()), "") << "rows were written on the source";
}

}  // namespace
}  // namespace pgdog_reshard::test
