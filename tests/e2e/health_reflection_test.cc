// The standard services (API.md "Service", details 9): grpc.health.v1.Health
// Check and Watch, and grpc.reflection.v1alpha.ServerReflection as stock tools
// (grpcurl, grpc_health_probe) use it. Reflection goes through
// grpc::GenericStub; answers are decoded with the reflection messages
// generated in this package and the descriptors with libprotobuf.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "grpc/reflection/v1alpha/reflection.pb.h"
#include "tests/e2e/e2e_client.h"

namespace es_e2e {
namespace {

namespace refl = ::grpc::reflection::v1alpha;
using grpc::StatusCode;
using health::HealthCheckResponse;

constexpr char kReflection[] = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

class HealthReflectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = StartServer();
    ASSERT_NE(server_, nullptr);
    client_ = std::make_unique<Client>(Connect(server_->Address()));
  }
  void TearDown() override {
    client_.reset();
    StopServerExpectClean(server_.get());
  }

  // Sends one reflection request on `call` and decodes the answer.
  static bool Ask(RawStream *call, const refl::ServerReflectionRequest &req,
                  refl::ServerReflectionResponse *resp) {
    std::string bytes;
    req.SerializeToString(&bytes);
    if (!call->Write(bytes)) {
      ADD_FAILURE() << "reflection write failed";
      return false;
    }
    std::string answer;
    if (!call->Read(&answer)) {
      ADD_FAILURE() << "reflection stream ended: " << Describe(call->Finish());
      return false;
    }
    if (!resp->ParseFromString(answer)) {
      ADD_FAILURE() << "reflection answer does not parse";
      return false;
    }
    return true;
  }

  // file_descriptor_response files, parsed.
  static std::vector<google::protobuf::FileDescriptorProto> Files(
      const refl::ServerReflectionResponse &resp) {
    std::vector<google::protobuf::FileDescriptorProto> out;
    EXPECT_EQ(resp.message_response_case(), refl::ServerReflectionResponse::kFileDescriptorResponse)
        << resp.ShortDebugString();
    for (const std::string &bytes : resp.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto fdp;
      EXPECT_TRUE(fdp.ParseFromString(bytes)) << "file_descriptor_proto does not parse";
      out.push_back(fdp);
    }
    return out;
  }

  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
};

// ---- Health ----------------------------------------------------------------

TEST_F(HealthReflectionTest, CheckAnswersServingAndNotFound) {
  for (const char *service : {"", "eventstore.v1.EventStore"}) {
    HealthCheckResponse::ServingStatus s{};
    grpc::Status st = client_->HealthCheck(service, &s);
    ASSERT_TRUE(st.ok()) << "'" << service << "': " << Describe(st);
    EXPECT_EQ(s, HealthCheckResponse::SERVING) << "'" << service << "'";
  }
  for (const char *service : {"nope", "eventstore.v1.EventStor", "eventstore.v1.EventStore.Append",
                              "EVENTSTORE.V1.EVENTSTORE"}) {
    grpc::Status st = client_->HealthCheck(service, nullptr);
    EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND) << "'" << service << "': " << Describe(st);
  }
}

