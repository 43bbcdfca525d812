//! The batch span processor: ended spans wait in one bounded queue, and
//! the export task is woken once per full batch, on its schedule, or for a
//! flush.
//!
//! Ours rather than the SDK's: the SDK's batch processor hands each ended
//! span to its task over a channel, which wakes that task (and its thread)
//! for nearly every span; with every call sampled, the wake-ups alone put
//! the server's workers in the scheduler's locks for a tenth of their time
//! (BENCHMARKS.md, "Traces"). Here a span is pushed under a lock no one
//! holds for long, and only the span that fills a batch wakes the task.
//!
//! The queue is bounded: past it a span is dropped at once and counted
//! (`reason="queue_full"`), so ending a span never waits; a failed export
//! drops its batch, counted too (`reason="export_failed"`).

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanExporter, SpanProcessor},
};
use tokio::sync::Notify;

use super::export::{dropped, exported};

/// How a [`Batcher`] batches.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Spans waiting or being exported, at most.
    pub queue: usize,
    /// Spans per export, at most.
    pub batch: usize,
    /// How long a span waits at most when no batch fills.
    pub delay: Duration,
}

impl Settings {
    /// The OpenTelemetry defaults (`OTEL_BSP_MAX_QUEUE_SIZE` 2048,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` 512), read from those variables
    /// when set, and `OTEL_BSP_SCHEDULE_DELAY` (milliseconds) or `delay`.
    pub fn from_env(delay: Duration) -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let queue = var("OTEL_BSP_MAX_QUEUE_SIZE")
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(2048);
        let batch = var("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| *n > 0)
            .unwrap_or(512)
            .min(queue);
        let delay = var("OTEL_BSP_SCHEDULE_DELAY").map_or(delay, Duration::from_millis);
        Self {
            queue,
            batch,
            delay,
        }
    }
}

/// What the processor and its export task share.
#[derive(Debug)]
struct Shared {
    settings: Settings,
    queue: Mutex<Vec<SpanData>>,
    /// Spans the task has taken and not yet finished exporting: they
    /// count against the bound as the queued ones do.
    exporting: AtomicUsize,
    wake: Notify,
    /// Callers of `force_flush` waiting for the queue to be sent.
    flushes: Mutex<Vec<mpsc::Sender<()>>>,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The span processor. Its export task must be spawned with [`run`].
#[derive(Debug)]
pub struct Batcher {
    shared: Arc<Shared>,
}

/// The export task of a [`Batcher`].
pub struct Task<E> {
    shared: Arc<Shared>,
    exporter: E,
}

/// A processor batching with `settings`, and the task that exports what it
/// batches through `exporter`.
pub fn batcher<E: SpanExporter>(exporter: E, settings: Settings) -> (Batcher, Task<E>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::with_capacity(settings.batch)),
        settings,
        exporting: AtomicUsize::new(0),
        wake: Notify::new(),
        flushes: Mutex::new(Vec::new()),
        closed: AtomicBool::new(false),
    });
    (
        Batcher {
            shared: shared.clone(),
        },
        Task { shared, exporter },
    )
}

impl SpanProcessor for Batcher {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Relaxed) {
            dropped("queue_full").increment(1);
            return;
        }
        let mut queue = lock(&shared.queue);
        if queue.len() + shared.exporting.load(Ordering::Relaxed) >= shared.settings.queue {
            drop(queue);
            dropped("queue_full").increment(1);
            return;
        }
        queue.push(span);
        let full = queue.len() == shared.settings.batch;
        drop(queue);
        if full {
            shared.wake.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(Duration::from_secs(5))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.flush(timeout)
    }
}

impl Batcher {
    /// Asks the task to send everything queued and waits for it, at most
    /// `limit`. Blocks: call it off the export task's thread.
    fn flush(&self, limit: Duration) -> OTelSdkResult {
        let (tx, rx) = mpsc::channel();
        lock(&self.shared.flushes).push(tx);
        self.shared.wake.notify_one();
        rx.recv_timeout(limit)
            .map_err(|_| OTelSdkError::Timeout(limit))
    }
}

