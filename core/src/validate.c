/*
 * Input validation: every rule of API.md ("Details" 5 and 6, and the limits
 * of Extension 1: tags, query items, conditions, AppendMany) in one place.
 *
 * The server decodes a request into the structs of event.h and hands them to
 * a prepare function before any backend sees them, so a backend may assume
 * valid UTF-8, bounded sizes, known enum values and parsed event ids. The
 * prepare functions check fields in wire order and stop at the first bad one,
 * which makes the reported field deterministic; the message names the field
 * (with its index for repeated fields) and the limit it broke, because "bad
 * request" alone sends a client author to read our source.
 *
 * Strings may be NULL, meaning "" (what a zeroed struct gives). Text is
 * checked for length first (a cheap strlen), then for UTF-8, then for control
 * characters, so that a 4 MiB string is never decoded only to be refused for
 * its length.
 *
 * UUIDv7 ids (RFC 9562) are made here, not in the backends, so that every
 * backend stores the same kind of id. Within a process they are strictly
 * increasing: a mutex guards the last id, and when the clock has not moved
 * (or went back) the next id is the last one plus a random step, carried into
 * the timestamp if need be (RFC 9562 6.2, method 3 with a monotonic random
 * part). Random bytes come from getrandom() through a small pool, refilled
 * under the same mutex, so that a 1000-event Append costs a handful of
 * system calls rather than 1000.
 */
#include "es/validate.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)

void es_limits_default(es_limits_t *limits) {
  memset(limits, 0, sizeof *limits);
  limits->max_request_bytes = 4 * MiB;
  limits->max_append_events = 1000;
  limits->max_metadata_entries = 64;
  limits->max_metadata_bytes = 64 * KiB;
  limits->max_id_bytes = 256;
  limits->max_content_type_bytes = 128;
  /* An event can never be larger than the request that carries it. */
  limits->max_event_bytes = 4 * MiB;
  limits->default_page_events = 100;
  limits->max_page_events = 1000;
  /* 64 KiB of head room under the 4 MiB message limit for the response's own
   * fields and for the size bound's rounding. */
  limits->max_page_bytes = 4 * MiB - 64 * KiB;
  limits->max_filter_event_types = 64;
  limits->max_scan = 10000;
  limits->default_checkpoint_interval = 1000;
  limits->max_event_tags = 32;
  limits->max_tag_bytes = 256;
  limits->max_query_items = 16;
  limits->max_query_item_types = 32;
  limits->max_query_item_tags = 32;
  limits->max_many_appends = 100;
}

/* ---- text rules ---------------------------------------------------------- */

bool es_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    unsigned c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    /* 0x80..0xBF cannot start a sequence; 0xC0 and 0xC1 only start overlong
     * encodings of ASCII; 0xF5.. would encode beyond U+10FFFF. */
    if (c < 0xC2 || c > 0xF4) return false;
    size_t need = c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
    if (len - i - 1 < need) return false; /* truncated */
    unsigned c1 = p[i + 1];
    /* The second byte's range is what rules out overlongs (E0, F0),
     * surrogates U+D800..DFFF (ED) and code points above U+10FFFF (F4). */
    unsigned lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
    if (c1 < lo || c1 > hi) return false;
    for (size_t k = 2; k <= need; k++) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
    }
    i += need + 1;
  }
  return true;
}

bool es_has_control_chars(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < len; i++) {
    if (p[i] < 0x20 || p[i] == 0x7F) return true;
    /* U+0080..U+009F are C2 80..C2 9F; in valid UTF-8 a C2 byte always starts
     * a sequence, so this cannot misfire on a continuation byte. */
    if (p[i] == 0xC2 && i + 1 < len && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F) return true;
  }
  return false;
}

/* ---- UUIDs --------------------------------------------------------------- */

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1; /* uppercase included: the contract wants one canonical form */
}

static bool is_dash_index(int i) {
  return i == 8 || i == 13 || i == 18 || i == 23;
}

