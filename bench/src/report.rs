//! Turning rounds into figures: medians, ratios against the baseline, the
//! targets, and the printed table (Markdown, so it pastes into
//! BENCHMARKS.md as is).
//!
//! On a small, noisy machine absolute numbers swing from run to run; what
//! holds still is Tollgate's cost relative to a bare tonic server measured
//! next to it. Each round runs the two targets back to back, and each load
//! row shows the median round by that row's ratio (b/a), so the two figures
//! shown and their ratio come from the same round.

use std::time::Duration;

use crate::child::Memory;

/// Tollgate must keep at least this share of the baseline's throughput.
pub const TARGET_THROUGHPUT_RATIO: f64 = 0.85;
/// Tollgate's p99 may be at most this multiple of the baseline's.
pub const TARGET_P99_RATIO: f64 = 1.5;
/// Median cold start must be below this.
pub const TARGET_COLD_START: Duration = Duration::from_millis(100);
/// Above this share of the machine busy with other processes during a
/// round, the load figures are flagged as disturbed.
pub const NOISY_OTHER_LOAD: f64 = 0.10;
/// Idle resident memory must be below this many bytes (decimal MB).
pub const TARGET_IDLE_RSS_BYTES: u64 = 30_000_000;

/// One target's figures in one round.
#[derive(Debug, Clone, Copy)]
pub struct RoundFigures {
    /// OK calls per second.
    pub throughput: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Server CPU time per call, µs.
    pub cpu_us: f64,
    /// Share of the machine used by other processes during the round.
    pub other_load: f64,
}

/// One round: the baseline (a) and Tollgate (b), run back to back.
#[derive(Debug, Clone, Copy)]
pub struct RoundPair {
    /// (a) echo.
    pub echo: RoundFigures,
    /// (b) Tollgate GetOrganization.
    pub tollgate: RoundFigures,
}

/// Everything the suite measured.
#[derive(Debug, Default)]
pub struct Measurements {
    /// Load rounds, in order.
    pub rounds: Vec<RoundPair>,
    /// Cold starts of the echo server.
    pub echo_cold: Vec<Duration>,
    /// Cold starts of Tollgate.
    pub tollgate_cold: Vec<Duration>,
    /// Echo server memory, idle after start.
    pub echo_idle: Option<Memory>,
    /// Tollgate memory, idle after start.
    pub tollgate_idle: Option<Memory>,
    /// Echo server memory right after the load rounds.
    pub echo_after_load: Option<Memory>,
    /// Tollgate memory right after the load rounds.
    pub tollgate_after_load: Option<Memory>,
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn median_duration(values: &[Duration]) -> Option<Duration> {
    let secs: Vec<f64> = values.iter().map(Duration::as_secs_f64).collect();
    median(&secs).map(Duration::from_secs_f64)
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1_000.0)
}

fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 * 1024.0 / 1_000_000.0)
}

