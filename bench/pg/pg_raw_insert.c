/*
 * pg_raw_insert — the reference for the PostgreSQL Append benchmark.
 *
 * The goal compares the server's Append rate on PostgreSQL with "the
 * same rows inserted straight into PostgreSQL with libpq, one row per
 * transaction, at the same concurrency and durability settings". This tool
 * measures that reference: C threads, each with its own connection, each
 * inserting one event row per transaction (a prepared INSERT in autocommit:
 * one round trip and one commit per row) into a table shaped like the
 * backend's es_events (same columns, same three unique indexes; the position
 * comes from a plain sequence, since a raw insert promises nothing about
 * gaps). synchronous_commit is on in every session.
 *
 * With --mode backend it measures the backend instead, without gRPC: the
 * same threads call es_backend_append() of the PostgreSQL backend (one event,
 * a fresh stream, EXPECTED_ANY, as the Append benchmark does). The gap
 * between this and the server's Append rate is what gRPC and the worker pool
 * cost; the gap between this and the raw rate is what the store's guarantees
 * cost (or win, through group commit).
 *
 * Usage: pg_raw_insert --url URL [--mode raw|backend] [--seconds S]
 *                      [--warmup S] [--payload BYTES] [--concurrency 1,16,64]
 * Prints one Markdown table row per concurrency. Exit status 0, or 1 on
 * errors (any failed insert counts).
 */
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "es/backend.h"
#include "es/backend_postgres.h"
#include "es/validate.h"

#define MAX_THREADS 256
#define MAX_SAMPLES (1 << 20)

typedef struct run {
  const char *url;
  int mode_backend;        /* 0: raw libpq inserts, 1: es_backend_append */
  es_backend_t *backend;   /* mode backend */
  size_t payload;          /* bytes per event */
  int threads;             /* concurrency */
  atomic_int phase;        /* 0 warm-up, 1 measuring, 2 stop */
  atomic_uint_fast64_t ok; /* completed while measuring */
  atomic_uint_fast64_t errors;
  uint64_t *lat_ns; /* latencies while measuring (a sample) */
  atomic_uint_fast64_t n_lat;
  atomic_uint_fast64_t next_stream; /* unique stream numbers */
  uint64_t run_id;                  /* start time: streams of an earlier run never collide */
  char first_error[256];
  pthread_mutex_t mu;
} run_t;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void note_error(run_t *r, const char *msg) {
  atomic_fetch_add(&r->errors, 1);
  pthread_mutex_lock(&r->mu);
  if (!r->first_error[0]) snprintf(r->first_error, sizeof r->first_error, "%s", msg);
  pthread_mutex_unlock(&r->mu);
}

static void record(run_t *r, uint64_t t0) {
  if (atomic_load(&r->phase) != 1) return;
  atomic_fetch_add(&r->ok, 1);
  uint64_t i = atomic_fetch_add(&r->n_lat, 1);
  if (i < MAX_SAMPLES) r->lat_ns[i] = now_ns() - t0;
}

static const char RAW_TABLE[] =
    "DROP TABLE IF EXISTS es_raw_events;"
    "CREATE TABLE es_raw_events ("
    "  position bigserial PRIMARY KEY,"
    "  stream_version bigint NOT NULL,"
    "  event_version bigint NOT NULL,"
    "  occurred_at_unix_ms bigint NOT NULL,"
    "  recorded_at_unix_ms bigint NOT NULL,"
    "  batch_index integer NOT NULL,"
    "  batch_size integer NOT NULL,"
    "  body_bytes integer NOT NULL,"
    "  event_id uuid NOT NULL UNIQUE,"
    "  stream_id text COLLATE \"C\" NOT NULL,"
    "  event_type text COLLATE \"C\" NOT NULL,"
    "  content_type text NOT NULL,"
    "  correlation_id text NOT NULL,"
    "  causation_id text NOT NULL,"
    "  metadata_keys text[] NOT NULL,"
    "  metadata_values text[] NOT NULL,"
    "  payload bytea NOT NULL,"
    "  UNIQUE (stream_id, stream_version))";

