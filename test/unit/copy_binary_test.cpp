// CopyBinaryReader / CopyBinaryWriter on bytes a real PostgreSQL 15 server produced
// (data/copy_types.bin, the binary COPY of the `fixture` table in test/e2e/copy_capture_test.cpp,
// which also says how to regenerate it), fed in every possible chunking, and on every kind of
// malformed stream.
#include "core/copy_binary.h"

#include <gtest/gtest.h>

#include "expect_error.h"

#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace pgdog_reshard {
namespace {

using Fields = std::vector<std::optional<std::string>>;

std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out.push_back(static_cast<char>(v));
  return out;
}

std::string be16(int v) { return bytes({(v >> 8) & 255, v & 255}); }
std::string be32(int64_t v) {
  return bytes({int(v >> 24) & 255, int(v >> 16) & 255, int(v >> 8) & 255, int(v) & 255});
}

const std::string kSignature("PGCOPY\n\377\r\n\0", 11);
const std::string kHeader = kSignature + be32(0) + be32(0);
const std::string kTrailer = be16(-1);

std::string tuple(const Fields &fields) {
  std::string out = be16(static_cast<int>(fields.size()));
  for (const auto &f : fields) out += f ? be32(static_cast<int64_t>(f->size())) + *f : be32(-1);
  return out;
}

std::string load_fixture() {
  std::ifstream file(std::string(PGDOG_TEST_DATA_DIR) + "/copy_types.bin", std::ios::binary);
  EXPECT_TRUE(file) << "missing " << PGDOG_TEST_DATA_DIR << "/copy_types.bin";
  std::stringstream content;
  content << file.rdbuf();
  return content.str();
}

Fields fields_of(const TupleView &t) {
  Fields out;
  for (int i = 0; i < t.field_count(); i++) {
    CopyField f = t.field(i);
    out.push_back(f.is_null() ? std::nullopt : std::optional<std::string>(std::string(f.bytes())));
  }
  return out;
}

// Parses `stream` in chunks of `chunk` bytes; each tuple's fields and raw bytes.
struct Parsed {
  std::vector<Fields> rows;
  std::vector<std::string> raw;
};

Parsed parse(const std::string &stream, size_t chunk, int expected_fields = -1) {
  Parsed parsed;
  CopyBinaryReader reader(
      [&](const TupleView &t) {
        parsed.rows.push_back(fields_of(t));
        parsed.raw.emplace_back(t.data(), t.size());
      },
      expected_fields);
  for (size_t at = 0; at < stream.size(); at += chunk) {
    reader.feed(stream.data() + at, std::min(chunk, stream.size() - at));
  }
  reader.finish();
  return parsed;
}

// The fixture's rows as each type's binary send format has them (PostgreSQL docs and *send()).
const std::vector<Fields> &fixture_rows() {
  static const std::vector<Fields> rows = {
      {
          be32(1),                                               // int4 1
          bytes({0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}),  // int8 max
          bytes({0x80, 0x00}),                                   // int2 -32768
          "h\xc3\xa9llo w\xc3\xb6rld \xe2\x82\xac",             // UTF-8 text
          bytes({0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55,
                 0x44, 0x00, 0x00}),  // uuid
          // numeric 1.5: ndigits 2, weight 0, sign +, dscale 1, base-10000 digits 1 and 5000
          be16(2) + be16(0) + be16(0) + be16(1) + be16(1) + be16(5000),
          "\x01{\"a\": [1, 2]}",  // jsonb: version 1, then the text
          // int4[] {1,NULL,3}: 1 dimension, has nulls, element type 23, length 3, lower bound 1
          be32(1) + be32(1) + be32(23) + be32(3) + be32(1) + be32(4) + be32(1) + be32(-1) +
              be32(4) + be32(3),
          bytes({0x00, 0xff, 0x10}),  // bytea
          std::string(8, '\0'),       // timestamptz 2000-01-01 00:00:00+00, the epoch: 0 us
          bytes({1}),                 // bool true
          "apples",                   // varchar(20)
      },
      {
          be32(2),
          std::string(8, '\xff'),  // int8 -1
          be16(0),
          "",                      // empty text: length 0, not NULL
          std::string(16, '\0'),
          // numeric -123456.789: digits 12 3456 7890, weight 1, sign 0x4000, dscale 3
          be16(3) + be16(1) + be16(0x4000) + be16(3) + be16(12) + be16(3456) + be16(7890),
          "\x01null",
          be32(0) + be32(0) + be32(23),  // int4[] {}: no dimensions
          "",                            // empty bytea
          std::string(8, '\xff'),        // 1999-12-31 23:59:59.999999+00: -1 us
          bytes({0}),
          "",
      },
      Fields{be32(3), std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
             std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt},
  };
  return rows;
}

