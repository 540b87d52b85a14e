// @eventstore-c/client — TypeScript client of the eventstore gRPC server (eventstore.v1).
export {
  AppendManyOptions,
  AppendOptions,
  AppendResult,
  CallOptions,
  Direction,
  EventStoreClient,
  EventStoreClientOptions,
  ReadAllIterOptions,
  ReadAllOptions,
  ReadAllPage,
  ReadStreamIterOptions,
  ReadStreamOptions,
  ReadStreamPage,
  StreamAppend,
  TlsOptions,
  TokenSource,
} from "./client";
export {
  AlreadyExistsError,
  AppendConditionFailedError,
  CancelledError,
  DeadlineExceededError,
  EventStoreError,
  GrpcStatus,
  InvalidArgumentError,
  PermissionDeniedError,
  ResourceExhaustedError,
  StreamNotFoundError,
  StreamTypeMismatchError,
  UnauthenticatedError,
  UnavailableError,
  UnimplementedError,
  WrongExpectedVersionError,
} from "./errors";
export { EventInput, JSON_CONTENT_TYPE, jsonEvent, JsonEventOptions, newEventId, parseJson, RecordedEvent } from "./events";
export { ExpectedVersion, ExpectedVersionName } from "./expected";
export { Filter } from "./filter";
export { AppendCondition, Query, QueryItem } from "./query";
export {
  DEFAULT_MAX_BATCH,
  ReconnectInfo,
  RetryOptions,
  SubscribeOptions,
  Subscription,
  SubscriptionMessage,
} from "./subscription";
/** The generated messages and @grpc/grpc-js stubs (eventstore.v1), for advanced use. */
export * as proto from "./gen/eventstore/v1/eventstore";
