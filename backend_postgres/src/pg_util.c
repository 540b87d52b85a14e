/*
 * Plumbing of the PostgreSQL backend: connecting (with the reconnect gate),
 * mapping libpq failures to the error space, the SQL texts, and binary wire
 * values.
 *
 * Every statement is sent with binary parameters and asks for binary results:
 * no escaping, no text parsing of numbers, byte-exact payloads, and uuids as
 * their 16 bytes. The statements that run per call are prepared on each
 * connection when it is opened (es__pg_connect), so PostgreSQL parses and
 * plans them once per connection, not once per call.
 *
 * The reconnect gate. Once an attempt to connect has failed, and until one
 * succeeds, attempts are admitted one at a time: while one is in progress
 * (the probe), the others fail at once with the last failure's message. So
 * while PostgreSQL is down every call still answers quickly with
 * ES_EUNAVAIL, a database that does not answer at all (connect_timeout) holds
 * up one caller rather than all of them, and the first call after the
 * database is back reconnects. The listener stays out of the gate: it has a
 * back-off of its own, and its attempts must not make callers fail. The one
 * caller that must not be turned away is the outcome lookup after a lost
 * commit (its "unknown" would fail appends that did commit): it waits for its
 * turn, bounded, and goes before callers that do not wait.
 *
 * Session settings. Every session gets synchronous_commit = on and the
 * bounds of es_pg_options_t: statement_timeout, lock_timeout and
 * idle_in_transaction_session_timeout (the migrations at open keep the
 * server's statement and lock timeouts: a migration may wait for another
 * server's and may take long). libpq gets connect_timeout, tcp_user_timeout
 * and keepalives unless the URL sets them. A session remembers its server
 * process (pid and start time): after a lost commit that process is ended
 * for sure before the outcome is looked up (es__pg_end_session), so that a
 * transaction it still holds can neither commit later nor block the head row.
 *
 * Bounded waits. libpq waits for answers without a bound (PQexec,
 * PQgetResult), and a server or network that stops answering while TCP stays
 * up never ends such a wait: tcp_user_timeout only covers data that is not
 * acknowledged, keepalives only idle connections. So connections run in
 * non-blocking mode, and every wait for an answer polls the socket against a
 * deadline (es__pg_await): the statement timeout plus a second, so that
 * PostgreSQL's own statement_timeout normally fires first and keeps the
 * connection. A connection that misses its deadline is cut on the spot: its
 * socket is swapped for one that reads as closed (dup2), so that libpq sees
 * it broken, PQfinish() sends nothing, and the callers' usual "connection
 * lost" handling takes over; es__pg_error() then says that it timed out.
 *
 * Errors. A connection that is gone, and the SQLSTATE classes that say "not
 * now" (08 connection exception, 53 insufficient resources, 57 operator
 * intervention such as a shutdown, 40 transaction rollback), become
 * ES_EUNAVAIL: the client may retry. Anything else is ES_EINTERNAL, with
 * PostgreSQL's message, because a well-formed request should never cause it.
 */
#include <ctype.h>
#include <errno.h>
#include <libpq-events.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pg_internal.h"

uint64_t es__pg_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void es__pg_count(es_pg_t *pg, size_t field_offset, uint64_t n) {
  pthread_mutex_lock(&pg->stats_mu);
  *(uint64_t *)(void *)((char *)&pg->stats + field_offset) += n;
  pthread_mutex_unlock(&pg->stats_mu);
}

/* The connection on which this thread's last bounded wait timed out (NULL:
 * it did not), and the statement timeout then in force: es__pg_error() reports
 * that, rather than the "server closed the connection" libpq says once the
 * connection is cut. A connection is used by one thread at a time, and its
 * error is reported right after the wait, so a thread-local suffices. */
static _Thread_local const PGconn *timed_out_conn;
static _Thread_local int timed_out_statement_ms;

bool es__pg_timed_out(const PGconn *c) {
  return c != NULL && c == timed_out_conn;
}

/* Copies libpq's message into out on one line: newlines and tabs become
 * spaces, runs of spaces collapse, no trailing space. */
static void one_line(const char *msg, char *out, size_t cap) {
  size_t n = 0;
  bool space = false;
  for (const char *p = msg ? msg : ""; *p && n + 1 < cap; p++) {
    if (isspace((unsigned char)*p)) {
      space = n > 0;
      continue;
    }
    if (space && n + 2 < cap) out[n++] = ' ';
    space = false;
    out[n++] = *p;
  }
  out[n] = '\0';
}

bool es__pg_conn_broken(PGconn *conn) {
  return conn == NULL || PQstatus(conn) != CONNECTION_OK;
}

/* ---- bounded waits ------------------------------------------------------- */

uint64_t es__pg_reply_deadline(const es_pg_t *pg) {
  if (pg->opts.statement_timeout_ms <= 0) return UINT64_MAX;
  return es__pg_now_ms() + (uint64_t)pg->opts.statement_timeout_ms + ES_PG_REPLY_GRACE_MS;
}

/* Makes c unusable at once, without waiting for anything: its socket is
 * replaced (dup2, atomic for libpq, which keeps the descriptor number) by one
 * end of a socket pair whose other end is closed, which closes the TCP
 * connection and reads as end of file. libpq then marks the connection bad
 * on the next read, and PQfinish() sends nothing on it. */
static void cut(PGconn *c) {
  int fd = PQsocket(c);
  int sv[2];
  if (fd >= 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0) {
    close(sv[1]);
    if (dup2(sv[0], fd) < 0) shutdown(fd, SHUT_RDWR);
    close(sv[0]);
  } else if (fd >= 0) {
    shutdown(fd, SHUT_RDWR);
  }
  for (int i = 0; i < 16 && PQstatus(c) == CONNECTION_OK; i++)
    if (!PQconsumeInput(c)) break;
}