/// Exports until the process ends: each full batch as soon as it fills,
/// and what is queued at least every `delay` and on a flush.
pub async fn run<E: SpanExporter>(task: Task<E>) {
    let Task { shared, exporter } = task;
    let settings = shared.settings;
    loop {
        let woken = tokio::time::timeout(settings.delay, shared.wake.notified())
            .await
            .is_ok();
        let flushes = std::mem::take(&mut *lock(&shared.flushes));
        // Woken by a full batch: send full batches only, and leave a
        // remainder to fill. On the schedule or a flush: send everything.
        let everything = !woken || !flushes.is_empty();
        loop {
            let batch = {
                let mut queue = lock(&shared.queue);
                if queue.is_empty() || (!everything && queue.len() < settings.batch) {
                    break;
                }
                let take = queue.len().min(settings.batch);
                shared.exporting.fetch_add(take, Ordering::Relaxed);
                let rest = queue.split_off(take);
                std::mem::replace(&mut *queue, rest)
            };
            let n = batch.len();
            let result = exporter.export(batch).await;
            shared.exporting.fetch_sub(n, Ordering::Relaxed);
            match result {
                Ok(()) => exported().increment(n as u64),
                Err(e) => {
                    dropped("export_failed").increment(n as u64);
                    tracing::debug!(error = %e, spans = n, "OTLP export failed");
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::otel::testing::span;

    /// An exporter that counts spans and calls, and can be made to fail.
    #[derive(Debug, Clone, Default)]
    struct Counting {
        spans: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
        fail: Arc<AtomicBool>,
    }

    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(OTelSdkError::InternalFailure("down".into()));
            }
            self.spans.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
    }

    /// Waits until `done` holds, a second at most (the assertions after
    /// it say what was expected).
    async fn eventually(done: impl Fn() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn settings(queue: usize, batch: usize, delay: Duration) -> Settings {
        Settings {
            queue,
            batch,
            delay,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_batches_leave_at_once_and_the_rest_on_a_flush() {
        let exporter = Counting::default();
        let (batcher, task) = batcher(
            exporter.clone(),
            settings(100, 4, Duration::from_secs(3600)),
        );
        tokio::spawn(run(task));
        for _ in 0..9 {
            batcher.on_end(span(true));
        }
        batcher.on_end(span(false));
        // Two full batches, long before the hour's schedule.
        eventually(|| exporter.spans.load(Ordering::SeqCst) == 8).await;
        assert_eq!(exporter.spans.load(Ordering::SeqCst), 8);
        assert_eq!(exporter.calls.load(Ordering::SeqCst), 2);
        // The ninth waits for its batch to fill, or for a flush; the
        // unsampled span is never exported.
        let flushed = tokio::task::spawn_blocking(move || batcher.force_flush())
            .await
            .unwrap();
        assert!(flushed.is_ok(), "{flushed:?}");
        assert_eq!(exporter.spans.load(Ordering::SeqCst), 9);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partial_batch_leaves_on_the_schedule() {
        let exporter = Counting::default();
        let (batcher, task) = batcher(
            exporter.clone(),
            settings(100, 50, Duration::from_millis(20)),
        );
        tokio::spawn(run(task));
        batcher.on_end(span(true));
        eventually(|| exporter.spans.load(Ordering::SeqCst) == 1).await;
        assert_eq!(exporter.spans.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn past_the_queue_spans_are_dropped_without_waiting() {
        // No task: nothing leaves the queue.
        let (batcher, _task) = batcher(Counting::default(), settings(3, 2, Duration::from_secs(1)));
        for _ in 0..5 {
            batcher.on_end(span(true));
        }
        assert_eq!(lock(&batcher.shared.queue).len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_export_drops_its_batch_and_the_next_goes_out() {
        let exporter = Counting::default();
        exporter.fail.store(true, Ordering::SeqCst);
        let (batcher, task) = batcher(
            exporter.clone(),
            settings(100, 2, Duration::from_secs(3600)),
        );
        tokio::spawn(run(task));
        batcher.on_end(span(true));
        batcher.on_end(span(true));
        eventually(|| exporter.calls.load(Ordering::SeqCst) == 1).await;
        exporter.fail.store(false, Ordering::SeqCst);
        batcher.on_end(span(true));
        batcher.on_end(span(true));
        eventually(|| exporter.spans.load(Ordering::SeqCst) == 2).await;
        assert_eq!(exporter.calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            exporter.spans.load(Ordering::SeqCst),
            2,
            "the failed batch is not retried"
        );
        assert!(lock(&batcher.shared.queue).is_empty());
    }

    #[test]
    fn settings_come_from_the_standard_variables_or_the_defaults() {
        let s = Settings::from_env(Duration::from_secs(1));
        // The test environment sets none of them.
        assert_eq!(
            (s.queue, s.batch, s.delay),
            (2048, 512, Duration::from_secs(1))
        );
    }
}
