/*
 * Raw protobuf bytes: es_wire_next reads one field (the one field reader of
 * server/, also walking the embedded descriptors for reflection), and a scan
 * for string fields that contain a NUL byte.
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

int es_wire_next(const uint8_t **p, const uint8_t *end, es_wire_field_t *f) {
  if (*p >= end) return 0;
  uint64_t key, v;
  if (read_varint(p, end, &key) != 0) return -1;
  f->number = key >> 3;
  f->wire = (unsigned)(key & 7);
  f->data = NULL;
  f->len = 0;
  switch (f->wire) {
    case 0:
      return read_varint(p, end, &v) == 0 ? 1 : -1;
    case 1:
      if (end - *p < 8) return -1;
      *p += 8;
      return 1;
    case 5:
      if (end - *p < 4) return -1;
      *p += 4;
      return 1;
    case 2:
      if (read_varint(p, end, &v) != 0 || v > (uint64_t)(end - *p)) return -1;
      f->data = *p;
      f->len = (size_t)v;
      *p += v;
      return 1;
    default:
      return -1;
  }
}

static int scan(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end,
                int depth, char *path, size_t pathlen) {
  if (depth > MAX_DEPTH) return 0;
  es_wire_field_t w;
  while (es_wire_next(&p, end, &w) == 1) {
    if (w.wire != 2) continue;
    const ProtobufCFieldDescriptor *f =
        w.number <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)w.number)
                               : NULL;
    if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(w.data, 0, w.len)) {
      snprintf(path, pathlen, "%s", f->name);
      return 1;
    }
    if (f && f->type == PROTOBUF_C_TYPE_MESSAGE) {
      char inner[128];
      if (scan(f->descriptor, w.data, w.data + w.len, depth + 1, inner, sizeof inner)) {
        snprintf(path, pathlen, "%s.%s", f->name, inner);
        return 1;
      }
    }
  }
  return 0;
}

int es_wire_find_nul(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                     char *path, size_t pathlen) {
  return scan(d, data, data + len, 0, path, pathlen);
}
