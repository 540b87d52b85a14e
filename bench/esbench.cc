// esbench — a closed-loop load generator for the event store.
//
// What it measures. Every scenario keeps a fixed number of calls in flight
// (a closed loop: a slot issues its next call when the previous one
// completes), runs a warm-up, then counts the calls that complete inside a
// fixed measuring window and records their latencies. Each row is reported
// next to grpc.health.v1.Health/Check at the same number of calls in flight,
// measured in the same run against the same server: Check does no work, so it
// is the ceiling this client, this transport and this machine allow, and the
// ratio says how much of that ceiling the real call keeps. On a machine where
// client and server share the cores, absolute numbers say more about the
// machine than about the server; the ratio travels better. For the same
// reason the unary scenarios run in interleaved rounds (every scenario once
// per round) and report the median round: a burst of background load then
// lands on all of them alike rather than on whichever ran at that moment.
// When the server runs on this machine (--server-pid), its CPU time per call
// is reported too: that number depends little on what else the machine does.
//
// How it is built. Every outstanding operation is a Tag whose Proceed(ok) runs
// when the completion queue returns it. A unary Slot issues a call, and on
// completion records it and issues the next one until its window closes. A
// Subscriber is a small state machine over one server-streaming call (start,
// read, read, ..., finish) with one operation outstanding at a time. A
// Worker is one client thread with its own CompletionQueue (and its own
// channel, so that two workers use two connections); slots are spread over
// the workers round-robin. Nothing is shared between workers except atomics.
//
// Correctness checks ride along: subscriptions verify that global positions
// arrive gap-free and in order, and the live scenario verifies that every
// acknowledged append was delivered exactly once.
//
// The fan-out group (many subscribers of one log while Appends run) has a
// design of its own, described where it is defined: subscriptions over the
// generic stub read as raw bytes, spread over several connections and
// threads, so that the client's work per delivered event stays small.

#include <absl/synchronization/mutex.h>
#include <dirent.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "eventstore/v1/eventstore.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace {

namespace esv1 = ::eventstore::v1;
namespace hv1 = ::grpc::health::v1;

using Clock = std::chrono::steady_clock;

constexpr int64_t kNsPerSec = 1000000000LL;
constexpr int64_t kNever = INT64_MAX;
// A unary call that takes longer than this has hung: the run is broken.
constexpr std::chrono::seconds kCallTimeout(30);
// How long to wait for a subscription to catch up or to drain.
constexpr int64_t kStreamTimeoutNs = 120 * kNsPerSec;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------
// Options

struct Options {
  std::string target = "127.0.0.1:50051";
  double seconds = 5.0;                // measuring window per scenario
  double warmup = 0.5;                 // before each window
  int rounds = 5;                      // unary scenarios run interleaved, this often
  size_t payload = 256;                // bytes per event
  int client_threads = 1;              // workers for the unary scenarios
  uint64_t subscribe_events = 200000;  // catch-up scenario size
  double connect_timeout = 5.0;
  std::set<std::string> only;  // empty = every scenario group
  int server_pid = 0;          // > 0: report the server's CPU time
  // The fan-out group.
  std::vector<int> fanout_subscribers = {0, 10, 100, 1000};  // live subscribers per run
  uint32_t max_batch = 256;                                  // events per message asked for
  uint64_t fanout_events = 100000;                           // catch-up log size
  double fanout_rate = 2000;                                 // paced Appends per second
  int fanout_channels = 16;                                  // connections for subscribers
  int fanout_threads = 2;                                    // client threads for subscribers
  int subscriber_nice = 0;        // fan-out: nice increment of the subscriber threads
  uint64_t dcb_events = 1000000;  // DCB: events of the tagged log
};

const char *const kGroups[] = {"health",  "append", "hot",    "batch", "read",
                               "catchup", "live",   "fanout", "dcb"};

void Usage(FILE *out) {
  std::fprintf(out,
               "usage: esbench [options]\n"
               "\n"
               "Closed-loop load generator for the eventstore.v1 gRPC server.\n"
               "\n"
               "  --target HOST:PORT      server to load (default 127.0.0.1:50051)\n"
               "  --seconds S             measured time per scenario (default 5)\n"
               "  --rounds N              split it into N rounds: every unary scenario\n"
               "                          runs once per round, so that background load\n"
               "                          touches all alike; rates are the median of\n"
               "                          the rounds (default 5; 1 = one window)\n"
               "  --warmup S              warm-up before each window (default 0.5)\n"
               "  --payload BYTES         payload size of each event (default 256)\n"
               "  --client-threads N      client threads for unary scenarios, 1 or 2\n"
               "                          (default 1)\n"
               "  --subscribe-events N    events pre-filled for the catch-up\n"
               "                          scenario (default 200000)\n"
               "  --connect-timeout S     give up connecting after S (default 5)\n"
               "  --only LIST             comma-separated scenario groups: health,\n"
               "                          append, hot, batch, read, catchup, live,\n"
               "                          fanout, dcb (dcb runs only when named:\n"
               "                          it pre-fills a log of --dcb-events)\n"
               "  --dcb-events N          DCB: events of the tagged log, four per\n"
               "                          tag (default 1000000)\n"
               "  --fanout-subscribers L  fan-out: live subscriber counts, one run each,\n"
               "                          run in ascending order (default 0,10,100,1000)\n"
               "  --max-batch N           catch-up and fan-out: events per message the\n"
               "                          subscribers ask for, 1..1000 (default 256;\n"
               "                          1 = one event per message)\n"
               "  --fanout-events N       fan-out: log size for the catch-up of 100\n"
               "                          subscribers (default 100000)\n"
               "  --fanout-rate R         fan-out: paced Appends per second (default 2000)\n"
               "  --fanout-channels N     fan-out: connections the subscribers are spread\n"
               "                          over (default 16)\n"
               "  --fanout-threads N      fan-out: client threads reading the\n"
               "                          subscriptions (default 2)\n"
               "  --subscriber-nice N     fan-out: run those threads N nice steps below\n"
               "                          the rest of the client (default 0), so that\n"
               "                          subscribers sharing the machine's cores stand\n"
               "                          in for subscribers on other machines\n"
               "  --server-pid PID        the server runs on this machine as PID: report\n"
               "                          its CPU time per call (bench/run.sh sets it)\n"
               "  --help                  this text\n"
               "\n"
               "Exit status: 0 all scenarios ran without errors, 1 a scenario saw\n"
               "errors, 2 bad usage or the server is unreachable.\n");
}

bool ParseDouble(const std::string &s, double lo, double *out) {
  char *end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0' || !(v >= lo)) return false;
  *out = v;
  return true;
}

