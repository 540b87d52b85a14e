// Extension 1 in the core, without a real backend: the input rules of tags,
// query items, conditions and AppendMany (validate.c); query matching and
// filters with items (event.c); the conditional append decision and the
// AppendMany decision (decide.c) over a model of stored state; and the
// capability check of the backend wrappers (backend.c), which refuses what a
// backend has not declared instead of dropping it.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "es/backend.h"
#include "es/backend_impl.h"
#include "es/event.h"
#include "es/validate.h"

namespace {

std::string Id(int n) {
  char buf[40];
  snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", n);
  return buf;
}

// An event with owned strings, turned into es_event_data_t on demand.
struct Ev {
  std::string id;
  std::string type;
  std::vector<std::string> tags;
  Ev(std::string i, std::string t, std::vector<std::string> g)
      : id(std::move(i)), type(std::move(t)), tags(std::move(g)) {}
};

// A request under construction: owns everything its C structs point to.
struct Append {
  std::string stream = "s-1";
  std::string type;
  int kind = ES_EXPECT_ANY;
  uint64_t expected = 0;
  std::vector<Ev> events;
  // Filled by Build():
  std::vector<es_event_data_t> data;
  std::vector<std::vector<const char *>> tag_ptrs;

  es_append_req_t Build(const es_append_condition_t *cond = nullptr) {
    data.assign(events.size(), es_event_data_t{});
    tag_ptrs.assign(events.size(), {});
    for (size_t i = 0; i < events.size(); i++) {
      data[i].event_id = events[i].id.c_str();
      data[i].event_type = events[i].type.c_str();
      for (const auto &t : events[i].tags) tag_ptrs[i].push_back(t.c_str());
      data[i].tags = tag_ptrs[i].data();
      data[i].tag_count = tag_ptrs[i].size();
    }
    es_append_req_t r;
    memset(&r, 0, sizeof r);
    r.stream_id = stream.c_str();
    r.stream_type = type.c_str();
    r.expected_kind = kind;
    r.expected_version = expected;
    r.events = data.data();
    r.event_count = data.size();
    r.condition = cond;
    return r;
  }
};

Append Make(const std::string &stream, std::vector<int> ids, const std::string &type = "E") {
  Append a;
  a.stream = stream;
  for (int n : ids) a.events.push_back(Ev(n ? Id(n) : "", type, {}));
  return a;
}

// Query items with owned strings.
struct Items {
  std::vector<std::vector<std::string>> types, tags;
  std::vector<std::vector<const char *>> type_ptrs, tag_ptrs;
  std::vector<es_query_item_t> items;

