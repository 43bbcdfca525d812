//! The `ratelimit-server` subcommand (issue 9): what rate limiting costs a
//! running server, under h2load.
//!
//! **The layer's cost.** Two Tollgate servers run side by side with the
//! same data: (a) with `--rate-limiting false`, whose layer passes every
//! call unlimited and only meters it for usage (as every server does), and
//! (b) with the layer on, where an organization policy selects the
//! measured call, so every call is also planned, decided (GCRA, a limit
//! nobody reaches) and answered with the `RateLimit` headers. Both serve GetOrganization with an API key, loaded
//! by h2load in ABBA rounds; the server CPU per call of (b) over (a) is
//! judged against [`TARGET_LAYER_CPU_RATIO`]. Before the rounds, one call
//! to each proves the layer is on in (b) (the policy's `RateLimit-Policy`
//! header) and off in (a) (no header). During each round, (b)'s
//! `tollgate_ratelimit_decisions_total{policy=…,outcome="allowed"}` must
//! grow by at least h2load's successes, so the decisions really ran.
//!
//! **ext_authz latency.** On server (b), h2load sends Envoy's
//! `envoy.service.auth.v3.Authorization/Check` at a fixed offered rate
//! (`--rps` per connection, open loop), the request an Envoy sends for a
//! proxied GetOrganization with the same API key: Tollgate authenticates
//! the key (cached), applies the method's permission and the policy, and
//! answers OK with the upstream headers. The p99 of the answered requests
//! (from h2load's per-request log) is judged against
//! [`TARGET_CHECK_P99`]. Beside it, in alternating runs, the bare tonic
//! echo (the suite's baseline) under the very same generator shape and
//! body size: at a fixed rate h2load's own timer scheduling adds latency,
//! the more the more connections share its thread, and the echo's figures
//! show that floor. A run that could not offer the rate (fewer than
//! [`MIN_OFFERED_SHARE`] of it answered) fails the bench, as does any Check
//! whose decision was not an allow (the policy's allowed count must grow
//! by the answered requests).

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use prost::Message as _;
use tollgate::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, attribute_context, authorization_client::AuthorizationClient,
};
use tollgate_client::{
    Client,
    v1::{
        ApiKey, CreateApiKeyRequest, CreateOrganizationRequest, CreateRateLimitPolicyRequest,
        CreateServiceAccountRequest, GetOrganizationRequest, Organization, RateLimit,
        RateLimitPolicy, RateLimitSelector, ServiceAccount, rate_limit,
    },
};

use crate::{
    h2load::{self, Body, GET_ORGANIZATION_PATH, H2loadSettings, Request},
    report::{self, NOISY_OTHER_LOAD, RoundFigures, latency, median, verdict},
    servers::{self, EchoCommand, Launch, Started, TollgateCommand},
    window::Window,
};

/// The layer may cost at most this multiple of the same call without it,
/// in server CPU per call.
pub const TARGET_LAYER_CPU_RATIO: f64 = 1.05;
/// ext_authz `Check` p99 at the fixed rate must stay under this.
pub const TARGET_CHECK_P99: Duration = Duration::from_millis(1);
/// A Check run must have answered at least this share of the offered rate,
/// or the generator (not the server) set the pace.
const MIN_OFFERED_SHARE: f64 = 0.95;

/// Envoy's ext_authz method.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// Ids of what the setup creates, the same on both servers.
const ORG_ID: &str = "ratelimit-bench";
const SERVICE_ACCOUNT_ID: &str = "bench";
const POLICY_ID: &str = "bench";
/// The policy's limit per second: one nobody reaches, so every decision
/// allows and takes the same path.
const POLICY_LIMIT: i64 = 1_000_000_000;

