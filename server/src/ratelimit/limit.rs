//! What one counter enforces and what a decision answers, shared by the
//! in-process and the Redis backends so both give the same answers.

use std::time::Duration;

/// How a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Generic cell rate algorithm: one "theoretical arrival time" per key.
    /// `limit` units per `period` emitted smoothly, `burst` at once.
    Gcra,
    /// Two fixed windows weighted by the overlap: at most `limit` per
    /// rolling `period`; `burst` is unused.
    SlidingWindow,
    /// A fixed calendar window (UTC day or month) holding `limit` units;
    /// resets at the window's end.
    Quota(QuotaWindow),
}

/// The calendar window of a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaWindow {
    /// From midnight UTC to the next.
    Day,
    /// From the first of the month, midnight UTC, to the next first.
    Month,
}

/// What one counter enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// How it counts.
    pub algorithm: Algorithm,
    /// Units per period (per window for quotas); at least 1.
    pub limit: u64,
    /// The period; for quotas, unused (the calendar decides).
    pub period: Duration,
    /// Units allowed at once (GCRA); at least 1, `limit` by default.
    pub burst: u64,
}

/// One charge within a decision: `cost` units against the counter `key`
/// under `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Charge<'a> {
    /// The counter's identity, unique across policies and partitions
    /// (`{policy uid}:{partition}`); the backends prefix and hash-tag it.
    pub key: &'a str,
    /// What the counter enforces.
    pub limit: &'a Limit,
    /// Units to take; zero asks without taking (a free call still learns
    /// its remaining allowance).
    pub cost: u64,
    /// Answer as if charged, but take nothing.
    pub dry_run: bool,
}

/// The answer for one charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the charge fits. A refused charge takes nothing.
    pub allowed: bool,
    /// The limit, for the headers (`limit`, or `burst` for GCRA: what a
    /// full counter holds).
    pub limit: u64,
    /// Units left after this charge.
    pub remaining: u64,
    /// Until the counter is full again (GCRA, sliding window) or the
    /// window resets (quota).
    pub reset_after: Duration,
    /// When refused: until the same charge would fit. Zero when allowed.
    pub retry_after: Duration,
}

/// A counter's state, as the in-process backend keeps it; the Redis
/// script keeps the same numbers in one string per counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// GCRA: the theoretical arrival time, in µs since the epoch.
    Tat(u64),
    /// Sliding window: the current window's index (`now / period`) and the
    /// counts of it and the one before.
    Windows {
        /// `now / period` of the current window.
        index: u64,
        /// Units taken in the current window.
        current: u64,
        /// Units taken in the window before.
        previous: u64,
    },
    /// Quota: the window's end (µs since the epoch) and the units taken.
    Quota {
        /// When the window resets.
        end: u64,
        /// Units taken in it.
        used: u64,
    },
}

const MICROS_PER_DAY: u64 = 86_400_000_000;

impl Limit {
    /// Whole microseconds per unit (GCRA's emission interval), at least 1.
    pub fn emission_interval_us(&self) -> u64 {
        (duration_us(self.period) / self.limit.max(1)).max(1)
    }

    /// Decides `cost` units at `now_us` (µs since the Unix epoch) against
    /// `state` (`None` for a counter never charged or evicted), and
    /// returns the answer with the state to keep (unchanged when refused
    /// or dry-run). Pure, so the backends agree and tests can pin it.
    pub fn decide(
        &self,
        state: Option<State>,
        now_us: u64,
        cost: u64,
        dry_run: bool,
    ) -> (Decision, Option<State>) {
        match self.algorithm {
            Algorithm::Gcra => self.gcra(state, now_us, cost, dry_run),
            Algorithm::SlidingWindow => self.sliding(state, now_us, cost, dry_run),
            Algorithm::Quota(window) => self.quota(window, state, now_us, cost, dry_run),
        }
    }

