/* Serialized FileDescriptorSet of each proto file the server serves through
 * grpc.reflection. Generated at build time by //proto:descriptors_c; each set
 * holds exactly one FileDescriptorProto (field 1). */
#ifndef ES_PROTO_DESCRIPTORS_H
#define ES_PROTO_DESCRIPTORS_H

#ifdef __cplusplus
extern "C" {
#endif

extern const unsigned char es_descriptor_eventstore[];
extern const unsigned long es_descriptor_eventstore_len;
extern const unsigned char es_descriptor_health[];
extern const unsigned long es_descriptor_health_len;
extern const unsigned char es_descriptor_reflection[];
extern const unsigned long es_descriptor_reflection_len;
extern const unsigned char es_descriptor_reflection_v1[];
extern const unsigned long es_descriptor_reflection_v1_len;

#ifdef __cplusplus
}
#endif

#endif
