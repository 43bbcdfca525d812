//! The canonical proto3 JSON mapping, both ways, for any message of the
//! descriptor pool: what HTTP/JSON clients send and receive.
//!
//! The mapping itself is prost-reflect's (feature `serde`), which passes
//! the upstream protobuf conformance suite: lowerCamelCase names, 64-bit
//! integers as strings, enums by name, bytes as base64, and the special
//! forms of every well-known type (Timestamp, Duration, FieldMask, the
//! wrappers, Struct/Value/ListValue, Empty, and Any, whose `@type` is
//! resolved in the pool the message comes from, so the `google.rpc` error
//! details of our descriptor set resolve). This module only chooses the
//! options, finds the failing field of a refused request, and takes one
//! field of a message apart for `body: "field"` and `response_body`.
//!
//! # Reading (`decode`, `decode_field`)
//!
//! - Both the JSON name (`displayName`) and the proto name
//!   (`display_name`) of a field are accepted.
//! - Unknown fields are refused, and so are unknown enum names, values of
//!   the wrong type, out-of-range numbers, two members of one oneof, and
//!   trailing data: stricter than grpc-gateway (which drops unknown fields)
//!   on purpose, so a typo is an error rather than a silently ignored
//!   setting.
//! - `null` leaves a field unset (for `google.protobuf.Value` it is the
//!   null value).
//! - A refused document's [`JsonError::field`] is the path of the failing
//!   value as the client wrote it (`organization.displayName`,
//!   `user.roles[0]`); malformed JSON (a syntax error) names no field.
//!
//! # Writing (`encode`, `encode_into`, `encode_field`)
//!
//! These are exactly the rules the OpenAPI document describes:
//!
//! - Field names are the JSON names (lowerCamelCase).
//! - Every field **without presence** is always written, with its default
//!   when unset (grpc-gateway v2's default `EmitUnpopulated`): singular
//!   scalars (`""`, `0`, `"0"` for 64-bit integers, `false`, the enum value
//!   numbered 0 by name, `""` for bytes), repeated fields (`[]`) and maps
//!   (`{}`).
//! - A field **with presence** is written only when set: singular message
//!   fields (including the well-known types: an unset `createTime` is
//!   absent, never `null` nor the epoch), members of a `oneof`, and proto3
//!   `optional` fields. A set one is written even when it holds its
//!   default (`optional int32 x = 1` set to 0 is `"x": 0`).
//! - int64, uint64, sint64, fixed64 and sfixed64 are JSON strings (`"42"`);
//!   32-bit integers are numbers; floats are numbers in their shortest
//!   round-trip form as serde_json writes them (a whole number keeps
//!   `.0`: `0.0`, `2.0`, `1.5`), or `"NaN"`, `"Infinity"`, `"-Infinity"`.
//! - Enums are written by name; a number the enum does not declare is
//!   written as the number.
//! - Bytes are standard base64 with padding.
//! - Well-known types use their special forms: Timestamp as RFC 3339 in
//!   UTC (`"2026-01-02T03:04:05Z"`, fractional seconds in groups of 3
//!   digits when non-zero), Duration as seconds (`"1.500s"`), FieldMask as
//!   one comma-separated string of lowerCamelCase paths, wrappers as their
//!   plain value, Struct/Value/ListValue as JSON, Empty as `{}`, Any as the
//!   embedded message plus `"@type"`.
//! - Fields are written in field-number order; unknown fields are dropped.
//!
//! Writing fails only on values the mapping cannot express (a Timestamp or
//! Duration out of range, an Any whose type the pool lacks, a FieldMask
//! path that is not snake_case), which only a broken response can hold.
//!
//! # Cost
//!
//! A document is decoded straight into a `DynamicMessage`, with no path
//! bookkeeping: serde_path_to_error allocates a string per object key, so
//! it runs only after a failure, on a second pass over the same bytes,
//! to name the field.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    ReflectMessage as _, SerializeOptions, Value,
};
use serde::de::{self, DeserializeSeed, IntoDeserializer as _};

/// Our reading options: unknown fields and enum names refused.
const READ: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);

/// Our writing options: JSON names, 64-bit integers as strings, enums by
/// name, fields without presence written even when unset.
const WRITE: SerializeOptions = SerializeOptions::new()
    .stringify_64_bit_integers(true)
    .use_enum_numbers(false)
    .use_proto_field_name(false)
    .skip_default_fields(false);

