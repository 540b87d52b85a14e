// Tags, queries, conditional appends and appendMany (Extension 1 of the API) against a real
// server, and a conditional append against a server that knows Append but not AppendMany.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import * as path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  AlreadyExistsError,
  AppendConditionFailedError,
  EventInput,
  EventStoreClient,
  ExpectedVersion,
  GrpcStatus,
  InvalidArgumentError,
  jsonEvent,
  newEventId,
  proto,
  Query,
  RecordedEvent,
  StreamNotFoundError,
  UnimplementedError,
  WrongExpectedVersionError,
} from "../src";
import { PKG_ROOT, rejection, take, TestServer, uniqueStream } from "./helpers";

const run = promisify(execFile);

/** A tag no other test uses. */
const tag = (): string => `t:${randomUUID().slice(0, 12)}`;
const ev = (eventType: string, ...tags: string[]): EventInput => jsonEvent(eventType, {}, { tags });

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

let server: TestServer;
let client: EventStoreClient;

before(async () => {
  server = await TestServer.start();
  client = new EventStoreClient({ address: server.address, defaultDeadlineMs: 10_000 });
});

after(async () => {
  client.close();
  await server.stop();
});

async function byQuery(q: Query, fromPosition: bigint): Promise<bigint[]> {
  const events = await collect(client.readAllIter({ fromPosition, filter: { items: q } }));
  return events.map((e) => e.globalPosition - fromPosition);
}

describe("tags and queries", () => {
  it("tags round-trip on every read and the subscription", async () => {
    const stream = uniqueStream("tags");
    const [a, b] = [tag(), tag()];
    const r = await client.append(stream, [ev("Tagged", b, a), ev("Untagged")]);
    assert.deepEqual((await client.readStream(stream)).events.map((e) => e.tags), [[b, a], []]);
    const page = await client.readAll({ fromPosition: r.firstGlobalPosition, maxCount: 2 });
    assert.deepEqual(page.events.map((e) => e.tags), [[b, a], []]);
    assert.ok(Object.isFrozen(page.events[0]!.tags));
    const sub = client.subscribe({ fromPosition: r.firstGlobalPosition, filter: { streamPrefix: stream } });
    const [first] = await take(sub[Symbol.asyncIterator](), 1);
    sub.close();
    assert.equal(first?.type, "event");
    assert.deepEqual(first?.type === "event" ? first.event.tags : undefined, [b, a]);
  });

  it("a query selects by types, tags, both and several items", async () => {
    const stream = uniqueStream("query");
    const [c, s] = [tag(), tag()];
    const r = await client.append(stream, [ev("A", c), ev("B", c, s), ev("A", s), ev("C", c)]);
    const p = r.firstGlobalPosition;
    assert.deepEqual(await byQuery(Query.of({ tags: [c] }), p), [0n, 1n, 3n]);
    assert.deepEqual(await byQuery(Query.of({ tags: [c, s] }), p), [1n]);
    assert.deepEqual(await byQuery(Query.of({ eventTypes: ["A"], tags: [c] }), p), [0n]);
    assert.deepEqual(await byQuery(Query.of({ eventTypes: ["A", "C"], tags: [c] }), p), [0n, 3n]);
    const both = Query.of({ eventTypes: ["A"], tags: [c] }).or({ tags: [s] });
    assert.deepEqual(await byQuery(both, p), [0n, 1n, 2n]);
    assert.deepEqual([...both], [{ eventTypes: ["A"], tags: [c] }, { eventTypes: [], tags: [s] }]);
    // Types only (a scan), with the stream prefix; and a plain list of items.
    const typesOnly = await collect(
      client.readAllIter({ fromPosition: p, filter: { streamPrefix: stream, items: [{ eventTypes: ["B", "C"] }] } }),
    );
    assert.deepEqual(typesOnly.map((e) => e.eventType), ["B", "C"]);
    assert.throws(() => Query.of({ tags: "course:c1" as unknown as string[] }), TypeError);
  });

  it("a subscription by query replays, then delivers live matches", async () => {
    const stream = uniqueStream("subq");
    const c = tag();
    const r = await client.append(stream, [ev("A", c), ev("A"), ev("B", c)]);
    const got: bigint[] = [];
    let live: bigint | undefined;
    for await (const m of client.subscribe({ fromPosition: r.firstGlobalPosition, filter: { items: Query.of({ tags: [c] }) } })) {
      if (m.type === "caughtUp") {
        live = (await client.append(stream, [ev("A"), ev("C", c)])).lastGlobalPosition;
      } else if (m.type === "event") {
        assert.ok(m.event.tags.includes(c));
        got.push(m.event.globalPosition);
        if (got.length === 3) break;
      }
    }
    const p = r.firstGlobalPosition;
    assert.deepEqual(got, [p, p + 2n, live]);
  });
});

