//! The OAuth benchmark (issue 8): on one Tollgate server, side by side in
//! one run, `client_credentials` token issue per second, introspection per
//! second, and GetOrganization authenticated with an access token (JWT)
//! against the same call with an API key of the same service account.
//!
//! Setup, through the server's own API with the bootstrap key (the client
//! crate): an organization, a `viewer` service account in it, a
//! confidential OAuth client acting as that account with the
//! `client_credentials` grant and the `organizations.get` scope, and an API
//! key of the same account. Both gRPC targets read the account's own
//! organization, so they do the same work apart from the credential.
//!
//! Targets, all driven by h2load over h2c with the same `-c`/`-m`/`-t`:
//! - **token**: `POST /oauth2/token`, form `grant_type=client_credentials`,
//!   `client_secret_basic`. h2load counts HTTP 200s; the server keeps no
//!   count of tokens issued, so before the rounds the very same request
//!   (headers and body) is sent once and must answer a Bearer token.
//! - **introspect**: `POST /oauth2/introspect`, form `token=<the JWT>`, the
//!   same Basic credentials; checked once per round to answer
//!   `"active": true`.
//! - **gRPC API key** and **gRPC JWT**: GetOrganization with the gRPC-framed
//!   body, the credential in `authorization: Bearer …` for both (as the
//!   client crate sends either), each checked against the server's
//!   `tollgate_grpc_requests_total{code="OK"}` as [`crate::transcoding`]
//!   does.
//!
//! Access tokens live 15 minutes by default, so every round starts by
//! issuing a fresh one, used for the whole round: the JWT target presents
//! one token throughout, which is what the verified-token cache is for.
//!
//! Each target runs an unmeasured warm-up, then the measured run, in ABBA
//! order across rounds; server CPU per call comes from `/proc/PID/stat`
//! around the measured run. The report gives each target's medians and
//! per-round ranges, and judges the targets: token issue at least
//! [`TARGET_TOKENS_PER_SEC`], introspection at least
//! [`TARGET_INTROSPECTIONS_PER_SEC`], and the JWT call's server CPU at most
//! [`TARGET_JWT_CPU_RATIO`]× the API-key call's (median of the per-round
//! ratios).

use std::{net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use clap::Args;
use tollgate_client::{
    Client,
    v1::{
        ApiKey, CreateApiKeyRequest, CreateOAuthClientRequest, CreateOrganizationRequest,
        CreateServiceAccountRequest, GetOrganizationRequest, OAuthClient, Organization,
        ServiceAccount, o_auth_client::ClientType,
    },
};

use crate::{
    child::ServerProcess,
    h2load::{self, Body, H2loadSettings, Request},
    report::{self, NOISY_OTHER_LOAD, RoundFigures, latency, median, verdict},
    servers::{self, Launch, TollgateCommand},
    transcoding::PerfSettings,
    window::Window,
};

/// Token issue must reach at least this many tokens per second.
pub const TARGET_TOKENS_PER_SEC: f64 = 10_000.0;
/// Introspection must reach at least this many answers per second.
pub const TARGET_INTROSPECTIONS_PER_SEC: f64 = 50_000.0;
/// A JWT-authenticated call may cost at most this multiple of the same call
/// with an API key in server CPU.
pub const TARGET_JWT_CPU_RATIO: f64 = 1.05;
/// Ory Hydra's published figures on 2 CPUs, for the report's context.
const HYDRA_TOKENS_PER_SEC: f64 = 513.0;
const HYDRA_INTROSPECTIONS_PER_SEC: f64 = 5_109.0;

/// The token endpoint.
const TOKEN_PATH: &str = "/oauth2/token";
/// The introspection endpoint.
const INTROSPECT_PATH: &str = "/oauth2/introspect";
/// The token request's form.
const TOKEN_FORM: &str = "grant_type=client_credentials";
/// The scope the client may ask for and the call needs.
const SCOPE: &str = "organizations.get";
/// Ids of the resources the setup creates.
const ORG_ID: &str = "oauth-bench";
const SERVICE_ACCOUNT_ID: &str = "bench";
const CLIENT_ID: &str = "bench";

/// One thing to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// `POST /oauth2/token`, `client_credentials`.
    Token,
    /// `POST /oauth2/introspect` of the round's access token.
    Introspect,
    /// GetOrganization over gRPC with the service account's API key.
    GrpcApikey,
    /// GetOrganization over gRPC with the round's access token.
    GrpcJwt,
}

