/*
 * The queue of appends, and who commits them: the appending threads
 * themselves, one group at a time per lane (leader and followers).
 *
 * A lane is what a committer needs (committer_t, pg_committer.h): its
 * connection, its cache of the streams it wrote, its buffers. There are
 * opts.committers lanes (default one); a thread that marks a lane busy owns
 * it until it clears the flag. There is no committer thread.
 *
 * es__pg_append() queues the request, with a condition variable of its own.
 * When a lane is free, the appending thread leads at once: it takes
 * everything queued, within max_group_events / max_group_bytes (one append
 * always fits), commits it as one group (pg_commit.c), frees the lane, wakes
 * the first append still queued to lead the next group, and wakes the
 * others of its group. Otherwise it sleeps until its append is done, or
 * until it is woken to lead. The group may not contain the leader's own
 * append (the queue is served in order and the limits may cut the group
 * before it); the leader then leads again.
 *
 * Why not a committer thread. That is how it was first built, and an
 * append at one in flight then cost two thread hand-offs more (the caller
 * wakes the committer, the committer wakes the caller): two wake-ups and
 * context switches on the path of every append, and the committer's own
 * run, which measured as a large part of the time of an append that
 * PostgreSQL itself answers in well under a millisecond (docs/benchmarks.md,
 * PostgreSQL). Here, alone, an append goes from the caller's thread to
 * PostgreSQL and back. Under load nothing else changes: while a group
 * commits, the next one gathers in the queue, and its first append leads
 * it, with one wake-up per group as before.
 *
 * Locking: the queue, `done` and the lanes' `busy` under queue_mu. A
 * waiter's result fields are written by its group's leader while the waiter
 * sleeps (or is the leader), and read by the waiter after it saw `done`
 * under queue_mu. close() waits, on queue_cv, until no lane is busy and the
 * queue is empty, then frees the lanes.
 */
#include <stdlib.h>
#include <string.h>

#include "pg_committer.h"

struct es_pg_lane {
  committer_t cm;         /* owned by the thread that set busy */
  es_pg_waiter_t **group; /* the group being committed: cap slots */
  size_t cap;             /* slots allocated in group */
  bool busy;              /* under queue_mu */
};

int es__pg_lanes_init(es_pg_t *pg) {
  pg->lanes = calloc((size_t)pg->opts.committers, sizeof *pg->lanes);
  if (!pg->lanes) return ES_ENOMEM;
  for (int i = 0; i < pg->opts.committers; i++) {
    pg->lanes[i].cm.pg = pg;
    pg->lanes[i].cm.lane = i;
  }
  return ES_OK;
}

void es__pg_lanes_free(es_pg_t *pg) {
  if (!pg->lanes) return;
  for (int i = 0; i < pg->opts.committers; i++) {
    es__pg_committer_release(&pg->lanes[i].cm);
    free(pg->lanes[i].group);
  }
  free(pg->lanes);
  pg->lanes = NULL;
}

bool es__pg_lanes_idle(const es_pg_t *pg) {
  for (int i = 0; pg->lanes && i < pg->opts.committers; i++)
    if (pg->lanes[i].busy) return false;
  return pg->queue_head == NULL;
}

/* A free lane, or NULL (under queue_mu). */
static es_pg_lane_t *free_lane(es_pg_t *pg) {
  for (int i = 0; i < pg->opts.committers; i++)
    if (!pg->lanes[i].busy) return &pg->lanes[i];
  return NULL;
}

/* Takes the head of the queue, within the group limits, into lane->group
 * (under queue_mu). 0 only when not even one slot could be allocated. */
static size_t take_group(es_pg_t *pg, es_pg_lane_t *lane) {
  size_t n = 0, events = 0, bytes = 0;
  es_pg_waiter_t *w = pg->queue_head;
  while (w && (n == 0 || (events + w->events <= pg->opts.max_group_events &&
                          bytes + w->bytes <= pg->opts.max_group_bytes))) {
    if (n == lane->cap) {
      size_t cap = lane->cap ? lane->cap * 2 : 64;
      es_pg_waiter_t **g = realloc(lane->group, cap * sizeof *g);
      if (!g) break;
      lane->group = g;
      lane->cap = cap;
    }
    lane->group[n++] = w;
    events += w->events;
    bytes += w->bytes;
    w = w->next;
  }
  pg->queue_head = n ? w : pg->queue_head;
  if (!pg->queue_head) pg->queue_tail = NULL;
  return n;
}

/* Leads one group on lane, on behalf of the queue (under queue_mu, which
 * is released while the group commits). self is the leader's own waiter. */
