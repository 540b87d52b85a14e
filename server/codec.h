/*
 * Wire requests → core requests, without gRPC: the one translation both the
 * server and the fuzzers (fuzz/) run.
 */
#ifndef ES_SERVER_CODEC_H
#define ES_SERVER_CODEC_H

#include <stddef.h>

#include "es/event.h"
#include "es/validate.h"
#include "eventstore/v1/eventstore.pb-c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Decodes a request of type d from data[0..len) (data may be NULL when len is
 * 0). Refuses a string field holding a NUL byte (protobuf-c would cut it short)
 * and bytes that are not the message. Returns the message (free with
 * protobuf_c_message_free_unpacked), or NULL with the reason in msg. */
ProtobufCMessage *es_codec_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data,
                                  size_t len, char *msg, size_t msglen);

/* Returns size zeroed bytes owned by ctx (freed by its owner), or NULL. */
typedef void *(*es_codec_alloc_fn)(void *ctx, size_t size);

/* Fills *out (OUT) from m. Strings and payloads are borrowed from m, which
 * must outlive *out; the event and metadata arrays come from alloc(ctx, ...).
 * Metadata keys repeated on the wire keep their last value (protobuf map
 * semantics) when the count is within limits->max_metadata_entries. Returns
 * ES_OK, or ES_ENOMEM when alloc fails. Validation is es_append_prepare's job. */
int es_codec_append(const Eventstore__V1__AppendRequest *m, const es_limits_t *limits,
                    es_codec_alloc_fn alloc, void *ctx, es_append_req_t *out);

/* Fills *out (OUT) from f (NULL = no filter), borrowing its strings. */
void es_codec_filter(const Eventstore__V1__Filter *f, es_filter_t *out);

#ifdef __cplusplus
}
#endif

#endif