// === impl Target ===

impl Target {
    /// The name used in round lines and tables.
    fn name(self) -> &'static str {
        match self {
            Target::Token => "token issue",
            Target::Introspect => "introspection",
            Target::GrpcApikey => "gRPC, API key",
            Target::GrpcJwt => "gRPC, JWT",
        }
    }

    /// Its command-line name, also used in file names.
    fn id(self) -> &'static str {
        match self {
            Target::Token => "token",
            Target::Introspect => "introspect",
            Target::GrpcApikey => "grpc-apikey",
            Target::GrpcJwt => "grpc-jwt",
        }
    }

    /// Whether the server's gRPC OK count checks its answers.
    fn is_grpc(self) -> bool {
        matches!(self, Target::GrpcApikey | Target::GrpcJwt)
    }
}

/// `tollgate-bench oauth`'s command line.
#[derive(Debug, Args)]
pub struct Options {
    /// The `tollgate` server binary [default: `tollgate` next to this binary].
    #[arg(long, env = "TOLLGATE_BIN")]
    tollgate_bin: Option<PathBuf>,

    /// Targets to run, in the order of even rounds (odd rounds mirror it).
    /// The CPU ratio needs both gRPC targets; a single target is useful
    /// under a profiler.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "token,introspect,grpc-apikey,grpc-jwt"
    )]
    targets: Vec<Target>,

    /// The h2load executable (Debian package `nghttp2-client`).
    #[arg(long, env = "H2LOAD", default_value = "h2load")]
    h2load_bin: PathBuf,

    /// h2load `-c`: HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    h2load_connections: usize,

    /// h2load `-m`: concurrent streams per connection.
    #[arg(long, default_value_t = 8)]
    h2load_streams: usize,

    /// h2load `-t`: client threads.
    #[arg(long, default_value_t = 1)]
    h2load_threads: usize,

    /// Measured seconds per target and round.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,

    /// Seconds of the unmeasured warm-up run before each measured one
    /// (0: none).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,

    /// Rounds (the median is reported; odd counts keep it a real round).
    #[arg(long, default_value_t = 3)]
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
    /// during every measured run, writing `round<N>-<target>.data` into
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

/// Everything the run needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How to start the one Tollgate server.
    tollgate: TollgateCommand,
    /// Targets in the order of even rounds.
    targets: Vec<Target>,
    /// h2load's shape; its `warmup`, `duration` and `max_requests` are set
    /// per run.
    h2load: H2loadSettings,
    /// Unmeasured warm-up run before each measured one (zero: none).
    warmup: Duration,
    /// Measured run length.
    duration: Duration,
    /// Rounds; the median is reported.
    rounds: usize,
    /// Upper bound on the server's start-up.
    startup_timeout: Duration,
    /// `perf record` on every measured run, when set.
    perf: Option<PerfSettings>,
}

// === impl Options ===

impl Options {
    /// Resolves the command line into a [`Plan`].
    pub fn plan(self) -> Result<Plan> {
        if self.h2load_connections == 0 || self.h2load_streams == 0 || self.h2load_threads == 0 {
            bail!("--h2load-connections, --h2load-streams and --h2load-threads must be at least 1");
        }
        if self.targets.is_empty() {
            bail!("--targets names no target");
        }
        let (rounds, duration, warmup) = if self.quick {
            (1, Duration::from_secs(1), Duration::from_secs(1))
        } else {
            (
                self.rounds,
                crate::seconds("--duration", self.duration)?,
                crate::seconds("--warmup", self.warmup)?,
            )
        };
        if duration.is_zero() {
            bail!("--duration must be above 0");
        }
        Ok(Plan {
            tollgate: TollgateCommand {
                bin: crate::tollgate_bin(self.tollgate_bin)?,
                launch: Launch {
                    wrapper: Vec::new(),
                    stop_grace: crate::seconds("--stop-grace", self.stop_grace)?,
                },
                log_level: self.tollgate_log_level,
                extra_args: self.tollgate_arg,
            },
            targets: self.targets,
            h2load: H2loadSettings {
                bin: self.h2load_bin,
                connections: self.h2load_connections,
                streams: self.h2load_streams,
                threads: self.h2load_threads,
                warmup: Duration::ZERO,
                duration,
                max_requests: None,
                rps: None,
            },
            warmup,
            duration,
            rounds,
            startup_timeout: crate::seconds("--startup-timeout", self.startup_timeout)?,
            perf: self.perf_record.map(|dir| PerfSettings {
                bin: self.perf_bin,
                dir,
                frequency: self.perf_frequency,
            }),
        })
    }
}

/// The server under test, as the generators see it.
struct Server {
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// The listener's address, for the one-off HTTP/1.1 checks.
    addr: SocketAddr,
    /// Admin listener, whose `/metrics` counts OK gRPC answers.
    admin: SocketAddr,
    /// Process id, whose CPU time is read around each measured run.
    pid: u32,
}

/// What the setup created.
struct Fixture {
    /// `organizations/oauth-bench`, which both gRPC targets read.
    org: String,
    /// `authorization: Basic …` of the OAuth client (`client_secret_basic`).
    basic: String,
    /// An API key of the service account the client acts as.
    api_key: String,
}

/// One round's access token and the request bodies that depend on it.
struct Credential {
    /// The access token (a JWT).
    token: String,
    /// `token=<the JWT>`, for introspection.
    introspect_body: Body,
}

/// What one measured run of one target gave.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Successful calls h2load counted.
    calls: u64,
    /// Length of the measured run.
    elapsed: Duration,
    /// Calls per second.
    throughput: f64,
    /// Median latency, µs.
    p50_us: f64,
    /// 99th percentile latency, µs.
    p99_us: f64,
    /// How much the server's GetOrganization OK count grew.
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

/// Starts the server, sets up the client and keys, checks every target's
/// request once, runs the rounds and prints the report. Fails if the server
/// cannot start, a check fails, or any measured answer was not a success.
pub async fn run(plan: &Plan) -> Result<()> {
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
    };
    println!(
        "tollgate --log-level {} SERVING after {:.1} ms (pid {}, {})",
        plan.tollgate.log_level,
        started.ready_after.as_secs_f64() * 1e3,
        server.pid,
        server.url
    );
    let bootstrap = started.bootstrap_key(plan.startup_timeout).await?;
    let fixture = set_up(&server, &bootstrap).await?;
    println!(
        "set up {}: service account {SERVICE_ACCOUNT_ID} (viewer), confidential client \
         {CLIENT_ID} (client_credentials, scope {SCOPE}), an API key of the account",
        fixture.org
    );

    let token_body = Body::of_bytes(TOKEN_FORM.as_bytes())?;
    let grpc_body = Body::get_organization(&fixture.org)?;
    let mut rounds: Vec<Vec<(Target, Measured)>> = Vec::with_capacity(plan.rounds);
    println!();
    println!("## Rounds");
    for round in 0..plan.rounds {
        // A fresh token per round: it lives 15 minutes by default, longer
        // than a long run.
        let credential = new_credential(&server, &fixture, round == 0).await?;
        let mut order = plan.targets.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut measured = Vec::with_capacity(order.len());
        for target in order {
            let (headers, body) = match target {
                Target::Token => (form_headers(&fixture), token_body.path()),
                Target::Introspect => (form_headers(&fixture), credential.introspect_body.path()),
                Target::GrpcApikey => (
                    h2load::grpc_bearer_headers(&fixture.api_key),
                    grpc_body.path(),
                ),
                Target::GrpcJwt => (
                    h2load::grpc_bearer_headers(&credential.token),
                    grpc_body.path(),
                ),
            };
            let path = match target {
                Target::Token => TOKEN_PATH,
                Target::Introspect => INTROSPECT_PATH,
                Target::GrpcApikey | Target::GrpcJwt => h2load::GET_ORGANIZATION_PATH,
            };
            let request = Request {
                url: format!("{}{path}", server.url),
                headers,
                body: Some(body),
            };
            let m = run_target(plan, &server, target, round, &request).await?;
            print_round(round, target, &m);
            measured.push((target, m));
        }
        rounds.push(measured);
    }
    drop(started);

    print_report(plan, &rounds);
    Ok(())
}

