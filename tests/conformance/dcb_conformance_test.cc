// Extension 1 (tags, queries, conditional appends, AppendMany) checked the
// same way against every backend of backends.cc, through the core prepare
// functions and the es_backend_* wrappers, as the server calls them.
//
// kDcbBackends lists the backends that implement the extension. Every other
// backend must refuse each request that needs it with ES_EUNSUPPORTED and
// store nothing: each test starts with such a request and, on those
// backends, checks the refusal and ends there. A backend that gains the
// extension moves into the list, and the same tests then check its
// semantics.
//
// What is covered: tags round trips; each matching rule of ReadAll with
// Filter.items (types only, tags only, both, several items, an empty item,
// with prefix and types, backward, paged and scan-bounded); conditions
// without and with `after`, on tags and on types only; AppendMany atomicity,
// versions across appends of one stream, positions, the request-wide
// condition (against the log before the request); idempotent retries of
// conditional appends and of AppendMany and their near misses; limits at the
// edge and one over, with nothing stored; racing conditional appends.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "backends.h"
#include "es/backend.h"
#include "es/event.h"
#include "es/validate.h"

namespace {

const std::set<std::string> kDcbBackends = {"memory", "lmdb", "postgres"};

std::string Uuid(uint64_t n) {
  char buf[ES_UUID_STR_LEN + 1];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012llx",
                static_cast<unsigned long long>(n & 0xffffffffffffULL));
  return buf;
}

struct Ev {
  std::string id;
  std::string type;
  std::vector<std::string> tags;
};

// One append with owned strings; Build() points a C request into them.
struct Ap {
  std::string stream;
  int kind = ES_EXPECT_ANY;
  uint64_t expected = 0;
  std::string stream_type;
  std::vector<Ev> events;
  std::vector<es_event_data_t> data;
  std::vector<std::vector<const char *>> tags;

  es_append_req_t Build() {
    data.assign(events.size(), es_event_data_t{});
    tags.assign(events.size(), {});
    for (size_t i = 0; i < events.size(); i++) {
      data[i].event_id = events[i].id.c_str();
      data[i].event_type = events[i].type.c_str();
      for (const auto &t : events[i].tags) tags[i].push_back(t.c_str());
      data[i].tags = tags[i].empty() ? nullptr : tags[i].data();
      data[i].tag_count = tags[i].size();
    }
    es_append_req_t r;
    std::memset(&r, 0, sizeof r);
    r.stream_id = stream.c_str();
    r.stream_type = stream_type.c_str();
    r.expected_kind = kind;
    r.expected_version = expected;
    r.events = data.data();
    r.event_count = data.size();
    return r;
  }
};

// Query items with owned strings.
struct Query {
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> items;
  std::vector<std::vector<const char *>> types, tags;
  std::vector<es_query_item_t> c;

  Query &Item(std::vector<std::string> t, std::vector<std::string> g) {
    items.emplace_back(std::move(t), std::move(g));
    return *this;
  }
  const es_query_item_t *Build() {
    types.assign(items.size(), {});
    tags.assign(items.size(), {});
    c.assign(items.size(), es_query_item_t{});
    for (size_t i = 0; i < items.size(); i++) {
      for (const auto &s : items[i].first) types[i].push_back(s.c_str());
      for (const auto &s : items[i].second) tags[i].push_back(s.c_str());
      c[i].event_types = types[i].data();
      c[i].event_type_count = types[i].size();
      c[i].tags = tags[i].data();
      c[i].tag_count = tags[i].size();
    }
    return c.data();
  }
};

struct Outcome {
  int rc = ES_OK;
  std::vector<es_append_result_t> res;
  es_err_t err{};
};

struct Rec {
  std::string stream, type;
  uint64_t version, position;
  std::vector<std::string> tags;
};

struct Page {
  int rc = ES_OK;
  es_err_t err{};
  std::vector<Rec> events;
  uint64_t next = 0, last = 0;
  bool is_end = false;
};

std::vector<uint64_t> Positions(const Page &p) {
  std::vector<uint64_t> v;
  for (const auto &e : p.events) v.push_back(e.position);
  return v;
}

std::string Str(const es_err_t &e) {
  return std::string(es_errname(e.code)) + ": " + e.msg;
}

class Dcb : public ::testing::TestWithParam<BackendFactory> {
 protected:
  void SetUp() override {
    es_limits_default(&limits_);
    es_err_t err{};
    ASSERT_EQ(ES_OK, GetParam().open(&b_, &err)) << err.msg;
    dcb_ = kDcbBackends.count(GetParam().name) > 0;
  }
  void TearDown() override {
    if (b_) GetParam().close(b_);
  }

