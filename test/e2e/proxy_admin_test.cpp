// ProxyAdmin (engine/proxy_admin.h) against a real PgBouncer in transaction mode in front of real
// PostgreSQL instances, and the PgBouncer harness itself (pgbouncer.h).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "core/pg.h"
#include "engine/cutover_command.h"
#include "engine/proxy_admin.h"
#include "engine/task_context.h"
#include "expect_error.h"
#include "harness.h"
#include "pgbouncer.h"

namespace pgdog_reshard {
namespace {

using test::PgBouncer;
using test::PgInstance;
using Clock = std::chrono::steady_clock;

constexpr auto kHeld = std::chrono::milliseconds(300);  // "still waiting" means: after this long

bool has(const std::string &text, const std::string &needle) {
  return text.find(needle) != std::string::npos;
}

// A blocking libpq client through PgBouncer, as an application would have one.
class Client {
 public:
  explicit Client(const std::string &conninfo)
      : conn_(PQconnectdb((conninfo + " connect_timeout=30").c_str())) {
    if (PQstatus(conn_) != CONNECTION_OK) {
      const std::string why = PQerrorMessage(conn_);
      PQfinish(conn_);
      throw std::runtime_error("client cannot connect (" + conninfo + "): " + why);
    }
  }
  ~Client() { PQfinish(conn_); }
  Client(const Client &) = delete;
  Client &operator=(const Client &) = delete;

  // First column of the first row ("" when the statement returns none).
  std::string value(const std::string &sql) {
    PGresult *res = PQexec(conn_, sql.c_str());
    const ExecStatusType status = PQresultStatus(res);
    std::string out;
    if (status == PGRES_TUPLES_OK && PQntuples(res) > 0) out = PQgetvalue(res, 0, 0);
    const std::string error = PQresultErrorMessage(res);
    PQclear(res);
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      throw std::runtime_error("client query failed (" + sql + "): " + error);
    }
    return out;
  }

 private:
  PGconn *conn_;
};

// A thread that records whether its work finished and what it threw; always joined.
class Background {
 public:
  explicit Background(std::function<void()> work)
      : thread_([this, work = std::move(work)] {
          try {
            work();
          } catch (const std::exception &e) {
            std::lock_guard<std::mutex> lock(mutex_);
            error_ = e.what();
          }
          done_ = true;
        }) {}
  ~Background() {
    if (thread_.joinable()) thread_.join();
  }
  bool done() const { return done_; }
  bool finishes(int timeout_ms = 15000) {
    const bool finished = test::wait_until([this] { return done_.load(); }, timeout_ms);
    if (finished) thread_.join();
    return finished;
  }
  std::string error() {
    std::lock_guard<std::mutex> lock(mutex_);
    return error_;
  }

 private:
  std::atomic<bool> done_{false};
  std::mutex mutex_;
  std::string error_;
  std::thread thread_;  // last: starts once the members above exist
};

// A loopback port nothing listens on.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bind(fd, reinterpret_cast<sockaddr *>(&addr), len);
  getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string backend(const PgInstance &pg) {
  return "host=127.0.0.1 port=" + std::to_string(pg.port()) + " dbname=postgres";
}

class ProxyAdminTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    test::InstanceOptions options;
    options.name = "proxy_a";
    pg_a_ = std::make_unique<PgInstance>(options);
    options.name = "proxy_b";
    pg_b_ = std::make_unique<PgInstance>(options);
  }
  static void TearDownTestSuite() {
    pg_a_.reset();
    pg_b_.reset();
  }

  void SetUp() override {
    bouncer_ = std::make_unique<PgBouncer>(
        std::map<std::string, std::string>{{"shard_0", backend(*pg_a_)}});
  }
  void TearDown() override {
    // Whatever a failed test left paused must not hold a client thread (and so the test) forever.
    SimpleTaskContext ctx;
    try {
      ProxyAdmin({parse_conninfo(bouncer_->admin_conninfo())}, ctx).resume();
    } catch (const std::exception &) {
    }
    bouncer_.reset();
  }

  ProxyAdmin admin(TaskContext &ctx) {
    return ProxyAdmin({parse_conninfo(bouncer_->admin_conninfo())}, ctx);
  }

  static std::unique_ptr<PgInstance> pg_a_, pg_b_;
  std::unique_ptr<PgBouncer> bouncer_;
};

