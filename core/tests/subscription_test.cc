// Tests of subscription.c against the real in-memory backend: replay from the
// start, the middle, the end and beyond; filters; checkpoints at exact
// positions, by the interval and at the head (also against a model of the
// rules, on random logs and random arrivals at the head); CaughtUp once;
// ES_EAGAIN at the head and live events after it; seamless retries after
// backend failures; and writer threads appending while a subscriber follows
// the log with the notifier — every event exactly once, in position order.
#include "es/subscription.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "es/backend.h"
#include "es/backend_memory.h"
#include "es/notifier.h"
#include "es/validate.h"

namespace {

using Clock = std::chrono::steady_clock;

// One committed event as seen in the log.
struct LogEvent {
  uint64_t position;
  std::string stream_id;
  std::string event_type;
};

// Items are compared as short strings: "E5" event at 5, "C6" checkpoint at 6,
// "U17" caught up with head 17.
std::string ItemText(const es_sub_item_t &item) {
  switch (item.kind) {
    case ES_SUB_EVENT:
      return "E" + std::to_string(item.event->global_position);
    case ES_SUB_CHECKPOINT:
      return "C" + std::to_string(item.position);
    case ES_SUB_CAUGHT_UP:
      return "U" + std::to_string(item.position);
  }
  return "?";
}

std::vector<std::string> Range(uint64_t first, uint64_t last) {
  std::vector<std::string> v;
  for (uint64_t p = first; p <= last; p++) v.push_back("E" + std::to_string(p));
  return v;
}

std::vector<std::string> Cat(std::vector<std::string> a, const std::vector<std::string> &b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The checkpoint rules written as plainly as possible: walk the log and count.
// API.md details 7: the interval-th non-matching event since the last match or
// checkpoint gets a checkpoint. docs/api.md, at the head: where the
// subscription reached the head (`heads`: the head of its CaughtUp and the
// positions at which it returned ES_EAGAIN) with non-matching events counted
// since the last match or checkpoint, a checkpoint at that position. Returns
// the events and checkpoints (no CaughtUp) a subscription from `from` must
// hand out once it has scanned the whole log; with no `heads`, it reached the
// head once, at the end of the log.
std::vector<std::string> Model(const std::vector<LogEvent> &log, const es_filter_t &filter,
                               uint64_t interval, uint64_t from, std::set<uint64_t> heads = {}) {
  if (heads.empty() && !log.empty()) heads.insert(log.back().position);
  std::vector<std::string> out;
  bool checkpoints = es_filter_active(&filter) && interval != 0;
  uint64_t count = 0;
  for (const LogEvent &e : log) {
    if (e.position < from) continue;
    if (es_filter_match(&filter, e.stream_id.c_str(), e.event_type.c_str())) {
      out.push_back("E" + std::to_string(e.position));
      count = 0;
    } else if (checkpoints && ++count == interval) {
      out.push_back("C" + std::to_string(e.position));
      count = 0;
    }
    if (checkpoints && count > 0 && heads.count(e.position) != 0) {
      out.push_back("C" + std::to_string(e.position));
      count = 0;
    }
  }
  return out;
}

std::vector<std::string> WithoutCaughtUp(const std::vector<std::string> &items) {
  std::vector<std::string> v;
  for (const auto &s : items)
    if (s[0] != 'U') v.push_back(s);
  return v;
}

class SubTest : public ::testing::Test {
 protected:
  void SetUp() override {
    es_limits_default(&limits_);
    es_err_t err;
    ASSERT_EQ(ES_OK, es_mem_open(&b_, &err)) << err.msg;
  }
  void TearDown() override {
    for (es_sub_t *s : subs_) es_sub_close(s);
    es_backend_close(b_);
    if (notifier_ != nullptr) es_notifier_free(notifier_);
  }

  // Appends n events of `type` to `stream` in one batch; returns the last
  // position.
  uint64_t Append(const std::string &stream, const std::string &type, int n = 1,
                  const std::string &payload = "p") {
    return AppendTo(b_, stream, type, n, payload);
  }

  static uint64_t AppendTo(es_backend_t *b, const std::string &stream, const std::string &type,
                           int n, const std::string &payload = "p") {
    es_limits_t limits;
    es_limits_default(&limits);
    std::vector<es_event_data_t> events(n);
    for (auto &e : events) {
      e = es_event_data_t{};
      e.event_id = "";
      e.event_type = type.c_str();
      e.content_type = "";
      e.payload = reinterpret_cast<const uint8_t *>(payload.data());
      e.payload_len = payload.size();
      e.correlation_id = "";
      e.causation_id = "";
    }
    es_append_req_t req{};
    req.stream_id = stream.c_str();
    req.stream_type = "";
    req.expected_kind = ES_EXPECT_ANY;
    req.events = events.data();
    req.event_count = events.size();
    es_err_t err;
    EXPECT_EQ(ES_OK, es_append_prepare(&limits, &req, &err)) << err.msg;
    es_append_result_t res;
    int rc = es_backend_append(b, &req, &res, &err);
    EXPECT_EQ(ES_OK, rc) << err.msg;
    return res.last_position;
  }

  es_sub_t *Open(const es_sub_opts_t &opts) {
    es_sub_t *s = nullptr;
    es_err_t err;
    int rc = es_sub_open(b_, &limits_, &opts, &s, &err);
    EXPECT_EQ(ES_OK, rc) << err.msg;
    if (s != nullptr) subs_.push_back(s);
    return s;
  }

  // Items until ES_EAGAIN; checks that es_sub_position never goes back.
  std::vector<std::string> Drain(es_sub_t *s) {
    std::vector<std::string> items;
    uint64_t pos = es_sub_position(s);
    for (int i = 0; i < 10000000; i++) {
      es_sub_item_t item;
      es_err_t err;
      int rc = es_sub_next(s, &item, &err);
      if (rc == ES_EAGAIN) return items;
      EXPECT_EQ(ES_OK, rc) << es_errname(rc) << " " << err.msg;
      if (rc != ES_OK) return items;
      items.push_back(ItemText(item));
      EXPECT_GE(es_sub_position(s), pos);
      pos = es_sub_position(s);
    }
    ADD_FAILURE() << "no ES_EAGAIN after 10M items";
    return items;
  }

  // The whole log, unfiltered, via ReadAll.
  std::vector<LogEvent> ReadLog() {
    std::vector<LogEvent> log;
    uint64_t from = 1;
    for (int guard = 0; guard < 100000; guard++) {
      es_read_all_req_t req{};
      req.from_position = from;
      es_err_t err;
      EXPECT_EQ(ES_OK, es_read_all_prepare(&limits_, &req, &err));
      es_page_t page;
      EXPECT_EQ(ES_OK, es_backend_read_all(b_, &req, &page, &err)) << err.msg;
      for (size_t i = 0; i < page.count; i++) {
        const es_recorded_t &e = page.events[i];
        log.push_back({e.global_position, e.stream_id, e.event_type});
      }
      bool end = page.is_end;
      from = page.next;
      es_page_free(&page);
      if (end) break;
    }
    return log;
  }

  es_limits_t limits_;
  es_backend_t *b_ = nullptr;
  es_notifier_t *notifier_ = nullptr;
  std::vector<es_sub_t *> subs_;
};

// ---- replay --------------------------------------------------------------------

TEST_F(SubTest, EmptyLogIsCaughtUpAtOnce) {
  es_sub_t *s = Open({});
  ASSERT_NE(nullptr, s);
  EXPECT_EQ((std::vector<std::string>{"U0"}), Drain(s));
  EXPECT_EQ(0u, es_sub_position(s));
  EXPECT_EQ((std::vector<std::string>{}), Drain(s));
}

TEST_F(SubTest, ReplayFromStartThenCaughtUpThenAgain) {
  Append("order-1", "Created", 3);
  Append("user-1", "Registered", 2);
  es_sub_t *s = Open({});
  ASSERT_NE(nullptr, s);
  EXPECT_EQ(Cat(Range(1, 5), {"U5"}), Drain(s));
  EXPECT_EQ(5u, es_sub_position(s));
  es_sub_item_t item;
  es_err_t err;
  EXPECT_EQ(ES_EAGAIN, es_sub_next(s, &item, &err));
  EXPECT_EQ(ES_EAGAIN, es_sub_next(s, &item, &err));
  EXPECT_EQ(5u, es_sub_position(s));
}

TEST_F(SubTest, FromPositionZeroAndOneAreTheStart) {
  Append("s", "T", 4);
  es_sub_opts_t o{};
  o.from_position = 1;
  EXPECT_EQ(Cat(Range(1, 4), {"U4"}), Drain(Open(o)));
  o.from_position = 0;
  EXPECT_EQ(Cat(Range(1, 4), {"U4"}), Drain(Open(o)));
}

TEST_F(SubTest, ReplayFromTheMiddle) {
  Append("s", "T", 10);
  es_sub_opts_t o{};
  o.from_position = 5;
  es_sub_t *s = Open(o);
  EXPECT_EQ(4u, es_sub_position(s));
  EXPECT_EQ(Cat(Range(5, 10), {"U10"}), Drain(s));
}

TEST_F(SubTest, FromEndSeesOnlyNewEvents) {
  Append("s", "T", 10);
  es_sub_opts_t o{};
  o.from_end = true;
  o.from_position = 3;  // ignored
  es_sub_t *s = Open(o);
  EXPECT_EQ(10u, es_sub_position(s));
  EXPECT_EQ((std::vector<std::string>{"U10"}), Drain(s));
  Append("s", "T", 3);
  EXPECT_EQ(Range(11, 13), Drain(s));
  EXPECT_EQ(13u, es_sub_position(s));
}

// API.md: CaughtUp is sent at once when there is nothing to replay, so a
// from_end subscription hands it out first, with the head read at open, even
// when events were committed between the open and the first read.
TEST_F(SubTest, FromEndCaughtUpComesFirstEvenWithEventsBeforeTheFirstRead) {
  Append("s", "T", 2);
  es_sub_opts_t o{};
  o.from_end = true;
  es_sub_t *s = Open(o);
  EXPECT_TRUE(es_sub_has_buffered(s));
  Append("s", "T", 2);  // after open, before the first read
  EXPECT_EQ(Cat({"U2"}, Range(3, 4)), Drain(s));
}

TEST_F(SubTest, FromBeyondTheHeadWaitsForThatPosition) {
  Append("s", "T", 10);
  es_sub_opts_t o{};
  o.from_position = 20;
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"U10"}), Drain(s));
  EXPECT_EQ(19u, es_sub_position(s));  // wait for the head to pass 19
  Append("s", "T", 5);
  EXPECT_EQ((std::vector<std::string>{}), Drain(s));
  EXPECT_EQ(19u, es_sub_position(s));
  Append("s", "T", 7);
  EXPECT_EQ(Range(20, 22), Drain(s));
}