bool ParseU64(const std::string &s, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end = nullptr;
  if (s.empty() || s[0] == '-') return false;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (*end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

// Returns 0 on success, 1 when --help was asked, 2 on a usage error.
int ParseArgs(int argc, char **argv, Options *o) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    std::string val;
    bool has_val = false;
    size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_val = true;
    }
    if (a == "--help" || a == "-h") return 1;
    auto need = [&](std::string *v) {
      if (has_val) {
        *v = val;
        return true;
      }
      if (i + 1 >= argc) return false;
      *v = argv[++i];
      return true;
    };
    static const char *const known[] = {"--target",
                                        "--seconds",
                                        "--warmup",
                                        "--connect-timeout",
                                        "--payload",
                                        "--client-threads",
                                        "--subscribe-events",
                                        "--only",
                                        "--rounds",
                                        "--server-pid",
                                        "--fanout-subscribers",
                                        "--max-batch",
                                        "--fanout-events",
                                        "--fanout-rate",
                                        "--fanout-channels",
                                        "--fanout-threads",
                                        "--subscriber-nice",
                                        "--dcb-events"};
    if (std::find(std::begin(known), std::end(known), a) == std::end(known)) {
      std::fprintf(stderr, "esbench: unknown option %s (see --help)\n", a.c_str());
      return 2;
    }
    std::string v;
    uint64_t u = 0;
    if (!need(&v)) {
      std::fprintf(stderr, "esbench: %s needs a value (see --help)\n", a.c_str());
      return 2;
    }
    bool ok = true;
    if (a == "--target") {
      o->target = v;
      ok = !v.empty();
    } else if (a == "--seconds") {
      ok = ParseDouble(v, 0.1, &o->seconds);
    } else if (a == "--warmup") {
      ok = ParseDouble(v, 0.0, &o->warmup);
    } else if (a == "--connect-timeout") {
      ok = ParseDouble(v, 0.1, &o->connect_timeout);
    } else if (a == "--payload") {
      ok = ParseU64(v, 8, 1 << 20, &u);
      o->payload = u;
    } else if (a == "--server-pid") {
      ok = ParseU64(v, 1, INT32_MAX, &u);
      o->server_pid = static_cast<int>(u);
    } else if (a == "--rounds") {
      ok = ParseU64(v, 1, 100, &u);
      o->rounds = static_cast<int>(u);
    } else if (a == "--client-threads") {
      ok = ParseU64(v, 1, 2, &u);
      o->client_threads = static_cast<int>(u);
    } else if (a == "--subscribe-events") {
      ok = ParseU64(v, 100, 100000000, &u);
      o->subscribe_events = u;
    } else if (a == "--max-batch") {
      ok = ParseU64(v, 1, 1000, &u);
      o->max_batch = static_cast<uint32_t>(u);
    } else if (a == "--fanout-events") {
      ok = ParseU64(v, 100, 100000000, &u);
      o->fanout_events = u;
    } else if (a == "--fanout-rate") {
      ok = ParseDouble(v, 1.0, &o->fanout_rate);
    } else if (a == "--fanout-channels") {
      ok = ParseU64(v, 1, 1000, &u);
      o->fanout_channels = static_cast<int>(u);
    } else if (a == "--subscriber-nice") {
      ok = ParseU64(v, 0, 19, &u);
      o->subscriber_nice = static_cast<int>(u);
    } else if (a == "--dcb-events") {
      ok = ParseU64(v, 4, 100000000, &o->dcb_events);
    } else if (a == "--fanout-threads") {
      ok = ParseU64(v, 1, 16, &u);
      o->fanout_threads = static_cast<int>(u);
    } else if (a == "--fanout-subscribers") {
      o->fanout_subscribers.clear();
      std::stringstream ss(v);
      std::string n;
      while (ok && std::getline(ss, n, ',')) {
        ok = ParseU64(n, 0, 100000, &u);
        o->fanout_subscribers.push_back(static_cast<int>(u));
      }
      ok = ok && !o->fanout_subscribers.empty();
      std::sort(o->fanout_subscribers.begin(), o->fanout_subscribers.end());
      o->fanout_subscribers.erase(
          std::unique(o->fanout_subscribers.begin(), o->fanout_subscribers.end()),
          o->fanout_subscribers.end());
    } else if (a == "--only") {
      std::stringstream ss(v);
      std::string g;
      while (std::getline(ss, g, ',')) {
        if (g.empty()) continue;
        bool known = false;
        for (const char *k : kGroups) known = known || g == k;
        if (!known) {
          std::fprintf(stderr, "esbench: unknown scenario group '%s'\n", g.c_str());
          return 2;
        }
        o->only.insert(g);
      }
    }
    if (!ok) {
      std::fprintf(stderr, "esbench: bad value '%s' for %s (see --help)\n", v.c_str(), a.c_str());
      return 2;
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Results

// What one worker (or one scenario, once merged) observed.
struct Stats {
  uint64_t calls = 0;                        // completed OK inside the window
  uint64_t events = 0;                       // events appended or read by those calls
  uint64_t errors = 0;                       // failed calls, warm-up included
  uint64_t acked = 0;                        // events of every OK append, warm-up included
  uint64_t min_first_position = UINT64_MAX;  // over OK appends
  uint64_t max_last_position = 0;
  std::vector<int64_t> latency_ns;  // of the calls counted in `calls`
  std::string first_error;
  uint64_t completed = 0;      // OK calls, warm-up and drain included
  int64_t server_cpu_ns = -1;  // server CPU time while they ran (-1 = unknown)
  int64_t wall_ns = 0;         // wall time while they ran

  void Merge(Stats &&o) {
    if (o.server_cpu_ns >= 0) server_cpu_ns = std::max<int64_t>(server_cpu_ns, 0) + o.server_cpu_ns;
    completed += o.completed;
    wall_ns += o.wall_ns;
    calls += o.calls;
    events += o.events;
    errors += o.errors;
    acked += o.acked;
    min_first_position = std::min(min_first_position, o.min_first_position);
    max_last_position = std::max(max_last_position, o.max_last_position);
    latency_ns.insert(latency_ns.end(), o.latency_ns.begin(), o.latency_ns.end());
    if (first_error.empty()) first_error = std::move(o.first_error);
  }
};

std::string StatusText(const grpc::Status &s) {
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
  int c = static_cast<int>(s.error_code());
  std::string name = (c >= 0 && c <= 16) ? names[c] : std::to_string(c);
  return name + ": " + s.error_message();
}

double Percentile(std::vector<int64_t> &v, double p) {
  if (v.empty()) return 0;
  size_t k = static_cast<size_t>(p * static_cast<double>(v.size()));
  if (k >= v.size()) k = v.size() - 1;
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return static_cast<double>(v[k]) / 1000.0;
}

// CPU time (user + system) consumed so far by every thread of process pid,
// in ns, from the scheduler's per-thread accounting; -1 when unknown (pid 0,
// another machine, no /proc).
int64_t ServerCpuNs(int pid) {
  if (pid <= 0) return -1;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR *d = opendir(dir.c_str());
  if (!d) return -1;
  int64_t total = 0;
  bool any = false;
  while (struct dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name + "/schedstat");
    long long ns = 0;
    if (f >> ns) {
      total += ns;
      any = true;
    }
  }
  closedir(d);
  return any ? total : -1;
}

// Server CPU µs per unit, or -1.
double CpuPer(int64_t cpu_ns, uint64_t units) {
  if (cpu_ns < 0 || units == 0) return -1;
  return static_cast<double>(cpu_ns) / 1000.0 / static_cast<double>(units);
}

// One row of the table.
struct Row {
  std::string name;
  int inflight = 0;
  double calls_per_s = -1;  // < 0: not applicable
  double events_per_s = -1;
  double p50_us = -1;
  double p99_us = -1;
  double vs_health = -1;
  double server_us = -1;  // server CPU µs per call (or per event)
  std::string notes;
  bool failed = false;
};

std::string Fmt(double v, const char *fmt) {
  if (v < 0) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

void PrintHeader() {
  std::printf(
      "| scenario | in flight | calls/s | events/s | p50 µs | p99 µs | vs Health | "
      "server CPU µs/call | notes |\n"
      "|---|--:|--:|--:|--:|--:|--:|--:|---|\n");
  std::fflush(stdout);
}

void PrintRow(const Row &r) {
  std::printf("| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", r.name.c_str(), r.inflight,
              Fmt(r.calls_per_s, "%.0f").c_str(), Fmt(r.events_per_s, "%.0f").c_str(),
              Fmt(r.p50_us, "%.0f").c_str(), Fmt(r.p99_us, "%.0f").c_str(),
              Fmt(r.vs_health, "%.2f").c_str(), Fmt(r.server_us, "%.1f").c_str(), r.notes.c_str());
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------
// The event loop

// Everything placed on a completion queue.
class Tag {
 public:
  virtual ~Tag() = default;
  virtual void Proceed(bool ok) = 0;
};

// Runs completions from cq until done() holds or deadline_ns passes (then
// returns false). Checks done() at least every 100 ms.
bool Pump(grpc::CompletionQueue *cq, const std::function<bool()> &done, int64_t deadline_ns) {
  while (!done()) {
    if (NowNs() >= deadline_ns) return false;
    void *tag = nullptr;
    bool ok = false;
    auto st =
        cq->AsyncNext(&tag, &ok, std::chrono::system_clock::now() + std::chrono::milliseconds(100));
    if (st == grpc::CompletionQueue::GOT_EVENT) {
      static_cast<Tag *>(tag)->Proceed(ok);
    } else if (st == grpc::CompletionQueue::SHUTDOWN) {
      return false;
    }
  }
  return true;
}

// Shuts cq down and discards what is left (nothing may be outstanding).
void Drain(grpc::CompletionQueue *cq) {
  cq->Shutdown();
  void *tag = nullptr;
  bool ok = false;
  while (cq->Next(&tag, &ok)) {
  }
}

// When a unary scenario issues calls: either inside a time window (calls that
// complete in [start, end) are counted) or a fixed number of calls (all
// counted).
struct Plan {
  int64_t window_start_ns = 0;
  int64_t window_end_ns = kNever;  // stop issuing at this time
  bool budgeted = false;           // issue `budget` calls, not a window
  std::atomic<int64_t> budget{0};  // calls left to issue (may go negative)
  std::atomic<bool> abort{false};  // the server went away: stop everything
};

class Worker;

// One call kept in flight: issues a call, and on completion records it and
// issues the next.
class Slot : public Tag {
 public:
  explicit Slot(Worker *w) : worker_(w) {}
  void Issue();
  void Proceed(bool ok) override;
  void Cancel() {
    if (in_call_) ctx_->TryCancel();
  }

 protected:
  // Starts the call on cq; its completion must be tagged `this`.
  virtual void Start(grpc::ClientContext *ctx, grpc::CompletionQueue *cq) = 0;
  // Events carried by the call that just completed OK.
  virtual uint64_t Events() const { return 0; }
  // Called after an OK completion (appends record positions).
  virtual void OnOk(Stats *) {}

  Worker *worker_;
  grpc::Status status_;

 private:
  std::unique_ptr<grpc::ClientContext> ctx_;
  int64_t started_ns_ = 0;
  bool in_call_ = false;
};

class Worker {
 public:
  Worker(std::shared_ptr<grpc::Channel> ch, Plan *plan)
      : channel_(std::move(ch)),
        es_(esv1::EventStore::NewStub(channel_)),
        health_(hv1::Health::NewStub(channel_)),
        plan_(plan) {}

  grpc::CompletionQueue *cq() { return &cq_; }
  esv1::EventStore::Stub *es() { return es_.get(); }
  hv1::Health::Stub *health() { return health_.get(); }
  Stats &stats() { return stats_; }
  void Add(std::unique_ptr<Slot> s) { slots_.push_back(std::move(s)); }

  bool MayIssue(int64_t now) {
    if (plan_->abort.load(std::memory_order_relaxed)) return false;
    if (plan_->budgeted) return plan_->budget.fetch_sub(1) > 0;
    return now < plan_->window_end_ns;
  }

  void Record(int64_t start, int64_t end, const grpc::Status &st, uint64_t events) {
    if (!st.ok()) {
      stats_.errors++;
      if (stats_.first_error.empty()) stats_.first_error = StatusText(st);
      // A server that went away (or hangs) makes the rest of the run
      // meaningless: stop, say so, and do not report numbers.
      if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
          st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
        plan_->abort.store(true);
      return;
    }
    stats_.completed++;
    if (end >= plan_->window_start_ns && end < plan_->window_end_ns) {
      stats_.calls++;
      stats_.events += events;
      stats_.latency_ns.push_back(end - start);
    }
  }

  void SlotStarted() { active_++; }
  void SlotStopped() { active_--; }

  // Runs the slots to completion on the calling thread.
  void Run() {
    for (auto &s : slots_) s->Issue();
    int64_t hard = plan_->window_end_ns == kNever
                       ? kNever
                       : plan_->window_end_ns + 2 * kCallTimeout.count() * kNsPerSec;
    if (!Pump(
            &cq_, [this] { return active_ == 0; }, hard)) {
      plan_->abort.store(true);
      for (auto &s : slots_) s->Cancel();
      Pump(
          &cq_, [this] { return active_ == 0; }, kNever);
    }
    Drain(&cq_);
  }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<esv1::EventStore::Stub> es_;
  std::unique_ptr<hv1::Health::Stub> health_;
  grpc::CompletionQueue cq_;
  Plan *plan_;
  Stats stats_;
  std::vector<std::unique_ptr<Slot>> slots_;
  int active_ = 0;
};

void Slot::Issue() {
  if (!worker_->MayIssue(NowNs())) return;
  worker_->SlotStarted();
  in_call_ = true;
  ctx_ = std::make_unique<grpc::ClientContext>();
  ctx_->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  started_ns_ = NowNs();
  Start(ctx_.get(), worker_->cq());
}

void Slot::Proceed(bool) {
  int64_t end = NowNs();
  in_call_ = false;
  bool ok = status_.ok();
  worker_->Record(started_ns_, end, status_, ok ? Events() : 0);
  if (ok) OnOk(&worker_->stats());
  worker_->SlotStopped();
  Issue();
}

// ---------------------------------------------------------------------------
// Unary scenarios

class HealthSlot : public Slot {
 public:
  using Slot::Slot;

 protected:
  void Start(grpc::ClientContext *ctx, grpc::CompletionQueue *cq) override {
    reader_ = worker_->health()->PrepareAsyncCheck(ctx, req_, cq);
    reader_->StartCall();
    reader_->Finish(&resp_, &status_, this);
  }

 private:
  hv1::HealthCheckRequest req_;  // service "" = the whole server
  hv1::HealthCheckResponse resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<hv1::HealthCheckResponse>> reader_;
};

// Fills an AppendRequest with `count` events of `payload` bytes each.
void MakeAppend(const std::string &stream, int count, size_t payload, esv1::AppendRequest *req) {
  req->Clear();
  req->set_stream_id(stream);
  req->set_stream_type("Bench");
  req->set_expected_kind(esv1::EXPECTED_ANY);
  for (int i = 0; i < count; i++) {
    esv1::EventData *e = req->add_events();
    e->set_event_type("BenchEvent");
    e->set_event_version(1);
    e->set_content_type("application/octet-stream");
    e->set_payload(std::string(payload, 'x'));
  }
}

// Stamps the send time (steady clock, ns) into the first 8 bytes of every
// payload, so that a subscriber in this process can measure delivery delay.
void StampPayloads(esv1::AppendRequest *req) {
  int64_t now = NowNs();
  for (auto &e : *req->mutable_events()) {
    std::string *p = e.mutable_payload();
    if (p->size() >= sizeof now) std::memcpy(&(*p)[0], &now, sizeof now);
  }
}

class AppendSlot : public Slot {
 public:
  AppendSlot(Worker *w, const std::string &stream, int events, size_t payload) : Slot(w) {
    MakeAppend(stream, events, payload, &req_);
  }

 protected:
  void Start(grpc::ClientContext *ctx, grpc::CompletionQueue *cq) override {
    StampPayloads(&req_);
    reader_ = worker_->es()->PrepareAsyncAppend(ctx, req_, cq);
    reader_->StartCall();
    reader_->Finish(&resp_, &status_, this);
  }
  uint64_t Events() const override { return static_cast<uint64_t>(req_.events_size()); }
  void OnOk(Stats *s) override {
    s->acked += static_cast<uint64_t>(req_.events_size());
    s->min_first_position = std::min(s->min_first_position, resp_.first_global_position());
    s->max_last_position = std::max(s->max_last_position, resp_.last_global_position());
  }

 private:
  esv1::AppendRequest req_;
  esv1::AppendResponse resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<esv1::AppendResponse>> reader_;
};

// Reads pages of `page` events of the global log, forward, from the stretch
// [first, first + length), cycling through it page by page.
class ReadAllSlot : public Slot {
 public:
  ReadAllSlot(Worker *w, uint64_t first, uint64_t length, uint32_t page, uint64_t first_page)
      : Slot(w), first_(first), length_(length), page_(page), next_page_(first_page) {
    req_.set_max_count(page);
    req_.set_direction(esv1::FORWARD);
  }

 protected:
  void Start(grpc::ClientContext *ctx, grpc::CompletionQueue *cq) override {
    uint64_t pages = length_ / page_;
    req_.set_from_position(first_ + (next_page_++ % pages) * page_);
    reader_ = worker_->es()->PrepareAsyncReadAll(ctx, req_, cq);
    reader_->StartCall();
    reader_->Finish(&resp_, &status_, this);
  }
  uint64_t Events() const override { return static_cast<uint64_t>(resp_.events_size()); }

 private:
  uint64_t first_, length_;
  uint32_t page_;
  uint64_t next_page_;
  esv1::ReadAllRequest req_;
  esv1::ReadAllResponse resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<esv1::ReadAllResponse>> reader_;
};

// Reads pages of `page` events from a pre-filled stream of `length` events,
// cycling through the stream page by page.
class ReadSlot : public Slot {
 public:
  ReadSlot(Worker *w, const std::string &stream, uint64_t length, uint32_t page,
           uint64_t first_page)
      : Slot(w), length_(length), page_(page), next_page_(first_page) {
    req_.set_stream_id(stream);
    req_.set_max_count(page);
    req_.set_direction(esv1::FORWARD);
  }

 protected:
  void Start(grpc::ClientContext *ctx, grpc::CompletionQueue *cq) override {
    uint64_t pages = length_ / page_;
    req_.set_from_version(1 + (next_page_++ % pages) * page_);
    reader_ = worker_->es()->PrepareAsyncReadStream(ctx, req_, cq);
    reader_->StartCall();
    reader_->Finish(&resp_, &status_, this);
  }
  uint64_t Events() const override { return static_cast<uint64_t>(resp_.events_size()); }

 private:
  uint64_t length_;
  uint32_t page_;
  uint64_t next_page_;
  esv1::ReadStreamRequest req_;
  esv1::ReadStreamResponse resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<esv1::ReadStreamResponse>> reader_;
};

// The DCB group (Extension 1 of the API): a log of tagged events, where the
// n-th event of the fill carries the tag <prefix><n mod tags>, so that every
// tag is on a few events spread over the whole log (tags = events / 4: four
// each) and a tag's events are cheap only when the store finds them through
// its tag index rather than by scanning.
struct DcbShared {
  std::string prefix;                    // tag = prefix + number
  uint64_t events = 0;                   // of the fill
  uint64_t tags = 0;                     // distinct fill tags
  uint64_t after = 0;                    // the head the conditions are based on
  std::atomic<uint64_t> next{0};         // fill: next event; others: next tag
  std::atomic<uint64_t> wrong_reads{0};  // reads that did not return their tag's events
  std::string Tag(uint64_t n) const { return prefix + std::to_string(n % tags); }
  // Events of the fill that carry tag number k.
  uint64_t PerTag(uint64_t k) const { return events / tags + (k < events % tags ? 1 : 0); }
};

// kFill: Appends of `count` events tagged as above. kPlain: single-event
// Appends, the event tagged with a tag of its slot that no query names.
// kConditional: the same event as an AppendMany of one append (as the SDKs
// send a conditional append) whose condition is "no event with the next fill
// tag after the head": it matches a few events, all before the head, so it
// passes. kConditionalAppend: the same condition on an Append (for a server
// without AppendMany). kRead: ReadAll from position 1 filtered by the next
// fill tag; the page must hold exactly that tag's events.
class DcbSlot : public Slot {
 public:
  enum Mode { kFill, kPlain, kConditional, kConditionalAppend, kRead };
  DcbSlot(Worker *w, Mode mode, DcbShared *sh, const std::string &stream, int count, size_t payload)
      : Slot(w), mode_(mode), sh_(sh) {
    MakeAppend(stream, count, payload, &req_);
    if (mode == kPlain || mode == kConditional || mode == kConditionalAppend)
      req_.mutable_events(0)->add_tags(stream);
    if (mode == kFill)
      for (auto &e : *req_.mutable_events()) e.add_tags(std::string());
    read_.set_from_position(1);
    read_.set_max_count(100);
    read_.mutable_filter()->add_items()->add_tags(std::string());
  }

 protected:
  void Start(grpc::ClientContext *ctx, grpc::CompletionQueue *cq) override {
    esv1::EventStore::Stub *es = worker_->es();
    switch (mode_) {
      case kFill: {
        uint64_t n = sh_->next.fetch_add(static_cast<uint64_t>(req_.events_size()));
        for (auto &e : *req_.mutable_events()) e.set_tags(0, sh_->Tag(n++));
        append_ = es->PrepareAsyncAppend(ctx, req_, cq);
        break;
      }
      case kPlain:
        append_ = es->PrepareAsyncAppend(ctx, req_, cq);
        break;
      case kConditional: {
        many_.Clear();
        *many_.add_appends() = req_;
        esv1::AppendCondition *c = many_.mutable_condition();
        c->add_fail_if_events_match()->add_tags(sh_->Tag(sh_->next.fetch_add(1)));
        c->set_after(sh_->after);
        many_reader_ = es->PrepareAsyncAppendMany(ctx, many_, cq);
        many_reader_->StartCall();
        many_reader_->Finish(&many_resp_, &status_, this);
        return;
      }
      case kConditionalAppend: {
        esv1::AppendCondition *c = req_.mutable_condition();
        c->Clear();
        c->add_fail_if_events_match()->add_tags(sh_->Tag(sh_->next.fetch_add(1)));
        c->set_after(sh_->after);
        append_ = es->PrepareAsyncAppend(ctx, req_, cq);
        break;
      }
      case kRead: {
        tag_ = sh_->next.fetch_add(1) % sh_->tags;
        read_.mutable_filter()->mutable_items(0)->set_tags(0, sh_->Tag(tag_));
        read_reader_ = es->PrepareAsyncReadAll(ctx, read_, cq);
        read_reader_->StartCall();
        read_reader_->Finish(&read_resp_, &status_, this);
        return;
      }
    }
    append_->StartCall();
    append_->Finish(&resp_, &status_, this);
  }
  uint64_t Events() const override {
    return mode_ == kRead ? static_cast<uint64_t>(read_resp_.events_size())
                          : static_cast<uint64_t>(req_.events_size());
  }
  void OnOk(Stats *s) override {
    if (mode_ == kRead) {
      bool right = static_cast<uint64_t>(read_resp_.events_size()) == sh_->PerTag(tag_);
      for (const auto &e : read_resp_.events())
        right = right && e.tags_size() == 1 && e.tags(0) == sh_->Tag(tag_);
      if (!right) sh_->wrong_reads++;
      return;
    }
    const esv1::AppendResponse &r =
        mode_ == kConditional && many_resp_.results_size() == 1 ? many_resp_.results(0) : resp_;
    s->acked += static_cast<uint64_t>(req_.events_size());
    s->min_first_position = std::min(s->min_first_position, r.first_global_position());
    s->max_last_position = std::max(s->max_last_position, r.last_global_position());
  }

 private:
  Mode mode_;
  DcbShared *sh_;
  uint64_t tag_ = 0;
  esv1::AppendRequest req_;
  esv1::AppendResponse resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<esv1::AppendResponse>> append_;
  esv1::AppendManyRequest many_;
  esv1::AppendManyResponse many_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<esv1::AppendManyResponse>> many_reader_;
  esv1::ReadAllRequest read_;
  esv1::ReadAllResponse read_resp_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<esv1::ReadAllResponse>> read_reader_;
};

// ---------------------------------------------------------------------------
// The bench: channels, scenarios, the table

std::string LoadAvg();

// Builds the slot with the given index for a worker.
using SlotFactory = std::function<std::unique_ptr<Slot>(Worker *, int)>;

class Bench {
 public:
  explicit Bench(const Options &o) : opt_(o) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%08" PRIx64, static_cast<uint64_t>(NowNs()) & 0xffffffffu);
    run_id_ = buf;
    for (int i = 0; i < 2; i++) channels_.push_back(MakeChannel(i));
  }

  // Connects and checks health. Returns false (after saying why) when the
  // server is not there.
  bool Connect() {
    auto deadline = std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(opt_.connect_timeout * 1000));
    for (auto &ch : channels_) {
      if (!ch->WaitForConnected(deadline)) {
        std::fprintf(stderr,
                     "esbench: cannot connect to %s within %.1f s: is the "
                     "server running? (start one with `make run`, or let "
                     "bench/run.sh start one)\n",
                     opt_.target.c_str(), opt_.connect_timeout);
        return false;
      }
    }
    auto stub = hv1::Health::NewStub(channels_[0]);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline);
    hv1::HealthCheckRequest req;
    hv1::HealthCheckResponse resp;
    grpc::Status st = stub->Check(&ctx, req, &resp);
    if (!st.ok()) {
      std::fprintf(stderr, "esbench: Health/Check on %s failed: %s\n", opt_.target.c_str(),
                   StatusText(st).c_str());
      return false;
    }
    if (resp.status() != hv1::HealthCheckResponse::SERVING) {
      std::fprintf(stderr, "esbench: %s is not SERVING (status %d)\n", opt_.target.c_str(),
                   static_cast<int>(resp.status()));
      return false;
    }
    return true;
  }

  bool Want(const char *group) const { return opt_.only.empty() || opt_.only.count(group) > 0; }

  // Returns the process exit status.
  int RunAll() {
    // Prime the connections (TCP and HTTP/2 windows, allocators, the
    // server's caches) so that the first scenario is not the one that pays.
    double unused = 0;
    RunUnary(
        16, -1, [](Worker *w, int) { return std::unique_ptr<Slot>(new HealthSlot(w)); }, &unused,
        0.0);
    if (broken_) return 2;
    std::vector<Scenario> unary = UnaryScenarios();
    RunRounds(&unary);
    if (!unary.empty()) PrintHeader();
    if (!broken_) ReportUnary(&unary);
    if (Want("catchup")) CatchUp();
    if (Want("live")) Live(16);
    if (Want("fanout")) FanOut();
    if (opt_.only.count("dcb")) Dcb();
    std::printf("\n");
    for (auto &n : notes_) std::printf("%s\n", n.c_str());
    std::printf("load average at end: %s\n", LoadAvg().c_str());
    return broken_ ? 2 : (failed_ ? 1 : 0);
  }

  bool broken() const { return broken_; }

 private:
  std::shared_ptr<grpc::Channel> MakeChannel(int i) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
    // A distinct argument keeps the channels from sharing one connection.
    args.SetInt("esbench.channel", i);
    return grpc::CreateCustomChannel(opt_.target, grpc::InsecureChannelCredentials(), args);
  }

  std::string Stream(const std::string &what) const { return "bench-" + run_id_ + "-" + what; }

  // Runs one unary scenario. make(worker, slot index) builds a slot. With
  // budget >= 0 it issues exactly that many calls and counts them all;
  // otherwise it warms up and measures for opt_.seconds.
  Stats RunUnary(int inflight, int64_t budget, const SlotFactory &make, double *seconds,
                 double measure_seconds = -1) {
    if (measure_seconds < 0) measure_seconds = opt_.seconds;
    if (broken_) return Stats();
    Plan plan;
    int64_t cpu0 = ServerCpuNs(opt_.server_pid);
    int64_t t0 = NowNs();
    if (budget >= 0) {
      plan.budgeted = true;
      plan.budget.store(budget);
      plan.window_start_ns = t0;
      plan.window_end_ns = kNever;
    } else {
      plan.window_start_ns = t0 + static_cast<int64_t>(opt_.warmup * kNsPerSec);
      plan.window_end_ns = plan.window_start_ns + static_cast<int64_t>(measure_seconds * kNsPerSec);
    }
    int nworkers = std::min(opt_.client_threads, inflight);
    std::vector<std::unique_ptr<Worker>> workers;
    for (int i = 0; i < nworkers; i++)
      workers.push_back(std::make_unique<Worker>(channels_[i], &plan));
    for (int i = 0; i < inflight; i++) {
      Worker *w = workers[static_cast<size_t>(i % nworkers)].get();
      w->Add(make(w, i));
    }
    std::vector<std::thread> threads;
    for (size_t i = 1; i < workers.size(); i++)
      threads.emplace_back([&workers, i] { workers[i]->Run(); });
    workers[0]->Run();
    for (auto &t : threads) t.join();
    int64_t t1 = NowNs();
    int64_t cpu1 = ServerCpuNs(opt_.server_pid);
    Stats all;
    for (auto &w : workers) all.Merge(std::move(w->stats()));
    all.wall_ns = t1 - t0;
    all.server_cpu_ns = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    *seconds = budget >= 0 ? static_cast<double>(t1 - t0) / kNsPerSec : measure_seconds;
    if (plan.abort.load()) {
      std::fprintf(stderr, "esbench: the server stopped answering (%s)\n", all.first_error.c_str());
      broken_ = true;
    }
    return all;
  }

  // A unary scenario: how to build its slots, and what its rounds measured.
  struct Scenario {
    std::string name;
    int inflight = 0;
    bool health = false;       // the ceiling itself
    bool show_events = false;  // events/s is meaningful
    SlotFactory make;
    std::vector<double> call_rates, event_rates;  // per round
    Stats stats;                                  // all rounds merged
  };

  std::vector<Scenario> UnaryScenarios() {
    std::vector<Scenario> out;
    size_t payload = opt_.payload;
    auto add = [&out](std::string name, int inflight, bool health, bool events, SlotFactory make) {
      Scenario sc;
      sc.name = std::move(name);
      sc.inflight = inflight;
      sc.health = health;
      sc.show_events = events;
      sc.make = std::move(make);
      out.push_back(std::move(sc));
    };
    if (Want("health"))
      for (int c : {1, 16, 64})
        add("Health/Check", c, true, false,
            [](Worker *w, int) { return std::unique_ptr<Slot>(new HealthSlot(w)); });
    for (bool hot : {false, true}) {
      if (!Want(hot ? "hot" : "append")) continue;
      for (int c : {1, 16, 64}) {
        std::string base = Stream(std::string(hot ? "hot" : "distinct") + std::to_string(c));
        add(hot ? "Append 1 event, one hot stream" : "Append 1 event, distinct streams", c, false,
            true, [base, hot, payload](Worker *w, int i) {
              std::string stream = hot ? base : base + "-" + std::to_string(i);
              return std::unique_ptr<Slot>(new AppendSlot(w, stream, 1, payload));
            });
      }
    }
    if (Want("batch")) {
      std::string base = Stream("batch");
      add("Append batch of 10, distinct streams", 16, false, true,
          [base, payload](Worker *w, int i) {
            return std::unique_ptr<Slot>(
                new AppendSlot(w, base + "-" + std::to_string(i), 10, payload));
          });
      add("Append batch of 100, distinct streams", 16, false, true,
          [base, payload](Worker *w, int i) {
            return std::unique_ptr<Slot>(
                new AppendSlot(w, base + "-100-" + std::to_string(i), 100, payload));
          });
    }
    if (Want("read")) {
      const uint64_t length = 1000;
      const uint32_t page = 100;
      std::string stream = Stream("read");
      double secs = 0;
      Stats pre = Prefill(stream, length, 1, &secs);
      if (!broken_ && pre.errors == 0)
        add("ReadStream page of 100 (1,000-event stream)", 16, false, true,
            [stream](Worker *w, int i) {
              return std::unique_ptr<Slot>(
                  new ReadSlot(w, stream, length, page, static_cast<uint64_t>(i)));
            });
      // ReadAll: pages of 1,000 (the server's most) over 20,000 events
      // written for it, so that the pages come from the store, not from
      // events the appends just wrote.
      const uint64_t all_length = 20000;
      const uint32_t all_page = 1000;
      Stats all = Prefill(Stream("readall"), all_length, 16, &secs);
      uint64_t first = all.min_first_position;
      if (!broken_ && all.errors == 0 && all.max_last_position - first + 1 == all_length)
        add("ReadAll page of 1,000", 16, false, true, [first](Worker *w, int i) {
          return std::unique_ptr<Slot>(
              new ReadAllSlot(w, first, all_length, all_page, static_cast<uint64_t>(i)));
        });
    }
    return out;
  }

  // Runs every scenario once per round, each for seconds / rounds, so that
  // a change in the machine's background load touches all of them alike.
  void RunRounds(std::vector<Scenario> *scenarios) {
    double slice = opt_.seconds / opt_.rounds;
    for (int r = 0; r < opt_.rounds && !broken_; r++) {
      for (Scenario &sc : *scenarios) {
        double secs = 0;
        Stats s = RunUnary(sc.inflight, -1, sc.make, &secs, slice);
        if (broken_) return;
        sc.call_rates.push_back(static_cast<double>(s.calls) / secs);
        sc.event_rates.push_back(static_cast<double>(s.events) / secs);
        sc.stats.Merge(std::move(s));
      }
      if (opt_.rounds > 1)
        std::fprintf(stderr, "esbench: round %d of %d done\n", r + 1, opt_.rounds);
    }
  }

  static double Median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }

  // Prints one row per unary scenario: rates are the median over the rounds,
  // latencies are over every counted call of every round.
  void ReportUnary(std::vector<Scenario> *scenarios) {
    std::map<int, double> ceiling;  // Health/Check calls/s by calls in flight
    for (Scenario &sc : *scenarios)
      if (sc.health) ceiling[sc.inflight] = Median(sc.call_rates);
    for (Scenario &sc : *scenarios) {
      Row r;
      r.name = sc.name;
      r.inflight = sc.inflight;
      r.calls_per_s = Median(sc.call_rates);
      if (sc.show_events) r.events_per_s = Median(sc.event_rates);
      r.p50_us = Percentile(sc.stats.latency_ns, 0.50);
      r.p99_us = Percentile(sc.stats.latency_ns, 0.99);
      r.server_us = CpuPer(sc.stats.server_cpu_ns, sc.stats.completed);
      auto h = ceiling.find(sc.inflight);
      if (h != ceiling.end() && h->second > 0) r.vs_health = r.calls_per_s / h->second;
      std::string notes;
      if (sc.call_rates.size() > 1) {
        auto mm = std::minmax_element(sc.call_rates.begin(), sc.call_rates.end());
        char buf[96];
        std::snprintf(buf, sizeof buf, "rounds %.0f–%.0f calls/s", *mm.first, *mm.second);
        notes = buf;
      }
      if (sc.stats.server_cpu_ns >= 0 && sc.stats.wall_ns > 0) {
        char buf[64];
        std::snprintf(
            buf, sizeof buf, "%sserver busy %.2f cores", notes.empty() ? "" : "; ",
            static_cast<double>(sc.stats.server_cpu_ns) / static_cast<double>(sc.stats.wall_ns));
        notes += buf;
      }
      if (sc.stats.errors > 0) {
        failed_ = true;
        notes += (notes.empty() ? "" : "; ") + std::to_string(sc.stats.errors) +
                 " errors, first: " + sc.stats.first_error;
      }
      r.notes = notes;
      PrintRow(r);
    }
  }

  // Appends `events` events in batches of 100, 16 in flight, spread over
  // `streams` streams named base-0, base-1, ... (one stream when 1: then the
  // name is base itself). Returns the stats (positions, acked).
  Stats Prefill(const std::string &base, uint64_t events, int streams, double *seconds) {
    const int batch = 100;
    int64_t calls = static_cast<int64_t>((events + batch - 1) / batch);
    size_t payload = opt_.payload;
    Stats s = RunUnary(
        std::min<int64_t>(16, calls), calls,
        [&](Worker *w, int i) {
          std::string stream = streams == 1 ? base : base + "-" + std::to_string(i % streams);
          return std::unique_ptr<Slot>(new AppendSlot(w, stream, batch, payload));
        },
        seconds);
    if (s.errors > 0) {
      failed_ = true;
      notes_.push_back("prefill of " + base + " failed: " + s.first_error);
    }
    return s;
  }

  void CatchUp();
  void CatchUpBatched(uint64_t from, uint64_t to);
  void Live(int inflight);
  void FanOut();
  void Dcb();
  struct FanResult;
  FanResult FanLive(int subscribers, double rate);
  FanResult FanCatchUp(int subscribers);
  void PrintFan(const FanResult &r, double base_calls_per_s);

  Options opt_;
  std::string run_id_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  // The fan-out subscribers' connections, made when that group runs.
  std::vector<std::shared_ptr<grpc::Channel>> fan_channels_;
  std::vector<std::string> notes_;  // printed after the table
  bool failed_ = false;             // some scenario saw errors
  bool broken_ = false;             // the server went away
};

