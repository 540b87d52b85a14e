//! Tags, queries, conditional appends and `append_many` (Extension 1 of the
//! API) against a real server (memory backend), and a conditional append
//! against a server that knows Append but not AppendMany.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use eventstore_client::{
    AppendCondition, AppendOptions, Client, ClientOptions, Error, EventData, ExpectedVersion,
    Filter, Query, QueryItem, ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamAppend,
    StreamExt, SubscribeOptions, SubscriptionMessage, TryStreamExt,
};
use support::{connect, FakeAnswer, TestServer};

const WAIT: Duration = Duration::from_secs(20);

fn ev(event_type: &str, tags: &[&str]) -> EventData {
    EventData::new(event_type, Vec::new()).tags(tags.iter().copied())
}

async fn read_query(client: &Client, query: Query, from: u64) -> Vec<u64> {
    let events: Vec<RecordedEvent> = client
        .read_all_events(
            ReadAllOptions::forward()
                .from_position(from)
                .filter(Filter::query(query)),
        )
        .try_collect()
        .await
        .unwrap();
    events.iter().map(|e| e.global_position - from).collect()
}

#[tokio::test]
async fn tags_round_trip_on_every_read_and_the_subscription() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    client
        .append(
            "s",
            [ev("Tagged", &["b", "a"]), ev("Untagged", &[])],
            ExpectedVersion::Any,
        )
        .await
        .unwrap();
    let page = client
        .read_stream("s", ReadStreamOptions::forward())
        .await
        .unwrap();
    let tags: Vec<Vec<String>> = page.events.iter().map(|e| e.tags.clone()).collect();
    assert_eq!(tags, vec![vec!["b".to_string(), "a".to_string()], vec![]]);
    let all = client.read_all(ReadAllOptions::forward()).await.unwrap();
    assert_eq!(all.events[0].tags, ["b", "a"]);
    let mut sub = client
        .subscribe(SubscribeOptions::from_start())
        .await
        .unwrap();
    match tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        SubscriptionMessage::Event(e) => assert_eq!(e.tags, ["b", "a"]),
        other => panic!("expected the first event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_query_selects_by_types_tags_both_and_several_items() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let r = client
        .append(
            "s",
            [
                ev("A", &["c"]),
                ev("B", &["c", "s"]),
                ev("A", &["s"]),
                ev("C", &["c"]),
            ],
            ExpectedVersion::Any,
        )
        .await
        .unwrap();
    let p = r.first_global_position;
    assert_eq!(
        read_query(&client, QueryItem::tags(["c"]).into(), p).await,
        [0, 1, 3]
    );
    assert_eq!(
        read_query(&client, QueryItem::tags(["c", "s"]).into(), p).await,
        [1]
    );
    let a_c = QueryItem::tags(["c"]).and_event_types(["A"]);
    assert_eq!(read_query(&client, a_c.clone().into(), p).await, [0]);
    let ac_c = QueryItem::event_types(["A", "C"]).and_tags(["c"]);
    assert_eq!(read_query(&client, ac_c.into(), p).await, [0, 3]);
    let both = Query::of(a_c).or(QueryItem::tags(["s"]));
    assert_eq!(read_query(&client, both, p).await, [0, 1, 2]);
    let types_only = QueryItem::event_types(["B", "C"]);
    assert_eq!(read_query(&client, types_only.into(), p).await, [1, 3]);
    // With the stream prefix too: every part must pass.
    let none = client
        .read_all(
            ReadAllOptions::forward()
                .filter(Filter::stream_prefix("other").and_query(QueryItem::tags(["c"]))),
        )
        .await
        .unwrap();
    assert!(none.events.is_empty());
}

#[tokio::test]
async fn a_subscription_by_query_replays_then_delivers_live_matches() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    client
        .append(
            "s",
            [ev("A", &["c"]), ev("A", &[]), ev("B", &["c"])],
            ExpectedVersion::Any,
        )
        .await
        .unwrap();
    let mut sub = client
        .subscribe(SubscribeOptions::from_start().filter(Filter::query(QueryItem::tags(["c"]))))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        match tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            SubscriptionMessage::CaughtUp { .. } => {
                client
                    .append("s", [ev("A", &[]), ev("C", &["c"])], ExpectedVersion::Any)
                    .await
                    .unwrap();
            }
            SubscriptionMessage::Event(e) => got.push(e.global_position),
            _ => {}
        }
    }
    assert_eq!(got, [1, 3, 5]);
}

