// The backend conformance suite: the semantics of API.md, checked the same way
// against every backend of backends.cc.
//
// Requests go through the core prepare functions with the default limits
// (es_limits_default), exactly as the server sends them, so a backend is only
// ever tested on inputs it can really see. Each test gets a fresh store.
//
// What is covered, in the order of the file: expected versions (and the
// actual version reported on failure), atomicity and gap-free positions,
// idempotency (exact retries against every kind of near miss), stream types,
// field round trips, every paging edge of ReadStream and ReadAll in both
// directions, filters with a bounded scan, byte-trimmed pages, a randomized
// operation sequence checked against a model written with std::map, and
// concurrency: racing EXACT appends, writers with live readers, and the
// notifier's view of the head.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backends.h"
#include "es/backend.h"
#include "es/event.h"
#include "es/notifier.h"
#include "es/validate.h"

namespace {

// A lowercase UUID that is a pure function of n (tests need to know ids).
std::string Uuid(uint64_t n) {
  char buf[ES_UUID_STR_LEN + 1];
  std::snprintf(buf, sizeof buf, "00000000-0000-4000-8000-%012llx",
                static_cast<unsigned long long>(n & 0xffffffffffffULL));
  return buf;
}

// An event to append; strings are copied into the C request at append time.
struct Ev {
  std::string id;  // "" = the server assigns one
  std::string type = "E";
  std::string payload;
  std::string content_type;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::string correlation_id;
  std::string causation_id;
  uint32_t event_version = 0;
  uint64_t occurred_at = 0;
};

struct AppendOutcome {
  int rc = ES_OK;
  es_append_result_t res{};
  es_err_t err{};
};

// A recorded event copied out of a page (so that pages are freed at once).
struct Rec {
  std::string stream_id, stream_type, event_id, event_type, content_type, payload;
  std::string correlation_id, causation_id;
  std::map<std::string, std::string> metadata;
  uint64_t version = 0, position = 0, occurred_at = 0, recorded_at = 0;
  uint32_t event_version = 0;
  size_t size_bound = 0;  // es_recorded_size_bound of the view
};

struct PageCopy {
  int rc = ES_OK;
  es_err_t err{};
  std::vector<Rec> events;
  uint64_t next = 0;
  bool is_end = false;
  uint64_t last = 0;
  size_t max_bytes = 0;  // the budget the prepared request carried
};

std::string Str(const char *s) {
  return s ? s : "";
}

void CopyPage(const es_page_t &page, PageCopy *out) {
  for (size_t i = 0; i < page.count; i++) {
    const es_recorded_t &v = page.events[i];
    Rec r;
    r.stream_id = Str(v.stream_id);
    r.stream_type = Str(v.stream_type);
    r.event_id = v.event_id;
    r.event_type = Str(v.event_type);
    r.content_type = Str(v.content_type);
    r.payload.assign(reinterpret_cast<const char *>(v.payload), v.payload_len);
    r.correlation_id = Str(v.correlation_id);
    r.causation_id = Str(v.causation_id);
    for (size_t k = 0; k < v.metadata_count; k++)
      r.metadata[Str(v.metadata[k].key)] = Str(v.metadata[k].value);
    r.version = v.stream_version;
    r.position = v.global_position;
    r.occurred_at = v.occurred_at_unix_ms;
    r.recorded_at = v.recorded_at_unix_ms;
    r.event_version = v.event_version;
    r.size_bound = es_recorded_size_bound(&v);
    out->events.push_back(std::move(r));
  }
  out->next = page.next;
  out->is_end = page.is_end;
  out->last = page.last;
}

// Prepares and appends, as the server does. A request the prepare step
// rejects is a bug of the test.
AppendOutcome DoAppend(es_backend_t *b, const es_limits_t &limits, const std::string &stream,
                       int kind, uint64_t expected, const std::vector<Ev> &evs,
                       const std::string &stream_type = "") {
  std::vector<std::vector<es_kv_t>> kvs(evs.size());
  std::vector<es_event_data_t> data(evs.size());
  for (size_t i = 0; i < evs.size(); i++) {
    const Ev &e = evs[i];
    for (const auto &kv : e.metadata) kvs[i].push_back({kv.first.c_str(), kv.second.c_str()});
    es_event_data_t &d = data[i];
    std::memset(&d, 0, sizeof d);
    d.event_id = e.id.c_str();
    d.event_type = e.type.c_str();
    d.event_version = e.event_version;
    d.content_type = e.content_type.c_str();
    d.payload = reinterpret_cast<const uint8_t *>(e.payload.data());
    d.payload_len = e.payload.size();
    d.metadata = kvs[i].empty() ? nullptr : kvs[i].data();
    d.metadata_count = kvs[i].size();
    d.correlation_id = e.correlation_id.c_str();
    d.causation_id = e.causation_id.c_str();
    d.occurred_at_unix_ms = e.occurred_at;
  }
  es_append_req_t req;
  std::memset(&req, 0, sizeof req);
  req.stream_id = stream.c_str();
  req.stream_type = stream_type.c_str();
  req.expected_kind = kind;
  req.expected_version = expected;
  req.events = data.data();
  req.event_count = data.size();
  AppendOutcome o;
  o.rc = es_append_prepare(&limits, &req, &o.err);
  if (o.rc != ES_OK) {
    ADD_FAILURE() << "es_append_prepare: " << o.err.msg;
    return o;
  }
  o.rc = es_backend_append(b, &req, &o.res, &o.err);
  return o;
}

PageCopy DoReadStream(es_backend_t *b, const es_limits_t &limits, const std::string &stream,
                      uint64_t from, uint32_t max_count, int direction) {
  es_read_stream_req_t req;
  std::memset(&req, 0, sizeof req);
  req.stream_id = stream.c_str();
  req.from_version = from;
  req.max_count = max_count;
  req.direction = direction;
  PageCopy out;
  out.rc = es_read_stream_prepare(&limits, &req, &out.err);
  if (out.rc != ES_OK) {
    ADD_FAILURE() << "es_read_stream_prepare: " << out.err.msg;
    return out;
  }
  out.max_bytes = req.max_bytes;
  es_page_t page;
  std::memset(&page, 0, sizeof page);
  out.rc = es_backend_read_stream(b, &req, &page, &out.err);
  if (out.rc == ES_OK) CopyPage(page, &out);
  es_page_free(&page);
  return out;
}

PageCopy DoReadAll(es_backend_t *b, const es_limits_t &limits, uint64_t from, uint32_t max_count,
                   int direction, const std::string &prefix = "",
                   const std::vector<std::string> &types = {}) {
  std::vector<const char *> type_ptrs;
  for (const auto &t : types) type_ptrs.push_back(t.c_str());
  es_read_all_req_t req;
  std::memset(&req, 0, sizeof req);
  req.from_position = from;
  req.max_count = max_count;
  req.direction = direction;
  req.filter.stream_prefix = prefix.c_str();
  req.filter.event_types = type_ptrs.empty() ? nullptr : type_ptrs.data();
  req.filter.event_type_count = type_ptrs.size();
  PageCopy out;
  out.rc = es_read_all_prepare(&limits, &req, &out.err);
  if (out.rc != ES_OK) {
    ADD_FAILURE() << "es_read_all_prepare: " << out.err.msg;
    return out;
  }
  out.max_bytes = req.max_bytes;
  es_page_t page;
  std::memset(&page, 0, sizeof page);
  out.rc = es_backend_read_all(b, &req, &page, &out.err);
  if (out.rc == ES_OK) CopyPage(page, &out);
  es_page_free(&page);
  return out;
}

std::vector<uint64_t> Positions(const PageCopy &p) {
  std::vector<uint64_t> v;
  for (const auto &e : p.events) v.push_back(e.position);
  return v;
}

std::vector<uint64_t> Versions(const PageCopy &p) {
  std::vector<uint64_t> v;
  for (const auto &e : p.events) v.push_back(e.version);
  return v;
}

bool Contains(const char *haystack, const std::string &needle) {
  return std::string(haystack).find(needle) != std::string::npos;
}

#define EXPECT_OK(o) EXPECT_EQ(ES_OK, (o).rc) << es_errname((o).rc) << ": " << (o).err.msg
#define ASSERT_OK(o) ASSERT_EQ(ES_OK, (o).rc) << es_errname((o).rc) << ": " << (o).err.msg
#define EXPECT_CODE(code, o) \
  EXPECT_EQ((code), (o).rc) << "got " << es_errname((o).rc) << ": " << (o).err.msg

class Conformance : public ::testing::TestWithParam<BackendFactory> {
 protected:
  void SetUp() override {
    es_limits_default(&limits_);
    es_err_t err{};
    ASSERT_EQ(ES_OK, GetParam().open(&b_, &err)) << err.msg;
    ASSERT_NE(nullptr, b_);
  }
  void TearDown() override {
    if (b_) GetParam().close(b_);
  }

