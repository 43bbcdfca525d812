//! The long-running parts [`crate::run`] composes. Each takes the shutdown
//! token and returns when it is cancelled (and, for listeners, drained), so
//! later roles (relay, worker) join the same way.

use std::{sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    admin,
    listener::{Limits, Listener, Stats},
    oauth::keys::KeyRing,
    store::Store,
};

/// Serves `router` on the main listener, bounded by `limits`, over TLS
/// when `tls` is given, until `token` is cancelled; then drains in-flight
/// calls for at most `grace`. `stats` receives its live counts.
pub async fn main_listener(
    router: crate::http::Served,
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    grace: Duration,
    stats: Arc<Stats>,
    token: CancellationToken,
) -> anyhow::Result<()> {
    Listener {
        name: "main",
        limits,
        tls,
        grace,
        stats,
    }
    .serve(router, listener, token)
    .await
}

/// Serves `/healthz`, `/readyz` and `/metrics` with `settings` until
/// `token` is cancelled. The admin port has a listener (and a connection
/// cap) of its own, so it still answers when the main port is saturated.
pub async fn admin(
    settings: Listener,
    listener: TcpListener,
    ready: admin::Readiness,
    token: CancellationToken,
) -> anyhow::Result<()> {
    settings.serve(admin::router(ready), listener, token).await
}

/// Keeps `keys` current until `token` is cancelled: reloads them every
/// 30 s (see [`crate::oauth::refresher`]); the worker role rotates them
/// (`upkeep.keys`).
pub async fn signing_keys(keys: KeyRing, store: Store, token: CancellationToken) {
    crate::oauth::refresher::run(keys, store, token).await
}
