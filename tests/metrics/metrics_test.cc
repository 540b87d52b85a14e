// The Prometheus endpoint (--metrics-addr): the real server, a few calls over
// gRPC, then a scrape over a plain TCP socket (no HTTP library, so the test
// sees exactly the bytes the server sends), and the endpoint's answers to
// requests that are wrong, oversized or too slow.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "es/error.h"
#include "tests/e2e/e2e_client.h"
#include "tests/e2e/server_process.h"

namespace es_e2e {
namespace {

constexpr char kAppendM[] = "eventstore.v1.EventStore/Append";

struct HttpReply {
  int status = 0;  // 0: no reply (connection closed or timed out)
  std::string head, body;
};

// Connects to 127.0.0.1:port, sends `request` (optionally in pieces after a
// pause), reads until the server closes (bounded by timeout_ms).
HttpReply Http(int port, const std::string &request, int timeout_ms = 5000) {
  HttpReply out;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return out;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof sa) != 0) {
    close(fd);
    return out;
  }
  size_t off = 0;
  while (off < request.size()) {
    ssize_t w = send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (w <= 0) break;  // the server may close early on an oversized request
    off += static_cast<size_t>(w);
  }
  std::string data;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) break;
    char buf[4096];
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r <= 0) break;
    data.append(buf, static_cast<size_t>(r));
  }
  close(fd);
  size_t end = data.find("\r\n\r\n");
  if (data.compare(0, 9, "HTTP/1.1 ") != 0 || end == std::string::npos) return out;
  out.status = atoi(data.c_str() + 9);
  out.head = data.substr(0, end);
  out.body = data.substr(end + 4);
  return out;
}

std::string Scrape(int port) {
  HttpReply r = Http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
  EXPECT_EQ(r.status, 200) << r.head;
  EXPECT_NE(r.head.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r.head;
  EXPECT_NE(r.head.find("Content-Length: " + std::to_string(r.body.size())), std::string::npos)
      << r.head;
  return r.body;
}

// The value of one series (exact name and labels), if present.
std::optional<double> Value(const std::string &body, const std::string &series) {
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return atof(line.c_str() + series.size() + 1);
  }
  return std::nullopt;
}

std::string Requests(const std::string &method, const std::string &code) {
  return "es_rpc_requests_total{method=\"" + method + "\",code=\"" + code + "\"}";
}

// Scrapes until every expectation holds (counters are bumped when a call's
// last batch completes, which may be just after the client saw its status).
bool ScrapeUntil(int port, const std::function<bool(const std::string &)> &ok, std::string *body,
                 int timeout_ms = 5000) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    *body = Scrape(port);
    if (ok(*body)) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char *t = getenv("TEST_TMPDIR");
    port_file_ = std::string(t != nullptr && t[0] ? t : "/tmp") + "/metrics-port-" +
                 std::to_string(getpid()) + "-" + std::to_string(counter_++);
    server_ = StartServer({"--metrics-addr", "127.0.0.1:0", "--metrics-port-file", port_file_});
    ASSERT_NE(server_, nullptr);
    std::ifstream in(port_file_);
    in >> metrics_port_;
    ASSERT_GT(metrics_port_, 0) << "no metrics port in " << port_file_;
    client_ = std::make_unique<Client>(Connect(server_->Address()));
  }
  void TearDown() override {
    client_.reset();
    if (server_) StopServerExpectClean(server_.get());
    unlink(port_file_.c_str());
  }

  static int counter_;
  std::string port_file_;
  int metrics_port_ = 0;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<Client> client_;
};
int MetricsTest::counter_ = 0;

