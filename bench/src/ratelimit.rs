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
    /// A Redis to measure the Redis backend on, beside redis-benchmark
    /// running the same script (`redis://127.0.0.1:6379`); skipped when
    /// unset.
    #[arg(long, env = "TOLLGATE_BENCH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Decisions (and redis-benchmark requests) per Redis measurement.
    #[arg(long, default_value_t = 200_000)]
    pub redis_decisions: usize,
    /// Concurrent decisions in flight (redis-benchmark `-c`).
    #[arg(long, default_value_t = 50)]
    pub redis_concurrency: usize,
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
    if let Some(url) = &options.redis_url {
        redis(options, url)?;
    }
    Ok(())
}

/// The Redis target: at least this share of redis-benchmark's rate.
const REDIS_TARGET: f64 = 0.8;

/// Redis-backed decisions per second (Tollgate's backend, one multiplexed
/// connection, `redis_concurrency` decisions in flight) beside
/// redis-benchmark sending the same EVALSHA on as many connections, in
/// alternating rounds.
fn redis(options: &Options, url: &str) -> Result<()> {
    let sha = load_script(url)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..options.rounds {
        let first_ours = round % 2 == 0;
        for which in [first_ours, !first_ours] {
            if which {
                ours.push(runtime.block_on(tollgate_redis(options, url))?);
            } else {
                theirs.push(redis_benchmark(options, url, &sha)?);
            }
        }
    }
    let (o, olo, ohi) = summary(&ours);
    let (t, tlo, thi) = summary(&theirs);
    println!(
        "\nRedis-backed decisions/s, {} in flight (median of {} rounds; range)",
        options.redis_concurrency, options.rounds
    );
    println!("  {:<18} {o:>12.0}   ({olo:.0} – {ohi:.0})", "tollgate");
    println!(
        "  {:<18} {t:>12.0}   ({tlo:.0} – {thi:.0})",
        "redis-benchmark"
    );
    println!(
        "  ratio {:.2}; target ≥ {REDIS_TARGET}: {}",
        o / t,
        if o / t >= REDIS_TARGET {
            "PASS"
        } else {
            "MISS"
        }
    );
    Ok(())
}

fn host_port(url: &str) -> (String, String) {
    let rest = url.trim_start_matches("redis://");
    let hostport = rest.split('/').next().unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.to_owned()),
        None => (hostport.to_owned(), "6379".to_owned()),
    }
}

fn load_script(url: &str) -> Result<String> {
    let (host, port) = host_port(url);
    let out = std::process::Command::new("redis-cli")
        .args(["-h", &host, "-p", &port, "SCRIPT", "LOAD"])
        .arg(tollgate_server::ratelimit::redis::SCRIPT)
        .output()?;
    anyhow::ensure!(out.status.success(), "redis-cli SCRIPT LOAD failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The limit every benchmark decision runs under: never reached.
fn huge() -> Limit {
    Limit {
        algorithm: Algorithm::Gcra,
        limit: 1_000_000_000,
        period: Duration::from_secs(1),
        burst: 1_000_000_000,
    }
}

async fn tollgate_redis(options: &Options, url: &str) -> Result<f64> {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let limiter = tollgate_server::ratelimit::RedisLimiter::connect(url, Duration::from_secs(1))?;
    // Wait for the background connection.
    let limit = huge();
    let deadline = Instant::now() + Duration::from_secs(10);
    while limiter
        .decide(&[charge("bench:warm", &limit)])
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "Redis did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let total = options.redis_decisions;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..options.redis_concurrency {
        let (limiter, next, errors) = (limiter.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let limit = huge();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let key = format!("bench:{}", i % 1000);
                if limiter.decide(&[charge(&key, &limit)]).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    anyhow::ensure!(
        errors.load(Ordering::Relaxed) == 0,
        "Redis decisions failed"
    );
    Ok(total as f64 / elapsed.as_secs_f64())
}

fn redis_benchmark(options: &Options, url: &str, sha: &str) -> Result<f64> {
    let (host, port) = host_port(url);
    let l = huge();
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", &host, "-p", &port, "--csv", "-r", "1000"])
        .args(["-n", &options.redis_decisions.to_string()])
        .args(["-c", &options.redis_concurrency.to_string()])
        .args(["EVALSHA", sha, "1", "tg:rl:{bench:__rand_int__}", "1"])
        .arg(l.limit.to_string())
        .arg(l.period.as_micros().to_string())
        .arg(l.burst.to_string())
        .args(["1", "0"])
        .output()?;
    anyhow::ensure!(out.status.success(), "redis-benchmark failed");
    let text = String::from_utf8_lossy(&out.stdout);
    // CSV: "test","rps",…; the second line holds the figures.
    let line = text.lines().nth(1).unwrap_or_default();
    let rps = line
        .split(',')
        .nth(1)
        .map(|v| v.trim_matches('"'))
        .and_then(|v| v.parse::<f64>().ok());
    rps.ok_or_else(|| anyhow::anyhow!("unreadable redis-benchmark output: {text}"))
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
