// Verification of a reshard (verify.h): aggregates computed on the servers, narrowed bucket by
// bucket into the few rows that differ.
#include "engine/verify.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "core/checksum.h"
#include "core/pipeline.h"
#include "core/row_diff.h"
#include "core/shard_sql.h"
#include "core/sql.h"
#include "engine/cluster.h"
#include "engine/cutover_steps.h"

namespace pgdog_reshard {

namespace {

// Buckets are the low bits of the identity hash, 8 more per level: 256 buckets at level 0.
constexpr int kBucketBits = 8;
constexpr int kBuckets = 1 << kBucketBits;
constexpr int kHashBits = 64;
// Parent buckets split by one query: at most 65536 child buckets come back per shard.
constexpr size_t kParentsPerQuery = 256;

// The text form of a row must not depend on a session's settings, or equal rows would hash apart
// (timestamptz follows TimeZone, floats extra_float_digits, money lc_monetary, ...): both sides
// print values the same way. search_path is empty so no user object can shadow what we call.
// statement_timeout = 0: a pass over a large table may take long.
constexpr const char *kSessionSetup =
    "SET statement_timeout = 0; SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; "
    "SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'; "
    "SET lc_monetary = 'C'; SET search_path = ''";


int64_t to_int64(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    throw Error(sqlstate::kInternalError, "unexpected integer from a shard: \"" + std::string(text) + "\"");
  }
  return value;
}

Checksum to_checksum(std::string_view text) {
  auto sum = Checksum::parse(text);
  if (!sum) {
    throw Error(sqlstate::kInternalError, "unexpected checksum from a shard: \"" + std::string(text) + "\"");
  }
  return *sum;
}

// ---------------------------------------------------------------------------------------------
// Buckets and their aggregates

struct Stat {
  int64_t rows = 0;
  Checksum sum;
  int64_t misplaced = 0;
  Checksum versions;  // source reads of a re-check only: the sum of the rows' version hashes

  void add(const Stat &other) {
    rows += other.rows;
    sum.add(other.sum);
    misplaced += other.misplaced;
    versions.add(other.versions);
  }
};

bool same_rows(const Stat &a, const Stat &b) { return a.rows == b.rows && a.sum == b.sum; }

// Whether no row of a bucket was written between two reads of the source: same content and the
// same row versions. Content alone would miss a value set and set back (A, B, A) while the
// destination read in between held B.
bool unchanged(const Stat &before, const Stat &after) {
  return same_rows(before, after) && before.versions == after.versions;
}

// The rows whose identity hash has `id` as its low `bits` bits, with both sides' aggregates.
struct Bucket {
  int bits = kBucketBits;
  int64_t id = 0;
  Stat source, destination;

  uint64_t larger() const { return static_cast<uint64_t>(std::max(source.rows, destination.rows)); }
};

using Level0 = std::array<Stat, kBuckets>;

// ---------------------------------------------------------------------------------------------
// The SQL of one table

// "(h & 255::int8)": the low `bits` bits of the identity hash.
std::string masked(int bits) {
  int64_t mask = bits >= kHashBits ? -1 : static_cast<int64_t>((uint64_t(1) << bits) - 1);
  return "(s.h & (" + std::to_string(mask) + ")::pg_catalog.int8)";
}

// Rows of any of these buckets, as one condition (true for none: the whole table).
std::string in_buckets(const std::vector<Bucket> &buckets) {
  std::map<int, std::string> ids_by_bits;
  for (const Bucket &b : buckets) {
    std::string &ids = ids_by_bits[b.bits];
    ids += (ids.empty() ? "" : ",") + std::to_string(b.id);
  }
  std::string out;
  for (const auto &[bits, ids] : ids_by_bits) {
    out += (out.empty() ? "" : " OR ") + masked(bits) + " = ANY ('{" + ids + "}'::pg_catalog.int8[])";
  }
  return out.empty() ? "true" : "(" + out + ")";
}

std::string row_of(const std::vector<std::string> &columns) {
  std::string out;
  for (const std::string &c : columns) out += (out.empty() ? "t." : ", t.") + quote_ident(c);
  return "ROW(" + out + ")::pg_catalog.text";
}

class TableSql {
 public:
  explicit TableSql(const TablePlan &table)
      : table_(table.qualified()), whole_row_identity_(table.replica_identity_full || table.identity_columns.empty()) {
    // REPLICA IDENTITY FULL: a row is known by all its columns.
    identity_text_ = row_of(whole_row_identity_ ? table.columns : table.identity_columns);
    row_hash_ = "pg_catalog.hashtextextended(" + row_of(table.columns) + ", 0)";
  }

