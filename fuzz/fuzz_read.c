/*
 * fuzz_read: hostile ReadStreamRequest, ReadAllRequest and SubscribeRequest
 * bytes through decoding, the server's translation (server/codec.c, linked,
 * not copied), the prepare/validate functions and the memory backend's reads;
 * Subscribe runs es_sub_open and a bounded number of es_sub_next steps.
 *
 * Input: the first byte selects the request (its value mod 3: 0 ReadStream,
 * 1 ReadAll, 2 Subscribe); the rest is the message. The store is filled once
 * with a few streams and is never written afterwards, so every input sees the
 * same log; its events carry tags ("s:<stream>", "t:<type>"), so that
 * Filter.items reach the tag index. Checks: pages honour max_count, versions and positions run in
 * the asked direction without gaps (unfiltered) and stay within the head, every returned event
 * matches the filter, a subscription hands out increasing positions, CaughtUp at the head, and
 * never more than it may.
 */
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "es/backend.h"
#include "es/backend_memory.h"
#include "es/subscription.h"
#include "es/validate.h"
#include "fuzz_common.h"

#define SUB_STEPS 64

static es_limits_t limits;
static es_backend_t *store;
static uint64_t head;

static void add(const char *stream, const char *type, const char *const *types, size_t n) {
  es_event_data_t evs[8];
  char text[8][2][300];
  const char *tags[8][2];
  memset(evs, 0, sizeof evs);
  for (size_t i = 0; i < n; i++) {
    evs[i].event_type = types[i];
    evs[i].payload = (const uint8_t *)"{}";
    evs[i].payload_len = 2;
    snprintf(text[i][0], sizeof text[i][0], "s:%s", stream);
    snprintf(text[i][1], sizeof text[i][1], "t:%s", types[i]);
    tags[i][0] = text[i][0];
    tags[i][1] = text[i][1];
    evs[i].tags = tags[i];
    evs[i].tag_count = 2;
  }
  es_append_req_t req = {.stream_id = stream, .stream_type = type, .events = evs, .event_count = n};
  es_err_t err;
  es_append_result_t res;
  FZ_CHECK(es_append_prepare(&limits, &req, &err) == ES_OK);
  FZ_CHECK(es_backend_append(store, &req, &res, &err) == ES_OK);
}

static void setup(void) {
  es_limits_default(&limits);
  /* Small pages and scans so that paging and scan bounds are exercised. */
  limits.max_page_events = 8;
  limits.default_page_events = 4;
  limits.max_scan = 6;
  limits.default_checkpoint_interval = 3;
  es_err_t err;
  FZ_CHECK(es_mem_open(&store, &err) == ES_OK);
  static const char *const t1[] = {"Created", "Paid", "Shipped"};
  static const char *const t2[] = {"Registered", "Renamed"};
  static const char *const t3[] = {"Created", "Cancelled"};
  add("order-1", "Order", t1, 3);
  add("customer-1", "Customer", t2, 2);
  add("order-2", "Order", t3, 2);
  add("order-1", "", t1 + 2, 1);
  add("ör-ünïcode", "", t2, 1);
  FZ_CHECK(es_backend_head(store, &head, &err) == ES_OK);
  FZ_CHECK(head == 9);
}

static void check_filter_page(const es_filter_t *f, const es_page_t *page) {
  for (size_t i = 0; i < page->count; i++) {
    const es_recorded_t *r = &page->events[i];
    FZ_CHECK(es_filter_match_tags(f, r->stream_id, r->event_type, r->tags, r->tag_count));
    FZ_CHECK(r->tag_count == 2);
    FZ_CHECK(r->global_position >= 1 && r->global_position <= head);
  }
}

static void read_stream(const uint8_t *data, size_t size) {
  ProtobufCMessage *msg = fz_unpack(&eventstore__v1__read_stream_request__descriptor, data, size);
  if (!msg) return;
  es_read_stream_req_t req;
  es_codec_read_stream((const Eventstore__V1__ReadStreamRequest *)msg, &req);
  es_err_t err;
  es_err_clear(&err);
  es_page_t page;
  memset(&page, 0, sizeof page);
  int rc = es_read_stream_prepare(&limits, &req, &err);
  if (rc == ES_OK) {
    FZ_CHECK(req.max_count >= 1 && req.max_count <= limits.max_page_events);
    rc = es_backend_read_stream(store, &req, &page, &err);
  }
  if (rc == ES_OK) {
    FZ_CHECK(page.count <= req.max_count);
    for (size_t i = 0; i < page.count; i++) {
      const es_recorded_t *r = &page.events[i];
      FZ_CHECK(strcmp(r->stream_id, req.stream_id) == 0);
      FZ_CHECK(r->stream_version >= 1 && r->stream_version <= page.last);
      if (i > 0) {
        uint64_t prev = page.events[i - 1].stream_version;
        FZ_CHECK(req.direction == ES_FORWARD ? r->stream_version == prev + 1
                                             : r->stream_version + 1 == prev);
      }
    }
    if (req.direction == ES_FORWARD && page.is_end)
      FZ_CHECK(page.next == page.last + 1 || page.count == 0);
    if (req.direction == ES_BACKWARD && page.is_end) FZ_CHECK(page.next == 0);
  } else {
    FZ_CHECK(err.code == rc && memchr(err.msg, 0, sizeof err.msg));
    FZ_CHECK(page.count == 0 && page.events == NULL);
  }
  es_page_free(&page);
  protobuf_c_message_free_unpacked(msg, NULL);
}

