//! [`Usage`]: the counts of the calls this replica served since its last
//! flush, aggregated per organization, minute, principal, API key and
//! method.
//!
//! [`Usage::record`] runs on every call, so it is built to cost a hash and
//! an uncontended lock: the key's parts are hashed once (foldhash) as
//! borrowed strings, the hash picks one of a few dozen shards, and inside
//! the shard a map keyed by that hash finds the counter, compared with the
//! borrowed parts. Only a key not seen since the last flush allocates (its
//! strings). Two keys whose 64-bit hashes collide still count apart (see
//! `Shard::collided`).
//!
//! Bounds: each shard holds at most its share of the key cap; a full shard
//! is set aside whole (O(1) under the lock) for the flusher, which is woken
//! early, and recording goes on in an empty one. What is set aside, and
//! what a failed flush gives back, is bounded as well; beyond that the
//! oldest minutes are dropped, counted in `tollgate_usage_dropped_calls_total`
//! and logged.

use std::{
    collections::HashMap,
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::domain::authz::Principal;

/// Microseconds in a minute, the unit counts are aggregated in.
pub const MINUTE_MICROS: i64 = 60_000_000;

/// Distinct keys (organization, minute, principal, API key, method) held
/// between two flushes before the flusher is woken early: about 250 bytes
/// each, so a few megabytes at most.
pub const DEFAULT_MAX_KEYS: usize = 20_000;

/// How many keys, in multiples of the key cap, may wait for a flush that
/// failed or is still to come (set-aside shards, a failed batch) before the
/// oldest minutes are dropped.
const PENDING_FACTOR: usize = 5;

/// What one counter counts: the primary key of a `usage_minutes` row.
/// Ordered like that key, so a flush writes rows in one order on every
/// replica (no deadlocks between concurrent upserts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    /// The organization of the principal.
    pub org: Box<str>,
    /// The start of the minute, in microseconds since the epoch.
    pub bucket_start: i64,
    /// The principal's resource name.
    pub principal: Box<str>,
    /// The API key's resource name; empty when the call used another
    /// credential.
    pub api_key: Box<str>,
    /// The request path, `/tollgate.v1.UserService/GetUser`.
    pub method: Box<str>,
}

/// The counts of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls, refused or not.
    pub calls: u64,
    /// Calls refused by a rate limit.
    pub refused: u64,
    /// Cost units charged.
    pub cost: u64,
}

impl Counts {
    /// One call costing `cost`.
    pub fn one(cost: u32, refused: bool) -> Self {
        Self {
            calls: 1,
            refused: u64::from(refused),
            cost: u64::from(cost),
        }
    }

    /// Adds `other` (saturating: a counter never wraps to a small number).
    pub fn add(&mut self, other: Counts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.refused = self.refused.saturating_add(other.refused);
        self.cost = self.cost.saturating_add(other.cost);
    }
}

/// A key and its counts: one row of a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What was counted.
    pub key: UsageKey,
    /// How much.
    pub counts: Counts,
}

/// The key of one call, borrowed from the principal and the policy, so a
/// key seen before costs no allocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub org: &'a str,
    pub bucket_start: i64,
    pub principal: &'a str,
    pub api_key: &'a str,
    pub method: &'a str,
}

impl Parts<'_> {
    fn matches(&self, key: &UsageKey) -> bool {
        key.bucket_start == self.bucket_start
            && *key.method == *self.method
            && *key.principal == *self.principal
            && *key.api_key == *self.api_key
            && *key.org == *self.org
    }

    fn to_key(self) -> UsageKey {
        UsageKey {
            org: self.org.into(),
            bucket_start: self.bucket_start,
            principal: self.principal.into(),
            api_key: self.api_key.into(),
            method: self.method.into(),
        }
    }
}

/// The start of the minute `micros` falls in.
pub fn minute_of(micros: i64) -> i64 {
    micros - micros.rem_euclid(MINUTE_MICROS)
}

