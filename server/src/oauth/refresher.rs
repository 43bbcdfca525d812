//! The background task behind the key ring: reloads the keys every
//! [`REFRESH_INTERVAL`] (other replicas' rotations, pending keys whose
//! time came, retired keys leaving) and rotates on the configured schedule.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::keys::{KeyRing, REFRESH_INTERVAL};
use crate::store::Store;

/// Runs until `token` is cancelled: `refresh` every [`REFRESH_INTERVAL`],
/// then `rotate_due(every)` when `rotate_every` is set. Failures are
/// logged and retried on the next tick; the keys in memory keep serving.
pub async fn run(
    keys: KeyRing,
    store: Store,
    rotate_every: Option<Duration>,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; `prepare` has just loaded the keys.
    tick.tick().await;
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(every) = rotate_every
            && let Err(e) = keys.rotate_due(&store, every).await
        {
            tracing::warn!(error = %e, "scheduled signing key rotation failed");
        }
        if let Err(e) = keys.refresh(&store).await {
            tracing::warn!(error = %e, "reloading the signing keys failed");
        }
    }
}
