//! The HTTP routes of every method, compiled once at start-up from the
//! `google.api.http` annotations in the descriptors: a request is matched
//! against compiled templates and finds its method, body rule, field
//! bindings and query-parameter table without looking anything up by name.

use std::sync::Arc;

use http::{Method, uri::PathAndQuery};
use prost_reflect::{
    DescriptorPool, FieldDescriptor, Kind, MethodDescriptor, ServiceDescriptor, Value,
};
use tollgate::google::api::{HttpRule, http_rule::Pattern};

use super::{
    query::{QueryParams, Taken},
    template::{Captures, PathTemplate, TemplateError},
};

/// The full name of the annotation.
pub const HTTP_EXTENSION: &str = "google.api.http";

/// Where a request's body goes.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body (`body` unset): every field not in the path comes from the
    /// query string.
    None,
    /// `body: "*"`: the whole request message; no query parameters.
    Whole,
    /// `body: "field"`: that field; the rest from the query string.
    Field(FieldDescriptor),
}

/// One binding of one method.
#[derive(Debug, Clone)]
pub struct Route {
    /// The gRPC method it calls.
    pub method: MethodDescriptor,
    /// `/package.Service/Method`, the path of the in-process gRPC call.
    pub grpc_path: PathAndQuery,
    /// The HTTP method.
    pub verb: Method,
    /// The path template.
    pub template: PathTemplate,
    /// For each template variable, the field path it sets, resolved.
    pub bindings: Vec<Vec<FieldDescriptor>>,
    /// Where the body goes.
    pub body: BodyRule,
    /// `response_body`: the response field sent instead of the message.
    pub response_body: Option<FieldDescriptor>,
    /// The request message type.
    pub input: prost_reflect::MessageDescriptor,
    /// The response message type.
    pub output: prost_reflect::MessageDescriptor,
    /// The query parameters the binding accepts: the request fields that
    /// neither the path nor the body sets.
    pub query: QueryParams,
}

impl Route {
    /// Whether the method streams its responses.
    pub fn server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }
}

/// Why the routes cannot be compiled; each names the method at fault.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The annotation does not decode.
    #[error("method {method}: unreadable google.api.http option: {reason}")]
    Unreadable {
        /// The method's full name.
        method: String,
        /// The decode error.
        reason: String,
    },
    /// A template does not parse.
    #[error("method {method}: {source}")]
    Template {
        /// The method's full name.
        method: String,
        /// The parse error.
        source: TemplateError,
    },
    /// A binding names something the request message cannot hold.
    #[error("method {method}: {what}")]
    Field {
        /// The method's full name.
        method: String,
        /// What is wrong.
        what: String,
    },
    /// Two bindings match the same requests.
    #[error(
        "HTTP routes collide: {verb} {template} of {first} and {verb} {other_template} of {second} match the same paths"
    )]
    Collision {
        /// The HTTP method.
        verb: Method,
        /// The first method's full name.
        first: String,
        /// Its template.
        template: String,
        /// The second method's full name.
        second: String,
        /// Its template.
        other_template: String,
    },
}

/// What a request's method and path found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A route and its variables' values.
    Found(&'a Arc<Route>, Captures),
    /// The path is served, but not for this HTTP method; these are.
    MethodNotAllowed(Vec<Method>),
    /// Nothing is served at this path.
    NotFound,
}

/// Every route, grouped by HTTP method, most specific template first.
#[derive(Debug, Default)]
pub struct Routes {
    by_verb: Vec<(Method, Vec<Arc<Route>>)>,
}

