/*
 * The in-memory backend: every semantic of API.md, nothing durable. The
 * embedded default (`make run`).
 */
#ifndef ES_BACKEND_MEMORY_H
#define ES_BACKEND_MEMORY_H

#include "es/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opens an empty store. *out (OUT) is closed with es_backend_close().
 * Returns ES_ENOMEM on allocation failure. */
int es_mem_open(es_backend_t **out, es_err_t *err);

/* Memory the store holds beyond the events' payloads (for tests and
 * benchmarks). */
typedef struct es_mem_stats {
  uint64_t events;
  uint64_t streams;
  uint64_t bytes_total;   /* everything allocated by the store */
  uint64_t bytes_payload; /* sum of payload lengths */
} es_mem_stats_t;

void es_mem_stats(es_backend_t *b, es_mem_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif
