/*
 * Internals of the PostgreSQL backend, shared by its source files:
 *
 *   backend_postgres.c  open/close, the reader pool, ReadStream, ReadAll, head
 *   pg_queue.c          the queue of appends and its lanes: the appending
 *                       threads take turns committing groups
 *   pg_commit.c         one group commit's transaction (and pg_decide.c,
 *                       pg_cache.c, pg_write.c, pg_map.c: pg_committer.h)
 *   pg_listen.c         the listener thread: LISTEN/NOTIFY across servers
 *   pg_schema.c         the versioned migrations, run at open
 *   pg_util.c           connecting, the reconnect gate, error mapping, binary
 *                       wire values, the SQL texts
 *
 * Connections. A PGconn is used by one thread at a time: each commit lane
 * owns one (used by the thread leading it), the listener owns one, readers
 * borrow one from the pool. Every new connection goes through
 * es__pg_connect(), which applies the session settings and prepares the
 * named statements of its role, and (except the listener's) through the
 * reconnect gate: while connecting fails, one attempt at a time is made and
 * the callers meanwhile fail at once with its last message, so that a dead
 * database costs one attempt at a time, not one per call. Only the outcome
 * lookup after a lost commit waits for its turn instead (es__pg_connect_ex),
 * ahead of the others.
 *
 * Waits. Every wait on the database is bounded (docs/postgres.md, Faults):
 * connecting by connect_timeout, every answer by the statement timeout plus
 * a second (es__pg_await and the exec helpers below; never PQexec or a bare
 * PQgetResult), a lock by lock_timeout, a transaction whose client vanished
 * by idle_in_transaction_session_timeout on the server's side, and
 * unacknowledged data by tcp_user_timeout.
 *
 * Lock order: publish_mu may be held while gate_mu or stats_mu is taken
 * (the committer reconnects inside it after a lost COMMIT); pool_mu,
 * queue_mu, gate_mu and stats_mu are leaves.
 */
#ifndef ES_PG_INTERNAL_H
#define ES_PG_INTERNAL_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/backend.h"
#include "es/backend_impl.h"
#include "es/backend_postgres.h"
#include "es/error.h"
#include "es/event.h"

/* Wire types (pg_type OIDs) of the parameters we send in binary. */
#define ES_PG_OID_BOOL 16
#define ES_PG_OID_BYTEA 17
#define ES_PG_OID_INT8 20
#define ES_PG_OID_INT4 23
#define ES_PG_OID_TEXT 25
#define ES_PG_OID_TEXT_ARRAY 1009
#define ES_PG_OID_UUID 2950
#define ES_PG_OID_UUID_ARRAY 2951

#define ES_PG_MAX_COMMITTERS 8
#define ES_PG_MAX_LOST_ATTEMPTS 8 /* per append; more than the committer ever makes */

/* The latest schema version this build knows (pg_schema.c). */
#define ES_PG_SCHEMA_VERSION 4

/* What a connection is for: decides which statements are prepared on it. */
typedef enum es_pg_role {
  ES_PG_ROLE_READER = 0,    /* pool: reads and head */
  ES_PG_ROLE_COMMITTER = 1, /* a commit lane (pg_queue.c) */
  ES_PG_ROLE_LISTENER = 2,  /* the listener thread: nothing prepared */
  ES_PG_ROLE_ADMIN = 3,     /* migrations at open: nothing prepared */
} es_pg_role_t;

/* SQL texts with the schema filled in, built once at open (pg_util.c). */
typedef struct es_pg_sql {
  char *quoted_schema; /* the schema as an SQL identifier */
  char *head;          /* prepared "es_head": SELECT head */
  char *stream_fwd;    /* prepared "es_stream_fwd" */
  char *stream_bwd;    /* prepared "es_stream_bwd" */
  char *all_fwd;       /* prepared "es_all_fwd" */
  char *all_bwd;       /* prepared "es_all_bwd" */
  char *lock;          /* prepared "es_lock": SELECT head ... FOR UPDATE */
  char *lookup;        /* prepared "es_lookup": stored ids and stream states */
  char *find_event;    /* prepared "es_find_event": position of one event id */
  char *write;         /* prepared "es_write": events, streams, head, NOTIFY */
  char *conditions;    /* prepared "es_conditions": a group's conditions */
} es_pg_sql_t;

/* One append waiting to be committed; lives on the appending thread's
 * stack until `done` is set under queue_mu. */
