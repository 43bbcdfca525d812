//! The OTLP trace exporter: each batch encoded by [`super::encode`] straight
//! from the SDK's spans, then sent over OTLP/gRPC (a tonic unary call to
//! `TraceService/Export`) or OTLP/HTTP (`POST …/v1/traces`, protobuf), with
//! the headers and timeout of the standard `OTEL_EXPORTER_OTLP_*`
//! variables.
//!
//! Written here rather than taken from `opentelemetry-otlp`: that exporter
//! builds `opentelemetry-proto` messages from every span (a `String` per
//! attribute key and value, a clone of every value) and prost then sizes
//! each nested message again at every level; with every call sampled that
//! was about 33,600 instructions per span, more than the rest of a cached
//! call (BENCHMARKS.md, "Traces"). The transport is the same crates the
//! rest of Tollgate uses (tonic, reqwest); a failed or timed-out export is
//! an error the pipeline counts (see `export`), never a retry that holds
//! the queue.

use std::{fmt, time::Duration};

use http::{HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};
use tonic::{
    client::Grpc,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

use super::{Error, encode};
use crate::config::OtlpProtocol;

/// The gRPC method of an export.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The OTLP default when no variable sets one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends batches of spans to one OTLP endpoint.
pub struct OtlpExporter {
    transport: Transport,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    resource: Resource,
}

enum Transport {
    Grpc(Grpc<Channel>),
    Http {
        client: reqwest::Client,
        url: String,
    },
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: names only.
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpExporter")
            .field(
                "transport",
                &match &self.transport {
                    Transport::Grpc(_) => "grpc",
                    Transport::Http { .. } => "http/protobuf",
                },
            )
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl OtlpExporter {
    /// An exporter to `endpoint` (for HTTP, the full `/v1/traces` URL)
    /// over `protocol`; https endpoints are verified against the Mozilla
    /// roots. Must run inside a Tokio runtime (the gRPC channel connects
    /// lazily on it).
    pub fn new(endpoint: &str, protocol: OtlpProtocol) -> Result<Self, Error> {
        let transport = match protocol {
            OtlpProtocol::Grpc => {
                let mut channel = Endpoint::from_shared(endpoint.to_owned())
                    .map_err(|e| Error::Exporter(format!("endpoint {endpoint:?}: {e}")))?;
                if endpoint.starts_with("https://") {
                    channel = channel
                        .tls_config(ClientTlsConfig::new().with_webpki_roots())
                        .map_err(|e| Error::Exporter(format!("TLS: {e}")))?;
                }
                Transport::Grpc(Grpc::new(channel.connect_lazy()))
            }
            OtlpProtocol::HttpProtobuf => {
                url::Url::parse(endpoint)
                    .map_err(|e| Error::Exporter(format!("endpoint {endpoint:?}: {e}")))?;
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .map_err(|e| Error::Exporter(format!("HTTP client: {e}")))?;
                Transport::Http {
                    client,
                    url: endpoint.to_owned(),
                }
            }
        };
        Ok(Self {
            transport,
            headers: headers_from_env(),
            timeout: timeout_from_env(),
            resource: Resource::builder_empty().build(),
        })
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        match &self.transport {
            Transport::Grpc(grpc) => {
                let mut grpc = grpc.clone();
                grpc.ready()
                    .await
                    .map_err(|e| format!("collector unreachable: {e}"))?;
                let mut request = tonic::Request::new(Encoded(body));
                for (name, value) in &self.headers {
                    request.metadata_mut().insert(
                        tonic::metadata::MetadataKey::from_bytes(name.as_str().as_bytes())
                            .map_err(|e| e.to_string())?,
                        tonic::metadata::MetadataValue::try_from(value.as_bytes())
                            .map_err(|e| e.to_string())?,
                    );
                }
                let response: tonic::Response<ExportTraceServiceResponse> = grpc
                    .unary(
                        request,
                        http::uri::PathAndQuery::from_static(EXPORT_PATH),
                        tonic_prost::ProstCodec::default(),
                    )
                    .await
                    .map_err(|s| format!("export failed: {} {}", s.code(), s.message()))?;
                partial(response.get_ref());
                Ok(())
            }
            Transport::Http { client, url } => {
                let mut request = client
                    .post(url)
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(body);
                for (name, value) in &self.headers {
                    request = request.header(name.clone(), value.clone());
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| format!("collector unreachable: {e}"))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!("export failed: HTTP {status}"));
                }
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                if let Ok(answer) = <ExportTraceServiceResponse as prost::Message>::decode(body) {
                    partial(&answer);
                }
                Ok(())
            }
        }
    }
}

/// Logs what a collector accepted only in part (OTLP's partial success).
fn partial(answer: &ExportTraceServiceResponse) {
    if let Some(p) = &answer.partial_success
        && (p.rejected_spans > 0 || !p.error_message.is_empty())
    {
        tracing::warn!(
            rejected_spans = p.rejected_spans,
            reason = %p.error_message,
            "the OTLP collector rejected spans"
        );
    }
}

impl SpanExporter for OtlpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // `export_request` reserves the size it measured.
        let mut body = Vec::new();
        encode::export_request(&self.resource, &batch, &mut body);
        // The spans are encoded: free them before waiting on the network.
        drop(batch);
        match tokio::time::timeout(self.timeout, self.send(body)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(OTelSdkError::InternalFailure(reason)),
            Err(_) => Err(OTelSdkError::Timeout(self.timeout)),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

/// An encoded request, handed to tonic's prost codec as a message whose
/// encoding is the bytes themselves.
#[derive(Debug, Default, Clone, PartialEq)]
struct Encoded(Vec<u8>);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Never decoded: requests only go out.
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// `OTEL_EXPORTER_OTLP_HEADERS`, then `OTEL_EXPORTER_OTLP_TRACES_HEADERS`
/// (whose keys win): `key=value` pairs separated by commas, values
/// percent-decoded; a pair that is not a valid header is skipped.
fn headers_from_env() -> Vec<(HeaderName, HeaderValue)> {
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for var in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Ok(value) = std::env::var(var) {
            for (name, value) in parse_headers(&value) {
                headers.retain(|(n, _)| *n != name);
                headers.push((name, value));
            }
        }
    }
    headers
}

