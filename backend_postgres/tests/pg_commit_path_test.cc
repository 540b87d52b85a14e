// Who commits an append (backend_postgres/src/pg_queue.c): the appending
// threads themselves, one group at a time per lane, never a thread of the
// backend's.
//
//   - alone, an append is committed on its caller's thread: no hand-off to
//     another thread and back (the cost that made one append in flight slow,
//     docs/benchmarks.md). The commit publishes its head from the thread
//     that committed it, and a notifier's callback runs on the publishing
//     thread, so the callback's thread tells who committed;
//   - under concurrency the queue still forms groups, and every append is
//     answered when the group limits leave appends behind for the next
//     leader (the hand-over of the lead).
//
// A real PostgreSQL (tests/pg/pg_fixture.h), a fresh schema per test.
#include <gtest/gtest.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "es/backend.h"
#include "es/backend_postgres.h"
#include "es/notifier.h"
#include "es/validate.h"
#include "tests/pg/pg_fixture.h"

namespace {

int AppendOne(es_backend_t *b, const std::string &stream, es_err_t *err) {
  es_limits_t limits;
  es_limits_default(&limits);
  static const char kPayload[] = "payload";
  es_event_data_t ev;
  std::memset(&ev, 0, sizeof ev);
  ev.event_id = "";
  ev.event_type = "E";
  ev.content_type = "";
  ev.payload = reinterpret_cast<const uint8_t *>(kPayload);
  ev.payload_len = sizeof kPayload - 1;
  ev.correlation_id = "";
  ev.causation_id = "";
  es_append_req_t req;
  std::memset(&req, 0, sizeof req);
  req.stream_id = stream.c_str();
  req.stream_type = "";
  req.expected_kind = ES_EXPECT_ANY;
  req.events = &ev;
  req.event_count = 1;
  es_append_result_t res;
  int rc = es_append_prepare(&limits, &req, err);
  return rc ? rc : es_backend_append(b, &req, &res, err);
}

class PgCommitPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(es_pg_test::SharedPgUrl(&url_, &error)) << error;
    schema_ = es_pg_test::UniqueSchema("cp");
  }
  void TearDown() override {
    if (b_) es_backend_close(b_);
    if (n_) es_notifier_free(n_);
    std::string error;
    es_pg_test::PgExec(url_, "DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE", &error);
  }
  void Open(int committers, size_t max_group_events) {
    es_pg_options_t o;
    es_pg_options_default(&o);
    o.connections = 2;
    o.schema = schema_.c_str();
    o.committers = committers;
    o.max_group_events = max_group_events;
    es_err_t err{};
    ASSERT_EQ(ES_OK, es_pg_open(url_.c_str(), &o, &b_, &err)) << err.msg;
  }

  std::string url_, schema_;
  es_backend_t *b_ = nullptr;
  es_notifier_t *n_ = nullptr;
};

struct Observer {
  es_waiter_t w;
  std::atomic<bool> fired{false};
  pthread_t thread{};
};

void RecordThread(es_waiter_t *w) {
  Observer *o = static_cast<Observer *>(w->arg);
  o->thread = pthread_self();
  o->fired.store(true);
}

TEST_F(PgCommitPathTest, AloneAnAppendIsCommittedOnItsCallersThread) {
  ASSERT_NO_FATAL_FAILURE(Open(1, 10000));
  n_ = es_notifier_new();
  ASSERT_NE(nullptr, n_);
  es_backend_set_notifier(b_, n_);
  // Only commits publish: no listener (it publishes other servers' heads).
  es_pg_stop_listening(b_);
  es_err_t err{};
  // The first append also connects; the second is the one observed.
  ASSERT_EQ(ES_OK, AppendOne(b_, "warm-up", &err)) << err.msg;
  for (int round = 0; round < 3; round++) {
    Observer obs;
    std::memset(&obs.w, 0, sizeof obs.w);
    obs.w.fn = RecordThread;
    obs.w.arg = &obs;
    ASSERT_EQ(0, es_notifier_wait(n_, &obs.w, es_notifier_head(n_)));
    ASSERT_EQ(ES_OK, AppendOne(b_, "s-" + std::to_string(round), &err)) << err.msg;
    // The head is published before the append returns.
    ASSERT_TRUE(obs.fired.load()) << "the commit did not publish before the append returned";
    EXPECT_TRUE(pthread_equal(obs.thread, pthread_self()))
        << "the append was committed on another thread: a hand-off to a committer and back";
  }
}

