//! The Redis backend: every replica decides against the same counters, and
//! Redis's clock (not each replica's) decides.
//!
//! **One round trip per decision.** [`RedisLimiter::decide`] sends one
//! pipeline holding one `EVALSHA` of `limit.lua` per charge that the local
//! pre-check did not answer: a decision with a rate limit and two quotas
//! makes three `EVALSHA` calls in one round trip. A second round trip happens
//! only when Redis lost the script (`SCRIPT FLUSH`, a restart, a failover to
//! a replica that never saw it): `SCRIPT LOAD` and the calls that found no
//! script, in one more pipeline.
//!
//! **One key per call**, `tg:rl:{<charge key>}`: the hash tag around the
//! whole counter key puts each counter on its own cluster slot, and no
//! script touches two keys. So each charge is atomic on its own counter, and
//! the charges of one decision are independent: a refused charge takes
//! nothing, but the others of the same decision that fit are kept, as
//! Envoy's rate limit service does (the in-process backend follows the same
//! rule).
//!
//! **Exactly [`Limit::decide`].** The script mirrors its integer arithmetic
//! in Lua doubles (exact below 2^53: hence [`MAX_EXACT`]), reading the time
//! with `TIME`; the tests compare the two number for number.
//!
//! **Bounded waits.** A decision waits at most the configured timeout, then
//! fails with [`RedisLimitError::Unavailable`] and the policy's fail-open or
//! fail-closed applies. The connection is made and remade in the
//! background (the limiter is usable, answering `Unavailable`, while Redis
//! is down, including at start-up), and replaced when Redis stops answering
//! for a second or turns read-only (a failover behind the same name). A
//! call that timed out may still reach Redis later and take its units.
//!
//! **Local pre-check.** A refusal holds until its `retry_after` whatever
//! the other replicas do (they can only take more), so the limiter
//! remembers refusals (bounded, each entry expiring at its retry instant)
//! and refuses the same or a larger charge on that counter without a round
//! trip: a caller far over its limit costs Redis nothing.

use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use metrics::{Counter, Histogram};
use redis::{
    ErrorKind, RedisError, ServerError, ServerErrorKind, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::limit::{Algorithm, Charge, Decision, Limit, QuotaWindow};

/// The decision script; its header documents arguments and replies. Public
/// for the benchmark, which runs it under redis-benchmark as its baseline.
pub const SCRIPT: &str = include_str!("limit.lua");

/// How long a decision waits for Redis unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5);

/// What every counter key starts with; the counter key follows in braces.
pub const KEY_PREFIX: &str = "tg:rl:";

/// The largest limit, burst and period (in µs, about 35 years) the script
/// computes exactly, and for GCRA the largest burst tolerance (emission
/// interval × burst, in µs). Larger charges fail with
/// [`RedisLimitError::OutOfRange`]; costs are never out of range.
pub const MAX_EXACT: u64 = 1 << 50;

/// Counters whose last refusal is remembered for the pre-check.
const PRECHECK_CAPACITY: u64 = 100_000;

/// How long Redis may fail every call before the connection is replaced,
/// and the least time between two replacements.
const RENEW_AFTER: Duration = Duration::from_secs(1);

/// The least time one connection attempt may take, whatever the decision
/// timeout: connecting (TLS included) happens in the background.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// How long one background `SCRIPT LOAD` (which connects first) may take.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the Redis backend could not decide.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    /// The URL does not parse (the message never holds the password).
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// [`RedisLimiter::connect`] was called outside a Tokio runtime.
    #[error("the Redis rate limiter must be created inside a Tokio runtime")]
    NoRuntime,
    /// Redis did not answer within the timeout: down, slow, reconnecting,
    /// read-only, or the reply was not the script's. Nothing is known of
    /// the charges sent; the policy's fail-open or fail-closed applies.
    #[error("Redis did not answer the rate-limit decision in time")]
    Unavailable,
    /// A limit the script cannot compute exactly (see [`MAX_EXACT`]).
    #[error("the limit of counter '{key}' is beyond what the Redis backend computes exactly")]
    OutOfRange {
        /// The counter's key.
        key: String,
    },
}

/// The Redis decision engine. Cheap to clone: clones share the connection,
/// the pre-check and the counters.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("timeout", &self.inner.timeout)
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Replaced as a whole when the connection is renewed; a decision
    /// clones it (an `Arc`) and never holds the lock across an await.
    manager: RwLock<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    refusals: moka::sync::Cache<Box<str>, Refusal>,
    /// Origin of the µs timestamps below.
    epoch: Instant,
    /// µs since `epoch` (plus one) of the first failure since the last
    /// success; 0 while Redis answers.
    failing_since: AtomicU64,
    /// µs since `epoch` of the last connection renewal.
    renewed_at: AtomicU64,
    /// Whether a background `SCRIPT LOAD` loop is running.
    warming: AtomicBool,
    round_trips: AtomicU64,
    metrics: Metrics,
}

struct Metrics {
    duration: Histogram,
    timeouts: Counter,
    connection: Counter,
    script: Counter,
    precheck: Counter,
}

impl Metrics {
    fn new() -> Self {
        // The handles bind to the recorder installed now.
        crate::admin::prometheus();
        let error = |kind: &'static str| metrics::counter!("tollgate_ratelimit_redis_errors_total", "kind" => kind);
        Self {
            duration: metrics::histogram!("tollgate_ratelimit_redis_duration_seconds"),
            timeouts: error("timeout"),
            connection: error("connection"),
            script: error("script"),
            precheck: metrics::counter!("tollgate_ratelimit_precheck_refusals_total"),
        }
    }
}

/// A refusal Redis gave, remembered until the charge could fit.
#[derive(Debug, Clone, Copy)]
struct Refusal {
    limit: Limit,
    cost: u64,
    /// The earliest instant the refused charge could fit: measured from
    /// when the call was sent, so never later than the truth.
    until: Instant,
    remaining: u64,
    reset_at: Instant,
}

/// Entries live until their own `until`.
struct UntilExpiry;

impl moka::Expiry<Box<str>, Refusal> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        value: &Refusal,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &Box<str>,
        value: &Refusal,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.until.saturating_duration_since(updated_at))
    }
}

/// What went wrong on one round trip, for the metrics and the health.
#[derive(Debug)]
enum Fault {
    Timeout,
    /// Redis unreachable or not serving (down, loading, read-only, busy);
    /// `renew` when the connection must be replaced to recover.
    Connection {
        renew: bool,
        error: String,
    },
    /// A reply that is not the script's: a bug, not an outage.
    Script(String),
}

/// How [`Inner::decide`] runs: as in production, or pinned for tests.
#[derive(Debug, Clone, Copy)]
struct Options {
    /// The time the script uses instead of Redis `TIME` (tests only).
    now_us: Option<u64>,
    /// Whether remembered refusals answer locally.
    precheck: bool,
}

impl Options {
    const LIVE: Self = Self {
        now_us: None,
        precheck: true,
    };
}

/// One answer, with the Redis time it was decided at (`None` when the
/// pre-check answered).
#[derive(Debug, Clone, Copy)]
struct Answer {
    decision: Decision,
    #[cfg_attr(not(test), allow(dead_code))]
    redis_now_us: Option<u64>,
}

