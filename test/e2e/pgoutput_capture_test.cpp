// PgOutputDecoder and the replication calls of Connection (start_replication, read_copy_data,
// send_copy_data) against a real PostgreSQL 15 walsender: a logical slot with pgoutput
// (proto_version '1', messages 'true') streams a known series of transactions, every message is
// decoded and checked, and a standby status update moves the slot's confirmed_flush_lsn.
//
// It also keeps the unit tests' fixture honest: test/unit/data/pgoutput_stream.bin holds the
// XLogData payloads of that stream (each as an Int32 big-endian length, then the bytes), and must
// decode to the same transcript as the live stream. To regenerate it (after changing kSchema or
// kChanges below):
//   PGDOG_WRITE_FIXTURES=1 <build>/e2e_tests --gtest_filter='PgOutputCapture.Fixture*'
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/lsn.h"
#include "core/pg.h"
#include "core/pgoutput.h"
#include "expect_error.h"
#include "harness.h"

namespace pgdog_reshard {
namespace {

using test::InstanceOptions;
using test::PgInstance;
using Clock = std::chrono::steady_clock;

constexpr const char *kFixtureName = "/test/unit/data/pgoutput_stream.bin";

// A PK table with an enum (so pgoutput sends a Type message) and a typmod, a REPLICA IDENTITY
// FULL table, a table whose `body` is stored out of line uncompressed (so an UPDATE of another
// column sends it as 'u' unchanged), and a table outside the publication.
constexpr const char *kSchema = R"sql(
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE accounts (id int4 PRIMARY KEY, name text NOT NULL, balance numeric(12, 2), m mood);
CREATE TABLE audit (id int8, event varchar(20), flag bool);
ALTER TABLE audit REPLICA IDENTITY FULL;
CREATE TABLE docs (id int4 PRIMARY KEY, title text, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE unpublished (id int4);
CREATE PUBLICATION pgdog FOR TABLE accounts, audit, docs;
SELECT pg_replication_origin_create('upstream');
)sql";

// One source transaction each, in order, after the slot exists. The last one, a non-transactional
// message, marks the end of the stream.
const char *const kChanges[] = {
    "INSERT INTO accounts VALUES (1, 'alice', 10.5, 'happy'), (2, 'bob', NULL, NULL)",
    "BEGIN; INSERT INTO audit VALUES (1, 'open', true), (2, NULL, false);"
    " UPDATE accounts SET balance = 20 WHERE id = 1; INSERT INTO unpublished VALUES (1); COMMIT",
    "UPDATE accounts SET id = 10 WHERE id = 1",
    "UPDATE audit SET event = 'closed' WHERE id = 1",
    "DELETE FROM audit WHERE id = 2",
    "DELETE FROM accounts WHERE id = 2",
    "INSERT INTO docs SELECT 1, 'draft', string_agg(md5(i::text), '' ORDER BY i)"
    " FROM generate_series(1, 3300) i",
    "UPDATE docs SET title = 'final' WHERE id = 1",
    "SELECT pg_replication_origin_session_setup('upstream'); BEGIN;"
    " SELECT pg_replication_origin_xact_setup('0/AB', now());"
    " INSERT INTO accounts VALUES (3, 'carol', 0, 'sad'); COMMIT",
    "SELECT pg_logical_emit_message(true, 'pfx', 'payload')",
    "TRUNCATE accounts, audit RESTART IDENTITY",
    "SELECT pg_logical_emit_message(false, 'end', 'done')",
};

constexpr size_t kBigValueSize = 3300 * 32;  // 3300 md5 hex digests: over 100 kB, out of line
constexpr const char *kMd5Of1 = "c4ca4238a0b923820dcc509a6f75849b";

// What the stream must decode to: names, flags, type oids and values, no LSN or xid (those change
// with every run). numeric(12,2) has typmod (12 << 16 | 2) + 4 = 786438, varchar(20) 24.
const std::vector<std::string> kTranscript = {
    "BEGIN",
    "TYPE public.mood",
    "RELATION public.accounts identity=d [id*:23 name:25 balance:1700(786438) m:public.mood]",
    "INSERT public.accounts N('1' 'alice' '10.50' 'happy')",
    "INSERT public.accounts N('2' 'bob' null null)",
    "COMMIT",
    "BEGIN",
    "RELATION public.audit identity=f [id*:20 event*:1043(24) flag*:16]",
    "INSERT public.audit N('1' 'open' 't')",
    "INSERT public.audit N('2' null 'f')",
    "UPDATE public.accounts N('1' 'alice' '20.00' 'happy')",
    "COMMIT",
    "BEGIN",
    "UPDATE public.accounts K('1' null null null) N('10' 'alice' '20.00' 'happy')",
    "COMMIT",
    "BEGIN",
    "UPDATE public.audit O('1' 'open' 't') N('1' 'closed' 't')",
    "COMMIT",
    "BEGIN",
    "DELETE public.audit O('2' null 'f')",
    "COMMIT",
    "BEGIN",
    "DELETE public.accounts K('2' null null null)",
    "COMMIT",
    "BEGIN",
    "RELATION public.docs identity=d [id*:23 title:25 body:25]",
    "INSERT public.docs N('1' 'draft' text(105600 bytes))",
    "COMMIT",
    "BEGIN",
    "UPDATE public.docs N('1' 'final' unchanged)",
    "COMMIT",
    "BEGIN",
    "ORIGIN upstream 0/AB",
    "INSERT public.accounts N('3' 'carol' '0.00' 'sad')",
    "COMMIT",
    "BEGIN",
    "MESSAGE transactional pfx 'payload'",
    "COMMIT",
    "BEGIN",
    // TRUNCATE gives the tables new files; the invalidation makes pgoutput send their schema again.
    "TYPE public.mood",
    "RELATION public.accounts identity=d [id*:23 name:25 balance:1700(786438) m:public.mood]",
    "RELATION public.audit identity=f [id*:20 event*:1043(24) flag*:16]",
    "TRUNCATE [public.accounts public.audit] restart_identity",
    "COMMIT",
    "MESSAGE non-transactional end 'done'",
};

// Records decoded messages as LSN-free text lines (comparable across runs), and keeps what the
// LSN checks need. It copies everything out of the decoder's views, which end with the message.
class Transcript : public PgOutputHandler {
 public:
  std::vector<std::string> lines;
  std::vector<Begin> begins;
  std::vector<Commit> commits;
  std::vector<std::pair<Lsn, bool>> messages;  // LSN, transactional
  std::vector<std::string> long_values;        // text values too long for a line
  bool saw_end = false;

