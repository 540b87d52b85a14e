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
 * How. es__pg_append() queues the request with a condition variable of its
 * own and sleeps. A committer thread (opts.committers, default one) takes
 * everything queued (up to max_group_events / max_group_bytes; one append
 * always fits), decides every append of the group in arrival order, and
 * commits the ones that pass in one transaction. Deciding is the memory
 * backend's logic, in C (decide()): idempotency, stream type, expected
 * version, in API.md's order; a passing append gets positions H+1.. and
 * updates the group's in-memory view, so a later append of the same group
 * sees it (its versions, its ids). The decisions are made before anything is
 * written, so one append's failure never touches another's, with no
 * savepoints. It runs one of two ways:
 *
 * The locking path, two round trips (libpq pipelines):
 *   1. BEGIN; es_lock; es_lookup      the global lock and the head H; the
 *                                     stored events with any of the group's
 *                                     ids, and the group's streams
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
 * few more (another writer is active: FAST_BACKOFF_GROUPS).
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
 * unknown; the committer reconnects and looks for the group's first event:
 * found, the group committed and is acknowledged; absent, it did not, and is
 * tried again; no answer, the appends get ES_EUNAVAIL saying the outcome is
 * unknown (a retry with the same event ids is safe: idempotency).
 *
 * After a commit the committer publishes the new head (es__backend_publish)
 * and then wakes the appenders. The NOTIFY in the same transaction tells the
 * other servers (pg_listen.c).
 *
 * Threading: everything in a committer_t belongs to its committer thread.
 * Waiters are linked and unlinked under queue_mu; a waiter's result fields
 * are written by the committer while the waiter sleeps and read by the
 * waiter after it saw `done` under queue_mu.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es/validate.h"
#include "pg_internal.h"

#define MAX_ATTEMPTS 3
#define PG_MAX_FIELD_BYTES ((size_t)1 << 30) /* PostgreSQL's limit for one value */

/* An event the decisions know of: stored (from es_lookup) or decided earlier
 * in this group. */
typedef struct known {
  const char *stream_id; /* NUL-terminated: in the lookup result or a request */
  uint64_t version;
  uint64_t position;
  uint64_t recorded_at;
  uint32_t batch_index; /* index in its append */
  uint32_t batch_size;  /* events in its append */
} known_t;

/* A stream as the decisions see it. */
typedef struct stream_state {
  const char *id;   /* in the lookup result or a request */
  const char *type; /* "" = none yet */
  uint64_t last;    /* last version, 0 = no events */
  bool dirty;       /* written by this group: upsert it */
} stream_state_t;

typedef struct slot {
  const void *key;
  size_t len;
  void *val; /* NULL: empty slot */
} slot_t;

/* Open addressing, linear probing, sized up front (never more than half
 * full), reset per group. */
typedef struct map {
  slot_t *slots;
  size_t mask;
  size_t cap; /* allocated slots */
} map_t;

enum { N_WRITE_PARAMS = 25 };

/* What the committer knows of a stream it wrote or read under the lock. */
typedef struct cached_stream {
  uint64_t last; /* last version */
  char *type;    /* owned; NULL = none */
  char id[];     /* the stream id */
} cached_stream_t;

#define CACHE_MAX_STREAMS 65536 /* then the cache starts over */
#define FAST_BACKOFF_GROUPS 16  /* after a failed optimistic attempt, groups that take the lock */

typedef struct committer {
  es_pg_t *pg;
  int lane;       /* which committer: index of commit_pid */
  PGconn *conn;   /* this committer's connection; NULL when not connected */
  map_t ids;      /* 16-byte event id -> known_t */
  map_t streams;  /* stream id -> stream_state_t */
  known_t *known; /* storage for ids' values */
  size_t known_cap;
  stream_state_t *states; /* storage for streams' values */
  size_t states_cap;
  size_t n_known, n_states;
  bool *wrote; /* per waiter of the group: its events are in the write */
  size_t wrote_cap;
  es_pg_buf_t lookup[2];              /* es_lookup parameters */
  es_pg_buf_t params[N_WRITE_PARAMS]; /* es_write parameters */
  PGresult *lookup_res;               /* keeps the strings of known/states alive */
  bool conn_fresh;                    /* conn was opened for this group */

  /* The optimistic path. Exact as long as nobody else committed since
   * last_head; the write statement checks exactly that. */
  map_t cache; /* stream id -> cached_stream_t */
  size_t cache_count;
  bool head_known; /* last_head is the head after this committer's last commit */
  uint64_t last_head;
  int fast_skip; /* groups left to run on the locking path */
} committer_t;

typedef enum outcome {
  OUT_DONE,  /* every waiter has its answer */
  OUT_RETRY, /* nothing happened; try the group again */
  OUT_SPLIT, /* nothing happened; try each append alone */
  OUT_FAIL,  /* nothing happened; every waiter gets the group error */
  OUT_SLOW,  /* the optimistic path does not apply or failed; nothing happened */
} outcome_t;

/* ---- small helpers -------------------------------------------------------- */

