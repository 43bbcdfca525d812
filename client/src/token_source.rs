//! [`ClientCredentials`]: OAuth 2.0 access tokens for a service, from the
//! `client_credentials` grant (RFC 6749 section 4.4), cached and refreshed
//! before they expire. It implements [`TokenSource`], so a [`Client`] built
//! with it sends `authorization: Bearer <jwt>` and never an expired token.
//!
//! # Single flight
//!
//! However many calls ask at once, at most one token request is in flight:
//! the first caller that finds no usable token starts a refresh, stored as
//! a shared future that every later caller awaits too, so all of them get
//! the same token (or the same error). The refresh runs on its own task,
//! so it completes even if the callers that wanted it are cancelled.
//!
//! Inside the refresh margin (shortly before expiry) callers are not made
//! to wait: they get the current, still valid token while one refresh runs
//! in the background.
//!
//! [`Client`]: crate::Client

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use base64::Engine as _;
use bytes::Bytes;
use futures::{
    FutureExt as _,
    future::{BoxFuture, Shared},
};
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use tokio::{sync::OnceCell, time::Instant};
use tonic::Status;

use crate::{
    BoxError, Token, TokenSource,
    credential::REDACTED,
    discovery::{self, DiscoveryError},
    http::{HttpClient, HttpError},
    retry::Backoff,
};

/// The longest `Retry-After` honoured; a server asking for more is treated
/// as asking for this, so a refresh cannot hang for an hour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The lifetime assumed when the token response has no `expires_in` and
/// the token is not a JWT with an `exp`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// How the client authenticates to the token endpoint (RFC 6749 section
/// 2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic with the form-urlencoded client id
    /// and secret. The default, and what RFC 6749 says servers must
    /// support.
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form
    /// body.
    Post,
}

/// An OAuth error code from a token endpoint's error response (RFC 6749
/// section 5.2). `Display` prints the code as the RFC spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OAuthError {
    /// `invalid_request`: a malformed request.
    InvalidRequest,
    /// `invalid_client`: client authentication failed (unknown client,
    /// wrong secret, disabled client, wrong authentication method).
    InvalidClient,
    /// `invalid_grant`.
    InvalidGrant,
    /// `unauthorized_client`: this client may not use `client_credentials`.
    UnauthorizedClient,
    /// `unsupported_grant_type`.
    UnsupportedGrantType,
    /// `invalid_scope`: a requested scope is unknown or not allowed for the
    /// client.
    InvalidScope,
    /// `invalid_target` (RFC 8707): an audience the client may not ask for.
    InvalidTarget,
    /// Any other code, as sent.
    Other(String),
}

impl OAuthError {
    fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "invalid_target" => Self::InvalidTarget,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The code as the RFC spells it, e.g. `invalid_client`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`ClientCredentials`] could not produce a token. No variant ever
/// holds the client secret or a token.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The builder's settings cannot be used (no endpoint, a bad URL, an
    /// empty client id).
    #[error("invalid token source settings: {0}")]
    Config(String),
    /// The token endpoint refused the request with an OAuth error. Not
    /// retried: the same request would be refused again. For
    /// `invalid_client` check the client id and secret (and the
    /// authentication method); for `invalid_scope` the scopes asked for.
    #[error(
        "the token endpoint refused client {client_id:?}: {error}{}",
        description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    Rejected {
        /// The OAuth error code.
        error: OAuthError,
        /// The server's `error_description`, if any.
        description: Option<String>,
        /// The HTTP status of the error response.
        status: u16,
        /// The client id that was refused.
        client_id: String,
    },
    /// The token endpoint (or discovery) kept failing with transient
    /// errors (connection failures, 5xx, 429) until the attempts ran out.
    #[error("the token endpoint is unavailable after {attempts} attempt(s): {reason}")]
    Unavailable {
        /// How many requests were sent.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The server answered something that is not a usable token response
    /// (not JSON, no `access_token`, a `token_type` other than Bearer, an
    /// error status without an OAuth error) or a bad discovery document.
    #[error("unexpected answer from the token endpoint: {0}")]
    InvalidResponse(String),
}

impl TokenError {
    /// The status a call fails with when its token source fails with this:
    /// UNAVAILABLE for an issuer that is down (a later call may succeed),
    /// UNAUTHENTICATED otherwise.
    pub fn to_status(&self) -> Status {
        match self {
            Self::Unavailable { .. } => Status::unavailable(self.to_string()),
            _ => Status::unauthenticated(self.to_string()),
        }
    }
}

/// An access token with what the token endpoint said about it.
#[derive(Clone)]
pub struct AccessToken {
    token: Token,
    scope: Option<String>,
    expires_at: Instant,
}

impl AccessToken {
    /// The token (a JWT from Tollgate), for the `authorization` header.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The granted scopes, space-separated, if the server said (it must
    /// when they differ from the ones asked for).
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// When the token expires, measured from when it was requested.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &REDACTED)
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Access tokens from the OAuth `client_credentials` grant, cached and
/// refreshed before expiry, with one request in flight however many callers
/// ask. Use it as a [`Client`](crate::Client)'s credential:
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tollgate_client::{Client, ClientCredentials};
///
/// let tokens = ClientCredentials::builder(
///     "organizations/acme/clients/billing",
///     std::env::var("TOLLGATE_CLIENT_SECRET")?,
/// )
/// .issuer("https://tollgate.example.com")
/// .scope("organizations.read")
/// .build()?;
/// let client = Client::builder("https://tollgate.example.com")
///     .token_source(Arc::new(tokens))
///     .connect()
///     .await?;
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
///
/// Or ask it directly with [`ClientCredentials::access_token`] to call
/// other services. Cloning is cheap and clones share the cache.
#[derive(Clone)]
pub struct ClientCredentials {
    inner: Arc<Inner>,
}

/// A refresh every caller can await; the error is shared too.
type Refresh = Shared<BoxFuture<'static, Result<AccessToken, TokenError>>>;

struct Inner {
    endpoint: Endpoint,
    client_id: String,
    client_secret: String,
    scopes: Vec<String>,
    audiences: Vec<String>,
    auth: ClientAuthMethod,
    margin: Option<Duration>,
    http: HttpClient,
    max_attempts: u32,
    backoff: Backoff,
    state: Mutex<State>,
}

enum Endpoint {
    Url(String),
    /// Found through discovery on first use, then kept.
    Issuer {
        issuer: String,
        token_url: OnceCell<String>,
    },
}

#[derive(Default)]
struct State {
    /// The token and when to refresh it.
    cached: Option<(AccessToken, Instant)>,
    in_flight: Option<Refresh>,
}

// === impl ClientCredentials ===

impl ClientCredentials {
    /// Starts building a source for the client `client_id` (e.g.
    /// `organizations/acme/clients/billing`) with its secret. Name the
    /// token endpoint or the issuer next.
    pub fn builder(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> ClientCredentialsBuilder {
        ClientCredentialsBuilder {
            target: None,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scopes: Vec::new(),
            audiences: Vec::new(),
            auth: ClientAuthMethod::default(),
            margin: None,
            http: None,
            max_attempts: ClientCredentialsBuilder::DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::new(
                ClientCredentialsBuilder::DEFAULT_BACKOFF_INITIAL,
                ClientCredentialsBuilder::DEFAULT_BACKOFF_MAX,
            ),
        }
    }

    /// A valid access token: the cached one, or a new one from the token
    /// endpoint when there is none or it is about to expire.
    pub async fn access_token(&self) -> Result<AccessToken, TokenError> {
        let refresh = {
            let mut state = lock(&self.inner.state);
            let now = Instant::now();
            match &state.cached {
                Some((token, refresh_at)) if now < *refresh_at => return Ok(token.clone()),
                // Inside the margin: hand out the still valid token and
                // refresh in the background.
                Some((token, _)) if now < token.expires_at => {
                    let token = token.clone();
                    // The refresh runs on its own task; nobody waits for it.
                    drop(Inner::refresh(&self.inner, &mut state));
                    return Ok(token);
                }
                _ => Inner::refresh(&self.inner, &mut state),
            }
        };
        refresh.await
    }

    /// Forgets the cached token, so the next call asks the token endpoint:
    /// for a token the server refused before its time (revoked, or keys
    /// rotated).
    pub fn invalidate(&self) {
        lock(&self.inner.state).cached = None;
    }
}

#[tonic::async_trait]
impl TokenSource for ClientCredentials {
    async fn token(&self) -> Result<Token, BoxError> {
        match self.access_token().await {
            Ok(token) => Ok(token.token),
            Err(error) => Err(Box::new(error.to_status())),
        }
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let endpoint = match &inner.endpoint {
            Endpoint::Url(url) => url.as_str(),
            Endpoint::Issuer { issuer, .. } => issuer.as_str(),
        };
        f.debug_struct("ClientCredentials")
            .field("endpoint", &endpoint)
            .field("client_id", &inner.client_id)
            .field("client_secret", &REDACTED)
            .field("scopes", &inner.scopes)
            .field("audiences", &inner.audiences)
            .field("auth", &inner.auth)
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

/// What one attempt came to, for the retry loop.
enum Attempt {
    Final(TokenError),
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
}

impl From<DiscoveryError> for Attempt {
    fn from(error: DiscoveryError) -> Self {
        if error.transient {
            Self::Transient {
                reason: error.reason,
                retry_after: error.retry_after,
            }
        } else {
            Self::Final(TokenError::InvalidResponse(error.reason))
        }
    }
}

impl From<HttpError> for Attempt {
    fn from(error: HttpError) -> Self {
        if error.is_transient() {
            Self::Transient {
                reason: error.to_string(),
                retry_after: None,
            }
        } else {
            Self::Final(TokenError::Config(error.to_string()))
        }
    }
}

impl Inner {
    /// The refresh in flight, or a new one started on its own task.
    fn refresh(this: &Arc<Self>, state: &mut State) -> Refresh {
        if let Some(refresh) = &state.in_flight {
            return refresh.clone();
        }
        let inner = this.clone();
        let refresh = async move {
            let result = inner.fetch().await;
            let mut state = lock(&inner.state);
            state.in_flight = None;
            if let Ok(token) = &result {
                let refresh_at = token.expires_at - inner.margin(token);
                state.cached = Some((token.clone(), refresh_at));
            }
            result
        }
        .boxed()
        .shared();
        state.in_flight = Some(refresh.clone());
        tokio::spawn(refresh.clone());
        refresh
    }

    /// How long before expiry to refresh: the configured margin, or 60 s or
    /// a tenth of the lifetime, whichever is smaller; never more than half
    /// the lifetime, so a short-lived token is not refreshed on every call.
    fn margin(&self, token: &AccessToken) -> Duration {
        refresh_margin(
            self.margin,
            token.expires_at.saturating_duration_since(Instant::now()),
        )
    }

    async fn fetch(&self) -> Result<AccessToken, TokenError> {
        let url = self.token_url().await?;
        self.with_retries(|| self.request_token(&url)).await
    }

    async fn token_url(&self) -> Result<String, TokenError> {
        match &self.endpoint {
            Endpoint::Url(url) => Ok(url.clone()),
            Endpoint::Issuer { issuer, token_url } => token_url
                .get_or_try_init(|| async {
                    let metadata = self
                        .with_retries(|| async {
                            discovery::discover(&self.http, issuer)
                                .await
                                .map_err(Attempt::from)
                        })
                        .await?;
                    let url = metadata.token_endpoint.ok_or_else(|| {
                        TokenError::InvalidResponse(format!(
                            "the discovery document of {issuer} has no token_endpoint"
                        ))
                    })?;
                    HttpClient::check_url(&url).map_err(|e| {
                        TokenError::InvalidResponse(format!("discovered token_endpoint: {e}"))
                    })?;
                    Ok(url)
                })
                .await
                .cloned(),
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or
    /// `max_attempts` are spent, sleeping a jittered exponential backoff
    /// (or the server's `Retry-After`) in between.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, TokenError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Attempt::Final(error)) => return Err(error),
                Err(Attempt::Transient {
                    reason,
                    retry_after,
                }) => {
                    if attempts >= self.max_attempts {
                        return Err(TokenError::Unavailable { attempts, reason });
                    }
                    let delay = match retry_after {
                        Some(wait) => wait.min(MAX_RETRY_AFTER),
                        None => self.backoff.delay(attempts - 1),
                    };
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One token request.
    async fn request_token(&self, url: &str) -> Result<AccessToken, Attempt> {
        let sent = Instant::now();
        let response = self.http.send(self.token_request(url)?).await?;
        let status = response.status();
        if status == StatusCode::OK {
            return self
                .parse_token(response.body(), sent)
                .map_err(Attempt::Final);
        }
        if discovery::is_transient_status(status) {
            return Err(Attempt::Transient {
                reason: format!("HTTP {}", status.as_u16()),
                retry_after: discovery::retry_after(response.headers()),
            });
        }
        #[derive(Deserialize)]
        struct ErrorResponse {
            error: String,
            error_description: Option<String>,
        }
        match serde_json::from_slice::<ErrorResponse>(response.body()) {
            Ok(body) => Err(Attempt::Final(TokenError::Rejected {
                error: OAuthError::parse(&body.error),
                // A server should never echo the secret, but this message
                // ends up in logs, so make sure.
                description: body
                    .error_description
                    .map(|d| d.replace(&self.client_secret, REDACTED)),
                status: status.as_u16(),
                client_id: self.client_id.clone(),
            })),
            Err(_) => Err(Attempt::Final(TokenError::InvalidResponse(format!(
                "HTTP {} without an OAuth error body",
                status.as_u16()
            )))),
        }
    }

    /// The form-encoded `client_credentials` request, with the client
    /// authenticated as configured.
    fn token_request(&self, url: &str) -> Result<Request<Full<Bytes>>, Attempt> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if !self.scopes.is_empty() {
            form.append_pair("scope", &self.scopes.join(" "));
        }
        for audience in &self.audiences {
            form.append_pair("audience", audience);
        }
        let mut request = Request::post(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        match self.auth {
            ClientAuthMethod::Post => {
                form.append_pair("client_id", &self.client_id);
                form.append_pair("client_secret", &self.client_secret);
            }
            ClientAuthMethod::Basic => {
                request = request.header(header::AUTHORIZATION, self.basic_auth()?);
            }
        }
        request
            .body(Full::new(Bytes::from(form.finish())))
            .map_err(|e| Attempt::Final(TokenError::Config(format!("token endpoint URL: {e}"))))
    }

    /// `Basic base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749
    /// section 2.3.1 asks, so ids with `/` and secrets with `:` survive.
    fn basic_auth(&self) -> Result<HeaderValue, Attempt> {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let credentials = format!(
            "{}:{}",
            encode(&self.client_id),
            encode(&self.client_secret)
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        let mut value = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
            // Base64 is always a valid header value.
            Attempt::Final(TokenError::Config("unencodable client credentials".into()))
        })?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn parse_token(&self, body: &[u8], sent: Instant) -> Result<AccessToken, TokenError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            token_type: String,
            expires_in: Option<u64>,
            scope: Option<String>,
        }
        let response: TokenResponse = serde_json::from_slice(body)
            .map_err(|e| TokenError::InvalidResponse(format!("not a token response: {e}")))?;
        if !response.token_type.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::InvalidResponse(format!(
                "token_type {:?}, expected Bearer",
                response.token_type
            )));
        }
        if response.access_token.is_empty() {
            return Err(TokenError::InvalidResponse("an empty access_token".into()));
        }
        let lifetime = response
            .expires_in
            .map(Duration::from_secs)
            .or_else(|| jwt_lifetime(&response.access_token))
            .unwrap_or(DEFAULT_LIFETIME);
        Ok(AccessToken {
            token: Token::new(response.access_token),
            scope: response.scope,
            expires_at: sent + lifetime.min(Duration::from_secs(365 * 24 * 3600)),
        })
    }
}

/// See [`Inner::margin`].
fn refresh_margin(configured: Option<Duration>, lifetime: Duration) -> Duration {
    configured
        .unwrap_or_else(|| Duration::from_secs(60).min(lifetime / 10))
        .min(lifetime / 2)
}

/// The time left until the `exp` of a JWT, read without verifying it (only
/// to schedule the refresh when the response has no `expires_in`).
fn jwt_lifetime(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let exp = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(exp.saturating_sub(now)))
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // The state is consistent after every statement, so a panic elsewhere
    // does not make it unusable.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Settings for [`ClientCredentials`]; see [`ClientCredentials::builder`].
#[derive(Clone)]
pub struct ClientCredentialsBuilder {
    target: Option<Target>,
    client_id: String,
    client_secret: String,
    scopes: Vec<String>,
    audiences: Vec<String>,
    auth: ClientAuthMethod,
    margin: Option<Duration>,
    http: Option<HttpClient>,
    max_attempts: u32,
    backoff: Backoff,
}

#[derive(Clone, Debug)]
enum Target {
    TokenEndpoint(String),
    Issuer(String),
}

// === impl ClientCredentialsBuilder ===

impl ClientCredentialsBuilder {
    /// Default number of requests per refresh (the first and 3 retries).
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
    /// Default longest wait before the first retry.
    pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(200);
    /// Default cap on the wait before any retry.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

