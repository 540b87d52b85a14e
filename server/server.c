/*
 * The call machinery on the gRPC C core.
 *
 * For every registered method a few requested calls are kept posted on the
 * completion queue; when one arrives it is replaced by a fresh request and
 * dispatched. Unary calls carry their request payload on arrival
 * (GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER) and are answered with a single
 * batch (initial metadata, message, status, close). A generic request is
 * always posted too, so calls to unknown methods get UNIMPLEMENTED instead of
 * hanging.
 *
 * Shutdown (es_server_stop): health turns NOT_SERVING (Watch streams see it),
 * the server stops accepting calls (GOAWAY), and only then are subscriptions
 * woken to end with UNAVAILABLE, so that no resubscription meets the core's
 * CANCELLED for calls that arrive too late. We wait for the live-call count
 * to reach zero — cancelling whatever is left after the grace period — before
 * the queue is shut down and drained. The core's shutdown tag alone would not
 * wait for calls the application still holds.
 *
 * Authentication (--auth-tokens-file) is checked in on_new, on arrival and
 * before any byte of the request is decoded; grpc.health.v1 stays open so
 * that load balancers and probes need no secret.
 */
#include "server.h"

#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "log.h"
#include "metrics.h"
#include "server_int.h"

#ifdef ES_TEST_HOOKS
#include "test_hooks.h"
void (*es__test_hook_parked)(const char *method);
void (*es__test_hook_call_freed)(const char *method);
#define TEST_HOOK(hook, c) ((hook) ? (hook)(es__method_name((c)->method)) : (void)0)
#else
#define TEST_HOOK(hook, c) ((void)0)
#endif

#define REQUESTS_PER_METHOD 4
/* How far below the process's priority subscription delivery runs. Writers
 * come first: under contention for the cores an Append's thread gets most of
 * a core and delivery what is left, so a hundred subscribers do not slow the
 * writers; they fall behind instead (their next batch is larger) and catch up
 * when the writers pause. With idle cores delivery runs at once, as fast. */
#define DELIVERY_NICE 10

static const struct {
  const char *path;
  grpc_server_register_method_payload_handling payload;
} METHODS[M_COUNT] = {
    [M_APPEND] = {"/eventstore.v1.EventStore/Append", GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER},
    [M_READ_STREAM] = {"/eventstore.v1.EventStore/ReadStream",
                       GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER},
    [M_READ_ALL] = {"/eventstore.v1.EventStore/ReadAll", GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER},
    [M_APPEND_MANY] = {"/eventstore.v1.EventStore/AppendMany",
                       GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER},
    [M_SUBSCRIBE] = {"/eventstore.v1.EventStore/Subscribe",
                     GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER},
    [M_HEALTH_CHECK] = {"/grpc.health.v1.Health/Check", GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER},
    [M_HEALTH_WATCH] = {"/grpc.health.v1.Health/Watch", GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER},
    [M_REFLECTION] = {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                      GRPC_SRM_PAYLOAD_NONE},
    [M_REFLECTION_V1] = {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                         GRPC_SRM_PAYLOAD_NONE},
};

const char *es__method_name(method_id_t m) {
  return m < M_COUNT ? METHODS[m].path + 1 : "unknown";
}

/* ---------------------------------------------------------------- arena */

void *call_alloc(call_t *c, size_t size) {
  size = (size + 15) & ~(size_t)15;
  arena_block_t *b = c->arena;
  if (!b || b->cap - b->used < size) {
    size_t cap = size > 8192 ? size : 8192;
    arena_block_t *nb = malloc(sizeof *nb + cap);
    if (!nb) return NULL;
    nb->next = b;
    nb->used = 0;
    nb->cap = cap;
    c->arena = b = nb;
  }
  void *p = b->data + b->used;
  b->used += size;
  memset(p, 0, size);
  return p;
}

static void arena_free(call_t *c) {
  arena_block_t *b = c->arena;
  while (b) {
    arena_block_t *next = b->next;
    free(b);
    b = next;
  }
  c->arena = NULL;
}

/* ---------------------------------------------------------------- codec */

/* Decodes one byte range (codec.c); a failure becomes the call's status. */
static void *unpack_bytes(call_t *c, const ProtobufCMessageDescriptor *d, const uint8_t *data,
                          size_t len, ProtobufCAllocator *alloc) {
  char msg[256];
  void *m = es_codec_unpack(d, data, len, alloc, msg, sizeof msg);
  if (!m) call_set_status(c, GRPC_STATUS_INVALID_ARGUMENT, msg);
  return m;
}

