//! The authorization endpoint (RFC 6749 section 4.1, OAuth 2.1, OIDC Core
//! 3.1.2): `GET /oauth2/authorize` checks the request and shows the
//! sign-in page, or the consent page to a signed-in user; `POST
//! /oauth2/authorize` takes either form (the hidden `step` says which),
//! and ends in a 303 back to the client with a code or an error.
//!
//! Refusals follow RFC 6749 4.1.2.1: a bad `client_id` or `redirect_uri`
//! is shown on an error page and never redirected (the redirect would go
//! to a place nobody vouched for); anything else is redirected back with
//! `error`, `error_description`, `state` and `iss` (RFC 9207).
//!
//! Sign-in: email and password of a user of the client's organization,
//! verified with argon2id through the shared bounded [`Hasher`]; an
//! unknown email is verified against a dummy hash so both answers take as
//! long. Failures are counted per account and per source address by the
//! provider's [`Throttle`](super::throttle::Throttle); past the limit every
//! attempt is refused with 429, right password or not, until the window
//! ends. Both forms carry a CSRF token bound to a browser cookie and the
//! pending request (see [`session`](super::session)).

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::Response,
    routing::get,
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tollgate::tollgate::v1::user;

use super::{
    endpoints::paths,
    error::{ErrorCode, OAuthError},
    pages,
    provider::{CodeGrant, Provider, grant, own_audience},
    session::{self, Keys, Pending, Session},
};
use crate::{
    domain::{
        Error,
        names::{PrincipalKind, PrincipalName},
        now_micros,
        password::Hasher,
        scope::{Scope, Scopes},
    },
    store::{oauth_clients::OAuthClientRow, principals::UserRow},
};

/// The largest form body accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What every page and redirect of this endpoint says about itself: no
/// framing, no scripts, forms only to itself, never cached.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

/// The CSP of a page whose form may end in a 303 to `redirect_uri`:
/// browsers apply `form-action` to every redirect after the submission
/// too (Chromium refuses the 303 to the client otherwise), so the
/// client's origin, and only it, is added.
fn csp_for(redirect_uri: &str) -> String {
    let origin = redirect_uri.parse::<http::Uri>().ok().and_then(|u| {
        let (scheme, authority) = (u.scheme_str()?, u.authority()?);
        let ok = authority
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        ok.then(|| format!("{scheme}://{authority}"))
    });
    match origin {
        Some(o) => format!(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {o}; \
             frame-ancestors 'none'"
        ),
        None => CSP.to_owned(),
    }
}

#[derive(Clone)]
struct Ctx {
    provider: Provider,
    hasher: Hasher,
    keys: Arc<Keys>,
}

/// The authorization endpoint's router, for
/// [`endpoints::router`](super::endpoints::router).
pub fn router(provider: Provider, hasher: Hasher) -> Router {
    let keys = Arc::new(Keys::new(provider.keys(), provider.issuer()));
    Router::new()
        .route(paths::AUTHORIZE, get(get_authorize).post(post_authorize))
        .with_state(Ctx {
            provider,
            hasher,
            keys,
        })
}

fn now_secs() -> i64 {
    now_micros().div_euclid(1_000_000)
}

/// `prompt` (OIDC Core 3.1.2.1).
#[derive(Debug, Clone, Copy, Default)]
struct Prompt {
    none: bool,
    login: bool,
}

/// A checked authorization request.
struct AuthRequest {
    client: Arc<OAuthClientRow>,
    redirect_uri: String,
    state: Option<String>,
    scopes: Vec<Scope>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    audiences: Vec<String>,
    prompt: Prompt,
    max_age: Option<i64>,
}

/// Why a request is refused, and how.
enum Refusal {
    /// On a page: the client or redirect URI cannot be trusted.
    Page(StatusCode, &'static str, String),
    /// Back to the client.
    Redirect {
        redirect_uri: String,
        state: Option<String>,
        error: OAuthError,
    },
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        tracing::error!(error = %e, "authorization endpoint");
        Refusal::Page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "The server cannot serve this request right now. Try again in a moment.".into(),
        )
    }
}

