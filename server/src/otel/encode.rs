//! The OTLP `ExportTraceServiceRequest` of a batch of spans, written as
//! protobuf straight from the SDK's [`SpanData`].
//!
//! `opentelemetry-otlp` converts every span into `opentelemetry-proto`
//! messages first (a `String` per attribute key and string value, a clone
//! of every value), and prost then recomputes the `encoded_len` of every
//! nested message at each level above it: measured with callgrind, about
//! 33,600 instructions per exported span, more than half of a whole cached
//! call. Here the borrowed spans are walked twice instead: once to size
//! every nested message, once to write it. Nothing is allocated per span or
//! per attribute: a batch takes three vectors (its scopes, each span's
//! scope, the lengths of its nested messages).
//!
//! The bytes are those prost writes for the message that
//! `opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope`
//! builds (fields in tag order, proto3 defaults left out), which the tests
//! check.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::{
    Array, InstrumentationScope, KeyValue, Value,
    trace::{SpanId, SpanKind, Status, TraceFlags, TraceState},
};
use opentelemetry_sdk::{
    Resource,
    trace::{SpanData, SpanEvents, SpanLinks},
};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// Appends the encoded `ExportTraceServiceRequest` for `spans` (all of one
/// resource) to `out`.
///
/// Spans are grouped by instrumentation scope in order of first appearance,
/// as `opentelemetry-proto` groups them. An empty batch still carries the
/// resource (one `ResourceSpans` without scopes), as there too.
pub fn export_request(resource: &Resource, spans: &[SpanData], out: &mut Vec<u8>) {
    let groups = Groups::of(spans);
    // A few nested messages per span (the span, its status, an attribute
    // and its value each); the vector grows if a batch needs more.
    let mut sizer = Sizer {
        size: 0,
        lens: Vec::with_capacity(16 + spans.len() * 16),
    };
    request(&mut sizer, resource, spans, &groups);
    out.reserve(sizer.size);
    let mut writer = Writer {
        out,
        lens: sizer.lens.iter(),
    };
    request(&mut writer, resource, spans, &groups);
}

/// The instrumentation scopes of a batch, and which one each span is of.
struct Groups<'a> {
    scopes: Vec<&'a InstrumentationScope>,
    of_span: Vec<usize>,
}

impl<'a> Groups<'a> {
    fn of(spans: &'a [SpanData]) -> Self {
        let mut scopes: Vec<&InstrumentationScope> = Vec::new();
        let mut of_span = Vec::with_capacity(spans.len());
        for span in spans {
            let scope = &span.instrumentation_scope;
            // A batch holds the scopes of a handful of tracers: a linear
            // search beats hashing, which for a scope means sorting its
            // attributes into a new vector.
            let group = match scopes.iter().position(|s| same_scope(s, scope)) {
                Some(group) => group,
                None => {
                    scopes.push(scope);
                    scopes.len() - 1
                }
            };
            of_span.push(group);
        }
        Self { scopes, of_span }
    }

    fn spans<'s>(
        &'s self,
        group: usize,
        spans: &'s [SpanData],
    ) -> impl Iterator<Item = &'s SpanData> {
        spans
            .iter()
            .zip(&self.of_span)
            .filter(move |&(_, &g)| g == group)
            .map(|(span, _)| span)
    }
}

/// `InstrumentationScope`'s own equality (attributes in any order), which
/// allocates to sort both attribute lists; spans of one tracer carry them in
/// the same order, so that is tried first.
fn same_scope(a: &InstrumentationScope, b: &InstrumentationScope) -> bool {
    if a.name() != b.name() || a.version() != b.version() || a.schema_url() != b.schema_url() {
        return false;
    }
    a.attributes().eq(b.attributes()) || a == b
}

