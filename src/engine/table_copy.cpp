// One table's copy from one source shard to the destination shards: see table_copy.h.
//
// The data path is a single loop in this thread: libpq hands us one CopyData message (one row)
// from the source, the reader splits it into fields without copying, the router hashes the key
// field, and the row's bytes are appended to that shard's writer buffer. A buffer that reaches
// kShardBufferBytes goes to libpq on that shard's connection, which waits only when the kernel's
// socket buffer is full. So memory is bounded by one buffer per shard plus libpq's, and a slow
// shard slows the copy only once its socket is full.
#include "engine/table_copy.h"

#include <chrono>
#include <exception>
#include <memory>
#include <utility>

#include "core/copy_binary.h"
#include "core/error.h"
#include "core/router.h"
#include "core/sql.h"

namespace pgdog_reshard {

namespace {

using Clock = std::chrono::steady_clock;

// A shard's COPY stream goes to libpq in pieces of this size: large enough that the per-call
// cost vanishes, small enough that M shards hold little (the writer reserves twice this).
constexpr size_t kShardBufferBytes = 256 * 1024;
constexpr auto kProgressInterval = std::chrono::milliseconds(250);
// Interrupts and the progress clock are looked at after this many COPY messages (one per row) or
// bytes, whichever comes first: well under a millisecond of copying, so a cancel is seen at once
// while the per-row cost stays one counter increment.
constexpr uint64_t kCheckEveryMessages = 1024;
constexpr uint64_t kCheckEveryBytes = 4u << 20;

// How long a copy waits for a standby to replay up to the stream's start; pre-flight checked its
// lag, so this is only reached by a standby that stopped replaying.
constexpr int kStandbyReplayWaitMs = 60 * 1000;
// A standby snapshot is kept only when no WAL record was replayed while it was taken; under a
// heavy write load that takes a few tries.
constexpr int kStandbySnapshotTries = 1000;

// "host:port", how messages name a server.
std::string endpoint(const ConnParams &params) {
  return (params.host.empty() ? "localhost" : params.host) + ":" + std::to_string(params.port);
}

// Connection's messages start with "host:port/dbname: "; the wrapped message names the server
// itself, so the prefix would only repeat it.
std::string without_location(const std::string &message, const ConnParams &params) {
  std::string prefix = endpoint(params) + "/";
  if (message.compare(0, prefix.size(), prefix) != 0) return message;
  size_t colon = message.find(": ", prefix.size());
  return colon == std::string::npos ? message : message.substr(colon + 2);
}

// The same parameters with client_encoding = the source's server encoding: text fields of a
// binary COPY travel in the client encoding, and both the hash of a text key and the bytes the
// destination stores must be the source's stored bytes. A client_encoding the caller set is
// replaced.
ConnParams with_client_encoding(ConnParams params, const std::string &encoding) {
  auto &options = params.options;
  for (auto it = options.begin(); it != options.end();) {
    it = it->first == "client_encoding" ? options.erase(it) : it + 1;
  }
  options.emplace_back("client_encoding", encoding);
  return params;
}

RouteSpec route_spec(const TablePlan &table, size_t shards) {
  RouteSpec spec;
  spec.schema = table.schema;
  spec.table = table.name;
  spec.shards = static_cast<int>(shards);
  if (table.key) {
    if (!table.key->rule) {
      throw Error(sqlstate::kInternalError,
                  "table " + table.qualified() + " has sharding key " +
                      quote_ident(table.key->column) + " but no sharding rule",
                  "Without the rule the rows would go to every shard.");
    }
    spec.rule = table.key->rule;
    spec.key_index = table.key->index;
    spec.key_type = table.key->type;
  }
  return spec;
}

// " ("a", "b")", or nothing for a table without columns (COPY t () is not valid SQL).
std::string column_list(const TablePlan &table) {
  return table.columns.empty() ? std::string() : " (" + quote_ident_list(table.columns) + ")";
}

// Destination sessions only write this table's rows, so triggers (audit, denormalisation, ...)
// and foreign key checks must not fire: the source already ran them when the rows were written,
// and the referenced rows may be on another shard or not copied yet.
//
// statement_timeout = 0: a COPY of a large table runs for hours, and a timeout set for the
// application's role or database must not cut it (on either side).
//
// synchronous_commit is forced on, whatever the destination's configuration: once a copy is
// recorded as done, only changes after its watermark are streamed, so a commit that a destination
// crash could still lose (synchronous_commit = off) would lose those rows for good. It costs one
// WAL flush per table and shard.
constexpr const char *kDestinationSetup =
    "SET session_replication_role = replica; SET statement_timeout = 0; SET synchronous_commit = on; "
    "SHOW server_encoding";

class TableCopier {
 public:
  TableCopier(const TablePlan &table, const ConnParams &source,
              const std::vector<ConnParams> &destinations, const std::string &slot_name,
              TaskContext &ctx, TableCopyObserver *observer, const StandbySource *standby)
      : table_(table),
        source_params_(source),
        destination_params_(destinations),
        slot_name_(slot_name),
        ctx_(ctx),
        observer_(observer),
        standby_(standby),
        columns_(column_list(table)),
        router_(route_spec(table, destinations.size())),
        reader_([this](const TupleView &tuple) { route(tuple); },
                static_cast<int>(table.columns.size())) {}

