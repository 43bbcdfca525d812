//! Configuration: flags, `TOLLGATE_*` environment variables and an optional
//! TOML file (`--config`), in that order of precedence, then defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::{listener::Limits, store::CacheConfig};

/// The `tollgate` command line.
#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "The access layer for gRPC microservices"
)]
pub struct Cli {
    /// A TOML file with any of the `serve` settings (snake_case keys).
    #[arg(long, global = true, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Without a command, `tollgate` serves with these settings.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The settings of `tollgate` without a command (the same as `serve`'s);
    /// ignored when a command is given.
    #[command(flatten)]
    pub serve: Settings,
}

/// What `tollgate` was asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Settings),
    /// Offline administration on the database.
    Admin {
        /// Which administration task to run.
        #[command(subcommand)]
        command: AdminCommand,
    },
}

/// The `tollgate admin` tasks: they open the database directly, without a
/// running server or an API key.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Mint a new API key for a service account (default: the root admin)
    /// and print it to stdout.
    CreateKey {
        /// The database to work on, set as for `serve`; logs go to stderr
        /// at WARN.
        #[command(flatten)]
        settings: Settings,
        /// The owner of the key.
        #[arg(long, default_value = "organizations/root/serviceAccounts/admin")]
        service_account: String,
        /// A label for the key.
        #[arg(long, default_value = "created by tollgate admin create-key")]
        display_name: String,
    },
    /// Give the platform back when no admin of `root` can act: make sure
    /// `root` exists and is active, and that its `admin` service account
    /// exists, is active and holds `admin`; then mint it a key and print it
    /// to stdout. Run it against the database, with the server stopped or
    /// running.
    RecoverRoot {
        /// The database to work on, set as for `serve`; logs go to stderr
        /// at WARN.
        #[command(flatten)]
        settings: Settings,
    },
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, compact otherwise.
    #[default]
    Auto,
    /// Multi-line and colored, for a person at a terminal.
    Pretty,
    /// One line per event.
    Compact,
    /// One JSON object per line, with the current span, for log shippers.
    Json,
}

/// The OTLP transport of exported traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (a collector's port 4317).
    #[value(name = "grpc")]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (a collector's port 4318).
    #[value(name = "http/protobuf")]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The protocol the standard variables name
    /// (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`), if they name one we speak.
    pub fn from_env() -> Option<Self> {
        [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find_map(|v| match v.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        })
    }
}

