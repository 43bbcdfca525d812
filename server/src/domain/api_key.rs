//! The API key format: `tg_<key id>_<secret>`. The key id is not secret and
//! locates the stored row; only the SHA-256 digest of the whole key is kept,
//! compared in constant time.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this, so scanners and `Bearer` parsing can tell
/// keys from JWTs.
pub const PREFIX: &str = "tg_";
/// Length of the key id: a letter then 15 of `[a-z0-9]`, about 80 bits.
pub const KEY_ID_LEN: usize = 16;
/// Length of the secret: 43 of `[A-Za-z0-9]`, about 256 bits.
pub const SECRET_LEN: usize = 43;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A whole key. Its `Debug` and `Display` print nothing of the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl SecretKey {
    /// The key itself, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A freshly minted key and what is stored of it.
#[derive(Debug)]
pub struct MintedKey {
    /// The public part that locates the stored row; also the key's id in
    /// its resource name.
    pub key_id: String,
    /// The whole key, to show its owner once and never store.
    pub secret: SecretKey,
    /// Hex SHA-256 of the whole key.
    pub digest: String,
}

/// Mints a key from the OS-seeded thread RNG.
pub fn mint() -> MintedKey {
    let mut rng = rand::rng();
    let mut key_id = String::with_capacity(KEY_ID_LEN);
    key_id.push(char::from(LOWER[rng.random_range(0..LOWER.len())]));
    for _ in 1..KEY_ID_LEN {
        key_id.push(char::from(
            LOWER_DIGITS[rng.random_range(0..LOWER_DIGITS.len())],
        ));
    }
    let mut key = String::with_capacity(PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN);
    key.push_str(PREFIX);
    key.push_str(&key_id);
    key.push('_');
    for _ in 0..SECRET_LEN {
        key.push(char::from(ALNUM[rng.random_range(0..ALNUM.len())]));
    }
    let digest = hex(&Sha256::digest(key.as_bytes()));
    MintedKey {
        key_id,
        secret: SecretKey(key),
        digest,
    }
}

/// A presented key, split and hashed; the secret itself is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    /// Which stored key to compare against.
    pub key_id: String,
    digest: [u8; 32],
}

impl PresentedKey {
    /// Parses a presented credential; `None` when it is not shaped like a
    /// Tollgate key (the caller then answers UNAUTHENTICATED).
    pub fn parse(token: &str) -> Option<Self> {
        let rest = token.strip_prefix(PREFIX)?;
        let (key_id, secret) = rest.split_at_checked(KEY_ID_LEN)?;
        let secret = secret.strip_prefix('_')?;
        let id_ok = key_id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let secret_ok =
            secret.len() == SECRET_LEN && secret.bytes().all(|c| c.is_ascii_alphanumeric());
        if !id_ok || !secret_ok {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        Some(Self {
            key_id: key_id.to_owned(),
            digest,
        })
    }

    /// Constant-time comparison with a stored hex digest.
    pub fn matches(&self, stored_hex: &str) -> bool {
        StoredDigest::parse(stored_hex).is_some_and(|stored| self.matches_digest(&stored))
    }

    /// Constant-time comparison with a stored digest decoded before (the
    /// resolved-key cache keeps it decoded, so a call compares bytes).
    pub fn matches_digest(&self, stored: &StoredDigest) -> bool {
        stored.matches(&self.digest)
    }
}

/// A stored SHA-256 digest, decoded from its hex form once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredDigest([u8; 32]);

impl StoredDigest {
    /// Decodes a stored hex digest; `None` when malformed (no presented
    /// key then matches it).
    pub fn parse(hex: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        unhex(hex, &mut out).then_some(Self(out))
    }

    /// Whether `presented` (the SHA-256 of a presented secret) is this
    /// digest, compared in constant time.
    pub fn matches(&self, presented: &[u8; 32]) -> bool {
        // Four words rather than 32 bytes: `subtle` guards each element
        // compared with an optimisation barrier, and a call pays for each
        // (about 290 instructions for the bytes, a tenth of that for the
        // words). Still no early exit and no branch on the data.
        let words = |b: &[u8; 32]| -> [u64; 4] {
            std::array::from_fn(|i| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&b[i * 8..i * 8 + 8]);
                u64::from_le_bytes(w)
            })
        };
        words(&self.0).ct_eq(&words(presented)).into()
    }
}

/// Lower-case hex, the stored form of digests.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Reads a stored hex SHA-256 digest into `out`; false when malformed.
fn unhex(s: &str, out: &mut [u8; 32]) -> bool {
    let b = s.as_bytes();
    if b.len() != 64 {
        return false;
    }
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
            return false;
        };
        out[i] = (hi << 4) | lo;
    }
    true
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_parse_and_match_their_digest() {
        let k = mint();
        let s = k.secret.expose();
        assert!(s.starts_with("tg_"));
        assert_eq!(s.len(), 3 + KEY_ID_LEN + 1 + SECRET_LEN);
        let p = PresentedKey::parse(s).unwrap();
        assert_eq!(p.key_id, k.key_id);
        assert!(p.matches(&k.digest));
        let stored = StoredDigest::parse(&k.digest).unwrap();
        assert!(p.matches_digest(&stored));
        assert!(
            StoredDigest::parse("zz").is_none(),
            "a malformed digest decodes to nothing"
        );
        assert!(crate::domain::names::validate_user_id("k", &k.key_id).is_ok());
        assert_ne!(mint().secret, k.secret);
    }

    #[test]
    fn tampered_or_malformed_keys_are_refused() {
        let k = mint();
        let s = k.secret.expose();
        let mut tampered = s.to_owned();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'a' { 'b' } else { 'a' });
        assert!(!PresentedKey::parse(&tampered).unwrap().matches(&k.digest));
        let stored = StoredDigest::parse(&k.digest).unwrap();
        assert!(
            !PresentedKey::parse(&tampered)
                .unwrap()
                .matches_digest(&stored)
        );
        for bad in [
            "",
            "tg_",
            "tg_short_x",
            "Bearer",
            &s[..s.len() - 1],
            &s.replace("tg_", "xx_"),
        ] {
            assert!(PresentedKey::parse(bad).is_none(), "{bad}");
        }
        assert!(!PresentedKey::parse(s).unwrap().matches("not hex"));
    }

    #[test]
    fn a_digest_differing_in_any_one_bit_does_not_match() {
        let stored = StoredDigest([0x5a; 32]);
        assert!(stored.matches(&[0x5a; 32]));
        for byte in 0..32 {
            for bit in 0..8 {
                let mut presented = [0x5a; 32];
                presented[byte] ^= 1 << bit;
                assert!(!stored.matches(&presented), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = mint();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(k.secret.expose()));
        assert!(dbg.contains("redacted"));
    }
}
