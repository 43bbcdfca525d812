//! Rules and types of Tollgate's resources: names, validation, roles,
//! filters, page tokens, API key format. Nothing here knows about tonic or
//! diesel; `api` maps [`Error`] to gRPC statuses and `store` persists.

pub mod api_key;
pub mod authz;
pub mod filter;
pub mod mask;
pub mod names;
pub mod oauth_client;
pub mod page;
pub mod password;
pub mod rate_limit_policy;
pub mod scope;
pub mod secret;
pub mod validate;
pub mod webhook;

use std::fmt;

/// One invalid request field, reported to the caller as a
/// `google.rpc.BadRequest.FieldViolation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message, e.g. `user.email`.
    pub field: String,
    /// What is wrong with it, for a human.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// The violations of one request, printed as `field: description; …`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    /// Records a violation of `field`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Records the violation of a failed check, if any.
    pub fn check(&mut self, result: Result<(), FieldViolation>) {
        if let Err(v) = result {
            self.0.push(v);
        }
    }

    /// Records the violation of a failed parse, if any, and passes the
    /// value on.
    pub fn take<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// `Ok` when nothing was recorded, the invalid-argument error otherwise.
    pub fn into_result(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(self))
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in a request, in the caller's terms. The
/// gRPC code of each variant is chosen once, in `api::error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each violation names its field.
    #[error("invalid argument: {0}")]
    InvalidArgument(Violations),
    /// The named resource does not exist (or the caller may not know it does).
    #[error("{resource} not found")]
    NotFound {
        /// The resource name the caller asked for.
        resource: String,
    },
    /// A create collided with an existing resource.
    #[error("{resource} already exists")]
    AlreadyExists {
        /// What it collided with, for the message: the resource name, or
        /// a description such as a user's email in an organization.
        resource: String,
    },
    /// The etag sent does not match: someone else changed the resource.
    #[error("{resource} was changed since it was read (etag mismatch); read it again")]
    Aborted {
        /// The resource whose etag was stale, to read again.
        resource: String,
    },
    /// The system is not in a state that allows the call.
    #[error("{message}")]
    FailedPrecondition {
        /// Machine-readable kind, such as `HAS_CHILDREN`.
        reason: &'static str,
        /// For a human.
        message: String,
    },
    /// The caller is known but may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// No usable credential.
    #[error("{0}")]
    Unauthenticated(String),
    /// The server is at a capacity limit; the call may be retried after
    /// `retry_after`.
    #[error("{message}")]
    ResourceExhausted {
        /// Machine-readable kind, such as `PASSWORD_HASHING_BUSY`.
        reason: &'static str,
        /// For a human.
        message: String,
        /// When a retry may succeed.
        retry_after: std::time::Duration,
    },
    /// The call ran out of time: the listener's request timeout or the
    /// client's own `grpc-timeout` passed before it was answered.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// Storage is unreachable; the call may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected storage failure; logged, never shown in detail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single-field invalid-argument error.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::InvalidArgument(Violations(vec![FieldViolation::new(field, description)]))
    }

    /// A not-found error for a resource name.
    pub fn not_found(resource: impl Into<String>) -> Self {
        Error::NotFound {
            resource: resource.into(),
        }
    }
}

impl From<FieldViolation> for Error {
    fn from(v: FieldViolation) -> Self {
        Error::InvalidArgument(Violations(vec![v]))
    }
}

/// Result of domain operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub fn now_micros() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

/// Microseconds since the epoch to a protobuf timestamp.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// An opaque etag for a resource revision. Derived from the uid as well, so
/// an etag of a deleted-and-recreated resource never matches the new one.
pub fn etag(uid: &str, revision: i64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(uid.as_bytes())
        .chain_update(revision.to_be_bytes())
        .finalize();
    // Read on every Get and List: hex by table, not by `format!`.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(18);
    out.push('"');
    for b in &digest[..8] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out.push('"');
    out
}

/// Checks a caller-supplied etag (empty means "don't check") against the
/// current one.
pub fn check_etag(resource: &str, sent: &str, current: &str) -> Result<()> {
    if sent.is_empty() || sent == current {
        Ok(())
    } else {
        Err(Error::Aborted {
            resource: resource.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_changes_with_revision_and_uid() {
        let a = etag("u1", 1);
        assert_eq!(a.len(), 18);
        assert_ne!(a, etag("u1", 2));
        assert_ne!(a, etag("u2", 1));
        assert_eq!(a, etag("u1", 1));
    }

    #[test]
    fn check_etag_accepts_empty_and_equal_only() {
        assert!(check_etag("x", "", "\"a\"").is_ok());
        assert!(check_etag("x", "\"a\"", "\"a\"").is_ok());
        assert!(matches!(
            check_etag("x", "\"b\"", "\"a\""),
            Err(Error::Aborted { .. })
        ));
    }
}
