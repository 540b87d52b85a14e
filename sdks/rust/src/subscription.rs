//! Subscriptions that resume by themselves.
//!
//! A subscription asks the server for batches (`max_batch`) and hands out one
//! message at a time. The [`Cursor`] keeps what was received and not yet
//! handed out (the rest of an `EventBatch`) and moves the resume point past an
//! event only when that event is handed out, so a subscription dropped in the
//! middle of a batch, or a stored `resume_position()` read there, continues
//! right after the last event the caller received. The next response is read
//! (and a dropped connection noticed) only once nothing received is left. A
//! server that ignores `max_batch` sends single events, handled alike.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tonic::Streaming;

use crate::error::{from_status, is_resumable, normalize, Call};
use crate::{proto, Client, Error, Filter, RecordedEvent};

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscribeFrom {
    /// From the first event of the log.
    #[default]
    Start,
    /// From this global position (inclusive). To resume after a stored
    /// position or checkpoint `p`, pass `p + 1`.
    Position(u64),
    /// Only events committed after the subscription starts.
    End,
}

/// How a subscription reconnects after its connection drops: exponential
/// backoff from `initial_backoff` to `max_backoff` (with ±20 % jitter), for
/// at most `max_attempts` consecutive failed attempts (`None`: for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePolicy {
    /// Wait before the first reconnect attempt. Default: 100 ms.
    pub initial_backoff: Duration,
    /// Longest wait between attempts. Default: 5 s.
    pub max_backoff: Duration,
    /// Consecutive failed attempts after which the subscription ends with
    /// the last error; `None` (default): never give up.
    pub max_attempts: Option<u32>,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        ResumePolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl ResumePolicy {
    /// Never reconnect: the first dropped connection ends the subscription
    /// with its error.
    pub fn never() -> Self {
        ResumePolicy {
            max_attempts: Some(0),
            ..Default::default()
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(16);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        // ±20 % jitter, so that many clients do not reconnect in lockstep.
        let r = RandomState::new().hash_one(attempt) % 401; // 0..=400
        base.mul_f64(0.8 + r as f64 / 1000.0)
    }
}

/// The [`SubscribeOptions::max_batch`] of a subscription that does not set
/// one.
pub const DEFAULT_MAX_BATCH: u32 = 256;

/// What to subscribe to.
///
/// ```
/// use eventstore_client::{Filter, SubscribeOptions};
///
/// let options = SubscribeOptions::from_position(42)
///     .filter(Filter::stream_prefix("order-"))
///     .checkpoint_interval(500)
///     .max_batch(100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Where to start.
    pub from: SubscribeFrom,
    /// Only matching events; `None` = all.
    pub filter: Option<Filter>,
    /// With a filter: send a checkpoint after this many events were scanned
    /// without a match; 0 = the server default (1000).
    pub checkpoint_interval: u32,
    /// How to reconnect after the connection drops.
    pub resume: ResumePolicy,
    /// At most this many events per message from the server (default
    /// [`DEFAULT_MAX_BATCH`], 256). The server sends the events that are
    /// ready without waiting to fill a batch; the subscription still yields
    /// one event at a time. 0 or 1 = one event per message; above 1000 the
    /// server rejects the subscription ([`Error::InvalidArgument`]).
    pub max_batch: u32,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            from: SubscribeFrom::default(),
            filter: None,
            checkpoint_interval: 0,
            resume: ResumePolicy::default(),
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

impl SubscribeOptions {
    /// From the first event of the log.
    pub fn from_start() -> Self {
        SubscribeOptions::default()
    }

    /// From this global position (inclusive).
    pub fn from_position(position: u64) -> Self {
        SubscribeOptions {
            from: SubscribeFrom::Position(position),
            ..Default::default()
        }
    }

    /// Only events committed after the subscription starts.
    pub fn from_end() -> Self {
        SubscribeOptions {
            from: SubscribeFrom::End,
            ..Default::default()
        }
    }

    /// Only events that match `filter`.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets the checkpoint interval of a filtered subscription.
    pub fn checkpoint_interval(mut self, interval: u32) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Sets how to reconnect.
    pub fn resume(mut self, policy: ResumePolicy) -> Self {
        self.resume = policy;
        self
    }

    /// Sets the most events per message from the server (see
    /// [`SubscribeOptions::max_batch`]).
    pub fn max_batch(mut self, max_batch: u32) -> Self {
        self.max_batch = max_batch;
        self
    }
}

/// One message of a subscription.
// Events are nearly every message: boxing them would cost more than it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionMessage {
    /// A matching event. Events come in strictly increasing global position.
    Event(RecordedEvent),
    /// The replay reached the head (the last committed position then); live
    /// events follow. Sent again after each resume, once the replay from the
    /// resume point has caught up.
    CaughtUp {
        /// The last committed global position at that moment.
        head_position: u64,
    },
    /// Everything at or below `position` has been scanned (filtered
    /// subscriptions only): a resume point to store.
    Checkpoint {
        /// Global position of the last scanned event.
        position: u64,
    },
    /// The server moved this subscriber back to storage reads; a `CaughtUp`
    /// follows and nothing is skipped. (The current server never sends it.)
    FellBehind {
        /// The last committed global position at that moment.
        head_position: u64,
    },
}

