/*
 * Internals of the in-memory backend shared by its source files: the
 * allocator footprint rule used for es_mem_stats, the seeded hashes, and
 * es_mem_table, the insert-only hash table behind both indexes (event id →
 * record, stream id → stream).
 *
 * es_mem_table is open addressing with linear probing and one control byte
 * per slot, after SwissTable: the control byte is 0 for an empty slot, else
 * 0x80 | the top 7 bits of the item's hash. A probe walks the contiguous
 * control bytes and looks at an item only when its 7-bit tag matches, so a
 * lookup touches about one item even at the maximum load of 7/8.
 *
 * A slot holds a 32-bit reference, not a pointer: both indexes refer to a
 * global position (an event by its own position, a stream by the position of
 * its first event), which the store caps at 2^32 - 1. The caller resolves a
 * reference through its callbacks. A slot thus costs 5 bytes, 5.7 to 11.4 per
 * item once the table has grown. Items are never removed (the store only
 * grows), so there are no tombstones.
 *
 * Concurrency: the table has no lock of its own. es_mem_table_find may run
 * in any number of threads while nobody inserts; es_mem_table_grow only reads
 * its source, so readers may go on probing the old table while the new one is
 * built, and the caller swaps the two under its write lock.
 */
#ifndef ES_MEM_INTERNAL_H
#define ES_MEM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "es/event.h"

/* What a malloc(n) really costs with glibc: the request plus an 8-byte chunk
 * header, rounded up to 16 bytes, at least 32. es_mem_stats counts this
 * rather than n so that bytes_total is close to the process's real growth. */
static inline uint64_t es_mem_footprint(size_t n) {
  uint64_t chunk = ((uint64_t)n + 8 + 15) & ~(uint64_t)15;
  return chunk < 32 ? 32 : chunk;
}

/* Seeded hashes (multiply-fold mixing as in wyhash). The seed is random per
 * store, so that client-chosen ids cannot be crafted to collide. */
uint64_t es_mem_hash_id(const uint8_t id[ES_UUID_LEN], uint64_t seed);
uint64_t es_mem_hash_str(const char *s, size_t len, uint64_t seed);

typedef struct es_mem_table {
  uint32_t *refs; /* capacity references; meaningful where ctrl[i] != 0 */
  uint8_t *ctrl;  /* capacity control bytes (same allocation as refs) */
  size_t mask;    /* capacity - 1; capacity is a power of two, 0 = none yet */
  size_t count;   /* items stored */
} es_mem_table_t;

/* Compares the item that ref names with a lookup key. */
typedef bool (*es_mem_table_eq_fn)(const void *ctx, uint32_t ref, const void *key);
/* Recomputes the hash of the item that ref names (when the table grows). */
typedef uint64_t (*es_mem_table_hash_fn)(const void *ctx, uint32_t ref);

/* Looks key up: true with *ref (OUT) set when found. */
bool es_mem_table_find(const es_mem_table_t *t, uint64_t hash, es_mem_table_eq_fn eq,
                       const void *ctx, const void *key, uint32_t *ref);

/* True when n more items can be inserted without growing. */
bool es_mem_table_fits(const es_mem_table_t *t, size_t n);

/* Builds in *out (OUT) a copy of t with room for n more items; t is only
 * read. Returns 0, or ES_ENOMEM with *out zeroed. */
int es_mem_table_grow(const es_mem_table_t *t, size_t n, es_mem_table_hash_fn hash_of,
                      const void *ctx, es_mem_table_t *out);

/* Inserts ref, whose item must not be present yet; es_mem_table_fits(t, 1)
 * must hold. Never fails. */
void es_mem_table_insert(es_mem_table_t *t, uint64_t hash, uint32_t ref);

/* Frees the table's arrays and zeroes it. */
void es_mem_table_free(es_mem_table_t *t);

/* The allocator footprint of the table's arrays. */
uint64_t es_mem_table_bytes(const es_mem_table_t *t);

#endif /* ES_MEM_INTERNAL_H */