  // Per bucket of the low `bits` bits, of the rows in `within`: bucket, rows, checksum, misplaced
  // and, with `versions`, the sum of the rows' version hashes (see rows_of).
  std::string buckets(int bits, const std::vector<Bucket> &within, const std::string &misplaced,
                      bool versions = false) const {
    return "SELECT " + masked(bits) + ", pg_catalog.count(*), pg_catalog.sum(s.r)::pg_catalog.text, " +
           "pg_catalog.count(*) FILTER (WHERE s.m)" + (versions ? ", pg_catalog.sum(s.v)::pg_catalog.text" : "") +
           " FROM " + rows_of(misplaced) + " WHERE " + in_buckets(within) + " GROUP BY 1";
  }

  // Whether a row's identity is all of it (REPLICA IDENTITY FULL): then every change moves the row
  // to another bucket.
  bool whole_row_identity() const { return whole_row_identity_; }

  // (identity, row hash, rows) of the rows in `within`.
  std::string digests(const std::vector<Bucket> &within) const {
    return "SELECT s.i, s.r, pg_catalog.count(*) FROM " + rows_of("false") + " WHERE " + in_buckets(within) +
           " GROUP BY 1, 2";
  }

  // Identities of at most `limit` rows satisfying `condition` (on s.h, s.m).
  std::string identities(const std::string &condition, const std::string &misplaced, size_t limit) const {
    return "SELECT s.i FROM " + rows_of(misplaced) + " WHERE " + condition + " LIMIT " +
           std::to_string(limit);
  }

 private:
  // Every row as (h identity hash, r row hash, i identity text, m misplaced, v version hash). The
  // subquery is pulled up, so a query computes only the columns it uses, and r only for rows its
  // filter keeps. v hashes the row version's xmin and ctid: any write makes a new version, even one
  // that leaves the content as it was.
  std::string rows_of(const std::string &misplaced) const {
    return "(SELECT pg_catalog.hashtextextended(" + identity_text_ + ", 0) AS h, " + row_hash_ + " AS r, " +
           identity_text_ + " AS i, " + misplaced + " AS m, " + kVersionHash + " AS v FROM ONLY " + table_ +
           " t) s";
  }

  static constexpr const char *kVersionHash =
      "pg_catalog.hashtextextended(t.xmin::pg_catalog.text OPERATOR(pg_catalog.||) "
      "t.ctid::pg_catalog.text, 0)";

  std::string table_;
  bool whole_row_identity_;
  std::string identity_text_;
  std::string row_hash_;
};

// ---------------------------------------------------------------------------------------------
// Shards, sides and queries

// A primary of either cluster, with one session for the whole verification.
struct Shard {
  int number = 0;
  std::unique_ptr<Connection> conn;
  std::map<KeyType, uint32_t> hash_parents;  // the session's temporary hash-partitioned tables
};

// The shards read together as one side of a comparison, and each one's misplaced-row condition.
struct Side {
  bool source = false;
  std::vector<Shard *> shards;
  std::vector<std::string> misplaced;  // "false" where it is not checked
};

// What one table's verification has done so far, for the result and the observer.
struct Tally {
  const TablePlan &table;
  VerifyObserver &observer;
  VerifyResult &result;
  uint64_t scanned = 0;

  void read(uint64_t rows) {
    scanned += rows;
    observer.progress(table, scanned, result.rows_fetched);
  }
};

class Runner {
 public:
  Runner(TaskContext &ctx, size_t source_shards) : ctx_(ctx), positions_(source_shards) {}