Error parse_error(const std::string &stream, int expected_fields = -1) {
  return error_of([&] { parse(stream, stream.size() + 1, expected_fields); });
}

#define EXPECT_CONTAINS(text, part)                          \
  EXPECT_NE(std::string(text).find(part), std::string::npos) \
      << "\"" << (text) << "\" lacks \"" << (part) << "\""

TEST(CopyBinary, ParsesServerFixtureInEveryChunking) {
  std::string stream = load_fixture();
  ASSERT_EQ(stream.substr(0, 19), kHeader);
  for (size_t chunk = 1; chunk <= stream.size(); chunk++) {
    SCOPED_TRACE("chunks of " + std::to_string(chunk) + " bytes");
    Parsed parsed = parse(stream, chunk, 12);
    ASSERT_EQ(parsed.rows, fixture_rows());
  }
}

TEST(CopyBinary, TupleBytesAreTheStreamBytes) {
  std::string stream = load_fixture();
  Parsed parsed = parse(stream, 5);
  std::string joined = kHeader;
  for (const std::string &raw : parsed.raw) joined += raw;
  EXPECT_EQ(joined + kTrailer, stream);
  EXPECT_EQ(parsed.raw[2], tuple(fixture_rows()[2]));
}

TEST(CopyBinary, FieldAccessors) {
  std::string stream = kHeader + tuple({std::string("ab"), std::nullopt, std::string()}) + kTrailer;
  CopyBinaryReader reader([&](const TupleView &t) {
    ASSERT_EQ(t.field_count(), 3);
    EXPECT_FALSE(t.field(0).is_null());
    EXPECT_EQ(t.field(0).length, 2);
    EXPECT_EQ(t.field(0).bytes(), "ab");
    EXPECT_TRUE(t.field(1).is_null());
    EXPECT_EQ(t.field(1).bytes(), "");
    EXPECT_FALSE(t.field(2).is_null());  // empty is not NULL
    EXPECT_EQ(t.field(2).length, 0);
  });
  reader.feed(stream.data(), stream.size());
  reader.finish();
  EXPECT_TRUE(reader.done());
  EXPECT_EQ(reader.tuples(), 1u);
  EXPECT_EQ(reader.bytes(), stream.size());
}

TEST(CopyBinary, EmptyTableAndZeroFieldTuples) {
  EXPECT_TRUE(parse(kHeader + kTrailer, 1).rows.empty());
  Parsed parsed = parse(kHeader + tuple({}) + tuple({}) + kTrailer, 1);
  EXPECT_EQ(parsed.rows, (std::vector<Fields>{{}, {}}));
}

TEST(CopyBinary, SkipsHeaderExtension) {
  std::string stream = kSignature + be32(0) + be32(5) + "12345" + tuple({std::string("x")}) + kTrailer;
  for (size_t chunk : {1, 3, 100}) {
    EXPECT_EQ(parse(stream, chunk).rows, (std::vector<Fields>{{std::string("x")}}));
  }
}

