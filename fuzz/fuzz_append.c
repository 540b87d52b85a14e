/*
 * fuzz_append: hostile bytes through the whole Append path of the server
 * short of gRPC — the NUL scan and protobuf-c unpack of an AppendRequest, the
 * server's translation (metadata dedupe), es_append_prepare, and the memory
 * backend's append — then reads what was stored back and checks it against
 * what was sent.
 *
 * Each input gets a fresh store with two events already in stream "order-1"
 * (type Order, ids 0190...01 and ...02, which the seeds reuse), so that the
 * idempotency, stream-type and expected-version paths are reachable and a
 * crash reproduces from its input alone. The request is appended twice: when
 * every event id was given and the first append succeeded, the second must be
 * acknowledged as a duplicate with the same result (API.md, idempotency) —
 * also when the request carries a condition that its own events now match.
 * Tags must come back as sent, in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es/backend.h"
#include "es/backend_memory.h"
#include "es/validate.h"
#include "fuzz_common.h"

static es_limits_t limits;

static const char *or_empty(const char *s) {
  return s ? s : "";
}

static void prefill(es_backend_t *b) {
  es_event_data_t evs[2];
  memset(evs, 0, sizeof evs);
  evs[0].event_id = "01900000-0000-7000-8000-000000000001";
  evs[0].event_type = "Created";
  evs[1].event_id = "01900000-0000-7000-8000-000000000002";
  evs[1].event_type = "Shipped";
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

/* What was stored is what was sent. */
static void check_stored(es_backend_t *b, const es_append_req_t *req,
                         const es_append_result_t *res) {
  es_read_stream_req_t rs = {.stream_id = req->stream_id,
                             .from_version = res->first_version,
                             .max_count = (uint32_t)req->event_count,
                             .direction = ES_FORWARD};
  es_err_t err;
  FZ_CHECK(es_read_stream_prepare(&limits, &rs, &err) == ES_OK);
  es_page_t page;
  memset(&page, 0, sizeof page);
  FZ_CHECK(es_backend_read_stream(b, &rs, &page, &err) == ES_OK);
  FZ_CHECK(page.count >= 1 && page.count <= req->event_count);
  for (size_t i = 0; i < page.count; i++) {
    const es_recorded_t *r = &page.events[i];
    const es_event_data_t *d = &req->events[i];
    char id[ES_UUID_STR_LEN + 1];
    es_uuid_format(d->id, id);
    FZ_CHECK(strcmp(r->stream_id, req->stream_id) == 0);
    FZ_CHECK(r->stream_version == res->first_version + i);
    FZ_CHECK(r->global_position == res->first_position + i);
    FZ_CHECK(strcmp(r->event_id, id) == 0);
    FZ_CHECK(strcmp(r->event_type, d->event_type) == 0);
    FZ_CHECK(r->event_version == d->event_version);
    const char *ct = or_empty(d->content_type)[0] ? d->content_type : ES_DEFAULT_CONTENT_TYPE;
    FZ_CHECK(strcmp(r->content_type, ct) == 0);
    FZ_CHECK(r->payload_len == d->payload_len);
    FZ_CHECK(d->payload_len == 0 || memcmp(r->payload, d->payload, d->payload_len) == 0);
    FZ_CHECK(strcmp(or_empty(r->correlation_id), or_empty(d->correlation_id)) == 0);
    FZ_CHECK(strcmp(or_empty(r->causation_id), or_empty(d->causation_id)) == 0);
    FZ_CHECK(r->occurred_at_unix_ms == d->occurred_at_unix_ms);
    FZ_CHECK(r->metadata_count == d->metadata_count);
    for (size_t k = 0; k < d->metadata_count; k++) {
      FZ_CHECK(strcmp(r->metadata[k].key, d->metadata[k].key) == 0);
      FZ_CHECK(strcmp(r->metadata[k].value, d->metadata[k].value) == 0);
    }
    FZ_CHECK(r->tag_count == d->tag_count);
    for (size_t k = 0; k < d->tag_count; k++) FZ_CHECK(strcmp(r->tags[k], d->tags[k]) == 0);
    FZ_CHECK(r->recorded_at_unix_ms == res->recorded_at_unix_ms);
  }
  es_page_free(&page);

  /* The global log holds the batch at the positions given. */
  es_read_all_req_t ra = {.from_position = res->first_position,
                          .max_count = (uint32_t)req->event_count,
                          .direction = ES_FORWARD};
  FZ_CHECK(es_read_all_prepare(&limits, &ra, &err) == ES_OK);
  memset(&page, 0, sizeof page);
  FZ_CHECK(es_backend_read_all(b, &ra, &page, &err) == ES_OK);
  FZ_CHECK(page.count >= 1);
  for (size_t i = 0; i < page.count; i++) {
    FZ_CHECK(page.events[i].global_position == res->first_position + i);
    FZ_CHECK(strcmp(page.events[i].stream_id, req->stream_id) == 0);
  }
  es_page_free(&page);
}

