/*
 * The subscription engine: a cursor over the global log.
 *
 * A subscription owns at most one page of the log, read FORWARD from its
 * cursor with its filter, and hands it out one item at a time. When the page
 * is used up it reads the next one from the cursor; when a read reports the
 * end, it hands out CaughtUp (the first time only) and then ES_EAGAIN until
 * the caller has waited for the log to grow (notifier.h). Replay and live
 * delivery are this one loop, so there is no switch-over at which an event
 * could be skipped or seen twice, and a slow consumer costs one page of
 * memory however far behind it is.
 *
 * State and invariants (positions are gap-free, API.md details 3):
 *   - cursor: the next position to ask the backend for. Every position below
 *     it has been read into the current page or handed out before. It moves
 *     only when a read succeeds, so a failed read can simply be retried.
 *   - scanned: the last position the current page examined (its next - 1).
 *   - reset: the last match or checkpoint handed out (the subscription's
 *     start - 1 at first). The non-matching events since then are exactly
 *     the positions strictly between reset and the next match (or up to
 *     scanned when the page holds no more matches): counting is arithmetic.
 *   - position: everything at or below it has been handed out or skipped by
 *     the filter; it never goes back.
 *
 * Checkpoints (filtered subscriptions only, API.md details 7): before handing
 * out a match at m, while m - reset - 1 >= interval, hand out
 * Checkpoint(reset + interval) and move reset there; at the end of a page,
 * the same with scanned - reset. So the checkpoint names the event whose scan
 * made the count reach the interval, and the count restarts after it.
 *
 * Checkpoints at the head (docs/api.md, "Checkpoints"): when the page that
 * reached the head (is_end) is used up and scanned > reset — non-matching
 * events were scanned since the last match or checkpoint — hand out
 * Checkpoint(scanned), the head that read reached, and move reset there,
 * before CaughtUp on the first arrival and before ES_EAGAIN always. Without
 * it a consumer of a rare event type would keep a resume point up to
 * interval - 1 events behind the head of an idle log, and rescan them all
 * after a restart. Consequences the tests hold it to: none after a scan that
 * ended with a match (reset == scanned), none twice for one position (reset
 * moves to it), none from a read that found nothing new, at most one per
 * arrival at the head (so one per wake-up on a busy log), and the count
 * restarts after it like after any checkpoint. CaughtUp comes after it
 * because it belongs to the scan that CaughtUp closes: whatever the replay
 * hands out precedes CaughtUp, so a consumer that acts on CaughtUp has its
 * resume point at the head already. An interval of 0 (a server configured
 * so) means no checkpoints at all, at the head neither.
 *
 * A subscription is used by one thread at a time; the backend it reads is
 * shared and thread-safe.
 */
#include "es/subscription.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* CaughtUp and the page source (es_sub_opts_t.read): a source other than
 * the backend may know a head that lags the backend's (the server's live
 * window fills after the commit). CaughtUp is handed out only from a page the
 * backend itself answered (read_page's `confirm`); after it, the source's end
 * only means "wait", which is safe because the source wakes its waiters when
 * it grows. */

/* Page size of one read. Smaller than the ReadAll maximum: a subscriber
 * hands events out one by one, and a smaller page keeps memory per
 * subscription low while costing little in reads. */
#define SUB_PAGE_EVENTS 256

struct es_sub {
  es_backend_t *backend; /* borrowed; outlives the subscription */
  es_sub_read_fn read;   /* NULL = es_backend_read_all(backend) */
  void *read_ctx;
  es_limits_t limits;   /* copied at open */
  es_filter_t filter;   /* deep copy; its strings live in filter_mem */
  void *filter_mem;     /* one allocation: pointer array, then strings */
  bool filtered;        /* es_filter_active(&filter) */
  uint64_t interval;    /* checkpoint interval; 0 = none */
  uint64_t cursor;      /* next position to read */
  uint64_t scanned;     /* last position examined by the current page */
  uint64_t reset;       /* last match or checkpoint handed out */
  uint64_t position;    /* es_sub_position() */
  es_page_t page;       /* the current page (valid when has_page) */
  bool has_page;        /* page holds a read not yet used up */
  size_t idx;           /* next event of the page to hand out */
  bool caught_up_sent;  /* CaughtUp is handed out once */
  bool caught_up_first; /* from_end: hand out CaughtUp(open_head) before anything */
  uint64_t open_head;   /* from_end: the head read at open */
  bool confirm;         /* the next read goes to the backend (see read_page) */
};

/* Deep-copies f into s->filter, so that the caller's strings may go away
 * after es_sub_open(). One allocation: the query items, then every pointer
 * array (types, then per item its types and tags), then the strings. */
static size_t strings_bytes(const char *const *v, size_t n) {
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) bytes += strlen(v[i] ? v[i] : "") + 1;
  return bytes;
}

