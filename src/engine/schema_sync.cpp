#include "engine/schema_sync.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string_view>
#include <system_error>
#include <thread>

#include "core/sql_script.h"

extern char **environ;

namespace pgdog_reshard {

const char *schema_phase_name(SchemaPhase phase) {
  switch (phase) {
    case SchemaPhase::Pre: return "pre";
    case SchemaPhase::Post: return "post";
    case SchemaPhase::Cutover: return "cutover";
  }
  return "unknown";
}

namespace {

// ---------------------------------------------------------------------------------------------
// Sorting pg_dump's output into the two phases

// Enough leading words to see "ALTER TABLE ONLY s . t ADD CONSTRAINT c PRIMARY KEY" (and
// "IF EXISTS") or "... REPLICA IDENTITY".
constexpr size_t kClassifyWords = 16;

// The object a pg_dump TOC comment announces; it applies to every statement until the next one.
struct TocEntry {
  std::string kind;
  std::string schema;
  std::string name;
};

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

// "-- Name: orders orders_pkey; Type: CONSTRAINT; Schema: public; Owner: -". Read from the right:
// the name is the object's name as is and may itself hold "; ".
std::optional<TocEntry> parse_toc_line(std::string_view line) {
  constexpr std::string_view kName = "-- Name: ", kType = "; Type: ", kSchema = "; Schema: ";
  if (!starts_with(line, kName)) return std::nullopt;
  line.remove_prefix(kName.size());
  size_t owner = line.rfind("; Owner: ");
  if (owner == std::string_view::npos) return std::nullopt;
  line = line.substr(0, owner);
  size_t schema = line.rfind(kSchema);
  if (schema == std::string_view::npos) return std::nullopt;
  size_t type = line.rfind(kType, schema);
  if (type == std::string_view::npos) return std::nullopt;
  TocEntry entry;
  entry.name = std::string(line.substr(0, type));
  entry.kind = std::string(line.substr(type + kType.size(), schema - type - kType.size()));
  entry.schema = std::string(line.substr(schema + kSchema.size()));
  if (entry.schema == "-") entry.schema.clear();
  return entry;
}

// The last TOC comment in the text before a statement, if any.
std::optional<TocEntry> find_toc(std::string_view comments) {
  std::optional<TocEntry> found;
  while (!comments.empty()) {
    size_t newline = comments.find('\n');
    std::string_view line = comments.substr(0, newline);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (auto entry = parse_toc_line(line)) found = std::move(entry);
    comments = newline == std::string_view::npos ? std::string_view() : comments.substr(newline + 1);
  }
  return found;
}

bool word_is(const std::vector<std::string> &words, size_t i, const char *word) {
  return i < words.size() && words[i] == word;
}

// SET ..., RESET ..., SELECT pg_catalog.set_config(...): the dump's session settings. The applier
// sets what it needs itself.
bool is_session_setting(const std::vector<std::string> &words) {
  if (word_is(words, 0, "SET") || word_is(words, 0, "RESET")) return true;
  if (!word_is(words, 0, "SELECT")) return false;
  return word_is(words, 1, "SET_CONFIG") ||
         (word_is(words, 1, "PG_CATALOG") && word_is(words, 2, ".") && word_is(words, 3, "SET_CONFIG"));
}

// Publications and subscriptions belong to the source's replication, not to the new cluster.
bool is_replication_object(const TocEntry &toc, const std::vector<std::string> &words) {
  auto names_one = [](std::string_view text) {
    return text.find("PUBLICATION") != std::string_view::npos ||
           text.find("SUBSCRIPTION") != std::string_view::npos;
  };
  if (names_one(toc.kind)) return true;
  size_t object = 1;  // CREATE/ALTER/DROP <object>
  if (word_is(words, 0, "COMMENT") || word_is(words, 0, "SECURITY")) {
    while (object < words.size() && words[object] != "ON") object++;
    object++;  // COMMENT ON <object>, SECURITY LABEL [FOR provider] ON <object>
  }
  return word_is(words, object, "PUBLICATION") || word_is(words, object, "SUBSCRIPTION");
}

// pg_dump sorts every pre-data object before every post-data one; the first of these kinds is
// the boundary, and everything after it (comments on indexes included) is post-data.
bool is_post_data_kind(const std::string &kind) {
  static const char *const kPostDataKinds[] = {
      "INDEX",   "INDEX ATTACH", "CONSTRAINT",   "CHECK CONSTRAINT", "FK CONSTRAINT",
      "TRIGGER", "EVENT TRIGGER", "RULE",        "POLICY",           "ROW SECURITY",
      "STATISTICS", "MATERIALIZED VIEW DATA"};
  for (const char *post : kPostDataKinds) {
    if (kind == post) return true;
  }
  return false;
}

// ALTER TABLE ... REPLICA IDENTITY ...: pg_dump writes it inside the TABLE entry (FULL, NOTHING)
// or after the index it uses (USING INDEX).
bool is_replica_identity(const std::vector<std::string> &words) {
  if (!word_is(words, 0, "ALTER") || !word_is(words, 1, "TABLE")) return false;
  for (size_t i = 2; i + 1 < words.size(); i++) {
    if (words[i] == "REPLICA" && words[i + 1] == "IDENTITY") return true;
  }
  return false;
}

}  // namespace

SchemaDump split_schema_dump(const std::string &script) {
  SchemaDump dump;
  TocEntry toc;
  bool post_data = false;
  for (ScriptStatement &piece : split_sql_script(script)) {
    if (auto entry = find_toc(piece.leading_comments)) toc = std::move(*entry);
    if (piece.meta_command) continue;  // \restrict, \unrestrict: psql's business
    std::vector<std::string> words = statement_words(piece.sql, kClassifyWords);
    if (is_session_setting(words) || is_replication_object(toc, words)) continue;
    if (is_post_data_kind(toc.kind)) post_data = true;

    SchemaStatement statement{std::move(piece.sql), toc.kind, toc.schema, toc.name};
    if (is_replica_identity(words)) {
      // USING INDEX needs its index, which post creates; FULL goes with it, so that every
      // table's identity is settled in one place, after the copy, like its indexes.
      statement.kind = "REPLICA IDENTITY";
      dump.post.push_back(std::move(statement));
    } else {
      (post_data ? dump.post : dump.pre).push_back(std::move(statement));
    }
  }
  return dump;
}

// ---------------------------------------------------------------------------------------------
// Running pg_dump

namespace {

constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kMaxStderr = 16 * 1024;   // enough for any pg_dump error; the rest is dropped
constexpr long kReapPollNs = 5 * 1000 * 1000;
constexpr long kTermGraceNs = 2000L * 1000 * 1000;  // for pg_dump to cancel its query and exit

[[noreturn]] void fail_system(const std::string &what, int error = errno) {
  throw Error(sqlstate::kSystemError, what + ": " + std::strerror(error));
}

// A file descriptor, closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

std::string temp_template(const char *name) {
  const char *dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/" + name + ".XXXXXX";
}

// A new private (0600, as mkstemp creates it) temporary file, close-on-exec.
int make_temp_file(std::string &path) {
  int fd = mkostemp(path.data(), O_CLOEXEC);
  if (fd < 0) fail_system("could not create a temporary file in " + path);
  return fd;
}

// pg_dump's password, in a file only this OS user can read, removed when the dump is over. Never
// on pg_dump's command line (any local user sees it in ps) nor in PGPASSWORD (which PostgreSQL's
// documentation advises against: some systems show environments to other users).
class PassFile {
 public:
  explicit PassFile(const std::string &password) : path_(temp_template("pgdog_reshard_pgpass")) {
    if (password.find_first_of("\r\n") != std::string::npos) {
      throw Error(sqlstate::kInvalidParameterValue,
                  "the source's password contains a line break, which pg_dump's password file "
                  "cannot hold");
    }
    Fd fd(make_temp_file(path_));
    std::string line = "*:*:*:*:";  // the file serves this one pg_dump only
    for (char c : password) {
      if (c == ':' || c == '\\') line += '\\';
      line += c;
    }
    line += '\n';
    if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      int error = errno;
      ::unlink(path_.c_str());
      fail_system("could not write the password file " + path_, error);
    }
  }
  ~PassFile() { ::unlink(path_.c_str()); }
  PassFile(const PassFile &) = delete;
  PassFile &operator=(const PassFile &) = delete;
  const std::string &path() const { return path_; }

