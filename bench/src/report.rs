//! Turning rounds into figures: medians, ratios against the baseline, the
//! targets, and the printed table (Markdown, so it pastes into
//! BENCHMARKS.md as is).
//!
//! On a small, noisy machine absolute numbers swing from run to run; what
//! holds still is Tollgate's cost relative to a bare tonic server measured
//! next to it. Each round runs the targets back to back, and each load
//! row shows the median round by that row's ratio (b/a), so the two figures
//! shown and their ratio come from the same round.
//!
//! There is one load table per load generator and Tollgate log level. The
//! throughput and CPU-per-call targets are judged on h2load's tables (its
//! client is light enough not to hide the server's cost); the p99 target,
//! which needs percentiles h2load does not print, on the tonic generator's.

use std::time::Duration;

use crate::child::Memory;

/// Tollgate must keep at least this share of the baseline's throughput.
pub const TARGET_THROUGHPUT_RATIO: f64 = 0.85;
/// Tollgate's server CPU per call may be at most this multiple of the
/// baseline's (judged under h2load).
pub const TARGET_CPU_RATIO: f64 = 1.15;
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
    /// Median latency, µs (tonic generator only).
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs (tonic generator only).
    pub p99_us: Option<f64>,
    /// Mean latency, µs (h2load only: it prints no percentiles).
    pub mean_us: Option<f64>,
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

/// Which client produced a series of rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generator {
    /// The bench's own closed-loop tonic client ([`crate::load`]).
    Tonic,
    /// h2load ([`crate::h2load`]); the targets are judged on it.
    H2load,
}

// === impl Generator ===

impl Generator {
    /// The name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Generator::Tonic => "tonic",
            Generator::H2load => "h2load",
        }
    }
}

/// The rounds of one generator against one Tollgate configuration.
#[derive(Debug, Clone)]
pub struct Series {
    /// Who generated the load.
    pub generator: Generator,
    /// Tollgate's `--log-level` in these rounds.
    pub log_level: String,
    /// Rounds, in order.
    pub rounds: Vec<RoundPair>,
}

/// Everything the suite measured.
#[derive(Debug, Default)]
pub struct Measurements {
    /// Load rounds, one series per generator and log level.
    pub series: Vec<Series>,
    /// Tollgate's log level in the start and memory figures.
    pub start_log_level: String,
    /// Cold starts of the echo server.
    pub echo_cold: Vec<Duration>,
    /// Cold starts of Tollgate: restarts on a data directory a first start
    /// made (the target's figure).
    pub tollgate_cold: Vec<Duration>,
    /// First starts of Tollgate, on an empty data directory.
    pub tollgate_first_start: Vec<Duration>,
    /// Echo server memory, idle after start.
    pub echo_idle: Option<Memory>,
    /// Tollgate memory, idle after start.
    pub tollgate_idle: Option<Memory>,
    /// Echo server memory right after the load rounds.
    pub echo_after_load: Option<Memory>,
    /// Tollgate memory right after the load rounds.
    pub tollgate_after_load: Option<Memory>,
}

/// The machine a run measures on: its CPU count and model name (from
/// `/proc/cpuinfo`), for every report's header.
pub fn machine() -> (usize, String) {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    (cpus, model)
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

/// `PASS` or `MISS`.
pub fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1_000.0)
}

fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 * 1024.0 / 1_000_000.0)
}

/// A latency in µs, shown in µs below a millisecond and in ms above.
pub fn latency(us: f64) -> String {
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
    let pairs: Vec<(RoundFigures, RoundFigures)> =
        rounds.iter().map(|r| (r.echo, r.tollgate)).collect();
    median_pair(&pairs, f, higher_is_worse)
        .map(|((echo, tollgate), ratio)| (RoundPair { echo, tollgate }, ratio))
}

