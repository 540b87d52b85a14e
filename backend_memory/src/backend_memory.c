/*
 * The in-memory backend: every semantic of API.md, nothing durable.
 *
 * Data. Each event is one allocation, an es_mem_record_t: a 56-byte header
 * (binary id, stream, version, recorded_at, occurred_at, lengths, flags)
 * followed by its metadata as an es_kv_t array, its payload and its strings,
 * so that every part is found by arithmetic, without a stored offset.
 * Records never move and live until close, so a read returns views
 * (es_recorded_t) that point straight into them: zero copy, the page owns
 * only its array of views. stream_id and stream_type come from the stream
 * object; the event id is formatted into the view. Three indexes:
 *   - the global log, a directory of fixed chunks of record pointers
 *     (position p lives in chunk (p-1) / 4096), so it grows without ever
 *     copying the pointers themselves;
 *   - per stream, an array of 32-bit global positions (version v at index
 *     v-1); the record keeps its version, the log gives its position, so
 *     neither is stored twice;
 *   - two es_mem_tables (mem_internal.h) with 32-bit references to global
 *     positions: binary event id -> the event's position (idempotency), and
 *     stream id -> the position of the stream's first event, whose record
 *     points at the stream.
 * The store holds at most 2^32 - 1 events (ES_MEM_MAX_EVENTS): at about 100
 * bytes each that is beyond any machine's memory, and it lets positions,
 * versions and references take 4 bytes instead of 8. A full store answers
 * ES_ENOMEM.
 *
 * Idempotency, stream type and expected version are decided by the core
 * (es_append_decide_conditional / es_append_many_decide, backend_impl.h)
 * over a view of this store: the stream's count and type, and per event id
 * its record, whose flags say whether it is the first or last of its batch
 * and whether that batch was joined to another of the same AppendMany (four
 * bits instead of a stored batch index, size and request). The decision
 * runs under `commit`, so the view is exact. Append is an AppendMany of one
 * append (mem_commit), so the two store alike and retry each other.
 *
 * Tags and the tag index (Extension 1). A record holds pointers to its tags,
 * and each distinct tag is one es_mem_tag_t that owns the text and the
 * ascending array of the positions carrying it (4 bytes per occurrence, the
 * text once per tag). So:
 *   - ReadAll with query items whose every item names a tag walks, per item,
 *     the positions of its rarest tag, merged in reading order, and checks
 *     each candidate against the whole filter: the cost is the candidates'
 *     (the events of the rarest tags), not the log's. An item with types
 *     only (or an empty one) has no index and scans the log, within the
 *     filtered read's scan bound like any filter.
 *   - A condition, under `commit`, binary-searches each tagged item's rarest
 *     tag to `after` and checks candidates until the first match; an item
 *     with types only scans the log from `after` (documented in docs/dcb.md:
 *     give every item a tag). Nothing can commit between the check and the
 *     write, which happen under the same `commit`.
 * The index grows like a stream: positions are written past a tag's count
 * (or into a grown copy) under `commit`, new tags are created in a commit's
 * private table, and both are published under `lock` with the log.
 *
 * Memory beyond the payload, per event, as es_mem_stats counts it (glibc's
 * chunk rule, mem_internal.h; checked against mallinfo2 to within 0.1%):
 *   - the record: 56 bytes, its strings, malloc's 8-byte header and the
 *     rounding to 16: 68 to 83 bytes with event_type "E", 78 to 93 with
 *     "OrderPlaced" (no metadata, empty correlation and causation ids);
 *   - 8 in the log (plus the unfilled part of the last 32 KiB chunk);
 *   - 4 to 6 in the stream's position array (4 bytes, growth by 1.5);
 *   - 5.7 to 11.4 in the id table (5-byte slots at a load of 7/16 to 7/8);
 *   - the stream's own ~130 bytes (object, type, array, table slot), shared
 *     by its events;
 *   - per tag occurrence 8 (the record's pointer) + 4 to 6 (the tag's
 *     positions); per distinct tag its block (~90 bytes + the text) and
 *     16 to 32 in the tag table.
 * So about 97 to 120 bytes with "OrderPlaced" in streams of 100 events.
 * backend_memory/tests measures 100 for 100 000 events and 111 for the
 * worst case (15 bytes of rounding, an id table just doubled).
 *
 * Concurrency. Two locks:
 *   - `commit`, a mutex, serializes appends. Under it an append runs its
 *     checks and prepares everything that will become visible: it writes
 *     new record pointers into log slots past the head and positions into
 *     stream slots past the stream's count (no reader looks there), builds
 *     grown copies of the directory, a stream's position array or the
 *     stream table while readers go on using the old ones (read-read), and
 *     inserts into the id table, which readers never touch;
 *   - `lock`, a reader-writer lock with writer preference, guards what
 *     readers see. An append takes it for writing only to publish: swap in
 *     the grown arrays, link a new stream, bump the counts and the head.
 *     That is a handful of stores, so a reader never waits behind copying,
 *     hashing or allocation. The old arrays are freed after the write lock
 *     is released: a reader can only have used them under the read lock.
 * The records themselves are built and filled before either lock is taken.
 * Reads hold the read lock while they fill the page's views. After a commit
 * and outside both locks the new head goes to the notifier
 * (es__backend_publish); the notifier ignores a head that is not larger, so
 * racing publishers need no ordering.
 */
#include "es/backend_memory.h"

#include <assert.h>
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "es/backend.h"
#include "es/backend_impl.h"
#include "es/error.h"
#include "es/event.h"
#include "es/validate.h"
#include "mem_internal.h"

#define CHUNK_SHIFT 12
#define CHUNK_SLOTS ((uint64_t)1 << CHUNK_SHIFT)
#define CHUNK_MASK (CHUNK_SLOTS - 1)
#define DIR_MIN_CAPACITY 16
#define POSITIONS_MIN_CAPACITY 2
#define ES_MEM_MAX_EVENTS ((uint64_t)UINT32_MAX)

/* es_mem_record_t.flags */
enum {
  REC_FIRST = 1,        /* first event of its batch */
  REC_LAST = 2,         /* last event of its batch */
  REC_DEFAULT_CT = 4,   /* content type is ES_DEFAULT_CONTENT_TYPE (not stored) */
  REC_JOINED_PREV = 8,  /* first of its batch, not the first append of its AppendMany */
  REC_JOINED_NEXT = 16, /* last of its batch, not the last append of its AppendMany */
};

typedef struct es_mem_stream es_mem_stream_t;

/* One stored event, one allocation. */
typedef struct es_mem_record {
  uint8_t id[ES_UUID_LEN]; /* binary event id: the key of the id table */
  es_mem_stream_t *stream; /* the stream it belongs to */
  uint64_t recorded_at;    /* server clock at commit (ms), the same for a batch */
  uint64_t occurred_at;    /* client clock (ms), as given */
  uint32_t version;        /* stream version, 1-based (≤ ES_MEM_MAX_EVENTS) */
  uint32_t event_version;  /* schema version, as given */
  uint32_t payload_len;    /* bytes of payload */
  uint16_t metadata_count; /* es_kv_t entries at the start of data[] */
  uint8_t flags;           /* REC_* */
  uint8_t tag_count;       /* tag pointers after the metadata (validation: ≤ 32) */
  /* es_kv_t metadata[metadata_count] | const char *tags[tag_count] (each
   * the name of an es_mem_tag_t: a tag's text is stored once, in the tag
   * index) | payload | event_type \0 | content_type \0 (unless
   * REC_DEFAULT_CT) | correlation_id \0 | causation_id \0 | metadata keys
   * and values \0 */
  alignas(es_kv_t) unsigned char data[];
} es_mem_record_t;

