// Every limit of API.md (details 5) at its edge, against the real server binary.
//
// For each limit: a request exactly at the limit passes, one just over fails
// with INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for the request size) and a
// message naming the field and the limit. Page limits are not errors: a
// max_count over the maximum is capped, 0 means the default, and the byte
// budget trims a page but never below one event. The checkpoint interval
// applies when a subscription asks for 0.
//
// SmallLimitsTest runs the server with tiny configured limits (so each edge is
// cheap and the flags are proven to work); DefaultLimitsTest runs it without
// limit flags and checks the built-in defaults of API.md.
//
// The table these tests back is "Limits" in docs/operations.md.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tests/e2e/e2e_client.h"

namespace es_e2e {
namespace {

using grpc::StatusCode;

// The small configuration. kPageBytes is chosen so that the page-byte edge
// below needs events of a few hundred bytes (well under kRequestBytes).
constexpr int kAppendEvents = 3;
constexpr int kMetadataEntries = 2;
constexpr int kMetadataBytes = 16;
constexpr int kIdBytes = 8;
constexpr int kContentTypeBytes = 5;
constexpr int kPageEvents = 4;
constexpr int kDefaultPageEvents = 2;
constexpr int kRequestBytes = 4096;
constexpr int kPageBytes = 1000;
constexpr int kCheckpointInterval = 3;

std::vector<std::string> SmallLimitArgs() {
  return {"--max-append-events",      std::to_string(kAppendEvents),
          "--max-metadata-entries",   std::to_string(kMetadataEntries),
          "--max-metadata-bytes",     std::to_string(kMetadataBytes),
          "--max-id-bytes",           std::to_string(kIdBytes),
          "--max-content-type-bytes", std::to_string(kContentTypeBytes),
          "--max-page-events",        std::to_string(kPageEvents),
          "--default-page-events",    std::to_string(kDefaultPageEvents),
          "--max-request-bytes",      std::to_string(kRequestBytes),
          "--max-page-bytes",         std::to_string(kPageBytes),
          "--checkpoint-interval",    std::to_string(kCheckpointInterval)};
}

// The server's page-size estimate of one recorded event (es_recorded_size_bound
// in core/src/event.c): 11 bytes of tag and length for the event itself and for
// each of its 8 length-delimited fields, 11 for each of its 5 varint fields, the
// 36-character event_id, plus the bytes of the other strings and the payload.
// Events without metadata.
size_t RecordedBound(const std::string &stream, const std::string &type, const std::string &ctype,
                     size_t payload) {
  return 11 + 8 * 11 + 5 * 11 + 36 + stream.size() + type.size() + ctype.size() + payload;
}

// An Append of one event whose serialized size is exactly `target` bytes
// (the payload is sized to fit; empty string if that is impossible).
v1::AppendRequest AppendOfSize(const std::string &stream, size_t target) {
  v1::AppendRequest req;
  req.set_stream_id(stream);
  *req.add_events() = MakeEvent("T");
  auto *ev = req.mutable_events(0);
  for (int pad = 0; pad < 3; ++pad) {
    ev->set_causation_id(std::string(pad, 'c'));
    int64_t payload = static_cast<int64_t>(target);
    for (int i = 0; i < 8 && payload >= 0; ++i) {
      ev->set_payload(std::string(static_cast<size_t>(payload), 'p'));
      int64_t size = static_cast<int64_t>(req.ByteSizeLong());
      if (size == static_cast<int64_t>(target)) return req;
      payload -= size - static_cast<int64_t>(target);
    }
  }
  ADD_FAILURE() << "cannot make an AppendRequest of exactly " << target << " bytes";
  return req;
}

class LimitsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> args) {
    server_ = StartServer(std::move(args));
    ASSERT_NE(server_, nullptr);
    client_ = std::make_unique<Client>(Connect(server_->Address()));
  }
  void TearDown() override {
    client_.reset();
    if (server_) StopServerExpectClean(server_.get());
  }

  grpc::Status Append(const v1::AppendRequest &req) {
    v1::AppendResponse resp;
    return client_->Append(req, &resp);  // Client sets the deadline
  }

