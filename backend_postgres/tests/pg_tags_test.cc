// Tags, queries and conditions (Extension 1) on the PostgreSQL backend,
// beyond what the conformance suite checks on every backend:
//
//   - tags survive a close and reopen, and so does the idempotency of a
//     conditional append (its retry is a duplicate, whatever its condition
//     says now) and of an AppendMany (a retry of the whole request is a
//     duplicate, one of its appends alone is not); the tag index (es_tags) holds one row per tag of
//     every stored event, written with the events: an append that fails writes none;
//   - a read by query whose items all name a tag is served by the tag index:
//     a rare tag's events come back from a long log in one page under a scan
//     bound of 10 events (a scan would stop after 10), also when the item
//     pairs the rare tag with one every event carries; an item of types
//     only still scans, within the bound;
//   - a subscription with query items hands out exactly the query's events;
//   - conditions hold across servers: two backends on one database, 100
//     bookers split across them, each reading the booked seats by query,
//     deciding and appending with `after` = the head it read, retrying when
//     the condition fails: exactly 30 bookings of 30 seats;
//   - two conditional appends committed in one group: the second one's
//     condition sees the first one's event, which is not in the database
//     yet but commits first, in the same transaction;
//   - conditional appends and AppendMany take the optimistic path on one
//     server, and a match committed by another server between that path's
//     answer and its write fails the condition; an answer beyond the head
//     (a row written behind the log's back) fails the append, stores nothing;
//   - a read by query is prepared once a connection and filter shape, and
//     again on a connection that replaces a lost one;
//   - tags read back from the database are bounds-checked: a value whose
//     array header claims more elements than its bytes hold is refused as a
//     malformed row, not trusted.
//
// Every test uses the shared throwaway PostgreSQL (tests/pg/pg_fixture.h)
// with a schema of its own.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "es/backend.h"
#include "es/backend_postgres.h"
#include "es/subscription.h"
#include "es/validate.h"
#include "tests/pg/pg_fixture.h"

namespace {

std::string Uuid(uint64_t n) {
  char buf[ES_UUID_STR_LEN + 1];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012llx",
                static_cast<unsigned long long>(n & 0xffffffffffffULL));
  return buf;
}

struct Ev {
  std::string type;
  std::vector<std::string> tags;
};

struct Rec {
  uint64_t position;
  std::string type;
  std::vector<std::string> tags;
};

struct Page {
  int rc = ES_OK;
  es_err_t err{};
  std::vector<Rec> events;
  uint64_t next = 0;
  bool is_end = false;
};

std::vector<uint64_t> Positions(const Page &p) {
  std::vector<uint64_t> v;
  for (const auto &e : p.events) v.push_back(e.position);
  return v;
}

class PgTagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(es_pg_test::SharedPgUrl(&url_, &error)) << error;
    schema_ = es_pg_test::UniqueSchema("tg");
    es_limits_default(&limits_);
  }
  void TearDown() override {
    for (es_backend_t *b : open_) es_backend_close(b);
    std::string error;
    es_pg_test::PgExec(url_, "DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE", &error);
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
  void Close(es_backend_t *b) {
    open_.erase(std::find(open_.begin(), open_.end(), b));
    es_backend_close(b);
  }
  // One append of evs to stream, prepared as the server does, with an
  // optional condition (one item: types, tags).
  int Append(es_backend_t *b, const std::string &stream, const std::vector<Ev> &evs,
             int kind = ES_EXPECT_ANY, uint64_t expected = 0, es_err_t *err_out = nullptr,
             const Ev *cond = nullptr, uint64_t after = 0) {
    std::vector<std::string> ids;
    std::vector<std::vector<const char *>> tags(evs.size());
    std::vector<es_event_data_t> data(evs.size());
    for (size_t i = 0; i < evs.size(); i++) ids.push_back(Uuid(next_id_++));
    for (size_t i = 0; i < evs.size(); i++) {
      for (const auto &t : evs[i].tags) tags[i].push_back(t.c_str());
      es_event_data_t &d = data[i];
      std::memset(&d, 0, sizeof d);
      d.event_id = ids[i].c_str();
      d.event_type = evs[i].type.c_str();
      d.content_type = "";
      d.correlation_id = "";
      d.causation_id = "";
      d.tags = tags[i].data();
      d.tag_count = tags[i].size();
    }
    es_append_req_t req;
    std::memset(&req, 0, sizeof req);
    req.stream_id = stream.c_str();
    req.stream_type = "";
    req.expected_kind = kind;
    req.expected_version = expected;
    req.events = data.data();
    req.event_count = data.size();
    const char *ctype = cond ? cond->type.c_str() : nullptr;
    std::vector<const char *> ctags;
    if (cond)
      for (const auto &t : cond->tags) ctags.push_back(t.c_str());
    es_query_item_t citem = {&ctype, cond && !cond->type.empty() ? 1u : 0u, ctags.data(),
                             ctags.size()};
    es_append_condition_t c = {&citem, 1, after};
    if (cond) req.condition = &c;
    es_append_result_t res{};
    es_err_t err{};
    int rc = es_append_prepare(&limits_, &req, &err);
    if (rc == ES_OK) rc = es_backend_append(b, &req, &res, &err);
    if (err_out) *err_out = err;
    return rc;
  }
  // One item per entry: (types, tags).
  Page ReadAll(es_backend_t *b,
               const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> &q,
               uint64_t from, int dir, uint64_t max_scan) {
    std::vector<std::vector<const char *>> types(q.size()), tags(q.size());
    std::vector<es_query_item_t> items(q.size());
    for (size_t i = 0; i < q.size(); i++) {
      for (const auto &s : q[i].first) types[i].push_back(s.c_str());
      for (const auto &s : q[i].second) tags[i].push_back(s.c_str());
      items[i] = {types[i].data(), types[i].size(), tags[i].data(), tags[i].size()};
    }
    es_read_all_req_t req;
    std::memset(&req, 0, sizeof req);
    req.from_position = from;
    req.max_count = 1000;
    req.direction = dir;
    req.filter.stream_prefix = "";
    req.filter.items = items.data();
    req.filter.item_count = items.size();
    Page out;
    out.rc = es_read_all_prepare(&limits_, &req, &out.err);
    req.max_scan = max_scan;
    es_page_t page;
    std::memset(&page, 0, sizeof page);
    if (out.rc == ES_OK) out.rc = es_backend_read_all(b, &req, &page, &out.err);
    if (out.rc == ES_OK) Copy(page, &out);
    es_page_free(&page);
    return out;
  }
  Page ReadStream(es_backend_t *b, const std::string &stream) {
    es_read_stream_req_t req;
    std::memset(&req, 0, sizeof req);
    req.stream_id = stream.c_str();
    req.max_count = 1000;
    Page out;
    out.rc = es_read_stream_prepare(&limits_, &req, &out.err);
    es_page_t page;
    std::memset(&page, 0, sizeof page);
    if (out.rc == ES_OK) out.rc = es_backend_read_stream(b, &req, &page, &out.err);
    if (out.rc == ES_OK) Copy(page, &out);
    es_page_free(&page);
    return out;
  }
  static void Copy(const es_page_t &page, Page *out) {
    for (size_t i = 0; i < page.count; i++) {
      const es_recorded_t &v = page.events[i];
      Rec r{v.global_position, v.event_type, {}};
      for (size_t k = 0; k < v.tag_count; k++) r.tags.push_back(v.tags[k]);
      out->events.push_back(r);
    }
    out->next = page.next;
    out->is_end = page.is_end;
  }
  std::string Query(const std::string &sql) {
    std::string value, error;
    EXPECT_TRUE(es_pg_test::PgQueryValue(url_, sql, &value, &error)) << error;
    return value;
  }
  std::string Table(const std::string &name) { return "\"" + schema_ + "\"." + name; }

  std::string url_, schema_;
  es_limits_t limits_;
  std::vector<es_backend_t *> open_;
  std::atomic<uint64_t> next_id_{1};
};