_Static_assert(sizeof(es_mem_record_t) == 56, "the record header is meant to be 56 bytes");

struct es_mem_stream {
  uint64_t hash;       /* es_mem_hash_str of id, kept for table growth */
  uint64_t count;      /* last version = number of events (≥ 1 once linked) */
  uint64_t capacity;   /* entries allocated in positions */
  uint32_t *positions; /* positions[v-1] = global position of version v */
  const char *type;    /* "" (static) until the first non-empty stream_type, then owned */
  size_t id_len;       /* strlen(id) */
  char id[];           /* the stream id, NUL-terminated */
};

/* One tag of the tag index: the ascending global positions of the events
 * that carry it. Readers see positions[0..count) under the read lock; a
 * commit writes past count (into `grown` when the array must grow) and
 * publishes under the write lock, like a stream's positions. */
typedef struct es_mem_tag {
  uint64_t hash;       /* es_mem_hash_str of name */
  uint32_t *positions; /* ascending global positions */
  uint64_t count;      /* entries readers may use */
  uint64_t capacity;   /* entries allocated */
  /* Under `commit` only, while a commit prepares: */
  uint64_t adding;    /* positions the commit adds */
  uint64_t written;   /* of which written so far */
  uint32_t *grown;    /* grown copy of positions, or NULL */
  uint64_t grown_cap; /* its capacity */
  size_t len;         /* strlen(name) */
  char name[];        /* the tag; records point here */
} es_mem_tag_t;

/* An open-addressing set of tags by name, linear probing, at most half full.
 * The store's index (es_mem_t.tags) is seen by readers: it changes only under
 * `lock` held for writing (a grown copy is built under `commit` and swapped
 * in). A commit also uses one privately, for the tags it creates. */
typedef struct tag_table {
  es_mem_tag_t **slots; /* mask + 1 entries; NULL = empty */
  size_t mask;          /* capacity - 1; capacity is a power of two, 0 = none yet */
  size_t count;
} tag_table_t;

typedef struct es_mem {
  es_backend_t base;      /* first member: es_backend_t * <-> es_mem_t * */
  pthread_rwlock_t lock;  /* guards what readers see (writer preference) */
  pthread_mutex_t commit; /* serializes appends */
  uint64_t seed;          /* hash seed, random per store; immutable */

  /* Seen by readers: changed only under `lock` held for writing, except
   * slots that readers do not look at yet (see the essay). */
  es_mem_record_t ***chunks; /* the log: chunks[i][j] is position i*CHUNK_SLOTS+j+1 */
  uint64_t head;             /* last committed global position */
  es_mem_table_t streams;    /* stream id -> position of the stream's first event */
  tag_table_t tags;          /* tag -> its positions (Extension 1) */
  es_mem_stats_t stats;      /* what es_mem_stats reports */

  /* Appenders only: under `commit`. */
  size_t chunk_cap;   /* entries allocated in chunks */
  size_t chunk_count; /* chunks allocated (some may be ahead of the head) */
  es_mem_table_t ids; /* binary event id -> the event's position */
} es_mem_t;

static const es_backend_methods_t mem_methods;

/* ---- small helpers -------------------------------------------------- */

/* The record at position pos (1 ≤ pos ≤ head, or a slot the caller filled). */
static inline es_mem_record_t *log_at(es_mem_record_t ***chunks, uint64_t pos) {
  return chunks[(pos - 1) >> CHUNK_SHIFT][(pos - 1) & CHUNK_MASK];
}

static const char *str_or_empty(const char *s) {
  return s ? s : "";
}

/* Table callbacks: ctx is the store, a reference a global position. */
static bool id_eq(const void *ctx, uint32_t ref, const void *key) {
  return memcmp(log_at(((const es_mem_t *)ctx)->chunks, ref)->id, key, ES_UUID_LEN) == 0;
}

static uint64_t id_hash_of(const void *ctx, uint32_t ref) {
  const es_mem_t *m = ctx;
  return es_mem_hash_id(log_at(m->chunks, ref)->id, m->seed);
}

typedef struct stream_key {
  const char *id; /* stream id */
  size_t len;     /* its length */
} stream_key_t;

static bool stream_eq(const void *ctx, uint32_t ref, const void *key) {
  const es_mem_stream_t *s = log_at(((const es_mem_t *)ctx)->chunks, ref)->stream;
  const stream_key_t *k = key;
  return s->id_len == k->len && memcmp(s->id, k->id, k->len) == 0;
}

static uint64_t stream_hash_of(const void *ctx, uint32_t ref) {
  return log_at(((const es_mem_t *)ctx)->chunks, ref)->stream->hash;
}

/* The stream named id, or NULL. Under either lock. */
static es_mem_stream_t *find_stream(const es_mem_t *m, const char *id, size_t len, uint64_t hash) {
  stream_key_t key = {id, len};
  uint32_t first;
  if (!es_mem_table_find(&m->streams, hash, stream_eq, m, &key, &first)) return NULL;
  return log_at(m->chunks, first)->stream;
}

/* The stored record with this id, or NULL. Under `commit`. */
static es_mem_record_t *find_id(const es_mem_t *m, const uint8_t id[ES_UUID_LEN], uint64_t hash) {
  uint32_t pos;
  if (!es_mem_table_find(&m->ids, hash, id_eq, m, id, &pos)) return NULL;
  return log_at(m->chunks, pos);
}

/* ---- records -------------------------------------------------------- */

/* The tag pointers in data[] (after the metadata array). */
static inline const char **record_tags(const es_mem_record_t *r) {
  return (const char **)(r->data + (size_t)r->metadata_count * sizeof(es_kv_t));
}

/* Where the payload starts in data[] (after the metadata and tag arrays). */
static inline size_t payload_offset(const es_mem_record_t *r) {
  return (size_t)r->metadata_count * sizeof(es_kv_t) + (size_t)r->tag_count * sizeof(char *);
}

/* Where the strings start in data[] (after the payload); event_type first. */
static inline const char *record_event_type(const es_mem_record_t *r) {
  return (const char *)r->data + payload_offset(r) + r->payload_len;
}

/* Builds the record of one event (everything but stream, version and
 * recorded_at, which the commit fills). *footprint (OUT) is what es_mem_stats
 * will count for it. Runs outside every lock. */