TEST_F(SubTest, CaughtUpOnlyOnceThenLive) {
  Append("s", "T", 2);
  es_sub_t *s = Open({});
  EXPECT_EQ(Cat(Range(1, 2), {"U2"}), Drain(s));
  for (uint64_t k = 0; k < 5; k++) {
    Append("s", "T", 3);
    EXPECT_EQ(Range(3 + 3 * k, 5 + 3 * k), Drain(s));
  }
  EXPECT_EQ(17u, es_sub_position(s));
}

TEST_F(SubTest, EventsCarryTheirContents) {
  Append("order-1", "Created", 1, "hello");
  Append("order-2", "Paid", 1, "");
  es_sub_t *s = Open({});
  es_sub_item_t item;
  es_err_t err;
  ASSERT_EQ(ES_OK, es_sub_next(s, &item, &err));
  ASSERT_EQ(ES_SUB_EVENT, item.kind);
  EXPECT_EQ(1u, item.position);
  EXPECT_STREQ("order-1", item.event->stream_id);
  EXPECT_STREQ("Created", item.event->event_type);
  EXPECT_EQ(1u, item.event->stream_version);
  EXPECT_EQ(std::string("hello"), std::string(reinterpret_cast<const char *>(item.event->payload),
                                              item.event->payload_len));
  uint8_t id[16];
  EXPECT_EQ(0, es_uuid_parse(item.event->event_id, id));
  ASSERT_EQ(ES_OK, es_sub_next(s, &item, &err));
  EXPECT_STREQ("order-2", item.event->stream_id);
  EXPECT_EQ(0u, item.event->payload_len);
}

TEST_F(SubTest, LongReplayCrossesPages) {
  for (int i = 0; i < 13; i++) Append("s-" + std::to_string(i % 4), "T", 50);  // 650 events
  es_sub_t *s = Open({});
  EXPECT_EQ(Cat(Range(1, 650), {"U650"}), Drain(s));
}

