//! The OAuth 2.1 / OpenID Connect HTTP endpoints on the main port:
//! discovery (RFC 8414 and OIDC Discovery), JWKS, `/oauth2/token`,
//! `/oauth2/introspect` (RFC 7662), `/oauth2/revoke` (RFC 7009) and
//! `/oauth2/userinfo`. Requests are form-encoded (RFC 6749 appendix B),
//! responses JSON with `Cache-Control: no-store`, errors in RFC 6749's
//! shape.

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{
    error::{ErrorCode, OAuthError},
    keys::JWKS_MAX_AGE,
    provider::{Provider, TokenRequest, Viewer, grant},
};
use crate::{
    domain::scope::Scopes,
    layers::{authenticate::Credentials, request_id::RequestId},
};

/// The largest form body accepted; real token requests are well under
/// 8 KiB, and a larger body is refused before it is buffered further.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Where each endpoint lives.
pub mod paths {
    /// OIDC Discovery.
    pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
    /// RFC 8414.
    pub const AUTHORIZATION_SERVER: &str = "/.well-known/oauth-authorization-server";
    /// The public keys.
    pub const JWKS: &str = "/oauth2/jwks";
    /// RFC 6749 token endpoint.
    pub const TOKEN: &str = "/oauth2/token";
    /// RFC 6749 authorization endpoint.
    pub const AUTHORIZE: &str = "/oauth2/authorize";
    /// RFC 7662.
    pub const INTROSPECT: &str = "/oauth2/introspect";
    /// RFC 7009.
    pub const REVOKE: &str = "/oauth2/revoke";
    /// OIDC Core 5.3.
    pub const USERINFO: &str = "/oauth2/userinfo";
}

/// Whether `path` belongs to these endpoints (the front door routes on
/// it).
pub fn serves(path: &str) -> bool {
    path.starts_with("/oauth2/") || path.starts_with("/.well-known/")
}

/// The route a served `path` is, for span names: one of [`paths`], or
/// `other` for a path under the prefixes that names none (a client's
/// choice must not become a span name).
pub fn route(path: &str) -> &'static str {
    [
        paths::OPENID_CONFIGURATION,
        paths::AUTHORIZATION_SERVER,
        paths::JWKS,
        paths::TOKEN,
        paths::AUTHORIZE,
        paths::INTROSPECT,
        paths::REVOKE,
        paths::USERINFO,
    ]
    .into_iter()
    .find(|r| *r == path)
    .unwrap_or("other")
}

#[derive(Clone)]
struct Ctx {
    provider: Provider,
    credentials: Credentials,
    discovery: Bytes,
}

/// The endpoints as an axum router; `authorize` is the sign-in flow's
/// router (`/oauth2/authorize`), merged in.
pub fn router(provider: Provider, credentials: Credentials, authorize: Router) -> Router {
    let discovery = Bytes::from(serde_json::to_vec(&discovery(&provider)).unwrap_or_default());
    let ctx = Ctx {
        provider,
        credentials,
        discovery,
    };
    Router::new()
        .route(paths::OPENID_CONFIGURATION, get(discovery_document))
        .route(paths::AUTHORIZATION_SERVER, get(discovery_document))
        .route(paths::JWKS, get(jwks))
        .route(paths::TOKEN, post(token))
        .route(paths::INTROSPECT, post(introspect))
        .route(paths::REVOKE, post(revoke))
        .route(paths::USERINFO, get(userinfo).post(userinfo))
        .with_state(ctx)
        .merge(authorize)
        .fallback(|| async {
            oauth_error(
                &OAuthError::invalid_request("no such endpoint"),
                StatusCode::NOT_FOUND,
            )
        })
}

/// The discovery document (OIDC Discovery 1.0 section 3, RFC 8414
/// section 2).
pub fn discovery(provider: &Provider) -> serde_json::Value {
    let iss = provider.issuer();
    let algs: Vec<&str> = provider
        .keys()
        .algorithms()
        .iter()
        .map(|a| a.as_str())
        .collect();
    serde_json::json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}{}", paths::AUTHORIZE),
        "token_endpoint": format!("{iss}{}", paths::TOKEN),
        "jwks_uri": format!("{iss}{}", paths::JWKS),
        "userinfo_endpoint": format!("{iss}{}", paths::USERINFO),
        "introspection_endpoint": format!("{iss}{}", paths::INTROSPECT),
        "revocation_endpoint": format!("{iss}{}", paths::REVOKE),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            grant::AUTHORIZATION_CODE,
            grant::REFRESH_TOKEN,
            grant::CLIENT_CREDENTIALS,
            grant::TOKEN_EXCHANGE,
        ],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "bearer"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp", "name", "email", "email_verified"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "claims_parameter_supported": false,
    })
}