/// Every setting, each optional so the sources can be merged.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// gRPC listener.
    #[arg(long, env = "TOLLGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// `sqlite://PATH` (default `sqlite://data/tollgate.db`) or `postgres://…`.
    #[arg(long, env = "TOLLGATE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Maximum pooled database connections.
    #[arg(long, env = "TOLLGATE_DB_POOL_SIZE")]
    pub db_pool_size: Option<usize>,
    /// Entries per in-process cache.
    #[arg(long, env = "TOLLGATE_CACHE_CAPACITY")]
    pub cache_capacity: Option<u64>,
    /// Seconds a cached entry lives.
    #[arg(long, env = "TOLLGATE_CACHE_TTL_SECS")]
    pub cache_ttl_secs: Option<u64>,
    /// Log format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `tollgate_server=debug` (RUST_LOG syntax).
    #[arg(long, env = "TOLLGATE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Where to write the first admin API key (mode 0600).
    #[arg(long, env = "TOLLGATE_BOOTSTRAP_KEY_FILE")]
    pub bootstrap_key_file: Option<PathBuf>,
    /// Seconds to drain in-flight calls on shutdown.
    #[arg(long, env = "TOLLGATE_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Milliseconds between database health probes.
    #[arg(long, env = "TOLLGATE_HEALTH_INTERVAL_MS")]
    pub health_interval_ms: Option<u64>,
    /// Password hashes (argon2id, 19 MiB each) run at once; more wait up to
    /// 2 s, then get RESOURCE_EXHAUSTED. Default: one per CPU, fewer when
    /// memory is short.
    #[arg(long, env = "TOLLGATE_MAX_CONCURRENT_PASSWORD_HASHES")]
    pub max_concurrent_password_hashes: Option<usize>,
    /// Origins browsers may call the API from (CORS), e.g.
    /// `https://app.example.com`; repeat the flag or separate with commas;
    /// `*` allows any. Off when unset.
    #[arg(long, env = "TOLLGATE_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    #[serde(default)]
    pub cors_allow_origin: Vec<String>,
    /// PEM certificate chain for TLS on the main listener (with
    /// `--tls-key`); plaintext without both.
    #[arg(long, env = "TOLLGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TOLLGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Serve the admin listener over TLS too, with the same certificate.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_TLS",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub admin_tls: Option<bool>,
    /// Connections open at once; more wait until one closes.
    #[arg(long, env = "TOLLGATE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Requests in flight on the listener; more are refused at once
    /// (RESOURCE_EXHAUSTED, or 503).
    #[arg(long, env = "TOLLGATE_MAX_REQUESTS_IN_FLIGHT")]
    pub max_requests_in_flight: Option<usize>,
    /// HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "TOLLGATE_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// HTTP/2 streams a client may reset before the server accepted them
    /// (rapid reset) before its connection is closed.
    #[arg(long, env = "TOLLGATE_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS")]
    pub http2_max_pending_accept_reset_streams: Option<usize>,
    /// HTTP/2 streams the server may reset for protocol errors before the
    /// connection is closed.
    #[arg(long, env = "TOLLGATE_HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS")]
    pub http2_max_local_error_reset_streams: Option<usize>,
    /// Largest request head in bytes (HTTP/2 header list; HTTP/1.1 head,
    /// at least 8192).
    #[arg(long, env = "TOLLGATE_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<u32>,
    /// Largest request body in bytes.
    #[arg(long, env = "TOLLGATE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Seconds a new connection has to send its first complete request
    /// head (TLS handshake included).
    #[arg(long, env = "TOLLGATE_HANDSHAKE_TIMEOUT_SECS")]
    pub handshake_timeout_secs: Option<u64>,
    /// Seconds an HTTP/1.1 request head may take to arrive.
    #[arg(long, env = "TOLLGATE_HEADER_READ_TIMEOUT_SECS")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a connection may stay open with no request in flight; 0
    /// keeps idle connections open.
    #[arg(long, env = "TOLLGATE_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds between HTTP/2 keepalive pings; 0 turns them off.
    #[arg(long, env = "TOLLGATE_HTTP2_KEEPALIVE_INTERVAL_SECS")]
    pub http2_keepalive_interval_secs: Option<u64>,
    /// Seconds a keepalive ping may go unanswered.
    #[arg(long, env = "TOLLGATE_HTTP2_KEEPALIVE_TIMEOUT_SECS")]
    pub http2_keepalive_timeout_secs: Option<u64>,
    /// Seconds a request may take to get its response head and to send
    /// its body (a shorter grpc-timeout wins); 0 for no limit.
    #[arg(long, env = "TOLLGATE_REQUEST_TIMEOUT_SECS")]
    pub request_timeout_secs: Option<u64>,
    /// The public base URL of this server as OAuth clients reach it: the
    /// `iss` of every token and the base of discovery. Default
    /// `http://<listen address>` (`https://` with TLS).
    #[arg(long, env = "TOLLGATE_ISSUER")]
    pub issuer: Option<String>,
    /// A file holding the key-encryption key (32 random bytes, base64)
    /// that encrypts the signing keys in the database. Default with
    /// SQLite: `kek` beside the database file, created at first start;
    /// required with PostgreSQL.
    #[arg(long, env = "TOLLGATE_KEY_ENCRYPTION_KEY_FILE")]
    pub key_encryption_key_file: Option<PathBuf>,
    /// Days between scheduled signing key rotations; 0 rotates only on
    /// demand (RotateSigningKey).
    #[arg(long, env = "TOLLGATE_SIGNING_KEY_ROTATION_DAYS")]
    pub signing_key_rotation_days: Option<u64>,
    /// Whether the rate-limit layer limits calls (default true). `false`
    /// serves every call unlimited (no `RateLimit` headers), for a
    /// deployment whose gateway already limits; calls are still counted
    /// for usage and keys' last use, and the CheckRateLimit, ext_authz and
    /// global rate-limit APIs still answer.
    #[arg(
        long,
        env = "TOLLGATE_RATE_LIMITING",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub rate_limiting: Option<bool>,
    /// The rate limit of anonymous callers (public methods), per source
    /// address, when no policy matches: `LIMIT/UNIT[,burst=N]` with UNIT
    /// one of s, m, h, d (`100/s,burst=200`, the default), or `off`.
    #[arg(long, env = "TOLLGATE_ANONYMOUS_RATE_LIMIT")]
    pub anonymous_rate_limit: Option<String>,
    /// The rate limit of each principal when no policy of its organization
    /// matches, in the same form; `off` (the default) leaves them to the
    /// organizations' policies.
    #[arg(long, env = "TOLLGATE_PRINCIPAL_RATE_LIMIT")]
    pub principal_rate_limit: Option<String>,
    /// In-process rate-limit counters kept at most (idle ones are evicted
    /// first); default 1000000, about 100 MB at the worst.
    #[arg(long, env = "TOLLGATE_RATE_LIMIT_CAPACITY")]
    pub rate_limit_capacity: Option<usize>,
    /// How often usage counts are written to the database, e.g. `10s`,
    /// `500ms`, `1m` (a bare number is seconds); GetUsage figures lag by
    /// up to this much. 100 ms to 1 hour.
    #[arg(long, env = "TOLLGATE_USAGE_FLUSH_INTERVAL")]
    pub usage_flush_interval: Option<Interval>,
    /// Redis shared by every replica for rate limits and quotas
    /// (`redis://[user:password@]host[:port][/db]`, or `rediss://` for
    /// TLS); in-process limits when unset.
    #[arg(long, env = "TOLLGATE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Milliseconds a rate-limit decision waits for Redis before the
    /// policy's fail-open or fail-closed applies.
    #[arg(long, env = "TOLLGATE_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// NATS with JetStream that events are published to and every replica
    /// learns of other replicas' changes from (`nats://host:4222`, or
    /// `tls://`); events stay in process when unset.
    #[arg(long, env = "TOLLGATE_NATS_URL")]
    pub nats_url: Option<String>,
    /// The JetStream stream the events go to (default `TOLLGATE_EVENTS`),
    /// created or updated at start-up.
    #[arg(long, env = "TOLLGATE_NATS_STREAM")]
    pub nats_stream: Option<String>,
    /// How long the stream keeps events, e.g. `7d` (the default), `12h`.
    #[arg(long, env = "TOLLGATE_NATS_MAX_AGE")]
    pub nats_max_age: Option<Interval>,
    /// How long JetStream remembers a published event id to drop a
    /// republish, e.g. `2m` (the default).
    #[arg(long, env = "TOLLGATE_NATS_DUPLICATE_WINDOW")]
    pub nats_duplicate_window: Option<Interval>,
    /// The first tokens of every event subject (default `tollgate.events`,
    /// giving `tollgate.events.<org>.<type>`); deployments sharing one
    /// NATS account each need their own, since JetStream streams may not
    /// share subjects.
    #[arg(long, env = "TOLLGATE_NATS_SUBJECT_PREFIX")]
    pub nats_subject_prefix: Option<String>,
    /// How long the audit log keeps relayed events, e.g. `90d` (the
    /// default), `12h`, `30m` (at least `1m`), or `off` to keep them for
    /// ever. Unrelayed events are never deleted.
    #[arg(long, env = "TOLLGATE_EVENT_RETENTION")]
    pub event_retention: Option<Retention>,
    /// Events a watcher (WatchEvents) may fall behind its organization's
    /// newest before it is ended with its cursor to resume from; default
    /// 1024. The buffer is shared by an organization's watchers.
    #[arg(long, env = "TOLLGATE_WATCH_BUFFER")]
    pub watch_buffer: Option<usize>,
    /// What this process does, comma-separated: `api` (serves the API on
    /// `--listen`), `worker` (runs background jobs: upkeep, later webhook
    /// deliveries). Default `api,worker`. Every role serves health and
    /// metrics on `--admin-listen`.
    #[arg(long, env = "TOLLGATE_ROLES")]
    pub roles: Option<String>,
    /// Let webhooks target loopback addresses, over `http` too: for a
    /// receiver on the same host in development and tests, never in
    /// production.
    #[arg(
        long,
        env = "TOLLGATE_WEBHOOK_ALLOW_LOOPBACK",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub webhook_allow_loopback: Option<bool>,
    /// Private or link-local networks webhooks may target, comma-separated
    /// CIDRs (e.g. `10.20.0.0/16,fd00::/8`); every other private,
    /// loopback, link-local or reserved address is refused (SSRF).
    #[arg(long, env = "TOLLGATE_WEBHOOK_ALLOW_NETWORKS")]
    pub webhook_allow_networks: Option<String>,
    /// How long a webhook delivery waits for the endpoint's response,
    /// e.g. `10s` (the default).
    #[arg(long, env = "TOLLGATE_WEBHOOK_TIMEOUT")]
    pub webhook_timeout: Option<Interval>,
    /// Attempts of a webhook delivery before it is dead (default 8; with
    /// the backoff, about 2 hours of retries).
    #[arg(long, env = "TOLLGATE_WEBHOOK_MAX_ATTEMPTS")]
    pub webhook_max_attempts: Option<u32>,
    /// How long a worker holds a claimed job before another worker may
    /// take it back (it renews the lease while the job runs), e.g. `30s`
    /// (the default): how soon a dead worker's jobs run elsewhere.
    #[arg(long, env = "TOLLGATE_JOB_LEASE")]
    pub job_lease: Option<Interval>,
    /// Where traces go over OTLP, e.g. `http://127.0.0.1:4317` (gRPC) or
    /// `http://127.0.0.1:4318` (HTTP). Unset: the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// none of them: no traces are made.
    #[arg(long, env = "TOLLGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `grpc` (the default) or `http/protobuf`; unset, the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`.
    #[arg(long, env = "TOLLGATE_OTLP_PROTOCOL")]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// The share of new traces recorded, 0.0 to 1.0; a call that arrives
    /// with a sampled or unsampled parent follows its parent. Unset: the
    /// standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, else 1.0.
    #[arg(long, env = "TOLLGATE_TRACE_SAMPLE_RATIO")]
    pub trace_sample_ratio: Option<f64>,
}