TEST_F(HealthReflectionTest, WatchStreamsServingThenNotServingOnSigterm) {
  struct Watch {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> reader;
  };
  std::vector<std::unique_ptr<Watch>> watches;
  for (const char *service : {"", "eventstore.v1.EventStore"}) {
    auto w = std::make_unique<Watch>();
    SetDeadline(&w->ctx, 20000);
    health::HealthCheckRequest req;
    req.set_service(service);
    w->reader = client_->health_stub()->Watch(&w->ctx, req);
    HealthCheckResponse resp;
    ASSERT_TRUE(w->reader->Read(&resp)) << "'" << service << "': " << Describe(w->reader->Finish());
    EXPECT_EQ(resp.status(), HealthCheckResponse::SERVING) << "'" << service;
    watches.push_back(std::move(w));
  }
  ASSERT_TRUE(server_->Signal(SIGTERM));
  for (auto &w : watches) {
    HealthCheckResponse resp;
    bool saw_not_serving = false;
    for (int i = 0; i < 10 && w->reader->Read(&resp); ++i) {
      EXPECT_NE(resp.status(), HealthCheckResponse::SERVING) << "SERVING again after SIGTERM";
      if (resp.status() == HealthCheckResponse::NOT_SERVING) {
        saw_not_serving = true;
        break;
      }
    }
    EXPECT_TRUE(saw_not_serving) << "Watch did not report NOT_SERVING";
    w->ctx.TryCancel();
    HealthCheckResponse drain;
    for (int i = 0; i < 100 && w->reader->Read(&drain); ++i) {
    }
    w->reader->Finish();
  }
  // While it is still up, Check must not claim SERVING.
  HealthCheckResponse::ServingStatus s{};
  grpc::Status st = client_->HealthCheck("", &s, 2000);
  if (st.ok()) {
    EXPECT_EQ(s, HealthCheckResponse::NOT_SERVING);
  }
  // Dropping the idle connection first keeps this test about health only
  // (an idle connection delaying the exit is shutdown_test's business).
  watches.clear();
  client_.reset();
  EXPECT_TRUE(server_->WaitExit(std::chrono::seconds(5)))
      << "server did not exit within 5 s of SIGTERM";
  EXPECT_TRUE(server_->ExitedCleanly()) << server_->DescribeExit() << "\n" << server_->LogTail();
}

TEST_F(HealthReflectionTest, WatchOfUnknownServiceSaysSoOrFails) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, 3000);
  health::HealthCheckRequest req;
  req.set_service("nope");
  auto reader = client_->health_stub()->Watch(&ctx, req);
  HealthCheckResponse resp;
  if (reader->Read(&resp)) {
    // The standard Watch answers SERVICE_UNKNOWN and keeps the stream open.
    EXPECT_EQ(resp.status(), HealthCheckResponse::SERVICE_UNKNOWN);
    ctx.TryCancel();
    for (int i = 0; i < 1000 && reader->Read(&resp); ++i) {
    }
    reader->Finish();
  } else {
    grpc::Status st = reader->Finish();
    EXPECT_EQ(st.error_code(), StatusCode::NOT_FOUND) << Describe(st);
  }
  EXPECT_TRUE(client_->Serving());
}

// ---- Reflection --------------------------------------------------------------

TEST_F(HealthReflectionTest, ReflectionListsServices) {
  RawStream call(client_->channel(), kReflection);
  ASSERT_TRUE(call.ok());
  refl::ServerReflectionRequest req;
  req.set_list_services("");
  refl::ServerReflectionResponse resp;
  ASSERT_TRUE(Ask(&call, req, &resp));
  ASSERT_EQ(resp.message_response_case(), refl::ServerReflectionResponse::kListServicesResponse)
      << resp.ShortDebugString();
  std::set<std::string> names;
  for (const auto &s : resp.list_services_response().service()) names.insert(s.name());
  for (const char *want : {"eventstore.v1.EventStore", "grpc.health.v1.Health",
                           "grpc.reflection.v1alpha.ServerReflection"})
    EXPECT_EQ(names.count(want), 1u) << "missing service " << want;
  ASSERT_TRUE(call.WritesDone());
  std::string extra;
  EXPECT_FALSE(call.Read(&extra)) << "an answer nobody asked for";
  grpc::Status st = call.Finish();
  EXPECT_TRUE(st.ok()) << Describe(st);
}

