//! Retention of the audit log: relayed events older than
//! `--event-retention` are deleted in the background, in bounded batches
//! (see [`Store::purge_events`]).
//!
//! Every replica runs it: deleting by id is idempotent, so two replicas
//! purging at once only share the work, and none depends on the relay's
//! leadership.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{domain::now_micros, store::Store};

/// Rows deleted per statement.
pub const BATCH: i64 = 1000;
/// How often the outbox is purged.
pub const EVERY: Duration = Duration::from_secs(60);
/// The first purge's delay after start-up: soon, but after the listeners
/// and the relay are up.
pub const FIRST: Duration = Duration::from_secs(5);

/// The create time (µs) before which relayed events are deleted `now`
/// (µs) with `retention`; saturates rather than overflows.
pub fn cutoff(now: i64, retention: Duration) -> i64 {
    now.saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX))
}

/// Purges events older than `retention` shortly after start, then every
/// [`EVERY`], until `token` is cancelled. Failures are logged and retried
/// at the next round.
pub async fn run(store: Store, retention: Duration, token: CancellationToken) {
    let mut wait = FIRST;
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = EVERY;
        let purge = store.purge_events(cutoff(now_micros(), retention), BATCH);
        tokio::select! {
            () = token.cancelled() => return,
            result = purge => match result {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, ?retention, "old events deleted"),
                Err(e) => tracing::warn!(error = %e, "event retention: purge failed; retrying at the next round"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_now_minus_the_retention_and_never_overflows() {
        assert_eq!(cutoff(100_000_000, Duration::from_secs(60)), 40_000_000);
        assert_eq!(cutoff(0, Duration::MAX), -i64::MAX);
    }
}
