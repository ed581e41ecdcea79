// End-to-end test harness: real PostgreSQL instances on loopback ports.
//
// Each instance is initdb'ed as the `postgres` OS user (PostgreSQL refuses to run as root) in its own
// temporary directory, with wal_level = logical, listening on 127.0.0.1 on a free port. It is always
// stopped and removed when the PgInstance is destroyed, when the test binary exits, and when it dies
// of a signal (a handler stops every live instance with `pg_ctl stop -m immediate`).
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace pgdog_reshard::test {

struct InstanceOptions {
  std::string name = "pg";                       // for the temp dir and log messages
  std::string bindir = "/usr/lib/postgresql/15/bin";  // initdb, pg_ctl, postgres
  bool preload_extension = false;                 // shared_preload_libraries = 'pgdog_reshard'
  std::vector<std::string> extra_conf;            // lines appended to postgresql.conf
  std::vector<std::string> hba_lines;             // lines put BEFORE the default trust rules
};

// A server error seen by a test: the fields a test asserts on.
struct ServerError : std::runtime_error {
  ServerError(std::string sqlstate, std::string message, std::string detail, std::string hint);
  std::string sqlstate, message, detail, hint;
};

using Row = std::vector<std::optional<std::string>>;

class PgInstance {
 public:
  explicit PgInstance(InstanceOptions options = {});  // initdb + start; throws std::runtime_error
  ~PgInstance();                                      // stop (immediate) + remove the directory
  PgInstance(const PgInstance &) = delete;
  PgInstance &operator=(const PgInstance &) = delete;

  const std::string &host() const { return host_; }   // "127.0.0.1"
  int port() const { return port_; }
  const std::string &data_dir() const { return data_dir_; }
  const std::string &name() const { return options_.name; }
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

  void start();                                 // pg_ctl start -w
  void stop(const std::string &mode = "fast");  // pg_ctl stop -m mode -w
  void restart(const std::string &mode = "fast");
  bool running() const;
  pid_t postmaster_pid() const;                 // from postmaster.pid; -1 if not running
  std::string log() const;                      // the server log so far

 private:
  InstanceOptions options_;
  std::string host_ = "127.0.0.1";
  int port_ = 0;
  std::string base_dir_;  // the temp dir; data_dir_ and the log live inside it
  std::string data_dir_;
  std::string log_file_;
  bool started_ = false;
};

// Polls `probe` every 50 ms until it returns true or timeout_ms passes; returns the last result.
bool wait_until(const std::function<bool()> &probe, int timeout_ms = 10000);

}  // namespace pgdog_reshard::test
