/*
 * The PostgreSQL backend: open and close, the reader pool, and the reads.
 * Appends are in pg_queue.c and pg_commit.c, the cross-server listener in
 * pg_listen.c, the schema in pg_schema.c; pg_internal.h has the map.
 *
 * Reads. Each read is one prepared statement on a pooled connection, so it
 * sees one snapshot: the page's events and the head (or the stream's last
 * version) it reports agree. Global positions are assigned under the global
 * lock and become visible in commit order (pg_commit.c), so a snapshot holds
 * exactly the positions 1..head — the arithmetic of the memory backend
 * (resume points, scan bounds, is_end) applies unchanged. A page's rows are
 * used in place: the page owns the PGresult, the events point into it (zero
 * copy); only metadata strings, which sit unterminated inside array values,
 * are copied, into the same allocation as the page's owner record.
 *
 * The SQL returns at most max_count rows, pre-trimmed by size so that it
 * still holds the first row that does not fit (pg_util.c, PAGE); the exact
 * trimming with es_recorded_size_bound() happens here, with the memory
 * backend's rule: the first event always fits, then events while the sum
 * stays within max_bytes. A page full by count ends right after its last
 * event; one trimmed by bytes ends at the event that did not fit; any other
 * page ends where the scan ended (the head, or the filtered scan bound).
 *
 * The pool holds at most opts.connections reader connections, opened when
 * needed. A connection that broke is dropped; when a call finds that its
 * pooled connection broke (PostgreSQL restarted since it was opened), every
 * idle connection is dropped too, since they are as old, and the call is
 * retried once on a fresh connection — so the first call after a restart
 * succeeds instead of failing on a stale socket.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "es/validate.h"
#include "pg_internal.h"

/* Column indexes of the read statements (pg_util.c, EVENT_COLUMNS). */
enum {
  RC_LAST = 0, /* head (ReadAll) or the stream's last version (ReadStream) */
  RC_STREAM_TYPE,
  RC_POSITION,
  RC_STREAM_ID,
  RC_STREAM_VERSION,
  RC_EVENT_ID,
  RC_EVENT_TYPE,
  RC_EVENT_VERSION,
  RC_CONTENT_TYPE,
  RC_PAYLOAD,
  RC_META_KEYS,
  RC_META_VALUES,
  RC_CORRELATION_ID,
  RC_CAUSATION_ID,
  RC_OCCURRED_AT,
  RC_RECORDED_AT,
  RC_TAGS,
  RC_COUNT
};

/* Positions never come near this; larger request values are clamped to it,
 * which keeps the SQL arithmetic far from int8 overflow. */
#define POSITION_CAP ((uint64_t)1 << 62)

static const es_backend_methods_t pg_methods;

void es_pg_options_default(es_pg_options_t *o) {
  memset(o, 0, sizeof *o);
  o->connections = 8;
  o->committers = 1;
  o->schema = NULL;
  o->max_group_events = 10000;
  o->max_group_bytes = (size_t)32 << 20;
  o->connect_timeout_s = 5;
  o->statement_timeout_ms = 10000;
  o->lock_timeout_ms = 5000;
  o->idle_in_transaction_timeout_ms = 10000;
  o->tcp_user_timeout_ms = 10000;
}

/* ---- the pool ------------------------------------------------------------ */

/* Borrows a reader connection; *fresh (OUT) tells whether it was opened just
 * now. Blocks while all are in use. */
static int pool_get(es_pg_t *pg, PGconn **out, bool *fresh, es_err_t *err) {
  pthread_mutex_lock(&pg->pool_mu);
  for (;;) {
    if (pg->n_idle > 0) {
      *out = pg->idle[--pg->n_idle];
      *fresh = false;
      pthread_mutex_unlock(&pg->pool_mu);
      return ES_OK;
    }
    if (pg->n_open < pg->opts.connections) break;
    pthread_cond_wait(&pg->pool_cv, &pg->pool_mu);
  }
  pg->n_open++;
  pthread_mutex_unlock(&pg->pool_mu);
  int rc = es__pg_connect(pg, ES_PG_ROLE_READER, out, err);
  if (rc) {
    pthread_mutex_lock(&pg->pool_mu);
    pg->n_open--;
    pthread_cond_signal(&pg->pool_cv);
    pthread_mutex_unlock(&pg->pool_mu);
    return rc;
  }
  *fresh = true;
  return ES_OK;
}

/* Returns a borrowed connection (NULL: it was closed). One that is broken or
 * left inside a transaction is closed here. */
static void pool_put(es_pg_t *pg, PGconn *c) {
  if (c && (es__pg_conn_broken(c) || PQtransactionStatus(c) != PQTRANS_IDLE)) {
    PQfinish(c);
    c = NULL;
  }
  pthread_mutex_lock(&pg->pool_mu);
  if (c)
    pg->idle[pg->n_idle++] = c;
  else
    pg->n_open--;
  pthread_cond_signal(&pg->pool_cv);
  pthread_mutex_unlock(&pg->pool_mu);
}

