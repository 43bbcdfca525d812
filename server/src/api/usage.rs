//! `tollgate.v1.UsageService`: what an organization's principals called.
//!
//! Figures come from the database only: each replica flushes its counts
//! every `--usage-flush-interval` (10 s by default), so they lag the calls
//! by up to that much; what a replica still holds in memory is not read.

use tollgate::tollgate::v1::{
    GetUsageRequest, GetUsageResponse, UsageRecord, usage_service_server::UsageService,
};
use tonic::{Request, Response, Status};

use super::{caller, micros};
use crate::{
    domain::{
        Error, FieldViolation, Violations,
        names::{ApiKeyName, OrgName, PrincipalName},
        now_micros, timestamp,
    },
    store::Store,
    usage::{
        Granularity, UsageQuery, UsageRow,
        query::{self, HOUR_MICROS, MAX_RANGE_MICROS, MAX_RECORDS},
        recorder::minute_of,
    },
};

/// The `UsageService` implementation.
pub struct UsageReader {
    store: Store,
}

impl UsageReader {
    /// Serves the usage `store` holds.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

/// A timestamp field's microseconds, or its violation recorded in `v`.
fn time(v: &mut Violations, field: &str, ts: &prost_types::Timestamp) -> Option<i64> {
    match micros(field, ts) {
        Ok(t) => Some(t),
        Err(Error::InvalidArgument(e)) => {
            v.0.extend(e.0);
            None
        }
        Err(_) => {
            v.add(field, "is not a valid timestamp");
            None
        }
    }
}

/// A name filter that must name something of `org`.
fn in_org(field: &str, name_org: &str, org: &str) -> Result<(), FieldViolation> {
    if name_org == org {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be in organizations/{org}, the parent"),
        ))
    }
}

/// Checks the request against the parent `org` and makes the query.
fn query(org: String, req: GetUsageRequest, now: i64) -> Result<UsageQuery, Error> {
    let mut v = Violations::default();
    let end = match &req.end_time {
        None => Some(now),
        Some(ts) => time(&mut v, "end_time", ts),
    };
    let start = match &req.start_time {
        None => end.map(|e| e - HOUR_MICROS),
        Some(ts) => time(&mut v, "start_time", ts),
    };
    if let (Some(start), Some(end)) = (start, end) {
        // Name the field the caller set: with end_time unset (now), a
        // start_time in the future or too far back is what is wrong.
        let (field, too_late, too_long) = if req.end_time.is_some() {
            (
                "end_time",
                "must be after start_time",
                "must be at most 31 days after start_time",
            )
        } else {
            (
                "start_time",
                "must be in the past when end_time is unset (now)",
                "must be at most 31 days ago when end_time is unset (now)",
            )
        };
        if end <= start {
            v.add(field, too_late);
        } else if end - start > MAX_RANGE_MICROS {
            v.add(field, too_long);
        }
    }
    let granularity = v.take(Granularity::parse("granularity", &req.granularity));
    let principal = (!req.principal.is_empty()).then_some(req.principal);
    if let Some(p) = &principal
        && let Some(name) = v.take(PrincipalName::parse_any("principal", p))
    {
        v.check(in_org("principal", &name.org, &org));
    }
    let api_key = (!req.api_key.is_empty()).then_some(req.api_key);
    if let Some(k) = &api_key
        && let Some(name) = v.take(ApiKeyName::parse("api_key", k))
    {
        v.check(in_org("api_key", &name.owner.org, &org));
    }
    let method = (!req.method.is_empty()).then_some(req.method);
    if let Some(m) = &method {
        v.check(query::method("method", m));
    }
    v.into_result()?;
    match (start, end, granularity) {
        (Some(start), Some(end), Some(granularity)) => Ok(UsageQuery {
            org,
            start: minute_of(start),
            end,
            principal,
            api_key,
            method,
            granularity,
        }),
        _ => Err(Error::Internal(
            "usage query checked without its fields".into(),
        )),
    }
}

fn record(row: UsageRow) -> UsageRecord {
    UsageRecord {
        start_time: Some(timestamp(row.start)),
        principal: row.principal,
        api_key: row.api_key,
        method: row.method,
        calls: row.calls,
        refused: row.refused,
        cost: row.cost,
    }
}

