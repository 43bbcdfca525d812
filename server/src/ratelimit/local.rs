//! The in-process backend: counters in sharded maps, bounded, with idle
//! counters evicted.
//!
//! Written by hand rather than with `governor`: a governor keyed limiter
//! holds one quota for all its keys (our policies change at run time and
//! each call carries its own cost), its store has no size bound or
//! eviction (governor#171: callers must sweep it themselves), and it knows
//! neither sliding windows nor calendar quotas. Above all the Redis
//! backend must answer exactly as this one does, so both run the same
//! arithmetic ([`Limit::decide`]); what is left here is a bounded map.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use super::limit::{Algorithm, Charge, Decision, Limit, State};

/// Shards: enough that two cores rarely meet on one lock.
const SHARDS: usize = 64;

/// Counters by key, bounded to `capacity` keys in all. Cheap to share
/// behind an `Arc`.
#[derive(Debug)]
pub struct Local {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::FixedState,
    per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    counters: HashMap<Box<str>, Counter, foldhash::fast::FixedState>,
    /// Counters forgotten to stay within the bound while still live.
    evicted_live: u64,
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    state: State,
    /// When the state no longer matters (µs since the epoch): a GCRA
    /// counter back to full, a sliding window's two periods gone, a
    /// quota's window over. Past it, the counter is as good as absent.
    idle_at: u64,
}

impl Counter {
    /// `state`, kept at `now_us` under `limit`.
    fn kept(limit: &Limit, state: State, now_us: u64) -> Self {
        Self {
            state,
            idle_at: idle_at(limit, &state, now_us),
        }
    }
}

impl Local {
    /// A store holding at most `capacity` counters (at least one per
    /// shard).
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: foldhash::fast::FixedState::with_seed(rand_seed()),
            per_shard,
        }
    }

    /// Decides every charge at the wall clock's now (quotas follow the
    /// calendar, so the wall clock it is; GCRA tolerates it stepping
    /// back). Each charge stands alone: a refused one takes nothing, and
    /// the others keep what they took (as Envoy's rate-limit service).
    pub fn decide(&self, charges: &[Charge<'_>]) -> Vec<Decision> {
        let now = now_us();
        charges.iter().map(|c| self.decide_one(c, now)).collect()
    }

    /// One charge at `now_us`.
    pub fn decide_one(&self, charge: &Charge<'_>, now_us: u64) -> Decision {
        let shard = &self.shards[(self.hasher.hash_one(charge.key) as usize) % SHARDS];
        // A poisoned shard only means another call panicked mid-update of
        // plain integers: the data is still usable.
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        // One lookup for a known key, decided and updated in place: the
        // key is hashed and compared once, not once to read and again to
        // write.
        if let Some(counter) = shard.counters.get_mut(charge.key) {
            let state = (counter.idle_at > now_us).then_some(counter.state);
            let (decision, kept) = charge
                .limit
                .decide(state, now_us, charge.cost, charge.dry_run);
            if let Some(kept) = kept
                && Some(kept) != state
            {
                *counter = Counter::kept(charge.limit, kept, now_us);
            }
            return decision;
        }
        let (decision, kept) = charge
            .limit
            .decide(None, now_us, charge.cost, charge.dry_run);
        if let Some(kept) = kept {
            if shard.counters.len() >= self.per_shard {
                shard.make_room(now_us);
            }
            let counter = Counter::kept(charge.limit, kept, now_us);
            shard.counters.insert(charge.key.into(), counter);
        }
        decision
    }

    /// Counters held now, expired ones included until swept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).counters.len())
            .sum()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live counters forgotten because the bound was reached: each let
    /// its caller start afresh. Non-zero means the capacity is too small
    /// for the key set.
    pub fn evicted_live(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).evicted_live)
            .sum()
    }

    /// Drops idle counters everywhere; the server runs it now and then so
    /// memory follows the live key set, not the largest it ever was.
    pub fn sweep(&self) {
        let now = now_us();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            shard.counters.retain(|_, c| c.idle_at > now);
            if shard.counters.capacity() > 4 * shard.counters.len().max(16) {
                shard.counters.shrink_to_fit();
            }
        }
    }
}

