//! The one place gRPC codes are chosen: domain errors become statuses with
//! `google.rpc` details (BadRequest field violations, ErrorInfo, RetryInfo).

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::domain::Error;

/// The `ErrorInfo.domain` of every error Tollgate returns.
pub const ERROR_DOMAIN: &str = "tollgate.dev";

impl From<Error> for Status {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place gRPC statuses are built"
    )]
    fn from(e: Error) -> Status {
        let mut details = ErrorDetails::new();
        let (code, reason, message) = match e {
            Error::InvalidArgument(v) => {
                let message = format!("invalid argument: {v}");
                details.set_bad_request(
                    v.0.into_iter()
                        .map(|f| FieldViolation::new(f.field, f.description))
                        .collect::<Vec<_>>(),
                );
                (Code::InvalidArgument, "INVALID_ARGUMENT", message)
            }
            e @ Error::NotFound { .. } => (Code::NotFound, "NOT_FOUND", e.to_string()),
            e @ Error::AlreadyExists { .. } => {
                (Code::AlreadyExists, "ALREADY_EXISTS", e.to_string())
            }
            e @ Error::Aborted { .. } => (Code::Aborted, "ETAG_MISMATCH", e.to_string()),
            Error::FailedPrecondition { reason, message } => {
                details.add_precondition_failure_violation(reason, "", message.clone());
                (Code::FailedPrecondition, reason, message)
            }
            Error::PermissionDenied(m) => (Code::PermissionDenied, "PERMISSION_DENIED", m),
            Error::Unauthenticated(m) => (Code::Unauthenticated, "UNAUTHENTICATED", m),
            Error::ResourceExhausted {
                reason,
                message,
                retry_after,
            } => {
                details.set_retry_info(Some(retry_after));
                details.add_quota_failure_violation(reason, message.clone());
                (Code::ResourceExhausted, reason, message)
            }
            Error::DeadlineExceeded(m) => (Code::DeadlineExceeded, "DEADLINE_EXCEEDED", m),
            Error::Unavailable(m) => {
                tracing::warn!(error = %m, "storage unavailable");
                details.set_retry_info(Some(Duration::from_secs(1)));
                (
                    Code::Unavailable,
                    "STORAGE_UNAVAILABLE",
                    "storage is unavailable; retry later".to_owned(),
                )
            }
            Error::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                (Code::Internal, "INTERNAL", "internal error".to_owned())
            }
        };
        details.set_error_info(reason, ERROR_DOMAIN, HashMap::<String, String>::new());
        Status::with_error_details(code, message, details)
    }
}

impl From<crate::watch::End> for Status {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place gRPC statuses are built"
    )]
    fn from(end: crate::watch::End) -> Status {
        use crate::watch::End;
        let message = end.to_string();
        let mut details = ErrorDetails::new();
        let (code, reason, cursor) = match end {
            End::FellBehind { cursor } => (Code::Aborted, "WATCH_FELL_BEHIND", cursor),
            End::ShuttingDown { cursor } => {
                details.set_retry_info(Some(Duration::from_secs(1)));
                (Code::Unavailable, "SHUTTING_DOWN", cursor)
            }
            End::Error(e) => return e.into(),
        };
        details.set_error_info(
            reason,
            ERROR_DOMAIN,
            HashMap::from([("cursor".to_owned(), cursor.to_string())]),
        );
        Status::with_error_details(code, message, details)
    }
}

impl From<crate::ratelimit::refusal::Refusal> for Status {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place gRPC statuses are built"
    )]
    fn from(r: crate::ratelimit::refusal::Refusal) -> Status {
        use crate::ratelimit::refusal::Refusal;
        let mut details = ErrorDetails::new();
        match r {
            Refusal::OverLimit {
                retry_after,
                violations,
            } => {
                let message = match violations.first() {
                    Some((policy, _)) => format!(
                        "rate limit exceeded ({policy}); retry in {} ms",
                        retry_after.as_millis()
                    ),
                    None => "rate limit exceeded".to_owned(),
                };
                details.set_retry_info(Some(retry_after));
                for (subject, description) in violations {
                    details.add_quota_failure_violation(subject, description);
                }
                details.set_error_info(
                    "RATE_LIMITED",
                    ERROR_DOMAIN,
                    HashMap::<String, String>::new(),
                );
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            Refusal::Unavailable { policy } => {
                details.set_retry_info(Some(Duration::from_secs(1)));
                details.set_error_info(
                    "RATE_LIMIT_STORE_UNAVAILABLE",
                    ERROR_DOMAIN,
                    HashMap::from([("policy".to_owned(), policy.clone())]),
                );
                Status::with_error_details(
                    Code::Unavailable,
                    format!(
                        "the rate-limit store is unavailable and {policy} fails closed; retry later"
                    ),
                    details,
                )
            }
        }
    }
}

