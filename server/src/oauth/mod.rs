//! Tollgate as an OAuth 2.1 / OpenID Connect provider.
//!
//! Submodules:
//! - [`keys`]: the signing keys ([`keys::KeyRing`]): creation at first
//!   start, rotation, the JWKS document, and signing and verifying JWTs.
//! - [`kek`]: the key-encryption key that encrypts the keys' private parts
//!   in the database.
//! - [`jwk`]: key material: generation, signatures, public JWKs.
//! - [`refresher`]: the background task that reloads and rotates the keys.

pub mod jwk;
pub mod kek;
pub mod keys;
pub mod refresher;
