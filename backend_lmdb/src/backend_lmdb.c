/*
 * The LMDB backend: every semantic of API.md, durable in one data directory.
 *
 * Tables (LMDB named databases in DIR/data.mdb):
 *   - log:     global position (native size_t, MDB_INTEGERKEY) -> the event's
 *              record (lmdb_internal.h). Positions are written in order with
 *              MDB_APPEND, so the log's pages fill completely.
 *   - streams: stream id -> { number, last version, type \0 }; the number is
 *              the position of the stream's first event (unique, no counter).
 *   - versions: (number, chunk), both big-endian -> the positions of the
 *              stream's versions chunk * VERSION_CHUNK + 1 onwards, up to
 *              VERSION_CHUNK of them (native 8 bytes each): a stream's index
 *              in chunks of 64 versions, 8.4 bytes a version with the key
 *              and node header. An append rewrites its stream's last chunk,
 *              one leaf page a stream a commit. (Format 4 kept one sorted
 *              duplicate list per stream, a B-tree of its own once large:
 *              a commit then wrote its leaf, its root and the main tree's
 *              leaf for each stream it touched, which with 64 streams was
 *              half of what a commit wrote; check_format converts it.)
 *              ReadStream reads a chunk at a time.
 *   - ids:     binary event id -> position, for idempotency and EEXIST.
 *   - stream_names: number -> stream id \0 type \0; records name their
 *              stream by number, and reads and idempotency lookups resolve
 *              it here (written when the stream is new or gets its type).
 *   - types, type_names: the event-type dictionary, name -> number and
 *              number -> name; numbers from 1 in order of first use, given
 *              inside the write transaction that first stores the type.
 *   - tags:    tag -> the positions of the events carrying it (Extension 1),
 *              8 big-endian bytes each, fixed-size sorted duplicates
 *              (MDB_DUPSORT | MDB_DUPFIXED) appended in order
 *              (MDB_APPENDDUP): 8 bytes an occurrence. Records hold their
 *              tags too (format 4), so a read returns them without this
 *              table.
 *   - format:  "records" -> the store's format number (check_format).
 *
 * Records (lmdb_internal.h) hold numbers, not names: with 256-byte
 * payloads, a stream id and an event type in every record were what kept
 * the log at 12 events a 4 KiB page instead of 13. A read resolves each
 * number through a direct-mapped cache of its own (names_t: one lookup per
 * stream and type per page, not per event) and copies each name into the
 * page once.
 *
 * Reads by query (Filter.items, Extension 1). When every item names a tag,
 * ReadAll walks, per item, the positions of its rarest tag (the shortest
 * list in `tags`; LMDB counts a key's duplicates without reading them),
 * merged in reading order, and checks each candidate against the whole
 * filter, like the memory backend: the cost follows the candidates, not the
 * log, and max_scan bounds the candidates examined. An item of types only
 * (or an empty one) has no index: the read scans the log within the scan
 * bound, as any filter does. Subscriptions read through ReadAll, so they
 * follow the same path.
 *
 * Writes: group commit by the appending threads themselves, one group at a
 * time (leader and followers; there is no committer thread). An append
 * queues an item (its request, where its answer goes). When no group is
 * being committed, the appending thread commits at once: it takes every
 * queued item, runs each through the core's append decision
 * (es_append_decide_conditional, or es_append_many_decide for an AppendMany)
 * over a view read from its own write transaction - which already holds the
 * earlier items of the group, so the view is exact, and so is a condition's
 * answer (cond_match reads the same transaction) - writes the ones that
 * pass, commits once (LMDB syncs data and meta pages before
 * mdb_txn_commit returns) and only then answers every item of the group.
 * Appends that arrive while a commit syncs wait in the queue and form the
 * next group; the leader wakes the first of them to commit it. One commit's
 * syncs pay for the whole group, which is what makes a durable store come
 * close to the memory backend.
 *
 * An AppendMany is one item: its appends are decided together (all or
 * none) and written as one contiguous run of positions. Its records carry
 * REC_JOINED_PREV / REC_JOINED_NEXT where one append of the request meets
 * the next, which is what the core needs to tell a retry of the whole
 * request (a duplicate) from a retry of a part of it (ES_EEXIST). A plain
 * Append is an item of one append without those flags, so the two retry
 * each other as on every backend.
 *
 * Why no committer thread: it put two thread hand-offs (the caller wakes the
 * committer, the committer wakes the caller) on the path of every append.
 * At one append in flight, an append is now the caller's own commit: no
 * wake-up at all. Under load the wake-ups are the ones a group needs
 * anyway: each follower's, with its answer, and the next leader's.
 *
 * Asynchronous appends (append_async; the server's Append uses it) have no
 * thread waiting: the item carries a callback, and whoever commits its
 * group calls it. Under load that removes the two sleeps and two wake-ups
 * an append otherwise costs its worker thread (woken for the call, asleep
 * in the queue, woken with the answer), which a profile showed to be most
 * of the server's CPU per append. Such an item cannot lead a group itself,
 * so a committer thread, started by the first asynchronous append, leads
 * when one is first in the queue and nobody commits: called once per group,
 * never per append. AppendMany has its asynchronous form too
 * (append_many_async). Blocking callers (tools, tests) still lead and follow
 * as above, and groups mix both kinds.
 *
 * A commit costs two syncs, never fewer: LMDB writes the transaction's pages
 * and fdatasyncs them, then writes the meta page that makes them the current
 * tree through a descriptor opened O_DSYNC. A single sync of both would let
 * a crash leave a meta page that points at pages the disk never got; that
 * order is what makes LMDB crash-safe without a recovery step, so it is kept
 * (no MDB_NOSYNC, MDB_NOMETASYNC or MDB_MAPASYNC).
 *
 * What a sync costs is up to the file, though. A transaction's new pages go
 * past the end of data.mdb, and an fdatasync after a write that grows a
 * file must also write the file's new size and blocks (the inode, or the
 * journal): measured here, that made a small commit's first sync about
 * 190 us instead of about 110 (docs/benchmarks.md). So the committing thread
 * keeps the file written with zeros ahead of LMDB's last page (zero_ahead:
 * refilled to ZERO_AHEAD when less than ZERO_LOW is left, in writes of
 * 1 MiB - single larger writes were many times slower on this kernel - and
 * one fdatasync) before it begins a group's transaction, so that a commit's
 * pages are mostly overwrites of blocks the file already has. No guarantee
 * changes: LMDB never reads past its last committed page, the zeros go only
 * past the file's current end (never over a page LMDB wrote), and they are
 * written by the committing thread, so no LMDB write runs meanwhile. A
 * failed or short write of zeros is ignored (LMDB's own write then meets the
 * full disk, as below) and tried again at the next group. data.mdb is thus
 * up to ZERO_AHEAD larger than its pages; `eventstore backup` copies pages.
 *
 * Failures. MDB_MAP_FULL aborts the group's transaction, doubles the map and
 * runs the group again (nothing of it was visible). Any other LMDB error
 * while writing fails the group's appends with ES_EUNAVAIL and leaves the
 * store as it was. A failed commit is different: whether the disk holds the
 * transaction is unknown, and after a failed fsync the kernel may have
 * dropped the dirty pages, so a later "successful" sync proves nothing. The
 * store then refuses every further append (ES_EUNAVAIL naming the cause)
 * until it is reopened; reads go on. Nothing is ever acknowledged unless its
 * commit returned success.
 *
 * A full disk is the exception to that rule (no_space below): ENOSPC,
 * EDQUOT or EFBIG (a file-size limit) while writing the group's pages, or
 * EIO when LMDB met a short write and the file cannot grow by one page
 * right now (LMDB reports a short write, "filesystem full?", as EIO). The
 * group's pages went only to pages that no committed tree references (LMDB
 * never overwrites the last commit's pages) and the meta page that would
 * have referenced them was not written, so the last commit stands as synced
 * and a later commit writes and syncs all of its own pages again. Those
 * appends fail with ES_ENOSPACE naming the cause, reads go on, and appends
 * work again as soon as there is space. An EIO that is not a full disk
 * stays fatal, and so does a failed meta write: LMDB then marks the
 * environment broken (MDB_PANIC), which this backend treats as a failed
 * commit.
 *
 * Reads run in read-only transactions (MDB_RDONLY on an environment opened
 * with MDB_NOTLS, so any thread may begin one) on an MVCC snapshot, without
 * waiting for a commit. The one lock they take is the read side of
 * `resize`, which exists because LMDB allows mdb_env_set_mapsize only while
 * no transaction is open in the process: the committing thread takes the write side
 * for the few microseconds of a map resize. Pages are copied out of the
 * snapshot (lmdb_record.c), so the transaction ends before the read returns.
 *
 * The published head (es__backend_publish, and the head method) moves after
 * a commit returned, so a reader that sees a head finds its events.
 *
 * One opener per directory: DIR/lock is held with an exclusive flock for the
 * life of the backend (the kernel drops it when the process dies, so a crash
 * leaves nothing to clean up). LMDB's own lock file would let a second
 * process open the store and write through it; that is not what a server
 * started twice on one directory should do.
 */
#include "es/backend_lmdb.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "es/backend.h"
#include "es/backend_impl.h"
#include "es/error.h"
#include "es/event.h"
#include "lmdb_internal.h"

#define DEFAULT_MAP_SIZE ((uint64_t)1 << 30)
#define DEFAULT_MAX_READERS 1024
#define STREAM_VAL_FIXED 16 /* number and last version */
#define RECORD_FORMAT 5     /* of the store (lmdb_internal.h, `versions`); see check_format */
#define MAX_DBS 10          /* the named databases below, and format 4's index while converting */
#define NAME_SLOTS 64       /* of a read's name cache (names_t), a power of two */
#define INDEX_ENTRY 16      /* a format-4 index entry: version, position (both big-endian) */
#define VERSION_CHUNK 64    /* versions a `versions` value holds */
#define TAG_ENTRY 8         /* a tag index entry: position (big-endian) */
#define INDEXED_ITEMS 16    /* query items a read walks the tag index for (validate.h's limit) */

/* append_item_t.state */
enum { ITEM_WAITING = 0, ITEM_DONE = 1, ITEM_LEAD = 2 };

/* One queued request (an Append, or an AppendMany's appends) and where its
 * answer goes. Lives on the caller's stack until it is done; an
 * asynchronous one (done != NULL) is malloc'ed, and freed by whoever ends
 * it, right after calling done. */
typedef struct append_item {
  const es_append_req_t *appends; /* n entries */
  size_t n;
  const es_append_condition_t *cond; /* the request's condition, or NULL */
  bool many;                         /* an AppendMany (es_append_many_decide) */
  es_append_result_t *out;           /* n results */
  es_err_t *err;
  int rc;                   /* the answer, valid once done */
  _Atomic uint32_t state;   /* ITEM_*, set by a leader; waited on as a futex */
  bool wrote;               /* this group's transaction holds its events */
  struct append_item *next; /* queue link */
  es_append_done_fn done;   /* asynchronous: called with rc instead of a wake-up */
  void *done_arg;
} append_item_t;

