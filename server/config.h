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
  char bind_addr[256];         /* BIND_ADDR / --bind */
  char backend[32];            /* BACKEND / --backend: memory | postgres | lmdb */
  char database_url[1024];     /* DATABASE_URL / --database-url */
  char data_dir[4096];         /* ES_DATA_DIR / --data-dir (backend lmdb), made absolute:
                                  a relative path is taken from BUILD_WORKING_DIRECTORY
                                  when set (bazel run), else the current directory */
  char port_file[1024];        /* --port-file: written with the bound port once serving */
  int cq_threads;              /* ES_THREADS / --threads: completion-queue threads */
  int workers;                 /* ES_WORKERS / --workers: worker threads (0 until set: then
                                  2, or 64 for postgres so that group commit has company) */
  int delivery_threads;        /* ES_DELIVERY_THREADS / --delivery-threads: subscription
                                  delivery (0 until set: then 2, or 8 for postgres) */
  int pg_connections;          /* ES_PG_CONNECTIONS / --pg-connections: PostgreSQL readers */
  int pg_connect_timeout_s;    /* ES_PG_CONNECT_TIMEOUT_S / --pg-connect-timeout-s */
  int pg_statement_timeout_ms; /* ES_PG_STATEMENT_TIMEOUT_MS / --pg-statement-timeout-ms */
  int pg_lock_timeout_ms;      /* ES_PG_LOCK_TIMEOUT_MS / --pg-lock-timeout-ms */
  int pg_idle_in_transaction_timeout_ms; /* ES_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS /
                                            --pg-idle-in-transaction-timeout-ms */
  int pg_tcp_user_timeout_ms;            /* ES_PG_TCP_USER_TIMEOUT_MS / --pg-tcp-user-timeout-ms */
  int shutdown_grace_ms;                 /* ES_SHUTDOWN_GRACE_MS / --shutdown-grace-ms */
  size_t live_window_events;   /* ES_LIVE_WINDOW_EVENTS / --live-window-events (server/tail.h) */
  size_t live_window_bytes;    /* ES_LIVE_WINDOW_BYTES / --live-window-bytes */
  es_log_level_t log_level;    /* LOG_LEVEL / --log-level */
  char tls_cert[1024];         /* ES_TLS_CERT / --tls-cert: PEM certificate chain; TLS when set */
  char tls_key[1024];          /* ES_TLS_KEY / --tls-key: PEM private key */
  char tls_client_ca[1024];    /* ES_TLS_CLIENT_CA / --tls-client-ca: require client certs */
  char auth_tokens_file[1024]; /* ES_AUTH_TOKENS_FILE / --auth-tokens-file: bearer tokens */
  char metrics_addr[256]; /* ES_METRICS_ADDR / --metrics-addr: Prometheus endpoint, off if empty */
  char metrics_port_file[1024]; /* --metrics-port-file: written with the metrics port */
  int insecure;                 /* ES_INSECURE / --insecure: allow a non-loopback bind
                                   without TLS and tokens */
  es_limits_t limits;           /* ES_MAX_* / --max-* */
} es_config_t;

enum { ES_CONFIG_RUN = 0, ES_CONFIG_EXIT_OK = 1, ES_CONFIG_EXIT_USAGE = 2 };

/* 1 when cfg binds a non-loopback address without both TLS and tokens (then
 * the server only starts with --insecure). */
int es_config_exposed_insecurely(const es_config_t *cfg);

/* Fills *cfg from defaults, the environment and argv. Returns ES_CONFIG_RUN,
 * or ES_CONFIG_EXIT_OK after printing --help / --version, or
 * ES_CONFIG_EXIT_USAGE after printing what was wrong to stderr. */
int es_config_load(es_config_t *cfg, int argc, char **argv);

/* Makes path (a buffer of size bytes) absolute, taking a relative path from
 * the directory the command was run from (BUILD_WORKING_DIRECTORY under
 * `bazel run`, else the current directory). 0, or -1 after printing why to
 * stderr. */
int es_config_abs_path(char *path, size_t size);

/* The release version ("0.1.0"), from the file VERSION at the root of the
 * repository, which also sets the SDKs' versions: //server:version_c compiles
 * it into version.c. Static storage; never freed. */
extern const char es_version[];
#define ES_VERSION es_version

#endif