  // Sends each shard of the side its statement at once, so they work in parallel, then collects
  // the results in shard order. On the source, each shard's WAL position is read right after.
  std::vector<Result> run(const Side &side, const std::vector<std::string> &sql, Tally &tally) {
    ctx_.check_interrupts();
    struct Sent {
      std::unique_ptr<Pipeline> pipeline;
      Pipeline::Ticket query = 0, position = 0, sync = 0;
    };
    std::vector<Sent> sent;
    for (size_t i = 0; i < side.shards.size(); i++) {
      Sent s;
      s.pipeline = std::make_unique<Pipeline>(*side.shards[i]->conn, ctx_);
      s.query = s.pipeline->query(sql[i], true);
      // Where the source's WAL ends once the read returned: at or after the commit of every row it saw.
      if (side.source) s.position = s.pipeline->query(kInsertedPositionSql, true);
      s.sync = s.pipeline->sync();
      s.pipeline->pump();
      sent.push_back(std::move(s));
    }
    std::vector<Result> results;
    for (size_t i = 0; i < sent.size(); i++) {
      sent[i].pipeline->wait_for(sent[i].sync);
      results.push_back(sent[i].pipeline->take(sent[i].query));
      if (side.source) note_position(side.shards[i]->number, sent[i].pipeline->take(sent[i].position));
    }
    tally.result.queries += side.shards.size();
    return results;
  }

  std::vector<Result> run(const Side &side, const std::string &sql, Tally &tally) {
    return run(side, std::vector<std::string>(side.shards.size(), sql), tally);
  }

  const std::vector<Lsn> &positions() const { return positions_; }
  TaskContext &ctx() { return ctx_; }

 private:
  void note_position(int shard, const Result &res) {
    Lsn lsn = Lsn::parse_or_throw(res.value(0, 0));
    positions_[shard] = std::max(positions_[shard], lsn);
  }

  TaskContext &ctx_;
  std::vector<Lsn> positions_;
};

// ---------------------------------------------------------------------------------------------
// One comparison: a source side against a destination side, for one table

class Comparison {
 public:
  Comparison(const TableSql &sql, Side source, Side destination, int destination_shard, Runner &runner,
             const VerifyOptions &options, Tally &tally)
      : sql_(sql),
        source_(std::move(source)),
        destination_(std::move(destination)),
        destination_shard_(destination_shard),
        runner_(runner),
        options_(options),
        tally_(tally),
        destination_level0_(destination_.shards.size()) {}

  // Compares the level-0 buckets `only` (every bucket when empty), narrows into those that
  // differ, and replaces what an earlier round found. A bracketed round (a re-check while the
  // stream runs) reads the source, waits until the stream has applied what it saw, reads the
  // destination, then the source again: a bucket the source changed meanwhile is left for the
  // next round, since the destination may hold any state between the two source reads.
  void round(const std::vector<int64_t> &only, bool bracketed) {
    diff_ = RowDiff();
    unresolved_ = 0;
    changing_ = 0;
    samples_.clear();
    std::vector<Bucket> within;
    for (int64_t id : only) within.push_back(Bucket{kBucketBits, id, {}, {}});
    read_level0(within, bracketed);
    std::vector<Bucket> differing;
    recheck_.clear();
    for (int64_t id : within.empty() ? all_buckets() : only) {
      Bucket b{kBucketBits, id, source_level0_[id], destination_total(id)};
      if (changed_on_source_.count(id) > 0) {
        changing_ += b.larger();
        recheck_.push_back(id);
        continue;
      }
      if (!same_rows(b.source, b.destination)) differing.push_back(b);
      if (!same_rows(b.source, b.destination) || b.destination.misplaced > 0) recheck_.push_back(id);
    }
    narrow(std::move(differing));
  }

  // The level-0 buckets that differed, held misplaced rows or changed on the source in the last round.
  const std::vector<int64_t> &recheck() const { return recheck_; }
  const RowDiff &diff() const { return diff_; }
  uint64_t unresolved() const { return unresolved_; }
  uint64_t changing() const { return changing_; }
  int destination_shard() const { return destination_shard_; }

  Stat source_total() const {
    Stat total;
    for (const Stat &s : source_level0_) total.add(s);
    return total;
  }
  Stat destination_total_of(size_t index) const {
    Stat total;
    for (const Stat &s : destination_level0_[index]) total.add(s);
    return total;
  }
  Stat destination_total() const {
    Stat total;
    for (size_t i = 0; i < destination_level0_.size(); i++) total.add(destination_total_of(i));
    return total;
  }
  size_t destination_count() const { return destination_.shards.size(); }

