// See e2e_client.h.
#include "tests/e2e/e2e_client.h"

#include <grpc/grpc.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <sstream>

namespace es_e2e {

// gRPC stays initialized for the whole test process. Otherwise the library
// shuts down whenever the last channel goes away (between test suites), and
// that shutdown was seen to block ~10 s on a connection whose oversized
// request the server had refused.
static const bool grpc_kept_alive = [] {
  grpc_init();
  return true;
}();

// ---- Servers -------------------------------------------------------------

std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> args) {
  auto server = std::make_unique<ServerProcess>(std::move(args));
  std::string error;
  if (!server->Start(&error)) {
    ADD_FAILURE() << "server did not start: " << error;
    return nullptr;
  }
  return server;
}

void StopServerExpectClean(ServerProcess *server, std::chrono::milliseconds grace) {
  if (server == nullptr) return;
  if (server->Exited()) {
    EXPECT_TRUE(server->ExitedCleanly())
        << "server had already exited: " << server->DescribeExit() << "\nlog:\n"
        << server->LogTail();
    return;
  }
  bool by_itself = server->Stop(grace);
  EXPECT_TRUE(by_itself) << "server did not exit within " << grace.count()
                         << " ms of SIGTERM; killed\nlog:\n"
                         << server->LogTail();
  if (by_itself) {
    EXPECT_TRUE(server->ExitedCleanly())
        << "server exit after SIGTERM: " << server->DescribeExit() << "\nlog:\n"
        << server->LogTail();
  }
}

// ---- Channels and calls -----------------------------------------------------

std::shared_ptr<grpc::Channel> Connect(const std::string &address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    ADD_FAILURE() << "could not connect to " << address << " within 10 s";
  }
  return channel;
}

void SetDeadline(grpc::ClientContext *ctx, int timeout_ms) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms));
}

std::string CodeName(grpc::StatusCode code) {
  static const char *const names[] = {"OK",
                                      "CANCELLED",
                                      "UNKNOWN",
                                      "INVALID_ARGUMENT",
                                      "DEADLINE_EXCEEDED",
                                      "NOT_FOUND",
                                      "ALREADY_EXISTS",
                                      "PERMISSION_DENIED",
                                      "RESOURCE_EXHAUSTED",
                                      "FAILED_PRECONDITION",
                                      "ABORTED",
                                      "OUT_OF_RANGE",
                                      "UNIMPLEMENTED",
                                      "INTERNAL",
                                      "UNAVAILABLE",
                                      "DATA_LOSS",
                                      "UNAUTHENTICATED"};
  int c = static_cast<int>(code);
  if (c >= 0 && c < 17) return names[c];
  return "CODE_" + std::to_string(c);
}

std::string Describe(const grpc::Status &status) {
  return CodeName(status.error_code()) + ": \"" + status.error_message() + "\"";
}

std::optional<std::string> Trailer(const grpc::ClientContext &ctx, const std::string &key) {
  const auto &md = ctx.GetServerTrailingMetadata();
  auto it = md.find(key);
  if (it == md.end()) return std::nullopt;
  return std::string(it->second.data(), it->second.size());
}

// ---- Data -----------------------------------------------------------------

std::string NewUuid() {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ (uint64_t)getpid() << 20);
  uint64_t hi = rng(), lo = rng();
  hi = (hi & ~0xF000ULL) | 0x4000ULL;        // version 4
  lo = (lo & ~(3ULL << 62)) | (2ULL << 62);  // variant 10
  char buf[37];
  snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(hi >> 32),
           (unsigned)((hi >> 16) & 0xFFFF), (unsigned)(hi & 0xFFFF), (unsigned)(lo >> 48),
           (unsigned long long)(lo & 0xFFFFFFFFFFFFULL));
  return buf;
}

