//! The `events` subcommand (issue 10): the event backbone on PostgreSQL
//! with the real NATS JetStream, each part on a Tollgate server of its own
//! (a fresh schema each, so one part's data never weighs on another's):
//!
//! 1. **Relay throughput.** `--relay-events` events, interleaved over
//!    `--relay-orgs` organizations, are committed to the outbox in one
//!    statement (as if that many writes had just committed); the time until
//!    the relay has published every one to JetStream, each acknowledged,
//!    and marked it relayed gives events per second (target
//!    [`TARGET_RELAY_RATE`]). The stream's message count must then equal
//!    the events inserted.
//! 2. **Commit-to-watcher latency.** A WatchEvents stream follows one
//!    organization while the bench renames it `--latency-events` times,
//!    paced at `--latency-rate` per second; each event's latency is its
//!    arrival at the watcher minus its `time` (set in the writing
//!    transaction, on this host's clock): commit, relay, NATS, the
//!    replica's subscription, its hub and the gRPC stream. p50/p99 (target
//!    p99 [`TARGET_WATCH_P99`]).
//! 3. **Idle watchers.** `--watchers` WatchEvents streams are opened over
//!    as many HTTP/2 connections as the server's stream limit needs; the
//!    server's resident memory growth divided by the watchers is the cost
//!    of one (target [`TARGET_WATCHER_BYTES`]). Then one write must reach
//!    every watcher: the time until the last one has it is reported.
//! 4. **Audit log depth.** `--list-events` events of one organization are
//!    inserted (relayed already, four types); ListEvents page 1 and page
//!    1,000 (default page size) are then called alternately, unfiltered
//!    and with a `type` filter, and the p50 of page 1,000 over page 1 is
//!    judged (target [`TARGET_PAGE_RATIO`]): keyset pages cost the same at
//!    any depth.
//!
//! Exits 0 on a miss (it measures), non-zero on errors: a server that does
//! not start, an event that never arrives, a count that does not match.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use diesel::{Connection as _, PgConnection, RunQueryDsl, connection::SimpleConnection};
use hdrhistogram::Histogram;
use prost::Message as _;
use tollgate_client::{
    Client,
    v1::{
        CreateOrganizationRequest, Event, ListEventsRequest, Organization,
        UpdateOrganizationRequest, WatchEventsRequest,
    },
};

use crate::{
    child::Memory,
    h2load::scrape_metrics,
    report::{self, verdict},
    servers::{self, Launch, Started, TollgateCommand},
};

/// Events per second the relay must publish (with acks) at least.
pub const TARGET_RELAY_RATE: f64 = 20_000.0;
/// Commit-to-watcher p99 must stay under this.
pub const TARGET_WATCH_P99: Duration = Duration::from_millis(50);
/// Resident memory per idle watcher must stay under this.
pub const TARGET_WATCHER_BYTES: f64 = 16.0 * 1024.0;
/// ListEvents page 1,000 may take at most this multiple of page 1.
pub const TARGET_PAGE_RATIO: f64 = 1.5;

/// Streams per HTTP/2 connection the watchers use: under the server's
/// default `--max-concurrent-streams` (100).
const STREAMS_PER_CONNECTION: usize = 90;
/// Default ListEvents page size, so page 1,000 starts at event 49,951.
const PAGE_SIZE: usize = 50;