  // Up to `limit` identities of misplaced rows, on the destination shards that hold some.
  std::vector<VerifyExample> misplaced_examples(size_t limit) {
    std::vector<VerifyExample> out;
    for (size_t i = 0; i < destination_.shards.size() && out.size() < limit; i++) {
      if (destination_total_of(i).misplaced == 0) continue;
      Side one{false, {destination_.shards[i]}, {destination_.misplaced[i]}};
      std::string sql = sql_.identities("s.m", one.misplaced[0], limit - out.size());
      Result res = std::move(runner_.run(one, sql, tally_)[0]);
      for (int r = 0; r < res.rows(); r++) {
        out.push_back(
            VerifyExample{"misplaced", std::string(res.value(r, 0)), destination_.shards[i]->number});
      }
    }
    return out;
  }

 private:
  static std::vector<int64_t> all_buckets() {
    std::vector<int64_t> ids(kBuckets);
    for (int i = 0; i < kBuckets; i++) ids[i] = i;
    return ids;
  }

  Stat destination_total(int64_t id) const {
    Stat total;
    for (const Level0 &shard : destination_level0_) total.add(shard[id]);
    return total;
  }

  // One pass over each shard of both sides, source first: the level-0 aggregates of `within`
  // (everything when empty) replace the ones kept from an earlier round. Bracketed: see round().
  //
  // A REPLICA IDENTITY FULL row changes bucket whenever it changes (its identity is all of it), so
  // it can pass through a bucket between two source reads that both lack it, while the destination
  // read in between holds it there. Its bracketed rounds read every bucket on the source (the scan
  // is the same) and count any change anywhere as a change to every bucket of the round.
  void read_level0(const std::vector<Bucket> &within, bool bracketed) {
    bool whole_table = bracketed && sql_.whole_row_identity();
    std::string source_sql =
        sql_.buckets(kBucketBits, whole_table ? std::vector<Bucket>{} : within, "false", bracketed);
    Level0 first{};
    for (const Result &res : runner_.run(source_, source_sql, tally_)) tally_.read(store(res, first));
    if (bracketed) options_.wait_applied(runner_.positions());
    std::vector<std::string> queries;
    for (const std::string &m : destination_.misplaced)
      queries.push_back(sql_.buckets(kBucketBits, within, m));
    std::vector<Result> destination = runner_.run(destination_, queries, tally_);
    std::vector<Bucket> read = within.empty() ? buckets_of(all_buckets()) : within;
    for (const Bucket &b : read) {
      source_level0_[b.id] = first[b.id];
      for (Level0 &shard : destination_level0_) shard[b.id] = Stat();
    }
    for (size_t i = 0; i < destination.size(); i++)
      tally_.read(store(destination[i], destination_level0_[i]));
    changed_on_source_.clear();
    if (!bracketed) return;
    Level0 again{};
    for (const Result &res : runner_.run(source_, source_sql, tally_)) tally_.read(store(res, again));
    bool moved = false;
    for (int id = 0; whole_table && id < kBuckets; id++) moved = moved || !unchanged(first[id], again[id]);
    for (const Bucket &b : read) {
      if (moved || !unchanged(first[b.id], again[b.id])) changed_on_source_.insert(b.id);
    }
  }

  static std::vector<Bucket> buckets_of(const std::vector<int64_t> &ids) {
    std::vector<Bucket> out;
    for (int64_t id : ids) out.push_back(Bucket{kBucketBits, id, {}, {}});
    return out;
  }

  // Adds a bucket query's rows into `level0`; returns the rows they count.
  static uint64_t store(const Result &res, Level0 &level0) {
    uint64_t rows = 0;
    for (int r = 0; r < res.rows(); r++) {
      Stat s = stat_of(res, r);
      level0[to_int64(res.value(r, 0))].add(s);
      rows += static_cast<uint64_t>(s.rows);
    }
    return rows;
  }

  static Stat stat_of(const Result &res, int r) {
    Stat s{to_int64(res.value(r, 1)), to_checksum(res.value(r, 2)), to_int64(res.value(r, 3)), {}};
    if (res.columns() > 4) s.versions = to_checksum(res.value(r, 4));
    return s;
  }