typedef struct es_pg_waiter es_pg_waiter_t;
struct es_pg_waiter {
  const es_append_req_t *req; /* borrowed from the caller */
  es_append_result_t *out;    /* the caller's; filled by its group's leader */
  es_err_t *err;              /* the caller's, may be NULL */
  es_err_t err_local;         /* used when err is NULL */
  int rc;                     /* the append's result */
  bool done;                  /* set by its group's leader under queue_mu */
  pthread_cond_t cv;          /* signalled when done, or to lead the next group */
  size_t bytes;               /* payload + metadata bytes (group sizing) */
  es_pg_waiter_t *next;       /* queue link */
  /* Commit tokens of this append's earlier attempts whose outcome was lost
   * (pg_commit.c): a stored batch carrying one of them is this append's own
   * first-time commit, not a duplicate. Written by the thread that commits
   * the group while the append waits. */
  uint64_t lost_tokens[ES_PG_MAX_LOST_ATTEMPTS];
  int n_lost;
  /* Extension 1: the answer to req->condition from the database in the
   * current attempt (pg_commit.c), under the head-row lock: the smallest
   * matching position after `after` that is committed, 0 = none. */
  uint64_t condition_stored;
  /* The appends this waiter commits, all or none: reqs[0..n_reqs) with
   * results outs[0..n_reqs). An Append is one (req, out); an AppendMany
   * (many != NULL, Extension 1) is many->appends with the caller's results,
   * decided together by es_append_many_decide and written as one contiguous
   * run of positions. req and out are reqs[0] and outs[0]. */
  const es_append_req_t *reqs;
  es_append_result_t *outs;
  size_t n_reqs;
  const es_append_many_req_t *many;
  const es_append_condition_t *condition; /* the request's, or NULL */
  size_t events;                          /* events of all its appends */
};

typedef struct es_pg_lane es_pg_lane_t; /* pg_queue.c */

typedef struct es_pg {
  es_backend_t base;    /* first member: es_backend_t * <-> es_pg_t * */
  char *url;            /* owned copy of the database URL */
  char *schema;         /* owned, unquoted */
  char *channel;        /* NOTIFY channel, owned */
  es_pg_options_t opts; /* copied; opts.schema points at `schema` */
  es_pg_sql_t sql;      /* owned texts */

  /* The reconnect gate (pg_util.c). */
  pthread_mutex_t gate_mu;
  bool gate_failing;             /* the last attempt to connect failed */
  bool gate_probing;             /* an attempt is in progress while failing */
  char gate_msg[ES_ERR_MSG_MAX]; /* the last failure, repeated to callers meanwhile */
  pthread_cond_t gate_cv;        /* signalled when a probe ends (CLOCK_MONOTONIC) */
  int gate_waiters;              /* callers waiting for their turn to probe: while
                                    any waits, the others fail at once */

  /* The reader pool. */
  pthread_mutex_t pool_mu;
  pthread_cond_t pool_cv;
  PGconn **idle; /* opts.connections slots, n_idle used */
  int n_idle;
  int n_open; /* idle + borrowed + being connected */

  /* The queue of appends and the commit lanes (pg_queue.c, pg_commit.c). */
  pthread_mutex_t queue_mu;
  pthread_cond_t queue_cv; /* close() waits here for the lanes to fall idle */
  es_pg_waiter_t *queue_head, *queue_tail;
  es_pg_lane_t *lanes;         /* opts.committers of them, owned */
  bool stopping;               /* close() began: no new appends, the listener ends */
  atomic_bool threads_started; /* the listener runs (set once, under queue_mu) */
  atomic_int commit_pid[ES_PG_MAX_COMMITTERS]; /* backend pid of each lane's connection
                                                  (the listener skips own NOTIFYs) */

  /* What this backend has published (pg_commit.c, pg_listen.c). A
   * committer holds publish_mu from sending its commit until known_head
   * covers it; the listener compares under it. So the listener publishes
   * only heads this backend did not commit itself: in a single-server store
   * it never publishes at all. */
  pthread_mutex_t publish_mu;
  uint64_t known_head; /* under publish_mu */

  /* The listener (pg_listen.c). */
  pthread_t listener;
  bool listener_stopped; /* es_pg_stop_listening() was called (under queue_mu) */
  int wake_fd;           /* eventfd: wakes the listener at close */

  /* Counters (es_pg_stats). */
  pthread_mutex_t stats_mu;
  es_pg_stats_t stats;

  es_pg_test_hooks_t test_hooks; /* zero outside tests (es_pg_set_test_hooks) */
} es_pg_t;

/* ---- pg_util.c ---------------------------------------------------------- */

/* Opens a connection for `role` through the gate: session settings applied
 * and statements prepared. *out (OUT) is closed with PQfinish. ES_EUNAVAIL
 * with a message when PostgreSQL cannot be reached. */
int es__pg_connect(es_pg_t *pg, es_pg_role_t role, PGconn **out, es_err_t *err);