int es_uuid_parse(const char *text, uint8_t out[ES_UUID_LEN]) {
  if (text == NULL) return -1;
  uint8_t id[ES_UUID_LEN];
  int n = 0; /* hex digits seen */
  for (int i = 0; i < ES_UUID_STR_LEN; i++) {
    char c = text[i]; /* stops at a NUL before reading past a short string */
    if (is_dash_index(i)) {
      if (c != '-') return -1;
      continue;
    }
    int v = hex_value(c);
    if (v < 0) return -1;
    if (n % 2 == 0) {
      id[n / 2] = (uint8_t)(v << 4);
    } else {
      id[n / 2] |= (uint8_t)v;
    }
    n++;
  }
  if (text[ES_UUID_STR_LEN] != '\0') return -1;
  memcpy(out, id, ES_UUID_LEN);
  return 0;
}

void es_uuid_format(const uint8_t id[ES_UUID_LEN], char out[ES_UUID_STR_LEN + 1]) {
  static const char digits[] = "0123456789abcdef";
  int n = 0;
  for (int i = 0; i < ES_UUID_STR_LEN; i++) {
    if (is_dash_index(i)) {
      out[i] = '-';
      continue;
    }
    uint8_t b = id[n / 2];
    out[i] = digits[n % 2 == 0 ? b >> 4 : b & 0x0F];
    n++;
  }
  out[ES_UUID_STR_LEN] = '\0';
}

static pthread_mutex_t v7_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t v7_ms;       /* last id: 48-bit timestamp */
static uint64_t v7_a;        /* last id: 12 bits after the version */
static uint64_t v7_b;        /* last id: 62 bits after the variant */
static uint8_t v7_pool[256]; /* random bytes not used yet */
static size_t v7_pool_pos = sizeof v7_pool;
static uint64_t v7_fallback; /* state of the generator used if getrandom fails */

/* splitmix64: only for a kernel without getrandom(); the ids stay unique
 * (the monotonic part guarantees that), they just become guessable. */
static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void refill_pool(void) {
  size_t got = 0;
  while (got < sizeof v7_pool) {
    ssize_t n = getrandom(v7_pool + got, sizeof v7_pool - got, 0);
    if (n > 0) {
      got += (size_t)n;
    } else if (n < 0 && errno != EINTR) {
      break;
    }
  }
  if (got < sizeof v7_pool) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    v7_fallback ^= (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32);
    for (size_t i = got; i < sizeof v7_pool; i++) v7_pool[i] = (uint8_t)splitmix64(&v7_fallback);
  }
  v7_pool_pos = 0;
}

/* 64 random bits; caller holds v7_mu. */
static uint64_t random_u64(void) {
  if (v7_pool_pos + 8 > sizeof v7_pool) refill_pool();
  uint64_t v;
  memcpy(&v, v7_pool + v7_pool_pos, 8);
  v7_pool_pos += 8;
  return v;
}

#define V7_B_LIMIT ((uint64_t)1 << 62)
#define V7_A_LIMIT ((uint64_t)1 << 12)
#define V7_MS_MASK (((uint64_t)1 << 48) - 1)

void es_uuid_v7(uint8_t out[ES_UUID_LEN]) {
  uint64_t now = es_now_unix_ms() & V7_MS_MASK;
  pthread_mutex_lock(&v7_mu);
  uint64_t r1 = random_u64();
  uint64_t r2 = random_u64();
  uint64_t ms, a, b;
  if (now > v7_ms) {
    ms = now;
    a = r1 & (V7_A_LIMIT - 1);
    b = r2 & (V7_B_LIMIT - 1);
  } else {
    /* Same millisecond, or the clock went back: step the last id forward by
     * 1..2^32 so that ids stay increasing yet not trivially predictable. A
     * carry out of the 74 random bits moves the timestamp ahead of the clock,
     * which catches up later. */
    ms = v7_ms;
    a = v7_a;
    b = v7_b + 1 + (r2 & 0xFFFFFFFFu);
    if (b >= V7_B_LIMIT) {
      b -= V7_B_LIMIT;
      if (++a == V7_A_LIMIT) {
        a = 0;
        ms = (ms + 1) & V7_MS_MASK;
      }
    }
  }
  v7_ms = ms;
  v7_a = a;
  v7_b = b;
  pthread_mutex_unlock(&v7_mu);

  for (int i = 0; i < 6; i++) out[i] = (uint8_t)(ms >> (40 - 8 * i));
  out[6] = (uint8_t)(0x70 | (a >> 8)); /* version 7 */
  out[7] = (uint8_t)a;
  out[8] = (uint8_t)(0x80 | (b >> 56)); /* variant 10 */
  for (int i = 9; i < 16; i++) out[i] = (uint8_t)(b >> (8 * (15 - i)));
}

