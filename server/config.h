/*
 * Server configuration: defaults, then environment variables, then flags
 * (flags win). Every limit of API.md is a setting.
 */
#ifndef ES_SERVER_CONFIG_H
#define ES_SERVER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "es/validate.h"
#include "log.h"

typedef struct es_config {
  char bind_addr[256];          /* BIND_ADDR / --bind */
  char backend[32];             /* BACKEND / --backend: memory | postgres */
  char database_url[1024];      /* DATABASE_URL / --database-url */
  char port_file[1024];         /* --port-file: written with the bound port once serving */
  int cq_threads;               /* ES_THREADS / --threads: completion-queue threads */
  int workers;                  /* ES_WORKERS / --workers: worker threads (0 until set: then
                                   2, or 64 for postgres so that group commit has company) */
  int pg_connections;           /* ES_PG_CONNECTIONS / --pg-connections: PostgreSQL readers */
  int shutdown_grace_ms;        /* ES_SHUTDOWN_GRACE_MS / --shutdown-grace-ms */
  es_log_level_t log_level;     /* LOG_LEVEL / --log-level */
  es_limits_t limits;           /* ES_MAX_* / --max-* */
} es_config_t;

enum { ES_CONFIG_RUN = 0, ES_CONFIG_EXIT_OK = 1, ES_CONFIG_EXIT_USAGE = 2 };

/* Fills *cfg from defaults, the environment and argv. Returns ES_CONFIG_RUN,
 * or ES_CONFIG_EXIT_OK after printing --help / --version, or
 * ES_CONFIG_EXIT_USAGE after printing what was wrong to stderr. */
int es_config_load(es_config_t *cfg, int argc, char **argv);

#define ES_VERSION "0.1.0"

#endif
