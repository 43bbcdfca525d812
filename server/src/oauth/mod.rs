//! Tollgate as an OAuth 2.1 / OpenID Connect provider.
//!
//! - [`keys`]: the signing keys ([`keys::KeyRing`]): creation at first
//!   start, rotation, the JWKS document, and signing and verifying JWTs;
//!   [`kek`]: the key-encryption key that encrypts the keys' private parts
//!   in the database; [`jwk`]: key material: generation, signatures,
//!   public JWKs; [`refresher`]: the background task that reloads and
//!   rotates the keys.
//! - [`claims`]: what access and ID tokens say.
//! - [`provider`]: the grants, introspection and revocation, shared by the
//!   HTTP endpoints and `TokenService`; [`endpoints`]: the HTTP endpoints
//!   (discovery, JWKS, token, introspect, revoke, userinfo).
//! - [`authorize`]: `/oauth2/authorize`, the sign-in and consent flow;
//!   [`pages`]: its HTML; [`session`]: its signed cookies and form tokens.
//! - [`verifier`]: access tokens as credentials, verified once and cached.
//! - [`throttle`]: the brute-force lockout of sign-ins and client
//!   authentication.
//! - [`error`]: the RFC error codes, rendered as RFC JSON or as statuses.

pub mod authorize;
pub mod claims;
pub mod endpoints;
pub mod error;
pub mod jwk;
pub mod kek;
pub mod keys;
pub mod pages;
pub mod provider;
pub mod refresher;
pub mod session;
pub mod throttle;
pub mod verifier;
