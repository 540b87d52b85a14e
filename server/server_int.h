/*
 * Internals shared by the files of server/: the server object, the per-call
 * state machine and the helpers every RPC uses.
 *
 * Threading. One completion queue polled by cfg.cq_threads threads. Every
 * completion carries an op_tag_t that names the call and the function to run.
 * Work that may block (a blocking backend) and subscription wake-ups run on the
 * worker pool; they resume the call with grpc_call_start_batch, which is
 * thread-safe. A streaming call has exactly one "driver" at a time — the code
 * that decides what the call does next: a running pump, a queued job, a
 * registered notifier waiter, or an outstanding send — so its state needs no
 * lock; only `cancelled` is shared (atomic).
 *
 * Lifetime. A call is reference-counted: one reference per outstanding batch
 * whose completion will touch it, plus one for the driver of a streaming call.
 * The last release frees it and lets shutdown know one call fewer is live.
 */
#ifndef ES_SERVER_INT_H
#define ES_SERVER_INT_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "config.h"
#include "es/backend.h"
#include "es/notifier.h"
#include "es/subscription.h"
#include "security.h"
#include "tail.h"
#include "workers.h"

typedef enum method_id {
  M_APPEND = 0,
  M_READ_STREAM,
  M_READ_ALL,
  M_APPEND_MANY, /* before M_SUBSCRIBE: the unary calls that draining refuses */
  M_SUBSCRIBE,
  M_HEALTH_CHECK,
  M_HEALTH_WATCH,
  M_REFLECTION,
  M_REFLECTION_V1, /* same messages on the wire as v1alpha */
  M_COUNT,
  M_GENERIC = M_COUNT, /* any other method: answered UNIMPLEMENTED */
} method_id_t;

typedef struct es_server es_server_t;
typedef struct call call_t;

#define ES_SUB_POSITION_UNKNOWN UINT64_MAX

typedef struct op_tag {
  void (*fn)(call_t *c, int ok); /* runs on a completion-queue thread */
  call_t *c;
} op_tag_t;

/* A bump allocator for per-call memory, freed with the call. */
typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
} arena_block_t;

struct call {
  es_server_t *srv;
  method_id_t method;
  grpc_call *call; /* owned: unref at free */
  gpr_timespec deadline;
  grpc_metadata_array req_md; /* request metadata */
  grpc_call_details details;  /* M_GENERIC only */
  grpc_byte_buffer *payload;  /* initial payload, or the last message received */
  op_tag_t t_new, t_close, t_send, t_recv, t_done;
  int close_cancelled;  /* out-param of RECV_CLOSE_ON_SERVER */
  atomic_int cancelled; /* the client went away (or a send failed) */
  atomic_int refs;
  es_job_t job;        /* runs call_run_job() on a worker */
  uint64_t arrival_ns; /* monotonic time of arrival, for the duration metric */
  arena_block_t *arena;

  /* Final status. */
  grpc_status_code status;
  grpc_slice status_details;
  bool has_status_details;
  grpc_metadata trailer[2]; /* es-append-index, then es-actual-version or -condition-position */
  size_t n_trailer;
  bool initial_md_sent;

  /* Streaming state (owned by the driver). */
  ProtobufCMessage *request;     /* Subscribe: the decoded request until the subscription opens */
  es_sub_t *sub;                 /* Subscribe: open subscription, NULL before the first pump */
  _Atomic uint64_t sub_position; /* Subscribe: es_sub_position() as of the last step, or
                                    ES_SUB_POSITION_UNKNOWN; read by metrics scrapes */
  es_waiter_t waiter;            /* registered with a notifier while waiting */
  uint32_t max_batch;            /* Subscribe: events per message (1 = `event`, else `batch`) */
  bool attached;                 /* Subscribe: counted by es_tail_attach */
  bool has_pending;              /* Subscribe: `pending` is the next message to send */
  es_sub_item_t pending;         /* a CaughtUp or Checkpoint that ended a batch */
  bool has_pending_event;        /* Subscribe: `pending_event` opens the next batch */
  grpc_slice pending_event;      /* an event that did not fit the last batch (owned) */
  grpc_slice *batch;             /* Subscribe: slots for one message (malloc; [0]: header) */
  size_t batch_cap;              /* Subscribe: slots of `batch`, 2..max_batch + 1 */
  int watch_last_sent;           /* Health/Watch: last status sent, -1 none */
  char *watch_service;           /* Health/Watch: service name (malloc) */

  /* Registry of live streaming calls (srv->mu), so shutdown can end them. */
  call_t *stream_prev, *stream_next;
  bool in_registry;
};

