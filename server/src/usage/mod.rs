//! Usage counters (issue 9, point 6): what each organization's principals
//! called, counted per minute by principal, API key and method, and read
//! back with `UsageService.GetUsage`.
//!
//! Every call is counted in memory on the replica that served it
//! ([`Usage::record`], on the hot path: a sharded map, no allocation for a
//! key already seen since the last flush) and written in batches by
//! [`Usage::run_flusher`]: one transaction per flush, additive upserts of
//! `usage_minutes` rows, plus each used key's `api_keys.last_used_time`.
//! Never a write per call. Figures therefore lag the calls by up to the
//! flush interval (`--usage-flush-interval`, 10 s by default); what is
//! still in memory is not read by GetUsage. Shutdown flushes once more
//! after the listener drained, so a clean stop loses nothing.
//!
//! Memory is bounded: at most [`DEFAULT_MAX_KEYS`] distinct keys are held
//! between flushes (a full shard is set aside and the flusher woken
//! early), and what a failing database keeps back for the next attempt is
//! bounded too. What cannot be kept is counted, never dropped silently:
//! `tollgate_usage_dropped_calls_total`.
//!
//! - [`recorder`]: [`Usage`], the in-memory aggregation.
//! - [`flusher`]: [`Usage::flush_now`] and [`Usage::run_flusher`].
//! - [`query`]: what GetUsage asks ([`UsageQuery`], [`Granularity`]) and
//!   answers ([`UsageRow`]).

pub mod flusher;
pub mod query;
pub mod recorder;

pub use query::{Granularity, UsageQuery, UsageRow};
pub use recorder::{Counts, DEFAULT_MAX_KEYS, MINUTE_MICROS, Record, Usage, UsageKey};