TEST_F(PgTagsTest, TagsSurviveReopenAndTheIndexHoldsEachTagOnce) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", {{"T", {"b", "a", "c"}}, {"T", {}}, {"T", {"z"}}}));
  es_err_t err{};
  // A failed append writes no row of the tag index either.
  EXPECT_EQ(ES_EVERSION, Append(b, "s", {{"T", {"never"}}}, ES_EXPECT_EXACT, 1, &err)) << err.msg;
  Close(b);
  b = Open();
  ASSERT_NE(nullptr, b);
  Page p = ReadStream(b, "s");
  ASSERT_EQ(ES_OK, p.rc) << p.err.msg;
  ASSERT_EQ(3u, p.events.size());
  EXPECT_EQ((std::vector<std::string>{"b", "a", "c"}), p.events[0].tags);
  EXPECT_TRUE(p.events[1].tags.empty());
  EXPECT_EQ((std::vector<std::string>{"z"}), p.events[2].tags);
  EXPECT_EQ("a:1,b:1,c:1,z:3",
            Query("SELECT string_agg(tag || ':' || position, ',' ORDER BY tag, position) FROM " +
                  Table("es_tags")));
  Page q = ReadAll(b, {{{}, {"a"}}}, 0, ES_FORWARD, 0);
  EXPECT_EQ((std::vector<uint64_t>{1}), Positions(q));
}

TEST_F(PgTagsTest, AConditionalRetryAfterAReopenIsADuplicateWhateverTheConditionSays) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  const Ev seat{"Booked", {"seat:1"}};
  uint64_t first_id = next_id_;
  es_err_t err{};
  ASSERT_EQ(ES_OK, Append(b, "booking", {seat}, ES_EXPECT_ANY, 0, &err, &seat, 0)) << err.msg;
  Close(b);
  b = Open();
  ASSERT_NE(nullptr, b);
  // The same request again (same id): its condition now matches its own
  // event, but a retry is acknowledged as the original.
  next_id_ = first_id;
  EXPECT_EQ(ES_OK, Append(b, "booking", {seat}, ES_EXPECT_ANY, 0, &err, &seat, 0)) << err.msg;
  // A new booking of the same seat fails on the condition, naming the first.
  err = es_err_t{};
  EXPECT_EQ(ES_ECONDITION, Append(b, "booking-2", {seat}, ES_EXPECT_ANY, 0, &err, &seat, 0));
  EXPECT_EQ(1u, err.condition_position);
  EXPECT_EQ("1", Query("SELECT count(*) FROM " + Table("es_events")));
}

// An AppendMany of (stream, events) pairs with ids first_id, first_id+1, ...
// and an optional condition.
int AppendManyIds(es_backend_t *b, const std::vector<std::pair<std::string, int>> &appends,
                  uint64_t first_id, std::vector<es_append_result_t> *results, es_err_t *err,
                  const es_append_condition_t *condition = nullptr) {
  es_limits_t limits;
  es_limits_default(&limits);
  std::vector<std::string> ids;
  size_t total = 0;
  for (const auto &a : appends) total += static_cast<size_t>(a.second);
  for (size_t i = 0; i < total; i++) ids.push_back(Uuid(first_id + i));
  std::vector<std::vector<es_event_data_t>> data(appends.size());
  std::vector<es_append_req_t> reqs(appends.size());
  size_t k = 0;
  for (size_t a = 0; a < appends.size(); a++) {
    data[a].resize(static_cast<size_t>(appends[a].second));
    for (auto &d : data[a]) {
      std::memset(&d, 0, sizeof d);
      d.event_id = ids[k++].c_str();
      d.event_type = "T";
      d.content_type = "";
      d.correlation_id = "";
      d.causation_id = "";
    }
    std::memset(&reqs[a], 0, sizeof reqs[a]);
    reqs[a].stream_id = appends[a].first.c_str();
    reqs[a].stream_type = "";
    reqs[a].expected_kind = ES_EXPECT_ANY;
    reqs[a].events = data[a].data();
    reqs[a].event_count = data[a].size();
  }
  es_append_many_req_t req = {reqs.data(), reqs.size(), condition};
  results->assign(appends.size(), es_append_result_t{});
  int rc = es_append_many_prepare(&limits, &req, err);
  if (rc == ES_OK) rc = es_backend_append_many(b, &req, results->data(), err);
  return rc;
}