int es__pg_await(es_pg_t *pg, PGconn *c, uint64_t deadline_ms) {
  timed_out_conn = NULL;
  for (;;) {
    if (es__pg_conn_broken(c)) return ES_EUNAVAIL;
    int flushed = PQflush(c); /* 0 all sent, 1 more to send, -1 failed */
    if (flushed < 0) break;
    if (flushed == 0 && !PQisBusy(c)) return ES_OK;
    uint64_t now = es__pg_now_ms();
    if (now >= deadline_ms) {
      timed_out_conn = c;
      timed_out_statement_ms = pg->opts.statement_timeout_ms;
      ES_PG_COUNT(pg, timeouts, 1);
      cut(c);
      return ES_EUNAVAIL;
    }
    int ms =
        deadline_ms == UINT64_MAX || deadline_ms - now > INT_MAX ? -1 : (int)(deadline_ms - now);
    struct pollfd p = {PQsocket(c), (short)(POLLIN | (flushed ? POLLOUT : 0)), 0};
    int r = poll(&p, 1, ms);
    if (r < 0 && errno != EINTR) break;
    if (r > 0 && (p.revents & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(c)) break;
  }
  /* libpq failed without marking the connection bad: make sure it is. */
  if (!es__pg_conn_broken(c)) cut(c);
  return ES_EUNAVAIL;
}

PGresult *es__pg_get_result(es_pg_t *pg, PGconn *c, uint64_t deadline_ms) {
  if (es__pg_await(pg, c, deadline_ms)) return NULL;
  return PQgetResult(c);
}

static bool failed_status(const PGresult *r) {
  ExecStatusType st = PQresultStatus(r);
  return st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE;
}

PGresult *es__pg_last_result(es_pg_t *pg, PGconn *c, uint64_t deadline_ms) {
  PGresult *keep = NULL, *r;
  while ((r = es__pg_get_result(pg, c, deadline_ms)) != NULL) {
    if (keep && failed_status(keep)) {
      PQclear(r);
    } else {
      PQclear(keep);
      keep = r;
    }
  }
  /* A success followed by a lost connection is no success; an error result
   * is kept for its message. */
  if (es__pg_conn_broken(c) && keep && !failed_status(keep)) {
    PQclear(keep);
    keep = NULL;
  }
  return keep;
}

PGresult *es__pg_exec(es_pg_t *pg, PGconn *c, const char *sql) {
  uint64_t deadline = es__pg_reply_deadline(pg);
  if (!PQsendQuery(c, sql)) return NULL;
  return es__pg_last_result(pg, c, deadline);
}

PGresult *es__pg_exec_params(es_pg_t *pg, PGconn *c, const char *sql, int n, const Oid *types,
                             const char *const *vals, const int *lens, const int *fmts,
                             int result_format) {
  uint64_t deadline = es__pg_reply_deadline(pg);
  if (!PQsendQueryParams(c, sql, n, types, vals, lens, fmts, result_format)) return NULL;
  return es__pg_last_result(pg, c, deadline);
}

PGresult *es__pg_exec_prepared(es_pg_t *pg, PGconn *c, const char *stmt, int n,
                               const char *const *vals, const int *lens, const int *fmts,
                               int result_format) {
  uint64_t deadline = es__pg_reply_deadline(pg);
  if (!PQsendQueryPrepared(c, stmt, n, vals, lens, fmts, result_format)) return NULL;
  return es__pg_last_result(pg, c, deadline);
}

int es__pg_error(PGconn *conn, const PGresult *res, const char *what, es_err_t *err) {
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (msg == NULL && res != NULL && PQresultErrorMessage(res)[0]) msg = PQresultErrorMessage(res);
  if (msg == NULL) msg = conn ? PQerrorMessage(conn) : "no connection";
  if (msg[0] == '\0') msg = "connection lost";
  /* 55P03: lock_timeout expired, 25P03: the server ended an idle transaction;
   * both say "not now", like the classes. */
  bool unavailable = es__pg_conn_broken(conn) ||
                     (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
                                strncmp(state, "57", 2) == 0 || strncmp(state, "40", 2) == 0 ||
                                strcmp(state, "55P03") == 0 || strcmp(state, "25P03") == 0));
  if (conn && es__pg_timed_out(conn))
    return es_err_set(err, ES_EUNAVAIL,
                      "PostgreSQL unavailable (%s): no answer within the statement timeout "
                      "(%d ms) plus %d ms; connection dropped",
                      what, timed_out_statement_ms, ES_PG_REPLY_GRACE_MS);
  char line[ES_ERR_MSG_MAX];
  one_line(msg, line, sizeof line);
  if (unavailable)
    return es_err_set(err, ES_EUNAVAIL, "PostgreSQL unavailable (%s): %s", what, line);
  return es_err_set(err, ES_EINTERNAL, "PostgreSQL error (%s): %s%s%s", what, line,
                    state ? " SQLSTATE " : "", state ? state : "");
}

/* ---- the reconnect gate -------------------------------------------------- */

/* Admits an attempt to connect. While connecting is failing, one attempt at a
 * time is admitted (the probe); the others fail at once with the last
 * failure's message, unless they wait (deadline_ms != 0): then they wait for
 * the probe to end and go next, before any caller that does not wait. */
static int gate_enter(es_pg_t *pg, uint64_t deadline_ms, bool *probe, es_err_t *err) {
  int rc = ES_OK;
  bool patient = deadline_ms != 0;
  *probe = false;
  pthread_mutex_lock(&pg->gate_mu);
  if (patient) pg->gate_waiters++;
  while (pg->gate_failing) {
    if (!pg->gate_probing && (patient || pg->gate_waiters == 0)) {
      *probe = pg->gate_probing = true;
      break;
    }
    uint64_t now = es__pg_now_ms();
    if (!patient || now >= deadline_ms) {
      rc = es_err_set(err, ES_EUNAVAIL, "%s", pg->gate_msg);
      break;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ms = deadline_ms - now;
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&pg->gate_cv, &pg->gate_mu, &ts);
  }
  if (patient) pg->gate_waiters--;
  pthread_mutex_unlock(&pg->gate_mu);
  return rc;
}

static void gate_fail(es_pg_t *pg, bool probe, const char *msg) {
  pthread_mutex_lock(&pg->gate_mu);
  pg->gate_failing = true;
  if (probe) pg->gate_probing = false;
  snprintf(pg->gate_msg, sizeof pg->gate_msg, "%s", msg);
  pthread_cond_broadcast(&pg->gate_cv);
  pthread_mutex_unlock(&pg->gate_mu);
}

static void gate_ok(es_pg_t *pg, bool probe) {
  bool reconnected;
  pthread_mutex_lock(&pg->gate_mu);
  reconnected = pg->gate_failing;
  pg->gate_failing = false;
  if (probe) pg->gate_probing = false;
  pthread_cond_broadcast(&pg->gate_cv);
  pthread_mutex_unlock(&pg->gate_mu);
  if (reconnected) ES_PG_COUNT(pg, reconnects, 1);
}

