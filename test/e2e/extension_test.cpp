// The extension on a real server: refuses to load without the preload, runs a launcher that
// survives crashes and stops cleanly, and shows a configuration naming live instances.
#include <signal.h>

#include <fstream>

#include <gtest/gtest.h>

#include "core/config.h"
#include "core/pg.h"
#include "harness.h"

namespace pgdog_reshard::test {
namespace {

const char *kLauncherPid =
    "SELECT coalesce((SELECT pid::text FROM pg_stat_activity"
    " WHERE backend_type = 'pgdog_reshard launcher'), '')";

InstanceOptions control_node() {
  InstanceOptions options;
  options.name = "control";
  options.preload_extension = true;
  return options;
}

// Running, as opposed to gone or a zombie nobody reaped yet (kill(pid, 0) succeeds on zombies).
bool process_running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  size_t end_of_name = line.rfind(')');  // the name may contain spaces; the state follows it
  if (end_of_name == std::string::npos || end_of_name + 2 >= line.size()) return false;
  char state = line[end_of_name + 2];
  return state != 'Z' && state != 'X';
}

pid_t wait_for_launcher(const PgInstance &pg, pid_t not_this = 0) {
  std::string pid;
  wait_until([&] {
    try {
      pid = pg.value(kLauncherPid);
    } catch (const std::exception &) {
      pid.clear();  // the server may be restarting after a crash
    }
    return !pid.empty() && std::stoi(pid) != not_this;
  }, 30000);
  return pid.empty() ? 0 : std::stoi(pid);
}

TEST(Extension, RefusesToLoadWithoutPreload) {
  PgInstance pg;  // no shared_preload_libraries
  ServerError e = pg.error_of("CREATE EXTENSION pgdog_reshard");
  EXPECT_EQ(e.sqlstate, "55000");
  EXPECT_NE(e.message.find("shared_preload_libraries"), std::string::npos) << e.message;
  EXPECT_NE(e.hint.find("shared_preload_libraries = 'pgdog_reshard'"), std::string::npos) << e.hint;
  EXPECT_EQ(pg.value("SELECT count(*) FROM pg_extension WHERE extname = 'pgdog_reshard'"), "0");
}

TEST(Extension, LauncherIsRestartedAfterACrash) {
  PgInstance pg(control_node());
  pid_t first = wait_for_launcher(pg);
  ASSERT_GT(first, 0) << pg.log();
  ASSERT_EQ(kill(first, SIGKILL), 0);
  pid_t second = wait_for_launcher(pg, first);
  EXPECT_GT(second, 0) << "the postmaster did not restart the launcher\n" << pg.log();
  EXPECT_NE(second, first);
}

TEST(Extension, LauncherExitsCleanlyOnSigterm) {
  PgInstance pg(control_node());
  pid_t launcher = wait_for_launcher(pg);
  ASSERT_GT(launcher, 0) << pg.log();
  pg.exec("SELECT pg_terminate_backend(" + std::to_string(launcher) + ")");
  EXPECT_TRUE(wait_until([&] { return pg.value(kLauncherPid).empty(); }, 10000));
  EXPECT_TRUE(wait_until([&] { return pg.log().find("pgdog_reshard launcher shutting down") != std::string::npos; }));
  // A clean exit is not a crash: the server is still up and did not reinitialize.
  EXPECT_EQ(pg.value("SELECT 1"), "1");
  EXPECT_EQ(pg.log().find("terminating any other active server processes"), std::string::npos);
}

TEST(Extension, LauncherExitsWhenThePostmasterDies) {
  PgInstance pg(control_node());
  pid_t launcher = wait_for_launcher(pg);
  ASSERT_GT(launcher, 0) << pg.log();
  ASSERT_EQ(kill(pg.postmaster_pid(), SIGKILL), 0);
  EXPECT_TRUE(wait_until([&] { return !process_running(launcher); }, 15000)) << "launcher outlived its postmaster";
}

// Three instances: a control node and a config naming the two others, which the views show and
// through which the core connects to them.
TEST(Extension, ConfigViewsShowLiveInstances) {
  PgInstance control(control_node());
  InstanceOptions a_opts, b_opts;
  a_opts.name = "shard0";
  b_opts.name = "shard1";
  PgInstance shard0(a_opts), shard1(b_opts);
  control.exec("CREATE EXTENSION pgdog_reshard");
  std::string toml =
      "[[databases]]\nname = \"dst\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(shard0.port()) +
      "\ndatabase_name = \"postgres\"\nshard = 0\n\n"
      "[[databases]]\nname = \"dst\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(shard1.port()) +
      "\ndatabase_name = \"postgres\"\nshard = 1\n\n"
      "[[sharded_tables]]\ndatabase = \"dst\"\ncolumn = \"user_id\"\ndata_type = \"bigint\"\n";
  std::string users = "[[users]]\nname = \"postgres\"\ndatabase = \"dst\"\npassword = \"never-shown\"\n";
  control.exec("SELECT reshard_load_config($t$" + toml + "$t$, $u$" + users + "$u$)");

  auto rows = control.query("SELECT name, shard, host, port, database_name, role, \"user\" FROM reshard_databases ORDER BY shard");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(*rows[0][3], std::to_string(shard0.port()));
  EXPECT_EQ(*rows[1][3], std::to_string(shard1.port()));
  EXPECT_EQ(*rows[0][5], "primary");
  EXPECT_EQ(*rows[1][6], "postgres");
  EXPECT_EQ(control.value("SELECT count(*) FROM reshard_databases d WHERE d::text LIKE '%never-shown%'"), "0");
  EXPECT_EQ(control.value("SELECT column_name || ':' || data_type || ':' || method FROM reshard_sharded_tables"),
            "user_id:bigint:hash");

  // The same text parsed by the core names live servers it can reach.
  Config config = parse_config(toml, std::string_view(users));
  PollWaiter waiter;
  for (int shard = 0; shard < config.shard_count("dst"); shard++) {
    const Database &db = config.primary("dst", shard);
    ConnParams params;
    params.host = db.host;
    params.port = db.port;
    params.dbname = db.database_name;
    params.user = db.user;
    params.password = db.password;
    Connection conn(params, waiter);
    EXPECT_EQ(conn.exec("SHOW port").value(0, 0), std::to_string(db.port));
  }
}

}  // namespace
}  // namespace pgdog_reshard::test
