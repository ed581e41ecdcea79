// Connection (src/core/pg.h) against a real PostgreSQL 15 instance: queries, server errors, failed
// connections, binary COPY both ways, and cancellation through the waiter.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "expect_error.h"
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "core/lsn.h"
#include "core/pg.h"
#include "harness.h"

namespace pgdog_reshard {
namespace {

using test::InstanceOptions;
using test::PgInstance;
using Clock = std::chrono::steady_clock;

constexpr const char *kPwUser = "pw_user";
constexpr const char *kRightPassword = "Right-Secret-7f3a";
constexpr const char *kWrongPassword = "Wrong-Secret-91c2";

bool has(const std::string &text, const std::string &needle) {
  return text.find(needle) != std::string::npos;
}

// A loopback socket that listens but never answers: a peer that accepts TCP and then stalls.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr *>(&addr), len) != 0 ||
        listen(fd_, 8) != 0 || getsockname(fd_, reinterpret_cast<sockaddr *>(&addr), &len) != 0) {
      throw std::runtime_error(std::string("listener: ") + std::strerror(errno));
    }
    port_ = ntohs(addr.sin_port);
  }
  ~SilentListener() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A port nothing listens on: bound once to learn a free number, then released.
int unused_port() {
  SilentListener probe;
  return probe.port();
}

class PgConnection : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    InstanceOptions options;
    options.name = "pg_connection";
    options.hba_lines = {std::string("host all ") + kPwUser + " 127.0.0.1/32 scram-sha-256"};
    instance_ = std::make_unique<PgInstance>(options);
    instance_->exec(std::string("CREATE ROLE ") + kPwUser + " LOGIN PASSWORD '" + kRightPassword +
                    "'");
    instance_->exec(
        "CREATE TABLE big AS"
        " SELECT g AS id, md5(g::text) AS label FROM generate_series(1, 100000) g");
  }
  static void TearDownTestSuite() { instance_.reset(); }

  static ConnParams params(const std::string &user = "postgres") {
    ConnParams p;
    p.host = instance_->host();
    p.port = instance_->port();
    p.dbname = "postgres";
    p.user = user;
    p.application_name = "pg_connection_test";
    return p;
  }
  static std::string location() {
    return instance_->host() + ":" + std::to_string(instance_->port()) + "/postgres";
  }
  static int backend_count(int pid) {
    return std::stoi(instance_->value("SELECT count(*) FROM pg_stat_activity WHERE pid = " +
                                      std::to_string(pid)));
  }

  static std::unique_ptr<PgInstance> instance_;
  PollWaiter waiter_;
};

std::unique_ptr<PgInstance> PgConnection::instance_;

TEST_F(PgConnection, ConnectsAndRunsQueriesWithParamsAndNulls) {
  Connection conn(params(), waiter_);
  ASSERT_TRUE(conn.is_open());
  EXPECT_GE(conn.server_version(), 150000);
  EXPECT_GE(conn.socket(), 0);

  Result res = conn.exec("SELECT 1 AS one, NULL::text AS nothing, 'x'::text AS \"Mixed\"");
  ASSERT_EQ(res.rows(), 1);
  ASSERT_EQ(res.columns(), 3);
  EXPECT_EQ(res.value(0, 0), "1");
  EXPECT_TRUE(res.is_null(0, 1));
  EXPECT_EQ(res.value(0, 1), "");
  EXPECT_EQ(res.get(0, 1), std::nullopt);
  EXPECT_EQ(res.get(0, 2), "x");
  EXPECT_EQ(res.column_index("Mixed"), 2);
  EXPECT_EQ(res.column_index("mixed"), -1);  // exact names, unlike PQfnumber
  EXPECT_EQ(res.command_tag(), "SELECT 1");

  // Parameters travel apart from the SQL text: quotes and semicolons are plain data.
  Result typed = conn.exec_params("SELECT $1::int + 1, $2::text IS NULL, $3::text",
                                  {"41", std::nullopt, "it's; DROP TABLE big"});
  EXPECT_EQ(typed.value(0, 0), "42");
  EXPECT_EQ(typed.value(0, 1), "t");
  EXPECT_EQ(typed.get(0, 2), "it's; DROP TABLE big");

  conn.exec("CREATE TEMP TABLE kv (k int PRIMARY KEY, v text)");
  EXPECT_EQ(conn.exec_params("INSERT INTO kv VALUES ($1, $2)", {"1", std::nullopt}).command_tag(),
            "INSERT 0 1");
  Result stored = conn.exec("SELECT v FROM kv WHERE k = 1");
  EXPECT_TRUE(stored.is_null(0, 0));
}

