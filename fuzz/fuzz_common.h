/*
 * Shared pieces of the fuzz targets: the server's request decoding and its
 * translation of wire messages into core requests (server/codec.c, the very
 * code the server runs — linked, not copied).
 *
 * Memory: everything a translation allocates hangs off an fz_append_t and is
 * freed by fz_append_free(); strings are borrowed from the unpacked message.
 */
#ifndef ES_FUZZ_COMMON_H
#define ES_FUZZ_COMMON_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "es/backend.h"
#include "es/event.h"
#include "es/validate.h"
#include "eventstore/v1/eventstore.pb-c.h"

/* Aborts with a message when cond is false: a broken invariant is a finding. */
#define FZ_CHECK(cond)                               \
  do {                                               \
    if (!(cond)) fz_fail(__FILE__, __LINE__, #cond); \
  } while (0)
void fz_fail(const char *file, int line, const char *what) __attribute__((noreturn));

/* es_codec_unpack (server/codec.c): NULL when the server would answer
 * INVALID_ARGUMENT. Free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *fz_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len);

/* es_codec_append (server/codec.c), as rpc_store.c do_append runs it before es_append_prepare. */
typedef struct fz_append {
  es_append_req_t req; /* borrows from the message and the arrays below */
  void **blocks;       /* every array the translation allocated (malloc) */
  size_t n_blocks;
} fz_append_t;
int fz_append_translate(const Eventstore__V1__AppendRequest *m, const es_limits_t *limits,
                        fz_append_t *out);
void fz_append_free(fz_append_t *a);
/* The codec's allocator (es_codec_alloc_fn) over ctx, an fz_append_t: blocks
 * are freed by fz_append_free. */
void *fz_alloc(void *ctx, size_t size);

#endif