static uint64_t hash_bytes(const void *p, size_t n) {
  const uint8_t *b = p;
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}

static int map_reset(map_t *m, size_t entries) {
  size_t cap = 16;
  while (cap < entries * 2) cap *= 2;
  if (cap > m->cap) {
    slot_t *s = realloc(m->slots, cap * sizeof *s);
    if (!s) return ES_ENOMEM;
    m->slots = s;
    m->cap = cap;
  }
  memset(m->slots, 0, cap * sizeof *m->slots);
  m->mask = cap - 1;
  return ES_OK;
}

static slot_t *map_slot(map_t *m, const void *key, size_t len) {
  size_t i = (size_t)hash_bytes(key, len) & m->mask;
  while (m->slots[i].val && !(m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0))
    i = (i + 1) & m->mask;
  return &m->slots[i];
}

static void *map_get(map_t *m, const void *key, size_t len) {
  return map_slot(m, key, len)->val;
}

/* Sets key -> val (replacing an existing value). The map has room by
 * construction (map_reset sized it for every insert of the group). */
static void map_put(map_t *m, const void *key, size_t len, void *val) {
  slot_t *s = map_slot(m, key, len);
  s->key = key;
  s->len = len;
  s->val = val;
}

static const char *str_or_empty(const char *s) {
  return s ? s : "";
}

/* ---- the stream cache ----------------------------------------------------- */

static void cache_clear(committer_t *cm) {
  for (size_t i = 0; cm->cache.slots && i < cm->cache.cap; i++) {
    cached_stream_t *c = cm->cache.slots[i].val;
    if (!c) continue;
    free(c->type);
    free(c);
  }
  if (cm->cache.slots) memset(cm->cache.slots, 0, cm->cache.cap * sizeof *cm->cache.slots);
  cm->cache_count = 0;
}

static cached_stream_t *cache_get(committer_t *cm, const char *id) {
  return cm->cache.slots ? map_get(&cm->cache, id, strlen(id)) : NULL;
}

/* Records a stream's state; a failure to allocate just leaves it out (the
 * cache is an optimization: a missing entry means the locking path). */
static void cache_put(committer_t *cm, const char *id, uint64_t last, const char *type) {
  cached_stream_t *c = cache_get(cm, id);
  if (!c) {
    if (cm->cache_count >= CACHE_MAX_STREAMS) cache_clear(cm);
    if (!cm->cache.slots || (cm->cache_count + 1) * 2 > cm->cache.cap) {
      /* Grow: rehash into a table twice as large. */
      map_t grown = {NULL, 0, 0};
      if (map_reset(&grown, cm->cache.cap ? cm->cache.cap : 512)) return;
      for (size_t i = 0; cm->cache.slots && i < cm->cache.cap; i++) {
        slot_t *o = &cm->cache.slots[i];
        if (o->val) map_put(&grown, o->key, o->len, o->val);
      }
      free(cm->cache.slots);
      cm->cache = grown;
    }
    size_t len = strlen(id);
    c = malloc(sizeof *c + len + 1);
    if (!c) return;
    memcpy(c->id, id, len + 1);
    c->type = NULL;
    map_put(&cm->cache, c->id, len, c);
    cm->cache_count++;
  }
  c->last = last;
  if (type && type[0] && (!c->type || strcmp(c->type, type) != 0)) {
    char *t = strdup(type);
    if (t) {
      free(c->type);
      c->type = t;
    }
  }
}

static size_t event_bytes(const es_event_data_t *ev) {
  size_t n = ev->payload_len;
  for (size_t i = 0; i < ev->metadata_count; i++)
    n += strlen(str_or_empty(ev->metadata[i].key)) + strlen(str_or_empty(ev->metadata[i].value));
  return n;
}

static void fail_all(es_pg_waiter_t **ws, size_t n, int rc, const es_err_t *e) {
  for (size_t i = 0; i < n; i++) {
    ws[i]->rc = rc;
    memset(ws[i]->out, 0, sizeof *ws[i]->out);
    *ws[i]->err = *e;
    ws[i]->err->code = rc;
  }
}

/* ---- decisions ------------------------------------------------------------ */

/* The group's view of a stream, created on first use: from the cache on the
 * optimistic path (a stream not in it is taken to be new), else empty until
 * the lookup fills it. */
static stream_state_t *stream_of(committer_t *cm, const char *id, bool from_cache) {
  stream_state_t *s = map_get(&cm->streams, id, strlen(id));
  if (s) return s;
  s = &cm->states[cm->n_states++];
  s->id = id;
  s->type = "";
  s->last = 0;
  s->dirty = false;
  if (from_cache) {
    const cached_stream_t *c = cache_get(cm, id);
    if (c) {
      s->last = c->last;
      s->type = c->type ? c->type : "";
    }
  }
  map_put(&cm->streams, id, strlen(id), s);
  return s;
}

/* The append decision's view (backend_impl.h) of one waiter's request:
 * the group's ids map, which holds what es_lookup found stored and what
 * earlier appends of this group were decided to write. */