// ---------------------------------------------------------------------------
// Subscriptions

// One Subscribe call driven as a state machine with one operation outstanding
// at a time. It checks that events arrive with consecutive global positions.
class Subscriber : public Tag {
 public:
  Subscriber(esv1::EventStore::Stub *stub, grpc::CompletionQueue *cq) : stub_(stub), cq_(cq) {}

  // Starts the call. from_end: deliver only events committed from now on.
  void Start(uint64_t from_position, bool from_end) {
    req_.set_from_position(from_position);
    req_.set_from_end(from_end);
    reader_ = stub_->PrepareAsyncSubscribe(&ctx_, req_, cq_);
    state_ = kStarting;
    started_ns = NowNs();
    reader_->StartCall(this);
  }

  // Ends the call (from the thread that pumps cq).
  void Stop() {
    stopping_ = true;
    ctx_.TryCancel();
    if (state_ == kIdle) FinishCall();
  }

  void Proceed(bool ok) override {
    switch (state_) {
      case kStarting:
      case kReading:
        if (!ok) {
          FinishCall();
          return;
        }
        if (state_ == kReading) OnMessage();
        if (stopping_ || (stop_after > 0 && received >= stop_after)) {
          state_ = kIdle;
          if (!stopping_) {
            done_ns = NowNs();
            Stop();
          } else {
            FinishCall();
          }
          return;
        }
        state_ = kReading;
        reader_->Read(&msg_, this);
        return;
      case kFinishing:
        state_ = kFinished;
        return;
      case kIdle:
      case kFinished:
        return;
    }
  }