#[tokio::test]
async fn a_condition_passes_then_fails_with_the_conflicting_position() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    client
        .append("other", [ev("X", &[])], ExpectedVersion::Any)
        .await
        .unwrap();
    let query = Query::of(QueryItem::tags(["c"]).and_event_types(["Booked"]));
    let head = client
        .read_all(ReadAllOptions::forward().filter(Filter::query(query.clone())))
        .await
        .unwrap()
        .head_position;
    let cond = AppendCondition::new(query.clone()).after(head);
    let ok = client
        .append(
            "s",
            [ev("Booked", &["c"])],
            AppendOptions::from(cond.clone()),
        )
        .await
        .unwrap();
    assert_eq!(ok.first_global_position, 2);
    let err = client
        .append("s", [ev("Booked", &["c"])], cond)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AppendConditionFailed { position: 2 }),
        "{err:?}"
    );
    assert_eq!(err.code(), Some(eventstore_client::tonic::Code::Aborted));
    assert_eq!(err.append_index(), None);
    let page = client
        .read_stream("s", ReadStreamOptions::forward())
        .await
        .unwrap();
    assert_eq!(page.stream_version, 1);
    // After the booking's own position it holds again; after 0 = the whole log.
    client
        .append(
            "s",
            [ev("Booked", &["c"])],
            AppendCondition::new(query.clone()).after(2),
        )
        .await
        .unwrap();
    let err = client
        .append(
            "s",
            [ev("Booked", &["c"])],
            AppendCondition::new(query.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AppendConditionFailed { position: 2 }),
        "{err:?}"
    );
    // Unrelated events never match.
    client
        .append(
            "s",
            [ev("Booked", &["d"])],
            AppendCondition::new(query).after(3),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_retried_conditional_append_is_a_duplicate_and_expected_version_comes_first() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let cond = AppendCondition::new(QueryItem::tags(["c"]));
    let event = ev("Booked", &["c"]);
    let first = client
        .append("s", [event.clone()], cond.clone())
        .await
        .unwrap();
    let retry = client.append("s", [event], cond.clone()).await.unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.first_global_position, first.first_global_position);
    let err = client
        .append(
            "s",
            [ev("X", &["c"])],
            AppendOptions::new(ExpectedVersion::Exact(3)).condition(cond),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongExpectedVersion {
                expected: ExpectedVersion::Exact(3),
                actual: Some(1)
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn append_many_commits_all_in_one_run_of_positions() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    client
        .append("x", [ev("X", &[])], ExpectedVersion::Any)
        .await
        .unwrap();
    let results = client
        .append_many(
            [
                StreamAppend::new(
                    "s1",
                    [ev("A", &[]), ev("B", &[])],
                    ExpectedVersion::NoStream,
                )
                .stream_type("Thing"),
                StreamAppend::new("s2", [ev("C", &[])], ExpectedVersion::Any),
                StreamAppend::new("s1", [ev("D", &[])], ExpectedVersion::Exact(2)),
            ],
            None,
        )
        .await
        .unwrap();
    let spans: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r.first_stream_version,
                r.last_stream_version,
                r.first_global_position,
                r.last_global_position,
            )
        })
        .collect();
    assert_eq!(spans, [(1, 2, 2, 3), (1, 1, 4, 4), (3, 3, 5, 5)]);
    let s1 = client
        .read_stream("s1", ReadStreamOptions::forward())
        .await
        .unwrap();
    let types: Vec<&str> = s1.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["A", "B", "D"]);
    assert_eq!(s1.events[0].stream_type, "Thing");
}