/// Where fields go: a [`Sizer`] that only counts, then a [`Writer`]. Both
/// run the same functions below, so sizes and bytes cannot disagree.
trait Sink {
    fn varint(&mut self, tag: u32, value: u64);
    fn fixed64(&mut self, tag: u32, value: u64);
    fn fixed32(&mut self, tag: u32, value: u32);
    /// A length-delimited field of `len` bytes that `write` appends.
    fn delimited(&mut self, tag: u32, len: usize, write: impl FnOnce(&mut Vec<u8>));
    /// A nested message, whose fields `body` writes.
    fn message(&mut self, tag: u32, body: impl FnOnce(&mut Self));
}

/// The size pass: every nested message's length, in the order the messages
/// start (a message before the ones inside it), which is the order the
/// writer needs them in.
struct Sizer {
    /// Bytes so far in the message being sized.
    size: usize,
    lens: Vec<usize>,
}

impl Sink for Sizer {
    fn varint(&mut self, tag: u32, value: u64) {
        self.size += key_len(tag) + encoded_len_varint(value);
    }

    fn fixed64(&mut self, tag: u32, _: u64) {
        self.size += key_len(tag) + 8;
    }

    fn fixed32(&mut self, tag: u32, _: u32) {
        self.size += key_len(tag) + 4;
    }

    fn delimited(&mut self, tag: u32, len: usize, _: impl FnOnce(&mut Vec<u8>)) {
        self.size += key_len(tag) + encoded_len_varint(len as u64) + len;
    }

    fn message(&mut self, tag: u32, body: impl FnOnce(&mut Self)) {
        let slot = self.lens.len();
        self.lens.push(0);
        let outer = std::mem::replace(&mut self.size, 0);
        body(self);
        let len = std::mem::replace(&mut self.size, outer);
        if let Some(slot) = self.lens.get_mut(slot) {
            *slot = len;
        }
        self.delimited(tag, len, |_| {});
    }
}

/// The write pass, taking each nested message's length from the sizer.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    lens: std::slice::Iter<'a, usize>,
}

impl Sink for Writer<'_> {
    fn varint(&mut self, tag: u32, value: u64) {
        encode_key(tag, WireType::Varint, self.out);
        encode_varint(value, self.out);
    }

    fn fixed64(&mut self, tag: u32, value: u64) {
        encode_key(tag, WireType::SixtyFourBit, self.out);
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn fixed32(&mut self, tag: u32, value: u32) {
        encode_key(tag, WireType::ThirtyTwoBit, self.out);
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    fn delimited(&mut self, tag: u32, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        encode_key(tag, WireType::LengthDelimited, self.out);
        encode_varint(len as u64, self.out);
        let start = self.out.len();
        write(self.out);
        debug_assert_eq!(self.out.len() - start, len, "field {tag} mis-sized");
    }

    fn message(&mut self, tag: u32, body: impl FnOnce(&mut Self)) {
        // Both passes run the same code, so the sizer has a length for
        // every message; a missing one would be a bug the assertion shows.
        let len = self.lens.next().copied().unwrap_or_default();
        encode_key(tag, WireType::LengthDelimited, self.out);
        encode_varint(len as u64, self.out);
        let start = self.out.len();
        body(self);
        debug_assert_eq!(self.out.len() - start, len, "message {tag} mis-sized");
    }
}

// Singular proto3 fields at their default value are left out, as prost
// does; these helpers are for those fields (not for a oneof's, which prost
// writes whatever the value).

fn uint<S: Sink>(s: &mut S, tag: u32, value: u64) {
    if value != 0 {
        s.varint(tag, value);
    }
}

fn fixed64<S: Sink>(s: &mut S, tag: u32, value: u64) {
    if value != 0 {
        s.fixed64(tag, value);
    }
}

fn bytes<S: Sink>(s: &mut S, tag: u32, value: &[u8]) {
    if !value.is_empty() {
        s.delimited(tag, value.len(), |out| out.extend_from_slice(value));
    }
}

fn string<S: Sink>(s: &mut S, tag: u32, value: &str) {
    bytes(s, tag, value.as_bytes());
}

/// `ExportTraceServiceRequest`.
fn request<S: Sink>(s: &mut S, resource: &Resource, spans: &[SpanData], groups: &Groups<'_>) {
    // resource_spans: always one, even for no spans, as opentelemetry-proto.
    s.message(1, |s| resource_spans(s, resource, spans, groups));
}

/// `ResourceSpans`.
fn resource_spans<S: Sink>(
    s: &mut S,
    resource: &Resource,
    spans: &[SpanData],
    groups: &Groups<'_>,
) {
    // resource (`Resource`: attributes only; nothing is counted as dropped).
    s.message(1, |s| {
        for (key, value) in resource.iter() {
            key_value(s, 1, key.as_str(), value);
        }
    });
    for (group, scope) in groups.scopes.iter().enumerate() {
        s.message(2, |s| scope_spans(s, scope, groups.spans(group, spans)));
    }
    string(s, 3, resource.schema_url().unwrap_or_default());
}

/// `ScopeSpans`.
fn scope_spans<'a, S: Sink>(
    s: &mut S,
    scope: &InstrumentationScope,
    spans: impl Iterator<Item = &'a SpanData>,
) {
    // scope (`InstrumentationScope`; nothing is counted as dropped).
    s.message(1, |s| {
        string(s, 1, scope.name());
        string(s, 2, scope.version().unwrap_or_default());
        for kv in scope.attributes() {
            attribute(s, 3, kv);
        }
    });
    for data in spans {
        s.message(2, |s| span(s, data));
    }
    string(s, 3, scope.schema_url().unwrap_or_default());
}

