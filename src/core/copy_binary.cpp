#include "core/copy_binary.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"

namespace pgdog_reshard {

namespace {

constexpr char kSignature[] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0'};
constexpr size_t kSignatureSize = sizeof kSignature;
constexpr size_t kHeaderSize = kSignatureSize + 4 + 4;  // signature, flags, extension length
// A partial-tuple buffer that grew past this (a huge value split across chunks) is freed once the
// tuple is out, so one big row does not pin its size for the rest of the table.
constexpr size_t kKeepPendingCapacity = 1 << 20;

}  // namespace

// ---------------------------------------------------------------------------------------------
// CopyBinaryReader

CopyBinaryReader::CopyBinaryReader(TupleHandler on_tuple, int expected_fields)
    : on_tuple_(std::move(on_tuple)), expected_fields_(expected_fields) {}

void CopyBinaryReader::feed(const char *data, size_t len) {
  bytes_ += len;
  while (len > 0) {
    size_t used = 0;
    switch (state_) {
      case State::Header: used = take_header(data, len); break;
      case State::Extension: used = skip_extension(len); break;
      case State::Tuples:
        used = pending_.empty() ? take_tuples(data, len) : complete_pending(data, len);
        break;
      case State::Done:
        fail(std::to_string(len) + " bytes of data after the trailer");
    }
    data += used;
    len -= used;
  }
}

void CopyBinaryReader::finish() const {
  if (state_ == State::Done) return;
  if (state_ != State::Tuples) fail("the stream ended inside the header");
  if (!pending_.empty()) fail("the stream ended in the middle of a tuple");
  fail("the stream ended without the trailer");
}

// The fixed part of the header is buffered (19 bytes); the signature is checked as soon as its
// first bytes arrive, so a text-format stream is refused at once.
size_t CopyBinaryReader::take_header(const char *data, size_t len) {
  size_t take = std::min(len, kHeaderSize - pending_.size());
  pending_.append(data, take);
  size_t sig = std::min(pending_.size(), kSignatureSize);
  if (pending_.compare(0, sig, kSignature, sig) != 0) fail("signature not recognized");
  if (pending_.size() < kHeaderSize) return take;

  uint32_t flags = load_be32(pending_.data() + kSignatureSize);
  // Bit 16 is WITH OIDS, gone since PostgreSQL 12. Any other flag is refused too: the writer emits
  // its own header, so forwarding tuples whose meaning a flag changes would corrupt them.
  if (flags & (1u << 16)) fail("the header has the OIDS flag (not supported)");
  if (flags != 0) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", flags);
    fail(std::string("unrecognized flags ") + hex + " in the header");
  }
  auto extension = static_cast<int32_t>(load_be32(pending_.data() + kSignatureSize + 4));
  if (extension < 0) fail("negative header extension length " + std::to_string(extension));

  pending_.clear();
  extension_left_ = static_cast<uint64_t>(extension);
  state_ = extension_left_ > 0 ? State::Extension : State::Tuples;
  tuple_start_ = kHeaderSize + extension_left_;
  return take;
}

// Header extensions carry nothing we use (none is defined); skipped without buffering.
size_t CopyBinaryReader::skip_extension(size_t len) {
  size_t take = static_cast<size_t>(std::min<uint64_t>(extension_left_, len));
  extension_left_ -= take;
  if (extension_left_ == 0) state_ = State::Tuples;
  return take;
}

// The fast path: tuples wholly inside the chunk are handed out in place. A tuple cut by the end
// of the chunk is copied to pending_ with its scan progress kept.
size_t CopyBinaryReader::take_tuples(const char *data, size_t len) {
  size_t off = 0;
  while (off < len) {
    switch (scan(data + off, len - off)) {
      case Scan::Complete: {
        size_t size = scan_pos_;
        deliver(data + off);
        off += size;
        break;
      }
      case Scan::Trailer:
        end_of_data(2);
        return off + 2;
      case Scan::Incomplete:
        pending_.assign(data + off, len - off);
        return len;
    }
  }
  return off;
}

// Grows the partial tuple by exactly the bytes the scan needs next, so it never swallows the start
// of the following tuple; the rest of the chunk goes back to the fast path.
size_t CopyBinaryReader::complete_pending(const char *data, size_t len) {
  size_t used = 0;
  for (;;) {
    Scan result = scan(pending_.data(), pending_.size());
    if (result == Scan::Trailer) {
      end_of_data(2);
      release_pending();
      return used;
    }
    if (result == Scan::Complete) {
      deliver(pending_.data());
      release_pending();
      return used;
    }
    if (used == len) return used;
    size_t take = std::min(need_, len - used);
    pending_.append(data + used, take);
    used += take;
  }
}

