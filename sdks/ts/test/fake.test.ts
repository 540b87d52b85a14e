// What the real server cannot show yet (TLS, bearer tokens, deadlines) and the
// exact resume requests of a subscription (also in the middle of an EventBatch),
// against an in-process fake server built from the generated service definition.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  CancelledError,
  DEFAULT_MAX_BATCH,
  DeadlineExceededError,
  EventStoreClient,
  proto,
  ReconnectInfo,
  SubscriptionMessage,
  UnauthenticatedError,
  UnavailableError,
} from "../src";
import { rejection, sleep, take, waitFor } from "./helpers";

type SubscribeScript = (
  call: grpc.ServerWritableStream<proto.SubscribeRequest, proto.SubscribeResponse>,
  attempt: number,
) => void;

class FakeServer {
  readonly server = new grpc.Server();
  port = 0;
  requiredToken: string | undefined;
  readonly authHeaders: (string | undefined)[] = [];
  readonly subscribeRequests: proto.SubscribeRequest[] = [];
  subscribeScript: SubscribeScript = (call) => call.end();
  readAllDelayMs = 0;

  constructor() {
    const impl: proto.EventStoreServer = {
      append: (call, cb) => {
        if (!this.authorized(call.metadata)) return cb({ code: grpc.status.UNAUTHENTICATED, details: "bad token" });
        cb(null, proto.AppendResponse.fromPartial({ firstStreamVersion: 1n, lastStreamVersion: 1n, firstGlobalPosition: 7n, lastGlobalPosition: 7n }));
      },
      readStream: (_call, cb) => cb({ code: grpc.status.NOT_FOUND, details: "none" }),
      readAll: (call, cb) => {
        if (!this.authorized(call.metadata)) return cb({ code: grpc.status.UNAUTHENTICATED, details: "bad token" });
        const t = setTimeout(() => cb(null, proto.ReadAllResponse.fromPartial({ isEnd: true })), this.readAllDelayMs);
        call.on("cancelled", () => clearTimeout(t));
      },
      subscribe: (call) => {
        this.subscribeRequests.push(call.request);
        this.subscribeScript(call, this.subscribeRequests.length);
      },
      appendMany: (_call, cb) => cb({ code: grpc.status.UNIMPLEMENTED, details: "not in this fake" }),
    };
    this.server.addService(proto.EventStoreService, impl);
  }

  private authorized(md: grpc.Metadata): boolean {
    const v = md.get("authorization")[0];
    this.authHeaders.push(v === undefined ? undefined : String(v));
    return this.requiredToken === undefined || v === `Bearer ${this.requiredToken}`;
  }

