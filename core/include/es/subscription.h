/*
 * The subscription engine: a cursor over the global log.
 *
 * A subscription reads committed events in pages from the backend, from its
 * cursor, and hands them out one item at a time. When a read reaches the head
 * it hands out CaughtUp once, and then ES_EAGAIN: the caller waits for the log
 * to grow past es_sub_position() (notifier.h) and calls es_sub_next() again.
 * Catch-up and live delivery are the same code path, so nothing is skipped or
 * duplicated at the switch, and a slow consumer simply reads from storage
 * later: memory per subscription is one page (bounded by count and bytes).
 *
 * Checkpoints (filtered subscriptions only): the engine counts non-matching
 * events scanned since the last match or checkpoint; when the count reaches
 * the interval it hands out Checkpoint(position of the event that reached it).
 * When a read reaches the head with a count above 0, it hands out
 * Checkpoint(that head) before CaughtUp or ES_EAGAIN, and the count restarts.
 * Global positions are gap-free, so the count is arithmetic on positions.
 *
 * A subscription is used by one thread at a time.
 */
#ifndef ES_SUBSCRIPTION_H
#define ES_SUBSCRIPTION_H

#include <stdbool.h>
#include <stdint.h>

#include "es/backend.h"
#include "es/error.h"
#include "es/event.h"
#include "es/validate.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_sub es_sub_t;

/* Reads one page of the log, with es_backend_read_all's contract (the request
 * is FORWARD and prepared). A subscription reads through one of these so that
 * a layer above the backend (server/tail.c) can answer from memory. */
typedef int (*es_sub_read_fn)(void *ctx, const es_read_all_req_t *req, es_page_t *out,
                              es_err_t *err);

typedef struct es_sub_opts {
  uint64_t from_position;       /* 0 or 1 = from the beginning */
  bool from_end;                /* start after the current head */
  es_filter_t filter;           /* copied by es_sub_open */
  uint32_t checkpoint_interval; /* 0 = limits->default_checkpoint_interval */
  es_sub_read_fn read;          /* NULL = es_backend_read_all on the backend */
  void *read_ctx;               /* read's first argument */
} es_sub_opts_t;

typedef enum es_sub_item_kind {
  ES_SUB_EVENT = 1,
  ES_SUB_CAUGHT_UP = 2,
  ES_SUB_CHECKPOINT = 3,
} es_sub_item_kind_t;

typedef struct es_sub_item {
  es_sub_item_kind_t kind;
  const es_recorded_t *event; /* ES_SUB_EVENT: valid until the next es_sub_next/close */
  const void *encoded;        /* ES_SUB_EVENT: the page's encoding of it (es_page_t), or NULL */
  uint64_t position;          /* CAUGHT_UP: head; CHECKPOINT: position */
} es_sub_item_t;

/* Validates opts (filter rules of validate.h) and opens a subscription on b.
 * With from_end, reads the head now. *out (OUT) is freed with es_sub_close. */
int es_sub_open(es_backend_t *b, const es_limits_t *limits, const es_sub_opts_t *opts,
                es_sub_t **out, es_err_t *err);

/* The next item. ES_OK: *item is filled. ES_EAGAIN: nothing more now; wait
 * until the head exceeds es_sub_position(). Other codes: backend failures
 * (e.g. ES_EUNAVAIL), after which the subscription may be retried with the
 * same call (the cursor did not move). May call the backend (which blocks for
 * blocking backends). */
int es_sub_next(es_sub_t *s, es_sub_item_t *item, es_err_t *err);

/* The last position delivered or scanned (everything ≤ it has been handed out
 * or skipped by the filter). */
uint64_t es_sub_position(const es_sub_t *s);

/* True when an item can be handed out without calling the backend. */
bool es_sub_has_buffered(const es_sub_t *s);

/* The position the next read will start from (everything below it has been
 * read into the current page or handed out). */
uint64_t es_sub_cursor(const es_sub_t *s);

void es_sub_close(es_sub_t *s);

#ifdef __cplusplus
}
#endif

#endif /* ES_SUBSCRIPTION_H */
