// Concurrency (API.md "Semantics": expected version, global order, the
// subscriber guarantee; details 7 for checkpoints): racing EXACT writers,
// subscribers of every kind running while several writers append, and a
// stalled subscriber whose backlog must not grow the server's memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/e2e_client.h"

namespace es_e2e {
namespace {

using grpc::StatusCode;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;  // the server is built with ASan as well
#else
constexpr bool kSanitized = false;
#endif

std::vector<uint64_t> Range(uint64_t from, uint64_t to) {  // inclusive
  std::vector<uint64_t> v;
  for (uint64_t i = from; i <= to; ++i) v.push_back(i);
  return v;
}

// ---- Racing EXACT writers ------------------------------------------------------

TEST(ConcurrencyTest, RacingExactWritersEachVersionWonOnce) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  const int kWriters = 8;
  const uint64_t kTarget = 400;
  const std::string stream = "race";
  struct Writer {
    std::map<uint64_t, std::string> won;  // version -> event id
    int aborted = 0;
    std::vector<std::string> problems;
  };
  std::vector<Writer> writers(kWriters);
  std::vector<std::unique_ptr<Client>> clients;
  for (int w = 0; w < kWriters; ++w)
    clients.push_back(std::make_unique<Client>(Connect(server->Address())));
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      Writer &me = writers[w];
      while (!go.load()) std::this_thread::yield();
      uint64_t expected = 0;
      for (int attempt = 0; attempt < 50000 && expected < kTarget; ++attempt) {
        v1::AppendRequest req;
        req.set_stream_id(stream);
        req.set_expected_kind(v1::EXPECTED_EXACT);
        req.set_expected_version(expected);
        std::string id = NewUuid();
        *req.add_events() = MakeEvent("Raced", "w" + std::to_string(w), id);
        grpc::ClientContext ctx;
        v1::AppendResponse resp;
        grpc::Status st = clients[w]->Append(req, &resp, &ctx);
        if (st.ok()) {
          if (resp.first_stream_version() != expected + 1)
            me.problems.push_back("EXACT " + std::to_string(expected) + " committed at version " +
                                  std::to_string(resp.first_stream_version()));
          me.won[resp.first_stream_version()] = id;
          expected = resp.last_stream_version();
        } else if (st.error_code() == StatusCode::ABORTED) {
          ++me.aborted;
          auto av = Trailer(ctx, "es-actual-version");
          if (!av) {
            me.problems.push_back("ABORTED without es-actual-version");
            break;
          }
          uint64_t actual = std::stoull(*av);
          if (actual <= expected)
            me.problems.push_back("ABORTED for EXACT " + std::to_string(expected) +
                                  " with es-actual-version " + *av);
          expected = std::max(actual, expected);
        } else {
          me.problems.push_back("unexpected " + Describe(st));
          break;
        }
      }
    });
  }
  go = true;
  for (auto &t : threads) t.join();

  std::map<uint64_t, std::string> all;
  int aborted = 0;
  for (int w = 0; w < kWriters; ++w) {
    for (const auto &p : writers[w].problems) ADD_FAILURE() << "writer " << w << ": " << p;
    for (const auto &kv : writers[w].won) {
      EXPECT_TRUE(all.emplace(kv.first, kv.second).second)
          << "version " << kv.first << " won twice";
    }
    aborted += writers[w].aborted;
  }
  EXPECT_EQ(all.size(), kTarget);
  if (!all.empty()) {
    EXPECT_EQ(all.begin()->first, 1u);
    EXPECT_EQ(all.rbegin()->first, kTarget);
  }
  std::cout << "[race] " << kWriters << " writers, " << kTarget << " versions, " << aborted
            << " ABORTED answers\n";
  auto evs = clients[0]->ReadWholeStream(stream);
  ASSERT_EQ(evs.size(), kTarget);
  for (const auto &e : evs)
    EXPECT_EQ(e.event_id(), all[e.stream_version()])
        << "version " << e.stream_version() << " holds another writer's event";
  clients.clear();
  StopServerExpectClean(server.get());
}

// ---- Subscribers under concurrent writers --------------------------------------