  AppendOutcome Append(const std::string &stream, int kind, uint64_t expected,
                       const std::vector<Ev> &evs, const std::string &stream_type = "") {
    return DoAppend(b_, limits_, stream, kind, expected, evs, stream_type);
  }
  PageCopy ReadStream(const std::string &stream, uint64_t from, uint32_t max_count,
                      int direction = ES_FORWARD) {
    return DoReadStream(b_, limits_, stream, from, max_count, direction);
  }
  PageCopy ReadAll(uint64_t from, uint32_t max_count, int direction = ES_FORWARD,
                   const std::string &prefix = "", const std::vector<std::string> &types = {}) {
    return DoReadAll(b_, limits_, from, max_count, direction, prefix, types);
  }
  uint64_t Head() {
    uint64_t head = ~0ULL;
    es_err_t err{};
    EXPECT_EQ(ES_OK, es_backend_head(b_, &head, &err)) << err.msg;
    return head;
  }
  // n events with fresh ids (and the given type).
  std::vector<Ev> Fresh(size_t n, const std::string &type = "E") {
    std::vector<Ev> evs(n);
    for (auto &e : evs) {
      e.id = Uuid(next_id_++);
      e.type = type;
      e.payload = "payload of " + e.id;
    }
    return evs;
  }
  // Appends n fresh events with ANY and checks success.
  es_append_result_t AppendFresh(const std::string &stream, size_t n,
                                 const std::string &type = "E") {
    AppendOutcome o = Append(stream, ES_EXPECT_ANY, 0, Fresh(n, type));
    EXPECT_OK(o);
    return o.res;
  }
  // Every event of the log, read forward in pages.
  std::vector<Rec> WholeLog() {
    std::vector<Rec> all;
    uint64_t from = 1;
    for (int guard = 0; guard < 100000; guard++) {
      PageCopy p = ReadAll(from, 1000);
      EXPECT_OK(p);
      if (p.rc != ES_OK) break;
      all.insert(all.end(), p.events.begin(), p.events.end());
      from = p.next;
      if (p.is_end) break;
    }
    return all;
  }

  // -- Idempotency: batch_ (3 events) was committed to "s" (type "Order") at
  // positions 2..4, then "s" and the log moved on.
  void CommitBatchToRetry() {
    AppendFresh("other", 1);
    batch_ = Fresh(3);
    AppendOutcome o = Append("s", ES_EXPECT_NO_STREAM, 0, batch_, "Order");
    ASSERT_OK(o);
    original_ = o.res;
    AppendFresh("s", 2);
    AppendFresh("other", 1);
    head_ = Head();
    // A fresh commit now would get a later recorded_at.
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  void ExpectOriginal(const AppendOutcome &o) {
    ASSERT_OK(o);
    EXPECT_TRUE(o.res.duplicate);
    EXPECT_EQ(original_.first_version, o.res.first_version);
    EXPECT_EQ(original_.last_version, o.res.last_version);
    EXPECT_EQ(original_.first_position, o.res.first_position);
    EXPECT_EQ(original_.last_position, o.res.last_position);
    EXPECT_EQ(original_.recorded_at_unix_ms, o.res.recorded_at_unix_ms);
    EXPECT_EQ(head_, Head());
  }
  void ExpectExists(const AppendOutcome &o, const std::string &id) {
    EXPECT_CODE(ES_EEXIST, o);
    EXPECT_TRUE(Contains(o.err.msg, id)) << "message should name " << id << ": " << o.err.msg;
    EXPECT_FALSE(o.res.duplicate);
    EXPECT_EQ(head_, Head());
  }

  // -- ReadStream edges: "s" has versions 1..5 at positions 2, 3, 5, 6, 8,
  // interleaved with "x".
  void AppendInterleavedStream() {
    AppendFresh("x", 1);
    AppendFresh("s", 2);
    AppendFresh("x", 1);
    AppendFresh("s", 2);
    AppendFresh("x", 1);
    AppendFresh("s", 1);
  }
  void ExpectStreamPage(const PageCopy &p, const std::vector<uint64_t> &versions, uint64_t next,
                        bool is_end) {
    ASSERT_OK(p);
    EXPECT_EQ(versions, Versions(p));
    EXPECT_EQ(next, p.next);
    EXPECT_EQ(is_end, p.is_end);
    EXPECT_EQ(5u, p.last);
    static const uint64_t kPos[] = {0, 2, 3, 5, 6, 8};
    for (const auto &e : p.events) {
      EXPECT_EQ("s", e.stream_id);
      ASSERT_LE(e.version, 5u);
      EXPECT_EQ(kPos[e.version], e.position) << "version " << e.version;
    }
  }

  // -- ReadAll edges: positions 1..7 over three streams.
  void AppendSevenEvents() {
    AppendFresh("a", 2);
    AppendFresh("b", 3);
    AppendFresh("a", 1);
    AppendFresh("c", 1);
  }
  void ExpectAllPage(const PageCopy &p, const std::vector<uint64_t> &positions, uint64_t next,
                     bool is_end) {
    ASSERT_OK(p);
    EXPECT_EQ(positions, Positions(p));
    EXPECT_EQ(next, p.next);
    EXPECT_EQ(is_end, p.is_end);
    EXPECT_EQ(7u, p.last);
  }

  // -- Filters: 1 order-1 Created, 2 cust-1 Created, 3 order-2 Created,
  // 4 order-1 Paid, 5 cust-1 Paid, 6 order-2 Shipped, 7 orderx Paid.
  void AppendFilterFixture() {
    AppendFresh("order-1", 1, "Created");
    AppendFresh("cust-1", 1, "Created");
    AppendFresh("order-2", 1, "Created");
    AppendFresh("order-1", 1, "Paid");
    AppendFresh("cust-1", 1, "Paid");
    AppendFresh("order-2", 1, "Shipped");
    AppendFresh("orderx", 1, "Paid");
  }
  // All matching positions, paging with max_count in direction dir.
  std::vector<uint64_t> CollectFiltered(int dir, uint32_t max_count, const std::string &prefix,
                                        const std::vector<std::string> &types) {
    std::vector<uint64_t> got;
    uint64_t from = 0;
    for (int guard = 0; guard < 100; guard++) {
      PageCopy p = ReadAll(from, max_count, dir, prefix, types);
      EXPECT_OK(p);
      if (p.rc != ES_OK) break;
      EXPECT_LE(p.events.size(), max_count);
      for (const auto &e : p.events) {
        if (!prefix.empty()) EXPECT_EQ(0u, e.stream_id.rfind(prefix, 0)) << e.stream_id;
        if (!types.empty())
          EXPECT_NE(types.end(), std::find(types.begin(), types.end(), e.event_type));
      }
      std::vector<uint64_t> pos = Positions(p);
      got.insert(got.end(), pos.begin(), pos.end());
      if (p.is_end) return got;
      from = p.next;
    }
    ADD_FAILURE() << "no end";
    return got;
  }

  es_backend_t *b_ = nullptr;
  es_limits_t limits_;
  uint64_t next_id_ = 1;
  std::vector<Ev> batch_;          // CommitBatchToRetry
  es_append_result_t original_{};  // its result
  uint64_t head_ = 0;              // the head after it
};

// ---- requests that skipped the core's prepare functions ---------------------

// The es_backend_* wrappers refuse what validation never lets through, so
// that no backend has to repeat those checks (and none reads garbage).
TEST_P(Conformance, WrappersRefuseUnpreparedRequests) {
  es_err_t err;
  es_append_result_t res;
  es_append_req_t none;
  memset(&none, 0, sizeof none);
  none.stream_id = "s";
  EXPECT_EQ(ES_EINVAL, es_backend_append(b_, &none, &res, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "not prepared")) << err.msg;

  es_read_stream_req_t rs;
  memset(&rs, 0, sizeof rs);
  rs.stream_id = "s";
  es_page_t page;
  EXPECT_EQ(ES_EINVAL, es_backend_read_stream(b_, &rs, &page, &err));  // max_count 0
  EXPECT_NE(nullptr, strstr(err.msg, "max_count")) << err.msg;
  rs.max_count = 10;
  rs.direction = 7;
  EXPECT_EQ(ES_EINVAL, es_backend_read_stream(b_, &rs, &page, &err));
  EXPECT_NE(nullptr, strstr(err.msg, "direction")) << err.msg;
  es_page_free(&page);

  es_read_all_req_t ra;
  memset(&ra, 0, sizeof ra);
  EXPECT_EQ(ES_EINVAL, es_backend_read_all(b_, &ra, &page, &err));
  ra.max_count = 10;
  ra.direction = -1;
  EXPECT_EQ(ES_EINVAL, es_backend_read_all(b_, &ra, &page, &err));
  es_page_free(&page);

  uint64_t head = 99;
  ASSERT_EQ(ES_OK, es_backend_head(b_, &head, &err));
  EXPECT_EQ(0u, head);  // nothing was stored
}

// ---- expected versions ----------------------------------------------------

TEST_P(Conformance, ExpectedAnyCreatesAndExtends) {
  AppendOutcome o = Append("s", ES_EXPECT_ANY, 0, Fresh(2));
  ASSERT_OK(o);
  EXPECT_EQ(1u, o.res.first_version);
  EXPECT_EQ(2u, o.res.last_version);
  EXPECT_EQ(1u, o.res.first_position);
  EXPECT_EQ(2u, o.res.last_position);
  EXPECT_FALSE(o.res.duplicate);
  o = Append("s", ES_EXPECT_ANY, 0, Fresh(3));
  ASSERT_OK(o);
  EXPECT_EQ(3u, o.res.first_version);
  EXPECT_EQ(5u, o.res.last_version);
  EXPECT_EQ(3u, o.res.first_position);
  EXPECT_EQ(5u, o.res.last_position);
}

TEST_P(Conformance, ExpectedNoStream) {
  ASSERT_OK(Append("s", ES_EXPECT_NO_STREAM, 0, Fresh(1)));
  AppendOutcome o = Append("s", ES_EXPECT_NO_STREAM, 0, Fresh(1));
  EXPECT_CODE(ES_EVERSION, o);
  EXPECT_EQ(1, o.err.has_actual_version);
  EXPECT_EQ(1u, o.err.actual_version);
  EXPECT_EQ(ES_EVERSION, o.err.code);
  EXPECT_TRUE(Contains(o.err.msg, "1")) << o.err.msg;
  EXPECT_FALSE(o.res.duplicate);
  EXPECT_EQ(0u, o.res.last_position);
}

TEST_P(Conformance, ExpectedStreamExists) {
  AppendOutcome o = Append("s", ES_EXPECT_STREAM_EXISTS, 0, Fresh(1));
  EXPECT_CODE(ES_EVERSION, o);
  EXPECT_EQ(1, o.err.has_actual_version);
  EXPECT_EQ(0u, o.err.actual_version);
  EXPECT_EQ(ES_ENOTFOUND, ReadStream("s", 0, 10).rc);
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 0, Fresh(2)));
  o = Append("s", ES_EXPECT_STREAM_EXISTS, 0, Fresh(1));
  ASSERT_OK(o);
  EXPECT_EQ(3u, o.res.first_version);
}