/* ---- connecting ---------------------------------------------------------- */

typedef struct prepared {
  const char *name;
  size_t sql_offset; /* of the text within es_pg_sql_t */
  int nparams;
  Oid types[8];
} prepared_t;

#define SQL_AT(sql, off) (*(char **)(void *)((char *)(sql) + (off)))

static const prepared_t READER_STATEMENTS[] = {
    {"es_head", offsetof(es_pg_sql_t, head), 0, {0}},
    {"es_stream_fwd",
     offsetof(es_pg_sql_t, stream_fwd),
     4,
     {ES_PG_OID_TEXT, ES_PG_OID_INT8, ES_PG_OID_INT4, ES_PG_OID_INT8}},
    {"es_stream_bwd",
     offsetof(es_pg_sql_t, stream_bwd),
     4,
     {ES_PG_OID_TEXT, ES_PG_OID_INT8, ES_PG_OID_INT4, ES_PG_OID_INT8}},
    {"es_all_fwd",
     offsetof(es_pg_sql_t, all_fwd),
     6,
     {ES_PG_OID_INT8, ES_PG_OID_INT8, ES_PG_OID_INT4, ES_PG_OID_INT8, ES_PG_OID_TEXT,
      ES_PG_OID_TEXT_ARRAY}},
    {"es_all_bwd",
     offsetof(es_pg_sql_t, all_bwd),
     6,
     {ES_PG_OID_INT8, ES_PG_OID_INT8, ES_PG_OID_INT4, ES_PG_OID_INT8, ES_PG_OID_TEXT,
      ES_PG_OID_TEXT_ARRAY}},
};

/* The write statement has more parameters than fit the table: its types are
 * given in its text (casts), so it is prepared with none declared; so is the
 * conditions statement. */
static const prepared_t COMMITTER_STATEMENTS[] = {
    {"es_lock", offsetof(es_pg_sql_t, lock), 0, {0}},
    {"es_lookup", offsetof(es_pg_sql_t, lookup), 2, {ES_PG_OID_UUID_ARRAY, ES_PG_OID_TEXT_ARRAY}},
    {"es_find_event", offsetof(es_pg_sql_t, find_event), 2, {ES_PG_OID_UUID, ES_PG_OID_INT8}},
    {"es_write", offsetof(es_pg_sql_t, write), 0, {0}},
    {"es_conditions", offsetof(es_pg_sql_t, conditions), 0, {0}},
};

/* Prepares sql as `name` on c, within the reply deadline; PostgreSQL's
 * answer (NULL when none came), to be cleared by the caller. */
static PGresult *prepare_one(es_pg_t *pg, PGconn *c, const char *name, const char *sql, int n,
                             const Oid *types) {
  uint64_t deadline = es__pg_reply_deadline(pg);
  return PQsendPrepare(c, name, sql, n, n ? types : NULL) ? es__pg_last_result(pg, c, deadline)
                                                          : NULL;
}

static int prepare_all(es_pg_t *pg, PGconn *c, const prepared_t *list, size_t n, es_err_t *err) {
  for (size_t i = 0; i < n; i++) {
    PGresult *res = prepare_one(pg, c, list[i].name, SQL_AT(&pg->sql, list[i].sql_offset),
                                list[i].nparams, list[i].types);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
      char what[64];
      snprintf(what, sizeof what, "preparing %s", list[i].name);
      int rc = es__pg_error(c, res, what, err);
      PQclear(res);
      return rc;
    }
    PQclear(res);
  }
  return ES_OK;
}

/* ---- statements prepared on first use ----------------------------------
 *
 * A read by query is a statement whose text follows the shape of its filter
 * (es__pg_items_sql: the number of items and of their tags). Sent unnamed it
 * is parsed and planned on every call: a read of one tag's four events took
 * 0.87 ms at p50, most of it planning, and 0.34 ms prepared. So a reader
 * connection prepares such a text the first time it runs it and keeps it,
 * at most ADHOC_MAX texts a connection (a filter's shape is one of a few in
 * practice; beyond that the text runs unnamed, as before). The record of
 * what a connection has prepared is libpq instance data of that connection,
 * freed with it by an event procedure: a connection that is lost and
 * replaced starts with an empty record, never with a stale one. A text is
 * matched by its hash and then compared whole. */
#define ADHOC_MAX 64

typedef struct adhoc_cache {
  int n;
  uint64_t hash[ADHOC_MAX];
  char *sql[ADHOC_MAX]; /* owned copies */
} adhoc_cache_t;

static int adhoc_events(PGEventId id, void *info, void *passthrough) {
  (void)passthrough;
  if (id == PGEVT_CONNDESTROY) {
    PGEventConnDestroy *d = info;
    adhoc_cache_t *cache = PQinstanceData(d->conn, adhoc_events);
    for (int i = 0; cache && i < cache->n; i++) free(cache->sql[i]);
    free(cache);
  }
  return 1;
}

/* Gives reader connection c its empty record. */
static int adhoc_attach(PGconn *c, es_err_t *err) {
  adhoc_cache_t *cache = calloc(1, sizeof *cache);
  if (!cache) return es_err_set(err, ES_ENOMEM, "out of memory connecting to PostgreSQL");
  if (!PQregisterEventProc(c, adhoc_events, "es_adhoc", NULL) ||
      !PQsetInstanceData(c, adhoc_events, cache)) {
    free(cache);
    return es_err_set(err, ES_EINTERNAL, "libpq refused the connection's statement record");
  }
  return ES_OK;
}

