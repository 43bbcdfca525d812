//! Rate limits and quotas: policies compiled per organization, decided by
//! a backend (in-process, or Redis shared by every replica).
//!
//! - [`limit`]: what one counter enforces ([`Limit`]) and what a decision
//!   answers ([`Decision`]); the arithmetic both backends share.
//! - [`redis`]: the Redis backend ([`RedisLimiter`]), shared by every
//!   replica: one round trip of `EVALSHA` calls per decision.

pub mod limit;
pub mod redis;

pub use self::redis::{RedisLimitError, RedisLimiter};
pub use limit::{Algorithm, Charge, Decision, Limit, QuotaWindow, State};
