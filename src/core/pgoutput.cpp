#include "core/pgoutput.h"

#include <chrono>
#include <cstdio>

#include "core/error.h"

namespace pgdog_reshard {

namespace {

// PostgreSQL counts time from 2000-01-01 00:00:00 UTC, 946684800 s after the Unix epoch.
constexpr int64_t kPgEpochOffsetUs = 946684800LL * 1000000;

// Fixed sizes of the framing messages ("Streaming Replication Protocol").
constexpr size_t kXLogDataHeader = 1 + 8 + 8 + 8;   // 'w', walStart, walEnd, sendTime
constexpr size_t kKeepaliveSize = 1 + 8 + 8 + 1;    // 'k', walEnd, sendTime, replyRequested
constexpr size_t kStatusUpdateSize = 1 + 8 * 4 + 1;  // 'r', written, flushed, applied, clock, reply

// The smallest encoding of one Relation column: flags, empty name's NUL, type oid, type modifier.
constexpr size_t kMinRelationColumn = 1 + 1 + 4 + 4;

// "'I' (0x49)": the type byte as a reader of the error wants it, printable or not.
std::string describe_type(char type) {
  char text[16];
  unsigned code = static_cast<unsigned char>(type);
  if (code >= 0x20 && code < 0x7f) {
    std::snprintf(text, sizeof text, "'%c' (0x%02x)", type, code);
  } else {
    std::snprintf(text, sizeof text, "0x%02x", code);
  }
  return text;
}

// What errors call each message: literals, so that naming costs nothing until a message fails.
const char *pgoutput_name(char type) {
  switch (type) {
    case 'B': return "pgoutput Begin ('B')";
    case 'C': return "pgoutput Commit ('C')";
    case 'O': return "pgoutput Origin ('O')";
    case 'R': return "pgoutput Relation ('R')";
    case 'Y': return "pgoutput Type ('Y')";
    case 'I': return "pgoutput Insert ('I')";
    case 'U': return "pgoutput Update ('U')";
    case 'D': return "pgoutput Delete ('D')";
    case 'T': return "pgoutput Truncate ('T')";
    case 'M': return "pgoutput Message ('M')";
    default: return nullptr;
  }
}

// A bounds-checked big-endian cursor over one message. Every read checks what is left first, so a
// truncated or lying message becomes an Error naming the message, the offset and the field, never
// a read past the buffer. Failures build their text only when they happen.
class Reader {
 public:
  Reader(std::string_view data, const char *what) : data_(data), what_(what) {}

  uint8_t u8(const char *field) { return static_cast<uint8_t>(take(1, field)[0]); }
  int16_t i16(const char *field) { return static_cast<int16_t>(big_endian(take(2, field))); }
  uint32_t u32(const char *field) { return static_cast<uint32_t>(big_endian(take(4, field))); }
  int32_t i32(const char *field) { return static_cast<int32_t>(u32(field)); }
  uint64_t u64(const char *field) { return big_endian(take(8, field)); }
  int64_t i64(const char *field) { return static_cast<int64_t>(u64(field)); }
  Lsn lsn(const char *field) { return Lsn(u64(field)); }
  std::string_view bytes(size_t n, const char *field) { return take(n, field); }

  // A protocol String: text up to a NUL, which is consumed but not returned.
  std::string_view cstring(const char *field) {
    size_t end = data_.find('\0', pos_);
    if (end == std::string_view::npos) fail(pos_, std::string(field) + " has no terminating NUL");
    std::string_view text = data_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return text;
  }

  // A count of items that each take at least `min_item_size` bytes: a count the rest of the message
  // cannot hold is rejected before anything is sized by it.
  size_t count(int64_t n, size_t min_item_size, size_t at, const char *what) {
    if (n < 0) fail(at, std::string("negative ") + what + " " + std::to_string(n));
    if (static_cast<uint64_t>(n) > remaining() / min_item_size) {
      fail(at, std::string(what) + " " + std::to_string(n) + " does not fit in the " +
                   std::to_string(remaining()) + " bytes left");
    }
    return static_cast<size_t>(n);
  }

  std::string_view rest() {
    std::string_view tail = data_.substr(pos_);
    pos_ = data_.size();
    return tail;
  }

  // Trailing bytes mean the message is not what we think it is: refuse rather than guess.
  void finish() {
    if (pos_ != data_.size()) {
      fail(pos_, std::to_string(data_.size() - pos_) + " unexpected bytes after the last field");
    }
  }

  size_t offset() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }

  [[noreturn]] void fail(size_t at, const std::string &problem) const {
    throw Error(sqlstate::kProtocolViolation,
                std::string("malformed ") + what_ + " message at offset " + std::to_string(at) +
                    ": " + problem,
                "The message is " + std::to_string(data_.size()) + " bytes long.");
  }