/// Creates the organization, the service account, the OAuth client and the
/// API key with the bootstrap key, and checks the API key on the call.
async fn set_up(server: &Server, bootstrap: &str) -> Result<Fixture> {
    let admin = Client::builder(server.url.clone())
        .api_key(bootstrap)
        .connect()
        .await
        .context("cannot connect with the bootstrap key")?;
    let org = admin
        .organizations()
        .create_organization(CreateOrganizationRequest {
            organization: Some(Organization {
                display_name: "OAuth bench".to_owned(),
                ..Default::default()
            }),
            organization_id: ORG_ID.to_owned(),
        })
        .await
        .context("CreateOrganization failed")?
        .into_inner()
        .name;
    let account = admin
        .service_accounts()
        .create_service_account(CreateServiceAccountRequest {
            parent: org.clone(),
            service_account: Some(ServiceAccount {
                display_name: "OAuth bench".to_owned(),
                roles: vec!["viewer".to_owned()],
                ..Default::default()
            }),
            service_account_id: SERVICE_ACCOUNT_ID.to_owned(),
        })
        .await
        .context("CreateServiceAccount failed")?
        .into_inner()
        .name;
    let client = admin
        .oauth_clients()
        .create_o_auth_client(CreateOAuthClientRequest {
            parent: org.clone(),
            oauth_client: Some(OAuthClient {
                display_name: "OAuth bench".to_owned(),
                client_type: ClientType::Confidential as i32,
                grant_types: vec!["client_credentials".to_owned()],
                scopes: vec![SCOPE.to_owned()],
                service_account: account.clone(),
                ..Default::default()
            }),
            oauth_client_id: CLIENT_ID.to_owned(),
        })
        .await
        .context("CreateOAuthClient failed")?
        .into_inner();
    if client.secret.is_empty() {
        bail!("CreateOAuthClient answered no secret for a confidential client");
    }
    let api_key = admin
        .api_keys()
        .create_api_key(CreateApiKeyRequest {
            parent: account,
            api_key: Some(ApiKey::default()),
        })
        .await
        .context("CreateApiKey failed")?
        .into_inner()
        .secret;
    let fixture = Fixture {
        basic: basic_authorization(&client.name, &client.secret),
        org,
        api_key,
    };
    check_get_organization(server, &fixture, &fixture.api_key, "the API key").await?;
    Ok(fixture)
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 2.3.1).
fn basic_authorization(client_id: &str, secret: &str) -> String {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The headers of both form POSTs, as h2load `-H` values.
fn form_headers(fixture: &Fixture) -> Vec<String> {
    vec![
        "content-type: application/x-www-form-urlencoded".to_owned(),
        format!("authorization: {}", fixture.basic),
    ]
}

/// Issues the round's token with the very request the token target
/// repeats, and checks it on the other two targets that use it:
/// introspection must answer it active, and GetOrganization must accept
/// it. `verbose` prints what the checks saw (once is enough).
async fn new_credential(server: &Server, fixture: &Fixture, verbose: bool) -> Result<Credential> {
    let headers = form_headers(fixture);
    let answer = h2load::http1_request(
        server.addr,
        "POST",
        TOKEN_PATH,
        &headers,
        Some(TOKEN_FORM.as_bytes()),
    )
    .await?;
    let json = json_answer(&answer, TOKEN_PATH)?;
    let token = json
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|t| t.split('.').count() == 3)
        .with_context(|| format!("POST {TOKEN_PATH} answered no JWT access token: {json}"))?
        .to_owned();
    let token_type = json.get("token_type").and_then(|v| v.as_str());
    if !token_type.is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
        bail!("POST {TOKEN_PATH} answered token_type {token_type:?}, not Bearer");
    }

    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", &token)
        .finish();
    let answer = h2load::http1_request(
        server.addr,
        "POST",
        INTROSPECT_PATH,
        &headers,
        Some(form.as_bytes()),
    )
    .await?;
    let introspection = json_answer(&answer, INTROSPECT_PATH)?;
    if introspection.get("active") != Some(&serde_json::Value::Bool(true)) {
        bail!("POST {INTROSPECT_PATH} did not answer the new token active: {introspection}");
    }
    check_get_organization(server, fixture, &token, "the access token").await?;
    if verbose {
        println!(
            "POST {TOKEN_PATH}: {} with a {} B JWT (expires_in {}, scope {}); POST \
             {INTROSPECT_PATH}: active, sub {}; GetOrganization with it: OK",
            answer.status_line,
            token.len(),
            json.get("expires_in").unwrap_or(&serde_json::Value::Null),
            json.get("scope").unwrap_or(&serde_json::Value::Null),
            introspection.get("sub").unwrap_or(&serde_json::Value::Null),
        );
    }
    Ok(Credential {
        token,
        introspect_body: Body::of_bytes(form.as_bytes())?,
    })
}

