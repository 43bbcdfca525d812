//! Clock readings for times that need milliseconds, not nanoseconds:
//! cache deadlines, idle timeouts, HTTP/2 keep-alive, usage minutes.
//!
//! A call reads the clock a dozen times on its way through hyper, the
//! listener, the caches and the usage counter. The precise clock costs
//! about 30 ns a read on this project's VMs (the vDSO reads the TSC and
//! scales it); the kernel's coarse clock, the time of the last timer tick,
//! costs about 8 ns and is at most one tick (1–4 ms) behind. Latency
//! figures and request deadlines keep the precise clock.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

/// The monotonic clock as of the kernel's last tick, as a std [`Instant`]
/// (comparable with `Instant::now()` to within a tick).
pub fn coarse_now() -> Instant {
    imp::coarse_now()
}

/// Microseconds since the Unix epoch, as of the kernel's last tick.
pub fn coarse_unix_micros() -> i64 {
    imp::coarse_unix().map_or_else(crate::domain::now_micros, |d| {
        i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
    })
}

/// A hyper timer whose `now` is [`coarse_now`]: hyper reads it on every
/// HTTP/2 frame received when keep-alive is on, to time the next ping,
/// which is a matter of seconds. Its sleeps are [`CoarseSleep`]s.
#[derive(Clone, Debug, Default)]
pub struct CoarseTimer;

impl CoarseTimer {
    /// tokio's timer, with the coarse clock.
    pub fn new() -> Self {
        Self
    }
}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep::new(tokio::time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep::new(tokio::time::sleep_until(deadline.into())))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        // A new sleep rather than tokio's reset: the registered waker must
        // be forgotten with the old deadline, and keep-alive resets once
        // an interval (seconds), not per call.
        *sleep = self.sleep_until(new_deadline);
    }

    fn now(&self) -> Instant {
        coarse_now()
    }
}

/// How far ahead of the coarse clock a deadline must be for
/// [`CoarseSleep`] to answer "not yet" without asking tokio: two ticks of
/// the slowest kernel tick (10 ms), the reading's own lag and the base's,
/// with room to spare.
const COARSE_SLACK: Duration = Duration::from_millis(50);

pin_project_lite::pin_project! {
    /// A tokio sleep that answers "not yet" from the coarse clock while
    /// its deadline is far off and the polling task is the one tokio will
    /// wake.
    ///
    /// hyper polls its keep-alive timer on every wake of an HTTP/2
    /// connection, nearly once a request; tokio's `Sleep` then spends
    /// its coop budget and registers the waker again, some 190
    /// instructions a call for a timer that fires every 30 s. Once tokio
    /// holds the task's waker, nothing is lost by not asking it again
    /// until the deadline is near: tokio wakes the task at the deadline,
    /// and by then the coarse clock is within `COARSE_SLACK` of it, so
    /// that poll goes to tokio. The sleep runs outside the coop budget
    /// (`unconstrained`), so a pending answer from tokio always means its
    /// waker is registered, never that the budget ran out.
    pub struct CoarseSleep {
        #[pin]
        inner: tokio::task::coop::Unconstrained<tokio::time::Sleep>,
        deadline: Instant,
        // The waker tokio holds, once a poll of `inner` registered it.
        registered: Option<Waker>,
    }
}