TEST(ConcurrencyTest, SubscribersSeeEveryMatchingEventOnceAcrossReplayAndLive) {
  auto server = StartServer({"--checkpoint-interval", "5"});
  ASSERT_NE(server, nullptr);
  auto client = std::make_unique<Client>(Connect(server->Address()));
  const char *streams[] = {"alpha-0", "alpha-1", "alpha-2", "alpha-3",
                           "beta-0",  "beta-1",  "beta-2",  "beta-3"};
  const char *types[] = {"TypeA", "TypeB", "TypeC"};
  // 500 events before any subscriber: the replay part.
  for (int i = 0; i < 100; ++i) {
    v1::AppendRequest req;
    req.set_stream_id(streams[i % 8]);
    for (int k = 0; k < 5; ++k) *req.add_events() = MakeEvent(types[(i + k * k) % 3]);
    client->MustAppend(req);
  }
  ASSERT_EQ(client->Head(), 500u);

  struct Sub {
    std::string name;
    v1::SubscribeRequest req;
    uint32_t interval;  // effective checkpoint interval; 0 = unfiltered
    bool slow;
  };
  std::vector<Sub> subs(7);
  subs[0].name = "from the start";
  subs[1].name = "from the middle (250)";
  subs[1].req.set_from_position(250);
  subs[2].name = "from the end";
  subs[2].req.set_from_end(true);
  subs[3].name = "prefix alpha-, interval 7";
  subs[3].req.mutable_filter()->set_stream_prefix("alpha-");
  subs[3].req.set_checkpoint_interval(7);
  subs[3].interval = 7;
  subs[4].name = "type TypeB, server interval 5";
  subs[4].req.mutable_filter()->add_event_types("TypeB");
  subs[4].interval = 5;
  subs[5].name = "prefix beta- and types A,C, interval 3";
  subs[5].req.mutable_filter()->set_stream_prefix("beta-");
  subs[5].req.mutable_filter()->add_event_types("TypeA");
  subs[5].req.mutable_filter()->add_event_types("TypeC");
  subs[5].req.set_checkpoint_interval(3);
  subs[5].interval = 3;
  subs[6].name = "slow reader from the start";
  subs[6].slow = true;

  std::vector<std::unique_ptr<SubscriptionReader>> readers;
  for (const Sub &s : subs) {
    readers.push_back(
        std::make_unique<SubscriptionReader>(Connect(server->Address()), s.req, 120000));
    if (s.slow) readers.back()->SetReadDelay(std::chrono::milliseconds(1), 20);
    readers.back()->StartReading();
  }

  // 4 writers, 2,000 events, batches of 1..10, while the subscribers replay.
  const int kWriters = 4, kPerWriter = 500;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      Client c(Connect(server->Address()));
      std::mt19937 rng(1234 + w);
      int written = 0;
      for (int guard = 0; guard < 10000 && written < kPerWriter; ++guard) {
        int n = std::min<int>(1 + rng() % 10, kPerWriter - written);
        v1::AppendRequest req;
        req.set_stream_id(streams[rng() % 8]);
        for (int k = 0; k < n; ++k) *req.add_events() = MakeEvent(types[rng() % 3]);
        v1::AppendResponse resp;
        grpc::Status st = c.Append(req, &resp);
        if (!st.ok()) {
          ++failures;
          ADD_FAILURE() << "writer " << w << ": " << Describe(st);
          return;
        }
        written += n;
      }
    });
  }
  for (auto &t : threads) t.join();
  ASSERT_EQ(failures.load(), 0);
  std::vector<v1::RecordedEvent> log = client->ReadWholeLog();
  const uint64_t head = 500 + kWriters * kPerWriter;
  ASSERT_EQ(log.size(), head);
  ASSERT_EQ(log.back().global_position(), head);

  for (size_t i = 0; i < subs.size(); ++i) {
    SCOPED_TRACE(subs[i].name);
    const v1::SubscribeRequest &req = subs[i].req;
    std::vector<uint64_t> want, cps;
    auto match = [&req](const v1::RecordedEvent &e) { return MatchesFilter(e, req.filter()); };
    uint64_t from = req.from_position() ? req.from_position() : 1;
    for (const auto &e : log)
      if (e.global_position() >= from && match(e)) want.push_back(e.global_position());
    if (subs[i].interval) cps = ExpectedCheckpoints(log, match, subs[i].interval);
    uint64_t last = std::max(want.empty() ? 0 : want.back(), cps.empty() ? 0 : cps.back());
    EXPECT_TRUE(readers[i]->WaitForPosition(last, 60000))
        << "did not reach position " << last << " (" << readers[i]->EventCount()
        << " events received)";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    readers[i]->Cancel();
    grpc::Status st = readers[i]->Join();
    EXPECT_EQ(st.error_code(), StatusCode::CANCELLED) << Describe(st);
    std::vector<SubMsg> msgs = readers[i]->Messages();
    if (req.from_end()) {
      // Only what was committed after it started: after its CaughtUp head.
      ASSERT_FALSE(msgs.empty());
      ASSERT_EQ(msgs[0].kind, SubMsg::kCaughtUp) << "from_end starts with CaughtUp";
      uint64_t start = msgs[0].position;
      EXPECT_GE(start, 500u);
      want = Range(start + 1, head);
    }
    std::vector<uint64_t> none;
    EXPECT_EQ(VerifySubscription(msgs, want, subs[i].interval ? &cps : &none), "");
    size_t caught_up = 0;
    for (const auto &m : msgs) caught_up += m.kind == SubMsg::kCaughtUp;
    EXPECT_GE(caught_up, 1u);
    std::cout << "[subscribers] " << subs[i].name << ": " << want.size() << " events, "
              << cps.size() << " checkpoints, " << caught_up << " CaughtUp\n";
  }
  // Idle client connections are closed first: this test is not about them
  // (see shutdown_test's IdleClientConnectionDoesNotDelayExit).
  readers.clear();
  client.reset();
  StopServerExpectClean(server.get());
}

