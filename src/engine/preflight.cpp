// Pre-flight (preflight.h): reads the catalogs of every primary of both clusters and creates
// nothing, so that a reshard that cannot succeed fails before it has left anything behind.
#include "engine/preflight.h"

#include "engine/apply_origin.h"

#include "engine/cluster.h"
#include "engine/schema_sync.h"

#include <algorithm>
#include <iterator>
#include <map>
#include <memory>
#include <utility>

#include "core/sql.h"

namespace pgdog_reshard {
namespace {

using Params = std::vector<std::optional<std::string>>;

// ---------------------------------------------------------------------------------------------
// Shards and their connections

// The primary of one shard of one cluster, connected.
struct Shard {
  std::string side;  // "source" or "destination"
  std::string cluster;
  int number = 0;
  const Database *db = nullptr;
  std::unique_ptr<Connection> conn;

  std::string server() const { return db->host + ":" + std::to_string(db->port); }
  // How every message names a shard: shard 0 of source cluster "prod" (10.0.0.1:5432/app).
  std::string where() const {
    return "shard " + std::to_string(number) + " of " + side + " cluster " + quote_ident(cluster) + " (" +
           server() + "/" + db->database_name + ")";
  }
  Result query(std::string_view sql, const Params &params = {}) { return conn->exec_params(sql, params); }
};

std::string join(const std::vector<std::string> &items, const std::string &separator = ", ") {
  std::string out;
  for (const std::string &item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

std::string known_clusters(const Config &config) {
  std::vector<std::string> names;
  for (const Database &db : config.databases) {
    if (std::find(names.begin(), names.end(), db.name) == names.end()) names.push_back(db.name);
  }
  return names.empty() ? "(none)" : join(names);
}

void check_cluster_known(const Config &config, const std::string &side, const std::string &name) {
  if (config.has_cluster(name)) return;
  throw Error(sqlstate::kUndefinedObject,
              side + " cluster " + quote_ident(name) + " is not in the configuration",
              "A cluster is the name shared by [[databases]] entries of pgdog.toml.",
              "Use one of the configured clusters (" + known_clusters(config) +
                  "), or add the cluster to pgdog.toml and reload the configuration.");
}

void check_request(const Config &config, const ReshardRequest &request) {
  check_cluster_known(config, "source", request.source);
  check_cluster_known(config, "destination", request.destination);
  if (request.source == request.destination) {
    throw Error(
        sqlstate::kInvalidParameterValue,
        "source and destination are the same cluster " + quote_ident(request.source),
        "The destination receives a resharded copy of the source: it must be other databases.",
        "Reshard into another cluster: declare the new shards as [[databases]] entries with a new name.");
  }
  if (request.parallel_copies < 0) {
    throw Error(sqlstate::kInvalidParameterValue,
                "parallel_copies must not be negative, not " + std::to_string(request.parallel_copies));
  }
}

// A failed connection names the cluster and shard; the SQLSTATE (28P01, 08001) is kept.
[[noreturn]] void connect_failed(const Shard &shard, const Error &e) {
  std::string detail = e.what();
  if (!e.detail().empty()) detail += "\n" + e.detail();
  std::string hint =
      e.sqlstate() == sqlstate::kInvalidPassword
          ? "Check the password of user " + quote_ident(shard.db->user) + " for cluster " +
                quote_ident(shard.cluster) + " (users.toml or the [[databases]] entry) and pg_hba.conf on " +
                shard.server() + "."
          : "Check host, port and database_name of the [[databases]] entry, and that the server at " +
                shard.server() + " is running and accepts connections from this node.";
  throw Error(e.sqlstate(), "cannot connect to " + shard.where(), detail, hint);
}

std::vector<Shard> connect_cluster(const Config &config, const std::string &side, const std::string &cluster,
                                   TaskContext &ctx) {
  std::vector<Shard> shards;
  for (int number = 0; number < config.shard_count(cluster); number++) {
    ctx.check_interrupts();
    Shard shard{side, cluster, number, &config.primary(cluster, number), nullptr};
    ConnParams params = connection_params(*shard.db);
    params.application_name = "pgdog_reshard preflight";
    try {
      shard.conn = std::make_unique<Connection>(params, ctx);
    } catch (const Error &e) {
      if (e.sqlstate() != sqlstate::kInvalidPassword && e.sqlstate() != sqlstate::kUnableToConnect) throw;
      connect_failed(shard, e);
    }
    shards.push_back(std::move(shard));
  }
  return shards;
}

// ---------------------------------------------------------------------------------------------
// Server-wide facts

struct ServerFacts {
  std::string wal_level;
  int64_t max_slots = 0, used_slots = 0, max_senders = 0, used_senders = 0;
  std::string encoding;
  // Which database of which running server this is. The start time tells a clone made with
  // pg_basebackup (same system_identifier) from the server itself.
  std::string identity;
  bool in_recovery = false;
  bool can_replicate = false;
  bool can_use_origins = false;  // the replication origin functions the apply calls (destinations)
  int64_t used_origins = 0;      // origins take the same max_replication_slots states
};

// pg_stat_replication has a row for every WAL sender, whatever it does, and is readable by anyone:
// it counts exactly what max_wal_senders limits. Amazon RDS grants replication through membership
// in rds_replication instead of the REPLICATION attribute.
constexpr const char *kFactsSql = R"(
SELECT current_setting('wal_level'),
       current_setting('max_replication_slots')::bigint,
       (SELECT count(*) FROM pg_replication_slots),
       current_setting('max_wal_senders')::bigint,
       (SELECT count(*) FROM pg_stat_replication),
       current_setting('server_encoding'),
       (SELECT system_identifier FROM pg_control_system())::text || ' ' ||
           pg_postmaster_start_time()::text || ' ' || current_database(),
       pg_is_in_recovery(),
       (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user) OR
           EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication'
                   AND pg_has_role(current_user, oid, 'MEMBER')),
       has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE') AND
           has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE') AND
           has_function_privilege('pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)', 'EXECUTE') AND
           has_function_privilege('pg_replication_origin_drop(text)', 'EXECUTE'),
       (SELECT count(*) FROM pg_replication_origin))";

ServerFacts read_facts(Shard &shard) {
  Result r = shard.query(kFactsSql);
  ServerFacts f;
  f.wal_level = r.value(0, 0);
  f.max_slots = std::stoll(std::string(r.value(0, 1)));
  f.used_slots = std::stoll(std::string(r.value(0, 2)));
  f.max_senders = std::stoll(std::string(r.value(0, 3)));
  f.used_senders = std::stoll(std::string(r.value(0, 4)));
  f.encoding = r.value(0, 5);
  f.identity = r.value(0, 6);
  f.in_recovery = r.value(0, 7) == "t";
  f.can_replicate = r.value(0, 8) == "t";
  f.can_use_origins = r.value(0, 9) == "t";
  f.used_origins = std::stoll(std::string(r.value(0, 10)));
  return f;
}

// Two shards in one database would copy rows onto the rows they came from (or two shards into one).
void check_distinct_databases(const std::vector<Shard *> &shards, const std::vector<ServerFacts> &facts) {
  for (size_t i = 0; i < shards.size(); i++) {
    for (size_t j = i + 1; j < shards.size(); j++) {
      if (facts[i].identity != facts[j].identity) continue;
      throw Error(sqlstate::kInvalidParameterValue,
                  shards[i]->where() + " and " + shards[j]->where() + " are the same database",
                  "Both connections reach one server (same system_identifier and start time) and the same "
                  "database.",
                  "Every shard of the source and the destination must be a database of its own.");
    }
  }
}

void check_primary(const Shard &shard, const ServerFacts &f) {
  if (!f.in_recovery) return;
  throw Error(
      sqlstate::kObjectNotInPrerequisiteState, shard.where() + " is a standby",
      "pg_is_in_recovery() is true: it cannot be written to, and PostgreSQL 15 cannot create a logical "
      "replication slot on it.",
      "Mark the shard's primary with role = \"primary\" in pgdog.toml.");
}

// `what` of `setting`: `used` taken, `needed` more wanted (`why`).
void check_free(const Shard &shard, const std::string &what, const std::string &setting, int64_t max,
                int64_t used, int64_t needed, const std::string &view,
                const std::string &why = "resharding needs one for the replication stream and one per parallel copy") {
  int64_t free = std::max<int64_t>(max - used, 0);
  if (free >= needed) return;
  throw Error(
      sqlstate::kConfigurationLimitExceeded,
      shard.where() + " has " + std::to_string(free) + " free " + what + ", needs " + std::to_string(needed),
      setting + " = " + std::to_string(max) + ", " + std::to_string(used) + " in use (" + view + "); " + why + ".",
      "Set " + setting + " to at least " + std::to_string(used + needed) + " on " + shard.server() +
          " (a restart is needed), or free some of those in use.");
}

void check_source_server(const Shard &shard, const ServerFacts &f, const ReshardRequest &request) {
  check_primary(shard, f);
  if (f.wal_level != "logical") {
    throw Error(
        sqlstate::kObjectNotInPrerequisiteState,
        "wal_level is " + quote_literal(f.wal_level) + " on " + shard.where(),
        "Logical replication slots need wal_level = logical.",
        "Set wal_level = logical in postgresql.conf of " + shard.server() + " and restart the server.");
  }
  if (!f.can_replicate) {
    throw Error(sqlstate::kInsufficientPrivilege,
                "user " + quote_ident(shard.db->user) + " may not replicate from " + shard.where(),
                "Creating and reading logical replication slots needs the REPLICATION attribute.",
                "ALTER ROLE " + quote_ident(shard.db->user) + " REPLICATION");
  }
  int64_t needed = 1 + request.parallel_copies;
  check_free(shard, "replication slots", "max_replication_slots", f.max_slots, f.used_slots, needed,
             "pg_replication_slots");
  check_free(shard, "WAL senders", "max_wal_senders", f.max_senders, f.used_senders, needed,
             "pg_stat_replication");
}

// The apply records its progress in a replication origin per source shard on every destination
// shard (what makes a replay exactly-once), in the commit of each batch.
void check_destination_server(const Shard &shard, const ServerFacts &f, int source_shards) {
  check_primary(shard, f);
  if (!f.can_use_origins) {
    throw Error(sqlstate::kInsufficientPrivilege,
                "user " + quote_ident(shard.db->user) + " may not use replication origins on " + shard.where(),
                "The changes applied there record their source position in a replication origin.",
                kOriginPrivilegeHint);
  }
  check_free(shard, "replication origins", "max_replication_slots", f.max_slots, f.used_origins, source_shards,
             "pg_replication_origin", "the apply needs one replication origin per source shard");
}

// Every shard's encoding must be the first source shard's: the copy moves text as bytes, and the
// sharding hash is of those bytes.
void check_encodings(const std::vector<Shard *> &shards, const std::vector<ServerFacts> &facts) {
  for (size_t i = 1; i < shards.size(); i++) {
    if (facts[i].encoding == facts[0].encoding) continue;
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "the encoding of " + shards[i]->where() + " differs from the source's",
                "server_encoding is " + facts[i].encoding + " there and " + facts[0].encoding + " on " +
                    shards[0]->where() + ".",
                "Create the database with ENCODING " + quote_literal(facts[0].encoding) +
                    " (CREATE DATABASE ... TEMPLATE template0).");
  }
}

// ---------------------------------------------------------------------------------------------
// The publication and its tables, as one source shard's catalog has them

struct CatalogColumn {
  std::string name;
  uint32_t type_oid = 0;
  std::string type_name;  // format_type(), for messages
  bool not_null = false;
  bool generated = false;
};

struct CatalogTable {
  uint32_t oid = 0;
  std::string schema, name;
  std::vector<std::pair<std::string, std::string>> ancestors;  // partitioned parents, nearest first
  char replident = 'd';
  int64_t rows = 0, bytes = 0;
  std::vector<CatalogColumn> columns;       // attnum order, generated ones included
  std::vector<std::string> primary_key;     // key columns of the primary key
  std::vector<std::string> identity_index;  // key columns of the REPLICA IDENTITY USING INDEX index

