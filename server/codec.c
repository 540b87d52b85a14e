/*
 * Wire requests → core requests (see codec.h). Nothing here allocates on its
 * own: the caller's allocator decides the lifetime (the call's arena in the
 * server, a list freed per input in the fuzzers).
 */
#include "codec.h"

#include <stdio.h>
#include <string.h>

#include "es/error.h"
#include "wire_check.h"

ProtobufCMessage *es_codec_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                                  size_t len, ProtobufCAllocator *alloc, char *msg, size_t msglen) {
  static const uint8_t empty[1];
  if (!len) data = empty;
  char field[160];
  if (es_wire_find_nul(d, data, len, field, sizeof field)) {
    snprintf(msg, msglen, "%s: contains U+0000, which is not allowed in strings", field);
    return NULL;
  }
  ProtobufCMessage *m = protobuf_c_message_unpack(d, alloc, len, data);
  if (!m) snprintf(msg, msglen, "request is not a valid %s", d->name);
  return m;
}

/* Map entries may repeat a key on the wire; protobuf semantics keep the last
 * value. Only done when the count is within the limit (otherwise validation
 * rejects the request anyway), which keeps this quadratic loop small. */
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

/* Query items borrow the wire's string arrays; only the item array is new. */
static int decode_items(Eventstore__V1__QueryItem *const *items, size_t n, es_codec_alloc_fn alloc,
                        void *ctx, const es_query_item_t **out) {
  *out = NULL;
  if (!n) return ES_OK;
  es_query_item_t *v = alloc(ctx, n * sizeof *v);
  if (!v) return ES_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    v[i].event_types = (const char *const *)items[i]->event_types;
    v[i].event_type_count = items[i]->n_event_types;
    v[i].tags = (const char *const *)items[i]->tags;
    v[i].tag_count = items[i]->n_tags;
  }
  *out = v;
  return ES_OK;
}

/* An absent condition is NULL; a present one, even without items (which
 * validation refuses), is a condition. */
static int decode_condition(const Eventstore__V1__AppendCondition *m, es_codec_alloc_fn alloc,
                            void *ctx, const es_append_condition_t **out) {
  *out = NULL;
  if (!m) return ES_OK;
  es_append_condition_t *c = alloc(ctx, sizeof *c);
  if (!c) return ES_ENOMEM;
  c->after = m->after;
  c->item_count = m->n_fail_if_events_match;
  if (decode_items(m->fail_if_events_match, m->n_fail_if_events_match, alloc, ctx, &c->items))
    return ES_ENOMEM;
  *out = c;
  return ES_OK;
}