/* Copies v[0..n) into the pointer slots at *slots and the bytes at *text,
 * advancing both. */
static const char *const *copy_strings(const char *const *v, size_t n, char ***slots, char **text) {
  char **out = *slots;
  for (size_t i = 0; i < n; i++) {
    const char *src = v[i] ? v[i] : "";
    size_t len = strlen(src) + 1;
    memcpy(*text, src, len);
    out[i] = *text;
    *text += len;
  }
  *slots += n;
  return (const char *const *)out;
}

static int copy_filter(es_sub_t *s, const es_filter_t *f) {
  const char *prefix = f->stream_prefix != NULL ? f->stream_prefix : "";
  size_t n_items = f->items != NULL ? f->item_count : 0;
  size_t n_ptrs = f->event_type_count;
  size_t text = strlen(prefix) + 1 + strings_bytes(f->event_types, f->event_type_count);
  for (size_t i = 0; i < n_items; i++) {
    n_ptrs += f->items[i].event_type_count + f->items[i].tag_count;
    text += strings_bytes(f->items[i].event_types, f->items[i].event_type_count);
    text += strings_bytes(f->items[i].tags, f->items[i].tag_count);
  }
  es_query_item_t *items = malloc(n_items * sizeof *items + n_ptrs * sizeof(char *) + text);
  if (items == NULL) return ES_ENOMEM;
  char **slots = (char **)(items + n_items);
  char *p = (char *)(slots + n_ptrs);
  s->filter_mem = items;
  s->filter.event_types = copy_strings(f->event_types, f->event_type_count, &slots, &p);
  s->filter.event_type_count = f->event_type_count;
  for (size_t i = 0; i < n_items; i++) {
    const es_query_item_t *it = &f->items[i];
    items[i].event_types = copy_strings(it->event_types, it->event_type_count, &slots, &p);
    items[i].event_type_count = it->event_type_count;
    items[i].tags = copy_strings(it->tags, it->tag_count, &slots, &p);
    items[i].tag_count = it->tag_count;
  }
  s->filter.items = n_items ? items : NULL;
  s->filter.item_count = n_items;
  memcpy(p, prefix, strlen(prefix) + 1);
  s->filter.stream_prefix = p;
  return ES_OK;
}