bool IsCanonicalUuid(const std::string &s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

std::string UniqueName(const std::string &prefix) {
  static std::atomic<uint64_t> counter{0};
  return prefix + "-" + std::to_string(getpid()) + "-" + std::to_string(counter.fetch_add(1));
}

BookingRace RunBookingRace(const std::vector<std::string> &addresses, int seats, int bookers,
                           const std::string &show_tag) {
  const size_t kChannels = 10;
  const int kMaxAttempts = 1000;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (size_t i = 0; i < kChannels; i++)
    channels.push_back(Connect(addresses[i % addresses.size()]));
  std::atomic<int> booked{0}, conflicts{0}, sold_out{0};
  BookingRace race;
  race.problems.assign(static_cast<size_t>(bookers), "");
  v1::Filter show;
  v1::QueryItem *item = show.add_items();
  item->add_event_types("SeatBooked");
  item->add_tags(show_tag);
  std::vector<std::thread> threads;
  for (int b = 0; b < bookers; b++) {
    threads.emplace_back([&, b] {
      std::string &problem = race.problems[static_cast<size_t>(b)];
      Client c(channels[static_cast<size_t>(b) % kChannels]);
      for (int attempt = 0; attempt < kMaxAttempts; attempt++) {
        // Read the decision's events, and the head they were read at.
        uint64_t seats_taken = 0, head = 0, from = 1;
        for (int page = 0; page < 100; page++) {
          v1::ReadAllRequest rq;
          rq.set_from_position(from);
          *rq.mutable_filter() = show;
          v1::ReadAllResponse rs;
          grpc::Status st = c.ReadAll(rq, &rs);
          if (!st.ok()) {
            problem = "ReadAll: " + Describe(st);
            return;
          }
          if (page == 0) head = rs.head_position();
          seats_taken += static_cast<uint64_t>(rs.events_size());
          from = rs.next_position();
          if (rs.is_end()) break;
        }
        if (seats_taken >= static_cast<uint64_t>(seats)) {
          sold_out++;
          return;
        }
        v1::AppendRequest req;
        req.set_stream_id("booking-" + show_tag + "-" + std::to_string(b));
        v1::EventData *e = req.add_events();
        *e = MakeEvent("SeatBooked", "p");
        e->add_tags(show_tag);
        e->add_tags("customer:" + std::to_string(b));
        *req.mutable_condition()->mutable_fail_if_events_match() = show.items();
        req.mutable_condition()->set_after(head);
        grpc::ClientContext ctx;
        v1::AppendResponse resp;
        grpc::Status st = c.Append(req, &resp, &ctx);
        if (st.ok()) {
          booked++;
          return;  // one booking each
        }
        if (st.error_code() != grpc::StatusCode::ABORTED ||
            !Trailer(ctx, "es-condition-position")) {
          problem = "Append: " + Describe(st);
          return;
        }
        conflicts++;
      }
      problem = "no decision after many attempts";
    });
  }
  for (auto &t : threads) t.join();
  race.booked = booked.load();
  race.conflicts = conflicts.load();
  race.sold_out = sold_out.load();
  return race;
}

std::string TempDir(const char *name) {
  const char *tmp = getenv("TEST_TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + name + ".XXXXXX";
  EXPECT_NE(nullptr, mkdtemp(&templ[0])) << templ << ": " << strerror(errno);
  return templ;
}

v1::EventData MakeEvent(const std::string &type, const std::string &payload,
                        const std::string &id) {
  v1::EventData e;
  e.set_event_id(id);
  e.set_event_type(type);
  e.set_payload(payload);
  return e;
}

v1::AppendRequest MakeAppend(const std::string &stream, int n_events, const std::string &type) {
  v1::AppendRequest req;
  req.set_stream_id(stream);
  for (int i = 0; i < n_events; ++i)
    *req.add_events() = MakeEvent(type, "payload-" + std::to_string(i));
  return req;
}

std::string AllBytes() {
  std::string s;
  for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
  return s;
}

std::string Repeat(char c, size_t n) {
  return std::string(n, c);
}

// ---- Raw protobuf bytes -----------------------------------------------------

void ProtoWriter::Raw(uint64_t v) {
  while (v >= 0x80) {
    data_.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  data_.push_back(static_cast<char>(v));
}

ProtoWriter &ProtoWriter::Varint(int field, uint64_t value) {
  Raw(static_cast<uint64_t>(field) << 3 | 0);
  Raw(value);
  return *this;
}

ProtoWriter &ProtoWriter::Bytes(int field, const std::string &bytes) {
  Raw(static_cast<uint64_t>(field) << 3 | 2);
  Raw(bytes.size());
  data_ += bytes;
  return *this;
}

ProtoWriter &ProtoWriter::Message(int field, const ProtoWriter &message) {
  return Bytes(field, message.data());
}

std::string Patch(std::string bytes, const std::string &placeholder,
                  const std::string &replacement) {
  EXPECT_EQ(placeholder.size(), replacement.size()) << "Patch needs equal sizes";
  size_t at = bytes.find(placeholder);
  EXPECT_NE(at, std::string::npos) << "placeholder not found";
  if (at == std::string::npos || placeholder.size() != replacement.size()) return bytes;
  EXPECT_EQ(bytes.find(placeholder, at + 1), std::string::npos) << "placeholder found twice";
  bytes.replace(at, placeholder.size(), replacement);
  return bytes;
}

namespace {

std::string Flatten(const grpc::ByteBuffer &bb) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!bb.Dump(&slices).ok()) return out;
  for (const grpc::Slice &s : slices)
    out.append(reinterpret_cast<const char *>(s.begin()), s.size());
  return out;
}

grpc::ByteBuffer ToByteBuffer(const std::string &bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace

grpc::Status RawUnary(const std::shared_ptr<grpc::Channel> &channel, const std::string &method,
                      const std::string &request, std::string *response, int timeout_ms) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_ms);
  grpc::ByteBuffer req = ToByteBuffer(request);
  grpc::ByteBuffer resp;
  auto done = std::make_shared<std::promise<grpc::Status>>();
  std::future<grpc::Status> fut = done->get_future();
  stub.UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp,
                 [done](grpc::Status s) { done->set_value(std::move(s)); });
  if (fut.wait_for(std::chrono::milliseconds(timeout_ms + 5000)) != std::future_status::ready) {
    ctx.TryCancel();
    if (fut.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      // The callback still refers to this frame; nothing safe is left to do.
      fprintf(stderr, "RawUnary %s: call did not complete after cancel\n", method.c_str());
      abort();
    }
  }
  grpc::Status status = fut.get();
  if (response != nullptr) *response = Flatten(resp);
  return status;
}

