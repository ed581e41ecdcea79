// Self-test of the e2e harness: instances start, answer, restart, stop, and leave nothing behind,
// not even when the process that owns them crashes.
#include "harness.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

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
