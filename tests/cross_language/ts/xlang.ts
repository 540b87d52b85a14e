// Cross-language test program for the TypeScript SDK (sdks/ts), see ../README.md.
//
//   node xlang.js append <address> <stream> <spec.json>   appends the spec's events in one call,
//                                                         prints the AppendResult as JSON
//   node xlang.js dump <address> <stream>                 prints the whole stream as canonical JSON
//
// Only the SDK's public API (sdks/ts/src/index.ts) is used.
import { readFileSync } from "node:fs";
import { EventInput, EventStoreClient, ExpectedVersion, RecordedEvent } from "../../../sdks/ts/src/index";

// Page size of the dump: small, so that the paging iterator has to follow several pages.
const PAGE_SIZE = 3;

interface SpecEvent {
  event_id: string;
  event_type: string;
  event_version: number;
  content_type: string;
  metadata: Record<string, string>;
  correlation_id: string;
  causation_id: string;
  occurred_at_unix_ms: string; // uint64 as decimal text (JSON numbers lose precision in JS)
  payload_b64: string;
}

interface Spec {
  stream_type: string;
  events: SpecEvent[];
}

// ---- canonical JSON -----------------------------------------------------------------------------
// Compact, keys sorted by Unicode code point (not by UTF-16 code unit, which is what
// Array.prototype.sort does), strings escaped as JSON.stringify does (the same rules as
// Python's json with ensure_ascii=False and serde_json), integers as plain decimals.

function compareCodePoints(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

type Canon = string | number | bigint | boolean | Canon[] | { [k: string]: Canon };

function canonical(v: Canon): string {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new Error(`canonical: ${v} is not a safe integer`);
    return String(v);
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  const keys = Object.keys(v).sort(compareCodePoints);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(v[k]!)}`).join(",")}}`;
}

function eventToCanon(e: RecordedEvent): Canon {
  // Object.entries: own enumerable string keys, which is all the SDK gives. Object.fromEntries
  // defines own properties, so a key "__proto__" is kept (assigning it to a plain object is not).
  const metadata: { [k: string]: Canon } = Object.fromEntries(Object.entries(e.metadata));
  return {
    causation_id: e.causationId,
    content_type: e.contentType,
    correlation_id: e.correlationId,
    event_id: e.eventId,
    event_type: e.eventType,
    event_version: e.eventVersion,
    global_position: e.globalPosition,
    metadata,
    occurred_at_unix_ms: e.occurredAtUnixMs,
    payload: e.payload.toString("base64"),
    stream_id: e.streamId,
    stream_type: e.streamType,
    stream_version: e.streamVersion,
  };
}

// ---- commands -----------------------------------------------------------------------------------

function strictBase64(s: string): Buffer {
  const b = Buffer.from(s, "base64");
  if (b.toString("base64") !== s) throw new Error(`spec: ${JSON.stringify(s.slice(0, 40))}… is not canonical base64`);
  return b;
}

async function append(client: EventStoreClient, stream: string, specPath: string): Promise<void> {
  const spec = JSON.parse(readFileSync(specPath, "utf8")) as Spec;
  const events: EventInput[] = spec.events.map((s) => ({
    eventId: s.event_id,
    eventType: s.event_type,
    eventVersion: s.event_version,
    contentType: s.content_type,
    // JSON.parse makes own data properties for every key, "__proto__" included.
    metadata: s.metadata,
    correlationId: s.correlation_id,
    causationId: s.causation_id,
    occurredAt: BigInt(s.occurred_at_unix_ms),
    payload: strictBase64(s.payload_b64),
  }));
  const r = await client.append(stream, events, ExpectedVersion.noStream(), { streamType: spec.stream_type });
  process.stdout.write(
    canonical({
      duplicate: r.duplicate,
      first_global_position: r.firstGlobalPosition,
      first_stream_version: r.firstStreamVersion,
      last_global_position: r.lastGlobalPosition,
      last_stream_version: r.lastStreamVersion,
    }) + "\n",
  );
}

async function dump(client: EventStoreClient, stream: string): Promise<void> {
  const lines: string[] = [];
  for await (const e of client.readStreamIter(stream, { direction: "forward", pageSize: PAGE_SIZE })) {
    lines.push(canonical(eventToCanon(e)));
  }
  process.stdout.write(`[\n${lines.join(",\n")}\n]\n`);
}

async function main(argv: string[]): Promise<number> {
  const [cmd, address, stream, spec] = argv;
  if (!address || !stream || !(cmd === "dump" || (cmd === "append" && spec))) {
    process.stderr.write("usage: xlang.js append <address> <stream> <spec.json> | dump <address> <stream>\n");
    return 2;
  }
  const client = new EventStoreClient({ address, defaultDeadlineMs: 20_000 });
  try {
    if (cmd === "append") await append(client, stream, spec!);
    else await dump(client, stream);
  } finally {
    client.close();
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`xlang.ts: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
