// @eventstore-c/client — TypeScript client of the eventstore gRPC server (eventstore.v1).
export {
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
  TlsOptions,
  TokenSource,
} from "./client";
export {
  AlreadyExistsError,
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
  WrongExpectedVersionError,
} from "./errors";
export { EventInput, JSON_CONTENT_TYPE, jsonEvent, JsonEventOptions, newEventId, parseJson, RecordedEvent } from "./events";
export { ExpectedVersion, ExpectedVersionName } from "./expected";
export { Filter } from "./filter";
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