/// `tollgate-bench events`'s command line.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// The `tollgate` server binary [default: `tollgate` next to this binary].
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate_bin: Option<PathBuf>,

    /// PostgreSQL to run on; each part gets a schema of its own, dropped
    /// at the end.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,

    /// NATS with JetStream; each part gets a stream of its own, deleted at
    /// the end.
    #[arg(
        long,
        env = "TOLLGATE_BENCH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats_url: String,

    /// Events the relay publishes in part 1.
    #[arg(long, default_value_t = 200_000)]
    relay_events: usize,

    /// Organizations those events are spread over.
    #[arg(long, default_value_t = 100)]
    relay_orgs: usize,

    /// Writes whose events the watcher times in part 2.
    #[arg(long, default_value_t = 2_000)]
    latency_events: usize,

    /// Writes per second in part 2.
    #[arg(long, default_value_t = 200)]
    latency_rate: u32,

    /// Idle watchers in part 3.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,

    /// Events of the organization whose audit log part 4 pages through.
    #[arg(long, default_value_t = 1_000_000)]
    list_events: usize,

    /// Calls per page and filter in part 4.
    #[arg(long, default_value_t = 500)]
    list_calls: usize,

    /// Smoke run: a tenth of every count.
    #[arg(long)]
    quick: bool,

    /// `--log-level` for `tollgate serve`.
    #[arg(long, default_value = "warn")]
    tollgate_log_level: String,

    /// Seconds a server may take to become ready.
    #[arg(long, default_value_t = 30.0)]
    startup_timeout: f64,
}

/// A Tollgate server on a schema of its own and a NATS stream of its own.
struct Server {
    started: Started,
    admin_key: String,
    schema: Schema,
    stream: String,
    /// Holds the key-encryption key file PostgreSQL deployments need.
    _kek: tempfile::TempDir,
}

/// A PostgreSQL schema the bench created, and the URL confined to it.
pub(crate) struct Schema {
    base_url: String,
    name: String,
    /// The base URL confined to the schema.
    pub(crate) url: String,
}

impl Schema {
    pub(crate) async fn create(base_url: &str) -> Result<Self> {
        let name = format!("tg_bench_{:016x}", random_u64());
        let schema = Schema {
            base_url: base_url.to_owned(),
            url: format!(
                "{base_url}{}options=-csearch_path%3D{name}&application_name={name}",
                if base_url.contains('?') { '&' } else { '?' }
            ),
            name,
        };
        schema
            .execute_on_base(&format!("CREATE SCHEMA {}", schema.name))
            .await?;
        Ok(schema)
    }

    async fn execute_on_base(&self, sql: &str) -> Result<()> {
        execute(&self.base_url, sql).await
    }

    /// Runs `sql` (several statements allowed) inside the schema.
    pub(crate) async fn execute(&self, sql: &str) -> Result<()> {
        execute(&self.url, sql).await
    }

    /// The one `bigint` a query inside the schema returns (as column `n`).
    pub(crate) async fn count(&self, sql: &str) -> Result<i64> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let (url, sql) = (self.url.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || -> Result<i64> {
            let mut conn = PgConnection::establish(&url).context("connecting to PostgreSQL")?;
            let rows: Vec<Row> = diesel::sql_query(&sql).load(&mut conn)?;
            rows.first().map(|r| r.n).context("no row")
        })
        .await?
    }

    pub(crate) async fn drop_it(&self) {
        let _ = self
            .execute_on_base(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .await;
    }
}

async fn execute(url: &str, sql: &str) -> Result<()> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut conn = PgConnection::establish(&url).context("connecting to PostgreSQL")?;
        conn.batch_execute(&sql)
            .with_context(|| format!("running {}", sql.chars().take(120).collect::<String>()))?;
        Ok(())
    })
    .await?
}

