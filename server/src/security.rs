//! The security log: what an operator or a SIEM watches, on the log target
//! `tollgate::security`, each line's `event` field naming what happened
//! (the schema is in README.md, "Security log").
//!
//! Events any client can cause at will (a refused credential, a
//! rate-limit refusal) pass [`admit`] first: at most 20 a second, in
//! bursts of 50, reach the log, and the rest are counted in
//! `tollgate_security_log_suppressed_total{event}`, so a flood of bad
//! calls cannot flood the log.

use std::{num::NonZeroU32, sync::OnceLock};

use governor::{DefaultDirectRateLimiter, Quota};

/// The log target of security events.
pub const TARGET: &str = "tollgate::security";

/// Whether an `event` line a client caused may be logged now; counts it
/// as suppressed when not.
pub fn admit(event: &'static str) -> bool {
    static BUDGET: OnceLock<DefaultDirectRateLimiter> = OnceLock::new();
    let budget = BUDGET.get_or_init(|| {
        let rate = NonZeroU32::new(20).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN);
        DefaultDirectRateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
    });
    let admitted = budget.check().is_ok();
    if !admitted {
        metrics::counter!("tollgate_security_log_suppressed_total", "event" => event).increment(1);
    }
    admitted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_bounded() {
        // The budget is the process's: other tests may have spent some.
        let admitted = (0..1000).filter(|_| admit("test")).count();
        assert!(admitted <= 80, "{admitted} of 1000 admitted");
    }
}
