// Tests of the PostgreSQL backend beyond the conformance suite: what only a
// database shared by several writers, processes and restarts can show.
//
//   - group commit under concurrency: many threads, EXACT races, the log
//     gap-free 1..N, and more than one append per transaction;
//   - two backends (two "servers") on one database: one gap-free log, and
//     each one's notifier hears the other's commits (LISTEN/NOTIFY);
//   - one append's failure never fails another's, even when PostgreSQL
//     refuses an input in the middle of a group;
//   - faults: PostgreSQL stopped (ES_EUNAVAIL with a clear message, then
//     recovery by itself), restarted (the first call after it succeeds),
//     crashed (every acknowledged append is still there);
//   - idempotency across a close and reopen, migrations run by many openers
//     at once, a schema newer than the build, an unreachable URL.
//
// Every test uses a real PostgreSQL (tests/pg/pg_fixture.h): the shared one
// with a schema per test, or one of its own when it stops the server.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "backend_postgres/tests/pg_test_support.h"
#include "es/backend.h"
#include "es/backend_postgres.h"
#include "es/notifier.h"
#include "es/validate.h"
#include "tests/pg/pg_fixture.h"

namespace {

using es_pg_test::ExpectGapFree;
using es_pg_test::Head;
using es_pg_test::LogEntry;
using es_pg_test::Outcome;
using es_pg_test::PgServer;
using es_pg_test::ReadLog;
using es_pg_test::Uuid;

// Appends events with these ids ("" = assigned) as the server would.
Outcome Append(es_backend_t *b, const std::string &stream, int kind, uint64_t expected,
               const std::vector<std::string> &ids, const std::string &type = "E",
               bool prepare = true) {
  es_limits_t limits;
  es_limits_default(&limits);
  std::vector<es_event_data_t> evs(ids.size());
  std::string payload = "payload of " + stream;
  for (size_t i = 0; i < ids.size(); i++) {
    std::memset(&evs[i], 0, sizeof evs[i]);
    evs[i].event_id = ids[i].c_str();
    evs[i].event_type = type.c_str();
    evs[i].content_type = "";
    evs[i].payload = reinterpret_cast<const uint8_t *>(payload.data());
    evs[i].payload_len = payload.size();
    evs[i].correlation_id = "";
    evs[i].causation_id = "";
  }
  es_append_req_t req;
  std::memset(&req, 0, sizeof req);
  req.stream_id = stream.c_str();
  req.stream_type = "";
  req.expected_kind = kind;
  req.expected_version = expected;
  req.events = evs.data();
  req.event_count = evs.size();
  Outcome o;
  if (prepare) {
    o.rc = es_append_prepare(&limits, &req, &o.err);
    if (o.rc) return o;
  } else {
    for (size_t i = 0; i < ids.size(); i++) es_uuid_parse(ids[i].c_str(), evs[i].id);
  }
  o.rc = es_backend_append(b, &req, &o.res, &o.err);
  return o;
}

Outcome AppendOne(es_backend_t *b, const std::string &stream) {
  return Append(b, stream, ES_EXPECT_ANY, 0, {""});
}

// A store in a fresh schema of the shared server.
class PgBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(es_pg_test::SharedPgUrl(&url_, &error)) << error;
    schema_ = es_pg_test::UniqueSchema("bt");
  }
  void TearDown() override {
    for (es_backend_t *b : open_) es_backend_close(b);
    std::string error;
    es_pg_test::PgExec(url_, "DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE", &error);
  }
  es_backend_t *Open(int connections = 4) {
    es_pg_options_t o;
    es_pg_options_default(&o);
    o.connections = connections;
    o.schema = schema_.c_str();
    es_backend_t *b = nullptr;
    es_err_t err{};
    int rc = es_pg_open(url_.c_str(), &o, &b, &err);
    EXPECT_EQ(ES_OK, rc) << err.msg;
    if (b) open_.push_back(b);
    return b;
  }
  void Close(es_backend_t *b) {
    open_.erase(std::find(open_.begin(), open_.end(), b));
    es_backend_close(b);
  }

  std::string url_, schema_;
  std::vector<es_backend_t *> open_;
};