static void *arena_pb_alloc(void *c, size_t size) {
  return call_alloc(c, size);
}

static void arena_pb_free(void *c, void *p) {
  (void)c;
  (void)p; /* the arena goes with the call */
}

static void *unpack(call_t *c, const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb,
                    ProtobufCAllocator *alloc) {
  if (!bb) {
    call_set_status(c, GRPC_STATUS_INVALID_ARGUMENT, "missing request message");
    return NULL;
  }
  if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
      bb->data.raw.slice_buffer.count <= 1) {
    if (bb->data.raw.slice_buffer.count == 0) return unpack_bytes(c, d, NULL, 0, alloc);
    grpc_slice s = bb->data.raw.slice_buffer.slices[0];
    return unpack_bytes(c, d, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), alloc);
  }
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb)) {
    call_set_status(c, GRPC_STATUS_INVALID_ARGUMENT, "cannot decompress the request");
    return NULL;
  }
  grpc_slice s = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  void *m = unpack_bytes(c, d, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), alloc);
  grpc_slice_unref(s);
  return m;
}

void *es_unpack(call_t *c, const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb) {
  return unpack(c, d, bb, NULL);
}

void *es_unpack_in_arena(call_t *c, const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb) {
  ProtobufCAllocator alloc = {arena_pb_alloc, arena_pb_free, c};
  return unpack(c, d, bb, &alloc);
}

static void free_packed(void *p) {
  free(p);
}

grpc_byte_buffer *es_pack(const ProtobufCMessage *m) {
  size_t len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return NULL;
  protobuf_c_message_pack(m, buf);
  grpc_slice s = grpc_slice_new(buf, len, free_packed);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
  grpc_slice_unref(s);
  return bb;
}

/* ---------------------------------------------------------------- calls */

static void on_new(call_t *c, int ok);
static void post_request(es_server_t *srv, method_id_t m);

static call_t *call_new(es_server_t *srv, method_id_t m) {
  call_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->srv = srv;
  c->method = m;
  grpc_metadata_array_init(&c->req_md);
  grpc_call_details_init(&c->details);
  c->t_new = (op_tag_t){on_new, c};
  c->watch_last_sent = -1;
  c->status = GRPC_STATUS_OK;
  atomic_init(&c->refs, 0);
  atomic_init(&c->cancelled, 0);
  atomic_init(&c->sub_position, ES_SUB_POSITION_UNKNOWN);
  return c;
}

static void call_free(call_t *c, bool live) {
  es_server_t *srv = c->srv;
  /* Out of the registry before the grpc_call goes: cancel_streams, under the
   * same lock, may otherwise cancel a call whose last reference is gone. */
  if (live && c->in_registry) {
    pthread_mutex_lock(&srv->mu);
    if (c->stream_prev)
      c->stream_prev->stream_next = c->stream_next;
    else
      srv->streams = c->stream_next;
    if (c->stream_next) c->stream_next->stream_prev = c->stream_prev;
    c->in_registry = false;
    srv->live_streams--;
    pthread_mutex_unlock(&srv->mu);
  }
  if (c->sub) es_sub_close(c->sub);
  if (c->attached) es_tail_detach(srv->tail);
  if (c->has_pending_event) grpc_slice_unref(c->pending_event);
  free(c->batch);
  if (c->request) protobuf_c_message_free_unpacked(c->request, NULL);
  if (c->payload) grpc_byte_buffer_destroy(c->payload);
  if (c->call) grpc_call_unref(c->call);
  grpc_metadata_array_destroy(&c->req_md);
  grpc_call_details_destroy(&c->details);
  if (c->has_status_details) grpc_slice_unref(c->status_details);
  for (size_t i = 0; i < c->n_trailer; i++) {
    grpc_slice_unref(c->trailer[i].key);
    grpc_slice_unref(c->trailer[i].value);
  }
  free(c->watch_service);
  arena_free(c);
  if (live) {
    es_metrics_call_done(c->method, c->status, es_metrics_now_ns() - c->arrival_ns);
    pthread_mutex_lock(&srv->mu);
    srv->live_calls--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    TEST_HOOK(es__test_hook_call_freed, c);
  }
  free(c);
}

void call_ref(call_t *c) {
  atomic_fetch_add(&c->refs, 1);
}

void call_unref(call_t *c) {
  if (atomic_fetch_sub(&c->refs, 1) == 1) call_free(c, true);
}

