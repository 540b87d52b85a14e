/*
 * For backend authors only: what a backend needs from the core and callers of
 * the backend interface never do. The server and the tests include backend.h;
 * backend_memory/, backend_postgres/ (and any future backend) also include
 * this header.
 *
 * The append decision. Whether an append is a duplicate of a committed one,
 * reuses an event id, names the wrong stream type or expects the wrong
 * version is decided here, once, by a pure function (es_append_decide) over
 * a small read-only view of the stored state that the backend supplies:
 * the stream's last version and type, and for each event id of the request
 * what is stored under it. Backends differ in how they store, lock and look
 * things up, never in what they decide, so the rules of API.md (details 1
 * and 2: the order of checks, what makes a duplicate, the messages) live in
 * one place and are unit-tested without any backend (core/tests).
 *
 * The view must be consistent with the commit that follows: the backend
 * calls es_append_decide while it holds whatever makes its view exact (the
 * memory backend its commit mutex, PostgreSQL the row lock on the log head
 * or the optimistic statement's own checks), and an append of the same
 * group that passed earlier must already be part of the view.
 */
#ifndef ES_BACKEND_IMPL_H
#define ES_BACKEND_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/backend.h"
#include "es/error.h"
#include "es/event.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What is stored under one event id (or was decided earlier in the same
 * group commit). All fields are filled by the view's lookup. */
typedef struct es_stored_event {
  const char *stream_id;        /* NUL-terminated; valid for the decision */
  uint64_t stream_version;      /* its version in that stream */
  uint64_t global_position;     /* its position in the log */
  uint64_t recorded_at_unix_ms; /* of the append that stored it */
  bool batch_first;             /* the first event of the append that stored it */
  bool batch_last;              /* the last event of that append */
  /* Stored by an earlier attempt of this very request whose outcome the
   * backend could not learn (a connection lost during COMMIT). Such a batch
   * is the request's own first-time commit: it is acknowledged as the
   * original (duplicate = false), not as a duplicate. Backends that never
   * lose track of an outcome leave it false. */
  bool own_attempt;
  /* Extension 1: the append that stored it was one of several of an
   * AppendMany, and another append of that request came right before it
   * (joined_prev, on the first event of its batch) or right after it
   * (joined_next, on the last). A retry is a duplicate only of a whole
   * request. Backends without AppendMany leave both false. */
  bool joined_prev;
  bool joined_next;
} es_stored_event_t;

/* The read-only view of stored state that a backend supplies. */
typedef struct es_append_view {
  uint64_t last_version;   /* the stream's last version; 0 = it has no events */
  const char *stream_type; /* the stream's type; "" or NULL = none (yet) */
  /* What is stored under req->events[index].id: true and *out (OUT) filled,
   * or false when the id is not stored. May be NULL when no id of the request
   * can be stored (nothing is then looked up). */
  bool (*lookup)(void *ctx, size_t index, es_stored_event_t *out);
  void *ctx; /* passed to lookup */
} es_append_view_t;

/* Extension 1: how a backend answers an append condition. */
typedef struct es_condition_view {
  /* True with *position (OUT) the smallest global position > cond->after of
   * a stored event matching cond->items (es_query_match); false when there
   * is none. Called at most once per decision, last. */
  bool (*match)(void *ctx, const es_append_condition_t *cond, uint64_t *position);
  void *ctx; /* passed to match */
} es_condition_view_t;

/* The view of an AppendMany: per append, its stream's state before the
 * request and the lookup of its ids (each with its own ctx); the request's
 * condition is answered over the log before the request. */
typedef struct es_append_many_view {
  const es_append_view_t *appends; /* req->append_count entries */
  es_condition_view_t condition;   /* match NULL: a condition is ES_EUNSUPPORTED */
} es_append_many_view_t;

/* What the decision says the backend must do. */
typedef enum es_append_decision {
  ES_APPEND_WRITE = 0, /* store the events: out->first_version/last_version are
                          set; the backend fills the positions and recorded_at */
  ES_APPEND_STORED = 1 /* already stored: *out is the complete original result
                          (duplicate = true, unless own_attempt); write nothing */
} es_append_decision_t;