// Only a tuple cut by a chunk boundary is held, and only until it is complete.
TEST(CopyBinary, BuffersOnlyTheTupleBeingCompleted) {
  std::string big(300000, 'v');
  std::string small_tuple = tuple({std::string("k"), std::string("small")});
  std::string big_tuple = tuple({std::string("k"), big});
  std::string stream = kHeader + small_tuple + big_tuple + small_tuple + kTrailer;

  size_t max_buffered = 0;
  std::vector<size_t> sizes;
  CopyBinaryReader reader([&](const TupleView &t) { sizes.push_back(t.size()); });
  for (size_t at = 0; at < stream.size(); at += 4096) {
    reader.feed(stream.data() + at, std::min<size_t>(4096, stream.size() - at));
    max_buffered = std::max(max_buffered, reader.buffered());
  }
  reader.finish();
  EXPECT_EQ(sizes, (std::vector<size_t>{small_tuple.size(), big_tuple.size(), small_tuple.size()}));
  EXPECT_LE(max_buffered, big_tuple.size());
  EXPECT_EQ(reader.buffered(), 0u);

  // Chunks that end on tuple boundaries (libpq's CopyData messages) buffer nothing at all.
  CopyBinaryReader aligned([](const TupleView &) {});
  for (const std::string &part : {kHeader + small_tuple, big_tuple, small_tuple, kTrailer}) {
    aligned.feed(part.data(), part.size());
    EXPECT_EQ(aligned.buffered(), 0u);
  }
  aligned.finish();
}

TEST(CopyBinary, RejectsTextFormatAtTheFirstByte) {
  CopyBinaryReader reader([](const TupleView &) {});
  Error e = error_of([&] { reader.feed("1\tapples\n", 9); });
  EXPECT_EQ(e.sqlstate(), "22P04");
  EXPECT_EQ(std::string(e.what()), "invalid binary COPY stream: signature not recognized");
  EXPECT_EQ(e.detail(), "In the header.");
}

TEST(CopyBinary, RejectsBadHeaders) {
  Error oids = parse_error(kSignature + be32(1 << 16) + be32(0) + kTrailer);
  EXPECT_EQ(oids.sqlstate(), "22P04");
  EXPECT_CONTAINS(oids.what(), "OIDS flag");
  EXPECT_CONTAINS(parse_error(kSignature + be32(1) + be32(0) + kTrailer).what(),
                  "unrecognized flags 0x00000001");
  EXPECT_CONTAINS(parse_error(kSignature + be32(1 << 17) + be32(0) + kTrailer).what(),
                  "unrecognized flags 0x00020000");
  EXPECT_CONTAINS(parse_error(kSignature + be32(0) + be32(-4) + kTrailer).what(),
                  "negative header extension length -4");
  std::string wrong_signature = kHeader;
  wrong_signature[10] = '\1';  // the NUL a non-8-bit-clean transfer would lose
  EXPECT_CONTAINS(parse_error(wrong_signature + kTrailer).what(), "signature not recognized");
}

TEST(CopyBinary, RejectsBadTuples) {
  std::string good = tuple({std::string("a")});

  Error count = parse_error(kHeader + good + be16(-2) + kTrailer);
  EXPECT_EQ(count.sqlstate(), "22P04");
  EXPECT_EQ(std::string(count.what()), "invalid binary COPY stream: invalid field count -2");
  // The detail locates the tuple: the second one, right after the 19-byte header and the first.
  EXPECT_EQ(count.detail(), "In tuple 2, at byte " + std::to_string(19 + good.size()) +
                                " of the stream.");

  Error length = parse_error(kHeader + be16(2) + be32(-1) + be32(-7) + kTrailer);
  EXPECT_EQ(std::string(length.what()), "invalid binary COPY stream: field 2 has invalid length -7");

  std::string two = tuple({std::string("a"), std::string("b")});
  Error fields = parse_error(kHeader + good + two + kTrailer, 1);
  EXPECT_EQ(std::string(fields.what()), "invalid binary COPY stream: a tuple has 2 fields, expected 1");
}

