//! Query parameters: the request fields that neither the path nor the body
//! sets, as grpc-gateway and Envoy's transcoder read them
//! (`?pageSize=10&filter.owner.name=x&tags=a&tags=b`).
//!
//! Each route compiles, at start-up, a table from every parameter name it
//! accepts to the field path it sets and how its value parses, so a
//! request looks names up only in that table, never in a descriptor.
//!
//! Names: a field's proto name (`page_size`) and JSON name (`pageSize`)
//! are both accepted, per segment, and dotted paths go through singular
//! message fields (`filter.owner.name`), at most [`MAX_DEPTH`] deep, which
//! is what bounds recursive messages (and [`MAX_NODES`] names per route,
//! the shortest kept). Excluded, and refused by name with
//! the reason: the fields the path binds, the body field (all of it), and
//! every field when the body is `*`; maps, repeated messages and the
//! JSON-only well-known types (Struct, Value, ListValue, Any, Empty).
//!
//! Values, per the field's type:
//! - strings as they are; integers in decimal (64-bit too); floats in
//!   decimal, or `NaN`, `Infinity`, `-Infinity`; bools `true` / `false`;
//!   bytes in base64, standard or URL-safe, padded or not;
//! - enums by name, or by number;
//! - `google.protobuf.Timestamp` in RFC 3339, `Duration` as `"1.5s"` (the
//!   JSON mapping's forms); `FieldMask` as comma-separated paths in proto
//!   or JSON names (`update_mask=displayName,state`), stored as proto
//!   paths; the wrappers (`Int64Value`, …) from their plain value;
//! - a repeated field by repeating the parameter (`x=1&x=2`); a singular
//!   one given twice, two members of one oneof, an unknown name or a value
//!   that does not parse is an error naming the parameter.
//!
//! Decoding is `application/x-www-form-urlencoded` (`+` is a space), but
//! strict: a broken percent-escape or bytes that are not UTF-8 are errors,
//! where `form_urlencoded` passes the former through and replaces the
//! latter, silently changing what the client sent.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
};

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use prost_reflect::{
    DynamicMessage, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value,
};

use super::json;

/// How deep dotted parameter names reach through nested messages: the
/// bound that stops recursive messages.
pub const MAX_DEPTH: usize = 8;

/// How many names one route's table holds at most, so a wide, deep or
/// recursive request message cannot blow up start-up; past it, deeper
/// messages are refused as too deep.
pub const MAX_NODES: usize = 4096;

/// Why a query parameter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter {parameter}: {description}")]
pub struct QueryError {
    /// The parameter's name as the client sent it (percent-decoded when
    /// that succeeds).
    pub parameter: String,
    /// What is wrong.
    pub description: String,
}

/// The query parameters one route accepts, compiled once.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    /// A trie over the dotted names; `nodes[0]` is the root.
    nodes: Vec<Node>,
    params: Vec<Param>,
    /// Why nothing is accepted (`body: "*"`), if so.
    closed: Option<&'static str>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    children: HashMap<Box<str>, u32>,
    target: Target,
}

