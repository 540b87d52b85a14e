// Durability of the LMDB backend through the real server: kill -9 under load,
// repeated on one data directory, and a clean stop.
//
// A round starts `eventstore --backend lmdb --data-dir D`, lets several client
// threads append over gRPC (one to three events per call, every field of an
// event set, payloads of every byte value) and records every request sent and
// every answer received. At a random moment, with appends in flight, the
// server is killed with SIGKILL; it is restarted on the same D and must show:
//   - the log is positions 1..N without a gap, every event in it one that a
//     client sent, each event id once;
//   - every acknowledged append is there at the positions and stream versions
//     its answer gave, each event whole (id, type, payload, metadata, ...);
//   - no append is visible in part: all of its events, at consecutive
//     positions, or none of them (also the ones whose answer the kill lost);
//   - every stream's versions are 1..k in log order, and ReadStream (the
//     stream index, a table of its own) agrees with the log;
//   - appends go on at N+1;
//   - retried after the restart, an append whose answer was lost is answered
//     as a duplicate of what the store holds or stored once, never twice; an
//     acknowledged one retried is a duplicate with its original answer.
// Everything stored carries into the next round, so round k checks the
// acknowledgements of all rounds before it. A second test stops the server
// cleanly (SIGTERM) instead and checks the same on the next start: what
// `make run` twice in a row relies on.
//
// The test must fail when the property breaks: an answer sent before the
// commit is durable shows as an acknowledged append missing after the kill.
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/e2e_client.h"