const char *es__pg_adhoc_name(es_pg_t *pg, PGconn *c, const char *sql, int n, const Oid *types,
                              char name[16]) {
  adhoc_cache_t *cache = PQinstanceData(c, adhoc_events);
  if (!cache) return NULL;
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (const char *p = sql; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
  for (int i = 0; i < cache->n; i++)
    if (cache->hash[i] == h && strcmp(cache->sql[i], sql) == 0) {
      snprintf(name, 16, "es_q%d", i);
      return name;
    }
  if (cache->n == ADHOC_MAX) return NULL;
  char *copy = strdup(sql);
  if (!copy) return NULL;
  snprintf(name, 16, "es_q%d", cache->n);
  PGresult *res = prepare_one(pg, c, name, sql, n, types);
  bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
  PQclear(res);
  if (!ok) {
    free(copy);
    return NULL;
  }
  cache->hash[cache->n] = h;
  cache->sql[cache->n++] = copy;
  ES_PG_COUNT(pg, statements_prepared, 1);
  return name;
}

/* libpq prints notices (and errors that arrive between queries, such as
 * "terminating connection due to administrator command") to stderr by
 * default; a backend must not. Failures reach the caller as results. */
static void quiet_notices(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

/* The session settings, and the server process of the session, in one round
 * trip. An acknowledged append must survive a crash, whatever the server's
 * default: synchronous_commit on (the committer relies on it; readers do not
 * care, and one setting for all keeps it simple). The migrations
 * (ES_PG_ROLE_ADMIN) keep the server's statement and lock timeouts: they may
 * wait for another server's migration, and a migration may take long.
 *
 * JIT off: every statement of ours is short, and PostgreSQL decides to
 * compile one by its estimated cost, which for a statement over arrays of
 * unknown contents can be huge; a compiled condition check took ~30 ms
 * where it runs in well under one (docs/postgres.md). */
static int setup_session(es_pg_t *pg, PGconn *c, es_pg_role_t role, es_pg_session_t *session,
                         es_err_t *err) {
  char sql[512];
  int n = snprintf(sql, sizeof sql,
                   "SET synchronous_commit TO on; SET jit TO off; "
                   "SET idle_in_transaction_session_timeout TO %d; ",
                   pg->opts.idle_in_transaction_timeout_ms);
  if (role != ES_PG_ROLE_ADMIN)
    n += snprintf(sql + n, sizeof sql - (size_t)n,
                  "SET statement_timeout TO %d; SET lock_timeout TO %d; ",
                  pg->opts.statement_timeout_ms, pg->opts.lock_timeout_ms);
  snprintf(sql + n, sizeof sql - (size_t)n,
           "SELECT pid, (extract(epoch FROM backend_start) * 1000000)::int8 "
           "FROM pg_stat_activity WHERE pid = pg_backend_pid()");
  PGresult *res = es__pg_exec(pg, c, sql);
  int rc = ES_OK;
  if (PQresultStatus(res) != PGRES_TUPLES_OK)
    rc = es__pg_error(c, res, "setting up the session", err);
  else if (PQntuples(res) != 1 || PQnfields(res) != 2)
    rc = es_err_set(err, ES_EINTERNAL, "PostgreSQL: the session's own process is not listed");
  else if (session) {
    /* What the database hands back is checked like any input: this pid is
     * the one pg_terminate_backend may later be aimed at. */
    const char *pid_text = PQgetvalue(res, 0, 0), *start_text = PQgetvalue(res, 0, 1);
    char *pid_end = NULL, *start_end = NULL;
    errno = 0;
    long pid = strtol(pid_text, &pid_end, 10);
    long long start = strtoll(start_text, &start_end, 10);
    if (errno != 0 || pid_end == pid_text || *pid_end != '\0' || pid <= 0 || pid > INT_MAX ||
        start_end == start_text || *start_end != '\0')
      rc = es_err_set(err, ES_EINTERNAL, "PostgreSQL: malformed session row ('%.32s', '%.32s')",
                      pid_text, start_text);
    else {
      session->pid = (int)pid;
      session->start_us = start;
    }
  }
  PQclear(res);
  return rc;
}

int es__pg_connect(es_pg_t *pg, es_pg_role_t role, PGconn **out, es_err_t *err) {
  return es__pg_connect_ex(pg, role, 0, out, NULL, err);
}

int es__pg_connect_ex(es_pg_t *pg, es_pg_role_t role, uint64_t gate_deadline_ms, PGconn **out,
                      es_pg_session_t *session, es_err_t *err) {
  *out = NULL;
  if (session) memset(session, 0, sizeof *session);
  /* The listener keeps its own back-off and stays out of the gate, so that
   * its attempts never make a caller fail. */
  bool gated = role != ES_PG_ROLE_LISTENER, probe = false;
  int rc = gated ? gate_enter(pg, gate_deadline_ms, &probe, err) : ES_OK;
  if (rc) return rc;

  /* Defaults before dbname (the URL may override them), what we rely on
   * after it (libpq keeps the last value of a repeated keyword). */
  char timeout[16], user_timeout[16];
  snprintf(timeout, sizeof timeout, "%d", pg->opts.connect_timeout_s);
  snprintf(user_timeout, sizeof user_timeout, "%d", pg->opts.tcp_user_timeout_ms);
  const char *keys[] = {"connect_timeout",  "keepalives",
                        "keepalives_idle",  "keepalives_interval",
                        "keepalives_count", "tcp_user_timeout",
                        "application_name", "dbname",
                        "client_encoding",  NULL};
  const char *vals[] = {timeout,      "1",          "30",    "10",   "3",
                        user_timeout, "eventstore", pg->url, "UTF8", NULL};
  PGconn *c = PQconnectdbParams(keys, vals, 1);
  if (c == NULL) return es_err_set(err, ES_ENOMEM, "out of memory connecting to PostgreSQL");
  if (PQstatus(c) == CONNECTION_OK) PQsetNoticeProcessor(c, quiet_notices, NULL);
  if (PQstatus(c) != CONNECTION_OK) {
    char line[ES_ERR_MSG_MAX - 64];
    one_line(PQerrorMessage(c), line, sizeof line);
    PQfinish(c);
    char msg[ES_ERR_MSG_MAX];
    snprintf(msg, sizeof msg, "PostgreSQL unavailable: cannot connect: %s", line);
    if (gated) gate_fail(pg, probe, msg);
    return es_err_set(err, ES_EUNAVAIL, "%s", msg);
  }
  /* Non-blocking, so that no send can block on a full socket either (a
   * server that stopped reading): every wait is in es__pg_await. */
  if (PQsetnonblocking(c, 1) != 0) {
    rc = es__pg_error(c, NULL, "setting non-blocking mode", err);
    goto fail;
  }
  if ((rc = setup_session(pg, c, role, session, err))) goto fail;
  if (role == ES_PG_ROLE_READER && (rc = adhoc_attach(c, err)) == ES_OK)
    rc = prepare_all(pg, c, READER_STATEMENTS,
                     sizeof READER_STATEMENTS / sizeof READER_STATEMENTS[0], err);
  else if (role == ES_PG_ROLE_COMMITTER)
    rc = prepare_all(pg, c, COMMITTER_STATEMENTS,
                     sizeof COMMITTER_STATEMENTS / sizeof COMMITTER_STATEMENTS[0], err);
  if (rc) goto fail;
  if (gated) gate_ok(pg, probe);
  *out = c;
  return ES_OK;

fail:
  if (gated) {
    if (rc == ES_EUNAVAIL)
      gate_fail(pg, probe, err ? err->msg : "PostgreSQL unavailable");
    else
      gate_ok(pg, probe); /* reachable, so the gate opens; the error is another one */
  }
  PQfinish(c);
  return rc;
}

/* Ends a session only if it is the very process that was recorded: the pid
 * and its start time must both match, so a pid the kernel has given to a
 * newer backend is left alone. $3: how long pg_terminate_backend() waits for
 * the process to exit (it returns false, with a warning, if it has not). */
static const char SQL_END_SESSION[] =
    "SELECT pg_terminate_backend(pid, $3::int8) FROM pg_stat_activity "
    "WHERE pid = $1::int4 AND (extract(epoch FROM backend_start) * 1000000)::int8 = $2::int8";
static const char SQL_SESSION_ALIVE[] =
    "SELECT 1 FROM pg_stat_activity "
    "WHERE pid = $1::int4 AND (extract(epoch FROM backend_start) * 1000000)::int8 = $2::int8";

int es__pg_end_session(es_pg_t *pg, PGconn *c, const es_pg_session_t *old, uint64_t deadline_ms,
                       es_err_t *err) {
  if (old->pid <= 0) return 0; /* not known: it cannot be ended for sure */
  uint64_t now = es__pg_now_ms();
  uint64_t wait = deadline_ms > now ? deadline_ms - now : 1;
  /* Our own statement must not be cancelled while it waits. */
  if (pg->opts.statement_timeout_ms > 0 && wait > (uint64_t)pg->opts.statement_timeout_ms / 2)
    wait = (uint64_t)pg->opts.statement_timeout_ms / 2;
  if (wait == 0) wait = 1;
  char pid[16], start[24], wait_s[24];
  snprintf(pid, sizeof pid, "%d", old->pid);
  snprintf(start, sizeof start, "%lld", (long long)old->start_us);
  snprintf(wait_s, sizeof wait_s, "%llu", (unsigned long long)wait);
  const char *vals[3] = {pid, start, wait_s};
  PGresult *res = es__pg_exec_params(pg, c, SQL_END_SESSION, 3, NULL, vals, NULL, NULL, 0);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    int rc = es__pg_error(c, res, "ending the session of a lost connection", err);
    PQclear(res);
    return rc;
  }
  /* No row: that process is gone already. true: it has exited now. */
  bool gone = PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 0), "t") == 0;
  bool ended = PQntuples(res) == 1 && gone;
  PQclear(res);
  if (!gone) {
    /* false: it did not exit in time, or it had exited just before the
     * signal. Which one? */
    res = es__pg_exec_params(pg, c, SQL_SESSION_ALIVE, 2, NULL, vals, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
      int rc = es__pg_error(c, res, "looking for the session of a lost connection", err);
      PQclear(res);
      return rc;
    }
    gone = PQntuples(res) == 0;
    PQclear(res);
  }
  if (ended) ES_PG_COUNT(pg, sessions_ended, 1);
  return gone ? 1 : 0;
}