  Items &Add(std::vector<std::string> t, std::vector<std::string> g) {
    types.push_back(std::move(t));
    tags.push_back(std::move(g));
    return *this;
  }
  const es_query_item_t *Build() {
    type_ptrs.assign(types.size(), {});
    tag_ptrs.assign(types.size(), {});
    items.assign(types.size(), es_query_item_t{});
    for (size_t i = 0; i < types.size(); i++) {
      for (const auto &s : types[i]) type_ptrs[i].push_back(s.c_str());
      for (const auto &s : tags[i]) tag_ptrs[i].push_back(s.c_str());
      items[i].event_types = type_ptrs[i].data();
      items[i].event_type_count = type_ptrs[i].size();
      items[i].tags = tag_ptrs[i].data();
      items[i].tag_count = tag_ptrs[i].size();
    }
    return items.data();
  }
  size_t size() const { return types.size(); }
};

class DcbValidate : public ::testing::Test {
 protected:
  void SetUp() override {
    es_limits_default(&limits_);
    es_err_clear(&err_);
  }
  int Prepare(Append &a, const es_append_condition_t *cond = nullptr) {
    es_err_clear(&err_);
    es_append_req_t r = a.Build(cond);
    return es_append_prepare(&limits_, &r, &err_);
  }
  bool Says(const std::string &s) const {
    return std::string(err_.msg).find(s) != std::string::npos;
  }
  es_limits_t limits_;
  es_err_t err_;
};

// ---- validation: tags -------------------------------------------------------

TEST_F(DcbValidate, DefaultLimitsAreThoseOfTheContract) {
  EXPECT_EQ(32u, limits_.max_event_tags);
  EXPECT_EQ(256u, limits_.max_tag_bytes);
  EXPECT_EQ(16u, limits_.max_query_items);
  EXPECT_EQ(32u, limits_.max_query_item_types);
  EXPECT_EQ(32u, limits_.max_query_item_tags);
  EXPECT_EQ(100u, limits_.max_many_appends);
}

TEST_F(DcbValidate, TagCountEdge) {
  Append a = Make("s", {0});
  for (int i = 0; i < 32; i++) a.events[0].tags.push_back("t" + std::to_string(i));
  EXPECT_EQ(ES_OK, Prepare(a)) << err_.msg;
  a.events[0].tags.push_back("t32");
  EXPECT_EQ(ES_EINVAL, Prepare(a));
  EXPECT_TRUE(Says("events[0].tags: 33 given, limit 32")) << err_.msg;
}

TEST_F(DcbValidate, TagTextRules) {
  Append a = Make("s", {0, 0});
  a.events[1].tags = {std::string(256, 'x')};
  EXPECT_EQ(ES_OK, Prepare(a)) << err_.msg;
  a.events[1].tags = {"ok", std::string(257, 'x')};
  EXPECT_EQ(ES_EINVAL, Prepare(a));
  EXPECT_TRUE(Says("events[1].tags[1]: 257 bytes, limit 256")) << err_.msg;
  a.events[1].tags = {""};
  EXPECT_EQ(ES_EINVAL, Prepare(a));
  EXPECT_TRUE(Says("events[1].tags[0]: empty")) << err_.msg;
  a.events[1].tags = {"bad\xff"};
  EXPECT_EQ(ES_EINVAL, Prepare(a));
  EXPECT_TRUE(Says("events[1].tags[0]: invalid UTF-8")) << err_.msg;
  a.events[1].tags = {"tab\there"};
  EXPECT_EQ(ES_EINVAL, Prepare(a));
  EXPECT_TRUE(Says("events[1].tags[0]: control characters")) << err_.msg;
  a.events[1].tags = {"c1\xc2\x85"};
  EXPECT_EQ(ES_EINVAL, Prepare(a));
  a.events[1].tags = {"course:c1", "kurs:\xc3\xa9t\xc3\xa9"};
  EXPECT_EQ(ES_OK, Prepare(a)) << err_.msg;
}

TEST_F(DcbValidate, TheSameTagTwiceInOneEventIsRefused) {
  Append a = Make("s", {0, 0});
  a.events[0].tags = {"a", "b"};
  a.events[1].tags = {"a", "b"};  // the same tags on two events are fine
  EXPECT_EQ(ES_OK, Prepare(a)) << err_.msg;
  a.events[1].tags = {"a", "b", "a"};
  EXPECT_EQ(ES_EINVAL, Prepare(a));
  EXPECT_TRUE(Says("events[1].tags[2]: repeats events[1].tags[0]")) << err_.msg;
}

TEST_F(DcbValidate, TagsCountTowardsTheEventSize) {
  limits_.max_event_bytes = 100;
  Append a = Make("s", {0});
  a.events[0].tags = {std::string(99, 'x')};  // + "E" = 100
  EXPECT_EQ(ES_OK, Prepare(a)) << err_.msg;
  a.events[0].tags = {std::string(100, 'x')};
  EXPECT_EQ(ES_ETOOBIG, Prepare(a));
}

// ---- validation: conditions and filters ---------------------------------------

TEST_F(DcbValidate, AConditionNeedsOneToSixteenItems) {
  Append a = Make("s", {0});
  es_append_condition_t cond = {nullptr, 0, 0};
  EXPECT_EQ(ES_EINVAL, Prepare(a, &cond));
  EXPECT_TRUE(Says("condition.fail_if_events_match: 0 given")) << err_.msg;
  Items items;
  for (int i = 0; i < 16; i++) items.Add({}, {"t"});
  cond.items = items.Build();
  cond.item_count = items.size();
  EXPECT_EQ(ES_OK, Prepare(a, &cond)) << err_.msg;
  items.Add({}, {});
  cond.items = items.Build();
  cond.item_count = items.size();
  EXPECT_EQ(ES_EINVAL, Prepare(a, &cond));
  EXPECT_TRUE(Says("condition.fail_if_events_match: 17 given, limit 16")) << err_.msg;
}

TEST_F(DcbValidate, ItemListsAreBoundedAndOnlyCounted) {
  Append a = Make("s", {0});
  std::vector<std::string> many(32, "");  // empty strings: only counts are checked
  Items items;
  items.Add(many, many);
  es_append_condition_t cond = {items.Build(), 1, 0};
  EXPECT_EQ(ES_OK, Prepare(a, &cond)) << err_.msg;
  many.push_back("x");
  Items types;
  types.Add({}, {}).Add(many, {});
  cond = {types.Build(), 2, 0};
  EXPECT_EQ(ES_EINVAL, Prepare(a, &cond));
  EXPECT_TRUE(Says("condition.fail_if_events_match[1].event_types: 33 given, limit 32"))
      << err_.msg;
  Items tags;
  tags.Add({}, many);
  cond = {tags.Build(), 1, 0};
  EXPECT_EQ(ES_EINVAL, Prepare(a, &cond));
  EXPECT_TRUE(Says("condition.fail_if_events_match[0].tags: 33 given, limit 32")) << err_.msg;
}

TEST_F(DcbValidate, ConditionIsCheckedAfterTheEvents) {
  Append a = Make("s", {0});
  a.events[0].tags = {""};
  es_append_condition_t cond = {nullptr, 0, 0};
  EXPECT_EQ(ES_EINVAL, Prepare(a, &cond));
  EXPECT_TRUE(Says("events[0].tags[0]")) << err_.msg;
}

TEST_F(DcbValidate, FilterItemsAreBounded) {
  es_filter_t f;
  memset(&f, 0, sizeof f);
  Items items;
  for (int i = 0; i < 16; i++) items.Add({"T"}, {});
  f.items = items.Build();
  f.item_count = items.size();
  EXPECT_EQ(ES_OK, es_filter_validate(&limits_, &f, "filter", &err_)) << err_.msg;
  items.Add({}, {});
  f.items = items.Build();
  f.item_count = items.size();
  EXPECT_EQ(ES_EINVAL, es_filter_validate(&limits_, &f, "filter", &err_));
  EXPECT_TRUE(Says("filter.items: 17 given, limit 16")) << err_.msg;
  Items big;
  big.Add({}, std::vector<std::string>(33, "t"));
  f.items = big.Build();
  f.item_count = 1;
  EXPECT_EQ(ES_EINVAL, es_filter_validate(&limits_, &f, "filter", &err_));
  EXPECT_TRUE(Says("filter.items[0].tags: 33 given, limit 32")) << err_.msg;
  // An item with both lists empty is valid (it matches every event).
  Items any;
  any.Add({}, {});
  f.items = any.Build();
  EXPECT_EQ(ES_OK, es_filter_validate(&limits_, &f, "filter", &err_)) << err_.msg;
}

// ---- validation: AppendMany ----------------------------------------------------

struct Many {
  std::vector<Append> appends;
  std::vector<es_append_req_t> reqs;
  es_append_many_req_t Build(const es_append_condition_t *cond = nullptr) {
    reqs.clear();
    for (auto &a : appends) reqs.push_back(a.Build());
    es_append_many_req_t r;
    r.appends = reqs.data();
    r.append_count = reqs.size();
    r.condition = cond;
    return r;
  }
};

class DcbManyValidate : public DcbValidate {
 protected:
  int PrepareMany(Many &m, const es_append_condition_t *cond = nullptr) {
    es_err_clear(&err_);
    es_append_many_req_t r = m.Build(cond);
    return es_append_many_prepare(&limits_, &r, &err_);
  }
};

TEST_F(DcbManyValidate, AppendCountEdges) {
  Many m;
  EXPECT_EQ(ES_EINVAL, PrepareMany(m));
  EXPECT_TRUE(Says("appends: 0 given")) << err_.msg;
  for (int i = 0; i < 100; i++) m.appends.push_back(Make("s" + std::to_string(i), {0}));
  EXPECT_EQ(ES_OK, PrepareMany(m)) << err_.msg;
  m.appends.push_back(Make("s100", {0}));
  EXPECT_EQ(ES_EINVAL, PrepareMany(m));
  EXPECT_TRUE(Says("appends: 101 given, limit 100")) << err_.msg;
  EXPECT_EQ(0, err_.has_append_index) << "a request-wide limit names no append";
}

TEST_F(DcbManyValidate, EventsInAllAreBoundedByTheAppendLimit) {
  Many m;
  m.appends.push_back(Make("a", std::vector<int>(600, 0)));
  m.appends.push_back(Make("b", std::vector<int>(400, 0)));
  EXPECT_EQ(ES_OK, PrepareMany(m)) << err_.msg;
  m.appends[1].events.push_back(Ev("", "E", {}));
  EXPECT_EQ(ES_EINVAL, PrepareMany(m));
  EXPECT_TRUE(Says("appends: 1001 events in all, limit 1000")) << err_.msg;
  EXPECT_EQ(0, err_.has_append_index);
}

TEST_F(DcbManyValidate, AFaultyAppendIsNamed) {
  Many m;
  m.appends.push_back(Make("a", {0}));
  m.appends.push_back(Make("b", {0}));
  m.appends[1].events[0].tags = {"x", "x"};
  EXPECT_EQ(ES_EINVAL, PrepareMany(m));
  EXPECT_TRUE(Says("appends[1].events[0].tags[1]: repeats")) << err_.msg;
  EXPECT_EQ(1, err_.has_append_index);
  EXPECT_EQ(1u, err_.append_index);
  m.appends[1].events.clear();
  EXPECT_EQ(ES_EINVAL, PrepareMany(m));
  EXPECT_TRUE(Says("appends[1].events: 0 given")) << err_.msg;
}

TEST_F(DcbManyValidate, AnAppendMayNotCarryItsOwnCondition) {
  Many m;
  m.appends.push_back(Make("a", {0}));
  m.appends.push_back(Make("b", {0}));
  Items items;
  items.Add({}, {"t"});
  es_append_condition_t cond = {items.Build(), 1, 0};
  es_append_many_req_t r = m.Build();
  m.reqs[1].condition = &cond;
  es_err_clear(&err_);
  EXPECT_EQ(ES_EINVAL, es_append_many_prepare(&limits_, &r, &err_));
  EXPECT_TRUE(Says("appends[1].condition: must be unset")) << err_.msg;
  EXPECT_EQ(1u, err_.append_index);
  // The request's own condition is fine, and validated.
  EXPECT_EQ(ES_OK, PrepareMany(m, &cond)) << err_.msg;
  es_append_condition_t empty = {nullptr, 0, 0};
  EXPECT_EQ(ES_EINVAL, PrepareMany(m, &empty));
  EXPECT_TRUE(Says("condition.fail_if_events_match: 0 given")) << err_.msg;
  EXPECT_EQ(0, err_.has_append_index);
}

TEST_F(DcbManyValidate, TheSameIdInTwoAppendsIsRefused) {
  Many m;
  m.appends.push_back(Make("a", {1, 2}));
  m.appends.push_back(Make("b", {3}));
  m.appends.push_back(Make("c", {4, 2}));
  EXPECT_EQ(ES_EINVAL, PrepareMany(m));
  EXPECT_TRUE(Says("appends[2].events[1].event_id: " + Id(2) + " duplicates appends[0].events[1]"))
      << err_.msg;
  EXPECT_EQ(2u, err_.append_index);
  // Server-assigned ids never collide.
  Many fresh;
  fresh.appends.push_back(Make("a", {0, 0}));
  fresh.appends.push_back(Make("a", {0}));
  EXPECT_EQ(ES_OK, PrepareMany(fresh)) << err_.msg;
}

// ---- matching -------------------------------------------------------------------

bool Match(Items &items, const std::string &type, std::vector<std::string> tags) {
  std::vector<const char *> p;
  for (const auto &t : tags) p.push_back(t.c_str());
  return es_query_match(items.Build(), items.size(), type.c_str(), p.data(), p.size());
}

TEST(DcbMatch, TypesOnly) {
  Items q;
  q.Add({"Enrolled", "Left"}, {});
  EXPECT_TRUE(Match(q, "Enrolled", {}));
  EXPECT_TRUE(Match(q, "Left", {"x"}));
  EXPECT_FALSE(Match(q, "Opened", {}));
  EXPECT_FALSE(Match(q, "enrolled", {})) << "types are exact";
}

TEST(DcbMatch, TagsOnlyNeedEveryTag) {
  Items q;
  q.Add({}, {"course:c1", "student:s1"});
  EXPECT_TRUE(Match(q, "Any", {"student:s1", "x", "course:c1"}));
  EXPECT_FALSE(Match(q, "Any", {"course:c1"}));
  EXPECT_FALSE(Match(q, "Any", {}));
}

TEST(DcbMatch, TypesAndTagsMustBothMatch) {
  Items q;
  q.Add({"Enrolled"}, {"course:c1"});
  EXPECT_TRUE(Match(q, "Enrolled", {"course:c1"}));
  EXPECT_FALSE(Match(q, "Left", {"course:c1"}));
  EXPECT_FALSE(Match(q, "Enrolled", {"course:c2"}));
}

TEST(DcbMatch, ItemsAreOred) {
  Items q;
  q.Add({"CourseOpened"}, {"course:c1"}).Add({"Enrolled"}, {"student:s1"});
  EXPECT_TRUE(Match(q, "CourseOpened", {"course:c1"}));
  EXPECT_TRUE(Match(q, "Enrolled", {"student:s1", "course:c9"}));
  EXPECT_FALSE(Match(q, "Enrolled", {"course:c1"}));
}

TEST(DcbMatch, AnEmptyItemMatchesEverythingAndNoItemsMatchNothing) {
  Items q;
  q.Add({}, {});
  EXPECT_TRUE(Match(q, "Whatever", {}));
  Items none;
  EXPECT_FALSE(Match(none, "Whatever", {}));
}

TEST(DcbMatch, FilterWithItemsNeedsPrefixTypesAndAnItem) {
  Items q;
  q.Add({}, {"course:c1"});
  const char *types[] = {"Enrolled"};
  es_filter_t f;
  memset(&f, 0, sizeof f);
  f.stream_prefix = "course-";
  f.event_types = types;
  f.event_type_count = 1;
  f.items = q.Build();
  f.item_count = 1;
  const char *tags[] = {"course:c1"};
  EXPECT_TRUE(es_filter_active(&f));
  EXPECT_TRUE(es_filter_match_tags(&f, "course-1", "Enrolled", tags, 1));
  EXPECT_FALSE(es_filter_match_tags(&f, "student-1", "Enrolled", tags, 1));
  EXPECT_FALSE(es_filter_match_tags(&f, "course-1", "Left", tags, 1));
  EXPECT_FALSE(es_filter_match_tags(&f, "course-1", "Enrolled", nullptr, 0));
  // Without items, tags play no part, as before the extension.
  es_filter_t plain;
  memset(&plain, 0, sizeof plain);
  EXPECT_FALSE(es_filter_active(&plain));
  EXPECT_TRUE(es_filter_match_tags(&plain, "x", "y", nullptr, 0));
  es_filter_t items_only;
  memset(&items_only, 0, sizeof items_only);
  items_only.items = f.items;
  items_only.item_count = 1;
  EXPECT_TRUE(es_filter_active(&items_only));
  EXPECT_TRUE(es_filter_match_tags(&items_only, "x", "y", tags, 1));
}

TEST(DcbMatch, TagsCountInThePageSizeBound) {
  es_recorded_t ev;
  memset(&ev, 0, sizeof ev);
  EXPECT_EQ(0u, es_recorded_tags_size(&ev));
  const char *tags[] = {"course:c1", "student:s1"};
  ev.tags = tags;
  ev.tag_count = 2;
  EXPECT_GE(es_recorded_tags_size(&ev), 9u + 10u + 2 * 2);
}

// ---- the decisions ------------------------------------------------------------------

struct Stored {
  std::string stream;
  uint64_t version, position;
  bool first, last, joined_prev, joined_next;
};

// Stored state: ids, streams' last versions and types, and the log's events
// as (position, type, tags) for conditions.
struct Model {
  std::map<std::string, Stored> ids;
  std::map<std::string, std::pair<uint64_t, std::string>> streams;
  struct LogEv {
    std::string type;
    std::vector<std::string> tags;
  };
  std::vector<LogEv> log;  // position p at p - 1
  int matches = 0;

