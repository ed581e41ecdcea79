// PgOutputDecoder and the replication framing (decode_frame, encode_status_update) on bytes a real
// PostgreSQL 15 walsender sent (data/pgoutput_stream.bin: the XLogData payloads of the stream in
// test/e2e/pgoutput_capture_test.cpp, each as an Int32 big-endian length then the bytes; that file
// says how to regenerate it), on every truncation of those messages, and on hand-built malformed
// messages.
#include "core/pgoutput.h"

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "expect_error.h"

namespace pgdog_reshard {
namespace {

// --- Building messages by hand ---

std::string be(uint64_t v, int bytes) {
  std::string out;
  for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
  return out;
}
std::string i8(int v) { return be(static_cast<uint8_t>(v), 1); }
std::string i16(int v) { return be(static_cast<uint16_t>(v), 2); }
std::string i32(int64_t v) { return be(static_cast<uint32_t>(v), 4); }
std::string i64(uint64_t v) { return be(v, 8); }
std::string str(const std::string &s) { return s + std::string(1, '\0'); }
std::string text_col(const std::string &s) { return "t" + i32(static_cast<int64_t>(s.size())) + s; }

// --- The fixture ---

std::vector<std::string> load_fixture() {
  std::string path = std::string(PGDOG_TEST_DATA_DIR) + "/pgoutput_stream.bin";
  std::ifstream file(path, std::ios::binary);
  EXPECT_TRUE(file) << "missing " << path;
  std::stringstream content;
  content << file.rdbuf();
  std::string bytes = content.str();
  std::vector<std::string> payloads;
  for (size_t at = 0; at + 4 <= bytes.size();) {
    size_t len = 0;
    for (int i = 0; i < 4; i++) len = (len << 8) | static_cast<unsigned char>(bytes[at + i]);
    payloads.push_back(bytes.substr(at + 4, len));
    at += 4 + len;
  }
  return payloads;
}

// Decoded messages as LSN-free lines (the same format as the e2e capture test's transcript), and
// the LSNs the ordering checks need. Copies everything out of the decoder's views.
class Transcript : public PgOutputHandler {
 public:
  std::vector<std::string> lines;
  std::vector<Begin> begins;
  std::vector<Commit> commits;
  std::vector<std::string> long_values;
  int calls = 0;

  void on_begin(const Begin &b) override {
    begins.push_back(b);
    add("BEGIN");
  }
  void on_commit(const Commit &c) override {
    commits.push_back(c);
    add("COMMIT");
  }
  void on_origin(const Origin &o) override { add("ORIGIN " + o.name + " " + o.commit_lsn.to_string()); }
  void on_type(const TypeMessage &t) override {
    types_[t.oid] = t.schema + "." + t.name;
    add("TYPE " + types_[t.oid]);
  }
  void on_relation(const Relation &r) override {
    relations_[r.oid] = r.schema + "." + r.name;
    std::string line = "RELATION " + relations_[r.oid] + " identity=" + r.replica_identity + " [";
    for (size_t i = 0; i < r.columns.size(); i++) {
      const RelationColumn &c = r.columns[i];
      auto type = types_.find(c.type_oid);
      line += (i ? " " : "") + c.name + (c.key ? "*" : "") + ":" +
              (type == types_.end() ? std::to_string(c.type_oid) : type->second);
      if (c.type_modifier != -1) line += "(" + std::to_string(c.type_modifier) + ")";
    }
    add(line + "]");
  }
  void on_insert(const Insert &i) override { add("INSERT " + rel(i.relation) + " N" + render(i.new_tuple)); }
  void on_update(const Update &u) override {
    std::string old = u.old_kind ? std::string(1, u.old_kind) + render(u.old_tuple) + " " : "";
    add("UPDATE " + rel(u.relation) + " " + old + "N" + render(u.new_tuple));
  }
  void on_delete(const Delete &d) override { add("DELETE " + rel(d.relation) + " " + d.old_kind + render(d.old_tuple)); }
  void on_truncate(const Truncate &t) override {
    std::string line = "TRUNCATE [";
    for (size_t i = 0; i < t.relations.size(); i++) line += (i ? " " : "") + rel(t.relations[i]);
    add(line + "]" + (t.cascade ? " cascade" : "") + (t.restart_identity ? " restart_identity" : ""));
  }
  void on_message(const LogicalMessage &m) override {
    add(std::string("MESSAGE ") + (m.transactional ? "transactional " : "non-transactional ") + m.prefix +
        " '" + std::string(m.content) + "'");
  }

 private:
  void add(const std::string &line) {
    calls++;
    lines.push_back(line);
  }
  std::string rel(uint32_t oid) const {
    auto it = relations_.find(oid);
    return it == relations_.end() ? "?" + std::to_string(oid) : it->second;
  }
  std::string render(const Tuple &tuple) {
    std::string out = "(";
    for (size_t i = 0; i < tuple.size(); i++) {
      const ColumnValue &v = tuple[i];
      out += i ? " " : "";
      if (v.kind == ColumnValue::Kind::Null) out += "null";
      if (v.kind == ColumnValue::Kind::Unchanged) out += "unchanged";
      if (v.kind == ColumnValue::Kind::Binary) out += "binary(" + std::to_string(v.data.size()) + " bytes)";
      if (v.kind != ColumnValue::Kind::Text) continue;
      if (v.data.size() <= 64) {
        out += "'" + std::string(v.data) + "'";
      } else {
        long_values.emplace_back(v.data);
        out += "text(" + std::to_string(v.data.size()) + " bytes)";
      }
    }
    return out + ")";
  }

  std::map<uint32_t, std::string> relations_;
  std::map<uint32_t, std::string> types_;
};

// What the server sent for the e2e test's kChanges (see that file for the SQL).
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
    "TYPE public.mood",
    "RELATION public.accounts identity=d [id*:23 name:25 balance:1700(786438) m:public.mood]",
    "RELATION public.audit identity=f [id*:20 event*:1043(24) flag*:16]",
    "TRUNCATE [public.accounts public.audit] restart_identity",
    "COMMIT",
    "MESSAGE non-transactional end 'done'",
};

Transcript decode_all(const std::vector<std::string> &payloads) {
  PgOutputDecoder decoder;
  Transcript t;
  for (const std::string &p : payloads) decoder.decode(p, t);
  return t;
}

// Decodes `message`, which must be malformed: returns the Error, checking it is 08P01 and that the
// handler saw nothing.
Error malformed(std::string_view message) {
  PgOutputDecoder decoder;
  Transcript t;
  Error e = error_of([&] { decoder.decode(message, t); });
  EXPECT_EQ(e.sqlstate(), sqlstate::kProtocolViolation) << e.what();
  EXPECT_EQ(t.calls, 0) << "the handler saw a malformed message";
  return e;
}

bool has(const std::string &text, const std::string &needle) { return text.find(needle) != std::string::npos; }

// --- Server bytes ---

TEST(PgOutput, DecodesServerFixture) {
  Transcript t = decode_all(load_fixture());
  for (size_t i = 0; i < t.lines.size() || i < kTranscript.size(); i++) {
    EXPECT_EQ(i < t.lines.size() ? t.lines[i] : "(none)", i < kTranscript.size() ? kTranscript[i] : "(none)")
        << "line " << i;
  }
  ASSERT_EQ(t.long_values.size(), 1u);  // the TOASTed body: 3300 md5 digests, whole
  EXPECT_EQ(t.long_values[0].size(), 3300u * 32);
  EXPECT_EQ(t.long_values[0].substr(0, 32), "c4ca4238a0b923820dcc509a6f75849b");  // md5('1')
  EXPECT_EQ(t.long_values[0].find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(PgOutput, FixtureTransactionsAreOrderedByLsn) {
  Transcript t = decode_all(load_fixture());
  ASSERT_EQ(t.begins.size(), 11u);
  ASSERT_EQ(t.commits.size(), 11u);
  for (size_t i = 0; i < t.commits.size(); i++) {
    EXPECT_EQ(t.begins[i].final_lsn.value(), t.commits[i].commit_lsn.value()) << i;
    EXPECT_EQ(t.begins[i].commit_time, t.commits[i].commit_time) << i;
    EXPECT_GT(t.commits[i].end_lsn.value(), t.commits[i].commit_lsn.value()) << i;
    if (i == 0) continue;
    EXPECT_GT(t.commits[i].commit_lsn.value(), t.commits[i - 1].end_lsn.value()) << i;
    EXPECT_GT(t.begins[i].xid, t.begins[i - 1].xid) << i;
  }
}

// A steady stream must not allocate per change: tuples live in the decoder and keep their
// capacity, and values are views into the message itself.
TEST(PgOutput, ReusesTupleStorageAndPointsIntoTheMessage) {
  struct Probe : PgOutputHandler {
    std::set<const ColumnValue *> storage;
    std::string_view message;
    bool views_inside = true;
    void on_insert(const Insert &insert) override {
      storage.insert(insert.new_tuple.data());
      for (const ColumnValue &v : insert.new_tuple) {
        if (v.kind != ColumnValue::Kind::Text) continue;
        views_inside = views_inside && v.data.data() >= message.data() &&
                       v.data.data() + v.data.size() <= message.data() + message.size();
      }
    }
  } probe;
  PgOutputDecoder decoder;
  int inserts = 0;
  for (const std::string &payload : load_fixture()) {
    probe.message = payload;
    inserts += payload[0] == 'I';
    decoder.decode(payload, probe);
  }
  EXPECT_EQ(inserts, 6);
  EXPECT_EQ(probe.storage.size(), 1u);  // the widest tuple came first: never reallocated
  EXPECT_TRUE(probe.views_inside);
}

// Every prefix of every real message (but the 100 kB one, which gets a sample) is malformed, and
// so is every message with a byte appended: a clean Error, never a crash or an over-read (run
// under ASan/valgrind to see the latter).
TEST(PgOutput, EveryTruncationOfServerMessagesIsAProtocolViolation) {
  std::set<char> types;
  for (const std::string &payload : load_fixture()) {
    types.insert(payload[0]);
    size_t step = payload.size() > 4096 ? 997 : 1;
    for (size_t len = 0; len < payload.size(); len += step) {
      SCOPED_TRACE(std::string("type ") + payload[0] + ", " + std::to_string(len) + " of " +
                   std::to_string(payload.size()) + " bytes");
      // A copy of exactly the prefix, so that a read past it is a read past the allocation.
      std::string prefix = payload.substr(0, len);
      Error e = malformed(prefix);
      EXPECT_TRUE(len == 0 || has(e.what(), "offset")) << e.what();
    }
    Error trailing = malformed(payload + "x");
    EXPECT_TRUE(has(trailing.what(), "1 unexpected bytes after the last field")) << trailing.what();
  }
  EXPECT_EQ(types, (std::set<char>{'B', 'C', 'O', 'R', 'Y', 'I', 'U', 'D', 'T', 'M'}));
}

// --- Hand-built messages ---

TEST(PgOutput, DecodesHandBuiltUpdateWithOldKeyAndBinaryColumn) {
  std::string msg = "U" + i32(16384) + "K" + i16(2) + text_col("7") + "n" + "N" + i16(2) + text_col("8") +
                    "b" + i32(3) + std::string("\x00\xff\x10", 3);
  struct Probe : PgOutputHandler {
    Update seen;
    void on_update(const Update &u) override { seen = u; }
  } probe;
  PgOutputDecoder decoder;
  decoder.decode(msg, probe);
  EXPECT_EQ(probe.seen.relation, 16384u);
  EXPECT_EQ(probe.seen.old_kind, 'K');
  ASSERT_EQ(probe.seen.old_tuple.size(), 2u);
  EXPECT_EQ(probe.seen.old_tuple[0].data, "7");
  EXPECT_EQ(probe.seen.old_tuple[1].kind, ColumnValue::Kind::Null);
  ASSERT_EQ(probe.seen.new_tuple.size(), 2u);
  EXPECT_EQ(probe.seen.new_tuple[1].kind, ColumnValue::Kind::Binary);
  EXPECT_EQ(probe.seen.new_tuple[1].data, std::string("\x00\xff\x10", 3));

  // Without an old tuple, old_kind is 0 and old_tuple empty, even after one with.
  decoder.decode("U" + i32(16384) + "N" + i16(1) + "u", probe);
  EXPECT_EQ(probe.seen.old_kind, 0);
  EXPECT_TRUE(probe.seen.old_tuple.empty());
  EXPECT_EQ(probe.seen.new_tuple[0].kind, ColumnValue::Kind::Unchanged);
}

TEST(PgOutput, DecodesHandBuiltTruncateMessageAndCommit) {
  struct Probe : PgOutputHandler {
    Truncate truncate;
    LogicalMessage message;
    std::string content;
    Commit commit;
    void on_truncate(const Truncate &t) override { truncate = t; }
    void on_message(const LogicalMessage &m) override {
      message = m;
      content = std::string(m.content);  // the view ends with the message
    }
    void on_commit(const Commit &c) override { commit = c; }
  } probe;
  PgOutputDecoder decoder;
  decoder.decode("T" + i32(3) + i8(3) + i32(1) + i32(2) + i32(0xfffffffe), probe);
  EXPECT_TRUE(probe.truncate.cascade);
  EXPECT_TRUE(probe.truncate.restart_identity);
  EXPECT_EQ(probe.truncate.relations, (std::vector<uint32_t>{1, 2, 0xfffffffe}));

  decoder.decode("M" + i8(0) + i64(0x1600000010) + str("p") + i32(4) + std::string("a\0b\n", 4), probe);
  EXPECT_FALSE(probe.message.transactional);
  EXPECT_EQ(probe.message.lsn.to_string(), "16/10");
  EXPECT_EQ(probe.message.prefix, "p");
  EXPECT_EQ(probe.content, std::string("a\0b\n", 4));  // binary content, NULs included

  decoder.decode("C" + i8(0) + i64(0x100) + i64(0x1a0) + i64(123456789), probe);
  EXPECT_EQ(probe.commit.commit_lsn.value(), 0x100u);
  EXPECT_EQ(probe.commit.end_lsn.value(), 0x1a0u);
  EXPECT_EQ(probe.commit.commit_time, 123456789);
}

TEST(PgOutput, MalformedMessagesNameTypeOffsetAndField) {
  struct Case {
    std::string message;
    std::string expected;  // in the error text
  };
  const std::string insert_head = "I" + i32(1) + "N";
  const std::vector<Case> cases = {
      {"", "an empty message"},
      {"X", "unknown message type 'X' (0x58)"},
      {"S" + i32(1) + i8(1), "unknown message type 'S'"},  // stream start: protocol version 2 only
      {std::string(1, '\x01'), "unknown message type 0x01"},
      {"B" + i64(1), "pgoutput Begin ('B') message at offset 9: truncated: the commit timestamp needs 8 bytes, 0 left"},
      {insert_head + i16(-1), "pgoutput Insert ('I') message at offset 6: negative column count -1"},
      {insert_head + i16(3) + "nn", "column count 3 does not fit in the 2 bytes left"},
      {insert_head + i16(1) + "x", "offset 8: unknown column kind 'x' (0x78)"},
      {insert_head + i16(1) + "t" + i32(-5), "offset 9: negative column length -5"},
      {insert_head + i16(1) + "t" + i32(10) + "abc", "offset 13: truncated: a column value needs 10 bytes, 3 left"},
      {"I" + i32(1) + "K" + i16(0), "offset 5: unexpected tuple marker 'K' (0x4b) (expected one of N)"},
      {"U" + i32(1) + "Z", "pgoutput Update ('U') message at offset 5: unexpected tuple marker 'Z'"},
      {"U" + i32(1) + "K" + i16(0) + "K" + i16(0), "offset 8: unexpected tuple marker 'K' (0x4b) (expected one of N)"},
      {"D" + i32(1) + "N" + i16(0), "pgoutput Delete ('D') message at offset 5: unexpected tuple marker 'N'"},
      {"R" + i32(1) + str("s") + str("t") + "z" + i16(0), "offset 9: unknown replica identity 'z'"},
      {"R" + i32(1) + str("s") + "t", "the relation name has no terminating NUL"},
      {"R" + i32(1) + str("s") + str("t") + "d" + i16(2) + i8(1) + str("a") + i32(23) + i32(-1),
       "column count 2 does not fit in the 11 bytes left"},
      {"T" + i32(-1) + i8(0), "pgoutput Truncate ('T') message at offset 1: negative relation count -1"},
      {"T" + i32(0x7fffffff) + i8(0) + i32(1), "relation count 2147483647 does not fit in the 4 bytes left"},
      {"M" + i8(1) + i64(1) + str("p") + i32(-1), "pgoutput Message ('M') message at offset 12: negative content length -1"},
      {"M" + i8(1) + i64(1) + str("p") + i32(5) + "ab", "the content needs 5 bytes, 2 left"},
      {"O" + i64(1) + "name", "the origin name has no terminating NUL"},
      {"Y" + i32(1) + str("s"), "the type name has no terminating NUL"},
      {"C" + i8(0) + i64(1) + i64(2) + i64(3) + "\n", "offset 26: 1 unexpected bytes after the last field"},
  };
  for (const Case &c : cases) {
    Error e = malformed(c.message);
    EXPECT_TRUE(has(e.what(), c.expected)) << "got: " << e.what() << "\nwanted: " << c.expected;
    EXPECT_TRUE(has(e.what(), "malformed pgoutput")) << e.what();
  }
}

// A failed message leaves the decoder usable: the next good message decodes normally.
TEST(PgOutput, DecoderRecoversAfterAMalformedMessage) {
  PgOutputDecoder decoder;
  Transcript t;
  error_of([&] { decoder.decode("I" + i32(1) + "N" + i16(2) + text_col("a"), t); });
  decoder.decode("I" + i32(1) + "N" + i16(1) + text_col("b"), t);
  EXPECT_EQ(t.lines, (std::vector<std::string>{"INSERT ?1 N('b')"}));
}

// --- Framing ---

TEST(PgOutput, DecodesXLogDataFrame) {
  std::string payload = "B" + i64(0x2000) + i64(5) + i32(7);
  std::string message = "w" + i64(0x16B374D848) + i64(0x16B374D900) + i64(42) + payload;
  ReplicationFrame frame = decode_frame(message);  // the payload is a view into `message`
  ASSERT_TRUE(frame.xlog);
  EXPECT_FALSE(frame.keepalive);
  EXPECT_EQ(frame.xlog->wal_start.to_string(), "16/B374D848");
  EXPECT_EQ(frame.xlog->wal_end.to_string(), "16/B374D900");
  EXPECT_EQ(frame.xlog->send_time, 42);
  EXPECT_EQ(frame.xlog->payload, payload);
  EXPECT_EQ(frame.xlog->payload.data(), message.data() + 25);
  EXPECT_EQ(decode_frame("w" + i64(1) + i64(2) + i64(3)).xlog->payload, "");  // an empty payload frames fine
}

TEST(PgOutput, DecodesKeepaliveFrame) {
  ReplicationFrame frame = decode_frame("k" + i64(0x1000000ff) + i64(-1) + i8(1));
  ASSERT_TRUE(frame.keepalive);
  EXPECT_FALSE(frame.xlog);
  EXPECT_EQ(frame.keepalive->wal_end.to_string(), "1/FF");
  EXPECT_EQ(frame.keepalive->send_time, -1);
  EXPECT_TRUE(frame.keepalive->reply_requested);
  EXPECT_FALSE(decode_frame("k" + i64(1) + i64(2) + i8(0)).keepalive->reply_requested);
}

TEST(PgOutput, MalformedFramesAreProtocolViolations) {
  const std::string keepalive = "k" + i64(1) + i64(2) + i8(0);
  const std::string xlog_header = "w" + i64(1) + i64(2) + i64(3);
  for (size_t len = 0; len < keepalive.size(); len++) {
    Error e = error_of([&] { decode_frame(keepalive.substr(0, len)); });
    EXPECT_EQ(e.sqlstate(), sqlstate::kProtocolViolation) << e.what();
  }
  for (size_t len = 1; len < xlog_header.size(); len++) {
    Error e = error_of([&] { decode_frame(xlog_header.substr(0, len)); });
    EXPECT_EQ(e.sqlstate(), sqlstate::kProtocolViolation) << e.what();
    EXPECT_TRUE(has(e.what(), "replication XLogData ('w') message at offset")) << e.what();
  }
  Error extra = error_of([&] { decode_frame(keepalive + "x"); });
  EXPECT_TRUE(has(extra.what(), "primary keepalive ('k') message at offset 18: 1 unexpected bytes")) << extra.what();
  Error unknown = error_of([&] { decode_frame("r" + i64(0)); });
  EXPECT_TRUE(has(unknown.what(), "unknown type 'r' (0x72) (expected 'w' or 'k')")) << unknown.what();
  EXPECT_EQ(error_of([&] { decode_frame(""); }).sqlstate(), sqlstate::kProtocolViolation);
}

TEST(PgOutput, EncodesStatusUpdateExactly) {
  std::string update = encode_status_update(Lsn(0x16B374D848), Lsn(0x0102030405060708), Lsn(0), 0x1122334455667788, true);
  std::string expected = std::string("r") +
                         std::string("\x00\x00\x00\x16\xB3\x74\xD8\x48", 8) +
                         std::string("\x01\x02\x03\x04\x05\x06\x07\x08", 8) +
                         std::string("\x00\x00\x00\x00\x00\x00\x00\x00", 8) +
                         std::string("\x11\x22\x33\x44\x55\x66\x77\x88", 8) + std::string("\x01", 1);
  EXPECT_EQ(update, expected);
  EXPECT_EQ(update.size(), 34u);
  EXPECT_EQ(encode_status_update(Lsn(1), Lsn(1), Lsn(1), -1, false).back(), '\0');
}

TEST(PgOutput, PgEpochClockIsMicrosecondsSince2000) {
  int64_t now = pg_epoch_now_us();
  // 2024-01-01 is 24 years (8766 days) after 2000-01-01; 2100 is far off.
  EXPECT_GT(now, int64_t{8766} * 86400 * 1000000);
  EXPECT_LT(now, int64_t{36525} * 86400 * 1000000);
}

}  // namespace
}  // namespace pgdog_reshard