 private:
  std::string_view take(size_t n, const char *field) {
    if (remaining() < n) {
      fail(pos_, std::string("truncated: ") + field + " needs " + std::to_string(n) +
                     " bytes, " + std::to_string(remaining()) + " left");
    }
    std::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  static uint64_t big_endian(std::string_view bytes) {
    uint64_t value = 0;
    for (char c : bytes) value = (value << 8) | static_cast<unsigned char>(c);
    return value;
  }

  std::string_view data_;
  const char *what_;
  size_t pos_ = 0;
};

void put_u8(std::string &out, uint8_t v) { out.push_back(static_cast<char>(v)); }

void put_u64(std::string &out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

// TupleData into `tuple`, reusing its capacity: resize never allocates once a tuple this wide was seen.
void read_tuple(Reader &in, Tuple &tuple) {
  size_t at = in.offset();
  size_t columns = in.count(in.i16("the column count"), 1, at, "column count");
  tuple.resize(columns);
  for (ColumnValue &value : tuple) {
    size_t kind_at = in.offset();
    char kind = static_cast<char>(in.u8("a column kind"));
    value.data = {};
    switch (kind) {
      case 'n': value.kind = ColumnValue::Kind::Null; break;
      case 'u': value.kind = ColumnValue::Kind::Unchanged; break;
      case 't':
      case 'b': {
        value.kind = kind == 't' ? ColumnValue::Kind::Text : ColumnValue::Kind::Binary;
        size_t len_at = in.offset();
        int32_t len = in.i32("a column length");
        if (len < 0) in.fail(len_at, "negative column length " + std::to_string(len));
        value.data = in.bytes(static_cast<size_t>(len), "a column value");
        break;
      }
      default:
        in.fail(kind_at, "unknown column kind " + describe_type(kind) + " (expected n, u, t or b)");
    }
  }
}

// The byte announcing a tuple: one of `allowed` ("N", "KO", "KON").
char read_tuple_marker(Reader &in, std::string_view allowed) {
  size_t at = in.offset();
  char marker = static_cast<char>(in.u8("the tuple marker"));
  if (allowed.find(marker) == std::string_view::npos) {
    in.fail(at, "unexpected tuple marker " + describe_type(marker) + " (expected one of " +
                    std::string(allowed) + ")");
  }
  return marker;
}

void read_begin(Reader &in, Begin &begin) {
  begin.final_lsn = in.lsn("the final LSN");
  begin.commit_time = in.i64("the commit timestamp");
  begin.xid = in.u32("the xid");
}

void read_commit(Reader &in, Commit &commit) {
  commit.flags = in.u8("the flags");
  commit.commit_lsn = in.lsn("the commit LSN");
  commit.end_lsn = in.lsn("the end LSN");
  commit.commit_time = in.i64("the commit timestamp");
}

void read_origin(Reader &in, Origin &origin) {
  origin.commit_lsn = in.lsn("the origin's commit LSN");
  origin.name.assign(in.cstring("the origin name"));
}

void read_type(Reader &in, TypeMessage &type) {
  type.oid = in.u32("the type oid");
  type.schema.assign(in.cstring("the type's schema"));
  type.name.assign(in.cstring("the type name"));
}

void read_relation(Reader &in, Relation &relation) {
  relation.oid = in.u32("the relation oid");
  relation.schema.assign(in.cstring("the schema name"));
  relation.name.assign(in.cstring("the relation name"));
  size_t identity_at = in.offset();
  relation.replica_identity = static_cast<char>(in.u8("the replica identity"));
  if (std::string_view("dnfi").find(relation.replica_identity) == std::string_view::npos) {
    in.fail(identity_at, "unknown replica identity " + describe_type(relation.replica_identity));
  }
  size_t at = in.offset();
  size_t columns = in.count(in.i16("the column count"), kMinRelationColumn, at, "column count");
  relation.columns.resize(columns);
  for (RelationColumn &column : relation.columns) {
    column.key = (in.u8("the column flags") & 1) != 0;  // other bits are not defined: ignored
    column.name.assign(in.cstring("the column name"));
    column.type_oid = in.u32("the column type oid");
    column.type_modifier = in.i32("the column type modifier");
  }
}

void read_insert(Reader &in, Insert &insert) {
  insert.relation = in.u32("the relation oid");
  read_tuple_marker(in, "N");
  read_tuple(in, insert.new_tuple);
}

void read_update(Reader &in, Update &update) {
  update.relation = in.u32("the relation oid");
  char marker = read_tuple_marker(in, "KON");
  update.old_kind = 0;
  update.old_tuple.clear();
  if (marker != 'N') {
    update.old_kind = marker;
    read_tuple(in, update.old_tuple);
    read_tuple_marker(in, "N");
  }
  read_tuple(in, update.new_tuple);
}

void read_delete(Reader &in, Delete &del) {
  del.relation = in.u32("the relation oid");
  del.old_kind = read_tuple_marker(in, "KO");
  read_tuple(in, del.old_tuple);
}

void read_truncate(Reader &in, Truncate &truncate) {
  size_t at = in.offset();
  int32_t declared = in.i32("the relation count");
  uint8_t options = in.u8("the options");
  truncate.cascade = (options & 1) != 0;
  truncate.restart_identity = (options & 2) != 0;
  truncate.relations.resize(in.count(declared, 4, at, "relation count"));
  for (uint32_t &oid : truncate.relations) oid = in.u32("a relation oid");
}

void read_message(Reader &in, LogicalMessage &message) {
  message.transactional = (in.u8("the flags") & 1) != 0;
  message.lsn = in.lsn("the message LSN");
  message.prefix.assign(in.cstring("the prefix"));
  size_t at = in.offset();
  int32_t len = in.i32("the content length");
  if (len < 0) in.fail(at, "negative content length " + std::to_string(len));
  message.content = in.bytes(static_cast<size_t>(len), "the content");
}

XLogData read_xlog_data(Reader &in) {
  XLogData xlog;
  xlog.wal_start = in.lsn("walStart");
  xlog.wal_end = in.lsn("walEnd");
  xlog.send_time = in.i64("sendTime");
  xlog.payload = in.rest();
  return xlog;
}

Keepalive read_keepalive(Reader &in) {
  Keepalive keepalive;
  keepalive.wal_end = in.lsn("walEnd");
  keepalive.send_time = in.i64("sendTime");
  keepalive.reply_requested = in.u8("replyRequested") != 0;
  in.finish();
  return keepalive;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Framing

ReplicationFrame decode_frame(std::string_view message) {
  if (message.empty()) {
    throw Error(sqlstate::kProtocolViolation,
                "malformed replication message: an empty CopyData message");
  }
  ReplicationFrame frame;
  switch (message[0]) {
    case 'w': {
      Reader in(message, "replication XLogData ('w')");
      in.bytes(1, "the type");
      frame.xlog = read_xlog_data(in);
      break;
    }
    case 'k': {
      Reader in(message, "replication primary keepalive ('k')");
      in.bytes(1, "the type");
      frame.keepalive = read_keepalive(in);
      break;
    }
    default:
      throw Error(sqlstate::kProtocolViolation,
                  "malformed replication message at offset 0: unknown type " +
                      describe_type(message[0]) + " (expected 'w' or 'k')",
                  "The message is " + std::to_string(message.size()) + " bytes long.");
  }
  return frame;
}

std::string encode_status_update(Lsn written, Lsn flushed, Lsn applied, int64_t now_us,
                                 bool reply_requested) {
  std::string out;
  out.reserve(kStatusUpdateSize);
  put_u8(out, 'r');
  put_u64(out, written.value());
  put_u64(out, flushed.value());
  put_u64(out, applied.value());
  put_u64(out, static_cast<uint64_t>(now_us));
  put_u8(out, reply_requested ? 1 : 0);
  return out;
}

int64_t pg_epoch_now_us() {
  auto since_unix = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return static_cast<int64_t>(since_unix.count()) - kPgEpochOffsetUs;
}

// ---------------------------------------------------------------------------------------------
// pgoutput

// Each message is decoded completely, and checked for trailing bytes, before the handler sees it:
// a handler never acts on half of a malformed message.
void PgOutputDecoder::decode(std::string_view message, PgOutputHandler &handler) {
  if (message.empty()) {
    throw Error(sqlstate::kProtocolViolation, "malformed pgoutput message: an empty message");
  }
  char type = message[0];
  const char *name = pgoutput_name(type);
  if (!name) {
    throw Error(sqlstate::kProtocolViolation,
                "malformed pgoutput message at offset 0: unknown message type " +
                    describe_type(type),
                "The message is " + std::to_string(message.size()) + " bytes long.",
                "Stream with proto_version '1' and without the streaming or two_phase options.");
  }
  Reader in(message, name);
  in.bytes(1, "the type");
  switch (type) {
    case 'B': read_begin(in, begin_); break;
    case 'C': read_commit(in, commit_); break;
    case 'O': read_origin(in, origin_); break;
    case 'R': read_relation(in, relation_); break;
    case 'Y': read_type(in, type_); break;
    case 'I': read_insert(in, insert_); break;
    case 'U': read_update(in, update_); break;
    case 'D': read_delete(in, delete_); break;
    case 'T': read_truncate(in, truncate_); break;
    case 'M': read_message(in, message_); break;
  }
  in.finish();
  deliver(type, handler);
}

void PgOutputDecoder::deliver(char type, PgOutputHandler &handler) const {
  switch (type) {
    case 'B': handler.on_begin(begin_); break;
    case 'C': handler.on_commit(commit_); break;
    case 'O': handler.on_origin(origin_); break;
    case 'R': handler.on_relation(relation_); break;
    case 'Y': handler.on_type(type_); break;
    case 'I': handler.on_insert(insert_); break;
    case 'U': handler.on_update(update_); break;
    case 'D': handler.on_delete(delete_); break;
    case 'T': handler.on_truncate(truncate_); break;
    case 'M': handler.on_message(message_); break;
  }
}

}  // namespace pgdog_reshard