/* Closes every idle connection (after one was found broken). */
static void pool_flush(es_pg_t *pg) {
  PGconn *stale[64];
  int n = 0;
  pthread_mutex_lock(&pg->pool_mu);
  while (pg->n_idle > 0 && n < 64) {
    stale[n++] = pg->idle[--pg->n_idle];
    pg->n_open--;
  }
  pthread_cond_broadcast(&pg->pool_cv);
  pthread_mutex_unlock(&pg->pool_mu);
  for (int i = 0; i < n; i++) PQfinish(stale[i]);
}

/* Runs a reader statement with binary parameters and results: the prepared
 * statement `stmt`, or when it is NULL the text `sql` with parameter types
 * `types` (a query built for its filter). Returns the result (OUT, freed
 * with PQclear) or NULL with *rc and err set. */
static PGresult *reader_exec_any(es_pg_t *pg, const char *stmt, const char *sql, const Oid *types,
                                 int n, const char *const *vals, const int *lens, const int *fmts,
                                 const char *what, int *rc, es_err_t *err) {
  for (int attempt = 0;; attempt++) {
    PGconn *c;
    bool fresh;
    *rc = pool_get(pg, &c, &fresh, err);
    if (*rc) return NULL;
    char name[16];
    const char *named = stmt ? stmt : es__pg_adhoc_name(pg, c, sql, n, types, name);
    PGresult *res = named ? es__pg_exec_prepared(pg, c, named, n, vals, lens, fmts, 1)
                          : es__pg_exec_params(pg, c, sql, n, types, vals, lens, fmts, 1);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
      pool_put(pg, c);
      *rc = ES_OK;
      return res;
    }
    bool broken = es__pg_conn_broken(c), timed_out = es__pg_timed_out(c);
    *rc = es__pg_error(c, res, what, err);
    PQclear(res);
    pool_put(pg, c);
    if (!broken) return NULL;
    pool_flush(pg);
    /* A connection that did not answer in time is not a stale one: trying
     * again would double the wait. */
    if (fresh || attempt > 0 || timed_out) return NULL;
    es_err_clear(err);
  }
}

static PGresult *reader_exec(es_pg_t *pg, const char *stmt, int n, const char *const *vals,
                             const int *lens, const int *fmts, const char *what, int *rc,
                             es_err_t *err) {
  return reader_exec_any(pg, stmt, NULL, NULL, n, vals, lens, fmts, what, rc, err);
}

/* ---- pages --------------------------------------------------------------- */

/* What a page owns: the result its events point into; followed in the same
 * allocation by the metadata views and their copied strings. */
typedef struct page_mem {
  PGresult *res;
} page_mem_t;

static void page_release(void *owner) {
  page_mem_t *m = owner;
  PQclear(m->res);
  free(m);
}

static bool has_event(const PGresult *res, int row) {
  return !PQgetisnull(res, row, RC_POSITION);
}

static uint64_t get_u64(const PGresult *res, int row, int col) {
  return PQgetlength(res, row, col) == 8 ? es__pg_get64(PQgetvalue(res, row, col)) : 0;
}

static long tag_count(const PGresult *res, int row) {
  return es__pg_array_count(PQgetvalue(res, row, RC_TAGS), PQgetlength(res, row, RC_TAGS));
}

/* Checks the shape of an event row, so that the views below can trust it. */
static bool row_ok(const PGresult *res, int row) {
  static const int int8_cols[] = {RC_POSITION, RC_STREAM_VERSION, RC_EVENT_VERSION, RC_OCCURRED_AT,
                                  RC_RECORDED_AT};
  for (size_t i = 0; i < sizeof int8_cols / sizeof int8_cols[0]; i++)
    if (PQgetlength(res, row, int8_cols[i]) != 8) return false;
  if (PQgetlength(res, row, RC_EVENT_ID) != ES_UUID_LEN) return false;
  long nk =
      es__pg_array_count(PQgetvalue(res, row, RC_META_KEYS), PQgetlength(res, row, RC_META_KEYS));
  long nv = es__pg_array_count(PQgetvalue(res, row, RC_META_VALUES),
                               PQgetlength(res, row, RC_META_VALUES));
  return nk >= 0 && nk == nv && tag_count(res, row) >= 0;
}

/* Fills out with the event rows of res (every row from `first` on that has
 * an event), accepting them in order while the page has room: at most
 * `limit` events, and after the first, a running es_recorded_size_bound()
 * within max_bytes. *stop_row (OUT) is the event row that did not fit the
 * byte budget, or -1. Takes res over in every case (the page owns it, or it is
 * freed). */
