#include "engine/proxy_admin.h"

#include <poll.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace pgdog_reshard {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kServersPollMs = 100;  // how often an already paused proxy is asked for its servers

bool contains(std::string_view text, std::string_view needle) {
  return text.find(needle) != std::string_view::npos;
}

// PgBouncer's answers (SQLSTATE 08P01, like all its admin errors) to a PAUSE while paused or
// pausing, and to a RESUME while running.
bool is_already_paused(const Error &e) { return contains(e.what(), "already suspended/paused"); }
bool is_not_paused(const Error &e) { return contains(e.what(), "is not paused/suspended"); }

// Connection's messages start with "could not connect to <describe>: " or, for a server error,
// "host:port/db: "; the caller names the proxy once, so that prefix goes.
std::string without_location(const ConnParams &params, const std::string &message) {
  const std::string connect_prefix = "could not connect to " + params.describe() + ": ";
  if (message.rfind(connect_prefix, 0) == 0) {
    return "could not connect: " + message.substr(connect_prefix.size());
  }
  const std::string host = params.host.empty() ? "localhost" : params.host;
  const std::string db = params.dbname.empty() ? params.user : params.dbname;
  const std::string server_prefix = host + ":" + std::to_string(params.port) + "/" + db + ": ";
  if (message.rfind(server_prefix, 0) == 0) return message.substr(server_prefix.size());
  return message;
}

Error failure(const ConnParams &params, std::string_view command, const Error &cause) {
  return Error(cause.sqlstate(),
               std::string(command) + " on proxy " + params.describe() +
                   " failed: " + without_location(params, cause.what()),
               cause.detail(), cause.hint());
}

// Splits on ';' outside single-quoted values; a backslash escapes the next character (conninfo
// syntax), so "password='a;b'" stays one entry.
std::vector<std::string> split_entries(std::string_view setting) {
  std::vector<std::string> entries(1);
  bool quoted = false;
  for (size_t i = 0; i < setting.size(); ++i) {
    const char c = setting[i];
    if (c == ';' && !quoted) {
      entries.emplace_back();
      continue;
    }
    entries.back() += c;
    if (c == '\\' && i + 1 < setting.size()) {
      entries.back() += setting[++i];
    } else if (c == '\'') {
      quoted = !quoted;
    }
  }
  return entries;
}

std::string trimmed(const std::string &text) {
  const size_t start = text.find_first_not_of(" \t\r\n");
  if (start == std::string::npos) return {};
  return text.substr(start, text.find_last_not_of(" \t\r\n") - start + 1);
}

}  // namespace

std::vector<ConnParams> parse_proxy_admin(std::string_view setting) {
  std::vector<ConnParams> proxies;
  int number = 0;
  for (const std::string &raw : split_entries(setting)) {
    const std::string entry = trimmed(raw);
    if (entry.empty()) continue;
    ++number;
    try {
      proxies.push_back(parse_conninfo(entry));
    } catch (const Error &e) {
      throw Error(e.sqlstate(), e.what(),
                  "In entry " + std::to_string(number) + " of pgdog_reshard.proxy_admin.",
                  e.hint().empty() ? "Separate the proxies' conninfos with ';'." : e.hint());
    }
  }
  return proxies;
}

// ---------------------------------------------------------------------------------------------
// Waits

void ProxyAdmin::Waits::wait_socket(int fd, bool for_read, bool for_write, int timeout_ms) {
  if (!deadline) {
    ctx_.wait_socket(fd, for_read, for_write, timeout_ms);
    return;
  }
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
  if (left <= 0) {
    throw Error(sqlstate::kQueryCanceled,
                "no answer within " + std::to_string(kResumeTimeout.count()) + " s");
  }
  int slice = static_cast<int>(left);
  if (timeout_ms >= 0 && timeout_ms < slice) slice = timeout_ms;
  pollfd pfd{fd, static_cast<short>((for_read ? POLLIN : 0) | (for_write ? POLLOUT : 0)), 0};
  if (poll(&pfd, 1, slice) < 0 && errno != EINTR) {
    throw Error(sqlstate::kSystemError, std::string("poll() failed: ") + std::strerror(errno));
  }
}