TEST_P(Conformance, ExpectedExact) {
  // EXACT 0 is NO_STREAM.
  AppendOutcome o = Append("s", ES_EXPECT_EXACT, 0, Fresh(2));
  ASSERT_OK(o);
  EXPECT_EQ(2u, o.res.last_version);
  o = Append("s", ES_EXPECT_EXACT, 0, Fresh(1));
  EXPECT_CODE(ES_EVERSION, o);
  EXPECT_EQ(1, o.err.has_actual_version);
  EXPECT_EQ(2u, o.err.actual_version);
  // The right version passes.
  o = Append("s", ES_EXPECT_EXACT, 2, Fresh(1));
  ASSERT_OK(o);
  EXPECT_EQ(3u, o.res.first_version);
  // Ahead and behind both fail, naming expected and actual.
  o = Append("s", ES_EXPECT_EXACT, 57, Fresh(1));
  EXPECT_CODE(ES_EVERSION, o);
  EXPECT_EQ(3u, o.err.actual_version);
  EXPECT_TRUE(Contains(o.err.msg, "57")) << o.err.msg;
  EXPECT_TRUE(Contains(o.err.msg, "3")) << o.err.msg;
  o = Append("s", ES_EXPECT_EXACT, 2, Fresh(1));
  EXPECT_CODE(ES_EVERSION, o);
  EXPECT_EQ(3u, o.err.actual_version);
  // EXACT n on a stream that does not exist: actual 0.
  o = Append("other", ES_EXPECT_EXACT, 1, Fresh(1));
  EXPECT_CODE(ES_EVERSION, o);
  EXPECT_EQ(1, o.err.has_actual_version);
  EXPECT_EQ(0u, o.err.actual_version);
  EXPECT_EQ(3u, Head());
}

TEST_P(Conformance, ExpectedVersionIgnoredUnlessExact) {
  ASSERT_OK(Append("s", ES_EXPECT_NO_STREAM, 42, Fresh(1)));
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 42, Fresh(1)));
  ASSERT_OK(Append("s", ES_EXPECT_STREAM_EXISTS, 0, Fresh(1)));
  EXPECT_EQ(3u, ReadStream("s", 0, 10).last);
}

// ---- atomicity and positions ------------------------------------------------

TEST_P(Conformance, FailedVersionCheckWritesNothing) {
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 0, Fresh(1)));
  std::vector<Ev> batch = Fresh(3);
  EXPECT_CODE(ES_EVERSION, Append("s", ES_EXPECT_EXACT, 7, batch));
  EXPECT_EQ(1u, Head());
  EXPECT_EQ(1u, ReadStream("s", 0, 10).events.size());
  // The ids of the failed batch were not taken.
  AppendOutcome o = Append("s", ES_EXPECT_EXACT, 1, batch);
  ASSERT_OK(o);
  EXPECT_FALSE(o.res.duplicate);
  EXPECT_EQ(2u, o.res.first_position);
}

TEST_P(Conformance, ReusedIdFailsTheWholeBatch) {
  std::vector<Ev> taken = Fresh(1);
  ASSERT_OK(Append("a", ES_EXPECT_ANY, 0, taken));
  std::vector<Ev> batch = Fresh(2);
  batch.push_back(taken[0]);  // the last event reuses an id
  EXPECT_CODE(ES_EEXIST, Append("b", ES_EXPECT_ANY, 0, batch));
  EXPECT_EQ(1u, Head());
  EXPECT_EQ(ES_ENOTFOUND, ReadStream("b", 0, 10).rc);
  batch.pop_back();
  AppendOutcome o = Append("b", ES_EXPECT_NO_STREAM, 0, batch);
  ASSERT_OK(o);
  EXPECT_EQ(2u, o.res.first_position);
  EXPECT_EQ(3u, o.res.last_position);
}

TEST_P(Conformance, PositionsStayGapFreeAcrossFailures) {
  ASSERT_OK(Append("a", ES_EXPECT_NO_STREAM, 0, Fresh(2)));
  EXPECT_CODE(ES_EVERSION, Append("a", ES_EXPECT_NO_STREAM, 0, Fresh(5)));
  ASSERT_OK(Append("b", ES_EXPECT_ANY, 0, Fresh(1), "T"));
  EXPECT_CODE(ES_ETYPE, Append("b", ES_EXPECT_ANY, 0, Fresh(4), "U"));
  EXPECT_CODE(ES_EVERSION, Append("c", ES_EXPECT_STREAM_EXISTS, 0, Fresh(2)));
  AppendOutcome o = Append("a", ES_EXPECT_EXACT, 2, Fresh(3));
  ASSERT_OK(o);
  EXPECT_EQ(4u, o.res.first_position);
  EXPECT_EQ(6u, o.res.last_position);
  std::vector<Rec> log = WholeLog();
  ASSERT_EQ(6u, log.size());
  for (size_t i = 0; i < log.size(); i++) EXPECT_EQ(i + 1, log[i].position);
  EXPECT_EQ(6u, Head());
}

TEST_P(Conformance, BatchGetsConsecutiveVersionsAndPositions) {
  AppendFresh("x", 2);
  AppendOutcome o = Append("s", ES_EXPECT_ANY, 0, Fresh(5));
  ASSERT_OK(o);
  EXPECT_EQ(1u, o.res.first_version);
  EXPECT_EQ(5u, o.res.last_version);
  EXPECT_EQ(3u, o.res.first_position);
  EXPECT_EQ(7u, o.res.last_position);
  PageCopy p = ReadStream("s", 1, 10);
  ASSERT_OK(p);
  EXPECT_EQ((std::vector<uint64_t>{1, 2, 3, 4, 5}), Versions(p));
  EXPECT_EQ((std::vector<uint64_t>{3, 4, 5, 6, 7}), Positions(p));
  for (const auto &e : p.events) EXPECT_EQ(o.res.recorded_at_unix_ms, e.recorded_at);
}

// ---- idempotency -------------------------------------------------------------

TEST_P(Conformance, IdempotencyExactRetryIsAcknowledgedWithTheOriginalResult) {
  CommitBatchToRetry();
  EXPECT_EQ(2u, original_.first_position);
  EXPECT_EQ(4u, original_.last_position);
  ExpectOriginal(Append("s", ES_EXPECT_NO_STREAM, 0, batch_, "Order"));
  ExpectOriginal(Append("s", ES_EXPECT_NO_STREAM, 0, batch_, "Order"));  // and again
}