  std::string qualified() const { return quote_qualified(schema, name); }
  const CatalogColumn *column(const std::string &column_name) const {
    for (const CatalogColumn &c : columns) {
      if (c.name == column_name) return &c;
    }
    return nullptr;
  }
};

void check_publication(Shard &shard, const std::string &publication, TaskContext &ctx) {
  Result pub = shard.query(
      "SELECT pubviaroot, pubinsert AND pubupdate AND pubdelete FROM pg_publication "
      "WHERE pubname = $1",
      {publication});
  if (pub.rows() == 0) {
    throw Error(sqlstate::kUndefinedObject,
                "publication " + quote_ident(publication) + " does not exist on " + shard.where(),
                "Every source shard needs the publication the reshard streams from.",
                "CREATE PUBLICATION " + quote_ident(publication) + " FOR ALL TABLES");
  }
  if (pub.value(0, 1) != "t") {
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "publication " + quote_ident(publication) + " on " + shard.where() +
                    " does not publish every INSERT, UPDATE and DELETE",
                "Changes it leaves out would be missing from the destination.",
                "ALTER PUBLICATION " + quote_ident(publication) +
                    " SET (publish = 'insert, update, delete, truncate')");
  }
  if (pub.value(0, 0) == "t" && shard.number == 0) {
    ctx.log(LogLevel::Info, "publication " + quote_ident(publication) +
                                " publishes via the partition root; its partitioned tables are copied as "
                                "their leaf partitions");
  }
}