  Ev E(const std::string &type, std::vector<std::string> tags = {}) {
    return Ev{Uuid(next_id_++), type, std::move(tags)};
  }
  Ap A(const std::string &stream, std::vector<Ev> evs, int kind = ES_EXPECT_ANY,
       uint64_t expected = 0) {
    Ap a;
    a.stream = stream;
    a.events = std::move(evs);
    a.kind = kind;
    a.expected = expected;
    return a;
  }

  // One Append (with an optional condition), prepared like the server does.
  Outcome Append(Ap &a, Query *cond = nullptr, uint64_t after = 0) {
    es_append_req_t req = a.Build();
    es_append_condition_t c = {nullptr, 0, after};
    if (cond) {
      c.items = cond->Build();
      c.item_count = cond->items.size();
      req.condition = &c;
    }
    Outcome o;
    o.res.resize(1);
    o.rc = es_append_prepare(&limits_, &req, &o.err);
    if (o.rc == ES_OK) o.rc = es_backend_append(b_, &req, o.res.data(), &o.err);
    return o;
  }
  Outcome AppendMany(std::vector<Ap> &aps, Query *cond = nullptr, uint64_t after = 0) {
    std::vector<es_append_req_t> reqs;
    for (auto &a : aps) reqs.push_back(a.Build());
    es_append_condition_t c = {nullptr, 0, after};
    es_append_many_req_t req = {reqs.data(), reqs.size(), nullptr};
    if (cond) {
      c.items = cond->Build();
      c.item_count = cond->items.size();
      req.condition = &c;
    }
    Outcome o;
    o.res.resize(reqs.size() ? reqs.size() : 1);
    o.rc = es_append_many_prepare(&limits_, &req, &o.err);
    if (o.rc == ES_OK) o.rc = es_backend_append_many(b_, &req, o.res.data(), &o.err);
    return o;
  }
  Page ReadAll(Query &q, uint64_t from = 0, uint32_t max = 1000, int dir = ES_FORWARD,
               const std::string &prefix = "", std::vector<std::string> types = {},
               uint64_t max_scan = 0) {
    std::vector<const char *> tp;
    for (const auto &t : types) tp.push_back(t.c_str());
    es_read_all_req_t req;
    std::memset(&req, 0, sizeof req);
    req.from_position = from;
    req.max_count = max;
    req.direction = dir;
    req.filter.stream_prefix = prefix.c_str();
    req.filter.event_types = tp.data();
    req.filter.event_type_count = tp.size();
    req.filter.items = q.Build();
    req.filter.item_count = q.items.size();
    Page out;
    out.rc = es_read_all_prepare(&limits_, &req, &out.err);
    if (max_scan) req.max_scan = max_scan;
    es_page_t page;
    std::memset(&page, 0, sizeof page);
    if (out.rc == ES_OK) out.rc = es_backend_read_all(b_, &req, &page, &out.err);
    if (out.rc == ES_OK) Copy(page, &out);
    es_page_free(&page);
    return out;
  }
  // Every event of one stream (forward), with its tags.
  Page ReadStream(const std::string &stream) {
    es_read_stream_req_t req;
    std::memset(&req, 0, sizeof req);
    req.stream_id = stream.c_str();
    req.max_count = 1000;
    Page out;
    out.rc = es_read_stream_prepare(&limits_, &req, &out.err);
    es_page_t page;
    std::memset(&page, 0, sizeof page);
    if (out.rc == ES_OK) out.rc = es_backend_read_stream(b_, &req, &page, &out.err);
    if (out.rc == ES_OK) Copy(page, &out);
    es_page_free(&page);
    return out;
  }
  static void Copy(const es_page_t &page, Page *out) {
    for (size_t i = 0; i < page.count; i++) {
      const es_recorded_t &v = page.events[i];
      Rec r{v.stream_id, v.event_type, v.stream_version, v.global_position, {}};
      for (size_t k = 0; k < v.tag_count; k++) r.tags.push_back(v.tags[k]);
      out->events.push_back(r);
    }
    out->next = page.next;
    out->last = page.last;
    out->is_end = page.is_end;
  }
  uint64_t Head() {
    uint64_t h = 0;
    es_err_t err{};
    EXPECT_EQ(ES_OK, es_backend_head(b_, &h, &err)) << err.msg;
    return h;
  }
  // Plain appends (no tags), so that every backend can build the log.
  void Plain(const std::string &stream, size_t n) {
    Ap a = A(stream, {});
    for (size_t i = 0; i < n; i++) a.events.push_back(E("Plain"));
    Outcome o = Append(a);
    ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  }
  // On a backend without the extension: the request was refused by name and
  // nothing was stored; the test ends there (returns true).
  bool Refused(int rc, const es_err_t &err, uint64_t head) {
    if (dcb_) return false;
    EXPECT_EQ(ES_EUNSUPPORTED, rc) << Str(err);
    EXPECT_NE(std::string(err.msg).find(GetParam().name), std::string::npos) << err.msg;
    EXPECT_EQ(head, Head()) << "a refused request stored something";
    return true;
  }

