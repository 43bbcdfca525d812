//! A webhook's pump: the job that sends its pending deliveries one at a
//! time in event order (see `store::webhooks` for how pumps are made and
//! ended). A delivery that must be retried holds back the later ones: the
//! pump fails with the retry's delay, and the worker runs it again then.

use std::{sync::Arc, time::Duration};

use super::{
    sender::{Outcome, Sender},
    signature::Secret,
};
use crate::{
    domain::{names::WebhookName, now_micros},
    oauth::keys::KeyRing,
    store::{
        Store,
        jobs::Job,
        webhooks::{self, Attempt, DEAD, PENDING, SUCCEEDED, WebhookRow, seal_context},
    },
    worker::{Failure, backoff},
};

/// Deliveries read per round, and sent before their outcomes are
/// recorded (a crash in between sends them again: receivers drop repeats
/// by `webhook-id`).
const BATCH: i64 = 50;
/// How many webhooks one worker process serves at once.
pub const CONCURRENCY: usize = 64;
/// How long a pump with nothing to send waits for the next delivery
/// before ending.
const LINGER: Duration = Duration::from_millis(250);

/// What the pumps share.
pub struct Pump {
    store: Store,
    keys: KeyRing,
    sender: Sender,
    max_attempts: i32,
}

impl Pump {
    /// Pumps reading `store`, opening secrets with `keys`, sending with
    /// `sender`; a delivery is dead after `max_attempts`.
    pub fn new(store: Store, keys: KeyRing, sender: Sender, max_attempts: u32) -> Arc<Self> {
        Arc::new(Self {
            store,
            keys,
            sender,
            max_attempts: i32::try_from(max_attempts).unwrap_or(i32::MAX).max(1),
        })
    }

    /// Registers the pump's handler on `worker`.
    pub fn register(self: &Arc<Self>, worker: crate::worker::Worker) -> crate::worker::Worker {
        let pump = self.clone();
        worker.handle(webhooks::PUMP, CONCURRENCY, move |job: Job| {
            let pump = pump.clone();
            async move { pump.run(job).await }
        })
    }

    /// The current secret and, during a rotation's overlap, the previous.
    fn secrets(&self, hook: &WebhookRow) -> Result<Vec<Secret>, Failure> {
        let context = seal_context(&hook.uid);
        let mut sealed = vec![hook.secret_sealed.as_str()];
        sealed.extend(hook.previous_secret(now_micros()));
        sealed
            .into_iter()
            .map(|s| {
                let plain = self.keys.unseal(&context, s).map_err(|e| {
                    Failure::transient(format!("opening the webhook's secret: {e}"))
                })?;
                let text = String::from_utf8(plain)
                    .map_err(|_| Failure::transient("the webhook's secret is not text"))?;
                Secret::parse(&text)
                    .map_err(|_| Failure::transient("the webhook's secret does not parse"))
            })
            .collect()
    }

    /// Sends `hook`'s pending deliveries until none is left or one must
    /// wait.
    async fn run(&self, job: Job) -> Result<(), Failure> {
        let store_error = |e: crate::domain::Error| Failure::transient(e.to_string());
        let hook: WebhookName =
            webhooks::pump_target(&job.payload).map_err(|e| Failure::permanent(e.to_string()))?;
        let made = self.store.jobs_enqueued();
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            // Armed before the read, so a delivery made between the read
            // and the wait still wakes the pump.
            let woken = made.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let batch = self
                .store
                .pump_batch(&hook, BATCH)
                .await
                .map_err(store_error)?;
            let webhook = match batch.webhook {
                Some(w) if w.is_active() && !batch.deliveries.is_empty() => {
                    idle_since = None;
                    w
                }
                webhook => {
                    // Nothing pending but still active: wait a moment for
                    // the next delivery (the relay's fan-out wakes us)
                    // rather than ending, so a steady stream costs no claim
                    // and no end per delivery.
                    if webhook.is_some_and(|w| w.is_active()) {
                        let since = *idle_since.get_or_insert_with(tokio::time::Instant::now);
                        let left = LINGER.saturating_sub(since.elapsed());
                        if !left.is_zero() {
                            tokio::select! {
                                () = &mut woken => {}
                                () = tokio::time::sleep(left) => {}
                            }
                            continue;
                        }
                    }
                    if self
                        .store
                        .finish_webhook_pump(&hook, job.id)
                        .await
                        .map_err(store_error)?
                    {
                        return Ok(());
                    }
                    idle_since = None;
                    continue;
                }
            };
            let secrets = self.secrets(&webhook)?;
            let mut attempts = Vec::with_capacity(batch.deliveries.len());
            let mut wait: Option<(i64, String)> = None;
            for d in &batch.deliveries {
                let now = now_micros();
                if d.next_attempt_time > now {
                    wait = Some((d.next_attempt_time, d.last_error.clone()));
                    break;
                }
                let id = d.event_id.to_string();
                let sent = self
                    .sender
                    .send(&webhook.url, &id, &d.body, &secrets, &d.trace_parent)
                    .await;
                let latency_micros = i64::try_from(sent.latency.as_micros()).unwrap_or(i64::MAX);
                let time = now_micros();
                // Recorded as the attempt's start.
                let started = time.saturating_sub(latency_micros);
                metrics::histogram!("tollgate_webhook_delivery_seconds")
                    .record(sent.latency.as_secs_f64());
                let attempt = |status, code: u16, error: String, next| Attempt {
                    event_id: d.event_id,
                    status,
                    response_code: i32::from(code),
                    error,
                    latency_micros,
                    time: started,
                    next_attempt_time: next,
                };
                let tried = d.attempts + 1;
                match sent.outcome {
                    Outcome::Delivered { code } => {
                        metrics::counter!("tollgate_webhook_deliveries_total", "outcome" => "succeeded")
                            .increment(1);
                        metrics::histogram!("tollgate_webhook_delivery_lag_seconds")
                            .record((time - d.create_time).max(0) as f64 / 1e6);
                        attempts.push(attempt(SUCCEEDED, code, String::new(), time));
                    }
                    Outcome::Refused { code, error } => {
                        metrics::counter!("tollgate_webhook_deliveries_total", "outcome" => "refused")
                            .increment(1);
                        tracing::warn!(webhook = %hook, event = d.event_id, code, "webhook delivery refused; not retried");
                        attempts.push(attempt(DEAD, code, error, time));
                    }
                    Outcome::Retry { code, error, .. } if tried >= self.max_attempts => {
                        metrics::counter!("tollgate_webhook_deliveries_total", "outcome" => "dead")
                            .increment(1);
                        tracing::warn!(webhook = %hook, event = d.event_id, attempts = tried, %error, "webhook delivery dead after its last attempt");
                        attempts.push(attempt(DEAD, code, error, time));
                    }
                    Outcome::Retry {
                        code,
                        error,
                        retry_after,
                    } => {
                        metrics::counter!("tollgate_webhook_deliveries_total", "outcome" => "retry")
                            .increment(1);
                        let delay = retry_after.unwrap_or_else(|| backoff(tried));
                        let next = time
                            .saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX));
                        wait = Some((next, error.clone()));
                        attempts.push(attempt(PENDING, code, error, next));
                        break;
                    }
                }
            }
            self.store
                .record_attempts(&hook, attempts)
                .await
                .map_err(store_error)?;
            if let Some((at, why)) = wait {
                let delay = Duration::from_micros(u64::try_from(at - now_micros()).unwrap_or(0));
                return Err(Failure {
                    message: format!("waiting to retry a delivery ({why})"),
                    retry_after: Some(delay),
                    permanent: false,
                });
            }
        }
    }
}