struct es_server {
  const es_config_t *cfg;
  es_backend_t *backend;          /* borrowed */
  es_notifier_t *log_notifier;    /* the log grew (published by the backend) */
  es_tail_t *tail;                /* the live window; subscriptions park on its notifier */
  es_notifier_t *health_notifier; /* head = health version, bumped on every change */
  atomic_ulong health_version;
  atomic_int serving;       /* 1 while SERVING */
  atomic_int draining;      /* new EventStore calls get UNAVAILABLE */
  atomic_int shutting_down; /* streams end */
  atomic_int closing;       /* shutdown_and_notify called: post no more requests */
  es_workers_t *workers;
  es_workers_t *delivery; /* subscription steps, niced (DELIVERY_NICE in server.c) */
  grpc_server *server;
  grpc_completion_queue *cq;
  void *methods[M_COUNT]; /* registered method handles */
  pthread_t *cq_threads;
  int n_cq_threads;
  /* Subscribe calls live on a queue of their own, polled by niced threads:
   * their sends' completions (one per message to every subscriber) never
   * queue behind or in front of an Append on `cq`. */
  grpc_completion_queue *dcq;
  pthread_t *dcq_threads;
  int n_dcq_threads;
  int port;            /* bound port */
  es_tokens_t *tokens; /* owned; NULL when calls need no bearer token */

  pthread_mutex_t mu;     /* guards the fields below */
  pthread_cond_t cv;      /* signalled when they change */
  long live_calls;        /* calls that arrived and are not freed yet */
  long live_streams;      /* of which streaming calls (in `streams`) */
  call_t *streams;        /* registry of live streaming calls */
  bool shutdown_notified; /* the server's shutdown tag completed */
  op_tag_t t_shutdown;
};

/* ---- call helpers (server.c) ---- */
/* "package.Service/Method" of a registered method; "unknown" for M_GENERIC. */
const char *es__method_name(method_id_t m);
void *call_alloc(call_t *c, size_t size); /* zeroed; NULL on OOM */
void call_ref(call_t *c);
void call_unref(call_t *c);
void call_schedule(call_t *c); /* run call_run_job on a worker */
bool call_is_done(call_t *c);  /* cancelled or shutting down */
void call_set_status(call_t *c, grpc_status_code code, const char *msg);
void call_set_error(call_t *c, const es_err_t *err, int rc);
/* Unary: sends initial metadata, the response (if any, consumed) and the
 * status; the completion frees the call. */
void call_finish_unary(call_t *c, grpc_byte_buffer *response);
/* Streaming: sends the status set by call_set_status; its completion releases
 * the driver reference. */
void call_finish_stream(call_t *c);
/* Streaming: starts one send (consumes msg); on completion `next` runs as the
 * new driver. Returns false if the batch could not start (then the call is
 * finished). */
bool call_send(call_t *c, grpc_byte_buffer *msg, void (*next)(call_t *c, int ok));
/* Streaming: parks the driver on n until its head exceeds `after`; wake then
 * runs on the publishing thread. Returns false when parked: the driver's
 * reference now belongs to the waiter and the call may already be finished and
 * freed, so the caller must not touch c again. Returns true when the caller
 * should go on itself, still the driver: the head is already past, or the call
 * ended while parking and the waiter was taken back (a cancellation or
 * shutdown that raced with parking is never missed). */
bool call_park(call_t *c, es_notifier_t *n, uint64_t after, void (*wake)(es_waiter_t *w));
/* Streaming: the RECV_CLOSE_ON_SERVER completion for a call that parks on n.
 * On cancellation, marks the call and, if its driver is parked, takes it back
 * and schedules it so that it finishes. Releases the close reference. */
void call_stream_closed(call_t *c, int ok, es_notifier_t *n);
/* Starts RECV_CLOSE_ON_SERVER (with initial metadata) for streaming calls. */
void call_start_close_watch(call_t *c, void (*on_close)(call_t *c, int ok));

/* Encoding. */
/* Decodes a request. On failure (no message, not the message, a string with
 * an embedded NUL) sets an INVALID_ARGUMENT status on c and returns NULL. */
void *es_unpack(call_t *c, const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb);
/* The same, with the message's memory in c's arena: never freed on its own,
 * it goes with the call. For unary calls, whose one request lives as long as
 * the call: it saves a malloc and a free per string and byte field (five per
 * event of an Append), which on a durable backend the committing thread paid. */
void *es_unpack_in_arena(call_t *c, const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb);
grpc_byte_buffer *es_pack(const ProtobufCMessage *m);

/* ---- RPCs ---- */
void rpc_store_unary(call_t *c); /* Append, ReadStream, ReadAll, AppendMany */
/* An Append on a backend with append_async (es/backend.h): decoded and
 * queued on the calling thread, answered by the thread that commits it. */
void rpc_store_append_async(call_t *c);
/* The same for an AppendMany on a backend with append_many_async. */
void rpc_store_append_many_async(call_t *c);
void rpc_subscribe_start(call_t *c);
void rpc_subscribe_pump(call_t *c);
void rpc_subscribe_on_close(call_t *c, int ok);
void rpc_health_check(call_t *c);
void rpc_health_watch_start(call_t *c);
void rpc_health_watch_pump(call_t *c);
void rpc_reflection_start(call_t *c);

#endif