  // Narrows the differing buckets depth first (so the buckets waiting stay few), fetching the
  // rows of small ones in batches, until all are diffed or the query budget is spent.
  void narrow(std::vector<Bucket> differing) {
    std::vector<Bucket> to_split, leaves;
    for (Bucket &b : differing) classify(b, to_split, leaves);
    int budget = options_.max_queries;
    while (!to_split.empty() || !leaves.empty()) {
      if (budget-- <= 0) return give_up(to_split, leaves);
      if (!leaves.empty() && (to_split.empty() || pending_rows(leaves) >= batch_rows())) {
        fetch(take_batch(leaves));
      } else {
        split(take_parents(to_split), to_split, leaves);
      }
    }
    sample(budget);
  }

  uint64_t batch_rows() const { return 2 * options_.leaf_rows; }

  static uint64_t pending_rows(const std::vector<Bucket> &buckets) {
    uint64_t rows = 0;
    for (const Bucket &b : buckets) rows += b.larger();
    return rows;
  }

  // A bucket one side lacks entirely is counted as it is; a small one is fetched; a large one,
  // split further (unless the hash has no bits left).
  void classify(const Bucket &b, std::vector<Bucket> &to_split, std::vector<Bucket> &leaves) {
    if (same_rows(b.source, b.destination)) return;
    tally_.result.deepest_level = std::max(tally_.result.deepest_level, b.bits / kBucketBits - 1);
    if (b.source.rows == 0 || b.destination.rows == 0) {
      bool missing = b.destination.rows == 0;
      (missing ? diff_.missing : diff_.extra) += b.larger();
      // Enough buckets to draw the examples from: each holds at least one row.
      std::vector<Bucket> &samples = samples_[missing];
      if (samples.size() < options_.max_examples) samples.push_back(b);
    } else if (b.larger() <= options_.leaf_rows || b.bits >= kHashBits) {
      leaves.push_back(b);
    } else {
      to_split.push_back(b);
    }
  }

  std::vector<Bucket> take_batch(std::vector<Bucket> &leaves) {
    std::vector<Bucket> batch;
    uint64_t rows = 0;
    while (!leaves.empty() && (batch.empty() || rows + leaves.back().larger() <= batch_rows())) {
      rows += leaves.back().larger();
      batch.push_back(leaves.back());
      leaves.pop_back();
    }
    return batch;
  }

  // Parents of one level from the top of the stack: one query splits them all.
  static std::vector<Bucket> take_parents(std::vector<Bucket> &to_split) {
    std::vector<Bucket> parents;
    int bits = to_split.back().bits;
    while (!to_split.empty() && to_split.back().bits == bits && parents.size() < kParentsPerQuery) {
      parents.push_back(to_split.back());
      to_split.pop_back();
    }
    return parents;
  }

  void split(const std::vector<Bucket> &parents, std::vector<Bucket> &to_split, std::vector<Bucket> &leaves) {
    int bits = parents.front().bits + kBucketBits;
    std::map<int64_t, Bucket> children;
    auto add = [&](const std::vector<Result> &results, bool source) {
      for (const Result &res : results) {
        for (int r = 0; r < res.rows(); r++) {
          int64_t id = to_int64(res.value(r, 0));
          Bucket &child = children.try_emplace(id, Bucket{bits, id, {}, {}}).first->second;
          (source ? child.source : child.destination).add(stat_of(res, r));
        }
      }
    };
    add(runner_.run(source_, sql_.buckets(bits, parents, "false"), tally_), true);
    tally_.read(scan_size());
    add(runner_.run(destination_, sql_.buckets(bits, parents, "false"), tally_), false);
    tally_.read(scan_size());
    for (const auto &[id, child] : children) classify(child, to_split, leaves);
  }

  // Fetches the (identity, row hash) pairs of the batch's buckets from both sides and diffs them.
  void fetch(const std::vector<Bucket> &batch) {
    std::vector<RowDigest> source = digests(source_, batch), destination = digests(destination_, batch);
    diff_rows(std::move(source), std::move(destination), options_.max_examples, diff_);
  }

  std::vector<RowDigest> digests(const Side &side, const std::vector<Bucket> &batch) {
    std::vector<RowDigest> out;
    for (const Result &res : runner_.run(side, sql_.digests(batch), tally_)) {
      for (int r = 0; r < res.rows(); r++) {
        out.push_back(RowDigest{std::string(res.value(r, 0)), to_int64(res.value(r, 1)),
                                static_cast<uint64_t>(to_int64(res.value(r, 2)))});
      }
      tally_.result.rows_fetched += static_cast<uint64_t>(res.rows());
    }
    tally_.read(scan_size());
    return out;
  }

