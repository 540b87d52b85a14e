/*
 * fuzz_reflection: the bytes a reflection client sends. The server decodes a
 * ServerReflectionRequest with the NUL scan and protobuf-c, looks the name or
 * symbol up in the embedded descriptors, and echoes the decoded request back
 * inside its response (original_request), so hostile input is also
 * re-encoded. The answer itself is a static function of
 * server/rpc_reflection.c tied to gRPC buffers; this target runs the same
 * steps around it: unpack, the server's lookups (server/reflection_files.c,
 * linked: es_refl_find_file, es_refl_find_symbol, walking the real descriptor
 * bytes with the hostile name), and packing a response that carries the
 * request, which must decode again.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "reflection_files.h"

/* protobuf-c 1.4.1 accepts field number 0 when its key is spelled in two
 * bytes (80 00), keeps it as an unknown field, and packs it back as the
 * one-byte key 00, which it then refuses to decode. The server echoes such a
 * request in original_request, so its answer is undecodable (finding 1 in
 * README.md; the client sent an invalid message, the server is unharmed).
 * The round trip is checked only for requests without such a field. */
static int has_field_zero(const ProtobufCMessage *m) {
  if (!m) return 0;
  for (unsigned i = 0; i < m->n_unknown_fields; i++)
    if (m->unknown_fields[i].tag == 0) return 1;
  return 0;
}

/* A name the lookup accepts is a dotted name: no empty component. */
static int dotted_name(const char *s) {
  size_t n = strlen(s);
  return n > 0 && s[0] != '.' && s[n - 1] != '.' && !strstr(s, "..");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ProtobufCMessage *msg =
      fz_unpack(&grpc__reflection__v1alpha__server_reflection_request__descriptor, data, size);
  if (!msg) return 0;
  Grpc__Reflection__V1alpha__ServerReflectionRequest *req =
      (Grpc__Reflection__V1alpha__ServerReflectionRequest *)msg;

  Grpc__Reflection__V1alpha__ServerReflectionResponse r =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__ErrorResponse er = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
  r.valid_host = req->host;
  r.original_request = req;
  const es_refl_file_t *f = NULL;
  switch (req->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
      f = es_refl_find_file(req->file_by_filename);
      break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
      f = es_refl_find_symbol(req->file_containing_symbol);
      FZ_CHECK(!f || dotted_name(req->file_containing_symbol));
      break;
    default:
      break;
  }
  const uint8_t *fdp;
  size_t fdp_len;
  FZ_CHECK(!f || es_refl_file_proto(f, &fdp, &fdp_len) == 0);
  er.error_code = f ? 0 : 5;
  er.error_message = (char *)(f ? es_refl_file_name(f) : "not found");
  r.message_response_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
  r.error_response = &er;

  size_t len = protobuf_c_message_get_packed_size(&r.base);
  uint8_t *buf = malloc(len ? len : 1);
  FZ_CHECK(buf != NULL);
  FZ_CHECK(protobuf_c_message_pack(&r.base, buf) == len);
  ProtobufCMessage *back = protobuf_c_message_unpack(
      &grpc__reflection__v1alpha__server_reflection_response__descriptor, NULL, len, buf);
  FZ_CHECK(
      back != NULL || has_field_zero(&req->base) ||
      (req->message_request_case ==
           GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION &&
       has_field_zero(&req->file_containing_extension->base)));
  if (!back) goto done;
  const Grpc__Reflection__V1alpha__ServerReflectionResponse *rb =
      (const Grpc__Reflection__V1alpha__ServerReflectionResponse *)back;
  FZ_CHECK(rb->original_request != NULL);
  FZ_CHECK(rb->original_request->message_request_case == req->message_request_case);
  FZ_CHECK(strcmp(rb->valid_host, req->host) == 0);
  protobuf_c_message_free_unpacked(back, NULL);
done:
  free(buf);
  protobuf_c_message_free_unpacked(msg, NULL);
  return 0;
}
