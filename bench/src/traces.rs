//! The `traces` subcommand (issue 12): what exporting traces costs the
//! server. Three Tollgate servers side by side in one run: traces off, 1%
//! of calls sampled, and every call sampled, the last two exporting over
//! OTLP/gRPC to a receiver in this process (a real `TraceService` server
//! from `opentelemetry-proto`, which counts what it gets; its CPU is this
//! process's, not the servers'). Each serves GetOrganization under h2load
//! (the same request, key and `-c`/`-m`), in rotating order across rounds;
//! server CPU per call comes from `/proc/PID/stat` around each measured
//! run. Judged: the median per-round CPU ratio to "off", 1% at most
//! [`TARGET_ONE_PERCENT`]×, 100% at most [`TARGET_ALL`]×.
//!
//! The receiver's span count must show that the sampled servers really
//! exported (at least one span per call at 100%): a benchmark of an
//! exporter that sends nothing would be worthless.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::Args;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

use crate::{
    h2load::{self, Body, H2loadSettings},
    load::{Kind, Target},
    report::{self, median, verdict},
    servers::{self, Launch, TollgateCommand},
};

/// 1% sampling may cost at most this multiple of "off" in server CPU.
pub const TARGET_ONE_PERCENT: f64 = 1.03;
/// Sampling every call may cost at most this multiple of "off".
pub const TARGET_ALL: f64 = 1.25;

/// `tollgate-bench traces`'s command line.
#[derive(Debug, Args)]
pub struct Options {
    /// The `tollgate` server binary [default: `tollgate` next to this binary].
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate_bin: Option<PathBuf>,
    /// The h2load executable (Debian package `nghttp2-client`).
    #[arg(long, env = "H2LOAD", default_value = "h2load")]
    h2load_bin: PathBuf,
    /// h2load `-c`: HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    h2load_connections: usize,
    /// h2load `-m`: concurrent streams per connection.
    #[arg(long, default_value_t = 8)]
    h2load_streams: usize,
    /// Measured seconds per server and round.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of the unmeasured warm-up run before each measured one.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rounds (the median is judged).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Smoke run: 1 round of 1 s.
    #[arg(long)]
    quick: bool,
    /// Seconds a server may take to become ready.
    #[arg(long, default_value_t = 30.0)]
    startup_timeout: f64,
}

/// The receiver: counts spans and exports.
#[derive(Default)]
struct Sink {
    spans: AtomicU64,
}

struct Receiver(Arc<Sink>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.spans.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_receiver(sink: Arc<Sink>) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // TCP_NODELAY, as real collectors set it (Go's net package and gRPC
    // C-core do): without it, a small answer waits on the exporter's
    // delayed ACK (up to 40 ms) and the queue fills, so most spans of the
    // 100% server were dropped and the ratio measured less export.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |stream| {
            let stream = stream?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        },
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(sink)))
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}

/// One server configuration.
struct Setup {
    label: &'static str,
    args: Vec<String>,
}

