// Cutover's configuration changes: the cluster name swap on real PgDog configs (checked through
// parse_config, the way the extension will read the result), and the atomic write with its backup.
#include "core/config_swap.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <toml++/toml.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "core/config.h"
#include "core/error.h"

namespace pgdog_reshard {
namespace {

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << (text) << "\" lacks \"" << (part) << "\""

// prod (1 shard, database_name left to its default), prod_2x (2 shards) and an unrelated cluster,
// with rules of every kind, PgDog's older [[sharded_mappings]], and sections we do not read.
const char *kPgdog = R"(
[general]
host = "0.0.0.0"
port = 6432
default_pool_size = 10
mirror_exposure = 0.1
future_setting = "kept"

[[databases]]
name = "prod"
host = "10.0.0.1"

[[databases]]
name = "prod_2x"
host = "10.0.1.1"
database_name = "app"
shard = 0
pool_size = 20

[[databases]]
name = "prod_2x"
host = "10.0.1.2"
port = 5433
database_name = "app"
shard = 1
role = "primary"

[[databases]]
name = "analytics"
host = "10.0.2.1"

[[sharded_tables]]          # users declare rules for both clusters
database = "prod"
column = "user_id"

[[sharded_tables]]
database = "prod_2x"
column = "user_id"
data_type = "bigint"

[[sharded_tables]]
database = "prod_2x"
name = "accounts"
column = "region"
data_type = "varchar"

[[sharded_tables.mapping]]
kind = "list"
values = ["eu", "uk"]
shard = 0

[[sharded_tables.mapping]]
values = ["us"]
shard = 1

[[sharded_tables]]
database = "prod_2x"
name = "events"
column = "id"

[[sharded_tables.mapping]]
start = 0
end = 1000
shard = 0

[[sharded_tables.mapping]]
start = 1000
shard = 1

[[sharded_tables]]
database = "prod_2x"
name = "orders"
column = "customer_id"

[[sharded_tables]]
database = "analytics"
column = "tenant_id"

[[sharded_mappings]]
database = "prod_2x"
name = "orders"
column = "customer_id"
values = [7, 8]
shard = 1

[[omnisharded_tables]]
database = "prod_2x"
sticky = true
tables = ["countries", "settings"]

[[sharded_schemas]]
database = "prod_2x"
name = "tenant_1"
shard = 1

[[mirroring]]
source_db = "prod"
destination_db = "analytics"

[admin]
name = "admin"
password = "admin-secret"
)";

const char *kUsers = R"(
[[users]]
name = "app"
database = "prod"
password = "old-pw"
pool_size = 5

[[users]]
name = "app"
database = "prod_2x"
password = "new-pw"

[[users]]
name = "resharder"
database = "prod_2x"
password = "resharder-pw"
schema_admin = true

[[users]]
name = "bi"
database = "analytics"
password = "bi-pw"
)";

ConfigTexts texts() { return ConfigTexts{kPgdog, std::string(kUsers)}; }

Config load(const ConfigTexts &t) { return parse_config(t.pgdog_toml, t.users_toml); }

ConfigTexts swapped() { return swap_cluster_names(texts(), "prod", "prod_2x"); }

toml::table tree(const std::string &text) { return toml::parse(text); }

const Database &entry_on(const Config &c, const std::string &host) {
  for (const Database &db : c.databases) {
    if (db.host == host) return db;
  }
  throw std::runtime_error("no entry on " + host);
}

// --- swap_cluster_names ---

TEST(ConfigSwap, ShardsFollowTheNames) {
  Config c = load(swapped());
  EXPECT_EQ(c.shard_count("prod"), 2);
  EXPECT_EQ(c.shard_count("prod_2x"), 1);
  EXPECT_EQ(c.shard_count("analytics"), 1);
  EXPECT_EQ(c.primary("prod", 0).host, "10.0.1.1");
  EXPECT_EQ(c.primary("prod", 1).host, "10.0.1.2");
  EXPECT_EQ(c.primary("prod", 1).port, 5433);
  EXPECT_EQ(c.primary("prod_2x", 0).host, "10.0.0.1");
  EXPECT_EQ(c.primary("analytics", 0).host, "10.0.2.1");
  // The entries keep their order.
  ASSERT_EQ(c.databases.size(), 4u);
  EXPECT_EQ(c.databases[0].name, "prod_2x");
  EXPECT_EQ(c.databases[1].name, "prod");
  EXPECT_EQ(c.databases[3].name, "analytics");
}

