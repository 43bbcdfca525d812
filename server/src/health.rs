//! Keeps `grpc.health.v1.Health` and `/readyz` honest: NOT_SERVING while the
//! database does not answer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::store::Db;

/// Probes the database every `interval` until `shutdown`, publishing the
/// result to the health service (overall and per service) and `ready`.
pub async fn watch(
    db: Db,
    reporter: HealthReporter,
    services: Vec<String>,
    ready: Arc<AtomicBool>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let ok = matches!(
            tokio::time::timeout(interval.max(Duration::from_millis(500)), db.ping()).await,
            Ok(Ok(()))
        );
        if last != Some(ok) {
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if ok {
                tracing::info!("database reachable: SERVING");
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
            }
            reporter.set_service_status("", status).await;
            for s in &services {
                reporter.set_service_status(s, status).await;
            }
            ready.store(ok, Ordering::Relaxed);
            last = Some(ok);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    ready.store(false, Ordering::Relaxed);
}
