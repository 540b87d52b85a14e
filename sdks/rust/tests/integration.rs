//! The client against a real `eventstore` server (in-memory backend), started
//! by each test on a free loopback port: $ES_SERVER_BIN, default
//! ../../bazel-bin/server/eventstore.
//!
//! The resume tests stop the server during a subscription and start a new
//! one on the SAME port. The memory backend loses everything on restart, so
//! the new server's log starts again at position 1: the test appends there
//! and checks that the client resumed exactly at the position after the last
//! one it delivered (it gets the new server's events from that position on,
//! and none below it).

mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventstore_client::{
    AppendOptions, Client, ClientOptions, Direction, Error, EventData, ExpectedVersion, Filter,
    ReadAllOptions, ReadStreamOptions, RecordedEvent, ResumePolicy, StreamExt, SubscribeOptions,
    Subscription, SubscriptionMessage, TlsOptions, TryStreamExt,
};
use support::{connect, fast_resume, FakeAnswer, Proxy, TestServer};

const WAIT: Duration = Duration::from_secs(20);

fn events(event_type: &str, n: usize) -> Vec<EventData> {
    (0..n)
        .map(|i| EventData::new(event_type, format!("payload {i}").into_bytes()))
        .collect()
}

/// The next message of a subscription, failing the test after WAIT.
async fn next_message(sub: &mut Subscription) -> SubscriptionMessage {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("subscription message in time")
        .expect("subscription still open")
        .expect("subscription message, not an error")
}

/// The next event of a subscription, skipping caught-up and checkpoints.
async fn next_event(sub: &mut Subscription) -> RecordedEvent {
    loop {
        if let SubscriptionMessage::Event(e) = next_message(sub).await {
            return e;
        }
    }
}

/// No message other than caught-up/checkpoints arrives within `quiet`.
async fn assert_no_event(sub: &mut Subscription, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Err(_) => return,
            Ok(Some(Ok(SubscriptionMessage::Event(e)))) => {
                panic!("unexpected event at position {}", e.global_position)
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("subscription ended: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- append/read

#[tokio::test]
async fn append_and_read_back_every_field() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let occurred = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let first = EventData::new("OrderPlaced", vec![0u8, 1, 2, 255])
        .event_version(2)
        .content_type("application/x-test")
        .metadata("tenant", "acme")
        .metadata("ünïcode", "välue")
        .correlation_id("req-7")
        .causation_id("cmd-3")
        .occurred_at(occurred);
    let second = EventData::new("OrderShipped", b"{}".to_vec()).without_id();

    let result = client
        .append(
            "order-1",
            [first.clone(), second],
            AppendOptions::new(ExpectedVersion::NoStream).stream_type("Order"),
        )
        .await
        .unwrap();
    assert_eq!(result.first_stream_version, 1);
    assert_eq!(result.last_stream_version, 2);
    assert_eq!(result.first_global_position, 1);
    assert_eq!(result.last_global_position, 2);
    assert!(!result.duplicate);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(result.recorded_at_unix_ms > 0 && result.recorded_at_unix_ms <= now_ms + 1000);

    let page = client
        .read_stream("order-1", ReadStreamOptions::forward())
        .await
        .unwrap();
    assert!(page.is_end);
    assert_eq!(page.stream_version, 2);
    assert_eq!(page.next_version, 3);
    assert_eq!(page.events.len(), 2);
    let e = &page.events[0];
    assert_eq!(e.stream_id, "order-1");
    assert_eq!(e.stream_type, "Order");
    assert_eq!(e.stream_version, 1);
    assert_eq!(e.global_position, 1);
    assert_eq!(e.event_id, first.event_id);
    assert_eq!(e.event_type, "OrderPlaced");
    assert_eq!(e.event_version, 2);
    assert_eq!(e.content_type, "application/x-test");
    assert_eq!(e.payload, vec![0u8, 1, 2, 255]);
    assert_eq!(
        e.metadata,
        HashMap::from([
            ("tenant".to_string(), "acme".to_string()),
            ("ünïcode".to_string(), "välue".to_string())
        ])
    );
    assert_eq!(e.correlation_id.as_deref(), Some("req-7"));
    assert_eq!(e.causation_id.as_deref(), Some("cmd-3"));
    assert_eq!(e.occurred_at_unix_ms, Some(1_700_000_000_123));
    assert_eq!(e.recorded_at_unix_ms, result.recorded_at_unix_ms);

    let s = &page.events[1];
    assert_eq!(s.stream_version, 2);
    assert_eq!(s.event_id.len(), 36, "server-assigned id: {}", s.event_id);
    assert_eq!(s.content_type, "application/octet-stream");
    assert_eq!(s.correlation_id, None);
    assert_eq!(s.causation_id, None);
    assert_eq!(s.occurred_at_unix_ms, None);
    assert!(s.metadata.is_empty());

    // The latest event: backward, one.
    let last = client
        .read_stream("order-1", ReadStreamOptions::backward().max_count(1))
        .await
        .unwrap();
    assert_eq!(last.events.len(), 1);
    assert_eq!(last.events[0].event_type, "OrderShipped");
    assert!(!last.is_end);
    assert_eq!(last.next_version, 1);
}

#[tokio::test]
async fn json_helpers_round_trip() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct OrderPlaced {
        order: String,
        total: u64,
    }
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let placed = OrderPlaced {
        order: "o-1".into(),
        total: 42,
    };
    let event = EventData::json("OrderPlaced", &placed).unwrap();
    assert_eq!(event.content_type, "application/json");
    client
        .append("order-1", [event], ExpectedVersion::Any)
        .await
        .unwrap();

    let page = client
        .read_stream("order-1", Default::default())
        .await
        .unwrap();
    let e = &page.events[0];
    assert_eq!(e.content_type, "application/json");
    assert_eq!(e.json::<OrderPlaced>().unwrap(), placed);
    assert_eq!(e.payload, br#"{"order":"o-1","total":42}"#.to_vec());
    match e.json::<Vec<u32>>() {
        Err(Error::Json(_)) => {}
        other => panic!("expected a JSON error, got {other:?}"),
    }
}

#[tokio::test]
async fn expected_versions_pass_and_fail_with_the_actual_version() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;

    // Failures on a stream that does not exist: actual 0.
    for expected in [ExpectedVersion::StreamExists, ExpectedVersion::Exact(3)] {
        match client.append("s", events("E", 1), expected).await {
            Err(Error::WrongExpectedVersion {
                expected: e,
                actual,
            }) => {
                assert_eq!(e, expected);
                assert_eq!(actual, Some(0));
            }
            other => panic!("{expected}: expected WrongExpectedVersion, got {other:?}"),
        }
    }

    let r = client
        .append("s", events("E", 2), ExpectedVersion::NoStream)
        .await
        .unwrap();
    assert_eq!(r.last_stream_version, 2);
    let r = client
        .append("s", events("E", 1), ExpectedVersion::StreamExists)
        .await
        .unwrap();
    assert_eq!(r.last_stream_version, 3);
    let r = client
        .append("s", events("E", 1), ExpectedVersion::Exact(3))
        .await
        .unwrap();
    assert_eq!(r.last_stream_version, 4);
    let r = client
        .append("s", events("E", 1), ExpectedVersion::Any)
        .await
        .unwrap();
    assert_eq!(r.last_stream_version, 5);
    assert_eq!(r.last_global_position, 5);
    let r = client
        .append("t", events("E", 1), ExpectedVersion::Exact(0))
        .await
        .unwrap();
    assert_eq!(r.first_stream_version, 1);

    // Failures on a stream at version 5: actual 5, nothing written.
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(0),
        ExpectedVersion::Exact(4),
        ExpectedVersion::Exact(6),
    ] {
        let err = client
            .append("s", events("E", 1), expected)
            .await
            .unwrap_err();
        match &err {
            Error::WrongExpectedVersion {
                expected: e,
                actual,
            } => {
                assert_eq!(*e, expected);
                assert_eq!(*actual, Some(5));
            }
            other => panic!("{expected}: expected WrongExpectedVersion, got {other:?}"),
        }
        assert_eq!(err.code(), Some(eventstore_client::tonic::Code::Aborted));
        assert!(err.to_string().contains("actual 5"), "{err}");
    }
    let page = client.read_stream("s", Default::default()).await.unwrap();
    assert_eq!(page.stream_version, 5);
}