/// The JSON of a 200 answer from an OAuth endpoint.
fn json_answer(answer: &h2load::Http1Answer, path: &str) -> Result<serde_json::Value> {
    if answer.status != 200 {
        bail!(
            "POST {path} answered {} with {:?}",
            answer.status_line,
            answer.body
        );
    }
    serde_json::from_str(&answer.body)
        .with_context(|| format!("POST {path} answered no JSON: {:?}", answer.body))
}

/// One GetOrganization of the fixture's organization with `credential` as
/// `authorization: Bearer`, which must answer that organization.
async fn check_get_organization(
    server: &Server,
    fixture: &Fixture,
    credential: &str,
    what: &str,
) -> Result<()> {
    let client = Client::builder(server.url.clone())
        .bearer_token(credential)
        .connect()
        .await
        .context("cannot connect to the server")?;
    let org = client
        .organizations()
        .get_organization(GetOrganizationRequest {
            name: fixture.org.clone(),
        })
        .await
        .with_context(|| format!("GetOrganization {} with {what} failed", fixture.org))?
        .into_inner();
    if org.name != fixture.org {
        bail!(
            "GetOrganization answered {:?}, not {}",
            org.name,
            fixture.org
        );
    }
    Ok(())
}

/// One target's warm-up and measured run.
async fn run_target(
    plan: &Plan,
    server: &Server,
    target: Target,
    round: usize,
    request: &Request<'_>,
) -> Result<Measured> {
    let name = target.name();
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

    let profiler = start_perf(plan, server, target, round).await?;
    let window = Window::open(server.pid, server.admin).await?;
    let summary = h2load::run(name, &timed(plan.duration), request, Some(&log)).await?;
    let usage = window.close(server.pid, server.admin).await?;
    drop(profiler);

    // Every answer a 2xx: an OAuth error is a 4xx, so this alone checks
    // the HTTP targets; a gRPC error is a 200, hence the OK count below.
    h2load::check_http(name, &summary)?;
    if target.is_grpc() {
        let in_flight = (plan.h2load.connections * plan.h2load.streams) as u64;
        // The warm-up's abandoned streams may be answered inside the window.
        let leftovers = if plan.warmup.is_zero() { 0 } else { in_flight };
        check_ok(
            target,
            summary.succeeded,
            summary.started + leftovers,
            usage.server_ok,
        )?;
    }
    let latencies = h2load::read_latencies(&log)?;
    let at = |q| h2load::percentile(&latencies, q).map_or(f64::NAN, |us| us as f64);
    Ok(Measured {
        calls: summary.succeeded,
        elapsed: summary.elapsed,
        throughput: summary.succeeded as f64 / summary.elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        p50_us: at(0.50),
        p99_us: at(0.99),
        server_ok: usage.server_ok,
        server_cpu: usage.server_cpu,
        other_load: usage.other_load,
    })
}

/// Fails unless the server's OK count grew by at least h2load's successes
/// (fewer: some 200s were gRPC errors) and by at most `most`, the calls
/// that could have been answered in the window (more: someone else called).
fn check_ok(target: Target, calls: u64, most: u64, server_ok: u64) -> Result<()> {
    if server_ok < calls {
        bail!(
            "{}: the server counted {server_ok} OK answers, but h2load had {calls} successes; \
             h2load judges by HTTP status only, so the others were gRPC errors and the figures \
             are not valid",
            target.name()
        );
    }
    if server_ok > most {
        bail!(
            "{}: the server counted {server_ok} OK answers, more than the {most} calls h2load \
             could have had answered; something else called it, and the figures are not valid",
            target.name()
        );
    }
    Ok(())
}

