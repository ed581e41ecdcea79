// pgdog.toml / users.toml parsing: the documented example, real PgDog configs with sections we do
// not read, and every mistake parse_config must reject (with F0000, the object named, no password).
#include "core/config.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace pgdog_reshard {
namespace {

const char *kSecret = "s3cr3t-pw";

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << (text) << "\" lacks \"" << (part) << "\""

// Every cluster used below has a users.toml user, so errors come from the part under test.
const char *kUsers = R"(
[[users]]
name = "app"
database = "prod"
password = "s3cr3t-pw"

[[users]]
name = "app"
database = "prod_2x"
password = "s3cr3t-pw"
)";

// prod (1 shard) and prod_2x (2 shards); sharding tests append their rules to it.
const std::string kClusters = R"(
[[databases]]
name = "prod"
host = "10.0.0.1"
password = "s3cr3t-pw"

[[databases]]
name = "prod_2x"
host = "10.0.1.1"
shard = 0

[[databases]]
name = "prod_2x"
host = "10.0.1.2"
shard = 1
)";

// Parses a config that must be rejected and checks what every config error owes its reader:
// SQLSTATE F0000 and no password in the message, detail or hint.
Error rejected(const std::string &pgdog, std::optional<std::string_view> users = kUsers) {
  try {
    parse_config(pgdog, users);
  } catch (const Error &e) {
    EXPECT_EQ(e.sqlstate(), "F0000") << e.what();
    for (const std::string &text : {std::string(e.what()), e.detail(), e.hint()}) {
      EXPECT_EQ(text.find(kSecret), std::string::npos) << "password shown in: " << text;
    }
    return e;
  }
  ADD_FAILURE() << "config accepted:\n" << pgdog;
  return Error("", "");
}

std::string message(const std::string &pgdog, std::optional<std::string_view> users = kUsers) {
  return rejected(pgdog, users).what();
}

std::string with_rule(const std::string &rule) { return kClusters + rule; }

// --- The documented example (pgdog-facts.md section 2) ---

const char *kExample = R"(
[[databases]]          # one entry per host; repeated name = one cluster
name = "prod"          # cluster name used by RESHARD
host = "10.0.0.1"
port = 5432            # default 5432
database_name = "app"  # default = name
shard = 0              # default 0
role = "primary"       # primary | replica | auto

[[databases]]
name = "prod_2x"
host = "10.0.1.1"
database_name = "app"
shard = 0

[[databases]]
name = "prod_2x"
host = "10.0.1.2"
database_name = "app"
shard = 1

[[sharded_tables]]     # no `name`: every table with this column is sharded by it
database = "prod_2x"
column = "user_id"
data_type = "bigint"   # bigint | varchar | uuid

[[sharded_tables]]     # `name` scopes the rule to one table
database = "prod_2x"
name = "users"
column = "id"
data_type = "bigint"

[[sharded_tables.mapping]]   # list/range rules attach to the preceding sharded_tables entry
values = [1, 2, 3]
shard = 0

[admin]
name = "admin"
user = "admin"
password = "..."
)";

const char *kExampleUsers = R"(
[[users]]
name = "app"
database = "prod"
password = "app-pw"

[[users]]
name = "app"
database = "prod_2x"
password = "app2-pw"

[[users]]
name = "resharder"
database = "prod_2x"
password = "admin-pw"
schema_admin = true
)";

TEST(ConfigExample, DatabasesWithDefaults) {
  Config c = parse_config(kExample, std::string_view(kExampleUsers));
  ASSERT_EQ(c.databases.size(), 3u);
  const Database &prod = c.databases[0];
  EXPECT_EQ(prod.name, "prod");
  EXPECT_EQ(prod.host, "10.0.0.1");
  EXPECT_EQ(prod.port, 5432);
  EXPECT_EQ(prod.database_name, "app");
  EXPECT_EQ(prod.shard, 0);
  EXPECT_EQ(prod.role, Role::Primary);
  EXPECT_FALSE(prod.resharding_only);
  const Database &second = c.databases[2];
  EXPECT_EQ(second.name, "prod_2x");
  EXPECT_EQ(second.host, "10.0.1.2");
  EXPECT_EQ(second.port, 5432);
  EXPECT_EQ(second.shard, 1);
  EXPECT_EQ(second.role, Role::Primary);
}

TEST(ConfigExample, CredentialsPreferSchemaAdmin) {
  Config c = parse_config(kExample, std::string_view(kExampleUsers));
  EXPECT_EQ(c.databases[0].user, "app");
  EXPECT_EQ(c.databases[0].password, "app-pw");
  // prod_2x lists "app" first, but "resharder" is its schema_admin.
  EXPECT_EQ(c.databases[1].user, "resharder");
  EXPECT_EQ(c.databases[1].password, "admin-pw");
  EXPECT_EQ(c.databases[2].user, "resharder");
  ASSERT_EQ(c.users.size(), 3u);
  EXPECT_TRUE(c.users[2].schema_admin);
  EXPECT_FALSE(c.users[0].schema_admin);
}