#[tonic::async_trait]
impl UsageService for UsageReader {
    async fn get_usage(
        &self,
        mut req: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let caller = caller(&mut req)?;
        let req = req.into_inner();
        let parent = OrgName::parse("parent", &req.parent).map_err(Error::from)?;
        caller.authorize(&parent.org)?;
        let query = query(parent.org, req, now_micros())?;
        // NOT_FOUND rather than an empty answer for an organization that
        // does not exist (only a platform admin gets this far for one).
        self.store.get_organization(&query.org).await?;
        let rows = self.store.read_usage(query).await?;
        if rows.len() > MAX_RECORDS {
            return Err(Error::invalid(
                "granularity",
                format!(
                    "the range holds more than {MAX_RECORDS} records at this granularity; \
                     narrow the range or the filters, or choose a coarser granularity"
                ),
            )
            .into());
        }
        let total_calls = rows.iter().map(|r| r.calls).fold(0i64, i64::saturating_add);
        let total_cost = rows.iter().map(|r| r.cost).fold(0i64, i64::saturating_add);
        Ok(Response::new(GetUsageResponse {
            records: rows.into_iter().map(record).collect(),
            total_calls,
            total_cost,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::MINUTE_MICROS;

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    fn fields(e: Error) -> Vec<String> {
        match e {
            Error::InvalidArgument(v) => v.0.into_iter().map(|f| f.field).collect(),
            other => panic!("not invalid: {other:?}"),
        }
    }

    #[test]
    fn defaults_are_the_last_hour_by_hour() {
        let q = query("acme".into(), GetUsageRequest::default(), T0 + 30_000_000).unwrap();
        assert_eq!(q.end, T0 + 30_000_000);
        assert_eq!(q.start, T0 - HOUR_MICROS, "rounded down to the minute");
        assert_eq!(q.granularity, Granularity::Hour);
        assert_eq!((q.principal, q.api_key, q.method), (None, None, None));
    }

    #[test]
    fn bad_requests_name_their_fields() {
        let at = |m: i64| Some(timestamp(m));
        let bad = GetUsageRequest {
            start_time: at(T0),
            end_time: at(T0 + MAX_RANGE_MICROS + 1),
            granularity: "week".into(),
            principal: "organizations/beta/users/u".into(),
            api_key: "organizations/acme/users/u/keys/k".into(),
            method: "GetUser".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(query("acme".into(), bad, T0).unwrap_err()),
            ["end_time", "granularity", "principal", "api_key", "method"]
        );
        let backwards = GetUsageRequest {
            start_time: at(T0),
            end_time: at(T0),
            ..Default::default()
        };
        assert_eq!(
            fields(query("acme".into(), backwards, T0).unwrap_err()),
            ["end_time"]
        );
        let invalid = GetUsageRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: -1,
                nanos: 0,
            }),
            api_key: "organizations/beta/users/u/apiKeys/k".into(),
            ..Default::default()
        };
        assert_eq!(
            fields(query("acme".into(), invalid, T0).unwrap_err()),
            ["start_time", "api_key"]
        );
        // With end_time unset (now), start_time is at fault.
        let ahead = GetUsageRequest {
            start_time: at(T0 + MINUTE_MICROS),
            ..Default::default()
        };
        assert_eq!(
            fields(query("acme".into(), ahead, T0).unwrap_err()),
            ["start_time"]
        );
        let long_ago = GetUsageRequest {
            start_time: at(T0 - MAX_RANGE_MICROS - 1),
            ..Default::default()
        };
        assert_eq!(
            fields(query("acme".into(), long_ago, T0).unwrap_err()),
            ["start_time"]
        );
        // Exactly 31 days is allowed.
        let month = GetUsageRequest {
            start_time: at(T0),
            end_time: at(T0 + MAX_RANGE_MICROS),
            granularity: "day".into(),
            principal: "organizations/acme/serviceAccounts/bot".into(),
            api_key: "organizations/acme/serviceAccounts/bot/apiKeys/k".into(),
            method: "/tollgate.v1.UserService/GetUser".into(),
            ..Default::default()
        };
        let q = query("acme".into(), month, T0).unwrap();
        assert_eq!(q.granularity, Granularity::Day);
        assert_eq!(
            q.method.as_deref(),
            Some("/tollgate.v1.UserService/GetUser")
        );
    }
}