/// One charge as the script takes it.
struct Call<'a> {
    /// The counter key, not yet prefixed: a pre-checked charge never
    /// needs its Redis key.
    counter: &'a str,
    algorithm: u8,
    limit: u64,
    period_us: u64,
    burst: u64,
    /// The cost sent: a charge that can never fit is sent as the smallest
    /// such cost, whose answer is the same but for GCRA's retry delay.
    cost: u64,
    dry_run: bool,
    /// A GCRA charge sent with a smaller cost: its retry delay is
    /// recomputed for the real one.
    clamped: Option<Clamped>,
    /// `Decision::limit`.
    reported_limit: u64,
}

/// The real cost of a GCRA charge that can never fit, with what
/// [`Limit::decide`] needs to compute its retry delay.
#[derive(Debug, Clone, Copy)]
struct Clamped {
    cost: u64,
    interval_us: u64,
    tolerance_us: u64,
}

impl<'a> Call<'a> {
    fn new(charge: &Charge<'a>) -> Result<Self, RedisLimitError> {
        let limit = charge.limit;
        let period_us = u64::try_from(limit.period.as_micros()).unwrap_or(u64::MAX);
        let out_of_range = || RedisLimitError::OutOfRange {
            key: charge.key.to_owned(),
        };
        let (algorithm, period_us) = match limit.algorithm {
            Algorithm::Gcra => (1, period_us),
            Algorithm::SlidingWindow => (2, period_us),
            Algorithm::Quota(QuotaWindow::Day) => (3, 0),
            Algorithm::Quota(QuotaWindow::Month) => (4, 0),
        };
        if limit.limit > MAX_EXACT || limit.burst > MAX_EXACT || period_us > MAX_EXACT {
            return Err(out_of_range());
        }
        let (cost, clamped, reported_limit) = if algorithm == 1 {
            let interval_us = limit.emission_interval_us();
            let burst = limit.burst.max(1);
            let tolerance_us = interval_us.saturating_mul(burst);
            if tolerance_us > MAX_EXACT {
                return Err(out_of_range());
            }
            // More than the burst never fits: the script gets the smallest
            // such cost, whose answer differs only in the retry delay.
            let sent = charge.cost.min(burst + 1);
            let clamped = (sent < charge.cost).then_some(Clamped {
                cost: charge.cost,
                interval_us,
                tolerance_us,
            });
            (sent, clamped, burst)
        } else {
            // Likewise, more than the limit never fits, and the answer is
            // the same for any such cost.
            (charge.cost.min(limit.limit + 1), None, limit.limit)
        };
        Ok(Self {
            counter: charge.key,
            algorithm,
            limit: limit.limit,
            period_us,
            burst: limit.burst,
            cost,
            dry_run: charge.dry_run,
            clamped,
            reported_limit,
        })
    }

    fn command(&self, sha: &str, now_us: Option<u64>) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha)
            .arg(1)
            .arg(redis_key(self.counter))
            .arg(self.algorithm)
            .arg(self.limit)
            .arg(self.period_us)
            .arg(self.burst)
            .arg(self.cost)
            .arg(u8::from(self.dry_run));
        if let Some(now) = now_us {
            cmd.arg(now);
        }
        cmd
    }

    fn decision(&self, reply: Reply) -> Decision {
        let retry_after_us = match (reply.allowed, self.clamped) {
            (true, _) => 0,
            (false, None) => reply.retry_after_us,
            // As `Limit::decide` does, saturation included: a refused GCRA
            // charge reports `reset_after = tat - now`.
            (false, Some(c)) => {
                let tat = reply.now_us.saturating_add(reply.reset_after_us);
                tat.saturating_add(c.interval_us.saturating_mul(c.cost))
                    .saturating_sub(c.tolerance_us)
                    .saturating_sub(reply.now_us)
            }
        };
        Decision {
            allowed: reply.allowed,
            limit: self.reported_limit,
            remaining: reply.remaining,
            reset_after: Duration::from_micros(reply.reset_after_us),
            retry_after: Duration::from_micros(retry_after_us),
        }
    }
}

/// The Redis key of a counter: hash-tagged, so the whole counter key picks
/// the cluster slot.
pub fn redis_key(counter: &str) -> String {
    format!("{KEY_PREFIX}{{{counter}}}")
}

/// The script's reply.
#[derive(Debug, Clone, Copy)]
struct Reply {
    allowed: bool,
    remaining: u64,
    reset_after_us: u64,
    retry_after_us: u64,
    now_us: u64,
}

impl Reply {
    fn parse(value: Value) -> Result<Self, Fault> {
        if let Value::ServerError(e) = value {
            return Err(server_fault(&e));
        }
        let (allowed, remaining, reset, retry, now): (i64, i64, i64, i64, i64) =
            redis::from_redis_value(value)
                .map_err(|e| Fault::Script(format!("unexpected reply: {e}")))?;
        let unsigned = |n: i64| {
            u64::try_from(n).map_err(|_| Fault::Script(format!("negative number {n} in reply")))
        };
        Ok(Self {
            allowed: allowed == 1,
            remaining: unsigned(remaining)?,
            reset_after_us: unsigned(reset)?,
            retry_after_us: unsigned(retry)?,
            now_us: unsigned(now)?,
        })
    }
}

fn server_fault(e: &ServerError) -> Fault {
    let unavailable = |renew| Fault::Connection {
        renew,
        error: e.to_string(),
    };
    match e.kind() {
        Some(ServerErrorKind::ReadOnly) => unavailable(true),
        Some(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        ) => unavailable(false),
        _ if e.code() == "BUSY" => unavailable(false),
        _ => Fault::Script(e.to_string()),
    }
}

fn redis_fault(e: &RedisError) -> Fault {
    if e.is_timeout() {
        return Fault::Timeout;
    }
    match e.kind() {
        ErrorKind::Server(_) | ErrorKind::Extension => match e.clone().into_server_errors() {
            Some(errors) => match errors.first() {
                Some((_, first)) => server_fault(first),
                None => Fault::Script(e.to_string()),
            },
            None => Fault::Script(e.to_string()),
        },
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => Fault::Script(e.to_string()),
        _ => Fault::Connection {
            renew: false,
            error: e.to_string(),
        },
    }
}

fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript))
}

