/*
 * Worker pool: one mutex, a FIFO of jobs waiting for a worker, and a stack of
 * idle workers, each sleeping on a condition variable of its own.
 *
 * A job submitted while some worker is idle is handed to the worker that
 * became idle last, and only that one is woken, after the lock is released.
 * Why: with one shared condition variable (how the pool was first built), a
 * scheduler trace of the PostgreSQL server at one call in flight showed each
 * call taken by the next of the 64 workers in turn, so every call ran on a
 * thread whose stack and data had gone cold, and the woken worker often found
 * the lock still held by the completion-queue thread that had just signalled
 * it, and slept once more. On a small or virtualized machine each wake-up and
 * context switch is a measurable part of a call (docs/benchmarks.md). Now
 * the same thread runs every job while calls come one at a time, and a
 * wake-up never waits for the lock of the thread that woke it.
 *
 * Jobs are short (a backend call, a send), so a single lock is not a
 * bottleneck at the rates a 2-core machine sees; when every worker is busy,
 * jobs wait in arrival order and the next worker to finish takes the oldest.
 */
#include "workers.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"

typedef struct worker worker_t;
struct worker {
  pthread_t thread;
  pthread_cond_t cv; /* signalled when job is set, or at stop */
  es_job_t *job;     /* handed over by es_workers_submit (under mu) */
  worker_t *next;    /* idle stack link */
  struct es_workers *pool;
};

struct es_workers {
  pthread_mutex_t mu;
  es_job_t *head, *tail; /* FIFO of jobs no worker was idle for */
  worker_t *idle;        /* stack of idle workers, the latest on top */
  size_t n_idle;
  bool stopping; /* set by es_workers_stop: exit when the queue is empty */
  size_t n;      /* number of threads */
  int nice;      /* added to each thread's nice value at its start */
  worker_t workers[];
};

void es_thread_lower_priority(int nice) {
  /* Linux keeps a nice value per thread: this lowers only this one. */
  id_t tid = (id_t)syscall(SYS_gettid);
  errno = 0;
  int cur = getpriority(PRIO_PROCESS, tid);
  if ((cur == -1 && errno) || setpriority(PRIO_PROCESS, tid, cur + nice) != 0)
    es_log(ES_LOG_WARN, "cannot lower a thread's priority by %d", nice);
}

static void *worker_main(void *arg) {
  worker_t *me = arg;
  es_workers_t *w = me->pool;
  if (w->nice) es_thread_lower_priority(w->nice);
  pthread_mutex_lock(&w->mu);
  for (;;) {
    es_job_t *job = me->job;
    me->job = NULL;
    if (!job && w->head) {
      job = w->head;
      w->head = job->next;
      if (!w->head) w->tail = NULL;
    }
    if (!job) {
      if (w->stopping) break; /* stopping and drained */
      me->next = w->idle;
      w->idle = me;
      w->n_idle++;
      while (!me->job && !w->stopping) pthread_cond_wait(&me->cv, &w->mu);
      if (!me->job) { /* stopping: off the stack, then drain the queue */
        worker_t **p = &w->idle;
        while (*p != me) p = &(*p)->next;
        *p = me->next;
        w->n_idle--;
      }
      continue;
    }
    pthread_mutex_unlock(&w->mu);
    job->next = NULL;
    job->fn(job);
    pthread_mutex_lock(&w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

es_workers_t *es_workers_start(size_t n) {
  return es_workers_start_niced(n, 0);
}

es_workers_t *es_workers_start_niced(size_t n, int nice) {
  if (n == 0) n = 1;
  es_workers_t *w = calloc(1, sizeof *w + n * sizeof(worker_t));
  if (!w) return NULL;
  w->nice = nice;
  pthread_mutex_init(&w->mu, NULL);
  for (size_t i = 0; i < n; i++) {
    worker_t *k = &w->workers[i];
    k->pool = w;
    pthread_cond_init(&k->cv, NULL);
    if (pthread_create(&k->thread, NULL, worker_main, k) != 0) {
      pthread_cond_destroy(&k->cv);
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
  worker_t *k = w->idle;
  if (k) {
    w->idle = k->next;
    w->n_idle--;
    k->job = job;
  } else if (w->tail) {
    w->tail->next = job;
    w->tail = job;
  } else {
    w->head = w->tail = job;
  }
  pthread_mutex_unlock(&w->mu);
  if (k) pthread_cond_signal(&k->cv);
}

size_t es_workers_idle(es_workers_t *w) {
  pthread_mutex_lock(&w->mu);
  size_t n = w->n_idle;
  pthread_mutex_unlock(&w->mu);
  return n;
}

void es_workers_stop(es_workers_t *w) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  w->stopping = true;
  for (size_t i = 0; i < w->n; i++) pthread_cond_signal(&w->workers[i].cv);
  pthread_mutex_unlock(&w->mu);
  for (size_t i = 0; i < w->n; i++) pthread_join(w->workers[i].thread, NULL);
  for (size_t i = 0; i < w->n; i++) pthread_cond_destroy(&w->workers[i].cv);
  pthread_mutex_destroy(&w->mu);
  free(w);
}