/// Passes a precomputed hash through: the shard maps are keyed by the
/// foldhash of the key's parts, which must not be hashed again.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; FNV-1a keeps any other use correct.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One shard's counters since the last flush.
#[derive(Default)]
struct Shard {
    by_hash: HashMap<u64, Record, BuildHasherDefault<Prehashed>>,
    /// Keys whose hash another key in `by_hash` already has: practically
    /// never, but counts must not depend on luck.
    collided: Vec<Record>,
}

impl Shard {
    fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }

    /// Adds to the counter of `parts` if it exists.
    fn add_existing(&mut self, hash: u64, parts: &Parts<'_>, counts: Counts) -> bool {
        match self.by_hash.get_mut(&hash) {
            None => false,
            Some(r) if parts.matches(&r.key) => {
                r.counts.add(counts);
                true
            }
            Some(_) => match self.collided.iter_mut().find(|r| parts.matches(&r.key)) {
                Some(r) => {
                    r.counts.add(counts);
                    true
                }
                None => false,
            },
        }
    }

    fn insert_new(&mut self, hash: u64, record: Record) {
        use std::collections::hash_map::Entry;
        match self.by_hash.entry(hash) {
            Entry::Vacant(e) => {
                e.insert(record);
            }
            Entry::Occupied(_) => self.collided.push(record),
        }
    }

    fn into_records(self) -> impl Iterator<Item = Record> {
        self.by_hash.into_values().chain(self.collided)
    }
}

/// What waits for the next flush besides the live shards.
#[derive(Default)]
struct Pending {
    /// Shards set aside when they filled up.
    sealed: Vec<Shard>,
    /// What a failed flush gave back.
    retry: Vec<Record>,
    /// Keys in both, for the bound.
    entries: usize,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// `shards.len() - 1`; the length is a power of two.
    shard_mask: usize,
    hasher: foldhash::fast::RandomState,
    /// Keys one shard holds before it is set aside.
    shard_cap: usize,
    pending: Mutex<Pending>,
    /// Keys `pending` holds before the oldest minutes are dropped.
    max_pending: usize,
    /// Wakes the flusher before its interval when a shard filled up.
    flush_wanted: tokio::sync::Notify,
    /// One flush at a time, so a flush that returns has written everything
    /// recorded before it began, even while the periodic one runs.
    flush_lock: tokio::sync::Mutex<()>,
    dropped_calls: AtomicU64,
}

/// The usage counters of this replica. Cheap to clone: clones share the
/// counts.
#[derive(Clone)]
pub struct Usage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage")
            .field("shards", &self.inner.shards.len())
            .field("held_keys", &self.held_keys())
            .finish()
    }
}

impl Default for Usage {
    fn default() -> Self {
        Self::new()
    }
}

impl Usage {
    /// Counters holding at most [`DEFAULT_MAX_KEYS`] keys between flushes.
    pub fn new() -> Self {
        Self::with_max_keys(DEFAULT_MAX_KEYS)
    }

    /// Counters holding at most `max_keys` keys between flushes, over a few
    /// shards per CPU.
    pub fn with_max_keys(max_keys: usize) -> Self {
        let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
        let shards = (cpus * 4).next_power_of_two().clamp(4, 64);
        Self::with_shards(shards, max_keys)
    }

    /// `shards` (rounded up to a power of two) sharing `max_keys`.
    pub(crate) fn with_shards(shards: usize, max_keys: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        let max_keys = max_keys.max(1);
        Self {
            inner: Arc::new(Inner {
                shards: (0..shards).map(|_| Mutex::default()).collect(),
                shard_mask: shards - 1,
                hasher: foldhash::fast::RandomState::default(),
                shard_cap: max_keys.div_ceil(shards),
                pending: Mutex::default(),
                max_pending: max_keys.saturating_mul(PENDING_FACTOR),
                flush_wanted: tokio::sync::Notify::new(),
                flush_lock: tokio::sync::Mutex::new(()),
                dropped_calls: AtomicU64::new(0),
            }),
        }
    }