#[tokio::test]
async fn a_retried_batch_is_a_duplicate_and_reused_ids_are_already_exists() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let batch = events("E", 3);
    let first = client
        .append("s", batch.clone(), ExpectedVersion::NoStream)
        .await
        .unwrap();
    // Same ids, same order: acknowledged with the original numbers, whatever
    // the expected version says.
    let again = client
        .append("s", batch.clone(), ExpectedVersion::NoStream)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.first_global_position, first.first_global_position);
    assert_eq!(again.last_stream_version, first.last_stream_version);
    assert_eq!(again.recorded_at_unix_ms, first.recorded_at_unix_ms);
    let page = client.read_stream("s", Default::default()).await.unwrap();
    assert_eq!(page.events.len(), 3);

    // A prefix of the batch, or one old id with a new one: ALREADY_EXISTS.
    let err = client
        .append("s", batch[..1].to_vec(), ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AlreadyExists { ref message } if message.contains(&batch[0].event_id)),
        "{err:?}"
    );
    let mixed = vec![EventData::new("E", vec![]), batch[2].clone()];
    let err = client
        .append("other", mixed, ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
}

#[tokio::test]
async fn invalid_arguments() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let long = "x".repeat(300);
    let cases: Vec<(&str, &str, Vec<EventData>)> = vec![
        ("empty stream id", "", events("E", 1)),
        ("no events", "s", vec![]),
        (
            "bad event id",
            "s",
            vec![EventData::new("E", vec![]).id("NOT-A-UUID")],
        ),
        ("empty event type", "s", vec![EventData::new("", vec![])]),
        ("control character", "s\u{1}", events("E", 1)),
        ("oversized stream id", &long, events("E", 1)),
    ];
    for (what, stream, evs) in cases {
        match client.append(stream, evs, ExpectedVersion::Any).await {
            Err(Error::InvalidArgument { message }) => assert!(!message.is_empty()),
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
    }
    let dup = EventData::new("E", vec![]);
    let err = client
        .append("s", [dup.clone(), dup], ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let err = client
        .read_stream("", ReadStreamOptions::forward())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    let err = client
        .read_all(ReadAllOptions::forward().filter(Filter::stream_prefix("p".repeat(300))))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    // Nothing was written.
    let all = client.read_all(ReadAllOptions::forward()).await.unwrap();
    assert_eq!(all.head_position, 0);
}

#[tokio::test]
async fn stream_type_mismatch_and_stream_not_found() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    client
        .append(
            "order-1",
            events("E", 1),
            AppendOptions::new(ExpectedVersion::Any).stream_type("Order"),
        )
        .await
        .unwrap();
    // Empty = no opinion; the same type passes.
    client
        .append("order-1", events("E", 1), ExpectedVersion::Any)
        .await
        .unwrap();
    client
        .append(
            "order-1",
            events("E", 1),
            AppendOptions::new(ExpectedVersion::Any).stream_type("Order"),
        )
        .await
        .unwrap();
    let err = client
        .append(
            "order-1",
            events("E", 1),
            AppendOptions::new(ExpectedVersion::Any).stream_type("Invoice"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::StreamTypeMismatch { .. }), "{err:?}");
    assert_eq!(
        err.code(),
        Some(eventstore_client::tonic::Code::FailedPrecondition)
    );

    match client
        .read_stream("nope", ReadStreamOptions::forward())
        .await
    {
        Err(Error::StreamNotFound { stream }) => assert_eq!(stream, "nope"),
        other => panic!("expected StreamNotFound, got {other:?}"),
    }
    // The paging stream yields the error once, then ends.
    let mut pages = client.read_stream_events("nope", ReadStreamOptions::backward());
    assert!(matches!(
        pages.next().await,
        Some(Err(Error::StreamNotFound { .. }))
    ));
    assert!(pages.next().await.is_none());
}

