//! The worker: claims jobs of the kinds it has handlers for and runs them,
//! at most a given number at a time per kind (see [`crate::store::jobs`]
//! for the queue itself).
//!
//! Each claimed job runs in a task of its own with its lease renewed every
//! third of the lease while it runs. A handler's success deletes the job;
//! a failure puts it back with exponential backoff and full jitter (or at
//! the handler's `retry_after`), dead after its last attempt or at once
//! when the failure is permanent. Expired leases (a worker that died) are
//! taken back every [`REAP_EVERY`].
//!
//! At shutdown the worker claims nothing more, lets running jobs finish
//! for the grace it is given, then aborts the rest and releases them
//! (pending again, the attempt not counted).

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use opentelemetry::{KeyValue, context::FutureExt as _, trace::SpanKind};
use rand::Rng as _;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    domain::now_micros,
    otel,
    store::{Store, jobs::Job},
};

/// How often expired leases are taken back.
pub const REAP_EVERY: Duration = Duration::from_secs(5);
/// How often the queue is polled when no enqueue on this replica wakes
/// the worker.
pub const POLL: Duration = Duration::from_millis(500);
/// The first retry's ceiling; doubled per attempt.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait before a retry.
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// Why a job's attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// For the job's `last_error` and the logs.
    pub message: String,
    /// When to try again, if the handler knows better than the backoff
    /// (a webhook's `Retry-After`).
    pub retry_after: Option<Duration>,
    /// No retry can succeed: dead at once.
    pub permanent: bool,
}

impl Failure {
    /// A failure worth retrying with the backoff.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
            permanent: false,
        }
    }

    /// A failure no retry can fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry_after: None,
            permanent: true,
        }
    }
}

/// Runs the jobs of one kind.
pub trait Handler: Send + Sync + 'static {
    /// Runs `job` (possibly again: handlers must be idempotent).
    fn run(&self, job: Job) -> BoxFuture<'static, Result<(), Failure>>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    fn run(&self, job: Job) -> BoxFuture<'static, Result<(), Failure>> {
        Box::pin(self(job))
    }
}

/// A kind's handler and how many of its jobs may run at once.
struct Kind {
    handler: Arc<dyn Handler>,
    limit: usize,
    running: usize,
}

/// Whether a worker can claim jobs, for `/readyz`: its last claim round
/// succeeded, and recently (a worker whose loop is stuck is not ready).
#[derive(Debug, Default)]
pub struct Health {
    /// When the last claim round succeeded (microseconds; 0: never).
    last_ok: std::sync::atomic::AtomicI64,
    /// Whether the last claim round failed.
    failing: std::sync::atomic::AtomicBool,
}

impl Health {
    /// How long after its last good round a worker still counts as able
    /// to claim: many poll intervals, so a slow round does not flap it.
    pub const WITHIN: Duration = Duration::from_secs(10);

    fn record(&self, ok: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if ok {
            self.last_ok.store(crate::domain::now_micros(), Relaxed);
        }
        self.failing.store(!ok, Relaxed);
    }

    /// Whether the worker claimed (or could have) within [`Health::WITHIN`].
    pub fn can_claim(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let within = i64::try_from(Self::WITHIN.as_micros()).unwrap_or(i64::MAX);
        !self.failing.load(Relaxed)
            && crate::domain::now_micros() - self.last_ok.load(Relaxed) < within
    }
}

/// A worker: handlers by kind, the lease it claims with, its owner name.
pub struct Worker {
    store: Store,
    owner: String,
    kinds: HashMap<String, Kind>,
    lease: Duration,
    poll: Duration,
    health: Arc<Health>,
}

impl Worker {
    /// A worker on `store` named `owner` (unique among workers: it guards
    /// every update of a claimed job), with no handlers yet.
    pub fn new(store: Store, owner: impl Into<String>) -> Self {
        Self {
            store,
            owner: owner.into(),
            kinds: HashMap::new(),
            lease: Duration::from_secs(30),
            poll: POLL,
            health: Arc::default(),
        }
    }

    /// Whether it can claim jobs, kept current by [`Worker::run`].
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    /// A name for this process's worker: host, pid and a random suffix.
    pub fn process_owner() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        format!(
            "{host}:{}:{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )
    }

    /// Runs jobs of `kind` with `handler`, at most `limit` at a time.
    pub fn handle(mut self, kind: &str, limit: usize, handler: impl Handler) -> Self {
        self.kinds.insert(
            kind.to_owned(),
            Kind {
                handler: Arc::new(handler),
                limit: limit.max(1),
                running: 0,
            },
        );
        self
    }