/* ---- field checks -------------------------------------------------------- */

#define FIELD_NAME_MAX 128

/* Checks one text field: min..max bytes, UTF-8, and (no_ctl) no control
 * characters. The field name is a printf format, formatted only on failure.
 * OUT: *len_out (may be NULL) the byte length, also on failure. */
static int check_text(es_err_t *err, const char *s, size_t min, size_t max, bool no_ctl,
                      size_t *len_out, const char *field_fmt, ...)
    __attribute__((format(printf, 7, 8)));

static int check_text(es_err_t *err, const char *s, size_t min, size_t max, bool no_ctl,
                      size_t *len_out, const char *field_fmt, ...) {
  if (s == NULL) s = "";
  size_t len = strlen(s);
  if (len_out != NULL) *len_out = len;
  if (len >= min && len <= max && es_utf8_valid(s, len) &&
      !(no_ctl && es_has_control_chars(s, len))) {
    return ES_OK;
  }

  char field[FIELD_NAME_MAX];
  va_list ap;
  va_start(ap, field_fmt);
  vsnprintf(field, sizeof field, field_fmt, ap);
  va_end(ap);
  if (len < min) {
    return es_err_set(err, ES_EINVAL, "%s: empty, must be %zu..%zu bytes", field, min, max);
  }
  if (len > max) return es_err_set(err, ES_EINVAL, "%s: %zu bytes, limit %zu", field, len, max);
  if (!es_utf8_valid(s, len)) return es_err_set(err, ES_EINVAL, "%s: invalid UTF-8", field);
  return es_err_set(err, ES_EINVAL,
                    "%s: control characters (U+0000-U+001F, U+007F-U+009F) not allowed", field);
}

/* Effective page size: 0 means the default, too large is capped (API.md,
 * details 4), and never 0 even with an odd configuration. */
static uint32_t resolve_count(const es_limits_t *limits, uint32_t asked) {
  uint32_t n = asked == 0 ? limits->default_page_events : asked;
  if (n > limits->max_page_events) n = limits->max_page_events;
  return n == 0 ? 1 : n;
}

static int check_direction(es_err_t *err, int direction) {
  if (direction == ES_FORWARD || direction == ES_BACKWARD) return ES_OK;
  return es_err_set(err, ES_EINVAL, "direction: unknown value %d, must be 0..1", direction);
}

/* ---- duplicate ids within one Append --------------------------------------
 *
 * An open-addressing set of event indexes keyed by the parsed id. Checked as
 * each id is parsed, so that the first repeated id is the one reported, in
 * field order like every other check. Small requests use a table on the
 * stack; the default limit (1000 events) needs one allocation.
 */

#define ID_SET_STACK_SLOTS 256

typedef struct id_set {
  uint32_t *slots; /* event index + 1; 0 = empty */
  size_t mask;     /* slot count - 1 (a power of two) */
} id_set_t;

static uint64_t id_hash(const uint8_t id[ES_UUID_LEN]) {
  /* Client ids need not be random (0000…0001 is valid), so mix all bits. */
  uint64_t x, y;
  memcpy(&x, id, 8);
  memcpy(&y, id + 8, 8);
  uint64_t h = x ^ (y * 0x9E3779B97F4A7C15ull);
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 29;
  return h;
}

/* Inserts events[i]; returns the index of an earlier event with the same id,
 * or SIZE_MAX. */
