// Self-test of the e2e harness: instances start, answer, restart, stop, and leave nothing behind,
// not even when the process that owns them crashes.
#include "harness.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace pgdog_reshard::test {
namespace {

namespace fs = std::filesystem;

InstanceOptions named(const std::string &name) {
  InstanceOptions options;
  options.name = name;
  options.bindir = PGDOG_PG_BINDIR;
  return options;
}

// Instance directories whose name starts with kTempPrefix + name.
std::vector<fs::path> dirs_named(const std::string &name) {
  const fs::path prefix = std::string(kTempPrefix) + name + ".";
  std::vector<fs::path> found;
  for (const auto &entry : fs::directory_iterator(prefix.parent_path())) {
    if (entry.path().filename().string().rfind(prefix.filename().string(), 0) == 0) {
      found.push_back(entry.path());
    }
  }
  return found;
}

// Direct children of `parent` (the postmaster's backends and auxiliary processes).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> children;
  for (const auto &entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    char state = 0;
    long ppid = 0;
    if (std::sscanf(stat.c_str() + paren + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent) {
      children.push_back(static_cast<pid_t>(std::atol(name.c_str())));
    }
  }
  return children;
}

std::string connect_error(const std::string &conninfo) {
  PGconn *conn = PQconnectdb(conninfo.c_str());
  std::string error = PQstatus(conn) == CONNECTION_OK ? "" : PQerrorMessage(conn);
  PQfinish(conn);
  return error;
}

TEST(Harness, ThreeInstancesAtOnce) {
  std::vector<std::future<std::unique_ptr<PgInstance>>> starting;
  for (int i = 0; i < 3; ++i) {
    starting.push_back(std::async(std::launch::async, [i] {
      return std::make_unique<PgInstance>(named("three" + std::to_string(i)));
    }));
  }
  std::vector<std::unique_ptr<PgInstance>> pgs;
  for (auto &future : starting) pgs.push_back(future.get());

  std::set<int> ports;
  std::set<std::string> dirs;
  for (const auto &pg : pgs) {
    EXPECT_TRUE(pg->running());
    EXPECT_EQ(pg->value("SELECT 1"), "1");
    EXPECT_EQ(pg->value("SHOW wal_level"), "logical");
    EXPECT_EQ(pg->value("SHOW port"), std::to_string(pg->port()));
    EXPECT_EQ(pg->value("SHOW listen_addresses"), "127.0.0.1");
    EXPECT_EQ(pg->value("SHOW max_replication_slots"), "20");
    EXPECT_EQ(pg->value("SHOW max_wal_senders"), "20");
    EXPECT_EQ(pg->value("SHOW unix_socket_directories"), pg->base_dir());
    EXPECT_EQ(pg->data_dir(), pg->base_dir() + "/data");
    EXPECT_EQ(pg->base_dir().rfind(kTempPrefix, 0), 0u);
    ports.insert(pg->port());
    dirs.insert(pg->base_dir());
  }
  EXPECT_EQ(ports.size(), 3u);
  EXPECT_EQ(dirs.size(), 3u);
}

TEST(Harness, ErrorOfReturnsTheServerError) {
  PgInstance pg(named("errors"));
  const ServerError missing = pg.error_of("SELECT * FROM no_such_table");
  EXPECT_EQ(missing.sqlstate, "42P01");
  EXPECT_NE(missing.message.find("no_such_table"), std::string::npos);

  const ServerError raised = pg.error_of(
      "DO $$ BEGIN RAISE EXCEPTION 'boom' USING ERRCODE = '22023', DETAIL = 'the facts', HINT = 'the fix'; "
      "END $$");
  EXPECT_EQ(raised.sqlstate, "22023");
  EXPECT_EQ(raised.message, "boom");
  EXPECT_EQ(raised.detail, "the facts");
  EXPECT_EQ(raised.hint, "the fix");
  EXPECT_NE(std::string(raised.what()).find("22023"), std::string::npos);

  EXPECT_THROW(pg.exec("SELECT * FROM no_such_table"), ServerError);
  try {
    pg.error_of("SELECT 1");
    ADD_FAILURE() << "error_of of a statement that succeeds must throw";
  } catch (const ServerError &) {
    ADD_FAILURE() << "not a ServerError: there was no server error";
  } catch (const std::runtime_error &) {
  }
}

TEST(Harness, QueryReturnsRowsWithNulls) {
  PgInstance pg(named("query"));
  pg.exec("CREATE TABLE t (id int, note text); INSERT INTO t VALUES (1, NULL), (2, 'two')");
  const std::vector<Row> rows = pg.query("SELECT id, note FROM t ORDER BY id");
  ASSERT_EQ(rows.size(), 2u);
  ASSERT_EQ(rows[0].size(), 2u);
  EXPECT_EQ(rows[0][0], "1");
  EXPECT_EQ(rows[0][1], std::nullopt);
  EXPECT_EQ(rows[1][1], "two");
  EXPECT_EQ(pg.value("SELECT NULL"), "");
  EXPECT_THROW(pg.value("SELECT 1 WHERE false"), std::runtime_error);

  pg.exec("CREATE DATABASE other");
  EXPECT_EQ(pg.value("SELECT current_database()", "other"), "other");
  EXPECT_EQ(pg.conninfo("other", "someone"),
            "host=127.0.0.1 port=" + std::to_string(pg.port()) + " dbname=other user=someone");
}

TEST(Harness, ExtraConfAndHbaLinesApply) {
  InstanceOptions options = named("conf");
  options.extra_conf = {"work_mem = '7MB'"};
  options.hba_lines = {"host all blocked 127.0.0.1/32 reject"};
  PgInstance pg(options);
  EXPECT_EQ(pg.value("SHOW work_mem"), "7MB");

  pg.exec("CREATE ROLE blocked LOGIN; CREATE ROLE allowed LOGIN");
  EXPECT_NE(connect_error(pg.conninfo("postgres", "blocked")).find("pg_hba.conf rejects"), std::string::npos);
  EXPECT_EQ(connect_error(pg.conninfo("postgres", "allowed")), "");
  // Replication connections are trusted too, and the socket is in the instance's own directory.
  EXPECT_EQ(connect_error(pg.conninfo() + " replication=database"), "");
  const std::string over_socket =
      "host=" + pg.base_dir() + " port=" + std::to_string(pg.port()) + " user=postgres";
  EXPECT_EQ(connect_error(over_socket), "");
  EXPECT_NE(pg.log().find("database system is ready to accept connections"), std::string::npos);
}

TEST(Harness, RestartKeepsDataAndPort) {
  PgInstance pg(named("restart"));
  pg.exec("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept SELECT generate_series(1, 100)");
  const int port = pg.port();
  const pid_t before = pg.postmaster_pid();
  pg.restart();
  EXPECT_EQ(pg.port(), port);
  EXPECT_NE(pg.postmaster_pid(), before);
  EXPECT_FALSE(process_alive(before));
  EXPECT_EQ(pg.value("SELECT count(*) FROM kept"), "100");

  pg.exec("CHECKPOINT");  // synchronous_commit is off: only checkpointed data must survive a crash
  pg.restart("immediate");
  EXPECT_EQ(pg.value("SELECT count(*) FROM kept"), "100");
}

TEST(Harness, StopThenNotRunning) {
  PgInstance pg(named("stop"));
  const pid_t pid = pg.postmaster_pid();
  ASSERT_GT(pid, 0);
  pg.stop();
  EXPECT_FALSE(pg.running());
  EXPECT_EQ(pg.postmaster_pid(), -1);
  EXPECT_FALSE(process_alive(pid));
  try {
    pg.value("SELECT 1");
    ADD_FAILURE() << "a stopped instance answered";
  } catch (const ServerError &e) {
    ADD_FAILURE() << "a connection failure is not a server error: " << e.what();
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(pg.port())), std::string::npos) << e.what();
  }
  pg.stop();  // stopping a stopped instance is a no-op
  pg.start();
  EXPECT_TRUE(pg.running());
  EXPECT_EQ(pg.value("SELECT 1"), "1");
}

