//! The rules of rate-limit policies: what a policy may say (each check
//! names the full request field it refuses), and the compiled
//! [`RateLimitRule`] the enforcement engine matches calls against.
//!
//! Decisions, beyond what the proto says:
//! - A method selector is a full path that Tollgate serves, or a prefix
//!   ending in `*` that starts with `/` (`/tollgate.v1.UserService/*`,
//!   `/tollgate.v1.*`, `/*`). A prefix need not match a served method
//!   today: services may be added later. Anything else, such as spaces, a
//!   `*` that is not last, or no leading slash, is unparseable.
//! - Credentials are never rate-limit keys: the headers `authorization`,
//!   `proxy-authorization`, `x-api-key` and `cookie` cannot be selected,
//!   or every distinct secret would get (and log) its own counter.
//! - Unset enums take their documented defaults (GCRA, FAIL_OPEN,
//!   PRINCIPAL) and are stored that way, so reads show what applies.
//! - `burst` set together with SLIDING_WINDOW is accepted and unused (the
//!   algorithm may be switched back to GCRA by a later update).
//! - Map entries are named like the JSON decoder names them:
//!   `rate_limit_policy.selector.headers.x-tenant`.

use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use super::{
    FieldViolation, Violations,
    names::{ApiKeyName, ClientName, PrincipalName},
    validate::{self, MAX_DISPLAY_NAME},
};
use crate::ratelimit::{Algorithm, Limit, QuotaWindow};

/// Most entries in `selector.headers`, and in `selector.descriptors`.
pub const MAX_SELECTOR_ENTRIES: usize = 8;
/// Longest header name or descriptor key, in bytes.
pub const MAX_ENTRY_KEY_LEN: usize = 128;
/// Longest header or descriptor value to match, in bytes.
pub const MAX_ENTRY_VALUE_LEN: usize = 256;
/// Longest method selector, in bytes.
pub const MAX_METHOD_LEN: usize = 256;
/// Headers that carry credentials, which never key a counter.
pub const CREDENTIAL_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "cookie",
];

/// Reads a proto enum number: `0` is `default`, a known number its value,
/// anything else a violation listing `names`.
fn enumerated<T>(
    field: &str,
    code: i32,
    default: T,
    from_code: fn(i32) -> Option<T>,
    names: &str,
) -> Result<T, FieldViolation> {
    if code == 0 {
        return Ok(default);
    }
    from_code(code).ok_or_else(|| {
        FieldViolation::new(
            field,
            format!("unknown value {code}; expected one of {names}"),
        )
    })
}

/// `RateLimit.Period`: the unit of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RatePeriod {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
    /// Per day (a rolling 24 hours, unlike a quota's calendar day).
    Day,
}

impl RatePeriod {
    /// The stored (and proto) number.
    pub fn code(self) -> i16 {
        match self {
            RatePeriod::Second => 1,
            RatePeriod::Minute => 2,
            RatePeriod::Hour => 3,
            RatePeriod::Day => 4,
        }
    }

    /// The period of a stored or requested number; `None` for anything
    /// else (0 included: a rate's period is required).
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(RatePeriod::Second),
            2 => Some(RatePeriod::Minute),
            3 => Some(RatePeriod::Hour),
            4 => Some(RatePeriod::Day),
            _ => None,
        }
    }

    /// Its length.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            RatePeriod::Second => 1,
            RatePeriod::Minute => 60,
            RatePeriod::Hour => 3600,
            RatePeriod::Day => 86_400,
        })
    }
}

/// `RateLimitQuota.Period`: the calendar window of a quota (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    /// From midnight UTC to the next.
    Day,
    /// From the first of the month to the next first.
    Month,
}

impl QuotaPeriod {
    /// The stored (and proto) number.
    pub fn code(self) -> i16 {
        match self {
            QuotaPeriod::Day => 1,
            QuotaPeriod::Month => 2,
        }
    }

    /// The period of a stored or requested number; `None` for anything
    /// else (0 included: a quota's period is required).
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(QuotaPeriod::Day),
            2 => Some(QuotaPeriod::Month),
            _ => None,
        }
    }

    /// The limiter's window.
    pub fn window(self) -> QuotaWindow {
        match self {
            QuotaPeriod::Day => QuotaWindow::Day,
            QuotaPeriod::Month => QuotaWindow::Month,
        }
    }

    /// A nominal length (a day, 30 days), for headers that want one; the
    /// calendar decides when a quota resets.
    pub fn nominal(self) -> Duration {
        Duration::from_secs(match self {
            QuotaPeriod::Day => 86_400,
            QuotaPeriod::Month => 30 * 86_400,
        })
    }
}

/// `RateLimitPolicy.Algorithm`: how the rate (not the quota) counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateAlgorithm {
    /// GCRA, the default.
    Gcra,
    /// Sliding window: a hard count per rolling period.
    SlidingWindow,
}

impl RateAlgorithm {
    /// The stored (and proto) number.
    pub fn code(self) -> i16 {
        match self {
            RateAlgorithm::Gcra => 1,
            RateAlgorithm::SlidingWindow => 2,
        }
    }

    /// The algorithm of a stored or requested number (not 0).
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(RateAlgorithm::Gcra),
            2 => Some(RateAlgorithm::SlidingWindow),
            _ => None,
        }
    }

    /// Reads the request's `algorithm`; unset is GCRA.
    pub fn parse(field: &str, code: i32) -> Result<Self, FieldViolation> {
        enumerated(
            field,
            code,
            RateAlgorithm::Gcra,
            Self::from_code,
            "GCRA, SLIDING_WINDOW",
        )
    }

    /// The limiter's algorithm.
    pub fn algorithm(self) -> Algorithm {
        match self {
            RateAlgorithm::Gcra => Algorithm::Gcra,
            RateAlgorithm::SlidingWindow => Algorithm::SlidingWindow,
        }
    }
}

