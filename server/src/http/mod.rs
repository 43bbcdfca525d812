//! HTTP on the gRPC port: the protocols that are not native gRPC
//! (HTTP/JSON transcoding, Connect, gRPC-Web) and the documents served
//! beside them. Every call they carry ends in the same tonic services
//! behind the same tower layers as native gRPC ([`bridge`]), so
//! authentication, permissions, metrics and logs cannot differ by
//! protocol.
//!
//! [`Front`] is the one place HTTP enters the server: it tells the
//! protocols apart by content type and path, in this order:
//! `application/grpc-web*` → gRPC-Web (tonic-web); `application/grpc*` →
//! native gRPC; the path of a served method (`/package.Service/Method`) →
//! Connect; anything else → the HTTP routes (HTTP/JSON bindings and
//! documents).
//!
//! HTTP/JSON transcoding, compiled once at start-up from the
//! `google.api.http` annotations:
//! - [`template`]: path templates, parsed and matched;
//! - [`routes`]: every binding of every method, with its field bindings,
//!   body rule and query table;
//! - [`query`]: the query parameters a binding accepts, and their values;
//! - [`json`]: the canonical proto3 JSON mapping, both ways, and the exact
//!   rules of what responses contain;
//! - [`transcode`]: [`transcode::Transcoder`], the entry point: HTTP
//!   request to protobuf request, protobuf response to JSON, stream lines.
//!
//! Serving them:
//! - [`bridge`]: the in-process gRPC call every protocol ends in;
//!   [`frames`]: the length-prefixed messages gRPC and Connect share;
//! - [`gateway`]: HTTP/JSON (unary, NDJSON and WebSocket streams);
//! - [`connect`]: the Connect protocol; gRPC-Web is tonic-web's;
//! - [`headers`]: which headers become metadata, per protocol;
//! - [`error`]: refusals of the HTTP layer and how any status is rendered
//!   (grpc-gateway's JSON, Connect's);
//! - [`openapi`]: the OpenAPI 3.1 document; [`cors`]: CORS.

pub mod bridge;
pub mod connect;
pub mod cors;
pub mod error;
pub mod frames;
pub mod gateway;
pub mod headers;
pub mod json;
pub mod json_writer;
pub mod openapi;
pub mod query;
pub mod routes;
pub mod source_info;
pub mod template;
pub mod transcode;

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use prost_reflect::DescriptorPool;
use tower::ServiceExt as _;
use tower_service::Service;

use opentelemetry::context::FutureExt as _;

use self::connect::Connect;
use crate::{layers::request_id::RequestId, otel::server::Origin};

/// Every descriptor the server serves: `tollgate.v1`, google.rpc error
/// details, health and reflection. Error details render from it.
pub fn descriptors() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // Without comments, which only the OpenAPI document reads (from
        // the full set): they are most of the set (see `source_info`).
        let mut pool = source_info::without_source_info(tollgate::FILE_DESCRIPTOR_SET)
            .ok()
            .and_then(|bare| DescriptorPool::decode(&bare[..]).ok())
            .unwrap_or_default();
        for fds in crate::policy::public_infrastructure() {
            // A set that shares files with ours fails to add as a whole; its
            // methods then serve Connect in protobuf only, which is all
            // health checkers and reflection clients use.
            let _ = pool.decode_file_descriptor_set(fds);
        }
        pool
    })
}

/// gRPC services served beside Tollgate's own, with their descriptors: the
/// HTTP protocols reach them like the built-in ones (tests serve a
/// streaming service this way).
#[derive(Clone)]
pub struct Extra {
    /// The encoded `FileDescriptorSet` of the services.
    pub file_descriptor_set: &'static [u8],
    /// Their gRPC routes, without a fallback (mount each service as tonic
    /// does: `Router::new().route_service("/pkg.Service/{*rest}", svc)`).
    pub router: axum::Router,
    /// The services' full names.
    pub services: Vec<String>,
}