#[derive(Debug, Clone, Default)]
enum Target {
    /// A singular message: only its fields are parameters.
    #[default]
    Branch,
    /// A parameter, by index.
    Param(u32),
    /// A field that is not a parameter, and why.
    Refused(&'static str),
}

/// One settable field.
#[derive(Debug, Clone)]
struct Param {
    /// From the request message to the field.
    path: Box<[FieldDescriptor]>,
    /// How its value parses.
    leaf: Leaf,
    /// Values append instead of set.
    repeated: bool,
}

/// How a parameter's value becomes a field value.
#[derive(Debug, Clone)]
enum Leaf {
    Scalar(Scalar),
    /// `google.protobuf.*Value`: the plain value in field 1.
    Wrapper {
        message: MessageDescriptor,
        value: FieldDescriptor,
        scalar: Scalar,
    },
    /// Timestamp or Duration: their JSON string form.
    JsonString(MessageDescriptor),
    /// FieldMask: comma-separated paths, proto or JSON names.
    FieldMask(MessageDescriptor),
}

/// A scalar field's type, as far as parsing text goes.
#[derive(Debug, Clone)]
pub enum Scalar {
    /// `string`.
    String,
    /// `bytes`, base64.
    Bytes,
    /// `bool`, `true` or `false`.
    Bool,
    /// `int32`, `sint32`, `sfixed32`.
    I32,
    /// `int64`, `sint64`, `sfixed64`.
    I64,
    /// `uint32`, `fixed32`.
    U32,
    /// `uint64`, `fixed64`.
    U64,
    /// `float`.
    F32,
    /// `double`.
    F64,
    /// An enum, by name or number.
    Enum(EnumDescriptor),
}

impl Scalar {
    /// The scalar type of `kind`; `None` for messages.
    pub fn of(kind: &Kind) -> Option<Self> {
        Some(match kind {
            Kind::String => Scalar::String,
            Kind::Bytes => Scalar::Bytes,
            Kind::Bool => Scalar::Bool,
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Scalar::I32,
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Scalar::I64,
            Kind::Uint32 | Kind::Fixed32 => Scalar::U32,
            Kind::Uint64 | Kind::Fixed64 => Scalar::U64,
            Kind::Float => Scalar::F32,
            Kind::Double => Scalar::F64,
            Kind::Enum(e) => Scalar::Enum(e.clone()),
            Kind::Message(_) => return None,
        })
    }

    /// Parses `text` as a value of this type (the rules in the module doc;
    /// path variables parse the same way). The error is a description.
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        fn num<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
            text.parse()
                .map_err(|_| format!("{text:?} is not a valid {what}"))
        }
        Ok(match self {
            Scalar::String => Value::String(text.to_owned()),
            Scalar::Bytes => Value::Bytes(
                base64_decode(text)
                    .ok_or_else(|| format!("{text:?} is not valid base64"))?
                    .into(),
            ),
            Scalar::Bool => match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(format!("{text:?} is not a bool: use true or false")),
            },
            Scalar::I32 => Value::I32(num(text, "32-bit integer")?),
            Scalar::I64 => Value::I64(num(text, "64-bit integer")?),
            Scalar::U32 => Value::U32(num(text, "unsigned 32-bit integer")?),
            Scalar::U64 => Value::U64(num(text, "unsigned 64-bit integer")?),
            Scalar::F32 => Value::F32(num(text, "number")?),
            Scalar::F64 => Value::F64(num(text, "number")?),
            Scalar::Enum(e) => match e.get_value_by_name(text) {
                Some(v) => Value::EnumNumber(v.number()),
                None => match text.parse() {
                    Ok(n) => Value::EnumNumber(n),
                    Err(_) => {
                        return Err(format!(
                            "{text:?} is not a value of {}; one of {}",
                            e.full_name(),
                            e.values()
                                .map(|v| v.name().to_owned())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                },
            },
        })
    }
}

/// Base64 as clients write it in URLs: standard or URL-safe alphabet,
/// padded or not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

/// What the body and the path take from the request message.
#[derive(Debug, Clone, Copy)]
pub enum Taken<'a> {
    /// No body: only the path's fields.
    Path(&'a [Vec<FieldDescriptor>]),
    /// `body: "field"`: that field and the path's fields.
    PathAndField(&'a [Vec<FieldDescriptor>], &'a FieldDescriptor),
    /// `body: "*"`: everything.
    All,
}

impl QueryParams {
    /// Compiles the parameters of a request message `input`, without the
    /// fields `taken` by the path and the body.
    pub fn compile(input: &MessageDescriptor, taken: Taken<'_>) -> Self {
        let mut out = QueryParams {
            nodes: vec![Node::default()],
            ..QueryParams::default()
        };
        let (bound, body) = match taken {
            Taken::All => {
                out.closed = Some(
                    "this method takes all its fields from the request body: no query parameters",
                );
                return out;
            }
            Taken::Path(bound) => (bound, None),
            Taken::PathAndField(bound, body) => (bound, Some(body)),
        };
        // Breadth first, so that when a schema is too large for the node
        // budget the short names are the ones kept.
        let mut queue = VecDeque::from([(0, input.clone(), Vec::new())]);
        while let Some((node, message, path)) = queue.pop_front() {
            for field in message.fields() {
                let mut path = path.clone();
                path.push(field.clone());
                let child = out.nodes.len();
                out.nodes.push(Node::default());
                for name in [field.name(), field.json_name()] {
                    out.nodes[node].children.insert(name.into(), child as u32);
                }
                let target = if bound.iter().any(|b| b.as_slice() == path.as_slice()) {
                    Target::Refused("set by the URL path")
                } else if path.len() == 1 && body == Some(&field) {
                    Target::Refused("set by the request body")
                } else if field.is_map() {
                    Target::Refused("a map cannot be set from the query string")
                } else {
                    match field.kind() {
                        Kind::Message(m) => match leaf_message(&m) {
                            Some(Ok(leaf)) => out.param(&path, leaf, field.is_list()),
                            Some(Err(reason)) => Target::Refused(reason),
                            None if field.is_list() => Target::Refused(
                                "a repeated message cannot be set from the query string",
                            ),
                            None if path.len() >= MAX_DEPTH || out.nodes.len() >= MAX_NODES => {
                                Target::Refused("nested too deep to be set from the query string")
                            }
                            None => {
                                queue.push_back((child, m, path));
                                Target::Branch
                            }
                        },
                        kind => match Scalar::of(&kind) {
                            Some(s) => out.param(&path, Leaf::Scalar(s), field.is_list()),
                            None => Target::Refused("not settable from the query string"),
                        },
                    }
                };
                out.nodes[child].target = target;
            }
        }
        out
    }

