/*
 * Transport security and authentication of the server: TLS credentials from
 * PEM files, bearer tokens from a file, and the rule that decides whether an
 * address is loopback (binding anything else needs TLS and tokens, or
 * --insecure on purpose).
 *
 * Everything here is loaded once at start-up and read-only afterwards, so the
 * completion-queue threads check tokens without a lock.
 */
#ifndef ES_SERVER_SECURITY_H
#define ES_SERVER_SECURITY_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"

typedef struct es_tokens es_tokens_t;

/* 1 when addr (a gRPC listening address: "host:port", "[v6]:port",
 * "unix:path") only accepts connections from this machine: 127.0.0.0/8, ::1,
 * localhost, or a Unix socket. 0 otherwise (0.0.0.0, ":port", other hosts). */
int es_addr_is_loopback(const char *addr);

/* Reads the tokens file: one token per line, surrounding blanks dropped,
 * blank lines and lines starting with '#' ignored. Returns 0 and a new set
 * in *out (free with es_tokens_free), or -1 with a message in errbuf (file
 * unreadable, no token in it, a token too long). */
int es_tokens_load(const char *path, es_tokens_t **out, char *errbuf, size_t errlen);
void es_tokens_free(es_tokens_t *t);
size_t es_tokens_count(const es_tokens_t *t);

/* 1 when md holds "authorization: Bearer <token>" with a listed token.
 * Compares in time independent of where a guess differs from a token. */
int es_tokens_check_metadata(const es_tokens_t *t, const grpc_metadata_array *md);

/* Server credentials for cfg: TLS when cfg->tls_cert is set (with client
 * certificates required and verified against cfg->tls_client_ca if set),
 * insecure otherwise. Returns 0 and *out (the caller releases it), or -1 with
 * a message in errbuf naming the file that could not be read or parsed. */
int es_server_credentials(const es_config_t *cfg, grpc_server_credentials **out, char *errbuf,
                          size_t errlen);

#endif