/// `RateLimitPolicy.FailureMode`: what a decision does when the shared
/// store does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureMode {
    /// Decide on the replica's local limits; the default.
    Open,
    /// Refuse with UNAVAILABLE.
    Closed,
}

impl FailureMode {
    /// The stored (and proto) number.
    pub fn code(self) -> i16 {
        match self {
            FailureMode::Open => 1,
            FailureMode::Closed => 2,
        }
    }

    /// The mode of a stored or requested number (not 0).
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(FailureMode::Open),
            2 => Some(FailureMode::Closed),
            _ => None,
        }
    }

    /// Reads the request's `failure_mode`; unset is FAIL_OPEN.
    pub fn parse(field: &str, code: i32) -> Result<Self, FieldViolation> {
        enumerated(
            field,
            code,
            FailureMode::Open,
            Self::from_code,
            "FAIL_OPEN, FAIL_CLOSED",
        )
    }
}

/// `RateLimitPolicy.KeyBy`: whose calls share one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyBy {
    /// One counter per principal; the default.
    Principal,
    /// One per credential (API key, or OAuth client for tokens).
    Credential,
    /// One for the whole organization.
    Organization,
    /// One per source address.
    SourceAddress,
    /// One per distinct set of matched header or descriptor values.
    Descriptor,
}

impl KeyBy {
    /// The stored (and proto) number.
    pub fn code(self) -> i16 {
        match self {
            KeyBy::Principal => 1,
            KeyBy::Credential => 2,
            KeyBy::Organization => 3,
            KeyBy::SourceAddress => 4,
            KeyBy::Descriptor => 5,
        }
    }

    /// The key of a stored or requested number (not 0).
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(KeyBy::Principal),
            2 => Some(KeyBy::Credential),
            3 => Some(KeyBy::Organization),
            4 => Some(KeyBy::SourceAddress),
            5 => Some(KeyBy::Descriptor),
            _ => None,
        }
    }

    /// Reads the request's `key_by`; unset is PRINCIPAL.
    pub fn parse(field: &str, code: i32) -> Result<Self, FieldViolation> {
        enumerated(
            field,
            code,
            KeyBy::Principal,
            Self::from_code,
            "PRINCIPAL, CREDENTIAL, ORGANIZATION, SOURCE_ADDRESS, DESCRIPTOR",
        )
    }
}

/// Which methods a policy matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MethodMatch {
    /// Every method (no method selector, or `/*`).
    Any,
    /// One method: `/tollgate.v1.UserService/GetUser`.
    Exact(Box<str>),
    /// Every method whose path starts with this (the selector without its
    /// `*`): `/tollgate.v1.UserService/`, `/tollgate.v1.`.
    Prefix(Box<str>),
}

impl MethodMatch {
    /// Parses a selector's syntax: empty or `/*` is [`MethodMatch::Any`],
    /// `/{service}/{method}` exact, a `/`-led prefix ending in `*` a
    /// prefix; `None` for anything else. Whether an exact path is served
    /// is the caller's check ([`method`]).
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || s == "/*" {
            return Some(MethodMatch::Any);
        }
        if s.len() > MAX_METHOD_LEN || !s.starts_with('/') {
            return None;
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        let well_formed = body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/'));
        if !well_formed {
            return None;
        }
        // `/service/method`: no empty segment, no third one.
        let segments: Vec<&str> = body[1..].split('/').collect();
        if prefix {
            // The last segment of a prefix may be empty (`/svc/*`); the
            // others may not.
            let (last, rest) = segments.split_last()?;
            let ok = segments.len() <= 2
                && rest.iter().all(|s| !s.is_empty())
                && (segments.len() == 2 || !last.is_empty());
            ok.then(|| MethodMatch::Prefix(body.into()))
        } else {
            (segments.len() == 2 && segments.iter().all(|s| !s.is_empty()))
                .then(|| MethodMatch::Exact(body.into()))
        }
    }

    /// Whether a call to `path` (`/package.Service/Method`) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            MethodMatch::Any => true,
            MethodMatch::Exact(p) => path == &**p,
            MethodMatch::Prefix(p) => path.starts_with(&**p),
        }
    }
}

/// Checks a method selector; returns it as stored (`None` for any
/// method). An exact path must be one `served` knows.
pub fn method(
    field: &str,
    s: &str,
    served: &dyn Fn(&str) -> bool,
) -> Result<Option<String>, FieldViolation> {
    match MethodMatch::parse(s) {
        None => Err(FieldViolation::new(
            field,
            "unparseable method selector; expected a full method path \
             (/tollgate.v1.UserService/GetUser) or a prefix ending in * that starts \
             with / (/tollgate.v1.UserService/*, /tollgate.v1.*, /*)",
        )),
        Some(MethodMatch::Any) if s.is_empty() => Ok(None),
        Some(MethodMatch::Exact(p)) if !served(&p) => Err(FieldViolation::new(
            field,
            format!("{p} is not a method this server serves"),
        )),
        Some(_) => Ok(Some(s.to_owned())),
    }
}

