/*
 * Internals of the LMDB backend shared by its source files: the stored
 * record format (lmdb_record.c) and the page arena that reads copy into.
 *
 * A stored event (the value in the `log` database, key = its global
 * position) is a header followed by its variable parts:
 *
 *   id (16 bytes) | flags (1 byte) | version | recorded_at | occurred_at |
 *   event_version | payload_len | stream number | event type number |
 *   metadata_count | payload | content_type \0 (absent when it is the
 *   default) | correlation_id \0 | causation_id \0 |
 *   metadata key \0 value \0 ... |
 *   tag_count, tag \0 ... (only with REC_TAGS)
 *
 * The eight integers are unsigned LEB128 varints (7 bits a byte, low first):
 * a typical header takes about 30 bytes where fixed-width fields took 56,
 * which is a tenth of an event with a 256-byte payload, and what decides how
 * many events share a 4 KiB page of the log. Decoding copies the header out
 * into rec_hdr_t; LMDB hands out values only 2-byte aligned, so nothing is
 * ever cast in place.
 *
 * Names are stored once, not in every record: the stream by its number (the
 * position of its first event; the `stream_names` table gives its id and
 * type) and the event type by its number in the `types` dictionary (0 is the
 * empty type, which has no entry). With 256-byte payloads that is what puts
 * 13 events on a page of the log instead of 12. A read resolves each number
 * once per page through a small cache (backend_lmdb.c), and copies each name
 * into the page once, however many of its events the page holds.
 *
 * Tags (Extension 1, record format 4) come last, in the order appended,
 * behind a flag: an event without tags stores not one byte more than in
 * format 3 (the flag bit was free). Each tag's positions are also in the
 * `tags` table (backend_lmdb.c), which reads by query walk.
 */
#ifndef ES_LMDB_INTERNAL_H
#define ES_LMDB_INTERNAL_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/backend_impl.h"
#include "es/event.h"

/* rec_hdr_t.flags */
enum {
  REC_FIRST = 1,      /* first event of its batch */
  REC_LAST = 2,       /* last event of its batch */
  REC_DEFAULT_CT = 4, /* content type is ES_DEFAULT_CONTENT_TYPE (not stored) */
  REC_TAGS = 8,       /* a tag count and the tags follow the metadata */
  /* An AppendMany of several appends: the first event of a batch that is
   * not the request's first append, the last of one that is not its last
   * (es_stored_event_t.joined_prev / joined_next: a retry is a duplicate
   * only of a whole request). */
  REC_JOINED_PREV = 16,
  REC_JOINED_NEXT = 32,
};

/* Most tags one event may carry here (validation allows 32 by default). */
#define REC_MAX_TAGS 255

/* The header, decoded. */
typedef struct rec_hdr {
  uint8_t id[ES_UUID_LEN]; /* binary event id */
  uint64_t version;        /* stream version */
  uint64_t recorded_at;    /* server clock at commit (ms), the same for a batch */
  uint64_t occurred_at;    /* client clock (ms), as given */
  uint32_t event_version;  /* schema version, as given */
  uint32_t payload_len;    /* bytes of payload */
  uint64_t stream;         /* the stream's number (its first event's position) */
  uint64_t type;           /* the event type's number, 0 = "" */
  uint16_t metadata_count; /* key/value pairs at the end */
  uint8_t flags;           /* REC_* */
} rec_hdr_t;

/* A stored record taken apart: pointers into the bytes it was decoded from. */
typedef struct rec_view {
  rec_hdr_t h;
  const uint8_t *payload;
  const char *content_type;
  const char *correlation_id;
  const char *causation_id;
  const char *metadata; /* metadata_count pairs of NUL-terminated strings */
  const char *tags;     /* tag_count NUL-terminated strings (NULL when none) */
  size_t tag_count;
  size_t hdr_len; /* bytes of the stored header (the payload follows) */
  size_t size;    /* bytes of the whole record */
} rec_view_t;

/* The numbers and stamps of a record beside its event data. */
typedef struct rec_keys {
  uint64_t stream;      /* the stream's number */
  uint64_t type;        /* the event type's number */
  uint64_t version;     /* stream version */
  uint64_t recorded_at; /* ms */
} rec_keys_t;

/* Bytes the record of ev takes with those keys (UINT64_MAX for all gives an
 * upper bound). ES_ETOOBIG when a field does not fit the format (err names
 * it). */
int es__lmdb_rec_size(const es_event_data_t *ev, const rec_keys_t *keys, size_t *size,
                      es_err_t *err);

/* Writes the record of ev into dst (es__lmdb_rec_size bytes for the same
 * keys). */
void es__lmdb_rec_write(uint8_t *dst, const es_event_data_t *ev, const rec_keys_t *keys,
                        uint8_t flags);

/* Points out[0..r->tag_count) at r's tags (out holds REC_MAX_TAGS). */
void es__lmdb_rec_tags(const rec_view_t *r, const char **out);

/* Takes apart size bytes at data. false when they are not a well-formed
 * record (a damaged store). */
bool es__lmdb_rec_decode(const void *data, size_t size, rec_view_t *out);

/* Pages are built with core's es_page_builder_t (backend_impl.h). Events
 * are copied into an arena of blocks owned by the page (page->owner), so that
 * the page outlives the read transaction: a long-held page must not pin an
 * old snapshot, which would keep LMDB from reusing pages and make the file
 * grow. */

/* A name the events of a page refer to: where it was read (the read
 * transaction's memory, or the request's), and its copy in the page's arena,
 * made when the first event that names it is added (NULL until then). */
typedef struct page_name {
  const char *src;
  const char *copy;
} page_name_t;

/* The names of one event. */
typedef struct rec_names {
  page_name_t *stream_id, *stream_type, *event_type;
} rec_names_t;

/* Tries to add the record r at position with its names. Returns 1 when
 * added (copied), 0 when the page is full by count or bytes (r is not
 * added), ES_ENOMEM. */
int es__lmdb_page_add(es_page_builder_t *pb, const rec_view_t *r, uint64_t position,
                      const rec_names_t *names);

/* mkdir -p dir (mode 0700 for what it creates): 0 or an errno value. */
int es__lmdb_make_dirs(const char *dir);

/* ES_EINTERNAL (err names dir) when the data file of the open environment
 * env ends before its last committed page: LMDB would fault reading it. */
int es__lmdb_check_size(MDB_env *env, const char *dir, es_err_t *err);

#endif /* ES_LMDB_INTERNAL_H */
