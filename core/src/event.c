/*
 * Events as the core sees them: pages, filters, size bounds and the clock.
 *
 * A page (es_page_t) is the one container that crosses the backend interface
 * with owned memory: the events array comes from malloc() and everything the
 * events point into belongs to `owner`, released through `release`. So a
 * backend may hand out pointers into its own storage (holding a reference in
 * owner) or into one arena per page, and callers never need to know which.
 *
 * The filter rules are those of API.md: a stream prefix (byte-wise prefix of
 * stream_id) and a set of exact event type names; both given, both must match.
 * Extension 1 adds query items (es_query_match): an item matches an event
 * whose type is one of its types (or it has none) and whose tags include all
 * of its tags; items are OR'ed, and a filter with items passes an event when
 * its prefix and types pass it AND an item matches. Lists are short (at most
 * 32 types and tags per item, 32 tags per event, validate.h), so matching is
 * plain nested loops of strcmp: no allocation, no sorting, any thread.
 *
 * es_recorded_size_bound() must never underestimate: pages are trimmed with it
 * to stay under the gRPC message limit, and one byte too few there means a
 * RESOURCE_EXHAUSTED for a reader that did nothing wrong. It therefore counts
 * every field as present, with the widest varints (10 bytes).
 */
#include "es/event.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void es_page_free(es_page_t *page) {
  if (page == NULL) return;
  free(page->events);
  if (page->release != NULL) page->release(page->owner);
  memset(page, 0, sizeof *page);
}

static bool has_tag(const char *const *tags, size_t n, const char *tag) {
  for (size_t i = 0; i < n; i++)
    if (tags[i] != NULL && strcmp(tags[i], tag) == 0) return true;
  return false;
}

static bool item_match(const es_query_item_t *item, const char *event_type, const char *const *tags,
                       size_t tag_count) {
  if (item->event_type_count > 0) {
    size_t i;
    for (i = 0; i < item->event_type_count; i++)
      if (item->event_types[i] != NULL && strcmp(item->event_types[i], event_type) == 0) break;
    if (i == item->event_type_count) return false;
  }
  for (size_t i = 0; i < item->tag_count; i++)
    if (!has_tag(tags, tag_count, item->tags[i] ? item->tags[i] : "")) return false;
  return true;
}

bool es_query_match(const es_query_item_t *items, size_t n, const char *event_type,
                    const char *const *tags, size_t tag_count) {
  if (event_type == NULL) event_type = "";
  if (tags == NULL) tag_count = 0;
  for (size_t i = 0; i < n; i++)
    if (item_match(&items[i], event_type, tags, tag_count)) return true;
  return false;
}

bool es_filter_match(const es_filter_t *filter, const char *stream_id, const char *event_type) {
  return es_filter_match_tags(filter, stream_id, event_type, NULL, 0);
}

bool es_filter_match_tags(const es_filter_t *filter, const char *stream_id, const char *event_type,
                          const char *const *tags, size_t tag_count) {
  if (filter == NULL) return true;
  if (stream_id == NULL) stream_id = "";
  if (event_type == NULL) event_type = "";
  const char *prefix = filter->stream_prefix;
  if (prefix != NULL && prefix[0] != '\0') {
    /* strncmp stops at stream_id's NUL, so a shorter stream_id cannot match. */
    if (strncmp(stream_id, prefix, strlen(prefix)) != 0) return false;
  }
  if (filter->event_type_count > 0) {
    size_t i;
    for (i = 0; i < filter->event_type_count; i++) {
      const char *t = filter->event_types[i];
      if (t != NULL && strcmp(t, event_type) == 0) break;
    }
    if (i == filter->event_type_count) return false;
  }
  return filter->item_count == 0 ||
         es_query_match(filter->items, filter->item_count, event_type, tags, tag_count);
}

bool es_filter_active(const es_filter_t *filter) {
  if (filter == NULL) return false;
  return (filter->stream_prefix != NULL && filter->stream_prefix[0] != '\0') ||
         filter->event_type_count > 0 || filter->item_count > 0;
}

/* A length-delimited field: 1 tag byte (field numbers are all ≤ 15), a length
 * varint of at most 10 bytes, the bytes. */
#define FIELD_OVERHEAD ((size_t)11)
/* A varint field: 1 tag byte and at most 10 bytes. */
#define VARINT_FIELD ((size_t)11)
/* A map entry is a nested message: tag + length of the entry, then key and
 * value as two length-delimited fields: three times FIELD_OVERHEAD. */
#define MAP_ENTRY_OVERHEAD (3 * FIELD_OVERHEAD)

static size_t str_field(const char *s) {
  return (s != NULL ? strlen(s) : 0) + FIELD_OVERHEAD;
}

size_t es_recorded_size_bound(const es_recorded_t *ev) {
  size_t n = FIELD_OVERHEAD; /* the RecordedEvent's own tag and length in the page */
  n += str_field(ev->stream_id);
  n += str_field(ev->stream_type);
  n += str_field(ev->event_id);
  n += str_field(ev->event_type);
  n += str_field(ev->content_type);
  n += ev->payload_len + FIELD_OVERHEAD;
  n += str_field(ev->correlation_id);
  n += str_field(ev->causation_id);
  /* stream_version, global_position, event_version, occurred_at, recorded_at */
  n += 5 * VARINT_FIELD;
  for (size_t i = 0; i < ev->metadata_count; i++) {
    const es_kv_t *kv = &ev->metadata[i];
    n += MAP_ENTRY_OVERHEAD;
    n += kv->key != NULL ? strlen(kv->key) : 0;
    n += kv->value != NULL ? strlen(kv->value) : 0;
  }
  return n;
}

size_t es_recorded_tags_size(const es_recorded_t *ev) {
  size_t n = 0;
  for (size_t i = 0; i < ev->tag_count; i++) n += str_field(ev->tags[i]);
  return n;
}

uint64_t es_now_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