/* ---- SQL texts ----------------------------------------------------------- */

char *es__pg_subst(const char *t, const char *quoted_schema) {
  size_t qlen = strlen(quoted_schema), n = 0;
  for (const char *p = strstr(t, "{S}"); p; p = strstr(p + 3, "{S}")) n++;
  size_t len = strlen(t) + n * qlen + 1;
  char *out = malloc(len);
  if (out == NULL) return NULL;
  char *o = out;
  for (const char *p = t; *p;) {
    if (p[0] == '{' && p[1] == 'S' && p[2] == '}') {
      memcpy(o, quoted_schema, qlen);
      o += qlen;
      p += 3;
    } else {
      *o++ = *p++;
    }
  }
  *o = '\0';
  return out;
}

/* SQL reads better laid out by hand: */
/* clang-format off */
/* The columns every read returns, in this order (see the RC_* indexes in
 * backend_postgres.c): the head or the stream's last version, the stream
 * type, then the event. */
#define EVENT_COLUMNS                                                                      \
  "e.position, e.stream_id, e.stream_version, e.event_id, e.event_type, e.event_version, " \
  "e.content_type, e.payload, e.metadata_keys, e.metadata_values, e.correlation_id, "      \
  "e.causation_id, e.occurred_at_unix_ms, e.recorded_at_unix_ms, e.tags"

/* A page: the rows in order, LIMIT $3, and no more than fit the byte budget
 * $4. body_bytes never exceeds es_recorded_size_bound(), so every row the
 * budget admits in C is returned, plus the one after it (where the page
 * stops, which a filtered read needs to know); rn <= KEEP keeps the first
 * rows whatever their size (a page always has at least one event). */
#define PAGE(KEEP, WHERE, ORDER)                                                \
  "LEFT JOIN LATERAL (SELECT x.* FROM (SELECT e.*, row_number() OVER w AS rn, " \
  "sum(e.body_bytes) OVER w AS run FROM {S}.es_events e WHERE " WHERE           \
  " WINDOW w AS (ORDER BY " ORDER ") ORDER BY " ORDER " LIMIT $3) x "           \
  "WHERE x.rn <= " KEEP " OR x.run - x.body_bytes <= $4) e ON true "

#define FILTER                                     \
  " AND ($5 = '' OR starts_with(e.stream_id, $5))" \
  " AND (cardinality($6) = 0 OR e.event_type = ANY ($6))"

static const char SQL_HEAD[] = "SELECT head FROM {S}.es_log_head WHERE id = 1";

/* $1 stream, $2 from version, $3 limit, $4 byte budget. No row: no stream. */
static const char SQL_STREAM_FWD[] =
    "SELECT s.last_version, s.stream_type, " EVENT_COLUMNS " FROM {S}.es_streams s "
    PAGE("1", "e.stream_id = s.stream_id AND e.stream_version >= $2", "e.stream_version")
    "WHERE s.stream_id = $1 ORDER BY e.stream_version";