TEST(Harness, StartOnTakenPortFailsClearly) {
  PgInstance pg(named("taken"));
  const int port = pg.port();
  pg.stop();
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr), 0) << std::strerror(errno);
  ASSERT_EQ(listen(fd, 1), 0);
  try {
    pg.start();
    ADD_FAILURE() << "started on a port that is taken";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("port " + std::to_string(port) + " still in use"), std::string::npos)
        << e.what();
  }
  close(fd);
  pg.start();
  EXPECT_EQ(pg.port(), port);
  EXPECT_EQ(pg.value("SELECT 1"), "1");
}

TEST(Harness, DestroyRemovesDirectoryAndProcesses) {
  auto pg = std::make_unique<PgInstance>(named("destroy"));
  const std::string dir = pg->base_dir();
  const pid_t postmaster = pg->postmaster_pid();
  const std::vector<pid_t> children = children_of(postmaster);
  ASSERT_GT(postmaster, 0);
  ASSERT_FALSE(children.empty());  // checkpointer, walwriter, ...
  pg.reset();
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_FALSE(process_alive(postmaster));
  EXPECT_NE(kill(postmaster, 0), 0);  // not even a zombie: reaped
  for (pid_t child : children) EXPECT_FALSE(process_alive(child)) << child;
}

TEST(Harness, FailedStartThrowsWithLogAndLeavesNothing) {
  InstanceOptions options = named("badconf" + std::to_string(getpid()));
  options.extra_conf = {"no_such_setting_xyz = 1"};
  try {
    PgInstance pg(options);
    ADD_FAILURE() << "started with an invalid setting";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("no_such_setting_xyz"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(dirs_named(options.name).empty());

  options = named("nobin");
  options.bindir = "/nonexistent/bin";
  EXPECT_THROW(PgInstance{options}, std::runtime_error);
}

TEST(Harness, WaitUntilPollsUntilTrueOrTimeout) {
  int calls = 0;
  EXPECT_TRUE(wait_until([&] { return ++calls == 3; }, 5000));
  EXPECT_EQ(calls, 3);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(wait_until([] { return false; }, 200));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
}

// ---------------------------------------------------------------------------------------------
// Standbys.

// A standby of `primary`; its bindir is left at the default: the primary's is used.
InstanceOptions standby_named(const std::string &name, const PgInstance &primary) {
  InstanceOptions options;
  options.name = name;
  options.standby_of = &primary;
  return options;
}

// Rows of t: 1..n, v = 10 * id.
void insert_rows(const PgInstance &pg, int from, int to) {
  pg.exec("INSERT INTO t SELECT g, 10 * g FROM generate_series(" + std::to_string(from) + ", " +
          std::to_string(to) + ") g");
}

void expect_same_rows(const PgInstance &standby, const PgInstance &primary, const std::string &table = "t") {
  EXPECT_EQ(standby.value("SELECT pg_is_in_recovery()"), "t") << standby.name();
  const std::string count = "SELECT count(*) FROM " + table, sum = "SELECT sum(v) FROM " + table;
  EXPECT_EQ(standby.value(count), primary.value(count)) << standby.name() << " " << table;
  EXPECT_EQ(standby.value(sum), primary.value(sum)) << standby.name() << " " << table;
}

// Inserts into, updates and deletes from table w (created here) over its own connection until
// destroyed: a primary whose files change while a standby copies them.
class BusyWriter {
 public:
  explicit BusyWriter(const std::string &conninfo) : conn_(PQconnectdb(conninfo.c_str()), &PQfinish) {
    run("CREATE TABLE w (id bigserial PRIMARY KEY, v bigint)");
    thread_ = std::thread([this] {
      while (!stop_) {
        run("INSERT INTO w (v) SELECT g FROM generate_series(1, 200) g;"
            " UPDATE w SET v = v + 1 WHERE id % 5 = 0; DELETE FROM w WHERE id % 13 = 0");
        ++statements_;
      }
    });
  }
  ~BusyWriter() {
    stop_ = true;
    thread_.join();
  }
  int statements() const { return statements_; }

 private:
  void run(const char *sql) {
    std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(conn_.get(), sql), &PQclear);
    if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) ADD_FAILURE() << PQerrorMessage(conn_.get());
  }
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn_;
  std::atomic<bool> stop_{false};
  std::atomic<int> statements_{0};
  std::thread thread_;
};