bool call_is_done(call_t *c) {
  return atomic_load(&c->cancelled) || atomic_load(&c->srv->shutting_down);
}

void call_set_status(call_t *c, grpc_status_code code, const char *msg) {
  c->status = code;
  if (c->has_status_details) grpc_slice_unref(c->status_details);
  c->status_details = grpc_slice_from_copied_string(msg ? msg : "");
  c->has_status_details = true;
  if (code != GRPC_STATUS_OK)
    ES_LOG_DEBUG_F("call %s: status %d: %s", es__method_name(c->method), (int)code, msg ? msg : "");
}

void call_set_error(call_t *c, const es_err_t *err, int rc) {
  grpc_status_code code;
  switch (rc) {
    case ES_EINVAL:
      code = GRPC_STATUS_INVALID_ARGUMENT;
      break;
    case ES_ETOOBIG:
      code = GRPC_STATUS_RESOURCE_EXHAUSTED;
      break;
    case ES_EVERSION:
      code = GRPC_STATUS_ABORTED;
      break;
    case ES_ENOTFOUND:
      code = GRPC_STATUS_NOT_FOUND;
      break;
    case ES_EEXIST:
      code = GRPC_STATUS_ALREADY_EXISTS;
      break;
    case ES_ETYPE:
      code = GRPC_STATUS_FAILED_PRECONDITION;
      break;
    case ES_EUNAVAIL:
      code = GRPC_STATUS_UNAVAILABLE;
      break;
    case ES_ENOMEM:
    case ES_ENOSPACE:
      code = GRPC_STATUS_RESOURCE_EXHAUSTED;
      break;
    case ES_ECANCELLED:
      code = GRPC_STATUS_CANCELLED;
      break;
    case ES_ECONDITION:
      code = GRPC_STATUS_ABORTED;
      break;
    case ES_EUNSUPPORTED:
      code = GRPC_STATUS_UNIMPLEMENTED;
      break;
    default:
      code = GRPC_STATUS_INTERNAL;
      break;
  }
  const char *msg = (err && err->msg[0]) ? err->msg : es_strerror(rc);
  call_set_status(c, code, msg);
  /* Trailers are decimal ASCII (API.md details 8, Extension 1); set once. */
  if (err && c->n_trailer == 0) {
    char buf[24];
    if (err->has_append_index) {
      snprintf(buf, sizeof buf, "%" PRIu64, err->append_index);
      c->trailer[c->n_trailer].key = grpc_slice_from_static_string("es-append-index");
      c->trailer[c->n_trailer++].value = grpc_slice_from_copied_string(buf);
    }
    if (rc == ES_EVERSION && err->has_actual_version) {
      snprintf(buf, sizeof buf, "%" PRIu64, err->actual_version);
      c->trailer[c->n_trailer].key = grpc_slice_from_static_string("es-actual-version");
      c->trailer[c->n_trailer++].value = grpc_slice_from_copied_string(buf);
    } else if (rc == ES_ECONDITION && err->has_condition_position) {
      snprintf(buf, sizeof buf, "%" PRIu64, err->condition_position);
      c->trailer[c->n_trailer].key = grpc_slice_from_static_string("es-condition-position");
      c->trailer[c->n_trailer++].value = grpc_slice_from_copied_string(buf);
    }
  }
  if (code == GRPC_STATUS_INTERNAL || code == GRPC_STATUS_UNAVAILABLE || rc == ES_ENOMEM ||
      rc == ES_ENOSPACE)
    es_metrics_backend_error(rc);
  if (code == GRPC_STATUS_INTERNAL || code == GRPC_STATUS_UNAVAILABLE)
    es_log(ES_LOG_ERROR, "%s failed: %s (%s)", es__method_name(c->method), msg, es_errname(rc));
}

static void fill_status_op(call_t *c, grpc_op *op) {
  memset(op, 0, sizeof *op);
  op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  op->data.send_status_from_server.status = c->status;
  op->data.send_status_from_server.status_details =
      c->has_status_details ? &c->status_details : NULL;
  op->data.send_status_from_server.trailing_metadata_count = c->n_trailer;
  op->data.send_status_from_server.trailing_metadata = c->n_trailer ? c->trailer : NULL;
}

static void on_unary_done(call_t *c, int ok) {
  call_unref(c);
}

