// Security of the real server: TLS, bearer tokens, and the start-up refusal to
// expose a plaintext, unauthenticated server beyond loopback.
//
// Certificates are made by the test with the openssl command line in a
// temporary directory: a CA, a server certificate for localhost and 127.0.0.1
// (subjectAltName) signed by it, a client certificate for mutual TLS, and a
// second, unrelated CA. Plaintext channels get their bearer token from a
// client interceptor so that the shared helpers (Client, RawStream) can be used
// unchanged; TLS channels use grpc::AccessTokenCredentials like a real client.
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/client_interceptor.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/e2e/e2e_client.h"
#include "tests/e2e/server_process.h"

namespace es_e2e {
namespace {

constexpr char kUnauthMessage[] = "missing or invalid bearer token";
constexpr char kGoodToken[] = "s3cret-token-0123456789";
constexpr char kOtherToken[] = "second-token";
constexpr char kReflectionV1Alpha[] =
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
constexpr char kReflectionV1[] = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

std::string ReadAll(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string &path, const std::string &data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// Adds "authorization: <value>" to every call of the channel.
class AuthInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit AuthInterceptor(std::string value) : value_(std::move(value)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods *methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA))
      methods->GetSendInitialMetadata()->insert({"authorization", value_});
    methods->Proceed();
  }

 private:
  std::string value_;
};

class AuthInterceptorFactory : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit AuthInterceptorFactory(std::string value) : value_(std::move(value)) {}
  grpc::experimental::Interceptor *CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo *) override {
    return new AuthInterceptor(value_);
  }

 private:
  std::string value_;
};

// A channel of its own (no waiting: some tests expect it never to connect).
// authorization: the raw header value to send on every call, or "" for none.
std::shared_ptr<grpc::Channel> Channel(const std::string &target,
                                       std::shared_ptr<grpc::ChannelCredentials> creds,
                                       const std::string &authorization = "",
                                       const std::string &ssl_target_override = "") {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (!ssl_target_override.empty()) args.SetSslTargetNameOverride(ssl_target_override);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  if (!authorization.empty())
    factories.push_back(std::make_unique<AuthInterceptorFactory>(authorization));
  return grpc::experimental::CreateCustomChannelWithInterceptors(target, creds, args,
                                                                 std::move(factories));
}

// ---- Every protected RPC once -------------------------------------------------

struct Outcome {
  std::string rpc;
  grpc::Status status;
  bool got_message = false;  // streaming calls: a response arrived
};

Outcome CallAppend(const std::shared_ptr<grpc::Channel> &ch, const std::string &stream) {
  Client client(ch);
  v1::AppendResponse resp;
  return {"Append", client.Append(MakeAppend(stream, 1), &resp), false};
}

Outcome CallReadStream(const std::shared_ptr<grpc::Channel> &ch, const std::string &stream) {
  Client client(ch);
  v1::ReadStreamRequest req;
  req.set_stream_id(stream);
  v1::ReadStreamResponse resp;
  return {"ReadStream", client.ReadStream(req, &resp), false};
}

Outcome CallReadAll(const std::shared_ptr<grpc::Channel> &ch) {
  Client client(ch);
  v1::ReadAllRequest req;
  v1::ReadAllResponse resp;
  return {"ReadAll", client.ReadAll(req, &resp), false};
}

Outcome CallSubscribe(const std::shared_ptr<grpc::Channel> &ch) {
  Client client(ch);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, 10000);
  v1::SubscribeRequest req;  // from the beginning: the log holds an event by now
  auto reader = client.stub()->Subscribe(&ctx, req);
  v1::SubscribeResponse msg;
  Outcome out{"Subscribe", grpc::Status::OK, reader->Read(&msg)};
  if (out.got_message) ctx.TryCancel();
  out.status = reader->Finish();
  if (out.got_message && out.status.error_code() == grpc::StatusCode::CANCELLED)
    out.status = grpc::Status::OK;  // we ended it ourselves after a message
  return out;
}