  async listen(creds = grpc.ServerCredentials.createInsecure()): Promise<this> {
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync("127.0.0.1:0", creds, (err, port) => (err ? reject(err) : resolve(port))),
    );
    return this;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

const recorded = (pos: bigint): proto.RecordedEvent =>
  proto.RecordedEvent.fromPartial({ streamId: "s", globalPosition: pos, streamVersion: pos, eventType: "E" });
const ev = (pos: bigint): proto.SubscribeResponse => ({ message: { $case: "event", value: recorded(pos) } });
/** An EventBatch of the events at positions from..to. */
const batch = (from: bigint, to: bigint): proto.SubscribeResponse => {
  const events: proto.RecordedEvent[] = [];
  for (let p = from; p <= to; p++) events.push(recorded(p));
  return { message: { $case: "batch", value: { events } } };
};
const cp = (pos: bigint): proto.SubscribeResponse => ({ message: { $case: "checkpoint", value: { position: pos } } });
const cu = (head: bigint): proto.SubscribeResponse => ({ message: { $case: "caughtUp", value: { headPosition: head } } });
const drop = (call: grpc.ServerWritableStream<proto.SubscribeRequest, proto.SubscribeResponse>, code = grpc.status.UNAVAILABLE) =>
  setTimeout(() => call.emit("error", Object.assign(new Error("drop"), { code, details: "dropped" })), 20);

function tag(m: SubscriptionMessage): string {
  if (m.type === "event") return `e${m.event.globalPosition}`;
  if (m.type === "checkpoint") return `cp${m.position}`;
  if (m.type === "caughtUp") return `cu${m.headPosition}`;
  return `fb${m.headPosition}`;
}

describe("bearer token", () => {
  let fake: FakeServer;
  before(async () => {
    fake = await new FakeServer().listen();
    fake.requiredToken = "s3cret";
  });
  after(() => fake.stop());

  it("sends authorization: Bearer <token> and maps UNAUTHENTICATED", async () => {
    const good = new EventStoreClient({ address: fake.address, token: "s3cret" });
    const r = await good.append("s", { eventType: "E" });
    assert.equal(r.firstGlobalPosition, 7n);
    assert.equal(fake.authHeaders.at(-1), "Bearer s3cret");
    good.close();

    const rotating = new EventStoreClient({ address: fake.address, token: async () => "s3cret" });
    await rotating.readAll();
    rotating.close();

    for (const token of [undefined, "wrong"]) {
      const c = new EventStoreClient({ address: fake.address, token });
      const e = await rejection(c.append("s", { eventType: "E" }));
      assert.ok(e instanceof UnauthenticatedError, String(e));
      assert.equal(e.code, grpc.status.UNAUTHENTICATED);
      c.close();
    }
    assert.equal(fake.authHeaders.at(-2), undefined);
    assert.equal(fake.authHeaders.at(-1), "Bearer wrong");
  });
});

describe("TLS with a CA", () => {
  let dir: string;
  let fake: FakeServer;
  let ca: Buffer;

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "es-ts-tls-"));
    const run = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=es-test-ca",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
    run("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost");
    writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
      "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf");
    ca = readFileSync(path.join(dir, "ca.pem"));
    const creds = grpc.ServerCredentials.createSsl(null, [
      { cert_chain: readFileSync(path.join(dir, "server.pem")), private_key: readFileSync(path.join(dir, "server.key")) },
    ]);
    fake = await new FakeServer().listen(creds);
    fake.requiredToken = "tok";
  });
  after(() => {
    fake?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("connects with the CA and the token", async () => {
    // by name (the certificate has DNS:localhost and IP:127.0.0.1)
    const c = await EventStoreClient.connect({ address: `localhost:${fake.port}`, tls: { ca }, token: "tok", timeoutMs: 5000 });
    const r = await c.append("s", { eventType: "E" });
    assert.equal(r.lastGlobalPosition, 7n);
    assert.equal(fake.authHeaders.at(-1), "Bearer tok");
    c.close();
    // by IP address, checked against another name
    const byName = new EventStoreClient({
      address: fake.address,
      tls: { ca: ca.toString(), serverNameOverride: "localhost" },
      token: "tok",
    });
    await byName.readAll();
    byName.close();
  });

  it("fails with UnavailableError without the CA or in plaintext", async () => {
    for (const opts of [{ tls: true as const }, { insecure: true }]) {
      const c = new EventStoreClient({ address: `localhost:${fake.port}`, token: "tok", defaultDeadlineMs: 3000, ...opts });
      const e = await rejection(c.append("s", { eventType: "E" }));
      assert.ok(e instanceof UnavailableError, `${JSON.stringify(opts)}: ${String(e)}`);
      c.close();
    }
  });
});

describe("deadlines and cancellation", () => {
  let fake: FakeServer;
  before(async () => {
    fake = await new FakeServer().listen();
    fake.readAllDelayMs = 2000;
  });
  after(() => fake.stop());

  it("applies the default deadline and a per-call one", async () => {
    const c = new EventStoreClient({ address: fake.address, defaultDeadlineMs: 150 });
    const t0 = Date.now();
    const e = await rejection(c.readAll());
    assert.ok(e instanceof DeadlineExceededError, String(e));
    assert.ok(Date.now() - t0 < 1500);
    fake.readAllDelayMs = 100;
    await c.readAll({ deadlineMs: 2000 }); // the call's own deadline wins
    fake.readAllDelayMs = 2000;
    c.close();
  });

  it("cancels a call in flight with an AbortSignal", async () => {
    const c = new EventStoreClient({ address: fake.address });
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const e = await rejection(c.readAll({ signal: ac.signal }));
    assert.ok(e instanceof CancelledError, String(e));
    c.close();
  });
});