  // The request at the limit passes, the one over fails with `code` and a
  // message that holds every string of `needles` (field name, limit).
  void ExpectEdge(const std::string &what, const v1::AppendRequest &at,
                  const v1::AppendRequest &over, const std::vector<std::string> &needles,
                  StatusCode code = StatusCode::INVALID_ARGUMENT) {
    SCOPED_TRACE(what);
    grpc::Status st = Append(at);
    EXPECT_TRUE(st.ok()) << "at the limit: " << Describe(st);
    st = Append(over);
    EXPECT_EQ(st.error_code(), code) << "over the limit: " << Describe(st);
    for (const auto &n : needles)
      EXPECT_NE(st.error_message().find(n), std::string::npos)
          << "message should contain '" << n << "': " << Describe(st);
  }

  void ExpectBad(const std::string &what, const grpc::Status &st,
                 const std::vector<std::string> &needles) {
    SCOPED_TRACE(what);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(st);
    for (const auto &n : needles)
      EXPECT_NE(st.error_message().find(n), std::string::npos)
          << "message should contain '" << n << "': " << Describe(st);
  }

  int PageSize(const std::string &stream, uint32_t max_count, v1::Direction dir = v1::FORWARD) {
    v1::ReadStreamRequest rs;
    rs.set_stream_id(stream);
    rs.set_max_count(max_count);
    rs.set_direction(dir);
    v1::ReadStreamResponse resp;
    grpc::Status st = client_->ReadStream(rs, &resp);
    EXPECT_TRUE(st.ok()) << Describe(st);
    return resp.events_size();
  }

  int AllPageSize(uint32_t max_count) {
    v1::ReadAllRequest ra;
    ra.set_max_count(max_count);
    v1::ReadAllResponse resp;
    grpc::Status st = client_->ReadAll(ra, &resp);
    EXPECT_TRUE(st.ok()) << Describe(st);
    return resp.events_size();
  }

  // A filtered subscription (event type "M") from the start, read until
  // caught up; the log must end with a matching event.
  std::vector<SubMsg> SubscribeMatching(uint32_t checkpoint_interval) {
    v1::SubscribeRequest req;
    req.mutable_filter()->add_event_types("M");
    req.set_checkpoint_interval(checkpoint_interval);
    SubscriptionReader sub(client_->channel(), req, 20000);
    sub.StartReading();
    EXPECT_TRUE(sub.WaitForCaughtUp(15000));
    sub.Cancel();
    sub.Join();
    return sub.Messages();
  }

  void ExpectCheckpoints(uint32_t asked, uint32_t effective,
                         const std::vector<uint64_t> &expected_checkpoints) {
    SCOPED_TRACE("checkpoint_interval " + std::to_string(asked));
    auto log = client_->ReadWholeLog();
    auto is_m = [](const v1::RecordedEvent &e) { return e.event_type() == "M"; };
    std::vector<uint64_t> matching;
    for (const auto &e : log)
      if (is_m(e)) matching.push_back(e.global_position());
    auto checkpoints = ExpectedCheckpoints(log, is_m, effective);
    EXPECT_EQ(checkpoints, expected_checkpoints) << "test's own expectation";
    auto msgs = SubscribeMatching(asked);
    EXPECT_EQ(VerifySubscription(msgs, matching, &checkpoints), "");
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

// ---- Small configured limits ------------------------------------------------

class SmallLimitsTest : public LimitsTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(Start(SmallLimitArgs())); }
};

TEST_F(SmallLimitsTest, EventsPerAppend) {
  ExpectEdge("--max-append-events", MakeAppend("ev-a", kAppendEvents),
             MakeAppend("ev-b", kAppendEvents + 1), {"events", "4 given", "limit 3"});
}

TEST_F(SmallLimitsTest, MetadataEntries) {
  v1::AppendRequest at = MakeAppend("md-a", 1);
  auto *m = at.mutable_events(0)->mutable_metadata();
  (*m)["a"] = "1";
  (*m)["b"] = "2";
  v1::AppendRequest over = MakeAppend("md-b", 1);
  *over.mutable_events(0)->mutable_metadata() = *m;
  (*over.mutable_events(0)->mutable_metadata())["c"] = "3";
  ExpectEdge("--max-metadata-entries", at, over, {"events[0].metadata", "3 entries", "limit 2"});
}