TEST_F(PgConnection, MultiStatementReturnsLastResultAndFirstErrorWins) {
  Connection conn(params(), waiter_);
  Result last = conn.exec(
      "CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (1), (2); SELECT count(*) FROM t");
  EXPECT_EQ(last.value(0, 0), "2");

  Error e = error_of([&] { conn.exec("SELECT 1; SELECT 1/0; SELECT no_such_column FROM t"); });
  EXPECT_EQ(e.sqlstate(), "22012");  // division_by_zero, not the later 42703
  EXPECT_TRUE(conn.is_open());
  EXPECT_EQ(conn.exec("SELECT 'still usable'").value(0, 0), "still usable");
}

TEST_F(PgConnection, ServerErrorCarriesSqlstateDetailHintAndLocation) {
  Connection conn(params(), waiter_);
  Error raised = error_of([&] {
    conn.exec(
        "DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING ERRCODE = '22023', "
        "DETAIL = 'the facts', HINT = 'the fix'; END $$");
  });
  EXPECT_EQ(raised.sqlstate(), "22023");
  EXPECT_EQ(std::string(raised.what()), location() + ": custom failure");
  EXPECT_EQ(raised.detail(), "the facts");
  EXPECT_EQ(raised.hint(), "the fix");

  Error missing = error_of([&] { conn.exec("SELECT * FROM no_such_table"); });
  EXPECT_EQ(missing.sqlstate(), "42P01");
  EXPECT_EQ(std::string(missing.what()),
            location() + ": relation \"no_such_table\" does not exist");

  Error in_params = error_of([&] { conn.exec_params("SELECT $1::int", {"abc"}); });
  EXPECT_EQ(in_params.sqlstate(), "22P02");
  EXPECT_TRUE(conn.is_open());
}

TEST_F(PgConnection, UniqueViolationIs23505WithDetail) {
  Connection conn(params(), waiter_);
  conn.exec("CREATE TEMP TABLE u (id int PRIMARY KEY)");
  conn.exec("INSERT INTO u VALUES (1)");
  Error e = error_of([&] { conn.exec("INSERT INTO u VALUES (1)"); });
  EXPECT_EQ(e.sqlstate(), "23505");
  EXPECT_TRUE(has(e.what(), "duplicate key value violates unique constraint \"u_pkey\""))
      << e.what();
  EXPECT_EQ(e.detail(), "Key (id)=(1) already exists.");
}

TEST_F(PgConnection, WrongPasswordIs28P01AndNeverShowsThePassword) {
  ConnParams wrong = params(kPwUser);
  wrong.password = kWrongPassword;
  Error e = error_of([&] { Connection conn(wrong, waiter_); });
  EXPECT_EQ(e.sqlstate(), "28P01") << e.what();
  EXPECT_TRUE(has(e.what(), wrong.describe())) << e.what();
  EXPECT_TRUE(has(e.what(), "password authentication failed")) << e.what();
  for (const std::string &text : {std::string(e.what()), e.detail(), e.hint(), wrong.describe()}) {
    EXPECT_FALSE(has(text, kWrongPassword)) << text;
  }

  ConnParams none = params(kPwUser);  // the server asks, and there is nothing to give
  EXPECT_EQ(error_of([&] { Connection conn(none, waiter_); }).sqlstate(), "28P01");

  ConnParams right = params(kPwUser);
  right.password = kRightPassword;
  Connection conn(right, waiter_);
  EXPECT_EQ(conn.exec("SELECT current_user").value(0, 0), kPwUser);
}

TEST_F(PgConnection, UnreachablePortIs08001NamingTheTarget) {
  ConnParams p = params();
  p.port = unused_port();
  p.password = "Unused-Secret-55";
  Error e = error_of([&] { Connection conn(p, waiter_); });
  EXPECT_EQ(e.sqlstate(), "08001");
  EXPECT_TRUE(has(e.what(), p.describe())) << e.what();
  EXPECT_TRUE(has(e.what(), "Connection refused")) << e.what();
  EXPECT_FALSE(has(e.what(), p.password));
}

TEST_F(PgConnection, DbnameIsNeverParsedAsConninfo) {
  ConnParams p = params();
  p.dbname = "postgres user=evil";  // with expand_dbname = 0 this is just a strange name
  Error e = error_of([&] { Connection conn(p, waiter_); });
  EXPECT_EQ(e.sqlstate(), "08001");
  EXPECT_TRUE(has(e.what(), "database \"postgres user=evil\" does not exist")) << e.what();
}