// PostgreSQL 15 publications can filter rows and columns; a reshard must move every row whole.
void check_unfiltered(Shard &shard, const std::string &publication) {
  Result r = shard.query(
      "SELECT n.nspname, c.relname FROM pg_publication_rel pr"
      " JOIN pg_publication p ON p.oid = pr.prpubid"
      " JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
      " WHERE p.pubname = $1 AND (pr.prqual IS NOT NULL OR pr.prattrs IS NOT NULL)"
      " ORDER BY 1, 2 LIMIT 1",
      {publication});
  if (r.rows() == 0) return;
  std::string table = quote_qualified(r.value(0, 0), r.value(0, 1));
  throw Error(sqlstate::kFeatureNotSupported,
              "publication " + quote_ident(publication) + " filters the rows or columns of table " + table +
                  " on " + shard.where(),
              "A reshard copies every row and column; a filtered stream would leave the copy incomplete.",
              "Publish the table without a WHERE clause or column list.");
}

// The published tables that hold data: pg_publication_tables lists a partitioned table itself when
// publish_via_partition_root is true and its leaves when false; pg_partition_tree expands either
// to the leaves. It returns nothing for a table outside any partition tree, hence the LEFT JOIN
// and coalesce: such a table stands for itself.
constexpr const char *kPublishedSql = R"(
SELECT DISTINCT c.oid, n.nspname, c.relname, c.relreplident,
       greatest(c.reltuples, 0)::bigint, pg_relation_size(c.oid)
