// Status codes of the wire contract (API.md "Status codes", details 1, 5, 6, 8):
// every row that applies without auth, with the details the table promises
// (es-actual-version, the names in messages), and after every rejected
// request: nothing stored (the ReadAll head is unchanged) and the server still
// serving.
//
// Malformed requests go through grpc::GenericStub as raw bytes, so invalid
// UTF-8, unknown enum values and garbage reach the server exactly as written.
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "tests/e2e/e2e_client.h"
#include "tests/e2e/server_process.h"

namespace es_e2e {
namespace {

using grpc::StatusCode;

constexpr char kPlaceholder[] = "PLACEHOLDER0";  // 12 bytes

// `seq` right-aligned in 12 bytes (so a truncated sequence stays at the end).
std::string Pad12(const std::string &seq) {
  return std::string(12 - seq.size(), 'a') + seq;
}

std::string Ser(const google::protobuf::Message &m) {
  std::string out;
  m.SerializeToString(&out);
  return out;
}

v1::AppendRequest BaseAppend() {
  v1::AppendRequest req;
  req.set_stream_id("bad-input-stream");
  *req.add_events() = MakeEvent("T", "x");
  return req;
}

// A well-formed AppendRequest with one field changed.
std::function<std::string()> AppendWith(std::function<void(v1::AppendRequest *)> edit) {
  return [edit] {
    v1::AppendRequest req = BaseAppend();
    edit(&req);
    return Ser(req);
  };
}

// An AppendRequest whose placeholder-holding field gets raw bytes `seq`.
std::function<std::string()> AppendPatched(std::function<void(v1::AppendRequest *)> put_placeholder,
                                           const std::string &seq) {
  return [put_placeholder, seq] {
    v1::AppendRequest req = BaseAppend();
    put_placeholder(&req);
    return Patch(Ser(req), kPlaceholder, Pad12(seq));
  };
}

struct BadCase {
  std::string name;
  std::string method;  // full method path
  std::function<std::string()> bytes;
  std::vector<StatusCode> codes;      // any of these
  std::vector<std::string> mentions;  // the message must contain each
};

// GoogleTest prints a failing parameter with this.
void PrintTo(const BadCase &c, std::ostream *os) {
  *os << c.name;
}

const std::vector<StatusCode> kInvalid = {StatusCode::INVALID_ARGUMENT};
const std::vector<StatusCode> kTooBig = {StatusCode::RESOURCE_EXHAUSTED,
                                         StatusCode::INVALID_ARGUMENT};

struct InvalidUtf8 {
  const char *name;
  std::string bytes;
};
const std::vector<InvalidUtf8> &InvalidUtf8Forms() {
  static const std::vector<InvalidUtf8> forms = {
      {"Byte_ff", "\xff"},
      {"BadContinuation", "\xc3\x28"},
      {"Overlong", "\xc0\xaf"},
      {"Surrogate", "\xed\xa0\x80"},
      {"AboveMax", "\xf4\x90\x80\x80"},
      {"TruncatedAtEnd", "\xe2\x82"},
      {"LoneContinuation", "\x80"},
  };
  return forms;
}

struct ControlChar {
  const char *name;
  std::string text;
};
const std::vector<ControlChar> &ControlForms() {
  static const std::vector<ControlChar> forms = {
      {"U0000", std::string("a\0b", 3)},
      {"U0001", "a\x01"},
      {"U000A", "a\nb"},
      {"U0009", "a\tb"},
      {"U001F", "a\x1f"},
      {"U007F", "a\x7f"},
      {"U0080", "a\xc2\x80"},
      {"U0085", "a\xc2\x85"},
      {"U009F", "a\xc2\x9f"},
  };
  return forms;
}

std::vector<BadCase> AppendCases() {
  std::vector<BadCase> c;
  auto add = [&c](std::string name, std::function<std::string()> bytes,
                  std::vector<StatusCode> codes, std::vector<std::string> mentions) {
    c.push_back(
        {"Append_" + name, kAppend, std::move(bytes), std::move(codes), std::move(mentions)});
  };
  // stream_id
  add("StreamIdEmpty", AppendWith([](auto *r) { r->set_stream_id(""); }), kInvalid, {"stream_id"});
  add("StreamIdTooLong", AppendWith([](auto *r) { r->set_stream_id(Repeat('s', 257)); }), kInvalid,
      {"stream_id", "256"});
  for (const auto &cc : ControlForms())
    add(std::string("StreamIdControl_") + cc.name,
        AppendWith([t = cc.text](auto *r) { r->set_stream_id(t); }), kInvalid, {"stream_id"});
  for (const auto &u : InvalidUtf8Forms())
    add(std::string("StreamIdInvalidUtf8_") + u.name,
        AppendPatched([](auto *r) { r->set_stream_id(kPlaceholder); }, u.bytes), kInvalid,
        {"stream_id"});
  // stream_type
  add("StreamTypeTooLong", AppendWith([](auto *r) { r->set_stream_type(Repeat('t', 257)); }),
      kInvalid, {"stream_type", "256"});
  add("StreamTypeInvalidUtf8",
      AppendPatched([](auto *r) { r->set_stream_type(kPlaceholder); }, "\xff"), kInvalid,
      {"stream_type"});
  // expected_kind
  add("ExpectedKindUnknown4",
      AppendWith([](auto *r) { r->set_expected_kind(static_cast<v1::ExpectedVersionKind>(4)); }),
      kInvalid, {"expected_kind"});
  add("ExpectedKindUnknown99",
      AppendWith([](auto *r) { r->set_expected_kind(static_cast<v1::ExpectedVersionKind>(99)); }),
      kInvalid, {"expected_kind"});
  add("ExpectedKindNegative",
      AppendWith([](auto *r) { r->set_expected_kind(static_cast<v1::ExpectedVersionKind>(-1)); }),
      kInvalid, {"expected_kind"});
  // events
  add("NoEvents", AppendWith([](auto *r) { r->clear_events(); }), kInvalid, {"events"});
  add("TooManyEvents", AppendWith([](auto *r) {
        r->clear_events();
        for (int i = 0; i < 1001; ++i) *r->add_events() = MakeEvent("T");
      }),
      kInvalid, {"events", "1000"});
  add("DuplicateIdInRequest", AppendWith([](auto *r) {
        std::string id = NewUuid();
        r->clear_events();
        *r->add_events() = MakeEvent("T", "a", id);
        *r->add_events() = MakeEvent("T", "b", id);
      }),
      kInvalid, {"event_id"});
  add("SecondEventInvalid", AppendWith([](auto *r) { *r->add_events() = MakeEvent("", "second"); }),
      kInvalid, {"event_type"});
  // event_type
  add("EventTypeEmpty", AppendWith([](auto *r) { r->mutable_events(0)->set_event_type(""); }),
      kInvalid, {"event_type"});
  add("EventTypeTooLong",
      AppendWith([](auto *r) { r->mutable_events(0)->set_event_type(Repeat('e', 257)); }), kInvalid,
      {"event_type", "256"});
  for (const auto &cc : ControlForms())
    add(std::string("EventTypeControl_") + cc.name,
        AppendWith([t = cc.text](auto *r) { r->mutable_events(0)->set_event_type(t); }), kInvalid,
        {"event_type"});
  add("EventTypeInvalidUtf8",
      AppendPatched([](auto *r) { r->mutable_events(0)->set_event_type(kPlaceholder); },
                    "\xc3\x28"),
      kInvalid, {"event_type"});
  // event_id forms
  const std::string good = "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
  const std::vector<std::pair<std::string, std::string>> bad_ids = {
      {"Uppercase", "0189A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"},
      {"MixedCase", "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4A5b"},
      {"Braced", "{" + good + "}"},
      {"Short", good.substr(0, 35)},
      {"Long", good + "0"},
      {"NoDashes", "0189a1b2c3d47e5f8a9b0c1d2e3f4a5b"},
      {"MisplacedDashes", "0189a1b-2c3d4-7e5f-8a9b-0c1d2e3f4a5b"},
      {"NonHex", "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4g5b"},
      {"Urn", "urn:uuid:" + good},
      {"Spaces", " " + good.substr(1)},
      {"NotAUuid", "hello"},
  };
  for (const auto &b : bad_ids)
    add("EventId" + b.first,
        AppendWith([id = b.second](auto *r) { r->mutable_events(0)->set_event_id(id); }), kInvalid,
        {"event_id"});
  // other event strings
  add("ContentTypeTooLong",
      AppendWith([](auto *r) { r->mutable_events(0)->set_content_type(Repeat('c', 129)); }),
      kInvalid, {"content_type", "128"});
  add("ContentTypeInvalidUtf8",
      AppendPatched([](auto *r) { r->mutable_events(0)->set_content_type(kPlaceholder); }, "\xff"),
      kInvalid, {"content_type"});
  add("CorrelationIdTooLong",
      AppendWith([](auto *r) { r->mutable_events(0)->set_correlation_id(Repeat('r', 257)); }),
      kInvalid, {"correlation_id", "256"});
  add("CorrelationIdInvalidUtf8",
      AppendPatched([](auto *r) { r->mutable_events(0)->set_correlation_id(kPlaceholder); },
                    "\xed\xa0\x80"),
      kInvalid, {"correlation_id"});
  add("CausationIdTooLong",
      AppendWith([](auto *r) { r->mutable_events(0)->set_causation_id(Repeat('u', 257)); }),
      kInvalid, {"causation_id", "256"});
  add("CausationIdInvalidUtf8",
      AppendPatched([](auto *r) { r->mutable_events(0)->set_causation_id(kPlaceholder); },
                    "\xc0\xaf"),
      kInvalid, {"causation_id"});
  // metadata
  add("MetadataTooManyEntries", AppendWith([](auto *r) {
        auto *md = r->mutable_events(0)->mutable_metadata();
        for (int i = 0; i < 65; ++i) (*md)["k" + std::to_string(i)] = "v";
      }),
      kInvalid, {"metadata", "64"});
  add("MetadataTooLarge", AppendWith([](auto *r) {
        (*r->mutable_events(0)->mutable_metadata())["k"] = Repeat('m', 65536);
      }),
      kTooBig, {"metadata"});
  add("MetadataKeyInvalidUtf8",
      AppendPatched(
          [](auto *r) { (*r->mutable_events(0)->mutable_metadata())[kPlaceholder] = "v"; }, "\xff"),
      kInvalid, {"metadata"});
  add("MetadataValueInvalidUtf8",
      AppendPatched(
          [](auto *r) { (*r->mutable_events(0)->mutable_metadata())["k"] = kPlaceholder; },
          "\xf4\x90\x80\x80"),
      kInvalid, {"metadata"});
  // bytes that are not an AppendRequest
  add("GarbageBytes", [] { return std::string("\xff\xff\xff\xff\xff\xff", 6); }, kInvalid, {});
  add("TruncatedBytes",
      [] {
        return std::string(
            "\x0a\x10"
            "abc",
            5);
      },
      kInvalid, {});
  add("EmptyMessage", [] { return std::string(); }, kInvalid, {"stream_id"});
  // size limits
  add("Request5MiB",
      AppendWith([](auto *r) { r->mutable_events(0)->set_payload(Repeat('p', 5 << 20)); }), kTooBig,
      {});
  add("Request9MiB",
      AppendWith([](auto *r) { r->mutable_events(0)->set_payload(Repeat('p', 9 << 20)); }), kTooBig,
      {});
  return c;
}

std::vector<BadCase> ReadCases() {
  std::vector<BadCase> c;
  auto rs = [](std::function<void(v1::ReadStreamRequest *)> edit) {
    return [edit] {
      v1::ReadStreamRequest req;
      req.set_stream_id("bad-read-stream");
      edit(&req);
      return Ser(req);
    };
  };
  auto add_rs = [&c](std::string name, std::function<std::string()> bytes,
                     std::vector<std::string> mentions) {
    c.push_back(
        {"ReadStream_" + name, kReadStream, std::move(bytes), kInvalid, std::move(mentions)});
  };
  add_rs("StreamIdEmpty", rs([](auto *r) { r->set_stream_id(""); }), {"stream_id"});
  add_rs("StreamIdTooLong", rs([](auto *r) { r->set_stream_id(Repeat('s', 257)); }),
         {"stream_id", "256"});
  add_rs("StreamIdControl_U0001", rs([](auto *r) { r->set_stream_id("a\x01"); }), {"stream_id"});
  add_rs("StreamIdInvalidUtf8",
         [] {
           v1::ReadStreamRequest req;
           req.set_stream_id(kPlaceholder);
           return Patch(Ser(req), kPlaceholder, Pad12("\xff"));
         },
         {"stream_id"});
  add_rs("DirectionUnknown", rs([](auto *r) { r->set_direction(static_cast<v1::Direction>(2)); }),
         {"direction"});
  add_rs("DirectionNegative", rs([](auto *r) { r->set_direction(static_cast<v1::Direction>(-1)); }),
         {"direction"});
  add_rs("GarbageBytes", [] { return std::string("\xff\xff\xff\xff", 4); }, {});

  auto ra = [](std::function<void(v1::ReadAllRequest *)> edit) {
    return [edit] {
      v1::ReadAllRequest req;
      edit(&req);
      return Ser(req);
    };
  };
  auto add_ra = [&c](std::string name, std::function<std::string()> bytes,
                     std::vector<std::string> mentions) {
    c.push_back({"ReadAll_" + name, kReadAll, std::move(bytes), kInvalid, std::move(mentions)});
  };
  add_ra("DirectionUnknown", ra([](auto *r) { r->set_direction(static_cast<v1::Direction>(2)); }),
         {"direction"});
  add_ra("PrefixInvalidUtf8",
         [] {
           v1::ReadAllRequest req;
           req.mutable_filter()->set_stream_prefix(kPlaceholder);
           return Patch(Ser(req), kPlaceholder, Pad12("\xc3\x28"));
         },
         {"stream_prefix"});
  add_ra("FilterEventTypeInvalidUtf8",
         [] {
           v1::ReadAllRequest req;
           req.mutable_filter()->add_event_types(kPlaceholder);
           return Patch(Ser(req), kPlaceholder, Pad12("\xff"));
         },
         {"event_types"});
  add_ra("GarbageBytes", [] { return std::string("\xff\xff\xff\xff", 4); }, {});
  add_ra("TruncatedBytes", [] { return std::string("\x22\x05\x0a", 3); }, {});
  return c;
}

std::vector<BadCase> SubscribeCases() {
  std::vector<BadCase> c;
  auto add = [&c](std::string name, std::function<std::string()> bytes,
                  std::vector<std::string> mentions) {
    c.push_back({"Subscribe_" + name, kSubscribe, std::move(bytes), kInvalid, std::move(mentions)});
  };
  add("PrefixInvalidUtf8",
      [] {
        v1::SubscribeRequest req;
        req.mutable_filter()->set_stream_prefix(kPlaceholder);
        return Patch(Ser(req), kPlaceholder, Pad12("\xff"));
      },
      {"stream_prefix"});
  add("FilterEventTypeInvalidUtf8",
      [] {
        v1::SubscribeRequest req;
        req.mutable_filter()->add_event_types(kPlaceholder);
        return Patch(Ser(req), kPlaceholder, Pad12("\xed\xa0\x80"));
      },
      {"event_types"});
  add("GarbageBytes", [] { return std::string("\xff\xff\xff\xff", 4); }, {});
  add("TruncatedBytes", [] { return std::string("\x12\x09\x0a", 3); }, {});
  return c;
}

std::vector<BadCase> AllBadCases() {
  std::vector<BadCase> all = AppendCases();
  for (auto &c : ReadCases()) all.push_back(std::move(c));
  for (auto &c : SubscribeCases()) all.push_back(std::move(c));
  return all;
}

// One server for the whole binary's status checks; the suites only read or
// add streams of their own. When it does not start, every test fails with the
// reason: a failure recorded in SetUpTestSuite would make GoogleTest report
// each test as SKIPPED instead.
class StatusTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = std::make_unique<ServerProcess>();
    std::string error;
    if (!server->Start(&error)) {
      start_error_ = new std::string(error);
      return;
    }
    server_ = server.release();
    client_ = new Client(Connect(server_->Address()));
  }
  static void TearDownTestSuite() {
    delete client_;
    client_ = nullptr;
    StopServerExpectClean(server_);
    delete server_;
    server_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(server_, nullptr) << "the server did not start: "
                                << (start_error_ != nullptr ? *start_error_ : "");
  }

