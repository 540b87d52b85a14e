/*
 * The es_backend_*() wrappers: the one door into a backend's method table.
 *
 * Callers never touch b->methods themselves, so this file is the single place
 * for argument checks (and, later, tracing or fault injection), as SQLite's
 * sqlite3OsWrite() is for its VFS. The wrappers also make two promises that
 * every caller would otherwise have to make for itself: out-params start
 * zeroed (so es_page_free() on a failed read is always safe) and err starts
 * clear (so a success never carries a stale message). They also refuse the
 * requests that the core prepare functions (validate.h) never let through —
 * an append without events or stream, a read of 0 events or in an unknown
 * direction — so that no backend repeats those checks. And they hold the
 * capability check of Extension 1 (backend.h): a request that needs tags,
 * query items, a condition or AppendMany reaches only a backend that has
 * declared it; any other gets ES_EUNSUPPORTED naming the feature and the
 * backend, and a page of a backend without tags gets its tag fields cleared.
 */
#include "es/backend.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "es/backend_impl.h"

void es_backend_close(es_backend_t *b) {
  if (b == NULL) return;
  assert(b->methods != NULL && b->methods->close != NULL);
  b->methods->close(b);
}

/* A condition (of an append or of a whole AppendMany) on a backend that
 * cannot check one. `field` prefixes the name ("" or "appends[3]."). */
static int check_condition(const es_backend_t *b, const es_append_condition_t *condition,
                           const char *field, es_err_t *err) {
  if (condition == NULL || (b->methods->features & ES_BACKEND_CONDITION)) return ES_OK;
  return es_err_set(err, ES_EUNSUPPORTED,
                    "%scondition: append conditions are not supported by the %s backend", field,
                    b->methods->name);
}

/* Extension 1 as a capability (backend.h): what req needs that b lacks.
 * `field` prefixes the names ("" or "appends[3]."). */
static int check_append_features(const es_backend_t *b, const es_append_req_t *req,
                                 const char *field, es_err_t *err) {
  unsigned have = b->methods->features;
  if (!(have & ES_BACKEND_TAGS)) {
    for (size_t i = 0; i < req->event_count; i++)
      if (req->events[i].tag_count > 0)
        return es_err_set(err, ES_EUNSUPPORTED,
                          "%sevents[%zu].tags: tags are not supported by the %s backend", field, i,
                          b->methods->name);
  }
  return check_condition(b, req->condition, field, err);
}

static bool append_prepared(const es_append_req_t *req) {
  return req->event_count > 0 && req->events != NULL && req->stream_id != NULL &&
         req->stream_id[0] != '\0';
}

/* What every append is checked for before its backend sees it. */
static int check_append(const es_backend_t *b, const es_append_req_t *req, es_err_t *err) {
  if (!append_prepared(req))
    return es_err_set(err, ES_EINVAL, "append: no events or no stream_id (request not prepared)");
  return check_append_features(b, req, "", err);
}

int es_backend_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                      es_err_t *err) {
  assert(b != NULL && b->methods != NULL && req != NULL && out != NULL);
  memset(out, 0, sizeof *out);
  es_err_clear(err);
  int rc = check_append(b, req, err);
  return rc ? rc : b->methods->append(b, req, out, err);
}

void es_backend_append_async(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                             es_err_t *err, es_append_done_fn done, void *arg) {
  assert(b != NULL && b->methods != NULL && req != NULL && out != NULL && err != NULL);
  assert(done != NULL);
  if (b->methods->append_async == NULL) {
    done(arg, es_backend_append(b, req, out, err));
    return;
  }
  memset(out, 0, sizeof *out);
  es_err_clear(err);
  int rc = check_append(b, req, err);
  if (rc) {
    done(arg, rc);
    return;
  }
  b->methods->append_async(b, req, out, err, done, arg);
}

int es_backend_has_append_async(const es_backend_t *b) {
  assert(b != NULL && b->methods != NULL);
  return b->methods->append_async != NULL;
}

/* What every AppendMany is checked for before its backend sees it. */
static int check_append_many(const es_backend_t *b, const es_append_many_req_t *req,
                             es_err_t *err) {
  if (req->append_count == 0 || req->appends == NULL)
    return es_err_set(err, ES_EINVAL, "appends: none (request not prepared)");
  if (b->methods->append_many == NULL)
    return es_err_set(err, ES_EUNSUPPORTED, "AppendMany: not supported by the %s backend",
                      b->methods->name);
  for (size_t i = 0; i < req->append_count; i++) {
    const es_append_req_t *a = &req->appends[i];
    if (!append_prepared(a) || a->condition != NULL)
      return es_err_set(err, ES_EINVAL,
                        "appends[%zu]: no events, no stream_id or a condition of its own "
                        "(request not prepared)",
                        i);
    char field[40];
    snprintf(field, sizeof field, "appends[%zu].", i);
    int rc = check_append_features(b, a, field, err);
    if (rc) return rc;
  }
  return check_condition(b, req->condition, "", err);
}

int es_backend_append_many(es_backend_t *b, const es_append_many_req_t *req,
                           es_append_result_t *results, es_err_t *err) {
  assert(b != NULL && b->methods != NULL && req != NULL);
  assert(results != NULL || req->append_count == 0);
  if (req->append_count) memset(results, 0, req->append_count * sizeof *results);
  es_err_clear(err);
  int rc = check_append_many(b, req, err);
  if (rc) return rc;
  rc = b->methods->append_many(b, req, results, err);
  if (rc && req->append_count) memset(results, 0, req->append_count * sizeof *results);
  return rc;
}

