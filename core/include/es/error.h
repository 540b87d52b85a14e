/*
 * The one error space of the event store.
 *
 * Every function of core/ and of the backends returns an int: ES_OK (0) on
 * success or one of the negative codes below. The list is an X-macro so that
 * the enum and es_strerror() can never drift apart. Where a caller needs more
 * than a code (which field, which limit, which id, the stream's actual version),
 * the function also fills an es_err_t. Only server/ maps these codes to gRPC
 * status codes.
 */
#ifndef ES_ERROR_H
#define ES_ERROR_H

#include <stdarg.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, description) */
#define ES_ERRNO_MAP(X)                                               \
  X(EINVAL, -1, "invalid argument")                                   \
  X(ETOOBIG, -2, "request or event larger than the configured limit") \
  X(EVERSION, -3, "wrong expected version")                           \
  X(ENOTFOUND, -4, "stream not found")                                \
  X(EEXIST, -5, "event id already exists")                            \
  X(ETYPE, -6, "stream type mismatch")                                \
  X(EUNAVAIL, -7, "storage unavailable")                              \
  X(ENOMEM, -8, "out of memory")                                      \
  X(EAGAIN, -9, "no data yet; wait for the log to grow")              \
  X(ECANCELLED, -10, "cancelled")                                     \
  X(EINTERNAL, -11, "internal error")                                 \
  X(ENOSPACE, -12, "storage full")                                    \
  X(ECONDITION, -13, "append condition failed")                       \
  X(EUNSUPPORTED, -14, "not supported by this backend")

typedef enum es_status {
  ES_OK = 0,
#define ES_ERRNO_ENUM(name, value, text) ES_##name = (value),
  ES_ERRNO_MAP(ES_ERRNO_ENUM)
#undef ES_ERRNO_ENUM
} es_status;

/* A static description of code (never NULL, even for unknown codes). */
const char *es_strerror(int code);

/* The symbolic name of code, e.g. "ES_EVERSION" (never NULL). */
const char *es_errname(int code);

#define ES_ERR_MSG_MAX 320

/* Details of a failure, filled by the function that failed. */
typedef struct es_err {
  int code;                    /* the same value the function returned */
  int has_actual_version;      /* 1 when actual_version is meaningful (EVERSION) */
  uint64_t actual_version;     /* the stream's last version (0 = no stream) */
  char msg[ES_ERR_MSG_MAX];    /* human-readable: names the field, limit or id */
  int has_condition_position;  /* 1 when condition_position is meaningful (ECONDITION) */
  uint64_t condition_position; /* the first event after `after` matching the condition */
  int has_append_index;        /* 1 when the failure is one append's of an AppendMany */
  uint64_t append_index;       /* that append, 0-based */
} es_err_t;

/* Clears err (code ES_OK, empty message). err may be NULL. */
void es_err_clear(es_err_t *err);

/* Sets err->code and a printf-formatted message and returns code, so that a
 * failing path reads `return es_err_set(err, ES_EINVAL, "...", ...);`.
 * err may be NULL (then only code is returned). */
int es_err_set(es_err_t *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#ifdef __clang_analyzer__
/* The static analyzer (clang-tidy, tools/lint.sh) sees one file at a time and
 * so cannot know that es_err_set returns code; without this it follows
 * `return es_err_set(...)` error paths as if they returned ES_OK. Only the
 * analyzer sees this macro; compiled code calls the function. */
#define es_err_set(err, code, ...) (es_err_set((err), (code), __VA_ARGS__), (code))
#endif

#ifdef __cplusplus
}
#endif

#endif /* ES_ERROR_H */