impl RedisLimiter {
    /// A limiter on the Redis at `url` (`redis://[user:password@]host[:port][/db]`
    /// or `rediss://` for TLS with the system's roots), waiting at most
    /// `timeout` per decision.
    ///
    /// Returns at once: the connection is made in the background, and
    /// decisions fail with [`RedisLimitError::Unavailable`] until it is up,
    /// so a server starts while Redis is down. Must be called inside a
    /// Tokio runtime.
    pub fn connect(url: &str, timeout: Duration) -> Result<Self, RedisLimitError> {
        tokio::runtime::Handle::try_current().map_err(|_| RedisLimitError::NoRuntime)?;
        let client = redis::Client::open(url)
            .map_err(|e| RedisLimitError::InvalidUrl(redact(&e.to_string(), url)))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout.max(MIN_CONNECT_TIMEOUT)))
            .set_max_delay(MAX_RECONNECT_DELAY);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| RedisLimitError::InvalidUrl(redact(&e.to_string(), url)))?;
        let inner = Arc::new(Inner {
            client,
            config,
            manager: RwLock::new(manager),
            script: redis::Script::new(SCRIPT),
            timeout,
            refusals: moka::sync::Cache::builder()
                .max_capacity(PRECHECK_CAPACITY)
                .expire_after(UntilExpiry)
                .build(),
            epoch: Instant::now(),
            failing_since: AtomicU64::new(0),
            renewed_at: AtomicU64::new(0),
            warming: AtomicBool::new(false),
            round_trips: AtomicU64::new(0),
            metrics: Metrics::new(),
        });
        inner.warm_up();
        Ok(Self { inner })
    }

    /// Decides every charge, each on its own counter as [`Limit::decide`]
    /// would at Redis's time: a refused charge takes nothing, the others
    /// that fit are kept. One answer per charge, in order.
    ///
    /// One round trip (a pipeline of one `EVALSHA` per charge the local
    /// pre-check did not refuse; none when it refused them all), waiting
    /// at most the timeout; [`RedisLimitError::Unavailable`] otherwise.
    /// A pre-check refusal reports the `remaining` and `reset_after` Redis
    /// gave with the original refusal (aged), and a `retry_after` that is
    /// never later than the truth.
    pub async fn decide(&self, charges: &[Charge<'_>]) -> Result<Vec<Decision>, RedisLimitError> {
        use opentelemetry::{KeyValue, trace::SpanKind};
        let span = crate::otel::child::Span::child("EVALSHA", SpanKind::Client, || {
            vec![
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new("db.operation.name", "EVALSHA"),
                KeyValue::new("tollgate.ratelimit.charges", charges.len() as i64),
            ]
        });
        let answers = self.inner.decide(charges, Options::LIVE).await;
        let answers = match answers {
            Ok(a) => a,
            Err(e) => {
                span.fail("redis unavailable");
                return Err(e);
            }
        };
        span.set(KeyValue::new(
            "tollgate.ratelimit.allowed",
            answers.iter().all(|a| a.decision.allowed),
        ));
        Ok(answers.into_iter().map(|a| a.decision).collect())
    }

    /// The longest a decision waits for Redis.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Pipelines sent to Redis so far (decisions answered wholly by the
    /// pre-check send none; a lost script costs one more).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }
}

impl Inner {
    async fn decide(
        self: &Arc<Self>,
        charges: &[Charge<'_>],
        options: Options,
    ) -> Result<Vec<Answer>, RedisLimitError> {
        let now_us = options.now_us;
        // Local instants say nothing about an injected time.
        let precheck = options.precheck && now_us.is_none();
        let sent_at = Instant::now();
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(charges.len());
        let mut calls = Vec::with_capacity(charges.len());
        let mut slots = Vec::with_capacity(charges.len());
        for (slot, charge) in charges.iter().enumerate() {
            let call = Call::new(charge)?;
            let local = precheck.then(|| self.prechecked(charge, &call, sent_at));
            if let Some(Some(decision)) = local {
                self.metrics.precheck.increment(1);
                answers.push(Some(Answer {
                    decision,
                    redis_now_us: None,
                }));
                continue;
            }
            answers.push(None);
            slots.push(slot);
            calls.push(call);
        }
        if !calls.is_empty() {
            let replies =
                match tokio::time::timeout(self.timeout, self.round_trip(&calls, now_us)).await {
                    Ok(Ok(replies)) => replies,
                    Ok(Err(fault)) => return Err(self.failed(fault)),
                    Err(_) => return Err(self.failed(Fault::Timeout)),
                };
            self.answered();
            for ((slot, call), reply) in slots.into_iter().zip(&calls).zip(replies) {
                let decision = call.decision(reply);
                if let (Some(charge), true) = (charges.get(slot), precheck) {
                    self.remember(charge, &decision, sent_at);
                }
                if let Some(answer) = answers.get_mut(slot) {
                    *answer = Some(Answer {
                        decision,
                        redis_now_us: Some(reply.now_us),
                    });
                }
            }
        }
        answers
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or(RedisLimitError::Unavailable)
    }

    /// The pipeline, and once more for the calls that found no script.
    async fn round_trip(
        &self,
        calls: &[Call<'_>],
        now_us: Option<u64>,
    ) -> Result<Vec<Reply>, Fault> {
        let sha = self.script.get_hash();
        let mut conn = self.manager();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for call in calls {
            pipe.add_command(call.command(sha, now_us));
        }
        let mut values: Vec<Value> = self.send(&pipe, &mut conn).await?;
        if values.len() != calls.len() {
            return Err(Fault::Script(format!(
                "{} replies to {} calls",
                values.len(),
                calls.len()
            )));
        }
        let missing: Vec<usize> = (0..values.len())
            .filter(|&i| values.get(i).is_some_and(is_noscript))
            .collect();
        if !missing.is_empty() {
            // The script never ran for these: load it and run them again,
            // in one more round trip.
            let mut retry = redis::pipe();
            retry.ignore_errors();
            retry.add_command(redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT).to_owned());
            for &i in &missing {
                if let Some(call) = calls.get(i) {
                    retry.add_command(call.command(sha, now_us));
                }
            }
            let mut again = self.send(&retry, &mut conn).await?.into_iter();
            match again.next() {
                Some(Value::ServerError(e)) => return Err(server_fault(&e)),
                Some(_) => {}
                None => return Err(Fault::Script("no reply to SCRIPT LOAD".into())),
            }
            for (&i, value) in missing.iter().zip(again) {
                if let Some(slot) = values.get_mut(i) {
                    *slot = value;
                }
            }
        }
        values.into_iter().map(Reply::parse).collect()
    }

    async fn send(
        &self,
        pipe: &redis::Pipeline,
        conn: &mut ConnectionManager,
    ) -> Result<Vec<Value>, Fault> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let values = pipe.query_async(conn).await.map_err(|e| redis_fault(&e))?;
        self.metrics
            .duration
            .record(started.elapsed().as_secs_f64());
        Ok(values)
    }

