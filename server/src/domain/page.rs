//! Keyset pagination (AIP-158). A page token carries the last key of the
//! previous page and a hash of the query it belongs to, so a token reused
//! with another parent or filter is refused instead of giving wrong pages.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message;
use sha2::{Digest, Sha256};

use super::{Error, Result};

/// Page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Larger requested sizes are coerced down to this.
pub const MAX_PAGE_SIZE: usize = 1000;

#[derive(Clone, PartialEq, Message)]
struct Token {
    #[prost(string, tag = "1")]
    last_key: String,
    #[prost(fixed64, tag = "2")]
    query: u64,
}

/// What a List call asks of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows per page.
    pub size: usize,
    /// Return only keys strictly after this one.
    pub after: Option<String>,
    query: u64,
}

fn query_hash(query: &str) -> u64 {
    let d = Sha256::digest(query.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

impl PageRequest {
    /// Reads `page_size` and `page_token`. `query` identifies everything
    /// else in the request that shapes the result (parent, filter).
    pub fn new(page_size: i32, page_token: &str, query: &str) -> Result<Self> {
        let size = match page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => usize::try_from(n)
                .unwrap_or(MAX_PAGE_SIZE)
                .min(MAX_PAGE_SIZE),
        };
        let query = query_hash(query);
        let after = if page_token.is_empty() {
            None
        } else {
            let bytes = URL_SAFE_NO_PAD
                .decode(page_token)
                .map_err(|_| Error::invalid("page_token", "is not a page token of this list"))?;
            let token = Token::decode(bytes.as_slice())
                .map_err(|_| Error::invalid("page_token", "is not a page token of this list"))?;
            if token.query != query {
                return Err(Error::invalid(
                    "page_token",
                    "belongs to a different query; keep parent and filter unchanged between pages",
                ));
            }
            // Keys are resource ids; a control character (a NUL, which
            // PostgreSQL refuses) means the token was forged.
            if token.last_key.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "page_token",
                    "is not a page token of this list",
                ));
            }
            Some(token.last_key)
        };
        Ok(Self { size, after, query })
    }

    /// A page of `size` rows after `key`, for the server's own paging
    /// (a watcher replaying from its cursor), which hands out no token.
    pub fn after_key(size: usize, key: Option<String>) -> Self {
        Self {
            size: size.clamp(1, MAX_PAGE_SIZE),
            after: key,
            query: 0,
        }
    }

    /// How many rows to fetch: one more than a page, to know whether another
    /// page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::try_from(self.size + 1).unwrap_or(i64::MAX)
    }

    /// Trims the extra row and returns the token for the next page, if any.
    pub fn finish<T>(&self, rows: &mut Vec<T>, key: impl Fn(&T) -> String) -> String {
        if rows.len() > self.size {
            rows.truncate(self.size);
            rows.last()
                .map(|last| {
                    URL_SAFE_NO_PAD.encode(
                        Token {
                            last_key: key(last),
                            query: self.query,
                        }
                        .encode_to_vec(),
                    )
                })
                .unwrap_or_default()
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_defaulted_and_coerced() {
        assert_eq!(PageRequest::new(0, "", "q").unwrap().size, 50);
        assert_eq!(PageRequest::new(7, "", "q").unwrap().size, 7);
        assert_eq!(PageRequest::new(5000, "", "q").unwrap().size, 1000);
        assert!(PageRequest::new(-1, "", "q").is_err());
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_the_query() {
        let p = PageRequest::new(2, "", "q").unwrap();
        let mut rows = vec!["a", "b", "c"];
        let token = p.finish(&mut rows, |s| s.to_string());
        assert_eq!(rows, ["a", "b"]);
        assert!(!token.is_empty());
        assert_eq!(
            PageRequest::new(2, &token, "q").unwrap().after.as_deref(),
            Some("b")
        );
        assert!(PageRequest::new(2, &token, "other").is_err());
        assert!(PageRequest::new(2, "!!!", "q").is_err());
        assert!(PageRequest::new(2, "AAAA", "q").is_err());

        // A forged token with a NUL in its key, bound to the right query.
        let forged = URL_SAFE_NO_PAD.encode(
            Token {
                last_key: "a\u{0}".into(),
                query: query_hash("q"),
            }
            .encode_to_vec(),
        );
        match PageRequest::new(2, &forged, "q") {
            Err(Error::InvalidArgument(v)) => assert_eq!(v.0[0].field, "page_token"),
            other => panic!("{other:?}"),
        }

        let mut short = vec!["a"];
        assert_eq!(p.finish(&mut short, |s| s.to_string()), "");
    }
}
