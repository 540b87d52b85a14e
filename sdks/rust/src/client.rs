//! The connection and the calls.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use futures_core::Stream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::error::{from_status, is_transport_failure, Call};
use crate::proto::event_store_client::EventStoreClient;
use crate::subscription::{SubscribeOptions, Subscription};
use crate::{
    proto, AllPage, AppendCondition, AppendOptions, AppendResult, Error, EventData,
    ExpectedVersion, ReadAllOptions, ReadStreamOptions, RecordedEvent, StreamAppend, StreamPage,
};

/// TLS settings: the CA that signed the server's certificate, and optionally
/// the name to check it against.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM of the CA certificate(s) to trust. `None`: the operating system's
    /// roots (needs the `tls-native-roots` feature).
    pub ca_certificate_pem: Option<Vec<u8>>,
    /// The name the server's certificate must carry; default: the host of
    /// the address.
    pub domain_name: Option<String>,
}

impl TlsOptions {
    /// Trust the CA certificate(s) in this PEM.
    pub fn with_ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        TlsOptions {
            ca_certificate_pem: Some(pem.into()),
            domain_name: None,
        }
    }

    /// Checks the server's certificate against this name instead of the
    /// address's host.
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field(
                "ca_certificate_pem",
                &self
                    .ca_certificate_pem
                    .as_ref()
                    .map(|p| format!("{} bytes", p.len())),
            )
            .field("domain_name", &self.domain_name)
            .finish()
    }
}

/// How to reach the server.
///
/// ```
/// use std::time::Duration;
/// use eventstore_client::ClientOptions;
///
/// let options = ClientOptions::new("127.0.0.1:50051")
///     .bearer_token("s3cret")
///     .default_deadline(Some(Duration::from_secs(5)));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// `host:port`, or a URL `http://host:port` / `https://host:port`.
    /// Without a scheme, TLS is used when [`ClientOptions::tls`] is set.
    pub address: String,
    /// TLS settings; `None` = plaintext ("insecure"), which is what the
    /// server speaks today.
    pub tls: Option<TlsOptions>,
    /// Sent as `authorization: Bearer <token>` with every call.
    pub bearer_token: Option<String>,
    /// Deadline of every unary call (append, reads); `None` = none.
    /// Subscriptions have none. Default: 30 seconds.
    pub default_deadline: Option<Duration>,
    /// How long connecting may take. Default: 5 seconds.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings, which detect a dead connection
    /// under an idle subscription. `None` (default) sends none: gRPC servers
    /// reject pings more frequent than they allow (5 minutes by default).
    pub keep_alive_interval: Option<Duration>,
}

impl ClientOptions {
    /// Options for this address with the defaults: plaintext, no token,
    /// 30 s deadline, 5 s connect timeout.
    pub fn new(address: impl Into<String>) -> Self {
        ClientOptions {
            address: address.into(),
            tls: None,
            bearer_token: None,
            default_deadline: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(5),
            keep_alive_interval: None,
        }
    }

    /// Uses TLS with these settings.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sends this bearer token with every call.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Sets the deadline of unary calls (`None`: no deadline).
    pub fn default_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.default_deadline = deadline;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sends HTTP/2 keep-alive pings at this interval.
    pub fn keep_alive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive_interval = interval;
        self
    }
}

impl Default for ClientOptions {
    /// The server's default address, `127.0.0.1:50051`.
    fn default() -> Self {
        ClientOptions::new("127.0.0.1:50051")
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("address", &self.address)
            .field("tls", &self.tls)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("default_deadline", &self.default_deadline)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .finish()
    }
}

