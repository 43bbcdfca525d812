//! Descriptor requests (Envoy's global rate-limit API and
//! `CheckRateLimit`): validation and the decision for one descriptor.

use super::{Facts, RateLimiter, Verdict};
use crate::domain::{FieldViolation, authz::Principal};

/// Most descriptors in one request.
pub const MAX_DESCRIPTORS: usize = 16;
/// Most entries in one descriptor.
pub const MAX_ENTRIES: usize = 16;
/// Longest key or value of an entry, in bytes.
pub const MAX_ENTRY_BYTES: usize = 256;

/// Checks one descriptor's entries; violations name `field` (such as
/// `descriptors[2]`) and the entry.
pub fn validate(field: &str, entries: &[(&str, &str)]) -> Result<(), FieldViolation> {
    if entries.is_empty() {
        return Err(FieldViolation::new(
            format!("{field}.entries"),
            "at least one entry",
        ));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(FieldViolation::new(
            format!("{field}.entries"),
            format!("at most {MAX_ENTRIES} entries"),
        ));
    }
    for (i, (key, value)) in entries.iter().enumerate() {
        if key.is_empty() {
            return Err(FieldViolation::new(
                format!("{field}.entries[{i}].key"),
                "must not be empty",
            ));
        }
        if key.len() > MAX_ENTRY_BYTES || value.len() > MAX_ENTRY_BYTES {
            return Err(FieldViolation::new(
                format!("{field}.entries[{i}]"),
                format!("keys and values are at most {MAX_ENTRY_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// Decides one descriptor of `org`, charging `hits` (`dry_run`: without
/// taking them).
pub async fn check(
    limiter: &RateLimiter,
    org: &str,
    principal: Option<&Principal>,
    entries: &[(&str, &str)],
    hits: u64,
    dry_run: bool,
) -> Verdict {
    let facts = Facts {
        org: Some(org),
        principal,
        method: "",
        source: None,
        headers: None,
        descriptors: Some(entries),
    };
    limiter.decide(&facts, hits, dry_run).await
}