// -------------------------------------------------------------------- paging

#[tokio::test]
async fn read_stream_pages_forward_and_backward() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    client
        .append("s", events("E", 25), ExpectedVersion::NoStream)
        .await
        .unwrap();
    client
        .append("other", events("E", 3), ExpectedVersion::NoStream)
        .await
        .unwrap();

    let pages: Vec<_> = client
        .read_stream_pages("s", ReadStreamOptions::forward().max_count(10))
        .try_collect()
        .await
        .unwrap();
    let sizes: Vec<_> = pages.iter().map(|p| p.events.len()).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    assert_eq!(
        pages.iter().map(|p| p.is_end).collect::<Vec<_>>(),
        vec![false, false, true]
    );
    assert_eq!(pages[0].next_version, 11);
    assert_eq!(pages[2].next_version, 26);
    let versions: Vec<u64> = pages
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.stream_version))
        .collect();
    assert_eq!(versions, (1..=25).collect::<Vec<_>>());

    let back: Vec<_> = client
        .read_stream_pages("s", ReadStreamOptions::backward().max_count(10))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        back.iter().map(|p| p.events.len()).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    assert_eq!(back[0].events[0].stream_version, 25);
    assert!(back[2].is_end);
    assert_eq!(back[2].next_version, 0);

    let events_back: Vec<u64> = client
        .read_stream_events(
            "s",
            ReadStreamOptions::backward().from_version(12).max_count(4),
        )
        .map_ok(|e| e.stream_version)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events_back, (1..=12).rev().collect::<Vec<_>>());

    let events_fwd: Vec<u64> = client
        .read_stream_events(
            "s",
            ReadStreamOptions::forward().from_version(20).max_count(2),
        )
        .map_ok(|e| e.stream_version)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events_fwd, (20..=25).collect::<Vec<_>>());

    // Paging edges: forward beyond the end is an empty last page; backward
    // beyond the end starts at the last event.
    let beyond = client
        .read_stream("s", ReadStreamOptions::forward().from_version(99))
        .await
        .unwrap();
    assert!(beyond.events.is_empty() && beyond.is_end);
    assert_eq!(beyond.next_version, 26);
    let beyond_back = client
        .read_stream(
            "s",
            ReadStreamOptions::backward().from_version(99).max_count(1),
        )
        .await
        .unwrap();
    assert_eq!(beyond_back.events[0].stream_version, 25);
}