namespace es_e2e {
namespace {

// One Append a client sent, and what became of it.
struct Sent {
  v1::AppendRequest req;
  bool acked = false;  // answered OK: resp holds the answer
  v1::AppendResponse resp;
};

// Every append of the test so far (across rounds), guarded by mu.
struct Ledger {
  std::mutex mu;
  std::vector<Sent> sent;
};

v1::AppendRequest MakeLoadAppend(std::mt19937_64 &rng, int round, int writer, int i) {
  v1::AppendRequest req;
  int s = static_cast<int>(rng() % 4);
  req.set_stream_id("kill-" + std::to_string(writer) + "-" + std::to_string(s));
  req.set_stream_type("Kind" + std::to_string(writer));
  int n = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < n; e++) {
    v1::EventData *ev = req.add_events();
    ev->set_event_id(NewUuid());
    ev->set_event_type("Happened" + std::to_string(e));
    ev->set_event_version(static_cast<uint32_t>(rng() % 5));
    ev->set_content_type(e == 0 ? "application/octet-stream" : "text/x-test");
    std::string payload(static_cast<size_t>(rng() % 1500), '\0');
    for (auto &c : payload) c = static_cast<char>(rng());
    if (e == 1) payload += AllBytes();
    ev->set_payload(payload);
    (*ev->mutable_metadata())["round"] = std::to_string(round);
    (*ev->mutable_metadata())["call"] = std::to_string(writer) + "/" + std::to_string(i);
    ev->set_correlation_id("corr-" + std::to_string(i));
    ev->set_causation_id(e == 0 ? "" : req.events(0).event_id());
    ev->set_occurred_at_unix_ms(1700000000000ull + rng() % 1000000);
  }
  return req;
}

// The fields of a recorded event that come from what the client sent.
std::string SameAsSent(const v1::RecordedEvent &got, const v1::AppendRequest &req, int e) {
  const v1::EventData &want = req.events(e);
  v1::RecordedEvent expect;
  expect.set_stream_id(req.stream_id());
  expect.set_stream_type(req.stream_type());
  expect.set_event_id(want.event_id());
  expect.set_event_type(want.event_type());
  expect.set_event_version(want.event_version());
  // API.md: none given is stored as application/octet-stream.
  expect.set_content_type(want.content_type().empty() ? "application/octet-stream"
                                                      : want.content_type());
  expect.set_payload(want.payload());
  *expect.mutable_metadata() = want.metadata();
  expect.set_correlation_id(want.correlation_id());
  expect.set_causation_id(want.causation_id());
  expect.set_occurred_at_unix_ms(want.occurred_at_unix_ms());
  v1::RecordedEvent cmp = got;
  cmp.clear_stream_version();
  cmp.clear_global_position();
  cmp.clear_recorded_at_unix_ms();
  if (google::protobuf::util::MessageDifferencer::Equals(cmp, expect)) return "";
  // Payloads are long: name the difference instead of printing them.
  std::string why = cmp.payload() != expect.payload()
                        ? "payload differs (" + std::to_string(cmp.payload().size()) + " bytes, " +
                              std::to_string(expect.payload().size()) + " sent)"
                        : "";
  cmp.clear_payload();
  expect.clear_payload();
  return why + "\n got:  " + cmp.ShortDebugString() + "\n sent: " + expect.ShortDebugString();
}

// Checks the whole store against the ledger (see the top of the file). The
// appends with no answer are left as they are. Returns the head N.
uint64_t VerifyStore(Client *client, Ledger *ledger, const char *when) {
  SCOPED_TRACE(when);
  std::vector<v1::RecordedEvent> log = client->ReadWholeLog();
  uint64_t head = client->Head();
  EXPECT_EQ(head, log.size()) << "head and the length of the log disagree";
  std::map<std::string, uint64_t> pos_of_id;
  for (size_t i = 0; i < log.size(); i++) {
    EXPECT_EQ(i + 1, log[i].global_position()) << "a gap or disorder in the log";
    if (log[i].global_position() != i + 1) return head;
    EXPECT_TRUE(pos_of_id.emplace(log[i].event_id(), i + 1).second)
        << "event id " << log[i].event_id() << " stored twice";
  }

  std::lock_guard<std::mutex> lock(ledger->mu);
  std::set<uint64_t> accounted;
  size_t acked = 0, unanswered_stored = 0, unanswered = 0;
  for (const Sent &s : ledger->sent) {
    const int n = s.req.events_size();
    int present = 0;
    for (int e = 0; e < n; e++) present += pos_of_id.count(s.req.events(e).event_id()) ? 1 : 0;
    if (s.acked) acked++;
    if (!s.acked) unanswered++;
    if (present == 0) {
      EXPECT_FALSE(s.acked) << "acknowledged append lost: stream " << s.req.stream_id()
                            << " positions " << s.resp.first_global_position() << ".."
                            << s.resp.last_global_position();
      continue;
    }
    EXPECT_EQ(n, present) << "an append visible in part: " << present << " of its " << n
                          << " events, stream " << s.req.stream_id();
    if (present != n) continue;
    if (!s.acked) unanswered_stored++;
    uint64_t first = pos_of_id[s.req.events(0).event_id()];
    for (int e = 0; e < n; e++) {
      uint64_t p = pos_of_id[s.req.events(e).event_id()];
      EXPECT_EQ(first + e, p) << "an append's events are not consecutive";
      if (p != first + e) break;
      const v1::RecordedEvent &got = log[p - 1];
      EXPECT_EQ("", SameAsSent(got, s.req, e)) << "position " << p;
      EXPECT_EQ(log[first - 1].stream_version() + e, got.stream_version());
      accounted.insert(p);
    }
    if (s.acked) {
      EXPECT_EQ(s.resp.first_global_position(), first);
      EXPECT_EQ(s.resp.last_global_position(), first + n - 1);
      EXPECT_EQ(s.resp.first_stream_version(), log[first - 1].stream_version());
      EXPECT_EQ(s.resp.last_stream_version(), log[first - 1].stream_version() + n - 1);
    }
  }
  EXPECT_EQ(log.size(), accounted.size()) << "events in the log that no client sent";

  // Streams: versions 1..k in log order, and the stream index agrees.
  std::map<std::string, std::vector<const v1::RecordedEvent *>> streams;
  for (const auto &e : log) streams[e.stream_id()].push_back(&e);
  for (const auto &kv : streams) {
    for (size_t v = 0; v < kv.second.size(); v++) {
      EXPECT_EQ(v + 1, kv.second[v]->stream_version()) << "stream " << kv.first;
      if (v + 1 != kv.second[v]->stream_version()) break;
    }
    std::vector<v1::RecordedEvent> read = client->ReadWholeStream(kv.first);
    EXPECT_EQ(kv.second.size(), read.size()) << "ReadStream " << kv.first;
    for (size_t v = 0; v < read.size() && v < kv.second.size(); v++) {
      bool same = google::protobuf::util::MessageDifferencer::Equals(*kv.second[v], read[v]);
      EXPECT_TRUE(same) << "ReadStream " << kv.first << " version " << v + 1;
      if (!same) break;
    }
  }
  printf(
      "%s: head %llu, %zu streams, %zu appends acknowledged, %zu without an answer (%zu of "
      "them stored)\n",
      when, (unsigned long long)head, streams.size(), acked, unanswered, unanswered_stored);
  return head;
}

// Retries every append whose answer was lost, as a client that timed out
// would, and checks each answer against the store as it was found (`head`).
// Every retried append then counts as acknowledged.
void RetryUnanswered(Client *client, Ledger *ledger, uint64_t head) {
  std::lock_guard<std::mutex> lock(ledger->mu);
  size_t duplicates = 0, stored = 0;
  for (Sent &s : ledger->sent) {
    if (s.acked) continue;
    v1::AppendResponse resp;
    grpc::Status st = client->Append(s.req, &resp);
    ASSERT_TRUE(st.ok()) << "retry of an unanswered append: " << Describe(st);
    if (resp.duplicate()) {
      duplicates++;
      EXPECT_LE(resp.last_global_position(), head) << "a duplicate of what was not stored";
    } else {
      stored++;
      EXPECT_GT(resp.first_global_position(), head) << "stored again below the head";
    }
    EXPECT_EQ(resp.last_global_position() - resp.first_global_position() + 1,
              static_cast<uint64_t>(s.req.events_size()));
    s.acked = true;
    s.resp = resp;
  }
  printf("retried unanswered appends: %zu duplicates, %zu stored now\n", duplicates, stored);
}

// Appends from `writers` threads until `stop`; every request goes into the
// ledger before it is sent. A failure before `killed` is set is an error.
class Load {
 public:
  Load(const std::string &address, Ledger *ledger, int round, int writers) : ledger_(ledger) {
    // Connected here, before any kill: a thread that started late would
    // otherwise try to connect to a dead server and fail the test.
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    for (int w = 0; w < writers; w++) channels.push_back(Connect(address));
    for (int w = 0; w < writers; w++) {
      threads_.emplace_back([this, channel = channels[w], round, w] {
        Client c(channel);
        std::mt19937_64 rng(std::random_device{}());
        for (int i = 0; !stop_.load(); i++) {
          size_t idx;
          {
            std::lock_guard<std::mutex> lock(ledger_->mu);
            idx = ledger_->sent.size();
            ledger_->sent.push_back(Sent{MakeLoadAppend(rng, round, w, i)});
          }
          v1::AppendRequest req;
          {
            std::lock_guard<std::mutex> lock(ledger_->mu);
            req = ledger_->sent[idx].req;
          }
          v1::AppendResponse resp;
          grpc::ClientContext ctx;
          SetDeadline(&ctx, 5000);
          grpc::Status st = c.Append(req, &resp, &ctx);
          if (st.ok()) {
            std::lock_guard<std::mutex> lock(ledger_->mu);
            ledger_->sent[idx].acked = true;
            ledger_->sent[idx].resp = resp;
            acked_++;
          } else if (!killed_.load()) {
            errors_++;
            std::lock_guard<std::mutex> lock(mu_);
            first_error_ = Describe(st);
          }
        }
      });
    }
  }
  ~Load() { Join(); }
  void Join() {
    stop_ = true;
    for (auto &t : threads_)
      if (t.joinable()) t.join();
  }
  void MarkKilled() { killed_ = true; }
  int Acked() const { return acked_.load(); }
  int Errors() const { return errors_.load(); }
  std::string FirstError() {
    std::lock_guard<std::mutex> lock(mu_);
    return first_error_;
  }