TEST_F(PgTagsTest, AppendManyRetriesAreDuplicatesOfTheWholeRequestAcrossAReopen) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  std::vector<es_append_result_t> res;
  es_err_t err{};
  ASSERT_EQ(ES_OK, AppendManyIds(b, {{"a", 2}, {"b", 1}, {"a", 1}}, 100, &res, &err)) << err.msg;
  EXPECT_EQ(1u, res[0].first_position);
  EXPECT_EQ(3u, res[1].first_position);
  EXPECT_EQ(4u, res[2].first_position);
  EXPECT_EQ(3u, res[2].first_version) << "the second append to a sees the first";
  Close(b);
  b = Open();
  ASSERT_NE(nullptr, b);
  // The whole request again: a duplicate, with the original results.
  std::vector<es_append_result_t> again;
  ASSERT_EQ(ES_OK, AppendManyIds(b, {{"a", 2}, {"b", 1}, {"a", 1}}, 100, &again, &err)) << err.msg;
  for (size_t i = 0; i < 3; i++) {
    EXPECT_TRUE(again[i].duplicate) << i;
    EXPECT_EQ(res[i].first_position, again[i].first_position) << i;
  }
  // One of its appends alone (the links stored in migration 4 tell it
  // apart): ALREADY_EXISTS, not a duplicate.
  err = es_err_t{};
  EXPECT_EQ(ES_EEXIST, AppendManyIds(b, {{"b", 1}}, 102, &again, &err)) << err.msg;
  // Nothing of the refused request was stored; the next one continues the
  // log without a gap.
  EXPECT_EQ("4", Query("SELECT count(*) FROM " + Table("es_events")));
  err = es_err_t{};
  std::vector<es_append_result_t> next;
  ASSERT_EQ(ES_OK, AppendManyIds(b, {{"c", 1}}, 200, &next, &err)) << err.msg;
  EXPECT_EQ(5u, next[0].first_position);
}

TEST_F(PgTagsTest, ARareTagIsReadThroughTheIndexNotByAScan) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  // 8,000 events that all carry "common"; two of them also carry "rare".
  const int kBatches = 8, kPerBatch = 1000;
  for (int k = 0; k < kBatches; k++) {
    std::vector<Ev> evs(kPerBatch, Ev{"Plain", {"common"}});
    if (k == 0) evs[4] = Ev{"Marked", {"common", "rare"}};
    if (k == kBatches - 1) evs[kPerBatch - 2] = Ev{"Marked", {"rare", "common"}};
    ASSERT_EQ(ES_OK, Append(b, "big-" + std::to_string(k), evs));
  }
  const uint64_t last_rare = kBatches * kPerBatch - 1;
  // A scan bound of 10 would stop a scan after 10 events; the index needs no
  // scan bound, so both events come back in one page, the read ends.
  Page p = ReadAll(b, {{{}, {"rare"}}}, 0, ES_FORWARD, 10);
  ASSERT_EQ(ES_OK, p.rc) << p.err.msg;
  EXPECT_EQ((std::vector<uint64_t>{5, last_rare}), Positions(p));
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(last_rare + 2, p.next);
  EXPECT_EQ((std::vector<std::string>{"common", "rare"}), p.events[0].tags);
  // Both tags of an item (an intersection with a tag every event carries),
  // and backward.
  p = ReadAll(b, {{{"Marked"}, {"common", "rare"}}}, 0, ES_BACKWARD, 10);
  ASSERT_EQ(ES_OK, p.rc) << p.err.msg;
  EXPECT_EQ((std::vector<uint64_t>{last_rare, 5}), Positions(p));
  EXPECT_TRUE(p.is_end);
  // Two items, one of which matches nothing.
  p = ReadAll(b, {{{}, {"nobody"}}, {{}, {"rare"}}}, 6, ES_FORWARD, 10);
  EXPECT_EQ((std::vector<uint64_t>{last_rare}), Positions(p));
  // An item of types only cannot use the index: it scans, within the bound.
  p = ReadAll(b, {{{"Marked"}, {}}}, 6, ES_FORWARD, 10);
  ASSERT_EQ(ES_OK, p.rc) << p.err.msg;
  EXPECT_TRUE(p.events.empty());
  EXPECT_FALSE(p.is_end);
  EXPECT_EQ(16u, p.next);
}

