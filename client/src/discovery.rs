//! OpenID Connect discovery (`{issuer}/.well-known/openid-configuration`),
//! shared by the token source (for `token_endpoint`) and the verify layer
//! (for `jwks_uri`).

use serde::Deserialize;

use crate::http::{HttpClient, HttpError};

/// The parts of the provider metadata this crate uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ProviderMetadata {
    pub(crate) issuer: String,
    pub(crate) token_endpoint: Option<String>,
    #[cfg_attr(
        not(feature = "verify"),
        expect(dead_code, reason = "read by the verify layer")
    )]
    pub(crate) jwks_uri: Option<String>,
}

/// Why discovery failed, and whether trying again may help.
#[derive(Debug, Clone)]
pub(crate) struct DiscoveryError {
    pub(crate) reason: String,
    pub(crate) transient: bool,
    /// Seconds the server asked us to wait (`Retry-After` on 429/503).
    pub(crate) retry_after: Option<std::time::Duration>,
}

/// `issuer` without a trailing slash, the form both the `iss` claim and
/// the discovery URL are built from.
pub(crate) fn normalize_issuer(issuer: &str) -> &str {
    issuer.trim_end_matches('/')
}

/// The discovery document URL of `issuer` (OIDC Discovery 1.0, section 4).
pub(crate) fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        normalize_issuer(issuer)
    )
}

/// Fetches and checks the discovery document of `issuer`: its `issuer`
/// must be the one asked for (section 4.3), or a document served by
/// someone else could point us at their keys.
pub(crate) async fn discover(
    http: &HttpClient,
    issuer: &str,
) -> Result<ProviderMetadata, DiscoveryError> {
    let url = discovery_url(issuer);
    let response = http
        .get_json(&url)
        .await
        .map_err(|error: HttpError| DiscoveryError {
            transient: error.is_transient(),
            reason: error.to_string(),
            retry_after: None,
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(DiscoveryError {
            reason: format!("{url} answered HTTP {}", status.as_u16()),
            transient: is_transient_status(status),
            retry_after: retry_after(response.headers()),
        });
    }
    let metadata: ProviderMetadata =
        serde_json::from_slice(response.body()).map_err(|e| DiscoveryError {
            reason: format!("{url} is not a discovery document: {e}"),
            transient: false,
            retry_after: None,
        })?;
    if normalize_issuer(&metadata.issuer) != normalize_issuer(issuer) {
        return Err(DiscoveryError {
            reason: format!(
                "{url} names issuer {:?}, not {:?}",
                metadata.issuer,
                normalize_issuer(issuer)
            ),
            transient: false,
            retry_after: None,
        });
    }
    Ok(metadata)
}

/// 5xx and 429: the server (or a proxy) is overloaded or down, not
/// refusing us.
pub(crate) fn is_transient_status(status: http::StatusCode) -> bool {
    status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS
}

/// `Retry-After` as delay-seconds. The HTTP-date form is ignored (the
/// backoff applies instead): clocks of client and server may disagree.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(std::time::Duration::from_secs)
}