// Groups of one event (max_group_events 1) make every leader leave the rest
// of the queue to the next one; the lead must pass on every time, or an
// append waits for ever.
void ManyThreadsAllAnswered(es_backend_t *b, int threads, int appends, uint64_t head_before = 0) {
  std::atomic<int> ok{0}, finished{0};
  std::atomic<bool> go{false};
  std::vector<std::string> errors(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; t++) {
    ts.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < appends; i++) {
        es_err_t err{};
        int rc = AppendOne(b, "t" + std::to_string(t) + "-" + std::to_string(i % 3), &err);
        if (rc == ES_OK)
          ok++;
        else if (errors[t].empty())
          errors[t] = err.msg;
      }
      finished++;
    });
  }
  go = true;
  // An append nobody leads waits for ever: fail in bounded time instead.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (finished.load() < threads) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr,
                   "appends still waiting after 120 s (%d of %d answered): the lead "
                   "was not passed on\n",
                   ok.load(), threads * appends);
      std::abort();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto &th : ts) th.join();
  for (const auto &e : errors) EXPECT_EQ("", e);
  EXPECT_EQ(threads * appends, ok.load());
  uint64_t head = 0;
  es_err_t err{};
  ASSERT_EQ(ES_OK, es_backend_head(b, &head, &err)) << err.msg;
  EXPECT_EQ(head_before + (uint64_t)threads * appends, head);
}

TEST_F(PgCommitPathTest, GroupsOfOneEveryAppendAnsweredOneLane) {
  ASSERT_NO_FATAL_FAILURE(Open(1, 1));
  ManyThreadsAllAnswered(b_, 16, 25);
  es_pg_stats_t st;
  es_pg_stats(b_, &st);
  EXPECT_EQ(st.appends, st.groups);
  EXPECT_EQ(1u, st.max_group);
}

TEST_F(PgCommitPathTest, ConcurrentAppendsStillShareTransactions) {
  ASSERT_NO_FATAL_FAILURE(Open(1, 10000));
  ManyThreadsAllAnswered(b_, 32, 20);
  es_pg_stats_t st;
  es_pg_stats(b_, &st);
  EXPECT_GT(st.max_group, 1u) << "no two appends ever shared a transaction";
  EXPECT_LT(st.groups, st.appends);
}

// Several lanes: one may be on the optimistic path (holding publish_mu while
// its statement waits for the head-row lock) while another is on the locking
// path (holding the row lock). Both must take the two in the same order, or
// they stall each other until lock_timeout and the appends fail.
TEST_F(PgCommitPathTest, SeveralLanesNeverStallEachOther) {
  ASSERT_NO_FATAL_FAILURE(Open(3, 10000));
  // Rounds until both paths ran (which path a group takes depends on who
  // committed last), at most 20. Each round first appends alone, one after
  // the other, until a lane commits on the optimistic path (its back-off after
  // a refused attempt runs out), so the concurrent part starts with a lane on
  // the optimistic path beside lanes that must take the lock.
  es_pg_stats_t st{};
  uint64_t head = 0;
  for (int round = 0; round < 20; round++) {
    es_pg_stats(b_, &st);
    uint64_t fast_before = st.fast_groups;
    for (int i = 0; i < 40 && st.fast_groups == fast_before; i++) {
      es_err_t err{};
      ASSERT_EQ(ES_OK, AppendOne(b_, "alone", &err)) << err.msg;
      head++;
      es_pg_stats(b_, &st);
    }
    ASSERT_NO_FATAL_FAILURE(ManyThreadsAllAnswered(b_, 16, 10, head));
    head += 160;
    es_pg_stats(b_, &st);
    if (st.fast_groups > 0 && st.fast_groups < st.groups) break;
  }
  EXPECT_GT(st.fast_groups, 0u) << "the optimistic path was never taken";
  EXPECT_LT(st.fast_groups, st.groups) << "the locking path was never taken";
}

}  // namespace
