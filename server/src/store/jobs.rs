//! The job queue: background work kept in the database (no other server to
//! run), claimed by workers under a lease.
//!
//! A job is pending until a worker claims it: the claim sets it running,
//! names the worker (`lease_owner`) and when its lease ends, and counts an
//! attempt. The worker then deletes it (done), or puts it back pending
//! for later (a failure, with backoff), or dead (the last attempt failed),
//! or pending as it was (released at shutdown, the attempt not counted).
//! A worker that dies keeps its jobs only until their leases end: the
//! next claim round on any worker takes them back ([`Store::reap_jobs`]),
//! so they run again elsewhere. Handlers must therefore be idempotent or
//! guarded by a key of their own.
//!
//! Claims take the oldest due jobs of a kind, highest priority first: on
//! PostgreSQL with `FOR UPDATE SKIP LOCKED`, so concurrent workers claim
//! disjoint jobs without waiting on each other; on SQLite inside the write
//! transaction that holds the database's one write lock.
//!
//! A job may carry a unique key: at most one job with that key is pending
//! or running (a partial unique index), so scheduled work enqueued by every
//! replica runs once per period.
//!
//! Hand-written (see `CRATES.md`): the Rust job queues are PostgreSQL-only
//! or bring a second database stack.

use diesel::{ExpressionMethods, OptionalExtension as _, QueryDsl, RunQueryDsl};

use super::{DbConnection, Store, schema::jobs};
use crate::domain::{Error, Result, now_micros};

/// Waiting for its run-after time or a worker.
pub const PENDING: i16 = 0;
/// Claimed by a worker whose lease has not ended.
pub const RUNNING: i16 = 1;
/// Failed its last attempt; kept for inspection.
pub const DEAD: i16 = 2;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// What runs it (a worker handler's kind).
    pub kind: String,
    /// The handler's input (JSON by convention).
    pub payload: String,
    /// At most one pending or running job per key.
    pub unique_key: Option<String>,
    /// Higher runs first among due jobs of a kind.
    pub priority: i16,
    /// Not before this (microseconds since the epoch).
    pub run_after: i64,
    /// Attempts before it is dead.
    pub max_attempts: i32,
}

impl NewJob {
    /// A job of `kind` with `payload`, due now, at most 10 attempts.
    pub fn new(kind: impl Into<String>, payload: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            payload: payload.into(),
            unique_key: None,
            priority: 0,
            run_after: now_micros(),
            max_attempts: 10,
        }
    }

    /// At most one pending or running job with `key`.
    pub fn unique(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Not before `micros`.
    pub fn run_after(mut self, micros: i64) -> Self {
        self.run_after = micros;
        self
    }

    /// Attempts before it is dead (at least 1).
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Its priority among due jobs of its kind.
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }
}

/// A claimed job.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable)]
pub struct Job {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its input.
    pub payload: String,
    /// Attempts so far, this one included.
    pub attempts: i32,
    /// Attempts before it is dead.
    pub max_attempts: i32,
}

/// What a job's row says, for tests and inspection.
#[derive(Debug, Clone, PartialEq, Eq, diesel::Queryable)]
pub struct JobRow {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// [`PENDING`], [`RUNNING`] or [`DEAD`].
    pub state: i16,
    /// Attempts so far.
    pub attempts: i32,
    /// Not before this.
    pub run_after: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// Pending jobs of a kind: how many, and since when the oldest is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    /// The kind.
    pub kind: String,
    /// Pending jobs.
    pub pending: i64,
    /// The oldest pending job's run-after time (microseconds).
    pub oldest: i64,
}

/// The columns a claim returns.
type JobColumns = (
    jobs::id,
    jobs::kind,
    jobs::payload,
    jobs::attempts,
    jobs::max_attempts,
);
const JOB_COLUMNS: JobColumns = (
    jobs::id,
    jobs::kind,
    jobs::payload,
    jobs::attempts,
    jobs::max_attempts,
);

impl Store {
    /// Enqueues `job`: its id, or `None` when a job with its unique key is
    /// already pending or running (nothing enqueued).
    pub async fn enqueue(&self, job: NewJob) -> Result<Option<i64>> {
        self.db
            .run(move |conn| enqueue_on(conn, &job))
            .await
            .inspect(|enqueued| {
                if enqueued.is_some() {
                    self.jobs_enqueued.notify_waiters();
                }
            })
    }