TEST_F(PgBackendTest, GroupCommitUnderConcurrencyIsGapFreeAndGroups) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  // Each thread appends to a stream of its own with EXACT (always passes)
  // and races the others with EXACT on one shared stream, learning the
  // stream's version from each failure.
  constexpr int kThreads = 32, kAppends = 40;
  std::atomic<uint64_t> events{0};
  std::vector<std::vector<uint64_t>> won(kThreads);  // race versions each thread won
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      std::string own = "own-" + std::to_string(t);
      uint64_t version = 0, race_seen = 0;
      for (int i = 0; i < kAppends; i++) {
        std::vector<std::string> ids(1 + i % 3);
        for (size_t k = 0; k < ids.size(); k++)
          ids[k] = Uuid((uint64_t)(t + 1) << 32 | (uint64_t)i << 4 | k);
        Outcome o = Append(b, own, ES_EXPECT_EXACT, version, ids);
        ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
        ASSERT_EQ(version + 1, o.res.first_version);
        ASSERT_EQ(o.res.first_position + ids.size() - 1, o.res.last_position);
        version += ids.size();
        events += ids.size();

        Outcome r = Append(b, "race", ES_EXPECT_EXACT, race_seen,
                           {Uuid((uint64_t)(t + 1) << 40 | (uint64_t)i)});
        if (r.rc == ES_OK) {
          ASSERT_EQ(race_seen + 1, r.res.first_version);
          won[t].push_back(race_seen + 1);
          race_seen++;
          events++;
        } else {
          ASSERT_EQ(ES_EVERSION, r.rc) << r.err.msg;
          ASSERT_EQ(1, r.err.has_actual_version);
          ASSERT_GT(r.err.actual_version, race_seen);
          race_seen = r.err.actual_version;
        }
      }
    });
  }
  go = true;
  for (auto &th : threads) th.join();

  std::vector<LogEntry> log;
  es_err_t err{};
  ASSERT_EQ(ES_OK, ReadLog(b, &log, &err)) << err.msg;
  ExpectGapFree(log, events.load());
  EXPECT_EQ(events.load(), Head(b));
  // Every race version has exactly one winner.
  std::map<uint64_t, int> winners;
  for (const auto &w : won)
    for (uint64_t v : w) winners[v]++;
  uint64_t race_len = 0;
  for (const auto &e : log) race_len += e.stream == "race";
  ASSERT_EQ(race_len, winners.size());
  for (const auto &[v, n] : winners) EXPECT_EQ(1, n) << "version " << v;

  es_pg_stats_t st;
  es_pg_stats(b, &st);
  EXPECT_EQ((uint64_t)kThreads * kAppends + race_len, st.appends);
  EXPECT_GT(st.max_group, 1u) << "no two appends ever shared a transaction";
  EXPECT_LT(st.groups, st.appends);
  EXPECT_GT(st.fast_groups, 0u) << "the optimistic path was never taken";
  std::printf("group commit: %llu appends in %llu transactions (largest %llu)\n",
              (unsigned long long)st.appends, (unsigned long long)st.groups,
              (unsigned long long)st.max_group);

  // The same figures, and the pool's, through the generic monitoring hook.
  es_backend_stat_t stats[32];
  size_t n = es_backend_stats(b, stats, 32);
  std::map<std::string, uint64_t> by_name;
  for (size_t i = 0; i < n; i++) by_name[stats[i].name] = stats[i].value;
  EXPECT_EQ(st.groups, by_name["pg_group_commits_total"]);
  EXPECT_EQ(st.appends, by_name["pg_appends_committed_total"]);
  EXPECT_EQ(4u, by_name["pg_pool_size"]);
  EXPECT_LE(by_name["pg_pool_open_connections"], 4u);
  EXPECT_EQ(by_name["pg_pool_open_connections"],
            by_name["pg_pool_idle_connections"] + by_name["pg_pool_in_use_connections"]);
  EXPECT_EQ(0u, by_name["pg_pool_in_use_connections"]) << "nothing is reading now";
}

