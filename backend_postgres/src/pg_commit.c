/*
 * Group commit: the writers of a backend.
 *
 * Why. Global positions must be gap-free and become visible in commit order
 * (API.md details 3). A sequence cannot give that: its values are taken at
 * insert time, become visible at commit time in another order, and are lost
 * on rollback. So positions come from a counter row, es_log_head, which
 * every writing transaction locks and advances: the row lock serializes
 * writers across every server on the database, a transaction's positions
 * follow the previous commit's exactly, and a rollback never advanced the
 * counter. Serializing every append on one lock would cost a transaction and
 * a WAL flush each; group commit spreads that over every append waiting.
 *
 * How. The thread leading a lane (pg_queue.c: an appending thread, in turn)
 * takes every append queued, decides every append of the group in arrival
 * order, and commits the ones that pass in one transaction. Deciding is the
 * core's es_append_decide over the group's view (pg_decide.c): idempotency,
 * stream type, expected version, in API.md's order, exactly as on every
 * backend; a passing append gets positions H+1.. and joins the group's
 * view, so a later append of the same group sees it (its versions, its ids).
 * The decisions are made before anything is written, so one append's failure
 * never touches another's, with no savepoints. An append with a condition
 * (Extension 1) is decided by es_append_decide_conditional, whose last check
 * asks whether an event matching the condition's query was committed after
 * its `after`: the database answers (send_conditions), and the group's
 * earlier passing appends answer for their own events (pg_decide.c). On
 * either path below, no matching event can commit between the answer and
 * the write, on any server. An AppendMany is one waiter of the
 * group carrying several appends, decided together (es_append_many_decide)
 * and written as one contiguous run of positions, all or none. This file
 * runs the group's
 * transaction, one of two ways:
 *
 * The locking path, two round trips (libpq pipelines):
 *   1. BEGIN; es_lock; es_lookup;     the global lock and the head H; the
 *      a query per condition          stored events with any of the group's
 *                                     ids, and the group's streams; the
 *                                     first match of each condition after
 *                                     its `after`, seen under the lock
 *      decide
 *   2. es_write; COMMIT               the passing appends' events, the
 *                                     streams, the new head and the NOTIFY
 *                                     in one statement, then COMMIT
 * The lock is held from 1 to the end of 2, across a network round trip.
 *
 * The optimistic path, one round trip, taken while this committer was the
 * last to write: it decides from what it knows of the streams it wrote (the
 * cache; an unknown stream is taken to be new, no stored id is assumed) and
 * sends es_write alone, in autocommit. The statement moves the head only
 * from the value this committer left (else the table's CHECK fails it), and
 * an id or a stream version that exists after all fails a unique index: it
 * commits the whole group or nothing. The lock is then held only while
 * PostgreSQL executes and flushes; with one server, every group goes this
 * way. A group with any failing or duplicate append takes the locking path
 * (a failure decided from the cache could not be checked by the statement),
 * and so does a group whose optimistic statement was refused, followed by a
 * few more (another writer is active: FAST_BACKOFF_GROUPS). A group with
 * conditions asks them first, one round trip more, outside any transaction
 * (fast_conditions): the answers see at least the log up to the head this
 * committer left, and the statement commits only if the head is still
 * there, so no event can have slipped in between. An AppendMany is decided
 * from the cache like the rest.
 *
 * Failures. Only when the transaction itself fails do all of its appends
 * fail together (ES_EUNAVAIL or ES_EINTERNAL); when the write fails with a
 * data error (an input PostgreSQL refuses), the group is retried one append
 * at a time, so that the bad append fails alone.
 *
 * Connection loss. Before COMMIT is sent nothing is decided: if the
 * connection was an old one (PostgreSQL restarted since), the group is tried
 * again on a fresh connection; if a fresh one fails, PostgreSQL is down and
 * the appends fail with ES_EUNAVAIL. If the connection breaks during COMMIT
 * (or during the optimistic statement, which commits) the outcome is
 * unknown; the committer reconnects — waiting for its turn at the reconnect
 * gate, within a bound, rather than giving up while a reader probes — ends
 * the lost connection's server process and waits until it is gone (it may
 * still hold the transaction, and the head row with it, or be about to
 * commit it: only then is what the lookup sees final), and looks for the
 * group's first event:
 * found, the group committed and is acknowledged; absent, it did not, and is
 * tried again; no answer, the appends get ES_EUNAVAIL saying the outcome is
 * unknown (a retry with the same event ids is safe: idempotency).
 *
 * Every wait is bounded (pg_util.c): an answer that has not come within the
 * statement timeout plus a second cuts the connection, which is then a lost
 * connection as above. So publish_mu, held from sending a commit until its
 * outcome is known, is held for a bounded time: the wait for the answer, the
 * wait at the gate (gate_wait_ms), one connect_timeout, and the answers of
 * ending the lost session and of the lookup.
 *
 * After a commit the committer publishes the new head (es__backend_publish)
 * and then wakes the appenders. The NOTIFY in the same transaction tells the
 * other servers (pg_listen.c).
 *
 * Threading: everything in a committer_t belongs to the thread leading its
 * lane (pg_committer.h); the waiters' hand-off is pg_queue.c's.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "pg_committer.h"

static void fail_all(es_pg_waiter_t **ws, size_t n, int rc, const es_err_t *e) {
  for (size_t i = 0; i < n; i++) {
    ws[i]->rc = rc;
    memset(ws[i]->outs, 0, ws[i]->n_reqs * sizeof *ws[i]->outs);
    *ws[i]->err = *e;
    ws[i]->err->code = rc;
  }
}

static void drop_conn(committer_t *cm) {
  PQfinish(cm->conn);
  cm->conn = NULL;
  atomic_store(&cm->pg->commit_pid[cm->lane], 0);
}

static void set_conn(committer_t *cm, PGconn *c, const es_pg_session_t *session) {
  cm->conn = c;
  cm->session = *session;
  atomic_store(&cm->pg->commit_pid[cm->lane], PQbackendPID(c));
}

/* Reads the results of the n queries of a pipeline and the sync that ends
 * it, until deadline_ms at most: out[i] (OUT, cleared by the caller) is
 * query i's result, NULL if none came. False when the sync did not arrive
 * (the connection failed, or did not answer in time and was cut).
 *
 * Each of our queries answers with exactly one result. A second one means
 * the connection is out of step with the queries this committer sent: no
 * result after it can be trusted to be the one it looks like, so nothing is
 * skipped over. *out_of_step (OUT) is set, the pipeline counts as failed and
 * the caller drops the connection (a failed pipeline always does). */
