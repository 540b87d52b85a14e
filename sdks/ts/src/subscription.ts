// Subscription: an AsyncIterable over Subscribe that reconnects by itself and
// resumes exactly after what it has delivered.
//
// It asks the server for batches (max_batch) but hands out one event at a time:
// an EventBatch is unpacked lazily, and the resume point moves past an event only
// when that event is handed to the caller. A caller that stops in the middle of a
// batch therefore finds resumePosition right after the last event it received,
// and the rest of the batch is asked for again. A server that ignores max_batch
// (one older than batching) sends single events, which are handled the same way.
import type { ClientReadableStream } from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { Filter, filterToProto } from "./filter";
import { EventStoreError, toEventStoreError, UnavailableError } from "./errors";
import { RecordedEvent } from "./events";
import * as pb from "./gen/eventstore/v1/eventstore";
import { toUint32, toUint64 } from "./numbers";

/** A message of a subscription, tagged by `type`. */
export type SubscriptionMessage =
  /** A matching event. */
  | { type: "event"; event: RecordedEvent }
  /**
   * The replay reached the head; live events follow. Sent once per connection,
   * so after an automatic reconnect a new `caughtUp` follows the new replay.
   */
  | { type: "caughtUp"; headPosition: bigint }
  /** Everything ≤ position was scanned (filtered subscriptions): a resume point. */
  | { type: "checkpoint"; position: bigint }
  /** The server moved this subscriber back to storage reads; a caughtUp follows. */
  | { type: "fellBehind"; headPosition: bigint };

/** The `maxBatch` of a subscription that does not set one. */
export const DEFAULT_MAX_BATCH = 256;

/** How a subscription reconnects: exponential backoff with jitter. */
export interface RetryOptions {
  /** First delay before reconnecting, ms. Default 100. */
  initialDelayMs?: number | undefined;
  /** Largest delay, ms. Default 5000. */
  maxDelayMs?: number | undefined;
  /** Consecutive failed attempts before the iterator throws the last error. Default Infinity. */
  maxAttempts?: number | undefined;
}

export interface ReconnectInfo {
  /** 1 for the first reconnect after a success, then 2, 3, … while it keeps failing. */
  attempt: number;
  /** Why the previous connection ended. */
  error: EventStoreError;
  /** The delay before this attempt, ms. */
  delayMs: number;
  /** The position the subscription will resume from (undefined: from the end, nothing seen yet). */
  resumeFrom: bigint | undefined;
}

export interface SubscribeOptions {
  /** Deliver events with globalPosition ≥ this. Default: the beginning (0/1). */
  fromPosition?: bigint | number | undefined;
  /** Only events committed after the subscription starts (fromPosition is ignored). */
  fromEnd?: boolean | undefined;
  filter?: Filter | undefined;
  /** With a filter: a checkpoint after this many non-matching events; 0/omitted = server default (1000). */
  checkpointInterval?: number | undefined;
  /**
   * At most this many events per message from the server (default 256). The server
   * sends the events that are ready, never waiting to fill a batch; the iterator still
   * yields one event at a time. 0 or 1 = one event per message; above 1000 the server
   * rejects the subscription (InvalidArgumentError).
   */
  maxBatch?: number | undefined;
  /** Aborting ends the iteration (normally, without an error). */
  signal?: AbortSignal | undefined;
  /** Reconnect policy (defaults: the client's `retry`, then 100 ms … 5 s, forever). */
  retry?: RetryOptions | undefined;
  /** Called before each reconnect attempt. */
  onReconnect?: ((info: ReconnectInfo) => void) | undefined;
}

/** Status codes after which the subscription reconnects instead of failing. */
const RETRYABLE: ReadonlySet<status> = new Set([
  status.UNAVAILABLE,
  status.INTERNAL, // e.g. RST_STREAM when a connection dies mid-message
  status.UNKNOWN,
  status.DEADLINE_EXCEEDED,
  status.RESOURCE_EXHAUSTED,
  status.ABORTED,
]);

type Opener = (request: pb.SubscribeRequest) => Promise<ClientReadableStream<pb.SubscribeResponse>>;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * A running subscription. Iterate it once with `for await`; it reconnects by itself.
 * `resumePosition` is where it would resume: the last delivered event's position + 1
 * (or the last checkpoint's / caught-up head's + 1, whichever is later).
 */
export class Subscription implements AsyncIterable<SubscriptionMessage> {
  private readonly abort = new AbortController();
  private readonly filter: pb.Filter | undefined;
  private readonly checkpointInterval: number;
  private readonly maxBatch: number;
  private readonly retry: { [K in keyof RetryOptions]-?: NonNullable<RetryOptions[K]> };
  private readonly onReconnect: ((info: ReconnectInfo) => void) | undefined;
  private readonly userSignal: AbortSignal | undefined;
  private call: ClientReadableStream<pb.SubscribeResponse> | undefined;
  private next: bigint | undefined;
  private iterated = false;
  private reconnects = 0;