static int record_build(const es_event_data_t *ev, es_mem_record_t **out, uint64_t *footprint,
                        es_err_t *err) {
  const char *type = str_or_empty(ev->event_type);
  const char *ct = str_or_empty(ev->content_type);
  const char *corr = str_or_empty(ev->correlation_id);
  const char *caus = str_or_empty(ev->causation_id);
  bool default_ct = ct[0] == '\0' || strcmp(ct, ES_DEFAULT_CONTENT_TYPE) == 0;
  size_t type_len = strlen(type), ct_len = default_ct ? 0 : strlen(ct);
  size_t corr_len = strlen(corr), caus_len = strlen(caus);

  *out = NULL;
  if (ev->metadata_count > UINT16_MAX)
    return es_err_set(err, ES_ETOOBIG, "metadata: %zu entries, the memory backend holds %u",
                      ev->metadata_count, (unsigned)UINT16_MAX);
  if (ev->payload_len > UINT32_MAX)
    return es_err_set(err, ES_ETOOBIG, "payload: %zu bytes, the memory backend holds %u",
                      ev->payload_len, (unsigned)UINT32_MAX);
  if (ev->tag_count > UINT8_MAX)
    return es_err_set(err, ES_ETOOBIG, "tags: %zu given, the memory backend holds %u",
                      ev->tag_count, (unsigned)UINT8_MAX);

  /* Validation bounds every length far below overflow; size_t arithmetic. */
  size_t strings = type_len + 1 + (default_ct ? 0 : ct_len + 1) + corr_len + 1 + caus_len + 1;
  for (size_t i = 0; i < ev->metadata_count; i++) {
    strings += strlen(str_or_empty(ev->metadata[i].key)) + 1;
    strings += strlen(str_or_empty(ev->metadata[i].value)) + 1;
  }
  size_t kv_bytes = ev->metadata_count * sizeof(es_kv_t) + ev->tag_count * sizeof(char *);
  size_t size = sizeof(es_mem_record_t) + kv_bytes + ev->payload_len + strings;

  es_mem_record_t *r = malloc(size);
  if (!r) return es_err_set(err, ES_ENOMEM, "out of memory storing an event of %zu bytes", size);
  memcpy(r->id, ev->id, ES_UUID_LEN);
  r->stream = NULL;
  r->recorded_at = 0;
  r->occurred_at = ev->occurred_at_unix_ms;
  r->version = 0;
  r->event_version = ev->event_version;
  r->payload_len = (uint32_t)ev->payload_len;
  r->metadata_count = (uint16_t)ev->metadata_count;
  r->flags = default_ct ? REC_DEFAULT_CT : 0;
  r->tag_count = (uint8_t)ev->tag_count;
  /* The tag pointers are set at commit, to the tag index's own copies. */
  for (size_t i = 0; i < ev->tag_count; i++) record_tags(r)[i] = NULL;

  if (ev->payload_len) memcpy(r->data + kv_bytes, ev->payload, ev->payload_len);
  es_kv_t *kv = (es_kv_t *)r->data;
  char *p = (char *)r->data + kv_bytes + ev->payload_len;
#define PUT(s, n)        \
  do {                   \
    memcpy(p, (s), (n)); \
    p[(n)] = '\0';       \
    p += (n) + 1;        \
  } while (0)
  PUT(type, type_len);
  if (!default_ct) PUT(ct, ct_len);
  PUT(corr, corr_len);
  PUT(caus, caus_len);
  for (size_t i = 0; i < ev->metadata_count; i++) {
    const char *k = str_or_empty(ev->metadata[i].key);
    const char *v = str_or_empty(ev->metadata[i].value);
    kv[i].key = p;
    PUT(k, strlen(k));
    kv[i].value = p;
    PUT(v, strlen(v));
  }
#undef PUT
  *out = r;
  *footprint = es_mem_footprint(size);
  return ES_OK;
}

/* Fills the view of a stored record. Under the read lock (a commit may set
 * the stream's type). */
static void record_view(const es_mem_record_t *r, uint64_t position, es_recorded_t *v) {
  const es_mem_stream_t *s = r->stream;
  const char *p = record_event_type(r);
  v->stream_id = s->id;
  v->stream_type = s->type;
  v->stream_version = r->version;
  v->global_position = position;
  es_uuid_format(r->id, v->event_id);
  v->event_type = p;
  p += strlen(p) + 1;
  if (r->flags & REC_DEFAULT_CT) {
    v->content_type = ES_DEFAULT_CONTENT_TYPE;
  } else {
    v->content_type = p;
    p += strlen(p) + 1;
  }
  v->correlation_id = p;
  p += strlen(p) + 1;
  v->causation_id = p;
  v->event_version = r->event_version;
  v->payload = r->data + payload_offset(r);
  v->payload_len = r->payload_len;
  v->metadata = r->metadata_count ? (const es_kv_t *)r->data : NULL;
  v->metadata_count = r->metadata_count;
  v->tags = r->tag_count ? (const char *const *)record_tags(r) : NULL;
  v->tag_count = r->tag_count;
  v->occurred_at_unix_ms = r->occurred_at;
  v->recorded_at_unix_ms = r->recorded_at;
}

/* ---- the tag index ---------------------------------------------------- */

static es_mem_tag_t *tag_find(const tag_table_t *t, const char *name, size_t len, uint64_t hash) {
  if (!t->slots) return NULL;
  for (size_t i = (size_t)hash & t->mask;; i = (i + 1) & t->mask) {
    es_mem_tag_t *g = t->slots[i];
    if (!g) return NULL;
    if (g->hash == hash && g->len == len && memcmp(g->name, name, len) == 0) return g;
  }
}

static bool tag_fits(const tag_table_t *t, size_t n) {
  return t->slots && 2 * (t->count + n) <= t->mask + 1;
}

/* g must not be present; tag_fits(t, 1) must hold. */
static void tag_insert(tag_table_t *t, es_mem_tag_t *g) {
  size_t i = (size_t)g->hash & t->mask;
  while (t->slots[i]) i = (i + 1) & t->mask;
  t->slots[i] = g;
  t->count++;
}

/* *out (OUT): a copy of t (may be empty) with room for n more. */
static int tag_table_grow(const tag_table_t *t, size_t n, tag_table_t *out) {
  size_t cap = 16;
  while (cap < 2 * (t->count + n)) cap *= 2;
  memset(out, 0, sizeof *out);
  out->slots = calloc(cap, sizeof *out->slots);
  if (!out->slots) return ES_ENOMEM;
  out->mask = cap - 1;
  for (size_t i = 0; t->slots && i <= t->mask; i++)
    if (t->slots[i]) tag_insert(out, t->slots[i]);
  return ES_OK;
}

static es_mem_tag_t *tag_of_name(const char *name) {
  return (es_mem_tag_t *)(name - offsetof(es_mem_tag_t, name));
}

/* The first index of g's positions holding a position >= p (count if none);
 * under either lock. */
