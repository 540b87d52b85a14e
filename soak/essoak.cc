// essoak: the soak driver. Runs a bounded mixed load against a running
// eventstore server and checks, all along and at the end, that nothing was
// lost or repeated and that the server's memory stayed bounded.
//
// Actors (one thread each, stock grpc++ sync API):
//   appenders    append batches of 1..8 events with their own event ids to
//                their own streams; a batch whose outcome is unknown (an error
//                such as UNAVAILABLE while PostgreSQL restarts) is retried as
//                the identical request until acknowledged (idempotent retry)
//   readers      ReadAll pages from random positions and whole ReadStreams;
//                positions and versions must be consecutive
//   live subs    subscribe from 1 for the whole run and drain to the final head
//   slow subs    subscribe from 1 and sleep between events (served from storage)
//   churn subs   subscribe from a random position for 0.2..3 s, cancel, repeat
// A subscription that ends with an error resubscribes from the position after
// its last event. Every subscriber asserts it saw consecutive global positions
// (no gap, no duplicate) for its range and consecutive versions per stream.
// At the end the whole log is read: positions 1..head with no gap, and every
// acknowledged event exactly once. The server's RSS (/proc/PID/status) is
// sampled; its peak must stay under start + per-event budget * events + slack.
//
// Exit status: 0 when every check passed, 1 otherwise, 2 on bad usage.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "eventstore/v1/eventstore.grpc.pb.h"

namespace {

namespace esv1 = ::eventstore::v1;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string target = "127.0.0.1:50051";
  int seconds = 180;
  int appenders = 4;
  int readers = 2;
  int live_subs = 2;
  int slow_subs = 2;
  int churn_subs = 3;
  int streams_per_appender = 16;
  int payload_bytes = 100;
  int pause_ms = 20;
  int slow_ms = 2;
  long server_pid = 0;
  long rss_per_event = 0;  // bytes of RSS growth allowed per stored event
  long rss_slack_mb = 64;
  bool allow_errors = false;  // transient errors (PostgreSQL restart) are allowed
};

Options opt;
std::shared_ptr<grpc::Channel> channel;
std::atomic<bool> load_done{false};
std::atomic<bool> subs_done{false};
std::atomic<uint64_t> max_acked_pos{0};
std::atomic<uint64_t> events_acked{0}, batches_acked{0}, duplicates_acked{0};
std::atomic<uint64_t> append_retries{0}, read_calls{0}, read_errors{0};
std::atomic<uint64_t> subs_opened{0}, resubscribes{0}, sub_events{0};

std::mutex mu;  // guards the fields below
std::vector<std::string> violations;
std::unordered_set<std::string> acked_ids;

void violation(const std::string &what) {
  std::lock_guard<std::mutex> l(mu);
  if (violations.size() < 50) fprintf(stderr, "essoak: VIOLATION: %s\n", what.c_str());
  violations.push_back(what);
}

bool transient(grpc::StatusCode c) {
  return c == grpc::StatusCode::UNAVAILABLE || c == grpc::StatusCode::DEADLINE_EXCEEDED ||
         c == grpc::StatusCode::INTERNAL || c == grpc::StatusCode::RESOURCE_EXHAUSTED;
}

std::string status_text(const grpc::Status &s) {
  return std::to_string(static_cast<int>(s.error_code())) + " " + s.error_message();
}

std::string event_id(int appender, uint64_t seq) {
  char b[40];
  snprintf(b, sizeof b, "%08x-%04x-4000-8000-%012" PRIx64, 0x50a40000u + appender,
           appender & 0xffff, seq);
  return b;
}

std::string stream_name(int appender, int k) {
  return "soak-a" + std::to_string(appender) + "-s" + std::to_string(k);
}

void set_deadline(grpc::ClientContext &ctx, int seconds) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

// ---- appenders ---------------------------------------------------------------