FROM pg_publication_tables p
JOIN pg_namespace pn ON pn.nspname = p.schemaname
JOIN pg_class pc ON pc.relnamespace = pn.oid AND pc.relname = p.tablename
LEFT JOIN LATERAL pg_partition_tree(pc.oid) t ON t.isleaf
JOIN pg_class c ON c.oid = coalesce(t.relid, pc.oid)
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.pubname = $1 AND c.relkind = 'r'
ORDER BY 2, 3)";

std::vector<CatalogTable> published_tables(Shard &shard, const std::string &publication) {
  Result r = shard.query(kPublishedSql, {publication});
  std::vector<CatalogTable> tables(r.rows());
  for (int i = 0; i < r.rows(); i++) {
    CatalogTable &t = tables[i];
    t.oid = static_cast<uint32_t>(std::stoul(std::string(r.value(i, 0))));
    t.schema = r.value(i, 1);
    t.name = r.value(i, 2);
    t.replident = r.value(i, 3).empty() ? 'd' : r.value(i, 3)[0];
    t.rows = std::stoll(std::string(r.value(i, 4)));
    t.bytes = std::stoll(std::string(r.value(i, 5)));
  }
  return tables;
}

// '{1,2,3}': OIDs are digits only, so the array literal needs no escaping.
std::string oid_array(const std::vector<CatalogTable> &tables) {
  std::vector<std::string> oids;
  for (const CatalogTable &t : tables) oids.push_back(std::to_string(t.oid));
  return "{" + join(oids, ",") + "}";
}

constexpr const char *kColumnsSql = R"(
SELECT a.attrelid, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.attgenerated <> ''
FROM pg_attribute a
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum)";

// Key columns only (k.ord <= indnkeyatts): INCLUDE columns are not part of the replica identity.
constexpr const char *kIdentitySql = R"(
SELECT i.indrelid, i.indisprimary, i.indisreplident, a.attname
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = ANY($1::oid[]) AND (i.indisprimary OR i.indisreplident) AND k.ord <= i.indnkeyatts
ORDER BY i.indrelid, i.indexrelid, k.ord)";

constexpr const char *kAncestorsSql = R"(
SELECT t.leaf, n.nspname, c.relname
FROM unnest($1::oid[]) AS t(leaf)
CROSS JOIN LATERAL pg_partition_ancestors(t.leaf) WITH ORDINALITY AS a(relid, ord)
JOIN pg_class c ON c.oid = a.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE a.relid <> t.leaf
ORDER BY t.leaf, a.ord)";  // nothing for a table outside any partition tree: no ancestors

CatalogColumn read_column(const Result &r, int row) {
  CatalogColumn c;
  c.name = r.value(row, 1);
  c.type_oid = static_cast<uint32_t>(std::stoul(std::string(r.value(row, 2))));
  c.type_name = r.value(row, 3);
  c.not_null = r.value(row, 4) == "t";
  c.generated = r.value(row, 5) == "t";
  return c;
}

// Columns, identity index columns and partition ancestors of every table, three queries in all.
void load_catalog(Shard &shard, std::vector<CatalogTable> &tables) {
  std::map<uint32_t, CatalogTable *> by_oid;
  for (CatalogTable &t : tables) by_oid[t.oid] = &t;
  auto table_of = [&](const Result &r, int row) -> CatalogTable & {
    return *by_oid.at(static_cast<uint32_t>(std::stoul(std::string(r.value(row, 0)))));
  };
  Params oids{oid_array(tables)};
  Result columns = shard.query(kColumnsSql, oids);
  for (int i = 0; i < columns.rows(); i++) table_of(columns, i).columns.push_back(read_column(columns, i));
  Result identity = shard.query(kIdentitySql, oids);
  for (int i = 0; i < identity.rows(); i++) {
    CatalogTable &t = table_of(identity, i);
    if (identity.value(i, 1) == "t") t.primary_key.emplace_back(identity.value(i, 3));
    if (identity.value(i, 2) == "t") t.identity_index.emplace_back(identity.value(i, 3));
  }
  Result ancestors = shard.query(kAncestorsSql, oids);
  for (int i = 0; i < ancestors.rows(); i++) {
    table_of(ancestors, i).ancestors.emplace_back(ancestors.value(i, 1), ancestors.value(i, 2));
  }
}

std::vector<std::string> qualified_names(const std::vector<CatalogTable> &tables) {
  std::vector<std::string> names;
  for (const CatalogTable &t : tables) names.push_back(t.qualified());
  std::sort(names.begin(), names.end());
  return names;
}

// The names in `a` missing from `b` (both sorted), at most a handful, for a message.
std::string missing_from(const std::vector<std::string> &a, const std::vector<std::string> &b) {
  std::vector<std::string> missing;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(missing));
  if (missing.empty()) return "none";
  size_t shown = std::min<size_t>(missing.size(), 10);
  std::string out = join(std::vector<std::string>(missing.begin(), missing.begin() + shown));
  if (shown < missing.size()) out += " and " + std::to_string(missing.size() - shown) + " more";
  return out;
}