/// Parameters, in order, as sent.
struct Params<'a>(&'a [(String, String)]);

impl Params<'_> {
    fn count(&self, name: &str) -> usize {
        self.0.iter().filter(|(k, _)| k == name).count()
    }

    /// The non-empty value of `name` (RFC 6749 3.1: an empty parameter is
    /// an omitted one).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

fn page(title: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::Page(StatusCode::BAD_REQUEST, title, message.into())
}

impl Ctx {
    /// Checks an authorization request, in RFC 6749's order: client and
    /// redirect URI first (refused on a page), then the rest (refused by
    /// redirect).
    async fn validate(&self, raw: &[(String, String)]) -> Result<AuthRequest, Refusal> {
        let p = Params(raw);
        for name in ["client_id", "redirect_uri"] {
            if p.count(name) > 1 {
                return Err(page("Invalid request", format!("{name} is repeated.")));
            }
        }
        let Some(client_id) = p.get("client_id") else {
            return Err(page(
                "Invalid request",
                "The application did not say who it is (client_id is missing).",
            ));
        };
        let client = match self
            .provider
            .store()
            .get_oauth_client_by_id(client_id)
            .await
        {
            Ok(c) => c,
            Err(Error::NotFound { .. }) => {
                return Err(page(
                    "Unknown application",
                    format!("There is no active application '{}'.", clip(client_id)),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let redirect_uri = match p.get("redirect_uri") {
            Some(uri) => {
                if !client.redirect_uris().any(|r| r == uri) {
                    return Err(page(
                        "Invalid redirect URI",
                        format!(
                            "'{}' is not a registered redirect URI of this application.",
                            clip(uri)
                        ),
                    ));
                }
                uri.to_owned()
            }
            None => {
                let mut all = client.redirect_uris();
                match (all.next(), all.next()) {
                    (Some(only), None) => only.to_owned(),
                    (None, _) => {
                        return Err(page(
                            "Invalid redirect URI",
                            "This application has no registered redirect URI.",
                        ));
                    }
                    (Some(_), Some(_)) => {
                        return Err(page(
                            "Invalid redirect URI",
                            "redirect_uri is required: the application registered several.",
                        ));
                    }
                }
            }
        };
        let state = p.get("state").map(str::to_owned);
        let refuse = |error: OAuthError| Refusal::Redirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
        };
        if let Some((name, _)) = raw.iter().find(|(k, _)| p.count(k) > 1) {
            return Err(refuse(OAuthError::invalid_request(format!(
                "parameter '{}' is repeated",
                clip(name)
            ))));
        }
        if !client.allows_grant(grant::AUTHORIZATION_CODE) {
            return Err(refuse(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client may not use the authorization_code grant",
            )));
        }
        match p.get("response_type") {
            Some("code") => {}
            None => {
                return Err(refuse(OAuthError::invalid_request(
                    "response_type is required",
                )));
            }
            Some(other) => {
                return Err(refuse(OAuthError::new(
                    ErrorCode::UnsupportedResponseType,
                    format!("response_type '{}' is not supported; use code", clip(other)),
                )));
            }
        }
        if let Some(mode) = p.get("response_mode")
            && mode != "query"
        {
            return Err(refuse(OAuthError::invalid_request(
                "response_mode must be query",
            )));
        }
        for name in ["request", "request_uri"] {
            if p.get(name).is_some() {
                return Err(refuse(OAuthError::invalid_request(format!(
                    "the {name} parameter is not supported"
                ))));
            }
        }
        let code_challenge = match (p.get("code_challenge"), p.get("code_challenge_method")) {
            (None, None) if client.is_public() => {
                return Err(refuse(OAuthError::invalid_request(
                    "PKCE is required for public clients: send code_challenge with \
                     code_challenge_method=S256",
                )));
            }
            (None, None) => None,
            (None, Some(_)) => {
                return Err(refuse(OAuthError::invalid_request(
                    "code_challenge_method without code_challenge",
                )));
            }
            (Some(_), method) if method != Some("S256") => {
                return Err(refuse(OAuthError::invalid_request(
                    "code_challenge_method must be S256 (plain is not accepted)",
                )));
            }
            (Some(challenge), _) => {
                // BASE64URL(SHA-256(verifier)): 43 characters.
                let well_formed = challenge.len() == 43
                    && challenge
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !well_formed {
                    return Err(refuse(OAuthError::invalid_request(
                        "code_challenge must be the base64url SHA-256 of the verifier",
                    )));
                }
                Some(challenge.to_owned())
            }
        };
        let allowed = Scopes::Only(client.allowed_scopes());
        let scopes = match p.get("scope") {
            None => client.allowed_scopes(),
            Some(s) => Scopes::parse("scope", s)
                .map_err(|v| refuse(OAuthError::invalid_scope(v.description)))?,
        };
        if let Some(s) = scopes.iter().find(|s| !allowed.permits(s)) {
            return Err(refuse(OAuthError::invalid_scope(format!(
                "the client may not ask for scope '{s}'"
            ))));
        }
        let own = own_audience(self.provider.issuer());
        let mut audiences: Vec<String> = Vec::new();
        for name in ["audience", "resource"] {
            for a in p.get(name).into_iter().flat_map(|v| v.split(' ')) {
                if a.is_empty() {
                    continue;
                }
                if a != own && !client.audiences().any(|c| c == a) {
                    return Err(refuse(OAuthError::new(
                        ErrorCode::InvalidTarget,
                        format!("the client may not ask for audience '{}'", clip(a)),
                    )));
                }
                if !audiences.iter().any(|x| x == a) {
                    audiences.push(a.to_owned());
                }
            }
        }
        let mut prompt = Prompt::default();
        let mut prompts = 0;
        for value in p.get("prompt").into_iter().flat_map(|v| v.split(' ')) {
            prompts += 1;
            match value {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                // Consent is always asked; there is one account per
                // browser.
                "consent" | "select_account" | "" => {}
                other => {
                    return Err(refuse(OAuthError::invalid_request(format!(
                        "unknown prompt value '{}'",
                        clip(other)
                    ))));
                }
            }
        }
        if prompt.none && prompts > 1 {
            return Err(refuse(OAuthError::invalid_request(
                "prompt=none cannot be combined with other values",
            )));
        }
        let max_age = match p.get("max_age") {
            None => None,
            Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                refuse(OAuthError::invalid_request(
                    "max_age must be a number of seconds",
                ))
            })?),
        };
        Ok(AuthRequest {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            nonce: p.get("nonce").map(str::to_owned),
            client,
            scopes,
            code_challenge,
            audiences,
            prompt,
            max_age,
        })
    }

    /// The signed-in user of this request's organization, if the session
    /// cookie is valid, the user still exists, is the same user and is
    /// active, and (with `max_age`) signed in recently enough.
    async fn session(
        &self,
        headers: &HeaderMap,
        req: &AuthRequest,
    ) -> Result<Option<(Session, UserRow)>, Error> {
        let now = now_secs();
        let Some(session) = session::cookie(headers, session::SESSION_COOKIE)
            .and_then(|v| self.keys.open_session(v, now))
        else {
            return Ok(None);
        };
        if session.org != req.client.org_id {
            return Ok(None);
        }
        if req
            .max_age
            .is_some_and(|max| now.saturating_sub(session.auth_time) > max)
        {
            return Ok(None);
        }
        let name = PrincipalName {
            org: session.org.clone(),
            kind: PrincipalKind::User,
            id: session.user.clone(),
        };
        let user = match self.provider.store().get_user(&name).await {
            Ok(u) => u,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if user.uid != session.uid || user.state != user::State::Active as i16 {
            return Ok(None);
        }
        Ok(Some((session, user)))
    }

    /// The refusal as a response.
    fn refuse(&self, refusal: Refusal) -> Response {
        match refusal {
            Refusal::Page(status, title, message) => {
                html(status, pages::error(title, &message), &[])
            }
            Refusal::Redirect {
                redirect_uri,
                state,
                error,
            } => {
                let mut pairs = vec![
                    ("error", error.code.as_str().to_owned()),
                    ("error_description", error.description),
                ];
                if let Some(s) = state {
                    pairs.push(("state", s));
                }
                pairs.push(("iss", self.provider.issuer().to_owned()));
                redirect(&redirect_uri, &pairs, &[])
            }
        }
    }

    /// The CSRF cookie value of the browser, and the `Set-Cookie` that
    /// gives it one when it has none.
    fn csrf_cookie(&self, headers: &HeaderMap) -> (String, Option<String>) {
        match session::cookie(headers, session::CSRF_COOKIE)
            .filter(|v| (20..=100).contains(&v.len()))
        {
            Some(v) => (v.to_owned(), None),
            None => {
                let v = session::new_csrf_value();
                let set = self.keys.csrf_cookie(&v);
                (v, Some(set))
            }
        }
    }

    fn sign_in_page(
        &self,
        req: &AuthRequest,
        pending: &str,
        csrf_cookie: &str,
        email: &str,
        error: Option<&str>,
        cookies: &[String],
    ) -> Response {
        let csrf = self.keys.csrf_token(csrf_cookie, pending);
        form_page(
            req,
            pages::sign_in(&pages::SignIn {
                client: &req.client.display_name,
                org: &req.client.org_id,
                pending,
                csrf: &csrf,
                email,
                error,
            }),
            cookies,
        )
    }

    fn consent_page(
        &self,
        req: &AuthRequest,
        user: &UserRow,
        pending: &str,
        csrf_cookie: &str,
        cookies: &[String],
    ) -> Response {
        let csrf = self.keys.csrf_token(csrf_cookie, pending);
        let own = own_audience(self.provider.issuer());
        let others: Vec<String> = req
            .audiences
            .iter()
            .filter(|a| a.as_str() != own)
            .cloned()
            .collect();
        form_page(
            req,
            pages::consent(&pages::Consent {
                client: &req.client.display_name,
                user: &user.display_name,
                email: &user.email,
                scopes: &req.scopes,
                audiences: &others,
                pending,
                csrf: &csrf,
            }),
            cookies,
        )
    }
}

