//! The relay: moves committed events from the outbox to the bus, in order
//! per organization, exactly one at a time across replicas.
//!
//! # Leadership
//!
//! On PostgreSQL the relay that holds a session-level advisory lock
//! (`pg_try_advisory_lock`) leads. The lock lives on a connection of its
//! own, outside the pool (a pooled connection would be recycled, and the
//! lock with it): when that connection dies, so does the lock, and this
//! replica stops and contends again. Replicas that do not lead try every
//! [`CONTEND`], so one takes over within seconds of the leader's death.
//! The lock's key includes the schema, so deployments sharing a database
//! in separate schemas each have their relay. On SQLite the one process
//! is the relay.
//!
//! # The leader's loop
//!
//! Unrelayed rows (their ids in `outbox_pending`) are read in id order, which is
//! commit order within an organization (see [`crate::events`]), at most
//! [`BATCH`] at a time; they are published, then marked relayed. A crash
//! between the two republishes them: JetStream drops the copy by its
//! `Nats-Msg-Id` (the event id) within the stream's duplicate window, and
//! the hub drops it by id. A commit on this replica wakes the loop at once;
//! other replicas' commits are found by polling every [`POLL`].
//!
//! With NATS, publishes are pipelined across organizations but never
//! within one: the n-th event of an organization in a batch is sent only
//! once its (n-1)-th was acknowledged, so a publish lost in an outage can
//! never land after a later event of its organization. On a failure the
//! loop marks what was acknowledged, backs off (up to [`MAX_BACKOFF`],
//! well inside the default duplicate window) and reads again: nothing is
//! skipped or reordered, and the API, which only appends to the outbox,
//! keeps serving.
//!
//! # Delivery to replicas
//!
//! Without NATS the leader feeds its own hub and caches. With NATS every
//! replica, leader or not, subscribes (see [`subscribe`]) and feeds what it
//! receives to its hub and to `Store::apply_committed`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream;
use bytes::Bytes;
use diesel::{ExpressionMethods, QueryDsl, RunQueryDsl};
use futures::StreamExt as _;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::Bus,
    config::Config,
    domain::{self, now_micros},
    events::Event,
    store::{
        DbConnection, Store, Target,
        schema::{outbox, outbox_pending},
        webhooks,
    },
};

/// Rows read and published per round.
pub const BATCH: i64 = 2000;
/// How often a leader looks for other replicas' commits.
pub const POLL: Duration = Duration::from_millis(200);
/// How often a replica that does not lead tries to, and how often a
/// leader checks that its lock's connection is alive.
pub const CONTEND: Duration = Duration::from_secs(1);
/// The longest wait between two attempts after a failure.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a publish waits for JetStream's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// First key of the leadership lock ("tr"), apart from the organization
/// order locks of the outbox.
const LEADER_LOCK_SPACE: i32 = 0x7472;

/// Whether this replica leads the relay now, and how far behind it is.
/// Cheap to clone; also shown as the `tollgate_relay_leader` and
/// `tollgate_relay_lag_seconds` gauges (tests read it here, since every
/// server in a test process shares one metrics recorder).
#[derive(Clone, Default, Debug)]
pub struct Status {
    leader: Arc<AtomicBool>,
    /// The create time (µs) of the oldest unrelayed event the leader last
    /// read; 0 when there was none.
    oldest: Arc<std::sync::atomic::AtomicI64>,
}

impl Status {
    /// Whether this replica's relay holds the leadership.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// The age now of the oldest unrelayed event the leader last read
    /// (it grows while publishing is stuck); zero when there was none, or
    /// this replica does not lead.
    pub fn lag(&self) -> Duration {
        match self.oldest.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            oldest => Duration::from_micros(
                u64::try_from(now_micros().saturating_sub(oldest)).unwrap_or(0),
            ),
        }
    }

    /// Records the oldest unrelayed event's create time (`None`: none).
    fn set_oldest(&self, oldest: Option<i64>) {
        self.oldest.store(oldest.unwrap_or(0), Ordering::Release);
        self.show_lag();
    }

    fn show_lag(&self) {
        metrics::gauge!("tollgate_relay_lag_seconds").set(self.lag().as_secs_f64());
    }

    fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Release);
        metrics::gauge!("tollgate_relay_leader").set(if leader { 1.0 } else { 0.0 });
    }
}

