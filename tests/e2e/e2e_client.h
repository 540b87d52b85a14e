// Client-side helpers shared by the end-to-end tests.
//
// The tests are a stock grpc++ client of the C server: typed stubs from
// //proto:eventstore_cc_grpc for well-formed requests, and grpc::GenericStub
// with hand-made bytes for what a well-behaved client library cannot send
// (invalid UTF-8, garbage, unknown methods, reflection).
//
// Rules every helper keeps: each call carries a deadline (kCallTimeoutMs
// unless told otherwise), every wait is bounded, and a helper that can fail
// reports through GoogleTest (ADD_FAILURE) and returns a neutral value rather
// than aborting, so one server bug gives one legible failure.
#ifndef ES_TESTS_E2E_E2E_CLIENT_H
#define ES_TESTS_E2E_E2E_CLIENT_H

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "eventstore/v1/eventstore.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/e2e/server_process.h"

namespace es_e2e {

namespace v1 = ::eventstore::v1;
namespace health = ::grpc::health::v1;

constexpr int kCallTimeoutMs = 10000;

// Full method names.
constexpr const char kAppend[] = "/eventstore.v1.EventStore/Append";
constexpr const char kReadStream[] = "/eventstore.v1.EventStore/ReadStream";
constexpr const char kReadAll[] = "/eventstore.v1.EventStore/ReadAll";
constexpr const char kSubscribe[] = "/eventstore.v1.EventStore/Subscribe";

// ---- Servers -------------------------------------------------------------

// Starts a server with these extra flags; nullptr (after ADD_FAILURE with the
// reason and the server's log) if it does not come up.
std::unique_ptr<ServerProcess> StartServer(std::vector<std::string> args = {});
// SIGTERM; expects the process to exit by itself with code 0 within `grace`.
void StopServerExpectClean(ServerProcess *server,
                           std::chrono::milliseconds grace = std::chrono::seconds(5));

// ---- Channels and calls -----------------------------------------------------

// A channel with its own TCP connection (local subchannel pool), 64 MiB
// message limits both ways, waited until connected (bounded).
std::shared_ptr<grpc::Channel> Connect(const std::string &address);
void SetDeadline(grpc::ClientContext *ctx, int timeout_ms = kCallTimeoutMs);
std::string CodeName(grpc::StatusCode code);
// "CODE: message" for failure output.
std::string Describe(const grpc::Status &status);
// The value of a trailing metadata key, if present.
std::optional<std::string> Trailer(const grpc::ClientContext &ctx, const std::string &key);

// ---- Data -----------------------------------------------------------------

std::string NewUuid();  // random, version 4, canonical lowercase
bool IsCanonicalUuid(const std::string &s);
// A name unique in this process: prefix-<pid>-<counter>.
std::string UniqueName(const std::string &prefix);
// A new empty directory $TEST_TMPDIR/name.XXXXXX (or under /tmp); bazel
// removes TEST_TMPDIR after the test. Fails the test if it cannot be made.
std::string TempDir(const char *name);
v1::EventData MakeEvent(const std::string &type, const std::string &payload = "",
                        const std::string &id = NewUuid());
v1::AppendRequest MakeAppend(const std::string &stream, int n_events,
                             const std::string &type = "Tested");
std::string AllBytes();  // the 256 byte values 0x00..0xff
std::string Repeat(char c, size_t n);

// ---- Raw protobuf bytes -----------------------------------------------------

// A minimal protobuf wire writer, for requests a typed client cannot make.
class ProtoWriter {
 public:
  ProtoWriter &Varint(int field, uint64_t value);
  ProtoWriter &Bytes(int field, const std::string &bytes);
  ProtoWriter &Message(int field, const ProtoWriter &message);
  const std::string &data() const { return data_; }