static bool pipe_read(es_pg_t *pg, PGconn *c, PGresult **out, int n, uint64_t deadline_ms,
                      bool *out_of_step) {
  *out_of_step = false;
  for (int i = 0; i < n; i++) out[i] = NULL;
  for (int i = 0; i < n; i++) {
    out[i] = es__pg_get_result(pg, c, deadline_ms);
    if (!out[i]) return false;
    PGresult *more = es__pg_get_result(pg, c, deadline_ms); /* NULL ends query i */
    if (more) {
      PQclear(more);
      *out_of_step = true;
      return false;
    }
  }
  PGresult *sync = es__pg_get_result(pg, c, deadline_ms);
  bool ok = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
  PQclear(sync);
  return ok;
}

static const char OUT_OF_STEP[] =
    "PostgreSQL answered one query of a pipeline with more than one result";

static void clear_all(PGresult **r, int n) {
  for (int i = 0; i < n; i++) {
    PQclear(r[i]);
    r[i] = NULL;
  }
}

/* Ends the transaction after a statement failed (it did not commit). */
static void rollback(committer_t *cm) {
  PGconn *c = cm->conn;
  if (!c) return;
  if (PQpipelineStatus(c) != PQ_PIPELINE_OFF && !PQexitPipelineMode(c)) {
    drop_conn(cm); /* results still pending: the state is unknown */
    return;
  }
  PQclear(es__pg_exec(cm->pg, c, "ROLLBACK"));
  if (es__pg_conn_broken(c)) drop_conn(cm);
}

/* A pipeline of the transaction failed before anything could commit: its
 * results are r[0..n-1] (cleared here), `synced` tells whether the pipeline
 * ended normally. Decides what that means for the group. */
static outcome_t failed(committer_t *cm, PGresult **r, int n, bool synced, const char *what,
                        es_err_t *gerr, bool may_split) {
  PGconn *c = cm->conn;
  const PGresult *bad = NULL;
  for (int i = 0; i < n && !bad; i++) {
    ExecStatusType st = r[i] ? PQresultStatus(r[i]) : PGRES_FATAL_ERROR;
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR || st == PGRES_BAD_RESPONSE)
      bad = r[i];
  }
  es__pg_error(c, bad, what, gerr);
  const char *state = bad ? PQresultErrorField(bad, PG_DIAG_SQLSTATE) : NULL;
  bool data_error = state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
  clear_all(r, n);
  if (es__pg_conn_broken(c) || !synced) {
    drop_conn(cm);
    return cm->conn_fresh ? OUT_FAIL : OUT_RETRY;
  }
  rollback(cm);
  return data_error && may_split ? OUT_SPLIT : OUT_FAIL;
}

/* A fresh commit token for the next attempt. Tokens of different attempts
 * (of every lane of every server) must differ: each lane draws a random
 * 64-bit seed once (getrandom; the clock and an address when the kernel has
 * no entropy yet) and steps it with SplitMix64, a bijection of its counter,
 * so one lane never repeats itself and two lanes collide with probability
 * about 2^-64 per pair of attempts, without a system call per commit. Never
 * 0, which stands for "no token". */
