/*
 * eventstore.v1.EventStore: translation between the wire messages
 * (protobuf-c) and the core types, and the four RPCs.
 *
 * Requests are unpacked into protobuf-c structs owned by the call; the core
 * request structs borrow their strings. Responses borrow the strings of the
 * backend's page (zero-copy for the memory backend) and are packed into one
 * buffer that gRPC takes over. Everything else lives in the call's arena.
 *
 * Subscribe is a pump over an es_sub_t (core/subscription.h): each step hands
 * out one item and starts one send — one outstanding write per call, so a slow
 * client holds back only itself (real back-pressure through HTTP/2 flow
 * control). At the head the call parks a waiter on the log notifier; the
 * backend's publication wakes it through the worker pool.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "es/validate.h"
#include "eventstore/v1/eventstore.pb-c.h"
#include "log.h"
#include "metrics.h"
#include "server_int.h"

/* ---------------------------------------------------------------- encode */

static Eventstore__V1__RecordedEvent *encode_event(call_t *c, const es_recorded_t *ev) {
  Eventstore__V1__RecordedEvent *m = call_alloc(c, sizeof *m);
  if (!m) return NULL;
  eventstore__v1__recorded_event__init(m);
  m->stream_id = (char *)ev->stream_id;
  m->stream_type = (char *)(ev->stream_type ? ev->stream_type : "");
  m->stream_version = ev->stream_version;
  m->global_position = ev->global_position;
  m->event_id = (char *)ev->event_id;
  m->event_type = (char *)ev->event_type;
  m->event_version = ev->event_version;
  m->content_type = (char *)ev->content_type;
  m->payload.data = (uint8_t *)ev->payload;
  m->payload.len = ev->payload_len;
  m->correlation_id = (char *)(ev->correlation_id ? ev->correlation_id : "");
  m->causation_id = (char *)(ev->causation_id ? ev->causation_id : "");
  m->occurred_at_unix_ms = ev->occurred_at_unix_ms;
  m->recorded_at_unix_ms = ev->recorded_at_unix_ms;
  if (ev->metadata_count) {
    Eventstore__V1__RecordedEvent__MetadataEntry *entries =
        call_alloc(c, ev->metadata_count * sizeof *entries);
    Eventstore__V1__RecordedEvent__MetadataEntry **ptrs =
        call_alloc(c, ev->metadata_count * sizeof *ptrs);
    if (!entries || !ptrs) return NULL;
    for (size_t i = 0; i < ev->metadata_count; i++) {
      eventstore__v1__recorded_event__metadata_entry__init(&entries[i]);
      entries[i].key = (char *)ev->metadata[i].key;
      entries[i].value = (char *)ev->metadata[i].value;
      ptrs[i] = &entries[i];
    }
    m->metadata = ptrs;
    m->n_metadata = ev->metadata_count;
  }
  return m;
}

static Eventstore__V1__RecordedEvent **encode_page(call_t *c, const es_page_t *page) {
  if (!page->count) return NULL;
  Eventstore__V1__RecordedEvent **evs = call_alloc(c, page->count * sizeof *evs);
  if (!evs) return NULL;
  for (size_t i = 0; i < page->count; i++)
    if (!(evs[i] = encode_event(c, &page->events[i]))) return NULL;
  return evs;
}

static void oom(call_t *c) {
  call_set_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
}

static void *arena_alloc(void *ctx, size_t size) {
  return call_alloc(ctx, size);
}

/* ---------------------------------------------------------------- Append */

static grpc_byte_buffer *do_append(call_t *c, const es_config_t *cfg) {
  Eventstore__V1__AppendRequest *m =
      es_unpack(c, &eventstore__v1__append_request__descriptor, c->payload);
  if (!m) return NULL;
  grpc_byte_buffer *resp = NULL;
  es_append_req_t req;
  if (es_codec_append(m, &cfg->limits, arena_alloc, c, &req) != ES_OK) goto oom;
  es_err_t err;
  es_err_clear(&err);
  int rc = es_append_prepare(&cfg->limits, &req, &err);
  es_append_result_t res;
  memset(&res, 0, sizeof res);
  if (rc == ES_OK) rc = es_backend_append(c->srv->backend, &req, &res, &err);
  if (rc != ES_OK) {
    call_set_error(c, &err, rc);
    goto done;
  }
  es_metrics_append_done(res.duplicate ? 0 : req.event_count, res.duplicate);
  Eventstore__V1__AppendResponse r = EVENTSTORE__V1__APPEND_RESPONSE__INIT;
  r.first_stream_version = res.first_version;
  r.last_stream_version = res.last_version;
  r.first_global_position = res.first_position;
  r.last_global_position = res.last_position;
  r.recorded_at_unix_ms = res.recorded_at_unix_ms;
  r.duplicate = res.duplicate;
  resp = es_pack(&r.base);
  if (!resp) oom(c);
  goto done;
oom:
  oom(c);
done:
  protobuf_c_message_free_unpacked(&m->base, NULL);
  return resp;
}