impl Routes {
    /// Compiles the bindings of every method of `services`. Methods
    /// without the annotation get no HTTP route.
    pub fn compile<'a>(
        pool: &DescriptorPool,
        services: impl IntoIterator<Item = &'a ServiceDescriptor>,
    ) -> Result<Self, RouteError> {
        let ext = pool.get_extension_by_name(HTTP_EXTENSION);
        let mut routes = Routes::default();
        let Some(ext) = ext else {
            return Ok(routes);
        };
        for service in services {
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&ext) {
                    continue;
                }
                let value = options.get_extension(&ext);
                let Value::Message(m) = value.as_ref() else {
                    continue;
                };
                let rule: HttpRule = m.transcode_to().map_err(|e| RouteError::Unreadable {
                    method: method.full_name().to_owned(),
                    reason: e.to_string(),
                })?;
                routes.add_rule(&method, &rule, true)?;
            }
        }
        for (_, list) in &mut routes.by_verb {
            list.sort_by(|a, b| a.template.specificity(&b.template));
        }
        Ok(routes)
    }

    fn add_rule(
        &mut self,
        method: &MethodDescriptor,
        rule: &HttpRule,
        top: bool,
    ) -> Result<(), RouteError> {
        let name = || method.full_name().to_owned();
        let field_error = |what: String| RouteError::Field {
            method: name(),
            what,
        };
        if !top && !rule.additional_bindings.is_empty() {
            return Err(field_error("additional_bindings cannot nest".into()));
        }
        let (verb, path) = match &rule.pattern {
            Some(Pattern::Get(p)) => (Method::GET, p),
            Some(Pattern::Put(p)) => (Method::PUT, p),
            Some(Pattern::Post(p)) => (Method::POST, p),
            Some(Pattern::Delete(p)) => (Method::DELETE, p),
            Some(Pattern::Patch(p)) => (Method::PATCH, p),
            Some(Pattern::Custom(c)) => (
                Method::from_bytes(c.kind.as_bytes()).map_err(|_| {
                    field_error(format!("custom verb {:?} is not an HTTP method", c.kind))
                })?,
                &c.path,
            ),
            None => return Err(field_error("a binding without a pattern".into())),
        };
        let template = PathTemplate::parse(path).map_err(|source| RouteError::Template {
            method: name(),
            source,
        })?;
        let input = method.input();
        let mut bindings = Vec::with_capacity(template.variables.len());
        for var in &template.variables {
            let path = resolve(&input, &var.field_path).map_err(&field_error)?;
            let last = path
                .last()
                .ok_or_else(|| field_error("empty field path".into()))?;
            if last.is_list() || last.is_map() || matches!(last.kind(), Kind::Message(_)) {
                return Err(field_error(format!(
                    "path variable {} must name a singular scalar field",
                    var.field_path.join(".")
                )));
            }
            bindings.push(path);
        }
        let body = match rule.body.as_str() {
            "" => BodyRule::None,
            "*" => BodyRule::Whole,
            field => BodyRule::Field(
                input
                    .get_field_by_name(field)
                    .ok_or_else(|| field_error(format!("body field {field} does not exist")))?,
            ),
        };
        if !matches!(body, BodyRule::None) && (verb == Method::GET || verb == Method::DELETE) {
            return Err(field_error(format!("{verb} bindings cannot take a body")));
        }
        let response_body = match rule.response_body.as_str() {
            "" => None,
            field => Some(method.output().get_field_by_name(field).ok_or_else(|| {
                field_error(format!("response_body field {field} does not exist"))
            })?),
        };
        let grpc_path = PathAndQuery::try_from(format!(
            "/{}/{}",
            method.parent_service().full_name(),
            method.name()
        ))
        .map_err(|e| field_error(e.to_string()))?;
        let query = QueryParams::compile(
            &input,
            match &body {
                BodyRule::None => Taken::Path(&bindings),
                BodyRule::Field(f) => Taken::PathAndField(&bindings, f),
                BodyRule::Whole => Taken::All,
            },
        );
        let route = Route {
            method: method.clone(),
            grpc_path,
            verb: verb.clone(),
            template,
            bindings,
            body,
            response_body,
            output: method.output(),
            input,
            query,
        };
        self.insert(route)?;
        for extra in &rule.additional_bindings {
            self.add_rule(method, extra, false)?;
        }
        Ok(())
    }

    fn insert(&mut self, route: Route) -> Result<(), RouteError> {
        let list = match self.by_verb.iter_mut().find(|(v, _)| *v == route.verb) {
            Some((_, list)) => list,
            None => {
                self.by_verb.push((route.verb.clone(), Vec::new()));
                let last = self.by_verb.len() - 1;
                &mut self.by_verb[last].1
            }
        };
        if let Some(other) = list.iter().find(|r| r.template.same_shape(&route.template)) {
            return Err(RouteError::Collision {
                verb: route.verb.clone(),
                first: other.method.full_name().to_owned(),
                template: other.template.to_string(),
                second: route.method.full_name().to_owned(),
                other_template: route.template.to_string(),
            });
        }
        list.push(Arc::new(route));
        Ok(())
    }

    /// Finds the route for `verb` and `path` (no query string).
    pub fn find(&self, verb: &Method, path: &str) -> Lookup<'_> {
        // A last segment with a ':' names a custom method (`…/bob:setPassword`)
        // when some binding has that verb: then only bindings with a verb
        // are considered, so `PATCH …/bob:setPassword` is a 405 and not an
        // UpdateUser of a user called `bob:setPassword`.
        let last = path.rsplit('/').next().unwrap_or("");
        if last.contains(':') {
            let with_verb = self.find_among(verb, path, true);
            if !matches!(with_verb, Lookup::NotFound) {
                return with_verb;
            }
        }
        self.find_among(verb, path, false)
    }

    fn find_among<'a>(&'a self, verb: &Method, path: &str, custom: bool) -> Lookup<'a> {
        // HEAD is served as GET, as every HTTP server does.
        let wanted = if verb == Method::HEAD {
            &Method::GET
        } else {
            verb
        };
        // The request's own method first: the others are only read to
        // say which methods a 405 allows.
        let candidates = |list: &'a [Arc<Route>]| {
            list.iter()
                .filter(move |r| r.template.verb.is_some() == custom)
        };
        if let Some((_, list)) = self.by_verb.iter().find(|(v, _)| v == wanted) {
            for route in candidates(list) {
                if let Some(captures) = route.template.matches(path) {
                    return Lookup::Found(route, captures);
                }
            }
        }
        let mut allowed = Vec::new();
        for (v, list) in &self.by_verb {
            if v != wanted && candidates(list).any(|r| r.template.matches(path).is_some()) {
                allowed.push(v.clone());
            }
        }
        if allowed.is_empty() {
            Lookup::NotFound
        } else {
            allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            Lookup::MethodNotAllowed(allowed)
        }
    }

    /// Every route, grouped by HTTP method.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_verb.iter().flat_map(|(_, list)| list.iter())
    }
}

