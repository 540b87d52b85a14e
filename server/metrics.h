/*
 * Prometheus metrics: counters kept by the server as it runs, and a tiny
 * HTTP/1.1 endpoint (--metrics-addr) that serves them as text at /metrics.
 *
 * Counting is lock-free: every counter is a relaxed atomic in one static
 * table, bumped once when a call ends (requests, duration histogram), once
 * per committed append, once per backend error. Gauges that describe live
 * state (active subscriptions, their lag, the log's head) are computed when
 * scraped, under the server's call-registry lock — a scrape is rare; calls
 * never wait for it.
 *
 * The endpoint is one thread of its own that serves one connection at a time:
 * it reads at most METRICS_MAX_REQUEST bytes within METRICS_READ_TIMEOUT_MS,
 * answers GET /metrics (404 for other paths, 405 for other methods, 400 for
 * anything malformed) and closes the connection. It has no TLS and no
 * authentication: bind it to loopback or a private network.
 */
#ifndef ES_SERVER_METRICS_H
#define ES_SERVER_METRICS_H

#include <stdint.h>

#include "server_int.h"

/* ---- counting (any thread) ---- */
/* A call ended: method, final status, time since arrival. */
void es_metrics_call_done(method_id_t method, grpc_status_code code, uint64_t duration_ns);
/* An append committed `events` events (duplicate: an idempotent replay, nothing written). */
void es_metrics_append_done(uint64_t events, int duplicate);
/* A subscription sent one message holding `events` events. */
void es_metrics_subscription_sent(uint64_t events);
/* The backend failed with rc (an es_err code). */
void es_metrics_backend_error(int rc);
/* Monotonic nanoseconds, for call durations. */
uint64_t es_metrics_now_ns(void);

/* ---- exposition ---- */
/* The text exposition of every metric (malloc'd, NUL-terminated; the caller
 * frees it), or NULL when out of memory. Reads srv's live-call registry. */
char *es_metrics_render(es_server_t *srv, size_t *len);

typedef struct es_metrics_http es_metrics_http_t;

/* Listens on addr ("host:port", "[v6]:port"; port 0 picks one) and serves
 * /metrics of srv from a thread of its own. srv must outlive the endpoint.
 * Returns 0 with *out and the bound *port, or -1 with a message in errbuf. */
int es_metrics_http_start(const char *addr, es_server_t *srv, es_metrics_http_t **out, int *port,
                          char *errbuf, size_t errlen);
/* Stops the thread (a request being answered is finished first) and frees h. */
void es_metrics_http_stop(es_metrics_http_t *h);

#endif