async fn get_authorize(State(ctx): State<Ctx>, request: Request) -> Response {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let headers = request.headers();
    let req = match ctx.validate(&params).await {
        Ok(r) => r,
        Err(refusal) => return ctx.refuse(refusal),
    };
    let live = match ctx.session(headers, &req).await {
        Ok(s) => s,
        Err(e) => return ctx.refuse(e.into()),
    };
    if req.prompt.none {
        let (code, description) = if live.is_none() {
            (ErrorCode::LoginRequired, "the user is not signed in")
        } else {
            (
                ErrorCode::ConsentRequired,
                "the user must approve this application",
            )
        };
        return ctx.refuse(Refusal::Redirect {
            redirect_uri: req.redirect_uri,
            state: req.state,
            error: OAuthError::new(code, description),
        });
    }
    let now = now_secs();
    let pending = ctx.keys.seal_pending(&Pending {
        params,
        iat: now,
        exp: now + i64::try_from(session::PENDING_LIFETIME.as_secs()).unwrap_or(900),
    });
    let (csrf, set_csrf) = ctx.csrf_cookie(headers);
    let cookies: Vec<String> = set_csrf.into_iter().collect();
    match live {
        Some((_, user)) if !req.prompt.login => {
            ctx.consent_page(&req, &user, &pending, &csrf, &cookies)
        }
        _ => ctx.sign_in_page(&req, &pending, &csrf, "", None, &cookies),
    }
}

