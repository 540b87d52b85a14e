// Semantics every backend must give (API.md "Semantics" and details 1-4, 7),
// observed over real gRPC: expected versions, atomic batches with gap-free
// positions, idempotent retries, server-assigned UUIDv7 ids, stream types,
// byte-exact round trips, every paging edge of ReadStream and ReadAll, filters,
// page trimming, and single-writer subscription behaviour (replay, live,
// from_position, from_end, checkpoints).
//
// Each test gets a fresh server, so global positions are exact.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/e2e_client.h"

namespace es_e2e {
namespace {

using grpc::StatusCode;

uint64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class SemanticsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = StartServer({"--checkpoint-interval", "5"});
    ASSERT_NE(server_, nullptr);
    client_ = std::make_unique<Client>(Connect(server_->Address()));
  }
  void TearDown() override {
    client_.reset();
    StopServerExpectClean(server_.get());
  }

  grpc::Status Append(const v1::AppendRequest &req, v1::AppendResponse *resp,
                      grpc::ClientContext *ctx = nullptr) {
    return client_->Append(req, resp, ctx);
  }

  v1::AppendRequest Req(const std::string &stream, const std::vector<std::string> &ids,
                        const std::string &type = "T") {
    v1::AppendRequest r;
    r.set_stream_id(stream);
    for (const auto &id : ids) *r.add_events() = MakeEvent(type, "p-" + id, id);
    return r;
  }

  // Expects ALREADY_EXISTS naming `id` and nothing stored.
  void ExpectAlreadyExists(const v1::AppendRequest &req, const std::string &id) {
    uint64_t head = client_->Head();
    v1::AppendResponse resp;
    grpc::Status st = Append(req, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::ALREADY_EXISTS) << Describe(st);
    EXPECT_NE(st.error_message().find(id), std::string::npos)
        << "message should name the first reused id " << id << ": " << Describe(st);
    EXPECT_EQ(client_->Head(), head) << "the rejected batch stored data";
  }