/// Progress shared between the stream and its handle.
#[derive(Debug, Default)]
struct Shared {
    /// The position a resume would start from; 0 = unknown (from the end).
    resume_from: AtomicU64,
    reconnects: AtomicU64,
}

/// A subscription to the global log: a [`Stream`] of
/// `Result<SubscriptionMessage, Error>` that resumes by itself after a
/// dropped connection or a server restart (see [`Client::subscribe`]).
/// Dropping it cancels the call.
///
/// ```no_run
/// # async fn demo(client: eventstore_client::Client) -> Result<(), eventstore_client::Error> {
/// use eventstore_client::{StreamExt, SubscribeOptions, SubscriptionMessage};
///
/// let mut subscription = client.subscribe(SubscribeOptions::from_start()).await?;
/// while let Some(message) = subscription.next().await {
///     if let SubscriptionMessage::Event(event) = message? {
///         println!("{} {}", event.global_position, event.event_type);
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<SubscriptionMessage, Error>> + Send>>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("resume_position", &self.resume_position())
            .field("reconnects", &self.reconnects())
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<SubscriptionMessage, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Where the subscription is, and what it received but has not handed out
/// yet. Knows nothing of the connection.
struct Cursor {
    filter: Option<proto::Filter>,
    checkpoint_interval: u32,
    max_batch: u32,
    /// Where the next call starts: `None` = from the end (nothing delivered
    /// yet on a from-the-end subscription).
    resume_from: Option<u64>,
    /// Received, not yet handed out, in order: the events of a batch one by
    /// one, and every other message as it came.
    pending: VecDeque<proto::subscribe_response::Message>,
    shared: Arc<Shared>,
}

impl Cursor {
    fn new(options: &SubscribeOptions, shared: Arc<Shared>) -> Self {
        let resume_from = match options.from {
            SubscribeFrom::Start => Some(1),
            SubscribeFrom::Position(p) => Some(p.max(1)),
            SubscribeFrom::End => None,
        };
        shared
            .resume_from
            .store(resume_from.unwrap_or(0), Ordering::Relaxed);
        Cursor {
            filter: options.filter.as_ref().map(|f| f.to_wire()),
            checkpoint_interval: options.checkpoint_interval,
            max_batch: options.max_batch,
            resume_from,
            pending: VecDeque::new(),
            shared,
        }
    }

    /// The request that starts (or resumes) the subscription here.
    fn request(&self) -> proto::SubscribeRequest {
        proto::SubscribeRequest {
            from_position: self.resume_from.unwrap_or(0),
            filter: self.filter.clone(),
            from_end: self.resume_from.is_none(),
            checkpoint_interval: self.checkpoint_interval,
            max_batch: self.max_batch,
        }
    }

    fn advance(&mut self, to: u64) {
        let to = self.resume_from.map_or(to, |r| r.max(to));
        self.resume_from = Some(to);
        self.shared.resume_from.store(to, Ordering::Relaxed);
    }

    /// Queues what a response carries: each event of a batch, or the message.
    fn feed(&mut self, response: proto::SubscribeResponse) {
        use proto::subscribe_response::Message;
        match response.message {
            Some(Message::Batch(batch)) => self
                .pending
                .extend(batch.events.into_iter().map(Message::Event)),
            Some(message) => self.pending.push_back(message),
            None => {} // an unknown (newer) message kind
        }
    }

    /// The next message to hand out, moving the resume point past it; `None`
    /// when nothing received is left.
    fn next_message(&mut self) -> Option<SubscriptionMessage> {
        while let Some(message) = self.pending.pop_front() {
            if let Some(out) = self.accept(message) {
                return Some(out);
            }
        }
        None
    }

