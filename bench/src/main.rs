//! `tollgate-bench`: Tollgate's benchmark suite. Every figure is measured
//! next to a baseline in the same run and reported as a ratio, because on a
//! small shared machine only ratios repeat.
//!
//! Modules:
//! - `suite`: the phases of a run (idle memory, load rounds, cold starts).
//! - `load`: the closed-loop load generator over tonic channels.
//! - `servers`: starting Tollgate and the baseline, timing readiness.
//! - `child`: the child-process guard that kills servers on every exit path,
//!   and `/proc` memory readings.
//! - `echo`: the baseline, a bare tonic echo server (hidden `echo-server`
//!   subcommand of this binary).
//! - `report`: medians, ratios, targets and the printed table.
#![forbid(unsafe_code)]

mod child;
mod echo;
mod load;
mod report;
mod servers;
mod suite;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    load::LoadSettings,
    servers::{EchoCommand, Launch, TollgateCommand},
    suite::Plan,
};

/// Benchmarks Tollgate against a bare tonic server, side by side: unary
/// throughput and latency (GetOrganization with an API key vs. an echo of
/// the same size), cold start, and idle memory. Prints each figure with its
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

    /// HTTP/2 connections per target.
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Calls in flight per target, spread over the connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,

    /// Measured seconds per round.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,

    /// Warm-up seconds before each round's measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,

    /// Rounds per target (run alternately; the median round is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,

    /// End each round after this many measured calls instead of after
    /// --duration (for profiling with a fixed amount of work).
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

    /// `--log-level` for `tollgate serve`.
    #[arg(long, default_value = "warn")]
    tollgate_log_level: String,

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
    Ok(Plan {
        tollgate: TollgateCommand {
            bin,
            launch: Launch {
                wrapper: words(o.tollgate_wrapper.as_deref()),
                stop_grace,
            },
            log_level: o.tollgate_log_level,
            extra_args: o.tollgate_arg,
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