Outcome CallReflection(const std::shared_ptr<grpc::Channel> &ch, const char *method) {
  RawStream call(ch, method, 10000);
  // ServerReflectionRequest{list_services = ""} (field 7).
  call.Write(ProtoWriter().Bytes(7, "").data());
  call.WritesDone();
  std::string bytes;
  Outcome out{method, grpc::Status::OK, call.Read(&bytes)};
  while (call.Read(&bytes)) {
  }
  out.status = call.Finish();
  return out;
}

// Appends first (so that reads and Subscribe have something), then the rest.
std::vector<Outcome> CallEverything(const std::shared_ptr<grpc::Channel> &ch) {
  std::string stream = UniqueName("sec");
  std::vector<Outcome> outs;
  outs.push_back(CallAppend(ch, stream));
  outs.push_back(CallReadStream(ch, stream));
  outs.push_back(CallReadAll(ch));
  outs.push_back(CallSubscribe(ch));
  outs.push_back(CallReflection(ch, kReflectionV1Alpha));
  outs.push_back(CallReflection(ch, kReflectionV1));
  return outs;
}

void ExpectAllUnauthenticated(const std::vector<Outcome> &outs, const std::string &what) {
  for (const Outcome &o : outs) {
    EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << what << ": " << o.rpc << " gave " << Describe(o.status);
    EXPECT_EQ(o.status.error_message(), kUnauthMessage) << what << ": " << o.rpc;
    EXPECT_FALSE(o.got_message) << what << ": " << o.rpc << " answered without a token";
  }
}

void ExpectAllOk(const std::vector<Outcome> &outs, const std::string &what) {
  for (const Outcome &o : outs) {
    EXPECT_TRUE(o.status.ok()) << what << ": " << o.rpc << " gave " << Describe(o.status);
    if (o.rpc == "Subscribe" || o.rpc.find("Reflection") != std::string::npos) {
      EXPECT_TRUE(o.got_message) << what << ": " << o.rpc << " sent nothing";
    }
  }
}

bool HealthServing(const std::shared_ptr<grpc::Channel> &ch, grpc::Status *status,
                   int timeout_ms = 10000) {
  Client client(ch);
  health::HealthCheckResponse::ServingStatus s = health::HealthCheckResponse::UNKNOWN;
  *status = client.HealthCheck("", &s, timeout_ms);
  return status->ok() && s == health::HealthCheckResponse::SERVING;
}

// ---- Fixture: certificates and tokens, made once ------------------------------