TEST_F(PgTagsTest, ASubscriptionByQueryHandsOutExactlyTheQuerysEvents) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  for (int i = 0; i < 30; i++)
    ASSERT_EQ(ES_OK, Append(b, "s", {{"Booked", {i % 3 == 0 ? "seat:1" : "seat:2"}}}));
  const char *tags[] = {"seat:1"};
  es_query_item_t item = {nullptr, 0, tags, 1};
  es_sub_opts_t opts;
  std::memset(&opts, 0, sizeof opts);
  opts.filter.stream_prefix = "";
  opts.filter.items = &item;
  opts.filter.item_count = 1;
  es_sub_t *sub = nullptr;
  es_err_t err{};
  ASSERT_EQ(ES_OK, es_sub_open(b, &limits_, &opts, &sub, &err)) << err.msg;
  std::vector<uint64_t> got;
  for (int guard = 0; guard < 1000; guard++) {
    es_sub_item_t it;
    int rc = es_sub_next(sub, &it, &err);
    ASSERT_EQ(ES_OK, rc) << err.msg;
    if (it.kind == ES_SUB_CAUGHT_UP) break;
    if (it.kind == ES_SUB_EVENT) {
      got.push_back(it.event->global_position);
      ASSERT_EQ(1u, it.event->tag_count);
      EXPECT_STREQ("seat:1", it.event->tags[0]);
    }
  }
  es_sub_close(sub);
  std::vector<uint64_t> want;
  for (uint64_t p = 1; p <= 30; p += 3) want.push_back(p);
  EXPECT_EQ(want, got);
}

TEST_F(PgTagsTest, ThirtySeatsAreBookedExactlyOnceByBookersOnTwoServers) {
  es_backend_t *servers[2] = {Open(), Open()};
  ASSERT_NE(nullptr, servers[0]);
  ASSERT_NE(nullptr, servers[1]);
  const int kSeats = 30, kBookers = 100;
  const Ev booked{"Booked", {"show:1"}};
  std::atomic<int> booked_count{0}, conflicts{0}, errors{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kBookers; t++) {
    threads.emplace_back([&, t] {
      es_backend_t *b = servers[t % 2];
      while (!go.load()) std::this_thread::yield();
      for (int attempt = 0; attempt < 500; attempt++) {
        // Read the decision's events by query, up to the head.
        Page p = ReadAll(b, {{{"Booked"}, {"show:1"}}}, 0, ES_FORWARD, 0);
        if (p.rc != ES_OK || !p.is_end) {
          errors++;
          return;
        }
        if (static_cast<int>(p.events.size()) >= kSeats) return;  // sold out
        uint64_t after = p.next - 1;                              // the head that was read
        es_err_t err{};
        int rc = Append(b, "booking-" + std::to_string(t), {booked}, ES_EXPECT_ANY, 0, &err,
                        &booked, after);
        if (rc == ES_OK) {
          booked_count++;
          return;
        }
        if (rc != ES_ECONDITION || !err.has_condition_position || err.condition_position <= after) {
          errors++;
          return;
        }
        conflicts++;
      }
      errors++;
    });
  }
  go = true;
  for (auto &th : threads) th.join();
  EXPECT_EQ(0, errors.load());
  EXPECT_EQ(kSeats, booked_count.load()) << conflicts.load() << " conflicts";
  Page all = ReadAll(servers[0], {{{"Booked"}, {"show:1"}}}, 0, ES_FORWARD, 0);
  EXPECT_EQ(static_cast<size_t>(kSeats), all.events.size());
  EXPECT_EQ(std::to_string(kSeats), Query("SELECT count(*) FROM " + Table("es_events")));
}

