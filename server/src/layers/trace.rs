//! One span per RPC (method, principal), one closing event (code, latency)
//! and the Prometheus metrics: requests by method and code, errors by
//! method and code, and a latency histogram per method.
//!
//! The gRPC code arrives either in the response headers (trailers-only
//! responses, i.e. most errors) or in the trailers at the end of the body,
//! so the body is wrapped to see them; a body dropped before its trailers is
//! counted as CANCELLED.
//!
//! A call whose client went away (reset the stream or closed the
//! connection) before its request was read is counted as CANCELLED too,
//! whatever status tonic made of the broken request body (often UNKNOWN):
//! the request body is wrapped to notice. Only server-side failures
//! (INTERNAL, UNKNOWN, DATA_LOSS, UNAVAILABLE) log at WARN; what clients
//! cause logs at debug, so no client can flood the log.
//!
//! A call cut at its deadline (the listener's request timeout, or the
//! client's `grpc-timeout`; see [`Arrival::deadline`]) is counted as
//! DEADLINE_EXCEEDED, whether the listener answered for it (dropping the
//! handler, which would otherwise count as CANCELLED) or its request body
//! ran out of time.
//!
//! tonic-health's stubs answer an undecodable request INTERNAL (tonic's
//! codec; ours answer INVALID_ARGUMENT, see `tollgate::codec`). The metrics
//! count the code the client got, but such a call logs at debug.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, ready},
    time::Instant,
};

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tonic::Code;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument, Span, field::Empty, instrument::Instrumented};

use super::{call::Call, request_id::RequestId};
use crate::{
    http::Protocol,
    listener::Arrival,
    otel::{self, server::Origin},
};

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
/// atomics; each (protocol, code) series is registered at its first call.
struct MethodMetrics {
    method: Arc<str>,
    /// The server span's name: the path without its slash, or `other`.
    span_name: &'static str,
    latency: [OnceLock<Histogram>; 4],
    requests: [[OnceLock<Counter>; 17]; 4],
    errors: [[OnceLock<Counter>; 17]; 4],
}

impl MethodMetrics {
    fn new(method: &str) -> Self {
        Self {
            method: Arc::from(method),
            span_name: otel::server::intern(method.trim_start_matches('/')),
            latency: Default::default(),
            requests: Default::default(),
            errors: Default::default(),
        }
    }

    fn record(&self, protocol: Protocol, code: usize, seconds: f64) {
        let code = code.min(16);
        let p = protocol.index();
        let (method, proto) = (&self.method, protocol.as_str());
        self.latency[p]
            .get_or_init(|| {
                metrics::histogram!("tollgate_grpc_request_duration_seconds", "method" => method.to_string(), "protocol" => proto)
            })
            .record(seconds);
        self.requests[p][code]
            .get_or_init(|| {
                metrics::counter!("tollgate_grpc_requests_total", "method" => method.to_string(), "code" => CODES[code], "protocol" => proto)
            })
            .increment(1);
        if code != 0 {
            self.errors[p][code]
                .get_or_init(|| {
                    metrics::counter!("tollgate_grpc_errors_total", "method" => method.to_string(), "code" => CODES[code], "protocol" => proto)
                })
                .increment(1);
        }
    }
}

/// The name of status `code` (`INTERNAL`), or `UNKNOWN` past the last.
pub fn code_name(code: usize) -> &'static str {
    CODES.get(code).copied().unwrap_or("UNKNOWN")
}

/// Metric handles of every known method; unknown paths share one bucket so
/// scanners cannot blow up label cardinality.
pub struct RpcMetrics {
    /// Looked up on every call; foldhash rather than SipHash, as the keys
    /// are the served methods, never chosen by a client.
    methods: HashMap<String, Arc<MethodMetrics>, foldhash::fast::RandomState>,
    other: Arc<MethodMetrics>,
}

impl RpcMetrics {
    /// Registers the metrics of each of `paths` (`/package.Service/Method`)
    /// up front; any other path is counted as `other`.
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
    /// A layer recording into `metrics`, shared by every service it builds.
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
    /// The call's facts: request id, principal, whether the client left.
    call: Arc<Call>,
    /// Set when tonic's codec could not decode the request.
    undecodable: bool,
    /// When the listener cuts the call, if it does.
    deadline: Option<Instant>,
    /// The protocol the call came in (native gRPC unless the front said).
    protocol: Protocol,
    /// The server span's context, when traces are on.
    otel: Option<opentelemetry::Context>,
}