/// A connection to the event store. Cheap to clone; clones share the
/// connection, which reconnects by itself after it drops.
#[derive(Clone)]
pub struct Client {
    inner: EventStoreClient<Channel>,
    authorization: Option<MetadataValue<Ascii>>,
    deadline: Option<Duration>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// The message of an error and of its sources ("transport error" alone says
/// little).
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// The endpoint URL and whether it uses TLS.
fn endpoint_uri(address: &str, tls: bool) -> Result<(String, bool), Error> {
    let address = address.trim();
    if address.is_empty() {
        return Err(Error::Config("empty address".into()));
    }
    if let Some(rest) = address.strip_prefix("https://") {
        Ok((format!("https://{rest}"), true))
    } else if let Some(rest) = address.strip_prefix("http://") {
        if tls {
            return Err(Error::Config(format!(
                "address {address} is http:// but TLS options are set"
            )));
        }
        Ok((format!("http://{rest}"), false))
    } else if address.contains("://") {
        Err(Error::Config(format!(
            "address {address}: only http:// and https:// are supported"
        )))
    } else if tls {
        Ok((format!("https://{address}"), true))
    } else {
        Ok((format!("http://{address}"), false))
    }
}

#[cfg(feature = "tls")]
fn with_tls(endpoint: Endpoint, tls: &TlsOptions) -> Result<Endpoint, Error> {
    use tonic::transport::{Certificate, ClientTlsConfig};

    let mut config = ClientTlsConfig::new();
    match &tls.ca_certificate_pem {
        Some(pem) => config = config.ca_certificate(Certificate::from_pem(pem)),
        None => {
            #[cfg(feature = "tls-native-roots")]
            {
                config = config.with_native_roots();
            }
            #[cfg(not(feature = "tls-native-roots"))]
            {
                return Err(Error::Config(
                    "TLS without a CA certificate needs the `tls-native-roots` feature".into(),
                ));
            }
        }
    }
    if let Some(name) = &tls.domain_name {
        config = config.domain_name(name.clone());
    }
    endpoint
        .tls_config(config)
        .map_err(|e| Error::Config(format!("TLS settings: {}", error_chain(&e))))
}

#[cfg(not(feature = "tls"))]
fn with_tls(_endpoint: Endpoint, _tls: &TlsOptions) -> Result<Endpoint, Error> {
    Err(Error::Config(
        "TLS needs the `tls` feature of eventstore-client".into(),
    ))
}

impl Client {
    /// Connects to the server. Fails with [`Error::Unavailable`] when it
    /// cannot be reached within the connect timeout, and with
    /// [`Error::Config`] when the options are malformed.
    pub async fn connect(options: ClientOptions) -> Result<Client, Error> {
        let (uri, use_tls) = endpoint_uri(&options.address, options.tls.is_some())?;
        let authorization = match &options.bearer_token {
            None => None,
            Some(token) => {
                let mut value: MetadataValue<Ascii> =
                    format!("Bearer {token}").parse().map_err(|_| {
                        Error::Config("bearer token: only visible ASCII is allowed".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };

        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| {
                Error::Config(format!("address {}: {}", options.address, error_chain(&e)))
            })?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true);
        if let Some(interval) = options.keep_alive_interval {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(Duration::from_secs(20))
                .keep_alive_while_idle(false);
        }
        if use_tls {
            endpoint = with_tls(endpoint, &options.tls.clone().unwrap_or_default())?;
        }
        let channel = endpoint.connect().await.map_err(|e| Error::Unavailable {
            message: format!("connecting to {uri}: {}", error_chain(&e)),
        })?;
        Ok(Client {
            // A page is at most ~4 MiB but always holds one event, which may
            // itself be up to the server's request limit: do not cap it here.
            inner: EventStoreClient::new(channel).max_decoding_message_size(usize::MAX),
            authorization,
            deadline: options.default_deadline,
        })
    }

    /// A client on the same connection whose unary calls use this deadline
    /// (`None`: no deadline).
    pub fn with_deadline(&self, deadline: Option<Duration>) -> Client {
        Client {
            deadline,
            ..self.clone()
        }
    }

    /// The generated tonic client, for calls this crate does not wrap. It
    /// does not add the bearer token or the deadline by itself.
    pub fn raw(&self) -> EventStoreClient<Channel> {
        self.inner.clone()
    }

    /// A request with the token and, for unary calls, the deadline.
    pub(crate) fn request<T>(&self, message: T, unary: bool) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(auth) = &self.authorization {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        if unary {
            if let Some(deadline) = self.deadline {
                request.set_timeout(deadline);
            }
        }
        request
    }

    /// Makes a unary call. When the connection turns out to be broken (the
    /// server restarted since the last call) and the call is safe to repeat,
    /// it is sent once more, on a new connection.
    async fn unary<T, R, F, Fut>(&self, message: T, idempotent: bool, call: F) -> Result<R, Status>
    where
        T: Clone,
        F: Fn(EventStoreClient<Channel>, Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<R>, Status>>,
    {
        let copy = idempotent.then(|| message.clone());
        match call(self.inner.clone(), self.request(message, true)).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) if is_transport_failure(&status) && copy.is_some() => {
                let message = copy.expect("copy kept");
                call(self.inner.clone(), self.request(message, true))
                    .await
                    .map(Response::into_inner)
            }
            Err(status) => Err(status),
        }
    }

    /// Appends events to one stream, atomically, under an expected-version
    /// check; `options` is an [`ExpectedVersion`](crate::ExpectedVersion) or
    /// [`AppendOptions`] (to also give the stream's type).
    ///
    /// Sending the same events again (same ids, same order) is acknowledged
    /// with the original numbers and [`AppendResult::duplicate`] set. So when
    /// every event has an id (the default of [`EventData::new`]), an append
    /// that met a broken connection is sent once more by itself; if the
    /// first one had been committed, the answer is that acknowledgement.
    ///
    /// Errors: [`Error::WrongExpectedVersion`], [`Error::AlreadyExists`],
    /// [`Error::StreamTypeMismatch`], [`Error::InvalidArgument`],
    /// [`Error::Unavailable`], …
    pub async fn append<I>(
        &self,
        stream: impl Into<String>,
        events: I,
        options: impl Into<AppendOptions>,
    ) -> Result<AppendResult, Error>
    where
        I: IntoIterator<Item = EventData>,
    {
        let options = options.into();
        let one = StreamAppend {
            stream: stream.into(),
            events: events.into_iter().collect(),
            expected: options.expected,
            stream_type: options.stream_type,
        };
        if let Some(condition) = options.condition {
            // As an AppendMany of one append: a server without conditions
            // answers UNIMPLEMENTED instead of dropping the condition. The
            // index of the one append says nothing: its error is returned as is.
            let mut results =
                self.append_many([one], Some(condition))
                    .await
                    .map_err(|e| match e {
                        Error::InAppend { error, .. } => *error,
                        other => other,
                    })?;
            return results
                .pop()
                .ok_or_else(|| Error::Other(Status::internal("AppendMany returned no result")));
        }
        let message = one.into_wire();
        let idempotent = message.events.iter().all(|e| !e.event_id.is_empty());
        self.unary(
            message,
            idempotent,
            |mut c, r| async move { c.append(r).await },
        )
        .await
        .map(Into::into)
        .map_err(|status| from_status(status, Call::Append(options.expected)))
    }

    /// Commits several appends (1..100, to one or several streams, each with
    /// its own expected version) atomically: all of them, in one contiguous
    /// run of global positions in request order, or none. `condition` is
    /// checked once, against the log as it was before the request. Returns
    /// one result per append, in order.
    ///
    /// Errors: the error of the append at fault wrapped in
    /// [`Error::InAppend`] with its index (e.g. a
    /// [`Error::WrongExpectedVersion`] whose `actual` counts the earlier
    /// appends of the request); [`Error::AppendConditionFailed`] for the
    /// condition; [`Error::Unimplemented`] from a server without the feature.
    /// Like [`Client::append`], it is sent once more after a broken connection
    /// when every event has an id.
    pub async fn append_many<I>(
        &self,
        appends: I,
        condition: Option<AppendCondition>,
    ) -> Result<Vec<AppendResult>, Error>
    where
        I: IntoIterator<Item = StreamAppend>,
    {
        let appends: Vec<StreamAppend> = appends.into_iter().collect();
        let expected: Vec<ExpectedVersion> = appends.iter().map(|a| a.expected).collect();
        let message = proto::AppendManyRequest {
            appends: appends.into_iter().map(StreamAppend::into_wire).collect(),
            condition: condition.as_ref().map(AppendCondition::to_wire),
        };
        let idempotent = message
            .appends
            .iter()
            .flat_map(|a| &a.events)
            .all(|e| !e.event_id.is_empty());
        self.unary(message, idempotent, |mut c, r| async move {
            c.append_many(r).await
        })
        .await
        .map(|r| r.results.into_iter().map(Into::into).collect())
        .map_err(|status| from_status(status, Call::AppendMany(&expected)))
    }

    /// Reads one page of a stream. A stream without events is
    /// [`Error::StreamNotFound`].
    pub async fn read_stream(
        &self,
        stream: impl Into<String>,
        options: ReadStreamOptions,
    ) -> Result<StreamPage, Error> {
        let stream = stream.into();
        let message = proto::ReadStreamRequest {
            stream_id: stream.clone(),
            from_version: options.from_version,
            max_count: options.max_count,
            direction: options.direction.to_wire() as i32,
        };
        self.unary(
            message,
            true,
            |mut c, r| async move { c.read_stream(r).await },
        )
        .await
        .map(Into::into)
        .map_err(|status| from_status(status, Call::ReadStream(&stream)))
    }

    /// Every page of a stream from `options.from_version` on, in
    /// `options.direction`, until the end (as it is when that page is read).
    /// The stream ends after the last page or after the first error.
    pub fn read_stream_pages(
        &self,
        stream: impl Into<String>,
        options: ReadStreamOptions,
    ) -> impl Stream<Item = Result<StreamPage, Error>> + Send + Unpin + 'static {
        struct State {
            client: Client,
            stream: String,
            options: ReadStreamOptions,
        }
        let state = Some(State {
            client: self.clone(),
            stream: stream.into(),
            options,
        });
        Box::pin(futures_util::stream::unfold(state, |state| async move {
            let mut state = state?;
            match state
                .client
                .read_stream(state.stream.clone(), state.options)
                .await
            {
                Err(e) => Some((Err(e), None)),
                Ok(page) => {
                    let stuck =
                        page.events.is_empty() && page.next_version == state.options.from_version;
                    if page.is_end || stuck {
                        return Some((Ok(page), None));
                    }
                    state.options.from_version = page.next_version;
                    Some((Ok(page), Some(state)))
                }
            }
        }))
    }

