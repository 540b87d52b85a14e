/*
 * The notifier: "the log has grown past n" for subscriptions waiting at the
 * head.
 *
 * State is a mutex, the last published head and an intrusive doubly linked
 * list of registered waiters (the waiter structs belong to their owners; the
 * notifier never allocates per waiter, so registering cannot fail).
 *
 * Invariant: every registered waiter has after >= head. es_notifier_wait()
 * keeps it by refusing to register when the head is already past `after`
 * (the caller reads again instead), and publish keeps it by unlinking every
 * waiter that the new head passes. That invariant is what closes the race
 * between "I read up to the head" and "I registered".
 *
 * Callbacks run outside the lock, so that a callback may call back into the
 * notifier (register again, publish) without deadlocking. The waiters to fire
 * are chosen and unlinked (linked = 0) under the lock, which is what makes
 * es_notifier_cancel() exact: it returns 1 only while the waiter is still in
 * the list, and then no publisher can fire it any more. The chosen waiters
 * are collected in a small array on the stack rather than chained through
 * their own `next` field: once unlinked, a waiter may be re-registered by its
 * owner from another thread, and its fields are no longer ours. More waiters
 * than the array holds are fired in rounds.
 */
#include "es/notifier.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

struct es_notifier {
  pthread_mutex_t mu; /* guards everything below */
  uint64_t head;      /* the largest head published so far */
  es_waiter_t *first; /* registered waiters, oldest first */
  es_waiter_t *last;
};

/* Waiters fired per round (one lock hold). */
#define FIRE_BATCH 64

es_notifier_t *es_notifier_new(void) {
  es_notifier_t *n = calloc(1, sizeof *n);
  if (n == NULL) return NULL;
  if (pthread_mutex_init(&n->mu, NULL) != 0) {
    free(n);
    return NULL;
  }
  return n;
}

void es_notifier_free(es_notifier_t *n) {
  if (n == NULL) return;
  assert(n->first == NULL && "es_notifier_free with registered waiters");
  pthread_mutex_destroy(&n->mu);
  free(n);
}

static void unlink_waiter(es_notifier_t *n, es_waiter_t *w) {
  if (w->prev != NULL) {
    w->prev->next = w->next;
  } else {
    n->first = w->next;
  }
  if (w->next != NULL) {
    w->next->prev = w->prev;
  } else {
    n->last = w->prev;
  }
  w->prev = w->next = NULL;
  w->linked = 0;
}

/* Fires, in rounds, every registered waiter with after < head (all of them
 * when `all`). Takes and releases n->mu itself.
 *
 * Termination: with a head, a waiter registered during a round has after >=
 * head, so only a newer publish can make it a candidate again. With `all`, a
 * callback that registers again at once would be a candidate forever, so the
 * rounds are bounded by the list's length when we started; a waiter that
 * registered later is left for the next wake-up. */
static void fire(es_notifier_t *n, bool all) {
  es_waiter_t *batch[FIRE_BATCH];
  size_t budget = SIZE_MAX; /* waiters still to fire with `all` */
  for (;;) {
    size_t count = 0;
    pthread_mutex_lock(&n->mu);
    if (all && budget == SIZE_MAX) {
      budget = 0;
      for (es_waiter_t *w = n->first; w != NULL; w = w->next) budget++;
    }
    es_waiter_t *w = n->first;
    while (w != NULL && count < FIRE_BATCH && (!all || count < budget)) {
      es_waiter_t *next = w->next;
      if (all || w->after < n->head) {
        unlink_waiter(n, w);
        batch[count++] = w;
      }
      w = next;
    }
    pthread_mutex_unlock(&n->mu);
    if (all) budget -= count;
    for (size_t i = 0; i < count; i++) batch[i]->fn(batch[i]);
    /* A partial batch means the list held no more candidates. */
    if (count < FIRE_BATCH || (all && budget == 0)) return;
  }
}

void es_notifier_publish(es_notifier_t *n, uint64_t head) {
  pthread_mutex_lock(&n->mu);
  bool grew = head > n->head;
  if (grew) n->head = head;
  /* By the invariant, only a larger head can pass a registered waiter. */
  bool any = grew && n->first != NULL;
  pthread_mutex_unlock(&n->mu);
  if (any) fire(n, false);
}

uint64_t es_notifier_head(es_notifier_t *n) {
  pthread_mutex_lock(&n->mu);
  uint64_t head = n->head;
  pthread_mutex_unlock(&n->mu);
  return head;
}

int es_notifier_wait(es_notifier_t *n, es_waiter_t *w, uint64_t after) {
  assert(w->fn != NULL);
  pthread_mutex_lock(&n->mu);
  if (n->head > after) {
    /* Not registered: say so, so that a later cancel on a waiter that was
     * never zeroed cannot take garbage for a list link. */
    w->linked = 0;
    pthread_mutex_unlock(&n->mu);
    return 1;
  }
  w->after = after;
  w->next = NULL;
  w->prev = n->last;
  if (n->last != NULL) {
    n->last->next = w;
  } else {
    n->first = w;
  }
  n->last = w;
  w->linked = 1;
  pthread_mutex_unlock(&n->mu);
  return 0;
}

int es_notifier_cancel(es_notifier_t *n, es_waiter_t *w) {
  pthread_mutex_lock(&n->mu);
  int was = w->linked;
  if (was) unlink_waiter(n, w);
  pthread_mutex_unlock(&n->mu);
  return was;
}

void es_notifier_wake_all(es_notifier_t *n) {
  fire(n, true);
}