void call_finish_unary(call_t *c, grpc_byte_buffer *response) {
  grpc_op ops[4];
  size_t n = 0;
  memset(ops, 0, sizeof ops);
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (response) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = response;
  }
  fill_status_op(c, &ops[n++]);
  ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[n++].data.recv_close_on_server.cancelled = &c->close_cancelled;
  c->t_done = (op_tag_t){on_unary_done, c};
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_done, NULL);
  if (response) grpc_byte_buffer_destroy(response);
  if (e != GRPC_CALL_OK) {
    es_log(ES_LOG_ERROR, "start_batch (unary finish) failed: %d", (int)e);
    call_unref(c);
  }
}

static void on_stream_done(call_t *c, int ok) {
  call_unref(c); /* the driver */
}

void call_finish_stream(call_t *c) {
  grpc_op ops[2];
  size_t n = 0;
  memset(ops, 0, sizeof ops);
  if (!c->initial_md_sent) {
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->initial_md_sent = true;
  }
  fill_status_op(c, &ops[n++]);
  c->t_done = (op_tag_t){on_stream_done, c};
  if (grpc_call_start_batch(c->call, ops, n, &c->t_done, NULL) != GRPC_CALL_OK) call_unref(c);
}

bool call_send(call_t *c, grpc_byte_buffer *msg, void (*next)(call_t *c, int ok)) {
  if (!msg) {
    call_set_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory encoding a message");
    call_finish_stream(c);
    return false;
  }
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_SEND_MESSAGE;
  op.data.send_message.send_message = msg;
  c->t_send = (op_tag_t){next, c};
  grpc_call_error e = grpc_call_start_batch(c->call, &op, 1, &c->t_send, NULL);
  grpc_byte_buffer_destroy(msg);
  if (e != GRPC_CALL_OK) {
    es_log(ES_LOG_ERROR, "start_batch (send) failed: %d", (int)e);
    atomic_store(&c->cancelled, 1);
    call_set_status(c, GRPC_STATUS_INTERNAL, "send failed");
    call_finish_stream(c);
    return false;
  }
  return true;
}

bool call_park(call_t *c, es_notifier_t *n, uint64_t after, void (*wake)(es_waiter_t *w)) {
  c->waiter.fn = wake;
  c->waiter.arg = c;
  /* Once the waiter is registered the driver's reference belongs to it: a
   * publish (or a cancellation) on another thread may fire it, finish the call
   * and release that reference before es_notifier_wait even returns here. This
   * thread still reads c afterwards, so it holds a reference of its own until
   * it is done with c. */
  call_ref(c);
  if (es_notifier_wait(n, &c->waiter, after) == 1) {
    call_unref(c); /* not registered: the caller still holds the driver's */
    return true;
  }
  TEST_HOOK(es__test_hook_parked, c);
  bool taken_back = call_is_done(c) && es_notifier_cancel(n, &c->waiter) == 1;
  /* Taken back: the driver's reference is the caller's again, so this is not
   * the last one. Otherwise it may be, and c must not be touched after it. */
  call_unref(c);
  return taken_back;
}

void call_stream_closed(call_t *c, int ok, es_notifier_t *n) {
  if (c->close_cancelled || !ok) {
    atomic_store(&c->cancelled, 1);
    if (es_notifier_cancel(n, &c->waiter) == 1) call_schedule(c);
  }
  call_unref(c);
}

void call_start_close_watch(call_t *c, void (*on_close)(call_t *c, int ok)) {
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  ops[1].data.recv_close_on_server.cancelled = &c->close_cancelled;
  c->initial_md_sent = true;
  c->t_close = (op_tag_t){on_close, c};
  es_server_t *srv = c->srv;
  pthread_mutex_lock(&srv->mu);
  c->stream_prev = NULL;
  c->stream_next = srv->streams;
  if (srv->streams) srv->streams->stream_prev = c;
  srv->streams = c;
  c->in_registry = true;
  srv->live_streams++;
  pthread_mutex_unlock(&srv->mu);
  call_ref(c);
  if (grpc_call_start_batch(c->call, ops, 2, &c->t_close, NULL) != GRPC_CALL_OK) {
    es_log(ES_LOG_ERROR, "start_batch (close watch) failed");
    atomic_store(&c->cancelled, 1);
    call_unref(c);
  }
}

