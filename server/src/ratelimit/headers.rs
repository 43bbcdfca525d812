//! The IETF rate-limit headers (draft-ietf-httpapi-ratelimit-headers,
//! structured-field form): `RateLimit-Policy: "name";q=100;w=60` says
//! what each policy allows, `RateLimit: "name";r=42;t=17` where the caller
//! stands (remaining units, seconds until full). Only enforced policies
//! are reported; shadow ones stay between the operator and the metrics.

use std::{fmt::Write as _, time::Duration};

use http::HeaderValue;

use super::{Algorithm, QuotaWindow, Verdict};

/// `RateLimit-Policy`, lower case as HTTP/2 and gRPC metadata want it.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// `RateLimit`.
pub const RATELIMIT: &str = "ratelimit";

/// The two header values for `verdict`, `None` when no enforced policy
/// applied.
pub fn values(verdict: &Verdict) -> Option<(HeaderValue, HeaderValue)> {
    let mut policy = String::new();
    let mut state = String::new();
    for o in verdict.outcomes.iter().filter(|o| !o.shadow) {
        if !policy.is_empty() {
            policy.push_str(", ");
            state.push_str(", ");
        }
        let name = o.short_name();
        let window = match o.limit.algorithm {
            Algorithm::Quota(QuotaWindow::Day) => 86_400,
            Algorithm::Quota(QuotaWindow::Month) => 2_592_000,
            _ => o.limit.period.as_secs().max(1),
        };
        let _ = write!(policy, "\"{name}\";q={};w={window}", o.limit.limit);
        let _ = write!(
            state,
            "\"{name}\";r={};t={}",
            o.decision.remaining,
            ceil_secs(o.decision.reset_after)
        );
    }
    if policy.is_empty() {
        return None;
    }
    Some((
        HeaderValue::from_str(&policy).ok()?,
        HeaderValue::from_str(&state).ok()?,
    ))
}

/// `Retry-After` in whole seconds (rounded up, at least 1) for a refusal.
pub fn retry_after(verdict: &Verdict) -> Option<HeaderValue> {
    if verdict.unavailable.is_some() {
        return Some(HeaderValue::from_static("1"));
    }
    let wait = verdict.retry_after()?;
    HeaderValue::from_str(&ceil_secs(wait).max(1).to_string()).ok()
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