TEST(ConfigExample, ShardedTables) {
  Config c = parse_config(kExample, std::string_view(kExampleUsers));
  ASSERT_EQ(c.sharded_tables.size(), 2u);
  const ShardedTable &any = c.sharded_tables[0];
  EXPECT_EQ(any.database, "prod_2x");
  EXPECT_EQ(any.table, "");
  EXPECT_EQ(any.schema, "");
  EXPECT_EQ(any.column, "user_id");
  EXPECT_EQ(any.data_type, DataType::Bigint);
  EXPECT_TRUE(any.is_hash());
  const ShardedTable &users = c.sharded_tables[1];
  EXPECT_EQ(users.table, "users");
  EXPECT_EQ(users.column, "id");
  ASSERT_EQ(users.mappings.size(), 1u);
  EXPECT_EQ(users.mappings[0].kind, Mapping::Kind::List);
  EXPECT_EQ(users.mappings[0].values, (std::vector<Key>{int64_t{1}, int64_t{2}, int64_t{3}}));
  EXPECT_EQ(users.mappings[0].shard, 0);
}

TEST(ConfigExample, Accessors) {
  Config c = parse_config(kExample, std::string_view(kExampleUsers));
  EXPECT_TRUE(c.has_cluster("prod"));
  EXPECT_TRUE(c.has_cluster("prod_2x"));
  EXPECT_FALSE(c.has_cluster("prod_4x"));
  EXPECT_EQ(c.shard_count("prod"), 1);
  EXPECT_EQ(c.shard_count("prod_2x"), 2);
  EXPECT_EQ(c.shard_count("nope"), 0);
  EXPECT_EQ(c.primary("prod_2x", 1).host, "10.0.1.2");
  EXPECT_EQ(c.primary("prod", 0).host, "10.0.0.1");
  EXPECT_EQ(c.rules_for("prod_2x").size(), 2u);
  EXPECT_EQ(c.rules_for("prod_2x")[1]->table, "users");
  EXPECT_TRUE(c.rules_for("prod").empty());
  try {
    c.primary("prod_2x", 2);
    ADD_FAILURE() << "no error for a missing shard";
  } catch (const Error &e) {
    EXPECT_EQ(e.sqlstate(), "42704");
    EXPECT_CONTAINS(e.what(), "\"prod_2x\"");
  }
}

TEST(ConfigExample, RoleNames) {
  EXPECT_STREQ(role_name(Role::Primary), "primary");
  EXPECT_STREQ(role_name(Role::Replica), "replica");
  EXPECT_STREQ(role_name(Role::Auto), "auto");
}

// --- A real-looking PgDog config: everything we do not read is ignored ---

TEST(ConfigPgDog, UnreadSectionsAndKeysAreIgnored) {
  const char *pgdog = R"(
[general]
host = "0.0.0.0"
port = 6432
workers = 2
default_pool_size = 10
pooler_mode = "transaction"
load_balancing_strategy = "random"
tls_certificate = "/etc/pgdog/cert.pem"

[admin]
name = "admin"
password = "s3cr3t-pw"

[tcp]
keepalive = true

[[plugins]]
name = "pgdog_routing"

[[databases]]
name = "prod"
host = "db-0.internal"
port = 5433
role = "primary"
pool_size = 40
statement_timeout = 30_000
mirror_of = "nothing"

[[databases]]
name = "prod"
host = "db-0-replica.internal"
role = "replica"
resharding_only = true
read_only = true

[[sharded_schemas]]
database = "prod"
name = "customer_a"
shard = 0

[[omnisharded_tables]]
database = "prod"
tables = ["countries"]

[[mirroring]]
source_db = "prod"
destination_db = "prod"

[multi_tenant]
column = "tenant_id"
)";
  const char *users = R"(
[[users]]
name = "app"
database = "prod"
password = "app-pw"
pool_size = 20
server_user = "app_server"
read_only = false
)";
  Config c = parse_config(pgdog, std::string_view(users));
  ASSERT_EQ(c.databases.size(), 2u);
  EXPECT_EQ(c.databases[0].port, 5433);
  EXPECT_EQ(c.databases[1].role, Role::Replica);
  EXPECT_TRUE(c.databases[1].resharding_only);
  EXPECT_EQ(c.databases[1].database_name, "prod");
  EXPECT_EQ(c.databases[1].user, "app");
  EXPECT_TRUE(c.sharded_tables.empty());
  EXPECT_EQ(c.primary("prod", 0).host, "db-0.internal");
}

// Copies read from the resharding_only entries when a shard has some (a replica serving the
// application is left alone), else from its replicas; never from the primary.
TEST(ConfigPgDog, CopyReplicasPreferReshardingOnlyEntries) {
  const char *pgdog = R"(
[[databases]]
name = "prod"
host = "p0"
role = "primary"

[[databases]]
name = "prod"
host = "r0-app"
role = "replica"

[[databases]]
name = "prod"
host = "r0-reshard"
role = "replica"
resharding_only = true

[[databases]]
name = "prod"
host = "p1"
shard = 1

[[databases]]
name = "prod"
host = "r1-a"
shard = 1
role = "replica"

[[databases]]
name = "prod"
host = "r1-b"
shard = 1
role = "replica"

[[databases]]
name = "other"
host = "o0"
)";
  const char *users = R"(
