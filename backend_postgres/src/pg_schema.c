/*
 * The schema of the PostgreSQL backend and its migrations (docs/postgres.md
 * explains every table and index).
 *
 * Migrations are numbered and append-only: a released migration is never
 * edited, a change is a new entry in MIGRATIONS. Each one runs in its own
 * transaction together with the row that records it in es_schema_migrations,
 * so a migration is either applied and recorded or neither.
 *
 * Several servers may start at once against one database. All of them take
 * the same session-level advisory lock (keyed by the schema name) before
 * looking at es_schema_migrations, so exactly one creates or migrates the
 * schema and the others then find it current. The lock is released at the
 * end, or by PostgreSQL when the connection dies.
 *
 * A database whose recorded version is newer than this build knows is
 * refused: an older server must not write a layout it does not understand.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg_internal.h"

/* "es" in ASCII: the first half of the advisory lock key; the second is
 * hashtext(schema). */
#define ADVISORY_NAMESPACE 0x6573

typedef struct migration {
  int version;
  const char *name;
  const char *sql; /* "{S}" stands for the quoted schema */
} migration_t;

/* SQL reads better laid out by hand: */
/* clang-format off */
static const migration_t MIGRATIONS[] = {
    {1, "log head, streams, events",
     /* The global lock and counter: one row. */
     "CREATE TABLE {S}.es_log_head ("
     "  id smallint PRIMARY KEY CHECK (id = 1),"
     "  head bigint NOT NULL CHECK (head >= 0));"
     "INSERT INTO {S}.es_log_head (id, head) VALUES (1, 0);"
     /* One row per stream that has events. */
     "CREATE TABLE {S}.es_streams ("
     "  stream_id text COLLATE \"C\" PRIMARY KEY,"
     "  stream_type text COLLATE \"C\" NOT NULL,"
     "  last_version bigint NOT NULL CHECK (last_version > 0));"
     /* The log. Fixed-width columns first (no alignment padding), the
      * payload last. */
     "CREATE TABLE {S}.es_events ("
     "  position bigint NOT NULL CHECK (position > 0),"
     "  stream_version bigint NOT NULL CHECK (stream_version > 0),"
     "  event_version bigint NOT NULL,"
     "  occurred_at_unix_ms bigint NOT NULL,"
     "  recorded_at_unix_ms bigint NOT NULL,"
     "  batch_index integer NOT NULL,"
     "  batch_size integer NOT NULL,"
     "  body_bytes integer NOT NULL,"
     "  event_id uuid NOT NULL,"
     "  stream_id text COLLATE \"C\" NOT NULL,"
     "  event_type text COLLATE \"C\" NOT NULL,"
     "  content_type text NOT NULL,"
     "  correlation_id text NOT NULL,"
     "  causation_id text NOT NULL,"
     "  metadata_keys text[] NOT NULL,"
     "  metadata_values text[] NOT NULL,"
     "  payload bytea NOT NULL,"
     "  CONSTRAINT es_events_pkey PRIMARY KEY (position),"
     "  CONSTRAINT es_events_stream_version_key UNIQUE (stream_id, stream_version),"
     "  CONSTRAINT es_events_event_id_key UNIQUE (event_id));"},
    /* Which attempt of a group commit stored an event: after a connection
     * lost during COMMIT, the committer looks for its own token, so that an
     * append committed by a concurrent retry of the same request (same ids)
     * is never taken for this attempt's, and this attempt's own commit is
     * never called a duplicate. NULL for events stored before version 2.
     * Adding a nullable column without a default rewrites nothing. */
    {2, "commit tokens",
     "ALTER TABLE {S}.es_events ADD COLUMN commit_token bigint;"},
    /* Extension 1: an event's tags, in the order given, on its row (reads
     * return them with the event), and the tag index: one row per (tag,
     * position), written by the statement that writes the events. A query
     * item's tag finds its positions there in order (the primary key), so
     * reading a tag's events and checking a condition cost what the tag's
     * events cost, not what the log does. A constant default adds the
     * column without rewriting the table. */
    {3, "tags and the tag index",
     "ALTER TABLE {S}.es_events ADD COLUMN tags text[] NOT NULL DEFAULT '{}';"
     "CREATE TABLE {S}.es_tags ("
     "  tag text COLLATE \"C\" NOT NULL,"
     "  position bigint NOT NULL CHECK (position > 0),"
     "  CONSTRAINT es_tags_pkey PRIMARY KEY (tag, position));"},
    /* Extension 1: which batches belong to one AppendMany. Bit 1: another
     * append of the same request came right before this event's (on the
     * first event of a batch), bit 2: right after it (on the last). A retry
     * is a duplicate only of a whole request (es_stored_event_t.joined_prev,
     * joined_next), also after a restart. */
    {4, "AppendMany links",
     "ALTER TABLE {S}.es_events ADD COLUMN joined smallint NOT NULL DEFAULT 0 "
     "CHECK (joined BETWEEN 0 AND 3);"},
};

/* clang-format on */

#define N_MIGRATIONS (sizeof MIGRATIONS / sizeof MIGRATIONS[0])

_Static_assert(N_MIGRATIONS == ES_PG_SCHEMA_VERSION, "one migration per schema version");

