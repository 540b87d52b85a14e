/*
 * The eventstore binary: configuration, backend, server, signals.
 *
 * SIGINT and SIGTERM are blocked before grpc_init() starts any thread, so
 * every thread inherits the mask and main() alone receives them via sigwait().
 *
 * `eventstore backup ...` is a subcommand with flags of its own (the first
 * word decides, before the server's flags are parsed): it copies an lmdb
 * store and exits, starting neither gRPC nor a backend.
 */
#include <errno.h>
#include <getopt.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "es/backend_lmdb.h"
#include "es/backend_memory.h"
#include "es/backend_postgres.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

static int write_port_file(const char *path, int port) {
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  fprintf(f, "%d\n", port);
  if (fclose(f) != 0) return -1;
  return rename(tmp, path);
}

static int open_backend(const es_config_t *cfg, es_backend_t **out) {
  es_err_t err;
  es_err_clear(&err);
  if (strcmp(cfg->backend, "memory") == 0) {
    if (es_mem_open(out, &err) != ES_OK) {
      es_log(ES_LOG_ERROR, "cannot open the memory backend: %s", err.msg);
      return -1;
    }
    es_log(ES_LOG_INFO,
           "backend memory: events are kept in memory only and are lost when the "
           "server stops (--backend lmdb, the default, keeps them in --data-dir)");
    return 0;
  }
  if (strcmp(cfg->backend, "postgres") == 0) {
    if (cfg->database_url[0] == '\0') {
      es_log(ES_LOG_ERROR,
             "backend postgres needs a database: set DATABASE_URL or --database-url "
             "(e.g. postgresql://user@localhost:5432/eventstore)");
      return -1;
    }
    es_pg_options_t opts;
    es_pg_options_default(&opts);
    opts.connections = cfg->pg_connections;
    opts.connect_timeout_s = cfg->pg_connect_timeout_s;
    opts.statement_timeout_ms = cfg->pg_statement_timeout_ms;
    opts.lock_timeout_ms = cfg->pg_lock_timeout_ms;
    opts.idle_in_transaction_timeout_ms = cfg->pg_idle_in_transaction_timeout_ms;
    opts.tcp_user_timeout_ms = cfg->pg_tcp_user_timeout_ms;
    if (es_pg_open(cfg->database_url, &opts, out, &err) != ES_OK) {
      es_log(ES_LOG_ERROR, "cannot open the postgres backend: %s", err.msg);
      return -1;
    }
    return 0;
  }
  if (strcmp(cfg->backend, "lmdb") == 0) {
    if (es_lmdb_open(cfg->data_dir, NULL, out, &err) != ES_OK) {
      es_log(ES_LOG_ERROR, "cannot open the lmdb backend: %s", err.msg);
      return -1;
    }
    es_log(ES_LOG_INFO, "data directory %s (backend lmdb)", cfg->data_dir);
    return 0;
  }
  es_log(ES_LOG_ERROR, "unknown backend '%s' (supported: memory, lmdb, postgres)", cfg->backend);
  return -1;
}

static void *shutdown_watchdog(void *arg) {
  int ms = *(const int *)arg;
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
  es_log(ES_LOG_WARN, "shutdown: teardown still running after %d ms; exiting now", ms);
  _exit(0);
  return NULL;
}

static void backup_usage(FILE *out, const char *argv0) {
  fprintf(out,
          "usage: %s backup [--data-dir DIR] --out DIR2\n\n"
          "Online backup of the lmdb store in DIR, also while a server is serving it: a\n"
          "compacted copy of the last commit before the backup began (every Append in it\n"
          "whole, positions 1..N without a gap), written to DIR2, which must be new or\n"
          "empty. To restore, start a server with --backend lmdb --data-dir DIR2.\n\n"
          "  --data-dir DIR   the store to copy (default [ES_DATA_DIR] or ./data)\n"
          "  --out DIR2       where the copy goes\n"
          "  --help           print this help\n"
          "\nRelative paths are taken from the directory the command was run from.\n",
          argv0);
}

/* `backup`: argv[0] is the program, argv[1] "backup". Returns the exit code:
 * 0 done, 1 failed, 2 usage. */
