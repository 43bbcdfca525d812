//! The export pipeline: a batch processor bounded and counted by us, over
//! the OTLP exporter, all on a runtime of its own thread.
//!
//! The SDK's batch processor drops spans when its queue is full but only
//! says how many at shutdown, and an exporter's failure is only logged; an
//! operator needs both as they happen. So the spans between "ended" and
//! "exported or failed" are counted here: past the queue's size a span is
//! dropped at once (`reason="queue_full"`) and never reaches the SDK's
//! queue, so that queue never fills; a failed export drops its batch
//! (`reason="export_failed"`). Ending a span never waits for anything.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use metrics::Counter;
use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    runtime,
    trace::{
        BatchConfigBuilder, Sampler, SdkTracerProvider, Span, SpanData, SpanExporter,
        SpanProcessor, span_processor_with_async_runtime::BatchSpanProcessor,
    },
};

use super::{Error, http_url, otlp::OtlpExporter};
use crate::config::OtlpProtocol;

/// Spans queued at most, between ended and exported (the SDK's default).
const QUEUE: usize = 2048;

/// How often a batch leaves when it is not full, unless
/// `OTEL_BSP_SCHEDULE_DELAY` says otherwise: a trace shows up in Jaeger a
/// second after the call, not the SDK's five.
const DELAY: Duration = Duration::from_secs(1);

fn dropped(reason: &'static str) -> &'static Counter {
    static QUEUE_FULL: OnceLock<Counter> = OnceLock::new();
    static FAILED: OnceLock<Counter> = OnceLock::new();
    let cell = if reason == "queue_full" {
        &QUEUE_FULL
    } else {
        &FAILED
    };
    cell.get_or_init(|| metrics::counter!("tollgate_trace_spans_dropped_total", "reason" => reason))
}

fn exported() -> &'static Counter {
    static EXPORTED: OnceLock<Counter> = OnceLock::new();
    EXPORTED.get_or_init(|| metrics::counter!("tollgate_trace_spans_exported_total"))
}

/// Registers the span counters at zero, so a dashboard sees them before
/// the first drop.
pub fn describe() {
    let _ = (dropped("queue_full"), dropped("export_failed"), exported());
}

/// The exporter, counting what it sends and what it fails to.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    in_flight: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
        match &result {
            Ok(()) => exported().increment(n as u64),
            Err(_) => dropped("export_failed").increment(n as u64),
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The batch processor behind a bound of our own (see the module doc).
#[derive(Debug)]
struct Bounded<P> {
    inner: P,
    in_flight: Arc<AtomicUsize>,
    limit: usize,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.limit {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            dropped("queue_full").increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter for `endpoint` over `protocol` (OTLP/HTTP posts to
/// `/v1/traces` under the address).
fn exporter(endpoint: &str, protocol: OtlpProtocol) -> Result<OtlpExporter, Error> {
    match protocol {
        OtlpProtocol::Grpc => OtlpExporter::new(endpoint, protocol),
        OtlpProtocol::HttpProtobuf => OtlpExporter::new(&http_url(endpoint), protocol),
    }
}

/// Builds the provider, its exporter and batch processor on a thread of
/// their own (a one-thread Tokio runtime that lives as long as the
/// process): the exporter's connection and the batch task must run on a
/// runtime, and a server's runtime may end before the process does.
pub fn provider(
    endpoint: &str,
    protocol: OtlpProtocol,
    sampler: Option<Sampler>,
    resource: Resource,
) -> Result<SdkTracerProvider, Error> {
    let (tx, rx) = std::sync::mpsc::channel();
    let endpoint = endpoint.to_owned();
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(Error::Thread(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let built = exporter(&endpoint, protocol).map(|exporter| {
                    let in_flight = Arc::new(AtomicUsize::new(0));
                    let mut batch = BatchConfigBuilder::default().with_max_queue_size(QUEUE + 64);
                    if std::env::var("OTEL_BSP_SCHEDULE_DELAY").is_err() {
                        batch = batch.with_scheduled_delay(DELAY);
                    }
                    let processor = BatchSpanProcessor::builder(
                        Counted {
                            inner: exporter,
                            in_flight: in_flight.clone(),
                        },
                        runtime::Tokio,
                    )
                    .with_batch_config(batch.build())
                    .build();
                    let mut builder = SdkTracerProvider::builder()
                        .with_span_processor(Bounded {
                            inner: processor,
                            in_flight,
                            limit: QUEUE,
                        })
                        .with_resource(resource);
                    if let Some(sampler) = sampler {
                        builder = builder.with_sampler(sampler);
                    }
                    builder.build()
                });
                let failed = built.is_err();
                let _ = tx.send(built);
                if !failed {
                    // Drive the batch task and the exporter's connection
                    // for the rest of the process.
                    std::future::pending::<()>().await;
                }
            });
        })?;
    rx.recv()
        .map_err(|_| Error::Exporter("the exporter thread ended".into()))?
}
