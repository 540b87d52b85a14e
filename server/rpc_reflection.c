/*
 * grpc.reflection.v1alpha.ServerReflection, so that grpcurl and other stock
 * tools work without the .proto. The C core has no reflection service: the
 * FileDescriptorProto bytes of each served file are embedded at build time
 * (//proto:descriptors) and looked up by reflection_files.c, which answers a
 * symbol only when a served file really defines it (NOT_FOUND otherwise, as
 * the reference service does).
 *
 * The call is bidirectional: receive a request, send its answer, receive the
 * next, until the client half-closes. Every step is cheap, so it runs on the
 * completion-queue thread. grpc.reflection.v1 has the same messages on the
 * wire as v1alpha, so both services share this code.
 */
#include <string.h>

#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "log.h"
#include "reflection_files.h"
#include "server_int.h"

static grpc_byte_buffer *answer(const Grpc__Reflection__V1alpha__ServerReflectionRequest *req) {
  Grpc__Reflection__V1alpha__ServerReflectionResponse r =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__FileDescriptorResponse fdr =
      GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__ListServiceResponse lsr =
      GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__ServiceResponse svc[ES_REFL_N_SERVICES];
  Grpc__Reflection__V1alpha__ServiceResponse *svcp[ES_REFL_N_SERVICES];
  Grpc__Reflection__V1alpha__ErrorResponse er = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;

  /* Echo the request without its unknown fields: protobuf-c keeps fields it
   * does not know (even a malformed field number 0) and would re-pack them into
   * bytes the client cannot decode. */
  Grpc__Reflection__V1alpha__ServerReflectionRequest echo = *req;
  echo.base.n_unknown_fields = 0;
  echo.base.unknown_fields = NULL;
  r.valid_host = req->host;
  r.original_request = &echo;
  const es_refl_file_t *f = NULL;
  switch (req->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
      for (size_t i = 0; i < ES_REFL_N_SERVICES; i++) {
        grpc__reflection__v1alpha__service_response__init(&svc[i]);
        svc[i].name = (char *)es_refl_services[i];
        svcp[i] = &svc[i];
      }
      lsr.service = svcp;
      lsr.n_service = ES_REFL_N_SERVICES;
      r.message_response_case =
          GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
      r.list_services_response = &lsr;
      return es_pack(&r.base);
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
      f = es_refl_find_file(req->file_by_filename);
      break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
      f = es_refl_find_symbol(req->file_containing_symbol);
      break;
    default:
      break;
  }
  ProtobufCBinaryData file;
  const uint8_t *bytes;
  if (f && es_refl_file_proto(f, &bytes, &file.len) == 0) {
    file.data = (uint8_t *)bytes;
    fdr.file_descriptor_proto = &file;
    fdr.n_file_descriptor_proto = 1;
    r.message_response_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
    r.file_descriptor_response = &fdr;
    return es_pack(&r.base);
  }
  er.error_code =
      req->message_request_case ==
              GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST__NOT_SET
          ? GRPC_STATUS_INVALID_ARGUMENT
      : (req->message_request_case ==
             GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION ||
         req->message_request_case ==
             GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE)
          ? GRPC_STATUS_UNIMPLEMENTED
          : GRPC_STATUS_NOT_FOUND;
  er.error_message =
      (char *)(er.error_code == GRPC_STATUS_NOT_FOUND       ? "not found"
               : er.error_code == GRPC_STATUS_UNIMPLEMENTED ? "extensions are not supported"
                                                            : "empty request");
  r.message_response_case =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
  r.error_response = &er;
  return es_pack(&r.base);
}

static void on_recv(call_t *c, int ok);

static void start_recv(call_t *c) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->payload;
  c->t_recv = (op_tag_t){on_recv, c};
  if (grpc_call_start_batch(c->call, &op, 1, &c->t_recv, NULL) != GRPC_CALL_OK) {
    call_set_status(c, GRPC_STATUS_INTERNAL, "receive failed");
    call_finish_stream(c);
  }
}

static void on_sent(call_t *c, int ok) {
  if (!ok || call_is_done(c)) {
    call_set_status(c, atomic_load(&c->cancelled) ? GRPC_STATUS_CANCELLED : GRPC_STATUS_UNAVAILABLE,
                    "reflection stream ended");
    call_finish_stream(c);
    return;
  }
  start_recv(c);
}

static void on_recv(call_t *c, int ok) {
  if (!ok || !c->payload) { /* half-closed by the client (or gone) */
    call_set_status(c, GRPC_STATUS_OK, "");
    call_finish_stream(c);
    return;
  }
  Grpc__Reflection__V1alpha__ServerReflectionRequest *req =
      es_unpack(c, &grpc__reflection__v1alpha__server_reflection_request__descriptor, c->payload);
  grpc_byte_buffer_destroy(c->payload);
  c->payload = NULL;
  if (!req) {
    call_finish_stream(c);
    return;
  }
  grpc_byte_buffer *resp = answer(req);
  protobuf_c_message_free_unpacked(&req->base, NULL);
  call_send(c, resp, on_sent);
}

static void on_close(call_t *c, int ok) {
  if (c->close_cancelled || !ok) atomic_store(&c->cancelled, 1);
  call_unref(c);
}

void rpc_reflection_start(call_t *c) {
  call_start_close_watch(c, on_close);
  start_recv(c);
}
