//! The typed error of every client call.

use std::error::Error as StdError;

use tonic::{Code, Status};

use crate::ExpectedVersion;

/// Trailing metadata key in which the server reports a stream's actual last
/// version when an expected-version check fails.
pub(crate) const ACTUAL_VERSION_TRAILER: &str = "es-actual-version";

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
        matches!(self, Error::Unavailable { .. })
    }
}

/// Which call a status belongs to, for the variants that need context.
pub(crate) enum Call<'a> {
    Append(ExpectedVersion),
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

/// Maps a gRPC status to the typed error.
pub(crate) fn from_status(status: Status, call: Call<'_>) -> Error {
    let status = normalize(status);
    if is_transport_failure(&status) {
        return Error::Unavailable {
            message: describe(&status),
        };
    }
    let message = status.message().to_string();
    match status.code() {
        Code::Aborted => match call {
            Call::Append(expected) => Error::WrongExpectedVersion {
                expected,
                actual: status
                    .metadata()
                    .get(ACTUAL_VERSION_TRAILER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            },
            _ => Error::Other(status),
        },
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
