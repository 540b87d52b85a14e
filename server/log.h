/*
 * Logging: one line per event to stderr, "2026-11-26T05:00:00.123Z INFO msg".
 * Lines are written with one write(2) so concurrent threads never interleave.
 */
#ifndef ES_SERVER_LOG_H
#define ES_SERVER_LOG_H

typedef enum es_log_level {
  ES_LOG_DEBUG = 0,
  ES_LOG_INFO = 1,
  ES_LOG_WARN = 2,
  ES_LOG_ERROR = 3,
} es_log_level_t;

/* Returns 0 and sets *out for "debug", "info", "warn", "error"; -1 otherwise. */
int es_log_parse_level(const char *name, es_log_level_t *out);
void es_log_set_level(es_log_level_t level);
int es_log_enabled(es_log_level_t level);
void es_log(es_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define ES_LOG_DEBUG_F(...)                                              \
  do {                                                                   \
    if (es_log_enabled(ES_LOG_DEBUG)) es_log(ES_LOG_DEBUG, __VA_ARGS__); \
  } while (0)

#endif