TEST_F(PgBackendTest, SameAppendTwiceInOneGroupIsADuplicate) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  // Many threads send the very same batch at once (a client retrying
  // eagerly): one commits it, all others get the original result.
  std::vector<std::string> ids = {Uuid(1), Uuid(2), Uuid(3)};
  constexpr int kThreads = 16;
  std::vector<Outcome> outs(kThreads);
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++)
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      outs[t] = Append(b, "dup", ES_EXPECT_NO_STREAM, 0, ids);
    });
  go = true;
  for (auto &th : threads) th.join();
  int originals = 0;
  for (const auto &o : outs) {
    ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
    originals += !o.res.duplicate;
    EXPECT_EQ(1u, o.res.first_version);
    EXPECT_EQ(3u, o.res.last_version);
    EXPECT_EQ(1u, o.res.first_position);
    EXPECT_EQ(3u, o.res.last_position);
    EXPECT_EQ(outs[0].res.recorded_at_unix_ms, o.res.recorded_at_unix_ms);
  }
  EXPECT_EQ(1, originals);
  EXPECT_EQ(3u, Head(b));
}

TEST_F(PgBackendTest, ABadAppendFailsAloneInItsGroup) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  // An event type PostgreSQL refuses (invalid UTF-8; the server's validation
  // would have caught it, the backend must still not let it hurt others).
  constexpr int kThreads = 16;
  std::atomic<bool> go{false};
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++)
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < 10; i++) {
        Outcome o = Append(b, "good-" + std::to_string(t), ES_EXPECT_ANY, 0,
                           {Uuid((uint64_t)(t + 1) << 32 | i)});
        EXPECT_EQ(ES_OK, o.rc) << o.err.msg;
        ok += o.rc == ES_OK;
      }
    });
  go = true;
  int bad_failed = 0;
  for (int i = 0; i < 10; i++) {
    Outcome o = Append(b, "bad", ES_EXPECT_ANY, 0, {Uuid(900 + i)}, "bad\xff\xfe", false);
    bad_failed += o.rc == ES_EINTERNAL;
  }
  for (auto &th : threads) th.join();
  EXPECT_EQ(10, bad_failed);
  EXPECT_EQ(kThreads * 10, ok.load());
  std::vector<LogEntry> log;
  es_err_t err{};
  ASSERT_EQ(ES_OK, ReadLog(b, &log, &err)) << err.msg;
  ExpectGapFree(log, kThreads * 10);
}

TEST_F(PgBackendTest, TwoBackendsShareOneGapFreeLogAndHearEachOther) {
  es_backend_t *a = Open(), *b = Open();
  ASSERT_NE(nullptr, a);
  ASSERT_NE(nullptr, b);
  es_notifier_t *na = es_notifier_new(), *nb = es_notifier_new();
  es_backend_set_notifier(a, na);
  es_backend_set_notifier(b, nb);
  // Start both listeners (a log read does) before the writers go.
  std::vector<LogEntry> none;
  es_err_t err{};
  ASSERT_EQ(ES_OK, ReadLog(a, &none, &err));
  ASSERT_EQ(ES_OK, ReadLog(b, &none, &err));

  constexpr int kThreads = 8, kAppends = 50;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2 * kThreads; t++)
    threads.emplace_back([&, t] {
      es_backend_t *mine = t % 2 ? b : a;
      while (!go.load()) std::this_thread::yield();
      std::string stream = "s" + std::to_string(t);
      for (int i = 0; i < kAppends; i++) {
        Outcome o =
            Append(mine, stream, ES_EXPECT_EXACT, (uint64_t)i, {Uuid((uint64_t)(t + 1) << 32 | i)});
        ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
      }
    });
  go = true;
  for (auto &th : threads) th.join();
  const uint64_t n = 2 * kThreads * kAppends;
  std::vector<LogEntry> log;
  ASSERT_EQ(ES_OK, ReadLog(a, &log, &err)) << err.msg;
  ExpectGapFree(log, n);
  // Each notifier learns the final head, whichever backend committed it.
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((es_notifier_head(na) < n || es_notifier_head(nb) < n) &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  EXPECT_EQ(n, es_notifier_head(na));
  EXPECT_EQ(n, es_notifier_head(nb));

  // A single commit of one is heard by the other quickly.
  for (int i = 0; i < 5; i++) {
    auto t0 = std::chrono::steady_clock::now();
    Outcome o = AppendOne(a, "ping");
    ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
    while (es_notifier_head(nb) < o.res.last_position &&
           std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2))
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    EXPECT_LT(ms, 100) << "the other backend heard the commit after " << ms << " ms";
  }
  es_pg_stats_t st;
  es_pg_stats(b, &st);
  EXPECT_GT(st.notifications, 0u);

  Close(a);
  Close(b);
  es_notifier_free(na);
  es_notifier_free(nb);
}

