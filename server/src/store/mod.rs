//! Persistence: one repository per aggregate (`organizations`,
//! `principals` for users and service accounts, `api_keys`), all on one
//! [`Db`] that serves SQLite and PostgreSQL through the same queries, with
//! bounded caches for the hot reads (`ttl_cache`).
//!
//! Every write goes through [`Store::write`]: it runs in one transaction
//! with a [`Tx`] that knows who writes ([`WriteContext`]) and appends one
//! typed event per changed resource to the outbox ([`outbox`]); after
//! commit the events invalidate the caches ([`Caches::apply`]). The shared
//! shape of updates and deletes (etag, guard, revision-guarded write,
//! event) lives once in [`versioned`]; each repository contributes its
//! diesel queries as closures.

pub mod api_keys;
pub mod cache;
pub mod db;
pub mod error;
mod filter;
pub mod jobs;
pub mod oauth_clients;
pub mod organizations;
pub mod outbox;
pub mod principals;
pub mod rate_limit_policies;
pub mod schema;
pub mod signing_keys;
pub mod tokens;
pub mod ttl_cache;
pub mod usage;
pub mod versioned;
pub mod webhooks;

use std::sync::Arc;

use tokio::sync::{Notify, broadcast, watch};

pub use cache::{CacheConfig, Caches};
pub use db::{Db, DbConnection, Target};
pub use error::StoreError;

use crate::{
    domain::Result,
    events::{After, Event, EventKind, WriteContext},
};

/// The repositories and their caches. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// The connection pool.
    pub db: Db,
    /// The caches of the reads every authenticated call makes.
    pub caches: Arc<Caches>,
    /// Bumped after every committed change to the rate-limit policies (an
    /// organization's deletion takes its policies along), so this
    /// replica's engine reloads at once instead of at its next poll.
    rate_limit_changes: Arc<watch::Sender<u64>>,
    /// Notified after every commit that emitted events, so this replica's
    /// relay (when it leads) publishes them at once instead of at its
    /// next poll.
    committed: Arc<Notify>,
    /// Every access token revoked (its `token.revoked` event, committed
    /// here or applied from the bus), for the verifier's revocation list.
    token_revocations: broadcast::Sender<Revocation>,
    /// Notified when a job is enqueued through this store, so this
    /// replica's workers claim it at once instead of at their next poll.
    jobs_enqueued: Arc<Notify>,
}

/// An access token revoked: its `jti`, and when it would have expired
/// (seconds since the epoch).
pub type Revocation = (String, i64);

impl Store {
    /// A store over `db` with caches sized by `caches`.
    pub fn new(db: Db, caches: CacheConfig) -> Self {
        Self {
            db,
            caches: Arc::new(Caches::new(&caches)),
            rate_limit_changes: Arc::new(watch::Sender::new(0)),
            committed: Arc::new(Notify::new()),
            token_revocations: broadcast::channel(1024).0,
            jobs_enqueued: Arc::new(Notify::new()),
        }
    }

    /// Notified when a job is enqueued through this store.
    pub fn jobs_enqueued(&self) -> Arc<Notify> {
        self.jobs_enqueued.clone()
    }

    /// The access tokens revoked from now on, on any replica this one
    /// hears from. A receiver that lags has missed some: it must reload
    /// the revocations from the database.
    pub fn subscribe_token_revocations(&self) -> broadcast::Receiver<Revocation> {
        self.token_revocations.subscribe()
    }

    /// What every committed event changes beyond the caches.
    fn note_committed(&self, event: &Event) {
        if let Some(After::RevokedToken(revoked)) = &event.after
            && !revoked.jti.is_empty()
        {
            let exp = revoked.expire_time.as_ref().map_or(0, |t| t.seconds);
            // Nobody listening (no verifier) is not an error.
            let _ = self.token_revocations.send((revoked.jti.clone(), exp));
        }
    }

