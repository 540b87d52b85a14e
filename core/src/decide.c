/*
 * The append decision (backend_impl.h): API.md's rules for one append, in
 * its order — idempotency, then stream type, then expected version — over a
 * view of the stored state that the backend supplies.
 *
 * Idempotency (API.md details 1 and 2). A request whose n ids are all stored
 * is a retry of a committed append exactly when its first id is the first of
 * a stored batch of the same stream, id i sits at that event's version + i,
 * none after the first starts a batch and the n-th ends one: batches are
 * runs of consecutive versions of one stream, so these conditions say that
 * the stored batch is this request, no more and no less. Its result is
 * rebuilt from the stored events (a batch has consecutive positions, so the
 * first position gives the last). Any other request with a stored id is
 * ES_EEXIST naming the first stored id in request order, whatever its
 * expectations say.
 *
 * The view is consulted once per id, in request order, and not at all past
 * the point where the answer is known.
 *
 * Extension 1 adds the condition, decided last by the view's `match`, and
 * AppendMany, decided as one request: a retry is a duplicate only of a whole
 * committed request (an Append, or an AppendMany whose batches are linked by
 * the joined_prev / joined_next marks of their boundary events), and each
 * append's stream checks see the appends before it in the same request.
 */
#include <stdio.h>
#include <string.h>

#include "es/backend_impl.h"
#include "es/validate.h"

static const char *expected_name(int kind) {
  switch (kind) {
    case ES_EXPECT_ANY:
      return "ANY";
    case ES_EXPECT_NO_STREAM:
      return "NO_STREAM";
    case ES_EXPECT_STREAM_EXISTS:
      return "STREAM_EXISTS";
    default:
      return "EXACT";
  }
}

/* The expected-version check of req against the stream's last version. */
static int check_expected(const es_append_req_t *req, uint64_t last, es_err_t *err) {
  bool ok;
  switch (req->expected_kind) {
    case ES_EXPECT_ANY:
      return ES_OK;
    case ES_EXPECT_NO_STREAM:
      ok = last == 0;
      break;
    case ES_EXPECT_STREAM_EXISTS:
      ok = last > 0;
      break;
    case ES_EXPECT_EXACT:
      ok = last == req->expected_version;
      break;
    default:
      return es_err_set(err, ES_EINVAL, "expected_kind: unknown value %d", req->expected_kind);
  }
  if (ok) return ES_OK;
  char expected[48];
  if (req->expected_kind == ES_EXPECT_EXACT)
    snprintf(expected, sizeof expected, "EXACT %llu", (unsigned long long)req->expected_version);
  else
    snprintf(expected, sizeof expected, "%s", expected_name(req->expected_kind));
  int rc = es_err_set(err, ES_EVERSION, "stream '%s': expected version %s, actual version %llu",
                      req->stream_id, expected, (unsigned long long)last);
  if (err) {
    err->has_actual_version = 1;
    err->actual_version = last;
  }
  return rc;
}

/* What step 1 found for one append's ids. */
typedef struct id_scan {
  size_t first_stored;     /* index of the first stored id; event_count if none */
  bool exact;              /* all ids stored, as exactly one batch of this stream */
  es_stored_event_t first; /* what is stored under ids[0] (when exact) */
  es_stored_event_t last;  /* what is stored under the last id (when exact) */
} id_scan_t;

/* Looks the ids of req up, in request order, and stops as soon as the answer
 * is known (a stored id that cannot be part of an exact retry). */
static void scan_ids(const es_append_req_t *req, const es_append_view_t *view, id_scan_t *sc) {
  size_t n = req->event_count;
  bool candidate = true; /* every id so far sits where the batch needs it */
  memset(sc, 0, sizeof *sc);
  sc->first_stored = n;
  if (!view->lookup) return;
  for (size_t i = 0; i < n; i++) {
    es_stored_event_t r;
    memset(&r, 0, sizeof r);
    bool found = view->lookup(view->ctx, i, &r);
    if (found && sc->first_stored == n) sc->first_stored = i;
    if (candidate) {
      if (i == 0) sc->first = r;
      candidate = found && sc->first_stored == 0 && r.stream_id &&
                  strcmp(r.stream_id, req->stream_id) == 0 &&
                  r.stream_version == sc->first.stream_version + i && r.batch_first == (i == 0) &&
                  (i + 1 < n || r.batch_last);
      if (candidate) sc->last = r;
    }
    if (!candidate && sc->first_stored != n) break; /* ES_EEXIST, whatever follows */
  }
  sc->exact = candidate && sc->first_stored == 0;
}