describe("subscription resume requests", () => {
  let fake: FakeServer;
  let client: EventStoreClient;
  before(async () => {
    fake = await new FakeServer().listen();
    client = new EventStoreClient({ address: fake.address, retry: { initialDelayMs: 10, maxDelayMs: 50 } });
  });
  after(() => {
    client.close();
    fake.stop();
  });

  it("resumes after the last event, then after a checkpoint, skipping re-sent events", async () => {
    fake.subscribeRequests.length = 0;
    fake.subscribeScript = (call, attempt) => {
      if (attempt === 1) {
        call.write(ev(3n));
        call.write(ev(4n));
        drop(call);
      } else if (attempt === 2) {
        call.write(ev(4n)); // a server that re-sends: the client must drop it
        call.write(ev(5n));
        call.write(cp(9n));
        drop(call, grpc.status.INTERNAL);
      } else if (attempt === 3) {
        call.end(); // ends with OK without a message: also resumed
      } else {
        call.write(cu(12n));
        call.write(ev(13n));
      }
    };
    const reconnects: ReconnectInfo[] = [];
    const sub = client.subscribe({ fromPosition: 3n, filter: { streamPrefix: "s" }, checkpointInterval: 5, onReconnect: (i) => reconnects.push(i) });
    const it = sub[Symbol.asyncIterator]();
    const got = await take(it, 6);
    assert.deepEqual(got.map(tag), ["e3", "e4", "e5", "cp9", "cu12", "e13"]);
    await it.return?.();
    const reqs = fake.subscribeRequests.map((r) => [r.fromPosition, r.fromEnd]);
    assert.deepEqual(reqs, [[3n, false], [5n, false], [10n, false], [10n, false]]);
    assert.deepEqual(fake.subscribeRequests.map((r) => r.filter?.streamPrefix), ["s", "s", "s", "s"]);
    assert.ok(fake.subscribeRequests.every((r) => r.checkpointInterval === 5));
    assert.deepEqual(reconnects.map((r) => [r.attempt, r.error.code, r.resumeFrom]), [
      [1, grpc.status.UNAVAILABLE, 5n],
      [1, grpc.status.INTERNAL, 10n],
      [2, grpc.status.UNAVAILABLE, 10n],
    ]);
  });

  it("a fromEnd subscription resumes after the caught-up head", async () => {
    fake.subscribeRequests.length = 0;
    fake.subscribeScript = (call, attempt) => {
      if (attempt === 1) {
        call.write(cu(41n));
        drop(call);
      } else {
        call.write(cu(41n));
      }
    };
    const sub = client.subscribe({ fromEnd: true });
    const it = sub[Symbol.asyncIterator]();
    assert.deepEqual((await take(it, 2)).map(tag), ["cu41", "cu41"]);
    sub.close();
    assert.deepEqual(
      fake.subscribeRequests.map((r) => [r.fromPosition, r.fromEnd]),
      [[0n, true], [42n, false]],
    );
  });

  it("asks for batches: maxBatch 256 unless the option says otherwise", async () => {
    fake.subscribeScript = (call) => call.write(cu(0n));
    for (const [option, wire] of [
      [undefined, DEFAULT_MAX_BATCH],
      [1, 1],
      [1000, 1000],
    ] as const) {
      fake.subscribeRequests.length = 0;
      const sub = client.subscribe({ maxBatch: option });
      const it = sub[Symbol.asyncIterator]();
      assert.deepEqual((await take(it, 1)).map(tag), ["cu0"]);
      sub.close();
      assert.equal(fake.subscribeRequests[0]?.maxBatch, wire, `maxBatch ${option}`);
    }
    assert.equal(DEFAULT_MAX_BATCH, 256);
    assert.throws(() => client.subscribe({ maxBatch: -1 }), RangeError);
    assert.throws(() => client.subscribe({ maxBatch: 2.5 }), RangeError);
  });

  it("yields the events of a batch one at a time; resumePosition follows what was yielded", async () => {
    fake.subscribeRequests.length = 0;
    fake.subscribeScript = (call) => {
      call.write(batch(3n, 6n));
      call.write(cp(8n)); // a filtered subscription: the checkpoint keeps its place
      call.write(batch(9n, 9n));
      call.write(cu(9n));
      call.write(ev(10n)); // one event alone: what a server that ignores max_batch sends
    };
    const sub = client.subscribe({ fromPosition: 3n, maxBatch: 4 });
    const it = sub[Symbol.asyncIterator]();
    assert.deepEqual((await take(it, 1)).map(tag), ["e3"]);
    assert.equal(sub.resumePosition, 4n, "after the first event of the batch, not after the batch");
    assert.deepEqual((await take(it, 1)).map(tag), ["e4"]);
    assert.equal(sub.resumePosition, 5n);
    assert.deepEqual((await take(it, 6)).map(tag), ["e5", "e6", "cp8", "e9", "cu9", "e10"]);
    assert.equal(sub.resumePosition, 11n);
    await it.return?.();
    assert.equal(fake.subscribeRequests.length, 1);
    assert.equal(fake.subscribeRequests[0]?.maxBatch, 4);
  });

  it("a caller that stops in the middle of a batch resumes right after its last event", async () => {
    fake.subscribeRequests.length = 0;
    // Serves the log 1..20 from the requested position, in batches of at most max_batch.
    fake.subscribeScript = (call) => {
      const max = BigInt(Math.max(1, call.request.maxBatch));
      for (let p = call.request.fromPosition; p <= 20n; p += max) {
        call.write(batch(p, p + max - 1n < 20n ? p + max - 1n : 20n));
      }
      call.write(cu(20n));
    };
    const first = client.subscribe({ fromPosition: 1n, maxBatch: 8 });
    const seen: bigint[] = [];
    for await (const m of first) {
      if (m.type === "event") seen.push(m.event.globalPosition);
      if (seen.length === 11) break; // the 3rd event of the second batch (9..16)
    }
    assert.equal(first.resumePosition, 12n);
    const second = client.subscribe({ fromPosition: first.resumePosition, maxBatch: 8 });
    for await (const m of second) {
      if (m.type === "event") seen.push(m.event.globalPosition);
      if (m.type === "caughtUp") break;
    }
    assert.deepEqual(seen, Array.from({ length: 20 }, (_, i) => BigInt(i + 1)));
    assert.deepEqual(
      fake.subscribeRequests.map((r) => [r.fromPosition, r.maxBatch]),
      [[1n, 8], [12n, 8]],
    );
  });

  it("a connection dropped while a batch is being handed out resumes after the last event yielded", async () => {
    fake.subscribeRequests.length = 0;
    fake.subscribeScript = (call, attempt) => {
      if (attempt === 1) {
        call.write(batch(3n, 6n));
        call.write(batch(7n, 8n));
        drop(call); // while the caller still holds on to the first batch
      } else {
        // A server that re-sends the event before the resume point too: dropped by the client.
        call.write(batch(call.request.fromPosition - 1n, 10n));
        call.write(cu(10n));
      }
    };
    const reconnects: ReconnectInfo[] = [];
    const sub = client.subscribe({ fromPosition: 3n, onReconnect: (i) => reconnects.push(i) });
    const it = sub[Symbol.asyncIterator]();
    assert.deepEqual((await take(it, 2)).map(tag), ["e3", "e4"]);
    assert.equal(sub.resumePosition, 5n);
    await sleep(150); // the connection drops now, in the middle of the batch
    const rest = await take(it, 7);
    await it.return?.();
    assert.deepEqual(rest.map(tag), ["e5", "e6", "e7", "e8", "e9", "e10", "cu10"]);
    // Whatever of the dropped connection's messages arrived was handed out first; the
    // resume point is the event after the last one yielded, never the end of a batch
    // that was not handed out.
    assert.equal(reconnects.length, 1);
    const resumedAt = fake.subscribeRequests[1]?.fromPosition;
    assert.equal(reconnects[0]?.resumeFrom, resumedAt);
    assert.ok(resumedAt === 7n || resumedAt === 9n, `resumed at ${resumedAt}`);
  });

  it("gives up after maxAttempts with the last error", async () => {
    fake.subscribeScript = (call) => drop(call);
    const sub = client.subscribe({ retry: { maxAttempts: 2, initialDelayMs: 5 } });
    await assert.rejects(
      (async () => {
        for await (const _ of sub);
      })(),
      UnavailableError,
    );
  });

  it("a retry field given as undefined keeps the client's setting", async () => {
    // The client's initialDelayMs is 10 (maxDelayMs 50): the first backoff is 5..10 ms. Were the
    // undefined to replace it, the built-in 100 ms (capped at 50) would apply: 25..50 ms.
    fake.subscribeScript = (call) => drop(call);
    const delays: number[] = [];
    const sub = client.subscribe({
      retry: { initialDelayMs: undefined, maxDelayMs: undefined, maxAttempts: 2 },
      onReconnect: (i) => delays.push(i.delayMs),
    });
    await assert.rejects(
      (async () => {
        for await (const _ of sub);
      })(),
      UnavailableError,
    );
    assert.equal(delays.length, 2);
    assert.ok(delays[0]! <= 10, `first backoff ${delays[0]} ms`);
  });

  it("closes during the backoff", async () => {
    fake.subscribeScript = (call) => drop(call);
    const sub = client.subscribe({ retry: { initialDelayMs: 5000, maxDelayMs: 5000 } });
    const done = (async () => {
      for await (const _ of sub);
    })();
    await waitFor(() => sub.reconnectCount === 1, 3000, "first reconnect");
    await sleep(20);
    const t0 = Date.now();
    sub.close();
    await done;
    assert.ok(Date.now() - t0 < 1000);
  });
});
