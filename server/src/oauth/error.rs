//! The errors of the OAuth 2.1 endpoints, by their RFC names (RFC 6749
//! section 5.2, RFC 8707, RFC 8693, OIDC Core 3.1.2.6). The same error
//! answers `/oauth2/token` as RFC JSON and `TokenService.IssueToken` as a
//! status whose ErrorInfo reason is the RFC code (`api::error`).

use std::fmt;

/// An RFC error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Missing, repeated or malformed parameter.
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// The grant (code, refresh token, subject token) is invalid,
    /// expired, revoked, used, or was issued to another client; or the
    /// redirect URI or PKCE verifier does not match.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The grant type is unknown.
    UnsupportedGrantType,
    /// The scope is unknown, malformed or beyond what the client may ask.
    InvalidScope,
    /// The audience (resource) is not one the client may ask for.
    InvalidTarget,
    /// The user or the server refused the request.
    AccessDenied,
    /// `response_type` other than `code`.
    UnsupportedResponseType,
    /// `prompt=none` but the user must sign in.
    LoginRequired,
    /// `prompt=none` but the user must consent.
    ConsentRequired,
    /// The token presented to revocation is of a type the server cannot
    /// revoke (RFC 7009).
    UnsupportedTokenType,
    /// Too many failed attempts: try again later.
    SlowDown,
    /// The server failed; details are logged, not shown.
    ServerError,
    /// The server is overloaded or its storage is down.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The code as the RFCs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status of the token, introspection and revocation
    /// endpoints' error responses.
    pub fn http_status(self) -> http::StatusCode {
        match self {
            ErrorCode::InvalidClient => http::StatusCode::UNAUTHORIZED,
            ErrorCode::SlowDown => http::StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ServerError => http::StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused OAuth request: the code and a description for the developer
/// (never a secret, never which of several credentials was wrong).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    /// The RFC code.
    pub code: ErrorCode,
    /// For a human.
    pub description: String,
}

impl OAuthError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// `invalid_grant`.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    /// `invalid_client`, with the one description every client
    /// authentication failure shares.
    pub fn invalid_client() -> Self {
        Self::new(ErrorCode::InvalidClient, "client authentication failed")
    }

    /// `invalid_scope`.
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidScope, description)
    }

    /// The RFC 6749 JSON error body.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": self.code.as_str(),
            "error_description": self.description,
        })
    }
}

impl From<crate::domain::Error> for OAuthError {
    fn from(e: crate::domain::Error) -> Self {
        use crate::domain::Error as E;
        match e {
            E::InvalidArgument(v) => OAuthError::invalid_request(v.to_string()),
            E::Unavailable(m) => {
                tracing::warn!(error = %m, "storage unavailable");
                OAuthError::new(ErrorCode::TemporarilyUnavailable, "retry later")
            }
            E::ResourceExhausted { message, .. } => OAuthError::new(ErrorCode::SlowDown, message),
            E::Unauthenticated(_) => OAuthError::invalid_client(),
            E::PermissionDenied(m) => OAuthError::new(ErrorCode::AccessDenied, m),
            E::NotFound { .. } => OAuthError::invalid_grant("not found"),
            other => {
                tracing::error!(error = %other, "oauth request failed");
                OAuthError::new(ErrorCode::ServerError, "internal error")
            }
        }
    }
}
