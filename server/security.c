/*
 * See security.h. Tokens are kept in a flat array; a check walks every token
 * and every byte of each (no early exit on a mismatch), so the time it takes
 * says nothing about how close a guess came. Only token lengths — bounded,
 * chosen by the operator — influence the timing.
 */
#include "security.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_TOKEN_BYTES 4096
#define MAX_PEM_BYTES (1u << 20)

struct es_tokens {
  size_t n;      /* number of tokens */
  char **tokens; /* owned, NUL-terminated */
  size_t *lens;  /* owned */
};

/* ---------------------------------------------------------------- addresses */

int es_addr_is_loopback(const char *addr) {
  if (strncmp(addr, "unix:", 5) == 0 || strncmp(addr, "unix-abstract:", 14) == 0) return 1;
  if (strncmp(addr, "ipv4:", 5) == 0 || strncmp(addr, "ipv6:", 5) == 0) addr += 5;
  char host[256];
  const char *end;
  if (addr[0] == '[') {
    end = strchr(addr, ']');
    if (!end) return 0;
    addr++;
  } else {
    end = strrchr(addr, ':');
    if (!end) end = addr + strlen(addr);
  }
  size_t len = (size_t)(end - addr);
  if (len == 0 || len >= sizeof host) return 0;
  memcpy(host, addr, len);
  host[len] = '\0';
  if (strcasecmp(host, "localhost") == 0) return 1;
  struct in_addr a4;
  if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  struct in6_addr a6;
  if (inet_pton(AF_INET6, host, &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return 1;
    return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
  }
  return 0;
}

/* ---------------------------------------------------------------- tokens */

void es_tokens_free(es_tokens_t *t) {
  if (!t) return;
  for (size_t i = 0; i < t->n; i++) {
    /* Tokens are secrets: do not leave them in freed memory. */
    memset(t->tokens[i], 0, t->lens[i]);
    free(t->tokens[i]);
  }
  free(t->tokens);
  free(t->lens);
  free(t);
}

size_t es_tokens_count(const es_tokens_t *t) {
  return t ? t->n : 0;
}

static int add_token(es_tokens_t *t, const char *s, size_t len) {
  char **nt = realloc(t->tokens, (t->n + 1) * sizeof *nt);
  if (!nt) return -1;
  t->tokens = nt;
  size_t *nl = realloc(t->lens, (t->n + 1) * sizeof *nl);
  if (!nl) return -1;
  t->lens = nl;
  char *copy = malloc(len + 1);
  if (!copy) return -1;
  memcpy(copy, s, len);
  copy[len] = '\0';
  t->tokens[t->n] = copy;
  t->lens[t->n] = len;
  t->n++;
  return 0;
}

int es_tokens_load(const char *path, es_tokens_t **out, char *errbuf, size_t errlen) {
  es_tokens_t *t = calloc(1, sizeof *t);
  char *line = NULL;
  size_t cap = 0;
  long lineno = 0;
  FILE *f = NULL;
  if (!t) {
    snprintf(errbuf, errlen, "out of memory");
    goto fail;
  }
  f = fopen(path, "r");
  if (!f) {
    snprintf(errbuf, errlen, "cannot read the auth tokens file %s: %s", path, strerror(errno));
    goto fail;
  }
  ssize_t n;
  while ((n = getline(&line, &cap, f)) >= 0) {
    lineno++;
    char *s = line, *e = line + n;
    while (s < e && isspace((unsigned char)*s)) s++;
    while (e > s && isspace((unsigned char)e[-1])) e--;
    if (s == e || *s == '#') continue;
    size_t len = (size_t)(e - s);
    if (len > MAX_TOKEN_BYTES) {
      snprintf(errbuf, errlen, "auth tokens file %s, line %ld: token longer than %d bytes", path,
               lineno, MAX_TOKEN_BYTES);
      goto fail;
    }
    for (size_t i = 0; i < len; i++) {
      unsigned char ch = (unsigned char)s[i];
      if (ch < 0x21 || ch > 0x7e) {
        snprintf(errbuf, errlen,
                 "auth tokens file %s, line %ld: a token must be printable ASCII without blanks",
                 path, lineno);
        goto fail;
      }
    }
    if (add_token(t, s, len) != 0) {
      snprintf(errbuf, errlen, "out of memory");
      goto fail;
    }
  }
  if (ferror(f)) {
    snprintf(errbuf, errlen, "cannot read the auth tokens file %s: %s", path, strerror(errno));
    goto fail;
  }
  if (t->n == 0) {
    snprintf(errbuf, errlen, "the auth tokens file %s holds no token", path);
    goto fail;
  }
  if (line) memset(line, 0, cap);
  free(line);
  fclose(f);
  *out = t;
  return 0;

fail:
  if (line) memset(line, 0, cap);
  free(line);
  if (f) fclose(f);
  es_tokens_free(t);
  return -1;
}

/* 1 when guess equals token; the loop runs over the whole token whatever the guess. */
static int equal_const_time(const unsigned char *guess, size_t glen, const unsigned char *token,
                            size_t tlen) {
  unsigned diff = (unsigned)(glen != tlen);
  for (size_t i = 0; i < tlen; i++) diff |= (unsigned)(token[i] ^ (i < glen ? guess[i] : 0u));
  return diff == 0;
}

int es_tokens_check_metadata(const es_tokens_t *t, const grpc_metadata_array *md) {
  static const char scheme[] = "Bearer ";
  const size_t slen = sizeof scheme - 1;
  for (size_t i = 0; i < md->count; i++) {
    const grpc_slice *k = &md->metadata[i].key;
    if (GRPC_SLICE_LENGTH(*k) != 13 || memcmp(GRPC_SLICE_START_PTR(*k), "authorization", 13) != 0)
      continue;
    const unsigned char *v = GRPC_SLICE_START_PTR(md->metadata[i].value);
    size_t vlen = GRPC_SLICE_LENGTH(md->metadata[i].value);
    if (vlen <= slen || strncasecmp((const char *)v, scheme, slen) != 0) return 0;
    v += slen;
    vlen -= slen;
    int match = 0;
    for (size_t j = 0; j < t->n; j++)
      match |= equal_const_time(v, vlen, (const unsigned char *)t->tokens[j], t->lens[j]);
    return match;
  }
  return 0;
}

/* ---------------------------------------------------------------- TLS */

/* Reads a PEM file that must hold a block whose label contains `what`. */
static char *read_pem(const char *flag, const char *path, const char *what, char *errbuf,
                      size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(errbuf, errlen, "%s %s: cannot read: %s", flag, path, strerror(errno));
    return NULL;
  }
  char *buf = malloc(MAX_PEM_BYTES + 1);
  size_t n = buf ? fread(buf, 1, MAX_PEM_BYTES + 1, f) : 0;
  int rerr = ferror(f);
  fclose(f);
  if (!buf) {
    snprintf(errbuf, errlen, "out of memory");
    return NULL;
  }
  if (rerr) {
    snprintf(errbuf, errlen, "%s %s: cannot read", flag, path);
    free(buf);
    return NULL;
  }
  if (n > MAX_PEM_BYTES) {
    snprintf(errbuf, errlen, "%s %s: larger than %u bytes", flag, path, MAX_PEM_BYTES);
    free(buf);
    return NULL;
  }
  buf[n] = '\0';
  const char *begin = strstr(buf, "-----BEGIN ");
  const char *label_end = begin ? strstr(begin + 11, "-----") : NULL;
  int found = 0;
  while (begin && label_end) {
    if (memmem(begin, (size_t)(label_end - begin), what, strlen(what))) {
      found = 1;
      break;
    }
    begin = strstr(label_end + 5, "-----BEGIN ");
    label_end = begin ? strstr(begin + 11, "-----") : NULL;
  }
  if (!found || strlen(buf) != n) {
    snprintf(errbuf, errlen, "%s %s: not a PEM file with a %s", flag, path, what);
    free(buf);
    return NULL;
  }
  return buf;
}

