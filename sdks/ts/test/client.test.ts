// Append, ReadStream, ReadAll and every typed error, against a real server.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  AlreadyExistsError,
  CancelledError,
  EventInput,
  EventStoreClient,
  EventStoreError,
  ExpectedVersion,
  GrpcStatus,
  InvalidArgumentError,
  jsonEvent,
  newEventId,
  RecordedEvent,
  StreamNotFoundError,
  StreamTypeMismatchError,
  UnavailableError,
  WrongExpectedVersionError,
} from "../src";
import { freePort, rejection, TestServer, uniqueStream } from "./helpers";

const numbered = (n: number, type = "Numbered"): EventInput[] =>
  Array.from({ length: n }, (_, i) => jsonEvent(type, { i: i + 1 }));

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe("against a real server", () => {
  let server: TestServer;
  let client: EventStoreClient;

  before(async () => {
    server = await TestServer.start();
    client = await EventStoreClient.connect({ address: server.address, defaultDeadlineMs: 10_000, token: "t" });
  });

  after(async () => {
    client?.close();
    await server?.stop();
  });

  describe("append", () => {
    it("appends with every expected version and returns versions and positions", async () => {
      const s = uniqueStream("order");
      const r1 = await client.append(s, numbered(2), ExpectedVersion.noStream(), { streamType: "Order" });
      assert.equal(r1.firstStreamVersion, 1n);
      assert.equal(r1.lastStreamVersion, 2n);
      assert.equal(r1.lastGlobalPosition - r1.firstGlobalPosition, 1n);
      assert.equal(r1.duplicate, false);
      assert.equal(typeof r1.recordedAtUnixMs, "bigint");
      assert.ok(r1.recordedAtUnixMs > 0n);

      const r2 = await client.append(s, numbered(1), ExpectedVersion.exact(r1.lastStreamVersion));
      assert.equal(r2.firstStreamVersion, 3n);
      assert.equal(r2.firstGlobalPosition, r1.lastGlobalPosition + 1n);
      const r3 = await client.append(s, numbered(1), ExpectedVersion.streamExists());
      assert.equal(r3.lastStreamVersion, 4n);
      const r4 = await client.append(s, numbered(1), ExpectedVersion.any());
      assert.equal(r4.lastStreamVersion, 5n);
      const r5 = await client.append(s, jsonEvent("Single", {})); // one event, expected defaults to any
      assert.equal(r5.lastStreamVersion, 6n);

      const s2 = uniqueStream("order");
      const r6 = await client.append(s2, numbered(1), ExpectedVersion.exact(0)); // exact 0 = no stream
      assert.equal(r6.firstStreamVersion, 1n);
    });

    it("round-trips every field byte for byte", async () => {
      const s = uniqueStream("fields");
      const id = newEventId();
      const payload = Buffer.from([0, 1, 2, 253, 254, 255]);
      await client.append(
        s,
        [
          {
            eventId: id,
            eventType: "Binary",
            eventVersion: 3,
            contentType: "application/x-test",
            payload,
            metadata: { tenant: "acme", "ü": "ß" },
            correlationId: "corr-1",
            causationId: "cause-1",
            occurredAt: new Date(1_700_000_000_123),
          },
          { eventType: "NoId", payload: "plain text" },
        ],
        ExpectedVersion.noStream(),
        { streamType: "Fields" },
      );
      const page = await client.readStream(s);
      const [a, b] = page.events as [RecordedEvent, RecordedEvent];
      assert.ok(a instanceof RecordedEvent);
      assert.equal(a.streamId, s);
      assert.equal(a.streamType, "Fields");
      assert.equal(a.eventId, id);
      assert.equal(a.eventType, "Binary");
      assert.equal(a.eventVersion, 3);
      assert.equal(a.contentType, "application/x-test");
      assert.deepEqual(Buffer.from(a.payload), payload);
      assert.deepEqual({ ...a.metadata }, { tenant: "acme", "ü": "ß" });
      assert.equal(a.correlationId, "corr-1");
      assert.equal(a.causationId, "cause-1");
      assert.equal(a.occurredAtUnixMs, 1_700_000_000_123n);
      assert.equal(a.occurredAt?.getTime(), 1_700_000_000_123);
      assert.ok(a.recordedAt.getTime() > 0);
      assert.equal(a.streamVersion, 1n);
      assert.equal(b.streamVersion, 2n);
      assert.equal(b.globalPosition, a.globalPosition + 1n);
      assert.match(b.eventId, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-/); // server-assigned UUIDv7
      assert.equal(b.contentType, "application/octet-stream");
      assert.equal(b.text(), "plain text");
      assert.equal(b.occurredAt, undefined);
    });

    it("JSON helpers: jsonEvent → event.json()", async () => {
      const s = uniqueStream("json");
      await client.append(s, jsonEvent("OrderPlaced", { total: 42, items: ["a", "b"] }, { eventVersion: 2 }));
      const [e] = (await client.readStream(s)).events;
      assert.ok(e);
      assert.equal(e.contentType, "application/json");
      assert.equal(e.isJson, true);
      assert.equal(e.eventVersion, 2);
      assert.deepEqual(e.json(), { total: 42, items: ["a", "b"] });
    });

    it('keeps the metadata keys "__proto__" and "constructor" (readStream, readAll, subscribe)', async () => {
      // Regression: ts-proto's decoder used to store map entries in a plain object, where
      // assigning "__proto__" is a no-op, so that key vanished when reading (it was written fine).
      // JSON.parse makes "__proto__" an own key; an object literal { "__proto__": "x" } would not.
      const asObject = JSON.parse('{"__proto__": "x", "constructor": "y"}') as Record<string, string>;
      assert.deepEqual(Object.keys(asObject), ["__proto__", "constructor"]);
      const asMap = new Map([
        ["__proto__", "x"],
        ["constructor", "y"],
      ]);
      const s = uniqueStream("protokey");
      const r = await client.append(s, [
        { eventType: "ProtoKey", metadata: asObject },
        { eventType: "ProtoKeyMap", metadata: asMap },
      ]);

      const check = (events: RecordedEvent[], via: string) => {
        assert.deepEqual(events.map((e) => e.eventType), ["ProtoKey", "ProtoKeyMap"], via);
        for (const e of events) {
          const m = e.metadata;
          assert.deepEqual(Object.entries(m).sort(), [["__proto__", "x"], ["constructor", "y"]], via);
          assert.equal(m["__proto__"], "x", via);
          assert.equal(m["constructor"], "y", via);
          assert.ok(Object.hasOwn(m, "__proto__") && Object.hasOwn(m, "constructor"), via);
          assert.equal(Object.getPrototypeOf(m), null, via); // no inherited Object.prototype members
          assert.equal(m["toString"], undefined, via);
          assert.equal("hasOwnProperty" in m, false, via);
          assert.ok(Object.isFrozen(m), via);
          // Copies keep the keys too.
          assert.deepEqual(Object.keys({ ...m }).sort(), ["__proto__", "constructor"], via);
          assert.deepEqual(Object.keys(JSON.parse(JSON.stringify(m))).sort(), ["__proto__", "constructor"], via);
          assert.deepEqual([...new Map(Object.entries(m))].sort(), [...asMap].sort(), via);
        }
      };

      check((await client.readStream(s)).events, "readStream");
      check(await collect(client.readStreamIter(s, { pageSize: 1 })), "readStreamIter");
      check(
        (await client.readAll({ fromPosition: r.firstGlobalPosition, filter: { streamPrefix: s } })).events,
        "readAll",
      );
      check(await collect(client.readAllIter({ pageSize: 1, filter: { streamPrefix: s } })), "readAllIter");

      const sub = client.subscribe({ fromPosition: r.firstGlobalPosition, filter: { streamPrefix: s } });
      const received: RecordedEvent[] = [];
      try {
        for await (const e of sub.events()) {
          received.push(e);
          if (received.length === 2) break;
        }
      } finally {
        sub.close();
      }
      check(received, "subscribe");
    });

    it("acknowledges a retried batch with duplicate = true and the original result", async () => {
      const s = uniqueStream("idem");
      const batch = [jsonEvent("A", { n: 1 }, { eventId: newEventId() }), jsonEvent("B", {}, { eventId: newEventId() })];
      const first = await client.append(s, batch, ExpectedVersion.noStream());
      const again = await client.append(s, batch, ExpectedVersion.noStream()); // expected ignored for a duplicate
      assert.equal(again.duplicate, true);
      assert.deepEqual({ ...again, duplicate: false }, first);
      const page = await client.readStream(s);
      assert.equal(page.events.length, 2);
    });
  });

  describe("typed errors", () => {
    it("WrongExpectedVersionError carries expected and actual", async () => {
      const s = uniqueStream("wev");
      await client.append(s, numbered(3));
      const e1 = await rejection(client.append(s, numbered(1), ExpectedVersion.exact(1)));
      assert.ok(e1 instanceof WrongExpectedVersionError, String(e1));
      assert.ok(e1 instanceof EventStoreError);
      assert.equal(e1.code, GrpcStatus.ABORTED);
      assert.equal(e1.actual, 3n);
      assert.equal(e1.expected?.kind, "exact");
      assert.equal(e1.expected?.version, 1n);
      assert.equal(e1.stream, s);

      const e2 = await rejection(client.append(s, numbered(1), ExpectedVersion.noStream()));
      assert.ok(e2 instanceof WrongExpectedVersionError);
      assert.equal(e2.actual, 3n);
      assert.equal(e2.expected?.kind, "noStream");

      const e3 = await rejection(client.append(uniqueStream("wev"), numbered(1), ExpectedVersion.streamExists()));
      assert.ok(e3 instanceof WrongExpectedVersionError);
      assert.equal(e3.actual, 0n);

      assert.equal((await client.readStream(s)).streamVersion, 3n, "a failed check writes nothing");
    });

    it("StreamNotFoundError for a stream without events", async () => {
      const s = uniqueStream("missing");
      const e = await rejection(client.readStream(s));
      assert.ok(e instanceof StreamNotFoundError, String(e));
      assert.equal(e.code, GrpcStatus.NOT_FOUND);
      assert.equal(e.stream, s);
      await assert.rejects(collect(client.readStreamIter(s)), StreamNotFoundError);
    });

    it("AlreadyExistsError names the reused id", async () => {
      const id = newEventId();
      await client.append(uniqueStream("ae"), jsonEvent("A", {}, { eventId: id }));
      const e = await rejection(client.append(uniqueStream("ae"), jsonEvent("A", {}, { eventId: id })));
      assert.ok(e instanceof AlreadyExistsError, String(e));
      assert.equal(e.code, GrpcStatus.ALREADY_EXISTS);
      assert.equal(e.eventId, id);
    });

    it("InvalidArgumentError for bad input", async () => {
      const bad: Promise<unknown>[] = [
        client.append("", numbered(1)),
        client.append(uniqueStream("ia"), []),
        client.append(uniqueStream("ia"), jsonEvent("A", {}, { eventId: "0190F5A2-7C1E-7D3A-9B1C-2F4E5A6B7C8D" })),
        client.append(uniqueStream("ia"), { eventType: "" }),
        client.readStream(""),
      ];
      for (const p of bad) {
        const e = await rejection(p);
        assert.ok(e instanceof InvalidArgumentError, String(e));
        assert.equal(e.code, GrpcStatus.INVALID_ARGUMENT);
        assert.ok(e.details.length > 0);
      }
    });

    it("StreamTypeMismatchError when the stream type differs", async () => {
      const s = uniqueStream("stm");
      await client.append(s, numbered(1), ExpectedVersion.any(), { streamType: "Order" });
      await client.append(s, numbered(1), ExpectedVersion.any(), { streamType: "" }); // no opinion
      await client.append(s, numbered(1), ExpectedVersion.any(), { streamType: "Order" });
      const e = await rejection(client.append(s, numbered(1), ExpectedVersion.any(), { streamType: "Invoice" }));
      assert.ok(e instanceof StreamTypeMismatchError, String(e));
      assert.equal(e.code, GrpcStatus.FAILED_PRECONDITION);
      assert.equal(e.stream, s);
      assert.equal(e.streamType, "Invoice");
    });

    it("UnavailableError when nothing listens", async () => {
      const port = await freePort();
      const c = new EventStoreClient({ address: `127.0.0.1:${port}`, defaultDeadlineMs: 5000 });
      try {
        const e = await rejection(c.append(uniqueStream("u"), numbered(1)));
        assert.ok(e instanceof UnavailableError, String(e));
        assert.equal(e.code, GrpcStatus.UNAVAILABLE);
        await assert.rejects(EventStoreClient.connect({ address: `127.0.0.1:${port}`, timeoutMs: 300 }), UnavailableError);
      } finally {
        c.close();
      }
    });

    it("CancelledError when the AbortSignal is already aborted", async () => {
      const ac = new AbortController();
      ac.abort();
      const e = await rejection(client.readAll({ signal: ac.signal }));
      assert.ok(e instanceof CancelledError, String(e));
    });
  });

  describe("readStream", () => {
    let s: string;
    before(async () => {
      s = uniqueStream("page");
      await client.append(s, numbered(10));
    });

    it("reads one page forward and backward with the paging edges", async () => {
      const p1 = await client.readStream(s, { maxCount: 4 });
      assert.deepEqual(p1.events.map((e) => e.streamVersion), [1n, 2n, 3n, 4n]);
      assert.equal(p1.nextVersion, 5n);
      assert.equal(p1.isEnd, false);
      assert.equal(p1.streamVersion, 10n);

      const last = await client.readStream(s, { fromVersion: 8, maxCount: 100 });
      assert.deepEqual(last.events.map((e) => e.json<{ i: number }>().i), [8, 9, 10]);
      assert.equal(last.isEnd, true);
      assert.equal(last.nextVersion, 11n);

      const beyond = await client.readStream(s, { fromVersion: 50n });
      assert.equal(beyond.events.length, 0);
      assert.equal(beyond.isEnd, true);
      assert.equal(beyond.nextVersion, 11n);

      const back = await client.readStream(s, { direction: "backward", maxCount: 3 });
      assert.deepEqual(back.events.map((e) => e.streamVersion), [10n, 9n, 8n]);
      assert.equal(back.nextVersion, 7n);
      assert.equal(back.isEnd, false);

      const backStart = await client.readStream(s, { direction: "backward", fromVersion: 2 });
      assert.deepEqual(backStart.events.map((e) => e.streamVersion), [2n, 1n]);
      assert.equal(backStart.isEnd, true);
      assert.equal(backStart.nextVersion, 0n);

      const backBeyond = await client.readStream(s, { direction: "backward", fromVersion: 99, maxCount: 1 });
      assert.deepEqual(backBeyond.events.map((e) => e.streamVersion), [10n]);
    });

    it("readStreamIter walks every page forward and backward", async () => {
      const fwd = await collect(client.readStreamIter(s, { pageSize: 3 }));
      assert.deepEqual(fwd.map((e) => Number(e.streamVersion)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      const bwd = await collect(client.readStreamIter(s, { pageSize: 3, direction: "backward" }));
      assert.deepEqual(bwd.map((e) => Number(e.streamVersion)), [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
      const mid = await collect(client.readStreamIter(s, { pageSize: 4, fromVersion: 6, direction: "backward" }));
      assert.deepEqual(mid.map((e) => Number(e.streamVersion)), [6, 5, 4, 3, 2, 1]);
      const tail = await collect(client.readStreamIter(s, { fromVersion: 9n }));
      assert.deepEqual(tail.map((e) => Number(e.streamVersion)), [9, 10]);
      // early exit
      let n = 0;
      for await (const _ of client.readStreamIter(s, { pageSize: 2 })) if (++n === 3) break;
      assert.equal(n, 3);
    });
  });
});

describe("readAll (fresh server, exact positions)", () => {
  let server: TestServer;
  let client: EventStoreClient;

  before(async () => {
    server = await TestServer.start();
    client = server.client();
  });

  after(async () => {
    client?.close();
    await server?.stop();
  });

  it("reads an empty log", async () => {
    const p = await client.readAll();
    assert.equal(p.events.length, 0);
    assert.equal(p.isEnd, true);
    assert.equal(p.headPosition, 0n);
  });

  it("pages forward and backward, with and without a filter", async () => {
    // positions 1..12: order-a (A,B alternating) and invoice-b (C)
    for (let i = 0; i < 4; i++) {
      await client.append("order-a", [jsonEvent(i % 2 ? "B" : "A", { i }), jsonEvent("A", { i })]);
      await client.append("invoice-b", jsonEvent("C", { i }));
    }
    const first = await client.readAll({ maxCount: 5 });
    assert.deepEqual(first.events.map((e) => e.globalPosition), [1n, 2n, 3n, 4n, 5n]);
    assert.equal(first.nextPosition, 6n);
    assert.equal(first.isEnd, false);
    assert.equal(first.headPosition, 12n);

    const end = await client.readAll({ fromPosition: 10 });
    assert.deepEqual(end.events.map((e) => e.globalPosition), [10n, 11n, 12n]);
    assert.equal(end.isEnd, true);
    assert.equal(end.nextPosition, 13n);

    const back = await client.readAll({ direction: "backward", maxCount: 2 });
    assert.deepEqual(back.events.map((e) => e.globalPosition), [12n, 11n]);
    assert.equal(back.nextPosition, 10n);

    const all = await collect(client.readAllIter({ pageSize: 5 }));
    assert.deepEqual(all.map((e) => Number(e.globalPosition)), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const allBack = await collect(client.readAllIter({ pageSize: 5, direction: "backward" }));
    assert.deepEqual(allBack.map((e) => Number(e.globalPosition)), [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);

    const invoices = await collect(client.readAllIter({ pageSize: 2, filter: { streamPrefix: "invoice-" } }));
    assert.deepEqual(invoices.map((e) => Number(e.globalPosition)), [3, 6, 9, 12]);
    assert.ok(invoices.every((e) => e.streamId === "invoice-b"));

    const bs = await collect(
      client.readAllIter({ direction: "backward", filter: { streamPrefix: "order-", eventTypes: ["B"] } }),
    );
    assert.deepEqual(bs.map((e) => Number(e.globalPosition)), [10, 4]);

    const page = await client.readAll({ filter: { eventTypes: ["C", "B"] }, maxCount: 3 });
    assert.deepEqual(page.events.map((e) => e.eventType), ["C", "B", "C"]);
  });
});
