// End-to-end test harness: a real PgBouncer (/usr/sbin/pgbouncer) on a loopback port, in front of
// PgInstances.
//
// Each PgBouncer runs in the foreground as a direct child of the test process, as the `postgres` OS
// user when the test runs as root, in its own temporary directory (kPgBouncerTempPrefix + name +
// ".XXXXXX": the ini, the auth file, the log, the pid file and the unix socket). It is stopped
// (SIGTERM = PgBouncer's immediate shutdown, SIGKILL after 5 s) and its directory removed by the
// destructor, by an atexit handler for those still alive at exit, and, if the test process dies
// (even by SIGKILL), by the kernel's parent-death signal (SIGTERM); a directory left behind that
// way is removed by the next PgBouncer's sweep of directories whose owning process is dead.
//
// Things a test should know:
// - The parent-death signal fires when the *thread* that started the PgBouncer exits: create it
//   in a thread that outlives it (the test's own thread).
// - auth_type = trust; the auth file lists `postgres`, also the admin user (admin_users).
// - PgBouncer 1.18 does not fail when it cannot bind its TCP port (it warns and serves the unix
//   socket only): the harness checks the log for "listening on 127.0.0.1:PORT" and retries on
//   another port otherwise.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

namespace pgdog_reshard::test {

inline constexpr const char *kPgBouncerTempPrefix = "/tmp/pgdog_reshard_pgbouncer.";

struct PgBouncerOptions {
  std::string name = "pgbouncer";         // for the temp dir and messages
  std::string pool_mode = "transaction";  // session | transaction | statement
  int default_pool_size = 20;
  int min_pool_size = 0;  // servers kept open per pool (PgBouncer refills them in the background)
};

class PgBouncer {
 public:
  // databases: name -> "host=127.0.0.1 port=N dbname=postgres" (the [databases] section).
  // Starts PgBouncer and returns once it listens; throws std::runtime_error (with its log) if not.
  explicit PgBouncer(std::map<std::string, std::string> databases, PgBouncerOptions options = {});
  ~PgBouncer();  // stops it (SIGTERM, wait, SIGKILL fallback) and removes its temp dir
  PgBouncer(const PgBouncer &) = delete;
  PgBouncer &operator=(const PgBouncer &) = delete;

  int port() const { return port_; }
  const std::string &host() const { return host_; }  // "127.0.0.1"
  pid_t pid() const { return pid_; }
  const std::string &base_dir() const { return base_dir_; }
  // "host=127.0.0.1 port=N dbname=DB user=USER": a client connection through PgBouncer.
  std::string conninfo(const std::string &db, const std::string &user = "postgres") const;
  // "host=127.0.0.1 port=N dbname=pgbouncer user=postgres": the admin console.
  std::string admin_conninfo() const;
  std::string ini_path() const;  // so a cutover_command can rewrite it
  // Rewrites the [databases] section of the ini file, atomically (write + rename); not reloaded:
  // send RELOAD yourself.
  void write_databases(const std::map<std::string, std::string> &databases);
  std::string log() const;  // PgBouncer's log file so far

 private:
  PgBouncerOptions options_;
  std::map<std::string, std::string> databases_;
  std::string host_ = "127.0.0.1";
  int port_ = 0;
  pid_t pid_ = -1;
  pid_t owner_pid_ = 0;  // a forked child never stops its parent's PgBouncer
  std::string base_dir_;

  std::string render_ini() const;
  void write_config_files();
  bool start();  // one attempt on port_: false if the port was taken, throws on other failures
  void stop() noexcept;
  void cleanup() noexcept;
  static void cleanup_all_at_exit();  // the atexit handler: every PgBouncer still alive
};

}  // namespace pgdog_reshard::test