/// A NATS connection with JetStream and the stream settings.
#[derive(Clone)]
pub struct Nats {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Config,
    prefix: String,
}

impl Nats {
    /// Connects to `config.nats_url` (in the background: a NATS that is
    /// down at start-up delays publishing, not serving). After a
    /// reconnect `store`'s caches are flushed and `bus`'s watchers replay
    /// from the table, since events published while disconnected were
    /// missed. `None` without a URL.
    pub async fn connect(
        config: &Config,
        store: &Store,
        bus: &Bus,
    ) -> anyhow::Result<Option<Self>> {
        let Some(url) = &config.nats_url else {
            return Ok(None);
        };
        let caches = store.caches.clone();
        let bus = bus.clone();
        let was_down = Arc::new(AtomicBool::new(false));
        let client = async_nats::ConnectOptions::new()
            .name("tollgate")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let caches = caches.clone();
                let bus = bus.clone();
                let was_down = was_down.clone();
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            was_down.store(true, Ordering::Release);
                            tracing::warn!(
                                "NATS disconnected: other replicas' changes reach the caches only through their TTL until it is back"
                            );
                        }
                        async_nats::Event::Connected => {
                            if was_down.swap(false, Ordering::AcqRel) {
                                // What other replicas changed meanwhile was
                                // never received.
                                caches.flush();
                                bus.resync();
                                tracing::info!("NATS reconnected; caches flushed, watchers replay");
                            }
                        }
                        other => tracing::debug!(event = %other, "NATS"),
                    }
                }
            })
            .connect(url.as_str())
            .await
            // The URL may hold credentials: not repeated.
            .map_err(|e| anyhow::anyhow!("connecting to NATS: {e}"))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(ACK_TIMEOUT);
        let prefix = config.nats_subject_prefix.clone();
        let stream = jetstream::stream::Config {
            name: config.nats_stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            max_age: config.nats_max_age,
            duplicate_window: config.nats_duplicate_window,
            ..Default::default()
        };
        Ok(Some(Self {
            client,
            js,
            stream,
            prefix,
        }))
    }

    /// Creates the stream, or updates its settings to ours.
    pub async fn ensure_stream(&self) -> anyhow::Result<()> {
        self.js
            .create_or_update_stream(self.stream.clone())
            .await
            .map_err(|e| anyhow::anyhow!("creating stream {}: {e}", self.stream.name))?;
        Ok(())
    }

    /// `<prefix>.<org id>.<event type>`.
    pub fn subject(&self, org: &str, kind: &str) -> String {
        format!("{}.{org}.{kind}", self.prefix)
    }
}

/// One unrelayed outbox row, decoded.
struct Pending {
    id: i64,
    org: String,
    create_time: i64,
    event: Event,
}

/// The relay of one replica; see the module doc.
pub struct Relay {
    store: Store,
    bus: Bus,
    nats: Option<Nats>,
    status: Status,
    stream_ready: bool,
}

impl Relay {
    /// A relay over `store`, publishing to NATS when `nats` is given and to
    /// `bus` otherwise, reporting leadership to `status`.
    pub fn new(store: Store, bus: Bus, nats: Option<Nats>, status: Status) -> Self {
        Self {
            store,
            bus,
            nats,
            status,
            stream_ready: false,
        }
    }

