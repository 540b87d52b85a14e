/*
 * The group's view of stored state, and the decisions made on it.
 *
 * A group's view holds, per event id, what es_lookup found stored (or, on
 * the optimistic path, nothing: no stored id is assumed) plus what earlier
 * appends of the same group were decided to write, and per stream its last
 * version and type (from es_lookup, or from the cache). Each append is
 * decided by the core (es_append_decide) against that view, in arrival
 * order (an AppendMany's appends together, by es_append_many_decide, from
 * its streams' states before the request, with the links between its
 * batches stored and read back as `joined`); one that passes gets
 * positions from the group's running head and joins the view, so a later
 * append of the same group sees its versions and ids (and a later append's
 * condition sees its events). Nothing is written until every append of the
 * group is decided.
 */
#include <stdlib.h>
#include <string.h>

#include "pg_committer.h"

/* The group's view of a stream, created on first use: from the cache on the
 * optimistic path (a stream not in it is taken to be new), else empty until
 * the lookup fills it. */
static stream_state_t *stream_of(committer_t *cm, const char *id, bool from_cache) {
  stream_state_t *s = es__pg_map_get(&cm->streams, id, strlen(id));
  if (s) return s;
  s = &cm->states[cm->n_states++];
  s->id = id;
  s->type = "";
  s->last = 0;
  s->dirty = false;
  if (from_cache) {
    const cached_stream_t *c = es__pg_cache_get(cm, id);
    if (c) {
      s->last = c->last;
      s->type = c->type ? c->type : "";
    }
  }
  es__pg_map_put(&cm->streams, id, strlen(id), s);
  return s;
}

/* The append decision's view (backend_impl.h) of one waiter's request:
 * the group's ids map, which holds what es_lookup found stored and what
 * earlier appends of this group were decided to write. */
typedef struct decide_ctx {
  committer_t *cm;
  const es_pg_waiter_t *w;
  const es_append_req_t *req; /* the append whose ids are looked up */
} decide_ctx_t;

static bool lookup_id(void *ctx, size_t index, es_stored_event_t *out) {
  const decide_ctx_t *d = ctx;
  const known_t *k = es__pg_map_get(&d->cm->ids, d->req->events[index].id, ES_UUID_LEN);
  if (!k) return false;
  out->stream_id = k->stream_id;
  out->stream_version = k->version;
  out->global_position = k->position;
  out->recorded_at_unix_ms = k->recorded_at;
  out->batch_first = k->batch_index == 0;
  out->batch_last = k->batch_index + 1 == k->batch_size;
  out->own_attempt = false;
  out->joined_prev = (k->joined & 1) != 0;
  out->joined_next = (k->joined & 2) != 0;
  for (int i = 0; k->token != 0 && i < d->w->n_lost; i++)
    out->own_attempt |= k->token == d->w->lost_tokens[i];
  return true;
}

/* The condition's view (Extension 1): the first matching event after
 * `after` that is committed (the committer asked the database, under the
 * head-row lock: w->condition_stored), else the first one among the events
 * that earlier appends of this group were decided to write, which commit
 * before this append's in the same transaction. The stored ones come first:
 * their positions are below the group's. */
static bool match_condition(void *ctx, const es_append_condition_t *cond, uint64_t *position) {
  const decide_ctx_t *d = ctx;
  const committer_t *cm = d->cm;
  if (d->w->condition_stored) {
    *position = d->w->condition_stored;
    return true;
  }
  for (size_t j = 0; j < cm->group_n; j++) {
    if (!cm->wrote[j]) continue;
    const es_pg_waiter_t *o = cm->group[j];
    for (size_t a = 0; a < o->n_reqs; a++)
      for (size_t k = 0; k < o->reqs[a].event_count; k++) {
        const es_event_data_t *ev = &o->reqs[a].events[k];
        uint64_t p = o->outs[a].first_position + k;
        if (p > cond->after && es_query_match(cond->items, cond->item_count, ev->event_type,
                                              ev->tags, ev->tag_count)) {
          *position = p;
          return true;
        }
      }
  }
  return false;
}

