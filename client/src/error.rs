//! The crate's one error type: what can go wrong while *building* a
//! [`Client`](crate::Client). Errors of individual calls are `tonic::Status`
//! values, as with any tonic client.

/// Why a [`ClientBuilder`](crate::ClientBuilder) could not produce a
/// [`Client`](crate::Client).
///
/// No variant ever carries a credential: an API key in an error message
/// would end up in logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL cannot be used: it is not an absolute `http://` or
    /// `https://` URL with a host, it is `https://` in a build without the
    /// `tls` feature, or a CA certificate was given for an `http://` URL.
    #[error("invalid Tollgate URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given to the builder.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The API key or bearer token cannot be sent in an HTTP header: it is
    /// empty or holds characters outside visible ASCII (a trailing newline
    /// read from a file is the usual culprit).
    #[error("invalid credential: {reason}")]
    InvalidCredential {
        /// What is wrong with it; never the credential itself.
        reason: &'static str,
    },

    /// The user agent cannot be sent in an HTTP header.
    #[error("invalid user agent {user_agent:?}")]
    InvalidUserAgent {
        /// The user agent as given to the builder.
        user_agent: String,
    },

    /// The TLS settings for an `https://` URL cannot be used, e.g. a CA
    /// certificate that is not PEM.
    #[error("invalid TLS settings for {url}: {reason}")]
    InvalidTls {
        /// The server URL.
        url: String,
        /// What is wrong with them.
        reason: String,
    },

    /// `connect_lazy` was called outside a Tokio runtime; the channel needs
    /// one to spawn its background task.
    #[error("no Tokio runtime: build the client from inside a Tokio runtime")]
    NoRuntime,

    /// Connecting to the server failed (refused, timed out, unresolvable,
    /// or the TLS handshake failed, e.g. an untrusted certificate).
    #[error("cannot connect to Tollgate at {url}")]
    Transport {
        /// The server URL.
        url: String,
        /// The underlying transport error.
        #[source]
        source: tonic::transport::Error,
    },
}