    fn gcra(
        &self,
        state: Option<State>,
        now: u64,
        cost: u64,
        dry_run: bool,
    ) -> (Decision, Option<State>) {
        let t = self.emission_interval_us();
        let burst = self.burst.max(1);
        let tolerance = t.saturating_mul(burst);
        let tat = match state {
            Some(State::Tat(tat)) => tat.max(now),
            _ => now,
        };
        let new_tat = tat.saturating_add(t.saturating_mul(cost));
        let allow_at = new_tat.saturating_sub(tolerance);
        if allow_at > now {
            // What is left without this charge, and when it would fit.
            let remaining = (now + tolerance).saturating_sub(tat) / t;
            let decision = Decision {
                allowed: false,
                limit: burst,
                remaining,
                reset_after: us(tat - now),
                retry_after: us(allow_at - now),
            };
            return (decision, state);
        }
        let remaining = (now + tolerance - new_tat) / t;
        let decision = Decision {
            allowed: true,
            limit: burst,
            remaining,
            reset_after: us(new_tat - now),
            retry_after: Duration::ZERO,
        };
        let kept = if dry_run || cost == 0 {
            state
        } else {
            Some(State::Tat(new_tat))
        };
        (decision, kept)
    }

    fn sliding(
        &self,
        state: Option<State>,
        now: u64,
        cost: u64,
        dry_run: bool,
    ) -> (Decision, Option<State>) {
        let period = duration_us(self.period).max(1);
        let index = now / period;
        let (current, previous) = match state {
            Some(State::Windows {
                index: i,
                current,
                previous,
            }) if i == index => (current, previous),
            Some(State::Windows {
                index: i, current, ..
            }) if i + 1 == index => (0, current),
            _ => (0, 0),
        };
        let into = now - index * period;
        // The previous window's share still inside the rolling period, in
        // units, rounded up so the estimate never undercounts.
        let weighted = |prev: u64, into: u64| {
            (prev as u128 * (period - into) as u128).div_ceil(period as u128) as u64
        };
        let used = weighted(previous, into) + current;
        let limit = self.limit;
        if used + cost > limit {
            let retry = self.sliding_retry(current, previous, into, period, cost);
            let decision = Decision {
                allowed: false,
                limit,
                remaining: limit.saturating_sub(used),
                reset_after: us(2 * period - into),
                retry_after: retry,
            };
            return (decision, state);
        }
        let decision = Decision {
            allowed: true,
            limit,
            remaining: limit - used - cost,
            reset_after: us(if current + cost > 0 {
                2 * period - into
            } else {
                period - into
            }),
            retry_after: Duration::ZERO,
        };
        let kept = if dry_run || cost == 0 {
            state
        } else {
            Some(State::Windows {
                index,
                current: current + cost,
                previous,
            })
        };
        (decision, kept)
    }

    /// How long until `cost` fits a sliding window holding `current` and
    /// `previous`, `into` µs into the current window.
    fn sliding_retry(
        &self,
        current: u64,
        previous: u64,
        into: u64,
        period: u64,
        cost: u64,
    ) -> Duration {
        let limit = self.limit;
        if cost > limit {
            return us(2 * period - into);
        }
        // Within this window: the previous window's weight must fall to
        // (limit - current - cost) / previous.
        if current + cost <= limit && previous > 0 {
            let room = limit - current - cost;
            // weighted(previous, x) <= room  ⇔  previous·(period − x) <= room·period
            let x = period - (room as u128 * period as u128 / previous as u128) as u64;
            if x < period {
                return us(x.saturating_sub(into).max(1));
            }
        }
        // In the next window, `current` becomes the previous one.
        let room = limit - cost;
        let x = if current == 0 {
            0
        } else {
            period.saturating_sub((room as u128 * period as u128 / current as u128) as u64)
        };
        us(period - into + x)
    }

