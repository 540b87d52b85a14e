//! The values the client sends and receives.

use std::collections::HashMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::proto;

/// The optimistic-concurrency check of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpectedVersion {
    /// Always passes.
    #[default]
    Any,
    /// Passes when the stream has no events.
    NoStream,
    /// Passes when the stream has at least one event.
    StreamExists,
    /// Passes when the stream's last version is exactly this (0 means the
    /// same as [`ExpectedVersion::NoStream`]).
    Exact(u64),
}

impl ExpectedVersion {
    pub(crate) fn to_wire(self) -> (proto::ExpectedVersionKind, u64) {
        match self {
            ExpectedVersion::Any => (proto::ExpectedVersionKind::ExpectedAny, 0),
            ExpectedVersion::NoStream => (proto::ExpectedVersionKind::ExpectedNoStream, 0),
            ExpectedVersion::StreamExists => (proto::ExpectedVersionKind::ExpectedStreamExists, 0),
            ExpectedVersion::Exact(v) => (proto::ExpectedVersionKind::ExpectedExact, v),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::StreamExists => f.write_str("stream exists"),
            ExpectedVersion::Exact(v) => write!(f, "exact {v}"),
        }
    }
}

/// How to append: the expected-version check and, optionally, the stream's
/// type. An [`ExpectedVersion`] converts into it, so
/// `client.append(stream, events, ExpectedVersion::Any)` works as well as
/// `client.append(stream, events, AppendOptions::new(ExpectedVersion::NoStream).stream_type("Order"))`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// The expected-version check.
    pub expected: ExpectedVersion,
    /// The stream's type (aggregate kind, e.g. `Order`). The first one given
    /// for a stream sticks; a different one later fails with
    /// [`crate::Error::StreamTypeMismatch`]. `None`: no opinion.
    pub stream_type: Option<String>,
    /// Fail with [`crate::Error::AppendConditionFailed`] if an event matching
    /// the condition was committed after its `after` position. An append with
    /// a condition is sent as an AppendMany of one append, so that a server
    /// without conditions answers [`crate::Error::Unimplemented`] instead of
    /// ignoring it.
    pub condition: Option<AppendCondition>,
}

impl AppendOptions {
    /// Options with this expected version, no stream type and no condition.
    pub fn new(expected: ExpectedVersion) -> Self {
        AppendOptions {
            expected,
            stream_type: None,
            condition: None,
        }
    }

    /// Sets the stream's type.
    pub fn stream_type(mut self, stream_type: impl Into<String>) -> Self {
        self.stream_type = Some(stream_type.into());
        self
    }

    /// Sets the append condition.
    pub fn condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }
}

impl From<AppendCondition> for AppendOptions {
    fn from(condition: AppendCondition) -> Self {
        AppendOptions::default().condition(condition)
    }
}

fn strings<I, S>(values: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    values.into_iter().map(Into::into).collect()
}

/// One item of a [`Query`]: matches an event whose type is one of
/// `event_types` (any type when empty) and which carries every one of `tags`
/// (any tags when empty). An item with both empty matches every event.
/// Strings are matched exactly as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct QueryItem {
    /// The event types, any one of which matches; empty = any type.
    pub event_types: Vec<String>,
    /// The tags an event must all carry; empty = any tags.
    pub tags: Vec<String>,
}

impl QueryItem {
    /// An item that matches events carrying all of these tags, of any type.
    pub fn tags<I, S>(tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        QueryItem {
            event_types: Vec::new(),
            tags: strings(tags),
        }
    }

