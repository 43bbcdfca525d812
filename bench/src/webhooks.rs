//! The `webhooks` subcommand (issue 11): webhook deliveries from a real
//! Tollgate server (its own process, PostgreSQL, api and worker roles) to
//! a local HTTP receiver in this process.
//!
//! 1. **Throughput.** `--hooks` webhooks of one organization take its
//!    `organization.updated` events; `--events` such events are committed
//!    to the outbox in one statement (as if that many writes had just
//!    committed). The time until the receiver has every delivery (events ×
//!    hooks), each signed, gives deliveries per second (target
//!    [`TARGET_DELIVERY_RATE`]): the relay making the deliveries, the
//!    pumps sending them in order, one POST each, and recording them.
//!    Every (hook, event) must arrive exactly once.
//! 2. **Commit to delivery.** The bench renames the organization
//!    `--latency-events` times through the API at `--latency-rate` per
//!    second; each write's latency is from sending the call to the
//!    receiver getting the first webhook's delivery of it (an upper bound
//!    of commit to delivery). p50/p99 reported.
//!
//! Exits 0 on a miss (it measures), non-zero on errors.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use axum::{
    Router,
    extract::{Path, State},
    http::HeaderMap,
    routing::post,
};
use hdrhistogram::Histogram;
use tollgate_client::{
    Client,
    v1::{
        CreateOrganizationRequest, CreateWebhookRequest, Organization, UpdateOrganizationRequest,
        Webhook,
    },
};

use crate::{
    events::{
        Schema, cpu_of_all, cpu_since, now_micros, payload, pid_of, start_on_schema, wait_relayed,
    },
    report::{self, verdict},
};

/// Deliveries per second the server must send at least.
pub const TARGET_DELIVERY_RATE: f64 = 2_000.0;

/// `tollgate-bench webhooks`'s command line.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// The `tollgate` server binary [default: `tollgate` next to this binary].
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate_bin: Option<PathBuf>,

    /// PostgreSQL to run on; a schema of its own, dropped at the end.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,

    /// Webhooks taking every event.
    #[arg(long, default_value_t = 10)]
    hooks: usize,

    /// Events committed for the throughput part.
    #[arg(long, default_value_t = 3_000)]
    events: usize,

    /// Writes timed for the latency part.
    #[arg(long, default_value_t = 500)]
    latency_events: usize,

    /// Their pace, per second.
    #[arg(long, default_value_t = 50)]
    latency_rate: u32,

    /// The server's `--log-level`.
    #[arg(long, default_value = "warn")]
    tollgate_log_level: String,

    /// Seconds to wait for the server to listen.
    #[arg(long, default_value_t = 30.0)]
    startup_timeout: f64,
}

/// One request the receiver got: the hook (its path), the event
/// (`webhook-id`) and when.
type Arrival = (usize, u64, Instant);