static uint64_t new_token(committer_t *cm) {
  if (cm->token_seed == 0) {
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      seed = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ (uint64_t)(uintptr_t)cm;
    }
    cm->token_seed = seed | 1;
  }
  uint64_t z = (cm->token_seed += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return z ? z : 1;
}

/* The attempt whose write was sent with cm->token lost its connection and
 * did not (yet) show up: if a later attempt finds it stored after all, it is
 * each of these appends' own commit (es_stored_event_t.own_attempt). */
static void remember_lost(committer_t *cm, es_pg_waiter_t **ws, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (cm->wrote[i] && ws[i]->n_lost < ES_PG_MAX_LOST_ATTEMPTS)
      ws[i]->lost_tokens[ws[i]->n_lost++] = cm->token;
}

/* How long the lookup after a lost commit waits at the reconnect gate for a
 * probe by another caller to end: that probe's connect_timeout, and a
 * second. Then it probes itself, once; publish_mu is held meanwhile, so every
 * step is bounded. */
static uint64_t gate_wait_ms(const es_pg_t *pg) {
  return (uint64_t)pg->opts.connect_timeout_s * 1000 + 1000;
}

/* How long the lost session is given to exit once it was told to: half the
 * statement timeout, so that the statement waiting for it is not cancelled. */
static uint64_t end_wait_ms(const es_pg_t *pg) {
  return pg->opts.statement_timeout_ms > 0 ? (uint64_t)pg->opts.statement_timeout_ms / 2 + 1 : 5000;
}

/* Reconnects after a lost commit, and makes sure the lost session is over
 * before anything is looked up: its server process may still be alive (the
 * network, not PostgreSQL, failed), holding the transaction open — with the
 * head row locked, which blocks every writer of every server — or about to
 * commit it. It is ended (es__pg_end_session) and waited for, so that what
 * the lookup then sees is final. Waits for its turn at the reconnect gate
 * rather than giving up while another caller probes. ES_OK: cm->conn is the
 * new connection and the lost session is gone. */
static int reconnect_after_loss(committer_t *cm, const es_pg_session_t *lost) {
  es_pg_t *pg = cm->pg;
  es_err_t e;
  es_err_clear(&e);
  if (!cm->conn) {
    PGconn *c;
    es_pg_session_t session;
    int rc = es__pg_connect_ex(pg, ES_PG_ROLE_COMMITTER, es__pg_now_ms() + gate_wait_ms(pg), &c,
                               &session, &e);
    if (rc) return rc;
    set_conn(cm, c, &session);
  }
  int gone = es__pg_end_session(pg, cm->conn, lost, es__pg_now_ms() + end_wait_ms(pg), &e);
  if (gone == 1) return ES_OK;
  if (es__pg_conn_broken(cm->conn)) drop_conn(cm);
  return gone == 0 ? ES_EUNAVAIL : gone; /* still running, or the question failed */
}

/* After the connection broke during COMMIT: did this attempt commit? Looks
 * for its first event stored with its commit token, on a new connection (a
 * batch with the same ids stored by a concurrent retry of the same request
 * carries another token), once the lost session is over
 * (reconnect_after_loss). 1 yes, 0 no, -1 cannot tell. */
static int resolve_commit(committer_t *cm, const uint8_t *first_id) {
  es_pg_t *pg = cm->pg;
  es_pg_session_t lost = cm->session;
  int found = -1;
  /* A second try only when the new connection broke too. */
  for (int tries = 0; tries < 2 && found < 0 && reconnect_after_loss(cm, &lost) == ES_OK; tries++) {
    PGconn *c = cm->conn;
    uint8_t token[8];
    es__pg_put64(token, cm->token);
    const char *vals[2] = {(const char *)first_id, (const char *)token};
    int lens[2] = {ES_UUID_LEN, 8}, fmts[2] = {1, 1};
    PGresult *res = es__pg_exec_prepared(pg, c, "es_find_event", 2, vals, lens, fmts, 1);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        PQgetlength(res, 0, 0) == 8)
      found = es__pg_get64(PQgetvalue(res, 0, 0)) > 0;
    PQclear(res);
    if (es__pg_conn_broken(c))
      drop_conn(cm);
    else if (found < 0)
      break; /* an answer that is no answer: asking again will not help */
  }
  return found;
}

static bool status_is(const PGresult *r, ExecStatusType want) {
  return r && PQresultStatus(r) == want;
}

/* Opens the committer's connection if needed, leaving it idle (no
 * transaction, no pipeline). */