static void call_run_job(es_job_t *job) {
  call_t *c = (call_t *)((char *)job - offsetof(call_t, job));
  switch (c->method) {
    case M_APPEND:
    case M_READ_STREAM:
    case M_READ_ALL:
    case M_APPEND_MANY:
      rpc_store_unary(c);
      break;
    case M_SUBSCRIBE:
      rpc_subscribe_pump(c);
      break;
    case M_HEALTH_WATCH:
      rpc_health_watch_pump(c);
      break;
    default:
      es_log(ES_LOG_ERROR, "job for method %d: not expected", (int)c->method);
      break;
  }
}

void call_schedule(call_t *c) {
  c->job.fn = call_run_job;
  es_workers_submit(c->method == M_SUBSCRIBE ? c->srv->delivery : c->srv->workers, &c->job);
}

static void answer_unimplemented(call_t *c) {
  char msg[512];
  size_t len = GRPC_SLICE_LENGTH(c->details.method);
  if (len > 400) len = 400;
  snprintf(msg, sizeof msg, "unknown method %.*s", (int)len,
           (const char *)GRPC_SLICE_START_PTR(c->details.method));
  call_set_status(c, GRPC_STATUS_UNIMPLEMENTED, msg);
  call_finish_unary(c, NULL);
}

static void on_new(call_t *c, int ok) {
  es_server_t *srv = c->srv;
  if (!ok) { /* the server is shutting down: this request will never be matched */
    call_free(c, false);
    return;
  }
  c->arrival_ns = es_metrics_now_ns();
  pthread_mutex_lock(&srv->mu);
  srv->live_calls++;
  pthread_mutex_unlock(&srv->mu);
  if (!atomic_load(&srv->closing)) post_request(srv, c->method);
  atomic_store(&c->refs, 1);
  if (srv->tokens && c->method != M_HEALTH_CHECK && c->method != M_HEALTH_WATCH &&
      !es_tokens_check_metadata(srv->tokens, &c->req_md)) {
    call_set_status(c, GRPC_STATUS_UNAUTHENTICATED, "missing or invalid bearer token");
    call_finish_unary(c, NULL);
    return;
  }
  /* A Subscribe is not answered here: it opens as usual and ends with the
   * other streams, once the GOAWAY is out (es_server_stop). */
  if (atomic_load(&srv->draining) && c->method < M_SUBSCRIBE) {
    call_set_status(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    call_finish_unary(c, NULL);
    return;
  }
  switch (c->method) {
    case M_APPEND:
    case M_READ_STREAM:
    case M_READ_ALL:
    case M_APPEND_MANY:
      /* An Append the backend takes asynchronously needs no worker: the
       * thread that commits it answers it (es/backend.h, append_async). */
      if (c->method == M_APPEND && es_backend_has_append_async(srv->backend))
        rpc_store_append_async(c);
      else if (c->method == M_APPEND_MANY && es_backend_has_append_many_async(srv->backend))
        rpc_store_append_many_async(c);
      else if (es_backend_is_blocking(srv->backend))
        call_schedule(c);
      else
        rpc_store_unary(c);
      break;
    case M_SUBSCRIBE:
      rpc_subscribe_start(c);
      break;
    case M_HEALTH_CHECK:
      rpc_health_check(c);
      break;
    case M_HEALTH_WATCH:
      rpc_health_watch_start(c);
      break;
    case M_REFLECTION:
    case M_REFLECTION_V1:
      rpc_reflection_start(c);
      break;
    default:
      answer_unimplemented(c);
      break;
  }
}

static void post_request(es_server_t *srv, method_id_t m) {
  call_t *c = call_new(srv, m);
  if (!c) {
    es_log(ES_LOG_ERROR, "out of memory posting a call request");
    return;
  }
  grpc_call_error e;
  if (m == M_GENERIC) {
    e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->req_md, srv->cq, srv->cq,
                                 &c->t_new);
  } else {
    /* Subscribe calls are bound to the delivery queue (es_server_t.dcq). */
    grpc_completion_queue *cq = m == M_SUBSCRIBE ? srv->dcq : srv->cq;
    e = grpc_server_request_registered_call(
        srv->server, srv->methods[m], &c->call, &c->deadline, &c->req_md,
        METHODS[m].payload == GRPC_SRM_PAYLOAD_NONE ? NULL : &c->payload, cq, cq, &c->t_new);
  }
  if (e != GRPC_CALL_OK) {
    if (!atomic_load(&srv->closing))
      es_log(ES_LOG_ERROR, "request_call failed for method %d: %d", (int)m, (int)e);
    call_free(c, false);
  }
}

static void poll_cq(grpc_completion_queue *cq) {
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    op_tag_t *t = ev.tag;
    t->fn(t->c, ev.success);
  }
}