int es_sub_open(es_backend_t *b, const es_limits_t *limits, const es_sub_opts_t *opts,
                es_sub_t **out, es_err_t *err) {
  assert(b != NULL && limits != NULL && opts != NULL && out != NULL);
  *out = NULL;
  es_sub_t *s = NULL;
  int rc = es_filter_validate(limits, &opts->filter, "filter", err);
  if (rc == ES_OK) rc = es_backend_check_filter(b, &opts->filter, "filter.items", err);
  if (rc != ES_OK) goto fail;

  s = calloc(1, sizeof *s);
  if (s == NULL) {
    rc = es_err_set(err, ES_ENOMEM, "subscription: out of memory");
    goto fail;
  }
  s->backend = b;
  s->read = opts->read;
  s->read_ctx = opts->read_ctx;
  s->limits = *limits;
  rc = copy_filter(s, &opts->filter);
  if (rc != ES_OK) {
    es_err_set(err, rc, "subscription: out of memory copying the filter");
    goto fail;
  }
  s->filtered = es_filter_active(&s->filter);
  s->interval = opts->checkpoint_interval != 0 ? opts->checkpoint_interval
                                               : limits->default_checkpoint_interval;

  uint64_t start = opts->from_position != 0 ? opts->from_position : 1;
  if (opts->from_end) {
    uint64_t head;
    rc = es_backend_head(b, &head, err);
    if (rc != ES_OK) goto fail;
    start = head + 1;
    /* Nothing to replay: CaughtUp comes at once (API.md), before any event
     * committed after the subscription started. */
    s->caught_up_first = true;
    s->open_head = head;
  }
  s->cursor = start;
  s->scanned = start - 1;
  s->reset = start - 1;
  s->position = start - 1;
  *out = s;
  return ES_OK;

fail:
  es_sub_close(s);
  return rc;
}

void es_sub_close(es_sub_t *s) {
  if (s == NULL) return;
  if (s->has_page) es_page_free(&s->page);
  free(s->filter_mem);
  free(s);
}

uint64_t es_sub_position(const es_sub_t *s) {
  return s->position;
}

uint64_t es_sub_cursor(const es_sub_t *s) {
  return s->cursor;
}

/* True when the non-matching events up to `upto` reach the interval. */
static bool checkpoint_due(const es_sub_t *s, uint64_t upto) {
  return s->filtered && s->interval != 0 && upto > s->reset && upto - s->reset >= s->interval;
}

/* True when the used-up page reached the head with non-matching events
 * scanned since the last match or checkpoint. The page must be held. */
static bool head_checkpoint_due(const es_sub_t *s) {
  return s->filtered && s->interval != 0 && s->page.is_end && s->scanned > s->reset;
}

/* Hands out Checkpoint(at) and restarts the count there. */
static void hand_out_checkpoint(es_sub_t *s, uint64_t at, es_sub_item_t *item) {
  s->reset = at;
  if (s->reset > s->position) s->position = s->reset;
  item->kind = ES_SUB_CHECKPOINT;
  item->event = NULL;
  item->encoded = NULL;
  item->position = s->reset;
}

bool es_sub_has_buffered(const es_sub_t *s) {
  if (s->caught_up_first) return true;
  if (!s->has_page) return false;
  if (s->idx < s->page.count) return true;
  if (checkpoint_due(s, s->scanned)) return true;
  if (head_checkpoint_due(s)) return true;
  return s->page.is_end && !s->caught_up_sent;
}

/* Reads the page at the cursor. On failure nothing changes. The backend's
 * answer is checked against the contract that the no-skip, no-duplicate
 * promise rests on (increasing positions from the cursor, progress); a
 * violation is a backend bug and fails loudly rather than silently. */