/// `tollgate-bench ratelimit-server`'s command line.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// The `tollgate` server binary [default: `tollgate` next to this binary].
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate_bin: Option<PathBuf>,

    /// The h2load executable (Debian package `nghttp2-client`).
    #[arg(long, env = "H2LOAD", default_value = "h2load")]
    h2load_bin: PathBuf,

    /// h2load `-c` for the layer rounds.
    #[arg(long, default_value_t = 4)]
    h2load_connections: usize,

    /// h2load `-m` for the layer rounds.
    #[arg(long, default_value_t = 8)]
    h2load_streams: usize,

    /// Measured seconds per server and layer round.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,

    /// Seconds of the unmeasured warm-up run before each measured one.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,

    /// Layer rounds (ABBA); the median per-round ratio is judged.
    #[arg(long, default_value_t = 5)]
    rounds: usize,

    /// Check calls per second offered in the ext_authz runs.
    #[arg(long, default_value_t = 10_000)]
    check_rate: u64,

    /// h2load connections sharing the Check rate (each offers
    /// `check_rate / check_connections` per second). One, as an Envoy
    /// worker multiplexes its checks on one HTTP/2 connection; more
    /// connections add h2load's own scheduling delay to every server
    /// alike (the echo floor shows it).
    #[arg(long, default_value_t = 1)]
    check_connections: usize,

    /// Streams each Check connection may have in flight.
    #[arg(long, default_value_t = 8)]
    check_streams: usize,

    /// Measured seconds per ext_authz run.
    #[arg(long, default_value_t = 10.0)]
    check_duration: f64,

    /// ext_authz runs; the median p99 is judged.
    #[arg(long, default_value_t = 3)]
    check_rounds: usize,

    /// Smoke run: one round of each, 1 s long, after a 1 s warm-up.
    #[arg(long)]
    quick: bool,

    /// `--log-level` for `tollgate serve`.
    #[arg(long, default_value = "warn")]
    tollgate_log_level: String,

    /// Seconds a server may take to become ready.
    #[arg(long, default_value_t = 30.0)]
    startup_timeout: f64,

    /// Seconds a server may take to exit after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 2.0)]
    stop_grace: f64,
}

/// One server under test.
struct Server {
    /// What started it: dropping it stops the process.
    _started: Started,
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// Admin listener, for `/metrics`.
    admin: SocketAddr,
    /// Process id, for CPU time.
    pid: u32,
    /// An API key of the viewer service account.
    api_key: String,
}

/// One measured h2load run on one server.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Successful calls h2load counted.
    calls: u64,
    /// Calls per second.
    throughput: f64,
    /// Latency percentiles from h2load's log, µs.
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Server CPU time per successful call, µs.
    cpu_us: f64,
    /// Share of the machine other processes used.
    other_load: f64,
}

// === impl Measured ===

impl Measured {
    fn figures(&self) -> RoundFigures {
        RoundFigures {
            throughput: self.throughput,
            p50_us: Some(self.p50_us),
            p99_us: Some(self.p99_us),
            mean_us: None,
            cpu_us: self.cpu_us,
            other_load: self.other_load,
        }
    }
}

