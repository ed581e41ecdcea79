// ChangeApplier: see apply.h for what it promises. How:
//
// Each change is turned into a row indexed by the plan's columns (Field), routed by its sharding key,
// and sent at once as a prepared statement on the right shards' pipelines; nothing waits for a
// result except the rare key move whose new row lacks unchanged TOASTed values. Statements are
// built per shape (which columns carry a value, which are NULL or unchanged) and prepared lazily
// per shard, so a steady stream parses nothing. A destination transaction opens lazily on each
// shard a batch touches and stays open across source transactions until flush().
//
// Values travel as parameters of unspecified type, in the format pgoutput sent them: the
// destination gives each its column's type. Binary values (the stream asks for them only when every
// published column has a built-in type, whose send format carries no server-specific OID) are read
// by the type's receive function; text ones are parsed, which is right for every type, including
// user-defined ones whose OIDs differ between servers. The destination sessions parse dates in ISO
// style, as pgoutput prints them when the replication session runs with DateStyle = ISO (what
// native logical replication sets up).
//
// Decisions worth knowing:
// - REPLICA IDENTITY FULL tables have no key to conflict on, and may hold identical rows: their
//   INSERT is a plain INSERT, which keeps legitimate duplicates; the price is that a replayed
//   insert (after a crash between a destination commit and the source confirmation) adds a
//   duplicate, unless a replication origin says the shard has it already (the reason for
//   ApplyOptions::origin). Their UPDATE and DELETE touch one row equal to the old row, found by ctid.
// - With an origin, a shard whose progress is past a source transaction's commit LSN gets nothing
//   of it (no BEGIN either): send() and the TRUNCATE path drop what is for it. Its progress is set
//   by each batch's commit, and the in-memory copy moves only once that COMMIT succeeded.
// - When the sharding key is not part of the replica identity, an UPDATE that changes it does
//   not say where the row was: the old row is looked for (deleted) on every other shard. Such
//   tables cost M statements per UPDATE, and a round trip when unchanged TOASTed values must be
//   fetched; the constructor logs a warning for them.
// - Merged updates (ApplyTable::merge_updates): an UPDATE that keeps its row's identity and shard
//   is held, its values copied, instead of sent; the next UPDATEs of the same row overwrite the
//   values they carry (an unchanged TOASTed value keeps the held one). A held update is sent when
//   any other change of its row comes (so each row's changes keep their order), when the held set
//   outgrows kMaxHeldUpdates or kMaxHeldBytes (the least recently updated first), before a
//   TRUNCATE, and at the end of the batch, in the batch's destination transaction. Only the
//   relative order of changes to different rows moves, which only a second unique constraint or a
//   destination trigger could notice: such tables are not merged.
// - Any error ends the applier: every destination session is closed (its open transaction rolls
//   back), and later calls throw 55000. The caller restarts from flushed().
#include "engine/apply.h"

#include <algorithm>
#include <chrono>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "core/pipeline.h"
#include "core/router.h"
#include "core/sql.h"
#include "engine/apply_origin.h"

namespace pgdog_reshard {

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kAllShards = RowRouter::kAllShards;

// Destination sessions: triggers and foreign keys do not fire (the source ran them already, and
// referenced rows may live on another shard); no timeout set for the application's roles may cut
// a batch; values are parsed in the styles pgoutput prints them in; a batch's commit is durable
// before its position is confirmed to the source (synchronous_commit = off on a destination could
// lose it in a crash after the source had already dropped the WAL). Rows are found by their
// identity's index, never by a sequential scan, as native logical replication does: the generic
// plan of "WHERE key = $1" on a small table is a sequential scan, which reads every version of a
// row the open batch updated again and again (a pgbench branch row: thousands), and the apply
// slowed to half speed on it. A table without an index (REPLICA IDENTITY FULL) is still scanned,
// at a cost that now looks huge to the planner: no JIT, which would compile every such statement
// (140 ms each), and is of no use for one row anyway.
constexpr const char *kSessionSetup =
    "SET session_replication_role = replica; SET statement_timeout = 0; SET lock_timeout = 0; "
    "SET synchronous_commit = on; SET enable_seqscan = off; SET jit = off; "
    "SET idle_in_transaction_session_timeout = 0; SET DateStyle = ISO; "
    "SET IntervalStyle = postgres";

// The source session (read only, and only by a replayed key move): values come out in the styles
// the destination sessions parse, floats exactly.
constexpr const char *kSourceSessionSetup =
    "SET default_transaction_read_only = on; SET DateStyle = ISO; SET IntervalStyle = postgres; "
    "SET extra_float_digits = 3";

// Interrupts are looked at every this many changes; waits are interruptible anyway.
constexpr uint64_t kCheckInterruptsEvery = 4096;

// Bounds of the held updates (see the top of this file): enough rows that a hot row is still held
// when its next update comes amid updates of many cold ones, and little memory.
constexpr size_t kMaxHeldUpdates = 1024;
constexpr size_t kMaxHeldBytes = 16u << 20;

// Types without a btree equality operator (or whose "=" is not identity, like box's area
// equality) compare by text form when a REPLICA IDENTITY FULL row is looked up: json, xml and the
// geometric types, and their arrays. Returns the type's name, for the cast that gives the value's
// parameter its type (a binary value is read by that type's receive function), or nullptr.
const char *text_compared_type(uint32_t type_oid) {
  switch (type_oid) {
    case 114: return "pg_catalog.json";
    case 199: return "pg_catalog.json[]";
    case 142: return "pg_catalog.xml";
    case 143: return "pg_catalog.xml[]";
    case 600: return "pg_catalog.point";
    case 1017: return "pg_catalog.point[]";
    case 601: return "pg_catalog.lseg";
    case 1018: return "pg_catalog.lseg[]";
    case 602: return "pg_catalog.path";
    case 1019: return "pg_catalog.path[]";
    case 603: return "pg_catalog.box";
    case 1020: return "pg_catalog.box[]";
    case 604: return "pg_catalog.polygon";
    case 1027: return "pg_catalog.polygon[]";
    case 628: return "pg_catalog.line";
    case 629: return "pg_catalog.line[]";
    case 718: return "pg_catalog.circle";
    case 719: return "pg_catalog.circle[]";
    default: return nullptr;
  }
}

// One column of a change, by plan column.
struct Field {
  enum class State : char { Absent, Null, Unchanged, Value };  // Absent: not sent, or not known
  State state = State::Absent;
  std::string_view text;  // the value: text, or the type's binary send format when `binary`
  bool binary = false;

  bool sent() const { return state == State::Null || state == State::Value; }
};
using Row = std::vector<Field>;

// Where a parameter's value comes from: the new row, or the key row (the old row if the change
// carries one, else the new row), at a plan column.
struct Param {
  bool from_key_row = false;
  int column = 0;
};

// A statement shape: what a statement does and to which columns. Equal shapes share one prepared
// statement; `key` is the shape in a few bytes, for the lookup.
struct Shape {
  // I insert, U update, D delete, X delete of a rename's target (see update), S select on the
  // source by the new row's identity (see fetch_source_values)
  char kind = 'I';
  std::vector<int> values;    // INSERT columns, or UPDATE SET columns, from the new row
  std::vector<int> where;     // matched by "=" against the key row
  std::vector<int> where_null;  // REPLICA IDENTITY FULL: matched by IS NULL
  std::vector<int> returning;   // DELETE ... RETURNING
  std::string key;