TEST_F(MetricsTest, CountsCallsAppendsSubscriptionsAndHead) {
  std::string body = Scrape(metrics_port_);
  EXPECT_EQ(Value(body, "es_appends_total"), 0.0) << body;
  EXPECT_EQ(Value(body, "es_log_head_position"), 0.0) << body;
  EXPECT_EQ(Value(body, "es_subscriptions_active"), 0.0) << body;

  const std::string stream = UniqueName("metrics");
  for (int i = 0; i < 3; i++) client_->MustAppend(MakeAppend(stream, 2));
  v1::AppendRequest conflict = MakeAppend(stream, 1);
  conflict.set_expected_kind(v1::EXPECTED_NO_STREAM);
  v1::AppendResponse resp;
  EXPECT_EQ(client_->Append(conflict, &resp).error_code(), grpc::StatusCode::ABORTED);
  v1::ReadStreamResponse rs;
  v1::ReadStreamRequest rsr;
  rsr.set_stream_id(stream);
  EXPECT_TRUE(client_->ReadStream(rsr, &rs).ok());
  rsr.set_stream_id(UniqueName("absent"));
  EXPECT_EQ(client_->ReadStream(rsr, &rs).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(client_->Serving());

  SubscriptionReader sub(client_->channel(), v1::SubscribeRequest());
  sub.StartReading();
  ASSERT_TRUE(sub.WaitForCaughtUp(10000));

  ASSERT_TRUE(ScrapeUntil(
      metrics_port_,
      [](const std::string &b) {
        return Value(b, Requests(kAppendM, "OK")) == 3.0 &&
               Value(b, Requests(kAppendM, "ABORTED")) == 1.0 &&
               Value(b, "es_subscriptions_active") == 1.0;
      },
      &body))
      << body;
  EXPECT_EQ(Value(body, Requests("eventstore.v1.EventStore/ReadStream", "OK")), 1.0) << body;
  EXPECT_EQ(Value(body, Requests("eventstore.v1.EventStore/ReadStream", "NOT_FOUND")), 1.0) << body;
  EXPECT_EQ(Value(body, Requests("grpc.health.v1.Health/Check", "OK")), 1.0) << body;
  EXPECT_EQ(Value(body, "es_appends_total"), 3.0) << body;
  EXPECT_EQ(Value(body, "es_events_appended_total"), 6.0) << body;
  EXPECT_EQ(Value(body, "es_log_head_position"), 6.0) << body;
  // The backend's own figures (backend.h `stats`): the memory store's.
  EXPECT_EQ(Value(body, "es_backend_memory_events"), 6.0) << body;
  EXPECT_GT(Value(body, "es_backend_memory_bytes"), Value(body, "es_backend_memory_payload_bytes"))
      << body;
  EXPECT_EQ(Value(body, "es_subscription_lag_events"), 0.0) << body;
  EXPECT_EQ(Value(body, "es_backend_errors_total{code=\"ES_EUNAVAIL\"}"), 0.0) << body;

  // The Append histogram: cumulative buckets ending in +Inf = count = 4.
  const std::string h = "es_rpc_duration_seconds";
  const std::string m = "method=\"" + std::string(kAppendM) + "\"";
  EXPECT_EQ(Value(body, h + "_count{" + m + "}"), 4.0) << body;
  EXPECT_EQ(Value(body, h + "_bucket{" + m + ",le=\"+Inf\"}"), 4.0) << body;
  EXPECT_EQ(Value(body, h + "_bucket{" + m + ",le=\"10\"}"), 4.0) << body;
  auto sum = Value(body, h + "_sum{" + m + "}");
  ASSERT_TRUE(sum.has_value()) << body;
  EXPECT_GT(*sum, 0.0);
  EXPECT_LT(*sum, 40.0);
  double prev = 0;
  for (const char *le : {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                         "0.25", "0.5", "1", "2.5", "5", "10"}) {
    auto v = Value(body, h + "_bucket{" + m + ",le=\"" + le + "\"}");
    ASSERT_TRUE(v.has_value()) << le << "\n" << body;
    EXPECT_GE(*v, prev) << le;
    prev = *v;
  }

  // More events: the live subscription follows, the head moves.
  client_->MustAppend(MakeAppend(stream, 4));
  ASSERT_TRUE(sub.WaitForPosition(10, 10000));
  ASSERT_TRUE(ScrapeUntil(
      metrics_port_,
      [](const std::string &b) {
        return Value(b, "es_log_head_position") == 10.0 &&
               Value(b, "es_subscription_lag_events") == 0.0;
      },
      &body))
      << body;
  EXPECT_EQ(Value(body, "es_events_appended_total"), 10.0) << body;

  // The subscription ends: the gauge drops, the call is counted as CANCELLED.
  sub.Cancel();
  sub.Join();
  ASSERT_TRUE(ScrapeUntil(
      metrics_port_,
      [](const std::string &b) {
        return Value(b, "es_subscriptions_active") == 0.0 &&
               Value(b, Requests("eventstore.v1.EventStore/Subscribe", "CANCELLED")) == 1.0;
      },
      &body))
      << body;
}

// es_backend_errors_total has a series for every code of the error list
// (core/include/es/error.h), at zero until the first failure: a code added to
// the list shows up without a second table in the server to keep in step.
TEST_F(MetricsTest, BackendErrorsHaveASeriesForEveryErrorCode) {
  const std::string body = Scrape(metrics_port_);
  const std::vector<std::string> names = {
#define ES_TEST_ERRNAME(name, value, text) "ES_" #name,
      ES_ERRNO_MAP(ES_TEST_ERRNAME)
#undef ES_TEST_ERRNAME
  };
  for (const std::string &name : names)
    EXPECT_EQ(Value(body, "es_backend_errors_total{code=\"" + name + "\"}"), 0.0) << name << "\n"
                                                                                  << body;
  EXPECT_EQ(Value(body, "es_backend_errors_total{code=\"other\"}"), 0.0) << body;
}

TEST_F(MetricsTest, StalledSubscriberShowsLag) {
  const std::string stream = UniqueName("lag");
  // A subscriber that never reads: the server stops at HTTP/2 flow control
  // while the log keeps growing (about 8 MB of payload).
  SubscriptionReader stalled(client_->channel(), v1::SubscribeRequest());
  for (int i = 0; i < 20; i++) {
    v1::AppendRequest req = MakeAppend(stream, 100);
    for (auto &e : *req.mutable_events()) e.set_payload(std::string(4096, 'x'));
    client_->MustAppend(req);
  }
  std::string body;
  EXPECT_TRUE(ScrapeUntil(
      metrics_port_,
      [](const std::string &b) {
        auto lag = Value(b, "es_subscription_lag_events");
        return Value(b, "es_subscriptions_active") == 1.0 && lag && *lag > 0;
      },
      &body))
      << body;
  auto lag = Value(body, "es_subscription_lag_events");
  auto max = Value(body, "es_subscription_lag_events_max");
  ASSERT_TRUE(lag && max) << body;
  EXPECT_LE(*lag, 2000.0);
  EXPECT_EQ(*lag, *max) << "one subscription: sum = max";
  EXPECT_EQ(Value(body, "es_log_head_position"), 2000.0) << body;
  stalled.Cancel();
  stalled.Join();
}

// Ten live subscribers: the live window reads each new event from the backend
// once for all of them, and they read pages from the window, not storage.
TEST_F(MetricsTest, LiveWindowReadsEachEventOnceForAllSubscribers) {
  std::string body = Scrape(metrics_port_);
  EXPECT_EQ(Value(body, "es_live_window_events_read_total"), 0.0) << body;
  EXPECT_EQ(Value(body, "es_live_window_events"), 0.0) << body;
  v1::SubscribeRequest req;
  req.set_from_end(true);
  req.set_max_batch(100);
  std::vector<std::unique_ptr<SubscriptionReader>> subs;
  for (int i = 0; i < 10; i++) {
    subs.push_back(std::make_unique<SubscriptionReader>(Connect(server_->Address()), req));
    subs.back()->StartReading();
  }
  for (auto &s : subs) ASSERT_TRUE(s->WaitForCaughtUp(10000));
  const std::string stream = UniqueName("window");
  for (int i = 0; i < 100; i++) {
    client_->MustAppend(MakeAppend(stream, 2));
    // Let the subscribers keep up, so that they read the window.
    if (i % 10 == 9) ASSERT_TRUE(subs[0]->WaitForPosition(2 * (i + 1), 5000));
  }
  for (auto &s : subs) ASSERT_TRUE(s->WaitForPosition(200, 10000));
  ASSERT_TRUE(ScrapeUntil(
      metrics_port_,
      [](const std::string &b) {
        return Value(b, "es_subscription_events_total").value_or(0) >= 2000;
      },
      &body))
      << body;
  // The window starts at the head when the first subscriber arrives (its
  // filler may take a moment): it read each event from then on exactly once.
  double held = Value(body, "es_live_window_events").value_or(-1);
  EXPECT_EQ(Value(body, "es_live_window_events_read_total"), held) << body;
  EXPECT_GE(held, 100.0) << body;
  EXPECT_EQ(Value(body, "es_live_window_first_position").value_or(-1) + held - 1, 200.0) << body;
  EXPECT_GT(Value(body, "es_live_window_bytes").value_or(-1), held * 40) << body;
  EXPECT_EQ(Value(body, "es_subscription_events_total"), 2000.0) << body;
  EXPECT_LE(Value(body, "es_subscription_messages_total"), 2000.0) << body;
  double window = Value(body, "es_subscription_pages_total{source=\"window\"}").value_or(-1);
  double backend = Value(body, "es_subscription_pages_total{source=\"backend\"}").value_or(-1);
  EXPECT_GE(backend, 0.0) << body;
  EXPECT_GT(window, 100.0) << body;
  // Storage only where a subscription starts, or where it runs ahead of the
  // window (reads from the end, before the window holds what it asks for).
  EXPECT_LT(backend, window / 4) << body;
  EXPECT_EQ(Value(body, "es_live_window_read_errors_total"), 0.0) << body;
}

TEST_F(MetricsTest, AnswersOnlyGetMetrics) {
  EXPECT_EQ(Http(metrics_port_, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").status, 404);
  EXPECT_EQ(Http(metrics_port_, "GET /metricsx HTTP/1.1\r\n\r\n").status, 404);
  EXPECT_EQ(Http(metrics_port_, "GET /metrics?x=1 HTTP/1.1\r\n\r\n").status, 200);
  HttpReply post = Http(metrics_port_, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.status, 405);
  EXPECT_NE(post.head.find("Allow: GET"), std::string::npos) << post.head;
  HttpReply head = Http(metrics_port_, "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(head.status, 200);
  EXPECT_TRUE(head.body.empty());
  EXPECT_EQ(Http(metrics_port_, "garbage\r\n\r\n").status, 400);
  EXPECT_EQ(Http(metrics_port_, "GET /metrics SPDY/3\r\n\r\n").status, 400);
  EXPECT_EQ(Http(metrics_port_, std::string("GET /metr\0ics HTTP/1.1\r\n\r\n", 26)).status, 400);
}

TEST_F(MetricsTest, OversizedAndSlowRequestsAreCutOff) {
  // 64 KiB of headers without an end: refused once 8 KiB have arrived.
  std::string big = "GET /metrics HTTP/1.1\r\nX: " + std::string(64 << 10, 'a');
  HttpReply r = Http(metrics_port_, big);
  EXPECT_EQ(r.status, 431);

  // A client that connects and sends nothing is dropped after the read
  // timeout; the endpoint keeps serving afterwards.
  auto t0 = std::chrono::steady_clock::now();
  HttpReply silent = Http(metrics_port_, "GET /metrics HTTP/1.1\r\n", 10000);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(silent.status, 0);
  EXPECT_LT(took, std::chrono::seconds(5));
  EXPECT_TRUE(Value(Scrape(metrics_port_), "es_appends_total").has_value());
  // And the gRPC side never noticed.
  EXPECT_TRUE(client_->Serving());
}

// The LMDB backend's figures (docs/operations.md): commits, what they made
// durable, group sizes, commit time and the map, on a server of the default
// backend.
TEST(LmdbMetricsTest, CommitsGroupsTimesAndTheMapAreExposed) {
  const char *t = getenv("TEST_TMPDIR");
  std::string port_file = std::string(t != nullptr && t[0] ? t : "/tmp") + "/lmdb-metrics-port-" +
                          std::to_string(getpid());
  auto server = StartServer(
      {"--backend", "lmdb", "--metrics-addr", "127.0.0.1:0", "--metrics-port-file", port_file});
  ASSERT_NE(server, nullptr);
  int port = 0;
  std::ifstream(port_file) >> port;
  ASSERT_GT(port, 0);
  Client client(Connect(server->Address()));
  const std::string stream = UniqueName("lmdb-metrics");
  for (int i = 0; i < 5; i++) client.MustAppend(MakeAppend(stream, 2));
  std::string body;
  ASSERT_TRUE(ScrapeUntil(
      port, [](const std::string &b) { return Value(b, "es_backend_lmdb_events") == 10.0; }, &body))
      << body;
  double commits = Value(body, "es_backend_lmdb_commits_total").value_or(0);
  EXPECT_GE(commits, 1.0) << body;
  EXPECT_LE(commits, 5.0) << body;
  EXPECT_EQ(Value(body, "es_backend_lmdb_committed_appends_total"), 5.0) << body;
  EXPECT_EQ(Value(body, "es_backend_lmdb_committed_events_total"), 10.0) << body;
  EXPECT_GE(Value(body, "es_backend_lmdb_commit_group_appends_total"), 5.0) << body;
  EXPECT_GE(Value(body, "es_backend_lmdb_commit_group_max"), 1.0) << body;
  EXPECT_GT(Value(body, "es_backend_lmdb_commit_microseconds_total"), 0.0) << body;
  EXPECT_GT(Value(body, "es_backend_lmdb_commit_microseconds_max"), 0.0) << body;
  EXPECT_GT(Value(body, "es_backend_lmdb_map_bytes"), 0.0) << body;
  EXPECT_GT(Value(body, "es_backend_lmdb_map_used_bytes"), 0.0) << body;
  EXPECT_EQ(Value(body, "es_backend_lmdb_writes_failed"), 0.0) << body;
  EXPECT_EQ(Value(body, "es_backend_lmdb_no_space_total"), 0.0) << body;
  StopServerExpectClean(server.get());
  unlink(port_file.c_str());
}

}  // namespace
}  // namespace es_e2e
