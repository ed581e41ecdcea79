// Reliability of reshard_copy_data under faults, end to end: a write load runs on the source during
// the copy and after it while one fault strikes: a copy worker or the launcher killed by SIGKILL
// (the control node's postmaster then restarts every backend), a destination shard restarted
// (immediate) mid-copy and mid-streaming, the source restarted (immediate) mid-streaming, and a
// destination shard frozen (SIGSTOP of every one of its processes) for 20 s mid-streaming. Each
// time the task reaches (or gets back to) replicating, the stream catches up once the load stops,
// and the destinations together hold exactly the source's rows, each on its shard: reshard_verify
// says so, and so does an independent row-by-row comparison (expect_identical, and a digest of big).
#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "harness.h"
#include "reshard_cluster.h"
#include "write_load.h"

namespace pgdog_reshard::test {
namespace {

// A table of narrow rows whose copy takes seconds: long enough to strike while it runs. It has a
// user_id column, so kProdNewRules shard it by user_id; the load does not write it.
const std::string kSchema = std::string(kLoadSchema) + R"sql(
CREATE TABLE big (id bigint PRIMARY KEY, user_id bigint NOT NULL, pad text NOT NULL);
INSERT INTO big SELECT g, g % 5000, repeat('x', 40) FROM generate_series(1, 1000000) g;
)sql";

// State letter and parent of a process from /proc/<pid>/stat ('\0' and -1 once it is gone).
struct ProcStat {
  char state = '\0';
  pid_t ppid = -1;
};

ProcStat proc_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return {};
  // The command name is in parentheses and may hold spaces: the fields follow the last ')'.
  std::istringstream rest(line.substr(line.rfind(')') + 1));
  ProcStat s;
  rest >> s.state >> s.ppid;
  return s;
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto &entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    if (proc_stat(pid).ppid == parent) out.push_back(pid);
  }
  return out;
}

// Every process of one instance stopped (SIGSTOP) while it lives, continued (SIGCONT) when it goes
// out of scope, also when an assertion returns early: a frozen server would hang the teardown.
// SIGSTOP of the postmaster alone leaves its backends running, so its children are stopped too,
// listed once the postmaster is stopped and so can fork no new one.
class Frozen {
 public:
  explicit Frozen(const PgInstance &pg) {
    const pid_t postmaster = pg.postmaster_pid();
    if (postmaster <= 0 || kill(postmaster, SIGSTOP) != 0) return;
    pids_.push_back(postmaster);
    wait_until([&] { return proc_stat(postmaster).state == 'T'; }, 5000);
    for (pid_t child : children_of(postmaster)) {
      if (kill(child, SIGSTOP) == 0) pids_.push_back(child);
    }
  }
  ~Frozen() {
    for (pid_t pid : pids_) kill(pid, SIGCONT);
  }
  Frozen(const Frozen &) = delete;
  Frozen &operator=(const Frozen &) = delete;

  // The processes stopped, and whether each of them is stopped now.
  size_t size() const { return pids_.size(); }
  bool all_stopped() const {
    for (pid_t pid : pids_) {
      const char state = proc_stat(pid).state;
      if (state != 'T' && state != 'Z') return false;  // a zombie: it exited before the stop
    }
    return true;
  }

 private:
  std::vector<pid_t> pids_;
};

class ReliabilityFaults : public ReshardCluster {
 protected:
  void SetUp() override {
    // Catalog writes must survive the control node's crash restarts; one copy at a time, so that
    // big's copy is the only one running when a test strikes.
    start_cluster(kSchema, {"synchronous_commit = on", "pgdog_reshard.parallel_copies = 1"});
    load_config(databases_toml(*source_, dests_, "prod_new") + kProdNewRules, users_toml("prod_new"));
  }

  std::string start_copy() const { return control_->value("SELECT reshard_copy_data('prod', 'prod_new', 'pgdog')"); }

  // A query that may meet the control node while it restarts: "" then.
  std::string safe_value(const std::string &sql) const {
    try {
      return control_->value(sql);
    } catch (const std::exception &) {
      return "";
    }
  }

  int big_attempts(const std::string &task) const {
    return std::stoi(control_->value("SELECT attempts FROM reshard_table_copies WHERE task_id = " + task +
                                     " AND \"table\" = 'big'"));
  }

  // The pid of the control node's process of that backend_type ("" if none runs).
  std::string pid_of(const std::string &backend_type) const {
    return safe_value("SELECT coalesce(max(pid)::text, '') FROM pg_stat_activity WHERE backend_type = '" +
                      backend_type + "'");
  }

  // Until the clients made `n` more writes: the load really runs across the fault.
  static bool advance(const Load &load, long n, int ms = 90000) {
    const long from = load.writes();
    return wait_until([&] { return load.writes() >= from + n; }, ms);
  }

  // Until the task replicates and its stream applied what the load wrote so far, with the load going
  // on: a fault after this strikes the stream at work, not the start of its first catch-up.
  bool wait_streaming(const std::string &task, const Load &load) const {
    return wait_state(task, "replicating", 240000) && wait_caught_up(task, 120000) && advance(load, 500);
  }