[[users]]
name = "app"
database = "prod"
password = "pw"

[[users]]
name = "app"
database = "other"
password = "pw"
)";
  Config c = parse_config(pgdog, std::string_view(users));
  auto hosts = [&](const std::string &cluster, int shard) {
    std::vector<std::string> out;
    for (const Database *db : c.copy_replicas(cluster, shard)) out.push_back(db->host);
    return out;
  };
  EXPECT_EQ(hosts("prod", 0), std::vector<std::string>({"r0-reshard"}));
  EXPECT_EQ(hosts("prod", 1), std::vector<std::string>({"r1-a", "r1-b"}));
  EXPECT_TRUE(hosts("other", 0).empty());
}

TEST(ConfigPgDog, EmptyFilesGiveEmptyConfig) {
  Config c = parse_config("", std::string_view(""));
  EXPECT_TRUE(c.databases.empty());
  EXPECT_TRUE(c.users.empty());
  EXPECT_TRUE(c.sharded_tables.empty());
}

// --- Credentials ---

TEST(ConfigCredentials, FirstUserWithoutSchemaAdmin) {
  const char *users = R"(
[[users]]
name = "first"
database = "prod"
password = "one"
[[users]]
name = "second"
database = "prod"
password = "two"
[[users]]
name = "other"
database = "elsewhere"
schema_admin = true
)";
  Config c = parse_config("[[databases]]\nname = \"prod\"\nhost = \"h\"\n", std::string_view(users));
  EXPECT_EQ(c.databases[0].user, "first");
  EXPECT_EQ(c.databases[0].password, "one");
}

TEST(ConfigCredentials, EntryCredentialsWin) {
  const char *pgdog = R"(
[[databases]]
name = "prod"
host = "h"
user = "own"
password = "own-pw"
)";
  Config c = parse_config(pgdog, std::string_view(kUsers));
  EXPECT_EQ(c.databases[0].user, "own");
  EXPECT_EQ(c.databases[0].password, "own-pw");
  // Without users.toml at all, the entry's own credentials are enough.
  Config alone = parse_config(pgdog, std::nullopt);
  EXPECT_EQ(alone.databases[0].user, "own");
}

TEST(ConfigCredentials, EntryUserTakesItsUsersTomlPassword) {
  const char *users = R"(
[[users]]
name = "admin"
database = "prod"
password = "admin-pw"
schema_admin = true
[[users]]
name = "app"
database = "prod"
password = "app-pw"
)";
  Config c =
      parse_config("[[databases]]\nname = \"prod\"\nhost = \"h\"\nuser = \"app\"\n", std::string_view(users));
  EXPECT_EQ(c.databases[0].user, "app");
  EXPECT_EQ(c.databases[0].password, "app-pw");
}

TEST(ConfigCredentials, ClusterWithoutUserIsRejected) {
  Error e = rejected("[[databases]]\nname = \"orphan\"\nhost = \"h\"\npassword = \"s3cr3t-pw\"\n");
  EXPECT_CONTAINS(e.what(), "no user for database \"orphan\"");
  EXPECT_CONTAINS(e.hint(), "[[users]] entry with database = \"orphan\"");
  EXPECT_CONTAINS(e.hint(), "users.toml");
  // Same without a users.toml.
  EXPECT_CONTAINS(message("[[databases]]\nname = \"orphan\"\nhost = \"h\"\n", std::nullopt), "\"orphan\"");
}

// --- TOML syntax ---

TEST(ConfigSyntax, NamesFileLineAndColumn) {
  Error e = rejected("[general]\nport = 6432\n\n[[databases]]\nname = \"prod\"\nhost = = \"x\"\n");
  EXPECT_STREQ(
      e.what(),
      "syntax error in pgdog.toml at line 6, column 8: Error while parsing value: could not determine "
      "value type");
}

TEST(ConfigSyntax, UsesGivenPaths) {
  try {
    parse_config("[[databases]\n", std::nullopt, "/etc/pgdog/pgdog.toml");
    ADD_FAILURE();
  } catch (const Error &e) {
    EXPECT_EQ(e.sqlstate(), "F0000");
    EXPECT_CONTAINS(e.what(), "syntax error in /etc/pgdog/pgdog.toml at line 1, column ");
  }
  try {
    parse_config(kClusters, std::string_view("[[users]]\nname = \"a\"\n\nname = \"b\"\n"), "pgdog.toml",
                 "/etc/pgdog/users.toml");
    ADD_FAILURE();
  } catch (const Error &e) {
    EXPECT_CONTAINS(e.what(), "syntax error in /etc/pgdog/users.toml at line 4, column ");
  }
}

