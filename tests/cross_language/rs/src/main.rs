//! Cross-language test program for the Rust SDK (sdks/rust), see ../README.md.
//!
//! ```text
//! eventstore-xlang append <address> <stream> <spec.json>   appends the spec's events in one call,
//!                                                          prints the AppendResult as JSON
//! eventstore-xlang dump <address> <stream>                 prints the whole stream as canonical JSON
//! ```
//!
//! Only the SDK's public API is used.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use eventstore_client::{
    AppendOptions, Client, ClientOptions, EventData, ExpectedVersion, ReadStreamOptions,
    RecordedEvent, StreamExt,
};
use serde::Deserialize;

/// Page size of the dump: small, so that the paging stream has to follow several pages.
const PAGE_SIZE: u32 = 3;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    stream_type: String,
    events: Vec<SpecEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecEvent {
    event_id: String,
    event_type: String,
    event_version: u32,
    content_type: String,
    metadata: BTreeMap<String, String>,
    correlation_id: String,
    causation_id: String,
    /// uint64 as decimal text.
    occurred_at_unix_ms: String,
    payload_b64: String,
}

// ---- canonical JSON ----------------------------------------------------------
// Compact, keys sorted by code point (a BTreeMap<String, _> orders by UTF-8
// bytes, which is the same order), strings escaped by serde_json (the rules of
// JSON.stringify and of Python's json with ensure_ascii=False), integers as
// plain decimals. Written by hand so that it does not depend on whether
// serde_json's `preserve_order` feature is on somewhere in the build.

enum Canon {
    Str(String),
    U64(u64),
    Bool(bool),
    Obj(BTreeMap<String, Canon>),
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

fn canonical(v: &Canon) -> String {
    match v {
        Canon::Str(s) => json_str(s),
        Canon::U64(n) => n.to_string(),
        Canon::Bool(b) => b.to_string(),
        Canon::Obj(m) => {
            let fields: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", json_str(k), canonical(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }
}

fn obj<const N: usize>(fields: [(&str, Canon); N]) -> Canon {
    Canon::Obj(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn event_to_canon(e: RecordedEvent) -> Canon {
    // The SDK gives "" / 0 on the wire as None (not given).
    obj([
        (
            "causation_id",
            Canon::Str(e.causation_id.unwrap_or_default()),
        ),
        ("content_type", Canon::Str(e.content_type)),
        (
            "correlation_id",
            Canon::Str(e.correlation_id.unwrap_or_default()),
        ),
        ("event_id", Canon::Str(e.event_id)),
        ("event_type", Canon::Str(e.event_type)),
        ("event_version", Canon::U64(e.event_version.into())),
        ("global_position", Canon::U64(e.global_position)),
        (
            "metadata",
            Canon::Obj(
                e.metadata
                    .into_iter()
                    .map(|(k, v)| (k, Canon::Str(v)))
                    .collect(),
            ),
        ),
        (
            "occurred_at_unix_ms",
            Canon::U64(e.occurred_at_unix_ms.unwrap_or(0)),
        ),
        ("payload", Canon::Str(B64.encode(&e.payload))),
        ("stream_id", Canon::Str(e.stream_id)),
        ("stream_type", Canon::Str(e.stream_type)),
        ("stream_version", Canon::U64(e.stream_version)),
    ])
}

// ---- commands ----------------------------------------------------------------

type BoxError = Box<dyn std::error::Error>;

fn event_from_spec(s: SpecEvent) -> Result<EventData, BoxError> {
    let payload = B64
        .decode(&s.payload_b64)
        .map_err(|e| format!("spec: payload_b64 of {}: {e}", s.event_id))?;
    let mut e = EventData::new(s.event_type, payload)
        .id(s.event_id)
        .event_version(s.event_version)
        .content_type(s.content_type);
    for (k, v) in s.metadata {
        e = e.metadata(k, v);
    }
    if !s.correlation_id.is_empty() {
        e = e.correlation_id(s.correlation_id);
    }
    if !s.causation_id.is_empty() {
        e = e.causation_id(s.causation_id);
    }
    let occurred: u64 = s.occurred_at_unix_ms.parse()?;
    e.occurred_at_unix_ms = (occurred != 0).then_some(occurred);
    Ok(e)
}

async fn append(client: &Client, stream: &str, spec_path: &str) -> Result<String, BoxError> {
    let spec: Spec = serde_json::from_slice(&std::fs::read(spec_path)?)?;
    let events = spec
        .events
        .into_iter()
        .map(event_from_spec)
        .collect::<Result<Vec<_>, _>>()?;
    let options = AppendOptions::new(ExpectedVersion::NoStream).stream_type(spec.stream_type);
    let r = client.append(stream, events, options).await?;
    Ok(canonical(&obj([
        ("duplicate", Canon::Bool(r.duplicate)),
        ("first_global_position", Canon::U64(r.first_global_position)),
        ("first_stream_version", Canon::U64(r.first_stream_version)),
        ("last_global_position", Canon::U64(r.last_global_position)),
        ("last_stream_version", Canon::U64(r.last_stream_version)),
    ])) + "\n")
}

async fn dump(client: &Client, stream: &str) -> Result<String, BoxError> {
    let mut events =
        client.read_stream_events(stream, ReadStreamOptions::forward().max_count(PAGE_SIZE));
    let mut lines = Vec::new();
    while let Some(e) = events.next().await {
        lines.push(canonical(&event_to_canon(e?)));
    }
    Ok(format!("[\n{}\n]\n", lines.join(",\n")))
}

async fn run(args: &[String]) -> Result<String, BoxError> {
    let (cmd, address, stream, spec) = match args {
        [c, a, s] if c == "dump" => (c, a, s, None),
        [c, a, s, p] if c == "append" => (c, a, s, Some(p)),
        _ => {
            return Err("usage: eventstore-xlang append <address> <stream> <spec.json> | dump <address> <stream>".into())
        }
    };
    let client = Client::connect(ClientOptions::new(address.as_str())).await?;
    match (cmd.as_str(), spec) {
        ("append", Some(spec)) => append(&client, stream, spec).await,
        _ => dump(&client, stream).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(out.as_bytes())
                .and_then(|_| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eventstore-xlang: {e}");
            ExitCode::FAILURE
        }
    }
}