typedef struct es_lmdb {
  es_backend_t base; /* first member: es_backend_t * <-> es_lmdb_t * */
  char *dir;         /* owned; the data directory as given */
  int lock_fd;       /* DIR/lock, flock'ed exclusively */
  MDB_env *env;
  MDB_dbi log, streams, versions, ids;
  MDB_dbi stream_names;      /* stream number -> id \0 type \0 */
  MDB_dbi types, type_names; /* event type <-> its number */
  MDB_dbi tags;              /* tag -> its positions (Extension 1) */
  pthread_rwlock_t resize;   /* read side: any transaction; write side: set_mapsize */

  /* The queue: under qlock. */
  pthread_mutex_t qlock;
  append_item_t *qhead, *qtail;
  bool committing; /* a thread is committing a group (it owns the fields below) */
  /* The committer thread, started by the first asynchronous append: it leads
   * the groups whose first item has no thread of its own to lead them. */
  pthread_cond_t committer_cv; /* committer_called or stopping */
  bool committer_called;       /* the committer is to lead the next group */
  bool stopping;               /* close: the committer ends once not called */
  bool committer_started;
  pthread_t committer;

  /* The committing thread only. */
  uint64_t head;     /* last committed position */
  uint64_t map_size; /* the map's current size */
  uint64_t file_end; /* data.mdb's size when zero_ahead last looked; 0 before */
  unsigned page_size;
  int (*commit_hook)(void *);
  void *commit_hook_ctx;

  /* Read by anyone. */
  _Atomic uint64_t published;        /* last committed position, after the commit */
  _Atomic int failed;                /* a commit failed: no more writes */
  char failed_msg[ES_ERR_MSG_MAX];   /* why; written once before `failed` is set */
  _Atomic uint64_t st_commits;       /* transactions committed */
  _Atomic uint64_t st_appends;       /* appends acknowledged by them */
  _Atomic uint64_t st_events;        /* events written by them */
  _Atomic uint64_t st_grouped;       /* appends taken into committed groups (sum of sizes) */
  _Atomic uint64_t st_group_max;     /* largest group of appends in one commit */
  _Atomic uint64_t st_commit_us;     /* time in mdb_txn_commit, total */
  _Atomic uint64_t st_commit_max_us; /* the longest commit */
  _Atomic uint64_t st_map_grows;     /* map resizes */
  _Atomic uint64_t st_map_size;      /* current map size */
  _Atomic uint64_t st_no_space;      /* write transactions failed for a full disk */
} es_lmdb_t;

static const es_backend_methods_t lmdb_methods;

static int lmdb_fail(es_err_t *err, int code, const char *what, int mrc) {
  return es_err_set(err, code, "lmdb: %s: %s", what, mdb_strerror(mrc));
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)v;
    v >>= 8;
  }
}

static uint64_t get_be64(const void *p) {
  const uint8_t *b = p;
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | b[i];
  return v;
}

static uint64_t get_u64(const void *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* ---- reading helpers (any transaction) -------------------------------- */

/* What the streams table holds about one stream. */
typedef struct stream_row {
  uint64_t number;  /* position of its first event */
  uint64_t last;    /* last version */
  const char *type; /* NUL-terminated, in the transaction's memory */
} stream_row_t;

/* Looks up stream id: *found (OUT) and, when found, *out. Returns 0 or an
 * LMDB error. */
static int stream_get(es_lmdb_t *m, MDB_txn *txn, const char *id, size_t len, bool *found,
                      stream_row_t *out) {
  MDB_val k = {len, (void *)id}, v;
  *found = false;
  int rc = mdb_get(txn, m->streams, &k, &v);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc) return rc;
  if (v.mv_size <= STREAM_VAL_FIXED || ((const char *)v.mv_data)[v.mv_size - 1] != '\0')
    return MDB_CORRUPTED;
  out->number = get_u64(v.mv_data);
  out->last = get_u64((const uint8_t *)v.mv_data + 8);
  out->type = (const char *)v.mv_data + STREAM_VAL_FIXED;
  *found = true;
  return 0;
}

/* The record at position: 0, MDB_NOTFOUND or another LMDB error. */
static int log_get(es_lmdb_t *m, MDB_txn *txn, uint64_t position, rec_view_t *out) {
  size_t key = (size_t)position;
  MDB_val k = {sizeof key, &key}, v;
  int rc = mdb_get(txn, m->log, &k, &v);
  if (rc) return rc;
  return es__lmdb_rec_decode(v.mv_data, v.mv_size, out) ? 0 : MDB_CORRUPTED;
}

/* The id and type of the stream numbered number (pointers into the
 * transaction's memory): 0, MDB_NOTFOUND or another LMDB error. */
static int stream_name_get(es_lmdb_t *m, MDB_txn *txn, uint64_t number, const char **id,
                           const char **type) {
  size_t key = (size_t)number;
  MDB_val k = {sizeof key, &key}, v;
  int rc = mdb_get(txn, m->stream_names, &k, &v);
  if (rc) return rc;
  const char *s = v.mv_data;
  const char *nul = v.mv_size ? memchr(s, '\0', v.mv_size) : NULL;
  if (!nul || nul == s || s[v.mv_size - 1] != '\0') return MDB_CORRUPTED;
  *id = s;
  *type = nul + 1;
  return 0;
}

/* The event type numbered number (0 is ""): 0, MDB_NOTFOUND or another
 * LMDB error. */
static int type_name_get(es_lmdb_t *m, MDB_txn *txn, uint64_t number, const char **name) {
  if (number == 0) {
    *name = "";
    return 0;
  }
  size_t key = (size_t)number;
  MDB_val k = {sizeof key, &key}, v;
  int rc = mdb_get(txn, m->type_names, &k, &v);
  if (rc) return rc;
  if (v.mv_size < 2 || ((const char *)v.mv_data)[v.mv_size - 1] != '\0') return MDB_CORRUPTED;
  *name = v.mv_data;
  return 0;
}

static int begin_read(es_lmdb_t *m, MDB_txn **txn, es_err_t *err) {
  pthread_rwlock_rdlock(&m->resize);
  int rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, txn);
  if (rc) {
    pthread_rwlock_unlock(&m->resize);
    *txn = NULL;
    return lmdb_fail(err, ES_EUNAVAIL, "beginning a read", rc);
  }
  return ES_OK;
}

static void end_read(es_lmdb_t *m, MDB_txn *txn) {
  mdb_txn_abort(txn);
  pthread_rwlock_unlock(&m->resize);
}

/* ---- the tag index (any transaction) ---------------------------------- */

/* One list of the tag index being walked: a cursor on the tag's duplicates
 * and the position it stands at (0: exhausted). */
typedef struct tag_walk {
  MDB_cursor *cur;
  MDB_val tag;
  uint64_t at;
} tag_walk_t;

/* Steps w to its next position in reading order: 0 or an LMDB error. */
static int tag_walk_step(tag_walk_t *w, bool forward) {
  MDB_val k = w->tag, v;
  int rc = mdb_cursor_get(w->cur, &k, &v, forward ? MDB_NEXT_DUP : MDB_PREV_DUP);
  if (rc == MDB_NOTFOUND) {
    w->at = 0;
    return 0;
  }
  if (rc) return rc;
  if (v.mv_size != TAG_ENTRY) return MDB_CORRUPTED;
  w->at = get_be64(v.mv_data);
  return 0;
}

/* Puts w on the first position >= from (FORWARD) or the last <= from
 * (BACKWARD) of its tag. 0 or an LMDB error. */
static int tag_walk_seek(tag_walk_t *w, bool forward, uint64_t from) {
  uint8_t b[TAG_ENTRY];
  put_be64(b, forward ? from : from + 1);
  MDB_val k = w->tag, v = {sizeof b, b};
  int rc = mdb_cursor_get(w->cur, &k, &v, MDB_GET_BOTH_RANGE);
  if (rc == 0 && v.mv_size != TAG_ENTRY) return MDB_CORRUPTED;
  if (forward) {
    if (rc == MDB_NOTFOUND) {
      w->at = 0;
      return 0;
    }
    if (rc == 0) w->at = get_be64(v.mv_data);
    return rc;
  }
  if (rc == 0) return tag_walk_step(w, false); /* the one before the first > from */
  if (rc != MDB_NOTFOUND) return rc;
  /* Every position of the tag is <= from: its last. */
  k = w->tag;
  if ((rc = mdb_cursor_get(w->cur, &k, &v, MDB_SET_KEY)) ||
      (rc = mdb_cursor_get(w->cur, &k, &v, MDB_LAST_DUP))) {
    if (rc == MDB_NOTFOUND) w->at = 0;
    return rc == MDB_NOTFOUND ? 0 : rc;
  }
  if (v.mv_size != TAG_ENTRY) return MDB_CORRUPTED;
  w->at = get_be64(v.mv_data);
  return 0;
}

/* The tag of item (which has tags) with the fewest events, in *best (OUT;
 * mv_data NULL when one of its tags was never used: the item matches
 * nothing). cur is a cursor on the `tags` table. 0 or an LMDB error. */
static int rarest_tag(MDB_cursor *cur, const es_query_item_t *item, MDB_val *best) {
  size_t best_count = SIZE_MAX;
  best->mv_size = 0;
  best->mv_data = NULL;
  for (size_t t = 0; t < item->tag_count; t++) {
    MDB_val k = {strlen(item->tags[t]), (void *)item->tags[t]}, v;
    size_t count;
    int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    if (rc == MDB_NOTFOUND) {
      best->mv_data = NULL;
      return 0;
    }
    if (rc || (rc = mdb_cursor_count(cur, &count))) return rc;
    if (count < best_count) {
      best_count = count;
      best->mv_size = strlen(item->tags[t]);
      best->mv_data = (void *)item->tags[t];
    }
  }
  return 0;
}

/* ---- committing --------------------------------------------------------- */

/* The append decision's view (backend_impl.h) of the write transaction. */
typedef struct decide_ctx {
  es_lmdb_t *m;
  MDB_txn *txn;
  const es_append_req_t *req;
  uint64_t head; /* the last position the transaction holds */
  int lmdb_rc;   /* an LMDB error met by a lookup (the decision is then void) */
} decide_ctx_t;

/* Whether the record at position p matches item (its type and tags): 1, 0,
 * or a negated LMDB error. */
static int item_matches_at(es_lmdb_t *m, MDB_txn *txn, const es_query_item_t *item,
                           const rec_view_t *r) {
  const char *type;
  int rc = type_name_get(m, txn, r->h.type, &type);
  if (rc) return -(rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc);
  const char *tags[REC_MAX_TAGS];
  es__lmdb_rec_tags(r, tags);
  return es_query_match(item, 1, type, tags, r->tag_count);
}