    fn param(&mut self, path: &[FieldDescriptor], leaf: Leaf, repeated: bool) -> Target {
        self.params.push(Param {
            path: path.into(),
            leaf,
            repeated,
        });
        Target::Param((self.params.len() - 1) as u32)
    }

    /// Whether the route accepts no parameter at all.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Every accepted parameter as the field path it sets, shortest paths
    /// first, each level in field-number order: what the OpenAPI document
    /// can list (the JSON names of the path, joined by `.`, and the last
    /// field's kind and cardinality).
    pub fn fields(&self) -> impl Iterator<Item = &[FieldDescriptor]> + '_ {
        self.params.iter().map(|p| &*p.path)
    }

    /// Every accepted parameter as its proto-name path (`filter.owner.name`)
    /// and whether it repeats, in the order of [`QueryParams::fields`].
    pub fn names(&self) -> impl Iterator<Item = (String, bool)> + '_ {
        self.params.iter().map(|p| {
            let names: Vec<&str> = p.path.iter().map(|f| f.name()).collect();
            (names.join("."), p.repeated)
        })
    }

    /// Sets the fields named by `query` (the raw query string, without
    /// `?`) on `msg`, a message of the route's request type.
    pub fn apply(&self, msg: &mut DynamicMessage, query: &str) -> Result<(), QueryError> {
        let mut seen = Seen::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = form_decode(raw_key).map_err(|description| QueryError {
                parameter: raw_key.to_owned(),
                description: description.to_owned(),
            })?;
            let fail = |description: String| QueryError {
                parameter: key.as_ref().to_owned(),
                description,
            };
            let value = form_decode(raw_value).map_err(|d| fail(d.to_owned()))?;
            if let Some(reason) = self.closed {
                return Err(fail(reason.to_owned()));
            }
            let id = match self.lookup(&key) {
                Some(Target::Param(id)) => *id,
                Some(Target::Refused(reason)) => return Err(fail((*reason).to_owned())),
                Some(Target::Branch) => {
                    return Err(fail(format!("a message: set its fields, as {key}.<field>")));
                }
                None => return Err(fail("no such field in the request".to_owned())),
            };
            let Some(param) = self.params.get(id as usize) else {
                return Err(fail("no such field in the request".to_owned()));
            };
            if !param.repeated && !seen.insert(id) {
                return Err(fail("given more than once".to_owned()));
            }
            let parsed = param.leaf.parse(&value).map_err(&fail)?;
            set(msg, &param.path, parsed, param.repeated).map_err(fail)?;
        }
        Ok(())
    }

    fn lookup(&self, key: &str) -> Option<&Target> {
        let mut node = self.nodes.first()?;
        for segment in key.split('.') {
            match node.target {
                Target::Branch => {}
                // Inside a refused field: refused for the same reason.
                Target::Refused(_) => return Some(&node.target),
                // A dotted name cannot go through a parameter.
                Target::Param(_) => return None,
            }
            node = self.nodes.get(*node.children.get(segment)? as usize)?;
        }
        Some(&node.target)
    }
}

