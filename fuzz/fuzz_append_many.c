/*
 * fuzz_append_many: hostile AppendManyRequest bytes through the whole
 * AppendMany path of the server short of gRPC — the NUL scan and protobuf-c
 * unpack, the server's translation (server/codec.c, linked),
 * es_append_many_prepare and the memory backend's append_many (the AppendMany
 * decision, the tag index, the condition) — then reads what was stored back.
 *
 * Each input gets a fresh store holding two events of "order-1" (ids
 * 0190...01 and ...02, tagged "order:1", which the seeds reuse), so that
 * retries, reuses, versions across appends and conditions are reachable.
 * The request is sent twice: when every event id was given and the first
 * succeeded, the second must be acknowledged with every result a duplicate of
 * the first (Extension 1, settled detail 2).
 *
 * Invariants: a failed request leaves the head unchanged and fills err (its
 * append index, when set, names an append of the request); a stored request
 * occupies head+1.. in one contiguous run, append after append, each with
 * consecutive versions; every stored event reads back with its stream,
 * version, type and tags (a duplicate, acknowledged by its ids, with its
 * ids at the positions of the original).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "es/backend.h"
#include "es/backend_memory.h"
#include "es/validate.h"
#include "fuzz_common.h"

static es_limits_t limits;

static void prefill(es_backend_t *b) {
  es_event_data_t evs[2];
  memset(evs, 0, sizeof evs);
  static const char *const tags[] = {"order:1"};
  evs[0].event_id = "01900000-0000-7000-8000-000000000001";
  evs[0].event_type = "Created";
  evs[0].tags = tags;
  evs[0].tag_count = 1;
  evs[1].event_id = "01900000-0000-7000-8000-000000000002";
  evs[1].event_type = "Shipped";
  evs[1].tags = tags;
  evs[1].tag_count = 1;
  es_append_req_t req = {
      .stream_id = "order-1", .stream_type = "Order", .events = evs, .event_count = 2};
  es_err_t err;
  es_append_result_t res;
  FZ_CHECK(es_append_prepare(&limits, &req, &err) == ES_OK);
  FZ_CHECK(es_backend_append(b, &req, &res, &err) == ES_OK);
}

static uint64_t head_of(es_backend_t *b) {
  uint64_t h = 0;
  es_err_t err;
  FZ_CHECK(es_backend_head(b, &h, &err) == ES_OK);
  return h;
}

/* The events of append a read back at the positions of its result: all of
 * them as sent, or for a duplicate (acknowledged by its ids alone) the ids. */
static void check_stored(es_backend_t *b, const es_append_req_t *a, const es_append_result_t *r) {
  es_read_all_req_t ra = {
      .from_position = r->first_position, .max_count = 1000, .direction = ES_FORWARD};
  es_err_t err;
  FZ_CHECK(es_read_all_prepare(&limits, &ra, &err) == ES_OK);
  ra.max_count = (uint32_t)a->event_count;
  es_page_t page;
  memset(&page, 0, sizeof page);
  FZ_CHECK(es_backend_read_all(b, &ra, &page, &err) == ES_OK);
  FZ_CHECK(page.count >= 1 && page.count <= a->event_count);
  for (size_t i = 0; i < page.count; i++) {
    const es_recorded_t *v = &page.events[i];
    const es_event_data_t *d = &a->events[i];
    char id[ES_UUID_STR_LEN + 1];
    es_uuid_format(d->id, id);
    FZ_CHECK(v->global_position == r->first_position + i);
    FZ_CHECK(v->stream_version == r->first_version + i);
    FZ_CHECK(strcmp(v->stream_id, a->stream_id) == 0);
    FZ_CHECK(strcmp(v->event_id, id) == 0);
    if (r->duplicate) continue;
    FZ_CHECK(strcmp(v->event_type, d->event_type) == 0);
    FZ_CHECK(v->tag_count == d->tag_count);
    for (size_t k = 0; k < d->tag_count; k++) FZ_CHECK(strcmp(v->tags[k], d->tags[k]) == 0);
  }
  es_page_free(&page);
}