/// Who caused an outcome, which decides its log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// OK, or an outcome the client caused: logged at debug.
    None,
    /// The server failed: logged at WARN.
    Server,
}

/// The code to count and who is at fault, for a status `code`.
/// `deadline_passed`: the call's deadline had passed when it ended.
fn classify(
    code: usize,
    client_gone: bool,
    undecodable: bool,
    deadline_passed: bool,
) -> (usize, Fault) {
    const CANCELLED: usize = 1;
    const DEADLINE_EXCEEDED: usize = 4;
    // Cut by the listener (dropped: CANCELLED), failed by our request body
    // deadline (which looks like a broken body), or answered so by tonic.
    if deadline_passed && (code == CANCELLED || code == DEADLINE_EXCEEDED || client_gone) {
        return (DEADLINE_EXCEEDED, Fault::None);
    }
    if code != 0 && client_gone {
        return (CANCELLED, Fault::None);
    }
    let code = code.min(16);
    match Code::from(i32::try_from(code).unwrap_or(2)) {
        Code::Internal if undecodable => (code, Fault::None),
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable => {
            (code, Fault::Server)
        }
        _ => (code, Fault::None),
    }
}

impl Recorder {
    fn finish(&mut self, code: usize) {
        if self.done {
            return;
        }
        self.done = true;
        let now = Instant::now();
        let deadline_passed = self.deadline.is_some_and(|d| now >= d);
        let (code, fault) = classify(
            code,
            self.call.client_gone(),
            self.undecodable,
            deadline_passed,
        );
        let elapsed = now.duration_since(self.start);
        self.metrics
            .record(self.protocol, code, elapsed.as_secs_f64());
        let name = CODES[code];
        let ms = elapsed.as_secs_f64() * 1000.0;
        // The log line below carries the trace's ids (see `telemetry`).
        let _attached = self.otel.clone().map(opentelemetry::Context::attach);
        if let Some(cx) = &self.otel {
            let http = (self.protocol != Protocol::Grpc).then(|| {
                crate::api::error::http_status(Code::from(i32::try_from(code).unwrap_or(2)))
                    .as_u16()
            });
            otel::server::finish_rpc(
                cx,
                code,
                fault == Fault::Server,
                self.call.principal().map(|p| p.name()),
                || self.call.request_id().to_string(),
                http,
            );
        }
        // The outcome goes on the closing event, not on the span: recording
        // into a span makes every log layer re-format its fields, a cost
        // paid on every call even at levels that print nothing per call.
        let _e = self.span.enter();
        match fault {
            Fault::Server => tracing::warn!(
                method = &*self.metrics.method,
                principal = self.call.principal().map_or("-", |p| p.name()),
                request_id = %self.call.request_id(),
                code = name,
                latency_ms = ms,
                "rpc failed"
            ),
            Fault::None => tracing::debug!(code = name, latency_ms = ms, "rpc finished"),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish(1);
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<usize> {
    crate::http::headers::find(headers, &crate::http::headers::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether a status is tonic's codec failing to decode the request
/// (`ProstCodec` says "failed to decode Protobuf message: …").
fn undecodable(headers: &HeaderMap) -> bool {
    crate::http::headers::find(headers, &crate::http::headers::GRPC_MESSAGE)
        .is_some_and(|v| v.as_bytes().starts_with(b"failed%20to%20decode%20Protobuf"))
}

// === impl Trace ===

impl<S, ReqB, B> Service<Request<ReqB>> for Trace<S>
where
    S: Service<Request<WatchedBody<ReqB>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = Response<ObservedBody<B>>;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let call = Arc::new(Call::new(RequestId::from_headers(req.headers())));
        req.extensions_mut().insert(call.clone());
        let path = req.uri().path();
        // A debug span: at the default level it is disabled and costs
        // nothing per call (formatting its fields cost about 7% of a cached
        // call's CPU); what a WARN line needs, it carries itself.
        let span = tracing::debug_span!("rpc", method = path, principal = Empty);
        let metrics = self.metrics.get(path);
        let origin = req.extensions().get::<Origin>();
        let protocol = origin.map_or(Protocol::Grpc, |o| o.protocol);
        let otel = otel::server::start_rpc(metrics.span_name, req.headers(), origin);

        let recorder = Recorder {
            span: span.clone(),
            metrics,
            start: Instant::now(),
            done: false,
            call: call.clone(),
            undecodable: false,
            deadline: req.extensions().get::<Arrival>().and_then(|a| a.deadline),
            protocol,
            otel,
        };
        let req = req.map(|inner| WatchedBody { inner, call });
        // What the layers inside do before their future (refusing a
        // malformed credential, say) is inside the call's span too.
        let attached = recorder.otel.clone().map(opentelemetry::Context::attach);
        // Called at once: the service `poll_ready` readied, no clone.
        let inner = self.inner.call(req).instrument(span);
        drop(attached);
        TraceFuture {
            inner,
            recorder: Some(recorder),
        }
    }
}

pin_project! {
    /// The future of [`Trace`]: the inner future, then the response body
    /// wrapped to see its status. No allocation per call.
    pub struct TraceFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        // Its server span context is attached while the call's own work is
        // polled, so its spans and log lines find the server span.
        recorder: Option<Recorder>,
    }
}

impl<F, B, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _attached = this
            .recorder
            .as_ref()
            .and_then(|r| r.otel.clone())
            .map(opentelemetry::Context::attach);
        // An error drops the recorder, which counts the call as CANCELLED.
        let resp = ready!(this.inner.poll(cx))?;
        let recorder = match (grpc_status(resp.headers()), this.recorder.take()) {
            (Some(code), Some(mut recorder)) => {
                recorder.undecodable = undecodable(resp.headers());
                recorder.finish(code);
                None
            }
            (_, recorder) => recorder,
        };
        Poll::Ready(Ok(resp.map(|inner| ObservedBody { inner, recorder })))
    }
}

