//! The Connect protocol (connectrpc.com/docs/protocol): unary calls as
//! POST with `application/proto` or `application/json`, unary calls
//! without side effects also as GET, and streaming calls with
//! `application/connect+proto` / `+json` envelopes ending in an
//! end-of-stream message. Every call is made through [`Grpc`], so it
//! passes the same layers as native gRPC.
//!
//! Written by hand: the Connect crates for Rust bring their own code
//! generator and server, and we only need the wire format in front of the
//! tonic services we already have.

use std::{collections::HashMap, sync::Arc};

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header, uri::PathAndQuery,
};
use prost_reflect::{DescriptorPool, MessageDescriptor, Value};
use tonic::{Code, Status};

use super::{
    bridge::{Call, Grpc},
    error::{self, HttpError, connect_error, connect_error_json},
    frames::{self, Frame, Frames},
    headers::{connect_metadata, connect_response_headers, media_type},
};

/// What Connect needs to know of one method, read at start-up.
#[derive(Debug)]
pub struct MethodInfo {
    /// `/package.Service/Method`.
    pub grpc_path: PathAndQuery,
    /// The request message.
    pub input: MessageDescriptor,
    /// The response message.
    pub output: MessageDescriptor,
    /// `idempotency_level = NO_SIDE_EFFECTS`: GET is allowed.
    pub no_side_effects: bool,
    /// Whether either side streams.
    pub streaming: bool,
}

/// The Connect endpoint of every served method.
#[derive(Clone)]
pub struct Connect {
    methods: Arc<HashMap<String, Arc<MethodInfo>>>,
    grpc: Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Proto,
    Json,
}

impl Codec {
    fn unary_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/proto",
            Codec::Json => "application/json",
        }
    }

    fn stream_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/connect+proto",
            Codec::Json => "application/connect+json",
        }
    }
}

/// `idempotency_level = NO_SIDE_EFFECTS` in `google.protobuf.MethodOptions`.
const NO_SIDE_EFFECTS: i32 = 1;

