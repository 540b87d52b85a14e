/*
 * What grpc.reflection serves, without gRPC: the embedded descriptor files,
 * the service names, and the two lookups a reflection request asks for (a file
 * by its name, the file that defines a symbol). rpc_reflection.c answers with
 * them; fuzz/fuzz_reflection.c runs the same lookups on hostile names.
 *
 * Everything here is static data: no allocation, no state, any thread.
 */
#ifndef ES_SERVER_REFLECTION_FILES_H
#define ES_SERVER_REFLECTION_FILES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct es_refl_file es_refl_file_t;

/* The services the server offers, by full name ("eventstore.v1.EventStore"),
 * in the order list_services answers them. (A count that disagrees with the
 * list in reflection_files.c does not compile.) */
#define ES_REFL_N_SERVICES 4
extern const char *const es_refl_services[ES_REFL_N_SERVICES];

/* The file named filename ("eventstore/v1/eventstore.proto"), or NULL. */
const es_refl_file_t *es_refl_find_file(const char *filename);

/* The file that defines symbol, a fully qualified name without a leading dot,
 * or NULL when no served file defines it. The same answer as protobuf's
 * DescriptorPool::FindFileContainingSymbol over the served files — what the
 * reference reflection service (grpc++) answers: packages and each of their
 * leading components ("eventstore", "eventstore.v1"), messages and nested
 * messages (map entries included), fields, oneofs, enums, services, methods,
 * extensions, and enum values in the scope that holds their enum
 * ("eventstore.v1.FORWARD", not "eventstore.v1.Direction.FORWARD"). */
const es_refl_file_t *es_refl_find_symbol(const char *symbol);

/* The file's name and its serialized FileDescriptorProto (*data, *len: static
 * bytes, never freed). Returns 0, or -1 if the embedded bytes are broken. */
const char *es_refl_file_name(const es_refl_file_t *f);
int es_refl_file_proto(const es_refl_file_t *f, const uint8_t **data, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