fn random_u64() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A Tollgate server process on a fresh schema of `database_url`, with a
/// key-encryption key file of its own: the process, the bootstrap admin
/// key, the schema and the directory holding the key file.
pub(crate) async fn start_on_schema(
    bin: Option<PathBuf>,
    log_level: &str,
    database_url: &str,
    startup_timeout: f64,
    extra: Vec<String>,
) -> Result<(Started, String, Schema, tempfile::TempDir)> {
    let kek = tempfile::tempdir()?;
    let kek_file = kek.path().join("kek");
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    std::fs::write(
        &kek_file,
        base64::engine::general_purpose::STANDARD.encode(bytes),
    )?;
    let schema = Schema::create(database_url).await?;
    let mut extra_args = vec![
        "--database-url".to_owned(),
        schema.url.clone(),
        "--key-encryption-key-file".to_owned(),
        kek_file.display().to_string(),
    ];
    extra_args.extend(extra);
    let cmd = TollgateCommand {
        bin: crate::tollgate_bin(bin)?,
        launch: Launch {
            wrapper: Vec::new(),
            stop_grace: Duration::from_secs(5),
        },
        log_level: log_level.to_owned(),
        extra_args,
    };
    let timeout = crate::seconds("--startup-timeout", startup_timeout)?;
    let started = match servers::start_tollgate(&cmd, timeout).await {
        Ok(s) => s,
        Err(e) => {
            schema.drop_it().await;
            return Err(e);
        }
    };
    let admin_key = started.bootstrap_key(timeout).await?;
    Ok((started, admin_key, schema, kek))
}

impl Server {
    async fn start(options: &Options, part: &str, extra: &[&str]) -> Result<Server> {
        let stream = format!(
            "TG_BENCH_{}_{:08x}",
            part.to_uppercase(),
            random_u64() as u32
        );
        let prefix = format!("tgbench.{}", stream.to_lowercase());
        let mut extra_args = vec![
            "--nats-url".to_owned(),
            options.nats_url.clone(),
            "--nats-stream".to_owned(),
            stream.clone(),
            "--nats-subject-prefix".to_owned(),
            prefix,
        ];
        extra_args.extend(extra.iter().map(|s| (*s).to_owned()));
        let (started, admin_key, schema, kek) = start_on_schema(
            options.tollgate_bin.clone(),
            &options.tollgate_log_level,
            &options.database_url,
            options.startup_timeout,
            extra_args,
        )
        .await?;
        Ok(Server {
            started,
            admin_key,
            schema,
            stream,
            _kek: kek,
        })
    }

    fn client(&self) -> Result<Client> {
        Ok(Client::builder(self.started.url.clone())
            .api_key(self.admin_key.clone())
            .timeout(Duration::from_secs(30))
            .connect_lazy()?)
    }

    fn pid(&self) -> u32 {
        self.started.process.pid()
    }

    async fn stop(self, nats: &async_nats::jetstream::Context) {
        let Server {
            started,
            schema,
            stream,
            ..
        } = self;
        drop(started);
        let _ = nats.delete_stream(&stream).await;
        schema.drop_it().await;
    }
}