/// Why a JSON document does not decode into the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match .field { Some(f) => format!("{f}: {}", .description), None => .description.clone() })]
pub struct JsonError {
    /// The path of the failing value as the client wrote it, e.g.
    /// `organization.displayName` or `user.roles[0]`; `None` when the
    /// document is not JSON at all.
    pub field: Option<String>,
    /// What is wrong, without the line and column when a field is named.
    pub description: String,
}

/// Why a message cannot be written as JSON (only a broken response:
/// see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write {message} as JSON: {reason}")]
pub struct EncodeError {
    /// The message's full name.
    pub message: String,
    /// serde's reason.
    pub reason: String,
}

/// Decodes a JSON document into a message of type `desc`.
pub fn decode(desc: &MessageDescriptor, json: &[u8]) -> Result<DynamicMessage, JsonError> {
    run(MessageSeed(desc), json, None)
}

/// Decodes a JSON document as the value of `field` of a message of type
/// `desc` (`body: "field"`), and returns that message with only `field`
/// set (unset for `null`). `field` may be a message, a scalar, repeated or
/// a map. Errors are named from the request message, so they start with
/// the field's JSON name (`apiKey.displayName`).
pub fn decode_field(
    desc: &MessageDescriptor,
    field: &FieldDescriptor,
    json: &[u8],
) -> Result<DynamicMessage, JsonError> {
    run(
        FieldSeed {
            message: desc,
            key: field.json_name(),
        },
        json,
        Some(field.json_name()),
    )
}

/// Decodes `text` as if it were the JSON string `"text"` for a message of
/// type `desc`: the string forms of Timestamp (RFC 3339) and Duration
/// (`"1.5s"`), for query parameters and path variables. The error is a
/// description.
pub fn decode_str(desc: &MessageDescriptor, text: &str) -> Result<DynamicMessage, String> {
    let de: de::value::StrDeserializer<'_, de::value::Error> = text.into_deserializer();
    DynamicMessage::deserialize_with_options(desc.clone(), de, &READ).map_err(|e| e.to_string())
}

/// Writes `msg` as JSON (rules in the module doc).
pub fn encode(msg: &DynamicMessage) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(128);
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Appends `msg` as JSON to `out` (for framing without a copy).
pub fn encode_into(msg: &DynamicMessage, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    super::json_writer::write_message(msg, out, &WRITE).map_err(|e| {
        out.truncate(start);
        encode_error(msg, &e)
    })
}

/// Appends the JSON of one field of `msg` to `out` (`response_body`),
/// under the same rules as a whole message. An unset field with presence
/// (a message, a oneof member, an `optional` scalar) is `null`; an unset
/// field without presence is its default (`""`, `0`, `[]`, …).
pub fn encode_field(
    msg: &DynamicMessage,
    field: &FieldDescriptor,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let is_message =
        matches!(field.kind(), Kind::Message(_)) && !field.is_list() && !field.is_map();
    if is_message {
        return match msg.get_field(field).as_ref() {
            Value::Message(inner) if msg.has_field(field) => encode_into(inner, out),
            _ => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        };
    }
    if field.supports_presence() && !msg.has_field(field) {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    // prost-reflect writes a value only as part of its message: write the
    // field within a message holding it alone, then copy the value's text
    // out of that document. A scalar or list response body is rare; the
    // common message case above goes straight through.
    let mut alone = DynamicMessage::new(msg.descriptor());
    alone
        .try_set_field(field, msg.get_field(field).into_owned())
        .map_err(|e| encode_error(msg, &e))?;
    let whole = encode(&alone)?;
    let mut de = serde_json::Deserializer::from_slice(&whole);
    let value = de::Deserializer::deserialize_map(&mut de, PickEntry(field.json_name()))
        .map_err(|e| encode_error(msg, &e))?
        .ok_or_else(|| encode_error(msg, &"the field is missing from its message's JSON"))?;
    out.extend_from_slice(value.get().as_bytes());
    Ok(())
}

/// Finds one entry of a JSON object and keeps its text.
struct PickEntry<'k>(&'k str);

impl<'de> de::Visitor<'de> for PickEntry<'_> {
    type Value = Option<&'de serde_json::value::RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.0 {
                found = Some(map.next_value()?);
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

fn encode_error(msg: &DynamicMessage, e: &dyn std::fmt::Display) -> EncodeError {
    EncodeError {
        message: msg.descriptor().full_name().to_owned(),
        reason: e.to_string(),
    }
}

