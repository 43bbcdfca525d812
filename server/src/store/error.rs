//! The store's own error: what went wrong talking to the database, with the
//! driver's error kept as the source. It decides one thing the domain error
//! cannot: whether the connection is still usable. Only connection-class
//! failures discard a pooled connection; a statement the database refused
//! (bad data, a constraint, a bug) leaves it healthy, so a client that
//! sends values PostgreSQL rejects cannot force a new session per request.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::domain::Error;

/// A database failure, by what it means for the connection.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection is gone or unusable; retry on another.
    #[error("database connection failed")]
    Connection(#[source] DieselError),
    /// SQLite's write lock stayed taken past `busy_timeout`.
    #[error("database is busy")]
    Busy(#[source] DieselError),
    /// The database refused or failed this statement; the connection is
    /// fine.
    #[error("database statement failed")]
    Statement(#[source] DieselError),
}

impl From<DieselError> for StoreError {
    fn from(e: DieselError) -> Self {
        match &e {
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                _,
            )
            | DieselError::BrokenTransactionManager => StoreError::Connection(e),
            DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
                if info.message().contains("database is locked") =>
            {
                StoreError::Busy(e)
            }
            _ => StoreError::Statement(e),
        }
    }
}

/// The message with its whole source chain, for the log line the API layer
/// writes (the caller sees a plain message only).
fn chain(e: &StoreError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Connection(_) | StoreError::Busy(_) => Error::Unavailable(chain(&e)),
            StoreError::Statement(_) => Error::Internal(chain(&e)),
        }
    }
}

impl From<DieselError> for Error {
    fn from(e: DieselError) -> Self {
        StoreError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_failures_discard_the_connection() {
        // Db::run discards a connection on UNAVAILABLE only.
        assert!(matches!(
            StoreError::from(DieselError::BrokenTransactionManager),
            StoreError::Connection(_)
        ));
        assert!(matches!(
            StoreError::from(DieselError::NotFound),
            StoreError::Statement(_)
        ));
        let e: Error = StoreError::from(DieselError::NotFound).into();
        assert!(
            matches!(&e, Error::Internal(m) if m.contains("statement failed") && m.contains("not found")),
            "{e:?}"
        );
        let e: Error = StoreError::from(DieselError::BrokenTransactionManager).into();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    }
}
