/*
 * The backend interface: how the server talks to storage.
 *
 * A backend is a handle whose first member is an es_backend_t, which points at
 * a table of methods (like SQLite's sqlite3_file / sqlite3_io_methods). Callers
 * use the es_backend_*() wrappers, never the table: the wrappers are the one
 * place for argument checks and tracing.
 *
 * Contract of every method:
 *   - returns ES_OK or a negative es_status; on failure it fills err (when
 *     non-NULL) and leaves out-params zeroed; a failed call changes nothing;
 *   - is safe to call from any number of threads at once;
 *   - requests have been through the core prepare functions (validate.h);
 *   - a backend whose `blocking` flag is set may wait on I/O: the server calls
 *     it from worker threads only, never from a completion-queue thread.
 *
 * Semantics (API.md): expected versions, atomic batches, idempotent retries,
 * gap-free global positions 1, 2, 3, ... in commit order, stream types, paging
 * edges and filters. After each commit a backend publishes its new head to
 * the notifier it was given (es_backend_set_notifier), so that waiting
 * subscriptions wake up; a backend shared by several processes also publishes
 * the commits of the others.
 *
 * Extension 1 (tags, queries, conditions, AppendMany) is a capability: a
 * backend declares what it implements in `features` and `append_many`, and
 * the wrappers refuse every request that needs something it has not declared
 * with ES_EUNSUPPORTED, naming the feature and the backend. A backend that
 * predates the extension leaves those members out of its (designated)
 * initializer and so refuses all of it: a tag, a query or a condition is
 * never silently dropped.
 */
#ifndef ES_BACKEND_H
#define ES_BACKEND_H

#include <stdint.h>

#include "es/error.h"
#include "es/event.h"
#include "es/notifier.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_backend es_backend_t;

/* One monitoring figure of a backend (see the `stats` method). */
typedef struct es_backend_stat {
  const char *name; /* static; a metric name suffix, e.g. "pg_pool_idle_connections" */
  const char *help; /* static; one line */
  int counter;      /* 1: only grows (a total); 0: a gauge */
  uint64_t value;
} es_backend_stat_t;

/* es_backend_methods_t.features (Extension 1). */
enum {
  ES_BACKEND_TAGS = 1,      /* stores EventData.tags and returns them (es_recorded_t.tags) */
  ES_BACKEND_QUERY = 2,     /* read_all honours es_filter_t.items (index-backed) */
  ES_BACKEND_CONDITION = 4, /* append (and append_many) check es_append_req_t.condition */
};

/* The end of an asynchronous append (es_backend_append_async): called
 * exactly once with the append's result code, the append's `out` and `err`
 * filled as the blocking append fills them. It may run on any thread,
 * including the caller's before es_backend_append_async returns. */
typedef void (*es_append_done_fn)(void *arg, int rc);

