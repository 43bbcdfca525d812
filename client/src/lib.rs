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
//! let client = Client::builder("http://127.0.0.1:8080")
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
//! # What is retried
//!
//! Only reads: methods whose name starts with `Get` or `List`, and
//! `grpc.health.v1.Health/Check`. They are retried on UNAVAILABLE and on
//! transport errors (connection refused or reset), up to
//! [`ClientBuilder::max_retries`] times with jittered exponential backoff,
//! within the call's deadline. Writes (Create, Update, Delete, Revoke,
//! SetPassword, ...) are sent exactly once: if one fails, you decide whether
//! to send it again.
//!
//! # Modules
//!
//! - `client`: [`Client`] and [`ClientBuilder`], the settings and typed
//!   client accessors.
//! - `transport`: [`TollgateChannel`], the tower service that adds the
//!   credential, the deadline and retries on top of a tonic channel.
//! - `retry`: which methods are idempotent, what counts as retryable, the
//!   backoff.
//! - `error`: [`Error`], for building a client.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
mod retry;
mod transport;

pub use client::{Client, ClientBuilder, Transport};
pub use error::Error;
pub use transport::{BoxError, ResponseFuture, TollgateChannel};

/// Messages and typed clients of `tollgate.v1` (and the `*_server` modules,
/// handy for test doubles).
pub use tollgate::tollgate::v1;

/// `google.rpc` messages: `Status`, `Code` and the error details.
pub use tollgate::google;

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