static void stored_result(const id_scan_t *sc, size_t n, es_append_result_t *out) {
  out->first_version = sc->first.stream_version;
  out->last_version = sc->first.stream_version + n - 1;
  out->first_position = sc->first.global_position;
  out->last_position = sc->first.global_position + n - 1;
  out->recorded_at_unix_ms = sc->first.recorded_at_unix_ms;
  out->duplicate = !sc->first.own_attempt;
}

/* The id reported for a reuse: the first stored one in request order, or
 * the first of the request when every id is stored but as another request. */
static int reused(const es_append_req_t *req, const id_scan_t *sc, es_err_t *err) {
  size_t i = sc->first_stored < req->event_count ? sc->first_stored : 0;
  char text[ES_UUID_STR_LEN + 1];
  es_uuid_format(req->events[i].id, text);
  return es_err_set(err, ES_EEXIST, "events[%zu].event_id: %s already exists", i, text);
}

/* The condition, last (Extension 1). */
static int check_condition(const es_append_condition_t *cond, const es_condition_view_t *cv,
                           es_err_t *err) {
  if (cond == NULL) return ES_OK;
  if (cv == NULL || cv->match == NULL)
    return es_err_set(err, ES_EUNSUPPORTED, "condition: not supported by this backend");
  uint64_t pos = 0;
  if (!cv->match(cv->ctx, cond, &pos)) return ES_OK;
  int rc = es_err_set(err, ES_ECONDITION,
                      "condition: the event at global position %llu matches "
                      "fail_if_events_match and was committed after %llu",
                      (unsigned long long)pos, (unsigned long long)cond->after);
  if (err) {
    err->has_condition_position = 1;
    err->condition_position = pos;
  }
  return rc;
}

/* Stream type, then expected version, of req against a stream whose last
 * version is `last` and whose type is `have`. */
static int check_stream(const es_append_req_t *req, uint64_t last, const char *have,
                        es_err_t *err) {
  const char *want = req->stream_type ? req->stream_type : "";
  if (have == NULL) have = "";
  if (last > 0 && want[0] != '\0' && have[0] != '\0' && strcmp(have, want) != 0)
    return es_err_set(err, ES_ETYPE, "stream_type: stream '%s' has type '%s', not '%s'",
                      req->stream_id, have, want);
  return check_expected(req, last, err);
}

int es_append_decide(const es_append_req_t *req, const es_append_view_t *view,
                     es_append_decision_t *decision, es_append_result_t *out, es_err_t *err) {
  return es_append_decide_conditional(req, view, NULL, decision, out, err);
}

int es_append_decide_conditional(const es_append_req_t *req, const es_append_view_t *view,
                                 const es_condition_view_t *cond, es_append_decision_t *decision,
                                 es_append_result_t *out, es_err_t *err) {
  memset(out, 0, sizeof *out);
  *decision = ES_APPEND_WRITE;
  if (req->event_count == 0 || !req->stream_id || req->stream_id[0] == '\0')
    return es_err_set(err, ES_EINVAL, "append: no events or no stream_id (request not prepared)");

  /* 1. Idempotency: a duplicate of a whole committed request only. */
  id_scan_t sc;
  scan_ids(req, view, &sc);
  int rc;
  if (sc.first_stored < req->event_count) {
    if (sc.exact && !sc.first.joined_prev && !sc.last.joined_next) {
      stored_result(&sc, req->event_count, out);
      *decision = ES_APPEND_STORED;
      return ES_OK;
    }
    rc = reused(req, &sc, err);
    goto fail;
  }

  /* 2, 3. Stream type, expected version; 4. the condition. */
  rc = check_stream(req, view->last_version, view->stream_type, err);
  if (rc) goto fail;
  rc = check_condition(req->condition, cond, err);
  if (rc) goto fail;
  out->first_version = view->last_version + 1;
  out->last_version = view->last_version + req->event_count;
  return ES_OK;

fail:
  memset(out, 0, sizeof *out);
  return rc;
}

