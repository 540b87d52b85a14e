/*
 * Configuration parsing. Each option is declared once in the OPTIONS table with
 * its flag, environment variable, kind and destination, so that --help, the
 * environment and the flags cannot disagree.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "security.h"

typedef enum {
  OPT_STR,
  OPT_INT,
  OPT_MS,
  OPT_U32,
  OPT_SIZE,
  OPT_COUNT, /* a size where 0 means none */
  OPT_U64,
  OPT_LEVEL,
  OPT_BOOL
} opt_kind_t;

typedef struct option_def {
  const char *flag; /* long option name */
  const char *env;  /* environment variable, or NULL */
  opt_kind_t kind;
  size_t offset; /* of the destination within es_config_t */
  size_t size;   /* of the destination (strings) */
  const char *help;
} option_def_t;

#define STR(field, flag, env, help) \
  { flag, env, OPT_STR, offsetof(es_config_t, field), sizeof(((es_config_t *)0)->field), help }
#define NUM(kind, field, flag, env, help) \
  { flag, env, kind, offsetof(es_config_t, field), sizeof(((es_config_t *)0)->field), help }

static const option_def_t OPTIONS[] = {
    STR(bind_addr, "bind", "BIND_ADDR",
        "address to listen on (default 127.0.0.1:50051; port 0 picks one)"),
    STR(backend, "backend", "BACKEND",
        "storage backend: lmdb (default; durable, in --data-dir), memory (kept in memory only, "
        "lost when the server stops) or postgres (--database-url)"),
    STR(database_url, "database-url", "DATABASE_URL",
        "PostgreSQL connection URL (backend postgres)"),
    STR(data_dir, "data-dir", "ES_DATA_DIR",
        "directory of the lmdb backend's files, created if missing (default ./data; relative to "
        "the directory the command was run from, also under bazel run)"),
    STR(port_file, "port-file", NULL, "write the bound port to this file once serving"),
    NUM(OPT_INT, cq_threads, "threads", "ES_THREADS", "completion-queue threads (default 1)"),
    NUM(OPT_INT, workers, "workers", "ES_WORKERS",
        "worker threads for backend work and subscriptions (default 64 with lmdb and postgres, "
        "2 with memory)"),
    NUM(OPT_INT, delivery_threads, "delivery-threads", "ES_DELIVERY_THREADS",
        "threads that send events to subscribers, at a lower priority than appends (default 2; "
        "8 with postgres, where a subscriber behind the live window reads the database)"),
    NUM(OPT_INT, pg_connections, "pg-connections", "ES_PG_CONNECTIONS",
        "PostgreSQL connections for reads (default 8; the committer and the listener use one more "
        "each)"),
    NUM(OPT_INT, pg_connect_timeout_s, "pg-connect-timeout-s", "ES_PG_CONNECT_TIMEOUT_S",
        "seconds to wait for a PostgreSQL connection (default 5; the URL's connect_timeout wins)"),
    NUM(OPT_MS, pg_statement_timeout_ms, "pg-statement-timeout-ms", "ES_PG_STATEMENT_TIMEOUT_MS",
        "PostgreSQL statement_timeout; a connection that does not answer within it plus 1 s is "
        "dropped (default 10000; 0 = none)"),
    NUM(OPT_MS, pg_lock_timeout_ms, "pg-lock-timeout-ms", "ES_PG_LOCK_TIMEOUT_MS",
        "PostgreSQL lock_timeout: how long an append waits for the store's write lock (default "
        "5000; 0 = none)"),
    NUM(OPT_MS, pg_idle_in_transaction_timeout_ms, "pg-idle-in-transaction-timeout-ms",
        "ES_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS",
        "PostgreSQL idle_in_transaction_session_timeout: a vanished writer's transaction ends "
        "after it (default 10000; 0 = none)"),
    NUM(OPT_MS, pg_tcp_user_timeout_ms, "pg-tcp-user-timeout-ms", "ES_PG_TCP_USER_TIMEOUT_MS",
        "libpq tcp_user_timeout: unacknowledged data fails a connection after it (default "
        "10000; 0 = the system's; the URL's wins)"),
    NUM(OPT_COUNT, live_window_events, "live-window-events", "ES_LIVE_WINDOW_EVENTS",
        "newest events kept encoded in memory for live subscribers, read from storage once "
        "(default 100000; 0 = none: every subscriber reads storage)"),
    NUM(OPT_SIZE, live_window_bytes, "live-window-bytes", "ES_LIVE_WINDOW_BYTES",
        "bytes of encoded events the live window keeps at most (default 67108864)"),
    NUM(OPT_MS, shutdown_grace_ms, "shutdown-grace-ms", "ES_SHUTDOWN_GRACE_MS",
        "how long shutdown waits for calls in flight (default 5000)"),
    NUM(OPT_LEVEL, log_level, "log-level", "LOG_LEVEL", "debug | info (default) | warn | error"),
    STR(tls_cert, "tls-cert", "ES_TLS_CERT",
        "PEM certificate (chain) of the server: serve TLS (needs --tls-key)"),
    STR(tls_key, "tls-key", "ES_TLS_KEY", "PEM private key of --tls-cert"),
    STR(tls_client_ca, "tls-client-ca", "ES_TLS_CLIENT_CA",
        "PEM CA certificates: require client certificates signed by them (mutual TLS)"),
    STR(auth_tokens_file, "auth-tokens-file", "ES_AUTH_TOKENS_FILE",
        "file of bearer tokens, one a line: calls must send 'authorization: Bearer <token>' "
        "(health stays open)"),
    STR(metrics_addr, "metrics-addr", "ES_METRICS_ADDR",
        "HOST:PORT of a Prometheus endpoint (GET /metrics; off by default; port 0 picks one)"),
    STR(metrics_port_file, "metrics-port-file", NULL,
        "write the bound metrics port to this file once serving"),
    NUM(OPT_BOOL, insecure, "insecure", "ES_INSECURE",
        "allow a non-loopback --bind without TLS and tokens (logs a warning)"),
    NUM(OPT_SIZE, limits.max_request_bytes, "max-request-bytes", "ES_MAX_REQUEST_BYTES",
        "largest request message (default 4194304)"),
    NUM(OPT_U32, limits.max_append_events, "max-append-events", "ES_MAX_APPEND_EVENTS",
        "events per Append (default 1000)"),
    NUM(OPT_U32, limits.max_metadata_entries, "max-metadata-entries", "ES_MAX_METADATA_ENTRIES",
        "metadata entries per event (default 64)"),
    NUM(OPT_SIZE, limits.max_metadata_bytes, "max-metadata-bytes", "ES_MAX_METADATA_BYTES",
        "metadata bytes per event (default 65536)"),
    NUM(OPT_SIZE, limits.max_id_bytes, "max-id-bytes", "ES_MAX_ID_BYTES",
        "bytes of stream_id, event_type, stream_type, correlation_id, causation_id (default 256)"),
    NUM(OPT_SIZE, limits.max_content_type_bytes, "max-content-type-bytes",
        "ES_MAX_CONTENT_TYPE_BYTES", "bytes of content_type (default 128)"),
    NUM(OPT_U32, limits.max_page_events, "max-page-events", "ES_MAX_PAGE_EVENTS",
        "events per read page (default 1000)"),
    NUM(OPT_U32, limits.default_page_events, "default-page-events", "ES_DEFAULT_PAGE_EVENTS",
        "page size when max_count is 0 (default 100)"),
    NUM(OPT_SIZE, limits.max_page_bytes, "max-page-bytes", "ES_MAX_PAGE_BYTES",
        "response budget of a page (default 4128768)"),
    NUM(OPT_U32, limits.default_checkpoint_interval, "checkpoint-interval",
        "ES_CHECKPOINT_INTERVAL", "default subscription checkpoint interval (default 1000)"),
};
#define N_OPTIONS (sizeof OPTIONS / sizeof OPTIONS[0])