TEST_F(SubTest, TinyByteBudgetStillDeliversOneEventPerPage) {
  limits_.max_page_bytes = 1;
  Append("s", "T", 20, std::string(1000, 'x'));
  es_sub_t *s = Open({});
  EXPECT_EQ(Cat(Range(1, 20), {"U20"}), Drain(s));
}

TEST_F(SubTest, SmallPageLimitFromConfig) {
  limits_.max_page_events = 3;
  Append("s", "T", 10);
  es_sub_t *s = Open({});
  EXPECT_EQ(Cat(Range(1, 10), {"U10"}), Drain(s));
}

TEST_F(SubTest, HasBuffered) {
  Append("s", "T", 2);
  es_sub_t *s = Open({});
  EXPECT_FALSE(es_sub_has_buffered(s));  // nothing read yet
  es_sub_item_t item;
  es_err_t err;
  ASSERT_EQ(ES_OK, es_sub_next(s, &item, &err));  // E1, page holds E2
  EXPECT_TRUE(es_sub_has_buffered(s));
  ASSERT_EQ(ES_OK, es_sub_next(s, &item, &err));  // E2, CaughtUp pending
  EXPECT_EQ("E2", ItemText(item));
  EXPECT_TRUE(es_sub_has_buffered(s));
  ASSERT_EQ(ES_OK, es_sub_next(s, &item, &err));
  EXPECT_EQ("U2", ItemText(item));
  EXPECT_FALSE(es_sub_has_buffered(s));
  EXPECT_EQ(ES_EAGAIN, es_sub_next(s, &item, &err));
  EXPECT_FALSE(es_sub_has_buffered(s));
}

TEST_F(SubTest, EventPointerStaysValidUntilTheNextCall) {
  Append("a-stream-with-a-longer-name", "T", 1, std::string(100, 'z'));
  es_sub_t *s = Open({});
  es_sub_item_t item;
  es_err_t err;
  ASSERT_EQ(ES_OK, es_sub_next(s, &item, &err));
  Append("other", "T", 300);  // the backend may grow meanwhile
  EXPECT_STREQ("a-stream-with-a-longer-name", item.event->stream_id);
  EXPECT_EQ(100u, item.event->payload_len);
  EXPECT_EQ('z', item.event->payload[99]);
}

// ---- filters ---------------------------------------------------------------

TEST_F(SubTest, InvalidFilterIsRejected) {
  std::string p(300, 'p');
  es_sub_opts_t o{};
  o.filter.stream_prefix = p.c_str();
  es_sub_t *s = reinterpret_cast<es_sub_t *>(0x1);
  es_err_t err;
  EXPECT_EQ(ES_EINVAL, es_sub_open(b_, &limits_, &o, &s, &err));
  EXPECT_EQ(nullptr, s);
  EXPECT_NE(nullptr, strstr(err.msg, "filter.stream_prefix")) << err.msg;
  const char *types[] = {""};
  o.filter.stream_prefix = "";
  o.filter.event_types = types;
  o.filter.event_type_count = 1;
  EXPECT_EQ(ES_EINVAL, es_sub_open(b_, &limits_, &o, &s, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "filter.event_types[0]")) << err.msg;
}

TEST_F(SubTest, PrefixFilter) {
  Append("order-1", "Created");  // 1
  Append("user-1", "Created");   // 2
  Append("order-2", "Created");  // 3
  Append("orders", "Created");   // 4: "order" matches, "order-" does not
  Append("order-1", "Paid");     // 5
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  EXPECT_EQ((std::vector<std::string>{"E1", "E3", "E5", "U5"}), Drain(Open(o)));
}

TEST_F(SubTest, TypeFilterAndBoth) {
  Append("order-1", "Created");  // 1
  Append("order-1", "Paid");     // 2
  Append("user-1", "Paid");      // 3
  Append("order-2", "Shipped");  // 4
  Append("user-2", "Created");   // 5
  const char *types[] = {"Paid", "Created"};
  es_sub_opts_t o{};
  o.filter.event_types = types;
  o.filter.event_type_count = 2;
  EXPECT_EQ((std::vector<std::string>{"E1", "E2", "E3", "E5", "U5"}), Drain(Open(o)));
  o.filter.stream_prefix = "user-";
  EXPECT_EQ((std::vector<std::string>{"E3", "E5", "U5"}), Drain(Open(o)));
}

TEST_F(SubTest, FilterIsCopiedAtOpen) {
  Append("order-1", "Created");
  Append("user-1", "Created");
  Append("order-2", "Paid");
  es_sub_t *s;
  {
    std::string prefix = "order-";
    std::vector<std::string> names = {"Paid"};
    std::vector<const char *> ptrs = {names[0].c_str()};
    es_sub_opts_t o{};
    o.filter.stream_prefix = prefix.c_str();
    o.filter.event_types = ptrs.data();
    o.filter.event_type_count = 1;
    s = Open(o);
    prefix.assign(prefix.size(), 'X');
    names[0].assign(names[0].size(), 'X');
  }
  EXPECT_EQ((std::vector<std::string>{"E3", "U3"}), Drain(s));
}

// Extension 1: a subscription with query items (Filter.items) hands out the
// events of the query only, copies the items at open, and counts the
// events the backend's tag index skipped as scanned for its checkpoints.
TEST_F(SubTest, QueryItemsAreCopiedAtOpenAndSelectByTag) {
  auto tagged = [this](const char *type, std::vector<const char *> tags) {
    es_event_data_t e{};
    e.event_id = "";
    e.event_type = type;
    e.tags = tags.data();
    e.tag_count = tags.size();
    es_append_req_t req{};
    req.stream_id = "s";
    req.events = &e;
    req.event_count = 1;
    es_err_t err;
    ASSERT_EQ(ES_OK, es_append_prepare(&limits_, &req, &err)) << err.msg;
    es_append_result_t res;
    ASSERT_EQ(ES_OK, es_backend_append(b_, &req, &res, &err)) << err.msg;
  };
  tagged("T", {"c:1"});         // 1
  tagged("T", {"c:2"});         // 2
  tagged("U", {"c:1", "s:1"});  // 3
  tagged("T", {});              // 4
  tagged("T", {"s:1", "c:1"});  // 5
  es_sub_t *s;
  {
    std::string tag = "c:1";
    std::vector<const char *> tags = {tag.c_str()};
    std::vector<es_query_item_t> items(1);
    items[0].tags = tags.data();
    items[0].tag_count = 1;
    es_sub_opts_t o{};
    o.filter.items = items.data();
    o.filter.item_count = 1;
    o.checkpoint_interval = 2;
    s = Open(o);
    tag.assign(tag.size(), 'X');
    items[0].tag_count = 0;
  }
  ASSERT_NE(nullptr, s);
  EXPECT_EQ((std::vector<std::string>{"E1", "E3", "E5", "U5"}), Drain(s));
  tagged("T", {"c:2"});  // 6
  tagged("T", {"c:2"});  // 7: the second non-matching event since 5
  tagged("T", {"c:1"});  // 8
  EXPECT_EQ((std::vector<std::string>{"C7", "E8"}), Drain(s));
}