  bool finished() const { return state_ == kFinished; }
  const grpc::Status &status() const { return status_; }

  // Observations, read by the scenario between pumps.
  uint64_t stop_after = 0;  // stop by itself after this many events
  uint64_t received = 0;    // events so far
  uint64_t in_window = 0;   // events received inside [win_start, win_end)
  int64_t win_start_ns = kNever, win_end_ns = kNever;
  std::vector<int64_t> delay_ns;  // send-to-receive delays inside the window
  bool measure_delay = false;
  bool caught_up = false;
  uint64_t caught_up_head = 0;
  uint64_t expected_next = 0;  // next global position (0 = any)
  std::string problem;         // first ordering problem seen
  int64_t started_ns = 0, first_event_ns = 0, done_ns = 0;

 private:
  enum State { kIdle, kStarting, kReading, kFinishing, kFinished };

  void FinishCall() {
    state_ = kFinishing;
    reader_->Finish(&status_, this);
  }

  void OnMessage() {
    if (msg_.has_caught_up()) {
      if (!caught_up) caught_up_head = msg_.caught_up().head_position();
      caught_up = true;
      return;
    }
    if (!msg_.has_event()) return;
    int64_t now = NowNs();
    const esv1::RecordedEvent &e = msg_.event();
    if (received == 0) first_event_ns = now;
    received++;
    uint64_t pos = e.global_position();
    if (expected_next != 0 && pos != expected_next && problem.empty()) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "expected global position %" PRIu64 ", got %" PRIu64,
                    expected_next, pos);
      problem = buf;
    }
    expected_next = pos + 1;
    if (now >= win_start_ns && now < win_end_ns) {
      in_window++;
      if (measure_delay && e.payload().size() >= sizeof(int64_t)) {
        int64_t sent = 0;
        std::memcpy(&sent, e.payload().data(), sizeof sent);
        delay_ns.push_back(now - sent);
      }
    }
  }

  esv1::EventStore::Stub *stub_;
  grpc::CompletionQueue *cq_;
  grpc::ClientContext ctx_;
  esv1::SubscribeRequest req_;
  esv1::SubscribeResponse msg_;
  grpc::Status status_;
  std::unique_ptr<grpc::ClientAsyncReader<esv1::SubscribeResponse>> reader_;
  State state_ = kIdle;
  bool stopping_ = false;
};

// Catch-up: pre-fill N events, then time one Subscribe from the first of them
// until it has received all N.
void Bench::CatchUp() {
  if (broken_) return;
  uint64_t n = opt_.subscribe_events;
  double fill_secs = 0;
  Stats pre = Prefill(Stream("catchup"), n, 16, &fill_secs);
  if (broken_ || pre.errors > 0) return;
  uint64_t from = pre.min_first_position;
  bool contiguous = pre.max_last_position - from + 1 == pre.acked;

  grpc::CompletionQueue cq;
  auto stub = esv1::EventStore::NewStub(channels_[0]);
  Subscriber sub(stub.get(), &cq);
  sub.stop_after = n;
  sub.expected_next = from;
  int64_t cpu0 = ServerCpuNs(opt_.server_pid);
  sub.Start(from, false);
  bool ok = Pump(
      &cq, [&] { return sub.finished(); }, NowNs() + kStreamTimeoutNs);
  if (!ok) {
    sub.Stop();
    Pump(
        &cq, [&] { return sub.finished(); }, kNever);
  }
  Drain(&cq);
  int64_t cpu1 = ServerCpuNs(opt_.server_pid);

  Row r;
  r.name = "Subscribe catch-up, " + std::to_string(n) + " events";
  r.inflight = 1;
  if (cpu0 >= 0 && cpu1 >= 0) r.server_us = CpuPer(cpu1 - cpu0, sub.received);
  std::string notes;
  char buf[200];
  std::snprintf(buf, sizeof buf, "pre-fill %.0f events/s (batches of 100, 16 in flight)",
                static_cast<double>(pre.acked) / fill_secs);
  notes = buf;
  if (!contiguous) notes += "; pre-filled positions interleaved with others";
  if (ok && sub.received == n && sub.problem.empty()) {
    double secs = static_cast<double>(sub.done_ns - sub.started_ns) / kNsPerSec;
    r.events_per_s = static_cast<double>(n) / secs;
    std::snprintf(buf, sizeof buf, "; %.2f s, first event after %.0f µs", secs,
                  static_cast<double>(sub.first_event_ns - sub.started_ns) / 1000.0);
    notes += buf;
  } else {
    failed_ = true;
    r.failed = true;
    notes += "; FAILED: received " + std::to_string(sub.received) + " of " + std::to_string(n);
    if (!sub.problem.empty()) notes += ", " + sub.problem;
    if (!ok) notes += ", timed out";
    if (!sub.status().ok() && sub.status().error_code() != grpc::StatusCode::CANCELLED)
      notes += ", " + StatusText(sub.status());
  }
  r.notes = notes;
  PrintRow(r);
  if (ok && contiguous && opt_.max_batch > 1) CatchUpBatched(from, from + n - 1);
}

// Live: a subscriber at the head while `inflight` appenders (one event per
// call, distinct streams) run; counts deliveries inside the window and the
// delay from the append's send to the subscriber's receipt.
void Bench::Live(int inflight) {
  if (broken_) return;
  grpc::CompletionQueue cq;
  auto stub = esv1::EventStore::NewStub(channels_[0]);
  Subscriber sub(stub.get(), &cq);
  sub.measure_delay = true;
  sub.Start(0, true);
  std::string fail;
  if (!Pump(
          &cq, [&] { return sub.caught_up || sub.finished(); }, NowNs() + 10 * kNsPerSec) ||
      !sub.caught_up) {
    fail = "no CaughtUp within 10 s";
  }

  Plan plan;
  Stats app;
  int64_t cpu0 = -1, cpu1 = -1;
  if (fail.empty()) {
    plan.window_start_ns = NowNs() + static_cast<int64_t>(opt_.warmup * kNsPerSec);
    plan.window_end_ns = plan.window_start_ns + static_cast<int64_t>(opt_.seconds * kNsPerSec);
    sub.win_start_ns = plan.window_start_ns;
    sub.win_end_ns = plan.window_end_ns;
    // The appenders run on a worker thread of their own; this thread keeps
    // reading the subscription.
    Worker w(channels_[0], &plan);
    std::string base = Stream("live");
    for (int i = 0; i < inflight; i++)
      w.Add(std::unique_ptr<Slot>(
          new AppendSlot(&w, base + "-" + std::to_string(i), 1, opt_.payload)));
    cpu0 = ServerCpuNs(opt_.server_pid);
    std::thread appenders([&w] { w.Run(); });
    Pump(
        &cq, [&] { return NowNs() >= plan.window_end_ns || sub.finished(); }, kNever);
    appenders.join();
    app = std::move(w.stats());
    if (plan.abort.load()) {
      broken_ = true;
      std::fprintf(stderr, "esbench: the server stopped answering (%s)\n", app.first_error.c_str());
    }
    // Every acknowledged event must arrive.
    uint64_t want = app.acked;
    if (!Pump(
            &cq, [&] { return sub.received >= want || sub.finished(); },
            NowNs() + 30 * kNsPerSec) ||
        sub.received != want) {
      fail = "delivered " + std::to_string(sub.received) + " of " + std::to_string(want) +
             " acknowledged events";
    }
    if (!sub.problem.empty()) fail += (fail.empty() ? "" : ", ") + sub.problem;
    cpu1 = ServerCpuNs(opt_.server_pid);
  }
  sub.Stop();
  Pump(
      &cq, [&] { return sub.finished(); }, kNever);
  Drain(&cq);
  if (broken_) return;

  Row r;
  r.name = "Subscribe live, 1 subscriber, appender at " + std::to_string(inflight) + " in flight";
  r.inflight = inflight;
  r.events_per_s = static_cast<double>(sub.in_window) / opt_.seconds;
  r.p50_us = Percentile(sub.delay_ns, 0.50);
  r.p99_us = Percentile(sub.delay_ns, 0.99);
  if (cpu0 >= 0 && cpu1 >= 0) r.server_us = CpuPer(cpu1 - cpu0, app.acked);
  char buf[300];
  std::snprintf(buf, sizeof buf,
                "appends %.0f calls/s; latency = append sent → event received; "
                "server CPU per event = its append + its delivery; "
                "%" PRIu64 "/%" PRIu64 " delivered, gap-free",
                static_cast<double>(app.calls) / opt_.seconds, sub.received, app.acked);
  r.notes = buf;
  if (app.errors > 0)
    fail += (fail.empty() ? "" : ", ") + std::to_string(app.errors) +
            " append errors, first: " + app.first_error;
  if (!fail.empty()) {
    failed_ = true;
    r.notes = "FAILED: " + fail;
  }
  PrintRow(r);
}

