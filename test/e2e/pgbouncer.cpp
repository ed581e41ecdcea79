// The PgBouncer harness (pgbouncer.h): a PgBouncer child process per object, cleaned up on every
// way out of a test process.
#include "pgbouncer.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include "harness.h"

namespace pgdog_reshard::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char *kPgBouncerBinary = "/usr/sbin/pgbouncer";
constexpr const char *kAdminUser = "postgres";
constexpr int kStartAttempts = 5;
constexpr int kStartTimeoutMs = 20000;
constexpr int kStopTimeoutMs = 5000;

std::string read_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

bool has(const std::string &text, const std::string &needle) {
  return text.find(needle) != std::string::npos;
}

std::string tail_lines(const std::string &text, int lines) {
  size_t start = text.size();
  for (int i = 0; i <= lines && start > 0; ++i) {
    const size_t newline = text.rfind('\n', start - 1);
    if (newline == std::string::npos) return text;
    start = newline;
  }
  return text.substr(start + 1);
}

void write_owned_file(const std::string &path, const std::string &content) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();
    if (!out) throw std::runtime_error("cannot write " + path);
  }
  chmod(path.c_str(), 0644);
  give_to_postgres(path);
}

// ---------------------------------------------------------------------------------------------
// Processes.

struct ProcInfo {
  char state = '\0';
  std::string comm;
  unsigned long long start_time = 0;
};

std::optional<ProcInfo> proc_info(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const size_t open = stat.find('(');
  const size_t close = stat.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
  ProcInfo info;
  info.comm = stat.substr(open + 1, close - open - 1);
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  for (int n = 3; fields >> field && n <= 22; ++n) {
    if (n == 3) info.state = field[0];
    if (n == 22) info.start_time = std::strtoull(field.c_str(), nullptr, 10);
  }
  return info;
}

bool dead_state(char state) { return state == 'Z' || state == 'X'; }

// Our own child: polls waitpid on that pid only (the process is a child subreaper, see harness.h).
bool wait_child(pid_t pid, int timeout_ms, int *status) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const pid_t done = waitpid(pid, status, WNOHANG);
    if (done == pid || (done < 0 && errno == ECHILD)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// Between fork and exec only async-signal-safe calls: other threads may hold locks.
[[noreturn]] void exec_pgbouncer(char *const *argv, const char *cwd, int out_fd, pid_t parent,
                                 const std::optional<OsUser> &user) {
  setpgid(0, 0);  // a terminal's Ctrl-C must not shut it down before the harness does
  if (user) {
    const gid_t gid = user->gid;
    if (setgroups(1, &gid) != 0 || setgid(user->gid) != 0 || setuid(user->uid) != 0) _exit(126);
  }
  // After setuid (a credential change clears it): SIGTERM when the thread that forked us exits.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1);  // the parent died before prctl
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  const int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd >= 0) dup2(null_fd, 0);
  dup2(out_fd, 1);
  dup2(out_fd, 2);
  if (close_range(3, ~0U, 0) != 0) {
    for (int fd = 3; fd < 65536; ++fd) close(fd);
  }
  if (chdir(cwd) == 0) execv(kPgBouncerBinary, argv);
  const char msg[] = "pgbouncer harness: cannot chdir/exec /usr/sbin/pgbouncer\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(127);
}

// ---------------------------------------------------------------------------------------------
// Live PgBouncers, for the exit handler; stale directories of dead test processes.

std::mutex g_mutex;
std::set<PgBouncer *> g_live;
bool g_atexit_installed = false;
pid_t g_swept_pid = 0;

unsigned long long own_start_time() {
  const auto info = proc_info(getpid());
  return info ? info->start_time : 0;
}

bool owner_is_dead(const fs::path &dir) {
  std::istringstream in(read_file((dir / "owner").string()));
  long pid = 0;
  unsigned long long start_time = 0;
  if (!(in >> pid >> start_time) || pid <= 0) return false;  // unknown: leave it
  const auto info = proc_info(static_cast<pid_t>(pid));
  if (!info) return kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
  return dead_state(info->state) || info->start_time != start_time;
}

// Directories of dead test processes: their PgBouncer got SIGTERM from the parent-death signal;
// a survivor is killed, then the directory goes.
void sweep_stale_directories() {
  const fs::path prefix(kPgBouncerTempPrefix);
  const std::string name_prefix = prefix.filename().string();
  std::error_code ec;
  for (auto it = fs::directory_iterator(prefix.parent_path(), ec);
       !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path dir = it->path();
    if (dir.filename().string().rfind(name_prefix, 0) != 0 || !owner_is_dead(dir)) continue;
    const long pid = std::atol(read_file((dir / "pgbouncer.pid").string()).c_str());
    if (pid > 0) {
      const auto info = proc_info(static_cast<pid_t>(pid));
      if (info && info->comm == "pgbouncer" && !dead_state(info->state)) {
        kill(static_cast<pid_t>(pid), SIGKILL);
      }
    }
    std::error_code remove_ec;
    fs::remove_all(dir, remove_ec);
  }
}

