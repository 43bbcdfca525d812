//! Tollgate's server: the access layer for gRPC microservices.
//!
//! Module map, in request order:
//! - [`layers`]: tower layers every call passes: `trace`, `authenticate`.
//! - [`api`]: one module per proto service; `api::error` maps errors to
//!   gRPC statuses.
//! - [`domain`]: names, validation, roles, filters, page tokens, key format.
//! - [`store`]: diesel repositories over SQLite or PostgreSQL, moka caches,
//!   the outbox.
//! - [`policy`]: method policies read from the proto options.
//! - [`admin`], [`health`], [`bootstrap`], [`config`], [`telemetry`].
//! - [`shutdown`]: the Ctrl-C / SIGTERM future shared by the binary and
//!   the benchmark.
//!
//! [`prepare`] opens storage and bootstraps; [`run`] serves until shutdown.
//! The binary and the end-to-end tests call the same two functions.
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod bootstrap;
pub mod config;
pub mod domain;
pub mod health;
pub mod layers;
pub mod policy;
pub mod shutdown;
pub mod store;
pub mod telemetry;

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
    organization_service_server::OrganizationServiceServer,
    service_account_service_server::ServiceAccountServiceServer,
    user_service_server::UserServiceServer,
};

pub use config::Config;
use domain::api_key::SecretKey;
use policy::Policies;
use store::{Db, Store, Target};

/// Storage opened, migrated and bootstrapped; ready to [`run`].
pub struct App {
    pub config: Config,
    pub store: Store,
    pub policies: Arc<Policies>,
    /// The admin key, when this start created it.
    pub bootstrap_key: Option<SecretKey>,
}

/// Reads policies, opens the database, runs migrations and bootstraps.
/// Fails, naming the culprit, on a method without a policy or an
/// unreachable database.
pub async fn prepare(config: Config) -> anyhow::Result<App> {
    let policies = Arc::new(Policies::load(tollgate::FILE_DESCRIPTOR_SET)?);
    let store = open_store(&config).await?;
    let bootstrap_key = bootstrap::ensure_root(&store)
        .await
        .context("bootstrap of the root organization")?;
    if let Some(key) = &bootstrap_key {
        bootstrap::announce(key, config.bootstrap_key_file.as_deref())
            .context("writing the bootstrap key file")?;
    }
    Ok(App {
        config,
        store,
        policies,
        bootstrap_key,
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

/// Serves gRPC on `listener` and the admin endpoints on `admin` until
/// `shutdown` completes, then drains in-flight calls for at most
/// `config.shutdown_grace`.
pub async fn run(
    app: App,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let App {
        config,
        store,
        policies,
        ..
    } = app;
    let token = CancellationToken::new();
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
    }

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tollgate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tollgate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let ready = Arc::new(AtomicBool::new(false));
    let health_task = tokio::spawn(health::watch(
        store.db.clone(),
        reporter,
        policies.services(),
        ready.clone(),
        config.health_interval,
        token.clone(),
    ));

    let admin_addr = admin.local_addr()?;
    let admin_token = token.clone();
    let admin_task = tokio::spawn(async move {
        axum::serve(admin, admin::router(ready))
            .with_graceful_shutdown(async move { admin_token.cancelled().await })
            .await
    });

    // The recorder must exist before the metric handles are made, or they
    // bind to the no-op recorder.
    let prometheus = admin::prometheus();
    let upkeep_task = tokio::spawn(admin::upkeep(prometheus, token.clone()));
    let metrics = Arc::new(layers::RpcMetrics::new(
        policies
            .paths()
            .chain(layers::trace::INFRA_PATHS.iter().copied()),
    ));
    let layer = tower::ServiceBuilder::new()
        .layer(layers::TraceLayer::new(metrics))
        .layer(layers::AuthenticateLayer::new(
            store.clone(),
            policies.clone(),
        ))
        .into_inner();

    let grpc_addr = listener.local_addr()?;
    tracing::info!(%grpc_addr, %admin_addr, "tollgate listening");
    let drain_token = token.clone();
    let server = tonic::transport::Server::builder()
        .layer(layer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(OrganizationServiceServer::new(
            api::organizations::Organizations::new(store.clone()),
        ))
        .add_service(UserServiceServer::new(api::users::Users::new(
            store.clone(),
        )))
        .add_service(ServiceAccountServiceServer::new(
            api::service_accounts::ServiceAccounts::new(store.clone()),
        ))
        .add_service(ApiKeyServiceServer::new(api::api_keys::ApiKeys::new(
            store.clone(),
        )))
        // tonic applies TCP_NODELAY only to listeners it wraps itself;
        // without it Nagle's algorithm adds 40 ms stalls to small replies.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            async move { drain_token.cancelled().await },
        );

    let grace = config.shutdown_grace;
    let served = tokio::select! {
        r = server => r.context("gRPC server"),
        _ = async {
            token.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "in-flight calls did not drain in time; stopping anyway");
            Ok(())
        }
    };
    token.cancel();
    let _ = health_task.await;
    let _ = upkeep_task.await;
    match admin_task.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "admin listener"),
        Err(e) => tracing::warn!(error = %e, "admin task"),
        Ok(Ok(())) => {}
    }
    tracing::info!("tollgate stopped");
    served
}
