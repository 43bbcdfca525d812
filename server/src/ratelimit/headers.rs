//! The IETF rate-limit headers (draft-ietf-httpapi-ratelimit-headers,
//! structured-field form): `RateLimit-Policy: "name";q=100;w=60` says
//! what each policy allows, `RateLimit: "name";r=42;t=17` where the caller
//! stands (remaining units, seconds until full). Only enforced policies
//! are reported; shadow ones stay between the operator and the metrics.

use std::{cell::RefCell, time::Duration};

use http::HeaderValue;

use super::{Algorithm, Limit, QuotaWindow, Verdict};

/// `RateLimit-Policy`, lower case as HTTP/2 and gRPC metadata want it.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// `RateLimit`.
pub const RATELIMIT: &str = "ratelimit";
/// [`RATELIMIT_POLICY`] as a header name, made once: inserting by `&str`
/// parses the name on every call.
pub static RATELIMIT_POLICY_NAME: http::HeaderName =
    http::HeaderName::from_static(RATELIMIT_POLICY);
/// [`RATELIMIT`] as a header name.
pub static RATELIMIT_NAME: http::HeaderName = http::HeaderName::from_static(RATELIMIT);

/// The two header values for `verdict`, `None` when no enforced policy
/// applied.
///
/// Runs on every limited call. `RateLimit-Policy` only changes with the
/// rules, so each policy's value is made when its rules are loaded
/// ([`policy_value`]) and a call of one enforced policy clones it (a
/// reference count) rather than formatting and allocating it again.
/// `RateLimit` changes with every call: its digits are written with
/// `itoa` rather than through `fmt`, into a thread's reused buffer, and
/// it is marked sensitive, which HTTP/2 encodes as a never-indexed
/// literal, so it does not churn the connection's HPACK table (evicting
/// entries that do repeat, such as `RateLimit-Policy`).
pub fn values(verdict: &Verdict) -> Option<(HeaderValue, HeaderValue)> {
    thread_local! {
        // Written here, then copied once into the header value: one
        // allocation per value, where a `BytesMut` per value, frozen,
        // took two (the buffer, then the shared handle `freeze` makes of
        // a buffer not filled to its capacity).
        static BUFFERS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }
    let mut enforced = verdict.outcomes.iter().filter(|o| !o.shadow);
    let first = enforced.next()?;
    let only = enforced.next().is_none();
    BUFFERS.with_borrow_mut(|(policy, state)| {
        policy.clear();
        state.clear();
        let mut digits = itoa::Buffer::new();
        for o in verdict.outcomes.iter().filter(|o| !o.shadow) {
            if !state.is_empty() {
                state.extend_from_slice(b", ");
            }
            write_entry(
                state,
                o.short_name(),
                (b";r=", o.decision.remaining),
                (b";t=", ceil_secs(o.decision.reset_after)),
                &mut digits,
            );
            if only {
                continue;
            }
            if !policy.is_empty() {
                policy.extend_from_slice(b", ");
            }
            match o.policy.policy_value(&o.limit) {
                Some(made) => policy.extend_from_slice(made.as_bytes()),
                None => write_policy(policy, o.short_name(), &o.limit, &mut digits),
            }
        }
        let policy_header = match (only, first.policy.policy_value(&first.limit)) {
            (true, Some(made)) => Some(made.clone()),
            (true, None) => policy_value(first.short_name(), &first.limit),
            (false, _) => HeaderValue::from_bytes(policy).ok(),
        };
        let state_value = HeaderValue::from_bytes(state).ok().map(|mut state| {
            state.set_sensitive(true);
            state
        });
        // A verdict of many policies leaves no large buffer behind.
        for buffer in [policy, state] {
            if buffer.capacity() > 4096 {
                *buffer = Vec::new();
            }
        }
        policy_header.zip(state_value)
    })
}