async fn discovery_document(State(ctx): State<Ctx>) -> Response {
    json_response(
        StatusCode::OK,
        ctx.discovery.clone(),
        // Changes only with the issuer: cacheable like the JWKS.
        Some(HeaderValue::from_static("public, max-age=3600")),
    )
}

async fn jwks(State(ctx): State<Ctx>) -> Response {
    let max_age = HeaderValue::from_str(&format!("public, max-age={}", JWKS_MAX_AGE.as_secs()))
        .unwrap_or(HeaderValue::from_static("public, max-age=300"));
    let mut response = json_response(StatusCode::OK, ctx.provider.keys().jwks(), Some(max_age));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    response
}

/// A JSON response; `no-store` unless `cache` says otherwise.
fn json_response(status: StatusCode, body: Bytes, cache: Option<HeaderValue>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    match cache {
        Some(v) => {
            h.insert(header::CACHE_CONTROL, v);
        }
        None => {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
    }
    r
}

/// An RFC 6749 error response.
fn oauth_error(e: &OAuthError, status: StatusCode) -> Response {
    let mut r = json_response(status, Bytes::from(e.to_json().to_string()), None);
    if e.code == ErrorCode::InvalidClient {
        // RFC 6749 5.2: a 401 names the scheme the client may use.
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tollgate\""),
        );
    }
    if e.code == ErrorCode::SlowDown {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    r
}

fn refuse(e: OAuthError) -> Response {
    let status = e.code.http_status();
    oauth_error(&e, status)
}

/// A form body: every parameter at most once (RFC 6749 section 3.2).
/// Values borrow from the body unless they needed percent-decoding, so a
/// 700-byte token is not copied to be read.
struct Form<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

/// A request's form body, read and bounded, with what the endpoints need
/// of the rest of the request.
struct FormRequest {
    headers: HeaderMap,
    source: Option<SocketAddr>,
    body: Bytes,
}

impl FormRequest {
    async fn read(request: Request) -> Result<FormRequest, OAuthError> {
        let (parts, body) = request.into_parts();
        let source = parts
            .extensions
            .get::<crate::listener::Arrival>()
            .map(|a| a.peer);
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        let body = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| {
                OAuthError::invalid_request(format!(
                    "the body is unreadable or over {MAX_FORM_BYTES} bytes"
                ))
            })?;
        Ok(FormRequest {
            headers: parts.headers,
            source,
            body,
        })
    }

    /// The parameters; a repeated one is `invalid_request`.
    fn form(&self) -> Result<Form<'_>, OAuthError> {
        let mut pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::with_capacity(4);
        for (k, v) in form_urlencoded::parse(&self.body) {
            if pairs.iter().any(|(n, _)| *n == k) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter '{}' is repeated",
                    k.chars().take(50).collect::<String>()
                )));
            }
            pairs.push((k, v));
        }
        Ok(Form(pairs))
    }
}

impl Form<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
            .filter(|v| !v.is_empty())
    }

    fn owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }
}

/// The client's credentials, from `client_secret_basic` or
/// `client_secret_post` (never both), or a public client's bare
/// `client_id`.
fn client_credentials(
    headers: &HeaderMap,
    form: &Form<'_>,
) -> Result<Option<(String, Option<String>)>, OAuthError> {
    let basic = match headers.get(header::AUTHORIZATION) {
        Some(v) => {
            let v = v.to_str().map_err(|_| OAuthError::invalid_client())?;
            match v.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
                    Some(parse_basic(rest.trim())?)
                }
                // A bearer token is a caller credential (introspection),
                // not client authentication.
                _ => None,
            }
        }
        None => None,
    };
    let body_id = form.owned("client_id");
    let body_secret = form.owned("client_secret");
    match basic {
        Some((id, secret)) => {
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use one client authentication method, not both",
                ));
            }
            if body_id.as_deref().is_some_and(|b| b != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the Basic credentials",
                ));
            }
            Ok(Some((id, Some(secret))))
        }
        None => Ok(body_id.map(|id| (id, body_secret))),
    }
}