static int page_build(PGresult *res, size_t limit, size_t max_bytes, es_page_t *out, int *stop_row,
                      es_err_t *err) {
  int rows = PQntuples(res);
  size_t n_events = 0, n_meta = 0, meta_bytes = 0, n_tags = 0;
  *stop_row = -1;
  if (PQnfields(res) != RC_COUNT) {
    PQclear(res);
    return es_err_set(err, ES_EINTERNAL, "PostgreSQL returned %d columns for a page, not %d",
                      PQnfields(res), RC_COUNT);
  }
  for (int r = 0; r < rows; r++) {
    if (!has_event(res, r)) continue;
    if (!row_ok(res, r)) {
      PQclear(res);
      return es_err_set(err, ES_EINTERNAL, "PostgreSQL returned a malformed event row");
    }
    n_events++;
    long nk =
        es__pg_array_count(PQgetvalue(res, r, RC_META_KEYS), PQgetlength(res, r, RC_META_KEYS));
    n_meta += (size_t)nk;
    /* Upper bound of the strings: the array bytes plus one NUL each. */
    meta_bytes += (size_t)PQgetlength(res, r, RC_META_KEYS) +
                  (size_t)PQgetlength(res, r, RC_META_VALUES) + 2 * (size_t)nk;
    /* Tags are copied the same way (NUL-terminated), after the metadata. */
    long nt = tag_count(res, r);
    n_tags += (size_t)nt;
    meta_bytes += (size_t)PQgetlength(res, r, RC_TAGS) + (size_t)nt;
  }
  if (n_events == 0) {
    PQclear(res);
    return ES_OK;
  }
  size_t kv_off = (sizeof(page_mem_t) + _Alignof(es_kv_t) - 1) & ~(_Alignof(es_kv_t) - 1);
  size_t tags_off = kv_off + n_meta * sizeof(es_kv_t);
  size_t str_off = tags_off + n_tags * sizeof(const char *);
  /* Temporary pointer/length arrays for one row's metadata (or tags). */
  size_t max_row_meta = 0;
  for (int r = 0; r < rows; r++)
    if (has_event(res, r)) {
      long nk =
          es__pg_array_count(PQgetvalue(res, r, RC_META_KEYS), PQgetlength(res, r, RC_META_KEYS));
      long nt = tag_count(res, r);
      if ((size_t)nk > max_row_meta) max_row_meta = (size_t)nk;
      if ((size_t)nt > max_row_meta) max_row_meta = (size_t)nt;
    }
  page_mem_t *mem = malloc(str_off + meta_bytes);
  es_recorded_t *events = malloc(n_events * sizeof *events);
  const char **kp = malloc((max_row_meta + 1) * 2 * sizeof *kp);
  size_t *kl = malloc((max_row_meta + 1) * 2 * sizeof *kl);
  if (!mem || !events || !kp || !kl) {
    free(mem);
    free(events);
    free(kp);
    free(kl);
    PQclear(res);
    return es_err_set(err, ES_ENOMEM, "out of memory reading %zu events", n_events);
  }
  mem->res = res;
  es_kv_t *kv = (es_kv_t *)(void *)((char *)mem + kv_off);
  const char **tp = (const char **)(void *)((char *)mem + tags_off);
  char *str = (char *)mem + str_off;
  const char **vp = kp + max_row_meta + 1;
  size_t *vl = kl + max_row_meta + 1;

  size_t count = 0, bytes = 0;
  for (int r = 0; r < rows; r++) {
    if (!has_event(res, r)) continue;
    if (count >= limit) break; /* full by count (the SQL's LIMIT already is) */
    es_recorded_t *v = &events[count];
    v->stream_id = PQgetvalue(res, r, RC_STREAM_ID);
    v->stream_type = PQgetisnull(res, r, RC_STREAM_TYPE) ? "" : PQgetvalue(res, r, RC_STREAM_TYPE);
    v->stream_version = get_u64(res, r, RC_STREAM_VERSION);
    v->global_position = get_u64(res, r, RC_POSITION);
    es_uuid_format((const uint8_t *)PQgetvalue(res, r, RC_EVENT_ID), v->event_id);
    v->event_type = PQgetvalue(res, r, RC_EVENT_TYPE);
    v->event_version = (uint32_t)get_u64(res, r, RC_EVENT_VERSION);
    v->content_type = PQgetvalue(res, r, RC_CONTENT_TYPE);
    v->payload = (const uint8_t *)PQgetvalue(res, r, RC_PAYLOAD);
    v->payload_len = (size_t)PQgetlength(res, r, RC_PAYLOAD);
    v->correlation_id = PQgetvalue(res, r, RC_CORRELATION_ID);
    v->causation_id = PQgetvalue(res, r, RC_CAUSATION_ID);
    v->occurred_at_unix_ms = get_u64(res, r, RC_OCCURRED_AT);
    v->recorded_at_unix_ms = get_u64(res, r, RC_RECORDED_AT);
    long nk =
        es__pg_array_count(PQgetvalue(res, r, RC_META_KEYS), PQgetlength(res, r, RC_META_KEYS));
    v->metadata = nk ? kv : NULL;
    v->metadata_count = (size_t)nk;
    if (nk > 0) {
      if (es__pg_array_parse(PQgetvalue(res, r, RC_META_KEYS), PQgetlength(res, r, RC_META_KEYS),
                             kp, kl) ||
          es__pg_array_parse(PQgetvalue(res, r, RC_META_VALUES),
                             PQgetlength(res, r, RC_META_VALUES), vp, vl)) {
        free(events);
        free(kp);
        free(kl);
        page_release(mem);
        return es_err_set(err, ES_EINTERNAL, "PostgreSQL returned malformed metadata");
      }
      for (long i = 0; i < nk; i++) {
        memcpy(str, kp[i], kl[i]);
        str[kl[i]] = '\0';
        kv[i].key = str;
        str += kl[i] + 1;
        memcpy(str, vp[i], vl[i]);
        str[vl[i]] = '\0';
        kv[i].value = str;
        str += vl[i] + 1;
      }
    }
    long nt = tag_count(res, r);
    v->tags = nt ? tp : NULL;
    v->tag_count = (size_t)nt;
    if (nt > 0) {
      if (es__pg_array_parse(PQgetvalue(res, r, RC_TAGS), PQgetlength(res, r, RC_TAGS), kp, kl)) {
        free(events);
        free(kp);
        free(kl);
        page_release(mem);
        return es_err_set(err, ES_EINTERNAL, "PostgreSQL returned malformed tags");
      }
      for (long i = 0; i < nt; i++) {
        memcpy(str, kp[i], kl[i]);
        str[kl[i]] = '\0';
        tp[i] = str;
        str += kl[i] + 1;
      }
    }
    size_t size = es_recorded_size_bound(v) + es_recorded_tags_size(v);
    if (count > 0 && (size > max_bytes || bytes + size > max_bytes)) {
      *stop_row = r;
      break;
    }
    kv += nk; /* the views of an accepted event stay */
    tp += nt;
    bytes += size;
    count++;
  }
  free(kp);
  free(kl);
  if (count == 0) { /* cannot happen (the first event always fits); be safe */
    free(events);
    page_release(mem);
    return ES_OK;
  }
  out->events = events;
  out->count = count;
  out->owner = mem;
  out->release = page_release;
  return ES_OK;
}

