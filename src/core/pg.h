// A libpq connection for the engine: RAII, asynchronous, and interruptible.
//
// Every wait goes through a Waiter, so that inside a background worker the wait is a latch wait
// that notices SIGTERM, postmaster death and query cancel, and outside the server (unit and
// end-to-end tests) it is a plain poll(). A connection never blocks where its owner could not stop it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

// libpq's types, without making every includer see libpq-fe.h.
struct pg_conn;
struct pg_result;
struct pg_cancel;

namespace pgdog_reshard {

// How a connection waits. The glue implements it with WaitLatchOrSocket + CHECK_FOR_INTERRUPTS;
// PollWaiter is the server-free implementation.
class Waiter {
 public:
  virtual ~Waiter() = default;
  // Waits until `fd` is readable (and/or writable) or timeout_ms passes (-1 = no timeout); may
  // return early (spurious wake-ups are fine: callers re-check). Throws Error (57014 query_canceled,
  // or 57P01 admin_shutdown) when the owner must stop; the connection then cancels what it was doing.
  virtual void wait_socket(int fd, bool for_read, bool for_write, int timeout_ms) = 0;
};

// poll()-based waiter; `should_stop`, if given, is checked at least every 100 ms and makes the
// wait throw Error(57014) when it returns true (tests use it to cancel from another thread).
class PollWaiter : public Waiter {
 public:
  explicit PollWaiter(std::function<bool()> should_stop = {}) : should_stop_(std::move(should_stop)) {}
  void wait_socket(int fd, bool for_read, bool for_write, int timeout_ms) override;

 private:
  std::function<bool()> should_stop_;
};

// Where to connect. Passed to libpq as keyword/value pairs (PQconnectStartParams), never as a
// conninfo string built by concatenation, so no value can inject another keyword.
struct ConnParams {
  std::string host;
  int port = 5432;
  std::string dbname;
  std::string user;
  std::string password;            // never logged or shown
  std::string application_name = "pgdog_reshard";
  bool replication = false;        // replication=database (logical replication protocol)
  int connect_timeout_s = 10;
  std::vector<std::pair<std::string, std::string>> options;  // extra libpq keywords, e.g. sslmode

  // "host=... port=... dbname=... user=..." for messages: never the password.
  std::string describe() const;
};

// Parses a libpq conninfo string ("host=... port=...") or URI ("postgresql://...") with
// PQconninfoParse (no environment defaults applied). host, port, dbname, user, password,
// application_name and connect_timeout go to their fields (unset ones keep ConnParams' defaults);
// every other keyword given a non-empty value goes to `options`. Throws Error 22023
// ("invalid proxy conninfo: ...") for a string libpq rejects, a port that is not one number in
// 1..65535, a connect_timeout that is not a number, or a replication keyword; no message ever
// holds the password (the parts of libpq's message that quote the input are masked when the input
// may hold one).
ConnParams parse_conninfo(std::string_view conninfo);

// One result of a query (RAII around PGresult).
class Result {
 public:
  Result() = default;
  explicit Result(pg_result *res);
  Result(Result &&other) noexcept;
  Result &operator=(Result &&other) noexcept;
  Result(const Result &) = delete;
  Result &operator=(const Result &) = delete;
  ~Result();

  int rows() const;
  int columns() const;
  bool is_null(int row, int col) const;
  std::string_view value(int row, int col) const;    // "" for NULL; text (or binary) bytes
  std::optional<std::string> get(int row, int col) const;  // nullopt for NULL
  int column_index(std::string_view name) const;     // -1 if absent
  std::string command_tag() const;                   // "INSERT 0 1", "COPY 42", ...
  pg_result *raw() const { return res_; }

 private:
  pg_result *res_ = nullptr;
};

class Connection {
 public:
  // Connects asynchronously (PQconnectStartParams + PQconnectPoll through the waiter).
  // Throws Error: 28P01 for a wrong password, 08001 for anything else that prevents the connection;
  // the message names ConnParams::describe(), never the password.
  Connection(const ConnParams &params, Waiter &waiter);
  Connection(Connection &&) noexcept;
  Connection &operator=(Connection &&) = delete;
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;
  ~Connection();  // cancels a command still running (PQcancel), then closes (PQfinish)

