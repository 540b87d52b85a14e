// Subscriptions against a real server: catch-up, live, filters, checkpoints,
// closing, and the automatic resume across server restarts.
//
// The in-memory backend loses everything on restart, so the resume tests run:
// subscribe on server A and receive positions 1..5; stop A (SIGTERM or SIGKILL);
// start server B on the SAME port (empty log); append 8 events on B (positions
// 1..8). A client that resumed correctly asks B for positions ≥ 6 and so receives
// exactly 6, 7, 8 — then the live 9 — and never 1..5 again.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  CancelledError,
  EventStoreClient,
  InvalidArgumentError,
  jsonEvent,
  ReconnectInfo,
  SubscriptionMessage,
} from "../src";
import { sleep, take, TestServer, uniqueStream, waitFor } from "./helpers";

const evs = (n: number, type = "E") => Array.from({ length: n }, (_, i) => jsonEvent(type, { i }));

function describeMsg(m: SubscriptionMessage): string {
  switch (m.type) {
    case "event":
      return `event@${m.event.globalPosition}`;
    case "caughtUp":
      return `caughtUp@${m.headPosition}`;
    case "checkpoint":
      return `checkpoint@${m.position}`;
    case "fellBehind":
      return `fellBehind@${m.headPosition}`;
  }
}