 private:
  void Raw(uint64_t v);
  std::string data_;
};

// Replaces the single occurrence of `placeholder` in `bytes` with
// `replacement` of the same length (so length prefixes stay right).
std::string Patch(std::string bytes, const std::string &placeholder,
                  const std::string &replacement);

// One unary call with raw request bytes via grpc::GenericStub.
grpc::Status RawUnary(const std::shared_ptr<grpc::Channel> &channel, const std::string &method,
                      const std::string &request, std::string *response = nullptr,
                      int timeout_ms = kCallTimeoutMs);

// A raw bidirectional call via grpc::GenericStub (async API on a private
// completion queue); every operation waits for its own completion, bounded by
// the call's deadline. Also used for server-streaming methods: Write the one
// request, WritesDone, then Read until false.
class RawStream {
 public:
  RawStream(const std::shared_ptr<grpc::Channel> &channel, const std::string &method,
            int timeout_ms = kCallTimeoutMs);
  ~RawStream();
  bool ok() const { return started_; }
  bool Write(const std::string &bytes);
  bool WritesDone();
  bool Read(std::string *bytes);  // false at the end of the stream
  grpc::Status Finish();
  grpc::ClientContext &context() { return ctx_; }

 private:
  bool Wait(void *tag);

  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  grpc::GenericStub stub_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  std::chrono::system_clock::time_point deadline_;
  bool started_ = false;
  bool finished_ = false;
  grpc::Status status_;
};

// ---- Typed client -----------------------------------------------------------

class Client {
 public:
  explicit Client(std::shared_ptr<grpc::Channel> channel);
  grpc::Status Append(const v1::AppendRequest &req, v1::AppendResponse *resp,
                      grpc::ClientContext *ctx = nullptr);
  grpc::Status ReadStream(const v1::ReadStreamRequest &req, v1::ReadStreamResponse *resp);
  grpc::Status ReadAll(const v1::ReadAllRequest &req, v1::ReadAllResponse *resp);
  // Appends and expects OK; returns the response (default on failure).
  v1::AppendResponse MustAppend(const v1::AppendRequest &req);
  // head_position of a one-event backward ReadAll; 0 and ADD_FAILURE on error.
  uint64_t Head();
  // The whole stream, forward, paged (bounded).
  std::vector<v1::RecordedEvent> ReadWholeStream(const std::string &stream);
  // The whole log, forward, paged, optionally filtered (bounded; tolerates
  // empty filtered pages with is_end = false).
  std::vector<v1::RecordedEvent> ReadWholeLog(const v1::Filter *filter = nullptr,
                                              uint32_t page = 1000);
  // grpc.health.v1 Check; the status and, if OK, the serving status.
  grpc::Status HealthCheck(const std::string &service,
                           health::HealthCheckResponse::ServingStatus *out,
                           int timeout_ms = kCallTimeoutMs);
  bool Serving();

  v1::EventStore::Stub *stub() { return stub_.get(); }
  health::Health::Stub *health_stub() { return health_.get(); }
  const std::shared_ptr<grpc::Channel> &channel() const { return channel_; }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::EventStore::Stub> stub_;
  std::unique_ptr<health::Health::Stub> health_;
};

// ---- Subscriptions ----------------------------------------------------------

// One received SubscribeResponse, compactly.
struct SubMsg {
  enum Kind { kEvent, kCaughtUp, kCheckpoint, kFellBehind, kUnset } kind;
  uint64_t position;        // event: global_position; checkpoint: position;
                            // caught_up / fell_behind: head_position
  v1::RecordedEvent event;  // payload dropped unless keep_payloads
};

// A Subscribe call. The call starts in the constructor; nothing is read until
// StartReading(), which reads on a background thread into a list. A reader
// that is never started is a stalled subscriber.
class SubscriptionReader {
 public:
  SubscriptionReader(const std::shared_ptr<grpc::Channel> &channel, const v1::SubscribeRequest &req,
                     int timeout_ms = 60000, bool keep_payloads = false);
  ~SubscriptionReader();  // cancels and joins
  // A slow consumer: sleep `delay` after every `every` messages read. May be
  // changed while reading (e.g. back to 0 to drain quickly).
  void SetReadDelay(std::chrono::microseconds delay, int every) {
    read_delay_every_ = every;
    read_delay_us_ = delay.count();
  }
  void StartReading();
  // Bounded waits; true when the condition was reached.
  bool WaitForCaughtUp(int timeout_ms);
  // Until an event or checkpoint at position >= pos was received.
  bool WaitForPosition(uint64_t pos, int timeout_ms);
  bool WaitForCount(size_t events, int timeout_ms);
  bool WaitForEnd(int timeout_ms);  // the server ended the stream
  void Cancel();
  // Waits for the reader thread (cancelling after timeout) and returns the
  // call's final status.
  grpc::Status Join(int timeout_ms = 10000);
  // Every message as received; the events of a `batch` message (max_batch >
  // 1) appear as one kEvent each, in order.
  std::vector<SubMsg> Messages();
  size_t EventCount();
  // The number of events in each `batch` message received, in order, and the
  // number of `event` messages: a server never mixes the two on one call.
  std::vector<size_t> BatchSizes();
  size_t SingleEventMessages();
  grpc::ClientContext &context() { return ctx_; }

 private:
  void Run();
  bool WaitUntil(const std::function<bool()> &cond, int timeout_ms);

  grpc::ClientContext ctx_;
  std::unique_ptr<v1::EventStore::Stub> stub_;
  std::unique_ptr<grpc::ClientReader<v1::SubscribeResponse>> reader_;
  bool keep_payloads_;
  std::atomic<int64_t> read_delay_us_{0};
  std::atomic<int> read_delay_every_{1};
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<SubMsg> msgs_;
  size_t events_ = 0;
  std::vector<size_t> batch_sizes_;
  size_t single_events_ = 0;
  bool caught_up_ = false;
  uint64_t last_position_ = 0;
  bool done_ = false;
  bool joined_ = false;
  grpc::Status status_;
};

// Checks that `msgs` carries exactly the events at `expected` positions, once
// each, in increasing order, with events and checkpoints in position order,
// at least one CaughtUp (events before it at or below its head, events after
// it above), and — if `checkpoints` is given — exactly those checkpoint
// positions. Returns a description of the first problems ("" if none).
std::string VerifySubscription(const std::vector<SubMsg> &msgs,
                               const std::vector<uint64_t> &expected,
                               const std::vector<uint64_t> *checkpoints);

// Checkpoint positions API.md details 7 prescribes for a filtered
// subscription that scans `log` (in position order) with `interval` and
// reaches the head only at its end: exact when the log ends with a match
// (otherwise a checkpoint at the head follows, see VerifyCheckpoints).
std::vector<uint64_t> ExpectedCheckpoints(
    const std::vector<v1::RecordedEvent> &log,
    const std::function<bool(const v1::RecordedEvent &)> &match, uint32_t interval);

// Checks the checkpoints in `msgs` of a filtered subscription from `from` that
// was read until it idled at the head of `log` (the whole log, in position
// order), by the rules of docs/api.md: a checkpoint at each `interval`-th
// non-matching event since the last match or checkpoint (API.md details 7);
// any other checkpoint only at a non-matching event, once (the server sends
// one where it reached the head, which the client cannot see); and, when
// non-matching events follow the last match or checkpoint, a checkpoint at
// the head. Returns a description of the first problems ("" if none).
std::string VerifyCheckpoints(const std::vector<SubMsg> &msgs,
                              const std::vector<v1::RecordedEvent> &log,
                              const std::function<bool(const v1::RecordedEvent &)> &match,
                              uint32_t interval, uint64_t from = 1);

bool MatchesFilter(const v1::RecordedEvent &e, const v1::Filter &f);

// ---- The seat-booking decision, the DCB way (docs/dcb.md) ------------------

struct BookingRace {
  int booked = 0, conflicts = 0, sold_out = 0;
  std::vector<std::string> problems;  // "" per booker that decided cleanly
};
// `bookers` threads at once, spread over `addresses` (several servers of one
// store, or one). Each reads the bookings of `show_tag` by query (ReadAll
// from 1, remembering head_position), decides (sold out at `seats`, or book)
// and appends its booking with the condition "no booking of this show after
// the head I read", reading again after each ABORTED with
// es-condition-position. Any other answer is a problem of that booker.
BookingRace RunBookingRace(const std::vector<std::string> &addresses, int seats, int bookers,
                           const std::string &show_tag);

}  // namespace es_e2e

#endif  // ES_TESTS_E2E_E2E_CLIENT_H