// ---- checkpoints -------------------------------------------------------------

TEST_F(SubTest, CheckpointsAtExactPositions) {
  Append("order-1", "T");     // 1 match
  Append("user-1", "T", 12);  // 2..13
  Append("order-1", "T");     // 14 match
  Append("user-1", "T", 3);   // 15..17
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  o.checkpoint_interval = 5;
  es_sub_t *s = Open(o);
  // 12 non-matching after 1: the 5th (6) and the 10th (11) reach the count;
  // 12 and 13 then count 2, reset by the match at 14. 15..17 count 3 when
  // the scan reaches the head: a checkpoint there, before CaughtUp.
  EXPECT_EQ((std::vector<std::string>{"E1", "C6", "C11", "E14", "C17", "U17"}), Drain(s));
  EXPECT_EQ(17u, es_sub_position(s));
  Append("user-1", "T", 2);  // 18, 19: two since the checkpoint at 17
  EXPECT_EQ((std::vector<std::string>{"C19"}), Drain(s));
  EXPECT_EQ(19u, es_sub_position(s));
  Append("user-1", "T", 7);  // 20..26: the fifth since 19 is 24, then two more
  EXPECT_EQ((std::vector<std::string>{"C24", "C26"}), Drain(s));
  EXPECT_EQ(26u, es_sub_position(s));
  Append("user-1", "T", 1);   // 27
  Append("order-9", "T", 1);  // 28: the scan ends with a match
  EXPECT_EQ((std::vector<std::string>{"E28"}), Drain(s));
  EXPECT_EQ(28u, es_sub_position(s));
}

TEST_F(SubTest, CheckpointRightBeforeAMatch) {
  Append("user-1", "T", 5);  // 1..5
  Append("order-1", "T");    // 6
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  o.checkpoint_interval = 5;
  EXPECT_EQ((std::vector<std::string>{"C5", "E6", "U6"}), Drain(Open(o)));
  o.checkpoint_interval = 6;
  EXPECT_EQ((std::vector<std::string>{"E6", "U6"}), Drain(Open(o)));
  o.checkpoint_interval = 1;
  EXPECT_EQ((std::vector<std::string>{"C1", "C2", "C3", "C4", "C5", "E6", "U6"}), Drain(Open(o)));
}

TEST_F(SubTest, CheckpointCountStartsAtFromPosition) {
  Append("user-1", "T", 20);
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  o.checkpoint_interval = 5;
  o.from_position = 8;
  EXPECT_EQ((std::vector<std::string>{"C12", "C17", "C20", "U20"}), Drain(Open(o)));
  o.from_end = true;
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"U20"}), Drain(s));
  Append("user-1", "T", 5);
  EXPECT_EQ((std::vector<std::string>{"C25"}), Drain(s));
}

TEST_F(SubTest, DefaultCheckpointInterval) {
  Append("user-1", "T", 1000);
  Append("user-1", "T", 1000);
  Append("user-1", "T", 500);
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  EXPECT_EQ((std::vector<std::string>{"C1000", "C2000", "C2500", "U2500"}), Drain(Open(o)));
  limits_.default_checkpoint_interval = 700;
  EXPECT_EQ((std::vector<std::string>{"C700", "C1400", "C2100", "C2500", "U2500"}), Drain(Open(o)));
}

TEST_F(SubTest, UnfilteredGetsNoCheckpoints) {
  Append("user-1", "T", 1000);
  Append("user-1", "T", 1000);
  es_sub_opts_t o{};
  o.checkpoint_interval = 1;
  EXPECT_EQ(Cat(Range(1, 2000), {"U2000"}), Drain(Open(o)));
}

TEST_F(SubTest, CheckpointsAcrossPagesAndBoundedScans) {
  // Scans bounded at 37 events give many empty pages that are not the end;
  // the count must run on across them.
  Append("user-1", "T", 1000);  // 1..1000
  Append("order-1", "T");       // 1001
  Append("user-1", "T", 250);   // 1002..1251
  std::vector<std::string> want;
  for (int c = 100; c <= 1000; c += 100) want.push_back("C" + std::to_string(c));
  want = Cat(want, {"E1001", "C1101", "C1201", "C1251", "U1251"});
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  o.checkpoint_interval = 100;
  EXPECT_EQ(want, Drain(Open(o)));
  limits_.max_scan = 37;
  EXPECT_EQ(want, Drain(Open(o)));
  limits_.max_scan = 1;
  EXPECT_EQ(want, Drain(Open(o)));
}