  // The status is one of `codes`, its message names `mentions`, nothing was
  // stored and the server is alive and serving.
  static void ExpectRejected(const grpc::Status &st, const std::vector<StatusCode> &codes,
                             const std::vector<std::string> &mentions, uint64_t head_before) {
    bool code_ok = std::find(codes.begin(), codes.end(), st.error_code()) != codes.end();
    std::string want;
    for (StatusCode c : codes) want += (want.empty() ? "" : " or ") + CodeName(c);
    EXPECT_TRUE(code_ok) << "got " << Describe(st) << ", expected " << want;
    if (code_ok) {
      for (const std::string &m : mentions)
        EXPECT_NE(st.error_message().find(m), std::string::npos)
            << "message of " << CodeName(st.error_code()) << " should name '" << m << "': \""
            << st.error_message() << "\"";
    }
    ExpectHealthy(head_before);
  }

  static void ExpectHealthy(uint64_t head_before) {
    ASSERT_FALSE(server_->WaitExit(std::chrono::milliseconds(0)))
        << "server died: " << server_->DescribeExit() << "\nlog:\n"
        << server_->LogTail();
    EXPECT_EQ(client_->Head(), head_before) << "a rejected request stored data";
    EXPECT_TRUE(client_->Serving()) << "server not serving after the request";
  }