static uint64_t cap_u64(uint64_t v, uint64_t cap) {
  return v > cap ? cap : v;
}

/* ---- methods ------------------------------------------------------------- */

static int pg_read_stream(es_backend_t *b, const es_read_stream_req_t *req, es_page_t *out,
                          es_err_t *err) {
  es_pg_t *pg = (es_pg_t *)b;
  int rc = ES_OK;
  const char *id = req->stream_id ? req->stream_id : "";
  bool fwd = req->direction == ES_FORWARD;
  uint64_t from = cap_u64(req->from_version, POSITION_CAP);
  if (fwd && from == 0) from = 1;
  uint32_t limit = req->max_count > INT32_MAX ? INT32_MAX : req->max_count;
  uint8_t from_be[8], limit_be[4], bytes_be[8];
  es__pg_put64(from_be, from);
  es__pg_put32(limit_be, limit);
  es__pg_put64(bytes_be, cap_u64(req->max_bytes, POSITION_CAP));
  const char *vals[4] = {id, (const char *)from_be, (const char *)limit_be, (const char *)bytes_be};
  int lens[4] = {(int)strlen(id), 8, 4, 8};
  int fmts[4] = {1, 1, 1, 1};
  PGresult *res = reader_exec(pg, fwd ? "es_stream_fwd" : "es_stream_bwd", 4, vals, lens, fmts,
                              "reading a stream", &rc, err);
  if (!res) return rc;
  if (PQntuples(res) == 0) {
    PQclear(res);
    return es_err_set(err, ES_ENOTFOUND, "stream '%s' not found", id);
  }
  uint64_t last = get_u64(res, 0, RC_LAST);
  int stop_row;
  rc = page_build(res, limit, req->max_bytes, out, &stop_row, err);
  if (rc) return rc;
  out->last = last;
  if (fwd) {
    out->next = from > last ? last + 1 : from + out->count;
    out->is_end = out->next > last;
  } else {
    uint64_t start = (from == 0 || from > last) ? last : from;
    out->next = start - out->count;
    out->is_end = out->next == 0;
  }
  return ES_OK;
}

static void start_threads(es_pg_t *pg);

/* ReadAll with Filter.items: the text es__pg_items_sql builds for f, with
 * the six parameters of es_all_fwd / es_all_bwd (vals6, lens6) and then each
 * item's types, tags and (indexed) each of its tags. */