TEST_F(HealthReflectionTest, ReflectionServesTheEventStoreDescriptor) {
  RawStream call(client_->channel(), kReflection);
  ASSERT_TRUE(call.ok());
  refl::ServerReflectionRequest req;
  req.set_file_containing_symbol("eventstore.v1.EventStore");
  refl::ServerReflectionResponse resp;
  ASSERT_TRUE(Ask(&call, req, &resp));
  std::vector<google::protobuf::FileDescriptorProto> files = Files(resp);
  ASSERT_FALSE(files.empty());
  const google::protobuf::FileDescriptorProto *es = nullptr;
  for (const auto &f : files)
    if (f.name() == "eventstore/v1/eventstore.proto") es = &f;
  ASSERT_NE(es, nullptr) << "first file is '" << files[0].name() << "'";
  EXPECT_EQ(es->package(), "eventstore.v1");

  // The descriptor must be the real contract: build it and look inside.
  google::protobuf::DescriptorPool pool;
  const google::protobuf::FileDescriptor *fd = pool.BuildFile(*es);
  ASSERT_NE(fd, nullptr) << "descriptor does not build";
  const google::protobuf::ServiceDescriptor *svc = fd->FindServiceByName("EventStore");
  ASSERT_NE(svc, nullptr);
  struct M {
    const char *name, *in, *out;
    bool server_streaming;
  };
  for (M m : {M{"Append", "AppendRequest", "AppendResponse", false},
              M{"ReadStream", "ReadStreamRequest", "ReadStreamResponse", false},
              M{"ReadAll", "ReadAllRequest", "ReadAllResponse", false},
              M{"Subscribe", "SubscribeRequest", "SubscribeResponse", true}}) {
    const google::protobuf::MethodDescriptor *md = svc->FindMethodByName(m.name);
    ASSERT_NE(md, nullptr) << m.name;
    EXPECT_EQ(md->input_type()->name(), m.in);
    EXPECT_EQ(md->output_type()->name(), m.out);
    EXPECT_EQ(md->server_streaming(), m.server_streaming) << m.name;
    EXPECT_FALSE(md->client_streaming()) << m.name;
  }
  const google::protobuf::Descriptor *append =
      pool.FindMessageTypeByName("eventstore.v1.AppendRequest");
  ASSERT_NE(append, nullptr);
  ASSERT_NE(append->FindFieldByNumber(5), nullptr);
  EXPECT_EQ(append->FindFieldByNumber(5)->name(), "events");
  const google::protobuf::Descriptor *rec =
      pool.FindMessageTypeByName("eventstore.v1.RecordedEvent");
  ASSERT_NE(rec, nullptr);
  ASSERT_NE(rec->FindFieldByNumber(14), nullptr);
  EXPECT_EQ(rec->FindFieldByNumber(14)->name(), "recorded_at_unix_ms");
  // It matches what this client was compiled from.
  EXPECT_EQ(fd->message_type_count(),
            v1::AppendRequest::descriptor()->file()->message_type_count());
}

TEST_F(HealthReflectionTest, ReflectionAnswersSeveralQuestionsOnOneStream) {
  RawStream call(client_->channel(), kReflection);
  ASSERT_TRUE(call.ok());
  struct Q {
    std::string what;
    refl::ServerReflectionRequest req;
    std::string file;  // expected file name, or "" for an error response
  };
  std::vector<Q> qs(6);
  qs[0].what = "message symbol";
  qs[0].req.set_file_containing_symbol("eventstore.v1.AppendRequest");
  qs[0].file = "eventstore/v1/eventstore.proto";
  qs[1].what = "file by name";
  qs[1].req.set_file_by_filename("eventstore/v1/eventstore.proto");
  qs[1].file = "eventstore/v1/eventstore.proto";
  qs[2].what = "health service";
  qs[2].req.set_file_containing_symbol("grpc.health.v1.Health");
  qs[2].file = "grpc/health/v1/health.proto";
  qs[3].what = "unknown symbol";
  qs[3].req.set_file_containing_symbol("no.such.Symbol");
  qs[4].what = "unknown file";
  qs[4].req.set_file_by_filename("no/such.proto");
  qs[5].what = "method symbol (grpcurl describe)";
  qs[5].req.set_file_containing_symbol("eventstore.v1.EventStore.Append");
  qs[5].file = "eventstore/v1/eventstore.proto";
  for (const Q &q : qs) {
    SCOPED_TRACE(q.what);
    refl::ServerReflectionResponse resp;
    ASSERT_TRUE(Ask(&call, q.req, &resp));
    if (q.file.empty()) {
      ASSERT_EQ(resp.message_response_case(), refl::ServerReflectionResponse::kErrorResponse)
          << resp.ShortDebugString();
      EXPECT_EQ(resp.error_response().error_code(), static_cast<int>(StatusCode::NOT_FOUND));
    } else {
      std::vector<google::protobuf::FileDescriptorProto> files = Files(resp);
      ASSERT_FALSE(files.empty());
      EXPECT_EQ(files[0].name(), q.file);
    }
  }
  ASSERT_TRUE(call.WritesDone());
  grpc::Status st = call.Finish();
  EXPECT_TRUE(st.ok()) << Describe(st);
  EXPECT_TRUE(client_->Serving());
}