TEST_P(Conformance, IdempotencyDuplicateWinsOverWrongExpectedVersion) {
  CommitBatchToRetry();
  ExpectOriginal(Append("s", ES_EXPECT_EXACT, 99, batch_));
  ExpectOriginal(Append("s", ES_EXPECT_NO_STREAM, 0, batch_));
  ExpectOriginal(Append("s", ES_EXPECT_EXACT, 0, batch_));
}

TEST_P(Conformance, IdempotencyDuplicateWinsOverDifferentStreamType) {
  CommitBatchToRetry();
  ExpectOriginal(Append("s", ES_EXPECT_ANY, 0, batch_, "Customer"));
  ExpectOriginal(Append("s", ES_EXPECT_ANY, 0, batch_, ""));
}

TEST_P(Conformance, IdempotencyPrefixIsAlreadyExists) {
  CommitBatchToRetry();
  ExpectExists(Append("s", ES_EXPECT_ANY, 0, {batch_[0], batch_[1]}), batch_[0].id);
  ExpectExists(Append("s", ES_EXPECT_ANY, 0, {batch_[0]}), batch_[0].id);
}

TEST_P(Conformance, IdempotencySuffixIsAlreadyExists) {
  CommitBatchToRetry();
  ExpectExists(Append("s", ES_EXPECT_ANY, 0, {batch_[1], batch_[2]}), batch_[1].id);
  ExpectExists(Append("s", ES_EXPECT_ANY, 0, {batch_[2]}), batch_[2].id);
}

TEST_P(Conformance, IdempotencyReorderIsAlreadyExists) {
  CommitBatchToRetry();
  ExpectExists(Append("s", ES_EXPECT_ANY, 0, {batch_[1], batch_[0], batch_[2]}), batch_[1].id);
  ExpectExists(Append("s", ES_EXPECT_ANY, 0, {batch_[2], batch_[1], batch_[0]}), batch_[2].id);
}

TEST_P(Conformance, IdempotencySupersetIsAlreadyExists) {
  CommitBatchToRetry();
  std::vector<Ev> more = batch_;
  more.push_back(Fresh(1)[0]);
  ExpectExists(Append("s", ES_EXPECT_ANY, 0, more), batch_[0].id);
  std::vector<Ev> front = Fresh(1);
  front.insert(front.end(), batch_.begin(), batch_.end());
  ExpectExists(Append("s", ES_EXPECT_ANY, 0, front), batch_[0].id);
}

TEST_P(Conformance, IdempotencyMixOfNewAndOldIsAlreadyExistsNamingTheFirstReusedId) {
  CommitBatchToRetry();
  std::vector<Ev> fresh = Fresh(2);
  ExpectExists(Append("s", ES_EXPECT_ANY, 0, {fresh[0], batch_[2], fresh[1], batch_[1]}),
               batch_[2].id);
  // The new ids of the failed request were not stored.
  AppendOutcome o = Append("s", ES_EXPECT_ANY, 0, fresh);
  ASSERT_OK(o);
  EXPECT_FALSE(o.res.duplicate);
}

TEST_P(Conformance, IdempotencySameIdsOnAnotherStreamAreAlreadyExists) {
  CommitBatchToRetry();
  ExpectExists(Append("elsewhere", ES_EXPECT_ANY, 0, batch_), batch_[0].id);
  ExpectExists(Append("other", ES_EXPECT_ANY, 0, batch_), batch_[0].id);
  EXPECT_EQ(ES_ENOTFOUND, ReadStream("elsewhere", 0, 10).rc);
}

TEST_P(Conformance, IdempotencyIdsSpanningTwoBatchesAreAlreadyExists) {
  CommitBatchToRetry();
  std::vector<Ev> a = Fresh(1), b = Fresh(1);
  ASSERT_OK(Append("t", ES_EXPECT_ANY, 0, a));
  ASSERT_OK(Append("t", ES_EXPECT_ANY, 0, b));
  head_ = Head();
  ExpectExists(Append("t", ES_EXPECT_ANY, 0, {a[0], b[0]}), a[0].id);
  // Each single-event batch on its own is a duplicate.
  AppendOutcome o = Append("t", ES_EXPECT_ANY, 0, b);
  ASSERT_OK(o);
  EXPECT_TRUE(o.res.duplicate);
  EXPECT_EQ(2u, o.res.first_version);
  EXPECT_EQ(head_, o.res.last_position);
}

TEST_P(Conformance, IdempotencyAlreadyExistsComesBeforeStreamTypeAndVersion) {
  CommitBatchToRetry();
  std::vector<Ev> mixed = Fresh(1);
  mixed.push_back(batch_[0]);
  ExpectExists(Append("s", ES_EXPECT_EXACT, 99, mixed, "Customer"), batch_[0].id);
}

// ---- stream types ----------------------------------------------------------

TEST_P(Conformance, FirstNonEmptyStreamTypeSticks) {
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 0, Fresh(1), "Order"));
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 0, Fresh(1), ""));
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 0, Fresh(1), "Order"));
  AppendOutcome o = Append("s", ES_EXPECT_ANY, 0, Fresh(2), "Customer");
  EXPECT_CODE(ES_ETYPE, o);
  EXPECT_EQ(3u, Head());
  PageCopy p = ReadStream("s", 0, 10);
  ASSERT_OK(p);
  ASSERT_EQ(3u, p.events.size());
  for (const auto &e : p.events) EXPECT_EQ("Order", e.stream_type);
}

TEST_P(Conformance, UntypedStreamTakesTheFirstTypeGivenLater) {
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 0, Fresh(1)));
  PageCopy p = ReadStream("s", 0, 10);
  ASSERT_OK(p);
  EXPECT_EQ("", p.events[0].stream_type);
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 0, Fresh(1), "Order"));
  EXPECT_CODE(ES_ETYPE, Append("s", ES_EXPECT_ANY, 0, Fresh(1), "Customer"));
  p = ReadAll(0, 10);
  ASSERT_OK(p);
  ASSERT_EQ(2u, p.events.size());
  EXPECT_EQ("Order", p.events[1].stream_type);
  // A failed append does not set the type either.
  EXPECT_CODE(ES_EVERSION, Append("t", ES_EXPECT_STREAM_EXISTS, 0, Fresh(1), "A"));
  ASSERT_OK(Append("t", ES_EXPECT_ANY, 0, Fresh(1), "B"));
}

TEST_P(Conformance, StreamTypeIsCheckedBeforeExpectedVersion) {
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 0, Fresh(1), "Order"));
  EXPECT_CODE(ES_ETYPE, Append("s", ES_EXPECT_EXACT, 99, Fresh(1), "Customer"));
  EXPECT_CODE(ES_EVERSION, Append("s", ES_EXPECT_EXACT, 99, Fresh(1), "Order"));
}

// ---- round trip ----------------------------------------------------------------

