//! Keeps the limiter's policies current: at once after a write on this
//! replica (the store's change signal), within a second after a write on
//! another (a cheap fingerprint query, polled), and drops idle in-process
//! counters now and then so memory follows the live key set.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{RateLimiter, RuleSet};
use crate::store::Store;

/// How often another replica's writes are looked for.
pub const POLL: Duration = Duration::from_secs(1);
/// How often idle in-process counters are swept.
pub const SWEEP: Duration = Duration::from_secs(60);

/// Loads every policy into `limiter` now; start-up calls it before
/// serving so the first calls already see them.
pub async fn load(
    limiter: &RateLimiter,
    store: &Store,
) -> crate::domain::Result<(i64, Option<i64>)> {
    let fingerprint = store.fingerprint().await?;
    let rules = store.all_rules().await?;
    limiter.set_rules(RuleSet::new(rules));
    Ok(fingerprint)
}

/// Reloads on changes until `token` is cancelled.
pub async fn run(limiter: RateLimiter, store: Store, token: CancellationToken) {
    let mut changes = store.subscribe_rate_limit_changes();
    let mut last = None;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            () = token.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    // The store is gone: shutting down.
                    return;
                }
                true
            }
            _ = poll.tick() => false,
            _ = sweep.tick() => {
                limiter.local().sweep();
                continue;
            }
        };
        // Taken before reading, so the rules read reflect at least it.
        let generation = *changes.borrow_and_update();
        let fingerprint = match store.fingerprint().await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "rate-limit policies: cannot read the fingerprint; keeping the ones loaded");
                continue;
            }
        };
        if !forced && last == Some(fingerprint) {
            limiter.mark_loaded(generation);
            continue;
        }
        match store.all_rules().await {
            Ok(rules) => {
                let count = rules.len();
                limiter.set_rules(RuleSet::new(rules));
                limiter.mark_loaded(generation);
                last = Some(fingerprint);
                tracing::debug!(policies = count, "rate-limit policies reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate-limit policies: reload failed; keeping the ones loaded");
            }
        }
    }
}