  static ServerProcess *server_;
  static Client *client_;
  static std::string *start_error_;  // why server_ is null
};

ServerProcess *StatusTest::server_ = nullptr;
Client *StatusTest::client_ = nullptr;
std::string *StatusTest::start_error_ = nullptr;

class BadRequestTest : public StatusTest, public ::testing::WithParamInterface<BadCase> {};

TEST_P(BadRequestTest, IsRejectedAndStoresNothing) {
  const BadCase &c = GetParam();
  // Something stored first, so that "head unchanged" means something.
  client_->MustAppend(MakeAppend(UniqueName("seed"), 1));
  uint64_t head = client_->Head();
  std::string bytes = c.bytes();
  grpc::Status st;
  if (c.method == kSubscribe) {
    RawStream call(client_->channel(), c.method, 5000);
    ASSERT_TRUE(call.ok());
    call.Write(bytes);
    call.WritesDone();
    std::string msg;
    int received = 0;
    while (received < 1000 && call.Read(&msg)) ++received;
    st = call.Finish();
    EXPECT_EQ(received, 0) << "messages before the error status";
  } else {
    st = RawUnary(client_->channel(), c.method, bytes, nullptr, 10000);
  }
  ExpectRejected(st, c.codes, c.mentions, head);
}

INSTANTIATE_TEST_SUITE_P(Api, BadRequestTest, ::testing::ValuesIn(AllBadCases()),
                         [](const ::testing::TestParamInfo<BadCase> &info) {
                           return info.param.name;
                         });

