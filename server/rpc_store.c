/*
 * eventstore.v1.EventStore: translation between the wire messages
 * (protobuf-c) and the core types, and the five RPCs (AppendMany is
 * Extension 1: validated as a whole by es_append_many_prepare, then one
 * es_backend_append_many, which a backend without it refuses by name).
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
  Eventstore__V1__RecordedEvent__MetadataEntry *entries = NULL, **ptrs = NULL;
  if (ev->metadata_count) {
    entries = call_alloc(c, ev->metadata_count * sizeof *entries);
    ptrs = call_alloc(c, ev->metadata_count * sizeof *ptrs);
  }
  if (!m || (ev->metadata_count && (!entries || !ptrs))) return NULL;
  es_codec_recorded(ev, m, entries, ptrs);
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

/* The wire form of one append's result (Append, and each of AppendMany). */
static void fill_append_response(Eventstore__V1__AppendResponse *r, const es_append_result_t *res) {
  eventstore__v1__append_response__init(r);
  r->first_stream_version = res->first_version;
  r->last_stream_version = res->last_version;
  r->first_global_position = res->first_position;
  r->last_global_position = res->last_position;
  r->recorded_at_unix_ms = res->recorded_at_unix_ms;
  r->duplicate = res->duplicate;
}

/* An Append between its decoding and its response: the request, the core's
 * view of it and the backend's answer, all in the call's arena. */
typedef struct append_call {
  call_t *c;
  Eventstore__V1__AppendRequest *m;
  es_append_req_t req; /* borrows m's strings */
  es_append_result_t res;
  es_err_t err;
} append_call_t;

/* Decodes c's Append; NULL when the call's status is set (a bad or
 * oversized message, or no memory). */
static append_call_t *append_begin(call_t *c, const es_config_t *cfg) {
  Eventstore__V1__AppendRequest *m =
      es_unpack_in_arena(c, &eventstore__v1__append_request__descriptor, c->payload);
  if (!m) return NULL;
  append_call_t *a = call_alloc(c, sizeof *a);
  if (!a || es_codec_append(m, &cfg->limits, arena_alloc, c, &a->req) != ES_OK) {
    oom(c);
    return NULL;
  }
  a->c = c;
  a->m = m;
  es_err_clear(&a->err);
  return a;
}

/* The response to an Append the backend answered with rc (NULL with the
 * call's status set on an error). */
static grpc_byte_buffer *append_end(append_call_t *a, int rc) {
  call_t *c = a->c;
  grpc_byte_buffer *resp = NULL;
  if (rc != ES_OK) {
    call_set_error(c, &a->err, rc);
  } else {
    es_metrics_append_done(a->res.duplicate ? 0 : a->req.event_count, a->res.duplicate);
    Eventstore__V1__AppendResponse r;
    fill_append_response(&r, &a->res);
    resp = es_pack(&r.base);
    if (!resp) oom(c);
  }
  return resp;
}

static grpc_byte_buffer *do_append(call_t *c, const es_config_t *cfg) {
  append_call_t *a = append_begin(c, cfg);
  if (!a) return NULL;
  int rc = es_append_prepare(&cfg->limits, &a->req, &a->err);
  if (rc == ES_OK) rc = es_backend_append(c->srv->backend, &a->req, &a->res, &a->err);
  return append_end(a, rc);
}

/* es_append_done_fn of an asynchronous Append: runs on the thread that
 * committed it (or on the completion-queue thread, for a refusal). */
static void append_done(void *arg, int rc) {
  append_call_t *a = arg;
  call_finish_unary(a->c, append_end(a, rc));
}

void rpc_store_append_async(call_t *c) {
  const es_config_t *cfg = c->srv->cfg;
  append_call_t *a = append_begin(c, cfg);
  if (!a) {
    call_finish_unary(c, NULL);
    return;
  }
  int rc = es_append_prepare(&cfg->limits, &a->req, &a->err);
  if (rc != ES_OK) {
    append_done(a, rc);
    return;
  }
  es_backend_append_async(c->srv->backend, &a->req, &a->res, &a->err, append_done, a);
}

/* ---------------------------------------------------------------- AppendMany */

/* An AppendMany between its decoding and its response, as append_call_t. */
typedef struct many_call {
  call_t *c;
  Eventstore__V1__AppendManyRequest *m;
  es_append_many_req_t req; /* borrows m's strings */
  es_append_result_t *res;  /* req.append_count of them, once prepared */
  es_err_t err;
} many_call_t;

