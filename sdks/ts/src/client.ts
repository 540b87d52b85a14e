// EventStoreClient: the idiomatic client over the generated @grpc/grpc-js stubs.
import * as grpc from "@grpc/grpc-js";
import { CallContext, CancelledError, toEventStoreError, UnavailableError } from "./errors";
import { EventInput, eventToProto, RecordedEvent } from "./events";
import { ExpectedVersion } from "./expected";
import { Filter, filterToProto } from "./filter";
import * as pb from "./gen/eventstore/v1/eventstore";
import { toUint32, toUint64 } from "./numbers";
import { AppendCondition, conditionToProto } from "./query";
import { RetryOptions, SubscribeOptions, Subscription } from "./subscription";

/** Reading direction. */
export type Direction = "forward" | "backward";

/** TLS settings. `tls: true` means TLS with the system's root certificates. */
export interface TlsOptions {
  /** PEM root certificate(s) to trust instead of the system's, e.g. your CA. */
  ca?: string | Buffer | undefined;
  /** PEM client certificate chain and key, for mutual TLS. */
  certChain?: string | Buffer | undefined;
  privateKey?: string | Buffer | undefined;
  /** Check the server certificate against this name instead of the address's host. */
  serverNameOverride?: string | undefined;
}

/** A bearer token, or a function that returns one for each call (for rotating tokens). */
export type TokenSource = string | (() => string | Promise<string>);

export interface EventStoreClientOptions {
  /** "host:port", e.g. "127.0.0.1:50051". */
  address: string;
  /** TLS (true, or a CA and more). Without it the connection is plaintext. */
  tls?: boolean | TlsOptions | undefined;
  /** Plaintext, said explicitly; the default when `tls` is not given. Conflicts with `tls`. */
  insecure?: boolean | undefined;
  /** Sent on every call as `authorization: Bearer <token>`. */
  token?: TokenSource | undefined;
  /** Deadline of every unary call (append, reads) unless a call gives its own. Default: none. */
  defaultDeadlineMs?: number | undefined;
  /** Extra @grpc/grpc-js channel options (they override the client's defaults). */
  channelOptions?: grpc.ChannelOptions | undefined;
  /** Default reconnect policy of subscriptions. */
  retry?: RetryOptions | undefined;
}

/** Per-call options of unary calls. */
export interface CallOptions {
  /** This call's deadline in milliseconds from now (overrides `defaultDeadlineMs`). */
  deadlineMs?: number | undefined;
  /** Cancels the call; it then rejects with CancelledError. */
  signal?: AbortSignal | undefined;
}

export interface AppendOptions extends CallOptions {
  /** The stream's type (aggregate kind); the first non-empty one sticks. */
  streamType?: string | undefined;
  /**
   * Fail (AppendConditionFailedError) if an event matching the condition's query was committed
   * after its `after` position. A conditional append is sent as an AppendMany of one append, so
   * that a server without conditions rejects it (UnimplementedError) instead of ignoring them.
   */
  condition?: AppendCondition | undefined;
}

/** One append of `appendMany`. */
export interface StreamAppend {
  stream: string;
  events: EventInput | readonly EventInput[];
  /** Checked as the earlier appends of the same request leave the stream. Default: any. */
  expected?: ExpectedVersion | undefined;
  /** The stream's type (aggregate kind); the first non-empty one sticks. */
  streamType?: string | undefined;
}

export interface AppendManyOptions extends CallOptions {
  /** Checked once for the whole request, against the log as it was before the request. */
  condition?: AppendCondition | undefined;
}

export interface AppendResult {
  firstStreamVersion: bigint;
  /** The stream's new last version: pass it to `ExpectedVersion.exact` for the next append. */
  lastStreamVersion: bigint;
  firstGlobalPosition: bigint;
  lastGlobalPosition: bigint;
  /** Server clock at commit, Unix ms (the original commit's for a duplicate). */
  recordedAtUnixMs: bigint;
  /** True when this exact batch was already committed: nothing was written, the original result is returned. */
  duplicate: boolean;
}

export interface ReadStreamOptions extends CallOptions {
  /** Inclusive start. Forward: 0 or 1 = first event. Backward: 0 = last event. Default 0. */
  fromVersion?: bigint | number | undefined;
  /** Page size; 0 or omitted = server default (100); capped by the server. */
  maxCount?: number | undefined;
  /** Default "forward". */
  direction?: Direction | undefined;
}

export interface ReadStreamPage {
  /** The page, in reading order. */
  events: RecordedEvent[];
  /** Pass as `fromVersion` for the next page. */
  nextVersion: bigint;
  /** No more events in this direction. */
  isEnd: boolean;
  /** The stream's last version when read. */
  streamVersion: bigint;
}

export interface ReadStreamIterOptions extends Omit<ReadStreamOptions, "maxCount"> {
  /** Events per page (request); default: server default (100). */
  pageSize?: number | undefined;
}

export interface ReadAllOptions extends CallOptions {
  /** Inclusive start. Forward: 0 or 1 = start of the log. Backward: 0 = end. Default 0. */
  fromPosition?: bigint | number | undefined;
  /** Page size; 0 or omitted = server default (100). */
  maxCount?: number | undefined;
  /** Default "forward". */
  direction?: Direction | undefined;
  filter?: Filter | undefined;
}

export interface ReadAllPage {
  /** The matching events of the page, in reading order (may be empty with isEnd false when filtered). */
  events: RecordedEvent[];
  /** Pass as `fromPosition` for the next page. */
  nextPosition: bigint;
  /** The log has no more events in this direction. */
  isEnd: boolean;
  /** The last committed global position when read. */
  headPosition: bigint;
}

export interface ReadAllIterOptions extends Omit<ReadAllOptions, "maxCount"> {
  /** Events per page (request); default: server default (100). */
  pageSize?: number | undefined;
}

const DEFAULT_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  // Reconnect soon after a server restart (grpc-js defaults: 1 s growing to 120 s).
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 5000,
  // A page is ≤ 4 MiB of events but always holds at least one event, which may be larger.
  "grpc.max_receive_message_length": 64 * 1024 * 1024,
};

function toDirection(d: Direction | undefined): pb.Direction {
  switch (d ?? "forward") {
    case "forward":
      return pb.Direction.FORWARD;
    case "backward":
      return pb.Direction.BACKWARD;
    default:
      throw new TypeError(`direction must be "forward" or "backward", got ${String(d)}`);
  }
}

function appendRequest(a: StreamAppend): pb.AppendRequest {
  const list: readonly EventInput[] = Array.isArray(a.events) ? a.events : [a.events as EventInput];
  return {
    streamId: a.stream,
    streamType: a.streamType ?? "",
    ...(a.expected ?? ExpectedVersion.any()).toProto(),
    events: list.map(eventToProto),
    condition: undefined,
  };
}

function appendResult(r: pb.AppendResponse): AppendResult {
  return {
    firstStreamVersion: r.firstStreamVersion,
    lastStreamVersion: r.lastStreamVersion,
    firstGlobalPosition: r.firstGlobalPosition,
    lastGlobalPosition: r.lastGlobalPosition,
    recordedAtUnixMs: r.recordedAtUnixMs,
    duplicate: r.duplicate,
  };
}

function readBuf(v: string | Buffer | undefined): Buffer | null {
  if (v === undefined) return null;
  return typeof v === "string" ? Buffer.from(v, "utf8") : v;
}

/**
 * A client of the event store. Cheap to keep for the life of the process; one
 * HTTP/2 connection, reconnected by itself. Call `close()` at the end.
 *
 * ```ts
 * const client = new EventStoreClient({ address: "127.0.0.1:50051" });
 * await client.append("order-1", [jsonEvent("OrderPlaced", { total: 42 })], ExpectedVersion.noStream());
 * ```
 */
export class EventStoreClient {
  /** The generated @grpc/grpc-js stub, for what this client does not wrap. */
  readonly stub: pb.EventStoreClient;
  private readonly token: TokenSource | undefined;
  private readonly defaultDeadlineMs: number | undefined;
  private readonly retry: RetryOptions | undefined;
  private readonly subscriptions = new Set<Subscription>();
  private isClosed = false;

  constructor(options: EventStoreClientOptions) {
    if (typeof options?.address !== "string" || options.address === "") {
      throw new TypeError("EventStoreClient: options.address (host:port) is required");
    }
    if (options.tls && options.insecure) {
      throw new TypeError("EventStoreClient: give either tls or insecure, not both");
    }
    const channelOptions: grpc.ChannelOptions = { ...DEFAULT_CHANNEL_OPTIONS };
    let credentials: grpc.ChannelCredentials;
    if (options.tls) {
      const tls: TlsOptions = options.tls === true ? {} : options.tls;
      credentials = grpc.credentials.createSsl(readBuf(tls.ca), readBuf(tls.privateKey), readBuf(tls.certChain));
      if (tls.serverNameOverride) {
        channelOptions["grpc.ssl_target_name_override"] = tls.serverNameOverride;
        channelOptions["grpc.default_authority"] = tls.serverNameOverride;
      }
    } else {
      credentials = grpc.credentials.createInsecure();
    }
    Object.assign(channelOptions, options.channelOptions ?? {});
    if (options.defaultDeadlineMs !== undefined && !(options.defaultDeadlineMs > 0)) {
      throw new RangeError("EventStoreClient: defaultDeadlineMs must be > 0");
    }
    this.stub = new pb.EventStoreClient(options.address, credentials, channelOptions);
    this.token = options.token;
    this.defaultDeadlineMs = options.defaultDeadlineMs;
    this.retry = options.retry;
  }

  /** Creates a client and waits until its connection is ready (UnavailableError after `timeoutMs`, default 10 s). */
  static async connect(options: EventStoreClientOptions & { timeoutMs?: number | undefined }): Promise<EventStoreClient> {
    const client = new EventStoreClient(options);
    try {
      await client.waitForReady(options.timeoutMs ?? 10_000);
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** Resolves when the connection is ready; rejects with UnavailableError after `timeoutMs`. */
  waitForReady(timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.stub.waitForReady(Date.now() + timeoutMs, (err) => {
        if (err) reject(new UnavailableError(`UNAVAILABLE: not connected after ${timeoutMs} ms: ${err.message}`));
        else resolve();
      });
    });
  }

  /** Closes the client: its subscriptions end, later calls reject with CancelledError. Idempotent. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const sub of [...this.subscriptions]) sub.close();
    this.stub.close();
  }

  /** True after `close()`. */
  get closed(): boolean {
    return this.isClosed;
  }

  private checkOpen(): void {
    if (this.isClosed) throw new CancelledError("CANCELLED: the client is closed");
  }

  /**
   * Appends events to one stream, atomically, under an expected-version check and, with
   * `options.condition`, an append condition.
   * Rejects with WrongExpectedVersionError (its `actual` is the stream's version),
   * AppendConditionFailedError (its `position` is the conflicting event's), AlreadyExistsError,
   * StreamTypeMismatchError, InvalidArgumentError, …
   */
  async append(
    stream: string,
    events: EventInput | readonly EventInput[],
    expected: ExpectedVersion = ExpectedVersion.any(),
    options: AppendOptions = {},
  ): Promise<AppendResult> {
    if (options.condition !== undefined) {
      const { condition, streamType, ...call } = options;
      const [one] = await this.appendMany([{ stream, events, expected, streamType }], { ...call, condition });
      if (one === undefined) throw new Error("appendMany: the server returned no result");
      return one;
    }
    const request = appendRequest({ stream, events, expected, streamType: options.streamType });
    const ctx: CallContext = { stream, expected, streamType: options.streamType };
    const r = await this.unary<pb.AppendRequest, pb.AppendResponse>(
      (req, md, opts, cb) => this.stub.append(req, md, opts, cb),
      request,
      options,
      ctx,
    );
    return appendResult(r);
  }

  /**
   * Commits several appends (1..100, to one or several streams, each with its own expected
   * version) atomically: all of them, in one contiguous run of global positions in request
   * order, or none. `options.condition` is checked once, against the log as it was before the
   * request. Resolves to one result per append, in order.
   *
   * Rejects with the error the failing append alone would have got; its `appendIndex` names
   * that append (undefined when the request-wide condition failed), and a
   * WrongExpectedVersionError carries that append's stream, expectation and actual version
   * (counting the earlier appends of the request). A server without the feature rejects with
   * UnimplementedError.
   */
  async appendMany(appends: readonly StreamAppend[], options: AppendManyOptions = {}): Promise<AppendResult[]> {
    if (!Array.isArray(appends)) throw new TypeError("appendMany: appends must be an array of StreamAppend");
    const request: pb.AppendManyRequest = {
      appends: appends.map(appendRequest),
      condition: conditionToProto(options.condition),
    };
    const ctx: CallContext = {
      appends: appends.map((a) => ({ stream: a.stream, expected: a.expected ?? ExpectedVersion.any(), streamType: a.streamType })),
    };
    const r = await this.unary<pb.AppendManyRequest, pb.AppendManyResponse>(
      (req, md, opts, cb) => this.stub.appendMany(req, md, opts, cb),
      request,
      options,
      ctx,
    );
    return r.results.map(appendResult);
  }

  /** Reads one page of a stream. Rejects with StreamNotFoundError when the stream has no events. */
  async readStream(stream: string, options: ReadStreamOptions = {}): Promise<ReadStreamPage> {
    const request: pb.ReadStreamRequest = {
      streamId: stream,
      fromVersion: toUint64(options.fromVersion ?? 0n, "fromVersion"),
      maxCount: toUint32(options.maxCount ?? 0, "maxCount"),
      direction: toDirection(options.direction),
    };
    const r = await this.unary<pb.ReadStreamRequest, pb.ReadStreamResponse>(
      (req, md, opts, cb) => this.stub.readStream(req, md, opts, cb),
      request,
      options,
      { stream },
    );
    return {
      events: r.events.map((e) => new RecordedEvent(e)),
      nextVersion: r.nextVersion,
      isEnd: r.isEnd,
      streamVersion: r.streamVersion,
    };
  }

  /** Every event of a stream from `fromVersion` on, page after page, forward or backward. */
  async *readStreamIter(stream: string, options: ReadStreamIterOptions = {}): AsyncGenerator<RecordedEvent, void> {
    let from = toUint64(options.fromVersion ?? 0n, "fromVersion");
    for (;;) {
      const page = await this.readStream(stream, {
        fromVersion: from,
        maxCount: options.pageSize,
        direction: options.direction,
        deadlineMs: options.deadlineMs,
        signal: options.signal,
      });
      yield* page.events;
      if (page.isEnd) return;
      if (page.events.length === 0 && page.nextVersion === from) {
        throw new Error(`readStreamIter(${stream}): the server made no progress at version ${from}`);
      }
      from = page.nextVersion;
    }
  }

  /** Reads one page of the global log, optionally filtered. */
  async readAll(options: ReadAllOptions = {}): Promise<ReadAllPage> {
    const request: pb.ReadAllRequest = {
      fromPosition: toUint64(options.fromPosition ?? 0n, "fromPosition"),
      maxCount: toUint32(options.maxCount ?? 0, "maxCount"),
      direction: toDirection(options.direction),
      filter: filterToProto(options.filter),
    };
    const r = await this.unary<pb.ReadAllRequest, pb.ReadAllResponse>(
      (req, md, opts, cb) => this.stub.readAll(req, md, opts, cb),
      request,
      options,
      {},
    );
    return {
      events: r.events.map((e) => new RecordedEvent(e)),
      nextPosition: r.nextPosition,
      isEnd: r.isEnd,
      headPosition: r.headPosition,
    };
  }