/// Deserializes `json` with `seed`; on failure, deserializes it again with
/// path tracking to name the failing field (see "Cost" in the module doc).
fn run<'de, S>(seed: S, json: &'de [u8], prefix: Option<&str>) -> Result<S::Value, JsonError>
where
    S: DeserializeSeed<'de> + Clone,
{
    let mut de = serde_json::Deserializer::from_slice(json);
    let first = match seed
        .clone()
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
    {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    if !first.is_data() {
        // Not JSON, or cut short: no field to name.
        return Err(JsonError {
            field: None,
            description: first.to_string(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut track = serde_path_to_error::Track::new();
    let again = seed.deserialize(serde_path_to_error::Deserializer::new(&mut de, &mut track));
    let error = match again {
        Err(e) => e,
        // Unreachable in practice (the same bytes, the same seed); report
        // the first error without a path rather than accept the document.
        Ok(_) => first,
    };
    let path = track.path();
    let mut field = prefix.map(str::to_owned).unwrap_or_default();
    for segment in &path {
        match segment {
            serde_path_to_error::Segment::Seq { index } => {
                field.push('[');
                field.push_str(&index.to_string());
                field.push(']');
            }
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => {
                if !field.is_empty() {
                    field.push('.');
                }
                field.push_str(key);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    // prost-reflect refuses an unknown key before reading its value, and
    // a second oneof member after reading it, so the tracked path ends at
    // the object holding them: the key (or the oneof) is named only in the
    // message. Name it (the unit tests pin the wording of the version we
    // lock).
    let description = without_position(&error);
    if let Some(key) = [
        "unrecognized field name '",
        "multiple fields provided for oneof '",
    ]
    .iter()
    .find_map(|start| description.strip_prefix(start))
    .and_then(|rest| rest.strip_suffix('\''))
    {
        if !field.is_empty() {
            field.push('.');
        }
        field.push_str(key);
    }
    Err(JsonError {
        field: (!field.is_empty()).then_some(field),
        description,
    })
}

/// serde_json's message without its " at line L column C" suffix: the
/// field path says where.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => text,
    }
}

/// A whole message.
#[derive(Clone, Copy)]
struct MessageSeed<'a>(&'a MessageDescriptor);

impl<'de> DeserializeSeed<'de> for MessageSeed<'_> {
    type Value = DynamicMessage;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<DynamicMessage, D::Error> {
        DynamicMessage::deserialize_with_options(self.0.clone(), d, &READ)
    }
}

/// One field's value, read as the message `{"<key>": <document>}` so
/// prost-reflect's own field handling (scalars, lists, maps, well-known
/// types, `null`) applies without copying the document. prost-reflect
/// exposes no per-field entry point.
#[derive(Clone, Copy)]
struct FieldSeed<'a> {
    message: &'a MessageDescriptor,
    key: &'a str,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = DynamicMessage;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<DynamicMessage, D::Error> {
        DynamicMessage::deserialize_with_options(
            self.message.clone(),
            OneEntry {
                key: Some(self.key),
                value: Some(d),
            },
            &READ,
        )
    }
}

/// A deserializer that presents `value` as the only entry of a map.
struct OneEntry<'k, D> {
    key: Option<&'k str>,
    value: Option<D>,
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for OneEntry<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de, D: de::Deserializer<'de>> de::MapAccess<'de> for OneEntry<'_, D> {
    type Error = D::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, D::Error> {
        match self.key.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, D::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value),
            None => Err(de::Error::custom("a map entry's value was read twice")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(usize::from(self.key.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_reflect::DescriptorPool;
    use tollgate::tollgate::v1::{
        ApiKey, CreateApiKeyRequest, Event, ListUsersResponse, Organization,
        UpdateOrganizationRequest, User, event,
    };

    use super::*;

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(tollgate::FILE_DESCRIPTOR_SET).unwrap()
    }

    fn desc(name: &str) -> MessageDescriptor {
        pool().get_message_by_name(name).unwrap()
    }

    fn dynamic<M: prost::Message>(name: &str, m: &M) -> DynamicMessage {
        DynamicMessage::decode(desc(name), m.encode_to_vec().as_slice()).unwrap()
    }

    fn typed<M: prost::Message + Default>(m: &DynamicMessage) -> M {
        M::decode(m.encode_to_vec().as_slice()).unwrap()
    }

    fn text(m: &DynamicMessage) -> String {
        String::from_utf8(encode(m).unwrap()).unwrap()
    }

    fn err(name: &str, json: &str) -> JsonError {
        decode(&desc(name), json.as_bytes()).unwrap_err()
    }

    #[test]
    fn both_names_in_camel_case_out() {
        for json in [
            r#"{"displayName":"Acme","state":"ACTIVE"}"#,
            r#"{"display_name":"Acme","state":1}"#,
        ] {
            let m = decode(&desc("tollgate.v1.Organization"), json.as_bytes()).unwrap();
            let org: Organization = typed(&m);
            assert_eq!(org.display_name, "Acme");
            assert_eq!(org.state, 1);
        }
    }

    #[test]
    fn unset_scalars_and_lists_are_written_unset_messages_are_not() {
        let m = dynamic("tollgate.v1.User", &User::default());
        assert_eq!(
            text(&m),
            r#"{"name":"","uid":"","displayName":"","email":"","state":"STATE_UNSPECIFIED","roles":[],"hasPassword":false,"etag":""}"#
        );
        let m = dynamic(
            "tollgate.v1.User",
            &User {
                roles: vec!["admin".into()],
                create_time: Some(prost_types::Timestamp {
                    seconds: 1_767_323_045,
                    nanos: 500_000_000,
                }),
                ..User::default()
            },
        );
        let t = text(&m);
        assert!(t.contains(r#""roles":["admin"]"#), "{t}");
        assert!(
            t.contains(r#""createTime":"2026-01-02T03:04:05.500Z""#),
            "{t}"
        );
        assert!(!t.contains("updateTime"), "{t}");
    }

    #[test]
    fn int64_as_strings_oneofs_only_when_set() {
        let m = dynamic(
            "tollgate.v1.Event",
            &Event {
                id: 42,
                after: Some(event::After::ApiKey(ApiKey::default())),
                ..Event::default()
            },
        );
        let t = text(&m);
        assert!(t.starts_with(r#"{"id":"42","#), "{t}");
        assert!(t.contains(r#""apiKey":{"#), "{t}");
        assert!(!t.contains(r#""org""#) && !t.contains(r#""user""#), "{t}");
        // A proto3 `optional` field: written when set, even to its default.
        let pool = DescriptorPool::decode(tollgate_proto_optional().as_slice()).unwrap();
        let d = pool.get_message_by_name("t.Opt").unwrap();
        let mut m = DynamicMessage::new(d.clone());
        assert_eq!(text(&m), r#"{"plain":0}"#);
        m.set_field_by_name("maybe", Value::I32(0));
        assert_eq!(text(&m), r#"{"plain":0,"maybe":0}"#);
    }

    /// A one-message file with a proto3 `optional` field, built by hand:
    /// our protos have none.
    fn tollgate_proto_optional() -> Vec<u8> {
        use prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
            OneofDescriptorProto,
            field_descriptor_proto::{Label, Type},
        };
        let field = |name: &str, number, oneof| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(Type::Int32 as i32),
            json_name: Some(name.into()),
            oneof_index: oneof,
            proto3_optional: oneof.map(|_| true),
            ..Default::default()
        };
        FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("t.proto".into()),
                package: Some("t".into()),
                syntax: Some("proto3".into()),
                message_type: vec![DescriptorProto {
                    name: Some("Opt".into()),
                    field: vec![field("plain", 1, None), field("maybe", 2, Some(0))],
                    oneof_decl: vec![OneofDescriptorProto {
                        name: Some("_maybe".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn well_known_types_round_trip() {
        let json = r#"{"organization":{"name":"organizations/a","createTime":"2026-01-02T03:04:05Z"},"updateMask":"displayName,state"}"#;
        let m = decode(
            &desc("tollgate.v1.UpdateOrganizationRequest"),
            json.as_bytes(),
        )
        .unwrap();
        let req: UpdateOrganizationRequest = typed(&m);
        assert_eq!(req.update_mask.unwrap().paths, ["display_name", "state"]);
        assert_eq!(
            req.organization.unwrap().create_time.unwrap().seconds,
            1_767_323_045
        );
        let out = text(&m);
        assert!(out.contains(r#""updateMask":"displayName,state""#), "{out}");
    }

    #[test]
    fn any_resolves_error_details_from_the_same_pool() {
        let bad = tonic_types::pb::BadRequest {
            field_violations: vec![tonic_types::pb::bad_request::FieldViolation {
                field: "user.email".into(),
                description: "required".into(),
                ..Default::default()
            }],
        };
        let status = tonic_types::pb::Status {
            code: 3,
            message: "invalid".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.BadRequest".into(),
                value: bad.encode_to_vec(),
            }],
        };
        let m = dynamic("google.rpc.Status", &status);
        let t = text(&m);
        assert!(
            t.starts_with(r#"{"code":3,"message":"invalid","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"user.email","description":"required""#),
            "{t}"
        );
        // And back.
        let back = decode(&desc("google.rpc.Status"), t.as_bytes()).unwrap();
        assert_eq!(back.encode_to_vec(), m.encode_to_vec());
    }

    #[test]
    fn errors_name_the_field_as_written() {
        let e = err(
            "tollgate.v1.CreateUserRequest",
            r#"{"user":{"dispalyName":"x"}}"#,
        );
        assert_eq!(e.field.as_deref(), Some("user.dispalyName"), "{e}");
        assert!(e.description.contains("dispalyName"), "{e}");
        let e = err(
            "tollgate.v1.CreateUserRequest",
            r#"{"user":{"roles":["a",7]}}"#,
        );
        assert_eq!(e.field.as_deref(), Some("user.roles[1]"), "{e}");
        assert!(!e.description.contains("line"), "{e}");
        let e = err(
            "tollgate.v1.CreateUserRequest",
            r#"{"user":{"display_name":5}}"#,
        );
        assert_eq!(e.field.as_deref(), Some("user.display_name"), "{e}");
        let e = err("tollgate.v1.User", r#"{"state":"ASLEEP"}"#);
        assert_eq!(e.field.as_deref(), Some("state"), "{e}");
        let e = err("tollgate.v1.Event", r#"{"id":"-1"}"#);
        assert_eq!(e.field.as_deref(), Some("id"), "{e}");
        let e = err("tollgate.v1.Event", r#"{"time":"yesterday"}"#);
        assert_eq!(e.field.as_deref(), Some("time"), "{e}");
        let e = err("tollgate.v1.Event", r#"{"org":{},"user":{}}"#);
        assert_eq!(e.field.as_deref(), Some("after"), "{e}");
        assert!(e.description.contains("oneof"), "{e}");
    }

    #[test]
    fn malformed_json_names_no_field() {
        for bad in [r#"{"user":"#, "not json", r#"{"user":{}} x"#, "[1]"] {
            let e = err("tollgate.v1.CreateUserRequest", bad);
            assert_eq!(e.field, None, "{bad}: {e}");
        }
        let e = err("tollgate.v1.CreateUserRequest", "{");
        assert!(e.description.contains("line 1"), "{e}");
    }

    #[test]
    fn one_field_in_and_out() {
        let d = desc("tollgate.v1.CreateApiKeyRequest");
        let f = d.get_field_by_name("api_key").unwrap();
        let m = decode_field(&d, &f, br#"{"displayName":"ci"}"#).unwrap();
        let req: CreateApiKeyRequest = typed(&m);
        assert_eq!(req.api_key.unwrap().display_name, "ci");
        let m = decode_field(&d, &f, b"null").unwrap();
        assert!(!m.has_field(&f));
        let e = decode_field(&d, &f, br#"{"displayName":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("apiKey.displayName"), "{e}");
        let e = decode_field(&d, &f, br#"{"nope":1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("apiKey.nope"), "{e}");

        // A repeated field out, set or not, and an unset message.
        let list = desc("tollgate.v1.ListUsersResponse");
        let users = list.get_field_by_name("users").unwrap();
        let token = list.get_field_by_name("next_page_token").unwrap();
        let m = dynamic(
            "tollgate.v1.ListUsersResponse",
            &ListUsersResponse {
                users: vec![User::default()],
                next_page_token: String::new(),
            },
        );
        let mut out = Vec::new();
        encode_field(&m, &users, &mut out).unwrap();
        assert!(
            out.starts_with(br#"[{"name":"""#),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let mut out = Vec::new();
        encode_field(&m, &token, &mut out).unwrap();
        assert_eq!(out, br#""""#);
        let empty = DynamicMessage::new(list);
        let mut out = Vec::new();
        encode_field(&empty, &users, &mut out).unwrap();
        assert_eq!(out, b"[]");
        let key = dynamic(
            "tollgate.v1.CreateApiKeyRequest",
            &CreateApiKeyRequest::default(),
        );
        let mut out = Vec::new();
        encode_field(&key, &f, &mut out).unwrap();
        assert_eq!(out, b"null");
    }

    #[test]
    fn a_broken_response_is_an_encode_error() {
        let mut m = DynamicMessage::new(desc("tollgate.v1.Event"));
        let time = m.descriptor().get_field_by_name("time").unwrap();
        let mut ts = DynamicMessage::new(desc("google.protobuf.Timestamp"));
        ts.set_field_by_name("seconds", Value::I64(i64::MAX));
        m.set_field(&time, Value::Message(ts));
        let e = encode(&m).unwrap_err();
        assert_eq!(e.message, "tollgate.v1.Event");
    }
}