TEST_P(Conformance, EveryFieldRoundTrips) {
  Ev full;
  full.id = Uuid(0xabcdef);
  full.type = "OrderPlaced";
  full.event_version = 3;
  full.content_type = "application/json";
  full.payload = std::string("{\"a\":1}\0\xff", 9);
  full.metadata = {{"tenant", "acme"}, {"k", ""}};
  full.correlation_id = "corr-1";
  full.causation_id = "cause-1";
  full.occurred_at = 1700000000123ULL;
  Ev bare;  // server-assigned id, default content type, nothing else
  bare.type = "Noted";
  uint64_t t0 = es_now_unix_ms();
  AppendOutcome o = Append("order-1", ES_EXPECT_NO_STREAM, 0, {full, bare}, "Order");
  uint64_t t1 = es_now_unix_ms();
  ASSERT_OK(o);
  EXPECT_GE(o.res.recorded_at_unix_ms, t0);
  EXPECT_LE(o.res.recorded_at_unix_ms, t1);

  for (int via_all = 0; via_all < 2; via_all++) {
    PageCopy p = via_all ? ReadAll(0, 10) : ReadStream("order-1", 0, 10);
    ASSERT_OK(p);
    ASSERT_EQ(2u, p.events.size());
    const Rec &a = p.events[0];
    EXPECT_EQ("order-1", a.stream_id);
    EXPECT_EQ("Order", a.stream_type);
    EXPECT_EQ(1u, a.version);
    EXPECT_EQ(1u, a.position);
    EXPECT_EQ(full.id, a.event_id);
    EXPECT_EQ("OrderPlaced", a.event_type);
    EXPECT_EQ(3u, a.event_version);
    EXPECT_EQ("application/json", a.content_type);
    EXPECT_EQ(full.payload, a.payload);
    EXPECT_EQ((std::map<std::string, std::string>{{"tenant", "acme"}, {"k", ""}}), a.metadata);
    EXPECT_EQ("corr-1", a.correlation_id);
    EXPECT_EQ("cause-1", a.causation_id);
    EXPECT_EQ(1700000000123ULL, a.occurred_at);
    EXPECT_EQ(o.res.recorded_at_unix_ms, a.recorded_at);

    const Rec &b = p.events[1];
    EXPECT_EQ(2u, b.version);
    EXPECT_EQ(2u, b.position);
    ASSERT_EQ(36u, b.event_id.size());
    EXPECT_EQ('7', b.event_id[14]) << b.event_id;  // a UUIDv7
    for (char c : b.event_id)
      EXPECT_TRUE(c == '-' || std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f'))
          << b.event_id;
    EXPECT_EQ("Noted", b.event_type);
    EXPECT_EQ(ES_DEFAULT_CONTENT_TYPE, b.content_type);
    EXPECT_EQ("", b.payload);
    EXPECT_TRUE(b.metadata.empty());
    EXPECT_EQ("", b.correlation_id);
    EXPECT_EQ("", b.causation_id);
    EXPECT_EQ(0u, b.occurred_at);
    EXPECT_EQ(o.res.recorded_at_unix_ms, b.recorded_at);
  }
}

// ---- ReadStream paging edges ---------------------------------------------------

TEST_P(Conformance, ReadStreamUnknownStreamIsNotFound) {
  AppendInterleavedStream();
  PageCopy p = ReadStream("nope", 0, 10);
  EXPECT_CODE(ES_ENOTFOUND, p);
  EXPECT_TRUE(p.events.empty());
  EXPECT_CODE(ES_ENOTFOUND, ReadStream("nope", 0, 10, ES_BACKWARD));
  EXPECT_CODE(ES_ENOTFOUND, ReadStream("s-", 0, 10));  // no prefix matching
}

TEST_P(Conformance, ReadStreamForwardFromZeroOrOneStartsAtTheFirstEvent) {
  AppendInterleavedStream();
  ExpectStreamPage(ReadStream("s", 0, 2), {1, 2}, 3, false);
  ExpectStreamPage(ReadStream("s", 1, 2), {1, 2}, 3, false);
}

TEST_P(Conformance, ReadStreamForwardPagesToTheEnd) {
  AppendInterleavedStream();
  ExpectStreamPage(ReadStream("s", 3, 2), {3, 4}, 5, false);
  ExpectStreamPage(ReadStream("s", 5, 2), {5}, 6, true);
  ExpectStreamPage(ReadStream("s", 1, 5), {1, 2, 3, 4, 5}, 6, true);  // ends exactly at the last
  ExpectStreamPage(ReadStream("s", 2, 100), {2, 3, 4, 5}, 6, true);
}

TEST_P(Conformance, ReadStreamForwardAtOrBeyondTheEndIsEmptyAndAtTheEnd) {
  AppendInterleavedStream();
  ExpectStreamPage(ReadStream("s", 6, 10), {}, 6, true);
  ExpectStreamPage(ReadStream("s", 1000, 10), {}, 6, true);
}

TEST_P(Conformance, ReadStreamForwardPollingSeesNewEvents) {
  AppendInterleavedStream();
  PageCopy p = ReadStream("s", 6, 10);
  ASSERT_OK(p);
  AppendFresh("s", 1);
  p = ReadStream("s", p.next, 10);
  ASSERT_OK(p);
  EXPECT_EQ((std::vector<uint64_t>{6}), Versions(p));
  EXPECT_EQ(7u, p.next);
  EXPECT_TRUE(p.is_end);
}

TEST_P(Conformance, ReadStreamBackwardFromZeroStartsAtTheLastEvent) {
  AppendInterleavedStream();
  ExpectStreamPage(ReadStream("s", 0, 2, ES_BACKWARD), {5, 4}, 3, false);
  ExpectStreamPage(ReadStream("s", 3, 2, ES_BACKWARD), {3, 2}, 1, false);
  ExpectStreamPage(ReadStream("s", 1, 2, ES_BACKWARD), {1}, 0, true);
}

TEST_P(Conformance, ReadStreamBackwardReachingTheStartIsAtTheEndWithNextZero) {
  AppendInterleavedStream();
  ExpectStreamPage(ReadStream("s", 5, 5, ES_BACKWARD), {5, 4, 3, 2, 1}, 0, true);
  ExpectStreamPage(ReadStream("s", 2, 10, ES_BACKWARD), {2, 1}, 0, true);
}

TEST_P(Conformance, ReadStreamBackwardFromBeyondTheEndStartsAtTheLastEvent) {
  AppendInterleavedStream();
  ExpectStreamPage(ReadStream("s", 6, 2, ES_BACKWARD), {5, 4}, 3, false);
  ExpectStreamPage(ReadStream("s", 1000, 10, ES_BACKWARD), {5, 4, 3, 2, 1}, 0, true);
}

TEST_P(Conformance, ReadStreamMaxCountAboveTheLimitIsCapped) {
  AppendInterleavedStream();
  limits_.max_page_events = 3;
  ExpectStreamPage(ReadStream("s", 0, 1000000), {1, 2, 3}, 4, false);
}

// ---- ReadAll paging edges ------------------------------------------------------

TEST_P(Conformance, ReadAllOnAnEmptyLog) {
  PageCopy p = ReadAll(0, 10);
  ASSERT_OK(p);
  EXPECT_TRUE(p.events.empty());
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(1u, p.next);
  EXPECT_EQ(0u, p.last);
  p = ReadAll(0, 10, ES_BACKWARD);
  ASSERT_OK(p);
  EXPECT_TRUE(p.events.empty());
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(0u, p.next);
  p = ReadAll(5, 10, ES_BACKWARD);
  ASSERT_OK(p);
  EXPECT_TRUE(p.events.empty());
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(0u, Head());
}

TEST_P(Conformance, ReadAllForwardPages) {
  AppendSevenEvents();
  ExpectAllPage(ReadAll(0, 3), {1, 2, 3}, 4, false);
  ExpectAllPage(ReadAll(1, 3), {1, 2, 3}, 4, false);
  ExpectAllPage(ReadAll(4, 3), {4, 5, 6}, 7, false);
  ExpectAllPage(ReadAll(7, 3), {7}, 8, true);
  ExpectAllPage(ReadAll(1, 7), {1, 2, 3, 4, 5, 6, 7}, 8, true);
  EXPECT_EQ(7u, Head());
}

TEST_P(Conformance, ReadAllForwardBeyondTheEndIsEmptyAndPollable) {
  AppendSevenEvents();
  ExpectAllPage(ReadAll(8, 3), {}, 8, true);
  ExpectAllPage(ReadAll(1000, 3), {}, 8, true);
  AppendFresh("d", 2);
  PageCopy p = ReadAll(8, 3);
  ASSERT_OK(p);
  EXPECT_EQ((std::vector<uint64_t>{8, 9}), Positions(p));
  EXPECT_EQ(10u, p.next);
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(9u, p.last);
}

TEST_P(Conformance, ReadAllBackwardPages) {
  AppendSevenEvents();
  ExpectAllPage(ReadAll(0, 3, ES_BACKWARD), {7, 6, 5}, 4, false);
  ExpectAllPage(ReadAll(4, 3, ES_BACKWARD), {4, 3, 2}, 1, false);
  ExpectAllPage(ReadAll(1, 3, ES_BACKWARD), {1}, 0, true);
  ExpectAllPage(ReadAll(3, 3, ES_BACKWARD), {3, 2, 1}, 0, true);
}

TEST_P(Conformance, ReadAllBackwardFromBeyondTheEndStartsAtTheHead) {
  AppendSevenEvents();
  ExpectAllPage(ReadAll(8, 2, ES_BACKWARD), {7, 6}, 5, false);
  ExpectAllPage(ReadAll(1000, 100, ES_BACKWARD), {7, 6, 5, 4, 3, 2, 1}, 0, true);
}

TEST_P(Conformance, ReadAllEventsCarryTheirStreamAndVersion) {
  AppendSevenEvents();
  PageCopy p = ReadAll(0, 10);
  ASSERT_OK(p);
  std::vector<std::pair<std::string, uint64_t>> got;
  for (const auto &e : p.events) got.emplace_back(e.stream_id, e.version);
  EXPECT_EQ((std::vector<std::pair<std::string, uint64_t>>{
                {"a", 1}, {"a", 2}, {"b", 1}, {"b", 2}, {"b", 3}, {"a", 3}, {"c", 1}}),
            got);
}

TEST_P(Conformance, ReadAllMaxCountAboveTheLimitIsCapped) {
  for (int i = 0; i < 12; i++) AppendFresh("s", 100);
  PageCopy p = ReadAll(0, 5000);
  ASSERT_OK(p);
  EXPECT_EQ(1000u, p.events.size());
  EXPECT_EQ(1001u, p.next);
  EXPECT_FALSE(p.is_end);
  p = ReadAll(0, 0);  // 0 = the default page size
  ASSERT_OK(p);
  EXPECT_EQ(limits_.default_page_events, p.events.size());
}

// ---- filters -------------------------------------------------------------------

TEST_P(Conformance, FilterStreamPrefix) {
  AppendFilterFixture();
  EXPECT_EQ((std::vector<uint64_t>{1, 3, 4, 6}), CollectFiltered(ES_FORWARD, 100, "order-", {}));
  EXPECT_EQ((std::vector<uint64_t>{6, 4, 3, 1}), CollectFiltered(ES_BACKWARD, 100, "order-", {}));
  EXPECT_EQ((std::vector<uint64_t>{1, 3, 4, 6}), CollectFiltered(ES_FORWARD, 1, "order-", {}));
  EXPECT_EQ((std::vector<uint64_t>{6, 4, 3, 1}), CollectFiltered(ES_BACKWARD, 1, "order-", {}));
  EXPECT_EQ((std::vector<uint64_t>{1, 3, 4, 6, 7}), CollectFiltered(ES_FORWARD, 2, "order", {}));
}

TEST_P(Conformance, FilterEventTypes) {
  AppendFilterFixture();
  EXPECT_EQ((std::vector<uint64_t>{4, 5, 7}), CollectFiltered(ES_FORWARD, 100, "", {"Paid"}));
  EXPECT_EQ((std::vector<uint64_t>{7, 6, 5, 4}),
            CollectFiltered(ES_BACKWARD, 1, "", {"Paid", "Shipped"}));
  EXPECT_EQ((std::vector<uint64_t>{}),
            CollectFiltered(ES_FORWARD, 100, "", {"paid"}));  // exact names
}

TEST_P(Conformance, FilterPrefixAndTypesMustBothMatch) {
  AppendFilterFixture();
  EXPECT_EQ((std::vector<uint64_t>{4, 6}),
            CollectFiltered(ES_FORWARD, 100, "order-", {"Paid", "Shipped"}));
  EXPECT_EQ((std::vector<uint64_t>{6, 4}),
            CollectFiltered(ES_BACKWARD, 1, "order-", {"Paid", "Shipped"}));
}

TEST_P(Conformance, FilterPageEdgesWithAFilter) {
  AppendFilterFixture();
  PageCopy p = ReadAll(0, 1, ES_FORWARD, "order-");
  ASSERT_OK(p);
  EXPECT_EQ((std::vector<uint64_t>{1}), Positions(p));
  EXPECT_EQ(2u, p.next);
  EXPECT_FALSE(p.is_end);
  EXPECT_EQ(7u, p.last);
  // The last match is not the last event: the page after it scans to the end.
  p = ReadAll(6, 5, ES_FORWARD, "order-");
  ASSERT_OK(p);
  EXPECT_EQ((std::vector<uint64_t>{6}), Positions(p));
  EXPECT_EQ(8u, p.next);
  EXPECT_TRUE(p.is_end);
  // Nothing matches at all.
  p = ReadAll(0, 5, ES_FORWARD, "zzz");
  ASSERT_OK(p);
  EXPECT_TRUE(p.events.empty());
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(8u, p.next);
  p = ReadAll(0, 5, ES_BACKWARD, "zzz");
  ASSERT_OK(p);
  EXPECT_TRUE(p.events.empty());
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(0u, p.next);
}

TEST_P(Conformance, FilteredScanIsBoundedAndResumes) {
  limits_.max_scan = 10;
  for (int i = 0; i < 5; i++) AppendFresh("noise", 10);
  AppendFresh("target", 1);  // position 51
  AppendFresh("noise", 5);   // 52..56

  // Forward: empty pages that are not at the end, each exactly max_scan on.
  PageCopy p = ReadAll(0, 100, ES_FORWARD, "target");
  ASSERT_OK(p);
  EXPECT_TRUE(p.events.empty());
  EXPECT_FALSE(p.is_end);
  EXPECT_EQ(11u, p.next);
  std::vector<uint64_t> found;
  uint64_t from = p.next;
  int calls = 1;
  while (!p.is_end && calls < 100) {
    p = ReadAll(from, 100, ES_FORWARD, "target");
    ASSERT_OK(p);
    calls++;
    EXPECT_GT(p.next, from);
    EXPECT_LE(p.next - from, 10u);
    if (!p.is_end && p.events.empty()) EXPECT_EQ(from + 10, p.next);
    for (auto pos : Positions(p)) found.push_back(pos);
    from = p.next;
  }
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(57u, p.next);
  EXPECT_EQ((std::vector<uint64_t>{51}), found);
  EXPECT_EQ(6, calls);

  // Backward: 56..47 holds the match, then empty pages down to position 0.
  p = ReadAll(0, 100, ES_BACKWARD, "target");
  ASSERT_OK(p);
  EXPECT_EQ((std::vector<uint64_t>{51}), Positions(p));
  EXPECT_FALSE(p.is_end);
  EXPECT_EQ(46u, p.next);
  calls = 1;
  while (!p.is_end && calls < 100) {
    from = p.next;
    p = ReadAll(from, 100, ES_BACKWARD, "target");
    ASSERT_OK(p);
    calls++;
    EXPECT_TRUE(p.events.empty());
    EXPECT_EQ(from > 10 ? from - 10 : 0, p.next);
  }
  EXPECT_TRUE(p.is_end);
  EXPECT_EQ(0u, p.next);
  EXPECT_EQ(6, calls);

  // Without a filter the scan bound does not apply.
  p = ReadAll(0, 100);
  ASSERT_OK(p);
  EXPECT_EQ(56u, p.events.size());
  EXPECT_TRUE(p.is_end);
}

// ---- page size in bytes ----------------------------------------------------------

TEST_P(Conformance, PagesAreTrimmedToTheByteBudget) {
  const size_t kPayload = 1 << 20;
  const int kEvents = 10;
  for (int i = 0; i < kEvents; i++) {
    Ev e = Fresh(1)[0];
    e.payload.assign(kPayload, static_cast<char>('a' + i));
    ASSERT_OK(Append(i % 2 ? "big-odd" : "big", ES_EXPECT_ANY, 0, {e}));
  }
  auto check_pages = [&](bool stream, int dir, bool expect_single) {
    std::vector<uint64_t> seen;
    uint64_t from = 0;
    bool multi = false;
    for (int guard = 0; guard < 3 * kEvents; guard++) {
      PageCopy p = stream ? ReadStream("big", from, 100, dir) : ReadAll(from, 100, dir);
      ASSERT_OK(p);
      ASSERT_FALSE(p.events.empty()) << "a page holds at least one event";
      size_t bytes = 0;
      for (const auto &e : p.events) {
        bytes += e.size_bound;
        EXPECT_EQ(kPayload, e.payload.size());
        EXPECT_EQ(std::string(kPayload, e.payload[0]), e.payload);
        seen.push_back(stream ? e.version : e.position);
      }
      if (p.events.size() > 1) {
        multi = true;
        EXPECT_LE(bytes, p.max_bytes);
      }
      if (expect_single) EXPECT_EQ(1u, p.events.size());
      if (p.is_end) break;
      from = p.next;
    }
    size_t n = stream ? kEvents / 2 : kEvents;
    ASSERT_EQ(n, seen.size());
    for (size_t i = 0; i < n; i++) EXPECT_EQ(dir == ES_FORWARD ? i + 1 : n - i, seen[i]);
    if (!expect_single) EXPECT_TRUE(multi) << "the budget should hold a few 1 MiB events";
  };
  for (int dir : {ES_FORWARD, ES_BACKWARD}) {
    check_pages(false, dir, false);
    check_pages(true, dir, false);
  }
  // A budget below one event: every page holds exactly one.
  limits_.max_page_bytes = 512 * 1024;
  for (int dir : {ES_FORWARD, ES_BACKWARD}) {
    check_pages(false, dir, true);
    check_pages(true, dir, true);
  }
}

// ---- randomized operations against a model ---------------------------------------

// The semantics of API.md in the most direct form: std::map and vectors.
struct Model {
  struct Event {
    std::string stream, id, type;
    uint64_t version;
  };
  struct Batch {
    std::string stream;
    std::vector<std::string> ids;
    es_append_result_t result;
  };
  std::vector<Event> log;                                // position - 1
  std::map<std::string, std::vector<uint64_t>> streams;  // stream -> positions
  std::map<std::string, std::string> types;              // stream -> type
  std::map<std::string, size_t> batch_of;                // id -> batches index
  std::vector<Batch> batches;

  uint64_t Last(const std::string &s) const {
    auto it = streams.find(s);
    return it == streams.end() ? 0 : it->second.size();
  }
};

struct ModelPage {
  int rc = ES_OK;
  std::vector<uint64_t> positions;
  uint64_t next = 0, last = 0;
  bool is_end = false;
};

ModelPage ModelReadStream(const Model &m, const std::string &s, uint64_t from, uint32_t max_count,
                          int dir) {
  ModelPage p;
  auto it = m.streams.find(s);
  if (it == m.streams.end()) {
    p.rc = ES_ENOTFOUND;
    return p;
  }
  const std::vector<uint64_t> &pos = it->second;
  uint64_t last = pos.size();
  p.last = last;
  if (dir == ES_FORWARD) {
    uint64_t v = std::max<uint64_t>(from, 1);
    while (v <= last && p.positions.size() < max_count) p.positions.push_back(pos[v++ - 1]);
    p.is_end = v > last;
    p.next = p.is_end ? last + 1 : v;
  } else {
    uint64_t v = (from == 0 || from > last) ? last : from;
    while (v >= 1 && p.positions.size() < max_count) p.positions.push_back(pos[v-- - 1]);
    p.is_end = v == 0;
    p.next = v;
  }
  return p;
}

ModelPage ModelReadAll(const Model &m, uint64_t from, uint32_t max_count, int dir,
                       const std::string &prefix, const std::vector<std::string> &types,
                       uint64_t max_scan) {
  ModelPage p;
  uint64_t head = m.log.size();
  p.last = head;
  bool filtered = !prefix.empty() || !types.empty();
  uint64_t budget = filtered ? max_scan : UINT64_MAX;
  auto match = [&](uint64_t pos) {
    const Model::Event &e = m.log[pos - 1];
    if (e.stream.compare(0, prefix.size(), prefix) != 0) return false;
    return types.empty() || std::find(types.begin(), types.end(), e.type) != types.end();
  };
  if (dir == ES_FORWARD) {
    uint64_t pos = std::max<uint64_t>(from, 1);
    for (; pos <= head && budget > 0 && p.positions.size() < max_count; pos++, budget--) {
      if (match(pos)) p.positions.push_back(pos);
    }
    p.is_end = pos > head;
    p.next = p.is_end ? head + 1 : pos;
  } else {
    uint64_t pos = (from == 0 || from > head) ? head : from;
    for (; pos >= 1 && budget > 0 && p.positions.size() < max_count; pos--, budget--) {
      if (match(pos)) p.positions.push_back(pos);
    }
    p.is_end = pos == 0;
    p.next = pos;
  }
  return p;
}

TEST_P(Conformance, RandomOperationsMatchTheModel) {
  std::mt19937_64 rng(0x5eed2024);
  auto pick = [&](uint64_t n) { return static_cast<uint64_t>(rng() % n); };
  const std::vector<std::string> kStreams = {"a-1", "a-2", "a-3", "b-1", "b-2", "c"};
  const std::vector<std::string> kTypes = {"", "", "A", "B"};
  const std::vector<std::string> kEventTypes = {"T1", "T2", "T3"};
  Model m;
  int appended = 0, duplicates = 0, exists = 0, wrong_type = 0, wrong_version = 0;

  for (int op = 0; op < 4000; op++) {
    SCOPED_TRACE("operation " + std::to_string(op));
    uint64_t r = pick(100);
    if (r < 55) {
      // An append: fresh ids, an exact retry, or a near miss of a committed batch.
      std::string stream = kStreams[pick(kStreams.size())];
      std::vector<std::string> ids;
      uint64_t mode = pick(20);
      if (mode < 2 && !m.batches.empty()) {
        const Model::Batch &b = m.batches[pick(m.batches.size())];
        ids = b.ids;
        if (pick(4) != 0) stream = b.stream;
      } else if (mode < 4 && !m.batches.empty()) {
        const Model::Batch &b = m.batches[pick(m.batches.size())];
        ids = b.ids;
        stream = b.stream;
        switch (pick(4)) {
          case 0:
            ids.resize(1 + pick(ids.size()));
            break;  // prefix (or all)
          case 1:
            std::reverse(ids.begin(), ids.end());
            break;  // reorder
          case 2:
            ids.push_back(Uuid(next_id_++));
            break;  // superset
          default:
            ids.insert(ids.begin(), Uuid(next_id_++));
            break;  // mix
        }
      } else {
        size_t n = 1 + pick(4);
        for (size_t i = 0; i < n; i++) ids.push_back(Uuid(next_id_++));
      }
      std::vector<Ev> evs;
      for (const auto &id : ids) {
        Ev e;
        e.id = id;
        e.type = kEventTypes[pick(kEventTypes.size())];
        e.payload = "p" + id;
        evs.push_back(e);
      }
      std::string type = kTypes[pick(kTypes.size())];
      int kind = static_cast<int>(pick(4));
      uint64_t last = m.Last(stream);
      uint64_t expected = pick(2) ? last : pick(last + 3);

      // What the model says.
      int want = ES_OK;
      size_t first_reused = ids.size();
      for (size_t i = 0; i < ids.size() && first_reused == ids.size(); i++)
        if (m.batch_of.count(ids[i])) first_reused = i;
      const Model::Batch *dup = nullptr;
      if (first_reused < ids.size()) {
        const Model::Batch &b = m.batches[m.batch_of.at(ids[first_reused])];
        if (b.ids == ids && b.stream == stream) {
          dup = &b;
        } else {
          want = ES_EEXIST;
        }
      } else if (!type.empty() && !m.types[stream].empty() && m.types[stream] != type) {
        want = ES_ETYPE;
      } else if ((kind == ES_EXPECT_NO_STREAM && last != 0) ||
                 (kind == ES_EXPECT_STREAM_EXISTS && last == 0) ||
                 (kind == ES_EXPECT_EXACT && last != expected)) {
        want = ES_EVERSION;
      }

      AppendOutcome o = Append(stream, kind, expected, evs, type);
      ASSERT_EQ(want, o.rc) << es_errname(o.rc) << ": " << o.err.msg;
      if (dup) {
        duplicates++;
        EXPECT_TRUE(o.res.duplicate);
        EXPECT_EQ(dup->result.first_version, o.res.first_version);
        EXPECT_EQ(dup->result.last_version, o.res.last_version);
        EXPECT_EQ(dup->result.first_position, o.res.first_position);
        EXPECT_EQ(dup->result.last_position, o.res.last_position);
        EXPECT_EQ(dup->result.recorded_at_unix_ms, o.res.recorded_at_unix_ms);
      } else if (want == ES_EEXIST) {
        exists++;
        EXPECT_TRUE(Contains(o.err.msg, ids[first_reused])) << o.err.msg;
      } else if (want == ES_ETYPE) {
        wrong_type++;
      } else if (want == ES_EVERSION) {
        wrong_version++;
        EXPECT_EQ(1, o.err.has_actual_version);
        EXPECT_EQ(last, o.err.actual_version);
      } else {
        appended++;
        EXPECT_FALSE(o.res.duplicate);
        EXPECT_EQ(last + 1, o.res.first_version);
        EXPECT_EQ(last + ids.size(), o.res.last_version);
        EXPECT_EQ(m.log.size() + 1, o.res.first_position);
        EXPECT_EQ(m.log.size() + ids.size(), o.res.last_position);
        m.batches.push_back({stream, ids, o.res});
        for (size_t i = 0; i < ids.size(); i++) {
          m.log.push_back({stream, ids[i], evs[i].type, last + 1 + i});
          m.streams[stream].push_back(m.log.size());
          m.batch_of[ids[i]] = m.batches.size() - 1;
        }
        if (m.types[stream].empty()) m.types[stream] = type;
      }
      continue;
    }

    auto check_events = [&](const PageCopy &got, const ModelPage &want) {
      ASSERT_EQ(want.rc, got.rc) << es_errname(got.rc) << ": " << got.err.msg;
      if (want.rc != ES_OK) return;
      EXPECT_EQ(want.positions, Positions(got));
      EXPECT_EQ(want.next, got.next);
      EXPECT_EQ(want.is_end, got.is_end);
      EXPECT_EQ(want.last, got.last);
      for (const auto &e : got.events) {
        ASSERT_GE(e.position, 1u);
        ASSERT_LE(e.position, m.log.size());
        const Model::Event &me = m.log[e.position - 1];
        EXPECT_EQ(me.stream, e.stream_id);
        EXPECT_EQ(me.id, e.event_id);
        EXPECT_EQ(me.type, e.event_type);
        EXPECT_EQ(me.version, e.version);
        EXPECT_EQ(m.types.at(me.stream), e.stream_type);
        EXPECT_EQ("p" + me.id, e.payload);
      }
    };
    int dir = pick(2) ? ES_FORWARD : ES_BACKWARD;
    uint32_t max_count = static_cast<uint32_t>(1 + pick(6));
    if (r < 75) {
      std::string stream = pick(10) ? kStreams[pick(kStreams.size())] : "missing";
      uint64_t from = pick(m.Last(stream) + 3);
      check_events(ReadStream(stream, from, max_count, dir),
                   ModelReadStream(m, stream, from, max_count, dir));
    } else if (r < 97) {
      uint64_t from = pick(m.log.size() + 3);
      std::string prefix;
      std::vector<std::string> types;
      switch (pick(4)) {
        case 0:
          break;
        case 1:
          prefix = pick(2) ? "a-" : "b-1";
          break;
        case 2:
          types = {kEventTypes[pick(3)]};
          break;
        default:
          prefix = "a-";
          types = {"T1", "T3"};
      }
      limits_.max_scan = pick(2) ? 1 + pick(8) : 10000;
      check_events(ReadAll(from, max_count, dir, prefix, types),
                   ModelReadAll(m, from, max_count, dir, prefix, types, limits_.max_scan));
    } else {
      EXPECT_EQ(m.log.size(), Head());
    }
  }
  // Every path was taken.
  EXPECT_GT(appended, 300);
  EXPECT_GT(duplicates, 10);
  EXPECT_GT(exists, 10);
  EXPECT_GT(wrong_type, 10);
  EXPECT_GT(wrong_version, 100);

  std::vector<Rec> log = WholeLog();
  ASSERT_EQ(m.log.size(), log.size());
  for (size_t i = 0; i < log.size(); i++) {
    EXPECT_EQ(i + 1, log[i].position);
    EXPECT_EQ(m.log[i].id, log[i].event_id);
  }
}

// ---- concurrency -------------------------------------------------------------------

TEST_P(Conformance, RacingExactAppendsWinEachVersionOnce) {
  constexpr int kThreads = 8;
  constexpr uint64_t kVersions = 150;
  // won[t][v]: thread t's append with EXACT v succeeded.
  std::vector<std::vector<char>> won(kThreads, std::vector<char>(kVersions, 0));
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (uint64_t v = 0; v < kVersions; v++) {
        Ev e;
        e.id = Uuid((uint64_t)(t + 1) << 32 | v);
        AppendOutcome o = DoAppend(b_, limits_, "race", ES_EXPECT_EXACT, v, {e});
        if (o.rc == ES_OK) {
          won[t][v] = 1;
          EXPECT_EQ(v + 1, o.res.first_version);
          EXPECT_FALSE(o.res.duplicate);
        } else {
          EXPECT_EQ(ES_EVERSION, o.rc) << o.err.msg;
          EXPECT_EQ(1, o.err.has_actual_version);
          // A thread only tries v after the stream reached it: a loser sees more.
          EXPECT_GT(o.err.actual_version, v);
          EXPECT_LE(o.err.actual_version, kVersions);
        }
      }
    });
  }
  go = true;
  for (auto &th : threads) th.join();

  PageCopy p = ReadStream("race", 0, 1000);
  ASSERT_OK(p);
  ASSERT_EQ(kVersions, p.events.size());
  for (uint64_t v = 0; v < kVersions; v++) {
    int winners = 0, winner = -1;
    for (int t = 0; t < kThreads; t++) {
      if (won[t][v]) {
        winners++;
        winner = t;
      }
    }
    ASSERT_EQ(1, winners) << "EXACT " << v;
    EXPECT_EQ(Uuid((uint64_t)(winner + 1) << 32 | v), p.events[v].event_id);
    EXPECT_EQ(v + 1, p.events[v].version);
    EXPECT_EQ(v + 1, p.events[v].position);
  }
}