TEST(ConfigSwap, DatabaseNamesStay) {
  ConfigTexts out = swapped();
  Config c = load(out);
  // The old cluster had no database_name: it still connects to database "prod", now written out.
  EXPECT_EQ(entry_on(c, "10.0.0.1").database_name, "prod");
  EXPECT_EQ(entry_on(c, "10.0.1.1").database_name, "app");
  EXPECT_EQ(entry_on(c, "10.0.1.2").database_name, "app");
  // An unrelated cluster is not touched: its default stays implicit.
  EXPECT_EQ(entry_on(c, "10.0.2.1").database_name, "analytics");
  toml::table doc = tree(out.pgdog_toml);
  EXPECT_EQ(doc["databases"][0]["database_name"].value<std::string>(), "prod");
  EXPECT_FALSE(doc["databases"][3].as_table()->contains("database_name"));
}

TEST(ConfigSwap, RulesFollowTheirClusters) {
  Config c = load(swapped());
  std::vector<const ShardedTable *> now_prod = c.rules_for("prod");
  ASSERT_EQ(now_prod.size(), 4u);
  EXPECT_EQ(now_prod[0]->column, "user_id");
  EXPECT_EQ(now_prod[1]->table, "accounts");
  EXPECT_EQ(now_prod[1]->data_type, DataType::Varchar);
  ASSERT_EQ(now_prod[1]->mappings.size(), 2u);
  EXPECT_EQ(now_prod[1]->mappings[0].values, (std::vector<Key>{std::string("eu"), std::string("uk")}));
  EXPECT_EQ(now_prod[1]->mappings[1].shard, 1);
  EXPECT_EQ(now_prod[2]->table, "events");
  ASSERT_EQ(now_prod[2]->mappings.size(), 2u);
  EXPECT_EQ(now_prod[2]->mappings[0].kind, Mapping::Kind::Range);
  EXPECT_EQ(now_prod[2]->mappings[1].start, std::optional<Key>(int64_t{1000}));
  EXPECT_FALSE(now_prod[2]->mappings[1].end);
  // [[sharded_mappings]] moved with its [[sharded_tables]] entry.
  EXPECT_EQ(now_prod[3]->table, "orders");
  ASSERT_EQ(now_prod[3]->mappings.size(), 1u);
  EXPECT_EQ(now_prod[3]->mappings[0].values, (std::vector<Key>{int64_t{7}, int64_t{8}}));

  std::vector<const ShardedTable *> now_old = c.rules_for("prod_2x");
  ASSERT_EQ(now_old.size(), 1u);
  EXPECT_EQ(now_old[0]->column, "user_id");
  EXPECT_TRUE(now_old[0]->is_hash());
  ASSERT_EQ(c.rules_for("analytics").size(), 1u);
  EXPECT_EQ(c.rules_for("analytics")[0]->column, "tenant_id");
}

TEST(ConfigSwap, UsersFollowTheirClusters) {
  ConfigTexts out = swapped();
  Config c = load(out);
  ASSERT_EQ(c.users.size(), 4u);
  EXPECT_EQ(c.users[0].database, "prod_2x");
  EXPECT_EQ(c.users[0].password, "old-pw");
  EXPECT_EQ(c.users[1].database, "prod");
  EXPECT_EQ(c.users[2].database, "prod");
  EXPECT_TRUE(c.users[2].schema_admin);
  EXPECT_EQ(c.users[3].database, "analytics");
  // Each server keeps its credentials.
  EXPECT_EQ(c.primary("prod", 0).user, "resharder");
  EXPECT_EQ(c.primary("prod", 0).password, "resharder-pw");
  EXPECT_EQ(c.primary("prod_2x", 0).user, "app");
  EXPECT_EQ(c.primary("prod_2x", 0).password, "old-pw");
  EXPECT_EQ(tree(*out.users_toml)["users"][0]["pool_size"].value<int64_t>(), 5);
}