static const char SQL_STREAM_BWD[] =
    "SELECT s.last_version, s.stream_type, " EVENT_COLUMNS " FROM {S}.es_streams s "
    PAGE("1",
         "e.stream_id = s.stream_id AND e.stream_version <= "
         "CASE WHEN $2 = 0 OR $2 > s.last_version THEN s.last_version ELSE $2 END",
         "e.stream_version DESC")
    "WHERE s.stream_id = $1 ORDER BY e.stream_version DESC";

/* $1 from position (>= 1), $2 last position to scan, $3 limit, $4 byte
 * budget, $5 stream prefix, $6 event types. The head comes from the same
 * snapshot as the events. */
static const char SQL_ALL_FWD[] =
    "SELECT h.head, s.stream_type, " EVENT_COLUMNS " FROM {S}.es_log_head h "
    PAGE("2", "e.position >= $1 AND e.position <= LEAST(h.head, $2)" FILTER, "e.position")
    "LEFT JOIN {S}.es_streams s ON s.stream_id = e.stream_id "
    "WHERE h.id = 1 ORDER BY e.position";

/* ReadAll with Filter.items (Extension 1): es_all_fwd / es_all_bwd with the
 * items' test added, built per request (es__pg_items_sql). */
#define ALL_FWD_HEAD "SELECT h.head, s.stream_type, " EVENT_COLUMNS " FROM {S}.es_log_head h "
#define ALL_FWD_WHERE "e.position >= $1 AND e.position <= LEAST(h.head, $2)" FILTER
#define ALL_BWD_HEAD                                                                   \
  "SELECT h.head, s.stream_type, " EVENT_COLUMNS " FROM {S}.es_log_head h "            \
  "CROSS JOIN LATERAL (SELECT CASE WHEN $1 = 0 OR $1 > h.head THEN h.head ELSE $1 END " \
  "AS start) st "
#define ALL_BWD_WHERE "e.position <= st.start AND e.position >= st.start - $2 + 1" FILTER
#define ALL_TAIL(ORDER)                                          \
  "LEFT JOIN {S}.es_streams s ON s.stream_id = e.stream_id " \
  "WHERE h.id = 1 ORDER BY " ORDER

/* $1 from position (0 or beyond the head: the head), $2 positions to scan. */
static const char SQL_ALL_BWD[] =
    "SELECT h.head, s.stream_type, " EVENT_COLUMNS " FROM {S}.es_log_head h "
    "CROSS JOIN LATERAL (SELECT CASE WHEN $1 = 0 OR $1 > h.head THEN h.head ELSE $1 END "
    "AS start) st "
    PAGE("2", "e.position <= st.start AND e.position >= st.start - $2 + 1" FILTER,
         "e.position DESC")
    "LEFT JOIN {S}.es_streams s ON s.stream_id = e.stream_id "
    "WHERE h.id = 1 ORDER BY e.position DESC";

/* The first statement of a group commit after BEGIN: the global lock. Every
 * writer of the store takes this row lock first, so from here to COMMIT this
 * transaction is the only one that can change the log, and a later
 * statement of it (READ COMMITTED: a fresh snapshot per statement) sees
 * everything that was committed before. */
static const char SQL_LOCK[] = "SELECT head FROM {S}.es_log_head WHERE id = 1 FOR UPDATE";

/* $1 the group's event ids, $2 its streams: what is stored of them. */
static const char SQL_LOOKUP[] =
    "SELECT true, e.event_id, e.stream_id, e.stream_version, e.position, "
    "e.recorded_at_unix_ms, e.batch_index, e.batch_size, NULL::text, e.commit_token, "
    "e.joined "
    "FROM {S}.es_events e WHERE e.event_id = ANY ($1) "
    "UNION ALL "
    "SELECT false, NULL::uuid, s.stream_id, s.last_version, NULL::int8, NULL::int8, "
    "NULL::int4, NULL::int4, s.stream_type, NULL::int8, NULL::int2 "
    "FROM {S}.es_streams s WHERE s.stream_id = ANY ($2)";

/* clang-format on */

