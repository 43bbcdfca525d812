//! The transcoding benchmark (issue 7): the same call, with the same key,
//! on one Tollgate server, over native gRPC and over HTTP/JSON
//! (`GET /v1/organizations/root`, grpc-gateway style) on HTTP/1.1
//! keep-alive and on h2c, side by side in one run.
//!
//! Here the baseline is not the echo server but Tollgate's own native gRPC
//! path: the question is what the HTTP/JSON front costs on top of it (route
//! match, JSON encoding, the bridge into the gRPC layers, and for HTTP/1.1
//! one call per connection at a time). Every protocol ends in the same gRPC
//! layers, so the server's `tollgate_grpc_requests_total{code="OK"}` of
//! GetOrganization counts the calls of all three and checks every
//! generator's success count.
//!
//! Targets and generators, all against the one server:
//! - **gRPC**: h2load with the gRPC-framed request ([`crate::h2load`]).
//! - **HTTP/JSON over h2c**: h2load `GET` of the HTTP path, same `-c`/`-m`.
//! - **HTTP/JSON over HTTP/1.1**: wrk ([`crate::wrk`]) on the same URL, by
//!   default with as many connections as h2load has streams in flight, so
//!   all three keep the same number of calls in flight.
//!
//! Each round runs every target once, each as an unmeasured warm-up run
//! and a measured run, in ABBA order (gRPC, HTTP/1.1, h2c, then h2c,
//! HTTP/1.1, gRPC, …) so drift hits all alike. Latency percentiles come
//! from h2load's per-request log and from wrk's `--latency`; server CPU per
//! call from `/proc/PID/stat` around the measured run.
//!
//! The report shows each target's medians across rounds, then each
//! transcoded target against gRPC as the median round by ratio (as
//! [`crate::report`] does), judged against the targets: CPU per
//! call at most [`TARGET_CPU_RATIO`]× gRPC's, throughput at least
//! [`TARGET_THROUGHPUT_RATIO`]× gRPC's.

use std::{net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail};

use crate::{
    child::ServerProcess,
    h2load::{self, Body, H2loadSettings, Request},
    load::{self, Kind, ORG_NAME, Target},
    report::{self, NOISY_OTHER_LOAD, RoundFigures, latency, median, verdict},
    servers::{self, TollgateCommand},
    window::Window,
    wrk::{self, WrkSettings},
};

/// The HTTP/JSON path the issue names: GetOrganization through its
/// `google.api.http` binding.
pub const DEFAULT_HTTP_PATH: &str = "/v1/organizations/root";
/// A transcoded call may cost at most this multiple of native gRPC's
/// server CPU.
pub const TARGET_CPU_RATIO: f64 = 1.5;
/// A transcoded target must keep at least this share of native gRPC's
/// throughput.
pub const TARGET_THROUGHPUT_RATIO: f64 = 0.7;

/// One way of making the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Native gRPC over h2c (h2load, gRPC-framed body): the baseline.
    Grpc,
    /// HTTP/JSON over HTTP/1.1 keep-alive (wrk).
    Http1,
    /// HTTP/JSON over h2c (h2load, GET).
    H2c,
}

// === impl Protocol ===

impl Protocol {
    /// The name used in round lines and tables.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "gRPC",
            Protocol::Http1 => "HTTP/JSON HTTP/1.1",
            Protocol::H2c => "HTTP/JSON h2c",
        }
    }

    /// Its command-line name, also used in file names.
    fn id(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
        }
    }

    /// The load generator that drives it.
    fn generator(self) -> &'static str {
        match self {
            Protocol::Grpc | Protocol::H2c => "h2load",
            Protocol::Http1 => "wrk",
        }
    }
}

/// Everything the transcoding run needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How to start the one Tollgate server.
    pub tollgate: TollgateCommand,
    /// Targets in the order of even rounds (odd rounds mirror it).
    pub protocols: Vec<Protocol>,
    /// Path and query of the HTTP/JSON call (GET), e.g.
    /// [`DEFAULT_HTTP_PATH`].
    pub http_path: String,
    /// h2load's shape (`-c`, `-m`, `-t`, binary) for gRPC and h2c; its
    /// `warmup`, `duration` and `max_requests` are not used.
    pub h2load: H2loadSettings,
    /// wrk's shape for HTTP/1.1.
    pub wrk: WrkSettings,
    /// Unmeasured warm-up run before each measured one (whole seconds,
    /// since wrk takes no fractions; zero: none).
    pub warmup: Duration,
    /// Measured run length (whole seconds, at least one).
    pub duration: Duration,
    /// Rounds; the median is reported.
    pub rounds: usize,
    /// Upper bound on the server's start-up.
    pub startup_timeout: Duration,
    /// When set, `perf record` samples the server during every measured
    /// run (for the profile BENCHMARKS.md asks for when a target is
    /// missed); the figures of such a run carry perf's cost.
    pub perf: Option<PerfSettings>,
}

