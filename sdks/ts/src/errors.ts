// Typed errors: every failed call rejects with an EventStoreError subclass that
// carries the gRPC status code, the server's message and the trailing metadata.
import { Metadata, status } from "@grpc/grpc-js";
import { ExpectedVersion } from "./expected";

/** The gRPC status codes (re-exported from @grpc/grpc-js). */
export { status as GrpcStatus } from "@grpc/grpc-js";

export interface EventStoreErrorOptions {
  /** The server's status message. */
  details?: string | undefined;
  /** Trailing metadata of the failed call, when there was a call. */
  metadata?: Metadata | undefined;
  /** The underlying error (usually a @grpc/grpc-js ServiceError). */
  cause?: unknown;
}

/** Base class of every error the client raises for a failed call. */
export class EventStoreError extends Error {
  /** The gRPC status code, e.g. `GrpcStatus.ABORTED` (10). */
  readonly code: status;
  /** The server's status message (without the "10 ABORTED: " prefix). */
  readonly details: string;
  /** Trailing metadata of the call, if any. */
  readonly metadata: Metadata | undefined;
  /**
   * The 0-based index of the append at fault in a failed `appendMany` (or conditional `append`),
   * from the trailing metadata `es-append-index`; undefined when no single append is at fault
   * (the request-wide condition failed) and for other calls.
   */
  readonly appendIndex: number | undefined;

  constructor(message: string, code: status, options: EventStoreErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details ?? message;
    this.metadata = options.metadata;
    const index = decimalTrailer(options.metadata, "es-append-index");
    this.appendIndex = index === undefined ? undefined : Number(index);
  }

  /** The status code's name, e.g. "ABORTED". */
  get codeName(): string {
    return status[this.code] ?? String(this.code);
  }
}

/**
 * ABORTED: the expected-version check of an append failed; nothing was written.
 * `actual` comes from the trailing metadata `es-actual-version` (0n = the stream has no events).
 */
export class WrongExpectedVersionError extends EventStoreError {
  constructor(
    message: string,
    /** The stream that was appended to. */
    readonly stream: string,
    /** The expectation the append was made with. */
    readonly expected: ExpectedVersion | undefined,
    /** The stream's last version when the check failed (undefined if the server did not say). */
    readonly actual: bigint | undefined,
    options: EventStoreErrorOptions = {},
  ) {
    super(message, status.ABORTED, options);
  }
}

/**
 * ABORTED: an event matching the append's condition was committed after its `after` position;
 * nothing was written. Read again (from `after + 1`), decide again, and retry.
 */
export class AppendConditionFailedError extends EventStoreError {
  constructor(
    message: string,
    /** The global position of the first matching event after `after` (trailer `es-condition-position`). */
    readonly position: bigint,
    options: EventStoreErrorOptions = {},
  ) {
    super(message, status.ABORTED, options);
  }
}

/**
 * UNIMPLEMENTED: the server (or its storage backend) does not offer what the call needs, e.g.
 * `appendMany` or a conditional append on a server without tags and conditions. Nothing was written.
 */
export class UnimplementedError extends EventStoreError {
  constructor(message: string, options: EventStoreErrorOptions = {}) {
    super(message, status.UNIMPLEMENTED, options);
  }
}

/** NOT_FOUND: the stream has no events (a stream exists from its first event on). */
export class StreamNotFoundError extends EventStoreError {
  constructor(
    message: string,
    /** The stream that was read. */
    readonly stream: string,
    options: EventStoreErrorOptions = {},
  ) {
    super(message, status.NOT_FOUND, options);
  }
}

/** ALREADY_EXISTS: an event id was reused outside an idempotent retry of the same batch. */
export class AlreadyExistsError extends EventStoreError {
  constructor(
    message: string,
    /** The first reused event id, as named by the server (undefined if it could not be parsed). */
    readonly eventId: string | undefined,
    options: EventStoreErrorOptions = {},
  ) {
    super(message, status.ALREADY_EXISTS, options);
  }
}

/** INVALID_ARGUMENT: the request broke a rule or a limit; the message names the field. */
export class InvalidArgumentError extends EventStoreError {
  constructor(message: string, options: EventStoreErrorOptions = {}) {
    super(message, status.INVALID_ARGUMENT, options);
  }
}

/** FAILED_PRECONDITION: the append's stream_type differs from the stream's. */
export class StreamTypeMismatchError extends EventStoreError {
  constructor(
    message: string,
    /** The stream that was appended to. */
    readonly stream: string,
    /** The stream_type the append gave. */
    readonly streamType: string,
    options: EventStoreErrorOptions = {},
  ) {
    super(message, status.FAILED_PRECONDITION, options);
  }
}

/** UNAVAILABLE: the server cannot be reached or is shutting down; the call may be retried. */
export class UnavailableError extends EventStoreError {
  constructor(message: string, options: EventStoreErrorOptions = {}) {
    super(message, status.UNAVAILABLE, options);
  }
}

