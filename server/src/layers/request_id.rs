//! The id of each request, so its log lines and the events its writes
//! append can be joined. A caller's (or Envoy's) `x-request-id` is kept
//! when it is sane; otherwise one is assigned here. Assigning costs an
//! atomic increment: the text is only made when something needs it.

use std::{
    fmt,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use http::{HeaderMap, HeaderValue};

/// The header read (and named so in logs).
pub const HEADER: &str = "x-request-id";
/// Longer presented ids are replaced: they end up in every event row.
const MAX_LEN: usize = 128;

/// A request's id, in the request extensions.
#[derive(Debug, Clone)]
pub enum RequestId {
    /// Sent by the caller in `x-request-id`.
    Presented(HeaderValue),
    /// Assigned here: unique per process, and across processes through a
    /// random prefix drawn at start.
    Assigned(u64),
}

impl RequestId {
    /// The caller's id when it is printable ASCII of a sane length, a new
    /// one otherwise.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        match crate::http::headers::find(headers, &crate::http::headers::X_REQUEST_ID) {
            Some(v)
                if !v.is_empty()
                    && v.len() <= MAX_LEN
                    && v.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
            {
                RequestId::Presented(v.clone())
            }
            _ => Self::assign(),
        }
    }

    /// A new id.
    pub fn assign() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        RequestId::Assigned(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

fn process_prefix() -> u64 {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    *PREFIX.get_or_init(rand::random)
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Presented(v) => f.write_str(v.to_str().unwrap_or_default()),
            RequestId::Assigned(n) => {
                // By hand: `write!` with two `{:016x}` went through the
                // formatting machinery, about 1,000 instructions, on every
                // traced call (the span's `tollgate.request_id`).
                let mut hex = [0u8; 32];
                let (prefix, counter) = hex.split_at_mut(16);
                write_hex(prefix, process_prefix());
                write_hex(counter, *n);
                f.write_str(std::str::from_utf8(&hex).unwrap_or_default())
            }
        }
    }
}

/// `value` as 16 lower-case hex digits into `out` (16 bytes).
fn write_hex(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().enumerate() {
        let nibble = (value >> (60 - 4 * (i % 16))) & 0xf;
        *digit = DIGITS.get(nibble as usize).copied().unwrap_or(b'0');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_ids_are_kept_when_sane() {
        let mut h = HeaderMap::new();
        h.insert(HEADER, HeaderValue::from_static("abc-123"));
        assert_eq!(RequestId::from_headers(&h).to_string(), "abc-123");
        for bad in ["", "has space", &"x".repeat(129)] {
            h.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            let id = RequestId::from_headers(&h);
            assert!(matches!(id, RequestId::Assigned(_)), "{bad:?}");
            assert_eq!(id.to_string().len(), 32);
        }
    }

    #[test]
    fn assigned_ids_are_the_prefix_and_counter_in_hex() {
        let id = RequestId::Assigned(0x0123_4567_89ab_cdef);
        assert_eq!(
            id.to_string(),
            format!("{:016x}0123456789abcdef", process_prefix())
        );
        assert_eq!(
            RequestId::Assigned(7).to_string(),
            format!("{:016x}{:016x}", process_prefix(), 7)
        );
    }

    #[test]
    fn assigned_ids_differ() {
        assert_ne!(
            RequestId::assign().to_string(),
            RequestId::assign().to_string()
        );
    }
}
