/*
 * The gRPC server: eventstore.v1.EventStore, grpc.health.v1.Health and
 * grpc.reflection.v1alpha.ServerReflection on the gRPC C core.
 */
#ifndef ES_SERVER_H
#define ES_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "es/backend.h"

typedef struct es_server es_server_t;

/* Binds cfg->bind_addr, starts the completion-queue threads and the workers
 * and begins serving. backend is borrowed and must outlive the server.
 * grpc_init() must have been called. Returns 0, or -1 with a message in errbuf. */
int es_server_start(const es_config_t *cfg, es_backend_t *backend, es_server_t **out, char *errbuf,
                    size_t errlen);

/* The bound port. */
int es_server_port(const es_server_t *s);

/* Graceful stop: health turns NOT_SERVING, new calls get UNAVAILABLE, calls in
 * flight finish, subscriptions end with UNAVAILABLE; after the grace period the
 * remaining calls are cancelled. Returns true when everything was torn down
 * and freed. Returns false when clients kept connections open (or calls did
 * not end): then gRPC still holds resources, and the caller should leave the
 * process with _exit() rather than run grpc_shutdown(). */
bool es_server_stop(es_server_t *s);

#endif