  /** Every (matching) event of the global log from `fromPosition` on, page after page. */
  async *readAllIter(options: ReadAllIterOptions = {}): AsyncGenerator<RecordedEvent, void> {
    let from = toUint64(options.fromPosition ?? 0n, "fromPosition");
    for (;;) {
      const page = await this.readAll({
        fromPosition: from,
        maxCount: options.pageSize,
        direction: options.direction,
        filter: options.filter,
        deadlineMs: options.deadlineMs,
        signal: options.signal,
      });
      yield* page.events;
      if (page.isEnd) return;
      if (page.events.length === 0 && page.nextPosition === from) {
        throw new Error(`readAllIter: the server made no progress at position ${from}`);
      }
      from = page.nextPosition;
    }
  }

  /**
   * Subscribes to the global log: catch-up from `fromPosition` (default: the beginning)
   * or only new events (`fromEnd`), then live. The result is an AsyncIterable of
   * `{type: "event" | "caughtUp" | "checkpoint" | "fellBehind", …}` messages that
   * reconnects by itself after UNAVAILABLE (server restart, dropped connection),
   * resuming after the last event or checkpoint it delivered: no gap, no duplicate.
   * End it with `break`, `subscription.close()` or `options.signal`.
   */
  subscribe(options: SubscribeOptions = {}): Subscription {
    const sub = new Subscription(
      async (request) => {
        this.checkOpen();
        return this.stub.subscribe(request, await this.callMetadata(), {});
      },
      // Field by field: an option given as `undefined` keeps the client's setting.
      {
        ...options,
        retry: {
          initialDelayMs: options.retry?.initialDelayMs ?? this.retry?.initialDelayMs,
          maxDelayMs: options.retry?.maxDelayMs ?? this.retry?.maxDelayMs,
          maxAttempts: options.retry?.maxAttempts ?? this.retry?.maxAttempts,
        },
      },
      (closed) => this.subscriptions.delete(closed),
    );
    if (this.isClosed) sub.close();
    else if (!sub.closed) this.subscriptions.add(sub);
    return sub;
  }

  /** @internal The metadata of every call: the bearer token. */
  async callMetadata(): Promise<grpc.Metadata> {
    const md = new grpc.Metadata();
    const token = typeof this.token === "function" ? await this.token() : this.token;
    if (token) md.set("authorization", `Bearer ${token}`);
    return md;
  }

  private async unary<Req, Res>(
    invoke: (
      req: Req,
      md: grpc.Metadata,
      opts: Partial<grpc.CallOptions>,
      cb: (err: grpc.ServiceError | null, res?: Res) => void,
    ) => grpc.ClientUnaryCall,
    request: Req,
    options: CallOptions,
    ctx: CallContext,
  ): Promise<Res> {
    this.checkOpen();
    const md = await this.callMetadata();
    const deadlineMs = options.deadlineMs ?? this.defaultDeadlineMs;
    const callOptions: Partial<grpc.CallOptions> = {};
    if (deadlineMs !== undefined) callOptions.deadline = Date.now() + deadlineMs;
    const signal = options.signal;
    if (signal?.aborted) {
      throw toEventStoreError({ code: grpc.status.CANCELLED, details: "cancelled by the AbortSignal" }, ctx);
    }
    return new Promise<Res>((resolve, reject) => {
      let onAbort: (() => void) | undefined;
      const call = invoke(request, md, callOptions, (err, res) => {
        if (onAbort) signal?.removeEventListener("abort", onAbort);
        if (err) reject(toEventStoreError(err, ctx));
        else resolve(res as Res);
      });
      if (signal) {
        onAbort = () => call.cancel();
        signal.addEventListener("abort", onAbort, { once: true });
      }
    });
  }
}