RawStream::RawStream(const std::shared_ptr<grpc::Channel> &channel, const std::string &method,
                     int timeout_ms)
    : stub_(channel) {
  deadline_ = std::chrono::system_clock::now() + std::chrono::milliseconds(timeout_ms);
  ctx_.set_deadline(deadline_);
  call_ = stub_.PrepareCall(&ctx_, method, &cq_);
  call_->StartCall(reinterpret_cast<void *>(1));
  started_ = Wait(reinterpret_cast<void *>(1));
}

RawStream::~RawStream() {
  if (call_ != nullptr && !finished_) {
    ctx_.TryCancel();
    Finish();
  }
  cq_.Shutdown();
  void *tag;
  bool ok;
  while (cq_.Next(&tag, &ok)) {
  }
}

bool RawStream::Wait(void *tag) {
  auto limit = deadline_ + std::chrono::seconds(5);
  for (int attempt = 0; attempt < 2; ++attempt) {
    void *got = nullptr;
    bool ok = false;
    switch (cq_.AsyncNext(&got, &ok, limit)) {
      case grpc::CompletionQueue::GOT_EVENT:
        EXPECT_EQ(got, tag) << "unexpected completion";
        return ok;
      case grpc::CompletionQueue::TIMEOUT:
        ctx_.TryCancel();
        limit = std::chrono::system_clock::now() + std::chrono::seconds(10);
        break;
      case grpc::CompletionQueue::SHUTDOWN:
        return false;
    }
  }
  fprintf(stderr, "RawStream: operation did not complete after cancel\n");
  abort();
}

