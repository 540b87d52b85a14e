/*
 * The parameters of es_write (pg_util.c), the one statement that commits a
 * group: one binary array per column of the events, two flat arrays of
 * metadata keys and values (each event's slice given by offset and count),
 * the same for tags, with each tag's position for the tag index (Extension
 * 1), the streams' new states, the old and new head and the NOTIFY channel.
 * Binary arrays, built in buffers the committer keeps from group to group:
 * no escaping, no per-event statements.
 */
#include <string.h>

#include "pg_committer.h"

size_t es__pg_event_bytes(const es_event_data_t *ev) {
  size_t n = ev->payload_len;
  for (size_t i = 0; i < ev->metadata_count; i++)
    n += strlen(str_or_empty(ev->metadata[i].key)) + strlen(str_or_empty(ev->metadata[i].value));
  return n;
}

/* es_write's parameters for the appends that passed. */
int es__pg_build_write(committer_t *cm, es_pg_waiter_t **ws, size_t n, uint64_t recorded_at,
                       uint64_t old_head, uint64_t head, const char **vals, int *lens) {
  es_pg_buf_t *p = cm->params;
  size_t rows = 0, metas = 0, tags = 0, dirty = 0;
  for (size_t i = 0; i < n; i++) {
    if (!cm->wrote[i]) continue;
    for (size_t a = 0; a < ws[i]->n_reqs; a++) {
      const es_append_req_t *req = &ws[i]->reqs[a];
      rows += req->event_count;
      for (size_t j = 0; j < req->event_count; j++) {
        metas += req->events[j].metadata_count;
        tags += req->events[j].tag_count;
      }
    }
  }
  for (size_t i = 0; i < cm->n_states; i++) dirty += cm->states[i].dirty;

  static const uint32_t oids[16] = {
      ES_PG_OID_INT8, ES_PG_OID_INT8, ES_PG_OID_INT8, ES_PG_OID_INT8,
      ES_PG_OID_INT4, ES_PG_OID_INT4, ES_PG_OID_INT4, ES_PG_OID_UUID,
      ES_PG_OID_TEXT, ES_PG_OID_TEXT, ES_PG_OID_TEXT, ES_PG_OID_TEXT,
      ES_PG_OID_TEXT, ES_PG_OID_INT4, ES_PG_OID_INT4, ES_PG_OID_BYTEA};
  for (int k = 0; k < 16; k++)
    if (es__pg_array_begin(&p[k], oids[k], rows)) return ES_ENOMEM;
  if (es__pg_array_begin(&p[17], ES_PG_OID_TEXT, metas) ||
      es__pg_array_begin(&p[18], ES_PG_OID_TEXT, metas))
    return ES_ENOMEM;
  if (es__pg_array_begin(&p[26], ES_PG_OID_INT4, rows) ||
      es__pg_array_begin(&p[27], ES_PG_OID_INT4, rows) ||
      es__pg_array_begin(&p[28], ES_PG_OID_TEXT, tags) ||
      es__pg_array_begin(&p[29], ES_PG_OID_INT8, tags) ||
      es__pg_array_begin(&p[30], ES_PG_OID_INT4, rows))
    return ES_ENOMEM;

  uint32_t meta_off = 0, tag_off = 0;
  for (size_t i = 0; i < n; i++) {
    if (!cm->wrote[i]) continue;
    for (size_t a = 0; a < ws[i]->n_reqs; a++) {
      const es_append_req_t *req = &ws[i]->reqs[a];
      const es_append_result_t *o = &ws[i]->outs[a];
      for (size_t j = 0; j < req->event_count; j++) {
        const es_event_data_t *ev = &req->events[j];
        const char *ct = str_or_empty(ev->content_type);
        if (ct[0] == '\0') ct = ES_DEFAULT_CONTENT_TYPE;
        const char *type = str_or_empty(ev->event_type);
        const char *corr = str_or_empty(ev->correlation_id);
        const char *caus = str_or_empty(ev->causation_id);
        size_t body =
            es__pg_event_bytes(ev) + strlen(type) + strlen(ct) + strlen(corr) + strlen(caus);
        if (body > INT32_MAX) body = INT32_MAX;
        int rc = es__pg_array_u64(&p[0], o->first_position + j) |
                 es__pg_array_u64(&p[1], o->first_version + j) |
                 es__pg_array_u64(&p[2], ev->event_version) |
                 es__pg_array_u64(&p[3], ev->occurred_at_unix_ms) |
                 es__pg_array_u32(&p[4], (uint32_t)j) |
                 es__pg_array_u32(&p[5], (uint32_t)req->event_count) |
                 es__pg_array_u32(&p[6], (uint32_t)body) |
                 es__pg_array_elem(&p[7], ev->id, ES_UUID_LEN) |
                 es__pg_array_elem(&p[8], req->stream_id, strlen(req->stream_id)) |
                 es__pg_array_elem(&p[9], type, strlen(type)) |
                 es__pg_array_elem(&p[10], ct, strlen(ct)) |
                 es__pg_array_elem(&p[11], corr, strlen(corr)) |
                 es__pg_array_elem(&p[12], caus, strlen(caus)) |
                 es__pg_array_u32(&p[13], meta_off) |
                 es__pg_array_u32(&p[14], (uint32_t)ev->metadata_count) |
                 es__pg_array_elem(&p[15], ev->payload_len ? (const void *)ev->payload : "",
                                   ev->payload_len);
        for (size_t m = 0; m < ev->metadata_count; m++) {
          const char *k = str_or_empty(ev->metadata[m].key),
                     *v = str_or_empty(ev->metadata[m].value);
          rc |= es__pg_array_elem(&p[17], k, strlen(k)) | es__pg_array_elem(&p[18], v, strlen(v));
        }
        /* The event's tags: its slice of $29 on its row, and one row of the
         * tag index each ($29 with $30). */
        rc |= es__pg_array_u32(&p[26], tag_off) | es__pg_array_u32(&p[27], (uint32_t)ev->tag_count);
        for (size_t t = 0; t < ev->tag_count; t++) {
          const char *tag = str_or_empty(ev->tags[t]);
          rc |= es__pg_array_elem(&p[28], tag, strlen(tag)) |
                es__pg_array_u64(&p[29], o->first_position + j);
        }
        /* The links between the batches of one AppendMany (migration 4). */
        uint32_t joined = 0;
        if (j == 0 && a > 0) joined |= 1;
        if (j + 1 == req->event_count && a + 1 < ws[i]->n_reqs) joined |= 2;
        rc |= es__pg_array_u32(&p[30], joined);
        if (rc) return ES_ENOMEM;
        meta_off += (uint32_t)ev->metadata_count;
        tag_off += (uint32_t)ev->tag_count;
      }
    }
  }
  /* $17 recorded_at, $23 head, $24 channel, $25 the head before, $26 the
   * attempt's commit token: scalars. */
  p[16].len = 0;
  if (es__pg_buf_reserve(&p[16], 8)) return ES_ENOMEM;
  es__pg_put64((uint8_t *)p[16].data, recorded_at);
  p[16].len = 8;
  p[22].len = 0;
  if (es__pg_buf_reserve(&p[22], 8)) return ES_ENOMEM;
  es__pg_put64((uint8_t *)p[22].data, head);
  p[22].len = 8;
  p[23].len = 0;
  if (es__pg_buf_put(&p[23], cm->pg->channel, strlen(cm->pg->channel))) return ES_ENOMEM;
  p[24].len = 0;
  if (es__pg_buf_reserve(&p[24], 8)) return ES_ENOMEM;
  es__pg_put64((uint8_t *)p[24].data, old_head);
  p[24].len = 8;
  p[25].len = 0;
  if (es__pg_buf_reserve(&p[25], 8)) return ES_ENOMEM;
  es__pg_put64((uint8_t *)p[25].data, cm->token);
  p[25].len = 8;

  if (es__pg_array_begin(&p[19], ES_PG_OID_TEXT, dirty) ||
      es__pg_array_begin(&p[20], ES_PG_OID_TEXT, dirty) ||
      es__pg_array_begin(&p[21], ES_PG_OID_INT8, dirty))
    return ES_ENOMEM;
  for (size_t i = 0; i < cm->n_states; i++) {
    const stream_state_t *s = &cm->states[i];
    if (!s->dirty) continue;
    if (es__pg_array_elem(&p[19], s->id, strlen(s->id)) ||
        es__pg_array_elem(&p[20], s->type, strlen(s->type)) || es__pg_array_u64(&p[21], s->last))
      return ES_ENOMEM;
  }
  for (int k = 0; k < N_WRITE_PARAMS; k++) {
    vals[k] = p[k].data ? p[k].data : "";
    lens[k] = (int)p[k].len;
  }
  return ES_OK;
}