/* The condition view (backend_impl.h) of the write transaction, which holds
 * the group's earlier items, so nothing matching can slip between the check
 * and the commit. An item with tags walks its rarest tag's positions after
 * `after` until the first match; an item of types only scans the log after
 * `after` (docs/dcb.md: give every item a tag). Later items look only below
 * the best match so far. */
static bool cond_match(void *ctx, const es_append_condition_t *cond, uint64_t *position) {
  decide_ctx_t *d = ctx;
  es_lmdb_t *m = d->m;
  uint64_t best = 0; /* the smallest matching position found; 0 = none */
  int rc = 0;
  for (size_t i = 0; i < cond->item_count && rc == 0; i++) {
    const es_query_item_t *item = &cond->items[i];
    uint64_t bound = best ? best - 1 : d->head; /* look no further than this */
    if (cond->after >= bound) continue;
    if (item->tag_count > 0) {
      MDB_cursor *cur;
      MDB_val tag;
      if ((rc = mdb_cursor_open(d->txn, m->tags, &cur))) break;
      rc = rarest_tag(cur, item, &tag);
      tag_walk_t w = {cur, tag, 0};
      if (rc == 0 && tag.mv_data) rc = tag_walk_seek(&w, true, cond->after + 1);
      while (rc == 0 && w.at && w.at <= bound) {
        rec_view_t r;
        if ((rc = log_get(m, d->txn, w.at, &r))) {
          if (rc == MDB_NOTFOUND) rc = MDB_CORRUPTED; /* a tag of no event */
          break;
        }
        int hit = item_matches_at(m, d->txn, item, &r);
        if (hit < 0) rc = -hit;
        if (hit) {
          if (hit > 0) best = w.at;
          break;
        }
        rc = tag_walk_step(&w, true);
      }
      mdb_cursor_close(cur);
    } else {
      MDB_cursor *cur;
      if ((rc = mdb_cursor_open(d->txn, m->log, &cur))) break;
      size_t key = (size_t)(cond->after + 1);
      MDB_val k = {sizeof key, &key}, v;
      MDB_cursor_op op = MDB_SET_KEY;
      for (uint64_t p = cond->after + 1; p <= bound; p++) {
        if ((rc = mdb_cursor_get(cur, &k, &v, op))) break;
        op = MDB_NEXT;
        rec_view_t r;
        if (!es__lmdb_rec_decode(v.mv_data, v.mv_size, &r)) {
          rc = MDB_CORRUPTED;
          break;
        }
        int hit = item_matches_at(m, d->txn, item, &r);
        if (hit < 0) rc = -hit;
        if (hit) {
          if (hit > 0) best = p;
          break;
        }
      }
      mdb_cursor_close(cur);
    }
  }
  if (rc) {
    if (!d->lmdb_rc) d->lmdb_rc = rc;
    return false;
  }
  *position = best;
  return best != 0;
}

/* An id assigned by es_append_prepare is not looked up: it is new, and this
 * backend never retries a commit of unknown outcome (fail_store). That saves
 * a B-tree descent per event for the clients that leave ids to the server. */
static bool lookup_id(void *ctx, size_t index, es_stored_event_t *out) {
  decide_ctx_t *d = ctx;
  if (d->req->events[index].id_assigned) return false;
  MDB_val k = {ES_UUID_LEN, (void *)d->req->events[index].id}, v;
  int rc = mdb_get(d->txn, d->m->ids, &k, &v);
  if (rc == MDB_NOTFOUND) return false;
  rec_view_t r;
  const char *stream_id, *stream_type;
  if (rc == 0 && v.mv_size == sizeof(uint64_t)) {
    uint64_t pos = get_u64(v.mv_data);
    rc = log_get(d->m, d->txn, pos, &r);
    if (rc == 0) rc = stream_name_get(d->m, d->txn, r.h.stream, &stream_id, &stream_type);
    if (rc == MDB_NOTFOUND) rc = MDB_CORRUPTED; /* an id without its event or stream */
    if (rc == 0) {
      out->stream_id = stream_id;
      out->stream_version = r.h.version;
      out->global_position = pos;
      out->recorded_at_unix_ms = r.h.recorded_at;
      out->batch_first = (r.h.flags & REC_FIRST) != 0;
      out->batch_last = (r.h.flags & REC_LAST) != 0;
      out->joined_prev = (r.h.flags & REC_JOINED_PREV) != 0;
      out->joined_next = (r.h.flags & REC_JOINED_NEXT) != 0;
      out->own_attempt = false; /* an outcome is never unknown here */
      return true;
    }
  } else if (rc == 0) {
    rc = MDB_CORRUPTED;
  }
  if (!d->lmdb_rc) d->lmdb_rc = rc;
  return false;
}

/* The event types one write transaction looked up or gave a number: the last
 * one is remembered, as the events of a batch mostly share their type. It
 * lives as long as the transaction (an aborted one's numbers are gone). */
typedef struct type_memo {
  const char *name; /* the last type, in its request's memory, or NULL */
  uint64_t number;  /* its number */
  uint64_t next;    /* the next free number, 0 until one was needed */
} type_memo_t;

/* The number of event type name, given one when it has none yet (the next
 * after the highest). 0 or an LMDB error. */
static int type_number(es_lmdb_t *m, MDB_txn *txn, type_memo_t *memo, const char *name,
                       uint64_t *out) {
  if (name[0] == '\0') {
    *out = 0;
    return 0;
  }
  if (memo->name && strcmp(memo->name, name) == 0) {
    *out = memo->number;
    return 0;
  }
  size_t len = strlen(name);
  MDB_val k = {len, (void *)name}, v;
  uint64_t number;
  int rc = mdb_get(txn, m->types, &k, &v);
  if (rc == 0) {
    if (v.mv_size != sizeof number) return MDB_CORRUPTED;
    number = get_u64(v.mv_data);
  } else if (rc == MDB_NOTFOUND) {
    if (memo->next == 0) {
      MDB_cursor *cur;
      if ((rc = mdb_cursor_open(txn, m->type_names, &cur))) return rc;
      MDB_val lk, lv;
      rc = mdb_cursor_get(cur, &lk, &lv, MDB_LAST);
      mdb_cursor_close(cur);
      if (rc == 0)
        memo->next = get_u64(lk.mv_data) + 1;
      else if (rc == MDB_NOTFOUND)
        memo->next = 1;
      else
        return rc;
    }
    number = memo->next++;
    v.mv_size = sizeof number;
    v.mv_data = &number;
    if ((rc = mdb_put(txn, m->types, &k, &v, MDB_NOOVERWRITE))) return rc;
    size_t key = (size_t)number;
    MDB_val nk = {sizeof key, &key}, nv = {len + 1, (void *)name};
    if ((rc = mdb_put(txn, m->type_names, &nk, &nv, MDB_APPEND))) return rc;
  } else {
    return rc;
  }
  memo->name = name;
  memo->number = number;
  *out = number;
  return 0;
}

/* The `versions` key of a stream's chunk. */
static void versions_key(uint8_t key[16], uint64_t number, uint64_t chunk) {
  put_be64(key, number);
  put_be64(key + 8, chunk);
}

/* Adds the positions first_pos.. of versions first_version.. (n of them,
 * consecutive: one append) to stream number's index: into its last chunk
 * while it has room, then into new ones. The stream's earlier versions are
 * all there (appends are decided in order), so a chunk that is not where
 * the versions say is damage. 0 or an LMDB error. */
static int versions_add(es_lmdb_t *m, MDB_txn *txn, uint64_t number, uint64_t first_version,
                        uint64_t first_pos, size_t n) {
  uint64_t version = first_version, pos = first_pos;
  while (n > 0) {
    uint64_t chunk = (version - 1) / VERSION_CHUNK;
    size_t slot = (size_t)((version - 1) % VERSION_CHUNK);
    size_t take = n < VERSION_CHUNK - slot ? n : VERSION_CHUNK - slot;
    uint8_t key[16];
    versions_key(key, number, chunk);
    MDB_val k = {sizeof key, key}, v;
    uint64_t buf[VERSION_CHUNK];
    if (slot > 0) {
      int rc = mdb_get(txn, m->versions, &k, &v);
      if (rc) return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
      if (v.mv_size != slot * sizeof *buf) return MDB_CORRUPTED;
      memcpy(buf, v.mv_data, v.mv_size);
    }
    for (size_t j = 0; j < take; j++) buf[slot + j] = pos + j;
    v.mv_size = (slot + take) * sizeof *buf;
    v.mv_data = buf;
    int rc = mdb_put(txn, m->versions, &k, &v, 0);
    if (rc) return rc;
    version += take;
    pos += take;
    n -= take;
  }
  return 0;
}

/* Writes the events of req into txn at positions first_pos.. with versions
 * res->first_version.. (decided), and its stream's row. row is the stream
 * as read before this request wrote anything, or NULL to read it now (an
 * earlier append of the same request may have written it). joined_prev /
 * joined_next: the REC_JOINED_* flags of an AppendMany. 0 or an LMDB
 * error. */