TEST_F(SmallLimitsTest, MetadataBytes) {
  // Keys and values together.
  v1::AppendRequest at = MakeAppend("mb-a", 1);
  (*at.mutable_events(0)->mutable_metadata())["k"] = Repeat('v', kMetadataBytes - 1);
  v1::AppendRequest over = MakeAppend("mb-b", 1);
  (*over.mutable_events(0)->mutable_metadata())["k"] = Repeat('v', kMetadataBytes);
  ExpectEdge("--max-metadata-bytes", at, over, {"events[0].metadata", "17 bytes", "limit 16"});
}

TEST_F(SmallLimitsTest, IdBytesInAppend) {
  const std::string at8 = Repeat('i', kIdBytes), over9 = Repeat('i', kIdBytes + 1);
  ExpectEdge("stream_id", MakeAppend(at8, 1), MakeAppend(over9, 1),
             {"stream_id", "9 bytes", "limit 8"});

  v1::AppendRequest at = MakeAppend("st-a", 1), over = MakeAppend("st-b", 1);
  at.set_stream_type(at8);
  over.set_stream_type(over9);
  ExpectEdge("stream_type", at, over, {"stream_type", "9 bytes", "limit 8"});

  at = MakeAppend("et-a", 1, at8);
  over = MakeAppend("et-b", 1, over9);
  ExpectEdge("event_type", at, over, {"events[0].event_type", "9 bytes", "limit 8"});

  at = MakeAppend("co-a", 1);
  over = MakeAppend("co-b", 1);
  at.mutable_events(0)->set_correlation_id(at8);
  over.mutable_events(0)->set_correlation_id(over9);
  ExpectEdge("correlation_id", at, over, {"events[0].correlation_id", "9 bytes", "limit 8"});

  at = MakeAppend("ca-a", 1);
  over = MakeAppend("ca-b", 1);
  at.mutable_events(0)->set_causation_id(at8);
  over.mutable_events(0)->set_causation_id(over9);
  ExpectEdge("causation_id", at, over, {"events[0].causation_id", "9 bytes", "limit 8"});
}

TEST_F(SmallLimitsTest, IdBytesInReadsAndSubscriptions) {
  const std::string at8 = Repeat('r', kIdBytes), over9 = Repeat('r', kIdBytes + 1);
  client_->MustAppend(MakeAppend(at8, 1));

  v1::ReadStreamRequest rs;
  rs.set_stream_id(at8);
  v1::ReadStreamResponse rresp;
  grpc::Status st = client_->ReadStream(rs, &rresp);
  EXPECT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(rresp.events_size(), 1);
  rs.set_stream_id(over9);
  ExpectBad("ReadStream stream_id", client_->ReadStream(rs, &rresp),
            {"stream_id", "9 bytes", "limit 8"});

  v1::ReadAllRequest ra;
  v1::ReadAllResponse aresp;
  ra.mutable_filter()->set_stream_prefix(at8);
  st = client_->ReadAll(ra, &aresp);
  EXPECT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(aresp.events_size(), 1);
  ra.mutable_filter()->set_stream_prefix(over9);
  ExpectBad("ReadAll filter.stream_prefix", client_->ReadAll(ra, &aresp),
            {"filter.stream_prefix", "9 bytes", "limit 8"});

  ra.mutable_filter()->clear_stream_prefix();
  ra.mutable_filter()->add_event_types(Repeat('T', kIdBytes));
  st = client_->ReadAll(ra, &aresp);
  EXPECT_TRUE(st.ok()) << Describe(st);
  ra.mutable_filter()->set_event_types(0, Repeat('T', kIdBytes + 1));
  ExpectBad("ReadAll filter.event_types", client_->ReadAll(ra, &aresp),
            {"filter.event_types[0]", "9 bytes", "limit 8"});

  for (int n : {kIdBytes, kIdBytes + 1}) {
    SCOPED_TRACE("Subscribe filter.stream_prefix of " + std::to_string(n) + " bytes");
    v1::SubscribeRequest sr;
    sr.mutable_filter()->set_stream_prefix(Repeat('r', n));
    SubscriptionReader sub(client_->channel(), sr, 10000);
    sub.StartReading();
    if (n == kIdBytes) {
      EXPECT_TRUE(sub.WaitForCaughtUp(5000));
      EXPECT_EQ(sub.EventCount(), 1u);
      sub.Cancel();
      sub.Join();
    } else {
      EXPECT_TRUE(sub.WaitForEnd(5000));
      ExpectBad("Subscribe", sub.Join(), {"filter.stream_prefix", "9 bytes", "limit 8"});
    }
  }
}

