//! The OpenAPI 3.1 document of the HTTP/JSON API, generated on its first
//! request from the same descriptors and compiled [`Routes`] the transcoder serves,
//! so that it cannot drift from what the server does.
//!
//! What it describes is the JSON the transcoder sends and accepts:
//! - field names are the proto JSON names (lowerCamelCase); requests also
//!   accept the proto names, which are not documented;
//! - responses carry every field without presence (scalars, enums,
//!   repeated and map fields) even at its default, and omit unset message
//!   fields, oneof members and proto3 `optional` fields. That is exactly
//!   the set of fields for which `FieldDescriptor::supports_presence` is
//!   false, and what prost-reflect serializes with default fields kept. So
//!   response schemas mark those fields `required`, while request schemas
//!   mark only `(google.api.field_behavior) = REQUIRED` ones. A message
//!   used both ways therefore has two component schemas: `<full.name>` for
//!   responses and `<full.name>.Input` for requests;
//! - 64-bit integers are strings in responses, strings or numbers in
//!   requests; enums are their value names; well-known types have their
//!   canonical JSON forms;
//! - every error is a `google.rpc.Status` as JSON (`default` response).
//!
//! Path variables that span several segments (`{name=organizations/*}`)
//! are expanded into their literal segments with one parameter per `*`
//! (`/v1/organizations/{organization}`): an OpenAPI path parameter cannot
//! hold a `/`, and clients percent-encode one if it is in a value.
//!
//! Built as `serde_json` values rather than on utoipa's model: the schemas
//! need JSON Schema keywords next to `$ref` (`readOnly`, `description`,
//! `deprecated`), type arrays, `contentEncoding` and free-form schemas,
//! and utoipa's `Ref` carries only `description` and `summary`. The
//! document is built once, and its maps are ordered (`BTreeMap`, and the
//! entries inserted in sorted order), so two runs give the same bytes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, OnceLock},
};

use bytes::Bytes;

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, EnumDescriptor, ExtensionDescriptor, FieldDescriptor, Kind,
    MessageDescriptor, MethodDescriptor, Value as Reflected,
};
use serde_json::{Map, Value, json};
use tollgate::google::api::{HttpRule, http_rule::Pattern};

use super::{
    routes::{BodyRule, HTTP_EXTENSION, Route, Routes},
    template::Segment,
};
use crate::{
    domain::names,
    policy::{MethodPolicy, POLICY_EXTENSION},
};

/// The version of the specification the document follows.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// Where the document is served on the main listener.
pub const PATH: &str = "/openapi.json";

/// The full name of the field annotation read for `required`/`readOnly`.
pub const FIELD_BEHAVIOR_EXTENSION: &str = "google.api.field_behavior";

/// The error message every failed call answers with.
const STATUS: &str = "google.rpc.Status";

/// How deep query parameters are flattened through message fields
/// (`a.b.c`); deeper fields can only be set in a body.
const MAX_QUERY_DEPTH: usize = 3;

/// The default `info.description`.
const DESCRIPTION: &str = "Tollgate's HTTP/JSON API: the gRPC services of package `tollgate.v1`, \
transcoded per their `google.api.http` annotations. Send credentials as \
`authorization: Bearer <API key or access token>` or `x-api-key: <API key>`. \
Errors are `google.rpc.Status` as JSON, with the HTTP status of the gRPC code.";

/// The document's `info` and `servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiInfo {
    /// `info.title`.
    pub title: String,
    /// `info.version`: the server's version.
    pub version: String,
    /// `info.description` (CommonMark).
    pub description: String,
    /// The base URL clients should call; `None` leaves `servers` out, which
    /// means the host that served the document.
    pub server_url: Option<String>,
}

impl Default for ApiInfo {
    /// Tollgate at this crate's version, served from wherever the document
    /// was fetched.
    fn default() -> Self {
        Self {
            title: "Tollgate".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: DESCRIPTION.to_owned(),
            server_url: None,
        }
    }
}

/// The document served at [`PATH`], made on its first request and kept:
/// building it walks every message and field, about a tenth of a restart,
/// for a document most replicas are never asked for.
#[derive(Clone)]
pub struct Served {
    document: Arc<OnceLock<Bytes>>,
    pool: DescriptorPool,
    transcoder: Arc<crate::http::transcode::Transcoder>,
}

impl Served {
    /// The document of what `transcoder` serves, from `pool`.
    pub fn new(pool: DescriptorPool, transcoder: Arc<crate::http::transcode::Transcoder>) -> Self {
        Self {
            document: Arc::default(),
            pool,
            transcoder,
        }
    }

    /// The document as JSON, generated now if it was not yet.
    pub fn json(&self) -> Bytes {
        self.document
            .get_or_init(|| {
                let info = ApiInfo::default();
                Bytes::from(document(&self.pool, self.transcoder.table(), &info).to_string())
            })
            .clone()
    }
}

/// Generates the OpenAPI 3.1 document of `routes`, whose methods and
/// messages come from `pool`.
///
/// Infallible by design: it reads only what [`Routes::compile`] has
/// already checked, and an option it cannot decode (a policy, a field
/// behavior) is documented as absent rather than stopping the server.
pub fn document(pool: &DescriptorPool, routes: &Routes, info: &ApiInfo) -> Value {
    let mut generator = Generator::new(pool);
    let mut paths: BTreeMap<String, BTreeMap<&'static str, Value>> = BTreeMap::new();
    let mut tags = BTreeMap::new();

    // Bindings of one method, in the order the annotation lists them, so
    // the first keeps the plain operationId.
    let mut by_method: BTreeMap<String, Vec<&Route>> = BTreeMap::new();
    for route in routes.iter() {
        by_method
            .entry(route.method.full_name().to_owned())
            .or_default()
            .push(route);
    }
    for list in by_method.values_mut() {
        let order = generator.binding_order(&list[0].method);
        list.sort_by_key(|r| {
            let key = (r.verb.as_str().to_owned(), r.template.as_str().to_owned());
            (
                order.iter().position(|b| *b == key).unwrap_or(usize::MAX),
                key,
            )
        });
    }

    for list in by_method.values() {
        for (index, route) in list.iter().enumerate() {
            let Some(verb) = operation_key(&route.verb) else {
                // OpenAPI has no field for other methods (a `custom` kind
                // such as LIST): they are served but cannot be described.
                continue;
            };
            let service = route.method.parent_service();
            tags.entry(service.name().to_owned()).or_insert_with(|| {
                generator
                    .comments
                    .get(service.parent_file().name(), service.path())
            });
            let (path, operation) = generator.operation(route, index);
            paths.entry(path).or_default().insert(verb, operation);
        }
    }
    let status = generator.status_schema();
    generator.schemas.insert(STATUS.to_owned(), status);
    generator.drain();

    let mut doc = Map::new();
    doc.insert("openapi".into(), json!(OPENAPI_VERSION));
    let mut info_obj = Map::new();
    info_obj.insert("title".into(), json!(info.title));
    info_obj.insert("version".into(), json!(info.version));
    if !info.description.is_empty() {
        info_obj.insert("description".into(), json!(info.description));
    }
    doc.insert("info".into(), Value::Object(info_obj));
    if let Some(url) = &info.server_url {
        doc.insert("servers".into(), json!([{ "url": url }]));
    }
    doc.insert(
        "tags".into(),
        Value::Array(
            tags.into_iter()
                .map(|(name, description)| {
                    let mut tag = Map::new();
                    tag.insert("name".into(), json!(name));
                    if let Some(d) = description {
                        tag.insert("description".into(), json!(d));
                    }
                    Value::Object(tag)
                })
                .collect(),
        ),
    );
    doc.insert(
        "security".into(),
        json!([{ "bearer": [] }, { "apiKey": [] }]),
    );
    doc.insert(
        "paths".into(),
        Value::Object(
            paths
                .into_iter()
                .map(|(path, ops)| {
                    let ops: Map<String, Value> =
                        ops.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                    (path, Value::Object(ops))
                })
                .collect(),
        ),
    );
    doc.insert(
        "components".into(),
        json!({
            "schemas": Value::Object(generator.schemas.into_iter().collect()),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`tg_…`) or an access token (a JWT) as \
                                    `authorization: Bearer <credential>`.",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "An API key (`tg_…`).",
                },
            },
        }),
    );
    Value::Object(doc)
}

