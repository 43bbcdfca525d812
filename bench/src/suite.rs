//! The benchmark run, phase by phase, each one measuring Tollgate next to
//! the echo baseline:
//!
//! 1. Start both servers, let them idle, read their resident memory.
//! 2. Load them with each generator (the tonic client, then h2load), the
//!    same way for every server, alternating in ABBA order (echo, Tollgate,
//!    then Tollgate, echo, ...) so drift on a noisy machine hits both sides
//!    alike. With several Tollgate log levels, each runs as its own server
//!    and the order mirrors the same way (echo, warn, info, then info,
//!    warn, echo).
//! 3. Stop them, then cold-start each several times, again alternating
//!    (first log level only). Each Tollgate start is two: a first start
//!    on an empty data directory (migrations, the key-encryption key and
//!    three signing keys, one of them RSA), then a restart on that
//!    directory, which is what a replica or a restarted server pays and
//!    what the cold-start target is judged on.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use prost::Message;

use crate::{
    h2load::{self, Body, H2Round, H2loadSettings},
    load::{self, Kind, LoadSettings, RoundResult, Target},
    report::{self, Generator, Measurements, RoundFigures, RoundPair, Series},
    servers::{self, EchoCommand, TollgateCommand},
};

/// Everything a run needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How to start Tollgate: one server per log level to compare; the
    /// first is also the one cold-started and whose memory is reported.
    pub tollgates: Vec<TollgateCommand>,
    /// How to start the baseline.
    pub echo: EchoCommand,
    /// Load generators to run, in this order.
    pub generators: Vec<Generator>,
    /// The tonic generator's rounds.
    pub load: LoadSettings,
    /// h2load's rounds.
    pub h2load: H2loadSettings,
    /// Load rounds per target.
    pub rounds: usize,
    /// Cold starts per server.
    pub cold_starts: usize,
    /// How long the servers idle before their memory is read.
    pub idle: Duration,
    /// Upper bound on a server's start-up.
    pub startup_timeout: Duration,
}

