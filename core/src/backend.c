/*
 * The es_backend_*() wrappers: the one door into a backend's method table.
 *
 * Callers never touch b->methods themselves, so this file is the single place
 * for argument checks (and, later, tracing or fault injection), as SQLite's
 * sqlite3OsWrite() is for its VFS. The wrappers also make two promises that
 * every caller would otherwise have to make for itself: out-params start
 * zeroed (so es_page_free() on a failed read is always safe) and err starts
 * clear (so a success never carries a stale message).
 */
#include "es/backend.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

void es_backend_close(es_backend_t *b) {
  if (b == NULL) return;
  assert(b->methods != NULL && b->methods->close != NULL);
  b->methods->close(b);
}

int es_backend_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                      es_err_t *err) {
  assert(b != NULL && b->methods != NULL && req != NULL && out != NULL);
  memset(out, 0, sizeof *out);
  es_err_clear(err);
  return b->methods->append(b, req, out, err);
}

int es_backend_read_stream(es_backend_t *b, const es_read_stream_req_t *req, es_page_t *out,
                           es_err_t *err) {
  assert(b != NULL && b->methods != NULL && req != NULL && out != NULL);
  memset(out, 0, sizeof *out);
  es_err_clear(err);
  return b->methods->read_stream(b, req, out, err);
}

int es_backend_read_all(es_backend_t *b, const es_read_all_req_t *req, es_page_t *out,
                        es_err_t *err) {
  assert(b != NULL && b->methods != NULL && req != NULL && out != NULL);
  memset(out, 0, sizeof *out);
  es_err_clear(err);
  return b->methods->read_all(b, req, out, err);
}

int es_backend_head(es_backend_t *b, uint64_t *out, es_err_t *err) {
  assert(b != NULL && b->methods != NULL && out != NULL);
  *out = 0;
  es_err_clear(err);
  return b->methods->head(b, out, err);
}

int es_backend_is_blocking(const es_backend_t *b) {
  assert(b != NULL && b->methods != NULL);
  return b->methods->blocking;
}

const char *es_backend_name(const es_backend_t *b) {
  assert(b != NULL && b->methods != NULL);
  return b->methods->name;
}

void es_backend_set_notifier(es_backend_t *b, es_notifier_t *n) {
  assert(b != NULL);
  b->notifier = n;
}

void es__backend_publish(es_backend_t *b, uint64_t head) {
  assert(b != NULL);
  if (b->notifier != NULL) es_notifier_publish(b->notifier, head);
}

size_t es_backend_stats(es_backend_t *b, es_backend_stat_t *out, size_t max) {
  assert(b != NULL && (out != NULL || max == 0));
  if (!b->methods->stats) return 0;
  size_t n = b->methods->stats(b, out, max);
  return n < max ? n : max;
}

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

int es_backend_check_expected(const es_append_req_t *req, uint64_t last, es_err_t *err) {
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