static int ensure_conn(committer_t *cm, es_err_t *gerr) {
  cm->conn_fresh = false;
  if (cm->conn && (PQtransactionStatus(cm->conn) != PQTRANS_IDLE ||
                   PQpipelineStatus(cm->conn) != PQ_PIPELINE_OFF))
    rollback(cm);
  if (cm->conn) return ES_OK;
  PGconn *nc;
  es_pg_session_t session;
  int rc = es__pg_connect_ex(cm->pg, ES_PG_ROLE_COMMITTER, 0, &nc, &session, gerr);
  if (rc) return rc;
  set_conn(cm, nc, &session);
  cm->conn_fresh = true;
  return ES_OK;
}

/* After a commit: counters, the cache, the notifier. */
static void committed(committer_t *cm, es_pg_waiter_t **ws, size_t n, uint64_t head_before,
                      uint64_t head_after, bool fast) {
  es_pg_t *pg = cm->pg;
  uint64_t appends = 0, events = 0;
  for (size_t i = 0; i < n; i++)
    if (cm->wrote[i]) {
      appends += ws[i]->n_reqs;
      events += ws[i]->events;
    }
  pthread_mutex_lock(&pg->stats_mu);
  pg->stats.groups++;
  pg->stats.fast_groups += fast;
  pg->stats.appends += appends;
  pg->stats.events += events;
  if (appends > pg->stats.max_group) pg->stats.max_group = appends;
  pthread_mutex_unlock(&pg->stats_mu);
  es__pg_cache_remember(cm, head_before, head_after);
  es__backend_publish(&pg->base, head_after);
}

static const char UNKNOWN_OUTCOME[] =
    "PostgreSQL connection lost while committing: the outcome is unknown; retry the append "
    "with the same event ids (retries are idempotent)";

/* Extension 1: the conditions of the group's appends whose `after` is below
 * `below`, asked of the database in one statement ("es_conditions",
 * pg_util.c: a row per query item, an answer per condition), sent into the
 * connection's pipeline behind whatever the caller sent before; the caller
 * syncs and reads its answer (take_conditions). A condition whose `after`
 * is at or beyond the head has nothing to ask: the locking path, which does
 * not know the head before its first answer, asks every condition
 * (below = UINT64_MAX). Returns the number of statements sent, 1 or 0 (no
 * condition to ask), or -1 when memory ran out or libpq refused it (the
 * pipeline is then failed). */
static int send_conditions(committer_t *cm, es_pg_waiter_t **ws, size_t n, uint64_t below) {
  es_pg_buf_t *p = cm->cond_params;
  size_t items = 0, types = 0, tags = 0;
  for (size_t i = 0; i < n; i++) {
    ws[i]->condition_stored = 0;
    const es_append_condition_t *cond = ws[i]->condition;
    if (!cond || cond->after >= below) continue;
    items += cond->item_count;
    for (size_t k = 0; k < cond->item_count; k++) {
      types += cond->items[k].event_type_count;
      tags += cond->items[k].tag_count;
    }
  }
  if (items == 0) return 0;
  static const uint32_t oids[N_CONDITION_PARAMS] = {ES_PG_OID_INT4, ES_PG_OID_INT8, ES_PG_OID_INT4,
                                                    ES_PG_OID_INT4, ES_PG_OID_TEXT, ES_PG_OID_INT4,
                                                    ES_PG_OID_INT4, ES_PG_OID_TEXT};
  int rc = ES_OK;
  for (int k = 0; k < N_CONDITION_PARAMS; k++)
    rc |= es__pg_array_begin(&p[k], oids[k], k == 4 ? types : k == 7 ? tags : items);
  uint32_t type_off = 0, tag_off = 0;
  for (size_t i = 0; i < n && rc == ES_OK; i++) {
    const es_append_condition_t *cond = ws[i]->condition;
    if (!cond || cond->after >= below) continue;
    for (size_t k = 0; k < cond->item_count; k++) {
      const es_query_item_t *it = &cond->items[k];
      rc |= es__pg_array_u32(&p[0], (uint32_t)i) | es__pg_array_u64(&p[1], cond->after) |
            es__pg_array_u32(&p[2], type_off) |
            es__pg_array_u32(&p[3], (uint32_t)it->event_type_count) |
            es__pg_array_u32(&p[5], tag_off) | es__pg_array_u32(&p[6], (uint32_t)it->tag_count);
      for (size_t j = 0; j < it->event_type_count; j++) {
        const char *t = str_or_empty(it->event_types[j]);
        rc |= es__pg_array_elem(&p[4], t, strlen(t));
      }
      for (size_t j = 0; j < it->tag_count; j++) {
        const char *t = str_or_empty(it->tags[j]);
        rc |= es__pg_array_elem(&p[7], t, strlen(t));
      }
      type_off += (uint32_t)it->event_type_count;
      tag_off += (uint32_t)it->tag_count;
    }
  }
  if (rc != ES_OK) return -1;
  const char *vals[N_CONDITION_PARAMS];
  int lens[N_CONDITION_PARAMS], fmts[N_CONDITION_PARAMS];
  for (int k = 0; k < N_CONDITION_PARAMS; k++) {
    vals[k] = p[k].data;
    lens[k] = (int)p[k].len;
    fmts[k] = 1;
  }
  return PQsendQueryPrepared(cm->conn, "es_conditions", N_CONDITION_PARAMS, vals, lens, fmts, 1)
             ? 1
             : -1;
}

