/*
 * Stored records of the LMDB backend (format in lmdb_internal.h) and the
 * pages that reads fill from them.
 *
 * A read copies each event it returns, once, into blocks owned by the page
 * (the bytes it will send, nothing else: the header's integers go into the
 * view, the variable part is copied as it is stored and the view points into
 * the copy). The stream id, stream type and event type are not in the
 * record: each is copied into the page once, by the first event that names
 * it, and its other events point at that copy. The read transaction ends
 * before the read returns, so a subscriber that holds a page while its
 * client is slow pins no snapshot.
 */
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "es/error.h"
#include "es/validate.h"
#include "lmdb_internal.h"

#define BLOCK_MIN_BYTES ((size_t)64 << 10)

static const char *str_or_empty(const char *s) {
  return s ? s : "";
}

static bool is_default_ct(const char *ct) {
  return ct[0] == '\0' || strcmp(ct, ES_DEFAULT_CONTENT_TYPE) == 0;
}

/* Bytes of v as a varint. */
static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v) {
  while (v >= 0x80) {
    *p++ = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  *p++ = (uint8_t)v;
  return p;
}

/* Reads a varint at *p before end into *v; false when it runs past end or
 * past 64 bits. */
static bool take_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t x = 0;
  for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
    uint8_t b = *(*p)++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return true;
    }
  }
  return false;
}

static size_t header_len(const es_event_data_t *ev, const rec_keys_t *keys) {
  return ES_UUID_LEN + 1 + varint_len(keys->version) + varint_len(keys->recorded_at) +
         varint_len(ev->occurred_at_unix_ms) + varint_len(ev->event_version) +
         varint_len(ev->payload_len) + varint_len(keys->stream) + varint_len(keys->type) +
         varint_len(ev->metadata_count);
}

int es__lmdb_rec_size(const es_event_data_t *ev, const rec_keys_t *keys, size_t *size,
                      es_err_t *err) {
  const char *ct = str_or_empty(ev->content_type);
  *size = 0;
  if (ev->metadata_count > UINT16_MAX)
    return es_err_set(err, ES_ETOOBIG, "metadata: %zu entries, the lmdb backend holds %u",
                      ev->metadata_count, (unsigned)UINT16_MAX);
  if (ev->tag_count > REC_MAX_TAGS)
    return es_err_set(err, ES_ETOOBIG, "tags: %zu given, the lmdb backend holds %u", ev->tag_count,
                      (unsigned)REC_MAX_TAGS);
  if (ev->payload_len > UINT32_MAX)
    return es_err_set(err, ES_ETOOBIG, "payload: %zu bytes, the lmdb backend holds %u",
                      ev->payload_len, (unsigned)UINT32_MAX);
  /* Validation bounds every length far below overflow. */
  size_t n = header_len(ev, keys) + ev->payload_len;
  if (!is_default_ct(ct)) n += strlen(ct) + 1;
  n += strlen(str_or_empty(ev->correlation_id)) + 1;
  n += strlen(str_or_empty(ev->causation_id)) + 1;
  for (size_t i = 0; i < ev->metadata_count; i++) {
    n += strlen(str_or_empty(ev->metadata[i].key)) + 1;
    n += strlen(str_or_empty(ev->metadata[i].value)) + 1;
  }
  if (ev->tag_count) n += varint_len(ev->tag_count);
  for (size_t i = 0; i < ev->tag_count; i++) n += strlen(str_or_empty(ev->tags[i])) + 1;
  *size = n;
  return ES_OK;
}

static uint8_t *put_str(uint8_t *p, const char *s, size_t len) {
  memcpy(p, s, len);
  p[len] = '\0';
  return p + len + 1;
}

