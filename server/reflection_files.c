/*
 * The served descriptor files and the lookups on them (see reflection_files.h).
 *
 * A symbol is looked up in the FileDescriptorProto bytes themselves, walked
 * with es_wire_next: no descriptor library, nothing parsed at start-up, no
 * table of names to keep in step with the .proto. A reflection client asks a
 * handful of questions per connection, so a walk of a few kilobytes per
 * question costs nothing worth caching.
 *
 * The rules are those of protobuf's DescriptorPool, which the reference
 * reflection service consults: every package component is a symbol; inside a
 * package, a file's top-level messages, enums, services and extensions; inside
 * a message, its fields, nested messages, enums, extensions and oneofs;
 * inside a service, its methods. Enum values are C++-scoped: they are named as
 * siblings of their enum, in the enum's enclosing scope. An enum, field,
 * oneof, extension or method has no named children.
 *
 * The embedded bytes are protoc's output, but the walk trusts no length: every
 * read is bounded by es_wire_next, and recursion goes one level per dotted
 * component of the symbol, so it is bounded by the symbol's length.
 */
#include "reflection_files.h"

#include <stdbool.h>
#include <string.h>

#include "descriptors.h"
#include "wire_check.h"

struct es_refl_file {
  const char *filename;
  const unsigned char *set;     /* a FileDescriptorSet holding this one file */
  const unsigned long *set_len; /* its length (//proto:descriptors) */
};

static const es_refl_file_t FILES[] = {
    {"eventstore/v1/eventstore.proto", es_descriptor_eventstore, &es_descriptor_eventstore_len},
    {"grpc/health/v1/health.proto", es_descriptor_health, &es_descriptor_health_len},
    {"grpc/reflection/v1alpha/reflection.proto", es_descriptor_reflection,
     &es_descriptor_reflection_len},
    {"grpc/reflection/v1/reflection.proto", es_descriptor_reflection_v1,
     &es_descriptor_reflection_v1_len},
};
#define N_FILES (sizeof FILES / sizeof FILES[0])

const char *const es_refl_services[] = {
    "eventstore.v1.EventStore",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
};

/* Field numbers of google/protobuf/descriptor.proto. */
enum {
  SET_FILE = 1,       /* FileDescriptorSet.file */
  NAME = 1,           /* the name of every descriptor below */
  FILE_PACKAGE = 2,   /* FileDescriptorProto */
  FILE_MESSAGE = 4,   /*   message_type */
  FILE_ENUM = 5,      /*   enum_type */
  FILE_SERVICE = 6,   /*   service */
  FILE_EXTENSION = 7, /*   extension */
  MSG_FIELD = 2,      /* DescriptorProto */
  MSG_NESTED = 3,     /*   nested_type */
  MSG_ENUM = 4,       /*   enum_type */
  MSG_EXTENSION = 6,  /*   extension */
  MSG_ONEOF = 8,      /*   oneof_decl */
  ENUM_VALUE = 2,     /* EnumDescriptorProto.value */
  SERVICE_METHOD = 2, /* ServiceDescriptorProto.method */
};

/* A byte range: a descriptor message, or a name inside one. */
typedef struct span {
  const uint8_t *p;
  size_t n;
} span_t;

/* The first length-delimited field `number` of message m, if any. */
static bool field_of(span_t m, uint64_t number, span_t *out) {
  const uint8_t *p = m.p, *end = m.p + m.n;
  es_wire_field_t f;
  while (es_wire_next(&p, end, &f) == 1)
    if (f.number == number && f.wire == 2) {
      *out = (span_t){f.data, f.len};
      return true;
    }
  return false;
}

/* Whether descriptor d (any *DescriptorProto) is named name[0..n). */
static bool named(span_t d, const char *name, size_t n) {
  span_t got;
  return n > 0 && field_of(d, NAME, &got) && got.n == n && memcmp(got.p, name, n) == 0;
}