 private:
  std::string path_;
};

// Where pg_dump's stderr goes: an unlinked file rather than a second pipe, so that only stdout
// needs waiting on and a chatty stderr can never block pg_dump.
int anonymous_temp_file() {
  std::string path = temp_template("pgdog_reshard_pg_dump_err");
  int fd = make_temp_file(path);
  ::unlink(path.c_str());
  return fd;
}

std::string read_stderr_file(int fd) {
  std::string text(kMaxStderr, '\0');
  ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return text;
}

// A spawned child that is always reaped: the destructor kills (SIGKILL) and waits for a child
// still running, so an interrupted dump leaves neither a process nor a zombie. Waits are for this
// pid only (the test harness is a subreaper with other children).
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string> &argv, const std::vector<std::string> &env,
               int stdout_fd, int stderr_fd);
  ~ChildProcess();
  ChildProcess(const ChildProcess &) = delete;
  ChildProcess &operator=(const ChildProcess &) = delete;

  // The child's wait status once it exits; interruptible through ctx.
  int wait_exit(TaskContext &ctx);

 private:
  pid_t pid_ = -1;
};

std::vector<char *> c_strings(const std::vector<std::string> &strings) {
  std::vector<char *> pointers;
  for (const std::string &s : strings) pointers.push_back(const_cast<char *>(s.c_str()));
  pointers.push_back(nullptr);
  return pointers;
}