bool RawStream::Write(const std::string &bytes) {
  grpc::ByteBuffer bb = ToByteBuffer(bytes);
  call_->Write(bb, reinterpret_cast<void *>(2));
  return Wait(reinterpret_cast<void *>(2));
}

bool RawStream::WritesDone() {
  call_->WritesDone(reinterpret_cast<void *>(4));
  return Wait(reinterpret_cast<void *>(4));
}

bool RawStream::Read(std::string *bytes) {
  grpc::ByteBuffer bb;
  call_->Read(&bb, reinterpret_cast<void *>(3));
  if (!Wait(reinterpret_cast<void *>(3))) return false;
  *bytes = Flatten(bb);
  return true;
}

grpc::Status RawStream::Finish() {
  if (finished_) return status_;
  call_->Finish(&status_, reinterpret_cast<void *>(5));
  Wait(reinterpret_cast<void *>(5));
  finished_ = true;
  return status_;
}

// ---- Typed client -----------------------------------------------------------

Client::Client(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)),
      stub_(v1::EventStore::NewStub(channel_)),
      health_(health::Health::NewStub(channel_)) {}

grpc::Status Client::Append(const v1::AppendRequest &req, v1::AppendResponse *resp,
                            grpc::ClientContext *ctx) {
  grpc::ClientContext local;
  if (ctx == nullptr) ctx = &local;
  SetDeadline(ctx);
  return stub_->Append(ctx, req, resp);
}

grpc::Status Client::ReadStream(const v1::ReadStreamRequest &req, v1::ReadStreamResponse *resp) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  return stub_->ReadStream(&ctx, req, resp);
}

grpc::Status Client::ReadAll(const v1::ReadAllRequest &req, v1::ReadAllResponse *resp) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  return stub_->ReadAll(&ctx, req, resp);
}

v1::AppendResponse Client::MustAppend(const v1::AppendRequest &req) {
  v1::AppendResponse resp;
  grpc::Status st = Append(req, &resp);
  EXPECT_TRUE(st.ok()) << "Append to '" << req.stream_id() << "' failed: " << Describe(st);
  return resp;
}

uint64_t Client::Head() {
  v1::ReadAllRequest req;
  req.set_direction(v1::BACKWARD);
  req.set_max_count(1);
  v1::ReadAllResponse resp;
  grpc::Status st = ReadAll(req, &resp);
  EXPECT_TRUE(st.ok()) << "ReadAll for the head failed: " << Describe(st);
  return st.ok() ? resp.head_position() : 0;
}

std::vector<v1::RecordedEvent> Client::ReadWholeStream(const std::string &stream) {
  std::vector<v1::RecordedEvent> out;
  uint64_t from = 1;
  for (int page = 0; page < 100000; ++page) {
    v1::ReadStreamRequest req;
    req.set_stream_id(stream);
    req.set_from_version(from);
    req.set_max_count(1000);
    v1::ReadStreamResponse resp;
    grpc::Status st = ReadStream(req, &resp);
    if (st.error_code() == grpc::StatusCode::NOT_FOUND && out.empty()) return out;
    if (!st.ok()) {
      ADD_FAILURE() << "ReadStream '" << stream << "' from " << from << ": " << Describe(st);
      return out;
    }
    for (const auto &e : resp.events()) out.push_back(e);
    if (resp.is_end()) return out;
    if (resp.next_version() <= from) {
      ADD_FAILURE() << "ReadStream paging does not advance: from " << from << " next "
                    << resp.next_version();
      return out;
    }
    from = resp.next_version();
  }
  ADD_FAILURE() << "ReadStream paging did not end";
  return out;
}