static void *cq_main(void *arg) {
  es_server_t *srv = arg;
  poll_cq(srv->cq);
  return NULL;
}

static void *dcq_main(void *arg) {
  es_server_t *srv = arg;
  es_thread_lower_priority(DELIVERY_NICE);
  poll_cq(srv->dcq);
  return NULL;
}

/* Starts n threads running fn(srv); *threads and *started say which did. */
static bool start_pollers(es_server_t *srv, void *(*fn)(void *), int n, pthread_t **threads,
                          int *started) {
  *threads = calloc((size_t)n, sizeof(pthread_t));
  if (!*threads) return false;
  for (int i = 0; i < n; i++) {
    if (pthread_create(&(*threads)[i], NULL, fn, srv) != 0) return false;
    *started = i + 1;
  }
  return true;
}

/* Shuts cq down and joins its n pollers (draining it here when there are
 * none). The queue itself is destroyed by the caller, after the server. */
static void stop_pollers(grpc_completion_queue *cq, pthread_t *threads, int n) {
  grpc_completion_queue_shutdown(cq);
  if (n == 0) {
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
  }
  for (int i = 0; i < n; i++) pthread_join(threads[i], NULL);
  free(threads);
}

static es_server_t *shutdown_owner; /* the server whose shutdown tag is pending */

static void on_shutdown(call_t *c, int ok) {
  /* c is NULL: the tag belongs to the server. */
  (void)c;
  es_server_t *srv = shutdown_owner;
  pthread_mutex_lock(&srv->mu);
  srv->shutdown_notified = true;
  pthread_cond_broadcast(&srv->cv);
  pthread_mutex_unlock(&srv->mu);
}