/* Runs sql (no parameters, text results) and expects `want`. */
static int exec_simple(PGconn *c, const char *sql, ExecStatusType want, const char *what,
                       es_err_t *err) {
  PGresult *res = PQexec(c, sql);
  int rc = ES_OK;
  if (PQresultStatus(res) != want) rc = es__pg_error(c, res, what, err);
  PQclear(res);
  return rc;
}

static int exec_params(PGconn *c, const char *sql, int n, const char *const *vals,
                       ExecStatusType want, PGresult **out, const char *what, es_err_t *err) {
  PGresult *res = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
  if (PQresultStatus(res) != want) {
    int rc = es__pg_error(c, res, what, err);
    PQclear(res);
    return rc;
  }
  if (out)
    *out = res;
  else
    PQclear(res);
  return ES_OK;
}

static int apply(es_pg_t *pg, PGconn *c, const migration_t *m, es_err_t *err) {
  char *sql = es__pg_subst(m->sql, pg->sql.quoted_schema);
  char *record =
      es__pg_subst("INSERT INTO {S}.es_schema_migrations (version, name) VALUES ($1, $2)",
                   pg->sql.quoted_schema);
  char version[16], what[96];
  int rc = ES_OK;
  snprintf(version, sizeof version, "%d", m->version);
  snprintf(what, sizeof what, "migration %d (%s)", m->version, m->name);
  if (!sql || !record) {
    rc = es_err_set(err, ES_ENOMEM, "out of memory migrating");
    goto done;
  }
  if ((rc = exec_simple(c, "BEGIN", PGRES_COMMAND_OK, what, err))) goto done;
  if ((rc = exec_simple(c, sql, PGRES_COMMAND_OK, what, err))) goto rollback;
  const char *vals[2] = {version, m->name};
  if ((rc = exec_params(c, record, 2, vals, PGRES_COMMAND_OK, NULL, what, err))) goto rollback;
  if ((rc = exec_simple(c, "COMMIT", PGRES_COMMAND_OK, what, err))) goto done;
  goto done;

rollback:
  PQclear(PQexec(c, "ROLLBACK"));
done:
  free(sql);
  free(record);
  return rc;
}

int es__pg_migrate(es_pg_t *pg, PGconn *c, es_err_t *err) {
  const char *schema_val[1] = {pg->schema};
  char ns[16];
  snprintf(ns, sizeof ns, "%d", ADVISORY_NAMESPACE);
  const char *lock_vals[2] = {ns, pg->schema};
  char *create_table = es__pg_subst(
      "CREATE TABLE IF NOT EXISTS {S}.es_schema_migrations ("
      "  version integer PRIMARY KEY,"
      "  name text NOT NULL,"
      "  applied_at timestamptz NOT NULL DEFAULT now())",
      pg->sql.quoted_schema);
  char *current_sql = es__pg_subst("SELECT coalesce(max(version), 0) FROM {S}.es_schema_migrations",
                                   pg->sql.quoted_schema);
  char *create_schema = es__pg_subst("CREATE SCHEMA {S}", pg->sql.quoted_schema);
  PGresult *res = NULL;
  bool locked = false;
  int rc = ES_OK;
  if (!create_table || !current_sql || !create_schema) {
    rc = es_err_set(err, ES_ENOMEM, "out of memory migrating");
    goto done;
  }

  rc = exec_params(c, "SELECT pg_advisory_lock($1::int4, hashtext($2))", 2, lock_vals,
                   PGRES_TUPLES_OK, NULL, "taking the migration lock", err);
  if (rc) goto done;
  locked = true;

  /* CREATE SCHEMA IF NOT EXISTS would still need the CREATE privilege on the
   * database; a user who may only use an existing schema must get by. */
  rc = exec_params(c, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, schema_val,
                   PGRES_TUPLES_OK, &res, "looking up the schema", err);
  if (rc) goto done;
  bool have_schema = PQntuples(res) > 0;
  PQclear(res);
  res = NULL;
  if (!have_schema &&
      (rc = exec_simple(c, create_schema, PGRES_COMMAND_OK, "creating the schema", err)))
    goto done;
  if ((rc = exec_simple(c, create_table, PGRES_COMMAND_OK, "creating es_schema_migrations", err)))
    goto done;
  rc = exec_params(c, current_sql, 0, NULL, PGRES_TUPLES_OK, &res, "reading the schema version",
                   err);
  if (rc) goto done;
  int current = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
  PQclear(res);
  res = NULL;
  if (current > ES_PG_SCHEMA_VERSION) {
    rc = es_err_set(err, ES_EINVAL,
                    "schema \"%s\" is at version %d, newer than this server knows (%d): "
                    "upgrade the server",
                    pg->schema, current, ES_PG_SCHEMA_VERSION);
    goto done;
  }
  for (size_t i = 0; i < N_MIGRATIONS; i++) {
    if (MIGRATIONS[i].version <= current) continue;
    if ((rc = apply(pg, c, &MIGRATIONS[i], err))) goto done;
  }

done:
  if (locked && !es__pg_conn_broken(c)) {
    int keep = rc;
    es_err_t unlock_err;
    if (exec_params(c, "SELECT pg_advisory_unlock($1::int4, hashtext($2))", 2, lock_vals,
                    PGRES_TUPLES_OK, NULL, "releasing the migration lock", &unlock_err) &&
        keep == ES_OK) {
      rc = unlock_err.code;
      if (err) *err = unlock_err;
    }
  }
  PQclear(res);
  free(create_table);
  free(current_sql);
  free(create_schema);
  return rc;
}
