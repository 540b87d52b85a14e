/*
 * Worker pool: one mutex, one condition variable, an intrusive FIFO. Jobs are
 * short (a backend call, a send), so a single queue is not a bottleneck at the
 * rates a 2-core machine sees; it keeps ordering simple to reason about.
 */
#include "workers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct es_workers {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  es_job_t *head, *tail; /* FIFO of queued jobs */
  bool stopping;         /* set by es_workers_stop: exit when the queue is empty */
  size_t n;              /* number of threads */
  pthread_t threads[];
};

static void *worker_main(void *arg) {
  es_workers_t *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (!w->head && !w->stopping) pthread_cond_wait(&w->cv, &w->mu);
    es_job_t *job = w->head;
    if (!job) break; /* stopping and drained */
    w->head = job->next;
    if (!w->head) w->tail = NULL;
    pthread_mutex_unlock(&w->mu);
    job->next = NULL;
    job->fn(job);
    pthread_mutex_lock(&w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

es_workers_t *es_workers_start(size_t n) {
  if (n == 0) n = 1;
  es_workers_t *w = calloc(1, sizeof *w + n * sizeof(pthread_t));
  if (!w) return NULL;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  for (size_t i = 0; i < n; i++) {
    if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0) {
      w->n = i;
      es_workers_stop(w);
      return NULL;
    }
    w->n = i + 1;
  }
  return w;
}

void es_workers_submit(es_workers_t *w, es_job_t *job) {
  job->next = NULL;
  pthread_mutex_lock(&w->mu);
  if (w->tail)
    w->tail->next = job;
  else
    w->head = job;
  w->tail = job;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

void es_workers_stop(es_workers_t *w) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  w->stopping = true;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  for (size_t i = 0; i < w->n; i++) pthread_join(w->threads[i], NULL);
  pthread_mutex_destroy(&w->mu);
  pthread_cond_destroy(&w->cv);
  free(w);
}
