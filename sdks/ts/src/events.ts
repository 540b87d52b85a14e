// Events as the application writes them (EventInput) and reads them (RecordedEvent),
// plus the JSON helpers and client-side event ids.
import { randomBytes } from "node:crypto";
import * as pb from "./gen/eventstore/v1/eventstore";
import { toUint32, toUint64 } from "./numbers";
import { tagsToProto } from "./query";

export const JSON_CONTENT_TYPE = "application/json";

/** An event to append. Only `eventType` is required. */
export interface EventInput {
  /** The kind of event, e.g. "OrderPlaced" (1..256 bytes, no control characters). */
  eventType: string;
  /** The body: bytes, or a string sent as UTF-8. Empty when omitted. */
  payload?: Uint8Array | string | undefined;
  /**
   * A lowercase UUID. Give one (e.g. `newEventId()`) to make the append safe to retry:
   * resending the same batch is acknowledged with `duplicate: true`. Empty: the server assigns a UUIDv7.
   */
  eventId?: string | undefined;
  /** Schema version of `eventType` (uint32). Default 0. */
  eventVersion?: number | undefined;
  /** MIME type of the payload. Empty: the server stores "application/octet-stream". */
  contentType?: string | undefined;
  /**
   * Free-form string pairs: an object (its own enumerable string-keyed properties) or a Map.
   * Any key is allowed, "__proto__" and "constructor" included — but note that in an object
   * literal `{ "__proto__": "x" }` sets the prototype instead of adding a key: write
   * `{ ["__proto__"]: "x" }` or use a Map.
   */
  metadata?: Readonly<Record<string, string>> | ReadonlyMap<string, string> | undefined;
  correlationId?: string | undefined;
  causationId?: string | undefined;
  /** When it happened by the client's clock: a Date, or Unix milliseconds. */
  occurredAt?: Date | number | bigint | undefined;
  /**
   * What the event is about, for queries and append conditions (e.g. "course:c1"): up to 32,
   * each 1..256 bytes of UTF-8 without control characters, no two alike.
   */
  tags?: readonly string[] | undefined;
}

/** Options of `jsonEvent`: every EventInput field but the type, payload and content type. */
export type JsonEventOptions = Omit<EventInput, "eventType" | "payload" | "contentType">;

/**
 * An event whose payload is `JSON.stringify(data)` in UTF-8, with content type application/json.
 * (`JSON.stringify` rejects bigint values: convert them first.)
 */
export function jsonEvent(eventType: string, data: unknown, options: JsonEventOptions = {}): EventInput {
  const text = JSON.stringify(data);
  if (text === undefined) {
    throw new TypeError(`jsonEvent(${eventType}): data is not representable as JSON`);
  }
  return { ...options, eventType, payload: Buffer.from(text, "utf8"), contentType: JSON_CONTENT_TYPE };
}

