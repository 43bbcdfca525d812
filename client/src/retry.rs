//! Retry policy: which calls may be retried, when, and how long to wait.
//!
//! Kept apart from the transport so the rules can be read, and tested,
//! without a network.
//!
//! Which methods may be retried is not decided here but in the protos: a
//! method is retried only if its definition says
//! `option idempotency_level = NO_SIDE_EFFECTS;` (or `IDEMPOTENT`). The set
//! is read once from the file descriptor set compiled into the `tollgate`
//! crate, so a new read is retried as soon as its proto says so, and a new
//! write is never retried by accident of its name.

use std::{collections::HashSet, sync::LazyLock, time::Duration};

use http::{HeaderMap, HeaderValue, StatusCode};
use prost::Message as _;
use prost_types::{FileDescriptorSet, method_options::IdempotencyLevel};
use rand::Rng;

/// The one method retried without a proto option saying so. The standard
/// `grpc/health/v1/health.proto` declares no `idempotency_level` and is not
/// ours to change, but `Check` only reads. (`Watch` is a stream and is
/// never retried.)
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// Paths (`/package.Service/Method`) of every `tollgate.v1` method whose
/// proto declares it free of side effects, decoded on first use.
static RETRYABLE: LazyLock<HashSet<String>> = LazyLock::new(|| {
    // build.rs writes these bytes in the same protoc run that generates the
    // stubs, so they cannot fail to decode unless the build itself is
    // broken. If they ever did, an empty set retries nothing: reads lose
    // their retries, but no write is ever sent twice.
    FileDescriptorSet::decode(tollgate::FILE_DESCRIPTOR_SET)
        .map(|set| retryable_methods(&set))
        .unwrap_or_default()
});

/// `grpc-status` of UNAVAILABLE (code 14): the server, or a proxy in front of
/// it, says "try again".
const UNAVAILABLE: &[u8] = b"14";

const GRPC_STATUS: &str = "grpc-status";
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The paths of the methods in `set` that may be sent twice: those whose
/// `MethodOptions.idempotency_level` is `NO_SIDE_EFFECTS` (a read) or
/// `IDEMPOTENT` (a write that has the same effect however often it is
/// applied). A method without the option is assumed to have side effects,
/// as protobuf's `IDEMPOTENCY_UNKNOWN` default says.
pub(crate) fn retryable_methods(set: &FileDescriptorSet) -> HashSet<String> {
    let mut paths = HashSet::new();
    for file in &set.file {
        for service in &file.service {
            let service_name = match file.package() {
                "" => service.name().to_owned(),
                package => format!("{package}.{}", service.name()),
            };
            for method in &service.method {
                let level = method
                    .options
                    .as_ref()
                    .map_or(IdempotencyLevel::IdempotencyUnknown, |options| {
                        options.idempotency_level()
                    });
                if matches!(
                    level,
                    IdempotencyLevel::NoSideEffects | IdempotencyLevel::Idempotent
                ) {
                    paths.insert(format!("/{service_name}/{}", method.name()));
                }
            }
        }
    }
    paths
}

/// Whether the gRPC method at `path` (`/package.Service/Method`) may be sent
/// again after a failure: its proto declares it free of side effects, or it
/// is the standard health check. Methods this crate has no descriptor for
/// (your own services called through [`Client::channel`](crate::Client::channel))
/// are sent once.
pub(crate) fn is_idempotent(path: &str) -> bool {
    path == HEALTH_CHECK || RETRYABLE.contains(path)
}

/// Whether a response head says UNAVAILABLE.
///
/// A server that fails a call before sending a message answers
/// "trailers-only": `grpc-status` comes in the headers, so it can be read
/// before the body. A proxy with no backend (Envoy, a load balancer) may
/// instead answer HTTP 502/503/504 with no `grpc-status`; tonic turns those
/// into UNAVAILABLE too, per the gRPC HTTP-to-status mapping.
pub(crate) fn is_unavailable<B>(response: &http::Response<B>) -> bool {
    match response.headers().get(GRPC_STATUS) {
        Some(status) => status.as_bytes() == UNAVAILABLE,
        None => matches!(
            response.status(),
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
        ),
    }
}

