//! Passwords: argon2id with the crate's default (OWASP) parameters, in the
//! PHC string format so parameters can be raised later without a migration.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

use super::{Error, FieldViolation, Result};

pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 1024;

/// Checks a new password's length (in characters).
pub fn validate(field: &str, password: &str) -> Result<(), FieldViolation> {
    let n = password.chars().count();
    if !(MIN_LEN..=MAX_LEN).contains(&n) {
        return Err(FieldViolation::new(
            field,
            format!("must be {MIN_LEN} to {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

/// Hashes a password. CPU-heavy: call it off the async workers.
pub fn hash(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2: {e}")))
}

/// Verifies a password against a stored PHC string.
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("wrong horse battery", &h));
        assert!(!verify("x", "not a hash"));
    }

    #[test]
    fn lengths() {
        assert!(validate("password", "short").is_err());
        assert!(validate("password", &"x".repeat(12)).is_ok());
        assert!(validate("password", &"x".repeat(1025)).is_err());
    }
}
