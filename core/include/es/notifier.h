/*
 * "The log has grown": wake-ups for subscriptions waiting at the head.
 *
 * A waiter registers with the position it has read up to; when a backend
 * publishes a head beyond it, the waiter's callback runs once, on the
 * publishing thread, outside the notifier's lock, and the waiter is
 * unregistered. Callbacks must be short (hand the work to another thread).
 *
 * The race between "I read up to the head" and "I registered" is closed by
 * es_notifier_wait() itself: it compares with the last published head under
 * the lock and refuses to register when the log is already past `after`.
 */
#ifndef ES_NOTIFIER_H
#define ES_NOTIFIER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_notifier es_notifier_t;

/* Owned by the caller (no allocation per wait). Zero it before first use:
 * es_notifier_cancel() reads `linked`. After es_notifier_cancel() returns 0
 * the callback has run or is running: free the waiter, or register it again
 * from another thread, only once the callback has said so (the callback
 * itself may register it again). */
typedef struct es_waiter es_waiter_t;
struct es_waiter {
  void (*fn)(es_waiter_t *w); /* set by the owner before es_notifier_wait */
  void *arg;                  /* free for the owner */
  /* Private to the notifier. */
  uint64_t after;
  es_waiter_t *prev, *next;
  int linked;
};

/* Returns NULL when out of memory. */
es_notifier_t *es_notifier_new(void);
/* No waiter may be registered any more. */
void es_notifier_free(es_notifier_t *n);

/* Records head (ignored if not larger than the last one) and fires every
 * waiter whose `after` is below it. */
void es_notifier_publish(es_notifier_t *n, uint64_t head);

/* The last published head. */
uint64_t es_notifier_head(es_notifier_t *n);

/* Registers w to fire once the head exceeds `after`. Returns 0 when
 * registered, 1 when the head already exceeds `after` (not registered; the
 * callback will not run: the caller goes on reading itself). */
int es_notifier_wait(es_notifier_t *n, es_waiter_t *w, uint64_t after);

/* Unregisters w. Returns 1 when it was registered (its callback will not run),
 * 0 when it was not (its callback already ran or is running). */
int es_notifier_cancel(es_notifier_t *n, es_waiter_t *w);

/* Fires every registered waiter now, whatever its position (used at shutdown
 * so that waiting subscriptions notice and end). */
void es_notifier_wake_all(es_notifier_t *n);

#ifdef __cplusplus
}
#endif

#endif /* ES_NOTIFIER_H */