// ---------------------------------------------------------------------------
// Fan-out: many subscribers of one log
//
// The question is what live subscribers cost the writers, and how fast and
// how exactly the server feeds them. A run puts N subscribers (Subscribe with
// from_end, unfiltered) at the head, waits until every one has its CaughtUp,
// then runs single-event Appends on a connection of their own — 64 in flight
// in a closed loop, or paced at a fixed rate — through a warm-up and a
// measuring window. Afterwards it waits (at most kFanDrainNs) until every
// subscriber has the last acknowledged position, and then checks each
// subscriber: positions from its CaughtUp head + 1 on, consecutive, none
// twice, covering every acknowledged position. A catch-up run instead
// subscribes 100 subscribers to a pre-filled stretch of the log and times
// them until each has all of it.
//
// The latency is acknowledgement → delivery: the appender records, per global
// position, when it saw the Append's response (AckLog); a subscriber looks the
// position up when the event arrives. Counted are the deliveries of events
// acknowledged inside the window, however late they arrive (a subscriber that
// falls behind shows up in p99), plus deliveries that arrive inside the
// window before the appender has seen their acknowledgement (counted as 0:
// the server may send an event out before the Append's response).
//
// The client must not be what is measured. The subscribers' calls are spread
// over several connections (one HTTP/2 connection serializes its streams'
// frames; a real deployment's projections are separate clients) and read by
// a few threads, each with its own completion queue and one Read outstanding
// per call. Responses are taken as raw bytes through the generic stub and
// scanned for the few fields the checks need (global positions, the CaughtUp
// head) without building protobuf objects, which would allocate and copy
// every event's strings and payload only to throw them away. The scanner is
// checked against protobuf's own encoding before the group runs.
// Per event the work is a comparison, an array lookup and a histogram bucket;
// the client's own CPU time is printed with each row, since client and server
// share the cores.

// How long the subscribers may take, after the Appends stopped, to receive
// every acknowledged event.
constexpr int64_t kFanDrainNs = 60 * kNsPerSec;
// How long all subscribers may take to be at the head before the Appends.
constexpr int64_t kFanReadyNs = 60 * kNsPerSec;
// How long the catch-up subscribers may take to receive the whole stretch.
constexpr int64_t kFanCatchUpNs = 300 * kNsPerSec;
// Subscribers in the paced and the catch-up runs.
constexpr int kFanSubscribers = 100;
// Appends in flight in the closed-loop runs (at most in flight when paced).
constexpr int kFanInflight = 64;

int64_t ClientCpuNs() {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return (static_cast<int64_t>(ru.ru_utime.tv_sec) + ru.ru_stime.tv_sec) * kNsPerSec +
         (static_cast<int64_t>(ru.ru_utime.tv_usec) + ru.ru_stime.tv_usec) * 1000;
}

// Counts of non-negative values (ns) in buckets about 3 % wide: 32 per power
// of two, exact below 32. Fixed size, so a thread adds to it without
// allocating, and threads' histograms merge by adding counts.
class Histogram {
 public:
  Histogram() : counts_(kBuckets, 0) {}

  void Add(int64_t ns) {
    counts_[Index(ns > 0 ? static_cast<uint64_t>(ns) : 0)]++;
    total_++;
  }

  void Merge(const Histogram &o) {
    for (size_t i = 0; i < kBuckets; i++) counts_[i] += o.counts_[i];
    total_ += o.total_;
  }

  uint64_t total() const { return total_; }

  // The p-quantile in µs (the middle of its bucket), or -1 when empty.
  double PercentileUs(double p) const {
    if (total_ == 0) return -1;
    uint64_t k = static_cast<uint64_t>(p * static_cast<double>(total_));
    if (k >= total_) k = total_ - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; i++) {
      seen += counts_[i];
      if (seen > k) return Middle(i) / 1000.0;
    }
    return -1;
  }

 private:
  static constexpr int kSubBits = 5;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  static constexpr size_t kBuckets = (64 - kSubBits + 1) * kSub;

  static size_t Index(uint64_t v) {
    if (v < kSub) return static_cast<size_t>(v);
    int e = 63 - __builtin_clzll(v);  // >= kSubBits
    return static_cast<size_t>(e - kSubBits + 1) * kSub + ((v >> (e - kSubBits)) & (kSub - 1));
  }

  static double Middle(size_t i) {
    if (i < kSub) return static_cast<double>(i);
    int e = static_cast<int>(i / kSub) + kSubBits - 1;
    double low = std::ldexp(static_cast<double>(kSub + i % kSub), e - kSubBits);
    return low + std::ldexp(1.0, e - kSubBits) / 2;
  }

  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
};

// When the appender saw each position acknowledged (steady clock, ns; 0 = not
// yet), for positions after `base`. One thread writes, any thread reads.
// Chunks are allocated as positions reach them and published with release;
// the table of chunks is fixed, so a reader never sees it move.
class AckLog {
 public:
  explicit AckLog(uint64_t base) : base_(base), chunks_(new std::atomic<Slot *>[kChunks]) {
    for (size_t i = 0; i < kChunks; i++) chunks_[i].store(nullptr, std::memory_order_relaxed);
  }
  ~AckLog() {
    for (size_t i = 0; i < kChunks; i++) delete[] chunks_[i].load(std::memory_order_relaxed);
  }
  AckLog(const AckLog &) = delete;
  AckLog &operator=(const AckLog &) = delete;

  uint64_t base() const { return base_; }

  // Only from the appender's thread.
  void Record(uint64_t pos, int64_t ns) {
    if (pos <= base_) return;
    uint64_t i = pos - base_ - 1;
    if ((i >> kChunkBits) >= kChunks) return;  // beyond 268 M appends: left out
    std::atomic<Slot *> &c = chunks_[i >> kChunkBits];
    Slot *chunk = c.load(std::memory_order_relaxed);
    if (!chunk) {
      chunk = new Slot[kChunk];
      for (size_t k = 0; k < kChunk; k++) chunk[k].store(0, std::memory_order_relaxed);
      c.store(chunk, std::memory_order_release);
    }
    chunk[i & (kChunk - 1)].store(ns, std::memory_order_relaxed);
  }

  int64_t Get(uint64_t pos) const {
    if (pos <= base_) return 0;
    uint64_t i = pos - base_ - 1;
    if ((i >> kChunkBits) >= kChunks) return 0;
    const Slot *chunk = chunks_[i >> kChunkBits].load(std::memory_order_acquire);
    return chunk ? chunk[i & (kChunk - 1)].load(std::memory_order_relaxed) : 0;
  }

 private:
  using Slot = std::atomic<int64_t>;
  static constexpr int kChunkBits = 16;
  static constexpr size_t kChunk = size_t{1} << kChunkBits;
  static constexpr size_t kChunks = 4096;
  uint64_t base_;
  std::unique_ptr<std::atomic<Slot *>[]> chunks_;
};

// A reader of the protobuf wire format over [p, end), just enough for
// SubscribeResponse: every read checks the bytes that remain.
struct Wire {
  const uint8_t *p;
  const uint8_t *end;

  bool Varint(uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
      uint8_t b = *p++;
      r |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) {
        *v = r;
        return true;
      }
    }
    return false;
  }
  bool Key(uint32_t *field, int *type) {
    uint64_t k = 0;
    if (!Varint(&k)) return false;
    *field = static_cast<uint32_t>(k >> 3);
    *type = static_cast<int>(k & 7);
    return *field != 0;
  }
  // A length-delimited field's contents.
  bool Bytes(Wire *sub) {
    uint64_t n = 0;
    if (!Varint(&n) || n > static_cast<uint64_t>(end - p)) return false;
    sub->p = p;
    sub->end = p + n;
    p += n;
    return true;
  }
  bool Skip(int type) {
    uint64_t v = 0;
    Wire w{nullptr, nullptr};
    switch (type) {
      case 0:
        return Varint(&v);
      case 1:
        if (end - p < 8) return false;
        p += 8;
        return true;
      case 2:
        return Bytes(&w);
      case 5:
        if (end - p < 4) return false;
        p += 4;
        return true;
      default:  // groups do not occur in proto3
        return false;
    }
  }
};

// global_position (field 4) of a RecordedEvent; 0 when absent.
bool ScanEvent(Wire w, uint64_t *pos) {
  *pos = 0;
  while (w.p < w.end) {
    uint32_t f = 0;
    int t = 0;
    if (!w.Key(&f, &t)) return false;
    if (f == 4 && t == 0) {
      if (!w.Varint(pos)) return false;
    } else if (!w.Skip(t)) {
      return false;
    }
  }
  return true;
}

// Scans one SubscribeResponse: appends the global positions of its events
// (`event` = 1, or `batch` = 5 holding `events` = 1) to *positions, and sets
// *caught_up and *head for a `caught_up` (2). Checkpoints and FellBehind are
// skipped. False when the bytes are not a well-formed message.
bool ScanSubscribeResponse(const uint8_t *data, size_t size, std::vector<uint64_t> *positions,
                           bool *caught_up, uint64_t *head) {
  Wire w{data, data + size};
  *caught_up = false;
  while (w.p < w.end) {
    uint32_t f = 0;
    int t = 0;
    if (!w.Key(&f, &t)) return false;
    if (t != 2 || (f != 1 && f != 2 && f != 5)) {
      if (!w.Skip(t)) return false;
      continue;
    }
    Wire sub{nullptr, nullptr};
    if (!w.Bytes(&sub)) return false;
    uint64_t pos = 0;
    if (f == 1) {
      if (!ScanEvent(sub, &pos)) return false;
      positions->push_back(pos);
    } else if (f == 2) {
      *caught_up = true;
      *head = 0;
      while (sub.p < sub.end) {
        uint32_t g = 0;
        int u = 0;
        if (!sub.Key(&g, &u)) return false;
        if (g == 1 && u == 0) {
          if (!sub.Varint(head)) return false;
        } else if (!sub.Skip(u)) {
          return false;
        }
      }
    } else {
      while (sub.p < sub.end) {
        uint32_t g = 0;
        int u = 0;
        if (!sub.Key(&g, &u)) return false;
        if (g == 1 && u == 2) {
          Wire ev{nullptr, nullptr};
          if (!sub.Bytes(&ev) || !ScanEvent(ev, &pos)) return false;
          positions->push_back(pos);
        } else if (!sub.Skip(u)) {
          return false;
        }
      }
    }
  }
  return true;
}

// The scanner against protobuf's encoding of every kind of SubscribeResponse,
// events with every field set. Empty when they agree, else what differed.
std::string CheckScanner() {
  auto fill = [](esv1::RecordedEvent *e, uint64_t pos) {
    e->set_stream_id("scan-check");
    e->set_stream_type("Bench");
    e->set_stream_version(pos + 7);
    e->set_global_position(pos);
    e->set_event_id("0190f0c4-0000-7000-8000-000000000000");
    e->set_event_type("BenchEvent");
    e->set_event_version(3);
    e->set_content_type("application/octet-stream");
    e->set_payload(std::string(300, '\x84'));
    (*e->mutable_metadata())["k"] = "v";
    e->set_correlation_id("c");
    e->set_causation_id("d");
    e->set_occurred_at_unix_ms(1700000000000);
    e->set_recorded_at_unix_ms(1700000000001);
  };
  struct Case {
    esv1::SubscribeResponse msg;
    std::vector<uint64_t> want;
    bool caught_up = false;
    uint64_t head = 0;
  };
  std::vector<Case> cases(5);
  fill(cases[0].msg.mutable_event(), 1);
  cases[0].want = {1};
  for (uint64_t pos : {uint64_t{127}, uint64_t{128}, uint64_t{1} << 40}) {
    fill(cases[1].msg.mutable_batch()->add_events(), pos);
    cases[1].want.push_back(pos);
  }
  cases[2].msg.mutable_caught_up()->set_head_position(300000);
  cases[2].caught_up = true;
  cases[2].head = 300000;
  cases[3].msg.mutable_checkpoint()->set_position(5);
  cases[4].msg.mutable_fell_behind()->set_head_position(6);
  std::vector<uint64_t> got;
  for (size_t i = 0; i < cases.size(); i++) {
    std::string bytes = cases[i].msg.SerializeAsString();
    got.clear();
    bool caught_up = false;
    uint64_t head = 0;
    bool ok = ScanSubscribeResponse(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(),
                                    &got, &caught_up, &head);
    if (!ok || got != cases[i].want || caught_up != cases[i].caught_up ||
        (caught_up && head != cases[i].head))
      return "case " + std::to_string(i) + " (" + cases[i].msg.ShortDebugString().substr(0, 60) +
             "…)";
    // Truncated input is refused, never read past its end.
    if (bytes.size() > 1 && ScanSubscribeResponse(reinterpret_cast<const uint8_t *>(bytes.data()),
                                                  bytes.size() - 1, &got, &caught_up, &head))
      return "case " + std::to_string(i) + " truncated by one byte was accepted";
  }
  return "";
}

// What the fan-out threads share with the thread that runs the scenario.
struct FanShared {
  std::atomic<AckLog *> acks{nullptr};  // null: no latencies
  std::atomic<int64_t> win_start{kNever};
  std::atomic<int64_t> win_end{kNever};
  std::atomic<int> caught_up{0};  // subscribers that had their CaughtUp
  std::atomic<int> ended{0};      // subscribers whose call has ended
};

class FanLoop;

// One Subscribe call through the generic stub: start, send the request and
// half-close, then read until the call ends, then Finish. One operation is
// outstanding at a time, so the call is never idle and a cancel always ends
// it.
class FanSub : public Tag {
 public:
  FanSub(int index, FanLoop *loop) : index_(index), loop_(loop) {}

  // expected_first: the first position this subscriber must receive (0 =
  // its CaughtUp head + 1). stop_at > 0: cancel itself once it has it.
  void Start(grpc::GenericStub *stub, grpc::CompletionQueue *cq, const grpc::ByteBuffer &req,
             uint64_t expected_first, uint64_t stop_at) {
    req_ = req;
    expected_ = expected_first;
    stop_at_ = stop_at;
    call_ = stub->PrepareCall(&ctx_, "/eventstore.v1.EventStore/Subscribe", cq);
    state_ = kStarting;
    call_->StartCall(this);
  }

  // Any thread.
  void Cancel() { ctx_.TryCancel(); }

  void Proceed(bool ok) override;

  int index() const { return index_; }

  // Read by the scenario's thread while the call runs.
  std::atomic<uint64_t> last{0};       // position of the last event received
  std::atomic<uint64_t> head{0};       // from the first CaughtUp
  std::atomic<bool> at_head{false};    // that CaughtUp has come
  std::atomic<bool> ended{false};      // the call has ended
  std::atomic<int64_t> reached_ns{0};  // when it had stop_at