void check_same_tables(const Shard &first, const std::vector<CatalogTable> &first_tables, const Shard &other,
                       const std::vector<CatalogTable> &other_tables, const std::string &publication) {
  std::vector<std::string> a = qualified_names(first_tables), b = qualified_names(other_tables);
  if (a == b) return;
  throw Error(sqlstate::kObjectNotInPrerequisiteState,
              "publication " + quote_ident(publication) + " publishes different tables on " + first.where() +
                  " and " + other.where(),
              "Only on shard " + std::to_string(first.number) + ": " + missing_from(a, b) +
                  ". Only on shard " + std::to_string(other.number) + ": " + missing_from(b, a) + ".",
              "Make the schema and the publication the same on every source shard.");
}

void check_not_empty(const Shard &shard, const std::vector<CatalogTable> &tables,
                     const std::string &publication) {
  if (!tables.empty()) return;
  throw Error(sqlstate::kObjectNotInPrerequisiteState,
              "publication " + quote_ident(publication) + " publishes no tables on " + shard.where(), {},
              "Add the tables to reshard: ALTER PUBLICATION " + quote_ident(publication) +
                  " ADD TABLE ..., or CREATE PUBLICATION ... FOR ALL TABLES.");
}

// ---------------------------------------------------------------------------------------------
// Sharding rules

bool names_table(const ShardedTable &rule, const std::string &schema, const std::string &table) {
  return !rule.table.empty() && rule.table == table && (rule.schema.empty() || rule.schema == schema);
}

bool applies_by_column(const ShardedTable &rule, const std::string &schema,
                       const std::vector<std::string> &columns) {
  return rule.table.empty() && (rule.schema.empty() || rule.schema == schema) &&
         std::find(columns.begin(), columns.end(), rule.column) != columns.end();
}

std::string rule_column(const ShardedTable *rule) { return "column " + quote_ident(rule->column); }

// Of the candidates, those with a schema win over those without; two equally specific ones are
// ambiguous: which of them routes the rows would be a guess.
const ShardedTable *most_specific(const std::vector<const ShardedTable *> &candidates,
                                  const std::string &table, const char *how) {
  std::vector<const ShardedTable *> with_schema;
  for (const ShardedTable *rule : candidates) {
    if (!rule->schema.empty()) with_schema.push_back(rule);
  }
  const std::vector<const ShardedTable *> &best = with_schema.empty() ? candidates : with_schema;
  if (best.size() > 1) {
    throw Error(
        sqlstate::kObjectNotInPrerequisiteState, "more than one sharding rule applies to table " + table,
        "The [[sharded_tables]] entries of cluster " + quote_ident(best[0]->database) + " for " +
            rule_column(best[0]) + " and " + rule_column(best[1]) + " both " + how + ".",
        "Keep one entry, or add one that names the table (and schema) with the column to shard it by.");
  }
  return best.empty() ? nullptr : best[0];
}

const ShardedTable *named_rule(const std::vector<const ShardedTable *> &rules, const std::string &schema,
                               const std::string &table) {
  std::vector<const ShardedTable *> candidates;
  for (const ShardedTable *rule : rules) {
    if (names_table(*rule, schema, table)) candidates.push_back(rule);
  }
  return most_specific(candidates, quote_qualified(schema, table), "name this table");
}

const ShardedTable *column_rule(const std::vector<const ShardedTable *> &rules, const std::string &schema,
                                const std::string &table, const std::vector<std::string> &columns) {
  std::vector<const ShardedTable *> candidates;
  for (const ShardedTable *rule : rules) {
    if (applies_by_column(*rule, schema, columns)) candidates.push_back(rule);
  }
  return most_specific(candidates, quote_qualified(schema, table),
                       "name no table and a column this table has");
}

void require_column(const ShardedTable &rule, const std::string &qualified,
                    const std::vector<std::string> &columns, const std::string &named) {
  if (std::find(columns.begin(), columns.end(), rule.column) != columns.end()) return;
  std::vector<std::string> quoted;
  for (const std::string &c : columns) quoted.push_back(quote_ident(c));
  throw Error(sqlstate::kUndefinedColumn,
              "sharding column " + quote_ident(rule.column) + " does not exist in table " + qualified,
              "The [[sharded_tables]] entry of cluster " + quote_ident(rule.database) + " for table " +
                  named + " names it; the table's columns are " + join(quoted) + ".",
              "Fix the column in the [[sharded_tables]] entry, or add the column to the table.");
}

std::vector<std::string> column_names(const CatalogTable &t) {
  std::vector<std::string> names;
  for (const CatalogColumn &c : t.columns) names.push_back(c.name);
  return names;
}

// A leaf partition takes a rule naming itself, else one naming its nearest partitioned ancestor
// (rules are written for the table users see), else a column-only rule.
const ShardedTable *rule_for_leaf(const std::vector<const ShardedTable *> &rules, const CatalogTable &t) {
  std::vector<std::string> columns = column_names(t);
  if (const ShardedTable *rule = named_rule(rules, t.schema, t.name)) {
    require_column(*rule, t.qualified(), columns, quote_ident(t.name));
    return rule;
  }
  for (const auto &[schema, parent] : t.ancestors) {
    if (const ShardedTable *rule = named_rule(rules, schema, parent)) {
      require_column(*rule, t.qualified(), columns, quote_ident(parent) + " (its partitioned parent)");
      return rule;
    }
  }
  return column_rule(rules, t.schema, t.name, columns);
}