static int append_once(es_backend_t *b, es_append_req_t *req, es_append_result_t *res) {
  es_err_t err;
  es_err_clear(&err);
  memset(res, 0, sizeof *res);
  uint64_t before = head_of(b);
  int rc = es_append_prepare(&limits, req, &err);
  if (rc == ES_OK) rc = es_backend_append(b, req, res, &err);
  uint64_t after = head_of(b);
#ifdef FZ_TRACE /* -DFZ_TRACE: what each append did, to check the seeds */
  fprintf(stderr, "append %s: rc=%d dup=%d %s\n", req->stream_id, rc, res->duplicate, err.msg);
#endif
  if (rc != ES_OK) {
    FZ_CHECK(rc < 0 && err.code == rc);
    FZ_CHECK(memchr(err.msg, 0, sizeof err.msg) != NULL);
    FZ_CHECK(after == before); /* a failed call changes nothing */
    return rc;
  }
  FZ_CHECK(req->event_count >= 1);
  FZ_CHECK(res->last_version - res->first_version + 1 == req->event_count);
  FZ_CHECK(res->last_position - res->first_position + 1 == req->event_count);
  if (res->duplicate) {
    FZ_CHECK(after == before);
  } else {
    FZ_CHECK(res->first_position == before + 1 && res->last_position == after);
    check_stored(b, req, res);
  }
  return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (limits.max_append_events == 0) es_limits_default(&limits);
  ProtobufCMessage *msg = fz_unpack(&eventstore__v1__append_request__descriptor, data, size);
  if (!msg) return 0;
  Eventstore__V1__AppendRequest *m = (Eventstore__V1__AppendRequest *)msg;

  es_backend_t *b = NULL;
  es_err_t err;
  FZ_CHECK(es_mem_open(&b, &err) == ES_OK);
  prefill(b);

  fz_append_t a;
  if (fz_append_translate(m, &limits, &a) == 0) {
    es_append_result_t first, again;
    int rc = append_once(b, &a.req, &first);
    bool all_ids_given = a.req.event_count > 0;
    for (size_t i = 0; i < a.req.event_count; i++)
      if (!a.req.events[i].event_id || !a.req.events[i].event_id[0]) all_ids_given = false;
    int rc2 = append_once(b, &a.req, &again);
    if (rc == ES_OK && all_ids_given) {
      FZ_CHECK(rc2 == ES_OK && again.duplicate);
      FZ_CHECK(again.first_version == first.first_version &&
               again.last_version == first.last_version &&
               again.first_position == first.first_position &&
               again.last_position == first.last_position &&
               again.recorded_at_unix_ms == first.recorded_at_unix_ms);
    }
    fz_append_free(&a);
  }
  es_backend_close(b);
  protobuf_c_message_free_unpacked(msg, NULL);
  return 0;
}
