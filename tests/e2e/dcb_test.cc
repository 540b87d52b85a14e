// Extension 1 through the real server (memory and lmdb backends): tags on the wire,
// reads and subscriptions by query, conditional appends and AppendMany with
// their trailers (es-condition-position, es-append-index, es-actual-version),
// and the decision the DCB way under contention: 30 seats, 100 concurrent
// bookers, each reading by query, deciding and appending with `after` = the
// head it read, retrying when the condition fails — exactly 30 bookings.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/e2e_client.h"
#include "tests/e2e/server_process.h"

namespace es_e2e {
namespace {

using grpc::StatusCode;

v1::EventData Tagged(const std::string &type, std::vector<std::string> tags) {
  v1::EventData e = MakeEvent(type, "p");
  for (const auto &t : tags) e.add_tags(t);
  return e;
}

v1::AppendRequest AppendOf(const std::string &stream, std::vector<v1::EventData> events) {
  v1::AppendRequest req;
  req.set_stream_id(stream);
  for (auto &e : events) *req.add_events() = e;
  return req;
}

void AddItem(google::protobuf::RepeatedPtrField<v1::QueryItem> *items,
             std::vector<std::string> types, std::vector<std::string> tags) {
  v1::QueryItem *it = items->Add();
  for (const auto &t : types) it->add_event_types(t);
  for (const auto &t : tags) it->add_tags(t);
}

class Dcb : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    server_ = StartServer({"--backend", GetParam()});
    ASSERT_NE(server_, nullptr);
    channel_ = Connect(server_->Address());
    client_ = std::make_unique<Client>(channel_);
  }
  void TearDown() override {
    if (server_) StopServerExpectClean(server_.get());
  }
  grpc::Status AppendMany(const v1::AppendManyRequest &req, v1::AppendManyResponse *resp,
                          grpc::ClientContext *ctx) {
    SetDeadline(ctx);
    return client_->stub()->AppendMany(ctx, req, resp);
  }
  std::vector<uint64_t> Query(const v1::Filter &f) {
    std::vector<uint64_t> out;
    for (const auto &e : client_->ReadWholeLog(&f, 2)) out.push_back(e.global_position());
    return out;
  }

  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Client> client_;
};

TEST_P(Dcb, TagsTravelBothWays) {
  client_->MustAppend(AppendOf("s", {Tagged("T", {"b", "a"}), Tagged("T", {})}));
  auto events = client_->ReadWholeStream("s");
  ASSERT_EQ(events.size(), 2u);
  ASSERT_EQ(events[0].tags_size(), 2);
  EXPECT_EQ(events[0].tags(0), "b");
  EXPECT_EQ(events[0].tags(1), "a");
  EXPECT_EQ(events[1].tags_size(), 0);
}

TEST_P(Dcb, ReadAllByQuery) {
  client_->MustAppend(AppendOf("course-c1", {Tagged("CourseOpened", {"course:c1"})}));
  client_->MustAppend(AppendOf("course-c2", {Tagged("CourseOpened", {"course:c2"})}));
  client_->MustAppend(AppendOf("e-1", {Tagged("Enrolled", {"course:c1", "student:s1"})}));
  client_->MustAppend(AppendOf("e-2", {Tagged("Enrolled", {"course:c2", "student:s1"})}));
  client_->MustAppend(AppendOf("x", {MakeEvent("Other")}));
  v1::Filter f;
  AddItem(f.mutable_items(), {}, {"course:c1"});
  EXPECT_EQ(Query(f), (std::vector<uint64_t>{1, 3}));
  v1::Filter both;
  AddItem(both.mutable_items(), {"CourseOpened"}, {"course:c1"});
  AddItem(both.mutable_items(), {"Enrolled"}, {"student:s1"});
  EXPECT_EQ(Query(both), (std::vector<uint64_t>{1, 3, 4}));
  v1::Filter any;
  AddItem(any.mutable_items(), {}, {});
  EXPECT_EQ(Query(any).size(), 5u);
  v1::Filter types;
  AddItem(types.mutable_items(), {"Enrolled"}, {});
  types.set_stream_prefix("e-2");
  EXPECT_EQ(Query(types), (std::vector<uint64_t>{4}));
}

TEST_P(Dcb, SubscribeByQueryReplaysAndGoesLive) {
  client_->MustAppend(AppendOf("a", {Tagged("T", {"t:1"}), Tagged("T", {"t:2"})}));
  v1::SubscribeRequest req;
  AddItem(req.mutable_filter()->mutable_items(), {}, {"t:1"});
  SubscriptionReader sub(channel_, req);
  sub.StartReading();
  ASSERT_TRUE(sub.WaitForCaughtUp(10000));
  client_->MustAppend(AppendOf("b", {Tagged("T", {"t:2"}), Tagged("T", {"t:1", "t:2"})}));
  ASSERT_TRUE(sub.WaitForCount(2, 10000));
  std::vector<uint64_t> got;
  for (const auto &m : sub.Messages())
    if (m.kind == SubMsg::kEvent) {
      got.push_back(m.position);
      EXPECT_GE(m.event.tags_size(), 1);
    }
  EXPECT_EQ(got, (std::vector<uint64_t>{1, 4}));
  sub.Cancel();
}