// ---------------------------------------------------------------------------------------------
// ProxyAdmin

ProxyAdmin::ProxyAdmin(std::vector<ConnParams> proxies, TaskContext &ctx) : ctx_(ctx), waits_(ctx) {
  for (ConnParams &params : proxies) proxies_.push_back(Proxy{std::move(params), nullptr});
}

ProxyAdmin::~ProxyAdmin() = default;

Result ProxyAdmin::run(Proxy &proxy, std::string_view command) {
  try {
    if (!proxy.conn || !proxy.conn->is_open()) {
      proxy.conn.reset();
      proxy.conn = std::make_unique<Connection>(proxy.params, waits_);
    }
    return proxy.conn->exec(command);
  } catch (const Error &) {
    if (proxy.conn && !proxy.conn->is_open()) proxy.conn.reset();  // reconnect next time
    throw;
  }
}

void ProxyAdmin::pause() {
  size_t index = 0;
  try {
    for (; index < proxies_.size(); ++index) pause_one(proxies_[index]);
  } catch (const Error &) {
    // The failed proxy too: an interrupted PAUSE leaves PgBouncer pausing.
    if (std::optional<Error> resume_error = resume_first(index + 1)) {
      ctx_.log(LogLevel::Warning, std::string("after a failed pause: ") + resume_error->what());
    }
    throw;
  }
}

void ProxyAdmin::pause_one(Proxy &proxy) {
  ctx_.log(LogLevel::Info, "pausing proxy " + proxy.params.describe());
  try {
    run(proxy, "PAUSE");
  } catch (const Error &e) {
    if (!is_already_paused(e)) throw failure(proxy.params, "PAUSE", e);
    // Paused or being paused by someone else: paused for us once its server connections are gone.
    ctx_.log(LogLevel::Info,
             "proxy " + proxy.params.describe() +
                 " was already paused; waiting for its server connections to close");
    wait_servers_closed(proxy);
  }
}

void ProxyAdmin::wait_servers_closed(Proxy &proxy) {
  for (;;) {
    try {
      if (run(proxy, "SHOW SERVERS").rows() == 0) return;
      ctx_.check_interrupts();
      waits_.wait_socket(proxy.conn->socket(), true, false, kServersPollMs);  // nothing to read
    } catch (const Error &e) {
      throw failure(proxy.params, "PAUSE", e);
    }
  }
}

void ProxyAdmin::reload() {
  for (Proxy &proxy : proxies_) {
    ctx_.log(LogLevel::Info, "reloading proxy " + proxy.params.describe());
    try {
      run(proxy, "RELOAD");
    } catch (const Error &e) {
      throw failure(proxy.params, "RELOAD", e);
    }
  }
}

void ProxyAdmin::resume() {
  if (std::optional<Error> error = resume_first(proxies_.size())) throw *error;
}

std::optional<Error> ProxyAdmin::resume_first(size_t count) {
  std::optional<Error> first;
  for (size_t i = 0; i < count && i < proxies_.size(); ++i) {
    Proxy &proxy = proxies_[i];
    ctx_.log(LogLevel::Info, "resuming proxy " + proxy.params.describe());
    struct Bounded {  // the deadline holds for this proxy only, whatever is thrown
      Waits &waits;
      ~Bounded() { waits.deadline.reset(); }
    } bounded{waits_};
    waits_.deadline = Clock::now() + kResumeTimeout;
    try {
      run(proxy, "RESUME");
    } catch (const Error &e) {
      if (!is_not_paused(e)) {
        Error error = failure(proxy.params, "RESUME", e);
        ctx_.log(LogLevel::Warning, error.what());
        if (!first) first = error;
      }
    }
  }
  return first;
}

}  // namespace pgdog_reshard