/// A policy's selector as sent, the way it is stored once checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// A method path or prefix; `None` for any.
    pub method: Option<String>,
    /// A user's or service account's resource name.
    pub principal: Option<String>,
    /// An API key's resource name.
    pub api_key: Option<String>,
    /// An OAuth client's resource name.
    pub oauth_client: Option<String>,
    /// Lower-case header names and values; an empty value matches any.
    pub headers: BTreeMap<String, String>,
    /// Descriptor keys and values; an empty value matches any.
    pub descriptors: BTreeMap<String, String>,
}

impl Selector {
    /// Whether it selects by header or descriptor values (what
    /// `KeyBy::Descriptor` keys on).
    pub fn has_entries(&self) -> bool {
        !self.headers.is_empty() || !self.descriptors.is_empty()
    }
}

/// A selector as the request holds it (an empty string is unset).
#[derive(Debug, Clone, Copy)]
pub struct SelectorInput<'a> {
    /// `selector.method`.
    pub method: &'a str,
    /// `selector.principal`.
    pub principal: &'a str,
    /// `selector.api_key`.
    pub api_key: &'a str,
    /// `selector.oauth_client`.
    pub oauth_client: &'a str,
    /// `selector.headers`.
    pub headers: &'a HashMap<String, String>,
    /// `selector.descriptors`.
    pub descriptors: &'a HashMap<String, String>,
}

/// Checks a selector of a policy of `org`, recording a violation per bad
/// field (`{field}.method`, `{field}.headers.{name}`, …); returns what
/// passed.
pub fn selector(
    v: &mut Violations,
    field: &str,
    org: &str,
    input: &SelectorInput<'_>,
    served: &dyn Fn(&str) -> bool,
) -> Selector {
    let method = v
        .take(method(&format!("{field}.method"), input.method, served))
        .flatten();
    let principal = optional(v, input.principal, |s| {
        let f = format!("{field}.principal");
        let n = PrincipalName::parse_any(&f, s)?;
        same_org(&f, org, &n.org, "a user or service account")?;
        Ok(n.to_string())
    });
    let api_key = optional(v, input.api_key, |s| {
        let f = format!("{field}.api_key");
        let n = ApiKeyName::parse(&f, s)?;
        same_org(&f, org, &n.owner.org, "an API key")?;
        Ok(n.to_string())
    });
    let oauth_client = optional(v, input.oauth_client, |s| {
        let f = format!("{field}.oauth_client");
        let n = ClientName::parse(&f, s)?;
        same_org(&f, org, &n.org, "an OAuth client")?;
        Ok(n.to_string())
    });
    let headers = entries(v, &format!("{field}.headers"), input.headers, header_entry);
    let descriptors = entries(
        v,
        &format!("{field}.descriptors"),
        input.descriptors,
        descriptor_entry,
    );
    Selector {
        method,
        principal,
        api_key,
        oauth_client,
        headers,
        descriptors,
    }
}

fn optional(
    v: &mut Violations,
    s: &str,
    check: impl FnOnce(&str) -> Result<String, FieldViolation>,
) -> Option<String> {
    if s.is_empty() { None } else { v.take(check(s)) }
}

fn same_org(field: &str, org: &str, of: &str, what: &str) -> Result<(), FieldViolation> {
    if of == org {
        Ok(())
    } else {
        Err(FieldViolation::new(
            field,
            format!("must be {what} of organizations/{org}, the policy's organization"),
        ))
    }
}

/// Checks map entries with `check(key, value)`, naming a bad one
/// `{field}.{key}`; returns the good ones, sorted.
fn entries(
    v: &mut Violations,
    field: &str,
    map: &HashMap<String, String>,
    check: fn(&str, &str) -> Result<(), String>,
) -> BTreeMap<String, String> {
    if map.len() > MAX_SELECTOR_ENTRIES {
        v.add(field, format!("at most {MAX_SELECTOR_ENTRIES} entries"));
        return BTreeMap::new();
    }
    let mut sorted: Vec<(&String, &String)> = map.iter().collect();
    sorted.sort();
    let mut out = BTreeMap::new();
    for (k, val) in sorted {
        match check(k, val) {
            Ok(()) => {
                out.insert(k.clone(), val.clone());
            }
            Err(why) => v.add(format!("{field}.{k}"), why),
        }
    }
    out
}

fn header_entry(name: &str, value: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_ENTRY_KEY_LEN {
        return Err(format!(
            "a header name must be 1 to {MAX_ENTRY_KEY_LEN} characters"
        ));
    }
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err("is not a valid HTTP header name".into());
    }
    if name.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err("header names are matched in lower case; write it in lower case".into());
    }
    if CREDENTIAL_HEADERS.contains(&name) {
        return Err(format!(
            "{name} carries credentials, which are never rate-limit keys; select the \
             principal, api_key or oauth_client instead"
        ));
    }
    entry_value(value)?;
    if http::HeaderValue::from_str(value).is_err() {
        return Err("the value is not a valid HTTP header value".into());
    }
    Ok(())
}