    /// Contends for leadership and relays while leading, until `token` is
    /// cancelled.
    pub async fn run(mut self, token: CancellationToken) {
        let committed = self.store.committed();
        let mut lease = Lease::new(self.store.db.target().clone());
        let mut backoff = Backoff::default();
        let mut checked = tokio::time::Instant::now();
        self.status.set_leader(false);
        // The lag gauge keeps rising while a publish is stuck waiting.
        let gauge = {
            let status = self.status.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    status.show_lag();
                }
            })
        };
        if let Some(nats) = &self.nats {
            match nats.ensure_stream().await {
                Ok(()) => self.stream_ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS stream not ready; retrying when publishing")
                }
            }
        }
        while !token.is_cancelled() {
            if !lease.held() {
                if lease.acquire().await {
                    tracing::info!("this replica now runs the event relay");
                    self.status.set_leader(true);
                    checked = tokio::time::Instant::now();
                } else {
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(CONTEND) => continue,
                    }
                }
            } else if checked.elapsed() >= CONTEND {
                checked = tokio::time::Instant::now();
                if !lease.check().await {
                    tracing::warn!("the event relay's lock connection was lost; contending again");
                    self.status.set_leader(false);
                    self.status.set_oldest(None);
                    continue;
                }
            }
            match self.round().await {
                Ok(n) if n < BATCH as usize => {
                    backoff.reset();
                    if n == 0 {
                        self.status.set_oldest(None);
                    }
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = committed.notified() => {}
                        () = tokio::time::sleep(POLL) => {}
                    }
                }
                Ok(_) => backoff.reset(),
                Err(e) => {
                    let wait = backoff.next();
                    tracing::warn!(error = %e, retry_in = ?wait, "event relay: publishing failed; retrying");
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        gauge.abort();
        self.status.set_leader(false);
        self.status.set_oldest(None);
        // Dropping the lease closes its connection, which releases the
        // lock for the next replica.
        drop(lease);
    }

    /// Publishes one batch of unrelayed events and marks them; returns how
    /// many were relayed.
    async fn round(&mut self) -> anyhow::Result<usize> {
        let rows = self.store.db.run(|conn| unrelayed(conn, BATCH)).await?;
        let Some(oldest) = rows.iter().map(|r| r.create_time).min() else {
            return Ok(0);
        };
        self.status.set_oldest(Some(oldest));
        let published = match self.nats.clone() {
            Some(nats) => {
                if !self.stream_ready {
                    nats.ensure_stream().await?;
                    self.stream_ready = true;
                }
                publish(&nats, &rows).await
            }
            None => {
                for row in &rows {
                    self.store.apply_committed(&row.event);
                    self.bus.publish(Arc::new(row.event.clone()));
                }
                Ok(())
            }
        };
        let done: Vec<i64> = match &published {
            Ok(()) => rows.iter().map(|r| r.id).collect(),
            Err(failure) => failure.acked.clone(),
        };
        let n = done.len();
        if !done.is_empty() {
            // The webhook deliveries of what was published are made in the
            // transaction that marks it, so each is made exactly once.
            let marked: std::collections::HashSet<i64> = done.iter().copied().collect();
            let events: Vec<Event> = rows
                .into_iter()
                .filter(|r| marked.contains(&r.id))
                .map(|r| r.event)
                .collect();
            let deliveries = self
                .store
                .db
                .write(move |conn| {
                    mark(conn, &done)?;
                    let events: Vec<&Event> = events.iter().collect();
                    webhooks::fan_out(conn, &events, &crate::webhooks::body)
                })
                .await?;
            metrics::counter!("tollgate_events_relayed_total").increment(n as u64);
            if deliveries > 0 {
                metrics::counter!("tollgate_webhook_deliveries_made_total")
                    .increment(deliveries as u64);
                self.store.jobs_enqueued().notify_waiters();
            }
        }
        match published {
            Ok(()) => Ok(n),
            Err(failure) => Err(failure.error),
        }
    }
}

/// A batch that failed part way: the ids acknowledged before the failure.
struct Failure {
    acked: Vec<i64>,
    error: anyhow::Error,
}