TEST(CopyBinary, RejectsTruncatedStreamsAndDataAfterTrailer) {
  std::string stream = kHeader + tuple({std::string("abc")}) + kTrailer;
  for (size_t cut = 0; cut < stream.size(); cut++) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    CopyBinaryReader reader([](const TupleView &) {});
    reader.feed(stream.data(), cut);
    Error e = error_of([&] { reader.finish(); });
    EXPECT_EQ(e.sqlstate(), "22P04");
    const char *expected = cut < 19                  ? "the stream ended inside the header"
                           : cut == 19 || cut == 28 ? "the stream ended without the trailer"
                                                    : "the stream ended in the middle of a tuple";
    EXPECT_EQ(std::string(e.what()), std::string("invalid binary COPY stream: ") + expected);
  }
  EXPECT_CONTAINS(parse_error(stream + "x").what(), "1 bytes of data after the trailer");
}

TEST(CopyBinary, HandlerExceptionsPropagate) {
  std::string stream = load_fixture();
  CopyBinaryReader reader([](const TupleView &) { throw std::runtime_error("sink broke"); });
  EXPECT_THROW(reader.feed(stream.data(), stream.size()), std::runtime_error);
}

TEST(CopyBinary, WriterReproducesServerStreamByteForByte) {
  std::string stream = load_fixture();
  for (size_t threshold : {size_t{1}, size_t{16}, size_t{100}, CopyBinaryWriter::kDefaultFlushBytes}) {
    SCOPED_TRACE("threshold " + std::to_string(threshold));
    std::string out;
    CopyBinaryWriter writer([&](const char *d, size_t n) { out.append(d, n); }, threshold);
    CopyBinaryReader reader([&](const TupleView &t) { writer.write(t); });
    for (char c : stream) reader.feed(&c, 1);
    reader.finish();
    writer.finish();
    EXPECT_EQ(out, stream);
    EXPECT_EQ(writer.rows(), 3u);
    EXPECT_EQ(writer.bytes(), stream.size());
    EXPECT_TRUE(writer.finished());
  }
}

TEST(CopyBinary, WriterFlushesAtThresholdAndPassesLargeTuplesThrough) {
  std::vector<std::string> writes;
  std::vector<const char *> pointers;
  CopyBinaryWriter writer(
      [&](const char *d, size_t n) {
        writes.emplace_back(d, n);
        pointers.push_back(d);
      },
      64);
  std::string small = tuple({std::string(20, 's')});  // 26 bytes
  std::string large = tuple({std::string(100, 'L')});
  writer.write_tuple(small.data(), small.size());
  EXPECT_TRUE(writes.empty());  // header + 26 bytes: below 64
  writer.write_tuple(small.data(), small.size());
  ASSERT_EQ(writes.size(), 1u);  // 19 + 52 >= 64: flushed
  EXPECT_EQ(writes[0], kHeader + small + small);
  writer.write_tuple(small.data(), small.size());
  writer.write_tuple(large.data(), large.size());
  ASSERT_EQ(writes.size(), 3u);   // what was buffered, then the large tuple as it is
  EXPECT_EQ(writes[1], small);
  EXPECT_EQ(writes[2], large);
  EXPECT_EQ(pointers[2], large.data());  // not copied into the buffer
  writer.finish();
  ASSERT_EQ(writes.size(), 4u);
  EXPECT_EQ(writes[3], kTrailer);
  EXPECT_EQ(writer.rows(), 4u);
  EXPECT_EQ(writer.bytes(), 19 + 3 * small.size() + large.size() + 2);
  writer.finish();  // idempotent
  EXPECT_EQ(writes.size(), 4u);
  Error e = error_of([&] { writer.write_tuple(small.data(), small.size()); });
  EXPECT_EQ(e.sqlstate(), "XX000");
}

TEST(CopyBinary, WriterWithoutRowsIsAValidEmptyCopy) {
  std::string out;
  CopyBinaryWriter writer([&](const char *d, size_t n) { out.append(d, n); });
  writer.finish();
  EXPECT_EQ(out, kHeader + kTrailer);
  EXPECT_EQ(writer.rows(), 0u);
  EXPECT_TRUE(parse(out, 1).rows.empty());
}

}  // namespace
}  // namespace pgdog_reshard