// Advances through the tuple starting at `tuple` as far as `available` bytes allow, resuming where
// the previous call stopped. On Incomplete, need_ says how many more bytes allow progress.
CopyBinaryReader::Scan CopyBinaryReader::scan(const char *tuple, size_t available) {
  if (field_count_ < 0) {
    if (available < 2) {
      need_ = 2 - available;
      return Scan::Incomplete;
    }
    auto count = static_cast<int16_t>(load_be16(tuple));
    if (count == -1) return Scan::Trailer;
    if (count < 0) fail("invalid field count " + std::to_string(count));
    if (expected_fields_ >= 0 && count != expected_fields_) {
      fail("a tuple has " + std::to_string(count) + " fields, expected " +
           std::to_string(expected_fields_));
    }
    field_count_ = count;
    scan_pos_ = 2;
    offsets_.clear();
  }
  while (offsets_.size() < static_cast<size_t>(field_count_)) {
    size_t left = available - scan_pos_;
    if (left < 4) {
      need_ = 4 - left;
      return Scan::Incomplete;
    }
    auto length = static_cast<int32_t>(load_be32(tuple + scan_pos_));
    if (length < -1) {
      fail("field " + std::to_string(offsets_.size() + 1) + " has invalid length " +
           std::to_string(length));
    }
    size_t body = length < 0 ? 0 : static_cast<size_t>(length);
    if (left - 4 < body) {
      need_ = body - (left - 4);
      return Scan::Incomplete;
    }
    offsets_.push_back(scan_pos_);
    scan_pos_ += 4 + body;
  }
  return Scan::Complete;
}

void CopyBinaryReader::deliver(const char *tuple) {
  TupleView view(tuple, scan_pos_, offsets_.data(), field_count_);
  tuple_start_ += scan_pos_;
  field_count_ = -1;  // the next scan starts a new tuple; offsets_ stays valid for the view
  tuples_++;
  on_tuple_(view);
}

void CopyBinaryReader::end_of_data(size_t trailer_size) {
  state_ = State::Done;
  tuple_start_ += trailer_size;
}

void CopyBinaryReader::release_pending() {
  if (pending_.capacity() > kKeepPendingCapacity) {
    std::string().swap(pending_);
  } else {
    pending_.clear();
  }
}

void CopyBinaryReader::fail(const std::string &message) const {
  std::string where = state_ == State::Header || state_ == State::Extension
                          ? "In the header."
                          : "In tuple " + std::to_string(tuples_ + 1) + ", at byte " +
                                std::to_string(tuple_start_) + " of the stream.";
  throw Error(sqlstate::kBadCopyFileFormat, "invalid binary COPY stream: " + message, where);
}

// ---------------------------------------------------------------------------------------------
// CopyBinaryWriter

CopyBinaryWriter::CopyBinaryWriter(Sink sink, size_t flush_bytes)
    : sink_(std::move(sink)), flush_bytes_(std::max<size_t>(flush_bytes, 1)) {
  // The buffer is below the threshold before an append, and appended tuples are smaller than it:
  // it never holds 2x the threshold, so it never reallocates.
  buffer_.reserve(2 * flush_bytes_);
  const char flags_and_extension[8] = {};  // no flags, no header extension
  append(kSignature, kSignatureSize);
  append(flags_and_extension, sizeof flags_and_extension);
}

void CopyBinaryWriter::write_tuple(const char *data, size_t len) {
  if (finished_) throw Error(sqlstate::kInternalError, "binary COPY writer: write after finish()");
  rows_++;
  if (len >= flush_bytes_) {
    flush();
    bytes_ += len;
    sink_(data, len);
    return;
  }
  append(data, len);
  if (buffer_.size() >= flush_bytes_) flush();
}

void CopyBinaryWriter::flush() {
  if (buffer_.empty()) return;
  sink_(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void CopyBinaryWriter::finish() {
  if (finished_) return;
  const char trailer[2] = {'\377', '\377'};  // int16 -1
  append(trailer, sizeof trailer);
  flush();
  finished_ = true;
}

void CopyBinaryWriter::append(const char *data, size_t len) {
  buffer_.append(data, len);
  bytes_ += len;
}

}  // namespace pgdog_reshard