TEST(ConfigSyntax, PasswordFragmentsAreHidden) {
  // toml++ would echo "saw 'tru3'": part of the password.
  Error e = rejected("[[databases]]\nname = \"prod\"\nhost = \"h\"\npassword = tru3hunter\n");
  EXPECT_CONTAINS(e.what(), "syntax error in pgdog.toml at line 4, column ");
  EXPECT_EQ(std::string(e.what()).find("tru3"), std::string::npos) << e.what();
  EXPECT_EQ(std::string(e.what()).find("hunter"), std::string::npos) << e.what();
  Error u = rejected(kClusters, std::string_view("[[users]]\nname = \"a\"\npassword = \"bad\\qpw\"\n"));
  EXPECT_CONTAINS(u.what(), "users.toml at line 3");
  EXPECT_EQ(std::string(u.what()).find("\\q"), std::string::npos) << u.what();
}

// --- [[databases]] types and values ---

TEST(ConfigDatabaseTypes, WrongTypesNameKeyEntryAndLine) {
  std::string entry = "\n\n[[databases]]\nname = \"prod\"\nhost = \"h\"\n";  // header on line 3
  std::string m = message(entry + "port = \"abc\"\n");
  EXPECT_EQ(m,
            "[[databases]] entry \"prod\" at pgdog.toml line 3: \"port\" must be an integer, not a string");
  m = message(entry + "shard = \"x\"\n");
  EXPECT_CONTAINS(m, "\"shard\" must be an integer, not a string");
  EXPECT_CONTAINS(m, "\"prod\" at pgdog.toml line 3");
  EXPECT_CONTAINS(message(entry + "resharding_only = \"yes\"\n"), "\"resharding_only\" must be a boolean");
  EXPECT_CONTAINS(message(entry + "database_name = 7\n"),
                  "\"database_name\" must be a string, not an integer");
  EXPECT_CONTAINS(message(entry + "port = 70000\n"), "\"port\" must be at most 65535, not 70000");
  EXPECT_CONTAINS(message("[[databases]]\nname = 5\nhost = \"h\"\n"),
                  "\"name\" must be a string, not an integer");
  EXPECT_CONTAINS(message("databases = 5\n"),
                  "\"databases\" at pgdog.toml line 1 must be an array of tables");
}

TEST(ConfigDatabaseTypes, WrongPasswordTypeHidesValue) {
  Error e = rejected("[[databases]]\nname = \"prod\"\nhost = \"h\"\npassword = 123456789\n");
  EXPECT_EQ(
      std::string(e.what()),
      "[[databases]] entry \"prod\" at pgdog.toml line 1: \"password\" must be a string, not an integer");
  EXPECT_EQ(std::string(e.what()).find("123456789"), std::string::npos);
}

TEST(ConfigDatabaseTypes, RequiredKeysAndRole) {
  EXPECT_CONTAINS(message("[[databases]]\nhost = \"h\"\n"),
                  "[[databases]] entry at pgdog.toml line 1: \"name\" is required");
  EXPECT_CONTAINS(message("[[databases]]\nname = \"prod\"\n"),
                  "[[databases]] entry \"prod\" at pgdog.toml line 1: \"host\" is required");
  Error e = rejected("[[databases]]\nname = \"prod\"\nhost = \"h\"\nrole = \"leader\"\n");
  EXPECT_CONTAINS(e.what(), "unknown role \"leader\"");
  EXPECT_CONTAINS(e.hint(), "\"primary\", \"replica\" or \"auto\"");
}

TEST(ConfigDatabaseTypes, UsersTomlTypes) {
  Error e = rejected(kClusters,
                     std::string_view("[[users]]\nname = \"app\"\ndatabase = \"prod\"\nschema_admin = 1\n"));
  EXPECT_EQ(std::string(e.what()),
            "[[users]] entry \"app\" at users.toml line 1: \"schema_admin\" must be a boolean (true or "
            "false), not an integer");
  EXPECT_CONTAINS(message(kClusters, std::string_view("[[users]]\nname = \"app\"\n")),
                  "\"database\" is required");
}

// --- Clusters: shard numbering, primaries, duplicates ---

TEST(ConfigClusters, ShardGapIsRejected) {
  Error e = rejected(R"(
[[databases]]
name = "prod"
host = "a"
shard = 0
[[databases]]
name = "prod"
host = "b"
shard = 2
)");
  EXPECT_STREQ(e.what(), "database \"prod\" has no shard 1");
  EXPECT_CONTAINS(e.detail(), "define shards 0, 2");
}

TEST(ConfigClusters, ShardZeroMissingAndNegativeShard) {
  EXPECT_EQ(message("[[databases]]\nname = \"prod\"\nhost = \"a\"\nshard = 1\n"),
            "database \"prod\" has no shard 0");
  EXPECT_CONTAINS(message("[[databases]]\nname = \"prod\"\nhost = \"a\"\nshard = -1\n"),
                  "[[databases]] entry \"prod\" at pgdog.toml line 1: \"shard\" must be at least 0, not -1");
}