    fn manager(&self) -> ConnectionManager {
        self.manager
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Redis answered: healthy again.
    fn answered(&self) {
        if self.failing_since.load(Ordering::Relaxed) != 0
            && self.failing_since.swap(0, Ordering::Relaxed) != 0
        {
            tracing::info!("Redis answers rate-limit decisions again");
        }
    }

    /// Counts `fault`, replaces the connection when Redis has failed every
    /// call for a while (a silently dead connection never recovers on its
    /// own) or turned read-only, and says the decision is unavailable.
    fn failed(self: &Arc<Self>, fault: Fault) -> RedisLimitError {
        let (renew, kind, error) = match fault {
            Fault::Timeout => {
                self.metrics.timeouts.increment(1);
                (false, "timeout", String::from("no answer in time"))
            }
            Fault::Connection { renew, error } => {
                self.metrics.connection.increment(1);
                (renew, "connection", error)
            }
            Fault::Script(error) => {
                self.metrics.script.increment(1);
                tracing::warn!(%error, "the Redis rate-limit script failed");
                return RedisLimitError::Unavailable;
            }
        };
        let now = self.micros().saturating_add(1);
        let since =
            match self
                .failing_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    tracing::warn!(kind, %error, "Redis does not answer rate-limit decisions");
                    now
                }
                Err(since) => since,
            };
        let long = |from: u64| now.saturating_sub(from) >= RENEW_AFTER.as_micros() as u64;
        let renewed = self.renewed_at.load(Ordering::Relaxed);
        if (renew || long(since))
            && long(renewed)
            && self
                .renewed_at
                .compare_exchange(renewed, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.renew();
        }
        RedisLimitError::Unavailable
    }

    /// A new connection manager in place of the current one.
    fn renew(self: &Arc<Self>) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(manager) => {
                tracing::info!("reconnecting to Redis for rate-limit decisions");
                *self.manager.write().unwrap_or_else(|e| e.into_inner()) = manager;
                self.warm_up();
            }
            Err(e) => tracing::warn!(error = %e, "cannot make a new Redis connection"),
        }
    }

    /// Connects and loads the script in the background, retrying until
    /// Redis answers, so the first decisions find both ready.
    fn warm_up(self: &Arc<Self>) {
        if self.warming.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                let mut conn = inner.manager();
                let loaded =
                    tokio::time::timeout(WARM_UP_TIMEOUT, inner.script.load_async(&mut conn)).await;
                match loaded {
                    Ok(Ok(_)) => {
                        inner.answered();
                        inner.warming.store(false, Ordering::Release);
                        return;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "Redis is not ready yet"),
                    Err(_) => tracing::debug!("Redis is not ready yet: no answer"),
                }
                drop(inner);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_RECONNECT_DELAY);
            }
        });
    }

    /// The local answer for `charge`, when a remembered refusal covers it.
    fn prechecked(&self, charge: &Charge<'_>, call: &Call, now: Instant) -> Option<Decision> {
        if charge.dry_run || charge.cost == 0 {
            return None;
        }
        let refusal = self.refusals.get(charge.key)?;
        if refusal.limit != *charge.limit || charge.cost < refusal.cost || now >= refusal.until {
            return None;
        }
        // GCRA: each unit more waits one emission interval more; for the
        // other algorithms the remembered delay is a lower bound.
        let more = match charge.limit.algorithm {
            Algorithm::Gcra => charge
                .limit
                .emission_interval_us()
                .saturating_mul(charge.cost - refusal.cost),
            _ => 0,
        };
        Some(Decision {
            allowed: false,
            limit: call.reported_limit,
            remaining: refusal.remaining,
            reset_after: refusal.reset_at.saturating_duration_since(now),
            retry_after: (refusal.until - now).saturating_add(Duration::from_micros(more)),
        })
    }

    /// Remembers a refusal for the pre-check.
    fn remember(&self, charge: &Charge<'_>, decision: &Decision, sent_at: Instant) {
        if decision.allowed || charge.cost == 0 || decision.retry_after.is_zero() {
            return;
        }
        // A delay too long for an `Instant` is not worth remembering.
        let (Some(until), Some(reset_at)) = (
            sent_at.checked_add(decision.retry_after),
            sent_at.checked_add(decision.reset_after),
        ) else {
            return;
        };
        self.refusals.insert(
            charge.key.into(),
            Refusal {
                limit: *charge.limit,
                cost: charge.cost,
                until,
                remaining: decision.remaining,
                reset_at,
            },
        );
    }
}