int es_codec_append(const Eventstore__V1__AppendRequest *m, const es_limits_t *limits,
                    es_codec_alloc_fn alloc, void *ctx, es_append_req_t *out) {
  memset(out, 0, sizeof *out);
  out->stream_id = m->stream_id;
  out->stream_type = m->stream_type;
  out->expected_kind = (int)m->expected_kind;
  out->expected_version = m->expected_version;
  out->event_count = m->n_events;
  if (decode_condition(m->condition, alloc, ctx, &out->condition)) return ES_ENOMEM;
  if (m->n_events) {
    out->events = alloc(ctx, m->n_events * sizeof *out->events);
    if (!out->events) return ES_ENOMEM;
  }
  for (size_t i = 0; i < m->n_events; i++) {
    const Eventstore__V1__EventData *e = m->events[i];
    es_event_data_t *d = &out->events[i];
    d->event_id = e->event_id;
    d->event_type = e->event_type;
    d->event_version = e->event_version;
    d->content_type = e->content_type;
    d->payload = e->payload.data;
    d->payload_len = e->payload.len;
    d->correlation_id = e->correlation_id;
    d->causation_id = e->causation_id;
    d->occurred_at_unix_ms = e->occurred_at_unix_ms;
    d->tags = (const char *const *)e->tags;
    d->tag_count = e->n_tags;
    if (e->n_metadata) {
      es_kv_t *kv = alloc(ctx, e->n_metadata * sizeof *kv);
      if (!kv) return ES_ENOMEM;
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
  return ES_OK;
}

int es_codec_append_many(const Eventstore__V1__AppendManyRequest *m, const es_limits_t *limits,
                         es_codec_alloc_fn alloc, void *ctx, es_append_many_req_t *out) {
  memset(out, 0, sizeof *out);
  out->append_count = m->n_appends;
  if (m->n_appends) {
    out->appends = alloc(ctx, m->n_appends * sizeof *out->appends);
    if (!out->appends) return ES_ENOMEM;
  }
  for (size_t i = 0; i < m->n_appends; i++)
    if (es_codec_append(m->appends[i], limits, alloc, ctx, &out->appends[i])) return ES_ENOMEM;
  return decode_condition(m->condition, alloc, ctx, &out->condition);
}

/* An absent filter (NULL) is the empty filter: every event matches. */
static int decode_filter(const Eventstore__V1__Filter *f, es_codec_alloc_fn alloc, void *ctx,
                         es_filter_t *out) {
  memset(out, 0, sizeof *out);
  if (!f) return ES_OK;
  out->stream_prefix = f->stream_prefix;
  out->event_types = (const char *const *)f->event_types;
  out->event_type_count = f->n_event_types;
  out->item_count = f->n_items;
  return decode_items(f->items, f->n_items, alloc, ctx, &out->items);
}

void es_codec_read_stream(const Eventstore__V1__ReadStreamRequest *m, es_read_stream_req_t *out) {
  memset(out, 0, sizeof *out);
  out->stream_id = m->stream_id;
  out->from_version = m->from_version;
  out->max_count = m->max_count;
  /* Unknown enum values stay integers (protobuf-c): prepare refuses them. */
  out->direction = (int)m->direction;
}

int es_codec_read_all(const Eventstore__V1__ReadAllRequest *m, es_codec_alloc_fn alloc, void *ctx,
                      es_read_all_req_t *out) {
  memset(out, 0, sizeof *out);
  out->from_position = m->from_position;
  out->max_count = m->max_count;
  out->direction = (int)m->direction;
  return decode_filter(m->filter, alloc, ctx, &out->filter);
}

int es_codec_subscribe(const Eventstore__V1__SubscribeRequest *m, es_codec_alloc_fn alloc,
                       void *ctx, es_sub_opts_t *out) {
  memset(out, 0, sizeof *out);
  out->from_position = m->from_position;
  out->from_end = m->from_end;
  out->checkpoint_interval = m->checkpoint_interval;
  return decode_filter(m->filter, alloc, ctx, &out->filter);
}

void es_codec_recorded(const es_recorded_t *ev, Eventstore__V1__RecordedEvent *m,
                       Eventstore__V1__RecordedEvent__MetadataEntry *entries,
                       Eventstore__V1__RecordedEvent__MetadataEntry **ptrs) {
  eventstore__v1__recorded_event__init(m);
  m->stream_id = (char *)ev->stream_id;
  m->stream_type = (char *)(ev->stream_type ? ev->stream_type : "");
  m->stream_version = ev->stream_version;
  m->global_position = ev->global_position;
  m->event_id = (char *)ev->event_id;
  m->event_type = (char *)ev->event_type;
  m->event_version = ev->event_version;
  m->content_type = (char *)ev->content_type;
  m->payload.data = (uint8_t *)ev->payload;
  m->payload.len = ev->payload_len;
  m->correlation_id = (char *)(ev->correlation_id ? ev->correlation_id : "");
  m->causation_id = (char *)(ev->causation_id ? ev->causation_id : "");
  m->occurred_at_unix_ms = ev->occurred_at_unix_ms;
  m->recorded_at_unix_ms = ev->recorded_at_unix_ms;
  for (size_t i = 0; i < ev->metadata_count; i++) {
    eventstore__v1__recorded_event__metadata_entry__init(&entries[i]);
    entries[i].key = (char *)ev->metadata[i].key;
    entries[i].value = (char *)ev->metadata[i].value;
    ptrs[i] = &entries[i];
  }
  m->metadata = ev->metadata_count ? ptrs : NULL;
  m->n_metadata = ev->metadata_count;
  m->tags = ev->tag_count ? (char **)ev->tags : NULL;
  m->n_tags = ev->tag_count;
}