describe("subscribe", () => {
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

  it("catches up, says caughtUp, then delivers live events in order", async () => {
    await client.append("cu-1", evs(3));
    const sub = client.subscribe({ fromPosition: 0 });
    const it = sub[Symbol.asyncIterator]();
    const first = await take(it, 4);
    assert.deepEqual(first.map(describeMsg), ["event@1", "event@2", "event@3", "caughtUp@3"]);
    await client.append("cu-2", evs(2));
    const live = await take(it, 2);
    assert.deepEqual(live.map(describeMsg), ["event@4", "event@5"]);
    assert.equal(sub.resumePosition, 6n);
    await it.return?.();
    assert.equal(sub.closed, true);
  });

  it("starts at fromPosition, or at the end with fromEnd", async () => {
    const head = (await client.readAll({ direction: "backward", maxCount: 1 })).headPosition;
    const it1 = client.subscribe({ fromPosition: head })[Symbol.asyncIterator]();
    assert.deepEqual((await take(it1, 2)).map(describeMsg), [`event@${head}`, `caughtUp@${head}`]);
    await it1.return?.();

    const sub = client.subscribe({ fromEnd: true });
    assert.equal(sub.resumePosition, undefined);
    const it2 = sub[Symbol.asyncIterator]();
    assert.deepEqual((await take(it2, 1)).map(describeMsg), [`caughtUp@${head}`]);
    assert.equal(sub.resumePosition, head + 1n);
    await client.append(uniqueStream("fe"), evs(1));
    assert.deepEqual((await take(it2, 1)).map(describeMsg), [`event@${head + 1n}`]);
    await it2.return?.();
  });

  it("filters by prefix and type and sends checkpoints", async () => {
    const prefix = uniqueStream("flt");
    const sub = client.subscribe({
      fromEnd: true,
      filter: { streamPrefix: prefix, eventTypes: ["Match"] },
      checkpointInterval: 3,
    });
    const it = sub[Symbol.asyncIterator]();
    const [cu] = await take(it, 1);
    assert.equal(cu?.type, "caughtUp");
    const h = cu.type === "caughtUp" ? cu.headPosition : 0n;
    await client.append(`${prefix}-x`, [jsonEvent("Match", { n: 1 }), ...evs(3, "Other")]); // h+1 .. h+4
    // The 3rd non-matching event in a row gets a checkpoint.
    assert.deepEqual((await take(it, 2)).map(describeMsg), [`event@${h + 1n}`, `checkpoint@${h + 4n}`]);
    await client.append(uniqueStream("elsewhere"), evs(1, "Match")); // h+5: other prefix
    // A non-matching event where the server reaches the head gets one too.
    assert.deepEqual((await take(it, 1)).map(describeMsg), [`checkpoint@${h + 5n}`]);
    await client.append(`${prefix}-y`, jsonEvent("Match", { n: 2 })); // h+6
    assert.deepEqual((await take(it, 1)).map(describeMsg), [`event@${h + 6n}`]);
    assert.equal(sub.resumePosition, h + 7n);
    await it.return?.();
  });

  it("events() yields only the events", async () => {
    const s = uniqueStream("only");
    const sub = client.subscribe({ fromEnd: true, filter: { streamPrefix: s } });
    const it = sub.events()[Symbol.asyncIterator]();
    const pending = take(it, 2);
    await sleep(50);
    await client.append(s, evs(2));
    const got = await pending;
    assert.deepEqual(
      got.map((e) => e.streamVersion),
      [1n, 2n],
    );
    sub.close();
    assert.equal((await it.next()).done, true);
  });

  it("can be closed by break, by close(), and by an AbortSignal", async () => {
    // break
    let n = 0;
    const s1 = client.subscribe({});
    for await (const _ of s1) if (++n === 2) break;
    assert.equal(s1.closed, true);

    // close() while the iterator waits for a live event
    const s2 = client.subscribe({ fromEnd: true });
    const done2 = (async () => {
      const seen: string[] = [];
      for await (const m of s2) seen.push(m.type);
      return seen;
    })();
    await sleep(200);
    s2.close();
    assert.deepEqual(await done2, ["caughtUp"]);

    // AbortSignal
    const ac = new AbortController();
    const s3 = client.subscribe({ fromEnd: true, signal: ac.signal });
    const done3 = (async () => {
      const seen: string[] = [];
      for await (const m of s3) seen.push(m.type);
      return seen;
    })();
    await sleep(200);
    ac.abort();
    assert.deepEqual(await done3, ["caughtUp"]);

    // an already-aborted signal yields nothing
    const s4 = client.subscribe({ signal: AbortSignal.abort() });
    for await (const _ of s4) assert.fail("no message expected");

    // closing the client ends its subscriptions; later calls reject
    const other = server.client();
    const s6 = other.subscribe({ fromEnd: true });
    const done6 = (async () => {
      const seen: string[] = [];
      for await (const m of s6) seen.push(m.type);
      return seen;
    })();
    await sleep(200);
    other.close();
    assert.deepEqual(await done6, ["caughtUp"]);
    await assert.rejects(other.readAll(), CancelledError);
    for await (const _ of other.subscribe({})) assert.fail("no message expected");

    // a subscription is iterated once
    const s5 = client.subscribe({});
    s5[Symbol.asyncIterator]();
    assert.throws(() => s5[Symbol.asyncIterator](), /only once/);
    s5.close();
  });

  // Many events, so that a server that batches sends full batches during catch-up and
  // whatever is ready while live: each event exactly once, in order, one at a time.
  for (const maxBatch of [undefined, 1, 1000]) {
    it(`delivers every event exactly once, in order, with maxBatch ${maxBatch ?? "default"}`, async () => {
      const prefix = uniqueStream("many");
      const stored = 2500;
      for (let i = 0; i < stored; i += 500) await client.append(`${prefix}-a`, evs(500));
      const sub = client.subscribe({ fromPosition: 1, filter: { streamPrefix: prefix }, maxBatch });
      const versions: bigint[] = [];
      const positions: bigint[] = [];
      let caughtUp = 0;
      const live = 700;
      const consumer = (async () => {
        for await (const m of sub) {
          if (m.type === "caughtUp") caughtUp++;
          if (m.type !== "event") continue;
          versions.push(m.event.streamVersion);
          positions.push(m.event.globalPosition);
          assert.equal(sub.resumePosition, m.event.globalPosition + 1n);
          if (versions.length === stored + live) break;
        }
      })();
      await waitFor(() => caughtUp === 1, 20_000, "caughtUp");
      for (let i = 0; i < live; i += 100) await client.append(`${prefix}-a`, evs(100)); // live, several per commit
      await consumer;
      assert.deepEqual(versions, Array.from({ length: stored + live }, (_, i) => BigInt(i + 1)));
      assert.ok(positions.every((p, i) => i === 0 || p > positions[i - 1]!), "increasing positions");
      assert.equal(caughtUp, 1);
    });
  }

  it("a caller that stops in the middle of a batch resumes right after its last event", async () => {
    const prefix = uniqueStream("mid");
    for (let i = 0; i < 3; i++) await client.append(`${prefix}-a`, evs(200));
    const first = client.subscribe({ fromPosition: 1, filter: { streamPrefix: prefix }, maxBatch: 64 });
    const seen: bigint[] = [];
    for await (const m of first) {
      if (m.type === "event") seen.push(m.event.streamVersion);
      if (seen.length === 100) break; // in the middle of the second batch of 64
    }
    const second = client.subscribe({ fromPosition: first.resumePosition, filter: { streamPrefix: prefix }, maxBatch: 64 });
    for await (const m of second) {
      if (m.type === "event") seen.push(m.event.streamVersion);
      if (m.type === "caughtUp") break;
    }
    assert.deepEqual(seen, Array.from({ length: 600 }, (_, i) => BigInt(i + 1)));
  });

  it("maxBatch above 1000 ends the iteration with InvalidArgumentError", async () => {
    const sub = client.subscribe({ maxBatch: 1001 });
    // The first step rejects: no caughtUp (or anything else) comes first.
    await assert.rejects(sub[Symbol.asyncIterator]().next(), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError, String(e));
      assert.match(e.message, /max_batch/);
      return true;
    });
    assert.equal(sub.closed, true);
  });

  it("throws non-retryable errors (INVALID_ARGUMENT) as typed errors", async () => {
    const types = Array.from({ length: 65 }, (_, i) => `T${i}`);
    const sub = client.subscribe({ filter: { eventTypes: types } });
    await assert.rejects(
      (async () => {
        for await (const _ of sub);
      })(),
      InvalidArgumentError,
    );
  });
});