// ---- ABORTED ---------------------------------------------------------------

class AbortedTest : public StatusTest {
 protected:
  // Appends with the given expectation; expects ABORTED naming `actual`.
  void ExpectAborted(const std::string &stream, v1::ExpectedVersionKind kind, uint64_t expected,
                     uint64_t actual) {
    SCOPED_TRACE("stream " + stream + " kind " + v1::ExpectedVersionKind_Name(kind) + " expected " +
                 std::to_string(expected));
    uint64_t head = client_->Head();
    v1::AppendRequest req = MakeAppend(stream, 2);
    req.set_expected_kind(kind);
    req.set_expected_version(expected);
    grpc::ClientContext ctx;
    v1::AppendResponse resp;
    grpc::Status st = client_->Append(req, &resp, &ctx);
    ASSERT_EQ(st.error_code(), StatusCode::ABORTED) << Describe(st);
    std::optional<std::string> av = Trailer(ctx, "es-actual-version");
    ASSERT_TRUE(av.has_value()) << "no es-actual-version trailing metadata";
    EXPECT_EQ(*av, std::to_string(actual)) << "es-actual-version";
    EXPECT_TRUE(std::regex_match(*av, std::regex("0|[1-9][0-9]*")))
        << "es-actual-version is not plain decimal: '" << *av << "'";
    EXPECT_NE(st.error_message().find(std::to_string(actual)), std::string::npos)
        << "message should name the actual version " << actual << ": \"" << st.error_message()
        << "\"";
    if (kind == v1::EXPECTED_EXACT) {
      EXPECT_NE(st.error_message().find(std::to_string(expected)), std::string::npos)
          << "message should name the expected version " << expected << ": \"" << st.error_message()
          << "\"";
    }
    ExpectHealthy(head);
  }
};

