/*
 * Shared pieces of the fuzz targets: the server's request decoding and its
 * translation of wire messages into core requests, as faithful copies of
 * server/server.c (unpack_bytes) and server/rpc_store.c (do_append,
 * decode_filter, dedupe_metadata). The server's versions take a call_t and
 * talk to gRPC, so they cannot be linked here without the whole server; keep
 * these in step with them when they change (each function names its original).
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

/* server.c unpack_bytes(): the NUL scan, then protobuf-c. NULL when the server
 * would answer INVALID_ARGUMENT. Free with protobuf_c_message_free_unpacked. */
ProtobufCMessage *fz_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len);

/* rpc_store.c decode_filter(). */
void fz_decode_filter(const Eventstore__V1__Filter *f, es_filter_t *out);

/* rpc_store.c do_append(), up to (not including) es_append_prepare. */
typedef struct fz_append {
  es_append_req_t req; /* borrows from the message and the arrays below */
  es_kv_t **kv;        /* per-event metadata arrays (malloc) */
  size_t n_kv;
} fz_append_t;
int fz_append_translate(const Eventstore__V1__AppendRequest *m, const es_limits_t *limits,
                        fz_append_t *out);
void fz_append_free(fz_append_t *a);

#endif
