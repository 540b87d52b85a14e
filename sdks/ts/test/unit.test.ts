// Unit tests: no server needed.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import {
  AlreadyExistsError,
  EventStoreClient,
  EventStoreError,
  ExpectedVersion,
  InvalidArgumentError,
  jsonEvent,
  newEventId,
  parseJson,
  proto,
  RecordedEvent,
  StreamNotFoundError,
  StreamTypeMismatchError,
  UnauthenticatedError,
  UnavailableError,
  WrongExpectedVersionError,
} from "../src";
import { toEventStoreError } from "../src/errors";
import { eventToProto } from "../src/events";

describe("ExpectedVersion", () => {
  it("maps every kind to the wire enum", () => {
    assert.deepEqual(ExpectedVersion.any().toProto(), {
      expectedKind: proto.ExpectedVersionKind.EXPECTED_ANY,
      expectedVersion: 0n,
    });
    assert.equal(ExpectedVersion.noStream().toProto().expectedKind, proto.ExpectedVersionKind.EXPECTED_NO_STREAM);
    assert.equal(
      ExpectedVersion.streamExists().toProto().expectedKind,
      proto.ExpectedVersionKind.EXPECTED_STREAM_EXISTS,
    );
    assert.deepEqual(ExpectedVersion.exact(7).toProto(), {
      expectedKind: proto.ExpectedVersionKind.EXPECTED_EXACT,
      expectedVersion: 7n,
    });
    assert.equal(ExpectedVersion.exact(2n ** 63n).version, 2n ** 63n);
    assert.equal(String(ExpectedVersion.exact(3)), "exact(3)");
    assert.equal(String(ExpectedVersion.noStream()), "noStream()");
  });

  it("rejects versions that are not uint64", () => {
    assert.throws(() => ExpectedVersion.exact(-1), RangeError);
    assert.throws(() => ExpectedVersion.exact(1.5), RangeError);
    assert.throws(() => ExpectedVersion.exact(2n ** 64n), RangeError);
  });
});

describe("events and JSON helpers", () => {
  it("jsonEvent sets the content type and UTF-8 JSON payload", () => {
    const e = jsonEvent("OrderPlaced", { total: 42, name: "é" }, { eventId: "x", metadata: { a: "b" } });
    assert.equal(e.contentType, "application/json");
    assert.equal(e.eventType, "OrderPlaced");
    assert.equal(Buffer.from(e.payload as Uint8Array).toString("utf8"), '{"total":42,"name":"é"}');
    assert.equal(e.eventId, "x");
    assert.deepEqual(e.metadata, { a: "b" });
    assert.throws(() => jsonEvent("X", undefined), TypeError);
  });

  it("eventToProto fills defaults and converts times", () => {
    const p = eventToProto({ eventType: "T", payload: "hi", occurredAt: new Date(1234) });
    assert.equal(p.eventId, "");
    assert.equal(p.contentType, "");
    assert.equal(p.payload.toString(), "hi");
    assert.equal(p.occurredAtUnixMs, 1234n);
    assert.equal(eventToProto({ eventType: "T", occurredAt: 99n }).occurredAtUnixMs, 99n);
    assert.throws(() => eventToProto({ eventType: "T", eventVersion: -1 }), RangeError);
  });

  it('metadata: any key, "__proto__" included, survives encoding, decoding and RecordedEvent', () => {
    const input = JSON.parse('{"__proto__": "x", "constructor": "y", "toString": "z"}') as Record<string, string>;
    const entries = [
      ["__proto__", "x"],
      ["constructor", "y"],
      ["toString", "z"],
    ];
    for (const metadata of [input, new Map(Object.entries(input))]) {
      const p = eventToProto({ eventType: "T", metadata });
      assert.ok(p.metadata instanceof Map);
      assert.deepEqual([...p.metadata], entries);
      const wire = proto.RecordedEvent.encode({ ...proto.RecordedEvent.fromPartial({}), metadata: p.metadata }).finish();
      const decoded = proto.RecordedEvent.decode(wire);
      assert.deepEqual([...decoded.metadata], entries);
      const m = new RecordedEvent(decoded).metadata;
      assert.deepEqual(Object.entries(m), entries);
      assert.equal(Object.getPrototypeOf(m), null);
      assert.ok(Object.isFrozen(m));
      assert.equal(m["hasOwnProperty"], undefined);
    }
    assert.deepEqual([...eventToProto({ eventType: "T" }).metadata], []);
    assert.deepEqual({ ...new RecordedEvent(proto.RecordedEvent.fromPartial({})).metadata }, {});
  });

  it("RecordedEvent exposes bigint positions, json(), text() and dates", () => {
    const e = new RecordedEvent({
      ...proto.RecordedEvent.fromPartial({}),
      streamId: "s",
      streamVersion: 3n,
      globalPosition: 2n ** 60n,
      contentType: "application/json; charset=utf-8",
      payload: Buffer.from('{"a":[1,2]}'),
      recordedAtUnixMs: 1000n,
    });
    assert.equal(e.globalPosition, 2n ** 60n);
    assert.equal(e.isJson, true);
    assert.deepEqual(e.json(), { a: [1, 2] });
    assert.deepEqual(parseJson<{ a: number[] }>(e).a, [1, 2]);
    assert.equal(e.text(), '{"a":[1,2]}');
    assert.equal(e.recordedAt.getTime(), 1000);
    assert.equal(e.occurredAt, undefined);
  });

  it("newEventId makes lowercase UUIDv7s that sort by time", async () => {
    const a = newEventId();
    await new Promise((r) => setTimeout(r, 2));
    const b = newEventId();
    const re = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    assert.match(a, re);
    assert.match(b, re);
    assert.ok(a < b);
  });
});

