//! The load generator: closed-loop unary calls over real HTTP/2
//! connections, the same code path for the baseline and for Tollgate.
//!
//! A round opens `connections` tonic channels, then runs `concurrency`
//! tasks spread evenly over them; each task sends one call, waits for the
//! answer and sends the next. Calls that start during the warm-up are not
//! counted. After it, every call that completes inside the measured window
//! is counted and its latency recorded (nanoseconds, 3 significant digits)
//! in a per-task hdrhistogram, merged at the end of the round.
//!
//! Both targets receive the same request (`name: "organizations/root"`) and
//! the same `authorization` header, so the client does identical work for
//! both; the echo server simply ignores the header.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tollgate::tollgate::v1::{
    GetOrganizationRequest, Organization, organization_service_client::OrganizationServiceClient,
};
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::child::{cpu_time, machine_cpu_time};
use crate::echo::pb::{EchoRequest, EchoResponse, echo_service_client::EchoServiceClient};

/// The resource every call asks for.
pub const ORG_NAME: &str = "organizations/root";

/// Largest latency the histograms can hold: a minute, in nanoseconds.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Which server a round calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tollgate.bench.echo.v1.EchoService/Echo` on the baseline server.
    Echo,
    /// `tollgate.v1.OrganizationService/GetOrganization` on Tollgate.
    Tollgate,
}

/// A server to load: where it is and the credential to send.
#[derive(Clone)]
pub struct Target {
    /// Which RPC to call.
    pub kind: Kind,
    /// What the report calls it, e.g. `tollgate (info)`.
    pub label: String,
    /// `http://host:port`.
    pub url: String,
    /// `Bearer tg_…`, parsed once so no call pays for it.
    pub authorization: MetadataValue<Ascii>,
    /// The bare key, for h2load's `x-api-key` header.
    pub api_key: String,
    /// The server's process, whose CPU time is read around each round.
    pub pid: u32,
    /// Tollgate's admin listener, whose `/metrics` counts OK answers.
    pub admin: Option<std::net::SocketAddr>,
}

// === impl Target ===

impl Target {
    /// The label, for messages.
    pub fn name(&self) -> &str {
        &self.label
    }
}

/// How hard and how long to push in one round.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// HTTP/2 connections per round.
    pub connections: usize,
    /// Calls in flight at any time, over all connections.
    pub concurrency: usize,
    /// Calls before the measured window, to fill caches and pools.
    pub warmup: Duration,
    /// Length of the measured window.
    pub duration: Duration,
    /// When set, the measured window ends after this many calls instead of
    /// after `duration` (for profiling runs with a fixed amount of work).
    pub max_requests: Option<u64>,
}

/// What one round measured on one target.
pub struct RoundResult {
    /// Calls that completed with OK inside the measured window.
    pub ok: u64,
    /// The measured window.
    pub elapsed: Duration,
    /// Latency of each OK call, in nanoseconds.
    pub latencies: Histogram<u64>,
    /// Calls that did not return OK, by code (warm-up included).
    pub errors: HashMap<Code, u64>,
    /// The first failed call's status, to show what went wrong.
    pub first_error: Option<Status>,
    /// CPU time the server used during the measured window.
    pub server_cpu: Duration,
    /// Share of the machine's CPU capacity that processes other than the
    /// server and the bench used during the window: how disturbed the
    /// round was.
    pub other_load: f64,
}

// === impl RoundResult ===

impl RoundResult {
    /// Completed OK calls per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Latency at quantile `q`, in microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        self.latencies.value_at_quantile(q) as f64 / 1_000.0
    }

    /// Server CPU time per OK call, in microseconds: the cost of a call
    /// independent of how much CPU the load generator left the server.
    pub fn cpu_per_call_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.ok.max(1) as f64
    }

    /// All failed calls.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A typed client for one target over one channel.
#[derive(Clone)]
enum Caller {
    Echo(EchoServiceClient<Channel>),
    Tollgate(OrganizationServiceClient<Channel>),
}

// === impl Caller ===

impl Caller {
    fn new(kind: Kind, channel: Channel) -> Self {
        match kind {
            Kind::Echo => Caller::Echo(EchoServiceClient::new(channel)),
            Kind::Tollgate => Caller::Tollgate(OrganizationServiceClient::new(channel)),
        }
    }

    /// Sends one call and drops the answer.
    async fn call(&mut self, authorization: &MetadataValue<Ascii>) -> Result<(), Status> {
        match self {
            Caller::Echo(client) => {
                let request = with_auth(
                    EchoRequest {
                        name: ORG_NAME.to_owned(),
                    },
                    authorization,
                );
                client.echo(request).await.map(drop)
            }
            Caller::Tollgate(client) => {
                let request = with_auth(
                    GetOrganizationRequest {
                        name: ORG_NAME.to_owned(),
                    },
                    authorization,
                );
                client.get_organization(request).await.map(drop)
            }
        }
    }
}

fn with_auth<T>(message: T, authorization: &MetadataValue<Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", authorization.clone());
    request
}

