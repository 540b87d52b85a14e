/*
 * lmdb_bench: the LMDB backend alone, without gRPC - what its commits, its
 * reads and its file cost, apart from the server's own costs.
 *
 * In a fresh data directory (removed afterwards unless --keep):
 *   1. single-event appends, one commit per call, for --seconds at each of
 *      --threads (default 1 and 64 threads, each its own stream): appends/s
 *      and the groups the commits formed;
 *   2. a fill of --events events of --payload bytes in appends of --batch
 *      events over --streams streams (16 threads): events/s;
 *   3. the file: bytes of data.mdb per event;
 *   4. a reopen: time from es_lmdb_open to the first page read and the first
 *      append committed;
 *   5. ReadAll of the whole log in pages of 1,000: events/s.
 *
 * It measures the disk too: the same run prints how many fdatasync calls a
 * second a file in that directory completes (4 KiB rewritten in place, the
 * best case), the reference for a commit's two syncs.
 *
 *   bazel run -c opt //bench:lmdb_bench -- --dir /tmp/x --events 1000000
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "es/backend.h"
#include "es/backend_lmdb.h"
#include "es/validate.h"

typedef struct opts {
  const char *dir;
  uint64_t events;
  size_t payload, batch, streams;
  double seconds;
  bool keep;
} opts_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const es_err_t *err) {
  fprintf(stderr, "lmdb_bench: %s: %s\n", what, err ? err->msg : "");
  exit(1);
}

static uint64_t stat_of(es_backend_t *b, const char *name) {
  es_backend_stat_t st[32];
  size_t n = es_backend_stats(b, st, 32);
  for (size_t i = 0; i < n; i++)
    if (strcmp(st[i].name, name) == 0) return st[i].value;
  return 0;
}

/* Appends n events of payload bytes to stream. */
static void append(es_backend_t *b, const char *stream, size_t n, const uint8_t *payload,
                   size_t payload_len) {
  es_limits_t limits;
  es_limits_default(&limits);
  es_event_data_t *evs = calloc(n, sizeof *evs);
  if (!evs) die("out of memory", NULL);
  for (size_t i = 0; i < n; i++) {
    evs[i].event_id = "";
    evs[i].event_type = "BenchEvent";
    evs[i].event_version = 1;
    evs[i].content_type = "application/octet-stream";
    evs[i].payload = payload;
    evs[i].payload_len = payload_len;
    evs[i].correlation_id = "";
    evs[i].causation_id = "";
  }
  es_append_req_t req;
  memset(&req, 0, sizeof req);
  req.stream_id = stream;
  req.stream_type = "Bench";
  req.expected_kind = ES_EXPECT_ANY;
  req.events = evs;
  req.event_count = n;
  es_append_result_t res;
  es_err_t err = {0};
  if (es_append_prepare(&limits, &req, &err) != ES_OK) die("prepare", &err);
  if (es_backend_append(b, &req, &res, &err) != ES_OK) die("append", &err);
  free(evs);
}

typedef struct worker {
  es_backend_t *b;
  const opts_t *o;
  int index;
  size_t batch;
  uint64_t calls; /* to make (fill) or made (timed) */
  double until;   /* timed: stop then; 0 = make `calls` */
  pthread_t thread;
} worker_t;

static void *work(void *arg) {
  worker_t *w = arg;
  uint8_t *payload = malloc(w->o->payload ? w->o->payload : 1);
  memset(payload, 'x', w->o->payload);
  char stream[64];
  if (w->until > 0) {
    snprintf(stream, sizeof stream, "single-%d", w->index);
    uint64_t n = 0;
    while (now_s() < w->until) {
      append(w->b, stream, 1, payload, w->o->payload);
      n++;
    }
    w->calls = n;
  } else {
    for (uint64_t i = 0; i < w->calls; i++) {
      snprintf(stream, sizeof stream, "fill-%" PRIu64,
               ((uint64_t)w->index + i * 16) % (uint64_t)w->o->streams);
      append(w->b, stream, w->batch, payload, w->o->payload);
    }
  }
  free(payload);
  return NULL;
}

static void run_workers(worker_t *ws, int n) {
  for (int i = 0; i < n; i++) pthread_create(&ws[i].thread, NULL, work, &ws[i]);
  for (int i = 0; i < n; i++) pthread_join(ws[i].thread, NULL);
}

static es_backend_t *open_store(const char *dir) {
  es_backend_t *b = NULL;
  es_err_t err = {0};
  if (es_lmdb_open(dir, NULL, &b, &err) != ES_OK) die("open", &err);
  return b;
}

/* fdatasync calls a second on a file in dir (4 KiB rewritten in place). */
static double fdatasync_rate(const char *dir) {
  char path[4200];
  snprintf(path, sizeof path, "%s/fsync-probe", dir);
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return -1;
  char buf[4096];
  memset(buf, 1, sizeof buf);
  if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf) return -1;
  fdatasync(fd);
  int n = 0;
  double t0 = now_s();
  while (now_s() - t0 < 1.0) {
    if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf || fdatasync(fd) != 0) break;
    n++;
  }
  double rate = n / (now_s() - t0);
  close(fd);
  unlink(path);
  return rate;
}

static int usage(void) {
  fprintf(stderr,
          "usage: lmdb_bench [--dir DIR] [--events N] [--payload BYTES] [--batch N]\n"
          "                  [--streams N] [--seconds S] [--keep]\n");
  return 2;
}