describe("error mapping", () => {
  const err = (code: status, details: string, md?: Metadata) => ({ code, details, metadata: md ?? new Metadata() });

  it("maps ABORTED to WrongExpectedVersionError with es-actual-version", () => {
    const md = new Metadata();
    md.set("es-actual-version", "12");
    const e = toEventStoreError(err(status.ABORTED, "expected 3, actual 12", md), {
      stream: "s",
      expected: ExpectedVersion.exact(3),
    });
    assert.ok(e instanceof WrongExpectedVersionError);
    assert.ok(e instanceof EventStoreError);
    assert.equal(e.code, status.ABORTED);
    assert.equal(e.codeName, "ABORTED");
    assert.equal(e.actual, 12n);
    assert.equal(e.expected?.version, 3n);
    assert.equal(e.stream, "s");
  });

  it("maps every documented status to its class", () => {
    const cases: [status, new (...a: never[]) => EventStoreError][] = [
      [status.NOT_FOUND, StreamNotFoundError],
      [status.ALREADY_EXISTS, AlreadyExistsError],
      [status.INVALID_ARGUMENT, InvalidArgumentError],
      [status.FAILED_PRECONDITION, StreamTypeMismatchError],
      [status.UNAVAILABLE, UnavailableError],
      [status.UNAUTHENTICATED, UnauthenticatedError],
    ];
    for (const [code, cls] of cases) {
      const e = toEventStoreError(err(code, "x"));
      assert.ok(e instanceof cls, `${status[code]} → ${cls.name}`);
      assert.equal(e.code, code);
      assert.equal(e.name, cls.name);
    }
    const id = "0190f5a2-7c1e-7d3a-9b1c-2f4e5a6b7c8d";
    const ae = toEventStoreError(err(status.ALREADY_EXISTS, `events[1].event_id: ${id} already exists`));
    assert.equal((ae as AlreadyExistsError).eventId, id);
    assert.equal(toEventStoreError(err(status.DATA_LOSS, "x")).constructor, EventStoreError);
  });
});

describe("EventStoreClient options", () => {
  it("validates its options", () => {
    assert.throws(() => new EventStoreClient({ address: "" }), TypeError);
    assert.throws(() => new EventStoreClient({ address: "h:1", tls: true, insecure: true }), TypeError);
    assert.throws(() => new EventStoreClient({ address: "h:1", defaultDeadlineMs: 0 }), RangeError);
    new EventStoreClient({ address: "127.0.0.1:1", insecure: true }).close();
  });
});