    /// The lease a claim takes (default 30 s); renewed while a job runs.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// How often to look for due jobs without a wake-up (default 500 ms).
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Claims and runs jobs until `token` is cancelled; then lets running
    /// jobs finish for at most `grace` and releases the rest.
    pub async fn run(mut self, token: CancellationToken, grace: Duration) {
        let mut tasks: JoinSet<Attempted> = JoinSet::new();
        // Jobs whose handler succeeded, deleted together before the next
        // claim (one statement for many instead of one each).
        let mut done: Vec<i64> = Vec::new();
        // The jobs each task holds, to release those aborted at shutdown.
        let mut held: HashMap<tokio::task::Id, (String, i64)> = HashMap::new();
        let enqueued = self.store.jobs_enqueued();
        let mut next_reap = tokio::time::Instant::now();
        let lease_micros = i64::try_from(self.lease.as_micros()).unwrap_or(i64::MAX);
        while !token.is_cancelled() {
            self.complete(&mut done).await;
            if tokio::time::Instant::now() >= next_reap {
                match self.store.reap_jobs().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(jobs = n, "took back jobs whose worker's lease ended"),
                    Err(e) => tracing::warn!(error = %e, "reaping expired job leases"),
                }
                next_reap = tokio::time::Instant::now() + REAP_EVERY;
            }
            let mut claimed_any = false;
            let mut round_ok = true;
            let kinds: Vec<String> = self.kinds.keys().cloned().collect();
            for name in kinds {
                let Some(kind) = self.kinds.get(&name) else {
                    continue;
                };
                let free = kind.limit.saturating_sub(kind.running);
                if free == 0 {
                    continue;
                }
                let claimed = match self
                    .store
                    .claim_jobs(&name, &self.owner, free as i64, lease_micros)
                    .await
                {
                    Ok(jobs) => jobs,
                    Err(e) => {
                        tracing::warn!(kind = %name, error = %e, "claiming jobs");
                        round_ok = false;
                        continue;
                    }
                };
                claimed_any |= !claimed.is_empty();
                for job in claimed {
                    let Some(kind) = self.kinds.get_mut(&name) else {
                        break;
                    };
                    kind.running += 1;
                    let handle = tasks.spawn(attempt(
                        self.store.clone(),
                        self.owner.clone(),
                        kind.handler.clone(),
                        job.clone(),
                        self.lease,
                    ));
                    held.insert(handle.id(), (name.clone(), job.id));
                }
            }
            self.health.record(round_ok);
            if claimed_any {
                // More may be due: claim again before sleeping, once the
                // jobs just started had a turn to finish (so the next claim
                // takes many jobs rather than one).
                tokio::task::yield_now().await;
                while let Some(finished) = tasks.try_join_next_with_id() {
                    self.finished(finished, &mut held, &mut done);
                }
                continue;
            }
            tokio::select! {
                () = token.cancelled() => break,
                () = enqueued.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
                Some(finished) = tasks.join_next_with_id() => self.finished(finished, &mut held, &mut done),
            }
            while let Some(finished) = tasks.try_join_next_with_id() {
                self.finished(finished, &mut held, &mut done);
            }
        }
        // Shutting down: no more claims; running jobs get the grace.
        let deadline = tokio::time::Instant::now() + grace;
        while !tasks.is_empty() {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                Some(finished) = tasks.join_next_with_id() => self.finished(finished, &mut held, &mut done),
            }
        }
        tasks.abort_all();
        while let Some(finished) = tasks.join_next_with_id().await {
            self.finished(finished, &mut held, &mut done);
        }
        self.complete(&mut done).await;
        for (_, (kind, id)) in held {
            match self.store.release_job(id, &self.owner).await {
                Ok(_) => tracing::info!(kind, job = id, "released at shutdown"),
                Err(e) => {
                    tracing::warn!(kind, job = id, error = %e, "releasing a job at shutdown; its lease will end")
                }
            }
        }
    }

    /// Deletes the jobs in `done` (their handlers succeeded).
    async fn complete(&self, done: &mut Vec<i64>) {
        if done.is_empty() {
            return;
        }
        let ids = std::mem::take(done);
        match self.store.complete_jobs(&ids, &self.owner).await {
            Ok(n) if n < ids.len() => tracing::warn!(
                finished = ids.len(),
                held = n,
                "finished jobs whose lease had ended; they may run again"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(jobs = ids.len(), error = %e, "recording finished jobs; they may run again")
            }
        }
    }

    /// Books a finished task: its kind has a free slot again, and a
    /// success is queued for [`Worker::complete`]. An aborted task's job
    /// stays in `held`, to be released.
    fn finished(
        &mut self,
        finished: Result<(tokio::task::Id, Attempted), tokio::task::JoinError>,
        held: &mut HashMap<tokio::task::Id, (String, i64)>,
        done: &mut Vec<i64>,
    ) {
        let id = match &finished {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let cancelled = matches!(&finished, Err(e) if e.is_cancelled());
        let entry = if cancelled {
            held.get(&id).cloned()
        } else {
            held.remove(&id)
        };
        if let Ok((_, attempted)) = &finished
            && attempted.succeeded
        {
            done.push(attempted.id);
        }
        if let Some((kind, _)) = entry
            && let Some(kind) = self.kinds.get_mut(&kind)
        {
            kind.running = kind.running.saturating_sub(1);
        }
    }
}

