/*
 * The live tail: one window of the newest events, encoded once, and the
 * wake-up path from a commit to the subscriptions.
 *
 * Why. A store's everyday load is a few writers and many live subscribers,
 * all of which send the same new events. Reading them from the backend and
 * encoding them once per subscriber (one SQL query per subscriber per commit
 * on PostgreSQL), on the thread that committed, made every writer pay for
 * every reader. Here a commit costs the writer one notifier publication that
 * wakes at most one thread; the events are read from the backend once per
 * server and encoded once, and a hundred sends of an event share its bytes.
 *
 * Shape.
 *   commit ──publish(head)──▶ log notifier ──(one waiter: the filler)──▶ filler thread
 *   filler: reads last+1.. from the backend in pages, encodes each event as
 *           the wire bytes of SubscribeResponse{event} (= one EventBatch
 *           element), appends them to the ring, evicts the oldest beyond
 *           max_events / max_bytes, then publishes `last` to the tail
 *           notifier, whose waiters are the parked subscriptions.
 *   subscription: reads pages through es_tail_read: from the ring when the
 *           ring holds its cursor, from the backend otherwise — the same
 *           cursor either way (core/subscription.c), so moving between the
 *           two in either direction can neither skip nor repeat an event.
 *
 * Invariants.
 *   1. The ring holds exactly the positions first..last, consecutive (global
 *      positions are gap-free), each event whole: `last` only grows, and it
 *      grows by one entry at a time under the write lock.
 *   2. The tail notifier's head never exceeds `last` while the window is
 *      valid, and `last` never exceeds what the backend has committed (the
 *      filler read it there). A subscription parked at position p is woken
 *      once the ring (or, without a ring, the backend) holds p + 1.
 *   3. A read from position p is answered from the ring only when
 *      first <= p <= last + 1 and the window is valid; p == last + 1 is the
 *      head as this server knows it (an empty page with is_end). Anything
 *      else goes to the backend. A page holds a reference to each entry it
 *      hands out, so eviction never frees bytes a send still uses.
 *   4. Wake-ups are coalesced: the filler is registered on the log notifier
 *      at most once, so any number of commits while it works cost one
 *      wake-up; a parked subscription is woken once however many events
 *      arrived, and then takes all of them (batched delivery, rpc_store.c).
 *   5. The window is valid only while the filler runs (some subscription is
 *      open, or closed less than IDLE_GRACE_S ago). When it stops, the ring
 *      is emptied; when it starts again, `last` jumps to the backend's head
 *      before any read may use the ring, so nothing committed meanwhile is
 *      ever answered as "no more events".
 *
 * Backends know nothing of this: they publish their head, as before.
 * Memory: the ring is bounded by max_events entries and max_bytes of
 * encodings; a subscription adds at most one page of references (its page is
 * bounded by count and bytes like a backend page), so a stopped or slow
 * reader keeps at most one page of evicted events alive.
 */
#include "tail.h"

#include <assert.h>
#include <errno.h>
#include <grpc/slice.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "es/error.h"
#include "eventstore/v1/eventstore.pb-c.h"
#include "log.h"

/* The filler keeps the window this long after the last subscription closed,
 * so that a subscriber that reconnects finds it warm. */
#define IDLE_GRACE_S 5
/* Backoff of the filler after a failed backend read. */
#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 2000
/* Events per backend read of the filler. */
#define FILL_PAGE_EVENTS 1000
/* Metadata entries encoded without a heap allocation. */
#define STACK_METADATA 16

/* One encoded event. One allocation: this header, the tag pointers, the
 * strings the filters look at (stream id, event type, tags), then the wire
 * bytes, which `wire` covers.
 *
 * Two reference counts guard it. `wire` is gRPC's slice, referenced by every
 * send in flight; when gRPC drops its last reference it gives back the one
 * entry reference the slice holds. `refs` counts that one plus one per holder
 * in this file (the ring, each page): a holder takes a slice reference and an
 * entry reference together and drops them together, slice first. The block
 * is freed when `refs` reaches 0. Only this counter decides the free, and it
 * is a C11 atomic in our own code, so the order of every access before it is
 * visible to ThreadSanitizer (gRPC's own counter, in an uninstrumented
 * library, is not). */
