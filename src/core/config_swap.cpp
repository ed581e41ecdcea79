// The cluster name swap works on the TOML trees (not on the text, where a name may also appear in a
// comment, a host or a password), then checks its own result with parse_config before anyone writes
// it. The atomic write is the classic temp file + fsync + rename + directory fsync.
#include "core/config_swap.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>

#include <cerrno>
#include <sstream>
#include <system_error>

#include "core/config.h"
#include "core/error.h"

namespace pgdog_reshard {

namespace {

std::string quote(std::string_view text) { return "\"" + std::string(text) + "\""; }

// --- Swapping names in the TOML trees ---

// A key of an array-of-tables section whose value is a cluster name.
struct ClusterReference {
  const char *section;
  const char *key;
};

constexpr ClusterReference kPgdogReferences[] = {
    {"databases", "name"},
    {"sharded_tables", "database"},
    {"sharded_mappings", "database"},
    {"omnisharded_tables", "database"},
    {"sharded_schemas", "database"},
};
constexpr ClusterReference kUsersReferences[] = {{"users", "database"}};

// Every table of the section `key` of `doc` (none if it is absent or not an array of tables).
template <typename Fn>
void for_each_entry(toml::table &doc, std::string_view key, Fn fn) {
  toml::array *items = doc[key].as_array();
  if (!items) return;
  for (toml::node &item : *items) {
    if (toml::table *entry = item.as_table()) fn(*entry);
  }
}

// A cluster-named entry without database_name connects to the database of its name: pin it there
// before the name changes.
void pin_database_names(toml::table &doc, std::string_view a, std::string_view b) {
  for_each_entry(doc, "databases", [&](toml::table &entry) {
    std::optional<std::string_view> name = entry["name"].value<std::string_view>();
    if (name && (*name == a || *name == b) && !entry.contains("database_name")) {
      entry.insert("database_name", std::string(*name));
    }
  });
}

template <size_t N>
void swap_references(toml::table &doc, const ClusterReference (&references)[N], std::string_view a,
                     std::string_view b) {
  for (const ClusterReference &ref : references) {
    for_each_entry(doc, ref.section, [&](toml::table &entry) {
      toml::value<std::string> *value = entry[ref.key].as_string();
      if (!value) return;
      if (value->get() == a) {
        *value = std::string(b);
      } else if (value->get() == b) {
        *value = std::string(a);
      }
    });
  }
}

std::string to_toml(const toml::table &doc) {
  std::ostringstream out;
  out << doc << "\n";
  return out.str();
}

// parse_config has already read the texts, so a syntax error here would be a bug.
toml::table parse_valid(std::string_view text, std::string_view path) {
  try {
    return toml::parse(text, path);
  } catch (const toml::parse_error &e) {
    throw Error(sqlstate::kInternalError, std::string(path) + " passed parse_config but not toml::parse",
                std::string(e.description()));
  }
}

// --- Checking the result ---

bool same_entry(const Database &x, const Database &y) {
  return x.host == y.host && x.port == y.port && x.database_name == y.database_name &&
         x.shard == y.shard && x.role == y.role && x.resharding_only == y.resharding_only &&
         x.user == y.user && x.password == y.password;
}

// The swapped config must parse, and each [[databases]] entry (they keep their order) must reach the
// same server, database and credentials as before under the exchanged name: writing anything else
// would send applications to the wrong place.
void check_swapped(const Config &before, const ConfigTexts &after, std::string_view a, std::string_view b) {
  Config swapped;
  try {
    swapped = parse_config(after.pgdog_toml, after.users_toml);
  } catch (const Error &e) {
    throw Error(sqlstate::kInternalError, "the swapped configuration does not load", e.what());
  }
  bool same = swapped.databases.size() == before.databases.size();
  for (size_t i = 0; same && i < before.databases.size(); i++) {
    const Database &old_entry = before.databases[i];
    std::string expected_name = old_entry.name == a ? std::string(b)
                                : old_entry.name == b ? std::string(a)
                                                      : old_entry.name;
    same = swapped.databases[i].name == expected_name && same_entry(old_entry, swapped.databases[i]);
  }
  if (!same) {
    throw Error(sqlstate::kInternalError,
                "the swapped configuration does not describe the same databases under exchanged names");
  }
}

void check_clusters(const Config &config, std::string_view a, std::string_view b) {
  if (a == b) {
    throw Error(sqlstate::kInvalidParameterValue,
                "cannot swap cluster " + quote(a) + " with itself", {},
                "Name the old and the new cluster.");
  }
  for (std::string_view name : {a, b}) {
    if (config.has_cluster(name)) continue;
    throw Error(sqlstate::kInvalidParameterValue, "cluster " + quote(name) + " is not in pgdog.toml",
                "No [[databases]] entry has name = " + quote(name) + ".");
  }
}

// --- Atomic file writes ---

[[noreturn]] void io_fail(const std::string &what, const std::string &path, int error) {
  throw Error(sqlstate::kIoError,
              "could not " + what + " " + quote(path) + ": " + std::generic_category().message(error));
}

// A file descriptor closed on every path out.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // close() reports errors a write may only show then (NFS); checked for the file's data.
  int close() {
    int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }

 private:
  int fd_;
};

// The file at path as it stands, or nullopt if there is none.
struct ExistingFile {
  std::string content;
  struct stat st;
};

std::optional<ExistingFile> read_existing(const std::string &path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::nullopt;
    io_fail("open", path, errno);
  }
  ExistingFile file;
  if (::fstat(fd.get(), &file.st) != 0) io_fail("stat", path, errno);
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n == 0) break;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) io_fail("read", path, errno);
    file.content.append(buffer, static_cast<size_t>(n));
  }
  return file;
}

void write_all(int fd, std::string_view content, const std::string &path) {
  while (!content.empty()) {
    ssize_t n = ::write(fd, content.data(), content.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) io_fail("write", path, errno);
    content.remove_prefix(static_cast<size_t>(n));
  }
}

std::string directory_of(const std::string &path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

void sync_directory(const std::string &path) {
  std::string dir = directory_of(path);
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) io_fail("open directory", dir, errno);
  if (::fsync(fd.get()) != 0) io_fail("fsync directory", dir, errno);
}

// The old file's mode, and its owner and group if this process may give them (root, or a member of
// the group): PgDog may run as another user than the one writing.
void copy_access(int fd, const struct stat *like, const std::string &temp) {
  if (!like) return;
  if (::fchmod(fd, like->st_mode & 07777) != 0) io_fail("set the permissions of", temp, errno);
  if (::fchown(fd, like->st_uid, like->st_gid) == 0) return;
  // Best effort: a refusal leaves the writer's group, which only matters to who may read it.
  int group_only = ::fchown(fd, static_cast<uid_t>(-1), like->st_gid);
  static_cast<void>(group_only);
}

// Writes content to a temporary file beside path and renames it over path; the temporary file is
// removed on any failure.
void replace_file(const std::string &path, std::string_view content, const struct stat *like) {
  std::string temp = path + ".tmp.XXXXXX";
  Fd fd(::mkstemp(temp.data()));
  if (fd.get() < 0) io_fail("create a temporary file for", path, errno);
  try {
    copy_access(fd.get(), like, temp);
    write_all(fd.get(), content, temp);
    if (::fsync(fd.get()) != 0) io_fail("fsync", temp, errno);
    if (fd.close() != 0) io_fail("close", temp, errno);
    if (::rename(temp.c_str(), path.c_str()) != 0) io_fail("rename " + quote(temp) + " to", path, errno);
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  sync_directory(path);
}

}  // namespace

ConfigTexts swap_cluster_names(const ConfigTexts &in, std::string_view a, std::string_view b) {
  Config before = parse_config(in.pgdog_toml, in.users_toml);
  check_clusters(before, a, b);

  toml::table pgdog = parse_valid(in.pgdog_toml, "pgdog.toml");
  pin_database_names(pgdog, a, b);
  swap_references(pgdog, kPgdogReferences, a, b);
  ConfigTexts out{to_toml(pgdog), std::nullopt};
  if (in.users_toml) {
    toml::table users = parse_valid(*in.users_toml, "users.toml");
    swap_references(users, kUsersReferences, a, b);
    out.users_toml = to_toml(users);
  }
  check_swapped(before, out, a, b);
  return out;
}

void write_file_atomically(const std::string &path, std::string_view content,
                           const std::string &backup_suffix) {
  std::optional<ExistingFile> old = read_existing(path);
  if (old) replace_file(path + backup_suffix, old->content, &old->st);
  replace_file(path, content, old ? &old->st : nullptr);
}

}  // namespace pgdog_reshard
