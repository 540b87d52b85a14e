/*
 * See metrics.h. The counters are one static table: the process runs one
 * server, and a table of relaxed atomics needs no setup, no teardown and no
 * lock. Label values come from fixed lists (method names, gRPC status names,
 * es_err names), never from the network, so the exposition is bounded.
 *
 * The HTTP side trusts nothing it reads: the request is read into a fixed
 * buffer with one overall deadline (a client dripping one byte at a time gets
 * no more time than one that sends nothing), only the request line is parsed,
 * and headers are ignored except for finding where they end.
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "es/error.h"
#include "es/notifier.h"
#include "es/subscription.h"
#include "log.h"

#define METRICS_MAX_REQUEST 8192
#define METRICS_READ_TIMEOUT_MS 2000
#define METRICS_WRITE_TIMEOUT_MS 2000
#define N_CODES 17 /* gRPC status codes 0..16 */
#define N_METHODS (M_GENERIC + 1)

/* Upper bounds of the duration histogram, in seconds. */
static const double BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define N_BUCKETS (sizeof BUCKETS / sizeof BUCKETS[0])

static const char *const CODE_NAMES[N_CODES] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

/* The codes es_backend_errors_total counts, straight from the error list (so a
 * code added there has its series here without a second edit); slot 0 counts
 * anything else. */
#define ERR_CODE(name, value, text) ES_##name,
static const int ERR_CODES[] = {0, ES_ERRNO_MAP(ERR_CODE)};
#undef ERR_CODE
#define N_ERRS (sizeof ERR_CODES / sizeof ERR_CODES[0])

static struct {
  atomic_ulong requests[N_METHODS][N_CODES];
  atomic_ulong duration_buckets[N_METHODS][N_BUCKETS]; /* not cumulative; summed when rendered */
  atomic_ulong duration_count[N_METHODS];
  atomic_ulong duration_sum_ns[N_METHODS];
  atomic_ulong appends;
  atomic_ulong appends_duplicate;
  atomic_ulong events_appended;
  atomic_ulong sub_messages;
  atomic_ulong sub_events;
  atomic_ulong backend_errors[N_ERRS];
} M; /* static storage: zero-initialised, which is a valid atomic state */

static void inc(atomic_ulong *a, unsigned long n) {
  atomic_fetch_add_explicit(a, n, memory_order_relaxed);
}
static unsigned long get(atomic_ulong *a) {
  return atomic_load_explicit(a, memory_order_relaxed);
}

uint64_t es_metrics_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

void es_metrics_call_done(method_id_t method, grpc_status_code code, uint64_t duration_ns) {
  int m = (int)method;
  if (m < 0 || m >= N_METHODS) m = M_GENERIC;
  int k = (int)code;
  if (k < 0 || k >= N_CODES) k = GRPC_STATUS_UNKNOWN;
  inc(&M.requests[m][k], 1);
  double secs = (double)duration_ns / 1e9;
  for (size_t b = 0; b < N_BUCKETS; b++)
    if (secs <= BUCKETS[b]) {
      inc(&M.duration_buckets[m][b], 1);
      break;
    }
  inc(&M.duration_count[m], 1);
  inc(&M.duration_sum_ns[m], (unsigned long)duration_ns);
}

void es_metrics_append_done(uint64_t events, int duplicate) {
  if (duplicate) {
    inc(&M.appends_duplicate, 1);
    return;
  }
  inc(&M.appends, 1);
  inc(&M.events_appended, (unsigned long)events);
}

void es_metrics_subscription_sent(uint64_t events) {
  inc(&M.sub_messages, 1);
  inc(&M.sub_events, (unsigned long)events);
}

void es_metrics_backend_error(int rc) {
  size_t slot = 0;
  for (size_t e = 1; e < N_ERRS; e++)
    if (ERR_CODES[e] == rc) slot = e;
  inc(&M.backend_errors[slot], 1);
}

/* ---------------------------------------------------------------- rendering */

typedef struct buf {
  char *data;
  size_t len, cap;
  int oom;
} buf_t;

static void put(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf_t *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = b->cap * 2 + (size_t)n;
    char *d = realloc(b->data, cap);
    if (!d) {
      b->oom = 1;
      return;
    }
    b->data = d;
    b->cap = cap;
  }
}