ChildProcess::ChildProcess(const std::vector<std::string> &argv, const std::vector<std::string> &env,
                           int stdout_fd, int stderr_fd) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, stdout_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, stderr_fd, STDERR_FILENO);
  // A server process blocks and ignores signals of its own (SIGPIPE, SIGUSR1, ...); pg_dump gets
  // the defaults, so that it dies of SIGPIPE like any command-line tool.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char *> args = c_strings(argv), envp = c_strings(env);
  int rc = posix_spawn(&pid_, argv[0].c_str(), &actions, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    pid_ = -1;
    fail_system("could not start " + argv[0], rc);
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0) return;
  // SIGTERM first: pg_dump's handler asks the server to cancel its running query, then exits.
  // Killed outright, it would leave a backend waiting on a lock until it gets it, since the server
  // notices a vanished client only when it next talks to it. SIGKILL if it lingers.
  ::kill(pid_, SIGTERM);
  int status = 0;
  for (long waited_ns = 0; waited_ns < kTermGraceNs; waited_ns += kReapPollNs) {
    pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_ || (done < 0 && errno != EINTR)) return;
    timespec pause{0, kReapPollNs};
    nanosleep(&pause, nullptr);
  }
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

int ChildProcess::wait_exit(TaskContext &ctx) {
  // Called once stdout reached EOF: pg_dump is exiting, so a short poll loop is enough.
  for (;;) {
    int status = 0;
    pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      pid_ = -1;
      return status;
    }
    if (done < 0 && errno != EINTR) {
      int error = errno;
      pid_ = -1;  // ECHILD: not ours to reap any more (SIGCHLD ignored by the process)
      fail_system("could not wait for pg_dump", error);
    }
    ctx.check_interrupts();
    timespec pause{0, kReapPollNs};
    nanosleep(&pause, nullptr);
  }
}

// All of a non-blocking pipe, waiting through ctx (interruptible) whenever it is empty.
std::string read_to_eof(int fd, TaskContext &ctx) {
  std::string out;
  for (;;) {
    ctx.check_interrupts();
    size_t have = out.size();
    out.resize(have + kReadChunk);
    ssize_t n = ::read(fd, out.data() + have, kReadChunk);
    int error = errno;
    out.resize(have + (n > 0 ? static_cast<size_t>(n) : 0));
    if (n > 0) continue;
    if (n == 0) return out;
    if (error == EAGAIN || error == EWOULDBLOCK) {
      ctx.wait_socket(fd, true, false, -1);
    } else if (error != EINTR) {
      fail_system("could not read pg_dump's output", error);
    }
  }
}