// When the certificates cannot be made (openssl missing, say) every test
// fails, naming the cause. SetUpTestSuite only records the cause: a failure
// recorded there makes GoogleTest report each test as SKIPPED, which reads as
// "nothing wrong" although the binary fails.
class SecurityTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(*setup_error_, "") << "no certificates to test with"; }

  static void SetUpTestSuite() {
    setup_error_ = new std::string;
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
      *setup_error_ =
          "openssl is not installed (tools/setup.sh installs it): the test makes its "
          "certificates with it";
      return;
    }
    const char *t = getenv("TEST_TMPDIR");
    std::string tmpl = std::string(t != nullptr && t[0] ? t : "/tmp") + "/es_sec.XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) {
      *setup_error_ = "mkdtemp " + tmpl + " failed";
      return;
    }
    dir_ = new std::string(buf.data());
    const std::string d = *dir_;
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ";
    WriteFile(d + "/server.ext",
              "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
              "extendedKeyUsage=serverAuth\n");
    WriteFile(d + "/client.ext", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
    const std::vector<std::string> cmds = {
        "openssl req -x509" + ec + "-keyout ca.key -out ca.pem -days 2 -subj /CN=es-test-ca",
        "openssl req -x509" + ec +
            "-keyout other-ca.key -out other-ca.pem -days 2 "
            "-subj /CN=es-other-ca",
        "openssl req" + ec + "-keyout server.key -out server.csr -subj /CN=localhost",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out server.pem -days 2 -extfile server.ext",
        "openssl req" + ec + "-keyout client.key -out client.csr -subj /CN=es-test-client",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "-out client.pem -days 2 -extfile client.ext",
    };
    for (const std::string &cmd : cmds) {
      std::string full = "cd '" + d + "' && " + cmd + " >>openssl.log 2>&1";
      if (system(full.c_str()) != 0) {
        *setup_error_ = full + " failed:\n" + ReadAll(d + "/openssl.log");
        return;
      }
    }
    WriteFile(d + "/tokens", std::string("# tokens of the security test\n\n   ") + kGoodToken +
                                 "   \n\t# indented comment\n" + kOtherToken + "\r\n");
  }

  static void TearDownTestSuite() {
    delete setup_error_;
    setup_error_ = nullptr;
    if (dir_ != nullptr) {
      std::string cmd = "rm -rf '" + *dir_ + "'";
      if (system(cmd.c_str()) != 0) {
      }
      delete dir_;
      dir_ = nullptr;
    }
  }

  static std::string Path(const std::string &name) { return *dir_ + "/" + name; }
  static std::string Pem(const std::string &name) { return ReadAll(Path(name)); }

  std::vector<std::string> TlsArgs() const {
    return {"--tls-cert", Path("server.pem"), "--tls-key", Path("server.key")};
  }

  std::shared_ptr<grpc::ChannelCredentials> TlsCreds(const std::string &ca = "ca.pem",
                                                     bool client_cert = false) const {
    grpc::SslCredentialsOptions opts;
    opts.pem_root_certs = Pem(ca);
    if (client_cert) {
      opts.pem_private_key = Pem("client.key");
      opts.pem_cert_chain = Pem("client.pem");
    }
    return grpc::SslCredentials(opts);
  }

  // Runs the server expecting it not to start; returns its exit code (-1 if it
  // did not exit by itself) and its log.
  static int RunExpectingFailure(std::vector<std::string> args, std::string *log) {
    ServerProcess server(std::move(args));
    std::string error;
    EXPECT_FALSE(server.Start(&error, std::chrono::seconds(10))) << "the server started";
    server.WaitExit(std::chrono::seconds(5));
    *log = server.Log();
    if (!server.Exited() || !WIFEXITED(server.WaitStatus())) return -1;
    return WEXITSTATUS(server.WaitStatus());
  }

  static std::string *dir_;
  static std::string *setup_error_;  // why there are no certificates; "" when there are
};

std::string *SecurityTest::dir_ = nullptr;
std::string *SecurityTest::setup_error_ = nullptr;

// ---- TLS ------------------------------------------------------------------------

TEST_F(SecurityTest, TlsClientTrustingTheCaSucceeds) {
  auto server = StartServer(TlsArgs());
  ASSERT_NE(server, nullptr);
  EXPECT_NE(server->Log().find("transport TLS"), std::string::npos) << server->Log();
  // The certificate names both 127.0.0.1 (IP SAN) and localhost (DNS SAN).
  // The name is checked through the target-name override rather than by
  // dialling "localhost", whose DNS lookup (c-ares) leaks under LeakSanitizer.
  for (const std::string name : {"", "localhost"}) {
    auto ch = Channel(server->Address(), TlsCreds(), "", name);
    grpc::Status st;
    EXPECT_TRUE(HealthServing(ch, &st)) << "name '" << name << "': " << Describe(st);
    ExpectAllOk(CallEverything(ch), "TLS as '" + name + "'");
  }
  // A name the certificate does not hold is refused.
  grpc::Status st;
  EXPECT_FALSE(HealthServing(Channel(server->Address(), TlsCreds(), "", "example.com"), &st, 3000));
  StopServerExpectClean(server.get());
}

TEST_F(SecurityTest, PlaintextClientToTlsPortFails) {
  auto server = StartServer(TlsArgs());
  ASSERT_NE(server, nullptr);
  auto ch = Channel(server->Address(), grpc::InsecureChannelCredentials());
  grpc::Status st;
  EXPECT_FALSE(HealthServing(ch, &st, 3000));
  EXPECT_FALSE(st.ok());
  Outcome append = CallAppend(ch, UniqueName("plain"));
  EXPECT_FALSE(append.status.ok());
  StopServerExpectClean(server.get());
}

