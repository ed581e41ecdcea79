// End-to-end test harness: real PostgreSQL instances on loopback ports.
//
// Each instance is initdb'ed as the `postgres` OS user (PostgreSQL refuses to run as root) in its own
// temporary directory, with wal_level = logical, listening on 127.0.0.1 on a free port. It is always
// stopped and removed when the PgInstance is destroyed, when the test binary exits, and when it dies
// of a signal (a handler sends every live postmaster SIGQUIT, what `pg_ctl stop -m immediate` sends).
//
// Cleanup, layer by layer: the destructor (stop -m immediate, remove the directory); an atexit
// handler (same, for instances still alive at exit); handlers for SIGINT, SIGTERM, SIGABRT, SIGSEGV
// and SIGBUS (SIGQUIT to each postmaster, then the signal is re-raised; the directory is left); the
// first instance of the next test process removes directories whose owning process is dead
// (cleanup_stale_instances); and test/e2e/cleanup-stale.sh, which CI runs after the tests.
//
// Things a test should know:
// - The process becomes a child subreaper (PR_SET_CHILD_SUBREAPER) so that postmasters, orphaned
//   when pg_ctl exits, are reaped here instead of staying zombies under a PID 1 that never reaps.
//   Orphaned descendants of the test therefore become its children: wait for your own children
//   with waitpid(pid, ...), never wait() or waitpid(-1, ...).
// - synchronous_commit = off and fsync = off: fast, but a crash (stop -m immediate, SIGKILL) can
//   lose the last few hundred milliseconds of commits. A crash test that needs every commit to
//   survive adds "synchronous_commit = on" to extra_conf.
// - A PgInstance is not thread-safe; distinct instances may be created and used from different
//   threads at once. A forked child never stops or removes its parent's instances.
//
// Standbys (InstanceOptions::standby_of): an instance can instead be a streaming standby of a
// running primary, cloned the way pg_basebackup does it (pg_backup_start, copy the data directory,
// pg_backup_stop) without stopping the primary. It lives in its own directory like any instance and
// is torn down, swept and cleaned up exactly the same way. The default conf (wal_level = logical,
// max_wal_senders = 20) leaves room for several standbys plus logical walsenders; a test that lowers
// max_wal_senders on a primary must leave one free per standby. PostgreSQL 17 binaries for primaries
// with standbys: pg17_bindir() (installed by scripts/install-pg17.sh).
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace pgdog_reshard::test {

class PgInstance;

struct InstanceOptions {
  std::string name = "pg";                       // for the temp dir and log messages
  std::string bindir = "/usr/lib/postgresql/15/bin";  // initdb, pg_ctl, postgres
  bool preload_extension = false;                 // shared_preload_libraries = 'pgdog_reshard'
  std::vector<std::string> extra_conf;            // lines appended to postgresql.conf
  std::vector<std::string> hba_lines;             // lines put BEFORE the default trust rules
  // Set: no initdb; the instance becomes a streaming standby of this running primary, which keeps
  // running. The primary needs wal_level >= replica, a free WAL sender and, while the standby is
  // made, a free replication slot (a temporary one holds the WAL the standby will stream). The
  // standby's postgresql.conf and pg_hba.conf are the primary's copies, plus its own port and socket
  // directory, primary_conninfo (application_name = name), hot_standby_feedback = on, then
  // extra_conf; hba_lines, if any, replace the copied rules. bindir left at its default means the
  // primary's (same major version). Read by the constructor only: the pointer may dangle afterwards
  // (a primary may be destroyed before its standbys).
  const PgInstance *standby_of = nullptr;
};

// A server error seen by a test: the fields a test asserts on.
struct ServerError : std::runtime_error {
  ServerError(std::string sqlstate, std::string message, std::string detail, std::string hint);
  std::string sqlstate, message, detail, hint;
};

using Row = std::vector<std::optional<std::string>>;

// Every instance directory is mkdtemp(kTempPrefix + name + ".XXXXXX").
inline constexpr const char *kTempPrefix = "/tmp/pgdog_reshard_test.";

class PgInstance {
 public:
  explicit PgInstance(InstanceOptions options = {});  // initdb + start; throws std::runtime_error
  ~PgInstance();                                      // stop (immediate) + remove the directory
  PgInstance(const PgInstance &) = delete;
  PgInstance &operator=(const PgInstance &) = delete;

  const std::string &host() const { return host_; }   // "127.0.0.1"
  int port() const { return port_; }
  const std::string &data_dir() const { return data_dir_; }
  const std::string &base_dir() const { return base_dir_; }  // the temp dir: data/, server.log, socket
  const std::string &name() const { return options_.name; }
  const InstanceOptions &options() const { return options_; }  // as resolved (a standby's bindir)
  // "host=127.0.0.1 port=N dbname=DB user=USER"
  std::string conninfo(const std::string &db = "postgres", const std::string &user = "postgres") const;

  // Blocking helpers over a fresh libpq connection each call (tests only). A server error throws
  // ServerError with its SQLSTATE, message, detail and hint.
  void exec(const std::string &sql, const std::string &db = "postgres") const;
  std::vector<Row> query(const std::string &sql, const std::string &db = "postgres") const;
  // First column of the first row; throws if there is no row; "" maps NULL.
  std::string value(const std::string &sql, const std::string &db = "postgres") const;
  // Runs sql expecting an error; returns it (fails with std::runtime_error if it succeeded).
  ServerError error_of(const std::string &sql, const std::string &db = "postgres") const;

  // pg_ctl start -w; no-op if running. The first start picks a free port and retries on another
  // one if it was taken meanwhile; a later start keeps the port (tests may have written it into a
  // configuration) and throws if it stays taken.
  void start();
  void stop(const std::string &mode = "fast");  // pg_ctl stop -m mode -w
  void restart(const std::string &mode = "fast");
  bool running() const;
  pid_t postmaster_pid() const;                 // from postmaster.pid; -1 if not running
  std::string log() const;                      // the server log so far

  // For a standby: waits until it has replayed everything `primary` had committed when this was
  // called (kCommittedWalEndSql), polling pg_last_wal_replay_lsn(). Throws std::runtime_error, with
  // both positions, after timeout_ms, or at once if this instance is not in recovery.
  void wait_for_replay(const PgInstance &primary, int timeout_ms = 30000) const;

 private:
  InstanceOptions options_;
  std::string host_ = "127.0.0.1";
  int port_ = 0;
  std::string base_dir_;  // the temp dir; data_dir_ and the log live inside it
  std::string data_dir_;
  std::string log_file_;
  bool started_ = false;
  pid_t owner_pid_ = 0;  // the process that created it: a forked child must not tear it down
  int slot_ = -1;        // in the process-wide registry the exit and signal handlers walk

  std::string bin(const std::string &program) const;
  std::vector<std::string> as_postgres(std::vector<std::string> argv) const;
  void init_cluster();
  void write_config();
  void write_hba();
  void write_port_config();
  void clone_and_start(const PgInstance &primary);
  void write_standby_config(const PgInstance &primary);
  void cleanup() noexcept;
};

// The position a stream must have confirmed for every transaction committed so far to have
// arrived: pg_current_wal_insert_lsn() (pg_current_wal_lsn() can be behind a commit made with
// synchronous_commit = off, the harness's default), less the page header it points past when the
// last record ended at a page boundary (what pgdog_reshard's cutover drains to).
inline constexpr const char *kCommittedWalEndSql =
    "SELECT CASE WHEN (lsn - '0/0'::pg_lsn) % seg = 40 THEN lsn - 40 WHEN (lsn - '0/0'::pg_lsn) % blk = 24"
    " THEN lsn - 24 ELSE lsn END FROM (SELECT pg_current_wal_insert_lsn() AS lsn,"
    " current_setting('wal_block_size')::numeric AS blk,"
    " (SELECT setting::numeric FROM pg_settings WHERE name = 'wal_segment_size') AS seg) s";

// pgdog.toml [[databases]] entries on loopback: shard `shard` of `cluster` on `pg`, and every
// shard of `cluster` (shard i on shards[i]), each in database `database`.
std::string database_entry(const std::string &cluster, int shard, const PgInstance &pg,
                           const std::string &database = "postgres", const std::string &extra = "");
// The same for any host and port (a server that is not there, say); `extra`: more lines of the
// entry (user, password, role, ...).
std::string database_entry(const std::string &cluster, int shard, const std::string &host, int port,
                           const std::string &database, const std::string &extra = "");
std::string cluster_entries(const std::string &cluster, const std::vector<std::unique_ptr<PgInstance>> &shards,
                            const std::string &database = "postgres");

// The lines of `text` holding `needle`, each with its newline: "" when there is none (a test's
// evidence, e.g. of a password in a server log).
std::string lines_with(const std::string &text, const std::string &needle);

// A loopback port nothing listens on now and that this process has not handed out before (the
// caller retries on another if a server's bind still fails).
int pick_free_port();

// Polls `probe` every 50 ms until it returns true or timeout_ms passes; returns the last result.
bool wait_until(const std::function<bool()> &probe, int timeout_ms = 10000);

// The OS user PostgreSQL (and PgBouncer) run as: `postgres` when we are root (they refuse to run
// as root), nullopt when we are not root (they run as ourselves).
struct OsUser {
  uid_t uid;
  gid_t gid;
};
std::optional<OsUser> postgres_os_user();
// chown to that user (a no-op when not root): what the servers must be able to write.
void give_to_postgres(const std::string &path);

// The PostgreSQL 17 bindir (initdb, pg_ctl, postgres): $PGDOG_RESHARD_PG17_BINDIR if set, else
// where scripts/install-pg17.sh puts it; "" when there is no executable postgres there (a test
// then skips, or fails in CI, where the installer must have run).
std::string pg17_bindir();

// Process-wide setup, done by the first PgInstance of a process (idempotent): exit and signal
// handlers, child subreaper, sweep of stale directories. Call it before fork() when the child
// creates instances, so that the parent reaps what the child leaves behind.
void init_harness();

// Stops the servers and removes the directories under kTempPrefix whose owning test process is
// dead (killed by SIGKILL, a timeout, a crash). Instances of live processes are never touched.
// Returns the number of directories removed.
int cleanup_stale_instances();

// True while `pid` is a live process (a zombie is dead). A zombie child named postgres is reaped.
bool process_alive(pid_t pid);

}  // namespace pgdog_reshard::test