// A libpq conninfo value: single-quoted, with ' and \ escaped by a backslash.
std::string conninfo_value(const std::string &value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// pg_dump reads --dbname as a connection string when it contains '=' or looks like a URI; passing
// it as "dbname='...'" makes any database name mean itself. Extra libpq options ride along.
std::string dbname_conninfo(const ConnParams &source) {
  std::string conninfo;
  auto add = [&](const std::string &key, const std::string &value) {
    conninfo += (conninfo.empty() ? "" : " ") + key + "=" + conninfo_value(value);
  };
  if (!source.dbname.empty()) add("dbname", source.dbname);
  if (source.connect_timeout_s > 0) add("connect_timeout", std::to_string(source.connect_timeout_s));
  for (const auto &[key, value] : source.options) add(key, value);
  return conninfo;
}

std::vector<std::string> pg_dump_argv(const std::string &program, const ConnParams &source) {
  // --no-tablespaces: tablespaces are per host. --no-owner/--no-privileges: the destination's
  // roles are its own. Comments are kept: harmless, and part of the schema. UTF8 is what the
  // applier declares as its client_encoding. --no-password: fail rather than prompt.
  std::vector<std::string> argv = {program,           "--schema-only",        "--no-owner",
                                   "--no-privileges", "--no-tablespaces",     "--no-publications",
                                   "--no-subscriptions", "--no-password",     "--encoding=UTF8"};
  if (!source.host.empty()) argv.push_back("--host=" + source.host);
  argv.push_back("--port=" + std::to_string(source.port));
  if (!source.user.empty()) argv.push_back("--username=" + source.user);
  std::string conninfo = dbname_conninfo(source);
  if (!conninfo.empty()) argv.push_back("--dbname=" + conninfo);
  return argv;
}

// This process's environment, with the password settings replaced by the private passfile.
std::vector<std::string> pg_dump_env(const PassFile *passfile) {
  std::vector<std::string> env;
  for (char **entry = environ; entry && *entry; entry++) {
    std::string_view var(*entry);
    if (passfile && (starts_with(var, "PGPASSWORD=") || starts_with(var, "PGPASSFILE="))) continue;
    env.emplace_back(var);
  }
  if (passfile) env.push_back("PGPASSFILE=" + passfile->path());
  return env;
}

std::string scrub(std::string text, const std::string &secret) {
  if (secret.empty()) return text;
  for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at)) {
    text.replace(at, secret.size(), "********");
  }
  return text;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

Error pg_dump_failure(const std::string &program, const ConnParams &source, int status,
                      std::string stderr_text) {
  stderr_text = scrub(std::move(stderr_text), source.password);  // pg_dump never prints it; sure
  while (!stderr_text.empty() && (stderr_text.back() == '\n' || stderr_text.back() == ' ')) {
    stderr_text.pop_back();
  }
  std::string first_line = stderr_text.substr(0, stderr_text.find('\n'));
  std::string message = "pg_dump failed (" + describe_exit(status) + ") for " + source.describe();
  if (!first_line.empty()) message += ": " + first_line;
  std::string detail = "command: " + program + " --schema-only ...";
  if (first_line.size() < stderr_text.size()) detail += "\npg_dump said:\n" + stderr_text;
  return Error(sqlstate::kSystemError, message, detail);
}

std::string run_pg_dump(const std::string &program, const ConnParams &source, TaskContext &ctx) {
  std::optional<PassFile> passfile;
  if (!source.password.empty()) passfile.emplace(source.password);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) fail_system("could not create a pipe for pg_dump");
  Fd out_read(pipe_fds[0]), out_write(pipe_fds[1]);
  // Non-blocking on our end only: the two ends are separate open files, pg_dump's stays blocking.
  if (::fcntl(out_read.get(), F_SETFL, O_NONBLOCK) != 0) fail_system("fcntl(O_NONBLOCK)");
  Fd err(anonymous_temp_file());

  ChildProcess child(pg_dump_argv(program, source), pg_dump_env(passfile ? &*passfile : nullptr),
                     out_write.get(), err.get());
  out_write.reset();  // pg_dump holds the only write end now: its exit is our EOF
  std::string script = read_to_eof(out_read.get(), ctx);
  int status = child.wait_exit(ctx);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw pg_dump_failure(program, source, status, read_stderr_file(err.get()));
  }
  return script;
}