/// The operation field of an HTTP method in a path item, if it has one.
fn operation_key(verb: &Method) -> Option<&'static str> {
    Some(match *verb {
        Method::GET => "get",
        Method::PUT => "put",
        Method::POST => "post",
        Method::DELETE => "delete",
        Method::PATCH => "patch",
        Method::HEAD => "head",
        Method::OPTIONS => "options",
        Method::TRACE => "trace",
        _ => return None,
    })
}

/// Which side of the wire a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// What clients send: `required` from field behavior only.
    Request,
    /// What the server sends: `required` for fields without presence.
    Response,
}

/// The `google.api.field_behavior` values the document reflects.
#[derive(Debug, Default, Clone, Copy)]
struct Behavior {
    required: bool,
    output_only: bool,
    input_only: bool,
    immutable: bool,
    identifier: bool,
}

/// A component still to be written.
enum Pending {
    Message(MessageDescriptor, Dir),
    Enum(EnumDescriptor),
}

/// Builds the document; holds the component schemas referenced so far.
struct Generator<'a> {
    pool: &'a DescriptorPool,
    comments: Comments,
    field_behavior: Option<ExtensionDescriptor>,
    policy: Option<ExtensionDescriptor>,
    http: Option<ExtensionDescriptor>,
    schemas: BTreeMap<String, Value>,
    /// Names already queued or written, so each is generated once and
    /// recursive messages end at a `$ref`.
    queued: BTreeSet<String>,
    queue: Vec<Pending>,
}

impl<'a> Generator<'a> {
    fn new(pool: &'a DescriptorPool) -> Self {
        Self {
            pool,
            comments: Comments::new(pool),
            field_behavior: pool.get_extension_by_name(FIELD_BEHAVIOR_EXTENSION),
            policy: pool.get_extension_by_name(POLICY_EXTENSION),
            http: pool.get_extension_by_name(HTTP_EXTENSION),
            schemas: BTreeMap::new(),
            queued: BTreeSet::new(),
            queue: Vec::new(),
        }
    }

    /// The `(verb, template)` of each binding of `method`, in the order
    /// the annotation lists them (the rule, then `additional_bindings`).
    fn binding_order(&self, method: &MethodDescriptor) -> Vec<(String, String)> {
        let Some(rule) = self
            .http
            .as_ref()
            .and_then(|ext| extension_message::<HttpRule>(&method.options(), ext))
        else {
            return Vec::new();
        };
        std::iter::once(&rule)
            .chain(rule.additional_bindings.iter())
            .filter_map(|r| {
                Some(match r.pattern.as_ref()? {
                    Pattern::Get(p) => ("GET".to_owned(), p.clone()),
                    Pattern::Put(p) => ("PUT".to_owned(), p.clone()),
                    Pattern::Post(p) => ("POST".to_owned(), p.clone()),
                    Pattern::Delete(p) => ("DELETE".to_owned(), p.clone()),
                    Pattern::Patch(p) => ("PATCH".to_owned(), p.clone()),
                    Pattern::Custom(c) => (c.kind.clone(), c.path.clone()),
                })
            })
            .collect()
    }

    /// The expanded path and the operation of one binding; `index` is the
    /// binding's position among its method's (0 for the main one).
    fn operation(&mut self, route: &Route, index: usize) -> (String, Value) {
        let method = &route.method;
        let service = method.parent_service();
        let mut op = Map::new();
        let mut operation_id = format!("{}_{}", service.name(), method.name());
        if index > 0 {
            operation_id.push_str(&format!("_{index}"));
        }
        op.insert("operationId".into(), json!(operation_id));
        op.insert("tags".into(), json!([service.name()]));

        let comment = self
            .comments
            .get(method.parent_file().name(), method.path());
        if let Some(summary) = comment.as_deref().and_then(summary) {
            op.insert("summary".into(), json!(summary));
        }
        let policy = self.policy(method);
        let mut description: Vec<String> = comment.into_iter().collect();
        if index > 0 {
            description.push(format!("An additional binding of `{}`.", method.name()));
        }
        description.push(format!(
            "gRPC: `/{}/{}`.",
            service.full_name(),
            method.name()
        ));
        match &policy {
            Some(p) if p.public => description.push("Public: no credential needed.".into()),
            Some(p) => description.push(format!(
                "Requires the `{}` permission; costs {} rate-limit token{}.",
                p.permission,
                p.cost,
                if p.cost == 1 { "" } else { "s" }
            )),
            None => {}
        }
        op.insert("description".into(), json!(description.join("\n\n")));
        if flag(&method.options(), "deprecated") {
            op.insert("deprecated".into(), json!(true));
        }
        if policy.is_some_and(|p| p.public) {
            op.insert("security".into(), json!([]));
        }

        let bound: Vec<Vec<String>> = route
            .bindings
            .iter()
            .map(|path| path.iter().map(|f| f.name().to_owned()).collect())
            .collect();
        let (path, mut parameters) = self.expand(route);
        self.query_parameters(route, &bound, &mut parameters);
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = self.request_body(route, &bound) {
            op.insert("requestBody".into(), body);
        }
        op.insert("responses".into(), self.responses(route));
        (path, Value::Object(op))
    }