TEST_F(PgConnection, SilentServerTimesOutAs08001) {
  SilentListener silent;
  ConnParams p = params();
  p.port = silent.port();
  p.connect_timeout_s = 1;
  auto start = Clock::now();
  Error e = error_of([&] { Connection conn(p, waiter_); });
  auto elapsed = Clock::now() - start;
  EXPECT_EQ(e.sqlstate(), "08001");
  EXPECT_TRUE(has(e.what(), "timeout expired")) << e.what();
  EXPECT_LT(elapsed, std::chrono::seconds(3));
}

TEST_F(PgConnection, WaiterStopInterruptsConnect) {
  SilentListener silent;
  ConnParams p = params();
  p.port = silent.port();
  auto start = Clock::now();
  PollWaiter stopping([&] { return Clock::now() - start > std::chrono::milliseconds(300); });
  Error e = error_of([&] { Connection conn(p, stopping); });
  EXPECT_EQ(e.sqlstate(), "57014");
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
}

TEST_F(PgConnection, CopyOutStreams100kBinaryRowsInChunks) {
  Connection conn(params(), waiter_);
  size_t chunks = 0, bytes = 0, largest = 0;
  std::string head;
  auto count = [&](const char *data, size_t len) {
    if (chunks++ == 0) head.assign(data, len < 11 ? len : 11);
    bytes += len;
    largest = std::max(largest, len);
  };
  uint64_t rows = conn.copy_out("COPY big TO STDOUT (FORMAT binary)", count);
  EXPECT_EQ(rows, 100000u);
  EXPECT_GE(chunks, 100000u);  // one CopyData per row: streamed, never gathered
  EXPECT_LT(largest, 1024u);
  EXPECT_EQ(head, std::string("PGCOPY\n\377\r\n\0", 11));  // the binary COPY signature
  EXPECT_GT(bytes, 100000u * 40);

  std::string text;
  uint64_t three = conn.copy_out("COPY (SELECT g FROM generate_series(1, 3) g) TO STDOUT",
                                 [&](const char *data, size_t len) { text.append(data, len); });
  EXPECT_EQ(three, 3u);
  EXPECT_EQ(text, "1\n2\n3\n");
  EXPECT_EQ(conn.exec("SELECT 'after copy'").value(0, 0), "after copy");  // back to normal
}

TEST_F(PgConnection, CopyOutServerErrorKeepsConnectionUsable) {
  Connection conn(params(), waiter_);
  Error e = error_of([&] {
    conn.copy_out("COPY (SELECT 1 / (g - 50000) FROM generate_series(1, 60000) g) TO STDOUT",
                  [](const char *, size_t) {});
  });
  EXPECT_EQ(e.sqlstate(), "22012");
  EXPECT_TRUE(conn.is_open());
  EXPECT_EQ(conn.exec("SELECT 1").value(0, 0), "1");
}

TEST_F(PgConnection, CopyInBinaryRoundTrip) {
  instance_->exec(
      "CREATE TABLE rt_src (id bigint, label text, amount numeric, at timestamptz, tags int[]);"
      "INSERT INTO rt_src SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE md5(g::text) END,"
      "  g * 1.25, '2024-01-01'::timestamptz + g * interval '1 minute', ARRAY[g, g + 1]"
      "  FROM generate_series(1, 50000) g;"
      "CREATE TABLE rt_dst (LIKE rt_src)");
  Connection source(params(), waiter_);
  Connection destination(params(), waiter_);

  destination.copy_in_begin("COPY rt_dst FROM STDIN (FORMAT binary)");
  uint64_t out_rows = source.copy_out("COPY rt_src TO STDOUT (FORMAT binary)",
                                      [&](const char *data, size_t len) {
                                        destination.copy_in_put(data, len);
                                      });
  uint64_t in_rows = destination.copy_in_end();
  EXPECT_EQ(out_rows, 50000u);
  EXPECT_EQ(in_rows, 50000u);

  Result diff = source.exec(
      "SELECT (SELECT count(*) FROM (TABLE rt_src EXCEPT ALL TABLE rt_dst) a),"
      "       (SELECT count(*) FROM (TABLE rt_dst EXCEPT ALL TABLE rt_src) b),"
      "       (SELECT count(*) FROM rt_dst WHERE label IS NULL)");
  EXPECT_EQ(diff.value(0, 0), "0");
  EXPECT_EQ(diff.value(0, 1), "0");
  EXPECT_EQ(diff.value(0, 2), "7142");  // NULLs survived the trip
}

TEST_F(PgConnection, CopyInAbortLeavesTableEmpty) {
  instance_->exec("CREATE TABLE aborted (id int, label text)");
  Connection conn(params(), waiter_);
  conn.copy_in_begin("COPY aborted FROM STDIN");
  for (int i = 0; i < 1000; ++i) {
    std::string row = std::to_string(i) + "\trow " + std::to_string(i) + "\n";
    conn.copy_in_put(row.data(), row.size());
  }
  conn.copy_in_abort("the test changed its mind");
  EXPECT_TRUE(conn.is_open());
  EXPECT_EQ(conn.exec("SELECT count(*) FROM aborted").value(0, 0), "0");
  EXPECT_EQ(instance_->value("SELECT count(*) FROM aborted"), "0");
}