impl Leaf {
    fn parse(&self, text: &str) -> Result<Value, String> {
        match self {
            Leaf::Scalar(s) => s.parse(text),
            Leaf::Wrapper {
                message,
                value,
                scalar,
            } => {
                let mut m = DynamicMessage::new(message.clone());
                m.try_set_field(value, scalar.parse(text)?)
                    .map_err(|e| e.to_string())?;
                Ok(Value::Message(m))
            }
            Leaf::JsonString(desc) => json::decode_str(desc, text).map(Value::Message),
            Leaf::FieldMask(desc) => {
                let paths = text
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(snake_case(p)))
                    .collect();
                let mut m = DynamicMessage::new(desc.clone());
                let field = desc
                    .fields()
                    .next()
                    .ok_or_else(|| "FieldMask without its paths field".to_owned())?;
                m.try_set_field(&field, Value::List(paths))
                    .map_err(|e| e.to_string())?;
                Ok(Value::Message(m))
            }
        }
    }
}

/// A FieldMask path in JSON or proto names, as proto names:
/// `displayName` and `display_name` are both `display_name`. Written here
/// because prost-reflect's (spec-conforming) JSON FieldMask parser refuses
/// proto names, which grpc-gateway clients send in query strings.
fn snake_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 4);
    for c in path.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// How a message-typed field is read from the query string: `Some(Ok)`
/// for the well-known types written as one string, `Some(Err)` for those
/// that cannot be, `None` for an ordinary message.
fn leaf_message(m: &MessageDescriptor) -> Option<Result<Leaf, &'static str>> {
    let wrapped = |kind| {
        let value = m.get_field(1)?;
        let scalar = Scalar::of(&kind)?;
        Some(Ok(Leaf::Wrapper {
            message: m.clone(),
            value,
            scalar,
        }))
    };
    match m.full_name() {
        "google.protobuf.Timestamp" | "google.protobuf.Duration" => {
            Some(Ok(Leaf::JsonString(m.clone())))
        }
        "google.protobuf.FieldMask" => Some(Ok(Leaf::FieldMask(m.clone()))),
        "google.protobuf.DoubleValue" => wrapped(Kind::Double),
        "google.protobuf.FloatValue" => wrapped(Kind::Float),
        "google.protobuf.Int64Value" => wrapped(Kind::Int64),
        "google.protobuf.UInt64Value" => wrapped(Kind::Uint64),
        "google.protobuf.Int32Value" => wrapped(Kind::Int32),
        "google.protobuf.UInt32Value" => wrapped(Kind::Uint32),
        "google.protobuf.BoolValue" => wrapped(Kind::Bool),
        "google.protobuf.StringValue" => wrapped(Kind::String),
        "google.protobuf.BytesValue" => wrapped(Kind::Bytes),
        "google.protobuf.Struct"
        | "google.protobuf.Value"
        | "google.protobuf.ListValue"
        | "google.protobuf.Any"
        | "google.protobuf.Empty" => Some(Err("a JSON-only type: send it in the body")),
        _ => None,
    }
}