fn descriptor_entry(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_ENTRY_KEY_LEN {
        return Err(format!(
            "a descriptor key must be 1 to {MAX_ENTRY_KEY_LEN} characters"
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("a descriptor key must not contain control characters".into());
    }
    entry_value(value)
}

fn entry_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_ENTRY_VALUE_LEN {
        return Err(format!(
            "the value must be at most {MAX_ENTRY_VALUE_LEN} bytes"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err("the value must not contain control characters".into());
    }
    Ok(())
}

/// A checked rate: `limit` per `period`, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Units per period; at least 1.
    pub limit: i64,
    /// The period.
    pub period: RatePeriod,
    /// At least 1 when set; `None` means `limit`.
    pub burst: Option<i64>,
}

impl Rate {
    /// The limiter's limit under `algorithm`.
    pub fn to_limit(self, algorithm: RateAlgorithm) -> Limit {
        let limit = positive(self.limit);
        Limit {
            algorithm: algorithm.algorithm(),
            limit,
            period: self.period.duration(),
            burst: self.burst.map_or(limit, positive),
        }
    }
}

/// Checks a rate (`{field}.limit`, `{field}.period`, `{field}.burst`).
pub fn rate(
    v: &mut Violations,
    field: &str,
    limit: i64,
    period: i32,
    burst: Option<i64>,
) -> Option<Rate> {
    let limit = v.take(at_least_one(&format!("{field}.limit"), limit, "the limit"));
    let period = v.take(RatePeriod::from_code(period).ok_or_else(|| {
        FieldViolation::new(
            format!("{field}.period"),
            "required; one of SECOND, MINUTE, HOUR, DAY",
        )
    }));
    let burst = match burst {
        None => Some(None),
        Some(b) => v
            .take(at_least_one(&format!("{field}.burst"), b, "burst"))
            .map(Some),
    };
    Some(Rate {
        limit: limit?,
        period: period?,
        burst: burst?,
    })
}

/// A checked quota: `limit` units per calendar `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Units per window; at least 1.
    pub limit: i64,
    /// The window.
    pub period: QuotaPeriod,
}

impl Quota {
    /// The limiter's limit.
    pub fn to_limit(self) -> Limit {
        let limit = positive(self.limit);
        Limit {
            algorithm: Algorithm::Quota(self.period.window()),
            limit,
            period: self.period.nominal(),
            burst: limit,
        }
    }
}

/// Checks a quota (`{field}.limit`, `{field}.period`).
pub fn quota(v: &mut Violations, field: &str, limit: i64, period: i32) -> Option<Quota> {
    let limit = v.take(at_least_one(&format!("{field}.limit"), limit, "the limit"));
    let period = v.take(QuotaPeriod::from_code(period).ok_or_else(|| {
        FieldViolation::new(format!("{field}.period"), "required; one of DAY, MONTH")
    }));
    Some(Quota {
        limit: limit?,
        period: period?,
    })
}

fn at_least_one(field: &str, n: i64, what: &str) -> Result<i64, FieldViolation> {
    if n >= 1 {
        Ok(n)
    } else {
        Err(FieldViolation::new(
            field,
            format!("{what} must be at least 1 (got {n})"),
        ))
    }
}

fn positive(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0).max(1)
}

/// Checks `display_name`: free text, possibly empty, at most 200
/// characters.
pub fn display_name(field: &str, s: &str) -> Result<(), FieldViolation> {
    validate::bounded_text(field, s, MAX_DISPLAY_NAME)
}

/// The settings whose combination is constrained, as they will be after a
/// create or an update.
#[derive(Debug, Clone, Copy)]
pub struct Combination {
    /// Whether the policy has a rate.
    pub has_rate: bool,
    /// Whether it has a quota.
    pub has_quota: bool,
    /// How the rate counts.
    pub algorithm: RateAlgorithm,
    /// Whose calls share a counter.
    pub key_by: KeyBy,
    /// Whether the selector has header or descriptor entries.
    pub has_entries: bool,
}

/// Records what is wrong with a combination; `prefix` is the resource's
/// field in the request (`rate_limit_policy`).
pub fn check_combination(v: &mut Violations, prefix: &str, c: &Combination) {
    if !c.has_rate && !c.has_quota {
        v.add(
            format!("{prefix}.limit"),
            "required: a policy needs a limit, a quota, or both",
        );
    }
    if c.algorithm == RateAlgorithm::SlidingWindow && !c.has_rate && c.has_quota {
        v.add(
            format!("{prefix}.algorithm"),
            "SLIDING_WINDOW counts a limit; this policy has only a quota (a calendar window)",
        );
    }
    if c.key_by == KeyBy::Descriptor && !c.has_entries {
        v.add(
            format!("{prefix}.key_by"),
            "DESCRIPTOR keys on the selector's headers or descriptors; the selector has none",
        );
    }
}

/// A checked policy, everything but its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// Free text.
    pub display_name: String,
    /// Which calls it matches.
    pub selector: Selector,
    /// Its rate, if any.
    pub rate: Option<Rate>,
    /// Its quota, if any.
    pub quota: Option<Quota>,
    /// How the rate counts.
    pub algorithm: RateAlgorithm,
    /// Counts and reports but never refuses.
    pub shadow: bool,
    /// What happens when the shared store does not answer.
    pub failure_mode: FailureMode,
    /// Whose calls share a counter.
    pub key_by: KeyBy,
}

impl PolicySpec {
    /// The constrained settings of this policy.
    pub fn combination(&self) -> Combination {
        Combination {
            has_rate: self.rate.is_some(),
            has_quota: self.quota.is_some(),
            algorithm: self.algorithm,
            key_by: self.key_by,
            has_entries: self.selector.has_entries(),
        }
    }
}

