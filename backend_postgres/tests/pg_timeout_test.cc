// Connections that stop answering: every wait on the database is bounded.
//
// A TCP proxy inside the test (tests/pg/tcp_proxy.h) sits between one
// backend ("server P") and a real PostgreSQL and freezes exactly in the
// middle of a commit: it holds back the chunk that carries COMMIT (the
// server never gets it; its session sits in the transaction with the head
// row locked) or forwards it and then holds back the answer (the commit
// happened; P cannot know). TCP stays up: nothing but the backend's own
// bounds can end P's wait. A second backend ("server D") is connected
// directly, as another server on the same database.
//
//   FrozenMidCommit        P's appends in flight end (UNAVAILABLE, or
//       acknowledged) within the timeouts; so do its reads; D is never
//       blocked beyond the lock timeout per call, and writes again once
//       PostgreSQL ends the abandoned transaction
//       (idle_in_transaction_session_timeout); after the proxy resumes, P
//       works again, every acknowledged append is in the log, positions are
//       gap-free.
//   LostSessionIsEnded     with new connections let through and a long
//       idle-in-transaction timeout, P ends its lost session itself
//       (pg_terminate_backend, checked against its start time) before it
//       looks up the outcome: the append is acknowledged within the
//       timeouts (found, or not found and committed again), D writes again
//       as soon as the session is gone.
//   LookupWaitsForItsTurn  the lookup after a lost commit meets the
//       reconnect gate while readers keep probing a database that does not
//       answer: it waits for its turn, then finds that the append did
//       commit, instead of answering "outcome unknown".
//
// Each runs with short timeouts: statement 1 s (an answer is overdue after
// 2 s), lock 0.5 s, connect 2-3 s.
#include <gtest/gtest.h>

#include <algorithm>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "backend_postgres/tests/pg_test_support.h"
#include "es/backend.h"
#include "es/backend_postgres.h"
#include "es/notifier.h"
#include "tests/pg/pg_fixture.h"
#include "tests/pg/tcp_proxy.h"

namespace {

using namespace es_pg_test;
using Proxy = TcpProxy;

constexpr int kStatementMs = 1000;
constexpr int kAnswerMs = kStatementMs + 1000;  // statement timeout + the grace
constexpr int kLockMs = 500;

// One PostgreSQL for the binary: the proxy needs its port.
PgServer *Server() {
  static std::unique_ptr<PgServer> server;
  if (!server) {
    server = std::make_unique<PgServer>();
    std::string error;
    if (!server->Init(&error)) {
      ADD_FAILURE() << error;
      server.reset();
    }
  }
  return server.get();
}

// Every acknowledged append, with where it was acknowledged.
struct Acked {
  std::string id;
  uint64_t position;
};

class PgTimeoutTest : public ::testing::Test {
 public:
  void Ack(const std::string &id, const Outcome &o) {
    std::lock_guard<std::mutex> lock(mu_);
    acked_.push_back({id, o.res.first_position});
  }