std::vector<v1::RecordedEvent> Client::ReadWholeLog(const v1::Filter *filter, uint32_t page_size) {
  std::vector<v1::RecordedEvent> out;
  uint64_t from = 1;
  for (int page = 0; page < 1000000; ++page) {
    v1::ReadAllRequest req;
    req.set_from_position(from);
    req.set_max_count(page_size);
    if (filter != nullptr) *req.mutable_filter() = *filter;
    v1::ReadAllResponse resp;
    grpc::Status st = ReadAll(req, &resp);
    if (!st.ok()) {
      ADD_FAILURE() << "ReadAll from " << from << ": " << Describe(st);
      return out;
    }
    for (const auto &e : resp.events()) out.push_back(e);
    if (resp.is_end()) return out;
    if (resp.next_position() <= from) {
      ADD_FAILURE() << "ReadAll paging does not advance: from " << from << " next "
                    << resp.next_position();
      return out;
    }
    from = resp.next_position();
  }
  ADD_FAILURE() << "ReadAll paging did not end";
  return out;
}

grpc::Status Client::HealthCheck(const std::string &service,
                                 health::HealthCheckResponse::ServingStatus *out, int timeout_ms) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_ms);
  health::HealthCheckRequest req;
  req.set_service(service);
  health::HealthCheckResponse resp;
  grpc::Status st = health_->Check(&ctx, req, &resp);
  if (out != nullptr) *out = resp.status();
  return st;
}

bool Client::Serving() {
  health::HealthCheckResponse::ServingStatus s;
  grpc::Status st = HealthCheck("", &s);
  return st.ok() && s == health::HealthCheckResponse::SERVING;
}

// ---- Subscriptions ----------------------------------------------------------

SubscriptionReader::SubscriptionReader(const std::shared_ptr<grpc::Channel> &channel,
                                       const v1::SubscribeRequest &req, int timeout_ms,
                                       bool keep_payloads)
    : stub_(v1::EventStore::NewStub(channel)), keep_payloads_(keep_payloads) {
  SetDeadline(&ctx_, timeout_ms);
  reader_ = stub_->Subscribe(&ctx_, req);
}

SubscriptionReader::~SubscriptionReader() {
  if (!joined_) {
    Cancel();
    Join(10000);
  }
}

void SubscriptionReader::StartReading() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Run(); });
}

void SubscriptionReader::Run() {
  v1::SubscribeResponse resp;
  uint64_t n = 0;
  while (reader_->Read(&resp)) {
    int64_t delay = read_delay_us_.load();
    if (delay > 0 && ++n % read_delay_every_.load() == 0)
      std::this_thread::sleep_for(std::chrono::microseconds(delay));
    SubMsg m{SubMsg::kUnset, 0, {}};
    if (resp.message_case() == v1::SubscribeResponse::kBatch) {
      // Each event of a batch becomes a message of its own, in order.
      {
        std::lock_guard<std::mutex> lock(mu_);
        batch_sizes_.push_back(static_cast<size_t>(resp.batch().events_size()));
        for (auto &ev : *resp.mutable_batch()->mutable_events()) {
          SubMsg e{SubMsg::kEvent, ev.global_position(), std::move(ev)};
          if (!keep_payloads_) e.event.clear_payload();
          ++events_;
          last_position_ = std::max(last_position_, e.position);
          msgs_.push_back(std::move(e));
        }
      }
      cv_.notify_all();
      resp.Clear();
      continue;
    }
    switch (resp.message_case()) {
      case v1::SubscribeResponse::kEvent:
        ++single_events_;
        m.kind = SubMsg::kEvent;
        m.position = resp.event().global_position();
        m.event = std::move(*resp.mutable_event());
        if (!keep_payloads_) m.event.clear_payload();
        break;
      case v1::SubscribeResponse::kCaughtUp:
        m.kind = SubMsg::kCaughtUp;
        m.position = resp.caught_up().head_position();
        break;
      case v1::SubscribeResponse::kCheckpoint:
        m.kind = SubMsg::kCheckpoint;
        m.position = resp.checkpoint().position();
        break;
      case v1::SubscribeResponse::kFellBehind:
        m.kind = SubMsg::kFellBehind;
        m.position = resp.fell_behind().head_position();
        break;
      default:
        break;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (m.kind == SubMsg::kEvent) ++events_;
      if (m.kind == SubMsg::kCaughtUp) caught_up_ = true;
      if (m.kind == SubMsg::kEvent || m.kind == SubMsg::kCheckpoint)
        last_position_ = std::max(last_position_, m.position);
      msgs_.push_back(std::move(m));
    }
    cv_.notify_all();
    resp.Clear();
  }
  grpc::Status st = reader_->Finish();
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = st;
    done_ = true;
  }
  cv_.notify_all();
}