  TableCopier(const TableCopier &) = delete;
  TableCopier &operator=(const TableCopier &) = delete;

  TableCopyResult run();
  std::exception_ptr interruption();
  void abort() noexcept;

 private:
  void open_source();
  void open_destinations();
  void open_destination(size_t shard);
  void take_snapshot();
  void take_standby_snapshot();
  void wait_for_standby_replay(Lsn target);
  void begin_copies();
  void stream();
  void on_message(const char *data, size_t len);
  void route(const TupleView &tuple);
  void put(size_t shard, const char *data, size_t len);
  void tick();
  void end_copies();
  void report_progress();

  template <typename Step>
  auto at_source(Step &&step) -> decltype(step());
  template <typename Step>
  auto at_destination(size_t shard, Step &&step) -> decltype(step());
  std::string source_failure() const;
  std::string destination_failure(size_t shard) const;

  const TablePlan &table_;
  const ConnParams &source_params_;
  const std::vector<ConnParams> &destination_params_;
  const std::string &slot_name_;
  TaskContext &ctx_;
  TableCopyObserver *observer_;
  const StandbySource *standby_;  // null: the source is the shard's primary
  int snapshot_tries_ = 1;        // a standby snapshot's, for the log
  const std::string columns_;
  std::string encoding_;  // the source's server encoding, the client_encoding of every session

  RowRouter router_;
  CopyBinaryReader reader_;
  std::unique_ptr<Connection> source_;
  std::vector<std::unique_ptr<Connection>> destinations_;
  std::vector<CopyBinaryWriter> writers_;  // one per destination shard, same index