static const char RAW_INSERT[] =
    "INSERT INTO es_raw_events (stream_version, event_version, occurred_at_unix_ms, "
    "recorded_at_unix_ms, batch_index, batch_size, body_bytes, event_id, stream_id, event_type, "
    "content_type, correlation_id, causation_id, metadata_keys, metadata_values, payload) "
    "VALUES (1, 0, 0, $1, 0, 1, $2, $3, $4, 'Bench', 'application/octet-stream', '', '', "
    "'{}', '{}', $5)";

static void *raw_thread(void *arg) {
  run_t *r = arg;
  PGconn *c = PQconnectdb(r->url);
  if (PQstatus(c) != CONNECTION_OK) {
    note_error(r, PQerrorMessage(c));
    PQfinish(c);
    return NULL;
  }
  PQclear(PQexec(c, "SET synchronous_commit TO on"));
  PGresult *res = PQprepare(c, "ins", RAW_INSERT, 0, NULL);
  if (PQresultStatus(res) != PGRES_COMMAND_OK) note_error(r, PQresultErrorMessage(res));
  PQclear(res);
  char *payload = calloc(1, r->payload + 1);
  while (atomic_load(&r->phase) != 2) {
    uint8_t id[ES_UUID_LEN];
    es_uuid_v7(id);
    char stream[32], recorded[24], body[16];
    snprintf(stream, sizeof stream, "raw-%" PRIuFAST64, atomic_fetch_add(&r->next_stream, 1));
    snprintf(recorded, sizeof recorded, "%" PRIu64, es_now_unix_ms());
    snprintf(body, sizeof body, "%zu", r->payload + 5 + 24);
    const char *vals[5] = {recorded, body, (const char *)id, stream, payload};
    int lens[5] = {0, 0, ES_UUID_LEN, 0, (int)r->payload};
    int fmts[5] = {0, 0, 1, 0, 1};
    uint64_t t0 = now_ns();
    res = PQexecPrepared(c, "ins", 5, vals, lens, fmts, 0);
    if (PQresultStatus(res) == PGRES_COMMAND_OK)
      record(r, t0);
    else
      note_error(r, PQresultErrorMessage(res));
    PQclear(res);
  }
  free(payload);
  PQfinish(c);
  return NULL;
}