TEST(ConfigSwap, OtherSectionsKept) {
  toml::table doc = tree(swapped().pgdog_toml);
  EXPECT_EQ(doc["general"]["port"].value<int64_t>(), 6432);
  EXPECT_EQ(doc["general"]["default_pool_size"].value<int64_t>(), 10);
  EXPECT_EQ(doc["general"]["mirror_exposure"].value<double>(), 0.1);
  EXPECT_EQ(doc["general"]["future_setting"].value<std::string>(), "kept");
  EXPECT_EQ(doc["admin"]["password"].value<std::string>(), "admin-secret");
  EXPECT_EQ(doc["databases"][1]["pool_size"].value<int64_t>(), 20);
  // Routing settings bound to a cluster follow it.
  EXPECT_EQ(doc["omnisharded_tables"][0]["database"].value<std::string>(), "prod");
  EXPECT_EQ(doc["omnisharded_tables"][0]["tables"][1].value<std::string>(), "settings");
  EXPECT_EQ(doc["omnisharded_tables"][0]["sticky"].value<bool>(), true);
  EXPECT_EQ(doc["sharded_schemas"][0]["database"].value<std::string>(), "prod");
  // Mirroring follows the traffic sent to a name, which stays with the name.
  EXPECT_EQ(doc["mirroring"][0]["source_db"].value<std::string>(), "prod");
  EXPECT_EQ(doc["mirroring"][0]["destination_db"].value<std::string>(), "analytics");
}

void expect_same_config(const Config &x, const Config &y) {
  ASSERT_EQ(x.databases.size(), y.databases.size());
  for (size_t i = 0; i < x.databases.size(); i++) {
    const Database &p = x.databases[i], &q = y.databases[i];
    EXPECT_EQ(p.name, q.name);
    EXPECT_EQ(p.host, q.host);
    EXPECT_EQ(p.port, q.port);
    EXPECT_EQ(p.database_name, q.database_name);
    EXPECT_EQ(p.shard, q.shard);
    EXPECT_EQ(p.role, q.role);
    EXPECT_EQ(p.resharding_only, q.resharding_only);
    EXPECT_EQ(p.user, q.user);
    EXPECT_EQ(p.password, q.password);
  }
  ASSERT_EQ(x.users.size(), y.users.size());
  for (size_t i = 0; i < x.users.size(); i++) {
    EXPECT_EQ(x.users[i].name, y.users[i].name);
    EXPECT_EQ(x.users[i].database, y.users[i].database);
    EXPECT_EQ(x.users[i].password, y.users[i].password);
    EXPECT_EQ(x.users[i].schema_admin, y.users[i].schema_admin);
  }
  ASSERT_EQ(x.sharded_tables.size(), y.sharded_tables.size());
  for (size_t i = 0; i < x.sharded_tables.size(); i++) {
    const ShardedTable &p = x.sharded_tables[i], &q = y.sharded_tables[i];
    EXPECT_EQ(p.database, q.database);
    EXPECT_EQ(p.schema, q.schema);
    EXPECT_EQ(p.table, q.table);
    EXPECT_EQ(p.column, q.column);
    EXPECT_EQ(p.data_type, q.data_type);
    ASSERT_EQ(p.mappings.size(), q.mappings.size());
    for (size_t m = 0; m < p.mappings.size(); m++) {
      EXPECT_EQ(p.mappings[m].kind, q.mappings[m].kind);
      EXPECT_EQ(p.mappings[m].values, q.mappings[m].values);
      EXPECT_EQ(p.mappings[m].start, q.mappings[m].start);
      EXPECT_EQ(p.mappings[m].end, q.mappings[m].end);
      EXPECT_EQ(p.mappings[m].shard, q.mappings[m].shard);
    }
  }
}

