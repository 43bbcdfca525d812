//! [`TestServer`]: a real Tollgate server on `127.0.0.1:0`, started through
//! `tollgate_server::prepare` and `tollgate_server::run` exactly as the
//! binary starts it, on a database of its own.

use std::{fmt, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use tempfile::TempDir;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tollgate_client::Client;
use tollgate_server::{listener::Stats, policy::Policies};

use crate::{http, peers, postgres::PgSchema};

/// The PostgreSQL URL that turns the PostgreSQL backend on.
pub const DATABASE_URL_ENV: &str = "TOLLGATE_TEST_DATABASE_URL";

/// How long one scenario on one backend may take before it is failed, so a
/// hung call fails the test instead of stalling CI.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

/// The SQLite database file in a server's temporary directory.
const SQLITE_FILE: &str = "tollgate.db";

/// How long a start may take to report ready on `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A storage backend the suite runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A schema of its own in the database at `url`.
    Postgres { url: String },
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Sqlite => f.write_str("SQLite"),
            Backend::Postgres { .. } => f.write_str("PostgreSQL"),
        }
    }
}

/// SQLite always; PostgreSQL when `TOLLGATE_TEST_DATABASE_URL` is set
/// (otherwise says so on stderr, or panics under `TOLLGATE_TEST_STRICT=1`).
pub fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    match std::env::var(DATABASE_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => {
            let url = url.trim().to_owned();
            assert!(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "{DATABASE_URL_ENV} must be a postgres:// URL"
            );
            out.push(Backend::Postgres { url });
        }
        _ => peers::skip("PostgreSQL", &format!("{DATABASE_URL_ENV} is not set")),
    }
    out
}

/// Runs `scenario` on a fresh server for each of [`backends`], one backend
/// after the other, then stops the server gracefully. A scenario error, a
/// timeout or an unclean stop fails the test, naming the backend.
pub async fn each_backend<F>(mut scenario: F)
where
    F: AsyncFnMut(&mut TestServer) -> anyhow::Result<()>,
{
    for backend in backends() {
        // Captured with the test's output: it tells which backend a failed
        // assertion ran on.
        eprintln!("=== scenario on {backend}");
        let mut server = TestServer::start(&backend)
            .await
            .unwrap_or_else(|e| panic!("[{backend}] cannot start the server: {e:#}"));
        match tokio::time::timeout(SCENARIO_TIMEOUT, scenario(&mut server)).await {
            Err(_) => panic!("[{backend}] scenario timed out after {SCENARIO_TIMEOUT:?}"),
            Ok(Err(e)) => panic!("[{backend}] {e:#}"),
            Ok(Ok(())) => {}
        }
        server
            .stop()
            .await
            .unwrap_or_else(|e| panic!("[{backend}] the server did not stop cleanly: {e:#}"));
    }
}

/// Where a server's data lives; removed when dropped.
enum Storage {
    Sqlite {
        dir: TempDir,
        url: String,
    },
    /// The schema, and a directory with the key-encryption key, which
    /// PostgreSQL has no default for.
    Postgres(PgSchema, TempDir),
    /// Another server's database, which that server owns: a second
    /// replica.
    Replica {
        url: String,
        kek: Option<std::path::PathBuf>,
    },
}