static size_t id_set_insert(id_set_t *set, const es_event_data_t *events, size_t i) {
  size_t slot = (size_t)id_hash(events[i].id) & set->mask;
  while (set->slots[slot] != 0) {
    size_t j = set->slots[slot] - 1;
    if (memcmp(events[j].id, events[i].id, ES_UUID_LEN) == 0) return j;
    slot = (slot + 1) & set->mask;
  }
  set->slots[slot] = (uint32_t)(i + 1);
  return SIZE_MAX;
}

/* ---- Append --------------------------------------------------------------- */

static size_t str_len(const char *s) {
  return s != NULL ? strlen(s) : 0;
}

static int check_event(const es_limits_t *limits, es_event_data_t *ev, size_t i, id_set_t *ids,
                       es_event_data_t *events, es_err_t *err) {
  int rc;
  size_t len;
  size_t total = ev->payload_len; /* the event's size: payload + metadata + strings */

  /* 1 event_id: canonical UUID, or empty for a fresh UUIDv7. */
  len = str_len(ev->event_id);
  ev->id_assigned = len == 0;
  if (len == 0) {
    es_uuid_v7(ev->id);
  } else if (es_uuid_parse(ev->event_id, ev->id) != 0) {
    /* The text itself is not echoed: it may be anything, and messages end up
     * in logs and in grpc-message. */
    return es_err_set(err, ES_EINVAL,
                      "events[%zu].event_id: not a canonical UUID (expected 36 characters, "
                      "lowercase hex in 8-4-4-4-12 form; got %zu bytes)",
                      i, len);
  }
  total += len;
  size_t dup = id_set_insert(ids, events, i);
  if (dup != SIZE_MAX) {
    char text[ES_UUID_STR_LEN + 1];
    es_uuid_format(ev->id, text);
    return es_err_set(err, ES_EINVAL, "events[%zu].event_id: %s duplicates events[%zu].event_id", i,
                      text, dup);
  }

  /* 2 event_type */
  rc = check_text(err, ev->event_type, 1, limits->max_id_bytes, true, &len,
                  "events[%zu].event_type", i);
  if (rc != ES_OK) return rc;
  total += len;

  /* 4 content_type */
  rc = check_text(err, ev->content_type, 0, limits->max_content_type_bytes, false, &len,
                  "events[%zu].content_type", i);
  if (rc != ES_OK) return rc;
  total += len;

  /* 6 metadata: count, then bytes, then text (never decode what is too big). */
  if (ev->metadata_count > limits->max_metadata_entries) {
    return es_err_set(err, ES_EINVAL, "events[%zu].metadata: %zu entries, limit %u", i,
                      ev->metadata_count, limits->max_metadata_entries);
  }
  assert(ev->metadata_count == 0 || ev->metadata != NULL);
  size_t meta_bytes = 0;
  for (size_t k = 0; k < ev->metadata_count; k++) {
    meta_bytes += str_len(ev->metadata[k].key) + str_len(ev->metadata[k].value);
  }
  if (meta_bytes > limits->max_metadata_bytes) {
    return es_err_set(err, ES_EINVAL, "events[%zu].metadata: %zu bytes, limit %zu", i, meta_bytes,
                      limits->max_metadata_bytes);
  }
  for (size_t k = 0; k < ev->metadata_count; k++) {
    rc = check_text(err, ev->metadata[k].key, 0, SIZE_MAX, false, NULL,
                    "events[%zu].metadata[%zu].key", i, k);
    if (rc != ES_OK) return rc;
    rc = check_text(err, ev->metadata[k].value, 0, SIZE_MAX, false, NULL,
                    "events[%zu].metadata[%zu].value", i, k);
    if (rc != ES_OK) return rc;
  }
  total += meta_bytes;

  /* 7, 8 correlation_id, causation_id */
  rc = check_text(err, ev->correlation_id, 0, limits->max_id_bytes, false, &len,
                  "events[%zu].correlation_id", i);
  if (rc != ES_OK) return rc;
  total += len;
  rc = check_text(err, ev->causation_id, 0, limits->max_id_bytes, false, &len,
                  "events[%zu].causation_id", i);
  if (rc != ES_OK) return rc;
  total += len;

  /* 10 tags: count, then each tag's text, then repeats (at most 32 each, so
   * the quadratic comparison is at most 496 strcmp). */
  if (ev->tag_count > limits->max_event_tags) {
    return es_err_set(err, ES_EINVAL, "events[%zu].tags: %zu given, limit %u", i, ev->tag_count,
                      limits->max_event_tags);
  }
  assert(ev->tag_count == 0 || ev->tags != NULL);
  for (size_t k = 0; k < ev->tag_count; k++) {
    rc = check_text(err, ev->tags[k], 1, limits->max_tag_bytes, true, &len, "events[%zu].tags[%zu]",
                    i, k);
    if (rc != ES_OK) return rc;
    total += len;
    for (size_t j = 0; j < k; j++) {
      if (strcmp(ev->tags[j], ev->tags[k]) == 0)
        return es_err_set(err, ES_EINVAL, "events[%zu].tags[%zu]: repeats events[%zu].tags[%zu]", i,
                          k, i, j);
    }
  }

  if (total > limits->max_event_bytes) {
    return es_err_set(err, ES_ETOOBIG, "events[%zu]: %zu bytes, limit %zu (max event size)", i,
                      total, limits->max_event_bytes);
  }
  return ES_OK;
}