/// `client_secret_basic`: base64 of `urlencode(id):urlencode(secret)`
/// (RFC 6749 section 2.3.1).
fn parse_basic(b64: &str) -> Result<(String, String), OAuthError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| OAuthError::invalid_client())?;
    let text = String::from_utf8(raw).map_err(|_| OAuthError::invalid_client())?;
    let (id, secret) = text
        .split_once(':')
        .ok_or_else(OAuthError::invalid_client)?;
    Ok((form_decode(id), form_decode(secret)))
}

/// One `application/x-www-form-urlencoded` value decoded (`+` is a
/// space, `%XX` a byte): `form_urlencoded` decodes a lone key the same
/// way, without building a `k=v` string first.
fn form_decode(s: &str) -> String {
    form_urlencoded::parse(s.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

async fn token(State(ctx): State<Ctx>, request: Request) -> Response {
    let request = match FormRequest::read(request).await {
        Ok(x) => x,
        Err(e) => return refuse(e),
    };
    let (headers, source) = (&request.headers, request.source);
    let form = match request.form() {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    let (client_id, client_secret) = match client_credentials(headers, &form) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return refuse(OAuthError::new(
                ErrorCode::InvalidClient,
                "client_id is required",
            ));
        }
        Err(e) => return refuse(e),
    };
    let mut audiences: Vec<String> = Vec::new();
    for key in ["audience", "resource"] {
        if let Some(v) = form.get(key) {
            audiences.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
        }
    }
    let req = TokenRequest {
        request_id: RequestId::from_headers(headers).to_string(),
        grant_type: form.owned("grant_type").unwrap_or_default(),
        client_id,
        client_secret,
        scope: form.owned("scope"),
        audiences,
        code: form.owned("code"),
        redirect_uri: form.owned("redirect_uri"),
        code_verifier: form.owned("code_verifier"),
        refresh_token: form.owned("refresh_token"),
        subject_token: form.owned("subject_token"),
        subject_token_type: form.owned("subject_token_type"),
        requested_token_type: form.owned("requested_token_type"),
    };
    match ctx.provider.token(req, source.map(|s| s.ip())).await {
        Ok(t) => json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&t).unwrap_or_default()),
            None,
        ),
        Err(e) => refuse(e),
    }
}

async fn introspect(State(ctx): State<Ctx>, request: Request) -> Response {
    let request = match FormRequest::read(request).await {
        Ok(x) => x,
        Err(e) => return refuse(e),
    };
    let (headers, source) = (&request.headers, request.source);
    let form = match request.form() {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    let Some(token) = form.get("token") else {
        return refuse(OAuthError::invalid_request("token is required"));
    };
    // RFC 7662 section 2.1: the caller authenticates, as a confidential
    // client (which sees its own organization's tokens) or with a bearer
    // credential of its own (its principal's organization; a platform
    // admin's, every one).
    let viewer = match client_credentials(headers, &form) {
        Ok(Some((id, secret))) => {
            match ctx
                .provider
                .authenticate_client(&id, secret.as_deref(), source.map(|s| s.ip()))
                .await
            {
                // A public client's id is no authentication.
                Ok(client) if client.is_public() => {
                    return refuse(OAuthError::new(
                        ErrorCode::UnauthorizedClient,
                        "public clients may not introspect tokens",
                    ));
                }
                Ok(client) => Viewer::Organization(client.org_id.clone()),
                Err(e) => return refuse(e),
            }
        }
        Ok(None) => match bearer(headers) {
            Some(credential) => match ctx.credentials.resolve(credential).await {
                Ok(p) => Viewer::Principal(p),
                Err(_) => return unauthorized_bearer(),
            },
            None => return unauthorized_bearer(),
        },
        Err(e) => return refuse(e),
    };
    let answer = ctx.provider.introspect(&viewer, token).await;
    json_response(
        StatusCode::OK,
        Bytes::from(introspection_json(&answer)),
        None,
    )
}

/// RFC 7662's JSON: inactive tokens say only `{"active": false}`.
/// Serialized from a borrowed struct, not built as a `serde_json::Value`:
/// this is written on every introspection.
pub fn introspection_json(a: &tollgate::tollgate::v1::IntrospectTokenResponse) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        active: bool,
        #[serde(skip_serializing_if = "str::is_empty")]
        scope: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        client_id: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        sub: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        username: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        token_type: &'a str,
        #[serde(skip_serializing_if = "is_zero")]
        exp: i64,
        #[serde(skip_serializing_if = "is_zero")]
        iat: i64,
        #[serde(skip_serializing_if = "is_zero")]
        nbf: i64,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        aud: &'a [String],
        #[serde(skip_serializing_if = "str::is_empty")]
        iss: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        jti: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        organization: &'a str,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        roles: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        act: Option<serde_json::Value>,
    }
    fn is_zero(v: &i64) -> bool {
        *v == 0
    }
    if !a.active {
        return br#"{"active":false}"#.to_vec();
    }
    serde_json::to_vec(&Answer {
        active: true,
        scope: &a.scope,
        client_id: &a.client_id,
        sub: &a.sub,
        username: &a.username,
        token_type: &a.token_type,
        exp: a.exp,
        iat: a.iat,
        nbf: a.nbf,
        aud: &a.aud,
        iss: &a.iss,
        jti: &a.jti,
        organization: &a.organization,
        roles: &a.roles,
        act: a.act.as_ref().map(struct_json),
    })
    .unwrap_or_else(|_| br#"{"active":false}"#.to_vec())
}