TEST_F(SecurityTest, TlsClientTrustingAnotherCaFails) {
  auto server = StartServer(TlsArgs());
  ASSERT_NE(server, nullptr);
  auto ch = Channel(server->Address(), TlsCreds("other-ca.pem"));
  grpc::Status st;
  EXPECT_FALSE(HealthServing(ch, &st, 3000));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << Describe(st);
  StopServerExpectClean(server.get());
}

TEST_F(SecurityTest, MutualTlsRequiresAClientCertificate) {
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--tls-client-ca", Path("ca.pem")});
  auto server = StartServer(args);
  ASSERT_NE(server, nullptr);
  grpc::Status st;
  auto without = Channel(server->Address(), TlsCreds("ca.pem", false));
  EXPECT_FALSE(HealthServing(without, &st, 3000)) << "served a client without a certificate";
  auto with = Channel(server->Address(), TlsCreds("ca.pem", true));
  EXPECT_TRUE(HealthServing(with, &st)) << Describe(st);
  EXPECT_TRUE(CallAppend(with, UniqueName("mtls")).status.ok());
  StopServerExpectClean(server.get());
}

TEST_F(SecurityTest, UnreadableOrInvalidTlsFilesStopStartUp) {
  std::string log;
  EXPECT_EQ(RunExpectingFailure(
                {"--tls-cert", Path("missing.pem"), "--tls-key", Path("server.key")}, &log),
            1);
  EXPECT_NE(log.find("--tls-cert " + Path("missing.pem") + ": cannot read"), std::string::npos)
      << log;

  WriteFile(Path("garbage.pem"), "this is not a certificate\n");
  EXPECT_EQ(RunExpectingFailure(
                {"--tls-cert", Path("garbage.pem"), "--tls-key", Path("server.key")}, &log),
            1);
  EXPECT_NE(log.find("not a PEM file with a CERTIFICATE"), std::string::npos) << log;

  // The key of another certificate: gRPC rejects the pair when binding.
  EXPECT_EQ(
      RunExpectingFailure({"--tls-cert", Path("server.pem"), "--tls-key", Path("ca.key")}, &log),
      1);
  EXPECT_NE(log.find("were rejected"), std::string::npos) << log;

  EXPECT_EQ(RunExpectingFailure({"--tls-cert", Path("server.pem")}, &log), 2);
  EXPECT_NE(log.find("--tls-cert and --tls-key go together"), std::string::npos) << log;
}

// ---- Bearer tokens ----------------------------------------------------------------

TEST_F(SecurityTest, TokensAreRequiredExceptForHealth) {
  auto server = StartServer({"--auth-tokens-file", Path("tokens")});
  ASSERT_NE(server, nullptr);
  const std::string addr = server->Address();
  auto insecure = grpc::InsecureChannelCredentials();

  ExpectAllUnauthenticated(CallEverything(Channel(addr, insecure)), "no token");
  ExpectAllUnauthenticated(CallEverything(Channel(addr, insecure, "Bearer wrong-token")),
                           "wrong token");
  // A prefix, an extension and a different scheme of the right token.
  ExpectAllUnauthenticated(CallEverything(Channel(addr, insecure, "Bearer s3cret-token")),
                           "prefix");
  ExpectAllUnauthenticated(
      CallEverything(Channel(addr, insecure, std::string("Bearer ") + kGoodToken + "x")), "longer");
  ExpectAllUnauthenticated(
      CallEverything(Channel(addr, insecure, std::string("Basic ") + kGoodToken)), "other scheme");
  ExpectAllUnauthenticated(CallEverything(Channel(addr, insecure, "Bearer # tokens")),
                           "comment line");

  // Both tokens of the file work (blanks around them and \r\n dropped).
  ExpectAllOk(CallEverything(Channel(addr, insecure, std::string("Bearer ") + kGoodToken)),
              "first token");
  ExpectAllOk(CallEverything(Channel(addr, insecure, std::string("Bearer ") + kOtherToken)),
              "second token");

  // Health needs no token; unknown methods do.
  grpc::Status st;
  EXPECT_TRUE(HealthServing(Channel(addr, insecure), &st)) << Describe(st);
  grpc::Status unknown = RawUnary(Channel(addr, insecure), "/eventstore.v1.EventStore/Nope", "");
  EXPECT_EQ(unknown.error_code(), grpc::StatusCode::UNAUTHENTICATED) << Describe(unknown);
  StopServerExpectClean(server.get());
}