/// The `RateLimit-Policy` entry of the policy named `name` (its final
/// segment) enforcing `limit`: made once per policy when rules load.
pub fn policy_value(name: &str, limit: &Limit) -> Option<HeaderValue> {
    let mut out = Vec::new();
    write_policy(&mut out, name, limit, &mut itoa::Buffer::new());
    HeaderValue::from_bytes(&out).ok()
}

/// Writes `"name";q=100;w=60`: the quota and its window in seconds.
fn write_policy(out: &mut Vec<u8>, name: &str, limit: &Limit, digits: &mut itoa::Buffer) {
    let window = match limit.algorithm {
        Algorithm::Quota(QuotaWindow::Day) => 86_400,
        Algorithm::Quota(QuotaWindow::Month) => 2_592_000,
        _ => limit.period.as_secs().max(1),
    };
    write_entry(out, name, (b";q=", limit.limit), (b";w=", window), digits);
}

/// Writes one structured-field list member: `"name"` and two integer
/// parameters.
fn write_entry(
    out: &mut Vec<u8>,
    name: &str,
    (first, first_value): (&[u8], u64),
    (second, second_value): (&[u8], u64),
    digits: &mut itoa::Buffer,
) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
    out.extend_from_slice(first);
    out.extend_from_slice(digits.format(first_value).as_bytes());
    out.extend_from_slice(second);
    out.extend_from_slice(digits.format(second_value).as_bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{
        Limit,
        limit::Decision,
        limiter::{Outcome, PolicyName, Verdict},
    };

    fn outcome(
        policy: &str,
        algorithm: Algorithm,
        limit: u64,
        remaining: u64,
        shadow: bool,
    ) -> Outcome {
        Outcome {
            policy: PolicyName::new(policy),
            limit: Limit {
                algorithm,
                limit,
                period: Duration::from_secs(60),
                burst: limit,
            },
            decision: Decision {
                allowed: true,
                limit,
                remaining,
                reset_after: Duration::from_millis(16_200),
                retry_after: Duration::ZERO,
            },
            shadow,
        }
    }

    #[test]
    fn values_list_enforced_policies_in_structured_field_form() {
        let verdict = Verdict {
            outcomes: smallvec::smallvec![
                outcome(
                    "organizations/o/rateLimitPolicies/api",
                    Algorithm::Gcra,
                    100,
                    42,
                    false,
                ),
                outcome(
                    "organizations/o/rateLimitPolicies/daily",
                    Algorithm::Quota(QuotaWindow::Day),
                    5000,
                    4999,
                    false,
                ),
                outcome(
                    "organizations/o/rateLimitPolicies/trial",
                    Algorithm::Gcra,
                    1,
                    0,
                    true,
                ),
            ],
            ..Verdict::default()
        };
        let (policy, state) = values(&verdict).unwrap();
        assert_eq!(policy, "\"api\";q=100;w=60, \"daily\";q=5000;w=86400");
        assert_eq!(state, "\"api\";r=42;t=17, \"daily\";r=4999;t=17");
        assert!(state.is_sensitive(), "never indexed: it changes every call");
        assert!(!policy.is_sensitive());
    }

    #[test]
    fn a_configured_default_is_named_whole() {
        let verdict = Verdict {
            outcomes: smallvec::smallvec![outcome("default", Algorithm::Gcra, 10, 9, false)],
            ..Verdict::default()
        };
        let (policy, state) = values(&verdict).unwrap();
        assert_eq!(policy, "\"default\";q=10;w=60");
        assert_eq!(state, "\"default\";r=9;t=17");
        // The thread's buffers start afresh for the next verdict.
        let (policy, _) = values(&verdict).unwrap();
        assert_eq!(policy, "\"default\";q=10;w=60");
    }

    #[test]
    fn no_enforced_policy_gives_no_headers() {
        let only_shadow = Verdict {
            outcomes: smallvec::smallvec![outcome("p", Algorithm::Gcra, 1, 0, true)],
            ..Verdict::default()
        };
        assert!(values(&only_shadow).is_none());
        assert!(values(&Verdict::default()).is_none());
    }
}