  void reset(char k) {
    kind = k;
    values.clear();
    where.clear();
    where_null.clear();
    returning.clear();
  }
};

struct Statement {
  std::string name;
  std::string sql;
  std::vector<Param> params;
  std::vector<int> returning;
};

// What the applier knows of one table.
struct TableState {
  ApplyTable def;
  std::string qualified;          // "schema"."name"
  std::vector<char> identity;     // per plan column: part of the replica identity
  std::vector<uint32_t> types;    // per plan column: source type OID (from the Relation message)
  mutable std::optional<RowRouter> router;  // routes binary keys (the copy's router, scratch inside)
  int key = -1;                   // plan column of the sharding key; -1: omnisharded
  bool full = false;              // REPLICA IDENTITY FULL
  bool key_in_identity = false;   // an old tuple, when sent, carries the key
};

// A source relation (by OID) and where its columns go.
struct RelationState {
  std::string schema;
  std::string name;
  int table = -1;                // index into tables_; -1: not in the plan
  std::vector<int> plan_column;  // per relation column
  std::vector<char> key;         // per relation column: part of the source's replica identity
};

struct Shard {
  std::unique_ptr<Connection> conn;
  std::unique_ptr<Pipeline> pipe;  // declared after conn: destroyed first
  std::vector<char> prepared;      // by statement id
  bool in_transaction = false;
  bool progress_prepared = false;  // kOriginProgressSql
  std::optional<Lsn> progress;     // the origin's: the end of the last source transaction committed
  bool has_transaction = false;    // the source transaction being received is below progress
};

// An UPDATE held back to be merged with the next ones of its row: its row's values, owned.
struct HeldUpdate {
  int table = 0;
  int shard = 0;
  std::string key;              // table, shard and identity values: the index's key
  std::vector<Field> fields;    // per plan column; text views are rebuilt from `values` when sent
  std::vector<std::string> values;
};

// What the old shards of a key move held (see fetch_old_values).
enum class OldRow {
  Found,      // the row, whose values fill the new row's missing ones
  Gone,       // nowhere: a replay of a move already done
  Committed,  // not where it was looked for, and an old shard already committed this transaction
};

int find_column(const std::vector<std::string> &columns, const std::string &name) {
  auto it = std::find(columns.begin(), columns.end(), name);
  return it == columns.end() ? -1 : static_cast<int>(it - columns.begin());
}

// Whether some column lacks a value: unchanged TOASTed, or not published.
bool incomplete(const Row &row) {
  return std::any_of(row.begin(), row.end(), [](const Field &f) { return !f.sent(); });
}

std::string placeholder(std::vector<Param> &params, bool from_key_row, int column) {
  params.push_back(Param{from_key_row, column});
  return "$" + std::to_string(params.size());
}

// The table as RowRouter's spec, so that the copy's checks of a rule apply to the stream too.
RouteSpec route_spec(const TablePlan &plan, int shards) {
  RouteSpec spec;
  spec.schema = plan.schema;
  spec.table = plan.name;
  spec.shards = shards;
  if (plan.key) {
    spec.rule = plan.key->rule;
    spec.key_index = plan.key->index;
    spec.key_type = plan.key->type;
  }
  return spec;
}

}  // namespace

class ChangeApplier::Impl {
 public:
  Impl(std::vector<ApplyTable> tables, const std::vector<ConnParams> &destinations,
       TaskContext &ctx, ApplyOptions options);

  void on_begin(const Begin &begin);
  void on_commit(const Commit &commit);
  void on_relation(const Relation &relation);
  void on_insert(const Insert &insert);
  void on_update(const Update &update);
  void on_delete(const Delete &del);
  void on_truncate(const Truncate &truncate);
  bool batch_due() const;
  bool advance_idle(Lsn position) {
    if (failure_ || in_transaction_ || batch_started_ || position <= flushed_) return false;
    flushed_ = position;
    return true;
  }
  Lsn flush();
  bool in_transaction() const { return in_transaction_; }
  std::vector<std::optional<Lsn>> origin_progress() const;

  template <typename Body>
  auto guarded(Body &&body) -> decltype(body());

  Lsn flushed_;
  ApplyStats stats_;

 private:
  // Setup
  void add_table(ApplyTable table, int shards);
  void connect(const ConnParams &params);
  Shard &source_session();
  void map_columns(RelationState &rel, const Relation &relation);

  // Changes
  TableState *table_for(uint32_t relation);  // sets rel_
  void to_row(const RelationState &rel, const Tuple &tuple, Row &row, bool key_only = false) const;
  bool identity_differs(const TableState &t) const;
  int shard_of(const TableState &t, const Row &row) const;
  void previous_shards(const TableState &t, bool has_old, bool renamed, int to);
  void move_row(const TableState &t, int to, const Row &key_row);
  OldRow fetch_old_values(const TableState &t, const Row &key_row);
  bool fetch_source_values(const TableState &t);
  void fill_missing(Result res, const std::vector<int> &returning);
  void upsert(const TableState &t, int shard, const Row &row);
  void update(const TableState &t, int shard, const Row &row, const Row &key_row, bool renamed);
  void clear_rename_target(const TableState &t, int shard, const Row &row, const Row &key_row);
  void remove(const TableState &t, int shard, const Row &key_row);
  bool in_copy(const TableState &t) const;

  // Held updates
  bool mergeable(const TableState &t, bool renamed) const;
  const std::string &held_key(const TableState &t, int shard, const Row &row);
  void hold_update(const TableState &t, int shard, const Row &row);
  void send_held(std::list<HeldUpdate>::iterator it);
  void release_held(const TableState &t, const Row &row);
  void release_all_held();
  void counted();
  bool dropped(Shard &shard);

  // Statements
  void shape_where(const TableState &t, const Row &key_row, Shape &shape) const;
  int statement(const TableState &t, Shape &shape);
  int update_statement(const TableState &t, const Row &row, const Row &key_row, bool renamed);
  std::string build_sql(const TableState &t, const Shape &shape, std::vector<Param> &params) const;
  std::string where_sql(const TableState &t, const Shape &shape, std::vector<Param> &params) const;
  std::string identity_match(const TableState &t, bool from_key_row, std::vector<Param> &params) const;
  Pipeline::Ticket send(int shard, int id, const Row &row, const Row &key_row, bool keep = false);
  Pipeline::Ticket execute(Shard &shard, int id, const Row &row, const Row &key_row, bool keep);
  void begin(Shard &shard);
  void set_progress(Shard &shard);

  // Batches and failure
  std::vector<Shard *> open_shards();
  void wait_all(const std::vector<Shard *> &shards, const std::vector<Pipeline::Ticket> &tickets);
  void fail() noexcept;
  void require_transaction(const char *what) const;