 private:
  Ledger *ledger_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> killed_{false};
  std::atomic<int> acked_{0};
  std::atomic<int> errors_{0};
  std::mutex mu_;
  std::string first_error_;
};

std::vector<std::string> LmdbArgs(const std::string &dir) {
  return {"--backend", "lmdb", "--data-dir", dir};
}

TEST(LmdbKill9, EveryAcknowledgedAppendSurvivesKillNineUnderLoad) {
  const int kRounds = 5, kWriters = 6;
  std::string dir = TempDir("kill9");
  Ledger ledger;
  std::mt19937 rng(std::random_device{}());
  uint64_t head = 0;
  for (int round = 0; round < kRounds; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    auto server = StartServer(LmdbArgs(dir));
    ASSERT_NE(nullptr, server);
    Client client(Connect(server->Address()));
    if (round > 0) {
      head = VerifyStore(&client, &ledger, "after kill -9");
      ASSERT_FALSE(HasFailure());
      // Appends go on at N+1, then the unanswered ones are retried.
      v1::AppendRequest next = MakeAppend("after-kill", 2);
      v1::AppendResponse resp = client.MustAppend(next);
      EXPECT_EQ(head + 1, resp.first_global_position());
      EXPECT_FALSE(resp.duplicate());
      {
        std::lock_guard<std::mutex> lock(ledger.mu);
        ledger.sent.push_back(Sent{next, true, resp});
      }
      RetryUnanswered(&client, &ledger, head);
      // An acknowledged append retried is a duplicate with its first answer.
      Sent old;
      {
        std::lock_guard<std::mutex> lock(ledger.mu);
        old = ledger.sent[rng() % ledger.sent.size()];
      }
      v1::AppendResponse again = client.MustAppend(old.req);
      EXPECT_TRUE(again.duplicate());
      EXPECT_EQ(old.resp.first_global_position(), again.first_global_position());
      EXPECT_EQ(old.resp.last_stream_version(), again.last_stream_version());
      ASSERT_FALSE(HasFailure());
    }

    Load load(server->Address(), &ledger, round, kWriters);
    // Some acknowledgements first, then a random moment a few hundred ms in.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (load.Acked() < 50 && load.Errors() == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 400));
    load.MarkKilled();
    ASSERT_TRUE(server->Signal(SIGKILL));
    ASSERT_TRUE(server->WaitExit(std::chrono::seconds(10)));
    load.Join();
    EXPECT_EQ(0, load.Errors()) << "appends failed before the kill: " << load.FirstError();
    EXPECT_GE(load.Acked(), 50) << "too little load before the kill";
    printf("round %d: %d appends acknowledged before kill -9\n", round, load.Acked());
    ASSERT_FALSE(HasFailure());
  }
  auto server = StartServer(LmdbArgs(dir));
  ASSERT_NE(nullptr, server);
  Client client(Connect(server->Address()));
  head = VerifyStore(&client, &ledger, "after the last kill -9");
  RetryUnanswered(&client, &ledger, head);
  VerifyStore(&client, &ledger, "after the retries");
  StopServerExpectClean(server.get());
}

TEST(LmdbKill9, ACleanStopKeepsEverythingForTheNextStart) {
  std::string dir = TempDir("restart");
  Ledger ledger;
  for (int run = 0; run < 3; run++) {
    SCOPED_TRACE("run " + std::to_string(run));
    auto server = StartServer(LmdbArgs(dir));
    ASSERT_NE(nullptr, server);
    Client client(Connect(server->Address()));
    uint64_t head = VerifyStore(&client, &ledger, "at start");
    std::mt19937_64 rng(run);
    for (int i = 0; i < 20; i++) {
      Sent s{MakeLoadAppend(rng, run, 0, i)};
      s.resp = client.MustAppend(s.req);
      s.acked = true;
      EXPECT_EQ(head + 1, s.resp.first_global_position());
      head = s.resp.last_global_position();
      std::lock_guard<std::mutex> lock(ledger.mu);
      ledger.sent.push_back(s);
    }
    // Stopped while a subscriber is connected, as a user's Ctrl-C would.
    v1::SubscribeRequest sub;
    SubscriptionReader reader(Connect(server->Address()), sub);
    reader.StartReading();
    EXPECT_TRUE(reader.WaitForPosition(head, 10000));
    StopServerExpectClean(server.get());
    ASSERT_FALSE(HasFailure());
  }
}

}  // namespace
}  // namespace es_e2e