    /// An item that matches events of any of these types, whatever their tags.
    pub fn event_types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        QueryItem {
            event_types: strings(types),
            tags: Vec::new(),
        }
    }

    /// Also requires one of these event types.
    pub fn and_event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    /// Also requires these tags.
    pub fn and_tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    fn to_wire(&self) -> proto::QueryItem {
        proto::QueryItem {
            event_types: self.event_types.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// Selects events by type and tag: an event matches when any of the items
/// does (OR). The server allows up to 16 items, each with up to 32 types and
/// 32 tags.
///
/// ```
/// use eventstore_client::{Filter, Query, QueryItem};
/// let query = Query::of(QueryItem::tags(["course:c1"]).and_event_types(["StudentEnrolled"]))
///     .or(QueryItem::tags(["student:s7"]));
/// let filter = Filter::query(query);
/// assert_eq!(filter.items.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Query {
    /// The items, OR'ed.
    pub items: Vec<QueryItem>,
}

impl Query {
    /// A query of one item.
    pub fn of(item: QueryItem) -> Self {
        Query { items: vec![item] }
    }

    /// This query with one more item, OR'ed with the others.
    pub fn or(mut self, item: QueryItem) -> Self {
        self.items.push(item);
        self
    }

    pub(crate) fn to_wire(&self) -> Vec<proto::QueryItem> {
        self.items.iter().map(QueryItem::to_wire).collect()
    }
}

impl From<QueryItem> for Query {
    fn from(item: QueryItem) -> Self {
        Query::of(item)
    }
}

impl FromIterator<QueryItem> for Query {
    fn from_iter<T: IntoIterator<Item = QueryItem>>(iter: T) -> Self {
        Query {
            items: iter.into_iter().collect(),
        }
    }
}

/// Makes an append fail if an event matching `fail_if_events_match` was
/// committed at a global position above `after` (0: anywhere in the log),
/// checked atomically with the commit. `after` is normally the
/// [`AllPage::head_position`] of the read the decision was based on. A failed
/// condition is [`crate::Error::AppendConditionFailed`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AppendCondition {
    /// 1..16 items (required).
    pub fail_if_events_match: Query,
    /// Only events with a global position above this are considered.
    pub after: u64,
}

impl AppendCondition {
    /// Fail if any event matching `query` exists (in the whole log, until
    /// [`AppendCondition::after`] narrows it).
    pub fn new(query: impl Into<Query>) -> Self {
        AppendCondition {
            fail_if_events_match: query.into(),
            after: 0,
        }
    }

    /// Only events committed after this global position count.
    pub fn after(mut self, position: u64) -> Self {
        self.after = position;
        self
    }

    pub(crate) fn to_wire(&self) -> proto::AppendCondition {
        proto::AppendCondition {
            fail_if_events_match: self.fail_if_events_match.to_wire(),
            after: self.after,
        }
    }
}

/// One append of [`crate::Client::append_many`]: events to one stream under
/// its own expected-version check (made as the earlier appends of the same
/// request leave the stream) and, optionally, the stream's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppend {
    /// The stream.
    pub stream: String,
    /// The events, in order.
    pub events: Vec<EventData>,
    /// The expected-version check.
    pub expected: ExpectedVersion,
    /// The stream's type; `None`: no opinion.
    pub stream_type: Option<String>,
}

impl StreamAppend {
    /// `events` to `stream` with this expected version.
    pub fn new<I>(stream: impl Into<String>, events: I, expected: ExpectedVersion) -> Self
    where
        I: IntoIterator<Item = EventData>,
    {
        StreamAppend {
            stream: stream.into(),
            events: events.into_iter().collect(),
            expected,
            stream_type: None,
        }
    }

    /// Sets the stream's type.
    pub fn stream_type(mut self, stream_type: impl Into<String>) -> Self {
        self.stream_type = Some(stream_type.into());
        self
    }

    pub(crate) fn into_wire(self) -> proto::AppendRequest {
        let (kind, version) = self.expected.to_wire();
        proto::AppendRequest {
            stream_id: self.stream,
            stream_type: self.stream_type.unwrap_or_default(),
            expected_kind: kind as i32,
            expected_version: version,
            events: self.events.into_iter().map(EventData::into_wire).collect(),
            condition: None,
        }
    }
}

impl From<ExpectedVersion> for AppendOptions {
    fn from(expected: ExpectedVersion) -> Self {
        AppendOptions::new(expected)
    }
}

/// An event to append.
///
/// [`EventData::new`] and [`EventData::json`] give the event a fresh UUIDv7 as
/// its id, so sending the same `EventData` again (a retry after a timeout) is
/// recognised by the server as a duplicate instead of being stored twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventData {
    /// Lowercase UUID text; empty lets the server assign one (then a retry
    /// appends the event again).
    pub event_id: String,
    /// The kind of event, e.g. `OrderPlaced` (1..256 bytes, no control characters).
    pub event_type: String,
    /// Schema version of `event_type`, stored as given.
    pub event_version: u32,
    /// MIME type of the payload; empty means `application/octet-stream`.
    pub content_type: String,
    /// The body, opaque to the store.
    pub payload: Vec<u8>,
    /// Free-form key/value pairs (at most 64 entries and 64 KiB by default).
    pub metadata: HashMap<String, String>,
    /// The request or process this event belongs to.
    pub correlation_id: Option<String>,
    /// The message that caused this event.
    pub causation_id: Option<String>,
    /// When the event happened by the client's clock, Unix milliseconds.
    pub occurred_at_unix_ms: Option<u64>,
    /// What the event is about, for queries and append conditions (e.g.
    /// `course:c1`): up to 32, each 1..256 bytes without control characters,
    /// no two alike.
    pub tags: Vec<String>,
}

impl EventData {
    /// An event with a fresh UUIDv7 id and a binary payload
    /// (`application/octet-stream`).
    pub fn new(event_type: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        EventData {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: event_type.into(),
            event_version: 0,
            content_type: String::new(),
            payload: payload.into(),
            metadata: HashMap::new(),
            correlation_id: None,
            causation_id: None,
            occurred_at_unix_ms: None,
            tags: Vec::new(),
        }
    }

    /// An event whose payload is `value` as JSON (`application/json`), with a
    /// fresh UUIDv7 id.
    #[cfg(feature = "json")]
    pub fn json<T: serde::Serialize + ?Sized>(
        event_type: impl Into<String>,
        value: &T,
    ) -> Result<Self, crate::Error> {
        let payload = serde_json::to_vec(value)?;
        Ok(EventData::new(event_type, payload).content_type("application/json"))
    }

    /// Sets the event id (a lowercase UUID), e.g. one derived from the
    /// command, so that retries of the command are idempotent.
    pub fn id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = event_id.into();
        self
    }

    /// Lets the server assign the id (a second send then appends again).
    pub fn without_id(mut self) -> Self {
        self.event_id.clear();
        self
    }

    /// Sets the schema version of the event type.
    pub fn event_version(mut self, version: u32) -> Self {
        self.event_version = version;
        self
    }

    /// Sets the MIME type of the payload.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }

    /// Adds one metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Adds one tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds these tags.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// Sets when the event happened (client clock).
    pub fn occurred_at(mut self, at: SystemTime) -> Self {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.occurred_at_unix_ms = Some(ms);
        self
    }

    pub(crate) fn into_wire(self) -> proto::EventData {
        proto::EventData {
            event_id: self.event_id,
            event_type: self.event_type,
            event_version: self.event_version,
            content_type: self.content_type,
            payload: self.payload,
            metadata: self.metadata,
            correlation_id: self.correlation_id.unwrap_or_default(),
            causation_id: self.causation_id.unwrap_or_default(),
            occurred_at_unix_ms: self.occurred_at_unix_ms.unwrap_or(0),
            tags: self.tags,
        }
    }
}

/// An event as the store returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Its stream.
    pub stream_id: String,
    /// The stream's type; empty if the stream never got one.
    pub stream_type: String,
    /// 1-based index in its stream.
    pub stream_version: u64,
    /// 1-based index in the store-wide log; gap-free, in commit order.
    pub global_position: u64,
    /// The event's id (assigned by the server if the append gave none).
    pub event_id: String,
    /// As appended.
    pub event_type: String,
    /// As appended.
    pub event_version: u32,
    /// As appended, or `application/octet-stream`.
    pub content_type: String,
    /// As appended, byte for byte.
    pub payload: Vec<u8>,
    /// As appended.
    pub metadata: HashMap<String, String>,
    /// As appended; `None` when none was given.
    pub correlation_id: Option<String>,
    /// As appended; `None` when none was given.
    pub causation_id: Option<String>,
    /// As appended (client clock); `None` when none was given.
    pub occurred_at_unix_ms: Option<u64>,
    /// Server clock at commit, Unix milliseconds.
    pub recorded_at_unix_ms: u64,
    /// As appended, in the same order.
    pub tags: Vec<String>,
}