TEST(ConfigClusters, DuplicatePrimary) {
  Error e = rejected(R"(
[[databases]]
name = "prod"
host = "a"
[[databases]]
name = "prod"
host = "b"
role = "primary"
)");
  EXPECT_STREQ(e.what(), "duplicate primary for shard 0 of database \"prod\"");
  EXPECT_CONTAINS(e.detail(), "a:5432 (line 2)");
  EXPECT_CONTAINS(e.detail(), "b:5432 (line 5)");
}

TEST(ConfigClusters, NoPrimary) {
  Error e =
      rejected(kClusters + "[[databases]]\nname = \"prod\"\nhost = \"r\"\nshard = 1\nrole = \"replica\"\n");
  EXPECT_STREQ(e.what(), "shard 1 of database \"prod\" has no primary");
  Error autos = rejected(
      "[[databases]]\nname = \"prod\"\nhost = \"a\"\nrole = \"auto\"\n"
      "[[databases]]\nname = \"prod\"\nhost = \"b\"\nrole = \"auto\"\n");
  EXPECT_STREQ(autos.what(), "shard 0 of database \"prod\" has no primary");
  EXPECT_CONTAINS(autos.detail(), "2 entries with role = \"auto\"");
}

TEST(ConfigClusters, SingleAutoIsPrimary) {
  Config c = parse_config(R"(
[[databases]]
name = "prod"
host = "copy-source"
role = "auto"
resharding_only = true
[[databases]]
name = "prod"
host = "main"
role = "auto"
[[databases]]
name = "prod"
host = "replica"
role = "replica"
)",
                          std::string_view(kUsers));
  EXPECT_EQ(c.primary("prod", 0).host, "main");
  EXPECT_EQ(c.databases[1].role, Role::Auto);  // as written; primary() decides
  // A "primary" entry wins over auto entries.
  Config p = parse_config(
      "[[databases]]\nname = \"prod\"\nhost = \"a\"\nrole = \"auto\"\n"
      "[[databases]]\nname = \"prod\"\nhost = \"p\"\n",
      std::string_view(kUsers));
  EXPECT_EQ(p.primary("prod", 0).host, "p");
}

TEST(ConfigClusters, DuplicateEntry) {
  Error e = rejected(
      kClusters + "[[databases]]\nname = \"prod_2x\"\nhost = \"10.0.1.2\"\nshard = 1\nrole = \"replica\"\n");
  EXPECT_STREQ(e.what(), "database \"prod_2x\" lists 10.0.1.2:5432 database \"prod_2x\" twice for shard 1");
  // Same host but another database_name or port is another entry.
  Config c = parse_config(kClusters +
                              "[[databases]]\nname = \"prod_2x\"\nhost = \"10.0.1.2\"\nport = 5433\n"
                              "shard = 1\nrole = \"replica\"\n",
                          std::string_view(kUsers));
  EXPECT_EQ(c.databases.size(), 4u);
}

// --- [[sharded_tables]] ---

TEST(ConfigShardedTables, NameOrTableAndSchema) {
  Config c = parse_config(with_rule(R"(
[[sharded_tables]]
database = "prod_2x"
table = "orders"
schema = "sales"
column = "customer_id"
data_type = "uuid"

[[sharded_tables]]
database = "prod_2x"
name = "items"
table = "items"
column = "sku"
data_type = "varchar"

[[sharded_tables]]
database = "prod_2x"
column = "tenant_id"
)"),
                          std::string_view(kUsers));
  ASSERT_EQ(c.sharded_tables.size(), 3u);
  EXPECT_EQ(c.sharded_tables[0].table, "orders");
  EXPECT_EQ(c.sharded_tables[0].schema, "sales");
  EXPECT_EQ(c.sharded_tables[0].data_type, DataType::Uuid);
  EXPECT_EQ(c.sharded_tables[1].table, "items");
  EXPECT_EQ(c.sharded_tables[1].data_type, DataType::Varchar);
  EXPECT_EQ(c.sharded_tables[2].data_type, DataType::Bigint);  // PgDog's default
}

TEST(ConfigShardedTables, NameAndTableDisagree) {
  Error e = rejected(with_rule(
      "[[sharded_tables]]\ndatabase = \"prod_2x\"\nname = \"a\"\ntable = \"b\"\ncolumn = \"id\"\n"));
  EXPECT_CONTAINS(e.what(), "\"name\" = \"a\" and \"table\" = \"b\" disagree");
  EXPECT_CONTAINS(e.what(), "[[sharded_tables]] entry at pgdog.toml line 16");
}

TEST(ConfigShardedTables, UnknownDataType) {
  Error e =
      rejected(with_rule("[[sharded_tables]]\ndatabase = \"prod_2x\"\nname = \"users\"\ncolumn = \"id\"\n"
                         "data_type = \"int4\"\n"));
  EXPECT_EQ(
      std::string(e.what()),
      "[[sharded_tables]] entry for table \"users\", column \"id\" of database \"prod_2x\" at pgdog.toml "
      "line 16: unknown data_type \"int4\"");
  EXPECT_CONTAINS(e.hint(), "\"bigint\", \"varchar\" or \"uuid\"");
}

