#include "core/pipeline.h"

#include <libpq-fe.h>

#include <utility>

namespace pgdog_reshard {

namespace {

// Results are read every this many queued statements: often enough that the server never waits
// on a full socket, rarely enough that the read costs nothing per statement. libpq itself writes
// its buffer out every 8 kB, so sending needs no help.
constexpr unsigned kPumpEvery = 64;

// What a message of the extended protocol costs beyond its values: Bind and Execute headers,
// lengths and formats. Only used to bound libpq's output buffer, so an estimate will do.
size_t message_overhead(size_t name_length, int params) {
  return 32 + 2 * name_length + 10 * static_cast<size_t>(params);
}

// libpq's messages end with a newline and go on on tab-indented lines: the first line is the message.
std::string first_line(const char *text) {
  std::string line = text ? text : "";
  size_t end = line.find('\n');
  if (end != std::string::npos) line.resize(end);
  return line;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Params

void Params::clear() {
  bytes_.clear();
  offsets_.clear();
  lengths_.clear();
  formats_.clear();
  any_binary_ = false;
}

void Params::add_null() {
  offsets_.push_back(-1);
  lengths_.push_back(0);
  formats_.push_back(0);
}

// Text values never hold a NUL (PostgreSQL's text types cannot), so C strings carry them whole.
void Params::add_text(std::string_view text) {
  offsets_.push_back(static_cast<long>(bytes_.size()));
  lengths_.push_back(static_cast<int>(text.size()));
  formats_.push_back(0);
  bytes_.append(text.data(), text.size());
  bytes_.push_back('\0');
}

void Params::add_binary(std::string_view bytes) {
  offsets_.push_back(static_cast<long>(bytes_.size()));
  lengths_.push_back(static_cast<int>(bytes.size()));
  formats_.push_back(1);
  any_binary_ = true;
  bytes_.append(bytes.data(), bytes.size());
}

// Pointers are made last: the buffer may have moved while values were added.
const char *const *Params::values() {
  values_.resize(offsets_.size());
  for (size_t i = 0; i < offsets_.size(); i++) {
    values_[i] = offsets_[i] < 0 ? nullptr : bytes_.data() + offsets_[i];
  }
  return values_.data();
}

// ---------------------------------------------------------------------------------------------
// Pipeline: queueing

Pipeline::Pipeline(Connection &conn, Waiter &waiter) : conn_(conn), waiter_(waiter), pg_(conn.raw()) {
  if (!pg_ || !conn.is_open()) {
    throw Error(sqlstate::kConnectionDoesNotExist, location() + ": the connection is closed");
  }
  if (!PQenterPipelineMode(pg_)) {
    throw Error(sqlstate::kInternalError,
                location() + ": cannot enter pipeline mode: " + first_line(PQerrorMessage(pg_)),
                "Pipeline mode needs an idle connection.");
  }
}

Pipeline::~Pipeline() {
  // Only an idle pipeline can be left; a busy one belongs to a connection about to be discarded.
  if (pending_.empty() && !error_ && PQstatus(pg_) == CONNECTION_OK) PQexitPipelineMode(pg_);
}

void Pipeline::prepare(const std::string &name, const std::string &sql, int params) {
  check();
  const std::string *text = &(statements_[name] = sql);
  if (!PQsendPrepare(pg_, name.c_str(), sql.c_str(), params, nullptr)) {
    fail_connection("sending a statement to prepare");
  }
  queued(text, false, sql.size() + message_overhead(name.size(), params));
}

Pipeline::Ticket Pipeline::execute(const std::string &name, Params &params, bool keep_result) {
  check();
  auto it = statements_.find(name);
  if (it == statements_.end()) {
    throw Error(sqlstate::kInternalError,
                location() + ": statement \"" + name + "\" was not prepared in this pipeline");
  }
  if (!PQsendQueryPrepared(pg_, name.c_str(), params.count(), params.values(), params.lengths(),
                           params.formats(), 0)) {
    fail_connection("sending a statement");
  }
  queued(&it->second, keep_result, params.bytes() + message_overhead(name.size(), params.count()));
  return next_ticket_ - 1;
}

Pipeline::Ticket Pipeline::query(const std::string &sql, bool keep_result) {
  check();
  if (!PQsendQueryParams(pg_, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0)) {
    fail_connection("sending a statement");
  }
  queued(intern(sql), keep_result, sql.size() + message_overhead(0, 0));
  return next_ticket_ - 1;
}

Pipeline::Ticket Pipeline::sync() {
  check();
  if (!PQpipelineSync(pg_)) fail_connection("sending a sync point");
  Ticket ticket = flush_requested_ = next_ticket_;  // a sync point makes the server send it all
  queued(nullptr, false, 5);
  return ticket;
}

void Pipeline::queued(const std::string *statement, bool keep, size_t bytes) {
  pending_.push_back(Pending{next_ticket_++, statement, keep});
  unsent_bytes_ += bytes;
  if (++sends_since_pump_ >= kPumpEvery) pump();
  throttle();
}

// Bounds what waits on our side: libpq's output buffer (which, in non-blocking mode, grows rather
// than wait for the socket) and the statements in flight. Waiting here is back-pressure from a
// server slower than the stream.
void Pipeline::throttle() {
  if (unsent_bytes_ < kMaxUnsentBytes && pending_.size() <= kMaxInFlight) return;
  pump();
  while (output_pending_ && unsent_bytes_ >= kMaxUnsentBytes) {
    wait_socket();
    pump();
  }
  if (pending_.size() <= kMaxInFlight) return;
  request_flush();  // the server holds results back until a flush or a sync point
  while (pending_.size() > kMaxInFlight / 2) {
    wait_socket();
    pump();
  }
}

void Pipeline::request_flush() {
  if (flush_requested_ + 1 >= next_ticket_) return;
  if (!PQsendFlushRequest(pg_)) fail_connection("sending a flush request");
  flush_requested_ = next_ticket_ - 1;
}

const std::string *Pipeline::intern(const std::string &sql) { return &*queries_.insert(sql).first; }

// ---------------------------------------------------------------------------------------------
// Pipeline: results

void Pipeline::pump() {
  check();
  sends_since_pump_ = 0;
  if (PQstatus(pg_) == CONNECTION_BAD) fail_connection("the connection is lost");
  int unsent = PQflush(pg_);
  if (unsent < 0) fail_connection("sending to the server");
  output_pending_ = unsent == 1;
  if (!output_pending_) unsent_bytes_ = 0;
  if (!PQconsumeInput(pg_)) fail_connection("reading from the server");
  process_results();
  check();
}

void Pipeline::wait_for(Ticket ticket) {
  check();
  if (done(ticket)) return;
  if (flush_requested_ < ticket) request_flush();
  for (;;) {
    pump();
    if (done(ticket)) return;
    wait_socket();
  }
}

// Readable: results to take. Writable too while libpq holds unsent data: the server may be
// waiting for it before it sends anything.
void Pipeline::wait_socket() {
  try {
    waiter_.wait_socket(PQsocket(pg_), true, output_pending_, -1);
  } catch (const Error &e) {
    error_ = e;  // the connection is mid-pipeline: its owner must discard it
    throw;
  }
}

// libpq answers NULL where a sync point's result is due only when it has lost track of the
// pipeline (a broken connection): without the check this would spin.
void Pipeline::process_results() {
  while (!pending_.empty() && !PQisBusy(pg_)) {
    Result res(PQgetResult(pg_));
    if (!res.raw() && !pending_.front().statement) fail_connection("no result for a sync point");
    handle(std::move(res));
  }
}

// A statement's results end with a NULL from PQgetResult; a sync point is one result, with no NULL.
// After an error the server skips every statement up to the next sync point: each is reported as
// PGRES_PIPELINE_ABORTED, and the first error stays the one reported.
void Pipeline::handle(Result res) {
  const Pending &front = pending_.front();
  if (!res.raw()) {
    if (front.statement) finish_front();
    return;
  }
  switch (PQresultStatus(res.raw())) {
    case PGRES_PIPELINE_SYNC:
      finish_front();
      break;
    case PGRES_PIPELINE_ABORTED:
      break;
    case PGRES_FATAL_ERROR:
    case PGRES_BAD_RESPONSE:
      if (!error_) error_ = server_error(res, front.statement);
      break;
    default:
      if (front.keep) kept_[front.ticket] = std::move(res);
      break;
  }
}

void Pipeline::finish_front() {
  completed_ = pending_.front().ticket;
  pending_.pop_front();
}

Result Pipeline::take(Ticket ticket) {
  auto it = kept_.find(ticket);
  if (it == kept_.end()) return Result();
  Result res = std::move(it->second);
  kept_.erase(it);
  return res;
}

// ---------------------------------------------------------------------------------------------
// Pipeline: errors

void Pipeline::check() const {
  if (error_) throw *error_;
}

void Pipeline::fail(Error error) {
  error_ = std::move(error);
  throw *error_;
}

void Pipeline::fail_connection(std::string_view what) {
  fail(Error(sqlstate::kConnectionFailure,
             location() + ": " + std::string(what) + ": " + first_line(PQerrorMessage(pg_))));
}

// The server's own error, with the statement that caused it in the detail.
Error Pipeline::server_error(const Result &res, const std::string *statement) const {
  const PGresult *raw = res.raw();
  const char *state = PQresultErrorField(raw, PG_DIAG_SQLSTATE);
  const char *primary = PQresultErrorField(raw, PG_DIAG_MESSAGE_PRIMARY);
  const char *detail = PQresultErrorField(raw, PG_DIAG_MESSAGE_DETAIL);
  const char *hint = PQresultErrorField(raw, PG_DIAG_MESSAGE_HINT);
  std::string message = primary ? primary : first_line(PQresultErrorMessage(raw));
  std::string details = detail ? std::string(detail) + "\n" : std::string();
  if (statement) details += "Statement: " + *statement;
  bool broken = PQstatus(pg_) == CONNECTION_BAD;
  std::string code = state ? state : broken ? sqlstate::kConnectionFailure : sqlstate::kInternalError;
  return Error(code, location() + ": " + message, details, hint ? hint : "");
}

std::string Pipeline::location() const {
  const ConnParams &p = conn_.params();
  std::string host = p.host.empty() ? "localhost" : p.host;
  return host + ":" + std::to_string(p.port) + "/" + (p.dbname.empty() ? p.user : p.dbname);
}

}  // namespace pgdog_reshard