TEST(ConfigSwap, SwappingTwiceRollsBack) {
  ConfigTexts once = swapped();
  ConfigTexts twice = swap_cluster_names(once, "prod", "prod_2x");
  expect_same_config(load(twice), load(texts()));
  // A third swap writes the same text as the first: the output is stable.
  EXPECT_EQ(swap_cluster_names(twice, "prod", "prod_2x").pgdog_toml, once.pgdog_toml);
}

TEST(ConfigSwap, ArgumentOrderDoesNotMatter) {
  ConfigTexts reversed = swap_cluster_names(texts(), "prod_2x", "prod");
  ConfigTexts out = swapped();
  EXPECT_EQ(reversed.pgdog_toml, out.pgdog_toml);
  EXPECT_EQ(reversed.users_toml, out.users_toml);
}

TEST(ConfigSwap, WithoutUsersFile) {
  const char *pgdog = R"(
[[databases]]
name = "prod"
host = "10.0.0.1"
user = "app"
password = "pw"

[[databases]]
name = "prod_2x"
host = "10.0.1.1"
database_name = "app"
user = "app"
password = "pw"
)";
  ConfigTexts out = swap_cluster_names(ConfigTexts{pgdog, std::nullopt}, "prod", "prod_2x");
  EXPECT_FALSE(out.users_toml);
  Config c = parse_config(out.pgdog_toml, std::nullopt);
  EXPECT_EQ(c.primary("prod", 0).host, "10.0.1.1");
  EXPECT_EQ(c.primary("prod_2x", 0).host, "10.0.0.1");
  EXPECT_EQ(c.primary("prod_2x", 0).database_name, "prod");
  EXPECT_EQ(c.primary("prod_2x", 0).password, "pw");
}

Error failure(const ConfigTexts &in, std::string_view a, std::string_view b) {
  try {
    swap_cluster_names(in, a, b);
  } catch (const Error &e) {
    return e;
  }
  ADD_FAILURE() << "swap of " << a << " and " << b << " accepted";
  return Error("", "");
}

TEST(ConfigSwap, UnknownCluster) {
  Error e = failure(texts(), "prod", "prod_4x");
  EXPECT_EQ(e.sqlstate(), "22023");
  EXPECT_CONTAINS(e.what(), "\"prod_4x\"");
  EXPECT_EQ(failure(texts(), "staging", "prod").sqlstate(), "22023");
}

TEST(ConfigSwap, SameName) {
  Error e = failure(texts(), "prod", "prod");
  EXPECT_EQ(e.sqlstate(), "22023");
  EXPECT_CONTAINS(e.what(), "itself");
}

TEST(ConfigSwap, SyntaxErrors) {
  ConfigTexts bad_pgdog = texts();
  bad_pgdog.pgdog_toml += "\n[[databases]\nname = \"x\"\n";
  Error e = failure(bad_pgdog, "prod", "prod_2x");
  EXPECT_EQ(e.sqlstate(), "F0000");
  EXPECT_CONTAINS(e.what(), "pgdog.toml");
  EXPECT_CONTAINS(e.what(), "line");

  ConfigTexts bad_users = texts();
  *bad_users.users_toml += "\n[[users]]\nname = app\n";
  e = failure(bad_users, "prod", "prod_2x");
  EXPECT_EQ(e.sqlstate(), "F0000");
  EXPECT_CONTAINS(e.what(), "users.toml");
}

// --- write_file_atomically ---

