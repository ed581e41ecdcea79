#include "core/pg.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <utility>

namespace pgdog_reshard {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kStopCheckMs = 100;  // PollWaiter's promise: should_stop is checked this often
// COPY IN flushes libpq's output buffer after this many bytes: in non-blocking mode libpq grows the
// buffer instead of waiting, so without a bound a slow server would make us buffer the whole table.
constexpr size_t kCopyFlushBytes = 64 * 1024;
// One CopyData message carries at most this much: PQputCopyData takes an int length.
constexpr size_t kMaxCopyChunk = 1u << 30;

bool contains(std::string_view text, std::string_view needle) {
  return text.find(needle) != std::string_view::npos;
}

// libpq's messages end with a newline and continue on tab-indented lines ("...failed: Connection
// refused\n\tIs the server running..."): the first line is the message, the rest the detail.
std::pair<std::string, std::string> split_libpq_message(const char *raw) {
  std::string text = raw ? raw : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  size_t newline = text.find('\n');
  if (newline == std::string::npos) return {text, {}};
  std::string detail = text.substr(newline + 1);
  size_t start = detail.find_first_not_of("\t ");
  return {text.substr(0, newline), start == std::string::npos ? "" : detail.substr(start)};
}

// libpq does not put passwords in its messages; this makes sure of it anyway, since a leaked
// password in a log or a status view cannot be taken back.
std::string scrub(std::string text, const std::string &secret) {
  if (secret.empty()) return text;
  for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at)) {
    text.replace(at, secret.size(), "********");
  }
  return text;
}