  void on_begin(const Begin &b) override {
    begins.push_back(b);
    lines.push_back("BEGIN");
  }
  void on_commit(const Commit &c) override {
    commits.push_back(c);
    lines.push_back("COMMIT");
  }
  void on_origin(const Origin &o) override {
    lines.push_back("ORIGIN " + o.name + " " + o.commit_lsn.to_string());
  }
  void on_type(const TypeMessage &t) override {
    types_[t.oid] = t.schema + "." + t.name;
    lines.push_back("TYPE " + types_[t.oid]);
  }
  void on_relation(const Relation &r) override {
    relations_[r.oid] = r.schema + "." + r.name;
    std::string line = "RELATION " + relations_[r.oid] + " identity=" + r.replica_identity + " [";
    for (const RelationColumn &c : r.columns) {
      if (&c != &r.columns.front()) line += " ";
      line += c.name + (c.key ? "*" : "") + ":" + type_name(c.type_oid);
      if (c.type_modifier != -1) line += "(" + std::to_string(c.type_modifier) + ")";
    }
    lines.push_back(line + "]");
  }
  void on_insert(const Insert &i) override {
    lines.push_back("INSERT " + relation(i.relation) + " N" + render(i.new_tuple));
  }
  void on_update(const Update &u) override {
    std::string line = "UPDATE " + relation(u.relation) + " ";
    if (u.old_kind) line += std::string(1, u.old_kind) + render(u.old_tuple) + " ";
    lines.push_back(line + "N" + render(u.new_tuple));
  }
  void on_delete(const Delete &d) override {
    lines.push_back("DELETE " + relation(d.relation) + " " + d.old_kind + render(d.old_tuple));
  }
  void on_truncate(const Truncate &t) override {
    std::string line = "TRUNCATE [";
    for (size_t i = 0; i < t.relations.size(); i++) line += (i ? " " : "") + relation(t.relations[i]);
    line += "]";
    if (t.cascade) line += " cascade";
    if (t.restart_identity) line += " restart_identity";
    lines.push_back(line);
  }
  void on_message(const LogicalMessage &m) override {
    messages.emplace_back(m.lsn, m.transactional);
    lines.push_back(std::string("MESSAGE ") + (m.transactional ? "transactional " : "non-transactional ") +
                    m.prefix + " '" + std::string(m.content) + "'");
    if (m.prefix == "end") saw_end = true;
  }