/* Decides one append (es_append_decide) against what is stored plus the
 * group's earlier decisions. Fills w->rc, w->out and w->err; true when the
 * append is to be written, then positions are reserved from *head and its
 * events join the view for the later appends of the group. */
bool es__pg_decide(committer_t *cm, es_pg_waiter_t *w, uint64_t *head, uint64_t recorded_at,
                   bool from_cache) {
  es_err_clear(w->err); /* a previous attempt may have left a message */
  es_append_decision_t decision;
  decide_ctx_t one = {cm, w, w->req};
  es_condition_view_t cview = {match_condition, &one};
  if (!w->many) {
    stream_state_t *s = stream_of(cm, w->req->stream_id, from_cache);
    es_append_view_t view = {s->last, s->type, lookup_id, &one};
    w->rc = es_append_decide_conditional(w->req, &view, w->condition ? &cview : NULL, &decision,
                                         w->out, w->err);
  } else {
    /* An AppendMany: each append's stream as it was before the request
     * (the core applies the request's earlier appends itself). */
    size_t m = w->n_reqs;
    es_append_view_t *views = calloc(m, sizeof *views);
    decide_ctx_t *ctxs = calloc(m, sizeof *ctxs);
    if (!views || !ctxs) {
      free(views);
      free(ctxs);
      w->rc = es_err_set(w->err, ES_ENOMEM, "out of memory deciding %zu appends", m);
      return false;
    }
    for (size_t a = 0; a < m; a++) {
      const stream_state_t *s = stream_of(cm, w->reqs[a].stream_id, from_cache);
      ctxs[a] = (decide_ctx_t){cm, w, &w->reqs[a]};
      views[a] = (es_append_view_t){s->last, s->type, lookup_id, &ctxs[a]};
    }
    es_append_many_view_t mview = {views, cview};
    w->rc = es_append_many_decide(w->many, &mview, &decision, w->outs, w->err);
    free(views);
    free(ctxs);
  }
  if (w->rc != ES_OK || decision == ES_APPEND_STORED) return false;

  /* To be written: positions, one run in request order, and the view for
   * later appends of the group. */
  for (size_t a = 0; a < w->n_reqs; a++) {
    const es_append_req_t *req = &w->reqs[a];
    es_append_result_t *out = &w->outs[a];
    size_t n = req->event_count;
    stream_state_t *s = stream_of(cm, req->stream_id, from_cache);
    const char *type = str_or_empty(req->stream_type);
    out->first_position = *head + 1;
    out->last_position = *head + n;
    out->recorded_at_unix_ms = recorded_at;
    for (size_t i = 0; i < n; i++) {
      known_t *k = &cm->known[cm->n_known++];
      k->stream_id = req->stream_id;
      k->version = out->first_version + i;
      k->position = *head + 1 + i;
      k->recorded_at = recorded_at;
      k->batch_index = (uint32_t)i;
      k->batch_size = (uint32_t)n;
      k->token = 0;
      k->joined = (uint8_t)((i == 0 && a > 0 ? 1 : 0) | (i + 1 == n && a + 1 < w->n_reqs ? 2 : 0));
      es__pg_map_put(&cm->ids, req->events[i].id, ES_UUID_LEN, k);
    }
    *head += n;
    s->last = out->last_version;
    if (type[0] != '\0' && s->type[0] == '\0') s->type = type;
    s->dirty = true;
  }
  return true;
}

/* Sizes the per-group storage for n waiters with `events` events. */
int es__pg_group_reserve(committer_t *cm, size_t n, size_t appends, size_t events) {
  size_t waiters = n;
  if (appends > n) n = appends; /* the streams: at most one per append */
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
  if (cm->wrote_cap < waiters) {
    bool *w = realloc(cm->wrote, waiters * sizeof *w);
    if (!w) return ES_ENOMEM;
    cm->wrote = w;
    cm->wrote_cap = waiters;
  }
  if (es__pg_map_reset(&cm->ids, 2 * events) || es__pg_map_reset(&cm->streams, n)) return ES_ENOMEM;
  cm->n_known = cm->n_states = 0;
  return ES_OK;
}