TEST_P(Dcb, AFailedConditionIsAbortedWithItsPosition) {
  client_->MustAppend(AppendOf("x", {MakeEvent("Other")}));
  client_->MustAppend(AppendOf("course-c1", {Tagged("CourseOpened", {"course:c1"})}));
  v1::AppendRequest req = AppendOf("course-c1", {Tagged("Enrolled", {"course:c1"})});
  AddItem(req.mutable_condition()->mutable_fail_if_events_match(), {}, {"course:c1"});
  req.mutable_condition()->set_after(1);
  grpc::ClientContext ctx;
  v1::AppendResponse resp;
  grpc::Status st = client_->Append(req, &resp, &ctx);
  ASSERT_EQ(st.error_code(), StatusCode::ABORTED) << Describe(st);
  auto pos = Trailer(ctx, "es-condition-position");
  ASSERT_TRUE(pos.has_value());
  EXPECT_EQ(*pos, "2");
  EXPECT_FALSE(Trailer(ctx, "es-append-index").has_value());
  EXPECT_EQ(client_->Head(), 2u);
  req.mutable_condition()->set_after(2);
  grpc::ClientContext ok_ctx;
  st = client_->Append(req, &resp, &ok_ctx);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(resp.first_global_position(), 3u);
  // The retry is acknowledged as a duplicate although the condition fails now.
  grpc::ClientContext retry_ctx;
  st = client_->Append(req, &resp, &retry_ctx);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_TRUE(resp.duplicate());
}

TEST_P(Dcb, AppendManyOnTheWire) {
  v1::AppendManyRequest req;
  *req.add_appends() = AppendOf("a", {MakeEvent("T"), MakeEvent("T")});
  *req.add_appends() = AppendOf("b", {Tagged("T", {"t"})});
  v1::AppendRequest third = AppendOf("a", {MakeEvent("T")});
  third.set_expected_kind(v1::EXPECTED_EXACT);
  third.set_expected_version(2);
  *req.add_appends() = third;
  v1::AppendManyResponse resp;
  grpc::ClientContext ctx;
  grpc::Status st = AppendMany(req, &resp, &ctx);
  ASSERT_TRUE(st.ok()) << Describe(st);
  ASSERT_EQ(resp.results_size(), 3);
  EXPECT_EQ(resp.results(0).first_global_position(), 1u);
  EXPECT_EQ(resp.results(1).first_global_position(), 3u);
  EXPECT_EQ(resp.results(2).first_global_position(), 4u);
  EXPECT_EQ(resp.results(2).first_stream_version(), 3u);
  // The same request again: every result a duplicate.
  v1::AppendManyResponse again;
  grpc::ClientContext ctx2;
  st = AppendMany(req, &again, &ctx2);
  ASSERT_TRUE(st.ok()) << Describe(st);
  for (const auto &r : again.results()) EXPECT_TRUE(r.duplicate());
  EXPECT_EQ(client_->Head(), 4u);
}

