/*
 * A scan of raw protobuf bytes for string fields holding a NUL byte
 * (see wire_check.c for why).
 */
#ifndef ES_SERVER_WIRE_CHECK_H
#define ES_SERVER_WIRE_CHECK_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when a string field of the message of type d in data[0..len) holds a NUL
 * byte; its dotted field path goes to path (pathlen bytes). 0 otherwise,
 * including for malformed input (which unpacking then rejects). */
int es_wire_find_nul(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                     char *path, size_t pathlen);

#ifdef __cplusplus
}
#endif

#endif
