/*
 * fuzz_validate: the text rules of core/validate.c on raw bytes, each checked
 * against an independent reference written from the definitions:
 *   - es_utf8_valid: Unicode's well-formed UTF-8 (table 3-7): no overlongs,
 *     no surrogates, nothing above U+10FFFF, no truncated sequence;
 *   - es_has_control_chars (on valid UTF-8): any code point in U+0000-U+001F
 *     or U+007F-U+009F;
 *   - es_uuid_parse: exactly 36 bytes, lowercase hex, dashes at 8/13/18/23;
 *     when it parses, es_uuid_format must give the same text back, and
 *     formatting any 16 bytes must parse back to them.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "es/validate.h"
#include "fuzz_common.h"

/* Decodes one code point at s[i]; returns its length or 0 if ill-formed. */
static size_t ref_decode(const unsigned char *s, size_t len, size_t i, unsigned long *cp) {
  unsigned c = s[i];
  size_t n;
  unsigned long v, min;
  if (c < 0x80) {
    *cp = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    n = 2, v = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, v = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (len - i < n) return 0;
  for (size_t k = 1; k < n; k++) {
    if ((s[i + k] & 0xC0) != 0x80) return 0;
    v = (v << 6) | (s[i + k] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return n;
}

static bool ref_utf8_valid(const unsigned char *s, size_t len, bool *has_ctl) {
  *has_ctl = false;
  for (size_t i = 0; i < len;) {
    unsigned long cp;
    size_t n = ref_decode(s, len, i, &cp);
    if (!n) return false;
    if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F)) *has_ctl = true;
    i += n;
  }
  return true;
}

static bool ref_uuid_ok(const uint8_t *s, size_t len) {
  if (len != ES_UUID_STR_LEN) return false;
  for (size_t i = 0; i < len; i++) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return false;
  }
  return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* An exact-size heap copy, so that ASan sees any read past len (zeroed:
   * gcc cannot tell that nothing is read when size is 0). */
  char *s = calloc(size ? size : 1, 1);
  if (!s) return 0;
  if (size) memcpy(s, data, size);

  bool ref_ctl;
  bool valid = es_utf8_valid(s, size);
  FZ_CHECK(valid == ref_utf8_valid(data, size, &ref_ctl));
  if (valid) FZ_CHECK(es_has_control_chars(s, size) == ref_ctl);
  free(s);

  /* es_uuid_parse takes a C string. */
  char *z = malloc(size + 1);
  if (!z) return 0;
  memcpy(z, data, size);
  z[size] = '\0';
  uint8_t id[ES_UUID_LEN];
  size_t zlen = strlen(z);
  int rc = es_uuid_parse(z, id);
  FZ_CHECK((rc == 0) == ref_uuid_ok((const uint8_t *)z, zlen));
  if (rc == 0) {
    char back[ES_UUID_STR_LEN + 1];
    es_uuid_format(id, back);
    FZ_CHECK(strcmp(back, z) == 0);
  }
  free(z);

  if (size >= ES_UUID_LEN) {
    char text[ES_UUID_STR_LEN + 1];
    uint8_t again[ES_UUID_LEN];
    es_uuid_format(data, text);
    FZ_CHECK(strlen(text) == ES_UUID_STR_LEN);
    FZ_CHECK(es_uuid_parse(text, again) == 0 && memcmp(again, data, ES_UUID_LEN) == 0);
  }
  return 0;
}