/* The answer of send_conditions(…, below), checked like any input: one row
 * per condition asked, each its number in the group (once) and one bigint
 * or NULL. A position goes to its waiter's condition_stored. 0 when every
 * answer is a position after its `after` and at most `head` (or none); 1
 * when one is beyond `head` (a commit the caller did not count on); -1 when
 * the answer is malformed or a position not after its `after`
 * (condition_stored is then cleared). */
static int take_conditions(es_pg_waiter_t **ws, size_t n, uint64_t below, uint64_t head,
                           const PGresult *res) {
  size_t asked = 0;
  for (size_t i = 0; i < n; i++) asked += ws[i]->condition && ws[i]->condition->after < below;
  int verdict =
      status_is(res, PGRES_TUPLES_OK) && PQnfields(res) == 2 && (size_t)PQntuples(res) == asked
          ? 0
          : -1;
  for (int row = 0; verdict >= 0 && row < PQntuples(res); row++) {
    uint32_t i = PQgetlength(res, row, 0) == 4 ? es__pg_get32(PQgetvalue(res, row, 0)) : UINT32_MAX;
    const es_append_condition_t *cond = i < n ? ws[i]->condition : NULL;
    if (!cond || cond->after >= below || ws[i]->condition_stored != 0) {
      verdict = -1; /* not asked, or answered twice */
      break;
    }
    if (PQgetisnull(res, row, 1)) continue; /* twice unanswered is caught by the count */
    uint64_t pos = PQgetlength(res, row, 1) == 8 ? es__pg_get64(PQgetvalue(res, row, 1)) : 0;
    if (pos <= cond->after)
      verdict = -1;
    else if (pos > head)
      verdict = 1;
    ws[i]->condition_stored = pos;
  }
  if (verdict < 0)
    for (size_t i = 0; i < n; i++) ws[i]->condition_stored = 0;
  return verdict;
}

static const char CONDITION_OUT_OF_RANGE[] =
    "PostgreSQL answered a condition with a position out of range";

/* The optimistic path's conditions, asked before its write, in one round
 * trip of their own and outside any transaction: no lock is taken. Each
 * query sees at least every commit up to `head` (this committer's own last
 * commit, and the optimistic path runs only when nobody wrote after it); a
 * commit after `head` would show up in an answer beyond it, and makes the
 * write that follows fail anyway (it moves the head only from `head`). So
 * the answers are those the lock would have given, unless the head moved —
 * and then nothing of this attempt is written. OUT_DONE when answered;
 * OUT_SLOW when the head moved or the question failed (the locking path
 * asks again, under the lock, and reports what it finds). */
static outcome_t fast_conditions(committer_t *cm, es_pg_waiter_t **ws, size_t n, uint64_t head,
                                 es_err_t *gerr) {
  es_pg_t *pg = cm->pg;
  PGconn *c = cm->conn;
  PGresult *r = NULL;
  bool out_of_step = false;
  bool synced = PQenterPipelineMode(c) && send_conditions(cm, ws, n, head) == 1 &&
                PQpipelineSync(c) &&
                pipe_read(pg, c, &r, 1, es__pg_reply_deadline(pg), &out_of_step);
  bool answered = synced && status_is(r, PGRES_TUPLES_OK);
  int verdict = answered ? take_conditions(ws, n, head, head, r) : 1;
  PQclear(r);
  if (!synced || !PQexitPipelineMode(c)) {
    drop_conn(cm); /* the locking path starts on a fresh connection */
    return OUT_SLOW;
  }
  if (verdict < 0) {
    es_err_set(gerr, ES_EINTERNAL, "%s", CONDITION_OUT_OF_RANGE);
    return OUT_FAIL;
  }
  return verdict == 0 ? OUT_DONE : OUT_SLOW;
}

/* The optimistic path: one statement, no lock taken beforehand.
 *
 * The decisions come from the cache: what this committer knew of each stream
 * after its last commit (a stream it does not know is taken to be new), and
 * no stored ids. They hold if nobody else committed since then, and the
 * statement checks exactly that: it moves the head only from last_head (or
 * fails on the CHECK), and an id or a stream version that exists after all
 * fails a unique index. So the statement commits the group, or fails and
 * changes nothing, and the group goes to the locking path. The global lock
 * (the head row) is held only while PostgreSQL executes and flushes the
 * commit: no network round trip inside it.
 *
 * Only a group whose appends all pass is sent: a failure decided from the
 * cache could not be checked by the statement. */
