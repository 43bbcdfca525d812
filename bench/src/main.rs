//! `tollgate-bench`: Tollgate's benchmark suite. Every figure is measured
//! next to a baseline in the same run and reported as a ratio, because on a
//! small shared machine only ratios repeat.
//!
//! Modules:
//! - `suite`: the phases of a run (idle memory, load rounds, cold starts).
//! - `load`: the closed-loop load generator over tonic channels.
//! - `h2load`: the second load generator, h2load with a gRPC-framed body,
//!   checked against the servers' own OK counts.
//! - `servers`: starting Tollgate and the baseline, timing readiness.
//! - `child`: the child-process guard that kills servers on every exit path,
//!   and `/proc` memory readings.
//! - `echo`: the baseline, a bare tonic echo server (hidden `echo-server`
//!   subcommand of this binary).
//! - `report`: medians, ratios, targets and the printed table.
//! - `transcoding`: the `transcoding` subcommand, one server's native gRPC
//!   against its HTTP/JSON transcoding over HTTP/1.1 and h2c (issue 7).
//! - `wrk`: the HTTP/1.1 load generator of that subcommand.
//! - `oauth`: the `oauth` subcommand, token issue, introspection, and a
//!   JWT-authenticated call against the same call with an API key (issue 8).
//! - `ratelimit`: the `ratelimit` subcommand, in-process limiter decisions
//!   per second beside `governor`'s (issue 9).
//! - `ratelimit_server`: the `ratelimit-server` subcommand, the rate-limit
//!   layer's cost on a running server and ext_authz `Check` latency at a
//!   fixed rate (issue 9).
#![forbid(unsafe_code)]

mod child;
mod echo;
mod events;
mod h2load;
mod jobs;
mod load;
mod oauth;
mod ratelimit;
mod ratelimit_server;
mod report;
mod servers;
mod suite;
mod traces;
mod transcoding;
mod webhooks;
mod window;
mod wrk;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    h2load::H2loadSettings,
    load::LoadSettings,
    report::Generator,
    servers::{EchoCommand, Launch, TollgateCommand},
    suite::Plan,
    transcoding::Protocol,
    wrk::WrkSettings,
};

/// Benchmarks Tollgate against a bare tonic server, side by side: unary
/// throughput, latency and server CPU per call (GetOrganization with an API
/// key vs. an echo of the same size) under two load generators (the bench's
/// tonic client and h2load), cold start, and idle memory. Prints each figure with its
/// ratio to the baseline and PASS/MISS against the targets; exits 0 on a
/// miss (it measures, it does not judge) and non-zero on errors.
#[derive(Debug, Parser)]
#[command(name = "tollgate-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    options: Options,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the baseline echo service (started by the bench itself).
    #[command(hide = true)]
    EchoServer {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Set TCP_NODELAY on accepted sockets (tonic's default).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        tcp_nodelay: bool,
    },
    /// Transcoding benchmark (issue 7): GetOrganization on one Tollgate
    /// server over native gRPC (h2load) against `GET /v1/organizations/root`
    /// over HTTP/1.1 keep-alive (wrk) and h2c (h2load), same key, side by
    /// side in ABBA rounds; throughput, p50/p99 and server CPU per call,
    /// with ratios to gRPC judged against the targets (CPU ≤ 1.5×,
    /// throughput ≥ 0.7×). Exits 0 on a miss, non-zero on errors (a server
    /// or route that does not answer, any error answer under load).
    // Boxed: the options dwarf the other variant (clippy::large_enum_variant).
    Transcoding(Box<TranscodingOptions>),
    /// OAuth benchmark (issue 8), on one Tollgate server side by side in
    /// ABBA rounds: `client_credentials` token issue per second (target ≥
    /// 10,000/s), introspection per second (≥ 50,000/s), and GetOrganization
    /// with an access token against the same call with an API key of the
    /// same service account (server CPU per call ≤ 1.05×), all under h2load.
    /// Exits 0 on a miss, non-zero on errors.
    Oauth(Box<oauth::Options>),
    /// Rate-limit benchmark (issue 9): in-process limiter decisions per
    /// second on one thread, for a hot key set and a million keys, beside
    /// `governor`'s keyed limiter on the same keys (target ≥ 5,000,000/s
    /// hot).
    Ratelimit(ratelimit::Options),
    /// Rate limiting on running servers (issue 9), under h2load: the
    /// layer's server CPU per call against the same server without it
    /// (target ≤ 1.05×), and Envoy ext_authz `Check` p99 at a fixed
    /// 10,000 calls/s (target < 1 ms). Exits 0 on a miss, non-zero on
    /// errors.
    RatelimitServer(Box<ratelimit_server::Options>),
    /// Events benchmark (issue 10), on PostgreSQL with NATS JetStream:
    /// relay throughput to JetStream with acks (target ≥ 20,000 events/s),
    /// commit-to-watcher latency (p99 < 50 ms), server memory per idle
    /// watcher with 10,000 open (< 16 KiB) and ListEvents page 1,000
    /// against page 1 over a million events (≤ 1.5×). Exits 0 on a miss,
    /// non-zero on errors.
    Events(Box<events::Options>),
    /// Job queue benchmark (issue 11): jobs claimed and completed per
    /// second by 4 workers on PostgreSQL with no-op handlers (target ≥
    /// 5,000/s). Exits 0 on a miss, non-zero on errors.
    Jobs(Box<jobs::Options>),
    /// Webhook benchmark (issue 11): deliveries per second from a real
    /// server to a local receiver (target ≥ 2,000/s), and write-to-delivery
    /// latency. Exits 0 on a miss, non-zero on errors.
    Webhooks(Box<webhooks::Options>),
    /// Trace export cost (issue 12): server CPU per call with traces off,
    /// 1% sampled and 100% sampled to a local OTLP receiver, three servers
    /// side by side under h2load (targets: 1% ≤ 1.03×, 100% ≤ 1.25× off).
    /// Exits 0 on a miss, non-zero on errors.
    Traces(Box<traces::Options>),
}