static uint64_t tag_lower_bound(const uint32_t *positions, uint64_t count, uint64_t p) {
  uint64_t lo = 0, hi = count;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (positions[mid] < p)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* The tag of an item with the fewest events (its positions bound the item's
 * matches), or NULL when one of its tags was never used (it matches
 * nothing). Under either lock. */
static const es_mem_tag_t *rarest_tag(const es_mem_t *m, const es_query_item_t *item) {
  const es_mem_tag_t *best = NULL;
  for (size_t i = 0; i < item->tag_count; i++) {
    const char *t = item->tags[i] ? item->tags[i] : "";
    size_t len = strlen(t);
    const es_mem_tag_t *g = tag_find(&m->tags, t, len, es_mem_hash_str(t, len, m->seed));
    if (!g) return NULL;
    if (!best || g->count < best->count) best = g;
  }
  return best;
}

static bool record_matches(const es_mem_record_t *r, const es_query_item_t *items, size_t n) {
  return es_query_match(items, n, record_event_type(r), (const char *const *)record_tags(r),
                        r->tag_count);
}

/* ---- append --------------------------------------------------------- */

/* A stream a commit appends to (new or existing): prepared under `commit`,
 * published under `lock`. */
typedef struct stream_commit {
  es_mem_stream_t *stream;    /* the stream appended to */
  bool is_new;                /* link it into the stream table */
  const char *new_type;       /* owned copy of stream_type to set, or NULL */
  uint32_t *new_positions;    /* grown position array, or NULL */
  uint64_t new_positions_cap; /* its capacity */
  uint64_t adding;            /* events this commit adds to it */
} stream_commit_t;

/* What a commit prepares under `commit` and publishes under `lock`. */
typedef struct commit {
  stream_commit_t *streams;      /* the distinct streams of the request */
  size_t n_streams;              /* entries used */
  es_mem_record_t ***new_chunks; /* grown log directory, or NULL */
  size_t new_chunk_cap;          /* its capacity */
  size_t new_chunk_count;        /* chunks allocated after the commit */
  es_mem_table_t new_streams;    /* grown stream table, or zeroed */
  size_t n_new_streams;          /* streams this commit creates */
  es_mem_tag_t **touched;        /* tags this commit adds positions to (adding > 0) */
  size_t n_touched;
  tag_table_t new_tags;   /* tags this commit creates (a private table) */
  tag_table_t grown_tags; /* grown copy of the store's tag table, or zeroed */
  int64_t bytes;          /* change of bytes_total */
} commit_t;

/* Undoes the allocations of a commit that will not happen. */
static void commit_discard(es_mem_t *m, commit_t *c) {
  es_mem_record_t ***dir = c->new_chunks ? c->new_chunks : m->chunks;
  for (size_t i = m->chunk_count; i < c->new_chunk_count; i++) {
    free(dir[i]);
    dir[i] = NULL;
  }
  free(c->new_chunks);
  for (size_t i = 0; i < c->n_streams; i++) {
    stream_commit_t *sc = &c->streams[i];
    free(sc->new_positions);
    free((void *)sc->new_type);
    if (sc->is_new) free(sc->stream);
  }
  es_mem_table_free(&c->new_streams);
  for (size_t i = 0; i < c->n_touched; i++) {
    es_mem_tag_t *g = c->touched[i];
    free(g->grown);
    g->grown = NULL;
    g->adding = g->written = 0;
  }
  for (size_t i = 0; c->new_tags.slots && i <= c->new_tags.mask; i++) free(c->new_tags.slots[i]);
  free(c->new_tags.slots);
  free(c->grown_tags.slots);
  free(c->touched);
}

/* One append of the request: the decision's view of its ids (backend_impl.h,
 * under `commit`), and its stream, looked up once for the decision and the
 * commit. */
typedef struct decide_ctx {
  const es_mem_t *m;
  es_mem_record_t *const *recs; /* the append's records (their ids) */
  const uint64_t *hashes;       /* their id hashes */
  size_t id_len;                /* strlen(stream_id) */
  uint64_t stream_hash;         /* es_mem_hash_str of stream_id */
  es_mem_stream_t *found;       /* the stream before the request, or NULL */
  size_t sc;                    /* its entry in commit_t.streams (commit_prepare) */
} decide_ctx_t;

static bool lookup_id(void *ctx, size_t index, es_stored_event_t *out) {
  const decide_ctx_t *d = ctx;
  const es_mem_record_t *r = find_id(d->m, d->recs[index]->id, d->hashes[index]);
  if (!r) return false;
  out->stream_id = r->stream->id;
  out->stream_version = r->version;
  out->global_position = r->stream->positions[r->version - 1];
  out->recorded_at_unix_ms = r->recorded_at;
  out->batch_first = (r->flags & REC_FIRST) != 0;
  out->batch_last = (r->flags & REC_LAST) != 0;
  out->own_attempt = false; /* an outcome is never unknown here */
  out->joined_prev = (r->flags & REC_JOINED_PREV) != 0;
  out->joined_next = (r->flags & REC_JOINED_NEXT) != 0;
  return true;
}

/* The condition (es_condition_view_t): the first event after cond->after
 * matching one of its items. Under `commit`, so the log and the tag index
 * are still. An item with tags walks the positions of its rarest tag (a
 * binary search to `after`, then one record per candidate); an item with
 * types only, or none, walks the log from `after`. Either walk stops at the
 * first match, and later items only look below the best match so far. */
static bool mem_match(void *ctx, const es_append_condition_t *cond, uint64_t *position) {
  const es_mem_t *m = ctx;
  uint64_t best = 0; /* 0 = no match yet */
  *position = 0;
  /* Nothing lies after the head (and after + 1 below must not wrap). */
  if (cond->after >= m->head) return false;
  for (size_t i = 0; i < cond->item_count; i++) {
    const es_query_item_t *item = &cond->items[i];
    uint64_t limit = best ? best - 1 : m->head;
    if (item->tag_count > 0) {
      const es_mem_tag_t *g = rarest_tag(m, item);
      if (!g) continue;
      for (uint64_t k = tag_lower_bound(g->positions, g->count, cond->after + 1);
           k < g->count && g->positions[k] <= limit; k++) {
        if (record_matches(log_at(m->chunks, g->positions[k]), item, 1)) {
          best = g->positions[k];
          break;
        }
      }
    } else {
      for (uint64_t p = cond->after + 1; p <= limit; p++) {
        if (record_matches(log_at(m->chunks, p), item, 1)) {
          best = p;
          break;
        }
      }
    }
  }
  *position = best;
  return best != 0;
}

/* Allocates what the commit of the request needs: streams, their types and
 * position arrays, the log, the tag index and the id table. Under `commit`;
 * nothing visible to readers changes. recs are the request's n records in
 * log order, events their data (for the tags); dctx[a] gets the index of
 * append a's stream in c->streams. */
static int commit_prepare(es_mem_t *m, commit_t *c, const es_append_req_t *appends,
                          size_t n_appends, decide_ctx_t *dctx, es_mem_record_t **recs, size_t n,
                          es_err_t *err) {
  /* The streams: one entry per distinct stream, in request order. */
  for (size_t a = 0; a < n_appends; a++) {
    const es_append_req_t *req = &appends[a];
    stream_commit_t *sc = NULL;
    for (size_t i = 0; i < c->n_streams && !sc; i++) {
      if (strcmp(c->streams[i].stream->id, req->stream_id) == 0) {
        sc = &c->streams[i];
        dctx[a].sc = i;
      }
    }
    if (!sc) {
      size_t id_len = dctx[a].id_len;
      uint64_t hash = dctx[a].stream_hash;
      es_mem_stream_t *s = dctx[a].found;
      dctx[a].sc = c->n_streams;
      sc = &c->streams[c->n_streams++];
      memset(sc, 0, sizeof *sc);
      if (!s) {
        s = malloc(sizeof *s + id_len + 1);
        if (!s) goto fail;
        memset(s, 0, sizeof *s);
        s->hash = hash;
        s->type = "";
        s->id_len = id_len;
        memcpy(s->id, req->stream_id, id_len + 1);
        sc->is_new = true;
        c->n_new_streams++;
        c->bytes += (int64_t)es_mem_footprint(sizeof *s + id_len + 1);
      }
      sc->stream = s;
    }
    sc->adding += req->event_count;
    const char *type = str_or_empty(req->stream_type);
    if (type[0] != '\0' && sc->stream->type[0] == '\0' && !sc->new_type) {
      size_t len = strlen(type);
      char *t = malloc(len + 1);
      if (!t) goto fail;
      memcpy(t, type, len + 1);
      sc->new_type = t;
      c->bytes += (int64_t)es_mem_footprint(len + 1);
    }
  }
  if (c->n_new_streams && !es_mem_table_fits(&m->streams, c->n_new_streams)) {
    if (es_mem_table_grow(&m->streams, c->n_new_streams, stream_hash_of, m, &c->new_streams))
      goto fail;
    c->bytes += (int64_t)(es_mem_table_bytes(&c->new_streams) - es_mem_table_bytes(&m->streams));
  }

  /* Each stream's positions array. */
  for (size_t i = 0; i < c->n_streams; i++) {
    stream_commit_t *sc = &c->streams[i];
    es_mem_stream_t *s = sc->stream;
    uint64_t need = s->count + sc->adding;
    if (need <= s->capacity) continue;
    uint64_t cap = s->capacity + s->capacity / 2;
    if (cap < need) cap = need;
    if (cap < POSITIONS_MIN_CAPACITY) cap = POSITIONS_MIN_CAPACITY;
    sc->new_positions = malloc(cap * sizeof(uint32_t));
    if (!sc->new_positions) goto fail;
    if (s->count) memcpy(sc->new_positions, s->positions, s->count * sizeof(uint32_t));
    sc->new_positions_cap = cap;
    c->bytes += (int64_t)es_mem_footprint(cap * sizeof(uint32_t));
    if (s->capacity) c->bytes -= (int64_t)es_mem_footprint(s->capacity * sizeof(uint32_t));
  }

  /* The log: directory and chunks up to position head + n. */
  size_t chunks_needed = (size_t)((m->head + n - 1) >> CHUNK_SHIFT) + 1;
  c->new_chunk_count = m->chunk_count;
  if (chunks_needed > m->chunk_cap) {
    size_t cap = m->chunk_cap ? m->chunk_cap * 2 : DIR_MIN_CAPACITY;
    while (cap < chunks_needed) cap *= 2;
    c->new_chunks = calloc(cap, sizeof *c->new_chunks);
    if (!c->new_chunks) goto fail;
    if (m->chunk_count) memcpy(c->new_chunks, m->chunks, m->chunk_count * sizeof *m->chunks);
    c->new_chunk_cap = cap;
    c->bytes += (int64_t)es_mem_footprint(cap * sizeof *c->new_chunks);
    if (m->chunk_cap) c->bytes -= (int64_t)es_mem_footprint(m->chunk_cap * sizeof *m->chunks);
  }
  es_mem_record_t ***dir = c->new_chunks ? c->new_chunks : m->chunks;
  while (c->new_chunk_count < chunks_needed) {
    /* A slot past the chunks readers can reach: no reader looks at it. */
    dir[c->new_chunk_count] = malloc(CHUNK_SLOTS * sizeof(es_mem_record_t *));
    if (!dir[c->new_chunk_count]) goto fail;
    c->new_chunk_count++;
    c->bytes += (int64_t)es_mem_footprint(CHUNK_SLOTS * sizeof(es_mem_record_t *));
  }

  /* The tag index: each tag occurrence finds (or creates) its tag, and the
   * records point at the tag's name; each tag touched gets room for the
   * positions this commit adds. */
  size_t occurrences = 0;
  for (size_t i = 0; i < n; i++) occurrences += recs[i]->tag_count;
  if (occurrences) {
    c->touched = calloc(occurrences, sizeof *c->touched);
    size_t cap = 16;
    while (cap < 2 * occurrences) cap *= 2;
    c->new_tags.slots = calloc(cap, sizeof *c->new_tags.slots);
    if (!c->touched || !c->new_tags.slots) goto fail;
    c->new_tags.mask = cap - 1;
    size_t e = 0; /* event index within the request */
    for (size_t a = 0; a < n_appends; a++) {
      for (size_t k = 0; k < appends[a].event_count; k++, e++) {
        const es_event_data_t *ev = &appends[a].events[k];
        for (size_t t = 0; t < ev->tag_count; t++) {
          const char *name = ev->tags[t];
          size_t len = strlen(name);
          uint64_t hash = es_mem_hash_str(name, len, m->seed);
          es_mem_tag_t *g = tag_find(&m->tags, name, len, hash);
          if (!g) g = tag_find(&c->new_tags, name, len, hash);
          if (!g) {
            g = calloc(1, sizeof *g + len + 1);
            if (!g) goto fail;
            g->hash = hash;
            g->len = len;
            memcpy(g->name, name, len + 1);
            tag_insert(&c->new_tags, g);
            c->bytes += (int64_t)es_mem_footprint(sizeof *g + len + 1);
          }
          if (g->adding++ == 0) c->touched[c->n_touched++] = g;
          record_tags(recs[e])[t] = g->name;
        }
      }
    }
    for (size_t i = 0; i < c->n_touched; i++) {
      es_mem_tag_t *g = c->touched[i];
      if (!g) continue; /* unreachable: touched[0..n_touched) are set */
      uint64_t need = g->count + g->adding;
      if (need <= g->capacity) continue;
      uint64_t tcap = g->capacity + g->capacity / 2;
      if (tcap < need) tcap = need;
      if (tcap < POSITIONS_MIN_CAPACITY) tcap = POSITIONS_MIN_CAPACITY;
      g->grown = malloc(tcap * sizeof(uint32_t));
      if (!g->grown) goto fail;
      if (g->count) memcpy(g->grown, g->positions, g->count * sizeof(uint32_t));
      g->grown_cap = tcap;
      c->bytes += (int64_t)es_mem_footprint(tcap * sizeof(uint32_t));
      if (g->capacity) c->bytes -= (int64_t)es_mem_footprint(g->capacity * sizeof(uint32_t));
    }
    if (c->new_tags.count && !tag_fits(&m->tags, c->new_tags.count)) {
      if (tag_table_grow(&m->tags, c->new_tags.count, &c->grown_tags)) goto fail;
      c->bytes += (int64_t)es_mem_footprint((c->grown_tags.mask + 1) * sizeof(es_mem_tag_t *));
      if (m->tags.slots)
        c->bytes -= (int64_t)es_mem_footprint((m->tags.mask + 1) * sizeof(es_mem_tag_t *));
    }
  }

  /* The id table last: readers never see it, so a grown table is swapped
   * in at once, and nothing after this step can fail and need to undo it. */
  if (!es_mem_table_fits(&m->ids, n)) {
    es_mem_table_t grown;
    if (es_mem_table_grow(&m->ids, n, id_hash_of, m, &grown)) goto fail;
    c->bytes += (int64_t)(es_mem_table_bytes(&grown) - es_mem_table_bytes(&m->ids));
    es_mem_table_free(&m->ids);
    m->ids = grown;
  }
  return ES_OK;

fail:
  commit_discard(m, c);
  memset(c, 0, sizeof *c);
  return es_err_set(err, ES_ENOMEM, "out of memory appending %zu events", n);
}

/* Appends the request's appends as one commit: Append is an AppendMany of
 * one append whose condition is the append's own. results holds n_appends
 * entries (OUT). Both methods end here, so that a plain Append and an
 * AppendMany store the same way and retry each other (settled detail 2). */
static int mem_commit(es_mem_t *m, const es_append_req_t *appends, size_t n_appends,
                      const es_append_condition_t *cond, bool many, es_append_result_t *results,
                      es_err_t *err) {
  size_t n = 0, built = 0;
  for (size_t a = 0; a < n_appends; a++) {
    /* The wrappers refuse these (es_backend_append, es_backend_append_many). */
    if (appends[a].event_count == 0 || appends[a].events == NULL || appends[a].stream_id == NULL)
      return es_err_set(err, ES_EINVAL, "appends[%zu]: no events (request not prepared)", a);
    n += appends[a].event_count;
  }
  if (n == 0) return es_err_set(err, ES_EINVAL, "appends: none (request not prepared)");
  es_mem_record_t **recs = NULL;
  uint64_t *hashes = NULL;
  /* Small requests (every plain Append) need no allocation for these. */
  stream_commit_t stack_streams[4];
  decide_ctx_t stack_ctx[4];
  es_append_view_t stack_views[4];
  stream_commit_t *streams = stack_streams;
  decide_ctx_t *dctx = stack_ctx;
  es_append_view_t *views = stack_views;
  uint64_t record_bytes = 0, payload_bytes = 0;
  int rc = ES_OK;
  bool locked = false;

  /* 1. Everything per event, outside the locks: records and id hashes. */
  recs = malloc(n * sizeof *recs);
  hashes = malloc(n * sizeof *hashes);
  if (n_appends > 4) {
    streams = malloc(n_appends * sizeof *streams);
    dctx = malloc(n_appends * sizeof *dctx);
    views = malloc(n_appends * sizeof *views);
  }
  if (!recs || !hashes || !streams || !dctx || !views) {
    rc = es_err_set(err, ES_ENOMEM, "out of memory appending %zu events", n);
    goto fail;
  }
  for (size_t a = 0; a < n_appends; a++) {
    const es_append_req_t *req = &appends[a];
    size_t first = built;
    for (size_t k = 0; k < req->event_count; k++, built++) {
      uint64_t fp = 0;
      rc = record_build(&req->events[k], &recs[built], &fp, err);
      if (rc) goto fail;
      record_bytes += fp;
      payload_bytes += req->events[k].payload_len;
      hashes[built] = es_mem_hash_id(recs[built]->id, m->seed);
    }
    recs[first]->flags |= REC_FIRST | (a > 0 ? REC_JOINED_PREV : 0);
    recs[built - 1]->flags |= REC_LAST | (a + 1 < n_appends ? REC_JOINED_NEXT : 0);
    dctx[a].id_len = strlen(req->stream_id);
    dctx[a].stream_hash = es_mem_hash_str(req->stream_id, dctx[a].id_len, m->seed);
  }

  pthread_mutex_lock(&m->commit);
  locked = true;

  /* 2. The decision, over the store as it is before the request. */
  size_t offset = 0;
  for (size_t a = 0; a < n_appends; a++) {
    const es_append_req_t *req = &appends[a];
    decide_ctx_t *d = &dctx[a];
    es_mem_stream_t *s = find_stream(m, req->stream_id, d->id_len, d->stream_hash);
    d->m = m;
    d->recs = recs + offset;
    d->hashes = hashes + offset;
    d->found = s;
    views[a] = (es_append_view_t){s ? s->count : 0, s ? s->type : "", lookup_id, d};
    offset += req->event_count;
  }
  es_condition_view_t cv = {mem_match, m};
  es_append_decision_t decision;
  if (many) {
    es_append_many_req_t mreq = {(es_append_req_t *)appends, n_appends, cond};
    es_append_many_view_t mview = {views, cv};
    rc = es_append_many_decide(&mreq, &mview, &decision, results, err);
  } else {
    rc = es_append_decide_conditional(&appends[0], &views[0], &cv, &decision, &results[0], err);
  }
  if (rc) goto fail;
  if (decision == ES_APPEND_STORED) goto done; /* results hold the original */
  if (m->head + n > ES_MEM_MAX_EVENTS) {
    rc = es_err_set(err, ES_ENOMEM, "the memory backend holds at most %llu events",
                    (unsigned long long)ES_MEM_MAX_EVENTS);
    goto fail;
  }

  /* 3. Prepare: allocations and slots readers cannot see yet. */
  commit_t c;
  memset(&c, 0, sizeof c);
  c.streams = streams;
  rc = commit_prepare(m, &c, appends, n_appends, dctx, recs, n, err);
  if (rc) goto fail;
  uint64_t first_pos = m->head + 1;
  uint64_t recorded_at = es_now_unix_ms();
  es_mem_record_t ***dir = c.new_chunks ? c.new_chunks : m->chunks;
  uint64_t pos = first_pos;
  size_t e = 0;
  for (size_t a = 0; a < n_appends; a++) {
    const es_append_req_t *req = &appends[a];
    const stream_commit_t *sc = &c.streams[dctx[a].sc];
    es_mem_stream_t *s = sc->stream;
    uint32_t *positions = sc->new_positions ? sc->new_positions : s->positions;
    uint64_t v = results[a].first_version;
    results[a].first_position = pos;
    results[a].last_position = pos + req->event_count - 1;
    results[a].recorded_at_unix_ms = recorded_at;
    results[a].duplicate = false;
    for (size_t k = 0; k < req->event_count; k++, e++, pos++, v++) {
      es_mem_record_t *r = recs[e];
      r->stream = s;
      r->version = (uint32_t)v;
      r->recorded_at = recorded_at;
      es_mem_table_insert(&m->ids, hashes[e], (uint32_t)pos);
      /* Past the stream's count and each tag's count: no reader looks. */
      positions[v - 1] = (uint32_t)pos;
      dir[(pos - 1) >> CHUNK_SHIFT][(pos - 1) & CHUNK_MASK] = r;
      for (size_t t = 0; t < r->tag_count; t++) {
        es_mem_tag_t *g = tag_of_name(record_tags(r)[t]);
        (g->grown ? g->grown : g->positions)[g->count + g->written++] = (uint32_t)pos;
      }
    }
  }

  /* 4. Publish. */
  es_mem_table_t old_streams = {0};
  es_mem_tag_t **old_tag_slots = NULL;
  es_mem_record_t ***old_chunks = NULL;
  pthread_rwlock_wrlock(&m->lock);
  if (c.new_chunks) {
    old_chunks = m->chunks;
    m->chunks = c.new_chunks;
  }
  if (c.new_streams.refs) {
    old_streams = m->streams;
    m->streams = c.new_streams;
  }
  for (size_t i = 0; i < c.n_streams; i++) {
    stream_commit_t *sc = &c.streams[i];
    es_mem_stream_t *s = sc->stream;
    /* A new stream is named by its first event, whose log slot is filled. */
    if (sc->is_new) {
      uint32_t first = (sc->new_positions ? sc->new_positions : s->positions)[0];
      es_mem_table_insert(&m->streams, s->hash, first);
    }
    if (sc->new_positions) {
      uint32_t *old = s->positions;
      s->positions = sc->new_positions;
      s->capacity = sc->new_positions_cap;
      sc->new_positions = old; /* freed below, outside the lock */
    }
    if (sc->new_type) s->type = sc->new_type;
    s->count += sc->adding;
  }
  if (c.grown_tags.slots) {
    old_tag_slots = m->tags.slots;
    m->tags = c.grown_tags;
  }
  for (size_t i = 0; c.new_tags.slots && i <= c.new_tags.mask; i++)
    if (c.new_tags.slots[i]) tag_insert(&m->tags, c.new_tags.slots[i]);
  for (size_t i = 0; i < c.n_touched; i++) {
    es_mem_tag_t *g = c.touched[i];
    if (g->grown) {
      uint32_t *old = g->positions;
      g->positions = g->grown;
      g->capacity = g->grown_cap;
      g->grown = old; /* freed below, outside the lock */
    }
    g->count += g->adding;
  }
  m->head += n;
  m->stats.events += n;
  m->stats.streams += c.n_new_streams;
  m->stats.bytes_total += (uint64_t)((int64_t)record_bytes + c.bytes);
  m->stats.bytes_payload += payload_bytes;
  uint64_t head = m->head;
  pthread_rwlock_unlock(&m->lock);
  if (c.new_chunks) m->chunk_cap = c.new_chunk_cap;
  m->chunk_count = c.new_chunk_count;
  for (size_t i = 0; i < c.n_touched; i++) {
    es_mem_tag_t *g = c.touched[i];
    free(g->grown); /* the old array, if any */
    g->grown = NULL;
    g->adding = g->written = 0;
  }
  pthread_mutex_unlock(&m->commit);

  free(old_chunks);
  free(old_tag_slots);
  es_mem_table_free(&old_streams);
  for (size_t i = 0; i < c.n_streams; i++) free(c.streams[i].new_positions); /* the old ones */
  free(c.touched);
  free(c.new_tags.slots);
  free(hashes);
  free(recs); /* the records themselves now belong to the store */
  if (streams != stack_streams) {
    free(streams);
    free(dctx);
    free(views);
  }
  es__backend_publish(&m->base, head);
  return ES_OK;

done:
fail:
  if (locked) pthread_mutex_unlock(&m->commit);
  for (size_t i = 0; i < built; i++) free(recs[i]);
  free(recs);
  free(hashes);
  if (streams != stack_streams) {
    free(streams);
    free(dctx);
    free(views);
  }
  if (rc) memset(results, 0, n_appends * sizeof *results);
  return rc;
}

static int mem_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                      es_err_t *err) {
  assert(req->event_count > 0 && req->stream_id != NULL); /* es_backend_append refuses the rest */
  return mem_commit((es_mem_t *)b, req, 1, req->condition, false, out, err);
}