/// Runs the four parts.
pub async fn run(mut options: Options) -> Result<()> {
    if options.quick {
        options.relay_events /= 10;
        options.latency_events /= 10;
        options.watchers /= 10;
        options.list_events /= 10;
        options.list_calls /= 10;
    }
    ensure!(
        options.relay_events > 0 && options.relay_orgs > 0 && options.latency_rate > 0,
        "counts and rates must be above 0"
    );
    ensure!(
        options.list_events >= 1000 * PAGE_SIZE,
        "--list-events must hold 1,000 pages of {PAGE_SIZE}"
    );
    let nats = async_nats::connect(&options.nats_url)
        .await
        .with_context(|| format!("connecting to NATS at {}", options.nats_url))?;
    let js = async_nats::jetstream::new(nats);
    let (cpus, model) = report::machine();
    println!("# tollgate-bench events");
    println!();
    println!("machine: {cpus} CPUs, {model}");
    println!("PostgreSQL and NATS JetStream on this machine; one server (and schema) per part");
    println!();

    let relayed = relay_throughput(&options, &js).await?;
    let rate = relayed.events as f64 / relayed.took.as_secs_f64();
    println!(
        "relay: {} events over {} organizations published and acknowledged in {:.2} s: \
         {rate:.0} events/s (target ≥ {TARGET_RELAY_RATE:.0}/s) {}",
        relayed.events,
        options.relay_orgs,
        relayed.took.as_secs_f64(),
        verdict(rate >= TARGET_RELAY_RATE)
    );
    let per_event = |cpu: Option<Duration>| {
        cpu.map_or_else(
            || "?".to_owned(),
            |c| format!("{:.1} µs", c.as_secs_f64() * 1e6 / relayed.events as f64),
        )
    };
    println!(
        "  CPU per event: tollgate {}, nats-server {}, postgres {}",
        per_event(relayed.cpu[0]),
        per_event(relayed.cpu[1]),
        per_event(relayed.cpu[2])
    );

    let (p50, p99, max) = watch_latency(&options, &js).await?;
    println!(
        "commit to watcher: {} events at {}/s: p50 {}, p99 {}, max {} (target p99 < {} ms) {}",
        options.latency_events,
        options.latency_rate,
        report::latency(p50),
        report::latency(p99),
        report::latency(max),
        TARGET_WATCH_P99.as_millis(),
        verdict(Duration::from_secs_f64(p99 / 1e6) < TARGET_WATCH_P99)
    );

    let idle = idle_watchers(&options, &js).await?;
    println!(
        "idle watchers: {} open over {} connections: server RSS {:.1} MiB → {:.1} MiB, \
         {:.1} KiB per watcher (target < {:.0} KiB) {}; one write reached all of them in {:.1} ms",
        options.watchers,
        idle.connections,
        idle.before_kib as f64 / 1024.0,
        idle.after_kib as f64 / 1024.0,
        idle.per_watcher_bytes / 1024.0,
        TARGET_WATCHER_BYTES / 1024.0,
        verdict(idle.per_watcher_bytes < TARGET_WATCHER_BYTES),
        idle.fan_out.as_secs_f64() * 1e3
    );

    for page in audit_depth(&options, &js).await? {
        println!(
            "ListEvents over {} events{}: page 1 p50 {}, page 1,000 p50 {}: {:.2}× \
             (target ≤ {TARGET_PAGE_RATIO}×) {}",
            options.list_events,
            page.label,
            report::latency(page.first_us),
            report::latency(page.deep_us),
            page.deep_us / page.first_us,
            verdict(page.deep_us / page.first_us <= TARGET_PAGE_RATIO)
        );
    }
    Ok(())
}

/// Part 1's figures.
struct Relayed {
    /// `--relay-events`, rounded up to a multiple of the organizations.
    events: usize,
    /// From their commit until none is unrelayed.
    took: Duration,
    /// CPU the Tollgate server, nats-server and PostgreSQL used meanwhile.
    cpu: [Option<Duration>; 3],
}