static void usage(FILE *out, const char *argv0) {
  fprintf(out,
          "eventstore %s — a gRPC event store\n\n"
          "usage: %s [options]\n\noptions (environment variable in brackets):\n",
          ES_VERSION, argv0);
  for (size_t i = 0; i < N_OPTIONS; i++) {
    char left[64];
    snprintf(left, sizeof left, "--%s", OPTIONS[i].flag);
    fprintf(out, "  %-26s %s", left, OPTIONS[i].help);
    if (OPTIONS[i].env)
      fprintf(out, " [%s%s]", OPTIONS[i].env, OPTIONS[i].kind == OPT_BOOL ? "=1" : "");
    fputc('\n', out);
  }
  fprintf(out, "  %-26s %s\n  %-26s %s\n", "--help", "print this help", "--version",
          "print the version");
  fprintf(out,
          "\nsubcommands:\n"
          "  %s backup --data-dir DIR --out DIR2\n"
          "      online backup of the lmdb store in DIR (default [ES_DATA_DIR] or ./data) while a\n"
          "      server may be serving it: a compacted copy of the last commit, written to DIR2\n"
          "      (new or empty). Restore: start a server with --data-dir DIR2.\n",
          argv0);
}

static int set_option(es_config_t *cfg, const option_def_t *o, const char *value,
                      const char *source) {
  char *dst = (char *)cfg + o->offset;
  if (o->kind == OPT_STR) {
    if (strlen(value) >= o->size) {
      fprintf(stderr, "eventstore: %s: value too long (limit %zu bytes)\n", source, o->size - 1);
      return -1;
    }
    memcpy(dst, value, strlen(value) + 1);
    return 0;
  }
  if (o->kind == OPT_LEVEL) {
    if (es_log_parse_level(value, (es_log_level_t *)(void *)dst) != 0) {
      fprintf(stderr, "eventstore: %s: '%s' is not one of debug, info, warn, error\n", source,
              value);
      return -1;
    }
    return 0;
  }
  if (o->kind == OPT_BOOL) {
    if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0) {
      *(int *)(void *)dst = 1;
    } else if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0) {
      *(int *)(void *)dst = 0;
    } else {
      fprintf(stderr, "eventstore: %s: '%s' is not one of 1, true, 0, false\n", source, value);
      return -1;
    }
    return 0;
  }
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(value, &end, 10);
  if (errno || !end || *end || value[0] == '\0' || value[0] == '-') {
    fprintf(stderr, "eventstore: %s: '%s' is not a non-negative integer\n", source, value);
    return -1;
  }
  switch (o->kind) {
    case OPT_INT:
      if (v < 1 || v > 1024) {
        fprintf(stderr, "eventstore: %s: %llu is out of range 1..1024\n", source, v);
        return -1;
      }
      *(int *)(void *)dst = (int)v;
      break;
    case OPT_MS:
      if (v > 600000) {
        fprintf(stderr, "eventstore: %s: %llu is out of range 0..600000\n", source, v);
        return -1;
      }
      *(int *)(void *)dst = (int)v;
      break;
    case OPT_U32:
      if (v < 1 || v > UINT32_MAX) {
        fprintf(stderr, "eventstore: %s: %llu is out of range 1..%u\n", source, v, UINT32_MAX);
        return -1;
      }
      *(uint32_t *)(void *)dst = (uint32_t)v;
      break;
    case OPT_SIZE:
    case OPT_COUNT: {
      unsigned lo = o->kind == OPT_COUNT ? 0 : 1;
      if (v < lo || v > (1ull << 31)) {
        fprintf(stderr, "eventstore: %s: %llu is out of range %u..2147483648\n", source, v, lo);
        return -1;
      }
      *(size_t *)(void *)dst = (size_t)v;
      break;
    }
    default:
      *(uint64_t *)(void *)dst = (uint64_t)v;
      break;
  }
  return 0;
}