// "15" for 150020; "9.6" for 90624 (before 10, the major version had two parts).
std::string major_version(int server_version) {
  if (server_version >= 100000) return std::to_string(server_version / 10000);
  return std::to_string(server_version / 10000) + "." + std::to_string(server_version / 100 % 100);
}

}  // namespace

// A pg_dump older than the server refuses to dump it, and a newer one may write syntax an older
// destination cannot read: the source's own major version is the one that fits.
std::string pg_dump_for(int server_version, const std::string &bindir) {
  std::string major = major_version(server_version);
  std::string dir = bindir.empty() ? "/usr/lib/postgresql/" + major + "/bin" : bindir;
  std::string path = dir + "/pg_dump";
  if (::access(path.c_str(), X_OK) == 0) return path;
  throw Error(sqlstate::kUndefinedFile,
              "pg_dump for PostgreSQL " + major + " not found at \"" + path + "\"",
              "The source runs PostgreSQL " + major +
                  "; its schema is dumped with the pg_dump of that major version.",
              "Install the package postgresql-client-" + major +
                  " on the control node, or create the schema on the destination yourself and "
                  "SET pgdog_reshard.schema_sync = off before starting the task.");
}

SchemaDump dump_schema(const ConnParams &source, TaskContext &ctx, const std::string &pg_dump_bindir) {
  int version = 0;
  {
    Connection conn(source, ctx);
    version = conn.server_version();
  }
  std::string program = pg_dump_for(version, pg_dump_bindir);
  SchemaDump dump = split_schema_dump(run_pg_dump(program, source, ctx));
  ctx.log(LogLevel::Info, "schema of " + source.describe() + " dumped with " + program + ": " +
                              std::to_string(dump.pre.size()) + " pre-data and " +
                              std::to_string(dump.post.size()) + " post-data statements");
  return dump;
}

// ---------------------------------------------------------------------------------------------
// Applying a phase on every destination shard

namespace {

constexpr size_t kStatementExcerpt = 1000;  // of a failed statement, in the error's detail

bool message_has(const Error &e, const char *text) {
  return std::string_view(e.what()).find(text) != std::string_view::npos;
}

// Errors that mean "already there": what re-running a phase meets. The messages are matched in
// English: the session asks for lc_messages = 'C' (which needs a superuser; without it a localized
// server reports these few cases as failures, never the reverse).
bool means_already_exists(const Error &e) {
  const std::string &state = e.sqlstate();
  if (state == sqlstate::kDuplicateTable || state == sqlstate::kDuplicateObject ||
      state == "42P06" /* duplicate_schema */ || state == "42723" /* duplicate_function */) {
    return true;
  }
  if (state == "42P16") return message_has(e, "multiple primary keys");          // invalid_table_definition
  if (state == sqlstate::kObjectNotInPrerequisiteState) return message_has(e, "is already an identity column");
  if (state == "42809") return message_has(e, "is already a partition");        // wrong_object_type
  return false;
}

// What pg_dump's own header sets, in the applier's terms: pg_dump's names are schema-qualified,
// function bodies may refer to objects created later, its text is UTF8 (--encoding) with
// standard strings, and nothing may time out.
constexpr const char *kSessionSettings =
    "SET search_path = pg_catalog; SET check_function_bodies = false; "
    "SET client_min_messages = warning; SET client_encoding = 'UTF8'; "
    "SET standard_conforming_strings = on; SET statement_timeout = 0; SET lock_timeout = 0; "
    "SET idle_in_transaction_session_timeout = 0; SET xmloption = content";

// Index and key builds (post-data) sort in memory: PostgreSQL's default of 64MB spills to disk at
// about 1.5 million bigint keys, and such a key build took a fifth longer here. Never lowered.
constexpr const char *kIndexBuildMemory =
    "SELECT pg_catalog.set_config('maintenance_work_mem', '262144', false) FROM pg_catalog.pg_settings"
    " WHERE name = 'maintenance_work_mem' AND setting::bigint < 262144";

void prepare_session(Connection &conn) {
  conn.exec(kSessionSettings);
  conn.exec(kIndexBuildMemory);
  try {
    conn.exec("SET lc_messages = 'C'");
  } catch (const Error &e) {
    if (e.sqlstate() != sqlstate::kInsufficientPrivilege) throw;
  }
}

// TABLE "orders" in schema "public", COMMENT "TABLE orders" in schema "public", SCHEMA "billing".
std::string describe_object(const SchemaStatement &s) {
  std::string out = s.kind.empty() ? "statement" : s.kind;
  if (!s.name.empty()) out += " \"" + s.name + "\"";
  if (!s.schema.empty()) out += " in schema \"" + s.schema + "\"";
  return out;
}

// One apply_schema call: a worker thread per shard, a shared stop flag, the first failure.
class PhaseApplier {
 public:
  PhaseApplier(SchemaPhase phase, const std::vector<SchemaStatement> &statements,
               const std::vector<ConnParams> &destinations, SchemaSyncObserver &observer)
      : phase_(phase),
        statements_(statements),
        destinations_(destinations),
        observer_(observer),
        tallies_(destinations.size()) {}
  ~PhaseApplier() { stop_and_join(); }
  PhaseApplier(const PhaseApplier &) = delete;
  PhaseApplier &operator=(const PhaseApplier &) = delete;