TEST_F(AbortedTest, NoStreamOnExistingStream) {
  std::string s = UniqueName("aborted");
  client_->MustAppend(MakeAppend(s, 3));
  ExpectAborted(s, v1::EXPECTED_NO_STREAM, 0, 3);
}

TEST_F(AbortedTest, StreamExistsOnMissingStreamReportsZero) {
  ExpectAborted(UniqueName("aborted"), v1::EXPECTED_STREAM_EXISTS, 0, 0);
}

TEST_F(AbortedTest, ExactMismatch) {
  std::string s = UniqueName("aborted");
  client_->MustAppend(MakeAppend(s, 12));
  ExpectAborted(s, v1::EXPECTED_EXACT, 5, 12);
  ExpectAborted(s, v1::EXPECTED_EXACT, 13, 12);
  ExpectAborted(s, v1::EXPECTED_EXACT, 0, 12);  // EXACT 0 = NO_STREAM
}

TEST_F(AbortedTest, ExactOnMissingStreamReportsZero) {
  ExpectAborted(UniqueName("aborted"), v1::EXPECTED_EXACT, 7, 0);
}

TEST_F(AbortedTest, FailedCheckLeavesStreamUnchanged) {
  std::string s = UniqueName("aborted");
  client_->MustAppend(MakeAppend(s, 2));
  ExpectAborted(s, v1::EXPECTED_EXACT, 1, 2);
  EXPECT_EQ(client_->ReadWholeStream(s).size(), 2u);
}