static outcome_t try_fast(committer_t *cm, es_pg_waiter_t **ws, size_t n, es_err_t *gerr) {
  es_pg_t *pg = cm->pg;
  size_t events = 0, appends = 0;
  bool ask = false;
  uint64_t head = cm->last_head, new_head = head;
  for (size_t i = 0; i < n; i++) {
    events += ws[i]->events;
    appends += ws[i]->n_reqs;
    ask |= ws[i]->condition && ws[i]->condition->after < head;
  }
  cm->group = ws;
  cm->group_n = n;
  if (es__pg_group_reserve(cm, n, appends, events)) return OUT_SLOW;
  for (size_t i = 0; i < n; i++) cm->wrote[i] = false;
  if (ensure_conn(cm, gerr)) return OUT_FAIL;
  if (ask) {
    /* A condition is a question about the whole log, which the cache cannot
     * answer: the database answers it first. */
    outcome_t co = fast_conditions(cm, ws, n, head, gerr);
    if (co != OUT_DONE) return co;
  } else {
    for (size_t i = 0; i < n; i++) ws[i]->condition_stored = 0;
  }
  uint64_t recorded_at = es_now_unix_ms();
  for (size_t i = 0; i < n; i++) {
    cm->wrote[i] = es__pg_decide(cm, ws[i], &new_head, recorded_at, true);
    if (!cm->wrote[i] || ws[i]->out->duplicate) return OUT_SLOW;
  }
  const char *vals[N_WRITE_PARAMS];
  int lens[N_WRITE_PARAMS], fmts[N_WRITE_PARAMS];
  for (int k = 0; k < N_WRITE_PARAMS; k++) fmts[k] = 1;
  cm->token = new_token(cm);
  if (es__pg_build_write(cm, ws, n, recorded_at, head, new_head, vals, lens)) return OUT_SLOW;

  PGconn *c = cm->conn;
  if (pg->test_hooks.before_write) pg->test_hooks.before_write(pg->test_hooks.arg);
  pthread_mutex_lock(&pg->publish_mu);
  PGresult *res = es__pg_exec_prepared(pg, c, "es_write", N_WRITE_PARAMS, vals, lens, fmts, 1);
  int found = 1;
  bool lost = pg->test_hooks.lose_answer && pg->test_hooks.lose_answer(pg->test_hooks.arg);
  if (lost) {
    PQclear(res);
    res = NULL;
  }
  if (!(status_is(res, PGRES_TUPLES_OK) && PQntuples(res) == 1)) {
    if (!lost && !es__pg_conn_broken(c)) {
      /* Refused: the head moved (another writer), an id or a version
       * exists, or an input PostgreSQL rejects. Nothing was written. */
      pthread_mutex_unlock(&pg->publish_mu);
      PQclear(res);
      es__pg_cache_clear(cm);
      cm->head_known = false;
      cm->fast_skip = FAST_BACKOFF_GROUPS;
      return OUT_SLOW;
    }
    /* The connection broke: the statement may or may not have committed. */
    es__pg_error(c, res, "committing", gerr);
    drop_conn(cm);
    found = resolve_commit(cm, ws[0]->req->events[0].id);
  }
  PQclear(res);
  if (found <= 0) {
    pthread_mutex_unlock(&pg->publish_mu);
    es__pg_cache_clear(cm);
    cm->head_known = false;
    if (found == 0) {
      remember_lost(cm, ws, n);
      return OUT_RETRY;
    }
    es_err_set(gerr, ES_EUNAVAIL, "%s", UNKNOWN_OUTCOME);
    return OUT_FAIL;
  }
  if (new_head > pg->known_head) pg->known_head = new_head;
  pthread_mutex_unlock(&pg->publish_mu);
  committed(cm, ws, n, head, new_head, true);
  return OUT_DONE;
}

/* The locking path: two round trips, each a libpq pipeline.
 *   1. BEGIN; es_lock; es_lookup; the conditions   then the decisions, in C
 *   2. es_write; COMMIT
 * The condition queries (send_conditions) follow the lock in the same
 * transaction, so what they see is the whole log up to the head, and
 * nothing can commit before this transaction does: no matching event slips
 * in between the check and the write, on any server.
 * Runs under publish_mu, taken by try_locked below. */