impl RecordedEvent {
    /// Decodes the payload as JSON.
    #[cfg(feature = "json")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::Error> {
        Ok(serde_json::from_slice(&self.payload)?)
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

impl From<proto::RecordedEvent> for RecordedEvent {
    fn from(e: proto::RecordedEvent) -> Self {
        RecordedEvent {
            stream_id: e.stream_id,
            stream_type: e.stream_type,
            stream_version: e.stream_version,
            global_position: e.global_position,
            event_id: e.event_id,
            event_type: e.event_type,
            event_version: e.event_version,
            content_type: e.content_type,
            payload: e.payload,
            metadata: e.metadata,
            correlation_id: non_empty(e.correlation_id),
            causation_id: non_empty(e.causation_id),
            occurred_at_unix_ms: (e.occurred_at_unix_ms != 0).then_some(e.occurred_at_unix_ms),
            recorded_at_unix_ms: e.recorded_at_unix_ms,
            tags: e.tags,
        }
    }
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Stream version of the first appended event.
    pub first_stream_version: u64,
    /// Stream version of the last appended event: the stream's new last
    /// version, to pass as [`ExpectedVersion::Exact`] next time.
    pub last_stream_version: u64,
    /// Global position of the first appended event.
    pub first_global_position: u64,
    /// Global position of the last appended event.
    pub last_global_position: u64,
    /// Server clock at commit, Unix milliseconds (the original commit's for a
    /// duplicate).
    pub recorded_at_unix_ms: u64,
    /// True when this exact batch had already been committed: it was
    /// acknowledged again with the original numbers and nothing was written.
    pub duplicate: bool,
}

impl From<proto::AppendResponse> for AppendResult {
    fn from(r: proto::AppendResponse) -> Self {
        AppendResult {
            first_stream_version: r.first_stream_version,
            last_stream_version: r.last_stream_version,
            first_global_position: r.first_global_position,
            last_global_position: r.last_global_position,
            recorded_at_unix_ms: r.recorded_at_unix_ms,
            duplicate: r.duplicate,
        }
    }
}

/// Reading direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// Increasing versions or positions.
    #[default]
    Forward,
    /// Decreasing versions or positions.
    Backward,
}

impl Direction {
    pub(crate) fn to_wire(self) -> proto::Direction {
        match self {
            Direction::Forward => proto::Direction::Forward,
            Direction::Backward => proto::Direction::Backward,
        }
    }
}

/// Where and how to read a stream.
///
/// The default reads forward from the first event in pages of the server's
/// default size (100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadStreamOptions {
    /// Inclusive start. Forward: 0 or 1 = the first event. Backward: 0 = the
    /// last event.
    pub from_version: u64,
    /// Page size; 0 = the server default. Larger than the server maximum is
    /// capped.
    pub max_count: u32,
    /// Reading direction.
    pub direction: Direction,
}

impl ReadStreamOptions {
    /// Forward from the first event.
    pub fn forward() -> Self {
        ReadStreamOptions::default()
    }

    /// Backward from the last event.
    pub fn backward() -> Self {
        ReadStreamOptions {
            direction: Direction::Backward,
            ..Default::default()
        }
    }

    /// Starts at this version (inclusive).
    pub fn from_version(mut self, version: u64) -> Self {
        self.from_version = version;
        self
    }

    /// Sets the page size.
    pub fn max_count(mut self, max_count: u32) -> Self {
        self.max_count = max_count;
        self
    }
}