/// Runs both measurements and prints the report. Fails if a server cannot
/// start, a check fails, or a measured answer was not a success.
pub async fn run(options: Options) -> Result<()> {
    let (rounds, check_rounds, duration, check_duration, warmup) = if options.quick {
        (
            1,
            1,
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
    } else {
        (
            options.rounds,
            options.check_rounds,
            crate::seconds("--duration", options.duration)?,
            crate::seconds("--check-duration", options.check_duration)?,
            crate::seconds("--warmup", options.warmup)?,
        )
    };
    if duration.is_zero() || check_duration.is_zero() || rounds == 0 || check_rounds == 0 {
        bail!("durations and round counts must be above 0");
    }
    if options.check_connections == 0 || options.check_rate < options.check_connections as u64 {
        bail!("--check-rate must be at least --check-connections, which must be at least 1");
    }
    let bin = crate::tollgate_bin(options.tollgate_bin.clone())?;
    let timeout = crate::seconds("--startup-timeout", options.startup_timeout)?;
    let stop_grace = crate::seconds("--stop-grace", options.stop_grace)?;
    let (cpus, model) = report::machine();
    println!("# tollgate-bench ratelimit-server");
    println!();
    println!("machine: {cpus} CPUs, {model}");
    println!(
        "servers: (a) {} serve --rate-limiting=false, (b) the same with --rate-limiting=true and \
         policy {POLICY_ID} selecting GetOrganization ({POLICY_LIMIT}/s, GCRA); both --log-level {}",
        bin.display(),
        options.tollgate_log_level
    );

    let mut servers = Vec::with_capacity(2);
    for layer in [false, true] {
        let cmd = TollgateCommand {
            bin: bin.clone(),
            launch: Launch {
                wrapper: Vec::new(),
                stop_grace,
            },
            log_level: options.tollgate_log_level.clone(),
            extra_args: vec![format!("--rate-limiting={layer}")],
        };
        servers.push(start(&cmd, timeout, layer).await?);
    }
    let on = &servers[1];

    let settings = H2loadSettings {
        bin: options.h2load_bin.clone(),
        connections: options.h2load_connections,
        streams: options.h2load_streams,
        threads: 1,
        warmup: Duration::ZERO,
        duration,
        max_requests: None,
        rps: None,
    };
    println!(
        "layer rounds: GetOrganization with x-api-key, h2load -c {} -m {} -t 1, {:.1} s warm-up + \
         {:.1} s measured per server, {rounds} ABBA round(s)",
        settings.connections,
        settings.streams,
        warmup.as_secs_f64(),
        duration.as_secs_f64()
    );
    println!();
    let mut pairs = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut got: [Option<Measured>; 2] = [None, None];
        for i in order {
            let server = &servers[i];
            let body = Body::get_organization(&format!("organizations/{ORG_ID}"))?;
            let request = Request {
                url: format!("{}{GET_ORGANIZATION_PATH}", server.url),
                headers: h2load::grpc_headers(&server.api_key),
                body: Some(body.path()),
            };
            let name = if i == 0 {
                "(a) layer off"
            } else {
                "(b) layer on"
            };
            let m = measure(name, Some(server), &settings, warmup, &request, i == 1).await?;
            println!(
                "round {}  {name:<14} {:>7.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  server CPU {:>5.1} µs/call  other load {:>3.0}%",
                round + 1,
                m.throughput,
                m.p50_us,
                m.p99_us,
                m.cpu_us,
                m.other_load * 100.0
            );
            got[i] = Some(m);
        }
        if let [Some(a), Some(b)] = got {
            pairs.push((a, b));
        }
    }

    let per_connection = options.check_rate / options.check_connections as u64;
    let offered = per_connection * options.check_connections as u64;
    let check = H2loadSettings {
        bin: options.h2load_bin.clone(),
        connections: options.check_connections,
        streams: options.check_streams,
        threads: 1,
        warmup: Duration::ZERO,
        duration: check_duration,
        max_requests: None,
        rps: Some(per_connection),
    };
    println!();
    println!(
        "ext_authz runs on (b): {CHECK_PATH} for a proxied GetOrganization with the API key, \
         {offered}/s offered (h2load -c {} -m {} --rps {per_connection}), {:.1} s warm-up + {:.1} s \
         measured, {check_rounds} run(s)",
        check.connections,
        check.streams,
        warmup.as_secs_f64(),
        check_duration.as_secs_f64()
    );
    let check_body = check_request(on).await?;
    // The floor: the bare tonic echo under the very same generator shape
    // and body size. At a fixed rate h2load's own scheduling adds latency
    // (more with more connections), which this shows.
    let echo = servers::start_echo(
        &EchoCommand {
            bin: std::env::current_exe().context("cannot locate this binary")?,
            launch: Launch {
                wrapper: Vec::new(),
                stop_grace,
            },
            tcp_nodelay: true,
        },
        timeout,
    )
    .await?;
    let check_len = std::fs::metadata(check_body.path())
        .context("cannot read the Check body's size")?
        .len();
    // A GetOrganizationRequest is field 1, as EchoRequest is: the same
    // frame size as the Check's.
    let echo_body = Body::get_organization(&"x".repeat(check_len.saturating_sub(8) as usize))?;
    let mut checks = Vec::with_capacity(check_rounds);
    let mut floors = Vec::with_capacity(check_rounds);
    for round in 0..check_rounds {
        let check_request = Request {
            url: format!("{}{CHECK_PATH}", on.url),
            headers: h2load::grpc_headers_with("user-agent: envoy".to_owned()),
            body: Some(check_body.path()),
        };
        let echo_request = Request {
            url: format!("{}{}", echo.url, h2load::ECHO_PATH),
            headers: h2load::grpc_headers_with("user-agent: envoy".to_owned()),
            body: Some(echo_body.path()),
        };
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_check in order {
            let m = if is_check {
                measure(
                    "ext_authz Check",
                    Some(on),
                    &check,
                    warmup,
                    &check_request,
                    true,
                )
                .await?
            } else {
                measure("echo floor", None, &check, warmup, &echo_request, false).await?
            };
            let what = if is_check { "Check" } else { "echo floor" };
            if m.throughput < offered as f64 * MIN_OFFERED_SHARE {
                bail!(
                    "ext_authz run {} ({what}): {:.0} answers/s of the {offered}/s offered; the \
                     generator or the server could not keep the rate, so its latency is not the \
                     figure asked for",
                    round + 1,
                    m.throughput
                );
            }
            println!(
                "run {}  {what:<10} {:>7.0}/s  p50 {:>6.0} µs  p99 {:>6.0} µs  p99.9 {:>6.0} µs  max {:>6.0} µs  server CPU {:>5.1} µs/call  other load {:>3.0}%",
                round + 1,
                m.throughput,
                m.p50_us,
                m.p99_us,
                m.p999_us,
                m.max_us,
                m.cpu_us,
                m.other_load * 100.0
            );
            if is_check {
                checks.push(m);
            } else {
                floors.push(m);
            }
        }
    }
    drop(echo);
    drop(servers);

    report_layer(&pairs);
    report_check(&checks, &floors, offered);
    Ok(())
}