describe("conditional append", () => {
  it("passes, then fails with the conflicting position and stores nothing", async () => {
    const stream = uniqueStream("cond");
    const c = tag();
    const query = Query.of({ eventTypes: ["Booked"], tags: [c] });
    const head = (await client.readAll({ filter: { items: query } })).headPosition;
    const ok = await client.append(stream, ev("Booked", c), undefined, { condition: { failIfEventsMatch: query, after: head } });
    assert.equal(ok.firstStreamVersion, 1n);
    const err = await rejection(client.append(stream, ev("Booked", c), undefined, { condition: { failIfEventsMatch: query, after: head } }));
    assert.ok(err instanceof AppendConditionFailedError, String(err));
    assert.equal(err.code, GrpcStatus.ABORTED);
    assert.equal(err.position, ok.firstGlobalPosition);
    assert.equal(err.appendIndex, undefined);
    assert.equal((await client.readStream(stream)).streamVersion, 1n);
    // After the booking's own position the condition holds again; after 0 = the whole log.
    const again = await client.append(stream, ev("Booked", c), undefined, {
      condition: { failIfEventsMatch: query, after: ok.lastGlobalPosition },
    });
    assert.equal(again.firstStreamVersion, 2n);
    const whole = await rejection(client.append(stream, ev("Booked", c), undefined, { condition: { failIfEventsMatch: [{ tags: [c] }] } }));
    assert.ok(whole instanceof AppendConditionFailedError);
    assert.equal(whole.position, ok.firstGlobalPosition);
    // Unrelated events never match.
    await client.append(stream, ev("Booked", tag()), undefined, { condition: { failIfEventsMatch: query, after: again.lastGlobalPosition } });
  });

  it("a retried conditional append is a duplicate; the expected version is checked first", async () => {
    const stream = uniqueStream("dup");
    const c = tag();
    const condition = { failIfEventsMatch: Query.of({ tags: [c] }), after: (await client.readAll()).headPosition };
    const e = jsonEvent("Booked", {}, { eventId: newEventId(), tags: [c] });
    const first = await client.append(stream, e, undefined, { condition });
    const retry = await client.append(stream, e, undefined, { condition });
    assert.equal(retry.duplicate, true);
    assert.equal(retry.firstGlobalPosition, first.firstGlobalPosition);
    const wrong = await rejection(client.append(stream, ev("X", c), ExpectedVersion.exact(3), { condition }));
    assert.ok(wrong instanceof WrongExpectedVersionError, String(wrong));
    assert.equal(wrong.actual, 1n);
    assert.equal(wrong.stream, stream);
    assert.equal(wrong.appendIndex, 0);
  });

  it("bad input is InvalidArgumentError naming the field", async () => {
    const stream = uniqueStream("bad");
    const noItems = await rejection(client.append(stream, ev("A"), undefined, { condition: { failIfEventsMatch: [] } }));
    assert.ok(noItems instanceof InvalidArgumentError);
    assert.match(noItems.details, /fail_if_events_match/);
    assert.ok((await rejection(client.append(stream, ev("A", "")))) instanceof InvalidArgumentError);
    assert.ok((await rejection(client.readStream(stream))) instanceof StreamNotFoundError);
  });
});