char *es_metrics_render(es_server_t *srv, size_t *len) {
  buf_t b = {malloc(16384), 0, 16384, 0};
  if (!b.data) return NULL;

  put(&b,
      "# HELP es_rpc_requests_total RPCs that ended, by method and gRPC status.\n"
      "# TYPE es_rpc_requests_total counter\n");
  for (int m = 0; m < N_METHODS; m++)
    for (int k = 0; k < N_CODES; k++) {
      unsigned long v = get(&M.requests[m][k]);
      if (v)
        put(&b, "es_rpc_requests_total{method=\"%s\",code=\"%s\"} %lu\n",
            es__method_name((method_id_t)m), CODE_NAMES[k], v);
    }

  put(&b,
      "# HELP es_rpc_duration_seconds Time from a call's arrival to its end (streams: "
      "their whole life).\n# TYPE es_rpc_duration_seconds histogram\n");
  for (int m = 0; m < N_METHODS; m++) {
    unsigned long count = get(&M.duration_count[m]);
    if (!count) continue;
    const char *name = es__method_name((method_id_t)m);
    unsigned long cum = 0;
    for (size_t i = 0; i < N_BUCKETS; i++) {
      cum += get(&M.duration_buckets[m][i]);
      put(&b, "es_rpc_duration_seconds_bucket{method=\"%s\",le=\"%g\"} %lu\n", name, BUCKETS[i],
          cum);
    }
    /* Read after the buckets, so +Inf is never below the last bucket. */
    if (count < cum) count = cum;
    put(&b, "es_rpc_duration_seconds_bucket{method=\"%s\",le=\"+Inf\"} %lu\n", name, count);
    put(&b, "es_rpc_duration_seconds_sum{method=\"%s\"} %.9f\n", name,
        (double)get(&M.duration_sum_ns[m]) / 1e9);
    put(&b, "es_rpc_duration_seconds_count{method=\"%s\"} %lu\n", name, count);
  }

  put(&b,
      "# HELP es_appends_total Appends that wrote events (idempotent replays not counted).\n"
      "# TYPE es_appends_total counter\nes_appends_total %lu\n"
      "# HELP es_appends_duplicate_total Appends answered as idempotent replays.\n"
      "# TYPE es_appends_duplicate_total counter\nes_appends_duplicate_total %lu\n"
      "# HELP es_events_appended_total Events written by appends.\n"
      "# TYPE es_events_appended_total counter\nes_events_appended_total %lu\n",
      get(&M.appends), get(&M.appends_duplicate), get(&M.events_appended));

  put(&b,
      "# HELP es_backend_errors_total Failures of the storage backend, by error code.\n"
      "# TYPE es_backend_errors_total counter\n");
  /* Every code of the list, zeros included: a series that appears only after
   * its first failure cannot be told apart from one that is not exported. */
  for (size_t e = 0; e < N_ERRS; e++)
    put(&b, "es_backend_errors_total{code=\"%s\"} %lu\n", e ? es_errname(ERR_CODES[e]) : "other",
        get(&M.backend_errors[e]));

  uint64_t head = es_notifier_head(srv->log_notifier);
  unsigned long active = 0;
  uint64_t lag_sum = 0, lag_max = 0;
  pthread_mutex_lock(&srv->mu);
  for (call_t *c = srv->streams; c; c = c->stream_next) {
    if (c->method != M_SUBSCRIBE) continue;
    active++;
    uint64_t pos = atomic_load_explicit(&c->sub_position, memory_order_relaxed);
    if (pos == ES_SUB_POSITION_UNKNOWN || pos >= head) continue;
    lag_sum += head - pos;
    if (head - pos > lag_max) lag_max = head - pos;
  }
  pthread_mutex_unlock(&srv->mu);
  put(&b,
      "# HELP es_subscriptions_active Subscribe calls in progress.\n"
      "# TYPE es_subscriptions_active gauge\nes_subscriptions_active %lu\n"
      "# HELP es_subscription_lag_events Sum over active subscriptions of head - position.\n"
      "# TYPE es_subscription_lag_events gauge\nes_subscription_lag_events %llu\n"
      "# HELP es_subscription_lag_events_max Largest head - position of an active "
      "subscription.\n"
      "# TYPE es_subscription_lag_events_max gauge\nes_subscription_lag_events_max %llu\n"
      "# HELP es_log_head_position Global position of the last event in the log.\n"
      "# TYPE es_log_head_position gauge\nes_log_head_position %llu\n",
      active, (unsigned long long)lag_sum, (unsigned long long)lag_max, (unsigned long long)head);

  es_tail_stats_t ts;
  es_tail_stats(srv->tail, &ts);
  put(&b,
      "# HELP es_subscription_messages_total Event messages sent to subscribers (an event, or a "
      "batch of them).\n"
      "# TYPE es_subscription_messages_total counter\nes_subscription_messages_total %lu\n"
      "# HELP es_subscription_events_total Events sent to subscribers.\n"
      "# TYPE es_subscription_events_total counter\nes_subscription_events_total %lu\n"
      "# HELP es_live_window_events Events the live window holds, encoded.\n"
      "# TYPE es_live_window_events gauge\nes_live_window_events %zu\n"
      "# HELP es_live_window_bytes Bytes of encoded events the live window holds.\n"
      "# TYPE es_live_window_bytes gauge\nes_live_window_bytes %zu\n"
      "# HELP es_live_window_first_position Oldest position the live window holds (0: none).\n"
      "# TYPE es_live_window_first_position gauge\nes_live_window_first_position %llu\n"
      "# HELP es_live_window_events_read_total Events the live window read from the backend "
      "(once per server, for every subscriber).\n"
      "# TYPE es_live_window_events_read_total counter\nes_live_window_events_read_total %llu\n"
      "# HELP es_live_window_read_errors_total Failed backend reads of the live window (it "
      "retries).\n"
      "# TYPE es_live_window_read_errors_total counter\nes_live_window_read_errors_total %llu\n"
      "# HELP es_subscription_pages_total Pages subscriptions read, by source: the live window "
      "(memory) or the backend.\n"
      "# TYPE es_subscription_pages_total counter\n"
      "es_subscription_pages_total{source=\"window\"} %llu\n"
      "es_subscription_pages_total{source=\"backend\"} %llu\n",
      get(&M.sub_messages), get(&M.sub_events), ts.events, ts.bytes,
      (unsigned long long)(ts.events ? ts.first : 0), (unsigned long long)ts.filled_events,
      (unsigned long long)ts.fill_errors, (unsigned long long)ts.pages_window,
      (unsigned long long)ts.pages_backend);

  es_backend_stat_t stats[32];
  size_t n_stats = es_backend_stats(srv->backend, stats, sizeof stats / sizeof stats[0]);
  for (size_t i = 0; i < n_stats; i++)
    put(&b, "# HELP es_backend_%s %s\n# TYPE es_backend_%s %s\nes_backend_%s %llu\n", stats[i].name,
        stats[i].help, stats[i].name, stats[i].counter ? "counter" : "gauge", stats[i].name,
        (unsigned long long)stats[i].value);

  if (b.oom) {
    free(b.data);
    return NULL;
  }
  *len = b.len;
  return b.data;
}