/// The services whose methods the HTTP protocols reach.
pub fn served_services(pool: &DescriptorPool) -> Vec<String> {
    pool.services().map(|s| s.full_name().to_owned()).collect()
}

/// The protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Native gRPC.
    Grpc,
    /// gRPC-Web (binary or text).
    GrpcWeb,
    /// Connect (unary or streaming).
    Connect,
    /// Anything else: HTTP/JSON and documents.
    Http,
}

impl Protocol {
    /// Its name: the `protocol` label of the RED metrics and the
    /// `tollgate.protocol` span attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::Connect => "connect",
            Protocol::Http => "http",
        }
    }

    /// A dense index (0 to 3), for per-protocol tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Tells the protocols apart (see the module doc).
pub fn classify(headers: &HeaderMap, path: &str, connect: &Connect) -> Protocol {
    let ct = headers::find(headers, &header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if ct.starts_with(b"application/grpc-web") {
        Protocol::GrpcWeb
    } else if ct.starts_with(b"application/grpc") {
        Protocol::Grpc
    } else if connect.method(path).is_some() {
        Protocol::Connect
    } else {
        Protocol::Http
    }
}

/// What the main listener serves: [`Front`], behind CORS when origins are
/// configured.
pub type Served = tower::util::Either<WithCors, Front>;

/// [`Front`] behind CORS, its future boxed. An `Either`'s future is as
/// large as its larger side, and CORS's future holds a header map on top
/// of [`FrontFuture`]: unboxed, every call's future would carry it, CORS
/// configured or not, and it is copied at each step into hyper's task.
#[derive(Clone)]
pub struct WithCors(tower_http::cors::Cors<Front>);

impl WithCors {
    /// `front` behind `cors`.
    pub fn new(cors: &tower_http::cors::CorsLayer, front: Front) -> Self {
        Self(tower_layer::Layer::layer(cors, front))
    }
}

impl<B> Service<Request<B>> for WithCors
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<B>>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: Request<B>) -> BoxFuture {
        Box::pin(self.0.call(request))
    }
}

/// The main listener's service: every protocol on one port.
#[derive(Clone)]
pub struct Front {
    grpc: crate::GrpcService,
    grpc_web: tonic_web::GrpcWebService<crate::GrpcService>,
    connect: Connect,
    gateway: gateway::Gateway,
    openapi: openapi::Served,
    oauth: axum::Router,
}