/// `message` without the password of `url`, should the parser quote it.
fn redact(message: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => message.replace(p, "***"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    //! Against the real Redis at `TOLLGATE_TEST_REDIS_URL` (skipped when
    //! unset, failing under `TOLLGATE_TEST_STRICT=1`); each test works on
    //! its own random keys, so tests run in parallel and again.

    use std::{io::Write as _, net::SocketAddr, time::SystemTime};

    use rand::{Rng, SeedableRng, rngs::StdRng};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{
            TcpListener, TcpStream,
            tcp::{OwnedReadHalf, OwnedWriteHalf},
        },
        sync::watch,
        task::JoinHandle,
    };

    use super::*;
    use crate::ratelimit::limit::State;

    const URL_ENV: &str = "TOLLGATE_TEST_REDIS_URL";
    const SEC: Duration = Duration::from_secs(1);

    fn strict() -> bool {
        std::env::var("TOLLGATE_TEST_STRICT")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
    }

    /// The test Redis, or `None` after saying the test is skipped.
    fn redis_url() -> Option<String> {
        match std::env::var(URL_ENV) {
            Ok(url) if !url.trim().is_empty() => Some(url),
            _ => {
                assert!(
                    !strict(),
                    "{URL_ENV} is required (TOLLGATE_TEST_STRICT=1), but it is not set"
                );
                // Straight to stderr: libtest captures `eprintln!`.
                let _ = writeln!(std::io::stderr(), "skipped: {URL_ENV} not set");
                None
            }
        }
    }

    fn unique() -> String {
        format!("test:{:016x}", rand::random::<u64>())
    }

    fn connect(url: &str) -> RedisLimiter {
        RedisLimiter::connect(url, Duration::from_millis(500)).unwrap()
    }

    async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn stored(admin: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(redis_key(key))
            .query_async(admin)
            .await
            .unwrap()
    }

    /// Deletes counters a test leaves behind for long (quotas last until
    /// the day's or the month's end).
    async fn forget(admin: &mut redis::aio::MultiplexedConnection, keys: &[&str]) {
        let keys: Vec<String> = keys.iter().map(|k| redis_key(k)).collect();
        let _: i64 = redis::cmd("DEL")
            .arg(keys)
            .query_async(admin)
            .await
            .unwrap();
    }

    async fn pttl(admin: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
        redis::cmd("PTTL")
            .arg(redis_key(key))
            .query_async(admin)
            .await
            .unwrap()
    }

    fn gcra(limit: u64, period: Duration, burst: u64) -> Limit {
        Limit {
            algorithm: Algorithm::Gcra,
            limit,
            period,
            burst,
        }
    }

    fn sliding(limit: u64, period: Duration) -> Limit {
        Limit {
            algorithm: Algorithm::SlidingWindow,
            limit,
            period,
            burst: limit,
        }
    }

    fn quota(window: QuotaWindow, limit: u64) -> Limit {
        Limit {
            algorithm: Algorithm::Quota(window),
            limit,
            period: Duration::ZERO,
            burst: limit,
        }
    }

    fn charge<'a>(key: &'a str, limit: &'a Limit, cost: u64) -> Charge<'a> {
        Charge {
            key,
            limit,
            cost,
            dry_run: false,
        }
    }

    fn dry<'a>(key: &'a str, limit: &'a Limit, cost: u64) -> Charge<'a> {
        Charge {
            dry_run: true,
            ..charge(key, limit, cost)
        }
    }

    /// One charge, answered by Redis (no pre-check), with its Redis time.
    async fn exact(l: &RedisLimiter, c: Charge<'_>, now_us: Option<u64>) -> (Decision, u64) {
        let options = Options {
            now_us,
            precheck: false,
        };
        let answers = l.inner.decide(&[c], options).await.unwrap();
        let answer = answers[0];
        (answer.decision, answer.redis_now_us.unwrap())
    }

    async fn one(l: &RedisLimiter, c: Charge<'_>) -> Decision {
        l.decide(&[c]).await.unwrap()[0]
    }

    /// The script's encoding of a state.
    fn encode(state: State) -> String {
        match state {
            State::Tat(tat) => format!("g {tat}"),
            State::Windows {
                index,
                current,
                previous,
            } => format!("s {index} {current} {previous}"),
            State::Quota { end, used } => format!("q {end} {used}"),
        }
    }

    fn epoch_us() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    }

    // ---- without Redis ----------------------------------------------------

    #[test]
    fn limits_beyond_exact_arithmetic_are_refused_and_costs_are_clamped() {
        let out = |l: Limit| matches!(Call::new(&charge("k", &l, 1)), Err(RedisLimitError::OutOfRange { key }) if key == "k");
        assert!(out(gcra(MAX_EXACT + 1, SEC, 1)));
        assert!(out(gcra(1, SEC, MAX_EXACT + 1)));
        assert!(out(sliding(1, Duration::from_micros(MAX_EXACT + 1))));
        // One unit a day with a burst of 2^34: a tolerance past 2^50 µs.
        assert!(out(gcra(1, Duration::from_secs(86_400), 1 << 34)));
        assert!(!out(quota(QuotaWindow::Month, MAX_EXACT)));

        let l = gcra(10, SEC, 4);
        let call = Call::new(&charge("k", &l, u64::MAX)).unwrap();
        assert_eq!(call.cost, 5, "the smallest cost that never fits");
        assert_eq!(redis_key(call.counter), "tg:rl:{k}");
        assert!(Call::new(&charge("k", &l, 5)).unwrap().clamped.is_none());
        let l = sliding(7, SEC);
        assert_eq!(Call::new(&charge("k", &l, 1_000)).unwrap().cost, 8);
        assert_eq!(Call::new(&charge("k", &l, 7)).unwrap().cost, 7);
    }

    #[test]
    fn a_clamped_gcra_charge_reports_the_retry_delay_of_its_real_cost() {
        let now = 1_795_608_000_000_000;
        for (limit, tat, cost) in [
            (gcra(10, SEC, 4), now + 150_000, 9),
            (gcra(10, SEC, 4), now, 1_000_000),
            (gcra(1, Duration::from_secs(86_400), 3), now + 1, u64::MAX),
            (gcra(3, Duration::from_secs(60), 1), now - 5, u64::MAX / 2),
        ] {
            let state = Some(State::Tat(tat));
            let call = Call::new(&charge("k", &limit, cost)).unwrap();
            // What the script answers for the cost it is sent.
            let (sent, _) = limit.decide(state, now, call.cost, false);
            assert!(!sent.allowed);
            let reply = Reply {
                allowed: false,
                remaining: sent.remaining,
                reset_after_us: sent.reset_after.as_micros() as u64,
                retry_after_us: sent.retry_after.as_micros() as u64,
                now_us: now,
            };
            let (expected, _) = limit.decide(state, now, cost, false);
            assert_eq!(call.decision(reply), expected, "{limit:?} cost {cost}");
        }
    }

    #[tokio::test]
    async fn messages_never_hold_the_password() {
        assert_eq!(
            redact("bad redis://u:hunter2@h:1/0", "redis://u:hunter2@h:1/0"),
            "bad redis://u:***@h:1/0"
        );
        assert_eq!(redact("bad port", "redis://h:x"), "bad port");
        for url in ["http://u:hunter2@h:1", "redis://u:hunter2@h:x/0"] {
            match RedisLimiter::connect(url, SEC) {
                Err(RedisLimitError::InvalidUrl(m)) => assert!(!m.contains("hunter2"), "{m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn connecting_needs_a_runtime() {
        assert!(matches!(
            RedisLimiter::connect("redis://127.0.0.1:1", SEC),
            Err(RedisLimitError::NoRuntime)
        ));
    }

    #[tokio::test]
    async fn with_nothing_listening_the_limiter_exists_and_answers_unavailable_in_time() {
        // A port just released: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = Instant::now();
        let timeout = Duration::from_millis(10);
        let l = RedisLimiter::connect(&format!("redis://127.0.0.1:{port}"), timeout).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "connect does not wait"
        );
        let limit = gcra(10, SEC, 10);
        for _ in 0..5 {
            let started = Instant::now();
            let r = l.decide(&[charge("k", &limit, 1)]).await;
            assert!(matches!(r, Err(RedisLimitError::Unavailable)), "{r:?}");
            assert!(started.elapsed() < timeout + Duration::from_millis(50));
        }
    }

    // ---- against Redis ----------------------------------------------------

    #[tokio::test]
    async fn n_charges_get_exactly_what_limit_decide_gives_at_redis_time() {
        let Some(url) = redis_url() else { return };
        let l = connect(&url);
        let mut admin = admin(&url).await;
        for (limit, burst) in [
            (gcra(10, Duration::from_secs(60), 4), 4),
            (sliding(5, Duration::from_secs(3600)), 5),
            (quota(QuotaWindow::Day, 3), 3),
            (quota(QuotaWindow::Month, 3), 3),
        ] {
            let key = unique();
            let mut state = None;
            let mut allowed = 0;
            for i in 0..12 {
                let (d, now) = exact(&l, charge(&key, &limit, 1), None).await;
                let (expected, next) = limit.decide(state, now, 1, false);
                assert_eq!(d, expected, "{limit:?}, charge {i}");
                state = next;
                allowed += usize::from(d.allowed);
                if !d.allowed {
                    assert!(d.retry_after > Duration::ZERO);
                }
            }
            assert_eq!(allowed, burst, "{limit:?}");
            assert_eq!(stored(&mut admin, &key).await, state.map(encode));
            forget(&mut admin, &[&key]).await;
        }
    }

    /// Random limits, costs and instants (month ends, window edges, clocks
    /// going back), each decision and stored state compared with
    /// [`Limit::decide`]: the Lua arithmetic is exact, products past 2^53
    /// included.
    #[tokio::test]
    async fn the_script_computes_exactly_what_limit_decide_does() {
        let Some(url) = redis_url() else { return };
        let l = connect(&url);
        let mut admin = admin(&url).await;
        let seed = rand::random::<u64>();
        let mut rng = StdRng::seed_from_u64(seed);
        // Injected instants stay in the future: the script's PXAT must not
        // drop the state at once.
        let floor = epoch_us() + 86_400_000_000;
        let prefix = unique();
        for case in 0..300 {
            let key = format!("{prefix}:{case}");
            let limit = random_limit(&mut rng);
            if Call::new(&charge(&key, &limit, 1)).is_err() {
                continue;
            }
            let mut now = random_start(&mut rng, floor, &limit);
            let mut steps = Vec::new();
            for _ in 0..14 {
                steps.push((now, random_cost(&mut rng, &limit), rng.random_bool(0.1)));
                now = random_next(&mut rng, now, floor, &limit);
            }
            let context = format!("seed {seed}, case {case}");
            replay(&l, &mut admin, &key, &limit, &steps, &context).await;
        }
    }

    /// An instant (µs), a cost, and whether it is a dry run.
    type Step = (u64, u64, bool);

    /// Runs `steps` through the script and
    /// through [`Limit::decide`]: the same answers and stored states.
    async fn replay(
        l: &RedisLimiter,
        admin: &mut redis::aio::MultiplexedConnection,
        key: &str,
        limit: &Limit,
        steps: &[Step],
        context: &str,
    ) {
        let mut state = None;
        for (step, &(now, cost, dry_run)) in steps.iter().enumerate() {
            let c = Charge {
                key,
                limit,
                cost,
                dry_run,
            };
            let (d, at) = exact(l, c, Some(now)).await;
            assert_eq!(at, now);
            let (expected, next) = limit.decide(state, now, cost, dry_run);
            let context = format!(
                "{context}, step {step}: {limit:?}, state {state:?}, now {now}, cost {cost}, \
                 dry run {dry_run}"
            );
            assert_eq!(d, expected, "{context}");
            state = next;
            let (value, _): (Option<String>, i64) = redis::pipe()
                .cmd("GET")
                .arg(redis_key(key))
                // A failed run leaves nothing for long.
                .cmd("PEXPIRE")
                .arg(redis_key(key))
                .arg(600_000)
                .query_async(admin)
                .await
                .unwrap();
            assert_eq!(value, state.map(encode), "{context}");
        }
        let _: i64 = redis::cmd("DEL")
            .arg(redis_key(key))
            .query_async(admin)
            .await
            .unwrap();
    }

    /// The cases most likely to go wrong in doubles, pinned: weights whose
    /// products pass 2^53, and calendar edges (a leap day, a year's end,
    /// 2100 which is not a leap year).
    #[tokio::test]
    async fn big_products_and_calendar_edges_are_exact() {
        let Some(url) = redis_url() else { return };
        let l = connect(&url);
        let mut admin = admin(&url).await;
        const DAY: u64 = 86_400_000_000;
        // 2096-02-29T00:00:00Z, 2099-12-31T00:00:00Z, 2100-02-28T00:00:00Z.
        let (leap, new_year, no_leap) = (
            3_981_312_000_000_000,
            4_102_358_400_000_000,
            4_107_456_000_000_000,
        );
        assert_eq!(QuotaWindow::Month.end_after(leap), leap + DAY);
        assert_eq!(QuotaWindow::Month.end_after(no_leap), no_leap + DAY);
        let big = sliding(1 << 40, Duration::from_secs(30 * 86_400));
        let period = 30 * DAY;
        let start = (leap / period + 1) * period;
        let cases: [(Limit, Vec<Step>); 6] = [
            // Rounded doubles would weigh the previous window one unit
            // light here (853515658557 for 853515658558).
            (
                big,
                vec![
                    (start, 884_699_407_727, false),
                    (start + period + 91_362_418_854, 1, false),
                ],
            ),
            (
                big,
                vec![
                    (start, (1 << 39) + 12_345, false),
                    (start + period + 987_654_321, 1 << 38, false),
                    (start + period + 987_654_321, (1 << 39) + 7, false),
                    (start + period + period / 3, 1 << 40, true),
                    (start + 2 * period - 1, 1 << 39, false),
                ],
            ),
            (
                sliding(MAX_EXACT, Duration::from_micros(MAX_EXACT)),
                vec![
                    (start, MAX_EXACT - 3, false),
                    (start + MAX_EXACT, 5, false),
                    (start + MAX_EXACT + MAX_EXACT / 7, 4, false),
                ],
            ),
            (
                quota(QuotaWindow::Month, 10),
                vec![
                    (leap + DAY - 1, 9, false),
                    (leap + DAY - 1, 2, false),
                    (leap + DAY, 2, false),
                    (new_year + DAY - 1, 10, false),
                    (new_year + DAY, 10, false),
                    (no_leap + DAY - 1, 1, false),
                    (no_leap + DAY, 11, false),
                ],
            ),
            (
                quota(QuotaWindow::Day, 3),
                vec![
                    (no_leap - 1, 3, false),
                    (no_leap - 1, 1, false),
                    (no_leap, 1, false),
                ],
            ),
            (
                // A tolerance of 2^49.3 µs.
                gcra(1, Duration::from_secs(86_400), 1 << 13),
                vec![
                    (start, 1 << 13, false),
                    (start + 1, u64::MAX, false),
                    (start + DAY / 2, 1, false),
                ],
            ),
        ];
        let prefix = unique();
        for (i, (limit, steps)) in cases.iter().enumerate() {
            let key = format!("{prefix}:{i}");
            replay(&l, &mut admin, &key, limit, steps, &format!("case {i}")).await;
        }
    }

    fn random_limit(rng: &mut StdRng) -> Limit {
        let units = |rng: &mut StdRng| match rng.random_range(0..10) {
            0 => 0,
            1..=4 => rng.random_range(1..=10),
            5..=7 => rng.random_range(1..=10_000),
            8 => rng.random_range(1..=1 << 40),
            _ => rng.random_range(1..=MAX_EXACT),
        };
        let period = Duration::from_micros(match rng.random_range(0..8) {
            0 => rng.random_range(1..=1_000),
            1 => 1_000_000,
            2 => 60_000_000,
            3 => 3_600_000_000,
            4 => 86_400_000_000,
            5 => 30 * 86_400_000_000,
            6 => rng.random_range(1..=1 << 44),
            _ => rng.random_range(1..=MAX_EXACT),
        });
        let limit = units(rng);
        match rng.random_range(0..4) {
            0 => Limit {
                algorithm: Algorithm::Gcra,
                limit,
                period,
                burst: match rng.random_range(0..3) {
                    0 => limit.max(1),
                    1 => rng.random_range(1..=limit.clamp(1, MAX_EXACT / 2) * 2),
                    _ => rng.random_range(0..=10),
                },
            },
            1 => sliding(limit, period),
            2 => quota(QuotaWindow::Day, limit),
            _ => quota(QuotaWindow::Month, limit),
        }
    }

    fn period_us(limit: &Limit) -> u64 {
        match limit.algorithm {
            Algorithm::Gcra => limit.emission_interval_us(),
            Algorithm::SlidingWindow => (limit.period.as_micros() as u64).max(1),
            Algorithm::Quota(_) => 86_400_000_000,
        }
    }

    fn random_cost(rng: &mut StdRng, limit: &Limit) -> u64 {
        let top = limit.limit.max(limit.burst).max(1);
        match rng.random_range(0..10) {
            0 => 0,
            1..=4 => rng.random_range(1..=3.min(top)),
            5..=7 => rng.random_range(1..=top),
            8 => top + rng.random_range(0..=2),
            _ => rng.random_range(0..=u64::MAX),
        }
    }

    fn random_start(rng: &mut StdRng, floor: u64, limit: &Limit) -> u64 {
        // Up to ten years ahead (leap years included), sometimes just
        // before a month's end.
        let t = floor + rng.random_range(0..10 * 365 * 86_400_000_000);
        match (rng.random_range(0..3), limit.algorithm) {
            (0, _) | (_, Algorithm::Quota(QuotaWindow::Month)) => {
                QuotaWindow::Month.end_after(t)
                    - rng.random_range(1..=2 * period_us(limit).min(1 << 40))
            }
            _ => t,
        }
        .max(floor)
    }

    fn random_next(rng: &mut StdRng, now: u64, floor: u64, limit: &Limit) -> u64 {
        let period = period_us(limit);
        let next = match rng.random_range(0..10) {
            0 => now,
            1..=4 => now + rng.random_range(0..=period.min(1 << 44)),
            5 => now + rng.random_range(0..=3 * period.min(1 << 44)),
            // To the edge of a window, either side.
            6 | 7 => {
                let edge = match limit.algorithm {
                    Algorithm::Quota(w) => w.end_after(now),
                    _ => (now / period + 1) * period,
                };
                (edge + rng.random_range(0..=4)).saturating_sub(2)
            }
            8 => now + rng.random_range(0..=40 * 86_400_000_000),
            // The clock goes back a little.
            _ => now.saturating_sub(rng.random_range(0..=period.min(1 << 40))),
        };
        next.max(floor)
    }

    #[tokio::test]
    async fn two_limiters_share_one_limit() {
        let Some(url) = redis_url() else { return };
        let (a, b) = (connect(&url), connect(&url));
        let key = unique();
        let limit = gcra(10, Duration::from_secs(60), 6);
        let mut allowed = 0;
        for i in 0..12 {
            let l = if i % 2 == 0 { &a } else { &b };
            allowed += usize::from(one(l, charge(&key, &limit, 1)).await.allowed);
        }
        assert_eq!(allowed, 6);
        let d = one(&b, dry(&key, &limit, 1)).await;
        assert!(!d.allowed && d.remaining == 0, "{d:?}");
    }

    #[tokio::test]
    async fn a_script_flush_costs_one_more_round_trip_and_nothing_else() {
        let Some(url) = redis_url() else { return };
        let l = connect(&url);
        let mut admin = admin(&url).await;
        let key = unique();
        let limit = gcra(10, Duration::from_secs(60), 3);
        assert_eq!(one(&l, charge(&key, &limit, 1)).await.remaining, 2);
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut admin)
            .await
            .unwrap();
        let before = l.round_trips();
        let d = one(&l, charge(&key, &limit, 1)).await;
        assert!(d.allowed && d.remaining == 1, "{d:?}");
        // Two, unless another test reloaded the script in between.
        assert!((1..=2).contains(&(l.round_trips() - before)));
        let before = l.round_trips();
        assert_eq!(one(&l, charge(&key, &limit, 1)).await.remaining, 0);
        assert_eq!(l.round_trips() - before, 1);
    }

    #[tokio::test]
    async fn dry_runs_take_nothing() {
        let Some(url) = redis_url() else { return };
        let l = connect(&url);
        let mut admin = admin(&url).await;
        let key = unique();
        let limit = gcra(10, Duration::from_secs(60), 2);
        for _ in 0..5 {
            let d = one(&l, dry(&key, &limit, 1)).await;
            assert!(d.allowed && d.remaining == 1, "{d:?}");
        }
        assert_eq!(stored(&mut admin, &key).await, None, "no key at all");
        assert_eq!(one(&l, charge(&key, &limit, 1)).await.remaining, 1);
        let kept = stored(&mut admin, &key).await;
        let d = one(&l, dry(&key, &limit, 2)).await;
        assert!(!d.allowed && d.remaining == 1, "{d:?}");
        assert_eq!(stored(&mut admin, &key).await, kept);
        // Nor does a refusal, or a free call.
        assert!(!one(&l, charge(&key, &limit, 2)).await.allowed);
        assert_eq!(one(&l, charge(&key, &limit, 0)).await.remaining, 1);
        assert_eq!(stored(&mut admin, &key).await, kept);
        let d = one(&l, charge(&key, &limit, 1)).await;
        assert!(d.allowed && d.remaining == 0, "{d:?}");
    }

    #[tokio::test]
    async fn the_precheck_refuses_without_a_round_trip() {
        let Some(url) = redis_url() else { return };
        let l = connect(&url);
        let key = unique();
        let limit = gcra(10, Duration::from_secs(60), 1);
        assert!(one(&l, charge(&key, &limit, 1)).await.allowed);
        let before = l.round_trips();
        let refused = one(&l, charge(&key, &limit, 1)).await;
        assert!(!refused.allowed);
        assert_eq!(l.round_trips(), before + 1, "the first refusal is Redis's");
        let mut last = refused.retry_after;
        for _ in 0..20 {
            let d = one(&l, charge(&key, &limit, 1)).await;
            assert!(!d.allowed && d.remaining == 0 && d.limit == 1, "{d:?}");
            assert!(d.retry_after <= last);
            last = d.retry_after;
        }
        // Two units wait one interval (6 s) more.
        let d = one(&l, charge(&key, &limit, 2)).await;
        assert!(d.retry_after > last + Duration::from_millis(5_900), "{d:?}");
        assert_eq!(l.round_trips(), before + 1, "answered locally");

        // Never later than the truth, which a dry run asks Redis for.
        let local = one(&l, charge(&key, &limit, 1)).await;
        let asked = Instant::now();
        let truth = one(&l, dry(&key, &limit, 1)).await;
        assert_eq!(l.round_trips(), before + 2, "dry runs go to Redis");
        assert!(
            local.retry_after <= truth.retry_after + asked.elapsed() + Duration::from_millis(1)
        );
        assert!(local.retry_after + Duration::from_millis(50) >= truth.retry_after);

        // Free calls, other limits on the same key, and other keys in the
        // same decision still go to Redis, in one round trip.
        let other = gcra(10, Duration::from_secs(60), 3);
        let fresh = unique();
        let ds = l
            .decide(&[
                charge(&key, &limit, 1),
                charge(&key, &limit, 0),
                charge(&key, &other, 1),
                charge(&fresh, &limit, 1),
            ])
            .await
            .unwrap();
        assert_eq!(l.round_trips(), before + 3);
        assert!(!ds[0].allowed, "{:?}", ds[0]);
        assert!(
            ds[1].allowed && ds[1].remaining == 0,
            "a free call: {:?}",
            ds[1]
        );
        assert!(ds[2].allowed, "a bigger burst fits: {:?}", ds[2]);
        assert!(ds[3].allowed);

        // Quotas: refused until the window ends.
        let daily = quota(QuotaWindow::Day, 1);
        let key = unique();
        assert!(one(&l, charge(&key, &daily, 1)).await.allowed);
        let refused = one(&l, charge(&key, &daily, 1)).await;
        let before = l.round_trips();
        let d = one(&l, charge(&key, &daily, 1)).await;
        assert!(!d.allowed && d.retry_after <= refused.retry_after);
        assert!(d.retry_after + SEC > refused.retry_after);
        assert_eq!(l.round_trips(), before);
        forget(&mut admin(&url).await, &[&key]).await;

        let text = crate::admin::prometheus().render();
        assert!(
            text.contains("tollgate_ratelimit_precheck_refusals_total"),
            "{text}"
        );
        assert!(text.contains("tollgate_ratelimit_redis_duration_seconds_bucket"));
    }

    #[tokio::test]
    async fn keys_are_hash_tagged_and_expire_when_they_stop_mattering() {
        let Some(url) = redis_url() else { return };
        let l = connect(&url);
        let mut admin = admin(&url).await;
        let key = unique();
        let limit = gcra(1, Duration::from_secs(60), 1);
        one(&l, charge(&key, &limit, 1)).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{key}*"))
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(keys, [format!("tg:rl:{{{key}}}")]);
        let ttl = pttl(&mut admin, &key).await;
        assert!((58_000..=60_003).contains(&ttl), "{ttl}");

        // Sliding window: until the end of the next window.
        let key = unique();
        one(&l, charge(&key, &sliding(5, Duration::from_secs(2)), 1)).await;
        let ttl = pttl(&mut admin, &key).await;
        assert!((1_900..=4_003).contains(&ttl), "{ttl}");

        // Quota: until the window resets.
        let key = unique();
        let d = one(&l, charge(&key, &quota(QuotaWindow::Day, 5), 1)).await;
        let ttl = pttl(&mut admin, &key).await as u128;
        let reset = d.reset_after.as_millis();
        // PTTL is read a little later than the decision.
        assert!(ttl + 100 >= reset && ttl <= reset + 3, "{ttl} vs {reset}");
        forget(&mut admin, &[&key]).await;

        // 20 a second: the state matters for 50 ms.
        let key = unique();
        let fast = gcra(20, SEC, 1);
        assert!(one(&l, charge(&key, &fast, 1)).await.allowed);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(stored(&mut admin, &key).await, None, "expired");
        assert!(one(&l, charge(&key, &fast, 1)).await.allowed);
    }

    // ---- faults -------------------------------------------------------------

    #[tokio::test]
    async fn outages_cost_at_most_the_timeout_and_the_limiter_recovers_alone() {
        let Some(url) = redis_url() else { return };
        let proxy = Proxy::start(&url, Mode::Open).await;
        let timeout = Duration::from_millis(10);
        let bound = timeout + Duration::from_millis(50);
        let l = RedisLimiter::connect(&proxy.url, timeout).unwrap();
        let key = unique();
        let limit = gcra(10, Duration::from_secs(60), 5);
        let first = recovered(&l, charge(&key, &limit, 1)).await;
        assert_eq!(first.remaining, 4);
        assert_eq!(one(&l, charge(&key, &limit, 1)).await.remaining, 3);

        // Dry runs while Redis is away: a call that timed out may still
        // arrive later, and must not change the counter.
        for mode in [Mode::Cut, Mode::Stalled, Mode::Cut] {
            proxy.set(mode);
            for _ in 0..5 {
                let calls = (0..10).map(|_| async {
                    let started = Instant::now();
                    let r = l.decide(&[dry(&key, &limit, 1)]).await;
                    (r, started.elapsed())
                });
                for (r, took) in futures::future::join_all(calls).await {
                    assert!(
                        matches!(r, Err(RedisLimitError::Unavailable)),
                        "{mode:?}: {r:?}"
                    );
                    assert!(took < bound, "{mode:?}: waited {took:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        proxy.set(Mode::Open);
        let back = Instant::now();
        let d = recovered(&l, charge(&key, &limit, 1)).await;
        assert!(back.elapsed() < Duration::from_secs(5));
        assert_eq!(d.remaining, 2, "the counter survived: {d:?}");

        let text = crate::admin::prometheus().render();
        assert!(
            text.contains("tollgate_ratelimit_redis_errors_total{kind=\"timeout\"}"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_limiter_made_while_redis_is_down_works_once_it_is_up() {
        let Some(url) = redis_url() else { return };
        let proxy = Proxy::start(&url, Mode::Cut).await;
        let timeout = Duration::from_millis(10);
        let started = Instant::now();
        let l = RedisLimiter::connect(&proxy.url, timeout).unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "connect waited"
        );
        let key = unique();
        let limit = gcra(10, Duration::from_secs(60), 5);
        for _ in 0..10 {
            let started = Instant::now();
            let r = l.decide(&[charge(&key, &limit, 1)]).await;
            assert!(matches!(r, Err(RedisLimitError::Unavailable)), "{r:?}");
            assert!(started.elapsed() < timeout + Duration::from_millis(50));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy.set(Mode::Open);
        let back = Instant::now();
        let d = recovered(&l, charge(&key, &limit, 1)).await;
        assert!(back.elapsed() < Duration::from_secs(5));
        assert!(d.allowed && d.remaining == 4, "{d:?}");
    }

    /// Retries `c` until Redis answers (at most 5 s).
    async fn recovered(l: &RedisLimiter, c: Charge<'_>) -> Decision {
        let started = Instant::now();
        loop {
            match l.decide(&[c]).await {
                Ok(d) => return d[0],
                Err(e) => assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "still failing after 5 s: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// Bytes flow.
        Open,
        /// Connections stay open (new ones are accepted) but nothing flows:
        /// a hung server or a black-holed network.
        Stalled,
        /// Every connection is closed, new ones at once.
        Cut,
    }

    /// A TCP proxy to the test Redis that a test can stall, cut and
    /// restore.
    struct Proxy {
        url: String,
        mode: watch::Sender<Mode>,
        task: JoinHandle<()>,
    }

    impl Proxy {
        async fn start(redis_url: &str, mode: Mode) -> Self {
            let (scheme, rest) = redis_url.split_once("://").unwrap();
            let (userinfo, rest) = match rest.rsplit_once('@') {
                Some((u, r)) => (format!("{u}@"), r),
                None => (String::new(), rest),
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = if authority.contains(':') {
                authority.to_owned()
            } else {
                format!("{authority}:6379")
            };
            let upstream: SocketAddr = tokio::net::lookup_host(authority)
                .await
                .unwrap()
                .next()
                .unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = watch::channel(mode);
            let task = tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    if *rx.borrow() == Mode::Cut {
                        continue;
                    }
                    let rx = rx.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(pump(cr, sw, rx.clone()), pump(sr, cw, rx));
                    });
                }
            });
            Self {
                url: format!("{scheme}://{userinfo}{addr}{path}"),
                mode: tx,
                task,
            }
        }

        fn set(&self, mode: Mode) {
            self.mode.send_replace(mode);
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.mode.send_replace(Mode::Cut);
            self.task.abort();
        }
    }

    /// Waits while stalled; returns (closing its halves) once cut.
    async fn until_open(mode: &mut watch::Receiver<Mode>) -> bool {
        loop {
            match *mode.borrow_and_update() {
                Mode::Open => return true,
                Mode::Cut => return false,
                Mode::Stalled => {}
            }
            if mode.changed().await.is_err() {
                return false;
            }
        }
    }

    async fn pump(
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        mut mode: watch::Receiver<Mode>,
    ) {
        let mut buf = vec![0; 16 * 1024];
        loop {
            if !until_open(&mut mode).await {
                return;
            }
            let n = tokio::select! {
                n = from.read(&mut buf) => n,
                _ = mode.changed() => continue,
            };
            let n = match n {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !until_open(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
}
