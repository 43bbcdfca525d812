//! Field checks shared by the services. Each returns the violation naming
//! the field, so a handler can collect them all before answering.

use super::FieldViolation;

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// Longest email address (RFC 5321 path limit).
pub const MAX_EMAIL: usize = 254;

/// A required human-readable name: 1 to 200 characters, no control
/// characters, not only white space.
pub fn display_name(field: &str, value: &str) -> Result<(), FieldViolation> {
    if value.trim().is_empty() {
        return Err(FieldViolation::new(field, "required"));
    }
    bounded_text(field, value, MAX_DISPLAY_NAME)
}

/// Optional free text of at most `max` characters without control
/// characters other than newlines and tabs.
pub fn bounded_text(field: &str, value: &str, max: usize) -> Result<(), FieldViolation> {
    if value.chars().count() > max {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A plausible email address, normalised to lower case. Deliverability is
/// not our business; uniqueness and sanity are.
pub fn email(field: &str, value: &str) -> Result<String, FieldViolation> {
    let v = value.trim();
    if v.is_empty() {
        return Err(FieldViolation::new(field, "required"));
    }
    if v.len() > MAX_EMAIL {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {MAX_EMAIL} characters"),
        ));
    }
    let valid = match v.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if !valid {
        return Err(FieldViolation::new(field, "is not an email address"));
    }
    Ok(v.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert!(display_name("d", "Acme Inc.").is_ok());
        assert!(display_name("d", &"é".repeat(200)).is_ok());
        assert_eq!(display_name("d", "").unwrap_err().description, "required");
        assert!(display_name("d", "   ").is_err());
        assert!(display_name("d", &"x".repeat(201)).is_err());
        assert!(display_name("d", "a\u{0}b").is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(
            email("e", " Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "a@b",
            "a b@c.d",
            "a@b@c.d",
            "a@.com",
        ] {
            assert!(email("e", bad).is_err(), "{bad}");
        }
        assert!(email("e", &format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