describe("appendMany", () => {
  it("commits all appends in one run of positions and returns one result each", async () => {
    const [s1, s2] = [uniqueStream("am"), uniqueStream("am")];
    const results = await client.appendMany([
      { stream: s1, events: [ev("A"), ev("B")], expected: ExpectedVersion.noStream(), streamType: "Thing" },
      { stream: s2, events: ev("C") },
      { stream: s1, events: ev("D"), expected: ExpectedVersion.exact(2) }, // sees the first append
    ]);
    assert.deepEqual(results.map((r) => [r.firstStreamVersion, r.lastStreamVersion]), [[1n, 2n], [1n, 1n], [3n, 3n]]);
    const p = results[0]!.firstGlobalPosition;
    assert.deepEqual(results.map((r) => [r.firstGlobalPosition, r.lastGlobalPosition]), [[p, p + 1n], [p + 2n, p + 2n], [p + 3n, p + 3n]]);
    const read = (await client.readStream(s1)).events;
    assert.deepEqual(read.map((e: RecordedEvent) => e.eventType), ["A", "B", "D"]);
    assert.equal(read[0]!.streamType, "Thing");
  });

  it("a failing append in the middle stores nothing and is named by appendIndex", async () => {
    const [s1, s2, s3] = [uniqueStream("am"), uniqueStream("am"), uniqueStream("am")];
    await client.append(s2, ev("Existing"));
    const head = (await client.readAll()).headPosition;
    const err = await rejection(
      client.appendMany([
        { stream: s1, events: ev("A") },
        { stream: s2, events: ev("B"), expected: ExpectedVersion.noStream() },
        { stream: s3, events: ev("C") },
      ]),
    );
    assert.ok(err instanceof WrongExpectedVersionError, String(err));
    assert.equal(err.appendIndex, 1);
    assert.equal(err.stream, s2);
    assert.equal(err.expected, ExpectedVersion.noStream());
    assert.equal(err.actual, 1n);
    for (const s of [s1, s3]) assert.ok((await rejection(client.readStream(s))) instanceof StreamNotFoundError);
    assert.equal((await client.readAll()).headPosition, head);
    // The actual version counts the earlier appends of the same request.
    const second = await rejection(
      client.appendMany([{ stream: s1, events: ev("A") }, { stream: s1, events: ev("B"), expected: ExpectedVersion.exact(0) }]),
    );
    assert.ok(second instanceof WrongExpectedVersionError);
    assert.equal(second.appendIndex, 1);
    assert.equal(second.actual, 1n);
  });

  it("a failed condition names no append; the request's own events never match it", async () => {
    const [s1, s2] = [uniqueStream("am"), uniqueStream("am")];
    const c = tag();
    const seen = await client.append(s1, ev("Seen", c));
    const err = await rejection(
      client.appendMany([{ stream: s1, events: ev("A", c) }, { stream: s2, events: ev("B") }], {
        condition: { failIfEventsMatch: Query.of({ tags: [c] }), after: seen.lastGlobalPosition - 1n },
      }),
    );
    assert.ok(err instanceof AppendConditionFailedError, String(err));
    assert.equal(err.position, seen.firstGlobalPosition);
    assert.equal(err.appendIndex, undefined);
    const ok = await client.appendMany([{ stream: s1, events: ev("A", c) }, { stream: s2, events: ev("B", c) }], {
      condition: { failIfEventsMatch: Query.of({ tags: [c] }), after: seen.lastGlobalPosition },
    });
    assert.equal(ok.length, 2);
  });

  it("other errors carry the append index too", async () => {
    const s1 = uniqueStream("am");
    const used = newEventId();
    await client.append(s1, jsonEvent("A", {}, { eventId: used }));
    const reused = await rejection(
      client.appendMany([{ stream: s1, events: ev("B") }, { stream: s1, events: jsonEvent("A", {}, { eventId: used }) }]),
    );
    assert.ok(reused instanceof AlreadyExistsError);
    assert.equal(reused.appendIndex, 1);
    const bad = await rejection(client.appendMany([{ stream: s1, events: ev("B") }, { stream: s1, events: ev("") }]));
    assert.ok(bad instanceof InvalidArgumentError);
    assert.equal(bad.appendIndex, 1);
    assert.equal((await client.readStream(s1)).streamVersion, 1n);
  });
});

describe("a server without the extension", () => {
  const old = new grpc.Server();
  let oldClient: EventStoreClient;

  before(async () => {
    // Only Append: AppendMany is answered UNIMPLEMENTED, as by a server that predates it.
    const definition = { append: proto.EventStoreService.append };
    old.addService(definition, {
      append: (_call: unknown, cb: grpc.sendUnaryData<proto.AppendResponse>) =>
        cb(null, proto.AppendResponse.fromPartial({ firstStreamVersion: 1n, lastStreamVersion: 1n })),
    });
    const port = await new Promise<number>((resolve, reject) =>
      old.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    oldClient = new EventStoreClient({ address: `127.0.0.1:${port}`, defaultDeadlineMs: 10_000 });
  });

  after(() => {
    oldClient.close();
    old.forceShutdown();
  });

  it("never receives a conditional append as a plain Append", async () => {
    assert.equal((await oldClient.append("s", ev("A"))).firstStreamVersion, 1n);
    const err = await rejection(oldClient.append("s", ev("A"), undefined, { condition: { failIfEventsMatch: [{ tags: ["x"] }] } }));
    assert.ok(err instanceof UnimplementedError, String(err));
    assert.equal(err.code, GrpcStatus.UNIMPLEMENTED);
    assert.ok((await rejection(oldClient.appendMany([{ stream: "s", events: ev("A") }]))) instanceof UnimplementedError);
  });
});

it("the enrolment example runs", async () => {
  const js = path.join(PKG_ROOT, "build/examples/enrolment.js");
  const { stdout } = await run(process.execPath, [js], { env: { ...process.env, ES_ADDRESS: server.address }, timeout: 30_000 });
  assert.match(stdout, /no \(full\)/);
  assert.match(stdout, /stale decision refused/);
  assert.match(stdout, /enrolment: ok/);
});