// Holds the first optimistic write after it is armed until released, so
// that the appends queued meanwhile form the next group together.
struct Gate {
  std::atomic<bool> armed{false}, held{false}, release{false};
  static void BeforeWrite(void *arg) {
    Gate *g = static_cast<Gate *>(arg);
    if (!g->armed.exchange(false)) return;
    g->held = true;
    while (!g->release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
};

TEST_F(PgTagsTest, TheSecondConditionInOneGroupSeesTheFirstAppendsEvent) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "warm", {{"Plain", {}}}));  // the next group goes the fast path
  Gate gate;
  es_pg_test_hooks_t hooks{};
  hooks.before_write = Gate::BeforeWrite;
  hooks.arg = &gate;
  es_pg_set_test_hooks(b, &hooks);
  gate.armed = true;
  std::thread holder([&] { EXPECT_EQ(ES_OK, Append(b, "holder", {{"Plain", {}}})); });
  while (!gate.held.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // Both read the head (1: the holder has not committed) and both would book
  // the last seat; they queue behind the holder's group.
  const Ev seat{"Booked", {"seat:9"}};
  int rc[2] = {0, 0};
  es_err_t err[2] = {};
  std::vector<std::thread> bookers;
  for (int i = 0; i < 2; i++)
    bookers.emplace_back([&, i] {
      rc[i] =
          Append(b, "booking-" + std::to_string(i), {seat}, ES_EXPECT_ANY, 0, &err[i], &seat, 1);
    });
  // Both queue while the holder's group is held; the lane's next leader
  // takes every queued append into its group (pg_queue.c).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  gate.release = true;
  holder.join();
  for (auto &th : bookers) th.join();
  es_pg_set_test_hooks(b, nullptr);
  int won = (rc[0] == ES_OK) + (rc[1] == ES_OK);
  EXPECT_EQ(1, won) << es_errname(rc[0]) << " " << es_errname(rc[1]);
  for (int i = 0; i < 2; i++)
    if (rc[i] != ES_OK) {
      EXPECT_EQ(ES_ECONDITION, rc[i]) << err[i].msg;
      EXPECT_EQ(3u, err[i].condition_position) << "the other booking, right after the holder";
    }
  uint64_t head = 0;
  es_err_t herr{};
  EXPECT_EQ(ES_OK, es_backend_head(b, &head, &herr)) << herr.msg;
  EXPECT_EQ(3u, head);
}

// On one server every group goes the optimistic path (pg_commit.c), also one
// with conditions — asked first, outside any transaction — and an
// AppendMany: one round trip more than a plain append, no lock held across
// a round trip.
TEST_F(PgTagsTest, ConditionalAppendsAndAppendManyTakeTheOptimisticPath) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "warm", {{"Booked", {"seat:1"}}}));
  es_pg_stats_t before{}, after{};
  es_pg_stats(b, &before);
  const Ev seat2{"Booked", {"seat:2"}};
  es_err_t err{};
  for (int i = 0; i < 5; i++) {
    // after 0 < head: the query is asked (seat:1's event does not match it).
    ASSERT_EQ(ES_OK, Append(b, "booking-" + std::to_string(i), {{"Plain", {}}}, ES_EXPECT_ANY, 0,
                            &err, &seat2, 0))
        << err.msg;
  }
  const char *tag = "seat:3";
  es_query_item_t item = {nullptr, 0, &tag, 1};
  es_append_condition_t cond = {&item, 1, 0};
  std::vector<es_append_result_t> res;
  ASSERT_EQ(ES_OK, AppendManyIds(b, {{"m1", 1}, {"m2", 2}}, 9000, &res, &err, &cond)) << err.msg;
  ASSERT_EQ(ES_OK, AppendManyIds(b, {{"m3", 1}}, 9100, &res, &err)) << err.msg;
  es_pg_stats(b, &after);
  EXPECT_EQ(7u, after.groups - before.groups);
  EXPECT_EQ(7u, after.fast_groups - before.fast_groups) << "a group went the locking path";
  // And they are checked: the same condition fails once seat:2 is booked.
  ASSERT_EQ(ES_OK, Append(b, "seat-2", {seat2}));
  EXPECT_EQ(ES_ECONDITION, Append(b, "late", {{"Plain", {}}}, ES_EXPECT_ANY, 0, &err, &seat2, 0));
  EXPECT_EQ(11u, err.condition_position);
}