  // Runs one statement (or a simple-query string of several, returning the last result; the first
  // error wins). COPY is refused (XX000, and the connection closes): use the COPY calls below.
  // A server error throws Error with the server's SQLSTATE, message, detail and hint, the message
  // prefixed by the server's host:port. If the waiter throws mid-query, the query is cancelled on the
  // server (PQcancel), the connection is closed (is_open() false), and the waiter's Error propagates.
  Result exec(std::string_view sql);
  // Extended protocol with text parameters; nullopt = NULL.
  Result exec_params(std::string_view sql, const std::vector<std::optional<std::string>> &params);

  // COPY ... TO STDOUT: calls on_data for every CopyData chunk (a row, for COPY), in order, without
  // buffering the whole output. Returns the number of rows reported by the command tag.
  // If on_data throws, the COPY is cancelled and the connection closed, as for a waiter error.
  uint64_t copy_out(std::string_view copy_sql,
                    const std::function<void(const char *data, size_t len)> &on_data);

  // COPY ... FROM STDIN: begin, put any number of chunks (non-blocking sends, waiting for the socket
  // to drain through the waiter), then end (returns rows from the command tag) or abort with a reason.
  // A server error in the data surfaces at copy_in_end (or copy_in_put); the connection stays open.
  // copy_in_abort is for error paths: it throws only if the waiter does, and does nothing when the
  // connection is already closed or no COPY is in progress.
  void copy_in_begin(std::string_view copy_sql);
  void copy_in_put(const char *data, size_t len);
  uint64_t copy_in_end();
  void copy_in_abort(std::string_view reason);

  // Streaming replication (CopyBoth), on a connection opened with ConnParams::replication.
  // start_replication sends the command (e.g. START_REPLICATION SLOT "s" LOGICAL 0/0
  // (proto_version '1', publication_names '"pgdog"')) and waits for the server to enter CopyBoth;
  // a server error (unknown slot, slot in use) throws with the server's SQLSTATE.
  void start_replication(std::string_view command);
  // One CopyData message from the server (see decode_frame in core/pgoutput.h), or nullopt when
  // none arrived within timeout_ms (-1 = no timeout; 0 = only what has already arrived). The view
  // stays valid until the next call or until the connection closes. When the server ends the
  // stream (an error, a shutdown, a terminated walsender) it throws that error: the server's
  // SQLSTATE if it sent one, 08006 otherwise. Waits, like every wait here, go through the waiter.
  std::optional<std::string_view> read_copy_data(int timeout_ms);
  // Sends one CopyData message (e.g. encode_status_update) and flushes it through the waiter.
  void send_copy_data(std::string_view data);

  // Asks the server to cancel whatever runs now (PQcancel); safe from any thread, but not during
  // a move of this Connection. The command fails with the server's 57014; the connection stays.
  void cancel();

  bool is_open() const;
  int socket() const;
  pg_conn *raw() const { return conn_; }
  const ConnParams &params() const { return params_; }
  int server_version() const;  // e.g. 150018

 private:
  // The outcome of one command: its last result, and the first error if any result was one.
  struct Outcome {
    Result last;
    std::optional<Error> error;
  };

  void connect();
  void poll_connection(int timeout_s);
  [[noreturn]] void fail_connect(const std::string &reason);
  void require_open() const;
  void send(std::string_view sql, const std::vector<std::optional<std::string>> *params);
  Outcome collect_results();          // reads results until libpq is idle or a COPY starts
  Result wait_result_set(std::string_view what);  // collect_results, throwing the first error
  Result start_copy(std::string_view copy_sql, int expected_status, std::string_view what);
  void wait(bool for_read, bool for_write, int timeout_ms = -1);  // through the waiter
  void consume_input();
  void flush_outgoing();
  void abandon() noexcept;             // cancel what runs, close; for an interrupted operation
  void close() noexcept;
  Error error_from_result(const Result &res, std::string_view what) const;
  [[noreturn]] void fail_from_result(const Result &res, std::string_view what);
  [[noreturn]] void fail_from_connection(std::string_view what) const;
  [[noreturn]] void fail_stream_ended();  // the server left CopyBoth: throw why
  void release_copy_data() noexcept;
  std::string location() const;        // "host:port/dbname", the prefix of every message

  ConnParams params_;
  Waiter *waiter_;
  pg_conn *conn_ = nullptr;
  // Built once after connecting: PQcancel on it is safe from another thread, PQgetCancel is not.
  pg_cancel *cancel_ = nullptr;
  mutable std::mutex cancel_mutex_;    // guards cancel_ against close() in the owner's thread
  size_t unflushed_copy_bytes_ = 0;    // bounds libpq's output buffer during COPY IN
  char *copy_data_ = nullptr;          // libpq's buffer behind read_copy_data's last view
};

}  // namespace pgdog_reshard