impl Settings {
    /// Fills what is unset here from `file`.
    pub fn or(self, file: Settings) -> Settings {
        Settings {
            listen: self.listen.or(file.listen),
            admin_listen: self.admin_listen.or(file.admin_listen),
            database_url: self.database_url.or(file.database_url),
            db_pool_size: self.db_pool_size.or(file.db_pool_size),
            cache_capacity: self.cache_capacity.or(file.cache_capacity),
            cache_ttl_secs: self.cache_ttl_secs.or(file.cache_ttl_secs),
            log_format: self.log_format.or(file.log_format),
            log_level: self.log_level.or(file.log_level),
            bootstrap_key_file: self.bootstrap_key_file.or(file.bootstrap_key_file),
            shutdown_grace_secs: self.shutdown_grace_secs.or(file.shutdown_grace_secs),
            health_interval_ms: self.health_interval_ms.or(file.health_interval_ms),
            max_concurrent_password_hashes: self
                .max_concurrent_password_hashes
                .or(file.max_concurrent_password_hashes),
            cors_allow_origin: if self.cors_allow_origin.is_empty() {
                file.cors_allow_origin
            } else {
                self.cors_allow_origin
            },
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            admin_tls: self.admin_tls.or(file.admin_tls),
            max_connections: self.max_connections.or(file.max_connections),
            max_requests_in_flight: self.max_requests_in_flight.or(file.max_requests_in_flight),
            max_concurrent_streams: self.max_concurrent_streams.or(file.max_concurrent_streams),
            http2_max_pending_accept_reset_streams: self
                .http2_max_pending_accept_reset_streams
                .or(file.http2_max_pending_accept_reset_streams),
            http2_max_local_error_reset_streams: self
                .http2_max_local_error_reset_streams
                .or(file.http2_max_local_error_reset_streams),
            max_header_bytes: self.max_header_bytes.or(file.max_header_bytes),
            max_body_bytes: self.max_body_bytes.or(file.max_body_bytes),
            handshake_timeout_secs: self.handshake_timeout_secs.or(file.handshake_timeout_secs),
            header_read_timeout_secs: self
                .header_read_timeout_secs
                .or(file.header_read_timeout_secs),
            idle_timeout_secs: self.idle_timeout_secs.or(file.idle_timeout_secs),
            http2_keepalive_interval_secs: self
                .http2_keepalive_interval_secs
                .or(file.http2_keepalive_interval_secs),
            http2_keepalive_timeout_secs: self
                .http2_keepalive_timeout_secs
                .or(file.http2_keepalive_timeout_secs),
            request_timeout_secs: self.request_timeout_secs.or(file.request_timeout_secs),
            issuer: self.issuer.or(file.issuer),
            key_encryption_key_file: self
                .key_encryption_key_file
                .or(file.key_encryption_key_file),
            signing_key_rotation_days: self
                .signing_key_rotation_days
                .or(file.signing_key_rotation_days),
            rate_limiting: self.rate_limiting.or(file.rate_limiting),
            anonymous_rate_limit: self.anonymous_rate_limit.or(file.anonymous_rate_limit),
            principal_rate_limit: self.principal_rate_limit.or(file.principal_rate_limit),
            rate_limit_capacity: self.rate_limit_capacity.or(file.rate_limit_capacity),
            usage_flush_interval: self.usage_flush_interval.or(file.usage_flush_interval),
            redis_url: self.redis_url.or(file.redis_url),
            redis_timeout_ms: self.redis_timeout_ms.or(file.redis_timeout_ms),
            nats_url: self.nats_url.or(file.nats_url),
            nats_stream: self.nats_stream.or(file.nats_stream),
            nats_max_age: self.nats_max_age.or(file.nats_max_age),
            nats_duplicate_window: self.nats_duplicate_window.or(file.nats_duplicate_window),
            nats_subject_prefix: self.nats_subject_prefix.or(file.nats_subject_prefix),
            event_retention: self.event_retention.or(file.event_retention),
            watch_buffer: self.watch_buffer.or(file.watch_buffer),
            roles: self.roles.or(file.roles),
            webhook_allow_loopback: self.webhook_allow_loopback.or(file.webhook_allow_loopback),
            webhook_allow_networks: self.webhook_allow_networks.or(file.webhook_allow_networks),
            webhook_timeout: self.webhook_timeout.or(file.webhook_timeout),
            webhook_max_attempts: self.webhook_max_attempts.or(file.webhook_max_attempts),
            job_lease: self.job_lease.or(file.job_lease),
            otlp_endpoint: self.otlp_endpoint.or(file.otlp_endpoint),
            otlp_protocol: self.otlp_protocol.or(file.otlp_protocol),
            trace_sample_ratio: self.trace_sample_ratio.or(file.trace_sample_ratio),
        }
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Applies defaults.
    pub fn resolve(self) -> Config {
        let d = Config::default();
        let dl = d.limits.clone();
        let secs = Duration::from_secs;
        // For the bounds that may be turned off, 0 means "none".
        let or_off = |v: Option<u64>, default: Option<Duration>| match v {
            Some(0) => None,
            Some(v) => Some(secs(v)),
            None => default,
        };
        let limits = Limits {
            max_connections: self.max_connections.unwrap_or(dl.max_connections),
            max_requests_in_flight: self
                .max_requests_in_flight
                .unwrap_or(dl.max_requests_in_flight),
            max_concurrent_streams: self
                .max_concurrent_streams
                .unwrap_or(dl.max_concurrent_streams),
            max_pending_accept_reset_streams: self
                .http2_max_pending_accept_reset_streams
                .unwrap_or(dl.max_pending_accept_reset_streams),
            max_local_error_reset_streams: self
                .http2_max_local_error_reset_streams
                .unwrap_or(dl.max_local_error_reset_streams),
            max_header_bytes: self.max_header_bytes.unwrap_or(dl.max_header_bytes),
            handshake_timeout: self
                .handshake_timeout_secs
                .map_or(dl.handshake_timeout, secs),
            header_read_timeout: self
                .header_read_timeout_secs
                .map_or(dl.header_read_timeout, secs),
            idle_timeout: or_off(self.idle_timeout_secs, dl.idle_timeout),
            http2_keepalive_interval: or_off(
                self.http2_keepalive_interval_secs,
                dl.http2_keepalive_interval,
            ),
            http2_keepalive_timeout: self
                .http2_keepalive_timeout_secs
                .map_or(dl.http2_keepalive_timeout, secs),
            request_timeout: or_off(self.request_timeout_secs, dl.request_timeout),
            max_body_bytes: self.max_body_bytes.unwrap_or(dl.max_body_bytes),
        };
        let listen = self.listen.unwrap_or(d.listen);
        let tls = self.tls_cert.is_some() && self.tls_key.is_some();
        let issuer = self
            .issuer
            .unwrap_or_else(|| default_issuer(listen, tls))
            .trim_end_matches('/')
            .to_owned();
        Config {
            listen,
            admin_listen: self.admin_listen.unwrap_or(d.admin_listen),
            database_url: self.database_url.unwrap_or(d.database_url),
            db_pool_size: self.db_pool_size.unwrap_or(d.db_pool_size),
            cache: CacheConfig {
                capacity: self.cache_capacity.unwrap_or(d.cache.capacity),
                ttl: self
                    .cache_ttl_secs
                    .map(Duration::from_secs)
                    .unwrap_or(d.cache.ttl),
            },
            log_format: self.log_format.unwrap_or(d.log_format),
            log_level: self.log_level.unwrap_or(d.log_level),
            bootstrap_key_file: self.bootstrap_key_file,
            shutdown_grace: self
                .shutdown_grace_secs
                .map(Duration::from_secs)
                .unwrap_or(d.shutdown_grace),
            health_interval: self
                .health_interval_ms
                .map(Duration::from_millis)
                .unwrap_or(d.health_interval),
            max_concurrent_password_hashes: self
                .max_concurrent_password_hashes
                .or(d.max_concurrent_password_hashes),
            cors_allow_origin: self.cors_allow_origin,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            admin_tls: self.admin_tls.unwrap_or(d.admin_tls),
            limits,
            issuer,
            key_encryption_key_file: self.key_encryption_key_file,
            signing_key_rotation: match self.signing_key_rotation_days {
                Some(0) => None,
                Some(days) => Some(Duration::from_secs(days.saturating_mul(DAY_SECS))),
                None => d.signing_key_rotation,
            },
            throttle_max_failures: d.throttle_max_failures,
            throttle_window: d.throttle_window,
            redis_url: self.redis_url.filter(|u| !u.trim().is_empty()),
            redis_timeout: self
                .redis_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(d.redis_timeout),
            rate_limiting: self.rate_limiting.unwrap_or(d.rate_limiting),
            anonymous_rate_limit: self.anonymous_rate_limit.unwrap_or(d.anonymous_rate_limit),
            principal_rate_limit: self.principal_rate_limit.unwrap_or(d.principal_rate_limit),
            rate_limit_capacity: self.rate_limit_capacity.unwrap_or(d.rate_limit_capacity),
            usage_flush_interval: self
                .usage_flush_interval
                .map_or(d.usage_flush_interval, |i| i.0),
            nats_url: self.nats_url.filter(|u| !u.trim().is_empty()),
            nats_stream: self.nats_stream.unwrap_or(d.nats_stream),
            nats_max_age: self.nats_max_age.map_or(d.nats_max_age, |i| i.0),
            nats_duplicate_window: self
                .nats_duplicate_window
                .map_or(d.nats_duplicate_window, |i| i.0),
            nats_subject_prefix: self.nats_subject_prefix.unwrap_or(d.nats_subject_prefix),
            event_retention: self.event_retention.map_or(d.event_retention, |r| r.0),
            watch_buffer: self.watch_buffer.unwrap_or(d.watch_buffer).max(1),
            watch_recheck: d.watch_recheck,
            roles: self.roles.unwrap_or(d.roles),
            webhook_allow_loopback: self
                .webhook_allow_loopback
                .unwrap_or(d.webhook_allow_loopback),
            webhook_allow_networks: self
                .webhook_allow_networks
                .unwrap_or(d.webhook_allow_networks),
            webhook_timeout: self.webhook_timeout.map_or(d.webhook_timeout, |i| i.0),
            webhook_max_attempts: self
                .webhook_max_attempts
                .unwrap_or(d.webhook_max_attempts)
                .clamp(1, 100),
            job_lease: self.job_lease.map_or(d.job_lease, |i| i.0),
            otlp_endpoint: self.otlp_endpoint.or(d.otlp_endpoint),
            otlp_protocol: self.otlp_protocol.or(d.otlp_protocol),
            trace_sample_ratio: self.trace_sample_ratio.or(d.trace_sample_ratio),
        }
    }
}

/// A duration setting written with its unit: `500ms`, `10s`, `1m`, `12h`,
/// `7d`; a bare number is seconds (in TOML too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval(pub Duration);

impl std::str::FromStr for Interval {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (digits, unit): (&str, fn(u64) -> Duration) = if let Some(n) = s.strip_suffix("ms") {
            (n, Duration::from_millis)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, Duration::from_secs)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, |m| Duration::from_secs(m.saturating_mul(60)))
        } else if let Some(n) = s.strip_suffix('h') {
            (n, |h| Duration::from_secs(h.saturating_mul(3600)))
        } else if let Some(n) = s.strip_suffix('d') {
            (n, |d| Duration::from_secs(d.saturating_mul(DAY_SECS)))
        } else {
            (s, Duration::from_secs)
        };
        digits
            .trim()
            .parse::<u64>()
            .map(|n| Interval(unit(n)))
            .map_err(|_| format!("'{s}' is not a duration such as 500ms, 10s or 1m"))
    }
}

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Secs(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Secs(n) => Ok(Interval(Duration::from_secs(n))),
            Written::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `--event-retention`: a duration as [`Interval`] takes it, or `off`
/// (`None`: events are kept for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

impl std::str::FromStr for Retention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(Retention(None));
        }
        s.parse::<Interval>()
            .map(|i| Retention(Some(i.0)))
            .map_err(|_| {
                format!(
                    "'{}' is not a duration such as 90d, 12h or 30m, nor off",
                    s.trim()
                )
            })
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Secs(u64),
            Text(String),
        }
        match Written::deserialize(d)? {
            Written::Secs(n) => Ok(Retention(Some(Duration::from_secs(n)))),
            Written::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The shortest `--event-retention`: shorter would purge events before
/// a watcher that reconnects within a minute could resume from them.
pub const MIN_EVENT_RETENTION: Duration = Duration::from_secs(60);

/// The resolved configuration `run` takes.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the gRPC API listens on; default
    /// `127.0.0.1:8080` (`--listen`, `TOLLGATE_LISTEN`).
    pub listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz; default `127.0.0.1:9090`
    /// (`--admin-listen`, `TOLLGATE_ADMIN_LISTEN`).
    pub admin_listen: SocketAddr,
    /// Which database to use; default `sqlite://data/tollgate.db`
    /// (`--database-url`, `TOLLGATE_DATABASE_URL`).
    pub database_url: String,
    /// Most database connections held open at once; default 16
    /// (`--db-pool-size`, `TOLLGATE_DB_POOL_SIZE`).
    pub db_pool_size: usize,
    /// Size and lifetime of the in-process caches; default 10,000 entries
    /// for 30 s (`--cache-capacity`, `--cache-ttl-secs`).
    pub cache: CacheConfig,
    /// How log lines look; default `auto` (`--log-format`,
    /// `TOLLGATE_LOG_FORMAT`).
    pub log_format: LogFormat,
    /// Which log lines are written, in `RUST_LOG` syntax (which wins when
    /// set); default `info` (`--log-level`, `TOLLGATE_LOG_LEVEL`).
    pub log_level: String,
    /// Where the first start also writes the bootstrap admin key (mode
    /// 0600); by default it only goes to stderr (`--bootstrap-key-file`).
    pub bootstrap_key_file: Option<PathBuf>,
    /// How long in-flight calls may finish after shutdown begins; default
    /// 30 s (`--shutdown-grace-secs`).
    pub shutdown_grace: Duration,
    /// How often the database is probed for /readyz and gRPC health;
    /// default 2 s (`--health-interval-ms`).
    pub health_interval: Duration,
    /// Concurrent password hashes; `None` sizes the limit to the machine.
    pub max_concurrent_password_hashes: Option<usize>,
    /// Origins allowed to call from a browser (CORS); empty: CORS off
    /// (`--cors-allow-origin`, `TOLLGATE_CORS_ALLOW_ORIGIN`).
    pub cors_allow_origin: Vec<String>,
    /// The main listener's PEM certificate chain (`--tls-cert`); TLS needs
    /// it and `tls_key`, plaintext neither. Default: none (plaintext).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert` (`--tls-key`).
    pub tls_key: Option<PathBuf>,
    /// Whether the admin listener uses TLS too, with the same certificate;
    /// default false (`--admin-tls`).
    pub admin_tls: bool,
    /// The bounds on clients of both listeners: connections, streams,
    /// header and body sizes, timeouts (see [`Limits`] for each default).
    pub limits: Limits,
    /// The OAuth issuer: `iss` of every token, base of discovery; an
    /// absolute http(s) URL without a trailing slash. Default
    /// `http://<listen>` (`--issuer`, `TOLLGATE_ISSUER`).
    pub issuer: String,
    /// The key-encryption key file as set (`--key-encryption-key-file`);
    /// see [`Config::key_encryption_key_file`] for the default.
    pub key_encryption_key_file: Option<PathBuf>,
    /// Time between scheduled signing key rotations; `None`: on demand
    /// only. Default 30 days (`--signing-key-rotation-days`, 0 for never).
    pub signing_key_rotation: Option<Duration>,
    /// Failed sign-ins or client authentications allowed per account,
    /// client or source address within `throttle_window`; default 5. No
    /// flag: tests lower it.
    pub throttle_max_failures: u32,
    /// How long failures count, from the first; default 5 minutes. No
    /// flag: tests shorten it.
    pub throttle_window: Duration,
    /// Whether the rate-limit layer runs (`--rate-limiting`); default
    /// true.
    pub rate_limiting: bool,
    /// `--anonymous-rate-limit`, as given; see [`Config::rate_limit_defaults`].
    pub anonymous_rate_limit: String,
    /// `--principal-rate-limit`, as given.
    pub principal_rate_limit: String,
    /// In-process rate-limit counters kept at most.
    pub rate_limit_capacity: usize,
    /// How often usage counts are written to the database; default 10 s
    /// (`--usage-flush-interval`, `TOLLGATE_USAGE_FLUSH_INTERVAL`).
    pub usage_flush_interval: Duration,
    /// The Redis shared by every replica for rate limits
    /// (`--redis-url`, `TOLLGATE_REDIS_URL`); `None`: in-process limits.
    /// May hold a password: never log it as is.
    pub redis_url: Option<String>,
    /// How long a rate-limit decision waits for Redis; default 5 ms,
    /// at most 1 s (`--redis-timeout-ms`, `TOLLGATE_REDIS_TIMEOUT_MS`).
    pub redis_timeout: Duration,
    /// NATS JetStream for published events and cross-replica cache
    /// invalidation (`--nats-url`, `TOLLGATE_NATS_URL`); `None`: events
    /// stay in process. May hold credentials: never log it as is.
    pub nats_url: Option<String>,
    /// The stream; default `TOLLGATE_EVENTS` (`--nats-stream`).
    pub nats_stream: String,
    /// The stream's retention; default 7 days (`--nats-max-age`).
    pub nats_max_age: Duration,
    /// The stream's deduplication window; default 2 minutes
    /// (`--nats-duplicate-window`).
    pub nats_duplicate_window: Duration,
    /// The subjects' first tokens; default `tollgate.events`
    /// (`--nats-subject-prefix`).
    pub nats_subject_prefix: String,
    /// How long relayed events stay in the outbox (the audit log) before
    /// the retention task deletes them; `None`: for ever. Default 90 days,
    /// at least [`MIN_EVENT_RETENTION`] (`--event-retention`,
    /// `TOLLGATE_EVENT_RETENTION`).
    pub event_retention: Option<Duration>,
    /// Events a watcher may fall behind before it is ended
    /// (`--watch-buffer`); default 1024.
    pub watch_buffer: usize,
    /// How often a watch checks that its caller may still read; default
    /// [`crate::watch::RECHECK`]. Not a flag: tests shorten it.
    pub watch_recheck: Duration,
    /// `--roles` as given; see [`Config::roles`].
    pub roles: String,
    /// `--webhook-allow-loopback`.
    pub webhook_allow_loopback: bool,
    /// `--webhook-allow-networks` as given; see [`Config::webhook_targets`].
    pub webhook_allow_networks: String,
    /// `--webhook-timeout`.
    pub webhook_timeout: Duration,
    /// `--webhook-max-attempts`, 1 to 100.
    pub webhook_max_attempts: u32,
    /// `--job-lease`.
    pub job_lease: Duration,
    /// `--otlp-endpoint`; see [`crate::otel`] for the standard variables.
    pub otlp_endpoint: Option<String>,
    /// `--otlp-protocol`.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// `--trace-sample-ratio`.
    pub trace_sample_ratio: Option<f64>,
}