static int read_page(es_sub_t *s, es_err_t *err) {
  es_read_all_req_t req;
  memset(&req, 0, sizeof req);
  req.from_position = s->cursor;
  req.max_count =
      s->limits.max_page_events < SUB_PAGE_EVENTS ? s->limits.max_page_events : SUB_PAGE_EVENTS;
  if (req.max_count == 0) req.max_count = 1;
  req.direction = ES_FORWARD;
  req.filter = s->filter;
  req.max_bytes = s->limits.max_page_bytes;
  req.max_scan = s->limits.max_scan != 0 ? s->limits.max_scan : 1;

  es_page_t page;
  bool direct = s->read == NULL || s->confirm;
  int rc = direct ? es_backend_read_all(s->backend, &req, &page, err)
                  : s->read(s->read_ctx, &req, &page, err);
  if (rc != ES_OK) goto fail;
  if (!direct && page.is_end && !s->caught_up_sent) {
    /* Only the backend knows its head. Another source (the live window)
     * may lag it, and CaughtUp promises the replay reached the head: what
     * was committed before the subscription started comes before it. So
     * the first arrival at a source's end is confirmed by reading on from
     * the backend; an empty end page is dropped at once. */
    if (page.count == 0) {
      es_page_free(&page);
      rc = es_backend_read_all(s->backend, &req, &page, err);
      if (rc != ES_OK) goto fail;
    } else {
      page.is_end = false;
      s->confirm = true;
    }
  } else {
    s->confirm = false;
  }

  uint64_t prev = s->cursor - 1;
  for (size_t i = 0; i < page.count; i++) {
    uint64_t pos = page.events[i].global_position;
    if (pos <= prev) {
      rc = es_err_set(err, ES_EINTERNAL,
                      "subscription: backend returned position %llu after %llu (cursor %llu)",
                      (unsigned long long)pos, (unsigned long long)prev,
                      (unsigned long long)s->cursor);
      goto fail;
    }
    prev = pos;
  }
  /* FORWARD from beyond the head may answer next = head + 1: never go back,
   * or events below the requested start would be handed out. */
  uint64_t next = page.next > s->cursor ? page.next : s->cursor;
  if (next <= prev || (page.count == 0 && !page.is_end && next == s->cursor)) {
    rc = es_err_set(err, ES_EINTERNAL,
                    "subscription: backend page from %llu made no progress (next %llu)",
                    (unsigned long long)s->cursor, (unsigned long long)page.next);
    goto fail;
  }

  s->page = page;
  s->has_page = true;
  s->idx = 0;
  s->cursor = next;
  s->scanned = next - 1;
  return ES_OK;

fail:
  es_page_free(&page);
  return rc;
}

int es_sub_next(es_sub_t *s, es_sub_item_t *item, es_err_t *err) {
  assert(s != NULL && item != NULL);
  if (s->caught_up_first) {
    s->caught_up_first = false;
    s->caught_up_sent = true;
    item->kind = ES_SUB_CAUGHT_UP;
    item->event = NULL;
    item->encoded = NULL;
    item->position = s->open_head;
    return ES_OK;
  }
  for (;;) {
    if (!s->has_page) {
      int rc = read_page(s, err);
      if (rc != ES_OK) return rc;
    }

    if (s->idx < s->page.count) {
      const es_recorded_t *ev = &s->page.events[s->idx];
      uint64_t m = ev->global_position;
      if (checkpoint_due(s, m - 1)) {
        hand_out_checkpoint(s, s->reset + s->interval, item);
        return ES_OK;
      }
      s->idx++;
      s->reset = m;
      s->position = m;
      item->kind = ES_SUB_EVENT;
      item->event = ev;
      item->encoded = s->page.encoded != NULL ? s->page.encoded[s->idx - 1] : NULL;
      item->position = m;
      return ES_OK;
    }

    /* The page's events are out; what it scanned beyond them counts too. */
    if (checkpoint_due(s, s->scanned)) {
      hand_out_checkpoint(s, s->reset + s->interval, item);
      return ES_OK;
    }
    if (head_checkpoint_due(s)) {
      hand_out_checkpoint(s, s->scanned, item);
      return ES_OK;
    }
    if (s->scanned > s->position) s->position = s->scanned;
    bool end = s->page.is_end;
    uint64_t head = s->page.last;
    es_page_free(&s->page);
    s->has_page = false;
    if (!end) continue; /* more to replay: read on */
    if (!s->caught_up_sent) {
      s->caught_up_sent = true;
      item->kind = ES_SUB_CAUGHT_UP;
      item->event = NULL;
      item->encoded = NULL;
      item->position = head;
      return ES_OK;
    }
    return es_err_set(err, ES_EAGAIN, "subscription: at the head (position %llu)",
                      (unsigned long long)s->position);
  }
}
