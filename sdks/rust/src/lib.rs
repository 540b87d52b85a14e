//! Async Rust client for the **eventstore** gRPC event store.
//!
//! Append events to streams under an expected-version check, read a stream or
//! the whole log page by page (or as a [`Stream`]), and subscribe to the log
//! with catch-up, live delivery and **automatic resume** after a dropped
//! connection or a server restart — never skipping and never repeating an
//! event.
//!
//! ```no_run
//! use eventstore_client::{
//!     Client, ClientOptions, EventData, ExpectedVersion, ReadStreamOptions, StreamExt,
//!     SubscribeOptions, SubscriptionMessage,
//! };
//!
//! # async fn demo() -> Result<(), eventstore_client::Error> {
//! let client = Client::connect(ClientOptions::new("127.0.0.1:50051")).await?;
//!
//! let event = EventData::json("OrderPlaced", &serde_json::json!({ "total": 42 }))?;
//! let result = client.append("order-42", [event], ExpectedVersion::NoStream).await?;
//! println!("stored at global position {}", result.first_global_position);
//!
//! let page = client.read_stream("order-42", ReadStreamOptions::forward()).await?;
//! for event in &page.events {
//!     let body: serde_json::Value = event.json()?;
//!     println!("{} v{}: {body}", event.event_type, event.stream_version);
//! }
//!
//! let mut subscription = client.subscribe(SubscribeOptions::from_start()).await?;
//! while let Some(message) = subscription.next().await {
//!     match message? {
//!         SubscriptionMessage::Event(event) => println!("{}", event.global_position),
//!         SubscriptionMessage::CaughtUp { .. } => println!("live from here"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `tls` (default): TLS through rustls with a CA of your choice
//!   ([`TlsOptions`]).
//! - `tls-native-roots`: TLS with the operating system's roots when no CA is
//!   given.
//! - `json` (default): [`EventData::json`] and [`RecordedEvent::json`].
#![warn(missing_docs)]

mod client;
mod error;
mod subscription;
mod types;

/// The messages and the tonic client generated from
/// `proto/eventstore/v1/eventstore.proto` by prost and tonic (the Bazel
/// target `//sdks/rust:stubs`). The rest of the crate wraps them; use them
/// directly through [`Client::raw`] for anything it does not wrap.
#[allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
pub mod proto {
    include!("gen/eventstore.v1.rs");
}

pub use client::{Client, ClientOptions, TlsOptions};
pub use error::Error;
pub use subscription::{
    ResumePolicy, SubscribeFrom, SubscribeOptions, Subscription, SubscriptionMessage,
    DEFAULT_MAX_BATCH,
};
pub use types::{
    AllPage, AppendCondition, AppendOptions, AppendResult, Direction, EventData, ExpectedVersion,
    Filter, Query, QueryItem, ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamAppend,
    StreamPage,
};

/// The gRPC library this crate is built on ([`Error::Other`] holds a
/// [`tonic::Status`]).
pub use tonic;

/// The trait of every stream this crate returns.
pub use futures_core::Stream;
/// `next()`, `collect()`, … for those streams (from `futures-util`).
pub use futures_util::StreamExt;
/// `try_next()`, `try_collect()`, … for those streams (from `futures-util`).
pub use futures_util::TryStreamExt;