/// Starts one server and gives it the bench's data: an organization, a
/// viewer service account with an API key, and the policy. Then checks
/// the layer is on or off as asked, by the policy's header.
async fn start(cmd: &TollgateCommand, timeout: Duration, layer: bool) -> Result<Server> {
    let started = servers::start_tollgate(cmd, timeout).await?;
    let admin = started
        .admin
        .context("no admin address for Tollgate's metrics")?;
    let bootstrap = started.bootstrap_key(timeout).await?;
    let root = Client::builder(started.url.clone())
        .api_key(&bootstrap)
        .connect()
        .await
        .context("cannot connect with the bootstrap key")?;
    let org = root
        .organizations()
        .create_organization(CreateOrganizationRequest {
            organization: Some(Organization {
                display_name: "Rate-limit bench".to_owned(),
                ..Default::default()
            }),
            organization_id: ORG_ID.to_owned(),
        })
        .await
        .context("CreateOrganization failed")?
        .into_inner()
        .name;
    let account = root
        .service_accounts()
        .create_service_account(CreateServiceAccountRequest {
            parent: org.clone(),
            service_account: Some(ServiceAccount {
                display_name: "Rate-limit bench".to_owned(),
                roles: vec!["viewer".to_owned()],
                ..Default::default()
            }),
            service_account_id: SERVICE_ACCOUNT_ID.to_owned(),
        })
        .await
        .context("CreateServiceAccount failed")?
        .into_inner()
        .name;
    let api_key = root
        .api_keys()
        .create_api_key(CreateApiKeyRequest {
            parent: account,
            api_key: Some(ApiKey::default()),
        })
        .await
        .context("CreateApiKey failed")?
        .into_inner()
        .secret;
    root.rate_limit_policies()
        .create_rate_limit_policy(CreateRateLimitPolicyRequest {
            parent: org.clone(),
            rate_limit_policy_id: POLICY_ID.to_owned(),
            rate_limit_policy: Some(RateLimitPolicy {
                display_name: "Rate-limit bench".to_owned(),
                selector: Some(RateLimitSelector {
                    method: GET_ORGANIZATION_PATH.to_owned(),
                    ..Default::default()
                }),
                limit: Some(RateLimit {
                    limit: POLICY_LIMIT,
                    period: rate_limit::Period::Second as i32,
                    burst: None,
                }),
                ..Default::default()
            }),
        })
        .await
        .context("CreateRateLimitPolicy failed")?;

    let caller = Client::builder(started.url.clone())
        .api_key(&api_key)
        .connect()
        .await
        .context("cannot connect with the bench's API key")?;
    let answer = caller
        .organizations()
        .get_organization(GetOrganizationRequest { name: org.clone() })
        .await
        .context("GetOrganization with the bench's API key failed")?;
    let policy = answer
        .metadata()
        .get("ratelimit-policy")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match (layer, &policy) {
        (true, Some(p)) if p.contains(POLICY_ID) => {}
        (false, None) => {}
        _ => bail!(
            "GetOrganization on the server with --rate-limiting={layer} answered RateLimit-Policy \
             {policy:?}; the layer is not as asked"
        ),
    }
    let pid = started.process.pid();
    println!(
        "  {} SERVING after {:.1} ms (pid {pid}); RateLimit-Policy on GetOrganization: {}",
        started.url,
        started.ready_after.as_secs_f64() * 1e3,
        policy.as_deref().unwrap_or("none")
    );
    Ok(Server {
        url: started.url.clone(),
        admin,
        pid,
        api_key,
        _started: started,
    })
}

