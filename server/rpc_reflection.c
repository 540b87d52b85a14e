/*
 * grpc.reflection.v1alpha.ServerReflection, so that grpcurl and other stock
 * tools work without the .proto. The C core has no reflection service: the
 * FileDescriptorProto bytes of each served file are embedded at build time
 * (//proto:descriptors) and served from here.
 *
 * The call is bidirectional: receive a request, send its answer, receive the
 * next, until the client half-closes. Every step is cheap, so it runs on the
 * completion-queue thread. grpc.reflection.v1 has the same messages on the
 * wire as v1alpha, so both services share this code.
 */
#include <string.h>

#include "descriptors.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "log.h"
#include "server_int.h"

typedef struct served_file {
  const char *filename;
  const char *package_prefix; /* symbols of this file start with it */
  const unsigned char *set;   /* FileDescriptorSet with this one file */
  const unsigned long *set_len;
} served_file_t;

static const served_file_t FILES[] = {
    {"eventstore/v1/eventstore.proto", "eventstore.v1.", es_descriptor_eventstore,
     &es_descriptor_eventstore_len},
    {"grpc/health/v1/health.proto", "grpc.health.v1.", es_descriptor_health,
     &es_descriptor_health_len},
    {"grpc/reflection/v1alpha/reflection.proto", "grpc.reflection.v1alpha.",
     es_descriptor_reflection, &es_descriptor_reflection_len},
    {"grpc/reflection/v1/reflection.proto", "grpc.reflection.v1.", es_descriptor_reflection_v1,
     &es_descriptor_reflection_v1_len},
};
#define N_FILES (sizeof FILES / sizeof FILES[0])

static const char *const SERVICES[] = {
    "eventstore.v1.EventStore",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
};
#define N_SERVICES (sizeof SERVICES / sizeof SERVICES[0])

/* The FileDescriptorProto inside a one-file FileDescriptorSet: field 1, wire
 * type 2, a varint length, then the bytes. */
static int file_proto(const served_file_t *f, ProtobufCBinaryData *out) {
  const unsigned char *p = f->set;
  unsigned long n = *f->set_len;
  if (n < 2 || p[0] != 0x0a) return -1;
  uint64_t len = 0;
  unsigned long i = 1;
  for (int shift = 0; i < n && shift < 64; shift += 7) {
    len |= (uint64_t)(p[i] & 0x7f) << shift;
    if (!(p[i++] & 0x80)) break;
  }
  if (len > n - i) return -1;
  out->data = (uint8_t *)(p + i);
  out->len = (size_t)len;
  return 0;
}

static const served_file_t *find_by_name(const char *name) {
  for (size_t i = 0; i < N_FILES; i++)
    if (strcmp(FILES[i].filename, name) == 0) return &FILES[i];
  return NULL;
}

static const served_file_t *find_by_symbol(const char *symbol) {
  for (size_t i = 0; i < N_FILES; i++) {
    size_t n = strlen(FILES[i].package_prefix);
    if (strncmp(symbol, FILES[i].package_prefix, n) == 0 && symbol[n] != '\0') return &FILES[i];
  }
  return NULL;
}

static grpc_byte_buffer *answer(const Grpc__Reflection__V1alpha__ServerReflectionRequest *req) {
  Grpc__Reflection__V1alpha__ServerReflectionResponse r =
      GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__FileDescriptorResponse fdr =
      GRPC__REFLECTION__V1ALPHA__FILE_DESCRIPTOR_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__ListServiceResponse lsr =
      GRPC__REFLECTION__V1ALPHA__LIST_SERVICE_RESPONSE__INIT;
  Grpc__Reflection__V1alpha__ServiceResponse svc[N_SERVICES];
  Grpc__Reflection__V1alpha__ServiceResponse *svcp[N_SERVICES];
  Grpc__Reflection__V1alpha__ErrorResponse er = GRPC__REFLECTION__V1ALPHA__ERROR_RESPONSE__INIT;
  ProtobufCBinaryData file;

  /* Echo the request without its unknown fields: protobuf-c keeps fields it
   * does not know (even a malformed field number 0) and would re-pack them into
   * bytes the client cannot decode. */
  Grpc__Reflection__V1alpha__ServerReflectionRequest echo = *req;
  echo.base.n_unknown_fields = 0;
  echo.base.unknown_fields = NULL;
  r.valid_host = req->host;
  r.original_request = &echo;
  const served_file_t *f = NULL;
  switch (req->message_request_case) {
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
      for (size_t i = 0; i < N_SERVICES; i++) {
        grpc__reflection__v1alpha__service_response__init(&svc[i]);
        svc[i].name = (char *)SERVICES[i];
        svcp[i] = &svc[i];
      }
      lsr.service = svcp;
      lsr.n_service = N_SERVICES;
      r.message_response_case =
          GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
      r.list_services_response = &lsr;
      return es_pack(&r.base);
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
      f = find_by_name(req->file_by_filename);
      break;
    case GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
      f = find_by_symbol(req->file_containing_symbol);
      break;
    default:
      break;
  }
  if (f && file_proto(f, &file) == 0) {
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
