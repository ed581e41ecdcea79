// PostgreSQL's binary COPY format, streamed: a reader that splits a COPY TO STDOUT stream into raw
// tuples, and a writer that assembles a COPY FROM STDIN stream from raw tuples.
//
// The table copy forwards rows byte for byte: the only thing it ever looks inside is the sharding
// key field. So the reader hands out views of a tuple's bytes (field count through last field) plus
// where each field starts, and the writer appends those bytes unchanged.
//
// The format (PostgreSQL docs, "COPY: File Formats, Binary Format"), all integers big-endian:
//   header  : 11-byte signature "PGCOPY\n\377\r\n\0", int32 flags, int32 extension length + bytes
//   tuple   : int16 field count, then per field int32 length (-1 = NULL) and that many bytes
//   trailer : int16 -1
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace pgdog_reshard {

// Big-endian loads: the wire order of every integer in the format.
inline uint16_t load_be16(const char *p) {
  const auto *u = reinterpret_cast<const unsigned char *>(p);
  return static_cast<uint16_t>(u[0] << 8 | u[1]);
}
inline uint32_t load_be32(const char *p) {
  const auto *u = reinterpret_cast<const unsigned char *>(p);
  return uint32_t{u[0]} << 24 | uint32_t{u[1]} << 16 | uint32_t{u[2]} << 8 | uint32_t{u[3]};
}
inline uint64_t load_be64(const char *p) {
  return uint64_t{load_be32(p)} << 32 | load_be32(p + 4);
}

// One field of a tuple: its bytes in the type's binary send format, or NULL.
struct CopyField {
  const char *data = nullptr;
  int32_t length = -1;  // -1 = NULL

  bool is_null() const { return length < 0; }
  std::string_view bytes() const {
    return is_null() ? std::string_view() : std::string_view(data, static_cast<size_t>(length));
  }
};

// A complete tuple, valid only during the reader's callback (it points into the chunk being fed
// or into the reader's partial-tuple buffer).
class TupleView {
 public:
  TupleView(const char *data, size_t size, const size_t *field_offsets, int field_count)
      : data_(data), size_(size), offsets_(field_offsets), field_count_(field_count) {}

  // The raw bytes, exactly as they appear in the stream: what CopyBinaryWriter appends.
  const char *data() const { return data_; }
  size_t size() const { return size_; }
  int field_count() const { return field_count_; }

  // Field i (0 <= i < field_count()), without copying.
  CopyField field(int i) const {
    const char *at = data_ + offsets_[i];
    auto length = static_cast<int32_t>(load_be32(at));
    return CopyField{at + 4, length < 0 ? -1 : length};
  }

 private:
  const char *data_;
  size_t size_;
  const size_t *offsets_;  // per field: offset of its length word from data_
  int field_count_;
};

// Splits a binary COPY stream fed in chunks of any size into tuples. Only a tuple split across
// chunks is buffered (until it is complete); every other tuple is handed out in place.
class CopyBinaryReader {
 public:
  using TupleHandler = std::function<void(const TupleView &)>;

  // expected_fields >= 0 makes every tuple with another field count an error (the COPY column
  // list's length); -1 accepts any count.
  explicit CopyBinaryReader(TupleHandler on_tuple, int expected_fields = -1);

  // Parses `len` more bytes. Throws Error(22P04) naming what is wrong on malformed input; the
  // handler's exceptions propagate. After an error the reader must not be fed again.
  void feed(const char *data, size_t len);
  // The stream is over: throws Error(22P04) unless the trailer was seen.
  void finish() const;

  bool done() const { return state_ == State::Done; }   // trailer seen
  uint64_t tuples() const { return tuples_; }
  uint64_t bytes() const { return bytes_; }              // fed so far
  size_t buffered() const { return pending_.size(); }    // bytes of a partial tuple held

 private:
  enum class State { Header, Extension, Tuples, Done };
  enum class Scan { Complete, Incomplete, Trailer };

  size_t take_header(const char *data, size_t len);
  size_t skip_extension(size_t len);
  size_t take_tuples(const char *data, size_t len);
  size_t complete_pending(const char *data, size_t len);
  Scan scan(const char *tuple, size_t available);
  void deliver(const char *tuple);
  void end_of_data(size_t tuple_start);
  void release_pending();
  [[noreturn]] void fail(const std::string &message) const;

  TupleHandler on_tuple_;
  int expected_fields_;
  State state_ = State::Header;
  std::string pending_;  // the header, or one partial tuple split across chunks
  uint64_t extension_left_ = 0;

  // Progress through the current tuple, kept across chunks so a split tuple is never re-scanned.
  int field_count_ = -1;             // -1 until the count is read
  size_t scan_pos_ = 0;              // offset after the last complete field
  size_t need_ = 0;                  // bytes still missing before the scan can advance
  std::vector<size_t> offsets_;      // length-word offsets of the complete fields

  uint64_t tuples_ = 0;
  uint64_t bytes_ = 0;
  uint64_t tuple_start_ = 0;         // stream offset of the current tuple, for messages
};

// Builds one destination's COPY FROM STDIN (FORMAT binary) stream: the header, raw tuples, the
// trailer. Bytes are collected in a buffer handed to the sink whenever it reaches flush_bytes, so
// the sink sees few, large writes; a tuple larger than that goes to the sink without a copy.
class CopyBinaryWriter {
 public:
  using Sink = std::function<void(const char *data, size_t len)>;
  static constexpr size_t kDefaultFlushBytes = 64 * 1024;

  explicit CopyBinaryWriter(Sink sink, size_t flush_bytes = kDefaultFlushBytes);

  void write(const TupleView &tuple) { write_tuple(tuple.data(), tuple.size()); }
  // `data` must be one whole tuple in the binary format (as a TupleView's bytes are).
  void write_tuple(const char *data, size_t len);
  void flush();   // hands whatever is buffered to the sink
  void finish();  // appends the trailer and flushes; nothing may be written after it

  uint64_t rows() const { return rows_; }
  uint64_t bytes() const { return bytes_; }  // the whole stream so far, header included
  bool finished() const { return finished_; }

 private:
  void append(const char *data, size_t len);

  Sink sink_;
  size_t flush_bytes_;
  std::string buffer_;
  uint64_t rows_ = 0;
  uint64_t bytes_ = 0;
  bool finished_ = false;
};

}  // namespace pgdog_reshard
