// Quickstart: append two events, read them back, then subscribe — catch up, and
// receive a third event live.
//
//   ES_ADDRESS=127.0.0.1:50051 node quickstart.js      (after compiling with tsc)
import { EventStoreClient, ExpectedVersion, jsonEvent } from "@eventstore-c/client";

async function main(): Promise<void> {
  const client = new EventStoreClient({
    address: process.env.ES_ADDRESS ?? "127.0.0.1:50051",
    token: process.env.ES_TOKEN, // sent as "authorization: Bearer …" when set
    defaultDeadlineMs: 5000,
  });
  const stream = `order-${Date.now()}`;

  // Append: the stream must not exist yet.
  const r = await client.append(
    stream,
    [jsonEvent("OrderPlaced", { total: 42 }), jsonEvent("OrderPaid", { amount: 42 })],
    ExpectedVersion.noStream(),
    { streamType: "Order" },
  );
  console.log(`appended ${stream} v${r.firstStreamVersion}..v${r.lastStreamVersion}, positions ${r.firstGlobalPosition}..${r.lastGlobalPosition}`);

  // Read it back, page by page.
  for await (const e of client.readStreamIter(stream)) {
    console.log(`read     v${e.streamVersion} ${e.eventType} ${JSON.stringify(e.json())}`);
  }

  // Subscribe to this stream's events: the replay, "caught up", then live.
  const subscription = client.subscribe({ fromPosition: r.firstGlobalPosition, filter: { streamPrefix: stream } });
  for await (const m of subscription) {
    if (m.type === "event") {
      console.log(`received @${m.event.globalPosition} ${m.event.eventType}`);
      if (m.event.eventType === "OrderShipped") break; // ends the subscription
    } else if (m.type === "caughtUp") {
      console.log(`caught up at ${m.headPosition}; appending OrderShipped`);
      await client.append(stream, jsonEvent("OrderShipped", { carrier: "acme" }), ExpectedVersion.exact(r.lastStreamVersion));
    }
  }

  client.close();
  console.log("quickstart: ok");
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
