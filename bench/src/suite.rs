//! The benchmark run, phase by phase, each one measuring Tollgate next to
//! the echo baseline:
//!
//! 1. Start both servers, let them idle, read their resident memory.
//! 2. Load both with the same generator, alternating in ABBA order
//!    (echo, Tollgate, then Tollgate, echo, ...) so drift on a noisy
//!    machine hits both sides alike.
//! 3. Stop them, then cold-start each several times, again alternating,
//!    each Tollgate start on an empty data directory.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use prost::Message;
use tonic::metadata::MetadataValue;

use crate::{
    load::{self, Kind, LoadSettings, RoundResult, Target},
    report::{self, Measurements, RoundFigures, RoundPair},
    servers::{self, EchoCommand, TollgateCommand},
};

/// Everything a run needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How to start Tollgate.
    pub tollgate: TollgateCommand,
    /// How to start the baseline.
    pub echo: EchoCommand,
    /// The load rounds.
    pub load: LoadSettings,
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
    let mut m = Measurements::default();

    println!("## Start and idle memory");
    let echo = servers::start_echo(&plan.echo, plan.startup_timeout).await?;
    let tollgate = servers::start_tollgate(&plan.tollgate, plan.startup_timeout).await?;
    println!(
        "echo ready after {:.1} ms (pid {}), tollgate SERVING after {:.1} ms (pid {})",
        echo.ready_after.as_secs_f64() * 1e3,
        echo.process.pid(),
        tollgate.ready_after.as_secs_f64() * 1e3,
        tollgate.process.pid()
    );
    tokio::time::sleep(plan.idle).await;
    m.echo_idle = Some(echo.process.memory()?);
    m.tollgate_idle = Some(tollgate.process.memory()?);

    let key = tollgate.bootstrap_key(plan.startup_timeout).await?;
    let authorization: MetadataValue<_> = format!("Bearer {key}")
        .parse()
        .context("the bootstrap key is not a valid header value")?;
    let echo_target = Target {
        kind: Kind::Echo,
        url: echo.url.clone(),
        authorization: authorization.clone(),
        pid: echo.process.pid(),
    };
    let tollgate_target = Target {
        kind: Kind::Tollgate,
        url: tollgate.url.clone(),
        authorization,
        pid: tollgate.process.pid(),
    };
    let org = load::get_organization(&tollgate_target).await?;
    let echoed = load::echo_once(&echo_target).await?;
    println!(
        "response sizes: GetOrganization {} B, Echo {} B (request {} B each, plus the same authorization header)",
        org.encoded_len(),
        echoed.encoded_len(),
        tollgate::tollgate::v1::GetOrganizationRequest {
            name: load::ORG_NAME.to_owned()
        }
        .encoded_len()
    );

    if plan.rounds > 0 {
        println!();
        println!("## Load");
    }
    let mut errors = 0;
    for round in 0..plan.rounds {
        let order = if round % 2 == 0 {
            [&echo_target, &tollgate_target]
        } else {
            [&tollgate_target, &echo_target]
        };
        let mut figures = [None, None];
        for target in order {
            let result = load::run_round(target, &plan.load).await?;
            errors += print_round(round, target.kind, &result);
            let slot = match target.kind {
                Kind::Echo => 0,
                Kind::Tollgate => 1,
            };
            figures[slot] = Some(RoundFigures {
                throughput: result.throughput(),
                p50_us: result.latency_us(0.50),
                p99_us: result.latency_us(0.99),
                cpu_us: result.cpu_per_call_us(),
                other_load: result.other_load,
            });
        }
        if let [Some(echo), Some(tollgate)] = figures {
            m.rounds.push(RoundPair { echo, tollgate });
        }
    }
    m.echo_after_load = Some(echo.process.memory()?);
    m.tollgate_after_load = Some(tollgate.process.memory()?);
    drop(echo);
    drop(tollgate);

    if plan.cold_starts > 0 {
        println!();
        println!("## Cold start");
    }
    for i in 0..plan.cold_starts {
        let tollgate_first = i % 2 == 1;
        for is_tollgate in [tollgate_first, !tollgate_first] {
            if is_tollgate {
                let s = servers::start_tollgate(&plan.tollgate, plan.startup_timeout).await?;
                m.tollgate_cold.push(s.ready_after);
            } else {
                let s = servers::start_echo(&plan.echo, plan.startup_timeout).await?;
                m.echo_cold.push(s.ready_after);
            }
        }
        println!(
            "start {}: echo {:.1} ms, tollgate {:.1} ms",
            i + 1,
            m.echo_cold[i].as_secs_f64() * 1e3,
            m.tollgate_cold[i].as_secs_f64() * 1e3
        );
    }

    report::print(&m);
    if errors > 0 {
        bail!("{errors} calls returned a non-OK status; the load figures are not valid");
    }
    Ok(())
}

/// Prints one round's line and its errors; returns the error count.
fn print_round(round: usize, kind: Kind, r: &RoundResult) -> u64 {
    let name = match kind {
        Kind::Echo => "(a) echo",
        Kind::Tollgate => "(b) tollgate",
    };
    println!(
        "round {}  {name:<13} {:>6.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  p99.9 {:>6.0} µs  max {:>6.0} µs  server CPU {:>4.1} µs/call  other load {:>3.0}%  ({} calls in {:.1} s, {} errors)",
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
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("# tollgate-bench");
    println!();
    println!("machine: {cpus} CPUs, {model}");
    println!("tollgate: {}", plan.tollgate.bin.display());
    let l = &plan.load;
    let window = match l.max_requests {
        Some(n) => format!("{n} calls"),
        None => format!("{:.1} s", l.duration.as_secs_f64()),
    };
    println!(
        "load: {} connections, {} in flight, {:.1} s warm-up + {window} per round, {} round(s) per target (ABBA order)",
        l.connections,
        l.concurrency,
        l.warmup.as_secs_f64(),
        plan.rounds
    );
    println!(
        "cold starts: {} per server; idle {:.1} s before reading VmRSS",
        plan.cold_starts,
        plan.idle.as_secs_f64()
    );
    println!();
}