static void *backend_thread(void *arg) {
  run_t *r = arg;
  es_limits_t limits;
  es_limits_default(&limits);
  char *payload = calloc(1, r->payload + 1);
  while (atomic_load(&r->phase) != 2) {
    char stream[48];
    snprintf(stream, sizeof stream, "be-%" PRIu64 "-%" PRIuFAST64, r->run_id,
             atomic_fetch_add(&r->next_stream, 1));
    es_event_data_t ev;
    memset(&ev, 0, sizeof ev);
    ev.event_id = "";
    ev.event_type = "Bench";
    ev.content_type = "";
    ev.payload = (const uint8_t *)payload;
    ev.payload_len = r->payload;
    ev.correlation_id = "";
    ev.causation_id = "";
    es_append_req_t req;
    memset(&req, 0, sizeof req);
    req.stream_id = stream;
    req.stream_type = "";
    req.expected_kind = ES_EXPECT_ANY;
    req.events = &ev;
    req.event_count = 1;
    es_err_t err;
    es_append_result_t out;
    uint64_t t0 = now_ns();
    int rc = es_append_prepare(&limits, &req, &err);
    if (rc == ES_OK) rc = es_backend_append(r->backend, &req, &out, &err);
    if (rc == ES_OK)
      record(r, t0);
    else
      note_error(r, err.msg);
  }
  free(payload);
  return NULL;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static int run_one(run_t *r, double warmup, double seconds) {
  pthread_t th[MAX_THREADS];
  atomic_store(&r->phase, 0);
  atomic_store(&r->ok, 0);
  atomic_store(&r->n_lat, 0);
  for (int i = 0; i < r->threads; i++)
    pthread_create(&th[i], NULL, r->mode_backend ? backend_thread : raw_thread, r);
  sleep_s(warmup);
  atomic_store(&r->phase, 1);
  uint64_t t0 = now_ns();
  sleep_s(seconds);
  uint64_t ok = atomic_load(&r->ok);
  uint64_t t1 = now_ns();
  uint64_t n = atomic_load(&r->n_lat);
  atomic_store(&r->phase, 2);
  for (int i = 0; i < r->threads; i++) pthread_join(th[i], NULL);
  if (n > MAX_SAMPLES) n = MAX_SAMPLES;
  qsort(r->lat_ns, n, sizeof *r->lat_ns, cmp_u64);
  double rate = (double)ok / ((double)(t1 - t0) / 1e9);
  printf(
      "| %s | %d | %.0f | %.0f | %.0f | %" PRIuFAST64 " |\n",
      r->mode_backend ? "backend es_backend_append, 1 event" : "raw INSERT, 1 row per transaction",
      r->threads, rate, n ? (double)r->lat_ns[n / 2] / 1e3 : 0.0,
      n ? (double)r->lat_ns[n * 99 / 100] / 1e3 : 0.0, atomic_load(&r->errors));
  fflush(stdout);
  return atomic_load(&r->errors) ? 1 : 0;
}

int main(int argc, char **argv) {
  static run_t r;
  double seconds = 5, warmup = 1;
  const char *conc = "1,16,64";
  r.payload = 256;
  r.run_id = es_now_unix_ms();
  r.url = getenv("DATABASE_URL");
  pthread_mutex_init(&r.mu, NULL);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--url") && v)
      r.url = argv[++i];
    else if (!strcmp(a, "--mode") && v)
      r.mode_backend = !strcmp(argv[++i], "backend");
    else if (!strcmp(a, "--seconds") && v)
      seconds = atof(argv[++i]);
    else if (!strcmp(a, "--warmup") && v)
      warmup = atof(argv[++i]);
    else if (!strcmp(a, "--payload") && v)
      r.payload = (size_t)atol(argv[++i]);
    else if (!strcmp(a, "--concurrency") && v)
      conc = argv[++i];
    else {
      fprintf(stderr,
              "usage: pg_raw_insert --url URL [--mode raw|backend] [--seconds S] [--warmup S]\n"
              "                     [--payload BYTES] [--concurrency 1,16,64]\n");
      return 2;
    }
  }
  if (!r.url) {
    fprintf(stderr, "pg_raw_insert: no --url and no DATABASE_URL\n");
    return 2;
  }
  r.lat_ns = malloc(MAX_SAMPLES * sizeof *r.lat_ns);
  es_err_t err;
  if (r.mode_backend) {
    es_pg_options_t o;
    es_pg_options_default(&o);
    o.schema = "es_bench";
    if (es_pg_open(r.url, &o, &r.backend, &err) != ES_OK) {
      fprintf(stderr, "pg_raw_insert: %s\n", err.msg);
      return 1;
    }
  } else {
    PGconn *c = PQconnectdb(r.url);
    PGresult *res = PQexec(c, RAW_TABLE);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
      fprintf(stderr, "pg_raw_insert: %s%s", PQerrorMessage(c), PQresultErrorMessage(res));
      return 1;
    }
    PQclear(res);
    PQfinish(c);
  }
  printf("| what | in flight | rows/s | p50 µs | p99 µs | errors |\n|---|--:|--:|--:|--:|--:|\n");
  int rc = 0;
  for (const char *p = conc; *p;) {
    r.threads = atoi(p);
    if (r.threads < 1 || r.threads > MAX_THREADS) {
      fprintf(stderr, "pg_raw_insert: concurrency %d out of 1..%d\n", r.threads, MAX_THREADS);
      return 2;
    }
    rc |= run_one(&r, warmup, seconds);
    p = strchr(p, ',');
    if (!p) break;
    p++;
  }
  if (r.first_error[0]) fprintf(stderr, "pg_raw_insert: first error: %s\n", r.first_error);
  if (r.backend) {
    es_pg_stats_t st;
    es_pg_stats(r.backend, &st);
    fprintf(stderr,
            "backend: %" PRIu64 " appends in %" PRIu64 " transactions (largest %" PRIu64 ")\n",
            st.appends, st.groups, st.max_group);
    es_backend_close(r.backend);
  }
  free(r.lat_ns);
  return rc;
}
