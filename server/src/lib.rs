//! Tollgate's server: the access layer for gRPC microservices.
//!
//! Module map, in request order:
//! - [`listener`]: the accept loop both listeners run (HTTP/1.1 and HTTP/2
//!   on one port, TLS), bounded by [`listener::Limits`].
//! - [`http`]: the front door ([`http::Front`]) telling gRPC, gRPC-Web,
//!   Connect and HTTP/JSON apart, and everything that turns the HTTP
//!   protocols into in-process gRPC calls; `/openapi.json`.
//! - [`layers`]: tower layers every call passes: `trace`, `authenticate`,
//!   `authorize`.
//! - [`api`]: one module per proto service; `api::error` maps errors to
//!   gRPC statuses.
//! - [`domain`]: names, validation, roles, filters, page tokens, key format.
//! - [`store`]: diesel repositories over SQLite or PostgreSQL, moka caches,
//!   the outbox.
//! - [`events`]: the typed event every write appends, and the write
//!   context (actor, request id) it carries.
//! - [`relay`]: the one relay across replicas that publishes the outbox
//!   (to NATS JetStream, or in process), and every replica's delivery;
//!   [`bus`]: the in-process hub of relayed events; [`retention`]: the
//!   purge of old relayed events.
//! - [`policy`]: method policies read from the proto options.
//! - [`usage`]: per-minute usage counters, counted in memory on every
//!   permitted call and flushed to the store in batches.
//! - [`components`]: the long-running parts `run` composes (main listener,
//!   admin listener), each stopping on the shutdown token.
//! - [`admin`], [`health`], [`bootstrap`], [`config`], [`telemetry`].
//! - [`shutdown`]: the Ctrl-C / SIGTERM future shared by the binary and
//!   the benchmark.
//!
//! [`prepare`] opens storage and bootstraps; [`app`] builds the served stack
//! as a value (every protocol, each ending in the gRPC routes behind trace →
//! authenticate → authorize); [`run`]
//! serves it until shutdown. The binary and the end-to-end tests call the
//! same functions.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod bootstrap;
pub mod bus;
pub mod clock;
pub mod components;
pub mod config;
pub mod domain;
pub mod envoy;
pub mod events;
pub mod health;
pub mod http;
pub mod layers;
pub mod listener;
pub mod oauth;
pub mod otel;
pub mod policy;
pub mod process;
pub mod ratelimit;
pub mod relay;
pub mod retention;
pub mod security;
pub mod services;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod upkeep;
pub mod usage;
mod wake;
pub mod watch;
pub mod webhooks;
pub mod worker;

