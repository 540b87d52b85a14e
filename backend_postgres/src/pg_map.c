/*
 * A small map for the committer: open addressing with linear probing, keys
 * borrowed (event ids, stream ids that live in the requests or in a lookup
 * result), sized up front for a whole group so that an insert never fails
 * and never rehashes.
 */
#include <stdlib.h>
#include <string.h>

#include "pg_committer.h"

static uint64_t hash_bytes(const void *p, size_t n) {
  const uint8_t *b = p;
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}

int es__pg_map_reset(map_t *m, size_t entries) {
  size_t cap = 16;
  while (cap < entries * 2) cap *= 2;
  if (cap > m->cap) {
    slot_t *s = realloc(m->slots, cap * sizeof *s);
    if (!s) return ES_ENOMEM;
    m->slots = s;
    m->cap = cap;
  }
  memset(m->slots, 0, cap * sizeof *m->slots);
  m->mask = cap - 1;
  return ES_OK;
}

static slot_t *map_slot(map_t *m, const void *key, size_t len) {
  size_t i = (size_t)hash_bytes(key, len) & m->mask;
  while (m->slots[i].val && !(m->slots[i].len == len && memcmp(m->slots[i].key, key, len) == 0))
    i = (i + 1) & m->mask;
  return &m->slots[i];
}

void *es__pg_map_get(map_t *m, const void *key, size_t len) {
  return map_slot(m, key, len)->val;
}

/* Sets key -> val (replacing an existing value). The map has room by
 * construction (map_reset sized it for every insert of the group). */
void es__pg_map_put(map_t *m, const void *key, size_t len, void *val) {
  slot_t *s = map_slot(m, key, len);
  s->key = key;
  s->len = len;
  s->val = val;
}