impl Connect {
    /// Reads every method of `services` in `pool`.
    pub fn new<'a>(
        pool: &DescriptorPool,
        services: impl IntoIterator<Item = &'a str>,
        grpc: Grpc,
    ) -> Self {
        let mut methods = HashMap::new();
        for name in services {
            let Some(service) = pool.get_service_by_name(name) else {
                continue;
            };
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                let no_side_effects = matches!(
                    method
                        .options()
                        .get_field_by_name("idempotency_level")
                        .as_deref(),
                    Some(Value::EnumNumber(NO_SIDE_EFFECTS))
                );
                let Ok(grpc_path) = PathAndQuery::try_from(path.as_str()) else {
                    continue;
                };
                methods.insert(
                    path,
                    Arc::new(MethodInfo {
                        grpc_path,
                        input: method.input(),
                        output: method.output(),
                        no_side_effects,
                        streaming: method.is_client_streaming() || method.is_server_streaming(),
                    }),
                );
            }
        }
        Connect {
            methods: Arc::new(methods),
            grpc,
        }
    }

    /// The method served at `path`, if any.
    pub fn method(&self, path: &str) -> Option<&Arc<MethodInfo>> {
        self.methods.get(path)
    }

    /// Serves one Connect request for `method`.
    pub async fn serve(&self, method: Arc<MethodInfo>, request: Request<Body>) -> Response<Body> {
        let media = media_type(request.headers()).unwrap_or_default();
        let result = match (request.method(), media.as_str()) {
            (&Method::GET, _) => self.get(&method, request).await,
            (&Method::POST, "application/proto") => {
                self.unary(&method, Codec::Proto, request).await
            }
            (&Method::POST, "application/json") => self.unary(&method, Codec::Json, request).await,
            (&Method::POST, "application/connect+proto") => {
                return self.streaming(&method, Codec::Proto, request).await;
            }
            (&Method::POST, "application/connect+json") => {
                return self.streaming(&method, Codec::Json, request).await;
            }
            (&Method::POST, _) => {
                drain(request.into_body()).await;
                Err(HttpError::UnsupportedMediaType {
                    got: media,
                    expected: "application/proto, application/json, application/connect+proto or application/connect+json",
                })
            }
            (m, _) => {
                let e = HttpError::MethodNotAllowed {
                    method: m.clone(),
                    path: request.uri().path().to_owned(),
                    allow: if method.no_side_effects && !method.streaming {
                        vec![Method::GET, Method::POST]
                    } else {
                        vec![Method::POST]
                    },
                };
                drain(request.into_body()).await;
                Err(e)
            }
        };
        result.unwrap_or_else(refusal)
    }

    async fn unary(
        &self,
        method: &MethodInfo,
        codec: Codec,
        request: Request<Body>,
    ) -> Result<Response<Body>, HttpError> {
        if method.streaming {
            drain(request.into_body()).await;
            return Err(HttpError::UnsupportedMediaType {
                got: codec.unary_type().into(),
                expected: "application/connect+proto or application/connect+json for a streaming method",
            });
        }
        let (parts, body) = request.into_parts();
        if let Some(enc) = parts.headers.get(header::CONTENT_ENCODING)
            && enc != "identity"
        {
            let e = HttpError::Unsupported(format!(
                "content-encoding {enc:?} is not supported; send identity"
            ));
            drain(body).await;
            return Err(e);
        }
        let metadata = match connect_metadata(&parts.headers) {
            Ok(m) => m,
            Err(e) => {
                drain(body).await;
                return Err(e);
            }
        };
        if self
            .grpc
            .refuses_anonymous(method.grpc_path.path(), &parts.headers)
        {
            // Refused in the layers, as over gRPC; the body is only drained.
            drain(body).await;
            return Ok(self
                .call_unary(
                    method,
                    Codec::Proto,
                    metadata,
                    parts.extensions,
                    Bytes::new(),
                )
                .await);
        }
        let (body, _hold) = self.grpc.read_body(body).await?;
        Ok(self
            .call_unary(method, codec, metadata, parts.extensions, body)
            .await)
    }

    async fn get(
        &self,
        method: &MethodInfo,
        request: Request<Body>,
    ) -> Result<Response<Body>, HttpError> {
        if !method.no_side_effects || method.streaming {
            return Err(HttpError::MethodNotAllowed {
                method: Method::GET,
                path: request.uri().path().to_owned(),
                allow: vec![Method::POST],
            });
        }
        let (parts, _) = request.into_parts();
        let mut encoding = None;
        let mut message = None;
        let mut base64 = false;
        for (k, v) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
            match &*k {
                "encoding" => encoding = Some(v.into_owned()),
                "message" => message = Some(v.into_owned()),
                "base64" => base64 = v == "1",
                "connect" if v != "v1" => {
                    return Err(field(
                        "connect",
                        "the only supported protocol version is v1",
                    ));
                }
                "compression" if v != "identity" => {
                    return Err(HttpError::Unsupported(format!(
                        "compression {v:?} is not supported; send identity"
                    )));
                }
                _ => {}
            }
        }
        let codec = match encoding.as_deref() {
            Some("json") => Codec::Json,
            Some("proto") => Codec::Proto,
            Some(other) => {
                return Err(field(
                    "encoding",
                    &format!("{other:?} is not json or proto"),
                ));
            }
            None => return Err(field("encoding", "required: json or proto")),
        };
        let message = message.unwrap_or_default();
        let bytes = if base64 {
            let trimmed = message.trim_end_matches('=');
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(trimmed)
                .map_err(|e| field("message", &format!("not URL-safe base64: {e}")))?
        } else {
            message.into_bytes()
        };
        if bytes.len() > self.grpc.max_message() {
            return Err(HttpError::TooLarge {
                limit: self.grpc.max_message(),
            });
        }
        let metadata = connect_metadata(&parts.headers)?;
        Ok(self
            .call_unary(
                method,
                codec,
                metadata,
                parts.extensions,
                Bytes::from(bytes),
            )
            .await)
    }

    async fn call_unary(
        &self,
        method: &MethodInfo,
        codec: Codec,
        metadata: HeaderMap,
        extensions: http::Extensions,
        body: Bytes,
    ) -> Response<Body> {
        let message = match codec {
            Codec::Proto => body,
            Codec::Json => match json::to_proto(&method.input, &body) {
                Ok(m) => m,
                Err(e) => return refusal(e),
            },
        };
        let call = Call::unary(method.grpc_path.clone(), metadata, extensions, &message);
        match self.grpc.unary(call).await {
            Ok(unary) => {
                let body = match codec {
                    Codec::Proto => unary.message,
                    Codec::Json => match json::from_proto(&method.output, &unary.message) {
                        Ok(b) => b,
                        Err(e) => return refusal(e),
                    },
                };
                let mut response = Response::new(Body::from(body));
                *response.headers_mut() =
                    connect_response_headers(&unary.headers, Some(&unary.trailers));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(codec.unary_type()),
                );
                response
            }
            Err(failure) => {
                let mut response = connect_error(&failure.status, None);
                let extra = connect_response_headers(&failure.headers, None);
                response.headers_mut().extend(extra);
                response
            }
        }
    }

    async fn streaming(
        &self,
        method: &MethodInfo,
        codec: Codec,
        request: Request<Body>,
    ) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let metadata = match connect_metadata(&parts.headers) {
            Ok(m) => m,
            Err(e) => return end_stream_only(codec, &Status::from(e), &HeaderMap::new()),
        };
        if let Some(enc) = parts.headers.get("connect-content-encoding")
            && enc != "identity"
        {
            let e = HttpError::Unsupported(format!(
                "connect-content-encoding {enc:?} is not supported"
            ));
            return end_stream_only(codec, &Status::from(e), &HeaderMap::new());
        }
        let limit = self.grpc.max_message();
        // Connect envelopes are gRPC frames with one more flag (end of
        // stream, never sent by clients): protobuf passes through as is.
        let body = match codec {
            Codec::Proto => body,
            Codec::Json => {
                let input = method.input.clone();
                Body::from_stream(Frames::new(body, limit).filter_map(move |frame| {
                    let out = match frame {
                        Ok(Frame::Message { data, .. }) => Some(
                            json::to_proto(&input, &data)
                                .map(|m| frames::encode(0, &m))
                                .map_err(|e| std::io::Error::other(e.to_string())),
                        ),
                        Ok(Frame::Trailers(_)) => None,
                        Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
                    };
                    std::future::ready(out)
                }))
            }
        };
        let call = Call {
            path: method.grpc_path.clone(),
            metadata,
            extensions: parts.extensions,
            body,
        };
        let streaming = match self.grpc.start(call).await {
            Ok(s) => s,
            Err(failure) => return end_stream_only(codec, &failure.status, &failure.headers),
        };
        let output = method.output.clone();
        let messages = streaming
            .frames
            .map(move |frame| -> Result<Bytes, std::io::Error> {
                Ok(match frame {
                    Ok(Frame::Message { data, .. }) => match codec {
                        Codec::Proto => frames::encode(0, &data),
                        Codec::Json => match json::from_proto(&output, &data) {
                            Ok(json) => frames::encode(0, &json),
                            Err(e) => end_stream(&Status::from(e), &HeaderMap::new()),
                        },
                    },
                    Ok(Frame::Trailers(trailers)) => {
                        let status = Status::from_header_map(&trailers);
                        match status {
                            Some(s) if s.code() != Code::Ok => end_stream(&s, &trailers),
                            _ => end_stream_ok(&trailers),
                        }
                    }
                    Err(e) => end_stream(
                        &Status::from(HttpError::Render(e.to_string())),
                        &HeaderMap::new(),
                    ),
                })
            });
        let mut response = Response::new(Body::from_stream(messages));
        *response.headers_mut() = connect_response_headers(&streaming.headers, None);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(codec.stream_type()),
        );
        response
    }
}