static int write_append(es_lmdb_t *m, MDB_txn *txn, type_memo_t *memo, const es_append_req_t *req,
                        const stream_row_t *row, bool row_exists, const es_append_result_t *res,
                        uint64_t first_pos, uint64_t recorded_at, uint8_t joined) {
  size_t n = req->event_count;
  size_t id_len = strlen(req->stream_id);
  stream_row_t s = {0, 0, ""};
  bool exists = row_exists;
  int rc = 0;
  if (row)
    s = *row;
  else if ((rc = stream_get(m, txn, req->stream_id, id_len, &exists, &s)))
    return rc;

  /* The new stream row's type: the stored one, else the request's. Copied
   * before the puts, which may move the page s.type points into. */
  const char *req_type = req->stream_type ? req->stream_type : "";
  const char *type = s.type[0] ? s.type : req_type;
  bool named = exists && strcmp(type, s.type) == 0; /* stream_names holds it as it is */
  size_t type_len = strlen(type);
  size_t row_len = STREAM_VAL_FIXED + type_len + 1;
  uint8_t small[STREAM_VAL_FIXED + 512];
  uint8_t *srow = row_len <= sizeof small ? small : malloc(row_len);
  if (!srow) return ENOMEM;
  uint64_t last = res->first_version - 1;
  uint64_t number = exists ? s.number : first_pos;
  uint64_t new_last = res->last_version;
  memcpy(srow, &number, 8);
  memcpy(srow + 8, &new_last, 8);
  memcpy(srow + STREAM_VAL_FIXED, type, type_len + 1);

  for (size_t i = 0; i < n && rc == 0; i++) {
    const es_event_data_t *ev = &req->events[i];
    uint64_t pos = first_pos + i, version = last + 1 + i;
    rec_keys_t keys = {number, 0, version, recorded_at};
    rc = type_number(m, txn, memo, ev->event_type ? ev->event_type : "", &keys.type);
    if (rc) break;
    size_t size;
    /* The sizes were checked before the item was queued. */
    es__lmdb_rec_size(ev, &keys, &size, NULL);
    size_t key = (size_t)pos;
    MDB_val k = {sizeof key, &key}, v = {size, NULL};
    rc = mdb_put(txn, m->log, &k, &v, MDB_APPEND | MDB_RESERVE);
    if (rc) break;
    uint8_t flags = (uint8_t)((i == 0 ? REC_FIRST | (joined & REC_JOINED_PREV) : 0) |
                              (i == n - 1 ? REC_LAST | (joined & REC_JOINED_NEXT) : 0));
    es__lmdb_rec_write(v.mv_data, ev, &keys, flags);

    MDB_val ik = {ES_UUID_LEN, (void *)ev->id}, iv = {sizeof pos, &pos};
    rc = mdb_put(txn, m->ids, &ik, &iv, MDB_NOOVERWRITE);
    if (rc) break;
    /* Positions grow and an event names a tag once (validation): each is
     * the newest of its tag's list. */
    uint8_t tdata[TAG_ENTRY];
    put_be64(tdata, pos);
    for (size_t t = 0; t < ev->tag_count && rc == 0; t++) {
      MDB_val tk = {strlen(ev->tags[t]), (void *)ev->tags[t]}, tv = {sizeof tdata, tdata};
      rc = mdb_put(txn, m->tags, &tk, &tv, MDB_APPENDDUP);
    }
  }
  if (rc == 0) rc = versions_add(m, txn, number, last + 1, first_pos, n);
  if (rc == 0) {
    MDB_val k = {id_len, (void *)req->stream_id}, v = {row_len, srow};
    rc = mdb_put(txn, m->streams, &k, &v, 0);
  }
  if (rc == 0 && !named) {
    /* A new stream (numbers grow: appended) or its type given at last. */
    size_t nkey = (size_t)number;
    MDB_val k = {sizeof nkey, &nkey}, v = {id_len + 1 + type_len + 1, NULL};
    rc = mdb_put(txn, m->stream_names, &k, &v, exists ? MDB_RESERVE : MDB_RESERVE | MDB_APPEND);
    if (rc == 0) {
      memcpy(v.mv_data, req->stream_id, id_len + 1);
      memcpy((char *)v.mv_data + id_len + 1, srow + STREAM_VAL_FIXED, type_len + 1);
    }
  }
  if (srow != small) free(srow);
  return rc;
}

#define SMALL_ITEM 4 /* appends of an item decided without allocating */

/* Decides item (an Append, or an AppendMany: es_append_many_decide) over
 * txn, which holds the group's earlier items, and writes its events: one
 * contiguous run of positions after *head, which it advances. Returns 0
 * with item->rc set (the decision's answer), or an LMDB error that voids
 * the whole group. */
static int append_one(es_lmdb_t *m, MDB_txn *txn, type_memo_t *memo, append_item_t *item,
                      uint64_t *head) {
  size_t n = item->n;
  stream_row_t rows_small[SMALL_ITEM];
  bool exists_small[SMALL_ITEM];
  decide_ctx_t dctx_small[SMALL_ITEM];
  es_append_view_t views_small[SMALL_ITEM];
  stream_row_t *rows = rows_small;
  bool *exists = exists_small;
  decide_ctx_t *dctx = dctx_small;
  es_append_view_t *views = views_small;
  memset(item->out, 0, n * sizeof *item->out);
  es_err_clear(item->err);
  if (n > SMALL_ITEM) {
    rows = malloc(n * sizeof *rows);
    exists = malloc(n * sizeof *exists);
    dctx = malloc(n * sizeof *dctx);
    views = malloc(n * sizeof *views);
    if (!rows || !exists || !dctx || !views) {
      item->rc = es_err_set(item->err, ES_ENOMEM, "out of memory appending %zu appends", n);
      n = 0; /* nothing to decide; freed below */
    }
  }
  int rc = 0;
  es_append_decision_t decision = ES_APPEND_STORED;
  for (size_t a = 0; a < n && rc == 0; a++) {
    const es_append_req_t *req = &item->appends[a];
    rows[a] = (stream_row_t){0, 0, ""};
    rc = stream_get(m, txn, req->stream_id, strlen(req->stream_id), &exists[a], &rows[a]);
    dctx[a] = (decide_ctx_t){m, txn, req, *head, 0};
    views[a] = (es_append_view_t){rows[a].last, rows[a].type, lookup_id, &dctx[a]};
  }
  if (rc == 0 && n > 0) {
    /* The condition is answered over the log before the request. */
    es_condition_view_t cview = {cond_match, &dctx[0]};
    if (item->many) {
      es_append_many_req_t mreq = {(es_append_req_t *)item->appends, n, item->cond};
      es_append_many_view_t mview = {views, cview};
      item->rc = es_append_many_decide(&mreq, &mview, &decision, item->out, item->err);
    } else {
      item->rc = es_append_decide_conditional(&item->appends[0], &views[0], &cview, &decision,
                                              item->out, item->err);
    }
    for (size_t a = 0; a < n && rc == 0; a++) rc = dctx[a].lmdb_rc;
  }
  if (rc == 0 && n > 0 && item->rc == 0 && decision == ES_APPEND_WRITE) {
    uint64_t recorded_at = es_now_unix_ms();
    uint64_t pos = *head + 1;
    for (size_t a = 0; a < n && rc == 0; a++) {
      const es_append_req_t *req = &item->appends[a];
      /* The row read before the request points into pages that the
       * puts of an earlier append may have moved: only the first append
       * uses it. */
      uint8_t joined = (uint8_t)((a > 0 ? REC_JOINED_PREV : 0) | (a + 1 < n ? REC_JOINED_NEXT : 0));
      rc = write_append(m, txn, memo, req, a == 0 ? &rows[0] : NULL, exists[a], &item->out[a], pos,
                        recorded_at, joined);
      es_append_result_t *out = &item->out[a];
      out->first_position = pos;
      out->last_position = pos + req->event_count - 1;
      out->recorded_at_unix_ms = recorded_at;
      out->duplicate = false;
      pos += req->event_count;
    }
    if (rc == 0) {
      *head = pos - 1;
      item->wrote = true;
    }
  }
  if (rows != rows_small) {
    free(rows);
    free(exists);
    free(dctx);
    free(views);
  }
  return rc;
}

/* Answers every item of the group with code and msg. */
static void fail_group(append_item_t *group, int code, const char *msg) {
  for (append_item_t *it = group; it; it = it->next) {
    memset(it->out, 0, it->n * sizeof *it->out);
    it->rc = es_err_set(it->err, code, "%s", msg);
  }
}

static int grow_map(es_lmdb_t *m) {
  uint64_t size = m->map_size * 2;
  pthread_rwlock_wrlock(&m->resize);
  int rc = mdb_env_set_mapsize(m->env, (size_t)size);
  pthread_rwlock_unlock(&m->resize);
  if (rc) return rc;
  m->map_size = size;
  atomic_store(&m->st_map_size, size);
  atomic_fetch_add(&m->st_map_grows, 1);
  return 0;
}

/* Whether the data file can grow by one page now: 0, or the errno of the
 * attempt. The page written is cut off again: the file keeps its size. */
static int probe_growth(es_lmdb_t *m) {
  static const char zeros[4096];
  int fd;
  struct stat st;
  if (mdb_env_get_fd(m->env, &fd) != 0 || fstat(fd, &st) != 0) return 0;
  ssize_t w = pwrite(fd, zeros, sizeof zeros, st.st_size);
  int e = w == (ssize_t)sizeof zeros ? 0 : w < 0 ? errno : ENOSPC;
  if (ftruncate(fd, st.st_size) != 0 && e == 0) e = errno;
  return e;
}

/* Whether rc, met while writing a group, means the disk is full (then
 * writing again later is safe; see the essay). Fills msg when it does. */
static bool no_space(es_lmdb_t *m, int rc, char *msg, size_t size) {
  int cause = rc;
  if (rc == EIO) {
    cause = probe_growth(m);
    if (cause == 0) return false;
  }
  if (cause != ENOSPC && cause != EDQUOT && cause != EFBIG) return false;
  snprintf(msg, size,
           "lmdb: no space to write in '%s' (%s): the append was not stored; appends fail "
           "until space is freed, reads go on",
           m->dir, strerror(cause));
  atomic_fetch_add(&m->st_no_space, 1);
  return true;
}

/* Zeros kept written past LMDB's last page (see the essay). */
#define ZERO_AHEAD (3u << 20) /* refilled up to this much */
#define ZERO_LOW (2u << 20)   /* when less than this is left */
#define ZERO_PIECE (1u << 20) /* in writes of at most this */

/* Writes zeros past the end of data.mdb up to ZERO_AHEAD past LMDB's last
 * page when less than ZERO_LOW is left there, and syncs them. The committing
 * thread only, between transactions. Errors are ignored (see the essay). */
static void zero_ahead(es_lmdb_t *m) {
  static const uint8_t zeros[ZERO_PIECE];
  MDB_envinfo info;
  int fd;
  struct stat st;
  if (mdb_env_info(m->env, &info) != 0) return;
  uint64_t used = ((uint64_t)info.me_last_pgno + 1) * m->page_size;
  if (m->file_end >= used + ZERO_LOW) return;
  if (mdb_env_get_fd(m->env, &fd) != 0 || fstat(fd, &st) != 0) return;
  uint64_t end = (uint64_t)st.st_size; /* LMDB may have written past file_end */
  uint64_t target = used + ZERO_AHEAD;
  if (target > m->map_size) target = m->map_size;
  bool wrote = false;
  while (end < target) {
    size_t len = target - end < ZERO_PIECE ? (size_t)(target - end) : ZERO_PIECE;
    ssize_t w = pwrite(fd, zeros, len, (off_t)end);
    if (w <= 0) break;
    end += (uint64_t)w;
    wrote = true;
    if ((size_t)w < len) break;
  }
  if (wrote) (void)fdatasync(fd);
  m->file_end = end;
}

/* Marks the store failed for good (after a commit of unknown outcome). */
static void fail_store(es_lmdb_t *m, append_item_t *group, const char *what, int rc) {
  snprintf(m->failed_msg, sizeof m->failed_msg,
           "lmdb: %s in '%s' failed (%s): the store accepts no more appends until it is "
           "reopened",
           what, m->dir, mdb_strerror(rc));
  atomic_store(&m->failed, 1);
  fail_group(group, ES_EUNAVAIL, m->failed_msg);
}