/// Publishes `rows` in waves: the n-th wave holds the n-th row of each
/// organization, sent together, all acknowledged before the next wave.
async fn publish(nats: &Nats, rows: &[Pending]) -> Result<(), Failure> {
    let mut waves: Vec<Vec<&Pending>> = Vec::new();
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for row in rows {
        let n = seen.entry(row.org.as_str()).or_insert(0);
        if waves.len() <= *n {
            waves.push(Vec::new());
        }
        waves[*n].push(row);
        *n += 1;
    }
    let mut acked = Vec::with_capacity(rows.len());
    for wave in waves {
        let mut pending = Vec::with_capacity(wave.len());
        for row in &wave {
            let mut message = jetstream::message::PublishMessage::build()
                .payload(Bytes::from(row.event.encode_to_vec()))
                .message_id(row.id.to_string())
                .header("Tollgate-Event-Type", row.event.r#type.as_str());
            let subject = nats.subject(&row.org, &row.event.r#type);
            let span = publish_span(&subject, row);
            // Consumers continue the publish's trace, or else the change's.
            let trace = span
                .context()
                .and_then(crate::otel::propagation::traceparent)
                .or_else(|| {
                    (!row.event.trace_parent.is_empty()).then(|| row.event.trace_parent.clone())
                });
            if let Some(tp) = &trace {
                message = message.header("traceparent", tp.as_str());
            }
            match nats.js.send_publish(subject, message).await {
                Ok(ack) => pending.push((row.id, ack, span)),
                Err(e) => {
                    return Err(Failure {
                        acked,
                        error: anyhow::anyhow!("publishing event {}: {e}", row.id),
                    });
                }
            }
        }
        let mut failed = None;
        let mut wave_acked = Vec::with_capacity(pending.len());
        for (id, ack, span) in pending {
            match ack.await {
                Ok(_) => wave_acked.push(id),
                Err(e) => {
                    span.fail("not acknowledged");
                    failed
                        .get_or_insert_with(|| anyhow::anyhow!("event {id} not acknowledged: {e}"));
                }
            }
        }
        acked.extend(wave_acked);
        if let Some(error) = failed {
            return Err(Failure { acked, error });
        }
    }
    Ok(())
}

/// The producer span of one event's publish (when traces are on): a child
/// of the relay's round if that is traced, else a root, linked to the
/// change the event records.
fn publish_span(subject: &str, row: &Pending) -> crate::otel::child::Span {
    use opentelemetry::{KeyValue, trace::SpanKind};
    if !crate::otel::enabled() {
        return crate::otel::child::Span::NONE;
    }
    crate::otel::child::Span::child_or_root(
        format!("send {subject}"),
        SpanKind::Producer,
        crate::otel::propagation::span_context(&row.event.trace_parent)
            .into_iter()
            .collect(),
        || {
            vec![
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.destination.name", subject.to_owned()),
                KeyValue::new("messaging.message.id", row.id.to_string()),
            ]
        },
    )
}

/// Reads at most `limit` unrelayed rows in id order.
fn unrelayed(conn: &mut DbConnection, limit: i64) -> domain::Result<Vec<Pending>> {
    let ids: Vec<i64> = outbox_pending::table
        .order(outbox_pending::id.asc())
        .limit(limit)
        .select(outbox_pending::id)
        .load(conn)?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<(i64, String, String, String, String, i64)> = outbox::table
        .filter(outbox::id.eq_any(&ids))
        .order(outbox::id.asc())
        .select((
            outbox::id,
            outbox::org_id,
            outbox::event_type,
            outbox::resource,
            outbox::payload,
            outbox::create_time,
        ))
        .load(conn)?;
    if raw.len() < ids.len() {
        // Pending ids without their row (deleted by hand): nothing to
        // publish, and left pending they would be read again forever.
        let found: std::collections::HashSet<i64> = raw.iter().map(|r| r.0).collect();
        let orphans: Vec<i64> = ids.into_iter().filter(|id| !found.contains(id)).collect();
        tracing::error!(
            ?orphans,
            "pending outbox ids without their row; dropping them"
        );
        mark(conn, &orphans)?;
    }
    Ok(raw
        .into_iter()
        .map(|(id, org, kind, resource, payload, create_time)| {
            // An undecodable row is still published, with what its columns
            // say: skipping it would break the organization's sequence, and
            // stopping on it would stall the relay for good.
            let event = crate::store::outbox::decode(id, &payload).unwrap_or_else(|e| {
                tracing::error!(
                    id,
                    error = %e,
                    "outbox row with an unreadable payload; publishing its columns"
                );
                Event {
                    // Ids are BIGSERIAL / INTEGER PRIMARY KEY: never negative.
                    id: u64::try_from(id).unwrap_or_default(),
                    r#type: kind,
                    organization: format!("organizations/{org}"),
                    resource,
                    time: Some(domain::timestamp(create_time)),
                    ..Event::default()
                }
            });
            Pending {
                id,
                org,
                create_time,
                event,
            }
        })
        .collect())
}

/// Marks `ids` relayed: no longer pending.
fn mark(conn: &mut DbConnection, ids: &[i64]) -> domain::Result<()> {
    diesel::delete(outbox_pending::table.filter(outbox_pending::id.eq_any(ids))).execute(conn)?;
    Ok(())
}

/// Every replica's delivery when NATS is used: a core subscription to
/// every event subject, feeding this replica's hub and caches until
/// `token` is cancelled.
///
/// A core subscription rather than a JetStream consumer: invalidation
/// needs only what is committed from now on, with no server-side consumer
/// state to create, clean up or share between replicas, and a replica
/// that missed events while disconnected flushes its caches on reconnect
/// (see [`Nats::connect`]) instead of replaying history. Core subscribers
/// also receive republishes that JetStream deduplicates; the hub drops
/// those by id and applying an event twice is harmless.
pub async fn subscribe(nats: Nats, store: Store, bus: Bus, token: CancellationToken) {
    let subject = format!("{}.>", nats.prefix);
    let mut backoff = Backoff::default();
    while !token.is_cancelled() {
        let mut subscriber = match nats.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                let wait = backoff.next();
                tracing::warn!(error = %e, retry_in = ?wait, "NATS subscription failed; caches fall back to their TTL");
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
        };
        backoff.reset();
        loop {
            let message = tokio::select! {
                () = token.cancelled() => return,
                m = subscriber.next() => m,
            };
            let Some(message) = message else {
                tracing::warn!("NATS subscription ended; subscribing again");
                break;
            };
            match Event::decode(message.payload.as_ref()) {
                Ok(event) => {
                    store.apply_committed(&event);
                    bus.publish(Arc::new(event));
                }
                Err(e) => {
                    // Not ours to read (a newer version's, or someone
                    // else's publish): forget everything rather than keep
                    // something it may have changed.
                    tracing::warn!(subject = %message.subject, error = %e, "undecodable event; flushing caches");
                    store.caches.flush();
                }
            }
        }
    }
}

/// Exponential backoff from 100 ms to [`MAX_BACKOFF`].
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = Duration::from_millis(100)
            .saturating_mul(1 << self.failures.min(10))
            .min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The leadership: always held on SQLite; on PostgreSQL, an advisory lock
/// on a connection of its own.
struct Lease {
    target: Target,
    /// The lock's connection while the lock is held.
    conn: Option<Arc<std::sync::Mutex<diesel::PgConnection>>>,
    /// SQLite: taken at the first `acquire`, never lost.
    sqlite: bool,
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

impl Lease {
    fn new(target: Target) -> Self {
        Self {
            target,
            conn: None,
            sqlite: false,
        }
    }

    fn held(&self) -> bool {
        self.sqlite || self.conn.is_some()
    }

    /// Tries once to take the lock.
    async fn acquire(&mut self) -> bool {
        if self.target.is_sqlite() {
            self.sqlite = true;
            return true;
        }
        let target = self.target.clone();
        let taken = tokio::task::spawn_blocking(move || {
            let DbConnection::Postgres(mut pg) = target.establish().ok()? else {
                return None;
            };
            let row: Locked = diesel::sql_query(
                "SELECT pg_try_advisory_lock($1, hashtext('relay:' || current_schema())) AS locked",
            )
            .bind::<diesel::sql_types::Integer, _>(LEADER_LOCK_SPACE)
            .get_result(&mut pg)
            .ok()?;
            // Not taken: the connection closes here.
            row.locked.then_some(pg)
        })
        .await
        .ok()
        .flatten();
        self.conn = taken.map(|c| Arc::new(std::sync::Mutex::new(c)));
        self.conn.is_some()
    }

    /// Whether the lock's connection still answers; forgets it otherwise.
    async fn check(&mut self) -> bool {
        let Some(conn) = self.conn.clone() else {
            return self.sqlite;
        };
        let alive = tokio::time::timeout(
            CONTEND,
            tokio::task::spawn_blocking(move || {
                let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
                diesel::sql_query("SELECT 1").execute(&mut *c).is_ok()
            }),
        )
        .await
        .is_ok_and(|r| r.unwrap_or(false));
        if !alive {
            self.conn = None;
        }
        alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<_> = (0..8).map(|_| b.next()).collect();
        assert_eq!(waits[0], Duration::from_millis(100));
        assert_eq!(waits[1], Duration::from_millis(200));
        assert_eq!(waits[2], Duration::from_millis(400));
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(100));
    }
}