    /// The OpenAPI path of a binding and its path parameters: every
    /// wildcard becomes one parameter, named after the collection segment
    /// before it (`organizations/*` → `{organization}`), or after the field
    /// when the variable is a lone wildcard (`{parent}`).
    fn expand(&self, route: &Route) -> (String, Vec<Value>) {
        let template = &route.template;
        let segments = &template.segments;
        let wildcard = |s: &Segment| !matches!(s, Segment::Literal(_));

        // Names first, for all wildcards, so descriptions can show a
        // variable's whole shape.
        let mut names: Vec<Option<String>> = vec![None; segments.len()];
        let mut owner: Vec<Option<usize>> = vec![None; segments.len()];
        let mut used = BTreeSet::new();
        for (v_index, v) in template.variables.iter().enumerate() {
            // `Routes::compile` resolves one field path per variable.
            let fields = route.bindings.get(v_index).map_or(&[][..], Vec::as_slice);
            let json_path = json_path(fields);
            let field = fields.last().map(|f| f.json_name()).unwrap_or("field");
            let lone = v.pattern.len() == 1 && wildcard(&v.pattern[0]);
            let mut nth = 0;
            for i in v.start..v.end.min(segments.len()) {
                owner[i] = Some(v_index);
                if !wildcard(&segments[i]) {
                    continue;
                }
                nth += 1;
                let fallback = format!("{field}_{nth}");
                let preferred = match i.checked_sub(1).map(|p| (p, &segments[p])) {
                    // `**` stands for the rest of the field, not one id.
                    _ if lone || segments[i] == Segment::Multi => json_path.clone(),
                    Some((p, Segment::Literal(l))) if p >= v.start => singular(l),
                    _ => fallback.clone(),
                };
                names[i] = Some(unique(&mut used, preferred, &fallback));
            }
        }
        for (i, s) in segments.iter().enumerate() {
            if wildcard(s) && names[i].is_none() {
                names[i] = Some(unique(
                    &mut used,
                    format!("segment{i}"),
                    &format!("segment{i}_"),
                ));
            }
        }

        let id_pattern = names::id_segment_pattern();
        let mut path = String::new();
        let mut params = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            path.push('/');
            let (Segment::Single | Segment::Multi, Some(name)) = (segment, &names[i]) else {
                if let Segment::Literal(l) = segment {
                    path.push_str(l);
                }
                continue;
            };
            let multi = matches!(segment, Segment::Multi);
            let after_literal = i > 0 && !wildcard(&segments[i - 1]);
            let (description, schema) = match owner[i] {
                Some(v_index) => {
                    let v = &template.variables[v_index];
                    let json_path =
                        json_path(route.bindings.get(v_index).map_or(&[][..], Vec::as_slice));
                    let shape: Vec<String> = (v.start..v.end.min(segments.len()))
                        .map(|k| match (&segments[k], &names[k]) {
                            (Segment::Literal(l), _) => l.clone(),
                            (_, Some(n)) => format!("{{{n}}}"),
                            (_, None) => "*".to_owned(),
                        })
                        .collect();
                    let shape = shape.join("/");
                    let lone = v.pattern.len() == 1;
                    let description = if multi {
                        format!(
                            "`{json_path}` from here on (`{shape}`): one or more segments; \
                             a `/` inside is sent percent-encoded."
                        )
                    } else if lone {
                        format!("`{json_path}`.")
                    } else {
                        format!("The `{{{name}}}` segment of `{json_path}`: `{shape}`.")
                    };
                    // A wildcard after a collection segment is a resource
                    // id, which the server parses with `names`.
                    let schema = if multi {
                        json!({ "type": "string" })
                    } else if after_literal && !lone && i > v.start {
                        json!({ "type": "string", "pattern": id_pattern })
                    } else {
                        json!({ "type": "string", "pattern": "^[^/]+$" })
                    };
                    (description, schema)
                }
                None => (
                    "Any segment: the server does not use it.".to_owned(),
                    if multi {
                        json!({ "type": "string" })
                    } else {
                        json!({ "type": "string", "pattern": "^[^/]+$" })
                    },
                ),
            };
            path.push('{');
            path.push_str(name);
            path.push('}');
            params.push(json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": description,
                "schema": schema,
            }));
        }
        if segments.is_empty() {
            path.push('/');
        }
        if let Some(verb) = &template.verb {
            path.push(':');
            path.push_str(verb);
        }
        (path, params)
    }

    /// Every field of the request that neither the path nor the body
    /// sets, flattened through singular message fields.
    fn query_parameters(&mut self, route: &Route, bound: &[Vec<String>], out: &mut Vec<Value>) {
        let body = match &route.body {
            BodyRule::Whole => return,
            BodyRule::Field(f) => Some(f.name().to_owned()),
            BodyRule::None => None,
        };
        let input = route.method.input();
        let mut visiting = vec![input.full_name().to_owned()];
        self.flatten(
            &input,
            &Prefix::default(),
            bound,
            body.as_deref(),
            &mut visiting,
            out,
        );
    }

    fn flatten(
        &mut self,
        message: &MessageDescriptor,
        prefix: &Prefix,
        bound: &[Vec<String>],
        body: Option<&str>,
        visiting: &mut Vec<String>,
        out: &mut Vec<Value>,
    ) {
        for field in message.fields() {
            let here = prefix.with(&field);
            if bound.contains(&here.proto)
                || (prefix.proto.is_empty() && body == Some(field.name()))
            {
                continue;
            }
            let behavior = self.behavior(&field);
            // The server ignores output-only fields on input; maps have no
            // query-string form.
            if behavior.output_only || field.is_map() {
                continue;
            }
            let required = prefix.required && behavior.required;
            if let Kind::Message(sub) = field.kind() {
                if !is_well_known(&sub) {
                    if field.is_list()
                        || here.proto.len() >= MAX_QUERY_DEPTH
                        || visiting.iter().any(|m| m == sub.full_name())
                    {
                        continue;
                    }
                    visiting.push(sub.full_name().to_owned());
                    let next = Prefix { required, ..here };
                    self.flatten(&sub, &next, bound, body, visiting, out);
                    visiting.pop();
                    continue;
                }
                if !query_well_known(&sub) {
                    continue;
                }
            }
            let item = self.kind_schema(&field.kind(), Dir::Request);
            let mut param = Map::new();
            param.insert("name".into(), json!(here.json.join(".")));
            param.insert("in".into(), json!("query"));
            if let Some(d) = self.field_description(&field, behavior) {
                param.insert("description".into(), json!(d));
            }
            if required {
                param.insert("required".into(), json!(true));
            }
            if flag(&field.options(), "deprecated") {
                param.insert("deprecated".into(), json!(true));
            }
            if field.is_list() {
                param.insert("style".into(), json!("form"));
                param.insert("explode".into(), json!(true));
                param.insert("schema".into(), json!({ "type": "array", "items": item }));
            } else {
                param.insert("schema".into(), item);
            }
            out.push(Value::Object(param));
        }
    }

    /// The request body of a binding, if it takes one.
    fn request_body(&mut self, route: &Route, bound: &[Vec<String>]) -> Option<Value> {
        let input = route.method.input();
        let (schema, required, description) = match &route.body {
            BodyRule::None => return None,
            BodyRule::Whole => {
                let required = input.fields().any(|f| {
                    !bound.contains(&vec![f.name().to_owned()]) && self.behavior(&f).required
                });
                let description = if bound.is_empty() {
                    format!("The whole `{}`.", input.name())
                } else {
                    format!(
                        "`{}` without the fields the path sets ({}).",
                        input.name(),
                        json_names(&route.bindings)
                    )
                };
                (
                    self.message_without(&input, Dir::Request, bound),
                    required,
                    description,
                )
            }
            BodyRule::Field(field) => {
                let below: Vec<Vec<String>> = bound
                    .iter()
                    .filter(|p| p.len() > 1 && p[0] == field.name())
                    .map(|p| p[1..].to_vec())
                    .collect();
                let behavior = self.behavior(field);
                let schema = self.field_schema(field, Dir::Request, &below);
                let mut description = format!("The request's `{}` field.", field.json_name());
                if !below.is_empty() {
                    description.push_str(&format!(
                        " The path sets {}, so the body leaves it out.",
                        json_names(&route.bindings)
                    ));
                }
                (schema, behavior.required, description)
            }
        };
        let mut body = Map::new();
        body.insert("description".into(), json!(description));
        body.insert(
            "content".into(),
            json!({ "application/json": { "schema": schema } }),
        );
        if required {
            body.insert("required".into(), json!(true));
        }
        Some(Value::Object(body))
    }

    /// `200` with the response (or its `response_body` field) and
    /// `default` with the error.
    fn responses(&mut self, route: &Route) -> Value {
        let output = route.method.output();
        let schema = match &route.response_body {
            Some(field) => self.field_schema(field, Dir::Response, &[]),
            None => self.message_schema_or_ref(&output, Dir::Response),
        };
        let status = json!({ "$ref": format!("#/components/schemas/{STATUS}") });
        let ok = if route.server_streaming() {
            json!({
                "description": format!(
                    "A stream of `{}`: one JSON object per line, `{{\"result\": …}}` for each \
                     message, or a last `{{\"error\": …}}` when the stream fails.",
                    output.name()
                ),
                "content": {
                    "application/x-ndjson": {
                        "schema": {
                            "type": "object",
                            "properties": { "result": schema, "error": status },
                            "oneOf": [
                                { "required": ["result"] },
                                { "required": ["error"] },
                            ],
                        },
                    },
                },
            })
        } else {
            json!({
                "description": format!("The `{}`.", match &route.response_body {
                    Some(field) => format!("{}` field of `{}", field.json_name(), output.name()),
                    None => output.name().to_owned(),
                }),
                "content": { "application/json": { "schema": schema } },
            })
        };
        json!({
            "200": ok,
            "default": {
                "description": "An error: the gRPC status as JSON. The HTTP status follows \
                                the gRPC code (INVALID_ARGUMENT 400, UNAUTHENTICATED 401, \
                                PERMISSION_DENIED 403, NOT_FOUND 404, ABORTED and \
                                ALREADY_EXISTS 409, RESOURCE_EXHAUSTED 429, …).",
                "content": { "application/json": { "schema": status } },
            },
        })
    }

    /// The `google.rpc.Status` component: from the descriptors when the
    /// pool has them (the transcoder encodes errors with the same mapping
    /// as responses), else written out.
    fn status_schema(&mut self) -> Value {
        let mut schema = match self.pool.get_message_by_name(STATUS) {
            Some(status) => self.message_schema(&status, Dir::Response, &[]),
            None => json!({
                "type": "object",
                "properties": {
                    "code": { "type": "integer", "format": "int32" },
                    "message": { "type": "string" },
                    "details": {
                        "type": "array",
                        "items": any_schema(),
                    },
                },
                "required": ["code", "message", "details"],
            }),
        };
        if let Value::Object(map) = &mut schema {
            map.insert(
                "description".into(),
                json!(
                    "An error: `code` is the gRPC status code (a `google.rpc.Code` number), \
                     `message` says what went wrong, and `details` carries `google.rpc` \
                     detail messages (BadRequest, ErrorInfo, RetryInfo, …), each with its \
                     `@type`."
                ),
            );
        }
        schema
    }

    /// Writes out every queued component.
    fn drain(&mut self) {
        while let Some(pending) = self.queue.pop() {
            match pending {
                Pending::Message(m, dir) => {
                    let schema = self.message_schema(&m, dir, &[]);
                    self.schemas
                        .insert(component_name(self.pool, &m, dir), schema);
                }
                Pending::Enum(e) => {
                    let schema = self.enum_schema(&e);
                    self.schemas.insert(e.full_name().to_owned(), schema);
                }
            }
        }
    }

    /// A message's schema at a use site: inline when it is a well-known
    /// type, a `$ref` to its component otherwise.
    fn message_schema_or_ref(&mut self, message: &MessageDescriptor, dir: Dir) -> Value {
        if let Some(schema) = well_known(message, dir) {
            return schema;
        }
        let name = component_name(self.pool, message, dir);
        if self.queued.insert(name.clone()) {
            self.queue.push(Pending::Message(message.clone(), dir));
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// Like [`Self::message_schema_or_ref`], but inline and without the
    /// `excluded` field paths when there are any.
    fn message_without(
        &mut self,
        message: &MessageDescriptor,
        dir: Dir,
        excluded: &[Vec<String>],
    ) -> Value {
        if excluded.is_empty() {
            self.message_schema_or_ref(message, dir)
        } else {
            self.message_schema(message, dir, excluded)
        }
    }

    /// The object schema of a message, without the `excluded` field paths
    /// (proto names, relative to `message`).
    fn message_schema(
        &mut self,
        message: &MessageDescriptor,
        dir: Dir,
        excluded: &[Vec<String>],
    ) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in message.fields() {
            let below: Vec<Vec<String>> = excluded
                .iter()
                .filter(|p| p.first().map(String::as_str) == Some(field.name()))
                .map(|p| p[1..].to_vec())
                .collect();
            if below.iter().any(Vec::is_empty) {
                continue;
            }
            let behavior = self.behavior(&field);
            let is_required = match dir {
                Dir::Request => behavior.required,
                Dir::Response => !field.supports_presence(),
            };
            if is_required {
                required.push(json!(field.json_name()));
            }
            let schema = self.field_schema(&field, dir, &below);
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = Map::new();
        schema.insert("type".into(), json!("object"));
        let mut description: Vec<String> = self
            .comments
            .get(message.parent_file().name(), message.path())
            .into_iter()
            .collect();
        for oneof in message.oneofs().filter(|o| !o.is_synthetic()) {
            let members: Vec<String> = oneof
                .fields()
                .filter(|f| properties.contains_key(f.json_name()))
                .map(|f| format!("`{}`", f.json_name()))
                .collect();
            if members.len() > 1 {
                description.push(format!("At most one of {} is set.", members.join(", ")));
            }
        }
        if !description.is_empty() {
            schema.insert("description".into(), json!(description.join("\n\n")));
        }
        schema.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            schema.insert("required".into(), Value::Array(required));
        }
        Value::Object(schema)
    }

    /// A field's schema with its description and behavior annotations;
    /// `excluded` removes nested fields (paths below this field).
    fn field_schema(
        &mut self,
        field: &FieldDescriptor,
        dir: Dir,
        excluded: &[Vec<String>],
    ) -> Value {
        let kind = field.kind();
        let mut schema = if field.is_map() {
            let value = match &kind {
                Kind::Message(entry) => {
                    let value = entry.map_entry_value_field();
                    self.kind_schema(&value.kind(), dir)
                }
                other => self.kind_schema(other, dir),
            };
            json!({ "type": "object", "additionalProperties": value })
        } else if field.is_list() {
            json!({ "type": "array", "items": self.kind_schema(&kind, dir) })
        } else {
            match &kind {
                Kind::Message(m) if !excluded.is_empty() => self.message_without(m, dir, excluded),
                other => self.kind_schema(other, dir),
            }
        };
        let behavior = self.behavior(field);
        if let Value::Object(map) = &mut schema {
            if let Some(d) = self.field_description(field, behavior) {
                let text = match map.get("description").and_then(Value::as_str) {
                    Some(own) => format!("{d}\n\n{own}"),
                    None => d,
                };
                map.insert("description".into(), json!(text));
            }
            if behavior.output_only {
                map.insert("readOnly".into(), json!(true));
            }
            if behavior.input_only {
                map.insert("writeOnly".into(), json!(true));
            }
            if flag(&field.options(), "deprecated") {
                map.insert("deprecated".into(), json!(true));
            }
        }
        schema
    }

    /// A field's comment, with what its behavior adds for a reader.
    fn field_description(&self, field: &FieldDescriptor, behavior: Behavior) -> Option<String> {
        let mut parts: Vec<String> = self
            .comments
            .get(field.parent_file().name(), field.path())
            .into_iter()
            .collect();
        if behavior.identifier && parts.is_empty() {
            parts.push("The resource name.".into());
        }
        if behavior.immutable {
            parts.push("Immutable: set on creation only.".into());
        }
        if behavior.output_only {
            parts.push("Output only.".into());
        }
        if behavior.input_only {
            parts.push("Input only: never in a response.".into());
        }
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    /// The schema of one value of `kind`.
    fn kind_schema(&mut self, kind: &Kind, dir: Dir) -> Value {
        match kind {
            Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => {
                json!({ "type": "null" })
            }
            Kind::Enum(e) => {
                let name = e.full_name().to_owned();
                if self.queued.insert(name.clone()) {
                    self.queue.push(Pending::Enum(e.clone()));
                }
                json!({ "$ref": format!("#/components/schemas/{name}") })
            }
            Kind::Message(m) => self.message_schema_or_ref(m, dir),
            scalar => scalar_schema(scalar, dir),
        }
    }

    /// An enum's component: its value names, each value's comment in the
    /// description.
    fn enum_schema(&self, e: &EnumDescriptor) -> Value {
        let file = e.parent_file();
        let mut description: Vec<String> = self
            .comments
            .get(file.name(), e.path())
            .into_iter()
            .collect();
        let values: Vec<String> = e
            .values()
            .map(|v| match self.comments.get(file.name(), v.path()) {
                Some(c) => format!("- `{}`: {}", v.name(), c.replace('\n', " ")),
                None => format!("- `{}`", v.name()),
            })
            .collect();
        description.push(values.join("\n"));
        json!({
            "type": "string",
            "enum": e.values().map(|v| v.name().to_owned()).collect::<Vec<_>>(),
            "description": description.join("\n\n"),
        })
    }

    /// The `google.api.field_behavior` values of `field`.
    fn behavior(&self, field: &FieldDescriptor) -> Behavior {
        let mut b = Behavior::default();
        let Some(ext) = &self.field_behavior else {
            return b;
        };
        let options = field.options();
        if !options.has_extension(ext) {
            return b;
        }
        let Kind::Enum(values) = ext.kind() else {
            return b;
        };
        let value = options.get_extension(ext);
        let Reflected::List(list) = value.as_ref() else {
            return b;
        };
        for item in list {
            let Reflected::EnumNumber(n) = item else {
                continue;
            };
            match values.get_value(*n).as_ref().map(|v| v.name()) {
                Some("REQUIRED") => b.required = true,
                Some("OUTPUT_ONLY") => b.output_only = true,
                Some("INPUT_ONLY") => b.input_only = true,
                Some("IMMUTABLE") => b.immutable = true,
                Some("IDENTIFIER") => b.identifier = true,
                _ => {}
            }
        }
        b
    }

    /// The `(tollgate.v1.policy)` of `method`, if it declares one.
    fn policy(&self, method: &MethodDescriptor) -> Option<MethodPolicy> {
        extension_message(&method.options(), self.policy.as_ref()?)
    }
}

/// A field path being flattened into query parameters.
#[derive(Debug, Clone)]
struct Prefix {
    proto: Vec<String>,
    json: Vec<String>,
    /// Whether every field on the way is REQUIRED.
    required: bool,
}

impl Default for Prefix {
    fn default() -> Self {
        Self {
            proto: Vec::new(),
            json: Vec::new(),
            required: true,
        }
    }
}

impl Prefix {
    fn with(&self, field: &FieldDescriptor) -> Prefix {
        let mut next = self.clone();
        next.proto.push(field.name().to_owned());
        next.json.push(field.json_name().to_owned());
        next
    }
}

/// The component name of a message on one side: requests get their own
/// (`.Input`), because `required` differs. Should a nested message of that
/// name exist, a `-Input` suffix (not a proto identifier) keeps them apart.
fn component_name(pool: &DescriptorPool, message: &MessageDescriptor, dir: Dir) -> String {
    match dir {
        Dir::Response => message.full_name().to_owned(),
        Dir::Request => {
            let name = format!("{}.Input", message.full_name());
            if pool.get_message_by_name(&name).is_some() || pool.get_enum_by_name(&name).is_some() {
                format!("{}-Input", message.full_name())
            } else {
                name
            }
        }
    }
}

/// 64-bit integers: decimal strings in responses (proto3 JSON), strings or
/// numbers in requests.
fn int64(dir: Dir, format: &str, pattern: &str) -> Value {
    let ty = match dir {
        Dir::Response => json!("string"),
        Dir::Request => json!(["string", "integer"]),
    };
    json!({ "type": ty, "format": format, "pattern": pattern })
}

fn is_well_known(message: &MessageDescriptor) -> bool {
    message.package_name() == "google.protobuf"
}

/// Well-known types that have a query-string form (a scalar's).
fn query_well_known(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

fn any_schema() -> Value {
    json!({
        "type": "object",
        "description": "Any message, with its type URL in `@type` \
                        (`type.googleapis.com/<full.name>`) and its fields beside it, \
                        or a well-known type's JSON in `value`.",
        "properties": { "@type": { "type": "string" } },
        "required": ["@type"],
        "additionalProperties": true,
    })
}

/// The JSON form of a well-known type, which is not that of a message.
fn well_known(message: &MessageDescriptor, dir: Dir) -> Option<Value> {
    if !is_well_known(message) {
        return None;
    }
    Some(match message.name() {
        "Timestamp" => json!({
            "type": "string",
            "format": "date-time",
            "description": "An RFC 3339 time in UTC, e.g. `2026-01-01T00:00:00Z`.",
        }),
        "Duration" => json!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]+)?s$",
            "description": "Seconds with up to nine fractional digits and the suffix `s`, \
                            e.g. `1.5s`.",
        }),
        "FieldMask" => json!({
            "type": "string",
            "description": "Field paths (JSON names) separated by commas, e.g. \
                            `displayName,state`.",
        }),
        "Struct" => json!({ "type": "object", "additionalProperties": true }),
        "Value" => json!({ "description": "Any JSON value." }),
        "ListValue" => json!({ "type": "array", "items": {} }),
        // The server sends `{}`; clients may send anything an empty message
        // ignores.
        "Empty" => match dir {
            Dir::Response => json!({ "type": "object", "additionalProperties": false }),
            Dir::Request => json!({ "type": "object" }),
        },
        "Any" => any_schema(),
        "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value"
        | "UInt32Value" | "BoolValue" | "StringValue" | "BytesValue" => {
            // A wrapper is its value; unset is omitted, so no null.
            let value = message.get_field_by_name("value")?;
            return Some(scalar_schema(&value.kind(), dir));
        }
        _ => return None,
    })
}