  // The course/student log of several tests: positions 1..7.
  //   1 CourseOpened  [course:c1]           4 Enrolled [course:c2, student:s1]
  //   2 CourseOpened  [course:c2]           5 Enrolled [course:c1, student:s2]
  //   3 Enrolled      [course:c1, student:s1]   6 Left [course:c1, student:s1]
  //   7 Renamed       []
  bool CourseLog() {
    Ap a = A("course-c1", {E("CourseOpened", {"course:c1"})});
    Outcome o = Append(a);
    if (Refused(o.rc, o.err, 0)) return false;
    EXPECT_EQ(ES_OK, o.rc) << Str(o.err);
    std::vector<Ap> rest = {A("course-c2", {E("CourseOpened", {"course:c2"})}),
                            A("enrol-1", {E("Enrolled", {"course:c1", "student:s1"})}),
                            A("enrol-2", {E("Enrolled", {"course:c2", "student:s1"})}),
                            A("enrol-3", {E("Enrolled", {"course:c1", "student:s2"})}),
                            A("enrol-1", {E("Left", {"course:c1", "student:s1"})}),
                            A("course-c1", {E("Renamed")})};
    for (auto &r : rest) EXPECT_EQ(ES_OK, Append(r).rc);
    EXPECT_EQ(7u, Head());
    return true;
  }

  es_limits_t limits_;
  es_backend_t *b_ = nullptr;
  bool dcb_ = false;
  uint64_t next_id_ = 1;
};

TEST_P(Dcb, TagsAreStoredAndReturnedInOrder) {
  Ap a = A("s", {E("T", {"b", "a", "c"}), E("T"), E("T", {"z"})});
  Outcome o = Append(a);
  if (Refused(o.rc, o.err, 0)) return;
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  Page p = ReadStream("s");
  ASSERT_EQ(ES_OK, p.rc) << Str(p.err);
  ASSERT_EQ(3u, p.events.size());
  EXPECT_EQ((std::vector<std::string>{"b", "a", "c"}), p.events[0].tags);
  EXPECT_TRUE(p.events[1].tags.empty());
  EXPECT_EQ((std::vector<std::string>{"z"}), p.events[2].tags);
  Query all;
  all.Item({}, {});
  Page q = ReadAll(all);
  ASSERT_EQ(3u, q.events.size());
  EXPECT_EQ((std::vector<std::string>{"b", "a", "c"}), q.events[0].tags);
}

TEST_P(Dcb, MatchingByTypesOnly) {
  if (!CourseLog()) return;
  Query q;
  q.Item({"Enrolled", "Left"}, {});
  EXPECT_EQ((std::vector<uint64_t>{3, 4, 5, 6}), Positions(ReadAll(q)));
}

TEST_P(Dcb, MatchingByTagsOnlyNeedsEveryTag) {
  if (!CourseLog()) return;
  Query one;
  one.Item({}, {"course:c1"});
  EXPECT_EQ((std::vector<uint64_t>{1, 3, 5, 6}), Positions(ReadAll(one)));
  Query both;
  both.Item({}, {"course:c1", "student:s1"});
  EXPECT_EQ((std::vector<uint64_t>{3, 6}), Positions(ReadAll(both)));
  Query unknown;
  unknown.Item({}, {"course:c1", "student:nobody"});
  Page p = ReadAll(unknown);
  EXPECT_TRUE(p.events.empty());
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(8u, p.next);
}

TEST_P(Dcb, MatchingByTypesAndTags) {
  if (!CourseLog()) return;
  Query q;
  q.Item({"Enrolled"}, {"student:s1"});
  EXPECT_EQ((std::vector<uint64_t>{3, 4}), Positions(ReadAll(q)));
}

TEST_P(Dcb, SeveralItemsAreOred) {
  if (!CourseLog()) return;
  // The course/student decision: the course's capacity and the student's
  // enrolments, in one query.
  Query q;
  q.Item({"CourseOpened", "Enrolled", "Left"}, {"course:c1"}).Item({"Enrolled"}, {"student:s1"});
  EXPECT_EQ((std::vector<uint64_t>{1, 3, 4, 5, 6}), Positions(ReadAll(q)));
  // An event in both lists comes once.
  Query overlap;
  overlap.Item({}, {"course:c1"}).Item({}, {"student:s1"});
  EXPECT_EQ((std::vector<uint64_t>{1, 3, 4, 5, 6}), Positions(ReadAll(overlap)));
}