TEST_F(PgConnection, CopyInBadDataReportsServerError) {
  Connection conn(params(), waiter_);
  conn.exec("CREATE TEMP TABLE typed (id int)");
  conn.copy_in_begin("COPY typed FROM STDIN");
  std::string rows = "1\nnot-a-number\n3\n";
  conn.copy_in_put(rows.data(), rows.size());
  Error e = error_of([&] { conn.copy_in_end(); });
  EXPECT_EQ(e.sqlstate(), "22P02");
  EXPECT_TRUE(has(e.what(), location() + ": invalid input syntax for type integer")) << e.what();
  EXPECT_EQ(conn.exec("SELECT count(*) FROM typed").value(0, 0), "0");
}

TEST_F(PgConnection, WaiterStopCancelsQueryAndClosesConnection) {
  std::atomic<bool> armed{false};
  Clock::time_point started;
  PollWaiter stopping([&] {
    return armed.load() && Clock::now() - started > std::chrono::milliseconds(300);
  });
  Connection conn(params(), stopping);
  int pid = std::stoi(std::string(conn.exec("SELECT pg_backend_pid()").value(0, 0)));
  ASSERT_EQ(backend_count(pid), 1);

  started = Clock::now();
  armed = true;
  Error e = error_of([&] { conn.exec("SELECT pg_sleep(30)"); });
  auto elapsed = Clock::now() - started;
  EXPECT_EQ(e.sqlstate(), "57014");
  EXPECT_LT(elapsed, std::chrono::seconds(2));
  EXPECT_FALSE(conn.is_open());
  EXPECT_TRUE(test::wait_until([&] { return backend_count(pid) == 0; }, 5000))
      << "the backend still runs the cancelled query";
  EXPECT_EQ(error_of([&] { conn.exec("SELECT 1"); }).sqlstate(), "08003");
}

TEST_F(PgConnection, CancelFromAnotherThreadKeepsConnectionOpen) {
  Connection conn(params(), waiter_);
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    conn.cancel();
  });
  auto start = Clock::now();
  Error e = error_of([&] { conn.exec("SELECT pg_sleep(30)"); });
  canceller.join();
  EXPECT_EQ(e.sqlstate(), "57014");  // the server's own query_canceled
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(conn.is_open());
  EXPECT_EQ(conn.exec("SELECT 1").value(0, 0), "1");
}

TEST_F(PgConnection, FailingCopyCallbackClosesConnectionAndEndsBackend) {
  Connection conn(params(), waiter_);
  int pid = std::stoi(std::string(conn.exec("SELECT pg_backend_pid()").value(0, 0)));
  size_t seen = 0;
  EXPECT_THROW(conn.copy_out("COPY big TO STDOUT (FORMAT binary)",
                             [&](const char *, size_t) {
                               if (++seen == 10) throw std::runtime_error("consumer failed");
                             }),
               std::runtime_error);
  EXPECT_FALSE(conn.is_open());
  EXPECT_TRUE(test::wait_until([&] { return backend_count(pid) == 0; }, 5000));
}

TEST_F(PgConnection, ReplicationConnectionRunsIdentifySystem) {
  ConnParams p = params();
  p.replication = true;
  EXPECT_TRUE(has(p.describe(), "replication=database"));
  Connection conn(p, waiter_);
  Result res = conn.exec("IDENTIFY_SYSTEM");
  ASSERT_EQ(res.rows(), 1);
  int xlogpos = res.column_index("xlogpos");
  ASSERT_GE(xlogpos, 0);
  auto lsn = Lsn::parse(res.value(0, xlogpos));
  ASSERT_TRUE(lsn.has_value()) << res.value(0, xlogpos);
  EXPECT_TRUE(lsn->is_valid());
  EXPECT_EQ(lsn->to_string(), res.value(0, xlogpos));
  EXPECT_EQ(res.get(0, res.column_index("dbname")), "postgres");
}

TEST_F(PgConnection, OptionsCannotOverrideFields) {
  ConnParams p = params();
  p.options = {{"sslmode", "disable"}};
  Connection ok(p, waiter_);
  EXPECT_TRUE(ok.is_open());
  p.options = {{"dbname", "other"}};
  EXPECT_EQ(error_of([&] { Connection conn(p, waiter_); }).sqlstate(), "22023");
}

}  // namespace
}  // namespace pgdog_reshard