int main(int argc, char **argv) {
  opts_t o = {NULL, 1000000, 256, 100, 1000, 3.0, false};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--keep") == 0) {
      o.keep = true;
      continue;
    }
    if (!v) return usage();
    i++;
    if (strcmp(a, "--dir") == 0)
      o.dir = v;
    else if (strcmp(a, "--events") == 0)
      o.events = strtoull(v, NULL, 10);
    else if (strcmp(a, "--payload") == 0)
      o.payload = strtoull(v, NULL, 10);
    else if (strcmp(a, "--batch") == 0)
      o.batch = strtoull(v, NULL, 10);
    else if (strcmp(a, "--streams") == 0)
      o.streams = strtoull(v, NULL, 10);
    else if (strcmp(a, "--seconds") == 0)
      o.seconds = atof(v);
    else
      return usage();
  }
  if (o.batch == 0 || o.streams == 0) return usage();
  char made[] = "/tmp/lmdb_bench.XXXXXX";
  if (!o.dir) {
    if (!mkdtemp(made)) die("mkdtemp", NULL);
    o.dir = made;
  } else if (mkdir(o.dir, 0700) != 0 && errno != EEXIST) {
    die("cannot create the directory", NULL);
  }
  printf("lmdb_bench: %s; %.0f fdatasync/s on a 4 KiB rewrite in that directory\n", o.dir,
         fdatasync_rate(o.dir));

  es_backend_t *b = open_store(o.dir);
  for (int threads = 1; threads <= 64 && o.seconds > 0; threads *= 64) {
    worker_t ws[64];
    uint64_t c0 = stat_of(b, "lmdb_commits_total");
    double t0 = now_s();
    for (int i = 0; i < threads; i++) ws[i] = (worker_t){b, &o, i, 1, 0, t0 + o.seconds, 0};
    run_workers(ws, threads);
    double secs = now_s() - t0;
    uint64_t calls = 0;
    for (int i = 0; i < threads; i++) calls += ws[i].calls;
    uint64_t commits = stat_of(b, "lmdb_commits_total") - c0;
    printf("single-event appends, %2d threads: %8.0f appends/s, %.1f appends per commit\n", threads,
           calls / secs, commits ? (double)calls / (double)commits : 0.0);
  }

  /* The fill: 16 threads, each its share of the appends. */
  uint64_t calls = (o.events + o.batch - 1) / o.batch;
  worker_t ws[16];
  uint64_t before = 0;
  es_err_t err = {0};
  es_backend_head(b, &before, &err);
  double t0 = now_s();
  for (int i = 0; i < 16; i++)
    ws[i] = (worker_t){b, &o, i, o.batch, calls / 16 + ((uint64_t)i < calls % 16), 0, 0};
  run_workers(ws, 16);
  double fill = now_s() - t0;
  uint64_t head = 0;
  es_backend_head(b, &head, &err);
  printf("fill: %" PRIu64
         " events of %zu bytes in appends of %zu over %zu streams: %.0f events/s\n",
         head - before, o.payload, o.batch, o.streams, (double)(head - before) / fill);
  es_backend_close(b);

  char path[4200];
  struct stat st;
  snprintf(path, sizeof path, "%s/data.mdb", o.dir);
  if (stat(path, &st) == 0)
    printf("data.mdb: %lld bytes for %" PRIu64 " events: %.1f bytes per event\n",
           (long long)st.st_size, head, (double)st.st_size / (double)head);

  /* Reopen: until a page is read and an append is committed. */
  t0 = now_s();
  b = open_store(o.dir);
  double opened = now_s() - t0;
  es_read_all_req_t rq;
  memset(&rq, 0, sizeof rq);
  rq.from_position = head > 10 ? head - 10 : 1;
  rq.max_count = 10;
  rq.direction = ES_FORWARD;
  rq.max_bytes = 4 << 20;
  es_page_t page;
  memset(&page, 0, sizeof page);
  if (es_backend_read_all(b, &rq, &page, &err) != ES_OK) die("read", &err);
  es_page_free(&page);
  double read = now_s() - t0;
  uint8_t one = 'x';
  append(b, "after-reopen", 1, &one, 1);
  double appended = now_s() - t0;
  printf("reopen: open %.1f ms, first read %.1f ms, first append %.1f ms\n", opened * 1e3,
         read * 1e3, appended * 1e3);

  /* ReadAll of everything, pages of 1,000. */
  uint64_t seen = 0, from = 1;
  t0 = now_s();
  for (;;) {
    memset(&rq, 0, sizeof rq);
    rq.from_position = from;
    rq.max_count = 1000;
    rq.direction = ES_FORWARD;
    rq.max_bytes = 4 << 20;
    if (es_backend_read_all(b, &rq, &page, &err) != ES_OK) die("read", &err);
    seen += page.count;
    from = page.next;
    bool end = page.is_end;
    es_page_free(&page);
    if (end) break;
  }
  double rs = now_s() - t0;
  printf("ReadAll, pages of 1,000: %" PRIu64 " events in %.2f s: %.0f events/s\n", seen, rs,
         (double)seen / rs);
  es_backend_close(b);
  if (!o.keep) {
    snprintf(path, sizeof path, "rm -rf '%s'", o.dir);
    if (system(path) != 0) fprintf(stderr, "lmdb_bench: could not remove %s\n", o.dir);
  }
  return 0;
}