  // What a failure message shows: the task, its copies and the control node's log.
  std::string why(const std::string &task) const {
    std::string out = safe_value("SELECT state || ' ' || coalesce(phase, '') || ' ' || coalesce(error, '')"
                                 " FROM reshard_status WHERE id = " + task) + "\n";
    try {
      for (const Row &r : control_->query("SELECT \"table\", state, attempts, rows, coalesce(error, '')"
                                          " FROM reshard_table_copies WHERE task_id = " + task + " ORDER BY 1")) {
        out += "  " + *r[0] + ": " + *r[1] + ", attempts " + *r[2] + ", rows " + *r[3] + " " + *r[4] + "\n";
      }
    } catch (const std::exception &e) {
      out += std::string("  (copies unreadable: ") + e.what() + ")\n";
    }
    return out + "control node log:\n" + control_->log();
  }

  // Stops the load, then waits until the task replicates and its stream confirmed everything the
  // source committed: the destinations must then equal the source.
  void stop_load_and_catch_up(const std::string &task, Load &load) const {
    load.finish();
    ASSERT_TRUE(wait_state(task, "replicating", 240000)) << why(task);
    ASSERT_TRUE(wait_caught_up(task, 180000)) << why(task);
  }

  // The end of every test: reshard_verify finds nothing, and neither do the independent checks
  // (row by row and placement for the load's tables, digests and placement for big).
  void expect_destinations_equal_source() const {
    EXPECT_EQ(verify_differences("prod", "prod_new"), "");
    expect_identical(*source_, dests_);
    expect_big_identical();
  }

  // big (outside kLoadTables, so not in expect_identical): the destinations together hold as many
  // rows as the source, with the same sums of id, of user_id and of every row's hash (sums are
  // order-independent; sum(bigint) is numeric, so none overflows), and each row on its shard.
  void expect_big_identical() const {
    const std::string digest =
        "SELECT count(*), coalesce(sum(id), 0), coalesce(sum(user_id), 0),"
        " coalesce(sum(hash_record_extended(t, 0)), 0) FROM big t";
    Row expected = source_->query(digest).at(0);
    std::string values;
    for (size_t d = 0; d < dests_.size(); d++) {
      Row r = dests_[d]->query(digest).at(0);
      EXPECT_NE(*r[0], "0") << "no row of big on shard " << d;
      values += std::string(d ? ", " : "") + "(" + *r[0] + "::numeric, " + *r[1] + "::numeric, " + *r[2] +
                "::numeric, " + *r[3] + "::numeric)";
      dests_[d]->exec("CREATE TABLE IF NOT EXISTS oracle_bigint (k bigint) PARTITION BY HASH (k)");
      EXPECT_EQ(dests_[d]->value("SELECT count(*) FROM big WHERE NOT satisfies_hash_partition('oracle_bigint'::regclass, " +
                                 std::to_string(dests_.size()) + ", " + std::to_string(d) + ", user_id)"),
                "0")
          << "rows of big on the wrong shard " << d;
    }
    Row total = source_->query("SELECT sum(c), sum(i), sum(u), sum(h) FROM (VALUES " + values + ") v(c, i, u, h)").at(0);
    EXPECT_EQ(*total[0], *expected[0]) << "row count of big";
    EXPECT_EQ(*total[1], *expected[1]) << "sum(id) of big";
    EXPECT_EQ(*total[2], *expected[2]) << "sum(user_id) of big";
    EXPECT_EQ(*total[3], *expected[3]) << "row contents of big differ";
  }
};

TEST_F(ReliabilityFaults, CopyWorkerKilled) {
  Load load(*source_, 3);
  ASSERT_TRUE(advance(load, 100)) << "the clients do not write";
  std::string task = start_copy();
  ASSERT_TRUE(wait_copying(task, "big")) << why(task);

  // The copy worker holding big (the only one: parallel_copies = 1).
  std::string pid = safe_value(
      "SELECT coalesce(max(a.pid)::text, '') FROM pgdog_reshard.table_copies c JOIN pg_stat_activity a"
      " ON a.pid = c.worker_pid AND a.backend_type = 'pgdog_reshard copy' WHERE c.task_id = " + task +
      " AND c.table_name = 'big'");
  ASSERT_NE(pid, "") << "no copy worker holds big\n" << why(task);
  ASSERT_EQ(kill(std::stoi(pid), SIGKILL), 0);

  // The postmaster's crash restart ends every backend; the task resumes by itself and copies big anew.
  ASSERT_TRUE(wait_state(task, "replicating", 240000)) << why(task);
  EXPECT_NE(control_->log().find("terminated by signal 9"), std::string::npos) << why(task);
  EXPECT_GE(big_attempts(task), 2) << "big was not copied again\n" << why(task);
  ASSERT_TRUE(advance(load, 1000)) << "the clients stopped writing";

  ASSERT_NO_FATAL_FAILURE(stop_load_and_catch_up(task, load));
  expect_destinations_equal_source();
}