TEST(ConfigShardedTables, UnknownDatabaseAndMissingColumn) {
  Error e = rejected(with_rule("[[sharded_tables]]\ndatabase = \"prod_4x\"\ncolumn = \"id\"\n"));
  EXPECT_CONTAINS(e.what(), "database \"prod_4x\" is not the name of any [[databases]] entry");
  EXPECT_CONTAINS(e.detail(), "prod, prod_2x");
  EXPECT_CONTAINS(message(with_rule("[[sharded_tables]]\ndatabase = \"prod_2x\"\n")),
                  "\"column\" is required");
}

TEST(ConfigShardedTables, DuplicateRule) {
  Error e = rejected(with_rule(R"(
[[sharded_tables]]
database = "prod_2x"
schema = "app"
table = "users"
column = "id"

[[sharded_tables]]
database = "prod_2x"
schema = "app"
name = "users"
column = "id"
data_type = "varchar"
)"));
  EXPECT_STREQ(e.what(),
               "duplicate sharding rule for table \"app\".\"users\", column \"id\" of database \"prod_2x\"");
  EXPECT_CONTAINS(e.detail(), "lines 17 and 23");
  // Another schema is another rule.
  Config c =
      parse_config(with_rule("[[sharded_tables]]\ndatabase = \"prod_2x\"\nschema = \"a\"\ncolumn = \"id\"\n"
                             "[[sharded_tables]]\ndatabase = \"prod_2x\"\nschema = \"b\"\ncolumn = \"id\"\n"),
                   std::string_view(kUsers));
  EXPECT_EQ(c.sharded_tables.size(), 2u);
}

// --- Mappings: both syntaxes, kind inference, values ---

const char *kUsersRule = R"(
[[sharded_tables]]
database = "prod_2x"
name = "users"
column = "id"
)";

TEST(ConfigMappings, InferredKinds) {
  Config c = parse_config(with_rule(std::string(kUsersRule) + R"(
[[sharded_tables.mapping]]
values = [1, "2"]
shard = 0
[[sharded_tables.mapping]]
start = 100
end = 200
shard = 1
[[sharded_tables.mapping]]
start = 200
shard = 0
[[sharded_tables.mapping]]
end = -5
shard = 1
[[sharded_tables.mapping]]
shard = 1
)"),
                          std::string_view(kUsers));
  const std::vector<Mapping> &m = c.sharded_tables.at(0).mappings;
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0].kind, Mapping::Kind::List);
  EXPECT_EQ(m[0].values, (std::vector<Key>{int64_t{1}, int64_t{2}}));
  EXPECT_EQ(m[1].kind, Mapping::Kind::Range);
  EXPECT_EQ(m[1].start, Key(int64_t{100}));
  EXPECT_EQ(m[1].end, Key(int64_t{200}));
  EXPECT_EQ(m[1].shard, 1);
  EXPECT_EQ(m[2].kind, Mapping::Kind::Range);
  EXPECT_EQ(m[2].start, Key(int64_t{200}));
  EXPECT_FALSE(m[2].end.has_value());
  EXPECT_FALSE(m[3].start.has_value());
  EXPECT_EQ(m[3].end, Key(int64_t{-5}));
  EXPECT_EQ(m[4].kind, Mapping::Kind::Default);
  EXPECT_EQ(m[4].shard, 1);
  EXPECT_EQ(mapped_shard(m, int64_t{150}), 1);
  EXPECT_EQ(mapped_shard(m, int64_t{2}), 0);
  EXPECT_EQ(mapped_shard(m, int64_t{50}), 1);  // the default
}

TEST(ConfigMappings, ExplicitKinds) {
  Config c = parse_config(with_rule(std::string(kUsersRule) + R"(
[[sharded_tables.mapping]]
kind = "list"
values = [7]
shard = 1
[[sharded_tables.mapping]]
kind = "range"
start = 10
shard = 0
[[sharded_tables.mapping]]
kind = "default"
shard = 0
)"),
                          std::string_view(kUsers));
  const std::vector<Mapping> &m = c.sharded_tables[0].mappings;
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].kind, Mapping::Kind::List);
  EXPECT_EQ(m[1].kind, Mapping::Kind::Range);
  EXPECT_EQ(m[2].kind, Mapping::Kind::Default);
}