/// Resolves a dotted field path through singular message fields.
pub fn resolve(
    message: &prost_reflect::MessageDescriptor,
    path: &[String],
) -> Result<Vec<FieldDescriptor>, String> {
    let mut out = Vec::with_capacity(path.len());
    let mut current = message.clone();
    for (i, part) in path.iter().enumerate() {
        let field = current
            .get_field_by_name(part)
            .ok_or_else(|| format!("{} has no field {part}", current.full_name()))?;
        if i + 1 < path.len() {
            match field.kind() {
                Kind::Message(m) if !field.is_list() && !field.is_map() => current = m,
                _ => {
                    return Err(format!(
                        "{} is not a singular message field",
                        path[..=i].join(".")
                    ));
                }
            }
        }
        out.push(field);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> Routes {
        let pool = DescriptorPool::decode(tollgate::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<_> = pool
            .services()
            .filter(|s| s.package_name() == "tollgate.v1")
            .collect();
        Routes::compile(&pool, &services).unwrap()
    }

    #[test]
    fn every_binding_of_our_protos_compiles() {
        let routes = ours();
        assert!(routes.iter().count() >= 24, "{}", routes.iter().count());
        let Lookup::Found(r, caps) = routes.find(&Method::GET, "/v1/organizations/root") else {
            panic!("GetOrganization not found")
        };
        assert_eq!(
            r.grpc_path,
            "/tollgate.v1.OrganizationService/GetOrganization"
        );
        assert_eq!(caps, ["organizations/root"]);
        let Lookup::Found(r, _) = routes.find(
            &Method::POST,
            "/v1/organizations/a/users/b/apiKeys/c:revoke",
        ) else {
            panic!("RevokeApiKey (additional binding) not found")
        };
        assert_eq!(r.method.name(), "RevokeApiKey");
    }

    #[test]
    fn wrong_verb_and_unknown_paths() {
        let routes = ours();
        match routes.find(&Method::PUT, "/v1/organizations/root") {
            Lookup::MethodNotAllowed(allow) => {
                assert_eq!(allow, [Method::DELETE, Method::GET, Method::PATCH])
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            routes.find(&Method::GET, "/v2/organizations"),
            Lookup::NotFound
        ));
        // A custom method's path answers for its own verb only.
        match routes.find(&Method::PATCH, "/v1/organizations/a/users/b:setPassword") {
            Lookup::MethodNotAllowed(allow) => assert_eq!(allow, [Method::POST]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            routes.find(&Method::HEAD, "/v1/organizations"),
            Lookup::Found(..)
        ));
    }

    /// The embedded descriptor set with `method`'s binding replaced by
    /// `rule`, edited as a dynamic message: prost's descriptor types would
    /// drop the custom options on re-encoding.
    fn with_rule(method: &str, rule: &HttpRule) -> DescriptorPool {
        use prost::Message as _;
        use prost_reflect::DynamicMessage;
        let pool = DescriptorPool::decode(tollgate::FILE_DESCRIPTOR_SET).unwrap();
        let ext = pool.get_extension_by_name(HTTP_EXTENSION).unwrap();
        let fds_desc = pool
            .get_message_by_name("google.protobuf.FileDescriptorSet")
            .unwrap();
        let mut fds = DynamicMessage::decode(fds_desc, tollgate::FILE_DESCRIPTOR_SET).unwrap();
        let rule = DynamicMessage::decode(
            ext.kind().as_message().unwrap().clone(),
            rule.encode_to_vec().as_slice(),
        )
        .unwrap();
        let mut edited = 0;
        let list = |m: &mut DynamicMessage, f: &str| match m.get_field_by_name_mut(f) {
            Some(Value::List(l)) => std::mem::take(l),
            _ => Vec::new(),
        };
        let mut files = list(&mut fds, "file");
        for file in &mut files {
            let Value::Message(file) = file else { continue };
            let mut services = list(file, "service");
            for svc in &mut services {
                let Value::Message(svc) = svc else { continue };
                let mut methods = list(svc, "method");
                for m in &mut methods {
                    let Value::Message(m) = m else { continue };
                    if m.get_field_by_name("name")
                        .and_then(|v| v.as_str().map(str::to_owned))
                        == Some(method.to_owned())
                        && let Some(Value::Message(options)) = m.get_field_by_name_mut("options")
                    {
                        options.set_extension(&ext, Value::Message(rule.clone()));
                        edited += 1;
                    }
                }
                svc.set_field_by_name("method", Value::List(methods));
            }
            file.set_field_by_name("service", Value::List(services));
        }
        fds.set_field_by_name("file", Value::List(files));
        assert_eq!(edited, 1);
        DescriptorPool::decode(fds.encode_to_vec().as_slice()).unwrap()
    }

    fn compile(pool: &DescriptorPool) -> Result<Routes, RouteError> {
        let services: Vec<_> = pool
            .services()
            .filter(|s| s.package_name() == "tollgate.v1")
            .collect();
        Routes::compile(pool, &services)
    }

    #[test]
    fn colliding_annotations_stop_start_up_naming_both_methods() {
        // GetUser bound to GetOrganization's path shape.
        let pool = with_rule(
            "GetUser",
            &HttpRule {
                pattern: Some(Pattern::Get("/v1/organizations/{name}".into())),
                ..HttpRule::default()
            },
        );
        let err = compile(&pool).unwrap_err().to_string();
        assert!(
            err.contains("tollgate.v1.OrganizationService.GetOrganization"),
            "{err}"
        );
        assert!(err.contains("tollgate.v1.UserService.GetUser"), "{err}");
    }

    #[test]
    fn bindings_must_name_real_fields() {
        let pool = with_rule(
            "GetUser",
            &HttpRule {
                pattern: Some(Pattern::Get("/v1/{nmae=organizations/*/users/*}".into())),
                ..HttpRule::default()
            },
        );
        let err = compile(&pool).unwrap_err().to_string();
        assert!(err.contains("GetUser") && err.contains("nmae"), "{err}");
        let pool = with_rule(
            "DeleteUser",
            &HttpRule {
                pattern: Some(Pattern::Delete("/v1/{name=organizations/*/users/*}".into())),
                body: "*".into(),
                ..HttpRule::default()
            },
        );
        let err = compile(&pool).unwrap_err().to_string();
        assert!(err.contains("DeleteUser") && err.contains("body"), "{err}");
    }
}