// The optimistic path asks the conditions before its write, without the
// lock. Another server commits a matching event between the answer ("no
// match") and the write: the write must not commit (the head moved), and
// the locking path, asking again under the lock, fails the condition with
// that event's position.
TEST_F(PgTagsTest, AMatchCommittedBetweenTheOptimisticAnswerAndTheWriteFailsTheCondition) {
  es_backend_t *a = Open(), *other = Open();
  ASSERT_NE(nullptr, a);
  ASSERT_NE(nullptr, other);
  ASSERT_EQ(ES_OK, Append(a, "warm", {{"Plain", {}}}));
  ASSERT_EQ(ES_OK, Append(a, "warm", {{"Plain", {}}}));  // head 2, written by a: fast next
  struct Race {
    std::function<int()> rival;
    std::atomic<int> fired{0};
    int rc = -1;
    static void BeforeWrite(void *arg) {
      Race *r = static_cast<Race *>(arg);
      if (r->fired.fetch_add(1) == 0) r->rc = r->rival();
    }
  } race;
  race.rival = [&] { return Append(other, "rival", {{"Booked", {"seat:7"}}}); };
  es_pg_test_hooks_t hooks{};
  hooks.before_write = Race::BeforeWrite;
  hooks.arg = &race;
  es_pg_set_test_hooks(a, &hooks);
  es_pg_stats_t st{};
  es_pg_stats(a, &st);
  uint64_t fast_before = st.fast_groups;
  const Ev seat{"Booked", {"seat:7"}};
  es_err_t err{};
  int rc = Append(a, "mine", {seat}, ES_EXPECT_ANY, 0, &err, &seat, 1);
  es_pg_set_test_hooks(a, nullptr);
  ASSERT_GE(race.fired.load(), 1) << "the optimistic write was never tried";
  ASSERT_EQ(ES_OK, race.rc);
  EXPECT_EQ(ES_ECONDITION, rc) << err.msg;
  EXPECT_EQ(3u, err.condition_position) << "the rival's event";
  es_pg_stats(a, &st);
  EXPECT_EQ(fast_before, st.fast_groups);
  Page p = ReadAll(a, {{{"Booked"}, {"seat:7"}}}, 0, ES_FORWARD, 0);
  ASSERT_EQ(ES_OK, p.rc) << p.err.msg;
  EXPECT_EQ(std::vector<uint64_t>{3}, Positions(p));
  EXPECT_EQ("3", Query("SELECT count(*) FROM " + Table("es_events")));
}

// What the database answers to a condition is checked, not trusted: a
// matching row written behind the log's back, beyond its head, is not a
// commit any writer made. The conditional append fails (INTERNAL, naming
// the answer), stores nothing, and the store keeps serving.
TEST_F(PgTagsTest, AConditionAnsweredBeyondTheHeadFailsAndStoresNothing) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "warm", {{"Plain", {}}}));
  ASSERT_EQ(ES_OK, Append(b, "warm", {{"Plain", {}}}));  // head 2, the optimistic path next
  std::string error;
  ASSERT_TRUE(es_pg_test::PgExec(
      url_,
      "INSERT INTO " + Table("es_events") +
          " (position, stream_version, event_version, occurred_at_unix_ms, "
          "recorded_at_unix_ms, batch_index, batch_size, body_bytes, event_id, stream_id, "
          "event_type, content_type, correlation_id, causation_id, metadata_keys, "
          "metadata_values, payload, tags) VALUES (1000000, 1, 0, 0, 0, 0, 1, 0, "
          "'00000000-0000-4000-8000-00000000ffff', 'forged', 'Booked', '', '', '', '{}', '{}', "
          "'', '{seat:5}'); INSERT INTO " +
          Table("es_tags") + " (tag, position) VALUES ('seat:5', 1000000)",
      &error))
      << error;
  const Ev seat{"Booked", {"seat:5"}};
  es_err_t err{};
  EXPECT_EQ(ES_EINTERNAL, Append(b, "mine", {seat}, ES_EXPECT_ANY, 0, &err, &seat, 1));
  EXPECT_NE(std::string(err.msg).find("out of range"), std::string::npos) << err.msg;
  EXPECT_EQ("3", Query("SELECT count(*) FROM " + Table("es_events")));
  uint64_t head = 0;
  es_err_t herr{};
  ASSERT_EQ(ES_OK, es_backend_head(b, &head, &herr)) << herr.msg;
  EXPECT_EQ(2u, head);
  EXPECT_EQ(ES_OK, Append(b, "later", {{"Plain", {}}}));
  ASSERT_EQ(ES_OK, es_backend_head(b, &head, &herr)) << herr.msg;
  EXPECT_EQ(3u, head);
}