bool SubscriptionReader::WaitUntil(const std::function<bool()> &cond, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return cond() || done_;
  }) && cond();
}

bool SubscriptionReader::WaitForCaughtUp(int timeout_ms) {
  return WaitUntil([this] { return caught_up_; }, timeout_ms);
}

bool SubscriptionReader::WaitForPosition(uint64_t pos, int timeout_ms) {
  return WaitUntil([this, pos] { return last_position_ >= pos; }, timeout_ms);
}

bool SubscriptionReader::WaitForCount(size_t events, int timeout_ms) {
  return WaitUntil([this, events] { return events_ >= events; }, timeout_ms);
}

bool SubscriptionReader::WaitForEnd(int timeout_ms) {
  return WaitUntil([this] { return done_; }, timeout_ms);
}

void SubscriptionReader::Cancel() {
  ctx_.TryCancel();
}

grpc::Status SubscriptionReader::Join(int timeout_ms) {
  if (joined_) return status_;
  StartReading();  // a stalled reader drains now, so Finish can complete
  if (!WaitForEnd(timeout_ms)) {
    Cancel();
    // The call's own deadline bounds this as well.
  }
  thread_.join();
  joined_ = true;
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

std::vector<size_t> SubscriptionReader::BatchSizes() {
  std::lock_guard<std::mutex> lock(mu_);
  return batch_sizes_;
}

size_t SubscriptionReader::SingleEventMessages() {
  std::lock_guard<std::mutex> lock(mu_);
  return single_events_;
}

std::vector<SubMsg> SubscriptionReader::Messages() {
  std::lock_guard<std::mutex> lock(mu_);
  return msgs_;
}

size_t SubscriptionReader::EventCount() {
  std::lock_guard<std::mutex> lock(mu_);
  return events_;
}

std::string VerifySubscription(const std::vector<SubMsg> &msgs,
                               const std::vector<uint64_t> &expected,
                               const std::vector<uint64_t> *checkpoints) {
  std::ostringstream problems;
  int reported = 0;
  auto problem = [&](const std::string &s) {
    if (reported++ < 10) problems << "  " << s << "\n";
  };
  std::vector<uint64_t> got, cps;
  uint64_t last = 0;
  std::vector<size_t> caught_up_at;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const SubMsg &m = msgs[i];
    if (m.kind == SubMsg::kEvent || m.kind == SubMsg::kCheckpoint) {
      if (m.position <= last)
        problem("message " + std::to_string(i) + " at position " + std::to_string(m.position) +
                " after " + std::to_string(last) + " (not increasing)");
      last = std::max(last, m.position);
    }
    if (m.kind == SubMsg::kEvent) got.push_back(m.position);
    if (m.kind == SubMsg::kCheckpoint) cps.push_back(m.position);
    if (m.kind == SubMsg::kCaughtUp) caught_up_at.push_back(i);
    if (m.kind == SubMsg::kUnset) problem("empty SubscribeResponse");
  }
  if (caught_up_at.empty()) problem("no CaughtUp received");
  for (size_t idx : caught_up_at) {
    uint64_t head = msgs[idx].position;
    for (size_t i = 0; i < msgs.size(); ++i) {
      if (msgs[i].kind != SubMsg::kEvent) continue;
      if (i < idx && msgs[i].position > head) {
        problem("event " + std::to_string(msgs[i].position) +
                " delivered before CaughtUp{head=" + std::to_string(head) + "}");
        break;
      }
      if (i > idx && msgs[i].position <= head) {
        problem("event " + std::to_string(msgs[i].position) +
                " delivered after CaughtUp{head=" + std::to_string(head) + "}");
        break;
      }
    }
  }
  std::vector<uint64_t> sorted_got = got;
  std::sort(sorted_got.begin(), sorted_got.end());
  std::vector<uint64_t> missing, extra;
  std::set_difference(expected.begin(), expected.end(), sorted_got.begin(), sorted_got.end(),
                      std::back_inserter(missing));
  std::set_difference(sorted_got.begin(), sorted_got.end(), expected.begin(), expected.end(),
                      std::back_inserter(extra));
  auto list = [](const std::vector<uint64_t> &v) {
    std::string s;
    for (size_t i = 0; i < v.size() && i < 10; ++i) s += (i ? "," : "") + std::to_string(v[i]);
    if (v.size() > 10) s += ",...";
    return s;
  };
  if (!missing.empty())
    problem(std::to_string(missing.size()) + " expected events missing: " + list(missing));
  if (!extra.empty())
    problem(std::to_string(extra.size()) + " unexpected (or duplicated) events: " + list(extra));
  if (got.size() != expected.size())
    problem("received " + std::to_string(got.size()) + " events, expected " +
            std::to_string(expected.size()));
  if (checkpoints != nullptr && cps != *checkpoints)
    problem("checkpoints " + list(cps) + " (" + std::to_string(cps.size()) + "), expected " +
            list(*checkpoints) + " (" + std::to_string(checkpoints->size()) + ")");
  return problems.str();
}

