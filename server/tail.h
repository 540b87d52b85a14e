/*
 * The live tail: the most recent committed events of the log, encoded once as
 * the wire bytes every subscription sends, and the path by which a commit
 * wakes the subscriptions waiting for it. tail.c states the design and its
 * invariants.
 */
#ifndef ES_SERVER_TAIL_H
#define ES_SERVER_TAIL_H

#include <grpc/slice.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/backend.h"
#include "es/notifier.h"
#include "es/validate.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_tail es_tail_t;

typedef struct es_tail_stats {
  bool active;            /* filled (some subscription is open, or was lately) */
  uint64_t first, last;   /* positions held: first..last; none when events == 0 */
  size_t events, bytes;   /* held now (bytes: the encoded events) */
  uint64_t filled_events; /* events read from the backend and encoded by the filler */
  uint64_t pages_window;  /* subscription pages answered from the window */
  uint64_t pages_backend; /* subscription pages read from the backend */
  uint64_t fill_errors;   /* failed backend reads of the filler (it retries) */
} es_tail_stats_t;

/* Starts the filler thread. The backend publishes its head to `log` (the
 * caller has set it with es_backend_set_notifier); subscriptions park on
 * es_tail_notifier(). The window keeps at most max_events events and
 * max_bytes bytes of encodings (always the newest event, however large);
 * max_events == 0 keeps none: every page then comes from the backend, and the
 * tail only forwards the head. NULL when out of memory or the thread cannot
 * start. */
es_tail_t *es_tail_start(es_backend_t *b, es_notifier_t *log, const es_limits_t *limits,
                         size_t max_events, size_t max_bytes);

/* Joins the filler and frees the window. No subscription may use the tail any
 * more (pages already read stay valid: they hold their own references). */
void es_tail_stop(es_tail_t *t);

/* Where subscriptions wait: its head is the last position the window holds
 * (or, with no window, the backend's published head). */
es_notifier_t *es_tail_notifier(es_tail_t *t);

/* A subscription opened / closed. The filler runs only while some are open
 * (and for a grace period after the last one closed), so a store without
 * subscribers pays nothing for the window. */
void es_tail_attach(es_tail_t *t);
void es_tail_detach(es_tail_t *t);

/* An es_sub_read_fn (subscription.h) over the tail: a FORWARD page from the
 * window when the window holds req->from_position, else from the backend.
 * Window pages carry `encoded` (es_page_t): use es_tail_wire() on them. */
int es_tail_read(void *tail, const es_read_all_req_t *req, es_page_t *out, es_err_t *err);

/* True when a read from `position` is answered from memory (no backend call). */
bool es_tail_holds(es_tail_t *t, uint64_t position);

/* The wire bytes of an encoded window event: a SubscribeResponse whose
 * `event` is the RecordedEvent (field 1), which is also, byte for byte, one
 * element of EventBatch.events (field 1). Borrowed: valid while the page that
 * handed it out is held; take a grpc_slice_ref to keep it longer. */
grpc_slice es_tail_wire(const void *encoded);

/* The head of SubscribeResponse.batch (tag and length) for an EventBatch of
 * `bytes` bytes: followed by the events' wire bytes, a whole message. */
grpc_slice es_tail_batch_header(size_t bytes);

/* The same bytes for an event that is not in the window. *out (OUT) is a new
 * slice. Returns false when out of memory. */
bool es_tail_encode(const es_recorded_t *ev, grpc_slice *out);

void es_tail_stats(es_tail_t *t, es_tail_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif
