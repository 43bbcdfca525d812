//! Connections and the pool. One code path serves SQLite and PostgreSQL
//! through diesel's `MultiConnection`; every query runs on a blocking thread
//! (deadpool-sync's `interact`), never on the async workers.

mod redact;

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use deadpool::managed::{self, Metrics, Pool, RecycleError, RecycleResult, Timeouts};
use deadpool_sync::SyncWrapper;
use diesel::{
    Connection, PgConnection, RunQueryDsl, SqliteConnection, connection::SimpleConnection,
    result::DatabaseErrorKind,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::domain::Error;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

// The derive's own public items stay where it puts them: beside the enum.
pub use connection::{DbConnection, MultiBackend, MultiField, MultiRawValue, MultiRow};

/// Holds only [`DbConnection`], so the lint expectation below covers just
/// what its derive generates.
mod connection {
    #![expect(
        missing_docs,
        reason = "diesel's MultiConnection derive generates public items \
                  (MultiBackend, MultiRawValue, …) without docs"
    )]

    use diesel::{PgConnection, SqliteConnection};

    /// A connection to either backend.
    #[derive(diesel::MultiConnection)]
    pub enum DbConnection {
        /// A PostgreSQL session.
        Postgres(PgConnection),
        /// A SQLite database file, with WAL and foreign keys on (see
        /// `Target::establish`).
        Sqlite(SqliteConnection),
    }
}

/// Where the data lives, parsed from `--database-url`. Its `Debug` is the
/// redacted URL, so a stray `{:?}` cannot log a password.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// A file, created with its directory on first use.
    Sqlite(PathBuf),
    /// A libpq connection URL.
    Postgres(String),
}

impl Target {
    /// `postgres://…` / `postgresql://…`, or `sqlite://PATH`, `sqlite:PATH`
    /// or a bare path for SQLite.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_owned()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() || path.contains("://") {
            return Err(format!(
                "unsupported database URL '{}': use postgres://… or sqlite://PATH",
                redact::redact(url)
            ));
        }
        if redact::looks_like_conninfo(path) {
            // Not echoed: it may hold a password.
            return Err(
                "the database URL looks like a libpq key=value string, which is not \
                 supported: use postgres://… or sqlite://PATH"
                    .to_owned(),
            );
        }
        Ok(Target::Sqlite(PathBuf::from(path)))
    }

    /// Whether this is a SQLite file.
    pub fn is_sqlite(&self) -> bool {
        matches!(self, Target::Sqlite(_))
    }

    /// The URL without credentials, for logs: the userinfo and every
    /// password-like query parameter are masked.
    pub fn redacted(&self) -> String {
        match self {
            Target::Sqlite(p) => format!("sqlite://{}", p.display()),
            Target::Postgres(url) => redact::redact(url),
        }
    }

    /// Opens one connection, configured for how Tollgate uses it.
    pub fn establish(&self) -> Result<DbConnection, Error> {
        match self {
            Target::Sqlite(path) => {
                create_private(path)?;
                let url = path.to_string_lossy();
                let mut conn = SqliteConnection::establish(&url)
                    .map_err(|e| Error::Unavailable(format!("sqlite {url}: {e}")))?;
                // busy_timeout comes first: it makes every later statement,
                // the WAL switch included, wait for another connection's lock
                // (another process, `admin create-key`, a pool still closing)
                // instead of failing. WAL lets readers run beside the writer.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                )
                .map_err(|e| Error::Unavailable(format!("sqlite pragmas: {e}")))?;
                conn.set_instrumentation(crate::otel::db::QueryObserver::new("sqlite"));
                Ok(DbConnection::Sqlite(conn))
            }
            // libpq echoes the whole URI in some parse errors
            // ("unexpected character … in URI: \"postgres://u:pw@…\"").
            Target::Postgres(url) => PgConnection::establish(url)
                .map(|mut conn| {
                    conn.set_instrumentation(crate::otel::db::QueryObserver::new("postgresql"));
                    DbConnection::Postgres(conn)
                })
                .map_err(|e| {
                    Error::Unavailable(format!("postgres: {}", redact::scrub(url, &e.to_string())))
                }),
        }
    }
}

/// Creates the SQLite file's directory (0700) and the file (0600) when they
/// do not exist yet, before SQLite opens it: the file holds password hashes
/// and key digests, and SQLite would create it by the umask (often 0644).
/// SQLite gives its `-wal` and `-shm` files the database file's mode. An
/// existing directory or file is left as the operator made it.
fn create_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.is_sqlite() {
            "Sqlite"
        } else {
            "Postgres"
        };
        f.debug_tuple(kind).field(&self.redacted()).finish()
    }
}

/// A pooled connection plus what its last use said about its health.
pub struct Conn {
    /// The connection.
    pub conn: DbConnection,
    /// A connection-level failure: never reuse it.
    broken: bool,
    /// A statement failed: ping before the next checkout, since diesel
    /// cannot always tell a dead session from a refused statement.
    suspect: bool,
}

/// deadpool manager: opens connections on a blocking thread, and discards
/// those that failed or sat idle too long without answering a ping.
pub struct Manager {
    target: Target,
}

impl managed::Manager for Manager {
    type Type = SyncWrapper<Conn>;
    type Error = Error;

    async fn create(&self) -> Result<Self::Type, Self::Error> {
        let target = self.target.clone();
        SyncWrapper::new(deadpool::Runtime::Tokio1, move || {
            target.establish().map(|conn| Conn {
                conn,
                broken: false,
                suspect: false,
            })
        })
        .await
    }

    async fn recycle(&self, obj: &mut Self::Type, metrics: &Metrics) -> RecycleResult<Self::Error> {
        if obj.is_mutex_poisoned() {
            return Err(RecycleError::message("connection mutex poisoned"));
        }
        // Pinging on every checkout would double the latency of every query;
        // ping only connections idle long enough for a server to drop them.
        let stale = metrics.last_used() > Duration::from_secs(30);
        let ok = obj
            .interact(move |c| {
                if c.broken {
                    return false;
                }
                let check = stale || c.suspect;
                c.suspect = false;
                !check || diesel::sql_query("SELECT 1").execute(&mut c.conn).is_ok()
            })
            .await
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(RecycleError::message("connection broken"))
        }
    }
}

/// The database: a pool of connections to one target.
#[derive(Clone)]
pub struct Db {
    pool: Pool<Manager>,
    sqlite: bool,
}

impl Db {
    /// Builds the pool (no connection is opened yet).
    pub fn new(target: Target, max_size: usize, acquire_timeout: Duration) -> Result<Self, Error> {
        let sqlite = target.is_sqlite();
        let pool = Pool::builder(Manager { target })
            .max_size(max_size.max(1))
            .timeouts(Timeouts {
                wait: Some(acquire_timeout),
                create: Some(acquire_timeout),
                recycle: Some(acquire_timeout),
            })
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Internal(format!("pool: {e}")))?;
        Ok(Self { pool, sqlite })
    }

    /// Where the pool connects: for a connection of its own outside the
    /// pool's rotation (the relay's leadership lock).
    pub fn target(&self) -> &Target {
        &self.pool.manager().target
    }

    /// Runs pending migrations of the matching backend.
    pub async fn migrate(&self) -> Result<usize, Error> {
        self.run(|conn| {
            let result = match conn {
                DbConnection::Sqlite(c) => {
                    c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len())
                }
                DbConnection::Postgres(c) => c
                    .run_pending_migrations(POSTGRES_MIGRATIONS)
                    .map(|v| v.len()),
            };
            result.map_err(|e| Error::Internal(format!("migrations: {e}")))
        })
        .await
    }

    /// Publishes the pool's size, connections in use and callers waiting
    /// (`tollgate_db_pool_*`) every few seconds until `token` is
    /// cancelled.
    pub async fn publish_pool_metrics(self, token: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let status = self.pool.status();
            metrics::gauge!("tollgate_db_pool_max_size").set(status.max_size as f64);
            metrics::gauge!("tollgate_db_pool_size").set(status.size as f64);
            metrics::gauge!("tollgate_db_pool_in_use")
                .set(status.size.saturating_sub(status.available) as f64);
            metrics::gauge!("tollgate_db_pool_waiting").set(status.waiting as f64);
        }
    }

    /// Runs `f` on a pooled connection, on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        static WAIT: std::sync::OnceLock<metrics::Histogram> = std::sync::OnceLock::new();
        let asked = std::time::Instant::now();
        let obj = self.pool.get().await.map_err(|e| match e {
            managed::PoolError::Backend(e) => e,
            other => Error::Unavailable(format!("database pool: {other}")),
        })?;
        WAIT.get_or_init(|| metrics::histogram!("tollgate_db_pool_wait_seconds"))
            .record(asked.elapsed().as_secs_f64());
        // The call's trace context goes with the work to the blocking
        // thread, where the statements' spans find their parent.
        let trace = crate::otel::sampled_context();
        obj.interact(move |c| {
            let _attached = trace.map(opentelemetry::Context::attach);
            let result = f(&mut c.conn);
            // Only connection-class failures (see `StoreError`) become
            // UNAVAILABLE; those connections are dropped. Any other failure
            // costs one ping at the next checkout, not a new session.
            match &result {
                Err(Error::Unavailable(_)) => c.broken = true,
                Err(Error::Internal(_)) => c.suspect = true,
                _ => {}
            }
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("database task: {e}")))?
    }

    /// Runs `f` in a write transaction: committed when it returns `Ok`,
    /// rolled back otherwise. SQLite takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so concurrent writers queue on busy_timeout
    /// instead of failing when a read lock cannot be upgraded.
    pub async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let sqlite = self.sqlite;
        self.run(move |conn| {
            if sqlite {
                conn.batch_execute("BEGIN IMMEDIATE")?;
                let result = f(conn).and_then(|v| {
                    conn.batch_execute("COMMIT")?;
                    Ok(v)
                });
                if result.is_err() {
                    // Also after a failed COMMIT: a connection must never
                    // go back to the pool inside a transaction, holding
                    // SQLite's one write lock.
                    let _ = conn.batch_execute("ROLLBACK");
                }
                result
            } else {
                conn.transaction(f)
            }
        })
        .await
    }

    /// Closes the pool at shutdown: idle connections now, connections in
    /// use as they come back, waiting at most `grace` for those, so `run`
    /// returns with the database released rather than whenever the last
    /// clone of the pool happens to drop.
    pub async fn close(&self, grace: Duration) {
        self.pool.close();
        let deadline = tokio::time::Instant::now() + grace;
        while self.pool.status().size > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<(), Error> {
        self.run(|conn| {
            diesel::sql_query("SELECT 1").execute(conn)?;
            Ok(())
        })
        .await
    }
}

/// Whether a diesel error is a unique-key collision (a concurrent create).
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("sqlite://data/t.db").unwrap(),
            Target::Sqlite("data/t.db".into())
        );
        assert_eq!(
            Target::parse("sqlite:/tmp/x.db").unwrap(),
            Target::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            Target::parse("./x.db").unwrap(),
            Target::Sqlite("./x.db".into())
        );
        assert!(matches!(
            Target::parse("postgres://u:p@h/db").unwrap(),
            Target::Postgres(_)
        ));
        assert!(Target::parse("mysql://h/db").is_err());
        assert!(Target::parse("").is_err());
        assert_eq!(
            Target::parse("postgres://u:secret@h:5432/db")
                .unwrap()
                .redacted(),
            "postgres://…@h:5432/db"
        );
    }

    #[test]
    fn redaction_covers_query_parameters_and_debug() {
        let t = Target::parse("postgres://127.0.0.1:5432/postgres?user=postgres&password=S3cretPw")
            .unwrap();
        assert_eq!(
            t.redacted(),
            "postgres://127.0.0.1:5432/postgres?user=postgres&password=…"
        );
        assert!(!format!("{t:?}").contains("S3cretPw"));
        // Neither a foreign scheme nor a libpq key=value string is echoed.
        let e = Target::parse("mysql://u:S3cretPw@h/db").unwrap_err();
        assert!(!e.contains("S3cretPw"), "{e}");
        let e = Target::parse("host=h password=S3cretPw dbname=t").unwrap_err();
        assert!(!e.contains("S3cretPw"), "{e}");
    }

    #[test]
    fn libpq_errors_do_not_echo_the_password() {
        // libpq fails to parse this URI and quotes all of it in its error.
        for url in [
            "postgres://u:S3cretPw@[::1]x/db",
            "postgres://[::1]x/db?password=S3cretPw",
        ] {
            let Err(e) = Target::parse(url).unwrap().establish() else {
                panic!("{url} connected");
            };
            let message = e.to_string();
            // It did quote the URI, and the secret in it was masked.
            assert!(
                message.contains("URI") && message.contains('…'),
                "{message}"
            );
            assert!(!message.contains("S3cretPw"), "{message}");
        }
    }

    #[test]
    fn sqlite_files_are_private() {
        use std::os::unix::fs::PermissionsExt;

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let file = dir.join("t.db");
        let target = Target::Sqlite(file.clone());
        let mut conn = target.establish().unwrap();
        // A write creates the -wal and -shm files.
        conn.batch_execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "directory");
        for name in ["t.db", "t.db-wal", "t.db-shm"] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        drop(conn);
        // Existing files keep the mode the operator gave them.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        drop(target.establish().unwrap());
        assert_eq!(mode(&file), 0o640);
    }
}