use std::{
    future::Future,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tollgate::tollgate::v1::{
    api_key_service_server::ApiKeyServiceServer,
    authorization_service_server::AuthorizationServiceServer,
    organization_service_server::OrganizationServiceServer,
    service_account_service_server::ServiceAccountServiceServer,
    user_service_server::UserServiceServer,
};
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

pub use config::Config;
use domain::api_key::SecretKey;
use policy::Policies;
use store::{Db, Store, Target};

/// Storage opened, migrated and bootstrapped; ready to [`run`].
pub struct App {
    /// The resolved configuration.
    pub config: Config,
    /// The repositories and their caches.
    pub store: Store,
    /// Every served method's policy. Tests may replace it before [`run`]
    /// to prove that the proto option is what is enforced.
    pub policies: Arc<Policies>,
    /// The admin key, when this start created it.
    pub bootstrap_key: Option<SecretKey>,
    /// Services served beside Tollgate's own (tests); `None` in the binary.
    pub extra: Option<http::Extra>,
    /// The TLS certificate, loaded at start-up when `--tls-cert` is set.
    pub tls: Option<listener::Tls>,
    /// The main listener's live counts (connections, requests in flight),
    /// which tests read to see the bounds work.
    pub listener_stats: Arc<listener::Stats>,
    /// The signing keys of the tokens Tollgate issues and verifies.
    pub keys: oauth::keys::KeyRing,
    /// Resolves API keys and access tokens, for the authenticate layer and
    /// the services that take a credential as data; one per server, so its
    /// verified-token cache is shared.
    pub credentials: layers::authenticate::Credentials,
    /// The OAuth provider: grants, introspection, revocation.
    pub provider: oauth::provider::Provider,
    /// Runs password hashes and verifications (SetPassword, the sign-in
    /// page) under one limit, so together they cannot exhaust memory.
    pub hasher: domain::password::Hasher,
    /// Decides every call's rate limits and quotas.
    pub limiter: ratelimit::RateLimiter,
    /// This replica's usage counters: every permitted call is counted, and
    /// [`run`] flushes them to the store (tests flush with
    /// [`usage::Usage::flush_now`]).
    pub usage: usage::Usage,
    /// This replica's hub of relayed events.
    pub bus: bus::Bus,
    /// Whether this replica's relay leads (tests read it; `/metrics` shows
    /// it as `tollgate_relay_leader`).
    pub relay: relay::Status,
    /// The NATS connection, when `--nats-url` is set.
    pub nats: Option<relay::Nats>,
}

/// Checks the configuration, loads the TLS certificate, reads policies,
/// opens the database, runs migrations and bootstraps. Fails, naming the
/// culprit, on a bad setting or certificate, a method without a policy or
/// an unreachable database.
pub async fn prepare(config: Config) -> anyhow::Result<App> {
    config.validate()?;
    oauth::keys::KeyRing::seed_random();
    // The metrics recorder first: handles registered before it exists
    // (the caches', the pool's) would count into nothing for good.
    admin::prometheus();
    otel::install(&config).context("setting up trace export")?;
    let tls = match config.tls_files()? {
        Some((cert, key)) => {
            Some(listener::Tls::load(cert, key).context("loading the TLS certificate")?)
        }
        None => None,
    };
    let policies = Arc::new(Policies::from_pool(http::descriptors())?);
    let store = open_store(&config).await?;
    let bootstrap_key = bootstrap::ensure_root(&store)
        .await
        .context("bootstrap of the root organization")?;
    if let Some(key) = &bootstrap_key {
        bootstrap::announce(key, config.bootstrap_key_file.as_deref())
            .context("writing the bootstrap key file")?;
    }
    let keys = oauth::keys::KeyRing::open(&store, &config)
        .await
        .context("loading the signing keys")?;
    let credentials =
        layers::authenticate::Credentials::new(store.clone()).with_access_tokens(Arc::new(
            oauth::verifier::AccessTokens::new(keys.clone(), config.issuer.clone()),
        ));
    let provider = oauth::provider::Provider::new(
        store.clone(),
        keys.clone(),
        config.issuer.clone(),
        credentials.clone(),
        oauth::throttle::Throttle::new(config.throttle_max_failures, config.throttle_window),
    );
    let hasher = domain::password::Hasher::new(
        config
            .max_concurrent_password_hashes
            .unwrap_or_else(domain::password::Hasher::default_limit),
        domain::password::PERMIT_WAIT,
    );
    let redis = match &config.redis_url {
        Some(url) => Some(
            ratelimit::RedisLimiter::connect(url, config.redis_timeout)
                .context("the Redis rate limiter")?,
        ),
        None => None,
    };
    let limiter = ratelimit::RateLimiter::new(
        config.rate_limit_defaults()?,
        config.rate_limit_capacity,
        redis,
    );
    ratelimit::reload::load(&limiter, &store)
        .await
        .context("loading the rate-limit policies")?;
    let bus = bus::Bus::new(config.watch_buffer);
    let nats = relay::Nats::connect(&config, &store, &bus).await?;
    Ok(App {
        bus,
        relay: relay::Status::default(),
        nats,
        limiter,
        credentials,
        provider,
        config,
        store,
        policies,
        bootstrap_key,
        extra: None,
        tls,
        listener_stats: Arc::default(),
        keys,
        hasher,
        usage: usage::Usage::new(),
    })
}

/// Opens and migrates the database of `config`.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let target = Target::parse(&config.database_url).map_err(anyhow::Error::msg)?;
    let redacted = target.redacted();
    let db = Db::new(target, config.db_pool_size, Duration::from_secs(5))?;
    let applied = db
        .migrate()
        .await
        .with_context(|| format!("opening and migrating {redacted}"))?;
    tracing::info!(database = %redacted, applied, "database ready");
    Ok(Store::new(db, config.cache.clone()))
}

/// The layers every request to the main listener passes, outermost first.
pub type Layers = Stack<
    layers::RateLimitLayer,
    Stack<
        layers::AuthorizeLayer,
        Stack<layers::AuthenticateLayer, Stack<layers::TraceLayer, Identity>>,
    >,
>;