  TableCopyResult result_;
  Clock::time_point started_;
  Clock::time_point last_progress_;
  uint64_t messages_since_check_ = 0;
  uint64_t bytes_at_check_ = 0;
};

TableCopyResult TableCopier::run() {
  started_ = last_progress_ = Clock::now();
  ctx_.check_interrupts();
  open_source();
  open_destinations();
  take_snapshot();
  begin_copies();
  stream();
  end_copies();
  // Closing the session ends the read-only snapshot transaction and drops the temporary slot;
  // nothing is left to commit there, and a COMMIT could only add a way to fail after the data
  // is committed on the destinations.
  source_.reset();
  result_.rows = reader_.tuples();
  result_.bytes = reader_.bytes();
  report_progress();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started_);
  ctx_.log(LogLevel::Info, "copied " + std::to_string(result_.rows) + " rows (" +
                               std::to_string(result_.bytes) + " bytes) of " + table_.qualified() +
                               " from " + endpoint(source_params_) + " to " +
                               std::to_string(destinations_.size()) + " shards in " +
                               std::to_string(ms.count()) + " ms, watermark " +
                               result_.watermark.to_string() +
                               (standby_ ? " (standby snapshot at try " + std::to_string(snapshot_tries_) + ")" : ""));
  return std::move(result_);
}

// A replication=database session, so that the slot's snapshot is this session's. Its client
// encoding is set once the server encoding is known, which needs the session itself.
void TableCopier::open_source() {
  at_source([&] {
    ConnParams params = source_params_;
    params.replication = standby_ == nullptr;  // a standby's snapshot needs no slot
    source_ = std::make_unique<Connection>(params, ctx_);
    encoding_ = std::string(
        source_->exec("SET statement_timeout = 0; SHOW server_encoding").value(0, 0));
    source_->exec("SET client_encoding TO " + quote_literal(encoding_));
  });
}

void TableCopier::open_destinations() {
  destinations_.reserve(destination_params_.size());
  for (size_t shard = 0; shard < destination_params_.size(); shard++) {
    ctx_.check_interrupts();
    at_destination(shard, [&] { open_destination(shard); });
  }
}

void TableCopier::open_destination(size_t shard) {
  ConnParams params = with_client_encoding(destination_params_[shard], encoding_);
  destinations_.push_back(std::make_unique<Connection>(params, ctx_));
  Result setup;
  try {
    setup = destinations_.back()->exec(kDestinationSetup);
  } catch (const Error &e) {
    if (e.sqlstate() != sqlstate::kInsufficientPrivilege) throw;
    throw Error(e.sqlstate(), e.what(), e.detail(),
                "Connect to the destination as a superuser, or GRANT SET ON PARAMETER "
                "session_replication_role to the user.");
  }
  // A destination in another encoding stores a text key as other bytes than the ones hashed
  // here, so rows would sit where neither PostgreSQL's partitioning nor the proxy expects them.
  std::string encoding(setup.value(0, 0));
  if (table_.key && table_.key->type == KeyType::Text && encoding != encoding_) {
    throw Error(sqlstate::kFeatureNotSupported,
                "the destination's server encoding is " + encoding + " and the source's " +
                    encoding_ + ", but the sharding key " + quote_ident(table_.key->column) +
                    " is text",
                "A text key is hashed as the bytes the source stores.",
                "Create the destination databases with the source's encoding.");
  }
}

// The slot must be created first thing in a REPEATABLE READ transaction for SNAPSHOT 'use' to
// make its consistent point this transaction's snapshot: every change committed up to the
// watermark is in the COPY, every later one will come from logical replication.
void TableCopier::take_snapshot() {
  ctx_.check_interrupts();
  at_source([&] {
    if (standby_) {
      take_standby_snapshot();
      return;
    }
    source_->exec("BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ");
    Result slot = source_->exec("CREATE_REPLICATION_SLOT " + quote_ident(slot_name_) +
                                " TEMPORARY LOGICAL pgoutput (SNAPSHOT 'use')");
    int column = slot.column_index("consistent_point");
    if (column < 0 || slot.rows() != 1) {
      throw Error(sqlstate::kProtocolViolation,
                  "CREATE_REPLICATION_SLOT returned no consistent_point for slot " +
                      quote_ident(slot_name_));
    }
    result_.watermark = Lsn::parse_or_throw(slot.value(0, column));
  });
  if (observer_) observer_->snapshot_taken(result_.watermark);
}

// On a standby, a transaction becomes visible when its commit record is replayed, so a snapshot
// taken while the replay position stays at L holds exactly the transactions committed up to L:
// L is its watermark, as a slot's consistent point is on the primary. The position is read just
// before the snapshot is taken and again within it; a snapshot during which a record was
// replayed is dropped and taken again.
//
// Not a slot with SNAPSHOT 'use' on the standby (PostgreSQL 16+): its snapshot is as of the
// slot's consistent point, which the standby may have replayed past by the time the snapshot is
// installed, vacuum records included. Row versions that snapshot still needs are then gone, and
// the COPY silently misses rows (seen here under a write load on the primary).
void TableCopier::take_standby_snapshot() {
  wait_for_standby_replay(standby_->stream_start);
  // One query string, so that the two reads are microseconds apart. Its COMMIT ends the implicit
  // transaction of the first read, which must not be the snapshot's.
  const std::string sql =
      "SELECT pg_catalog.set_config('pgdog_reshard_copy.replay_before', pg_catalog.pg_last_wal_replay_lsn()::text, false);"
      " COMMIT; BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ;"
      " SELECT pg_catalog.current_setting('pgdog_reshard_copy.replay_before'), pg_catalog.pg_last_wal_replay_lsn()::text";
  for (int tries = 1;; tries++) {
    Result positions = source_->exec(sql);
    if (positions.value(0, 0) == positions.value(0, 1)) {
      result_.watermark = Lsn::parse_or_throw(positions.value(0, 0));
      snapshot_tries_ = tries;
      return;
    }
    source_->exec("ROLLBACK");
    if (tries == kStandbySnapshotTries) {
      throw Error(sqlstate::kObjectNotInPrerequisiteState,
                  "the standby replayed WAL during each of " + std::to_string(tries) +
                      " attempts at a snapshot",
                  "A copy from a standby needs a snapshot taken while its replay position stands still.");
    }
    ctx_.check_interrupts();
  }
}

// Until the standby has replayed up to the stream's start: a watermark below it would leave the
// changes in between to nobody.
void TableCopier::wait_for_standby_replay(Lsn target) {
  const std::string sql =
      "SELECT pg_catalog.pg_last_wal_replay_lsn() >= " + quote_literal(target.to_string()) + "::pg_lsn";
  Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(kStandbyReplayWaitMs);
  while (source_->exec(sql).value(0, 0) != "t") {
    if (Clock::now() > deadline) {
      throw Error(sqlstate::kObjectNotInPrerequisiteState,
                  "the standby has not replayed up to the stream's start " + target.to_string() +
                      " within " + std::to_string(kStandbyReplayWaitMs / 1000) + " s",
                  "A copy from a standby reads what it has replayed.",
                  "Check its replication from the primary (pg_stat_wal_receiver).");
    }
    ctx_.wait_socket(-1, false, false, 20);  // an interruptible pause
  }
}

// Each shard copies inside a transaction: a failure anywhere before the final commits leaves
// nothing on any shard, and a retry starts from empty tables.
void TableCopier::begin_copies() {
  const std::string sql = "COPY " + table_.qualified() + columns_ + " FROM STDIN (FORMAT binary)";
  for (size_t shard = 0; shard < destinations_.size(); shard++) {
    ctx_.check_interrupts();
    at_destination(shard, [&] {
      destinations_[shard]->exec("BEGIN");
      destinations_[shard]->copy_in_begin(sql);
    });
  }
  writers_.reserve(destinations_.size());
  for (size_t shard = 0; shard < destinations_.size(); shard++) {
    writers_.emplace_back([this, shard](const char *data, size_t len) { put(shard, data, len); },
                          kShardBufferBytes);
  }
  result_.rows_per_shard.assign(destinations_.size(), 0);
}

void TableCopier::stream() {
  const std::string sql = "COPY " + table_.qualified() + columns_ + " TO STDOUT (FORMAT binary)";
  uint64_t sent = at_source([&] {
    uint64_t rows = source_->copy_out(
        sql, [this](const char *data, size_t len) { on_message(data, len); });
    reader_.finish();
    return rows;
  });
  if (sent != reader_.tuples()) {
    throw Error(sqlstate::kInternalError,
                "copy of " + table_.qualified() + ": the source sent " + std::to_string(sent) +
                    " rows, " + std::to_string(reader_.tuples()) + " were read");
  }
}

void TableCopier::on_message(const char *data, size_t len) {
  reader_.feed(data, len);
  if (++messages_since_check_ >= kCheckEveryMessages ||
      reader_.bytes() - bytes_at_check_ >= kCheckEveryBytes) {
    tick();
  }
}

void TableCopier::route(const TupleView &tuple) {
  int shard = router_.route(tuple);
  if (shard != RowRouter::kAllShards) {
    writers_[static_cast<size_t>(shard)].write(tuple);
    return;
  }
  for (CopyBinaryWriter &writer : writers_) writer.write(tuple);
}

void TableCopier::put(size_t shard, const char *data, size_t len) {
  at_destination(shard, [&] { destinations_[shard]->copy_in_put(data, len); });
}

void TableCopier::tick() {
  messages_since_check_ = 0;
  bytes_at_check_ = reader_.bytes();
  ctx_.check_interrupts();
  Clock::time_point now = Clock::now();
  if (now - last_progress_ < kProgressInterval) return;
  last_progress_ = now;
  report_progress();
}

void TableCopier::report_progress() {
  if (observer_) observer_->progress(reader_.tuples(), reader_.bytes());
}

// Ends every shard's COPY before committing any: a shard that rejects its rows (a constraint, a
// dead server) then leaves no shard committed. Only a failure between the commits themselves can
// leave some shards committed; the caller truncates before a retry.
void TableCopier::end_copies() {
  for (size_t shard = 0; shard < destinations_.size(); shard++) {
    ctx_.check_interrupts();
    at_destination(shard, [&] {
      writers_[shard].finish();
      uint64_t stored = destinations_[shard]->copy_in_end();
      if (stored != writers_[shard].rows()) {
        throw Error(sqlstate::kInternalError,
                    "the destination stored " + std::to_string(stored) + " rows, " +
                        std::to_string(writers_[shard].rows()) + " were sent");
      }
      result_.rows_per_shard[shard] = stored;
    });
  }
  ctx_.check_interrupts();
  for (size_t shard = 0; shard < destinations_.size(); shard++) {
    at_destination(shard, [&] { destinations_[shard]->exec("COMMIT"); });
  }
}

// Why the copy failed when the task was told to stop: the stop, not whatever error the stopped
// connection produced on its way down. Null when the task may go on.
std::exception_ptr TableCopier::interruption() {
  try {
    ctx_.check_interrupts();
    return nullptr;
  } catch (const Error &e) {
    return std::make_exception_ptr(Error(e.sqlstate(),
                                         "copy of " + table_.qualified() + " from source " +
                                             endpoint(source_params_) + " stopped: " + e.what(),
                                         e.detail(), e.hint()));
  }
}

// Error path: ends each shard's COPY with an error so the server discards the rows, then closes
// every session (the source's takes its temporary slot along). An abort that cannot finish (the
// shard is gone, the task is being stopped) is dropped: closing the session discards the
// uncommitted rows just the same.
void TableCopier::abort() noexcept {
  for (std::unique_ptr<Connection> &destination : destinations_) {
    try {
      destination->copy_in_abort("copy of " + table_.qualified() + " failed");
    } catch (...) {
    }
  }
  destinations_.clear();
  source_.reset();
}

template <typename Step>
auto TableCopier::at_source(Step &&step) -> decltype(step()) {
  try {
    return step();
  } catch (const TableCopyError &) {
    throw;  // a destination's failure, met while reading the source
  } catch (const Error &e) {
    throw TableCopyError(true, e.sqlstate(),
                         source_failure() + without_location(e.what(), source_params_), e.detail(),
                         e.hint());
  }
}

template <typename Step>
auto TableCopier::at_destination(size_t shard, Step &&step) -> decltype(step()) {
  try {
    return step();
  } catch (const TableCopyError &) {
    throw;
  } catch (const Error &e) {
    throw TableCopyError(false, e.sqlstate(),
                         destination_failure(shard) +
                             without_location(e.what(), destination_params_[shard]),
                         e.detail(), e.hint());
  }
}

std::string TableCopier::source_failure() const {
  return "copy of " + table_.qualified() + " from source " + endpoint(source_params_) +
         " failed: ";
}

std::string TableCopier::destination_failure(size_t shard) const {
  return "copy of " + table_.qualified() + " to destination shard " + std::to_string(shard) +
         " (" + endpoint(destination_params_[shard]) + ") failed: ";
}

}  // namespace