// ---- NOT_FOUND -------------------------------------------------------------

TEST_F(StatusTest, ReadStreamOfEmptyStreamIsNotFound) {
  for (auto dir : {v1::FORWARD, v1::BACKWARD}) {
    v1::ReadStreamRequest req;
    req.set_stream_id(UniqueName("never-written"));
    req.set_direction(dir);
    v1::ReadStreamResponse resp;
    grpc::Status st = client_->ReadStream(req, &resp);
    EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND)
        << v1::Direction_Name(dir) << ": " << Describe(st);
  }
  // A stream whose only append failed has no events either.
  std::string s = UniqueName("failed-only");
  v1::AppendRequest req = MakeAppend(s, 1);
  req.set_expected_kind(v1::EXPECTED_STREAM_EXISTS);
  v1::AppendResponse resp;
  EXPECT_EQ(client_->Append(req, &resp).error_code(), StatusCode::ABORTED);
  v1::ReadStreamRequest rs;
  rs.set_stream_id(s);
  v1::ReadStreamResponse rresp;
  EXPECT_EQ(client_->ReadStream(rs, &rresp).error_code(), StatusCode::NOT_FOUND);
}

// ---- ALREADY_EXISTS and FAILED_PRECONDITION --------------------------------

TEST_F(StatusTest, ReusedEventIdIsAlreadyExistsNamingTheId) {
  std::string a = UniqueName("owner"), b = UniqueName("thief");
  std::string id = NewUuid();
  v1::AppendRequest first;
  first.set_stream_id(a);
  *first.add_events() = MakeEvent("T", "1", id);
  client_->MustAppend(first);
  uint64_t head = client_->Head();

  v1::AppendRequest again;
  again.set_stream_id(b);
  *again.add_events() = MakeEvent("T", "2", id);
  v1::AppendResponse resp;
  grpc::Status st = client_->Append(again, &resp);
  ExpectRejected(st, {StatusCode::ALREADY_EXISTS}, {id}, head);
  v1::ReadStreamRequest rs;
  rs.set_stream_id(b);
  v1::ReadStreamResponse rresp;
  EXPECT_EQ(client_->ReadStream(rs, &rresp).error_code(), StatusCode::NOT_FOUND);
}

TEST_F(StatusTest, StreamTypeMismatchIsFailedPrecondition) {
  std::string s = UniqueName("typed");
  v1::AppendRequest req = MakeAppend(s, 1);
  req.set_stream_type("Order");
  client_->MustAppend(req);
  uint64_t head = client_->Head();
  v1::AppendRequest other = MakeAppend(s, 1);
  other.set_stream_type("Customer");
  v1::AppendResponse resp;
  ExpectRejected(client_->Append(other, &resp), {StatusCode::FAILED_PRECONDITION}, {}, head);
  EXPECT_EQ(client_->ReadWholeStream(s).size(), 1u);
}

// ---- UNIMPLEMENTED ---------------------------------------------------------

TEST_F(StatusTest, UnknownMethodsAreUnimplemented) {
  uint64_t head = client_->Head();
  for (const char *method : {"/eventstore.v1.EventStore/Nope", "/foo.Bar/Baz",
                             "/grpc.health.v1.Health/Nope", "/eventstore.v1.EventStore/append"}) {
    SCOPED_TRACE(method);
    auto t0 = std::chrono::steady_clock::now();
    grpc::Status st = RawUnary(client_->channel(), method, "", nullptr, 5000);
    EXPECT_EQ(st.error_code(), StatusCode::UNIMPLEMENTED) << Describe(st);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(4))
        << "the answer should be immediate, not a deadline";
  }
  {
    RawStream call(client_->channel(), "/foo.Bar/Stream", 5000);
    call.Write(std::string("\x08\x01", 2));
    call.WritesDone();
    std::string msg;
    EXPECT_FALSE(call.Read(&msg));
    grpc::Status st = call.Finish();
    EXPECT_EQ(st.error_code(), StatusCode::UNIMPLEMENTED) << Describe(st);
  }
  ExpectHealthy(head);
}