TEST(ConfigMappings, KindErrors) {
  std::string rule = with_rule(std::string(kUsersRule) + "[[sharded_tables.mapping]]\n");
  Error e = rejected(rule + "kind = \"hash\"\nshard = 0\n");
  EXPECT_CONTAINS(
      e.what(),
      "[[sharded_tables.mapping]] entry for table \"users\", column \"id\" of database \"prod_2x\"");
  EXPECT_CONTAINS(e.what(), "unknown kind \"hash\"");
  EXPECT_CONTAINS(message(rule + "kind = \"list\"\nstart = 1\nshard = 0\n"),
                  "kind = \"list\" does not fit its keys");
  EXPECT_CONTAINS(message(rule + "values = [1]\nend = 4\nshard = 0\n"), "not both");
  EXPECT_CONTAINS(message(rule + "values = [1]\n"), "\"shard\" is required");
  EXPECT_CONTAINS(message(rule + "values = 1\nshard = 0\n"), "\"values\" must be an array, not an integer");
  EXPECT_CONTAINS(message(rule + "start = 5\nend = 5\nshard = 0\n"), "the range is empty");
}

TEST(ConfigMappings, ShardOutOfRange) {
  Error e =
      rejected(with_rule(std::string(kUsersRule) + "[[sharded_tables.mapping]]\nvalues = [1]\nshard = 2\n"));
  EXPECT_CONTAINS(e.what(), "table \"users\", column \"id\" of database \"prod_2x\"");
  EXPECT_CONTAINS(e.what(), "at pgdog.toml line 21: shard 2 does not exist");
  EXPECT_CONTAINS(e.detail(), "2 shards, numbered 0 to 1");
  EXPECT_CONTAINS(message(with_rule(std::string(kUsersRule) + "[[sharded_tables.mapping]]\nshard = -1\n")),
                  "shard -1 does not exist");
}

TEST(ConfigMappings, ValuesOfWrongType) {
  std::string uuid_rule = with_rule(R"(
[[sharded_tables]]
database = "prod_2x"
name = "orders"
column = "id"
data_type = "uuid"
[[sharded_tables.mapping]]
values = ["550e8400-e29b-41d4-a716-446655440000", "abc"]
shard = 0
)");
  Error e = rejected(uuid_rule);
  EXPECT_CONTAINS(e.what(), "table \"orders\", column \"id\" of database \"prod_2x\"");
  EXPECT_CONTAINS(e.what(), "value \"abc\" is not a valid uuid");
  std::string bigint = with_rule(std::string(kUsersRule) + "[[sharded_tables.mapping]]\n");
  EXPECT_CONTAINS(message(bigint + "values = [\"12x\"]\nshard = 0\n"), "value \"12x\" is not a valid bigint");
  EXPECT_CONTAINS(message(bigint + "start = 1.5\nshard = 0\n"),
                  "\"start\" must be an integer or a string, not a float");
  EXPECT_CONTAINS(message(bigint + "values = [true]\nshard = 0\n"),
                  "\"values\" must be an integer or a string, not a boolean");
  // An integer value is its text for a varchar rule.
  Config c = parse_config(with_rule(R"(
[[sharded_tables]]
database = "prod_2x"
column = "code"
data_type = "varchar"
[[sharded_tables.mapping]]
values = [42, "apples"]
shard = 1
)"),
                          std::string_view(kUsers));
  EXPECT_EQ(c.sharded_tables[0].mappings[0].values,
            (std::vector<Key>{std::string("42"), std::string("apples")}));
}

TEST(ConfigMappings, OlderShardedMappingsSyntax) {
  Config c = parse_config(with_rule(R"(
[[sharded_tables]]
database = "prod_2x"
name = "users"
column = "id"

[[sharded_tables]]
database = "prod_2x"
column = "id"

[[sharded_mappings]]
database = "prod_2x"
table = "users"
column = "id"
kind = "list"
values = [1, 2]
shard = 1

[[sharded_mappings]]
database = "prod_2x"
name = "users"
column = "id"
kind = "range"
start = 10
end = 20
shard = 0

[[sharded_mappings]]
database = "prod_2x"
column = "id"
kind = "default"
shard = 1
)"),
                          std::string_view(kUsers));
  ASSERT_EQ(c.sharded_tables.size(), 2u);
  const std::vector<Mapping> &users = c.sharded_tables[0].mappings;
  ASSERT_EQ(users.size(), 2u);
  EXPECT_EQ(users[0].kind, Mapping::Kind::List);
  EXPECT_EQ(users[0].shard, 1);
  EXPECT_EQ(users[1].kind, Mapping::Kind::Range);
  EXPECT_EQ(users[1].end, Key(int64_t{20}));
  // The table-less mapping went to the table-less rule.
  ASSERT_EQ(c.sharded_tables[1].mappings.size(), 1u);
  EXPECT_EQ(c.sharded_tables[1].mappings[0].kind, Mapping::Kind::Default);
}

TEST(ConfigMappings, BothSyntaxesCombine) {
  Config c = parse_config(with_rule(std::string(kUsersRule) + R"(
[[sharded_tables.mapping]]
values = [1]
shard = 0
[[sharded_mappings]]
database = "prod_2x"
table = "users"
column = "id"
values = [2]
shard = 1
)"),
                          std::string_view(kUsers));
  const std::vector<Mapping> &m = c.sharded_tables[0].mappings;
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ(mapped_shard(m, int64_t{2}), 1);
  EXPECT_EQ(mapped_shard(m, int64_t{1}), 0);
}