 private:
  std::string relation(uint32_t oid) const {
    auto it = relations_.find(oid);
    return it == relations_.end() ? "?" + std::to_string(oid) : it->second;
  }
  std::string type_name(uint32_t oid) const {
    auto it = types_.find(oid);
    return it == types_.end() ? std::to_string(oid) : it->second;
  }
  std::string render(const Tuple &tuple) {
    std::string out = "(";
    for (const ColumnValue &v : tuple) {
      if (&v != &tuple.front()) out += " ";
      switch (v.kind) {
        case ColumnValue::Kind::Null: out += "null"; break;
        case ColumnValue::Kind::Unchanged: out += "unchanged"; break;
        case ColumnValue::Kind::Binary: out += "binary(" + std::to_string(v.data.size()) + " bytes)"; break;
        case ColumnValue::Kind::Text:
          if (v.data.size() <= 64) {
            out += "'" + std::string(v.data) + "'";
          } else {
            long_values.emplace_back(v.data);
            out += "text(" + std::to_string(v.data.size()) + " bytes)";
          }
      }
    }
    return out + ")";
  }

  std::map<uint32_t, std::string> relations_;
  std::map<uint32_t, std::string> types_;
};

// One XLogData as received: the payload is the pgoutput message.
struct Captured {
  Lsn wal_start;
  std::string payload;
};

Transcript decode_all(const std::vector<std::string> &payloads) {
  PgOutputDecoder decoder;
  Transcript transcript;
  for (const std::string &payload : payloads) decoder.decode(payload, transcript);
  return transcript;
}

std::string encode_fixture(const std::vector<std::string> &payloads) {
  std::string out;
  for (const std::string &p : payloads) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((p.size() >> shift) & 0xff));
    out += p;
  }
  return out;
}

std::vector<std::string> decode_fixture(const std::string &bytes) {
  std::vector<std::string> payloads;
  for (size_t at = 0; at + 4 <= bytes.size();) {
    size_t len = 0;
    for (int i = 0; i < 4; i++) len = (len << 8) | static_cast<unsigned char>(bytes[at + i]);
    payloads.push_back(bytes.substr(at + 4, len));
    at += 4 + len;
  }
  return payloads;
}