/* ---------------------------------------------------------------- reads */

/* ReadStreamResponse and ReadAllResponse have the same shape: events, the
 * resume point, is_end, and the stream's last version or the log's head. */
static grpc_byte_buffer *pack_page(call_t *c, const es_page_t *page) {
  Eventstore__V1__RecordedEvent **events = encode_page(c, page);
  if (page->count && !events) {
    oom(c);
    return NULL;
  }
  grpc_byte_buffer *resp;
  if (c->method == M_READ_STREAM) {
    Eventstore__V1__ReadStreamResponse r = EVENTSTORE__V1__READ_STREAM_RESPONSE__INIT;
    r.events = events;
    r.n_events = page->count;
    r.next_version = page->next;
    r.is_end = page->is_end;
    r.stream_version = page->last;
    resp = es_pack(&r.base);
  } else {
    Eventstore__V1__ReadAllResponse r = EVENTSTORE__V1__READ_ALL_RESPONSE__INIT;
    r.events = events;
    r.n_events = page->count;
    r.next_position = page->next;
    r.is_end = page->is_end;
    r.head_position = page->last;
    resp = es_pack(&r.base);
  }
  if (!resp) oom(c);
  return resp;
}

/* ReadStream and ReadAll: decode, prepare, read one page, encode. */
static grpc_byte_buffer *do_read(call_t *c, const es_config_t *cfg) {
  bool stream = c->method == M_READ_STREAM;
  ProtobufCMessage *msg = es_unpack(c,
                                    stream ? &eventstore__v1__read_stream_request__descriptor
                                           : &eventstore__v1__read_all_request__descriptor,
                                    c->payload);
  if (!msg) return NULL;
  es_err_t err;
  es_err_clear(&err);
  es_page_t page;
  memset(&page, 0, sizeof page);
  int rc;
  if (stream) {
    es_read_stream_req_t req;
    es_codec_read_stream((const Eventstore__V1__ReadStreamRequest *)msg, &req);
    rc = es_read_stream_prepare(&cfg->limits, &req, &err);
    if (rc == ES_OK) rc = es_backend_read_stream(c->srv->backend, &req, &page, &err);
  } else {
    es_read_all_req_t req;
    es_codec_read_all((const Eventstore__V1__ReadAllRequest *)msg, &req);
    rc = es_read_all_prepare(&cfg->limits, &req, &err);
    if (rc == ES_OK) rc = es_backend_read_all(c->srv->backend, &req, &page, &err);
  }
  grpc_byte_buffer *resp = NULL;
  if (rc == ES_OK)
    resp = pack_page(c, &page);
  else
    call_set_error(c, &err, rc);
  es_page_free(&page);
  protobuf_c_message_free_unpacked(msg, NULL);
  return resp;
}

void rpc_store_unary(call_t *c) {
  const es_config_t *cfg = c->srv->cfg;
  call_finish_unary(c, c->method == M_APPEND ? do_append(c, cfg) : do_read(c, cfg));
}

/* ---------------------------------------------------------------- Subscribe */

static void on_sub_sent(call_t *c, int ok);

/* Runs on the thread that published the new head. For a backend that never
 * blocks the next step is cheap (a read from memory and one send), so it runs
 * right here instead of paying a hand-off to a worker for every live event. */
static void on_wake(es_waiter_t *w) {
  call_t *c = w->arg;
  if (es_backend_is_blocking(c->srv->backend))
    call_schedule(c);
  else
    rpc_subscribe_pump(c);
}

/* Opens the subscription from the request (first pump). Returns false when the
 * call was finished instead. */
static bool sub_open(call_t *c) {
  const es_config_t *cfg = c->srv->cfg;
  es_sub_opts_t opts;
  es_codec_subscribe((const Eventstore__V1__SubscribeRequest *)c->request, &opts);
  es_err_t err;
  es_err_clear(&err);
  int rc = es_sub_open(c->srv->backend, &cfg->limits, &opts, &c->sub, &err);
  protobuf_c_message_free_unpacked(c->request, NULL);
  c->request = NULL;
  if (rc != ES_OK) {
    c->sub = NULL;
    call_set_error(c, &err, rc);
    call_finish_stream(c);
    return false;
  }
  return true;
}