void es_backend_append_many_async(es_backend_t *b, const es_append_many_req_t *req,
                                  es_append_result_t *results, es_err_t *err,
                                  es_append_done_fn done, void *arg) {
  assert(b != NULL && b->methods != NULL && req != NULL && err != NULL && done != NULL);
  assert(results != NULL || req->append_count == 0);
  if (b->methods->append_many_async == NULL) {
    done(arg, es_backend_append_many(b, req, results, err));
    return;
  }
  if (req->append_count) memset(results, 0, req->append_count * sizeof *results);
  es_err_clear(err);
  int rc = check_append_many(b, req, err);
  if (rc) {
    done(arg, rc);
    return;
  }
  b->methods->append_many_async(b, req, results, err, done, arg);
}

int es_backend_has_append_many_async(const es_backend_t *b) {
  assert(b != NULL && b->methods != NULL);
  return b->methods->append_many_async != NULL;
}

int es_backend_check_filter(const es_backend_t *b, const es_filter_t *filter, const char *field,
                            es_err_t *err) {
  assert(b != NULL && b->methods != NULL);
  if (filter == NULL || filter->item_count == 0 || (b->methods->features & ES_BACKEND_QUERY))
    return ES_OK;
  return es_err_set(err, ES_EUNSUPPORTED,
                    "%s: queries by type and tag are not supported by the %s backend",
                    field ? field : "filter.items", b->methods->name);
}

/* The checks es_read_stream_prepare / es_read_all_prepare guarantee; a
 * caller that skipped them gets ES_EINVAL, not a backend's undefined reading. */
static int check_read(uint32_t max_count, int direction, es_err_t *err) {
  if (max_count == 0) return es_err_set(err, ES_EINVAL, "max_count: 0 (request not prepared)");
  if (direction != ES_FORWARD && direction != ES_BACKWARD)
    return es_err_set(err, ES_EINVAL, "direction: unknown value %d", direction);
  return ES_OK;
}

/* A backend without tags may leave the tag fields of its events unset
 * (es_recorded_tags_size): every reader above gets them cleared. */
static int clear_tags(const es_backend_t *b, int rc, es_page_t *page) {
  if (rc == ES_OK && !(b->methods->features & ES_BACKEND_TAGS)) {
    for (size_t i = 0; i < page->count; i++) {
      page->events[i].tags = NULL;
      page->events[i].tag_count = 0;
    }
  }
  return rc;
}

int es_backend_read_stream(es_backend_t *b, const es_read_stream_req_t *req, es_page_t *out,
                           es_err_t *err) {
  assert(b != NULL && b->methods != NULL && req != NULL && out != NULL);
  memset(out, 0, sizeof *out);
  es_err_clear(err);
  int rc = check_read(req->max_count, req->direction, err);
  return rc ? rc : clear_tags(b, b->methods->read_stream(b, req, out, err), out);
}

int es_backend_read_all(es_backend_t *b, const es_read_all_req_t *req, es_page_t *out,
                        es_err_t *err) {
  assert(b != NULL && b->methods != NULL && req != NULL && out != NULL);
  memset(out, 0, sizeof *out);
  es_err_clear(err);
  int rc = check_read(req->max_count, req->direction, err);
  if (rc == ES_OK) rc = es_backend_check_filter(b, &req->filter, "filter.items", err);
  return rc ? rc : clear_tags(b, b->methods->read_all(b, req, out, err), out);
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

/* Entries of a page's first allocation; doubled as the page grows. */
#define PAGE_MIN_CAPACITY 16

void es_page_builder_start(es_page_builder_t *pb, es_page_t *page, size_t limit, size_t max_bytes) {
  assert(pb != NULL && page != NULL);
  pb->page = page;
  pb->cap = 0;
  pb->limit = limit ? limit : 1;
  pb->bytes = 0;
  pb->max_bytes = max_bytes;
}

es_recorded_t *es_page_builder_slot(es_page_builder_t *pb, int *rc) {
  es_page_t *page = pb->page;
  *rc = 0;
  if (page->count >= pb->limit) return NULL;
  if (page->count == pb->cap) {
    size_t cap = pb->cap ? pb->cap * 2 : PAGE_MIN_CAPACITY;
    if (cap > pb->limit) cap = pb->limit;
    es_recorded_t *ev = realloc(page->events, cap * sizeof *ev);
    if (!ev) {
      *rc = ES_ENOMEM;
      return NULL;
    }
    page->events = ev;
    pb->cap = cap;
  }
  es_recorded_t *v = &page->events[page->count];
  memset(v, 0, sizeof *v);
  return v;
}

int es_page_builder_take(es_page_builder_t *pb) {
  es_page_t *page = pb->page;
  const es_recorded_t *ev = &page->events[page->count];
  size_t size = es_recorded_size_bound(ev) + es_recorded_tags_size(ev);
  if (page->count > 0 && (size > pb->max_bytes || pb->bytes + size > pb->max_bytes)) return 0;
  pb->bytes += size;
  page->count++;
  return 1;
}

void es_page_end_walk(es_page_t *page, bool forward, bool stopped, uint64_t last, uint64_t from,
                      uint64_t head) {
  page->is_end = !stopped;
  if (forward) {
    page->next = stopped ? (last ? last + 1 : from) : head + 1;
    if (page->next > head + 1) page->next = head + 1;
  } else {
    page->next = stopped ? (last ? last - 1 : from) : 0;
  }
}