 protected:
  void SetUp() override {
    pg_ = Server();
    ASSERT_NE(nullptr, pg_);
    schema_ = UniqueSchema("to");
    proxy_ = std::make_unique<Proxy>(pg_->Port());
    std::string error;
    ASSERT_TRUE(proxy_->Start(&error)) << error;
  }
  void TearDown() override {
    if (proxy_) proxy_->Resume();
    for (es_backend_t *b : open_) es_backend_close(b);
    for (es_notifier_t *n : notifiers_) es_notifier_free(n);
    proxy_.reset();
    std::string error;
    PgExec(pg_->Url(), "DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE", &error);
  }
  es_backend_t *Open(const std::string &url, int idle_ms, int connect_s, es_notifier_t **n) {
    es_pg_options_t o;
    es_pg_options_default(&o);
    o.connections = 2;
    o.schema = schema_.c_str();
    o.statement_timeout_ms = kStatementMs;
    o.lock_timeout_ms = kLockMs;
    o.idle_in_transaction_timeout_ms = idle_ms;
    o.connect_timeout_s = connect_s;
    o.tcp_user_timeout_ms = 2000;
    es_backend_t *b = nullptr;
    es_err_t err{};
    EXPECT_EQ(ES_OK, es_pg_open(url.c_str(), &o, &b, &err)) << err.msg;
    if (!b) return nullptr;
    open_.push_back(b);
    *n = es_notifier_new();
    notifiers_.push_back(*n);
    es_backend_set_notifier(b, *n);
    std::vector<LogEntry> none;
    EXPECT_EQ(ES_OK, ReadLog(b, &none, &err)) << err.msg;  // starts the listener
    return b;
  }
  // Every acknowledged append is in the log at its position; the log is
  // gap-free.
  void ExpectLogHoldsEveryAck(es_backend_t *b) {
    std::vector<LogEntry> log;
    es_err_t err{};
    int rc;
    auto until = Clock::now() + std::chrono::seconds(10);
    do {
      log.clear();
      rc = ReadLog(b, &log, &err);
    } while (rc == ES_EUNAVAIL && Clock::now() < until);
    ASSERT_EQ(ES_OK, rc) << err.msg;
    ExpectGapFree(log, log.size());
    std::map<std::string, uint64_t> at;
    for (const auto &e : log) at[e.id] = e.position;
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto &a : acked_) {
      ASSERT_TRUE(at.count(a.id)) << "acknowledged, then lost: " << a.id;
      EXPECT_EQ(a.position, at[a.id]) << a.id;
    }
  }
  // Appends id to P until it is acknowledged (a client retrying with the
  // same event id), within ms.
  Outcome AppendUntilAcked(es_backend_t *b, const std::string &stream, const std::string &id,
                           int ms) {
    auto until = Clock::now() + std::chrono::milliseconds(ms);
    Outcome o;
    do {
      o = Append(b, stream, {id});
      if (o.rc == ES_OK) break;
      EXPECT_EQ(ES_EUNAVAIL, o.rc) << o.err.msg;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (Clock::now() < until);
    if (o.rc == ES_OK) Ack(id, o);
    return o;
  }

  PgServer *pg_ = nullptr;
  std::string schema_;
  std::unique_ptr<Proxy> proxy_;
  std::vector<es_backend_t *> open_;
  std::vector<es_notifier_t *> notifiers_;
  std::mutex mu_;
  std::vector<Acked> acked_;
};

// The other server's writer: appends until stop, timing each call.
struct DirectWriter {
  std::atomic<bool> stop{false};
  std::atomic<int64_t> longest_ms{0};
  std::atomic<int64_t> first_ok_ms{-1};  // after `since`
  std::atomic<int> oks{0}, unavailable{0};
  std::thread thread;
  std::string problems;