typedef struct decide_ctx {
  committer_t *cm;
  const es_append_req_t *req;
} decide_ctx_t;

static bool lookup_id(void *ctx, size_t index, es_stored_event_t *out) {
  const decide_ctx_t *d = ctx;
  const known_t *k = map_get(&d->cm->ids, d->req->events[index].id, ES_UUID_LEN);
  if (!k) return false;
  out->stream_id = k->stream_id;
  out->stream_version = k->version;
  out->global_position = k->position;
  out->recorded_at_unix_ms = k->recorded_at;
  out->batch_first = k->batch_index == 0;
  out->batch_last = k->batch_index + 1 == k->batch_size;
  out->own_attempt = false;
  return true;
}

/* Decides one append (es_append_decide) against what is stored plus the
 * group's earlier decisions. Fills w->rc, w->out and w->err; true when the
 * append is to be written, then positions are reserved from *head and its
 * events join the view for the later appends of the group. */
static bool decide(committer_t *cm, es_pg_waiter_t *w, uint64_t *head, uint64_t recorded_at,
                   bool from_cache) {
  const es_append_req_t *req = w->req;
  size_t n = req->event_count;
  es_append_result_t *out = w->out;
  stream_state_t *s = stream_of(cm, req->stream_id, from_cache);
  es_err_clear(w->err); /* a previous attempt may have left a message */

  decide_ctx_t dctx = {cm, req};
  es_append_view_t view = {s->last, s->type, lookup_id, &dctx};
  es_append_decision_t decision;
  w->rc = es_append_decide(req, &view, &decision, out, w->err);
  if (w->rc != ES_OK || decision == ES_APPEND_STORED) return false;

  /* To be written: positions, and the view for later appends. */
  uint64_t last = s->last;
  const char *type = str_or_empty(req->stream_type);
  out->first_position = *head + 1;
  out->last_position = *head + n;
  out->recorded_at_unix_ms = recorded_at;
  for (size_t i = 0; i < n; i++) {
    known_t *k = &cm->known[cm->n_known++];
    k->stream_id = req->stream_id;
    k->version = last + 1 + i;
    k->position = *head + 1 + i;
    k->recorded_at = recorded_at;
    k->batch_index = (uint32_t)i;
    k->batch_size = (uint32_t)n;
    map_put(&cm->ids, req->events[i].id, ES_UUID_LEN, k);
  }
  *head += n;
  s->last = last + n;
  if (type[0] != '\0' && s->type[0] == '\0') s->type = type;
  s->dirty = true;
  return true;
}

/* ---- statements ----------------------------------------------------------- */

/* Sizes the per-group storage for n waiters with `events` events. */
static int group_reserve(committer_t *cm, size_t n, size_t events) {
  if (cm->known_cap < 2 * events) {
    known_t *k = realloc(cm->known, 2 * events * sizeof *k);
    if (!k) return ES_ENOMEM;
    cm->known = k;
    cm->known_cap = 2 * events;
  }
  if (cm->states_cap < n) {
    stream_state_t *s = realloc(cm->states, n * sizeof *s);
    if (!s) return ES_ENOMEM;
    cm->states = s;
    cm->states_cap = n;
  }
  if (cm->wrote_cap < n) {
    bool *w = realloc(cm->wrote, n * sizeof *w);
    if (!w) return ES_ENOMEM;
    cm->wrote = w;
    cm->wrote_cap = n;
  }
  if (map_reset(&cm->ids, 2 * events) || map_reset(&cm->streams, n)) return ES_ENOMEM;
  cm->n_known = cm->n_states = 0;
  return ES_OK;
}

/* es_lookup's parameters: every id of the group, every distinct stream. */
static int build_lookup(committer_t *cm, es_pg_waiter_t **ws, size_t n, size_t events) {
  es_pg_buf_t *ids = &cm->lookup[0], *streams = &cm->lookup[1];
  size_t n_streams = 0;
  for (size_t i = 0; i < n; i++)
    if (!map_get(&cm->streams, ws[i]->req->stream_id, strlen(ws[i]->req->stream_id))) {
      stream_of(cm, ws[i]->req->stream_id, false);
      n_streams++;
    }
  if (es__pg_array_begin(ids, ES_PG_OID_UUID, events)) return ES_ENOMEM;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < ws[i]->req->event_count; j++)
      if (es__pg_array_elem(ids, ws[i]->req->events[j].id, ES_UUID_LEN)) return ES_ENOMEM;
  if (es__pg_array_begin(streams, ES_PG_OID_TEXT, n_streams)) return ES_ENOMEM;
  for (size_t i = 0; i < cm->n_states; i++)
    if (es__pg_array_elem(streams, cm->states[i].id, strlen(cm->states[i].id))) return ES_ENOMEM;
  return ES_OK;
}

/* Loads es_lookup's rows into the maps (the states created by build_lookup
 * are updated in place). */