// A read by query is prepared by its connection the first time that
// connection runs its text (its filter's shape), and executed by name after
// that; the record of what is prepared goes with the connection, so one that
// is lost and replaced prepares again rather than naming a statement its new
// session never had.
TEST_F(PgTagsTest, ReadsByQueryArePreparedOnceAConnectionAndAgainOnANewOne) {
  es_pg_options_t o;
  es_pg_options_default(&o);
  o.connections = 1;  // every read on the same connection
  o.schema = schema_.c_str();
  es_backend_t *b = nullptr;
  es_err_t err{};
  ASSERT_EQ(ES_OK, es_pg_open(url_.c_str(), &o, &b, &err)) << err.msg;
  open_.push_back(b);
  ASSERT_EQ(ES_OK, Append(b, "s", {{"T", {"a", "b"}}, {"T", {"a"}}, {"U", {"b"}}}));
  auto prepared = [&] {
    es_pg_stats_t st{};
    es_pg_stats(b, &st);
    return st.statements_prepared;
  };
  for (int i = 0; i < 5; i++) {
    Page p = ReadAll(b, {{{}, {"a"}}}, 0, ES_FORWARD, 0);
    ASSERT_EQ(ES_OK, p.rc) << p.err.msg;
    EXPECT_EQ((std::vector<uint64_t>{1, 2}), Positions(p));
  }
  EXPECT_EQ(1u, prepared());
  for (int i = 0; i < 3; i++) {
    Page p = ReadAll(b, {{{}, {"a", "b"}}}, 0, ES_FORWARD, 0);  // another shape
    ASSERT_EQ(ES_OK, p.rc) << p.err.msg;
    EXPECT_EQ((std::vector<uint64_t>{1}), Positions(p));
    p = ReadAll(b, {{{}, {"b"}}}, 0, ES_FORWARD, 0);  // the first shape again
    EXPECT_EQ((std::vector<uint64_t>{1, 3}), Positions(p));
  }
  EXPECT_EQ(2u, prepared());
  // The reader's session ends (its last statement was a read by query of
  // this schema): the next read reconnects, and prepares on the new session.
  std::string error;
  ASSERT_TRUE(es_pg_test::PgExec(url_,
                                 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE pid <> pg_backend_pid() AND query LIKE '%JOIN LATERAL%' "
                                 "AND query LIKE '%" +
                                     schema_ + "%'",
                                 &error))
      << error;
  Page p;
  for (int i = 0; i < 50; i++) {  // the session ends a moment after it is told to
    p = ReadAll(b, {{{}, {"a"}}}, 0, ES_FORWARD, 0);
    if (p.rc != ES_OK || prepared() > 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(ES_OK, p.rc) << p.err.msg;
  EXPECT_EQ((std::vector<uint64_t>{1, 2}), Positions(p));
  EXPECT_EQ(3u, prepared());
}

TEST_F(PgTagsTest, TagsWhoseArrayHeaderLiesAreRefusedNotTrusted) {
  es_backend_t *b = Open();
  ASSERT_NE(nullptr, b);
  ASSERT_EQ(ES_OK, Append(b, "s", {{"T", {"a"}}}));
  Close(b);
  // The column read back as raw bytes: a one-dimensional array of text that
  // claims 2^32 - 1 elements and holds none (sized by that count, the page would ask for ~100 GB).
  std::string error;
  ASSERT_TRUE(
      es_pg_test::PgExec(url_,
                         "ALTER TABLE " + Table("es_events") +
                             " ALTER COLUMN tags DROP DEFAULT, ALTER COLUMN tags TYPE "
                             "bytea USING '\\x000000010000000000000019ffffffff00000001'::bytea",
                         &error))
      << error;
  b = Open();
  ASSERT_NE(nullptr, b);
  Page p = ReadStream(b, "s");
  EXPECT_EQ(ES_EINTERNAL, p.rc) << p.err.msg;
  EXPECT_NE(std::string(p.err.msg).find("malformed"), std::string::npos) << p.err.msg;
}

}  // namespace
