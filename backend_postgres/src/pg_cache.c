/*
 * What a committer knows of the streams it wrote: each one's last version
 * and type after this committer's last commit. The optimistic path
 * (pg_commit.c) decides from it without asking PostgreSQL; the cache is exact
 * as long as nobody else committed since (last_head), and the write
 * statement checks exactly that, so a stale entry costs a retry on the
 * locking path, never a wrong answer. Bounded (CACHE_MAX_STREAMS, then it
 * starts over); a failure to allocate just leaves a stream out.
 */
#include <stdlib.h>
#include <string.h>

#include "pg_committer.h"

#define CACHE_MAX_STREAMS 65536 /* then the cache starts over */

void es__pg_cache_clear(committer_t *cm) {
  for (size_t i = 0; cm->cache.slots && i < cm->cache.cap; i++) {
    cached_stream_t *c = cm->cache.slots[i].val;
    if (!c) continue;
    free(c->type);
    free(c);
  }
  if (cm->cache.slots) memset(cm->cache.slots, 0, cm->cache.cap * sizeof *cm->cache.slots);
  cm->cache_count = 0;
}

cached_stream_t *es__pg_cache_get(committer_t *cm, const char *id) {
  return cm->cache.slots ? es__pg_map_get(&cm->cache, id, strlen(id)) : NULL;
}

/* Records a stream's state; a failure to allocate just leaves it out (the
 * cache is an optimization: a missing entry means the locking path). */
void es__pg_cache_put(committer_t *cm, const char *id, uint64_t last, const char *type) {
  cached_stream_t *c = es__pg_cache_get(cm, id);
  if (!c) {
    if (cm->cache_count >= CACHE_MAX_STREAMS) es__pg_cache_clear(cm);
    if (!cm->cache.slots || (cm->cache_count + 1) * 2 > cm->cache.cap) {
      /* Grow: rehash into a table twice as large. */
      map_t grown = {NULL, 0, 0};
      if (es__pg_map_reset(&grown, cm->cache.cap ? cm->cache.cap : 512)) return;
      for (size_t i = 0; cm->cache.slots && i < cm->cache.cap; i++) {
        slot_t *o = &cm->cache.slots[i];
        if (o->val) es__pg_map_put(&grown, o->key, o->len, o->val);
      }
      free(cm->cache.slots);
      cm->cache = grown;
    }
    size_t len = strlen(id);
    c = malloc(sizeof *c + len + 1);
    if (!c) return;
    memcpy(c->id, id, len + 1);
    c->type = NULL;
    es__pg_map_put(&cm->cache, c->id, len, c);
    cm->cache_count++;
  }
  c->last = last;
  if (type && type[0] && (!c->type || strcmp(c->type, type) != 0)) {
    char *t = strdup(type);
    if (t) {
      free(c->type);
      c->type = t;
    }
  }
}

/* What the committer knows after a commit (or a locked read) that took the
 * head from head_before to head_after: the group's streams are exact there.
 * When head_before is not where this committer left it, someone else wrote
 * in between and every other cached stream may be stale. */
void es__pg_cache_remember(committer_t *cm, uint64_t head_before, uint64_t head_after) {
  if (!cm->head_known || head_before != cm->last_head) es__pg_cache_clear(cm);
  for (size_t i = 0; i < cm->n_states; i++) {
    const stream_state_t *st = &cm->states[i];
    if (st->last > 0) es__pg_cache_put(cm, st->id, st->last, st->type);
  }
  cm->last_head = head_after;
  cm->head_known = true;
}