    /// Notified after each commit through this store that emitted events
    /// (a permit is kept when nobody waits, so a commit between two
    /// waits is not missed).
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Applies an event committed elsewhere (another replica, delivered
    /// by the bus) as [`Store::write`] applies its own: caches forget
    /// what it made stale, and a rate-limit policy change reloads the
    /// engine at once. Idempotent, so an event applied twice costs only
    /// cache misses.
    pub fn apply_committed(&self, event: &Event) {
        self.caches.apply(event);
        self.note_committed(event);
        if changes_rate_limits(&event.r#type) {
            self.rate_limit_changes
                .send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// A receiver that sees a new value after every committed change of a
    /// rate-limit policy made through this store (through any clone of
    /// it). Changes made by other replicas are not seen here: poll
    /// [`Store::fingerprint`] for those.
    pub fn subscribe_rate_limit_changes(&self) -> watch::Receiver<u64> {
        self.rate_limit_changes.subscribe()
    }

    /// How many committed changes to the rate-limit policies this store
    /// has seen: the value [`Store::subscribe_rate_limit_changes`] carries.
    pub fn rate_limit_generation(&self) -> u64 {
        *self.rate_limit_changes.borrow()
    }

    /// Runs `f` in one write transaction on behalf of `ctx`; after commit,
    /// applies the events it emitted to the caches. Nothing is applied when
    /// the transaction rolls back.
    pub(crate) async fn write<T, F>(&self, ctx: &WriteContext, f: F) -> Result<T>
    where
        F: FnOnce(&mut Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let ctx = ctx.clone();
        let (value, events) = self
            .db
            .write(move |conn| {
                let mut tx = Tx {
                    conn,
                    ctx: &ctx,
                    events: Vec::new(),
                };
                let value = f(&mut tx)?;
                Ok((value, tx.events))
            })
            .await?;
        let mut rate_limits_changed = false;
        for event in &events {
            self.caches.apply(event);
            self.note_committed(event);
            rate_limits_changed |= changes_rate_limits(&event.r#type);
        }
        if rate_limits_changed {
            self.rate_limit_changes
                .send_modify(|n| *n = n.wrapping_add(1));
        }
        if !events.is_empty() {
            self.committed.notify_one();
        }
        Ok(value)
    }
}

/// Whether an event of type `kind` changes the set of rate-limit
/// policies.
fn changes_rate_limits(kind: &str) -> bool {
    matches!(
        EventKind::parse(kind),
        Some(
            EventKind::RateLimitPolicyCreated
                | EventKind::RateLimitPolicyUpdated
                | EventKind::RateLimitPolicyDeleted
                | EventKind::OrganizationDeleted
        )
    )
}

/// A write transaction: its connection, who writes, and the events
/// appended so far.
pub struct Tx<'a> {
    /// The transaction's connection, for the repositories' queries.
    pub conn: &'a mut DbConnection,
    ctx: &'a WriteContext,
    events: Vec<Event>,
}

impl Tx<'_> {
    /// Appends the event of one change to the outbox, in this transaction.
    pub fn emit(
        &mut self,
        kind: EventKind,
        org: &str,
        resource: String,
        after: After,
    ) -> Result<()> {
        let event = outbox::append(self.conn, self.ctx, kind, org, resource, after, Vec::new())?;
        self.events.push(event);
        Ok(())
    }

    /// Appends the event of a change to an existing resource, naming the
    /// fields that differ between `before` and `after`
    /// (`Event.changed_fields`).
    pub fn emit_change(
        &mut self,
        kind: EventKind,
        org: &str,
        resource: String,
        before: &After,
        after: After,
    ) -> Result<()> {
        let changed = crate::events::changed_fields(before, &after);
        let event = outbox::append(self.conn, self.ctx, kind, org, resource, after, changed)?;
        self.events.push(event);
        Ok(())
    }

    /// Who writes.
    pub fn context(&self) -> &WriteContext {
        self.ctx
    }
}