static void lead(es_pg_t *pg, es_pg_lane_t *lane, es_pg_waiter_t *self) {
  lane->busy = true;
  size_t n = take_group(pg, lane);
  if (n == 0) { /* out of memory for the group array: answer the first */
    es_pg_waiter_t *f = pg->queue_head;
    pg->queue_head = f->next;
    if (!pg->queue_head) pg->queue_tail = NULL;
    f->rc = es_err_set(f->err, ES_ENOMEM, "out of memory queueing an append");
    f->done = true;
    if (f != self) pthread_cond_signal(&f->cv);
    lane->busy = false;
    if (pg->queue_head && pg->queue_head != self) pthread_cond_signal(&pg->queue_head->cv);
    return;
  }
  /* Appends left behind by the limits need not wait for this group when
   * another lane is free. */
  if (pg->queue_head && pg->queue_head != self && free_lane(pg))
    pthread_cond_signal(&pg->queue_head->cv);
  pthread_mutex_unlock(&pg->queue_mu);

  es__pg_commit_group(&lane->cm, lane->group, n);

  pthread_mutex_lock(&pg->queue_mu);
  lane->busy = false;
  /* The next leader first: the next group starts committing while this
   * one's appenders return. */
  if (pg->queue_head && pg->queue_head != self) pthread_cond_signal(&pg->queue_head->cv);
  for (size_t i = 0; i < n; i++) {
    lane->group[i]->done = true;
    if (lane->group[i] != self) pthread_cond_signal(&lane->group[i]->cv);
  }
  if (pg->stopping) pthread_cond_broadcast(&pg->queue_cv);
}

/* Queues w (its appends set) and waits until its group has committed,
 * leading a group when a lane is free. */
static int queue_and_wait(es_pg_t *pg, es_pg_waiter_t *w, es_err_t *err) {
  for (size_t a = 0; a < w->n_reqs; a++) {
    const es_append_req_t *req = &w->reqs[a];
    if (req->event_count > INT32_MAX)
      return es_err_set(err, ES_ETOOBIG, "events: %zu, the PostgreSQL backend holds %d per append",
                        req->event_count, INT32_MAX);
    w->events += req->event_count;
    for (size_t i = 0; i < req->event_count; i++) {
      const es_event_data_t *ev = &req->events[i];
      if (ev->payload_len >= PG_MAX_FIELD_BYTES)
        return es_err_set(err, ES_ETOOBIG, "events[%zu].payload: %zu bytes, PostgreSQL holds %zu",
                          i, ev->payload_len, PG_MAX_FIELD_BYTES - 1);
      w->bytes += es__pg_event_bytes(ev);
    }
  }
  w->err = err ? err : &w->err_local;
  if (pthread_cond_init(&w->cv, NULL))
    return es_err_set(err, ES_ENOMEM, "out of memory queueing an append");

  pthread_mutex_lock(&pg->queue_mu);
  if (pg->stopping || !atomic_load(&pg->threads_started)) {
    pthread_mutex_unlock(&pg->queue_mu);
    pthread_cond_destroy(&w->cv);
    return es_err_set(err, ES_EUNAVAIL,
                      pg->stopping ? "the PostgreSQL backend is closing"
                                   : "the PostgreSQL backend could not start its listener");
  }
  if (pg->queue_tail)
    pg->queue_tail->next = w;
  else
    pg->queue_head = w;
  pg->queue_tail = w;
  while (!w->done) {
    es_pg_lane_t *lane = pg->queue_head ? free_lane(pg) : NULL;
    if (lane)
      lead(pg, lane, w);
    else
      pthread_cond_wait(&w->cv, &pg->queue_mu); /* done, or woken to lead */
  }
  pthread_mutex_unlock(&pg->queue_mu);
  pthread_cond_destroy(&w->cv);
  if (w->rc) memset(w->outs, 0, w->n_reqs * sizeof *w->outs);
  return w->rc;
}

int es__pg_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                  es_err_t *err) {
  es_pg_waiter_t w;
  memset(&w, 0, sizeof w);
  w.req = w.reqs = req;
  w.out = w.outs = out;
  w.n_reqs = 1;
  w.condition = req->condition;
  return queue_and_wait((es_pg_t *)b, &w, err);
}

int es__pg_append_many(es_backend_t *b, const es_append_many_req_t *req,
                       es_append_result_t *results, es_err_t *err) {
  if (req->append_count == 0)
    return es_err_set(err, ES_EINVAL, "appends: 0 given, at least 1 needed");
  es_pg_waiter_t w;
  memset(&w, 0, sizeof w);
  w.req = w.reqs = req->appends;
  w.out = w.outs = results;
  w.n_reqs = req->append_count;
  w.many = req;
  w.condition = req->condition;
  return queue_and_wait((es_pg_t *)b, &w, err);
}