std::unique_ptr<PgInstance> ProxyAdminTest::pg_a_;
std::unique_ptr<PgInstance> ProxyAdminTest::pg_b_;

// (a) A paused PgBouncer holds new transactions of connected clients, and new logins, until RESUME.
TEST_F(ProxyAdminTest, PauseHoldsNewQueriesUntilResume) {
  Client connected(bouncer_->conninfo("shard_0"));
  EXPECT_EQ(connected.value("SELECT 1"), "1");
  SimpleTaskContext ctx;
  ProxyAdmin proxies = admin(ctx);
  ASSERT_FALSE(proxies.empty());
  proxies.pause();

  Background old_client([&] { EXPECT_EQ(connected.value("SELECT 1"), "1"); });
  Background new_client([&] {
    Client fresh(bouncer_->conninfo("shard_0"));
    EXPECT_EQ(fresh.value("SELECT 2"), "2");
  });
  std::this_thread::sleep_for(kHeld);
  EXPECT_FALSE(old_client.done()) << "a query went through a paused PgBouncer";
  EXPECT_FALSE(new_client.done()) << "a new client got through a paused PgBouncer";

  proxies.resume();
  EXPECT_TRUE(old_client.finishes());
  EXPECT_TRUE(new_client.finishes());
  EXPECT_EQ(old_client.error(), "");
  EXPECT_EQ(new_client.error(), "");
}

// (b) PAUSE answers only once the transaction open at the time has ended (transaction mode).
TEST_F(ProxyAdminTest, PauseWaitsForTheOpenTransaction) {
  Client in_transaction(bouncer_->conninfo("shard_0"));
  in_transaction.value("BEGIN");
  in_transaction.value("CREATE TEMP TABLE t AS SELECT 1 AS x");

  std::atomic<bool> committed{false};
  std::atomic<bool> committed_before_paused{false};
  SimpleTaskContext ctx;
  ProxyAdmin proxies = admin(ctx);
  const auto started = Clock::now();
  Background pauser([&] {
    proxies.pause();
    committed_before_paused = committed.load();
  });
  std::this_thread::sleep_for(kHeld);
  EXPECT_FALSE(pauser.done()) << "PAUSE returned while a transaction was open";
  committed = true;
  in_transaction.value("COMMIT");
  ASSERT_TRUE(pauser.finishes());
  EXPECT_EQ(pauser.error(), "");
  EXPECT_TRUE(committed_before_paused) << "pause() returned before the transaction ended";
  EXPECT_GE(Clock::now() - started, kHeld);

  // Paused: the same client's next transaction waits.
  Background next([&] { in_transaction.value("SELECT 1"); });
  std::this_thread::sleep_for(kHeld);
  EXPECT_FALSE(next.done());
  proxies.resume();
  EXPECT_TRUE(next.finishes());
}