TEST_F(SecurityTest, TlsWithTokensOnAllInterfacesStartsWithoutWarning) {
  std::vector<std::string> args = TlsArgs();
  args.insert(args.end(), {"--auth-tokens-file", Path("tokens"), "--bind", "0.0.0.0:0"});
  auto server = StartServer(args);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->Log().find("WARN"), std::string::npos) << server->Log();
  const std::string target = server->Address();
  auto with_token =
      grpc::CompositeChannelCredentials(TlsCreds(), grpc::AccessTokenCredentials(kGoodToken));
  ExpectAllOk(CallEverything(Channel(target, with_token)), "TLS + access token");
  ExpectAllUnauthenticated(CallEverything(Channel(target, TlsCreds())), "TLS, no token");
  grpc::Status st;
  EXPECT_TRUE(HealthServing(Channel(target, TlsCreds()), &st)) << Describe(st);
  StopServerExpectClean(server.get());
}

TEST_F(SecurityTest, BadTokensFilesStopStartUp) {
  std::string log;
  EXPECT_EQ(RunExpectingFailure({"--auth-tokens-file", Path("no-such-tokens")}, &log), 1);
  EXPECT_NE(log.find("cannot read the auth tokens file"), std::string::npos) << log;
  WriteFile(Path("empty-tokens"), "# only a comment\n\n   \n");
  EXPECT_EQ(RunExpectingFailure({"--auth-tokens-file", Path("empty-tokens")}, &log), 1);
  EXPECT_NE(log.find("holds no token"), std::string::npos) << log;
}

// ---- Non-loopback binds ------------------------------------------------------------

TEST_F(SecurityTest, NonLoopbackWithoutTlsAndTokensIsRefused) {
  const std::string msg = "refusing to listen on non-loopback address 0.0.0.0:0";
  std::string log;
  EXPECT_EQ(RunExpectingFailure({"--bind", "0.0.0.0:0"}, &log), 2);
  EXPECT_NE(log.find(msg), std::string::npos) << log;
  EXPECT_NE(log.find("--insecure"), std::string::npos) << log;
  // TLS alone or tokens alone is not enough.
  std::vector<std::string> tls_only = TlsArgs();
  tls_only.insert(tls_only.end(), {"--bind", "0.0.0.0:0"});
  EXPECT_EQ(RunExpectingFailure(tls_only, &log), 2);
  EXPECT_NE(log.find(msg), std::string::npos) << log;
  EXPECT_EQ(
      RunExpectingFailure({"--auth-tokens-file", Path("tokens"), "--bind", "0.0.0.0:0"}, &log), 2);
  EXPECT_NE(log.find(msg), std::string::npos) << log;
  EXPECT_EQ(RunExpectingFailure({"--bind", "[::]:0"}, &log), 2);
  EXPECT_NE(log.find("refusing"), std::string::npos) << log;
}

TEST_F(SecurityTest, InsecureFlagStartsWithAWarning) {
  auto server = StartServer({"--bind", "0.0.0.0:0", "--insecure"});
  ASSERT_NE(server, nullptr);
  const std::string log = server->Log();
  EXPECT_NE(log.find("WARN  --insecure: listening on non-loopback address 0.0.0.0:0 without TLS "
                     "or authentication"),
            std::string::npos)
      << log;
  grpc::Status st;
  EXPECT_TRUE(HealthServing(Channel(server->Address(), grpc::InsecureChannelCredentials()), &st))
      << Describe(st);
  StopServerExpectClean(server.get());
}

TEST_F(SecurityTest, LoopbackNeedsNoTlsOrTokens) {
  for (const char *bind : {"127.0.0.1:0", "localhost:0", "[::1]:0", "127.1.2.3:0"}) {
    auto server = StartServer({"--bind", bind});
    ASSERT_NE(server, nullptr) << bind;
    EXPECT_EQ(server->Log().find("WARN"), std::string::npos) << bind << "\n" << server->Log();
    StopServerExpectClean(server.get());
  }
}

}  // namespace
}  // namespace es_e2e
