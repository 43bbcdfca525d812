//! HTTP/JSON to gRPC and back, as grpc-gateway (v2) and Envoy's gRPC-JSON
//! transcoder do it, driven by the `google.api.http` annotations.
//!
//! [`Transcoder::new`] compiles every binding once (templates, field
//! bindings, body rule, query-parameter table); per request the front door
//! calls [`Transcoder::find`], then [`Transcoder::request`] to build the
//! protobuf request, makes the gRPC call, and answers with
//! [`Transcoder::response`] (unary) or [`Transcoder::stream_result`] per
//! message and [`Transcoder::stream_error`] at a failed end (server
//! streaming). Nothing here looks a descriptor up by name per request.
//!
//! A request message is built in grpc-gateway's order, each step
//! overriding the one before:
//! 1. the body: `body: "*"` is the whole request message, `body: "field"`
//!    that field (a message, scalar, repeated or map field), no body rule
//!    means none is accepted; an empty (or all-whitespace) body is an
//!    empty message / an unset field;
//! 2. the query string (see [`super::query`]): only the fields neither
//!    the path nor the body sets, none with `body: "*"`;
//! 3. the path variables: the path wins over a body value for the same
//!    field, as in grpc-gateway.
//!
//! JSON follows [`super::json`] (the exact rules the OpenAPI document
//! describes).

use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, FieldDescriptor, ServiceDescriptor};

use super::{
    json::{self, EncodeError, JsonError},
    query::{QueryError, Scalar},
    routes::{BodyRule, Lookup, Route, RouteError, Routes},
    template::Captures,
};

/// Why a request cannot be transcoded, or a response cannot be written.
///
/// Every variant but [`TranscodeError::Response`] is the client's doing
/// (INVALID_ARGUMENT, with a BadRequest field violation naming
/// [`TranscodeError::field`]); `Response` is ours (INTERNAL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The body is not JSON, or not JSON of the request.
    #[error("request body: {0}")]
    Body(#[from] JsonError),
    /// A query parameter is unknown, refused or does not parse.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// A path variable's value does not parse as its field.
    #[error("path variable {field}: {description}")]
    Path {
        /// The field path as the template names it (`organization.name`).
        field: String,
        /// What is wrong.
        description: String,
    },
    /// The response message does not decode, or cannot be written as
    /// JSON: a server fault.
    #[error("response: {0}")]
    Response(String),
}

impl TranscodeError {
    /// The name to put in the BadRequest field violation: the JSON path of
    /// a body error (`organization.displayName`, `user.roles[1]`; `None`
    /// for a body that is not JSON), the parameter name of a query error
    /// as the client sent it, the field path of a path variable. `None`
    /// for a response error.
    pub fn field(&self) -> Option<&str> {
        match self {
            TranscodeError::Body(e) => e.field.as_deref(),
            TranscodeError::Query(e) => Some(&e.parameter),
            TranscodeError::Path { field, .. } => Some(field),
            TranscodeError::Response(_) => None,
        }
    }

    /// What is wrong, for the field violation's description (the
    /// `Display` form adds where).
    pub fn description(&self) -> &str {
        match self {
            TranscodeError::Body(e) => &e.description,
            TranscodeError::Query(e) => &e.description,
            TranscodeError::Path { description, .. } => description,
            TranscodeError::Response(reason) => reason,
        }
    }

    /// Whether it is a server fault (INTERNAL), not the client's.
    pub fn is_internal(&self) -> bool {
        matches!(self, TranscodeError::Response(_))
    }
}

impl From<EncodeError> for TranscodeError {
    fn from(e: EncodeError) -> Self {
        TranscodeError::Response(e.to_string())
    }
}

/// Every HTTP binding, compiled, and the conversions per route.
#[derive(Debug)]
pub struct Transcoder {
    routes: Routes,
}