impl Shard {
    /// Frees at least one slot: idle counters first; when every counter
    /// is live, the ones closest to idle (they have the least left to
    /// remember), an eighth of the shard at once so the sweep amortizes.
    fn make_room(&mut self, now: u64) {
        let before = self.counters.len();
        self.counters.retain(|_, c| c.idle_at > now);
        if self.counters.len() < before {
            return;
        }
        let mut idle: Vec<u64> = self.counters.values().map(|c| c.idle_at).collect();
        let drop = (idle.len() / 8).max(1);
        let (_, cut, _) = idle.select_nth_unstable(drop - 1);
        let cut = *cut;
        let mut dropped = 0u64;
        self.counters.retain(|_, c| {
            let keep = c.idle_at > cut;
            dropped += u64::from(!keep);
            keep
        });
        self.evicted_live += dropped;
    }
}

/// When `state` stops mattering; the Redis script sets the same PEXPIRE.
pub fn idle_at(limit: &Limit, state: &State, now_us: u64) -> u64 {
    match (limit.algorithm, state) {
        (Algorithm::Gcra, State::Tat(tat)) => (*tat).max(now_us + 1),
        (Algorithm::SlidingWindow, State::Windows { index, .. }) => {
            let period = u64::try_from(limit.period.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            (index + 2).saturating_mul(period)
        }
        (Algorithm::Quota(_), State::Quota { end, .. }) => *end,
        // A state of another algorithm (the policy changed): forget it soon.
        _ => now_us + 1,
    }
}

/// Microseconds since the Unix epoch by the wall clock.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A per-process seed, so nobody can aim keys at one shard from outside.
fn rand_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now_us());
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::limit::QuotaWindow;

    fn gcra(limit: u64, burst: u64) -> Limit {
        Limit {
            algorithm: Algorithm::Gcra,
            limit,
            period: Duration::from_secs(60),
            burst,
        }
    }

    fn charge<'a>(key: &'a str, limit: &'a Limit) -> Charge<'a> {
        Charge {
            key,
            limit,
            cost: 1,
            dry_run: false,
        }
    }

    #[test]
    fn counts_per_key_exactly() {
        let store = Local::new(1000);
        let limit = gcra(5, 3);
        let allowed = (0..10)
            .filter(|_| store.decide(&[charge("a", &limit)])[0].allowed)
            .count();
        assert_eq!(allowed, 3);
        assert!(
            store.decide(&[charge("b", &limit)])[0].allowed,
            "keys are apart"
        );
    }

    #[test]
    fn each_charge_of_a_decision_stands_alone() {
        let store = Local::new(1000);
        let rate = gcra(100, 100);
        let quota = Limit {
            algorithm: Algorithm::Quota(QuotaWindow::Day),
            limit: 1,
            period: Duration::ZERO,
            burst: 1,
        };
        let d = store.decide(&[charge("r", &rate), charge("q", &quota)]);
        assert!(d[0].allowed && d[1].allowed);
        let d = store.decide(&[charge("r", &rate), charge("q", &quota)]);
        assert!(d[0].allowed && !d[1].allowed);
        assert_eq!(d[0].remaining, 98);
    }

    #[test]
    fn memory_stays_bounded_and_live_evictions_are_counted() {
        let store = Local::new(SHARDS * 4);
        let limit = gcra(1, 1);
        for i in 0..10_000 {
            store.decide(&[charge(&format!("k{i}"), &limit)]);
        }
        assert!(store.len() <= SHARDS * 4, "{}", store.len());
        assert!(store.evicted_live() > 0);
    }

    #[test]
    fn idle_counters_go_first_and_sweep_drops_them() {
        let store = Local::new(SHARDS);
        // One unit per microsecond: idle again at once.
        let fast = Limit {
            algorithm: Algorithm::Gcra,
            limit: 1_000_000,
            period: Duration::from_secs(1),
            burst: 1,
        };
        for i in 0..100 {
            store.decide(&[charge(&format!("k{i}"), &fast)]);
        }
        std::thread::sleep(Duration::from_millis(2));
        store.sweep();
        assert_eq!(store.len(), 0);
    }
}