    /// The token endpoint, e.g. `https://tollgate.example.com/oauth2/token`.
    /// Replaces an earlier [`issuer`](Self::issuer).
    pub fn token_endpoint(mut self, url: impl Into<String>) -> Self {
        self.target = Some(Target::TokenEndpoint(url.into()));
        self
    }

    /// The issuer, e.g. `https://tollgate.example.com`: the token endpoint
    /// is read from its discovery document
    /// (`/.well-known/openid-configuration`) on first use. Replaces an
    /// earlier [`token_endpoint`](Self::token_endpoint).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.target = Some(Target::Issuer(issuer.into()));
        self
    }

    /// Asks for `scope` too (sent space-separated in `scope`). Without any,
    /// the server grants the client's default scopes.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Asks for each of `scopes` too.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Asks for a token for `audience` too (one `audience` parameter each).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Asks for each of `audiences` too.
    pub fn audiences<I: IntoIterator<Item = S>, S: Into<String>>(mut self, audiences: I) -> Self {
        self.audiences.extend(audiences.into_iter().map(Into::into));
        self
    }

    /// How the client authenticates; default
    /// [`Basic`](ClientAuthMethod::Basic).
    pub fn auth_method(mut self, auth: ClientAuthMethod) -> Self {
        self.auth = auth;
        self
    }

