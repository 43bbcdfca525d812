//! Which HTTP headers become gRPC metadata, and back, per protocol.
//!
//! HTTP/JSON follows grpc-gateway: credentials, the request id and trace
//! context pass as they are; `Grpc-Metadata-<name>` passes as `<name>`;
//! `Grpc-Timeout` becomes the call's deadline. Responses carry metadata as
//! `Grpc-Metadata-<name>` and trailers as `Grpc-Trailer-<name>`.
//! Connect passes every application header as it is, `Connect-Timeout-Ms`
//! becomes the deadline, and unary trailers come back as `Trailer-<name>`.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::error::HttpError;

/// The request-id header, echoed on every response.
pub const REQUEST_ID: &str = crate::layers::request_id::HEADER;

// Names looked up on every call, made once: a lookup by `&str` parses the
// name again each time (is it one of HTTP's own? lower case?).
/// `x-api-key`.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID);
/// `grpc-timeout`.
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
/// `connect-timeout-ms`.
pub static CONNECT_TIMEOUT_MS: HeaderName = HeaderName::from_static("connect-timeout-ms");
/// `grpc-status`.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Maps of at most this many entries are searched by [`find`] entry by
/// entry; larger ones by hash.
const SCAN_MAX: usize = 8;

/// The first value of `name` in `map`, as [`HeaderMap::get`] returns it.
///
/// Why not `get`: it hashes the name on every lookup, and a call looks up
/// eight names (most of them absent) in maps of a handful of entries: a
/// request's headers, a response's, its trailers. Measured with callgrind
/// on GetOrganization (h2load's five request headers): about 105
/// instructions a lookup by scan against 137 by hash. Past [`SCAN_MAX`]
/// entries, which a hostile or proxied request may send, the hash wins.
pub fn find<'a>(map: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if map.len() <= SCAN_MAX {
        map.iter().find_map(|(n, v)| (n == name).then_some(v))
    } else {
        map.get(name)
    }
}

const GATEWAY_PASSED: [&str; 6] = [
    "authorization",
    "x-api-key",
    REQUEST_ID,
    "traceparent",
    "tracestate",
    "x-forwarded-for",
];
const METADATA_PREFIX: &str = "grpc-metadata-";
/// Response metadata that is HTTP's own vocabulary, passed as plain
/// headers rather than `Grpc-Metadata-…`: the rate-limit headers clients
/// and proxies read.
const GATEWAY_RESPONSE_PASSED: [&str; 3] = [
    crate::ratelimit::headers::RATELIMIT,
    crate::ratelimit::headers::RATELIMIT_POLICY,
    "retry-after",
];

/// gRPC metadata of an HTTP/JSON request.
pub fn gateway_metadata(headers: &HeaderMap) -> Result<HeaderMap, HttpError> {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if GATEWAY_PASSED.contains(&n) {
            out.append(name.clone(), value.clone());
        } else if let Some(rest) = n.strip_prefix(METADATA_PREFIX) {
            if rest.starts_with("grpc-") || rest.is_empty() {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(rest.as_bytes()) {
                out.append(name, value.clone());
            }
        } else if n == "grpc-timeout" {
            validate_grpc_timeout(value)?;
            out.insert(name.clone(), value.clone());
        }
    }
    Ok(out)
}

fn validate_grpc_timeout(value: &HeaderValue) -> Result<(), HttpError> {
    parse_grpc_timeout(value)
        .map(|_| ())
        .ok_or_else(|| HttpError::Header {
            header: "grpc-timeout",
            description: "expected up to 8 digits and a unit (H, M, S, m, u, n), e.g. 500m".into(),
        })
}

/// A `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`), per the gRPC over HTTP/2 spec. The listener bounds a
/// call by it; the protocol layers refuse a malformed one.
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = value.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
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

/// A `connect-timeout-ms` value: a positive integer of at most 10 digits.
pub fn parse_connect_timeout(value: &HeaderValue) -> Option<std::time::Duration> {
    let v = value.to_str().ok()?;
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(std::time::Duration::from_millis(v.parse().ok()?))
}

fn is_grpc_internal(name: &str) -> bool {
    name.starts_with("grpc-")
        || matches!(
            name,
            "content-type" | "content-length" | "te" | "trailer" | "date" | "transfer-encoding"
        )
}

/// HTTP/JSON response headers from the gRPC response's headers and
/// trailers.
pub fn gateway_response_headers(grpc: &HeaderMap, trailers: Option<&HeaderMap>) -> HeaderMap {
    let mut out = HeaderMap::new();
    let mut copy = |map: &HeaderMap, prefix: &str| {
        for (name, value) in map {
            let n = name.as_str();
            if is_grpc_internal(n) {
                continue;
            }
            if n == REQUEST_ID || GATEWAY_RESPONSE_PASSED.contains(&n) {
                out.insert(name.clone(), value.clone());
            } else if let Ok(name) = HeaderName::from_bytes(format!("{prefix}{n}").as_bytes()) {
                out.append(name, value.clone());
            }
        }
    };
    copy(grpc, METADATA_PREFIX);
    if let Some(t) = trailers {
        copy(t, "grpc-trailer-");
    }
    out
}