void appender(int id) {
  auto stub = esv1::EventStore::NewStub(channel);
  std::mt19937_64 rng(1000 + id);
  uint64_t seq = 0;
  std::string payload(opt.payload_bytes, 'x');
  while (!load_done.load()) {
    esv1::AppendRequest req;
    req.set_stream_id(stream_name(id, static_cast<int>(rng() % opt.streams_per_appender)));
    req.set_stream_type("Soak");
    req.set_expected_kind(esv1::EXPECTED_ANY);
    int n = 1 + static_cast<int>(rng() % 8);
    std::vector<std::string> ids;
    for (int i = 0; i < n; i++) {
      auto *e = req.add_events();
      ids.push_back(event_id(id, ++seq));
      e->set_event_id(ids.back());
      e->set_event_type(i % 2 ? "SoakOdd" : "SoakEven");
      e->set_content_type("application/octet-stream");
      e->set_payload(payload);
    }
    // The same request until it is acknowledged; give up 60 s after the load ends.
    auto give_up = Clock::time_point::max();
    for (int attempt = 0;; attempt++) {
      grpc::ClientContext ctx;
      set_deadline(ctx, 10);
      esv1::AppendResponse resp;
      grpc::Status s = stub->Append(&ctx, req, &resp);
      if (s.ok()) {
        if (resp.last_global_position() - resp.first_global_position() + 1 !=
            static_cast<uint64_t>(n)) {
          violation("append of " + std::to_string(n) + " events got positions " +
                    std::to_string(resp.first_global_position()) + ".." +
                    std::to_string(resp.last_global_position()));
        }
        if (resp.duplicate()) duplicates_acked++;
        if (resp.duplicate() && attempt == 0) violation("first attempt answered as a duplicate");
        {
          std::lock_guard<std::mutex> l(mu);
          for (auto &x : ids) acked_ids.insert(x);
        }
        events_acked += n;
        batches_acked++;
        uint64_t cur = max_acked_pos.load();
        while (cur < resp.last_global_position() &&
               !max_acked_pos.compare_exchange_weak(cur, resp.last_global_position())) {
        }
        break;
      }
      if (!transient(s.error_code()) || !opt.allow_errors) {
        violation("append failed: " + status_text(s));
        if (!opt.allow_errors) return;
      }
      append_retries++;
      if (load_done.load() && give_up == Clock::time_point::max())
        give_up = Clock::now() + std::chrono::seconds(60);
      if (Clock::now() > give_up) {
        violation("append never acknowledged: " + status_text(s));
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(opt.pause_ms));
  }
}

// ---- readers -------------------------------------------------------------------

void reader(int id) {
  auto stub = esv1::EventStore::NewStub(channel);
  std::mt19937_64 rng(2000 + id);
  for (uint64_t i = 0; !load_done.load(); i++) {
    read_calls++;
    if (i % 2 == 0) {
      uint64_t head = max_acked_pos.load();
      uint64_t from = head ? 1 + rng() % head : 1;
      esv1::ReadAllRequest req;
      req.set_from_position(from);
      req.set_max_count(100);
      grpc::ClientContext ctx;
      set_deadline(ctx, 10);
      esv1::ReadAllResponse resp;
      grpc::Status s = stub->ReadAll(&ctx, req, &resp);
      if (!s.ok()) {
        read_errors++;
        if (!opt.allow_errors || !transient(s.error_code()))
          violation("ReadAll failed: " + status_text(s));
      } else {
        uint64_t want = from;
        for (auto &e : resp.events()) {
          if (e.global_position() != want) {
            violation("ReadAll from " + std::to_string(from) + ": position " +
                      std::to_string(e.global_position()) + ", expected " + std::to_string(want));
            break;
          }
          want++;
        }
      }
    } else {
      esv1::ReadStreamRequest req;
      req.set_stream_id(stream_name(static_cast<int>(rng() % opt.appenders),
                                    static_cast<int>(rng() % opt.streams_per_appender)));
      req.set_from_version(1);
      req.set_max_count(1000);
      grpc::ClientContext ctx;
      set_deadline(ctx, 10);
      esv1::ReadStreamResponse resp;
      grpc::Status s = stub->ReadStream(&ctx, req, &resp);
      if (!s.ok()) {
        if (s.error_code() == grpc::StatusCode::NOT_FOUND) continue;  // not written yet
        read_errors++;
        if (!opt.allow_errors || !transient(s.error_code()))
          violation("ReadStream failed: " + status_text(s));
      } else {
        uint64_t want = 1;
        for (auto &e : resp.events()) {
          if (e.stream_version() != want) {
            violation("ReadStream " + req.stream_id() + ": version " +
                      std::to_string(e.stream_version()) + ", expected " + std::to_string(want));
            break;
          }
          want++;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// ---- subscribers ------------------------------------------------------------------

enum class SubKind { kLive, kSlow, kChurn };

struct SubState {
  SubKind kind;
  int id;
  std::atomic<uint64_t> next{1};  // the position it expects next
  std::atomic<uint64_t> seen{0};
  std::mutex ctx_mu;
  grpc::ClientContext *ctx = nullptr;
  std::atomic<bool> stop{false};
};

const char *kind_name(SubKind k) {
  return k == SubKind::kLive ? "live" : k == SubKind::kSlow ? "slow" : "churn";
}

// One subscription from `from` until it is cancelled, its deadline passes or
// it fails; checks positions and per-stream versions. Returns the status.
grpc::Status subscribe_once(esv1::EventStore::Stub *stub, SubState *st, uint64_t from,
                            int lifetime_ms, std::map<std::string, uint64_t> *versions) {
  grpc::ClientContext ctx;
  if (lifetime_ms > 0)
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(lifetime_ms));
  {
    std::lock_guard<std::mutex> l(st->ctx_mu);
    if (st->stop.load()) return grpc::Status::CANCELLED;
    st->ctx = &ctx;
  }
  esv1::SubscribeRequest req;
  req.set_from_position(from);
  subs_opened++;
  auto rd = stub->Subscribe(&ctx, req);
  esv1::SubscribeResponse m;
  uint64_t want = from;
  std::string who = std::string(kind_name(st->kind)) + " subscriber " + std::to_string(st->id);
  while (rd->Read(&m)) {
    if (!m.has_event()) continue;
    const auto &e = m.event();
    if (e.global_position() != want) {
      violation(who + " from " + std::to_string(from) + ": got position " +
                std::to_string(e.global_position()) + ", expected " + std::to_string(want) +
                (e.global_position() < want ? " (duplicate)" : " (gap)"));
      ctx.TryCancel();
      break;
    }
    auto it = versions->find(e.stream_id());
    if (it != versions->end() && e.stream_version() != it->second + 1)
      violation(who + ": stream " + e.stream_id() + " version " +
                std::to_string(e.stream_version()) + " after " + std::to_string(it->second));
    (*versions)[e.stream_id()] = e.stream_version();
    want++;
    st->next = want;
    st->seen++;
    sub_events++;
    if (st->kind == SubKind::kSlow)
      std::this_thread::sleep_for(std::chrono::milliseconds(opt.slow_ms));
  }
  grpc::Status s = rd->Finish();
  std::lock_guard<std::mutex> l(st->ctx_mu);
  st->ctx = nullptr;
  return s;
}

void subscriber(SubState *st) {
  auto stub = esv1::EventStore::NewStub(channel);
  std::mt19937_64 rng(3000 + st->id + 100 * static_cast<int>(st->kind));
  std::string who = std::string(kind_name(st->kind)) + " subscriber " + std::to_string(st->id);
  while (!st->stop.load()) {
    std::map<std::string, uint64_t> versions;  // per subscription (resumes keep it)
    uint64_t from = 1;
    int lifetime_ms = 0;
    if (st->kind == SubKind::kChurn) {
      if (load_done.load()) break;
      uint64_t head = max_acked_pos.load();
      from = head ? 1 + rng() % (head + 1) : 1;
      lifetime_ms = 200 + static_cast<int>(rng() % 2800);
      st->next = from;
    } else {
      from = st->next.load();
    }
    for (;;) {
      grpc::Status s = subscribe_once(stub.get(), st, from, lifetime_ms, &versions);
      if (st->stop.load() || s.error_code() == grpc::StatusCode::CANCELLED) return;
      if (st->kind == SubKind::kChurn && s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED)
        break;  // its lifetime is over: a new one
      if (s.ok()) {
        violation(who + ": subscription ended with OK");
        return;
      }
      if (!opt.allow_errors || !transient(s.error_code())) {
        violation(who + ": subscription failed: " + status_text(s));
        return;
      }
      resubscribes++;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      from = st->next.load();  // resume after the last event seen
      if (st->kind == SubKind::kChurn) break;
    }
  }
}

void stop_sub(SubState *st) {
  std::lock_guard<std::mutex> l(st->ctx_mu);
  st->stop = true;
  if (st->ctx) st->ctx->TryCancel();
}

// ---- server memory ----------------------------------------------------------------

long rss_kib(long pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

std::atomic<long> rss_start{-1}, rss_peak{-1}, rss_last{-1};
std::atomic<bool> sampler_stop{false};

void sampler() {
  while (!sampler_stop.load()) {
    long r = rss_kib(opt.server_pid);
    if (r > 0) {
      if (rss_start.load() < 0) rss_start = r;
      if (r > rss_peak.load()) rss_peak = r;
      rss_last = r;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

// ---- final check ---------------------------------------------------------------------

uint64_t check_log() {
  auto stub = esv1::EventStore::NewStub(channel);
  uint64_t want = 1, in_log = 0;
  std::unordered_set<std::string> ids;
  {
    std::lock_guard<std::mutex> l(mu);
    ids = acked_ids;
  }
  for (;;) {
    esv1::ReadAllRequest req;
    req.set_from_position(want);
    req.set_max_count(1000);
    esv1::ReadAllResponse resp;
    grpc::Status s;
    for (int attempt = 0; attempt < 20; attempt++) {
      grpc::ClientContext ctx;
      set_deadline(ctx, 30);
      s = stub->ReadAll(&ctx, req, &resp);
      if (s.ok() || !opt.allow_errors) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
    if (!s.ok()) {
      violation("final ReadAll failed: " + status_text(s));
      return in_log;
    }
    for (auto &e : resp.events()) {
      if (e.global_position() != want) {
        violation("final log: position " + std::to_string(e.global_position()) + ", expected " +
                  std::to_string(want));
        return in_log;
      }
      if (ids.erase(e.event_id()) != 1)
        violation("final log: event " + e.event_id() + " at " + std::to_string(want) +
                  " was never acknowledged, or is there twice");
      want++;
      in_log++;
    }
    if (resp.is_end() || resp.events_size() == 0) break;
  }
  if (!ids.empty())
    violation("final log: " + std::to_string(ids.size()) + " acknowledged events are missing");
  return in_log;
}

bool parse(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&](const char *name) -> const char * {
      if (a != name || i + 1 >= argc) return nullptr;
      return argv[++i];
    };
    const char *v;
    if ((v = val("--target")))
      opt.target = v;
    else if ((v = val("--seconds")))
      opt.seconds = atoi(v);
    else if ((v = val("--appenders")))
      opt.appenders = atoi(v);
    else if ((v = val("--readers")))
      opt.readers = atoi(v);
    else if ((v = val("--live-subs")))
      opt.live_subs = atoi(v);
    else if ((v = val("--slow-subs")))
      opt.slow_subs = atoi(v);
    else if ((v = val("--churn-subs")))
      opt.churn_subs = atoi(v);
    else if ((v = val("--payload-bytes")))
      opt.payload_bytes = atoi(v);
    else if ((v = val("--pause-ms")))
      opt.pause_ms = atoi(v);
    else if ((v = val("--slow-ms")))
      opt.slow_ms = atoi(v);
    else if ((v = val("--server-pid")))
      opt.server_pid = atol(v);
    else if ((v = val("--rss-per-event")))
      opt.rss_per_event = atol(v);
    else if ((v = val("--rss-slack-mb")))
      opt.rss_slack_mb = atol(v);
    else if (a == "--allow-errors")
      opt.allow_errors = true;
    else {
      fprintf(stderr,
              "usage: essoak --target HOST:PORT --server-pid PID [--seconds N] [--appenders N]\n"
              "  [--readers N] [--live-subs N] [--slow-subs N] [--churn-subs N]\n"
              "  [--payload-bytes N] [--pause-ms N] [--slow-ms N] [--rss-per-event BYTES]\n"
              "  [--rss-slack-mb N] [--allow-errors]\n");
      return false;
    }
  }
  return opt.server_pid > 0 && opt.seconds > 0 && opt.appenders > 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (!parse(argc, argv)) return 2;
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  channel = grpc::CreateCustomChannel(opt.target, grpc::InsecureChannelCredentials(), args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    fprintf(stderr, "essoak: cannot connect to %s\n", opt.target.c_str());
    return 1;
  }
  std::thread samp(sampler);
  while (rss_start.load() < 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));

  auto t0 = Clock::now();
  std::vector<std::unique_ptr<SubState>> subs;
  std::vector<std::thread> threads, sub_threads;
  auto add_subs = [&](SubKind k, int n) {
    for (int i = 0; i < n; i++) {
      subs.emplace_back(new SubState());
      subs.back()->kind = k;
      subs.back()->id = i;
      sub_threads.emplace_back(subscriber, subs.back().get());
    }
  };
  add_subs(SubKind::kLive, opt.live_subs);
  add_subs(SubKind::kSlow, opt.slow_subs);
  add_subs(SubKind::kChurn, opt.churn_subs);
  for (int i = 0; i < opt.appenders; i++) threads.emplace_back(appender, i);
  for (int i = 0; i < opt.readers; i++) threads.emplace_back(reader, i);

  for (int s = 1; s <= opt.seconds; s++) {
    std::this_thread::sleep_for(std::chrono::seconds(1));
    if (s % 15 == 0 || s == opt.seconds)
      fprintf(stderr,
              "essoak: %3ds  events %" PRIu64 "  head %" PRIu64 "  subscriptions %" PRIu64
              "  server RSS %ld KiB  retries %" PRIu64 "  resubscribes %" PRIu64 "\n",
              s, events_acked.load(), max_acked_pos.load(), subs_opened.load(), rss_last.load(),
              append_retries.load(), resubscribes.load());
  }
  load_done = true;
  for (auto &t : threads) t.join();
  uint64_t head = max_acked_pos.load();
  double load_s = std::chrono::duration<double>(Clock::now() - t0).count();

  // Live subscribers must reach the final head; the others stop where they are.
  auto drain_deadline = Clock::now() + std::chrono::seconds(120);
  for (auto &st : subs) {
    if (st->kind != SubKind::kLive) continue;
    while (st->next.load() <= head && Clock::now() < drain_deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (st->next.load() <= head)
      violation("live subscriber " + std::to_string(st->id) + " reached only " +
                std::to_string(st->next.load() - 1) + " of " + std::to_string(head));
  }
  for (auto &st : subs) stop_sub(st.get());
  for (auto &t : sub_threads) t.join();

  uint64_t in_log = check_log();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  sampler_stop = true;
  samp.join();

  long start = rss_start.load(), peak = rss_peak.load(), end = rss_last.load();
  long limit = start + static_cast<long>((opt.rss_per_event * static_cast<long>(in_log)) / 1024) +
               opt.rss_slack_mb * 1024;
  printf(
      "soak: %.0f s of load, %d appenders, %d readers, %d live + %d slow + %d churning "
      "subscribers\n",
      load_s, opt.appenders, opt.readers, opt.live_subs, opt.slow_subs, opt.churn_subs);
  printf("soak: events appended %" PRIu64 " in %" PRIu64
         " batches (%.0f/s), duplicates acknowledged %" PRIu64 ", append retries %" PRIu64 "\n",
         events_acked.load(), batches_acked.load(), events_acked.load() / load_s,
         duplicates_acked.load(), append_retries.load());
  printf("soak: final log %" PRIu64 " events, head %" PRIu64 "; reads %" PRIu64 " (errors %" PRIu64
         ")\n",
         in_log, head, read_calls.load(), read_errors.load());
  printf("soak: subscriptions opened %" PRIu64 ", resubscribes after errors %" PRIu64
         ", events delivered %" PRIu64 "\n",
         subs_opened.load(), resubscribes.load(), sub_events.load());
  for (auto &st : subs)
    if (st->kind == SubKind::kSlow)
      printf("soak: slow subscriber %d saw %" PRIu64 " events (1..%" PRIu64 " of %" PRIu64 ")\n",
             st->id, st->seen.load(), st->next.load() - 1, head);
  printf(
      "soak: server RSS start %ld KiB, peak %ld KiB, end %ld KiB; limit %ld KiB"
      " (start + %ld B/event + %ld MiB); %.0f B of growth per stored event\n",
      start, peak, end, limit, opt.rss_per_event, opt.rss_slack_mb,
      in_log ? (peak - start) * 1024.0 / in_log : 0.0);
  if (peak > limit)
    violation("server RSS peak " + std::to_string(peak) + " KiB over the limit " +
              std::to_string(limit) + " KiB");
  if (in_log == 0) violation("nothing was appended");
  std::lock_guard<std::mutex> l(mu);
  printf("soak: %s (%zu violations)\n", violations.empty() ? "PASS" : "FAIL", violations.size());
  return violations.empty() ? 0 : 1;
}