/// Every gRPC service Tollgate serves (and `app.extra`'s), unlayered, with
/// the health service `health` publishes to.
pub fn grpc_routes(app: &App) -> anyhow::Result<(services::Services, HealthReporter)> {
    use tonic::server::NamedService;
    fn named<S: NamedService>(_: &S) -> String {
        S::NAME.to_owned()
    }
    let (reporter, health_service) = tonic_health::server::health_reporter();
    // Both versions describe the same files: Tollgate's and health's.
    fn reflection() -> tonic_reflection::server::Builder<'static> {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tollgate::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    }
    let reflection_v1 = services::Lazy::new(|| {
        reflection()
            .build_v1()
            .map(services::Services::boxed)
            .map_err(|e| e.to_string())
    });
    let reflection_v1alpha = services::Lazy::new(|| {
        reflection()
            .build_v1alpha()
            .map(services::Services::boxed)
            .map_err(|e| e.to_string())
    });
    let mut others = vec![
        (
            named(&health_service),
            services::Services::boxed(health_service),
        ),
        (
            tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME.to_owned(),
            services::Services::boxed(reflection_v1),
        ),
        (
            tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME.to_owned(),
            services::Services::boxed(reflection_v1alpha),
        ),
    ];
    let oauth_clients =
        tollgate::tollgate::v1::o_auth_client_service_server::OAuthClientServiceServer::new(
            api::oauth_clients::OAuthClients::new(app.store.clone()),
        );
    others.push((
        named(&oauth_clients),
        services::Services::boxed(oauth_clients),
    ));
    let rate_limit_policies =
        tollgate::tollgate::v1::rate_limit_policy_service_server::RateLimitPolicyServiceServer::new(
            api::rate_limit_policies::RateLimitPolicies::new(
                app.store.clone(),
                app.limiter.clone(),
                app.policies.paths(),
            ),
        );
    others.push((
        named(&rate_limit_policies),
        services::Services::boxed(rate_limit_policies),
    ));
    let webhooks = tollgate::tollgate::v1::webhook_service_server::WebhookServiceServer::new(
        api::webhooks::Webhooks::new(
            app.store.clone(),
            app.keys.clone(),
            app.config.webhook_targets()?,
        ),
    );
    others.push((named(&webhooks), services::Services::boxed(webhooks)));
    if let Some(extra) = &app.extra {
        for name in &extra.services {
            others.push((
                name.clone(),
                services::Services::boxed(extra.router.clone()),
            ));
        }
    }
    let store = &app.store;
    let authorization = AuthorizationServiceServer::new(api::authorization::Authorization::new(
        app.credentials.clone(),
    ));
    others.push((
        named(&authorization),
        services::Services::boxed(authorization),
    ));
    let tokens = tollgate::tollgate::v1::token_service_server::TokenServiceServer::new(
        api::tokens::Tokens::new(
            app.provider.clone(),
            api::signing_keys::SigningKeys::new(store.clone(), app.keys.clone()),
        ),
    );
    others.push((named(&tokens), services::Services::boxed(tokens)));
    let rate_limits =
        tollgate::tollgate::v1::rate_limit_service_server::RateLimitServiceServer::new(
            api::rate_limits::RateLimits::new(app.limiter.clone()),
        );
    others.push((named(&rate_limits), services::Services::boxed(rate_limits)));
    let ext_authz =
        tollgate::envoy::service::auth::v3::authorization_server::AuthorizationServer::new(
            envoy::ext_authz::ExtAuthz::new(
                app.credentials.clone(),
                app.policies.clone(),
                app.limiter.clone(),
            ),
        );
    others.push((named(&ext_authz), services::Services::boxed(ext_authz)));
    let rls = tollgate::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer::new(
        envoy::rls::Rls::new(app.limiter.clone()),
    );
    others.push((named(&rls), services::Services::boxed(rls)));
    let events = tollgate::tollgate::v1::event_service_server::EventServiceServer::new(
        api::events::Events::new(
            store.clone(),
            app.bus.clone(),
            app.credentials.clone(),
            app.config.watch_recheck,
        ),
    );
    others.push((named(&events), services::Services::boxed(events)));
    let usage = tollgate::tollgate::v1::usage_service_server::UsageServiceServer::new(
        api::usage::UsageReader::new(store.clone()),
    );
    others.push((named(&usage), services::Services::boxed(usage)));
    let services = services::Services::new(
        OrganizationServiceServer::new(api::organizations::Organizations::new(store.clone())),
        UserServiceServer::new(api::users::Users::new(store.clone(), app.hasher.clone())),
        ServiceAccountServiceServer::new(api::service_accounts::ServiceAccounts::new(
            store.clone(),
        )),
        ApiKeyServiceServer::new(api::api_keys::ApiKeys::new(store.clone())),
        others,
    );
    Ok((services, reporter))
}

/// The gRPC services behind [`layers`]: what every protocol ends in.
pub type GrpcService = layers::trace::Trace<
    layers::authenticate::Authenticate<
        layers::authorize::Authorize<layers::rate_limit::RateLimit<services::Services>>,
    >,