/// A posted form: every field at most once.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn bad_form(message: &str) -> Response {
    html(
        StatusCode::BAD_REQUEST,
        pages::error("Invalid request", message),
        &[],
    )
}

async fn post_authorize(State(ctx): State<Ctx>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let source = crate::listener::Arrival::peer_ip(&parts.extensions);
    let essence = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return bad_form("The form must be sent as application/x-www-form-urlencoded.");
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return bad_form("The form is too large.");
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(&bytes) {
        if fields.iter().any(|(n, _)| *n == k) {
            return bad_form("A form field is repeated.");
        }
        fields.push((k.into_owned(), v.into_owned()));
    }
    let form = Form(fields);
    let now = now_secs();
    let Some(token) = form.get("request") else {
        return bad_form("The sign-in request is missing; start again from the application.");
    };
    let Some(pending) = ctx.keys.open_pending(token, now) else {
        return bad_form(
            "The sign-in request is invalid or has expired; start again from the application.",
        );
    };
    let csrf_cookie = session::cookie(&parts.headers, session::CSRF_COOKIE);
    if !ctx
        .keys
        .csrf_ok(csrf_cookie, token, form.get("csrf").unwrap_or_default())
    {
        tracing::warn!(
            target: "tollgate::security",
            event = "csrf_refused",
            source = ?source,
            "a sign-in or consent form without a valid CSRF token"
        );
        return bad_form(
            "The form could not be verified (CSRF). Reload the application and try again; \
             cookies must be enabled.",
        );
    }
    let csrf_cookie = csrf_cookie.unwrap_or_default().to_owned();
    let req = match ctx.validate(&pending.params).await {
        Ok(r) => r,
        Err(refusal) => return ctx.refuse(refusal),
    };
    match form.get("step") {
        Some("signin") => sign_in(&ctx, &req, &form, token, &csrf_cookie, source).await,
        Some("consent") => {
            consent(
                &ctx,
                &req,
                &pending,
                &parts.headers,
                &form,
                token,
                &csrf_cookie,
            )
            .await
        }
        _ => bad_form("Unknown form."),
    }
}