typedef struct entry {
  grpc_slice wire;  /* the slice; its gRPC reference count covers sends */
  atomic_uint refs; /* holders here + 1 while the slice lives */
  uint64_t position;
  const char *stream_id;
  const char *event_type;
  const char *const *tags; /* tag_count tags (Filter.items look at them) */
  size_t tag_count;
} entry_t;

static void entry_unref(entry_t *e) {
  if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) free(e);
}

/* gRPC's last reference to the slice is gone. */
static void entry_slice_gone(void *e) {
  entry_unref(e);
}

/* A holder takes both references... */
static void entry_hold(entry_t *e) {
  grpc_slice_ref(e->wire);
  atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

/* ...and drops both, the slice's first (e stays valid through it). */
static void entry_drop(entry_t *e) {
  grpc_slice_unref(e->wire);
  entry_unref(e);
}

/* The owner of a window page: one reference per event handed out. */
typedef struct window_page {
  size_t n;
  const void *enc[]; /* entry_t *, as es_page_t.encoded */
} window_page_t;

struct es_tail {
  es_backend_t *backend; /* borrowed */
  es_notifier_t *log;    /* borrowed: the backend publishes here */
  es_notifier_t *subs;   /* owned: subscriptions park here */
  es_limits_t limits;
  size_t max_events, max_bytes;

  /* The ring (rw: readers copy references, the filler appends and evicts). */
  pthread_rwlock_t rw;
  entry_t **ring; /* max_events slots; position p at p % max_events */
  bool valid;     /* invariant 5 */
  uint64_t first, last;
  size_t count, bytes;

  /* The filler's state (mu). */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  bool kick; /* the log grew, or a subscription attached */
  bool stop;
  long attached;      /* open subscriptions */
  time_t idle_since;  /* when attached last became 0 */
  es_waiter_t waiter; /* on `log`; registered only by the filler */
  bool fired;         /* the waiter's callback has run (set under mu) */
  bool registered;    /* the filler's own view: the waiter may be on `log` */

  _Atomic uint64_t filled_events, pages_window, pages_backend, fill_errors;
};

/* ---------------------------------------------------------------- encoding */

static size_t varint_len(size_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static size_t put_varint(uint8_t *p, size_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

/* Tag of field 1, length-delimited: SubscribeResponse.event and
 * EventBatch.events alike. */
#define FIELD1_LEN_TAG 0x0a

/* Packs ev as field 1 (tag, length, RecordedEvent) into the buffer that
 * alloc(ctx, size) returns; returns the bytes written, or 0 when alloc (or
 * the metadata arrays) failed. */
typedef uint8_t *(*wire_alloc_fn)(void *ctx, size_t size);

static size_t pack_wire(const es_recorded_t *ev, wire_alloc_fn alloc, void *ctx) {
  Eventstore__V1__RecordedEvent m;
  Eventstore__V1__RecordedEvent__MetadataEntry stack_entries[STACK_METADATA];
  Eventstore__V1__RecordedEvent__MetadataEntry *stack_ptrs[STACK_METADATA];
  Eventstore__V1__RecordedEvent__MetadataEntry *entries = stack_entries, **ptrs = stack_ptrs;
  size_t n = ev->metadata_count;
  if (n > STACK_METADATA) {
    entries = malloc(n * sizeof *entries);
    ptrs = malloc(n * sizeof *ptrs);
    if (!entries || !ptrs) {
      free(entries);
      free(ptrs);
      return 0;
    }
  }
  es_codec_recorded(ev, &m, n ? entries : NULL, n ? ptrs : NULL);
  size_t body = protobuf_c_message_get_packed_size(&m.base);
  size_t total = 1 + varint_len(body) + body;
  uint8_t *p = alloc(ctx, total);
  if (p) {
    size_t h = 0;
    p[h++] = FIELD1_LEN_TAG;
    h += put_varint(p + h, body);
    protobuf_c_message_pack(&m.base, p + h);
  }
  if (entries != stack_entries) {
    free(entries);
    free(ptrs);
  }
  return p ? total : 0;
}

static uint8_t *alloc_slice(void *ctx, size_t size) {
  grpc_slice *s = ctx;
  *s = grpc_slice_malloc(size);
  return GRPC_SLICE_START_PTR(*s);
}

bool es_tail_encode(const es_recorded_t *ev, grpc_slice *out) {
  /* grpc_slice_malloc aborts rather than failing; pack_wire's own metadata
   * arrays are the only allocation that may fail here. */
  return pack_wire(ev, alloc_slice, out) != 0;
}

/* A window entry: the header and strings first, the wire bytes after. */
typedef struct entry_alloc {
  const es_recorded_t *ev;
  entry_t *entry;
  uint8_t *wire;
} entry_alloc_t;

static uint8_t *alloc_entry(void *ctx, size_t size) {
  entry_alloc_t *a = ctx;
  const char *sid = a->ev->stream_id ? a->ev->stream_id : "";
  const char *type = a->ev->event_type ? a->ev->event_type : "";
  size_t nt = a->ev->tag_count;
  size_t ls = strlen(sid) + 1, lt = strlen(type) + 1, ltags = 0;
  for (size_t i = 0; i < nt; i++) ltags += strlen(a->ev->tags[i]) + 1;
  entry_t *e = malloc(sizeof *e + nt * sizeof(char *) + ls + lt + ltags + size);
  if (!e) return NULL;
  const char **tags = (const char **)(e + 1);
  char *p = (char *)(tags + nt);
  memcpy(p, sid, ls);
  e->stream_id = p;
  p += ls;
  memcpy(p, type, lt);
  e->event_type = p;
  p += lt;
  for (size_t i = 0; i < nt; i++) {
    size_t len = strlen(a->ev->tags[i]) + 1;
    memcpy(p, a->ev->tags[i], len);
    tags[i] = p;
    p += len;
  }
  e->tags = nt ? tags : NULL;
  e->tag_count = nt;
  e->position = a->ev->global_position;
  a->entry = e;
  a->wire = (uint8_t *)p;
  return a->wire;
}

static entry_t *entry_new(const es_recorded_t *ev) {
  entry_alloc_t a = {ev, NULL, NULL};
  size_t len = pack_wire(ev, alloc_entry, &a);
  if (!len) {
    free(a.entry);
    return NULL;
  }
  /* One reference for the ring (the caller's), one for the slice. */
  atomic_init(&a.entry->refs, 2);
  a.entry->wire = grpc_slice_new_with_user_data(a.wire, len, entry_slice_gone, a.entry);
  return a.entry;
}

/* Tag of SubscribeResponse.batch: field 5, length-delimited. */
#define BATCH_TAG 0x2a

grpc_slice es_tail_batch_header(size_t bytes) {
  uint8_t hdr[1 + 10]; /* a tag, and a varint of at most 10 bytes */
  hdr[0] = BATCH_TAG;
  size_t h = 1 + put_varint(hdr + 1, bytes);
  return grpc_slice_from_copied_buffer((const char *)hdr, h);
}

grpc_slice es_tail_wire(const void *encoded) {
  return ((const entry_t *)encoded)->wire;
}

/* ---------------------------------------------------------------- ring */

/* Drops every entry (rw held for writing). */
static void ring_clear(es_tail_t *t) {
  for (size_t i = 0; i < t->count; i++) {
    uint64_t p = t->first + i;
    entry_t **slot = &t->ring[p % t->max_events];
    entry_drop(*slot);
    *slot = NULL;
  }
  t->count = 0;
  t->bytes = 0;
  t->first = t->last + 1;
}

/* Appends e at last + 1 and evicts beyond the bounds (rw held for writing). */
static void ring_push(es_tail_t *t, entry_t *e) {
  size_t len = GRPC_SLICE_LENGTH(e->wire);
  while (t->count > 0 &&
         (t->count >= t->max_events || (t->bytes + len > t->max_bytes && t->count > 0))) {
    entry_t **slot = &t->ring[t->first % t->max_events];
    t->bytes -= GRPC_SLICE_LENGTH((*slot)->wire);
    entry_drop(*slot);
    *slot = NULL;
    t->first++;
    t->count--;
  }
  t->ring[e->position % t->max_events] = e;
  t->last = e->position;
  if (t->count == 0) t->first = e->position;
  t->count++;
  t->bytes += len;
}

/* ---------------------------------------------------------------- filler */

static void on_log_grew(es_waiter_t *w) {
  es_tail_t *t = w->arg;
  pthread_mutex_lock(&t->mu);
  t->kick = true;
  t->fired = true; /* last touch of t: the filler may now forget the waiter */
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

/* Takes the filler's waiter back from the log notifier (mu not held): after
 * this no callback runs or will run. */
static void unregister(es_tail_t *t) {
  if (!t->registered) return;
  t->registered = false;
  if (es_notifier_cancel(t->log, &t->waiter) == 1) return;
  pthread_mutex_lock(&t->mu);
  while (!t->fired) pthread_cond_wait(&t->cv, &t->mu);
  pthread_mutex_unlock(&t->mu);
}

/* Reads and encodes everything after `last` up to the backend's head, page
 * by page, publishing after each page so that subscriptions start sending
 * while a long run is still being read. Returns ES_OK or the backend's error. */
static int fill(es_tail_t *t) {
  for (;;) {
    es_read_all_req_t req;
    memset(&req, 0, sizeof req);
    req.from_position = t->last + 1; /* only the filler writes `last` */
    req.max_count = t->limits.max_page_events < FILL_PAGE_EVENTS && t->limits.max_page_events
                        ? t->limits.max_page_events
                        : FILL_PAGE_EVENTS;
    req.direction = ES_FORWARD;
    req.max_bytes = t->limits.max_page_bytes ? t->limits.max_page_bytes : SIZE_MAX;
    req.max_scan = 1;
    es_page_t page;
    es_err_t err;
    es_err_clear(&err);
    int rc = es_backend_read_all(t->backend, &req, &page, &err);
    if (rc != ES_OK) {
      es_log(ES_LOG_WARN, "live tail: reading the log from %llu failed: %s (retrying)",
             (unsigned long long)req.from_position, err.msg);
      return rc;
    }
    size_t added = 0;
    for (size_t i = 0; i < page.count; i++) {
      const es_recorded_t *ev = &page.events[i];
      if (ev->global_position != t->last + 1) {
        es_log(ES_LOG_ERROR, "live tail: the backend returned position %llu after %llu",
               (unsigned long long)ev->global_position, (unsigned long long)t->last);
        es_page_free(&page);
        return ES_EINTERNAL;
      }
      entry_t *e = entry_new(ev);
      if (!e) {
        es_page_free(&page);
        return ES_ENOMEM;
      }
      pthread_rwlock_wrlock(&t->rw);
      ring_push(t, e);
      pthread_rwlock_unlock(&t->rw);
      added++;
    }
    bool end = page.is_end;
    es_page_free(&page);
    if (added) {
      atomic_fetch_add(&t->filled_events, added);
      es_notifier_publish(t->subs, t->last);
    }
    if (end || added == 0) return ES_OK;
  }
}

/* Without a window: the tail notifier follows the backend's head. */
static void forward_head(es_tail_t *t) {
  uint64_t head = es_notifier_head(t->log);
  pthread_rwlock_wrlock(&t->rw);
  if (head > t->last) t->last = head;
  t->first = t->last + 1;
  pthread_rwlock_unlock(&t->rw);
  es_notifier_publish(t->subs, head);
}

/* Makes the window valid from the backend's head on (invariant 5). */
static int activate(es_tail_t *t) {
  uint64_t head;
  es_err_t err;
  es_err_clear(&err);
  int rc = es_backend_head(t->backend, &head, &err);
  if (rc != ES_OK) return rc;
  pthread_rwlock_wrlock(&t->rw);
  if (head > t->last) t->last = head;
  t->first = t->last + 1;
  t->valid = t->max_events > 0;
  pthread_rwlock_unlock(&t->rw);
  es_notifier_publish(t->subs, t->last);
  return ES_OK;
}

static void deactivate(es_tail_t *t) {
  unregister(t);
  pthread_rwlock_wrlock(&t->rw);
  t->valid = false;
  if (t->max_events) ring_clear(t);
  pthread_rwlock_unlock(&t->rw);
}

static struct timespec in_ms(long ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

static void *filler_main(void *arg) {
  es_tail_t *t = arg;
  bool active = false;
  long retry_ms = 0; /* > 0: the last round failed; wait this long */
  pthread_mutex_lock(&t->mu);
  for (;;) {
    /* Wait for a kick, the end of a backoff, or the end of the grace. */
    while (!t->stop && !t->kick && retry_ms == 0) {
      if (active && t->attached == 0) {
        struct timespec until = {t->idle_since + IDLE_GRACE_S, 0};
        if (pthread_cond_timedwait(&t->cv, &t->mu, &until) == ETIMEDOUT) break;
      } else {
        pthread_cond_wait(&t->cv, &t->mu);
      }
    }
    if (t->stop) break;
    if (retry_ms > 0 && !t->kick) {
      struct timespec until = in_ms(retry_ms);
      while (!t->stop && !t->kick && pthread_cond_timedwait(&t->cv, &t->mu, &until) != ETIMEDOUT) {
      }
      if (t->stop) break;
    }
    t->kick = false;
    if (t->registered && t->fired) t->registered = false; /* it ran: no longer registered */
    bool want = t->attached > 0 || time(NULL) < t->idle_since + IDLE_GRACE_S;
    pthread_mutex_unlock(&t->mu);

    int rc = ES_OK;
    if (!want) {
      if (active) deactivate(t);
      active = false;
    } else {
      if (!active) {
        rc = activate(t);
        active = rc == ES_OK;
      }
      if (active) {
        if (t->max_events)
          rc = fill(t);
        else
          forward_head(t);
      }
      if (rc != ES_OK) {
        atomic_fetch_add(&t->fill_errors, 1);
        retry_ms = retry_ms ? retry_ms * 2 : RETRY_MIN_MS;
        if (retry_ms > RETRY_MAX_MS) retry_ms = RETRY_MAX_MS;
      } else {
        retry_ms = 0;
        if (!t->registered) {
          /* Registered at most once (invariant 4); 1 = the log is already
           * beyond `last`: go round again at once. */
          pthread_mutex_lock(&t->mu);
          t->fired = false;
          pthread_mutex_unlock(&t->mu);
          if (es_notifier_wait(t->log, &t->waiter, t->last) == 1) {
            pthread_mutex_lock(&t->mu);
            t->kick = true;
            continue;
          }
          t->registered = true;
        }
      }
    }
    pthread_mutex_lock(&t->mu);
  }
  pthread_mutex_unlock(&t->mu);
  deactivate(t);
  return NULL;
}

/* ---------------------------------------------------------------- API */

es_tail_t *es_tail_start(es_backend_t *b, es_notifier_t *log, const es_limits_t *limits,
                         size_t max_events, size_t max_bytes) {
  es_tail_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->backend = b;
  t->log = log;
  t->limits = *limits;
  t->max_events = max_events;
  t->max_bytes = max_bytes;
  t->subs = es_notifier_new();
  if (max_events) t->ring = calloc(max_events, sizeof *t->ring);
  if (!t->subs || (max_events && !t->ring)) goto fail;
  t->last = es_notifier_head(log);
  t->first = t->last + 1;
  es_notifier_publish(t->subs, t->last);
  t->waiter.fn = on_log_grew;
  t->waiter.arg = t;
  t->idle_since = 0;
  pthread_rwlock_init(&t->rw, NULL);
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->cv, NULL);
  if (pthread_create(&t->thread, NULL, filler_main, t) != 0) {
    pthread_rwlock_destroy(&t->rw);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    goto fail;
  }
  return t;
fail:
  if (t->subs) es_notifier_free(t->subs);
  free(t->ring);
  free(t);
  return NULL;
}

void es_tail_stop(es_tail_t *t) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  t->stop = true;
  pthread_cond_signal(&t->cv);
  pthread_mutex_unlock(&t->mu);
  pthread_join(t->thread, NULL); /* it took its waiter back (unregister) */
  es_notifier_free(t->subs);
  free(t->ring);
  pthread_rwlock_destroy(&t->rw);
  pthread_mutex_destroy(&t->mu);
  pthread_cond_destroy(&t->cv);
  free(t);
}

es_notifier_t *es_tail_notifier(es_tail_t *t) {
  return t->subs;
}

void es_tail_attach(es_tail_t *t) {
  pthread_mutex_lock(&t->mu);
  if (t->attached++ == 0) {
    t->kick = true; /* start (or keep) filling */
    pthread_cond_signal(&t->cv);
  }
  pthread_mutex_unlock(&t->mu);
}

void es_tail_detach(es_tail_t *t) {
  pthread_mutex_lock(&t->mu);
  assert(t->attached > 0);
  if (--t->attached == 0) {
    t->idle_since = time(NULL);
    pthread_cond_signal(&t->cv); /* to start the grace period's clock */
  }
  pthread_mutex_unlock(&t->mu);
}

bool es_tail_holds(es_tail_t *t, uint64_t position) {
  pthread_rwlock_rdlock(&t->rw);
  bool held = t->valid && position >= t->first && position <= t->last + 1;
  pthread_rwlock_unlock(&t->rw);
  return held;
}

static void release_window_page(void *owner) {
  window_page_t *wp = owner;
  for (size_t i = 0; i < wp->n; i++) entry_drop((entry_t *)wp->enc[i]);
  free(wp);
}

/* A page from the ring (rw held for reading): the backend's read_all
 * semantics — matching events from `from`, at most max_count, within
 * max_bytes (the first always fits), scanning at most max_scan with a filter;
 * next = the first position not scanned; is_end when the ring's last was
 * scanned; last = the ring's last. */
static int read_window(es_tail_t *t, const es_read_all_req_t *req, es_page_t *out, es_err_t *err) {
  const es_filter_t *filter = es_filter_active(&req->filter) ? &req->filter : NULL;
  uint64_t max_scan = filter && req->max_scan ? req->max_scan : UINT64_MAX;
  size_t limit = req->max_count ? req->max_count : 1;
  uint64_t from = req->from_position ? req->from_position : 1;
  uint64_t avail = t->last + 1 - from; /* ≥ 0 by the caller's check */
  size_t cap = avail < limit ? (size_t)avail : limit;
  window_page_t *wp = NULL;
  es_recorded_t *events = NULL;
  if (cap) {
    wp = malloc(sizeof *wp + cap * sizeof wp->enc[0]);
    events = calloc(cap, sizeof *events);
    if (!wp || !events) {
      free(wp);
      free(events);
      return es_err_set(err, ES_ENOMEM, "out of memory reading the live tail");
    }
    wp->n = 0;
  }
  uint64_t p = from, scanned = 0;
  size_t bytes = 0;
  while (p <= t->last && scanned < max_scan && wp && wp->n < cap) {
    entry_t *e = t->ring[p % t->max_events];
    if (!filter ||
        es_filter_match_tags(filter, e->stream_id, e->event_type, e->tags, e->tag_count)) {
      size_t len = GRPC_SLICE_LENGTH(e->wire);
      if (wp->n > 0 && (len > req->max_bytes || bytes + len > req->max_bytes)) break;
      bytes += len;
      es_recorded_t *v = &events[wp->n];
      v->stream_id = e->stream_id;
      v->event_type = e->event_type;
      v->tags = e->tags;
      v->tag_count = e->tag_count;
      v->global_position = e->position;
      entry_hold(e);
      wp->enc[wp->n++] = e;
    }
    p++;
    scanned++;
  }
  out->events = events;
  out->count = wp ? wp->n : 0;
  out->encoded = wp ? wp->enc : NULL;
  out->owner = wp;
  out->release = wp ? release_window_page : NULL;
  out->next = p;
  out->is_end = p > t->last;
  out->last = t->last;
  return ES_OK;
}

int es_tail_read(void *tail, const es_read_all_req_t *req, es_page_t *out, es_err_t *err) {
  es_tail_t *t = tail;
  assert(req->direction == ES_FORWARD);
  memset(out, 0, sizeof *out);
  es_err_clear(err);
  uint64_t from = req->from_position ? req->from_position : 1;
  pthread_rwlock_rdlock(&t->rw);
  if (t->valid && from >= t->first && from <= t->last + 1) {
    int rc = read_window(t, req, out, err);
    pthread_rwlock_unlock(&t->rw);
    atomic_fetch_add_explicit(&t->pages_window, 1, memory_order_relaxed);
    return rc;
  }
  pthread_rwlock_unlock(&t->rw);
  atomic_fetch_add_explicit(&t->pages_backend, 1, memory_order_relaxed);
  return es_backend_read_all(t->backend, req, out, err);
}

void es_tail_stats(es_tail_t *t, es_tail_stats_t *out) {
  memset(out, 0, sizeof *out);
  pthread_rwlock_rdlock(&t->rw);
  out->active = t->valid;
  out->first = t->first;
  out->last = t->last;
  out->events = t->count;
  out->bytes = t->bytes;
  pthread_rwlock_unlock(&t->rw);
  out->filled_events = atomic_load(&t->filled_events);
  out->pages_window = atomic_load(&t->pages_window);
  out->pages_backend = atomic_load(&t->pages_backend);
  out->fill_errors = atomic_load(&t->fill_errors);
}