TEST_F(SubTest, RandomLogsAgreeWithTheModel) {
  // Random logs, filters, intervals and budgets: the subscription's events and
  // checkpoints must be exactly those of the counting rule, whatever the
  // paging.
  std::mt19937 rng(20240601);
  const char *streams[] = {"order-1", "order-2", "user-1", "user-22", "inv-1"};
  const char *types[] = {"Created", "Paid", "Shipped", "Deleted"};
  for (int round = 0; round < 4; round++) Append("warmup-" + std::to_string(round), "Created", 3);
  for (int batch = 0; batch < 300; batch++) {
    Append(streams[rng() % 5], types[rng() % 4], 1 + rng() % 8);
  }
  std::vector<LogEvent> log = ReadLog();
  ASSERT_FALSE(log.empty());
  for (size_t i = 0; i < log.size(); i++) ASSERT_EQ(i + 1, log[i].position);
  uint64_t head = log.back().position;

  const char *prefixes[] = {"", "order-", "user-", "inv-", "nomatch-"};
  for (int trial = 0; trial < 60; trial++) {
    es_limits_default(&limits_);
    limits_.max_scan = 1 + rng() % 300;
    limits_.max_page_events = 1 + rng() % 300;
    if (rng() % 3 == 0) limits_.max_page_bytes = 1 + rng() % 2000;
    std::vector<const char *> tlist;
    for (int t = 0; t < 4; t++)
      if (rng() % 3 == 0) tlist.push_back(types[t]);
    es_sub_opts_t o{};
    o.filter.stream_prefix = prefixes[rng() % 5];
    o.filter.event_types = tlist.data();
    o.filter.event_type_count = tlist.size();
    o.checkpoint_interval = 1 + rng() % 60;
    o.from_position = rng() % 3 == 0 ? rng() % (head + 5) : 0;
    es_sub_t *s = Open(o);
    ASSERT_NE(nullptr, s);
    std::vector<std::string> got = Drain(s);
    ASSERT_FALSE(got.empty());
    EXPECT_EQ("U" + std::to_string(head), got.back()) << "trial " << trial;
    uint64_t from = o.from_position == 0 ? 1 : o.from_position;
    EXPECT_EQ(Model(log, o.filter, o.checkpoint_interval, from), WithoutCaughtUp(got))
        << "trial " << trial << " prefix '" << o.filter.stream_prefix << "' types " << tlist.size()
        << " interval " << o.checkpoint_interval << " from " << from;
    EXPECT_EQ(std::max(head, from - 1), es_sub_position(s));
  }
}

// ---- checkpoints at the head -------------------------------------------------
//
// docs/api.md: a filtered subscription that reaches the head having scanned
// non-matching events since its last match or checkpoint hands out
// Checkpoint(head) before it waits — before CaughtUp on the first arrival —
// so that a consumer of a rare event type always has a resume point at the
// head of an idle log, however large the interval.

TEST_F(SubTest, SparseFilterGetsACheckpointAtTheHead) {
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";  // matches nothing here; the default interval, 1000
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"U0"}), Drain(s));  // nothing scanned
  Append("user-1", "T", 3);
  EXPECT_EQ((std::vector<std::string>{"C3"}), Drain(s));
  EXPECT_EQ(3u, es_sub_position(s));
  EXPECT_EQ((std::vector<std::string>{}), Drain(s));  // never twice for one position
  Append("user-2", "T", 1);
  Append("user-1", "T", 2);
  EXPECT_EQ((std::vector<std::string>{"C6"}), Drain(s));  // one per arrival at the head
  EXPECT_EQ(6u, es_sub_position(s));
}

TEST_F(SubTest, AtHeadCheckpointComesBeforeCaughtUp) {
  Append("user-1", "T", 3);  // 1..3
  Append("order-1", "T");    // 4
  Append("user-1", "T", 6);  // 5..10
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  EXPECT_EQ((std::vector<std::string>{"E4", "C10", "U10"}), Drain(Open(o)));
  o.checkpoint_interval = 4;  // the interval's own checkpoint at 8, then the head's
  EXPECT_EQ((std::vector<std::string>{"E4", "C8", "C10", "U10"}), Drain(Open(o)));
}

TEST_F(SubTest, NoAtHeadCheckpointWhenTheScanEndsWithAMatch) {
  Append("user-1", "T", 3);  // 1..3
  Append("order-1", "T");    // 4
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"E4", "U4"}), Drain(s));
  Append("user-1", "T", 2);  // 5, 6
  Append("order-2", "T");    // 7: the match restarts the count
  EXPECT_EQ((std::vector<std::string>{"E7"}), Drain(s));
  Append("order-3", "T");  // 8
  EXPECT_EQ((std::vector<std::string>{"E8"}), Drain(s));
  EXPECT_EQ(8u, es_sub_position(s));
}

TEST_F(SubTest, AtHeadCheckpointRestartsTheCount) {
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  o.checkpoint_interval = 5;
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"U0"}), Drain(s));
  Append("user-1", "T", 3);  // 1..3
  EXPECT_EQ((std::vector<std::string>{"C3"}), Drain(s));
  Append("user-1", "T", 4);  // 4..7: four since 3, so no interval checkpoint at 5
  EXPECT_EQ((std::vector<std::string>{"C7"}), Drain(s));
  Append("user-1", "T", 6);  // 8..13: the fifth since 7 is 12
  EXPECT_EQ((std::vector<std::string>{"C12", "C13"}), Drain(s));
}

TEST_F(SubTest, IntervalCheckpointAtTheHeadIsNotRepeated) {
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  o.checkpoint_interval = 5;
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"U0"}), Drain(s));
  Append("user-1", "T", 5);
  EXPECT_EQ((std::vector<std::string>{"C5"}), Drain(s));
  Append("user-1", "T", 10);
  EXPECT_EQ((std::vector<std::string>{"C10", "C15"}), Drain(s));
  EXPECT_EQ((std::vector<std::string>{"C5", "C10", "C15", "U15"}), Drain(Open(o)));
}

TEST_F(SubTest, UnfilteredGetsNoCheckpointAtTheHead) {
  es_sub_opts_t o{};
  o.checkpoint_interval = 1;
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"U0"}), Drain(s));
  Append("user-1", "T", 3);
  EXPECT_EQ(Range(1, 3), Drain(s));
}

TEST_F(SubTest, IntervalZeroMeansNoCheckpointsAtAll) {
  // Only a server configured with a default interval of 0 gets here.
  limits_.default_checkpoint_interval = 0;
  Append("user-1", "T", 10);
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"U10"}), Drain(s));
  Append("user-1", "T", 3);
  EXPECT_EQ((std::vector<std::string>{}), Drain(s));
  EXPECT_EQ(13u, es_sub_position(s));
}

TEST_F(SubTest, AtHeadCheckpointFromBeyondTheHeadCountsOnlyWhatItScanned) {
  Append("user-1", "T", 10);
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  o.from_position = 20;
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"U10"}), Drain(s));
  Append("user-1", "T", 5);  // 11..15: below the start, not scanned
  EXPECT_EQ((std::vector<std::string>{}), Drain(s));
  EXPECT_EQ(19u, es_sub_position(s));
  Append("user-1", "T", 7);  // 16..22: 20..22 scanned
  EXPECT_EQ((std::vector<std::string>{"C22"}), Drain(s));
}

TEST_F(SubTest, AtHeadCheckpointAfterFromEnd) {
  Append("user-1", "T", 4);
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  o.from_end = true;
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"U4"}), Drain(s));  // nothing scanned before it
  Append("user-1", "T", 2);
  EXPECT_EQ((std::vector<std::string>{"C6"}), Drain(s));
}