  std::vector<uint64_t> Positions(const std::vector<v1::RecordedEvent> &evs) {
    std::vector<uint64_t> out;
    for (const auto &e : evs) out.push_back(e.global_position());
    return out;
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

std::vector<uint64_t> Range(uint64_t from, uint64_t to) {  // inclusive
  std::vector<uint64_t> v;
  for (uint64_t i = from; i <= to; ++i) v.push_back(i);
  return v;
}

// ---- Expected versions -------------------------------------------------------

TEST_F(SemanticsTest, ExpectedVersionChecks) {
  std::string s = "ev-stream";
  v1::AppendResponse r;
  auto attempt = [&](v1::ExpectedVersionKind kind, uint64_t v, int n) {
    v1::AppendRequest req = MakeAppend(s, n);
    req.set_expected_kind(kind);
    req.set_expected_version(v);
    return Append(req, &r);
  };
  EXPECT_EQ(attempt(v1::EXPECTED_STREAM_EXISTS, 0, 1).error_code(), StatusCode::ABORTED);
  EXPECT_EQ(attempt(v1::EXPECTED_EXACT, 1, 1).error_code(), StatusCode::ABORTED);
  // expected_version is ignored with kinds other than EXACT.
  grpc::Status st = attempt(v1::EXPECTED_NO_STREAM, 42, 2);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(r.first_stream_version(), 1u);
  EXPECT_EQ(r.last_stream_version(), 2u);
  EXPECT_FALSE(r.duplicate());
  EXPECT_EQ(attempt(v1::EXPECTED_NO_STREAM, 0, 1).error_code(), StatusCode::ABORTED);
  st = attempt(v1::EXPECTED_STREAM_EXISTS, 77, 1);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(r.last_stream_version(), 3u);
  st = attempt(v1::EXPECTED_EXACT, 3, 2);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(r.first_stream_version(), 4u);
  EXPECT_EQ(r.last_stream_version(), 5u);
  EXPECT_EQ(attempt(v1::EXPECTED_EXACT, 3, 1).error_code(), StatusCode::ABORTED);
  EXPECT_EQ(attempt(v1::EXPECTED_EXACT, 0, 1).error_code(), StatusCode::ABORTED);
  st = attempt(v1::EXPECTED_ANY, 999, 1);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(r.last_stream_version(), 6u);

  // EXACT 0 on a new stream means NO_STREAM.
  v1::AppendRequest fresh = MakeAppend("ev-other", 1);
  fresh.set_expected_kind(v1::EXPECTED_EXACT);
  fresh.set_expected_version(0);
  st = Append(fresh, &r);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(r.first_stream_version(), 1u);
  EXPECT_EQ(client_->ReadWholeStream(s).size(), 6u) << "failed checks must write nothing";
}

// ---- Atomicity and gap-free positions ----------------------------------------

TEST_F(SemanticsTest, BatchesAreAtomicAndPositionsGapFree) {
  uint64_t expect_next = 1;
  std::map<std::string, uint64_t> versions;
  const char *streams[] = {"atom-a", "atom-b", "atom-c"};
  for (int i = 0; i < 30; ++i) {
    std::string s = streams[i % 3];
    int n = 1 + i % 5;
    v1::AppendRequest ok = MakeAppend(s, n);
    uint64_t t0 = NowMs();
    v1::AppendResponse r = client_->MustAppend(ok);
    uint64_t t1 = NowMs();
    EXPECT_EQ(r.first_global_position(), expect_next);
    EXPECT_EQ(r.last_global_position(), expect_next + n - 1);
    EXPECT_EQ(r.first_stream_version(), versions[s] + 1);
    EXPECT_EQ(r.last_stream_version(), versions[s] + n);
    EXPECT_GE(r.recorded_at_unix_ms() + 1000, t0);
    EXPECT_LE(r.recorded_at_unix_ms(), t1 + 1000);
    expect_next += n;
    versions[s] += n;

    // Failed appends of every kind in between must not use up positions.
    v1::AppendResponse ignored;
    v1::AppendRequest aborted = MakeAppend(s, 2);
    aborted.set_expected_kind(v1::EXPECTED_NO_STREAM);
    EXPECT_EQ(Append(aborted, &ignored).error_code(), StatusCode::ABORTED);
    v1::AppendRequest invalid = MakeAppend(s, 3);
    invalid.mutable_events(2)->set_event_type("");
    EXPECT_EQ(Append(invalid, &ignored).error_code(), StatusCode::INVALID_ARGUMENT);
    v1::AppendRequest reused = MakeAppend(s, 2);
    reused.mutable_events(1)->set_event_id(ok.events(0).event_id());
    EXPECT_EQ(Append(reused, &ignored).error_code(), StatusCode::ALREADY_EXISTS);
  }
  std::vector<v1::RecordedEvent> log = client_->ReadWholeLog();
  ASSERT_EQ(log.size(), expect_next - 1);
  EXPECT_EQ(Positions(log), Range(1, expect_next - 1)) << "positions have gaps";
  EXPECT_EQ(client_->Head(), expect_next - 1);
  for (const char *s : streams) {
    auto evs = client_->ReadWholeStream(s);
    ASSERT_EQ(evs.size(), versions[s]);
    for (size_t i = 0; i < evs.size(); ++i) EXPECT_EQ(evs[i].stream_version(), i + 1);
  }
}

TEST_F(SemanticsTest, RejectedBatchStoresNoneOfItsEvents) {
  std::string taken = NewUuid();
  client_->MustAppend(Req("atomic-x", {taken}));
  std::string n1 = NewUuid(), n2 = NewUuid();
  ExpectAlreadyExists(Req("atomic-y", {n1, taken, n2}), taken);
  for (const auto &e : client_->ReadWholeLog()) {
    EXPECT_NE(e.event_id(), n1);
    EXPECT_NE(e.event_id(), n2);
  }
  // The new ids are still free.
  v1::AppendResponse r = client_->MustAppend(Req("atomic-y", {n1, n2}));
  EXPECT_EQ(r.first_global_position(), 2u);
}

// ---- Idempotency ------------------------------------------------------------

TEST_F(SemanticsTest, IdempotentRetries) {
  std::string s = "idem";
  std::string a = NewUuid(), b = NewUuid(), c = NewUuid();
  client_->MustAppend(MakeAppend("idem-before", 2));  // positions 1, 2
  v1::AppendRequest orig = Req(s, {a, b, c});
  orig.set_stream_type("Order");
  orig.set_expected_kind(v1::EXPECTED_NO_STREAM);
  v1::AppendResponse first = client_->MustAppend(orig);
  EXPECT_FALSE(first.duplicate());
  EXPECT_EQ(first.first_global_position(), 3u);
  EXPECT_EQ(first.last_global_position(), 5u);
  client_->MustAppend(MakeAppend("idem-after", 1));  // position 6
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  uint64_t head = client_->Head();
  ASSERT_EQ(head, 6u);

  auto expect_duplicate = [&](v1::AppendRequest req, const std::string &what) {
    SCOPED_TRACE(what);
    uint64_t head = client_->Head();
    v1::AppendResponse r;
    grpc::Status st = Append(req, &r);
    ASSERT_TRUE(st.ok()) << Describe(st);
    EXPECT_TRUE(r.duplicate());
    EXPECT_EQ(r.first_stream_version(), first.first_stream_version());
    EXPECT_EQ(r.last_stream_version(), first.last_stream_version());
    EXPECT_EQ(r.first_global_position(), first.first_global_position());
    EXPECT_EQ(r.last_global_position(), first.last_global_position());
    EXPECT_EQ(r.recorded_at_unix_ms(), first.recorded_at_unix_ms())
        << "a duplicate carries the original recorded_at";
    EXPECT_EQ(client_->Head(), head) << "a duplicate wrote something";
  };
  expect_duplicate(orig, "identical retry");
  v1::AppendRequest r2 = orig;
  r2.set_expected_kind(v1::EXPECTED_EXACT);
  r2.set_expected_version(99);
  expect_duplicate(r2, "wrong EXACT version");
  r2.set_expected_kind(v1::EXPECTED_NO_STREAM);
  expect_duplicate(r2, "NO_STREAM on an existing stream");
  r2.set_stream_type("Customer");
  expect_duplicate(r2, "different stream_type and wrong expected version");
  r2.set_stream_type("");
  r2.set_expected_kind(v1::EXPECTED_ANY);
  expect_duplicate(r2, "no stream_type");

  // Anything else that reuses an id is ALREADY_EXISTS naming the first
  // reused id in request order.
  std::string d = NewUuid(), e = NewUuid();
  ExpectAlreadyExists(Req(s, {a, b}), a);                // prefix
  ExpectAlreadyExists(Req(s, {b, c}), b);                // suffix
  ExpectAlreadyExists(Req(s, {b}), b);                   // one of them
  ExpectAlreadyExists(Req(s, {c, a, b}), c);             // reordered
  ExpectAlreadyExists(Req(s, {b, a, c}), b);             // reordered
  ExpectAlreadyExists(Req(s, {a, b, c, d}), a);          // superset
  ExpectAlreadyExists(Req(s, {d, a, b, c}), a);          // superset, new first
  ExpectAlreadyExists(Req(s, {d, c, e}), c);             // mix
  ExpectAlreadyExists(Req("idem-other", {a, b, c}), a);  // other stream
  // ALREADY_EXISTS comes before the stream_type and expected-version checks.
  v1::AppendRequest mixed = Req(s, {d, b});
  mixed.set_stream_type("Customer");
  mixed.set_expected_kind(v1::EXPECTED_EXACT);
  mixed.set_expected_version(42);
  ExpectAlreadyExists(mixed, b);
  // ...and FAILED_PRECONDITION before ABORTED.
  v1::AppendRequest typed = Req(s, {d});
  typed.set_stream_type("Customer");
  typed.set_expected_kind(v1::EXPECTED_EXACT);
  typed.set_expected_version(42);
  v1::AppendResponse ignored;
  grpc::Status st = Append(typed, &ignored);
  EXPECT_EQ(st.error_code(), StatusCode::FAILED_PRECONDITION) << Describe(st);
  EXPECT_EQ(client_->Head(), head);
  // None of the rejected attempts consumed d or e.
  v1::AppendResponse second = client_->MustAppend(Req(s, {d, e}));
  EXPECT_EQ(second.first_stream_version(), 4u);
  EXPECT_EQ(second.first_global_position(), 7u);
  // A later batch is a duplicate of itself, with its own positions.
  v1::AppendResponse again;
  ASSERT_TRUE(Append(Req(s, {d, e}), &again).ok());
  EXPECT_TRUE(again.duplicate());
  EXPECT_EQ(again.first_stream_version(), 4u);
  EXPECT_EQ(again.last_global_position(), 8u);
  EXPECT_EQ(again.recorded_at_unix_ms(), second.recorded_at_unix_ms());
  // The first batch is still a duplicate after later appends.
  expect_duplicate(orig, "retry after later appends");
  EXPECT_EQ(client_->ReadWholeStream(s).size(), 5u);
}

TEST_F(SemanticsTest, DuplicateWinsEvenForSingleEventBatches) {
  std::string id = NewUuid();
  v1::AppendRequest req = Req("single", {id});
  v1::AppendResponse first = client_->MustAppend(req);
  client_->MustAppend(MakeAppend("single", 1));  // the stream moves on
  req.set_expected_kind(v1::EXPECTED_NO_STREAM);
  v1::AppendResponse r;
  ASSERT_TRUE(Append(req, &r).ok());
  EXPECT_TRUE(r.duplicate());
  EXPECT_EQ(r.first_stream_version(), 1u);
  EXPECT_EQ(r.first_global_position(), first.first_global_position());
}

// ---- Server-assigned ids ----------------------------------------------------

TEST_F(SemanticsTest, EmptyEventIdGetsUuidV7) {
  uint64_t t0 = NowMs();
  v1::AppendRequest req;
  req.set_stream_id("v7");
  for (int i = 0; i < 5; ++i) *req.add_events() = MakeEvent("T", "x", "");
  client_->MustAppend(req);
  client_->MustAppend(req);  // no ids: not a retry, five more events
  uint64_t t1 = NowMs();
  auto evs = client_->ReadWholeStream("v7");
  ASSERT_EQ(evs.size(), 10u);
  std::set<std::string> seen;
  for (const auto &e : evs) {
    const std::string &id = e.event_id();
    ASSERT_TRUE(IsCanonicalUuid(id)) << "'" << id << "'";
    EXPECT_EQ(id[14], '7') << "version nibble of " << id;
    EXPECT_TRUE(std::string("89ab").find(id[19]) != std::string::npos) << "variant of " << id;
    uint64_t ms = std::stoull(id.substr(0, 8) + id.substr(9, 4), nullptr, 16);
    EXPECT_GE(ms + 2000, t0) << id;
    EXPECT_LE(ms, t1 + 2000) << id;
    EXPECT_TRUE(seen.insert(id).second) << "duplicate id " << id;
  }
}

// ---- Stream types ------------------------------------------------------------

TEST_F(SemanticsTest, StreamTypeRules) {
  auto append = [&](const std::string &stream, const std::string &type) {
    v1::AppendRequest r = MakeAppend(stream, 1);
    r.set_stream_type(type);
    v1::AppendResponse resp;
    return Append(r, &resp);
  };
  ASSERT_TRUE(append("st", "").ok());
  EXPECT_EQ(client_->ReadWholeStream("st")[0].stream_type(), "");
  ASSERT_TRUE(append("st", "Order").ok()) << "first non-empty type sets it";
  EXPECT_TRUE(append("st", "").ok()) << "empty means no opinion";
  EXPECT_TRUE(append("st", "Order").ok());
  EXPECT_EQ(append("st", "Customer").error_code(), StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(append("st", "order").error_code(), StatusCode::FAILED_PRECONDITION)
      << "types compare exactly";
  auto evs = client_->ReadWholeStream("st");
  ASSERT_EQ(evs.size(), 4u);
  for (size_t i = 1; i < evs.size(); ++i)
    EXPECT_EQ(evs[i].stream_type(), "Order") << "version " << i + 1;
  // Other streams are independent.
  EXPECT_TRUE(append("st2", "Customer").ok());
  EXPECT_EQ(append("st2", "Order").error_code(), StatusCode::FAILED_PRECONDITION);
}

// ---- Round trips -------------------------------------------------------------

v1::RecordedEvent ExpectedRecord(const v1::AppendRequest &req, int i,
                                 const v1::AppendResponse &resp, const std::string &stream_type) {
  const v1::EventData &d = req.events(i);
  v1::RecordedEvent e;
  e.set_stream_id(req.stream_id());
  e.set_stream_type(stream_type);
  e.set_stream_version(resp.first_stream_version() + i);
  e.set_global_position(resp.first_global_position() + i);
  e.set_event_id(d.event_id());
  e.set_event_type(d.event_type());
  e.set_event_version(d.event_version());
  e.set_content_type(d.content_type().empty() ? "application/octet-stream" : d.content_type());
  e.set_payload(d.payload());
  *e.mutable_metadata() = d.metadata();
  e.set_correlation_id(d.correlation_id());
  e.set_causation_id(d.causation_id());
  e.set_occurred_at_unix_ms(d.occurred_at_unix_ms());
  e.set_recorded_at_unix_ms(resp.recorded_at_unix_ms());
  return e;
}

void ExpectSameRecord(const v1::RecordedEvent &want, const v1::RecordedEvent &got,
                      const std::string &via) {
  std::string diff;
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(want, got))
      << via << ": event " << want.global_position() << " differs:\n"
      << diff;
}

TEST_F(SemanticsTest, EveryFieldRoundTripsByteForByte) {
  v1::AppendRequest req;
  req.set_stream_id("round-trip-\xc3\xa9\xf0\x9f\x93\xa6");
  req.set_stream_type("Parcel");
  v1::EventData *full = req.add_events();
  full->set_event_id(NewUuid());
  full->set_event_type("Shipped\xe2\x9c\x93");
  full->set_event_version(4294967295u);
  full->set_content_type("application/vnd.test+json; charset=utf-8");
  full->set_payload(AllBytes() + AllBytes());
  (*full->mutable_metadata())["trace"] = "abc";
  (*full->mutable_metadata())["empty-value"] = "";
  (*full->mutable_metadata())
      ["\xc3\xbcnic\xc3\xb8"
       "de"] = "\xe2\x9c\x93 \xf0\x9f\x98\x80";
  (*full->mutable_metadata())["long"] = Repeat('L', 10000);
  full->set_correlation_id("corr-\xc3\xa9");
  full->set_causation_id("cause-1");
  full->set_occurred_at_unix_ms(1700000000123ULL);
  v1::EventData *bare = req.add_events();  // every optional field empty
  bare->set_event_id(NewUuid());
  bare->set_event_type("Bare");
  v1::EventData *zero_version = req.add_events();
  zero_version->set_event_id(NewUuid());
  zero_version->set_event_type("V0");
  zero_version->set_event_version(0);
  zero_version->set_payload(std::string(1, '\0'));
  zero_version->set_occurred_at_unix_ms(UINT64_MAX);

  client_->MustAppend(MakeAppend("round-trip-before", 2));
  v1::SubscribeRequest sreq;
  SubscriptionReader sub(client_->channel(), sreq, 30000, /*keep_payloads=*/true);
  sub.StartReading();
  uint64_t t0 = NowMs();
  v1::AppendResponse resp = client_->MustAppend(req);
  uint64_t t1 = NowMs();
  EXPECT_GE(resp.recorded_at_unix_ms() + 1000, t0);
  EXPECT_LE(resp.recorded_at_unix_ms(), t1 + 1000);
  ASSERT_EQ(resp.first_global_position(), 3u);

  std::vector<v1::RecordedEvent> want;
  for (int i = 0; i < req.events_size(); ++i)
    want.push_back(ExpectedRecord(req, i, resp, "Parcel"));

  auto fwd = client_->ReadWholeStream(req.stream_id());
  ASSERT_EQ(fwd.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ExpectSameRecord(want[i], fwd[i], "ReadStream");

  v1::ReadStreamRequest back;
  back.set_stream_id(req.stream_id());
  back.set_direction(v1::BACKWARD);
  v1::ReadStreamResponse bresp;
  ASSERT_TRUE(client_->ReadStream(back, &bresp).ok());
  ASSERT_EQ(bresp.events_size(), 3);
  for (int i = 0; i < 3; ++i) ExpectSameRecord(want[2 - i], bresp.events(i), "ReadStream BACKWARD");

  auto log = client_->ReadWholeLog();
  ASSERT_EQ(log.size(), 5u);
  for (size_t i = 0; i < want.size(); ++i) ExpectSameRecord(want[i], log[i + 2], "ReadAll");

  ASSERT_TRUE(sub.WaitForPosition(5, 10000)) << "subscription did not deliver";
  std::vector<v1::RecordedEvent> subbed;
  for (const auto &m : sub.Messages())
    if (m.kind == SubMsg::kEvent && m.position >= 3) subbed.push_back(m.event);
  ASSERT_EQ(subbed.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ExpectSameRecord(want[i], subbed[i], "Subscribe");
}

// Free-text strings may contain U+0000 (valid UTF-8). A server may reject it,
// but must never store something other than what was sent.
TEST_F(SemanticsTest, EmbeddedNulIsStoredExactlyOrRejected) {
  const std::string nul("x\0y", 3);
  struct Case {
    const char *field;
    std::function<void(v1::AppendRequest *)> set;
  };
  std::vector<Case> cases = {
      {"metadata value", [&](auto *r) { (*r->mutable_events(0)->mutable_metadata())["k"] = nul; }},
      {"metadata key", [&](auto *r) { (*r->mutable_events(0)->mutable_metadata())[nul] = "v"; }},
      {"correlation_id", [&](auto *r) { r->mutable_events(0)->set_correlation_id(nul); }},
      {"causation_id", [&](auto *r) { r->mutable_events(0)->set_causation_id(nul); }},
      {"content_type", [&](auto *r) { r->mutable_events(0)->set_content_type(nul); }},
      {"stream_type", [&](auto *r) { r->set_stream_type(nul); }},
  };
  int n = 0;
  for (const auto &c : cases) {
    SCOPED_TRACE(c.field);
    v1::AppendRequest req = MakeAppend("nul-" + std::to_string(n++), 1);
    c.set(&req);
    v1::AppendResponse resp;
    grpc::Status st = Append(req, &resp);
    if (st.error_code() == StatusCode::INVALID_ARGUMENT) continue;
    ASSERT_TRUE(st.ok()) << Describe(st);
    auto got = client_->ReadWholeStream(req.stream_id());
    ASSERT_EQ(got.size(), 1u);
    ExpectSameRecord(ExpectedRecord(req, 0, resp, req.stream_type()), got[0], "ReadStream");
  }
}

// ---- ReadStream paging -------------------------------------------------------

struct StreamPage {
  uint64_t from;
  uint32_t max;
  v1::Direction dir;
  std::vector<uint64_t> versions;
  uint64_t next;  // checked unless UINT64_MAX
  bool is_end;
};

TEST_F(SemanticsTest, ReadStreamPagingEdges) {
  std::string s = "paging";
  client_->MustAppend(MakeAppend("paging-other", 3));
  client_->MustAppend(MakeAppend(s, 4));
  client_->MustAppend(MakeAppend("paging-other", 1));
  client_->MustAppend(MakeAppend(s, 6));
  const auto F = v1::FORWARD, B = v1::BACKWARD;
  const uint64_t kAny = UINT64_MAX;
  std::vector<StreamPage> pages = {
      {0, 3, F, {1, 2, 3}, 4, false},  {1, 3, F, {1, 2, 3}, 4, false},
      {4, 3, F, {4, 5, 6}, 7, false},  {8, 3, F, {8, 9, 10}, 11, true},
      {10, 5, F, {10}, 11, true},      {0, 100, F, Range(1, 10), 11, true},
      {11, 3, F, {}, 11, true},        {50, 3, F, {}, kAny, true},
      {0, 3, B, {10, 9, 8}, 7, false}, {5, 2, B, {5, 4}, 3, false},
      {3, 3, B, {3, 2, 1}, 0, true},   {2, 5, B, {2, 1}, 0, true},
      {1, 1, B, {1}, 0, true},         {11, 2, B, {10, 9}, 8, false},
      {100, 2, B, {10, 9}, 8, false},  {0, 100, B, {10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, 0, true},
  };
  for (const StreamPage &p : pages) {
    SCOPED_TRACE(std::string(v1::Direction_Name(p.dir)) + " from " + std::to_string(p.from) +
                 " max " + std::to_string(p.max));
    v1::ReadStreamRequest req;
    req.set_stream_id(s);
    req.set_from_version(p.from);
    req.set_max_count(p.max);
    req.set_direction(p.dir);
    v1::ReadStreamResponse resp;
    grpc::Status st = client_->ReadStream(req, &resp);
    ASSERT_TRUE(st.ok()) << Describe(st);
    std::vector<uint64_t> got;
    for (const auto &e : resp.events()) {
      got.push_back(e.stream_version());
      EXPECT_EQ(e.stream_id(), s);
    }
    EXPECT_EQ(got, p.versions);
    if (p.next != kAny) {
      EXPECT_EQ(resp.next_version(), p.next);
    }
    EXPECT_EQ(resp.is_end(), p.is_end);
    EXPECT_EQ(resp.stream_version(), 10u);
  }
  // Paging both ways visits every event exactly once.
  for (auto dir : {F, B}) {
    for (uint32_t max : {1u, 3u, 4u}) {
      std::vector<uint64_t> got;
      uint64_t from = 0;
      bool ended = false;
      for (int i = 0; i < 100 && !ended; ++i) {
        v1::ReadStreamRequest req;
        req.set_stream_id(s);
        req.set_from_version(from);
        req.set_max_count(max);
        req.set_direction(dir);
        v1::ReadStreamResponse resp;
        ASSERT_TRUE(client_->ReadStream(req, &resp).ok());
        for (const auto &e : resp.events()) got.push_back(e.stream_version());
        ended = resp.is_end();
        from = resp.next_version();
      }
      ASSERT_TRUE(ended);
      std::vector<uint64_t> want = Range(1, 10);
      if (dir == B) std::reverse(want.begin(), want.end());
      EXPECT_EQ(got, want) << v1::Direction_Name(dir) << " pages of " << max;
    }
  }
  // The FORWARD end position is usable to poll.
  v1::ReadStreamRequest poll;
  poll.set_stream_id(s);
  poll.set_from_version(11);
  client_->MustAppend(MakeAppend(s, 2));
  v1::ReadStreamResponse presp;
  ASSERT_TRUE(client_->ReadStream(poll, &presp).ok());
  ASSERT_EQ(presp.events_size(), 2);
  EXPECT_EQ(presp.events(0).stream_version(), 11u);
  EXPECT_EQ(presp.next_version(), 13u);
  EXPECT_TRUE(presp.is_end());
}

TEST_F(SemanticsTest, PageSizeDefaultsTo100AndIsCappedAt1000) {
  std::string s = "big-stream";
  for (int i = 0; i < 3; ++i) client_->MustAppend(MakeAppend(s, 400));
  struct Want {
    uint32_t max;
    v1::Direction dir;
    int count;
  };
  for (Want w : std::vector<Want>{{0, v1::FORWARD, 100},
                                  {0, v1::BACKWARD, 100},
                                  {1000, v1::FORWARD, 1000},
                                  {1001, v1::FORWARD, 1000},
                                  {5000, v1::BACKWARD, 1000},
                                  {UINT32_MAX, v1::FORWARD, 1000}}) {
    SCOPED_TRACE("max_count " + std::to_string(w.max) + " " + v1::Direction_Name(w.dir));
    v1::ReadStreamRequest rs;
    rs.set_stream_id(s);
    rs.set_max_count(w.max);
    rs.set_direction(w.dir);
    v1::ReadStreamResponse rresp;
    grpc::Status st = client_->ReadStream(rs, &rresp);
    ASSERT_TRUE(st.ok()) << Describe(st);
    EXPECT_EQ(rresp.events_size(), w.count);
    EXPECT_FALSE(rresp.is_end());
    v1::ReadAllRequest ra;
    ra.set_max_count(w.max);
    ra.set_direction(w.dir);
    v1::ReadAllResponse aresp;
    st = client_->ReadAll(ra, &aresp);
    ASSERT_TRUE(st.ok()) << Describe(st);
    EXPECT_EQ(aresp.events_size(), w.count);
    EXPECT_FALSE(aresp.is_end());
  }
}

// ---- ReadAll paging ------------------------------------------------------------

struct LogPage {
  uint64_t from;
  uint32_t max;
  v1::Direction dir;
  std::vector<uint64_t> positions;
  uint64_t next;  // checked unless UINT64_MAX
  bool is_end;
};

void CheckLogPages(Client *client, const std::vector<LogPage> &pages, uint64_t head) {
  for (const LogPage &p : pages) {
    SCOPED_TRACE(std::string(v1::Direction_Name(p.dir)) + " from " + std::to_string(p.from) +
                 " max " + std::to_string(p.max));
    v1::ReadAllRequest req;
    req.set_from_position(p.from);
    req.set_max_count(p.max);
    req.set_direction(p.dir);
    v1::ReadAllResponse resp;
    grpc::Status st = client->ReadAll(req, &resp);
    ASSERT_TRUE(st.ok()) << Describe(st);
    std::vector<uint64_t> got;
    for (const auto &e : resp.events()) got.push_back(e.global_position());
    EXPECT_EQ(got, p.positions);
    if (p.next != UINT64_MAX) {
      EXPECT_EQ(resp.next_position(), p.next);
    }
    EXPECT_EQ(resp.is_end(), p.is_end);
    EXPECT_EQ(resp.head_position(), head);
  }
}

TEST_F(SemanticsTest, ReadAllPagingEdges) {
  const auto F = v1::FORWARD, B = v1::BACKWARD;
  {
    SCOPED_TRACE("empty store");
    CheckLogPages(client_.get(),
                  {{0, 10, F, {}, 1, true},
                   {1, 10, F, {}, 1, true},
                   {0, 10, B, {}, 0, true},
                   {5, 10, B, {}, 0, true}},
                  0);
  }
  client_->MustAppend(MakeAppend("la", 3));
  client_->MustAppend(MakeAppend("lb", 4));
  client_->MustAppend(MakeAppend("la", 3));
  CheckLogPages(client_.get(),
                {{0, 4, F, {1, 2, 3, 4}, 5, false},
                 {1, 4, F, {1, 2, 3, 4}, 5, false},
                 {5, 4, F, {5, 6, 7, 8}, 9, false},
                 {9, 4, F, {9, 10}, 11, true},
                 {7, 4, F, {7, 8, 9, 10}, 11, true},
                 {11, 4, F, {}, 11, true},
                 {50, 4, F, {}, UINT64_MAX, true},
                 {0, 4, B, {10, 9, 8, 7}, 6, false},
                 {6, 4, B, {6, 5, 4, 3}, 2, false},
                 {2, 4, B, {2, 1}, 0, true},
                 {4, 4, B, {4, 3, 2, 1}, 0, true},
                 {1, 4, B, {1}, 0, true},
                 {11, 3, B, {10, 9, 8}, 7, false},
                 {50, 3, B, {10, 9, 8}, 7, false}},
                10);
  // Polling from the FORWARD end position.
  client_->MustAppend(MakeAppend("lc", 2));
  CheckLogPages(client_.get(), {{11, 10, F, {11, 12}, 13, true}}, 12);
}

// ---- Filters -------------------------------------------------------------------

std::vector<uint64_t> ScanFiltered(Client *client, const v1::Filter &f, v1::Direction dir,
                                   uint32_t max, uint64_t head) {
  std::vector<uint64_t> got;
  uint64_t from = 0;
  for (int i = 0; i < 10000; ++i) {
    v1::ReadAllRequest req;
    req.set_from_position(from);
    req.set_max_count(max);
    req.set_direction(dir);
    *req.mutable_filter() = f;
    v1::ReadAllResponse resp;
    grpc::Status st = client->ReadAll(req, &resp);
    EXPECT_TRUE(st.ok()) << Describe(st);
    if (!st.ok()) return got;
    EXPECT_LE(resp.events_size(), static_cast<int>(max));
    EXPECT_EQ(resp.head_position(), head);
    for (const auto &e : resp.events()) {
      EXPECT_TRUE(MatchesFilter(e, f))
          << "event " << e.global_position() << " of '" << e.stream_id() << "' type '"
          << e.event_type() << "' does not match the filter";
      got.push_back(e.global_position());
    }
    if (resp.is_end()) return got;
    uint64_t next = resp.next_position();
    bool advances = dir == v1::FORWARD ? next > from : (next > 0 && (from == 0 || next < from));
    if (!advances) {
      ADD_FAILURE() << "filtered paging does not advance at " << from;
      return got;
    }
    from = resp.next_position();
  }
  ADD_FAILURE() << "filtered paging did not end";
  return got;
}

TEST_F(SemanticsTest, ReadAllFilters) {
  const char *streams[] = {"order-1", "order-10", "orders", "customer-1", "Order-2", "order-"};
  const char *types[] = {"A", "B", "C", "BB"};
  int k = 0;
  for (int round = 0; round < 12; ++round) {
    for (int s = 0; s < 6; ++s) {
      v1::AppendRequest req;
      req.set_stream_id(streams[s]);
      int n = 1 + (round + s) % 3;
      for (int i = 0; i < n; ++i) *req.add_events() = MakeEvent(types[(k++ * 7 + s) % 4]);
      client_->MustAppend(req);
    }
  }
  std::vector<v1::RecordedEvent> log = client_->ReadWholeLog();
  uint64_t head = log.size();
  ASSERT_GT(head, 100u);
  std::vector<v1::Filter> filters(7);
  filters[0].set_stream_prefix("order-");
  filters[1].add_event_types("B");
  filters[2].add_event_types("A");
  filters[2].add_event_types("C");
  filters[3].set_stream_prefix("order");
  filters[3].add_event_types("B");
  filters[4].set_stream_prefix("zzz");
  filters[5].add_event_types("Nope");
  // filters[6] is empty: everything.
  for (const v1::Filter &f : filters) {
    std::vector<uint64_t> want;
    for (const auto &e : log)
      if (MatchesFilter(e, f)) want.push_back(e.global_position());
    std::vector<uint64_t> back_want(want.rbegin(), want.rend());
    for (uint32_t max : {1u, 7u, 1000u}) {
      SCOPED_TRACE("filter {" + f.ShortDebugString() + "} page " + std::to_string(max));
      EXPECT_EQ(ScanFiltered(client_.get(), f, v1::FORWARD, max, head), want);
      EXPECT_EQ(ScanFiltered(client_.get(), f, v1::BACKWARD, max, head), back_want);
    }
  }
}

// ---- Page trimming -------------------------------------------------------------

TEST_F(SemanticsTest, PagesStayBelow4MiBButHoldAtLeastOneEvent) {
  const size_t kBig = 1536 * 1024;
  std::string s = "heavy";
  for (int i = 0; i < 3; ++i) {
    v1::AppendRequest req = MakeAppend(s, 1);
    req.mutable_events(0)->set_payload(std::string(kBig, static_cast<char>('a' + i)));
    client_->MustAppend(req);
    client_->MustAppend(MakeAppend(s, 2));
  }
  {
    v1::AppendRequest req = MakeAppend(s, 1);
    req.mutable_events(0)->set_payload(Repeat('z', (4 << 20) - 4096));
    v1::AppendResponse resp;
    grpc::Status st = Append(req, &resp);
    ASSERT_TRUE(st.ok()) << "a request just under 4 MiB: " << Describe(st);
  }
  // versions: 1 big, 2-3 small, 4 big, 5-6 small, 7 big, 8-9 small, 10 huge
  const size_t kLimit = 4u << 20;
  for (auto dir : {v1::FORWARD, v1::BACKWARD}) {
    SCOPED_TRACE(v1::Direction_Name(dir));
    std::vector<uint64_t> got;
    uint64_t from = 0;
    bool ended = false;
    for (int i = 0; i < 20 && !ended; ++i) {
      v1::ReadStreamRequest req;
      req.set_stream_id(s);
      req.set_from_version(from);
      req.set_max_count(1000);
      req.set_direction(dir);
      v1::ReadStreamResponse resp;
      grpc::Status st = client_->ReadStream(req, &resp);
      ASSERT_TRUE(st.ok()) << Describe(st);
      ASSERT_GE(resp.events_size(), 1) << "a page holds at least one event";
      if (resp.events_size() > 1) {
        EXPECT_LE(resp.ByteSizeLong(), kLimit) << "page of " << resp.events_size() << " events";
      }
      for (const auto &e : resp.events()) got.push_back(e.stream_version());
      ended = resp.is_end();
      from = resp.next_version();
    }
    ASSERT_TRUE(ended);
    std::vector<uint64_t> want = Range(1, 10);
    if (dir == v1::BACKWARD) std::reverse(want.begin(), want.end());
    EXPECT_EQ(got, want);
  }
  std::vector<uint64_t> got;
  uint64_t from = 0;
  bool ended = false;
  for (int i = 0; i < 20 && !ended; ++i) {
    v1::ReadAllRequest req;
    req.set_from_position(from);
    req.set_max_count(1000);
    v1::ReadAllResponse resp;
    grpc::Status st = client_->ReadAll(req, &resp);
    ASSERT_TRUE(st.ok()) << Describe(st);
    ASSERT_GE(resp.events_size(), 1);
    if (resp.events_size() > 1) {
      EXPECT_LE(resp.ByteSizeLong(), kLimit);
    }
    for (const auto &e : resp.events()) {
      got.push_back(e.global_position());
      if (e.stream_version() == 4) {
        EXPECT_EQ(e.payload(), std::string(kBig, 'b')) << "payload intact";
      }
    }
    ended = resp.is_end();
    from = resp.next_position();
  }
  EXPECT_EQ(got, Range(1, 10));

  // A subscriber gets the big events whole.
  v1::SubscribeRequest sreq;
  SubscriptionReader sub(client_->channel(), sreq, 30000, true);
  sub.StartReading();
  ASSERT_TRUE(sub.WaitForCaughtUp(20000));
  size_t n = 0;
  for (const auto &m : sub.Messages()) {
    if (m.kind != SubMsg::kEvent) continue;
    ++n;
    if (m.position == 10) {
      EXPECT_EQ(m.event.payload().size(), (4u << 20) - 4096);
    }
  }
  EXPECT_EQ(n, 10u);
}

// ---- Subscriptions (single writer) -------------------------------------------

TEST_F(SemanticsTest, SubscribeReplayThenLiveFromEveryStart) {
  client_->MustAppend(MakeAppend("sub-a", 5));
  struct Sub {
    std::string name;
    v1::SubscribeRequest req;
    uint64_t first;
  };
  std::vector<Sub> subs(8);
  subs[0] = {"from 0", {}, 1};
  subs[1].name = "from 1";
  subs[1].req.set_from_position(1);
  subs[1].first = 1;
  subs[2].name = "from 3";
  subs[2].req.set_from_position(3);
  subs[2].first = 3;
  subs[3].name = "from head";
  subs[3].req.set_from_position(5);
  subs[3].first = 5;
  subs[4].name = "from head+1";
  subs[4].req.set_from_position(6);
  subs[4].first = 6;
  subs[5].name = "from 100";
  subs[5].req.set_from_position(100);
  subs[5].first = 100;
  subs[6].name = "from_end";
  subs[6].req.set_from_end(true);
  subs[6].req.set_from_position(2);  // ignored
  subs[6].first = 6;
  subs[7].name = "unfiltered with checkpoint_interval 1";
  subs[7].req.set_checkpoint_interval(1);
  subs[7].first = 1;
  std::vector<std::unique_ptr<SubscriptionReader>> readers;
  for (const Sub &s : subs) {
    readers.push_back(std::make_unique<SubscriptionReader>(client_->channel(), s.req, 30000));
    readers.back()->StartReading();
  }
  for (size_t i = 0; i < subs.size(); ++i)
    ASSERT_TRUE(readers[i]->WaitForCaughtUp(10000)) << subs[i].name;
  for (int i = 0; i < 4; ++i) client_->MustAppend(MakeAppend("sub-b", 25));
  const uint64_t head = 105;
  std::vector<uint64_t> none;
  for (size_t i = 0; i < subs.size(); ++i) {
    SCOPED_TRACE(subs[i].name);
    EXPECT_TRUE(readers[i]->WaitForPosition(head, 10000));
    readers[i]->Cancel();
    readers[i]->Join();
    std::vector<SubMsg> msgs = readers[i]->Messages();
    EXPECT_EQ(VerifySubscription(msgs, Range(subs[i].first, head), &none), "");
    // Everything was appended after all were caught up at head 5.
    for (const SubMsg &m : msgs)
      if (m.kind == SubMsg::kCaughtUp) {
        EXPECT_EQ(m.position, 5u);
      }
    if (subs[i].name == "from_end" || subs[i].name == "from 100" || subs[i].name == "from head+1") {
      ASSERT_FALSE(msgs.empty());
      EXPECT_EQ(msgs[0].kind, SubMsg::kCaughtUp)
          << "with nothing to replay, CaughtUp comes at once";
    }
  }
}

TEST_F(SemanticsTest, FilteredSubscriptionsGetCheckpointsAtPrescribedPositions) {
  // A fixed log of 60 events over three streams and three types: half before
  // the subscriptions (replay), half after (live).
  const char *streams[] = {"acc-1", "acc-2", "other-1"};
  const char *types[] = {"Opened", "Deposited", "Closed"};
  auto append_round = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      v1::AppendRequest req;
      req.set_stream_id(streams[(i * 5 / 7) % 3]);
      *req.add_events() = MakeEvent(types[(i * i + i / 3) % 3]);
      client_->MustAppend(req);
    }
  };
  append_round(0, 30);
  struct Sub {
    std::string name;
    v1::Filter filter;
    uint32_t interval;  // in the request; 0 = the server's (--checkpoint-interval 5)
  };
  std::vector<Sub> subs(5);
  subs[0].name = "prefix acc- every 3";
  subs[0].filter.set_stream_prefix("acc-");
  subs[0].interval = 3;
  subs[1].name = "type Closed every 4";
  subs[1].filter.add_event_types("Closed");
  subs[1].interval = 4;
  subs[2].name = "prefix acc- and type Deposited every 2";
  subs[2].filter.set_stream_prefix("acc-");
  subs[2].filter.add_event_types("Deposited");
  subs[2].interval = 2;
  subs[3].name = "type Opened, server default interval 5";
  subs[3].filter.add_event_types("Opened");
  subs[3].interval = 0;
  subs[4].name = "matches nothing, every 1";
  subs[4].filter.set_stream_prefix("none-");
  subs[4].interval = 1;
  std::vector<std::unique_ptr<SubscriptionReader>> readers;
  for (const Sub &s : subs) {
    v1::SubscribeRequest req;
    *req.mutable_filter() = s.filter;
    req.set_checkpoint_interval(s.interval);
    readers.push_back(std::make_unique<SubscriptionReader>(client_->channel(), req, 30000));
    readers.back()->StartReading();
  }
  append_round(30, 60);
  std::vector<v1::RecordedEvent> log = client_->ReadWholeLog();
  ASSERT_EQ(log.size(), 60u);
  for (size_t i = 0; i < subs.size(); ++i) {
    SCOPED_TRACE(subs[i].name);
    const v1::Filter &f = subs[i].filter;
    auto match = [&f](const v1::RecordedEvent &e) { return MatchesFilter(e, f); };
    std::vector<uint64_t> want;
    for (const auto &e : log)
      if (match(e)) want.push_back(e.global_position());
    // Each ends at the head, 60: with the match there or a checkpoint there.
    EXPECT_TRUE(readers[i]->WaitForPosition(60, 10000));
    // Give a wrong extra message the chance to show up.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    readers[i]->Cancel();
    readers[i]->Join();
    std::vector<SubMsg> msgs = readers[i]->Messages();
    EXPECT_EQ(VerifySubscription(msgs, want, nullptr), "");
    // Where the subscriber reached the head while the log grew depends on
    // timing; VerifyCheckpoints allows for it.
    EXPECT_EQ(VerifyCheckpoints(msgs, log, match, subs[i].interval ? subs[i].interval : 5), "");
  }
}

TEST_F(SemanticsTest, SparseFilterGetsACheckpointAtTheHead) {
  // docs/api.md, "Checkpoints": a filtered subscription that reaches the head
  // having scanned non-matching events since its last match or checkpoint
  // sends a Checkpoint there before it waits, however large its interval, so
  // that a consumer of a rare event type never keeps a resume point far
  // behind the head of an idle store.
  v1::SubscribeRequest req;
  req.mutable_filter()->set_stream_prefix("rare-");
  req.set_checkpoint_interval(1000);
  auto rare = [&req](const v1::RecordedEvent &e) { return MatchesFilter(e, req.filter()); };
  SubscriptionReader live(client_->channel(), req, 30000);
  live.StartReading();
  ASSERT_TRUE(live.WaitForCaughtUp(10000));
  // A burst of non-matching appends, far fewer than the interval.
  client_->MustAppend(MakeAppend("noise-a", 7));
  for (int i = 0; i < 3; ++i) client_->MustAppend(MakeAppend("noise-b", 1));
  EXPECT_TRUE(live.WaitForPosition(10, 10000)) << "no Checkpoint at the head, 10";
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // room for a wrong extra one
  std::vector<SubMsg> msgs = live.Messages();
  ASSERT_FALSE(msgs.empty());
  EXPECT_EQ(msgs[0].kind, SubMsg::kCaughtUp);
  EXPECT_EQ(msgs[0].position, 0u) << "nothing scanned before CaughtUp: no checkpoint";
  EXPECT_EQ(msgs.back().kind, SubMsg::kCheckpoint);
  EXPECT_EQ(msgs.back().position, 10u);
  EXPECT_EQ(VerifyCheckpoints(msgs, client_->ReadWholeLog(), rare, 1000), "");

  // A replay of the same log: the checkpoint at the head, then CaughtUp.
  auto replay = [&] {
    v1::SubscribeRequest from_start = req;
    from_start.set_from_position(1);
    SubscriptionReader r(client_->channel(), from_start, 30000);
    r.StartReading();
    EXPECT_TRUE(r.WaitForCaughtUp(10000));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    r.Cancel();
    r.Join();
    std::vector<std::string> got;
    for (const SubMsg &m : r.Messages())
      got.push_back((m.kind == SubMsg::kEvent        ? "E"
                     : m.kind == SubMsg::kCheckpoint ? "C"
                     : m.kind == SubMsg::kCaughtUp   ? "U"
                                                     : "?") +
                    std::to_string(m.position));
    return got;
  };
  EXPECT_EQ(replay(), (std::vector<std::string>{"C10", "U10"}));

  // A scan that ends with a match needs no checkpoint: none follows it, live
  // or in a replay.
  client_->MustAppend(MakeAppend("rare-1", 1));  // 11
  EXPECT_TRUE(live.WaitForPosition(11, 10000));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  live.Cancel();
  live.Join();
  msgs = live.Messages();
  EXPECT_EQ(msgs.back().kind, SubMsg::kEvent);
  EXPECT_EQ(msgs.back().position, 11u);
  EXPECT_EQ(VerifySubscription(msgs, {11}, nullptr), "");
  EXPECT_EQ(VerifyCheckpoints(msgs, client_->ReadWholeLog(), rare, 1000), "");
  EXPECT_EQ(replay(), (std::vector<std::string>{"E11", "U11"}));
}

}  // namespace
}  // namespace es_e2e