/* A growing SQL text; *ok turns false when memory runs out. */
static void sql_add(es_pg_buf_t *b, bool *ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void sql_add(es_pg_buf_t *b, bool *ok, const char *fmt, ...) {
  if (!*ok) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || es__pg_buf_reserve(b, (size_t)n + 1)) {
    *ok = false;
    return;
  }
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* The text of a ReadAll with Filter.items; see pg_internal.h for its
 * parameters.
 *
 * Every item is tested on the event's own row: its types, and its tags
 * contained in the row's tags (e.tags @> the item's tags). Read that way the
 * filter is exact, but it only bounds a scan of the log. When every item
 * names a tag (`indexed`), the events are also restricted to candidates from
 * the tag index: per item, the positions of its first tag in reading order
 * (es_tags' primary key), each probed for the item's other tags (the
 * intersection; PostgreSQL may start from another of the item's tags when
 * its statistics of es_tags show that one to be rarer) and joined with its
 * event, which must pass the item's types, the stream prefix and the
 * filter's types; each item's list stops at the page's count ($3). The page
 * is the first $3 of the merged lists, so a read costs what the candidates
 * up to its last event cost, not the log between them, and needs no scan
 * bound. */
char *es__pg_items_sql(const es_pg_t *pg, bool fwd, const es_filter_t *f, bool indexed) {
  es_pg_buf_t b = {0};
  bool ok = true;
  char *head = es__pg_subst(fwd ? ALL_FWD_HEAD : ALL_BWD_HEAD, pg->sql.quoted_schema);
  char *tail = es__pg_subst(fwd ? ALL_TAIL("e.position") : ALL_TAIL("e.position DESC"),
                            pg->sql.quoted_schema);
  const char *q = pg->sql.quoted_schema;
  const char *order = fwd ? "e.position" : "e.position DESC";
  if (!head || !tail) ok = false;
  sql_add(&b, &ok, "%s", head);
  sql_add(&b, &ok,
          "LEFT JOIN LATERAL (SELECT x.* FROM (SELECT e.*, row_number() OVER w AS rn, "
          "sum(e.body_bytes) OVER w AS run FROM %s.es_events e WHERE %s AND (",
          q, fwd ? ALL_FWD_WHERE : ALL_BWD_WHERE);
  int p = 7;
  for (size_t i = 0; i < f->item_count; i++) {
    sql_add(&b, &ok,
            "%s((cardinality($%d::text[]) = 0 OR e.event_type = ANY ($%d::text[])) "
            "AND e.tags @> $%d::text[])",
            i ? " OR " : "", p, p, p + 1);
    p += 2 + (indexed ? (int)f->items[i].tag_count : 0);
  }
  sql_add(&b, &ok, ")");
  if (indexed) {
    sql_add(&b, &ok, " AND e.position IN (SELECT c.position FROM (");
    p = 7;
    for (size_t i = 0; i < f->item_count; i++) {
      const es_query_item_t *it = &f->items[i];
      int t0 = p + 2;
      sql_add(&b, &ok, "%s(SELECT g0.position FROM %s.es_tags g0 ", i ? " UNION ALL " : "", q);
      for (size_t k = 1; k < it->tag_count; k++)
        sql_add(&b, &ok,
                "JOIN %s.es_tags g%zu ON g%zu.position = g0.position AND g%zu.tag = $%d::text ", q,
                k, k, k, t0 + (int)k);
      sql_add(&b, &ok,
              "JOIN %s.es_events a ON a.position = g0.position WHERE g0.tag = $%d::text AND %s "
              "AND ($5 = '' OR starts_with(a.stream_id, $5)) "
              "AND (cardinality($6) = 0 OR a.event_type = ANY ($6)) "
              "AND (cardinality($%d::text[]) = 0 OR a.event_type = ANY ($%d::text[])) "
              "ORDER BY g0.position%s LIMIT $3)",
              q, t0,
              fwd ? "g0.position >= $1 AND g0.position <= h.head" : "g0.position <= st.start", p, p,
              fwd ? "" : " DESC");
      p += 2 + (int)it->tag_count;
    }
    sql_add(&b, &ok, ") c)");
  }
  sql_add(&b, &ok,
          " WINDOW w AS (ORDER BY %s) ORDER BY %s LIMIT $3) x "
          "WHERE x.rn <= 2 OR x.run - x.body_bytes <= $4) e ON true %s",
          order, order, tail);
  free(head);
  free(tail);
  if (!ok) {
    es__pg_buf_free(&b);
    return NULL;
  }
  return b.data;
}

/* SQL reads better laid out by hand: */
/* clang-format off */

/* After a lost COMMIT: did the attempt with commit token $2 store event $1? */
static const char SQL_FIND_EVENT[] =
    "SELECT count(*) FROM {S}.es_events WHERE event_id = $1 AND commit_token = $2";

/* Everything a group commit writes, in one statement: the head, the events
 * (one array per column; each event's metadata is its slice of two flat
 * arrays, its tags its slice of a third), the tag index's rows (every tag
 * with its event's position), the streams' new last versions and types, and
 * the NOTIFY that tells the other servers (delivered at commit, in commit
 * order).
 *
 * The head row comes first, and the inserts read from it (CROSS JOIN h), so
 * the global lock is taken before any row is written: a writer that waits
 * for it holds nothing another writer could wait for (no deadlock). The head
 * moves from $25 to $23 only if it is $25; otherwise it would become -1,
 * which the table's CHECK refuses, and the statement fails whole before
 * writing anything (the optimistic path, pg_commit.c). */
static const char SQL_WRITE[] =
    "WITH h AS (UPDATE {S}.es_log_head "
    "SET head = CASE WHEN head = $25::int8 THEN $23::int8 ELSE -1 END "
    "WHERE id = 1 RETURNING head), "
    "r AS (SELECT * FROM unnest($1::int8[], $2::int8[], $3::int8[], $4::int8[], "
    "$5::int4[], $6::int4[], $7::int4[], $8::uuid[], $9::text[], $10::text[], $11::text[], "
    "$12::text[], $13::text[], $14::int4[], $15::int4[], $16::bytea[], $27::int4[], "
    "$28::int4[], $31::int4[]) AS r(position, stream_version, event_version, occurred_at, "
    "batch_index, batch_size, body_bytes, event_id, stream_id, event_type, content_type, "
    "correlation_id, causation_id, meta_off, meta_cnt, payload, tag_off, tag_cnt, joined)), "
    "ins AS (INSERT INTO {S}.es_events (position, stream_version, event_version, "
    "occurred_at_unix_ms, recorded_at_unix_ms, batch_index, batch_size, body_bytes, event_id, "
    "stream_id, event_type, content_type, correlation_id, causation_id, metadata_keys, "
    "metadata_values, payload, commit_token, tags, joined) SELECT r.position, r.stream_version, "
    "r.event_version, r.occurred_at, $17::int8, r.batch_index, r.batch_size, r.body_bytes, "
    "r.event_id, r.stream_id, r.event_type, r.content_type, r.correlation_id, r.causation_id, "
    "($18::text[])[r.meta_off + 1 : r.meta_off + r.meta_cnt], "
    "($19::text[])[r.meta_off + 1 : r.meta_off + r.meta_cnt], r.payload, $26::int8, "
    "coalesce(($29::text[])[r.tag_off + 1 : r.tag_off + r.tag_cnt], '{}'), r.joined::int2 "
    "FROM r CROSS JOIN h), "
    "tg AS (INSERT INTO {S}.es_tags (tag, position) SELECT t.tag, t.position "
    "FROM unnest($29::text[], $30::int8[]) AS t(tag, position) CROSS JOIN h), "
    "st AS (INSERT INTO {S}.es_streams (stream_id, stream_type, last_version) "
    "SELECT u.stream_id, u.stream_type, u.last_version "
    "FROM unnest($20::text[], $21::text[], $22::int8[]) AS u(stream_id, stream_type, "
    "last_version) CROSS JOIN h "
    "ON CONFLICT (stream_id) DO UPDATE SET stream_type = EXCLUDED.stream_type, "
    "last_version = EXCLUDED.last_version) "
    "SELECT pg_notify($24::text, h.head::text) FROM h";
/* The conditions of a group (Extension 1), every one in one statement: a
 * row per query item of every condition, unnested from $1..$8 (the
 * condition's number in the group, its `after`, the item's types and tags
 * as slices of two flat arrays, like the write's metadata), each answered
 * with its first matching position after `after` — through the tag index
 * for an item with tags (its first tag's positions after `after`, in
 * order, the first whose event carries all of the item's tags and one of
 * its types), by the log's primary key for an item of types only (a scan
 * from `after` that stops at the first match) — and one row per condition:
 * its number and its smallest match, NULL when none. Prepared once, so
 * PostgreSQL plans it once per connection, not once per condition. */
static const char SQL_CONDITIONS[] =
    "SELECT i.cond, min(i.position) FROM (SELECT q.cond, CASE WHEN q.tag_cnt > 0 THEN "
    "(SELECT g.position FROM {S}.es_tags g JOIN {S}.es_events a ON a.position = g.position "
    "WHERE g.tag = ($8::text[])[q.tag_off + 1] AND g.position > q.after "
    "AND a.tags @> ($8::text[])[q.tag_off + 1 : q.tag_off + q.tag_cnt] "
    "AND (q.type_cnt = 0 "
    "OR a.event_type = ANY (($5::text[])[q.type_off + 1 : q.type_off + q.type_cnt])) "
    "ORDER BY g.position LIMIT 1) "
    "ELSE (SELECT a.position FROM {S}.es_events a WHERE a.position > q.after "
    "AND (q.type_cnt = 0 "
    "OR a.event_type = ANY (($5::text[])[q.type_off + 1 : q.type_off + q.type_cnt])) "
    "ORDER BY a.position LIMIT 1) END AS position "
    "FROM unnest($1::int4[], $2::int8[], $3::int4[], $4::int4[], $6::int4[], $7::int4[]) "
    "AS q(cond, after, type_off, type_cnt, tag_off, tag_cnt)) i GROUP BY i.cond";
/* clang-format on */

int es__pg_sql_build(es_pg_t *pg, es_err_t *err) {
  /* Quote the schema as an identifier: double quotes, inner quotes doubled. */
  size_t len = strlen(pg->schema);
  char *q = malloc(2 * len + 3);
  if (q == NULL) return es_err_set(err, ES_ENOMEM, "out of memory building SQL");
  char *o = q;
  *o++ = '"';
  for (const char *p = pg->schema; *p; p++) {
    if (*p == '"') *o++ = '"';
    *o++ = *p;
  }
  *o++ = '"';
  *o = '\0';
  es_pg_sql_t *s = &pg->sql;
  s->quoted_schema = q;
  s->head = es__pg_subst(SQL_HEAD, q);
  s->stream_fwd = es__pg_subst(SQL_STREAM_FWD, q);
  s->stream_bwd = es__pg_subst(SQL_STREAM_BWD, q);
  s->all_fwd = es__pg_subst(SQL_ALL_FWD, q);
  s->all_bwd = es__pg_subst(SQL_ALL_BWD, q);
  s->lock = es__pg_subst(SQL_LOCK, q);
  s->lookup = es__pg_subst(SQL_LOOKUP, q);
  s->find_event = es__pg_subst(SQL_FIND_EVENT, q);
  s->write = es__pg_subst(SQL_WRITE, q);
  s->conditions = es__pg_subst(SQL_CONDITIONS, q);
  if (!s->head || !s->stream_fwd || !s->stream_bwd || !s->all_fwd || !s->all_bwd || !s->lock ||
      !s->lookup || !s->find_event || !s->write || !s->conditions)
    return es_err_set(err, ES_ENOMEM, "out of memory building SQL");
  return ES_OK;
}

void es__pg_sql_free(es_pg_sql_t *s) {
  free(s->quoted_schema);
  free(s->head);
  free(s->stream_fwd);
  free(s->stream_bwd);
  free(s->all_fwd);
  free(s->all_bwd);
  free(s->lock);
  free(s->lookup);
  free(s->find_event);
  free(s->write);
  free(s->conditions);
  memset(s, 0, sizeof *s);
}

/* ---- binary values ------------------------------------------------------- */

int es__pg_buf_reserve(es_pg_buf_t *b, size_t more) {
  if (b->cap - b->len >= more) return ES_OK;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < more) cap *= 2;
  char *d = realloc(b->data, cap);
  if (d == NULL) return ES_ENOMEM;
  b->data = d;
  b->cap = cap;
  return ES_OK;
}