static int load_lookup(committer_t *cm, const PGresult *res) {
  for (int r = 0; r < PQntuples(res); r++) {
    bool is_event = PQgetlength(res, r, 0) == 1 && PQgetvalue(res, r, 0)[0] != 0;
    const char *stream = PQgetvalue(res, r, 2);
    if (PQgetlength(res, r, 3) != 8) return ES_EINTERNAL;
    uint64_t version = es__pg_get64(PQgetvalue(res, r, 3));
    if (is_event) {
      if (PQgetlength(res, r, 1) != ES_UUID_LEN || PQgetlength(res, r, 4) != 8 ||
          PQgetlength(res, r, 5) != 8 || PQgetlength(res, r, 6) != 4 || PQgetlength(res, r, 7) != 4)
        return ES_EINTERNAL;
      known_t *k = &cm->known[cm->n_known++];
      k->stream_id = stream;
      k->version = version;
      k->position = es__pg_get64(PQgetvalue(res, r, 4));
      k->recorded_at = es__pg_get64(PQgetvalue(res, r, 5));
      k->batch_index = es__pg_get32(PQgetvalue(res, r, 6));
      k->batch_size = es__pg_get32(PQgetvalue(res, r, 7));
      map_put(&cm->ids, PQgetvalue(res, r, 1), ES_UUID_LEN, k);
    } else {
      stream_state_t *s = map_get(&cm->streams, stream, strlen(stream));
      if (!s) continue;
      s->last = version;
      s->type = PQgetisnull(res, r, 8) ? "" : PQgetvalue(res, r, 8);
    }
  }
  return ES_OK;
}

/* es_write's parameters for the appends that passed. */
static int build_write(committer_t *cm, es_pg_waiter_t **ws, size_t n, uint64_t recorded_at,
                       uint64_t old_head, uint64_t head, const char **vals, int *lens) {
  es_pg_buf_t *p = cm->params;
  size_t rows = 0, metas = 0, dirty = 0;
  for (size_t i = 0; i < n; i++) {
    if (!cm->wrote[i]) continue;
    rows += ws[i]->req->event_count;
    for (size_t j = 0; j < ws[i]->req->event_count; j++)
      metas += ws[i]->req->events[j].metadata_count;
  }
  for (size_t i = 0; i < cm->n_states; i++) dirty += cm->states[i].dirty;

  static const uint32_t oids[16] = {
      ES_PG_OID_INT8, ES_PG_OID_INT8, ES_PG_OID_INT8, ES_PG_OID_INT8,
      ES_PG_OID_INT4, ES_PG_OID_INT4, ES_PG_OID_INT4, ES_PG_OID_UUID,
      ES_PG_OID_TEXT, ES_PG_OID_TEXT, ES_PG_OID_TEXT, ES_PG_OID_TEXT,
      ES_PG_OID_TEXT, ES_PG_OID_INT4, ES_PG_OID_INT4, ES_PG_OID_BYTEA};
  for (int k = 0; k < 16; k++)
    if (es__pg_array_begin(&p[k], oids[k], rows)) return ES_ENOMEM;
  if (es__pg_array_begin(&p[17], ES_PG_OID_TEXT, metas) ||
      es__pg_array_begin(&p[18], ES_PG_OID_TEXT, metas))
    return ES_ENOMEM;

  uint32_t meta_off = 0;
  for (size_t i = 0; i < n; i++) {
    if (!cm->wrote[i]) continue;
    const es_append_req_t *req = ws[i]->req;
    const es_append_result_t *o = ws[i]->out;
    for (size_t j = 0; j < req->event_count; j++) {
      const es_event_data_t *ev = &req->events[j];
      const char *ct = str_or_empty(ev->content_type);
      if (ct[0] == '\0') ct = ES_DEFAULT_CONTENT_TYPE;
      const char *type = str_or_empty(ev->event_type);
      const char *corr = str_or_empty(ev->correlation_id);
      const char *caus = str_or_empty(ev->causation_id);
      size_t body = event_bytes(ev) + strlen(type) + strlen(ct) + strlen(corr) + strlen(caus);
      if (body > INT32_MAX) body = INT32_MAX;
      int rc =
          es__pg_array_u64(&p[0], o->first_position + j) |
          es__pg_array_u64(&p[1], o->first_version + j) |
          es__pg_array_u64(&p[2], ev->event_version) |
          es__pg_array_u64(&p[3], ev->occurred_at_unix_ms) | es__pg_array_u32(&p[4], (uint32_t)j) |
          es__pg_array_u32(&p[5], (uint32_t)req->event_count) |
          es__pg_array_u32(&p[6], (uint32_t)body) | es__pg_array_elem(&p[7], ev->id, ES_UUID_LEN) |
          es__pg_array_elem(&p[8], req->stream_id, strlen(req->stream_id)) |
          es__pg_array_elem(&p[9], type, strlen(type)) | es__pg_array_elem(&p[10], ct, strlen(ct)) |
          es__pg_array_elem(&p[11], corr, strlen(corr)) |
          es__pg_array_elem(&p[12], caus, strlen(caus)) | es__pg_array_u32(&p[13], meta_off) |
          es__pg_array_u32(&p[14], (uint32_t)ev->metadata_count) |
          es__pg_array_elem(&p[15], ev->payload_len ? (const void *)ev->payload : "",
                            ev->payload_len);
      for (size_t m = 0; m < ev->metadata_count; m++) {
        const char *k = str_or_empty(ev->metadata[m].key), *v = str_or_empty(ev->metadata[m].value);
        rc |= es__pg_array_elem(&p[17], k, strlen(k)) | es__pg_array_elem(&p[18], v, strlen(v));
      }
      if (rc) return ES_ENOMEM;
      meta_off += (uint32_t)ev->metadata_count;
    }
  }
  /* $17 recorded_at, $23 head, $24 channel, $25 the head before: scalars. */
  p[16].len = 0;
  if (es__pg_buf_reserve(&p[16], 8)) return ES_ENOMEM;
  es__pg_put64((uint8_t *)p[16].data, recorded_at);
  p[16].len = 8;
  p[22].len = 0;
  if (es__pg_buf_reserve(&p[22], 8)) return ES_ENOMEM;
  es__pg_put64((uint8_t *)p[22].data, head);
  p[22].len = 8;
  p[23].len = 0;
  if (es__pg_buf_put(&p[23], cm->pg->channel, strlen(cm->pg->channel))) return ES_ENOMEM;
  p[24].len = 0;
  if (es__pg_buf_reserve(&p[24], 8)) return ES_ENOMEM;
  es__pg_put64((uint8_t *)p[24].data, old_head);
  p[24].len = 8;

  if (es__pg_array_begin(&p[19], ES_PG_OID_TEXT, dirty) ||
      es__pg_array_begin(&p[20], ES_PG_OID_TEXT, dirty) ||
      es__pg_array_begin(&p[21], ES_PG_OID_INT8, dirty))
    return ES_ENOMEM;
  for (size_t i = 0; i < cm->n_states; i++) {
    const stream_state_t *s = &cm->states[i];
    if (!s->dirty) continue;
    if (es__pg_array_elem(&p[19], s->id, strlen(s->id)) ||
        es__pg_array_elem(&p[20], s->type, strlen(s->type)) || es__pg_array_u64(&p[21], s->last))
      return ES_ENOMEM;
  }
  for (int k = 0; k < N_WRITE_PARAMS; k++) {
    vals[k] = p[k].data ? p[k].data : "";
    lens[k] = (int)p[k].len;
  }
  return ES_OK;
}