TEST_P(Dcb, AnEmptyItemMatchesEveryEvent) {
  if (!CourseLog()) return;
  Query q;
  q.Item({}, {});
  EXPECT_EQ((std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7}), Positions(ReadAll(q)));
  Query mixed;  // an empty item next to a narrow one still matches everything
  mixed.Item({}, {"course:c2"}).Item({}, {});
  EXPECT_EQ(7u, ReadAll(mixed).events.size());
}

TEST_P(Dcb, ItemsCombineWithPrefixAndTypes) {
  if (!CourseLog()) return;
  Query q;
  q.Item({}, {"course:c1"});
  EXPECT_EQ((std::vector<uint64_t>{3, 6}), Positions(ReadAll(q, 0, 1000, ES_FORWARD, "enrol-1")));
  EXPECT_EQ((std::vector<uint64_t>{6}), Positions(ReadAll(q, 0, 1000, ES_FORWARD, "", {"Left"})));
}

TEST_P(Dcb, QueriesReadBackwardAndPage) {
  if (!CourseLog()) return;
  Query q;
  q.Item({}, {"course:c1"});
  Page back = ReadAll(q, 0, 1000, ES_BACKWARD);
  EXPECT_EQ((std::vector<uint64_t>{6, 5, 3, 1}), Positions(back));
  EXPECT_TRUE(back.is_end);
  EXPECT_EQ(0u, back.next);
  EXPECT_EQ((std::vector<uint64_t>{5, 3, 1}), Positions(ReadAll(q, 5, 1000, ES_BACKWARD)));
  // Forward in pages of 2, resuming from next: every match once, in order.
  std::vector<uint64_t> seen;
  uint64_t from = 1;
  for (int guard = 0; guard < 10; guard++) {
    Page p = ReadAll(q, from, 2);
    ASSERT_EQ(ES_OK, p.rc) << Str(p.err);
    EXPECT_LE(p.events.size(), 2u);
    for (auto &e : p.events) seen.push_back(e.position);
    ASSERT_GT(p.next, from) << "no progress";
    from = p.next;
    if (p.is_end) break;
  }
  EXPECT_EQ((std::vector<uint64_t>{1, 3, 5, 6}), seen);
  EXPECT_EQ(8u, from);
  // Backward in pages of 1.
  seen.clear();
  from = 0;
  for (int guard = 0; guard < 10; guard++) {
    Page p = ReadAll(q, from, 1, ES_BACKWARD);
    for (auto &e : p.events) seen.push_back(e.position);
    if (p.is_end) break;
    from = p.next;
    ASSERT_GT(from, 0u);
  }
  EXPECT_EQ((std::vector<uint64_t>{6, 5, 3, 1}), seen);
}

TEST_P(Dcb, ABoundedScanResumesWithoutSkipping) {
  if (!CourseLog()) return;
  Query q;
  q.Item({"Left"}, {"course:c1"});  // candidates 1, 3, 5, 6 (the tag's events); match 6
  std::vector<uint64_t> seen;
  uint64_t from = 1;
  for (int guard = 0; guard < 20; guard++) {
    Page p = ReadAll(q, from, 1000, ES_FORWARD, "", {}, 1);
    ASSERT_EQ(ES_OK, p.rc) << Str(p.err);
    for (auto &e : p.events) seen.push_back(e.position);
    ASSERT_GT(p.next, from);
    from = p.next;
    if (p.is_end) break;
  }
  EXPECT_EQ((std::vector<uint64_t>{6}), seen);
}

TEST_P(Dcb, QueryMatchesPollNewEvents) {
  if (!CourseLog()) return;
  Query q;
  q.Item({}, {"course:c2"});
  Page p = ReadAll(q);
  EXPECT_EQ((std::vector<uint64_t>{2, 4}), Positions(p));
  ASSERT_TRUE(p.is_end);
  Ap more = A("enrol-9", {E("Enrolled", {"course:c2", "student:s9"})});
  ASSERT_EQ(ES_OK, Append(more).rc);
  EXPECT_EQ((std::vector<uint64_t>{8}), Positions(ReadAll(q, p.next)));
}

// ---- conditions ----------------------------------------------------------------

TEST_P(Dcb, AConditionWithoutAfterConsidersTheWholeLog) {
  Plain("x", 2);
  Query q;
  q.Item({}, {"course:c1"});
  Ap first = A("course-c1", {E("CourseOpened", {"course:c1"})});
  Outcome o = Append(first, &q);
  if (Refused(o.rc, o.err, 2)) return;
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);  // nothing matched yet
  EXPECT_EQ(3u, o.res[0].first_position);
  Ap second = A("course-c1", {E("CourseOpened", {"course:c1"})});
  o = Append(second, &q);
  EXPECT_EQ(ES_ECONDITION, o.rc) << Str(o.err);
  EXPECT_EQ(1, o.err.has_condition_position);
  EXPECT_EQ(3u, o.err.condition_position);
  EXPECT_EQ(3u, Head()) << "a failed condition stored something";
}

