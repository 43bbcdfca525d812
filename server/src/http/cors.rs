//! CORS, so a browser app on an allowed origin can call HTTP/JSON, Connect
//! and gRPC-Web. Off unless origins are configured: without it browsers
//! refuse cross-origin calls, which is the safe default for an API that
//! takes credentials in headers.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

/// Response headers a browser script may read: gRPC-Web's status
/// trailers-in-headers, Connect's, and the request id.
const EXPOSED: [&str; 7] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
    "connect-protocol-version",
    "content-type",
    "allow",
];

/// The layer for `origins` (`*` for any); `None` when the list is empty.
pub fn layer(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|o| {
                let o = o.trim().trim_end_matches('/');
                if !(o.starts_with("http://") || o.starts_with("https://")) {
                    anyhow::bail!("--cors-allow-origin {o:?}: expected an origin such as https://app.example.com, or *");
                }
                HeaderValue::from_str(o).map_err(|e| anyhow::anyhow!("--cors-allow-origin {o:?}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            // Credentials and metadata travel in headers whose names the
            // caller chooses (`Grpc-Metadata-*`, Connect's plain ones), so
            // the preflight's list is echoed rather than enumerated.
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(EXPOSED.map(HeaderName::from_static))
            .max_age(Duration::from_secs(3600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_origins_are_checked() {
        assert!(layer(&[]).unwrap().is_none());
        assert!(
            layer(&["https://app.example.com".into()])
                .unwrap()
                .is_some()
        );
        assert!(layer(&["*".into()]).unwrap().is_some());
        let err = layer(&["app.example.com".into()]).unwrap_err().to_string();
        assert!(err.contains("expected an origin"), "{err}");
    }
}
