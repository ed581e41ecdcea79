// parse_conninfo (core/pg.h) and the cutover command (engine/cutover_command.h): expansion, and
// runs of real /bin/sh commands (exit codes, captured output, interrupts).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "core/pg.h"
#include "engine/cutover_command.h"
#include "engine/task_context.h"
#include "expect_error.h"

namespace pgdog_reshard {
namespace {

using Clock = std::chrono::steady_clock;

bool has(const std::string &text, const std::string &needle) {
  return text.find(needle) != std::string::npos;
}

std::string option(const ConnParams &params, const std::string &key) {
  for (const auto &[k, v] : params.options) {
    if (k == key) return v;
  }
  return "<absent>";
}

// ---------------------------------------------------------------------------------------------
// parse_conninfo

TEST(Conninfo, KeywordFormFillsTheFields) {
  ConnParams p = parse_conninfo(
      "host=10.0.0.7 port=6432 dbname=pgbouncer user=admin password=s3cr3t "
      "application_name=cutover connect_timeout=5");
  EXPECT_EQ(p.host, "10.0.0.7");
  EXPECT_EQ(p.port, 6432);
  EXPECT_EQ(p.dbname, "pgbouncer");
  EXPECT_EQ(p.user, "admin");
  EXPECT_EQ(p.password, "s3cr3t");
  EXPECT_EQ(p.application_name, "cutover");
  EXPECT_EQ(p.connect_timeout_s, 5);
  EXPECT_FALSE(p.replication);
  EXPECT_TRUE(p.options.empty());
  EXPECT_EQ(p.describe(), "host=10.0.0.7 port=6432 dbname=pgbouncer user=admin");
}

TEST(Conninfo, UriFormFillsTheFields) {
  ConnParams p = parse_conninfo(
      "postgresql://admin:s%40cret@proxy.internal:6433/admin?sslmode=disable&connect_timeout=3");
  EXPECT_EQ(p.host, "proxy.internal");
  EXPECT_EQ(p.port, 6433);
  EXPECT_EQ(p.dbname, "admin");
  EXPECT_EQ(p.user, "admin");
  EXPECT_EQ(p.password, "s@cret");  // percent-decoded
  EXPECT_EQ(p.connect_timeout_s, 3);
  EXPECT_EQ(option(p, "sslmode"), "disable");
  EXPECT_EQ(p.options.size(), 1u);

  ConnParams short_form = parse_conninfo("postgres://127.0.0.1/pgbouncer");
  EXPECT_EQ(short_form.host, "127.0.0.1");
  EXPECT_EQ(short_form.dbname, "pgbouncer");
  EXPECT_EQ(short_form.port, 5432);
}

TEST(Conninfo, UnsetFieldsKeepTheDefaults) {
  ConnParams defaults;
  ConnParams p = parse_conninfo("host=proxy");
  EXPECT_EQ(p.host, "proxy");
  EXPECT_EQ(p.port, defaults.port);
  EXPECT_EQ(p.application_name, defaults.application_name);
  EXPECT_EQ(p.connect_timeout_s, defaults.connect_timeout_s);
  EXPECT_TRUE(p.dbname.empty());
  EXPECT_TRUE(p.user.empty());
  EXPECT_TRUE(p.password.empty());
  EXPECT_TRUE(p.options.empty());
  EXPECT_TRUE(parse_conninfo("").options.empty());
}

TEST(Conninfo, OtherKeywordsGoToOptions) {
  ConnParams p = parse_conninfo(
      "host=proxy sslmode=require keepalives=1 hostaddr=127.0.0.1 options='-c a=b' "
      "target_session_attrs=any");
  EXPECT_EQ(option(p, "sslmode"), "require");
  EXPECT_EQ(option(p, "keepalives"), "1");
  EXPECT_EQ(option(p, "hostaddr"), "127.0.0.1");
  EXPECT_EQ(option(p, "options"), "-c a=b");
  EXPECT_EQ(option(p, "target_session_attrs"), "any");
  EXPECT_EQ(p.options.size(), 5u);
  for (const auto &[key, value] : p.options) {
    EXPECT_NE(key, "host");
    EXPECT_NE(key, "port");
  }
}

TEST(Conninfo, EmptyValuesAreIgnoredAndQuotingIsLibpqs) {
  ConnParams p = parse_conninfo("host=proxy sslmode='' password='a b\\'c\\\\d' user = 'x'");
  EXPECT_EQ(option(p, "sslmode"), "<absent>");
  EXPECT_EQ(p.password, "a b'c\\d");
  EXPECT_EQ(p.user, "x");
}

TEST(Conninfo, RejectsWhatLibpqRejects) {
  Error unknown = error_of([] { parse_conninfo("host=proxy bogus_keyword=1"); });
  EXPECT_EQ(unknown.sqlstate(), "22023");
  EXPECT_TRUE(has(unknown.what(), "invalid proxy conninfo: ")) << unknown.what();
  EXPECT_TRUE(has(unknown.what(), "bogus_keyword")) << unknown.what();  // no password: all shown

  Error missing = error_of([] { parse_conninfo("host proxy"); });
  EXPECT_EQ(missing.sqlstate(), "22023");
  EXPECT_TRUE(has(missing.what(), "missing \"=\" after \"host\"")) << missing.what();

  EXPECT_EQ(error_of([] { parse_conninfo("host='unterminated"); }).sqlstate(), "22023");
  EXPECT_EQ(error_of([] { parse_conninfo("postgresql://[::1"); }).sqlstate(), "22023");
}

TEST(Conninfo, RejectsPortsThatAreNotOnePort) {
  for (const char *bad :
       {"port=abc", "port=6432,6433", "port=0", "port=70000", "port=12x", "port=-1"}) {
    Error e = error_of([&] { parse_conninfo(std::string("host=proxy ") + bad); });
    EXPECT_EQ(e.sqlstate(), "22023") << bad;
    EXPECT_TRUE(has(e.what(), "invalid proxy conninfo: port")) << e.what();
  }
  Error timeout = error_of([] { parse_conninfo("host=proxy connect_timeout=soon"); });
  EXPECT_TRUE(has(timeout.what(), "connect_timeout")) << timeout.what();
  Error replication = error_of([] { parse_conninfo("host=proxy replication=database"); });
  EXPECT_EQ(replication.sqlstate(), "22023");
  EXPECT_TRUE(has(replication.what(), "replication")) << replication.what();
}

TEST(Conninfo, ErrorsNeverShowThePassword) {
  const char *const cases[] = {
      "host=proxy password=Tops3cretPw bogus=1",
      "host=proxy password=Tops3cretPw bogus",
      "host=proxy password=Tops3cret Pw",     // unquoted space: "Pw" has no '='
      "host=proxy password='Tops3cretPw",     // unterminated quote
      "password=x Tops3cretPw=1",             // a piece of it as a keyword
      "postgresql://admin:Tops3cretPw@[::1",  // libpq quotes the whole URI
      "postgresql://admin:Tops3cretPw@proxy/db?bogus=1",
      "postgresql://admin:Tops3cretPw@proxy/db?sslmode",
      "postgresql://admin:Tops3cretPw@proxy:x/db",
      "postgresql://admin:Tops3cretPw%zz@proxy/db",
      "postgresql://admin@proxy/db?password=Tops3cretPw&bogus=1",
      "host=proxy password=Tops3cretPw port=notaport",
      "host=proxy password=\"Tops3cretPw\" bogus",  // a double quote in the password
  };
  for (const char *conninfo : cases) {
    Error e = error_of([&] { parse_conninfo(conninfo); });
    EXPECT_EQ(e.sqlstate(), "22023") << conninfo;
    const std::string all = std::string(e.what()) + "|" + e.detail() + "|" + e.hint();
    EXPECT_TRUE(has(all, "invalid proxy conninfo: ")) << all;
    EXPECT_FALSE(has(all, "Tops3cret")) << conninfo << " -> " << all;
    EXPECT_FALSE(has(all, "3cretPw")) << conninfo << " -> " << all;
  }
}

// ---------------------------------------------------------------------------------------------
// expand_cutover_command

TEST(CutoverCommand, ExpandsThePlaceholders) {
  EXPECT_EQ(expand_cutover_command("/usr/local/bin/switch --task %t --from %s --to %d", 42, "prod",
                                   "prod_v2"),
            "/usr/local/bin/switch --task 42 --from 'prod' --to 'prod_v2'");
  EXPECT_EQ(expand_cutover_command("%t%t", 7, "a", "b"), "77");
  EXPECT_EQ(expand_cutover_command("", 1, "a", "b"), "");
  EXPECT_EQ(expand_cutover_command("no placeholders", 1, "a", "b"), "no placeholders");
}

TEST(CutoverCommand, KeepsUnknownPlaceholdersAndExpandsPercentPercent) {
  EXPECT_EQ(expand_cutover_command("100%% %x %T %", 1, "a", "b"), "100% %x %T %");
  EXPECT_EQ(expand_cutover_command("%%s", 1, "src", "dst"), "%s");  // %% first, then a plain s
  EXPECT_EQ(expand_cutover_command("%%%s", 1, "src", "dst"), "%'src'");
  EXPECT_EQ(expand_cutover_command("date +%Y-%m-%d", 1, "a", "dst"), "date +%Y-%m-'dst'");
}

TEST(CutoverCommand, QuotesValuesForTheShell) {
  EXPECT_EQ(expand_cutover_command("%s", 1, "it's", ""), "'it'\\''s'");
  EXPECT_EQ(expand_cutover_command("%d", 1, "", ""), "''");
  EXPECT_EQ(expand_cutover_command("%s", 1, "$(rm -rf /)", ""), "'$(rm -rf /)'");
}

// A temporary directory for files the commands write.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/pgdog_reshard_unit.XXXXXX";
    path_ = mkdtemp(pattern);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string &name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string read_file(const std::string &path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Dead: gone, or a zombie nobody reaped yet.
bool process_dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  if (text.empty()) return true;
  const size_t paren = text.rfind(')');
  return paren == std::string::npos || paren + 2 >= text.size() || text[paren + 2] == 'Z' ||
         text[paren + 2] == 'X';
}

bool wait_dead(pid_t pid, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!process_dead(pid)) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

pid_t read_pid(const std::string &path) {
  std::string text;
  for (int i = 0; i < 500 && text.empty(); ++i) {
    text = read_file(path);
    if (text.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return static_cast<pid_t>(std::atol(text.c_str()));
}

TEST(CutoverCommand, ExpandedValuesReachTheCommandVerbatim) {
  TempDir dir;
  SimpleTaskContext ctx;
  const std::string tricky = "a'b \"c\" $(echo injected) `x` ; | & \\ *";
  run_cutover_command(
      expand_cutover_command("printf '%%s|%%s|%%s' %t %s %d > " + dir.file("out"), 9, tricky, "d"),
      ctx);
  EXPECT_EQ(read_file(dir.file("out")), "9|" + tricky + "|d");
}

TEST(CutoverCommand, ExitZeroReturns) {
  SimpleTaskContext ctx;
  std::vector<std::string> logs;
  SimpleTaskContext logging({}, [&](LogLevel, const std::string &line) { logs.push_back(line); });
  run_cutover_command("true", ctx);
  run_cutover_command("echo lots of output; echo more >&2; exit 0", logging);
  EXPECT_FALSE(logs.empty());
}

TEST(CutoverCommand, NonZeroExitThrowsWithTheOutputInTheDetail) {
  SimpleTaskContext ctx;
  Error e = error_of([&] {
    run_cutover_command("echo 'first line'; echo 'to stderr' >&2; echo last; exit 3", ctx);
  });
  EXPECT_EQ(e.sqlstate(), "38000");
  EXPECT_STREQ(e.what(), "cutover_command failed with exit code 3");
  EXPECT_EQ(e.detail(), "first line\nto stderr\nlast");
  EXPECT_EQ(e.hint(), "The cutover was aborted: traffic stays on the source cluster.");

  Error silent = error_of([&] { run_cutover_command("exit 1", ctx); });
  EXPECT_STREQ(silent.what(), "cutover_command failed with exit code 1");
  EXPECT_EQ(silent.detail(), "The command printed nothing.");

  Error missing = error_of([&] { run_cutover_command("/nonexistent/switch-proxy", ctx); });
  EXPECT_STREQ(missing.what(), "cutover_command failed with exit code 127");
  EXPECT_TRUE(has(missing.detail(), "/nonexistent/switch-proxy")) << missing.detail();
}

TEST(CutoverCommand, ASignalIsReported) {
  SimpleTaskContext ctx;
  Error e = error_of([&] { run_cutover_command("echo bye; kill -TERM $$", ctx); });
  EXPECT_EQ(e.sqlstate(), "38000");
  EXPECT_STREQ(e.what(), "cutover_command was terminated by signal 15");
  EXPECT_EQ(e.detail(), "bye");
}

TEST(CutoverCommand, KeepsOnlyTheLastLinesOfALongOutput) {
  SimpleTaskContext ctx;
  Error e = error_of([&] {
    run_cutover_command("i=0; while [ $i -lt 5000 ]; do echo line $i; i=$((i+1)); done; exit 2",
                        ctx);
  });
  EXPECT_STREQ(e.what(), "cutover_command failed with exit code 2");
  EXPECT_LE(e.detail().size(), 4096u);
  EXPECT_TRUE(has(e.detail(), "line 4999")) << e.detail();
  EXPECT_FALSE(has(e.detail(), "line 4000")) << e.detail();
  EXPECT_LE(std::count(e.detail().begin(), e.detail().end(), '\n'), 20);
}

TEST(CutoverCommand, OutputIsMadeSafeForAServerMessage) {
  SimpleTaskContext ctx;
  Error e =
      error_of([&] { run_cutover_command("printf 'caf\\303\\251 \\377\\001end'; exit 1", ctx); });
  EXPECT_EQ(e.detail(), "caf\xc3\xa9 ??end");
}

TEST(CutoverCommand, StdinIsEmpty) {
  SimpleTaskContext ctx;
  Error e = error_of([&] { run_cutover_command("cat; read line || echo eof; exit 5", ctx); });
  EXPECT_STREQ(e.what(), "cutover_command failed with exit code 5");
  EXPECT_EQ(e.detail(), "eof");
}

TEST(CutoverCommand, AnInterruptKillsTheProcessGroup) {
  TempDir dir;
  std::atomic<bool> stop{false};
  SimpleTaskContext ctx([&] { return stop.load(); });
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop = true;
  });
  const auto started = Clock::now();
  Error e = error_of(
      [&] { run_cutover_command("sleep 60 & echo $! > " + dir.file("pid") + "; wait", ctx); });
  stopper.join();
  EXPECT_EQ(e.sqlstate(), "57014");
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(30));  // not the 60 s of the sleep
  const pid_t sleeper = read_pid(dir.file("pid"));
  ASSERT_GT(sleeper, 0);
  EXPECT_TRUE(wait_dead(sleeper, 5000)) << "the shell's background sleep survived the interrupt";
  if (!process_dead(sleeper)) kill(sleeper, SIGKILL);
}

TEST(CutoverCommand, DoesNotWaitForWhatTheShellLeftRunning) {
  TempDir dir;
  SimpleTaskContext ctx;
  const auto started = Clock::now();
  // The background sleep inherits the output pipe: waiting for EOF would take its 60 s.
  run_cutover_command("sleep 60 & echo $! > " + dir.file("pid") + "; exit 0", ctx);
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(30));
  const pid_t sleeper = read_pid(dir.file("pid"));
  if (sleeper > 0) kill(sleeper, SIGKILL);
}

}  // namespace
}  // namespace pgdog_reshard
