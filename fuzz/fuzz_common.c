/* See fuzz_common.h. */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h" /* es_wire_find_nul */

void fz_fail(const char *file, int line, const char *what) {
  fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
  abort();
}

ProtobufCMessage *fz_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len) {
  static const uint8_t empty[1];
  char field[160];
  if (es_wire_find_nul(d, len ? data : empty, len, field, sizeof field)) {
    /* The server quotes the path in its message: it must be a C string. */
    FZ_CHECK(memchr(field, 0, sizeof field) != NULL);
    return NULL;
  }
  return protobuf_c_message_unpack(d, NULL, len, len ? data : empty);
}

void fz_decode_filter(const Eventstore__V1__Filter *f, es_filter_t *out) {
  memset(out, 0, sizeof *out);
  if (!f) return;
  out->stream_prefix = f->stream_prefix;
  out->event_types = (const char *const *)f->event_types;
  out->event_type_count = f->n_event_types;
}

static size_t dedupe_metadata(es_kv_t *kv, size_t n) {
  size_t out = 0;
  for (size_t i = 0; i < n; i++) {
    size_t j;
    for (j = 0; j < out; j++)
      if (strcmp(kv[j].key, kv[i].key) == 0) break;
    if (j < out)
      kv[j].value = kv[i].value;
    else
      kv[out++] = kv[i];
  }
  return out;
}

int fz_append_translate(const Eventstore__V1__AppendRequest *m, const es_limits_t *limits,
                        fz_append_t *out) {
  memset(out, 0, sizeof *out);
  es_append_req_t *req = &out->req;
  req->stream_id = m->stream_id;
  req->stream_type = m->stream_type;
  req->expected_kind = (int)m->expected_kind;
  req->expected_version = m->expected_version;
  req->event_count = m->n_events;
  if (m->n_events) {
    req->events = calloc(m->n_events, sizeof *req->events);
    out->kv = calloc(m->n_events, sizeof *out->kv);
    if (!req->events || !out->kv) goto oom;
  }
  for (size_t i = 0; i < m->n_events; i++) {
    const Eventstore__V1__EventData *e = m->events[i];
    es_event_data_t *d = &req->events[i];
    d->event_id = e->event_id;
    d->event_type = e->event_type;
    d->event_version = e->event_version;
    d->content_type = e->content_type;
    d->payload = e->payload.data;
    d->payload_len = e->payload.len;
    d->correlation_id = e->correlation_id;
    d->causation_id = e->causation_id;
    d->occurred_at_unix_ms = e->occurred_at_unix_ms;
    if (e->n_metadata) {
      es_kv_t *kv = calloc(e->n_metadata, sizeof *kv);
      if (!kv) goto oom;
      out->kv[out->n_kv++] = kv;
      for (size_t k = 0; k < e->n_metadata; k++) {
        kv[k].key = e->metadata[k]->key;
        kv[k].value = e->metadata[k]->value;
      }
      d->metadata = kv;
      d->metadata_count = e->n_metadata <= limits->max_metadata_entries
                              ? dedupe_metadata(kv, e->n_metadata)
                              : e->n_metadata;
    }
  }
  return 0;
oom:
  fz_append_free(out);
  return -1;
}

void fz_append_free(fz_append_t *a) {
  for (size_t i = 0; i < a->n_kv; i++) free(a->kv[i]);
  free(a->kv);
  free(a->req.events);
  memset(a, 0, sizeof *a);
}