    fn quota(
        &self,
        window: QuotaWindow,
        state: Option<State>,
        now: u64,
        cost: u64,
        dry_run: bool,
    ) -> (Decision, Option<State>) {
        let end = window.end_after(now);
        let used = match state {
            Some(State::Quota { end: e, used }) if e == end => used,
            _ => 0,
        };
        let limit = self.limit;
        let reset_after = us(end - now);
        if used + cost > limit {
            let decision = Decision {
                allowed: false,
                limit,
                remaining: limit.saturating_sub(used),
                reset_after,
                retry_after: reset_after,
            };
            return (decision, state);
        }
        let decision = Decision {
            allowed: true,
            limit,
            remaining: limit - used - cost,
            reset_after,
            retry_after: Duration::ZERO,
        };
        let kept = if dry_run || cost == 0 {
            state
        } else {
            Some(State::Quota {
                end,
                used: used + cost,
            })
        };
        (decision, kept)
    }
}

impl Limit {
    /// Parses a configured GCRA limit: `LIMIT/UNIT[,burst=N]` with UNIT
    /// one of `s`, `m`, `h`, `d`; `off` is `None`.
    pub fn parse_spec(spec: &str) -> Result<Option<Limit>, String> {
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (rate, burst) = match spec.split_once(',') {
            Some((rate, rest)) => {
                let n = rest
                    .trim()
                    .strip_prefix("burst=")
                    .ok_or("expected `,burst=N` after the rate")?;
                (rate, Some(n.trim()))
            }
            None => (spec, None),
        };
        let (limit, unit) = rate
            .split_once('/')
            .ok_or("expected LIMIT/UNIT such as 100/s, or off")?;
        let limit: u64 = limit
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or("the limit must be a whole number of at least 1")?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err("the unit must be one of s, m, h, d".into()),
        };
        let burst = match burst {
            Some(b) => b
                .parse()
                .ok()
                .filter(|&n: &u64| n > 0)
                .ok_or("burst must be a whole number of at least 1")?,
            None => limit,
        };
        Ok(Some(Limit {
            algorithm: Algorithm::Gcra,
            limit,
            period,
            burst,
        }))
    }
}

impl QuotaWindow {
    /// The end of the window holding `now_us` (µs since the epoch, UTC).
    pub fn end_after(self, now_us: u64) -> u64 {
        let day = now_us / MICROS_PER_DAY;
        match self {
            QuotaWindow::Day => (day + 1) * MICROS_PER_DAY,
            QuotaWindow::Month => {
                let (y, m, _) = civil_from_days(day as i64);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) as u64 * MICROS_PER_DAY
            }
        }
    }
}