/* Decides a prepared append (validate.h) against view, in API.md's order:
 * idempotency, stream type, expected version. On ES_OK, *decision (OUT)
 * says what to do and *out (OUT) is filled as described there. Errors, with
 * *out zeroed and err naming the cause: ES_EEXIST (an id reused outside an
 * exact retry; names the first reused id in request order), ES_ETYPE,
 * ES_EVERSION (err->actual_version set), ES_EINVAL (an unknown expected
 * kind, which validation refuses first). Pure: no allocation, no locks. */
int es_append_decide(const es_append_req_t *req, const es_append_view_t *view,
                     es_append_decision_t *decision, es_append_result_t *out, es_err_t *err);

/* es_append_decide for a request that may carry a condition (Extension 1):
 * the order of checks ends with it, answered by cond (NULL, or a NULL match:
 * ES_EUNSUPPORTED). A failed condition is ES_ECONDITION with
 * err->condition_position set. A duplicate is acknowledged whatever the
 * condition says. es_append_decide is this with cond NULL. */
int es_append_decide_conditional(const es_append_req_t *req, const es_append_view_t *view,
                                 const es_condition_view_t *cond, es_append_decision_t *decision,
                                 es_append_result_t *out, es_err_t *err);

/* Decides a prepared AppendMany (es_append_many_prepare) against view, in
 * the order of Extension 1's settled details: idempotency of the whole
 * request (a duplicate only of one committed request, by its ordered list of
 * (stream_id, event ids)); then per append in request order its stream type
 * and expected version, as the earlier appends of the request leave the
 * stream; then the condition, once. On ES_OK, *decision (OUT) and
 * results[0..append_count) (OUT) as for es_append_decide, per append (for
 * ES_APPEND_WRITE the backend gives the appends consecutive positions in
 * request order). Errors as es_append_decide's, with err->append_index naming
 * the append at fault (none for the condition). Pure. */
int es_append_many_decide(const es_append_many_req_t *req, const es_append_many_view_t *view,
                          es_append_decision_t *decision, es_append_result_t *results,
                          es_err_t *err);

/* Publishes a new head to the backend's notifier, if any (see
 * es_backend_set_notifier). Safe from any thread; a head that is not larger
 * than the last one published is ignored. */
void es__backend_publish(es_backend_t *b, uint64_t head);

/* A page under construction: its events array grows as events are added,
 * and the byte budget (es_recorded_size_bound of each event) is checked per
 * event; the first event always fits. Every backend fills pages this way, so
 * the paging rules of the contract are the same everywhere. */
typedef struct es_page_builder {
  es_page_t *page;  /* the page being filled (zeroed at start) */
  size_t cap;       /* entries allocated in page->events */
  size_t limit;     /* max events (>= 1) */
  size_t bytes;     /* sum of the sizes of the events taken */
  size_t max_bytes; /* the budget */
} es_page_builder_t;

void es_page_builder_start(es_page_builder_t *pb, es_page_t *page, size_t limit, size_t max_bytes);
/* The slot of the next event, page->events[page->count], for the caller to
 * fill; not counted until es_page_builder_take. NULL when the page holds
 * `limit` events (*rc = 0) or out of memory (*rc = ES_ENOMEM). */
es_recorded_t *es_page_builder_slot(es_page_builder_t *pb, int *rc);
/* Counts the event filled into the slot when it fits the byte budget:
 * 1, or 0 when it does not (the page is full; the event is not counted). */
int es_page_builder_take(es_page_builder_t *pb);

/* Ends a page of a read by query walked through a tag index: is_end and the
 * resume point. `stopped` when the page filled or the scan bound was hit
 * before the walk ended; `last` is the last position examined (0 = none),
 * `from` where the read began, `head` the log's head. */
void es_page_end_walk(es_page_t *page, bool forward, bool stopped, uint64_t last, uint64_t from,
                      uint64_t head);

#ifdef __cplusplus
}
#endif

#endif /* ES_BACKEND_IMPL_H */