/* Decodes and prepares c's AppendMany. NULL when the call's status is set;
 * else *rc is ES_OK (a->res allocated) or the refusal (a->err says why). */
static many_call_t *many_begin(call_t *c, const es_config_t *cfg, int *rc) {
  Eventstore__V1__AppendManyRequest *m =
      es_unpack_in_arena(c, &eventstore__v1__append_many_request__descriptor, c->payload);
  if (!m) return NULL;
  many_call_t *a = call_alloc(c, sizeof *a);
  if (!a || es_codec_append_many(m, &cfg->limits, arena_alloc, c, &a->req) != ES_OK) goto oom;
  a->c = c;
  a->m = m;
  es_err_clear(&a->err);
  *rc = es_append_many_prepare(&cfg->limits, &a->req, &a->err);
  if (*rc == ES_OK && !(a->res = call_alloc(c, a->req.append_count * sizeof *a->res))) goto oom;
  return a;
oom:
  oom(c);
  return NULL;
}

/* The response to an AppendMany the backend answered with rc (NULL with the
 * call's status set on an error). */
static grpc_byte_buffer *many_end(many_call_t *a, int rc) {
  call_t *c = a->c;
  grpc_byte_buffer *resp = NULL;
  size_t n = a->req.append_count;
  Eventstore__V1__AppendResponse *rs = NULL, **ptrs = NULL;
  if (rc != ES_OK) {
    call_set_error(c, &a->err, rc);
    goto done;
  }
  rs = call_alloc(c, n * sizeof *rs);
  ptrs = call_alloc(c, n * sizeof *ptrs);
  if (!rs || !ptrs) {
    oom(c);
    goto done;
  }
  size_t events = 0;
  for (size_t i = 0; i < n; i++) {
    events += a->req.appends[i].event_count;
    fill_append_response(&rs[i], &a->res[i]);
    ptrs[i] = &rs[i];
  }
  es_metrics_append_done(a->res[0].duplicate ? 0 : events, a->res[0].duplicate);
  Eventstore__V1__AppendManyResponse r = EVENTSTORE__V1__APPEND_MANY_RESPONSE__INIT;
  r.results = ptrs;
  r.n_results = n;
  resp = es_pack(&r.base);
  if (!resp) oom(c);
done:
  return resp;
}

static grpc_byte_buffer *do_append_many(call_t *c, const es_config_t *cfg) {
  int rc;
  many_call_t *a = many_begin(c, cfg, &rc);
  if (!a) return NULL;
  if (rc == ES_OK) rc = es_backend_append_many(c->srv->backend, &a->req, a->res, &a->err);
  return many_end(a, rc);
}

/* es_append_done_fn of an asynchronous AppendMany (see append_done). */
static void many_done(void *arg, int rc) {
  many_call_t *a = arg;
  call_finish_unary(a->c, many_end(a, rc));
}

void rpc_store_append_many_async(call_t *c) {
  int rc;
  many_call_t *a = many_begin(c, c->srv->cfg, &rc);
  if (!a) {
    call_finish_unary(c, NULL);
    return;
  }
  if (rc != ES_OK) {
    many_done(a, rc);
    return;
  }
  es_backend_append_many_async(c->srv->backend, &a->req, a->res, &a->err, many_done, a);
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
    rc = es_codec_read_all((const Eventstore__V1__ReadAllRequest *)msg, arena_alloc, c, &req);
    if (rc != ES_OK)
      es_err_set(&err, rc, "out of memory decoding the request");
    else
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
  grpc_byte_buffer *resp;
  if (c->method == M_APPEND)
    resp = do_append(c, cfg);
  else if (c->method == M_APPEND_MANY)
    resp = do_append_many(c, cfg);
  else
    resp = do_read(c, cfg);
  call_finish_unary(c, resp);
}

/* ---------------------------------------------------------------- Subscribe */

/* The largest max_batch a request may ask for (API.md, Extension 2). */
#define MAX_BATCH 1000

static void on_sub_sent(call_t *c, int ok);

/* True when the next step of c reads only memory: a held-back message, a
 * buffered page, the live window, or a backend that never blocks. Such a step
 * runs on the delivery queue's thread at hand; one that would wait on a
 * blocking backend goes to a delivery worker, so that a database read never
 * holds up the completions of other subscriptions. */
static bool step_is_cheap(call_t *c) {
  es_server_t *srv = c->srv;
  if (!es_backend_is_blocking(srv->backend)) return true;
  if (!c->sub) return false; /* opening reads the backend's head */
  return c->has_pending || c->has_pending_event || es_sub_has_buffered(c->sub) ||
         es_tail_holds(srv->tail, es_sub_cursor(c->sub));
}

