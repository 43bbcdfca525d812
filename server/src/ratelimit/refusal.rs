//! Why a call was refused, for the status (`api::error` maps it to
//! RESOURCE_EXHAUSTED with `RetryInfo` and a `QuotaFailure` violation per
//! refusing policy, or to UNAVAILABLE for a fail-closed policy).

use std::time::Duration;

use super::Verdict;

/// A refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over one or more limits.
    OverLimit {
        /// When the call would fit.
        retry_after: Duration,
        /// Per refusing policy: its name and what it says.
        violations: Vec<(String, String)>,
    },
    /// A fail-closed policy could not be decided: its store is down.
    Unavailable {
        /// The policy.
        policy: String,
    },
}

impl From<&Verdict> for Refusal {
    fn from(v: &Verdict) -> Self {
        if let Some(policy) = &v.unavailable {
            return Refusal::Unavailable {
                policy: policy.to_string(),
            };
        }
        let violations = v
            .outcomes
            .iter()
            .filter(|o| o.refuses())
            .map(|o| {
                let what = if o.is_quota() { "quota" } else { "rate limit" };
                (
                    o.policy.to_string(),
                    format!(
                        "{what} of {} units exceeded; {} left",
                        o.limit.limit, o.decision.remaining
                    ),
                )
            })
            .collect();
        Refusal::OverLimit {
            retry_after: v.retry_after().unwrap_or_default(),
            violations,
        }
    }
}

impl Refusal {
    /// The refusal as a gRPC response (trailers only).
    pub fn into_http<B: Default>(self) -> http::Response<B> {
        tonic::Status::from(self).into_http()
    }
}
