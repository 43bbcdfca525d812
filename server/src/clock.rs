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
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::wake::Quiet;

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
/// which is a matter of seconds. Its sleeps are [`QuietSleep`]s.
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
        Box::pin(QuietSleep::new(tokio::time::sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(QuietSleep::new(tokio::time::sleep_until(deadline.into())))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<QuietSleep>() {
            Some(quiet) => quiet.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> Instant {
        coarse_now()
    }
}

pin_project_lite::pin_project! {
    /// A tokio sleep polled only after it woke its task.
    ///
    /// hyper polls its keep-alive timer on every wake of an HTTP/2
    /// connection, nearly once a request; tokio's `Sleep` then spends coop
    /// budget and registers the task's waker again, some 190 instructions
    /// a call for a timer that fires every 30 s. This one is polled with
    /// [`Quiet`]'s waker, which notes that tokio woke it: until then, a
    /// poll only records the task's waker and answers "not yet". A wake
    /// from tokio's coop budget goes through the same waker, so it is
    /// never lost.
    pub struct QuietSleep {
        #[pin]
        inner: tokio::time::Sleep,
        quiet: Quiet,
    }
}

impl QuietSleep {
    fn new(inner: tokio::time::Sleep) -> Self {
        Self {
            inner,
            quiet: Quiet::new(),
        }
    }

    /// Moves the deadline; the next poll asks tokio again.
    fn reset(self: Pin<&mut Self>, deadline: Instant) {
        let this = self.project();
        this.inner.reset(deadline.into());
        this.quiet.touch();
    }
}

impl Future for QuietSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if !this.quiet.take(cx) {
            return Poll::Pending;
        }
        this.inner.poll(&mut this.quiet.context())
    }
}

impl hyper::rt::Sleep for QuietSleep {}

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
    /// every wake of a busy connection: the polls it skips must not keep
    /// it from firing at its deadline.
    #[tokio::test]
    async fn a_quiet_sleep_polled_often_fires_at_its_deadline() {
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

    /// A sleep moved later by `reset` fires at its new deadline, not its
    /// old one (the test above moves one earlier).
    #[tokio::test]
    async fn a_reset_quiet_sleep_keeps_its_new_deadline() {
        use hyper::rt::Timer;
        let timer = CoarseTimer::new();
        let start = Instant::now();
        let mut sleep = timer.sleep(Duration::from_millis(50));
        assert!(futures::poll!(sleep.as_mut()).is_pending());
        timer.reset(&mut sleep, start + Duration::from_millis(250));
        sleep.as_mut().await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(249), "{took:?}");
        assert!(took < Duration::from_millis(700), "{took:?}");
    }

    #[test]
    fn the_coarse_clock_advances() {
        let start = coarse_now();
        std::thread::sleep(Duration::from_millis(30));
        assert!(coarse_now() >= start + Duration::from_millis(20));
    }
}