/// Sets (or, `append`ing, adds to) the field at `path` in `msg`, creating
/// the messages on the way. Refuses a second member of a oneof.
pub fn set(
    msg: &mut DynamicMessage,
    path: &[FieldDescriptor],
    value: Value,
    append: bool,
) -> Result<(), String> {
    let Some((leaf, parents)) = path.split_last() else {
        return Err("empty field path".to_owned());
    };
    let mut current = msg;
    for field in parents {
        check_oneof(current, field)?;
        current = match current.get_field_mut(field) {
            Value::Message(m) => m,
            _ => return Err(format!("{} is not a message", field.name())),
        };
    }
    check_oneof(current, leaf)?;
    if append {
        match current.get_field_mut(leaf) {
            Value::List(list) => list.push(value),
            _ => return Err(format!("{} is not repeated", leaf.name())),
        }
        Ok(())
    } else {
        current
            .try_set_field(leaf, value)
            .map_err(|e| e.to_string())
    }
}

/// Two members of one oneof cannot both be set: the second would silently
/// clear the first.
fn check_oneof(msg: &DynamicMessage, field: &FieldDescriptor) -> Result<(), String> {
    let Some(oneof) = field.containing_oneof() else {
        return Ok(());
    };
    // A synthetic oneof (proto3 `optional`) has one member: no conflict.
    match oneof
        .fields()
        .find(|other| other.number() != field.number() && msg.has_field(other))
    {
        Some(other) => Err(format!(
            "{} is already set, and only one field of {} may be",
            other.name(),
            oneof.name()
        )),
        None => Ok(()),
    }
}

/// The singular parameters already given: a bit per parameter, without
/// allocating for the first 64.
#[derive(Default)]
struct Seen {
    low: u64,
    high: Vec<u32>,
}

impl Seen {
    /// Marks `id`; false when it was already marked.
    fn insert(&mut self, id: u32) -> bool {
        if id < 64 {
            let bit = 1u64 << id;
            let new = self.low & bit == 0;
            self.low |= bit;
            new
        } else if self.high.contains(&id) {
            false
        } else {
            self.high.push(id);
            true
        }
    }
}