  // Read once the loop's thread has ended.
  uint64_t first = 0;     // first position received
  uint64_t received = 0;  // events received
  std::string problem;    // the first thing that was wrong
  grpc::Status status;

 private:
  enum State { kStarting, kWriting, kReading, kFinishing, kFinished };

  void Finish() {
    state_ = kFinishing;
    call_->Finish(&status, this);
  }
  void OnMessage();

  int index_;
  FanLoop *loop_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
  grpc::ByteBuffer req_;
  grpc::ByteBuffer msg_;
  State state_ = kStarting;
  bool had_caught_up_ = false;
  uint64_t expected_ = 0;  // next position (0 = not known yet)
  uint64_t stop_at_ = 0;
};

// One client thread with its completion queue, reading its share of the
// subscriptions until every one of their calls has ended. What it counts is
// its own and merged after it ended.
class FanLoop {
 public:
  explicit FanLoop(FanShared *shared) : shared(shared) { positions.reserve(1024); }

  void Run() {
    while (active > 0) {
      void *tag = nullptr;
      bool ok = false;
      auto st = cq.AsyncNext(&tag, &ok,
                             std::chrono::system_clock::now() + std::chrono::milliseconds(100));
      if (st == grpc::CompletionQueue::GOT_EVENT) {
        static_cast<Tag *>(tag)->Proceed(ok);
      } else if (st == grpc::CompletionQueue::SHUTDOWN) {
        break;
      }
    }
    Drain(&cq);
  }

  grpc::CompletionQueue cq;
  FanShared *shared;
  int active = 0;                   // calls not yet ended (set before Run)
  std::vector<uint64_t> positions;  // scratch: the events of one message
  Histogram delay;                  // acknowledgement → delivery
  uint64_t in_window = 0;           // events delivered inside the window
  uint64_t delivered = 0;           // events delivered
  uint64_t messages = 0;            // messages carrying events
};

void FanSub::Proceed(bool ok) {
  switch (state_) {
    case kStarting:
      if (!ok) return Finish();
      state_ = kWriting;
      call_->WriteLast(req_, grpc::WriteOptions(), this);
      return;
    case kWriting:
    case kReading:
      if (!ok) return Finish();
      if (state_ == kReading) OnMessage();
      state_ = kReading;
      call_->Read(&msg_, this);
      return;
    case kFinishing:
      state_ = kFinished;
      loop_->active--;
      ended.store(true, std::memory_order_release);
      loop_->shared->ended.fetch_add(1, std::memory_order_release);
      return;
    case kFinished:
      return;
  }
}

void FanSub::OnMessage() {
  FanLoop *l = loop_;
  std::vector<uint64_t> &positions = l->positions;
  positions.clear();
  bool caught_up = false;
  uint64_t caught_up_head = 0;
  grpc::Slice slice;
  bool ok =
      msg_.DumpToSingleSlice(&slice).ok() &&
      ScanSubscribeResponse(slice.begin(), slice.size(), &positions, &caught_up, &caught_up_head);
  msg_.Clear();
  if (!ok) {
    if (problem.empty()) problem = "a malformed SubscribeResponse";
    return;
  }
  if (caught_up) {
    if (!had_caught_up_) {
      had_caught_up_ = true;
      if (expected_ == 0) expected_ = caught_up_head + 1;
      head.store(caught_up_head, std::memory_order_relaxed);
      at_head.store(true, std::memory_order_relaxed);
      l->shared->caught_up.fetch_add(1, std::memory_order_release);
    }
    return;
  }
  if (positions.empty()) return;
  int64_t now = NowNs();
  const AckLog *acks = l->shared->acks.load(std::memory_order_acquire);
  int64_t ws = l->shared->win_start.load(std::memory_order_relaxed);
  int64_t we = l->shared->win_end.load(std::memory_order_relaxed);
  bool in_window = now >= ws && now < we;
  if (expected_ == 0 && problem.empty()) {
    problem = "event " + std::to_string(positions[0]) + " before its CaughtUp";
    expected_ = positions[0];
  }
  for (uint64_t pos : positions) {
    if (received == 0) first = pos;
    received++;
    if (pos != expected_ && problem.empty())
      problem = "expected global position " + std::to_string(expected_) + ", got " +
                std::to_string(pos) + " (event " + std::to_string(received) + ")";
    expected_ = pos + 1;
    if (acks) {
      int64_t ack = acks->Get(pos);
      if (ack != 0 ? (ack >= ws && ack < we) : in_window) l->delay.Add(ack != 0 ? now - ack : 0);
    }
  }
  if (in_window) l->in_window += positions.size();
  l->delivered += positions.size();
  l->messages++;
  last.store(positions.back(), std::memory_order_release);
  if (stop_at_ > 0 && positions.back() >= stop_at_ &&
      reached_ns.load(std::memory_order_relaxed) == 0) {
    reached_ns.store(now, std::memory_order_release);
    Cancel();
  }
}

// N subscriptions spread over the fan-out connections and client threads.
class FanSubscribers {
 public:
  FanSubscribers(const std::vector<std::shared_ptr<grpc::Channel>> &channels, int threads, int nice)
      : threads_(threads), nice_(nice) {
    for (auto &ch : channels) stubs_.push_back(std::make_unique<grpc::GenericStub>(ch));
  }
  // The calls go before the completion queues they were started on.
  ~FanSubscribers() {
    Stop();
    subs.clear();
  }

  FanShared shared;
  std::vector<std::unique_ptr<FanSub>> subs;

  // Starts n calls with the request (see FanSub::Start), then the threads.
  void Start(int n, const esv1::SubscribeRequest &req, uint64_t expected_first, uint64_t stop_at) {
    int nloops = std::max(1, std::min(threads_, n));
    for (int i = 0; i < nloops; i++) loops_.push_back(std::make_unique<FanLoop>(&shared));
    std::string bytes = req.SerializeAsString();
    grpc::Slice slice(bytes);
    grpc::ByteBuffer buf(&slice, 1);
    for (int i = 0; i < n; i++) {
      FanLoop *loop = loops_[static_cast<size_t>(i % nloops)].get();
      auto sub = std::make_unique<FanSub>(i, loop);
      loop->active++;
      sub->Start(stubs_[static_cast<size_t>(i) % stubs_.size()].get(), &loop->cq, buf,
                 expected_first, stop_at);
      subs.push_back(std::move(sub));
    }
    for (auto &l : loops_) {
      FanLoop *loop = l.get();
      int nice = nice_;
      threads.emplace_back([loop, nice] {
        if (nice > 0) {
          // Linux keeps a nice value per thread: this lowers only this one.
          id_t tid = static_cast<id_t>(syscall(SYS_gettid));
          setpriority(PRIO_PROCESS, tid, getpriority(PRIO_PROCESS, tid) + nice);
        }
        loop->Run();
      });
    }
  }