static int mem_append_many(es_backend_t *b, const es_append_many_req_t *req,
                           es_append_result_t *results, es_err_t *err) {
  assert(req->append_count > 0); /* es_backend_append_many refuses the rest */
  return mem_commit((es_mem_t *)b, req->appends, req->append_count, req->condition, true, results,
                    err);
}

/* ---- reads ---------------------------------------------------------- */

/* Adds the view of r to the page: 1 added, 0 the page is full (r is not
 * added), ES_ENOMEM. */
static int page_add(es_page_builder_t *pb, const es_mem_record_t *r, uint64_t position) {
  int rc;
  es_recorded_t *v = es_page_builder_slot(pb, &rc);
  if (!v) return rc;
  record_view(r, position, v);
  return es_page_builder_take(pb);
}

static int mem_read_stream(es_backend_t *b, const es_read_stream_req_t *req, es_page_t *out,
                           es_err_t *err) {
  es_mem_t *m = (es_mem_t *)b;
  int rc = ES_OK;
  const char *id = str_or_empty(req->stream_id);
  size_t len = strlen(id);
  uint64_t hash = es_mem_hash_str(id, len, m->seed);
  es_page_builder_t pb;
  es_page_builder_start(&pb, out, req->max_count, req->max_bytes);

  pthread_rwlock_rdlock(&m->lock);
  const es_mem_stream_t *s = find_stream(m, id, len, hash);
  if (!s) {
    pthread_rwlock_unlock(&m->lock);
    return es_err_set(err, ES_ENOTFOUND, "stream '%s' not found", id);
  }
  es_mem_record_t ***chunks = m->chunks;
  uint64_t last = s->count;
  uint64_t v;
  out->last = last;
  if (req->direction == ES_FORWARD) {
    v = req->from_version ? req->from_version : 1;
    while (v <= last) {
      uint64_t pos = s->positions[v - 1];
      if ((rc = page_add(&pb, log_at(chunks, pos), pos)) <= 0) break;
      v++;
    }
    if (v > last) v = last + 1; /* also from beyond the end */
    out->is_end = v > last;
  } else {
    v = (req->from_version == 0 || req->from_version > last) ? last : req->from_version;
    while (v >= 1) {
      uint64_t pos = s->positions[v - 1];
      if ((rc = page_add(&pb, log_at(chunks, pos), pos)) <= 0) break;
      v--;
    }
    out->is_end = v == 0;
  }
  pthread_rwlock_unlock(&m->lock);
  if (rc < 0) goto fail;
  out->next = v;
  return ES_OK;

fail:
  es_page_free(out);
  memset(out, 0, sizeof *out);
  return es_err_set(err, rc, "out of memory reading stream '%s'", id);
}