class PgOutputCapture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    InstanceOptions options;
    options.name = "pgoutput_capture";
    instance_ = std::make_unique<PgInstance>(options);
    instance_->exec(kSchema);
    instance_->exec("SELECT pg_create_logical_replication_slot('capture', 'pgoutput')");
    slot_start_ = slot_confirmed_flush("capture");
    for (const char *change : kChanges) instance_->exec(change);
    stream_ = std::make_unique<Connection>(params(), waiter_);
    stream_->start_replication(start_command("capture"));
    capture_until_end();
  }
  static void TearDownTestSuite() {
    stream_.reset();
    instance_.reset();
  }

  static ConnParams params() {
    ConnParams p;
    p.host = instance_->host();
    p.port = instance_->port();
    p.dbname = "postgres";
    p.user = "postgres";
    p.application_name = "pgoutput_capture_test";
    p.replication = true;
    return p;
  }

  static std::string start_command(const std::string &slot) {
    return "START_REPLICATION SLOT \"" + slot +
           "\" LOGICAL 0/0 (proto_version '1', publication_names '\"pgdog\"', messages 'true')";
  }

  static Lsn slot_confirmed_flush(const std::string &slot) {
    return Lsn::parse_or_throw(instance_->value(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" + slot + "'"));
  }

  // Reads XLogData until the end marker, answering keepalives that ask for a reply (without
  // confirming anything: the status update test does that).
  static void capture_until_end() {
    PgOutputDecoder decoder;
    Transcript seen;
    auto deadline = Clock::now() + std::chrono::seconds(60);
    while (!seen.saw_end) {
      if (Clock::now() > deadline) throw std::runtime_error("no end marker within 60 s");
      std::optional<std::string_view> data = stream_->read_copy_data(1000);
      if (!data) continue;
      ReplicationFrame frame = decode_frame(*data);
      if (frame.keepalive) {
        if (frame.keepalive->reply_requested) {
          stream_->send_copy_data(encode_status_update(frame.keepalive->wal_end, Lsn(), Lsn(),
                                                       pg_epoch_now_us(), false));
        }
        continue;
      }
      captured_.push_back({frame.xlog->wal_start, std::string(frame.xlog->payload)});
      decoder.decode(frame.xlog->payload, seen);
    }
  }

  static std::vector<std::string> payloads() {
    std::vector<std::string> out;
    for (const Captured &c : captured_) out.push_back(c.payload);
    return out;
  }

  static std::unique_ptr<PgInstance> instance_;
  static PollWaiter waiter_;
  static std::unique_ptr<Connection> stream_;
  static std::vector<Captured> captured_;
  static Lsn slot_start_;
};

std::unique_ptr<PgInstance> PgOutputCapture::instance_;
PollWaiter PgOutputCapture::waiter_;
std::unique_ptr<Connection> PgOutputCapture::stream_;
std::vector<Captured> PgOutputCapture::captured_;
Lsn PgOutputCapture::slot_start_;

TEST_F(PgOutputCapture, DecodesEveryMessageKind) {
  Transcript t = decode_all(payloads());
  // Line by line, so that a difference reads as one line rather than two long lists.
  for (size_t i = 0; i < t.lines.size() || i < kTranscript.size(); i++) {
    std::string got = i < t.lines.size() ? t.lines[i] : "(none)";
    std::string want = i < kTranscript.size() ? kTranscript[i] : "(none)";
    EXPECT_EQ(got, want) << "line " << i;
  }

  // The TOASTed value arrives whole on INSERT (and as 'u' on the UPDATE, in the transcript).
  ASSERT_EQ(t.long_values.size(), 1u);
  EXPECT_EQ(t.long_values[0].size(), kBigValueSize);
  EXPECT_EQ(t.long_values[0].substr(0, 32), kMd5Of1);
}

TEST_F(PgOutputCapture, TransactionLsnsAreOrdered) {
  Transcript t = decode_all(payloads());
  ASSERT_EQ(t.begins.size(), 11u);
  ASSERT_EQ(t.commits.size(), t.begins.size());
  Lsn previous_end = slot_start_;
  for (size_t i = 0; i < t.commits.size(); i++) {
    SCOPED_TRACE("transaction " + std::to_string(i));
    const Begin &b = t.begins[i];
    const Commit &c = t.commits[i];
    EXPECT_EQ(b.final_lsn.to_string(), c.commit_lsn.to_string());  // Begin announces the commit
    EXPECT_EQ(b.commit_time, c.commit_time);
    EXPECT_NE(b.xid, 0u);
    EXPECT_EQ(c.flags, 0);
    EXPECT_GT(c.commit_lsn.value(), previous_end.value());  // transactions arrive in commit order
    EXPECT_GT(c.end_lsn.value(), c.commit_lsn.value());     // the end is past the commit record
    previous_end = c.end_lsn;
  }
  // The walsender labels a Commit's XLogData with the transaction's end: the position to confirm.
  size_t commit_index = 0;
  for (const Captured &c : captured_) {
    if (c.payload[0] != 'C') continue;
    EXPECT_EQ(c.wal_start.to_string(), t.commits[commit_index++].end_lsn.to_string());
  }
  // The transactional message lies inside its transaction (the 10th); the end marker after all.
  ASSERT_EQ(t.messages.size(), 2u);
  EXPECT_TRUE(t.messages[0].second);
  // (A message's LSN is where its WAL record ends: here, where the commit record starts.)
  EXPECT_LE(t.messages[0].first.value(), t.commits[9].commit_lsn.value());
  EXPECT_GT(t.messages[0].first.value(), t.commits[8].end_lsn.value());
  EXPECT_FALSE(t.messages[1].second);
  EXPECT_GT(t.messages[1].first.value(), t.commits.back().end_lsn.value());
}

TEST_F(PgOutputCapture, FixtureIsWhatTheServerSends) {
  std::string path = std::string(PGDOG_SOURCE_DIR) + kFixtureName;
  if (std::getenv("PGDOG_WRITE_FIXTURES")) {
    std::ofstream(path, std::ios::binary) << encode_fixture(payloads());
  }
  std::ifstream file(path, std::ios::binary);
  ASSERT_TRUE(file) << path << " is missing; see the comment at the top of this file";
  std::stringstream saved;
  saved << file.rdbuf();
  // LSNs, xids, oids and timestamps differ from run to run: the transcripts must not.
  std::vector<std::string> fixture = decode_fixture(saved.str());
  EXPECT_EQ(encode_fixture(fixture), saved.str()) << path << " is not a sequence of length-prefixed payloads";
  EXPECT_EQ(decode_all(fixture).lines, decode_all(payloads()).lines)
      << path << " is stale; see the comment at the top of this file";
}

TEST_F(PgOutputCapture, StatusUpdateAdvancesConfirmedFlush) {
  Lsn target = decode_all(payloads()).commits.back().end_lsn;
  ASSERT_LT(slot_confirmed_flush("capture").value(), target.value());  // capture confirmed nothing

  stream_->send_copy_data(encode_status_update(target, target, target, pg_epoch_now_us(), true));
  // Asked to reply, the walsender answers with a keepalive at once.
  bool answered = false;
  for (auto deadline = Clock::now() + std::chrono::seconds(10); !answered && Clock::now() < deadline;) {
    std::optional<std::string_view> data = stream_->read_copy_data(500);
    if (data) answered = decode_frame(*data).keepalive.has_value();
  }
  EXPECT_TRUE(answered);
  EXPECT_TRUE(test::wait_until([&] { return slot_confirmed_flush("capture") == target; }))
      << "confirmed_flush_lsn stayed at " << slot_confirmed_flush("capture").to_string() << ", sent "
      << target.to_string();
}

TEST_F(PgOutputCapture, UnknownSlotIsTheServersError) {
  Connection conn(params(), waiter_);
  Error e = error_of([&] { conn.start_replication(start_command("no_such_slot")); });
  EXPECT_EQ(e.sqlstate(), "42704") << e.what();
  EXPECT_NE(std::string(e.what()).find("no_such_slot"), std::string::npos) << e.what();
  EXPECT_TRUE(conn.is_open());
}

TEST_F(PgOutputCapture, ReadTimesOutWhenIdle) {
  instance_->exec("SELECT pg_create_logical_replication_slot('idle', 'pgoutput')");
  Connection conn(params(), waiter_);
  conn.start_replication(start_command("idle"));
  // Nothing to send but keepalives (one when the walsender catches up): reads soon time out.
  std::optional<std::string_view> data;
  int keepalives = 0;
  while ((data = conn.read_copy_data(300))) {
    ASSERT_TRUE(decode_frame(*data).keepalive) << "no change was made after the slot";
    ASSERT_LT(++keepalives, 5);
  }
  auto start = Clock::now();
  EXPECT_FALSE(conn.read_copy_data(200));
  EXPECT_GE(Clock::now() - start, std::chrono::milliseconds(190));
  start = Clock::now();
  EXPECT_FALSE(conn.read_copy_data(0));
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(100));
  EXPECT_TRUE(conn.is_open());
}