/// The schema of a scalar kind (one that needs no component).
fn scalar_schema(kind: &Kind, dir: Dir) -> Value {
    match kind {
        Kind::Double => json!({ "type": "number", "format": "double" }),
        Kind::Float => json!({ "type": "number", "format": "float" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => json!({
            "type": "integer",
            "format": "int32",
            "minimum": i32::MIN,
            "maximum": i32::MAX,
        }),
        Kind::Uint32 | Kind::Fixed32 => json!({
            "type": "integer",
            "format": "uint32",
            "minimum": 0,
            "maximum": u32::MAX,
        }),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => int64(dir, "int64", "^-?[0-9]+$"),
        Kind::Uint64 | Kind::Fixed64 => int64(dir, "uint64", "^[0-9]+$"),
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        // Enums and messages have schemas of their own (see
        // `Generator::kind_schema`); wrappers never hold one.
        Kind::String | Kind::Enum(_) | Kind::Message(_) => json!({ "type": "string" }),
    }
}

/// A boolean field of an options message (`deprecated`).
fn flag(options: &DynamicMessage, name: &str) -> bool {
    options
        .get_field_by_name(name)
        .is_some_and(|v| v.as_bool() == Some(true))
}

/// An extension on an options message, decoded as `T`.
fn extension_message<T: prost::Message + Default>(
    options: &DynamicMessage,
    ext: &ExtensionDescriptor,
) -> Option<T> {
    if !options.has_extension(ext) {
        return None;
    }
    match options.get_extension(ext).as_ref() {
        Reflected::Message(m) => m.transcode_to().ok(),
        _ => None,
    }
}

/// `organizations` → `organization`, `rateLimitPolicies` →
/// `rateLimitPolicy`: the name of one element of a collection.
fn singular(collection: &str) -> String {
    if let Some(stem) = collection.strip_suffix("ies")
        && !stem.is_empty()
    {
        format!("{stem}y")
    } else if let Some(stem) = collection.strip_suffix('s')
        && !stem.is_empty()
        && !stem.ends_with('s')
    {
        stem.to_owned()
    } else {
        collection.to_owned()
    }
}

/// `preferred`, or `fallback` (then with a number) when taken.
fn unique(used: &mut BTreeSet<String>, preferred: String, fallback: &str) -> String {
    let mut name = preferred;
    let mut n = 1;
    while used.contains(&name) {
        name = if n == 1 {
            fallback.to_owned()
        } else {
            format!("{fallback}{n}")
        };
        n += 1;
    }
    used.insert(name.clone());
    name
}

/// A bound field path as JSON names: `organization.name`.
fn json_path(fields: &[FieldDescriptor]) -> String {
    fields
        .iter()
        .map(FieldDescriptor::json_name)
        .collect::<Vec<_>>()
        .join(".")
}

/// The JSON names of bound field paths, for descriptions.
fn json_names(bindings: &[Vec<FieldDescriptor>]) -> String {
    bindings
        .iter()
        .map(|path| format!("`{}`", json_path(path)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first sentence of a comment, for an operation's summary.
fn summary(comment: &str) -> Option<String> {
    let first = comment.split("\n\n").next()?.replace('\n', " ");
    let end = first
        .match_indices(". ")
        .next()
        .map(|(i, _)| i + 1)
        .unwrap_or(first.len());
    let s = first[..end].trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// The comments of every descriptor in the pool (`protoc
/// --include_source_info`, which prost-build asks for), by file and
/// source path.
struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    /// From the pool's own source info, or, for the files the server's
    /// pool keeps without it (see [`super::source_info`]), from the full
    /// set they come from, decoded here once for the document.
    fn new(pool: &DescriptorPool) -> Self {
        use prost::Message as _;
        let full = prost_types::FileDescriptorSet::decode(tollgate::FILE_DESCRIPTOR_SET)
            .map(|set| set.file)
            .unwrap_or_default();
        let full: HashMap<&str, &prost_types::SourceCodeInfo> = full
            .iter()
            .filter_map(|f| Some((f.name(), f.source_code_info.as_ref()?)))
            .collect();
        let mut map = HashMap::new();
        for file in pool.files() {
            let own = file.file_descriptor_proto().source_code_info.as_ref();
            let Some(info) = own.or_else(|| full.get(file.name()).copied()) else {
                continue;
            };
            for location in &info.location {
                let text = [&location.leading_comments, &location.trailing_comments]
                    .into_iter()
                    .flatten()
                    .find_map(|c| clean_comment(c));
                if let Some(text) = text {
                    map.entry((file.name().to_owned(), location.path.clone()))
                        .or_insert(text);
                }
            }
        }
        Self(map)
    }

    fn get(&self, file: &str, path: &[i32]) -> Option<String> {
        self.0.get(&(file.to_owned(), path.to_vec())).cloned()
    }
}

/// A comment as text: the space after `//` removed, blank edges trimmed,
/// and `[text][target]` cross-references reduced to `text`.
fn clean_comment(raw: &str) -> Option<String> {
    let lines: Vec<&str> = raw
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect();
    let text = lines.join("\n");
    let text = text.trim_matches('\n');
    if text.trim().is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let reference = after.find("][").and_then(|mid| {
            let target = &after[mid + 2..];
            let close = target.find(']')?;
            let label = &after[..mid];
            (!label.contains(['[', ']']) && !target[..close].contains('['))
                .then(|| (label, mid + 2 + close + 1))
        });
        match reference {
            Some((label, consumed)) => {
                out.push_str(&rest[..open]);
                out.push_str(label);
                rest = &after[consumed..];
            }
            None => {
                out.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn compile(pool: &DescriptorPool) -> Routes {
        let services: Vec<_> = pool
            .services()
            .filter(|s| s.package_name() == "tollgate.v1")
            .collect();
        Routes::compile(pool, &services).unwrap()
    }

    fn ours() -> DescriptorPool {
        DescriptorPool::decode(tollgate::FILE_DESCRIPTOR_SET).unwrap()
    }

    fn doc_of(pool: &DescriptorPool) -> Value {
        document(pool, &compile(pool), &ApiInfo::default())
    }

    fn doc() -> Value {
        doc_of(&ours())
    }

    /// The embedded descriptor set with method `method`'s extensions set
    /// to the encoded messages in `edits`, edited as dynamic messages:
    /// prost's descriptor types would drop custom options on re-encoding.
    fn with_options(method: &str, edits: &[(&str, Vec<u8>)]) -> DescriptorPool {
        let pool = ours();
        let fds_desc = pool
            .get_message_by_name("google.protobuf.FileDescriptorSet")
            .unwrap();
        let mut fds = DynamicMessage::decode(fds_desc, tollgate::FILE_DESCRIPTOR_SET).unwrap();
        let take = |m: &mut DynamicMessage, f: &str| match m.get_field_by_name_mut(f) {
            Some(Reflected::List(l)) => std::mem::take(l),
            _ => Vec::new(),
        };
        let mut edited = 0;
        let mut files = take(&mut fds, "file");
        for file in &mut files {
            let Reflected::Message(file) = file else {
                continue;
            };
            let mut services = take(file, "service");
            for svc in &mut services {
                let Reflected::Message(svc) = svc else {
                    continue;
                };
                let mut methods = take(svc, "method");
                for m in &mut methods {
                    let Reflected::Message(m) = m else { continue };
                    let name = m
                        .get_field_by_name("name")
                        .and_then(|v| v.as_str().map(str::to_owned));
                    if name.as_deref() != Some(method) {
                        continue;
                    }
                    let Some(Reflected::Message(options)) = m.get_field_by_name_mut("options")
                    else {
                        continue;
                    };
                    for (ext, bytes) in edits {
                        let ext = pool.get_extension_by_name(ext).unwrap();
                        let value = DynamicMessage::decode(
                            ext.kind().as_message().unwrap().clone(),
                            bytes.as_slice(),
                        )
                        .unwrap();
                        options.set_extension(&ext, Reflected::Message(value));
                    }
                    edited += 1;
                }
                svc.set_field_by_name("method", Reflected::List(methods));
            }
            file.set_field_by_name("service", Reflected::List(services));
        }
        fds.set_field_by_name("file", Reflected::List(files));
        assert_eq!(edited, 1, "{method}");
        DescriptorPool::decode(fds.encode_to_vec().as_slice()).unwrap()
    }

    fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (verb, op) in item.as_object().unwrap() {
                out.push((path.as_str(), verb.as_str(), op));
            }
        }
        out
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .map(|l| l.iter().map(|p| p["name"].as_str().unwrap()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_route_is_an_operation_with_a_unique_id() {
        let pool = ours();
        let routes = compile(&pool);
        let doc = doc_of(&pool);
        let ops = operations(&doc);
        assert_eq!(ops.len(), routes.iter().count());
        let mut ids = BTreeSet::new();
        for (path, verb, op) in &ops {
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id), "operationId {id} twice");
            assert!(op["responses"]["200"].is_object(), "{verb} {path}");
            assert!(op["responses"]["default"].is_object(), "{verb} {path}");
        }
        for route in routes.iter() {
            let service = route.method.parent_service();
            let id = format!("{}_{}", service.name(), route.method.name());
            let verb = route.verb.as_str().to_ascii_lowercase();
            assert!(
                ops.iter()
                    .any(|(_, v, op)| *v == verb
                        && op["operationId"].as_str().unwrap().starts_with(&id)),
                "{verb} {} has no operation",
                route.template
            );
        }
        // The first binding keeps the plain id; additional ones count up.
        let revoke = &doc["paths"]["/v1/organizations/{organization}/users/{user}/apiKeys/{apiKey}:revoke"]
            ["post"];
        assert_eq!(revoke["operationId"], "ApiKeyService_RevokeApiKey_1");
        let revoke = &doc["paths"]["/v1/organizations/{organization}/serviceAccounts/{serviceAccount}/apiKeys/{apiKey}:revoke"]
            ["post"];
        assert_eq!(revoke["operationId"], "ApiKeyService_RevokeApiKey");
    }

    #[test]
    fn get_user_in_full() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let op = &doc["paths"]["/v1/organizations/{organization}/users/{user}"]["get"];
        assert_eq!(op["operationId"], "UserService_GetUser");
        assert_eq!(op["tags"], json!(["UserService"]));
        assert_eq!(op["summary"], "Gets a user.");
        assert!(op.get("requestBody").is_none());
        assert!(op.get("security").is_none(), "inherits bearer or apiKey");
        let params = op["parameters"].as_array().unwrap();
        assert_eq!(names(&op["parameters"]), ["organization", "user"]);
        for p in params {
            assert_eq!(p["in"], "path");
            assert_eq!(p["required"], true);
            assert_eq!(p["schema"]["type"], "string");
            assert_eq!(p["schema"]["pattern"], names::id_segment_pattern());
        }
        assert_eq!(
            op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/tollgate.v1.User"
        );
        assert_eq!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/google.rpc.Status"
        );
        assert_eq!(
            doc["paths"]["/v1/organizations/{organization}/users/{user}:setPassword"]["post"]["operationId"],
            "UserService_SetPassword"
        );
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["apiKey"]["name"], "x-api-key");
        assert_eq!(doc["security"], json!([{ "bearer": [] }, { "apiKey": [] }]));
    }

    #[test]
    fn field_behavior_and_presence_decide_required_and_read_only() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let user = &schemas["tollgate.v1.User"];
        assert_eq!(user["properties"]["createTime"]["readOnly"], true);
        assert_eq!(user["properties"]["createTime"]["format"], "date-time");
        // Responses: every field without presence, whatever its behavior.
        assert_eq!(
            user["required"],
            json!([
                "name",
                "uid",
                "displayName",
                "email",
                "state",
                "roles",
                "hasPassword",
                "etag"
            ])
        );
        // Requests: REQUIRED only.
        let input = &schemas["tollgate.v1.User.Input"];
        assert_eq!(input["required"], json!(["displayName", "email"]));
        assert_eq!(input["properties"]["uid"]["readOnly"], true);
        let key = &schemas["tollgate.v1.ApiKey.Input"];
        assert!(key.get("required").is_none());
        assert!(
            key["properties"]["expireTime"]["description"]
                .as_str()
                .unwrap()
                .contains("Immutable")
        );
        let set_password = &doc["paths"]["/v1/organizations/{organization}/users/{user}:setPassword"]
            ["post"]["requestBody"];
        assert_eq!(set_password["required"], true);
        let body = &set_password["content"]["application/json"]["schema"];
        assert_eq!(body["required"], json!(["password"]));
        assert_eq!(body["properties"]["password"]["writeOnly"], true);
        assert!(body["properties"].get("name").is_none(), "the path sets it");
        // The body of an update leaves out what the path sets.
        let update = &doc["paths"]["/v1/organizations/{organization}"]["patch"]["requestBody"];
        assert_eq!(update["required"], true);
        let body = &update["content"]["application/json"]["schema"];
        assert!(body["properties"].get("name").is_none());
        assert_eq!(body["required"], json!(["displayName"]));
        let status = &schemas["google.rpc.Status"];
        assert_eq!(status["required"], json!(["code", "message", "details"]));
        assert_eq!(
            status["properties"]["details"]["items"]["required"],
            json!(["@type"])
        );
    }

    #[test]
    fn sixty_four_bit_integers_are_strings_and_oneofs_optional() {
        let pool = ours();
        let event = pool.get_message_by_name("tollgate.v1.Event").unwrap();
        let mut generator = Generator::new(&pool);
        let response = generator.message_schema(&event, Dir::Response, &[]);
        assert_eq!(
            response["properties"]["id"],
            json!({
                "type": "string",
                "format": "uint64",
                "pattern": "^[0-9]+$",
                "description": response["properties"]["id"]["description"],
            })
        );
        let required: Vec<&str> = response["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(required.contains(&"id") && required.contains(&"type"));
        for member in ["org", "user", "serviceAccount", "apiKey", "time"] {
            assert!(!required.contains(&member), "{member}");
        }
        assert!(
            response["description"]
                .as_str()
                .unwrap()
                .contains("At most one of `org`, `user`, `serviceAccount`, `apiKey`, `oauthClient`, `signingKey`, `rateLimitPolicy`, `revokedToken`, `webhook` is set.")
        );
        let request = generator.message_schema(&event, Dir::Request, &[]);
        assert_eq!(
            request["properties"]["id"]["type"],
            json!(["string", "integer"])
        );
        assert_eq!(
            request["properties"]["user"]["$ref"],
            "#/components/schemas/tollgate.v1.User.Input"
        );
    }

    #[test]
    fn query_parameters_are_the_unbound_fields() {
        let doc = doc();
        let list = &doc["paths"]["/v1/organizations/{organization}/users"]["get"];
        assert_eq!(
            names(&list["parameters"]),
            ["organization", "pageSize", "pageToken", "filter"]
        );
        let page_size = &list["parameters"][1];
        assert_eq!(page_size["in"], "query");
        assert_eq!(page_size["schema"]["type"], "integer");
        assert_eq!(page_size["schema"]["format"], "int32");
        assert!(page_size.get("required").is_none());
        let create = &doc["paths"]["/v1/organizations"]["post"];
        assert_eq!(names(&create["parameters"]), ["organizationId"]);
        let delete = &doc["paths"]["/v1/organizations/{organization}"]["delete"];
        assert_eq!(
            names(&delete["parameters"]),
            ["organization", "etag", "force"]
        );
        assert_eq!(delete["parameters"][2]["schema"]["type"], "boolean");
        let update = &doc["paths"]["/v1/organizations/{organization}"]["patch"];
        assert_eq!(names(&update["parameters"]), ["organization", "updateMask"]);
        assert_eq!(update["parameters"][1]["schema"]["type"], "string");
        // `body: "*"` leaves nothing for the query string.
        let set_password =
            &doc["paths"]["/v1/organizations/{organization}/users/{user}:setPassword"]["post"];
        assert_eq!(names(&set_password["parameters"]), ["organization", "user"]);
    }

    #[test]
    fn comments_become_descriptions() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["tollgate.v1.User"]["description"],
            "A person who signs in."
        );
        assert_eq!(
            schemas["tollgate.v1.User"]["properties"]["email"]["description"],
            "Unique within the organization; compared case-insensitively."
        );
        let state = &schemas["tollgate.v1.Organization.State"];
        assert_eq!(
            state["enum"],
            json!(["STATE_UNSPECIFIED", "ACTIVE", "SUSPENDED"])
        );
        assert!(
            state["description"]
                .as_str()
                .unwrap()
                .contains("- `SUSPENDED`: Its principals are refused; its data is kept.")
        );
        let op = &doc["paths"]["/v1/organizations/{organization}"]["delete"];
        let description = op["description"].as_str().unwrap();
        assert!(
            description.starts_with("Deletes an organization. Refused with FAILED_PRECONDITION")
        );
        assert!(description.contains("`organizations.delete`"));
        let tags = doc["tags"].as_array().unwrap();
        assert_eq!(tags[0]["name"], "ApiKeyService");
        assert!(
            tags[0]["description"]
                .as_str()
                .unwrap()
                .starts_with("Long-lived secrets")
        );
        // Cross-references in comments are plain text.
        let code = &schemas["google.rpc.Status"]["properties"]["code"]["description"];
        assert!(
            code.as_str().unwrap().contains("google.rpc.Code."),
            "{code}"
        );
    }

    #[test]
    fn the_document_is_deterministic() {
        let a = serde_json::to_string(&doc()).unwrap();
        let b = serde_json::to_string(&doc()).unwrap();
        assert_eq!(a, b);
        let doc = doc();
        let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }

    #[test]
    fn lone_and_double_star_variables_and_public_methods() {
        use tollgate::google::api::CustomHttpPattern;
        let rule = HttpRule {
            pattern: Some(Pattern::Get("/v1/{name=organizations/*/people/**}".into())),
            additional_bindings: vec![HttpRule {
                pattern: Some(Pattern::Custom(CustomHttpPattern {
                    kind: "HEAD".into(),
                    path: "/v1/{name}:peek".into(),
                })),
                ..HttpRule::default()
            }],
            ..HttpRule::default()
        };
        let policy = MethodPolicy {
            public: true,
            ..MethodPolicy::default()
        };
        let pool = with_options(
            "GetUser",
            &[
                (HTTP_EXTENSION, rule.encode_to_vec()),
                (POLICY_EXTENSION, policy.encode_to_vec()),
            ],
        );
        let doc = doc_of(&pool);
        let op = &doc["paths"]["/v1/organizations/{organization}/people/{name}"]["get"];
        assert_eq!(op["operationId"], "UserService_GetUser");
        assert_eq!(op["security"], json!([]));
        assert_eq!(names(&op["parameters"]), ["organization", "name"]);
        let rest = &op["parameters"][1];
        assert!(rest["schema"].get("pattern").is_none(), "{rest}");
        assert!(rest["description"].as_str().unwrap().contains("segments"));
        let peek = &doc["paths"]["/v1/{name}:peek"]["head"];
        assert_eq!(peek["operationId"], "UserService_GetUser_1");
        assert_eq!(peek["parameters"][0]["schema"]["pattern"], "^[^/]+$");
        // Other methods are untouched.
        let get_org = &doc["paths"]["/v1/organizations/{organization}"]["get"];
        assert!(get_org.get("security").is_none());
    }

    #[test]
    fn helpers() {
        assert_eq!(singular("organizations"), "organization");
        assert_eq!(singular("serviceAccounts"), "serviceAccount");
        assert_eq!(singular("apiKeys"), "apiKey");
        assert_eq!(singular("rateLimitPolicies"), "rateLimitPolicy");
        assert_eq!(singular("address"), "address");
        assert_eq!(singular("data"), "data");
        let mut used = BTreeSet::new();
        assert_eq!(unique(&mut used, "user".into(), "name_2"), "user");
        assert_eq!(unique(&mut used, "user".into(), "name_2"), "name_2");
        assert_eq!(unique(&mut used, "user".into(), "name_2"), "name_22");
        assert_eq!(
            clean_comment(" See [Status.details][google.rpc.Status.details] and [x].\n").as_deref(),
            Some("See Status.details and [x].")
        );
        assert_eq!(clean_comment(" \n"), None);
        assert_eq!(
            summary("Gets a user. Then more.").as_deref(),
            Some("Gets a user.")
        );
        assert_eq!(
            summary("Lists the organizations the caller can see: all\nof them.").as_deref(),
            Some("Lists the organizations the caller can see: all of them.")
        );
    }
}
