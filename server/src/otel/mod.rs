//! Traces over OTLP, with the OpenTelemetry SDK.
//!
//! Off unless an endpoint is configured (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`;
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off).
//! When off, every hook here is one load of an empty [`OnceLock`].
//!
//! Spans are made with the OpenTelemetry API directly, not through the
//! `tracing` bridge: a call that is not sampled then costs a span id and a
//! context, never a span's attributes (the bridge builds them for every
//! span), and the log layers see no extra span.
//!
//! - [`server`]: the server span of every call, whatever its protocol.
//! - [`child`]: spans for work done inside a sampled call (database,
//!   Redis), and root spans for background work (jobs, the relay, webhook
//!   deliveries); cache lookups are events on the call's span.
//! - [`propagation`]: W3C `traceparent` in and out.
//! - [`export`], [`batch`], [`otlp`] and [`encode`]: the batch export,
//!   counted and bounded: it never blocks a call, and when the collector is
//!   down spans are dropped and counted (`tollgate_trace_spans_dropped_total`).
//!   The batch processor and the OTLP exporter are ours: the SDK's woke its
//!   task for nearly every span, and `opentelemetry-otlp` converted every
//!   span into owned messages before encoding them (BENCHMARKS.md, "Traces").
//!
//! The tracer is process-wide (one exporter, one batch queue), installed by
//! the first server that asks for it; the exporter runs on a runtime of its
//! own thread so it outlives any one server's runtime (tests start many).

pub mod batch;
pub mod child;
pub mod db;
pub mod encode;
pub mod export;
pub mod otlp;
pub mod propagation;
pub mod server;

use std::{sync::OnceLock, time::Duration};

use opentelemetry::{
    Context, KeyValue,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracer, SdkTracerProvider},
};

use crate::config::{Config, OtlpProtocol};

/// The process's tracer and its provider, once installed.
static TRACING: OnceLock<Installed> = OnceLock::new();

struct Installed {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    /// `--otlp-endpoint` as resolved, to tell a second server asking for
    /// another one that it shares the first.
    endpoint: String,
}

/// The tracer, when traces are on.
#[inline]
pub fn tracer() -> Option<&'static SdkTracer> {
    TRACING.get().map(|t| &t.tracer)
}

/// Whether traces are on.
#[inline]
pub fn enabled() -> bool {
    TRACING.get().is_some()
}

/// The current context when it holds a span being recorded: the parent to
/// pass to work done elsewhere (a blocking thread, a spawned task).
#[inline]
pub fn sampled_context() -> Option<Context> {
    if !enabled() {
        return None;
    }
    Context::map_current(|cx| cx.span().span_context().is_sampled().then(|| cx.clone()))
}

/// Why traces could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The exporter refused its configuration (a malformed endpoint).
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// The exporter's thread could not start.
    #[error("OTLP exporter thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// The endpoint to export to, if traces are on: the flag, else the
/// standard variables, unless the standard switches turn the SDK off.
fn endpoint(config: &Config) -> Option<String> {
    let off = |var: &str, value: &str| {
        std::env::var(var).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    if off("OTEL_SDK_DISABLED", "true") || off("OTEL_TRACES_EXPORTER", "none") {
        return None;
    }
    config
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").ok())
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
}

/// `--trace-sample-ratio`, when given: new traces are sampled here, before
/// the SDK is asked (see [`sample_root`]).
static ROOT_RATIO: OnceLock<f64> = OnceLock::new();

/// Whether a new trace (a call without a `traceparent`, a job) is
/// recorded. With `--trace-sample-ratio` the decision is made here, so a
/// call left out costs one random number and never reaches the SDK (no
/// span, no context to attach while it runs); the SDK then only follows
/// parents. Without it, the SDK's sampler (`OTEL_TRACES_SAMPLER`) decides.
#[inline]
pub fn sample_root() -> bool {
    match ROOT_RATIO.get() {
        None => true,
        Some(r) if *r >= 1.0 => true,
        Some(r) if *r <= 0.0 => false,
        Some(r) => rand::random::<f64>() < *r,
    }
}

/// The SDK's sampler: with `--trace-sample-ratio`, parent-based and always
/// on for roots ([`sample_root`] decided already); unset, the SDK's
/// reading of `OTEL_TRACES_SAMPLER` (its default, parent-based always on).
fn sampler(config: &Config) -> Option<Sampler> {
    config
        .trace_sample_ratio
        .map(|_| Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
}

/// The resource: `service.name` from `OTEL_SERVICE_NAME` (or
/// `OTEL_RESOURCE_ATTRIBUTES`), else `tollgate`; the version and instance.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let mut builder = Resource::builder().with_attributes([
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", uuid::Uuid::now_v7().to_string()),
    ]);
    if !named {
        builder = builder.with_service_name("tollgate");
    }
    builder.build()
}