/* Maps a failed result (res may be NULL) on conn to an es_status and fills
 * err with "what: reason". ES_EUNAVAIL when the connection is gone (also when
 * it was dropped for not answering in time: the message says so) or the
 * server refuses work (SQLSTATE classes 08, 40, 53, 57; 55P03, a lock
 * timeout), else ES_EINTERNAL. */
int es__pg_error(PGconn *conn, const PGresult *res, const char *what, es_err_t *err);

/* Identifies a PostgreSQL server process for good: pids are reused, a pid
 * together with its start time is not. */
typedef struct es_pg_session {
  int pid;          /* 0: unknown */
  int64_t start_us; /* its backend_start, microseconds since the Unix epoch */
} es_pg_session_t;

/* es__pg_connect() with two more things: while connecting is failing and
 * another caller is probing, it waits for its turn at the gate until
 * gate_deadline_ms (es__pg_now_ms() clock; 0 = fail at once, as
 * es__pg_connect does), ahead of callers that do not wait; and it fills
 * *session (OUT, may be NULL) with the new connection's server process. For
 * the outcome lookup after a lost commit, which must not report "unknown"
 * merely because a reader happened to be probing. */
int es__pg_connect_ex(es_pg_t *pg, es_pg_role_t role, uint64_t gate_deadline_ms, PGconn **out,
                      es_pg_session_t *session, es_err_t *err);

/* Ends the server process `old` (of a connection this backend lost) over c,
 * and waits until it has exited, at most until deadline_ms: then a
 * transaction it had open is over for sure, committed or rolled back, and
 * its locks are free. 1: it has exited (now, or before: no process with
 * that pid and start time is left); 0: still there at the deadline; or an
 * error (err set; c may be broken). A reused pid is never signalled. */
int es__pg_end_session(es_pg_t *pg, PGconn *c, const es_pg_session_t *old, uint64_t deadline_ms,
                       es_err_t *err);

/* ---- bounded waits (pg_util.c) ----
 *
 * libpq's own calls (PQexec, PQgetResult) wait for an answer without a
 * bound: a server that stops answering while its TCP connection stays up
 * (a hung host, a proxy or firewall that holds the traffic) blocks them for
 * ever. Every connection is therefore in non-blocking mode and every wait
 * for an answer goes through these, with a deadline. A connection whose
 * answer does not come in time is shut down on the spot: from then on
 * es__pg_conn_broken() is true, PQfinish() cannot block on it, and
 * es__pg_error() says that it timed out. */

/* When an answer to a request sent now is overdue: now + the statement
 * timeout + ES_PG_REPLY_GRACE_MS (UINT64_MAX without a statement timeout).
 * The grace lets PostgreSQL's own statement_timeout fire first, which
 * cancels the statement and keeps the connection. */
#define ES_PG_REPLY_GRACE_MS 1000
uint64_t es__pg_reply_deadline(const es_pg_t *pg);

/* Sends what libpq has buffered and waits until PQgetResult(c) cannot block.
 * ES_OK, or ES_EUNAVAIL when the connection failed or deadline_ms passed
 * (then it is shut down, see above). */
int es__pg_await(es_pg_t *pg, PGconn *c, uint64_t deadline_ms);

/* PQgetResult(c) within deadline_ms: NULL when the current query has no
 * further result, or when the connection failed (es__pg_conn_broken). */
PGresult *es__pg_get_result(es_pg_t *pg, PGconn *c, uint64_t deadline_ms);

/* Reads every result of the query just sent (c not in pipeline mode), within
 * deadline_ms: returns the first failed one, else the last, like PQexec;
 * NULL when the connection failed. */
PGresult *es__pg_last_result(es_pg_t *pg, PGconn *c, uint64_t deadline_ms);

/* PQexec, PQexecParams and PQexecPrepared with es__pg_reply_deadline(pg).
 * NULL (which PQresultStatus() reports as PGRES_FATAL_ERROR) when the
 * request could not be sent or the connection failed. */
PGresult *es__pg_exec(es_pg_t *pg, PGconn *c, const char *sql);
PGresult *es__pg_exec_params(es_pg_t *pg, PGconn *c, const char *sql, int n, const Oid *types,
                             const char *const *vals, const int *lens, const int *fmts,
                             int result_format);
PGresult *es__pg_exec_prepared(es_pg_t *pg, PGconn *c, const char *stmt, int n,
                               const char *const *vals, const int *lens, const int *fmts,
                               int result_format);

/* True when the last bounded wait of this thread timed out on c. */
bool es__pg_timed_out(const PGconn *c);

/* True when conn can no longer be used. */
bool es__pg_conn_broken(PGconn *conn);

/* Builds pg->sql for pg->schema. ES_ENOMEM. */
int es__pg_sql_build(es_pg_t *pg, es_err_t *err);
void es__pg_sql_free(es_pg_sql_t *sql);