/// A policy compiled for the enforcement engine: names parsed, enums
/// resolved, limits in the limiter's terms. Every replica keeps all of
/// them in memory (policies are few) and reloads on change.
///
/// # Matching order
///
/// A call is matched against the rules of its organization from the most
/// specific to the least, and the first enforced rule that matches wins
/// (every matching quota is charged). Specificity compares, in turn:
///
/// 1. a selected API key;
/// 2. a selected OAuth client;
/// 3. a selected principal;
/// 4. how many header and descriptor entries are selected (more first);
/// 5. the method: an exact path, then a prefix (the longer prefix first),
///    then any method (no method selector, or `/*`);
///
/// and a tie goes to the policy whose resource name sorts first, so the
/// order is total. [`RateLimitRule::precedence`] is this order;
/// [`RateLimitRule::specificity`] is steps 1 to 5 as one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRule {
    /// The policy's uid: counters are keyed by it, so a re-created
    /// namesake starts from zero.
    pub uid: Box<str>,
    /// The policy's resource name, for statuses, metrics and ties.
    pub name: Box<str>,
    /// Its organization's id.
    pub org: Box<str>,
    /// Which methods it matches.
    pub method: MethodMatch,
    /// A principal's resource name to match, if any.
    pub principal: Option<Box<str>>,
    /// An API key's resource name to match, if any.
    pub api_key: Option<Box<str>>,
    /// An OAuth client's resource name to match, if any.
    pub oauth_client: Option<Box<str>>,
    /// Header names (lower case) that must be present, sorted by name;
    /// `None` matches any value.
    pub headers: Vec<(Box<str>, Option<Box<str>>)>,
    /// Descriptor keys that must be present, sorted by key; `None`
    /// matches any value.
    pub descriptors: Vec<(Box<str>, Option<Box<str>>)>,
    /// The rate, GCRA or sliding window; burst defaults to the limit.
    pub limit: Option<Limit>,
    /// The calendar quota.
    pub quota: Option<Limit>,
    /// Counts and reports but never refuses.
    pub shadow: bool,
    /// Refuse (UNAVAILABLE) rather than decide locally when the shared
    /// store does not answer.
    pub fail_closed: bool,
    /// Whose calls share a counter.
    pub key_by: KeyBy,
}

/// Bits of [`RateLimitRule::specificity`], highest first.
const API_KEY_BIT: u32 = 40;
const OAUTH_CLIENT_BIT: u32 = 39;
const PRINCIPAL_BIT: u32 = 38;
/// Six bits of entry count (at most 2 × 8).
const ENTRIES_SHIFT: u32 = 32;
/// Two bits of method kind: exact 2, prefix 1, any 0.
const METHOD_KIND_SHIFT: u32 = 30;