/* Commits one group: every item gets its answer in it->rc (and out/err). */
static void commit_group(es_lmdb_t *m, append_item_t *group) {
  char msg[ES_ERR_MSG_MAX];
  if (atomic_load(&m->failed)) {
    fail_group(group, ES_EUNAVAIL, m->failed_msg);
    return;
  }
  for (;;) {
    MDB_txn *txn;
    uint64_t head = m->head;
    zero_ahead(m);
    int rc = mdb_txn_begin(m->env, NULL, 0, &txn);
    if (rc == MDB_PANIC) { /* LMDB's verdict after a failed meta write */
      fail_store(m, group, "a commit", rc);
      return;
    }
    if (rc) {
      snprintf(msg, sizeof msg, "lmdb: beginning a write: %s", mdb_strerror(rc));
      fail_group(group, ES_EUNAVAIL, msg);
      return;
    }
    size_t wrote = 0, count = 0;
    type_memo_t memo = {NULL, 0, 0};
    for (append_item_t *it = group; it && rc == 0; it = it->next) {
      it->wrote = false;
      rc = append_one(m, txn, &memo, it, &head);
      wrote += it->wrote;
      count++;
    }
    uint64_t events = head - m->head;
    if (rc == 0 && wrote == 0) { /* duplicates and refusals only */
      mdb_txn_abort(txn);
      return;
    }
    if (rc == 0) {
      uint64_t t0 = now_us();
      int hook_rc = m->commit_hook ? m->commit_hook(m->commit_hook_ctx) : 0;
      if (hook_rc) {
        mdb_txn_abort(txn);
        rc = hook_rc > 0 ? hook_rc : EIO;
      } else {
        rc = mdb_txn_commit(txn);
      }
      uint64_t took = now_us() - t0;
      atomic_fetch_add(&m->st_commit_us, took);
      /* Only the committing thread writes the maxima: load and store. */
      if (took > atomic_load(&m->st_commit_max_us)) atomic_store(&m->st_commit_max_us, took);
      if (rc == 0) {
        m->head = head;
        atomic_store(&m->published, head);
        atomic_fetch_add(&m->st_commits, 1);
        atomic_fetch_add(&m->st_appends, wrote);
        atomic_fetch_add(&m->st_events, events);
        atomic_fetch_add(&m->st_grouped, count);
        if (count > atomic_load(&m->st_group_max)) atomic_store(&m->st_group_max, count);
        es__backend_publish(&m->base, head);
        return;
      }
      if (rc == MDB_MAP_FULL && grow_map(m) == 0) continue;
      if (no_space(m, rc, msg, sizeof msg)) {
        fail_group(group, ES_ENOSPACE, msg);
        return;
      }
      /* The commit's outcome is unknown: never write again in this life. */
      fail_store(m, group, "a commit", rc);
      return;
    }
    mdb_txn_abort(txn);
    if (rc == MDB_MAP_FULL) {
      int grc = grow_map(m);
      if (grc == 0) continue;
      rc = grc;
    }
    /* LMDB writes pages out before the commit when a transaction holds too
     * many of them: a full disk can show here too. */
    if (no_space(m, rc, msg, sizeof msg)) {
      fail_group(group, ES_ENOSPACE, msg);
      return;
    }
    snprintf(msg, sizeof msg, "lmdb: writing to '%s': %s", m->dir, mdb_strerror(rc));
    fail_group(group, rc == ENOMEM ? ES_ENOMEM : ES_EUNAVAIL, msg);
    return;
  }
}

/* Sets it->state and wakes its thread. The waiter may see the state, return
 * and reuse its stack before the wake-up is made: a futex wake on a stale
 * address is at worst a spurious wake-up of whatever waits there next, which
 * item_wait tolerates (it rechecks the state). */