    /// One message about to be handed out: `None` if it is not to be
    /// delivered (a duplicate).
    fn accept(
        &mut self,
        message: proto::subscribe_response::Message,
    ) -> Option<SubscriptionMessage> {
        use proto::subscribe_response::Message;
        match message {
            Message::Event(event) => {
                let position = event.global_position;
                if self.resume_from.is_some_and(|r| position < r) {
                    return None; // already delivered: never twice
                }
                self.advance(position + 1);
                Some(SubscriptionMessage::Event(event.into()))
            }
            Message::Checkpoint(c) => {
                self.advance(c.position + 1);
                Some(SubscriptionMessage::Checkpoint {
                    position: c.position,
                })
            }
            Message::CaughtUp(c) => {
                // Everything up to the head was scanned; this also gives a
                // from-the-end subscription its resume point.
                self.advance(c.head_position + 1);
                Some(SubscriptionMessage::CaughtUp {
                    head_position: c.head_position,
                })
            }
            Message::FellBehind(f) => Some(SubscriptionMessage::FellBehind {
                head_position: f.head_position,
            }),
            // `feed` queues the events of a batch one by one.
            Message::Batch(_) => None,
        }
    }
}

struct State {
    client: Client,
    policy: ResumePolicy,
    cursor: Cursor,
    call: Option<Streaming<proto::SubscribeResponse>>,
    /// Consecutive failed attempts since the last message.
    failures: u32,
    shared: Arc<Shared>,
}

impl State {
    /// Whether another attempt is allowed after `failures` failed ones.
    fn may_retry(&self) -> bool {
        self.policy
            .max_attempts
            .is_none_or(|max| self.failures <= max)
    }
}

/// The next message, reconnecting as needed; `None` ends the stream.
async fn next(state: Option<State>) -> Option<(Result<SubscriptionMessage, Error>, Option<State>)> {
    let mut state = state?;
    loop {
        if let Some(message) = state.cursor.next_message() {
            return Some((Ok(message), Some(state)));
        }
        if state.call.is_none() {
            tokio::time::sleep(state.policy.backoff(state.failures.max(1))).await;
            state.shared.reconnects.fetch_add(1, Ordering::Relaxed);
            match state.client.open_subscription(state.cursor.request()).await {
                Ok(call) => state.call = Some(call),
                Err(status) => {
                    let status = normalize(status);
                    state.failures += 1;
                    if is_resumable(&status) && state.may_retry() {
                        continue;
                    }
                    return Some((Err(from_status(status, Call::Other)), None));
                }
            }
        }
        let call = state.call.as_mut().expect("call is open");
        match call.message().await {
            Ok(Some(response)) => {
                state.failures = 0;
                state.cursor.feed(response);
            }
            // The server ended the call without an error: it only does that
            // when going away, so resume.
            Ok(None) => {
                state.call = None;
                state.failures += 1;
                if !state.may_retry() {
                    let status = tonic::Status::unavailable("subscription ended by the server");
                    return Some((Err(from_status(status, Call::Other)), None));
                }
            }
            Err(status) => {
                let status = normalize(status);
                state.call = None;
                state.failures += 1;
                if !(is_resumable(&status) && state.may_retry()) {
                    return Some((Err(from_status(status, Call::Other)), None));
                }
            }
        }
    }
}

impl Subscription {
    pub(crate) async fn start(client: Client, options: SubscribeOptions) -> Result<Self, Error> {
        let shared = Arc::new(Shared::default());
        let mut state = State {
            client,
            policy: options.resume,
            cursor: Cursor::new(&options, shared.clone()),
            call: None,
            failures: 0,
            shared: shared.clone(),
        };
        // The server may reject the request (a bad filter) only after its
        // response headers, so wait for the first message: every valid
        // subscription gets one promptly (an event, a checkpoint or CaughtUp).
        let mut call = state
            .client
            .open_subscription(state.cursor.request())
            .await
            .map_err(|status| from_status(status, Call::Other))?;
        match call.message().await {
            Ok(Some(first)) => state.cursor.feed(first),
            Ok(None) => {
                return Err(Error::Unavailable {
                    message: "the subscription ended before its first message".into(),
                })
            }
            Err(status) => return Err(from_status(status, Call::Other)),
        }
        state.call = Some(call);
        Ok(Subscription {
            inner: Box::pin(futures_util::stream::unfold(Some(state), next)),
            shared,
        })
    }