    /// The events of every page of [`Client::read_stream_pages`], one by one.
    pub fn read_stream_events(
        &self,
        stream: impl Into<String>,
        options: ReadStreamOptions,
    ) -> impl Stream<Item = Result<RecordedEvent, Error>> + Send + Unpin + 'static {
        flatten(self.read_stream_pages(stream, options), |page| page.events)
    }

    /// Reads one page of the global log, optionally filtered. A filtered
    /// page may be empty without being the end: continue from
    /// [`AllPage::next_position`].
    pub async fn read_all(&self, options: ReadAllOptions) -> Result<AllPage, Error> {
        let message = proto::ReadAllRequest {
            from_position: options.from_position,
            max_count: options.max_count,
            direction: options.direction.to_wire() as i32,
            filter: options.filter.as_ref().map(|f| f.to_wire()),
        };
        self.unary(message, true, |mut c, r| async move { c.read_all(r).await })
            .await
            .map(Into::into)
            .map_err(|status| from_status(status, Call::Other))
    }

    /// Every page of the global log from `options.from_position` on, in
    /// `options.direction`, until the end (as it is when that page is read).
    /// Empty pages of a filtered read that are not the end are skipped.
    pub fn read_all_pages(
        &self,
        options: ReadAllOptions,
    ) -> impl Stream<Item = Result<AllPage, Error>> + Send + Unpin + 'static {
        struct State {
            client: Client,
            options: ReadAllOptions,
        }
        let state = Some(State {
            client: self.clone(),
            options,
        });
        Box::pin(futures_util::stream::unfold(state, |state| async move {
            let mut state = state?;
            loop {
                match state.client.read_all(state.options.clone()).await {
                    Err(e) => return Some((Err(e), None)),
                    Ok(page) => {
                        let stuck = page.next_position == state.options.from_position
                            && page.events.is_empty();
                        if page.is_end || stuck {
                            return Some((Ok(page), None));
                        }
                        state.options.from_position = page.next_position;
                        if page.events.is_empty() {
                            continue; // a bounded filtered scan found nothing: read on
                        }
                        return Some((Ok(page), Some(state)));
                    }
                }
            }
        }))
    }

    /// The events of every page of [`Client::read_all_pages`], one by one.
    pub fn read_all_events(
        &self,
        options: ReadAllOptions,
    ) -> impl Stream<Item = Result<RecordedEvent, Error>> + Send + Unpin + 'static {
        flatten(self.read_all_pages(options), |page| page.events)
    }

    /// Subscribes to the global log: the stored events from a position on
    /// (catch-up), a [`SubscriptionMessage::CaughtUp`](crate::SubscriptionMessage::CaughtUp),
    /// then new events as they are committed (live).
    ///
    /// The first call is made, and its first message received, here: so a
    /// rejected request (a bad filter: [`Error::InvalidArgument`]) or an
    /// unreachable server fails at once.
    /// After that the subscription **resumes by itself** when the connection
    /// drops or the server restarts: it reconnects with backoff (see
    /// [`ResumePolicy`](crate::ResumePolicy)) from the position after the last
    /// event, checkpoint or caught-up head it delivered, so it neither skips
    /// nor repeats an event. It ends only when dropped, or with an error the
    /// server gives to a fresh request, or when the resume policy gives up.
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, Error> {
        Subscription::start(self.clone(), options).await
    }

    /// Opens one Subscribe call (no retries).
    pub(crate) async fn open_subscription(
        &self,
        message: proto::SubscribeRequest,
    ) -> Result<tonic::Streaming<proto::SubscribeResponse>, tonic::Status> {
        let request = self.request(message, false);
        Ok(self.inner.clone().subscribe(request).await?.into_inner())
    }
}

