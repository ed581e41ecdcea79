#include "engine/replication_stream.h"

#include <chrono>
#include <optional>

#include "core/sql.h"

namespace pgdog_reshard {

namespace {

using Clock = std::chrono::steady_clock;

// proto_version 1 is what PostgreSQL 15 offers without streaming of in-progress transactions.
std::string start_command(const StreamRequest &r, bool binary) {
  return "START_REPLICATION SLOT " + quote_ident(r.slot) + " LOGICAL " + r.start.to_string() +
         " (proto_version '1', publication_names " + quote_literal(quote_ident(r.publication)) +
         (binary ? ", binary 'true'" : "") + ")";
}

// Published columns whose values cannot travel in binary: pgoutput sends every column of every
// published table in one format, so one such column anywhere makes the whole stream text.
// Binary needs a send function on the source and a receive function on the destination, and a
// format the destination reads the same way: built-in types (OIDs below FirstNormalObjectId, the
// same on every server) qualify; user-defined ones may not (an array or composite of them carries
// its element type's OID, which differs between servers; an extension's type may be missing).
constexpr const char *kTextOnlyColumnsSql = R"SQL(
SELECT count(*)
FROM pg_catalog.pg_publication_tables pt
JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
JOIN pg_catalog.pg_attribute a
  ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
WHERE pt.pubname = $1
  AND (t.oid >= 16384 OR t.typsend = 0 OR t.typreceive = 0
       OR e.oid >= 16384 OR e.typsend = 0 OR e.typreceive = 0)
)SQL";

// Remembers the commit time of the last transaction, for the observer's last-commit column.
class CommitClock : public PgOutputHandler {
 public:
  explicit CommitClock(PgOutputHandler &next) : next_(next) {}
  void on_begin(const Begin &m) override { next_.on_begin(m); }
  void on_commit(const Commit &m) override {
    last_commit_time = m.commit_time;
    next_.on_commit(m);
  }
  void on_relation(const Relation &m) override { next_.on_relation(m); }
  void on_insert(const Insert &m) override { next_.on_insert(m); }
  void on_update(const Update &m) override { next_.on_update(m); }
  void on_delete(const Delete &m) override { next_.on_delete(m); }
  void on_truncate(const Truncate &m) override { next_.on_truncate(m); }
  int64_t last_commit_time = 0;

 private:
  PgOutputHandler &next_;
};

// The plan's tables (by 1-based position in $1, qualified names) whose repeated UPDATEs the apply
// may merge (ApplyTable::merge_updates): a key identity (primary key or replica identity index)
// that is the only unique or exclusion index, and no trigger that fires in a replica session. The
// destinations' schema is the source's (schema sync).
constexpr const char *kMergeableTablesSql = R"SQL(
SELECT o.i
FROM unnest($1::text[]) WITH ORDINALITY AS o(name, i)
JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(o.name)
WHERE c.relreplident IN ('d', 'i')
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x
                  WHERE x.indrelid = c.oid AND (x.indisunique OR x.indisexclusion)
                    AND NOT (c.relreplident = 'd' AND x.indisprimary)
                    AND NOT (c.relreplident = 'i' AND x.indisreplident))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g
                  WHERE g.tgrelid = c.oid AND g.tgenabled IN ('A', 'R'))
)SQL";

void set_option(ConnParams &params, const std::string &key, const std::string &value) {
  for (auto &option : params.options) {
    if (option.first == key) {
      option.second = value;
      return;
    }
  }
  params.options.emplace_back(key, value);
}

struct SourceFacts {
  // Text values must be the bytes the source stores (the sharding hash is over them, as in the
  // copy), and in formats every destination parses the same way.
  std::string encoding;
  bool binary = false;  // every published column's values can travel in binary
  std::vector<ApplyTable> tables;  // the request's, with merge_updates set
};

SourceFacts source_facts(const StreamRequest &request, TaskContext &ctx) {
  Connection conn(request.source, ctx);
  SourceFacts facts;
  facts.encoding = conn.exec("SHOW server_encoding").value(0, 0);
  if (request.binary) {
    Result text_only = conn.exec_params(kTextOnlyColumnsSql, {request.publication});
    facts.binary = text_only.value(0, 0) == "0";
  }
  facts.tables = request.tables;
  std::vector<std::string> names;
  for (const ApplyTable &t : facts.tables) names.push_back(t.plan.qualified());
  Result mergeable = conn.exec_params(kMergeableTablesSql, {text_array(names)});
  for (int row = 0; row < mergeable.rows(); row++) {
    facts.tables[std::stoul(std::string(mergeable.value(row, 0))) - 1].merge_updates = true;
  }
  return facts;
}

std::vector<ConnParams> in_encoding(std::vector<ConnParams> destinations, const std::string &encoding) {
  for (ConnParams &d : destinations) set_option(d, "client_encoding", encoding);
  return destinations;
}