#[derive(Debug, Args)]
struct TranscodingOptions {
    /// The `tollgate` server binary [default: `tollgate` next to this binary].
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate_bin: Option<PathBuf>,

    /// Path and query of the HTTP/JSON GET. The default is the issue's
    /// grpc-gateway route; Connect's GET
    /// (`/tollgate.v1.OrganizationService/GetOrganization?encoding=json&message=…`)
    /// stands in on a build without transcoding.
    #[arg(long, default_value = transcoding::DEFAULT_HTTP_PATH)]
    http_path: String,

    /// Targets to run, in the order of even rounds (odd rounds mirror it).
    /// Ratios need `grpc`; a single target is useful under a profiler.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "grpc,http1,h2c"
    )]
    protocols: Vec<Protocol>,

    /// The h2load executable (Debian package `nghttp2-client`).
    #[arg(long, env = "H2LOAD", default_value = "h2load")]
    h2load_bin: PathBuf,

    /// h2load `-c` (gRPC and h2c): HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    h2load_connections: usize,

    /// h2load `-m` (gRPC and h2c): concurrent streams per connection.
    #[arg(long, default_value_t = 8)]
    h2load_streams: usize,

    /// h2load `-t`: client threads.
    #[arg(long, default_value_t = 1)]
    h2load_threads: usize,

    /// The wrk executable (Debian package `wrk`).
    #[arg(long, env = "WRK", default_value = "wrk")]
    wrk_bin: PathBuf,

    /// wrk `-c` (HTTP/1.1): keep-alive connections, one call in flight
    /// each [default: h2load's connections × streams, so every target keeps
    /// the same number of calls in flight].
    #[arg(long)]
    wrk_connections: Option<usize>,

    /// wrk `-t`: client threads.
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,

    /// Measured seconds per target and round (whole seconds: wrk takes no
    /// fractions).
    #[arg(long, default_value_t = 5)]
    duration: u64,

    /// Seconds of the unmeasured warm-up run before each measured one
    /// (0: none).
    #[arg(long, default_value_t = 1)]
    warmup: u64,

    /// Rounds (the median is reported; odd counts keep it a real round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,

    /// Smoke run: 1 round of 1 s after a 1 s warm-up.
    #[arg(long)]
    quick: bool,

    /// `--log-level` for `tollgate serve`.
    #[arg(long, default_value = "warn")]
    tollgate_log_level: String,

    /// Extra argument for `tollgate serve` (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    tollgate_arg: Vec<String>,

    /// Seconds the server may take to become ready.
    #[arg(long, default_value_t = 30.0)]
    startup_timeout: f64,

    /// Seconds the server may take to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 2.0)]
    stop_grace: f64,

    /// Profile: attach `perf record --call-graph dwarf` to the server
    /// during every measured run, writing `round<N>-<protocol>.data` into
    /// this directory. perf's cost lands in that run's figures, so take
    /// the figures from a run without it.
    #[arg(long, value_name = "DIR")]
    perf_record: Option<PathBuf>,

    /// The perf executable.
    #[arg(long, env = "PERF", default_value = "perf")]
    perf_bin: PathBuf,

    /// perf `-F`: samples per second (and CPU).
    #[arg(long, default_value_t = 499)]
    perf_frequency: u32,
}

#[derive(Debug, Args)]
struct Options {
    /// The `tollgate` server binary [default: `tollgate` next to this binary].
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate_bin: Option<PathBuf>,

