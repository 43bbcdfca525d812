//! W3C Trace Context (`traceparent`, `tracestate`) in and out, with the
//! SDK's propagator over `http::HeaderMap` (which is also gRPC metadata).

use std::sync::OnceLock;

use http::HeaderMap;
use opentelemetry::{
    Context,
    propagation::TextMapPropagator,
    trace::{SpanContext, TraceContextExt, TraceFlags, TraceState},
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;

fn propagator() -> &'static TraceContextPropagator {
    static P: OnceLock<TraceContextPropagator> = OnceLock::new();
    P.get_or_init(TraceContextPropagator::new)
}

/// The remote parent a request names, if its `traceparent` is valid;
/// otherwise an empty context (a new trace starts).
pub fn extract(headers: &HeaderMap) -> Context {
    if !headers.contains_key(&crate::http::headers::TRACEPARENT) {
        return Context::new();
    }
    propagator().extract(&HeaderExtractor(headers))
}

/// Writes `cx`'s span as `traceparent` (and `tracestate`) into `headers`.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    propagator().inject_context(cx, &mut HeaderInjector(headers));
}

/// `cx`'s span as a `traceparent` value, if it has a valid one: what an
/// event keeps of the call that caused it.
pub fn traceparent(cx: &Context) -> Option<String> {
    format_traceparent(cx.span().span_context())
}

/// `sc` as a `traceparent` value, if it is valid.
pub fn format_traceparent(sc: &SpanContext) -> Option<String> {
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The span context a stored `traceparent` names (a link back from the
/// work an event causes later), if it parses.
pub fn span_context(traceparent: &str) -> Option<SpanContext> {
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", traceparent.parse().ok()?);
    let cx = propagator().extract(&HeaderExtractor(&headers));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| {
        SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags() & TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_the_remote_parent() {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", PARENT.parse().unwrap());
        headers.insert("tracestate", "vendor=x".parse().unwrap());
        let cx = extract(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.trace_state().header(), "vendor=x");
        assert_eq!(traceparent(&cx).as_deref(), Some(PARENT));
        let mut out = HeaderMap::new();
        inject(&cx, &mut out);
        assert_eq!(out["traceparent"], PARENT);
        assert_eq!(out["tracestate"], "vendor=x");
    }

    #[test]
    fn garbage_starts_a_new_trace() {
        for bad in [
            "",
            "00-0000-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert("traceparent", bad.parse().unwrap());
            assert!(!extract(&headers).span().span_context().is_valid(), "{bad}");
            assert!(span_context(bad).is_none(), "{bad}");
        }
        assert!(traceparent(&Context::new()).is_none());
        let sc = span_context(PARENT).expect("parses");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }
}