static outcome_t locked_attempt(committer_t *cm, es_pg_waiter_t **ws, size_t n, es_err_t *gerr,
                                uint64_t *head_before, uint64_t *head_after) {
  es_pg_t *pg = cm->pg;
  PGresult *r[3] = {NULL, NULL, NULL};
  size_t events = 0;
  size_t n_appends = 0;
  int nq = 0; /* the conditions' statement: 1 when the group has any */
  for (size_t i = 0; i < n; i++) {
    events += ws[i]->events;
    n_appends += ws[i]->n_reqs;
    if (ws[i]->condition && ws[i]->condition->item_count > 0) nq = 1;
  }
  if (es__pg_group_reserve(cm, n, n_appends, events) || es__pg_build_lookup(cm, ws, n, events))
    goto nomem;
  for (size_t i = 0; i < n; i++) cm->wrote[i] = false;
  PGresult *r1[4] = {NULL, NULL, NULL, NULL}; /* step 1's answers */
  if (ensure_conn(cm, gerr)) return OUT_FAIL;
  PGconn *c = cm->conn;
  if (!PQenterPipelineMode(c))
    return failed(cm, r, 0, false, "entering pipeline mode", gerr, false);

  /* 1. The global lock and the head, what is stored of the group's ids and
   * streams, and the first event matching each condition. */
  const char *lvals[2] = {cm->lookup[0].data, cm->lookup[1].data};
  int llens[2] = {(int)cm->lookup[0].len, (int)cm->lookup[1].len}, lfmts[2] = {1, 1};
  uint64_t deadline = es__pg_reply_deadline(pg);
  bool out_of_step = false;
  bool synced =
      PQsendQueryParams(c, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL, NULL, NULL, 0) &&
      PQsendQueryPrepared(c, "es_lock", 0, NULL, NULL, NULL, 1) &&
      PQsendQueryPrepared(c, "es_lookup", 2, lvals, llens, lfmts, 1) &&
      send_conditions(cm, ws, n, UINT64_MAX) == nq && PQpipelineSync(c) &&
      pipe_read(pg, c, r1, 3 + nq, deadline, &out_of_step);
  bool ok = synced && status_is(r1[0], PGRES_COMMAND_OK) && status_is(r1[1], PGRES_TUPLES_OK) &&
            status_is(r1[2], PGRES_TUPLES_OK) && PQntuples(r1[1]) == 1 &&
            PQgetlength(r1[1], 0, 0) == 8;
  if (nq) ok = ok && status_is(r1[3], PGRES_TUPLES_OK);
  if (!ok) {
    /* A failing conditions statement may be an input PostgreSQL refuses
     * (like a write's): one append at a time, the bad one fails alone. */
    outcome_t o = failed(cm, r1, 3 + nq, synced,
                         nq ? "locking the log and checking conditions" : "locking the log", gerr,
                         nq > 0 && n > 1);
    if (out_of_step)
      es_err_set(gerr, ES_EUNAVAIL, "%s (locking the log); the connection was dropped",
                 OUT_OF_STEP);
    return o;
  }
  uint64_t head = es__pg_get64(PQgetvalue(r1[1], 0, 0));
  int verdict = nq ? take_conditions(ws, n, UINT64_MAX, head, r1[3]) : 0;
  PQclear(cm->lookup_res);
  cm->lookup_res = r1[2];
  r1[2] = NULL;
  clear_all(r1, 3 + nq);
  if (verdict != 0) {
    rollback(cm);
    es_err_set(gerr, ES_EINTERNAL, "%s", CONDITION_OUT_OF_RANGE);
    return OUT_FAIL;
  }
  if (es__pg_load_lookup(cm, cm->lookup_res)) {
    rollback(cm);
    es_err_set(gerr, ES_EINTERNAL, "PostgreSQL returned a malformed lookup row");
    return OUT_FAIL;
  }

  /* The decisions. */
  cm->group = ws;
  cm->group_n = n;
  uint64_t recorded_at = es_now_unix_ms();
  uint64_t new_head = head;
  size_t appends = 0;
  const uint8_t *first_id = NULL; /* of the first append written: resolve_commit's key */
  for (size_t i = 0; i < n; i++) {
    cm->wrote[i] = es__pg_decide(cm, ws[i], &new_head, recorded_at, false);
    if (!cm->wrote[i]) continue;
    if (!first_id) first_id = ws[i]->req->events[0].id;
    appends++;
  }
  if (appends == 0) { /* nothing to write: every append is answered */
    rollback(cm);
    es__pg_cache_remember(cm, head, head);
    *head_before = *head_after = head;
    return OUT_DONE;
  }

  /* 2. The write and COMMIT. */
  const char *vals[N_WRITE_PARAMS];
  int lens[N_WRITE_PARAMS], fmts[N_WRITE_PARAMS];
  for (int k = 0; k < N_WRITE_PARAMS; k++) fmts[k] = 1;
  cm->token = new_token(cm);
  if (es__pg_build_write(cm, ws, n, recorded_at, head, new_head, vals, lens)) {
    rollback(cm);
    goto nomem;
  }
  deadline = es__pg_reply_deadline(pg);
  synced = PQsendQueryPrepared(c, "es_write", N_WRITE_PARAMS, vals, lens, fmts, 1) &&
           PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) && PQpipelineSync(c) &&
           pipe_read(pg, c, r, 2, deadline, &out_of_step);
  ok = synced && status_is(r[0], PGRES_TUPLES_OK) && status_is(r[1], PGRES_COMMAND_OK) &&
       strcmp(PQcmdStatus(r[1]), "COMMIT") == 0;
  bool lost = pg->test_hooks.lose_answer && pg->test_hooks.lose_answer(pg->test_hooks.arg);
  if (lost) {
    clear_all(r, 2);
    ok = false;
  }
  if (!ok && !lost && synced && !es__pg_conn_broken(c)) {
    /* A statement failed: the transaction ended without writing. */
    return failed(cm, r, 2, true, "writing events", gerr, n > 1);
  }
  if (!ok) {
    /* The connection broke (or answered out of step, and was dropped):
     * COMMIT may or may not have happened. */
    es__pg_error(c, r[1] ? r[1] : r[0], "committing", gerr);
    clear_all(r, 2);
    drop_conn(cm);
    int found = resolve_commit(cm, first_id);
    if (found <= 0) {
      cm->head_known = false;
      if (found == 0) {
        remember_lost(cm, ws, n);
        return OUT_RETRY;
      }
      es_err_set(gerr, ES_EUNAVAIL, "%s", UNKNOWN_OUTCOME);
      return OUT_FAIL;
    }
  }
  clear_all(r, 2);
  if (new_head > pg->known_head) pg->known_head = new_head;
  if (cm->conn && !PQexitPipelineMode(cm->conn)) drop_conn(cm);
  *head_before = head;
  *head_after = new_head;
  return OUT_DONE;