  TaskContext &ctx_;
  ApplyOptions options_;
  std::vector<TableState> tables_;
  std::map<std::pair<std::string, std::string>, int> by_name_;
  std::unordered_map<uint32_t, RelationState> relations_;
  std::vector<Shard> shards_;
  std::optional<Shard> source_;  // opened by the first key move that needs it
  std::vector<Statement> statements_;
  std::unordered_map<std::string, int> statement_ids_;

  // The source transaction being received, and the batch.
  bool in_transaction_ = false;
  Lsn final_lsn_;
  Lsn last_end_;
  int64_t last_commit_time_ = 0;  // of the transaction that ended at last_end_
  size_t batch_changes_ = 0;
  std::optional<Clock::time_point> batch_started_;
  std::optional<Error> failure_;

  // Held updates, least recently updated first, and by key.
  std::list<HeldUpdate> held_;
  std::unordered_map<std::string, std::list<HeldUpdate>::iterator> held_by_key_;
  size_t held_bytes_ = 0;

  // Scratch, reused by every change so that a steady stream allocates nothing.
  Row new_row_, old_row_, held_row_;
  std::string key_;
  Shape shape_;
  Params params_;
  std::vector<int> previous_;
  std::vector<Result> fetched_;  // DELETE ... RETURNING results the new row's views point into
  uint64_t changes_ = 0;
  const RelationState *rel_ = nullptr;  // the relation of the change being applied
  bool sent_ = false, dropped_ = false;  // what the change being applied did, for its stats
};

// ---------------------------------------------------------------------------------------------
// Setup

ChangeApplier::Impl::Impl(std::vector<ApplyTable> tables,
                          const std::vector<ConnParams> &destinations, TaskContext &ctx,
                          ApplyOptions options)
    : ctx_(ctx), options_(options) {
  if (destinations.empty()) {
    throw Error(sqlstate::kInvalidParameterValue, "cannot apply changes to a destination without shards");
  }
  for (ApplyTable &table : tables) add_table(std::move(table), static_cast<int>(destinations.size()));
  for (const ConnParams &params : destinations) connect(params);
}

void ChangeApplier::Impl::add_table(ApplyTable table, int shards) {
  const TablePlan &plan = table.plan;
  TableState t;
  t.router.emplace(route_spec(plan, shards));  // the copy's checks of the rule: throws on a bad one
  t.qualified = plan.qualified();
  t.full = plan.replica_identity_full;
  t.identity.assign(plan.columns.size(), t.full);
  for (const std::string &column : plan.identity_columns) {
    int index = find_column(plan.columns, column);
    if (index < 0) {
      throw Error(sqlstate::kInternalError, "replica identity column " + quote_ident(column) +
                                                " of table " + t.qualified + " is not in its plan");
    }
    t.identity[index] = 1;
  }
  t.types.assign(plan.columns.size(), 0);
  if (plan.key) {
    t.key = plan.key->index;
    t.key_in_identity = t.identity[t.key] != 0;
    if (!t.key_in_identity) {
      ctx_.log(LogLevel::Warning,
               "sharding key " + quote_ident(plan.key->column) + " of table " + t.qualified +
                   " is not part of its replica identity: pgoutput does not say which shard held "
                   "the row an UPDATE or DELETE is for, so each looks for it on every shard (add the "
                   "key to the primary key or set REPLICA IDENTITY FULL to avoid this)");
    }
  }
  by_name_[{plan.schema, plan.name}] = static_cast<int>(tables_.size());
  t.def = std::move(table);
  tables_.push_back(std::move(t));
}

void ChangeApplier::Impl::connect(const ConnParams &params) {
  Shard shard;
  shard.conn = std::make_unique<Connection>(params, ctx_);
  try {
    shard.conn->exec(kSessionSetup);
  } catch (const Error &e) {
    if (e.sqlstate() != sqlstate::kInsufficientPrivilege) throw;
    throw Error(e.sqlstate(), e.what(), e.detail(),
                "Connect to the destination as a superuser, or GRANT SET ON PARAMETER "
                "session_replication_role to the user.");
  }
  if (!options_.origin.empty()) {
    shard.progress = setup_origin_session(*shard.conn, shard_origin(options_.origin, shards_.size()), ctx_);
  }
  shard.pipe = std::make_unique<Pipeline>(*shard.conn, ctx_);
  shards_.push_back(std::move(shard));
}

Shard &ChangeApplier::Impl::source_session() {
  if (source_) return *source_;
  Shard source;
  source.conn = std::make_unique<Connection>(*options_.source, ctx_);
  source.conn->exec(kSourceSessionSetup);
  source.pipe = std::make_unique<Pipeline>(*source.conn, ctx_);
  return source_.emplace(std::move(source));
}

std::vector<std::optional<Lsn>> ChangeApplier::Impl::origin_progress() const {
  std::vector<std::optional<Lsn>> progress;
  if (options_.origin.empty()) return progress;
  for (const Shard &shard : shards_) progress.push_back(shard.progress);
  return progress;
}

