//! The typed error of every client call.

use std::error::Error as StdError;

use tonic::{Code, Status};

use crate::ExpectedVersion;

/// Trailing metadata key in which the server reports a stream's actual last
/// version when an expected-version check fails.
pub(crate) const ACTUAL_VERSION_TRAILER: &str = "es-actual-version";
/// Trailing metadata key: the global position of the first event that made
/// an append condition fail.
pub(crate) const CONDITION_POSITION_TRAILER: &str = "es-condition-position";
/// Trailing metadata key: the 0-based index of the append at fault in a
/// failed AppendMany.
pub(crate) const APPEND_INDEX_TRAILER: &str = "es-append-index";

/// Everything a call of this crate can fail with.
///
/// The variants follow the server's gRPC status codes (see the API reference's
/// "Status codes"): match on the variant, not on the message, which is written
/// for humans. A status without a variant of its own is kept whole in
/// [`Error::Other`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The expected-version check of an append failed (`ABORTED`); nothing was
    /// written. Reload the stream, decide again and retry.
    #[error("wrong expected version: expected {expected}, actual {}", fmt_actual(.actual))]
    WrongExpectedVersion {
        /// The expectation the append was made with.
        expected: ExpectedVersion,
        /// The stream's last version when the check failed (0: the stream has
        /// no events), from the trailer `es-actual-version`; `None` only if
        /// the server did not send that trailer.
        actual: Option<u64>,
    },

    /// An event matching the append's condition was committed after its
    /// `after` position (`ABORTED`); nothing was written. Read again (from
    /// `after + 1`), decide again and retry.
    #[error("append condition failed: a matching event at position {position}")]
    AppendConditionFailed {
        /// The global position of the first matching event after `after`,
        /// from the trailer `es-condition-position`.
        position: u64,
    },

    /// One append of [`crate::Client::append_many`] failed (named by the
    /// trailer `es-append-index`); nothing was written. `error` is what that
    /// append alone would have got, e.g. [`Error::WrongExpectedVersion`] whose
    /// `actual` counts the earlier appends of the same request. Errors that
    /// no single append caused (a failed request-wide condition, a request-wide
    /// limit) come without this wrapper. [`Error::append_index`] and
    /// [`Error::unwrap_append`] help matching.
    #[error("append {index} of the request: {error}")]
    InAppend {
        /// The 0-based index of the append at fault.
        index: usize,
        /// The error of that append.
        #[source]
        error: Box<Error>,
    },

    /// The server or its storage backend does not offer what the call needs
    /// (`UNIMPLEMENTED`), e.g. [`crate::Client::append_many`] or a conditional
    /// append on a server without tags and conditions. Nothing was written.
    #[error("unimplemented: {message}")]
    Unimplemented {
        /// The server's message.
        message: String,
    },

    /// The stream has no events (`NOT_FOUND` from a read of one stream).
    #[error("stream not found: {stream}")]
    StreamNotFound {
        /// The stream that was read.
        stream: String,
    },

    /// An `event_id` that is already stored was reused outside an exact retry
    /// of the same batch (`ALREADY_EXISTS`); the message names the id.
    #[error("event id already exists: {message}")]
    AlreadyExists {
        /// The server's message.
        message: String,
    },

    /// The request was rejected as invalid (`INVALID_ARGUMENT`, or
    /// `RESOURCE_EXHAUSTED` for a request over the server's size limit); the
    /// message names the field and the limit. Retrying the same request fails
    /// the same way.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// The server's message, or this crate's for options it rejects.
        message: String,
    },

    /// The append named a `stream_type` that differs from the one the stream
    /// already has (`FAILED_PRECONDITION`).
    #[error("stream type mismatch: {message}")]
    StreamTypeMismatch {
        /// The server's message.
        message: String,
    },

    /// The server could not be reached or is shutting down (`UNAVAILABLE`).
    /// Safe to retry with backoff; appends are safe to retry when every event
    /// has its own id (the default of [`crate::EventData`]).
    #[error("server unavailable: {message}")]
    Unavailable {
        /// What failed: the server's message or the transport's.
        message: String,
    },

    /// Missing or wrong credentials (`UNAUTHENTICATED`).
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// The server's message.
        message: String,
    },

    /// The client options cannot be used (a malformed address, CA certificate
    /// or token); no call was made.
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// A JSON payload could not be encoded or decoded.
    #[cfg(feature = "json")]
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// Any other gRPC status, kept whole (for example `DEADLINE_EXCEEDED`
    /// when the deadline of [`crate::ClientOptions`] expires).
    #[error("grpc status {}: {}", .0.code(), .0.message())]
    Other(Status),
}

fn fmt_actual(actual: &Option<u64>) -> String {
    match actual {
        Some(v) => v.to_string(),
        None => "unknown".to_string(),
    }
}