static grpc_byte_buffer *encode_item(call_t *c, const es_sub_item_t *item) {
  Eventstore__V1__SubscribeResponse r = EVENTSTORE__V1__SUBSCRIBE_RESPONSE__INIT;
  Eventstore__V1__CaughtUp cu = EVENTSTORE__V1__CAUGHT_UP__INIT;
  Eventstore__V1__Checkpoint cp = EVENTSTORE__V1__CHECKPOINT__INIT;
  grpc_byte_buffer *bb;
  switch (item->kind) {
    case ES_SUB_EVENT:
      r.message_case = EVENTSTORE__V1__SUBSCRIBE_RESPONSE__MESSAGE_EVENT;
      r.event = encode_event(c, item->event);
      if (!r.event) return NULL;
      bb = es_pack(&r.base);
      /* Event encodings are per message: recycle the arena between sends. */
      arena_block_t *b = c->arena;
      if (b) {
        while (b->next) {
          arena_block_t *n = b->next;
          b->next = n->next;
          free(n);
        }
        b->used = 0;
      }
      return bb;
    case ES_SUB_CAUGHT_UP:
      r.message_case = EVENTSTORE__V1__SUBSCRIBE_RESPONSE__MESSAGE_CAUGHT_UP;
      cu.head_position = item->position;
      r.caught_up = &cu;
      return es_pack(&r.base);
    default:
      r.message_case = EVENTSTORE__V1__SUBSCRIBE_RESPONSE__MESSAGE_CHECKPOINT;
      cp.position = item->position;
      r.checkpoint = &cp;
      return es_pack(&r.base);
  }
}

void rpc_subscribe_pump(call_t *c) {
  es_server_t *srv = c->srv;
  if (!c->sub && !call_is_done(c) && !sub_open(c)) return;
  for (;;) {
    if (call_is_done(c)) {
      if (atomic_load(&c->cancelled))
        call_set_status(c, GRPC_STATUS_CANCELLED, "subscription cancelled");
      else
        call_set_status(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
      call_finish_stream(c);
      return;
    }
    es_sub_item_t item;
    es_err_t err;
    es_err_clear(&err);
    int rc = es_sub_next(c->sub, &item, &err);
    atomic_store_explicit(&c->sub_position, es_sub_position(c->sub), memory_order_relaxed);
    if (rc == ES_OK) {
      call_send(c, encode_item(c, &item), on_sub_sent);
      return;
    }
    if (rc != ES_EAGAIN) {
      call_set_error(c, &err, rc);
      call_finish_stream(c);
      return;
    }
    if (call_park(c, srv->log_notifier, es_sub_position(c->sub), on_wake)) continue;
    return;
  }
}

static void on_sub_sent(call_t *c, int ok) {
  if (!ok) atomic_store(&c->cancelled, 1);
  if (!es_backend_is_blocking(c->srv->backend) || es_sub_has_buffered(c->sub))
    rpc_subscribe_pump(c);
  else
    call_schedule(c);
}

void rpc_subscribe_on_close(call_t *c, int ok) {
  call_stream_closed(c, ok, c->srv->log_notifier);
}

void rpc_subscribe_start(call_t *c) {
  /* A bad request is answered before the stream opens (trailers only), so a
   * client learns of it from the call itself, not after response headers. */
  Eventstore__V1__SubscribeRequest *m =
      es_unpack(c, &eventstore__v1__subscribe_request__descriptor, c->payload);
  if (!m) {
    call_finish_unary(c, NULL);
    return;
  }
  c->request = &m->base;
  es_sub_opts_t opts;
  es_codec_subscribe(m, &opts);
  es_err_t err;
  es_err_clear(&err);
  int rc = es_filter_validate(&c->srv->cfg->limits, &opts.filter, "filter", &err);
  if (rc != ES_OK) {
    call_set_error(c, &err, rc);
    call_finish_unary(c, NULL);
    return;
  }
  /* refs: the driver (set on arrival) + the close watch (taken here). */
  call_start_close_watch(c, rpc_subscribe_on_close);
  if (es_backend_is_blocking(c->srv->backend))
    call_schedule(c);
  else
    rpc_subscribe_pump(c);
}
