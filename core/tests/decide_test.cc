// Tests of the append decision (decide.c) without any backend: the view is a
// small map from event id to what a test says is stored, so every rule of
// API.md details 1 and 2 and its order of checks is pinned here once, for
// every backend that calls es_append_decide.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "es/backend_impl.h"
#include "es/validate.h"

namespace {

struct Stored {
  std::string stream;
  uint64_t version;
  uint64_t position;
  uint64_t recorded_at;
  bool first, last, own;
};

// A model of stored state: ids by their text, one stream's head.
struct Model {
  std::map<std::string, Stored> ids;
  uint64_t last_version = 0;
  std::string stream_type;
  std::vector<std::string> request_ids;  // texts of the request being decided
  size_t lookups = 0;

  // Stores a batch of n events (ids id0..) in `stream` from version v at
  // position p, as one append.
  void StoreBatch(const std::string &stream, const std::vector<std::string> &batch, uint64_t v,
                  uint64_t p, uint64_t at, bool own = false) {
    for (size_t i = 0; i < batch.size(); i++)
      ids[batch[i]] = {stream, v + i, p + i, at, i == 0, i + 1 == batch.size(), own};
  }

  static bool Lookup(void *ctx, size_t index, es_stored_event_t *out) {
    auto *m = static_cast<Model *>(ctx);
    m->lookups++;
    auto it = m->ids.find(m->request_ids.at(index));
    if (it == m->ids.end()) return false;
    out->stream_id = it->second.stream.c_str();
    out->stream_version = it->second.version;
    out->global_position = it->second.position;
    out->recorded_at_unix_ms = it->second.recorded_at;
    out->batch_first = it->second.first;
    out->batch_last = it->second.last;
    out->own_attempt = it->second.own;
    return true;
  }
};

std::string Id(int n) {
  char buf[40];
  snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012d", n);
  return buf;
}

struct Request {
  std::string stream = "order-1";
  std::string type;
  int kind = ES_EXPECT_ANY;
  uint64_t expected = 0;
  std::vector<es_event_data_t> events;