async fn sign_in(
    ctx: &Ctx,
    req: &AuthRequest,
    form: &Form,
    token: &str,
    csrf_cookie: &str,
    source: Option<std::net::IpAddr>,
) -> Response {
    let email = form.get("email").unwrap_or_default().trim().to_lowercase();
    let password = form.get("password").unwrap_or_default();
    if email.is_empty() || password.is_empty() {
        return ctx.sign_in_page(
            req,
            token,
            csrf_cookie,
            &email,
            Some("Enter your email and password."),
            &[],
        );
    }
    let org = req.client.org_id.as_str();
    let throttle = ctx.provider.throttle();
    let keys: Vec<String> = std::iter::once(format!("signin:{org}/{email}"))
        .chain(source.map(|ip| format!("signin-ip:{ip}")))
        .collect();
    if keys.iter().any(|k| throttle.blocked(k)) {
        tracing::warn!(
            target: "tollgate::security",
            event = "signin_throttled",
            org,
            email = %email,
            source = ?source,
            "sign-in refused: too many failed attempts"
        );
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::error(
                "Too many attempts",
                "Too many failed sign-ins. Wait a few minutes and try again.",
            ),
            &[],
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let user = match ctx.provider.store().user_by_email(org, &email).await {
        Ok(u) => u,
        Err(e) => return ctx.refuse(e.into()),
    };
    let (phc, reason) = match &user {
        None => (None, "unknown_user"),
        Some(u) if u.state != user::State::Active as i16 => (None, "user_disabled"),
        Some(u) => (u.password_hash.clone(), "wrong_password"),
    };
    let has_hash = phc.is_some();
    let ok = match ctx.hasher.verify(password.to_owned(), phc).await {
        Ok(ok) => ok,
        Err(Error::ResourceExhausted { .. }) => {
            let mut r = html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::error(
                    "Busy",
                    "Too many sign-ins are being checked at once. Try again in a moment.",
                ),
                &[],
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Err(e) => return ctx.refuse(e.into()),
    };
    let user = match user {
        Some(u) if ok => u,
        _ => {
            for k in &keys {
                throttle.fail(k);
            }
            tracing::warn!(
                target: "tollgate::security",
                event = "signin_failed",
                org,
                email = %email,
                source = ?source,
                reason = if reason == "wrong_password" && !has_hash { "no_password" } else { reason },
                client_id = %req.client.name(),
                "sign-in failed"
            );
            return ctx.sign_in_page(
                req,
                token,
                csrf_cookie,
                &email,
                Some("The email or password is incorrect."),
                &[],
            );
        }
    };
    let now = now_secs();
    let session = Session {
        org: user.org_id.clone(),
        user: user.user_id.clone(),
        uid: user.uid.clone(),
        auth_time: now,
        exp: now + i64::try_from(session::SESSION_LIFETIME.as_secs()).unwrap_or(28_800),
    };
    tracing::info!(
        target: "tollgate::security",
        event = "signin_succeeded",
        org,
        user = %user.user_id,
        source = ?source,
        client_id = %req.client.name(),
        "signed in"
    );
    let cookie = ctx.keys.session_cookie(&ctx.keys.seal_session(&session));
    ctx.consent_page(req, &user, token, csrf_cookie, &[cookie])
}

async fn consent(
    ctx: &Ctx,
    req: &AuthRequest,
    pending: &Pending,
    headers: &HeaderMap,
    form: &Form,
    token: &str,
    csrf_cookie: &str,
) -> Response {
    let live = match ctx.session(headers, req).await {
        Ok(s) => s,
        Err(e) => return ctx.refuse(e.into()),
    };
    let Some((session, _user)) =
        live.filter(|(s, _)| !req.prompt.login || s.auth_time >= pending.iat)
    else {
        let clear = ctx.keys.clear_session_cookie();
        return ctx.sign_in_page(
            req,
            token,
            csrf_cookie,
            "",
            Some("Your sign-in has ended. Sign in again."),
            &[clear],
        );
    };
    match form.get("decision") {
        Some("allow") => {}
        Some("deny") => {
            return ctx.refuse(Refusal::Redirect {
                redirect_uri: req.redirect_uri.clone(),
                state: req.state.clone(),
                error: OAuthError::new(ErrorCode::AccessDenied, "the user denied the request"),
            });
        }
        _ => return bad_form("Choose Allow or Deny."),
    }
    let code = match ctx
        .provider
        .issue_code(CodeGrant {
            client: req.client.clone(),
            user_id: session.user.clone(),
            redirect_uri: req.redirect_uri.clone(),
            scope: req.scopes.clone(),
            audiences: req.audiences.clone(),
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone(),
            auth_time: session.auth_time,
        })
        .await
    {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "issuing an authorization code");
            return ctx.refuse(Refusal::Redirect {
                redirect_uri: req.redirect_uri.clone(),
                state: req.state.clone(),
                error: OAuthError::new(ErrorCode::ServerError, "the code could not be issued"),
            });
        }
    };
    let mut pairs = vec![("code", code)];
    if let Some(s) = &req.state {
        pairs.push(("state", s.clone()));
    }
    pairs.push(("iss", ctx.provider.issuer().to_owned()));
    redirect(&req.redirect_uri, &pairs, &[])
}