/* A relative path means relative to where the user ran the command: `bazel
 * run` starts the binary in its runfiles tree and names the user's directory
 * in BUILD_WORKING_DIRECTORY. */
int es_config_abs_path(char *path, size_t size) {
  if (path[0] == '/') return 0;
  char base[4096];
  const char *bwd = getenv("BUILD_WORKING_DIRECTORY");
  if (bwd && bwd[0]) {
    snprintf(base, sizeof base, "%s", bwd);
  } else if (!getcwd(base, sizeof base)) {
    fprintf(stderr, "eventstore: cannot resolve %s: %s\n", path, strerror(errno));
    return -1;
  }
  const char *rel = path;
  if (strncmp(rel, "./", 2) == 0) rel += 2;
  char abs[8192];
  int n = rel[0] ? snprintf(abs, sizeof abs, "%s/%s", base, rel)
                 : snprintf(abs, sizeof abs, "%s", base);
  if (n < 0 || (size_t)n >= size) {
    fprintf(stderr, "eventstore: %s: path too long\n", path);
    return -1;
  }
  memcpy(path, abs, (size_t)n + 1);
  return 0;
}

int es_config_load(es_config_t *cfg, int argc, char **argv) {
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->bind_addr, sizeof cfg->bind_addr, "127.0.0.1:50051");
  snprintf(cfg->backend, sizeof cfg->backend, "lmdb");
  snprintf(cfg->data_dir, sizeof cfg->data_dir, "./data");
  cfg->cq_threads = 1;
  cfg->workers = 0; /* default below, once the backend is known */
  cfg->pg_connections = 8;
  cfg->pg_connect_timeout_s = 5;
  cfg->pg_statement_timeout_ms = 10000;
  cfg->pg_lock_timeout_ms = 5000;
  cfg->pg_idle_in_transaction_timeout_ms = 10000;
  cfg->pg_tcp_user_timeout_ms = 10000;
  cfg->shutdown_grace_ms = 5000;
  cfg->live_window_events = 100000;
  cfg->live_window_bytes = 64 << 20;
  cfg->log_level = ES_LOG_INFO;
  es_limits_default(&cfg->limits);

  for (size_t i = 0; i < N_OPTIONS; i++) {
    const char *v = OPTIONS[i].env ? getenv(OPTIONS[i].env) : NULL;
    if (v && *v && set_option(cfg, &OPTIONS[i], v, OPTIONS[i].env) != 0)
      return ES_CONFIG_EXIT_USAGE;
  }

  struct option longopts[N_OPTIONS + 3];
  for (size_t i = 0; i < N_OPTIONS; i++)
    longopts[i] = (struct option){OPTIONS[i].flag,
                                  OPTIONS[i].kind == OPT_BOOL ? no_argument : required_argument,
                                  NULL, (int)(256 + i)};
  longopts[N_OPTIONS] = (struct option){"help", no_argument, NULL, 'h'};
  longopts[N_OPTIONS + 1] = (struct option){"version", no_argument, NULL, 'V'};
  longopts[N_OPTIONS + 2] = (struct option){NULL, 0, NULL, 0};

  optind = 1;
  int c;
  while ((c = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
    if (c == 'h') {
      usage(stdout, argv[0]);
      return ES_CONFIG_EXIT_OK;
    }
    if (c == 'V') {
      printf("eventstore %s\n", ES_VERSION);
      return ES_CONFIG_EXIT_OK;
    }
    if (c >= 256 && (size_t)(c - 256) < N_OPTIONS) {
      char source[64];
      snprintf(source, sizeof source, "--%s", OPTIONS[c - 256].flag);
      if (set_option(cfg, &OPTIONS[c - 256], optarg ? optarg : "1", source) != 0)
        return ES_CONFIG_EXIT_USAGE;
      continue;
    }
    fprintf(stderr, "eventstore: try --help\n");
    return ES_CONFIG_EXIT_USAGE;
  }
  if (optind < argc) {
    fprintf(stderr, "eventstore: unexpected argument '%s' (try --help)\n", argv[optind]);
    return ES_CONFIG_EXIT_USAGE;
  }
  es_limits_t builtin;
  es_limits_default(&builtin);
  /* Lowering the maximum alone lowers the default with it. */
  if (cfg->limits.default_page_events > cfg->limits.max_page_events &&
      cfg->limits.default_page_events == builtin.default_page_events)
    cfg->limits.default_page_events = cfg->limits.max_page_events;
  if (cfg->limits.default_page_events > cfg->limits.max_page_events) {
    fprintf(stderr, "eventstore: --default-page-events %u exceeds --max-page-events %u\n",
            cfg->limits.default_page_events, cfg->limits.max_page_events);
    return ES_CONFIG_EXIT_USAGE;
  }
  if ((cfg->tls_cert[0] != '\0') != (cfg->tls_key[0] != '\0')) {
    fprintf(stderr, "eventstore: --tls-cert and --tls-key go together: give both or neither\n");
    return ES_CONFIG_EXIT_USAGE;
  }
  if (cfg->tls_client_ca[0] && !cfg->tls_cert[0]) {
    fprintf(stderr, "eventstore: --tls-client-ca needs --tls-cert and --tls-key\n");
    return ES_CONFIG_EXIT_USAGE;
  }
  if (es_config_exposed_insecurely(cfg) && !cfg->insecure) {
    fprintf(stderr,
            "eventstore: refusing to listen on non-loopback address %s without TLS and "
            "authentication: give --tls-cert, --tls-key and --auth-tokens-file, or --insecure "
            "to accept the risk\n",
            cfg->bind_addr);
    return ES_CONFIG_EXIT_USAGE;
  }
  if (es_config_abs_path(cfg->data_dir, sizeof cfg->data_dir) != 0) return ES_CONFIG_EXIT_USAGE;
  cfg->limits.max_event_bytes = cfg->limits.max_request_bytes;
  /* PostgreSQL appends block on the network and lmdb appends on their
   * commit's sync: many in flight at once is what lets the backend commit
   * them together (group commit). */
  if (cfg->workers == 0)
    cfg->workers =
        strcmp(cfg->backend, "postgres") == 0 || strcmp(cfg->backend, "lmdb") == 0 ? 64 : 2;
  if (cfg->delivery_threads == 0)
    cfg->delivery_threads = strcmp(cfg->backend, "postgres") == 0 ? 8 : 2;
  return ES_CONFIG_RUN;
}

int es_config_exposed_insecurely(const es_config_t *cfg) {
  return !es_addr_is_loopback(cfg->bind_addr) &&
         !(cfg->tls_cert[0] != '\0' && cfg->auth_tokens_file[0] != '\0');
}