/* es_lookup's parameters: every id of the group, every distinct stream. */
int es__pg_build_lookup(committer_t *cm, es_pg_waiter_t **ws, size_t n, size_t events) {
  es_pg_buf_t *ids = &cm->lookup[0], *streams = &cm->lookup[1];
  size_t n_streams = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t a = 0; a < ws[i]->n_reqs; a++) {
      const char *id = ws[i]->reqs[a].stream_id;
      if (!es__pg_map_get(&cm->streams, id, strlen(id))) {
        stream_of(cm, id, false);
        n_streams++;
      }
    }
  if (es__pg_array_begin(ids, ES_PG_OID_UUID, events)) return ES_ENOMEM;
  for (size_t i = 0; i < n; i++)
    for (size_t a = 0; a < ws[i]->n_reqs; a++)
      for (size_t j = 0; j < ws[i]->reqs[a].event_count; j++)
        if (es__pg_array_elem(ids, ws[i]->reqs[a].events[j].id, ES_UUID_LEN)) return ES_ENOMEM;
  if (es__pg_array_begin(streams, ES_PG_OID_TEXT, n_streams)) return ES_ENOMEM;
  for (size_t i = 0; i < cm->n_states; i++)
    if (es__pg_array_elem(streams, cm->states[i].id, strlen(cm->states[i].id))) return ES_ENOMEM;
  return ES_OK;
}

/* Loads es_lookup's rows into the maps (the states created by build_lookup
 * are updated in place). */
int es__pg_load_lookup(committer_t *cm, const PGresult *res) {
  if (PQnfields(res) != 11) return ES_EINTERNAL;
  for (int r = 0; r < PQntuples(res); r++) {
    bool is_event = PQgetlength(res, r, 0) == 1 && PQgetvalue(res, r, 0)[0] != 0;
    const char *stream = PQgetvalue(res, r, 2);
    if (PQgetlength(res, r, 3) != 8) return ES_EINTERNAL;
    uint64_t version = es__pg_get64(PQgetvalue(res, r, 3));
    if (is_event) {
      if (PQgetlength(res, r, 1) != ES_UUID_LEN || PQgetlength(res, r, 4) != 8 ||
          PQgetlength(res, r, 5) != 8 || PQgetlength(res, r, 6) != 4 ||
          PQgetlength(res, r, 7) != 4 || (!PQgetisnull(res, r, 9) && PQgetlength(res, r, 9) != 8) ||
          PQgetlength(res, r, 10) != 2 || cm->n_known >= cm->known_cap)
        return ES_EINTERNAL;
      known_t *k = &cm->known[cm->n_known++];
      k->stream_id = stream;
      k->version = version;
      k->position = es__pg_get64(PQgetvalue(res, r, 4));
      k->recorded_at = es__pg_get64(PQgetvalue(res, r, 5));
      k->batch_index = es__pg_get32(PQgetvalue(res, r, 6));
      k->batch_size = es__pg_get32(PQgetvalue(res, r, 7));
      k->token = PQgetisnull(res, r, 9) ? 0 : es__pg_get64(PQgetvalue(res, r, 9));
      k->joined = (uint8_t)(PQgetvalue(res, r, 10)[1] & 3);
      es__pg_map_put(&cm->ids, PQgetvalue(res, r, 1), ES_UUID_LEN, k);
    } else {
      stream_state_t *s = es__pg_map_get(&cm->streams, stream, strlen(stream));
      if (!s) continue;
      s->last = version;
      s->type = PQgetisnull(res, r, 8) ? "" : PQgetvalue(res, r, 8);
    }
  }
  return ES_OK;
}
