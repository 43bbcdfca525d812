//! The long-running parts [`crate::run`] composes. Each takes the shutdown
//! token and returns when it is cancelled (and, for listeners, drained), so
//! later roles (relay, worker) join the same way.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin;

/// Serves `router` on the main listener until `token` is cancelled, then
/// drains in-flight calls for at most `grace`.
pub async fn main_listener(
    front: crate::http::Served,
    listener: TcpListener,
    grace: Duration,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let drain_token = token.clone();
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(axum::Router::new().fallback_service(front).into())
        // tonic applies TCP_NODELAY only to listeners it wraps itself;
        // without it Nagle's algorithm adds 40 ms stalls to small replies.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            async move { drain_token.cancelled().await },
        );
    tokio::select! {
        r = server => r.context("gRPC server"),
        _ = async {
            token.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "in-flight calls did not drain in time; stopping anyway");
            Ok(())
        }
    }
}

/// Serves `/healthz`, `/readyz` and `/metrics` until `token` is cancelled.
pub async fn admin(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    token: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, admin::router(ready))
        .with_graceful_shutdown(async move { token.cancelled().await })
        .await
}