static bool filter_match(const es_filter_t *f, const es_mem_record_t *r) {
  return es_filter_match_tags(f, r->stream->id, record_event_type(r),
                              (const char *const *)record_tags(r), r->tag_count);
}

/* The largest number of query items of a filter (validate.h's default; a
 * configured larger limit falls back to the scan). */
#define INDEXED_ITEMS 16

/* ReadAll with query items whose every item has a tag: the candidates are
 * the positions of each item's rarest tag, merged in reading order (an
 * event in several lists is examined once), each checked against the whole
 * filter. The cost is that of the candidates, not of the log; max_scan
 * bounds the candidates examined, and the resume point is the position
 * after (FORWARD) or before (BACKWARD) the last one examined. Returns false
 * when the filter cannot use the index (an item without tags). Under the
 * read lock. */
static bool read_all_indexed(const es_mem_t *m, const es_read_all_req_t *req, es_page_builder_t *pb,
                             es_page_t *out, int *rc) {
  const es_filter_t *f = &req->filter;
  if (f->item_count == 0 || f->item_count > INDEXED_ITEMS) return false;
  for (size_t i = 0; i < f->item_count; i++)
    if (f->items[i].tag_count == 0) return false;
  const es_mem_tag_t *lists[INDEXED_ITEMS] = {0};
  int64_t cur[INDEXED_ITEMS] = {0}; /* index into lists[i]->positions; -1 or count = exhausted */
  size_t n = 0;
  bool forward = req->direction == ES_FORWARD;
  uint64_t head = m->head;
  uint64_t from;
  if (forward)
    from = req->from_position ? req->from_position : 1;
  else
    from = (req->from_position == 0 || req->from_position > head) ? head : req->from_position;
  for (size_t i = 0; i < f->item_count; i++) {
    const es_mem_tag_t *g = rarest_tag(m, &f->items[i]);
    if (!g) continue; /* a tag nobody carries: the item matches nothing */
    size_t j;
    for (j = 0; j < n && lists[j] != g; j++) {
    }
    if (j < n) continue; /* the same list twice */
    uint64_t k = tag_lower_bound(g->positions, g->count, forward ? from : from + 1);
    lists[n] = g;
    cur[n++] = forward ? (int64_t)k : (int64_t)k - 1;
  }
  uint64_t scanned = 0, max_scan = req->max_scan ? req->max_scan : UINT64_MAX;
  uint64_t last = 0; /* the last position examined; 0 = none */
  bool stopped = false;
  *rc = ES_OK;
  for (;;) {
    /* The next candidate in reading order: the smallest (FORWARD) or
     * largest (BACKWARD) current position among the lists. */
    uint64_t p = 0;
    for (size_t i = 0; i < n; i++) {
      if (cur[i] < 0 || (uint64_t)cur[i] >= lists[i]->count) continue;
      uint64_t q = lists[i]->positions[cur[i]];
      if (p == 0 || (forward ? q < p : q > p)) p = q;
    }
    if (p == 0 || (!forward && from == 0)) break;
    if (out->count >= pb->limit || scanned >= max_scan) {
      stopped = true;
      break;
    }
    const es_mem_record_t *r = log_at(m->chunks, p);
    if (filter_match(f, r)) {
      int added = page_add(pb, r, p);
      if (added <= 0) {
        *rc = added;
        /* Did not fit (or no memory): it is read again next time. */
        last = forward ? p - 1 : p + 1;
        stopped = true;
        break;
      }
    }
    for (size_t i = 0; i < n; i++) /* past p in every list that holds it */
      if (cur[i] >= 0 && (uint64_t)cur[i] < lists[i]->count && lists[i]->positions[cur[i]] == p)
        cur[i] += forward ? 1 : -1;
    last = p;
    scanned++;
  }
  es_page_end_walk(out, forward, stopped, last, from, head);
  out->last = head;
  return true;
}