  // Polls every millisecond until pred() holds (true) or deadline_ns passes.
  static bool WaitFor(const std::function<bool()> &pred, int64_t deadline_ns) {
    while (!pred()) {
      if (NowNs() >= deadline_ns) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

  // Ends every call and joins the threads; counters are then safe to read.
  void Stop() {
    for (auto &s : subs) s->Cancel();
    for (auto &t : threads) t.join();
    threads.clear();
  }

  // The merged counts of every thread (after Stop).
  void Totals(Histogram *delay, uint64_t *in_window, uint64_t *delivered,
              uint64_t *messages) const {
    for (auto &l : loops_) {
      delay->Merge(l->delay);
      *in_window += l->in_window;
      *delivered += l->delivered;
      *messages += l->messages;
    }
  }

  std::vector<std::thread> threads;

 private:
  int threads_;
  int nice_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  std::vector<std::unique_ptr<FanLoop>> loops_;
};

// Single-event Appends to distinct streams, on one client thread and one
// connection: closed loop (rate 0: each of `slots` calls issues the next when
// it completes) or paced (a call started every 1/rate s while one of the
// `slots` is free; when none is, the start is skipped and counted). Every
// acknowledged position goes into the AckLog with the time the response was
// seen.
class FanAppender {
 public:
  FanAppender(std::shared_ptr<grpc::Channel> ch, const std::string &stream_base, int slots,
              size_t payload, double rate, AckLog *acks, int64_t win_start, int64_t win_end)
      : stub_(esv1::EventStore::NewStub(ch)),
        rate_(rate),
        acks_(acks),
        win_start_(win_start),
        win_end_(win_end) {
    for (int i = 0; i < slots; i++) {
      auto c = std::make_unique<Call>(this);
      MakeAppend(stream_base + "-" + std::to_string(i), 1, payload, &c->req);
      calls_.push_back(std::move(c));
    }
    latency_ns.reserve(1 << 20);
  }

  void Run() {
    if (rate_ <= 0) {
      for (auto &c : calls_) Issue(c.get());
      Pump(
          &cq_, [this] { return active_.load() == 0; }, kNever);
    } else {
      std::thread completions([this] {
        Pump(
            &cq_, [this] { return issuing_done_.load() && active_.load() == 0; }, kNever);
      });
      int64_t period = static_cast<int64_t>(static_cast<double>(kNsPerSec) / rate_);
      size_t next = 0;
      for (int64_t t = NowNs(); t < win_end_ && !abort.load(); t += period) {
        int64_t now = NowNs();
        if (t > now) std::this_thread::sleep_for(std::chrono::nanoseconds(t - now));
        bool issued = false;
        for (size_t k = 0; k < calls_.size() && !issued; k++) {
          Call *c = calls_[(next + k) % calls_.size()].get();
          if (!c->busy.load(std::memory_order_acquire)) {
            Issue(c);
            next = (next + k + 1) % calls_.size();
            issued = true;
          }
        }
        if (!issued) skipped++;
      }
      issuing_done_.store(true);
      completions.join();
    }
    Drain(&cq_);
  }

  // Results, read after Run.
  uint64_t calls = 0;   // completed OK inside the window
  uint64_t acked = 0;   // completed OK, warm-up included
  uint64_t errors = 0;  // failed
  uint64_t skipped = 0;
  uint64_t min_pos = UINT64_MAX, max_pos = 0;
  std::vector<int64_t> latency_ns;  // of the calls counted in `calls`
  std::string first_error;
  std::atomic<bool> abort{false};  // the server went away or hangs

 private:
  struct Call : public Tag {
    explicit Call(FanAppender *a) : owner(a) {}
    void Proceed(bool) override { owner->Complete(this); }
    FanAppender *owner;
    std::unique_ptr<grpc::ClientContext> ctx;
    esv1::AppendRequest req;
    esv1::AppendResponse resp;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<esv1::AppendResponse>> reader;
    int64_t started_ns = 0;
    std::atomic<bool> busy{false};  // paced: owned by the completions thread
  };

  void Issue(Call *c) {
    c->busy.store(true, std::memory_order_relaxed);
    active_.fetch_add(1);
    c->ctx = std::make_unique<grpc::ClientContext>();
    c->ctx->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    c->started_ns = NowNs();
    c->reader = stub_->PrepareAsyncAppend(c->ctx.get(), c->req, &cq_);
    c->reader->StartCall();
    c->reader->Finish(&c->resp, &c->status, c);
  }

  void Complete(Call *c) {
    int64_t now = NowNs();
    if (c->status.ok()) {
      acked++;
      uint64_t pos = c->resp.first_global_position();
      min_pos = std::min(min_pos, pos);
      max_pos = std::max(max_pos, pos);
      if (acks_) acks_->Record(pos, now);
      if (now >= win_start_ && now < win_end_) {
        calls++;
        latency_ns.push_back(now - c->started_ns);
      }
    } else {
      errors++;
      if (first_error.empty()) first_error = StatusText(c->status);
      if (c->status.error_code() == grpc::StatusCode::UNAVAILABLE ||
          c->status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
        abort.store(true);
    }
    if (rate_ <= 0 && now < win_end_ && !abort.load()) {
      active_.fetch_sub(1);
      Issue(c);
      return;
    }
    c->busy.store(false, std::memory_order_release);
    active_.fetch_sub(1);
  }

  std::unique_ptr<esv1::EventStore::Stub> stub_;
  grpc::CompletionQueue cq_;
  double rate_;
  AckLog *acks_;
  int64_t win_start_, win_end_;
  std::vector<std::unique_ptr<Call>> calls_;
  std::atomic<int> active_{0};
  std::atomic<bool> issuing_done_{false};
};

// One row of the fan-out table.
struct Bench::FanResult {
  std::string name;
  int subscribers = 0;
  bool closed_loop = false;         // 64 Appends in flight: compared with 0 subscribers
  double calls_per_s = -1;          // Appends
  double events_per_s = -1;         // delivered, all subscribers together
  double p50_us = -1, p99_us = -1;  // acknowledgement → delivery
  double drain_s = -1;
  double client_cores = -1, server_cores = -1;
  std::string notes;
  bool failed = false;
};

// Checks one subscriber once its thread has ended: it must have received
// exactly the positions first_want..at least last_want, consecutive. Returns
// what was wrong, or "".
std::string CheckSub(const FanSub &s, uint64_t first_want, uint64_t last_want) {
  std::string why = s.problem;
  uint64_t last = s.last.load();
  if (why.empty() && s.received == 0 && last_want >= first_want)
    why =
        "received nothing, wanted " + std::to_string(first_want) + ".." + std::to_string(last_want);
  else if (why.empty() && s.first != first_want)
    why = "first position " + std::to_string(s.first) + ", wanted " + std::to_string(first_want);
  else if (why.empty() && last < last_want)
    why = "has " + std::to_string(s.first) + ".." + std::to_string(last) + ", missing " +
          std::to_string(last + 1) + ".." + std::to_string(last_want);
  if (!why.empty() && !s.status.ok() && s.status.error_code() != grpc::StatusCode::CANCELLED)
    why += " (call ended: " + StatusText(s.status) + ")";
  return why.empty() ? "" : "subscriber " + std::to_string(s.index()) + ": " + why;
}

// The catch-up again, over the same events, as a consumer that catches up
// should ask: batches of --max-batch events per message. The subscription is
// read the way the fan-out group reads its own (raw bytes, positions scanned,
// see FanSub), so that decoding every event does not bound what one client
// thread can take.
void Bench::CatchUpBatched(uint64_t from, uint64_t to) {
  if (broken_) return;
  esv1::SubscribeRequest req;
  req.set_from_position(from);
  req.set_max_batch(opt_.max_batch);
  FanSubscribers subs(channels_, 1, 0);
  int64_t cpu0 = ServerCpuNs(opt_.server_pid);
  int64_t t0 = NowNs();
  subs.Start(1, req, from, to);
  FanSub &sub = *subs.subs[0];
  bool ok = FanSubscribers::WaitFor(
      [&] {
        return sub.reached_ns.load(std::memory_order_acquire) != 0 ||
               sub.ended.load(std::memory_order_acquire);
      },
      t0 + kStreamTimeoutNs);
  int64_t t1 = sub.reached_ns.load();
  int64_t cpu1 = ServerCpuNs(opt_.server_pid);
  subs.Stop();
  std::string why = CheckSub(sub, from, to);
  Histogram unused;
  uint64_t in_window = 0, delivered = 0, messages = 0;
  subs.Totals(&unused, &in_window, &delivered, &messages);

  Row r;
  uint64_t n = to - from + 1;
  r.name = "Subscribe catch-up, " + std::to_string(n) + " events, max_batch " +
           std::to_string(opt_.max_batch);
  r.inflight = 1;
  if (cpu0 >= 0 && cpu1 >= 0) r.server_us = CpuPer(cpu1 - cpu0, n);
  char buf[200];
  if (ok && t1 > 0 && why.empty()) {
    double secs = static_cast<double>(t1 - t0) / kNsPerSec;
    r.events_per_s = static_cast<double>(n) / secs;
    std::snprintf(buf, sizeof buf,
                  "the same events again, in order exactly once; %.2f s, %.1f events per message",
                  secs,
                  messages ? static_cast<double>(delivered) / static_cast<double>(messages) : 0.0);
    r.notes = buf;
  } else {
    failed_ = true;
    r.failed = true;
    r.notes = "FAILED: " + (why.empty() ? std::string("timed out") : why);
  }
  PrintRow(r);
}

Bench::FanResult Bench::FanLive(int n, double rate) {
  FanResult r;
  r.subscribers = n;
  r.closed_loop = rate <= 0;
  char buf[256];
  if (rate <= 0)
    std::snprintf(buf, sizeof buf, "%d live subscribers, Appends at %d in flight", n, kFanInflight);
  else
    std::snprintf(buf, sizeof buf, "%d live subscribers, Appends paced at %.0f/s", n, rate);
  r.name = buf;
  std::vector<std::string> problems;
  std::unique_ptr<AckLog> acks;  // outlives the subscribers' threads
  FanSubscribers subs(fan_channels_, opt_.fanout_threads, opt_.subscriber_nice);
  esv1::SubscribeRequest req;
  req.set_from_end(true);
  req.set_max_batch(opt_.max_batch);
  int64_t setup0 = NowNs();
  subs.Start(n, req, 0, 0);
  FanShared &sh = subs.shared;
  bool ready = FanSubscribers::WaitFor(
      [&] {
        return sh.caught_up.load(std::memory_order_acquire) == n ||
               sh.ended.load(std::memory_order_acquire) > 0;
      },
      NowNs() + kFanReadyNs);
  int64_t setup_ns = NowNs() - setup0;
  if (!ready || sh.caught_up.load(std::memory_order_acquire) != n) {
    subs.Stop();
    for (auto &s : subs.subs)
      if (!s->at_head.load()) {
        std::string why = s->problem.empty() ? "no CaughtUp" : s->problem;
        if (!s->status.ok()) why += " (" + StatusText(s->status) + ")";
        problems.push_back("subscriber " + std::to_string(s->index()) + ": " + why);
        if (problems.size() >= 3) break;
      }
    r.failed = true;
    r.notes = "FAILED: " + std::to_string(n - sh.caught_up.load()) + " of " + std::to_string(n) +
              " subscribers not at the head within " + std::to_string(kFanReadyNs / kNsPerSec) +
              " s";
    for (auto &p : problems) r.notes += "; " + p;
    return r;
  }
  uint64_t base = UINT64_MAX;
  for (auto &s : subs.subs) base = std::min(base, s->head.load());
  if (n > 0) acks = std::make_unique<AckLog>(base);

  int64_t t0 = NowNs();
  int64_t ws = t0 + static_cast<int64_t>(opt_.warmup * kNsPerSec);
  int64_t we = ws + static_cast<int64_t>(opt_.seconds * kNsPerSec);
  sh.win_start.store(ws);
  sh.win_end.store(we);
  sh.acks.store(acks.get(), std::memory_order_release);
  int64_t cpu0 = ClientCpuNs(), scpu0 = ServerCpuNs(opt_.server_pid);
  FanAppender app(channels_[0], Stream("fanout" + std::to_string(n) + (rate > 0 ? "p" : "")),
                  kFanInflight, opt_.payload, rate, acks.get(), ws, we);
  app.Run();
  int64_t t_stop = NowNs();
  if (app.abort.load()) {
    broken_ = true;
    std::fprintf(stderr, "esbench: the server stopped answering (%s)\n", app.first_error.c_str());
  }

  // The drain: every subscriber up to the last acknowledged position.
  uint64_t target = app.max_pos;
  bool drained = n == 0 || app.acked == 0 ||
                 FanSubscribers::WaitFor(
                     [&] {
                       for (auto &s : subs.subs)
                         if (s->last.load(std::memory_order_acquire) < target &&
                             !s->ended.load(std::memory_order_acquire))
                           return false;
                       return true;
                     },
                     t_stop + kFanDrainNs);
  int64_t t_drained = NowNs();
  int64_t cpu1 = ClientCpuNs(), scpu1 = ServerCpuNs(opt_.server_pid);
  subs.Stop();

  if (app.acked > 0)
    for (auto &s : subs.subs) {
      // Every subscriber starts right after its own CaughtUp head, which must
      // lie before every acknowledged position.
      std::string why = CheckSub(*s, s->head.load() + 1, target);
      if (why.empty() && s->head.load() >= app.min_pos)
        why = "subscriber " + std::to_string(s->index()) + ": its CaughtUp head " +
              std::to_string(s->head.load()) + " is not before the first acknowledged position " +
              std::to_string(app.min_pos);
      if (!why.empty()) problems.push_back(why);
    }
  Histogram delay;
  uint64_t in_window = 0, delivered = 0, messages = 0;
  subs.Totals(&delay, &in_window, &delivered, &messages);

  double wall = static_cast<double>(t_drained - t0);
  r.calls_per_s = static_cast<double>(app.calls) / opt_.seconds;
  if (n > 0) {
    r.events_per_s = static_cast<double>(in_window) / opt_.seconds;
    r.p50_us = delay.PercentileUs(0.50);
    r.p99_us = delay.PercentileUs(0.99);
    r.drain_s = static_cast<double>(t_drained - t_stop) / kNsPerSec;
  }
  if (cpu0 >= 0 && cpu1 >= 0) r.client_cores = static_cast<double>(cpu1 - cpu0) / wall;
  if (scpu0 >= 0 && scpu1 >= 0) r.server_cores = static_cast<double>(scpu1 - scpu0) / wall;
  std::string fail;
  if (app.errors > 0)
    fail = std::to_string(app.errors) + " Append errors, first: " + app.first_error;
  if (!drained) {
    int behind = 0;
    for (auto &s : subs.subs)
      if (s->last.load() < target) behind++;
    fail += (fail.empty() ? "" : "; ") + std::to_string(behind) + " subscriber(s) still behind " +
            std::to_string(kFanDrainNs / kNsPerSec) + " s after the Appends stopped";
  }
  if (!problems.empty()) {
    fail += (fail.empty() ? "" : "; ") + std::to_string(problems.size()) + " subscriber(s) wrong";
    for (size_t i = 0; i < problems.size() && i < 3; i++) fail += "; " + problems[i];
  }
  if (app.latency_ns.empty())
    std::snprintf(buf, sizeof buf, "no Append completed inside the window");
  else
    std::snprintf(buf, sizeof buf, "Append p50 %.0f µs, p99 %.0f µs",
                  Percentile(app.latency_ns, 0.50), Percentile(app.latency_ns, 0.99));
  std::string notes = buf;
  if (n > 0) {
    std::snprintf(buf, sizeof buf,
                  "; %" PRIu64 " acknowledged%s (%" PRIu64
                  " deliveries, %.1f events per message); %.2f s to subscribe",
                  app.acked, fail.empty() ? ", each to every subscriber in order exactly once" : "",
                  delivered,
                  messages ? static_cast<double>(delivered) / static_cast<double>(messages) : 0.0,
                  static_cast<double>(setup_ns) / kNsPerSec);
    notes += buf;
    if (cpu0 >= 0 && cpu1 >= 0 && delivered > 0) {
      std::snprintf(buf, sizeof buf, "; client CPU %.2f µs per delivery (its Appends included)",
                    static_cast<double>(cpu1 - cpu0) / 1000.0 / static_cast<double>(delivered));
      notes += buf;
    }
  }
  if (app.skipped > 0)
    notes += "; " + std::to_string(app.skipped) + " paced starts skipped (all slots busy)";
  if (!fail.empty()) {
    r.failed = true;
    notes = "FAILED: " + fail + "; " + notes;
  }
  r.notes = notes;
  return r;
}

Bench::FanResult Bench::FanCatchUp(int n) {
  FanResult r;
  r.subscribers = n;
  uint64_t k = opt_.fanout_events;
  r.name = std::to_string(n) + " subscribers catching up over " + std::to_string(k) + " events";
  double fill_secs = 0;
  Stats pre = Prefill(Stream("fanout-catchup"), k, 16, &fill_secs);
  if (broken_ || pre.errors > 0) {
    r.failed = true;
    r.notes = "FAILED: the pre-fill failed: " + pre.first_error;
    return r;
  }
  uint64_t from = pre.min_first_position, to = pre.max_last_position;
  esv1::SubscribeRequest req;
  req.set_from_position(from);
  req.set_max_batch(opt_.max_batch);
  FanSubscribers subs(fan_channels_, opt_.fanout_threads, opt_.subscriber_nice);
  int64_t cpu0 = ClientCpuNs(), scpu0 = ServerCpuNs(opt_.server_pid);
  int64_t t0 = NowNs();
  subs.Start(n, req, from, to);
  bool ok = FanSubscribers::WaitFor(
      [&] {
        for (auto &s : subs.subs)
          if (s->reached_ns.load(std::memory_order_acquire) == 0 &&
              !s->ended.load(std::memory_order_acquire))
            return false;
        return true;
      },
      t0 + kFanCatchUpNs);
  int64_t t1 = 0;
  for (auto &s : subs.subs) t1 = std::max(t1, s->reached_ns.load());
  int64_t t_now = NowNs();
  int64_t cpu1 = ClientCpuNs(), scpu1 = ServerCpuNs(opt_.server_pid);
  subs.Stop();
  std::vector<std::string> problems;
  for (auto &s : subs.subs) {
    std::string why = CheckSub(*s, from, to);
    if (!why.empty()) problems.push_back(why);
  }
  Histogram unused;
  uint64_t in_window = 0, delivered = 0, messages = 0;
  subs.Totals(&unused, &in_window, &delivered, &messages);
  char buf[300];
  double secs = static_cast<double>(t1 - t0) / kNsPerSec;
  std::snprintf(buf, sizeof buf,
                "all %d had positions %" PRIu64 "..%" PRIu64
                " in order exactly once after "
                "%.2f s (%.1f events per message); pre-fill %.0f events/s",
                n, from, to, secs,
                messages ? static_cast<double>(delivered) / static_cast<double>(messages) : 0.0,
                static_cast<double>(pre.acked) / fill_secs);
  std::string notes = buf;
  if (to - from + 1 != pre.acked) notes += "; other events interleaved with the pre-fill";
  double wall = static_cast<double>(t_now - t0);
  if (cpu0 >= 0 && cpu1 >= 0) r.client_cores = static_cast<double>(cpu1 - cpu0) / wall;
  if (scpu0 >= 0 && scpu1 >= 0) r.server_cores = static_cast<double>(scpu1 - scpu0) / wall;
  if (ok && problems.empty()) {
    r.events_per_s = static_cast<double>(n) * static_cast<double>(to - from + 1) / secs;
  } else {
    r.failed = true;
    std::string fail =
        ok ? "" : "not all done within " + std::to_string(kFanCatchUpNs / kNsPerSec) + " s";
    if (!problems.empty()) {
      fail += (fail.empty() ? "" : "; ") + std::to_string(problems.size()) + " subscriber(s) wrong";
      for (size_t i = 0; i < problems.size() && i < 3; i++) fail += "; " + problems[i];
    }
    notes = "FAILED: " + fail;
  }
  r.notes = notes;
  return r;
}

void Bench::PrintFan(const FanResult &r, double base_calls_per_s) {
  double vs = r.closed_loop && base_calls_per_s > 0 && r.calls_per_s >= 0
                  ? r.calls_per_s / base_calls_per_s
                  : -1;
  std::printf("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.name.c_str(),
              r.subscribers, Fmt(r.calls_per_s, "%.0f").c_str(), Fmt(vs, "%.2f").c_str(),
              Fmt(r.events_per_s, "%.0f").c_str(), Fmt(r.p50_us, "%.0f").c_str(),
              Fmt(r.p99_us, "%.0f").c_str(), Fmt(r.drain_s, "%.2f").c_str(),
              Fmt(r.client_cores, "%.2f").c_str(), Fmt(r.server_cores, "%.2f").c_str(),
              r.notes.c_str());
  std::fflush(stdout);
  if (r.failed) failed_ = true;
}

void Bench::FanOut() {
  if (broken_) return;
  std::string bad = CheckScanner();
  if (!bad.empty()) {
    std::printf("\nfan-out: FAILED: the SubscribeResponse scanner disagrees with protobuf: %s\n",
                bad.c_str());
    failed_ = true;
    return;
  }
  auto deadline = std::chrono::system_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(opt_.connect_timeout * 1000));
  for (int i = static_cast<int>(fan_channels_.size()); i < opt_.fanout_channels; i++) {
    fan_channels_.push_back(MakeChannel(100 + i));
    if (!fan_channels_.back()->WaitForConnected(deadline)) {
      std::fprintf(stderr, "esbench: fan-out connection %d did not connect\n", i);
      broken_ = true;
      return;
    }
  }
  std::printf(
      "\n| fan-out | subscribers | Append calls/s | vs 0 subscribers | events delivered/s | "
      "ack→delivery p50 µs | p99 µs | drain s | client CPU cores | server CPU cores | notes |\n"
      "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
  std::fflush(stdout);
  std::map<int, double> rate;  // Append calls/s by subscribers
  for (int n : opt_.fanout_subscribers) {
    if (broken_) return;
    FanResult r = FanLive(n, 0);
    if (!r.failed) rate[n] = r.calls_per_s;
    auto base = rate.find(0);
    PrintFan(r, base == rate.end() ? -1 : base->second);
  }
  FanResult paced;
  if (!broken_) {
    paced = FanLive(kFanSubscribers, opt_.fanout_rate);
    PrintFan(paced, -1);
  }
  FanResult catchup;
  if (!broken_) {
    catchup = FanCatchUp(kFanSubscribers);
    PrintFan(catchup, -1);
  }
  // The goals, said plainly.
  auto ratio = [&](int n) {
    auto a = rate.find(n), b = rate.find(0);
    return a == rate.end() || b == rate.end() || b->second <= 0 ? -1.0 : a->second / b->second;
  };
  auto verdict = [](bool met) { return met ? "met" : "NOT met"; };
  std::vector<std::string> goals;
  char buf[200];
  for (auto goal : {std::make_pair(100, 0.8), std::make_pair(1000, 0.5)}) {
    double v = ratio(goal.first);
    if (v < 0) continue;
    std::snprintf(buf, sizeof buf, "%d subscribers: Append calls/s ≥ %.1f× of none: %.2f× — %s",
                  goal.first, goal.second, v, verdict(v >= goal.second));
    goals.push_back(buf);
  }
  if (!paced.failed && paced.p99_us >= 0) {
    std::snprintf(buf, sizeof buf,
                  "paced %.0f Appends/s, %d subscribers: p99 ack→delivery ≤ 10 ms: %.1f ms — %s",
                  opt_.fanout_rate, kFanSubscribers, paced.p99_us / 1000.0,
                  verdict(paced.p99_us <= 10000));
    goals.push_back(buf);
  }
  if (!catchup.failed && catchup.events_per_s >= 0) {
    std::snprintf(buf, sizeof buf, "%d subscribers catching up: ≥ 1,000,000 events/s: %.0f — %s",
                  kFanSubscribers, catchup.events_per_s, verdict(catchup.events_per_s >= 1e6));
    goals.push_back(buf);
  }
  if (!goals.empty()) std::printf("\nfan-out goals:\n");
  for (auto &g : goals) std::printf("- %s\n", g.c_str());
  std::fflush(stdout);
}

// The DCB group: a log of opt_.dcb_events tagged events (see DcbShared),
// filled with Appends of 1,000 events at 16 in flight; then, in interleaved
// rounds, plain single-event Appends and conditional ones at 64 in flight,
// and ReadAll by one tag from position 1 at 1 and 16 in flight. Goals (issue
// "Tags, queries, conditional and multi-stream appends"): conditional ≥ 0.7×
// the plain rate; a tag's events read in under 1 ms at p50.
void Bench::Dcb() {
  if (broken_) return;
  const int batch = 1000;
  DcbShared sh;
  sh.prefix = "course:" + run_id_ + "-c";
  int64_t calls = static_cast<int64_t>((opt_.dcb_events + batch - 1) / batch);
  sh.events = static_cast<uint64_t>(calls) * batch;
  sh.tags = sh.events / 4;
  size_t payload = opt_.payload;
  std::string fill = Stream("dcb-fill");
  double secs = 0;
  Stats f = RunUnary(
      16, calls,
      [&](Worker *w, int i) {
        return std::unique_ptr<Slot>(
            new DcbSlot(w, DcbSlot::kFill, &sh, fill + "-" + std::to_string(i), batch, payload));
      },
      &secs);
  if (broken_) return;
  std::printf("\nDCB: filled %" PRIu64 " events (%" PRIu64
              " tags, 4 events each, spread over the log) in %.1f s, %.0f events/s\n",
              sh.events, sh.tags, secs, static_cast<double>(f.acked) / secs);
  if (f.errors > 0 || f.max_last_position - f.min_first_position + 1 != sh.events) {
    std::printf("DCB: FAILED: the fill %s\n",
                f.errors ? ("failed: " + f.first_error).c_str() : "is not one contiguous run");
    failed_ = true;
    return;
  }
  // The head the conditions are based on, as a client that just read it.
  auto stub = esv1::EventStore::NewStub(channels_[0]);
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    esv1::ReadAllRequest req;
    req.set_direction(esv1::BACKWARD);
    req.set_max_count(1);
    esv1::ReadAllResponse resp;
    grpc::Status st = stub->ReadAll(&ctx, req, &resp);
    if (!st.ok()) {
      std::printf("DCB: FAILED: reading the head: %s\n", StatusText(st).c_str());
      failed_ = true;
      return;
    }
    sh.after = resp.head_position();
  }
  // Does the server take AppendMany? (PostgreSQL may not yet.) And does it
  // evaluate the condition: after 0, the same condition must fail.
  auto probe = [&](bool many, uint64_t after) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    esv1::AppendRequest one;
    MakeAppend(Stream("dcb-probe"), 1, payload, &one);
    esv1::AppendCondition c;
    c.add_fail_if_events_match()->add_tags(sh.Tag(0));
    c.set_after(after);
    if (!many) {
      *one.mutable_condition() = c;
      esv1::AppendResponse resp;
      return stub->Append(&ctx, one, &resp);
    }
    esv1::AppendManyRequest req;
    *req.add_appends() = one;
    *req.mutable_condition() = c;
    esv1::AppendManyResponse resp;
    return stub->AppendMany(&ctx, req, &resp);
  };
  DcbSlot::Mode cond = DcbSlot::kConditional;
  grpc::Status st = probe(true, sh.after);
  if (st.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    cond = DcbSlot::kConditionalAppend;
    notes_.push_back(
        "DCB: the server does not implement AppendMany (UNIMPLEMENTED): the conditional "
        "append is sent as an Append with its condition instead");
    st = probe(false, sh.after);
  }
  if (!st.ok()) {
    std::printf("DCB: FAILED: a conditional append that should pass: %s\n", StatusText(st).c_str());
    failed_ = true;
    return;
  }
  st = probe(cond == DcbSlot::kConditional, 0);
  if (st.error_code() != grpc::StatusCode::ABORTED) {
    std::printf(
        "DCB: FAILED: a conditional append whose query matches events after `after` "
        "was not refused with ABORTED: %s\n",
        StatusText(st).c_str());
    failed_ = true;
    return;
  }
  std::vector<Scenario> sc(4);
  sc[0].name = "DCB: Append 1 event, distinct streams";
  sc[0].inflight = 64;
  sc[1].name = cond == DcbSlot::kConditional
                   ? "DCB: conditional append 1 event (AppendMany of 1), distinct streams"
                   : "DCB: conditional Append 1 event, distinct streams";
  sc[1].inflight = 64;
  sc[2].name = "DCB: ReadAll by one tag (4 events) from position 1";
  sc[2].inflight = 1;
  sc[3].name = sc[2].name;
  sc[3].inflight = 16;
  DcbSlot::Mode modes[4] = {DcbSlot::kPlain, cond, DcbSlot::kRead, DcbSlot::kRead};
  for (int k = 0; k < 4; k++) {
    std::string base = Stream("dcb" + std::to_string(k));
    DcbSlot::Mode m = modes[k];
    sc[static_cast<size_t>(k)].show_events = k < 2;
    sc[static_cast<size_t>(k)].make = [&sh, base, m, payload](Worker *w, int i) {
      return std::unique_ptr<Slot>(
          new DcbSlot(w, m, &sh, base + "-" + std::to_string(i), 1, payload));
    };
  }
  RunRounds(&sc);
  if (broken_) return;
  double plain = Median(sc[0].call_rates), conditional = Median(sc[1].call_rates);
  double read_p50 = Percentile(sc[2].stats.latency_ns, 0.50);
  double read_p99 = Percentile(sc[2].stats.latency_ns, 0.99);
  uint64_t errors = 0;
  for (auto &s : sc) errors += s.stats.errors;
  std::printf("\n");
  PrintHeader();
  ReportUnary(&sc);
  auto verdict = [](bool met) { return met ? "met" : "NOT met"; };
  std::printf("\nDCB goals (log of %" PRIu64 " events; condition after the head %" PRIu64
              ", matching 4 events before it):\n",
              sh.events, sh.after);
  double ratio = plain > 0 ? conditional / plain : 0;
  std::printf(
      "- conditional append ≥ 0.7× plain Append at 64 in flight: %.0f / %.0f calls/s = "
      "%.2f× — %s\n",
      conditional, plain, ratio, verdict(ratio >= 0.7 && errors == 0));
  std::printf("- ReadAll by one tag, 1 in flight: p50 < 1 ms: p50 %.0f µs, p99 %.0f µs — %s\n",
              read_p50, read_p99, verdict(read_p50 < 1000 && errors == 0));
  uint64_t wrong = sh.wrong_reads.load();
  if (wrong > 0) {
    failed_ = true;
    std::printf("- FAILED: %" PRIu64 " reads by tag did not return exactly their tag's events\n",
                wrong);
  }
  if (errors > 0)
    std::printf("- FAILED: %" PRIu64 " calls failed (see the notes column)\n", errors);
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------
// Setup

std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t c = line.find(':');
      if (c != std::string::npos) {
        size_t b = line.find_first_not_of(" \t", c + 1);
        return b == std::string::npos ? "" : line.substr(b);
      }
    }
  }
  return "unknown";
}