static void item_wake(append_item_t *it, uint32_t state) {
  atomic_store_explicit(&it->state, state, memory_order_release);
  syscall(SYS_futex, (void *)&it->state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Waits until the item is done or woken to lead; returns which. */
static uint32_t item_wait(append_item_t *it) {
  uint32_t st;
  while ((st = atomic_load_explicit(&it->state, memory_order_acquire)) == ITEM_WAITING)
    syscall(SYS_futex, (void *)&it->state, FUTEX_WAIT_PRIVATE, ITEM_WAITING, NULL, NULL, 0);
  return st;
}

/* Ends every item of a group but `self` (the leader's own, which its
 * caller ends): an asynchronous item by calling its done and freeing it, a
 * waiting one by waking its thread. */
static void answer_group(append_item_t *group, const append_item_t *self) {
  for (append_item_t *it = group, *next; it; it = next) {
    next = it->next; /* `it` may be gone once it is done */
    if (it == self) continue;
    if (it->done) {
      /* As the blocking AppendMany leaves them (es_backend_append_many). */
      if (it->rc != ES_OK && it->many) memset(it->out, 0, it->n * sizeof *it->out);
      it->done(it->done_arg, it->rc);
      free(it);
    } else {
      item_wake(it, ITEM_DONE);
    }
  }
}

/* Commits everything queued as one group, on the calling thread, which
 * holds `committing` and whose own item (NULL for the committer thread) is
 * in the queue. Called with qlock held, returns without it. Hands
 * `committing` on to the first item queued meanwhile (woken first, so that
 * the next commit starts at once) — or, when that item is asynchronous and
 * has no thread to lead, to the committer thread — or clears it; then ends
 * the others of the group. The wake-ups are made after qlock is released,
 * so that a woken thread never runs into the lock. */
static void lead_group(es_lmdb_t *m, append_item_t *self) {
  append_item_t *group = m->qhead;
  m->qhead = m->qtail = NULL;
  pthread_mutex_unlock(&m->qlock);
  commit_group(m, group);
  pthread_mutex_lock(&m->qlock);
  append_item_t *next_leader = m->qhead;
  if (!next_leader) {
    m->committing = false;
  } else if (next_leader->done) {
    m->committer_called = true;
    pthread_cond_signal(&m->committer_cv);
    next_leader = NULL;
  }
  pthread_mutex_unlock(&m->qlock);
  if (next_leader) item_wake(next_leader, ITEM_LEAD);
  answer_group(group, self);
}

/* The committer thread: leads a group whenever it is called (an
 * asynchronous append found nobody committing, or a group ended with an
 * asynchronous item first in the queue), until close. */
static void *committer_main(void *arg) {
  es_lmdb_t *m = arg;
  pthread_mutex_lock(&m->qlock);
  for (;;) {
    while (!m->committer_called && !m->stopping) pthread_cond_wait(&m->committer_cv, &m->qlock);
    if (!m->committer_called) break; /* stopping, and nothing queued for it */
    m->committer_called = false;
    lead_group(m, NULL);
    pthread_mutex_lock(&m->qlock);
  }
  pthread_mutex_unlock(&m->qlock);
  return NULL;
}

/* ES_ETOOBIG (err names the field) when req does not fit the format. */
static int check_fits(es_lmdb_t *m, const es_append_req_t *req, es_err_t *err) {
  size_t id_len = strlen(req->stream_id);
  int maxkey = mdb_env_get_maxkeysize(m->env);
  if (id_len == 0 || id_len > (size_t)maxkey)
    return es_err_set(err, ES_ETOOBIG, "stream_id: %zu bytes, the lmdb backend holds 1 to %d",
                      id_len, maxkey);
  const rec_keys_t most = {UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
  for (size_t i = 0; i < req->event_count; i++) {
    const char *type = req->events[i].event_type;
    size_t type_len = type ? strlen(type) : 0;
    if (type_len > (size_t)maxkey) /* a key of the types dictionary */
      return es_err_set(err, ES_ETOOBIG,
                        "events[%zu].event_type: %zu bytes, the lmdb backend holds at most %d", i,
                        type_len, maxkey);
    for (size_t t = 0; t < req->events[i].tag_count; t++) {
      size_t tag_len = strlen(req->events[i].tags[t]);
      if (tag_len > (size_t)maxkey) /* a key of the tag index */
        return es_err_set(err, ES_ETOOBIG,
                          "events[%zu].tags[%zu]: %zu bytes, the lmdb backend holds at most %d", i,
                          t, tag_len, maxkey);
    }
    size_t size;
    int rc = es__lmdb_rec_size(&req->events[i], &most, &size, err);
    if (rc) return rc;
  }
  return ES_OK;
}

/* Puts item at the end of the queue. Under qlock. */
static void enqueue(es_lmdb_t *m, append_item_t *item) {
  if (m->qtail)
    m->qtail->next = item;
  else
    m->qhead = item;
  m->qtail = item;
}

/* Queues item and waits for its answer; commits its group when no other
 * thread is committing (the essay). */
static int submit(es_lmdb_t *m, append_item_t *item) {
  if (atomic_load(&m->failed)) return es_err_set(item->err, ES_EUNAVAIL, "%s", m->failed_msg);
  pthread_mutex_lock(&m->qlock);
  enqueue(m, item);
  bool lead = !m->committing; /* nobody commits: this thread does, at once */
  m->committing = true;
  if (!lead) {
    pthread_mutex_unlock(&m->qlock);
    if (item_wait(item) == ITEM_DONE) return item->rc;
    pthread_mutex_lock(&m->qlock); /* woken to lead the next group */
  }
  lead_group(m, item); /* the group holds item */
  return item->rc;
}

static int lmdb_append(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                       es_err_t *err) {
  es_lmdb_t *m = (es_lmdb_t *)b;
  memset(out, 0, sizeof *out);
  int rc = check_fits(m, req, err);
  if (rc) return rc;
  es_err_t local;
  append_item_t item = {req,          1,     req->condition, false, out, err ? err : &local, ES_OK,
                        ITEM_WAITING, false, NULL,           NULL,  NULL};
  return submit(m, &item);
}

/* Queues an asynchronous item (a copy of *proto with done and arg) and
 * returns: the thread that commits its group calls done (the essay of
 * es_backend_methods_t.append_async). When nobody is committing, the
 * committer thread is called to commit it: an appending thread of the server
 * is never held for a commit. */
static void submit_async(es_lmdb_t *m, const append_item_t *proto, es_append_done_fn done,
                         void *arg) {
  int rc = ES_OK;
  if (atomic_load(&m->failed)) rc = es_err_set(proto->err, ES_EUNAVAIL, "%s", m->failed_msg);
  append_item_t *item = rc ? NULL : malloc(sizeof *item);
  if (!rc && !item) rc = es_err_set(proto->err, ES_ENOMEM, "out of memory queueing an append");
  if (rc) {
    done(arg, rc);
    return;
  }
  *item = *proto;
  item->done = done;
  item->done_arg = arg;
  pthread_mutex_lock(&m->qlock);
  if (!m->committer_started) {
    if (pthread_create(&m->committer, NULL, committer_main, m) != 0) {
      pthread_mutex_unlock(&m->qlock);
      free(item);
      done(arg, es_err_set(proto->err, ES_EUNAVAIL, "cannot start the lmdb committer thread"));
      return;
    }
    m->committer_started = true;
  }
  enqueue(m, item);
  if (!m->committing) {
    m->committing = true;
    m->committer_called = true;
    pthread_cond_signal(&m->committer_cv);
  }
  pthread_mutex_unlock(&m->qlock);
}

static void lmdb_append_async(es_backend_t *b, const es_append_req_t *req, es_append_result_t *out,
                              es_err_t *err, es_append_done_fn done, void *arg) {
  es_lmdb_t *m = (es_lmdb_t *)b;
  memset(out, 0, sizeof *out);
  int rc = check_fits(m, req, err);
  if (rc) {
    done(arg, rc);
    return;
  }
  append_item_t item = {req,          1,     req->condition, false, out, err, ES_OK,
                        ITEM_WAITING, false, NULL,           NULL,  NULL};
  submit_async(m, &item, done, arg);
}

/* ES_OK when every append of req fits the format; else its error, naming
 * the append (err->append_index). */
static int check_many_fits(es_lmdb_t *m, const es_append_many_req_t *req, es_err_t *err) {
  for (size_t a = 0; a < req->append_count; a++) {
    int rc = check_fits(m, &req->appends[a], err);
    if (rc) {
      if (err) {
        err->has_append_index = 1;
        err->append_index = a;
      }
      return rc;
    }
  }
  return ES_OK;
}

static void lmdb_append_many_async(es_backend_t *b, const es_append_many_req_t *req,
                                   es_append_result_t *results, es_err_t *err,
                                   es_append_done_fn done, void *arg) {
  es_lmdb_t *m = (es_lmdb_t *)b;
  memset(results, 0, req->append_count * sizeof *results);
  int rc = check_many_fits(m, req, err);
  if (rc) {
    done(arg, rc);
    return;
  }
  append_item_t item = {req->appends, req->append_count, req->condition, true, results, err,
                        ES_OK,        ITEM_WAITING,      false,          NULL, NULL,    NULL};
  submit_async(m, &item, done, arg);
}

static int lmdb_append_many(es_backend_t *b, const es_append_many_req_t *req,
                            es_append_result_t *results, es_err_t *err) {
  es_lmdb_t *m = (es_lmdb_t *)b;
  memset(results, 0, req->append_count * sizeof *results);
  int rc = check_many_fits(m, req, err);
  if (rc) return rc;
  es_err_t local;
  append_item_t item = {
      req->appends, req->append_count, req->condition, true, results, err ? err : &local,
      ES_OK,        ITEM_WAITING,      false,          NULL, NULL,    NULL};
  return submit(m, &item);
}

/* ---- reads ------------------------------------------------------------ */

/* The names a read met, by number: a direct-mapped cache for one read
 * transaction and the page it fills. A page of events of a few streams
 * looks each name up once and copies it into the page once (page_name_t);
 * a slot taken by another number only costs a lookup again. */
typedef struct stream_slot {
  uint64_t number; /* 0: empty (numbers are positions) */
  page_name_t id, type;
} stream_slot_t;

typedef struct type_slot {
  uint64_t number; /* 0 ("") is never cached: see type_of */
  page_name_t name;
} type_slot_t;

typedef struct names {
  stream_slot_t streams[NAME_SLOTS];
  type_slot_t types[NAME_SLOTS];
  page_name_t empty_type;
} names_t;

static void names_init(names_t *c) {
  memset(c, 0, sizeof *c);
  c->empty_type.src = "";
}

/* Stream numbers are first positions, which batches space regularly: mixed
 * so that such runs spread over the slots. */
static size_t slot_of(uint64_t number) {
  return (size_t)((number * UINT64_C(0x9E3779B97F4A7C15)) >> 58) & (NAME_SLOTS - 1);
}

static int stream_of(es_lmdb_t *m, MDB_txn *txn, names_t *c, uint64_t number, stream_slot_t **out) {
  stream_slot_t *s = &c->streams[slot_of(number)];
  if (s->number != number) {
    const char *id, *type;
    int rc = stream_name_get(m, txn, number, &id, &type);
    if (rc) return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc; /* an event of no stream */
    s->number = number;
    s->id = (page_name_t){id, NULL};
    s->type = (page_name_t){type, NULL};
  }
  *out = s;
  return 0;
}

static int type_of(es_lmdb_t *m, MDB_txn *txn, names_t *c, uint64_t number, page_name_t **out) {
  if (number == 0) {
    *out = &c->empty_type;
    return 0;
  }
  type_slot_t *t = &c->types[slot_of(number)];
  if (t->number != number) {
    const char *name;
    int rc = type_name_get(m, txn, number, &name);
    if (rc) return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc; /* a type not in the dictionary */
    t->number = number;
    t->name = (page_name_t){name, NULL};
  }
  *out = &t->name;
  return 0;
}

static int read_failed(es_page_t *out, es_err_t *err, int code, const char *what, int mrc) {
  es_page_free(out);
  memset(out, 0, sizeof *out);
  if (code == ES_ENOMEM) return es_err_set(err, code, "out of memory reading %s", what);
  return es_err_set(err, code, "lmdb: reading %s: %s", what, mdb_strerror(mrc));
}

static int lmdb_read_stream(es_backend_t *b, const es_read_stream_req_t *req, es_page_t *out,
                            es_err_t *err) {
  es_lmdb_t *m = (es_lmdb_t *)b;
  size_t limit = req->max_count, max_bytes = req->max_bytes;
  const char *id = req->stream_id ? req->stream_id : "";
  size_t len = strlen(id);
  MDB_txn *txn;
  names_t *names = malloc(sizeof *names);
  if (!names) return es_err_set(err, ES_ENOMEM, "out of memory reading a stream");
  names_init(names);
  int rc = begin_read(m, &txn, err);
  if (rc) {
    free(names);
    return rc;
  }
  stream_row_t s = {0, 0, ""};
  bool found = false;
  int mrc = len ? stream_get(m, txn, id, len, &found, &s) : 0;
  if (mrc) goto lmdb_error;
  if (!found) {
    free(names);
    end_read(m, txn);
    return es_err_set(err, ES_ENOTFOUND, "stream '%s' not found", id);
  }
  es_page_builder_t pb;
  es_page_builder_start(&pb, out, limit, max_bytes);
  uint64_t last = s.last, v;
  int added = 1;
  bool forward = req->direction == ES_FORWARD;
  out->last = last;
  if (forward)
    v = req->from_version ? req->from_version : 1;
  else
    v = (req->from_version == 0 || req->from_version > last) ? last : req->from_version;
  /* Every event is of this stream: its names are known. */
  page_name_t sid = {id, NULL}, stype = {s.type, NULL};
  /* The index holds versions 1..last of the stream densely, VERSION_CHUNK
   * to a value: one lookup per chunk, its positions read in place (the
   * snapshot's pages stay put until the transaction ends). */
  uint64_t chunk = UINT64_MAX;
  MDB_val val = {0, NULL};
  while (forward ? v <= last : v >= 1) {
    if ((v - 1) / VERSION_CHUNK != chunk) {
      chunk = (v - 1) / VERSION_CHUNK;
      uint8_t key[16];
      versions_key(key, s.number, chunk);
      MDB_val k = {sizeof key, key};
      if ((mrc = mdb_get(txn, m->versions, &k, &val))) {
        if (mrc == MDB_NOTFOUND) mrc = MDB_CORRUPTED; /* a version without its chunk */
        goto lmdb_error;
      }
    }
    size_t slot = (size_t)((v - 1) % VERSION_CHUNK);
    if (val.mv_size % 8 != 0 || val.mv_size / 8 <= slot) {
      mrc = MDB_CORRUPTED;
      goto lmdb_error;
    }
    uint64_t pos = get_u64((const uint8_t *)val.mv_data + slot * 8);
    rec_view_t r;
    if ((mrc = log_get(m, txn, pos, &r))) goto lmdb_error;
    page_name_t *etype;
    if (r.h.stream != s.number) mrc = MDB_CORRUPTED; /* the index names another stream's event */
    if (mrc || (mrc = type_of(m, txn, names, r.h.type, &etype))) goto lmdb_error;
    rec_names_t rn = {&sid, &stype, etype};
    if ((added = es__lmdb_page_add(&pb, &r, pos, &rn)) <= 0) break;
    v = forward ? v + 1 : v - 1;
  }
  free(names);
  end_read(m, txn);
  if (added < 0) return read_failed(out, err, ES_ENOMEM, "a stream", 0);
  if (forward) {
    if (v > last) v = last + 1; /* also from beyond the end */
    out->is_end = v > last;
  } else {
    out->is_end = v == 0;
  }
  out->next = v;
  return ES_OK;

lmdb_error:
  free(names);
  end_read(m, txn);
  return read_failed(out, err, ES_EUNAVAIL, "a stream", mrc);
}

/* Whether the record r, of stream stream_id and type event_type, matches
 * filter; its tags are looked at only when the filter has query items. */
static bool rec_match(const es_filter_t *filter, const char *stream_id, const char *event_type,
                      const rec_view_t *r) {
  if (filter->item_count == 0) return es_filter_match(filter, stream_id, event_type);
  const char *tags[REC_MAX_TAGS];
  es__lmdb_rec_tags(r, tags);
  return es_filter_match_tags(filter, stream_id, event_type, tags, r->tag_count);
}

/* ReadAll with query items that all name a tag (the essay): the candidates
 * are the positions of each item's rarest tag, merged in reading order (an
 * event in several lists is examined once), each checked against the whole
 * filter. max_scan bounds the candidates examined; the resume point is the
 * position after (FORWARD) or before (BACKWARD) the last one examined.
 * *used (OUT) false when the filter cannot use the index. Returns 0, an
 * LMDB error, or ES_ENOMEM in *added's way (*added < 0). */
static int read_all_indexed(es_lmdb_t *m, MDB_txn *txn, names_t *names,
                            const es_read_all_req_t *req, uint64_t head, es_page_builder_t *pb,
                            es_page_t *out, bool *used, int *added) {
  const es_filter_t *f = &req->filter;
  *used = false;
  if (f->item_count == 0 || f->item_count > INDEXED_ITEMS) return 0;
  for (size_t i = 0; i < f->item_count; i++)
    if (f->items[i].tag_count == 0) return 0;
  *used = true;
  tag_walk_t lists[INDEXED_ITEMS];
  size_t n = 0;
  int rc = 0;
  bool forward = req->direction == ES_FORWARD;
  uint64_t from;
  if (forward)
    from = req->from_position ? req->from_position : 1;
  else
    from = (req->from_position == 0 || req->from_position > head) ? head : req->from_position;
  for (size_t i = 0; i < f->item_count && rc == 0; i++) {
    /* The item's rarest tag; none when one of its tags was never used (the
     * item matches nothing). */
    MDB_cursor *cur;
    MDB_val best;
    if ((rc = mdb_cursor_open(txn, m->tags, &cur))) break;
    rc = rarest_tag(cur, &f->items[i], &best);
    bool twice = false; /* the same list as an earlier item's */
    for (size_t j = 0; j < n && best.mv_data; j++)
      twice |= lists[j].tag.mv_size == best.mv_size &&
               memcmp(lists[j].tag.mv_data, best.mv_data, best.mv_size) == 0;
    if (rc || !best.mv_data || twice || (!forward && from == 0)) {
      mdb_cursor_close(cur);
      continue;
    }
    lists[n] = (tag_walk_t){cur, best, 0};
    rc = tag_walk_seek(&lists[n++], forward, from);
  }
  uint64_t scanned = 0, max_scan = req->max_scan ? req->max_scan : UINT64_MAX;
  uint64_t last = 0; /* the last position examined; 0 = none */
  bool stopped = false;
  *added = 1;
  while (rc == 0) {
    /* The next candidate in reading order: the smallest (FORWARD) or
     * largest (BACKWARD) current position among the lists. */
    uint64_t p = 0;
    for (size_t i = 0; i < n; i++) {
      uint64_t q = lists[i].at;
      if (q && (p == 0 || (forward ? q < p : q > p))) p = q;
    }
    if (p == 0) break;
    if (out->count >= pb->limit || scanned >= max_scan) {
      stopped = true;
      break;
    }
    rec_view_t r;
    stream_slot_t *stream;
    page_name_t *etype;
    if ((rc = log_get(m, txn, p, &r)) || (rc = stream_of(m, txn, names, r.h.stream, &stream)) ||
        (rc = type_of(m, txn, names, r.h.type, &etype))) {
      if (rc == MDB_NOTFOUND) rc = MDB_CORRUPTED; /* a tag of no event */
      break;
    }
    if (rec_match(f, stream->id.src, etype->src, &r)) {
      rec_names_t rn = {&stream->id, &stream->type, etype};
      if ((*added = es__lmdb_page_add(pb, &r, p, &rn)) <= 0) {
        /* Did not fit (or no memory): it is read again next time. */
        last = forward ? p - 1 : p + 1;
        stopped = true;
        break;
      }
    }
    for (size_t i = 0; i < n && rc == 0; i++) /* past p in every list that holds it */
      if (lists[i].at == p) rc = tag_walk_step(&lists[i], forward);
    last = p;
    scanned++;
  }
  for (size_t i = 0; i < n; i++) mdb_cursor_close(lists[i].cur);
  if (rc) return rc;
  es_page_end_walk(out, forward, stopped, last, from, head);
  return 0;
}

static int lmdb_read_all(es_backend_t *b, const es_read_all_req_t *req, es_page_t *out,
                         es_err_t *err) {
  es_lmdb_t *m = (es_lmdb_t *)b;
  size_t limit = req->max_count, max_bytes = req->max_bytes;
  const es_filter_t *filter = es_filter_active(&req->filter) ? &req->filter : NULL;
  uint64_t max_scan = filter && req->max_scan ? req->max_scan : UINT64_MAX;
  uint64_t scanned = 0;
  MDB_txn *txn;
  MDB_cursor *cur = NULL;
  int added = 1, mrc;
  names_t *names = malloc(sizeof *names);
  if (!names) return es_err_set(err, ES_ENOMEM, "out of memory reading the log");
  names_init(names);
  int rc = begin_read(m, &txn, err);
  if (rc) {
    free(names);
    return rc;
  }
  es_page_builder_t pb;
  es_page_builder_start(&pb, out, limit, max_bytes);
  if ((mrc = mdb_cursor_open(txn, m->log, &cur))) goto lmdb_error;

  /* The head of this snapshot: the log's last key. */
  uint64_t head = 0;
  size_t key = 0;
  MDB_val k = {sizeof key, &key}, val;
  mrc = mdb_cursor_get(cur, &k, &val, MDB_LAST);
  if (mrc == 0)
    head = get_u64(k.mv_data);
  else if (mrc != MDB_NOTFOUND)
    goto lmdb_error;
  out->last = head;
  if (filter) {
    bool used;
    if ((mrc = read_all_indexed(m, txn, names, req, head, &pb, out, &used, &added)))
      goto lmdb_error;
    if (used) {
      free(names);
      mdb_cursor_close(cur);
      end_read(m, txn);
      if (added < 0) return read_failed(out, err, ES_ENOMEM, "the log", 0);
      return ES_OK;
    }
  }
  bool forward = req->direction == ES_FORWARD;
  uint64_t p;
  if (forward)
    p = req->from_position ? req->from_position : 1;
  else
    p = (req->from_position == 0 || req->from_position > head) ? head : req->from_position;
  MDB_cursor_op op = MDB_SET_KEY;
  key = (size_t)p;
  k.mv_size = sizeof key;
  k.mv_data = &key;
  while ((forward ? p <= head : p >= 1) && scanned < max_scan && out->count < pb.limit) {
    /* Positions are dense: one cursor step per position. */
    if ((mrc = mdb_cursor_get(cur, &k, &val, op))) goto lmdb_error;
    op = forward ? MDB_NEXT : MDB_PREV;
    rec_view_t r;
    if (!es__lmdb_rec_decode(val.mv_data, val.mv_size, &r)) {
      mrc = MDB_CORRUPTED;
      goto lmdb_error;
    }
    stream_slot_t *stream;
    page_name_t *etype;
    if ((mrc = stream_of(m, txn, names, r.h.stream, &stream)) ||
        (mrc = type_of(m, txn, names, r.h.type, &etype)))
      goto lmdb_error;
    if (!filter || rec_match(filter, stream->id.src, etype->src, &r)) {
      rec_names_t rn = {&stream->id, &stream->type, etype};
      if ((added = es__lmdb_page_add(&pb, &r, p, &rn)) <= 0) break;
    }
    p = forward ? p + 1 : p - 1;
    scanned++;
  }
  free(names);
  mdb_cursor_close(cur);
  end_read(m, txn);
  if (added < 0) return read_failed(out, err, ES_ENOMEM, "the log", 0);
  if (forward) {
    if (p > head) p = head + 1; /* also from beyond the end */
    out->is_end = p > head;
  } else {
    out->is_end = p == 0;
  }
  out->next = p;
  return ES_OK;

lmdb_error:
  free(names);
  if (cur) mdb_cursor_close(cur);
  end_read(m, txn);
  return read_failed(out, err, ES_EUNAVAIL, "the log", mrc);
}

static int lmdb_head(es_backend_t *b, uint64_t *out, es_err_t *err) {
  *out = atomic_load(&((es_lmdb_t *)b)->published);
  return ES_OK;
}

/* ---- open, close, stats ----------------------------------------------- */

static void lmdb_close(es_backend_t *b) {
  es_lmdb_t *m = (es_lmdb_t *)b;
  if (!m) return;
  if (m->committer_started) { /* it commits what is queued first */
    pthread_mutex_lock(&m->qlock);
    m->stopping = true;
    pthread_cond_signal(&m->committer_cv);
    pthread_mutex_unlock(&m->qlock);
    pthread_join(m->committer, NULL);
  }
  if (m->env) mdb_env_close(m->env);
  if (m->lock_fd >= 0) close(m->lock_fd); /* drops the flock */
  pthread_rwlock_destroy(&m->resize);
  pthread_mutex_destroy(&m->qlock);
  pthread_cond_destroy(&m->committer_cv);
  free(m->dir);
  free(m);
}

/* LMDB reads pages through the map and trusts the meta page: a data file
 * cut short (a copy that stopped half-way, a truncated restore) would fault
 * with SIGBUS at the first read past its end. Every page up to the last
 * committed one was synced before the meta page that names it, so a shorter
 * file is damage: refused, never read. */
int es__lmdb_check_size(MDB_env *env, const char *dir, es_err_t *err) {
  MDB_envinfo info;
  MDB_stat st;
  mdb_filehandle_t fd;
  struct stat fst;
  int mrc;
  if ((mrc = mdb_env_info(env, &info)) || (mrc = mdb_env_stat(env, &st)) ||
      (mrc = mdb_env_get_fd(env, &fd)))
    return es_err_set(err, ES_EUNAVAIL, "data directory '%s': lmdb: %s", dir, mdb_strerror(mrc));
  if (fstat(fd, &fst) != 0)
    return es_err_set(err, ES_EUNAVAIL, "data directory '%s': data.mdb: %s", dir, strerror(errno));
  uint64_t needed = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
  if ((uint64_t)fst.st_size < needed)
    return es_err_set(err, ES_EINTERNAL,
                      "data directory '%s': data.mdb is truncated: %llu bytes, its last "
                      "committed page ends at %llu",
                      dir, (unsigned long long)fst.st_size, (unsigned long long)needed);
  return ES_OK;
}

int es__lmdb_make_dirs(const char *dir) {
  char path[4096];
  size_t len = strlen(dir);
  if (len == 0 || len >= sizeof path) return ENAMETOOLONG;
  memcpy(path, dir, len + 1);
  for (char *p = path + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(path, 0700) != 0 && errno != EEXIST) return errno;
    *p = '/';
  }
  if (mkdir(path, 0700) != 0 && errno != EEXIST) return errno;
  return 0;
}

/* Format 4 differs from 5 only in the stream index: a sorted duplicate list
 * per stream in `index` (number -> version, position; both big-endian).
 * Rebuilds it as `versions` in txn, list by list, checking that each list
 * holds versions 1, 2, ... in order, and drops `index`. 0 or an LMDB error. */
static int convert_format_4(es_lmdb_t *m, MDB_txn *txn) {
  MDB_dbi old;
  MDB_cursor *cur;
  int rc = mdb_dbi_open(txn, "index", MDB_INTEGERKEY | MDB_DUPSORT | MDB_DUPFIXED, &old);
  if (rc == MDB_NOTFOUND) return 0; /* no stream was ever written */
  if (rc || (rc = mdb_cursor_open(txn, old, &cur))) return rc;
  MDB_val k, v;
  size_t number = 0;
  uint64_t expect = 1;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != sizeof number || v.mv_size != INDEX_ENTRY) {
      rc = MDB_CORRUPTED;
      break;
    }
    size_t key = (size_t)get_u64(k.mv_data);
    if (key != number) { /* the next stream's list */
      number = key;
      expect = 1;
    }
    if (get_be64(v.mv_data) != expect) {
      rc = MDB_CORRUPTED;
      break;
    }
    rc = versions_add(m, txn, number, expect, get_be64((const uint8_t *)v.mv_data + 8), 1);
    if (rc) break;
    expect++;
  }
  mdb_cursor_close(cur);
  if (rc != MDB_NOTFOUND) return rc;
  return mdb_drop(txn, old, 1);
}