static int mem_read_all(es_backend_t *b, const es_read_all_req_t *req, es_page_t *out,
                        es_err_t *err) {
  es_mem_t *m = (es_mem_t *)b;
  int rc = ES_OK;
  es_page_builder_t pb;
  es_page_builder_start(&pb, out, req->max_count, req->max_bytes);
  const es_filter_t *filter = es_filter_active(&req->filter) ? &req->filter : NULL;
  uint64_t max_scan = filter && req->max_scan ? req->max_scan : UINT64_MAX;
  uint64_t scanned = 0;

  pthread_rwlock_rdlock(&m->lock);
  if (filter && read_all_indexed(m, req, &pb, out, &rc)) {
    pthread_rwlock_unlock(&m->lock);
    if (rc < 0) goto fail;
    return ES_OK;
  }
  es_mem_record_t ***chunks = m->chunks;
  uint64_t head = m->head;
  uint64_t p;
  out->last = head;
  if (req->direction == ES_FORWARD) {
    p = req->from_position ? req->from_position : 1;
    while (p <= head && scanned < max_scan && out->count < pb.limit) {
      const es_mem_record_t *r = log_at(chunks, p);
      if (!filter || filter_match(filter, r)) {
        if ((rc = page_add(&pb, r, p)) <= 0) break;
      }
      p++;
      scanned++;
    }
    if (p > head) p = head + 1; /* also from beyond the end */
    out->is_end = p > head;
  } else {
    p = (req->from_position == 0 || req->from_position > head) ? head : req->from_position;
    while (p >= 1 && scanned < max_scan && out->count < pb.limit) {
      const es_mem_record_t *r = log_at(chunks, p);
      if (!filter || filter_match(filter, r)) {
        if ((rc = page_add(&pb, r, p)) <= 0) break;
      }
      p--;
      scanned++;
    }
    out->is_end = p == 0;
  }
  pthread_rwlock_unlock(&m->lock);
  if (rc < 0) goto fail;
  out->next = p;
  return ES_OK;

fail:
  es_page_free(out);
  memset(out, 0, sizeof *out);
  return es_err_set(err, rc, "out of memory reading the log");
}

