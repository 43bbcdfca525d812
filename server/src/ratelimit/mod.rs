//! Rate limits and quotas: policies compiled per organization, decided by
//! a backend (in-process, or Redis shared by every replica).
//!
//! - [`limit`]: what one counter enforces ([`Limit`]) and what a decision
//!   answers ([`Decision`]); the arithmetic both backends share.
//! - [`rules`]: policies compiled for matching, most specific first.
//! - [`limiter`]: the decision for one call ([`RateLimiter`]).
//! - [`local`]: the in-process backend (bounded, idle keys evicted).
//! - [`redis`]: the Redis backend ([`RedisLimiter`]), shared by every
//!   replica: one round trip of `EVALSHA` calls per decision.

pub mod descriptors;
pub mod headers;
pub mod limit;
pub mod limiter;
pub mod local;
pub mod redis;
pub mod refusal;
pub mod reload;
pub mod rules;

pub use self::redis::{RedisLimitError, RedisLimiter};
pub use limit::{Algorithm, Charge, Decision, Limit, QuotaWindow, State};
pub use limiter::{Defaults, Outcome, Outcomes, RateLimiter, Verdict};
pub use rules::{Facts, KeyBy, MethodMatch, Rule, RuleSet};