/* The store's format (lmdb_internal.h, and the stream index) is named by the
 * `format` table. A new or empty store gets the current one (it holds
 * nothing to misread). Format 4 is converted (convert_format_4) in the
 * transaction that opens the store, so a crash meanwhile leaves it in
 * format 4. A store with events is refused rather than misread when its
 * format is another (2: stream id and event type in every record; 3: no
 * tags, and no `tags` table to read by query), or when it has no `format`
 * table (written before formats were named: fixed-width headers). */
static int check_format(es_lmdb_t *m, MDB_txn *txn, es_err_t *err) {
  MDB_dbi fmt;
  int mrc = mdb_dbi_open(txn, "format", MDB_CREATE, &fmt);
  MDB_val k = {7, "records"}, v;
  uint32_t mine = RECORD_FORMAT;
  if (mrc == 0) mrc = mdb_get(txn, fmt, &k, &v);
  if ((mrc == MDB_NOTFOUND || mrc == 0) && m->head == 0) {
    v.mv_size = sizeof mine;
    v.mv_data = &mine;
    mrc = mdb_put(txn, fmt, &k, &v, 0);
    if (mrc == 0) return ES_OK;
  }
  if (mrc == MDB_NOTFOUND)
    return es_err_set(err, ES_EINTERNAL,
                      "data directory '%s': its events are in an earlier record format of the "
                      "lmdb backend (from before formats were named), which this version "
                      "(format %d) does not read",
                      m->dir, RECORD_FORMAT);
  if (mrc)
    return es_err_set(err, ES_EUNAVAIL, "data directory '%s': lmdb: %s", m->dir, mdb_strerror(mrc));
  uint32_t theirs = 0;
  if (v.mv_size == sizeof theirs) memcpy(&theirs, v.mv_data, sizeof theirs);
  if (theirs == 4) {
    mrc = convert_format_4(m, txn);
    if (mrc == 0) {
      v.mv_size = sizeof mine;
      v.mv_data = &mine;
      mrc = mdb_put(txn, fmt, &k, &v, 0);
    }
    if (mrc)
      return es_err_set(err, mrc == MDB_CORRUPTED ? ES_EINTERNAL : ES_EUNAVAIL,
                        "data directory '%s': converting its stream index from record format 4 "
                        "to %d: lmdb: %s",
                        m->dir, RECORD_FORMAT, mdb_strerror(mrc));
    return ES_OK;
  }
  if (theirs != RECORD_FORMAT)
    return es_err_set(err, ES_EINTERNAL,
                      "data directory '%s': its events are in record format %u of the lmdb "
                      "backend, and this version reads format %d only (and converts format 4)",
                      m->dir, (unsigned)theirs, RECORD_FORMAT);
  return ES_OK;
}