  /** @internal Use EventStoreClient.subscribe. */
  constructor(
    private readonly open: Opener,
    options: SubscribeOptions,
    private readonly onClose: (sub: Subscription) => void = () => {},
  ) {
    this.filter = filterToProto(options.filter);
    this.checkpointInterval = toUint32(options.checkpointInterval ?? 0, "checkpointInterval");
    this.maxBatch = toUint32(options.maxBatch ?? DEFAULT_MAX_BATCH, "maxBatch");
    this.next = options.fromEnd ? undefined : toUint64(options.fromPosition ?? 1n, "fromPosition");
    if (this.next === 0n) this.next = 1n;
    this.retry = {
      initialDelayMs: options.retry?.initialDelayMs ?? 100,
      maxDelayMs: options.retry?.maxDelayMs ?? 5000,
      maxAttempts: options.retry?.maxAttempts ?? Infinity,
    };
    this.onReconnect = options.onReconnect;
    this.userSignal = options.signal;
    if (options.signal) {
      if (options.signal.aborted) this.close();
      else options.signal.addEventListener("abort", this.closeListener, { once: true });
    }
  }

  private readonly closeListener = (): void => this.close();

  /** The position the subscription resumes from; undefined while a fromEnd subscription has seen nothing. */
  get resumePosition(): bigint | undefined {
    return this.next;
  }

  /** How many times it has reconnected so far. */
  get reconnectCount(): number {
    return this.reconnects;
  }

  get closed(): boolean {
    return this.abort.signal.aborted;
  }

  /** Ends the subscription: the iteration finishes (no error) and the call is cancelled. */
  close(): void {
    if (this.abort.signal.aborted) return;
    this.abort.abort();
    this.call?.cancel();
    this.userSignal?.removeEventListener("abort", this.closeListener);
    this.onClose(this);
  }

  [Symbol.asyncIterator](): AsyncIterator<SubscriptionMessage> {
    if (this.iterated) throw new Error("a Subscription can be iterated only once");
    this.iterated = true;
    return this.run();
  }

  /** Only the events (caughtUp / checkpoint / fellBehind are skipped). */
  async *events(): AsyncGenerator<RecordedEvent, void> {
    for await (const m of this) {
      if (m.type === "event") yield m.event;
    }
  }

  private request(): pb.SubscribeRequest {
    return {
      fromPosition: this.next ?? 0n,
      fromEnd: this.next === undefined,
      filter: this.filter,
      checkpointInterval: this.checkpointInterval,
      maxBatch: this.maxBatch,
    };
  }

  private advance(to: bigint): void {
    if (this.next === undefined || to > this.next) this.next = to;
  }

  /** One event about to be handed out; undefined when it was delivered already. */
  private accept(e: pb.RecordedEvent): SubscriptionMessage | undefined {
    const pos = e.globalPosition;
    // Never deliver twice: anything below the resume point was delivered already.
    if (this.next !== undefined && pos < this.next) return undefined;
    this.advance(pos + 1n);
    return { type: "event", event: new RecordedEvent(e) };
  }

  /**
   * The messages of one response, in order. A generator, so that the resume point
   * moves past each event of a batch only when the caller pulls that event.
   */
  private *translate(r: pb.SubscribeResponse): Generator<SubscriptionMessage, void, undefined> {
    const m = r.message;
    switch (m?.$case) {
      case "event": {
        const out = this.accept(m.value);
        if (out !== undefined) yield out;
        return;
      }
      case "batch":
        for (const e of m.value.events) {
          if (this.closed) return;
          const out = this.accept(e);
          if (out !== undefined) yield out;
        }
        return;
      case "checkpoint":
        this.advance(m.value.position + 1n);
        yield { type: "checkpoint", position: m.value.position };
        return;
      case "caughtUp":
        // Everything up to the head has been scanned and delivered.
        this.advance(m.value.headPosition + 1n);
        yield { type: "caughtUp", headPosition: m.value.headPosition };
        return;
      case "fellBehind":
        yield { type: "fellBehind", headPosition: m.value.headPosition };
        return;
      default:
        return; // an unknown (newer) message kind
    }
  }

  private async *run(): AsyncGenerator<SubscriptionMessage, void, undefined> {
    let failures = 0;
    try {
      while (!this.closed) {
        let lastError: EventStoreError;
        let call: ClientReadableStream<pb.SubscribeResponse> | undefined;
        try {
          call = await this.open(this.request());
          this.call = call;
          if (this.closed) return;
          for await (const response of call as AsyncIterable<pb.SubscribeResponse>) {
            if (this.closed) return;
            failures = 0;
            for (const message of this.translate(response)) {
              yield message;
              if (this.closed) return;
            }
          }
          // A subscription never ends with OK: treat it as a dropped connection.
          lastError = new UnavailableError("UNAVAILABLE: the server ended the subscription");
        } catch (err) {
          if (this.closed) return;
          const e = toEventStoreError(err);
          if (!RETRYABLE.has(e.code)) throw e;
          lastError = e;
        } finally {
          call?.cancel();
          this.call = undefined;
        }
        failures++;
        if (failures > this.retry.maxAttempts) throw lastError;
        const base = Math.min(this.retry.maxDelayMs, this.retry.initialDelayMs * 2 ** Math.min(failures - 1, 30));
        const delayMs = Math.round(base / 2 + (Math.random() * base) / 2);
        this.reconnects++;
        this.onReconnect?.({ attempt: failures, error: lastError, delayMs, resumeFrom: this.next });
        await sleep(delayMs, this.abort.signal);
      }
    } finally {
      this.close();
    }
  }
}