>;

/// trace → authenticate → authorize → rate limit, over `app`'s store,
/// policies and limiter.
pub fn layers(app: &App) -> Layers {
    // The recorder must exist before the metric handles are made, or they
    // bind to the no-op recorder.
    admin::prometheus();
    let metrics = Arc::new(layers::RpcMetrics::new(app.policies.paths()));
    tower::ServiceBuilder::new()
        .layer(layers::TraceLayer::new(metrics))
        .layer(layers::AuthenticateLayer::new(app.credentials.clone()))
        .layer(layers::AuthorizeLayer::new(app.policies.clone()))
        .layer(
            layers::RateLimitLayer::new(
                app.limiter.clone(),
                app.policies.clone(),
                app.usage.clone(),
            )
            .enabled(app.config.rate_limiting),
        )
        .into_inner()
}

/// The main listener's service: every protocol on one port
/// ([`http::Front`]), each ending in the gRPC routes behind [`layers`].
/// Also returns the health reporter the health component publishes to.
pub fn app(app: &App) -> anyhow::Result<(http::Served, HealthReporter)> {
    let (services, health) = grpc_routes(app)?;
    let mut pool = http::descriptors().clone();
    let mut transcoded: Vec<String> = pool
        .services()
        .filter(|s| s.package_name() == policy::PACKAGE)
        .map(|s| s.full_name().to_owned())
        .collect();
    if let Some(extra) = &app.extra {
        pool.decode_file_descriptor_set(extra.file_descriptor_set)
            .context("the extra services' descriptors")?;
        transcoded.extend(extra.services.iter().cloned());
    }
    let grpc: GrpcService = tower_layer::Layer::layer(&layers(app), services);
    let bridge = http::bridge::Grpc::new(
        grpc.clone(),
        app.config.limits.max_body_bytes,
        app.policies.clone(),
    );
    let connect = http::connect::Connect::new(
        &pool,
        http::served_services(&pool).iter().map(String::as_str),
        bridge.clone(),
    );
    let services: Vec<_> = transcoded
        .iter()
        .filter_map(|name| pool.get_service_by_name(name))
        .collect();
    let transcoder = Arc::new(
        http::transcode::Transcoder::new(&pool, &services).context("compiling the HTTP routes")?,
    );
    let openapi = http::openapi::Served::new(pool.clone(), transcoder.clone());
    let gateway = http::gateway::Gateway::new(transcoder, bridge);
    let oauth = oauth::endpoints::router(
        app.provider.clone(),
        app.credentials.clone(),
        oauth::authorize::router(app.provider.clone(), app.hasher.clone()),
    );
    let front = http::Front::new(grpc, connect, gateway, openapi, oauth);
    let served = match http::cors::layer(&app.config.cors_allow_origin)? {
        Some(cors) => tower::util::Either::Left(http::WithCors::new(&cors, front)),
        None => tower::util::Either::Right(front),
    };
    Ok((served, health))
}