fn parse_headers(list: &str) -> Vec<(HeaderName, HeaderValue)> {
    list.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let key = key.trim();
            let value = value.trim();
            let decoded = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .ok()?;
            if key.is_empty() || decoded.is_empty() {
                return None;
            }
            Some((
                HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()).ok()?,
                HeaderValue::from_str(&decoded).ok()?,
            ))
        })
        .collect()
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
/// (milliseconds), else 10 s.
fn timeout_from_env() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|var| std::env::var(var).ok()?.trim().parse::<u64>().ok())
    .map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest,
        trace_service_server::{TraceService, TraceServiceServer},
    };
    use prost::Message as _;

    use super::*;
    use crate::otel::testing::span;

    /// What a receiver got: the request's headers and the span names.
    type Seen = Arc<Mutex<Vec<(http::HeaderMap, Vec<String>)>>>;

    fn names(request: &ExportTraceServiceRequest) -> Vec<String> {
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    struct Grpc(Seen);

    #[tonic::async_trait]
    impl TraceService for Grpc {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let headers = request.metadata().clone().into_headers();
            let names = names(request.get_ref());
            self.0.lock().unwrap().push((headers, names));
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    /// A gRPC and an HTTP receiver on loopback, the latter answering
    /// `status`.
    async fn receivers(seen: &Seen, status: http::StatusCode) -> (String, String) {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Grpc(seen.clone())))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc)),
        );
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_url = format!("http://{}/v1/traces", http.local_addr().unwrap());
        let seen = seen.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
                let seen = seen.clone();
                async move {
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    seen.lock().unwrap().push((headers, names(&request)));
                    let answer = ExportTraceServiceResponse::default().encode_to_vec();
                    (status, answer)
                }
            }),
        );
        tokio::spawn(async move { axum::serve(http, app).await });
        (grpc_url, http_url)
    }

    #[tokio::test]
    async fn both_transports_deliver_the_batch_with_the_configured_headers() {
        let seen = Seen::default();
        let (grpc_url, http_url) = receivers(&seen, http::StatusCode::OK).await;
        for (url, protocol) in [
            (grpc_url, OtlpProtocol::Grpc),
            (http_url, OtlpProtocol::HttpProtobuf),
        ] {
            let mut exporter = OtlpExporter::new(&url, protocol).unwrap();
            exporter.headers = parse_headers("x-tenant=acme,authorization=Bearer%20s3cret");
            let sent = exporter.export(vec![span(true), span(true)]).await;
            assert!(sent.is_ok(), "{protocol:?}: {sent:?}");
            let (headers, names) = seen.lock().unwrap().pop().expect("an export arrived");
            assert_eq!(names, ["s", "s"], "{protocol:?}");
            assert_eq!(headers["x-tenant"], "acme", "{protocol:?}");
            assert_eq!(headers["authorization"], "Bearer s3cret", "{protocol:?}");
            let content_type = headers[http::header::CONTENT_TYPE].to_str().unwrap();
            let want = match protocol {
                OtlpProtocol::Grpc => "application/grpc",
                OtlpProtocol::HttpProtobuf => "application/x-protobuf",
            };
            assert!(content_type.starts_with(want), "{content_type}");
        }
    }

    #[tokio::test]
    async fn a_refused_or_unreachable_export_is_an_error() {
        let seen = Seen::default();
        let (_, http_url) = receivers(&seen, http::StatusCode::SERVICE_UNAVAILABLE).await;
        let exporter = OtlpExporter::new(&http_url, OtlpProtocol::HttpProtobuf).unwrap();
        let refused = exporter.export(vec![span(true)]).await;
        assert!(
            matches!(refused, Err(OTelSdkError::InternalFailure(_))),
            "{refused:?}"
        );
        // Nothing listens on a port just released.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let exporter = OtlpExporter::new(&closed, OtlpProtocol::Grpc).unwrap();
        let down = exporter.export(vec![span(true)]).await;
        assert!(down.is_err(), "{down:?}");
    }

    #[test]
    fn header_lists_are_parsed_and_percent_decoded() {
        let parsed = parse_headers(" Authorization=Basic%20dXNlcg== , x-tenant = acme ,bad,=v,k=");
        let pairs: Vec<(&str, &str)> = parsed
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            pairs,
            [("authorization", "Basic dXNlcg=="), ("x-tenant", "acme")]
        );
    }

    // On a runtime: the gRPC channel connects lazily on it.
    #[tokio::test]
    async fn the_debug_form_shows_no_header_values() {
        let mut exporter = OtlpExporter::new("http://127.0.0.1:4317", OtlpProtocol::Grpc).unwrap();
        exporter.headers = parse_headers("authorization=secret-token");
        let shown = format!("{exporter:?}");
        assert!(shown.contains("authorization"), "{shown}");
        assert!(!shown.contains("secret-token"), "{shown}");
    }

    // On a runtime: the gRPC channel connects lazily on it.
    #[tokio::test]
    async fn malformed_endpoints_are_refused() {
        assert!(OtlpExporter::new("not a url", OtlpProtocol::HttpProtobuf).is_err());
        assert!(OtlpExporter::new("http://", OtlpProtocol::Grpc).is_err());
    }
}