static PGresult *read_items(es_pg_t *pg, bool fwd, const es_filter_t *f, bool indexed,
                            const char *const *vals6, const int *lens6, int *rc, es_err_t *err) {
  static const Oid head_types[6] = {ES_PG_OID_INT8, ES_PG_OID_INT8, ES_PG_OID_INT4,
                                    ES_PG_OID_INT8, ES_PG_OID_TEXT, ES_PG_OID_TEXT_ARRAY};
  size_t n = 6;
  for (size_t i = 0; i < f->item_count; i++) n += 2 + (indexed ? f->items[i].tag_count : 0);
  char *sql = es__pg_items_sql(pg, fwd, f, indexed);
  const char **vals = calloc(n, sizeof *vals);
  int *lens = calloc(n, sizeof *lens), *fmts = calloc(n, sizeof *fmts);
  Oid *types = calloc(n, sizeof *types);
  es_pg_buf_t *arrays = calloc(2 * f->item_count + 1, sizeof *arrays); /* never 0 bytes */
  PGresult *res = NULL;
  if (!sql || !vals || !lens || !fmts || !types || !arrays) goto nomem;
  for (size_t k = 0; k < 6; k++) {
    vals[k] = vals6[k];
    lens[k] = lens6[k];
    types[k] = head_types[k];
  }
  size_t k = 6;
  for (size_t i = 0; i < f->item_count; i++) {
    const es_query_item_t *it = &f->items[i];
    es_pg_buf_t *ty = &arrays[2 * i], *tg = &arrays[2 * i + 1];
    if (es__pg_array_begin(ty, ES_PG_OID_TEXT, it->event_type_count) ||
        es__pg_array_begin(tg, ES_PG_OID_TEXT, it->tag_count))
      goto nomem;
    for (size_t j = 0; j < it->event_type_count; j++) {
      const char *t = it->event_types[j] ? it->event_types[j] : "";
      if (es__pg_array_elem(ty, t, strlen(t))) goto nomem;
    }
    for (size_t j = 0; j < it->tag_count; j++) {
      const char *t = it->tags[j] ? it->tags[j] : "";
      if (es__pg_array_elem(tg, t, strlen(t))) goto nomem;
    }
    vals[k] = ty->data;
    lens[k] = (int)ty->len;
    types[k++] = ES_PG_OID_TEXT_ARRAY;
    vals[k] = tg->data;
    lens[k] = (int)tg->len;
    types[k++] = ES_PG_OID_TEXT_ARRAY;
    for (size_t j = 0; indexed && j < it->tag_count; j++) {
      vals[k] = it->tags[j] ? it->tags[j] : "";
      lens[k] = (int)strlen(vals[k]);
      types[k++] = ES_PG_OID_TEXT;
    }
  }
  for (size_t j = 0; j < n; j++) fmts[j] = 1;
  res = reader_exec_any(pg, NULL, sql, types, (int)n, vals, lens, fmts, "reading the log by query",
                        rc, err);
  goto done;
nomem:
  *rc = es_err_set(err, ES_ENOMEM, "out of memory reading the log by query");
done:
  for (size_t i = 0; arrays && i < 2 * f->item_count; i++) es__pg_buf_free(&arrays[i]);
  free(arrays);
  free(types);
  free(fmts);
  free(lens);
  free(vals);
  free(sql);
  return res;
}

static int pg_read_all(es_backend_t *b, const es_read_all_req_t *req, es_page_t *out,
                       es_err_t *err) {
  es_pg_t *pg = (es_pg_t *)b;
  int rc = ES_OK;
  start_threads(pg); /* a reader of the log may wait for others' commits */
  bool fwd = req->direction == ES_FORWARD;
  bool filtered = es_filter_active(&req->filter);
  const es_filter_t *f = &req->filter;
  size_t n_items = filtered ? f->item_count : 0;
  /* Every item names a tag: the tag index gives the candidates (pg_util.c,
   * es__pg_items_sql), so the read needs no scan bound. */
  bool indexed = n_items > 0;
  for (size_t i = 0; i < n_items; i++)
    if (f->items[i].tag_count == 0) indexed = false;
  uint64_t scan =
      filtered && req->max_scan && !indexed ? cap_u64(req->max_scan, POSITION_CAP) : POSITION_CAP;
  uint64_t from = cap_u64(req->from_position, POSITION_CAP);
  if (fwd && from == 0) from = 1;
  uint64_t hi = from + scan - 1; /* FORWARD: the last position to scan (before the head) */
  uint32_t limit = req->max_count > INT32_MAX ? INT32_MAX : req->max_count;

  /* The event types as a text[] value. */
  es_pg_buf_t types = {0};
  size_t n_types = filtered ? req->filter.event_type_count : 0;
  if (es__pg_array_begin(&types, ES_PG_OID_TEXT, n_types)) goto nomem;
  for (size_t i = 0; i < n_types; i++) {
    const char *t = req->filter.event_types[i] ? req->filter.event_types[i] : "";
    if (es__pg_array_elem(&types, t, strlen(t))) goto nomem;
  }
  const char *prefix = filtered && req->filter.stream_prefix ? req->filter.stream_prefix : "";

  uint8_t p1[8], p2[8], p3[4], p4[8];
  es__pg_put64(p1, from);
  es__pg_put64(p2, fwd ? hi : scan);
  es__pg_put32(p3, limit);
  es__pg_put64(p4, cap_u64(req->max_bytes, POSITION_CAP));
  const char *vals6[6] = {(const char *)p1, (const char *)p2, (const char *)p3,
                          (const char *)p4, prefix,           types.data};
  int lens6[6] = {8, 8, 4, 8, (int)strlen(prefix), (int)types.len};
  int fmts6[6] = {1, 1, 1, 1, 1, 1};
  PGresult *res;
  if (n_items == 0) {
    res = reader_exec(pg, fwd ? "es_all_fwd" : "es_all_bwd", 6, vals6, lens6, fmts6,
                      "reading the log", &rc, err);
  } else {
    res = read_items(pg, fwd, f, indexed, vals6, lens6, &rc, err);
  }
  es__pg_buf_free(&types);
  if (!res) return rc;
  if (PQntuples(res) == 0) {
    PQclear(res);
    return es_err_set(err, ES_EINTERNAL, "PostgreSQL: the log head row is missing");
  }
  uint64_t head = get_u64(res, 0, RC_LAST);
  int stop_row;
  uint64_t stop_pos = 0;
  /* page_build takes res over; note where the page stops first. */
  rc = page_build(res, limit, req->max_bytes, out, &stop_row, err);
  if (rc) return rc;
  if (stop_row >= 0 && out->owner) /* the stop row is in the page's result */
    stop_pos = get_u64(((page_mem_t *)out->owner)->res, stop_row, RC_POSITION);
  else
    stop_row = -1;
  out->last = head;
  if (stop_row >= 0) {
    out->next = stop_pos; /* the first event that did not fit the bytes */
  } else if (out->count == limit) {
    /* Full by count: the page ends right after its last event. */
    uint64_t last = out->events[out->count - 1].global_position;
    out->next = fwd ? last + 1 : last - 1;
  } else if (fwd) {
    /* Everything up to the scan bound (or the head) was examined. */
    out->next = from > head ? head + 1 : (head < hi ? head : hi) + 1;
  } else {
    uint64_t start = (from == 0 || from > head) ? head : from;
    out->next = (start >= scan ? start - scan + 1 : 1) - 1;
  }
  out->is_end = fwd ? out->next > head : out->next == 0;
  return ES_OK;

nomem:
  es__pg_buf_free(&types);
  return es_err_set(err, ES_ENOMEM, "out of memory reading the log");
}

