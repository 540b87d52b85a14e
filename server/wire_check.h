/*
 * Reading raw protobuf bytes without a generated message: a field iterator,
 * and the scan for string fields holding a NUL byte (see wire_check.c for
 * why) built on it.
 */
#ifndef ES_SERVER_WIRE_CHECK_H
#define ES_SERVER_WIRE_CHECK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One field of a message on the wire. */
typedef struct es_wire_field {
  uint64_t number;     /* field number */
  unsigned wire;       /* wire type: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
  const uint8_t *data; /* wire type 2: the field's bytes (borrowed from the input) */
  size_t len;          /* wire type 2: their length */
} es_wire_field_t;

/* Reads the field at *p (of the bytes [*p, end)) into *f (OUT) and moves *p
 * past it. Returns 1 for a field, 0 at end, -1 for bytes that are not a field
 * (a bad varint, a length beyond end, a group or unknown wire type): stop
 * there. Every length is checked against end. */
int es_wire_next(const uint8_t **p, const uint8_t *end, es_wire_field_t *f);

/* 1 when a string field of the message of type d in data[0..len) holds a NUL
 * byte; its dotted field path goes to path (pathlen bytes). 0 otherwise,
 * including for malformed input (which unpacking then rejects). */
int es_wire_find_nul(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                     char *path, size_t pathlen);

#ifdef __cplusplus
}
#endif

#endif
