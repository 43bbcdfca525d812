//! Retry policy: which calls may be retried, when, and how long to wait.
//!
//! Kept apart from the transport so the rules can be read, and tested,
//! without a network.

use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use rand::Rng;

/// The one method outside `tollgate.v1` that is safe to retry.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// `grpc-status` of UNAVAILABLE (code 14): the server, or a proxy in front of
/// it, says "try again".
const UNAVAILABLE: &[u8] = b"14";

const GRPC_STATUS: &str = "grpc-status";
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Whether the gRPC method at `path` (`/package.Service/Method`) only reads,
/// so sending it twice cannot do harm.
///
/// Per AIP-131/132 every `Get*` and `List*` method is a read, and so is the
/// standard health check. Everything else (Create, Update, Delete, Revoke,
/// SetPassword, and checks that consume quota such as `CheckRateLimit`) may
/// change state, and a retry could apply it twice.
pub(crate) fn is_idempotent(path: &str) -> bool {
    if path == HEALTH_CHECK {
        return true;
    }
    let method = path.rsplit('/').next().unwrap_or_default();
    method.starts_with("Get") || method.starts_with("List")
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

    #[test]
    fn reads_are_idempotent() {
        for path in [
            "/tollgate.v1.OrganizationService/GetOrganization",
            "/tollgate.v1.OrganizationService/ListOrganizations",
            "/tollgate.v1.UserService/GetUser",
            "/tollgate.v1.UserService/ListUsers",
            "/tollgate.v1.ApiKeyService/ListApiKeys",
            "/grpc.health.v1.Health/Check",
        ] {
            assert!(is_idempotent(path), "{path} should be retried");
        }
    }

    #[test]
    fn writes_are_not_idempotent() {
        for path in [
            "/tollgate.v1.OrganizationService/CreateOrganization",
            "/tollgate.v1.OrganizationService/UpdateOrganization",
            "/tollgate.v1.OrganizationService/DeleteOrganization",
            "/tollgate.v1.UserService/SetPassword",
            "/tollgate.v1.ApiKeyService/RevokeApiKey",
            "/tollgate.v1.RateLimitService/CheckRateLimit",
            "/tollgate.v1.AuthorizationService/Check",
            "/grpc.health.v1.Health/Watch",
            // The prefix must be on the method, not the service.
            "/tollgate.v1.GetService/DeleteThing",
            "",
            "/",
        ] {
            assert!(!is_idempotent(path), "{path} must not be retried");
        }
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
