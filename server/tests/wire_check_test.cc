// The scan that refuses strings with embedded NUL bytes (server/wire_check.c)
// over well-formed and malformed protobuf bytes.
#include <gtest/gtest.h>

#include <string>

extern "C" {
#include "eventstore/v1/eventstore.pb-c.h"
#include "wire_check.h"
}

namespace {

std::string Varint(uint64_t v) {
  std::string out;
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    out.push_back(static_cast<char>(v ? (b | 0x80) : b));
  } while (v);
  return out;
}

std::string Field(uint32_t id, const std::string &bytes) {
  return Varint((uint64_t{id} << 3) | 2) + Varint(bytes.size()) + bytes;
}

int Scan(const ProtobufCMessageDescriptor *d, const std::string &bytes, std::string *path) {
  char buf[160] = {0};
  int r = es_wire_find_nul(d, reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), buf,
                           sizeof buf);
  *path = buf;
  return r;
}

const ProtobufCMessageDescriptor *kAppend = &eventstore__v1__append_request__descriptor;

TEST(WireCheck, CleanRequestPasses) {
  std::string path;
  std::string event = Field(2, "Type") + Field(5, std::string("\0\1\2", 3));  // bytes may hold NUL
  EXPECT_EQ(0, Scan(kAppend, Field(1, "order-1") + Field(5, event), &path));
}

TEST(WireCheck, NulInTopLevelString) {
  std::string path;
  EXPECT_EQ(1, Scan(kAppend, Field(1, std::string("order\0-1", 8)), &path));
  EXPECT_EQ("stream_id", path);
}

TEST(WireCheck, NulInNestedStringAndMapEntry) {
  std::string path;
  std::string entry = Field(1, "k") + Field(2, std::string("x\0y", 3));
  EXPECT_EQ(1, Scan(kAppend, Field(5, Field(2, "T") + Field(6, entry)), &path));
  EXPECT_EQ("events.metadata.value", path);
}

TEST(WireCheck, OtherWireTypesAreSkipped) {
  std::string path;
  std::string bytes = Varint((3 << 3) | 0) + Varint(300);  // expected_kind varint
  bytes += Varint((60 << 3) | 1) + std::string(8, '\0');   // unknown fixed64
  bytes += Varint((61 << 3) | 5) + std::string(4, '\0');   // unknown fixed32
  bytes += Field(1, std::string("a\0", 2));
  EXPECT_EQ(1, Scan(kAppend, bytes, &path));
}

TEST(WireCheck, MalformedInputStopsTheScanWithoutReading) {
  std::string path;
  EXPECT_EQ(0, Scan(kAppend, std::string("\x0a\x80", 2), &path));  // truncated length
  EXPECT_EQ(0, Scan(kAppend,
                    std::string("\x0a\x05"
                                "ab",
                                4),
                    &path));                                       // length past the end
  EXPECT_EQ(0, Scan(kAppend, std::string("\x19\x00", 2), &path));  // fixed64 cut short
  EXPECT_EQ(0, Scan(kAppend, std::string("\x1d\x00", 2), &path));  // fixed32 cut short
  EXPECT_EQ(0, Scan(kAppend, std::string("\x1b", 1), &path));      // group: unsupported
  EXPECT_EQ(0, Scan(kAppend, std::string(11, '\xff'), &path));     // varint too long
  EXPECT_EQ(0, Scan(kAppend, std::string("\x18\xff", 2), &path));  // varint value cut
  EXPECT_EQ(0, Scan(kAppend, "", &path));
}

TEST(WireCheck, DeepNestingIsBounded) {
  // AppendRequest.events is EventData, which nests no further: unknown fields
  // are skipped, so depth stays small whatever the input.
  std::string path;
  std::string inner = Field(2, "T");
  for (int i = 0; i < 50; i++) inner = Field(5, inner);
  EXPECT_EQ(0, Scan(kAppend, inner, &path));
}

}  // namespace