/// Runs every phase and prints the report. Fails if a server cannot start
/// or any call returned something other than OK.
pub async fn run(plan: &Plan) -> Result<()> {
    print_header(plan);
    let first = plan
        .tollgates
        .first()
        .context("no Tollgate configuration to run")?;
    let mut m = Measurements {
        start_log_level: first.log_level.clone(),
        ..Measurements::default()
    };

    println!("## Start and idle memory");
    let echo = servers::start_echo(&plan.echo, plan.startup_timeout).await?;
    let mut tollgates = Vec::with_capacity(plan.tollgates.len());
    for cmd in &plan.tollgates {
        tollgates.push(servers::start_tollgate(cmd, plan.startup_timeout).await?);
    }
    println!(
        "echo ready after {:.1} ms (pid {})",
        echo.ready_after.as_secs_f64() * 1e3,
        echo.process.pid(),
    );
    for (cmd, t) in plan.tollgates.iter().zip(&tollgates) {
        println!(
            "tollgate --log-level {} SERVING after {:.1} ms (pid {})",
            cmd.log_level,
            t.ready_after.as_secs_f64() * 1e3,
            t.process.pid()
        );
    }
    tokio::time::sleep(plan.idle).await;
    m.echo_idle = Some(echo.process.memory()?);
    m.tollgate_idle = Some(tollgates[0].process.memory()?);

    // Each Tollgate server is called with its own bootstrap key (a key of
    // one server is unknown to another); the echo server gets the first
    // one's, which it ignores, so every target receives the same headers
    // and the clients do the same work for each.
    let mut targets = Vec::with_capacity(tollgates.len());
    for (cmd, t) in plan.tollgates.iter().zip(&tollgates) {
        let key = t.bootstrap_key(plan.startup_timeout).await?;
        targets.push(Target {
            kind: Kind::Tollgate,
            label: format!("(b) tollgate {}", cmd.log_level),
            url: t.url.clone(),
            authorization: format!("Bearer {key}")
                .parse()
                .context("the bootstrap key is not a valid header value")?,
            api_key: key,
            pid: t.process.pid(),
            admin: t.admin,
        });
    }
    let echo_target = Target {
        kind: Kind::Echo,
        label: "(a) echo".to_owned(),
        url: echo.url.clone(),
        authorization: targets[0].authorization.clone(),
        api_key: targets[0].api_key.clone(),
        pid: echo.process.pid(),
        admin: None,
    };
    let mut org = None;
    for target in &targets {
        org = Some(load::get_organization(target).await?);
    }
    let echoed = load::echo_once(&echo_target).await?;
    println!(
        "response sizes: GetOrganization {} B, Echo {} B (request {} B each, plus the same credential header)",
        org.map_or(0, |o| o.encoded_len()),
        echoed.encoded_len(),
        tollgate::tollgate::v1::GetOrganizationRequest {
            name: load::ORG_NAME.to_owned()
        }
        .encoded_len()
    );

    let body = if plan.generators.contains(&Generator::H2load) {
        Some(Body::write()?)
    } else {
        None
    };
    let mut errors = 0;
    for &generator in &plan.generators {
        if plan.rounds > 0 {
            println!();
            println!("## Load: {} generator", generator.name());
        }
        let mut series: Vec<Series> = plan
            .tollgates
            .iter()
            .map(|cmd| Series {
                generator,
                log_level: cmd.log_level.clone(),
                rounds: Vec::new(),
            })
            .collect();
        for round in 0..plan.rounds {
            // ABBA: echo first in even rounds, last in odd ones, and the
            // Tollgate variants mirrored likewise.
            let mut order: Vec<Option<usize>> = std::iter::once(None)
                .chain((0..targets.len()).map(Some))
                .collect();
            if round % 2 == 1 {
                order.reverse();
            }
            let mut echo_figures = None;
            let mut tollgate_figures = vec![None; targets.len()];
            for slot in order {
                let target = slot.map_or(&echo_target, |i| &targets[i]);
                let figures = match (generator, &body) {
                    (Generator::H2load, Some(body)) => {
                        let result = h2load::run_round(target, &plan.h2load, body).await?;
                        print_h2_round(round, target, &result);
                        RoundFigures {
                            throughput: result.throughput(),
                            p50_us: None,
                            p99_us: None,
                            mean_us: Some(result.summary.mean.as_secs_f64() * 1e6),
                            cpu_us: result.cpu_per_call_us(),
                            other_load: result.other_load,
                        }
                    }
                    _ => {
                        let result = load::run_round(target, &plan.load).await?;
                        errors += print_round(round, target, &result);
                        RoundFigures {
                            throughput: result.throughput(),
                            p50_us: Some(result.latency_us(0.50)),
                            p99_us: Some(result.latency_us(0.99)),
                            mean_us: None,
                            cpu_us: result.cpu_per_call_us(),
                            other_load: result.other_load,
                        }
                    }
                };
                match slot {
                    None => echo_figures = Some(figures),
                    Some(i) => tollgate_figures[i] = Some(figures),
                }
            }
            if let Some(echo) = echo_figures {
                for (s, t) in series.iter_mut().zip(tollgate_figures) {
                    if let Some(tollgate) = t {
                        s.rounds.push(RoundPair { echo, tollgate });
                    }
                }
            }
        }
        m.series.extend(series);
    }
    m.echo_after_load = Some(echo.process.memory()?);
    m.tollgate_after_load = Some(tollgates[0].process.memory()?);
    drop(echo);
    drop(tollgates);

    if plan.cold_starts > 0 {
        println!();
        println!("## Cold start");
    }
    for i in 0..plan.cold_starts {
        let tollgate_first = i % 2 == 1;
        for is_tollgate in [tollgate_first, !tollgate_first] {
            if is_tollgate {
                let s = servers::start_tollgate(first, plan.startup_timeout).await?;
                m.tollgate_first_start.push(s.ready_after);
                let s = servers::restart_tollgate(s, first, plan.startup_timeout).await?;
                m.tollgate_cold.push(s.ready_after);
            } else {
                let s = servers::start_echo(&plan.echo, plan.startup_timeout).await?;
                m.echo_cold.push(s.ready_after);
            }
        }
        println!(
            "start {}: echo {:.1} ms, tollgate first start {:.1} ms, restart {:.1} ms",
            i + 1,
            m.echo_cold[i].as_secs_f64() * 1e3,
            m.tollgate_first_start[i].as_secs_f64() * 1e3,
            m.tollgate_cold[i].as_secs_f64() * 1e3
        );
    }

    report::print(&m);
    if errors > 0 {
        bail!("{errors} calls returned a non-OK status; the load figures are not valid");
    }
    Ok(())
}