    /// Claims at most `limit` due jobs of `kind` for `owner`, leased for
    /// `lease_micros`.
    pub async fn claim_jobs(
        &self,
        kind: &str,
        owner: &str,
        limit: i64,
        lease_micros: i64,
    ) -> Result<Vec<Job>> {
        let (kind, owner) = (kind.to_owned(), owner.to_owned());
        self.db
            .write(move |conn| {
                let now = now_micros();
                let due = jobs::table
                    .filter(jobs::state.eq(PENDING))
                    .filter(jobs::kind.eq(&kind))
                    .filter(jobs::run_after.le(now))
                    .order((jobs::priority.desc(), jobs::run_after.asc(), jobs::id.asc()))
                    .limit(limit)
                    .select(jobs::id);
                let ids: Vec<i64> = match conn {
                    // Rows another worker is claiming are skipped, not
                    // waited for.
                    DbConnection::Postgres(pg) => due.for_update().skip_locked().load(pg)?,
                    // The write transaction holds SQLite's one write lock.
                    DbConnection::Sqlite(lite) => due.load(lite)?,
                };
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                // Still pending: a claim racing this one on a backend
                // without row locks would find them running.
                diesel::update(
                    jobs::table
                        .filter(jobs::id.eq_any(&ids))
                        .filter(jobs::state.eq(PENDING)),
                )
                .set((
                    jobs::state.eq(RUNNING),
                    jobs::lease_owner.eq(&owner),
                    jobs::lease_expiry.eq(now.saturating_add(lease_micros)),
                    jobs::attempts.eq(jobs::attempts + 1),
                    jobs::update_time.eq(now),
                ))
                .execute(conn)?;
                Ok(jobs::table
                    .filter(jobs::id.eq_any(&ids))
                    .filter(jobs::lease_owner.eq(&owner))
                    .filter(jobs::state.eq(RUNNING))
                    .order(jobs::id.asc())
                    .select(JOB_COLUMNS)
                    .load(conn)?)
            })
            .await
    }

    /// Finishes job `id` of `owner`: deleted. `false` when `owner` no
    /// longer holds it (its lease ended and it was taken back).
    pub async fn complete_job(&self, id: i64, owner: &str) -> Result<bool> {
        Ok(self.complete_jobs(&[id], owner).await? == 1)
    }

    /// Finishes the jobs `ids` that `owner` holds: deleted. Returns how
    /// many it still held (the others' leases ended and they were taken
    /// back).
    pub async fn complete_jobs(&self, ids: &[i64], owner: &str) -> Result<usize> {
        let (ids, owner) = (ids.to_vec(), owner.to_owned());
        self.db
            .run(move |conn| {
                Ok(diesel::delete(
                    jobs::table
                        .filter(jobs::id.eq_any(&ids))
                        .filter(jobs::state.eq(RUNNING))
                        .filter(jobs::lease_owner.eq(&owner)),
                )
                .execute(conn)?)
            })
            .await
    }

    /// Records a failed attempt of job `job` held by `owner`: pending
    /// again from `retry_at` (microseconds), or dead when it was the last
    /// attempt or `permanent`. `false` when `owner` no longer holds it.
    pub async fn fail_job(
        &self,
        job: &Job,
        owner: &str,
        error: &str,
        retry_at: i64,
        permanent: bool,
    ) -> Result<bool> {
        let dead = permanent || job.attempts >= job.max_attempts;
        let (id, owner) = (job.id, owner.to_owned());
        // Bounded: a handler's error may quote a whole response.
        let error: String = error.chars().take(1000).collect();
        self.db
            .run(move |conn| {
                Ok(diesel::update(
                    jobs::table
                        .filter(jobs::id.eq(id))
                        .filter(jobs::state.eq(RUNNING))
                        .filter(jobs::lease_owner.eq(&owner)),
                )
                .set((
                    jobs::state.eq(if dead { DEAD } else { PENDING }),
                    jobs::run_after.eq(retry_at),
                    jobs::last_error.eq(Some(error)),
                    jobs::lease_owner.eq(None::<String>),
                    jobs::lease_expiry.eq(None::<i64>),
                    jobs::update_time.eq(now_micros()),
                ))
                .execute(conn)?
                    == 1)
            })
            .await
    }

