// Tests of validate.c: every input rule of API.md (details 5 and 6), each
// limit at its edge (the limit passes, one more fails with a message naming
// the field and the limit), the text rules, UUID parsing and UUIDv7.
#include "es/validate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

const size_t kMiB = 1024 * 1024;

// ---- helpers ---------------------------------------------------------------

struct EventSpec {
  std::string id;
  std::string type = "Created";
  std::string content_type;
  std::vector<uint8_t> payload;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string correlation_id;
  std::string causation_id;
};

// Builds an es_append_req_t whose pointers stay valid while the builder lives.
struct AppendBuilder {
  std::string stream_id = "order-1";
  std::string stream_type;
  int expected_kind = ES_EXPECT_ANY;
  std::vector<EventSpec> specs{EventSpec{}};

  std::vector<std::vector<es_kv_t>> kvs;
  std::vector<es_event_data_t> events;
  es_append_req_t req{};
  es_err_t err{};

  int Prepare(const es_limits_t &limits) {
    kvs.assign(specs.size(), {});
    events.assign(specs.size(), es_event_data_t{});
    for (size_t i = 0; i < specs.size(); i++) {
      const EventSpec &s = specs[i];
      for (const auto &kv : s.metadata) kvs[i].push_back({kv.first.c_str(), kv.second.c_str()});
      es_event_data_t &e = events[i];
      e.event_id = s.id.c_str();
      e.event_type = s.type.c_str();
      e.content_type = s.content_type.c_str();
      e.payload = s.payload.data();
      e.payload_len = s.payload.size();
      e.metadata = kvs[i].data();
      e.metadata_count = kvs[i].size();
      e.correlation_id = s.correlation_id.c_str();
      e.causation_id = s.causation_id.c_str();
    }
    req = es_append_req_t{};
    req.stream_id = stream_id.c_str();
    req.stream_type = stream_type.c_str();
    req.expected_kind = expected_kind;
    req.events = events.data();
    req.event_count = events.size();
    es_err_clear(&err);
    return es_append_prepare(&limits, &req, &err);
  }
};

std::string Id(int n) {
  char buf[40];
  snprintf(buf, sizeof buf, "00000000-0000-0000-0000-%012d", n);
  return buf;
}

class ValidateTest : public ::testing::Test {
 protected:
  void SetUp() override { es_limits_default(&limits_); }

  // Expects b.Prepare to fail with code and a message containing every part.
  void ExpectFail(AppendBuilder &b, int code, std::initializer_list<const char *> parts) {
    int rc = b.Prepare(limits_);
    EXPECT_EQ(code, rc) << es_errname(rc) << " " << b.err.msg;
    EXPECT_EQ(code, b.err.code);
    for (const char *p : parts)
      EXPECT_NE(nullptr, strstr(b.err.msg, p)) << "message: " << b.err.msg << "\nwanted: " << p;
  }
  void ExpectOk(AppendBuilder &b) {
    int rc = b.Prepare(limits_);
    EXPECT_EQ(ES_OK, rc) << es_errname(rc) << " " << b.err.msg;
  }

  es_limits_t limits_;
};

// ---- limits ----------------------------------------------------------------

TEST_F(ValidateTest, DefaultLimitsAreThoseOfTheContract) {
  EXPECT_EQ(4 * kMiB, limits_.max_request_bytes);
  EXPECT_EQ(1000u, limits_.max_append_events);
  EXPECT_EQ(64u, limits_.max_metadata_entries);
  EXPECT_EQ(64u * 1024, limits_.max_metadata_bytes);
  EXPECT_EQ(256u, limits_.max_id_bytes);
  EXPECT_EQ(128u, limits_.max_content_type_bytes);
  EXPECT_EQ(4 * kMiB, limits_.max_event_bytes);
  EXPECT_EQ(100u, limits_.default_page_events);
  EXPECT_EQ(1000u, limits_.max_page_events);
  EXPECT_EQ(4 * kMiB - 64 * 1024, limits_.max_page_bytes);
  EXPECT_EQ(64u, limits_.max_filter_event_types);
  EXPECT_EQ(10000u, limits_.max_scan);
  EXPECT_EQ(1000u, limits_.default_checkpoint_interval);
}

// ---- Append: request fields ----------------------------------------------

TEST_F(ValidateTest, MinimalAppendPassesAndGetsAUuidV7) {
  AppendBuilder b;
  ExpectOk(b);
  EXPECT_EQ(0x70, b.events[0].id[6] & 0xF0);
  EXPECT_EQ(0x80, b.events[0].id[8] & 0xC0);
  EXPECT_TRUE(b.events[0].id_assigned);
}