/// The Check request an Envoy sends for a proxied GetOrganization with the
/// server's API key, as one gRPC frame; first sent once through a real
/// client, which must answer it allowed (status code 0).
async fn check_request(server: &Server) -> Result<Body> {
    let headers: HashMap<String, String> = [
        (":authority", "api.example.com"),
        (":method", "POST"),
        (":path", GET_ORGANIZATION_PATH),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-api-key", server.api_key.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(attribute_context::HttpRequest {
                    id: "bench".to_owned(),
                    method: "POST".to_owned(),
                    headers,
                    path: GET_ORGANIZATION_PATH.to_owned(),
                    host: "api.example.com".to_owned(),
                    scheme: "http".to_owned(),
                    protocol: "HTTP/2".to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())?
        .connect()
        .await
        .context("cannot connect for the Check")?;
    let answer = AuthorizationClient::new(channel)
        .check(request.clone())
        .await
        .context("Check failed")?
        .into_inner();
    let code = answer.status.as_ref().map_or(-1, |s| s.code);
    if code != 0 {
        bail!(
            "Check of a GetOrganization with the bench's API key answered status {code} ({:?}), \
             not an allow",
            answer.status.map(|s| s.message)
        );
    }
    Body::of_bytes(&h2load::grpc_frame(&request.encode_to_vec())?)
}