  void run(TaskContext &ctx);

 private:
  struct Tally {
    size_t done = 0;
    size_t existed = 0;
  };

  void start_workers();
  void wait_for_workers(TaskContext &ctx);
  void stop_and_join() noexcept;
  void worker(int shard) noexcept;
  void wake() noexcept;
  bool apply_one(int shard, size_t index, Connection &conn);
  void record_failure(Error error);
  std::string prefix(int shard) const;
  Error statement_error(int shard, size_t index, const Error &server) const;

  SchemaPhase phase_;
  const std::vector<SchemaStatement> &statements_;
  const std::vector<ConnParams> &destinations_;
  SchemaSyncObserver &observer_;
  std::vector<Tally> tallies_;  // each written by its shard's worker only; read after the joins
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::optional<Error> failure_;  // the first failure, under mutex_
  // Workers write a byte after each statement and when they end: the calling thread waits on the
  // read end through ctx (a latch wait in the server, that notices cancellation) and calls
  // ctx.check_interrupts at each wake-up, where a glue may write the observer's queued events.
  Fd wake_read_, wake_write_;
  std::atomic<size_t> ended_{0};  // workers done
  std::vector<std::thread> threads_;
};

std::string PhaseApplier::prefix(int shard) const {
  return std::string("schema sync (") + schema_phase_name(phase_) + ") on destination shard " +
         std::to_string(shard);
}

void PhaseApplier::run(TaskContext &ctx) {
  ctx.log(LogLevel::Info, std::string("schema sync (") + schema_phase_name(phase_) + "): " +
                              std::to_string(statements_.size()) + " statements on " +
                              std::to_string(destinations_.size()) + " destination shards");
  try {
    start_workers();
    wait_for_workers(ctx);
  } catch (...) {
    stop_and_join();  // before anything they refer to goes away
    throw;
  }
  stop_and_join();
  if (failure_) throw *failure_;
  for (size_t shard = 0; shard < tallies_.size(); shard++) {
    ctx.log(LogLevel::Info, prefix(static_cast<int>(shard)) + ": " +
                                std::to_string(tallies_[shard].done) + " applied, " +
                                std::to_string(tallies_[shard].existed) + " already there");
  }
}

void PhaseApplier::start_workers() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) fail_system("could not create a pipe");
  wake_read_.reset(fds[0]);
  wake_write_.reset(fds[1]);
  try {
    for (size_t shard = 0; shard < destinations_.size(); shard++) {
      threads_.emplace_back(&PhaseApplier::worker, this, static_cast<int>(shard));
    }
  } catch (const std::system_error &e) {
    throw Error(sqlstate::kSystemError, prefix(static_cast<int>(threads_.size())) +
                                            ": could not start a thread: " + e.what());
  }
}