// ---- Requests at the limits are accepted -----------------------------------

TEST_F(StatusTest, ValuesAtTheLimitsAreAccepted) {
  std::vector<std::pair<std::string, v1::AppendRequest>> cases;
  auto base = [](const std::string &stream) {
    v1::AppendRequest r;
    r.set_stream_id(stream);
    *r.add_events() = MakeEvent("T", "x");
    return r;
  };
  std::string long_stream = UniqueName("L");
  long_stream += Repeat('s', 256 - long_stream.size());
  cases.push_back({"stream_id 256 bytes", base(long_stream)});
  {
    auto r = base(UniqueName("lim"));
    r.set_stream_type(Repeat('t', 256));
    auto *e = r.mutable_events(0);
    e->set_event_type(Repeat('e', 256));
    e->set_content_type(Repeat('c', 128));
    e->set_correlation_id(Repeat('r', 256));
    e->set_causation_id(Repeat('u', 256));
    cases.push_back({"256-byte strings, 128-byte content_type", r});
  }
  {
    auto r = base(UniqueName("lim"));
    auto *md = r.mutable_events(0)->mutable_metadata();
    for (int i = 0; i < 64; ++i) (*md)["k" + std::to_string(i)] = "v";
    cases.push_back({"64 metadata entries", r});
  }
  {
    auto r = base(UniqueName("lim"));
    (*r.mutable_events(0)->mutable_metadata())["k"] = Repeat('m', 60000);
    cases.push_back({"60000 bytes of metadata", r});
  }
  {
    auto r = MakeAppend(UniqueName("lim"), 1000);
    cases.push_back({"1000 events", r});
  }
  cases.push_back({"space and U+00A0 in stream_id", base(UniqueName("a b\xc2\xa0"
                                                                    "c"))});
  cases.push_back({"4-byte UTF-8 in stream_id and event_type", [&] {
                     auto r = base(UniqueName("\xf0\x9f\x98\x80"));
                     r.mutable_events(0)->set_event_type("Caf\xc3\xa9\xf0\x9f\x8d\xb5");
                     return r;
                   }()});
  {
    auto r = base(UniqueName("lim"));
    r.mutable_events(0)->set_payload(Repeat('p', 3 << 20));
    cases.push_back({"3 MiB payload", r});
  }
  for (const auto &c : cases) {
    SCOPED_TRACE(c.first);
    v1::AppendResponse resp;
    grpc::Status st = client_->Append(c.second, &resp);
    EXPECT_TRUE(st.ok()) << Describe(st);
    if (st.ok()) {
      EXPECT_EQ(resp.last_stream_version(), static_cast<uint64_t>(c.second.events_size()));
      auto got = client_->ReadWholeStream(c.second.stream_id());
      EXPECT_EQ(got.size(), static_cast<size_t>(c.second.events_size()));
    }
  }
}

TEST_F(StatusTest, UnknownFieldsAreIgnored) {
  // A newer client may send fields this server does not know (API.md:
  // extending the contract with new numbers is fine).
  std::string s = UniqueName("unknown-fields");
  v1::AppendRequest req = MakeAppend(s, 1);
  std::string bytes = Ser(req);
  ProtoWriter extra;
  extra.Varint(99, 7).Bytes(100, "future");
  bytes += extra.data();
  std::string out;
  grpc::Status st = RawUnary(client_->channel(), kAppend, bytes, &out);
  EXPECT_TRUE(st.ok()) << Describe(st);
  v1::AppendResponse resp;
  EXPECT_TRUE(resp.ParseFromString(out));
  EXPECT_EQ(resp.last_stream_version(), 1u);

  v1::ReadAllRequest ra;
  std::string ra_bytes = Ser(ra) + extra.data();
  EXPECT_TRUE(RawUnary(client_->channel(), kReadAll, ra_bytes).ok());
}

TEST_F(StatusTest, EmptyReadAllRequestMeansDefaults) {
  // A zero-length message is a valid ReadAllRequest with every field default.
  std::string out;
  grpc::Status st = RawUnary(client_->channel(), kReadAll, "", &out);
  ASSERT_TRUE(st.ok()) << Describe(st);
  v1::ReadAllResponse resp;
  ASSERT_TRUE(resp.ParseFromString(out));
  EXPECT_EQ(resp.head_position(), client_->Head());
}