/* Runs on the live window's filler thread, which must go back to reading the
 * log: the step itself goes to a worker, so delivery uses every core and a
 * thousand wake-ups cost the filler a thousand queue insertions. */
static void on_wake(es_waiter_t *w) {
  call_schedule(w->arg);
}

/* Opens the subscription from the request (first pump). Returns false when the
 * call was finished instead. */
static bool sub_open(call_t *c) {
  const es_config_t *cfg = c->srv->cfg;
  es_sub_opts_t opts;
  es_err_t err;
  es_err_clear(&err);
  int rc = es_codec_subscribe((const Eventstore__V1__SubscribeRequest *)c->request, arena_alloc, c,
                              &opts);
  opts.read = es_tail_read;
  opts.read_ctx = c->srv->tail;
  if (rc != ES_OK)
    es_err_set(&err, rc, "out of memory decoding the request");
  else
    rc = es_sub_open(c->srv->backend, &cfg->limits, &opts, &c->sub, &err);
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

/* CaughtUp or Checkpoint, alone in its message. */
static grpc_byte_buffer *encode_marker(const es_sub_item_t *item) {
  Eventstore__V1__SubscribeResponse r = EVENTSTORE__V1__SUBSCRIBE_RESPONSE__INIT;
  Eventstore__V1__CaughtUp cu = EVENTSTORE__V1__CAUGHT_UP__INIT;
  Eventstore__V1__Checkpoint cp = EVENTSTORE__V1__CHECKPOINT__INIT;
  if (item->kind == ES_SUB_CAUGHT_UP) {
    r.message_case = EVENTSTORE__V1__SUBSCRIBE_RESPONSE__MESSAGE_CAUGHT_UP;
    cu.head_position = item->position;
    r.caught_up = &cu;
  } else {
    r.message_case = EVENTSTORE__V1__SUBSCRIBE_RESPONSE__MESSAGE_CHECKPOINT;
    cp.position = item->position;
    r.checkpoint = &cp;
  }
  return es_pack(&r.base);
}

static void release_events(grpc_slice *ev, size_t n) {
  for (size_t i = 1; i <= n; i++) grpc_slice_unref(ev[i]);
}

/* One message of n events: ev[1..n] each hold the bytes of field 1 with a
 * RecordedEvent (tail.h), which is a whole SubscribeResponse{event} and also
 * one element of EventBatch.events. With max_batch > 1, ev[0] becomes the
 * header of SubscribeResponse.batch. No event byte is copied: the buffer
 * refers to the slices. Consumes the references of ev[1..n]. */
static grpc_byte_buffer *pack_events(call_t *c, grpc_slice *ev, size_t n, size_t bytes) {
  grpc_byte_buffer *bb;
  if (c->max_batch <= 1) {
    bb = grpc_raw_byte_buffer_create(&ev[1], 1);
  } else {
    ev[0] = es_tail_batch_header(bytes);
    bb = grpc_raw_byte_buffer_create(ev, n + 1);
    grpc_slice_unref(ev[0]);
  }
  release_events(ev, n);
  return bb;
}

/* Doubles the slots of c->batch, up to max_batch + 1: a subscription pays
 * for large batches only once it has received one. False when out of memory
 * (the batch then ends where it is). */
static bool grow_batch(call_t *c) {
  size_t cap = c->batch_cap * 2;
  if (cap > (size_t)c->max_batch + 1) cap = (size_t)c->max_batch + 1;
  if (cap <= c->batch_cap) return false;
  grpc_slice *b = realloc(c->batch, cap * sizeof *b);
  if (!b) return false;
  c->batch = b;
  c->batch_cap = cap;
  return true;
}

/* One step: sends the next message (a batch of whatever events are ready, or
 * a CaughtUp / Checkpoint), or parks at the head, or ends the call. */
void rpc_subscribe_pump(call_t *c) {
  es_server_t *srv = c->srv;
  if (!c->sub && !call_is_done(c) && !sub_open(c)) return;
  size_t budget = srv->cfg->limits.max_page_bytes ? srv->cfg->limits.max_page_bytes : SIZE_MAX;
  for (;;) {
    if (call_is_done(c)) {
      if (atomic_load(&c->cancelled))
        call_set_status(c, GRPC_STATUS_CANCELLED, "subscription cancelled");
      else
        call_set_status(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
      call_finish_stream(c);
      return;
    }
    if (c->has_pending) { /* a marker that ended the last batch */
      c->has_pending = false;
      call_send(c, encode_marker(&c->pending), on_sub_sent);
      return;
    }
    size_t n = 0, bytes = 0;
    if (c->has_pending_event) {
      c->has_pending_event = false;
      c->batch[++n] = c->pending_event;
      bytes += GRPC_SLICE_LENGTH(c->pending_event);
    }
    es_err_t err;
    es_err_clear(&err);
    int rc = ES_OK;
    while (n < c->max_batch) {
      es_sub_item_t item;
      rc = es_sub_next(c->sub, &item, &err);
      if (rc != ES_OK) break;
      if (item.kind != ES_SUB_EVENT) {
        if (n > 0) { /* a batch never spans a marker: it goes next */
          c->pending = item;
          c->has_pending = true;
          break;
        }
        atomic_store_explicit(&c->sub_position, es_sub_position(c->sub), memory_order_relaxed);
        call_send(c, encode_marker(&item), on_sub_sent);
        return;
      }
      grpc_slice one;
      if (item.encoded) {
        one = grpc_slice_ref(es_tail_wire(item.encoded));
      } else if (!es_tail_encode(item.event, &one)) {
        /* The cursor is past this event: end the stream rather than skip
         * it; the client resumes after the last event it received. */
        release_events(c->batch, n);
        call_set_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory encoding an event");
        call_finish_stream(c);
        return;
      }
      size_t len = GRPC_SLICE_LENGTH(one);
      /* Over the byte budget, or no slot for it (growing failed): it opens
       * the next batch instead. */
      if (n > 0 && (bytes + len > budget || (n + 2 > c->batch_cap && !grow_batch(c)))) {
        c->pending_event = one;
        c->has_pending_event = true;
        break;
      }
      c->batch[++n] = one;
      bytes += len;
    }
    atomic_store_explicit(&c->sub_position, es_sub_position(c->sub), memory_order_relaxed);
    if (n > 0) {
      /* Sent first whatever ended the loop: a failed read is retried by the
       * next step (the cursor did not move), and EAGAIN comes back too. */
      es_metrics_subscription_sent(n);
      call_send(c, pack_events(c, c->batch, n, bytes), on_sub_sent);
      return;
    }
    if (rc != ES_EAGAIN) {
      call_set_error(c, &err, rc);
      call_finish_stream(c);
      return;
    }
    if (call_park(c, es_tail_notifier(srv->tail), es_sub_position(c->sub), on_wake)) continue;
    return;
  }
}

/* On a thread of the delivery queue (Subscribe calls are bound to it), which
 * serves no Append: the next step runs right here when it is cheap. */
static void on_sub_sent(call_t *c, int ok) {
  if (!ok) atomic_store(&c->cancelled, 1);
  if (step_is_cheap(c))
    rpc_subscribe_pump(c);
  else
    call_schedule(c);
}

void rpc_subscribe_on_close(call_t *c, int ok) {
  call_stream_closed(c, ok, es_tail_notifier(c->srv->tail));
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
  es_err_t err;
  es_err_clear(&err);
  int rc = es_codec_subscribe(m, arena_alloc, c, &opts);
  if (rc != ES_OK)
    es_err_set(&err, rc, "out of memory decoding the request");
  else
    rc = es_filter_validate(&c->srv->cfg->limits, &opts.filter, "filter", &err);
  /* A query the backend cannot serve is refused before the stream opens. */
  if (rc == ES_OK)
    rc = es_backend_check_filter(c->srv->backend, &opts.filter, "filter.items", &err);
  if (rc != ES_OK) {
    call_set_error(c, &err, rc);
    call_finish_unary(c, NULL);
    return;
  }
  if (m->max_batch > MAX_BATCH) {
    char msg[96];
    snprintf(msg, sizeof msg, "max_batch: %u exceeds the limit of %d", m->max_batch, MAX_BATCH);
    call_set_status(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
    call_finish_unary(c, NULL);
    return;
  }
  c->max_batch = m->max_batch > 1 ? m->max_batch : 1;
  c->batch_cap = c->max_batch < 16 ? (size_t)c->max_batch + 1 : 17;
  c->batch = malloc(c->batch_cap * sizeof *c->batch);
  if (!c->batch) {
    oom(c);
    call_finish_unary(c, NULL);
    return;
  }
  es_tail_attach(c->srv->tail);
  c->attached = true;
  /* refs: the driver (set on arrival) + the close watch (taken here). */
  call_start_close_watch(c, rpc_subscribe_on_close);
  if (step_is_cheap(c))
    rpc_subscribe_pump(c);
  else
    call_schedule(c);
}
