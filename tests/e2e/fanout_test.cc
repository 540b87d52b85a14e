// Many subscribers (server/tail.c, API.md Extension 2): subscribers moving
// between the live window and storage under concurrent appends, a subscriber
// stopped for longer than the window, batched delivery and its rules, and
// subscribers cancelled while commits are being published.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/e2e/e2e_client.h"
#include "tests/e2e/server_process.h"

namespace es_e2e {
namespace {

using grpc::StatusCode;

std::vector<uint64_t> Range(uint64_t from, uint64_t to) {  // inclusive
  std::vector<uint64_t> v;
  for (uint64_t i = from; i <= to; ++i) v.push_back(i);
  return v;
}

// `writers` threads append `per_writer` events in batches of 1..5 to a few
// streams; false (with a test failure) if an append failed.
bool AppendConcurrently(const std::string &address, int writers, int per_writer,
                        const std::string &payload = "") {
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      Client c(Connect(address));
      std::mt19937 rng(77 + w);
      int written = 0;
      for (int guard = 0; guard < 100000 && written < per_writer; ++guard) {
        int n = std::min<int>(1 + rng() % 5, per_writer - written);
        v1::AppendRequest req;
        req.set_stream_id("fan-" + std::to_string(rng() % 6));
        for (int k = 0; k < n; ++k) *req.add_events() = MakeEvent(k % 2 ? "Odd" : "Even", payload);
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
  return failures.load() == 0;
}

// Every event message of `msgs` (a batch's events count one each) in a list.
std::vector<uint64_t> EventPositions(const std::vector<SubMsg> &msgs) {
  std::vector<uint64_t> v;
  for (const SubMsg &m : msgs)
    if (m.kind == SubMsg::kEvent) v.push_back(m.position);
  return v;
}

// A window of 64 events, far smaller than what is appended: subscribers of
// every kind and speed move between the window and storage, in both
// directions, while four writers append. Each must see exactly its events.
TEST(FanoutTest, SubscribersMovingBetweenWindowAndStorageSeeEveryEventOnce) {
  auto server = StartServer({"--live-window-events", "64", "--checkpoint-interval", "10"});
  ASSERT_NE(server, nullptr);
  Client client(Connect(server->Address()));
  // 300 events first: replay comes from storage for the early subscribers.
  ASSERT_TRUE(AppendConcurrently(server->Address(), 1, 300));

  struct Sub {
    v1::SubscribeRequest req;
    int delay_every;  // 0: reads as fast as it can
  };
  std::vector<Sub> subs;
  const uint32_t batches[] = {0, 1, 7, 1000};
  for (int i = 0; i < 24; ++i) {
    Sub s{};
    if (i % 3 == 0) s.req.set_from_end(true);
    if (i % 3 == 1) s.req.set_from_position(1 + 37 * i);
    s.req.set_max_batch(batches[i % 4]);
    if (i % 8 == 5) s.req.mutable_filter()->add_event_types("Odd");
    s.delay_every = i % 5 == 4 ? 25 : 0;  // slow: falls behind the window
    subs.push_back(s);
  }
  std::vector<std::unique_ptr<SubscriptionReader>> readers;
  for (const Sub &s : subs) {
    readers.push_back(
        std::make_unique<SubscriptionReader>(Connect(server->Address()), s.req, 120000));
    if (s.delay_every) readers.back()->SetReadDelay(std::chrono::milliseconds(2), s.delay_every);
    readers.back()->StartReading();
  }
  for (auto &r : readers) ASSERT_TRUE(r->WaitForCaughtUp(30000));
  uint64_t head_before = client.Head();

  ASSERT_TRUE(AppendConcurrently(server->Address(), 4, 500));
  const uint64_t head = client.Head();
  ASSERT_EQ(head, head_before + 2000);
  std::vector<v1::RecordedEvent> log = client.ReadWholeLog();
  ASSERT_EQ(log.size(), head);

  for (size_t i = 0; i < subs.size(); ++i) {
    SCOPED_TRACE("subscriber " + std::to_string(i));
    readers[i]->SetReadDelay(std::chrono::microseconds(0), 1);
    ASSERT_TRUE(readers[i]->WaitForPosition(head, 60000));
    std::vector<SubMsg> msgs = readers[i]->Messages();
    const v1::SubscribeRequest &req = subs[i].req;
    // From the end: the subscription started at some head ≤ head_before; the
    // first CaughtUp carries it.
    uint64_t from =
        req.from_end() ? msgs.front().position + 1 : std::max<uint64_t>(1, req.from_position());
    if (req.from_end()) {
      ASSERT_EQ(msgs.front().kind, SubMsg::kCaughtUp);
      ASSERT_LE(msgs.front().position, head_before);
    }
    std::vector<uint64_t> expected;
    for (uint64_t p = from; p <= head; ++p)
      if (!req.has_filter() || MatchesFilter(log[p - 1], req.filter())) expected.push_back(p);
    EXPECT_EQ(VerifySubscription(msgs, expected, nullptr), "");
    if (req.max_batch() > 1) {
      EXPECT_EQ(readers[i]->SingleEventMessages(), 0u) << "event messages on a batched call";
      for (size_t n : readers[i]->BatchSizes()) {
        EXPECT_GE(n, 1u);
        EXPECT_LE(n, req.max_batch());
      }
    } else {
      EXPECT_TRUE(readers[i]->BatchSizes().empty()) << "batches on a call that asked for none";
    }
  }
}

// A subscriber that reads nothing while far more than the window is appended
// is served from storage when it reads again: everything, once, in order.
TEST(FanoutTest, SubscriberStoppedLongerThanTheWindowCatchesUpFromStorage) {
  auto server = StartServer({"--live-window-events", "100"});
  ASSERT_NE(server, nullptr);
  Client client(Connect(server->Address()));
  v1::SubscribeRequest req;
  req.set_max_batch(50);
  // From the beginning, not from the end: nothing tells this test when the
  // server has opened a subscription that is not read, and "the end" is the
  // head at that moment, which the first appends may already have moved.
  SubscriptionReader stopped(Connect(server->Address()), req, 120000);
  // A live reader keeps the window filling meanwhile.
  req.set_from_end(true);
  SubscriptionReader live(Connect(server->Address()), req, 120000);
  live.StartReading();
  ASSERT_TRUE(live.WaitForCaughtUp(10000));
  ASSERT_TRUE(AppendConcurrently(server->Address(), 2, 2500, std::string(200, 'x')));
  ASSERT_EQ(client.Head(), 5000u);
  ASSERT_TRUE(live.WaitForPosition(5000, 30000));
  stopped.StartReading();
  ASSERT_TRUE(stopped.WaitForPosition(5000, 60000));
  EXPECT_EQ(VerifySubscription(stopped.Messages(), Range(1, 5000), nullptr), "");
  EXPECT_EQ(VerifySubscription(live.Messages(), Range(1, 5000), nullptr), "");
}

// Without a live window (--live-window-events 0) every subscriber reads from
// storage, live ones included: still everything, once, in order.
TEST(FanoutTest, WithoutALiveWindowSubscribersReadStorage) {
  auto server = StartServer({"--live-window-events", "0"});
  ASSERT_NE(server, nullptr);
  Client client(Connect(server->Address()));
  v1::SubscribeRequest req;
  req.set_from_end(true);
  req.set_max_batch(50);
  SubscriptionReader batched(Connect(server->Address()), req, 120000);
  req.set_max_batch(0);
  SubscriptionReader single(Connect(server->Address()), req, 120000);
  batched.StartReading();
  single.StartReading();
  ASSERT_TRUE(batched.WaitForCaughtUp(10000));
  ASSERT_TRUE(single.WaitForCaughtUp(10000));
  ASSERT_TRUE(AppendConcurrently(server->Address(), 2, 500, std::string(100, 'x')));
  ASSERT_EQ(client.Head(), 1000u);
  ASSERT_TRUE(batched.WaitForPosition(1000, 30000));
  ASSERT_TRUE(single.WaitForPosition(1000, 30000));
  EXPECT_EQ(VerifySubscription(batched.Messages(), Range(1, 1000), nullptr), "");
  EXPECT_EQ(VerifySubscription(single.Messages(), Range(1, 1000), nullptr), "");
}

// Extension 2: batches hold what is ready (never a mix with `event`), never
// more than max_batch, never span CaughtUp; a batch stays within the response
// byte limit unless it holds one event larger than it.
TEST(FanoutTest, BatchesFollowTheContract) {
  auto server = StartServer({"--max-page-bytes", "8192"});
  ASSERT_NE(server, nullptr);
  Client client(Connect(server->Address()));
  // 300 events of ~1 KiB, one of 20 KiB at position 150.
  for (int i = 1; i <= 300; ++i) {
    v1::AppendRequest req;
    req.set_stream_id("batch-" + std::to_string(i % 3));
    *req.add_events() = MakeEvent("Sized", std::string(i == 150 ? 20000 : 1000, 'p'));
    client.MustAppend(req);
  }
  v1::SubscribeRequest req;
  req.set_max_batch(40);
  SubscriptionReader r(Connect(server->Address()), req, 60000, /*keep_payloads=*/true);
  r.StartReading();
  ASSERT_TRUE(r.WaitForCaughtUp(20000));
  ASSERT_TRUE(r.WaitForPosition(300, 20000));
  std::vector<SubMsg> msgs = r.Messages();
  EXPECT_EQ(VerifySubscription(msgs, Range(1, 300), nullptr), "");
  EXPECT_EQ(r.SingleEventMessages(), 0u);
  // Rebuild the batches from the message list: the server's sizes, in order.
  std::vector<size_t> sizes = r.BatchSizes();
  size_t at = 0, events_seen = 0;
  for (size_t n : sizes) {
    ASSERT_GE(n, 1u);
    ASSERT_LE(n, 40u);
    while (at < msgs.size() && msgs[at].kind != SubMsg::kEvent) ++at;
    size_t bytes = 0;
    bool caught_up_inside = false;
    for (size_t k = 0; k < n; ++k, ++at) {
      ASSERT_LT(at, msgs.size());
      if (msgs[at].kind != SubMsg::kEvent) caught_up_inside = true;
      size_t len = msgs[at].event.ByteSizeLong();
      size_t varint = 1;
      for (size_t v = len; v >= 0x80; v >>= 7) ++varint;
      bytes += 1 + varint + len;  // field 1: tag, length, RecordedEvent
    }
    EXPECT_FALSE(caught_up_inside);
    if (n > 1) EXPECT_LE(bytes, 8192u) << "a batch of " << n << " events over the byte limit";
    events_seen += n;
  }
  EXPECT_EQ(events_seen, 300u);
  // The 20 KiB event travelled alone.
  for (size_t i = 0, e = 0; i < msgs.size(); ++i) {
    if (msgs[i].kind != SubMsg::kEvent) continue;
    if (msgs[i].position == 150) {
      size_t before = 0;
      for (size_t k = 0; k < sizes.size(); ++k) {
        if (e < before + sizes[k]) {
          EXPECT_EQ(sizes[k], 1u) << "the oversized event shared its batch";
          break;
        }
        before += sizes[k];
      }
    }
    ++e;
  }

  // Live: each commit's events arrive; a batch never waits to be filled.
  v1::SubscribeRequest live_req;
  live_req.set_from_end(true);
  live_req.set_max_batch(1000);
  SubscriptionReader live(Connect(server->Address()), live_req, 60000);
  live.StartReading();
  ASSERT_TRUE(live.WaitForCaughtUp(10000));
  v1::AppendRequest one;
  one.set_stream_id("batch-live");
  *one.add_events() = MakeEvent("Sized", "x");
  client.MustAppend(one);
  ASSERT_TRUE(live.WaitForPosition(301, 5000)) << "a single event must not wait for a batch";
}

TEST(FanoutTest, MaxBatchAboveTheLimitIsRefused) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  v1::SubscribeRequest req;
  req.set_max_batch(1001);
  SubscriptionReader bad(Connect(server->Address()), req, 10000);
  bad.StartReading();
  grpc::Status st = bad.Join(10000);
  EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(st);
  EXPECT_NE(st.error_message().find("max_batch"), std::string::npos) << st.error_message();
  EXPECT_TRUE(bad.Messages().empty());

  req.set_max_batch(1000);
  SubscriptionReader edge(Connect(server->Address()), req, 10000);
  edge.StartReading();
  EXPECT_TRUE(edge.WaitForCaughtUp(10000));
  Client client(Connect(server->Address()));
  EXPECT_TRUE(client.Serving());
}

// Subscribers cancelled at random moments while commits are being published
// and delivered: the server keeps serving and the survivors see everything
// (under ASan this also checks that no freed call is touched).
TEST(FanoutTest, CancellingSubscribersWhileCommitsPublish) {
  auto server = StartServer({"--live-window-events", "256"});
  ASSERT_NE(server, nullptr);
  Client client(Connect(server->Address()));
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    std::mt19937 rng(5);
    for (int round = 0; round < 40 && !stop.load(); ++round) {
      std::vector<std::unique_ptr<SubscriptionReader>> rs;
      for (int i = 0; i < 10; ++i) {
        v1::SubscribeRequest req;
        req.set_from_end(i % 2 == 0);
        req.set_max_batch(i % 3 == 0 ? 0 : 64);
        rs.push_back(std::make_unique<SubscriptionReader>(Connect(server->Address()), req, 30000));
        rs.back()->StartReading();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 20));
      for (auto &r : rs) r->Cancel();
    }
  });
  v1::SubscribeRequest req;
  req.set_max_batch(16);
  SubscriptionReader survivor(Connect(server->Address()), req, 120000);
  survivor.StartReading();
  ASSERT_TRUE(AppendConcurrently(server->Address(), 3, 1000));
  stop = true;
  churn.join();
  ASSERT_EQ(client.Head(), 3000u);
  ASSERT_TRUE(survivor.WaitForPosition(3000, 30000));
  EXPECT_EQ(VerifySubscription(survivor.Messages(), Range(1, 3000), nullptr), "");
  EXPECT_TRUE(client.Serving());
}

}  // namespace
}  // namespace es_e2e