TEST_P(Dcb, AConditionConsidersOnlyEventsAfterAfter) {
  if (!CourseLog()) return;
  Query q;
  q.Item({"Enrolled", "Left"}, {"course:c1"});  // matches 3, 5, 6
  for (uint64_t after : {0, 2, 4, 5}) {
    Ap a = A("enrol-x", {E("Enrolled", {"course:c1"})});
    Outcome o = Append(a, &q, after);
    EXPECT_EQ(ES_ECONDITION, o.rc) << "after " << after;
    uint64_t want = after < 3 ? 3 : after < 5 ? 5 : 6;
    EXPECT_EQ(want, o.err.condition_position) << "after " << after;
  }
  EXPECT_EQ(7u, Head());
  for (uint64_t after : {6, 7, 100}) {
    Ap a = A("enrol-x", {E("Enrolled", {"course:c9"})});  // never matches q itself
    Outcome o = Append(a, &q, after);
    EXPECT_EQ(ES_OK, o.rc) << "after " << after << ": " << Str(o.err);
  }
  EXPECT_EQ(10u, Head());
}

TEST_P(Dcb, AnAfterAtOrBeyondTheHeadConsidersNothing) {
  if (!CourseLog()) return;
  Query tagged, types;
  tagged.Item({}, {"course:c1"});
  types.Item({"Enrolled"}, {});
  for (uint64_t after : {uint64_t{7}, uint64_t{8}, ~uint64_t{0} - 1, ~uint64_t{0}}) {
    Ap a = A("enrol-z", {E("Joined", {"course:c9"})});
    Outcome o = Append(a, &tagged, after);
    EXPECT_EQ(ES_OK, o.rc) << "after " << after << ": " << Str(o.err);
    Ap b = A("enrol-z", {E("Other")});
    o = Append(b, &types, after);
    EXPECT_EQ(ES_OK, o.rc) << "after " << after << ": " << Str(o.err);
  }
  EXPECT_EQ(15u, Head());
}

TEST_P(Dcb, AConditionOnTypesOnlyAndOnSeveralItems) {
  if (!CourseLog()) return;
  Query types;
  types.Item({"Renamed"}, {});
  Ap a = A("course-c1", {E("Renamed")});
  Outcome o = Append(a, &types, 6);
  EXPECT_EQ(ES_ECONDITION, o.rc);
  EXPECT_EQ(7u, o.err.condition_position);
  Query several;
  several.Item({}, {"student:s2"}).Item({"Left"}, {});
  o = Append(a, &several, 0);
  EXPECT_EQ(ES_ECONDITION, o.rc);
  EXPECT_EQ(5u, o.err.condition_position) << "the first match of any item";
  Query nothing;
  nothing.Item({"Left"}, {"course:c2"}).Item({}, {"student:s3"});
  EXPECT_EQ(ES_OK, Append(a, &nothing, 0).rc);
}

TEST_P(Dcb, TheConditionIsCheckedAfterTheExpectedVersion) {
  if (!CourseLog()) return;
  Query q;
  q.Item({}, {"course:c1"});
  Ap a = A("course-c1", {E("Renamed")}, ES_EXPECT_NO_STREAM);
  Outcome o = Append(a, &q);
  EXPECT_EQ(ES_EVERSION, o.rc) << Str(o.err);
  EXPECT_EQ(0, o.err.has_condition_position);
}

TEST_P(Dcb, ARetriedConditionalAppendIsADuplicateWhateverTheConditionSays) {
  Query q;
  q.Item({}, {"seat:1"});
  Ap a = A("booking-1", {E("Booked", {"seat:1"}), E("Paid", {"seat:1"})});
  Outcome o = Append(a, &q);
  if (Refused(o.rc, o.err, 0)) return;
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  Outcome retry = Append(a, &q);  // its own events match the condition now
  ASSERT_EQ(ES_OK, retry.rc) << Str(retry.err);
  EXPECT_TRUE(retry.res[0].duplicate);
  EXPECT_EQ(o.res[0].first_position, retry.res[0].first_position);
  EXPECT_EQ(o.res[0].recorded_at_unix_ms, retry.res[0].recorded_at_unix_ms);
  EXPECT_EQ(2u, Head());
  // A new event under the same condition fails, naming the first match.
  Ap other = A("booking-2", {E("Booked", {"seat:1"})});
  o = Append(other, &q);
  EXPECT_EQ(ES_ECONDITION, o.rc);
  EXPECT_EQ(1u, o.err.condition_position);
}

// ---- AppendMany ------------------------------------------------------------------

