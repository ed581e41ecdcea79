#include "engine/cutover_command.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace pgdog_reshard {

namespace {

constexpr size_t kOutputKeptBytes = 4096;
constexpr int kPollMs = 10;
constexpr int kDetailLines = 20;
constexpr const char *kShell = "/bin/sh";
constexpr const char *kAbortedHint =
    "The cutover was aborted: traffic stays on the source cluster.";

std::string shell_quoted(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Between fork and exec only async-signal-safe calls: another thread may hold a lock.
[[noreturn]] void exec_shell(char *const *argv, int out_fd) {
  setpgid(0, 0);  // its own group: an interrupt kills the shell and everything it started
  // The server ignores some signals (SIGPIPE...) and blocks others; exec keeps both.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  const int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd >= 0) dup2(null_fd, 0);
  dup2(out_fd, 1);
  dup2(out_fd, 2);
  // Nothing of ours (client sockets, the postmaster's pipes) may leak into the command.
  if (close_range(3, ~0U, 0) != 0) {
    for (int fd = 3; fd < 65536; ++fd) close(fd);
  }
  execv(kShell, argv);
  const char msg[] = "cannot execute /bin/sh\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(127);
}

// Reads what the pipe holds now (non-blocking), keeping the last kOutputKeptBytes. False at EOF.
bool drain(int fd, std::string &output) {
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
      output.append(buf, static_cast<size_t>(n));
      if (output.size() > kOutputKeptBytes) output.erase(0, output.size() - kOutputKeptBytes);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0;  // EAGAIN: open, nothing more now; 0: EOF; another error: as good as EOF
  }
}

// The last lines of the output, as valid UTF-8 without control characters but \n and \t (it ends
// up in a server message; the 4 kB cut may have split a character).
std::string output_tail(std::string output) {
  while (!output.empty() && (output.back() == '\n' || output.back() == '\r')) output.pop_back();
  size_t start = output.size();
  for (int lines = 0; lines < kDetailLines && start > 0; ++lines) {
    const size_t newline = output.rfind('\n', start - 1);
    start = newline == std::string::npos ? 0 : newline;
  }
  if (start > 0) output.erase(0, start + 1);
  std::string clean;
  for (size_t i = 0; i < output.size();) {
    const auto c = static_cast<unsigned char>(output[i]);
    size_t length = c < 0x80           ? 1
                    : (c >> 5) == 0x6  ? 2
                    : (c >> 4) == 0xE  ? 3
                    : (c >> 3) == 0x1E ? 4
                                       : 0;
    bool valid = length > 0 && i + length <= output.size();
    for (size_t k = 1; valid && k < length; ++k) {
      valid = (static_cast<unsigned char>(output[i + k]) & 0xC0) == 0x80;
    }
    if (!valid) {
      clean += '?';
      ++i;
    } else if (length == 1 && c < 0x20 && c != '\n' && c != '\t') {
      clean += '?';
      ++i;
    } else {
      clean.append(output, i, length);
      i += length;
    }
  }
  return clean.empty() ? "The command printed nothing." : clean;
}

// Reaps our own child (only that pid: the process may be a subreaper with other children).
int reap(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) break;
  }
  return status;
}

}  // namespace

std::string expand_cutover_command(std::string_view command, int64_t task, std::string_view source,
                                   std::string_view destination) {
  std::string out;
  for (size_t i = 0; i < command.size(); ++i) {
    if (command[i] != '%' || i + 1 == command.size()) {
      out += command[i];
      continue;
    }
    switch (command[i + 1]) {
      case 't':
        out += std::to_string(task);
        break;
      case 's':
        out += shell_quoted(source);
        break;
      case 'd':
        out += shell_quoted(destination);
        break;
      case '%':
        out += '%';
        break;
      default:
        out += command.substr(i, 2);
        break;
    }
    ++i;
  }
  return out;
}

void run_cutover_command(const std::string &expanded, TaskContext &ctx) {
  std::vector<char *> argv = {const_cast<char *>("sh"), const_cast<char *>("-c"),
                              const_cast<char *>(expanded.c_str()), nullptr};
  int fds[2];
  // O_CLOEXEC: a command another thread starts meanwhile must not hold our pipe open.
  if (pipe2(fds, O_CLOEXEC) != 0) {
    throw Error(sqlstate::kSystemError,
                std::string("cutover_command: pipe2() failed: ") + std::strerror(errno));
  }
  const pid_t pid = fork();
  if (pid < 0) {
    const int saved_errno = errno;
    close(fds[0]);
    close(fds[1]);
    throw Error(sqlstate::kSystemError,
                std::string("cutover_command: fork() failed: ") + std::strerror(saved_errno));
  }
  if (pid == 0) exec_shell(argv.data(), fds[1]);
  close(fds[1]);
  setpgid(pid, pid);  // as the child does: whichever runs first, kill(-pid) finds the group
  const int out_fd = fds[0];
  fcntl(out_fd, F_SETFL, fcntl(out_fd, F_GETFL) | O_NONBLOCK);
  ctx.log(LogLevel::Info, "running cutover_command (pid " + std::to_string(pid) + ")");

  std::string output;
  bool open = true;
  int status = 0;
  try {
    for (;;) {
      if (open) open = drain(out_fd, output);
      const pid_t done = waitpid(pid, &status, WNOHANG);
      if (done == pid) break;
      if (done < 0 && errno != EINTR) {
        const int saved_errno = errno;
        kill(-pid, SIGKILL);
        throw Error(sqlstate::kSystemError, std::string("cutover_command: waitpid() failed: ") +
                                                std::strerror(saved_errno));
      }
      ctx.check_interrupts();
      if (open) {
        ctx.wait_socket(out_fd, true, false, kPollMs);  // output or 10 ms, interruptible
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
      }
    }
  } catch (...) {
    if (kill(-pid, SIGKILL) != 0) kill(pid, SIGKILL);
    reap(pid);
    close(out_fd);
    throw;
  }
  // What the shell wrote before exiting; a background process it left may still hold the pipe,
  // so this reads what is there without waiting for EOF.
  if (open) drain(out_fd, output);
  close(out_fd);

  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    ctx.log(LogLevel::Info, "cutover_command succeeded");
    return;
  }
  const std::string how = WIFSIGNALED(status)
                              ? "was terminated by signal " + std::to_string(WTERMSIG(status))
                              : "failed with exit code " + std::to_string(WEXITSTATUS(status));
  throw Error(sqlstate::kExternalRoutineException, "cutover_command " + how, output_tail(output),
              kAbortedHint);
}

}  // namespace pgdog_reshard