impl Front {
    /// `grpc` is the layered gRPC services; `gateway` serves HTTP/JSON,
    /// `openapi` is the document served at [`openapi::PATH`], and `oauth`
    /// the OAuth 2.1 / OIDC endpoints (`/oauth2/…`, `/.well-known/…`).
    pub fn new(
        grpc: crate::GrpcService,
        connect: Connect,
        gateway: gateway::Gateway,
        openapi: openapi::Served,
        oauth: axum::Router,
    ) -> Self {
        use tower_layer::Layer as _;
        Front {
            grpc_web: tonic_web::GrpcWebLayer::new().layer(grpc.clone()),
            grpc,
            connect,
            gateway,
            openapi,
            oauth,
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// The future of a native gRPC call through the layers.
type GrpcFuture = <crate::GrpcService as Service<Request<Body>>>::Future;

/// The response future of [`Front`]: native gRPC and HTTP routes are not
/// boxed.
#[expect(
    clippy::large_enum_variant,
    reason = "the native gRPC call is the hot path; boxing it would allocate per call to save bytes on the rarer protocols"
)]
pub enum FrontFuture {
    /// A native gRPC call: the layers' future, not boxed.
    Grpc(GrpcFuture),
    /// gRPC-Web or Connect.
    Boxed(BoxFuture),
}

impl Future for FrontFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            FrontFuture::Grpc(future) => Pin::new(future)
                .poll(cx)
                .map(|r| r.map(|response| response.map(Body::new))),
            FrontFuture::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

impl<B> Service<Request<B>> for Front
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = FrontFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Routers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> FrontFuture {
        let protocol = classify(request.headers(), request.uri().path(), &self.connect);
        if protocol != Protocol::Grpc {
            // What the trace layer reports the call as (its span's HTTP
            // attributes, the `protocol` label).
            let origin = Origin {
                protocol,
                method: request.method().clone(),
                path: request.uri().path().to_owned(),
            };
            request.extensions_mut().insert(origin);
        }
        match protocol {
            Protocol::Grpc => FrontFuture::Grpc(self.grpc.call(request.map(Body::new))),
            Protocol::GrpcWeb => {
                let web = self.grpc_web.clone();
                let (request, request_id) = with_request_id(request);
                FrontFuture::Boxed(Box::pin(async move {
                    let response = web.oneshot(request.map(Body::new)).await?;
                    Ok(echo_request_id(response.map(Body::new), request_id))
                }))
            }
            Protocol::Connect => {
                let connect = self.connect.clone();
                let (request, request_id) = with_request_id(request);
                FrontFuture::Boxed(Box::pin(async move {
                    let request = request.map(Body::new);
                    let response = match connect.method(request.uri().path()).cloned() {
                        Some(method) => connect.serve(method, request).await,
                        None => error::HttpError::NotFound {
                            path: request.uri().path().to_owned(),
                        }
                        .into_gateway_response(),
                    };
                    Ok(echo_request_id(response, request_id))
                }))
            }
            // Straight to the gateway: an axum router in between costs a
            // route clone and a boxed future per call for two routes.
            Protocol::Http if request.uri().path() == openapi::PATH => {
                let openapi = self.openapi.clone();
                let method = request.method().clone();
                FrontFuture::Boxed(Box::pin(async move {
                    Ok(
                        if method == http::Method::GET || method == http::Method::HEAD {
                            let mut response = Response::new(Body::from(openapi.json()));
                            response.headers_mut().insert(
                                header::CONTENT_TYPE,
                                HeaderValue::from_static("application/json"),
                            );
                            response
                        } else {
                            error::HttpError::MethodNotAllowed {
                                method,
                                path: openapi::PATH.to_owned(),
                                allow: vec![http::Method::GET],
                            }
                            .into_gateway_response()
                        },
                    )
                }))
            }
            Protocol::Http if crate::oauth::endpoints::serves(request.uri().path()) => {
                let oauth = self.oauth.clone();
                let trace = crate::otel::server::start_http(
                    request.method(),
                    crate::oauth::endpoints::route(request.uri().path()),
                    request.uri().path(),
                    request.headers(),
                );
                let served = async move { oauth.oneshot(request.map(Body::new)).await };
                FrontFuture::Boxed(match trace {
                    None => Box::pin(served),
                    Some(cx) => Box::pin(async move {
                        let response = served.with_context(cx.clone()).await;
                        if let Ok(r) = &response {
                            crate::otel::server::finish_http(&cx, r.status().as_u16());
                        }
                        response
                    }),
                })
            }
            Protocol::Http => {
                let gateway = self.gateway.clone();
                FrontFuture::Boxed(Box::pin(async move {
                    Ok(gateway.serve(request.map(Body::new)).await)
                }))
            }
        }
    }
}

/// Settles the request's id before the call: the caller's when sane, else
/// a new one, written into the request so the trace layer records the
/// same id that [`echo_request_id`] returns.
fn with_request_id<B>(mut request: Request<B>) -> (Request<B>, Option<HeaderValue>) {
    let id = RequestId::from_headers(request.headers());
    let value = HeaderValue::from_str(&id.to_string()).ok();
    if let Some(v) = &value {
        request.headers_mut().insert(headers::REQUEST_ID, v.clone());
    }
    (request, value)
}

/// Puts the request's id on the response.
fn echo_request_id(mut response: Response<Body>, id: Option<HeaderValue>) -> Response<Body> {
    if let Some(v) = id {
        response.headers_mut().insert(headers::REQUEST_ID, v);
    }
    response
}