TEST(ConfigMappings, ShardedMappingWithoutRule) {
  Error e = rejected(with_rule(std::string(kUsersRule) + R"(
[[sharded_mappings]]
database = "prod_2x"
table = "orders"
column = "id"
values = [1]
shard = 0
)"));
  EXPECT_CONTAINS(e.what(),
                  "[[sharded_mappings]] entry for table \"orders\", column \"id\" of database \"prod_2x\"");
  EXPECT_CONTAINS(e.what(), "no [[sharded_tables]] entry");
}

// --- Overlapping mappings ---

std::string mappings(const std::string &body) { return with_rule(std::string(kUsersRule) + body); }

TEST(ConfigOverlap, ValueListedTwice) {
  Error e =
      rejected(mappings("[[sharded_tables.mapping]]\nvalues = [1, 5]\nshard = 0\n"
                        "[[sharded_tables.mapping]]\nvalues = [\"5\"]\nshard = 1\n"));
  EXPECT_STREQ(
      e.what(),
      "overlapping mappings for table \"users\", column \"id\" of database \"prod_2x\": value \"5\" is "
      "listed twice (shards 0 and 1)");
  EXPECT_CONTAINS(message(mappings("[[sharded_tables.mapping]]\nvalues = [3, 3]\nshard = 0\n")),
                  "value \"3\" is listed twice");
}

TEST(ConfigOverlap, ValueInsideRange) {
  Error e =
      rejected(mappings("[[sharded_tables.mapping]]\nstart = 10\nend = 20\nshard = 0\n"
                        "[[sharded_tables.mapping]]\nvalues = [15]\nshard = 1\n"));
  EXPECT_CONTAINS(e.what(), "table \"users\"");
  EXPECT_CONTAINS(e.what(), "value \"15\" (shard 1) is inside range [10, 20) (shard 0)");
  // The end is exclusive: 20 is not inside [10, 20).
  Config c = parse_config(mappings("[[sharded_tables.mapping]]\nstart = 10\nend = 20\nshard = 0\n"
                                   "[[sharded_tables.mapping]]\nvalues = [20, 9]\nshard = 1\n"),
                          std::string_view(kUsers));
  EXPECT_EQ(c.sharded_tables[0].mappings.size(), 2u);
}

TEST(ConfigOverlap, RangesOverlap) {
  Error e =
      rejected(mappings("[[sharded_tables.mapping]]\nstart = 10\nend = 20\nshard = 0\n"
                        "[[sharded_tables.mapping]]\nstart = 19\nend = 30\nshard = 1\n"));
  EXPECT_CONTAINS(e.what(), "ranges [10, 20) and [19, 30) overlap");
  EXPECT_CONTAINS(message(mappings("[[sharded_tables.mapping]]\nend = 0\nshard = 0\n"
                                   "[[sharded_tables.mapping]]\nend = 100\nshard = 1\n")),
                  "ranges [unbounded, 0) and [unbounded, 100) overlap");
  // Adjacent ranges do not overlap.
  Config c = parse_config(mappings("[[sharded_tables.mapping]]\nend = 10\nshard = 0\n"
                                   "[[sharded_tables.mapping]]\nstart = 10\nend = 20\nshard = 1\n"
                                   "[[sharded_tables.mapping]]\nstart = 20\nshard = 0\n"),
                          std::string_view(kUsers));
  EXPECT_EQ(c.sharded_tables[0].mappings.size(), 3u);
  // Also when listed in descending order.
  Config d = parse_config(mappings("[[sharded_tables.mapping]]\nstart = 10\nend = 20\nshard = 1\n"
                                   "[[sharded_tables.mapping]]\nend = 10\nshard = 0\n"),
                          std::string_view(kUsers));
  EXPECT_EQ(d.sharded_tables[0].mappings.size(), 2u);
}

TEST(ConfigOverlap, TwoDefaults) {
  Error e =
      rejected(mappings("[[sharded_tables.mapping]]\nshard = 0\n[[sharded_tables.mapping]]\nshard = 1\n"));
  EXPECT_STREQ(
      e.what(),
      "overlapping mappings for table \"users\", column \"id\" of database \"prod_2x\": 2 default mappings "
      "(shards 0 and 1)");
}

TEST(ConfigOverlap, VarcharRanges) {
  Error e = rejected(with_rule(R"(
[[sharded_tables]]
database = "prod_2x"
column = "region"
data_type = "varchar"
[[sharded_tables.mapping]]
start = "a"
end = "m"
shard = 0
[[sharded_tables.mapping]]
values = ["eu"]
shard = 1
)"));
  EXPECT_CONTAINS(e.what(), "column \"region\" of every table of database \"prod_2x\"");
  EXPECT_CONTAINS(e.what(), "value \"eu\" (shard 1) is inside range [a, m)");
}

}  // namespace
}  // namespace pgdog_reshard