/* The counts of a list of query items (field names start with `field`). */
static int check_items(const es_limits_t *limits, const es_query_item_t *items, size_t n,
                       const char *field, es_err_t *err) {
  if (n > limits->max_query_items)
    return es_err_set(err, ES_EINVAL, "%s: %zu given, limit %u", field, n, limits->max_query_items);
  for (size_t i = 0; i < n; i++) {
    if (items[i].event_type_count > limits->max_query_item_types)
      return es_err_set(err, ES_EINVAL, "%s[%zu].event_types: %zu given, limit %u", field, i,
                        items[i].event_type_count, limits->max_query_item_types);
    if (items[i].tag_count > limits->max_query_item_tags)
      return es_err_set(err, ES_EINVAL, "%s[%zu].tags: %zu given, limit %u", field, i,
                        items[i].tag_count, limits->max_query_item_tags);
  }
  return ES_OK;
}

int es_condition_validate(const es_limits_t *limits, const es_append_condition_t *cond,
                          const char *field, es_err_t *err) {
  assert(limits != NULL);
  if (cond == NULL) return ES_OK;
  char name[FIELD_NAME_MAX];
  snprintf(name, sizeof name, "%s.fail_if_events_match", field ? field : "condition");
  if (cond->item_count == 0)
    return es_err_set(err, ES_EINVAL, "%s: 0 given, 1..%u required", name, limits->max_query_items);
  return check_items(limits, cond->items, cond->item_count, name, err);
}

/* es_append_prepare; inside an AppendMany (!own_condition) the append's own
 * condition must be unset. */