/// [`median_round`] for any two targets measured back to back in each
/// round, (a, b): the pair whose ratio `f(b) / f(a)` is the median, with
/// that ratio (the worse middle one for an even count).
pub fn median_pair(
    pairs: &[(RoundFigures, RoundFigures)],
    f: impl Fn(&RoundFigures) -> f64,
    higher_is_worse: bool,
) -> Option<((RoundFigures, RoundFigures), f64)> {
    let mut ranked: Vec<((RoundFigures, RoundFigures), f64)> = pairs
        .iter()
        .map(|&(a, b)| ((a, b), f(&b) / f(&a)))
        .collect();
    ranked.sort_by(|x, y| x.1.total_cmp(&y.1));
    let n = ranked.len();
    let i = match (n % 2, higher_is_worse) {
        (1, _) | (_, true) => n / 2,
        _ => n.checked_sub(1)? / 2,
    };
    ranked.get(i).copied()
}

/// Adds the load rows of one series to `rows` and its verdicts to `lines`.
fn load_rows(series: &Series, rows: &mut Vec<[String; 6]>, lines: &mut Vec<String>) {
    let rounds = &series.rounds;
    let judged = series.generator == Generator::H2load;
    let who = format!(
        "{} generator, Tollgate --log-level {}",
        series.generator.name(),
        series.log_level
    );
    let all = |f: fn(&RoundFigures) -> Option<f64>| {
        !rounds.is_empty()
            && rounds
                .iter()
                .all(|r| f(&r.echo).is_some() && f(&r.tollgate).is_some())
    };
    let some = |v: Option<f64>| v.unwrap_or(f64::NAN);

    if let Some((tr, tput)) = median_round(rounds, |f| f.throughput, false) {
        let ok = tput >= TARGET_THROUGHPUT_RATIO;
        rows.push([
            "throughput".into(),
            format!("{:.0} req/s", tr.echo.throughput),
            format!("{:.0} req/s", tr.tollgate.throughput),
            format!("{tput:.2}×"),
            if judged {
                format!("≥ {TARGET_THROUGHPUT_RATIO}×")
            } else {
                "— (judged on h2load)".into()
            },
            if judged {
                verdict(ok).into()
            } else {
                String::new()
            },
        ]);
        if judged {
            lines.push(format!(
                "{}  throughput ({who}): Tollgate {:.0} req/s = {tput:.2}× echo {:.0} req/s (target ≥ {TARGET_THROUGHPUT_RATIO}×)",
                verdict(ok),
                tr.tollgate.throughput,
                tr.echo.throughput
            ));
        }
        rows.push([
            "other processes' CPU, throughput round".into(),
            format!("{:.0}%", tr.echo.other_load * 100.0),
            format!("{:.0}%", tr.tollgate.other_load * 100.0),
            String::new(),
            format!("quiet if < {:.0}%", NOISY_OTHER_LOAD * 100.0),
            String::new(),
        ]);
    }
    if all(|f| f.mean_us)
        && let Some((r, ratio)) = median_round(rounds, |f| some(f.mean_us), true)
    {
        rows.push([
            "mean latency".into(),
            latency(some(r.echo.mean_us)),
            latency(some(r.tollgate.mean_us)),
            format!("{ratio:.2}×"),
            "—".into(),
            String::new(),
        ]);
    }
    if all(|f| f.p50_us)
        && let Some((r, ratio)) = median_round(rounds, |f| some(f.p50_us), true)
    {
        rows.push([
            "p50 latency".into(),
            latency(some(r.echo.p50_us)),
            latency(some(r.tollgate.p50_us)),
            format!("{ratio:.2}×"),
            "—".into(),
            String::new(),
        ]);
    }
    if all(|f| f.p99_us)
        && let Some((r, ratio)) = median_round(rounds, |f| some(f.p99_us), true)
    {
        let ok = ratio <= TARGET_P99_RATIO;
        rows.push([
            "p99 latency".into(),
            latency(some(r.echo.p99_us)),
            latency(some(r.tollgate.p99_us)),
            format!("{ratio:.2}×"),
            format!("≤ {TARGET_P99_RATIO}×"),
            verdict(ok).into(),
        ]);
        lines.push(format!(
            "{}  p99 latency ({who}): Tollgate {} = {ratio:.2}× echo {} (target ≤ {TARGET_P99_RATIO}×)",
            verdict(ok),
            latency(some(r.tollgate.p99_us)),
            latency(some(r.echo.p99_us))
        ));
    }
    if let Some((cr, cpu)) = median_round(rounds, |f| f.cpu_us, true) {
        let ok = cpu <= TARGET_CPU_RATIO;
        rows.push([
            "server CPU per call".into(),
            format!("{:.1} µs", cr.echo.cpu_us),
            format!("{:.1} µs", cr.tollgate.cpu_us),
            format!("{cpu:.2}×"),
            if judged {
                format!("≤ {TARGET_CPU_RATIO}×")
            } else {
                "—".into()
            },
            if judged {
                verdict(ok).into()
            } else {
                String::new()
            },
        ]);
        if judged {
            lines.push(format!(
                "{}  server CPU per call ({who}): Tollgate {:.1} µs = {cpu:.2}× echo {:.1} µs (target ≤ {TARGET_CPU_RATIO}×)",
                verdict(ok),
                cr.tollgate.cpu_us,
                cr.echo.cpu_us
            ));
        }
    }
    let noisy = rounds
        .iter()
        .filter(|r| r.echo.other_load.max(r.tollgate.other_load) > NOISY_OTHER_LOAD)
        .count();
    if noisy > 0 {
        lines.push(format!(
            "NOTE  {who}: {noisy} of {} rounds ran while other processes used more than {:.0}% \
             of the machine; their throughput and latency ratios are unreliable (server CPU per \
             call is less so). Rerun on a quieter machine or with more --rounds.",
            rounds.len(),
            NOISY_OTHER_LOAD * 100.0
        ));
    }
}