/* ---------------------------------------------------------------- HTTP */

struct es_metrics_http {
  es_server_t *srv;
  int listen_fd;
  int wake[2]; /* a byte on wake[1] stops the thread */
  pthread_t thread;
};

static int64_t ms_left(uint64_t deadline_ns) {
  uint64_t now = es_metrics_now_ns();
  return now >= deadline_ns ? 0 : (int64_t)((deadline_ns - now) / 1000000u) + 1;
}

static void send_all(int fd, const char *p, size_t n) {
  uint64_t deadline = es_metrics_now_ns() + (uint64_t)METRICS_WRITE_TIMEOUT_MS * 1000000u;
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int64_t left = ms_left(deadline);
      struct pollfd pfd = {fd, POLLOUT, 0};
      if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) return;
      continue;
    }
    return;
  }
}

static void respond(int fd, int status, const char *reason, const char *ctype, const char *body,
                    size_t body_len, int head_only) {
  char hdr[256];
  int n = snprintf(hdr, sizeof hdr,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n%s\r\n",
                   status, reason, ctype, body_len, status == 405 ? "Allow: GET\r\n" : "");
  send_all(fd, hdr, (size_t)n);
  if (!head_only) send_all(fd, body, body_len);
}

static void text(int fd, int status, const char *reason) {
  char body[64];
  int n = snprintf(body, sizeof body, "%d %s\n", status, reason);
  respond(fd, status, reason, "text/plain; charset=utf-8", body, (size_t)n, 0);
}

/* Reads one request head and answers it. */
static void serve_connection(es_metrics_http_t *h, int fd) {
  char req[METRICS_MAX_REQUEST + 1];
  size_t len = 0;
  uint64_t deadline = es_metrics_now_ns() + (uint64_t)METRICS_READ_TIMEOUT_MS * 1000000u;
  for (;;) {
    int64_t left = ms_left(deadline);
    struct pollfd pfd = {fd, POLLIN, 0};
    if (left <= 0 || poll(&pfd, 1, (int)left) <= 0) return; /* too slow: just close */
    ssize_t r = recv(fd, req + len, METRICS_MAX_REQUEST - len, MSG_DONTWAIT);
    if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (r <= 0) return;
    len += (size_t)r;
    req[len] = '\0';
    if (memchr(req, '\0', len)) {
      text(fd, 400, "Bad Request");
      return;
    }
    if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n")) break;
    if (len == METRICS_MAX_REQUEST) {
      text(fd, 431, "Request Header Fields Too Large");
      return;
    }
  }
  /* Request line: METHOD SP TARGET SP HTTP/1.x */
  char *eol = strpbrk(req, "\r\n");
  *eol = '\0';
  char *sp1 = strchr(req, ' ');
  char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
    text(fd, 400, "Bad Request");
    return;
  }
  *sp1 = '\0';
  *sp2 = '\0';
  const char *method = req, *target = sp1 + 1;
  size_t path_len = strcspn(target, "?");
  if (path_len != 8 || strncmp(target, "/metrics", 8) != 0) {
    text(fd, 404, "Not Found");
    return;
  }
  int head_only = strcmp(method, "HEAD") == 0;
  if (strcmp(method, "GET") != 0 && !head_only) {
    text(fd, 405, "Method Not Allowed");
    return;
  }
  size_t body_len = 0;
  char *body = es_metrics_render(h->srv, &body_len);
  if (!body) {
    text(fd, 500, "Internal Server Error");
    return;
  }
  respond(fd, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, body_len, head_only);
  free(body);
}