static int append_prepare(const es_limits_t *limits, es_append_req_t *req, bool own_condition,
                          es_err_t *err) {
  assert(limits != NULL && req != NULL);
  uint32_t stack_slots[ID_SET_STACK_SLOTS];
  id_set_t ids = {NULL, 0};
  size_t slots = 16;
  int rc;

  /* 1 stream_id, 2 stream_type */
  rc = check_text(err, req->stream_id, 1, limits->max_id_bytes, true, NULL, "stream_id");
  if (rc != ES_OK) goto fail;
  rc = check_text(err, req->stream_type, 0, limits->max_id_bytes, true, NULL, "stream_type");
  if (rc != ES_OK) goto fail;

  /* 3 expected_kind (4 expected_version has no rule of its own) */
  if (req->expected_kind < ES_EXPECT_ANY || req->expected_kind > ES_EXPECT_EXACT) {
    rc = es_err_set(err, ES_EINVAL, "expected_kind: unknown value %d, must be 0..3",
                    req->expected_kind);
    goto fail;
  }

  /* 5 events */
  if (req->event_count == 0) {
    rc = es_err_set(err, ES_EINVAL, "events: 0 given, at least 1");
    goto fail;
  }
  if (req->event_count > limits->max_append_events) {
    rc = es_err_set(err, ES_EINVAL, "events: %zu given, limit %u", req->event_count,
                    limits->max_append_events);
    goto fail;
  }
  assert(req->events != NULL);
  if (req->event_count > UINT32_MAX - 1) { /* slots hold index + 1 in 32 bits */
    rc = es_err_set(err, ES_EINVAL, "events: %zu given, too many", req->event_count);
    goto fail;
  }

  /* At most half full, so that probes stay short. */
  while (slots < 2 * req->event_count) slots *= 2;
  if (slots <= ID_SET_STACK_SLOTS) {
    ids.slots = stack_slots;
    memset(stack_slots, 0, slots * sizeof stack_slots[0]);
  } else {
    ids.slots = calloc(slots, sizeof ids.slots[0]);
    if (ids.slots == NULL) {
      rc = es_err_set(err, ES_ENOMEM, "events: out of memory checking %zu ids", req->event_count);
      goto fail;
    }
  }
  ids.mask = slots - 1;

  for (size_t i = 0; i < req->event_count; i++) {
    rc = check_event(limits, &req->events[i], i, &ids, req->events, err);
    if (rc != ES_OK) goto fail;
  }

  /* 6 condition */
  if (req->condition != NULL && !own_condition) {
    rc = es_err_set(err, ES_EINVAL,
                    "condition: must be unset inside AppendMany (the request's condition "
                    "applies to all of its appends)");
    goto fail;
  }
  rc = es_condition_validate(limits, req->condition, "condition", err);

fail:
  if (ids.slots != NULL && ids.slots != stack_slots) free(ids.slots);
  return rc;
}

int es_append_prepare(const es_limits_t *limits, es_append_req_t *req, es_err_t *err) {
  return append_prepare(limits, req, true, err);
}

/* ---- AppendMany ------------------------------------------------------------ */

/* Puts "appends[i]." before the message of a failed append and names it. */
static int name_append(es_err_t *err, int rc, size_t i) {
  if (err == NULL) return rc;
  char prefix[40];
  int len = snprintf(prefix, sizeof prefix, "appends[%zu].", i);
  size_t keep = strlen(err->msg);
  if (keep + (size_t)len >= sizeof err->msg) keep = sizeof err->msg - 1 - (size_t)len;
  memmove(err->msg + len, err->msg, keep);
  memcpy(err->msg, prefix, (size_t)len);
  err->msg[len + keep] = '\0';
  err->has_append_index = 1;
  err->append_index = i;
  return rc;
}