    /// Load generators to run, in order (comma-separated). The targets are
    /// judged on h2load's figures.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tonic,h2load"
    )]
    generators: Vec<Generator>,

    /// HTTP/2 connections per target (tonic generator).
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Calls in flight per target, spread over the connections (tonic
    /// generator).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,

    /// The h2load executable (Debian package `nghttp2-client`).
    #[arg(long, env = "H2LOAD", default_value = "h2load")]
    h2load_bin: PathBuf,

    /// h2load `-c`: HTTP/2 connections per target.
    #[arg(long, default_value_t = 4)]
    h2load_connections: usize,

    /// h2load `-m`: concurrent streams per connection.
    #[arg(long, default_value_t = 8)]
    h2load_streams: usize,

    /// h2load `-t`: client threads.
    #[arg(long, default_value_t = 1)]
    h2load_threads: usize,

    /// Measured seconds per round (h2load `-D`).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,

    /// Warm-up seconds before each round's measurement (for h2load, a
    /// separate unmeasured run).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,

    /// Rounds per target (run alternately; the median round is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// End each round after this many measured calls instead of after
    /// --duration (for profiling with a fixed amount of work; h2load `-n`).
    #[arg(long)]
    requests: Option<u64>,

    /// Cold starts per server (0 skips the phase).
    #[arg(long, default_value_t = 5)]
    cold_starts: usize,

    /// Seconds the servers idle after start before VmRSS is read.
    #[arg(long, default_value_t = 1.0)]
    idle: f64,

    /// Seconds a server may take to become ready.
    #[arg(long, default_value_t = 30.0)]
    startup_timeout: f64,

    /// Smoke run in seconds: 1 round of 1 s after a 0.5 s warm-up.
    #[arg(long)]
    quick: bool,

    /// Run Tollgate under this command, split on whitespace (e.g.
    /// "valgrind --tool=callgrind --callgrind-out-file=/tmp/tollgate.%p").
    /// Raise --stop-grace so the profiler can write its output.
    #[arg(long, value_name = "COMMAND")]
    tollgate_wrapper: Option<String>,

    /// Run the echo baseline under this command, like --tollgate-wrapper.
    #[arg(long, value_name = "COMMAND")]
    echo_wrapper: Option<String>,

    /// Seconds a server may take to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 2.0)]
    stop_grace: f64,

    /// `--log-level` for `tollgate serve`, comma-separated to compare
    /// several: each runs as its own server with its own rows. `info` is
    /// the server's default; `warn` skips the per-call span's output. The
    /// first one is also used for cold start and memory.
    #[arg(long, value_delimiter = ',', default_value = "warn,info")]
    tollgate_log_level: Vec<String>,

    /// Extra argument for `tollgate serve` (repeatable), e.g.
    /// --tollgate-arg=--cache-ttl-secs=600 to compare variants.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    tollgate_arg: Vec<String>,

    /// Whether the echo baseline sets TCP_NODELAY on accepted sockets, to
    /// compare with a server that accepts its own sockets.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    echo_tcp_nodelay: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::EchoServer {
            listen,
            tcp_nodelay,
        }) => echo::serve(listen, tcp_nodelay),
        Some(Command::Transcoding(options)) => {
            transcoding_plan(*options).and_then(|plan| block_on(transcoding::run(&plan)))
        }
        Some(Command::Ratelimit(options)) => ratelimit::run(&options),
        Some(Command::RatelimitServer(options)) => block_on(ratelimit_server::run(*options)),
        Some(Command::Events(options)) => block_on(events::run(*options)),
        Some(Command::Jobs(options)) => block_on(jobs::run(*options)),
        Some(Command::Webhooks(options)) => block_on(webhooks::run(*options)),
        Some(Command::Traces(options)) => block_on(traces::run(*options)),
        Some(Command::Oauth(options)) => {
            options.plan().and_then(|plan| block_on(oauth::run(&plan)))
        }
        None => plan(cli.options).and_then(|plan| block_on(suite::run(&plan))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a benchmark until it ends or a signal arrives. Either way its
/// future is dropped before this returns, and with it every server guard,
/// so no child outlives the bench.
fn block_on(bench: impl Future<Output = Result<()>>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = bench => result,
            () = tollgate_server::shutdown::signal() => bail!("interrupted; servers stopped"),
        }
    })
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} must be a number ≥ 0"))
}