  // Examples for buckets counted without fetching: a few identities from the side that has them.
  void sample(int budget) {
    for (auto &[missing, buckets] : samples_) {
      auto &examples = missing ? diff_.missing_examples : diff_.extra_examples;
      if (budget-- <= 0 || examples.size() >= options_.max_examples) continue;
      size_t need = options_.max_examples - examples.size();
      const Side &side = missing ? source_ : destination_;
      for (const Result &res :
           runner_.run(side, sql_.identities(in_buckets(buckets), "false", need), tally_)) {
        for (int r = 0; r < res.rows() && examples.size() < options_.max_examples; r++) {
          examples.emplace_back(res.value(r, 0));
        }
        tally_.result.rows_fetched += static_cast<uint64_t>(res.rows());
      }
    }
  }

  void give_up(const std::vector<Bucket> &to_split, const std::vector<Bucket> &leaves) {
    unresolved_ += pending_rows(to_split) + pending_rows(leaves);
  }

  // What a narrowing query reads: the whole table on each shard of a side (the filter is on a
  // hash every row must compute), roughly the larger side's level-0 rows.
  uint64_t scan_size() const {
    return static_cast<uint64_t>(std::max(source_total().rows, destination_total().rows));
  }

  const TableSql &sql_;
  Side source_, destination_;
  int destination_shard_;  // omnisharded: the one destination shard compared; else -1
  Runner &runner_;
  const VerifyOptions &options_;
  Tally &tally_;
  Level0 source_level0_{};
  std::vector<Level0> destination_level0_;  // per destination shard of the side
  RowDiff diff_;
  uint64_t unresolved_ = 0;
  uint64_t changing_ = 0;                   // rows of the buckets in changed_on_source_
  std::set<int64_t> changed_on_source_;     // level-0 buckets the source changed during the round
  std::map<bool, std::vector<Bucket>> samples_;  // true: missing (source side), false: extra
  std::vector<int64_t> recheck_;
};

// Round after round while something differs and the caller can wait for the stream.
int compare_rounds(Comparison &comparison, Runner &runner, const VerifyOptions &options) {
  comparison.round({}, false);
  int rounds = 1;
  while (options.wait_applied && !comparison.recheck().empty() && rounds <= options.max_rechecks) {
    runner.ctx().check_interrupts();
    std::vector<int64_t> again = comparison.recheck();
    comparison.round(again, true);
    rounds++;
  }
  return rounds;
}

// ---------------------------------------------------------------------------------------------
// Tables

class Verifier {
 public:
  Verifier(const Config &config, const std::string &source, const std::string &destination,
           const ReshardPlan &plan, VerifyObserver &observer, TaskContext &ctx, const VerifyOptions &options)
      : plan_(plan), observer_(observer), ctx_(ctx), options_(options), runner_(ctx, plan.source_shards) {
    check_shard_counts(config, source, destination);
    sources_ = connect(config, source);
    destinations_ = connect(config, destination);
  }

  std::vector<VerifyResult> run() {
    std::vector<VerifyResult> results;
    for (const TablePlan &table : plan_.tables) {
      ctx_.check_interrupts();
      observer_.table_started(table);
      auto started = std::chrono::steady_clock::now();
      results.push_back(verify_named(table));
      log(results.back(), std::chrono::steady_clock::now() - started);
      observer_.table_finished(results.back());
    }
    return results;
  }

 private:
  void log(const VerifyResult &r, std::chrono::steady_clock::duration took) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(took).count();
    std::string text = "verified " + quote_qualified(r.schema, r.table) + ": " + r.verdict + ", " +
                       std::to_string(r.source_rows) + " source and " + std::to_string(r.destination_rows) +
                       " destination rows, " + std::to_string(r.queries) + " queries, " + std::to_string(ms) +
                       " ms";
    if (r.verdict != "ok") text += "; " + r.examples_text();
    ctx_.log(r.verdict == "ok" ? LogLevel::Info : LogLevel::Warning, text);
  }