TEST_P(Dcb, AFailingAppendManyNamesTheAppendAndStoresNothing) {
  client_->MustAppend(AppendOf("b", {MakeEvent("T")}));
  v1::AppendManyRequest req;
  *req.add_appends() = AppendOf("a", {MakeEvent("T")});
  v1::AppendRequest bad = AppendOf("b", {MakeEvent("T")});
  bad.set_expected_kind(v1::EXPECTED_NO_STREAM);
  *req.add_appends() = bad;
  *req.add_appends() = AppendOf("c", {MakeEvent("T")});
  v1::AppendManyResponse resp;
  grpc::ClientContext ctx;
  grpc::Status st = AppendMany(req, &resp, &ctx);
  ASSERT_EQ(st.error_code(), StatusCode::ABORTED) << Describe(st);
  EXPECT_EQ(Trailer(ctx, "es-append-index").value_or("none"), "1");
  EXPECT_EQ(Trailer(ctx, "es-actual-version").value_or("none"), "1");
  EXPECT_EQ(client_->Head(), 1u);
  // A request-wide condition that fails: no append index.
  v1::AppendManyRequest cond;
  *cond.add_appends() = AppendOf("a", {MakeEvent("T")});
  AddItem(cond.mutable_condition()->mutable_fail_if_events_match(), {"T"}, {});
  grpc::ClientContext ctx2;
  st = AppendMany(cond, &resp, &ctx2);
  ASSERT_EQ(st.error_code(), StatusCode::ABORTED) << Describe(st);
  EXPECT_EQ(Trailer(ctx2, "es-condition-position").value_or("none"), "1");
  EXPECT_FALSE(Trailer(ctx2, "es-append-index").has_value());
  // Bad input names the field; an append with a condition of its own is refused.
  v1::AppendManyRequest own;
  v1::AppendRequest with_cond = AppendOf("a", {MakeEvent("T")});
  AddItem(with_cond.mutable_condition()->mutable_fail_if_events_match(), {}, {"t"});
  *own.add_appends() = with_cond;
  grpc::ClientContext ctx3;
  st = AppendMany(own, &resp, &ctx3);
  ASSERT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(st);
  EXPECT_NE(st.error_message().find("appends[0].condition"), std::string::npos) << Describe(st);
  EXPECT_EQ(Trailer(ctx3, "es-append-index").value_or("none"), "0");
  // An existing id reused in another request names the append that reuses it.
  v1::AppendManyRequest reuse;
  *reuse.add_appends() = AppendOf("n", {MakeEvent("T")});
  v1::AppendRequest old = AppendOf("b", {});
  v1::ReadAllRequest all;
  v1::ReadAllResponse page;
  ASSERT_TRUE(client_->ReadAll(all, &page).ok());
  ASSERT_EQ(page.events_size(), 1);
  v1::EventData again = MakeEvent("T", "", page.events(0).event_id());
  *old.add_events() = again;
  *reuse.add_appends() = old;
  grpc::ClientContext ctx4;
  st = AppendMany(reuse, &resp, &ctx4);
  ASSERT_EQ(st.error_code(), StatusCode::ALREADY_EXISTS) << Describe(st);
  EXPECT_EQ(Trailer(ctx4, "es-append-index").value_or("none"), "1");
  EXPECT_EQ(client_->Head(), 1u);
}

// Bytes a typed client cannot send: a tag that is not UTF-8, a tag holding a
// NUL, a condition without items. Each is INVALID_ARGUMENT naming the field,
// and nothing is stored.
TEST_P(Dcb, BadTagsAndConditionsOnTheWireAreRefusedNamingTheField) {
  auto event = [](const std::string &tag) {
    return ProtoWriter().Bytes(2, "T").Bytes(10, "ok").Bytes(10, tag);
  };
  struct Case {
    std::string name, bytes, mentions;
  } cases[] = {
      {"tag not UTF-8", ProtoWriter().Bytes(1, "s").Message(5, event("bad\xff")).data(),
       "events[0].tags[1]"},
      {"tag with NUL", ProtoWriter().Bytes(1, "s").Message(5, event(std::string("a\0b", 3))).data(),
       "tags"},
      {"tag with a control character", ProtoWriter().Bytes(1, "s").Message(5, event("a\tb")).data(),
       "events[0].tags[1]"},
      {"condition without items",
       ProtoWriter()
           .Bytes(1, "s")
           .Message(5, event("x"))
           .Message(6, ProtoWriter().Varint(2, 5))
           .data(),
       "condition.fail_if_events_match"},
  };
  for (const auto &c : cases) {
    grpc::Status st = RawUnary(channel_, kAppend, c.bytes);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << c.name << ": " << Describe(st);
    EXPECT_NE(st.error_message().find(c.mentions), std::string::npos)
        << c.name << ": " << Describe(st);
  }
  EXPECT_EQ(client_->Head(), 0u);
}

// 30 seats, 100 bookers at once. Each booker: read the show's bookings by
// query (ReadAll FORWARD from 1, remembering head_position), decide (sold
// out, or book), append its booking with the condition "no booking of this
// show after the head I read"; on ABORTED read again. The tag index makes
// the condition exact: exactly 30 bookings, whatever the interleaving.
TEST_P(Dcb, ThirtySeatsAHundredBookersExactlyThirtyBookings) {
  const int kSeats = 30, kBookers = 100;
  BookingRace race = RunBookingRace({server_->Address()}, kSeats, kBookers, "show:1");
  for (int b = 0; b < kBookers; b++) EXPECT_EQ(race.problems[b], "") << "booker " << b;
  EXPECT_EQ(race.booked, kSeats);
  EXPECT_EQ(race.sold_out, kBookers - kSeats);
  v1::Filter show;
  AddItem(show.mutable_items(), {"SeatBooked"}, {"show:1"});
  EXPECT_EQ(client_->ReadWholeLog(&show).size(), static_cast<size_t>(kSeats));
  EXPECT_EQ(client_->Head(), static_cast<uint64_t>(kSeats));
  std::printf("bookings %d, conflicts (retried) %d, sold out %d\n", race.booked, race.conflicts,
              race.sold_out);
}

INSTANTIATE_TEST_SUITE_P(Backends, Dcb, ::testing::Values("memory", "lmdb"),
                         [](const ::testing::TestParamInfo<std::string> &info) {
                           return info.param;
                         });

}  // namespace
}  // namespace es_e2e