/// The server binary: `given`, or `tollgate` next to this binary.
fn tollgate_bin(given: Option<PathBuf>) -> Result<PathBuf> {
    let bin = match given {
        Some(path) => path,
        None => std::env::current_exe()
            .context("cannot locate this binary")?
            .with_file_name("tollgate"),
    };
    if !bin.exists() {
        bail!(
            "no tollgate binary at {}; build it with `cargo build --release -p tollgate-server` \
             or pass --tollgate-bin / TOLLGATE_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// Resolves the `transcoding` command line into its plan.
fn transcoding_plan(o: TranscodingOptions) -> Result<transcoding::Plan> {
    if o.h2load_connections == 0 || o.h2load_streams == 0 || o.h2load_threads == 0 {
        bail!("--h2load-connections, --h2load-streams and --h2load-threads must be at least 1");
    }
    let wrk_connections = o
        .wrk_connections
        .unwrap_or(o.h2load_connections * o.h2load_streams);
    // wrk refuses fewer connections than threads.
    if o.wrk_threads == 0 || wrk_connections < o.wrk_threads {
        bail!("--wrk-threads must be at least 1 and --wrk-connections at least --wrk-threads");
    }
    if !o.http_path.starts_with('/') {
        bail!("--http-path must start with '/'");
    }
    let (rounds, duration, warmup) = if o.quick {
        (1, 1, 1)
    } else {
        (o.rounds, o.duration.max(1), o.warmup)
    };
    let stop_grace = seconds("--stop-grace", o.stop_grace)?;
    Ok(transcoding::Plan {
        tollgate: TollgateCommand {
            bin: tollgate_bin(o.tollgate_bin)?,
            launch: Launch {
                wrapper: Vec::new(),
                stop_grace,
            },
            log_level: o.tollgate_log_level,
            extra_args: o.tollgate_arg,
        },
        protocols: o.protocols,
        http_path: o.http_path,
        h2load: H2loadSettings {
            bin: o.h2load_bin,
            connections: o.h2load_connections,
            streams: o.h2load_streams,
            threads: o.h2load_threads,
            warmup: Duration::from_secs(warmup),
            duration: Duration::from_secs(duration),
            max_requests: None,
            rps: None,
        },
        wrk: WrkSettings {
            bin: o.wrk_bin,
            connections: wrk_connections,
            threads: o.wrk_threads,
        },
        warmup: Duration::from_secs(warmup),
        duration: Duration::from_secs(duration),
        rounds,
        startup_timeout: seconds("--startup-timeout", o.startup_timeout)?,
        perf: o.perf_record.map(|dir| transcoding::PerfSettings {
            bin: o.perf_bin,
            dir,
            frequency: o.perf_frequency,
        }),
    })
}

/// Resolves the command line into a [`Plan`].
fn plan(o: Options) -> Result<Plan> {
    let bin = tollgate_bin(o.tollgate_bin)?;
    let (rounds, duration, warmup) = if o.quick {
        (1, Duration::from_secs(1), Duration::from_millis(500))
    } else {
        (
            o.rounds,
            seconds("--duration", o.duration)?,
            seconds("--warmup", o.warmup)?,
        )
    };
    let stop_grace = seconds("--stop-grace", o.stop_grace)?;
    if o.connections == 0 || o.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    if o.h2load_connections == 0 || o.h2load_streams == 0 || o.h2load_threads == 0 {
        bail!("--h2load-connections, --h2load-streams and --h2load-threads must be at least 1");
    }
    if o.tollgate_log_level.is_empty() {
        bail!("--tollgate-log-level needs at least one level");
    }
    let tollgates = o
        .tollgate_log_level
        .iter()
        .map(|level| TollgateCommand {
            bin: bin.clone(),
            launch: Launch {
                wrapper: words(o.tollgate_wrapper.as_deref()),
                stop_grace,
            },
            log_level: level.clone(),
            extra_args: o.tollgate_arg.clone(),
        })
        .collect();
    Ok(Plan {
        tollgates,
        generators: o.generators,
        h2load: H2loadSettings {
            bin: o.h2load_bin,
            connections: o.h2load_connections,
            streams: o.h2load_streams,
            threads: o.h2load_threads,
            warmup,
            duration,
            max_requests: o.requests,
            rps: None,
        },
        echo: EchoCommand {
            bin: std::env::current_exe().context("cannot locate this binary")?,
            launch: Launch {
                wrapper: words(o.echo_wrapper.as_deref()),
                stop_grace,
            },
            tcp_nodelay: o.echo_tcp_nodelay,
        },
        load: LoadSettings {
            connections: o.connections,
            concurrency: o.concurrency,
            warmup,
            duration,
            max_requests: o.requests,
        },
        rounds,
        cold_starts: o.cold_starts,
        idle: seconds("--idle", o.idle)?,
        startup_timeout: seconds("--startup-timeout", o.startup_timeout)?,
    })
}

fn words(command: Option<&str>) -> Vec<String> {
    command
        .map(|c| c.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}