/** UNAUTHENTICATED: missing or wrong credentials (bearer token). */
export class UnauthenticatedError extends EventStoreError {
  constructor(message: string, options: EventStoreErrorOptions = {}) {
    super(message, status.UNAUTHENTICATED, options);
  }
}

/** PERMISSION_DENIED: the credentials do not allow this call. */
export class PermissionDeniedError extends EventStoreError {
  constructor(message: string, options: EventStoreErrorOptions = {}) {
    super(message, status.PERMISSION_DENIED, options);
  }
}

/** DEADLINE_EXCEEDED: the call's deadline passed before the server answered. */
export class DeadlineExceededError extends EventStoreError {
  constructor(message: string, options: EventStoreErrorOptions = {}) {
    super(message, status.DEADLINE_EXCEEDED, options);
  }
}

/** RESOURCE_EXHAUSTED: a request or message exceeded a size limit. */
export class ResourceExhaustedError extends EventStoreError {
  constructor(message: string, options: EventStoreErrorOptions = {}) {
    super(message, status.RESOURCE_EXHAUSTED, options);
  }
}

/** CANCELLED: the call was cancelled by the client (AbortSignal, close()). */
export class CancelledError extends EventStoreError {
  constructor(message: string, options: EventStoreErrorOptions = {}) {
    super(message, status.CANCELLED, options);
  }
}

/** What the client knows about a call, to give errors their fields. */
export interface CallContext {
  stream?: string | undefined;
  expected?: ExpectedVersion | undefined;
  streamType?: string | undefined;
  /** AppendMany: the context of each append; `es-append-index` picks the one at fault. */
  appends?: readonly CallContext[] | undefined;
}

interface ServiceErrorLike {
  code: number;
  details?: string;
  message?: string;
  metadata?: Metadata;
}

function isServiceErrorLike(err: unknown): err is ServiceErrorLike {
  return typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "number";
}

const UUID_RE = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;

/** Parses a decimal ASCII trailer such as `es-actual-version`. */
function decimalTrailer(metadata: Metadata | undefined, key: string): bigint | undefined {
  const values = metadata?.get(key) ?? [];
  for (const v of values) {
    const text = typeof v === "string" ? v : v.toString("utf8");
    if (/^[0-9]+$/.test(text.trim())) return BigInt(text.trim());
  }
  return undefined;
}

/** Parses the trailer `es-actual-version` (decimal ASCII). */
export function actualVersionFromMetadata(metadata: Metadata | undefined): bigint | undefined {
  return decimalTrailer(metadata, "es-actual-version");
}

/** Turns a @grpc/grpc-js error (or anything thrown by a call) into a typed EventStoreError. */
export function toEventStoreError(err: unknown, ctx: CallContext = {}): EventStoreError {
  if (err instanceof EventStoreError) return err;
  if (!isServiceErrorLike(err)) {
    const message = err instanceof Error ? err.message : String(err);
    return new EventStoreError(message, status.UNKNOWN, { cause: err });
  }
  const code = err.code as status;
  const details = err.details ?? err.message ?? "";
  const options: EventStoreErrorOptions = { details, metadata: err.metadata, cause: err };
  const message = `${status[code] ?? code}: ${details}`;
  if (ctx.appends !== undefined) {
    const index = decimalTrailer(err.metadata, "es-append-index");
    ctx = (index === undefined ? undefined : ctx.appends[Number(index)]) ?? {};
  }
  switch (code) {
    case status.ABORTED: {
      const position = decimalTrailer(err.metadata, "es-condition-position");
      if (position !== undefined) return new AppendConditionFailedError(message, position, options);
      return new WrongExpectedVersionError(
        message,
        ctx.stream ?? "",
        ctx.expected,
        actualVersionFromMetadata(err.metadata),
        options,
      );
    }
    case status.NOT_FOUND:
      return new StreamNotFoundError(message, ctx.stream ?? "", options);
    case status.ALREADY_EXISTS:
      return new AlreadyExistsError(message, UUID_RE.exec(details)?.[0], options);
    case status.INVALID_ARGUMENT:
      return new InvalidArgumentError(message, options);
    case status.FAILED_PRECONDITION:
      return new StreamTypeMismatchError(message, ctx.stream ?? "", ctx.streamType ?? "", options);
    case status.UNAVAILABLE:
      return new UnavailableError(message, options);
    case status.UNAUTHENTICATED:
      return new UnauthenticatedError(message, options);
    case status.PERMISSION_DENIED:
      return new PermissionDeniedError(message, options);
    case status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(message, options);
    case status.RESOURCE_EXHAUSTED:
      return new ResourceExhaustedError(message, options);
    case status.CANCELLED:
      return new CancelledError(message, options);
    case status.UNIMPLEMENTED:
      return new UnimplementedError(message, options);
    default:
      return new EventStoreError(message, code, options);
  }
}