/// Exponential backoff with full jitter: before retry `n` (0-based) wait a
/// uniformly random time in `[0, min(max, initial * 2^n)]`.
///
/// Full jitter spreads the retries of many clients that failed together, so
/// they do not hit a recovering server in lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// The longest wait before retry `retry` (0-based). Saturates instead of
    /// overflowing, however large `retry` is.
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.checked_pow(retry).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A random wait before retry `retry`, drawn from `rng`.
    pub(crate) fn delay_with(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(retry).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }

    /// A random wait before retry `retry`.
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, &mut rand::rng())
    }
}

/// Reads a `grpc-timeout` header (1 to 8 digits and a unit, see the gRPC
/// over HTTP/2 spec). `None` when absent or malformed: a malformed value is
/// the caller's bug, and the configured timeout still applies.
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at_checked(unit_at)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Encodes `timeout` as a `grpc-timeout` value in the finest unit that fits
/// in 8 digits, rounding up so the server never sees a shorter deadline
/// than a whole unit of what is left.
pub(crate) fn encode_grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let (value, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos.div_ceil(per), unit))
        .find(|&(value, _)| value <= MAX)
        .unwrap_or((MAX, 'H'));
    // Digits and an ASCII letter always make a valid header value; the
    // fallback only keeps this function free of `unwrap`.
    HeaderValue::try_from(format!("{value}{unit}"))
        .unwrap_or_else(|_| HeaderValue::from_static("99999999H"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method of `tollgate.v1`, from the descriptor, as
    /// `(path, method name)`.
    fn tollgate_methods() -> Vec<(String, String)> {
        let set = FileDescriptorSet::decode(tollgate::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == "tollgate.v1") {
            for service in &file.service {
                for method in &service.method {
                    methods.push((
                        format!("/tollgate.v1.{}/{}", service.name(), method.name()),
                        method.name().to_owned(),
                    ));
                }
            }
        }
        methods
    }

    #[test]
    fn every_get_and_list_is_retried_and_nothing_else() {
        let methods = tollgate_methods();
        assert!(methods.len() >= 20, "{methods:?}");
        for (path, name) in &methods {
            // Reads, and questions that change nothing (AuthorizationService).
            let read = name.starts_with("Get")
                || name.starts_with("List")
                || name.starts_with("Watch")
                || matches!(name.as_str(), "Check" | "BatchCheck");
            assert_eq!(
                is_idempotent(path),
                read,
                "{path}: reads must declare idempotency_level = NO_SIDE_EFFECTS, writes must not"
            );
        }
        // The writes by kind, so a new kind of write is noticed.
        for verb in ["Create", "Update", "Delete", "Revoke", "SetPassword"] {
            let writes: Vec<_> = methods
                .iter()
                .filter(|(_, n)| n.starts_with(verb))
                .collect();
            assert!(!writes.is_empty(), "no {verb} method found");
            for (path, _) in writes {
                assert!(!is_idempotent(path), "{path} must not be retried");
            }
        }
    }

    #[test]
    fn health_check_is_the_one_explicit_exception() {
        assert!(is_idempotent("/grpc.health.v1.Health/Check"));
        assert!(!is_idempotent("/grpc.health.v1.Health/Watch"));
    }

    #[test]
    fn unknown_paths_are_not_retried() {
        for path in [
            "/tollgate.v1.RateLimitService/CheckRateLimit",
            "/my.pkg.Things/GetThing",
            "/tollgate.v1.OrganizationService/GetOrganizationX",
            "tollgate.v1.OrganizationService/GetOrganization",
            "",
            "/",
        ] {
            assert!(!is_idempotent(path), "{path} must not be retried");
        }
    }

    /// A service with one method per idempotency level, and one with none.
    fn synthetic(levels: &[(&str, Option<IdempotencyLevel>)]) -> FileDescriptorSet {
        use prost_types::{
            FileDescriptorProto, MethodDescriptorProto, MethodOptions, ServiceDescriptorProto,
        };
        FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("test.v1".to_owned()),
                service: vec![ServiceDescriptorProto {
                    name: Some("Things".to_owned()),
                    method: levels
                        .iter()
                        .map(|(name, level)| MethodDescriptorProto {
                            name: Some((*name).to_owned()),
                            options: level.map(|level| MethodOptions {
                                idempotency_level: Some(level.into()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_set_comes_from_the_option_not_the_name() {
        let set = retryable_methods(&synthetic(&[
            // Named like a read, but the proto does not say so.
            ("GetThing", None),
            ("ListThings", Some(IdempotencyLevel::IdempotencyUnknown)),
            // Named like writes, but declared safe.
            ("LookupThing", Some(IdempotencyLevel::NoSideEffects)),
            ("PutThing", Some(IdempotencyLevel::Idempotent)),
        ]));
        let mut paths: Vec<_> = set.into_iter().collect();
        paths.sort();
        assert_eq!(
            paths,
            ["/test.v1.Things/LookupThing", "/test.v1.Things/PutThing"]
        );
    }

    #[test]
    fn unavailable_is_read_from_trailers_only_headers() {
        let response = |status: u16, grpc: Option<&'static str>| {
            let mut builder = http::Response::builder().status(status);
            if let Some(grpc) = grpc {
                builder = builder.header(GRPC_STATUS, grpc);
            }
            builder.body(()).unwrap()
        };
        assert!(is_unavailable(&response(200, Some("14"))));
        assert!(!is_unavailable(&response(200, Some("4"))));
        assert!(!is_unavailable(&response(200, Some("0"))));
        assert!(!is_unavailable(&response(200, Some("140"))));
        assert!(!is_unavailable(&response(200, None)));
        assert!(is_unavailable(&response(503, None)));
        assert!(is_unavailable(&response(502, None)));
        assert!(!is_unavailable(&response(500, None)));
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_max() {
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let ceilings: Vec<_> = (0..8).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        // No overflow, however many retries.
        assert_eq!(backoff.ceiling(31), Duration::from_secs(2));
        assert_eq!(backoff.ceiling(32), Duration::from_secs(2));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn backoff_delay_stays_within_bounds() {
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut rng = rand::rng();
        for retry in 0..40 {
            let ceiling = backoff.ceiling(retry);
            for _ in 0..200 {
                let delay = backoff.delay_with(retry, &mut rng);
                assert!(delay <= ceiling, "retry {retry}: {delay:?} > {ceiling:?}");
            }
        }
        // Full jitter: the draws cover the range, not just its top.
        let draws: Vec<_> = (0..1000).map(|_| backoff.delay_with(5, &mut rng)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(400)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(1200)));
    }

    #[test]
    fn backoff_with_huge_max_does_not_overflow() {
        let backoff = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(backoff.ceiling(10), Duration::MAX);
        let _ = backoff.delay(10);
        let zero = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.delay(3), Duration::ZERO);
    }

    #[test]
    fn grpc_timeout_round_trips() {
        for timeout in [
            Duration::from_nanos(1),
            Duration::from_millis(200),
            Duration::from_secs(10),
            Duration::from_secs(3 * 3600),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_TIMEOUT, encode_grpc_timeout(timeout));
            let parsed = grpc_timeout(&headers).unwrap();
            assert!(parsed >= timeout, "{timeout:?} came back as {parsed:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            GRPC_TIMEOUT,
            encode_grpc_timeout(Duration::from_millis(200)),
        );
        assert_eq!(headers[GRPC_TIMEOUT], "200000u");
    }

    #[test]
    fn malformed_grpc_timeout_is_ignored() {
        for value in ["", "m", "10", "10x", "123456789m", "-1m", "1.5S", "١m"] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(GRPC_TIMEOUT, value);
            }
            assert_eq!(grpc_timeout(&headers), None, "{value:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static("5S"));
        assert_eq!(grpc_timeout(&headers), Some(Duration::from_secs(5)));
    }
}