// Quotes a value the way a conninfo string would, so "user=a b" cannot be misread in a message.
std::string quoted(const std::string &value) {
  if (!value.empty() && value.find_first_of(" '\\") == std::string::npos) return value;
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// libpq's default notice processor prints to stderr; library code never writes there.
void discard_notice(void *, const char *) {}

// PQconnectPoll must only be called once the socket is ready; a waiter may wake up early.
bool socket_ready(int fd, bool for_read, bool for_write) {
  pollfd pfd{fd, static_cast<short>((for_read ? POLLIN : 0) | (for_write ? POLLOUT : 0)), 0};
  return poll(&pfd, 1, 0) > 0;  // POLLERR/POLLHUP count: PQconnectPoll then reports the failure
}

// Milliseconds left before `deadline`, or -1 (wait forever) without one.
int ms_left(const std::optional<Clock::time_point> &deadline) {
  if (!deadline) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Rows reported by a command tag ("COPY 42" -> 42); 0 when the tag carries no count.
uint64_t rows_affected(const Result &res) {
  const char *count = res.raw() ? PQcmdTuples(res.raw()) : "";
  uint64_t rows = 0;
  std::from_chars(count, count + std::strlen(count), rows);
  return rows;
}

bool is_copy_status(ExecStatusType status) {
  return status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH;
}

// The keyword/value pairs for PQconnectStartParams. Unset fields are left out so that libpq's
// defaults (environment, service file) apply, as they would for psql.
std::vector<std::pair<std::string, std::string>> libpq_keywords(const ConnParams &params) {
  std::vector<std::pair<std::string, std::string>> keywords;
  auto add = [&](const char *key, const std::string &value) {
    if (!value.empty()) keywords.emplace_back(key, value);
  };
  add("host", params.host);
  add("port", std::to_string(params.port));
  add("dbname", params.dbname);
  add("user", params.user);
  add("password", params.password);
  add("application_name", params.application_name);
  if (params.connect_timeout_s > 0) {
    add("connect_timeout", std::to_string(params.connect_timeout_s));
  }
  if (params.replication) add("replication", "database");

  // An option repeating a field would silently win over it (libpq keeps the last value).
  static const char *const kFieldKeywords[] = {
      "host", "port", "dbname", "user", "password", "application_name", "connect_timeout",
      "replication", "expand_dbname"};
  for (const auto &[key, value] : params.options) {
    for (const char *field : kFieldKeywords) {
      if (key != field) continue;
      throw Error(sqlstate::kInvalidParameterValue,
                  "libpq option \"" + key + "\" repeats a connection field (" +
                      params.describe() + ")",
                  {}, "Set it through the field of the same name, not through options.");
    }
    keywords.emplace_back(key, value);
  }
  return keywords;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// PollWaiter

void PollWaiter::wait_socket(int fd, bool for_read, bool for_write, int timeout_ms) {
  pollfd pfd{fd, static_cast<short>((for_read ? POLLIN : 0) | (for_write ? POLLOUT : 0)), 0};
  std::optional<Clock::time_point> deadline;
  if (timeout_ms >= 0) deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (should_stop_ && should_stop_()) {
      throw Error(sqlstate::kQueryCanceled, "canceling the operation: its owner asked to stop");
    }
    int slice = ms_left(deadline);
    if (should_stop_ && (slice < 0 || slice > kStopCheckMs)) slice = kStopCheckMs;
    int ready = poll(&pfd, 1, slice);
    if (ready > 0) return;
    if (ready < 0 && errno == EINTR) return;  // a signal: let the caller re-check its state
    if (ready < 0) {
      throw Error(sqlstate::kSystemError, std::string("poll() failed: ") + std::strerror(errno));
    }
    if (deadline && ms_left(deadline) == 0) return;
  }
}

// ---------------------------------------------------------------------------------------------
// ConnParams

std::string ConnParams::describe() const {
  std::string text = "host=" + quoted(host) + " port=" + std::to_string(port) +
                     " dbname=" + quoted(dbname) + " user=" + quoted(user);
  if (replication) text += " replication=database";
  return text;
}

// ---------------------------------------------------------------------------------------------
// Result

Result::Result(pg_result *res) : res_(res) {}

Result::Result(Result &&other) noexcept : res_(std::exchange(other.res_, nullptr)) {}

Result &Result::operator=(Result &&other) noexcept {
  if (this != &other) {
    if (res_) PQclear(res_);
    res_ = std::exchange(other.res_, nullptr);
  }
  return *this;
}

Result::~Result() {
  if (res_) PQclear(res_);
}

int Result::rows() const { return res_ ? PQntuples(res_) : 0; }

int Result::columns() const { return res_ ? PQnfields(res_) : 0; }

bool Result::is_null(int row, int col) const { return !res_ || PQgetisnull(res_, row, col); }

std::string_view Result::value(int row, int col) const {
  if (is_null(row, col)) return {};
  return {PQgetvalue(res_, row, col), static_cast<size_t>(PQgetlength(res_, row, col))};
}

std::optional<std::string> Result::get(int row, int col) const {
  if (is_null(row, col)) return std::nullopt;
  return std::string(value(row, col));
}

// An exact match, unlike PQfnumber, which folds unquoted names to lower case.
int Result::column_index(std::string_view name) const {
  for (int col = 0; col < columns(); ++col) {
    if (name == PQfname(res_, col)) return col;
  }
  return -1;
}

std::string Result::command_tag() const { return res_ ? PQcmdStatus(res_) : ""; }

// ---------------------------------------------------------------------------------------------
// Connection: connecting

Connection::Connection(const ConnParams &params, Waiter &waiter)
    : params_(params), waiter_(&waiter) {
  try {
    connect();
  } catch (...) {
    close();  // no destructor runs for a constructor that throws
    throw;
  }
}

Connection::Connection(Connection &&other) noexcept
    : params_(std::move(other.params_)), waiter_(other.waiter_) {
  std::lock_guard<std::mutex> lock(other.cancel_mutex_);
  conn_ = std::exchange(other.conn_, nullptr);
  cancel_ = std::exchange(other.cancel_, nullptr);
  unflushed_copy_bytes_ = std::exchange(other.unflushed_copy_bytes_, 0);
  copy_data_ = std::exchange(other.copy_data_, nullptr);
}

Connection::~Connection() { abandon(); }

void Connection::connect() {
  std::vector<std::pair<std::string, std::string>> keywords = libpq_keywords(params_);
  std::vector<const char *> keys, values;
  for (const auto &[key, value] : keywords) {
    keys.push_back(key.c_str());
    values.push_back(value.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);

  // expand_dbname = 0: a dbname is only ever a name, never a conninfo string or URI.
  conn_ = PQconnectStartParams(keys.data(), values.data(), 0);
  if (!conn_) {
    throw Error(sqlstate::kOutOfMemory,
                "could not allocate a libpq connection for " + params_.describe());
  }
  PQsetNoticeProcessor(conn_, discard_notice, nullptr);
  if (PQstatus(conn_) == CONNECTION_BAD) fail_connect(PQerrorMessage(conn_));
  poll_connection(params_.connect_timeout_s);
  // Non-blocking from here on: sends queue in libpq and are flushed through the waiter.
  if (PQsetnonblocking(conn_, 1) != 0) fail_connect(PQerrorMessage(conn_));
  cancel_ = PQgetCancel(conn_);
  if (!cancel_) fail_connect("could not create a cancel handle");
}

// Drives PQconnectPoll as libpq documents it: start as if it had answered PGRES_POLLING_WRITING.
// libpq's connect_timeout is only enforced by its blocking connect, so the deadline is ours.
void Connection::poll_connection(int timeout_s) {
  std::optional<Clock::time_point> deadline;
  if (timeout_s > 0) deadline = Clock::now() + std::chrono::seconds(timeout_s);
  PostgresPollingStatusType status = PGRES_POLLING_WRITING;
  for (;;) {
    if (status == PGRES_POLLING_OK) return;
    if (status == PGRES_POLLING_FAILED) fail_connect(PQerrorMessage(conn_));
    bool for_read = status == PGRES_POLLING_READING;
    int fd = PQsocket(conn_);
    if (fd < 0) fail_connect("libpq has no socket while connecting");
    while (!socket_ready(fd, for_read, !for_read)) {
      int left = ms_left(deadline);
      if (left == 0) fail_connect("timeout expired after " + std::to_string(timeout_s) + " s");
      wait(for_read, !for_read, left);
    }
    status = PQconnectPoll(conn_);
  }
}

// libpq reports no SQLSTATE for a failed connection, so a rejected password is recognised from
// what libpq knows (the server asked for a password) and from the server's message.
void Connection::fail_connect(const std::string &reason) {
  bool needs_password = conn_ && PQconnectionNeedsPassword(conn_);
  bool password_rejected = conn_ && PQconnectionUsedPassword(conn_) &&
                           contains(reason, "password authentication failed");
  auto [message, detail] = split_libpq_message(reason.c_str());
  message = scrub("could not connect to " + params_.describe() + ": " + message, params_.password);
  detail = scrub(detail, params_.password);
  close();
  if (needs_password || password_rejected) {
    throw Error(sqlstate::kInvalidPassword, message, detail,
                "Check the password configured for user \"" + params_.user + "\".");
  }
  throw Error(sqlstate::kUnableToConnect, message, detail);
}

// ---------------------------------------------------------------------------------------------
// Connection: waiting, sending, receiving

void Connection::wait(bool for_read, bool for_write, int timeout_ms) {
  // libpq drops the socket when the server closes the connection (a FATAL, a shutdown); nothing
  // can arrive any more, and a wait on no socket would only end with the task.
  if (PQsocket(conn_) < 0) {
    Error lost = error_from_result(Result(), "the server closed the connection");
    abandon();
    throw lost;
  }
  try {
    waiter_->wait_socket(PQsocket(conn_), for_read, for_write, timeout_ms);
  } catch (...) {
    abandon();  // the owner must stop: leave nothing running on the server
    throw;
  }
}

// A failed read marks the connection bad; PQgetResult then reports why (often the server's own
// FATAL message, with its SQLSTATE, e.g. 57P01 when the backend was terminated), so defer to it.
void Connection::consume_input() {
  if (!PQconsumeInput(conn_) && PQstatus(conn_) != CONNECTION_BAD) {
    fail_from_connection("reading from the server");
  }
}

// libpq's documented non-blocking flush: while PQflush has data left, wait for the socket to be
// writable (or readable: the server may be waiting for us to read before it reads more).
void Connection::flush_outgoing() {
  for (;;) {
    int pending = PQflush(conn_);
    if (pending == 0) return;
    if (pending < 0) fail_from_connection("sending to the server");
    wait(true, true);
    consume_input();
  }
}

void Connection::require_open() const {
  if (!conn_) {
    throw Error(sqlstate::kConnectionDoesNotExist, location() + ": the connection is closed",
                "An interrupted operation or a failure closed it.", "Open a new connection.");
  }
}

void Connection::send(std::string_view sql,
                      const std::vector<std::optional<std::string>> *params) {
  require_open();
  std::string text(sql);  // libpq wants a NUL-terminated string
  int sent;
  if (!params) {
    sent = PQsendQuery(conn_, text.c_str());
  } else {
    std::vector<const char *> values;
    for (const auto &param : *params) values.push_back(param ? param->c_str() : nullptr);
    sent = PQsendQueryParams(conn_, text.c_str(), static_cast<int>(values.size()), nullptr,
                             values.data(), nullptr, nullptr, 0);
  }
  if (!sent) fail_from_connection("sending a query");
  flush_outgoing();
}

Connection::Outcome Connection::collect_results() {
  Outcome outcome;
  for (;;) {
    while (PQisBusy(conn_)) {
      wait(true, false);
      consume_input();
    }
    PGresult *raw = PQgetResult(conn_);
    if (!raw) return outcome;
    Result res(raw);
    ExecStatusType status = PQresultStatus(raw);
    if (is_copy_status(status)) {
      // libpq hands out this result until the COPY ends: the caller takes over from here.
      outcome.last = std::move(res);
      return outcome;
    }
    if (status == PGRES_FATAL_ERROR || status == PGRES_BAD_RESPONSE) {
      if (!outcome.error) outcome.error = error_from_result(res, "query");  // the first wins
    } else {
      outcome.last = std::move(res);
    }
  }
}

Result Connection::wait_result_set(std::string_view what) {
  Outcome outcome = collect_results();
  if (outcome.error) throw *outcome.error;
  if (outcome.last.raw() && is_copy_status(PQresultStatus(outcome.last.raw()))) {
    abandon();  // a COPY run through exec(): the protocol state cannot be recovered cheaply
    throw Error(sqlstate::kInternalError,
                location() + ": " + std::string(what) + " cannot run COPY",
                "The connection was closed.", "Use copy_out or copy_in_begin for COPY.");
  }
  return std::move(outcome.last);
}

Result Connection::exec(std::string_view sql) {
  send(sql, nullptr);
  return wait_result_set("exec()");
}

Result Connection::exec_params(std::string_view sql,
                               const std::vector<std::optional<std::string>> &params) {
  send(sql, &params);
  return wait_result_set("exec_params()");
}

// ---------------------------------------------------------------------------------------------
// Connection: COPY

Result Connection::start_copy(std::string_view copy_sql, int expected_status,
                              std::string_view what) {
  send(copy_sql, nullptr);
  Outcome outcome = collect_results();
  if (outcome.error) throw *outcome.error;
  ExecStatusType status =
      outcome.last.raw() ? PQresultStatus(outcome.last.raw()) : PGRES_EMPTY_QUERY;
  if (status != expected_status) {
    if (is_copy_status(status)) abandon();  // the wrong COPY direction: cannot be undone
    throw Error(sqlstate::kInternalError, location() + ": " + std::string(what),
                "The statement was: " + std::string(copy_sql));
  }
  return std::move(outcome.last);
}

uint64_t Connection::copy_out(std::string_view copy_sql,
                              const std::function<void(const char *data, size_t len)> &on_data) {
  start_copy(copy_sql, PGRES_COPY_OUT, "copy_out() needs a COPY ... TO STDOUT statement");
  try {
    for (;;) {
      char *buf = nullptr;
      int len = PQgetCopyData(conn_, &buf, 1 /* async: never block */);
      if (len > 0) {
        std::unique_ptr<char, decltype(&PQfreemem)> owned(buf, &PQfreemem);
        on_data(buf, static_cast<size_t>(len));
      } else if (len == 0) {
        wait(true, false);
        consume_input();
      } else if (len == -1) {
        break;  // the COPY is over; its result (or error) follows
      } else {
        fail_from_connection("COPY TO STDOUT");
      }
    }
  } catch (...) {
    abandon();  // mid-COPY (a failing callback too) the connection cannot be reused
    throw;
  }
  return rows_affected(wait_result_set("COPY TO STDOUT"));
}

void Connection::copy_in_begin(std::string_view copy_sql) {
  start_copy(copy_sql, PGRES_COPY_IN, "copy_in_begin() needs a COPY ... FROM STDIN statement");
  unflushed_copy_bytes_ = 0;
}

void Connection::copy_in_put(const char *data, size_t len) {
  require_open();
  while (len > 0) {
    size_t chunk = len < kMaxCopyChunk ? len : kMaxCopyChunk;
    for (;;) {
      int queued = PQputCopyData(conn_, data, static_cast<int>(chunk));
      if (queued == 1) break;
      if (queued < 0) fail_from_result(Result(), "COPY FROM STDIN");
      wait(false, true);  // 0: no room in libpq's buffer until the socket drains
      consume_input();
    }
    data += chunk;
    len -= chunk;
    unflushed_copy_bytes_ += chunk;
  }
  if (unflushed_copy_bytes_ >= kCopyFlushBytes) {
    flush_outgoing();
    unflushed_copy_bytes_ = 0;
  }
}

uint64_t Connection::copy_in_end() {
  require_open();
  for (;;) {
    int queued = PQputCopyEnd(conn_, nullptr);
    if (queued == 1) break;
    if (queued < 0) fail_from_result(Result(), "COPY FROM STDIN");
    wait(false, true);
    consume_input();
  }
  flush_outgoing();
  unflushed_copy_bytes_ = 0;
  return rows_affected(wait_result_set("COPY FROM STDIN"));
}

// Aborting is cleanup, usually on an error path: it throws only when the waiter does. Whatever
// else goes wrong (the server already failed the COPY, the connection broke) the rows are not
// committed, which is all an abort promises.
void Connection::copy_in_abort(std::string_view reason) {
  if (!conn_) return;
  std::string text(reason);
  for (;;) {
    int queued = PQputCopyEnd(conn_, text.c_str());
    if (queued == 1) break;
    if (queued < 0) {  // no COPY in progress, or a broken connection: nothing left to abort
      collect_results();
      return;
    }
    wait(false, true);
    consume_input();
  }
  while (PQflush(conn_) == 1) {  // -1 (a broken connection) shows in the results below
    wait(true, true);
    consume_input();
  }
  unflushed_copy_bytes_ = 0;
  collect_results();  // the server answers with an error quoting `reason`: expected, dropped
}

// ---------------------------------------------------------------------------------------------
// Connection: streaming replication (CopyBoth)

void Connection::start_replication(std::string_view command) {
  start_copy(command, PGRES_COPY_BOTH,
             "start_replication() needs a START_REPLICATION statement");
}

std::optional<std::string_view> Connection::read_copy_data(int timeout_ms) {
  require_open();
  release_copy_data();  // the previous view's promise ends here
  std::optional<Clock::time_point> deadline;
  if (timeout_ms >= 0) deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  // After the deadline, one last look at what the final wait brought in, then give up.
  for (bool last_look = false;;) {
    char *buf = nullptr;
    int len = PQgetCopyData(conn_, &buf, 1 /* async: never block */);
    if (len > 0) {
      copy_data_ = buf;
      return std::string_view(buf, static_cast<size_t>(len));
    }
    if (len == -1) fail_stream_ended();
    if (len < -1) fail_from_connection("reading the replication stream");
    // Nothing complete is buffered. A lost connection (the messages read before it went have all
    // been handed out) would leave us waiting for one that never comes: its results say why.
    if (PQstatus(conn_) == CONNECTION_BAD) fail_stream_ended();
    if (last_look) return std::nullopt;
    int left = ms_left(deadline);
    wait(true, false, left);
    consume_input();
    last_look = left == 0;
  }
}

void Connection::send_copy_data(std::string_view data) {
  require_open();
  // A replication message cannot be split across CopyData messages as COPY rows can.
  if (data.size() > kMaxCopyChunk) {
    throw Error(sqlstate::kInternalError,
                location() + ": a CopyData message of " + std::to_string(data.size()) +
                    " bytes is too large to send");
  }
  for (;;) {
    int queued = PQputCopyData(conn_, data.data(), static_cast<int>(data.size()));
    if (queued == 1) break;
    if (queued < 0) fail_from_result(Result(), "sending to the replication stream");
    wait(false, true);  // 0: no room in libpq's buffer until the socket drains
    consume_input();
  }
  flush_outgoing();
}

// The server left CopyBoth: an ErrorResponse (a failed walsender, a terminated backend, a shutdown),
// a CommandComplete, or a CopyDone. libpq answers a CopyDone by moving to COPY IN, waiting for ours:
// sending it lets the command complete and leaves the connection usable.
void Connection::fail_stream_ended() {
  Outcome outcome = collect_results();
  if (!outcome.error && outcome.last.raw() && PQresultStatus(outcome.last.raw()) == PGRES_COPY_IN) {
    int queued;
    while ((queued = PQputCopyEnd(conn_, nullptr)) == 0) {
      wait(false, true);
      consume_input();
    }
    if (queued == 1) flush_outgoing();
    outcome = collect_results();
  }
  if (outcome.error) throw *outcome.error;
  throw Error(sqlstate::kConnectionFailure, location() + ": the server ended the replication stream",
              "The server sent no error; the last command tag was \"" + outcome.last.command_tag() +
                  "\".");
}

void Connection::release_copy_data() noexcept {
  if (copy_data_) PQfreemem(copy_data_);
  copy_data_ = nullptr;
}

// ---------------------------------------------------------------------------------------------
// Connection: cancel, close, state

void Connection::cancel() {
  std::lock_guard<std::mutex> lock(cancel_mutex_);
  if (!cancel_) return;
  char errbuf[256];
  // Best effort: if the request cannot be delivered the query simply runs on. PQcancel opens a
  // short blocking connection to the server; libpq 15 has no non-blocking cancel.
  PQcancel(cancel_, errbuf, sizeof errbuf);
}

void Connection::abandon() noexcept {
  if (conn_ && PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) == PQTRANS_ACTIVE) {
    cancel();  // closing alone leaves e.g. pg_sleep running until it next reads the socket
  }
  close();
}

void Connection::close() noexcept {
  release_copy_data();
  {
    std::lock_guard<std::mutex> lock(cancel_mutex_);
    if (cancel_) PQfreeCancel(cancel_);
    cancel_ = nullptr;
  }
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
}

bool Connection::is_open() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }

int Connection::socket() const { return conn_ ? PQsocket(conn_) : -1; }

int Connection::server_version() const { return conn_ ? PQserverVersion(conn_) : 0; }

std::string Connection::location() const {
  std::string host = params_.host.empty() ? "localhost" : params_.host;
  std::string db = params_.dbname.empty() ? params_.user : params_.dbname;
  return host + ":" + std::to_string(params_.port) + "/" + db;
}

// ---------------------------------------------------------------------------------------------
// Connection: errors

Error Connection::error_from_result(const Result &res, std::string_view what) const {
  const PGresult *raw = res.raw();
  const char *state = raw ? PQresultErrorField(raw, PG_DIAG_SQLSTATE) : nullptr;
  if (state) {  // the server's own error
    const char *primary = PQresultErrorField(raw, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(raw, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(raw, PG_DIAG_MESSAGE_HINT);
    return Error(state, location() + ": " + (primary ? primary : "error without a message"),
                 detail ? detail : "", hint ? hint : "");
  }
  // libpq's own error (lost connection, protocol trouble): no SQLSTATE, a multi-line message.
  auto [message, detail] =
      split_libpq_message(raw ? PQresultErrorMessage(raw) : conn_ ? PQerrorMessage(conn_) : "");
  bool broken = !conn_ || PQstatus(conn_) == CONNECTION_BAD;
  return Error(broken ? sqlstate::kConnectionFailure : sqlstate::kInternalError,
               location() + ": " + std::string(what) + ": " + message, detail);
}

// With an empty `res`, collects the pending results first: when libpq refuses a COPY call
// because the server already ended the COPY with an error, that error is the real reason.
void Connection::fail_from_result(const Result &res, std::string_view what) {
  if (!res.raw() && PQstatus(conn_) == CONNECTION_OK) {
    std::string libpq_reason = PQerrorMessage(conn_);
    Outcome outcome = collect_results();
    if (outcome.error) throw *outcome.error;
    // libpq repeats the reason on later lines when it is asked twice: the first line says it all.
    std::string message = split_libpq_message(libpq_reason.c_str()).first;
    throw Error(sqlstate::kInternalError, location() + ": " + std::string(what) + ": " + message);
  }
  throw error_from_result(res, what);
}

void Connection::fail_from_connection(std::string_view what) const {
  throw error_from_result(Result(), what);
}

// ---------------------------------------------------------------------------------------------
// parse_conninfo

namespace {

[[noreturn]] void invalid_conninfo(const std::string &reason, std::string hint = {}) {
  throw Error(sqlstate::kInvalidParameterValue, "invalid proxy conninfo: " + reason, {},
              std::move(hint));
}

bool may_hold_password(const std::string &conninfo) {
  if (conninfo.rfind("postgresql://", 0) == 0 || conninfo.rfind("postgres://", 0) == 0) {
    return true;  // user:password@ or ?password=, possibly percent-encoded
  }
  std::string lower = conninfo;
  for (char &c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return contains(lower, "password");
}

// libpq's parse errors quote pieces of the input in double quotes (`missing "=" after "..."`,
// `... in URI: "postgresql://user:secret@..."`). When the input may hold a password, every quoted
// piece but the punctuation libpq's own wording quotes is masked; if the password still shows
// (a quote inside it throws the pairing off), nothing of libpq's message is kept.
std::string mask_quoted_input(const std::string &message, const std::string &conninfo,
                              const std::string &password_guess) {
  if (!may_hold_password(conninfo)) return message;
  std::string out;
  size_t at = 0;
  for (;;) {
    size_t open = message.find('"', at);
    size_t close = open == std::string::npos ? open : message.find('"', open + 1);
    if (close == std::string::npos) {
      out += message.substr(at);
      break;
    }
    std::string piece = message.substr(open + 1, close - open - 1);
    bool keep = piece == "=" || piece == ":" || piece == "/" || piece == "]";
    out += message.substr(at, open - at) + "\"" + (keep ? piece : "...") + "\"";
    at = close + 1;
  }
  if (!password_guess.empty() && contains(out, password_guess)) {
    return "libpq could not parse it (its text is not shown: it may hold a password)";
  }
  return out;
}

// What follows the first "password=" (or the URI's "user:"), up to a space, '@' or '/': only
// used to make sure a masked message does not show it.
std::string guess_password(const std::string &conninfo) {
  size_t scheme = conninfo.find("://");
  if (scheme != std::string::npos) {
    size_t at = conninfo.find('@', scheme);
    size_t colon = conninfo.find(':', scheme + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at) {
      return conninfo.substr(colon + 1, at - colon - 1);
    }
  }
  size_t key = conninfo.find("password");
  if (key == std::string::npos) return {};
  size_t start = conninfo.find_first_not_of(" \t=", key + 8);
  if (start == std::string::npos) return {};
  if (conninfo[start] == '\'') ++start;
  size_t end = conninfo.find_first_of(" \t'&", start);
  return conninfo.substr(start, end == std::string::npos ? end : end - start);
}

int parse_int_option(const char *keyword, const std::string &value, int min, int max) {
  int number = 0;
  auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), number);
  if (error != std::errc() || end != value.data() + value.size() || number < min ||
      number > max) {
    invalid_conninfo(std::string(keyword) + " \"" + value + "\" is not a number between " +
                         std::to_string(min) + " and " + std::to_string(max),
                     std::string(keyword) == "port"
                         ? "Give one host and one port per conninfo; separate proxies with ';'."
                         : "");
  }
  return number;
}

}  // namespace

ConnParams parse_conninfo(std::string_view conninfo) {
  const std::string text(conninfo);
  char *errmsg = nullptr;
  PQconninfoOption *parsed = PQconninfoParse(text.c_str(), &errmsg);
  if (!parsed) {
    const std::string reason = errmsg ? split_libpq_message(errmsg).first : "out of memory";
    if (errmsg) PQfreemem(errmsg);
    const std::string shown = mask_quoted_input(reason, text, guess_password(text));
    throw Error(sqlstate::kInvalidParameterValue, "invalid proxy conninfo: " + shown,
                shown == reason ? "" : "Parts of it are not shown: it may hold a password.");
  }
  std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption *)> guard(parsed, PQconninfoFree);

  ConnParams params;
  for (const PQconninfoOption *option = parsed; option->keyword; ++option) {
    if (!option->val || !*option->val) continue;
    const std::string key = option->keyword;
    std::string value = option->val;
    if (key == "host") {
      params.host = std::move(value);
    } else if (key == "port") {
      params.port = parse_int_option("port", value, 1, 65535);
    } else if (key == "dbname") {
      params.dbname = std::move(value);
    } else if (key == "user") {
      params.user = std::move(value);
    } else if (key == "password") {
      params.password = std::move(value);
    } else if (key == "application_name") {
      params.application_name = std::move(value);
    } else if (key == "connect_timeout") {
      params.connect_timeout_s = parse_int_option("connect_timeout", value, 0, INT_MAX);
    } else if (key == "replication") {
      invalid_conninfo("\"replication\" is not supported here");
    } else {
      params.options.emplace_back(key, std::move(value));
    }
  }
  return params;
}

}  // namespace pgdog_reshard