/// One page of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPage {
    /// The events, in reading order.
    pub events: Vec<RecordedEvent>,
    /// Pass as `from_version` to read the next page.
    pub next_version: u64,
    /// True when there are no more events in this direction.
    pub is_end: bool,
    /// The stream's last version when read.
    pub stream_version: u64,
}

impl From<proto::ReadStreamResponse> for StreamPage {
    fn from(r: proto::ReadStreamResponse) -> Self {
        StreamPage {
            events: r.events.into_iter().map(Into::into).collect(),
            next_version: r.next_version,
            is_end: r.is_end,
            stream_version: r.stream_version,
        }
    }
}

/// Selects events of the global log; an event must match every part given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// Only streams whose id starts with this; empty = all streams.
    pub stream_prefix: String,
    /// Only these event types (exact names); empty = all types.
    pub event_types: Vec<String>,
    /// Only events that one of these query items matches; empty = no query.
    pub items: Vec<QueryItem>,
}

impl Filter {
    /// Only streams whose id starts with `prefix`.
    pub fn stream_prefix(prefix: impl Into<String>) -> Self {
        Filter {
            stream_prefix: prefix.into(),
            ..Default::default()
        }
    }

    /// Only events that `query` matches.
    pub fn query(query: impl Into<Query>) -> Self {
        Filter {
            items: query.into().items,
            ..Default::default()
        }
    }

    /// Also requires a match of `query` (its items are added to the filter's).
    pub fn and_query(mut self, query: impl Into<Query>) -> Self {
        self.items.extend(query.into().items);
        self
    }

    /// Only events of these types.
    pub fn event_types<I, S>(types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Filter {
            event_types: types.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Also requires one of these event types.
    pub fn and_event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types.extend(types.into_iter().map(Into::into));
        self
    }

    pub(crate) fn to_wire(&self) -> proto::Filter {
        proto::Filter {
            stream_prefix: self.stream_prefix.clone(),
            event_types: self.event_types.clone(),
            items: self.items.iter().map(QueryItem::to_wire).collect(),
        }
    }
}

/// Where and how to read the global log.
///
/// The default reads forward from the start of the log, unfiltered, in pages
/// of the server's default size (100).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadAllOptions {
    /// Inclusive start. Forward: 0 or 1 = the start of the log. Backward:
    /// 0 = the end.
    pub from_position: u64,
    /// Page size; 0 = the server default. Larger than the server maximum is
    /// capped.
    pub max_count: u32,
    /// Reading direction.
    pub direction: Direction,
    /// Only matching events; `None` = all.
    pub filter: Option<Filter>,
}

impl ReadAllOptions {
    /// Forward from the start of the log.
    pub fn forward() -> Self {
        ReadAllOptions::default()
    }

    /// Backward from the end of the log.
    pub fn backward() -> Self {
        ReadAllOptions {
            direction: Direction::Backward,
            ..Default::default()
        }
    }

    /// Starts at this global position (inclusive).
    pub fn from_position(mut self, position: u64) -> Self {
        self.from_position = position;
        self
    }

    /// Sets the page size.
    pub fn max_count(mut self, max_count: u32) -> Self {
        self.max_count = max_count;
        self
    }

    /// Only events that match `filter`.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
}

/// One page of the global log.
///
/// A filtered read examines a bounded number of events per call, so a page
/// may be empty with `is_end == false`: continue from `next_position`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllPage {
    /// The matching events, in reading order.
    pub events: Vec<RecordedEvent>,
    /// Pass as `from_position` to read the next page.
    pub next_position: u64,
    /// True when the log has no more events in this direction.
    pub is_end: bool,
    /// The last committed global position when read (0 = empty log).
    pub head_position: u64,
}

impl From<proto::ReadAllResponse> for AllPage {
    fn from(r: proto::ReadAllResponse) -> Self {
        AllPage {
            events: r.events.into_iter().map(Into::into).collect(),
            next_position: r.next_position,
            is_end: r.is_end,
            head_position: r.head_position,
        }
    }
}