/// `Span`.
fn span<S: Sink>(s: &mut S, span: &SpanData) {
    let context = &span.span_context;
    bytes(s, 1, &context.trace_id().to_bytes());
    bytes(s, 2, &context.span_id().to_bytes());
    trace_state(s, 3, context.trace_state());
    if span.parent_span_id != SpanId::INVALID {
        bytes(s, 4, &span.parent_span_id.to_bytes());
    }
    string(s, 5, &span.name);
    uint(s, 6, kind(&span.span_kind));
    fixed64(s, 7, unix_nanos(span.start_time));
    fixed64(s, 8, unix_nanos(span.end_time));
    for kv in &span.attributes {
        attribute(s, 9, kv);
    }
    uint(s, 10, span.dropped_attributes_count.into());
    events(s, &span.events);
    links(s, &span.links);
    // status: always present, even when unset.
    s.message(15, |s| status(s, &span.status));
    s.fixed32(16, flags(span.parent_span_is_remote, context.trace_flags()));
}

/// A span's `events` (11) and `dropped_events_count` (12).
fn events<S: Sink>(s: &mut S, events: &SpanEvents) {
    for event in events.iter() {
        s.message(11, |s| {
            fixed64(s, 1, unix_nanos(event.timestamp));
            string(s, 2, &event.name);
            for kv in &event.attributes {
                attribute(s, 3, kv);
            }
            uint(s, 4, event.dropped_attributes_count.into());
        });
    }
    uint(s, 12, events.dropped_count.into());
}

/// A span's `links` (13) and `dropped_links_count` (14).
fn links<S: Sink>(s: &mut S, links: &SpanLinks) {
    for link in links.iter() {
        let context = &link.span_context;
        s.message(13, |s| {
            bytes(s, 1, &context.trace_id().to_bytes());
            bytes(s, 2, &context.span_id().to_bytes());
            trace_state(s, 3, context.trace_state());
            for kv in &link.attributes {
                attribute(s, 4, kv);
            }
            uint(s, 5, link.dropped_attributes_count.into());
            // A link's own context says whether it is remote.
            s.fixed32(6, flags(context.is_remote(), context.trace_flags()));
        });
    }
    uint(s, 14, links.dropped_count.into());
}