/// With `--perf-record`, attaches `perf record` to the server for one
/// measured run, as [`crate::transcoding`] does; dropping the guard sends
/// SIGTERM, on which perf writes its file and exits.
async fn start_perf(
    plan: &Plan,
    server: &Server,
    target: Target,
    round: usize,
) -> Result<Option<ServerProcess>> {
    let Some(perf) = &plan.perf else {
        return Ok(None);
    };
    std::fs::create_dir_all(&perf.dir)
        .with_context(|| format!("cannot create {}", perf.dir.display()))?;
    let stem = perf.dir.join(format!("round{}-{}", round + 1, target.id()));
    let mut command = Command::new(&perf.bin);
    // DWARF unwinding: the release build has no frame pointers.
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

fn print_header(plan: &Plan) {
    let (cpus, model) = report::machine();
    println!("# tollgate-bench oauth");
    println!();
    println!("machine: {cpus} CPUs, {model}");
    println!(
        "tollgate: {} --log-level {}{}",
        plan.tollgate.bin.display(),
        plan.tollgate.log_level,
        plan.tollgate
            .extra_args
            .iter()
            .map(|a| format!(" {a}"))
            .collect::<String>()
    );
    println!(
        "token: POST {TOKEN_PATH} grant_type=client_credentials, client_secret_basic; \
         introspection: POST {INTROSPECT_PATH} token=<JWT>, client_secret_basic; gRPC: \
         GetOrganization organizations/{ORG_ID} with authorization: Bearer <API key | JWT>"
    );
    let h = &plan.h2load;
    println!(
        "generator: {} -c {} -m {} -t {} (h2c) for every target",
        h.bin.display(),
        h.connections,
        h.streams,
        h.threads
    );
    let order: Vec<&str> = plan.targets.iter().map(|t| t.id()).collect();
    println!(
        "{} round(s) of {}, each target {:.1} s warm-up run + {:.1} s measured; odd rounds \
         reversed (ABBA); a new access token per round",
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

fn print_round(round: usize, target: Target, m: &Measured) {
    println!(
        "round {}  {:<14} {:>7.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  server CPU {:>5.1} µs/call  other load {:>3.0}%  ({} calls in {:.1} s, server counted {} GetOrganization OK)",
        round + 1,
        target.name(),
        m.throughput,
        m.p50_us,
        m.p99_us,
        m.cpu_per_call_us(),
        m.other_load * 100.0,
        m.calls,
        m.elapsed.as_secs_f64(),
        m.server_ok
    );
}

/// The rounds of one target, in order.
fn of(rounds: &[Vec<(Target, Measured)>], target: Target) -> Vec<Measured> {
    rounds
        .iter()
        .filter_map(|r| r.iter().find(|(t, _)| *t == target).map(|(_, m)| *m))
        .collect()
}

/// Each round's (API key, JWT) pair, for ratios within a round.
fn jwt_pairs(rounds: &[Vec<(Target, Measured)>]) -> Vec<(RoundFigures, RoundFigures)> {
    rounds
        .iter()
        .filter_map(|r| {
            let get = |t: Target| r.iter().find(|(q, _)| *q == t).map(|(_, m)| m.figures());
            Some((get(Target::GrpcApikey)?, get(Target::GrpcJwt)?))
        })
        .collect()
}

/// Median and range of one figure over rounds.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(ms: &[Measured], f: impl Fn(&Measured) -> f64) -> Spread {
    let values: Vec<f64> = ms.iter().map(f).collect();
    Spread {
        median: median(&values).unwrap_or(f64::NAN),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// Prints the medians and ranges per target, the rounds, the JWT against
/// API key comparison, and one PASS/MISS line per target.
fn print_report(plan: &Plan, rounds: &[Vec<(Target, Measured)>]) {
    println!();
    println!("## Results");
    println!();
    println!(
        "### Per target: median of {} rounds [min–max] (Tollgate --log-level {})",
        rounds.len(),
        plan.tollgate.log_level
    );
    println!();
    println!(
        "| target | throughput | p50 latency | p99 latency | server CPU per call | other processes' CPU, max |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut lines = Vec::new();
    for &target in &plan.targets {
        let ms = of(rounds, target);
        let tput = spread(&ms, |m| m.throughput);
        let cpu = spread(&ms, Measured::cpu_per_call_us);
        let other = ms.iter().map(|m| m.other_load).fold(0.0, f64::max);
        println!(
            "| {} | {:.0} req/s [{:.0}–{:.0}] | {} | {} | {:.1} µs [{:.1}–{:.1}] | {:.0}% |",
            target.name(),
            tput.median,
            tput.min,
            tput.max,
            latency(spread(&ms, |m| m.p50_us).median),
            latency(spread(&ms, |m| m.p99_us).median),
            cpu.median,
            cpu.min,
            cpu.max,
            other * 100.0
        );
        let absolute = match target {
            Target::Token => Some((TARGET_TOKENS_PER_SEC, HYDRA_TOKENS_PER_SEC, "tokens")),
            Target::Introspect => Some((
                TARGET_INTROSPECTIONS_PER_SEC,
                HYDRA_INTROSPECTIONS_PER_SEC,
                "introspections",
            )),
            Target::GrpcApikey | Target::GrpcJwt => None,
        };
        if let Some((goal, hydra, what)) = absolute {
            lines.push(format!(
                "{}  {}: {:.0} {what}/s, median of {} rounds [{:.0}–{:.0}] (target ≥ {goal:.0}/s; \
                 {:.1}× Hydra's published {hydra:.0}/s on 2 CPUs)",
                verdict(tput.median >= goal),
                target.name(),
                tput.median,
                ms.len(),
                tput.min,
                tput.max,
                tput.median / hydra
            ));
        }
    }
    println!();

    println!("### Per round");
    println!();
    println!("| round | target | throughput | p50 | p99 | server CPU per call | other load |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for (i, round) in rounds.iter().enumerate() {
        for (target, m) in round {
            println!(
                "| {} | {} | {:.0} req/s | {} | {} | {:.1} µs | {:.0}% |",
                i + 1,
                target.name(),
                m.throughput,
                latency(m.p50_us),
                latency(m.p99_us),
                m.cpu_per_call_us(),
                m.other_load * 100.0
            );
        }
    }
    println!();

    let pairs = jwt_pairs(rounds);
    if !pairs.is_empty() {
        jwt_rows(&pairs, &mut lines);
    }

    let noisy = rounds
        .iter()
        .filter(|r| r.iter().any(|(_, m)| m.other_load > NOISY_OTHER_LOAD))
        .count();
    if noisy > 0 {
        lines.push(format!(
            "NOTE  {noisy} of {} rounds ran while other processes used more than {:.0}% of the \
             machine; their throughput and latency are unreliable (server CPU per call is less \
             so). Rerun on a quieter machine or with more --rounds.",
            rounds.len(),
            NOISY_OTHER_LOAD * 100.0
        ));
    }
    for line in &lines {
        println!("{line}");
    }
}

/// The JWT call against the API-key call: the median round by each ratio,
/// with the per-round ratios; the CPU ratio is judged.
fn jwt_rows(pairs: &[(RoundFigures, RoundFigures)], lines: &mut Vec<String>) {
    println!(
        "### gRPC GetOrganization, JWT (b) against API key (a): median round by b/a ({} rounds)",
        pairs.len()
    );
    println!();
    println!("| metric | (a) API key | (b) JWT | b/a | per-round b/a | target | |");
    println!("|---|---:|---:|---:|---|---|---|");
    let per_round = |f: fn(&RoundFigures) -> f64| {
        pairs
            .iter()
            .map(|(a, b)| format!("{:.2}", f(b) / f(a)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(((a, b), ratio)) = report::median_pair(pairs, |f| f.cpu_us, true) {
        let ok = ratio <= TARGET_JWT_CPU_RATIO;
        println!(
            "| server CPU per call | {:.1} µs | {:.1} µs | {ratio:.3}× | {} | ≤ {TARGET_JWT_CPU_RATIO}× | {} |",
            a.cpu_us,
            b.cpu_us,
            per_round(|f| f.cpu_us),
            verdict(ok)
        );
        lines.push(format!(
            "{}  server CPU per call, gRPC with a JWT: {:.1} µs = {ratio:.3}× the API key's {:.1} µs, \
             median of per-round ratios [{}] (target ≤ {TARGET_JWT_CPU_RATIO}×)",
            verdict(ok),
            b.cpu_us,
            a.cpu_us,
            per_round(|f| f.cpu_us)
        ));
    }
    if let Some(((a, b), ratio)) = report::median_pair(pairs, |f| f.throughput, false) {
        println!(
            "| throughput | {:.0} req/s | {:.0} req/s | {ratio:.3}× | {} | — | |",
            a.throughput,
            b.throughput,
            per_round(|f| f.throughput)
        );
    }
    let some = |v: Option<f64>| v.unwrap_or(f64::NAN);
    if let Some(((a, b), ratio)) = report::median_pair(pairs, |f| some(f.p50_us), true) {
        println!(
            "| p50 latency | {} | {} | {ratio:.3}× | {} | — | |",
            latency(some(a.p50_us)),
            latency(some(b.p50_us)),
            per_round(|f| f.p50_us.unwrap_or(f64::NAN))
        );
    }
    if let Some(((a, b), ratio)) = report::median_pair(pairs, |f| some(f.p99_us), true) {
        println!(
            "| p99 latency | {} | {} | {ratio:.3}× | {} | — | |",
            latency(some(a.p99_us)),
            latency(some(b.p99_us)),
            per_round(|f| f.p99_us.unwrap_or(f64::NAN))
        );
    }
    println!();
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
            server_ok: 1_000,
            server_cpu: Duration::from_secs_f64(cpu_us * 1e-3),
            other_load: 0.0,
        }
    }

    #[test]
    fn basic_credentials_are_form_encoded_then_base64() {
        let header = basic_authorization("organizations/o/clients/c", "s3cr+t");
        let b64 = header.strip_prefix("Basic ").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            "organizations%2Fo%2Fclients%2Fc:s3cr%2Bt"
        );
    }

    #[test]
    fn jwt_pairs_match_targets_within_a_round_whatever_the_order() {
        let rounds = vec![
            vec![
                (Target::Token, measured(5_000.0, 90.0)),
                (Target::GrpcApikey, measured(100.0, 10.0)),
                (Target::GrpcJwt, measured(95.0, 10.5)),
            ],
            vec![
                (Target::GrpcJwt, measured(90.0, 11.0)),
                (Target::GrpcApikey, measured(110.0, 10.0)),
                (Target::Token, measured(6_000.0, 80.0)),
            ],
            // A round without the API-key target gives no pair.
            vec![(Target::GrpcJwt, measured(90.0, 11.0))],
        ];
        let p = jwt_pairs(&rounds);
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].0.throughput, p[0].1.throughput), (100.0, 95.0));
        assert_eq!((p[1].0.throughput, p[1].1.throughput), (110.0, 90.0));
        assert!((p[1].1.cpu_us - 11.0).abs() < 1e-9);
        assert_eq!(of(&rounds, Target::Token).len(), 2);
        assert_eq!(of(&rounds, Target::GrpcJwt).len(), 3);
    }

    #[test]
    fn spread_gives_median_and_range() {
        let ms = [
            measured(300.0, 1.0),
            measured(100.0, 1.0),
            measured(200.0, 1.0),
        ];
        let s = spread(&ms, |m| m.throughput);
        assert_eq!((s.median, s.min, s.max), (200.0, 100.0, 300.0));
    }

    #[test]
    fn ok_count_bounds() {
        check_ok(Target::GrpcJwt, 100, 132, 100).unwrap();
        check_ok(Target::GrpcJwt, 100, 132, 132).unwrap();
        assert!(check_ok(Target::GrpcJwt, 100, 132, 99).is_err());
        assert!(check_ok(Target::GrpcApikey, 100, 132, 133).is_err());
    }
}