/// Serves [`app`] on `listener` (with the `api` role; a worker-only
/// process may give none) and the admin endpoints on `admin`, runs the
/// background jobs with the `worker` role, until `shutdown` completes;
/// then drains in-flight calls and running jobs for at most
/// `config.shutdown_grace` each.
pub async fn run(
    app: App,
    listener: impl Into<Option<TcpListener>>,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
    }
    let (router, reporter) = self::app(&app)?;
    let App {
        config,
        store,
        policies,
        tls,
        listener_stats,
        keys,
        credentials,
        limiter,
        usage,
        bus,
        relay: relay_status,
        nats,
        ..
    } = app;
    let subscriber_task = nats.clone().map(|nats| {
        tokio::spawn(relay::subscribe(
            nats,
            store.clone(),
            bus.clone(),
            token.clone(),
        ))
    });
    {
        // Watchers end (with their cursors) when the server stops, rather
        // than holding the listener's drain open.
        let (bus, token) = (bus.clone(), token.clone());
        tokio::spawn(async move {
            token.cancelled().await;
            bus.close();
        });
    }
    process::publish();
    let pool_task = tokio::spawn(store.db.clone().publish_pool_metrics(token.clone()));
    let relay_task =
        tokio::spawn(relay::Relay::new(store.clone(), bus, nats, relay_status).run(token.clone()));
    let roles = config.roles()?;
    // The worker role: upkeep as jobs (and, later, webhook deliveries).
    // Its own token, cancelled once the listener drained, so jobs that a
    // call's last moments enqueued are still claimed; the grace bounds
    // the jobs still running then.
    let worker_token = CancellationToken::new();
    let mut worker_health = None;
    let worker_tasks = if roles.worker {
        let worker = upkeep::handlers(
            worker::Worker::new(store.clone(), worker::Worker::process_owner())
                .lease(config.job_lease),
            &store,
            config.event_retention,
            &keys,
            config.signing_key_rotation,
        );
        let worker = webhooks::pump::Pump::new(
            store.clone(),
            keys.clone(),
            webhooks::sender::Sender::new(config.webhook_targets()?, config.webhook_timeout)?,
            config.webhook_max_attempts,
        )
        .register(worker);
        worker_health = Some(worker.health());
        vec![
            tokio::spawn(worker.run(worker_token.clone(), config.shutdown_grace)),
            tokio::spawn(upkeep::schedule(
                store.clone(),
                config.event_retention,
                config.signing_key_rotation,
                worker_token.clone(),
            )),
            tokio::spawn(upkeep::gauges(store.clone(), worker_token.clone())),
        ]
    } else {
        Vec::new()
    };
    // Its own token, cancelled once the listener drained: the calls that
    // finish during the drain are counted in the last flush.
    let usage_token = CancellationToken::new();
    let usage_task = tokio::spawn(usage.run_flusher(
        store.clone(),
        config.usage_flush_interval,
        usage_token.clone(),
    ));
    let revocations_task = tokio::spawn(credentials.poll_revocations(token.clone()));
    let limits_task = tokio::spawn(ratelimit::reload::run(
        limiter,
        store.clone(),
        token.clone(),
    ));
    let reload_task = tls
        .clone()
        .map(|tls| tokio::spawn(tls.watch(listener::tls::RELOAD_INTERVAL, token.clone())));

    let ready = Arc::new(AtomicBool::new(false));
    let health_task = tokio::spawn(health::watch(
        store.db.clone(),
        reporter,
        policies.services().to_vec(),
        ready.clone(),
        config.health_interval,
        token.clone(),
    ));
    let admin_addr = admin.local_addr()?;
    let admin_listener = listener::Listener {
        name: "admin",
        limits: config.limits.clone(),
        tls: tls
            .as_ref()
            .filter(|_| config.admin_tls)
            .map(listener::Tls::acceptor),
        grace: config.shutdown_grace,
        stats: Arc::default(),
    };
    let admin_task = tokio::spawn(components::admin(
        admin_listener,
        admin,
        admin::Readiness {
            database: ready,
            worker: worker_health,
        },
        token.clone(),
    ));
    let upkeep_task = tokio::spawn(admin::upkeep(admin::prometheus(), token.clone()));
    let keys_task = tokio::spawn(components::signing_keys(keys, store.clone(), token.clone()));

    let listener: Option<TcpListener> = listener.into();
    let grpc_addr = listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?
        .map_or_else(|| "none".to_owned(), |a| a.to_string());
    tracing::info!(
        %grpc_addr,
        api = roles.api,
        worker = roles.worker,
        %admin_addr,
        tls = tls.is_some(),
        admin_tls = tls.is_some() && config.admin_tls,
        "tollgate listening"
    );
    let served = if let (true, Some(listener)) = (roles.api, listener) {
        components::main_listener(
            router,
            listener,
            config.limits.clone(),
            tls.as_ref().map(listener::Tls::acceptor),
            config.shutdown_grace,
            listener_stats,
            token.clone(),
        )
        .await
    } else if roles.api {
        anyhow::bail!("the api role needs a listener");
    } else {
        // No API here (a listener given anyway is closed): health and
        // metrics stay on the admin listener.
        token.cancelled().await;
        Ok(())
    };

    token.cancel();
    worker_token.cancel();
    for task in worker_tasks {
        let _ = task.await;
    }
    usage_token.cancel();
    let _ = usage_task.await;
    let _ = health_task.await;
    let _ = upkeep_task.await;
    let _ = keys_task.await;
    let _ = revocations_task.await;
    let _ = limits_task.await;
    let _ = relay_task.await;
    let _ = pool_task.await;
    if let Some(task) = subscriber_task {
        let _ = task.await;
    }
    if let Some(task) = reload_task {
        let _ = task.await;
    }
    match admin_task.await {
        Ok(Err(e)) => tracing::warn!(error = format!("{e:#}"), "admin listener"),
        Err(e) => tracing::warn!(error = %e, "admin task"),
        Ok(Ok(())) => {}
    }
    store.db.close(config.shutdown_grace).await;
    // The last calls' spans, before the process exits.
    otel::flush(config.shutdown_grace.min(std::time::Duration::from_secs(5))).await;
    tracing::info!("tollgate stopped");
    served
}
