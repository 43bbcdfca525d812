//! Rust client for Tollgate, the access layer for gRPC services.
//!
//! The typed clients and messages are the ones generated from `proto/` in
//! the `tollgate` crate, re-exported here as [`v1`]. This crate adds what
//! every caller would otherwise write by hand: the credential on every call,
//! a deadline per call, and retries of reads when the server is briefly
//! unavailable.
//!
//! ```no_run
//! use tollgate_client::{Client, v1::GetOrganizationRequest};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("https://tollgate.example.com")
//!     .api_key(std::env::var("TOLLGATE_API_KEY")?)
//!     .connect()
//!     .await?;
//! let org = client
//!     .organizations()
//!     .get_organization(GetOrganizationRequest { name: "organizations/root".into() })
//!     .await?
//!     .into_inner();
//! println!("{}", org.display_name);
//! # Ok(())
//! # }
//! ```
//!
//! Calls fail with a [`tonic::Status`]. Tollgate puts `google.rpc` details
//! (field violations, retry info, error info) in it; read them with
//! [`tonic_types::StatusExt`].
//!
//! # Connecting
//!
//! [`Client::builder`] takes an `http://` or `https://` URL. `https://`
//! needs the `tls` feature (on by default): rustls with the ring provider,
//! trusting the public Mozilla roots, or only the CAs you pass to
//! [`ClientBuilder::ca_certificate`]. For anything else (client
//! certificates, a Unix socket, a load-balanced list of endpoints, your own
//! tower layers under the credential) configure a tonic
//! [`Channel`](tonic::transport::Channel) yourself and hand it to
//! [`Client::from_channel`] with the call [`Settings`].
//!
//! # Credentials
//!
//! [`ClientBuilder::api_key`] and [`ClientBuilder::bearer_token`] send a
//! fixed `authorization: Bearer …` header; [`ClientBuilder::token_source`]
//! asks a [`TokenSource`] before every attempt, for tokens that expire and
//! are refreshed. Secrets are marked sensitive in HTTP/2, redacted in
//! `Debug`, and never part of an error.
//!
//! [`ClientCredentials`] is the token source for services: it gets access
//! tokens from Tollgate's token endpoint with the OAuth `client_credentials`
//! grant, caches them, refreshes them before they expire (one request in
//! flight however many calls wait), and retries an issuer that is briefly
//! down. Hand it to [`ClientBuilder::token_source`] in an `Arc`.
//!
//! # Accepting Tollgate tokens in your own services
//!
//! With the `verify` feature (on by default), [`VerifyLayer`] is a tower
//! layer for your own tonic or axum server: it verifies the
//! `authorization: Bearer` JWT of each request locally, against the
//! issuer's published keys, and inserts the [`VerifiedClaims`] into the
//! request's extensions. `examples/protected_service.rs` puts both halves
//! together.
//!
//! # What is retried
//!
//! The protos decide: a method is retried only if its definition declares
//! `option idempotency_level = NO_SIDE_EFFECTS;` (or `IDEMPOTENT`), read
//! from the file descriptor set compiled into the `tollgate` crate. In
//! `tollgate.v1` that is every `Get*` and `List*` method. The standard
//! `grpc.health.v1.Health/Check` is the one explicit exception, since its
//! proto is not ours to annotate. They are retried on UNAVAILABLE and on
//! transport errors (connection refused or reset), up to
//! [`Settings::max_retries`] times with jittered exponential backoff, within
//! the call's deadline. Writes (Create, Update, Delete, Revoke, SetPassword,
//! ...) are sent exactly once: if one fails, you decide whether to send it
//! again.
//!
//! # Modules
//!
//! - `client`: [`Client`], [`ClientBuilder`] and [`Settings`], the settings
//!   and typed client accessors.
//! - `credential`: [`Credential`], [`TokenSource`] and [`Token`].
//! - `transport`: [`TollgateChannel`], the tower service that adds the
//!   credential, the deadline and retries on top of a tonic channel.
//! - `retry`: which methods are idempotent (from the protos), what counts
//!   as retryable, the backoff.
//! - `error`: [`Error`], for building a client.
//! - `token_source`: [`ClientCredentials`], the `client_credentials` token
//!   source, and its [`TokenError`].
//! - `verify` (feature `verify`): [`Verifier`], [`VerifyLayer`] and
//!   [`VerifiedClaims`].
//! - `http`: [`HttpClient`], the small HTTP/1.1 client for the token
//!   endpoint, discovery and the key set (HTTPS with the `tls` feature).
//! - `discovery`: the OpenID Connect discovery document.
//!
//! # Traces
//!
//! Every call carries the current OpenTelemetry span as a W3C `traceparent`
//! (`tracestate` too), so Tollgate's server span is its child; the
//! verifying layer (`VerifyLayer`) continues a caller's trace (see [`trace_context`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod credential;
mod discovery;
mod error;
mod http;
mod retry;
#[cfg(test)]
mod testing;
mod token_source;
pub mod trace_context;
mod transport;
#[cfg(feature = "verify")]
mod verify;

pub use client::{Client, ClientBuilder, Settings};
pub use credential::{Credential, Token, TokenSource};
pub use error::Error;
pub use http::{HttpClient, HttpError};
pub use token_source::{
    AccessToken, ClientAuthMethod, ClientCredentials, ClientCredentialsBuilder, OAuthError,
    TokenError,
};
pub use transport::{BoxError, ResponseFuture, TollgateChannel};
#[cfg(feature = "verify")]
pub use verify::{
    Actor, VerifiedClaims, Verifier, VerifierBuilder, Verify, VerifyError, VerifyFuture,
    VerifyLayer,
};

/// Messages and typed clients of `tollgate.v1` (and the `*_server` modules,
/// handy for test doubles).
pub use tollgate::tollgate::v1;

/// `google.rpc` messages: `Status`, `Code` and the error details.
pub use tollgate::google;

/// The OpenTelemetry API this crate propagates trace context with: a
/// service's spans must come from the same version to be the parents of
/// Tollgate's.
pub use opentelemetry;

/// The tonic this crate is built on, so callers use the matching version.
pub use tonic;

/// `StatusExt` and `ErrorDetails` to read the `google.rpc` details of an
/// error status.
pub use tonic_types;

/// Well-known protobuf types (`FieldMask`, `Timestamp`) used in requests.
pub use prost_types;

/// The standard `grpc.health.v1` messages and client, as served by
/// Tollgate. [`Client::health`] hands out a [`HealthClient`] on the shared
/// transport.
pub mod health {
    pub use tonic_health::pb::{
        HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
        health_client::HealthClient,
    };
}

pub use health::HealthClient;