TEST_P(Conformance, ConcurrentWritersKeepTheLogGapFree) {
  constexpr int kWriters = 4, kAppends = 500, kStreams = 5, kReaders = 2;
  // Writer t appends 1 + i % 3 events to its own stream "w<t>-<i % 5>".
  uint64_t total = 0;
  for (int i = 0; i < kAppends; i++) total += 1 + i % 3;
  total *= kWriters;

  es_notifier_t *notifier = es_notifier_new();
  ASSERT_NE(nullptr, notifier);
  es_backend_set_notifier(b_, notifier);

  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kWriters; t++) {
    threads.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      std::map<std::string, uint64_t> version;
      for (int i = 0; i < kAppends; i++) {
        std::string stream = "w" + std::to_string(t) + "-" + std::to_string(i % kStreams);
        std::vector<Ev> evs(1 + i % 3);
        for (size_t k = 0; k < evs.size(); k++)
          evs[k].id = Uuid((uint64_t)(t + 1) << 32 | (uint64_t)i << 2 | k);
        AppendOutcome o = DoAppend(b_, limits_, stream, ES_EXPECT_EXACT, version[stream], evs);
        ASSERT_EQ(ES_OK, o.rc) << o.err.msg;
        EXPECT_EQ(version[stream] + 1, o.res.first_version);
        EXPECT_EQ(o.res.last_position - o.res.first_position + 1, evs.size());
        version[stream] += evs.size();
      }
    });
  }
  // Readers follow the log live: every page continues exactly where the last
  // one ended, and each stream's versions arrive in order.
  for (int r = 0; r < kReaders; r++) {
    threads.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      uint64_t cursor = 1;
      std::map<std::string, uint64_t> seen;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
      while (cursor <= total && std::chrono::steady_clock::now() < deadline) {
        PageCopy p = DoReadAll(b_, limits_, cursor, 64, ES_FORWARD);
        ASSERT_EQ(ES_OK, p.rc) << p.err.msg;
        for (const auto &e : p.events) {
          ASSERT_EQ(cursor, e.position);
          ASSERT_EQ(seen[e.stream_id] + 1, e.version) << e.stream_id;
          seen[e.stream_id] = e.version;
          cursor++;
        }
        EXPECT_EQ(cursor, p.next);
        EXPECT_GE(p.last, cursor - 1);
        if (p.events.empty()) std::this_thread::yield();
      }
      EXPECT_EQ(total + 1, cursor);
    });
  }
  go = true;
  for (auto &th : threads) th.join();

  EXPECT_EQ(total, Head());
  EXPECT_EQ(total, es_notifier_head(notifier));
  es_backend_set_notifier(b_, nullptr);
  es_notifier_free(notifier);

  std::vector<Rec> log = WholeLog();
  ASSERT_EQ(total, log.size());
  std::set<std::string> ids;
  for (size_t i = 0; i < log.size(); i++) {
    EXPECT_EQ(i + 1, log[i].position);
    EXPECT_TRUE(ids.insert(log[i].event_id).second) << "twice: " << log[i].event_id;
  }
  for (int t = 0; t < kWriters; t++) {
    for (int s = 0; s < kStreams; s++) {
      std::string stream = "w" + std::to_string(t) + "-" + std::to_string(s);
      PageCopy p = ReadStream(stream, 0, 1000);
      ASSERT_OK(p);
      EXPECT_EQ(p.last, p.events.size());
      EXPECT_TRUE(p.is_end);
      uint64_t prev_pos = 0;
      for (size_t i = 0; i < p.events.size(); i++) {
        EXPECT_EQ(i + 1, p.events[i].version);
        EXPECT_GT(p.events[i].position, prev_pos);
        prev_pos = p.events[i].position;
      }
    }
  }
}