TEST_P(Dcb, AppendManyCommitsEveryAppendInOneRunOfPositions) {
  Plain("x", 1);
  std::vector<Ap> aps = {A("a", {E("T"), E("T")}), A("b", {E("T", {"t"})}), A("a", {E("T")})};
  aps[2].kind = ES_EXPECT_EXACT;
  aps[2].expected = 2;  // sees appends[0]
  Outcome o = AppendMany(aps);
  if (Refused(o.rc, o.err, 1)) return;
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  EXPECT_EQ(2u, o.res[0].first_position);
  EXPECT_EQ(3u, o.res[0].last_position);
  EXPECT_EQ(1u, o.res[0].first_version);
  EXPECT_EQ(4u, o.res[1].first_position);
  EXPECT_EQ(1u, o.res[1].first_version);
  EXPECT_EQ(5u, o.res[2].first_position);
  EXPECT_EQ(3u, o.res[2].first_version);
  EXPECT_EQ(o.res[0].recorded_at_unix_ms, o.res[2].recorded_at_unix_ms);
  for (auto &r : o.res) EXPECT_FALSE(r.duplicate);
  Page a = ReadStream("a");
  ASSERT_EQ(3u, a.events.size());
  EXPECT_EQ(5u, a.events[2].position);
  EXPECT_EQ(3u, a.events[2].version);
  EXPECT_EQ(5u, Head());
}

TEST_P(Dcb, AFailingAppendInTheMiddleStoresNothing) {
  Plain("b", 1);
  std::vector<Ap> aps = {A("a", {E("T")}), A("b", {E("T")}, ES_EXPECT_NO_STREAM), A("c", {E("T")})};
  Outcome o = AppendMany(aps);
  if (Refused(o.rc, o.err, 1)) return;
  ASSERT_EQ(ES_EVERSION, o.rc) << Str(o.err);
  EXPECT_EQ(1, o.err.has_append_index);
  EXPECT_EQ(1u, o.err.append_index);
  EXPECT_EQ(1u, o.err.actual_version);
  EXPECT_EQ(1u, Head());
  EXPECT_EQ(ES_ENOTFOUND, ReadStream("a").rc) << "appends[0] was stored";
  // The ids were not taken, and positions stay gap-free.
  aps[1].kind = ES_EXPECT_ANY;
  o = AppendMany(aps);
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  EXPECT_EQ(2u, o.res[0].first_position);
  EXPECT_EQ(4u, o.res[2].last_position);
  Query all;
  all.Item({}, {});
  EXPECT_EQ((std::vector<uint64_t>{1, 2, 3, 4}), Positions(ReadAll(all)));
}

TEST_P(Dcb, AppendManyReportsTheVersionItsFailingCheckSaw) {
  std::vector<Ap> aps = {A("a", {E("T"), E("T")}), A("a", {E("T")}, ES_EXPECT_EXACT, 0)};
  Outcome o = AppendMany(aps);
  if (Refused(o.rc, o.err, 0)) return;
  ASSERT_EQ(ES_EVERSION, o.rc);
  EXPECT_EQ(1u, o.err.append_index);
  EXPECT_EQ(2u, o.err.actual_version);
  std::vector<Ap> typed = {A("t", {E("T")}), A("t", {E("T")})};
  typed[0].stream_type = "Course";
  typed[1].stream_type = "Student";
  o = AppendMany(typed);
  EXPECT_EQ(ES_ETYPE, o.rc);
  EXPECT_EQ(1u, o.err.append_index);
  EXPECT_EQ(0u, Head());
}

TEST_P(Dcb, AppendManyConditionSeesTheLogBeforeTheRequest) {
  Plain("x", 1);
  Query q;
  q.Item({}, {"course:c1"});
  // Its own events match the condition: they do not count.
  std::vector<Ap> aps = {A("course-c1", {E("CourseOpened", {"course:c1"})}),
                         A("student-s1", {E("Enrolled", {"course:c1", "student:s1"})})};
  Outcome o = AppendMany(aps, &q);
  if (Refused(o.rc, o.err, 1)) return;
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  EXPECT_EQ(2u, o.res[0].first_position);
  // Now they do, for a new request.
  std::vector<Ap> again = {A("course-c1", {E("Enrolled", {"course:c1"})}), A("y", {E("T")})};
  o = AppendMany(again, &q, 1);
  EXPECT_EQ(ES_ECONDITION, o.rc) << Str(o.err);
  EXPECT_EQ(2u, o.err.condition_position);
  EXPECT_EQ(0, o.err.has_append_index) << "the condition is the request's, not an append's";
  EXPECT_EQ(3u, Head());
  EXPECT_EQ(ES_OK, AppendMany(again, &q, 3).rc);
}

