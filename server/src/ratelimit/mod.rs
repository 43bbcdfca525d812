//! Rate limits and quotas: policies compiled per organization, decided by
//! a backend (in-process, or Redis shared by every replica).
//!
//! - [`limit`]: what one counter enforces ([`Limit`]) and what a decision
//!   answers ([`Decision`]); the arithmetic both backends share.

pub mod limit;

pub use limit::{Algorithm, Charge, Decision, Limit, QuotaWindow, State};