void es_lmdb_options_default(es_lmdb_options_t *opts) {
  opts->map_size = DEFAULT_MAP_SIZE;
  opts->max_readers = DEFAULT_MAX_READERS;
}

void es_lmdb_set_commit_hook(es_backend_t *b, int (*hook)(void *ctx), void *ctx) {
  if (!b || b->methods != &lmdb_methods) return;
  es_lmdb_t *m = (es_lmdb_t *)b;
  m->commit_hook = hook;
  m->commit_hook_ctx = ctx;
}

int es_lmdb_open(const char *dir, const es_lmdb_options_t *opts, es_backend_t **out,
                 es_err_t *err) {
  es_lmdb_options_t defaults;
  if (!opts) {
    es_lmdb_options_default(&defaults);
    opts = &defaults;
  }
  *out = NULL;
  int rc = ES_OK, mrc;
  MDB_txn *txn = NULL;
  es_lmdb_t *m = calloc(1, sizeof *m);
  if (!m || !(m->dir = strdup(dir))) {
    free(m);
    return es_err_set(err, ES_ENOMEM, "out of memory opening the lmdb backend");
  }
  m->base.methods = &lmdb_methods;
  m->lock_fd = -1;
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  /* A resize is rare and short; preferring it keeps readers from starving
   * the commit. */
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&m->resize, &attr);
  pthread_rwlockattr_destroy(&attr);
  pthread_mutex_init(&m->qlock, NULL);
  pthread_cond_init(&m->committer_cv, NULL);

  int e = es__lmdb_make_dirs(dir);
  if (e) {
    rc =
        es_err_set(err, ES_EUNAVAIL, "data directory '%s': cannot create it: %s", dir, strerror(e));
    goto fail;
  }
  char lock_path[4200];
  snprintf(lock_path, sizeof lock_path, "%s/lock", dir);
  m->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (m->lock_fd < 0) {
    /* The directory is named once: with a long path twice, the cause
     * would not fit in the message. */
    rc = es_err_set(err, ES_EUNAVAIL, "data directory '%s': cannot open its lock file: %s", dir,
                    strerror(errno));
    goto fail;
  }
  if (flock(m->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    rc = errno == EWOULDBLOCK
             ? es_err_set(err, ES_EUNAVAIL,
                          "data directory '%s' is in use by another store (its lock file is "
                          "held): one server per data directory",
                          dir)
             : es_err_set(err, ES_EUNAVAIL, "data directory '%s': cannot lock its lock file: %s",
                          dir, strerror(errno));
    goto fail;
  }

  if ((mrc = mdb_env_create(&m->env))) goto lmdb_fail;
  m->map_size = opts->map_size ? opts->map_size : DEFAULT_MAP_SIZE;
  if ((mrc = mdb_env_set_mapsize(m->env, (size_t)m->map_size))) goto lmdb_fail;
  if ((mrc = mdb_env_set_maxdbs(m->env, MAX_DBS))) goto lmdb_fail;
  if ((mrc = mdb_env_set_maxreaders(m->env,
                                    opts->max_readers ? opts->max_readers : DEFAULT_MAX_READERS)))
    goto lmdb_fail;
  if ((mrc = mdb_env_open(m->env, dir, MDB_NOTLS, 0600))) goto lmdb_fail;
  MDB_envinfo info;
  mdb_env_info(m->env, &info);
  m->map_size = info.me_mapsize; /* an existing larger file wins */
  atomic_store(&m->st_map_size, m->map_size);
  if ((rc = es__lmdb_check_size(m->env, dir, err))) goto fail;
  {
    MDB_stat mst; /* file_end stays 0: the first group's zero_ahead looks */
    if ((mrc = mdb_env_stat(m->env, &mst))) goto lmdb_fail;
    m->page_size = mst.ms_psize;
  }

  if ((mrc = mdb_txn_begin(m->env, NULL, 0, &txn))) goto lmdb_fail;
  if ((mrc = mdb_dbi_open(txn, "log", MDB_CREATE | MDB_INTEGERKEY, &m->log))) goto lmdb_fail;
  if ((mrc = mdb_dbi_open(txn, "streams", MDB_CREATE, &m->streams))) goto lmdb_fail;
  if ((mrc = mdb_dbi_open(txn, "versions", MDB_CREATE, &m->versions))) goto lmdb_fail;
  if ((mrc = mdb_dbi_open(txn, "ids", MDB_CREATE, &m->ids))) goto lmdb_fail;
  if ((mrc = mdb_dbi_open(txn, "stream_names", MDB_CREATE | MDB_INTEGERKEY, &m->stream_names)))
    goto lmdb_fail;
  if ((mrc = mdb_dbi_open(txn, "types", MDB_CREATE, &m->types))) goto lmdb_fail;
  if ((mrc = mdb_dbi_open(txn, "type_names", MDB_CREATE | MDB_INTEGERKEY, &m->type_names)))
    goto lmdb_fail;
  if ((mrc = mdb_dbi_open(txn, "tags", MDB_CREATE | MDB_DUPSORT | MDB_DUPFIXED, &m->tags)))
    goto lmdb_fail;
  MDB_cursor *cur;
  if ((mrc = mdb_cursor_open(txn, m->log, &cur))) goto lmdb_fail;
  MDB_val k, v;
  mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  mdb_cursor_close(cur);
  if (mrc == 0 && k.mv_size == sizeof(size_t))
    m->head = get_u64(k.mv_data);
  else if (mrc != MDB_NOTFOUND)
    goto lmdb_fail;
  if ((rc = check_format(m, txn, err))) goto fail;
  mrc = mdb_txn_commit(txn);
  txn = NULL;
  if (mrc) goto lmdb_fail;
  atomic_store(&m->published, m->head);
  *out = &m->base;
  return ES_OK;

lmdb_fail:
  if (mrc == 0) mrc = MDB_CORRUPTED; /* a log key that is not a position */
  rc = es_err_set(err, mrc == MDB_INVALID || mrc == MDB_CORRUPTED ? ES_EINTERNAL : ES_EUNAVAIL,
                  "data directory '%s': lmdb: %s", dir, mdb_strerror(mrc));
fail:
  if (txn) mdb_txn_abort(txn);
  lmdb_close(&m->base);
  return rc;
}

static size_t lmdb_stats(es_backend_t *b, es_backend_stat_t *out, size_t max) {
  es_lmdb_t *m = (es_lmdb_t *)b;
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(m->env, &info);
  mdb_env_stat(m->env, &st);
  const es_backend_stat_t all[] = {
      {"lmdb_events", "Events in the store (its head position).", 0, atomic_load(&m->published)},
      {"lmdb_commits_total", "Write transactions committed (each one sync).", 1,
       atomic_load(&m->st_commits)},
      {"lmdb_committed_appends_total", "Appends made durable by those commits.", 1,
       atomic_load(&m->st_appends)},
      {"lmdb_committed_events_total", "Events made durable by those commits.", 1,
       atomic_load(&m->st_events)},
      {"lmdb_commit_group_appends_total",
       "Appends decided in committed groups (incl. duplicates, refusals); / commits = mean group.",
       1, atomic_load(&m->st_grouped)},
      {"lmdb_commit_group_max", "Most appends committed by one transaction.", 0,
       atomic_load(&m->st_group_max)},
      {"lmdb_commit_microseconds_total",
       "Time spent committing (writing and syncing), in microseconds; / commits = mean.", 1,
       atomic_load(&m->st_commit_us)},
      {"lmdb_commit_microseconds_max", "The longest commit (write and sync), in microseconds.", 0,
       atomic_load(&m->st_commit_max_us)},
      {"lmdb_map_bytes", "Size of the memory map (grows by doubling).", 0,
       atomic_load(&m->st_map_size)},
      {"lmdb_map_used_bytes", "Bytes of the map in use (last page written).", 0,
       (uint64_t)(info.me_last_pgno + 1) * st.ms_psize},
      {"lmdb_map_grows_total", "Times the map was doubled.", 1, atomic_load(&m->st_map_grows)},
      {"lmdb_writes_failed", "1 after a failed commit: appends are refused until a restart.", 0,
       (uint64_t)atomic_load(&m->failed)},
      {"lmdb_no_space_total", "Write transactions failed because the disk was full.", 1,
       atomic_load(&m->st_no_space)},
  };
  size_t n = sizeof all / sizeof all[0];
  if (n > max) n = max;
  memcpy(out, all, n * sizeof *out);
  return n;
}

static const es_backend_methods_t lmdb_methods = {
    .name = "lmdb",
    .blocking = 1, /* an append waits for its commit's sync */
    .close = lmdb_close,
    .append = lmdb_append,
    .read_stream = lmdb_read_stream,
    .read_all = lmdb_read_all,
    .head = lmdb_head,
    .stats = lmdb_stats,
    .features = ES_BACKEND_TAGS | ES_BACKEND_QUERY | ES_BACKEND_CONDITION,
    .append_many = lmdb_append_many,
    .append_async = lmdb_append_async,
    .append_many_async = lmdb_append_many_async,
};