// Walsenders streaming to standbys with these application names.
int streaming_to(const PgInstance &primary, const std::string &names_sql) {
  return std::stoi(primary.value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                                 " AND application_name IN (" + names_sql + ")"));
}

// CREATE_REPLICATION_SLOT ... LOGICAL on a standby (PostgreSQL 16+) waits for a running-transactions
// record from the primary, which an idle primary writes only every 15 s or so: ask the primary for
// one every 200 ms meanwhile. Returns the consistent point; "" with `error` set on failure.
std::string create_logical_slot_on_standby(const PgInstance &standby, const PgInstance &primary,
                                           std::string *error) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(
      PQconnectdb((standby.conninfo() + " replication=database").c_str()), &PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    *error = std::string("connect: ") + PQerrorMessage(conn.get());
    return "";
  }
  if (!PQsendQuery(conn.get(), "CREATE_REPLICATION_SLOT s TEMPORARY LOGICAL pgoutput")) {
    *error = std::string("send: ") + PQerrorMessage(conn.get());
    return "";
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (PQconsumeInput(conn.get()) && PQisBusy(conn.get())) {
    if (std::chrono::steady_clock::now() >= deadline) {
      *error = "no consistent point within 30 s";
      return "";
    }
    primary.exec("SELECT pg_log_standby_snapshot()");
    pollfd pfd{PQsocket(conn.get()), POLLIN, 0};
    poll(&pfd, 1, 200);
  }
  std::unique_ptr<PGresult, decltype(&PQclear)> result(PQgetResult(conn.get()), &PQclear);
  if (PQresultStatus(result.get()) != PGRES_TUPLES_OK) {
    *error = std::string("CREATE_REPLICATION_SLOT: ") + PQerrorMessage(conn.get());
    return "";
  }
  const int column = PQfnumber(result.get(), "consistent_point");
  const std::string point = column >= 0 ? PQgetvalue(result.get(), 0, column) : "";
  // While this session lives, its temporary slot is there, on the standby.
  const std::string slots = standby.value("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's'"
                                          " AND slot_type = 'logical' AND temporary");
  if (slots != "1") *error = "the slot is not in the standby's pg_replication_slots (" + slots + ")";
  while (PGresult *rest = PQgetResult(conn.get())) PQclear(rest);
  return point;
}

