/*
 * A scan of raw protobuf bytes for string fields that contain a NUL byte.
 *
 * protobuf-c hands proto3 strings out as NUL-terminated char * and drops
 * their length, so "order\0-1" would silently become "order" — two different
 * stream ids would name one stream. Before a request is unpacked, this walks
 * its wire format with the message descriptor (recursing into message fields,
 * map entries included) and reports the first string field holding a NUL, so
 * the request is refused with INVALID_ARGUMENT instead. Malformed input just
 * stops the scan: unpacking rejects it anyway. Every length is checked against
 * the bytes that remain; recursion is bounded.
 */
#include "wire_check.h"

#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 16

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return -1;
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

static int scan(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                int depth, char *path, size_t pathlen) {
  if (depth > MAX_DEPTH) return 0;
  while (p < end) {
    uint64_t key, len;
    if (read_varint(&p, end, &key) != 0) return 0;
    unsigned wire = (unsigned)(key & 7);
    uint64_t id = key >> 3;
    switch (wire) {
      case 0:
        if (read_varint(&p, end, &len) != 0) return 0;
        continue;
      case 1:
        if (end - p < 8) return 0;
        p += 8;
        continue;
      case 5:
        if (end - p < 4) return 0;
        p += 4;
        continue;
      case 2:
        break;
      default:
        return 0;
    }
    if (read_varint(&p, end, &len) != 0 || len > (uint64_t)(end - p)) return 0;
    const ProtobufCFieldDescriptor *f =
        id <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)id) : NULL;
    if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p, 0, (size_t)len)) {
      snprintf(path, pathlen, "%s", f->name);
      return 1;
    }
    if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
      char inner[128];
      if (scan(f->descriptor, p, p + len, depth + 1, inner, sizeof inner)) {
        snprintf(path, pathlen, "%s.%s", f->name, inner);
        return 1;
      }
    }
    p += len;
  }
  return 0;
}

int es_wire_find_nul(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                     char *path, size_t pathlen) {
  return scan(d, data, data + len, 0, path, pathlen);
}
