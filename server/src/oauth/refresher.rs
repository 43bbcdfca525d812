//! The background task behind the key ring: reloads the keys every
//! [`REFRESH_INTERVAL`] (other replicas' rotations, pending keys whose
//! time came, retired keys leaving). Scheduled rotation is an upkeep job
//! (`upkeep.keys`, run by one worker), not every replica's business.

use tokio_util::sync::CancellationToken;

use super::keys::{KeyRing, REFRESH_INTERVAL};
use crate::store::Store;

/// Runs until `token` is cancelled: `refresh` every [`REFRESH_INTERVAL`].
/// Failures are logged and retried on the next tick; the keys in memory
/// keep serving.
pub async fn run(keys: KeyRing, store: Store, token: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; `prepare` has just loaded the keys.
    tick.tick().await;
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = keys.refresh(&store).await {
            tracing::warn!(error = %e, "reloading the signing keys failed");
        }
    }
}