/* ---- the transaction ------------------------------------------------------ */

static void drop_conn(committer_t *cm) {
  PQfinish(cm->conn);
  cm->conn = NULL;
  atomic_store(&cm->pg->commit_pid[cm->lane], 0);
}

static void set_conn(committer_t *cm, PGconn *c) {
  cm->conn = c;
  atomic_store(&cm->pg->commit_pid[cm->lane], PQbackendPID(c));
}

/* Reads the results of the n queries of a pipeline and the sync that ends
 * it: out[i] (OUT, cleared by the caller) is query i's result, NULL if none
 * came. False when the sync did not arrive (the connection failed). */
static bool pipe_read(PGconn *c, PGresult **out, int n) {
  for (int i = 0; i < n; i++) out[i] = NULL;
  for (int i = 0; i < n; i++) {
    out[i] = PQgetResult(c);
    if (!out[i]) return false;
    for (int guard = 0; guard < 8; guard++) { /* each query's results end with NULL */
      PGresult *more = PQgetResult(c);
      if (!more) break;
      PQclear(more);
    }
  }
  PGresult *sync = PQgetResult(c);
  bool ok = sync && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
  PQclear(sync);
  return ok;
}

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
  PQclear(PQexec(c, "ROLLBACK"));
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

/* After the connection broke during COMMIT: did the group commit? Looks up
 * its first event on a new connection. 1 yes, 0 no, -1 cannot tell. */
static int resolve_commit(committer_t *cm, const uint8_t *first_id, uint64_t first_position) {
  es_pg_t *pg = cm->pg;
  es_err_t e;
  PGconn *c;
  if (es__pg_connect(pg, ES_PG_ROLE_COMMITTER, &c, &e)) return -1;
  set_conn(cm, c);
  const char *vals[1] = {(const char *)first_id};
  int lens[1] = {ES_UUID_LEN}, fmts[1] = {1};
  PGresult *res = PQexecPrepared(c, "es_find_event", 1, vals, lens, fmts, 1);
  int found = -1;
  if (PQresultStatus(res) == PGRES_TUPLES_OK)
    found = PQntuples(res) == 1 && PQgetlength(res, 0, 0) == 8 &&
            es__pg_get64(PQgetvalue(res, 0, 0)) == first_position;
  PQclear(res);
  if (es__pg_conn_broken(c)) drop_conn(cm);
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
  int rc = es__pg_connect(cm->pg, ES_PG_ROLE_COMMITTER, &nc, gerr);
  if (rc) return rc;
  set_conn(cm, nc);
  cm->conn_fresh = true;
  return ES_OK;
}