/// How to profile the server's measured runs.
#[derive(Debug, Clone)]
pub struct PerfSettings {
    /// The `perf` executable.
    pub bin: PathBuf,
    /// Where `round<N>-<protocol>.data` files go.
    pub dir: PathBuf,
    /// Sampling frequency (`-F`), per second and CPU.
    pub frequency: u32,
}

/// The server under test, as the generators see it.
struct Server {
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// The listener's address, for the one-off HTTP/1.1 check.
    addr: SocketAddr,
    /// Admin listener, whose `/metrics` counts OK answers.
    admin: SocketAddr,
    /// Process id, whose CPU time is read around each measured run.
    pid: u32,
    /// The bootstrap key, sent as `x-api-key` by every generator.
    api_key: String,
}

/// What one measured run of one target gave.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Successful calls the generator counted.
    calls: u64,
    /// Length of the measured run.
    elapsed: Duration,
    /// Calls per second.
    throughput: f64,
    /// Median latency, µs.
    p50_us: f64,
    /// 99th percentile latency, µs.
    p99_us: f64,
    /// Slowest call, µs.
    max_us: f64,
    /// How much the server's OK count grew.
    server_ok: u64,
    /// Server CPU time during the run.
    server_cpu: Duration,
    /// Share of the machine used by other processes during the run.
    other_load: f64,
}

// === impl Measured ===

impl Measured {
    /// Server CPU per successful call, µs.
    fn cpu_per_call_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }

    /// As the shared report's figures, for [`report::median_pair`].
    fn figures(&self) -> RoundFigures {
        RoundFigures {
            throughput: self.throughput,
            p50_us: Some(self.p50_us),
            p99_us: Some(self.p99_us),
            mean_us: None,
            cpu_us: self.cpu_per_call_us(),
            other_load: self.other_load,
        }
    }
}

/// Fails unless the server's OK count grew by at least the generator's
/// successes (fewer: some answers it took for successes were errors) and
/// by at most `most`, the calls that could have been answered in the
/// window (more: calls from elsewhere were counted, and the count proves
/// nothing). Calls in flight when a timed run ends are abandoned by the
/// generator but may still be answered and counted, hence a range.
fn check_ok(protocol: Protocol, calls: u64, most: u64, server_ok: u64) -> Result<()> {
    if server_ok < calls {
        bail!(
            "{}: the server counted {server_ok} OK answers, but {} had {calls} successes; the \
             generator judges by HTTP status only, so the others were errors and the figures \
             are not valid",
            protocol.name(),
            protocol.generator()
        );
    }
    if server_ok > most {
        bail!(
            "{}: the server counted {server_ok} OK answers, more than the {most} calls {} could \
             have had answered; something else called it, and the figures are not valid",
            protocol.name(),
            protocol.generator()
        );
    }
    Ok(())
}

/// Calls of the warm-up run that may be counted inside the measured
/// window: the ones it abandoned when it ended, at most `in_flight`, may be
/// answered after the window opened.
fn warmup_leftovers(plan: &Plan, in_flight: usize) -> u64 {
    if plan.warmup.is_zero() {
        0
    } else {
        in_flight as u64
    }
}

/// Starts the server, checks that every target answers the call, runs the
/// rounds and prints the report. Fails if the server cannot start, a route
/// does not answer, or any measured answer was not OK.
pub async fn run(plan: &Plan) -> Result<()> {
    if plan.protocols.is_empty() {
        bail!("no protocol to measure");
    }
    print_header(plan);

    println!("## Start");
    let started = servers::start_tollgate(&plan.tollgate, plan.startup_timeout).await?;
    let admin = started
        .admin
        .context("no admin address for Tollgate's metrics")?;
    let addr: SocketAddr = started
        .url
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("unexpected server url {}", started.url))?;
    let server = Server {
        url: started.url.clone(),
        addr,
        admin,
        pid: started.process.pid(),
        api_key: started.bootstrap_key(plan.startup_timeout).await?,
    };
    println!(
        "tollgate --log-level {} SERVING after {:.1} ms (pid {}, {})",
        plan.tollgate.log_level,
        started.ready_after.as_secs_f64() * 1e3,
        server.pid,
        server.url
    );
    check_routes(plan, &server).await?;

    let body = Body::write()?;
    let mut rounds: Vec<Vec<(Protocol, Measured)>> = Vec::with_capacity(plan.rounds);
    println!();
    println!("## Rounds");
    for round in 0..plan.rounds {
        let mut order = plan.protocols.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut measured = Vec::with_capacity(order.len());
        for protocol in order {
            let m = run_target(plan, &server, &body, protocol, round).await?;
            print_round(round, protocol, &m);
            measured.push((protocol, m));
        }
        rounds.push(measured);
    }
    drop(started);

    print_report(plan, &rounds);
    Ok(())
}