TEST_F(SubTest, PendingAtHeadCheckpointIsBuffered) {
  // The server pumps a subscription inline while es_sub_has_buffered() says
  // the next item needs no backend call; a pending at-head checkpoint is such
  // an item.
  Append("order-1", "T");    // 1
  Append("user-1", "T", 2);  // 2, 3
  es_sub_opts_t o{};
  o.filter.stream_prefix = "order-";
  es_sub_t *s = Open(o);
  EXPECT_EQ((std::vector<std::string>{"E1", "C3", "U3"}), Drain(s));
  Append("order-2", "T");    // 4
  Append("user-1", "T", 1);  // 5
  es_sub_item_t item;
  es_err_t err;
  ASSERT_EQ(ES_OK, es_sub_next(s, &item, &err));
  EXPECT_EQ("E4", ItemText(item));
  EXPECT_TRUE(es_sub_has_buffered(s));
  ASSERT_EQ(ES_OK, es_sub_next(s, &item, &err));
  EXPECT_EQ("C5", ItemText(item));
  EXPECT_FALSE(es_sub_has_buffered(s));
  EXPECT_EQ(ES_EAGAIN, es_sub_next(s, &item, &err));
}

TEST_F(SubTest, RandomAppendsAndDrainsAgreeWithTheModel) {
  // Subscriptions that reach the head at random moments while the log grows:
  // their events and checkpoints must be exactly those of the counting rule
  // with a checkpoint wherever they reached the head (CaughtUp and the
  // positions at which they returned ES_EAGAIN), and each ends with its
  // resume point at the head.
  std::mt19937 rng(20251206);
  const char *streams[] = {"order-1", "order-2", "user-1", "user-22", "inv-1"};
  const char *types[] = {"Created", "Paid", "Shipped", "Deleted"};
  const char *prefixes[] = {"", "order-", "user-", "inv-", "nomatch-"};
  struct Sub {
    es_sub_t *s;
    es_sub_opts_t o;
    std::vector<const char *> types;
    std::vector<std::string> items;
    std::set<uint64_t> heads;
  };
  std::vector<Sub> subs(24);
  for (Sub &u : subs) {
    es_limits_default(&limits_);
    limits_.max_scan = 1 + rng() % 40;
    limits_.max_page_events = 1 + rng() % 40;
    for (int t = 0; t < 4; t++)
      if (rng() % 3 == 0) u.types.push_back(types[t]);
    u.o = es_sub_opts_t{};
    u.o.filter.stream_prefix = prefixes[rng() % 5];
    u.o.filter.event_types = u.types.data();
    u.o.filter.event_type_count = u.types.size();
    u.o.checkpoint_interval = 1 + rng() % 12;
    u.o.from_position = rng() % 3 == 0 ? 1 + rng() % 30 : 0;
    u.s = Open(u.o);
    ASSERT_NE(nullptr, u.s);
  }
  auto drain = [](Sub &u, std::vector<std::string> got) {
    for (const std::string &item : got)
      if (item[0] == 'U') u.heads.insert(std::stoull(item.substr(1)));
    u.items.insert(u.items.end(), got.begin(), got.end());
    u.heads.insert(es_sub_position(u.s));
  };
  for (int round = 0; round < 200; round++) {
    Append(streams[rng() % 5], types[rng() % 4], 1 + rng() % 4);
    for (Sub &u : subs)
      if (rng() % 3 == 0) drain(u, Drain(u.s));
  }
  for (Sub &u : subs) drain(u, Drain(u.s));
  std::vector<LogEvent> log = ReadLog();
  uint64_t head = log.back().position;
  for (size_t i = 0; i < subs.size(); i++) {
    Sub &u = subs[i];
    uint64_t from = u.o.from_position == 0 ? 1 : u.o.from_position;
    std::vector<std::string> got = WithoutCaughtUp(u.items);
    EXPECT_EQ(Model(log, u.o.filter, u.o.checkpoint_interval, from, u.heads), got)
        << "sub " << i << " prefix '" << u.o.filter.stream_prefix << "' types " << u.types.size()
        << " interval " << u.o.checkpoint_interval << " from " << from;
    EXPECT_EQ(head, es_sub_position(u.s));
    if (es_filter_active(&u.o.filter)) {
      ASSERT_FALSE(got.empty()) << "sub " << i;
      EXPECT_EQ(std::to_string(head), got.back().substr(1)) << "sub " << i;
    }
  }
}

// ---- backend failures ---------------------------------------------------------

// A backend that forwards to the memory backend but fails every k-th
// read_all (and head) with ES_EUNAVAIL.
struct Flaky {
  es_backend_t base;  // first member: a Flaky is an es_backend_t
  es_backend_t *inner;
  int calls;
  int every;
};

int FlakyAppend(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                es_err_t *err) {
  return es_backend_append(reinterpret_cast<Flaky *>(b)->inner, req, out, err);
}
int FlakyReadStream(es_backend_t *b, const es_read_stream_req_t *req, es_page_t *out,
                    es_err_t *err) {
  return es_backend_read_stream(reinterpret_cast<Flaky *>(b)->inner, req, out, err);
}
int FlakyReadAll(es_backend_t *b, const es_read_all_req_t *req, es_page_t *out, es_err_t *err) {
  Flaky *f = reinterpret_cast<Flaky *>(b);
  if (++f->calls % f->every == 0) return es_err_set(err, ES_EUNAVAIL, "injected failure");
  return es_backend_read_all(f->inner, req, out, err);
}
int FlakyHead(es_backend_t *b, uint64_t *out, es_err_t *err) {
  Flaky *f = reinterpret_cast<Flaky *>(b);
  if (++f->calls % f->every == 0) return es_err_set(err, ES_EUNAVAIL, "injected failure");
  return es_backend_head(f->inner, out, err);
}
void FlakyClose(es_backend_t *) {}

const es_backend_methods_t kFlakyMethods = {
    "flaky", 0, FlakyClose, FlakyAppend, FlakyReadStream, FlakyReadAll, FlakyHead,
};

