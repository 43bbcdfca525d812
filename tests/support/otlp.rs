//! A real OTLP trace receiver: the collector's `TraceService` over gRPC
//! (the `opentelemetry-proto` crate's generated server) and `POST
//! /v1/traces` over HTTP with protobuf bodies, keeping every span it is
//! sent. It can refuse exports, as a collector that is down would.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct Span {
    /// The exporting service's `service.name`.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// `SpanKind` as its number (2 server, 3 client).
    pub kind: i32,
    /// Hex.
    pub trace_id: String,
    /// Hex.
    pub span_id: String,
    /// Hex; empty for a root.
    pub parent_span_id: String,
    /// Attributes, values as strings.
    pub attributes: BTreeMap<String, String>,
    /// The status code (0 unset, 1 ok, 2 error).
    pub status: i32,
    /// Linked spans: (trace id, span id), hex.
    pub links: Vec<(String, String)>,
    /// Events: name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
}

impl Span {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// Server span kind.
pub const SERVER: i32 = 2;
/// Client span kind.
pub const CLIENT: i32 = 3;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(value).unwrap_or_default(),
            )
        })
        .collect()
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<Span>>,
    refusing: AtomicBool,
    exports: Mutex<u64>,
}

impl State {
    fn take(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap_or_else(|e| e.into_inner());
        *self.exports.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        for rs in request.resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes: attributes(&s.attributes),
                        status: s.status.map_or(0, |st| st.code),
                        links: s
                            .links
                            .iter()
                            .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                            .collect(),
                        events: s
                            .events
                            .iter()
                            .map(|e| (e.name.clone(), attributes(&e.attributes)))
                            .collect(),
                    });
                }
            }
        }
    }
}

struct Grpc(Arc<State>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.0.refusing.load(Ordering::Relaxed) {
            return Err(tonic::Status::unavailable("collector refusing"));
        }
        self.0.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver; stops when dropped.
pub struct Receiver {
    state: Arc<State>,
    grpc: SocketAddr,
    http: SocketAddr,
    stop: CancellationToken,
}

impl Receiver {
    /// Starts both listeners on loopback ports of their own.
    pub async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(State::default());
        let stop = CancellationToken::new();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc = grpc_listener.local_addr()?;
        {
            let (state, stop) = (state.clone(), stop.clone());
            tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(Grpc(state)))
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                        stop.cancelled_owned(),
                    )
                    .await;
            });
        }
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http = http_listener.local_addr()?;
        {
            let (state, stop) = (state.clone(), stop.clone());
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(move |body: Bytes| {
                    let state = state.clone();
                    async move {
                        if state.refusing.load(Ordering::Relaxed) {
                            return (http::StatusCode::SERVICE_UNAVAILABLE, Bytes::new());
                        }
                        match ExportTraceServiceRequest::decode(body) {
                            Ok(request) => {
                                state.take(request);
                                let response = ExportTraceServiceResponse {
                                    partial_success: None,
                                };
                                (http::StatusCode::OK, Bytes::from(response.encode_to_vec()))
                            }
                            Err(_) => (http::StatusCode::BAD_REQUEST, Bytes::new()),
                        }
                    }
                }),
            );
            tokio::spawn(async move {
                let _ = axum::serve(http_listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            });
        }
        Ok(Self {
            state,
            grpc,
            http,
            stop,
        })
    }

    /// The OTLP/gRPC endpoint.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The OTLP/HTTP base address (`/v1/traces` is appended by exporters).
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Makes exports fail (UNAVAILABLE / 503), or succeed again.
    pub fn refuse(&self, refusing: bool) {
        self.state.refusing.store(refusing, Ordering::Relaxed);
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.state
            .spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The spans of `trace_id`, once `done` holds for them (or after
    /// `limit`, whatever arrived).
    pub async fn trace(
        &self,
        trace_id: &str,
        limit: Duration,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let deadline = Instant::now() + limit;
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace_id)
                .collect();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