// Howard Hinnant's civil-calendar algorithms (public domain): a month's
// first day without pulling a date crate into the hot path.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn us(micros: u64) -> Duration {
    Duration::from_micros(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn gcra(limit: u64, period: Duration, burst: u64) -> Limit {
        Limit {
            algorithm: Algorithm::Gcra,
            limit,
            period,
            burst,
        }
    }

    fn run(limit: &Limit, calls: usize, now: u64, cost: u64) -> (usize, Vec<Decision>) {
        let mut state = None;
        let mut allowed = 0;
        let mut refused = Vec::new();
        for _ in 0..calls {
            let (d, s) = limit.decide(state, now, cost, false);
            state = s;
            if d.allowed {
                allowed += 1;
            } else {
                refused.push(d);
            }
        }
        (allowed, refused)
    }

    #[test]
    fn gcra_allows_exactly_the_burst_at_once_and_says_when_the_next_fits() {
        let limit = gcra(10, Duration::from_secs(1), 4);
        let (allowed, refused) = run(&limit, 20, 1_000 * SEC, 1);
        assert_eq!(allowed, 4);
        assert_eq!(refused.len(), 16);
        // One unit every 100 ms.
        assert!(
            refused
                .iter()
                .all(|d| d.retry_after == Duration::from_millis(100))
        );
        assert!(refused.iter().all(|d| d.remaining == 0));
    }

    #[test]
    fn gcra_refills_at_the_rate_and_charges_cost() {
        let limit = gcra(10, Duration::from_secs(1), 10);
        let now = 1_000 * SEC;
        let (d, s) = limit.decide(None, now, 7, false);
        assert!(d.allowed);
        assert_eq!(d.remaining, 3);
        let (d, s2) = limit.decide(s, now, 4, false);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));
        assert_eq!(s2, s, "a refusal takes nothing");
        let (d, _) = limit.decide(s, now + 100_000, 4, false);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn configured_limits_parse() {
        assert_eq!(Limit::parse_spec("off"), Ok(None));
        let l = Limit::parse_spec("100/s,burst=200").unwrap().unwrap();
        assert_eq!(
            (l.limit, l.period, l.burst),
            (100, Duration::from_secs(1), 200)
        );
        assert_eq!(Limit::parse_spec("5/m").unwrap().unwrap().burst, 5);
        for bad in ["", "0/s", "-1/s", "5/w", "5", "5/s,burst=0", "5/s,b=2"] {
            assert!(Limit::parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dry_run_and_zero_cost_take_nothing() {
        let limit = gcra(1, Duration::from_secs(60), 1);
        let (d, s) = limit.decide(None, SEC, 1, true);
        assert!(d.allowed);
        assert_eq!(s, None);
        let (d, s) = limit.decide(None, SEC, 0, false);
        assert!(d.allowed && d.remaining == 1 && s.is_none());
    }

    #[test]
    fn sliding_window_is_a_hard_count_per_period() {
        let limit = Limit {
            algorithm: Algorithm::SlidingWindow,
            limit: 5,
            period: Duration::from_secs(60),
            burst: 5,
        };
        let start = 6_000 * 60 * SEC; // a window boundary
        let (allowed, refused) = run(&limit, 8, start, 1);
        assert_eq!(allowed, 5);
        // At the start of a window, all five must age out: 2 periods.
        assert!(
            refused
                .iter()
                .all(|d| d.retry_after > Duration::from_secs(60))
        );
        // Half-way through the next window, half the previous still counts.
        let mut state = None;
        for _ in 0..5 {
            state = limit.decide(state, start, 1, false).1;
        }
        let (d, _) = limit.decide(state, start + 90 * SEC, 3, false);
        assert!(!d.allowed, "2.5 (rounded up to 3) + 3 > 5");
        let (d, _) = limit.decide(state, start + 90 * SEC, 2, false);
        assert!(d.allowed);
        // The promised retry really fits.
        let (d, _) = limit.decide(state, start + 90 * SEC, 3, false);
        let at = start + 90 * SEC + d.retry_after.as_micros() as u64;
        assert!(limit.decide(state, at, 3, false).0.allowed);
        assert!(!limit.decide(state, at - 2, 3, false).0.allowed);
    }

    #[test]
    fn quotas_reset_at_the_calendar_boundary() {
        // 2026-11-25T12:00:00Z
        let now = 1_795_608_000 * SEC;
        let day_end = QuotaWindow::Day.end_after(now);
        assert_eq!(day_end, 1_795_651_200 * SEC); // 2026-11-26T00:00:00Z
        let month_end = QuotaWindow::Month.end_after(now);
        assert_eq!(month_end, 1_796_083_200 * SEC); // 2026-12-01T00:00:00Z
        // December rolls into the next year.
        assert_eq!(
            QuotaWindow::Month.end_after(1_796_083_200 * SEC),
            1_798_761_600 * SEC
        );
        let limit = Limit {
            algorithm: Algorithm::Quota(QuotaWindow::Day),
            limit: 3,
            period: Duration::ZERO,
            burst: 3,
        };
        let (allowed, refused) = run(&limit, 5, now, 1);
        assert_eq!(allowed, 3);
        assert_eq!(refused[0].retry_after, Duration::from_secs(12 * 3600));
        let (_, s) = limit.decide(None, now, 3, false);
        assert!(
            limit.decide(s, day_end, 1, false).0.allowed,
            "a new day starts empty"
        );
    }
}