void es__lmdb_rec_write(uint8_t *dst, const es_event_data_t *ev, const rec_keys_t *keys,
                        uint8_t flags) {
  const char *ct = str_or_empty(ev->content_type);
  bool default_ct = is_default_ct(ct);
  uint8_t *p = dst;
  memcpy(p, ev->id, ES_UUID_LEN);
  p += ES_UUID_LEN;
  *p++ = (uint8_t)(flags | (default_ct ? REC_DEFAULT_CT : 0) | (ev->tag_count ? REC_TAGS : 0));
  p = put_varint(p, keys->version);
  p = put_varint(p, keys->recorded_at);
  p = put_varint(p, ev->occurred_at_unix_ms);
  p = put_varint(p, ev->event_version);
  p = put_varint(p, ev->payload_len);
  p = put_varint(p, keys->stream);
  p = put_varint(p, keys->type);
  p = put_varint(p, ev->metadata_count);
  if (ev->payload_len) memcpy(p, ev->payload, ev->payload_len);
  p += ev->payload_len;
  if (!default_ct) p = put_str(p, ct, strlen(ct));
  const char *corr = str_or_empty(ev->correlation_id);
  p = put_str(p, corr, strlen(corr));
  const char *caus = str_or_empty(ev->causation_id);
  p = put_str(p, caus, strlen(caus));
  for (size_t i = 0; i < ev->metadata_count; i++) {
    const char *k = str_or_empty(ev->metadata[i].key);
    const char *v = str_or_empty(ev->metadata[i].value);
    p = put_str(p, k, strlen(k));
    p = put_str(p, v, strlen(v));
  }
  if (ev->tag_count) p = put_varint(p, ev->tag_count);
  for (size_t i = 0; i < ev->tag_count; i++) {
    const char *t = str_or_empty(ev->tags[i]);
    p = put_str(p, t, strlen(t));
  }
}

void es__lmdb_rec_tags(const rec_view_t *r, const char **out) {
  const char *t = r->tags;
  for (size_t i = 0; i < r->tag_count; i++) {
    out[i] = t;
    t += strlen(t) + 1;
  }
}

/* The next NUL-terminated string at *p before end, or NULL. */
static const char *take_str(const uint8_t **p, const uint8_t *end) {
  const uint8_t *nul = memchr(*p, '\0', (size_t)(end - *p));
  if (!nul) return NULL;
  const char *s = (const char *)*p;
  *p = nul + 1;
  return s;
}

bool es__lmdb_rec_decode(const void *data, size_t size, rec_view_t *out) {
  const uint8_t *p = data;
  const uint8_t *end = p + size;
  if (size < ES_UUID_LEN + 1 + 8) return false; /* the id, flags, eight varints */
  memcpy(out->h.id, p, ES_UUID_LEN);
  p += ES_UUID_LEN;
  out->h.flags = *p++;
  uint64_t occurred, ev_version, payload_len, mcount;
  if (!take_varint(&p, end, &out->h.version) || !take_varint(&p, end, &out->h.recorded_at) ||
      !take_varint(&p, end, &occurred) || !take_varint(&p, end, &ev_version) ||
      !take_varint(&p, end, &payload_len) || !take_varint(&p, end, &out->h.stream) ||
      !take_varint(&p, end, &out->h.type) || !take_varint(&p, end, &mcount))
    return false;
  if (ev_version > UINT32_MAX || payload_len > UINT32_MAX || mcount > UINT16_MAX ||
      out->h.stream == 0)
    return false;
  out->h.occurred_at = occurred;
  out->h.event_version = (uint32_t)ev_version;
  out->h.payload_len = (uint32_t)payload_len;
  out->h.metadata_count = (uint16_t)mcount;
  out->hdr_len = (size_t)(p - (const uint8_t *)data);
  if ((size_t)(end - p) < out->h.payload_len) return false;
  out->payload = p;
  p += out->h.payload_len;
  if (out->h.flags & REC_DEFAULT_CT) {
    out->content_type = ES_DEFAULT_CONTENT_TYPE;
  } else if (!(out->content_type = take_str(&p, end))) {
    return false;
  }
  if (!(out->correlation_id = take_str(&p, end))) return false;
  if (!(out->causation_id = take_str(&p, end))) return false;
  out->metadata = (const char *)p;
  for (size_t i = 0; i < (size_t)2 * out->h.metadata_count; i++)
    if (!take_str(&p, end)) return false;
  out->tags = NULL;
  out->tag_count = 0;
  if (out->h.flags & REC_TAGS) {
    uint64_t tcount;
    if (!take_varint(&p, end, &tcount) || tcount == 0 || tcount > REC_MAX_TAGS) return false;
    out->tags = (const char *)p;
    out->tag_count = (size_t)tcount;
    for (size_t i = 0; i < out->tag_count; i++)
      if (!take_str(&p, end)) return false;
  }
  out->size = size;
  return p == end;
}

/* ---- pages ------------------------------------------------------------ */

/* One block of a page's arena; the page's owner is the newest block. */
typedef struct block {
  struct block *next; /* older block, or NULL */
  size_t used, cap;   /* bytes of data[] */
  alignas(max_align_t) unsigned char data[];
} block_t;

static void blocks_free(void *owner) {
  for (block_t *b = owner, *next; b; b = next) {
    next = b->next;
    free(b);
  }
}