class AtomicFile : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "pgdog_reshard_atomic.XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    path_ = dir_ + "/pgdog.toml";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::set<std::string> entries() const {
    std::set<std::string> names;
    DIR *d = opendir(dir_.c_str());
    while (dirent *e = readdir(d)) {
      std::string name = e->d_name;
      if (name != "." && name != "..") names.insert(name);
    }
    closedir(d);
    return names;
  }

  static std::string read(const std::string &path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  static void put(const std::string &path, const std::string &content, mode_t mode) {
    std::ofstream(path) << content;
    ASSERT_EQ(chmod(path.c_str(), mode), 0);
  }

  static mode_t mode_of(const std::string &path) {
    struct stat st;
    EXPECT_EQ(stat(path.c_str(), &st), 0);
    return st.st_mode & 07777;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(AtomicFile, WritesNewFile) {
  write_file_atomically(path_, "[general]\nport = 6432\n");
  EXPECT_EQ(read(path_), "[general]\nport = 6432\n");
  EXPECT_EQ(mode_of(path_), 0600u);
  EXPECT_EQ(entries(), std::set<std::string>{"pgdog.toml"});
}

TEST_F(AtomicFile, ReplacesAndKeepsBackup) {
  put(path_, "old", 0640);
  write_file_atomically(path_, "new");
  EXPECT_EQ(read(path_), "new");
  EXPECT_EQ(read(path_ + ".pgdog_reshard.bak"), "old");
  EXPECT_EQ(mode_of(path_), 0640u);
  EXPECT_EQ(mode_of(path_ + ".pgdog_reshard.bak"), 0640u);
  EXPECT_EQ(entries(), (std::set<std::string>{"pgdog.toml", "pgdog.toml.pgdog_reshard.bak"}));
}

TEST_F(AtomicFile, ReplacesOlderBackup) {
  put(path_, "second", 0644);
  put(path_ + ".bak", "first", 0644);
  write_file_atomically(path_, "third", ".bak");
  EXPECT_EQ(read(path_), "third");
  EXPECT_EQ(read(path_ + ".bak"), "second");
  EXPECT_EQ(entries(), (std::set<std::string>{"pgdog.toml", "pgdog.toml.bak"}));
}

TEST_F(AtomicFile, EmptyContent) {
  put(path_, "old", 0600);
  write_file_atomically(path_, "");
  EXPECT_EQ(read(path_), "");
  EXPECT_EQ(read(path_ + ".pgdog_reshard.bak"), "old");
}

Error write_failure(const std::string &path, std::string_view content, const std::string &suffix) {
  try {
    write_file_atomically(path, content, suffix);
  } catch (const Error &e) {
    return e;
  }
  ADD_FAILURE() << "write to " << path << " succeeded";
  return Error("", "");
}

TEST_F(AtomicFile, MissingDirectory) {
  std::string path = dir_ + "/missing/pgdog.toml";
  Error e = write_failure(path, "new", ".bak");
  EXPECT_EQ(e.sqlstate(), "58030");
  EXPECT_CONTAINS(e.what(), path);
  EXPECT_CONTAINS(e.what(), "No such file or directory");
  EXPECT_TRUE(entries().empty());
}

// The backup cannot take the place of a directory: the rename fails after the temporary file is
// written, which must be removed, and the file must be as it was.
TEST_F(AtomicFile, FailedRenameLeavesFileAsItWas) {
  put(path_, "old", 0644);
  ASSERT_EQ(mkdir((path_ + ".bak").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((path_ + ".bak/x").c_str(), 0755), 0);
  Error e = write_failure(path_, "new", ".bak");
  EXPECT_EQ(e.sqlstate(), "58030");
  EXPECT_CONTAINS(e.what(), path_ + ".bak");
  EXPECT_EQ(read(path_), "old");
  EXPECT_EQ(entries(), (std::set<std::string>{"pgdog.toml", "pgdog.toml.bak"}));
}

// A path that is a directory cannot be read as the old content: nothing is written.
TEST_F(AtomicFile, PathIsDirectory) {
  ASSERT_EQ(mkdir(path_.c_str(), 0755), 0);
  Error e = write_failure(path_, "new", ".bak");
  EXPECT_EQ(e.sqlstate(), "58030");
  EXPECT_CONTAINS(e.what(), path_);
  EXPECT_EQ(entries(), std::set<std::string>{"pgdog.toml"});
}

// What cutover does: swap, then write both files.
TEST_F(AtomicFile, WritesSwappedConfig) {
  put(path_, kPgdog, 0640);
  ConfigTexts out = swap_cluster_names(ConfigTexts{read(path_), std::string(kUsers)}, "prod", "prod_2x");
  write_file_atomically(path_, out.pgdog_toml);
  EXPECT_EQ(parse_config(read(path_), out.users_toml).shard_count("prod"), 2);
  EXPECT_EQ(read(path_ + ".pgdog_reshard.bak"), kPgdog);
}

}  // namespace
}  // namespace pgdog_reshard
