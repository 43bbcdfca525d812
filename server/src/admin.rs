//! The admin listener: `/healthz` (alive), `/readyz` (database reachable,
//! and with the worker role, jobs claimable)
//! and `/metrics` (Prometheus text).

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds: 100 µs to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Redis round-trip buckets, in seconds: 25 µs to 100 ms (decisions wait a
/// few milliseconds at most).
const REDIS_BUCKETS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

/// The process-wide Prometheus recorder. `metrics` has one global recorder,
/// so several servers in one process (tests) share it.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Every histogram as buckets (a summary cannot be aggregated
            // across replicas), Redis's finer.
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("tollgate_ratelimit_redis_duration_seconds".into()),
                        REDIS_BUCKETS,
                    )
                })
                .map(|b| b.build_recorder());
            match recorder {
                Ok(recorder) => {
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!("a metrics recorder was already installed");
                    }
                    handle
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the metrics recorder");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Drains histogram samples into their buckets every few seconds. Without
/// it the recorder keeps every sample until `/metrics` is scraped, so an
/// unscraped server grows by ~24 bytes a call.
pub async fn upkeep(handle: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// What `/readyz` answers from.
#[derive(Clone, Default)]
pub struct Readiness {
    /// Kept current by the health watcher: the database answers.
    pub database: Arc<AtomicBool>,
    /// With the worker role: whether it can claim jobs.
    pub worker: Option<Arc<crate::worker::Health>>,
}

#[derive(Clone)]
struct AdminState {
    ready: Readiness,
    metrics: PrometheusHandle,
}

/// The admin router.
pub fn router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            ready,
            metrics: prometheus(),
        })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if !s.ready.database.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database unreachable\n",
        )
    } else if s.ready.worker.as_ref().is_some_and(|w| !w.can_claim()) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the worker cannot claim jobs\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        {
            crate::process::publish();
            s.metrics.render()
        },
    )
}