#[tokio::test]
async fn read_all_pages_with_and_without_filter() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    // Positions 1..=12: order-1 gets the odd ones, invoice-1 the even ones.
    for i in 0..6u64 {
        client
            .append(
                "order-1",
                events(
                    if i % 2 == 0 {
                        "OrderPlaced"
                    } else {
                        "OrderShipped"
                    },
                    1,
                ),
                ExpectedVersion::Any,
            )
            .await
            .unwrap();
        client
            .append(
                "invoice-1",
                events("InvoiceIssued", 1),
                ExpectedVersion::Any,
            )
            .await
            .unwrap();
    }

    let page = client
        .read_all(ReadAllOptions::forward().max_count(5))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 5);
    assert_eq!(page.head_position, 12);
    assert_eq!(page.next_position, 6);
    assert!(!page.is_end);

    let all: Vec<u64> = client
        .read_all_events(ReadAllOptions::forward().max_count(5))
        .map_ok(|e| e.global_position)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all, (1..=12).collect::<Vec<_>>());

    let back_pages: Vec<_> = client
        .read_all_pages(ReadAllOptions::backward().max_count(5))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(back_pages.len(), 3);
    assert!(back_pages[2].is_end);
    assert_eq!(back_pages[2].next_position, 0);
    let back: Vec<u64> = back_pages
        .iter()
        .flat_map(|p| p.events.iter().map(|e| e.global_position))
        .collect();
    assert_eq!(back, (1..=12).rev().collect::<Vec<_>>());

    let orders: Vec<RecordedEvent> = client
        .read_all_events(
            ReadAllOptions::forward()
                .max_count(2)
                .filter(Filter::stream_prefix("order-")),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        orders.iter().map(|e| e.global_position).collect::<Vec<_>>(),
        vec![1, 3, 5, 7, 9, 11]
    );
    assert!(orders.iter().all(|e| e.stream_id == "order-1"));

    let shipped: Vec<u64> = client
        .read_all_events(
            ReadAllOptions::backward()
                .filter(Filter::stream_prefix("order-").and_event_types(["OrderShipped"])),
        )
        .map_ok(|e| e.global_position)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(shipped, vec![11, 7, 3]);

    let invoices = client
        .read_all(
            ReadAllOptions::forward()
                .from_position(5)
                .filter(Filter::event_types(["InvoiceIssued"])),
        )
        .await
        .unwrap();
    assert_eq!(
        invoices
            .events
            .iter()
            .map(|e| e.global_position)
            .collect::<Vec<_>>(),
        vec![6, 8, 10, 12]
    );
    assert_eq!(invoices.next_position, 13);
    assert_eq!(invoices.events[0].stream_id, "invoice-1");
    assert_eq!(ReadAllOptions::backward().direction, Direction::Backward);
}

#[tokio::test]
async fn read_all_of_an_empty_log() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let page = client.read_all(ReadAllOptions::forward()).await.unwrap();
    assert!(page.events.is_empty() && page.is_end);
    assert_eq!(page.head_position, 0);
    let n = client
        .read_all_events(ReadAllOptions::backward())
        .count()
        .await;
    assert_eq!(n, 0);
}

// -------------------------------------------------------------- subscriptions

#[tokio::test]
async fn subscribe_catch_up_then_live() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let stored = events("E", 3);
    client
        .append("s", stored.clone(), ExpectedVersion::Any)
        .await
        .unwrap();

    let mut sub = client
        .subscribe(SubscribeOptions::from_start())
        .await
        .unwrap();
    for (i, expected) in stored.iter().enumerate() {
        let e = next_event(&mut sub).await;
        assert_eq!(e.global_position, i as u64 + 1);
        assert_eq!(e.event_id, expected.event_id);
    }
    assert_eq!(
        next_message(&mut sub).await,
        SubscriptionMessage::CaughtUp { head_position: 3 }
    );
    let live = events("Live", 2);
    client
        .append("t", live.clone(), ExpectedVersion::Any)
        .await
        .unwrap();
    assert_eq!(next_event(&mut sub).await.event_id, live[0].event_id);
    assert_eq!(next_event(&mut sub).await.event_id, live[1].event_id);
    assert_eq!(sub.resume_position(), 6);
    assert_eq!(sub.reconnects(), 0);

    // From a position, and from the end.
    let mut from2 = client
        .subscribe(SubscribeOptions::from_position(2))
        .await
        .unwrap();
    assert_eq!(next_event(&mut from2).await.global_position, 2);
    let mut from_end = client
        .subscribe(SubscribeOptions::from_end())
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut from_end).await,
        SubscriptionMessage::CaughtUp { head_position: 5 }
    );
    assert_eq!(from_end.resume_position(), 6);
    client
        .append("t", events("Live", 1), ExpectedVersion::Any)
        .await
        .unwrap();
    assert_eq!(next_event(&mut from_end).await.global_position, 6);
}