TEST_F(PgBackendTest, ACommitByAnotherServerIsNeverMissedByTheOptimisticPath) {
  // a commits through its optimistic path with what it knows of "s"; b
  // changes "s" behind its back. Every decision of a must still be right.
  es_backend_t *a = Open(), *b = Open();
  ASSERT_NE(nullptr, a);
  ASSERT_NE(nullptr, b);
  for (int i = 0; i < 3; i++) ASSERT_EQ(ES_OK, AppendOne(a, "warm").rc);   // a learns the head
  ASSERT_EQ(ES_OK, Append(a, "s", ES_EXPECT_NO_STREAM, 0, {Uuid(1)}).rc);  // a: s at 1
  ASSERT_EQ(ES_OK, Append(b, "s", ES_EXPECT_EXACT, 1, {Uuid(2)}).rc);      // b: s at 2
  // a's cache says 1: EXACT 1 passes there, but the store is at 2.
  Outcome o = Append(a, "s", ES_EXPECT_EXACT, 1, {Uuid(3)});
  EXPECT_EQ(ES_EVERSION, o.rc) << o.err.msg;
  EXPECT_EQ(2u, o.err.actual_version);
  // ... and EXACT 2 fails there but is right.
  ASSERT_EQ(ES_OK, Append(b, "s", ES_EXPECT_EXACT, 2, {Uuid(4)}).rc);  // s at 3
  o = Append(a, "s", ES_EXPECT_EXACT, 3, {Uuid(5)});
  EXPECT_EQ(ES_OK, o.rc) << o.err.msg;
  EXPECT_EQ(4u, o.res.first_version);
  // A stream a never saw, created by b: a must not take it for new.
  ASSERT_EQ(ES_OK, Append(b, "t", ES_EXPECT_NO_STREAM, 0, {Uuid(6)}).rc);
  for (int i = 0; i < 3; i++) ASSERT_EQ(ES_OK, AppendOne(a, "warm").rc);
  o = Append(a, "t", ES_EXPECT_NO_STREAM, 0, {Uuid(7)});
  EXPECT_EQ(ES_EVERSION, o.rc) << o.err.msg;
  o = Append(a, "t", ES_EXPECT_ANY, 0, {Uuid(8)});
  EXPECT_EQ(ES_OK, o.rc) << o.err.msg;
  EXPECT_EQ(2u, o.res.first_version);
  // An id b stored, sent again through a: a duplicate, not a second copy.
  o = Append(a, "s", ES_EXPECT_ANY, 0, {Uuid(4)});
  EXPECT_EQ(ES_OK, o.rc) << o.err.msg;
  EXPECT_TRUE(o.res.duplicate);
  EXPECT_EQ(3u, o.res.first_version);
  std::vector<LogEntry> log;
  es_err_t err{};
  ASSERT_EQ(ES_OK, ReadLog(a, &log, &err)) << err.msg;
  ExpectGapFree(log, log.size());
  EXPECT_EQ(12u, log.size());
  es_pg_stats_t st;
  es_pg_stats(a, &st);
  EXPECT_GT(st.fast_groups, 0u);
}

TEST_F(PgBackendTest, IdempotencySurvivesCloseAndReopen) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  std::vector<std::string> ids = {Uuid(10), Uuid(11)};
  AppendOne(b, "before");
  Outcome first = Append(b, "order-1", ES_EXPECT_NO_STREAM, 0, ids);
  ASSERT_EQ(ES_OK, first.rc) << first.err.msg;
  Close(b);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));

  b = Open();
  ASSERT_NE(nullptr, b);
  Outcome again = Append(b, "order-1", ES_EXPECT_NO_STREAM, 0, ids);
  ASSERT_EQ(ES_OK, again.rc) << again.err.msg;
  EXPECT_TRUE(again.res.duplicate);
  EXPECT_EQ(first.res.first_version, again.res.first_version);
  EXPECT_EQ(first.res.last_version, again.res.last_version);
  EXPECT_EQ(first.res.first_position, again.res.first_position);
  EXPECT_EQ(first.res.last_position, again.res.last_position);
  EXPECT_EQ(first.res.recorded_at_unix_ms, again.res.recorded_at_unix_ms);
  Outcome mix = Append(b, "order-1", ES_EXPECT_ANY, 0, {Uuid(12), Uuid(11)});
  EXPECT_EQ(ES_EEXIST, mix.rc);
  EXPECT_NE(nullptr, std::strstr(mix.err.msg, Uuid(11).c_str())) << mix.err.msg;
  EXPECT_EQ(3u, Head(b));
}