  void Start(PgTimeoutTest *t, es_backend_t *d, Clock::time_point since) {
    thread = std::thread([=] {
      for (int i = 0; !stop.load(); i++) {
        std::string id = Uuid((uint64_t)0xD0 << 40 | (uint64_t)i);
        auto t0 = Clock::now();
        Outcome o = Append(d, "direct", {id});
        int64_t ms = MsSince(t0);
        if (ms > longest_ms.load()) longest_ms = ms;
        if (o.rc == ES_OK) {
          t->Ack(id, o);
          oks++;
          if (first_ok_ms.load() < 0) first_ok_ms = MsSince(since);
        } else if (o.rc == ES_EUNAVAIL) {
          unavailable++;
        } else if (problems.size() < 1000) {
          problems += std::string(o.err.msg) + "; ";
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  void Stop() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
};

const std::string kCommitText("COMMIT\0", 7);  // the locking path's COMMIT, nothing else

class FrozenMidCommit : public PgTimeoutTest,
                        public ::testing::WithParamInterface<Proxy::OnMatch> {};

TEST_P(FrozenMidCommit, CallsEndWithinTheTimeoutsAndNothingAcknowledgedIsLost) {
  const bool committed = GetParam() == Proxy::OnMatch::kForwardChunk;
  constexpr int kIdleMs = 3000;
  es_notifier_t *np = nullptr, *nd = nullptr;
  es_backend_t *p = Open(proxy_->Url(), kIdleMs, 2, &np);
  es_backend_t *d = Open(pg_->Url(), kIdleMs, 2, &nd);
  ASSERT_NE(nullptr, p);
  ASSERT_NE(nullptr, d);
  Outcome w = Append(d, "direct", {Uuid(1)});
  ASSERT_EQ(ES_OK, w.rc) << w.err.msg;
  Ack(Uuid(1), w);

  // P's first group takes the locking path: BEGIN, lock, lookup, then
  // write + COMMIT, where the proxy freezes everything.
  proxy_->ArmTrigger(kCommitText, GetParam(), Proxy::Others::kFreeze, Proxy::NewConnections::kHold);
  const std::string x = Uuid(2), y = Uuid(3);
  auto t0 = Clock::now();
  auto fx = std::async(std::launch::async, [&] {
    Outcome o = Append(p, "via-proxy", {x});
    return std::make_pair(o, MsSince(t0));
  });
  ASSERT_TRUE(proxy_->WaitTriggered(5000));
  auto frozen_at = Clock::now();

  // The other server writes on: no call waits beyond the lock timeout (the
  // optimistic statement, then the lock), and once PostgreSQL has ended the
  // abandoned transaction (or at once, when it committed) writes succeed.
  DirectWriter dw;
  dw.Start(this, d, frozen_at);

  // P meanwhile: a read ends at the answer timeout; a second append ends too.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto fy = std::async(std::launch::async, [&] {
    auto ty = Clock::now();
    Outcome o = Append(p, "via-proxy", {y});
    return std::make_pair(o, MsSince(ty));
  });
  auto fr = std::async(std::launch::async, [&] {
    uint64_t h;
    es_err_t err{};
    int rc = es_backend_head(p, &h, &err);
    return std::make_pair(rc, std::string(err.msg));
  });
  if (fr.wait_for(std::chrono::milliseconds(kAnswerMs + 1500)) == std::future_status::ready) {
    auto [rc, msg] = fr.get();
    EXPECT_EQ(ES_EUNAVAIL, rc) << msg;
    EXPECT_NE(std::string::npos, msg.find("no answer within")) << msg;
  } else {
    ADD_FAILURE() << "a read waited beyond the timeout";
  }

  // X: acknowledged or UNAVAILABLE ("outcome unknown" when it was sent),
  // within its answer timeout plus one connection attempt, and margin.
  bool ready = fx.wait_for(std::chrono::seconds(15)) == std::future_status::ready;
  EXPECT_TRUE(ready) << "an append in flight is still waiting";
  if (!ready) proxy_->Resume();  // let it end, to end the test
  auto [ox, ms_x] = fx.get();
  EXPECT_TRUE(ox.rc == ES_OK || ox.rc == ES_EUNAVAIL) << ox.err.msg;
  EXPECT_LT(ms_x, kAnswerMs + 2000 + 3000) << ox.err.msg;
  if (ox.rc == ES_OK) Ack(x, ox);
  ready = fy.wait_for(std::chrono::seconds(15)) == std::future_status::ready;
  EXPECT_TRUE(ready) << "a second append is still waiting";
  if (!ready) proxy_->Resume();
  auto [oy, ms_y] = fy.get();
  EXPECT_TRUE(oy.rc == ES_OK || oy.rc == ES_EUNAVAIL) << oy.err.msg;
  EXPECT_LT(ms_y, 2 * (kAnswerMs + 2000) + 3000) << oy.err.msg;
  if (oy.rc == ES_OK) Ack(y, oy);

  // Let D run until PostgreSQL ended the abandoned transaction for sure.
  while (MsSince(frozen_at) < kIdleMs + 1500 || dw.oks.load() < 3) {
    if (MsSince(frozen_at) > kIdleMs + 10000) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  dw.Stop();
  EXPECT_EQ("", dw.problems);
  EXPECT_LT(dw.longest_ms.load(), 2 * kLockMs + 2000) << "another server was blocked";
  ASSERT_GE(dw.first_ok_ms.load(), 0) << "the other server never wrote again";
  EXPECT_LT(dw.first_ok_ms.load(), (committed ? 0 : kIdleMs) + 2500);
  std::printf(
      "frozen %s COMMIT: X %s after %lld ms, Y %s after %lld ms; direct writer: first "
      "ack after %lld ms, %d acked, %d unavailable, longest call %lld ms\n",
      committed ? "after" : "before", ox.rc == ES_OK ? "acked" : "unavailable", (long long)ms_x,
      oy.rc == ES_OK ? "acked" : "unavailable", (long long)ms_y, (long long)dw.first_ok_ms.load(),
      dw.oks.load(), dw.unavailable.load(), (long long)dw.longest_ms.load());

  // Back: P reconnects by itself. A retry of X is answered from the log:
  // a duplicate of the frozen commit when that went through.
  proxy_->Resume();
  Outcome rx = AppendUntilAcked(p, "via-proxy", x, 15000);
  ASSERT_EQ(ES_OK, rx.rc) << rx.err.msg;
  if (ox.rc == ES_OK) EXPECT_TRUE(rx.res.duplicate);
  if (committed) EXPECT_TRUE(rx.res.duplicate) << "the frozen commit went through";
  if (!committed && ox.rc != ES_OK) EXPECT_FALSE(rx.res.duplicate);
  Outcome rz = AppendUntilAcked(p, "via-proxy", Uuid(4), 15000);
  ASSERT_EQ(ES_OK, rz.rc) << rz.err.msg;
  // P's listener hears D again.
  Outcome last = Append(d, "direct", {Uuid(5)});
  ASSERT_EQ(ES_OK, last.rc) << last.err.msg;
  Ack(Uuid(5), last);
  auto until = Clock::now() + std::chrono::seconds(10);
  while (es_notifier_head(np) < last.res.last_position && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(last.res.last_position, es_notifier_head(np));

  ExpectLogHoldsEveryAck(d);
  es_pg_stats_t st;
  es_pg_stats(p, &st);
  EXPECT_GE(st.timeouts, 2u);  // the commit and the read
}

INSTANTIATE_TEST_SUITE_P(HeldBeforeAndAfterCommit, FrozenMidCommit,
                         ::testing::Values(Proxy::OnMatch::kHoldChunk,
                                           Proxy::OnMatch::kForwardChunk),
                         [](const ::testing::TestParamInfo<Proxy::OnMatch> &info) {
                           return std::string(info.param == Proxy::OnMatch::kHoldChunk
                                                  ? "CommitNeverArrives"
                                                  : "AnswerNeverArrives");
                         });

class LostSessionIsEnded : public PgTimeoutTest,
                           public ::testing::WithParamInterface<Proxy::OnMatch> {};

TEST_P(LostSessionIsEnded, BeforeTheOutcomeIsLookedUp) {
  const bool committed = GetParam() == Proxy::OnMatch::kForwardChunk;
  // PostgreSQL would keep the abandoned transaction for a minute: only P
  // itself can end it in time.
  constexpr int kIdleMs = 60000;
  es_notifier_t *np = nullptr, *nd = nullptr;
  es_backend_t *p = Open(proxy_->Url(), kIdleMs, 2, &np);
  es_backend_t *d = Open(pg_->Url(), kIdleMs, 2, &nd);
  ASSERT_NE(nullptr, p);
  ASSERT_NE(nullptr, d);
  Outcome w = Append(d, "direct", {Uuid(1)});
  ASSERT_EQ(ES_OK, w.rc) << w.err.msg;
  Ack(Uuid(1), w);

  // Only the connections that exist freeze; new ones go through (the
  // network lost one connection, the database is fine).
  proxy_->ArmTrigger(kCommitText, GetParam(), Proxy::Others::kFreeze,
                     Proxy::NewConnections::kServe);
  const std::string x = Uuid(2);
  auto t0 = Clock::now();
  auto fx = std::async(std::launch::async, [&] {
    Outcome o = Append(p, "via-proxy", {x});
    return std::make_pair(o, MsSince(t0));
  });
  ASSERT_TRUE(proxy_->WaitTriggered(5000));
  auto frozen_at = Clock::now();
  DirectWriter dw;
  dw.Start(this, d, frozen_at);

  bool ready = fx.wait_for(std::chrono::seconds(15)) == std::future_status::ready;
  EXPECT_TRUE(ready) << "the append in flight is still waiting";
  if (!ready) proxy_->Resume();  // let it end, to end the test
  auto [ox, ms_x] = fx.get();
  ASSERT_EQ(ES_OK, ox.rc) << ox.err.msg;
  Ack(x, ox);
  EXPECT_FALSE(ox.res.duplicate) << "its own commit, not a duplicate";
  EXPECT_LT(ms_x, kAnswerMs + 4000);
  while (dw.oks.load() < 3 && MsSince(frozen_at) < 15000)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  dw.Stop();
  EXPECT_EQ("", dw.problems);
  EXPECT_LT(dw.longest_ms.load(), 2 * kLockMs + 2000) << "another server was blocked";
  ASSERT_GE(dw.first_ok_ms.load(), 0);
  // D writes again once P has ended its lost session: long before
  // PostgreSQL's own minute.
  EXPECT_LT(dw.first_ok_ms.load(), (committed ? 0 : kAnswerMs) + 4000);
  es_pg_stats_t st;
  es_pg_stats(p, &st);
  EXPECT_GE(st.timeouts, 1u);
  EXPECT_EQ(1u, st.sessions_ended);
  std::printf(
      "lost session %s COMMIT: X acked after %lld ms; the other server wrote again after "
      "%lld ms\n",
      committed ? "after" : "before", (long long)ms_x, (long long)dw.first_ok_ms.load());

  // The lost session is gone from the server, not merely forgotten.
  std::string count, error;
  ASSERT_TRUE(PgQueryValue(pg_->Url(),
                           "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in "
                           "transaction' AND application_name = 'eventstore'",
                           &count, &error))
      << error;
  EXPECT_EQ("0", count);
  proxy_->Resume();
  Outcome again = Append(p, "via-proxy", {x});
  ASSERT_EQ(ES_OK, again.rc) << again.err.msg;
  EXPECT_TRUE(again.res.duplicate);
  EXPECT_EQ(ox.res.first_position, again.res.first_position);
  ExpectLogHoldsEveryAck(d);
}

INSTANTIATE_TEST_SUITE_P(HeldBeforeAndAfterCommit, LostSessionIsEnded,
                         ::testing::Values(Proxy::OnMatch::kHoldChunk,
                                           Proxy::OnMatch::kForwardChunk),
                         [](const ::testing::TestParamInfo<Proxy::OnMatch> &info) {
                           return std::string(info.param == Proxy::OnMatch::kHoldChunk
                                                  ? "CommitNeverArrives"
                                                  : "AnswerNeverArrives");
                         });

TEST_F(PgTimeoutTest, LookupAfterALostCommitWaitsForItsTurnAtTheGate) {
  // libpq counts connect_timeout in whole seconds: 3 makes an attempt last
  // 2 to 3 s.
  constexpr int kConnectS = 3;
  es_notifier_t *np = nullptr;
  es_backend_t *p = Open(proxy_->Url(), 60000, kConnectS, &np);
  ASSERT_NE(nullptr, p);
  for (int i = 0; i < 2; i++) {  // the committer connects; then the optimistic path
    Outcome o = Append(p, "via-proxy", {Uuid(100 + i)});
    ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
    Ack(Uuid(100 + i), o);
  }

  // Readers that keep asking, as a busy server's calls do.
  std::atomic<bool> stop{false};
  std::atomic<int> read_ok{0}, read_failed{0};
  std::vector<std::thread> readers;
  for (int i = 0; i < 4; i++)
    readers.emplace_back([&] {
      while (!stop.load()) {
        uint64_t h;
        es_err_t err{};
        if (es_backend_head(p, &h, &err) == ES_OK) {
          read_ok++;
        } else {
          read_failed++;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
    });

  // The optimistic write goes through and commits; its answer never comes
  // back. Every other connection breaks, and new ones are refused: the
  // readers reconnect, fail, and the gate starts probing.
  proxy_->ArmTrigger("es_write", Proxy::OnMatch::kForwardChunk, Proxy::Others::kDrop,
                     Proxy::NewConnections::kRefuse);
  const std::string x = Uuid(2);
  auto fx = std::async(std::launch::async, [&] {
    auto t = Clock::now();
    Outcome o = Append(p, "via-proxy", {x});
    return std::make_pair(o, MsSince(t));
  });
  ASSERT_TRUE(proxy_->WaitTriggered(5000));
  auto frozen_at = Clock::now();
  // Now the database does not answer new connections either: each probe
  // takes connect_timeout. The commit's answer is overdue after 2 s; its
  // lookup meets a reader's probe, here from 0.8 s to 2.8-3.8 s.
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  proxy_->SetNewConnections(Proxy::NewConnections::kHold);
  std::this_thread::sleep_for(
      std::chrono::milliseconds(std::max<int64_t>(0, 4000 - MsSince(frozen_at))));
  // The database answers again, while the lookup's own attempt is pending.
  proxy_->SetNewConnections(Proxy::NewConnections::kServe);

  bool ready = fx.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  EXPECT_TRUE(ready) << "the append in flight is still waiting";
  if (!ready) proxy_->Resume();
  auto [ox, ms_x] = fx.get();
  stop = true;
  for (auto &t : readers) t.join();
  EXPECT_EQ(ES_OK, ox.rc) << "the lookup gave up: " << ox.err.msg;
  std::printf("lost commit resolved: %s after %lld ms (readers: %d ok, %d failed)\n",
              ox.rc == ES_OK ? "acknowledged" : ox.err.msg, (long long)ms_x, read_ok.load(),
              read_failed.load());
  EXPECT_GT(read_failed.load(), 0) << "the readers never met the gate";
  if (ox.rc != ES_OK) return;
  Ack(x, ox);
  EXPECT_FALSE(ox.res.duplicate);
  EXPECT_LT(ms_x, kAnswerMs + 2 * (kConnectS * 1000 + 1000) + 3000);
  proxy_->Resume();
  ExpectLogHoldsEveryAck(p);
}

}  // namespace