fn print_table(rows: &[[String; 6]]) {
    println!("| metric | (a) echo baseline | (b) Tollgate | b/a | target | |");
    println!("|---|---:|---:|---:|---|---|");
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
    println!();
}

/// Prints one table per load series, then the start and memory table, then
/// one PASS/MISS line per target.
pub fn print(m: &Measurements) {
    let mut lines: Vec<String> = Vec::new();

    println!();
    println!("## Results");
    println!();
    for series in &m.series {
        let mut rows: Vec<[String; 6]> = Vec::new();
        load_rows(series, &mut rows, &mut lines);
        if rows.is_empty() {
            continue;
        }
        println!(
            "### Load: {} generator, Tollgate --log-level {} (median of {} rounds by b/a)",
            series.generator.name(),
            series.log_level,
            series.rounds.len()
        );
        println!();
        print_table(&rows);
    }

    let mut rows: Vec<[String; 6]> = Vec::new();
    if let (Some(a_med), Some(b_med)) = (
        median_duration(&m.echo_cold),
        median_duration(&m.tollgate_cold),
    ) {
        let a_min = m.echo_cold.iter().min().copied().unwrap_or_default();
        let b_min = m.tollgate_cold.iter().min().copied().unwrap_or_default();
        let ok = b_med < TARGET_COLD_START;
        rows.push([
            format!("cold start (restart), median of {}", m.tollgate_cold.len()),
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
        if let Some(first) = median_duration(&m.tollgate_first_start) {
            rows.push([
                format!(
                    "first start on an empty directory, median of {}",
                    m.tollgate_first_start.len()
                ),
                ms(a_med),
                ms(first),
                format!("{:.1}×", first.as_secs_f64() / a_med.as_secs_f64()),
                "—".into(),
                String::new(),
            ]);
        }
        lines.push(format!(
            "{}  cold start (restart): Tollgate median {} (min {}), echo median {} (target < {}); first start {}",
            verdict(ok),
            ms(b_med),
            ms(b_min),
            ms(a_med),
            ms(TARGET_COLD_START),
            median_duration(&m.tollgate_first_start).map_or_else(|| "not measured".into(), ms)
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
        rows.push([
            "of which anonymous (heap, stacks)".into(),
            mb(a.anon_kib),
            mb(b.anon_kib),
            format!("{:.1}×", b.anon_kib as f64 / a.anon_kib as f64),
            "—".into(),
            String::new(),
        ]);
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

    if !rows.is_empty() {
        println!(
            "### Start and memory: Tollgate --log-level {} ({} cold starts each)",
            m.start_log_level,
            m.tollgate_cold.len()
        );
        println!();
        print_table(&rows);
    }
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
            p50_us: Some(100.0),
            p99_us: Some(1_000.0),
            mean_us: None,
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
