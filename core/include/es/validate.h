/*
 * Limits and validation: every input rule of the API contract (API.md,
 * "Details" 5 and 6) in one place, checked before a backend sees a request.
 *
 * A prepare function validates a request and normalizes it (default and
 * capped page sizes, assigned event ids). On failure it returns ES_EINVAL or
 * ES_ETOOBIG and err->msg names the field (with its index for repeated fields)
 * and the limit, e.g. "events[3].event_type: 300 bytes, limit 256".
 * Checks happen in field order, so the first bad field is the one reported.
 */
#ifndef ES_VALIDATE_H
#define ES_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/error.h"
#include "es/event.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_limits {
  size_t max_request_bytes;      /* whole request message (enforced by the server) */
  uint32_t max_append_events;    /* events per Append */
  uint32_t max_metadata_entries; /* per event */
  size_t max_metadata_bytes;     /* per event: sum of key and value bytes */
  size_t max_id_bytes; /* stream_id, event_type, stream_type, correlation_id, causation_id,
                          stream_prefix, filter event types */
  size_t max_content_type_bytes;
  size_t max_event_bytes;          /* one event: payload + metadata + strings */
  uint32_t default_page_events;    /* max_count 0 */
  uint32_t max_page_events;        /* larger max_count is capped */
  size_t max_page_bytes;           /* response budget of a page (≥ 1 event always) */
  uint32_t max_filter_event_types; /* entries of Filter.event_types */
  uint64_t max_scan;               /* events a filtered ReadAll examines per page */
  uint32_t default_checkpoint_interval;
  /* Extension 1. */
  uint32_t max_event_tags;       /* EventData.tags entries per event */
  size_t max_tag_bytes;          /* one tag */
  uint32_t max_query_items;      /* QueryItems of a condition or a filter */
  uint32_t max_query_item_types; /* event_types of one QueryItem */
  uint32_t max_query_item_tags;  /* tags of one QueryItem */
  uint32_t max_many_appends;     /* appends of one AppendMany (events: max_append_events) */
} es_limits_t;

/* Fills the defaults of API.md: 4 MiB request, 1000 events per Append, 64
 * metadata entries and 64 KiB per event, 256-byte ids, 128-byte content type,
 * pages of 100 by default and at most 1000 within 4 MiB, checkpoint every 1000. */
void es_limits_default(es_limits_t *limits);

/* Validates an Append and assigns ids: each event's `id` is parsed from
 * event_id, or a fresh UUIDv7 when event_id is empty. The same id twice in one
 * request is ES_EINVAL. Tags: at most max_event_tags per event, each 1..
 * max_tag_bytes of UTF-8 without control characters, none twice in an event.
 * A condition, when given, as es_condition_validate. */
int es_append_prepare(const es_limits_t *limits, es_append_req_t *req, es_err_t *err);

/* Validates an AppendMany (Extension 1) in field order: 1..max_many_appends
 * appends with at most max_append_events events in all (request-wide limits:
 * err->has_append_index stays 0); each append as es_append_prepare, but
 * without a condition of its own; no event id twice in the whole request;
 * then the request's condition. A failure of one append names it in the
 * message ("appends[2].events[0].tags[1]: ...") and in err->append_index. */
int es_append_many_prepare(const es_limits_t *limits, es_append_many_req_t *req, es_err_t *err);

/* Validates an append condition (field names start with `field`): 1..
 * max_query_items items, each with at most max_query_item_types types and
 * max_query_item_tags tags. Only counts are checked: a query's strings are
 * matched as given (API.md, Extension 1, settled detail 7). */
int es_condition_validate(const es_limits_t *limits, const es_append_condition_t *cond,
                          const char *field, es_err_t *err);

/* Validates a ReadStream and resolves max_count and max_bytes. */
int es_read_stream_prepare(const es_limits_t *limits, es_read_stream_req_t *req, es_err_t *err);

/* Validates a ReadAll (direction, filter) and resolves max_count, max_bytes,
 * max_scan. */
int es_read_all_prepare(const es_limits_t *limits, es_read_all_req_t *req, es_err_t *err);

/* Validates a subscription filter (the same rules as ReadAll's): the stream
 * prefix, at most max_filter_event_types types, at most max_query_items items
 * (counted like a condition's, es_condition_validate). */
int es_filter_validate(const es_limits_t *limits, const es_filter_t *filter, const char *field,
                       es_err_t *err);

/* Text rules. len is the byte length (s need not be NUL-terminated). */
bool es_utf8_valid(const char *s, size_t len);
/* True when s contains U+0000–U+001F or U+007F–U+009F (s must be valid UTF-8). */
bool es_has_control_chars(const char *s, size_t len);

/* UUIDs: text is exactly 36 lowercase hex digits and dashes in 8-4-4-4-12
 * form. Returns 0 on success, -1 for anything else (uppercase, braces, ...). */
int es_uuid_parse(const char *text, uint8_t out[ES_UUID_LEN]);
/* Writes 36 characters and a NUL to out. */
void es_uuid_format(const uint8_t id[ES_UUID_LEN], char out[ES_UUID_STR_LEN + 1]);
/* A fresh UUIDv7 (RFC 9562): 48-bit Unix ms, then random bits; ids made by
 * one process are strictly increasing. Thread-safe. */
void es_uuid_v7(uint8_t out[ES_UUID_LEN]);

#ifdef __cplusplus
}
#endif

#endif /* ES_VALIDATE_H */
