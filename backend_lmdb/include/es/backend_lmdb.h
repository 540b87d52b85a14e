/*
 * The durable embedded backend: every semantic of API.md, stored in one data
 * directory with LMDB. An append is acknowledged only after the transaction
 * that holds it is on disk (fdatasync); appends that arrive while a commit is
 * syncing are committed together in the next transaction (group commit).
 *
 * The directory holds data.mdb and lock.mdb (LMDB's) and `lock`, which this
 * backend holds with an exclusive flock for as long as it is open: a second
 * opener, in this process or another, is refused with an error naming the
 * directory.
 *
 * Appends fail with ES_ENOSPACE while the disk is full (nothing of them is
 * stored; reads go on; appends work again once there is space), and with
 * ES_EUNAVAIL for good after a commit whose outcome is unknown (a failed
 * sync), until the store is reopened.
 */
#ifndef ES_BACKEND_LMDB_H
#define ES_BACKEND_LMDB_H

#include <stdint.h>

#include "es/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_lmdb_options {
  /* Initial size of the memory map in bytes. It only reserves address space
   * (the file grows as it is written); when it is full the backend doubles
   * it and retries the commit. An existing larger file wins. */
  uint64_t map_size;
  /* Most concurrent read transactions (LMDB's reader table). */
  unsigned max_readers;
} es_lmdb_options_t;

/* Fills *opts with the defaults: a 1 GiB map, 1024 readers. */
void es_lmdb_options_default(es_lmdb_options_t *opts);

/* Opens (creating when missing, like mkdir -p) the store in directory dir.
 * opts may be NULL (defaults). *out (OUT) is closed with es_backend_close().
 * Errors: ES_EUNAVAIL (the directory cannot be created or opened, or another
 * opener holds it; err names the directory and the cause), ES_ENOMEM,
 * ES_EINTERNAL (the files are not a store of this backend). */
int es_lmdb_open(const char *dir, const es_lmdb_options_t *opts, es_backend_t **out, es_err_t *err);

/* Test hook: when set, called by the committing thread right before each commit
 * with ctx; a non-zero return is treated as a failed commit with that errno
 * value (EIO when it is not positive): the transaction is aborted as if its
 * write or sync had failed. NULL clears it. Call before the backend is
 * shared between threads. */
void es_lmdb_set_commit_hook(es_backend_t *b, int (*hook)(void *ctx), void *ctx);

/* What a backup copied. */
typedef struct es_lmdb_backup_info {
  uint64_t head;  /* the copy holds positions 1..head */
  uint64_t bytes; /* size of the copy's data.mdb */
} es_lmdb_backup_info_t;

/* Online backup: writes a compacted copy of the store in dir to out_dir
 * (created like mkdir -p when missing; an existing out_dir must be an empty
 * directory). Works while a server has dir open: the copy is one read-only
 * snapshot, the last commit before it began, and takes no lock that a
 * server holds. A server started on out_dir serves exactly the events of
 * that snapshot. *info (OUT) says what was copied. Errors: ES_ENOTFOUND (no
 * store in dir), ES_EEXIST (out_dir is not empty or not a directory),
 * ES_EUNAVAIL (reading or writing failed; err names the file and cause),
 * ES_EINTERNAL (dir holds no store of this backend). */
int es_lmdb_backup(const char *dir, const char *out_dir, es_lmdb_backup_info_t *info,
                   es_err_t *err);

#ifdef __cplusplus
}
#endif

#endif /* ES_BACKEND_LMDB_H */