/// Part 1: relay throughput.
async fn relay_throughput(
    options: &Options,
    js: &async_nats::jetstream::Context,
) -> Result<Relayed> {
    let server = Server::start(options, "relay", &[]).await?;
    let result = async {
        // Idle first: the bootstrap's own events relayed.
        wait_relayed(&server.schema, Duration::from_secs(30)).await?;
        let before = stream_messages(js, &server.stream).await?;
        let per_org = options.relay_events.div_ceil(options.relay_orgs);
        let total = per_org * options.relay_orgs;
        let values = (0..options.relay_orgs)
            .map(|o| {
                let org = format!("bench{o}");
                let payload = payload(&org, "organization.updated");
                format!("('{org}', '{payload}', {o})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        // Interleaved by organization, as concurrent writers leave them,
        // each pending for the relay, in one transaction.
        let sql = format!(
            "WITH appended AS (\
             INSERT INTO outbox (org_id, event_type, resource, payload, create_time, actor, request_id) \
             SELECT p.org, 'organization.updated', 'organizations/' || p.org, p.payload, {now}, 'system', 'bench' \
             FROM generate_series(1, {per_org}) AS g CROSS JOIN (VALUES {values}) AS p(org, payload, n) \
             ORDER BY g, p.n RETURNING id) \
             INSERT INTO outbox_pending (id) SELECT id FROM appended",
            now = now_micros()
        );
        server.schema.execute(&sql).await?;
        let started = Instant::now();
        let cpu_before = cpu_of([Some(server.pid()), pid_of("nats-server"), None]);
        let pg_before = cpu_of_all("postgres");
        wait_relayed(&server.schema, Duration::from_secs(600)).await?;
        let took = started.elapsed();
        let cpu_after = cpu_of([Some(server.pid()), pid_of("nats-server"), None]);
        let pg_after = cpu_of_all("postgres");
        let mut cpu = [None; 3];
        for i in 0..2 {
            if let (Some(a), Some(b)) = (cpu_before[i], cpu_after[i]) {
                cpu[i] = Some(b.saturating_sub(a));
            }
        }
        cpu[2] = Some(cpu_since(&pg_before, &pg_after));
        let published = stream_messages(js, &server.stream).await? - before;
        ensure!(
            published == total as u64,
            "JetStream holds {published} new messages, {total} events were relayed"
        );
        Ok(Relayed {
            events: total,
            took,
            cpu,
        })
    }
    .await;
    server.stop(js).await;
    result
}

/// The CPU time of each process of `pids` so far.
fn cpu_of(pids: [Option<u32>; 3]) -> [Option<Duration>; 3] {
    pids.map(|pid| pid.and_then(|p| crate::child::cpu_time(p).ok()))
}

/// The pid of the first process whose command is `name`.
pub(crate) fn pid_of(name: &str) -> Option<u32> {
    pids_of(name, false).into_iter().next()
}

/// Every process whose command is `name` (or, with `prefix`, starts with
/// it: PostgreSQL's backends rename themselves).
fn pids_of(name: &str, prefix: bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| {
                let c = c.trim();
                c == name || (prefix && c.starts_with(name))
            })
        })
        .collect()
}

/// The CPU time each process whose command starts with `name` used so
/// far, by pid (PostgreSQL's backends come and go).
pub(crate) fn cpu_of_all(name: &str) -> std::collections::HashMap<u32, Duration> {
    pids_of(name, true)
        .into_iter()
        .filter_map(|p| Some((p, crate::child::cpu_time(p).ok()?)))
        .collect()
}

/// The CPU the processes of `after` used since `before`: a process gone
/// meanwhile (the bench's own connection) counts for nothing, a new one
/// for all it used.
pub(crate) fn cpu_since(
    before: &std::collections::HashMap<u32, Duration>,
    after: &std::collections::HashMap<u32, Duration>,
) -> Duration {
    after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or_default()))
        .sum()
}

/// An `Event` of `org` as the outbox stores it (base64 of the protobuf).
pub(crate) fn payload(org: &str, kind: &str) -> String {
    let event = Event {
        r#type: kind.into(),
        organization: format!("organizations/{org}"),
        actor: "system".into(),
        request_id: "bench".into(),
        resource: format!("organizations/{org}"),
        ..Event::default()
    };
    base64::engine::general_purpose::STANDARD.encode(event.encode_to_vec())
}

pub(crate) async fn wait_relayed(schema: &Schema, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let left = schema
            .count("SELECT count(*) AS n FROM outbox_pending")
            .await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} events still unrelayed after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stream_messages(js: &async_nats::jetstream::Context, name: &str) -> Result<u64> {
    let mut stream = js
        .get_stream(name)
        .await
        .with_context(|| format!("JetStream stream {name}"))?;
    Ok(stream.info().await?.state.messages)
}

