/*
 * Events and requests as the core sees them: plain C structs with borrowed
 * pointers. Nothing here knows about protobuf or gRPC; server/ translates the
 * wire messages into these types, and backends store and return them.
 *
 * Strings are NUL-terminated UTF-8. Pointers in request structs are borrowed
 * from the caller for the duration of the call. Pointers in es_recorded_t are
 * owned by the page (es_page_t) that holds the event: valid until
 * es_page_free().
 */
#ifndef ES_EVENT_H
#define ES_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ES_UUID_LEN 16
#define ES_UUID_STR_LEN 36 /* 8-4-4-4-12 */
#define ES_DEFAULT_CONTENT_TYPE "application/octet-stream"

typedef struct es_kv {
  const char *key;
  const char *value;
} es_kv_t;

/* An event as a client appends it (wire: EventData). */
typedef struct es_event_data {
  const char *event_id;     /* text as given; "" = assign a UUIDv7 */
  const char *event_type;   /* required */
  uint32_t event_version;   /* stored as given */
  const char *content_type; /* "" = ES_DEFAULT_CONTENT_TYPE */
  const uint8_t *payload;   /* may be NULL when payload_len == 0 */
  size_t payload_len;
  const es_kv_t *metadata; /* metadata_count entries */
  size_t metadata_count;
  const char *correlation_id;   /* "" = none */
  const char *causation_id;     /* "" = none */
  uint64_t occurred_at_unix_ms; /* 0 = not given */
  /* Filled by es_append_prepare(): the parsed or assigned id. Backends use
   * this, never event_id. */
  uint8_t id[ES_UUID_LEN];
  /* Filled by es_append_prepare(): id was assigned there (event_id was
   * empty), a fresh UUIDv7 that no store holds yet - unless a backend
   * retries a commit whose outcome it does not know, and finds it there. */
  bool id_assigned;
  const char *const *tags; /* tag_count tags, in the order given (Extension 1) */
  size_t tag_count;
} es_event_data_t;

typedef enum es_expected_kind {
  ES_EXPECT_ANY = 0,
  ES_EXPECT_NO_STREAM = 1,
  ES_EXPECT_STREAM_EXISTS = 2,
  ES_EXPECT_EXACT = 3,
} es_expected_kind_t;

typedef enum es_direction {
  ES_FORWARD = 0,
  ES_BACKWARD = 1,
} es_direction_t;

/* Wire: QueryItem (Extension 1). An event matches when its type is one of
 * event_types (or there are none) AND it carries every one of tags. */
typedef struct es_query_item {
  const char *const *event_types; /* event_type_count exact names; 0 = any type */
  size_t event_type_count;
  const char *const *tags; /* tag_count tags the event must all carry; 0 = any */
  size_t tag_count;
} es_query_item_t;

/* Wire: AppendCondition. The append fails (ES_ECONDITION) when an event with
 * global_position > after matches one of the items. */
typedef struct es_append_condition {
  const es_query_item_t *items; /* item_count entries, OR'ed (1..16 once prepared) */
  size_t item_count;
  uint64_t after; /* 0 = the whole log */
} es_append_condition_t;

/* Wire: AppendRequest. expected_kind / events are validated by
 * es_append_prepare() before a backend sees the request. */
typedef struct es_append_req {
  const char *stream_id;
  const char *stream_type;   /* "" = no opinion */
  int expected_kind;         /* es_expected_kind_t; int so bad wire values survive to validation */
  uint64_t expected_version; /* only with ES_EXPECT_EXACT */
  es_event_data_t *events;   /* event_count entries; prepare fills their id */
  size_t event_count;
  const es_append_condition_t *condition; /* NULL = none (Extension 1) */
} es_append_req_t;

/* Wire: AppendManyRequest (Extension 1): all appends or none, one contiguous
 * run of positions in request order. The appends' own `condition` is NULL;
 * the request's condition is checked once, against the log before it. */
typedef struct es_append_many_req {
  es_append_req_t *appends; /* append_count entries */
  size_t append_count;
  const es_append_condition_t *condition; /* NULL = none */
} es_append_many_req_t;

/* Wire: AppendResponse. */
typedef struct es_append_result {
  uint64_t first_version;
  uint64_t last_version;
  uint64_t first_position;
  uint64_t last_position;
  uint64_t recorded_at_unix_ms;
  bool duplicate;
} es_append_result_t;

