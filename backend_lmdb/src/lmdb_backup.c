/*
 * Online backup of an LMDB store: a compacted copy of one consistent
 * snapshot, made while a server goes on serving the directory.
 *
 * The copy opens the store's environment read-only (MDB_RDONLY) in this
 * process and never takes DIR/lock, the flock that keeps a second server
 * out: a backup is a reader, and LMDB lets readers of other processes work
 * beside the writer. Its one read transaction registers in LMDB's reader
 * table (DIR/lock.mdb), so the server's committer does not reuse the pages
 * of that snapshot while they are copied; the server never waits for it.
 * mdb_env_copyfd2 with MDB_CP_COMPACT walks the snapshot's trees and writes
 * them renumbered, leaving out free pages, so the copy is the smallest file
 * that holds the snapshot.
 *
 * The snapshot is the last transaction committed when the copy began: a
 * prefix 1..N of the log, every Append in it whole (an Append is one
 * transaction). A server started on the copy serves exactly those events.
 *
 * Crash safety of the copy: it is written as OUT/data.mdb.partial, synced,
 * then renamed to OUT/data.mdb and the directory synced, so OUT never holds
 * a data.mdb that is not complete. OUT must be new or empty: a backup never
 * overwrites anything.
 *
 * A backup process killed in the middle leaves its reader slot in
 * lock.mdb; LMDB's mdb_reader_check clears the slots of dead processes, and
 * every backup runs it first, so a killed backup does not keep the server's
 * file growing for long.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "es/backend_lmdb.h"
#include "es/error.h"
#include "lmdb_internal.h"

/* 1 when dir exists and holds anything but . and .., 0 when it is empty,
 * -1 with errno when it cannot be read. */
static int dir_has_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int found = 0;
  struct dirent *e;
  /* readdir_r is deprecated; this stream is ours alone. */
  // cppcheck-suppress readdirCalled
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
      found = 1;
      break;
    }
  }
  closedir(d);
  return found;
}

static int fsync_path(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  int rc = fsync(fd) == 0 ? 0 : errno;
  close(fd);
  return rc;
}

/* Reads the last position of the log of the store in dir (read-only, no
 * lock file) and checks that the log holds exactly positions 1..N. */
static int copy_head(const char *dir, uint64_t *head, es_err_t *err) {
  MDB_env *env = NULL;
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  MDB_dbi log;
  MDB_stat st;
  MDB_val k, v;
  int mrc;
  *head = 0;
  if ((mrc = mdb_env_create(&env))) goto fail;
  if ((mrc = mdb_env_set_maxdbs(env, 4))) goto fail;
  if ((mrc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK, 0600))) goto fail;
  if ((mrc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))) goto fail;
  mrc = mdb_dbi_open(txn, "log", MDB_INTEGERKEY, &log);
  if (mrc == MDB_NOTFOUND) { /* a store that was never opened by a server */
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return ES_OK;
  }
  if (mrc) goto fail;
  if ((mrc = mdb_stat(txn, log, &st))) goto fail;
  if ((mrc = mdb_cursor_open(txn, log, &cur))) goto fail;
  mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  if (mrc == 0 && k.mv_size == sizeof(size_t)) {
    size_t last;
    memcpy(&last, k.mv_data, sizeof last);
    *head = last;
  } else if (mrc != MDB_NOTFOUND) {
    if (mrc == 0) mrc = MDB_CORRUPTED;
    goto fail;
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  if (st.ms_entries != *head)
    return es_err_set(err, ES_EINTERNAL,
                      "the copy in '%s' holds %zu events but its last position is %llu", dir,
                      st.ms_entries, (unsigned long long)*head);
  return ES_OK;

fail:
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  if (env) mdb_env_close(env);
  return es_err_set(err, ES_EINTERNAL, "reading the copy in '%s': lmdb: %s", dir,
                    mdb_strerror(mrc));
}