TEST_P(Dcb, AppendManyRetriesAreDuplicatesOnlyAsAWhole) {
  std::vector<Ap> aps = {A("a", {E("T"), E("T")}), A("b", {E("T")}), A("a", {E("T")})};
  Outcome o = AppendMany(aps);
  if (Refused(o.rc, o.err, 0)) return;
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  Plain("z", 1);
  aps[1].kind = ES_EXPECT_NO_STREAM;  // no longer true: a duplicate wins anyway
  Outcome retry = AppendMany(aps);
  ASSERT_EQ(ES_OK, retry.rc) << Str(retry.err);
  for (size_t i = 0; i < 3; i++) {
    EXPECT_TRUE(retry.res[i].duplicate);
    EXPECT_EQ(o.res[i].first_position, retry.res[i].first_position);
    EXPECT_EQ(o.res[i].first_version, retry.res[i].first_version);
  }
  // A part of it, alone or as a smaller AppendMany, is ALREADY_EXISTS.
  Ap part = aps[1];
  Outcome single = Append(part);
  EXPECT_EQ(ES_EEXIST, single.rc) << Str(single.err);
  std::vector<Ap> prefix = {aps[0], aps[1]};
  o = AppendMany(prefix);
  EXPECT_EQ(ES_EEXIST, o.rc);
  EXPECT_EQ(0u, o.err.append_index);
  std::vector<Ap> mixed = {A("n", {E("T")}), aps[0], aps[1], aps[2]};
  o = AppendMany(mixed);
  EXPECT_EQ(ES_EEXIST, o.rc);
  EXPECT_EQ(1u, o.err.append_index) << "the first append that reuses an id";
  EXPECT_EQ(5u, Head());
  // An Append and an AppendMany of that one append are the same request.
  Ap solo = A("solo", {E("T"), E("T")});
  ASSERT_EQ(ES_OK, Append(solo).rc);
  std::vector<Ap> as_many = {solo};
  o = AppendMany(as_many);
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  EXPECT_TRUE(o.res[0].duplicate);
  EXPECT_EQ(6u, o.res[0].first_position);
}

TEST_P(Dcb, AConditionalAppendManyRetryIsADuplicate) {
  Query q;
  q.Item({}, {"seat:7"});
  std::vector<Ap> aps = {A("booking-7", {E("Booked", {"seat:7"})}), A("seat-7", {E("Taken")})};
  Outcome o = AppendMany(aps, &q);
  if (Refused(o.rc, o.err, 0)) return;
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  Outcome retry = AppendMany(aps, &q);
  ASSERT_EQ(ES_OK, retry.rc) << Str(retry.err);
  EXPECT_TRUE(retry.res[0].duplicate && retry.res[1].duplicate);
  EXPECT_EQ(2u, Head());
}

// ---- limits and bad input ----------------------------------------------------------

TEST_P(Dcb, LimitsAtTheEdgeAndOneOver) {
  Ap tags = A("s", {E("T")});
  for (int i = 0; i < 32; i++) tags.events[0].tags.push_back("t" + std::to_string(i));
  Outcome o = Append(tags);
  if (Refused(o.rc, o.err, 0)) return;
  ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  Ap over = A("s", {E("T")});
  over.events[0].tags = tags.events[0].tags;
  over.events[0].tags.push_back("t32");
  o = Append(over);
  EXPECT_EQ(ES_EINVAL, o.rc);
  EXPECT_NE(std::string(o.err.msg).find("events[0].tags"), std::string::npos) << o.err.msg;

  std::vector<Ap> hundred;
  for (int i = 0; i < 100; i++) hundred.push_back(A("m" + std::to_string(i), {E("T")}));
  ASSERT_EQ(ES_OK, AppendMany(hundred).rc);
  std::vector<Ap> one_more;
  for (int i = 0; i < 101; i++) one_more.push_back(A("n" + std::to_string(i), {E("T")}));
  o = AppendMany(one_more);
  EXPECT_EQ(ES_EINVAL, o.rc);
  EXPECT_NE(std::string(o.err.msg).find("appends: 101 given"), std::string::npos) << o.err.msg;

  std::vector<Ap> thousand = {A("big", {}), A("big2", {})};
  for (int i = 0; i < 1000; i++) thousand[i % 2].events.push_back(E("T"));
  ASSERT_EQ(ES_OK, AppendMany(thousand).rc);
  thousand[0].events.clear();
  thousand[1].events.clear();
  for (int i = 0; i < 1001; i++) thousand[i % 2].events.push_back(E("T"));
  o = AppendMany(thousand);
  EXPECT_EQ(ES_EINVAL, o.rc);
  EXPECT_NE(std::string(o.err.msg).find("1001 events in all"), std::string::npos) << o.err.msg;

  Query sixteen, seventeen;
  for (int i = 0; i < 16; i++) sixteen.Item({}, {"x" + std::to_string(i)});
  seventeen = sixteen;
  seventeen.Item({}, {"y"});
  Ap c = A("c", {E("T")});
  EXPECT_EQ(ES_OK, Append(c, &sixteen).rc);
  Ap c2 = A("c", {E("T")});
  o = Append(c2, &seventeen);
  EXPECT_EQ(ES_EINVAL, o.rc);
  EXPECT_NE(std::string(o.err.msg).find("condition.fail_if_events_match: 17 given"),
            std::string::npos)
      << o.err.msg;
  Page p = ReadAll(seventeen);
  EXPECT_EQ(ES_EINVAL, p.rc);
  EXPECT_NE(std::string(p.err.msg).find("filter.items: 17 given"), std::string::npos);
  EXPECT_EQ(1u + 100u + 1000u + 1u, Head()) << "a refused request stored something";
}