  // One committed request: its appends, in order, each a batch.
  void Commit(const std::vector<std::pair<std::string, std::vector<int>>> &request,
              const std::vector<std::string> &tags = {}) {
    for (size_t a = 0; a < request.size(); a++) {
      auto &st = streams[request[a].first];
      const auto &batch = request[a].second;
      for (size_t i = 0; i < batch.size(); i++) {
        log.push_back({"E", tags});
        ids[Id(batch[i])] = {request[a].first,
                             ++st.first,
                             log.size(),
                             i == 0,
                             i + 1 == batch.size(),
                             i == 0 && a > 0,
                             i + 1 == batch.size() && a + 1 < request.size()};
      }
    }
  }

  static bool Match(void *ctx, const es_append_condition_t *c, uint64_t *pos) {
    auto *m = static_cast<Model *>(ctx);
    m->matches++;
    for (uint64_t p = c->after + 1; p <= m->log.size(); p++) {
      const LogEv &e = m->log[p - 1];
      std::vector<const char *> t;
      for (const auto &s : e.tags) t.push_back(s.c_str());
      if (es_query_match(c->items, c->item_count, e.type.c_str(), t.data(), t.size())) {
        *pos = p;
        return true;
      }
    }
    return false;
  }
};

// The lookup of one append's ids.
struct AppendCtx {
  Model *m;
  std::vector<std::string> ids;
};

bool Lookup(void *ctx, size_t index, es_stored_event_t *out) {
  auto *a = static_cast<AppendCtx *>(ctx);
  auto it = a->m->ids.find(a->ids.at(index));
  if (it == a->m->ids.end()) return false;
  out->stream_id = it->second.stream.c_str();
  out->stream_version = it->second.version;
  out->global_position = it->second.position;
  out->recorded_at_unix_ms = 7;
  out->batch_first = it->second.first;
  out->batch_last = it->second.last;
  out->joined_prev = it->second.joined_prev;
  out->joined_next = it->second.joined_next;
  return true;
}

struct Decision {
  int rc;
  es_append_decision_t decision;
  std::vector<es_append_result_t> results;
  es_err_t err;
};

Decision DecideMany(Model &m, Many &many, const es_append_condition_t *cond = nullptr) {
  es_append_many_req_t req = many.Build(cond);
  std::vector<AppendCtx> ctxs(many.appends.size());
  std::vector<es_append_view_t> views(many.appends.size());
  for (size_t i = 0; i < many.appends.size(); i++) {
    ctxs[i].m = &m;
    for (auto &e : many.appends[i].events) ctxs[i].ids.push_back(e.id);
    for (size_t k = 0; k < req.appends[i].event_count; k++)
      EXPECT_EQ(0, es_uuid_parse(ctxs[i].ids[k].c_str(), many.appends[i].data[k].id));
    auto st = m.streams.find(many.appends[i].stream);
    views[i].last_version = st == m.streams.end() ? 0 : st->second.first;
    views[i].stream_type = st == m.streams.end() ? "" : st->second.second.c_str();
    views[i].lookup = Lookup;
    views[i].ctx = &ctxs[i];
  }
  es_append_many_view_t view = {views.data(), {Model::Match, &m}};
  Decision d;
  d.results.resize(many.appends.size());
  es_err_clear(&d.err);
  d.rc = es_append_many_decide(&req, &view, &d.decision, d.results.data(), &d.err);
  return d;
}

Decision DecideOne(Model &m, Append &a, const es_append_condition_t *cond, bool with_match = true) {
  es_append_req_t req = a.Build(cond);
  AppendCtx ctx{&m, {}};
  for (size_t k = 0; k < a.events.size(); k++) {
    ctx.ids.push_back(a.events[k].id);
    EXPECT_EQ(0, es_uuid_parse(a.events[k].id.c_str(), a.data[k].id));
  }
  auto st = m.streams.find(a.stream);
  es_append_view_t view = {st == m.streams.end() ? 0 : st->second.first,
                           st == m.streams.end() ? "" : st->second.second.c_str(), Lookup, &ctx};
  es_condition_view_t cv = {Model::Match, &m};
  Decision d;
  d.results.resize(1);
  es_err_clear(&d.err);
  d.rc = es_append_decide_conditional(&req, &view, with_match ? &cv : nullptr, &d.decision,
                                      d.results.data(), &d.err);
  return d;
}

TEST(DcbDecide, AConditionWithoutAMatchAfterPasses) {
  Model m;
  m.Commit({{"c-1", {1}}}, {"course:c1"});
  m.Commit({{"c-2", {2}}}, {"course:c2"});
  Items q;
  q.Add({}, {"course:c1"});
  es_append_condition_t cond = {q.Build(), 1, 1};  // after the c1 event
  Append a = Make("c-1", {10});
  Decision d = DecideOne(m, a, &cond);
  ASSERT_EQ(ES_OK, d.rc) << d.err.msg;
  EXPECT_EQ(ES_APPEND_WRITE, d.decision);
  EXPECT_EQ(2u, d.results[0].first_version);
}

TEST(DcbDecide, AConditionWithAMatchAfterFailsNamingThePosition) {
  Model m;
  m.Commit({{"c-2", {1}}}, {"course:c2"});
  m.Commit({{"c-1", {2}}}, {"course:c1"});
  m.Commit({{"c-1", {3}}}, {"course:c1"});
  Items q;
  q.Add({}, {"course:c1"});
  es_append_condition_t cond = {q.Build(), 1, 0};  // the whole log
  Append a = Make("c-1", {10});
  Decision d = DecideOne(m, a, &cond);
  ASSERT_EQ(ES_ECONDITION, d.rc);
  EXPECT_EQ(1, d.err.has_condition_position);
  EXPECT_EQ(2u, d.err.condition_position) << "the first match after `after`";
  EXPECT_NE(std::string(d.err.msg).find("2"), std::string::npos) << d.err.msg;
  EXPECT_EQ(0u, d.results[0].first_version) << "nothing to write";
  cond.after = 2;
  d = DecideOne(m, a, &cond);
  ASSERT_EQ(ES_ECONDITION, d.rc);
  EXPECT_EQ(3u, d.err.condition_position);
  cond.after = 3;
  EXPECT_EQ(ES_OK, DecideOne(m, a, &cond).rc);
}

TEST(DcbDecide, TheConditionIsCheckedLast) {
  Model m;
  m.Commit({{"c-1", {1}}}, {"t"});
  Items q;
  q.Add({}, {"t"});
  es_append_condition_t cond = {q.Build(), 1, 0};
  Append a = Make("c-1", {10});
  a.kind = ES_EXPECT_NO_STREAM;
  m.matches = 0;
  EXPECT_EQ(ES_EVERSION, DecideOne(m, a, &cond).rc);
  EXPECT_EQ(0, m.matches) << "the condition was evaluated before the expected version";
  a.kind = ES_EXPECT_ANY;
  m.streams["c-1"].second = "Course";
  a.type = "Other";
  EXPECT_EQ(ES_ETYPE, DecideOne(m, a, &cond).rc);
  EXPECT_EQ(0, m.matches);
}

TEST(DcbDecide, ADuplicateIsAcknowledgedWhateverTheConditionSays) {
  Model m;
  m.Commit({{"c-1", {1, 2}}}, {"t"});
  Items q;
  q.Add({}, {"t"});
  es_append_condition_t cond = {q.Build(), 1, 0};  // matches the retried events
  Append a = Make("c-1", {1, 2});
  Decision d = DecideOne(m, a, &cond);
  ASSERT_EQ(ES_OK, d.rc) << d.err.msg;
  EXPECT_EQ(ES_APPEND_STORED, d.decision);
  EXPECT_TRUE(d.results[0].duplicate);
  EXPECT_EQ(1u, d.results[0].first_position);
}

TEST(DcbDecide, AConditionWithoutAMatcherIsUnsupported) {
  Model m;
  Items q;
  q.Add({}, {"t"});
  es_append_condition_t cond = {q.Build(), 1, 0};
  Append a = Make("c-1", {10});
  EXPECT_EQ(ES_EUNSUPPORTED, DecideOne(m, a, &cond, false).rc);
  EXPECT_EQ(ES_OK, DecideOne(m, a, nullptr, false).rc) << "no condition, no matcher needed";
}

TEST(DcbDecide, AnAppendOfAMultiAppendRequestIsNotARetryOfIt) {
  Model m;
  m.Commit({{"a", {1}}, {"b", {2}}});
  Append a = Make("a", {1});
  Decision d = DecideOne(m, a, nullptr);
  EXPECT_EQ(ES_EEXIST, d.rc);
  Append b = Make("b", {2});
  EXPECT_EQ(ES_EEXIST, DecideOne(m, b, nullptr).rc);
}

TEST(DcbDecideMany, NewAppendsGetVersionsThatSeeTheEarlierOnes) {
  Model m;
  m.Commit({{"a", {1, 2}}});
  Many many;
  many.appends.push_back(Make("a", {10}));
  many.appends.push_back(Make("b", {11, 12}));
  many.appends.push_back(Make("a", {13}));
  many.appends[2].kind = ES_EXPECT_EXACT;
  many.appends[2].expected = 3;  // 2 stored + 1 from appends[0]
  Decision d = DecideMany(m, many);
  ASSERT_EQ(ES_OK, d.rc) << d.err.msg;
  EXPECT_EQ(ES_APPEND_WRITE, d.decision);
  EXPECT_EQ(3u, d.results[0].first_version);
  EXPECT_EQ(1u, d.results[1].first_version);
  EXPECT_EQ(2u, d.results[1].last_version);
  EXPECT_EQ(4u, d.results[2].first_version);
}

TEST(DcbDecideMany, AFailingExpectedVersionNamesTheAppendAndTheVersionItSaw) {
  Model m;
  m.Commit({{"a", {1}}});
  Many many;
  many.appends.push_back(Make("b", {10}));
  many.appends.push_back(Make("a", {11}));
  many.appends.push_back(Make("a", {12}));
  many.appends[2].kind = ES_EXPECT_EXACT;
  many.appends[2].expected = 1;  // true before the request, not after appends[1]
  Decision d = DecideMany(m, many);
  ASSERT_EQ(ES_EVERSION, d.rc);
  EXPECT_EQ(1, d.err.has_append_index);
  EXPECT_EQ(2u, d.err.append_index);
  EXPECT_EQ(1, d.err.has_actual_version);
  EXPECT_EQ(2u, d.err.actual_version);
  for (const auto &r : d.results) EXPECT_EQ(0u, r.first_version);
}

TEST(DcbDecideMany, StreamTypesStickWithinTheRequest) {
  Model m;
  Many many;
  many.appends.push_back(Make("a", {10}));
  many.appends[0].type = "Course";
  many.appends.push_back(Make("a", {11}));
  many.appends[1].type = "Student";
  Decision d = DecideMany(m, many);
  ASSERT_EQ(ES_ETYPE, d.rc);
  EXPECT_EQ(1u, d.err.append_index);
  many.appends[1].type = "";
  EXPECT_EQ(ES_OK, DecideMany(m, many).rc);
}

TEST(DcbDecideMany, TheConditionIsCheckedOnceLastWithoutAnIndex) {
  Model m;
  m.Commit({{"c", {1}}}, {"course:c1"});
  Items q;
  q.Add({}, {"course:c1"});
  es_append_condition_t cond = {q.Build(), 1, 0};
  Many many;
  many.appends.push_back(Make("a", {10}));
  many.appends.push_back(Make("b", {11}));
  Decision d = DecideMany(m, many, &cond);
  ASSERT_EQ(ES_ECONDITION, d.rc);
  EXPECT_EQ(1u, d.err.condition_position);
  EXPECT_EQ(0, d.err.has_append_index);
  EXPECT_EQ(1, m.matches);
  // A version failure comes first.
  m.matches = 0;
  many.appends[1].kind = ES_EXPECT_STREAM_EXISTS;
  d = DecideMany(m, many, &cond);
  EXPECT_EQ(ES_EVERSION, d.rc);
  EXPECT_EQ(0, m.matches);
  cond.after = 1;
  many.appends[1].kind = ES_EXPECT_ANY;
  EXPECT_EQ(ES_OK, DecideMany(m, many, &cond).rc);
}

TEST(DcbDecideMany, AnExactRetryIsAcknowledgedWhateverItsChecksSay) {
  Model m;
  m.Commit({{"x", {100}}});
  m.Commit({{"a", {1, 2}}, {"b", {3}}, {"a", {4}}}, {"t"});
  Items q;
  q.Add({}, {"t"});
  es_append_condition_t cond = {q.Build(), 1, 0};
  Many many;
  many.appends.push_back(Make("a", {1, 2}));
  many.appends.push_back(Make("b", {3}));
  many.appends.push_back(Make("a", {4}));
  many.appends[1].kind = ES_EXPECT_NO_STREAM;  // false now
  Decision d = DecideMany(m, many, &cond);
  ASSERT_EQ(ES_OK, d.rc) << d.err.msg;
  EXPECT_EQ(ES_APPEND_STORED, d.decision);
  EXPECT_EQ(2u, d.results[0].first_position);
  EXPECT_EQ(3u, d.results[0].last_position);
  EXPECT_EQ(4u, d.results[1].first_position);
  EXPECT_EQ(5u, d.results[2].first_position);
  EXPECT_EQ(3u, d.results[2].first_version);
  for (const auto &r : d.results) EXPECT_TRUE(r.duplicate);
}

TEST(DcbDecideMany, AnAppendManyOfOneAppendIsTheSameRequestAsAnAppend) {
  Model m;
  m.Commit({{"a", {1, 2}}});
  Many many;
  many.appends.push_back(Make("a", {1, 2}));
  Decision d = DecideMany(m, many);
  ASSERT_EQ(ES_OK, d.rc) << d.err.msg;
  EXPECT_EQ(ES_APPEND_STORED, d.decision);
  EXPECT_TRUE(d.results[0].duplicate);
}

TEST(DcbDecideMany, AnythingButTheWholeRequestIsAlreadyExists) {
  Model m;
  m.Commit({{"a", {1}}, {"b", {2}}, {"c", {3}}});
  m.Commit({{"d", {4}}});
  struct Case {
    const char *name;
    std::vector<std::pair<std::string, std::vector<int>>> appends;
    size_t index;  // es-append-index: the first append that reuses an id
    int id;        // the id the message names
  } cases[] = {
      {"a prefix", {{"a", {1}}, {"b", {2}}}, 0, 1},
      {"a suffix", {{"b", {2}}, {"c", {3}}}, 0, 2},
      {"reordered", {{"b", {2}}, {"a", {1}}, {"c", {3}}}, 0, 2},
      {"a superset", {{"a", {1}}, {"b", {2}}, {"c", {3}}, {"e", {9}}}, 0, 1},
      {"new first", {{"e", {9}}, {"a", {1}}, {"b", {2}}, {"c", {3}}}, 1, 1},
      {"two requests as one", {{"c", {3}}, {"d", {4}}}, 0, 3},
      {"mixed ids in one append", {{"a", {1}}, {"b", {9, 2}}, {"c", {3}}}, 0, 1},
      {"another stream", {{"a", {1}}, {"x", {2}}, {"c", {3}}}, 0, 1},
  };
  for (auto &c : cases) {
    Many many;
    for (auto &a : c.appends) many.appends.push_back(Make(a.first, a.second));
    Decision d = DecideMany(m, many);
    EXPECT_EQ(ES_EEXIST, d.rc) << c.name;
    EXPECT_EQ(1, d.err.has_append_index) << c.name;
    EXPECT_EQ(c.index, d.err.append_index) << c.name;
    EXPECT_NE(std::string(d.err.msg).find(Id(c.id)), std::string::npos) << c.name << d.err.msg;
  }
}

// ---- the wrappers refuse what a backend has not declared ------------------------

struct Fake {
  es_backend_t base;
  int appends = 0, reads = 0;
};

int FakeAppend(es_backend_t *b, const es_append_req_t *, es_append_result_t *, es_err_t *) {
  reinterpret_cast<Fake *>(b)->appends++;
  return ES_OK;
}
int FakeReadAll(es_backend_t *b, const es_read_all_req_t *, es_page_t *, es_err_t *) {
  reinterpret_cast<Fake *>(b)->reads++;
  return ES_OK;
}

// A backend named "plain" with the blocking append and ReadAll only.
es_backend_t *InitFake(Fake *fake, es_backend_methods_t *methods) {
  memset(methods, 0, sizeof *methods);
  methods->name = "plain";
  methods->append = FakeAppend;
  methods->read_all = FakeReadAll;
  fake->base.methods = methods;
  fake->base.notifier = nullptr;
  return &fake->base;
}

TEST(DcbCapability, ABackendWithoutTheExtensionRefusesItByName) {
  es_backend_methods_t methods;
  Fake fake;
  es_backend_t *b = InitFake(&fake, &methods);
  es_err_t err;
  es_append_result_t res;

  Append tagged = Make("s", {1, 2});
  tagged.events[1].tags = {"t"};
  es_append_req_t req = tagged.Build();
  EXPECT_EQ(ES_EUNSUPPORTED, es_backend_append(b, &req, &res, &err));
  EXPECT_NE(std::string(err.msg).find("events[1].tags"), std::string::npos) << err.msg;
  EXPECT_NE(std::string(err.msg).find("plain"), std::string::npos) << err.msg;

  Items q;
  q.Add({}, {"t"});
  es_append_condition_t cond = {q.Build(), 1, 0};
  Append plain = Make("s", {1});
  req = plain.Build(&cond);
  EXPECT_EQ(ES_EUNSUPPORTED, es_backend_append(b, &req, &res, &err));
  EXPECT_NE(std::string(err.msg).find("condition"), std::string::npos) << err.msg;

  Many many;
  many.appends.push_back(Make("s", {1}));
  es_append_many_req_t mreq = many.Build();
  EXPECT_EQ(ES_EUNSUPPORTED, es_backend_append_many(b, &mreq, &res, &err));
  EXPECT_NE(std::string(err.msg).find("AppendMany"), std::string::npos) << err.msg;

  es_read_all_req_t read;
  memset(&read, 0, sizeof read);
  read.max_count = 1;
  read.filter.items = q.Build();
  read.filter.item_count = 1;
  es_page_t page;
  EXPECT_EQ(ES_EUNSUPPORTED, es_backend_read_all(b, &read, &page, &err));
  EXPECT_NE(std::string(err.msg).find("filter.items"), std::string::npos) << err.msg;
  EXPECT_EQ(ES_EUNSUPPORTED, es_backend_check_filter(b, &read.filter, "filter.items", &err));
  EXPECT_EQ(0, fake.appends + fake.reads) << "a refused request reached the backend";

  // Declared features pass through.
  methods.features = ES_BACKEND_TAGS | ES_BACKEND_QUERY | ES_BACKEND_CONDITION;
  req = tagged.Build();
  EXPECT_EQ(ES_OK, es_backend_append(b, &req, &res, &err)) << err.msg;
  req = plain.Build(&cond);
  EXPECT_EQ(ES_OK, es_backend_append(b, &req, &res, &err)) << err.msg;
  EXPECT_EQ(ES_OK, es_backend_read_all(b, &read, &page, &err)) << err.msg;
  EXPECT_EQ(3, fake.appends + fake.reads);
}

// es_backend_append_async: the same refusals as the blocking append, ended
// through done before the backend sees the request; on a backend without
// append_async, the blocking append and then done, on the caller's thread;
// on one with it, the backend's own method.
struct Ended {
  int calls = 0, rc = -1;
  static void Done(void *arg, int rc) {
    Ended *e = static_cast<Ended *>(arg);
    e->calls++;
    e->rc = rc;
  }
};

int async_calls = 0;
void FakeAppendAsync(es_backend_t *, const es_append_req_t *, es_append_result_t *out, es_err_t *,
                     es_append_done_fn done, void *arg) {
  async_calls++;
  out->first_position = 42;
  done(arg, ES_OK);
}

TEST(AppendAsync, RefusesLikeTheBlockingAppendAndFallsBackToIt) {
  es_backend_methods_t methods;
  Fake fake;
  es_backend_t *b = InitFake(&fake, &methods);
  es_err_t err;
  es_append_result_t res;
  EXPECT_EQ(0, es_backend_has_append_async(b));

  Append tagged = Make("s", {1});
  tagged.events[0].tags = {"t"};
  es_append_req_t req = tagged.Build();
  Ended refused;
  es_backend_append_async(b, &req, &res, &err, Ended::Done, &refused);
  EXPECT_EQ(1, refused.calls);
  EXPECT_EQ(ES_EUNSUPPORTED, refused.rc);
  EXPECT_NE(std::string(err.msg).find("events[0].tags"), std::string::npos) << err.msg;
  EXPECT_EQ(0, fake.appends);

  Append plain = Make("s", {1});
  req = plain.Build();
  Ended blocking;
  es_backend_append_async(b, &req, &res, &err, Ended::Done, &blocking);
  EXPECT_EQ(1, blocking.calls);
  EXPECT_EQ(ES_OK, blocking.rc) << err.msg;
  EXPECT_EQ(1, fake.appends) << "the blocking append ran";

  methods.append_async = FakeAppendAsync;
  EXPECT_EQ(1, es_backend_has_append_async(b));
  req.event_count = 0;  // not prepared: refused before the backend
  Ended unprepared;
  es_backend_append_async(b, &req, &res, &err, Ended::Done, &unprepared);
  EXPECT_EQ(1, unprepared.calls);
  EXPECT_EQ(ES_EINVAL, unprepared.rc);
  EXPECT_EQ(0, async_calls);
  req = plain.Build();
  Ended own;
  es_backend_append_async(b, &req, &res, &err, Ended::Done, &own);
  EXPECT_EQ(1, own.calls);
  EXPECT_EQ(ES_OK, own.rc);
  EXPECT_EQ(1, async_calls);
  EXPECT_EQ(42u, res.first_position);
  EXPECT_EQ(1, fake.appends) << "the backend's own append_async, not the blocking append";

  // AppendMany: a backend without it refuses it by name, through done.
  Many many;
  many.appends.push_back(Make("s", {1}));
  es_append_many_req_t mreq = many.Build();
  Ended unsupported;
  EXPECT_EQ(0, es_backend_has_append_many_async(b));
  es_backend_append_many_async(b, &mreq, &res, &err, Ended::Done, &unsupported);
  EXPECT_EQ(1, unsupported.calls);
  EXPECT_EQ(ES_EUNSUPPORTED, unsupported.rc);
  EXPECT_NE(std::string(err.msg).find("AppendMany"), std::string::npos) << err.msg;
}

}  // namespace
