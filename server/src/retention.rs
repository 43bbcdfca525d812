//! Retention of the audit log: relayed events older than
//! `--event-retention` are deleted in the background, in bounded batches
//! (see [`crate::store::Store::purge_events`]), by the `upkeep.events` job
//! (see [`crate::upkeep`]) on whichever worker claims it.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_now_minus_the_retention_and_never_overflows() {
        assert_eq!(cutoff(100_000_000, Duration::from_secs(60)), 40_000_000);
        assert_eq!(cutoff(0, Duration::MAX), -i64::MAX);
    }
}
