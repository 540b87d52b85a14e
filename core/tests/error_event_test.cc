// Tests of the error space (error.c) and of the event helpers (event.c):
// names and texts of every code, es_err_t formatting, filter matching, the
// RecordedEvent size bound, pages and the clock.
#include <gtest/gtest.h>

#include <string>

#include "es/error.h"
#include "es/event.h"

namespace {

TEST(Error, EveryCodeHasANameAndAText) {
  struct {
    int code;
    const char *name;
  } cases[] = {
      {ES_OK, "ES_OK"},
      {ES_EINVAL, "ES_EINVAL"},
      {ES_ETOOBIG, "ES_ETOOBIG"},
      {ES_EVERSION, "ES_EVERSION"},
      {ES_ENOTFOUND, "ES_ENOTFOUND"},
      {ES_EEXIST, "ES_EEXIST"},
      {ES_ETYPE, "ES_ETYPE"},
      {ES_EUNAVAIL, "ES_EUNAVAIL"},
      {ES_ENOMEM, "ES_ENOMEM"},
      {ES_EAGAIN, "ES_EAGAIN"},
      {ES_ECANCELLED, "ES_ECANCELLED"},
      {ES_EINTERNAL, "ES_EINTERNAL"},
      {ES_ENOSPACE, "ES_ENOSPACE"},
      {ES_ECONDITION, "ES_ECONDITION"},
      {ES_EUNSUPPORTED, "ES_EUNSUPPORTED"},
  };
  for (const auto &c : cases) {
    EXPECT_STREQ(c.name, es_errname(c.code));
    ASSERT_NE(nullptr, es_strerror(c.code));
    EXPECT_STRNE("unknown error", es_strerror(c.code)) << c.name;
  }
  EXPECT_STREQ("wrong expected version", es_strerror(ES_EVERSION));
}

TEST(Error, UnknownCodesGetStaticStrings) {
  for (int code : {1, -15, -1000, 12345}) {
    EXPECT_STREQ("unknown error", es_strerror(code));
    EXPECT_STREQ("ES_UNKNOWN", es_errname(code));
  }
}

TEST(Error, SetFormatsAndReturnsTheCode) {
  es_err_t err;
  es_err_clear(&err);
  EXPECT_EQ(ES_OK, err.code);
  EXPECT_STREQ("", err.msg);
  EXPECT_EQ(ES_EINVAL,
            es_err_set(&err, ES_EINVAL, "events[%d].event_type: %zu bytes", 3, (size_t)300));
  EXPECT_EQ(ES_EINVAL, err.code);
  EXPECT_STREQ("events[3].event_type: 300 bytes", err.msg);
  es_err_clear(&err);
  EXPECT_EQ(ES_OK, err.code);
  EXPECT_STREQ("", err.msg);
  EXPECT_EQ(0, err.has_actual_version);
}

TEST(Error, NullErrIsAllowed) {
  EXPECT_EQ(ES_EUNAVAIL, es_err_set(nullptr, ES_EUNAVAIL, "x %d", 1));
  es_err_clear(nullptr);
}

TEST(Error, LongMessagesAreTruncatedNotOverflowed) {
  es_err_t err;
  std::string big(1000, 'x');
  es_err_set(&err, ES_EINVAL, "%s", big.c_str());
  EXPECT_EQ(size_t(ES_ERR_MSG_MAX - 1), strlen(err.msg));
}

TEST(Error, SetKeepsActualVersion) {
  // A backend may fill actual_version before formatting the message.
  es_err_t err;
  es_err_clear(&err);
  err.has_actual_version = 1;
  err.actual_version = 7;
  es_err_set(&err, ES_EVERSION, "expected %d, actual %d", 3, 7);
  EXPECT_EQ(1, err.has_actual_version);
  EXPECT_EQ(7u, err.actual_version);
}

TEST(Filter, NullAndEmptyMatchEverything) {
  EXPECT_TRUE(es_filter_match(nullptr, "a", "b"));
  es_filter_t f = {};
  EXPECT_TRUE(es_filter_match(&f, "a", "b"));
  EXPECT_FALSE(es_filter_active(&f));
  EXPECT_FALSE(es_filter_active(nullptr));
  f.stream_prefix = "";
  EXPECT_TRUE(es_filter_match(&f, "a", "b"));
  EXPECT_FALSE(es_filter_active(&f));
}

TEST(Filter, PrefixIsBytewise) {
  es_filter_t f = {};
  f.stream_prefix = "order-";
  EXPECT_TRUE(es_filter_active(&f));
  EXPECT_TRUE(es_filter_match(&f, "order-1", "T"));
  EXPECT_TRUE(es_filter_match(&f, "order-", "T"));
  EXPECT_FALSE(es_filter_match(&f, "order", "T"));
  EXPECT_FALSE(es_filter_match(&f, "Order-1", "T"));
  EXPECT_FALSE(es_filter_match(&f, "user-1", "T"));
  EXPECT_FALSE(es_filter_match(&f, "", "T"));
}

TEST(Filter, TypesAreExactAndCombineWithPrefix) {
  const char *types[] = {"Created", "Paid"};
  es_filter_t f = {};
  f.event_types = types;
  f.event_type_count = 2;
  EXPECT_TRUE(es_filter_active(&f));
  EXPECT_TRUE(es_filter_match(&f, "s", "Created"));
  EXPECT_TRUE(es_filter_match(&f, "s", "Paid"));
  EXPECT_FALSE(es_filter_match(&f, "s", "Create"));
  EXPECT_FALSE(es_filter_match(&f, "s", "CreatedX"));
  EXPECT_FALSE(es_filter_match(&f, "s", "paid"));
  f.stream_prefix = "order-";
  EXPECT_TRUE(es_filter_match(&f, "order-9", "Paid"));
  EXPECT_FALSE(es_filter_match(&f, "user-9", "Paid"));
  EXPECT_FALSE(es_filter_match(&f, "order-9", "Shipped"));
}

TEST(SizeBound, CountsEveryFieldWithWidestVarints) {
  es_kv_t md[] = {{"k", "vv"}, {"key", ""}};
  uint8_t payload[100] = {};
  es_recorded_t ev = {};
  ev.stream_id = "order-1";                                                                 // 7
  ev.stream_type = "Order";                                                                 // 5
  snprintf(ev.event_id, sizeof ev.event_id, "%s", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");  // 36
  ev.event_type = "Created";                                                                // 7
  ev.content_type = "a/b";                                                                  // 3
  ev.payload = payload;
  ev.payload_len = sizeof payload;  // 100
  ev.metadata = md;
  ev.metadata_count = 2;    // 3 + 3 bytes
  ev.correlation_id = "c";  // 1
  ev.causation_id = "";     // 0
  size_t strings = 7 + 5 + 36 + 7 + 3 + 100 + 1 + 0;
  size_t expect = 11 /* outer */ + strings + 8 * 11 + 5 * 11 + (3 + 33) + (3 + 33);
  EXPECT_EQ(expect, es_recorded_size_bound(&ev));
}

TEST(SizeBound, NullStringsCountAsEmpty) {
  es_recorded_t ev = {};  // every pointer NULL, event_id ""
  EXPECT_EQ(size_t(11 + 8 * 11 + 5 * 11), es_recorded_size_bound(&ev));
}

int released = 0;
void release_counter(void *owner) {
  released += *static_cast<int *>(owner);
}

TEST(Page, FreeReleasesOwnerAndZeroes) {
  es_page_t page = {};
  es_page_free(&page);  // zeroed page: a no-op
  es_page_free(nullptr);
  int weight = 5;
  page.events = static_cast<es_recorded_t *>(calloc(3, sizeof(es_recorded_t)));
  page.count = 3;
  page.next = 9;
  page.owner = &weight;
  page.release = release_counter;
  released = 0;
  es_page_free(&page);
  EXPECT_EQ(5, released);
  EXPECT_EQ(nullptr, page.events);
  EXPECT_EQ(0u, page.count);
  EXPECT_EQ(0u, page.next);
  EXPECT_EQ(nullptr, page.release);
  es_page_free(&page);  // twice is fine: the page is zeroed
  EXPECT_EQ(5, released);
}

TEST(Clock, NowIsUnixMilliseconds) {
  uint64_t a = es_now_unix_ms();
  EXPECT_GT(a, 1600000000000ull);  // after 2020
  EXPECT_LT(a, 4102444800000ull);  // before 2100
  uint64_t b = es_now_unix_ms();
  EXPECT_LE(a, b);
}

}  // namespace