// file_containing_symbol answers exactly as the reference service (grpc++'s
// ProtoServerReflection, which asks protobuf's
// DescriptorPool::FindFileContainingSymbol): for every symbol the served files
// define — packages and their leading components, messages, nested messages,
// map entries, fields, oneofs, enums, enum values, services, methods — the
// defining file; for anything else, however close, NOT_FOUND. The oracle is a
// DescriptorPool built from the files the server serves, asked the same
// question. Both reflection services (v1alpha and v1) are asked.
TEST_F(HealthReflectionTest, ReflectionFindsOnlySymbolsThatExist) {
  namespace pb = google::protobuf;
  const std::vector<std::string> kFiles = {
      "eventstore/v1/eventstore.proto", "grpc/health/v1/health.proto",
      "grpc/reflection/v1alpha/reflection.proto", "grpc/reflection/v1/reflection.proto"};
  pb::DescriptorPool pool;
  {
    RawStream call(client_->channel(), kReflection);
    ASSERT_TRUE(call.ok());
    for (const std::string &name : kFiles) {
      refl::ServerReflectionRequest req;
      req.set_file_by_filename(name);
      refl::ServerReflectionResponse resp;
      ASSERT_TRUE(Ask(&call, req, &resp));
      std::vector<pb::FileDescriptorProto> files = Files(resp);
      ASSERT_EQ(files.size(), 1u) << name;
      ASSERT_NE(pool.BuildFile(files[0]), nullptr) << name << " does not build";
    }
    ASSERT_TRUE(call.WritesDone());
    ASSERT_TRUE(call.Finish().ok());
  }

  // Every symbol of the pool, then near misses of each.
  std::set<std::string> symbols;
  std::function<void(const pb::EnumDescriptor *)> add_enum = [&](const pb::EnumDescriptor *e) {
    symbols.insert(e->full_name());
    for (int i = 0; i < e->value_count(); i++) symbols.insert(e->value(i)->full_name());
  };
  std::function<void(const pb::Descriptor *)> add_message = [&](const pb::Descriptor *m) {
    symbols.insert(m->full_name());
    for (int i = 0; i < m->field_count(); i++) symbols.insert(m->field(i)->full_name());
    for (int i = 0; i < m->oneof_decl_count(); i++) symbols.insert(m->oneof_decl(i)->full_name());
    for (int i = 0; i < m->extension_count(); i++) symbols.insert(m->extension(i)->full_name());
    for (int i = 0; i < m->nested_type_count(); i++) add_message(m->nested_type(i));
    for (int i = 0; i < m->enum_type_count(); i++) add_enum(m->enum_type(i));
  };
  for (const std::string &name : kFiles) {
    const pb::FileDescriptor *f = pool.FindFileByName(name);
    ASSERT_NE(f, nullptr);
    for (size_t dot = 0; dot != std::string::npos; dot = f->package().find('.', dot + 1))
      if (dot) symbols.insert(f->package().substr(0, dot));
    symbols.insert(f->package());
    for (int i = 0; i < f->message_type_count(); i++) add_message(f->message_type(i));
    for (int i = 0; i < f->enum_type_count(); i++) add_enum(f->enum_type(i));
    for (int i = 0; i < f->extension_count(); i++) symbols.insert(f->extension(i)->full_name());
    for (int i = 0; i < f->service_count(); i++) {
      symbols.insert(f->service(i)->full_name());
      for (int j = 0; j < f->service(i)->method_count(); j++)
        symbols.insert(f->service(i)->method(j)->full_name());
    }
  }
  ASSERT_GT(symbols.size(), 100u);
  std::set<std::string> candidates = symbols;
  for (const std::string &s : symbols) {
    candidates.insert(s + ".Nope");
    candidates.insert(s + "x");
    candidates.insert(s + ".");
    candidates.insert("." + s);
    candidates.insert(s.substr(0, s.size() - 1));
    size_t dot = s.rfind('.');
    if (dot != std::string::npos) candidates.insert(s.substr(0, dot + 1) + "Nope");
  }
  // Enum values scoped by their enum (protobuf scopes them beside it).
  candidates.insert("eventstore.v1.Direction.FORWARD");
  candidates.insert("eventstore.v1.ExpectedVersionKind.EXPECTED_ANY");
  for (const char *s : {"", ".", "eventstore.v1.Nope", "eventstore.v1.EventStore.Nope",
                        "eventstore.v1.EventStore.Append.Nope", "no.such.Symbol", "eventstore.",
                        "grpc.health.v1.Health.Check.", "EVENTSTORE.V1.EVENTSTORE"})
    candidates.insert(s);
  // The hole this guards: a made-up name in our package is not ours.
  ASSERT_EQ(pool.FindFileContainingSymbol("eventstore.v1.Nope"), nullptr);
  ASSERT_NE(pool.FindFileContainingSymbol("eventstore.v1.FORWARD"), nullptr);

  for (const char *service :
       {kReflection, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}) {
    SCOPED_TRACE(service);
    RawStream call(client_->channel(), service, 60000);
    ASSERT_TRUE(call.ok());
    int found = 0, not_found = 0;
    std::vector<std::string> wrong;  // "'symbol': want ..., got ..."
    for (const std::string &symbol : candidates) {
      const pb::FileDescriptor *want = pool.FindFileContainingSymbol(symbol);
      refl::ServerReflectionRequest req;
      req.set_file_containing_symbol(symbol);
      refl::ServerReflectionResponse resp;
      ASSERT_TRUE(Ask(&call, req, &resp)) << "'" << symbol << "'";
      std::string got;
      if (resp.message_response_case() == refl::ServerReflectionResponse::kErrorResponse &&
          resp.error_response().error_code() == static_cast<int>(StatusCode::NOT_FOUND)) {
        got = "NOT_FOUND";
      } else if (resp.message_response_case() ==
                     refl::ServerReflectionResponse::kFileDescriptorResponse &&
                 resp.file_descriptor_response().file_descriptor_proto_size() > 0) {
        pb::FileDescriptorProto fdp;
        fdp.ParseFromString(resp.file_descriptor_response().file_descriptor_proto(0));
        got = fdp.name();
      } else {
        got = resp.ShortDebugString().substr(0, 200);
      }
      (want ? found : not_found)++;
      const std::string expected = want ? want->name() : "NOT_FOUND";
      if (got != expected) wrong.push_back("'" + symbol + "': want " + expected + ", got " + got);
    }
    std::string first;
    for (size_t i = 0; i < wrong.size() && i < 30; i++) first += "\n  " + wrong[i];
    EXPECT_TRUE(wrong.empty()) << wrong.size() << " of " << candidates.size()
                               << " answers differ from the reference:" << first;
    EXPECT_GE(found, static_cast<int>(symbols.size()));
    EXPECT_GT(not_found, static_cast<int>(symbols.size()));
    ASSERT_TRUE(call.WritesDone());
    EXPECT_TRUE(call.Finish().ok());
  }
  EXPECT_TRUE(client_->Serving());
}

TEST_F(HealthReflectionTest, ReflectionSurvivesGarbage) {
  RawStream call(client_->channel(), kReflection, 5000);
  ASSERT_TRUE(call.ok());
  call.Write(std::string("\xff\xff\xff\xff", 4));
  std::string answer;
  for (int i = 0; i < 1000 && call.Read(&answer); ++i) {
  }
  grpc::Status st = call.Finish();
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(st);
  EXPECT_TRUE(client_->Serving());
}

}  // namespace
}  // namespace es_e2e
