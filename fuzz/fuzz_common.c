/* See fuzz_common.h. */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

void fz_fail(const char *file, int line, const char *what) {
  fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
  abort();
}

ProtobufCMessage *fz_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len) {
  char msg[256];
  ProtobufCMessage *m = es_codec_unpack(d, data, len, NULL, msg, sizeof msg);
  /* The server sends the reason as its status message: it must be a C string. */
  if (!m) FZ_CHECK(memchr(msg, 0, sizeof msg) != NULL);
  return m;
}

/* The codec's allocator: every block is remembered in the fz_append_t. */
void *fz_alloc(void *ctx, size_t size) {
  fz_append_t *a = ctx;
  void **grown = realloc(a->blocks, (a->n_blocks + 1) * sizeof *grown);
  if (!grown) return NULL;
  a->blocks = grown;
  void *p = calloc(1, size ? size : 1);
  if (p) a->blocks[a->n_blocks++] = p;
  return p;
}

int fz_append_translate(const Eventstore__V1__AppendRequest *m, const es_limits_t *limits,
                        fz_append_t *out) {
  memset(out, 0, sizeof *out);
  if (es_codec_append(m, limits, fz_alloc, out, &out->req) != ES_OK) {
    fz_append_free(out);
    return -1;
  }
  return 0;
}

void fz_append_free(fz_append_t *a) {
  for (size_t i = 0; i < a->n_blocks; i++) free(a->blocks[i]);
  free(a->blocks);
  memset(a, 0, sizeof *a);
}