// Someone else's PAUSE still in progress: our PAUSE gets "already suspended/paused" and must still
// wait until the proxy has let go of its servers.
TEST_F(ProxyAdminTest, PauseWhileAnotherPauseIsPendingWaitsToo) {
  Client in_transaction(bouncer_->conninfo("shard_0"));
  in_transaction.value("BEGIN");
  in_transaction.value("SELECT 1");

  std::atomic<bool> committed{false};
  std::atomic<bool> second_saw_commit{false};
  std::atomic<bool> saw_already_paused{false};
  SimpleTaskContext ctx_first;
  SimpleTaskContext ctx_second({}, [&](LogLevel, const std::string &line) {
    if (has(line, "was already paused")) saw_already_paused = true;
  });
  ProxyAdmin first = admin(ctx_first);
  ProxyAdmin second = admin(ctx_second);
  Background first_pause([&] { first.pause(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // first's PAUSE is pending
  Background second_pause([&] {
    second.pause();
    second_saw_commit = committed.load();
  });
  std::this_thread::sleep_for(kHeld);
  EXPECT_FALSE(first_pause.done());
  EXPECT_FALSE(second_pause.done()) << "the second PAUSE took 'already paused' as paused";
  committed = true;
  in_transaction.value("COMMIT");
  ASSERT_TRUE(first_pause.finishes());
  ASSERT_TRUE(second_pause.finishes());
  EXPECT_EQ(first_pause.error(), "");
  EXPECT_EQ(second_pause.error(), "");
  EXPECT_TRUE(second_saw_commit);
  EXPECT_TRUE(saw_already_paused) << "the second PAUSE did not meet a pending one";
  second.resume();
  first.resume();  // not paused any more: fine too
}

// (c) The cutover itself: pause, point shard_0 at the other server, RELOAD, RESUME. A client that
// stayed connected throughout lands on the new server; so does a new one.
TEST_F(ProxyAdminTest, ReloadAfterRewritingTheIniMovesTrafficToTheNewServer) {
  const std::string port_a = std::to_string(pg_a_->port());
  const std::string port_b = std::to_string(pg_b_->port());
  Client connected(bouncer_->conninfo("shard_0"));
  EXPECT_EQ(connected.value("SELECT inet_server_port()"), port_a);

  SimpleTaskContext ctx;
  ProxyAdmin proxies = admin(ctx);
  proxies.pause();
  bouncer_->write_databases({{"shard_0", backend(*pg_b_)}});
  proxies.reload();
  proxies.resume();

  EXPECT_EQ(connected.value("SELECT inet_server_port()"), port_b);
  Client fresh(bouncer_->conninfo("shard_0"));
  EXPECT_EQ(fresh.value("SELECT current_setting('port')"), port_b);
}

// The same switch made by a cutover_command that edits the ini file, as a user would write it.
TEST_F(ProxyAdminTest, CutoverCommandRewritingTheIniMovesTrafficAfterReload) {
  const std::string port_a = std::to_string(pg_a_->port());
  const std::string port_b = std::to_string(pg_b_->port());
  Client connected(bouncer_->conninfo("shard_0"));
  EXPECT_EQ(connected.value("SELECT inet_server_port()"), port_a);

  SimpleTaskContext ctx;
  ProxyAdmin proxies = admin(ctx);
  proxies.pause();
  const std::string command =
      expand_cutover_command("sed -i \"s/port=" + port_a + " /port=" + port_b + " /\" " +
                                 bouncer_->ini_path() + " && echo task %t: %s to %d",
                             7, "prod", "prod_v2");
  run_cutover_command(command, ctx);
  proxies.reload();
  proxies.resume();
  EXPECT_EQ(connected.value("SELECT inet_server_port()"), port_b);
}

// (d) An unreachable proxy: 08001, naming the command and the proxy, never the password.
TEST_F(ProxyAdminTest, UnreachableProxyFailsWith08001NamingIt) {
  const int port = closed_port();
  std::vector<std::string> warnings;
  SimpleTaskContext ctx({}, [&](LogLevel level, const std::string &line) {
    if (level == LogLevel::Warning) warnings.push_back(line);
  });
  ProxyAdmin proxies(
      parse_proxy_admin("host=127.0.0.1 port=" + std::to_string(port) +
                        " dbname=pgbouncer user=admin password=secret connect_timeout=5"),
      ctx);
  Error e = error_of([&] { proxies.pause(); });
  EXPECT_EQ(e.sqlstate(), "08001");
  const std::string proxy =
      "host=127.0.0.1 port=" + std::to_string(port) + " dbname=pgbouncer user=admin";
  EXPECT_TRUE(has(e.what(), "PAUSE on proxy " + proxy + " failed: could not connect")) << e.what();
  for (const std::string &text : {std::string(e.what()), e.detail(), e.hint()}) {
    EXPECT_FALSE(has(text, "secret")) << text;
  }

  Error resume = error_of([&] { proxies.resume(); });
  EXPECT_EQ(resume.sqlstate(), "08001");
  EXPECT_TRUE(has(resume.what(), "RESUME on proxy " + proxy + " failed")) << resume.what();
  EXPECT_FALSE(has(resume.what(), "secret"));
  for (const std::string &line : warnings) EXPECT_FALSE(has(line, "secret")) << line;

  Error reload = error_of([&] { proxies.reload(); });
  EXPECT_TRUE(has(reload.what(), "RELOAD on proxy " + proxy + " failed")) << reload.what();
}

// A failed pause() gives back the proxies it had paused: traffic never stays paused.
TEST_F(ProxyAdminTest, FailedPauseResumesTheProxiesItPaused) {
  SimpleTaskContext ctx;
  ProxyAdmin proxies(parse_proxy_admin(bouncer_->admin_conninfo() +
                                       "; host=127.0.0.1 port=" + std::to_string(closed_port()) +
                                       " dbname=pgbouncer user=admin"),
                     ctx);
  Error e = error_of([&] { proxies.pause(); });
  EXPECT_EQ(e.sqlstate(), "08001");
  Background query([&] { Client(bouncer_->conninfo("shard_0")).value("SELECT 1"); });
  EXPECT_TRUE(query.finishes()) << "the first proxy stayed paused";
  EXPECT_EQ(query.error(), "");
}

// An interrupted pause (the task is cancelled while PAUSE waits for a transaction) resumes the
// proxy too, although the task's waits now all throw.
TEST_F(ProxyAdminTest, InterruptedPauseResumesTheProxy) {
  Client in_transaction(bouncer_->conninfo("shard_0"));
  in_transaction.value("BEGIN");
  in_transaction.value("SELECT 1");
  std::atomic<bool> stop{false};
  SimpleTaskContext ctx([&] { return stop.load(); });
  ProxyAdmin proxies = admin(ctx);
  std::string sqlstate;
  Background pauser([&] {
    try {
      proxies.pause();
    } catch (const Error &e) {
      sqlstate = e.sqlstate();
    }
  });
  std::this_thread::sleep_for(kHeld);
  EXPECT_FALSE(pauser.done());
  stop = true;
  ASSERT_TRUE(pauser.finishes());
  EXPECT_EQ(sqlstate, "57014");
  Background query([&] { Client(bouncer_->conninfo("shard_0")).value("SELECT 1"); });
  EXPECT_TRUE(query.finishes()) << "the interrupted PAUSE left the proxy paused";
  in_transaction.value("COMMIT");
}

// (e) RESUME when not paused, and PAUSE when paused, are success.
TEST_F(ProxyAdminTest, ResumeWhenNotPausedAndPauseWhenPausedSucceed) {
  SimpleTaskContext ctx;
  ProxyAdmin proxies = admin(ctx);
  proxies.resume();
  proxies.pause();
  proxies.pause();
  proxies.reload();  // RELOAD while paused
  proxies.resume();
  proxies.resume();
  Client client(bouncer_->conninfo("shard_0"));
  EXPECT_EQ(client.value("SELECT 1"), "1");

  ProxyAdmin none({}, ctx);
  EXPECT_TRUE(none.empty());
  none.pause();
  none.reload();
  none.resume();
}

// (f) The setting: conninfos separated by ';'.
TEST(ProxyAdminSetting, ParsesConninfosSeparatedBySemicolons) {
  std::vector<ConnParams> proxies = parse_proxy_admin(
      " host=10.0.0.1 port=6432 dbname=pgbouncer user=admin password='pa;ss' ;"
      "postgresql://pgdog:pw@10.0.0.2:6433/admin?sslmode=disable ;; ");
  ASSERT_EQ(proxies.size(), 2u);
  EXPECT_EQ(proxies[0].host, "10.0.0.1");
  EXPECT_EQ(proxies[0].port, 6432);
  EXPECT_EQ(proxies[0].dbname, "pgbouncer");
  EXPECT_EQ(proxies[0].user, "admin");
  EXPECT_EQ(proxies[0].password, "pa;ss");
  EXPECT_EQ(proxies[1].host, "10.0.0.2");
  EXPECT_EQ(proxies[1].port, 6433);
  EXPECT_EQ(proxies[1].dbname, "admin");
  EXPECT_EQ(proxies[1].user, "pgdog");
  EXPECT_EQ(proxies[1].password, "pw");
  ASSERT_EQ(proxies[1].options.size(), 1u);
  EXPECT_EQ(proxies[1].options[0], (std::pair<std::string, std::string>("sslmode", "disable")));

  EXPECT_TRUE(parse_proxy_admin("").empty());
  EXPECT_TRUE(parse_proxy_admin(" ; ;").empty());
  EXPECT_EQ(parse_proxy_admin("host=a").size(), 1u);

  Error e = error_of([] { parse_proxy_admin("host=a; host=b bogus=1 password=hunter2"); });
  EXPECT_EQ(e.sqlstate(), "22023");
  EXPECT_TRUE(has(e.detail(), "entry 2")) << e.detail();
  EXPECT_FALSE(has(std::string(e.what()) + e.detail() + e.hint(), "hunter2"));
}

// ---------------------------------------------------------------------------------------------
// The harness

class PgBouncerHarness : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    test::InstanceOptions options;
    options.name = "pgbouncer_harness";
    pg_ = std::make_unique<PgInstance>(options);
  }
  static void TearDownTestSuite() { pg_.reset(); }
  static std::unique_ptr<PgInstance> pg_;
};

std::unique_ptr<PgInstance> PgBouncerHarness::pg_;

TEST_F(PgBouncerHarness, ServesClientsAndCleansUp) {
  std::string dir;
  pid_t pid = -1;
  {
    PgBouncer bouncer({{"shard_0", backend(*pg_)}, {"other", backend(*pg_)}},
                      test::PgBouncerOptions{"harness_check", "session"});
    dir = bouncer.base_dir();
    pid = bouncer.pid();
    EXPECT_TRUE(has(dir, test::kPgBouncerTempPrefix)) << dir;
    EXPECT_TRUE(std::filesystem::exists(bouncer.ini_path()));
    EXPECT_EQ(bouncer.host(), "127.0.0.1");
    EXPECT_GT(bouncer.port(), 0);
    EXPECT_NE(bouncer.port(), pg_->port());
    Client client(bouncer.conninfo("shard_0"));
    EXPECT_EQ(client.value("SELECT inet_server_port()"), std::to_string(pg_->port()));
    EXPECT_EQ(Client(bouncer.conninfo("other")).value("SELECT current_user"), "postgres");
    EXPECT_TRUE(has(bouncer.log(), "process up")) << bouncer.log();
    EXPECT_EQ(bouncer.admin_conninfo(), "host=127.0.0.1 port=" + std::to_string(bouncer.port()) +
                                            " dbname=pgbouncer user=postgres");
    EXPECT_TRUE(test::process_alive(pid));
  }
  EXPECT_FALSE(std::filesystem::exists(dir));
  EXPECT_FALSE(test::process_alive(pid));
}

// What Connection sends at startup (application_name, no options) is accepted by the admin console.
TEST_F(PgBouncerHarness, AdminConsoleAcceptsConnection) {
  PgBouncer bouncer({{"shard_0", backend(*pg_)}});
  SimpleTaskContext ctx;
  Connection admin(parse_conninfo(bouncer.admin_conninfo()), ctx);
  Result clients = admin.exec("SHOW CLIENTS");
  const int column = clients.column_index("application_name");
  ASSERT_GE(column, 0);
  bool found = false;
  for (int row = 0; row < clients.rows(); ++row)
    found = found || clients.value(row, column) == "pgdog_reshard";
  EXPECT_TRUE(found) << "the admin console did not keep application_name";
  EXPECT_EQ(admin.exec("SHOW VERSION").rows(), 1);
}

TEST_F(PgBouncerHarness, WriteDatabasesRewritesTheDatabasesSection) {
  PgBouncer bouncer({{"shard_0", backend(*pg_)}});
  bouncer.write_databases({{"shard_9", "host=127.0.0.1 port=1 dbname=x"}});
  std::ifstream in(bouncer.ini_path());
  const std::string ini((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(has(ini, "[databases]\nshard_9 = host=127.0.0.1 port=1 dbname=x\n")) << ini;
  EXPECT_FALSE(has(ini, "shard_0")) << ini;
  EXPECT_TRUE(has(ini, "listen_port = " + std::to_string(bouncer.port()) + "\n")) << ini;
  EXPECT_THROW(bouncer.write_databases({{"bad name", "host=x"}}), std::invalid_argument);
}

}  // namespace
}  // namespace pgdog_reshard
