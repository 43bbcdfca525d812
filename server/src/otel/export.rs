//! The export pipeline: the batch processor ([`super::batch`]) over the
//! OTLP exporter ([`super::otlp`]), all on a runtime of its own thread, and
//! the counters of what it sends and drops.

use std::{sync::OnceLock, time::Duration};

use metrics::Counter;
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider, SpanExporter},
};

use super::{Error, batch, http_url, otlp::OtlpExporter};
use crate::config::OtlpProtocol;

/// How often a batch leaves when it is not full, unless
/// `OTEL_BSP_SCHEDULE_DELAY` says otherwise: a trace shows up in Jaeger a
/// second after the call, not the SDK's five.
const DELAY: Duration = Duration::from_secs(1);

/// `tollgate_trace_spans_dropped_total{reason}`: `queue_full` or
/// `export_failed`.
pub(super) fn dropped(reason: &'static str) -> &'static Counter {
    static QUEUE_FULL: OnceLock<Counter> = OnceLock::new();
    static FAILED: OnceLock<Counter> = OnceLock::new();
    let cell = if reason == "queue_full" {
        &QUEUE_FULL
    } else {
        &FAILED
    };
    cell.get_or_init(|| metrics::counter!("tollgate_trace_spans_dropped_total", "reason" => reason))
}

/// `tollgate_trace_spans_exported_total`.
pub(super) fn exported() -> &'static Counter {
    static EXPORTED: OnceLock<Counter> = OnceLock::new();
    EXPORTED.get_or_init(|| metrics::counter!("tollgate_trace_spans_exported_total"))
}

/// Registers the span counters at zero, so a dashboard sees them before
/// the first drop.
pub fn describe() {
    let _ = (dropped("queue_full"), dropped("export_failed"), exported());
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
                let built = exporter(&endpoint, protocol).map(|mut exporter| {
                    exporter.set_resource(&resource);
                    let (processor, task) =
                        batch::batcher(exporter, batch::Settings::from_env(DELAY));
                    tokio::spawn(batch::run(task));
                    let mut builder = SdkTracerProvider::builder()
                        .with_span_processor(processor)
                        .with_resource(resource);
                    if let Some(sampler) = sampler {
                        builder = builder.with_sampler(sampler);
                    }
                    builder.build()
                });
                let failed = built.is_err();
                let _ = tx.send(built);
                if !failed {
                    // Drive the export task and the exporter's connection
                    // for the rest of the process.
                    std::future::pending::<()>().await;
                }
            });
        })?;
    rx.recv()
        .map_err(|_| Error::Exporter("the exporter thread ended".into()))?
}