    /// Gives job `id` back untried (a worker stopping before it ran it):
    /// pending again, its attempt not counted.
    pub async fn release_job(&self, id: i64, owner: &str) -> Result<bool> {
        let owner = owner.to_owned();
        self.db
            .run(move |conn| {
                Ok(diesel::update(
                    jobs::table
                        .filter(jobs::id.eq(id))
                        .filter(jobs::state.eq(RUNNING))
                        .filter(jobs::lease_owner.eq(&owner)),
                )
                .set((
                    jobs::state.eq(PENDING),
                    jobs::attempts.eq(jobs::attempts - 1),
                    jobs::lease_owner.eq(None::<String>),
                    jobs::lease_expiry.eq(None::<i64>),
                    jobs::update_time.eq(now_micros()),
                ))
                .execute(conn)?
                    == 1)
            })
            .await
    }

    /// Extends the lease of job `id` held by `owner`; `false` when it no
    /// longer holds it.
    pub async fn renew_job(&self, id: i64, owner: &str, lease_micros: i64) -> Result<bool> {
        let owner = owner.to_owned();
        self.db
            .run(move |conn| {
                Ok(diesel::update(
                    jobs::table
                        .filter(jobs::id.eq(id))
                        .filter(jobs::state.eq(RUNNING))
                        .filter(jobs::lease_owner.eq(&owner)),
                )
                .set(jobs::lease_expiry.eq(now_micros().saturating_add(lease_micros)))
                .execute(conn)?
                    == 1)
            })
            .await
    }

    /// Takes back the jobs whose lease ended (their worker died or lost
    /// the database): pending again, or dead when that was their last
    /// attempt. Returns how many.
    pub async fn reap_jobs(&self) -> Result<usize> {
        self.db
            .write(|conn| {
                let now = now_micros();
                let expired = jobs::table
                    .filter(jobs::state.eq(RUNNING))
                    .filter(jobs::lease_expiry.lt(now));
                let dead = diesel::update(expired.filter(jobs::attempts.ge(jobs::max_attempts)))
                    .set((
                        jobs::state.eq(DEAD),
                        jobs::last_error
                            .eq(Some("its worker's lease ended during the last attempt")),
                        jobs::lease_owner.eq(None::<String>),
                        jobs::lease_expiry.eq(None::<i64>),
                        jobs::update_time.eq(now),
                    ))
                    .execute(conn)?;
                let again = diesel::update(expired)
                    .set((
                        jobs::state.eq(PENDING),
                        jobs::last_error.eq(Some("its worker's lease ended")),
                        jobs::lease_owner.eq(None::<String>),
                        jobs::lease_expiry.eq(None::<i64>),
                        jobs::update_time.eq(now),
                    ))
                    .execute(conn)?;
                Ok(dead + again)
            })
            .await
    }

    /// Pending jobs per kind.
    pub async fn job_depths(&self) -> Result<Vec<Depth>> {
        self.db
            .run(|conn| {
                let rows: Vec<(String, i64, Option<i64>)> = jobs::table
                    .filter(jobs::state.eq(PENDING))
                    .group_by(jobs::kind)
                    .select((
                        jobs::kind,
                        diesel::dsl::count_star(),
                        diesel::dsl::min(jobs::run_after),
                    ))
                    .load(conn)?;
                Ok(rows
                    .into_iter()
                    .map(|(kind, pending, oldest)| Depth {
                        kind,
                        pending,
                        oldest: oldest.unwrap_or_default(),
                    })
                    .collect())
            })
            .await
    }

    /// Job `id`'s row, if it still exists (done jobs are deleted).
    pub async fn job(&self, id: i64) -> Result<Option<JobRow>> {
        self.db
            .run(move |conn| {
                Ok(jobs::table
                    .find(id)
                    .select((
                        jobs::id,
                        jobs::kind,
                        jobs::state,
                        jobs::attempts,
                        jobs::run_after,
                        jobs::last_error,
                    ))
                    .first(conn)
                    .optional()?)
            })
            .await
    }
}