static int pg_head(es_backend_t *b, uint64_t *out, es_err_t *err) {
  es_pg_t *pg = (es_pg_t *)b;
  int rc;
  *out = 0;
  PGresult *res = reader_exec(pg, "es_head", 0, NULL, NULL, NULL, "reading the head", &rc, err);
  if (!res) return rc;
  if (PQntuples(res) != 1 || PQgetlength(res, 0, 0) != 8) {
    PQclear(res);
    return es_err_set(err, ES_EINTERNAL, "PostgreSQL: the log head row is missing");
  }
  *out = es__pg_get64(PQgetvalue(res, 0, 0));
  PQclear(res);
  return ES_OK;
}

static int pg_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                     es_err_t *err) {
  start_threads((es_pg_t *)b);
  return es__pg_append(b, req, out, err);
}

static int pg_append_many(es_backend_t *b, const es_append_many_req_t *req,
                          es_append_result_t *results, es_err_t *err) {
  start_threads((es_pg_t *)b);
  return es__pg_append_many(b, req, results, err);
}

/* ---- threads, open, close ------------------------------------------------ */

/* Refuses new appends, lets the ones in progress finish (each is committed
 * by an appending thread, pg_queue.c) and stops the listener if it runs
 * (under queue_mu; returns with it held). */
static void stop_threads_locked(es_pg_t *pg, bool listener) {
  pg->stopping = true;
  while (!es__pg_lanes_idle(pg)) pthread_cond_wait(&pg->queue_cv, &pg->queue_mu);
  pthread_mutex_unlock(&pg->queue_mu);
  if (listener) {
    uint64_t one = 1;
    ssize_t w = write(pg->wake_fd, &one, sizeof one);
    (void)w;
    pthread_join(pg->listener, NULL);
  }
  pthread_mutex_lock(&pg->queue_mu);
}

/* Starts the listener once, on the first append or log read: by then the
 * server has set the notifier it publishes to. Appends need no thread of
 * their own (pg_queue.c). A failure to start leaves threads_started clear;
 * appends then fail (pg_queue.c). */
static void start_threads(es_pg_t *pg) {
  if (atomic_load_explicit(&pg->threads_started, memory_order_acquire)) return;
  pthread_mutex_lock(&pg->queue_mu);
  if (!atomic_load(&pg->threads_started) && !pg->stopping) {
    bool ok = true;
    if (!pg->listener_stopped)
      ok = pthread_create(&pg->listener, NULL, es__pg_listener_main, pg) == 0;
    if (ok) atomic_store_explicit(&pg->threads_started, true, memory_order_release);
  }
  pthread_mutex_unlock(&pg->queue_mu);
}