fn struct_json(s: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

fn value_json(v: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => (*b).into(),
        Some(Kind::NumberValue(n)) => (*n).into(),
        Some(Kind::StringValue(s)) => s.clone().into(),
        Some(Kind::ListValue(l)) => l.values.iter().map(value_json).collect(),
        Some(Kind::StructValue(s)) => struct_json(s),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// RFC 6750 section 3: a missing or bad bearer credential.
fn unauthorized_bearer() -> Response {
    let mut r = json_response(
        StatusCode::UNAUTHORIZED,
        Bytes::from(
            OAuthError::new(
                ErrorCode::InvalidClient,
                "authenticate as a client or with a bearer credential",
            )
            .to_json()
            .to_string(),
        ),
        None,
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tollgate\", error=\"invalid_token\""),
    );
    r
}

async fn revoke(State(ctx): State<Ctx>, request: Request) -> Response {
    let request = match FormRequest::read(request).await {
        Ok(x) => x,
        Err(e) => return refuse(e),
    };
    let (headers, source) = (&request.headers, request.source);
    let form = match request.form() {
        Ok(f) => f,
        Err(e) => return refuse(e),
    };
    let Some(token) = form.get("token") else {
        return refuse(OAuthError::invalid_request("token is required"));
    };
    let (id, secret) = match client_credentials(headers, &form) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return refuse(OAuthError::new(
                ErrorCode::InvalidClient,
                "client_id is required",
            ));
        }
        Err(e) => return refuse(e),
    };
    let client = match ctx
        .provider
        .authenticate_client(&id, secret.as_deref(), source.map(|s| s.ip()))
        .await
    {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    let request_id = RequestId::from_headers(headers).to_string();
    match ctx.provider.revoke(&client, token, &request_id).await {
        Ok(()) => json_response(StatusCode::OK, Bytes::new(), None),
        Err(e) => refuse(e),
    }
}

async fn userinfo(State(ctx): State<Ctx>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return unauthorized_bearer();
    };
    let verified = match ctx.credentials.verify_access_token(token).await {
        Ok(v) => v,
        Err(_) => return unauthorized_bearer(),
    };
    let scopes = Scopes::parse("scope", &verified.claims.scope).unwrap_or_default();
    let has = |s: &str| scopes.iter().any(|x| x.to_string() == s);
    if !has("openid") {
        let mut r = json_response(
            StatusCode::FORBIDDEN,
            Bytes::from(
                serde_json::json!({"error": "insufficient_scope", "error_description": "the token lacks scope openid"})
                    .to_string(),
            ),
            None,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"insufficient_scope\", scope=\"openid\""),
        );
        return r;
    }
    let mut out = serde_json::Map::new();
    out.insert("sub".into(), verified.claims.sub.clone().into());
    let principal = &verified.principal;
    if principal.kind == crate::domain::names::PrincipalKind::User
        && (has("profile") || has("email"))
    {
        let name = crate::domain::names::PrincipalName {
            org: principal.org.clone(),
            kind: principal.kind,
            id: principal.id.clone(),
        };
        match ctx.provider.store().get_user(&name).await {
            Ok(user) => {
                if has("profile") {
                    out.insert("name".into(), user.display_name.clone().into());
                }
                if has("email") {
                    out.insert("email".into(), user.email.clone().into());
                    out.insert("email_verified".into(), false.into());
                }
            }
            Err(e) => return refuse(e.into()),
        }
    }
    json_response(
        StatusCode::OK,
        Bytes::from(serde_json::Value::Object(out).to_string()),
        None,
    )
}

/// Serves the endpoints for the front door: an `Arc`'d router, cloned per
/// request (off the hot path).
pub type Endpoints = Arc<Router>;

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        refuse(self)
    }
}
