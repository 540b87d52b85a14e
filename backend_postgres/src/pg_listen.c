/*
 * The listener: commits of other servers wake this server's subscribers.
 *
 * Every group commit ends with pg_notify(channel, new head) inside its
 * transaction, so PostgreSQL delivers it only if the transaction commits, in
 * commit order, and only after the commit is visible to new snapshots. This
 * thread holds a connection of its own that LISTENs on the channel and sleeps
 * in poll() on its socket and on the backend's wake eventfd: no polling of
 * tables, no timer. Notifications of this backend's own committers are
 * skipped (they have published their heads already).
 *
 * A notification is a hint, never a fact. Any role that can connect may
 * NOTIFY on the channel, with any payload: a head taken from it could be
 * 2^64-1 (subscribers would read in a loop for events that do not exist, and
 * this server's known head would never move again, so commits stopped
 * waking anyone) or just wrong. So a payload counts only if it reads as our
 * writers write it: 1 to 19 decimal digits, no sign, no blank, at most
 * INT64_MAX (the column is a bigint); anything else is ignored and counted
 * (notifications_ignored). A well-formed hint beyond what this backend knows
 * makes the listener read the head back from the database on its own
 * connection, and only that head is published (es__pg_publish_remote) — a
 * value this server has seen committed. Hints are coalesced: every
 * notification that arrived by the time the listener looks costs one read
 * together. A hint beyond the head read back was a lie (a real one is sent by
 * a commit that is visible before it is delivered) and is counted as
 * ignored. Whatever the payloads, the published head is a real head: no
 * subscriber is woken for events that do not exist, none is skipped, and the
 * next real commit moves the head and wakes them.
 *
 * The published head wakes the subscriptions waiting below it; they read
 * from their own cursors, so a lost or merged notification can delay a
 * wake-up but never lose or duplicate an event.
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

/* Reads the head on the listener's connection (bounded like every wait). */
static int read_head(es_pg_t *pg, PGconn *c, uint64_t *head, es_err_t *err) {
  PGresult *res = es__pg_exec_params(pg, c, pg->sql.head, 0, NULL, NULL, NULL, NULL, 1);
  if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
      PQgetlength(res, 0, 0) != 8) {
    int rc = es__pg_error(c, res, "reading the head", err);
    PQclear(res);
    return rc ? rc : ES_EINTERNAL;
  }
  *head = es__pg_get64(PQgetvalue(res, 0, 0));
  PQclear(res);
  return ES_OK;
}

/* A head as this store's writers send it (pg_notify(channel, head::text)):
 * 1 to 19 decimal digits and nothing else, at most INT64_MAX. */
static bool parse_head(const char *s, uint64_t *out) {
  size_t n = 0;
  uint64_t v = 0;
  for (; s[n] != '\0'; n++) {
    if (n == 19 || s[n] < '0' || s[n] > '9') return false;
    v = v * 10 + (uint64_t)(s[n] - '0'); /* 19 digits fit in 64 bits */
  }
  if (n == 0 || v > (uint64_t)INT64_MAX) return false;
  *out = v;
  return true;
}

static uint64_t known_head(es_pg_t *pg) {
  pthread_mutex_lock(&pg->publish_mu);
  uint64_t h = pg->known_head;
  pthread_mutex_unlock(&pg->publish_mu);
  return h;
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
  PGresult *res = es__pg_exec(pg, c, sql);
  free(sql);
  int rc = ES_OK;
  if (PQresultStatus(res) != PGRES_COMMAND_OK) rc = es__pg_error(c, res, "LISTEN", err);
  PQclear(res);
  if (rc) return rc;
  uint64_t head;
  if ((rc = read_head(pg, c, &head, err))) return rc;
  es__pg_publish_remote(pg, head);
  return ES_OK;
}

/* Takes the notifications libpq has queued: *hint (in/out) grows to the
 * largest well-formed head of another process among them; the rest is
 * counted as ignored. */
static void take_notifications(es_pg_t *pg, PGconn *c, uint64_t *hint) {
  PGnotify *n;
  uint64_t ignored = 0, heard = 0;
  while ((n = PQnotifies(c)) != NULL) {
    bool own = false;
    for (int i = 0; i < ES_PG_MAX_COMMITTERS; i++)
      own |= n->be_pid == atomic_load(&pg->commit_pid[i]);
    uint64_t head;
    if (own) {
      /* published by its committer already */
    } else if (parse_head(n->extra, &head)) {
      heard++;
      if (head > *hint) *hint = head;
    } else {
      ignored++;
    }
    PQfreemem(n);
  }
  if (heard) ES_PG_COUNT(pg, notifications, heard);
  if (ignored) ES_PG_COUNT(pg, notifications_ignored, ignored);
}

/* Waits for notifications until the connection is lost (false) or the
 * backend closes (true). `hint` is the largest head a notification claimed
 * that this backend has not checked yet: while there is one, the loop only
 * looks (poll without waiting) for more notifications and for close, then
 * reads the head once for all of them. */
static bool listen_loop(es_pg_t *pg, PGconn *c) {
  uint64_t hint = 0;
  for (;;) {
    struct pollfd p[2] = {{PQsocket(c), POLLIN, 0}, {pg->wake_fd, POLLIN, 0}};
    int r = poll(p, 2, hint ? 0 : -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (p[1].revents) return true;
    if (p[0].revents && !PQconsumeInput(c)) return false;
    take_notifications(pg, c, &hint);
    if (es__pg_conn_broken(c)) return false;
    if (hint && hint <= known_head(pg)) hint = 0; /* nothing new: no read */
    if (!hint) continue;
    es_err_t err;
    uint64_t head;
    if (read_head(pg, c, &head, &err)) return false;
    ES_PG_COUNT(pg, head_reads, 1);
    if (hint > head) ES_PG_COUNT(pg, notifications_ignored, 1); /* a head that does not exist */
    hint = 0;
    es__pg_publish_remote(pg, head);
    /* Notifications that came in during the read are queued in libpq now,
     * not on the socket: the next round takes them before it sleeps. */
    take_notifications(pg, c, &hint);
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
