/*
 * A fixed pool of worker threads running jobs. Backend work that may block
 * (PostgreSQL I/O) and subscription wake-ups run here, never on a
 * completion-queue thread. A job goes to the worker that became idle last
 * (workers.c says why); when none is idle, jobs wait in FIFO order. Jobs are
 * intrusive: the caller owns the es_job_t and keeps it alive until its
 * function has run.
 */
#ifndef ES_SERVER_WORKERS_H
#define ES_SERVER_WORKERS_H

#include <stddef.h>

typedef struct es_job es_job_t;
struct es_job {
  void (*fn)(es_job_t *job); /* runs on a worker thread */
  es_job_t *next;            /* private to the pool */
};

typedef struct es_workers es_workers_t;

/* Starts n threads. Returns NULL on failure. */
es_workers_t *es_workers_start(size_t n);
/* The same, each thread running `nice` steps below the process's priority
 * (nice(2)): under contention the scheduler gives it less of a core. */
es_workers_t *es_workers_start_niced(size_t n, int nice);
/* Lowers the calling thread's priority by `nice` steps (logs a warning when
 * the system refuses). */
void es_thread_lower_priority(int nice);
/* Queues job (never blocks). A job submitted after es_workers_stop began is
 * still run before the threads exit. */
void es_workers_submit(es_workers_t *w, es_job_t *job);
/* Workers waiting for a job now (a snapshot). */
size_t es_workers_idle(es_workers_t *w);
/* Runs every queued job, then joins and frees the pool. */
void es_workers_stop(es_workers_t *w);

#endif