TEST_F(SubTest, BackendFailuresAreRetriedSeamlessly) {
  std::mt19937 rng(7);
  const char *streams[] = {"order-1", "user-1", "user-2"};
  for (int i = 0; i < 120; i++) Append(streams[rng() % 3], "T", 1 + rng() % 6);
  limits_.max_scan = 13;
  limits_.max_page_events = 7;
  for (int every : {2, 3, 5}) {
    for (const char *prefix : {"", "order-"}) {
      es_sub_opts_t o{};
      o.filter.stream_prefix = prefix;
      o.checkpoint_interval = 4;
      std::vector<std::string> want = Drain(Open(o));

      Flaky f{{&kFlakyMethods, nullptr}, b_, 0, every};
      es_sub_t *s = nullptr;
      es_err_t err;
      int rc;
      while ((rc = es_sub_open(&f.base, &limits_, &o, &s, &err)) == ES_EUNAVAIL) {
      }
      ASSERT_EQ(ES_OK, rc);
      std::vector<std::string> got;
      int failures = 0;
      for (int guard = 0; guard < 1000000; guard++) {
        uint64_t pos = es_sub_position(s);
        es_sub_item_t item;
        rc = es_sub_next(s, &item, &err);
        if (rc == ES_EUNAVAIL) {
          failures++;
          // Positions up to the page that was used up count as scanned, but
          // nothing beyond: the failed read moved nothing.
          EXPECT_GE(es_sub_position(s), pos);
          uint64_t after_failure = es_sub_position(s);
          es_sub_item_t again;
          es_err_t err2;
          int rc2 = es_sub_next(s, &again, &err2);
          if (rc2 == ES_EUNAVAIL) {
            EXPECT_EQ(after_failure, es_sub_position(s));
            continue;
          }
          if (rc2 == ES_EAGAIN) break;
          ASSERT_EQ(ES_OK, rc2) << err2.msg;
          got.push_back(ItemText(again));
          EXPECT_STREQ("injected failure", err.msg);
          continue;
        }
        if (rc == ES_EAGAIN) break;
        ASSERT_EQ(ES_OK, rc) << err.msg;
        got.push_back(ItemText(item));
      }
      es_sub_close(s);
      EXPECT_GT(failures, 0);
      EXPECT_EQ(want, got) << "every " << every << " prefix '" << prefix << "'";
    }
  }
}

// A backend that breaks the read_all contract in a chosen way.
struct Broken {
  es_backend_t base;
  int mode;  // 0: no progress; 1: positions go back
};

int BrokenReadAll(es_backend_t *b, const es_read_all_req_t *req, es_page_t *out, es_err_t *) {
  Broken *k = reinterpret_cast<Broken *>(b);
  memset(out, 0, sizeof *out);
  out->last = 100;
  if (k->mode == 0) {
    out->next = req->from_position;  // an empty page that is not the end
    return ES_OK;
  }
  out->events = static_cast<es_recorded_t *>(calloc(2, sizeof(es_recorded_t)));
  out->count = 2;
  out->events[0].global_position = req->from_position + 1;
  out->events[1].global_position = req->from_position;
  out->next = req->from_position + 2;
  return ES_OK;
}
int BrokenHead(es_backend_t *, uint64_t *out, es_err_t *) {
  *out = 100;
  return ES_OK;
}
const es_backend_methods_t kBrokenMethods = {
    "broken", 0, FlakyClose, FlakyAppend, FlakyReadStream, BrokenReadAll, BrokenHead,
};

TEST_F(SubTest, ContractViolationsFailLoudly) {
  for (int mode : {0, 1}) {
    Broken k{{&kBrokenMethods, nullptr}, mode};
    es_sub_opts_t o{};
    es_sub_t *s = nullptr;
    es_err_t err;
    ASSERT_EQ(ES_OK, es_sub_open(&k.base, &limits_, &o, &s, &err));
    es_sub_item_t item;
    EXPECT_EQ(ES_EINTERNAL, es_sub_next(s, &item, &err)) << mode;
    EXPECT_EQ(0u, es_sub_position(s));
    es_sub_close(s);
  }
}

// ---- concurrency ---------------------------------------------------------------

// Follows the log like the server does: next() until ES_EAGAIN, then sleep on
// the notifier until the head passes es_sub_position(). Never polls: a lost
// wake-up shows as a timeout.
struct Follower {
  es_notifier_t *n;
  es_sub_t *s;
  es_waiter_t w{};
  std::mutex mu;
  std::condition_variable cv;
  bool fired = false;
  std::vector<std::string> items;
  std::vector<std::string> streams;  // of each event item
  std::string error;
  int sleeps = 0;            // times it slept on the notifier (the live path)
  std::set<uint64_t> heads;  // where it reached the head: CaughtUp, each ES_EAGAIN

  Follower(es_notifier_t *notifier, es_sub_t *sub) : n(notifier), s(sub) {
    w.arg = this;
    w.fn = [](es_waiter_t *self) {
      Follower *f = static_cast<Follower *>(self->arg);
      std::lock_guard<std::mutex> lock(f->mu);
      f->fired = true;
      f->cv.notify_all();
    };
  }

  // Runs until `done()` is true at an ES_EAGAIN, or the deadline.
  template <typename Done>
  void Run(Done done, std::chrono::seconds limit) {
    auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      es_sub_item_t item;
      es_err_t err;
      int rc = es_sub_next(s, &item, &err);
      if (rc == ES_OK) {
        items.push_back(ItemText(item));
        if (item.kind == ES_SUB_EVENT) streams.push_back(item.event->stream_id);
        // The first arrival at the head: the next read may find new events
        // at once, with no ES_EAGAIN in between.
        if (item.kind == ES_SUB_CAUGHT_UP) heads.insert(item.position);
        continue;
      }
      if (rc != ES_EAGAIN) {
        error = std::string(es_errname(rc)) + " " + err.msg;
        return;
      }
      heads.insert(es_sub_position(s));
      if (done()) return;
      if (es_notifier_wait(n, &w, es_sub_position(s)) == 1) continue;
      // done() may have become true between the check and the registration,
      // after the last wake-up was sent: look again before sleeping.
      if (done() && es_notifier_cancel(n, &w) == 1) return;
      std::unique_lock<std::mutex> lock(mu);
      if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return fired; })) {
        lock.unlock();
        if (es_notifier_cancel(n, &w) == 1) {
          if (done()) return;  // nothing more will come
          error = "lost wake-up at position " + std::to_string(es_sub_position(s));
          return;
        }
        lock.lock();
        cv.wait(lock, [&] { return fired; });  // the callback is running
      }
      fired = false;
      sleeps++;
    }
    error = "deadline";
  }
};