// The applier's reads from the source give text values, which must be in the same bytes as the
// stream's.
ApplyOptions in_encoding(ApplyOptions options, const std::string &encoding) {
  if (options.source) set_option(*options.source, "client_encoding", encoding);
  return options;
}

ConnParams replication_params(const ConnParams &source, const std::string &encoding) {
  ConnParams params = source;
  params.replication = true;
  params.application_name = "pgdog_reshard stream";
  set_option(params, "client_encoding", encoding);
  set_option(params, "options", "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3");
  return params;
}

class Stream {
 public:
  Stream(const StreamRequest &request, StreamObserver &observer, TaskContext &ctx)
      : request_(request),
        observer_(observer),
        ctx_(ctx),
        source_(source_facts(request, ctx)),
        applier_(source_.tables, in_encoding(request.destinations, source_.encoding), ctx,
                 in_encoding(request.apply, source_.encoding)),
        clock_(applier_) {
    applier_.set_start(request.start);
    conn_ = std::make_unique<Connection>(replication_params(request.source, source_.encoding), ctx);
  }

  void run() {
    ctx_.log(LogLevel::Info, "streaming slot " + quote_ident(request_.slot) + " from " + request_.start.to_string() +
                                 (source_.binary ? ", values in binary" : ", values in text") + origin_state());
    conn_->start_replication(start_command(request_, source_.binary));
    last_status_ = Clock::now();
    for (;;) {
      ctx_.check_interrupts();
      std::optional<std::string_view> message = conn_->read_copy_data(wait_ms());
      if (message) handle(*message);
      // Commit when the batch is due, or when the stream went quiet at a transaction boundary:
      // nothing is held waiting for the next change. Never inside a source transaction: with a
      // replication origin, a shard's progress says which transactions it holds whole.
      if (applier_.batch_due() || (!message && pending_ && !applier_.in_transaction())) commit_batch();
      report_progress();
      // Asking for a reply makes the source send its current WAL end: the lag stays fresh.
      if (Clock::now() - last_status_ >= std::chrono::milliseconds(request_.status_interval_ms)) send_status(true);
    }
  }

 private:
  int wait_ms() const { return std::min(request_.apply.batch_ms, request_.status_interval_ms); }

  void handle(std::string_view message) {
    ReplicationFrame frame = decode_frame(message);
    if (frame.keepalive) {
      observer_.source_position(frame.keepalive->wal_end);
      // Everything the source sent before this keepalive is applied: confirm up to its position.
      if (!pending_ && applier_.advance_idle(frame.keepalive->wal_end)) unreported_ = true;
      if (frame.keepalive->reply_requested) send_status(false);
      return;
    }
    observer_.source_position(frame.xlog->wal_end);
    decoder_.decode(frame.xlog->payload, clock_);
    pending_ = true;
  }

  // ", origin "o" (shard 0 at 0/1A2B, shard 1 at none)", or nothing without an origin.
  std::string origin_state() const {
    if (request_.apply.origin.empty()) return "";
    std::vector<std::optional<Lsn>> progress = applier_.origin_progress();
    std::string out = ", origin " + quote_ident(request_.apply.origin) + " (";
    for (size_t i = 0; i < progress.size(); i++) {
      out += (i ? ", shard " : "shard ") + std::to_string(i) + " at " +
             (progress[i] ? progress[i]->to_string() : "none");
    }
    return out + ")";
  }

  void commit_batch() {
    Lsn before = applier_.flushed();
    Lsn after = applier_.flush();
    pending_ = false;
    if (after != before) unreported_ = true;
  }

  // A new flushed position (a commit, or an idle keepalive's) goes to the observer (a catalog
  // write) and to the source at once: a restart replays what followed the persisted position,
  // which without a replication origin is harmless only for tables with a key (an INSERT into a
  // REPLICA IDENTITY FULL table would be a second row), so that window stays as small as it can.
  void report_progress() {
    if (!unreported_) return;
    observer_.flushed(applier_.flushed(), clock_.last_commit_time);
    send_status(false);
    unreported_ = false;
  }

  void send_status(bool reply) {
    Lsn flushed = applier_.flushed();
    conn_->send_copy_data(encode_status_update(flushed, flushed, flushed, pg_epoch_now_us(), reply));
    last_status_ = Clock::now();
  }

  const StreamRequest &request_;
  StreamObserver &observer_;
  TaskContext &ctx_;
  SourceFacts source_;
  ChangeApplier applier_;
  CommitClock clock_;
  PgOutputDecoder decoder_;
  std::unique_ptr<Connection> conn_;
  Clock::time_point last_status_;
  bool pending_ = false;     // changes received since the last commit
  bool unreported_ = false;  // a flushed position not yet reported
};

}  // namespace

void stream_changes(const StreamRequest &request, StreamObserver &observer, TaskContext &ctx) {
  Stream stream(request, observer, ctx);
  stream.run();
}

}  // namespace pgdog_reshard