/// What a process does (`--roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Serves the API on `--listen`.
    pub api: bool,
    /// Runs background jobs.
    pub worker: bool,
}

/// The longest `--redis-timeout-ms`: a decision must never stall a call
/// for seconds.
const MAX_REDIS_TIMEOUT: Duration = Duration::from_secs(1);

const DAY_SECS: u64 = 24 * 60 * 60;

/// `http://<listen>`, or `https://` when the listener serves TLS.
fn default_issuer(listen: SocketAddr, tls: bool) -> String {
    format!("{}://{listen}", if tls { "https" } else { "http" })
}

/// Where the key-encryption key is read from, and whether Tollgate may
/// create it there when it is missing (the embedded default only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekFile {
    /// The file.
    pub path: PathBuf,
    /// Whether this is the SQLite default, created at first start.
    pub create_if_missing: bool,
}

impl Config {
    /// Start-up checks the types cannot express: limits in range, and
    /// TLS files given both or neither.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.limits.validate()?;
        self.roles()?;
        self.webhook_targets()?;
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&self.webhook_timeout)
        {
            anyhow::bail!(
                "--webhook-timeout {:?} must be between 100ms and 5 minutes",
                self.webhook_timeout
            );
        }
        if let Some(r) = self.trace_sample_ratio
            && !(0.0..=1.0).contains(&r)
        {
            anyhow::bail!("--trace-sample-ratio {r} must be between 0.0 and 1.0");
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.job_lease) {
            anyhow::bail!(
                "--job-lease {:?} must be between 1s and 1 hour",
                self.job_lease
            );
        }
        self.tls_files()?;
        check_issuer(&self.issuer)?;
        self.rate_limit_defaults()?;
        if !(Duration::from_millis(100)..=Duration::from_secs(3600))
            .contains(&self.usage_flush_interval)
        {
            anyhow::bail!(
                "--usage-flush-interval {:?} must be between 100ms and 1 hour",
                self.usage_flush_interval
            );
        }
        self.check_redis()?;
        self.check_nats()?;
        if let Some(retention) = self.event_retention
            && retention < MIN_EVENT_RETENTION
        {
            anyhow::bail!("--event-retention {retention:?} must be at least 1m, or off");
        }
        Ok(())
    }

    /// The roles `--roles` names: `api`, `worker`, or both.
    pub fn roles(&self) -> anyhow::Result<Roles> {
        let mut roles = Roles {
            api: false,
            worker: false,
        };
        for role in self
            .roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            match role {
                "api" => roles.api = true,
                "worker" => roles.worker = true,
                other => anyhow::bail!("--roles: unknown role '{other}'; expected api, worker"),
            }
        }
        if !roles.api && !roles.worker {
            anyhow::bail!("--roles names no role; expected api, worker or both");
        }
        Ok(roles)
    }

    /// Which addresses webhooks may target (`--webhook-allow-loopback`,
    /// `--webhook-allow-networks`).
    pub fn webhook_targets(&self) -> anyhow::Result<crate::domain::webhook::Targets> {
        let mut networks = Vec::new();
        for cidr in self
            .webhook_allow_networks
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            let net: ipnet::IpNet = cidr.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--webhook-allow-networks: '{cidr}' is not a CIDR network (e.g. 10.0.0.0/8)"
                )
            })?;
            networks.push(net.trunc());
        }
        Ok(crate::domain::webhook::Targets::new(
            self.webhook_allow_loopback,
            networks,
        ))
    }

    /// A NATS URL names its scheme; the stream name is one JetStream
    /// accepts; the duplicate window fits in the retention (JetStream
    /// refuses a longer one).
    fn check_nats(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.nats_url {
            let rest = ["nats://", "tls://"]
                .iter()
                .find_map(|scheme| url.strip_prefix(scheme));
            if rest.is_none_or(|rest| rest.is_empty()) {
                // The URL may hold credentials: it is not repeated.
                anyhow::bail!("--nats-url must be nats://[user:password@]host[:port] or tls://…");
            }
        }
        let name = &self.nats_stream;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            anyhow::bail!(
                "--nats-stream must be 1 to 64 characters of letters, digits, '_' or '-'"
            );
        }
        let prefix = &self.nats_subject_prefix;
        if prefix.is_empty()
            || prefix.len() > 128
            || prefix.split('.').any(|token| {
                token.is_empty()
                    || !token
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
        {
            anyhow::bail!(
                "--nats-subject-prefix must be dot-separated tokens of letters, digits, '_' or '-'"
            );
        }
        if self.nats_max_age.is_zero() || self.nats_duplicate_window.is_zero() {
            anyhow::bail!("--nats-max-age and --nats-duplicate-window must not be zero");
        }
        if self.nats_duplicate_window > self.nats_max_age {
            anyhow::bail!("--nats-duplicate-window must not exceed --nats-max-age");
        }
        Ok(())
    }

    /// A Redis URL names its scheme, and the timeout is a few
    /// milliseconds, not zero and not seconds.
    fn check_redis(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.redis_url {
            let rest = url
                .strip_prefix("redis://")
                .or_else(|| url.strip_prefix("rediss://"));
            if rest.is_none_or(|rest| rest.is_empty()) {
                // The URL may hold a password: it is not repeated.
                return Err(anyhow::anyhow!(
                    "--redis-url must be redis://[user:password@]host[:port][/db] \
                     or rediss://… for TLS"
                ));
            }
        }
        if self.redis_timeout.is_zero() || self.redis_timeout > MAX_REDIS_TIMEOUT {
            return Err(anyhow::anyhow!(
                "--redis-timeout-ms must be between 1 and {}",
                MAX_REDIS_TIMEOUT.as_millis()
            ));
        }
        Ok(())
    }

    /// The default limits, parsed from `--anonymous-rate-limit` and
    /// `--principal-rate-limit`.
    pub fn rate_limit_defaults(&self) -> anyhow::Result<crate::ratelimit::Defaults> {
        use crate::ratelimit::Limit;
        let parse = |flag: &str, value: &str| {
            Limit::parse_spec(value).map_err(|e| anyhow::anyhow!("--{flag} {value:?}: {e}"))
        };
        Ok(crate::ratelimit::Defaults {
            anonymous: parse("anonymous-rate-limit", &self.anonymous_rate_limit)?,
            principal: parse("principal-rate-limit", &self.principal_rate_limit)?,
        })
    }

    /// The key-encryption key file: the one set, or with SQLite `kek`
    /// beside the database file (created when missing); `None` with
    /// PostgreSQL and nothing set.
    pub fn key_encryption_key_file(&self) -> Option<KekFile> {
        if let Some(path) = &self.key_encryption_key_file {
            return Some(KekFile {
                path: path.clone(),
                create_if_missing: false,
            });
        }
        match crate::store::Target::parse(&self.database_url) {
            Ok(crate::store::Target::Sqlite(db)) => Some(KekFile {
                path: db
                    .parent()
                    .map(|d| d.join("kek"))
                    .unwrap_or_else(|| PathBuf::from("kek")),
                create_if_missing: true,
            }),
            _ => None,
        }
    }

    /// The certificate and key paths when TLS is on; an error when only
    /// one of them is set, or when `--admin-tls` has no certificate.
    pub fn tls_files(&self) -> anyhow::Result<Option<(&std::path::Path, &std::path::Path)>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) if self.admin_tls => Err(anyhow::anyhow!(
                "--admin-tls needs a certificate: set --tls-cert and --tls-key"
            )),
            (None, None) => Ok(None),
            (Some(_), None) => Err(anyhow::anyhow!(
                "--tls-cert is set but --tls-key is not: TLS needs both (plaintext neither)"
            )),
            (None, Some(_)) => Err(anyhow::anyhow!(
                "--tls-key is set but --tls-cert is not: TLS needs both (plaintext neither)"
            )),
        }
    }
}