describe("subscribe resumes by itself after a server restart", () => {
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    it(`after ${signal}: no gap, no duplicate`, async () => {
      let server = await TestServer.start();
      const port = server.port;
      const client = server.client({ retry: { initialDelayMs: 50, maxDelayMs: 500 } });
      const reconnects: ReconnectInfo[] = [];
      // A separate subchannel pool: grpc-js would otherwise share the subscriber's
      // connection, which may still be in its reconnect backoff when B starts.
      const separate = { channelOptions: { "grpc.use_local_subchannel_pool": 1 } };
      try {
        await client.append("order-1", evs(5)); // positions 1..5 on A
        const sub = client.subscribe({ fromPosition: 1, onReconnect: (i) => reconnects.push(i) });
        const seen: SubscriptionMessage[] = [];
        const consumer = (async () => {
          for await (const m of sub) seen.push(m);
        })();
        await waitFor(() => seen.length >= 6, 10_000, "catch-up on server A");
        assert.deepEqual(seen.map(describeMsg), ["event@1", "event@2", "event@3", "event@4", "event@5", "caughtUp@5"]);
        assert.equal(sub.resumePosition, 6n);

        await server.stop(signal);
        server = await TestServer.startOnPort(port); // B: same port, empty log
        const onB = server.client(separate);
        await onB.append("order-2", evs(8)); // positions 1..8 on B
        await waitFor(() => seen.some((m) => m.type === "event" && m.event.globalPosition === 8n), 15_000, "resume");
        await onB.append("order-3", evs(1)); // live: 9
        await waitFor(() => seen.some((m) => m.type === "event" && m.event.globalPosition === 9n), 10_000, "live");
        onB.close();

        const positions = seen.flatMap((m) => (m.type === "event" ? [Number(m.event.globalPosition)] : []));
        assert.deepEqual(positions, [1, 2, 3, 4, 5, 6, 7, 8, 9], "each position once, in order");
        const afterRestart = seen.slice(6).filter((m) => m.type === "event");
        assert.ok(afterRestart.every((m) => m.type === "event" && m.event.streamId !== "order-1"));
        assert.ok(reconnects.length >= 1);
        assert.equal(reconnects[0]?.resumeFrom, 6n);
        assert.equal(reconnects[0]?.error.code, 14); // UNAVAILABLE
        assert.equal(sub.resumePosition, 10n);
        sub.close();
        await consumer;
      } finally {
        client.close();
        await server.stop();
      }
    });
  }

  it("resumes a filtered subscription from its last checkpoint + 1", async () => {
    let server = await TestServer.start();
    const port = server.port;
    const client = server.client({ retry: { initialDelayMs: 50, maxDelayMs: 500 } });
    try {
      const sub = client.subscribe({ filter: { eventTypes: ["Match"] }, checkpointInterval: 2, fromPosition: 1 });
      const seen: SubscriptionMessage[] = [];
      const consumer = (async () => {
        for await (const m of sub) seen.push(m);
      })();
      await waitFor(() => seen.length >= 1, 5000, "caughtUp");
      await client.append("a", [jsonEvent("Match", {}), ...evs(4, "Other")]); // 1 match, 2..5 others
      await waitFor(() => seen.some((m) => m.type === "checkpoint" && m.position === 5n), 5000, "checkpoint 5");
      assert.equal(sub.resumePosition, 6n);

      await server.stop("SIGKILL");
      server = await TestServer.startOnPort(port);
      const onB = server.client({ channelOptions: { "grpc.use_local_subchannel_pool": 1 } });
      await onB.append("b", [jsonEvent("Match", { n: 1 }), ...evs(4, "Other"), jsonEvent("Match", { n: 6 })]); // 1..6
      await waitFor(() => seen.some((m) => m.type === "event" && m.event.globalPosition === 6n), 15_000, "resume");
      onB.close();
      const events = seen.flatMap((m) => (m.type === "event" ? [`${m.event.streamId}@${m.event.globalPosition}`] : []));
      assert.deepEqual(events, ["a@1", "b@6"]);
      sub.close();
      await consumer;
    } finally {
      client.close();
      await server.stop();
    }
  });
});