impl RateLimitRule {
    /// Compiles a checked policy. `name` is its resource name, `org` its
    /// organization's id.
    pub fn compile(uid: &str, name: &str, org: &str, spec: &PolicySpec) -> Self {
        let method = spec
            .selector
            .method
            .as_deref()
            .and_then(MethodMatch::parse)
            .unwrap_or(MethodMatch::Any);
        let pairs = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| {
                    let v = (!v.is_empty()).then(|| Box::from(v.as_str()));
                    (Box::from(k.as_str()), v)
                })
                .collect()
        };
        let boxed = |s: &Option<String>| s.as_deref().map(Box::from);
        Self {
            uid: uid.into(),
            name: name.into(),
            org: org.into(),
            method,
            principal: boxed(&spec.selector.principal),
            api_key: boxed(&spec.selector.api_key),
            oauth_client: boxed(&spec.selector.oauth_client),
            headers: pairs(&spec.selector.headers),
            descriptors: pairs(&spec.selector.descriptors),
            limit: spec.rate.map(|r| r.to_limit(spec.algorithm)),
            quota: spec.quota.map(Quota::to_limit),
            shadow: spec.shadow,
            fail_closed: spec.failure_mode == FailureMode::Closed,
            key_by: spec.key_by,
        }
    }

    /// Steps 1 to 5 of the matching order (see the type's documentation)
    /// as one number: a higher number is more specific. Bit 40: API key;
    /// 39: OAuth client; 38: principal; 32–37: header and descriptor
    /// entries; 30–31: method kind (exact 2, prefix 1, any 0); 0–29: the
    /// prefix's length.
    pub fn specificity(&self) -> u64 {
        let flag = |set: bool, bit: u32| u64::from(set) << bit;
        let entries = (self.headers.len() + self.descriptors.len()).min(63) as u64;
        let (kind, len) = match &self.method {
            MethodMatch::Any => (0, 0),
            MethodMatch::Prefix(p) => (1, p.len().min(1 << 29) as u64),
            MethodMatch::Exact(_) => (2, 0),
        };
        flag(self.api_key.is_some(), API_KEY_BIT)
            | flag(self.oauth_client.is_some(), OAUTH_CLIENT_BIT)
            | flag(self.principal.is_some(), PRINCIPAL_BIT)
            | (entries << ENTRIES_SHIFT)
            | (kind << METHOD_KIND_SHIFT)
            | len
    }

    /// The matching order: `Less` when `self` is tried before `other`
    /// (more specific, or equally specific with the lesser name).
    pub fn precedence(&self, other: &Self) -> Ordering {
        other
            .specificity()
            .cmp(&self.specificity())
            .then_with(|| self.name.cmp(&other.name))
    }

    /// Sorts rules into the matching order.
    pub fn sort(rules: &mut [RateLimitRule]) {
        rules.sort_by(Self::precedence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: &Violations) -> Vec<&str> {
        v.0.iter().map(|f| f.field.as_str()).collect()
    }

    fn served(p: &str) -> bool {
        matches!(
            p,
            "/tollgate.v1.UserService/GetUser" | "/tollgate.v1.UserService/ListUsers"
        )
    }

    #[test]
    fn method_selectors() {
        let m = |s: &str| method("m", s, &served);
        assert_eq!(m("").unwrap(), None);
        for ok in [
            "/tollgate.v1.UserService/GetUser",
            "/tollgate.v1.UserService/*",
            "/tollgate.v1.*",
            "/tollgate.v1.UserService/Get*",
            "/*",
        ] {
            assert_eq!(m(ok).unwrap().as_deref(), Some(ok), "{ok}");
        }
        let unknown = m("/tollgate.v1.UserService/FlyUser").unwrap_err();
        assert_eq!(unknown.field, "m");
        assert!(unknown.description.contains("not a method"), "{unknown:?}");
        for bad in [
            "tollgate.v1.UserService/GetUser",
            "/tollgate.v1.UserService/Get User",
            "/tollgate.v1.*/GetUser",
            "/tollgate.v1.User*Service/*",
            "*",
            "/",
            "//*",
            "/a//b",
            "/a/b/c",
            "/a/b/*",
            "/tollgate.v1.UserService/",
            "/tollgate.v1.UserService",
            "/tollgate.v1.UserService/GetUser**",
            " /tollgate.v1.*",
        ] {
            let e = m(bad).unwrap_err();
            assert!(e.description.contains("unparseable"), "{bad}: {e:?}");
        }
        assert!(m(&format!("/{}*", "a".repeat(MAX_METHOD_LEN))).is_err());
    }

    #[test]
    fn method_matching() {
        let p = |s| MethodMatch::parse(s).unwrap();
        assert_eq!(p(""), MethodMatch::Any);
        assert_eq!(p("/*"), MethodMatch::Any);
        let get = "/tollgate.v1.UserService/GetUser";
        assert!(p(get).matches(get));
        assert!(!p(get).matches("/tollgate.v1.UserService/GetUsers"));
        assert!(p("/tollgate.v1.UserService/*").matches(get));
        assert!(p("/tollgate.v1.*").matches(get));
        assert!(p("/tollgate.v1.UserService/Get*").matches(get));
        assert!(!p("/tollgate.v1.ApiKeyService/*").matches(get));
        assert!(p("/*").matches(get));
    }

    fn map(entries: &[(&str, &str)]) -> HashMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check_selector(input: SelectorInput<'_>) -> (Selector, Vec<String>) {
        let mut v = Violations::default();
        let s = selector(&mut v, "p.selector", "acme", &input, &served);
        let mut f: Vec<String> = fields(&v).into_iter().map(str::to_owned).collect();
        f.sort();
        (s, f)
    }

    #[test]
    fn selector_names_belong_to_the_organization() {
        let none = HashMap::new();
        let input = |principal, api_key, oauth_client| SelectorInput {
            method: "",
            principal,
            api_key,
            oauth_client,
            headers: &none,
            descriptors: &none,
        };
        let (s, f) = check_selector(input(
            "organizations/acme/users/alice",
            "organizations/acme/serviceAccounts/ci/apiKeys/k1",
            "organizations/acme/clients/web",
        ));
        assert!(f.is_empty(), "{f:?}");
        assert_eq!(
            s.principal.as_deref(),
            Some("organizations/acme/users/alice")
        );
        assert_eq!(
            s.api_key.as_deref(),
            Some("organizations/acme/serviceAccounts/ci/apiKeys/k1")
        );
        assert_eq!(
            s.oauth_client.as_deref(),
            Some("organizations/acme/clients/web")
        );
        let (_, f) = check_selector(input(
            "organizations/beta/users/alice",
            "organizations/beta/users/bob/apiKeys/k1",
            "organizations/beta/clients/web",
        ));
        assert_eq!(
            f,
            [
                "p.selector.api_key",
                "p.selector.oauth_client",
                "p.selector.principal"
            ]
        );
        let (_, f) = check_selector(input(
            "organizations/acme/groups/x",
            "organizations/acme/apiKeys/k1",
            "organizations/acme/clients",
        ));
        assert_eq!(
            f,
            [
                "p.selector.api_key",
                "p.selector.oauth_client",
                "p.selector.principal"
            ]
        );
        let (s, f) = check_selector(input("", "", ""));
        assert!(f.is_empty());
        assert_eq!(s, Selector::default());
    }

    #[test]
    fn header_and_descriptor_entries() {
        let headers = map(&[
            ("x-tenant", "t1"),
            ("x-any", ""),
            ("authorization", ""),
            ("X-Upper", "v"),
            ("bad header", "v"),
            ("x-api-key", "k"),
            ("cookie", ""),
            ("proxy-authorization", ""),
        ]);
        let descriptors = map(&[("generic_key", "slowpath"), ("", "x"), ("path", "")]);
        let (s, f) = check_selector(SelectorInput {
            method: "",
            principal: "",
            api_key: "",
            oauth_client: "",
            headers: &headers,
            descriptors: &descriptors,
        });
        assert_eq!(
            f,
            [
                "p.selector.descriptors.",
                "p.selector.headers.X-Upper",
                "p.selector.headers.authorization",
                "p.selector.headers.bad header",
                "p.selector.headers.cookie",
                "p.selector.headers.proxy-authorization",
                "p.selector.headers.x-api-key",
            ]
        );
        assert_eq!(s.headers.len(), 2);
        assert_eq!(s.descriptors.len(), 2);
        assert!(s.has_entries());

        let nine: HashMap<String, String> =
            (0..9).map(|i| (format!("x-h{i}"), String::new())).collect();
        let (s, f) = check_selector(SelectorInput {
            method: "",
            principal: "",
            api_key: "",
            oauth_client: "",
            headers: &nine,
            descriptors: &nine,
        });
        assert_eq!(f, ["p.selector.descriptors", "p.selector.headers"]);
        assert!(!s.has_entries());
        let eight: HashMap<String, String> =
            (0..8).map(|i| (format!("x-h{i}"), String::new())).collect();
        let (_, f) = check_selector(SelectorInput {
            method: "",
            principal: "",
            api_key: "",
            oauth_client: "",
            headers: &eight,
            descriptors: &eight,
        });
        assert!(f.is_empty());
        let long = map(&[
            ("x-v", &"v".repeat(MAX_ENTRY_VALUE_LEN + 1)),
            ("x-c", "a\nb"),
        ]);
        let (_, f) = check_selector(SelectorInput {
            method: "",
            principal: "",
            api_key: "",
            oauth_client: "",
            headers: &long,
            descriptors: &HashMap::new(),
        });
        assert_eq!(f, ["p.selector.headers.x-c", "p.selector.headers.x-v"]);
    }

    #[test]
    fn selector_method_field() {
        let none = HashMap::new();
        let (_, f) = check_selector(SelectorInput {
            method: "/tollgate.v1.UserService/Nope",
            principal: "",
            api_key: "",
            oauth_client: "",
            headers: &none,
            descriptors: &none,
        });
        assert_eq!(f, ["p.selector.method"]);
    }

    #[test]
    fn rates_and_quotas() {
        let mut v = Violations::default();
        let r = rate(&mut v, "p.limit", 10, 2, None).unwrap();
        assert!(v.0.is_empty());
        assert_eq!(
            r.to_limit(RateAlgorithm::Gcra),
            Limit {
                algorithm: Algorithm::Gcra,
                limit: 10,
                period: Duration::from_secs(60),
                burst: 10,
            }
        );
        let r = rate(&mut v, "p.limit", 10, 1, Some(3)).unwrap();
        assert_eq!(r.to_limit(RateAlgorithm::Gcra).burst, 3);
        assert_eq!(
            r.to_limit(RateAlgorithm::SlidingWindow).algorithm,
            Algorithm::SlidingWindow
        );
        assert!(v.0.is_empty());
        for (limit, period, burst, want) in [
            (0, 1, None, "p.limit.limit"),
            (-5, 1, None, "p.limit.limit"),
            (10, 0, None, "p.limit.period"),
            (10, 9, None, "p.limit.period"),
            (10, 1, Some(0), "p.limit.burst"),
            (10, 1, Some(-1), "p.limit.burst"),
        ] {
            let mut v = Violations::default();
            assert!(rate(&mut v, "p.limit", limit, period, burst).is_none());
            assert_eq!(fields(&v), [want], "{limit} {period} {burst:?}");
        }
        let mut v = Violations::default();
        assert!(rate(&mut v, "p.limit", 0, 0, Some(0)).is_none());
        assert_eq!(
            fields(&v),
            ["p.limit.limit", "p.limit.period", "p.limit.burst"]
        );

        let mut v = Violations::default();
        let q = quota(&mut v, "p.quota", 1000, 2).unwrap();
        assert_eq!(q.to_limit().algorithm, Algorithm::Quota(QuotaWindow::Month));
        assert_eq!(q.to_limit().limit, 1000);
        assert!(quota(&mut v, "p.quota", 0, 3).is_none());
        assert_eq!(fields(&v), ["p.quota.limit", "p.quota.period"]);
    }

    #[test]
    fn enums() {
        assert_eq!(RateAlgorithm::parse("a", 0).unwrap(), RateAlgorithm::Gcra);
        assert_eq!(
            RateAlgorithm::parse("a", 2).unwrap(),
            RateAlgorithm::SlidingWindow
        );
        assert_eq!(RateAlgorithm::parse("a", 3).unwrap_err().field, "a");
        assert_eq!(FailureMode::parse("f", 0).unwrap(), FailureMode::Open);
        assert_eq!(FailureMode::parse("f", 2).unwrap(), FailureMode::Closed);
        assert!(FailureMode::parse("f", -1).is_err());
        assert_eq!(KeyBy::parse("k", 0).unwrap(), KeyBy::Principal);
        assert_eq!(KeyBy::parse("k", 5).unwrap(), KeyBy::Descriptor);
        assert!(KeyBy::parse("k", 6).is_err());
        for k in [
            KeyBy::Principal,
            KeyBy::Credential,
            KeyBy::Organization,
            KeyBy::SourceAddress,
            KeyBy::Descriptor,
        ] {
            assert_eq!(KeyBy::from_code(i32::from(k.code())), Some(k));
        }
        for p in [
            RatePeriod::Second,
            RatePeriod::Minute,
            RatePeriod::Hour,
            RatePeriod::Day,
        ] {
            assert_eq!(RatePeriod::from_code(i32::from(p.code())), Some(p));
        }
        assert_eq!(RatePeriod::Day.duration(), Duration::from_secs(86_400));
    }

    #[test]
    fn display_names() {
        assert!(display_name("d", "").is_ok());
        assert!(display_name("d", &"x".repeat(200)).is_ok());
        assert_eq!(display_name("d", &"x".repeat(201)).unwrap_err().field, "d");
    }

    #[test]
    fn combinations() {
        let check = |has_rate, has_quota, algorithm, key_by, has_entries| {
            let mut v = Violations::default();
            check_combination(
                &mut v,
                "p",
                &Combination {
                    has_rate,
                    has_quota,
                    algorithm,
                    key_by,
                    has_entries,
                },
            );
            v.0.into_iter().map(|f| f.field).collect::<Vec<_>>()
        };
        use {KeyBy::*, RateAlgorithm::*};
        assert!(check(true, false, Gcra, Principal, false).is_empty());
        assert!(check(false, true, Gcra, Organization, false).is_empty());
        assert!(check(true, true, SlidingWindow, Descriptor, true).is_empty());
        assert_eq!(check(false, false, Gcra, Principal, false), ["p.limit"]);
        assert_eq!(
            check(false, true, SlidingWindow, Principal, false),
            ["p.algorithm"]
        );
        assert_eq!(check(true, false, Gcra, Descriptor, false), ["p.key_by"]);
    }

    fn rule(name: &str, f: impl FnOnce(&mut Selector)) -> RateLimitRule {
        let mut selector = Selector::default();
        f(&mut selector);
        RateLimitRule::compile(
            "uid",
            name,
            "acme",
            &PolicySpec {
                display_name: String::new(),
                selector,
                rate: Some(Rate {
                    limit: 5,
                    period: RatePeriod::Second,
                    burst: None,
                }),
                quota: None,
                algorithm: RateAlgorithm::Gcra,
                shadow: false,
                failure_mode: FailureMode::Closed,
                key_by: KeyBy::Principal,
            },
        )
    }

    #[test]
    fn compiled_rules() {
        let r = rule("organizations/acme/rateLimitPolicies/a", |s| {
            s.method = Some("/tollgate.v1.*".into());
            s.headers.insert("x-tenant".into(), String::new());
            s.descriptors.insert("k".into(), "v".into());
        });
        assert_eq!(r.method, MethodMatch::Prefix("/tollgate.v1.".into()));
        assert_eq!(r.headers, [("x-tenant".into(), None)]);
        assert_eq!(r.descriptors, [("k".into(), Some("v".into()))]);
        assert!(r.fail_closed);
        assert_eq!(r.limit.map(|l| l.burst), Some(5));
        assert_eq!(r.quota, None);
    }

    #[test]
    fn matching_order_is_total_and_documented() {
        let n = |s: &str| format!("organizations/acme/rateLimitPolicies/{s}");
        let mut rules = vec![
            rule(&n("catch-all-b"), |_| {}),
            rule(&n("catch-all-a"), |s| s.method = Some("/*".into())),
            rule(&n("short-prefix"), |s| {
                s.method = Some("/tollgate.v1.*".into())
            }),
            rule(&n("long-prefix"), |s| {
                s.method = Some("/tollgate.v1.UserService/*".into());
            }),
            rule(&n("exact"), |s| {
                s.method = Some("/tollgate.v1.UserService/GetUser".into());
            }),
            rule(&n("one-header"), |s| {
                s.headers.insert("x-a".into(), String::new());
            }),
            rule(&n("two-entries"), |s| {
                s.headers.insert("x-a".into(), String::new());
                s.descriptors.insert("d".into(), String::new());
            }),
            rule(&n("principal"), |s| {
                s.principal = Some("organizations/acme/users/a".into());
            }),
            rule(&n("principal-and-entries"), |s| {
                s.principal = Some("organizations/acme/users/a".into());
                s.headers.insert("x-a".into(), String::new());
            }),
            rule(&n("client"), |s| {
                s.oauth_client = Some("organizations/acme/clients/c".into());
            }),
            rule(&n("key"), |s| {
                s.api_key = Some("organizations/acme/users/a/apiKeys/k".into());
            }),
            rule(&n("key-and-client"), |s| {
                s.api_key = Some("organizations/acme/users/a/apiKeys/k".into());
                s.oauth_client = Some("organizations/acme/clients/c".into());
            }),
        ];
        // Whatever the input order.
        rules.reverse();
        RateLimitRule::sort(&mut rules);
        let order: Vec<&str> = rules
            .iter()
            .map(|r| r.name.rsplit('/').next().unwrap_or_default())
            .collect();
        assert_eq!(
            order,
            [
                "key-and-client",
                "key",
                "client",
                "principal-and-entries",
                "principal",
                "two-entries",
                "one-header",
                "exact",
                "long-prefix",
                "short-prefix",
                // `/*` is the catch-all: the tie goes to the lesser name.
                "catch-all-a",
                "catch-all-b",
            ]
        );
        // A strict weak order with no ties between distinct names.
        for a in &rules {
            for b in &rules {
                assert_eq!(a.precedence(b) == Ordering::Equal, a.name == b.name);
                assert_eq!(a.precedence(b), b.precedence(a).reverse());
            }
        }
        // The entry count outranks the method, the principal outranks any
        // entry count.
        let many = rule(&n("m"), |s| {
            for i in 0..8 {
                s.headers.insert(format!("x-{i}"), String::new());
                s.descriptors.insert(format!("d{i}"), String::new());
            }
            s.method = Some("/tollgate.v1.UserService/GetUser".into());
        });
        let principal = rule(&n("p"), |s| s.principal = Some("x".into()));
        assert!(principal.specificity() > many.specificity());
        let exact = rule(&n("e"), |s| {
            s.method = Some("/tollgate.v1.UserService/GetUser".into());
        });
        let long = rule(&n("l"), |s| {
            s.method = Some(format!("/{}*", "a".repeat(200)));
        });
        assert!(exact.specificity() > long.specificity());
    }
}
