// A NOTIFY on the store's channel from anyone is a hint, never a fact.
//
// Any role that can connect can send `NOTIFY es_events, '<anything>'`. The
// test sends hostile payloads from a connection of its own — negative,
// 2^64-1 and beyond, text, empty, padded, a head beyond the real one, a long
// run of digits, a burst of hundreds in one transaction — to two backends
// ("servers") sharing one store, with a live subscriber on one of them
// (the core subscription engine woken by the backend's notifier, as the
// server runs Subscribe). After every payload a commit by the other backend
// must still wake the subscriber; the subscriber must see every position
// once, in order; the published head must never exceed the real one; and the
// subscriber's reads of the database and the listener's reads of the head
// must stay bounded (nothing spins). Garbage is counted.
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <string>
#include <vector>

#include "backend_postgres/tests/pg_test_support.h"
#include "es/backend.h"
#include "es/backend_postgres.h"
#include "es/notifier.h"
#include "tests/pg/pg_fixture.h"

namespace {

using namespace es_pg_test;

class PgNotifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(SharedPgUrl(&url_, &error)) << error;
    schema_ = UniqueSchema("nt");
    channel_ = "es_events." + schema_;
  }
  void TearDown() override {
    if (outside_) PQfinish(outside_);
    for (es_backend_t *b : open_) es_backend_close(b);
    for (es_notifier_t *n : notifiers_) es_notifier_free(n);
    std::string error;
    PgExec(url_, "DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE", &error);
  }
  es_backend_t *Open(es_notifier_t **n) {
    es_pg_options_t o;
    es_pg_options_default(&o);
    o.connections = 2;
    o.schema = schema_.c_str();
    es_backend_t *b = nullptr;
    es_err_t err{};
    EXPECT_EQ(ES_OK, es_pg_open(url_.c_str(), &o, &b, &err)) << err.msg;
    if (!b) return nullptr;
    open_.push_back(b);
    *n = es_notifier_new();
    notifiers_.push_back(*n);
    es_backend_set_notifier(b, *n);
    std::vector<LogEntry> none;
    EXPECT_EQ(ES_OK, ReadLog(b, &none, &err)) << err.msg;  // starts the listener
    return b;
  }
  // NOTIFY from a connection that is not the store's: any role can.
  void Notify(const std::vector<std::string> &payloads) {
    if (!outside_) {
      outside_ = PQconnectdb(url_.c_str());
      ASSERT_EQ(CONNECTION_OK, PQstatus(outside_)) << PQerrorMessage(outside_);
    }
    // All in one transaction: delivered together, at its commit.
    PQclear(PQexec(outside_, "BEGIN"));
    for (const auto &p : payloads) {
      const char *vals[2] = {channel_.c_str(), p.c_str()};
      PGresult *r =
          PQexecParams(outside_, "SELECT pg_notify($1, $2)", 2, nullptr, vals, nullptr, nullptr, 0);
      ASSERT_EQ(PGRES_TUPLES_OK, PQresultStatus(r)) << PQresultErrorMessage(r);
      PQclear(r);
    }
    PGresult *r = PQexec(outside_, "COMMIT");
    ASSERT_EQ(PGRES_COMMAND_OK, PQresultStatus(r)) << PQresultErrorMessage(r);
    PQclear(r);
  }
  void WaitForHeadReads(es_backend_t *b, uint64_t at_least) {
    auto until = Clock::now() + std::chrono::seconds(5);
    es_pg_stats_t st;
    do {
      es_pg_stats(b, &st);
      if (st.head_reads >= at_least) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    } while (Clock::now() < until);
  }

  std::string url_, schema_, channel_;
  PGconn *outside_ = nullptr;
  std::vector<es_backend_t *> open_;
  std::vector<es_notifier_t *> notifiers_;
};