pin_project! {
    /// A request body that notes when reading it fails. hyper fails it only
    /// when the client reset the stream or the connection broke.
    pub struct WatchedBody<B> {
        #[pin]
        inner: B,
        call: Arc<Call>,
    }
}

impl<B: Body> Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            this.call.mark_client_gone();
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
        // A streaming method's work runs as its body is polled.
        let _attached = this
            .recorder
            .as_ref()
            .and_then(|r| r.otel.clone())
            .map(opentelemetry::Context::attach);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_of_a_client_that_went_away_are_cancelled() {
        // tonic makes UNKNOWN (or INTERNAL) of a reset request body.
        assert_eq!(classify(2, true, false, false), (1, Fault::None));
        assert_eq!(classify(13, true, false, false), (1, Fault::None));
        // An answer the client did not wait for is still what it was.
        assert_eq!(classify(0, true, false, false), (0, Fault::None));
    }

    #[test]
    fn calls_cut_at_their_deadline_are_deadline_exceeded() {
        // Dropped by the listener's timeout.
        assert_eq!(classify(1, false, false, true), (4, Fault::None));
        // The request body ran out of time (it looks like a broken body).
        assert_eq!(classify(4, true, false, true), (4, Fault::None));
        assert_eq!(classify(2, true, false, true), (4, Fault::None));
        // Done in time, or a server failure, stays what it was.
        assert_eq!(classify(0, false, false, true), (0, Fault::None));
        assert_eq!(classify(13, false, false, true), (13, Fault::Server));
        assert_eq!(classify(1, false, false, false), (1, Fault::None));
    }

    #[test]
    fn only_server_failures_warn() {
        for code in [2, 13, 14, 15] {
            assert_eq!(
                classify(code, false, false, false),
                (code, Fault::Server),
                "{code}"
            );
        }
        for code in [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16] {
            assert_eq!(
                classify(code, false, false, false),
                (code, Fault::None),
                "{code}"
            );
        }
        // Garbage sent to tonic-health: counted as sent, logged at debug.
        assert_eq!(classify(13, false, true, false), (13, Fault::None));
        assert_eq!(classify(99, false, false, false), (16, Fault::None));
    }

    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "builds the statuses tonic's codec sends, to read their headers"
    )]
    fn tonic_decode_failures_are_recognised() {
        let status = tonic::Status::internal("failed to decode Protobuf message: buffer underflow");
        let mut headers = HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        assert!(undecodable(&headers));
        let mut headers = HeaderMap::new();
        tonic::Status::internal("internal error")
            .add_header(&mut headers)
            .unwrap();
        assert!(!undecodable(&headers));
    }
}