// id_assigned tells a backend which ids are new (LMDB skips their lookup):
// never set for an id the client gave, whatever the field held before.
TEST_F(ValidateTest, OnlyAnAssignedIdIsMarkedAssigned) {
  AppendBuilder b;
  b.specs.assign(3, EventSpec{});
  b.specs[1].id = "0123abcd-4567-89ef-0123-456789abcdef";
  ASSERT_EQ(ES_OK, b.Prepare(limits_)) << b.err.msg;
  EXPECT_TRUE(b.events[0].id_assigned);
  EXPECT_FALSE(b.events[1].id_assigned);
  EXPECT_TRUE(b.events[2].id_assigned);
  b.events[1].id_assigned = true;
  b.events[2].event_id = "00000000-0000-0000-0000-000000000002";
  es_err_t err;
  ASSERT_EQ(ES_OK, es_append_prepare(&limits_, &b.req, &err)) << err.msg;
  EXPECT_FALSE(b.events[1].id_assigned);
  EXPECT_FALSE(b.events[2].id_assigned);
}

TEST_F(ValidateTest, GivenIdIsParsed) {
  AppendBuilder b;
  b.specs[0].id = "0123abcd-4567-89ef-0123-456789abcdef";
  ExpectOk(b);
  const uint8_t want[16] = {0x01, 0x23, 0xab, 0xcd, 0x45, 0x67, 0x89, 0xef,
                            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
  EXPECT_EQ(0, memcmp(want, b.events[0].id, 16));
}

TEST_F(ValidateTest, NullStringsMeanEmpty) {
  AppendBuilder b;
  ASSERT_EQ(ES_OK, b.Prepare(limits_));
  // Rebuild with NULLs in every optional string.
  b.req.stream_type = nullptr;
  b.events[0].event_id = nullptr;
  b.events[0].content_type = nullptr;
  b.events[0].correlation_id = nullptr;
  b.events[0].causation_id = nullptr;
  es_err_t err;
  EXPECT_EQ(ES_OK, es_append_prepare(&limits_, &b.req, &err)) << err.msg;
  b.req.stream_id = nullptr;
  EXPECT_EQ(ES_EINVAL, es_append_prepare(&limits_, &b.req, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "stream_id")) << err.msg;
  b.req.stream_id = "s";
  b.events[0].event_type = nullptr;
  EXPECT_EQ(ES_EINVAL, es_append_prepare(&limits_, &b.req, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "events[0].event_type")) << err.msg;
}

TEST_F(ValidateTest, StreamIdRequired) {
  AppendBuilder b;
  b.stream_id = "";
  ExpectFail(b, ES_EINVAL, {"stream_id", "256"});
}

TEST_F(ValidateTest, StreamIdLengthEdge) {
  AppendBuilder b;
  b.stream_id = std::string(256, 's');
  ExpectOk(b);
  b.stream_id = std::string(257, 's');
  ExpectFail(b, ES_EINVAL, {"stream_id: 257 bytes, limit 256"});
  // Bytes, not characters: 128 two-byte characters are 256 bytes.
  std::string e;
  for (int i = 0; i < 128; i++) e += "\xC3\xA9";
  b.stream_id = e;
  ExpectOk(b);
  b.stream_id = e + "x";
  ExpectFail(b, ES_EINVAL, {"stream_id: 257 bytes, limit 256"});
}

TEST_F(ValidateTest, StreamIdUtf8AndControlCharacters) {
  AppendBuilder b;
  b.stream_id = "order-\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";  // é € 😀
  ExpectOk(b);
  b.stream_id = "order-\xC3";
  ExpectFail(b, ES_EINVAL, {"stream_id", "UTF-8"});
  for (const char *bad :
       {"a\x01z", "a\x1Fz", "a\tz", "a\nz", "a\x7Fz", "a\xC2\x80z", "a\xC2\x85z", "a\xC2\x9Fz"}) {
    b.stream_id = bad;
    ExpectFail(b, ES_EINVAL, {"stream_id", "control"});
  }
  b.stream_id = "a\xC2\xA0z";  // U+00A0 is not a control character
  ExpectOk(b);
  b.stream_id = "a z~";
  ExpectOk(b);
}

TEST_F(ValidateTest, StreamTypeOptionalAndBounded) {
  AppendBuilder b;
  b.stream_type = "";
  ExpectOk(b);
  b.stream_type = std::string(256, 't');
  ExpectOk(b);
  b.stream_type = std::string(257, 't');
  ExpectFail(b, ES_EINVAL, {"stream_type: 257 bytes, limit 256"});
  b.stream_type = "Order\xFF";
  ExpectFail(b, ES_EINVAL, {"stream_type", "UTF-8"});
  b.stream_type =
      "Or\x01"
      "der";
  ExpectFail(b, ES_EINVAL, {"stream_type", "control"});
}

TEST_F(ValidateTest, ExpectedKindMustBeKnown) {
  AppendBuilder b;
  for (int k = 0; k <= 3; k++) {
    b.expected_kind = k;
    ExpectOk(b);
  }
  for (int k : {-1, 4, 100}) {
    b.expected_kind = k;
    ExpectFail(b, ES_EINVAL, {"expected_kind", "0..3"});
  }
}

TEST_F(ValidateTest, EventCountEdges) {
  AppendBuilder b;
  b.specs.clear();
  ExpectFail(b, ES_EINVAL, {"events: 0 given, at least 1"});
  b.specs.assign(1000, EventSpec{});
  ExpectOk(b);
  b.specs.assign(1001, EventSpec{});
  ExpectFail(b, ES_EINVAL, {"events: 1001 given, limit 1000"});
}

TEST_F(ValidateTest, ChecksHappenInFieldOrder) {
  AppendBuilder b;
  b.stream_id = "";
  b.stream_type = std::string(300, 't');
  b.expected_kind = 9;
  b.specs.clear();
  ExpectFail(b, ES_EINVAL, {"stream_id"});
  b.stream_id = "s";
  ExpectFail(b, ES_EINVAL, {"stream_type"});
  b.stream_type = "";
  ExpectFail(b, ES_EINVAL, {"expected_kind"});
  b.expected_kind = 0;
  ExpectFail(b, ES_EINVAL, {"events"});
  // Within events: the first bad event, and in it the first bad field.
  b.specs.assign(5, EventSpec{});
  b.specs[2].content_type = std::string(200, 'c');
  b.specs[2].type = "";
  b.specs[4].id = "nope";
  ExpectFail(b, ES_EINVAL, {"events[2].event_type"});
}

// ---- Append: event fields ------------------------------------------------

TEST_F(ValidateTest, EventIdForms) {
  AppendBuilder b;
  b.specs.assign(4, EventSpec{});
  const char *bad[] = {
      "0123ABCD-4567-89ef-0123-456789abcdef",    // uppercase
      "0123abcd-4567-89EF-0123-456789abcdef",    // mixed case
      "{0123abcd-4567-89ef-0123-456789abcdef}",  // braces
      "0123abcd456789ef0123456789abcdef",        // no dashes
      "0123abcd-4567-89ef-0123-456789abcde",     // 35
      "0123abcd-4567-89ef-0123-456789abcdef0",   // 37
      "0123abcd-4567-89ef-0123-456789abcdeg",    // not hex
      "0123abc-d4567-89ef-0123-456789abcdef",    // dash moved
      "0123abcd-4567-89ef-0123_456789abcdef",    // wrong separator
      " 0123abcd-4567-89ef-0123-456789abcdef",   // leading space
  };
  for (const char *id : bad) {
    b.specs[3].id = id;
    ExpectFail(b, ES_EINVAL, {"events[3].event_id", "UUID"});
  }
  b.specs[3].id = "00000000-0000-0000-0000-000000000000";  // any UUID, even nil
  ExpectOk(b);
  b.specs[3].id = std::string(300, 'a');
  ExpectFail(b, ES_EINVAL, {"events[3].event_id", "300 bytes"});
}

TEST_F(ValidateTest, EventTypeRules) {
  AppendBuilder b;
  b.specs.assign(4, EventSpec{});
  b.specs[3].type = "";
  ExpectFail(b, ES_EINVAL, {"events[3].event_type", "256"});
  b.specs[3].type = std::string(256, 'x');
  ExpectOk(b);
  b.specs[3].type = std::string(257, 'x');
  ExpectFail(b, ES_EINVAL, {"events[3].event_type: 257 bytes, limit 256"});
  b.specs[3].type = std::string(300, 'x');
  ExpectFail(b, ES_EINVAL, {"events[3].event_type: 300 bytes, limit 256"});
  b.specs[3].type = "Cre\xED\xA0\x80ted";
  ExpectFail(b, ES_EINVAL, {"events[3].event_type", "UTF-8"});
  b.specs[3].type = "Cre\x7Fted";
  ExpectFail(b, ES_EINVAL, {"events[3].event_type", "control"});
  b.specs[3].type = "Cre\xC2\x9Bted";
  ExpectFail(b, ES_EINVAL, {"events[3].event_type", "control"});
}

TEST_F(ValidateTest, ContentTypeEdge) {
  AppendBuilder b;
  b.specs[0].content_type = std::string(128, 'c');
  ExpectOk(b);
  b.specs[0].content_type = std::string(129, 'c');
  ExpectFail(b, ES_EINVAL, {"events[0].content_type: 129 bytes, limit 128"});
  b.specs[0].content_type = "text/\xC0\xAF";
  ExpectFail(b, ES_EINVAL, {"events[0].content_type", "UTF-8"});
}

TEST_F(ValidateTest, MetadataEntriesEdge) {
  AppendBuilder b;
  b.specs.assign(2, EventSpec{});
  for (int i = 0; i < 64; i++) b.specs[1].metadata.push_back({"k" + std::to_string(i), "v"});
  ExpectOk(b);
  b.specs[1].metadata.push_back({"k64", "v"});
  ExpectFail(b, ES_EINVAL, {"events[1].metadata: 65 entries, limit 64"});
}

TEST_F(ValidateTest, MetadataBytesEdge) {
  AppendBuilder b;
  // Keys and values both count: 4 + 65532 = 65536.
  b.specs[0].metadata = {{"a", "b"}, {"key", std::string(65536 - 2 - 3, 'v')}};
  ExpectOk(b);
  b.specs[0].metadata[1].second += "v";
  ExpectFail(b, ES_EINVAL, {"events[0].metadata: 65537 bytes, limit 65536"});
}

TEST_F(ValidateTest, MetadataText) {
  AppendBuilder b;
  b.specs[0].metadata = {{"", ""}, {"caf\xC3\xA9", "\xE2\x82\xAC"}};
  ExpectOk(b);
  b.specs[0].metadata = {{"ok", "ok"}, {"bad\xFE", "v"}};
  ExpectFail(b, ES_EINVAL, {"events[0].metadata[1].key", "UTF-8"});
  b.specs[0].metadata = {{"ok", "ok"}, {"k", "v\xE2\x82"}};
  ExpectFail(b, ES_EINVAL, {"events[0].metadata[1].value", "UTF-8"});
}

TEST_F(ValidateTest, CorrelationAndCausationEdges) {
  AppendBuilder b;
  b.specs[0].correlation_id = std::string(256, 'c');
  b.specs[0].causation_id = std::string(256, 'c');
  ExpectOk(b);
  b.specs[0].correlation_id = std::string(257, 'c');
  ExpectFail(b, ES_EINVAL, {"events[0].correlation_id: 257 bytes, limit 256"});
  b.specs[0].correlation_id = "";
  b.specs[0].causation_id = std::string(257, 'c');
  ExpectFail(b, ES_EINVAL, {"events[0].causation_id: 257 bytes, limit 256"});
  b.specs[0].causation_id = "\x80";
  ExpectFail(b, ES_EINVAL, {"events[0].causation_id", "UTF-8"});
  b.specs[0].causation_id = "";
  b.specs[0].correlation_id = "\xF4\x90\x80\x80";
  ExpectFail(b, ES_EINVAL, {"events[0].correlation_id", "UTF-8"});
}

TEST_F(ValidateTest, EventSizeEdgeWithSmallLimit) {
  limits_.max_event_bytes = 1000;
  AppendBuilder b;
  b.specs.assign(3, EventSpec{});
  EventSpec &e = b.specs[2];
  e.id = Id(7);                // 36
  e.type = "Created";          // 7
  e.content_type = "a/b";      // 3
  e.metadata = {{"k", "vv"}};  // 3
  e.correlation_id = "c";      // 1
  e.causation_id = "cc";       // 2
  e.payload.assign(1000 - 36 - 7 - 3 - 3 - 1 - 2, 0);
  ExpectOk(b);
  e.payload.push_back(0);
  ExpectFail(b, ES_ETOOBIG, {"events[2]", "1001 bytes", "limit 1000"});
}

TEST_F(ValidateTest, EventSizeEdgeWithDefaultLimit) {
  AppendBuilder b;
  b.specs[0].type = "T";
  b.specs[0].payload.assign(4 * kMiB - 1, 0);
  ExpectOk(b);  // an empty id is assigned, not counted
  b.specs[0].payload.push_back(0);
  ExpectFail(b, ES_ETOOBIG, {"events[0]", "limit 4194304"});
}

TEST_F(ValidateTest, DuplicateIdsNameBothIndexes) {
  AppendBuilder b;
  b.specs.assign(5, EventSpec{});
  for (int i = 0; i < 5; i++) b.specs[i].id = Id(i);
  ExpectOk(b);
  b.specs[3].id = Id(1);
  ExpectFail(b, ES_EINVAL, {"events[3].event_id", "events[1]", Id(1).c_str()});
  // The first repetition is reported.
  b.specs[4].id = Id(0);
  b.specs[2].id = Id(0);
  ExpectFail(b, ES_EINVAL, {"events[2].event_id", "events[0]"});
}

TEST_F(ValidateTest, DuplicateIdsInALargeRequest) {
  // 1000 events: the id set no longer fits on the stack.
  AppendBuilder b;
  b.specs.assign(1000, EventSpec{});
  for (int i = 0; i < 1000; i++) b.specs[i].id = Id(i * 7919);
  ExpectOk(b);
  b.specs[999].id = Id(500 * 7919);
  ExpectFail(b, ES_EINVAL, {"events[999].event_id", "events[500]"});
  // Server-assigned ids mixed with given ones are unique too.
  for (int i = 0; i < 1000; i++) b.specs[i].id = i % 2 ? Id(i) : "";
  ExpectOk(b);
  std::set<std::string> seen;
  for (const auto &e : b.events) seen.insert(std::string(reinterpret_cast<const char *>(e.id), 16));
  EXPECT_EQ(1000u, seen.size());
}

TEST_F(ValidateTest, ConfiguredLimitsAreHonoured) {
  limits_.max_append_events = 3;
  limits_.max_id_bytes = 10;
  limits_.max_metadata_entries = 1;
  AppendBuilder b;
  b.specs.assign(4, EventSpec{});
  ExpectFail(b, ES_EINVAL, {"events: 4 given, limit 3"});
  b.specs.assign(3, EventSpec{});
  b.stream_id = std::string(11, 's');
  ExpectFail(b, ES_EINVAL, {"stream_id: 11 bytes, limit 10"});
  b.stream_id = "s";
  b.specs[1].metadata = {{"a", "b"}, {"c", "d"}};
  ExpectFail(b, ES_EINVAL, {"events[1].metadata: 2 entries, limit 1"});
}

// ---- ReadStream ------------------------------------------------------------

TEST_F(ValidateTest, ReadStreamRules) {
  es_read_stream_req_t r{};
  es_err_t err;
  r.stream_id = "order-1";
  ASSERT_EQ(ES_OK, es_read_stream_prepare(&limits_, &r, &err)) << err.msg;
  EXPECT_EQ(100u, r.max_count);
  EXPECT_EQ(4 * kMiB - 64 * 1024, r.max_bytes);

  r.stream_id = "";
  EXPECT_EQ(ES_EINVAL, es_read_stream_prepare(&limits_, &r, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "stream_id")) << err.msg;
  r.stream_id = nullptr;
  EXPECT_EQ(ES_EINVAL, es_read_stream_prepare(&limits_, &r, &err));
  std::string long_id(257, 's');
  r.stream_id = long_id.c_str();
  EXPECT_EQ(ES_EINVAL, es_read_stream_prepare(&limits_, &r, &err));
  EXPECT_STREQ("stream_id: 257 bytes, limit 256", err.msg);
  r.stream_id = "a\x05";
  EXPECT_EQ(ES_EINVAL, es_read_stream_prepare(&limits_, &r, &err));
  r.stream_id = "a\xC3";
  EXPECT_EQ(ES_EINVAL, es_read_stream_prepare(&limits_, &r, &err));

  r.stream_id = "s";
  r.direction = ES_BACKWARD;
  EXPECT_EQ(ES_OK, es_read_stream_prepare(&limits_, &r, &err));
  for (int d : {-1, 2, 7}) {
    r.direction = d;
    EXPECT_EQ(ES_EINVAL, es_read_stream_prepare(&limits_, &r, &err));
    EXPECT_NE(nullptr, strstr(err.msg, "direction")) << err.msg;
  }
}

TEST_F(ValidateTest, PageSizesAreDefaultedAndCapped) {
  struct {
    uint32_t asked, got;
  } cases[] = {{0, 100},          {1, 1}, {5, 5}, {999, 999}, {1000, 1000}, {1001, 1000},
               {UINT32_MAX, 1000}};
  for (const auto &c : cases) {
    es_read_stream_req_t r{};
    r.stream_id = "s";
    r.max_count = c.asked;
    es_err_t err;
    ASSERT_EQ(ES_OK, es_read_stream_prepare(&limits_, &r, &err));
    EXPECT_EQ(c.got, r.max_count) << c.asked;
    es_read_all_req_t a{};
    a.max_count = c.asked;
    ASSERT_EQ(ES_OK, es_read_all_prepare(&limits_, &a, &err));
    EXPECT_EQ(c.got, a.max_count) << c.asked;
  }
}

// ---- ReadAll and filters ---------------------------------------------------

TEST_F(ValidateTest, ReadAllResolvesBudgets) {
  es_read_all_req_t a{};
  es_err_t err;
  ASSERT_EQ(ES_OK, es_read_all_prepare(&limits_, &a, &err));
  EXPECT_EQ(100u, a.max_count);
  EXPECT_EQ(4 * kMiB - 64 * 1024, a.max_bytes);
  EXPECT_EQ(10000u, a.max_scan);
  a.direction = 2;
  EXPECT_EQ(ES_EINVAL, es_read_all_prepare(&limits_, &a, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "direction")) << err.msg;
}

TEST_F(ValidateTest, FilterPrefixEdge) {
  es_read_all_req_t a{};
  es_err_t err;
  std::string p(256, 'p');
  a.filter.stream_prefix = p.c_str();
  EXPECT_EQ(ES_OK, es_read_all_prepare(&limits_, &a, &err)) << err.msg;
  p += "p";
  a.filter.stream_prefix = p.c_str();
  EXPECT_EQ(ES_EINVAL, es_read_all_prepare(&limits_, &a, &err));
  EXPECT_STREQ("filter.stream_prefix: 257 bytes, limit 256", err.msg);
  a.filter.stream_prefix = "ord\xE2\x82";
  EXPECT_EQ(ES_EINVAL, es_read_all_prepare(&limits_, &a, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "filter.stream_prefix")) << err.msg;
  EXPECT_NE(nullptr, strstr(err.msg, "UTF-8")) << err.msg;
}

TEST_F(ValidateTest, FilterEventTypesEdges) {
  std::vector<std::string> names;
  for (int i = 0; i < 65; i++) names.push_back("Type" + std::to_string(i));
  std::vector<const char *> ptrs;
  for (auto &n : names) ptrs.push_back(n.c_str());
  es_read_all_req_t a{};
  es_err_t err;
  a.filter.event_types = ptrs.data();
  a.filter.event_type_count = 64;
  EXPECT_EQ(ES_OK, es_read_all_prepare(&limits_, &a, &err)) << err.msg;
  a.filter.event_type_count = 65;
  EXPECT_EQ(ES_EINVAL, es_read_all_prepare(&limits_, &a, &err));
  EXPECT_STREQ("filter.event_types: 65 given, limit 64", err.msg);

  a.filter.event_type_count = 3;
  ptrs[1] = "";
  EXPECT_EQ(ES_EINVAL, es_read_all_prepare(&limits_, &a, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "filter.event_types[1]")) << err.msg;
  ptrs[1] = nullptr;
  EXPECT_EQ(ES_EINVAL, es_read_all_prepare(&limits_, &a, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "filter.event_types[1]")) << err.msg;
  std::string t256(256, 't'), t257(257, 't');
  ptrs[1] = t256.c_str();
  EXPECT_EQ(ES_OK, es_read_all_prepare(&limits_, &a, &err)) << err.msg;
  ptrs[2] = t257.c_str();
  EXPECT_EQ(ES_EINVAL, es_read_all_prepare(&limits_, &a, &err));
  EXPECT_STREQ("filter.event_types[2]: 257 bytes, limit 256", err.msg);
  ptrs[2] = "T\xFF";
  EXPECT_EQ(ES_EINVAL, es_read_all_prepare(&limits_, &a, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "filter.event_types[2]")) << err.msg;
}

TEST_F(ValidateTest, FilterValidateNamesTheGivenField) {
  es_filter_t f{};
  std::string p(300, 'p');
  f.stream_prefix = p.c_str();
  es_err_t err;
  EXPECT_EQ(ES_EINVAL, es_filter_validate(&limits_, &f, "subscribe.filter", &err));
  EXPECT_STREQ("subscribe.filter.stream_prefix: 300 bytes, limit 256", err.msg);
  EXPECT_EQ(ES_EINVAL, es_filter_validate(&limits_, &f, nullptr, &err));
  EXPECT_STREQ("filter.stream_prefix: 300 bytes, limit 256", err.msg);
  f.stream_prefix = nullptr;
  EXPECT_EQ(ES_OK, es_filter_validate(&limits_, &f, "filter", &err));
  EXPECT_EQ(ES_OK, es_filter_validate(&limits_, nullptr, "filter", &err));
  EXPECT_EQ(ES_OK, es_filter_validate(&limits_, &f, "filter", nullptr));
}

// ---- UTF-8 and control characters -----------------------------------------

bool Utf8(const std::string &s) {
  return es_utf8_valid(s.data(), s.size());
}

TEST(Utf8, ValidSequences) {
  for (const std::string &s : {
           std::string(""),
           std::string("plain ascii"),
           std::string("\x00", 1),  // U+0000 is valid
           std::string("\x7F"),
           std::string("\xC2\x80"),          // U+0080
           std::string("\xDF\xBF"),          // U+07FF
           std::string("\xE0\xA0\x80"),      // U+0800
           std::string("\xED\x9F\xBF"),      // U+D7FF
           std::string("\xEE\x80\x80"),      // U+E000
           std::string("\xEF\xBF\xBF"),      // U+FFFF
           std::string("\xF0\x90\x80\x80"),  // U+10000
           std::string("\xF4\x8F\xBF\xBF"),  // U+10FFFF
           std::string("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80z"),
       }) {
    EXPECT_TRUE(Utf8(s)) << testing::PrintToString(s);
  }
}

TEST(Utf8, InvalidSequences) {
  for (const std::string &s : {
           std::string("\x80"),              // lone continuation
           std::string("\xBF"),              //
           std::string("\xC0\x80"),          // overlong U+0000
           std::string("\xC1\xBF"),          // overlong U+007F
           std::string("\xE0\x80\x80"),      // overlong
           std::string("\xE0\x9F\xBF"),      // overlong U+07FF
           std::string("\xED\xA0\x80"),      // U+D800
           std::string("\xED\xBF\xBF"),      // U+DFFF
           std::string("\xF0\x80\x80\x80"),  // overlong
           std::string("\xF0\x8F\xBF\xBF"),  // overlong U+FFFF
           std::string("\xF4\x90\x80\x80"),  // U+110000
           std::string("\xF5\x80\x80\x80"),
           std::string("\xF8\x88\x80\x80\x80"),
           std::string("\xFE"),
           std::string("\xFF"),
           std::string("\xC2"),  // truncated
           std::string("\xE0\xA0"),
           std::string("\xF0\x90\x80"),
           std::string("ab\xE2\x82"),
           std::string("\xC2\x41"),  // bad continuation
           std::string("\xE2\x28\xA1"),
           std::string("\xE2\x82\x28"),
           std::string("\xF0\x90\x28\xBC"),
           std::string("\xF0\x90\x80\x28"),
       }) {
    EXPECT_FALSE(Utf8(s)) << testing::PrintToString(s);
  }
}

TEST(Utf8, LengthIsRespected) {
  const char buf[] = "ab\xC3\xA9";
  EXPECT_TRUE(es_utf8_valid(buf, 4));
  EXPECT_FALSE(es_utf8_valid(buf, 3));  // cut inside é
  EXPECT_TRUE(es_utf8_valid(buf, 2));
  EXPECT_TRUE(es_utf8_valid(nullptr, 0));
}

TEST(ControlChars, C0DelAndC1) {
  for (int c = 0; c < 0x20; c++) {
    char s[3] = {'a', static_cast<char>(c), 'b'};
    EXPECT_TRUE(es_has_control_chars(s, 3)) << c;
  }
  EXPECT_TRUE(es_has_control_chars("\x7F", 1));
  for (int c = 0x80; c <= 0x9F; c++) {
    char s[2] = {'\xC2', static_cast<char>(c)};
    EXPECT_TRUE(es_has_control_chars(s, 2)) << c;
  }
  for (const std::string &s :
       {std::string(" "), std::string("~"), std::string("\xC2\xA0"), std::string("\xC3\xA9"),
        std::string("\xE2\x80\xA8"), std::string("\xF0\x9F\x98\x80"), std::string("")}) {
    EXPECT_FALSE(es_has_control_chars(s.data(), s.size())) << testing::PrintToString(s);
  }
  // Only the given length counts.
  EXPECT_FALSE(es_has_control_chars("ab\x01", 2));
}

// ---- UUIDs -----------------------------------------------------------------

TEST(Uuid, ParseAndFormatRoundTrip) {
  const char *text = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
  uint8_t id[16];
  ASSERT_EQ(0, es_uuid_parse(text, id));
  const uint8_t want[16] = {0x01, 0x90, 0xa1, 0xb2, 0xc3, 0xd4, 0x7e, 0x5f,
                            0x8a, 0x9b, 0x0c, 0x1d, 0x2e, 0x3f, 0x4a, 0x5b};
  EXPECT_EQ(0, memcmp(want, id, 16));
  char out[ES_UUID_STR_LEN + 1];
  memset(out, 'X', sizeof out);
  es_uuid_format(id, out);
  EXPECT_STREQ(text, out);
  uint8_t ff[16];
  memset(ff, 0xFF, sizeof ff);
  es_uuid_format(ff, out);
  EXPECT_STREQ("ffffffff-ffff-ffff-ffff-ffffffffffff", out);
  ASSERT_EQ(0, es_uuid_parse(out, id));
  EXPECT_EQ(0, memcmp(ff, id, 16));
}

TEST(Uuid, RejectsOtherForms) {
  uint8_t id[16];
  memset(id, 0xAA, sizeof id);
  for (const char *bad : {
           "",
           "0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B",
           "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5B",
           "{0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}",
           "urn:uuid:0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
           "0190a1b2c3d47e5f8a9b0c1d2e3f4a5b",
           "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5",
           "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b0",
           "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b ",
           "0190a1b2-c3d4-7e5f-8a9b0-c1d2e3f4a5b",
           "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g",
           "0190a1b2+c3d4-7e5f-8a9b-0c1d2e3f4a5b",
           "0190a1b2-c3d4-7e5f-8a9b-",
           "-",
       }) {
    EXPECT_EQ(-1, es_uuid_parse(bad, id)) << bad;
  }
  EXPECT_EQ(-1, es_uuid_parse(nullptr, id));
  for (uint8_t b : id) EXPECT_EQ(0xAA, b);  // out is untouched on failure
}

uint64_t V7Millis(const uint8_t id[16]) {
  uint64_t ms = 0;
  for (int i = 0; i < 6; i++) ms = ms << 8 | id[i];
  return ms;
}

TEST(UuidV7, VersionVariantAndTimestamp) {
  uint64_t before = es_now_unix_ms();
  uint8_t id[16];
  es_uuid_v7(id);
  uint64_t after = es_now_unix_ms();
  EXPECT_EQ(0x70, id[6] & 0xF0);
  EXPECT_EQ(0x80, id[8] & 0xC0);
  // The timestamp may run ahead of the clock only when ids were made faster
  // than the random bits allow; one id from a fresh state does not.
  EXPECT_GE(V7Millis(id), before - 1);
  EXPECT_LE(V7Millis(id), after + 1000);
  char text[ES_UUID_STR_LEN + 1];
  es_uuid_format(id, text);
  uint8_t back[16];
  EXPECT_EQ(0, es_uuid_parse(text, back));
  EXPECT_EQ('7', text[14]);
}

TEST(UuidV7, StrictlyIncreasing) {
  uint8_t prev[16], cur[16];
  es_uuid_v7(prev);
  for (int i = 0; i < 200000; i++) {
    es_uuid_v7(cur);
    ASSERT_LT(memcmp(prev, cur, 16), 0) << "at " << i;
    ASSERT_EQ(0x70, cur[6] & 0xF0);
    ASSERT_EQ(0x80, cur[8] & 0xC0);
    memcpy(prev, cur, 16);
  }
  // 200000 ids cannot run far ahead of the clock (2^74 ids per ms).
  EXPECT_LE(V7Millis(cur), es_now_unix_ms() + 1);
}

TEST(UuidV7, UniqueAndOrderedPerThreadAcrossThreads) {
  const int kThreads = 4, kPer = 20000;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPer; i++) {
        uint8_t id[16];
        es_uuid_v7(id);
        ids[t].emplace_back(reinterpret_cast<const char *>(id), 16);
      }
    });
  }
  for (auto &th : threads) th.join();
  std::set<std::string> all;
  for (const auto &v : ids) {
    EXPECT_TRUE(std::is_sorted(v.begin(), v.end()));
    all.insert(v.begin(), v.end());
  }
  EXPECT_EQ(size_t(kThreads * kPer), all.size());
}

}  // namespace
