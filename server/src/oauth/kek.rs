//! The key-encryption key (KEK): AES-256-GCM over the signing keys'
//! private parts, so a database dump alone signs nothing. The key lives in
//! a file of its own (32 random bytes, base64), never in the database;
//! each encrypted row records the KEK's fingerprint ([`Kek::id`]) so a
//! start with another key is refused instead of failing later.

use std::{fmt, path::Path};

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey},
    hkdf, hmac,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use sha2::{Digest, Sha256};

use crate::domain::{Error, Result};

/// Length of the key in bytes (AES-256).
pub const KEK_LEN: usize = 32;

/// A loaded key-encryption key. Its bytes never leave this type.
pub struct Kek {
    key: RandomizedNonceKey,
    /// HKDF-Extract of the key, from which [`Kek::hmac_key`] expands
    /// purpose-bound keys.
    prk: hkdf::Prk,
    id: String,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).finish()
    }
}

impl Kek {
    /// The key of `bytes` (exactly [`KEK_LEN`] of them).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != KEK_LEN {
            return Err(Error::Internal(format!(
                "a key-encryption key has {KEK_LEN} bytes, not {}",
                bytes.len()
            )));
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes)
            .map_err(|_| Error::Internal("AES-256-GCM key setup failed".into()))?;
        let digest = Sha256::digest(bytes);
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"tollgate kek hkdf v1").extract(bytes);
        Ok(Self { key, prk, id })
    }

    /// A fresh random key (tests, and [`Kek::create_file`]).
    pub fn generate() -> Result<(Self, [u8; KEK_LEN])> {
        let mut bytes = [0u8; KEK_LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| Error::Internal("no randomness for a key-encryption key".into()))?;
        Ok((Self::from_bytes(&bytes)?, bytes))
    }

    /// Reads the key file at `path`: base64 of 32 bytes, surrounding
    /// whitespace ignored.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read the key-encryption key {}: {e}", path.display())
        })?;
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            anyhow::anyhow!(
                "the key-encryption key {} is not base64 (expected {KEK_LEN} random bytes, \
                 e.g. from `head -c 32 /dev/urandom | base64`)",
                path.display()
            )
        })?;
        if bytes.len() != KEK_LEN {
            anyhow::bail!(
                "the key-encryption key {} holds {} bytes; it must hold {KEK_LEN}",
                path.display(),
                bytes.len()
            );
        }
        Ok(Self::from_bytes(&bytes)?)
    }

    /// Creates a new random key file at `path` (mode 0600, its directory
    /// 0700 when missing); fails if the file exists, so an existing key is
    /// never overwritten.
    pub fn create_file(path: &Path) -> anyhow::Result<Self> {
        use std::{
            io::Write,
            os::unix::fs::{DirBuilderExt, OpenOptionsExt},
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let (kek, bytes) = Self::generate()?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        writeln!(file, "{}", STANDARD.encode(bytes))
            .and_then(|()| file.sync_all())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        Ok(kek)
    }

    /// The fingerprint stored beside every key it encrypts: the first 16
    /// hex digits of the SHA-256 of the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// An HMAC-SHA256 key for `purpose` (HKDF-Expand of this key with
    /// `purpose` as info): the same on every replica sharing the KEK, so
    /// cookies and form tokens one replica signs verify on another, and
    /// independent per purpose, so one kind of token never passes as
    /// another.
    pub fn hmac_key(&self, purpose: &str) -> hmac::Key {
        let info = [purpose.as_bytes()];
        match self.prk.expand(&info, hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            // Unreachable: 32 bytes is far below HKDF's 255-block limit.
            // Falling back to a random key fails closed (nothing verifies).
            Err(_) => {
                let mut random = [0u8; 32];
                let _ = aws_lc_rs::rand::fill(&mut random);
                hmac::Key::new(hmac::HMAC_SHA256, &random)
            }
        }
    }

    /// Encrypts `plaintext` bound to `kid` (the associated data, so a
    /// ciphertext moved to another row does not decrypt). Returns base64
    /// of nonce ‖ ciphertext ‖ tag.
    pub fn encrypt(&self, kid: &str, plaintext: &[u8]) -> Result<String> {
        let mut in_out = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(kid.as_bytes()), &mut in_out)
            .map_err(|_| Error::Internal("sealing with the key-encryption key failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + in_out.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&in_out);
        Ok(STANDARD.encode(out))
    }

    /// Decrypts what [`Kek::encrypt`] made for `kid`; fails for another
    /// key, another `kid` or a changed ciphertext.
    pub fn decrypt(&self, kid: &str, sealed: &str) -> Result<Vec<u8>> {
        let refused = || {
            Error::Internal(format!(
                "{kid} does not decrypt with the key-encryption key"
            ))
        };
        let mut bytes = STANDARD.decode(sealed).map_err(|_| refused())?;
        if bytes.len() < NONCE_LEN {
            return Err(refused());
        }
        let nonce = Nonce::try_assume_unique_for_key(&bytes[..NONCE_LEN]).map_err(|_| refused())?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut bytes[NONCE_LEN..])
            .map_err(|_| refused())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypts_and_decrypts_bound_to_the_kid() {
        let (kek, _) = Kek::generate().unwrap();
        let sealed = kek.encrypt("k1", b"private").unwrap();
        assert!(!sealed.contains("private"));
        assert_eq!(kek.decrypt("k1", &sealed).unwrap(), b"private");
        // A fresh nonce per encryption.
        assert_ne!(kek.encrypt("k1", b"private").unwrap(), sealed);
        assert!(kek.decrypt("k2", &sealed).is_err(), "another row's kid");
        let (other, _) = Kek::generate().unwrap();
        assert_ne!(other.id(), kek.id());
        assert!(other.decrypt("k1", &sealed).is_err(), "another KEK");
        let mut tampered = STANDARD.decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(kek.decrypt("k1", &STANDARD.encode(tampered)).is_err());
        assert!(kek.decrypt("k1", "AAAA").is_err(), "too short");
    }

    #[test]
    fn hmac_keys_are_per_kek_and_per_purpose() {
        let bytes = [7u8; KEK_LEN];
        let a = Kek::from_bytes(&bytes).unwrap();
        let b = Kek::from_bytes(&bytes).unwrap();
        let tag = hmac::sign(&a.hmac_key("session"), b"data");
        // Another replica with the same KEK verifies it.
        assert!(hmac::verify(&b.hmac_key("session"), b"data", tag.as_ref()).is_ok());
        assert!(hmac::verify(&b.hmac_key("csrf"), b"data", tag.as_ref()).is_err());
        let (other, _) = Kek::generate().unwrap();
        assert!(hmac::verify(&other.hmac_key("session"), b"data", tag.as_ref()).is_err());
    }

    #[test]
    fn the_file_round_trips_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("kek");
        let created = Kek::create_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Kek::load(&path).unwrap();
        assert_eq!(loaded.id(), created.id());
        assert_eq!(created.id().len(), 16);
        let sealed = created.encrypt("k", b"x").unwrap();
        assert_eq!(loaded.decrypt("k", &sealed).unwrap(), b"x");
        assert!(Kek::create_file(&path).is_err(), "never overwritten");
        std::fs::write(&path, "c2hvcnQ=\n").unwrap();
        assert!(Kek::load(&path).unwrap_err().to_string().contains("32"));
        assert!(Kek::load(&dir.path().join("none")).is_err());
    }
}