#[tokio::test]
async fn filtered_subscription_with_checkpoints() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let mut sub = client
        .subscribe(
            SubscribeOptions::from_start()
                .filter(Filter::stream_prefix("match-"))
                .checkpoint_interval(2),
        )
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut sub).await,
        SubscriptionMessage::CaughtUp { head_position: 0 }
    );
    client
        .append("other", events("E", 5), ExpectedVersion::Any)
        .await
        .unwrap();
    // Every 2nd non-matching event in a row, then the head: a checkpoint each.
    for position in [2, 4, 5] {
        assert_eq!(
            next_message(&mut sub).await,
            SubscriptionMessage::Checkpoint { position }
        );
    }
    client
        .append("match-1", events("E", 1), ExpectedVersion::Any)
        .await
        .unwrap();
    match next_message(&mut sub).await {
        SubscriptionMessage::Event(e) => {
            assert_eq!(e.global_position, 6);
            assert_eq!(e.stream_id, "match-1");
        }
        other => panic!("expected the match, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribe_with_a_bad_filter_fails_at_once() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let err = client
        .subscribe(SubscribeOptions::from_start().filter(Filter::event_types([""])))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

/// Subscribes through `server`, sees positions 1..=3, then `interrupt`s the
/// server, starts a new one on the same port, appends 5 events there and
/// checks that exactly positions 4 and 5 of the new log arrive.
async fn resume_across_restart(crash: bool) {
    let mut server = TestServer::start().await;
    let port = server.port;
    let client = connect(&server.address()).await;
    client
        .append("s", events("Old", 3), ExpectedVersion::Any)
        .await
        .unwrap();

    let mut sub = client
        .subscribe(SubscribeOptions::from_start().resume(fast_resume()))
        .await
        .unwrap();
    for pos in 1..=3 {
        assert_eq!(next_event(&mut sub).await.global_position, pos);
    }
    assert_eq!(
        next_message(&mut sub).await,
        SubscriptionMessage::CaughtUp { head_position: 3 }
    );
    assert_eq!(sub.resume_position(), 4);

    if crash {
        server.kill();
    } else {
        server.stop().await;
    }
    // Let the subscription notice and retry against the closed port for a
    // while, then bring up a new, empty server on the same port.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = TestServer::start_on(port).await;
    let fresh = events("New", 5);
    client
        .append("s", fresh.clone(), ExpectedVersion::NoStream)
        .await
        .unwrap();

    // Positions 1..=3 of the new log are below the resume point: not delivered.
    let e4 = next_event(&mut sub).await;
    assert_eq!((e4.global_position, &e4.event_id), (4, &fresh[3].event_id));
    let e5 = next_event(&mut sub).await;
    assert_eq!((e5.global_position, &e5.event_id), (5, &fresh[4].event_id));
    assert!(sub.reconnects() >= 1);

    // Live again, with nothing repeated in between.
    let more = events("Live", 1);
    client
        .append("s", more.clone(), ExpectedVersion::Exact(5))
        .await
        .unwrap();
    let e6 = next_event(&mut sub).await;
    assert_eq!((e6.global_position, &e6.event_id), (6, &more[0].event_id));
    assert_no_event(&mut sub, Duration::from_millis(300)).await;
    drop(server);
}

#[tokio::test]
async fn subscription_resumes_after_a_graceful_restart() {
    resume_across_restart(false).await;
}

#[tokio::test]
async fn subscription_resumes_after_a_crash() {
    resume_across_restart(true).await;
}

/// Receives events up to position `upto`, checking that each is the next
/// position of `log` (the ids in log order): no gap, no duplicate.
async fn receive_in_order(sub: &mut Subscription, log: &[String], next: &mut u64, upto: u64) {
    while *next <= upto {
        let e = next_event(sub).await;
        assert_eq!(e.global_position, *next, "no gap, no duplicate");
        assert_eq!(e.event_id, log[e.global_position as usize - 1]);
        *next += 1;
    }
}

#[tokio::test]
async fn subscription_resumes_after_a_dropped_connection_without_gap_or_duplicate() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(format!("127.0.0.1:{}", server.port).parse().unwrap()).await;
    let direct = connect(&server.address()).await;
    let via_proxy = connect(&proxy.address()).await;

    let mut sub = via_proxy
        .subscribe(SubscribeOptions::from_start().resume(fast_resume()))
        .await
        .unwrap();
    // The ids in log order; every event must arrive exactly once, in order.
    let mut log: Vec<String> = Vec::new();
    let mut next_position = 1u64;
    for _round in 0..3 {
        // A batch, received (at least its first event) over the current
        // connection...
        let batch = events("E", 4);
        log.extend(batch.iter().map(|e| e.event_id.clone()));
        let r = direct
            .append("s", batch, ExpectedVersion::Any)
            .await
            .unwrap();
        receive_in_order(&mut sub, &log, &mut next_position, r.first_global_position).await;
        // ...then the connection is cut, events are appended while it is
        // down, and it comes back.
        proxy.cut();
        let during = events("During", 3);
        log.extend(during.iter().map(|e| e.event_id.clone()));
        direct
            .append("s", during, ExpectedVersion::Any)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.restore();
    }
    receive_in_order(&mut sub, &log, &mut next_position, log.len() as u64).await;
    assert_eq!(next_position, 22);
    assert!(sub.reconnects() >= 3, "reconnects: {}", sub.reconnects());
    assert!(proxy.accepted.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    assert_no_event(&mut sub, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn filtered_subscription_resumes_after_its_last_checkpoint() {
    let mut server = TestServer::start().await;
    let port = server.port;
    let client = connect(&server.address()).await;
    let mut sub = client
        .subscribe(
            SubscribeOptions::from_start()
                .filter(Filter::stream_prefix("match-"))
                .checkpoint_interval(2)
                .resume(fast_resume()),
        )
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut sub).await,
        SubscriptionMessage::CaughtUp { head_position: 0 }
    );
    client
        .append("other", events("E", 5), ExpectedVersion::Any)
        .await
        .unwrap();
    // Every 2nd non-matching event in a row, then the head: a checkpoint each.
    for position in [2, 4, 5] {
        assert_eq!(
            next_message(&mut sub).await,
            SubscriptionMessage::Checkpoint { position }
        );
    }
    assert_eq!(sub.resume_position(), 6);

    server.stop().await;
    let server = TestServer::start_on(port).await;
    // New log: 5 non-matching events, then matches at 6 and 7. Resuming at 6
    // means the first thing after the restart is the match at 6, with no
    // repeated checkpoints for positions 1..=5.
    client
        .append("other", events("E", 5), ExpectedVersion::Any)
        .await
        .unwrap();
    let matches = events("M", 2);
    client
        .append("match-1", matches.clone(), ExpectedVersion::Any)
        .await
        .unwrap();
    loop {
        match next_message(&mut sub).await {
            SubscriptionMessage::CaughtUp { .. } => continue,
            SubscriptionMessage::Event(e) => {
                assert_eq!((e.global_position, &e.event_id), (6, &matches[0].event_id));
                break;
            }
            other => panic!("expected the event at 6 first, got {other:?}"),
        }
    }
    assert_eq!(next_event(&mut sub).await.global_position, 7);
    drop(server);
}

/// Appends `n` events to `stream` in commits of `chunk`; their ids in order.
async fn append_many(
    client: &Client,
    stream: &str,
    n: usize,
    chunk: usize,
    payload: &[u8],
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let mut done = 0;
    while done < n {
        let batch: Vec<EventData> = (done..n.min(done + chunk))
            .map(|_| EventData::new("E", payload.to_vec()))
            .collect();
        ids.extend(batch.iter().map(|e| e.event_id.clone()));
        done += batch.len();
        client
            .append(stream, batch, ExpectedVersion::Any)
            .await
            .unwrap();
    }
    ids
}

/// Many events through one subscription asking for batches (the server then
/// sends full batches during catch-up and whatever is ready while live):
/// each exactly once, in order, one at a time.
async fn many_events_exactly_once_in_order(options: SubscribeOptions) {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let mut ids = append_many(&client, "s", 2500, 500, b"stored").await;
    let mut sub = client.subscribe(options).await.unwrap();
    let mut next = 1u64;
    loop {
        match next_message(&mut sub).await {
            SubscriptionMessage::Event(e) => {
                assert_eq!(e.global_position, next, "no gap, no duplicate");
                assert_eq!(e.event_id, ids[next as usize - 1]);
                assert_eq!(sub.resume_position(), next + 1);
                next += 1;
            }
            SubscriptionMessage::CaughtUp { head_position } => {
                assert_eq!(head_position, 2500);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(next, 2501);
    // Live: 700 more in commits of 100, appended while the subscription reads.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move { append_many(&client, "s", 700, 100, b"live").await })
    };
    let mut live = Vec::new();
    while live.len() < 700 {
        let e = next_event(&mut sub).await;
        assert_eq!(sub.resume_position(), e.global_position + 1);
        live.push((e.global_position, e.event_id));
    }
    ids.extend(writer.await.unwrap());
    let expected: Vec<(u64, String)> = (2501..=3200u64)
        .map(|p| (p, ids[p as usize - 1].clone()))
        .collect();
    assert_eq!(live, expected);
    assert_no_event(&mut sub, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn batched_subscription_delivers_every_event_once_in_order() {
    many_events_exactly_once_in_order(SubscribeOptions::from_start()).await;
}

#[tokio::test]
async fn unbatched_subscription_delivers_every_event_once_in_order() {
    many_events_exactly_once_in_order(SubscribeOptions::from_start().max_batch(1)).await;
}

#[tokio::test]
async fn largest_batches_deliver_every_event_once_in_order() {
    many_events_exactly_once_in_order(SubscribeOptions::from_start().max_batch(1000)).await;
}

#[tokio::test]
async fn a_subscription_stopped_in_the_middle_of_a_batch_resumes_after_its_last_event() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let ids = append_many(&client, "s", 600, 200, b"e").await;
    let mut first = client
        .subscribe(SubscribeOptions::from_start().max_batch(64))
        .await
        .unwrap();
    // 100 events: in the middle of the second batch of 64.
    for position in 1..=100 {
        assert_eq!(next_event(&mut first).await.global_position, position);
    }
    let resume = first.resume_position();
    assert_eq!(resume, 101);
    drop(first);
    let mut second = client
        .subscribe(SubscribeOptions::from_position(resume).max_batch(64))
        .await
        .unwrap();
    for position in 101..=600 {
        let e = next_event(&mut second).await;
        assert_eq!(
            (e.global_position, &e.event_id),
            (position, &ids[position as usize - 1])
        );
    }
    assert_eq!(
        next_message(&mut second).await,
        SubscriptionMessage::CaughtUp { head_position: 600 }
    );
}

#[tokio::test]
async fn a_batched_catch_up_resumes_after_dropped_connections_without_gap_or_duplicate() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(format!("127.0.0.1:{}", server.port).parse().unwrap()).await;
    let direct = connect(&server.address()).await;
    // 16 KiB events, 19 MB in all: far more than the HTTP/2 windows let the
    // server send ahead of the reader (2 MB per stream, 5 MB per connection
    // in hyper), so that each cut is noticed while the replay still has
    // events to send.
    let ids = append_many(&direct, "s", 1200, 200, &[b'x'; 16 * 1024]).await;
    let via_proxy = connect(&proxy.address()).await;
    let mut sub = via_proxy
        .subscribe(
            SubscribeOptions::from_start()
                .max_batch(50)
                .resume(fast_resume()),
        )
        .await
        .unwrap();
    // Cut once the previous cut has been noticed: in the middle of a batch,
    // right after the reconnect, and later.
    let mut cuts_at = vec![75u64, 76, 530].into_iter().peekable();
    let mut cuts = 0u64;
    for position in 1..=1200u64 {
        let e = next_event(&mut sub).await;
        assert_eq!(e.global_position, position, "no gap, no duplicate");
        assert_eq!(e.event_id, ids[position as usize - 1]);
        if cuts_at.peek().is_some_and(|&at| position >= at) && sub.reconnects() >= cuts {
            cuts_at.next();
            cuts += 1;
            proxy.cut();
            tokio::time::sleep(Duration::from_millis(50)).await;
            proxy.restore();
        }
    }
    assert_eq!(
        next_message(&mut sub).await,
        SubscriptionMessage::CaughtUp {
            head_position: 1200
        }
    );
    assert_eq!(cuts, 3);
    assert!(sub.reconnects() >= 3, "reconnects: {}", sub.reconnects());
}

#[tokio::test]
async fn max_batch_above_1000_fails_at_once() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let err = client
        .subscribe(SubscribeOptions::from_start().max_batch(1001))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message } if message.contains("max_batch")),
        "{err:?}"
    );
}