TEST_F(SmallLimitsTest, ContentTypeBytes) {
  v1::AppendRequest at = MakeAppend("ct-a", 1), over = MakeAppend("ct-b", 1);
  at.mutable_events(0)->set_content_type(Repeat('c', kContentTypeBytes));
  over.mutable_events(0)->set_content_type(Repeat('c', kContentTypeBytes + 1));
  ExpectEdge("--max-content-type-bytes", at, over,
             {"events[0].content_type", "6 bytes", "limit 5"});
}

TEST_F(SmallLimitsTest, RequestBytes) {
  // Enforced by gRPC itself (GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH) before the
  // request is decoded: RESOURCE_EXHAUSTED "Received message larger than max
  // (4097 vs. 4096)".
  v1::AppendRequest at = AppendOfSize("rq-a", kRequestBytes);
  v1::AppendRequest over = AppendOfSize("rq-b", kRequestBytes + 1);
  ASSERT_EQ(at.ByteSizeLong(), static_cast<size_t>(kRequestBytes));
  ASSERT_EQ(over.ByteSizeLong(), static_cast<size_t>(kRequestBytes + 1));
  ExpectEdge("--max-request-bytes", at, over, {"4097", "4096"}, StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(client_->Serving());
}

TEST_F(SmallLimitsTest, PageEventsAreCappedAndDefaulted) {
  client_->MustAppend(MakeAppend("pg", 3));
  client_->MustAppend(MakeAppend("pg", 3));
  // At the maximum: exactly that many. Over it: capped, not rejected.
  EXPECT_EQ(PageSize("pg", kPageEvents), kPageEvents);
  EXPECT_EQ(PageSize("pg", kPageEvents + 1), kPageEvents);
  EXPECT_EQ(PageSize("pg", UINT32_MAX), kPageEvents);
  EXPECT_EQ(PageSize("pg", kPageEvents + 1, v1::BACKWARD), kPageEvents);
  EXPECT_EQ(AllPageSize(kPageEvents), kPageEvents);
  EXPECT_EQ(AllPageSize(kPageEvents + 1), kPageEvents);
  // 0: the default page size.
  EXPECT_EQ(PageSize("pg", 0), kDefaultPageEvents);
  EXPECT_EQ(PageSize("pg", 0, v1::BACKWARD), kDefaultPageEvents);
  EXPECT_EQ(AllPageSize(0), kDefaultPageEvents);
  EXPECT_EQ(PageSize("pg", kDefaultPageEvents + 1), kDefaultPageEvents + 1);
}

TEST_F(SmallLimitsTest, PageBytesTrimButKeepOneEvent) {
  const std::string ct = "a/b";
  const size_t per = RecordedBound("pbX", "T", ct, 0);
  // Two events whose bounds add up to exactly kPageBytes, then one byte more.
  const size_t first = 300, second_at = kPageBytes - 2 * per - first;
  ASSERT_EQ(RecordedBound("pbX", "T", ct, first) + RecordedBound("pbX", "T", ct, second_at),
            static_cast<size_t>(kPageBytes));
  auto append = [&](const std::string &stream, std::vector<size_t> payloads) {
    v1::AppendRequest req;
    req.set_stream_id(stream);
    for (size_t p : payloads) {
      *req.add_events() = MakeEvent("T", Repeat('p', p));
      req.mutable_events(req.events_size() - 1)->set_content_type(ct);
    }
    client_->MustAppend(req);
  };
  append("pbA", {first, second_at, 1});
  append("pbB", {first, second_at + 1, 1});
  append("pbC", {1200, 1200, 1});  // each large event alone exceeds the budget

  EXPECT_EQ(PageSize("pbA", kPageEvents), 2) << "two events of exactly the budget";
  EXPECT_EQ(PageSize("pbB", kPageEvents), 1) << "one byte over the budget";
  EXPECT_EQ(PageSize("pbC", kPageEvents), 1) << "always at least one event";
  EXPECT_EQ(PageSize("pbC", kPageEvents, v1::BACKWARD), 1)
      << "the small last event; the large one does not fit after it";

  // ReadAll trims the same way: positions 1..2 are pbA's first two events.
  v1::ReadAllRequest ra;
  ra.set_max_count(kPageEvents);
  v1::ReadAllResponse aresp;
  grpc::Status st = client_->ReadAll(ra, &aresp);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(aresp.events_size(), 2);
  ra.set_from_position(7);  // pbC's first event: larger than the budget on its own
  st = client_->ReadAll(ra, &aresp);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(aresp.events_size(), 1);
  EXPECT_FALSE(aresp.is_end());
}

TEST_F(SmallLimitsTest, CheckpointIntervalDefaultApplies) {
  // Positions 1..8: N N M | N N N | N M. With interval 3: 2 non-matching
  // events before a match give no checkpoint; the 3rd in a row (position 6)
  // gives one at its position.
  client_->MustAppend(MakeAppend("ck", 2, "N"));
  client_->MustAppend(MakeAppend("ck", 1, "M"));
  client_->MustAppend(MakeAppend("ck", 3, "N"));
  client_->MustAppend(MakeAppend("ck", 1, "N"));
  client_->MustAppend(MakeAppend("ck", 1, "M"));
  ExpectCheckpoints(0, kCheckpointInterval, {6});
  // A request's own interval wins over the configured default: 4 in a row
  // first happens at position 7.
  ExpectCheckpoints(kCheckpointInterval + 1, kCheckpointInterval + 1, {7});
}

// Not configurable: at most 64 event types in a filter.
TEST_F(SmallLimitsTest, FilterEventTypes) {
  v1::ReadAllRequest ra;
  for (int i = 0; i < 64; ++i) ra.mutable_filter()->add_event_types("t" + std::to_string(i));
  v1::ReadAllResponse resp;
  grpc::Status st = client_->ReadAll(ra, &resp);
  EXPECT_TRUE(st.ok()) << Describe(st);
  ra.mutable_filter()->add_event_types("t64");
  ExpectBad("65 event types", client_->ReadAll(ra, &resp),
            {"filter.event_types", "65 given", "limit 64"});
}

// ---- Built-in defaults (API.md details 5) -----------------------------------

class DefaultLimitsTest : public LimitsTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(Start({})); }
};