static int mem_head(es_backend_t *b, uint64_t *out, es_err_t *err) {
  es_mem_t *m = (es_mem_t *)b;
  pthread_rwlock_rdlock(&m->lock);
  *out = m->head;
  pthread_rwlock_unlock(&m->lock);
  return ES_OK;
}

/* ---- open, close, stats --------------------------------------------- */

static void mem_close(es_backend_t *b) {
  es_mem_t *m = (es_mem_t *)b;
  if (!m) return;
  for (uint64_t p = 1; p <= m->head; p++) {
    es_mem_record_t *r = log_at(m->chunks, p);
    if (r->version == 1) { /* each stream once, at its first event */
      es_mem_stream_t *s = r->stream;
      if (s->type[0] != '\0') free((void *)s->type);
      free(s->positions);
      free(s);
    }
    free(r);
  }
  for (size_t i = 0; i < m->chunk_count; i++) free(m->chunks[i]);
  free(m->chunks);
  for (size_t i = 0; m->tags.slots && i <= m->tags.mask; i++) {
    if (!m->tags.slots[i]) continue;
    free(m->tags.slots[i]->positions);
    free(m->tags.slots[i]);
  }
  free(m->tags.slots);
  es_mem_table_free(&m->streams);
  es_mem_table_free(&m->ids);
  pthread_rwlock_destroy(&m->lock);
  pthread_mutex_destroy(&m->commit);
  free(m);
}

static uint64_t random_seed(const void *salt) {
  uint64_t seed;
  if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) == (ssize_t)sizeof seed) return seed;
  /* No entropy yet (early boot): the clock and an address still vary. */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return es_mem_hash_str((const char *)&ts, sizeof ts, (uint64_t)(uintptr_t)salt);
}

int es_mem_open(es_backend_t **out, es_err_t *err) {
  pthread_rwlockattr_t attr;
  bool attr_ok = false, lock_ok = false;
  *out = NULL;
  es_mem_t *m = calloc(1, sizeof *m);
  if (!m) goto fail;
  m->base.methods = &mem_methods;
  m->base.notifier = NULL;
  if (pthread_rwlockattr_init(&attr)) goto fail;
  attr_ok = true;
  /* Writers hold the lock for a few stores only; preferring them keeps a
   * stream of readers from delaying a commit indefinitely. */
  if (pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP)) goto fail;
  if (pthread_rwlock_init(&m->lock, &attr)) goto fail;
  lock_ok = true;
  if (pthread_mutex_init(&m->commit, NULL)) goto fail;
  pthread_rwlockattr_destroy(&attr);
  m->seed = random_seed(m);
  m->stats.bytes_total = es_mem_footprint(sizeof *m);
  *out = &m->base;
  return ES_OK;

fail:
  if (lock_ok) pthread_rwlock_destroy(&m->lock);
  if (attr_ok) pthread_rwlockattr_destroy(&attr);
  free(m);
  return es_err_set(err, ES_ENOMEM, "out of memory opening the memory backend");
}

void es_mem_stats(es_backend_t *b, es_mem_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (!b || b->methods != &mem_methods) return;
  es_mem_t *m = (es_mem_t *)b;
  pthread_rwlock_rdlock(&m->lock);
  *out = m->stats;
  pthread_rwlock_unlock(&m->lock);
}

static size_t mem_backend_stats(es_backend_t *b, es_backend_stat_t *out, size_t max) {
  es_mem_stats_t st;
  es_mem_stats(b, &st);
  const es_backend_stat_t all[] = {
      {"memory_events", "Events held by the in-memory store.", 0, st.events},
      {"memory_streams", "Streams held by the in-memory store.", 0, st.streams},
      {"memory_bytes", "Bytes allocated by the in-memory store.", 0, st.bytes_total},
      {"memory_payload_bytes", "Of which event payloads.", 0, st.bytes_payload},
  };
  size_t n = sizeof all / sizeof all[0];
  if (n > max) n = max;
  memcpy(out, all, n * sizeof *out);
  return n;
}

static const es_backend_methods_t mem_methods = {
    .stats = mem_backend_stats,
    .features = ES_BACKEND_TAGS | ES_BACKEND_QUERY | ES_BACKEND_CONDITION,
    .append_many = mem_append_many,
    .name = "memory",
    .blocking = 0,
    .close = mem_close,
    .append = mem_append,
    .read_stream = mem_read_stream,
    .read_all = mem_read_all,
    .head = mem_head,
};
