//! Tollgate as an OAuth 2.1 / OpenID Connect provider.
//!
//! - [`error`]: the RFC error codes, rendered as RFC JSON or as statuses;
//! - [`claims`]: what access and ID tokens say.
pub mod error;
pub mod claims;

pub mod throttle;