TEST(Harness, Pg17StandbysReplayTheirPrimary) {
  const std::string bindir = pg17_bindir();
  if (bindir.empty()) {
    const char *ci = std::getenv("CI");
    if (ci != nullptr && std::string(ci) == "true") {
      FAIL() << "no PostgreSQL 17 (pg17_bindir() is empty): scripts/install-pg17.sh did not run";
    }
    GTEST_SKIP() << "no PostgreSQL 17: run scripts/install-pg17.sh or set PGDOG_RESHARD_PG17_BINDIR";
  }
  InstanceOptions options = named("pg17primary");
  options.bindir = bindir;
  PgInstance primary(options);
  EXPECT_GE(std::stoi(primary.value("SHOW server_version_num")), 170000);
  primary.exec("CREATE TABLE t (id int PRIMARY KEY, v bigint)");
  insert_rows(primary, 1, 1000);

  // Both cloned while the primary runs and takes writes.
  PgInstance standby1(standby_named("pg17standby1", primary));
  EXPECT_EQ(standby1.options().bindir, bindir);
  insert_rows(primary, 1001, 2000);
  std::unique_ptr<PgInstance> standby2;
  {
    BusyWriter writer(primary.conninfo());  // writes into table w during the whole copy
    standby2 = std::make_unique<PgInstance>(standby_named("pg17standby2", primary));
    EXPECT_GT(writer.statements(), 0);
  }
  insert_rows(primary, 2001, 3000);
  primary.exec("UPDATE t SET v = v + 1 WHERE id % 7 = 0; DELETE FROM t WHERE id % 11 = 0");

  standby1.wait_for_replay(primary);
  standby2->wait_for_replay(primary);
  expect_same_rows(standby1, primary);
  expect_same_rows(*standby2, primary);
  expect_same_rows(standby1, primary, "w");
  expect_same_rows(*standby2, primary, "w");
  EXPECT_EQ(primary.value("SELECT count(*) FROM t"), "2728");
  EXPECT_TRUE(wait_until([&] { return streaming_to(primary, "'pg17standby1', 'pg17standby2'") == 2; }));
  EXPECT_EQ(primary.value("SELECT count(*) FROM pg_stat_replication"), "2");
  EXPECT_EQ(primary.value("SELECT count(*) FROM pg_replication_slots"), "0");  // the clone's slot was temporary
  EXPECT_NE(standby1.port(), standby2->port());
  EXPECT_EQ(standby1.value("SHOW hot_standby_feedback"), "on");
  EXPECT_EQ(standby1.value("SHOW unix_socket_directories"), standby1.base_dir());
  EXPECT_THROW(primary.wait_for_replay(standby1), std::runtime_error);  // the primary replays nothing

  std::string error;
  EXPECT_NE(create_logical_slot_on_standby(standby1, primary, &error), "") << error;
  EXPECT_EQ(error, "");

  // A standby goes like any instance; its primary streams to the other one only.
  const std::string dir = standby2->base_dir();
  const pid_t postmaster = standby2->postmaster_pid();
  ASSERT_GT(postmaster, 0);
  standby2.reset();
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_FALSE(process_alive(postmaster));
  EXPECT_TRUE(wait_until([&] { return primary.value("SELECT count(*) FROM pg_stat_replication") == "1"; }));
  insert_rows(primary, 3001, 3100);
  standby1.wait_for_replay(primary);
  expect_same_rows(standby1, primary);
}

