//! A bounded concurrent cache whose entries live at most a fixed time.
//!
//! quick_cache, not moka, for the caches read on every authenticated call:
//! a moka read records itself for the eviction policy through a channel and
//! an epoch pin, about 250 ns per read under load on two cores, where a
//! quick_cache read is a shard's read lock and a hash table probe
//! (BENCHMARKS.md, "Caches and link-time optimisation"). quick_cache has
//! no time to live, so each entry carries its deadline and a read past it
//! is a miss (and removes the entry); eviction by size is quick_cache's
//! own (S3-FIFO). Deadlines are read off the coarse clock (`clock`): a
//! TTL is seconds, a tick is milliseconds.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hash},
    time::{Duration, Instant},
};

use quick_cache::{Equivalent, UnitWeighter, sync::DefaultLifecycle};

/// A value with the instant it stops being served.
#[derive(Clone)]
struct Timed<V> {
    value: V,
    expires: Instant,
}

/// See the module doc. Values are cloned out on a hit, so they are
/// `Arc`s or small. The hasher is std's SipHash unless the owner says
/// otherwise: some keys (API key ids) are chosen by whoever calls, and
/// misses are remembered too.
pub struct TtlCache<K, V, S = RandomState> {
    inner: quick_cache::sync::Cache<K, Timed<V>, UnitWeighter, S, DefaultLifecycle<K, Timed<V>>>,
    ttl: Duration,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// Holds about `capacity` entries, each for at most `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Self::with_hasher(capacity, ttl, RandomState::new())
    }
}

impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone> TtlCache<K, V, S> {
    /// Like [`TtlCache::new`], hashing keys with `hasher`.
    pub fn with_hasher(capacity: u64, ttl: Duration, hasher: S) -> Self {
        let items = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        Self {
            inner: quick_cache::sync::Cache::with(
                items,
                capacity.max(1),
                UnitWeighter,
                hasher,
                DefaultLifecycle::default(),
            ),
            ttl,
        }
    }

    /// The live entry for `key`, if any.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let hit = self.inner.get(key)?;
        let now = crate::clock::coarse_now();
        if hit.expires <= now {
            // Only if still the expired one: a fresh insert may have won.
            self.inner.remove_if(key, |t| t.expires <= now);
            return None;
        }
        Some(hit.value)
    }

    /// Caches `value` for `key` from now for the TTL, replacing any entry.
    pub fn insert(&self, key: K, value: V) {
        let expires = crate::clock::coarse_now() + self.ttl;
        self.inner.insert(key, Timed { value, expires });
    }

    /// Forgets `key`.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        self.inner.remove(key);
    }

    /// Forgets every entry for which `stale` answers true. Walks the whole
    /// cache under each shard's write lock in turn: for the rare writes
    /// that touch entries by something other than their key.
    pub fn invalidate_entries_if(&self, stale: impl Fn(&K, &V) -> bool) {
        self.inner.retain(|k, t| !stale(k, &t.value));
    }

    /// Forgets everything.
    pub fn invalidate_all(&self) {
        self.inner.clear();
    }

    /// How many entries are held (expired ones until they are read or
    /// pushed out).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether nothing is held.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = TtlCache::new(10, Duration::from_millis(30));
        c.insert("a".to_owned(), 1);
        assert_eq!(c.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get("a"), None);
        assert!(c.is_empty(), "an expired entry read is removed");
        c.insert("a".to_owned(), 2);
        assert_eq!(c.get("a"), Some(2), "a fresh insert serves again");
    }

    #[test]
    fn the_size_bound_holds() {
        let c = TtlCache::new(100, Duration::from_secs(60));
        for i in 0..10_000u32 {
            c.insert(i, i);
        }
        assert!(
            c.len() <= 110,
            "{} entries held for a bound of 100",
            c.len()
        );
        assert_eq!(c.get(&9_999), Some(9_999), "the newest entry is kept");
    }

    #[test]
    fn invalidation_by_key_by_predicate_and_all() {
        let c = TtlCache::new(100, Duration::from_secs(60));
        for i in 0..10u32 {
            c.insert(i, i * 10);
        }
        c.invalidate(&3);
        assert_eq!(c.get(&3), None);
        c.invalidate_entries_if(|k, v| *k % 2 == 0 || *v == 90);
        assert_eq!(
            (0..10).filter(|k| c.get(k).is_some()).collect::<Vec<_>>(),
            vec![1, 5, 7]
        );
        c.invalidate_all();
        assert!(c.is_empty());
    }
}