int es__pg_buf_put(es_pg_buf_t *b, const void *p, size_t n) {
  if (es__pg_buf_reserve(b, n)) return ES_ENOMEM;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return ES_OK;
}

void es__pg_buf_free(es_pg_buf_t *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

int es__pg_array_begin(es_pg_buf_t *b, uint32_t elem_oid, size_t n) {
  uint8_t h[20];
  b->len = 0;
  es__pg_put32(h, n ? 1 : 0); /* dimensions */
  es__pg_put32(h + 4, 0);     /* flags: no NULLs */
  es__pg_put32(h + 8, elem_oid);
  es__pg_put32(h + 12, (uint32_t)n); /* the one dimension's length */
  es__pg_put32(h + 16, 1);           /* its lower bound */
  return es__pg_buf_put(b, h, n ? 20 : 12);
}

int es__pg_array_elem(es_pg_buf_t *b, const void *p, size_t n) {
  uint8_t len[4];
  es__pg_put32(len, (uint32_t)n);
  if (es__pg_buf_reserve(b, 4 + n)) return ES_ENOMEM;
  es__pg_buf_put(b, len, 4);
  return es__pg_buf_put(b, p, n);
}

int es__pg_array_u64(es_pg_buf_t *b, uint64_t v) {
  uint8_t x[8];
  es__pg_put64(x, v);
  return es__pg_array_elem(b, x, 8);
}

int es__pg_array_u32(es_pg_buf_t *b, uint32_t v) {
  uint8_t x[4];
  es__pg_put32(x, v);
  return es__pg_array_elem(b, x, 4);
}

long es__pg_array_count(const char *value, int len) {
  if (len < 12) return -1;
  uint32_t ndim = es__pg_get32(value);
  if (ndim == 0) return 0;
  if (ndim != 1 || len < 20) return -1;
  uint32_t n = es__pg_get32(value + 12);
  /* Every element takes at least its 4-byte length: a count the value
   * cannot hold is malformed (callers size their arrays by it). */
  if ((uint64_t)n * 4 > (uint64_t)(len - 20)) return -1;
  return (long)n;
}

int es__pg_array_parse(const char *value, int len, const char **vals, size_t *lens) {
  long n = es__pg_array_count(value, len);
  if (n < 0) return -1;
  const char *p = value + (n ? 20 : 12), *end = value + len;
  for (long i = 0; i < n; i++) {
    if (end - p < 4) return -1;
    int32_t l = (int32_t)es__pg_get32(p);
    p += 4;
    if (l < 0) l = 0; /* NULL: never stored, read as "" */
    if (end - p < l) return -1;
    vals[i] = p;
    lens[i] = (size_t)l;
    p += l;
  }
  return 0;
}