TEST_F(DefaultLimitsTest, EventsPerAppend) {
  ExpectEdge("1000 events", MakeAppend(UniqueName("ev"), 1000), MakeAppend(UniqueName("ev"), 1001),
             {"events", "1001 given", "limit 1000"});
}

TEST_F(DefaultLimitsTest, Metadata) {
  v1::AppendRequest at = MakeAppend(UniqueName("md"), 1), over = MakeAppend(UniqueName("md"), 1);
  for (int i = 0; i < 64; ++i) (*at.mutable_events(0)->mutable_metadata())["k" + std::to_string(i)];
  *over.mutable_events(0)->mutable_metadata() = at.events(0).metadata();
  (*over.mutable_events(0)->mutable_metadata())["k64"];
  ExpectEdge("64 entries", at, over, {"events[0].metadata", "65 entries", "limit 64"});

  at = MakeAppend(UniqueName("mb"), 1);
  over = MakeAppend(UniqueName("mb"), 1);
  (*at.mutable_events(0)->mutable_metadata())["k"] = Repeat('v', 65536 - 1);
  (*over.mutable_events(0)->mutable_metadata())["k"] = Repeat('v', 65536);
  ExpectEdge("64 KiB", at, over, {"events[0].metadata", "65537 bytes", "limit 65536"});
}

TEST_F(DefaultLimitsTest, IdAndContentTypeBytes) {
  std::string prefix = UniqueName("s");
  ExpectEdge("stream_id", MakeAppend(prefix + Repeat('a', 256 - prefix.size()), 1),
             MakeAppend(prefix + Repeat('b', 257 - prefix.size()), 1),
             {"stream_id", "257 bytes", "limit 256"});
  ExpectEdge("event_type", MakeAppend(UniqueName("et"), 1, Repeat('e', 256)),
             MakeAppend(UniqueName("et"), 1, Repeat('e', 257)),
             {"events[0].event_type", "257 bytes", "limit 256"});
  v1::AppendRequest at = MakeAppend(UniqueName("ct"), 1), over = MakeAppend(UniqueName("ct"), 1);
  at.mutable_events(0)->set_content_type(Repeat('c', 128));
  over.mutable_events(0)->set_content_type(Repeat('c', 129));
  ExpectEdge("content_type", at, over, {"events[0].content_type", "129 bytes", "limit 128"});
}