/* Whether the children `number` of d include one named name[0..n). */
static bool has_child(span_t d, uint64_t number, const char *name, size_t n) {
  const uint8_t *p = d.p, *end = d.p + d.n;
  es_wire_field_t f;
  while (es_wire_next(&p, end, &f) == 1)
    if (f.number == number && f.wire == 2 && named((span_t){f.data, f.len}, name, n)) return true;
  return false;
}

/* Whether name[0..n), relative to scope (a FileDescriptorProto when is_file,
 * else a DescriptorProto), names something defined in it. */
static bool scope_defines(span_t scope, bool is_file, const char *name, size_t n) {
  const char *dot = memchr(name, '.', n);
  size_t head = dot ? (size_t)(dot - name) : n;
  const char *rest = dot ? dot + 1 : NULL;
  size_t rest_n = dot ? n - head - 1 : 0;
  const uint8_t *p = scope.p, *end = scope.p + scope.n;
  es_wire_field_t f;
  while (es_wire_next(&p, end, &f) == 1) {
    if (f.wire != 2) continue;
    span_t d = {f.data, f.len};
    if (f.number == (is_file ? FILE_MESSAGE : MSG_NESTED)) {
      if (named(d, name, head) && (!dot || scope_defines(d, false, rest, rest_n))) return true;
    } else if (f.number == (is_file ? FILE_ENUM : MSG_ENUM)) {
      /* The enum itself, or one of its values (siblings of the enum). */
      if (!dot && (named(d, name, head) || has_child(d, ENUM_VALUE, name, head))) return true;
    } else if (is_file && f.number == FILE_SERVICE) {
      if (named(d, name, head) &&
          (!dot || (!memchr(rest, '.', rest_n) && has_child(d, SERVICE_METHOD, rest, rest_n))))
        return true;
    } else if (is_file ? f.number == FILE_EXTENSION
                       : (f.number == MSG_FIELD || f.number == MSG_EXTENSION ||
                          f.number == MSG_ONEOF)) {
      if (!dot && named(d, name, head)) return true;
    }
  }
  return false;
}

/* Whether the file fdp (package pkg) defines symbol. */
static bool file_defines(span_t fdp, span_t pkg, const char *symbol) {
  size_t n = strlen(symbol);
  if (pkg.n) {
    /* The package and each of its leading components ("a", "a.b" of "a.b.c"). */
    if (n <= pkg.n && memcmp(pkg.p, symbol, n) == 0 && (n == pkg.n || pkg.p[n] == '.'))
      return n > 0;
    /* Anything else lives inside the package. */
    if (n <= pkg.n + 1 || memcmp(symbol, pkg.p, pkg.n) != 0 || symbol[pkg.n] != '.') return false;
    symbol += pkg.n + 1;
    n -= pkg.n + 1;
  }
  return scope_defines(fdp, true, symbol, n);
}

const es_refl_file_t *es_refl_find_file(const char *filename) {
  for (size_t i = 0; i < N_FILES; i++)
    if (strcmp(FILES[i].filename, filename) == 0) return &FILES[i];
  return NULL;
}

const es_refl_file_t *es_refl_find_symbol(const char *symbol) {
  for (size_t i = 0; i < N_FILES; i++) {
    const uint8_t *data;
    size_t len;
    if (es_refl_file_proto(&FILES[i], &data, &len) != 0) continue;
    span_t fdp = {data, len}, pkg = {NULL, 0};
    field_of(fdp, FILE_PACKAGE, &pkg);
    if (file_defines(fdp, pkg, symbol)) return &FILES[i];
  }
  return NULL;
}

const char *es_refl_file_name(const es_refl_file_t *f) {
  return f->filename;
}

int es_refl_file_proto(const es_refl_file_t *f, const uint8_t **data, size_t *len) {
  span_t file;
  if (!field_of((span_t){f->set, *f->set_len}, SET_FILE, &file)) return -1;
  *data = file.p;
  *len = file.n;
  return 0;
}