int es_server_start(const es_config_t *cfg, es_backend_t *backend, es_server_t **out, char *errbuf,
                    size_t errlen) {
  es_server_t *srv = calloc(1, sizeof *srv);
  if (!srv) {
    snprintf(errbuf, errlen, "out of memory");
    return -1;
  }
  srv->cfg = cfg;
  srv->backend = backend;
  pthread_mutex_init(&srv->mu, NULL);
  pthread_cond_init(&srv->cv, NULL);
  atomic_init(&srv->serving, 1);
  atomic_init(&srv->health_version, 1);
  srv->log_notifier = es_notifier_new();
  srv->health_notifier = es_notifier_new();
  if (!srv->log_notifier || !srv->health_notifier) {
    snprintf(errbuf, errlen, "out of memory");
    goto fail;
  }
  es_notifier_publish(srv->health_notifier, 1);
  uint64_t head = 0;
  es_err_t err;
  es_err_clear(&err);
  if (es_backend_head(backend, &head, &err) == ES_OK) es_notifier_publish(srv->log_notifier, head);
  es_backend_set_notifier(backend, srv->log_notifier);
  srv->tail = es_tail_start(backend, srv->log_notifier, &cfg->limits, cfg->live_window_events,
                            cfg->live_window_bytes);
  if (!srv->tail) {
    snprintf(errbuf, errlen, "cannot start the live window's thread");
    goto fail;
  }

  if (cfg->auth_tokens_file[0] &&
      es_tokens_load(cfg->auth_tokens_file, &srv->tokens, errbuf, errlen) != 0)
    goto fail;
  grpc_server_credentials *creds = NULL;
  if (es_server_credentials(cfg, &creds, errbuf, errlen) != 0) goto fail;

  srv->workers = es_workers_start((size_t)cfg->workers);
  srv->delivery = es_workers_start_niced((size_t)cfg->delivery_threads, DELIVERY_NICE);
  if (!srv->workers || !srv->delivery) {
    snprintf(errbuf, errlen, "cannot start %d worker and %d delivery threads", cfg->workers,
             cfg->delivery_threads);
    grpc_server_credentials_release(creds);
    goto fail;
  }

  grpc_arg args[3];
  args[0].type = GRPC_ARG_INTEGER;
  args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[0].value.integer = (int)cfg->limits.max_request_bytes;
  args[1].type = GRPC_ARG_INTEGER;
  args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  args[1].value.integer = -1;
  args[2].type = GRPC_ARG_INTEGER;
  args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
  args[2].value.integer = 0;
  grpc_channel_args chargs = {3, args};
  srv->server = grpc_server_create(&chargs, NULL);
  srv->cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
  srv->dcq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(srv->server, srv->dcq, NULL);
  for (int m = 0; m < M_COUNT; m++)
    srv->methods[m] =
        grpc_server_register_method(srv->server, METHODS[m].path, NULL, METHODS[m].payload, 0);
  srv->port = grpc_server_add_http2_port(srv->server, cfg->bind_addr, creds);
  grpc_server_credentials_release(creds);
  if (srv->port <= 0) {
    if (cfg->tls_cert[0])
      snprintf(errbuf, errlen,
               "cannot listen on %s (address in use or invalid, or the TLS certificate %s and "
               "key %s were rejected: see the log above)",
               cfg->bind_addr, cfg->tls_cert, cfg->tls_key);
    else
      snprintf(errbuf, errlen, "cannot listen on %s (address in use or invalid)", cfg->bind_addr);
    goto fail_unstarted;
  }
  /* The polling threads start before the server, so that a failure to start
   * them can still be undone. */
  if (!start_pollers(srv, cq_main, cfg->cq_threads, &srv->cq_threads, &srv->n_cq_threads) ||
      !start_pollers(srv, dcq_main, cfg->delivery_threads, &srv->dcq_threads,
                     &srv->n_dcq_threads)) {
    snprintf(errbuf, errlen, "cannot start %d completion-queue and %d delivery threads",
             cfg->cq_threads, cfg->delivery_threads);
    goto fail_unstarted;
  }
  grpc_server_start(srv->server);
  for (int m = 0; m <= M_GENERIC; m++)
    for (int i = 0; i < REQUESTS_PER_METHOD; i++) post_request(srv, (method_id_t)m);
  *out = srv;
  return 0;

fail_unstarted:
  /* Bound or not, the server never started: destroy it, then shut the queue
   * down, which also ends any polling thread already running. */
  grpc_server_destroy(srv->server);
  srv->server = NULL;
  stop_pollers(srv->cq, srv->cq_threads, srv->n_cq_threads);
  stop_pollers(srv->dcq, srv->dcq_threads, srv->n_dcq_threads);
  grpc_completion_queue_destroy(srv->cq);
  grpc_completion_queue_destroy(srv->dcq);
  srv->cq = NULL;
  srv->dcq = NULL;

fail:
  if (srv->workers) es_workers_stop(srv->workers);
  if (srv->delivery) es_workers_stop(srv->delivery);
  es_tail_stop(srv->tail);
  es_backend_set_notifier(backend, NULL);
  if (srv->log_notifier) es_notifier_free(srv->log_notifier);
  if (srv->health_notifier) es_notifier_free(srv->health_notifier);
  es_tokens_free(srv->tokens);
  pthread_mutex_destroy(&srv->mu);
  pthread_cond_destroy(&srv->cv);
  free(srv);
  return -1;
}

int es_server_port(const es_server_t *s) {
  return s->port;
}

static struct timespec deadline_in(int ms) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  t.tv_sec += ms / 1000;
  t.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec++;
    t.tv_nsec -= 1000000000L;
  }
  return t;
}

static bool no_calls(const es_server_t *srv) {
  return srv->live_calls == 0;
}
static bool no_streams(const es_server_t *srv) {
  return srv->live_streams == 0;
}
static bool no_unary_calls(const es_server_t *srv) {
  return srv->live_calls - srv->live_streams == 0;
}

/* Waits until done(srv) holds (evaluated under srv->mu), or until ms passed. */
static bool wait_until(es_server_t *srv, bool (*done)(const es_server_t *), int ms) {
  struct timespec until = deadline_in(ms);
  pthread_mutex_lock(&srv->mu);
  int rc = 0;
  while (!done(srv) && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&srv->cv, &srv->mu, &until);
  bool ok = done(srv);
  pthread_mutex_unlock(&srv->mu);
  return ok;
}

static bool wait_shutdown_tag(es_server_t *srv, int ms) {
  struct timespec until = deadline_in(ms);
  pthread_mutex_lock(&srv->mu);
  int rc = 0;
  while (!srv->shutdown_notified && rc != ETIMEDOUT)
    rc = pthread_cond_timedwait(&srv->cv, &srv->mu, &until);
  bool done = srv->shutdown_notified;
  pthread_mutex_unlock(&srv->mu);
  return done;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Ends every streaming call still live with UNAVAILABLE. Safe against calls
 * ending concurrently: a call leaves the registry under srv->mu before it is
 * freed, and cancelling a finished call is a no-op. */
static void cancel_streams(es_server_t *srv) {
  pthread_mutex_lock(&srv->mu);
  for (call_t *c = srv->streams; c; c = c->stream_next)
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_UNAVAILABLE, "server shutting down", NULL);
  pthread_mutex_unlock(&srv->mu);
}