void warn_unused_rules(const std::vector<const ShardedTable *> &rules,
                       const std::vector<CatalogTable> &tables, const std::string &publication,
                       TaskContext &ctx) {
  for (const ShardedTable *rule : rules) {
    if (rule->table.empty()) continue;
    bool used = std::any_of(tables.begin(), tables.end(), [&](const CatalogTable &t) {
      if (names_table(*rule, t.schema, t.name)) return true;
      return std::any_of(t.ancestors.begin(), t.ancestors.end(),
                         [&](const auto &a) { return names_table(*rule, a.first, a.second); });
    });
    if (used) continue;
    std::string table =
        rule->schema.empty() ? quote_ident(rule->table) : quote_qualified(rule->schema, rule->table);
    ctx.log(LogLevel::Warning, "the sharding rule of cluster " + quote_ident(rule->database) + " for table " +
                                   table + " matches no table published by " + quote_ident(publication));
  }
}

DataType rule_type_for(KeyType type) {
  switch (type) {
    case KeyType::Text:
      return DataType::Varchar;
    case KeyType::Uuid:
      return DataType::Uuid;
    default:
      return DataType::Bigint;
  }
}

KeyType key_type_of(const CatalogTable &t, const CatalogColumn &column, const ShardedTable &rule) {
  std::string where = "sharding column " + quote_ident(column.name) + " of table " + t.qualified();
  if (column.generated) {
    throw Error(sqlstate::kFeatureNotSupported, where + " is a generated column",
                "Generated columns are not copied nor replicated, so rows cannot be routed by it.",
                "Shard the table by a stored, non-generated column.");
  }
  std::optional<KeyType> type = key_type_from_oid(column.type_oid);
  if (!type) {
    throw Error(sqlstate::kDatatypeMismatch,
                where + " has type " + column.type_name + ", which cannot be hashed",
                "Sharding keys may be smallint, integer, bigint, text, character varying or uuid.",
                "Shard the table by a column of one of those types, or change the column's type.");
  }
  if (rule_type_for(*type) != rule.data_type) {
    throw Error(sqlstate::kDatatypeMismatch,
                where + " has type " + column.type_name + ", but its sharding rule has data_type \"" +
                    data_type_name(rule.data_type) + "\"",
                "The hash of a key depends on its type: routed as another type, rows would land where the "
                "proxy does not look for them.",
                std::string("Set data_type = \"") + data_type_name(rule_type_for(*type)) +
                    "\" in the [[sharded_tables]] entry of cluster " + quote_ident(rule.database) + ".");
  }
  return *type;
}

// ---------------------------------------------------------------------------------------------
// One table's plan, as one source shard has it

std::vector<std::string> identity_columns(const Shard &shard, const CatalogTable &t) {
  std::string problem;
  if (t.replident == 'd' && !t.primary_key.empty()) return t.primary_key;
  if (t.replident == 'i' && !t.identity_index.empty()) return t.identity_index;
  if (t.replident == 'd') problem = "has no primary key or replica identity";
  if (t.replident == 'n') problem = "has REPLICA IDENTITY NOTHING";
  if (t.replident == 'i')
    problem = "has no replica identity index (REPLICA IDENTITY USING INDEX of a dropped index)";
  throw Error(sqlstate::kObjectNotInPrerequisiteState, "table " + t.qualified() + " " + problem,
              "Seen on " + shard.where() +
                  ". Without a replica identity, its UPDATEs and DELETEs cannot be replicated.",
              "ALTER TABLE " + t.qualified() + " ADD PRIMARY KEY (...), or ALTER TABLE " + t.qualified() +
                  " REPLICA IDENTITY FULL");
}

TablePlan plan_table(const Shard &shard, const CatalogTable &t,
                     const std::vector<const ShardedTable *> &rules) {
  TablePlan plan;
  plan.schema = t.schema;
  plan.name = t.name;
  for (const CatalogColumn &c : t.columns) {
    if (!c.generated) plan.columns.push_back(c.name);
  }
  plan.replica_identity_full = t.replident == 'f';
  plan.identity_columns = plan.replica_identity_full ? plan.columns : identity_columns(shard, t);
  plan.estimated_rows = t.rows;
  plan.estimated_bytes = t.bytes;
  if (const ShardedTable *rule = rule_for_leaf(rules, t)) {
    const CatalogColumn &column = *t.column(rule->column);
    ShardingKey key;
    key.column = column.name;
    key.type = key_type_of(t, column, *rule);
    key.index = static_cast<int>(std::find(plan.columns.begin(), plan.columns.end(), column.name) -
                                 plan.columns.begin());
    key.rule = rule;
    plan.key = key;
  }
  return plan;
}