#[tokio::test]
async fn append_many_failing_in_the_middle_stores_nothing_and_names_the_append() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    client
        .append("s2", [ev("Existing", &[])], ExpectedVersion::Any)
        .await
        .unwrap();
    let err = client
        .append_many(
            [
                StreamAppend::new("s1", [ev("A", &[])], ExpectedVersion::Any),
                StreamAppend::new("s2", [ev("B", &[])], ExpectedVersion::NoStream),
                StreamAppend::new("s3", [ev("C", &[])], ExpectedVersion::Any),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.append_index(), Some(1));
    assert!(
        matches!(
            err.unwrap_append(),
            Error::WrongExpectedVersion {
                expected: ExpectedVersion::NoStream,
                actual: Some(1)
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), Some(eventstore_client::tonic::Code::Aborted));
    for s in ["s1", "s3"] {
        let e = client
            .read_stream(s, ReadStreamOptions::forward())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::StreamNotFound { .. }), "{e:?}");
    }
    assert_eq!(
        client
            .read_all(ReadAllOptions::forward())
            .await
            .unwrap()
            .head_position,
        1
    );
    // The actual version counts the earlier appends of the same request.
    let err = client
        .append_many(
            [
                StreamAppend::new("s1", [ev("A", &[])], ExpectedVersion::Any),
                StreamAppend::new("s1", [ev("B", &[])], ExpectedVersion::Exact(0)),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InAppend { index: 1, error } if matches!(**error, Error::WrongExpectedVersion { actual: Some(1), .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn append_many_condition_names_no_append_and_other_errors_do() {
    let server = TestServer::start().await;
    let client = connect(&server.address()).await;
    let seen = client
        .append("s1", [ev("Seen", &["c"])], ExpectedVersion::Any)
        .await
        .unwrap();
    let two = || {
        [
            StreamAppend::new("s1", [ev("A", &["c"])], ExpectedVersion::Any),
            StreamAppend::new("s2", [ev("B", &["c"])], ExpectedVersion::Any),
        ]
    };
    let err = client
        .append_many(two(), Some(AppendCondition::new(QueryItem::tags(["c"]))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AppendConditionFailed { position: 1 }),
        "{err:?}"
    );
    assert_eq!(err.append_index(), None);
    // The request's own events never match its condition.
    let ok = client
        .append_many(
            two(),
            Some(AppendCondition::new(QueryItem::tags(["c"])).after(seen.last_global_position)),
        )
        .await
        .unwrap();
    assert_eq!(ok.len(), 2);
    let used = EventData::new("U", Vec::new());
    client
        .append("s3", [used.clone()], ExpectedVersion::Any)
        .await
        .unwrap();
    let err = client
        .append_many(
            [
                StreamAppend::new("s3", [ev("B", &[])], ExpectedVersion::Any),
                StreamAppend::new("s3", [used], ExpectedVersion::Any),
            ],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.append_index(), Some(1));
    assert!(
        matches!(err.unwrap_append(), Error::AlreadyExists { .. }),
        "{err:?}"
    );
    let err = client
        .append_many(
            [StreamAppend::new(
                "s3",
                [ev("B", &[""])],
                ExpectedVersion::Any,
            )],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.append_index(), Some(0));
    assert!(
        matches!(err.unwrap_append(), Error::InvalidArgument { .. }),
        "{err:?}"
    );
    let err = client
        .append("s3", [ev("B", &[])], AppendCondition::new(Query::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { message } if message.contains("fail_if_events_match")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_conditional_append_is_never_sent_as_a_plain_append() {
    let (port, _) = support::fake_server(FakeAnswer::OnlyAppend).await;
    let client = Client::connect(ClientOptions::new(format!("http://127.0.0.1:{port}")))
        .await
        .unwrap();
    client
        .append("s", [ev("A", &[])], ExpectedVersion::Any)
        .await
        .unwrap();
    let err = client
        .append(
            "s",
            [ev("A", &[])],
            AppendCondition::new(QueryItem::tags(["x"])),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unimplemented { .. }), "{err:?}");
    assert_eq!(
        err.code(),
        Some(eventstore_client::tonic::Code::Unimplemented)
    );
    let err = client
        .append_many(
            [StreamAppend::new("s", [ev("A", &[])], ExpectedVersion::Any)],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unimplemented { .. }), "{err:?}");
}

/// `cargo test` builds the examples next to the test binaries.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = debug.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} not built: run cargo test",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_enrolment_example_runs() {
    let server = TestServer::start().await;
    let out = Command::new(example_binary("enrolment"))
        .env("EVENTSTORE_ADDRESS", server.address())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("no (full)"), "{stdout}");
    assert!(stdout.contains("stale decision refused"), "{stdout}");
    assert!(stdout.trim_end().ends_with("enrolment: OK"), "{stdout}");
}