std::string LoadAvg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

void PrintSetup(const Options &o) {
  char date[64];
  std::time_t t = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  std::printf("# esbench\n\n");
  std::printf("- date: %s\n", date);
  std::printf("- cpu: %s, %u cores online (client and server share them)\n", CpuModel().c_str(),
              std::thread::hardware_concurrency());
  std::printf("- load average at start: %s\n", LoadAvg().c_str());
  std::printf("- server: %s\n", o.target.c_str());
  std::printf("- client: grpc++ %s, async API, %d client thread%s\n", grpc::Version().c_str(),
              o.client_threads, o.client_threads == 1 ? "" : "s");
  if (o.rounds > 1)
    std::printf(
        "- unary scenarios: %.1f s measured each, in %d interleaved rounds of %.2f s, each "
        "after %.1f s warm-up; calls/s and events/s = median of the rounds\n",
        o.seconds, o.rounds, o.seconds / o.rounds, o.warmup);
  else
    std::printf("- unary scenarios: %.1f s warm-up, then %.1f s measured\n", o.warmup, o.seconds);
  std::printf("- subscriptions: catch-up of %" PRIu64
              " pre-filled events; live for %.1f s warm-up + %.1f s measured\n",
              o.subscribe_events, o.warmup, o.seconds);
  if (o.only.empty() || o.only.count("fanout")) {
    std::printf("- fan-out: live subscribers (from the end, unfiltered) ");
    for (size_t i = 0; i < o.fanout_subscribers.size(); i++)
      std::printf("%s%d", i ? ", " : "", o.fanout_subscribers[i]);
    std::printf(
        ", each with single-event Appends at %d in flight on a connection of their own for "
        "%.1f s warm-up + %.1f s measured; then %d subscribers with Appends paced at %.0f/s; "
        "then %d subscribers catching up over %" PRIu64
        " events; subscribers spread over %d connections and %d client threads, "
        "max_batch %u, subscriber threads at nice +%d\n",
        kFanInflight, o.warmup, o.seconds, kFanSubscribers, o.fanout_rate, kFanSubscribers,
        o.fanout_events, o.fanout_channels, o.fanout_threads, o.max_batch, o.subscriber_nice);
  }
  if (o.only.count("dcb"))
    std::printf("- DCB: a log of %" PRIu64
                " events with one tag each, four events a tag, filled with Appends of 1,000 "
                "at 16 in flight; then plain and conditional single-event appends at 64 in "
                "flight and ReadAll by one tag from position 1 at 1 and 16 in flight, in the "
                "interleaved rounds\n",
                o.dcb_events);
  std::printf(
      "- payload: %zu bytes per event; appends use EXPECTED_ANY and "
      "let the server assign event ids\n",
      o.payload);
  std::printf(
      "- vs Health = calls/s ÷ Health/Check calls/s at the same "
      "calls in flight in this run\n\n");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char **argv) {
  // grpc++ locks Abseil mutexes on every operation; their deadlock detection
  // (on in this Abseil build) costs the client CPU the server needs.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  Options opt;
  int rc = ParseArgs(argc, argv, &opt);
  if (rc == 1) {
    Usage(stdout);
    return 0;
  }
  if (rc != 0) return 2;
  Bench bench(opt);
  PrintSetup(opt);
  if (!bench.Connect()) return 2;
  return bench.RunAll();
}