/// Turns a stream of pages into a stream of their items.
fn flatten<P, T, S, F>(
    pages: S,
    items: F,
) -> impl Stream<Item = Result<T, Error>> + Send + Unpin + 'static
where
    S: Stream<Item = Result<P, Error>> + Send + Unpin + 'static,
    F: Fn(P) -> Vec<T> + Send + 'static,
    P: Send + 'static,
    T: Send + 'static,
{
    use futures_util::StreamExt;
    let state = (pages, VecDeque::<T>::new(), items);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut pages, mut buffer, items)| async move {
            loop {
                if let Some(item) = buffer.pop_front() {
                    return Some((Ok(item), (pages, buffer, items)));
                }
                match pages.next().await? {
                    Ok(page) => buffer.extend(items(page)),
                    Err(e) => return Some((Err(e), (pages, buffer, items))),
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint_uri("127.0.0.1:1", false).unwrap(),
            ("http://127.0.0.1:1".to_string(), false)
        );
        assert_eq!(
            endpoint_uri("es.example:443", true).unwrap(),
            ("https://es.example:443".to_string(), true)
        );
        assert_eq!(
            endpoint_uri("https://es.example", false).unwrap(),
            ("https://es.example".to_string(), true)
        );
        assert!(matches!(
            endpoint_uri("http://x:1", true),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            endpoint_uri("unix:///tmp/s", false),
            Err(Error::Config(_))
        ));
        assert!(matches!(endpoint_uri("  ", false), Err(Error::Config(_))));
    }

    #[test]
    fn options_debug_hides_the_token() {
        let o = ClientOptions::new("h:1").bearer_token("s3cret");
        assert!(!format!("{o:?}").contains("s3cret"));
    }
}