// ---- Configured limits -----------------------------------------------------

class ConfiguredLimitsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> args) {
    server_ = StartServer(std::move(args));
    ASSERT_NE(server_, nullptr);
    client_ = std::make_unique<Client>(Connect(server_->Address()));
  }
  void TearDown() override {
    client_.reset();
    StopServerExpectClean(server_.get());
  }
  // Appends `n` events to `stream`, then checks page sizes for max_counts.
  void ExpectPageSizes(const std::string &stream,
                       const std::vector<std::pair<uint32_t, int>> &max_and_count) {
    for (const auto &mc : max_and_count) {
      SCOPED_TRACE("max_count " + std::to_string(mc.first));
      v1::ReadStreamRequest rs;
      rs.set_stream_id(stream);
      rs.set_max_count(mc.first);
      v1::ReadStreamResponse rresp;
      grpc::Status st = client_->ReadStream(rs, &rresp);
      ASSERT_TRUE(st.ok()) << Describe(st);
      EXPECT_EQ(rresp.events_size(), mc.second);
      EXPECT_FALSE(rresp.is_end());
      v1::ReadAllRequest ra;
      ra.set_max_count(mc.first);
      v1::ReadAllResponse aresp;
      st = client_->ReadAll(ra, &aresp);
      ASSERT_TRUE(st.ok()) << Describe(st);
      EXPECT_EQ(aresp.events_size(), mc.second);
    }
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ConfiguredLimitsTest, AppendLimitsFollowTheFlags) {
  Start(
      {"--max-append-events", "3", "--max-metadata-entries", "2", "--max-request-bytes", "65536"});
  std::string s = UniqueName("cfg");
  v1::AppendResponse resp;
  grpc::Status st = client_->Append(MakeAppend(s, 4), &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(st);
  EXPECT_NE(st.error_message().find("3"), std::string::npos)
      << "message should name the limit 3: " << Describe(st);
  EXPECT_TRUE(client_->Append(MakeAppend(s, 3), &resp).ok());

  v1::AppendRequest md = MakeAppend(s, 1);
  auto *m = md.mutable_events(0)->mutable_metadata();
  (*m)["a"] = "1";
  (*m)["b"] = "2";
  EXPECT_TRUE(client_->Append(md, &resp).ok()) << "2 entries are allowed";
  (*m)["c"] = "3";
  md.mutable_events(0)->set_event_id(NewUuid());
  st = client_->Append(md, &resp);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(st);
  EXPECT_NE(st.error_message().find("2"), std::string::npos)
      << "message should name the limit 2: " << Describe(st);

  v1::AppendRequest big = MakeAppend(s, 1);
  big.mutable_events(0)->set_payload(Repeat('p', 60000));
  st = client_->Append(big, &resp);
  EXPECT_TRUE(st.ok()) << "60000 bytes fit 65536: " << Describe(st);
  big.mutable_events(0)->set_payload(Repeat('p', 100000));
  big.mutable_events(0)->set_event_id(NewUuid());
  st = client_->Append(big, &resp);
  EXPECT_TRUE(st.error_code() == StatusCode::RESOURCE_EXHAUSTED ||
              st.error_code() == StatusCode::INVALID_ARGUMENT)
      << "100000-byte request over a 65536 limit: " << Describe(st);
  EXPECT_TRUE(client_->Serving());
}

// The command line of the brief: --max-page-events alone, below the default
// page size of 100. Pages are capped at it, max_count 0 included.
TEST_F(ConfiguredLimitsTest, MaxPageEventsBelowTheDefaultCapsEveryPage) {
  ASSERT_NO_FATAL_FAILURE(Start({"--max-page-events", "5"}));
  std::string s = UniqueName("cfg");
  client_->MustAppend(MakeAppend(s, 8));
  ExpectPageSizes(s, {{0, 5}, {6, 5}, {100, 5}, {100000, 5}, {3, 3}});
}

TEST_F(ConfiguredLimitsTest, MaxPageEventsAboveTheDefault) {
  ASSERT_NO_FATAL_FAILURE(Start({"--max-page-events", "150"}));
  std::string s = UniqueName("cfg");
  client_->MustAppend(MakeAppend(s, 200));
  ExpectPageSizes(s, {{0, 100}, {120, 120}, {1000, 150}});
}

}  // namespace
}  // namespace es_e2e