/* n bytes aligned for es_kv_t from the page's arena, or NULL. */
static void *arena_alloc(es_page_t *page, size_t n) {
  block_t *b = page->owner;
  n = (n + alignof(es_kv_t) - 1) & ~(alignof(es_kv_t) - 1);
  if (!b || b->cap - b->used < n) {
    size_t cap = n > BLOCK_MIN_BYTES ? n : BLOCK_MIN_BYTES;
    block_t *nb = malloc(sizeof *nb + cap);
    if (!nb) return NULL;
    nb->next = b;
    nb->used = 0;
    nb->cap = cap;
    page->owner = nb;
    page->release = blocks_free;
    b = nb;
  }
  void *p = b->data + b->used;
  b->used += n;
  return p;
}

/* The copy of name in the page's arena, made once per page; NULL when out
 * of memory. */
static const char *name_copy(es_page_t *page, page_name_t *name) {
  if (name->copy) return name->copy;
  if (name->src[0] == '\0') return name->copy = "";
  size_t len = strlen(name->src);
  char *t = arena_alloc(page, len + 1);
  if (!t) return NULL;
  memcpy(t, name->src, len + 1);
  return name->copy = t;
}

/* Points the view's fields at r. */
static void view_fill(es_recorded_t *v, const rec_view_t *r, uint64_t position) {
  v->stream_version = r->h.version;
  v->global_position = position;
  es_uuid_format(r->h.id, v->event_id);
  v->event_version = r->h.event_version;
  v->content_type = r->content_type;
  v->payload = r->payload;
  v->payload_len = r->h.payload_len;
  v->metadata = NULL; /* es_recorded_size_bound reads metadata: set below */
  v->metadata_count = 0;
  v->correlation_id = r->correlation_id;
  v->causation_id = r->causation_id;
  v->occurred_at_unix_ms = r->h.occurred_at;
  v->recorded_at_unix_ms = r->h.recorded_at;
}

int es__lmdb_page_add(es_page_builder_t *pb, const rec_view_t *r, uint64_t position,
                      const rec_names_t *names) {
  es_page_t *page = pb->page;
  const char *stream_id = name_copy(page, names->stream_id);
  const char *stream_type = name_copy(page, names->stream_type);
  const char *event_type = name_copy(page, names->event_type);
  if (!stream_id || !stream_type || !event_type) return ES_ENOMEM;
  int rc;
  es_recorded_t *v = es_page_builder_slot(pb, &rc);
  if (!v) return rc;
  size_t mcount = r->h.metadata_count;
  size_t var = r->size - r->hdr_len; /* payload and strings, as stored */
  size_t kv_bytes = mcount * sizeof(es_kv_t);
  size_t tag_bytes = r->tag_count * sizeof(const char *);
  es_kv_t *kv = NULL;
  const char **tags = NULL;
  unsigned char *copy = NULL;
  /* One allocation: the metadata and tag arrays first (aligned), then the
   * bytes. */
  unsigned char *mem = arena_alloc(page, kv_bytes + tag_bytes + var);
  if (!mem) return ES_ENOMEM;
  kv = (es_kv_t *)(void *)mem;
  tags = (const char **)(void *)(mem + kv_bytes);
  copy = mem + kv_bytes + tag_bytes;
  memcpy(copy, r->payload, var);

  /* The copy has the stored layout, so each pointer moves by one offset. */
  const unsigned char *base = r->payload;
#define MOVED(ptr) ((const char *)(copy + ((const unsigned char *)(ptr)-base)))
  view_fill(v, r, position);
  v->stream_id = stream_id;
  v->stream_type = stream_type;
  v->event_type = event_type;
  v->payload = copy;
  if (!(r->h.flags & REC_DEFAULT_CT)) v->content_type = MOVED(r->content_type);
  v->correlation_id = MOVED(r->correlation_id);
  v->causation_id = MOVED(r->causation_id);
  const char *m = MOVED(r->metadata);
  const char *t = r->tag_count ? MOVED(r->tags) : NULL;
#undef MOVED
  for (size_t i = 0; i < mcount; i++) {
    kv[i].key = m;
    m += strlen(m) + 1;
    kv[i].value = m;
    m += strlen(m) + 1;
  }
  v->metadata = mcount ? kv : NULL;
  v->metadata_count = mcount;
  for (size_t i = 0; i < r->tag_count; i++) {
    tags[i] = t;
    t += strlen(t) + 1;
  }
  v->tags = r->tag_count ? tags : NULL;
  v->tag_count = r->tag_count;

  /* Not taken when over the budget: its copy stays in the arena until the
   * page is freed (at most one event per page). */
  return es_page_builder_take(pb);
}