int es_lmdb_backup(const char *dir, const char *out_dir, es_lmdb_backup_info_t *info,
                   es_err_t *err) {
  char src[4200], part[4200], final[4200];
  struct stat st;
  memset(info, 0, sizeof *info);
  snprintf(src, sizeof src, "%s/data.mdb", dir);
  if (stat(src, &st) != 0)
    return es_err_set(err, ES_ENOTFOUND, "data directory '%s' holds no store (%s: %s)", dir, src,
                      strerror(errno));

  /* OUT: new, or an empty directory. */
  if (stat(out_dir, &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return es_err_set(err, ES_EEXIST, "'%s' exists and is not a directory", out_dir);
    int has = dir_has_entries(out_dir);
    if (has < 0)
      return es_err_set(err, ES_EUNAVAIL, "cannot read '%s': %s", out_dir, strerror(errno));
    if (has)
      return es_err_set(err, ES_EEXIST,
                        "'%s' is not empty: a backup goes into a new or empty directory", out_dir);
  } else {
    int e = es__lmdb_make_dirs(out_dir);
    if (e) return es_err_set(err, ES_EUNAVAIL, "cannot create '%s': %s", out_dir, strerror(e));
  }
  snprintf(part, sizeof part, "%s/data.mdb.partial", out_dir);
  snprintf(final, sizeof final, "%s/data.mdb", out_dir);

  MDB_env *env = NULL;
  int fd = -1, mrc, rc = ES_OK;
  const char *what = "opening the store";
  if ((mrc = mdb_env_create(&env))) goto lmdb_fail;
  if ((mrc = mdb_env_set_maxdbs(env, 4))) goto lmdb_fail;
  /* The server's reader table may hold many slots; a reader needs one. */
  if ((mrc = mdb_env_set_maxreaders(env, 4096))) goto lmdb_fail;
  if ((mrc = mdb_env_open(env, dir, MDB_RDONLY, 0600))) goto lmdb_fail;
  if ((rc = es__lmdb_check_size(env, dir, err))) goto out;
  int dead = 0;
  mdb_reader_check(env, &dead); /* slots of killed readers, e.g. an earlier backup */

  fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    rc = es_err_set(err, ES_EUNAVAIL, "cannot create %s: %s", part, strerror(errno));
    goto out;
  }
  what = "copying";
  for (int attempt = 0;; attempt++) {
    mrc = mdb_env_copyfd2(env, fd, MDB_CP_COMPACT);
    /* The server grew the map after this process mapped it: take the new
     * size and start the copy again. */
    if (mrc != MDB_MAP_RESIZED || attempt == 8) break;
    if ((mrc = mdb_env_set_mapsize(env, 0))) break;
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
      mrc = errno;
      break;
    }
  }
  if (mrc) goto lmdb_fail;
  if (fstat(fd, &st) == 0) info->bytes = (uint64_t)st.st_size;
  if (fsync(fd) != 0 || close(fd) != 0) {
    fd = -1;
    rc = es_err_set(err, ES_EUNAVAIL, "writing %s: %s", part, strerror(errno));
    goto out;
  }
  fd = -1;
  if (rename(part, final) != 0) {
    rc = es_err_set(err, ES_EUNAVAIL, "renaming %s to %s: %s", part, final, strerror(errno));
    goto out;
  }
  int e = fsync_path(out_dir);
  if (e) {
    rc = es_err_set(err, ES_EUNAVAIL, "syncing '%s': %s", out_dir, strerror(e));
    goto out;
  }
  mdb_env_close(env);
  env = NULL;
  return copy_head(out_dir, &info->head, err);

lmdb_fail:
  rc = es_err_set(err,
                  mrc == MDB_INVALID || mrc == MDB_VERSION_MISMATCH ? ES_EINTERNAL : ES_EUNAVAIL,
                  "backup of '%s': %s: %s", dir, what, mdb_strerror(mrc));
out:
  if (fd >= 0) close(fd);
  if (env) mdb_env_close(env);
  unlink(part); /* nothing half-written stays behind */
  return rc;
}
