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

/* Step 1. ES_OK with *stored set: the request is a committed batch (out
 * filled); with *stored clear: no id of it is stored. Else ES_EEXIST. */
static int check_ids(const es_append_req_t *req, const es_append_view_t *view, bool *stored,
                     es_append_result_t *out, es_err_t *err) {
  size_t n = req->event_count;
  size_t first_stored = n; /* index of the first stored id */
  es_stored_event_t first; /* what is stored under ids[0], while a retry is possible */
  bool candidate = true;   /* every id so far sits where the batch needs it */
  *stored = false;
  if (!view->lookup) return ES_OK;
  memset(&first, 0, sizeof first);
  for (size_t i = 0; i < n; i++) {
    es_stored_event_t r;
    memset(&r, 0, sizeof r);
    bool found = view->lookup(view->ctx, i, &r);
    if (found && first_stored == n) first_stored = i;
    if (candidate) {
      if (i == 0) first = r;
      candidate = found && first_stored == 0 && r.stream_id &&
                  strcmp(r.stream_id, req->stream_id) == 0 &&
                  r.stream_version == first.stream_version + i && r.batch_first == (i == 0) &&
                  (i + 1 < n || r.batch_last);
    }
    if (!candidate && first_stored != n) break; /* ES_EEXIST, whatever follows */
  }
  if (first_stored == n) return ES_OK;
  if (candidate) {
    out->first_version = first.stream_version;
    out->last_version = first.stream_version + n - 1;
    out->first_position = first.global_position;
    out->last_position = first.global_position + n - 1;
    out->recorded_at_unix_ms = first.recorded_at_unix_ms;
    out->duplicate = !first.own_attempt;
    *stored = true;
    return ES_OK;
  }
  char text[ES_UUID_STR_LEN + 1];
  es_uuid_format(req->events[first_stored].id, text);
  return es_err_set(err, ES_EEXIST, "events[%zu].event_id: %s already exists", first_stored, text);
}

int es_append_decide(const es_append_req_t *req, const es_append_view_t *view,
                     es_append_decision_t *decision, es_append_result_t *out, es_err_t *err) {
  memset(out, 0, sizeof *out);
  *decision = ES_APPEND_WRITE;
  if (req->event_count == 0 || !req->stream_id || req->stream_id[0] == '\0')
    return es_err_set(err, ES_EINVAL, "append: no events or no stream_id (request not prepared)");

  bool stored;
  int rc = check_ids(req, view, &stored, out, err);
  if (rc) goto fail;
  if (stored) {
    *decision = ES_APPEND_STORED;
    return ES_OK;
  }

  const char *have = view->stream_type ? view->stream_type : "";
  const char *want = req->stream_type ? req->stream_type : "";
  if (view->last_version > 0 && want[0] != '\0' && have[0] != '\0' && strcmp(have, want) != 0) {
    rc = es_err_set(err, ES_ETYPE, "stream_type: stream '%s' has type '%s', not '%s'",
                    req->stream_id, have, want);
    goto fail;
  }

  rc = check_expected(req, view->last_version, err);
  if (rc) goto fail;
  out->first_version = view->last_version + 1;
  out->last_version = view->last_version + req->event_count;
  return ES_OK;

fail:
  memset(out, 0, sizeof *out);
  return rc;
}