static void read_all(const uint8_t *data, size_t size) {
  ProtobufCMessage *msg = fz_unpack(&eventstore__v1__read_all_request__descriptor, data, size);
  if (!msg) return;
  es_read_all_req_t req;
  fz_append_t blocks;
  memset(&blocks, 0, sizeof blocks);
  es_err_t err;
  es_err_clear(&err);
  es_page_t page;
  memset(&page, 0, sizeof page);
  int rc = es_codec_read_all((const Eventstore__V1__ReadAllRequest *)msg, fz_alloc, &blocks, &req);
  if (rc != ES_OK) {
    fz_append_free(&blocks);
    protobuf_c_message_free_unpacked(msg, NULL);
    return;
  }
  rc = es_read_all_prepare(&limits, &req, &err);
  if (rc == ES_OK) rc = es_backend_read_all(store, &req, &page, &err);
  if (rc == ES_OK) {
    FZ_CHECK(page.count <= req.max_count);
    FZ_CHECK(page.last == head);
    check_filter_page(&req.filter, &page);
    for (size_t i = 1; i < page.count; i++) {
      uint64_t prev = page.events[i - 1].global_position, cur = page.events[i].global_position;
      FZ_CHECK(req.direction == ES_FORWARD ? cur > prev : cur < prev);
      if (!es_filter_active(&req.filter))
        FZ_CHECK(req.direction == ES_FORWARD ? cur == prev + 1 : cur + 1 == prev);
    }
    if (req.direction == ES_FORWARD && page.count)
      FZ_CHECK(page.next > page.events[page.count - 1].global_position);
  } else {
    FZ_CHECK(err.code == rc && memchr(err.msg, 0, sizeof err.msg));
  }
  es_page_free(&page);
  fz_append_free(&blocks);
  protobuf_c_message_free_unpacked(msg, NULL);
}

static void subscribe(const uint8_t *data, size_t size) {
  ProtobufCMessage *msg = fz_unpack(&eventstore__v1__subscribe_request__descriptor, data, size);
  if (!msg) return;
  es_sub_opts_t opts;
  fz_append_t blocks;
  memset(&blocks, 0, sizeof blocks);
  es_err_t err;
  es_err_clear(&err);
  if (es_codec_subscribe((const Eventstore__V1__SubscribeRequest *)msg, fz_alloc, &blocks, &opts)) {
    fz_append_free(&blocks);
    protobuf_c_message_free_unpacked(msg, NULL);
    return;
  }
  /* rpc_subscribe_start validates the filter before the stream opens. */
  int rc = es_filter_validate(&limits, &opts.filter, "filter", &err);
  es_sub_t *sub = NULL;
  if (rc == ES_OK) rc = es_sub_open(store, &limits, &opts, &sub, &err);
  if (rc == ES_OK) {
    uint64_t last_event = 0;
    int caught_up = 0;
    for (int step = 0; step < SUB_STEPS; step++) {
      es_sub_item_t item;
      rc = es_sub_next(sub, &item, &err);
      if (rc == ES_EAGAIN) {
        FZ_CHECK(caught_up == 1);
        FZ_CHECK(es_sub_position(sub) >= head);
        break;
      }
      FZ_CHECK(rc == ES_OK);
      switch (item.kind) {
        case ES_SUB_EVENT: {
          const es_recorded_t *r = item.event;
          FZ_CHECK(!caught_up && !opts.from_end);
          FZ_CHECK(r->global_position > last_event && r->global_position <= head);
          FZ_CHECK(r->global_position >= opts.from_position);
          FZ_CHECK(es_filter_match_tags(&opts.filter, r->stream_id, r->event_type, r->tags,
                                        r->tag_count));
          last_event = r->global_position;
          break;
        }
        case ES_SUB_CAUGHT_UP:
          FZ_CHECK(!caught_up && item.position == head);
          caught_up = 1;
          break;
        case ES_SUB_CHECKPOINT:
          FZ_CHECK(es_filter_active(&opts.filter));
          FZ_CHECK(item.position <= head);
          break;
        default:
          FZ_CHECK(!"unknown item kind");
      }
    }
    es_sub_close(sub);
  } else {
    FZ_CHECK(err.code == rc && memchr(err.msg, 0, sizeof err.msg));
  }
  fz_append_free(&blocks);
  protobuf_c_message_free_unpacked(msg, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!store) setup();
  if (size < 1) return 0;
  switch (data[0] % 3) {
    case 0:
      read_stream(data + 1, size - 1);
      break;
    case 1:
      read_all(data + 1, size - 1);
      break;
    default:
      subscribe(data + 1, size - 1);
      break;
  }
  return 0;
}
