/*
 * The error space: names and descriptions of the es_status codes, and the
 * es_err_t detail record.
 *
 * Both lookups are generated from ES_ERRNO_MAP (error.h), so adding a code
 * there is the only edit needed. Every lookup returns a static string, also
 * for codes outside the list, so that a log line can never crash on a bad
 * value. es_err_set() truncates long messages at ES_ERR_MSG_MAX - 1 bytes:
 * details are for people, and a cut message beats a failed allocation.
 *
 * Nothing here allocates or keeps state: every function is thread-safe.
 */
#include "es/error.h"

#include <stdio.h>
#include <string.h>

const char *es_strerror(int code) {
  switch (code) {
    case ES_OK:
      return "success";
#define ES_ERRNO_TEXT(name, value, text) \
  case ES_##name:                        \
    return text;
      ES_ERRNO_MAP(ES_ERRNO_TEXT)
#undef ES_ERRNO_TEXT
    default:
      return "unknown error";
  }
}

const char *es_errname(int code) {
  switch (code) {
    case ES_OK:
      return "ES_OK";
#define ES_ERRNO_NAME(name, value, text) \
  case ES_##name:                        \
    return "ES_" #name;
      ES_ERRNO_MAP(ES_ERRNO_NAME)
#undef ES_ERRNO_NAME
    default:
      return "ES_UNKNOWN";
  }
}

void es_err_clear(es_err_t *err) {
  if (err == NULL) return;
  err->code = ES_OK;
  err->has_actual_version = 0;
  err->actual_version = 0;
  err->msg[0] = '\0';
  err->has_condition_position = 0;
  err->condition_position = 0;
  err->has_append_index = 0;
  err->append_index = 0;
}

/* has_actual_version / actual_version are left alone: a backend may fill them
 * before or after formatting the message, and only ES_EVERSION reads them.
 * The name is in parentheses so that the analyzer-only macro of the same name
 * (error.h) does not expand here. */
int(es_err_set)(es_err_t *err, int code, const char *fmt, ...) {
  if (err == NULL) return code;
  err->code = code;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  if (n < 0) err->msg[0] = '\0'; /* an encoding error: better empty than garbage */
  return code;
}