/// Part 2: p50, p99 and max commit-to-watcher latency, in microseconds.
async fn watch_latency(
    options: &Options,
    js: &async_nats::jetstream::Context,
) -> Result<(f64, f64, f64)> {
    let server = Server::start(options, "latency", &[]).await?;
    let result = async {
        let client = server.client()?;
        create_org(&client, "followed").await?;
        let mut stream = client
            .events()
            .watch_events(WatchEventsRequest {
                parent: "organizations/followed".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let n = options.latency_events;
        let watcher = tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3)?;
            for _ in 0..n {
                let response = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .context("an event did not reach the watcher within 10 s")??
                    .context("the watch ended")?;
                let arrived = now_micros();
                let time = response
                    .event
                    .and_then(|e| e.time)
                    .context("an event without its time")?;
                let committed = time.seconds * 1_000_000 + i64::from(time.nanos / 1000);
                histogram.record(u64::try_from(arrived - committed).unwrap_or(0))?;
            }
            anyhow::Ok(histogram)
        });
        let gap = Duration::from_secs(1) / options.latency_rate;
        let mut next = tokio::time::Instant::now();
        for i in 0..n {
            tokio::time::sleep_until(next).await;
            next += gap;
            rename(&client, "followed", &format!("Renamed {i}")).await?;
        }
        let histogram = watcher.await??;
        Ok((
            histogram.value_at_quantile(0.5) as f64,
            histogram.value_at_quantile(0.99) as f64,
            histogram.max() as f64,
        ))
    }
    .await;
    server.stop(js).await;
    result
}

async fn create_org(client: &Client, id: &str) -> Result<()> {
    client
        .organizations()
        .create_organization(CreateOrganizationRequest {
            organization_id: id.into(),
            organization: Some(Organization {
                display_name: id.into(),
                ..Default::default()
            }),
        })
        .await?;
    Ok(())
}