const CONNECT_DROPPED: [&str; 13] = [
    "host",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "transfer-encoding",
    "content-type",
    "content-length",
    "content-encoding",
    "accept-encoding",
    "accept",
    "origin",
    "user-agent",
];

/// gRPC metadata of a Connect request.
pub fn connect_metadata(headers: &HeaderMap) -> Result<HeaderMap, HttpError> {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if CONNECT_DROPPED.contains(&n) || n.starts_with("connect-") || n.starts_with("grpc-") {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Some(ms) = headers.get("connect-timeout-ms") {
        let bad = || HttpError::Header {
            header: "connect-timeout-ms",
            description: "expected a positive integer of at most 10 digits".into(),
        };
        let n = parse_connect_timeout(ms).ok_or_else(bad)?.as_millis();
        // gRPC allows at most 8 digits per unit.
        let timeout = if n < 100_000_000 {
            format!("{n}m")
        } else {
            format!("{}S", n / 1000)
        };
        if let Ok(value) = HeaderValue::from_str(&timeout) {
            out.insert("grpc-timeout", value);
        }
    }
    Ok(out)
}

/// Connect unary response headers: metadata as is, trailers prefixed
/// `trailer-`.
pub fn connect_response_headers(grpc: &HeaderMap, trailers: Option<&HeaderMap>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in grpc {
        if !is_grpc_internal(name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    if let Some(t) = trailers {
        for (name, value) in t {
            if is_grpc_internal(name.as_str()) {
                continue;
            }
            if let Ok(name) =
                HeaderName::from_bytes(format!("trailer-{}", name.as_str()).as_bytes())
            {
                out.append(name, value.clone());
            }
        }
    }
    out
}

/// The media type of a request, without parameters, lower-cased.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn find_answers_as_get_does_small_or_large() {
        let mut small = HeaderMap::new();
        small.append("x-api-key", HeaderValue::from_static("first"));
        small.append(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        small.append("x-api-key", HeaderValue::from_static("second"));
        let mut large = small.clone();
        for i in 0..SCAN_MAX {
            large.append(
                HeaderName::try_from(format!("x-filler-{i}")).expect("name"),
                HeaderValue::from_static("v"),
            );
        }
        assert!(small.len() <= SCAN_MAX && large.len() > SCAN_MAX);
        for map in [&small, &large] {
            for name in [
                &X_API_KEY,
                &header::CONTENT_TYPE,
                &header::AUTHORIZATION,
                &GRPC_STATUS,
            ] {
                assert_eq!(find(map, name), map.get(name), "{name}");
            }
            // The first of several values, as `get`.
            assert_eq!(
                find(map, &X_API_KEY).map(HeaderValue::as_bytes),
                Some(&b"first"[..])
            );
        }
        assert_eq!(find(&HeaderMap::new(), &X_API_KEY), None);
    }

    #[test]
    fn gateway_forwards_credentials_and_prefixed_metadata_only() {
        let m = gateway_metadata(&map(&[
            ("authorization", "Bearer x"),
            ("x-api-key", "tg_1"),
            ("grpc-metadata-tenant", "acme"),
            ("cookie", "secret"),
            ("grpc-timeout", "5S"),
        ]))
        .unwrap();
        assert_eq!(m.get("authorization").unwrap(), "Bearer x");
        assert_eq!(m.get("x-api-key").unwrap(), "tg_1");
        assert_eq!(m.get("tenant").unwrap(), "acme");
        assert_eq!(m.get("grpc-timeout").unwrap(), "5S");
        assert!(m.get("cookie").is_none());
        assert!(gateway_metadata(&map(&[("grpc-timeout", "soon")])).is_err());
        assert!(gateway_metadata(&map(&[("grpc-timeout", "123456789S")])).is_err());
    }

    #[test]
    fn gateway_response_prefixes_metadata_and_trailers() {
        let h = gateway_response_headers(
            &map(&[
                ("content-type", "application/grpc"),
                ("x-request-id", "r1"),
                ("x-a", "1"),
            ]),
            Some(&map(&[("grpc-status", "0"), ("x-b", "2")])),
        );
        assert_eq!(h.get("x-request-id").unwrap(), "r1");
        assert_eq!(h.get("grpc-metadata-x-a").unwrap(), "1");
        assert_eq!(h.get("grpc-trailer-x-b").unwrap(), "2");
        assert!(h.get("content-type").is_none() && h.get("grpc-trailer-grpc-status").is_none());
    }

    #[test]
    fn connect_timeout_becomes_grpc_timeout() {
        let m =
            connect_metadata(&map(&[("connect-timeout-ms", "1500"), ("x-api-key", "k")])).unwrap();
        assert_eq!(m.get("grpc-timeout").unwrap(), "1500m");
        assert_eq!(m.get("x-api-key").unwrap(), "k");
        assert!(connect_metadata(&map(&[("connect-timeout-ms", "-1")])).is_err());
    }
}
