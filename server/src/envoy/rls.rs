//! Envoy's global rate-limit service
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`): Envoy
//! sends a domain and descriptors for each request; policies with
//! descriptor selectors decide.
//!
//! The domain names the organization whose policies apply (`acme` or
//! `organizations/acme`). Each descriptor is decided on its own, like
//! Envoy's reference service: the most specific matching enforced policy
//! (plus every matching quota and shadow policy), charged `hits_addend`
//! (the descriptor's own, else the request's, else 1). A descriptor no
//! policy matches is OK without a limit.

use tollgate::envoy::{
    config::core::v3::HeaderValue as EnvoyHeader,
    service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse,
        rate_limit_response::{Code, DescriptorStatus, RateLimit, rate_limit::Unit},
        rate_limit_service_server::RateLimitService,
    },
};
use tonic::{Request, Response, Status};

use crate::{
    domain::{Error, FieldViolation},
    ratelimit::{Algorithm, Outcome, QuotaWindow, RateLimiter, Verdict, descriptors, headers},
};

/// The `RateLimitService` (Envoy's).
pub struct Rls {
    limiter: RateLimiter,
}

impl Rls {
    /// Decides with `limiter`.
    pub fn new(limiter: RateLimiter) -> Self {
        Self { limiter }
    }
}

#[tonic::async_trait]
impl RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let req = request.into_inner();
        let org = req
            .domain
            .strip_prefix("organizations/")
            .unwrap_or(&req.domain);
        if org.is_empty() {
            return Err(FieldViolation::new("domain", "must name an organization").into_status());
        }
        if req.descriptors.len() > descriptors::MAX_DESCRIPTORS {
            return Err(FieldViolation::new(
                "descriptors",
                format!("at most {} descriptors", descriptors::MAX_DESCRIPTORS),
            )
            .into_status());
        }
        let default_hits = if req.hits_addend == 0 {
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
            descriptors::validate(&format!("descriptors[{i}]"), &entries)
                .map_err(FieldViolation::into_status)?;
            asked.push((entries, d.hits_addend.unwrap_or(default_hits)));
        }
        let mut statuses = Vec::with_capacity(asked.len());
        let mut over = false;
        let mut headline = Verdict::default();
        for (entries, hits) in &asked {
            let verdict = descriptors::check(&self.limiter, org, None, entries, *hits, false).await;
            over |= !verdict.allowed();
            statuses.push(status_of(&verdict));
            headline.outcomes.extend(verdict.outcomes.iter().cloned());
            headline.unavailable = headline.unavailable.or(verdict.unavailable);
        }
        let mut response_headers = Vec::new();
        if let Some((policy, state)) = headers::values(&headline) {
            response_headers.push(header(headers::RATELIMIT_POLICY, &policy));
            response_headers.push(header(headers::RATELIMIT, &state));
        }
        if over && let Some(retry) = headers::retry_after(&headline) {
            response_headers.push(header("retry-after", &retry));
        }
        Ok(Response::new(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            response_headers_to_add: response_headers,
            ..RateLimitResponse::default()
        }))
    }
}

/// A descriptor's status: the enforced outcome that decides (the first
/// refusing one, else the enforced rate limit, else the first quota).
fn status_of(verdict: &Verdict) -> DescriptorStatus {
    let deciding: Option<&Outcome> = verdict
        .outcomes
        .iter()
        .find(|o| o.refuses())
        .or_else(|| verdict.outcomes.iter().find(|o| !o.shadow));
    let code = if verdict.allowed() {
        Code::Ok
    } else {
        Code::OverLimit
    };
    let Some(o) = deciding else {
        return DescriptorStatus {
            code: code as i32,
            ..DescriptorStatus::default()
        };
    };
    let (requests_per_unit, unit) = envoy_rate(o);
    DescriptorStatus {
        code: code as i32,
        current_limit: Some(RateLimit {
            name: o.policy.to_string(),
            requests_per_unit,
            unit: unit as i32,
        }),
        limit_remaining: u32::try_from(o.decision.remaining).unwrap_or(u32::MAX),
        duration_until_reset: prost_types::Duration::try_from(o.decision.reset_after).ok(),
        ..DescriptorStatus::default()
    }
}

/// The limit in Envoy's terms (a count per unit).
fn envoy_rate(o: &Outcome) -> (u32, Unit) {
    let per = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    match o.limit.algorithm {
        Algorithm::Quota(QuotaWindow::Day) => (per(o.limit.limit), Unit::Day),
        Algorithm::Quota(QuotaWindow::Month) => (per(o.limit.limit), Unit::Month),
        _ => {
            let unit = match o.limit.period.as_secs() {
                0 | 1 => Unit::Second,
                60 => Unit::Minute,
                3600 => Unit::Hour,
                86_400 => Unit::Day,
                _ => Unit::Unknown,
            };
            (per(o.limit.limit), unit)
        }
    }
}

fn header(key: &str, value: &http::HeaderValue) -> EnvoyHeader {
    EnvoyHeader {
        key: key.to_owned(),
        value: value.to_str().unwrap_or("").to_owned(),
        raw_value: Vec::new(),
    }
}

impl FieldViolation {
    /// As an INVALID_ARGUMENT status.
    fn into_status(self) -> Status {
        Status::from(Error::from(self))
    }
}
