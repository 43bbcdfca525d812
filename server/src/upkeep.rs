//! Scheduled upkeep, run by the worker role as recurring unique jobs (see
//! [`crate::store::jobs`]): each kind is enqueued with its kind as unique
//! key, so however many workers schedule it, one is pending at a time, and
//! it runs on whichever worker claims it. Each run works in bounded
//! batches.
//!
//! - `upkeep.events`: event retention (`--event-retention`, see
//!   [`crate::retention`]), first [`retention::FIRST`] after start, then
//!   every [`retention::EVERY`];
//! - `upkeep.tokens`: expired authorization codes, refresh tokens and
//!   revoked-token entries ([`Store::purge_expired_tokens`]), every
//!   [`TOKENS_EVERY`];
//! - `upkeep.jobs`: dead jobs a week after they died, every
//!   [`JOBS_EVERY`];
//! - `upkeep.keys`: scheduled signing-key rotation
//!   (`--signing-key-rotation-days`), checked every [`KEYS_EVERY`]; the
//!   old key retires from the JWKS on its own once its last token expired
//!   (every replica's key ring reloads the keys).

use std::{collections::HashSet, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    domain::now_micros,
    retention,
    store::{Store, jobs::NewJob},
    worker::{Failure, Worker},
};

/// Event retention's job kind.
pub const EVENTS: &str = "upkeep.events";
/// Expired tokens' job kind.
pub const TOKENS: &str = "upkeep.tokens";
/// Dead jobs' job kind.
pub const JOBS: &str = "upkeep.jobs";
/// Signing-key rotation's job kind.
pub const KEYS: &str = "upkeep.keys";
/// How often a due signing-key rotation is looked for.
pub const KEYS_EVERY: Duration = Duration::from_secs(60);
/// How often expired tokens are purged.
pub const TOKENS_EVERY: Duration = Duration::from_secs(600);
/// How often dead jobs are purged.
pub const JOBS_EVERY: Duration = Duration::from_secs(3600);
/// How long a dead job is kept for inspection.
pub const DEAD_JOBS_KEPT: Duration = Duration::from_secs(7 * 86_400);
/// How often the scheduler enqueues the next run of each kind.
const TICK: Duration = Duration::from_secs(5);
/// Rows per statement.
const BATCH: i64 = 1000;

/// A recurring kind and its period.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    kind: &'static str,
    every: Duration,
}

fn schedules(retention: Option<Duration>, rotation: Option<Duration>) -> Vec<Schedule> {
    let mut out = vec![
        Schedule {
            kind: TOKENS,
            every: TOKENS_EVERY,
        },
        Schedule {
            kind: JOBS,
            every: JOBS_EVERY,
        },
    ];
    if retention.is_some() {
        out.push(Schedule {
            kind: EVENTS,
            every: retention::EVERY,
        });
    }
    if rotation.is_some() {
        out.push(Schedule {
            kind: KEYS,
            every: KEYS_EVERY,
        });
    }
    out
}

/// The upkeep handlers on `worker`: event `retention`, and signing-key
/// `rotation` with `keys` when scheduled.
pub fn handlers(
    worker: Worker,
    store: &Store,
    retention: Option<Duration>,
    keys: &crate::oauth::keys::KeyRing,
    rotation: Option<Duration>,
) -> Worker {
    let worker = match rotation {
        Some(every) => {
            let (store, keys) = (store.clone(), keys.clone());
            worker.handle(KEYS, 1, move |_job| {
                let (store, keys) = (store.clone(), keys.clone());
                async move {
                    keys.rotate_due(&store, every)
                        .await
                        .map(drop)
                        .map_err(|e| Failure::transient(e.to_string()))
                }
            })
        }
        None => worker,
    };
    let worker = {
        let store = store.clone();
        worker.handle(TOKENS, 1, move |_job| {
            let store = store.clone();
            async move {
                match store.purge_expired_tokens(BATCH).await {
                    Ok(0) => Ok(()),
                    Ok(n) => {
                        tracing::info!(purged = n, "expired tokens deleted");
                        Ok(())
                    }
                    Err(e) => Err(Failure::transient(e.to_string())),
                }
            }
        })
    };
    let worker = {
        let store = store.clone();
        worker.handle(JOBS, 1, move |_job| {
            let store = store.clone();
            async move {
                let before = retention::cutoff(now_micros(), DEAD_JOBS_KEPT);
                store
                    .purge_dead_jobs(before, BATCH)
                    .await
                    .map(drop)
                    .map_err(|e| Failure::transient(e.to_string()))
            }
        })
    };
    match retention {
        Some(retention) => {
            let store = store.clone();
            worker.handle(EVENTS, 1, move |_job| {
                let store = store.clone();
                async move {
                    let cutoff = retention::cutoff(now_micros(), retention);
                    // Deliveries are kept as long as the events they carry.
                    match store.purge_deliveries(cutoff, retention::BATCH).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(purged = n, ?retention, "old webhook deliveries deleted")
                        }
                        Err(e) => return Err(Failure::transient(e.to_string())),
                    }
                    match store.purge_events(cutoff, retention::BATCH).await {
                        Ok(0) => Ok(()),
                        Ok(n) => {
                            tracing::info!(purged = n, ?retention, "old events deleted");
                            Ok(())
                        }
                        Err(e) => Err(Failure::transient(e.to_string())),
                    }
                }
            })
        }
        None => worker,
    }
}

/// Enqueues the next run of every upkeep kind whenever none is pending,
/// until `token` is cancelled: the first runs soon after start, the next
/// a period after the previous one finished.
pub async fn schedule(
    store: Store,
    retention: Option<Duration>,
    rotation: Option<Duration>,
    token: CancellationToken,
) {
    let schedules = schedules(retention, rotation);
    let mut first = true;
    loop {
        for s in &schedules {
            let delay = if first { retention::FIRST } else { s.every };
            let job = NewJob::new(s.kind, "")
                .unique(s.kind)
                .max_attempts(3)
                .run_after(now_micros().saturating_add(micros(delay)));
            if let Err(e) = store.enqueue(job).await {
                tracing::warn!(kind = s.kind, error = %e, "scheduling upkeep");
            }
        }
        first = false;
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Publishes the queue's depth and oldest pending age per kind
/// (`tollgate_jobs_pending`, `tollgate_jobs_oldest_seconds`) every few
/// seconds until `token` is cancelled.
pub async fn gauges(store: Store, token: CancellationToken) {
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        match store.job_depths().await {
            Ok(depths) => {
                let now = now_micros();
                let mut current = HashSet::new();
                for d in depths {
                    let age = (now - d.oldest).max(0) as f64 / 1e6;
                    metrics::gauge!("tollgate_jobs_pending", "kind" => d.kind.clone())
                        .set(d.pending as f64);
                    metrics::gauge!("tollgate_jobs_oldest_seconds", "kind" => d.kind.clone())
                        .set(age);
                    current.insert(d.kind);
                }
                // A kind drained since: zero, not its last value.
                for gone in seen.difference(&current) {
                    metrics::gauge!("tollgate_jobs_pending", "kind" => gone.clone()).set(0.0);
                    metrics::gauge!("tollgate_jobs_oldest_seconds", "kind" => gone.clone())
                        .set(0.0);
                }
                seen.extend(current);
            }
            Err(e) => tracing::warn!(error = %e, "reading the job queue's depth"),
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