  void check_shard_counts(const Config &config, const std::string &source,
                          const std::string &destination) const {
    if (config.shard_count(source) == plan_.source_shards &&
        config.shard_count(destination) == plan_.destination_shards) {
      return;
    }
    throw Error(sqlstate::kInvalidParameterValue,
                "the plan is for " + std::to_string(plan_.source_shards) + " source and " +
                    std::to_string(plan_.destination_shards) + " destination shards, but clusters " +
                    quote_ident(source) + " and " + quote_ident(destination) + " have " +
                    std::to_string(config.shard_count(source)) + " and " +
                    std::to_string(config.shard_count(destination)),
                "", "Run pre-flight again for these clusters.");
  }

  std::vector<std::unique_ptr<Shard>> connect(const Config &config, const std::string &cluster) {
    std::vector<std::unique_ptr<Shard>> shards;
    std::vector<ConnParams> params = primaries(config, cluster);
    for (size_t i = 0; i < params.size(); i++) {
      ctx_.check_interrupts();
      params[i].application_name = "pgdog_reshard verify";
      if (!plan_.encoding.empty()) params[i].options.emplace_back("client_encoding", plan_.encoding);
      auto shard = std::make_unique<Shard>();
      shard->number = static_cast<int>(i);
      shard->conn = std::make_unique<Connection>(params[i], ctx_);
      shard->conn->exec(kSessionSetup);
      shards.push_back(std::move(shard));
    }
    return shards;
  }

  // Server errors name the table; a cancel passes unchanged.
  VerifyResult verify_named(const TablePlan &table) {
    try {
      return verify(table);
    } catch (const Error &e) {
      if (e.sqlstate() == sqlstate::kQueryCanceled || e.sqlstate() == sqlstate::kAdminShutdown) throw;
      throw Error(e.sqlstate(), "verify of table " + table.qualified() + ": " + e.what(), e.detail(),
                  e.hint());
    }
  }

  VerifyResult verify(const TablePlan &table) {
    VerifyResult result;
    result.schema = table.schema;
    result.table = table.name;
    Tally tally{table, observer_, result, 0};
    TableSql sql(table);
    std::vector<std::unique_ptr<Comparison>> comparisons;
    if (table.omnisharded()) {
      // Source shard 0 (where the copy reads omnisharded tables) against each destination shard.
      for (auto &d : destinations_) {
        comparisons.push_back(std::make_unique<Comparison>(sql, Side{true, {sources_[0].get()}, {"false"}},
                                                           Side{false, {d.get()}, {"false"}}, d->number,
                                                           runner_, options_, tally));
      }
    } else {
      comparisons.push_back(std::make_unique<Comparison>(sql, whole(sources_, true), sharded_side(table), -1,
                                                         runner_, options_, tally));
    }
    for (auto &c : comparisons) {
      result.rounds = std::max(result.rounds, compare_rounds(*c, runner_, options_));
    }
    summarize(comparisons, result);
    return result;
  }

  static Side whole(const std::vector<std::unique_ptr<Shard>> &shards, bool source) {
    Side side{source, {}, {}};
    for (const auto &s : shards) {
      side.shards.push_back(s.get());
      side.misplaced.push_back("false");
    }
    return side;
  }

  // The destination shards, each with the condition its misplaced rows satisfy.
  Side sharded_side(const TablePlan &table) {
    Side side = whole(destinations_, false);
    const ShardingKey &key = *table.key;
    if (!key.rule) {
      throw Error(sqlstate::kInternalError, "table " + table.qualified() + " has sharding key " +
                                                quote_ident(key.column) + " but no sharding rule");
    }
    std::string column = "t." + quote_ident(key.column);
    for (size_t i = 0; i < side.shards.size(); i++) {
      Shard &shard = *side.shards[i];
      bool hash = key.rule->is_hash();
      // The temporary table's key is text for text and varchar columns alike (varchar hashes as text).
      std::string k = hash && key.type == KeyType::Text ? column + "::pg_catalog.text" : column;
      side.misplaced[i] = misplaced_sql(*key.rule, k, plan_.destination_shards, shard.number,
                                        hash ? hash_parent(shard, key.type) : 0);
    }
    return side;
  }