static int backup_main(int argc, char **argv) {
  static char dir[4096], out[4096];
  const char *env_dir = getenv("ES_DATA_DIR");
  snprintf(dir, sizeof dir, "%s", env_dir && *env_dir ? env_dir : "./data");
  static const struct option longopts[] = {{"data-dir", required_argument, NULL, 'd'},
                                           {"out", required_argument, NULL, 'o'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  optind = 1;
  int c;
  while ((c = getopt_long(argc - 1, argv + 1, "h", longopts, NULL)) != -1) {
    char *dst = c == 'd' ? dir : c == 'o' ? out : NULL;
    if (c == 'h') {
      backup_usage(stdout, argv[0]);
      return 0;
    }
    if (!dst) {
      fprintf(stderr, "eventstore backup: try --help\n");
      return 2;
    }
    if (strlen(optarg) >= sizeof dir) {
      fprintf(stderr, "eventstore backup: path too long\n");
      return 2;
    }
    snprintf(dst, sizeof dir, "%s", optarg);
  }
  if (optind < argc - 1) {
    fprintf(stderr, "eventstore backup: unexpected argument '%s' (try --help)\n", argv[optind + 1]);
    return 2;
  }
  if (!out[0] || !dir[0]) {
    fprintf(stderr, "eventstore backup: --out DIR2 is required (try --help)\n");
    return 2;
  }
  if (es_config_abs_path(dir, sizeof dir) != 0 || es_config_abs_path(out, sizeof out) != 0)
    return 2;
  es_lmdb_backup_info_t info;
  es_err_t err;
  es_err_clear(&err);
  if (es_lmdb_backup(dir, out, &info, &err) != ES_OK) {
    fprintf(stderr, "eventstore backup: %s\n", err.msg);
    return 1;
  }
  printf("backup of %s: events 1..%llu (%llu bytes) in %s\n", dir, (unsigned long long)info.head,
         (unsigned long long)info.bytes, out);
  return 0;
}

/* How long exit waits for grpc_shutdown(). It returns once gRPC has released
 * every connection, which its executor threads finish asynchronously; those
 * threads may have been started by a subscription delivery thread and then
 * run at its lower priority (server.c, DELIVERY_NICE), so on cores kept busy
 * by other processes the release can take seconds. Every call has ended by
 * then: past the bound the process leaves without waiting, as it does when
 * clients keep connections open (es_server_stop). */
#define GRPC_SHUTDOWN_MS 1500

static void *grpc_shutdown_main(void *arg) {
  (void)arg;
  grpc_shutdown();
  return NULL;
}

/* grpc_shutdown(), waiting at most ms; true when it returned. */
static bool shutdown_grpc_within(int ms) {
  pthread_t t;
  if (pthread_create(&t, NULL, grpc_shutdown_main, NULL) != 0) {
    grpc_shutdown();
    return true;
  }
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  return pthread_timedjoin_np(t, NULL, &until) == 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "backup") == 0) return backup_main(argc, argv);
  static es_config_t cfg;
  int rc = es_config_load(&cfg, argc, argv);
  if (rc == ES_CONFIG_EXIT_OK) return 0;
  if (rc == ES_CONFIG_EXIT_USAGE) return 2;
  es_log_set_level(cfg.log_level);
  if (es_config_exposed_insecurely(&cfg))
    es_log(ES_LOG_WARN,
           "--insecure: listening on non-loopback address %s without %s; anyone who can reach it "
           "can read and write every stream",
           cfg.bind_addr,
           cfg.tls_cert[0]           ? "authentication"
           : cfg.auth_tokens_file[0] ? "TLS"
                                     : "TLS or authentication");

  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  signal(SIGPIPE, SIG_IGN);

  es_backend_t *backend = NULL;
  if (open_backend(&cfg, &backend) != 0) return 1;

  grpc_init();
  es_server_t *srv = NULL;
  char errbuf[512];
  if (es_server_start(&cfg, backend, &srv, errbuf, sizeof errbuf) != 0) {
    es_log(ES_LOG_ERROR, "cannot start: %s", errbuf);
    es_backend_close(backend);
    grpc_shutdown();
    return 1;
  }
  es_log(ES_LOG_INFO,
         "eventstore %s serving on %s (port %d), backend %s, %d completion-queue thread(s), %d "
         "worker(s)",
         ES_VERSION, cfg.bind_addr, es_server_port(srv), cfg.backend, cfg.cq_threads, cfg.workers);
  es_log(ES_LOG_INFO, "transport %s, bearer tokens %s",
         cfg.tls_cert[0] ? (cfg.tls_client_ca[0] ? "TLS with client certificates" : "TLS")
                         : "plaintext",
         cfg.auth_tokens_file[0] ? "required (health open)" : "not required");
  es_metrics_http_t *metrics = NULL;
  if (cfg.metrics_addr[0]) {
    int metrics_port = 0;
    if (es_metrics_http_start(cfg.metrics_addr, srv, &metrics, &metrics_port, errbuf,
                              sizeof errbuf) != 0) {
      es_log(ES_LOG_ERROR, "cannot start the metrics endpoint: %s", errbuf);
      _exit(1); /* the gRPC server is already serving; nothing to save */
    }
    es_log(ES_LOG_INFO, "metrics on http://%s/metrics (port %d)", cfg.metrics_addr, metrics_port);
    if (cfg.metrics_port_file[0] && write_port_file(cfg.metrics_port_file, metrics_port) != 0)
      es_log(ES_LOG_ERROR, "cannot write metrics port file %s: %s", cfg.metrics_port_file,
             strerror(errno));
  }
  if (cfg.port_file[0] && write_port_file(cfg.port_file, es_server_port(srv)) != 0)
    es_log(ES_LOG_ERROR, "cannot write port file %s: %s", cfg.port_file, strerror(errno));

  int sig = 0;
  while (sigwait(&sigs, &sig) != 0) {
  }
  es_log(ES_LOG_INFO, "received %s: stopping (grace %d ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
         cfg.shutdown_grace_ms);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  /* gRPC's teardown can wait ~20 s for a client that never answers the GOAWAY
   * ping; the watchdog keeps the promised bound on the time to exit. */
  static int watchdog_ms;
  watchdog_ms = cfg.shutdown_grace_ms + 3000;
  pthread_t watchdog;
  if (pthread_create(&watchdog, NULL, shutdown_watchdog, &watchdog_ms) == 0)
    pthread_detach(watchdog);
  /* The PostgreSQL backend publishes other servers' commits from a thread of
   * its own: stop it before the server lets go of the notifier. */
  es_metrics_http_stop(metrics); /* it reads the server's state */
  es_pg_stop_listening(backend);
  bool clean = es_server_stop(srv);
  if (!clean) {
    /* gRPC still holds connections (clients that have not closed them yet):
     * every call has ended, so leave without waiting for them. */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    es_log(ES_LOG_INFO, "stopped in %ld ms",
           (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
    _exit(0);
  }
  es_backend_close(backend);
  if (!shutdown_grpc_within(GRPC_SHUTDOWN_MS)) {
    es_log(ES_LOG_INFO, "gRPC still releasing connections after %d ms; not waiting",
           GRPC_SHUTDOWN_MS);
    _exit(0);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  es_log(ES_LOG_INFO, "stopped in %ld ms",
         (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
  return 0;
}