/* How long the server keeps answering new Appends and reads with UNAVAILABLE
 * (and health with NOT_SERVING) before it stops accepting connections: clients
 * see a retryable status rather than a reset. Subscriptions keep streaming
 * meanwhile, and new ones open. */
#define DRAIN_MS 100
/* How long parked or busy subscriptions get to end by themselves. */
#define STREAM_END_MS 250
/* How long we wait for clients to close their connections once every call is
 * done (an idle client may not answer the GOAWAY ping for seconds). */
#define CONNECTIONS_MS 500
/* How long cancelled streams get to complete. */
#define STREAMS_GONE_MS 500

bool es_server_stop(es_server_t *srv) {
  int grace = srv->cfg->shutdown_grace_ms;
  /* 1. Health first, so that watchers and load balancers see NOT_SERVING;
   *    new Appends and reads are answered UNAVAILABLE from now on. */
  atomic_store(&srv->serving, 0);
  atomic_store(&srv->draining, 1);
  unsigned long v = atomic_fetch_add(&srv->health_version, 1) + 1;
  es_notifier_publish(srv->health_notifier, v);
  sleep_ms(grace < DRAIN_MS ? grace : DRAIN_MS);

  /* 2. Stop accepting: the core sends every connection a GOAWAY, and from
   *    now on cancels with CANCELLED any call it has not handed to us yet
   *    (one a client sent before it read the GOAWAY); clients take CANCELLED
   *    for their own doing, final. So no stream is ended before this point: a
   *    subscriber resubscribes as soon as its stream ends, and a Subscribe
   *    that followed an earlier end could land in that window. Ended after,
   *    the client has read the GOAWAY first and connects anew, which the
   *    closed listener refuses: UNAVAILABLE again. */
  srv->t_shutdown = (op_tag_t){on_shutdown, NULL};
  shutdown_owner = srv;
  atomic_store(&srv->closing, 1);
  grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);

  /* 3. Subscriptions end with UNAVAILABLE: parked ones are woken; ones stuck
   *    on a send to a client that does not read are cancelled. */
  atomic_store(&srv->shutting_down, 1);
  es_notifier_wake_all(es_tail_notifier(srv->tail));
  es_notifier_wake_all(srv->health_notifier);
  if (!wait_until(srv, no_streams, grace < STREAM_END_MS ? grace : STREAM_END_MS))
    cancel_streams(srv);

  /* 4. Let unary calls in flight finish within the grace. */
  if (!wait_until(srv, no_unary_calls, grace)) {
    es_log(ES_LOG_WARN, "shutdown: calls still running after %d ms; cancelling them", grace);
    grpc_server_cancel_all_calls(srv->server);
    wait_until(srv, no_unary_calls, 1000);
  }
  /* A cancelled stream whose client stopped reading completes only once its
   * pending bytes drain, which may be never: give streams a moment, then go. */
  if (!wait_until(srv, no_calls, STREAMS_GONE_MS)) {
    es_log(ES_LOG_INFO, "shutdown: %ld stream(s) to clients that stopped reading; not waiting",
           srv->live_streams);
    return false;
  }

  /* 5. The core delivers the shutdown tag once every connection is closed. */
  if (!wait_shutdown_tag(srv, CONNECTIONS_MS)) {
    es_log(ES_LOG_INFO, "shutdown: client connections still open after %d ms; not waiting",
           CONNECTIONS_MS);
    return false;
  }
  stop_pollers(srv->cq, srv->cq_threads, srv->n_cq_threads);
  stop_pollers(srv->dcq, srv->dcq_threads, srv->n_dcq_threads);
  grpc_server_destroy(srv->server);
  grpc_completion_queue_destroy(srv->cq);
  grpc_completion_queue_destroy(srv->dcq);
  es_workers_stop(srv->workers);
  es_workers_stop(srv->delivery);
  es_tail_stop(srv->tail);
  es_backend_set_notifier(srv->backend, NULL);
  es_notifier_free(srv->log_notifier);
  es_notifier_free(srv->health_notifier);
  es_tokens_free(srv->tokens);
  pthread_mutex_destroy(&srv->mu);
  pthread_cond_destroy(&srv->cv);
  free(srv);
  return true;
}
