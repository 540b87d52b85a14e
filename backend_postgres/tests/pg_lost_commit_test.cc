// A commit whose answer is lost, staged with the backend's test hooks
// (es_pg_set_test_hooks): what is acknowledged must tell the truth.
//
// Of a first attempt and a client's retry of the same append (same stream,
// same event ids), exactly one acknowledgement is the original
// (duplicate = false), whichever of them committed; an append whose own
// commit lost its answer is acknowledged once, as the original. The race
// that makes this hard — a retry that commits the same batch, at the very
// positions the first attempt chose, while the first attempt's connection is
// lost — cannot be staged by timing, so the hooks stage it.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <vector>

#include "backend_postgres/tests/pg_test_support.h"
#include "es/backend.h"
#include "es/backend_postgres.h"
#include "tests/pg/pg_fixture.h"

namespace {

using namespace es_pg_test;

// What the hooks do, once each.
struct Stage {
  es_backend_t *other = nullptr;  // before_write: append `ids` to `stream` here
  std::string stream;
  std::vector<std::string> ids;
  Outcome other_outcome;
  std::atomic<int> writes{0};
  std::atomic<int> losses_left{0};

  static void BeforeWrite(void *arg) {
    auto *s = static_cast<Stage *>(arg);
    if (s->writes++ == 0 && s->other) s->other_outcome = Append(s->other, s->stream, s->ids);
  }
  static bool LoseAnswer(void *arg) {
    auto *s = static_cast<Stage *>(arg);
    return s->losses_left.fetch_sub(1) > 0;
  }
};

class PgLostCommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(SharedPgUrl(&url_, &error)) << error;
    schema_ = UniqueSchema("lc");
  }
  void TearDown() override {
    for (es_backend_t *b : open_) es_backend_close(b);
    std::string error;
    PgExec(url_, "DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE", &error);
  }
  es_backend_t *Open() {
    es_pg_options_t o;
    es_pg_options_default(&o);
    o.connections = 2;
    o.schema = schema_.c_str();
    es_backend_t *b = nullptr;
    es_err_t err{};
    EXPECT_EQ(ES_OK, es_pg_open(url_.c_str(), &o, &b, &err)) << err.msg;
    if (b) open_.push_back(b);
    return b;
  }
  void Hook(es_backend_t *b, Stage *s) {
    es_pg_test_hooks_t h{Stage::BeforeWrite, Stage::LoseAnswer, s};
    es_pg_set_test_hooks(b, &h);
  }
  std::vector<LogEntry> Log(es_backend_t *b) {
    std::vector<LogEntry> log;
    es_err_t err{};
    EXPECT_EQ(ES_OK, ReadLog(b, &log, &err)) << err.msg;
    return log;
  }

  std::string url_, schema_;
  std::vector<es_backend_t *> open_;
};

// The first attempt decides from what it knows (the optimistic path), a
// client's retry of the same append commits on another server at exactly
// the positions the first attempt chose, and the first attempt's answer is
// lost. Looking for "an event with my first id at my first position" would
// find the retry's commit and call it the first attempt's own: both
// acknowledgements would claim to be the original.
TEST_F(PgLostCommitTest, ARetryCommittedElsewhereIsNotTakenForTheLostAttempt) {
  es_backend_t *a = Open(), *b = Open();
  ASSERT_TRUE(a && b);
  ASSERT_EQ(ES_OK, Append(a, "warm-up", {Uuid(1)}).rc);  // a now knows the head: optimistic path
  es_pg_stats_t before;
  es_pg_stats(a, &before);

  Stage stage;
  stage.other = b;
  stage.stream = "order-7";
  stage.ids = {Uuid(10), Uuid(11)};
  stage.losses_left = 1;
  Hook(a, &stage);
  Outcome first = Append(a, "order-7", stage.ids);
  es_pg_set_test_hooks(a, nullptr);

  ASSERT_EQ(ES_OK, stage.other_outcome.rc) << stage.other_outcome.err.msg;
  ASSERT_EQ(ES_OK, first.rc) << first.err.msg;
  EXPECT_EQ(1, stage.writes.load()) << "the optimistic path was not taken";
  // The retry committed first, at positions 2..3: it is the original.
  EXPECT_FALSE(stage.other_outcome.res.duplicate);
  EXPECT_EQ(2u, stage.other_outcome.res.first_position);
  EXPECT_TRUE(first.res.duplicate) << "both acknowledgements claim to be the original";
  EXPECT_EQ(stage.other_outcome.res.first_position, first.res.first_position);
  EXPECT_EQ(stage.other_outcome.res.last_version, first.res.last_version);
  EXPECT_EQ(stage.other_outcome.res.recorded_at_unix_ms, first.res.recorded_at_unix_ms);

  std::vector<LogEntry> log = Log(a);
  ExpectGapFree(log, 3);
}

// The append's own commit happened and only its answer was lost: it is
// found by its commit token and acknowledged once, as the original; the log
// holds it once; a client's later retry is the duplicate.
TEST_F(PgLostCommitTest, AnOwnCommitWhoseAnswerWasLostIsTheOriginal) {
  es_backend_t *a = Open();
  ASSERT_TRUE(a);
  for (int path = 0; path < 2; path++) {  // 0: the locking path (cold), 1: the optimistic one
    SCOPED_TRACE(path ? "optimistic path" : "locking path");
    Stage stage;
    stage.losses_left = 1;
    Hook(a, &stage);
    std::string stream = "s-" + std::to_string(path);
    std::vector<std::string> ids = {Uuid(100 + 2 * path), Uuid(101 + 2 * path)};
    Outcome o = Append(a, stream, ids);
    es_pg_set_test_hooks(a, nullptr);
    ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
    EXPECT_LE(stage.losses_left.load(), 0) << "the answer was never lost";
    EXPECT_FALSE(o.res.duplicate);
    EXPECT_EQ(2u * path + 1, o.res.first_position);

    Outcome retry = Append(a, stream, ids);
    ASSERT_EQ(ES_OK, retry.rc) << retry.err.msg;
    EXPECT_TRUE(retry.res.duplicate);
    EXPECT_EQ(o.res.first_position, retry.res.first_position);
    ExpectGapFree(Log(a), 2u * path + 2);
  }
}

}  // namespace