/* What the committer knows after a commit (or a locked read) that took the
 * head from head_before to head_after: the group's streams are exact there.
 * When head_before is not where this committer left it, someone else wrote
 * in between and every other cached stream may be stale. */
static void remember(committer_t *cm, uint64_t head_before, uint64_t head_after) {
  if (!cm->head_known || head_before != cm->last_head) cache_clear(cm);
  for (size_t i = 0; i < cm->n_states; i++) {
    const stream_state_t *st = &cm->states[i];
    if (st->last > 0) cache_put(cm, st->id, st->last, st->type);
  }
  cm->last_head = head_after;
  cm->head_known = true;
}

/* After a commit: counters, the cache, the notifier. */
static void committed(committer_t *cm, es_pg_waiter_t **ws, size_t n, uint64_t head_before,
                      uint64_t head_after, bool fast) {
  es_pg_t *pg = cm->pg;
  uint64_t appends = 0, events = 0;
  for (size_t i = 0; i < n; i++)
    if (cm->wrote[i]) {
      appends++;
      events += ws[i]->req->event_count;
    }
  pthread_mutex_lock(&pg->stats_mu);
  pg->stats.groups++;
  pg->stats.fast_groups += fast;
  pg->stats.appends += appends;
  pg->stats.events += events;
  if (appends > pg->stats.max_group) pg->stats.max_group = appends;
  pthread_mutex_unlock(&pg->stats_mu);
  remember(cm, head_before, head_after);
  es__backend_publish(&pg->base, head_after);
}

static const char UNKNOWN_OUTCOME[] =
    "PostgreSQL connection lost while committing: the outcome is unknown; retry the append "
    "with the same event ids (retries are idempotent)";

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
  size_t events = 0;
  for (size_t i = 0; i < n; i++) events += ws[i]->req->event_count;
  if (group_reserve(cm, n, events)) return OUT_SLOW;
  uint64_t recorded_at = es_now_unix_ms();
  uint64_t head = cm->last_head, new_head = head;
  for (size_t i = 0; i < n; i++) {
    cm->wrote[i] = decide(cm, ws[i], &new_head, recorded_at, true);
    if (!cm->wrote[i] || ws[i]->out->duplicate) return OUT_SLOW;
  }
  const char *vals[N_WRITE_PARAMS];
  int lens[N_WRITE_PARAMS], fmts[N_WRITE_PARAMS];
  for (int k = 0; k < N_WRITE_PARAMS; k++) fmts[k] = 1;
  if (build_write(cm, ws, n, recorded_at, head, new_head, vals, lens)) return OUT_SLOW;
  if (ensure_conn(cm, gerr)) return OUT_FAIL;

  PGconn *c = cm->conn;
  pthread_mutex_lock(&pg->publish_mu);
  PGresult *res = PQexecPrepared(c, "es_write", N_WRITE_PARAMS, vals, lens, fmts, 1);
  int found = 1;
  if (!(status_is(res, PGRES_TUPLES_OK) && PQntuples(res) == 1)) {
    if (!es__pg_conn_broken(c)) {
      /* Refused: the head moved (another writer), an id or a version
       * exists, or an input PostgreSQL rejects. Nothing was written. */
      pthread_mutex_unlock(&pg->publish_mu);
      PQclear(res);
      cache_clear(cm);
      cm->head_known = false;
      cm->fast_skip = FAST_BACKOFF_GROUPS;
      return OUT_SLOW;
    }
    /* The connection broke: the statement may or may not have committed. */
    es__pg_error(c, res, "committing", gerr);
    drop_conn(cm);
    found = resolve_commit(cm, ws[0]->req->events[0].id, ws[0]->out->first_position);
  }
  PQclear(res);
  if (found <= 0) {
    pthread_mutex_unlock(&pg->publish_mu);
    cache_clear(cm);
    cm->head_known = false;
    if (found == 0) return OUT_RETRY;
    es_err_set(gerr, ES_EUNAVAIL, "%s", UNKNOWN_OUTCOME);
    return OUT_FAIL;
  }
  if (new_head > pg->known_head) pg->known_head = new_head;
  pthread_mutex_unlock(&pg->publish_mu);
  committed(cm, ws, n, head, new_head, true);
  return OUT_DONE;
}

/* The locking path: two round trips, each a libpq pipeline.
 *   1. BEGIN; es_lock; es_lookup        then the decisions, in C
 *   2. es_write; COMMIT                 publish_mu held until known_head moves */
