/*
 * The listener: commits of other servers wake this server's subscribers.
 *
 * Every group commit ends with pg_notify(channel, new head) inside its
 * transaction, so PostgreSQL delivers it only if the transaction commits, in
 * commit order, and only after the commit is visible to new snapshots. This
 * thread holds a connection of its own that LISTENs on the channel and sleeps
 * in poll() on its socket and on the backend's wake eventfd: no polling of
 * tables, no timer. Each notification's head, when it is beyond what this
 * backend committed and published itself, is published to the backend's
 * notifier (es__backend_publish), which wakes the subscriptions waiting below
 * it; they then read from their own cursors, so a lost or merged notification
 * can delay a wake-up but never lose or duplicate an event. Notifications of
 * this backend's own committers are skipped (they have published them already).
 *
 * After (re)connecting, the thread LISTENs first and then reads and publishes
 * the current head: whatever was committed while it was not listening is
 * covered, and nothing committed after LISTEN can be missed. When the
 * connection is lost it reconnects with a back-off of 50 ms doubling to 2 s;
 * the eventfd cuts every wait short at close.
 *
 * Note: the server sets the notifier before the first call that starts this
 * thread. Clearing it (es_backend_set_notifier(b, NULL)) while this thread
 * runs races with a publish of a commit by another server; the server clears
 * it right before it closes the backend, which stops this thread; see
 * docs/postgres.md. A single-server store never publishes from here.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg_internal.h"

#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 2000

void es__pg_publish_remote(es_pg_t *pg, uint64_t head) {
  pthread_mutex_lock(&pg->publish_mu);
  bool news = head > pg->known_head;
  if (news) pg->known_head = head;
  pthread_mutex_unlock(&pg->publish_mu);
  if (news) es__backend_publish(&pg->base, head);
}

/* Sleeps up to ms, or until close; true when the backend is closing. */
static bool wait_or_stop(es_pg_t *pg, int ms) {
  struct pollfd p = {pg->wake_fd, POLLIN, 0};
  int r;
  do {
    r = poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

/* LISTEN on a fresh connection, then publish the head. */
static int start_listening(es_pg_t *pg, PGconn *c, es_err_t *err) {
  char *ident = PQescapeIdentifier(c, pg->channel, strlen(pg->channel));
  if (!ident) return es__pg_error(c, NULL, "quoting the channel", err);
  size_t len = strlen(ident) + 8;
  char *sql = malloc(len);
  if (!sql) {
    PQfreemem(ident);
    return es_err_set(err, ES_ENOMEM, "out of memory");
  }
  snprintf(sql, len, "LISTEN %s", ident);
  PQfreemem(ident);
  PGresult *res = PQexec(c, sql);
  free(sql);
  int rc = ES_OK;
  if (PQresultStatus(res) != PGRES_COMMAND_OK) rc = es__pg_error(c, res, "LISTEN", err);
  PQclear(res);
  if (rc) return rc;
  res = PQexecParams(c, pg->sql.head, 0, NULL, NULL, NULL, NULL, 1);
  if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
      PQgetlength(res, 0, 0) != 8) {
    rc = es__pg_error(c, res, "reading the head", err);
    PQclear(res);
    return rc ? rc : ES_EINTERNAL;
  }
  uint64_t head = es__pg_get64(PQgetvalue(res, 0, 0));
  PQclear(res);
  es__pg_publish_remote(pg, head);
  return ES_OK;
}

/* Waits for notifications until the connection is lost (false) or the
 * backend closes (true). */
static bool listen_loop(es_pg_t *pg, PGconn *c) {
  for (;;) {
    struct pollfd p[2] = {{PQsocket(c), POLLIN, 0}, {pg->wake_fd, POLLIN, 0}};
    int r = poll(p, 2, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (p[1].revents) return true;
    if (!p[0].revents) continue;
    if (!PQconsumeInput(c)) return false;
    PGnotify *n;
    while ((n = PQnotifies(c)) != NULL) {
      bool own = false;
      for (int i = 0; i < ES_PG_MAX_COMMITTERS; i++)
        own |= n->be_pid == atomic_load(&pg->commit_pid[i]);
      if (!own) {
        uint64_t head = strtoull(n->extra, NULL, 10);
        ES_PG_COUNT(pg, notifications, 1);
        es__pg_publish_remote(pg, head);
      }
      PQfreemem(n);
    }
    if (es__pg_conn_broken(c)) return false;
  }
}

void *es__pg_listener_main(void *arg) {
  es_pg_t *pg = arg;
  int backoff = BACKOFF_FIRST_MS;
  for (;;) {
    PGconn *c = NULL;
    es_err_t err;
    es_err_clear(&err);
    if (es__pg_connect(pg, ES_PG_ROLE_LISTENER, &c, &err) == ES_OK &&
        start_listening(pg, c, &err) == ES_OK) {
      backoff = BACKOFF_FIRST_MS;
      bool stop = listen_loop(pg, c);
      PQfinish(c);
      if (stop) return NULL;
      /* Lost: try again shortly (the server may only have dropped us). */
      if (wait_or_stop(pg, BACKOFF_FIRST_MS)) return NULL;
      continue;
    }
    if (c) PQfinish(c);
    if (wait_or_stop(pg, backoff)) return NULL;
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
}
