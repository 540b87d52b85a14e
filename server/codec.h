/*
 * Wire requests → core requests, without gRPC: the one translation both the
 * server and the fuzzers (fuzz/) run.
 */
#ifndef ES_SERVER_CODEC_H
#define ES_SERVER_CODEC_H

#include <stddef.h>

#include "es/event.h"
#include "es/subscription.h"
#include "es/validate.h"
#include "eventstore/v1/eventstore.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Decodes a request of type d from data[0..len) (data may be NULL when len is
 * 0). Refuses a string field holding a NUL byte (protobuf-c would cut it short)
 * and bytes that are not the message. Returns the message, or NULL with the
 * reason in msg. Its memory comes from alloc (NULL: malloc; then free it with
 * protobuf_c_message_free_unpacked). */
ProtobufCMessage *es_codec_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                                  size_t len, ProtobufCAllocator *alloc, char *msg, size_t msglen);

/* Returns size zeroed bytes owned by ctx (freed by its owner), or NULL. */
typedef void *(*es_codec_alloc_fn)(void *ctx, size_t size);

/* Fills *out (OUT) from m. Strings and payloads are borrowed from m, which
 * must outlive *out; the event and metadata arrays come from alloc(ctx, ...).
 * Metadata keys repeated on the wire keep their last value (protobuf map
 * semantics) when the count is within limits->max_metadata_entries. Returns
 * ES_OK, or ES_ENOMEM when alloc fails. Validation is es_append_prepare's job. */
int es_codec_append(const Eventstore__V1__AppendRequest *m, const es_limits_t *limits,
                    es_codec_alloc_fn alloc, void *ctx, es_append_req_t *out);

/* The same for an AppendManyRequest: each append as es_codec_append decodes
 * it (its own condition included, which es_append_many_prepare refuses), and
 * the request's condition. */
int es_codec_append_many(const Eventstore__V1__AppendManyRequest *m, const es_limits_t *limits,
                         es_codec_alloc_fn alloc, void *ctx, es_append_many_req_t *out);

/* The read and subscribe requests: each fills *out (OUT) from m, borrowing its
 * strings (m must outlive *out) and leaving what the wire does not carry zero
 * (page byte and scan bounds: the prepare functions set them). Only the
 * filter's query items are allocated (alloc(ctx, ...)); ES_ENOMEM when that
 * fails. Nothing is checked: validation is es_read_stream_prepare's,
 * es_read_all_prepare's and es_filter_validate's job. */
void es_codec_read_stream(const Eventstore__V1__ReadStreamRequest *m, es_read_stream_req_t *out);
int es_codec_read_all(const Eventstore__V1__ReadAllRequest *m, es_codec_alloc_fn alloc, void *ctx,
                      es_read_all_req_t *out);
int es_codec_subscribe(const Eventstore__V1__SubscribeRequest *m, es_codec_alloc_fn alloc,
                       void *ctx, es_sub_opts_t *out);

/* Fills m (initialised here) from ev for sending, borrowing ev's strings and
 * payload. entries and ptrs hold ev->metadata_count elements each (NULL when
 * it is 0); m points into them. */
void es_codec_recorded(const es_recorded_t *ev, Eventstore__V1__RecordedEvent *m,
                       Eventstore__V1__RecordedEvent__MetadataEntry *entries,
                       Eventstore__V1__RecordedEvent__MetadataEntry **ptrs);

#ifdef __cplusplus
}
#endif

#endif