#[tokio::test]
async fn subscription_gives_up_per_its_resume_policy() {
    let mut server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let mut sub = client
        .subscribe(SubscribeOptions::from_start().resume(ResumePolicy {
            max_attempts: Some(2),
            ..fast_resume()
        }))
        .await
        .unwrap();
    assert!(matches!(
        next_message(&mut sub).await,
        SubscriptionMessage::CaughtUp { .. }
    ));
    server.stop().await;
    let end = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
    assert!(
        matches!(end, Some(Err(Error::Unavailable { .. }))),
        "{end:?}"
    );
    assert!(sub.next().await.is_none());
}

// ------------------------------------------------------- connection & errors

#[tokio::test]
async fn unavailable_when_no_server_listens() {
    // A port that was free a moment ago.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = Client::connect(ClientOptions::new(format!("127.0.0.1:{port}")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.is_transient());

    // A call after the server went away.
    let mut server = TestServer::start().await;
    let client = connect(&server.address()).await;
    client
        .append("s", events("E", 1), ExpectedVersion::Any)
        .await
        .unwrap();
    server.stop().await;
    let err = client
        .append("s", events("E", 1), ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    let err = client
        .read_all(ReadAllOptions::forward())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn bearer_token_is_sent_and_unauthenticated_is_typed() {
    let (port, seen) = support::fake_server(FakeAnswer::Status(16)).await;
    let client = Client::connect(
        ClientOptions::new(format!("http://127.0.0.1:{port}"))
            .bearer_token("s3cret-token")
            .default_deadline(Some(Duration::from_secs(7))),
    )
    .await
    .unwrap();
    let err = client
        .append("s", events("E", 1), ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Unauthenticated { ref message } if message == "fake server"),
        "{err:?}"
    );
    let err = client
        .subscribe(SubscribeOptions::from_start())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated { .. }), "{err:?}");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for headers in seen.iter() {
        assert_eq!(headers.get("authorization").unwrap(), "Bearer s3cret-token");
    }
    // The unary call carries the deadline; the subscription none.
    let timeout = seen[0]
        .get("grpc-timeout")
        .expect("grpc-timeout")
        .to_str()
        .unwrap();
    assert!(
        timeout.starts_with("7") || timeout.starts_with("700"),
        "{timeout}"
    );
    assert!(seen[1].get("grpc-timeout").is_none());
}