/// Runs the rounds and prints the report.
pub async fn run(o: Options) -> Result<()> {
    let (rounds, duration, warmup) = if o.quick {
        (1, Duration::from_secs(1), Duration::from_millis(500))
    } else {
        (
            o.rounds.max(1),
            Duration::from_secs_f64(o.duration.max(0.5)),
            Duration::from_secs_f64(o.warmup.max(0.0)),
        )
    };
    let bin = crate::tollgate_bin(o.tollgate_bin)?;
    let sink = Arc::new(Sink::default());
    let receiver = start_receiver(sink.clone()).await?;
    let endpoint = format!("http://{receiver}");
    let setups = [
        Setup {
            label: "off",
            args: Vec::new(),
        },
        Setup {
            label: "1% sampled",
            args: vec![
                "--otlp-endpoint".into(),
                endpoint.clone(),
                "--trace-sample-ratio".into(),
                "0.01".into(),
            ],
        },
        Setup {
            label: "100% sampled",
            args: vec![
                "--otlp-endpoint".into(),
                endpoint.clone(),
                "--trace-sample-ratio".into(),
                "1".into(),
            ],
        },
    ];

    let (cpus, model) = report::machine();
    println!("# tollgate-bench traces");
    println!();
    println!("machine: {cpus} CPUs, {model}");
    println!(
        "GetOrganization over h2c, h2load -c {} -m {}, {} s measured after {} s warm-up, {rounds} rounds; receiver: OTLP/gRPC in the bench process",
        o.h2load_connections,
        o.h2load_streams,
        duration.as_secs_f64(),
        warmup.as_secs_f64()
    );
    let timeout = Duration::from_secs_f64(o.startup_timeout);
    let mut started = Vec::new();
    let mut targets = Vec::new();
    for setup in &setups {
        let cmd = TollgateCommand {
            bin: bin.clone(),
            launch: Launch {
                wrapper: Vec::new(),
                stop_grace: Duration::from_secs(2),
            },
            log_level: "warn".into(),
            extra_args: setup.args.clone(),
        };
        let s = servers::start_tollgate(&cmd, timeout).await?;
        let key = s.bootstrap_key(timeout).await?;
        targets.push(Target {
            kind: Kind::Tollgate,
            label: setup.label.to_owned(),
            url: s.url.clone(),
            authorization: format!("Bearer {key}")
                .parse()
                .context("the bootstrap key is not a valid header value")?,
            api_key: key,
            pid: s.process.pid(),
            admin: s.admin,
        });
        started.push(s);
    }
    let settings = H2loadSettings {
        bin: o.h2load_bin,
        connections: o.h2load_connections,
        streams: o.h2load_streams,
        threads: 1,
        warmup,
        duration,
        max_requests: None,
        rps: None,
    };
    let body = Body::write()?;

    // Per setup: CPU per call and throughput of each round.
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut rate: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut calls_sampled_all = 0u64;
    let mut spans_during_all = 0u64;
    println!();
    println!("## Rounds");
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..setups.len()).collect();
        order.rotate_left(round % setups.len());
        for i in order {
            let before = sink.spans.load(Ordering::Relaxed);
            let r = h2load::run_round(&targets[i], &settings, &body).await?;
            if i == 2 {
                // The exporter sends on its own schedule: wait for it.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                calls_sampled_all += r.summary.succeeded;
                spans_during_all += sink.spans.load(Ordering::Relaxed).saturating_sub(before);
            }
            println!(
                "round {} {:>13}: {:>9.0} calls/s, {:>6.2} µs server CPU per call, other load {:.0}%",
                round + 1,
                setups[i].label,
                r.throughput(),
                r.cpu_per_call_us(),
                r.other_load * 100.0
            );
            cpu[i].push(r.cpu_per_call_us());
            rate[i].push(r.throughput());
        }
    }
    // What the servers say they exported and dropped (a full queue, a
    // failed export), over the whole run.
    let mut export_lines = Vec::new();
    let mut ended_all = 0;
    for i in 1..setups.len() {
        if let Some(admin) = targets[i].admin {
            let page = h2load::scrape_metrics(admin).await?;
            let exported = sum_of(&page, "tollgate_trace_spans_exported_total");
            let dropped = sum_of(&page, "tollgate_trace_spans_dropped_total");
            export_lines.push(format!(
                "{}: {exported} spans exported, {dropped} dropped ({:.0}%)",
                setups[i].label,
                dropped as f64 * 100.0 / (exported + dropped).max(1) as f64
            ));
            if i == 2 {
                ended_all = exported + dropped;
            }
        }
    }
    drop(started);

    let ratio = |i: usize| -> Option<f64> {
        let per_round: Vec<f64> = cpu[i].iter().zip(&cpu[0]).map(|(x, off)| x / off).collect();
        median(&per_round)
    };
    println!();
    println!("## Result");
    println!();
    println!("| traces | calls/s | server CPU per call | CPU vs off | target | verdict |");
    println!("|---|---|---|---|---|---|");
    for (i, setup) in setups.iter().enumerate() {
        let (target, judged) = match i {
            1 => (
                format!("≤ {TARGET_ONE_PERCENT}×"),
                ratio(1).map(|r| r <= TARGET_ONE_PERCENT),
            ),
            2 => (
                format!("≤ {TARGET_ALL}×"),
                ratio(2).map(|r| r <= TARGET_ALL),
            ),
            _ => ("".to_owned(), None),
        };
        println!(
            "| {} | {:.0} | {:.2} µs | {} | {} | {} |",
            setup.label,
            median(&rate[i]).unwrap_or_default(),
            median(&cpu[i]).unwrap_or_default(),
            ratio(i).map_or("1.00×".to_owned(), |r| format!("{r:.3}×")),
            target,
            judged.map_or("", verdict)
        );
    }
    println!();
    println!(
        "spans received while the 100% server ran (warm-ups included): {spans_during_all} for {calls_sampled_all} measured calls ({:.2} per call; a share below 1 was dropped and counted)",
        spans_during_all as f64 / calls_sampled_all.max(1) as f64
    );
    for line in export_lines {
        println!("{line}");
    }
    // Every call of the 100% server made its span (exported, or dropped
    // and counted), and spans really reached the receiver.
    if ended_all < calls_sampled_all || spans_during_all == 0 {
        bail!(
            "the 100% sampled server ended {ended_all} spans for {calls_sampled_all} calls, {spans_during_all} received: the figures are not valid"
        );
    }
    Ok(())
}

/// The sum of every series of metric `name` (with or without labels).
fn sum_of(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}