std::vector<uint64_t> ExpectedCheckpoints(
    const std::vector<v1::RecordedEvent> &log,
    const std::function<bool(const v1::RecordedEvent &)> &match, uint32_t interval) {
  std::vector<uint64_t> out;
  uint32_t unmatched = 0;
  for (const auto &e : log) {
    if (match(e)) {
      unmatched = 0;
    } else if (++unmatched == interval) {
      out.push_back(e.global_position());
      unmatched = 0;
    }
  }
  return out;
}

std::string VerifyCheckpoints(const std::vector<SubMsg> &msgs,
                              const std::vector<v1::RecordedEvent> &log,
                              const std::function<bool(const v1::RecordedEvent &)> &match,
                              uint32_t interval, uint64_t from) {
  std::ostringstream problems;
  int reported = 0;
  auto problem = [&](const std::string &s) {
    if (reported++ < 10) problems << "  " << s << "\n";
  };
  std::vector<uint64_t> cps;
  for (const SubMsg &m : msgs)
    if (m.kind == SubMsg::kCheckpoint) cps.push_back(m.position);
  size_t k = 0;            // the next received checkpoint
  uint64_t unmatched = 0;  // non-matching events since the last match or checkpoint
  uint64_t head = 0;
  for (const auto &e : log) {
    const uint64_t pos = e.global_position();
    if (pos < from) continue;
    head = pos;
    for (; k < cps.size() && cps[k] < pos; ++k)
      problem("checkpoint " + std::to_string(cps[k]) +
              " repeated, out of order or before the subscription's start");
    const bool got = k < cps.size() && cps[k] == pos;
    if (got) ++k;
    if (match(e)) {
      if (got) problem("checkpoint at " + std::to_string(pos) + ", a matching event");
      unmatched = 0;
      continue;
    }
    ++unmatched;
    if (got) {
      unmatched = 0;
    } else if (unmatched == interval) {
      problem("no checkpoint at " + std::to_string(pos) + ", the " + std::to_string(interval) +
              "th non-matching event since the last match or checkpoint");
      unmatched = 0;
    }
  }
  for (; k < cps.size(); ++k)
    problem("checkpoint " + std::to_string(cps[k]) + " beyond the head " + std::to_string(head));
  if (unmatched > 0)
    problem("no checkpoint at the head " + std::to_string(head) + " after " +
            std::to_string(unmatched) + " non-matching events since the last match or checkpoint");
  return problems.str();
}

bool MatchesFilter(const v1::RecordedEvent &e, const v1::Filter &f) {
  if (e.stream_id().compare(0, f.stream_prefix().size(), f.stream_prefix()) != 0) return false;
  if (f.event_types().empty()) return true;
  for (const auto &t : f.event_types())
    if (t == e.event_type()) return true;
  return false;
}

}  // namespace es_e2e
