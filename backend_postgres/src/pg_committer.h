/*
 * The committer's internals, shared by the files that make up group commit:
 *
 *   pg_queue.c    the queue of waiting appends and the lanes that commit
 *                 them, each led by one appending thread at a time
 *   pg_commit.c   one group's transaction: the optimistic and the locking
 *                 path, failures, lost connections (the design essay)
 *   pg_decide.c   the group's view of stored state, and the decisions made
 *                 on it (es_append_decide, backend_impl.h)
 *   pg_cache.c    what a committer remembers of the streams it wrote (the
 *                 optimistic path's knowledge)
 *   pg_write.c    the parameters of es_write, the statement that commits
 *   pg_map.c      the small open-addressing map the others use
 *
 * Everything in a committer_t belongs to the thread leading its lane
 * (pg_queue.c): no locks.
 */
#ifndef ES_PG_COMMITTER_H
#define ES_PG_COMMITTER_H

#include "pg_internal.h"

#define MAX_ATTEMPTS 3
#define PG_MAX_FIELD_BYTES ((size_t)1 << 30) /* PostgreSQL's limit for one value */

/* An event the decisions know of: stored (from es_lookup) or decided earlier
 * in this group. */
typedef struct known {
  const char *stream_id; /* NUL-terminated: in the lookup result or a request */
  uint64_t version;
  uint64_t position;
  uint64_t recorded_at;
  uint32_t batch_index; /* index in its append */
  uint32_t batch_size;  /* events in its append */
  uint64_t token;       /* the commit token it was stored with; 0 = none (or this group) */
  uint8_t joined;       /* 1: joined_prev, 2: joined_next (AppendMany) */
} known_t;

/* A stream as the decisions see it. */
typedef struct stream_state {
  const char *id;   /* in the lookup result or a request */
  const char *type; /* "" = none yet */
  uint64_t last;    /* last version, 0 = no events */
  bool dirty;       /* written by this group: upsert it */
} stream_state_t;

typedef struct slot {
  const void *key;
  size_t len;
  void *val; /* NULL: empty slot */
} slot_t;

/* Open addressing, linear probing, sized up front (never more than half
 * full), reset per group. */
typedef struct map {
  slot_t *slots;
  size_t mask;
  size_t cap; /* allocated slots */
} map_t;

enum { N_WRITE_PARAMS = 31, N_CONDITION_PARAMS = 8 };

/* What the committer knows of a stream it wrote or read under the lock. */
typedef struct cached_stream {
  uint64_t last; /* last version */
  char *type;    /* owned; NULL = none */
  char id[];     /* the stream id */
} cached_stream_t;

#define FAST_BACKOFF_GROUPS 16 /* after a failed optimistic attempt, groups that take the lock */

typedef struct committer {
  es_pg_t *pg;
  int lane;       /* which committer: index of commit_pid */
  PGconn *conn;   /* this committer's connection; NULL when not connected */
  map_t ids;      /* 16-byte event id -> known_t */
  map_t streams;  /* stream id -> stream_state_t */
  known_t *known; /* storage for ids' values */
  size_t known_cap;
  stream_state_t *states; /* storage for streams' values */
  size_t states_cap;
  size_t n_known, n_states;
  bool *wrote; /* per waiter of the group: its events are in the write */
  size_t wrote_cap;
  es_pg_buf_t lookup[2];                       /* es_lookup parameters */
  es_pg_buf_t params[N_WRITE_PARAMS];          /* es_write parameters */
  es_pg_buf_t cond_params[N_CONDITION_PARAMS]; /* es_conditions parameters */
  PGresult *lookup_res;                        /* keeps the strings of known/states alive */
  es_pg_waiter_t **group; /* the group being decided (borrowed), for conditions */
  size_t group_n;
  bool conn_fresh;         /* conn was opened for this group */
  es_pg_session_t session; /* conn's server process; once conn is lost, the
                              lost one's until resolve_commit ends it */
  uint64_t token;          /* the commit token of the current attempt */
  uint64_t token_seed;     /* new_token's state (pg_commit.c); 0 = not seeded */

  /* The optimistic path. Exact as long as nobody else committed since
   * last_head; the write statement checks exactly that. */
  map_t cache; /* stream id -> cached_stream_t */
  size_t cache_count;
  bool head_known; /* last_head is the head after this committer's last commit */
  uint64_t last_head;
  int fast_skip; /* groups left to run on the locking path */
} committer_t;

typedef enum outcome {
  OUT_DONE,  /* every waiter has its answer */
  OUT_RETRY, /* nothing happened; try the group again */
  OUT_SPLIT, /* nothing happened; try each append alone */
  OUT_FAIL,  /* nothing happened; every waiter gets the group error */
  OUT_SLOW,  /* the optimistic path does not apply or failed; nothing happened */
} outcome_t;

static inline const char *str_or_empty(const char *s) {
  return s ? s : "";
}

/* ---- pg_map.c ----------------------------------------------------------- */

/* Empties m and sizes it for `entries` inserts (at most half full). ES_ENOMEM. */
int es__pg_map_reset(map_t *m, size_t entries);
/* The value under key, or NULL. */
void *es__pg_map_get(map_t *m, const void *key, size_t len);
/* Sets key -> val (key is borrowed: it must live as long as the entry). The
 * map must have room (es__pg_map_reset sized it). */
void es__pg_map_put(map_t *m, const void *key, size_t len, void *val);

/* ---- pg_cache.c --------------------------------------------------------- */

void es__pg_cache_clear(committer_t *cm);
cached_stream_t *es__pg_cache_get(committer_t *cm, const char *id);
void es__pg_cache_put(committer_t *cm, const char *id, uint64_t last, const char *type);
/* After a commit (or a locked read) that took the head from head_before to
 * head_after: remembers the group's streams. */
void es__pg_cache_remember(committer_t *cm, uint64_t head_before, uint64_t head_after);

/* ---- pg_decide.c -------------------------------------------------------- */

/* Sizes the per-group storage for n waiters with `appends` appends and
 * `events` events in all. ES_ENOMEM. */
int es__pg_group_reserve(committer_t *cm, size_t n, size_t appends, size_t events);
/* es_lookup's parameters: every id of the group, every distinct stream. */
int es__pg_build_lookup(committer_t *cm, es_pg_waiter_t **ws, size_t n, size_t events);
/* Loads es_lookup's rows into the group's view. ES_EINTERNAL when malformed. */
int es__pg_load_lookup(committer_t *cm, const PGresult *res);
/* Decides one append; true when it is to be written (see pg_decide.c). */
bool es__pg_decide(committer_t *cm, es_pg_waiter_t *w, uint64_t *head, uint64_t recorded_at,
                   bool from_cache);

/* ---- pg_write.c --------------------------------------------------------- */

/* Payload and metadata bytes of one event (group sizing). */
size_t es__pg_event_bytes(const es_event_data_t *ev);
/* es_write's parameters for the appends of ws that cm->wrote marks, into
 * vals/lens (pointing into cm->params). ES_ENOMEM. */
int es__pg_build_write(committer_t *cm, es_pg_waiter_t **ws, size_t n, uint64_t recorded_at,
                       uint64_t old_head, uint64_t head, const char **vals, int *lens);

/* ---- pg_commit.c -------------------------------------------------------- */

/* Commits one group: every waiter of ws gets its answer (rc, out, err). */
void es__pg_commit_group(committer_t *cm, es_pg_waiter_t **ws, size_t n);
/* Frees what the committer owns (its connection, cache and buffers). */
void es__pg_committer_release(committer_t *cm);

#endif /* ES_PG_COMMITTER_H */