#[tokio::test]
async fn deadline_exceeded() {
    let (port, _) = support::fake_server(FakeAnswer::Hang).await;
    let client = Client::connect(
        ClientOptions::new(format!("127.0.0.1:{port}"))
            .default_deadline(Some(Duration::from_millis(200))),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let err = client
        .read_all(ReadAllOptions::forward())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(eventstore_client::tonic::Code::DeadlineExceeded),
        "{err:?}"
    );
    assert!(matches!(err, Error::Other(_)));
    assert!(started.elapsed() < Duration::from_secs(5));
    // A per-client override.
    let patient = client.with_deadline(Some(Duration::from_millis(50)));
    let err = patient
        .read_all(ReadAllOptions::forward())
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(eventstore_client::tonic::Code::DeadlineExceeded),
        "{err:?}"
    );
}

#[tokio::test]
async fn tls_with_a_ca() {
    let server = TestServer::start().await;
    let tls_port = support::tls_proxy(format!("127.0.0.1:{}", server.port).parse().unwrap()).await;
    let ca = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ca.pem"
    ))
    .unwrap();

    let client = Client::connect(
        ClientOptions::new(format!("localhost:{tls_port}"))
            .tls(TlsOptions::with_ca_pem(ca.clone())),
    )
    .await
    .unwrap();
    client
        .append("s", events("E", 2), ExpectedVersion::NoStream)
        .await
        .unwrap();
    let page = client.read_stream("s", Default::default()).await.unwrap();
    assert_eq!(page.events.len(), 2);
    let mut sub = client
        .subscribe(SubscribeOptions::from_start())
        .await
        .unwrap();
    assert_eq!(next_event(&mut sub).await.global_position, 1);

    // By IP, with the name to check given explicitly.
    let by_ip = Client::connect(
        ClientOptions::new(format!("https://127.0.0.1:{tls_port}"))
            .tls(TlsOptions::with_ca_pem(ca.clone()).domain_name("localhost")),
    )
    .await
    .unwrap();
    assert_eq!(
        by_ip
            .read_all(ReadAllOptions::forward())
            .await
            .unwrap()
            .head_position,
        2
    );

    // A CA that did not sign the certificate: the handshake fails.
    let other_ca = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/server.pem"
    ))
    .unwrap();
    let err = Client::connect(
        ClientOptions::new(format!("localhost:{tls_port}")).tls(TlsOptions::with_ca_pem(other_ca)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");

    // TLS against the plaintext port fails too.
    let err = Client::connect(
        ClientOptions::new(format!("localhost:{}", server.port)).tls(TlsOptions::with_ca_pem(ca)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn bad_options_are_config_errors() {
    let err = Client::connect(ClientOptions::new("127.0.0.1:1").bearer_token("bad\ntoken"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert_eq!(err.code(), None);
    let err = Client::connect(ClientOptions::new("ftp://127.0.0.1:1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let err = Client::connect(
        ClientOptions::new("127.0.0.1:1").tls(TlsOptions::with_ca_pem(b"not a pem".to_vec())),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Config(_) | Error::Unavailable { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn large_events_and_page_limits() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    // Two ~3 MiB events: each page holds one (the page budget is ~4 MiB, but
    // a page always has at least one event).
    let big = |b: u8| EventData::new("Big", vec![b; 3 << 20]);
    client
        .append("big", [big(1)], ExpectedVersion::Any)
        .await
        .unwrap();
    client
        .append("big", [big(2)], ExpectedVersion::Any)
        .await
        .unwrap();
    let pages: Vec<_> = client
        .read_stream_pages("big", ReadStreamOptions::forward())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        pages.iter().map(|p| p.events.len()).collect::<Vec<_>>(),
        vec![1, 1]
    );
    assert_eq!(pages[1].events[0].payload, vec![2u8; 3 << 20]);

    // Over the request limit (4 MiB): rejected, typed as InvalidArgument.
    let err = client
        .append(
            "big",
            [EventData::new("Big", vec![0u8; 5 << 20])],
            ExpectedVersion::Any,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");

    // max_count above the server maximum (1000) is capped, not rejected.
    let many: Vec<EventData> = (0..1000).map(|_| EventData::new("E", vec![])).collect();
    client
        .append("many", many, ExpectedVersion::Any)
        .await
        .unwrap();
    client
        .append("many", events("E", 200), ExpectedVersion::Any)
        .await
        .unwrap();
    let page = client
        .read_stream("many", ReadStreamOptions::forward().max_count(5000))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1000);
    assert!(!page.is_end);
    let n = client
        .read_stream_events("many", ReadStreamOptions::forward().max_count(5000))
        .count()
        .await;
    assert_eq!(n, 1200);
}

#[tokio::test]
async fn filtered_read_all_pages_across_bounded_scans() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    // 11,000 non-matching events, then a match: one filtered ReadAll
    // examines at most 10,000 events, so the first page is empty but not
    // the end; the pager reads on by itself.
    for _ in 0..11 {
        let batch: Vec<EventData> = (0..1000).map(|_| EventData::new("Noise", vec![])).collect();
        client
            .append("noise", batch, ExpectedVersion::Any)
            .await
            .unwrap();
    }
    let needle = EventData::new("Needle", vec![]);
    client
        .append("needle-1", [needle.clone()], ExpectedVersion::Any)
        .await
        .unwrap();

    let options = ReadAllOptions::forward().filter(Filter::stream_prefix("needle-"));
    let first = client.read_all(options.clone()).await.unwrap();
    assert!(
        first.events.is_empty() && !first.is_end,
        "{:?}",
        (first.next_position, first.is_end)
    );
    assert!(first.next_position > 1);

    let pages: Vec<_> = client
        .read_all_pages(options.clone())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages.len(), 1, "empty pages are skipped");
    assert_eq!(pages[0].events[0].event_id, needle.event_id);
    assert_eq!(pages[0].events[0].global_position, 11_001);
    assert!(pages[0].is_end);

    let found: Vec<RecordedEvent> = client
        .read_all_events(ReadAllOptions::backward().filter(Filter::event_types(["Needle"])))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
}
