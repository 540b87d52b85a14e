/*
 * The PostgreSQL backend: every semantic of API.md, durable, shared by any
 * number of servers on one database (docs/postgres.md).
 *
 * Global positions are gap-free and become visible in commit order: they come
 * from a one-row counter table updated inside the committing transaction, so
 * commits are serialized by that row's lock (across all servers on the
 * database). Throughput comes back through group commit: one appending thread
 * at a time (per lane, `committers`) takes every append that is waiting,
 * checks each one on its own (idempotency, stream type, expected version) and
 * commits the ones that pass in one transaction, while the others wait for
 * it; alone, an append commits on its caller's thread without any hand-off.
 * After a commit the backend publishes the new head to its notifier; a
 * listener thread with its own connection LISTENs for the commits of other
 * servers (NOTIFY) and publishes them too.
 *
 * Every method may block on the network: the method table has `blocking = 1`,
 * so the server calls it from worker threads only. When PostgreSQL cannot be
 * reached a method fails with ES_EUNAVAIL and a message that says so; the
 * backend reconnects by itself on later calls.
 *
 * Threads: es_pg_open() starts none. The listener starts with the first
 * append or read_all, so a notifier set with es_backend_set_notifier() before
 * those calls (as the server does) is seen by it. A commit publishes its head
 * from the appending thread that committed the group; the listener publishes
 * other servers' commits from its own thread: call es_pg_stop_listening()
 * before clearing or freeing the notifier (the server does, when it shuts
 * down).
 */
#ifndef ES_BACKEND_POSTGRES_H
#define ES_BACKEND_POSTGRES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_pg_options {
  int connections;         /* reader connections (pool size); each commit lane and
                              the listener have one besides. Default 8. */
  const char *schema;      /* schema holding the tables; NULL or "" = "public".
                              Created when missing. Copied by es_pg_open. */
  int committers;          /* commit lanes: groups that may commit at once, each
                              lane with a connection of its own, used by the
                              appending thread that leads its group (default 1;
                              1..8). More than one overlaps the round trips of the
                              locking path, which only pays when several servers
                              write all the time */
  size_t max_group_events; /* events per group-commit transaction (default 10000;
                              a larger single append still commits alone) */
  size_t max_group_bytes;  /* payload and metadata bytes per group (default 32 MiB) */
  int connect_timeout_s;   /* libpq connect_timeout unless the URL sets one (default 5) */

  /* Bounds on every wait on the database (docs/postgres.md, Faults). In
   * milliseconds; 0 turns a bound off. */
  int statement_timeout_ms;           /* statement_timeout of the sessions (not of the
                                         migrations at open); an answer that has not
                                         arrived 1 s after it drops the connection, so
                                         that an unresponsive server or network costs a
                                         call this long at most (default 10000) */
  int lock_timeout_ms;                /* lock_timeout: how long a writer waits for the
                                         global lock (the head row), e.g. behind another
                                         server's stuck transaction (default 5000) */
  int idle_in_transaction_timeout_ms; /* idle_in_transaction_session_timeout:
                                         PostgreSQL ends a session that holds a
                                         transaction open this long without a
                                         statement, e.g. after its client vanished
                                         mid-commit (default 10000) */
  int tcp_user_timeout_ms;            /* libpq tcp_user_timeout unless the URL sets
                                         one: data unacknowledged this long fails the
                                         connection (default 10000) */
} es_pg_options_t;

/* Fills the defaults above. */
void es_pg_options_default(es_pg_options_t *opts);

/* Connects to database_url (a libpq URL or key=value string), creates or
 * migrates the schema (safe when several servers start at once) and returns
 * the backend in *out (OUT), closed with es_backend_close(). opts may be NULL
 * (defaults). Errors: ES_EUNAVAIL when PostgreSQL cannot be reached (err->msg
 * carries libpq's reason), ES_EINVAL for a bad option or a schema newer than
 * this build, ES_EINTERNAL when a migration fails, ES_ENOMEM. */
int es_pg_open(const char *database_url, const es_pg_options_t *opts, es_backend_t **out,
               es_err_t *err);

/* Stops the listener thread (waits for it to end): from then on the backend
 * publishes only its own commits, from the appending calls. For shutdown,
 * before the notifier goes away. Idempotent; no-op for other backends. */
void es_pg_stop_listening(es_backend_t *b);

/* Counters for tests and benchmarks. */
typedef struct es_pg_stats {
  uint64_t groups;                /* group-commit transactions committed */
  uint64_t appends;               /* appends committed (not counting duplicates) */
  uint64_t events;                /* events committed */
  uint64_t max_group;             /* most appends committed in one transaction */
  uint64_t fast_groups;           /* of groups: committed by the optimistic path (one
                                     round trip, the lock held only inside PostgreSQL) */
  uint64_t notifications;         /* heads received from other servers (NOTIFY) */
  uint64_t reconnects;            /* connections re-established after a failure */
  uint64_t notifications_ignored; /* NOTIFY payloads on the store's channel that
                                     were not a head, or named a head beyond the
                                     one read back (another role's garbage) */
  uint64_t head_reads;            /* heads the listener read back from the
                                     database after a notification hinted at one */
  uint64_t timeouts;              /* connections dropped because PostgreSQL did not
                                     answer within the statement timeout + 1 s */
  uint64_t sessions_ended;        /* server processes of lost connections ended
                                     (pg_terminate_backend) before a lost commit's
                                     outcome was looked up */
  uint64_t statements_prepared;   /* reads by query prepared on a connection the
                                     first time it ran their text */
} es_pg_stats_t;

/* Copies the counters; zeroes *out when b is not a PostgreSQL backend. */
void es_pg_stats(es_backend_t *b, es_pg_stats_t *out);

/* Fault injection, for tests only (the server never sets it): lets a test
 * stage the races around a commit whose outcome is lost, which no timing
 * can stage reliably. Both run on the thread that commits the group; either
 * may be NULL. */
typedef struct es_pg_test_hooks {
  /* Right before the optimistic path sends a group's write (no lock of the
   * store is held then; the locking path does not call it). */
  void (*before_write)(void *arg);
  /* Right after the write's answer arrived: true makes the committer throw
   * the answer away and drop its connection, as if it broke during COMMIT. */
  bool (*lose_answer)(void *arg);
  void *arg;
} es_pg_test_hooks_t;

/* Sets (or, with NULL, clears) the hooks. Call while no append runs. */
void es_pg_set_test_hooks(es_backend_t *b, const es_pg_test_hooks_t *hooks);

#ifdef __cplusplus
}
#endif

#endif /* ES_BACKEND_POSTGRES_H */