impl Storage {
    async fn create(backend: &Backend) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::Builder::new()
                    .prefix("tollgate-e2e-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                let url = format!("sqlite://{}", dir.path().join(SQLITE_FILE).display());
                Ok(Storage::Sqlite { dir, url })
            }
            Backend::Postgres { url } => {
                let dir = tempfile::Builder::new()
                    .prefix("tollgate-e2e-kek-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                tollgate_server::oauth::keys::Kek::create_file(&dir.path().join("kek"))?;
                Ok(Storage::Postgres(
                    PgSchema::create(url)
                        .await
                        .context("creating a PostgreSQL test schema")?,
                    dir,
                ))
            }
        }
    }

    /// Waits until every connection of a stopped server is closed.
    ///
    /// `run` returns before its pooled SQLite connections are closed (the
    /// pool closes them on background threads), and the last one to close
    /// checkpoints and deletes the `-wal` file under an exclusive lock. A
    /// process restart never overlaps the two; an in-process restart must
    /// wait for the file to go. (Starting during that window fails with
    /// "database is locked": see `sqlite_start_waits_for_a_locked_database`
    /// in `e2e/server.rs`.)
    async fn wait_released(&self) -> anyhow::Result<()> {
        let Storage::Sqlite { dir, .. } = self else {
            return Ok(());
        };
        let db = dir.path().join(SQLITE_FILE);
        let wal = dir.path().join(format!("{SQLITE_FILE}-wal"));
        let start = tokio::time::Instant::now();
        let deadline = start + Duration::from_secs(10);
        let mut next_nudge = start + Duration::from_millis(200);
        while wal.exists() {
            let now = tokio::time::Instant::now();
            if now > deadline {
                bail!(
                    "{} still exists 10 s after the server stopped",
                    wal.display()
                );
            }
            if now > next_nudge {
                // Connections that close at the same instant can each see
                // another still open, and then none removes the `-wal`
                // (harmless: the next open recovers it). A connection of
                // our own that reads and closes does the clean-up if it is
                // the last one; if the server still holds one, nothing
                // changes and the wait fails as it should.
                let db = db.clone();
                tokio::task::spawn_blocking(move || {
                    use diesel::{Connection as _, RunQueryDsl as _};
                    if let Ok(mut conn) =
                        diesel::SqliteConnection::establish(&db.display().to_string())
                    {
                        let _ = diesel::sql_query("SELECT count(*) FROM sqlite_master")
                            .execute(&mut conn);
                    }
                })
                .await
                .context("the clean-up connection panicked")?;
                next_nudge = now + Duration::from_millis(200);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    fn url(&self) -> &str {
        match self {
            Storage::Sqlite { url, .. } => url,
            Storage::Postgres(schema, _) => schema.url(),
            Storage::Replica { url, .. } => url,
        }
    }

    /// The key-encryption key file, when the server must be told.
    fn kek(&self) -> Option<std::path::PathBuf> {
        match self {
            Storage::Postgres(_, dir) => Some(dir.path().join("kek")),
            Storage::Replica { kek, .. } => kek.clone(),
            Storage::Sqlite { .. } => None,
        }
    }
}

/// Changes a test makes to the server's configuration before it starts
/// (shorter timeouts, a lower connection cap, TLS files).
pub type Configure = Arc<dyn Fn(&mut tollgate_server::Config) + Send + Sync>;

/// A running `tollgate_server::run` task and its shutdown trigger.
struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A real Tollgate server on loopback ports, with its own database.
///
/// Dropping it triggers a graceful shutdown in the background and removes
/// the database; [`TestServer::stop`] waits for the shutdown to finish.
pub struct TestServer {
    backend: Backend,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    admin_key: String,
    running: Option<Running>,
    /// How many times the server started (1 + restarts).
    starts: u32,
    /// Whether the last start minted a bootstrap admin key.
    minted_on_last_start: bool,
    /// Policies to serve instead of the ones read from the embedded
    /// descriptors, for tests that prove the proto option is enforced.
    policies: Option<Arc<Policies>>,
    /// Applied to the configuration at every start.
    configure: Option<Configure>,
    /// Also serve the test-only `tollgate.testing.v1` service (public).
    testing: bool,
    /// The main listener's live counts, of the current start.
    listener_stats: Arc<Stats>,
    /// The signing keys of the current start, to mint tokens with claims
    /// the token endpoint would never issue (expired, wrong audience).
    keys: Option<tollgate_server::oauth::keys::KeyRing>,
    /// The usage counters of the current start and the store they flush
    /// to, so a test can flush without waiting for the interval.
    usage: Option<(tollgate_server::usage::Usage, tollgate_server::store::Store)>,
    /// The relay's leadership and lag, of the current start.
    relay: Option<tollgate_server::relay::Status>,
    // Last, so it is dropped after the server was told to stop.
    storage: Storage,
}

impl TestServer {
    /// Creates a fresh database on `backend`, migrates and bootstraps it,
    /// starts the server and waits until `/readyz` reports ready.
    pub async fn start(backend: &Backend) -> anyhow::Result<Self> {
        Self::start_with(backend, None, None).await
    }

    /// Like [`TestServer::start`], with `configure` applied to the
    /// configuration (at this start and every restart).
    pub async fn start_configured(
        backend: &Backend,
        configure: impl Fn(&mut tollgate_server::Config) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        Self::start_with(backend, None, Some(Arc::new(configure))).await
    }

    /// A second server on this one's database (a replica behind the same
    /// load balancer), with `configure` applied; this server must outlive
    /// it. It mints no key: use this server's.
    pub async fn start_replica(
        &self,
        configure: impl Fn(&mut tollgate_server::Config) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let storage = Storage::Replica {
            url: self.storage.url().to_owned(),
            kek: self.storage.kek(),
        };
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let mut server = TestServer {
            backend: self.backend.clone(),
            grpc_addr: grpc.local_addr()?,
            admin_addr: admin.local_addr()?,
            admin_key: self.admin_key.clone(),
            running: None,
            starts: 0,
            minted_on_last_start: false,
            policies: None,
            configure: Some(Arc::new(configure)),
            testing: false,
            listener_stats: Arc::default(),
            keys: None,
            usage: None,
            relay: None,
            storage,
        };
        server.launch(grpc, admin).await?;
        Ok(server)
    }

    /// Like [`TestServer::start`], also serving the test-only
    /// `tollgate.testing.v1.TranscodeTestService` (public, on every
    /// protocol), for the rules and the streaming method our protos lack.
    pub async fn start_with_testing_service(backend: &Backend) -> anyhow::Result<Self> {
        let storage = Storage::create(backend).await?;
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let mut server = TestServer {
            backend: backend.clone(),
            grpc_addr: grpc.local_addr()?,
            admin_addr: admin.local_addr()?,
            admin_key: String::new(),
            running: None,
            starts: 0,
            minted_on_last_start: false,
            policies: None,
            configure: None,
            testing: true,
            listener_stats: Arc::default(),
            keys: None,
            usage: None,
            relay: None,
            storage,
        };
        let key = server.launch(grpc, admin).await?;
        server.admin_key = key.context("a fresh database did not bootstrap an admin key")?;
        Ok(server)
    }

    /// Like [`TestServer::start`], serving `policies` (built from an edited
    /// descriptor set, see [`crate::policy`]) instead of the embedded ones.
    pub async fn start_with_policies(
        backend: &Backend,
        policies: Policies,
    ) -> anyhow::Result<Self> {
        Self::start_with(backend, Some(Arc::new(policies)), None).await
    }

    async fn start_with(
        backend: &Backend,
        policies: Option<Arc<Policies>>,
        configure: Option<Configure>,
    ) -> anyhow::Result<Self> {
        let storage = Storage::create(backend).await?;
        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let mut server = TestServer {
            backend: backend.clone(),
            grpc_addr: grpc.local_addr()?,
            admin_addr: admin.local_addr()?,
            admin_key: String::new(),
            running: None,
            starts: 0,
            minted_on_last_start: false,
            policies,
            configure,
            testing: false,
            listener_stats: Arc::default(),
            keys: None,
            usage: None,
            relay: None,
            storage,
        };
        let key = server.launch(grpc, admin).await?;
        server.admin_key = key.context("a fresh database did not bootstrap an admin key")?;
        Ok(server)
    }

    /// Prepares (migrate, bootstrap) and spawns `run`; returns the
    /// bootstrap key when this start minted one.
    async fn launch(
        &mut self,
        grpc: TcpListener,
        admin: TcpListener,
    ) -> anyhow::Result<Option<String>> {
        let mut config = tollgate_server::Config {
            database_url: self.storage.url().to_owned(),
            // Tokens name the address the tests reach the server at.
            issuer: format!("http://{}", grpc.local_addr()?),
            health_interval: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(5),
            // Enough for the concurrency tests, few enough that parallel
            // tests stay far below PostgreSQL's connection limit.
            db_pool_size: 8,
            // Usage is written when a test asks (`flush_usage`) and at
            // stop, never in the middle of a scenario that compares a key
            // before and after its use; tests of the interval set it.
            usage_flush_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        if let Some(kek) = self.storage.kek() {
            config.key_encryption_key_file = Some(kek);
        }
        if let Some(configure) = &self.configure {
            configure(&mut config);
        }
        let mut app = tollgate_server::prepare(config)
            .await
            .with_context(|| format!("preparing the server on {}", self.backend))?;
        if let Some(policies) = &self.policies {
            app.policies = policies.clone();
        }
        if self.testing {
            let mut policies = Policies::load(tollgate::FILE_DESCRIPTOR_SET)?;
            policies.load_public(crate::TESTING_DESCRIPTOR_SET)?;
            app.policies = Arc::new(policies);
            app.extra = Some(tollgate_server::http::Extra {
                file_descriptor_set: crate::TESTING_DESCRIPTOR_SET,
                // As tonic's `Routes::add_service` mounts a service.
                router: axum::Router::new().route_service(
                    "/tollgate.testing.v1.TranscodeTestService/{*rest}",
                    crate::testing_service::TestingService::server(),
                ),
                services: vec!["tollgate.testing.v1.TranscodeTestService".to_owned()],
            });
        }
        let key = app.bootstrap_key.as_ref().map(|k| k.expose().to_owned());
        self.listener_stats = app.listener_stats.clone();
        self.keys = Some(app.keys.clone());
        self.usage = Some((app.usage.clone(), app.store.clone()));
        self.relay = Some(app.relay.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(tollgate_server::run(app, grpc, admin, async move {
            let _ = rx.await;
        }));
        self.running = Some(Running { shutdown: tx, task });
        self.starts += 1;
        self.minted_on_last_start = key.is_some();
        self.wait_ready().await?;
        Ok(key)
    }

    /// Polls `/readyz` until it answers 200.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(running) = &self.running
                && running.task.is_finished()
            {
                let running = self.running.take().context("server task")?;
                return match running.task.await {
                    Ok(Ok(())) => Err(anyhow::anyhow!("the server stopped right after start")),
                    Ok(Err(e)) => Err(e.context("the server failed at start")),
                    Err(e) => Err(anyhow::Error::new(e).context("the server task panicked")),
                };
            }
            if let Ok(r) = http::get(self.admin_addr, "/readyz").await
                && r.status == 200
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("/readyz did not answer 200 within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the server gracefully: waits until `run` returned, which must
    /// be without error, and until the database is released. Stopping a
    /// stopped server does nothing.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(Running { shutdown, task }) = self.running.take() else {
            return Ok(());
        };
        let _ = shutdown.send(());
        match tokio::time::timeout(Duration::from_secs(15), task).await {
            Err(_) => bail!("the server did not stop within 15 s of the shutdown signal"),
            Ok(Err(e)) => return Err(anyhow::Error::new(e).context("the server task panicked")),
            Ok(Ok(result)) => result.context("run returned an error")?,
        }
        self.storage.wait_released().await
    }

    /// Stops the server gracefully and starts it again on the same
    /// database (and, when they are still free, the same ports). The admin
    /// key stays the one the first start minted.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let grpc = rebind(self.grpc_addr).await?;
        let admin = rebind(self.admin_addr).await?;
        self.grpc_addr = grpc.local_addr()?;
        self.admin_addr = admin.local_addr()?;
        self.launch(grpc, admin).await?;
        Ok(())
    }

    /// Whether `run` is still going.
    pub fn is_running(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.task.is_finished())
    }

    /// The backend this server stores on.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `http://127.0.0.1:<port>` of the gRPC listener.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// The gRPC listener's address (for grpcurl).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// `http://127.0.0.1:<port>` of the admin listener.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    /// The admin listener's address (for [`http::get`]).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The server's signing keys (of the current start).
    pub fn keys(&self) -> &tollgate_server::oauth::keys::KeyRing {
        self.keys.as_ref().expect("a started server has keys")
    }

    /// The server's usage counters (of the current start).
    pub fn usage(&self) -> &tollgate_server::usage::Usage {
        &self
            .usage
            .as_ref()
            .expect("a started server counts usage")
            .0
    }

    /// Writes the usage counts the server holds now, as its flusher does
    /// every interval, so GetUsage and `ApiKey.last_used_time` reflect
    /// every call answered so far. Returns the rows written.
    pub async fn flush_usage(&self) -> anyhow::Result<usize> {
        let (usage, store) = self.usage.as_ref().context("the server never started")?;
        usage
            .flush_now(store)
            .await
            .map_err(|e| anyhow::anyhow!("usage flush: {e}"))
    }

    /// The server's store (of the current start), for tests that call its
    /// upkeep directly instead of waiting for its schedule (the event
    /// purge).
    pub fn store(&self) -> &tollgate_server::store::Store {
        &self.usage.as_ref().expect("a started server has a store").1
    }

    /// The relay's leadership and lag (of the current start).
    pub fn relay(&self) -> &tollgate_server::relay::Status {
        self.relay.as_ref().expect("a started server has a relay")
    }

    /// The main listener's live counts: connections open, requests in
    /// flight.
    pub fn listener_stats(&self) -> Arc<Stats> {
        self.listener_stats.clone()
    }

    /// The bootstrap key of `organizations/root/serviceAccounts/admin`.
    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// How many times this server started (1 + restarts).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Whether the most recent start minted a new bootstrap key (only the
    /// first start on an empty database should).
    pub fn minted_on_last_start(&self) -> bool {
        self.minted_on_last_start
    }

    /// The PostgreSQL schema of this server, if it runs on PostgreSQL.
    pub fn pg_schema(&self) -> Option<&PgSchema> {
        match &self.storage {
            Storage::Postgres(schema, _) => Some(schema),
            Storage::Sqlite { .. } | Storage::Replica { .. } => None,
        }
    }

    /// The server's database URL, for tests that read what it stored.
    pub fn database_url(&self) -> &str {
        self.storage.url()
    }

    /// A client authenticated with `key`. It connects on first use, so it
    /// can be made while the server is down.
    pub fn client(&self, key: &str) -> Client {
        self.builder()
            .api_key(key)
            .connect_lazy()
            .expect("a client for the test server")
    }

    /// A client with the bootstrap admin key (a platform admin).
    pub fn admin(&self) -> Client {
        self.client(&self.admin_key)
    }

    /// A client that sends no credential at all.
    pub fn anonymous(&self) -> Client {
        self.builder()
            .connect_lazy()
            .expect("a client for the test server")
    }

    /// A client builder for this server, without credentials.
    pub fn builder(&self) -> tollgate_client::ClientBuilder {
        Client::builder(self.grpc_url())
            .timeout(Duration::from_secs(20))
            .user_agent("tollgate-e2e")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Dropping the sender resolves the shutdown future; the storage is
        // removed right after (see the field order).
        self.running.take();
    }
}

/// Binds `addr` again if it is free, else any loopback port.
async fn rebind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(_) => Ok(TcpListener::bind("127.0.0.1:0").await?),
    }
}

/// Runs `f` `n` times at once on the runtime and collects the outputs in
/// spawn order.
pub async fn concurrently<T, Fut>(n: usize, f: impl Fn(usize) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("a concurrent task panicked"));
    }
    out
}