/// Opens one HTTP/2 connection to `url`.
pub async fn connect(url: &str) -> Result<Channel> {
    Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("bad url {url}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// One GetOrganization call, to check the credential before loading and to
/// size the response.
pub async fn get_organization(target: &Target) -> Result<Organization> {
    let mut client = OrganizationServiceClient::new(connect(&target.url).await?);
    let request = with_auth(
        GetOrganizationRequest {
            name: ORG_NAME.to_owned(),
        },
        &target.authorization,
    );
    Ok(client
        .get_organization(request)
        .await
        .context("GetOrganization with the bootstrap key failed")?
        .into_inner())
}

/// One Echo call, to size the baseline's response.
pub async fn echo_once(target: &Target) -> Result<EchoResponse> {
    let mut client = EchoServiceClient::new(connect(&target.url).await?);
    let request = with_auth(
        EchoRequest {
            name: ORG_NAME.to_owned(),
        },
        &target.authorization,
    );
    Ok(client
        .echo(request)
        .await
        .context("Echo failed")?
        .into_inner())
}

/// Runs one round against `target`.
pub async fn run_round(target: &Target, settings: &LoadSettings) -> Result<RoundResult> {
    if settings.connections == 0 || settings.concurrency == 0 {
        bail!("--connections and --concurrency must be at least 1");
    }
    let mut channels = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections {
        channels.push(connect(&target.url).await?);
    }

    let start = Instant::now();
    let measure_from = start + settings.warmup;
    // With a request budget the window ends when the budget is spent; the
    // hour is only a backstop.
    let end = match settings.max_requests {
        Some(_) => measure_from + Duration::from_secs(3600),
        None => measure_from + settings.duration,
    };
    let window = Window {
        measure_from,
        end,
        budget: settings
            .max_requests
            .map(|max| (Arc::new(AtomicU64::new(0)), max)),
    };

    let mut tasks = JoinSet::new();
    for i in 0..settings.concurrency {
        let caller = Caller::new(target.kind, channels[i % channels.len()].clone());
        tasks.spawn(worker(caller, target.authorization.clone(), window.clone()));
    }

    // Server CPU over the measured window; in budget mode the window ends
    // when the last task does, so the second reading waits for them.
    tokio::time::sleep_until(measure_from.into()).await;
    let before = CpuSample::take(target.pid)?;
    if settings.max_requests.is_none() {
        tokio::time::sleep_until(end.into()).await;
    }
    let mut after = CpuSample::take(target.pid)?;

    let mut result = RoundResult {
        ok: 0,
        elapsed: settings.duration,
        latencies: new_histogram()?,
        errors: HashMap::new(),
        first_error: None,
        server_cpu: Duration::ZERO,
        other_load: 0.0,
    };
    let mut last_done = measure_from;
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.context("a load task panicked")??;
        result.ok += tally.ok;
        result
            .latencies
            .add(&tally.latencies)
            .context("cannot merge histograms")?;
        for (code, n) in tally.errors {
            *result.errors.entry(code).or_default() += n;
        }
        if result.first_error.is_none() {
            result.first_error = tally.first_error;
        }
        last_done = last_done.max(tally.last_done);
    }
    if settings.max_requests.is_some() {
        result.elapsed = last_done.saturating_duration_since(measure_from);
        after = CpuSample::take(target.pid)?;
    }
    result.server_cpu = after.server.saturating_sub(before.server);
    let busy = after.machine_busy.saturating_sub(before.machine_busy);
    let ours = result.server_cpu + after.bench.saturating_sub(before.bench);
    let capacity = after.machine_total.saturating_sub(before.machine_total);
    result.other_load =
        busy.saturating_sub(ours).as_secs_f64() / capacity.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(result)
}

/// CPU counters read at the edges of the measured window.
struct CpuSample {
    server: Duration,
    bench: Duration,
    machine_busy: Duration,
    machine_total: Duration,
}

impl CpuSample {
    fn take(server_pid: u32) -> Result<Self> {
        let (machine_busy, machine_total) = machine_cpu_time()?;
        Ok(Self {
            server: cpu_time(server_pid)?,
            bench: cpu_time(std::process::id())?,
            machine_busy,
            machine_total,
        })
    }
}

/// When a worker counts and when it stops.
#[derive(Clone)]
struct Window {
    measure_from: Instant,
    end: Instant,
    /// Calls started in the measured window so far, and the most allowed.
    budget: Option<(Arc<AtomicU64>, u64)>,
}

/// One worker's share of a round.
struct Tally {
    ok: u64,
    latencies: Histogram<u64>,
    errors: HashMap<Code, u64>,
    first_error: Option<Status>,
    last_done: Instant,
}

async fn worker(
    mut caller: Caller,
    authorization: MetadataValue<Ascii>,
    window: Window,
) -> Result<Tally> {
    let mut tally = Tally {
        ok: 0,
        latencies: new_histogram()?,
        errors: HashMap::new(),
        first_error: None,
        last_done: window.measure_from,
    };
    loop {
        let sent = Instant::now();
        if sent >= window.end {
            break;
        }
        let measured = sent >= window.measure_from;
        if measured
            && let Some((started, max)) = &window.budget
            && started.fetch_add(1, Ordering::Relaxed) >= *max
        {
            break;
        }
        let outcome = caller.call(&authorization).await;
        let done = Instant::now();
        match outcome {
            Ok(()) => {
                if measured && done <= window.end {
                    tally.ok += 1;
                    let ns =
                        u64::try_from(done.duration_since(sent).as_nanos()).unwrap_or(u64::MAX);
                    tally.latencies.saturating_record(ns.max(1));
                    tally.last_done = done;
                }
            }
            Err(status) => {
                *tally.errors.entry(status.code()).or_default() += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(status);
                }
            }
        }
    }
    Ok(tally)
}

fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).context("cannot create a histogram")
}