TEST_F(PgNotifyTest, HostilePayloadsAreHintsThatNeverPoisonTheHead) {
  es_notifier_t *na = nullptr, *nb = nullptr;
  es_backend_t *a = Open(&na), *b = Open(&nb);
  ASSERT_NE(nullptr, a);
  ASSERT_NE(nullptr, b);
  Subscriber sub(a, na);
  uint64_t n = 0;
  auto commit_by_b = [&](const std::string &after) {
    Outcome o = Append(b, "from-b", {""});
    ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
    n = o.res.last_position;
    // The other server's commit wakes a's subscriber, whatever came before.
    auto t0 = Clock::now();
    ASSERT_TRUE(sub.WaitForPosition(n, 5000))
        << "a commit by another server did not reach the subscriber after " << after;
    EXPECT_LT(MsSince(t0), 2000) << after;
    // Only real heads are ever published.
    EXPECT_LE(es_notifier_head(na), Head(a)) << after;
  };
  commit_by_b("the start");

  // Each is garbage: not a head as the store's writers write one.
  const std::vector<std::string> garbage = {
      "-1",
      "18446744073709551615",  // 2^64-1
      "18446744073709551616",  // 2^64
      "99999999999999999999999999999",
      "9223372036854775808",  // INT64_MAX + 1: beyond a bigint
      "abc",
      "",
      "12abc",
      " 12",
      "12 ",
      "+12",
      "0x10",
      "1e3",
      "１２",  // full-width digits
      std::string(7000, '9'),
  };
  es_pg_stats_t before, after;
  es_pg_stats(a, &before);
  for (const auto &p : garbage) {
    Notify({p});
    // No read is needed for garbage; give the listener time to take it.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_LE(es_notifier_head(na), Head(a)) << "after '" << p.substr(0, 40) << "'";
    commit_by_b("'" + p.substr(0, 40) + "'");
  }
  es_pg_stats(a, &after);
  EXPECT_GE(after.notifications_ignored - before.notifications_ignored, garbage.size());

  // Well-formed, but beyond the real head: the listener reads the head back
  // and publishes that; the lie is counted.
  for (uint64_t beyond : {n + 1000, (uint64_t)INT64_MAX}) {
    es_pg_stats(a, &before);
    Notify({std::to_string(beyond)});
    WaitForHeadReads(a, before.head_reads + 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    es_pg_stats(a, &after);
    EXPECT_EQ(before.head_reads + 1, after.head_reads);
    EXPECT_EQ(before.notifications_ignored + 1, after.notifications_ignored);
    EXPECT_LE(es_notifier_head(na), Head(a));
    commit_by_b("a head beyond the real one: " + std::to_string(beyond));
  }

  // At or below what a already knows: nothing to read.
  es_pg_stats(a, &before);
  Notify({"0", std::to_string(n), "1"});
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  es_pg_stats(a, &after);
  EXPECT_EQ(before.head_reads, after.head_reads) << "a stale hint cost a read";
  commit_by_b("stale hints");

  // A burst of distinct lies in one transaction arrives together: it costs
  // a handful of reads, not one each.
  std::vector<std::string> burst;
  for (int i = 1; i <= 300; i++) burst.push_back(std::to_string(n + 5000 + i));
  es_pg_stats(a, &before);
  Notify(burst);
  WaitForHeadReads(a, before.head_reads + 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  es_pg_stats(a, &after);
  EXPECT_LE(after.head_reads - before.head_reads, 10u) << "hints were not coalesced";
  EXPECT_GE(after.notifications_ignored - before.notifications_ignored, 1u);
  commit_by_b("a burst of 300 lies");

  // Nothing spun: the subscriber read about once per wake-up, the listener
  // read only for well-formed hints beyond its head.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  uint64_t reads = sub.Reads();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(reads, sub.Reads()) << "the subscriber reads while nothing happens";
  EXPECT_LT(reads, 10 * n) << "the subscriber read " << reads << " times for " << n << " events";

  // Every position once, in order.
  std::vector<uint64_t> seen = sub.Positions();
  ASSERT_EQ(n, seen.size());
  for (uint64_t i = 0; i < n; i++) ASSERT_EQ(i + 1, seen[i]);
  EXPECT_EQ("", sub.Errors());
  EXPECT_EQ(n, es_notifier_head(na));
  EXPECT_EQ(n, es_notifier_head(nb));

  // The same figures through the generic monitoring hook.
  es_pg_stats(a, &after);
  es_backend_stat_t stats[32];
  size_t k = es_backend_stats(a, stats, 32);
  std::map<std::string, uint64_t> by_name;
  for (size_t i = 0; i < k; i++) by_name[stats[i].name] = stats[i].value;
  EXPECT_EQ(after.notifications_ignored, by_name["pg_notifications_ignored_total"]);
  EXPECT_EQ(after.head_reads, by_name["pg_listener_head_reads_total"]);
  std::printf("notifications: %llu heard, %llu ignored, %llu head reads; subscriber reads %llu\n",
              (unsigned long long)after.notifications,
              (unsigned long long)after.notifications_ignored, (unsigned long long)after.head_reads,
              (unsigned long long)reads);
  sub.Stop();
}

}  // namespace