/// What an attempt's task reports.
struct Attempted {
    /// The job's id.
    id: i64,
    /// Whether its handler succeeded (the worker deletes it); a failure
    /// was recorded by the task.
    succeeded: bool,
}

/// One attempt of `job`: the handler, its lease renewed meanwhile, then the
/// outcome recorded.
async fn attempt(
    store: Store,
    owner: String,
    handler: Arc<dyn Handler>,
    job: Job,
    lease: Duration,
) -> Attempted {
    let lease_micros = i64::try_from(lease.as_micros()).unwrap_or(i64::MAX);
    let started = std::time::Instant::now();
    // A trace of its own per attempt (what it writes carries it; a
    // webhook delivery is its child).
    let span = otel::child::Span::root(
        format!("job {}", job.kind),
        SpanKind::Consumer,
        Vec::new(),
        || {
            vec![
                KeyValue::new("tollgate.job.kind", job.kind.clone()),
                KeyValue::new("tollgate.job.id", job.id),
                KeyValue::new("tollgate.job.attempt", i64::from(job.attempts)),
            ]
        },
    );
    let run = handler
        .run(job.clone())
        .with_context(span.context().cloned().unwrap_or_default());
    tokio::pin!(run);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            () = tokio::time::sleep(lease / 3) => {
                match store.renew_job(job.id, &owner, lease_micros).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(kind = %job.kind, job = job.id, "lost the lease of a running job; it may run again elsewhere"),
                    Err(e) => tracing::warn!(kind = %job.kind, job = job.id, error = %e, "renewing a job's lease"),
                }
            }
        }
    };
    let took = started.elapsed();
    let outcome_label = match &outcome {
        Ok(()) => "done",
        Err(f) if f.permanent || job.attempts >= job.max_attempts => "dead",
        Err(_) => "retry",
    };
    metrics::counter!("tollgate_jobs_total", "kind" => job.kind.clone(), "outcome" => outcome_label)
        .increment(1);
    span.set(KeyValue::new("tollgate.job.outcome", outcome_label));
    if outcome.is_err() {
        span.fail(outcome_label);
    }
    span.end();
    metrics::histogram!("tollgate_job_seconds", "kind" => job.kind.clone())
        .record(took.as_secs_f64());
    if let Err(failure) = &outcome {
        let wait = failure.retry_after.unwrap_or_else(|| backoff(job.attempts));
        let retry_at =
            now_micros().saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
        tracing::warn!(kind = %job.kind, job = job.id, attempt = job.attempts, outcome = outcome_label, error = %failure, "job failed");
        match store
            .fail_job(&job, &owner, &failure.message, retry_at, failure.permanent)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(kind = %job.kind, job = job.id, "failed a job whose lease had ended")
            }
            Err(e) => {
                tracing::warn!(kind = %job.kind, job = job.id, error = %e, "recording a failed attempt; its lease will end")
            }
        }
    }
    Attempted {
        id: job.id,
        succeeded: outcome.is_ok(),
    }
}

/// The wait before retrying after failed attempt `attempts` (from 1):
/// full jitter over `BACKOFF_BASE * 2^(attempts-1)`, at most
/// `BACKOFF_MAX`.
pub fn backoff(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let ceiling = BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX);
    ceiling.mul_f64(rand::rng().random_range(0.0..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..40 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(BACKOFF_MAX);
            for _ in 0..20 {
                assert!(backoff(attempt) <= ceiling, "{attempt}");
            }
        }
        // Jittered, not fixed.
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(samples.len() > 1);
    }
}