/// An issuer is an absolute `http` or `https` URL with a host and no
/// query or fragment (RFC 8414 section 2).
fn check_issuer(issuer: &str) -> anyhow::Result<()> {
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"));
    let ok = rest.is_some_and(|rest| {
        let host = rest.split('/').next().unwrap_or_default();
        !host.is_empty()
            && !host.contains('@')
            && !rest.contains(['?', '#'])
            && !rest.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "--issuer '{issuer}' must be an absolute http:// or https:// URL with a host \
             and without query or fragment, e.g. https://auth.example.com"
        ))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            database_url: "sqlite://data/tollgate.db".into(),
            db_pool_size: 16,
            cache: CacheConfig::default(),
            log_format: LogFormat::Auto,
            log_level: "info".into(),
            bootstrap_key_file: None,
            shutdown_grace: Duration::from_secs(30),
            health_interval: Duration::from_secs(2),
            max_concurrent_password_hashes: None,
            cors_allow_origin: Vec::new(),
            tls_cert: None,
            tls_key: None,
            admin_tls: false,
            limits: Limits::default(),
            issuer: default_issuer(SocketAddr::from(([127, 0, 0, 1], 8080)), false),
            key_encryption_key_file: None,
            signing_key_rotation: Some(Duration::from_secs(30 * DAY_SECS)),
            throttle_max_failures: crate::oauth::throttle::MAX_FAILURES,
            throttle_window: crate::oauth::throttle::WINDOW,
            rate_limiting: true,
            anonymous_rate_limit: "100/s,burst=200".into(),
            principal_rate_limit: "off".into(),
            rate_limit_capacity: 1_000_000,
            usage_flush_interval: Duration::from_secs(10),
            redis_url: None,
            redis_timeout: crate::ratelimit::redis::DEFAULT_TIMEOUT,
            nats_url: None,
            nats_stream: "TOLLGATE_EVENTS".to_owned(),
            nats_max_age: Duration::from_secs(7 * DAY_SECS),
            nats_duplicate_window: Duration::from_secs(120),
            nats_subject_prefix: "tollgate.events".to_owned(),
            event_retention: Some(Duration::from_secs(90 * DAY_SECS)),
            watch_buffer: crate::bus::Bus::CAPACITY,
            roles: "api,worker".into(),
            watch_recheck: crate::watch::RECHECK,
            webhook_allow_loopback: false,
            webhook_allow_networks: String::new(),
            webhook_timeout: Duration::from_secs(10),
            webhook_max_attempts: 8,
            job_lease: Duration::from_secs(30),
            otlp_endpoint: None,
            otlp_protocol: None,
            trace_sample_ratio: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_api_worker_or_both() {
        let roles = |r: &str| {
            Config {
                roles: r.into(),
                ..Config::default()
            }
            .roles()
        };
        let both = roles("api,worker").unwrap();
        assert!(both.api && both.worker);
        assert_eq!(Config::default().roles().unwrap(), both);
        let api = roles("api").unwrap();
        assert!(api.api && !api.worker);
        let worker = roles(" worker ").unwrap();
        assert!(!worker.api && worker.worker);
        for bad in ["", ",", "api,cron", "API"] {
            assert!(roles(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_beat_file_beats_defaults() {
        let cli = Cli::try_parse_from(["tollgate", "serve", "--listen", "127.0.0.1:7000"]).unwrap();
        let Some(Command::Serve(flags)) = cli.command else {
            panic!("not serve")
        };
        let file: Settings = toml::from_str(
            "listen = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:7001\"\ncache_ttl_secs = 5",
        )
        .unwrap();
        let c = flags.or(file).resolve();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.admin_listen.port(), 7001);
        assert_eq!(c.cache.ttl, Duration::from_secs(5));
        assert_eq!(c.database_url, "sqlite://data/tollgate.db");
    }

    #[test]
    fn serve_is_the_default_command() {
        let cli = Cli::try_parse_from(["tollgate", "--listen", "127.0.0.1:7002"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.resolve().listen.port(), 7002);
    }

    #[test]
    fn the_example_config_parses() {
        let s: Settings =
            toml::from_str(include_str!("../../deploy/tollgate.example.toml")).unwrap();
        let c = s.resolve();
        assert_eq!(c.admin_listen.port(), 9090);
        // It spells out the defaults.
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.redis_timeout, Config::default().redis_timeout);
        assert_eq!(c.event_retention, Config::default().event_retention);
        assert_eq!(c.watch_buffer, Config::default().watch_buffer);
        assert_eq!(c.roles, Config::default().roles);
    }

    #[test]
    fn limits_come_from_flags_and_file_and_zero_turns_a_timeout_off() {
        let cli = Cli::try_parse_from([
            "tollgate",
            "--max-connections",
            "20",
            "--request-timeout-secs",
            "0",
            "--admin-tls",
        ])
        .unwrap();
        let file: Settings = toml::from_str(
            "max_connections = 5\nidle_timeout_secs = 7\nmax_concurrent_streams = 8\n\
             handshake_timeout_secs = 3",
        )
        .unwrap();
        let c = cli.serve.or(file).resolve();
        assert_eq!(c.limits.max_connections, 20, "the flag wins");
        assert_eq!(c.limits.max_concurrent_streams, 8);
        assert_eq!(c.limits.idle_timeout, Some(Duration::from_secs(7)));
        assert_eq!(c.limits.handshake_timeout, Duration::from_secs(3));
        assert_eq!(c.limits.request_timeout, None);
        assert!(c.admin_tls);
        assert_eq!(
            Settings::default().resolve().limits,
            Limits::default(),
            "no setting, the documented defaults"
        );
    }

    #[test]
    fn tls_needs_both_files_or_neither() {
        let with = |cert: Option<&str>, key: Option<&str>, admin_tls: bool| Config {
            tls_cert: cert.map(PathBuf::from),
            tls_key: key.map(PathBuf::from),
            admin_tls,
            ..Config::default()
        };
        assert!(with(None, None, false).validate().is_ok());
        assert!(with(Some("c.pem"), Some("k.pem"), true).validate().is_ok());
        for (config, flag) in [
            (with(Some("c.pem"), None, false), "--tls-key"),
            (with(None, Some("k.pem"), false), "--tls-cert"),
            (with(None, None, true), "--admin-tls"),
        ] {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn oauth_settings_resolve_with_defaults() {
        let c = Cli::try_parse_from(["tollgate", "--listen", "127.0.0.1:7003"])
            .unwrap()
            .serve
            .resolve();
        assert_eq!(c.issuer, "http://127.0.0.1:7003");
        assert_eq!(
            c.signing_key_rotation,
            Some(Duration::from_secs(30 * DAY_SECS))
        );
        assert_eq!(
            c.key_encryption_key_file(),
            Some(KekFile {
                path: PathBuf::from("data/kek"),
                create_if_missing: true
            })
        );
        let file: Settings = toml::from_str(
            "issuer = \"https://auth.example.com/\"\nsigning_key_rotation_days = 0\n\
             database_url = \"postgres://db/x\"",
        )
        .unwrap();
        let c = Settings::default().or(file).resolve();
        assert_eq!(
            c.issuer, "https://auth.example.com",
            "trailing slash stripped"
        );
        assert_eq!(c.signing_key_rotation, None, "0: never on schedule");
        assert_eq!(
            c.key_encryption_key_file(),
            None,
            "no default with PostgreSQL"
        );
        let c = Cli::try_parse_from(["tollgate", "--key-encryption-key-file", "/k"])
            .unwrap()
            .serve
            .resolve();
        assert_eq!(
            c.key_encryption_key_file().map(|k| k.create_if_missing),
            Some(false),
            "a file that is set is never created"
        );
    }

    #[test]
    fn the_issuer_must_be_an_absolute_http_url() {
        let with = |issuer: &str| Config {
            issuer: issuer.into(),
            ..Config::default()
        };
        for good in ["http://127.0.0.1:8080", "https://auth.example.com/tenant"] {
            assert!(with(good).validate().is_ok(), "{good}");
        }
        for bad in [
            "auth.example.com",
            "ftp://auth.example.com",
            "https://",
            "https://a.example.com/?x=1",
            "https://a.example.com/#f",
            "https://user@a.example.com",
        ] {
            let e = with(bad).validate().unwrap_err().to_string();
            assert!(e.contains("--issuer"), "{bad}: {e}");
        }
    }

    #[test]
    fn usage_flush_interval_takes_a_unit() {
        assert_eq!(
            Settings::default().resolve().usage_flush_interval,
            Duration::from_secs(10)
        );
        for (written, want) in [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("15", Duration::from_secs(15)),
        ] {
            let c = Cli::try_parse_from(["tollgate", "--usage-flush-interval", written])
                .unwrap()
                .serve
                .resolve();
            assert_eq!(c.usage_flush_interval, want, "{written}");
        }
        assert!(Cli::try_parse_from(["tollgate", "--usage-flush-interval", "soon"]).is_err());
        let file: Settings = toml::from_str("usage_flush_interval = 30").unwrap();
        assert_eq!(file.resolve().usage_flush_interval, Duration::from_secs(30));
        let file: Settings = toml::from_str("usage_flush_interval = \"250ms\"").unwrap();
        assert_eq!(
            file.resolve().usage_flush_interval,
            Duration::from_millis(250)
        );
        for bad in [
            Duration::ZERO,
            Duration::from_millis(99),
            Duration::from_secs(3601),
        ] {
            let c = Config {
                usage_flush_interval: bad,
                ..Config::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("--usage-flush-interval"), "{e}");
        }
    }

    #[test]
    fn nats_settings_resolve_and_are_checked() {
        let c = Settings::default().resolve();
        assert_eq!(c.nats_url, None);
        assert_eq!(c.nats_stream, "TOLLGATE_EVENTS");
        assert_eq!(c.nats_max_age, Duration::from_secs(7 * DAY_SECS));
        assert_eq!(c.nats_duplicate_window, Duration::from_secs(120));
        let c = Cli::try_parse_from([
            "tollgate",
            "--nats-url",
            "nats://127.0.0.1:4222",
            "--nats-stream",
            "EV_1",
            "--nats-max-age",
            "12h",
            "--nats-duplicate-window",
            "30s",
        ])
        .unwrap()
        .serve
        .resolve();
        assert_eq!(c.nats_url.as_deref(), Some("nats://127.0.0.1:4222"));
        assert_eq!(c.nats_stream, "EV_1");
        assert_eq!(c.nats_max_age, Duration::from_secs(12 * 3600));
        assert_eq!(c.nats_duplicate_window, Duration::from_secs(30));
        assert!(c.validate().is_ok());
        let file: Settings =
            toml::from_str("nats_url = \"tls://nats.internal\"\nnats_max_age = \"1d\"").unwrap();
        let c = Settings::default().or(file).resolve();
        assert_eq!(c.nats_url.as_deref(), Some("tls://nats.internal"));
        assert_eq!(c.nats_max_age, Duration::from_secs(DAY_SECS));
        for (config, flag) in [
            (
                Config {
                    nats_url: Some("http://u:secret@nats".into()),
                    ..Config::default()
                },
                "--nats-url",
            ),
            (
                Config {
                    nats_stream: "a.b".into(),
                    ..Config::default()
                },
                "--nats-stream",
            ),
            (
                Config {
                    nats_subject_prefix: "tollgate.>".into(),
                    ..Config::default()
                },
                "--nats-subject-prefix",
            ),
            (
                Config {
                    nats_duplicate_window: Duration::from_secs(8 * DAY_SECS),
                    ..Config::default()
                },
                "--nats-duplicate-window",
            ),
        ] {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn redis_settings_resolve_and_are_checked() {
        let c = Settings::default().resolve();
        assert_eq!(c.redis_url, None);
        assert_eq!(c.redis_timeout, Duration::from_millis(5));
        let c = Cli::try_parse_from([
            "tollgate",
            "--redis-url",
            "redis://:secret@127.0.0.1:6379/2",
            "--redis-timeout-ms",
            "20",
        ])
        .unwrap()
        .serve
        .resolve();
        assert_eq!(
            c.redis_url.as_deref(),
            Some("redis://:secret@127.0.0.1:6379/2")
        );
        assert_eq!(c.redis_timeout, Duration::from_millis(20));
        assert!(c.validate().is_ok());
        let file: Settings =
            toml::from_str("redis_url = \"rediss://cache.internal\"\nredis_timeout_ms = 3")
                .unwrap();
        let c = Settings::default().or(file).resolve();
        assert_eq!(c.redis_url.as_deref(), Some("rediss://cache.internal"));
        assert_eq!(c.redis_timeout, Duration::from_millis(3));
        assert!(c.validate().is_ok());

        let with = |url: Option<&str>, ms: u64| Config {
            redis_url: url.map(str::to_owned),
            redis_timeout: Duration::from_millis(ms),
            ..Config::default()
        };
        for (config, flag) in [
            (with(Some("http://:secret@cache:6379"), 5), "--redis-url"),
            (with(Some("cache.internal:6379"), 5), "--redis-url"),
            (with(Some("redis://"), 5), "--redis-url"),
            (with(None, 0), "--redis-timeout-ms"),
            (with(None, 1001), "--redis-timeout-ms"),
        ] {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
            assert!(!e.contains("secret"), "the password is not repeated: {e}");
        }
    }

    #[test]
    fn event_retention_takes_a_duration_or_off() {
        assert_eq!(
            Settings::default().resolve().event_retention,
            Some(Duration::from_secs(90 * DAY_SECS)),
            "90 days by default"
        );
        for (written, want) in [
            ("90d", Some(Duration::from_secs(90 * DAY_SECS))),
            ("12h", Some(Duration::from_secs(12 * 3600))),
            ("30m", Some(Duration::from_secs(30 * 60))),
            ("off", None),
            ("OFF", None),
        ] {
            let c = Cli::try_parse_from(["tollgate", "--event-retention", written])
                .unwrap()
                .serve
                .resolve();
            assert_eq!(c.event_retention, want, "{written}");
            assert!(c.validate().is_ok(), "{written}");
        }
        for bad in ["never", "90 days", "-1d", ""] {
            assert!(
                Cli::try_parse_from(["tollgate", "--event-retention", bad]).is_err(),
                "{bad}"
            );
        }
        let file: Settings = toml::from_str("event_retention = \"7d\"").unwrap();
        assert_eq!(
            file.resolve().event_retention,
            Some(Duration::from_secs(7 * DAY_SECS))
        );
        let file: Settings = toml::from_str("event_retention = \"off\"").unwrap();
        assert_eq!(file.resolve().event_retention, None);
        let flag = Cli::try_parse_from(["tollgate", "--event-retention", "1d"])
            .unwrap()
            .serve;
        let file: Settings = toml::from_str("event_retention = \"off\"").unwrap();
        assert_eq!(
            flag.or(file).resolve().event_retention,
            Some(Duration::from_secs(DAY_SECS)),
            "the flag wins over the file"
        );
        for short in ["59s", "0", "0d"] {
            let c = Cli::try_parse_from(["tollgate", "--event-retention", short])
                .unwrap()
                .serve
                .resolve();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("--event-retention"), "{short}: {e}");
        }
        assert!(
            Cli::try_parse_from(["tollgate", "--event-retention", "1m"])
                .unwrap()
                .serve
                .resolve()
                .validate()
                .is_ok(),
            "1m is the minimum"
        );
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<Settings>("lisen = \"x\"").is_err());
    }
}