/// Decodes one `application/x-www-form-urlencoded` component strictly:
/// `+` is a space, every `%` starts two hex digits, the result is UTF-8.
pub fn form_decode(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + offset;
        match bytes.get(at + 1..at + 3) {
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => i = at + 3,
            _ => return Err("broken percent-escape: '%' must start two hex digits"),
        }
    }
    const NOT_UTF8: &str = "not UTF-8 once percent-decoded";
    if raw.contains('+') {
        let spaced = raw.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|s| Cow::Owned(s.into_owned()))
            .map_err(|_| NOT_UTF8)
    } else {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| NOT_UTF8)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_reflect::DescriptorPool;
    use tollgate::tollgate::v1::{ListUsersRequest, UpdateOrganizationRequest};

    use super::*;

    fn desc(name: &str) -> MessageDescriptor {
        DescriptorPool::decode(tollgate::FILE_DESCRIPTOR_SET)
            .unwrap()
            .get_message_by_name(name)
            .unwrap()
    }

    fn apply(params: &QueryParams, name: &str, query: &str) -> Result<Vec<u8>, QueryError> {
        let mut m = DynamicMessage::new(desc(name));
        params.apply(&mut m, query)?;
        Ok(m.encode_to_vec())
    }

    fn list_users() -> (QueryParams, Vec<Vec<FieldDescriptor>>) {
        let d = desc("tollgate.v1.ListUsersRequest");
        let bound = vec![vec![d.get_field_by_name("parent").unwrap()]];
        (QueryParams::compile(&d, Taken::Path(&bound)), bound)
    }

    #[test]
    fn both_names_decoded_values() {
        let (params, _) = list_users();
        let bytes = apply(
            &params,
            "tollgate.v1.ListUsersRequest",
            "pageSize=10&page_token=a%2Fb+c&filter=state%3DACTIVE",
        )
        .unwrap();
        let req = ListUsersRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.page_size, 10);
        assert_eq!(req.page_token, "a/b c");
        assert_eq!(req.filter, "state=ACTIVE");
        let names: Vec<_> = params.names().map(|(n, _)| n).collect();
        assert_eq!(names, ["page_size", "page_token", "filter"]);
    }

    #[test]
    fn refusals_name_the_parameter() {
        let (params, _) = list_users();
        let cases = [
            ("parent=x", "parent", "path"),
            ("pageSize=ten", "pageSize", "32-bit integer"),
            ("pageSize=1&page_size=2", "page_size", "more than once"),
            ("nope=1", "nope", "no such field"),
            ("filter=%zz", "filter", "percent-escape"),
            ("filter=%ff", "filter", "UTF-8"),
            ("fil%2=x", "fil%2", "percent-escape"),
            ("filter.x=1", "filter.x", "no such field"),
        ];
        for (query, parameter, words) in cases {
            let e = apply(&params, "tollgate.v1.ListUsersRequest", query).unwrap_err();
            assert_eq!(e.parameter, parameter, "{query}: {e}");
            assert!(e.description.contains(words), "{query}: {e}");
        }
    }

    #[test]
    fn body_star_takes_no_parameters_body_field_excludes_its_field() {
        let d = desc("tollgate.v1.SetPasswordRequest");
        let params = QueryParams::compile(&d, Taken::All);
        let e = apply(&params, "tollgate.v1.SetPasswordRequest", "etag=x").unwrap_err();
        assert!(e.description.contains("body"), "{e}");
        assert!(
            apply(&params, "tollgate.v1.SetPasswordRequest", "").is_ok(),
            "an empty query is fine"
        );

        let d = desc("tollgate.v1.UpdateOrganizationRequest");
        let org = d.get_field_by_name("organization").unwrap();
        let bound = vec![vec![
            org.clone(),
            org.kind()
                .as_message()
                .unwrap()
                .get_field_by_name("name")
                .unwrap(),
        ]];
        let params = QueryParams::compile(&d, Taken::PathAndField(&bound, &org));
        let e = apply(
            &params,
            "tollgate.v1.UpdateOrganizationRequest",
            "organization.etag=x",
        )
        .unwrap_err();
        assert_eq!(e.parameter, "organization.etag");
        assert!(e.description.contains("body"), "{e}");
        let bytes = apply(
            &params,
            "tollgate.v1.UpdateOrganizationRequest",
            "updateMask=displayName,state&update_mask=etag",
        )
        .err();
        assert!(bytes.is_some(), "a FieldMask is singular");
        let bytes = apply(
            &params,
            "tollgate.v1.UpdateOrganizationRequest",
            "update_mask=displayName,state,create_time",
        )
        .unwrap();
        let req = UpdateOrganizationRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            req.update_mask.unwrap().paths,
            ["display_name", "state", "create_time"]
        );
    }

    #[test]
    fn nested_fields_through_messages_not_through_oneofs_twice() {
        // Event: a oneof of messages, a Timestamp, a uint64.
        let d = desc("tollgate.v1.Event");
        let params = QueryParams::compile(&d, Taken::Path(&[]));
        let bytes = apply(
            &params,
            "tollgate.v1.Event",
            "id=18446744073709551615&time=2026-01-02T03:04:05.5Z&user.displayName=Bob&user.roles=a&user.roles=b",
        )
        .unwrap();
        let ev = tollgate::tollgate::v1::Event::decode(bytes.as_slice()).unwrap();
        assert_eq!(ev.id, u64::MAX);
        assert_eq!(ev.time.unwrap().nanos, 500_000_000);
        let Some(tollgate::tollgate::v1::event::After::User(user)) = ev.after else {
            panic!("user not set")
        };
        assert_eq!(user.display_name, "Bob");
        assert_eq!(user.roles, ["a", "b"]);
        let e = apply(&params, "tollgate.v1.Event", "user.name=a&org.name=b").unwrap_err();
        assert_eq!(e.parameter, "org.name");
        assert!(e.description.contains("after"), "{e}");
        let e = apply(&params, "tollgate.v1.Event", "user=x").unwrap_err();
        assert!(e.description.contains("user.<field>"), "{e}");
        let e = apply(&params, "tollgate.v1.Event", "time=yesterday").unwrap_err();
        assert_eq!(e.parameter, "time");
        let e = apply(&params, "tollgate.v1.Event", "user.state=ASLEEP").unwrap_err();
        assert!(e.description.contains("ACTIVE"), "{e}");
        let bytes = apply(&params, "tollgate.v1.Event", "user.state=2").unwrap();
        let ev = tollgate::tollgate::v1::Event::decode(bytes.as_slice()).unwrap();
        assert!(
            matches!(ev.after, Some(tollgate::tollgate::v1::event::After::User(u)) if u.state == 2)
        );
    }

    /// `t.Node { string name = 1; Node left = 2; Node right = 3; }`, built
    /// by hand: our protos have no recursive message.
    fn recursive() -> MessageDescriptor {
        use prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
            field_descriptor_proto::{Label, Type},
        };
        let field = |name: &str, number, ty: Type| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(ty as i32),
            type_name: (ty == Type::Message).then(|| ".t.Node".into()),
            json_name: Some(name.into()),
            ..Default::default()
        };
        let fds = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("t.proto".into()),
                package: Some("t".into()),
                syntax: Some("proto3".into()),
                message_type: vec![DescriptorProto {
                    name: Some("Node".into()),
                    field: vec![
                        field("name", 1, Type::String),
                        field("left", 2, Type::Message),
                        field("right", 3, Type::Message),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        DescriptorPool::decode(fds.encode_to_vec().as_slice())
            .unwrap()
            .get_message_by_name("t.Node")
            .unwrap()
    }

    #[test]
    fn recursive_messages_stop_at_the_depth_bound() {
        let d = recursive();
        let params = QueryParams::compile(&d, Taken::Path(&[]));
        let names: Vec<_> = params.names().map(|(n, _)| n).collect();
        assert_eq!(names.len(), (1 << MAX_DEPTH) - 1, "one name per node");
        assert!(names.iter().all(|n| n.split('.').count() <= MAX_DEPTH));
        let mut m = DynamicMessage::new(d.clone());
        params.apply(&mut m, "left.right.name=x").unwrap();
        let deep = format!("{}name=x", "left.".repeat(MAX_DEPTH));
        let e = params.apply(&mut m, &deep).unwrap_err();
        assert!(e.description.contains("too deep"), "{e}");
    }

    #[test]
    fn scalars_parse_per_kind() {
        assert_eq!(Scalar::Bool.parse("true"), Ok(Value::Bool(true)));
        assert!(Scalar::Bool.parse("1").is_err());
        assert_eq!(Scalar::I64.parse("-9"), Ok(Value::I64(-9)));
        assert!(Scalar::U32.parse("-1").is_err());
        assert!(Scalar::I32.parse("2147483648").is_err());
        assert_eq!(Scalar::F64.parse("1.5"), Ok(Value::F64(1.5)));
        assert!(matches!(Scalar::F32.parse("NaN"), Ok(Value::F32(f)) if f.is_nan()));
        assert_eq!(
            Scalar::F64.parse("-Infinity"),
            Ok(Value::F64(f64::NEG_INFINITY))
        );
        for b64 in ["+/8=", "-_8", "-_8=", "+/8"] {
            assert_eq!(
                Scalar::Bytes.parse(b64),
                Ok(Value::Bytes(vec![0xfb, 0xff].into())),
                "{b64}"
            );
        }
        assert!(Scalar::Bytes.parse("***").is_err());
    }

    #[test]
    fn form_decoding_is_strict() {
        assert_eq!(form_decode("a+b%20c").unwrap(), "a b c");
        assert_eq!(form_decode("%C3%A9").unwrap(), "é");
        assert!(matches!(form_decode("plain").unwrap(), Cow::Borrowed(_)));
        for bad in ["%", "%4", "%g0", "a%2", "%C3", "%ff+"] {
            assert!(form_decode(bad).is_err(), "{bad}");
        }
    }
}