/// One call per target before any load, so a missing route fails at once
/// with its answer rather than as a round of errors; the HTTP/JSON answer
/// must be JSON naming the organization, i.e. the same call.
async fn check_routes(plan: &Plan, server: &Server) -> Result<()> {
    if plan.protocols.contains(&Protocol::Grpc) {
        let target = Target {
            kind: Kind::Tollgate,
            label: Protocol::Grpc.name().to_owned(),
            url: server.url.clone(),
            authorization: format!("Bearer {}", server.api_key)
                .parse()
                .context("the bootstrap key is not a valid header value")?,
            api_key: server.api_key.clone(),
            pid: server.pid,
            admin: Some(server.admin),
        };
        let org = load::get_organization(&target).await?;
        if org.name != ORG_NAME {
            bail!("GetOrganization answered {:?}, not {ORG_NAME}", org.name);
        }
    }
    if plan.protocols.iter().any(|&p| p != Protocol::Grpc) {
        let answer =
            h2load::http1_get(server.addr, &plan.http_path, &api_key_header(server)).await?;
        let json = answer.headers.lines().any(|h| {
            h.to_ascii_lowercase()
                .starts_with("content-type: application/json")
        });
        if answer.status != 200 || !json || !answer.body.contains(ORG_NAME) {
            bail!(
                "GET {} answered {} with {:?}; the HTTP/JSON targets need a 200 JSON answer \
                 naming {ORG_NAME} (is transcoding in this build? --http-path picks another \
                 route, e.g. Connect's GET)",
                plan.http_path,
                answer.status_line,
                answer.body
            );
        }
        println!(
            "GET {}: {} ({} B of JSON)",
            plan.http_path,
            answer.status_line,
            answer.body.len()
        );
    }
    Ok(())
}

fn api_key_header(server: &Server) -> Vec<String> {
    vec![format!("x-api-key: {}", server.api_key)]
}

/// One target's warm-up and measured run.
async fn run_target(
    plan: &Plan,
    server: &Server,
    body: &Body,
    protocol: Protocol,
    round: usize,
) -> Result<Measured> {
    match protocol {
        Protocol::Grpc => {
            let request = Request {
                url: format!("{}{}", server.url, h2load::GET_ORGANIZATION_PATH),
                headers: h2load::grpc_headers(&server.api_key),
                body: Some(body.path()),
            };
            run_h2load(plan, server, protocol, round, &request).await
        }
        Protocol::H2c => {
            let request = Request {
                url: format!("{}{}", server.url, plan.http_path),
                headers: api_key_header(server),
                body: None,
            };
            run_h2load(plan, server, protocol, round, &request).await
        }
        Protocol::Http1 => run_wrk(plan, server, round).await,
    }
}

