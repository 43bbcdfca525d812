//! What `GetUsage` asks of the stored counts and what it gets back: the
//! rules of a range, and bucketing by granularity.

use crate::domain::FieldViolation;

/// Microseconds in an hour.
pub const HOUR_MICROS: i64 = 3_600_000_000;
/// Microseconds in a day.
pub const DAY_MICROS: i64 = 24 * HOUR_MICROS;
/// The longest range one request may read.
pub const MAX_RANGE_MICROS: i64 = 31 * DAY_MICROS;
/// The most records one answer holds: a minute-by-minute month of many
/// keys would not fit a gRPC message, so such a request is refused and
/// asked to narrow instead of being cut silently.
pub const MAX_RECORDS: usize = 10_000;

/// How stored minutes are grouped into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One record per minute (as stored).
    Minute,
    /// Per UTC hour.
    Hour,
    /// Per UTC day.
    Day,
    /// One record per principal, key and method over the whole range.
    Total,
}

impl Granularity {
    /// Every granularity, as the request spells them.
    pub const ALL: [Granularity; 4] = [
        Granularity::Minute,
        Granularity::Hour,
        Granularity::Day,
        Granularity::Total,
    ];

    /// The request's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Minute => "minute",
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Total => "total",
        }
    }

    /// Reads the request's field; empty means `hour`, as the proto says.
    pub fn parse(field: &str, s: &str) -> Result<Self, FieldViolation> {
        if s.is_empty() {
            return Ok(Granularity::Hour);
        }
        Granularity::ALL
            .into_iter()
            .find(|g| g.as_str() == s)
            .ok_or_else(|| FieldViolation::new(field, "must be one of minute, hour, day, total"))
    }

    /// The width of a bucket; `None` for `total`.
    pub fn width_micros(self) -> Option<i64> {
        match self {
            Granularity::Minute => Some(super::MINUTE_MICROS),
            Granularity::Hour => Some(HOUR_MICROS),
            Granularity::Day => Some(DAY_MICROS),
            Granularity::Total => None,
        }
    }
}

/// A checked GetUsage request: the store reads exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// The organization whose calls are read.
    pub org: String,
    /// Inclusive, on a minute.
    pub start: i64,
    /// Exclusive; after `start`, at most [`MAX_RANGE_MICROS`] later.
    pub end: i64,
    /// Only this principal's calls (its resource name).
    pub principal: Option<String>,
    /// Only calls with this API key (its resource name).
    pub api_key: Option<String>,
    /// Only calls to this request path.
    pub method: Option<String>,
    /// How minutes are grouped.
    pub granularity: Granularity,
}

/// One aggregated record, as the store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The bucket's start (aligned to its width, in UTC); for `total`, the
    /// range's start.
    pub start: i64,
    /// The principal's resource name.
    pub principal: String,
    /// The API key's resource name, or empty.
    pub api_key: String,
    /// The request path.
    pub method: String,
    /// Calls, refused or not.
    pub calls: i64,
    /// Calls refused by a rate limit.
    pub refused: i64,
    /// Cost units charged.
    pub cost: i64,
}

/// Checks a method filter: a request path, `/package.Service/Method`.
pub fn method(field: &str, s: &str) -> Result<(), FieldViolation> {
    let well_formed = s.len() <= 256
        && s.strip_prefix('/').is_some_and(|rest| {
            rest.split_once('/').is_some_and(|(service, name)| {
                service.contains('.')
                    && !name.is_empty()
                    && !name.contains('/')
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/'))
            })
        });
    if well_formed {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            "must be a request path such as /tollgate.v1.UserService/GetUser",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granularities() {
        assert_eq!(Granularity::parse("g", "").unwrap(), Granularity::Hour);
        for g in Granularity::ALL {
            assert_eq!(Granularity::parse("g", g.as_str()).unwrap(), g);
        }
        for bad in ["Hour", "week", "minutes", " day"] {
            assert_eq!(Granularity::parse("g", bad).unwrap_err().field, "g");
        }
        assert_eq!(Granularity::Day.width_micros(), Some(86_400_000_000));
        assert_eq!(Granularity::Total.width_micros(), None);
    }

    #[test]
    fn method_paths() {
        assert!(method("m", "/tollgate.v1.UserService/GetUser").is_ok());
        assert!(method("m", "/grpc.health.v1.Health/Check").is_ok());
        for bad in [
            "tollgate.v1.UserService/GetUser",
            "/tollgate.v1.UserService/",
            "/UserService/GetUser",
            "/tollgate.v1.UserService/Get/User",
            "/tollgate.v1.UserService/Get User",
            "",
        ] {
            assert!(method("m", bad).is_err(), "{bad}");
        }
    }
}
