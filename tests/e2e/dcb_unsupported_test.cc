// Extension 1 (tags, queries, conditions, AppendMany) on a backend that does
// not implement it: every request that needs it is refused with UNIMPLEMENTED,
// naming the feature and the backend, and nothing is stored — a tag, a query
// or a condition is never silently dropped. Input validation still comes
// first (INVALID_ARGUMENT naming the field), as on every backend.
//
// The backends listed in kUnsupported are those without the extension; when
// a backend gains it, it moves from this list to the tests of the extension
// itself (dcb_test.cc).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/e2e/e2e_client.h"
#include "tests/e2e/server_process.h"

namespace es_e2e {
namespace {

using grpc::StatusCode;

// Every backend has the extension now; the cases stay for the next backend
// that lacks it.
const std::vector<std::string> kUnsupported = {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(DcbUnsupported);

class DcbUnsupported : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    server_ = StartServer({"--backend", GetParam()});
    ASSERT_NE(server_, nullptr);
    channel_ = Connect(server_->Address());
    client_ = std::make_unique<Client>(channel_);
    // Something stored, so that "nothing stored" means "the head did not move".
    client_->MustAppend(MakeAppend(UniqueName("plain"), 2));
    head_ = client_->Head();
    ASSERT_EQ(head_, 2u);
  }
  void TearDown() override {
    if (server_) StopServerExpectClean(server_.get());
  }

  // The status names the feature and the backend; nothing was stored.
  void ExpectRefused(const grpc::Status &st, const std::string &feature) {
    EXPECT_EQ(st.error_code(), StatusCode::UNIMPLEMENTED) << Describe(st);
    EXPECT_NE(st.error_message().find(feature), std::string::npos) << Describe(st);
    EXPECT_NE(st.error_message().find(GetParam()), std::string::npos) << Describe(st);
    EXPECT_EQ(client_->Head(), head_) << "a refused request stored something";
  }

  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<Client> client_;
  uint64_t head_ = 0;
};

TEST_P(DcbUnsupported, AppendWithTagsIsUnimplemented) {
  v1::AppendRequest req = MakeAppend(UniqueName("tagged"), 2);
  req.mutable_events(1)->add_tags("course:c1");
  v1::AppendResponse resp;
  ExpectRefused(client_->Append(req, &resp), "events[1].tags");
}

TEST_P(DcbUnsupported, AppendWithAConditionIsUnimplemented) {
  v1::AppendRequest req = MakeAppend(UniqueName("conditional"), 1);
  req.mutable_condition()->add_fail_if_events_match()->add_tags("course:c1");
  v1::AppendResponse resp;
  ExpectRefused(client_->Append(req, &resp), "condition");
}

TEST_P(DcbUnsupported, AppendManyIsUnimplemented) {
  v1::AppendManyRequest req;
  *req.add_appends() = MakeAppend(UniqueName("many"), 1);
  *req.add_appends() = MakeAppend(UniqueName("many"), 1);
  v1::AppendManyResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  ExpectRefused(client_->stub()->AppendMany(&ctx, req, &resp), "AppendMany");
}

TEST_P(DcbUnsupported, ReadAllWithQueryItemsIsUnimplemented) {
  v1::ReadAllRequest req;
  req.mutable_filter()->add_items()->add_tags("course:c1");
  v1::ReadAllResponse resp;
  ExpectRefused(client_->ReadAll(req, &resp), "filter.items");
  // Without items the same filter works as before.
  v1::ReadAllRequest plain;
  plain.mutable_filter()->add_event_types("Tested");
  grpc::Status st = client_->ReadAll(plain, &resp);
  ASSERT_TRUE(st.ok()) << Describe(st);
  EXPECT_EQ(resp.events_size(), 2);
}

TEST_P(DcbUnsupported, SubscribeWithQueryItemsIsUnimplemented) {
  v1::SubscribeRequest req;
  req.mutable_filter()->add_items()->add_event_types("Tested");
  SubscriptionReader sub(channel_, req, 10000);
  sub.StartReading();
  ASSERT_TRUE(sub.WaitForEnd(10000));
  ExpectRefused(sub.Join(), "filter.items");
  EXPECT_TRUE(sub.Messages().empty()) << "events delivered before the refusal";
}

TEST_P(DcbUnsupported, ValidationComesFirst) {
  v1::AppendRequest req = MakeAppend(UniqueName("bad-tag"), 1);
  req.mutable_events(0)->add_tags("");
  v1::AppendResponse resp;
  grpc::Status st = client_->Append(req, &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(st);
  EXPECT_NE(st.error_message().find("events[0].tags[0]"), std::string::npos) << Describe(st);

  v1::AppendManyRequest many;
  v1::AppendManyResponse many_resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  st = client_->stub()->AppendMany(&ctx, many, &many_resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(st);
  EXPECT_NE(st.error_message().find("appends"), std::string::npos) << Describe(st);
  EXPECT_EQ(client_->Head(), head_);
}

INSTANTIATE_TEST_SUITE_P(Backends, DcbUnsupported, ::testing::ValuesIn(kUnsupported),
                         [](const ::testing::TestParamInfo<std::string> &info) {
                           return info.param;
                         });

}  // namespace
}  // namespace es_e2e