/// The headers every response of this endpoint carries.
fn secure_headers(headers: &mut HeaderMap, cookies: &[String]) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

fn html(status: StatusCode, body: String, cookies: &[String]) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(r.headers_mut(), cookies);
    r
}

/// A page with a form of the flow for `req`: its CSP lets the form's
/// 303 reach the client.
fn form_page(req: &AuthRequest, body: String, cookies: &[String]) -> Response {
    let mut r = html(StatusCode::OK, body, cookies);
    if let Ok(v) = HeaderValue::from_str(&csp_for(&req.redirect_uri)) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// A 303 to `redirect_uri` with `pairs` added to its query.
fn redirect(redirect_uri: &str, pairs: &[(&str, String)], cookies: &[String]) -> Response {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{sep}{}", query.finish());
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => {
            return html(
                StatusCode::BAD_REQUEST,
                pages::error("Invalid redirect URI", "The redirect URI cannot be used."),
                cookies,
            );
        }
    }
    secure_headers(r.headers_mut(), cookies);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_may_end_at_the_clients_origin_only() {
        let csp = csp_for("https://app.example:8443/cb?x=1");
        assert!(
            csp.contains("form-action 'self' https://app.example:8443;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(csp_for("not a uri"), CSP);
    }

    #[test]
    fn redirects_keep_the_registered_query() {
        let r = redirect(
            "https://app.example/cb?x=1",
            &[("code", "a b".into()), ("state", "s&t".into())],
            &[],
        );
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://app.example/cb?x=1&code=a+b&state=s%26t"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
    }
}