static outcome_t try_locked(committer_t *cm, es_pg_waiter_t **ws, size_t n, es_err_t *gerr) {
  es_pg_t *pg = cm->pg;
  PGresult *r[3] = {NULL, NULL, NULL};
  size_t events = 0;
  for (size_t i = 0; i < n; i++) events += ws[i]->req->event_count;
  if (group_reserve(cm, n, events) || build_lookup(cm, ws, n, events)) goto nomem;
  for (size_t i = 0; i < n; i++) cm->wrote[i] = false;
  if (ensure_conn(cm, gerr)) return OUT_FAIL;
  PGconn *c = cm->conn;
  if (!PQenterPipelineMode(c))
    return failed(cm, r, 0, false, "entering pipeline mode", gerr, false);

  /* 1. The global lock and the head, then what is stored of the group's ids
   * and streams. */
  const char *lvals[2] = {cm->lookup[0].data, cm->lookup[1].data};
  int llens[2] = {(int)cm->lookup[0].len, (int)cm->lookup[1].len}, lfmts[2] = {1, 1};
  bool synced =
      PQsendQueryParams(c, "BEGIN ISOLATION LEVEL READ COMMITTED", 0, NULL, NULL, NULL, NULL, 0) &&
      PQsendQueryPrepared(c, "es_lock", 0, NULL, NULL, NULL, 1) &&
      PQsendQueryPrepared(c, "es_lookup", 2, lvals, llens, lfmts, 1) && PQpipelineSync(c) &&
      pipe_read(c, r, 3);
  if (!synced || !status_is(r[0], PGRES_COMMAND_OK) || !status_is(r[1], PGRES_TUPLES_OK) ||
      !status_is(r[2], PGRES_TUPLES_OK) || PQntuples(r[1]) != 1 || PQgetlength(r[1], 0, 0) != 8)
    return failed(cm, r, 3, synced, "locking the log", gerr, false);
  uint64_t head = es__pg_get64(PQgetvalue(r[1], 0, 0));
  PQclear(cm->lookup_res);
  cm->lookup_res = r[2];
  r[2] = NULL;
  clear_all(r, 3);
  if (load_lookup(cm, cm->lookup_res)) {
    rollback(cm);
    es_err_set(gerr, ES_EINTERNAL, "PostgreSQL returned a malformed lookup row");
    return OUT_FAIL;
  }

  /* Decisions. */
  uint64_t recorded_at = es_now_unix_ms();
  uint64_t new_head = head;
  size_t appends = 0;
  const uint8_t *first_id = NULL;
  uint64_t first_position = 0;
  for (size_t i = 0; i < n; i++) {
    cm->wrote[i] = decide(cm, ws[i], &new_head, recorded_at, false);
    if (!cm->wrote[i]) continue;
    if (!first_id) {
      first_id = ws[i]->req->events[0].id;
      first_position = ws[i]->out->first_position;
    }
    appends++;
  }
  if (appends == 0) { /* nothing to write: every append is answered */
    rollback(cm);
    remember(cm, head, head);
    return OUT_DONE;
  }

  /* 2. The write and COMMIT. */
  const char *vals[N_WRITE_PARAMS];
  int lens[N_WRITE_PARAMS], fmts[N_WRITE_PARAMS];
  for (int k = 0; k < N_WRITE_PARAMS; k++) fmts[k] = 1;
  if (build_write(cm, ws, n, recorded_at, head, new_head, vals, lens)) {
    rollback(cm);
    goto nomem;
  }
  pthread_mutex_lock(&pg->publish_mu);
  synced = PQsendQueryPrepared(c, "es_write", N_WRITE_PARAMS, vals, lens, fmts, 1) &&
           PQsendQueryParams(c, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) && PQpipelineSync(c) &&
           pipe_read(c, r, 2);
  bool ok = synced && status_is(r[0], PGRES_TUPLES_OK) && status_is(r[1], PGRES_COMMAND_OK) &&
            strcmp(PQcmdStatus(r[1]), "COMMIT") == 0;
  if (!ok && synced && !es__pg_conn_broken(c)) {
    /* A statement failed: the transaction ended without writing. */
    pthread_mutex_unlock(&pg->publish_mu);
    return failed(cm, r, 2, true, "writing events", gerr, n > 1);
  }
  if (!ok) {
    /* The connection broke: COMMIT may or may not have happened. */
    es__pg_error(c, r[1] ? r[1] : r[0], "committing", gerr);
    clear_all(r, 2);
    drop_conn(cm);
    int found = resolve_commit(cm, first_id, first_position);
    if (found <= 0) {
      pthread_mutex_unlock(&pg->publish_mu);
      cm->head_known = false;
      if (found == 0) return OUT_RETRY;
      es_err_set(gerr, ES_EUNAVAIL, "%s", UNKNOWN_OUTCOME);
      return OUT_FAIL;
    }
  }
  clear_all(r, 2);
  if (new_head > pg->known_head) pg->known_head = new_head;
  pthread_mutex_unlock(&pg->publish_mu);
  if (cm->conn && !PQexitPipelineMode(cm->conn)) drop_conn(cm);
  committed(cm, ws, n, head, new_head, false);
  return OUT_DONE;

nomem:
  es_err_set(gerr, ES_ENOMEM, "out of memory committing %zu appends", n);
  return OUT_FAIL;
}

