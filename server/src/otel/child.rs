//! Spans of work done for a call (database queries, Redis decisions) and
//! of background work (jobs, the relay, webhook
//! deliveries).
//!
//! A child span exists only under a recorded parent: inside a call that is
//! not sampled, asking for one costs a thread-local read.

use std::borrow::Cow;

use opentelemetry::{
    Context, KeyValue,
    trace::{Link, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, Tracer},
};

use super::tracer;

/// A span that ends when dropped (or at [`Span::end`]).
#[must_use = "the span ends when dropped"]
pub struct Span {
    cx: Option<Context>,
}

impl Span {
    /// No span: traces are off or the parent is not recorded.
    pub const NONE: Span = Span { cx: None };

    /// A child of the current context's span, if that one is recorded.
    /// `attributes` is called only then.
    pub fn child(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        let Some(parent) = super::sampled_context() else {
            return Span::NONE;
        };
        Span::under(&parent, name, kind, Vec::new(), attributes)
    }

    /// A child of `parent`'s span, if that one is recorded; `links` name
    /// other spans that caused the work.
    pub fn under(
        parent: &Context,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        links: Vec<SpanContext>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        if !parent.span().span_context().is_sampled() {
            return Span::NONE;
        }
        Span::start(parent, name, kind, links, attributes)
    }

    /// A new trace's root span for background work, subject to the
    /// sampler; `links` name the calls that caused the work.
    pub fn root(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        links: Vec<SpanContext>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        if !super::sample_root() {
            return Span::NONE;
        }
        Span::start(&Context::new(), name, kind, links, attributes)
    }

    /// Builds the span under `parent` (empty for a root); no span when
    /// traces are off or the sampler left it out.
    fn start(
        parent: &Context,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        links: Vec<SpanContext>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        let Some(tracer) = tracer() else {
            return Span::NONE;
        };
        let span = tracer.build_with_context(
            SpanBuilder::from_name(name)
                .with_kind(kind)
                .with_links(links.into_iter().map(Link::with_context).collect())
                .with_attributes(attributes()),
            parent,
        );
        let cx = parent.with_span(span);
        if !cx.span().is_recording() {
            return Span::NONE;
        }
        Span { cx: Some(cx) }
    }

    /// A child of the current span if it is recorded, else a new trace's
    /// root (subject to the sampler); either way linked to `links`.
    pub fn child_or_root(
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        links: Vec<SpanContext>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Span {
        match super::sampled_context() {
            Some(parent) => Span::under(&parent, name, kind, links, attributes),
            None => Span::root(name, kind, links, attributes),
        }
    }

    /// The context to run the span's work in (to attach, or to pass on).
    pub fn context(&self) -> Option<&Context> {
        self.cx.as_ref()
    }

    /// Adds an attribute.
    pub fn set(&self, attribute: KeyValue) {
        if let Some(cx) = &self.cx {
            cx.span().set_attribute(attribute);
        }
    }

    /// Marks the work failed, with a description (never a secret).
    pub fn fail(&self, description: impl Into<Cow<'static, str>>) {
        if let Some(cx) = &self.cx {
            cx.span().set_status(Status::error(description));
        }
    }

    /// Ends the span now.
    pub fn end(mut self) {
        if let Some(cx) = self.cx.take() {
            cx.span().end();
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(cx) = self.cx.take() {
            cx.span().end();
        }
    }
}