/// `Status`: the description only for an error.
fn status<S: Sink>(s: &mut S, status: &Status) {
    let (code, message) = match status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    string(s, 2, message);
    uint(s, 3, code);
}

/// `span.SpanKind`'s number.
fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// The trace flags with OTLP's bits 8 (whether remote is known: always)
/// and 9 (remote).
fn flags(remote: bool, trace_flags: TraceFlags) -> u32 {
    let known = 0x100;
    let remote = if remote { 0x200 } else { 0 };
    u32::from(trace_flags.to_u8()) | known | remote
}

/// As opentelemetry-proto: a time before the epoch is 0, and nanoseconds
/// past `u64` are truncated.
fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// The W3C `tracestate` header (`key=value,…`) without building it.
fn trace_state<S: Sink>(s: &mut S, tag: u32, state: &TraceState) {
    let (mut len, mut entries) = (0, 0);
    for (key, value) in state {
        len += key.len() + 1 + value.len();
        entries += 1;
    }
    if entries == 0 {
        return;
    }
    len += entries - 1;
    s.delimited(tag, len, |out| {
        for (i, (key, value)) in state.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
    });
}

fn attribute<S: Sink>(s: &mut S, tag: u32, kv: &KeyValue) {
    key_value(s, tag, kv.key.as_str(), &kv.value);
}

/// `KeyValue`.
fn key_value<S: Sink>(s: &mut S, tag: u32, key: &str, value: &Value) {
    s.message(tag, |s| {
        string(s, 1, key);
        s.message(2, |s| any_value(s, value));
    });
}

/// `AnyValue`'s fields. A oneof's value is written even when it is the
/// default (`""`, `0`, `false`), as prost does.
fn any_value<S: Sink>(s: &mut S, value: &Value) {
    match value {
        Value::String(v) => {
            let v = v.as_str().as_bytes();
            s.delimited(1, v.len(), |out| out.extend_from_slice(v));
        }
        Value::Bool(v) => s.varint(2, u64::from(*v)),
        Value::I64(v) => s.varint(3, v.cast_unsigned()),
        Value::F64(v) => s.fixed64(4, v.to_bits()),
        Value::Array(array) => s.message(5, |s| array_value(s, array)),
        // opentelemetry-proto panics on a kind it does not know; an empty
        // `AnyValue` (no value) keeps the rest of the batch.
        _ => {}
    }
}