TEST_F(PgOutputCapture, WaiterStopInterruptsABlockedRead) {
  instance_->exec("SELECT pg_create_logical_replication_slot('interrupted', 'pgoutput')");
  std::atomic<bool> stop{false};
  PollWaiter stoppable([&] { return stop.load(); });
  Connection conn(params(), stoppable);
  conn.start_replication(start_command("interrupted"));
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    stop = true;
  });
  Error e = error_of([&] {
    for (;;) conn.read_copy_data(-1);  // keepalives, then a wait only the stop ends
  });
  stopper.join();
  EXPECT_EQ(e.sqlstate(), "57014");
  EXPECT_FALSE(conn.is_open());
  // Closing ended the walsender: the slot is released.
  EXPECT_TRUE(test::wait_until([&] {
    return instance_->value("SELECT active FROM pg_replication_slots WHERE slot_name = 'interrupted'") == "f";
  }));
}

TEST_F(PgOutputCapture, TerminatedWalsenderEndsTheStreamWithItsError) {
  instance_->exec("SELECT pg_create_logical_replication_slot('terminated', 'pgoutput')");
  Connection conn(params(), waiter_);
  conn.start_replication(start_command("terminated"));
  instance_->exec(
      "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'terminated'");
  Error e = error_of([&] {
    for (auto deadline = Clock::now() + std::chrono::seconds(10); Clock::now() < deadline;) {
      conn.read_copy_data(500);
    }
  });
  EXPECT_EQ(e.sqlstate(), "57P01") << e.what();  // admin_shutdown, as the server said
}