fn latency(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The median round by the ratio `f(b) / f(a)`: the round whose ratio is
/// the median, so the figures shown and their ratio belong together. With
/// an even number of rounds it is the worse of the two middle ones.
fn median_round(
    rounds: &[RoundPair],
    f: impl Fn(&RoundFigures) -> f64,
    higher_is_worse: bool,
) -> Option<(RoundPair, f64)> {
    let mut ranked: Vec<(RoundPair, f64)> = rounds
        .iter()
        .map(|r| (*r, f(&r.tollgate) / f(&r.echo)))
        .collect();
    ranked.sort_by(|x, y| x.1.total_cmp(&y.1));
    let n = ranked.len();
    let i = match (n % 2, higher_is_worse) {
        (1, _) | (_, true) => n / 2,
        _ => n.checked_sub(1)? / 2,
    };
    ranked.get(i).copied()
}

/// Prints the result table and one PASS/MISS line per target.
pub fn print(m: &Measurements) {
    let mut rows: Vec<[String; 6]> = Vec::new();
    let mut lines: Vec<String> = Vec::new();

    if let (Some((tr, tput)), Some((p50r, p50)), Some((p99r, p99)), Some((cr, cpu))) = (
        median_round(&m.rounds, |f| f.throughput, false),
        median_round(&m.rounds, |f| f.p50_us, true),
        median_round(&m.rounds, |f| f.p99_us, true),
        median_round(&m.rounds, |f| f.cpu_us, true),
    ) {
        let tput_ok = tput >= TARGET_THROUGHPUT_RATIO;
        let p99_ok = p99 <= TARGET_P99_RATIO;
        rows.push([
            "throughput".into(),
            format!("{:.0} req/s", tr.echo.throughput),
            format!("{:.0} req/s", tr.tollgate.throughput),
            format!("{tput:.2}×"),
            format!("≥ {TARGET_THROUGHPUT_RATIO}×"),
            verdict(tput_ok).into(),
        ]);
        rows.push([
            "p50 latency".into(),
            latency(p50r.echo.p50_us),
            latency(p50r.tollgate.p50_us),
            format!("{p50:.2}×"),
            "—".into(),
            String::new(),
        ]);
        rows.push([
            "p99 latency".into(),
            latency(p99r.echo.p99_us),
            latency(p99r.tollgate.p99_us),
            format!("{p99:.2}×"),
            format!("≤ {TARGET_P99_RATIO}×"),
            verdict(p99_ok).into(),
        ]);
        rows.push([
            "server CPU per call".into(),
            format!("{:.1} µs", cr.echo.cpu_us),
            format!("{:.1} µs", cr.tollgate.cpu_us),
            format!("{cpu:.2}×"),
            "—".into(),
            String::new(),
        ]);
        rows.push([
            "other processes' CPU, throughput round".into(),
            format!("{:.0}%", tr.echo.other_load * 100.0),
            format!("{:.0}%", tr.tollgate.other_load * 100.0),
            String::new(),
            format!("quiet if < {:.0}%", NOISY_OTHER_LOAD * 100.0),
            String::new(),
        ]);
        let noisy = m
            .rounds
            .iter()
            .filter(|r| r.echo.other_load.max(r.tollgate.other_load) > NOISY_OTHER_LOAD)
            .count();
        if noisy > 0 {
            lines.push(format!(
                "NOTE  {noisy} of {} rounds ran while other processes used more than {:.0}% of the \
                 machine; their throughput and latency ratios are unreliable (server CPU per call \
                 is not). Rerun on a quieter machine or with more --rounds.",
                m.rounds.len(),
                NOISY_OTHER_LOAD * 100.0
            ));
        }
        lines.push(format!(
            "{}  throughput: Tollgate {:.0} req/s = {tput:.2}× echo {:.0} req/s (target ≥ {TARGET_THROUGHPUT_RATIO}×)",
            verdict(tput_ok),
            tr.tollgate.throughput,
            tr.echo.throughput
        ));
        lines.push(format!(
            "{}  p99 latency: Tollgate {} = {p99:.2}× echo {} (target ≤ {TARGET_P99_RATIO}×)",
            verdict(p99_ok),
            latency(p99r.tollgate.p99_us),
            latency(p99r.echo.p99_us)
        ));
    }

    if let (Some(a_med), Some(b_med)) = (
        median_duration(&m.echo_cold),
        median_duration(&m.tollgate_cold),
    ) {
        let a_min = m.echo_cold.iter().min().copied().unwrap_or_default();
        let b_min = m.tollgate_cold.iter().min().copied().unwrap_or_default();
        let ok = b_med < TARGET_COLD_START;
        rows.push([
            format!("cold start, median of {}", m.tollgate_cold.len()),
            ms(a_med),
            ms(b_med),
            format!("{:.1}×", b_med.as_secs_f64() / a_med.as_secs_f64()),
            format!("< {}", ms(TARGET_COLD_START)),
            verdict(ok).into(),
        ]);
        rows.push([
            "cold start, min".into(),
            ms(a_min),
            ms(b_min),
            format!("{:.1}×", b_min.as_secs_f64() / a_min.as_secs_f64()),
            "—".into(),
            String::new(),
        ]);
        lines.push(format!(
            "{}  cold start: Tollgate median {} (min {}), echo median {} (target < {})",
            verdict(ok),
            ms(b_med),
            ms(b_min),
            ms(a_med),
            ms(TARGET_COLD_START)
        ));
    }

    if let (Some(a), Some(b)) = (m.echo_idle, m.tollgate_idle) {
        let ok = b.rss_kib * 1024 < TARGET_IDLE_RSS_BYTES;
        rows.push([
            "idle RSS after start".into(),
            mb(a.rss_kib),
            mb(b.rss_kib),
            format!("{:.1}×", b.rss_kib as f64 / a.rss_kib as f64),
            format!("< {}", mb(TARGET_IDLE_RSS_BYTES / 1024)),
            verdict(ok).into(),
        ]);
        lines.push(format!(
            "{}  idle RSS: Tollgate {}, echo {} (target < 30.0 MB)",
            verdict(ok),
            mb(b.rss_kib),
            mb(a.rss_kib)
        ));
    }
    if let (Some(a), Some(b)) = (m.echo_after_load, m.tollgate_after_load) {
        rows.push([
            "RSS after load (peak)".into(),
            format!("{} ({})", mb(a.rss_kib), mb(a.peak_kib)),
            format!("{} ({})", mb(b.rss_kib), mb(b.peak_kib)),
            format!("{:.1}×", b.rss_kib as f64 / a.rss_kib as f64),
            "—".into(),
            String::new(),
        ]);
    }

    println!();
    println!("## Results");
    println!();
    if !m.rounds.is_empty() {
        println!(
            "Load rows: the median of {} rounds by b/a; cold start: {} starts each.",
            m.rounds.len(),
            m.tollgate_cold.len()
        );
        println!();
    }
    println!("| metric | (a) echo baseline | (b) Tollgate | b/a | target | |");
    println!("|---|---:|---:|---:|---|---|");
    for r in &rows {
        println!("| {} |", r.join(" | "));
    }
    println!();
    for line in &lines {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(echo_tput: f64, tollgate_tput: f64) -> RoundPair {
        let figures = |throughput| RoundFigures {
            throughput,
            p50_us: 100.0,
            p99_us: 1_000.0,
            cpu_us: 10.0,
            other_load: 0.0,
        };
        RoundPair {
            echo: figures(echo_tput),
            tollgate: figures(tollgate_tput),
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn median_round_keeps_figures_and_ratio_together() {
        let rounds = [pair(100.0, 50.0), pair(100.0, 90.0), pair(100.0, 120.0)];
        let (round, ratio) = median_round(&rounds, |f| f.throughput, false).unwrap();
        assert_eq!(ratio, 0.9);
        assert_eq!(round.tollgate.throughput / round.echo.throughput, ratio);
    }

    #[test]
    fn median_round_of_an_even_count_is_the_worse_middle() {
        let rounds = [
            pair(100.0, 50.0),
            pair(100.0, 80.0),
            pair(100.0, 90.0),
            pair(100.0, 120.0),
        ];
        // Lower throughput is worse.
        let (_, low) = median_round(&rounds, |f| f.throughput, false).unwrap();
        assert_eq!(low, 0.8);
        // Higher is worse (as for latency).
        let (_, high) = median_round(&rounds, |f| f.throughput, true).unwrap();
        assert_eq!(high, 0.9);
        assert!(median_round(&[], |f| f.throughput, false).is_none());
    }
}
