//! Failures of the HTTP protocols themselves (no route, wrong method, body
//! too large, wrong content type, undecodable JSON), and how any gRPC
//! status is rendered to an HTTP client: grpc-gateway's JSON for HTTP/JSON
//! (`{"code": 5, "message": …, "details": [{"@type": …}]}`) and the
//! Connect protocol's (`{"code": "not_found", …}`). The gRPC code is chosen
//! in `api/error.rs` like every other; the HTTP status comes from the same
//! table there, overridden only where HTTP has a more precise answer
//! (404 for an unknown path, 405, 413, 415).

use axum::body::Body;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use prost::Message as _;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde::Serialize as _;
use tonic::{Code, Status};

use crate::api::error::http_status;

/// A request the HTTP layer refuses before any gRPC method runs.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No binding matches the path.
    #[error("no HTTP route matches {path}")]
    NotFound {
        /// The request path.
        path: String,
    },
    /// Bindings match the path, for other HTTP methods.
    #[error("{method} is not allowed on {path}; allowed: {}", allow_list(.allow))]
    MethodNotAllowed {
        /// The method used.
        method: Method,
        /// The request path.
        path: String,
        /// The methods that are served there.
        allow: Vec<Method>,
    },
    /// The body is over the configured limit.
    #[error("the request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A content type this endpoint does not read.
    #[error("unsupported content type {got:?}; send {expected}")]
    UnsupportedMediaType {
        /// What the client sent.
        got: String,
        /// What the endpoint reads.
        expected: &'static str,
    },
    /// A field (of the body, the query string or the path) is malformed;
    /// becomes a BadRequest field violation naming it.
    #[error("invalid argument: {field}: {description}")]
    Field {
        /// The field or parameter, as the client wrote it; empty for the
        /// body as a whole (malformed JSON).
        field: String,
        /// What is wrong with it.
        description: String,
    },
    /// A protocol header (a timeout, a Connect version) is malformed.
    #[error("invalid header {header}: {description}")]
    Header {
        /// The header's name.
        header: &'static str,
        /// What is wrong with it.
        description: String,
    },
    /// The protocol feature is not offered (a compression, a GET for a
    /// method with side effects).
    #[error("{0}")]
    Unsupported(String),
    /// The body could not be read (the client went away or broke the
    /// framing).
    #[error("reading the request body: {0}")]
    Body(String),
    /// Too many request bodies are being buffered at once; retry later.
    #[error("the server is buffering too many request bodies; retry later")]
    Busy,
    /// The server could not render what the method returned.
    #[error("rendering the response: {0}")]
    Render(String),
}

fn allow_list(allow: &[Method]) -> String {
    allow
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl HttpError {
    /// The HTTP status, where HTTP says more than the gRPC code's.
    pub fn http_status(&self) -> Option<StatusCode> {
        match self {
            HttpError::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            HttpError::MethodNotAllowed { .. } => Some(StatusCode::METHOD_NOT_ALLOWED),
            HttpError::TooLarge { .. } => Some(StatusCode::PAYLOAD_TOO_LARGE),
            HttpError::UnsupportedMediaType { .. } => Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            _ => None,
        }
    }

    /// Headers the response must carry (`Allow` on a 405).
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let HttpError::MethodNotAllowed { allow, .. } = self
            && let Ok(value) = HeaderValue::from_str(&allow_list(allow))
        {
            headers.insert(header::ALLOW, value);
        }
        headers
    }

    /// The grpc-gateway JSON response for this refusal.
    pub fn into_gateway_response(self) -> Response<Body> {
        let http = self.http_status();
        let headers = self.headers();
        let status = Status::from(self);
        let mut response = gateway_error(&status, http);
        response.headers_mut().extend(headers);
        response
    }
}

/// The `google.rpc.Status` of `status` as canonical JSON, details
/// included (each an `Any` with `@type`); details of types the descriptor
/// pool does not know are left out rather than failing the response.
pub fn status_json(status: &Status) -> serde_json::Value {
    let mut rpc = rpc_status(status);
    let pool = super::descriptors();
    let Some(desc) = pool.get_message_by_name("google.rpc.Status") else {
        return fallback_json(status);
    };
    let options = SerializeOptions::new().skip_default_fields(false);
    let render = |rpc: &tollgate::google::rpc::Status| {
        let message = DynamicMessage::decode(desc.clone(), rpc.encode_to_vec().as_slice()).ok()?;
        message
            .serialize_with_options(serde_json::value::Serializer, &options)
            .ok()
    };
    if let Some(json) = render(&rpc) {
        return json;
    }
    rpc.details
        .retain(|any| pool.get_message_by_name(type_name(&any.type_url)).is_some());
    render(&rpc).unwrap_or_else(|| fallback_json(status))
}

fn fallback_json(status: &Status) -> serde_json::Value {
    serde_json::json!({"code": status.code() as i32, "message": status.message(), "details": []})
}

/// `status` as a `google.rpc.Status`: its details when it carries any
/// (tonic keeps the encoded message), otherwise the code and message.
pub fn rpc_status(status: &Status) -> tollgate::google::rpc::Status {
    let mut rpc = tollgate::google::rpc::Status::decode(status.details()).unwrap_or_default();
    rpc.code = status.code() as i32;
    rpc.message = status.message().to_owned();
    rpc
}

fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// A grpc-gateway error response: the status's JSON, HTTP status from the
/// gRPC→HTTP table unless `http` overrides it.
pub fn gateway_error(status: &Status, http: Option<StatusCode>) -> Response<Body> {
    let code = http.unwrap_or_else(|| http_status(status.code()));
    json_response(code, &status_json(status))
}

/// A JSON response.
pub fn json_response(code: StatusCode, json: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(json).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The Connect protocol's name of a gRPC code.
pub fn connect_code(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The Connect error object of `status`: `code` by name, `message`, and
/// each detail as `{"type", "value" (base64 without padding), "debug"}`.
pub fn connect_error_json(status: &Status) -> serde_json::Value {
    let rpc = rpc_status(status);
    let pool = super::descriptors();
    let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
    let details: Vec<serde_json::Value> = rpc
        .details
        .iter()
        .map(|any| {
            let name = type_name(&any.type_url);
            let debug = pool.get_message_by_name(name).and_then(|desc| {
                DynamicMessage::decode(desc, any.value.as_slice())
                    .ok()?
                    .serialize(serde_json::value::Serializer)
                    .ok()
            });
            let mut detail = serde_json::json!({"type": name, "value": engine.encode(&any.value)});
            if let (Some(debug), Some(obj)) = (debug, detail.as_object_mut()) {
                obj.insert("debug".into(), debug);
            }
            detail
        })
        .collect();
    let mut json = serde_json::json!({"code": connect_code(status.code())});
    if let Some(obj) = json.as_object_mut() {
        if !status.message().is_empty() {
            obj.insert("message".into(), status.message().into());
        }
        if !details.is_empty() {
            obj.insert("details".into(), details.into());
        }
    }
    json
}

/// A Connect unary error response.
pub fn connect_error(status: &Status, http: Option<StatusCode>) -> Response<Body> {
    let code = http.unwrap_or_else(|| http_status(status.code()));
    json_response(code, &connect_error_json(status))
}

/// The bytes of a JSON value (for NDJSON lines and Connect end-of-stream
/// messages).
pub fn to_bytes(json: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(json).unwrap_or_default())
}