typedef struct es_backend_methods {
  const char *name; /* "memory", "postgres" */
  int blocking;     /* 1: methods may wait on I/O */

  /* Frees the backend and everything it owns. Pages still held by callers
   * must have been freed before. Never fails. */
  void (*close)(es_backend_t *b);

  /* Appends req->events atomically. On success fills *out (OUT). On a
   * duplicate batch fills the original result with duplicate = true.
   * Errors: ES_EEXIST (id reused, msg names it), ES_ETYPE, ES_EVERSION (err
   * carries actual_version), ES_EUNAVAIL, ES_ENOMEM. */
  int (*append)(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                es_err_t *err);

  /* One page of a stream. ES_ENOTFOUND when the stream has no events.
   * *out (OUT) must be freed with es_page_free(). */
  int (*read_stream)(es_backend_t *b, const es_read_stream_req_t *req, es_page_t *out,
                     es_err_t *err);

  /* One page of the global log. *out (OUT) must be freed with es_page_free().
   * FORWARD: out->next is one past the last position examined (the resume
   * point), out->is_end when that passed the head. */
  int (*read_all)(es_backend_t *b, const es_read_all_req_t *req, es_page_t *out, es_err_t *err);

  /* The last committed global position (0 when the log is empty). */
  int (*head)(es_backend_t *b, uint64_t *out, es_err_t *err);

  /* Optional (may be NULL): the backend's own figures for monitoring (pool
   * usage, commits, memory). Fills at most max entries of out (OUT) and
   * returns how many. Never fails; cheap enough to call on every scrape. */
  size_t (*stats)(es_backend_t *b, struct es_backend_stat *out, size_t max);

  /* Extension 1: ES_BACKEND_* bits; 0 = none of it (see the top). */
  unsigned features;

  /* Optional (NULL = AppendMany is refused): appends req->appends atomically
   * (backend_impl.h: es_append_many_decide) in one contiguous run of
   * positions. On success fills results[0..append_count) (OUT). Errors as
   * for append, plus ES_ECONDITION (err carries condition_position); an error
   * of one append carries err->append_index. */
  int (*append_many)(es_backend_t *b, const es_append_many_req_t *req, es_append_result_t *results,
                     es_err_t *err);

  /* Optional (NULL = only the blocking append): queues req and returns
   * without waiting for it; done(arg, rc) gives the outcome, as for append.
   * req, out and err belong to the caller and stay valid until done runs.
   * For a blocking backend whose appends wait for a group commit: the
   * caller's thread is free while the commit runs, and the thread that
   * commits a group ends all of its appends (no thread waits per append). */
  void (*append_async)(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                       es_err_t *err, es_append_done_fn done, void *arg);

  /* Optional (NULL = only the blocking append_many): append_many, ended like
   * append_async. On an error, results are zeroed before done runs. */
  void (*append_many_async)(es_backend_t *b, const es_append_many_req_t *req,
                            es_append_result_t *results, es_err_t *err, es_append_done_fn done,
                            void *arg);
} es_backend_methods_t;

/* The common head of every backend handle. */
struct es_backend {
  const es_backend_methods_t *methods;
  es_notifier_t *notifier; /* borrowed; may be NULL; see es_backend_set_notifier */
};

/* Wrappers (see the method comments above). */
void es_backend_close(es_backend_t *b);
int es_backend_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                      es_err_t *err);
int es_backend_read_stream(es_backend_t *b, const es_read_stream_req_t *req, es_page_t *out,
                           es_err_t *err);
int es_backend_read_all(es_backend_t *b, const es_read_all_req_t *req, es_page_t *out,
                        es_err_t *err);
int es_backend_head(es_backend_t *b, uint64_t *out, es_err_t *err);
/* results holds req->append_count entries. */
int es_backend_append_many(es_backend_t *b, const es_append_many_req_t *req,
                           es_append_result_t *results, es_err_t *err);
/* ES_OK when b can serve filter (Filter.items need ES_BACKEND_QUERY), else
 * ES_EUNSUPPORTED naming `field` (e.g. "filter.items") and the backend. The
 * read wrappers check this themselves; a subscription checks it at open. */
int es_backend_check_filter(const es_backend_t *b, const es_filter_t *filter, const char *field,
                            es_err_t *err);
/* The append as above, ended by done(arg, rc) (see append_async); err must
 * not be NULL. On a backend without append_async it runs the blocking
 * append and then done, on the caller's thread. */
void es_backend_append_async(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                             es_err_t *err, es_append_done_fn done, void *arg);
/* 1 when the backend has its own append_async. */
int es_backend_has_append_async(const es_backend_t *b);
/* es_backend_append_many ended by done(arg, rc), as es_backend_append_async
 * (results holds req->append_count entries; err must not be NULL). */
void es_backend_append_many_async(es_backend_t *b, const es_append_many_req_t *req,
                                  es_append_result_t *results, es_err_t *err,
                                  es_append_done_fn done, void *arg);
/* 1 when the backend has its own append_many_async. */
int es_backend_has_append_many_async(const es_backend_t *b);
int es_backend_is_blocking(const es_backend_t *b);
const char *es_backend_name(const es_backend_t *b);
/* The backend's monitoring figures (0 when it has none); see `stats`. */
size_t es_backend_stats(es_backend_t *b, es_backend_stat_t *out, size_t max);

/* Tells the backend where to publish growth of the log. n is borrowed and
 * must outlive the backend (or be unset with NULL before it is freed). Call
 * before the backend is shared between threads. */
void es_backend_set_notifier(es_backend_t *b, es_notifier_t *n);

#ifdef __cplusplus
}
#endif

#endif /* ES_BACKEND_H */