impl CoarseSleep {
    fn new(sleep: tokio::time::Sleep) -> Self {
        Self {
            deadline: sleep.deadline().into_std(),
            inner: tokio::task::coop::unconstrained(sleep),
            registered: None,
        }
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let known = this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if known && coarse_now() + COARSE_SLACK < *this.deadline {
            return Poll::Pending;
        }
        let poll = this.inner.poll(cx);
        if poll.is_pending() && !known {
            *this.registered = Some(cx.waker().clone());
        }
        poll
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

#[cfg(target_os = "linux")]
mod imp {
    use std::{
        sync::OnceLock,
        time::{Duration, Instant},
    };

    use rustix::time::{ClockId, Timespec, clock_gettime};

    /// A std instant and the coarse clock's reading taken together: std's
    /// `Instant` cannot be made from a reading, only offset from another.
    fn base() -> &'static (Instant, Timespec) {
        static BASE: OnceLock<(Instant, Timespec)> = OnceLock::new();
        BASE.get_or_init(|| (Instant::now(), clock_gettime(ClockId::MonotonicCoarse)))
    }

    /// hyper reads this on every HTTP/2 frame (see `CoarseTimer`): the
    /// offset is taken field by field, without the division that
    /// `Duration::from_nanos` would make.
    pub(super) fn coarse_now() -> Instant {
        let (instant, base) = base();
        let t = clock_gettime(ClockId::MonotonicCoarse);
        let (mut secs, mut nanos) = (t.tv_sec - base.tv_sec, t.tv_nsec - base.tv_nsec);
        if nanos < 0 {
            secs -= 1;
            nanos += 1_000_000_000;
        }
        // The clock is monotonic: never before `base`.
        let since = Duration::new(
            u64::try_from(secs).unwrap_or(0),
            u32::try_from(nanos).unwrap_or(0),
        );
        *instant + since
    }

    pub(super) fn coarse_unix() -> Option<Duration> {
        let t = clock_gettime(ClockId::RealtimeCoarse);
        Some(Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        ))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    pub(super) fn coarse_now() -> Instant {
        Instant::now()
    }

    pub(super) fn coarse_unix() -> Option<Duration> {
        SystemTime::now().duration_since(UNIX_EPOCH).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_stays_within_a_few_ticks_of_the_precise_one() {
        for _ in 0..1000 {
            let (before, coarse, after) = (Instant::now(), coarse_now(), Instant::now());
            // One tick behind at most, and the base pair's own tick ahead.
            let slack = Duration::from_millis(25);
            assert!(coarse + slack >= before, "{coarse:?} far behind {before:?}");
            assert!(coarse <= after + slack, "{coarse:?} far ahead of {after:?}");
        }
        let precise = crate::domain::now_micros();
        let coarse = coarse_unix_micros();
        assert!((precise - coarse).abs() < 25_000, "{precise} vs {coarse}");
    }

    /// What a reading costs. Run with `cargo test -p tollgate-server
    /// --release clock::tests::bench_reads -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn bench_reads() {
        fn per_read<T>(f: impl Fn() -> T) -> u128 {
            let n = 5_000_000u32;
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(f());
            }
            start.elapsed().as_nanos() / u128::from(n)
        }
        eprintln!(
            "Instant::now {} ns, coarse_now {} ns, now_micros {} ns, coarse_unix_micros {} ns",
            per_read(Instant::now),
            per_read(coarse_now),
            per_read(crate::domain::now_micros),
            per_read(coarse_unix_micros),
        );
    }

    /// Polled on every tick of a 1 ms interval, as hyper polls it on
    /// every wake of a busy connection: the answers from the coarse clock
    /// must not keep it from firing at its deadline.
    #[tokio::test]
    async fn a_coarse_sleep_polled_often_fires_at_its_deadline() {
        use hyper::rt::Timer;
        let timer = CoarseTimer::new();
        let start = Instant::now();
        let mut sleep = timer.sleep(Duration::from_millis(300));
        let mut ticks = tokio::time::interval(Duration::from_millis(1));
        let mut polls = 0u32;
        loop {
            tokio::select! {
                () = sleep.as_mut() => break,
                _ = ticks.tick() => polls += 1,
            }
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(299), "{took:?}");
        assert!(took < Duration::from_millis(700), "{took:?}");
        assert!(polls > 50, "polled only {polls} times");

        // Reset far off, then near: the near deadline is kept.
        let start = Instant::now();
        let mut sleep = timer.sleep(Duration::from_secs(30));
        assert!(futures::poll!(sleep.as_mut()).is_pending());
        timer.reset(&mut sleep, Instant::now() + Duration::from_millis(100));
        loop {
            tokio::select! {
                () = sleep.as_mut() => break,
                _ = ticks.tick() => {}
            }
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(99), "{took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
    }

    /// The coarse answer is given only to the task tokio will wake: a
    /// poll by another waker goes to tokio, which then holds that one.
    #[tokio::test]
    async fn a_coarse_sleep_asks_tokio_again_for_another_waker() {
        let mut sleep = Box::pin(CoarseSleep::new(tokio::time::sleep(Duration::from_secs(
            30,
        ))));
        assert!(futures::poll!(sleep.as_mut()).is_pending());
        let first = sleep
            .registered
            .clone()
            .expect("registered after a pending poll");
        let other = futures::task::noop_waker();
        let mut cx = Context::from_waker(&other);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        let now = sleep.registered.clone().expect("still registered");
        assert!(now.will_wake(&other) && !now.will_wake(&first));
    }

    #[test]
    fn the_coarse_clock_advances() {
        let start = coarse_now();
        std::thread::sleep(Duration::from_millis(30));
        assert!(coarse_now() >= start + Duration::from_millis(20));
    }
}