    /// Counts one call of `principal` to `method` (the request path),
    /// charged `cost`; `refused` when a rate limit refused it. Runs on
    /// every call: a hash, one uncontended lock, and no allocation unless
    /// the key is new since the last flush.
    pub fn record(&self, principal: &Principal, method: &str, cost: u32, refused: bool) {
        self.record_parts(
            Parts {
                org: &principal.org,
                // A minute bucket: the coarse clock (see `clock`).
                bucket_start: minute_of(crate::clock::coarse_unix_micros()),
                principal: principal.name(),
                api_key: principal.credential.api_key().unwrap_or(""),
                method,
            },
            Counts::one(cost, refused),
        );
    }

    /// Adds `counts` to the counter of `parts`.
    pub(crate) fn record_parts(&self, parts: Parts<'_>, counts: Counts) {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one((
            parts.org,
            parts.bucket_start,
            parts.principal,
            parts.api_key,
            parts.method,
        ));
        // The middle bits pick the shard: the map inside uses the low bits
        // (bucket) and the top seven (tag), which stay spread.
        let index = usize::try_from(hash >> 32).unwrap_or(0) & inner.shard_mask;
        let Some(shard) = inner.shards.get(index) else {
            return;
        };
        let mut shard = lock(shard);
        if shard.add_existing(hash, &parts, counts) {
            return;
        }
        let sealed = (shard.len() >= inner.shard_cap).then(|| std::mem::take(&mut *shard));
        shard.insert_new(
            hash,
            Record {
                key: parts.to_key(),
                counts,
            },
        );
        drop(shard);
        if let Some(sealed) = sealed {
            self.set_aside(sealed);
        }
    }

    /// Keeps a full shard for the flusher and wakes it.
    fn set_aside(&self, sealed: Shard) {
        let inner = &*self.inner;
        metrics::counter!("tollgate_usage_early_flushes_total").increment(1);
        let mut pending = lock(&inner.pending);
        if pending.entries + sealed.len() > inner.max_pending {
            // Nothing has been written for a long while (the database is
            // down): keep what already waits and count this shard's calls
            // as dropped, rather than grow without bound.
            let calls: u64 = sealed.into_records().map(|r| r.counts.calls).sum();
            drop(pending);
            self.count_dropped(calls);
        } else {
            pending.entries += sealed.len();
            pending.sealed.push(sealed);
            drop(pending);
        }
        inner.flush_wanted.notify_one();
    }

    /// Takes everything counted so far, merged per key and sorted by key
    /// (the primary key's order).
    pub fn drain(&self) -> Vec<Record> {
        let mut merged: HashMap<UsageKey, Counts> = HashMap::new();
        let mut merge = |r: Record| merged.entry(r.key).or_default().add(r.counts);
        for shard in self.inner.shards.iter() {
            let taken = std::mem::take(&mut *lock(shard));
            taken.into_records().for_each(&mut merge);
        }
        let pending = std::mem::take(&mut *lock(&self.inner.pending));
        for shard in pending.sealed {
            shard.into_records().for_each(&mut merge);
        }
        pending.retry.into_iter().for_each(&mut merge);
        let mut out: Vec<Record> = merged
            .into_iter()
            .map(|(key, counts)| Record { key, counts })
            .collect();
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Gives back the records of a flush that failed, for the next one
    /// (which merges them with what was counted since). Keeps the newest
    /// minutes within the bound and counts the calls of the rest as
    /// dropped.
    pub fn restore(&self, mut records: Vec<Record>) {
        let inner = &*self.inner;
        let mut pending = lock(&inner.pending);
        let room = inner.max_pending.saturating_sub(pending.entries);
        let mut dropped = 0;
        if records.len() > room {
            records.sort_unstable_by_key(|r| std::cmp::Reverse(r.key.bucket_start));
            dropped = records.drain(room..).map(|r| r.counts.calls).sum();
        }
        pending.entries += records.len();
        pending.retry.extend(records);
        drop(pending);
        self.count_dropped(dropped);
    }

    fn count_dropped(&self, calls: u64) {
        if calls == 0 {
            return;
        }
        self.inner.dropped_calls.fetch_add(calls, Ordering::Relaxed);
        metrics::counter!("tollgate_usage_dropped_calls_total").increment(calls);
        tracing::error!(
            calls,
            "usage counts dropped: the flushes cannot keep up or the database is unavailable"
        );
    }

    /// Calls whose counts were dropped since start (the bound was reached).
    pub fn dropped_calls(&self) -> u64 {
        self.inner.dropped_calls.load(Ordering::Relaxed)
    }

    /// Keys held now, live and waiting; for tests and `Debug`.
    pub fn held_keys(&self) -> usize {
        let live: usize = self.inner.shards.iter().map(|s| lock(s).len()).sum();
        live + lock(&self.inner.pending).entries
    }

    /// Calls held now, not yet written; logged when a final flush fails.
    pub fn held_calls(&self) -> u64 {
        let live: u64 = self
            .inner
            .shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.by_hash
                    .values()
                    .chain(&s.collided)
                    .map(|r| r.counts.calls)
                    .sum::<u64>()
            })
            .sum();
        let pending = lock(&self.inner.pending);
        let waiting: u64 = pending
            .sealed
            .iter()
            .flat_map(|s| s.by_hash.values().chain(&s.collided))
            .chain(&pending.retry)
            .map(|r| r.counts.calls)
            .sum();
        live + waiting
    }

    /// Woken when a shard filled up.
    pub(super) fn flush_wanted(&self) -> &tokio::sync::Notify {
        &self.inner.flush_wanted
    }

    /// Held by the flush running.
    pub(super) fn flush_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.flush_lock
    }
}