static void pg_free(es_pg_t *pg) {
  for (int i = 0; i < pg->n_idle; i++) PQfinish(pg->idle[i]);
  free(pg->idle);
  if (pg->wake_fd >= 0) close(pg->wake_fd);
  es__pg_lanes_free(pg);
  es__pg_sql_free(&pg->sql);
  pthread_mutex_destroy(&pg->gate_mu);
  pthread_cond_destroy(&pg->gate_cv);
  pthread_mutex_destroy(&pg->pool_mu);
  pthread_cond_destroy(&pg->pool_cv);
  pthread_mutex_destroy(&pg->queue_mu);
  pthread_cond_destroy(&pg->queue_cv);
  pthread_mutex_destroy(&pg->stats_mu);
  pthread_mutex_destroy(&pg->publish_mu);
  free(pg->url);
  free(pg->schema);
  free(pg->channel);
  free(pg);
}

static void pg_close(es_backend_t *b) {
  es_pg_t *pg = (es_pg_t *)b;
  if (!pg) return;
  pthread_mutex_lock(&pg->queue_mu);
  if (atomic_load(&pg->threads_started))
    stop_threads_locked(pg, !pg->listener_stopped); /* the appends in progress finish */
  else
    pg->stopping = true;
  pthread_mutex_unlock(&pg->queue_mu);
  pg_free(pg);
}

int es_pg_open(const char *database_url, const es_pg_options_t *opts, es_backend_t **out,
               es_err_t *err) {
  es_pg_options_t o;
  *out = NULL;
  if (opts)
    o = *opts;
  else
    es_pg_options_default(&o);
  if (!database_url || !database_url[0])
    return es_err_set(err, ES_EINVAL, "database_url: empty (set DATABASE_URL)");
  if (o.connections < 1 || o.connections > 1024)
    return es_err_set(err, ES_EINVAL, "connections: %d, must be 1..1024", o.connections);
  if (o.committers < 1 || o.committers > ES_PG_MAX_COMMITTERS)
    return es_err_set(err, ES_EINVAL, "committers: %d, must be 1..%d", o.committers,
                      ES_PG_MAX_COMMITTERS);
  if (o.max_group_events == 0) o.max_group_events = 10000;
  if (o.max_group_bytes == 0) o.max_group_bytes = (size_t)32 << 20;
  if (o.connect_timeout_s <= 0) o.connect_timeout_s = 5;
  if (o.statement_timeout_ms < 0 || o.lock_timeout_ms < 0 || o.idle_in_transaction_timeout_ms < 0 ||
      o.tcp_user_timeout_ms < 0)
    return es_err_set(err, ES_EINVAL, "timeouts: must be 0 (off) or a number of milliseconds");
  const char *schema = o.schema && o.schema[0] ? o.schema : "public";
  if (strlen(schema) > 40)
    return es_err_set(err, ES_EINVAL, "schema: '%s' is longer than 40 bytes", schema);

  es_pg_t *pg = calloc(1, sizeof *pg);
  if (!pg) return es_err_set(err, ES_ENOMEM, "out of memory opening the PostgreSQL backend");
  pg->base.methods = &pg_methods;
  pg->wake_fd = -1;
  pthread_mutex_init(&pg->gate_mu, NULL);
  pthread_condattr_t monotonic;
  pthread_condattr_init(&monotonic);
  pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC); /* es__pg_now_ms() deadlines */
  pthread_cond_init(&pg->gate_cv, &monotonic);
  pthread_condattr_destroy(&monotonic);
  pthread_mutex_init(&pg->pool_mu, NULL);
  pthread_cond_init(&pg->pool_cv, NULL);
  pthread_mutex_init(&pg->queue_mu, NULL);
  pthread_cond_init(&pg->queue_cv, NULL);
  pthread_mutex_init(&pg->stats_mu, NULL);
  pthread_mutex_init(&pg->publish_mu, NULL);
  for (int i = 0; i < ES_PG_MAX_COMMITTERS; i++) atomic_init(&pg->commit_pid[i], 0);
  atomic_init(&pg->threads_started, false);
  PGconn *c = NULL;
  int rc;

  pg->url = strdup(database_url);
  pg->schema = strdup(schema);
  size_t chlen = strlen(schema) + 16;
  pg->channel = malloc(chlen);
  pg->idle = calloc((size_t)o.connections, sizeof *pg->idle);
  if (!pg->url || !pg->schema || !pg->channel || !pg->idle) {
    rc = es_err_set(err, ES_ENOMEM, "out of memory opening the PostgreSQL backend");
    goto fail;
  }
  /* One channel per schema, so stores that share a database do not wake
   * each other's subscribers. */
  if (strcmp(schema, "public") == 0)
    snprintf(pg->channel, chlen, "es_events");
  else
    snprintf(pg->channel, chlen, "es_events.%s", schema);
  o.schema = pg->schema;
  pg->opts = o;
  if (es__pg_lanes_init(pg)) {
    rc = es_err_set(err, ES_ENOMEM, "out of memory opening the PostgreSQL backend");
    goto fail;
  }
  pg->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (pg->wake_fd < 0) {
    rc = es_err_set(err, ES_EINTERNAL, "eventfd: %s", strerror(errno));
    goto fail;
  }
  if ((rc = es__pg_sql_build(pg, err))) goto fail;

  /* Connect once now: a wrong URL or a database that is down is reported
   * at start-up, and the schema is made current before any call. */
  if ((rc = es__pg_connect(pg, ES_PG_ROLE_ADMIN, &c, err))) goto fail;
  if ((rc = es__pg_migrate(pg, c, err))) goto fail;
  PQfinish(c);
  c = NULL;
  /* The first reader connection, so that the first call does not pay for
   * connecting (and to check that the statements prepare). */
  bool fresh;
  if ((rc = pool_get(pg, &c, &fresh, err))) goto fail;
  pool_put(pg, c);
  c = NULL;
  *out = &pg->base;
  return ES_OK;