impl Transcoder {
    /// Compiles the bindings of every method of `services` from `pool`.
    /// Fails naming the method on a bad or colliding binding.
    pub fn new<'a>(
        pool: &DescriptorPool,
        services: impl IntoIterator<Item = &'a ServiceDescriptor>,
    ) -> Result<Self, RouteError> {
        Ok(Transcoder {
            routes: Routes::compile(pool, services)?,
        })
    }

    /// Finds the route for `verb` and `path` (no query string; HEAD is
    /// served as GET).
    pub fn find(&self, verb: &Method, path: &str) -> Lookup<'_> {
        self.routes.find(verb, path)
    }

    /// Every compiled route (for documentation and tests).
    /// The compiled route table (what the OpenAPI document describes).
    pub fn table(&self) -> &Routes {
        &self.routes
    }

    /// Every compiled route.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// Builds the protobuf-encoded request message of `route` from the
    /// path's `captures`, the raw `query` string (without `?`) and the
    /// `body` (JSON), in the order and with the rules of the module doc.
    pub fn request(
        &self,
        route: &Route,
        captures: &Captures,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Bytes, TranscodeError> {
        let empty = body.iter().all(u8::is_ascii_whitespace);
        let mut msg = match &route.body {
            BodyRule::Whole if !empty => json::decode(&route.input, body)?,
            BodyRule::Field(field) if !empty => json::decode_field(&route.input, field, body)?,
            BodyRule::None if !empty => {
                return Err(JsonError {
                    field: None,
                    description: format!(
                        "{} {} takes no request body: send the fields as query parameters",
                        route.verb, route.template
                    ),
                }
                .into());
            }
            _ => DynamicMessage::new(route.input.clone()),
        };
        if let Some(query) = query {
            route.query.apply(&mut msg, query)?;
        }
        for (binding, value) in route.bindings.iter().zip(captures) {
            set_path_variable(&mut msg, binding, value)?;
        }
        Ok(Bytes::from(msg.encode_to_vec()))
    }

    /// The JSON body of a unary response: `message` (the protobuf-encoded
    /// response) decoded, narrowed to `response_body` if the binding has
    /// one, written per [`super::json`].
    pub fn response(&self, route: &Route, message: &[u8]) -> Result<Vec<u8>, TranscodeError> {
        let mut out = Vec::with_capacity(message.len() * 2 + 16);
        self.write_response(route, message, &mut out)?;
        Ok(out)
    }

    /// One line of a server-streaming response over HTTP/1.1 chunked
    /// NDJSON (`application/x-ndjson`), as grpc-gateway writes it:
    /// `{"result":<message JSON>}` and a newline, `response_body` applied.
    /// Over a WebSocket, send the same text without the newline as one
    /// text frame per message.
    ///
    /// When the stream ends with an error, the caller writes a last line
    /// `{"error":<google.rpc.Status JSON>}` and a newline
    /// ([`Transcoder::stream_error`]), e.g.
    /// `{"error":{"code":5,"details":[],"message":"not found"}}`; a stream
    /// that ends with OK just ends.
    pub fn stream_result(&self, route: &Route, message: &[u8]) -> Result<Vec<u8>, TranscodeError> {
        let mut out = Vec::with_capacity(message.len() * 2 + 16);
        out.extend_from_slice(b"{\"result\":");
        self.write_response(route, message, &mut out)?;
        out.extend_from_slice(b"}\n");
        Ok(out)
    }

    /// The last line of a server stream that failed, as grpc-gateway
    /// writes it: `{"error":<google.rpc.Status JSON>}` and a newline, the
    /// status rendered as every HTTP/JSON error body is
    /// ([`super::error::status_json`]: code, message, details as `Any`).
    /// Over a WebSocket, send it without the newline as the last text
    /// frame.
    pub fn stream_error(&self, status: &tonic::Status) -> Vec<u8> {
        const START: &[u8] = b"{\"error\":";
        let mut out = START.to_vec();
        // Writing a `serde_json::Value` into a Vec cannot fail (its map
        // keys are strings); `null` keeps the line valid JSON regardless.
        if serde_json::to_writer(&mut out, &super::error::status_json(status)).is_err() {
            out.truncate(START.len());
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b"}\n");
        out
    }

    fn write_response(
        &self,
        route: &Route,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TranscodeError> {
        let msg = DynamicMessage::decode(route.output.clone(), message).map_err(|e| {
            TranscodeError::Response(format!("undecodable {}: {e}", route.output.full_name()))
        })?;
        match &route.response_body {
            Some(field) => json::encode_field(&msg, field, out)?,
            None => json::encode_into(&msg, out)?,
        }
        Ok(())
    }
}

/// Sets the field a path variable binds: strings as captured, other
/// scalars parsed (an enum by name or number, a number in decimal).
fn set_path_variable(
    msg: &mut DynamicMessage,
    binding: &[FieldDescriptor],
    value: &str,
) -> Result<(), TranscodeError> {
    let fail = |description: String| TranscodeError::Path {
        field: binding
            .iter()
            .map(FieldDescriptor::name)
            .collect::<Vec<_>>()
            .join("."),
        description,
    };
    let Some((leaf, parents)) = binding.split_last() else {
        return Err(fail("empty field path".to_owned()));
    };
    let scalar = Scalar::of(&leaf.kind())
        .ok_or_else(|| fail("a path variable must bind a scalar field".to_owned()))?;
    let parsed = scalar.parse(value).map_err(&fail)?;
    // The path wins: a value the body set is replaced, a oneof sibling the
    // body set is cleared (unlike the query string, which refuses that).
    let mut current = msg;
    for field in parents {
        current = match current.get_field_mut(field) {
            prost_reflect::Value::Message(m) => m,
            _ => return Err(fail("not a message field path".to_owned())),
        };
    }
    current
        .try_set_field(leaf, parsed)
        .map_err(|e| fail(e.to_string()))?;
    Ok(())
}