static void commit_group(committer_t *cm, es_pg_waiter_t **ws, size_t n) {
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
      for (size_t i = 0; i < n; i++) commit_group(cm, &ws[i], 1);
      return;
    }
    if (gerr.code == ES_OK) es_err_set(&gerr, ES_EUNAVAIL, "PostgreSQL unavailable");
    fail_all(ws, n, gerr.code, &gerr);
    return;
  }
}

/* ---- the thread and the queue --------------------------------------------- */

void *es__pg_committer_main(void *arg) {
  es_pg_lane_t *lane = arg;
  es_pg_t *pg = lane->pg;
  committer_t cm;
  memset(&cm, 0, sizeof cm);
  cm.pg = pg;
  cm.lane = lane->index;
  free(lane);
  es_pg_waiter_t **group = NULL;
  size_t group_cap = 0;

  pthread_mutex_lock(&pg->queue_mu);
  for (;;) {
    while (!pg->queue_head && !pg->stopping) pthread_cond_wait(&pg->queue_cv, &pg->queue_mu);
    if (!pg->queue_head) break; /* stopping, nothing left */

    /* Take what is waiting, within the group limits (one always fits). */
    size_t n = 0, events = 0, bytes = 0;
    es_pg_waiter_t *w = pg->queue_head;
    while (w && (n == 0 || (events + w->req->event_count <= pg->opts.max_group_events &&
                            bytes + w->bytes <= pg->opts.max_group_bytes))) {
      if (n == group_cap) {
        size_t cap = group_cap ? group_cap * 2 : 64;
        es_pg_waiter_t **g = realloc(group, cap * sizeof *g);
        if (!g) break;
        group = g;
        group_cap = cap;
      }
      group[n++] = w;
      events += w->req->event_count;
      bytes += w->bytes;
      w = w->next;
    }
    if (n == 0) { /* out of memory for the group array: answer the first */
      es_pg_waiter_t *f = pg->queue_head;
      pg->queue_head = f->next;
      if (!pg->queue_head) pg->queue_tail = NULL;
      f->rc = es_err_set(f->err, ES_ENOMEM, "out of memory queueing an append");
      f->done = true;
      pthread_cond_signal(&f->cv);
      continue;
    }
    pg->queue_head = w;
    if (!w) pg->queue_tail = NULL;
    pthread_mutex_unlock(&pg->queue_mu);

    commit_group(&cm, group, n);
    PQclear(cm.lookup_res);
    cm.lookup_res = NULL;

    pthread_mutex_lock(&pg->queue_mu);
    for (size_t i = 0; i < n; i++) {
      group[i]->done = true;
      pthread_cond_signal(&group[i]->cv);
    }
  }
  pthread_mutex_unlock(&pg->queue_mu);

  if (cm.conn) drop_conn(&cm);
  cache_clear(&cm);
  free(cm.cache.slots);
  free(group);
  free(cm.ids.slots);
  free(cm.streams.slots);
  free(cm.known);
  free(cm.states);
  free(cm.wrote);
  for (int k = 0; k < 2; k++) es__pg_buf_free(&cm.lookup[k]);
  for (int k = 0; k < N_WRITE_PARAMS; k++) es__pg_buf_free(&cm.params[k]);
  return NULL;
}

int es__pg_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                  es_err_t *err) {
  es_pg_t *pg = (es_pg_t *)b;
  if (req->event_count > INT32_MAX)
    return es_err_set(err, ES_ETOOBIG, "events: %zu, the PostgreSQL backend holds %d per append",
                      req->event_count, INT32_MAX);

  es_pg_waiter_t w;
  memset(&w, 0, sizeof w);
  w.req = req;
  w.out = out;
  w.err = err ? err : &w.err_local;
  for (size_t i = 0; i < req->event_count; i++) {
    const es_event_data_t *ev = &req->events[i];
    if (ev->payload_len >= PG_MAX_FIELD_BYTES)
      return es_err_set(err, ES_ETOOBIG, "events[%zu].payload: %zu bytes, PostgreSQL holds %zu", i,
                        ev->payload_len, PG_MAX_FIELD_BYTES - 1);
    w.bytes += event_bytes(ev);
  }
  if (pthread_cond_init(&w.cv, NULL))
    return es_err_set(err, ES_ENOMEM, "out of memory queueing an append");

  pthread_mutex_lock(&pg->queue_mu);
  if (pg->stopping || !atomic_load(&pg->threads_started)) {
    pthread_mutex_unlock(&pg->queue_mu);
    pthread_cond_destroy(&w.cv);
    return es_err_set(err, ES_EUNAVAIL,
                      pg->stopping ? "the PostgreSQL backend is closing"
                                   : "the PostgreSQL backend could not start its committers");
  }
  if (pg->queue_tail)
    pg->queue_tail->next = &w;
  else
    pg->queue_head = &w;
  pg->queue_tail = &w;
  pthread_cond_signal(&pg->queue_cv);
  while (!w.done) pthread_cond_wait(&w.cv, &pg->queue_mu);
  pthread_mutex_unlock(&pg->queue_mu);
  pthread_cond_destroy(&w.cv);
  if (w.rc) memset(out, 0, sizeof *out);
  return w.rc;
}