// A fast shutdown: the walsender asks its client to confirm what it received, then ends the stream
// and exits. The client, answering keepalives from its own thread as a real one would, sees the
// stream end with an error instead of waiting forever. Its own instance: the suite's has a stream
// nobody answers, which would hold the shutdown until wal_sender_timeout.
TEST_F(PgOutputCapture, ServerShutdownEndsTheStream) {
  InstanceOptions options;
  options.name = "pgoutput_shutdown";
  PgInstance own(options);
  own.exec("CREATE PUBLICATION pgdog FOR ALL TABLES");
  own.exec("SELECT pg_create_logical_replication_slot('shutdown', 'pgoutput')");
  ConnParams p = params();
  p.port = own.port();
  Connection conn(p, waiter_);
  conn.start_replication(start_command("shutdown"));
  std::optional<Error> ended;
  std::thread client([&] {
    try {
      for (auto deadline = Clock::now() + std::chrono::seconds(30); Clock::now() < deadline;) {
        std::optional<std::string_view> data = conn.read_copy_data(200);
        if (!data) continue;
        ReplicationFrame frame = decode_frame(*data);
        if (!frame.keepalive || !frame.keepalive->reply_requested) continue;
        Lsn received = frame.keepalive->wal_end;
        conn.send_copy_data(encode_status_update(received, received, received, pg_epoch_now_us(), false));
      }
    } catch (const Error &e) {
      ended = e;
    }
  });
  auto start = Clock::now();
  own.stop("fast");
  client.join();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(20));
  ASSERT_TRUE(ended) << "the stream did not end";
  EXPECT_EQ(ended->sqlstate(), sqlstate::kConnectionFailure) << ended->what();
  EXPECT_NE(std::string(ended->what()).find("server closed the connection"), std::string::npos)
      << ended->what();
}

}  // namespace
}  // namespace pgdog_reshard