/// Prints one h2load round's line (its errors have already failed the run).
fn print_h2_round(round: usize, target: &Target, r: &H2Round) {
    println!(
        "round {}  {:<18} {:>6.0} req/s  mean {:>6.0} µs  max {:>6.0} µs  server CPU {:>4.1} µs/call  other load {:>3.0}%  ({} calls in {:.1} s, server counted {} OK)",
        round + 1,
        target.name(),
        r.throughput(),
        r.summary.mean.as_secs_f64() * 1e6,
        r.summary.max.as_secs_f64() * 1e6,
        r.cpu_per_call_us(),
        r.other_load * 100.0,
        r.summary.succeeded,
        r.summary.elapsed.as_secs_f64(),
        r.server_ok
    );
}

/// Prints one round's line and its errors; returns the error count.
fn print_round(round: usize, target: &Target, r: &RoundResult) -> u64 {
    let name = target.name();
    println!(
        "round {}  {name:<18} {:>6.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  p99.9 {:>6.0} µs  max {:>6.0} µs  server CPU {:>4.1} µs/call  other load {:>3.0}%  ({} calls in {:.1} s, {} errors)",
        round + 1,
        r.throughput(),
        r.latency_us(0.50),
        r.latency_us(0.99),
        r.latency_us(0.999),
        r.latencies.max() as f64 / 1_000.0,
        r.cpu_per_call_us(),
        r.other_load * 100.0,
        r.ok,
        r.elapsed.as_secs_f64(),
        r.error_count()
    );
    if let Some(status) = &r.first_error {
        let mut codes: Vec<String> = r
            .errors
            .iter()
            .map(|(c, n)| format!("{c:?}: {n}"))
            .collect();
        codes.sort();
        println!(
            "  errors by code: {}; first: {:?} {}",
            codes.join(", "),
            status.code(),
            status.message()
        );
    }
    r.error_count()
}

fn print_header(plan: &Plan) {
    let (cpus, model) = report::machine();
    println!("# tollgate-bench");
    println!();
    println!("machine: {cpus} CPUs, {model}");
    if let Some(t) = plan.tollgates.first() {
        println!("tollgate: {}", t.bin.display());
    }
    let levels: Vec<&str> = plan
        .tollgates
        .iter()
        .map(|t| t.log_level.as_str())
        .collect();
    println!("tollgate --log-level: {}", levels.join(", "));
    let generators: Vec<&str> = plan.generators.iter().map(|g| g.name()).collect();
    println!("generators: {}", generators.join(", "));
    let l = &plan.load;
    let window = match l.max_requests {
        Some(n) => format!("{n} calls"),
        None => format!("{:.1} s", l.duration.as_secs_f64()),
    };
    println!(
        "tonic load: {} connections, {} in flight, {:.1} s warm-up + {window} per round, {} round(s) per target (ABBA order)",
        l.connections,
        l.concurrency,
        l.warmup.as_secs_f64(),
        plan.rounds
    );
    let h = &plan.h2load;
    let window = match h.max_requests {
        Some(n) => format!("-n {n}"),
        None => format!("-D {:.1} s", h.duration.as_secs_f64()),
    };
    println!(
        "h2load load: {} -c {} -m {} -t {}, {:.1} s warm-up run + {window} per round, {} round(s) per target (ABBA order)",
        h.bin.display(),
        h.connections,
        h.streams,
        h.threads,
        h.warmup.as_secs_f64(),
        plan.rounds
    );
    println!(
        "cold starts: {} per server; idle {:.1} s before reading VmRSS",
        plan.cold_starts,
        plan.idle.as_secs_f64()
    );
    println!();
}