fail:
  if (c) PQfinish(c);
  pg_free(pg);
  return rc;
}

void es_pg_stop_listening(es_backend_t *b) {
  if (!b || b->methods != &pg_methods) return;
  es_pg_t *pg = (es_pg_t *)b;
  pthread_mutex_lock(&pg->queue_mu);
  bool join = atomic_load(&pg->threads_started) && !pg->listener_stopped;
  pg->listener_stopped = true; /* and start_threads() will not start one */
  pthread_mutex_unlock(&pg->queue_mu);
  if (!join) return;
  uint64_t one = 1;
  ssize_t w = write(pg->wake_fd, &one, sizeof one);
  (void)w;
  pthread_join(pg->listener, NULL);
}

void es_pg_stats(es_backend_t *b, es_pg_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!b || b->methods != &pg_methods) return;
  es_pg_t *pg = (es_pg_t *)b;
  pthread_mutex_lock(&pg->stats_mu);
  *out = pg->stats;
  pthread_mutex_unlock(&pg->stats_mu);
}

void es_pg_set_test_hooks(es_backend_t *b, const es_pg_test_hooks_t *hooks) {
  if (!b || b->methods != &pg_methods) return;
  es_pg_t *pg = (es_pg_t *)b;
  if (hooks)
    pg->test_hooks = *hooks;
  else
    memset(&pg->test_hooks, 0, sizeof pg->test_hooks);
}

static size_t pg_backend_stats(es_backend_t *b, es_backend_stat_t *out, size_t max) {
  es_pg_t *pg = (es_pg_t *)b;
  es_pg_stats_t st;
  es_pg_stats(b, &st);
  pthread_mutex_lock(&pg->pool_mu);
  uint64_t open = (uint64_t)pg->n_open, idle = (uint64_t)pg->n_idle;
  pthread_mutex_unlock(&pg->pool_mu);
  const es_backend_stat_t all[] = {
      {"pg_pool_size", "Reader connections the pool may open (--pg-connections).", 0,
       (uint64_t)pg->opts.connections},
      {"pg_pool_open_connections", "Reader connections open or being opened.", 0, open},
      {"pg_pool_in_use_connections", "Reader connections borrowed by a call.", 0,
       open > idle ? open - idle : 0},
      {"pg_pool_idle_connections", "Reader connections waiting in the pool.", 0, idle},
      {"pg_group_commits_total", "Group-commit transactions committed.", 1, st.groups},
      {"pg_appends_committed_total", "Appends committed (duplicates not counted).", 1, st.appends},
      {"pg_largest_group", "Most appends committed in one transaction.", 0, st.max_group},
      {"pg_notifications_total", "Heads received from other servers (NOTIFY).", 1,
       st.notifications},
      {"pg_reconnects_total", "Connections re-established after a failure.", 1, st.reconnects},
      {"pg_notifications_ignored_total",
       "NOTIFY payloads on the store's channel that were not a head, or named a head beyond the "
       "one read back.",
       1, st.notifications_ignored},
      {"pg_listener_head_reads_total",
       "Heads read back from the database after a notification hinted at one.", 1, st.head_reads},
      {"pg_timeouts_total",
       "Connections dropped because PostgreSQL did not answer within the statement timeout + 1 s.",
       1, st.timeouts},
      {"pg_sessions_ended_total",
       "Server processes of lost connections ended before a lost commit's outcome was looked up.",
       1, st.sessions_ended},
      {"pg_statements_prepared_total",
       "Reads by query prepared on a connection the first time it ran their text.", 1,
       st.statements_prepared},
  };
  size_t n = sizeof all / sizeof all[0];
  if (n > max) n = max;
  memcpy(out, all, n * sizeof *out);
  return n;
}

static const es_backend_methods_t pg_methods = {
    .stats = pg_backend_stats,
    .features = ES_BACKEND_TAGS | ES_BACKEND_QUERY | ES_BACKEND_CONDITION,
    .name = "postgres",
    .blocking = 1,
    .close = pg_close,
    .append = pg_append,
    .append_many = pg_append_many,
    .read_stream = pg_read_stream,
    .read_all = pg_read_all,
    .head = pg_head,
};