/** A new UUIDv7 (time-ordered, lowercase) for `EventInput.eventId`. */
export function newEventId(): string {
  const b = randomBytes(16);
  const ms = BigInt(Date.now());
  for (let i = 0; i < 6; i++) {
    b[i] = Number((ms >> BigInt(8 * (5 - i))) & 0xffn);
  }
  b[6] = 0x70 | (b[6]! & 0x0f); // version 7
  b[8] = 0x80 | (b[8]! & 0x3f); // RFC 4122 variant
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function toBuffer(payload: Uint8Array | string | undefined): Buffer {
  if (payload === undefined) return Buffer.alloc(0);
  if (typeof payload === "string") return Buffer.from(payload, "utf8");
  if (Buffer.isBuffer(payload)) return payload;
  return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
}

function toUnixMs(value: Date | number | bigint | undefined): bigint {
  if (value === undefined) return 0n;
  if (value instanceof Date) {
    const ms = value.getTime();
    if (Number.isNaN(ms)) throw new RangeError("occurredAt is an invalid Date");
    return toUint64(ms, "occurredAt");
  }
  return toUint64(value, "occurredAt");
}

/** @internal The wire form of EventInput.metadata. Object.entries includes an own "__proto__" key. */
function metadataToProto(m: EventInput["metadata"]): Map<string, string> {
  if (m === undefined || m === null) return new Map();
  if (m instanceof Map) return new Map(m);
  return new Map(Object.entries(m));
}

/**
 * @internal RecordedEvent.metadata: a frozen object without a prototype, so that every key —
 * "__proto__", "constructor", "toString" … — is an ordinary own property, and a key that is
 * absent reads as undefined instead of an inherited Object.prototype member.
 */
function metadataFromProto(m: ReadonlyMap<string, string>): Readonly<Record<string, string>> {
  const record: Record<string, string> = Object.create(null);
  // A Map from the generated decoder; tolerate a plain object from hand-made messages.
  const entries: Iterable<[string, string]> = m instanceof Map ? m : Object.entries(m ?? {});
  for (const [key, value] of entries) {
    // defineProperty, not assignment: never goes through a setter, whatever the key.
    Object.defineProperty(record, key, { value, enumerable: true, writable: false, configurable: false });
  }
  return Object.freeze(record);
}

/** @internal The wire form of an EventInput. */
export function eventToProto(e: EventInput): pb.EventData {
  if (typeof e !== "object" || e === null || typeof e.eventType !== "string") {
    throw new TypeError("an event needs at least { eventType: string }");
  }
  return {
    eventId: e.eventId ?? "",
    eventType: e.eventType,
    eventVersion: toUint32(e.eventVersion ?? 0, "eventVersion"),
    contentType: e.contentType ?? "",
    payload: toBuffer(e.payload),
    metadata: metadataToProto(e.metadata),
    correlationId: e.correlationId ?? "",
    causationId: e.causationId ?? "",
    occurredAtUnixMs: toUnixMs(e.occurredAt),
    tags: tagsToProto(e.tags),
  };
}

/** An event as the store returns it. Versions, positions and times are bigint (uint64). */
export class RecordedEvent {
  /** The stream the event belongs to. */
  readonly streamId: string;
  /** The stream's type (aggregate kind); "" if none was ever given. */
  readonly streamType: string;
  /** 1-based index of the event in its stream. */
  readonly streamVersion: bigint;
  /** 1-based index of the event in the store-wide log (gap-free, commit order). */
  readonly globalPosition: bigint;
  /** Always set (assigned by the server if the append gave none). */
  readonly eventId: string;
  readonly eventType: string;
  readonly eventVersion: number;
  /** As appended, or "application/octet-stream". */
  readonly contentType: string;
  /** The body, byte for byte. */
  readonly payload: Buffer;
  /**
   * As appended. A frozen object with a null prototype: every key, "__proto__" included, is an
   * own enumerable property (`Object.keys` / `Object.entries` / `{ ...metadata }` /
   * `JSON.stringify` see them all) and absent keys are undefined. It has no Object.prototype
   * methods: use `Object.hasOwn(metadata, key)` or `key in metadata`, not
   * `metadata.hasOwnProperty(key)`. For a Map: `new Map(Object.entries(event.metadata))`.
   */
  readonly metadata: Readonly<Record<string, string>>;
  readonly correlationId: string;
  readonly causationId: string;
  /** Client clock as appended, Unix ms; 0n = not given. */
  readonly occurredAtUnixMs: bigint;
  /** Server clock at commit, Unix ms. */
  readonly recordedAtUnixMs: bigint;
  /** The event's tags as appended, in the same order (frozen). */
  readonly tags: readonly string[];

  constructor(e: pb.RecordedEvent) {
    this.streamId = e.streamId;
    this.streamType = e.streamType;
    this.streamVersion = e.streamVersion;
    this.globalPosition = e.globalPosition;
    this.eventId = e.eventId;
    this.eventType = e.eventType;
    this.eventVersion = e.eventVersion;
    this.contentType = e.contentType;
    this.payload = e.payload;
    this.metadata = metadataFromProto(e.metadata);
    this.correlationId = e.correlationId;
    this.causationId = e.causationId;
    this.occurredAtUnixMs = e.occurredAtUnixMs;
    this.recordedAtUnixMs = e.recordedAtUnixMs;
    this.tags = Object.freeze([...(e.tags ?? [])]);
  }

  /** `recordedAtUnixMs` as a Date. */
  get recordedAt(): Date {
    return new Date(Number(this.recordedAtUnixMs));
  }

  /** `occurredAtUnixMs` as a Date, or undefined when it was not given. */
  get occurredAt(): Date | undefined {
    return this.occurredAtUnixMs === 0n ? undefined : new Date(Number(this.occurredAtUnixMs));
  }

  /** True when the content type is application/json (parameters such as charset allowed). */
  get isJson(): boolean {
    return /^application\/json\s*(;|$)/i.test(this.contentType);
  }

  /** The payload decoded as UTF-8. */
  text(): string {
    return this.payload.toString("utf8");
  }

  /** The payload parsed as JSON (throws SyntaxError if it is not JSON). */
  json<T = unknown>(): T {
    return JSON.parse(this.text()) as T;
  }
}

/** `event.json()` as a function: the payload parsed as JSON. */
export function parseJson<T = unknown>(event: RecordedEvent): T {
  return event.json<T>();
}
