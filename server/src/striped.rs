//! [`StripedCounter`]: a Prometheus counter for the paths every call
//! takes (requests by method and code, cache hits).
//!
//! The exporter's counter is one atomic, and every increment also bumps
//! its generation, another atomic: two read-modify-writes on cache lines
//! that both cores write, so under load each increment waits for the line
//! to come over from the other core. A striped counter adds to a line of
//! the calling thread's own (`thread_local` gives each thread its slot,
//! `CachePadded` keeps slots off each other's lines) and hands the sum to
//! the exporter's counter when flushed: before every scrape of
//! `/metrics` and every few seconds ([`flush_all`]), and when dropped.
//! A scrape therefore reads every call made before it began.

use std::sync::{
    Arc, Mutex, PoisonError, Weak,
    atomic::{AtomicU64, Ordering},
};

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;

/// A counter whose increments stay on the calling thread's cache line
/// until [`StripedCounter::flush`] adds them to the exporter's counter.
pub struct StripedCounter {
    slots: ThreadLocal<CachePadded<AtomicU64>>,
    /// The sum of the slots already added to `target`.
    flushed: Mutex<u64>,
    target: metrics::Counter,
}

impl std::fmt::Debug for StripedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripedCounter")
            .field("total", &self.total())
            .finish_non_exhaustive()
    }
}

/// Every live striped counter, for [`flush_all`].
fn registry() -> &'static Mutex<Vec<Weak<StripedCounter>>> {
    static REGISTRY: Mutex<Vec<Weak<StripedCounter>>> = Mutex::new(Vec::new());
    &REGISTRY
}

impl StripedCounter {
    /// A counter flushed into `target` (a handle of the installed
    /// recorder).
    pub fn new(target: metrics::Counter) -> Arc<Self> {
        let counter = Arc::new(Self {
            slots: ThreadLocal::new(),
            flushed: Mutex::new(0),
            target,
        });
        let mut all = registry().lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|c| c.strong_count() > 0);
        all.push(Arc::downgrade(&counter));
        counter
    }

    /// Adds `n`.
    pub fn increment(&self, n: u64) {
        let slot = self.slots.get_or_default();
        // Only this thread writes its slot, so a load and a store (no
        // locked instruction) cannot lose an increment; `flush` reads it.
        slot.store(
            slot.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Everything added so far, flushed or not.
    pub fn total(&self) -> u64 {
        self.slots.iter().fold(0u64, |sum, slot| {
            sum.wrapping_add(slot.load(Ordering::Relaxed))
        })
    }

    /// Adds to the exporter's counter what it has not seen yet.
    pub fn flush(&self) {
        let mut flushed = self.flushed.lock().unwrap_or_else(PoisonError::into_inner);
        let total = self.total();
        let delta = total.wrapping_sub(*flushed);
        if delta > 0 {
            self.target.increment(delta);
            *flushed = total;
        }
    }
}

impl Drop for StripedCounter {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Flushes every live striped counter: called before `/metrics` renders
/// and by the metrics upkeep.
pub fn flush_all() {
    let live: Vec<Arc<StripedCounter>> = {
        let mut all = registry().lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|c| c.strong_count() > 0);
        all.iter().filter_map(Weak::upgrade).collect()
    };
    for counter in live {
        counter.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorder-less counter handle that keeps its value, to read back.
    fn target() -> (metrics::Counter, Arc<AtomicU64>) {
        let value = Arc::new(AtomicU64::new(0));
        (metrics::Counter::from_arc(value.clone()), value)
    }

    #[test]
    fn increments_from_many_threads_reach_the_target_when_flushed() {
        let (handle, value) = target();
        let counter = StripedCounter::new(handle);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        counter.increment(1);
                    }
                });
            }
        });
        assert_eq!(counter.total(), 40_000);
        assert_eq!(value.load(Ordering::Relaxed), 0, "nothing before a flush");
        counter.flush();
        assert_eq!(value.load(Ordering::Relaxed), 40_000);
        counter.increment(5);
        flush_all();
        assert_eq!(value.load(Ordering::Relaxed), 40_005, "flush_all finds it");
        counter.flush();
        assert_eq!(
            value.load(Ordering::Relaxed),
            40_005,
            "a flush adds only the new"
        );
    }

    #[test]
    fn a_dropped_counter_flushes_what_it_held() {
        let (handle, value) = target();
        let counter = StripedCounter::new(handle);
        counter.increment(3);
        drop(counter);
        assert_eq!(value.load(Ordering::Relaxed), 3);
    }
}