// NULL keys are refused, never broadcast to every shard (PgDog's COPY does that: duplicates) nor put
// on shard 0 (PostgreSQL's hash partitioning does that: invisible to a proxy routing by value).
// The scan stops at the first NULL; an index on the key (which a sharding key usually has) makes it
// a lookup. ONLY: COPY of this table reads its own rows, not those of inheritance children.
void check_no_null_keys(Shard &shard, const CatalogTable &t, const TablePlan &plan) {
  if (!plan.key || t.column(plan.key->column)->not_null) return;
  std::string column = quote_ident(plan.key->column);
  Result r =
      shard.query("SELECT EXISTS (SELECT 1 FROM ONLY " + t.qualified() + " WHERE " + column + " IS NULL)");
  if (r.value(0, 0) != "t") return;
  throw Error(
      sqlstate::kNullValueNotAllowed,
      "sharding column " + column + " of table " + t.qualified() + " holds NULL on " + shard.where(),
      "A row without a sharding key belongs to no shard; resharding refuses NULL keys rather than copy "
      "such rows to every shard or to an arbitrary one.",
      "Delete or fix those rows, then ALTER TABLE " + t.qualified() + " ALTER COLUMN " + column +
          " SET NOT NULL so that no new ones appear.");
}

// What must be the same on every source shard for one plan to fit them all.
std::string shape(const TablePlan &plan) {
  std::string out = "columns (" + quote_ident_list(plan.columns) + "), replica identity " +
                    (plan.replica_identity_full ? std::string("FULL")
                                                : "(" + quote_ident_list(plan.identity_columns) + ")");
  if (plan.key) out += std::string(", sharding key of type ") + key_type_name(plan.key->type);
  return out;
}

void check_same_shape(const Shard &first, const TablePlan &a, const Shard &other, const TablePlan &b) {
  if (shape(a) == shape(b)) return;
  throw Error(sqlstate::kObjectNotInPrerequisiteState,
              "table " + a.qualified() + " differs between " + first.where() + " and " + other.where(),
              "Shard " + std::to_string(first.number) + ": " + shape(a) + ". Shard " +
                  std::to_string(other.number) + ": " + shape(b) + ".",
              "Make the table's definition the same on every source shard.");
}

// Plans every table on every source shard: identity, rule and NULL keys are checked on each (they
// can drift apart), then the first shard's plan is kept, with row and byte estimates summed.
std::vector<TablePlan> plan_tables(std::vector<Shard> &sources,
                                   std::vector<std::vector<CatalogTable>> &catalogs,
                                   const std::vector<const ShardedTable *> &rules, TaskContext &ctx) {
  std::vector<TablePlan> plans;
  for (size_t s = 0; s < sources.size(); s++) {
    for (size_t i = 0; i < catalogs[s].size(); i++) {
      ctx.check_interrupts();
      // Same sorted names on every shard (check_same_tables), so index i is one table everywhere.
      TablePlan plan = plan_table(sources[s], catalogs[s][i], rules);
      check_no_null_keys(sources[s], catalogs[s][i], plan);
      if (s == 0) {
        plans.push_back(std::move(plan));
        continue;
      }
      check_same_shape(sources[0], plans[i], sources[s], plan);
      plans[i].estimated_rows += plan.estimated_rows;
      plans[i].estimated_bytes += plan.estimated_bytes;
    }
  }
  return plans;
}

// ---------------------------------------------------------------------------------------------
// Destination tables

// The plan's tables that exist on the shard, as indexes into plans.
std::vector<size_t> present_tables(Shard &shard, const std::vector<TablePlan> &plans) {
  std::vector<std::string> names;
  for (const TablePlan &p : plans) names.push_back(p.qualified());
  Result present = shard.query(
      "SELECT o.i FROM unnest($1::text[]) WITH ORDINALITY AS o(name, i)"
      " WHERE to_regclass(o.name) IS NOT NULL ORDER BY o.i",
      {text_array(names)});
  std::vector<size_t> out;
  for (int row = 0; row < present.rows(); row++) out.push_back(std::stoul(std::string(present.value(row, 0))) - 1);
  return out;
}

// A copy writes every row: the tables must be absent (schema pre creates them) or empty.
void check_destination_empty(Shard &shard, const std::vector<TablePlan> &plans, TaskContext &ctx) {
  for (size_t i : present_tables(shard, plans)) {
    ctx.check_interrupts();
    const TablePlan &plan = plans[i];
    if (shard.query("SELECT EXISTS (SELECT 1 FROM " + plan.qualified() + ")").value(0, 0) != "t") continue;
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "table " + plan.qualified() + " on " + shard.where() + " is not empty",
                "The copy writes every row of the source table; rows already there would be duplicated or "
                "conflict.",
                "TRUNCATE " + plan.qualified() + " there, or reshard into an empty cluster.");
  }
}

// Without schema sync the copy writes into tables the user made.
void check_destination_created(Shard &shard, const std::vector<TablePlan> &plans) {
  std::vector<size_t> present = present_tables(shard, plans);
  for (size_t i = 0; i < plans.size(); i++) {
    if (std::find(present.begin(), present.end(), i) != present.end()) continue;
    throw Error(sqlstate::kUndefinedTable, "table " + plans[i].qualified() + " does not exist on " + shard.where(),
                "pgdog_reshard.schema_sync is off: the copy creates no tables.",
                "Create the source's tables there (with their indexes and constraints), or SET "
                "pgdog_reshard.schema_sync = on.");
  }
}

