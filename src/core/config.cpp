// Loads pgdog.toml and users.toml into a Config and checks everything resharding relies on before
// anything runs: a mistake found halfway through a reshard costs far more than one found here.
//
// The files are read section by section ([[databases]], [[users]], [[sharded_tables]],
// [[sharded_mappings]]); the checks that need the whole picture (shard numbering, primaries,
// credentials, overlapping mappings) follow. Every error is Error(F0000) naming the cluster or
// table and, where there is one, the line of the TOML entry. Passwords never appear in errors.
#include "core/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdint>
#include <set>
#include <utility>

#include "core/error.h"

namespace pgdog_reshard {

namespace {

[[noreturn]] void fail(const std::string &message, std::string detail = {}, std::string hint = {}) {
  throw Error(sqlstate::kConfigFileError, message, std::move(detail), std::move(hint));
}

std::string quote(std::string_view text) { return "\"" + std::string(text) + "\""; }

std::string line_of(const toml::node &node) { return std::to_string(node.source().begin.line); }

std::string type_phrase(const toml::node &node) {
  switch (node.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time: return "a date/time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

// --- TOML syntax ---

// toml++ quotes the text it choked on ("saw 'tru3'"); on a line that sets a password, that text is
// part of the password, so it is cut out of the message.
bool line_mentions_password(std::string_view doc, size_t line) {
  size_t begin = 0;
  for (size_t n = 1; n < line; n++) {
    begin = doc.find('\n', begin);
    if (begin == std::string_view::npos) return false;
    begin++;
  }
  std::string text(doc.substr(begin, doc.find('\n', begin) - begin));
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text.find("password") != std::string::npos;
}

std::string hide_quoted(std::string_view text) {
  std::string out;
  bool inside = false;
  for (char c : text) {
    if (c == '\'') {
      out += inside ? "...'" : "'";
      inside = !inside;
    } else if (!inside) {
      out += c;
    }
  }
  return out;
}

toml::table parse_toml(std::string_view doc, std::string_view path) {
  try {
    return toml::parse(doc, path);
  } catch (const toml::parse_error &e) {
    const toml::source_position &at = e.source().begin;
    std::string description(e.description());
    std::string detail;
    if (line_mentions_password(doc, at.line)) {
      description = hide_quoted(description);
      detail = "Part of the parser's message is hidden because the line holds a password.";
    }
    fail("syntax error in " + std::string(path) + " at line " + std::to_string(at.line) + ", column " +
             std::to_string(at.column) + ": " + description,
         std::move(detail));
  }
}

// The elements of an array-of-tables section such as [[databases]]; an absent section has none.
const toml::array *section(const toml::table &doc, std::string_view key, std::string_view path,
                           std::string_view owner = {}) {
  const toml::node *node = doc.get(key);
  if (!node) return nullptr;
  if (!node->is_array()) {
    fail(quote(key) + (owner.empty() ? "" : " of " + std::string(owner)) + " at " + std::string(path) +
             " line " + line_of(*node) + " must be an array of tables, not " + type_phrase(*node),
         {}, "Write each entry as a [[" + std::string(key) + "]] section.");
  }
  return node->as_array();
}

// --- One entry (one table of an array-of-tables) ---

// Reads the typed keys of one entry. Every error names the entry (`what`) and the line of its
// header, so a mistake in a long config is found at once. Keys it is not asked about are ignored.
class Entry {
 public:
  Entry(const toml::node &node, std::string_view path, std::string what)
      : node_(node), table_(node.as_table()), path_(path), what_(std::move(what)) {
    if (!table_) fail_here("must be a table, not " + type_phrase(node));
  }

  // Names the entry better once the keys that identify it are read.
  void rename(std::string what) { what_ = std::move(what); }

  const toml::node *get(std::string_view key) const { return table_->get(key); }
  bool has(std::string_view key) const { return get(key) != nullptr; }

  std::optional<std::string> text(std::string_view key) const {
    const toml::node *value = get(key);
    if (!value) return std::nullopt;
    if (!value->is_string()) wrong_type(key, *value, "a string");
    return value->as_string()->get();
  }

  std::string required_text(std::string_view key) const {
    std::optional<std::string> value = text(key);
    if (!value) fail_here(quote(key) + " is required");
    if (value->empty()) fail_here(quote(key) + " must not be empty");
    return *value;
  }

  std::optional<int64_t> integer(std::string_view key) const {
    const toml::node *value = get(key);
    if (!value) return std::nullopt;
    if (!value->is_integer()) wrong_type(key, *value, "an integer");
    return value->as_integer()->get();
  }

  int integer_in(std::string_view key, int fallback, int64_t low, int64_t high) const {
    int64_t value = integer(key).value_or(fallback);
    if (value < low)
      fail_here(quote(key) + " must be at least " + std::to_string(low) + ", not " + std::to_string(value));
    if (value > high)
      fail_here(quote(key) + " must be at most " + std::to_string(high) + ", not " + std::to_string(value));
    return static_cast<int>(value);
  }

  bool flag(std::string_view key, bool fallback) const {
    const toml::node *value = get(key);
    if (!value) return fallback;
    if (!value->is_boolean()) wrong_type(key, *value, "a boolean (true or false)");
    return value->as_boolean()->get();
  }

  [[noreturn]] void fail_here(const std::string &problem, std::string detail = {},
                              std::string hint = {}) const {
    fail(what_ + " at " + path_ + " line " + line() + ": " + problem, std::move(detail), std::move(hint));
  }

  // Reports a value of the wrong type by its type only: the value itself may be a password.
  [[noreturn]] void wrong_type(std::string_view key, const toml::node &value,
                               const std::string &expected) const {
    fail_here(quote(key) + " must be " + expected + ", not " + type_phrase(value));
  }

  std::string line() const { return line_of(node_); }
  const std::string &path() const { return path_; }

 private:
  const toml::node &node_;
  const toml::table *table_;
  std::string path_;
  std::string what_;
};

// --- [[databases]] ---

// A [[databases]] entry as written: the credentials it sets itself are resolved against users.toml
// once every entry is read, and the line is kept for errors about the cluster as a whole.
struct DatabaseEntry {
  Database db;
  std::optional<std::string> user;
  std::optional<std::string> password;
  std::string line;
};

Role read_role(const Entry &entry) {
  std::string role = entry.text("role").value_or("primary");
  if (role == "primary") return Role::Primary;
  if (role == "replica") return Role::Replica;
  if (role == "auto") return Role::Auto;
  entry.fail_here("unknown role " + quote(role), {}, "role must be \"primary\", \"replica\" or \"auto\".");
}

DatabaseEntry read_database(const toml::node &node, std::string_view path) {
  Entry entry(node, path, "[[databases]] entry");
  DatabaseEntry out;
  Database &db = out.db;
  db.name = entry.required_text("name");
  entry.rename("[[databases]] entry " + quote(db.name));
  db.host = entry.required_text("host");
  db.port = entry.integer_in("port", 5432, 1, 65535);
  db.database_name = entry.text("database_name").value_or(db.name);
  if (db.database_name.empty()) entry.fail_here("\"database_name\" must not be empty");
  // One below INT_MAX so that "shard + 1" (a shard count) cannot overflow.
  db.shard = entry.integer_in("shard", 0, 0, INT_MAX - 1);
  db.role = read_role(entry);
  db.resharding_only = entry.flag("resharding_only", false);
  out.user = entry.text("user");
  out.password = entry.text("password");
  out.line = entry.line();
  return out;
}

std::vector<DatabaseEntry> read_databases(const toml::table &doc, std::string_view path) {
  std::vector<DatabaseEntry> entries;
  if (const toml::array *items = section(doc, "databases", path)) {
    for (const toml::node &item : *items) entries.push_back(read_database(item, path));
  }
  return entries;
}

// --- Cluster checks ---

// The checks run on the resolved Database list; `lines[i]` is the TOML line of databases[i].
struct Clusters {
  const std::vector<Database> &databases;
  const std::vector<std::string> &lines;
  std::string_view path;

  std::string host_text(size_t i) const {
    return databases[i].host + ":" + std::to_string(databases[i].port) + " (line " + lines[i] + ")";
  }
};

std::vector<size_t> members_of(const std::vector<Database> &databases, std::string_view cluster) {
  std::vector<size_t> out;
  for (size_t i = 0; i < databases.size(); i++) {
    if (databases[i].name == cluster) out.push_back(i);
  }
  return out;
}

std::string join_numbers(const std::vector<int> &numbers, size_t limit) {
  std::string out;
  for (size_t i = 0; i < numbers.size() && i < limit; i++) {
    out += (i ? ", " : "") + std::to_string(numbers[i]);
  }
  if (numbers.size() > limit) out += ", ...";
  return out;
}

// Shards are addressed by number everywhere (PgDog, the hash's modulus), so a cluster of M shards
// must number them exactly 0..M-1: a gap would silently send rows to a shard nobody serves.
void check_shard_numbers(const Clusters &c, std::string_view cluster, const std::vector<size_t> &members) {
  std::set<int> present;
  for (size_t i : members) present.insert(c.databases[i].shard);
  int count = *present.rbegin() + 1;
  std::vector<int> missing;
  // Stops after a few: a typo like shard = 100000 should not list a hundred thousand numbers.
  for (int shard = 0; shard < count && missing.size() <= 10; shard++) {
    if (!present.count(shard)) missing.push_back(shard);
  }
  if (missing.empty()) return;
  fail("database " + quote(cluster) + " has no shard " + join_numbers(missing, 10),
       "Its [[databases]] entries in " + std::string(c.path) + " define shards " +
           join_numbers(std::vector<int>(present.begin(), present.end()), 10) + "; a cluster of " +
           std::to_string(count) + " shards must define every shard from 0 to " + std::to_string(count - 1) +
           ".",
       "Add [[databases]] entries for the missing shards or renumber the shards.");
}

void check_duplicate_hosts(const Clusters &c, std::string_view cluster, const std::vector<size_t> &members) {
  for (size_t i = 0; i < members.size(); i++) {
    for (size_t j = i + 1; j < members.size(); j++) {
      const Database &a = c.databases[members[i]], &b = c.databases[members[j]];
      if (a.host != b.host || a.port != b.port || a.database_name != b.database_name || a.shard != b.shard) {
        continue;
      }
      fail("database " + quote(cluster) + " lists " + a.host + ":" + std::to_string(a.port) + " database " +
               quote(a.database_name) + " twice for shard " + std::to_string(a.shard),
           "The [[databases]] entries at " + std::string(c.path) + " lines " + c.lines[members[i]] + " and " +
               c.lines[members[j]] + " are the same.",
           "Remove one of them.");
    }
  }
}

// Indices (into the databases) of the entries of one shard that could be its primary.
struct PrimaryCandidates {
  std::vector<size_t> primaries;  // role = "primary"
  std::vector<size_t> autos;      // role = "auto", not resharding_only
};

PrimaryCandidates primary_candidates(const std::vector<Database> &databases, std::string_view cluster,
                                     int shard) {
  PrimaryCandidates c;
  for (size_t i = 0; i < databases.size(); i++) {
    const Database &db = databases[i];
    if (db.name != cluster || db.shard != shard) continue;
    if (db.role == Role::Primary) c.primaries.push_back(i);
    if (db.role == Role::Auto && !db.resharding_only) c.autos.push_back(i);
  }
  return c;
}

// PgDog asks an "auto" host whether it is in recovery; resharding needs a fixed answer before it
// connects, so an auto entry is the primary only when it is the shard's single candidate.
std::optional<size_t> chosen_primary(const PrimaryCandidates &c) {
  if (c.primaries.size() == 1) return c.primaries.front();
  if (c.primaries.empty() && c.autos.size() == 1) return c.autos.front();
  return std::nullopt;
}

void check_primary(const Clusters &c, std::string_view cluster, int shard) {
  PrimaryCandidates candidates = primary_candidates(c.databases, cluster, shard);
  std::string which = "shard " + std::to_string(shard) + " of database " + quote(cluster);
  if (candidates.primaries.size() > 1) {
    fail("duplicate primary for " + which,
         "Hosts " + c.host_text(candidates.primaries[0]) + " and " + c.host_text(candidates.primaries[1]) +
             " both have role = \"primary\".",
         "Set role = \"replica\" on every entry of the shard but its primary.");
  }
  if (chosen_primary(candidates)) return;
  fail(which + " has no primary",
       candidates.autos.size() > 1
           ? "It has " + std::to_string(candidates.autos.size()) +
                 " entries with role = \"auto\"; resharding must know which one is the primary."
           : "None of its [[databases]] entries has role = \"primary\" (or is a single \"auto\" entry "
             "that is not resharding_only).",
       "Set role = \"primary\" on the entry of the shard's primary.");
}

void check_clusters(const Clusters &c) {
  std::set<std::string> done;
  for (const Database &db : c.databases) {
    if (!done.insert(db.name).second) continue;
    std::vector<size_t> members = members_of(c.databases, db.name);
    check_shard_numbers(c, db.name, members);
    check_duplicate_hosts(c, db.name, members);
    // Shards are now known to be 0..M-1 with M at most the number of entries.
    int shards = 0;
    for (size_t i : members) shards = std::max(shards, c.databases[i].shard + 1);
    for (int shard = 0; shard < shards; shard++) check_primary(c, db.name, shard);
  }
}

// --- [[users]] and credentials ---

User read_user(const toml::node &node, std::string_view path) {
  Entry entry(node, path, "[[users]] entry");
  User user;
  user.name = entry.required_text("name");
  entry.rename("[[users]] entry " + quote(user.name));
  user.database = entry.required_text("database");
  user.password = entry.text("password").value_or("");
  user.schema_admin = entry.flag("schema_admin", false);
  return user;
}

std::vector<User> read_users(const toml::table &doc, std::string_view path) {
  std::vector<User> users;
  if (const toml::array *items = section(doc, "users", path)) {
    for (const toml::node &item : *items) users.push_back(read_user(item, path));
  }
  return users;
}

// The users.toml user a cluster connects as: the schema_admin (it runs schema sync and
// replication, so it has the privileges resharding needs), else the first one listed.
const User *cluster_user(const std::vector<User> &users, std::string_view cluster) {
  const User *first = nullptr;
  for (const User &u : users) {
    if (u.database != cluster) continue;
    if (u.schema_admin) return &u;
    if (!first) first = &u;
  }
  return first;
}

const User *named_user(const std::vector<User> &users, std::string_view cluster, std::string_view name) {
  for (const User &u : users) {
    if (u.database == cluster && u.name == name) return &u;
  }
  return nullptr;
}

// An entry's own user/password win; what it leaves out comes from users.toml. An entry naming a
// user without a password takes that user's users.toml password, if it has one.
void resolve_credentials(DatabaseEntry &e, const std::vector<User> &users, std::string_view users_path) {
  Database &db = e.db;
  const User *from_file = e.user ? named_user(users, db.name, *e.user) : cluster_user(users, db.name);
  if (!e.user && !from_file) {
    fail("no user for database " + quote(db.name),
         "The [[databases]] entry at line " + e.line + " (" + db.host + ":" + std::to_string(db.port) +
             ", shard " + std::to_string(db.shard) + ") sets no user, and " + std::string(users_path) +
             " has no [[users]] entry with database = " + quote(db.name) + ".",
         "Add a [[users]] entry with database = " + quote(db.name) + " to " + std::string(users_path) +
             " (with schema_admin = true for the user that runs resharding).");
  }
  db.user = e.user ? *e.user : from_file->name;
  if (e.password) {
    db.password = *e.password;
  } else if (from_file) {
    db.password = from_file->password;
  }
}

// --- [[sharded_tables]] and mappings ---

// A sharding rule as written, with its line for errors about duplicates.
struct RuleEntry {
  ShardedTable rule;
  std::string line;
};

std::string rule_name(const ShardedTable &rule) {
  std::string schema = rule.schema.empty() ? "" : quote(rule.schema) + ".";
  std::string name = rule.table.empty()
                         ? "column " + quote(rule.column) + " of every table" +
                               (rule.schema.empty() ? "" : " in schema " + quote(rule.schema))
                         : "table " + schema + quote(rule.table) + ", column " + quote(rule.column);
  return name + " of database " + quote(rule.database);
}

// PgDog's docs write the table as `name` in some places and `table` in others; both are accepted.
std::string read_table_name(const Entry &entry) {
  std::optional<std::string> name = entry.text("name");
  std::optional<std::string> table = entry.text("table");
  if (name && table && *name != *table) {
    entry.fail_here("\"name\" = " + quote(*name) + " and \"table\" = " + quote(*table) + " disagree", {},
                    "Give the table once, as either \"name\" or \"table\".");
  }
  return name ? *name : table.value_or("");
}

std::string known_clusters(const Config &config) {
  std::vector<std::string> names;
  for (const Database &db : config.databases) {
    if (std::find(names.begin(), names.end(), db.name) == names.end()) names.push_back(db.name);
  }
  std::string out;
  for (const std::string &n : names) out += (out.empty() ? "" : ", ") + n;
  return out.empty() ? "(none)" : out;
}

// The cluster a sharding rule or mapping is declared for: it must be one of [[databases]].
std::string read_rule_database(const Entry &entry, const Config &config) {
  std::string database = entry.required_text("database");
  if (!config.has_cluster(database)) {
    entry.fail_here("database " + quote(database) + " is not the name of any [[databases]] entry",
                    "Known databases: " + known_clusters(config) + ".",
                    "Sharding rules are declared for the destination cluster: use its [[databases]] name.");
  }
  return database;
}

Key read_key(const Entry &entry, const toml::node &value, DataType type, std::string_view key) {
  std::string text;
  if (const auto *integer = value.as_integer()) {
    text = std::to_string(integer->get());
  } else if (const auto *string = value.as_string()) {
    text = string->get();
  } else {
    entry.wrong_type(key, value, "an integer or a string");
  }
  try {
    return parse_key(type, text);
  } catch (const Error &e) {
    entry.fail_here("value " + quote(text) + " is not a valid " + data_type_name(type), e.what());
  }
}

Mapping::Kind mapping_kind(const Entry &entry) {
  bool values = entry.has("values");
  bool bounds = entry.has("start") || entry.has("end");
  std::optional<std::string> kind = entry.text("kind");
  if (!kind) {
    if (values && bounds)
      entry.fail_here("a mapping has either \"values\" (a list) or \"start\"/\"end\" (a range), not both");
    return values ? Mapping::Kind::List : (bounds ? Mapping::Kind::Range : Mapping::Kind::Default);
  }
  if (*kind == "list" && values && !bounds) return Mapping::Kind::List;
  if (*kind == "range" && !values) return Mapping::Kind::Range;
  if (*kind == "default" && !values && !bounds) return Mapping::Kind::Default;
  if (*kind == "list" || *kind == "range" || *kind == "default") {
    entry.fail_here("kind = " + quote(*kind) + " does not fit its keys", {},
                    "A list mapping has \"values\", a range mapping \"start\" and/or \"end\", a default "
                    "mapping neither.");
  }
  entry.fail_here("unknown kind " + quote(*kind), {}, "kind must be \"list\", \"range\" or \"default\".");
}

std::vector<Key> read_values(const Entry &entry, DataType type) {
  const toml::node *node = entry.get("values");
  const toml::array *array = node->as_array();
  if (!array) entry.wrong_type("values", *node, "an array");
  if (array->empty()) entry.fail_here("\"values\" must not be empty");
  std::vector<Key> values;
  for (const toml::node &value : *array) values.push_back(read_key(entry, value, type, "values"));
  return values;
}

// One list/range/default mapping of `rule`, from [[sharded_tables.mapping]] or [[sharded_mappings]].
Mapping read_mapping(const Entry &entry, const ShardedTable &rule, int shards) {
  Mapping m;
  m.kind = mapping_kind(entry);
  if (m.kind == Mapping::Kind::List) m.values = read_values(entry, rule.data_type);
  if (const toml::node *start = entry.get("start"))
    m.start = read_key(entry, *start, rule.data_type, "start");
  if (const toml::node *end = entry.get("end")) m.end = read_key(entry, *end, rule.data_type, "end");
  if (m.start && m.end && compare_keys(*m.start, *m.end) >= 0) {
    entry.fail_here("the range is empty: start " + quote(format_key(rule.data_type, *m.start)) +
                        " is not below end " + quote(format_key(rule.data_type, *m.end)),
                    "A range holds the values v with start <= v < end.");
  }
  std::optional<int64_t> shard = entry.integer("shard");
  if (!shard) entry.fail_here("\"shard\" is required");
  if (*shard < 0 || *shard >= shards) {
    entry.fail_here("shard " + std::to_string(*shard) + " does not exist",
                    "Database " + quote(rule.database) + " has " + std::to_string(shards) +
                        " shards, numbered 0 to " + std::to_string(shards - 1) + ".");
  }
  m.shard = static_cast<int>(*shard);
  return m;
}

std::string mapping_what(const char *section_name, const ShardedTable &rule) {
  return std::string(section_name) + " entry for " + rule_name(rule);
}

RuleEntry read_sharded_table(const toml::node &node, std::string_view path, const Config &config) {
  Entry entry(node, path, "[[sharded_tables]] entry");
  RuleEntry out;
  ShardedTable &rule = out.rule;
  rule.database = read_rule_database(entry, config);
  rule.column = entry.required_text("column");
  rule.table = read_table_name(entry);
  rule.schema = entry.text("schema").value_or("");
  entry.rename("[[sharded_tables]] entry for " + rule_name(rule));
  std::string type = entry.text("data_type").value_or("bigint");
  std::optional<DataType> data_type = parse_data_type(type);
  if (!data_type) {
    entry.fail_here("unknown data_type " + quote(type), {},
                    "data_type must be \"bigint\", \"varchar\" or \"uuid\".");
  }
  rule.data_type = *data_type;
  if (const toml::array *items =
          section(*node.as_table(), "mapping", path, "[[sharded_tables]] entry for " + rule_name(rule))) {
    for (const toml::node &item : *items) {
      Entry mapping(item, path, mapping_what("[[sharded_tables.mapping]]", rule));
      rule.mappings.push_back(read_mapping(mapping, rule, config.shard_count(rule.database)));
    }
  }
  out.line = entry.line();
  return out;
}

bool same_rule(const ShardedTable &a, const ShardedTable &b) {
  return a.database == b.database && a.schema == b.schema && a.table == b.table && a.column == b.column;
}

// Two rules for one column would route the same row two ways: which one wins is a guess.
void check_duplicate_rules(const std::vector<RuleEntry> &rules, std::string_view path) {
  for (size_t i = 0; i < rules.size(); i++) {
    for (size_t j = i + 1; j < rules.size(); j++) {
      if (!same_rule(rules[i].rule, rules[j].rule)) continue;
      fail("duplicate sharding rule for " + rule_name(rules[i].rule),
           "The [[sharded_tables]] entries at " + std::string(path) + " lines " + rules[i].line + " and " +
               rules[j].line + " are for the same table and column.",
           "Keep one of them.");
    }
  }
}

// PgDog's older syntax: top-level [[sharded_mappings]] naming the rule they belong to.
void attach_sharded_mappings(const toml::table &doc, std::string_view path, const Config &config,
                             std::vector<RuleEntry> &rules) {
  const toml::array *items = section(doc, "sharded_mappings", path);
  if (!items) return;
  for (const toml::node &item : *items) {
    Entry entry(item, path, "[[sharded_mappings]] entry");
    ShardedTable key;
    key.database = read_rule_database(entry, config);
    key.column = entry.required_text("column");
    key.table = read_table_name(entry);
    key.schema = entry.text("schema").value_or("");
    entry.rename(mapping_what("[[sharded_mappings]]", key));
    auto match =
        std::find_if(rules.begin(), rules.end(), [&](const RuleEntry &r) { return same_rule(r.rule, key); });
    if (match == rules.end()) {
      entry.fail_here("no [[sharded_tables]] entry has the same database, table, schema and column", {},
                      "Add a [[sharded_tables]] entry for " + rule_name(key) + ".");
    }
    match->rule.mappings.push_back(read_mapping(entry, match->rule, config.shard_count(key.database)));
  }
}

// --- Overlapping mappings ---

std::string range_text(DataType type, const Mapping &m) {
  return "[" + (m.start ? format_key(type, *m.start) : std::string("unbounded")) + ", " +
         (m.end ? format_key(type, *m.end) : std::string("unbounded")) + ")";
}

bool in_range(const Key &key, const Mapping &range) {
  return (!range.start || compare_keys(*range.start, key) <= 0) &&
         (!range.end || compare_keys(key, *range.end) < 0);
}

// Ranges are half-open [start, end); an absent bound is unbounded.
bool ranges_overlap(const Mapping &a, const Mapping &b) {
  bool a_before_b_ends = !a.start || !b.end || compare_keys(*a.start, *b.end) < 0;
  bool b_before_a_ends = !b.start || !a.end || compare_keys(*b.start, *a.end) < 0;
  return a_before_b_ends && b_before_a_ends;
}

[[noreturn]] void overlap(const ShardedTable &rule, const std::string &what) {
  fail("overlapping mappings for " + rule_name(rule) + ": " + what, {},
       "Each value may be mapped once: by one list entry, or by one range.");
}

void check_list_values(const ShardedTable &rule, const std::vector<const Mapping *> &lists,
                       const std::vector<const Mapping *> &ranges) {
  std::vector<std::pair<Key, int>> values;  // (value, shard)
  for (const Mapping *m : lists) {
    for (const Key &v : m->values) values.emplace_back(v, m->shard);
  }
  std::sort(values.begin(), values.end(),
            [](const auto &a, const auto &b) { return compare_keys(a.first, b.first) < 0; });
  for (size_t i = 1; i < values.size(); i++) {
    if (compare_keys(values[i - 1].first, values[i].first) == 0) {
      overlap(rule, "value " + quote(format_key(rule.data_type, values[i].first)) +
                        " is listed twice (shards " + std::to_string(values[i - 1].second) + " and " +
                        std::to_string(values[i].second) + ")");
    }
  }
  for (const auto &value : values) {
    for (const Mapping *range : ranges) {
      if (!in_range(value.first, *range)) continue;
      overlap(rule, "value " + quote(format_key(rule.data_type, value.first)) + " (shard " +
                        std::to_string(value.second) + ") is inside range " +
                        range_text(rule.data_type, *range) + " (shard " + std::to_string(range->shard) + ")");
    }
  }
}

void check_mappings(const ShardedTable &rule) {
  std::vector<const Mapping *> lists, ranges, defaults;
  for (const Mapping &m : rule.mappings) {
    (m.kind == Mapping::Kind::List    ? lists
     : m.kind == Mapping::Kind::Range ? ranges
                                      : defaults)
        .push_back(&m);
  }
  if (defaults.size() > 1) {
    overlap(rule, std::to_string(defaults.size()) + " default mappings (shards " +
                      std::to_string(defaults[0]->shard) + " and " + std::to_string(defaults[1]->shard) +
                      ")");
  }
  for (size_t i = 0; i < ranges.size(); i++) {
    for (size_t j = i + 1; j < ranges.size(); j++) {
      if (!ranges_overlap(*ranges[i], *ranges[j])) continue;
      overlap(rule, "ranges " + range_text(rule.data_type, *ranges[i]) + " and " +
                        range_text(rule.data_type, *ranges[j]) + " overlap");
    }
  }
  check_list_values(rule, lists, ranges);
}

std::vector<ShardedTable> read_rules(const toml::table &doc, std::string_view path, const Config &config) {
  std::vector<RuleEntry> rules;
  if (const toml::array *items = section(doc, "sharded_tables", path)) {
    for (const toml::node &item : *items) rules.push_back(read_sharded_table(item, path, config));
  }
  check_duplicate_rules(rules, path);
  attach_sharded_mappings(doc, path, config, rules);
  std::vector<ShardedTable> out;
  for (RuleEntry &r : rules) {
    check_mappings(r.rule);
    out.push_back(std::move(r.rule));
  }
  return out;
}

}  // namespace

const char *role_name(Role role) {
  switch (role) {
    case Role::Primary: return "primary";
    case Role::Replica: return "replica";
    case Role::Auto: return "auto";
  }
  return "unknown";
}

bool Config::has_cluster(std::string_view name) const {
  return std::any_of(databases.begin(), databases.end(), [&](const Database &db) { return db.name == name; });
}

int Config::shard_count(std::string_view cluster) const {
  int count = 0;
  for (const Database &db : databases) {
    if (db.name == cluster) count = std::max(count, db.shard + 1);
  }
  return count;
}

const Database &Config::primary(std::string_view cluster, int shard) const {
  if (std::optional<size_t> i = chosen_primary(primary_candidates(databases, cluster, shard))) {
    return databases[*i];
  }
  throw Error(sqlstate::kUndefinedObject,
              "database " + quote(cluster) + " has no primary for shard " + std::to_string(shard));
}

std::vector<const Database *> Config::copy_replicas(std::string_view cluster, int shard) const {
  const Database *main = &primary(cluster, shard);
  std::vector<const Database *> marked, replicas;
  for (const Database &db : databases) {
    if (db.name != cluster || db.shard != shard || &db == main) continue;
    if (db.resharding_only) marked.push_back(&db);
    if (db.role == Role::Replica) replicas.push_back(&db);
  }
  return marked.empty() ? replicas : marked;
}

std::vector<const ShardedTable *> Config::rules_for(std::string_view cluster) const {
  std::vector<const ShardedTable *> out;
  for (const ShardedTable &rule : sharded_tables) {
    if (rule.database == cluster) out.push_back(&rule);
  }
  return out;
}

Config parse_config(std::string_view pgdog_toml, std::optional<std::string_view> users_toml,
                    std::string_view pgdog_path, std::string_view users_path) {
  toml::table pgdog = parse_toml(pgdog_toml, pgdog_path);
  Config config;
  if (users_toml) config.users = read_users(parse_toml(*users_toml, users_path), users_path);

  std::vector<std::string> lines;
  for (DatabaseEntry &e : read_databases(pgdog, pgdog_path)) {
    resolve_credentials(e, config.users, users_path);
    config.databases.push_back(std::move(e.db));
    lines.push_back(std::move(e.line));
  }
  check_clusters(Clusters{config.databases, lines, pgdog_path});

  // Rules are read against the finished cluster list: their database must exist and their
  // mappings' shards must be within it.
  config.sharded_tables = read_rules(pgdog, pgdog_path, config);
  return config;
}

}  // namespace pgdog_reshard