TEST_F(PgBackendTest, ManyOpenersMigrateOnce) {
  constexpr int kOpeners = 8;
  std::vector<es_backend_t *> bs(kOpeners, nullptr);
  std::vector<std::string> errors(kOpeners);
  std::vector<std::thread> threads;
  for (int i = 0; i < kOpeners; i++)
    threads.emplace_back([&, i] {
      es_pg_options_t o;
      es_pg_options_default(&o);
      o.connections = 1;
      o.schema = schema_.c_str();
      es_err_t err{};
      if (es_pg_open(url_.c_str(), &o, &bs[i], &err) != ES_OK) errors[i] = err.msg;
    });
  for (auto &th : threads) th.join();
  for (int i = 0; i < kOpeners; i++) {
    EXPECT_EQ("", errors[i]);
    if (bs[i]) open_.push_back(bs[i]);
  }
  std::string value, error;
  ASSERT_TRUE(es_pg_test::PgQueryValue(
      url_, "SELECT count(*) || ':' || max(version) FROM \"" + schema_ + "\".es_schema_migrations",
      &value, &error))
      << error;
  EXPECT_EQ("4:4", value);
}

TEST_F(PgBackendTest, SchemaNewerThanTheBuildIsRefused) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  Close(b);
  std::string error;
  ASSERT_TRUE(es_pg_test::PgExec(
      url_,
      "INSERT INTO \"" + schema_ + "\".es_schema_migrations (version, name) VALUES (99, 'future')",
      &error))
      << error;
  es_pg_options_t o;
  es_pg_options_default(&o);
  o.schema = schema_.c_str();
  es_err_t err{};
  es_backend_t *nb = nullptr;
  EXPECT_EQ(ES_EINVAL, es_pg_open(url_.c_str(), &o, &nb, &err));
  EXPECT_EQ(nullptr, nb);
  EXPECT_NE(nullptr, std::strstr(err.msg, "newer")) << err.msg;
}

TEST(PgBackendOpen, UnreachableDatabaseIsUnavailableWithAClearMessage) {
  es_backend_t *b = nullptr;
  es_err_t err{};
  // Port 1 on loopback: nothing listens there.
  EXPECT_EQ(ES_EUNAVAIL,
            es_pg_open("postgresql://postgres@127.0.0.1:1/postgres", nullptr, &b, &err));
  EXPECT_EQ(nullptr, b);
  EXPECT_NE(nullptr, std::strstr(err.msg, "PostgreSQL")) << err.msg;
  EXPECT_NE(nullptr, std::strstr(err.msg, "cannot connect")) << err.msg;
  EXPECT_EQ(ES_EINVAL, es_pg_open("", nullptr, &b, &err));
}

// ---- faults: a server of its own, stopped and restarted ----------------------------

class PgFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(pg_.Init(&error)) << error;
  }
  void TearDown() override {
    for (es_backend_t *b : open_) es_backend_close(b);
  }
  es_backend_t *Open() {
    es_backend_t *b = nullptr;
    es_err_t err{};
    es_pg_options_t o;
    es_pg_options_default(&o);
    o.connections = 4;
    EXPECT_EQ(ES_OK, es_pg_open(pg_.Url().c_str(), &o, &b, &err)) << err.msg;
    if (b) open_.push_back(b);
    return b;
  }
  void Close(es_backend_t *b) {
    open_.erase(std::find(open_.begin(), open_.end(), b));
    es_backend_close(b);
  }
  PgServer pg_;
  std::vector<es_backend_t *> open_;
};