// The same with the default PostgreSQL (15): extra_conf and hba_lines of a standby apply, and it is
// torn down cleanly whether it goes before or after its primary.
TEST(Harness, StandbyIsTornDownLikeAnyInstance) {
  auto primary = std::make_unique<PgInstance>(named("sbprimary"));
  primary->exec("CREATE TABLE t (id int PRIMARY KEY, v bigint)");
  insert_rows(*primary, 1, 500);
  InstanceOptions options = standby_named("sbfirst", *primary);
  options.extra_conf = {"work_mem = '7MB'"};
  options.hba_lines = {"host all blocked 127.0.0.1/32 reject"};
  auto first = std::make_unique<PgInstance>(options);
  EXPECT_EQ(first->options().bindir, std::string(PGDOG_PG_BINDIR));
  insert_rows(*primary, 501, 600);
  first->wait_for_replay(*primary);
  expect_same_rows(*first, *primary);
  EXPECT_EQ(first->value("SHOW work_mem"), "7MB");
  primary->exec("CREATE ROLE blocked LOGIN");
  first->wait_for_replay(*primary);
  EXPECT_NE(connect_error(first->conninfo("postgres", "blocked")).find("pg_hba.conf rejects"), std::string::npos);
  EXPECT_EQ(connect_error(primary->conninfo("postgres", "blocked")), "");  // the primary's rules are its own

  const std::string first_dir = first->base_dir();
  const pid_t first_pid = first->postmaster_pid();
  const std::vector<pid_t> first_children = children_of(first_pid);
  ASSERT_FALSE(first_children.empty());  // startup (replaying), walreceiver, ...
  first.reset();
  EXPECT_FALSE(fs::exists(first_dir));
  EXPECT_FALSE(process_alive(first_pid));
  for (pid_t child : first_children) EXPECT_FALSE(process_alive(child)) << child;
  EXPECT_EQ(primary->value("SELECT count(*) FROM pg_replication_slots"), "0");

  // A standby outliving its primary (its walreceiver retrying) still goes cleanly.
  auto second = std::make_unique<PgInstance>(standby_named("sbsecond", *primary));
  expect_same_rows(*second, *primary);
  primary.reset();
  const std::string second_dir = second->base_dir();
  const pid_t second_pid = second->postmaster_pid();
  EXPECT_EQ(second->value("SELECT count(*) FROM t"), "600");  // still answers read-only queries
  second.reset();
  EXPECT_FALSE(fs::exists(second_dir));
  EXPECT_FALSE(process_alive(second_pid));
}