TEST_F(ReliabilityFaults, LauncherKilled) {
  Load load(*source_, 3);
  ASSERT_TRUE(advance(load, 100)) << "the clients do not write";
  std::string task = start_copy();
  ASSERT_TRUE(wait_copying(task, "big")) << why(task);

  std::string launcher = pid_of("pgdog_reshard launcher");
  ASSERT_NE(launcher, "") << "no launcher runs";
  ASSERT_EQ(kill(std::stoi(launcher), SIGKILL), 0);

  // After the crash restart a new launcher runs and gives the task a worker again.
  std::string relaunched;
  EXPECT_TRUE(wait_until([&] {
    relaunched = pid_of("pgdog_reshard launcher");
    return !relaunched.empty() && relaunched != launcher;
  }, 60000)) << "no new launcher\n" << why(task);
  ASSERT_TRUE(wait_state(task, "replicating", 240000)) << why(task);
  EXPECT_NE(control_->log().find("terminated by signal 9"), std::string::npos) << why(task);
  // The crash restart ended the copy worker too, mid-copy.
  EXPECT_GE(big_attempts(task), 2) << "big was not copied again\n" << why(task);
  ASSERT_TRUE(advance(load, 1000)) << "the clients stopped writing";

  ASSERT_NO_FATAL_FAILURE(stop_load_and_catch_up(task, load));
  expect_destinations_equal_source();
}

TEST_F(ReliabilityFaults, DestinationShardRestartedDuringCopyAndStreaming) {
  Load load(*source_, 3);
  ASSERT_TRUE(advance(load, 100)) << "the clients do not write";
  std::string task = start_copy();
  ASSERT_TRUE(wait_copying(task, "big")) << why(task);

  // Mid-copy: the copy of big fails on shard 1 and is retried.
  dests_[1]->restart("immediate");
  ASSERT_TRUE(wait_state(task, "replicating", 240000)) << why(task);
  EXPECT_GE(big_attempts(task), 2) << "big was not copied again\n" << why(task);

  // Mid-streaming, once the stream applies the load: its changes to shard 1 fail until it is back,
  // and must then arrive once.
  ASSERT_TRUE(wait_streaming(task, load)) << why(task);
  dests_[1]->restart("immediate");
  ASSERT_TRUE(advance(load, 1000)) << "the clients stopped writing";

  ASSERT_NO_FATAL_FAILURE(stop_load_and_catch_up(task, load));
  expect_destinations_equal_source();
}

TEST_F(ReliabilityFaults, SourceRestartedDuringStreaming) {
  Load load(*source_, 3);
  ASSERT_TRUE(advance(load, 100)) << "the clients do not write";
  std::string task = start_copy();
  ASSERT_TRUE(wait_streaming(task, load)) << why(task);

  // Immediate: the slot's position on disk may lag what the stream had confirmed, so the source
  // sends again changes the destinations already have; they must not be applied twice.
  const long errors = load.errors();
  source_->restart("immediate");
  ASSERT_TRUE(advance(load, 1000)) << "the clients did not reconnect";
  EXPECT_GT(load.errors(), errors) << "the clients did not notice the restart";

  ASSERT_NO_FATAL_FAILURE(stop_load_and_catch_up(task, load));
  expect_destinations_equal_source();
}

TEST_F(ReliabilityFaults, DestinationStalledTwentySeconds) {
  Load load(*source_, 3);
  ASSERT_TRUE(advance(load, 100)) << "the clients do not write";
  std::string task = start_copy();
  ASSERT_TRUE(wait_streaming(task, load)) << why(task);

  {
    Frozen frozen(*dests_[0]);
    ASSERT_GE(frozen.size(), 2u) << "found no process of " << dests_[0]->name() << " to stop";
    ASSERT_TRUE(wait_until([&] { return frozen.all_stopped(); }, 5000)) << "not every process stopped";
    // The source keeps committing while shard 0 hangs.
    ASSERT_TRUE(advance(load, 200)) << "the clients stopped writing";
    const std::string committed = source_->value(kCommittedWalEndSql);
    std::this_thread::sleep_for(std::chrono::seconds(20));
    EXPECT_TRUE(frozen.all_stopped()) << "a process of " << dests_[0]->name() << " ran during the stall";
    // The stall did hold the stream up: nothing the frozen shard cannot have applied is confirmed.
    EXPECT_EQ(source_->value("SELECT count(*) FROM pg_replication_slots WHERE NOT temporary AND confirmed_flush_lsn >= '" +
                             committed + "'"),
              "0")
        << "the source's slot confirmed changes shard 0 could not have applied";
  }
  ASSERT_TRUE(advance(load, 1000)) << "the clients stopped writing";

  ASSERT_NO_FATAL_FAILURE(stop_load_and_catch_up(task, load));
  expect_destinations_equal_source();
}

}  // namespace
}  // namespace pgdog_reshard::test
