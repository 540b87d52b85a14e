/*
 * es_mem_table and the hashes of the in-memory backend (see mem_internal.h
 * for the design: insert-only open addressing with SwissTable-style control
 * bytes, maximum load 7/8, doubling growth into a fresh table that the caller
 * swaps in under its own lock).
 *
 * The hash's low bits choose the home slot and its top 7 bits are the tag in
 * the control byte, so both ends of the 64-bit value must be well mixed; the
 * multiply-fold of wyhash gives that in two multiplications.
 */
#include <stdlib.h>
#include <string.h>

#include "es/error.h"
#include "mem_internal.h"

#define TABLE_MIN_CAPACITY 16

/* 64×64 → 128-bit multiply folded to 64 bits (wyhash's "mum"). */
static inline uint64_t mix(uint64_t a, uint64_t b) {
  __extension__ typedef unsigned __int128 u128;
  u128 r = (u128)a * b;
  return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static const uint64_t K0 = 0xa0761d6478bd642fULL;
static const uint64_t K1 = 0xe7037ed1a0b428dbULL;
static const uint64_t K2 = 0x8ebc6af09c88c6e3ULL;

static inline uint64_t load64(const void *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

uint64_t es_mem_hash_id(const uint8_t id[ES_UUID_LEN], uint64_t seed) {
  uint64_t h = mix(load64(id) ^ seed ^ K0, load64(id + 8) ^ K1);
  return mix(h ^ seed, K2);
}

uint64_t es_mem_hash_str(const char *s, size_t len, uint64_t seed) {
  const uint8_t *p = (const uint8_t *)s;
  uint64_t h = seed ^ K0;
  size_t n = len;
  while (n >= 16) {
    h = mix(load64(p) ^ K1, load64(p + 8) ^ h);
    p += 16;
    n -= 16;
  }
  uint64_t a = 0, b = 0;
  if (n >= 8) {
    a = load64(p);
    memcpy(&b, p + 8, n - 8);
  } else {
    memcpy(&a, p, n);
  }
  h = mix(a ^ K1, b ^ h);
  return mix(h ^ (uint64_t)len, K2);
}

static inline uint8_t tag_of(uint64_t hash) {
  return (uint8_t)(0x80 | (hash >> 57));
}

static inline size_t capacity_of(const es_mem_table_t *t) {
  return t->refs ? t->mask + 1 : 0;
}

#define SLOT_BYTES (sizeof(uint32_t) + 1) /* a reference and its control byte */

/* Items a table of capacity cap holds before it must grow (load 7/8). */
static inline size_t limit_of(size_t cap) {
  return cap - cap / 8;
}

bool es_mem_table_find(const es_mem_table_t *t, uint64_t hash, es_mem_table_eq_fn eq,
                       const void *ctx, const void *key, uint32_t *ref) {
  if (!t->refs) return false;
  uint8_t tag = tag_of(hash);
  for (size_t i = hash & t->mask;; i = (i + 1) & t->mask) {
    uint8_t c = t->ctrl[i];
    if (c == 0) return false; /* the load limit guarantees an empty slot */
    if (c == tag && eq(ctx, t->refs[i], key)) {
      *ref = t->refs[i];
      return true;
    }
  }
}

bool es_mem_table_fits(const es_mem_table_t *t, size_t n) {
  size_t cap = capacity_of(t);
  return cap != 0 && t->count + n <= limit_of(cap);
}

void es_mem_table_insert(es_mem_table_t *t, uint64_t hash, uint32_t ref) {
  size_t i = hash & t->mask;
  while (t->ctrl[i] != 0) i = (i + 1) & t->mask;
  t->refs[i] = ref;
  t->ctrl[i] = tag_of(hash);
  t->count++;
}

int es_mem_table_grow(const es_mem_table_t *t, size_t n, es_mem_table_hash_fn hash_of,
                      const void *ctx, es_mem_table_t *out) {
  memset(out, 0, sizeof *out);
  size_t cap = capacity_of(t) ? capacity_of(t) * 2 : TABLE_MIN_CAPACITY;
  while (limit_of(cap) < t->count + n) {
    if (cap > SIZE_MAX / 4 / SLOT_BYTES) return ES_ENOMEM;
    cap *= 2;
  }
  /* One allocation: the references, then the control bytes (zeroed = empty). */
  uint32_t *refs = malloc(cap * SLOT_BYTES);
  if (!refs) return ES_ENOMEM;
  out->refs = refs;
  out->ctrl = (uint8_t *)(refs + cap);
  memset(out->ctrl, 0, cap);
  out->mask = cap - 1;
  size_t old_cap = capacity_of(t);
  for (size_t i = 0; i < old_cap; i++) {
    if (t->ctrl[i] != 0) es_mem_table_insert(out, hash_of(ctx, t->refs[i]), t->refs[i]);
  }
  return ES_OK;
}

void es_mem_table_free(es_mem_table_t *t) {
  free(t->refs);
  memset(t, 0, sizeof *t);
}

uint64_t es_mem_table_bytes(const es_mem_table_t *t) {
  size_t cap = capacity_of(t);
  return cap ? es_mem_footprint(cap * SLOT_BYTES) : 0;
}