static int send_once(es_backend_t *b, es_append_many_req_t *req, es_append_result_t *res) {
  es_err_t err;
  es_err_clear(&err);
  uint64_t before = head_of(b);
  int rc = es_append_many_prepare(&limits, req, &err);
  if (rc == ES_OK) rc = es_backend_append_many(b, req, res, &err);
  uint64_t after = head_of(b);
#ifdef FZ_TRACE
  fprintf(stderr, "append_many: rc=%d %s\n", rc, err.msg);
#endif
  if (rc != ES_OK) {
    FZ_CHECK(rc < 0 && err.code == rc);
    FZ_CHECK(memchr(err.msg, 0, sizeof err.msg) != NULL);
    FZ_CHECK(!err.has_append_index || err.append_index < req->append_count);
    FZ_CHECK(rc != ES_ECONDITION || (err.has_condition_position && !err.has_append_index &&
                                     err.condition_position <= before));
    FZ_CHECK(after == before);
    return rc;
  }
  FZ_CHECK(req->append_count >= 1);
  uint64_t next = res[0].first_position;
  bool dup = res[0].duplicate;
  if (!dup) FZ_CHECK(next == before + 1);
  for (size_t i = 0; i < req->append_count; i++) {
    const es_append_req_t *a = &req->appends[i];
    FZ_CHECK(res[i].duplicate == dup);
    FZ_CHECK(res[i].first_position == next);
    FZ_CHECK(res[i].last_position - res[i].first_position + 1 == a->event_count);
    FZ_CHECK(res[i].last_version - res[i].first_version + 1 == a->event_count);
    next = res[i].last_position + 1;
    check_stored(b, a, &res[i]);
  }
  FZ_CHECK(dup ? after == before : next == after + 1);
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (limits.max_append_events == 0) es_limits_default(&limits);
  ProtobufCMessage *msg = fz_unpack(&eventstore__v1__append_many_request__descriptor, data, size);
  if (!msg) return 0;
  Eventstore__V1__AppendManyRequest *m = (Eventstore__V1__AppendManyRequest *)msg;

  es_backend_t *b = NULL;
  es_err_t err;
  FZ_CHECK(es_mem_open(&b, &err) == ES_OK);
  prefill(b);

  fz_append_t blocks;
  memset(&blocks, 0, sizeof blocks);
  es_append_many_req_t req;
  if (es_codec_append_many(m, &limits, fz_alloc, &blocks, &req) == ES_OK) {
    size_t n = req.append_count ? req.append_count : 1;
    es_append_result_t *first = calloc(n, sizeof *first), *again = calloc(n, sizeof *again);
    FZ_CHECK(first && again);
    int rc = send_once(b, &req, first);
    bool all_ids_given = req.append_count > 0;
    for (size_t i = 0; i < req.append_count; i++)
      for (size_t k = 0; k < req.appends[i].event_count; k++)
        if (!req.appends[i].events[k].event_id || !req.appends[i].events[k].event_id[0])
          all_ids_given = false;
    int rc2 = send_once(b, &req, again);
    if (rc == ES_OK && all_ids_given) {
      FZ_CHECK(rc2 == ES_OK);
      for (size_t i = 0; i < req.append_count; i++) {
        FZ_CHECK(again[i].duplicate);
        FZ_CHECK(again[i].first_position == first[i].first_position &&
                 again[i].first_version == first[i].first_version &&
                 again[i].recorded_at_unix_ms == first[i].recorded_at_unix_ms);
      }
    }
    free(first);
    free(again);
  }
  fz_append_free(&blocks);
  es_backend_close(b);
  protobuf_c_message_free_unpacked(msg, NULL);
  return 0;
}
