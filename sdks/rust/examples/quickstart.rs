//! Append events, read them back, and subscribe.
//!
//! Start a server (`make run` in the repository), then:
//!
//! ```sh
//! cargo run --example quickstart                            # 127.0.0.1:50051
//! EVENTSTORE_ADDRESS=127.0.0.1:6000 cargo run --example quickstart
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use eventstore_client::{
    AppendOptions, Client, ClientOptions, EventData, ExpectedVersion, Filter, ReadStreamOptions,
    StreamExt, SubscribeOptions, SubscriptionMessage,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct OrderPlaced {
    order_id: String,
    total_cents: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct OrderShipped {
    carrier: String,
}

#[tokio::main]
async fn main() -> Result<(), eventstore_client::Error> {
    let address =
        std::env::var("EVENTSTORE_ADDRESS").unwrap_or_else(|_| "127.0.0.1:50051".to_string());
    let mut options = ClientOptions::new(address);
    if let Ok(token) = std::env::var("EVENTSTORE_TOKEN") {
        options = options.bearer_token(token);
    }
    let client = Client::connect(options).await?;

    // A new stream for this run.
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let stream = format!("order-{millis}");

    // 1. Append: the stream must not exist yet; it becomes an "Order" stream.
    let placed = OrderPlaced {
        order_id: stream.clone(),
        total_cents: 4200,
    };
    let events = [
        EventData::json("OrderPlaced", &placed)?.metadata("tenant", "acme"),
        EventData::json(
            "OrderShipped",
            &OrderShipped {
                carrier: "DHL".into(),
            },
        )?,
    ];
    let appended = client
        .append(
            stream.as_str(),
            events,
            AppendOptions::new(ExpectedVersion::NoStream).stream_type("Order"),
        )
        .await?;
    println!(
        "appended versions {}..={} at global positions {}..={}",
        appended.first_stream_version,
        appended.last_stream_version,
        appended.first_global_position,
        appended.last_global_position
    );

    // Optimistic concurrency: appending as if the stream were new fails.
    match client
        .append(
            stream.as_str(),
            [EventData::new("Oops", vec![])],
            ExpectedVersion::NoStream,
        )
        .await
    {
        Err(eventstore_client::Error::WrongExpectedVersion { actual, .. }) => {
            println!("expected-version check failed as it should: actual {actual:?}")
        }
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }

    // 2. Read back, page by page (one page here).
    let page = client
        .read_stream(stream.as_str(), ReadStreamOptions::forward())
        .await?;
    for event in &page.events {
        println!(
            "read {} v{} (position {})",
            event.event_type, event.stream_version, event.global_position
        );
    }
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.events[0].json::<OrderPlaced>()?, placed);

    // 3. Subscribe to this stream's events from the first one; the
    // subscription resumes by itself if the connection drops.
    let mut subscription = client
        .subscribe(
            SubscribeOptions::from_position(appended.first_global_position)
                .filter(Filter::stream_prefix(stream.as_str())),
        )
        .await?;
    let mut received = 0;
    while let Some(message) = subscription.next().await {
        match message? {
            SubscriptionMessage::Event(event) => {
                received += 1;
                println!(
                    "subscription: {} at {}",
                    event.event_type, event.global_position
                );
                if event.event_type == "OrderDelivered" {
                    break;
                }
            }
            SubscriptionMessage::CaughtUp { head_position } => {
                println!("subscription: caught up at {head_position}, now live");
                // A live event.
                client
                    .append(
                        stream.as_str(),
                        [EventData::new("OrderDelivered", vec![])],
                        ExpectedVersion::Exact(appended.last_stream_version),
                    )
                    .await?;
            }
            _ => {}
        }
    }
    assert_eq!(received, 3);
    println!("quickstart: ok");
    Ok(())
}