// ---- notifier ----------------------------------------------------------------------

TEST_P(Conformance, PublishesTheHeadToTheNotifier) {
  es_notifier_t *n = es_notifier_new();
  ASSERT_NE(nullptr, n);
  es_backend_set_notifier(b_, n);
  std::atomic<int> fired{0};
  es_waiter_t w;
  std::memset(&w, 0, sizeof w);
  w.fn = [](es_waiter_t *self) { static_cast<std::atomic<int> *>(self->arg)->fetch_add(1); };
  w.arg = &fired;
  ASSERT_EQ(0, es_notifier_wait(n, &w, 0));

  std::vector<Ev> batch = Fresh(3);
  ASSERT_OK(Append("s", ES_EXPECT_ANY, 0, batch));
  EXPECT_EQ(1, fired.load());
  EXPECT_EQ(3u, es_notifier_head(n));
  AppendFresh("t", 2);
  EXPECT_EQ(5u, es_notifier_head(n));
  // Failures and duplicates do not move the head.
  EXPECT_CODE(ES_EVERSION, Append("s", ES_EXPECT_NO_STREAM, 0, Fresh(1)));
  AppendOutcome o = Append("s", ES_EXPECT_ANY, 0, batch);
  ASSERT_OK(o);
  EXPECT_TRUE(o.res.duplicate);
  EXPECT_EQ(5u, es_notifier_head(n));

  es_backend_set_notifier(b_, nullptr);
  es_notifier_free(n);
  AppendFresh("s", 1);  // no notifier: nothing to publish to
  EXPECT_EQ(6u, Head());
}

std::string FactoryName(const ::testing::TestParamInfo<BackendFactory> &info) {
  return info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Backends, Conformance, ::testing::ValuesIn(ConformanceBackends()),
                         FactoryName);
}  // namespace