fn field(name: &str, description: &str) -> HttpError {
    HttpError::Field {
        field: name.to_owned(),
        description: description.to_owned(),
    }
}

/// A refused unary request as a Connect error.
fn refusal(e: HttpError) -> Response<Body> {
    let http = e.http_status();
    let headers = e.headers();
    let mut response = connect_error(&Status::from(e), http);
    response.headers_mut().extend(headers);
    response
}

fn metadata_json(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n.starts_with("grpc-") || n == "content-type" {
            continue;
        }
        let Ok(v) = value.to_str() else { continue };
        if let serde_json::Value::Array(list) = map
            .entry(n.to_owned())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        {
            list.push(v.into());
        }
    }
    serde_json::Value::Object(map)
}

fn end_stream(status: &Status, trailers: &HeaderMap) -> Bytes {
    let json = serde_json::json!({"error": connect_error_json(status), "metadata": metadata_json(trailers)});
    frames::encode(frames::END_STREAM, &error::to_bytes(&json))
}

fn end_stream_ok(trailers: &HeaderMap) -> Bytes {
    let json = serde_json::json!({"metadata": metadata_json(trailers)});
    frames::encode(frames::END_STREAM, &error::to_bytes(&json))
}

/// A streaming response that fails before any message: HTTP 200 with only
/// the end-of-stream message, as the protocol requires.
fn end_stream_only(codec: Codec, status: &Status, headers: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(Body::from(end_stream(status, headers)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.stream_type()),
    );
    response
}

/// Reads and drops up to 2 × [`super::bridge::ANONYMOUS_BODY_BYTES`] of a
/// body refused unread, keeping none of it, so an HTTP/2 client still
/// sending it sees the answer rather than a reset stream.
pub async fn drain(body: Body) {
    super::bridge::discard(body, 2 * super::bridge::ANONYMOUS_BODY_BYTES).await;
}

/// JSON ⇄ protobuf for Connect's JSON codec, through the transcoder's
/// canonical mapping (same strictness, same field names in errors).
mod json {
    use bytes::Bytes;
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, MessageDescriptor};

    use super::HttpError;

    pub fn to_proto(desc: &MessageDescriptor, body: &[u8]) -> Result<Bytes, HttpError> {
        // Connect sends an empty body for an empty message.
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}".as_slice()
        } else {
            body
        };
        let message = crate::http::json::decode(desc, body).map_err(|e| HttpError::Field {
            field: e.field.unwrap_or_default(),
            description: e.description,
        })?;
        Ok(Bytes::from(message.encode_to_vec()))
    }

    pub fn from_proto(desc: &MessageDescriptor, bytes: &[u8]) -> Result<Bytes, HttpError> {
        let message = DynamicMessage::decode(desc.clone(), bytes)
            .map_err(|e| HttpError::Render(e.to_string()))?;
        crate::http::json::encode(&message)
            .map(Bytes::from)
            .map_err(|e| HttpError::Render(e.to_string()))
    }
}
