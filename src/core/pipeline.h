// libpq pipeline mode over one Connection: many statements in flight, results read as they come.
//
// Statements are queued (PQsendPrepare / PQsendQueryPrepared / PQsendQueryParams) without waiting
// for the server; a sync point (PQpipelineSync) ends a group whose results can then be awaited.
// Results are consumed while sending, so the server never blocks writing them while we block
// writing statements, and what is buffered on our side stays bounded: libpq's output buffer (by
// waiting for the socket once kMaxUnsentBytes are queued) and the statements in flight (by
// waiting once kMaxInFlight are unanswered).
//
// The first error aborts the pipeline (the server skips everything up to the next sync point): it
// is kept and thrown by that call and every later one, naming the failing statement with the
// server's SQLSTATE, message, detail and hint. The owner then discards the connection; nothing is
// retried here. Every wait goes through the Waiter, so a wait is interruptible and never spins.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "core/pg.h"

namespace pgdog_reshard {

// The parameters of one execution, text or binary, built in place and reused: values live in one
// buffer, so a steady stream of executions allocates nothing once the buffers have grown.
class Params {
 public:
  void clear();
  void add_null();
  void add_text(std::string_view text);    // NUL-terminated in the buffer, as libpq wants text
  void add_binary(std::string_view bytes);  // the type's send format, with its length

  int count() const { return static_cast<int>(offsets_.size()); }
  size_t bytes() const { return bytes_.size(); }
  // libpq's arrays; valid until the next add or clear. formats() is nullptr when all are text.
  const char *const *values();
  const int *lengths() const { return lengths_.data(); }
  const int *formats() const { return any_binary_ ? formats_.data() : nullptr; }

 private:
  std::string bytes_;
  std::vector<long> offsets_;  // into bytes_, -1 for NULL
  std::vector<int> lengths_;   // read by libpq for binary values only
  std::vector<int> formats_;   // 0 text, 1 binary
  bool any_binary_ = false;
  std::vector<const char *> values_;
};

class Pipeline {
 public:
  // Result tickets: every queued statement and sync point gets the next number, in order.
  using Ticket = uint64_t;

  static constexpr size_t kMaxUnsentBytes = 1u << 20;
  static constexpr size_t kMaxInFlight = 32768;

  // Enters pipeline mode on an idle connection (throws XX000 otherwise). While the Pipeline lives
  // the connection is its own (Connection::exec and COPY are unavailable), and it must outlive the
  // Pipeline. The waiter is the one the connection was opened with (Connection keeps it private).
  Pipeline(Connection &conn, Waiter &waiter);
  ~Pipeline();  // leaves pipeline mode when every result is in; else leaves the connection be
  Pipeline(const Pipeline &) = delete;
  Pipeline &operator=(const Pipeline &) = delete;

  // Queues the preparation of a named statement whose `params` parameters have unspecified types:
  // the server infers each from its use (a column's type, whatever its OID on this server).
  void prepare(const std::string &name, const std::string &sql, int params);
  // Queues an execution of a prepared statement. keep_result: the result is kept for take().
  Ticket execute(const std::string &name, Params &params, bool keep_result = false);
  // Queues a statement without parameters (BEGIN, COMMIT, TRUNCATE ...).
  Ticket query(const std::string &sql, bool keep_result = false);
  // Queues a sync point: the end of a group; the server sends every result before it.
  Ticket sync();

  // Sends what the socket takes, reads what the server sent, processes every complete result.
  // Never blocks. Throws the pipeline's error.
  void pump();
  // Blocks (through the waiter) until every result up to `ticket` is processed; asks the server
  // to send what it holds back if no sync point follows the ticket.
  void wait_for(Ticket ticket);
  bool done(Ticket ticket) const { return completed_ >= ticket; }
  // The kept result of a finished statement (once; an empty Result if it returned nothing).
  Result take(Ticket ticket);
  std::string location() const;  // "host:port/dbname", how messages name the server

 private:
  struct Pending {
    Ticket ticket = 0;
    const std::string *statement = nullptr;  // nullptr for a sync point
    bool keep = false;
  };

  void queued(const std::string *statement, bool keep, size_t bytes);
  void throttle();
  void request_flush();
  void wait_socket();
  void process_results();
  void handle(Result res);
  void finish_front();
  void check() const;
  [[noreturn]] void fail(Error error);
  [[noreturn]] void fail_connection(std::string_view what);
  Error server_error(const Result &res, const std::string *statement) const;
  const std::string *intern(const std::string &sql);

  Connection &conn_;
  Waiter &waiter_;
  pg_conn *pg_;
  std::deque<Pending> pending_;
  Ticket next_ticket_ = 1;
  Ticket completed_ = 0;
  Ticket flush_requested_ = 0;  // the last ticket a flush request (or sync) makes the server send
  size_t unsent_bytes_ = 0;     // queued since libpq's buffer last emptied (an estimate)
  bool output_pending_ = false;  // PQflush left data in libpq's buffer
  unsigned sends_since_pump_ = 0;
  std::unordered_map<Ticket, Result> kept_;
  std::unordered_map<std::string, std::string> statements_;  // prepared name -> SQL, for messages
  std::unordered_set<std::string> queries_;                   // unprepared SQL, for messages
  std::optional<Error> error_;
};

}  // namespace pgdog_reshard