/// A counter lock. Nothing panics while holding one, but a poisoned lock
/// still holds valid counts: keep them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        authz::{Credential, Roles},
        names::PrincipalKind,
    };

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    fn parts<'a>(
        org: &'a str,
        at: i64,
        principal: &'a str,
        key: &'a str,
        method: &'a str,
    ) -> Parts<'a> {
        Parts {
            org,
            bucket_start: minute_of(at),
            principal,
            api_key: key,
            method,
        }
    }

    fn totals(records: &[Record]) -> Counts {
        let mut c = Counts::default();
        records.iter().for_each(|r| c.add(r.counts));
        c
    }

    #[test]
    fn minutes_start_on_the_minute() {
        assert_eq!(minute_of(T0), T0);
        assert_eq!(minute_of(T0 + 59_999_999), T0);
        assert_eq!(minute_of(T0 + 60_000_000), T0 + MINUTE_MICROS);
        assert_eq!(minute_of(-1), -MINUTE_MICROS);
    }

    #[test]
    fn calls_aggregate_per_key_and_minute() {
        let u = Usage::with_shards(4, 1000);
        let m1 = "/tollgate.v1.UserService/GetUser";
        let m2 = "/tollgate.v1.UserService/ListUsers";
        for i in 0..5 {
            u.record_parts(parts("acme", T0 + i, "p", "k", m1), Counts::one(2, false));
        }
        u.record_parts(parts("acme", T0, "p", "k", m1), Counts::one(2, true));
        u.record_parts(parts("acme", T0, "p", "k", m2), Counts::one(5, false));
        // Next minute, another key, another principal, another org.
        u.record_parts(
            parts("acme", T0 + MINUTE_MICROS, "p", "k", m1),
            Counts::one(2, false),
        );
        u.record_parts(parts("acme", T0, "p", "", m1), Counts::one(2, false));
        u.record_parts(parts("acme", T0, "q", "k", m1), Counts::one(2, false));
        u.record_parts(parts("beta", T0, "p", "k", m1), Counts::one(2, false));
        assert_eq!(u.held_keys(), 6);

        let records = u.drain();
        assert_eq!(records.len(), 6);
        let first = &records[0];
        assert_eq!(
            (
                &*first.key.org,
                first.key.bucket_start,
                &*first.key.principal,
                &*first.key.api_key,
                &*first.key.method
            ),
            ("acme", T0, "p", "", m1),
            "sorted like the primary key"
        );
        let get = |principal: &str, key: &str, method: &str, bucket: i64| {
            records
                .iter()
                .find(|r| {
                    &*r.key.principal == principal
                        && &*r.key.api_key == key
                        && &*r.key.method == method
                        && r.key.bucket_start == bucket
                        && &*r.key.org == "acme"
                })
                .map(|r| r.counts)
        };
        assert_eq!(
            get("p", "k", m1, T0),
            Some(Counts {
                calls: 6,
                refused: 1,
                cost: 12
            })
        );
        assert_eq!(
            get("p", "k", m2, T0),
            Some(Counts {
                calls: 1,
                refused: 0,
                cost: 5
            })
        );
        assert_eq!(
            get("p", "k", m1, T0 + MINUTE_MICROS).map(|c| c.calls),
            Some(1)
        );
        assert!(u.drain().is_empty(), "drained");
        assert_eq!(u.held_keys(), 0);
    }

    #[test]
    fn record_reads_the_principal_and_its_key() {
        let u = Usage::with_shards(1, 10);
        let p = Principal::new(
            "acme".into(),
            PrincipalKind::ServiceAccount,
            "bot".into(),
            Roles::default(),
        );
        u.record(&p, "/m", 3, false);
        let keyed = p.clone().with_credential(Credential::ApiKey(
            "organizations/acme/serviceAccounts/bot/apiKeys/k1".into(),
        ));
        u.record(&keyed, "/m", 3, true);
        let records = u.drain();
        assert_eq!(records.len(), 2);
        assert_eq!(&*records[0].key.api_key, "", "no key: empty");
        assert_eq!(
            &*records[1].key.api_key,
            "organizations/acme/serviceAccounts/bot/apiKeys/k1"
        );
        assert_eq!(
            &*records[1].key.principal,
            "organizations/acme/serviceAccounts/bot"
        );
        assert_eq!(records[1].counts.refused, 1);
        assert_eq!(records[0].key.bucket_start % MINUTE_MICROS, 0);
    }

    #[test]
    fn hash_collisions_count_apart() {
        let mut shard = Shard::default();
        let a = parts("acme", T0, "a", "", "/m");
        let b = parts("acme", T0, "b", "", "/m");
        // Two different keys under one hash, as a collision would put them.
        for p in [a, b] {
            if !shard.add_existing(7, &p, Counts::one(1, false)) {
                shard.insert_new(
                    7,
                    Record {
                        key: p.to_key(),
                        counts: Counts::one(1, false),
                    },
                );
            }
        }
        assert!(shard.add_existing(7, &b, Counts::one(1, false)));
        assert!(shard.add_existing(7, &a, Counts::one(1, false)));
        assert_eq!(shard.len(), 2);
        let mut calls: Vec<_> = shard
            .into_records()
            .map(|r| (r.key.principal.to_string(), r.counts.calls))
            .collect();
        calls.sort();
        assert_eq!(calls, [("a".into(), 2), ("b".into(), 2)]);
    }

    #[tokio::test]
    async fn a_full_shard_is_set_aside_and_wakes_the_flusher() {
        // Four shards of one key each: the fifth distinct key fills one.
        let u = Usage::with_shards(4, 4);
        for i in 0..5 {
            let p = format!("p{i}");
            u.record_parts(parts("acme", T0, &p, "", "/m"), Counts::one(1, false));
        }
        // The permit was stored: this completes at once.
        tokio::time::timeout(
            std::time::Duration::from_millis(100),
            u.flush_wanted().notified(),
        )
        .await
        .expect("the flusher was woken");
        assert_eq!(u.held_keys(), 5, "nothing lost");
        let records = u.drain();
        assert_eq!(records.len(), 5);
        assert_eq!(totals(&records).calls, 5);
        assert_eq!(u.dropped_calls(), 0);
    }

    #[test]
    fn a_failed_flush_is_merged_into_the_next() {
        let u = Usage::with_shards(2, 100);
        u.record_parts(parts("acme", T0, "p", "", "/m"), Counts::one(1, false));
        let failed = u.drain();
        // Counted while the failed flush ran.
        u.record_parts(parts("acme", T0, "p", "", "/m"), Counts::one(1, false));
        u.record_parts(parts("acme", T0, "q", "", "/m"), Counts::one(1, false));
        u.restore(failed);
        let records = u.drain();
        assert_eq!(records.len(), 2, "merged per key");
        assert_eq!(records[0].counts.calls, 2);
        assert_eq!(records[1].counts.calls, 1);
        assert_eq!(u.dropped_calls(), 0);
    }

    #[test]
    fn what_waits_is_bounded_and_the_excess_counted() {
        // max_keys 2: at most 10 keys wait.
        let u = Usage::with_shards(1, 2);
        let failed: Vec<Record> = (0..12)
            .map(|i| Record {
                key: parts("acme", T0 + i * MINUTE_MICROS, "p", "", "/m").to_key(),
                counts: Counts::one(1, false),
            })
            .collect();
        u.restore(failed);
        assert_eq!(u.dropped_calls(), 2);
        let kept = u.drain();
        assert_eq!(kept.len(), 10);
        assert_eq!(
            kept.iter().map(|r| r.key.bucket_start).min(),
            Some(T0 + 2 * MINUTE_MICROS),
            "the oldest minutes go first"
        );

        // Shards set aside while nothing flushes: bounded the same way.
        let u = Usage::with_shards(1, 2);
        for i in 0..40 {
            let p = format!("p{i}");
            u.record_parts(parts("acme", T0, &p, "", "/m"), Counts::one(1, false));
        }
        assert!(u.held_keys() <= 2 + 10, "{}", u.held_keys());
        let held = totals(&u.drain()).calls;
        assert_eq!(held + u.dropped_calls(), 40, "every call kept or counted");
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let u = Usage::with_max_keys(1000);
        std::thread::scope(|s| {
            for t in 0..4 {
                let u = u.clone();
                s.spawn(move || {
                    for i in 0..10_000 {
                        let p = format!("p{}", (i + t) % 50);
                        u.record_parts(parts("acme", T0, &p, "k", "/m"), Counts::one(3, false));
                    }
                });
            }
        });
        let records = u.drain();
        let c = totals(&records);
        assert_eq!(c.calls + u.dropped_calls(), 40_000);
        assert_eq!(u.dropped_calls(), 0);
        assert_eq!(c.cost, 120_000);
        assert_eq!(records.len(), 50);
    }

    /// The hot path's cost. Run with
    /// `cargo test -p tollgate-server --release usage::recorder::tests::bench_record -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn bench_record() {
        let u = Usage::new();
        let principal = Principal::new(
            "acme".into(),
            PrincipalKind::ServiceAccount,
            "service-account-for-batch-jobs".into(),
            Roles::default(),
        )
        .with_credential(Credential::ApiKey(
            "organizations/acme/serviceAccounts/service-account-for-batch-jobs/apiKeys/k0123456789abcdef"
                .into(),
        ));
        let methods = [
            "/tollgate.v1.UserService/GetUser",
            "/tollgate.v1.UserService/ListUsers",
            "/tollgate.v1.ApiKeyService/GetApiKey",
            "/tollgate.v1.OrganizationService/GetOrganization",
        ];
        let n = 2_000_000u32;
        for m in methods {
            u.record(&principal, m, 1, false);
        }
        let start = std::time::Instant::now();
        for i in 0..n {
            let m = methods[(i & 3) as usize];
            u.record(std::hint::black_box(&principal), m, 1, false);
        }
        let one = start.elapsed() / n;
        let threads = 2;
        let start = std::time::Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                let u = u.clone();
                let principal = principal.clone();
                s.spawn(move || {
                    for i in 0..n {
                        let m = methods[(i & 3) as usize];
                        u.record(std::hint::black_box(&principal), m, 1, false);
                    }
                });
            }
        });
        let both = start.elapsed() / (n * threads);
        let start = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(crate::clock::coarse_unix_micros());
        }
        let clock = start.elapsed() / n;
        eprintln!(
            "record: {} ns/call on one thread, {} ns/call wall over {threads} threads \
             (of which the clock read: {} ns)",
            one.as_nanos(),
            both.as_nanos(),
            clock.as_nanos()
        );
        assert_eq!(
            totals(&u.drain()).calls,
            u64::from(n) * u64::from(threads + 1) + 4
        );
    }
}