#[derive(Clone, Default)]
struct Receiver {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl Receiver {
    fn len(&self) -> usize {
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn take(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.arrivals.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(hook): Path<usize>,
    headers: HeaderMap,
) -> &'static str {
    let at = Instant::now();
    let event = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let signed = headers.contains_key("webhook-signature");
    r.arrivals.lock().unwrap_or_else(|e| e.into_inner()).push((
        hook,
        if signed { event } else { 0 },
        at,
    ));
    ""
}

/// Runs both parts on one server.
pub async fn run(options: Options) -> Result<()> {
    ensure!(
        options.hooks > 0 && options.events > 0 && options.latency_rate > 0,
        "counts and rates must be above 0"
    );
    let (cpus, model) = report::machine();
    println!("# tollgate-bench webhooks");
    println!();
    println!("machine: {cpus} CPUs, {model}");
    println!(
        "PostgreSQL on this machine; one server process (api and worker roles), the receiver in this process"
    );
    println!();

    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = Router::new()
        .route("/hook/{n}", post(receive))
        .with_state(receiver.clone());
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let (started, admin_key, schema, _kek) = start_on_schema(
        options.tollgate_bin.clone(),
        &options.tollgate_log_level,
        &options.database_url,
        options.startup_timeout,
        vec!["--webhook-allow-loopback".to_owned()],
    )
    .await?;
    let result = async {
        let client = Client::builder(started.url.clone())
            .api_key(admin_key.clone())
            .timeout(Duration::from_secs(30))
            .connect_lazy()?;
        client
            .organizations()
            .create_organization(CreateOrganizationRequest {
                organization_id: "bench".into(),
                organization: Some(Organization {
                    display_name: "Bench".into(),
                    ..Default::default()
                }),
            })
            .await?;
        for i in 0..options.hooks {
            client
                .webhooks()
                .create_webhook(CreateWebhookRequest {
                    parent: "organizations/bench".into(),
                    webhook_id: format!("hook{i}"),
                    webhook: Some(Webhook {
                        display_name: format!("Hook {i}"),
                        url: format!("http://127.0.0.1:{port}/hook/{i}"),
                        event_types: vec!["organization.updated".into()],
                        ..Default::default()
                    }),
                })
                .await?;
        }
        wait_relayed(&schema, Duration::from_secs(30)).await?;
        throughput(&options, &schema, &receiver, started.process.pid()).await?;
        let since = now_micros();
        latency(&options, &client, &receiver).await?;
        stages(&schema, since).await
    }
    .await;
    drop(started);
    schema.drop_it().await;
    serving.abort();
    result
}

/// Part 1.
async fn throughput(
    options: &Options,
    schema: &Schema,
    receiver: &Receiver,
    pid: u32,
) -> Result<()> {
    receiver.take();
    let total = options.events * options.hooks;
    let sql = format!(
        "WITH appended AS (\
         INSERT INTO outbox (org_id, event_type, resource, payload, create_time, actor, request_id) \
         SELECT 'bench', 'organization.updated', 'organizations/bench', '{payload}', {now}, 'system', 'bench' \
         FROM generate_series(1, {n}) RETURNING id) \
         INSERT INTO outbox_pending (id) SELECT id FROM appended",
        payload = payload("bench", "organization.updated"),
        now = now_micros(),
        n = options.events,
    );
    let cpu_before = crate::child::cpu_time(pid)?;
    let pg_before = cpu_of_all("postgres");
    let bench_before = crate::child::cpu_time(std::process::id())?;
    schema.execute(&sql).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    while receiver.len() < total {
        ensure!(
            Instant::now() < deadline,
            "{} of {total} deliveries after 10 minutes",
            receiver.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let cpu = crate::child::cpu_time(pid)?.saturating_sub(cpu_before);
    let pg = cpu_since(&pg_before, &cpu_of_all("postgres"));
    let bench = crate::child::cpu_time(std::process::id())?.saturating_sub(bench_before);
    // Late duplicates would show up now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrivals = receiver.take();
    let unsigned = arrivals.iter().filter(|a| a.1 == 0).count();
    ensure!(unsigned == 0, "{unsigned} deliveries arrived unsigned");
    let mut pairs: Vec<(usize, u64)> = arrivals.iter().map(|a| (a.0, a.1)).collect();
    pairs.sort_unstable();
    let arrived = pairs.len();
    pairs.dedup();
    ensure!(
        pairs.len() == total && arrived == total,
        "{arrived} arrivals, {} distinct, {total} expected",
        pairs.len()
    );
    // Per hook, in event order.
    for hook in 0..options.hooks {
        let ids: Vec<u64> = arrivals
            .iter()
            .filter(|a| a.0 == hook)
            .map(|a| a.1)
            .collect();
        ensure!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "hook {hook} got events out of order"
        );
    }
    let rate = total as f64 / took.as_secs_f64();
    println!(
        "throughput: {} events × {} webhooks = {total} deliveries in {:.2} s: {rate:.0} deliveries/s \
         (target ≥ {TARGET_DELIVERY_RATE:.0}/s) {}; each once, in order per webhook",
        options.events,
        options.hooks,
        took.as_secs_f64(),
        verdict(rate >= TARGET_DELIVERY_RATE)
    );
    let per = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
    println!(
        "  CPU per delivery: tollgate {:.1} µs, postgres {:.1} µs, receiver (bench) {:.1} µs; nats-server {}",
        per(cpu),
        per(pg),
        per(bench),
        if pid_of("nats-server").is_some() {
            "running, unused"
        } else {
            "not running"
        }
    );
    Ok(())
}

/// Part 2.
async fn latency(options: &Options, client: &Client, receiver: &Receiver) -> Result<()> {
    receiver.take();
    let gap = Duration::from_secs_f64(1.0 / f64::from(options.latency_rate));
    let mut sent = Vec::with_capacity(options.latency_events);
    let mut next = Instant::now();
    for i in 0..options.latency_events {
        tokio::time::sleep_until(next.into()).await;
        next += gap;
        sent.push(Instant::now());
        client
            .organizations()
            .update_organization(UpdateOrganizationRequest {
                organization: Some(Organization {
                    name: "organizations/bench".into(),
                    display_name: format!("Bench {i}"),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into()],
                }),
            })
            .await?;
    }
    let want = options.latency_events * options.hooks;
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.len() < want {
        ensure!(
            Instant::now() < deadline,
            "{} of {want} deliveries",
            receiver.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The first webhook's deliveries arrive in event order, one per write.
    let first: Vec<Instant> = receiver
        .take()
        .into_iter()
        .filter(|a| a.0 == 0)
        .map(|a| a.2)
        .collect();
    ensure!(
        first.len() == sent.len(),
        "{} deliveries to hook 0 for {} writes",
        first.len(),
        sent.len()
    );
    let mut h = Histogram::<u64>::new(3).context("histogram")?;
    for (at, from) in first.iter().zip(&sent) {
        h.record(u64::try_from(at.duration_since(*from).as_micros()).unwrap_or(u64::MAX))?;
    }
    println!(
        "write to delivery: {} writes at {}/s, {} webhooks each: p50 {}, p99 {}, max {}",
        options.latency_events,
        options.latency_rate,
        options.hooks,
        report::latency(h.value_at_quantile(0.5) as f64),
        report::latency(h.value_at_quantile(0.99) as f64),
        report::latency(h.max() as f64),
    );
    Ok(())
}

/// Where part 2's time went, from the server's own records of the first
/// webhook's deliveries: commit (the event's time) to the relay making
/// the delivery, and that to the attempt's start.
async fn stages(schema: &Schema, since: i64) -> Result<()> {
    let quantile = |q: f64, expr: &str| {
        format!(
            "SELECT CAST(percentile_cont({q}) WITHIN GROUP (ORDER BY {expr}) AS BIGINT) AS n \
             FROM webhook_deliveries d JOIN outbox o ON o.id = d.event_id \
             WHERE d.webhook_id = 'hook0' AND o.create_time >= {since}"
        )
    };
    let made = "d.create_time - o.create_time";
    let attempted = "d.last_attempt_time - d.create_time";
    let us = |v: i64| report::latency(v as f64);
    println!(
        "  of which commit to delivery made (relay): p50 {}, p99 {}; made to attempt started (queue, pump): p50 {}, p99 {}",
        us(schema.count(&quantile(0.5, made)).await?),
        us(schema.count(&quantile(0.99, made)).await?),
        us(schema.count(&quantile(0.5, attempted)).await?),
        us(schema.count(&quantile(0.99, attempted)).await?),
    );
    Ok(())
}
