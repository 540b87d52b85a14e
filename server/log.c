/*
 * Logging to stderr. The level is a relaxed atomic read on every call, so the
 * disabled path costs one load. A line is formatted into a stack buffer and
 * written with a single write(2): lines from different threads never mix.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int current_level = ES_LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

int es_log_parse_level(const char *name, es_log_level_t *out) {
  static const char *const names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++) {
    if (strcmp(name, names[i]) == 0) {
      *out = (es_log_level_t)i;
      return 0;
    }
  }
  return -1;
}

void es_log_set_level(es_log_level_t level) {
  atomic_store(&current_level, (int)level);
}

int es_log_enabled(es_log_level_t level) {
  return (int)level >= atomic_load_explicit(&current_level, memory_order_relaxed);
}

void es_log(es_log_level_t level, const char *fmt, ...) {
  if (!es_log_enabled(level)) return;
  char line[2048];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000, level_names[level]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}
