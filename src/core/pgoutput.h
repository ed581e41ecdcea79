// The pgoutput logical replication protocol, decoded (PostgreSQL docs: "Logical Replication Message
// Formats"), and the streaming replication framing around it ("Streaming Replication Protocol":
// XLogData, primary keepalive, standby status update).
//
// Decoded messages hold views into the buffer they were decoded from: valid until the next message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/lsn.h"

namespace pgdog_reshard {

// --- Framing of CopyBoth data on a START_REPLICATION connection ---

struct XLogData {
  Lsn wal_start;
  Lsn wal_end;
  int64_t send_time = 0;     // microseconds since 2000-01-01
  std::string_view payload;  // one pgoutput message
};

struct Keepalive {
  Lsn wal_end;
  int64_t send_time = 0;
  bool reply_requested = false;
};

// Decodes one CopyData message from the server: exactly one of the two is set. Throws Error(08P01)
// naming what is malformed.
struct ReplicationFrame {
  std::optional<XLogData> xlog;
  std::optional<Keepalive> keepalive;
};
ReplicationFrame decode_frame(std::string_view message);

// A standby status update ('r'): write, flush and apply positions, the client clock (microseconds
// since 2000-01-01), and whether the server should reply at once.
std::string encode_status_update(Lsn written, Lsn flushed, Lsn applied, int64_t now_us, bool reply_requested);
int64_t pg_epoch_now_us();

// --- pgoutput messages ---

struct RelationColumn {
  bool key = false;       // part of the replica identity
  std::string name;
  uint32_t type_oid = 0;
  int32_t type_modifier = -1;
};

struct Relation {
  uint32_t oid = 0;
  std::string schema;
  std::string name;
  char replica_identity = 'd';  // d default, n nothing, f full, i index
  std::vector<RelationColumn> columns;
};

// One column value in a tuple: NULL, unchanged TOASTed value (not sent), text or binary.
struct ColumnValue {
  enum class Kind : char { Null = 'n', Unchanged = 'u', Text = 't', Binary = 'b' };
  Kind kind = Kind::Null;
  std::string_view data;  // for Text and Binary
};

using Tuple = std::vector<ColumnValue>;

struct Begin {
  Lsn final_lsn;  // the commit's LSN: the same for every change of the transaction
  int64_t commit_time = 0;
  uint32_t xid = 0;
};

struct Commit {
  uint8_t flags = 0;
  Lsn commit_lsn;
  Lsn end_lsn;  // the position to confirm once this transaction is applied
  int64_t commit_time = 0;
};

struct Insert {
  uint32_t relation = 0;
  Tuple new_tuple;
};

struct Update {
  uint32_t relation = 0;
  char old_kind = 0;  // 0: no old tuple; 'K': old key columns; 'O': whole old row (REPLICA IDENTITY FULL)
  Tuple old_tuple;    // when old_kind != 0
  Tuple new_tuple;
};

struct Delete {
  uint32_t relation = 0;
  char old_kind = 'K';  // 'K' or 'O'
  Tuple old_tuple;
};

struct Truncate {
  bool cascade = false;
  bool restart_identity = false;
  std::vector<uint32_t> relations;
};

struct TypeMessage {
  uint32_t oid = 0;
  std::string schema;
  std::string name;
};

struct Origin {
  Lsn commit_lsn;
  std::string name;
};

struct LogicalMessage {  // pg_logical_emit_message
  bool transactional = false;
  Lsn lsn;
  std::string prefix;
  std::string_view content;
};

// Receives decoded messages. Default implementations ignore the message.
class PgOutputHandler {
 public:
  virtual ~PgOutputHandler() = default;
  virtual void on_begin(const Begin &) {}
  virtual void on_commit(const Commit &) {}
  virtual void on_relation(const Relation &) {}
  virtual void on_type(const TypeMessage &) {}
  virtual void on_insert(const Insert &) {}
  virtual void on_update(const Update &) {}
  virtual void on_delete(const Delete &) {}
  virtual void on_truncate(const Truncate &) {}
  virtual void on_origin(const Origin &) {}
  virtual void on_message(const LogicalMessage &) {}
};

// Decodes one pgoutput message (protocol version 1, as PostgreSQL 15 sends without streaming of
// in-progress transactions) and calls the handler. Reuses its tuple buffers between calls, so a
// steady stream allocates nothing per change. Throws Error(08P01) for a malformed or unknown message.
class PgOutputDecoder {
 public:
  void decode(std::string_view message, PgOutputHandler &handler);

 private:
  void deliver(char type, PgOutputHandler &handler) const;

  // Decoded into and handed out by reference: a steady stream reuses their capacity (tuples,
  // relation lists, strings) instead of allocating per message.
  Begin begin_;
  Commit commit_;
  Insert insert_;
  Update update_;
  Delete delete_;
  Truncate truncate_;
  LogicalMessage message_;
  Relation relation_;
  TypeMessage type_;
  Origin origin_;
};

}  // namespace pgdog_reshard
