//! Server spans: one per call, on every protocol, named and described per
//! the OpenTelemetry semantic conventions for RPC (`rpc.*`) and HTTP
//! (`http.*`). The parent is the caller's `traceparent`, if any.
//!
//! Attributes are set only on spans being recorded: an unsampled call pays
//! for a span id and a context, nothing more.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

use http::HeaderMap;
use opentelemetry::{
    Context, KeyValue,
    trace::{SpanBuilder, SpanKind, Status, TraceContextExt, Tracer},
};

use super::{propagation, tracer};
use crate::http::Protocol;

/// How a call that is not native gRPC reached the gRPC layers: put in the
/// request's extensions by the front, read by the trace layer.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The protocol.
    pub protocol: Protocol,
    /// The HTTP method the client used.
    pub method: http::Method,
    /// The path the client asked for (no query: it may carry values).
    pub path: String,
}

/// `name` with a `'static` lifetime, leaked once per distinct name: span
/// names are the served methods (a fixed set), so a call never allocates
/// its span's name.
pub fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(name.to_owned(), leaked);
    leaked
}

/// Starts the server span of a gRPC method call (`name` is
/// `package.Service/Method`, interned; unknown methods pass `other`).
/// `None` when traces are off, or the call starts a trace that is not
/// sampled.
pub fn start_rpc(
    name: &'static str,
    headers: &HeaderMap,
    origin: Option<&Origin>,
) -> Option<Context> {
    let tracer = tracer()?;
    if !headers.contains_key(&crate::http::headers::TRACEPARENT) && !super::sample_root() {
        return None;
    }
    let parent = propagation::extract(headers);
    let span = tracer.build_with_context(
        SpanBuilder::from_name(Cow::Borrowed(name)).with_kind(SpanKind::Server),
        &parent,
    );
    let cx = parent.with_span(span);
    let span = cx.span();
    if span.is_recording() {
        // Slices of the interned name: no allocation. `other` (an
        // unknown method) has no service.
        let (service, method) = name.split_once('/').unwrap_or(("", name));
        let protocol = origin.map_or(Protocol::Grpc, |o| o.protocol);
        let mut attributes = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", service),
            KeyValue::new("rpc.method", method),
            KeyValue::new("tollgate.protocol", protocol.as_str()),
        ];
        if let Some(o) = origin {
            attributes.push(KeyValue::new("http.request.method", o.method.to_string()));
            attributes.push(KeyValue::new("url.path", o.path.clone()));
        }
        span.set_attributes(attributes);
    }
    Some(cx)
}

/// Ends a gRPC method call's server span with its status `code`:
/// `rpc.grpc.status_code`, the HTTP status for calls that came over HTTP,
/// and an error status for server faults only (a client's mistake is not
/// the server's error, per the conventions).
pub fn finish_rpc(
    cx: &Context,
    code: usize,
    server_fault: bool,
    principal: Option<&str>,
    request_id: impl FnOnce() -> String,
    http_status: Option<u16>,
) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(
            "rpc.grpc.status_code",
            i64::try_from(code).unwrap_or(2),
        ));
        if let Some(status) = http_status {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(p) = principal {
            span.set_attribute(KeyValue::new("enduser.id", p.to_owned()));
        }
        span.set_attribute(KeyValue::new("tollgate.request_id", request_id()));
        if server_fault {
            span.set_status(Status::error(crate::layers::trace::code_name(code)));
        }
    }
    span.end();
}

/// Starts the server span of a plain HTTP request (the OAuth 2 and OIDC
/// endpoints): named `METHOD route`, where `route` is a fixed route (or
/// `other`) and a method outside HTTP's own is `_OTHER`, so no client
/// chooses a span name.
pub fn start_http(
    method: &http::Method,
    route: &'static str,
    path: &str,
    headers: &HeaderMap,
) -> Option<Context> {
    let tracer = tracer()?;
    if !headers.contains_key(&crate::http::headers::TRACEPARENT) && !super::sample_root() {
        return None;
    }
    let known = [
        http::Method::GET,
        http::Method::POST,
        http::Method::PUT,
        http::Method::DELETE,
        http::Method::HEAD,
        http::Method::OPTIONS,
        http::Method::PATCH,
    ];
    let method = if known.contains(method) {
        method.as_str().to_owned()
    } else {
        "_OTHER".to_owned()
    };
    let parent = propagation::extract(headers);
    let span = tracer.build_with_context(
        SpanBuilder::from_name(format!("{method} {route}")).with_kind(SpanKind::Server),
        &parent,
    );
    let cx = parent.with_span(span);
    let span = cx.span();
    if span.is_recording() {
        span.set_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("http.route", route),
            KeyValue::new("tollgate.protocol", "http"),
        ]);
    }
    Some(cx)
}

/// Ends a plain HTTP request's server span: 5xx is the server's error.
pub fn finish_http(cx: &Context, status: u16) {
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(status.to_string()));
        }
    }
    span.end();
}