void PhaseApplier::wait_for_workers(TaskContext &ctx) {
  char bytes[256];
  while (ended_ < threads_.size()) {
    ctx.check_interrupts();
    ssize_t n = ::read(wake_read_.get(), bytes, sizeof bytes);
    if (n > 0) continue;  // drain before waiting
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      fail_system("could not read the schema sync wake-up pipe");
    }
    // A worker that ends after the check above has written a byte: this wait returns at once.
    if (ended_ < threads_.size()) ctx.wait_socket(wake_read_.get(), true, false, -1);
  }
}

void PhaseApplier::wake() noexcept {
  char byte = 1;
  // EAGAIN: the pipe is full, so the calling thread has wake-ups waiting anyway.
  while (::write(wake_write_.get(), &byte, 1) < 0 && errno == EINTR) {
  }
}

void PhaseApplier::stop_and_join() noexcept {
  stop_ = true;
  for (std::thread &thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
}

void PhaseApplier::record_failure(Error error) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!failure_) failure_ = std::move(error);
  stop_ = true;
}

void PhaseApplier::worker(int shard) noexcept {
  try {
    // Its own waiter: poll() plus the stop flag. Only the calling thread may touch the TaskContext.
    PollWaiter waiter([this] { return stop_.load(); });
    std::optional<Connection> conn;
    try {
      conn.emplace(destinations_[shard], waiter);
      prepare_session(*conn);
    } catch (const Error &e) {
      if (!stop_) {
        record_failure(Error(e.sqlstate(), prefix(shard) + ": could not connect: " + e.what(),
                             e.detail(), e.hint()));
      }
      conn.reset();
    }
    for (size_t i = 0; conn && i < statements_.size() && !stop_; i++) {
      bool go_on = apply_one(shard, i, *conn);
      wake();
      if (!go_on) break;
    }
  } catch (const std::exception &e) {
    record_failure(Error(sqlstate::kInternalError, prefix(shard) + ": " + e.what()));
  } catch (...) {
    record_failure(Error(sqlstate::kInternalError, prefix(shard) + ": unknown exception"));
  }
  ended_++;
  wake();
}

// Runs statement `index` on one shard; false when this shard must stop.
bool PhaseApplier::apply_one(int shard, size_t index, Connection &conn) {
  const SchemaStatement &statement = statements_[index];
  observer_.statement_started(shard, phase_, index, statement);
  wake();  // a long CREATE INDEX shows as running at once
  try {
    conn.exec(statement.sql);
  } catch (const Error &e) {
    if (stop_) {  // another shard failed or the task stopped: this error is the cancellation
      observer_.statement_finished(shard, phase_, index, StatementOutcome::Cancelled, e.what());
      return false;
    }
    if (means_already_exists(e)) {
      tallies_[shard].existed++;
      observer_.statement_finished(shard, phase_, index, StatementOutcome::AlreadyExists, e.what());
      return true;
    }
    observer_.statement_finished(shard, phase_, index, StatementOutcome::Failed, e.what());
    record_failure(statement_error(shard, index, e));
    return false;
  }
  tallies_[shard].done++;
  observer_.statement_finished(shard, phase_, index, StatementOutcome::Done, "");
  return true;
}

Error PhaseApplier::statement_error(int shard, size_t index, const Error &server) const {
  const SchemaStatement &statement = statements_[index];
  std::string message = std::string("schema sync (") + schema_phase_name(phase_) +
                        ") failed on destination shard " + std::to_string(shard) + " at statement " +
                        std::to_string(index + 1) + " of " + std::to_string(statements_.size()) +
                        " (" + describe_object(statement) + "): " + server.what();
  std::string detail = server.detail();
  if (!detail.empty()) detail += "\n";
  detail += "statement: " + statement.sql.substr(0, kStatementExcerpt);
  if (statement.sql.size() > kStatementExcerpt) detail += "...";
  return Error(server.sqlstate(), message, detail, server.hint());
}

}  // namespace

void apply_schema(SchemaPhase phase, const std::vector<SchemaStatement> &statements,
                  const std::vector<ConnParams> &destinations, SchemaSyncObserver &observer,
                  TaskContext &ctx) {
  if (destinations.empty() || statements.empty()) return;
  PhaseApplier applier(phase, statements, destinations, observer);
  applier.run(ctx);
}

}  // namespace pgdog_reshard