async fn run_h2load(
    plan: &Plan,
    server: &Server,
    protocol: Protocol,
    round: usize,
    request: &Request<'_>,
) -> Result<Measured> {
    let name = protocol.name();
    let timed = |duration| H2loadSettings {
        warmup: Duration::ZERO,
        duration,
        max_requests: None,
        ..plan.h2load.clone()
    };
    if !plan.warmup.is_zero() {
        let summary = h2load::run(name, &timed(plan.warmup), request, None).await?;
        h2load::check_http(name, &summary)?;
    }
    let dir = tempfile::Builder::new()
        .prefix("tollgate-bench-h2log-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let log = dir.path().join("requests.tsv");

    let profiler = start_perf(plan, server, protocol, round).await?;
    let window = Window::open(server.pid, server.admin).await?;
    let summary = h2load::run(name, &timed(plan.duration), request, Some(&log)).await?;
    let usage = window.close(server.pid, server.admin).await?;
    drop(profiler);

    h2load::check_http(name, &summary)?;
    let in_flight = plan.h2load.connections * plan.h2load.streams;
    // `started` already holds the measured run's own abandoned streams.
    let most = summary.started + warmup_leftovers(plan, in_flight);
    check_ok(protocol, summary.succeeded, most, usage.server_ok)?;
    let latencies = h2load::read_latencies(&log)?;
    let at = |q| h2load::percentile(&latencies, q).map_or(f64::NAN, |us| us as f64);
    Ok(Measured {
        calls: summary.succeeded,
        elapsed: summary.elapsed,
        throughput: summary.succeeded as f64 / summary.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: summary.max.as_secs_f64() * 1e6,
        server_ok: usage.server_ok,
        server_cpu: usage.server_cpu,
        other_load: usage.other_load,
    })
}

/// With `--perf-record`, attaches `perf record` to the server for one
/// measured run; dropping the guard sends SIGTERM, on which perf writes
/// its file and exits (it gets a minute: DWARF stacks take a while).
async fn start_perf(
    plan: &Plan,
    server: &Server,
    protocol: Protocol,
    round: usize,
) -> Result<Option<ServerProcess>> {
    let Some(perf) = &plan.perf else {
        return Ok(None);
    };
    std::fs::create_dir_all(&perf.dir)
        .with_context(|| format!("cannot create {}", perf.dir.display()))?;
    let stem = perf
        .dir
        .join(format!("round{}-{}", round + 1, protocol.id()));
    let mut command = Command::new(&perf.bin);
    // DWARF unwinding: the release build keeps debug info but no frame
    // pointers, so `-g` alone would give broken stacks.
    command
        .arg("record")
        .arg("-F")
        .arg(perf.frequency.to_string())
        .args(["--call-graph", "dwarf,16384"])
        .arg("-p")
        .arg(server.pid.to_string())
        .arg("-o")
        .arg(stem.with_extension("data"));
    let mut process = ServerProcess::spawn(
        "perf record",
        command,
        &stem.with_extension("stderr"),
        Duration::from_secs(60),
    )
    .with_context(|| format!("cannot run {}", perf.bin.display()))?;
    // Let it attach before the measured run starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    process.ensure_running()?;
    Ok(Some(process))
}

async fn run_wrk(plan: &Plan, server: &Server, round: usize) -> Result<Measured> {
    let name = Protocol::Http1.name();
    let url = format!("{}{}", server.url, plan.http_path);
    let headers = api_key_header(server);
    if !plan.warmup.is_zero() {
        let summary = wrk::run(name, &plan.wrk, &url, &headers, plan.warmup).await?;
        wrk::check(name, &summary)?;
    }

    let profiler = start_perf(plan, server, Protocol::Http1, round).await?;
    let window = Window::open(server.pid, server.admin).await?;
    let summary = wrk::run(name, &plan.wrk, &url, &headers, plan.duration).await?;
    let usage = window.close(server.pid, server.admin).await?;
    drop(profiler);

    wrk::check(name, &summary)?;
    // wrk abandons at most one call per connection when the run ends, and
    // counts only the answered ones.
    let in_flight = plan.wrk.connections;
    let most = summary.requests + in_flight as u64 + warmup_leftovers(plan, in_flight);
    check_ok(Protocol::Http1, summary.requests, most, usage.server_ok)?;
    Ok(Measured {
        calls: summary.requests,
        elapsed: summary.elapsed,
        throughput: summary.requests_per_sec,
        p50_us: summary.p50.as_secs_f64() * 1e6,
        p99_us: summary.p99.as_secs_f64() * 1e6,
        max_us: summary.max.as_secs_f64() * 1e6,
        server_ok: usage.server_ok,
        server_cpu: usage.server_cpu,
        other_load: usage.other_load,
    })
}

fn print_round(round: usize, protocol: Protocol, m: &Measured) {
    println!(
        "round {}  {:<18} {:>6.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  max {:>6.0} µs  server CPU {:>4.1} µs/call  other load {:>3.0}%  ({} calls in {:.1} s by {}, server counted {} OK)",
        round + 1,
        protocol.name(),
        m.throughput,
        m.p50_us,
        m.p99_us,
        m.max_us,
        m.cpu_per_call_us(),
        m.other_load * 100.0,
        m.calls,
        m.elapsed.as_secs_f64(),
        protocol.generator(),
        m.server_ok
    );
}

fn print_header(plan: &Plan) {
    let (cpus, model) = report::machine();
    println!("# tollgate-bench transcoding");
    println!();
    println!("machine: {cpus} CPUs, {model}");
    println!(
        "tollgate: {} --log-level {}",
        plan.tollgate.bin.display(),
        plan.tollgate.log_level
    );
    println!(
        "call: GetOrganization {ORG_NAME} with x-api-key; HTTP/JSON as GET {}",
        plan.http_path
    );
    let h = &plan.h2load;
    println!(
        "gRPC and h2c: {} -c {} -m {} -t {}; HTTP/1.1: {} -c {} -t {} (keep-alive)",
        h.bin.display(),
        h.connections,
        h.streams,
        h.threads,
        plan.wrk.bin.display(),
        plan.wrk.connections,
        plan.wrk.threads
    );
    let order: Vec<&str> = plan.protocols.iter().map(|p| p.name()).collect();
    println!(
        "{} round(s) of {}, each target {:.0} s warm-up run + {:.0} s measured; odd rounds reversed (ABBA)",
        plan.rounds,
        order.join(", "),
        plan.warmup.as_secs_f64(),
        plan.duration.as_secs_f64()
    );
    if let Some(perf) = &plan.perf {
        println!(
            "perf record -F {} --call-graph dwarf on the server in every measured run, into {} \
             (its cost is in these figures)",
            perf.frequency,
            perf.dir.display()
        );
    }
    println!();
}

/// The rounds of one protocol, in order.
fn of(rounds: &[Vec<(Protocol, Measured)>], protocol: Protocol) -> Vec<Measured> {
    rounds
        .iter()
        .filter_map(|r| r.iter().find(|(p, _)| *p == protocol).map(|(_, m)| *m))
        .collect()
}

/// Each round's (gRPC, `protocol`) pair, for ratios within a round.
fn pairs(
    rounds: &[Vec<(Protocol, Measured)>],
    protocol: Protocol,
) -> Vec<(RoundFigures, RoundFigures)> {
    rounds
        .iter()
        .filter_map(|r| {
            let get = |p: Protocol| r.iter().find(|(q, _)| *q == p).map(|(_, m)| m.figures());
            Some((get(Protocol::Grpc)?, get(protocol)?))
        })
        .collect()
}

/// Prints the medians per target, the ratios against gRPC with their
/// verdicts, and one PASS/MISS line per target.
fn print_report(plan: &Plan, rounds: &[Vec<(Protocol, Measured)>]) {
    println!();
    println!("## Results");
    println!();
    println!(
        "### Per target: median of {} rounds (Tollgate --log-level {})",
        rounds.len(),
        plan.tollgate.log_level
    );
    println!();
    println!(
        "| target | generator | throughput | p50 latency | p99 latency | server CPU per call | other processes' CPU, max |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for &protocol in &plan.protocols {
        let ms = of(rounds, protocol);
        let med = |f: fn(&Measured) -> f64| {
            median(&ms.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let other = ms.iter().map(|m| m.other_load).fold(0.0, f64::max);
        println!(
            "| {} | {} | {:.0} req/s | {} | {} | {:.1} µs | {:.0}% |",
            protocol.name(),
            protocol.generator(),
            med(|m| m.throughput),
            latency(med(|m| m.p50_us)),
            latency(med(|m| m.p99_us)),
            med(Measured::cpu_per_call_us),
            other * 100.0
        );
    }
    println!();

    let mut lines = Vec::new();
    let transcoded: Vec<Protocol> = plan
        .protocols
        .iter()
        .copied()
        .filter(|&p| p != Protocol::Grpc)
        .collect();
    if plan.protocols.contains(&Protocol::Grpc) && !transcoded.is_empty() {
        println!(
            "### Against native gRPC: median round by b/a ({} rounds)",
            rounds.len()
        );
        println!();
        println!("| metric | (a) gRPC | (b) transcoded | b/a | target | |");
        println!("|---|---:|---:|---:|---|---|");
        for protocol in transcoded {
            ratio_rows(protocol, &pairs(rounds, protocol), &mut lines);
        }
        println!();
    }

    let noisy = rounds
        .iter()
        .filter(|r| r.iter().any(|(_, m)| m.other_load > NOISY_OTHER_LOAD))
        .count();
    if noisy > 0 {
        lines.push(format!(
            "NOTE  {noisy} of {} rounds ran while other processes used more than {:.0}% of the \
             machine; their throughput and latency ratios are unreliable (server CPU per call is \
             less so). Rerun on a quieter machine or with more --rounds.",
            rounds.len(),
            NOISY_OTHER_LOAD * 100.0
        ));
    }
    for line in &lines {
        println!("{line}");
    }
}

/// Prints one transcoded target's rows against gRPC and adds its verdicts
/// to `lines`.
fn ratio_rows(protocol: Protocol, pairs: &[(RoundFigures, RoundFigures)], lines: &mut Vec<String>) {
    let who = protocol.name();
    let some = |v: Option<f64>| v.unwrap_or(f64::NAN);
    if let Some(((a, b), ratio)) = report::median_pair(pairs, |f| f.throughput, false) {
        let ok = ratio >= TARGET_THROUGHPUT_RATIO;
        println!(
            "| throughput, {who} | {:.0} req/s | {:.0} req/s | {ratio:.2}× | ≥ {TARGET_THROUGHPUT_RATIO}× | {} |",
            a.throughput,
            b.throughput,
            verdict(ok)
        );
        lines.push(format!(
            "{}  throughput ({who}): {:.0} req/s = {ratio:.2}× gRPC {:.0} req/s (target ≥ {TARGET_THROUGHPUT_RATIO}×)",
            verdict(ok),
            b.throughput,
            a.throughput
        ));
    }
    if let Some(((a, b), ratio)) = report::median_pair(pairs, |f| f.cpu_us, true) {
        let ok = ratio <= TARGET_CPU_RATIO;
        println!(
            "| server CPU per call, {who} | {:.1} µs | {:.1} µs | {ratio:.2}× | ≤ {TARGET_CPU_RATIO}× | {} |",
            a.cpu_us,
            b.cpu_us,
            verdict(ok)
        );
        lines.push(format!(
            "{}  server CPU per call ({who}): {:.1} µs = {ratio:.2}× gRPC {:.1} µs (target ≤ {TARGET_CPU_RATIO}×)",
            verdict(ok),
            b.cpu_us,
            a.cpu_us
        ));
    }
    for (label, f) in [
        (
            "p50 latency",
            (|f: &RoundFigures| f.p50_us) as fn(&RoundFigures) -> Option<f64>,
        ),
        ("p99 latency", |f: &RoundFigures| f.p99_us),
    ] {
        if let Some(((a, b), ratio)) = report::median_pair(pairs, |x| some(f(x)), true) {
            println!(
                "| {label}, {who} | {} | {} | {ratio:.2}× | — | |",
                latency(some(f(&a))),
                latency(some(f(&b)))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(throughput: f64, cpu_us: f64) -> Measured {
        Measured {
            calls: 1_000,
            elapsed: Duration::from_secs(1),
            throughput,
            p50_us: 100.0,
            p99_us: 1_000.0,
            max_us: 2_000.0,
            server_ok: 1_000,
            server_cpu: Duration::from_secs_f64(cpu_us * 1e-3),
            other_load: 0.0,
        }
    }

    #[test]
    fn pairs_match_protocols_within_a_round_whatever_the_order() {
        let rounds = vec![
            vec![
                (Protocol::Grpc, measured(100.0, 10.0)),
                (Protocol::Http1, measured(80.0, 12.0)),
                (Protocol::H2c, measured(90.0, 11.0)),
            ],
            vec![
                (Protocol::H2c, measured(95.0, 11.0)),
                (Protocol::Http1, measured(70.0, 13.0)),
                (Protocol::Grpc, measured(110.0, 10.0)),
            ],
        ];
        let p = pairs(&rounds, Protocol::Http1);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].0.throughput, p[0].1.throughput), (100.0, 80.0));
        assert_eq!((p[1].0.throughput, p[1].1.throughput), (110.0, 70.0));
        assert!((p[1].1.cpu_us - 13.0).abs() < 1e-9);
        assert_eq!(of(&rounds, Protocol::H2c).len(), 2);
        // Without gRPC in a round there is nothing to compare against.
        let no_grpc = vec![vec![(Protocol::H2c, measured(1.0, 1.0))]];
        assert!(pairs(&no_grpc, Protocol::H2c).is_empty());
    }

    #[test]
    fn ok_count_bounds() {
        check_ok(Protocol::H2c, 100, 132, 100).unwrap();
        check_ok(Protocol::H2c, 100, 132, 132).unwrap();
        // Fewer OK answers than successes: some 200s were errors.
        assert!(check_ok(Protocol::Http1, 100, 132, 99).is_err());
        // More than could have been answered: someone else's calls.
        assert!(check_ok(Protocol::Grpc, 100, 132, 133).is_err());
    }
}