// ---- A stalled subscriber ------------------------------------------------------

// Appends `n` events of `payload_size` bytes in batches of 1000.
void AppendMany(Client *client, int n, size_t payload_size, const std::string &tag) {
  std::string payload(payload_size, 'x');
  for (int done = 0, batch = 0; done < n; ++batch) {
    int k = std::min(1000, n - done);
    v1::AppendRequest req;
    req.set_stream_id(tag + "-" + std::to_string(batch % 100));
    for (int i = 0; i < k; ++i) *req.add_events() = MakeEvent("Small", payload);
    v1::AppendResponse resp;
    grpc::Status st = client->Append(req, &resp);
    ASSERT_TRUE(st.ok()) << Describe(st);
    done += k;
  }
}

TEST(ConcurrencyTest, StalledSubscriberDoesNotGrowServerMemory) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  auto client = std::make_unique<Client>(Connect(server->Address()));
  const int kEvents = 100000;
  const size_t kPayload = 1024;
  AppendMany(client.get(), 1000, kPayload, "warmup");
  ASSERT_FALSE(HasFatalFailure());

  // What storing 100,000 events costs without any subscriber.
  long r0 = server->RssKb();
  AppendMany(client.get(), kEvents, kPayload, "control");
  ASSERT_FALSE(HasFatalFailure());
  long r1 = server->RssKb();
  const uint64_t first = client->Head() + 1;

  // The same with a subscriber that reads nothing.
  v1::SubscribeRequest req;
  req.set_from_position(first);
  auto stalled = std::make_unique<SubscriptionReader>(Connect(server->Address()), req, 120000);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  long r2 = server->RssKb();
  AppendMany(client.get(), kEvents, kPayload, "stalled");
  ASSERT_FALSE(HasFatalFailure());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  long r3 = server->RssKb();
  const uint64_t last = client->Head();
  ASSERT_EQ(last - first + 1, static_cast<uint64_t>(kEvents));

  long storing_kb = r1 - r0, with_sub_kb = r3 - r2;
  long extra_kb = with_sub_kb - storing_kb;
  std::cout << "[stalled] VmRSS KiB: start " << r0 << ", after 100k events " << r1 << " (+"
            << storing_kb << "), with stalled subscriber " << r2 << " -> " << r3 << " (+"
            << with_sub_kb << "), extra " << extra_kb << " KiB"
            << (kSanitized ? " [ASan build: not asserted]" : "") << "\n";
  // The subscriber will receive about this much.
  const long delivered_kb = static_cast<long>(kEvents) * (kPayload + 100) / 1024;
  if (!kSanitized) {
    EXPECT_LT(extra_kb, 150 * 1024) << "the stalled subscriber cost the server " << extra_kb / 1024
                                    << " MiB beyond storing the events";
    EXPECT_LT(extra_kb, delivered_kb / 2)
        << "the server buffered most of the stalled subscriber's backlog (" << extra_kb / 1024
        << " MiB extra for ~" << delivered_kb / 1024 << " MiB delivered)";
  }

  // Now it reads everything, in order, once.
  stalled->StartReading();
  EXPECT_TRUE(stalled->WaitForPosition(last, 90000))
      << "received " << stalled->EventCount() << " of " << kEvents;
  stalled->Cancel();
  stalled->Join();
  std::vector<uint64_t> none;
  EXPECT_EQ(VerifySubscription(stalled->Messages(), Range(first, last), &none), "");
  stalled.reset();
  client.reset();
  StopServerExpectClean(server.get());
}

}  // namespace
}  // namespace es_e2e