TEST(Harness, StandbyOfAStoppedPrimaryFailsClearly) {
  PgInstance primary(named("sbstopped"));
  primary.stop();
  try {
    PgInstance standby(standby_named("sborphan", primary));
    ADD_FAILURE() << "a standby of a stopped primary started";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find("not running"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(dirs_named("sborphan").empty());
}

// A test process killed with SIGKILL leaves its primary and its standby running; the next sweep
// stops and removes both, the standby's directory being like any other.
TEST(Harness, SweepRemovesTheStandbyOfAKilledProcess) {
  init_harness();  // before fork: the child's postmasters fall back to us
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  std::fflush(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    std::string report;
    try {
      auto *primary = new PgInstance(named("sweepprimary"));  // never deleted: SIGKILL comes first
      auto *standby = new PgInstance(standby_named("sweepstandby", *primary));
      report = std::to_string(primary->postmaster_pid()) + " " + std::to_string(standby->postmaster_pid()) + " " +
               primary->base_dir() + " " + standby->base_dir();
    } catch (const std::exception &e) {
      report = std::string("error ") + e.what();
    }
    (void)!write(fds[1], report.data(), report.size());
    close(fds[1]);
    for (;;) pause();
  }
  close(fds[1]);
  std::string report;
  char buf[1024];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) report.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_EQ(report.rfind("error", 0), std::string::npos) << report;
  long primary_pid = 0, standby_pid = 0;
  char primary_dir[512] = {}, standby_dir[512] = {};
  ASSERT_EQ(std::sscanf(report.c_str(), "%ld %ld %511s %511s", &primary_pid, &standby_pid, primary_dir, standby_dir),
            4)
      << report;
  EXPECT_TRUE(process_alive(static_cast<pid_t>(standby_pid)));  // nothing stopped it: SIGKILL
  EXPECT_GE(cleanup_stale_instances(), 2);
  EXPECT_FALSE(fs::exists(primary_dir)) << primary_dir;
  EXPECT_FALSE(fs::exists(standby_dir)) << standby_dir;
  EXPECT_FALSE(process_alive(static_cast<pid_t>(primary_pid)));
  EXPECT_FALSE(process_alive(static_cast<pid_t>(standby_pid)));
}

// How the child that owns an instance dies.
enum class Death { kSegfault, kAbort, kSigterm };

[[noreturn]] void child_with_instance(Death death, int report_fd) {
  const rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);  // a deliberate crash: no core file
  std::string report;
  try {
    auto *pg = new PgInstance(named("crash"));  // never deleted: the crash must clean up, not a destructor
    report = std::to_string(pg->postmaster_pid()) + " " + pg->base_dir();
  } catch (const std::exception &e) {
    report = std::string("error ") + e.what();
  }
  (void)!write(report_fd, report.data(), report.size());
  close(report_fd);
  if (report.rfind("error", 0) == 0) _exit(3);
  switch (death) {
    case Death::kSegfault: {
      // A real fault, without undefined behaviour a sanitizer build would stop at: a page that
      // cannot be written.
      void *page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      *static_cast<volatile int *>(page) = 1;
      break;
    }
    case Death::kAbort:
      std::abort();
    case Death::kSigterm:
      for (;;) pause();  // the parent sends SIGTERM
  }
  _exit(4);
}

void expect_no_postmaster_after_death(Death death, int expected_signal) {
  init_harness();  // before fork: we become the subreaper the child's orphans fall back to
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);  // or the child's postmaster would inherit the write end
  std::fflush(nullptr);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    child_with_instance(death, fds[1]);
  }
  close(fds[1]);
  std::string report;
  char buf[512];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) report.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  if (death == Death::kSigterm && report.rfind("error", 0) != 0) kill(child, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_EQ(report.rfind("error", 0), std::string::npos) << report;

  long pid = 0;
  char dir[512] = {};
  ASSERT_EQ(std::sscanf(report.c_str(), "%ld %511s", &pid, dir), 2) << report;
  ASSERT_TRUE(WIFSIGNALED(status)) << "status " << status;
  EXPECT_EQ(WTERMSIG(status), expected_signal);  // re-raised after the cleanup
  EXPECT_TRUE(wait_until([&] { return !process_alive(static_cast<pid_t>(pid)); }, 15000));
  EXPECT_NE(kill(static_cast<pid_t>(pid), 0), 0);
  EXPECT_EQ(errno, ESRCH);
  // A signal handler cannot remove a tree safely; the owner is dead, so the next sweep does.
  cleanup_stale_instances();
  EXPECT_FALSE(fs::exists(dir)) << dir;
}

TEST(Harness, ChildSegfaultLeavesNoPostmaster) {
  expect_no_postmaster_after_death(Death::kSegfault, SIGSEGV);
}

TEST(Harness, ChildAbortLeavesNoPostmaster) { expect_no_postmaster_after_death(Death::kAbort, SIGABRT); }

TEST(Harness, ChildSigtermLeavesNoPostmaster) { expect_no_postmaster_after_death(Death::kSigterm, SIGTERM); }

}  // namespace
}  // namespace pgdog_reshard::test