int es_append_many_prepare(const es_limits_t *limits, es_append_many_req_t *req, es_err_t *err) {
  assert(limits != NULL && req != NULL);
  int rc = ES_OK;
  id_set_t ids = {NULL, 0};
  size_t *where = NULL; /* flat event index -> append index */
  es_event_data_t *flat = NULL;

  /* 1 appends: request-wide limits first, so that nothing is decoded past them. */
  if (req->append_count == 0) return es_err_set(err, ES_EINVAL, "appends: 0 given, at least 1");
  if (req->append_count > limits->max_many_appends)
    return es_err_set(err, ES_EINVAL, "appends: %zu given, limit %u", req->append_count,
                      limits->max_many_appends);
  assert(req->appends != NULL);
  size_t total = 0;
  for (size_t i = 0; i < req->append_count; i++) total += req->appends[i].event_count;
  if (total > limits->max_append_events)
    return es_err_set(err, ES_EINVAL, "appends: %zu events in all, limit %u", total,
                      limits->max_append_events);

  /* Ids across appends: one set over a flat copy of the parsed ids. */
  size_t slots = 16;
  while (slots < 2 * total) slots *= 2;
  ids.slots = calloc(slots, sizeof ids.slots[0]);
  flat = calloc(total ? total : 1, sizeof *flat);
  where = calloc(total ? total : 1, sizeof *where);
  if (ids.slots == NULL || flat == NULL || where == NULL) {
    rc = es_err_set(err, ES_ENOMEM, "appends: out of memory checking %zu ids", total);
    goto out;
  }
  ids.mask = slots - 1;

  size_t seen = 0;
  for (size_t i = 0; i < req->append_count; i++) {
    es_append_req_t *a = &req->appends[i];
    rc = append_prepare(limits, a, false, err);
    if (rc != ES_OK) {
      name_append(err, rc, i);
      goto out;
    }
    for (size_t k = 0; k < a->event_count; k++, seen++) {
      memcpy(flat[seen].id, a->events[k].id, ES_UUID_LEN);
      where[seen] = i;
      size_t dup = id_set_insert(&ids, flat, seen);
      if (dup != SIZE_MAX) {
        /* A repeat within one append was refused by append_prepare. */
        size_t j = where[dup], first = 0;
        for (size_t x = 0; x < j; x++) first += req->appends[x].event_count;
        char text[ES_UUID_STR_LEN + 1];
        es_uuid_format(a->events[k].id, text);
        rc = es_err_set(err, ES_EINVAL,
                        "events[%zu].event_id: %s duplicates appends[%zu].events[%zu]", k, text, j,
                        dup - first);
        name_append(err, rc, i);
        goto out;
      }
    }
  }

  /* 2 condition */
  rc = es_condition_validate(limits, req->condition, "condition", err);

out:
  free(ids.slots);
  free(flat);
  free(where);
  return rc;
}

/* ---- reads ---------------------------------------------------------------- */

int es_read_stream_prepare(const es_limits_t *limits, es_read_stream_req_t *req, es_err_t *err) {
  assert(limits != NULL && req != NULL);
  int rc = check_text(err, req->stream_id, 1, limits->max_id_bytes, true, NULL, "stream_id");
  if (rc != ES_OK) return rc;
  rc = check_direction(err, req->direction);
  if (rc != ES_OK) return rc;
  req->max_count = resolve_count(limits, req->max_count);
  req->max_bytes = limits->max_page_bytes;
  return ES_OK;
}

int es_filter_validate(const es_limits_t *limits, const es_filter_t *filter, const char *field,
                       es_err_t *err) {
  assert(limits != NULL);
  if (filter == NULL) return ES_OK;
  if (field == NULL) field = "filter";
  int rc = check_text(err, filter->stream_prefix, 0, limits->max_id_bytes, false, NULL,
                      "%s.stream_prefix", field);
  if (rc != ES_OK) return rc;
  if (filter->event_type_count > limits->max_filter_event_types) {
    return es_err_set(err, ES_EINVAL, "%s.event_types: %zu given, limit %u", field,
                      filter->event_type_count, limits->max_filter_event_types);
  }
  for (size_t i = 0; i < filter->event_type_count; i++) {
    /* A NULL array with a count is a caller bug; report it as empty names. */
    const char *t = filter->event_types != NULL ? filter->event_types[i] : NULL;
    rc = check_text(err, t, 1, limits->max_id_bytes, false, NULL, "%s.event_types[%zu]", field, i);
    if (rc != ES_OK) return rc;
  }
  char name[FIELD_NAME_MAX];
  snprintf(name, sizeof name, "%s.items", field);
  return check_items(limits, filter->items, filter->item_count, name, err);
}

int es_read_all_prepare(const es_limits_t *limits, es_read_all_req_t *req, es_err_t *err) {
  assert(limits != NULL && req != NULL);
  int rc = check_direction(err, req->direction);
  if (rc != ES_OK) return rc;
  rc = es_filter_validate(limits, &req->filter, "filter", err);
  if (rc != ES_OK) return rc;
  req->max_count = resolve_count(limits, req->max_count);
  req->max_bytes = limits->max_page_bytes;
  req->max_scan = limits->max_scan;
  return ES_OK;
}