/// The full URL of the traces endpoint: OTLP/HTTP posts to `/v1/traces`
/// under the base address (as `OTEL_EXPORTER_OTLP_ENDPOINT` is read),
/// unless the address already names that path.
fn http_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// Installs the process's tracer if `config` (or the environment) asks for
/// traces. A second call keeps the first installation (one exporter per
/// process); it logs when the second asks for another endpoint.
pub fn install(config: &Config) -> Result<(), Error> {
    // At zero from the start, traces on or off: a dashboard shows the
    // series, and an alert on them needs no special case.
    export::describe();
    let Some(endpoint) = endpoint(config) else {
        return Ok(());
    };
    if let Some(installed) = TRACING.get() {
        if installed.endpoint != endpoint {
            tracing::warn!(
                endpoint = %redact(&installed.endpoint),
                asked = %redact(&endpoint),
                "traces already go to another OTLP endpoint in this process"
            );
        }
        return Ok(());
    }
    let protocol = config
        .otlp_protocol
        .or_else(OtlpProtocol::from_env)
        .unwrap_or(OtlpProtocol::Grpc);
    let provider = export::provider(&endpoint, protocol, sampler(config), resource())?;
    let tracer = provider.tracer("tollgate");
    let installed = Installed {
        tracer,
        provider,
        endpoint: endpoint.clone(),
    };
    if let Some(r) = config.trace_sample_ratio {
        let _ = ROOT_RATIO.set(r.clamp(0.0, 1.0));
    }
    if let Err(lost) = TRACING.set(installed) {
        // Another server installed one meanwhile: keep that one.
        let _ = lost
            .provider
            .shutdown_with_timeout(Duration::from_millis(100));
        return Ok(());
    }
    tracing::info!(endpoint = %redact(&endpoint), protocol = ?protocol, "exporting traces over OTLP");
    Ok(())
}

/// The endpoint without userinfo, for the log.
fn redact(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => endpoint.to_owned(),
    }
}

/// Sends the spans ended so far, waiting at most `limit`: at shutdown, so
/// the last calls' spans are not lost. Runs on a blocking thread: the SDK
/// waits for its exporter synchronously.
pub async fn flush(limit: Duration) {
    let Some(installed) = TRACING.get() else {
        return;
    };
    let provider = installed.provider.clone();
    let flushed = tokio::task::spawn_blocking(move || provider.force_flush());
    let _ = tokio::time::timeout(limit, flushed).await;
}

/// Spans for the pipeline's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use opentelemetry::{
        InstrumentationScope,
        trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
    };
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

    /// An ended server span named `s`, sampled or not.
    pub(crate) fn span(sampled: bool) -> SpanData {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1u128),
                SpanId::from(2u64),
                flags,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "s".into(),
            start_time: std::time::SystemTime::UNIX_EPOCH,
            end_time: std::time::SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("t").build(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoints_post_to_v1_traces() {
        assert_eq!(
            http_url("http://c:4318"),
            "http://c:4318/v1/traces".to_owned()
        );
        assert_eq!(
            http_url("http://c:4318/"),
            "http://c:4318/v1/traces".to_owned()
        );
        assert_eq!(
            http_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces".to_owned()
        );
    }

    #[test]
    fn a_sample_ratio_is_parent_based() {
        let config = Config {
            trace_sample_ratio: Some(0.01),
            ..Config::default()
        };
        let s = sampler(&config).expect("a sampler");
        assert!(
            format!("{s:?}").starts_with("ParentBased(AlwaysOn"),
            "{s:?}"
        );
        assert!(sampler(&Config::default()).is_none());
    }
}
