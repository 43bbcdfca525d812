//! Opaque one-time secrets: authorization codes and refresh tokens. Each
//! is a prefix that says what it is plus 256 random bits in base62; only
//! its SHA-256 digest is stored, so a database dump reveals none.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

/// `tgac_…`: an authorization code.
pub const CODE_PREFIX: &str = "tgac_";
/// `tgrt_…`: a refresh token.
pub const REFRESH_PREFIX: &str = "tgrt_";

/// 43 base62 characters: about 256 bits.
const RANDOM_LEN: usize = 43;
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A minted secret. Its `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A new secret starting with `prefix`.
    pub fn mint(prefix: &str) -> Self {
        let mut rng = rand::rng();
        let mut s = String::with_capacity(prefix.len() + RANDOM_LEN);
        s.push_str(prefix);
        for _ in 0..RANDOM_LEN {
            s.push(char::from(ALNUM[rng.random_range(0..ALNUM.len())]));
        }
        Secret(s)
    }

    /// The secret itself, to hand over once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored of it.
    pub fn digest(&self) -> String {
        digest(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The hex SHA-256 of a presented secret: the key to look its row up by.
/// A lookup by digest leaks no timing about the secret itself (an attacker
/// would need SHA-256 preimages), so no constant-time compare is needed
/// on this path.
pub fn digest(presented: &str) -> String {
    super::api_key::hex(&Sha256::digest(presented.as_bytes()))
}

/// Whether `presented` is shaped like a secret minted with `prefix`, so
/// garbage is refused before it costs a database lookup.
pub fn well_formed(presented: &str, prefix: &str) -> bool {
    presented.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == RANDOM_LEN && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_are_well_formed_distinct_and_redacted() {
        let a = Secret::mint(CODE_PREFIX);
        let b = Secret::mint(CODE_PREFIX);
        assert_ne!(a, b);
        assert!(well_formed(a.expose(), CODE_PREFIX));
        assert!(!well_formed(a.expose(), REFRESH_PREFIX));
        assert!(!well_formed("tgac_short", CODE_PREFIX));
        assert_eq!(a.digest(), digest(a.expose()));
        assert_eq!(a.digest().len(), 64);
        assert!(!format!("{a:?}").contains(&a.expose()[5..]));
    }
}