impl Error {
    /// The gRPC status code this error stands for (`None` for
    /// [`Error::Config`] and JSON errors, which never reached the server).
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            Error::WrongExpectedVersion { .. } => Code::Aborted,
            Error::AppendConditionFailed { .. } => Code::Aborted,
            Error::InAppend { error, .. } => return error.code(),
            Error::Unimplemented { .. } => Code::Unimplemented,
            Error::StreamNotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::StreamTypeMismatch { .. } => Code::FailedPrecondition,
            Error::Unavailable { .. } => Code::Unavailable,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::Other(status) => status.code(),
            _ => return None,
        })
    }

    /// True when the same call may succeed later: the server was unreachable
    /// or shutting down.
    pub fn is_transient(&self) -> bool {
        matches!(self.unwrap_append(), Error::Unavailable { .. })
    }

    /// The index of the append at fault, for an [`Error::InAppend`].
    pub fn append_index(&self) -> Option<usize> {
        match self {
            Error::InAppend { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The error itself, or for an [`Error::InAppend`] the error of the
    /// append at fault: `match err.unwrap_append() { Error::WrongExpectedVersion { .. } => …, … }`.
    pub fn unwrap_append(&self) -> &Error {
        match self {
            Error::InAppend { error, .. } => error.unwrap_append(),
            other => other,
        }
    }
}

/// Which call a status belongs to, for the variants that need context.
pub(crate) enum Call<'a> {
    Append(ExpectedVersion),
    /// The expected version of each append of an AppendMany.
    AppendMany(&'a [ExpectedVersion]),
    ReadStream(&'a str),
    Other,
}

/// Whether the call failed in the transport (the connection broke) rather
/// than with a status from the server: tonic reports that as `UNKNOWN` with
/// the transport error as its source, where a server's status has none.
pub(crate) fn is_transport_failure(status: &Status) -> bool {
    status.code() == Code::Unknown && status.source().is_some()
}

/// The message of a status and of its sources ("transport error" alone says
/// little).
fn describe(status: &Status) -> String {
    let mut message = status.message().to_string();
    let mut source = status.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = err.source();
    }
    message
}

fn decimal_trailer<T: std::str::FromStr>(status: &Status, key: &str) -> Option<T> {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Maps a gRPC status to the typed error.
pub(crate) fn from_status(status: Status, call: Call<'_>) -> Error {
    let status = normalize(status);
    if let Call::AppendMany(expected) = call {
        let index: Option<usize> = decimal_trailer(&status, APPEND_INDEX_TRAILER);
        return match index {
            Some(index) => {
                let own = expected.get(index).copied().unwrap_or_default();
                Error::InAppend {
                    index,
                    error: Box::new(from_status(status, Call::Append(own))),
                }
            }
            None => from_status(status, Call::Other),
        };
    }
    if is_transport_failure(&status) {
        return Error::Unavailable {
            message: describe(&status),
        };
    }
    let message = status.message().to_string();
    match status.code() {
        Code::Aborted => {
            if let Some(position) = decimal_trailer(&status, CONDITION_POSITION_TRAILER) {
                return Error::AppendConditionFailed { position };
            }
            match call {
                Call::Append(expected) => Error::WrongExpectedVersion {
                    expected,
                    actual: decimal_trailer(&status, ACTUAL_VERSION_TRAILER),
                },
                _ => Error::Other(status),
            }
        }
        Code::NotFound => match call {
            Call::ReadStream(stream) => Error::StreamNotFound {
                stream: stream.to_string(),
            },
            _ => Error::Other(status),
        },
        Code::AlreadyExists => Error::AlreadyExists { message },
        Code::InvalidArgument | Code::ResourceExhausted => Error::InvalidArgument { message },
        Code::FailedPrecondition => Error::StreamTypeMismatch { message },
        Code::Unavailable => Error::Unavailable {
            message: describe(&status),
        },
        Code::Unauthenticated => Error::Unauthenticated { message },
        Code::Unimplemented => Error::Unimplemented { message },
        _ => Error::Other(status),
    }
}

/// tonic reports a client-side deadline as `CANCELLED` ("Timeout expired");
/// gRPC calls that `DEADLINE_EXCEEDED`, and so does this crate.
pub(crate) fn normalize(status: Status) -> Status {
    if status.code() == Code::Cancelled && is_timeout(&status) {
        return Status::deadline_exceeded(status.message().to_string());
    }
    status
}

fn is_timeout(status: &Status) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = status.source();
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether a subscription that ended with this status should be resumed: the
/// connection dropped or the server went away, as opposed to a request the
/// server rejected.
pub(crate) fn is_resumable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Internal
            | Code::Cancelled
            | Code::DeadlineExceeded
    )
}