// The relation's columns by name onto the plan's. Every column the source sends must exist in the
// plan (a column added later was never created on the destination), and the columns that locate
// and route a row must be sent.
void ChangeApplier::Impl::map_columns(RelationState &rel, const Relation &relation) {
  TableState &t = tables_[rel.table];
  const TablePlan &plan = t.def.plan;
  std::vector<char> sent(plan.columns.size(), 0);
  rel.plan_column.assign(relation.columns.size(), -1);
  rel.key.assign(relation.columns.size(), 0);
  for (size_t i = 0; i < relation.columns.size(); i++) {
    int index = find_column(plan.columns, relation.columns[i].name);
    if (index < 0) {
      throw Error(sqlstate::kFeatureNotSupported,
                  "column " + quote_ident(relation.columns[i].name) + " of table " + t.qualified +
                      " is not in the reshard's plan",
                  "The column was added on the source after the reshard started; schema changes "
                  "are not replicated.",
                  "Add the column on every destination shard, then restart the task.");
    }
    rel.plan_column[i] = index;
    rel.key[i] = relation.columns[i].key;
    t.types[index] = relation.columns[i].type_oid;
    sent[index] = 1;
  }
  for (size_t c = 0; c < plan.columns.size(); c++) {
    bool needed = (t.identity[c] && !t.full) || static_cast<int>(c) == t.key;
    if (needed && !sent[c]) {
      throw Error(sqlstate::kFeatureNotSupported,
                  "the source does not send column " + quote_ident(plan.columns[c]) + " of table " +
                      t.qualified + ", which identifies or routes its rows",
                  "The publication's column list leaves it out.",
                  "Publish every replica identity and sharding key column.");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Source transactions

// A shard's progress is the end LSN of the last source transaction it committed: the commit LSN of
// that one, or of an earlier one, is below it; that of any later one is at or past it.
void ChangeApplier::Impl::on_begin(const Begin &begin) {
  in_transaction_ = true;
  final_lsn_ = begin.final_lsn;
  for (Shard &shard : shards_) shard.has_transaction = shard.progress && final_lsn_ < *shard.progress;
  if (!batch_started_) batch_started_ = Clock::now();
}

void ChangeApplier::Impl::on_commit(const Commit &commit) {
  require_transaction("COMMIT");
  in_transaction_ = false;
  last_end_ = commit.end_lsn;
  last_commit_time_ = commit.commit_time;
  stats_.transactions++;
}

void ChangeApplier::Impl::on_relation(const Relation &relation) {
  RelationState &rel = relations_[relation.oid];
  rel.schema = relation.schema;
  rel.name = relation.name;
  auto it = by_name_.find({relation.schema, relation.name});
  rel.table = it == by_name_.end() ? -1 : it->second;
  rel.plan_column.clear();
  if (rel.table >= 0) map_columns(rel, relation);
}

void ChangeApplier::Impl::require_transaction(const char *what) const {
  if (in_transaction_) return;
  throw Error(sqlstate::kProtocolViolation,
              std::string("pgoutput sent ") + what + " outside a transaction (no BEGIN before it)");
}

// The table a change is for, or nullptr when the copy already holds the change.
TableState *ChangeApplier::Impl::table_for(uint32_t relation) {
  require_transaction("a change");
  auto it = relations_.find(relation);
  if (it == relations_.end()) {
    throw Error(sqlstate::kProtocolViolation,
                "pgoutput sent a change for relation " + std::to_string(relation) +
                    " before describing it (no Relation message)");
  }
  const RelationState &rel = *(rel_ = &it->second);
  if (rel.table < 0) {
    throw Error(sqlstate::kFeatureNotSupported,
                "table " + quote_qualified(rel.schema, rel.name) + " is not in the reshard's plan",
                "It was added to the publication after the reshard started, so it was neither "
                "created nor copied on the destination.",
                "Remove it from the publication, or start a new reshard that includes it.");
  }
  batch_changes_++;
  if (++changes_ % kCheckInterruptsEvery == 0) ctx_.check_interrupts();
  TableState &t = tables_[rel.table];
  if (in_copy(t)) {
    stats_.skipped++;
    return nullptr;
  }
  return &t;
}

// Whether the copy of `t` already holds the transaction being received. The watermark is the copy
// slot's consistent point, where its snapshot was taken: the end of the record that made it
// consistent. A transaction is in that snapshot when its commit record (final_lsn: where the
// commit record starts) comes before it; one whose commit record starts exactly there is not.
// PostgreSQL decides the same way (SnapBuildXactNeedsSkip: commit < start_decoding_at).
bool ChangeApplier::Impl::in_copy(const TableState &t) const { return final_lsn_ < t.def.watermark; }

// key_only: an old tuple of kind 'K', where pgoutput sends the columns outside the replica
// identity as NULL; they are not known, so they are left Absent.
void ChangeApplier::Impl::to_row(const RelationState &rel, const Tuple &tuple, Row &row,
                                 bool key_only) const {
  if (tuple.size() != rel.plan_column.size()) {
    throw Error(sqlstate::kProtocolViolation,
                "pgoutput sent " + std::to_string(tuple.size()) + " columns for table " +
                    quote_qualified(rel.schema, rel.name) + ", whose Relation message has " +
                    std::to_string(rel.plan_column.size()));
  }
  row.assign(tables_[rel.table].def.plan.columns.size(), Field());
  for (size_t i = 0; i < tuple.size(); i++) {
    if (key_only && !rel.key[i]) continue;
    Field &field = row[rel.plan_column[i]];
    switch (tuple[i].kind) {
      case ColumnValue::Kind::Null: field.state = Field::State::Null; break;
      case ColumnValue::Kind::Unchanged: field.state = Field::State::Unchanged; break;
      case ColumnValue::Kind::Text:
      case ColumnValue::Kind::Binary:
        field.state = Field::State::Value;
        field.text = tuple[i].data;
        field.binary = tuple[i].kind == ColumnValue::Kind::Binary;
        break;
    }
  }
}

// A change counts as applied unless every shard it was for already had it.
void ChangeApplier::Impl::counted() {
  if (dropped_) stats_.already_applied++;
  if (sent_ || !dropped_) stats_.applied++;
  sent_ = dropped_ = false;
}

// Whether the shard already committed the source transaction being received: then nothing of it
// is sent there (noted for the change's stats).
bool ChangeApplier::Impl::dropped(Shard &shard) {
  if (shard.has_transaction) dropped_ = true;
  return shard.has_transaction;
}

// ---------------------------------------------------------------------------------------------
// Changes

void ChangeApplier::Impl::on_insert(const Insert &insert) {
  TableState *t = table_for(insert.relation);
  if (!t) return;
  to_row(*rel_, insert.new_tuple, new_row_);
  release_held(*t, new_row_);
  int shard = shard_of(*t, new_row_);
  for (size_t s = 0; s < shards_.size(); s++) {
    if (shard == kAllShards || shard == static_cast<int>(s)) upsert(*t, static_cast<int>(s), new_row_);
  }
  counted();
}

void ChangeApplier::Impl::on_update(const Update &update) {
  TableState *t = table_for(update.relation);
  if (!t) return;
  to_row(*rel_, update.new_tuple, new_row_);
  bool has_old = update.old_kind != 0;
  if (has_old) to_row(*rel_, update.old_tuple, old_row_, update.old_kind == 'K');
  const Row &key_row = has_old ? old_row_ : new_row_;
  bool renamed = has_old && identity_differs(*t);
  int to = shard_of(*t, new_row_);
  bool merge = mergeable(*t, renamed);
  if (!merge) {
    release_held(*t, key_row);
    if (renamed) release_held(*t, new_row_);
  }
  // The update of the row on one shard where it stays: held to be merged, or sent.
  auto update_on = [&](int shard) {
    if (merge) {
      hold_update(*t, shard, new_row_);
    } else {
      this->update(*t, shard, new_row_, key_row, renamed);
    }
  };
  if (to == kAllShards) {
    for (size_t s = 0; s < shards_.size(); s++) update_on(static_cast<int>(s));
  } else {
    previous_shards(*t, has_old, renamed, to);
    if (previous_.empty()) {
      update_on(to);
    } else {
      move_row(*t, to, key_row);
    }
  }
  counted();
}

void ChangeApplier::Impl::on_delete(const Delete &del) {
  TableState *t = table_for(del.relation);
  if (!t) return;
  to_row(*rel_, del.old_tuple, old_row_, del.old_kind == 'K');
  release_held(*t, old_row_);
  // Without the key in the old tuple the row may be on any shard: delete it wherever it is.
  int shard = t->key >= 0 && (t->full || t->key_in_identity) ? shard_of(*t, old_row_) : kAllShards;
  for (size_t s = 0; s < shards_.size(); s++) {
    if (shard == kAllShards || shard == static_cast<int>(s)) remove(*t, static_cast<int>(s), old_row_);
  }
  counted();
}

// One TRUNCATE ONLY of every mapped table the copy does not already reflect, on every shard, so
// that tables referencing each other by foreign key are truncated together, as on the source.
// CASCADE is never passed on: it could reach destination tables the source did not truncate.
void ChangeApplier::Impl::on_truncate(const Truncate &truncate) {
  require_transaction("TRUNCATE");
  std::vector<std::string> names;
  for (uint32_t oid : truncate.relations) {
    auto it = relations_.find(oid);
    if (it == relations_.end() || it->second.table < 0) {
      std::string name = it == relations_.end() ? "relation " + std::to_string(oid)
                                                : quote_qualified(it->second.schema, it->second.name);
      ctx_.log(LogLevel::Warning, "TRUNCATE of " + name + " not applied: it is not in the reshard's plan");
      continue;
    }
    batch_changes_++;
    const TableState &t = tables_[it->second.table];
    if (in_copy(t)) {
      stats_.skipped++;
      continue;
    }
    names.push_back(t.qualified);
  }
  if (names.empty()) return;
  release_all_held();  // every row keeps its changes in order, the TRUNCATE among them
  std::string sql = "TRUNCATE ONLY ";
  for (size_t i = 0; i < names.size(); i++) sql += (i ? ", " : "") + names[i];
  if (truncate.restart_identity) sql += " RESTART IDENTITY";
  for (Shard &shard : shards_) {
    if (dropped(shard)) continue;
    begin(shard);
    shard.pipe->query(sql);
    sent_ = true;
  }
  counted();
}

// The shard a row's key routes to, or kAllShards for an omnisharded table.
int ChangeApplier::Impl::shard_of(const TableState &t, const Row &row) const {
  if (t.key < 0) return kAllShards;
  const Field &key = row[t.key];
  const std::string &column = t.def.plan.key->column;
  if (key.state == Field::State::Null) {
    throw Error(sqlstate::kNullValueNotAllowed,
                "sharding key " + quote_ident(column) + " of table " + t.qualified + " is NULL",
                "A row without a sharding key belongs to no shard.",
                "Make the column NOT NULL on the source, fix the rows, and restart the task.");
  }
  if (key.state != Field::State::Value) {
    throw Error(sqlstate::kProtocolViolation, "pgoutput sent no value for sharding key " +
                                                  quote_ident(column) + " of table " + t.qualified);
  }
  if (key.binary) return t.router->route_key(CopyField{key.text.data(), static_cast<int32_t>(key.text.size())});
  return route_text_key(*t.def.plan.key->rule, key.text, static_cast<int>(shards_.size()),
                        t.qualified);
}

// Whether an UPDATE's old tuple names another identity than its new tuple. pgoutput also sends
// the old key when it is unchanged but TOASTed, so the values are compared. Never for REPLICA
// IDENTITY FULL, whose old row comes with every UPDATE and is matched as a whole.
bool ChangeApplier::Impl::identity_differs(const TableState &t) const {
  if (t.full) return false;
  for (size_t c = 0; c < new_row_.size(); c++) {
    if (!t.identity[c]) continue;
    const Field &before = old_row_[c], &after = new_row_[c];
    if (before.state != after.state || before.binary != after.binary || before.text != after.text) return true;
  }
  return false;
}

// Into previous_: the shards that may hold the row before this update and must lose it, given
// that it belongs on `to` now. Empty when it stays where it is.
void ChangeApplier::Impl::previous_shards(const TableState &t, bool has_old, bool renamed, int to) {
  previous_.clear();
  if (has_old && old_row_[t.key].state != Field::State::Absent) {
    int from = shard_of(t, old_row_);
    if (from != to) previous_.push_back(from);
    return;
  }
  // No old key: the key is unchanged when it is part of the identity (or the identity is FULL,
  // whose old row always comes). Otherwise it may have changed unseen: the row may be on any
  // shard, on `to` too under its old identity when the identity changed as well.
  if (t.full || t.key_in_identity) return;
  for (int s = 0; s < static_cast<int>(shards_.size()); s++) {
    if (s != to || renamed) previous_.push_back(s);
  }
}

// The row leaves the shards in previous_ and is written whole on `to`. Values the new tuple lacks
// (unchanged TOASTed ones) come from the old row: the old tuple has them for REPLICA IDENTITY FULL;
// otherwise the old shard returns them as it deletes the row.
void ChangeApplier::Impl::move_row(const TableState &t, int to, const Row &key_row) {
  if (t.full) {
    for (size_t c = 0; c < new_row_.size(); c++) {
      if (!new_row_[c].sent()) new_row_[c] = old_row_[c];
    }
    for (int s : previous_) remove(t, s, old_row_);
    upsert(t, to, new_row_);
    return;
  }
  if (!incomplete(new_row_)) {
    for (int s : previous_) remove(t, s, key_row);
    upsert(t, to, new_row_);
    return;
  }
  // Gone from every old shard: a replay of a move already done, so the row is on `to` under its
  // new identity; the changed columns are set again. Not looked for on an old shard that already
  // committed this transaction: if `to` has not, it may never have got the row (a crash between
  // the shards' COMMITs), and the missing values come from the source instead.
  switch (fetch_old_values(t, key_row)) {
    case OldRow::Found:
      upsert(t, to, new_row_);
      return;
    case OldRow::Committed:
      if (!options_.source) break;
      if (!shards_[to].has_transaction && fetch_source_values(t)) upsert(t, to, new_row_);
      return;
    case OldRow::Gone:
      break;
  }
  update(t, to, new_row_, new_row_, false);
}

// DELETE ... RETURNING on every shard in previous_ that does not already have this transaction, at
// once, then waits for them (the one place the applier waits for a result mid-batch). Fills
// new_row_'s missing values from the row found.
OldRow ChangeApplier::Impl::fetch_old_values(const TableState &t, const Row &key_row) {
  shape_.reset('D');
  shape_where(t, key_row, shape_);
  for (size_t c = 0; c < new_row_.size(); c++) {
    if (!new_row_[c].sent()) shape_.returning.push_back(static_cast<int>(c));
  }
  int id = statement(t, shape_);
  std::vector<std::pair<int, Pipeline::Ticket>> tickets;
  bool committed = false;
  for (int s : previous_) {
    if (dropped(shards_[s])) {
      committed = true;
    } else {
      tickets.emplace_back(s, send(s, id, key_row, key_row, true));
    }
  }
  fetched_.clear();
  bool found = false;
  for (const auto &[s, ticket] : tickets) {
    shards_[s].pipe->wait_for(ticket);
    Result res = shards_[s].pipe->take(ticket);
    if (res.rows() == 0) continue;
    fill_missing(std::move(res), statements_[id].returning);
    found = true;
  }
  return found ? OldRow::Found : committed ? OldRow::Committed : OldRow::Gone;
}

// The unchanged TOASTed values of a key move replayed onto a shard that never got the row, from
// the source's current row with the new row's identity (its old shard already committed the move,
// and deleted the row, before a crash that kept the new shard from committing it).
// The current value, not the one of this transaction's time, is right: the replay goes on to
// apply every later change of the row, and an UPDATE sends every value it changed, so the row
// converges to the source's current state anyway. A row the source no longer has is not written:
// a later change in the replay removed it (its DELETE would remove it here anyway).
bool ChangeApplier::Impl::fetch_source_values(const TableState &t) {
  Shard &source = source_session();
  shape_.reset('S');
  for (size_t c = 0; c < new_row_.size(); c++) {
    if (!new_row_[c].sent()) shape_.returning.push_back(static_cast<int>(c));
  }
  int id = statement(t, shape_);
  Pipeline::Ticket ticket = execute(source, id, new_row_, new_row_, true);
  source.pipe->wait_for(source.pipe->sync());  // the sync ends the read's implicit transaction
  Result res = source.pipe->take(ticket);
  if (res.rows() == 0) return false;
  fill_missing(std::move(res), statements_[id].returning);
  return true;
}

// new_row_'s values at plan columns `returning` from the first row of a result (text).
void ChangeApplier::Impl::fill_missing(Result res, const std::vector<int> &returning) {
  for (size_t i = 0; i < returning.size(); i++) {
    Field &field = new_row_[returning[i]];
    field.state = res.is_null(0, static_cast<int>(i)) ? Field::State::Null : Field::State::Value;
    field.text = res.value(0, static_cast<int>(i));
    field.binary = false;  // results come as text
  }
  fetched_.push_back(std::move(res));  // new_row_ points into it until the upsert is sent
}

// ---------------------------------------------------------------------------------------------
// Held updates (see the top of this file)

// An UPDATE that keeps its row where it is, on a table whose rows cannot conflict with each other
// but by identity. REPLICA IDENTITY FULL rows have no identity to merge by; a sharding key outside
// the identity makes an update look for its row on every shard.
bool ChangeApplier::Impl::mergeable(const TableState &t, bool renamed) const {
  return t.def.merge_updates && !t.full && !renamed && (t.key < 0 || t.key_in_identity);
}

// Into key_: the held update's key of the row (its identity values) on the shard.
const std::string &ChangeApplier::Impl::held_key(const TableState &t, int shard, const Row &row) {
  key_.assign(std::to_string(&t - tables_.data()));
  key_ += '/';
  key_ += std::to_string(shard);
  for (size_t c = 0; c < row.size(); c++) {
    if (!t.identity[c]) continue;
    const Field &field = row[c];
    key_ += '/';
    key_ += static_cast<char>(field.state);
    key_ += field.binary ? 'b' : 't';
    key_ += std::to_string(field.text.size());
    key_ += ':';
    key_.append(field.text);
  }
  return key_;
}

// Merges the update into the row's held one, or holds it, evicting (sending) the least recently
// updated held rows while the set is over its bounds.
void ChangeApplier::Impl::hold_update(const TableState &t, int shard, const Row &row) {
  if (dropped(shards_[shard])) return;
  sent_ = true;
  const std::string &key = held_key(t, shard, row);
  auto found = held_by_key_.find(key);
  std::list<HeldUpdate>::iterator it;
  if (found != held_by_key_.end()) {
    it = found->second;
    held_.splice(held_.end(), held_, it);
    stats_.merged++;
  } else {
    HeldUpdate held;
    held.table = static_cast<int>(&t - tables_.data());
    held.shard = shard;
    held.key = key;
    held.fields.assign(row.size(), Field());
    held.values.assign(row.size(), std::string());
    it = held_.insert(held_.end(), std::move(held));
    held_by_key_.emplace(it->key, it);
  }
  for (size_t c = 0; c < row.size(); c++) {
    if (!row[c].sent()) continue;
    held_bytes_ += row[c].text.size();
    held_bytes_ -= it->values[c].size();
    it->fields[c] = row[c];
    it->values[c].assign(row[c].text);
  }
  while (held_.size() > kMaxHeldUpdates || (held_bytes_ > kMaxHeldBytes && held_.size() > 1)) {
    send_held(held_.begin());
  }
}

// Sends a held update in its shard's batch transaction, and forgets it. The shard lacks the source
// transaction the update came from (or it would not have been held), so it lacks every later one.
void ChangeApplier::Impl::send_held(std::list<HeldUpdate>::iterator it) {
  const TableState &t = tables_[it->table];
  held_row_ = it->fields;
  for (size_t c = 0; c < held_row_.size(); c++) {
    if (held_row_[c].state == Field::State::Value) held_row_[c].text = it->values[c];
    held_bytes_ -= it->values[c].size();
  }
  int id = update_statement(t, held_row_, held_row_, false);
  if (id >= 0) {
    Shard &shard = shards_[it->shard];
    begin(shard);
    execute(shard, id, held_row_, held_row_, false);
  }
  held_by_key_.erase(it->key);
  held_.erase(it);
}

// Sends the held updates of the row (by its identity), on every shard, before another change of it.
void ChangeApplier::Impl::release_held(const TableState &t, const Row &row) {
  if (held_.empty() || !t.def.merge_updates) return;
  for (int s = 0; s < static_cast<int>(shards_.size()); s++) {
    auto found = held_by_key_.find(held_key(t, s, row));
    if (found != held_by_key_.end()) send_held(found->second);
  }
}

void ChangeApplier::Impl::release_all_held() {
  while (!held_.empty()) send_held(held_.begin());
}

// ---------------------------------------------------------------------------------------------
// Statements per shape

void ChangeApplier::Impl::upsert(const TableState &t, int shard, const Row &row) {
  shape_.reset('I');
  for (size_t c = 0; c < row.size(); c++) {
    if (row[c].sent()) shape_.values.push_back(static_cast<int>(c));
  }
  send(shard, statement(t, shape_), row, row);
}

// SET the columns the new tuple carries: not the identity unless it changed (non-FULL tables), and
// never unchanged TOASTed values.
void ChangeApplier::Impl::update(const TableState &t, int shard, const Row &row,
                                 const Row &key_row, bool renamed) {
  if (renamed) clear_rename_target(t, shard, row, key_row);
  int id = update_statement(t, row, key_row, renamed);
  if (id >= 0) send(shard, id, row, key_row);
}

// The UPDATE's statement, or -1 when it sets nothing (only the identity, unchanged).
int ChangeApplier::Impl::update_statement(const TableState &t, const Row &row, const Row &key_row,
                                          bool renamed) {
  shape_.reset('U');
  for (size_t c = 0; c < row.size(); c++) {
    bool identity = t.identity[c] && !t.full;
    if (row[c].sent() && (!identity || renamed)) shape_.values.push_back(static_cast<int>(c));
  }
  if (shape_.values.empty()) return -1;
  shape_where(t, key_row, shape_);
  return statement(t, shape_);
}

// An UPDATE that changes the identity, replayed, finds both the row under its old identity (put
// back by the replayed INSERT) and the row under the new one (from the first pass): renaming the
// first would violate the key. The second goes first, but only while the first exists, so that a
// replay starting after the INSERT keeps the row it already has. On a first pass it deletes
// nothing: at that point of the stream, the source had no row with the new identity.
void ChangeApplier::Impl::clear_rename_target(const TableState &t, int shard, const Row &row,
                                              const Row &key_row) {
  shape_.reset('X');
  for (size_t c = 0; c < row.size(); c++) {
    if (t.identity[c]) shape_.where.push_back(static_cast<int>(c));
  }
  send(shard, statement(t, shape_), row, key_row);
}

void ChangeApplier::Impl::remove(const TableState &t, int shard, const Row &key_row) {
  shape_.reset('D');
  shape_where(t, key_row, shape_);
  send(shard, statement(t, shape_), key_row, key_row);
}

// Identity columns by "="; for REPLICA IDENTITY FULL every column the old row carries, NULLs by
// IS NULL (so that an index on the columns can serve the lookup).
void ChangeApplier::Impl::shape_where(const TableState &t, const Row &key_row, Shape &shape) const {
  for (size_t c = 0; c < key_row.size(); c++) {
    if (!t.identity[c]) continue;
    const Field &field = key_row[c];
    if (t.full && field.state == Field::State::Null) {
      shape.where_null.push_back(static_cast<int>(c));
    } else if (field.state == Field::State::Value) {
      shape.where.push_back(static_cast<int>(c));
    } else if (!t.full) {
      throw Error(sqlstate::kObjectNotInPrerequisiteState,
                  "pgoutput sent no value for replica identity column " +
                      quote_ident(t.def.plan.columns[c]) + " of table " + t.qualified,
                  "The table's replica identity changed on the source after the reshard started.");
    }
  }
  if (shape.where.empty() && shape.where_null.empty()) {
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "pgoutput sent no column to find the row of table " + t.qualified + " by");
  }
}

// The prepared statement for a shape, built the first time the shape is seen.
int ChangeApplier::Impl::statement(const TableState &t, Shape &shape) {
  std::string &key = shape.key;
  key.assign(1, shape.kind);
  key += std::to_string(&t - tables_.data());
  for (const auto *list : {&shape.values, &shape.where, &shape.where_null, &shape.returning}) {
    key += '/';
    for (int c : *list) {
      key += std::to_string(c);
      key += ',';
    }
  }
  auto it = statement_ids_.find(key);
  if (it != statement_ids_.end()) return it->second;
  Statement st;
  st.name = "pgdog_apply_" + std::to_string(statements_.size());
  st.sql = build_sql(t, shape, st.params);
  st.returning = shape.returning;
  statements_.push_back(std::move(st));
  return statement_ids_[key] = static_cast<int>(statements_.size() - 1);
}

std::string ChangeApplier::Impl::build_sql(const TableState &t, const Shape &shape,
                                           std::vector<Param> &params) const {
  const std::vector<std::string> &columns = t.def.plan.columns;
  std::string sql;
  if (shape.kind == 'I') {
    std::vector<std::string> names;
    std::string values, updates;
    for (int c : shape.values) {
      names.push_back(columns[c]);
      values += (values.empty() ? "" : ", ") + placeholder(params, false, c);
      if (t.identity[c]) continue;
      std::string column = quote_ident(columns[c]);
      updates += (updates.empty() ? "" : ", ") + column + " = EXCLUDED." + column;
    }
    if (names.empty()) return "INSERT INTO " + t.qualified + " DEFAULT VALUES";
    sql = "INSERT INTO " + t.qualified + " (" + quote_ident_list(names) + ") VALUES (" + values + ")";
    if (t.full) return sql;  // no key to conflict on: see the top of this file
    std::vector<std::string> identity;
    for (size_t c = 0; c < columns.size(); c++) {
      if (t.identity[c]) identity.push_back(columns[c]);
    }
    sql += " ON CONFLICT (" + quote_ident_list(identity) + ") DO ";
    return sql + (updates.empty() ? "NOTHING" : "UPDATE SET " + updates);
  }
  if (shape.kind == 'X') {
    return "DELETE FROM " + t.qualified + " WHERE " + identity_match(t, false, params) +
           " AND EXISTS (SELECT 1 FROM " + t.qualified + " WHERE " + identity_match(t, true, params) + ")";
  }
  if (shape.kind == 'S') {
    std::vector<std::string> names;
    for (int c : shape.returning) names.push_back(columns[c]);
    return "SELECT " + quote_ident_list(names) + " FROM " + t.qualified + " WHERE " +
           identity_match(t, false, params);
  }
  if (shape.kind == 'U') {
    sql = "UPDATE " + t.qualified + " SET ";
    for (size_t i = 0; i < shape.values.size(); i++) {
      sql += (i ? ", " : "") + quote_ident(columns[shape.values[i]]) + " = " +
             placeholder(params, false, shape.values[i]);
    }
  } else {
    sql = "DELETE FROM " + t.qualified;
  }
  sql += " WHERE " + where_sql(t, shape, params);
  if (!shape.returning.empty()) {
    std::vector<std::string> names;
    for (int c : shape.returning) names.push_back(columns[c]);
    sql += " RETURNING " + quote_ident_list(names);
  }
  return sql;
}

// "a" = $1 AND "b" = $2 over the identity columns, from the new row or the key row.
std::string ChangeApplier::Impl::identity_match(const TableState &t, bool from_key_row,
                                                std::vector<Param> &params) const {
  std::string cond;
  for (size_t c = 0; c < t.identity.size(); c++) {
    if (!t.identity[c]) continue;
    cond += (cond.empty() ? "" : " AND ") + quote_ident(t.def.plan.columns[c]) + " = " +
            placeholder(params, from_key_row, static_cast<int>(c));
  }
  return cond;
}

// By identity; for REPLICA IDENTITY FULL, the one row (of possibly several identical ones) whose
// ctid a lookup on every column finds first.
std::string ChangeApplier::Impl::where_sql(const TableState &t, const Shape &shape,
                                           std::vector<Param> &params) const {
  const std::vector<std::string> &columns = t.def.plan.columns;
  std::string cond;
  for (int c : shape.where) {
    std::string column = quote_ident(columns[c]);
    std::string value = placeholder(params, true, c);
    const char *type = t.full ? text_compared_type(t.types[c]) : nullptr;
    if (type) {
      column += "::text";
      value += "::" + std::string(type) + "::text";
    }
    cond += (cond.empty() ? "" : " AND ") + column + " = " + value;
  }
  for (int c : shape.where_null) {
    cond += (cond.empty() ? "" : " AND ") + quote_ident(columns[c]) + " IS NULL";
  }
  if (!t.full) return cond;
  return "ctid = (SELECT ctid FROM " + t.qualified + " WHERE " + cond + " LIMIT 1)";
}

// Sends one execution on one shard in its batch's transaction, unless the shard already has the
// source transaction (then nothing is sent and the ticket is 0).
Pipeline::Ticket ChangeApplier::Impl::send(int shard_index, int id, const Row &row,
                                           const Row &key_row, bool keep) {
  Shard &shard = shards_[shard_index];
  if (dropped(shard)) return 0;
  begin(shard);
  sent_ = true;
  return execute(shard, id, row, key_row, keep);
}

// One execution on a session, preparing the statement there first if needed.
Pipeline::Ticket ChangeApplier::Impl::execute(Shard &shard, int id, const Row &row,
                                              const Row &key_row, bool keep) {
  const Statement &st = statements_[id];
  if (shard.prepared.size() <= static_cast<size_t>(id)) shard.prepared.resize(id + 1, 0);
  if (!shard.prepared[id]) {
    shard.pipe->prepare(st.name, st.sql, static_cast<int>(st.params.size()));
    shard.prepared[id] = 1;
  }
  params_.clear();
  for (const Param &p : st.params) {
    const Field &field = (p.from_key_row ? key_row : row)[p.column];
    if (field.state == Field::State::Value) {
      if (field.binary) {
        params_.add_binary(field.text);
      } else {
        params_.add_text(field.text);
      }
    } else {
      params_.add_null();
    }
  }
  return shard.pipe->execute(st.name, params_, keep);
}

void ChangeApplier::Impl::begin(Shard &shard) {
  if (shard.in_transaction) return;
  shard.pipe->query("BEGIN");
  shard.in_transaction = true;
}

// ---------------------------------------------------------------------------------------------
// Batches

bool ChangeApplier::Impl::batch_due() const {
  if (failure_ || in_transaction_ || !batch_started_) return false;
  auto age = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *batch_started_);
  return batch_changes_ >= options_.batch_changes || age.count() >= options_.batch_ms;
}

// Two rounds, each sent to every shard before waiting on any, so the shards work in parallel:
// first a sync point, which reports every statement's outcome, so that an error anywhere leaves
// every shard uncommitted (fail() then closes the sessions: they roll back); then COMMIT. Only a
// failure between the COMMITs (a shard lost mid-commit) can leave part of a batch committed:
// without two-phase commit, replaying the batch, which is idempotent, repairs it; with an origin,
// the shards that committed skip it. (Deferred constraints do not fail a COMMIT here: their checks
// are triggers, which replica sessions do not fire.)
Lsn ChangeApplier::Impl::flush() {
  ctx_.check_interrupts();
  bool origin = !options_.origin.empty();
  if (origin && in_transaction_) {
    throw Error(sqlstate::kInternalError,
                "cannot commit part of a source transaction on the destination shards",
                "Their replication origin's progress says which source transactions they hold "
                "whole; a replay would skip the rest of this one.");
  }
  release_all_held();
  std::vector<Shard *> open = open_shards();
  if (!open.empty()) {
    std::vector<Pipeline::Ticket> synced, committed, syncs;
    for (Shard *shard : open) {
      if (origin) set_progress(*shard);
      synced.push_back(shard->pipe->sync());
    }
    wait_all(open, synced);
    for (Shard *shard : open) {
      committed.push_back(shard->pipe->query("COMMIT", true));
      syncs.push_back(shard->pipe->sync());
    }
    wait_all(open, syncs);
    for (size_t i = 0; i < open.size(); i++) {
      std::string tag = open[i]->pipe->take(committed[i]).command_tag();
      if (tag != "COMMIT") {
        throw Error(sqlstate::kInternalError,
                    open[i]->pipe->location() + ": COMMIT of an applied batch answered " + tag);
      }
      open[i]->in_transaction = false;
      if (origin) open[i]->progress = last_end_;
    }
    stats_.batches++;
  }
  if (last_end_ > flushed_) flushed_ = last_end_;
  batch_changes_ = 0;
  batch_started_.reset();
  if (in_transaction_) batch_started_ = Clock::now();  // the rest of this transaction: a new batch
  return flushed_;
}

// The batch's last complete source transaction becomes the shard's origin progress when it commits.
void ChangeApplier::Impl::set_progress(Shard &shard) {
  constexpr const char *kName = "pgdog_apply_origin_progress";
  if (!shard.progress_prepared) {
    shard.pipe->prepare(kName, kOriginProgressSql, 2);
    shard.progress_prepared = true;
  }
  params_.clear();
  params_.add_text(last_end_.to_string());
  params_.add_text(std::to_string(last_commit_time_));
  shard.pipe->execute(kName, params_);
}

std::vector<Shard *> ChangeApplier::Impl::open_shards() {
  std::vector<Shard *> open;
  for (Shard &shard : shards_) {
    if (shard.in_transaction) open.push_back(&shard);
  }
  return open;
}

// Every shard's server is already working on what it was sent; reading each in turn costs the
// slowest one's time, not the sum. The others are pumped meanwhile so that none is held up.
void ChangeApplier::Impl::wait_all(const std::vector<Shard *> &shards,
                                   const std::vector<Pipeline::Ticket> &tickets) {
  for (size_t i = 0; i < shards.size(); i++) {
    for (size_t j = i + 1; j < shards.size(); j++) shards[j]->pipe->pump();
    shards[i]->pipe->wait_for(tickets[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Failure

template <typename Body>
auto ChangeApplier::Impl::guarded(Body &&body) -> decltype(body()) {
  if (failure_) {
    throw Error(sqlstate::kObjectNotInPrerequisiteState,
                "cannot apply changes: an earlier error ended the destination sessions",
                std::string("The error was: ") + failure_->what(),
                "Start a new applier and stream again from its last flushed position.");
  }
  try {
    return body();
  } catch (const Error &e) {
    failure_ = e;
    fail();
    throw;
  } catch (const std::exception &e) {
    failure_ = Error(sqlstate::kInternalError, e.what());
    fail();
    throw;
  }
}

// Closing a session rolls its open transaction back: no shard keeps part of a failed batch.
void ChangeApplier::Impl::fail() noexcept {
  for (Shard &shard : shards_) {
    shard.pipe.reset();
    shard.conn.reset();
    shard.in_transaction = false;
  }
  source_.reset();
  held_.clear();
  held_by_key_.clear();
  held_bytes_ = 0;
}

// ---------------------------------------------------------------------------------------------
// ChangeApplier

ChangeApplier::ChangeApplier(std::vector<ApplyTable> tables,
                             const std::vector<ConnParams> &destinations, TaskContext &ctx,
                             ApplyOptions options)
    : impl_(std::make_unique<Impl>(std::move(tables), destinations, ctx, options)) {}

ChangeApplier::~ChangeApplier() = default;

void ChangeApplier::on_begin(const Begin &begin) {
  impl_->guarded([&] { impl_->on_begin(begin); });
}
void ChangeApplier::on_commit(const Commit &commit) {
  impl_->guarded([&] { impl_->on_commit(commit); });
}
void ChangeApplier::on_relation(const Relation &relation) {
  impl_->guarded([&] { impl_->on_relation(relation); });
}
void ChangeApplier::on_insert(const Insert &insert) {
  impl_->guarded([&] { impl_->on_insert(insert); });
}
void ChangeApplier::on_update(const Update &update) {
  impl_->guarded([&] { impl_->on_update(update); });
}
void ChangeApplier::on_delete(const Delete &del) {
  impl_->guarded([&] { impl_->on_delete(del); });
}
void ChangeApplier::on_truncate(const Truncate &truncate) {
  impl_->guarded([&] { impl_->on_truncate(truncate); });
}
bool ChangeApplier::batch_due() const { return impl_->batch_due(); }
bool ChangeApplier::advance_idle(Lsn position) { return impl_->advance_idle(position); }
Lsn ChangeApplier::flush() {
  return impl_->guarded([&] { return impl_->flush(); });
}
Lsn ChangeApplier::flushed() const { return impl_->flushed_; }
bool ChangeApplier::in_transaction() const { return impl_->in_transaction(); }
std::vector<std::optional<Lsn>> ChangeApplier::origin_progress() const { return impl_->origin_progress(); }
void ChangeApplier::set_start(Lsn start) {
  if (start > impl_->flushed_) impl_->flushed_ = start;
}
const ApplyStats &ChangeApplier::stats() const { return impl_->stats_; }

}  // namespace pgdog_reshard