    /// The global position this subscription would resume from if its
    /// connection dropped now: the position after the last event,
    /// checkpoint or caught-up head it delivered (0: from the end, nothing
    /// delivered yet).
    pub fn resume_position(&self) -> u64 {
        self.shared.resume_from.load(Ordering::Relaxed)
    }

    /// How many times the subscription has reconnected (attempts included).
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = ResumePolicy::default();
        let first = p.backoff(1);
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        let fourth = p.backoff(4);
        assert!(fourth >= Duration::from_millis(640) && fourth <= Duration::from_millis(960));
        let late = p.backoff(100);
        assert!(late <= Duration::from_secs(6) && late >= Duration::from_secs(4));
    }

    #[test]
    fn never_allows_no_retry() {
        let p = ResumePolicy::never();
        assert_eq!(p.max_attempts, Some(0));
    }

    fn cursor(options: SubscribeOptions) -> Cursor {
        Cursor::new(&options, Arc::new(Shared::default()))
    }

    fn recorded(position: u64) -> proto::RecordedEvent {
        proto::RecordedEvent {
            stream_id: "s".into(),
            stream_version: position,
            global_position: position,
            event_type: "E".into(),
            ..Default::default()
        }
    }

    fn response(message: proto::subscribe_response::Message) -> proto::SubscribeResponse {
        proto::SubscribeResponse {
            message: Some(message),
        }
    }

    fn batch(first: u64, last: u64) -> proto::SubscribeResponse {
        response(proto::subscribe_response::Message::Batch(
            proto::EventBatch {
                events: (first..=last).map(recorded).collect(),
            },
        ))
    }

    /// What the next messages are, as short tags (e3, cp8, cu9), up to none left.
    fn drain(c: &mut Cursor) -> Vec<String> {
        std::iter::from_fn(|| c.next_message())
            .map(|m| match m {
                SubscriptionMessage::Event(e) => format!("e{}", e.global_position),
                SubscriptionMessage::Checkpoint { position } => format!("cp{position}"),
                SubscriptionMessage::CaughtUp { head_position } => format!("cu{head_position}"),
                SubscriptionMessage::FellBehind { head_position } => format!("fb{head_position}"),
            })
            .collect()
    }

    #[test]
    fn the_request_asks_for_batches() {
        assert_eq!(DEFAULT_MAX_BATCH, 256);
        assert_eq!(SubscribeOptions::default().max_batch, 256);
        let r = cursor(SubscribeOptions::from_position(42)).request();
        assert_eq!((r.from_position, r.from_end, r.max_batch), (42, false, 256));
        let r = cursor(SubscribeOptions::from_end().max_batch(1)).request();
        assert_eq!((r.from_position, r.from_end, r.max_batch), (0, true, 1));
        let r = cursor(SubscribeOptions::from_start().max_batch(1000)).request();
        assert_eq!((r.from_position, r.max_batch), (1, 1000));
    }

    #[test]
    fn a_batch_is_handed_out_one_event_at_a_time() {
        let mut c = cursor(SubscribeOptions::from_position(3).max_batch(4));
        c.feed(batch(3, 6));
        assert!(
            matches!(c.next_message(), Some(SubscriptionMessage::Event(e)) if e.global_position == 3)
        );
        // The resume point follows what was handed out, not what was received.
        assert_eq!(c.request().from_position, 4);
        assert_eq!(c.shared.resume_from.load(Ordering::Relaxed), 4);
        assert!(
            matches!(c.next_message(), Some(SubscriptionMessage::Event(e)) if e.global_position == 4)
        );
        assert_eq!(c.request().from_position, 5);
        assert_eq!(drain(&mut c), ["e5", "e6"]);
        use proto::subscribe_response::Message;
        c.feed(response(Message::Checkpoint(proto::Checkpoint {
            position: 8,
        })));
        c.feed(batch(9, 9));
        c.feed(response(Message::CaughtUp(proto::CaughtUp {
            head_position: 9,
        })));
        // One event alone: what a server that ignores max_batch sends.
        c.feed(response(Message::Event(recorded(10))));
        // Re-sent after a reconnect: 9 and 10 were handed out already.
        c.feed(batch(9, 11));
        assert_eq!(drain(&mut c), ["cp8", "e9", "cu9", "e10", "e11"]);
        assert_eq!(c.request().from_position, 12);
    }
}