/// A warm-up run, then a measured one, of `request`: h2load's figures,
/// with the server's CPU per call when `server` is Tollgate (the echo
/// floor keeps no metrics: h2load's figures only). `decides`: the
/// server's policy must have allowed at least as many calls as h2load had
/// answered (the layer, or the Check, really decided each).
async fn measure(
    name: &str,
    server: Option<&Server>,
    settings: &H2loadSettings,
    warmup: Duration,
    request: &Request<'_>,
    decides: bool,
) -> Result<Measured> {
    if !warmup.is_zero() {
        let run = H2loadSettings {
            duration: warmup,
            ..settings.clone()
        };
        let summary = h2load::run(name, &run, request, None).await?;
        h2load::check_http(name, &summary)?;
    }
    let dir = tempfile::Builder::new()
        .prefix("tollgate-bench-h2log-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let log = dir.path().join("requests.tsv");
    let (summary, usage) = match server {
        Some(server) => {
            let allowed_before = allowed(server.admin).await?;
            let window = Window::open(server.pid, server.admin).await?;
            let summary = h2load::run(name, settings, request, Some(&log)).await?;
            let usage = window.close(server.pid, server.admin).await?;
            let decided = allowed(server.admin).await?.saturating_sub(allowed_before);
            h2load::check_http(name, &summary)?;
            if decides && decided < summary.succeeded {
                bail!(
                    "{name}: h2load had {} successes but policy {POLICY_ID} allowed only \
                     {decided} calls; the others were not decided (or were refused), so the \
                     figures are not valid",
                    summary.succeeded
                );
            }
            (summary, Some(usage))
        }
        None => {
            let summary = h2load::run(name, settings, request, Some(&log)).await?;
            h2load::check_http(name, &summary)?;
            (summary, None)
        }
    };
    let latencies = h2load::read_latencies(&log)?;
    let at = |q| h2load::percentile(&latencies, q).map_or(f64::NAN, |us| us as f64);
    Ok(Measured {
        calls: summary.succeeded,
        throughput: summary.succeeded as f64 / summary.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        p50_us: at(0.50),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: latencies.last().map_or(f64::NAN, |&us| us as f64),
        cpu_us: usage.as_ref().map_or(f64::NAN, |u| {
            u.server_cpu.as_secs_f64() * 1e6 / summary.succeeded.max(1) as f64
        }),
        other_load: usage.as_ref().map_or(f64::NAN, |u| u.other_load),
    })
}

/// The policy's allowed decisions so far.
async fn allowed(admin: SocketAddr) -> Result<u64> {
    Ok(allowed_in_metrics(&h2load::scrape_metrics(admin).await?))
}

fn allowed_in_metrics(page: &str) -> u64 {
    let policy = format!("policy=\"organizations/{ORG_ID}/rateLimitPolicies/{POLICY_ID}\"");
    h2load::counter_sum(
        page,
        "tollgate_ratelimit_decisions_total",
        &[&policy, "outcome=\"allowed\""],
    )
}

/// The layer's table and verdict: the median round by the CPU ratio.
fn report_layer(pairs: &[(Measured, Measured)]) {
    println!();
    println!(
        "## The rate-limit layer: (b) on against (a) off, GetOrganization with an API key ({} rounds)",
        pairs.len()
    );
    println!();
    println!("| metric | (a) layer off | (b) layer on | b/a | per-round b/a | target | |");
    println!("|---|---:|---:|---:|---|---|---|");
    let figures: Vec<(RoundFigures, RoundFigures)> = pairs
        .iter()
        .map(|(a, b)| (a.figures(), b.figures()))
        .collect();
    let per_round = |f: fn(&RoundFigures) -> f64| {
        figures
            .iter()
            .map(|(a, b)| format!("{:.2}", f(b) / f(a)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = Vec::new();
    if let Some(((a, b), ratio)) = report::median_pair(&figures, |f| f.cpu_us, true) {
        let ok = ratio <= TARGET_LAYER_CPU_RATIO;
        println!(
            "| server CPU per call | {:.2} µs | {:.2} µs | {ratio:.3}× | {} | ≤ {TARGET_LAYER_CPU_RATIO}× | {} |",
            a.cpu_us,
            b.cpu_us,
            per_round(|f| f.cpu_us),
            verdict(ok)
        );
        lines.push(format!(
            "{}  rate-limit layer: server CPU per call {:.2} µs = {ratio:.3}× the {:.2} µs without it, \
             median of per-round ratios [{}] (target ≤ {TARGET_LAYER_CPU_RATIO}×)",
            verdict(ok),
            b.cpu_us,
            a.cpu_us,
            per_round(|f| f.cpu_us)
        ));
    }
    if let Some(((a, b), ratio)) = report::median_pair(&figures, |f| f.throughput, false) {
        println!(
            "| throughput | {:.0} req/s | {:.0} req/s | {ratio:.3}× | {} | — | |",
            a.throughput,
            b.throughput,
            per_round(|f| f.throughput)
        );
    }
    let p = |v: Option<f64>| v.unwrap_or(f64::NAN);
    if let Some(((a, b), ratio)) = report::median_pair(&figures, |f| p(f.p99_us), true) {
        println!(
            "| p99 latency | {} | {} | {ratio:.3}× | {} | — | |",
            latency(p(a.p99_us)),
            latency(p(b.p99_us)),
            per_round(|f| f.p99_us.unwrap_or(f64::NAN))
        );
    }
    let noisy = pairs
        .iter()
        .filter(|(a, b)| a.other_load.max(b.other_load) > NOISY_OTHER_LOAD)
        .count();
    if noisy > 0 {
        lines.push(format!(
            "NOTE  {noisy} of {} rounds ran while other processes used more than {:.0}% of the \
             machine",
            pairs.len(),
            NOISY_OTHER_LOAD * 100.0
        ));
    }
    println!();
    for line in lines {
        println!("{line}");
    }
}

/// One figure of a measured run.
type Figure = fn(&Measured) -> f64;

/// The Check runs' table beside the echo floor's, and the verdict: the
/// median run's p99.
fn report_check(checks: &[Measured], floors: &[Measured], offered: u64) {
    println!();
    println!(
        "## ext_authz Check at {offered}/s offered, beside the bare tonic echo under the same \
         generator ({} runs; median [min–max])",
        checks.len()
    );
    println!();
    let spread = |ms: &[Measured], f: fn(&Measured) -> f64| {
        let values: Vec<f64> = ms.iter().map(f).collect();
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (median(&values).unwrap_or(f64::NAN), lo, hi)
    };
    println!("| figure | Check | echo floor |");
    println!("|---|---:|---:|");
    let rows: [(&str, Figure); 6] = [
        ("answered per second", |m| m.throughput),
        ("p50 latency, µs", |m| m.p50_us),
        ("p99 latency, µs", |m| m.p99_us),
        ("p99.9 latency, µs", |m| m.p999_us),
        ("max latency, µs", |m| m.max_us),
        ("server CPU per call, µs", |m| m.cpu_us),
    ];
    for (name, f) in rows {
        let (m, lo, hi) = spread(checks, f);
        let (e, elo, ehi) = spread(floors, f);
        println!("| {name} | {m:.1} [{lo:.1} – {hi:.1}] | {e:.1} [{elo:.1} – {ehi:.1}] |");
    }
    let (p99, _, _) = spread(checks, |m| m.p99_us);
    let (floor_p99, _, _) = spread(floors, |m| m.p99_us);
    let target = TARGET_CHECK_P99.as_secs_f64() * 1e6;
    println!();
    println!(
        "{}  ext_authz Check p99 at {offered}/s: {} (median of {} runs; target < {}); the echo \
         floor's p99 under the same generator: {}",
        verdict(p99 < target),
        latency(p99),
        checks.len(),
        latency(target),
        latency(floor_p99)
    );
    let calls: u64 = checks.iter().map(|m| m.calls).sum();
    println!("({calls} Checks answered, every one an allow by policy {POLICY_ID})");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_counts_only_the_policys_allowed_decisions() {
        let page = "\
# TYPE tollgate_ratelimit_decisions_total counter
tollgate_ratelimit_decisions_total{policy=\"organizations/ratelimit-bench/rateLimitPolicies/bench\",outcome=\"allowed\"} 1234
tollgate_ratelimit_decisions_total{policy=\"organizations/ratelimit-bench/rateLimitPolicies/bench\",outcome=\"refused\"} 7
tollgate_ratelimit_decisions_total{policy=\"default\",outcome=\"allowed\"} 99
";
        assert_eq!(allowed_in_metrics(page), 1234);
        assert_eq!(allowed_in_metrics(""), 0);
    }
}