void register_live(PgBouncer *bouncer, void (*at_exit)()) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_atexit_installed) {  // inherited by forked children, like the set itself
    std::atexit(at_exit);
    g_atexit_installed = true;
  }
  if (g_swept_pid != getpid()) {
    g_swept_pid = getpid();
    sweep_stale_directories();
  }
  g_live.insert(bouncer);
}

void unregister_live(PgBouncer *bouncer) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_live.erase(bouncer);
}

std::string make_base_dir(const std::string &name) {
  std::string safe;
  for (char c : name.substr(0, 32)) {
    safe += (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-') ? c : '_';
  }
  std::string pattern =
      std::string(kPgBouncerTempPrefix) + (safe.empty() ? "pgbouncer" : safe) + ".XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
  }
  const std::string dir = buf.data();
  if (auto user = postgres_os_user()) {
    if (chown(dir.c_str(), user->uid, user->gid) != 0) {
      const int saved_errno = errno;
      fs::remove_all(dir);
      throw std::system_error(saved_errno, std::generic_category(), "chown postgres " + dir);
    }
  }
  return dir;
}

void check_database_entry(const std::string &name, const std::string &connstr) {
  bool plain = !name.empty();
  for (char c : name) plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
  if (!plain)
    throw std::invalid_argument("PgBouncer harness: database name must be [A-Za-z0-9_]+: " + name);
  if (connstr.find_first_of("\r\n") != std::string::npos) {
    throw std::invalid_argument("PgBouncer harness: a database entry holds a newline: " + name);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// PgBouncer

PgBouncer::PgBouncer(std::map<std::string, std::string> databases, PgBouncerOptions options)
    : options_(std::move(options)), databases_(std::move(databases)) {
  init_harness();  // subreaper and the PostgreSQL cleanup hooks, as for a PgInstance
  owner_pid_ = getpid();
  for (const auto &[name, connstr] : databases_) check_database_entry(name, connstr);
  if (access(kPgBouncerBinary, X_OK) != 0) {
    throw std::runtime_error(std::string("PgBouncer harness: no ") + kPgBouncerBinary +
                             " (apt-get install pgbouncer)");
  }
  base_dir_ = make_base_dir(options_.name);
  register_live(this, &PgBouncer::cleanup_all_at_exit);
  try {
    write_owned_file(base_dir_ + "/owner",
                     std::to_string(getpid()) + " " + std::to_string(own_start_time()) + "\n");
    write_owned_file(base_dir_ + "/userlist.txt", std::string("\"") + kAdminUser + "\" \"\"\n");
    std::string failure;
    for (int attempt = 1; attempt <= kStartAttempts; ++attempt) {
      port_ = pick_free_port();
      write_config_files();
      if (start()) return;
      failure += "port " + std::to_string(port_) + " was taken; ";
    }
    throw std::runtime_error("PgBouncer " + options_.name + ": no free port after " +
                             std::to_string(kStartAttempts) + " attempts: " + failure);
  } catch (...) {
    cleanup();  // no destructor runs for a constructor that throws
    throw;
  }
}

PgBouncer::~PgBouncer() { cleanup(); }

std::string PgBouncer::render_ini() const {
  std::ostringstream ini;
  ini << ";; pgdog_reshard e2e harness: PgBouncer " << options_.name << "\n"
      << "[databases]\n";
  for (const auto &[name, connstr] : databases_) ini << name << " = " << connstr << "\n";
  ini << "\n[pgbouncer]\n"
      << "listen_addr = " << host_ << "\n"
      << "listen_port = " << port_ << "\n"
      << "unix_socket_dir = " << base_dir_ << "\n"
      << "auth_type = trust\n"
      << "auth_file = " << base_dir_ << "/userlist.txt\n"
      << "admin_users = " << kAdminUser << "\n"
      << "pool_mode = " << options_.pool_mode << "\n"
      << "max_client_conn = 200\n"
      << "default_pool_size = " << options_.default_pool_size << "\n"
      << "min_pool_size = " << options_.min_pool_size << "\n"
      << "ignore_startup_parameters = extra_float_digits,options\n"
      << "server_login_retry = 1\n"
      << "logfile = " << base_dir_ << "/pgbouncer.log\n"
      << "pidfile = " << base_dir_ << "/pgbouncer.pid\n";
  return ini.str();
}

void PgBouncer::write_config_files() {
  // Write + rename: a RELOAD at any moment reads the old file or the new one, never half of one.
  const std::string tmp = ini_path() + ".tmp";
  write_owned_file(tmp, render_ini());
  if (rename(tmp.c_str(), ini_path().c_str()) != 0) {
    throw std::system_error(errno, std::generic_category(), "rename " + tmp);
  }
}

void PgBouncer::write_databases(const std::map<std::string, std::string> &databases) {
  for (const auto &[name, connstr] : databases) check_database_entry(name, connstr);
  databases_ = databases;
  write_config_files();
}

bool PgBouncer::start() {
  const std::string log_path = base_dir_ + "/pgbouncer.log";
  const std::string out_path = base_dir_ + "/pgbouncer.out";  // what it says before the log opens
  const size_t log_offset = read_file(log_path).size();
  const int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out_fd < 0) throw std::system_error(errno, std::generic_category(), "open " + out_path);
  std::string program = kPgBouncerBinary;
  std::string ini = ini_path();
  std::vector<char *> argv = {program.data(), ini.data(), nullptr};
  const std::optional<OsUser> user = postgres_os_user();
  const pid_t parent = getpid();
  const pid_t child = fork();
  if (child < 0) {
    const int saved_errno = errno;
    close(out_fd);
    throw std::system_error(saved_errno, std::generic_category(), "fork");
  }
  if (child == 0) exec_pgbouncer(argv.data(), base_dir_.c_str(), out_fd, parent, user);
  close(out_fd);
  pid_ = child;

  const std::string listening = "listening on " + host_ + ":" + std::to_string(port_);
  const std::string clash = "cannot listen on " + host_ + ":" + std::to_string(port_);
  const auto deadline = Clock::now() + std::chrono::milliseconds(kStartTimeoutMs);
  for (;;) {
    const std::string log = read_file(log_path);
    const std::string new_log = log.size() > log_offset ? log.substr(log_offset) : "";
    // 1.18 only warns when the TCP port is taken, and serves its unix socket anyway.
    if (has(new_log, clash)) {
      stop();
      return false;
    }
    if (has(new_log, listening) && has(new_log, "process up")) return true;
    int status = 0;
    const pid_t done = waitpid(pid_, &status, WNOHANG);
    std::string why;
    if (done == pid_) {
      pid_ = -1;
      why = "exited (" + describe_status(status) + ")";
    } else if (Clock::now() >= deadline) {
      stop();
      why = "did not start within " + std::to_string(kStartTimeoutMs / 1000) + " s";
    }
    if (!why.empty()) {
      throw std::runtime_error("PgBouncer " + options_.name + " on port " + std::to_string(port_) +
                               " " + why + "\n--- output ---\n" + read_file(out_path) +
                               "--- log (tail) ---\n" + tail_lines(new_log, 30));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void PgBouncer::stop() noexcept {
  if (pid_ <= 0) return;
  int status = 0;
  kill(pid_, SIGTERM);  // PgBouncer's immediate shutdown
  if (!wait_child(pid_, kStopTimeoutMs, &status)) {
    kill(pid_, SIGKILL);
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
}

void PgBouncer::cleanup_all_at_exit() {
  std::set<PgBouncer *> live;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    live = g_live;
  }
  for (PgBouncer *bouncer : live) bouncer->cleanup();
}

// Idempotent: the exit handler may run it for an object whose destructor runs later (a static);
// a destructor that runs first unregisters the object, so the handler never sees a dead one.
void PgBouncer::cleanup() noexcept {
  unregister_live(this);
  if (getpid() != owner_pid_ || base_dir_.empty()) return;  // a forked child: the parent's server
  stop();
  std::error_code ec;
  fs::remove_all(base_dir_, ec);
  if (ec) {
    std::fprintf(stderr, "pgbouncer harness: cannot remove %s: %s\n", base_dir_.c_str(),
                 ec.message().c_str());
  }
  base_dir_.clear();
}

std::string PgBouncer::conninfo(const std::string &db, const std::string &user) const {
  return "host=" + host_ + " port=" + std::to_string(port_) + " dbname=" + db + " user=" + user;
}

std::string PgBouncer::admin_conninfo() const { return conninfo("pgbouncer", kAdminUser); }

std::string PgBouncer::ini_path() const { return base_dir_ + "/pgbouncer.ini"; }

std::string PgBouncer::log() const { return read_file(base_dir_ + "/pgbouncer.log"); }

}  // namespace pgdog_reshard::test
