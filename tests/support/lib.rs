//! Support for Tollgate's end-to-end tests: a real server, started in
//! process through the same `prepare` + `run` the binary calls, on a real
//! database, driven through the `tollgate-client` crate and real peers
//! (grpcurl, a hand-written HTTP/1.1 client for the admin listener).
//!
//! Module map:
//! - `server`: [`TestServer`] (start, restart, stop, clients), the
//!   [`Backend`]s a run covers and [`each_backend`], which runs one
//!   scenario on every backend in turn.
//! - `postgres`: one throw-away schema per PostgreSQL test server.
//! - [`rpc`]: assertions on call results: codes, field violations,
//!   `google.rpc` details.
//! - [`descriptors`]: the `tollgate.v1` methods, for tables that need a
//!   row per method.
//! - [`fixtures`]: the requests most tests start with.
//! - [`policy`]: descriptor sets with a method's policy edited.
//! - [`outbox`]: the events a server appended, read from its database.
//! - [`http`]: a minimal HTTP/1.1 GET for `/metrics`, `/healthz`, `/readyz`.
//! - [`curl`]: the curl binary as the HTTP client of HTTP/JSON, Connect and
//!   gRPC-Web tests, over HTTP/1.1 and h2c.
//! - [`peers`]: finding external tools (grpcurl), skipping or failing
//!   under `TOLLGATE_TEST_STRICT=1` when they are missing.
//!
//! Environment:
//! - `TOLLGATE_TEST_DATABASE_URL`: a PostgreSQL URL; when set, every test
//!   also runs on PostgreSQL, each server in its own schema.
//! - `TOLLGATE_TEST_STRICT=1` (CI): anything missing (PostgreSQL, grpcurl)
//!   fails the run instead of being skipped.
//! - `GRPCURL`: the grpcurl binary to use.
//! - `TOLLGATE_TEST_VENV`: the Python virtualenv with the PyPI tools
//!   (openapi-spec-validator, schemathesis); default: the workspace's `.venv`.
#![forbid(unsafe_code)]

pub mod curl;
pub mod descriptors;
pub mod fixtures;
pub mod http;
pub mod outbox;
pub mod peers;
pub mod policy;
mod postgres;
pub mod rpc;
mod server;

pub use postgres::PgSchema;
pub use server::{Backend, TestServer, backends, concurrently, each_backend};

/// Re-exported so test files need only this crate and the client.
pub use tollgate_client::{Client, tonic::Code, v1};
