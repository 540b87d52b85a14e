/*
 * The queue between appending threads and the committers.
 *
 * es__pg_append() queues the request with a condition variable of its own
 * and sleeps; a committer thread (opts.committers, default one) takes
 * everything queued, within max_group_events / max_group_bytes (one append
 * always fits), commits it as one group (pg_commit.c) and wakes each waiter.
 * Waiters are linked and unlinked under queue_mu; a waiter's result fields
 * are written by the committer while the waiter sleeps and read by the
 * waiter after it saw `done` under queue_mu.
 */
#include <stdlib.h>
#include <string.h>

#include "pg_committer.h"

void *es__pg_committer_main(void *arg) {
  es_pg_lane_t *lane = arg;
  es_pg_t *pg = lane->pg;
  committer_t cm;
  memset(&cm, 0, sizeof cm);
  cm.pg = pg;
  cm.lane = lane->index;
  free(lane);
  es_pg_waiter_t **group = NULL;
  size_t group_cap = 0;

  pthread_mutex_lock(&pg->queue_mu);
  for (;;) {
    while (!pg->queue_head && !pg->stopping) pthread_cond_wait(&pg->queue_cv, &pg->queue_mu);
    if (!pg->queue_head) break; /* stopping, nothing left */

    /* Take what is waiting, within the group limits (one always fits). */
    size_t n = 0, events = 0, bytes = 0;
    es_pg_waiter_t *w = pg->queue_head;
    while (w && (n == 0 || (events + w->req->event_count <= pg->opts.max_group_events &&
                            bytes + w->bytes <= pg->opts.max_group_bytes))) {
      if (n == group_cap) {
        size_t cap = group_cap ? group_cap * 2 : 64;
        es_pg_waiter_t **g = realloc(group, cap * sizeof *g);
        if (!g) break;
        group = g;
        group_cap = cap;
      }
      group[n++] = w;
      events += w->req->event_count;
      bytes += w->bytes;
      w = w->next;
    }
    if (n == 0) { /* out of memory for the group array: answer the first */
      es_pg_waiter_t *f = pg->queue_head;
      pg->queue_head = f->next;
      if (!pg->queue_head) pg->queue_tail = NULL;
      f->rc = es_err_set(f->err, ES_ENOMEM, "out of memory queueing an append");
      f->done = true;
      pthread_cond_signal(&f->cv);
      continue;
    }
    pg->queue_head = w;
    if (!w) pg->queue_tail = NULL;
    pthread_mutex_unlock(&pg->queue_mu);

    es__pg_commit_group(&cm, group, n);

    pthread_mutex_lock(&pg->queue_mu);
    for (size_t i = 0; i < n; i++) {
      group[i]->done = true;
      pthread_cond_signal(&group[i]->cv);
    }
  }
  pthread_mutex_unlock(&pg->queue_mu);

  es__pg_committer_release(&cm);
  free(group);
  return NULL;
}

int es__pg_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                  es_err_t *err) {
  es_pg_t *pg = (es_pg_t *)b;
  if (req->event_count > INT32_MAX)
    return es_err_set(err, ES_ETOOBIG, "events: %zu, the PostgreSQL backend holds %d per append",
                      req->event_count, INT32_MAX);

  es_pg_waiter_t w;
  memset(&w, 0, sizeof w);
  w.req = req;
  w.out = out;
  w.err = err ? err : &w.err_local;
  for (size_t i = 0; i < req->event_count; i++) {
    const es_event_data_t *ev = &req->events[i];
    if (ev->payload_len >= PG_MAX_FIELD_BYTES)
      return es_err_set(err, ES_ETOOBIG, "events[%zu].payload: %zu bytes, PostgreSQL holds %zu", i,
                        ev->payload_len, PG_MAX_FIELD_BYTES - 1);
    w.bytes += es__pg_event_bytes(ev);
  }
  if (pthread_cond_init(&w.cv, NULL))
    return es_err_set(err, ES_ENOMEM, "out of memory queueing an append");

  pthread_mutex_lock(&pg->queue_mu);
  if (pg->stopping || !atomic_load(&pg->threads_started)) {
    pthread_mutex_unlock(&pg->queue_mu);
    pthread_cond_destroy(&w.cv);
    return es_err_set(err, ES_EUNAVAIL,
                      pg->stopping ? "the PostgreSQL backend is closing"
                                   : "the PostgreSQL backend could not start its committers");
  }
  if (pg->queue_tail)
    pg->queue_tail->next = &w;
  else
    pg->queue_head = &w;
  pg->queue_tail = &w;
  pthread_cond_signal(&pg->queue_cv);
  while (!w.done) pthread_cond_wait(&w.cv, &pg->queue_mu);
  pthread_mutex_unlock(&pg->queue_mu);
  pthread_cond_destroy(&w.cv);
  if (w.rc) memset(out, 0, sizeof *out);
  return w.rc;
}