TEST_F(DefaultLimitsTest, RequestBytes) {
  const size_t limit = 4u << 20;
  v1::AppendRequest at = AppendOfSize(UniqueName("rq"), limit);
  v1::AppendRequest over = AppendOfSize(UniqueName("rq"), limit + 1);
  ASSERT_EQ(at.ByteSizeLong(), limit);
  ASSERT_EQ(over.ByteSizeLong(), limit + 1);
  ExpectEdge("4 MiB", at, over, {"4194305", "4194304"}, StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(DefaultLimitsTest, PageEvents) {
  std::string s = UniqueName("pg");
  client_->MustAppend(MakeAppend(s, 1000));
  client_->MustAppend(MakeAppend(s, 1));
  EXPECT_EQ(PageSize(s, 0), 100);
  EXPECT_EQ(PageSize(s, 1000), 1000);
  EXPECT_EQ(PageSize(s, 1001), 1000);
  EXPECT_EQ(AllPageSize(0), 100);
  EXPECT_EQ(AllPageSize(1001), 1000);
}

TEST_F(DefaultLimitsTest, PageBytes) {
  // 4 MiB - 64 KiB = 4128768: two events of exactly that, then one byte more.
  const size_t budget = 4128768;
  const std::string ct = "a/b";
  const std::string a = UniqueName("pbA"), b = UniqueName("pbB");
  ASSERT_EQ(a.size(), b.size());
  const size_t per = RecordedBound(a, "T", ct, 0);
  const size_t first = budget / 2 - per, second = budget - 2 * per - first;
  auto append = [&](const std::string &stream, size_t payload) {
    v1::AppendRequest req;
    req.set_stream_id(stream);
    *req.add_events() = MakeEvent("T", Repeat('p', payload));
    req.mutable_events(0)->set_content_type(ct);
    client_->MustAppend(req);
  };
  append(a, first);
  append(a, second);
  append(a, 1);
  append(b, first);
  append(b, second + 1);
  append(b, 1);
  EXPECT_EQ(PageSize(a, 0), 2);
  EXPECT_EQ(PageSize(b, 0), 1);
}

TEST_F(DefaultLimitsTest, CheckpointInterval) {
  // 1000 non-matching events in a row give a checkpoint at the 1000th; 999
  // followed by a match give none.
  std::string s = UniqueName("ck");
  client_->MustAppend(MakeAppend(s, 999, "N"));
  client_->MustAppend(MakeAppend(s, 1, "M"));
  client_->MustAppend(MakeAppend(s, 1000, "N"));
  client_->MustAppend(MakeAppend(s, 1, "M"));
  ExpectCheckpoints(0, 1000, {2000});
}

// Not configurable: a filtered ReadAll scans at most 10000 events per page and
// may then return an empty page with is_end = false (API.md details 4).
TEST_F(DefaultLimitsTest, FilteredReadAllScanBound) {
  std::string s = UniqueName("sc");
  auto append_n = [&](int n, const std::string &type) {
    while (n > 0) {
      int k = n < 1000 ? n : 1000;
      client_->MustAppend(MakeAppend(s, k, type));
      n -= k;
    }
  };
  append_n(9999, "N");
  append_n(1, "M");  // position 10000: the 10000th event scanned
  append_n(10000, "N");
  append_n(1, "M");  // position 20001: the 10001st scanned from 10001
  v1::ReadAllRequest ra;
  ra.set_max_count(1000);
  ra.mutable_filter()->add_event_types("M");
  v1::ReadAllResponse resp;
  grpc::Status st = client_->ReadAll(ra, &resp);
  ASSERT_TRUE(st.ok()) << Describe(st);
  ASSERT_EQ(resp.events_size(), 1);
  EXPECT_EQ(resp.events(0).global_position(), 10000u);
  EXPECT_FALSE(resp.is_end());
  EXPECT_EQ(resp.next_position(), 10001u);

  ra.set_from_position(10001);
  st = client_->ReadAll(ra, &resp);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(resp.events_size(), 0);
  EXPECT_FALSE(resp.is_end());
  EXPECT_EQ(resp.next_position(), 20001u);

  ra.set_from_position(20001);
  st = client_->ReadAll(ra, &resp);
  ASSERT_TRUE(st.ok()) << Describe(st);
  ASSERT_EQ(resp.events_size(), 1);
  EXPECT_EQ(resp.events(0).global_position(), 20001u);
  EXPECT_TRUE(resp.is_end());
}

}  // namespace
}  // namespace es_e2e