TableCopyResult copy_table(const TablePlan &table, const ConnParams &source,
                           const std::vector<ConnParams> &destinations,
                           const std::string &slot_name, TaskContext &ctx,
                           TableCopyObserver *observer, const StandbySource *standby) {
  if (destinations.empty()) {
    throw Error(sqlstate::kInvalidParameterValue,
                "cannot copy table " + table.qualified() + " to no destination shard");
  }
  TableCopier copier(table, source, destinations, slot_name, ctx, observer, standby);
  try {
    return copier.run();
  } catch (...) {
    std::exception_ptr failure = copier.interruption();
    if (!failure) failure = std::current_exception();
    copier.abort();
    std::rethrow_exception(failure);
  }
}

// Connection exceptions (class 08: refused, lost), and a server shut down or restarting.
bool lost_the_source(const std::exception &e) {
  const auto *failure = dynamic_cast<const TableCopyError *>(&e);
  if (!failure || !failure->at_source()) return false;
  const std::string &state = failure->sqlstate();
  return state.compare(0, 2, "08") == 0 || state == sqlstate::kAdminShutdown ||
         state == "57P02" /* crash_shutdown */ || state == "57P03" /* cannot_connect_now */;
}

// TRUNCATE ONLY: the copy reads the table itself (COPY TO never includes inheritance children),
// so the retry clears exactly that. Plain TRUNCATE (no CASCADE) is right: foreign keys are only
// created by schema sync `post`, after every copy, so nothing references the table yet; and with
// session_replication_role = replica, ON TRUNCATE triggers do not fire, as for the copied rows.
void truncate_destinations(const TablePlan &table, const std::vector<ConnParams> &destinations,
                           TaskContext &ctx) {
  const std::string sql =
      "SET session_replication_role = replica; TRUNCATE ONLY " + table.qualified();
  for (size_t shard = 0; shard < destinations.size(); shard++) {
    ctx.check_interrupts();
    try {
      Connection connection(destinations[shard], ctx);
      connection.exec(sql);
    } catch (const Error &e) {
      throw Error(e.sqlstate(),
                  "truncate of " + table.qualified() + " on destination shard " +
                      std::to_string(shard) + " (" + endpoint(destinations[shard]) +
                      ") failed: " + without_location(e.what(), destinations[shard]),
                  e.detail(), e.hint());
    }
  }
}

}  // namespace pgdog_reshard
