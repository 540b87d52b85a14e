/*
 * grpc.health.v1.Health. The C core has no health service, so Check and Watch
 * are two ordinary methods. Known services: "" (the whole server) and
 * "eventstore.v1.EventStore"; both are SERVING until shutdown begins.
 * Watch follows the health notifier, whose head is a version bumped on every
 * change: it sends the current status, parks a waiter, and sends again when
 * the status differs. At shutdown it sends NOT_SERVING and ends with
 * UNAVAILABLE.
 */
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "log.h"
#include "server_int.h"

static int known_service(const char *name) {
  return name[0] == '\0' || strcmp(name, "eventstore.v1.EventStore") == 0;
}

static int current_status(es_server_t *srv, const char *service) {
  if (!known_service(service))
    return GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
  return atomic_load(&srv->serving)
             ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
             : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static grpc_byte_buffer *encode_status(int status) {
  Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
  return es_pack(&r.base);
}

void rpc_health_check(call_t *c) {
  Grpc__Health__V1__HealthCheckRequest *m =
      es_unpack(c, &grpc__health__v1__health_check_request__descriptor, c->payload);
  if (!m) {
    call_finish_unary(c, NULL);
    return;
  }
  grpc_byte_buffer *resp = NULL;
  if (!known_service(m->service)) {
    call_set_status(c, GRPC_STATUS_NOT_FOUND, "unknown service");
  } else {
    resp = encode_status(current_status(c->srv, m->service));
  }
  protobuf_c_message_free_unpacked(&m->base, NULL);
  call_finish_unary(c, resp);
}

static void on_watch_sent(call_t *c, int ok) {
  if (!ok) atomic_store(&c->cancelled, 1);
  rpc_health_watch_pump(c);
}

static void on_watch_wake(es_waiter_t *w) {
  call_schedule((call_t *)w->arg);
}

void rpc_health_watch_pump(call_t *c) {
  es_server_t *srv = c->srv;
  for (;;) {
    if (atomic_load(&c->cancelled)) {
      call_set_status(c, GRPC_STATUS_CANCELLED, "watch cancelled");
      call_finish_stream(c);
      return;
    }
    uint64_t version = atomic_load(&srv->health_version);
    int status = current_status(srv, c->watch_service);
    if (status != c->watch_last_sent) {
      c->watch_last_sent = status;
      call_send(c, encode_status(status), on_watch_sent);
      return;
    }
    if (atomic_load(&srv->shutting_down)) {
      call_set_status(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
      call_finish_stream(c);
      return;
    }
    if (call_park(c, srv->health_notifier, version, on_watch_wake)) continue;
    return;
  }
}

static void on_watch_close(call_t *c, int ok) {
  call_stream_closed(c, ok, c->srv->health_notifier);
}

void rpc_health_watch_start(call_t *c) {
  Grpc__Health__V1__HealthCheckRequest *m =
      es_unpack(c, &grpc__health__v1__health_check_request__descriptor, c->payload);
  if (!m) {
    call_finish_unary(c, NULL);
    return;
  }
  c->watch_service = strdup(m->service);
  protobuf_c_message_free_unpacked(&m->base, NULL);
  if (!c->watch_service) {
    call_set_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    call_finish_unary(c, NULL);
    return;
  }
  call_start_close_watch(c, on_watch_close);
  rpc_health_watch_pump(c);
}