TEST_F(PgFaultTest, StopRestartCrash) {
  es_backend_t *a = Open(), *b = Open();
  ASSERT_NE(nullptr, a);
  ASSERT_NE(nullptr, b);
  es_notifier_t *na = es_notifier_new();
  es_backend_set_notifier(a, na);
  es_err_t err{};
  std::vector<LogEntry> log;
  ASSERT_EQ(ES_OK, ReadLog(a, &log, &err)) << err.msg;  // starts a's listener
  uint64_t acked = 0;
  for (int i = 0; i < 20; i++) {
    ASSERT_EQ(ES_OK, AppendOne(i % 2 ? a : b, "before").rc);
    acked++;
  }

  // 1. A restart between calls: the first call after it succeeds (its pooled
  // connections are stale; the backend notices and reconnects at once).
  std::string error;
  ASSERT_TRUE(pg_.Restart(&error)) << error;
  Outcome o = AppendOne(a, "after-restart");
  EXPECT_EQ(ES_OK, o.rc) << o.err.msg;
  acked += o.rc == ES_OK;
  EXPECT_EQ(acked, Head(a));
  log.clear();
  EXPECT_EQ(ES_OK, ReadLog(b, &log, &err)) << err.msg;

  // 2. Stopped: every method fails with ES_EUNAVAIL naming PostgreSQL, at
  // once (no hang), and the backend stays usable.
  pg_.Stop();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 5; i++) {
    o = AppendOne(a, "while-down");
    EXPECT_EQ(ES_EUNAVAIL, o.rc) << o.err.msg;
    EXPECT_NE(nullptr, std::strstr(o.err.msg, "PostgreSQL")) << o.err.msg;
    uint64_t h;
    EXPECT_EQ(ES_EUNAVAIL, es_backend_head(b, &h, &err));
    log.clear();
    EXPECT_EQ(ES_EUNAVAIL, ReadLog(a, &log, &err));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  std::printf("while down: %s\n", o.err.msg);

  // 3. Back: calls succeed again by themselves (within the reconnect
  // back-off), and a's listener hears b's commits again.
  ASSERT_TRUE(pg_.Start(&error)) << error;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  do {
    o = AppendOne(a, "after-start");
  } while (o.rc == ES_EUNAVAIL && std::chrono::steady_clock::now() < until);
  ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
  acked++;
  do {
    o = AppendOne(b, "from-b");
  } while (o.rc == ES_EUNAVAIL && std::chrono::steady_clock::now() < until);
  ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
  acked++;
  while (es_notifier_head(na) < acked && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(acked, es_notifier_head(na));

  // 4. A crash (SIGKILL of the postmaster) right after acknowledgements:
  // every acknowledged append is there after recovery.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> acked_during{0};
  std::vector<std::thread> writers;
  std::mutex mu;
  std::set<std::string> acked_ids;
  for (int t = 0; t < 4; t++)
    writers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); i++) {
        std::string id = Uuid((uint64_t)(t + 1) << 40 | (uint64_t)i);
        Outcome w = Append(t % 2 ? a : b, "crash-" + std::to_string(t), ES_EXPECT_ANY, 0, {id});
        if (w.rc == ES_OK) {
          acked_during++;
          std::lock_guard<std::mutex> lock(mu);
          acked_ids.insert(id);
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
      }
    });
  while (acked_during.load() < 100) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  pg_.Crash();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  stop = true;
  for (auto &th : writers) th.join();
  ASSERT_TRUE(pg_.Start(&error)) << error;
  until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  int rc;
  do {
    log.clear();
    rc = ReadLog(b, &log, &err);
  } while (rc == ES_EUNAVAIL && std::chrono::steady_clock::now() < until);
  ASSERT_EQ(ES_OK, rc) << err.msg;
  std::set<std::string> present;
  for (const auto &e : log) present.insert(e.id);
  for (const auto &id : acked_ids) EXPECT_TRUE(present.count(id)) << "lost acknowledged " << id;
  ExpectGapFree(log, log.size());
  std::printf("crash: %zu appends acknowledged during the run, %zu events after recovery\n",
              acked_ids.size(), log.size());

  Close(a);
  es_notifier_free(na);
}

}  // namespace