impl From<crate::http::error::HttpError> for Status {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place gRPC statuses are built"
    )]
    fn from(e: crate::http::error::HttpError) -> Status {
        use crate::http::error::HttpError as H;
        let mut details = ErrorDetails::new();
        let message = e.to_string();
        let (code, reason) = match e {
            H::NotFound { .. } => (Code::NotFound, "ROUTE_NOT_FOUND"),
            // grpc-gateway answers 405 with code UNIMPLEMENTED.
            H::MethodNotAllowed { .. } => (Code::Unimplemented, "METHOD_NOT_ALLOWED"),
            H::TooLarge { .. } => (Code::ResourceExhausted, "BODY_TOO_LARGE"),
            H::UnsupportedMediaType { .. } => (Code::InvalidArgument, "UNSUPPORTED_MEDIA_TYPE"),
            H::Field { field, description } => {
                details.set_bad_request(vec![FieldViolation::new(field, description)]);
                (Code::InvalidArgument, "INVALID_ARGUMENT")
            }
            H::Header {
                header,
                description,
            } => {
                details.set_bad_request(vec![FieldViolation::new(header, description)]);
                (Code::InvalidArgument, "INVALID_HEADER")
            }
            H::Unsupported(_) => (Code::Unimplemented, "UNSUPPORTED"),
            H::Body(_) => (Code::InvalidArgument, "UNREADABLE_BODY"),
            H::Busy => {
                details.set_retry_info(Some(Duration::from_secs(1)));
                (Code::ResourceExhausted, "BODY_BUDGET_EXHAUSTED")
            }
            H::Render(m) => {
                tracing::error!(error = %m, "cannot render a response");
                details.set_error_info("INTERNAL", ERROR_DOMAIN, HashMap::<String, String>::new());
                return Status::with_error_details(Code::Internal, "internal error", details);
            }
        };
        details.set_error_info(reason, ERROR_DOMAIN, HashMap::<String, String>::new());
        Status::with_error_details(code, message, details)
    }
}

impl From<crate::oauth::error::OAuthError> for Status {
    /// The gRPC face of an OAuth refusal: the RFC code is the ErrorInfo
    /// reason, so a gRPC client can branch on `invalid_grant` as an HTTP
    /// client branches on the JSON `error`.
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place gRPC statuses are built"
    )]
    fn from(e: crate::oauth::error::OAuthError) -> Status {
        use crate::oauth::error::ErrorCode as C;
        let mut details = ErrorDetails::new();
        let code = match e.code {
            C::InvalidClient | C::LoginRequired => Code::Unauthenticated,
            C::AccessDenied | C::ConsentRequired => Code::PermissionDenied,
            C::SlowDown => {
                details.set_retry_info(Some(Duration::from_secs(1)));
                Code::ResourceExhausted
            }
            C::ServerError => Code::Internal,
            C::TemporarilyUnavailable => Code::Unavailable,
            C::UnsupportedGrantType | C::UnsupportedResponseType | C::UnsupportedTokenType => {
                Code::InvalidArgument
            }
            C::InvalidRequest
            | C::InvalidGrant
            | C::UnauthorizedClient
            | C::InvalidScope
            | C::InvalidTarget => Code::InvalidArgument,
        };
        details.set_error_info(
            e.code.as_str(),
            ERROR_DOMAIN,
            HashMap::<String, String>::new(),
        );
        Status::with_error_details(code, e.to_string(), details)
    }
}

/// The HTTP status of a gRPC code, as grpc-gateway and Envoy's
/// transcoder map them (`runtime.HTTPStatusFromCode`), so every HTTP
/// surface (JSON transcoding, OAuth2 endpoints, rate-limit refusals)
/// answers a failure with the same status. Beside the code mapping above,
/// so the two tables cannot drift apart.
pub fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        // grpc-gateway's choice: the client closed the request (nginx 499).
        Code::Cancelled => S::from_u16(499).unwrap_or(S::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => S::BAD_REQUEST,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_follow_grpc_gateway() {
        let table = [
            (Code::Ok, 200),
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
            (Code::Unauthenticated, 401),
        ];
        for (code, status) in table {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn invalid_argument_carries_field_violations() {
        let s: Status = Error::invalid("user.email", "is not an email address").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let br = s.get_details_bad_request().unwrap();
        assert_eq!(br.field_violations[0].field, "user.email");
        assert_eq!(s.get_details_error_info().unwrap().domain, ERROR_DOMAIN);
    }

    #[test]
    fn internal_details_are_not_leaked() {
        let s: Status = Error::Internal("SELECT * FROM secrets failed".into()).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secrets"));
        let s: Status = Error::Unavailable("connection refused to 10.0.0.1".into()).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.get_details_retry_info().is_some());
        assert!(!s.message().contains("10.0.0.1"));
    }

    #[test]
    fn resource_exhausted_says_when_to_retry() {
        let s: Status = Error::ResourceExhausted {
            reason: "PASSWORD_HASHING_BUSY",
            message: "busy".into(),
            retry_after: Duration::from_secs(1),
        }
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            s.get_details_quota_failure().unwrap().violations[0].subject,
            "PASSWORD_HASHING_BUSY"
        );
        assert_eq!(
            s.get_details_error_info().unwrap().reason,
            "PASSWORD_HASHING_BUSY"
        );
    }

    #[test]
    fn codes() {
        let cases: Vec<(Error, Code)> = vec![
            (Error::not_found("x"), Code::NotFound),
            (
                Error::AlreadyExists {
                    resource: "x".into(),
                },
                Code::AlreadyExists,
            ),
            (
                Error::Aborted {
                    resource: "x".into(),
                },
                Code::Aborted,
            ),
            (
                Error::FailedPrecondition {
                    reason: "HAS_CHILDREN",
                    message: "m".into(),
                },
                Code::FailedPrecondition,
            ),
            (Error::PermissionDenied("p".into()), Code::PermissionDenied),
            (Error::Unauthenticated("u".into()), Code::Unauthenticated),
            (
                Error::ResourceExhausted {
                    reason: "BUSY",
                    message: "m".into(),
                    retry_after: Duration::from_secs(1),
                },
                Code::ResourceExhausted,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(e).code(), code);
        }
    }
}