/// `ArrayValue`: each element an `AnyValue` (field 1).
fn array_value<S: Sink>(s: &mut S, array: &Array) {
    match array {
        Array::Bool(values) => {
            for v in values {
                s.message(1, |s| s.varint(2, u64::from(*v)));
            }
        }
        Array::I64(values) => {
            for v in values {
                s.message(1, |s| s.varint(3, v.cast_unsigned()));
            }
        }
        Array::F64(values) => {
            for v in values {
                s.message(1, |s| s.fixed64(4, v.to_bits()));
            }
        }
        Array::String(values) => {
            for v in values {
                let v = v.as_str().as_bytes();
                s.message(1, |s| {
                    s.delimited(1, v.len(), |out| out.extend_from_slice(v))
                });
            }
        }
        // As for an unknown value: an empty array rather than a panic.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, SpanContext, TraceId};
    use opentelemetry_proto::{
        tonic::collector::trace::v1::ExportTraceServiceRequest,
        transform::{
            common::tonic::ResourceAttributesWithSchema,
            trace::tonic::group_spans_by_resource_and_scope,
        },
    };
    use prost::Message;

    use super::*;

    fn at(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_schema_url(
                [
                    KeyValue::new("service.name", "tollgate"),
                    KeyValue::new("service.version", "0.1.0"),
                    KeyValue::new("service.instance.id", "replica-1"),
                    KeyValue::new("host.cpus", 8_i64),
                ],
                "https://opentelemetry.io/schemas/1.26.0",
            )
            .build()
    }

    fn server_scope() -> InstrumentationScope {
        InstrumentationScope::builder("tollgate").build()
    }

    fn context(trace: u128, span: u64, remote: bool, state: TraceState) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state,
        )
    }

    fn base(name: &'static str, span: u64, scope: InstrumentationScope) -> SpanData {
        SpanData {
            span_context: context(
                0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c,
                span,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.into(),
            start_time: at(1_700_000_000_000_000_000 + span),
            end_time: at(1_700_000_000_250_000_000 + span),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope,
        }
    }

    /// A server span with every kind of value, and two events.
    fn server_span() -> SpanData {
        let mut span = base(
            "tollgate.v1.Keys/Verify",
            0x00f0_67aa_0ba9_02b7,
            server_scope(),
        );
        span.span_kind = SpanKind::Server;
        span.parent_span_id = SpanId::from(0x1111_2222_3333_4444);
        span.parent_span_is_remote = true;
        span.attributes = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.grpc.status_code", 0_i64),
            KeyValue::new("server.port", 50051_i64),
            KeyValue::new("tollgate.cached", true),
            KeyValue::new("tollgate.fresh", false),
            KeyValue::new("tollgate.ratio", 0.25),
            KeyValue::new("tollgate.zero", 0.0),
            KeyValue::new("tollgate.negative", -42_i64),
            KeyValue::new("tollgate.empty", ""),
            KeyValue::new("", "empty key"),
            KeyValue::new(
                "tollgate.roles",
                Value::Array(Array::String(vec!["admin".into(), "".into()])),
            ),
            KeyValue::new(
                "tollgate.flags",
                Value::Array(Array::Bool(vec![true, false])),
            ),
            KeyValue::new("tollgate.codes", Value::Array(Array::I64(vec![0, 7, -1]))),
            KeyValue::new("tollgate.weights", Value::Array(Array::F64(vec![0.0, 1.5]))),
            KeyValue::new("tollgate.none", Value::Array(Array::I64(Vec::new()))),
        ];
        span.events.events = vec![
            Event::new(
                "cache.lookup",
                at(1_700_000_000_100_000_000),
                vec![KeyValue::new("cache", "keys"), KeyValue::new("hit", true)],
                0,
            ),
            Event::new(
                "no attributes",
                at(1_700_000_000_200_000_000),
                Vec::new(),
                0,
            ),
        ];
        span
    }

    /// A client span under a remote parent, failed with a message.
    fn client_span() -> SpanData {
        let mut span = base("SELECT api_keys", 0x0102_0304_0506_0708, server_scope());
        span.span_kind = SpanKind::Client;
        span.parent_span_id = SpanId::from(0x00f0_67aa_0ba9_02b7);
        span.parent_span_is_remote = true;
        span.attributes = vec![KeyValue::new("db.system.name", "postgresql")];
        span.status = Status::error("connection reset");
        span
    }

    /// A producer span with a link and a `tracestate`.
    fn linked_span() -> SpanData {
        let state: TraceState = "vendor=abc,other=x:y".parse().unwrap();
        let mut span = base("relay publish", 0x0a0b_0c0d_0e0f_1011, server_scope());
        span.span_context = context(0x1234, 0x0a0b_0c0d_0e0f_1011, false, state);
        span.span_kind = SpanKind::Producer;
        span.status = Status::Ok;
        span.links.links = vec![
            Link::new(
                context(0x5678, 0x99, true, "linked=1".parse().unwrap()),
                vec![KeyValue::new("messaging.message.id", "42")],
                2,
            ),
            Link::new(
                context(0x9abc, 0x77, false, TraceState::default()),
                Vec::new(),
                0,
            ),
        ];
        span
    }

    /// Nothing but ids, name and times; unsampled.
    fn bare_span() -> SpanData {
        let mut span = base("", 0x5555, server_scope());
        span.span_context = SpanContext::new(
            TraceId::from(0x42),
            SpanId::from(0x5555),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        span.span_kind = SpanKind::Consumer;
        span
    }

    /// Counts of dropped attributes, events and links.
    fn dropping_span() -> SpanData {
        let mut span = base("busy", 0x6666, server_scope());
        span.attributes = vec![KeyValue::new("kept", 1_i64)];
        span.dropped_attributes_count = 3;
        span.events.events = vec![Event::new(
            "kept",
            at(1_700_000_000_000_000_500),
            vec![KeyValue::new("a", 1_i64)],
            4,
        )];
        span.events.dropped_count = 5;
        span.links.dropped_count = 6;
        span.status = Status::error("");
        span
    }

    /// A span of a second scope, with version, schema URL and attributes.
    fn other_scope_span() -> SpanData {
        let scope = InstrumentationScope::builder("tollgate-relay")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.24.0")
            .with_attributes([
                KeyValue::new("relay.backend", "nats"),
                KeyValue::new("relay.replicas", 3_i64),
            ])
            .build();
        let mut span = base("relay deliver", 0x7777, scope);
        span.start_time = UNIX_EPOCH - Duration::from_secs(1);
        span.end_time = UNIX_EPOCH;
        span
    }

    fn reference(resource: &Resource, spans: &[SpanData]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans.to_vec(),
                &ResourceAttributesWithSchema::from(resource),
            ),
        }
    }

    fn encoded(resource: &Resource, spans: &[SpanData]) -> Vec<u8> {
        let mut out = Vec::new();
        export_request(resource, spans, &mut out);
        out
    }

    /// Decoded, and byte for byte: both write fields in tag order and keep
    /// scope groups in order of first appearance.
    fn assert_matches_reference(resource: &Resource, spans: &[SpanData]) {
        let expected = reference(resource, spans);
        let bytes = encoded(resource, spans);
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, expected);
        assert_eq!(bytes, expected.encode_to_vec());
    }

    #[test]
    fn one_scope_matches_opentelemetry_proto() {
        let spans = [
            server_span(),
            client_span(),
            linked_span(),
            bare_span(),
            dropping_span(),
        ];
        assert_matches_reference(&resource(), &spans);
    }

    #[test]
    fn scopes_are_grouped_as_opentelemetry_proto_does() {
        let reordered = InstrumentationScope::builder("tollgate-relay")
            .with_version("0.1.0")
            .with_schema_url("https://opentelemetry.io/schemas/1.24.0")
            .with_attributes([
                KeyValue::new("relay.replicas", 3_i64),
                KeyValue::new("relay.backend", "nats"),
            ])
            .build();
        let mut same_scope_reordered = bare_span();
        same_scope_reordered.instrumentation_scope = reordered;
        let spans = [
            server_span(),
            other_scope_span(),
            client_span(),
            same_scope_reordered,
            linked_span(),
            dropping_span(),
        ];
        let request = reference(&resource(), &spans);
        let groups = &request.resource_spans[0].scope_spans;
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1].spans.len(), 2);
        assert_matches_reference(&resource(), &spans);
    }

    #[test]
    fn empty_batch_carries_only_the_resource() {
        assert_matches_reference(&resource(), &[]);
        let request =
            ExportTraceServiceRequest::decode(encoded(&resource(), &[]).as_slice()).unwrap();
        assert_eq!(request.resource_spans.len(), 1);
        assert!(request.resource_spans[0].scope_spans.is_empty());
    }

    #[test]
    fn empty_resource_matches_opentelemetry_proto() {
        let resource = Resource::builder_empty().build();
        assert_matches_reference(&resource, &[bare_span()]);
        assert_matches_reference(&resource, &[]);
    }

    #[test]
    fn appends_to_what_out_holds() {
        // One resource: its attributes are in its hash map's order, which
        // differs from one `Resource` to another.
        let resource = resource();
        let mut out = b"prefix".to_vec();
        export_request(&resource, &[client_span()], &mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out[6..], encoded(&resource, &[client_span()]));
    }
}