TEST_P(Dcb, BadInputIsRefusedNamingTheFieldAndStoresNothing) {
  Ap empty_tag = A("s", {E("T", {"ok", ""})});
  Outcome o = Append(empty_tag);
  EXPECT_EQ(ES_EINVAL, o.rc);  // validation comes before the capability
  EXPECT_NE(std::string(o.err.msg).find("events[0].tags[1]: empty"), std::string::npos)
      << o.err.msg;
  Ap twice = A("s", {E("T", {"a", "a"})});
  o = Append(twice);
  EXPECT_EQ(ES_EINVAL, o.rc);
  EXPECT_NE(std::string(o.err.msg).find("events[0].tags[1]"), std::string::npos) << o.err.msg;
  Query none;
  Ap cond = A("s", {E("T")});
  o = Append(cond, &none);
  EXPECT_EQ(ES_EINVAL, o.rc);
  EXPECT_NE(std::string(o.err.msg).find("condition.fail_if_events_match: 0 given"),
            std::string::npos)
      << o.err.msg;
  std::vector<Ap> same_id = {A("a", {E("T")}), A("b", {E("T")})};
  same_id[1].events[0].id = same_id[0].events[0].id;
  o = AppendMany(same_id);
  EXPECT_EQ(ES_EINVAL, o.rc);
  EXPECT_NE(std::string(o.err.msg).find("appends[1].events[0].event_id"), std::string::npos)
      << o.err.msg;
  std::vector<Ap> none_at_all;
  o = AppendMany(none_at_all);
  EXPECT_EQ(ES_EINVAL, o.rc);
  EXPECT_EQ(0u, Head());
}

// ---- concurrency -----------------------------------------------------------------

// Bookers race for seats: each reads the booked seats' events by query,
// decides, and appends with `after` = the head it read; a failed condition
// means re-read and retry. Exactly `seats` bookings commit.
TEST_P(Dcb, RacingConditionalAppendsCommitExactlyTheAllowedNumber) {
  const int kSeats = 10, kBookers = 8, kTries = 200;
  Query q;
  q.Item({"Booked"}, {"show:1"});
  {
    Ap probe = A("probe", {E("Probe", {"show:0"})});
    Outcome o = Append(probe, &q);
    if (Refused(o.rc, o.err, 0)) return;
    ASSERT_EQ(ES_OK, o.rc) << Str(o.err);
  }
  std::atomic<int> booked{0}, conflicts{0}, errors{0};
  std::atomic<uint64_t> ids{1000000};
  std::vector<std::thread> threads;
  for (int t = 0; t < kBookers; t++) {
    threads.emplace_back([&, t] {
      for (int attempt = 0; attempt < kTries; attempt++) {
        Query mine;
        mine.Item({"Booked"}, {"show:1"});
        Page p = ReadAll(mine);
        if (p.rc != ES_OK) {
          errors++;
          return;
        }
        if (p.events.size() >= static_cast<size_t>(kSeats)) return;  // sold out
        Ap a;
        a.stream = "booker-" + std::to_string(t);
        a.events.push_back(Ev{Uuid(ids++), "Booked", {"show:1", "booker:" + std::to_string(t)}});
        Outcome o = Append(a, &mine, p.last);
        if (o.rc == ES_OK) {
          booked++;
        } else if (o.rc == ES_ECONDITION) {
          conflicts++;
        } else {
          errors++;
          return;
        }
      }
    });
  }
  for (auto &th : threads) th.join();
  EXPECT_EQ(0, errors.load());
  EXPECT_EQ(kSeats, booked.load());
  Page all = ReadAll(q);
  EXPECT_EQ(static_cast<size_t>(kSeats), all.events.size());
  EXPECT_EQ(static_cast<uint64_t>(kSeats) + 1, Head());
}

INSTANTIATE_TEST_SUITE_P(Backends, Dcb, ::testing::ValuesIn(ConformanceBackends()),
                         [](const ::testing::TestParamInfo<BackendFactory> &info) {
                           return std::string(info.param.name);
                         });

}  // namespace