/* The text of a ReadAll with Filter.items f (Extension 1), FORWARD or
 * BACKWARD; malloc'ed, or NULL when out of memory. Its parameters: $1..$6
 * as es_all_fwd / es_all_bwd's (from, scan bound, limit, byte budget,
 * prefix, types); then per item in order its types (text[]) and its tags
 * (text[]), and when `indexed` (every item has a tag: candidates come from
 * the tag index) each of its tags (text) too. */
char *es__pg_items_sql(const es_pg_t *pg, bool fwd, const es_filter_t *f, bool indexed);

/* The name under which reader connection c has `sql` (n parameters of
 * `types`) prepared, preparing it the first time c runs that text (pg_util.c,
 * "Statements prepared on first use"); written into name (16 bytes). NULL
 * when it cannot be (no room left on c, or PostgreSQL refused): run the text
 * unnamed then. */
const char *es__pg_adhoc_name(es_pg_t *pg, PGconn *c, const char *sql, int n, const Oid *types,
                              char name[16]);

/* "template" with every "{S}" replaced by quoted_schema; malloc'ed or NULL. */
char *es__pg_subst(const char *template_sql, const char *quoted_schema);

uint64_t es__pg_now_ms(void); /* CLOCK_MONOTONIC */
void es__pg_count(es_pg_t *pg, size_t field_offset, uint64_t n);
#define ES_PG_COUNT(pg, field, n) es__pg_count((pg), offsetof(es_pg_stats_t, field), (n))

/* Binary wire values. */
static inline void es__pg_put64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)v;
    v >>= 8;
  }
}
static inline void es__pg_put32(uint8_t *p, uint32_t v) {
  for (int i = 3; i >= 0; i--) {
    p[i] = (uint8_t)v;
    v >>= 8;
  }
}
static inline uint64_t es__pg_get64(const char *s) {
  const uint8_t *p = (const uint8_t *)s;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
static inline uint32_t es__pg_get32(const char *s) {
  const uint8_t *p = (const uint8_t *)s;
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A growable byte buffer (parameter values of a group commit). */
typedef struct es_pg_buf {
  char *data; /* malloc'ed, cap bytes */
  size_t len;
  size_t cap;
} es_pg_buf_t;

int es__pg_buf_reserve(es_pg_buf_t *b, size_t more); /* ES_ENOMEM */
int es__pg_buf_put(es_pg_buf_t *b, const void *p, size_t n);
void es__pg_buf_free(es_pg_buf_t *b);

/* A binary one-dimensional array value in b (which is reset first): the
 * header for n elements of type elem_oid, then exactly n elements. Each
 * returns ES_OK or ES_ENOMEM. */
int es__pg_array_begin(es_pg_buf_t *b, uint32_t elem_oid, size_t n);
int es__pg_array_elem(es_pg_buf_t *b, const void *p, size_t n);
int es__pg_array_u64(es_pg_buf_t *b, uint64_t v); /* an int8 element */
int es__pg_array_u32(es_pg_buf_t *b, uint32_t v); /* an int4 element */

/* Parses a binary text[] value: *n (OUT) elements, each at (*vals)[i] with
 * (*lens)[i] bytes (pointing into value, not NUL-terminated), written into
 * arrays the caller sized with es__pg_array_count(). -1 when malformed. */
long es__pg_array_count(const char *value, int len);
int es__pg_array_parse(const char *value, int len, const char **vals, size_t *lens);

/* ---- pg_schema.c -------------------------------------------------------- */

/* Creates the schema or migrates it to ES_PG_SCHEMA_VERSION on conn, under an
 * advisory lock, so that servers starting at once do it once. */
int es__pg_migrate(es_pg_t *pg, PGconn *conn, es_err_t *err);

/* ---- pg_queue.c -------------------------------------------------------- */

/* The lanes, at open (ES_ENOMEM) and at close (after es__pg_lanes_idle). */
int es__pg_lanes_init(es_pg_t *pg);
void es__pg_lanes_free(es_pg_t *pg);
/* No lane busy and nothing queued (under queue_mu). */
bool es__pg_lanes_idle(const es_pg_t *pg);
/* Queues the append and commits it, leading a group on the calling thread
 * when a lane is free (pg_queue.c). */
int es__pg_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                  es_err_t *err);
/* The same for an AppendMany (Extension 1): all of req's appends in one
 * group, decided together, one contiguous run of positions. */
int es__pg_append_many(es_backend_t *b, const es_append_many_req_t *req,
                       es_append_result_t *results, es_err_t *err);

/* ---- pg_listen.c -------------------------------------------------------- */

void *es__pg_listener_main(void *arg);

/* Publishes head unless this backend published it (or more) already. */
void es__pg_publish_remote(es_pg_t *pg, uint64_t head);

#endif /* ES_PG_INTERNAL_H */
