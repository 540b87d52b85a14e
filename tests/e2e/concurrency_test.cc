// Concurrency (API.md "Semantics": expected version, global order, the
// subscriber guarantee; details 7 for checkpoints): racing EXACT writers,
// subscribers of every kind running while several writers append, and
// stalled subscribers whose backlogs must not grow the server's memory beyond
// one page each.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
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
    std::vector<uint64_t> want;
    auto match = [&req](const v1::RecordedEvent &e) { return MatchesFilter(e, req.filter()); };
    uint64_t from = req.from_position() ? req.from_position() : 1;
    for (const auto &e : log)
      if (e.global_position() >= from && match(e)) want.push_back(e.global_position());
    // Each ends at the head: with an event there, or (filtered) with a
    // checkpoint there (docs/api.md, checkpoints at the head).
    EXPECT_TRUE(readers[i]->WaitForPosition(head, 60000))
        << "did not reach position " << head << " (" << readers[i]->EventCount()
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
    EXPECT_EQ(VerifySubscription(msgs, want, subs[i].interval ? nullptr : &none), "");
    // Where a filtered subscriber reached the head while the writers ran
    // depends on timing; VerifyCheckpoints allows for it.
    if (subs[i].interval) EXPECT_EQ(VerifyCheckpoints(msgs, log, match, subs[i].interval), "");
    size_t caught_up = 0, cps = 0;
    for (const auto &m : msgs) caught_up += m.kind == SubMsg::kCaughtUp;
    for (const auto &m : msgs) cps += m.kind == SubMsg::kCheckpoint;
    EXPECT_GE(caught_up, 1u);
    std::cout << "[subscribers] " << subs[i].name << ": " << want.size() << " events, " << cps
              << " checkpoints, " << caught_up << " CaughtUp\n";
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

// What stalled subscriptions may cost the server, from the design
// (docs/architecture.md, "Subscriptions: a cursor, not a broadcast"): a
// subscription holds one page of the log, whatever its backlog, and has one
// message in flight (one outstanding write per call). A page holds at most
// SUB_PAGE_EVENTS events (core/src/subscription.c) and at most
// --max-page-bytes, each event counted at an upper bound of its encoded size
// (docs/operations.md, "page bytes": payload, strings and metadata plus 11
// bytes per field, about 190 bytes without metadata). In memory a page is
// its events' bytes (a PostgreSQL result, or the memory store's records) and
// an array of views; twice the encoded size bounds both.
constexpr long kSubPageEvents = 256;       // SUB_PAGE_EVENTS
constexpr long kMaxPageBytes = 4128768;    // --max-page-bytes, default
constexpr long kEventOverheadBytes = 256;  // the ~190 bytes above, and this test's ids
// RSS cannot attribute memory exactly: allocator rounding, connection
// buffers, and the memory store's index tables, which grow in steps (in one
// phase of the test and not in the other), make the two phases differ by up
// to about 1.5 MiB when nothing else differs (measured on both backends,
// with and without ASan); the margin covers that.
constexpr long kRssMarginKb = 2048;

// The server's anonymous resident memory (RssAnon in /proc/PID/status, KiB):
// what it allocated, without the pages of files it maps. VmRSS would count
// the LMDB backend's data file, whose pages come and go with the reads of
// the moment and are the kernel's page cache, not memory the server holds:
// on that backend they moved VmRSS by 100 MiB either way between the phases
// of the test below, hiding any buffered backlog. -1 if unavailable.
long AnonRssKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return strtol(line.c_str() + 8, nullptr, 10);
  }
  return -1;
}

// Bytes a stalled subscription may hold for events of this payload size.
long StalledSubscriptionBoundBytes(size_t payload) {
  const long event = static_cast<long>(payload) + kEventOverheadBytes;
  const long page = std::min(kSubPageEvents * event, kMaxPageBytes);
  return 2 * page + event;  // the page in memory, and the message in flight
}

