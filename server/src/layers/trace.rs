//! One span per RPC (method, principal, code, latency) and the Prometheus
//! metrics: requests by method and code, errors by method and code, and a
//! latency histogram per method.
//!
//! The gRPC code arrives either in the response headers (trailers-only
//! responses, i.e. most errors) or in the trailers at the end of the body,
//! so the body is wrapped to see them; a body dropped before its trailers is
//! counted as CANCELLED.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument, Span, field::Empty};

use super::{BoxFuture, request_id::RequestId};

/// The canonical codes, indexed by their number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Metric handles of one method, made once so the hot path only bumps
/// atomics.
struct MethodMetrics {
    method: Arc<str>,
    latency: Histogram,
    requests: [OnceLock<Counter>; 17],
    errors: [OnceLock<Counter>; 17],
}

impl MethodMetrics {
    fn new(method: &str) -> Self {
        let method: Arc<str> = Arc::from(method);
        Self {
            latency: metrics::histogram!("tollgate_grpc_request_duration_seconds", "method" => method.to_string()),
            method,
            requests: Default::default(),
            errors: Default::default(),
        }
    }

    fn record(&self, code: usize, seconds: f64) {
        let code = code.min(16);
        self.latency.record(seconds);
        self.requests[code]
            .get_or_init(|| {
                metrics::counter!("tollgate_grpc_requests_total", "method" => self.method.to_string(), "code" => CODES[code])
            })
            .increment(1);
        if code != 0 {
            self.errors[code]
                .get_or_init(|| {
                    metrics::counter!("tollgate_grpc_errors_total", "method" => self.method.to_string(), "code" => CODES[code])
                })
                .increment(1);
        }
    }
}

/// Metric handles of every known method; unknown paths share one bucket so
/// scanners cannot blow up label cardinality.
pub struct RpcMetrics {
    methods: HashMap<String, Arc<MethodMetrics>>,
    other: Arc<MethodMetrics>,
}

impl RpcMetrics {
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let methods = paths
            .into_iter()
            .map(|p| (p.to_owned(), Arc::new(MethodMetrics::new(p))))
            .collect();
        Self {
            methods,
            other: Arc::new(MethodMetrics::new("other")),
        }
    }

    fn get(&self, path: &str) -> Arc<MethodMetrics> {
        self.methods.get(path).unwrap_or(&self.other).clone()
    }
}

/// Builds [`Trace`] services.
#[derive(Clone)]
pub struct TraceLayer {
    metrics: Arc<RpcMetrics>,
}

impl TraceLayer {
    pub fn new(metrics: Arc<RpcMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Wraps each call in a span and records its outcome.
#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

/// Records an RPC's outcome exactly once: on its status, or as CANCELLED
/// when dropped first.
struct Recorder {
    span: Span,
    metrics: Arc<MethodMetrics>,
    start: Instant,
    done: bool,
}

impl Recorder {
    fn finish(&mut self, code: usize) {
        if self.done {
            return;
        }
        self.done = true;
        let elapsed = self.start.elapsed();
        self.metrics.record(code, elapsed.as_secs_f64());
        let name = CODES[code.min(16)];
        let ms = elapsed.as_secs_f64() * 1000.0;
        self.span.record("code", name);
        self.span.record("latency_ms", ms);
        let _e = self.span.enter();
        match Code::from(i32::try_from(code).unwrap_or(2)) {
            Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable => {
                tracing::warn!(code = name, latency_ms = ms, "rpc failed")
            }
            _ => tracing::debug!(code = name, latency_ms = ms, "rpc finished"),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(1);
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<usize> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

// === impl Trace ===

impl<S, ReqB, B> Service<Request<ReqB>> for Trace<S>
where
    S: Service<Request<ReqB>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = Response<ObservedBody<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let id = RequestId::from_headers(req.headers());
        req.extensions_mut().insert(id);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = req.uri().path();
        let span = tracing::info_span!(
            "rpc",
            method = path,
            principal = Empty,
            code = Empty,
            latency_ms = Empty
        );
        let mut recorder = Recorder {
            span: span.clone(),
            metrics: self.metrics.get(path),
            start: Instant::now(),
            done: false,
        };
        let fut = inner.call(req).instrument(span);
        Box::pin(async move {
            let resp = fut.await?;
            let recorder = match grpc_status(resp.headers()) {
                Some(code) => {
                    recorder.finish(code);
                    None
                }
                None => Some(recorder),
            };
            Ok(resp.map(|inner| ObservedBody { inner, recorder }))
        })
    }
}

pin_project! {
    /// A response body that records the status in its trailers.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let (Poll::Ready(ready), Some(rec)) = (&polled, this.recorder.as_mut()) {
            match ready {
                Some(Ok(frame)) => {
                    if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                        rec.finish(code);
                    }
                }
                Some(Err(_)) => rec.finish(2),
                // Ended without trailers: not a proper gRPC response.
                None => rec.finish(2),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