    /// How long before expiry a token is refreshed. Default: 60 s or a
    /// tenth of the token's lifetime, whichever is smaller. Capped at half
    /// the lifetime.
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// The HTTP client for the token endpoint and discovery (its timeout,
    /// the CAs it trusts). Default [`HttpClient::new`].
    pub fn http_client(mut self, http: HttpClient) -> Self {
        self.http = Some(http);
        self
    }

    /// Requests per refresh when the endpoint fails transiently (connection
    /// errors, 5xx, 429); at least 1. Default 4.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The backoff between attempts: a random wait up to
    /// `min(max, initial * 2^n)` before retry `n`, unless the server sent
    /// `Retry-After` (honoured up to 30 s). Default 200 ms and 5 s.
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(initial, max);
        self
    }

    /// Checks the settings. Nothing is sent until the first token is asked
    /// for.
    pub fn build(self) -> Result<ClientCredentials, TokenError> {
        if self.client_id.is_empty() {
            return Err(TokenError::Config("the client id is empty".into()));
        }
        let endpoint = match self.target {
            None => {
                return Err(TokenError::Config(
                    "name the token endpoint or the issuer".into(),
                ));
            }
            Some(Target::TokenEndpoint(url)) => {
                HttpClient::check_url(&url).map_err(|e| TokenError::Config(e.to_string()))?;
                Endpoint::Url(url)
            }
            Some(Target::Issuer(issuer)) => {
                HttpClient::check_url(&discovery::discovery_url(&issuer))
                    .map_err(|e| TokenError::Config(e.to_string()))?;
                Endpoint::Issuer {
                    issuer,
                    token_url: OnceCell::new(),
                }
            }
        };
        Ok(ClientCredentials {
            inner: Arc::new(Inner {
                endpoint,
                client_id: self.client_id,
                client_secret: self.client_secret,
                scopes: self.scopes,
                audiences: self.audiences,
                auth: self.auth,
                margin: self.margin,
                http: self.http.unwrap_or_default(),
                max_attempts: self.max_attempts,
                backoff: self.backoff,
                state: Mutex::new(State::default()),
            }),
        })
    }
}

impl fmt::Debug for ClientCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsBuilder")
            .field("target", &self.target)
            .field("client_id", &self.client_id)
            .field("client_secret", &REDACTED)
            .field("scopes", &self.scopes)
            .field("audiences", &self.audiences)
            .field("auth", &self.auth)
            .field("margin", &self.margin)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::Ordering, time::Duration};

    use super::*;
    use crate::{
        Credential,
        testing::{Issuer, Scripted},
    };

    const CLIENT_ID: &str = "organizations/acme/clients/billing";
    const SECRET: &str = "s3cr:et/+%do-not-log";

    fn source(issuer: &Issuer) -> ClientCredentialsBuilder {
        ClientCredentials::builder(CLIENT_ID, SECRET)
            .token_endpoint(issuer.token_url())
            .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
    }

    #[test]
    fn the_default_margin_is_60_s_or_a_tenth_of_the_lifetime() {
        let secs = Duration::from_secs;
        assert_eq!(refresh_margin(None, secs(3600)), secs(60));
        assert_eq!(refresh_margin(None, secs(300)), secs(30));
        assert_eq!(refresh_margin(Some(secs(5)), secs(3600)), secs(5));
        // Never more than half the lifetime.
        assert_eq!(refresh_margin(Some(secs(600)), secs(60)), secs(30));
    }

    #[tokio::test]
    async fn the_token_is_cached() {
        let issuer = Issuer::start().await;
        let source = source(&issuer).build().unwrap();
        for _ in 0..10 {
            let token = source.access_token().await.unwrap();
            assert_eq!(token.token().secret(), "token-1");
            assert_eq!(token.scope(), Some("organizations.read"));
        }
        assert_eq!(issuer.token_requests(), 1);
    }

    #[tokio::test]
    async fn the_token_is_refreshed_before_it_expires() {
        let issuer = Issuer::start().await;
        issuer.state.expires_in.store(2, Ordering::SeqCst);
        let source = source(&issuer)
            .refresh_margin(Duration::from_secs(1))
            .build()
            .unwrap();
        let first = source.access_token().await.unwrap();
        assert_eq!(first.token().secret(), "token-1");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // Inside the margin: the valid token at once, a refresh behind it.
        let second = source.access_token().await.unwrap();
        assert_eq!(second.token().secret(), "token-1");
        for _ in 0..100 {
            if issuer.token_requests() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let third = source.access_token().await.unwrap();
        assert_eq!(third.token().secret(), "token-2");
        // The new token arrived while the first was still valid.
        assert!(Instant::now() < first.expires_at());
        assert_eq!(issuer.token_requests(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fifty_concurrent_callers_share_one_request() {
        let issuer = Issuer::start().await;
        issuer.state.delay_ms.store(200, Ordering::SeqCst);
        let source = source(&issuer).build().unwrap();
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { source.access_token().await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap().token().secret(), "token-1");
        }
        assert_eq!(issuer.token_requests(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_failure_too() {
        let issuer = Issuer::start().await;
        issuer.state.delay_ms.store(100, Ordering::SeqCst);
        issuer.push(Scripted::oauth_error(401, "invalid_client", "bad secret"));
        let source = source(&issuer).build().unwrap();
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { source.access_token().await })
            })
            .collect();
        for call in calls {
            let error = call.await.unwrap().unwrap_err();
            assert!(matches!(error, TokenError::Rejected { .. }), "{error:?}");
        }
        assert_eq!(issuer.token_requests(), 1);
        // The next call tries again.
        assert_eq!(
            source.access_token().await.unwrap().token().secret(),
            "token-2"
        );
    }

    #[tokio::test]
    async fn transient_failures_are_retried() {
        let issuer = Issuer::start().await;
        issuer.push(Scripted::status(503));
        issuer.push(Scripted::status(502));
        let source = source(&issuer).build().unwrap();
        let token = source.access_token().await.unwrap();
        assert_eq!(token.token().secret(), "token-3");
        assert_eq!(issuer.token_requests(), 3);
    }

    #[tokio::test]
    async fn retry_after_is_honoured_on_429() {
        let issuer = Issuer::start().await;
        let mut throttled = Scripted::status(429);
        throttled.headers.push(("retry-after", "1".to_owned()));
        issuer.push(throttled);
        let source = source(&issuer).build().unwrap();
        let started = Instant::now();
        source.access_token().await.unwrap();
        // The backoff alone is at most 5 ms.
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(issuer.token_requests(), 2);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let issuer = Issuer::start().await;
        for _ in 0..5 {
            issuer.push(Scripted::status(500));
        }
        let source = source(&issuer).max_attempts(3).build().unwrap();
        let error = source.access_token().await.unwrap_err();
        assert!(
            matches!(error, TokenError::Unavailable { attempts: 3, .. }),
            "{error:?}"
        );
        assert_eq!(issuer.token_requests(), 3);
        assert_eq!(error.to_status().code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn a_refused_client_is_not_retried_and_the_error_says_why() {
        for (code, expected) in [
            ("invalid_client", OAuthError::InvalidClient),
            ("unauthorized_client", OAuthError::UnauthorizedClient),
            ("invalid_scope", OAuthError::InvalidScope),
        ] {
            let issuer = Issuer::start().await;
            // A careless server that echoes the secret.
            issuer.push(Scripted::oauth_error(
                401,
                code,
                &format!("no such thing as {SECRET}"),
            ));
            let source = source(&issuer).build().unwrap();
            let error = source.access_token().await.unwrap_err();
            let TokenError::Rejected {
                error: oauth,
                description,
                status,
                ..
            } = &error
            else {
                panic!("{error:?}");
            };
            assert_eq!(*oauth, expected);
            assert_eq!(*status, 401);
            assert!(description.as_deref().unwrap().starts_with("no such thing"));
            assert_eq!(issuer.token_requests(), 1, "{code} was retried");
            let message = error.to_string();
            assert!(message.contains(code), "{message}");
            assert!(message.contains("no such thing as"), "{message}");
            assert!(message.contains(CLIENT_ID), "{message}");
            assert!(!message.contains("s3cr"), "{message}");
            assert!(!format!("{error:?}").contains("s3cr"));
            assert_eq!(error.to_status().code(), tonic::Code::Unauthenticated);
        }
    }

    #[tokio::test]
    async fn basic_auth_form_urlencodes_id_and_secret() {
        let issuer = Issuer::start().await;
        let source = source(&issuer)
            .scopes(["organizations.read", "users.read"])
            .audience("tollgate")
            .audience("billing")
            .build()
            .unwrap();
        source.access_token().await.unwrap();
        let seen = issuer.seen().pop().unwrap();
        let basic = seen.authorization.unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "organizations%2Facme%2Fclients%2Fbilling:s3cr%3Aet%2F%2B%25do-not-log"
        );
        let pairs: Vec<(&str, &str)> = seen
            .form
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("grant_type", "client_credentials"),
                ("scope", "organizations.read users.read"),
                ("audience", "tollgate"),
                ("audience", "billing"),
            ]
        );
    }

    #[tokio::test]
    async fn post_auth_sends_the_credentials_in_the_form() {
        let issuer = Issuer::start().await;
        let source = source(&issuer)
            .auth_method(ClientAuthMethod::Post)
            .build()
            .unwrap();
        source.access_token().await.unwrap();
        let seen = issuer.seen().pop().unwrap();
        assert_eq!(seen.authorization, None);
        let pairs: Vec<(&str, &str)> = seen
            .form
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
            ]
        );
    }

    #[tokio::test]
    async fn the_token_endpoint_is_discovered_once() {
        let issuer = Issuer::start().await;
        let source = ClientCredentials::builder(CLIENT_ID, SECRET)
            .issuer(format!("{}/", issuer.url))
            .build()
            .unwrap();
        assert_eq!(
            source.access_token().await.unwrap().token().secret(),
            "token-1"
        );
        source.invalidate();
        assert_eq!(
            source.access_token().await.unwrap().token().secret(),
            "token-2"
        );
        assert_eq!(issuer.state.discovery_requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn as_a_credential_it_sends_the_bearer_token() {
        let issuer = Issuer::start().await;
        let credential = Credential::Source(Arc::new(source(&issuer).build().unwrap()));
        let header = credential.header().await.unwrap();
        assert_eq!(header, "Bearer token-1");
        assert!(header.is_sensitive());

        let issuer = Issuer::start().await;
        issuer.push(Scripted::oauth_error(
            401,
            "invalid_client",
            "unknown client",
        ));
        let credential = Credential::Source(Arc::new(source(&issuer).build().unwrap()));
        let status = credential.header().await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("invalid_client"), "{status:?}");
    }

    #[test]
    fn bad_settings_are_refused_and_debug_hides_the_secret() {
        let error = ClientCredentials::builder(CLIENT_ID, SECRET)
            .build()
            .unwrap_err();
        assert!(matches!(error, TokenError::Config(_)), "{error:?}");
        for bad in ["ftp://example.com/token", "/oauth2/token", "http://"] {
            let error = ClientCredentials::builder(CLIENT_ID, SECRET)
                .token_endpoint(bad)
                .build()
                .unwrap_err();
            assert!(matches!(error, TokenError::Config(_)), "{bad}: {error:?}");
        }
        let https = ClientCredentials::builder(CLIENT_ID, SECRET)
            .token_endpoint("https://tollgate.example/oauth2/token")
            .build();
        if cfg!(feature = "tls") {
            assert!(https.is_ok());
        } else {
            let error = https.unwrap_err().to_string();
            assert!(error.contains("`tls` feature"), "{error}");
        }
        let builder = ClientCredentials::builder(CLIENT_ID, SECRET)
            .token_endpoint("http://127.0.0.1:1/oauth2/token");
        let debug = format!("{builder:?} {:?}", builder.clone().build().unwrap());
        assert!(!debug.contains("s3cr"), "{debug}");
    }
}