TEST_F(SubTest, ConcurrentWritersAndLiveSubscribers) {
  notifier_ = es_notifier_new();
  ASSERT_NE(nullptr, notifier_);
  es_backend_set_notifier(b_, notifier_);
  Append("pre-1", "T", 5);  // something to replay first

  const int kWriters = 4, kBatches = 150;
  uint64_t total = 5;
  for (int t = 0; t < kWriters; t++)
    for (int i = 0; i < kBatches; i++) total += 1 + (i + t) % 5;

  es_sub_opts_t all{};
  es_sub_opts_t filtered{};
  filtered.filter.stream_prefix = "w0-";
  filtered.checkpoint_interval = 7;
  es_sub_opts_t live{};
  live.from_end = true;
  es_sub_t *s_all = Open(all);
  es_sub_t *s_filtered = Open(filtered);
  es_sub_t *s_live = Open(live);
  ASSERT_TRUE(s_all && s_filtered && s_live);

  std::atomic<int> writers_done{0};
  auto finished = [&](es_sub_t *s) {
    return [&, s] { return writers_done.load() == kWriters && es_sub_position(s) == total; };
  };
  Follower f_all(notifier_, s_all), f_filtered(notifier_, s_filtered), f_live(notifier_, s_live);
  std::vector<std::thread> followers, writers;
  followers.emplace_back([&] { f_all.Run(finished(s_all), std::chrono::seconds(120)); });
  followers.emplace_back([&] { f_filtered.Run(finished(s_filtered), std::chrono::seconds(120)); });
  followers.emplace_back([&] { f_live.Run(finished(s_live), std::chrono::seconds(120)); });
  for (int t = 0; t < kWriters; t++) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kBatches; i++) {
        AppendTo(b_, "w" + std::to_string(t) + "-" + std::to_string(i % 3), "T", 1 + (i + t) % 5);
        // Pauses let the followers catch up and sleep on the notifier, so
        // that both replay and live delivery are exercised.
        if (i % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
      writers_done++;
    });
  }
  for (auto &th : writers) th.join();
  // A follower may have gone to sleep at the final head just before the last
  // writer counted itself done: no publish will come for it. Wake it the way
  // the server does at shutdown.
  es_notifier_wake_all(notifier_);
  for (auto &th : followers) th.join();
  ASSERT_EQ("", f_all.error);
  ASSERT_EQ("", f_filtered.error);
  ASSERT_EQ("", f_live.error);
  RecordProperty("sleeps_all", f_all.sleeps);
  RecordProperty("sleeps_filtered", f_filtered.sleeps);
  RecordProperty("sleeps_live", f_live.sleeps);

  std::vector<LogEvent> log = ReadLog();
  ASSERT_EQ(total, log.size());

  // Unfiltered from the start: every position once, in order, one CaughtUp.
  std::vector<std::string> events = WithoutCaughtUp(f_all.items);
  EXPECT_EQ(Range(1, total), events);
  int caught_up = 0;
  for (const auto &it : f_all.items) caught_up += it[0] == 'U';
  EXPECT_EQ(1, caught_up);

  // Filtered: exactly the model's events and checkpoints, with a checkpoint
  // wherever it reached the head having scanned non-matching events; the
  // last one at the final head when the log ends with non-matching events.
  EXPECT_EQ(Model(log, filtered.filter, 7, 1, f_filtered.heads), WithoutCaughtUp(f_filtered.items));
  EXPECT_EQ(1u, f_filtered.heads.count(total));
  for (const auto &st : f_filtered.streams) EXPECT_EQ(0u, st.rfind("w0-", 0)) << st;

  // From the end (opened at head 5): everything after 5, once, in order, and
  // one CaughtUp — not necessarily first, as writers may commit between the
  // open and the first read.
  EXPECT_EQ(Range(6, total), WithoutCaughtUp(f_live.items));
  int live_caught_up = 0;
  for (const auto &it : f_live.items) live_caught_up += it[0] == 'U';
  EXPECT_EQ(1, live_caught_up);

  std::map<std::string, uint64_t> per_stream;
  for (const auto &e : log) per_stream[e.stream_id]++;
  EXPECT_EQ(size_t(1 + kWriters * 3), per_stream.size());
  es_backend_set_notifier(b_, nullptr);
}

// A page source that lags the backend (like the server's live window, which
// fills after the commit): it knows only positions up to `known`, answers
// from the backend below that, and with an end page above it.
struct LaggingSource {
  es_backend_t *b;
  uint64_t known;
  int reads;
  static int Read(void *ctx, const es_read_all_req_t *req, es_page_t *out, es_err_t *err) {
    auto *src = static_cast<LaggingSource *>(ctx);
    src->reads++;
    if (req->from_position > src->known) {  // the source's end
      *out = es_page_t{};
      out->next = req->from_position;
      out->is_end = true;
      out->last = src->known;
      es_err_clear(err);
      return ES_OK;
    }
    es_read_all_req_t r = *req;
    uint64_t room = src->known - req->from_position + 1;
    if (r.max_count > room) r.max_count = static_cast<uint32_t>(room);
    int rc = es_backend_read_all(src->b, &r, out, err);
    if (rc == ES_OK && out->next > src->known) {
      out->is_end = true;
      out->last = src->known;
    }
    return rc;
  }
};

// Events committed before the subscription started come before CaughtUp even
// when the source's head lags: CaughtUp is confirmed by the backend. After
// it, the source's end only means "wait".
TEST_F(SubTest, CaughtUpWaitsForTheBackendsHeadNotALaggingSource) {
  uint64_t head = Append("s", "T", 10);
  for (uint64_t known : {uint64_t{0}, uint64_t{4}, uint64_t{10}}) {
    SCOPED_TRACE("the source knows up to " + std::to_string(known));
    LaggingSource src{b_, known, 0};
    es_sub_opts_t opts{};
    opts.from_position = head - 9;
    opts.read = LaggingSource::Read;
    opts.read_ctx = &src;
    es_sub_t *s = Open(opts);
    ASSERT_NE(s, nullptr);
    std::vector<std::string> expected = Range(head - 9, head);
    expected.push_back("U" + std::to_string(head));
    EXPECT_EQ(Drain(s), expected);
    head = Append("s", "T", 1);
    src.known = head;
    EXPECT_EQ(Drain(s), std::vector<std::string>{"E" + std::to_string(head)});
    int before = src.reads;
    EXPECT_TRUE(Drain(s).empty());
    EXPECT_EQ(src.reads, before + 1);  // the source's end, no backend read behind it
  }
}

}  // namespace