/// Enqueues `many` in one statement per 500, each skipped when a job
/// with its unique key is pending or running; returns how many were
/// enqueued. For callers that need no ids (the relay's fan-out).
pub(crate) fn enqueue_many_on(conn: &mut DbConnection, many: &[NewJob]) -> Result<usize> {
    let now = now_micros();
    let mut inserted = 0;
    for chunk in many.chunks(500) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|job| {
                (
                    jobs::kind.eq(&job.kind),
                    jobs::payload.eq(&job.payload),
                    jobs::unique_key.eq(&job.unique_key),
                    jobs::priority.eq(job.priority),
                    jobs::state.eq(PENDING),
                    jobs::run_after.eq(job.run_after),
                    jobs::attempts.eq(0),
                    jobs::max_attempts.eq(job.max_attempts.max(1)),
                    jobs::create_time.eq(now),
                    jobs::update_time.eq(now),
                )
            })
            .collect();
        inserted += match conn {
            DbConnection::Postgres(pg) => diesel::insert_into(jobs::table)
                .values(&rows)
                .on_conflict_do_nothing()
                .execute(pg)?,
            // Row by row: diesel has no batch insert with ON CONFLICT for
            // SQLite, and an in-process database has no round trips.
            DbConnection::Sqlite(lite) => {
                let mut n = 0;
                for row in &rows {
                    n += diesel::insert_into(jobs::table)
                        .values(*row)
                        .on_conflict_do_nothing()
                        .execute(lite)?;
                }
                n
            }
        };
    }
    Ok(inserted)
}

/// The insert, on either backend: `ON CONFLICT DO NOTHING` against the
/// unique key's partial index.
pub(crate) fn enqueue_on(conn: &mut DbConnection, job: &NewJob) -> Result<Option<i64>> {
    let now = now_micros();
    let values = (
        jobs::kind.eq(&job.kind),
        jobs::payload.eq(&job.payload),
        jobs::unique_key.eq(&job.unique_key),
        jobs::priority.eq(job.priority),
        jobs::state.eq(PENDING),
        jobs::run_after.eq(job.run_after),
        jobs::attempts.eq(0),
        jobs::max_attempts.eq(job.max_attempts.max(1)),
        jobs::create_time.eq(now),
        jobs::update_time.eq(now),
    );
    let inserted = match conn {
        DbConnection::Postgres(pg) => diesel::insert_into(jobs::table)
            .values(values)
            .on_conflict_do_nothing()
            .execute(pg)?,
        DbConnection::Sqlite(lite) => diesel::insert_into(jobs::table)
            .values(values)
            .on_conflict_do_nothing()
            .execute(lite)?,
    };
    if inserted == 0 {
        if job.unique_key.is_none() {
            return Err(Error::Internal(
                "a job without a unique key was not inserted".into(),
            ));
        }
        return Ok(None);
    }
    // The id just taken, read in SQL: RETURNING needs a diesel feature for
    // SQLite that the MultiConnection cannot express.
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let last = match conn {
        DbConnection::Postgres(_) => "SELECT lastval() AS id",
        DbConnection::Sqlite(_) => "SELECT last_insert_rowid() AS id",
    };
    let id: Id = diesel::sql_query(last).get_result(conn)?;
    Ok(Some(id.id))
}

impl Store {
    /// Deletes dead jobs last changed before `before` (microseconds), at
    /// most `batch` per statement; returns how many.
    pub async fn purge_dead_jobs(&self, before: i64, batch: i64) -> Result<u64> {
        let mut purged = 0u64;
        loop {
            let n = self
                .db
                .run(move |conn| {
                    let ids: Vec<i64> = jobs::table
                        .filter(jobs::state.eq(DEAD))
                        .filter(jobs::update_time.lt(before))
                        .limit(batch.max(1))
                        .select(jobs::id)
                        .load(conn)?;
                    Ok(diesel::delete(jobs::table.filter(jobs::id.eq_any(&ids))).execute(conn)?)
                })
                .await?;
            purged += n as u64;
            if (n as i64) < batch.max(1) {
                return Ok(purged);
            }
        }
    }
}