  explicit Request(const std::vector<std::string> &ids) {
    events.resize(ids.size());
    for (size_t i = 0; i < ids.size(); i++) {
      memset(&events[i], 0, sizeof events[i]);
      EXPECT_EQ(ES_OK, es_uuid_parse(ids[i].c_str(), events[i].id)) << ids[i];
    }
  }
  es_append_req_t Req() {
    es_append_req_t r;
    memset(&r, 0, sizeof r);
    r.stream_id = stream.c_str();
    r.stream_type = type.c_str();
    r.expected_kind = kind;
    r.expected_version = expected;
    r.events = events.data();
    r.event_count = events.size();
    return r;
  }
};

struct Outcome {
  int rc;
  es_append_decision_t decision;
  es_append_result_t out;
  es_err_t err;
};

Outcome Decide(Model &m, Request &rq, const std::vector<std::string> &ids) {
  m.request_ids = ids;
  es_append_view_t view = {m.last_version, m.stream_type.c_str(), Model::Lookup, &m};
  Outcome o;
  memset(&o, 0, sizeof o);
  es_err_clear(&o.err);
  es_append_req_t req = rq.Req();
  o.rc = es_append_decide(&req, &view, &o.decision, &o.out, &o.err);
  return o;
}

TEST(Decide, NewEventsOnANewStreamAreWritten) {
  Model m;
  std::vector<std::string> ids = {Id(1), Id(2)};
  Request rq(ids);
  rq.kind = ES_EXPECT_NO_STREAM;
  Outcome o = Decide(m, rq, ids);
  ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
  EXPECT_EQ(ES_APPEND_WRITE, o.decision);
  EXPECT_EQ(1u, o.out.first_version);
  EXPECT_EQ(2u, o.out.last_version);
  EXPECT_FALSE(o.out.duplicate);
  EXPECT_EQ(2u, m.lookups);
}

TEST(Decide, AnExactRetryIsAcknowledgedWithTheOriginalResult) {
  Model m;
  m.StoreBatch("order-1", {Id(1), Id(2), Id(3)}, 4, 40, 1234);
  m.last_version = 9;
  std::vector<std::string> ids = {Id(1), Id(2), Id(3)};
  Request rq(ids);
  rq.kind = ES_EXPECT_NO_STREAM;  // expectations of a retry do not matter
  rq.type = "SomethingElse";
  m.stream_type = "Order";
  Outcome o = Decide(m, rq, ids);
  ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
  EXPECT_EQ(ES_APPEND_STORED, o.decision);
  EXPECT_TRUE(o.out.duplicate);
  EXPECT_EQ(4u, o.out.first_version);
  EXPECT_EQ(6u, o.out.last_version);
  EXPECT_EQ(40u, o.out.first_position);
  EXPECT_EQ(42u, o.out.last_position);
  EXPECT_EQ(1234u, o.out.recorded_at_unix_ms);
}

TEST(Decide, ARetryOfTheRequestsOwnEarlierAttemptIsTheOriginal) {
  // The earlier attempt committed but its outcome was lost: the retry of the
  // same call must not call its own first-time commit a duplicate.
  Model m;
  m.StoreBatch("order-1", {Id(1), Id(2)}, 1, 7, 99, /*own=*/true);
  m.last_version = 2;
  std::vector<std::string> ids = {Id(1), Id(2)};
  Request rq(ids);
  Outcome o = Decide(m, rq, ids);
  ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
  EXPECT_EQ(ES_APPEND_STORED, o.decision);
  EXPECT_FALSE(o.out.duplicate);
  EXPECT_EQ(7u, o.out.first_position);
  EXPECT_EQ(99u, o.out.recorded_at_unix_ms);
}

TEST(Decide, EveryOtherReuseIsAlreadyExistsNamingTheFirstReusedId) {
  Model m;
  m.StoreBatch("order-1", {Id(1), Id(2), Id(3)}, 1, 1, 5);
  m.StoreBatch("order-2", {Id(7)}, 1, 4, 5);
  m.last_version = 3;
  struct Case {
    const char *what;
    std::vector<std::string> ids;
    std::string stream;
    size_t first_reused;
  } cases[] = {
      {"a prefix", {Id(1), Id(2)}, "order-1", 0},
      {"a suffix", {Id(2), Id(3)}, "order-1", 0},
      {"a reordering", {Id(1), Id(3), Id(2)}, "order-1", 0},
      {"a superset", {Id(1), Id(2), Id(3), Id(4)}, "order-1", 0},
      {"new then old", {Id(5), Id(1), Id(2), Id(3)}, "order-1", 1},
      {"old then new", {Id(1), Id(2), Id(3), Id(6)}, "order-1", 0},
      {"the same batch in another stream", {Id(1), Id(2), Id(3)}, "order-9", 0},
      {"two batches joined", {Id(3), Id(7)}, "order-1", 0},
      {"another stream's id", {Id(8), Id(7)}, "order-2", 1},
  };
  for (auto &c : cases) {
    Request rq(c.ids);
    rq.stream = c.stream;
    Outcome o = Decide(m, rq, c.ids);
    EXPECT_EQ(ES_EEXIST, o.rc) << c.what;
    EXPECT_NE(nullptr, strstr(o.err.msg, c.ids[c.first_reused].c_str()))
        << c.what << ": " << o.err.msg;
    char idx[32];
    snprintf(idx, sizeof idx, "events[%zu]", c.first_reused);
    EXPECT_NE(nullptr, strstr(o.err.msg, idx)) << c.what << ": " << o.err.msg;
    EXPECT_EQ(0u, o.out.first_version) << c.what;  // out zeroed on failure
  }
}

TEST(Decide, ABatchEndingEarlierIsNotARetry) {
  // Two stored appends {1,2} and {3}: the request {1,2,3} spans a batch end.
  Model m;
  m.StoreBatch("s", {Id(1), Id(2)}, 1, 1, 5);
  m.StoreBatch("s", {Id(3)}, 3, 3, 6);
  std::vector<std::string> ids = {Id(1), Id(2), Id(3)};
  Request rq(ids);
  rq.stream = "s";
  EXPECT_EQ(ES_EEXIST, Decide(m, rq, ids).rc);
}

TEST(Decide, StreamTypeIsCheckedAfterIdempotencyAndBeforeTheVersion) {
  Model m;
  m.last_version = 2;
  m.stream_type = "Order";
  std::vector<std::string> ids = {Id(1)};
  Request rq(ids);
  rq.type = "Invoice";
  rq.kind = ES_EXPECT_NO_STREAM;  // would fail too: the type is named first
  Outcome o = Decide(m, rq, ids);
  EXPECT_EQ(ES_ETYPE, o.rc);
  EXPECT_NE(nullptr, strstr(o.err.msg, "'Order'")) << o.err.msg;
  EXPECT_NE(nullptr, strstr(o.err.msg, "'Invoice'")) << o.err.msg;

  rq.type = "";  // no opinion
  EXPECT_EQ(ES_EVERSION, Decide(m, rq, ids).rc);
  rq.type = "Order";
  EXPECT_EQ(ES_EVERSION, Decide(m, rq, ids).rc);
  m.stream_type = "";  // the stream has none yet: any type may be set
  rq.type = "Invoice";
  rq.kind = ES_EXPECT_ANY;
  EXPECT_EQ(ES_OK, Decide(m, rq, ids).rc);
}

TEST(Decide, IdempotencyComesBeforeTheStreamType) {
  Model m;
  m.StoreBatch("order-1", {Id(1)}, 1, 1, 5);
  m.last_version = 1;
  m.stream_type = "Order";
  std::vector<std::string> ids = {Id(1), Id(2)};
  Request rq(ids);
  rq.type = "Invoice";
  EXPECT_EQ(ES_EEXIST, Decide(m, rq, ids).rc);
}

TEST(Decide, ExpectedVersions) {
  struct Case {
    int kind;
    uint64_t expected, last;
    int rc;
  } cases[] = {
      {ES_EXPECT_ANY, 0, 0, ES_OK},
      {ES_EXPECT_ANY, 77, 5, ES_OK},
      {ES_EXPECT_NO_STREAM, 0, 0, ES_OK},
      {ES_EXPECT_NO_STREAM, 0, 1, ES_EVERSION},
      {ES_EXPECT_STREAM_EXISTS, 0, 0, ES_EVERSION},
      {ES_EXPECT_STREAM_EXISTS, 0, 3, ES_OK},
      {ES_EXPECT_EXACT, 3, 3, ES_OK},
      {ES_EXPECT_EXACT, 2, 3, ES_EVERSION},
      {ES_EXPECT_EXACT, 0, 0, ES_OK},
      {ES_EXPECT_EXACT, 0, 1, ES_EVERSION},
      {17, 0, 0, ES_EINVAL},
  };
  for (const auto &c : cases) {
    Model m;
    m.last_version = c.last;
    std::vector<std::string> ids = {Id(1)};
    Request rq(ids);
    rq.kind = c.kind;
    rq.expected = c.expected;
    Outcome o = Decide(m, rq, ids);
    EXPECT_EQ(c.rc, o.rc) << "kind " << c.kind << " expected " << c.expected << " last " << c.last;
    if (c.rc == ES_EVERSION) {
      EXPECT_EQ(1, o.err.has_actual_version);
      EXPECT_EQ(c.last, o.err.actual_version);
      EXPECT_NE(nullptr, strstr(o.err.msg, "actual version")) << o.err.msg;
    }
    if (c.rc == ES_OK) {
      EXPECT_EQ(c.last + 1, o.out.first_version);
      EXPECT_EQ(ES_APPEND_WRITE, o.decision);
    }
  }
}

TEST(Decide, ARequestThatReusesNoIdNeedsNoLookupView) {
  Model m;
  m.last_version = 4;
  std::vector<std::string> ids = {Id(1)};
  Request rq(ids);
  rq.kind = ES_EXPECT_EXACT;
  rq.expected = 4;
  es_append_view_t view = {4, "", nullptr, nullptr};
  es_append_req_t req = rq.Req();
  es_append_decision_t d;
  es_append_result_t out;
  es_err_t err;
  es_err_clear(&err);
  ASSERT_EQ(ES_OK, es_append_decide(&req, &view, &d, &out, &err));
  EXPECT_EQ(5u, out.first_version);
}

TEST(Decide, StopsLookingUpOnceTheAnswerIsKnown) {
  Model m;
  m.StoreBatch("x", {Id(2)}, 1, 1, 5);
  std::vector<std::string> ids = {Id(1), Id(2), Id(3), Id(4)};
  Request rq(ids);
  EXPECT_EQ(ES_EEXIST, Decide(m, rq, ids).rc);
  EXPECT_EQ(2u, m.lookups);  // ids[1] is stored and ids[0] was not: no retry is possible
}

TEST(Decide, AnUnpreparedRequestIsRefused) {
  Model m;
  std::vector<std::string> ids;
  Request rq(ids);
  EXPECT_EQ(ES_EINVAL, Decide(m, rq, ids).rc);
}

}  // namespace
