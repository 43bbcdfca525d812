//! The `ratelimit` subcommand (issue 9): in-process limiter decisions per
//! second on one core, for a hot key set and for a million distinct keys,
//! with `governor`'s keyed limiter run side by side on the same keys as
//! the reference, in alternating rounds.

use std::{
    hint::black_box,
    num::NonZeroU32,
    time::{Duration, Instant},
};

use anyhow::Result;
use tollgate_server::ratelimit::{Algorithm, Charge, Limit, local::Local};

/// Options of the `ratelimit` subcommand.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Rounds; each runs every target once, alternating their order.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Keys in the hot set.
    #[arg(long, default_value_t = 1_000)]
    pub hot_keys: usize,
    /// Keys in the cold set.
    #[arg(long, default_value_t = 1_000_000)]
    pub cold_keys: usize,
    /// Decisions per measurement.
    #[arg(long, default_value_t = 5_000_000)]
    pub decisions: usize,
}

/// The hot-set target, decisions per second.
const HOT_TARGET: f64 = 5_000_000.0;

/// Runs the benchmark and prints the table.
pub fn run(options: &Options) -> Result<()> {
    let hot: Vec<String> = (0..options.hot_keys).map(key).collect();
    let cold: Vec<String> = (0..options.cold_keys).map(key).collect();
    // A limit nobody reaches, so every decision takes the same path.
    let limit = Limit {
        algorithm: Algorithm::Gcra,
        limit: 1_000_000_000,
        period: Duration::from_secs(1),
        burst: 1_000_000_000,
    };
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("tollgate hot", Vec::new()),
        ("governor hot", Vec::new()),
        ("tollgate 1M keys", Vec::new()),
        ("governor 1M keys", Vec::new()),
    ];
    for round in 0..options.rounds {
        let order: [usize; 4] = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [1, 0, 3, 2]
        };
        for i in order {
            let keys = if i < 2 { &hot } else { &cold };
            let rate = if i % 2 == 0 {
                tollgate(keys, &limit, options.decisions)
            } else {
                governor(keys, options.decisions)
            };
            rows[i].1.push(rate);
        }
    }
    println!(
        "\nin-process limiter, one thread, decisions/s (median of {} rounds; range)",
        options.rounds
    );
    for (name, rates) in &rows {
        let (median, lo, hi) = summary(rates);
        println!("  {name:<18} {:>12.0}   ({lo:.0} – {hi:.0})", median);
    }
    let (hot, _, _) = summary(&rows[0].1);
    let (gov, _, _) = summary(&rows[1].1);
    println!(
        "  hot set: {:.2}× governor; target ≥ {HOT_TARGET:.0}/s: {}",
        hot / gov,
        if hot >= HOT_TARGET { "PASS" } else { "MISS" }
    );
    Ok(())
}

fn key(i: usize) -> String {
    format!("8f0c2b6e-policy-uid:r:organizations/acme/serviceAccounts/caller-{i}")
}

/// Decisions per second of Tollgate's in-process store, keys in turn.
fn tollgate(keys: &[String], limit: &Limit, decisions: usize) -> f64 {
    let store = Local::new(keys.len().max(1_000) * 2);
    let now = tollgate_server::ratelimit::local::now_us();
    // Warm: every key present, as in a steady state.
    for k in keys {
        store.decide_one(&charge(k, limit), now);
    }
    let start = Instant::now();
    let mut allowed = 0usize;
    for i in 0..decisions {
        let k = &keys[i % keys.len()];
        // The clock as the server reads it, once per decision.
        let d = store.decide_one(
            &charge(k, limit),
            tollgate_server::ratelimit::local::now_us(),
        );
        allowed += usize::from(d.allowed);
    }
    let elapsed = start.elapsed();
    black_box(allowed);
    decisions as f64 / elapsed.as_secs_f64()
}

fn charge<'a>(key: &'a str, limit: &'a Limit) -> Charge<'a> {
    Charge {
        key,
        limit,
        cost: 1,
        dry_run: false,
    }
}

/// Decisions per second of governor's keyed (DashMap) limiter.
fn governor(keys: &[String], decisions: usize) -> f64 {
    use governor::{Quota, RateLimiter};
    let per_second = NonZeroU32::new(1_000_000_000).unwrap_or(NonZeroU32::MIN);
    let limiter = RateLimiter::dashmap(Quota::per_second(per_second));
    for k in keys {
        let _ = limiter.check_key(k);
    }
    let start = Instant::now();
    let mut allowed = 0usize;
    for i in 0..decisions {
        allowed += usize::from(limiter.check_key(&keys[i % keys.len()]).is_ok());
    }
    let elapsed = start.elapsed();
    black_box(allowed);
    decisions as f64 / elapsed.as_secs_f64()
}

fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = v.get(v.len() / 2).copied().unwrap_or(0.0);
    (
        median,
        v.first().copied().unwrap_or(0.0),
        v.last().copied().unwrap_or(0.0),
    )
}
