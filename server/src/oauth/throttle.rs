//! Brute-force throttling of sign-ins and client authentications: after
//! [`MAX_FAILURES`] failures for one key (an account, a client, a source
//! address) within [`WINDOW`] of the first, every attempt for that key is
//! refused until the window ends, right password or not.
//!
//! A counter per key in a bounded moka cache whose entries live for the
//! window from their first failure: a lockout count, which `governor`'s
//! rate limiters (a refill rate, not a count of failures) do not express.
//! The rate-limit issue generalises limits; this stays a lockout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use moka::sync::Cache;

/// Failures allowed per key within the window.
pub const MAX_FAILURES: u32 = 5;
/// How long failures count, from the first.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Keys tracked at once; an attacker spraying keys evicts old ones, which
/// costs it the counts it built, not the server its memory.
const CAPACITY: u64 = 100_000;

/// Failure counts per key.
#[derive(Clone)]
pub struct Throttle {
    failures: Cache<String, Arc<AtomicU32>>,
    max: u32,
    window: Duration,
    /// When the last failure was counted (ms since the epoch): with none
    /// within the window, nobody can be locked out, and the check costs
    /// one atomic load instead of building keys and looking them up.
    last_failure: Arc<AtomicU64>,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(MAX_FAILURES, WINDOW)
    }
}

impl Throttle {
    /// `max` failures per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            failures: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(window)
                .build(),
            max,
            window,
            last_failure: Arc::default(),
        }
    }

    /// Whether no failure was counted within the window: then no key is
    /// locked out.
    pub fn quiet(&self) -> bool {
        let last = self.last_failure.load(Ordering::Relaxed);
        last == 0
            || now_ms().saturating_sub(last)
                > u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `key` is locked out now.
    pub fn blocked(&self, key: &str) -> bool {
        !self.quiet()
            && self
                .failures
                .get(key)
                .is_some_and(|n| n.load(Ordering::Relaxed) >= self.max)
    }

    /// Counts a failure of `key`.
    pub fn fail(&self, key: &str) {
        self.last_failure.store(now_ms(), Ordering::Relaxed);
        self.failures
            .get_with(key.to_owned(), || Arc::new(AtomicU32::new(0)))
            .fetch_add(1, Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_max_failures_until_the_window_ends() {
        let t = Throttle::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert!(!t.blocked("alice"));
            t.fail("alice");
        }
        assert!(t.blocked("alice"));
        assert!(!t.blocked("bob"));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!t.blocked("alice"));
    }
}