std::string schema_sync_call(const ReshardRequest &request, const char *phase) {
  return "SELECT reshard_schema_sync(" + quote_literal(request.source) + ", " + quote_literal(request.destination) +
         ", " + quote_literal(request.publication) + ", '" + phase + "')";
}

// Whether the table has a unique index the apply's upsert can name (ON CONFLICT (identity)): valid,
// immediate, without predicate or expression, on exactly the identity columns.
bool has_identity_key(Shard &shard, const TablePlan &plan) {
  return shard.query(
                  "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1::regclass AND i.indisunique"
                  " AND i.indisvalid AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL"
                  " AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a"
                  "      WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))"
                  "     = (SELECT array_agg(c ORDER BY c) FROM unnest($2::text[]) c))",
                  {plan.qualified(), text_array(plan.identity_columns)})
             .value(0, 0) == "t";
}

// A stream without a copy applies changes into the tables as they are: each must exist already,
// with the key its upserts conflict on (schema sync post builds keys; pre only makes the tables).
void check_destination_present(Shard &shard, const std::vector<TablePlan> &plans, const ReshardRequest &request) {
  std::vector<size_t> present = present_tables(shard, plans);
  for (size_t i = 0; i < plans.size(); i++) {
    if (std::find(present.begin(), present.end(), i) != present.end()) continue;
    throw Error(sqlstate::kUndefinedTable,
                "table " + plans[i].qualified() + " does not exist on " + shard.where(),
                "Streaming without a copy applies the source's changes to tables that are already there; it "
                "creates neither tables nor rows.",
                "Create the tables first: " + schema_sync_call(request, "pre") + ", then " +
                    schema_sync_call(request, "post") + ", each once the one before is done.");
  }
  for (const TablePlan &plan : plans) {
    if (plan.replica_identity_full || has_identity_key(shard, plan)) continue;
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "table " + plan.qualified() + " on " + shard.where() + " has no unique index on (" +
                    quote_ident_list(plan.identity_columns) + ")",
                "The stream applies inserts as upserts on the source's replica identity, which needs a unique "
                "index on the same columns.",
                "Build the keys and indexes: " + schema_sync_call(request, "post") + ", and wait until it is done.");
  }
}

}  // namespace

const ShardedTable *rule_for_table(const std::vector<const ShardedTable *> &rules, const std::string &schema,
                                   const std::string &table, const std::vector<std::string> &columns) {
  if (const ShardedTable *rule = named_rule(rules, schema, table)) {
    require_column(*rule, quote_qualified(schema, table), columns, quote_ident(table));
    return rule;
  }
  return column_rule(rules, schema, table, columns);
}

ReshardPlan preflight(const Config &config, const ReshardRequest &request, TaskContext &ctx) {
  check_request(config, request);
  std::vector<Shard> sources = connect_cluster(config, "source", request.source, ctx);
  std::vector<Shard> destinations = connect_cluster(config, "destination", request.destination, ctx);

  // Sources first, so that index 0 is the first source shard: the reference for encodings.
  std::vector<Shard *> all;
  std::vector<ServerFacts> facts;
  for (std::vector<Shard> *cluster : {&sources, &destinations}) {
    for (Shard &shard : *cluster) {
      all.push_back(&shard);
      facts.push_back(read_facts(shard));
    }
  }
  check_distinct_databases(all, facts);
  for (size_t i = 0; i < all.size(); i++) {
    if (!request.replicate) {
      check_primary(*all[i], facts[i]);
    } else if (i < sources.size()) {
      check_source_server(sources[i], facts[i], request);
    } else {
      check_destination_server(*all[i], facts[i], static_cast<int>(sources.size()));
    }
  }

  std::vector<std::vector<CatalogTable>> catalogs;
  for (Shard &shard : sources) {
    ctx.check_interrupts();
    check_publication(shard, request.publication, ctx);
    check_unfiltered(shard, request.publication);
    catalogs.push_back(published_tables(shard, request.publication));
    check_not_empty(shard, catalogs.back(), request.publication);
    check_same_tables(sources[0], catalogs[0], shard, catalogs.back(), request.publication);
    load_catalog(shard, catalogs.back());
  }

  std::vector<const ShardedTable *> rules = config.rules_for(request.destination);
  ReshardPlan plan;
  plan.source_shards = static_cast<int>(sources.size());
  plan.destination_shards = static_cast<int>(destinations.size());
  plan.tables = plan_tables(sources, catalogs, rules, ctx);
  plan.encoding = facts[0].encoding;
  warn_unused_rules(rules, catalogs[0], request.publication, ctx);

  check_encodings(all, facts);
  if (request.copy && request.schema_sync) {
    for (Shard &shard : sources) pg_dump_for(shard.conn->server_version());
  }
  for (Shard &shard : destinations) {
    ctx.check_interrupts();
    if (request.copy) {
      if (!request.schema_sync) check_destination_created(shard, plan.tables);
      check_destination_empty(shard, plan.tables, ctx);
    } else {
      check_destination_present(shard, plan.tables, request);
    }
  }
  return plan;
}

}  // namespace pgdog_reshard