static void *http_main(void *arg) {
  es_metrics_http_t *h = arg;
  for (;;) {
    struct pollfd pfds[2] = {{h->listen_fd, POLLIN, 0}, {h->wake[0], POLLIN, 0}};
    if (poll(pfds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      es_log(ES_LOG_ERROR, "metrics endpoint: poll: %s", strerror(errno));
      return NULL;
    }
    if (pfds[1].revents) return NULL;
    if (!(pfds[0].revents & POLLIN)) continue;
    /* NULL address arguments are allowed by accept4(2): the peer is not needed. */
    // cppcheck-suppress nullPointer
    int fd = accept4(h->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) continue; /* EAGAIN, ECONNABORTED, EMFILE: try again later */
    serve_connection(h, fd);
    /* Discard anything unread so close() sends FIN rather than RST. */
    shutdown(fd, SHUT_WR);
    close(fd);
  }
}

static int listen_on(const char *addr, int *port, char *errbuf, size_t errlen) {
  char host[256];
  const char *colon = strrchr(addr, ':');
  if (!colon || colon == addr || !colon[1]) {
    snprintf(errbuf, errlen, "--metrics-addr %s: expected HOST:PORT", addr);
    return -1;
  }
  size_t hlen = (size_t)(colon - addr);
  const char *hstart = addr;
  if (addr[0] == '[' && colon[-1] == ']') {
    hstart++;
    hlen -= 2;
  }
  if (hlen >= sizeof host) {
    snprintf(errbuf, errlen, "--metrics-addr %s: host too long", addr);
    return -1;
  }
  memcpy(host, hstart, hlen);
  host[hlen] = '\0';
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int gai = getaddrinfo(hlen ? host : NULL, colon + 1, &hints, &res);
  if (gai != 0) {
    snprintf(errbuf, errlen, "--metrics-addr %s: %s", addr, gai_strerror(gai));
    return -1;
  }
  int fd = -1, saved = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      saved = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0) break;
    saved = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    snprintf(errbuf, errlen, "--metrics-addr %s: cannot listen: %s", addr, strerror(saved));
    return -1;
  }
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
    snprintf(errbuf, errlen, "--metrics-addr %s: getsockname: %s", addr, strerror(errno));
    close(fd);
    return -1;
  }
  *port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                   : ntohs(((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

int es_metrics_http_start(const char *addr, es_server_t *srv, es_metrics_http_t **out, int *port,
                          char *errbuf, size_t errlen) {
  es_metrics_http_t *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(errbuf, errlen, "out of memory");
    return -1;
  }
  h->srv = srv;
  h->wake[0] = h->wake[1] = -1;
  h->listen_fd = listen_on(addr, port, errbuf, errlen);
  if (h->listen_fd < 0) goto fail;
  if (pipe2(h->wake, O_CLOEXEC) != 0) {
    snprintf(errbuf, errlen, "metrics endpoint: pipe: %s", strerror(errno));
    goto fail;
  }
  if (pthread_create(&h->thread, NULL, http_main, h) != 0) {
    snprintf(errbuf, errlen, "metrics endpoint: cannot start its thread");
    goto fail;
  }
  *out = h;
  return 0;

fail:
  if (h->listen_fd >= 0) close(h->listen_fd);
  if (h->wake[0] >= 0) close(h->wake[0]);
  if (h->wake[1] >= 0) close(h->wake[1]);
  free(h);
  return -1;
}

void es_metrics_http_stop(es_metrics_http_t *h) {
  if (!h) return;
  char one = 1;
  while (write(h->wake[1], &one, 1) < 0 && errno == EINTR) {
  }
  pthread_join(h->thread, NULL);
  close(h->listen_fd);
  close(h->wake[0]);
  close(h->wake[1]);
  free(h);
}
