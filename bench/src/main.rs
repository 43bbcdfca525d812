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
#![forbid(unsafe_code)]

mod child;
mod echo;
mod h2load;
mod load;
mod report;
mod servers;
mod suite;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    h2load::H2loadSettings,
    load::LoadSettings,
    report::Generator,
    servers::{EchoCommand, Launch, TollgateCommand},
    suite::Plan,
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
        None => plan(cli.options).and_then(|plan| run_suite(&plan)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the suite until it ends or a signal arrives. Either way the suite's
/// future is dropped before this returns, and with it every server guard,
/// so no child outlives the bench.
fn run_suite(plan: &Plan) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = suite::run(plan) => result,
            () = tollgate_server::shutdown::signal() => bail!("interrupted; servers stopped"),
        }
    })
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} must be a number ≥ 0"))
}

/// Resolves the command line into a [`Plan`].
fn plan(o: Options) -> Result<Plan> {
    let bin = match o.tollgate_bin {
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