async fn rename(client: &Client, id: &str, display: &str) -> Result<()> {
    client
        .organizations()
        .update_organization(UpdateOrganizationRequest {
            organization: Some(Organization {
                name: format!("organizations/{id}"),
                display_name: display.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
        })
        .await?;
    Ok(())
}

/// Part 3's figures.
struct Idle {
    connections: usize,
    before_kib: u64,
    after_kib: u64,
    per_watcher_bytes: f64,
    fan_out: Duration,
}

/// Part 3: the server's memory growth per idle watcher.
async fn idle_watchers(options: &Options, js: &async_nats::jetstream::Context) -> Result<Idle> {
    // Room for every watcher and the calls beside them.
    let in_flight = (options.watchers + 1000).to_string();
    let connections_limit = (options.watchers / STREAMS_PER_CONNECTION + 100).to_string();
    let server = Server::start(
        options,
        "idle",
        &[
            "--max-requests-in-flight",
            &in_flight,
            "--max-connections",
            &connections_limit,
        ],
    )
    .await?;
    let result = async {
        let admin = server.client()?;
        create_org(&admin, "idle").await?;
        // A first watch, opened and closed, so what any watch allocates once
        // (the channel's buffer, lazily built statics) is in the baseline.
        drop(open_watch(&admin).await?);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = Memory::of(server.pid())?.rss_kib;

        let connections = options.watchers.div_ceil(STREAMS_PER_CONNECTION);
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let client = Client::builder(server.started.url.clone())
                .api_key(server.admin_key.clone())
                .timeout(Duration::from_secs(60))
                .connect()
                .await?;
            clients.push(client);
        }
        let received = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let opened = Arc::new(tokio::sync::Semaphore::new(200));
        for i in 0..options.watchers {
            let client = clients[i / STREAMS_PER_CONNECTION].clone();
            let (received, opened) = (received.clone(), opened.clone());
            tasks.spawn(async move {
                let permit = opened.acquire_owned().await?;
                let mut stream = open_watch(&client).await?;
                drop(permit);
                // Idle until the one write, then count it.
                if stream.message().await?.is_some() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
                // Held open until the bench is done.
                let _ = stream.message().await;
                anyhow::Ok(())
            });
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let open = gauge(&server, "tollgate_watchers").await?;
            if open >= options.watchers as f64 {
                break;
            }
            if let Some(Ok(Err(e))) = tasks.try_join_next() {
                return Err(e.context("opening a watcher"));
            }
            ensure!(
                Instant::now() < deadline,
                "only {open} of {} watchers open after 5 minutes",
                options.watchers
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = Memory::of(server.pid())?.rss_kib;

        let wrote = Instant::now();
        rename(&admin, "idle", "Seen by every watcher").await?;
        while received.load(Ordering::Relaxed) < options.watchers {
            ensure!(
                wrote.elapsed() < Duration::from_secs(60),
                "only {} of {} watchers got the write within a minute",
                received.load(Ordering::Relaxed),
                options.watchers
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let fan_out = wrote.elapsed();
        tasks.abort_all();
        Ok(Idle {
            connections,
            before_kib: before,
            after_kib: after,
            per_watcher_bytes: after.saturating_sub(before) as f64 * 1024.0
                / options.watchers as f64,
            fan_out,
        })
    }
    .await;
    server.stop(js).await;
    result
}

async fn open_watch(
    client: &Client,
) -> Result<tonic::Streaming<tollgate_client::v1::WatchEventsResponse>> {
    Ok(client
        .events()
        .watch_events(WatchEventsRequest {
            parent: "organizations/idle".into(),
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// The value of an unlabelled gauge on the server's `/metrics`.
async fn gauge(server: &Server, name: &str) -> Result<f64> {
    let admin = server.started.admin.context("no admin listener")?;
    let text = scrape_metrics(admin).await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// One of part 4's comparisons.
struct Page {
    label: &'static str,
    first_us: f64,
    deep_us: f64,
}

/// Part 4: ListEvents page 1 against page 1,000.
async fn audit_depth(options: &Options, js: &async_nats::jetstream::Context) -> Result<Vec<Page>> {
    let server = Server::start(options, "audit", &[]).await?;
    let result = async {
        let client = server.client()?;
        create_org(&client, "audited").await?;
        let types = ["user.created", "user.updated", "apiKey.created", "apiKey.revoked"];
        let values = types
            .iter()
            .enumerate()
            .map(|(i, t)| format!("('{t}', '{}', {i})", payload("audited", t)))
            .collect::<Vec<_>>()
            .join(", ");
        let now = now_micros();
        let per_type = options.list_events / types.len();
        // Relayed already (not pending): the relay has nothing to do here.
        server
            .schema
            .execute(&format!(
                "INSERT INTO outbox (org_id, event_type, resource, payload, create_time, actor, request_id) \
                 SELECT 'audited', p.t, 'organizations/audited/users/u' || g, p.payload, {now} + g, 'system', 'bench' \
                 FROM generate_series(1, {per_type}) AS g CROSS JOIN (VALUES {values}) AS p(t, payload, n) \
                 ORDER BY g, p.n; ANALYZE outbox"
            ))
            .await?;
        let mut pages = Vec::new();
        for (label, filter) in [("", ""), (", filter type = \"user.updated\"", "type = \"user.updated\"")] {
            let request = |token: String| ListEventsRequest {
                parent: "organizations/audited".into(),
                page_token: token,
                filter: filter.into(),
                ..Default::default()
            };
            // The token of page 1,000, by walking there.
            let mut token = String::new();
            for _ in 1..1000 {
                let page = client.events().list_events(request(token)).await?.into_inner();
                ensure!(page.events.len() == PAGE_SIZE, "a short page before page 1,000");
                token = page.next_page_token;
            }
            let mut first = Histogram::<u64>::new(3)?;
            let mut deep = Histogram::<u64>::new(3)?;
            for i in 0..options.list_calls * 2 {
                // Alternating, so both see the same machine.
                let (histogram, page_token) = if i % 2 == 0 {
                    (&mut first, String::new())
                } else {
                    (&mut deep, token.clone())
                };
                let started = Instant::now();
                let page = client.events().list_events(request(page_token)).await?.into_inner();
                histogram.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                ensure!(page.events.len() == PAGE_SIZE, "a short page");
            }
            pages.push(Page {
                label,
                first_us: first.value_at_quantile(0.5) as f64,
                deep_us: deep.value_at_quantile(0.5) as f64,
            });
        }
        Ok(pages)
    }
    .await;
    server.stop(js).await;
    result
}
