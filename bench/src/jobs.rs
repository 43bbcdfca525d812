//! The `jobs` subcommand (issue 11): jobs claimed and completed per second
//! by `--workers` workers (the server's own `Worker`, in this process) on
//! PostgreSQL, with no-op handlers (target [`TARGET_JOB_RATE`]).
//!
//! `--jobs` jobs are committed to a fresh schema's queue in one statement;
//! the workers start together, and the figure is the time until the queue
//! is empty, every job having been claimed under a lease, run and deleted.
//! Each job must have run exactly once (the no-op handler counts them by
//! id). The CPU the bench process (the workers) and PostgreSQL used is
//! read from `/proc` around it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use tokio_util::sync::CancellationToken;
use tollgate_server::{
    Config,
    store::jobs::Job,
    worker::{Failure, Worker},
};

use crate::{
    events::{Schema, cpu_of_all, cpu_since},
    report::{self, verdict},
};

/// Jobs per second 4 workers must claim and complete at least.
pub const TARGET_JOB_RATE: f64 = 5_000.0;

/// `tollgate-bench jobs`'s command line.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// PostgreSQL to run on; a schema of its own, dropped at the end.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,

    /// Jobs per round.
    #[arg(long, default_value_t = 50_000)]
    jobs: usize,

    /// Workers sharing the queue.
    #[arg(long, default_value_t = 4)]
    workers: usize,

    /// Jobs each worker runs at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,

    /// Rounds; each figure is printed, and the median judged.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// Runs the rounds.
pub async fn run(options: Options) -> Result<()> {
    ensure!(
        options.jobs > 0 && options.workers > 0 && options.rounds > 0,
        "counts must be above 0"
    );
    let (cpus, model) = report::machine();
    println!("# tollgate-bench jobs");
    println!();
    println!("machine: {cpus} CPUs, {model}");
    println!(
        "{} jobs per round, {} workers × {} at a time, no-op handler, PostgreSQL on this machine",
        options.jobs, options.workers, options.concurrency
    );
    let mut rates = Vec::new();
    for round in 1..=options.rounds {
        let schema = Schema::create(&options.database_url).await?;
        let result = one_round(&options, &schema).await;
        schema.drop_it().await;
        let (took, cpu_bench, cpu_pg) = result?;
        let rate = options.jobs as f64 / took.as_secs_f64();
        println!(
            "round {round}: {:.2} s, {rate:.0} jobs/s; CPU per job: workers {:.1} µs, postgres {:.1} µs",
            took.as_secs_f64(),
            cpu_bench.as_secs_f64() * 1e6 / options.jobs as f64,
            cpu_pg.as_secs_f64() * 1e6 / options.jobs as f64,
        );
        rates.push(rate);
    }
    let median = report::median(&rates).context("no round")?;
    println!(
        "median: {median:.0} jobs/s (target ≥ {TARGET_JOB_RATE:.0}/s) {}",
        verdict(median >= TARGET_JOB_RATE)
    );
    Ok(())
}

/// One round: the time to drain the queue, and the CPU this process and
/// PostgreSQL used meanwhile.
async fn one_round(options: &Options, schema: &Schema) -> Result<(Duration, Duration, Duration)> {
    let config = Config {
        database_url: schema.url.clone(),
        db_pool_size: options.workers * 4,
        ..Config::default()
    };
    let store = tollgate_server::open_store(&config).await?;
    schema
        .execute(&format!(
            "INSERT INTO jobs (kind, payload, priority, state, run_after, attempts, max_attempts, create_time, update_time) \
             SELECT 'bench.noop', g::text, 0, 0, 0, 0, 3, 0, 0 FROM generate_series(0, {}) AS g",
            options.jobs - 1
        ))
        .await?;
    let runs = Arc::new(Mutex::new(vec![0u8; options.jobs]));
    let token = CancellationToken::new();
    let pid = std::process::id();
    let bench_before = crate::child::cpu_time(pid)?;
    let pg_before = cpu_of_all("postgres");
    let started = Instant::now();
    let handles: Vec<_> = (0..options.workers)
        .map(|i| {
            let runs = runs.clone();
            let worker = Worker::new(store.clone(), format!("bench-{i}"))
                .handle("bench.noop", options.concurrency, move |job: Job| {
                    let runs = runs.clone();
                    async move {
                        let n: usize = job
                            .payload
                            .parse()
                            .map_err(|_| Failure::permanent("not a bench job"))?;
                        let mut runs = runs.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(count) = runs.get_mut(n) {
                            *count = count.saturating_add(1);
                        }
                        Ok(())
                    }
                })
                .poll(Duration::from_millis(20));
            tokio::spawn(worker.run(token.clone(), Duration::from_secs(5)))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let left = schema.count("SELECT count(*) AS n FROM jobs").await?;
        if left == 0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{left} jobs left after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    let cpu_bench = crate::child::cpu_time(pid)?.saturating_sub(bench_before);
    let cpu_pg = cpu_since(&pg_before, &cpu_of_all("postgres"));
    token.cancel();
    for h in handles {
        h.await?;
    }
    store.db.close(Duration::from_secs(5)).await;
    let runs = runs.lock().unwrap_or_else(|e| e.into_inner());
    let wrong = runs.iter().filter(|n| **n != 1).count();
    ensure!(wrong == 0, "{wrong} jobs did not run exactly once");
    Ok((took, cpu_bench, cpu_pg))
}