nomem:
  es_err_set(gerr, ES_ENOMEM, "out of memory committing %zu appends", n);
  return OUT_FAIL;
}

/* The locking path holds publish_mu from before it asks for the head-row
 * lock until known_head covers its commit. The optimistic path holds
 * publish_mu while its statement waits for that row lock, so with several
 * lanes the order must be the same everywhere — publish_mu, then the row
 * lock — or a lane holding the row lock and waiting for publish_mu and a
 * lane holding publish_mu and waiting for the row lock would stall each
 * other until lock_timeout. */
static outcome_t try_locked(committer_t *cm, es_pg_waiter_t **ws, size_t n, es_err_t *gerr) {
  es_pg_t *pg = cm->pg;
  uint64_t before = 0, after = 0;
  pthread_mutex_lock(&pg->publish_mu);
  outcome_t o = locked_attempt(cm, ws, n, gerr, &before, &after);
  pthread_mutex_unlock(&pg->publish_mu);
  if (o == OUT_DONE && after > before) committed(cm, ws, n, before, after, false);
  return o;
}

/* One group, tried until it has an outcome. */
static void commit_group_once(committer_t *cm, es_pg_waiter_t **ws, size_t n);

void es__pg_commit_group(committer_t *cm, es_pg_waiter_t **ws, size_t n) {
  commit_group_once(cm, ws, n);
  PQclear(cm->lookup_res); /* the strings of the group's view */
  cm->lookup_res = NULL;
}

static void commit_group_once(committer_t *cm, es_pg_waiter_t **ws, size_t n) {
  es_err_t gerr;
  bool fast = cm->head_known && cm->fast_skip == 0;
  if (cm->fast_skip > 0) cm->fast_skip--;
  for (int attempt = 1;; attempt++) {
    es_err_clear(&gerr);
    outcome_t o = fast ? try_fast(cm, ws, n, &gerr) : try_locked(cm, ws, n, &gerr);
    fast = false;
    if (o == OUT_DONE) return;
    if (o == OUT_SLOW) {
      attempt--; /* nothing was tried against the database's state yet */
      continue;
    }
    if (o == OUT_RETRY && attempt < MAX_ATTEMPTS) continue;
    if (o == OUT_SPLIT) {
      for (size_t i = 0; i < n; i++) commit_group_once(cm, &ws[i], 1);
      return;
    }
    if (gerr.code == ES_OK) es_err_set(&gerr, ES_EUNAVAIL, "PostgreSQL unavailable");
    fail_all(ws, n, gerr.code, &gerr);
    return;
  }
}

void es__pg_committer_release(committer_t *cm) {
  if (cm->conn) drop_conn(cm);
  PQclear(cm->lookup_res);
  cm->lookup_res = NULL;
  es__pg_cache_clear(cm);
  free(cm->cache.slots);
  free(cm->ids.slots);
  free(cm->streams.slots);
  free(cm->known);
  free(cm->states);
  free(cm->wrote);
  for (int k = 0; k < 2; k++) es__pg_buf_free(&cm->lookup[k]);
  for (int k = 0; k < N_WRITE_PARAMS; k++) es__pg_buf_free(&cm->params[k]);
  for (int k = 0; k < N_CONDITION_PARAMS; k++) es__pg_buf_free(&cm->cond_params[k]);
  memset(cm, 0, sizeof *cm);
}