/* Wire: Filter. Every part given must match. */
typedef struct es_filter {
  const char *stream_prefix;      /* NULL or "" = all streams */
  const char *const *event_types; /* event_type_count exact names */
  size_t event_type_count;        /* 0 = all types */
  const es_query_item_t *items;   /* item_count items, OR'ed (Extension 1) */
  size_t item_count;              /* 0 = no tag/type query */
} es_filter_t;

/* Wire: ReadStreamRequest, after es_read_stream_prepare(): max_count is the
 * effective page size (1..limit) and max_bytes the response budget. */
typedef struct es_read_stream_req {
  const char *stream_id;
  uint64_t from_version;
  uint32_t max_count;
  int direction;    /* es_direction_t */
  size_t max_bytes; /* stop before the page's size bound exceeds this (≥ 1 event) */
} es_read_stream_req_t;

/* Wire: ReadAllRequest, after es_read_all_prepare(). */
typedef struct es_read_all_req {
  uint64_t from_position;
  uint32_t max_count;
  int direction; /* es_direction_t */
  es_filter_t filter;
  size_t max_bytes;
  uint64_t max_scan; /* with a filter: examine at most this many events */
} es_read_all_req_t;

/* An event as the store returns it (wire: RecordedEvent). */
typedef struct es_recorded {
  const char *stream_id;
  const char *stream_type; /* "" if the stream has none */
  uint64_t stream_version;
  uint64_t global_position;
  char event_id[ES_UUID_STR_LEN + 1];
  const char *event_type;
  uint32_t event_version;
  const char *content_type;
  const uint8_t *payload;
  size_t payload_len;
  const es_kv_t *metadata;
  size_t metadata_count;
  const char *correlation_id;
  const char *causation_id;
  uint64_t occurred_at_unix_ms;
  uint64_t recorded_at_unix_ms;
  const char *const *tags; /* tag_count tags as appended (NULL when 0) */
  size_t tag_count;
} es_recorded_t;

/* One page of a read. `next` is next_version (ReadStream) or next_position
 * (ReadAll); `last` is the stream's last version or the head position. */
typedef struct es_page {
  es_recorded_t *events; /* count entries, owned by the page */
  size_t count;
  uint64_t next;
  bool is_end;
  uint64_t last;
  /* NULL, or `count` opaque encodings of the events, one per event, supplied
   * by a page source above the backends (server/tail.c) that holds them
   * encoded already; owned by `owner`. Backends leave it NULL. */
  const void *const *encoded;
  /* Owner of whatever the events point into; released by es_page_free(). */
  void *owner;
  void (*release)(void *owner);
} es_page_t;

/* Frees the events array and releases the owner. Safe on a zeroed page;
 * leaves the page zeroed. */
void es_page_free(es_page_t *page);

/* True when the event matches the filter (NULL filter = everything). The
 * event is taken to carry no tags: see es_filter_match_tags. */
bool es_filter_match(const es_filter_t *filter, const char *stream_id, const char *event_type);

/* The same with the event's tags, which Filter.items look at. */
bool es_filter_match_tags(const es_filter_t *filter, const char *stream_id, const char *event_type,
                          const char *const *tags, size_t tag_count);

/* True when the event (its type and tags) matches one of items[0..n): its
 * type is one of the item's types (or the item has none) AND its tags
 * include every tag of the item. n == 0 matches nothing. */
bool es_query_match(const es_query_item_t *items, size_t n, const char *event_type,
                    const char *const *tags, size_t tag_count);

/* True when the filter selects a subset (prefix, types or items given). */
bool es_filter_active(const es_filter_t *filter);

/* An upper bound of the protobuf encoding of ev as a RecordedEvent inside a
 * repeated field, used to keep pages under the message size limit. */
size_t es_recorded_size_bound(const es_recorded_t *ev);
/* What ev's tags add to that bound. Kept apart because a backend without
 * tags (ES_BACKEND_TAGS, backend.h) may leave the two tag fields unset in the
 * events it builds; the page builder (backend_impl.h) counts both, and the
 * read wrappers clear the tag fields of such a backend's pages. */
size_t es_recorded_tags_size(const es_recorded_t *ev);

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t es_now_unix_ms(void);

#ifdef __cplusplus
}
#endif

#endif /* ES_EVENT_H */