TEST(ConcurrencyTest, StalledSubscriberDoesNotGrowServerMemory) {
  // Several subscribers stop reading while 100,000 events (110 MiB of
  // messages for each) are appended. The server's memory growth beyond what
  // storing the same events costs without them must stay within what the
  // design promises per subscription (above): a server that buffered even a
  // small part of each backlog fails.
  const int kSubscribers = 4;
  const int kEvents = 100000;
  const size_t kPayload = 1024;
  // The server is set up so that RSS follows what it has allocated. Every
  // thread that allocates keeps free memory of its own (a glibc arena, ASan's
  // per-thread caches), so RSS would depend on how many of the 64 PostgreSQL
  // workers happened to run: four workers are plenty here. One malloc arena
  // for the same reason; large blocks (request buffers, grown tables) mapped
  // and unmapped rather than kept below a threshold that moves with the load;
  // free memory at the top of the heap given back at once.
  // A live window of one event (the least --live-window-events allows). The
  // window is the server's one shared cache of recent events, bounded by
  // count and bytes (64 MiB by default) whatever the subscribers do, and it
  // fills while some subscription is open or closed less than 5 s ago: with
  // the default it filled during the first phase (the warm-up's subscriber
  // had just closed) and was emptied before the second, whose events reused
  // the freed memory, so the first phase cost 75 MB more and hid as much
  // buffering. Stalled subscribers read from storage either way, which is
  // what is measured here.
  ServerProcess server({"--workers", "4", "--live-window-events", "1"});
  server.SetEnv("GLIBC_TUNABLES",
                "glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=65536:"
                "glibc.malloc.trim_threshold=65536");
#if defined(__SANITIZE_ADDRESS__)
  // ASan's allocator keeps freed blocks in a quarantine (256 MiB by default,
  // and 1 MiB more per thread) that fills during the first phase and is full
  // in the second, which would dwarf what is measured: a small one, filled
  // by the warm-up, is the same in both phases (and still catches use after
  // free). Freed memory is kept mapped rather than returned every few
  // seconds, at moments that would decide the measurement.
  const char *asan = getenv("ASAN_OPTIONS");
  server.SetEnv("ASAN_OPTIONS", std::string(asan != nullptr ? asan : "") +
                                    ":quarantine_size_mb=16:thread_local_quarantine_size_kb=16:"
                                    "allocator_release_to_os_interval_ms=-1");
#endif
  std::string error;
  ASSERT_TRUE(server.Start(&error)) << error;
  auto client = std::make_unique<Client>(Connect(server.Address()));
  // The warm-up brings connection buffers, the allocator and ASan's
  // quarantine to their steady state before the first measurement; a
  // subscription that reads it all warms the read and send path too (its
  // allocations would otherwise be first made, once, after the subscribers
  // stall, and counted as theirs).
  AppendMany(client.get(), 20000, kPayload, "warmup");
  ASSERT_FALSE(HasFatalFailure());
  {
    v1::SubscribeRequest all;
    SubscriptionReader warm(Connect(server.Address()), all, 60000);
    warm.StartReading();
    ASSERT_TRUE(warm.WaitForPosition(client->Head(), 60000));
    warm.Cancel();
    warm.Join();
  }
  auto settled_rss = [&server] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    return AnonRssKb(server.Pid());
  };

  // What storing 100,000 events costs without any subscriber.
  long r0 = settled_rss();
  AppendMany(client.get(), kEvents, kPayload, "control");
  ASSERT_FALSE(HasFatalFailure());
  long r1 = settled_rss();
  const uint64_t first = client->Head() + 1;

  // The same with subscribers that read nothing.
  v1::SubscribeRequest req;
  req.set_from_position(first);
  std::vector<std::unique_ptr<SubscriptionReader>> stalled;
  for (int i = 0; i < kSubscribers; ++i)
    stalled.push_back(std::make_unique<SubscriptionReader>(Connect(server.Address()), req, 180000));
  long r2 = settled_rss();
  AppendMany(client.get(), kEvents, kPayload, "stalled");
  ASSERT_FALSE(HasFatalFailure());
  long r3 = settled_rss();
  const uint64_t last = client->Head();
  ASSERT_EQ(last - first + 1, static_cast<uint64_t>(kEvents));

  const long storing_kb = r1 - r0, with_subs_kb = r3 - r2;
  const long extra_kb = with_subs_kb - storing_kb;
  const long bound_kb =
      kSubscribers * StalledSubscriptionBoundBytes(kPayload) / 1024 + kRssMarginKb;
  const long backlog_kb = static_cast<long>(kEvents) * (static_cast<long>(kPayload) + 100) / 1024;
  std::cout << "[stalled] RssAnon KiB: start " << r0 << ", after 100k events " << r1 << " (+"
            << storing_kb << "), with " << kSubscribers << " stalled subscribers " << r2 << " -> "
            << r3 << " (+" << with_subs_kb << "), extra " << extra_kb << " KiB, bound " << bound_kb
            << " KiB (backlog ~" << backlog_kb / 1024 << " MiB per subscriber)\n";
  EXPECT_LE(extra_kb, bound_kb) << kSubscribers << " stalled subscribers cost the server "
                                << extra_kb << " KiB beyond storing the events; the design allows "
                                << bound_kb << " KiB (one page and one message each, and "
                                << kRssMarginKb << " KiB for measurement)";

  // Now they read everything, in order, once.
  for (auto &s : stalled) s->StartReading();
  for (int i = 0; i < kSubscribers; ++i) {
    EXPECT_TRUE(stalled[i]->WaitForPosition(last, 180000))
        << "subscriber " << i << " received " << stalled[i]->EventCount() << " of " << kEvents;
    stalled[i]->Cancel();
    stalled[i]->Join();
    std::vector<uint64_t> none;
    EXPECT_EQ(VerifySubscription(stalled[i]->Messages(), Range(first, last), &none), "")
        << "subscriber " << i;
  }
  stalled.clear();
  client.reset();
  StopServerExpectClean(&server);
}

}  // namespace
}  // namespace es_e2e