  // A table PARTITION BY HASH on the key's type, for satisfies_hash_partition(): PostgreSQL's own
  // partition hash, which PgDog's router reproduces bit for bit. TEMPORARY and empty, so no data is
  // written anywhere: its only trace is its catalog rows, which PostgreSQL removes when the session
  // ends (after a crash, when the temporary schema is next used).
  uint32_t hash_parent(Shard &shard, KeyType type) {
    auto it = shard.hash_parents.find(type);
    if (it != shard.hash_parents.end()) return it->second;
    std::string name = "pg_temp." + quote_ident(std::string("pgdog_reshard_verify_") + key_type_name(type));
    // The type's SQL name (bigint, integer, ...): search_path is empty, so it is pg_catalog's.
    Result res = shard.conn->exec("CREATE TEMPORARY TABLE " + name + " (k " + key_type_name(type) +
                                  ") PARTITION BY HASH (k); SELECT " + quote_literal(name) +
                                  "::pg_catalog.regclass::pg_catalog.oid");
    uint32_t oid = static_cast<uint32_t>(to_int64(res.value(0, 0)));
    shard.hash_parents.emplace(type, oid);
    return oid;
  }

  void summarize(std::vector<std::unique_ptr<Comparison>> &comparisons, VerifyResult &result) {
    const Comparison *reported = nullptr;
    for (auto &c : comparisons) {
      add_findings(*c, result);
      for (size_t i = 0; i < c->destination_count(); i++) {
        Stat s = c->destination_total_of(i);
        result.destination_shards.push_back(VerifyShard{s.rows, s.sum.to_string(), s.misplaced});
        result.misplaced += s.misplaced;
      }
      if (!reported && !same_rows(c->source_total(), c->destination_total())) reported = c.get();
    }
    if (!reported) reported = comparisons.front().get();
    Stat source = reported->source_total(), destination = reported->destination_total();
    result.source_rows = source.rows;
    result.source_checksum = source.sum.to_string();
    result.destination_rows = destination.rows;
    result.destination_checksum = destination.sum.to_string();
    if (result.misplaced > 0) {
      for (VerifyExample &e : comparisons.front()->misplaced_examples(options_.max_examples)) {
        result.examples.push_back(std::move(e));
      }
    }
    bool found = result.misplaced > 0 || result.missing > 0 || result.extra > 0 || result.differing > 0 ||
                 result.unresolved_rows > 0;
    bool equal = source.rows == destination.rows && source.sum == destination.sum;
    if (!found && result.changing_rows > 0) {
      result.verdict = "unsettled";
    } else {
      result.verdict = !found && equal ? "ok" : "differs";
    }
  }

  void add_findings(const Comparison &c, VerifyResult &result) const {
    const RowDiff &d = c.diff();
    result.missing += d.missing;
    result.extra += d.extra;
    result.differing += d.differing;
    result.unresolved_rows += c.unresolved();
    result.changing_rows += c.changing();
    add_examples("missing", d.missing_examples, c.destination_shard(), result);
    add_examples("extra", d.extra_examples, c.destination_shard(), result);
    add_examples("differing", d.differing_examples, c.destination_shard(), result);
  }

  void add_examples(const std::string &kind, const std::vector<std::string> &identities, int shard,
                    VerifyResult &result) const {
    size_t have = 0;
    for (const VerifyExample &e : result.examples) have += e.kind == kind;
    for (size_t i = 0; i < identities.size() && have < options_.max_examples; i++, have++) {
      result.examples.push_back(VerifyExample{kind, identities[i], shard});
    }
  }

  const ReshardPlan &plan_;
  VerifyObserver &observer_;
  TaskContext &ctx_;
  const VerifyOptions &options_;
  Runner runner_;
  std::vector<std::unique_ptr<Shard>> sources_;
  std::vector<std::unique_ptr<Shard>> destinations_;
};

}  // namespace

std::string VerifyResult::examples_text() const {
  std::string out;
  for (const char *kind : {"missing", "extra", "differing", "misplaced"}) {
    std::string items;
    for (const VerifyExample &e : examples) {
      if (e.kind != kind) continue;
      items += (items.empty() ? "" : ", ") + e.identity;
      if (e.destination_shard >= 0) items += " on shard " + std::to_string(e.destination_shard);
    }
    if (!items.empty()) out += (out.empty() ? "" : "; ") + std::string(kind) + ": " + items;
  }
  return out;
}

std::vector<VerifyResult> verify_tables(const Config &config, const std::string &source,
                                        const std::string &destination, const ReshardPlan &plan,
                                        VerifyObserver &observer, TaskContext &ctx, VerifyOptions options) {
  Verifier verifier(config, source, destination, plan, observer, ctx, options);
  return verifier.run();
}

}  // namespace pgdog_reshard