static void free_secret(char *s) {
  if (!s) return;
  memset(s, 0, strlen(s));
  free(s);
}

int es_server_credentials(const es_config_t *cfg, grpc_server_credentials **out, char *errbuf,
                          size_t errlen) {
  if (cfg->tls_cert[0] == '\0') {
    *out = grpc_insecure_server_credentials_create();
    return 0;
  }
  char *cert = NULL, *key = NULL, *ca = NULL;
  cert = read_pem("--tls-cert", cfg->tls_cert, "CERTIFICATE", errbuf, errlen);
  if (!cert) goto fail;
  key = read_pem("--tls-key", cfg->tls_key, "PRIVATE KEY", errbuf, errlen);
  if (!key) goto fail;
  if (cfg->tls_client_ca[0]) {
    ca = read_pem("--tls-client-ca", cfg->tls_client_ca, "CERTIFICATE", errbuf, errlen);
    if (!ca) goto fail;
  }
  grpc_ssl_pem_key_cert_pair pair = {key, cert};
  /* gRPC copies the PEM strings. */
  *out = grpc_ssl_server_credentials_create_ex(
      ca, &pair, 1,
      ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
         : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
      NULL);
  free(cert);
  free_secret(key);
  free(ca);
  if (!*out) {
    snprintf(errbuf, errlen, "cannot create TLS credentials from %s and %s", cfg->tls_cert,
             cfg->tls_key);
    return -1;
  }
  return 0;

fail:
  free(cert);
  free_secret(key);
  free(ca);
  return -1;
}