static int at_append(es_err_t *err, int rc, size_t i) {
  if (err) {
    err->has_append_index = 1;
    err->append_index = i;
  }
  return rc;
}

int es_append_many_decide(const es_append_many_req_t *req, const es_append_many_view_t *view,
                          es_append_decision_t *decision, es_append_result_t *results,
                          es_err_t *err) {
  size_t n = req->append_count;
  *decision = ES_APPEND_WRITE;
  if (n) memset(results, 0, n * sizeof *results);
  if (n == 0 || req->appends == NULL)
    return es_err_set(err, ES_EINVAL, "appends: none (request not prepared)");
  for (size_t i = 0; i < n; i++) {
    const es_append_req_t *a = &req->appends[i];
    if (a->event_count == 0 || !a->stream_id || a->stream_id[0] == '\0')
      return es_err_set(err, ES_EINVAL,
                        "appends[%zu]: no events or no stream_id (request not prepared)", i);
  }
  int rc;

  /* 1. Idempotency of the whole request (settled detail 2): every append an
   * exact batch, the batches one committed request — consecutive positions,
   * linked by joined_prev / joined_next and by nothing outside them. A
   * request with no stored id is new; anything else is ES_EEXIST at the
   * first append that reuses an id. */
  size_t first_reuse = n; /* the first append with a stored id */
  bool whole = true;      /* so far, the appends are one stored request */
  uint64_t prev_last = 0; /* last position of the previous append's batch */
  for (size_t i = 0; i < n; i++) {
    const es_append_req_t *a = &req->appends[i];
    id_scan_t sc;
    scan_ids(a, &view->appends[i], &sc);
    bool any = sc.first_stored < a->event_count;
    if (any && first_reuse == n) first_reuse = i;
    if (!any) {
      whole = false;
    } else if (whole) {
      whole = sc.exact && sc.first.joined_prev == (i > 0) && sc.last.joined_next == (i + 1 < n) &&
              (i == 0 || sc.first.global_position == prev_last + 1);
      if (whole) {
        stored_result(&sc, a->event_count, &results[i]);
        prev_last = results[i].last_position;
      }
    }
    if (first_reuse != n && !whole) {
      /* Known now: not a retry. Name the first append that reuses an id. */
      const es_append_req_t *r = &req->appends[first_reuse];
      if (first_reuse != i) scan_ids(r, &view->appends[first_reuse], &sc);
      rc = at_append(err, reused(r, &sc, err), first_reuse);
      goto fail;
    }
  }
  if (first_reuse != n) { /* every append stored, as this very request */
    *decision = ES_APPEND_STORED;
    return ES_OK;
  }

  /* 2. Per append, its stream as the earlier appends leave it (settled
   * details 1 and 3): the last version and the type that sticks. */
  for (size_t i = 0; i < n; i++) {
    const es_append_req_t *a = &req->appends[i];
    uint64_t last = view->appends[i].last_version;
    const char *type = view->appends[i].stream_type ? view->appends[i].stream_type : "";
    for (size_t k = 0; k < i; k++) {
      const es_append_req_t *b = &req->appends[k];
      if (strcmp(b->stream_id, a->stream_id) != 0) continue;
      last = results[k].last_version;
      if (type[0] == '\0' && b->stream_type) type = b->stream_type;
    }
    rc = check_stream(a, last, type, err);
    if (rc) {
      rc = at_append(err, rc, i);
      goto fail;
    }
    results[i].first_version = last + 1;
    results[i].last_version = last + a->event_count;
  }

  /* 3. The condition, once, over the log before the request. */
  rc = check_condition(req->condition, &view->condition, err);
  if (rc) goto fail;
  return ES_OK;

fail:
  memset(results, 0, n * sizeof *results);
  return rc;
}
