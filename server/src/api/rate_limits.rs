//! `tollgate.v1.RateLimitService`: other services ask about their own
//! descriptors under their organization's policies (the same decision as
//! Envoy's global rate-limit API, with the caller's identity known).

use tollgate::tollgate::v1::{
    CheckRateLimitRequest, CheckRateLimitResponse, QuotaStatus, RateLimitStatus,
    rate_limit_service_server::RateLimitService, rate_limit_status::Code,
};
use tonic::{Request, Response, Status};

use super::{caller, timestamp};
use crate::{
    domain::{Error, FieldViolation, names::OrgName},
    ratelimit::{Outcome, RateLimiter, Verdict, descriptors, local::now_us},
};

/// The `RateLimitService` implementation.
pub struct RateLimits {
    limiter: RateLimiter,
}

impl RateLimits {
    /// Decides with `limiter`.
    pub fn new(limiter: RateLimiter) -> Self {
        Self { limiter }
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimits {
    async fn check_rate_limit(
        &self,
        mut request: Request<CheckRateLimitRequest>,
    ) -> Result<Response<CheckRateLimitResponse>, Status> {
        let caller = caller(&mut request)?;
        let req = request.into_inner();
        let org = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        let principal = caller.authorize(&org.org)?;
        if req.descriptors.is_empty() || req.descriptors.len() > descriptors::MAX_DESCRIPTORS {
            return Err(Error::from(FieldViolation::new(
                "descriptors",
                format!("1 to {} descriptors", descriptors::MAX_DESCRIPTORS),
            ))
            .into());
        }
        let hits = if req.hits_addend == 0 {
            1
        } else {
            u64::from(req.hits_addend)
        };
        let mut asked = Vec::with_capacity(req.descriptors.len());
        for (i, d) in req.descriptors.iter().enumerate() {
            let entries: Vec<(&str, &str)> = d
                .entries
                .iter()
                .map(|e| (e.key.as_str(), e.value.as_str()))
                .collect();
            descriptors::validate(&format!("descriptors[{i}]"), &entries).map_err(Error::from)?;
            asked.push(entries);
        }
        let mut statuses = Vec::with_capacity(asked.len());
        let mut over = false;
        for entries in &asked {
            let verdict = descriptors::check(
                &self.limiter,
                &org.org,
                Some(principal),
                entries,
                hits,
                req.dry_run,
            )
            .await;
            if let Some(policy) = &verdict.unavailable {
                return Err(crate::ratelimit::refusal::Refusal::Unavailable {
                    policy: policy.to_string(),
                }
                .into());
            }
            over |= !verdict.allowed();
            statuses.push(status_of(&verdict));
        }
        Ok(Response::new(CheckRateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
        }))
    }
}

/// One descriptor's answer: the deciding rate outcome (refusing first,
/// else the enforced one, else a shadow one), and every quota.
fn status_of(verdict: &Verdict) -> RateLimitStatus {
    let rates = || verdict.outcomes.iter().filter(|o| !o.is_quota());
    let deciding: Option<&Outcome> = rates()
        .find(|o| o.refuses())
        .or_else(|| rates().find(|o| !o.shadow))
        .or_else(|| rates().next());
    let code = if verdict.allowed() {
        Code::Ok
    } else {
        Code::OverLimit
    };
    let now = now_us();
    let quotas = verdict
        .outcomes
        .iter()
        .filter(|o| o.is_quota())
        .map(|o| QuotaStatus {
            policy: o.policy.to_string(),
            limit: i64::try_from(o.limit.limit).unwrap_or(i64::MAX),
            remaining: i64::try_from(o.decision.remaining).unwrap_or(i64::MAX),
            reset_time: Some(timestamp(
                i64::try_from(now + u64::try_from(o.decision.reset_after.as_micros()).unwrap_or(0))
                    .unwrap_or(i64::MAX),
            )),
            exceeded: !o.decision.allowed,
        })
        .collect();
    let mut status = RateLimitStatus {
        code: code as i32,
        quotas,
        ..RateLimitStatus::default()
    };
    if let Some(o) = deciding {
        let d = &o.decision;
        status.policy = o.policy.to_string();
        status.limit = i64::try_from(o.limit.limit).unwrap_or(i64::MAX);
        status.period = prost_types::Duration::try_from(o.limit.period).ok();
        status.remaining = i64::try_from(d.remaining).unwrap_or(i64::MAX);
        status.reset_after = prost_types::Duration::try_from(d.reset_after).ok();
        status.retry_after = prost_types::Duration::try_from(d.retry_after).ok();
        status.shadow = o.shadow;
        if o.shadow && !d.allowed {
            // Reported, never enforced: the code stays what the enforced
            // policies say.
            status.code = code as i32;
        }
    }
    status
}
