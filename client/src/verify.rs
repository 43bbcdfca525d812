//! [`VerifyLayer`]: a tower layer that Rust services put in front of their
//! own tonic or axum servers to accept Tollgate access tokens, verified
//! locally against the issuer's published keys.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tollgate_client::{VerifiedClaims, Verifier, VerifyLayer};
//!
//! let verifier = Verifier::builder("https://tollgate.example.com", "billing").build()?;
//! let layer = VerifyLayer::new(verifier);
//! // tonic: Server::builder().layer(layer).add_service(...)
//! // axum:  Router::new().route(...).layer(layer)
//! // A handler then reads `request.extensions().get::<VerifiedClaims>()`.
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```
//!
//! # What is checked
//!
//! A token (RFC 9068 JWT access token) is accepted only if its header says
//! `typ: at+jwt`, names a `kid` in the issuer's key set and the algorithm
//! of that key (EdDSA, ES256/ES384 or RS*; never `none` or HS*, whatever
//! the key), its signature verifies, and its claims have `iss` equal to the
//! issuer, `aud` containing the audience, `sub`, and an `exp` (and any
//! `nbf`) within the leeway. Optional required scopes must all be in
//! `scope`.
//!
//! # The key set
//!
//! The JWKS URL comes from the issuer's discovery document (or is given),
//! both fetched on the first request (or [`Verifier::prefetch`]). The set is
//! kept for its `Cache-Control: max-age` (default 5 minutes). A token with
//! an unknown `kid`, which is what a freshly rotated key looks like, makes
//! the verifier fetch the set again, but at most once per refetch interval
//! (default 30 s), so a flood of tokens with made-up `kid`s cannot turn
//! into a flood of requests to the issuer. If a refetch fails, the keys
//! already known keep working.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, RwLock},
    task::{Context, Poll},
    time::Duration,
};

use base64::Engine as _;
use http::{HeaderValue, Request, Response, StatusCode, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::Jwk};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::{sync::OnceCell, time::Instant};
use tower::Layer;
use tower_service::Service;

use crate::{
    discovery,
    http::{HttpClient, HttpError},
};

/// The least time between two fetches of a key set when none could be
/// fetched yet, so a verifier started before its issuer recovers quickly.
const NO_KEYS_RETRY: Duration = Duration::from_secs(1);

/// The longest a key set is kept, whatever its `Cache-Control` says.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// The claims of a verified access token, inserted into the request's
/// extensions by [`VerifyLayer`]. Read them in a handler with
/// `request.extensions().get::<VerifiedClaims>()` (tonic) or
/// `Extension<VerifiedClaims>` (axum).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct VerifiedClaims {
    /// `sub`: the principal, e.g. `organizations/acme/serviceAccounts/billing`
    /// or `users/alice`.
    pub sub: String,
    /// `iss`: the issuer.
    pub iss: String,
    /// `aud`, always as a list.
    pub aud: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub exp: u64,
    /// `org`: the organization the principal belongs to.
    pub org: Option<String>,
    /// `roles` held by the principal.
    pub roles: Vec<String>,
    /// `scope`, split on spaces.
    pub scope: Vec<String>,
    /// `client_id`: the OAuth client the token was issued to.
    pub client_id: Option<String>,
    /// `jti`: the token's id.
    pub jti: Option<String>,
    /// `act` (RFC 8693): who is acting on behalf of `sub`, for tokens from
    /// a token exchange.
    pub act: Option<Actor>,
    /// Every claim, as sent.
    pub raw: Map<String, Value>,
}

impl VerifiedClaims {
    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.iter().any(|s| s == scope)
    }
}

/// The `act` claim of RFC 8693: the acting party, and who it acts for in
/// turn when delegation is chained.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Actor {
    /// The acting party.
    pub sub: String,
    /// An earlier actor in a delegation chain.
    #[serde(default)]
    pub act: Option<Box<Actor>>,
}

/// Why a request was refused, or a verifier could not be built. Messages
/// never contain the token.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The verifier's settings cannot be used.
    #[error("invalid verifier settings: {0}")]
    Config(String),
    /// No `authorization: Bearer` header.
    #[error("missing bearer token")]
    MissingToken,
    /// Not a JWT, or a header or claim of the wrong shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is `none`, HS*, or otherwise not one a public key verifies.
    #[error("algorithm {0} is not accepted")]
    UnsupportedAlgorithm(String),
    /// `alg` differs from the algorithm of the key named by `kid`.
    #[error("the token's algorithm does not match its key's")]
    AlgorithmMismatch,
    /// `typ` is not `at+jwt` (RFC 9068): an ID token or some other JWT.
    #[error("token type {0:?} is not at+jwt")]
    WrongType(String),
    /// The `kid` is not in the issuer's key set (or there is no `kid`).
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` does not contain the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// `iss` is not the issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// A required claim (`exp`, `iss`, `aud`, `sub`) is missing.
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// The token is valid but lacks a required scope.
    #[error("missing scope {0}")]
    InsufficientScope(String),
    /// The issuer's key set could not be fetched and none is known.
    #[error("the issuer's key set is unavailable: {0}")]
    KeySetUnavailable(String),
}

/// A gRPC status code, as sent in `grpc-status`.
const UNAUTHENTICATED: &str = "16";
const PERMISSION_DENIED: &str = "7";
const UNAVAILABLE: &str = "14";

/// Verifies Tollgate access tokens against the issuer's key set, which it
/// fetches and caches. Cloning is cheap; clones share the cache. Use it
/// through [`VerifyLayer`], or call [`Verifier::verify`] yourself.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audience: String,
    leeway: Duration,
    required_scopes: Vec<String>,
    jwks_uri: OnceCell<String>,
    default_ttl: Duration,
    refetch_interval: Duration,
    http: HttpClient,
    keys: RwLock<Option<KeySet>>,
    fetches: Mutex<Fetches>,
    /// One fetch at a time; the others wait and use its result.
    fetch_lock: tokio::sync::Mutex<()>,
}

struct KeySet {
    keys: HashMap<String, Key>,
    fetched_at: Instant,
    ttl: Duration,
}

#[derive(Clone)]
struct Key {
    decoding: DecodingKey,
    alg: Algorithm,
}

#[derive(Default)]
struct Fetches {
    /// Counts finished fetch attempts, so a waiter can tell one happened
    /// while it waited.
    generation: u64,
    /// When the last attempt started.
    last: Option<Instant>,
    /// Whether an attempt is under way: a request arriving then waits for
    /// it instead of being refused by the refetch limit.
    in_progress: bool,
}

/// Marks an attempt finished, even if the request fetching is cancelled.
struct AttemptGuard<'a>(&'a Mutex<Fetches>);

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        let mut fetches = lock(self.0);
        fetches.in_progress = false;
        fetches.generation += 1;
    }
}

// === impl Verifier ===

impl Verifier {
    /// Starts building a verifier for tokens from `issuer` (e.g.
    /// `https://tollgate.example.com`, exactly the `iss` of its tokens)
    /// meant for `audience` (this service's name, in the token's `aud`).
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: VerifierBuilder::DEFAULT_LEEWAY,
            required_scopes: Vec::new(),
            jwks_uri: None,
            default_ttl: VerifierBuilder::DEFAULT_JWKS_TTL,
            refetch_interval: VerifierBuilder::DEFAULT_REFETCH_INTERVAL,
            http: None,
        }
    }

    /// A [`VerifyLayer`] using this verifier.
    pub fn layer(&self) -> VerifyLayer {
        VerifyLayer::new(self.clone())
    }

    /// Fetches the discovery document and the key set now, so that a wrong
    /// issuer fails at start-up rather than on the first request.
    pub async fn prefetch(&self) -> Result<(), VerifyError> {
        let _one_at_a_time = self.inner.fetch_lock.lock().await;
        let set = self.inner.record_and_fetch().await?;
        self.inner.store(set);
        Ok(())
    }

    /// Verifies `token` (without the `Bearer ` prefix) and returns its
    /// claims.
    pub async fn verify(&self, token: &str) -> Result<VerifiedClaims, VerifyError> {
        let inner = &self.inner;
        let header = peek_header(token)?;
        let kid = header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
        let key = inner.key(kid).await?;
        if key.alg != header.alg {
            return Err(VerifyError::AlgorithmMismatch);
        }

        let mut validation = Validation::new(key.alg);
        validation.leeway = inner.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_audience(&[&inner.audience]);
        let bare = discovery::normalize_issuer(&inner.issuer);
        validation.set_issuer(&[bare.to_owned(), format!("{bare}/")]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| jwt_error(e.into_kind()))?;
        let claims = VerifiedClaims::from_map(data.claims)?;
        if let Some(missing) = inner
            .required_scopes
            .iter()
            .find(|scope| !claims.has_scope(scope))
        {
            return Err(VerifyError::InsufficientScope(missing.clone()));
        }
        Ok(claims)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("leeway", &self.inner.leeway)
            .field("required_scopes", &self.inner.required_scopes)
            .finish_non_exhaustive()
    }
}

/// The header fields checked before any key is looked up. `alg` is read
/// from the raw JSON first so that `none` and HS* get a clear refusal
/// (jsonwebtoken cannot even parse `none`).
struct Peeked {
    alg: Algorithm,
    kid: Option<String>,
}

fn peek_header(token: &str) -> Result<Peeked, VerifyError> {
    let malformed = |what: &str| VerifyError::Malformed(what.to_owned());
    let encoded = token.split('.').next().unwrap_or_default();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| malformed("the header is not base64url"))?;
    let raw: Map<String, Value> =
        serde_json::from_slice(&json).map_err(|_| malformed("the header is not a JSON object"))?;
    let alg = raw
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no alg"))?;
    if alg.eq_ignore_ascii_case("none") || alg.to_ascii_uppercase().starts_with("HS") {
        return Err(VerifyError::UnsupportedAlgorithm(alg.to_owned()));
    }
    let typ = raw.get("typ").and_then(Value::as_str).unwrap_or_default();
    // RFC 9068 section 4: "at+jwt", or the full media type.
    if !typ.eq_ignore_ascii_case("at+jwt") && !typ.eq_ignore_ascii_case("application/at+jwt") {
        return Err(VerifyError::WrongType(typ.to_owned()));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| VerifyError::UnsupportedAlgorithm(alg.to_owned()))?;
    Ok(Peeked {
        alg: header.alg,
        kid: header.kid,
    })
}

fn jwt_error(kind: ErrorKind) -> VerifyError {
    match kind {
        ErrorKind::InvalidSignature => VerifyError::BadSignature,
        ErrorKind::ExpiredSignature => VerifyError::Expired,
        ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
        ErrorKind::InvalidAudience => VerifyError::WrongAudience,
        ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) => VerifyError::MissingClaim(claim),
        ErrorKind::InvalidAlgorithm => VerifyError::AlgorithmMismatch,
        ErrorKind::InvalidClaimFormat(claim) => {
            VerifyError::Malformed(format!("claim {claim} has the wrong type"))
        }
        other => VerifyError::Malformed(format!("{other:?}")),
    }
}

// === impl Inner ===

impl Inner {
    /// The key named `kid`, fetching the key set when there is none, when
    /// it is stale, or when `kid` is unknown, within the refetch limits.
    async fn key(&self, kid: &str) -> Result<Key, VerifyError> {
        let (found, stale, has_set) = self.lookup(kid);
        if let (Some(key), false) = (&found, stale) {
            return Ok(key.clone());
        }
        let generation = {
            let fetches = lock(&self.fetches);
            if !fetches.in_progress && !self.may_fetch(&fetches, has_set) {
                return found.ok_or(VerifyError::UnknownKey);
            }
            fetches.generation
        };
        let _one_at_a_time = self.fetch_lock.lock().await;
        {
            let fetches = lock(&self.fetches);
            // Someone fetched while we waited: use their result.
            if fetches.generation != generation {
                drop(fetches);
                return match self.lookup(kid) {
                    (Some(key), _, _) => Ok(key),
                    (None, _, true) => Err(VerifyError::UnknownKey),
                    (None, _, false) => Err(VerifyError::KeySetUnavailable(
                        "the last fetch failed".to_owned(),
                    )),
                };
            }
        }
        match self.record_and_fetch().await {
            Ok(set) => {
                let key = set.keys.get(kid).cloned();
                self.store(set);
                key.ok_or(VerifyError::UnknownKey)
            }
            // The keys we knew still verify what they signed.
            Err(_) if found.is_some() => found.ok_or(VerifyError::UnknownKey),
            Err(_) if has_set => Err(VerifyError::UnknownKey),
            Err(error) => Err(error),
        }
    }

    /// The key named `kid` in the current set, whether the set is past its
    /// TTL, and whether there is a set at all.
    fn lookup(&self, kid: &str) -> (Option<Key>, bool, bool) {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        match &*keys {
            None => (None, true, false),
            Some(set) => (
                set.keys.get(kid).cloned(),
                set.fetched_at.elapsed() >= set.ttl,
                true,
            ),
        }
    }

    fn may_fetch(&self, fetches: &Fetches, has_set: bool) -> bool {
        let wait = if has_set {
            self.refetch_interval
        } else {
            NO_KEYS_RETRY.min(self.refetch_interval)
        };
        fetches.last.is_none_or(|last| last.elapsed() >= wait)
    }

    /// Fetches the key set, counting the attempt for the refetch limits.
    /// Call with `fetch_lock` held.
    async fn record_and_fetch(&self) -> Result<KeySet, VerifyError> {
        {
            let mut fetches = lock(&self.fetches);
            fetches.in_progress = true;
            fetches.last = Some(Instant::now());
        }
        let _finished = AttemptGuard(&self.fetches);
        self.fetch().await
    }

    fn store(&self, set: KeySet) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(set);
    }

    async fn fetch(&self) -> Result<KeySet, VerifyError> {
        let unavailable = |reason: String| VerifyError::KeySetUnavailable(reason);
        let url = self
            .jwks_uri
            .get_or_try_init(|| async {
                let metadata = discovery::discover(&self.http, &self.issuer)
                    .await
                    .map_err(|e| unavailable(e.reason))?;
                let url = metadata.jwks_uri.ok_or_else(|| {
                    unavailable("the discovery document has no jwks_uri".to_owned())
                })?;
                HttpClient::check_url(&url).map_err(|e: HttpError| unavailable(e.to_string()))?;
                Ok::<_, VerifyError>(url)
            })
            .await?;
        let response = self
            .http
            .get_json(url)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!(
                "{url} answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let ttl = max_age(response.headers())
            .unwrap_or(self.default_ttl)
            .clamp(self.refetch_interval.min(MAX_TTL), MAX_TTL);
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        let raw: RawSet = serde_json::from_slice(response.body())
            .map_err(|e| unavailable(format!("{url} is not a JWK set: {e}")))?;
        // A key this verifier cannot use (another type, a symmetric key, no
        // kid) is skipped, not fatal: the others still verify.
        let keys = raw.keys.iter().filter_map(parse_key).collect();
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
            ttl,
        })
    }
}

/// A public signing key of the set, with the one algorithm it verifies.
fn parse_key(jwk: &Value) -> Option<(String, Key)> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = text("kid")?;
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let derived = match (text("kty")?, text("crv")) {
        ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
        ("EC", Some("P-256")) => Algorithm::ES256,
        ("EC", Some("P-384")) => Algorithm::ES384,
        ("RSA", _) => match text("alg").unwrap_or("RS256") {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            _ => return None,
        },
        // "oct" (HMAC) keys are never accepted: anyone holding the public
        // key set could sign with them.
        _ => return None,
    };
    // A key whose `alg` contradicts its type is refused rather than guessed.
    if let Some(alg) = text("alg")
        && alg.parse::<Algorithm>().ok() != Some(derived)
    {
        return None;
    }
    let parsed: Jwk = serde_json::from_value(jwk.clone()).ok()?;
    let decoding = DecodingKey::from_jwk(&parsed).ok()?;
    Some((
        kid.to_owned(),
        Key {
            decoding,
            alg: derived,
        },
    ))
}

/// `max-age` of a `Cache-Control` header; `no-cache` and `no-store` count
/// as 0 (the refetch interval then bounds the rate).
fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').map(str::trim).find_map(|directive| {
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        let (name, seconds) = directive.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| seconds.trim().parse().ok().map(Duration::from_secs))
            .flatten()
    })
}

fn lock(fetches: &Mutex<Fetches>) -> std::sync::MutexGuard<'_, Fetches> {
    fetches.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl VerifiedClaims ===

impl VerifiedClaims {
    fn from_map(raw: Map<String, Value>) -> Result<Self, VerifyError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        #[derive(Deserialize)]
        struct Typed {
            sub: String,
            iss: String,
            aud: OneOrMany,
            exp: u64,
            org: Option<String>,
            #[serde(default)]
            roles: Vec<String>,
            scope: Option<String>,
            client_id: Option<String>,
            jti: Option<String>,
            act: Option<Actor>,
        }
        let typed: Typed = serde_json::from_value(Value::Object(raw.clone()))
            .map_err(|e| VerifyError::Malformed(format!("claims: {e}")))?;
        Ok(Self {
            sub: typed.sub,
            iss: typed.iss,
            aud: match typed.aud {
                OneOrMany::One(aud) => vec![aud],
                OneOrMany::Many(aud) => aud,
            },
            exp: typed.exp,
            org: typed.org,
            roles: typed.roles,
            scope: typed
                .scope
                .unwrap_or_default()
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            client_id: typed.client_id,
            jti: typed.jti,
            act: typed.act,
            raw,
        })
    }
}

/// Settings for a [`Verifier`]; see [`Verifier::builder`].
#[derive(Clone, Debug)]
pub struct VerifierBuilder {
    issuer: String,
    audience: String,
    leeway: Duration,
    required_scopes: Vec<String>,
    jwks_uri: Option<String>,
    default_ttl: Duration,
    refetch_interval: Duration,
    http: Option<HttpClient>,
}

// === impl VerifierBuilder ===

impl VerifierBuilder {
    /// Default clock skew allowed on `exp` and `nbf`.
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
    /// Default lifetime of a key set without `Cache-Control: max-age`.
    pub const DEFAULT_JWKS_TTL: Duration = Duration::from_secs(300);
    /// Default least time between two fetches triggered by unknown `kid`s.
    pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

    /// Clock skew allowed on `exp` and `nbf` (whole seconds). Default 30 s.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Refuses tokens without `scope` (with `insufficient_scope`, or
    /// PERMISSION_DENIED for gRPC).
    pub fn required_scope(mut self, scope: impl Into<String>) -> Self {
        self.required_scopes.push(scope.into());
        self
    }

    /// The key set's URL, instead of discovering it.
    pub fn jwks_uri(mut self, url: impl Into<String>) -> Self {
        self.jwks_uri = Some(url.into());
        self
    }

    /// How long a key set without `Cache-Control: max-age` is kept.
    /// Default 5 minutes.
    pub fn jwks_cache_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The least time between two fetches of the key set triggered by
    /// tokens with an unknown `kid` (or a stale set). Default 30 s.
    pub fn jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// The HTTP client for discovery and the key set. Default
    /// [`HttpClient::new`].
    pub fn http_client(mut self, http: HttpClient) -> Self {
        self.http = Some(http);
        self
    }

    /// Checks the settings. Nothing is fetched until the first request or
    /// [`Verifier::prefetch`].
    pub fn build(self) -> Result<Verifier, VerifyError> {
        let config = |e: HttpError| VerifyError::Config(e.to_string());
        if self.audience.is_empty() {
            return Err(VerifyError::Config("the audience is empty".into()));
        }
        HttpClient::check_url(&discovery::discovery_url(&self.issuer)).map_err(config)?;
        let jwks_uri = OnceCell::new();
        if let Some(url) = self.jwks_uri {
            HttpClient::check_url(&url).map_err(config)?;
            let _ = jwks_uri.set(url);
        }
        Ok(Verifier {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                audience: self.audience,
                leeway: self.leeway,
                required_scopes: self.required_scopes,
                jwks_uri,
                default_ttl: self.default_ttl,
                refetch_interval: self.refetch_interval,
                http: self.http.unwrap_or_default(),
                keys: RwLock::new(None),
                fetches: Mutex::new(Fetches::default()),
                fetch_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

/// A tower [`Layer`] that verifies the `authorization: Bearer` token of
/// every request with a [`Verifier`], inserts the [`VerifiedClaims`] into
/// the request's extensions, and answers refused requests itself:
///
/// - gRPC (`content-type: application/grpc…`): HTTP 200 with
///   `grpc-status: 16` (UNAUTHENTICATED), or 7 (PERMISSION_DENIED) for a
///   missing scope, or 14 (UNAVAILABLE) when the key set cannot be
///   fetched, and a `grpc-message` saying why;
/// - anything else: HTTP 401 with `WWW-Authenticate: Bearer
///   error="invalid_token", error_description="…"` (RFC 6750), 403 with
///   `error="insufficient_scope"`, or 503.
#[derive(Clone, Debug)]
pub struct VerifyLayer {
    verifier: Verifier,
}

impl VerifyLayer {
    /// A layer verifying with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = Verify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Verify {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service made by [`VerifyLayer`].
#[derive(Clone, Debug)]
pub struct Verify<S> {
    inner: S,
    verifier: Verifier,
}

/// The future of [`Verify`].
pub type VerifyFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for Verify<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = VerifyFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Clone-and-swap: the service that `poll_ready` readied goes into
        // the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        // The caller's trace continues here: its context is current while
        // the request is verified and served, and in the extensions.
        let trace = crate::trace_context::extract(request.headers());
        if let Some(cx) = &trace {
            request.extensions_mut().insert(cx.clone());
        }
        let verified_call = async move {
            let grpc = is_grpc(&request);
            let verified = match bearer(&request) {
                Some(token) => verifier.verify(token).await,
                None => Err(VerifyError::MissingToken),
            };
            match verified {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(error) => Ok(refusal(&error, grpc)),
            }
        };
        match trace {
            Some(cx) => Box::pin(opentelemetry::context::FutureExt::with_context(
                verified_call,
                cx,
            )),
            None => Box::pin(verified_call),
        }
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn bearer<B>(request: &Request<B>) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The answer to a refused request; see [`VerifyLayer`].
fn refusal<B: Default>(error: &VerifyError, grpc: bool) -> Response<B> {
    let message = error.to_string();
    let mut response = Response::new(B::default());
    let headers = response.headers_mut();
    if grpc {
        let code = match error {
            VerifyError::InsufficientScope(_) => PERMISSION_DENIED,
            VerifyError::KeySetUnavailable(_) => UNAVAILABLE,
            _ => UNAUTHENTICATED,
        };
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert("grpc-status", HeaderValue::from_static(code));
        if let Ok(value) = HeaderValue::try_from(percent_encode(&message)) {
            headers.insert("grpc-message", value);
        }
        return response;
    }
    let (status, challenge) = match error {
        // RFC 6750 section 3.1: no error code when no credentials were sent.
        VerifyError::MissingToken => (StatusCode::UNAUTHORIZED, "Bearer".to_owned()),
        VerifyError::InsufficientScope(scope) => (
            StatusCode::FORBIDDEN,
            format!(
                "Bearer error=\"insufficient_scope\", error_description=\"{}\", scope=\"{}\"",
                quote(&message),
                quote(scope)
            ),
        ),
        VerifyError::KeySetUnavailable(_) => {
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return response;
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                quote(&message)
            ),
        ),
    };
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::try_from(challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Makes `text` safe inside a quoted-string: RFC 6750 allows only visible
/// ASCII other than `"` and `\` in `error_description`.
fn quote(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect()
}

/// `grpc-message` encoding (gRPC over HTTP/2): bytes outside printable
/// ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, sync::atomic::Ordering};

    use aws_lc_rs::{
        encoding::{AsDer, Pkcs8V1Der},
        rand::SystemRandom,
        rsa::{KeyPair as RsaKeyPair, KeySize},
        signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair},
    };
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use tower::ServiceExt as _;

    use super::*;
    use crate::{ClientCredentials, testing::Issuer};

    const AUDIENCE: &str = "billing";
    const SUB: &str = "organizations/acme/serviceAccounts/billing";

    struct TestKey {
        kid: String,
        alg: Algorithm,
        encoding: EncodingKey,
        jwk: Value,
    }

    impl TestKey {
        fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
            let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
            jwk.common.key_id = Some(kid.to_owned());
            Self {
                kid: kid.to_owned(),
                alg,
                encoding,
                jwk: serde_json::to_value(jwk).unwrap(),
            }
        }

        fn ed25519(kid: &str) -> Self {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).unwrap();
            Self::new(
                kid,
                Algorithm::EdDSA,
                EncodingKey::from_ed_der(pkcs8.as_ref()),
            )
        }

        fn es256(kid: &str) -> Self {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .unwrap();
            Self::new(
                kid,
                Algorithm::ES256,
                EncodingKey::from_ec_der(pkcs8.as_ref()),
            )
        }

        fn rs256(kid: &str) -> Self {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
            let der: Pkcs8V1Der<'static> = pair.as_der().unwrap();
            let base64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
            let pem = format!("-----BEGIN PRIVATE KEY-----\n{base64}\n-----END PRIVATE KEY-----\n");
            Self::new(
                kid,
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            )
        }

        fn header(&self) -> Header {
            let mut header = Header::new(self.alg);
            header.typ = Some("at+jwt".to_owned());
            header.kid = Some(self.kid.clone());
            header
        }

        fn sign(&self, claims: &Value) -> String {
            jsonwebtoken::encode(&self.header(), claims, &self.encoding).unwrap()
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(issuer: &str) -> Value {
        json!({
            "iss": issuer,
            "sub": SUB,
            "aud": [AUDIENCE, "tollgate"],
            "exp": now() + 300,
            "iat": now(),
            "nbf": now(),
            "jti": "jti-1",
            "client_id": "organizations/acme/clients/billing",
            "scope": "organizations.read users.read",
            "org": "organizations/acme",
            "roles": ["roles/viewer"],
            "act": { "sub": "users/alice" },
        })
    }

    fn publish(issuer: &Issuer, keys: &[&TestKey]) {
        *issuer.state.jwks.lock().unwrap() =
            json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
    }

    fn verifier(issuer: &Issuer) -> VerifierBuilder {
        Verifier::builder(&issuer.url, AUDIENCE)
    }

    fn b64(json: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
    }

    #[tokio::test]
    async fn good_tokens_of_every_algorithm_are_accepted() {
        let issuer = Issuer::start().await;
        let keys = [
            TestKey::ed25519("ed"),
            TestKey::es256("ec"),
            TestKey::rs256("rsa"),
        ];
        publish(&issuer, &keys.iter().collect::<Vec<_>>());
        let verifier = verifier(&issuer).build().unwrap();
        for key in &keys {
            let claims = verifier.verify(&key.sign(&claims(&issuer.url))).await;
            let claims = claims.unwrap_or_else(|e| panic!("{}: {e:?}", key.kid));
            assert_eq!(claims.sub, SUB);
            assert_eq!(claims.iss, issuer.url);
            assert_eq!(claims.aud, [AUDIENCE, "tollgate"]);
            assert_eq!(claims.org.as_deref(), Some("organizations/acme"));
            assert_eq!(claims.roles, ["roles/viewer"]);
            assert_eq!(claims.scope, ["organizations.read", "users.read"]);
            assert!(claims.has_scope("users.read"));
            assert_eq!(
                claims.client_id.as_deref(),
                Some("organizations/acme/clients/billing")
            );
            assert_eq!(claims.jti.as_deref(), Some("jti-1"));
            assert_eq!(
                claims.act.as_ref().map(|a| a.sub.as_str()),
                Some("users/alice")
            );
            assert_eq!(claims.raw["org"], "organizations/acme");
        }
        // One discovery, one key set for all of them.
        assert_eq!(issuer.state.discovery_requests.load(Ordering::SeqCst), 1);
        assert_eq!(issuer.jwks_requests(), 1);
    }

    #[tokio::test]
    async fn a_string_audience_is_accepted_too() {
        let issuer = Issuer::start().await;
        let key = TestKey::ed25519("ed");
        publish(&issuer, &[&key]);
        let mut claims = claims(&issuer.url);
        claims["aud"] = json!(AUDIENCE);
        let verified = verifier(&issuer)
            .build()
            .unwrap()
            .verify(&key.sign(&claims))
            .await
            .unwrap();
        assert_eq!(verified.aud, [AUDIENCE]);
    }

    #[tokio::test]
    async fn forged_and_wrong_tokens_are_refused() {
        let issuer = Issuer::start().await;
        let key = TestKey::ed25519("ed");
        let ec = TestKey::es256("ec");
        publish(&issuer, &[&key, &ec]);
        let verifier = verifier(&issuer).build().unwrap();
        let good = claims(&issuer.url);
        let with = |name: &str, value: Value| {
            let mut claims = good.clone();
            claims[name] = value;
            key.sign(&claims)
        };

        // Same kid, another key: the signature does not verify.
        let impostor = TestKey::ed25519("ed");
        let bad_signature = impostor.sign(&good);
        // A valid signature over other claims.
        let signed = key.sign(&good);
        let mut parts: Vec<&str> = signed.split('.').collect();
        let tampered_payload = b64(&json!({ "sub": "users/root" }));
        parts[1] = &tampered_payload;
        let tampered = parts.join(".");

        let none = format!(
            "{}.{}.",
            b64(&json!({ "alg": "none", "typ": "at+jwt", "kid": "ed" })),
            b64(&good)
        );
        // HS256 keyed with the public key, the classic confusion attack.
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.typ = Some("at+jwt".into());
        hs_header.kid = Some("ed".into());
        let public = key.jwk["x"].as_str().unwrap().to_owned();
        let hs256 = jsonwebtoken::encode(
            &hs_header,
            &good,
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap();
        // EdDSA under the kid of the ES256 key.
        let mut mismatch_header = key.header();
        mismatch_header.kid = Some("ec".into());
        let mismatch = jsonwebtoken::encode(&mismatch_header, &good, &key.encoding).unwrap();
        let mut jwt_header = key.header();
        jwt_header.typ = Some("JWT".into());
        let wrong_typ = jsonwebtoken::encode(&jwt_header, &good, &key.encoding).unwrap();
        let mut unknown_header = key.header();
        unknown_header.kid = Some("nope".into());
        let unknown_kid = jsonwebtoken::encode(&unknown_header, &good, &key.encoding).unwrap();
        let mut no_sub = good.clone();
        no_sub.as_object_mut().unwrap().remove("sub");

        type Expect = fn(&VerifyError) -> bool;
        let cases: Vec<(&str, String, Expect)> = vec![
            ("bad signature", bad_signature, |e| {
                matches!(e, VerifyError::BadSignature)
            }),
            ("tampered", tampered, |e| {
                matches!(e, VerifyError::BadSignature)
            }),
            ("alg none", none, |e| {
                matches!(e, VerifyError::UnsupportedAlgorithm(_))
            }),
            ("HS256", hs256, |e| {
                matches!(e, VerifyError::UnsupportedAlgorithm(_))
            }),
            ("alg mismatch", mismatch, |e| {
                matches!(e, VerifyError::AlgorithmMismatch)
            }),
            ("wrong typ", wrong_typ, |e| {
                matches!(e, VerifyError::WrongType(_))
            }),
            ("unknown kid", unknown_kid, |e| {
                matches!(e, VerifyError::UnknownKey)
            }),
            ("expired", with("exp", json!(now() - 120)), |e| {
                matches!(e, VerifyError::Expired)
            }),
            ("not yet valid", with("nbf", json!(now() + 120)), |e| {
                matches!(e, VerifyError::NotYetValid)
            }),
            ("wrong aud", with("aud", json!(["other"])), |e| {
                matches!(e, VerifyError::WrongAudience)
            }),
            (
                "wrong iss",
                with("iss", json!("http://evil.example")),
                |e| matches!(e, VerifyError::WrongIssuer),
            ),
            (
                "no sub",
                key.sign(&no_sub),
                |e| matches!(e, VerifyError::MissingClaim(c) if c == "sub"),
            ),
            ("garbage", "not.a.jwt".to_owned(), |e| {
                matches!(e, VerifyError::Malformed(_))
            }),
        ];
        for (name, token, expected) in cases {
            let error = verifier.verify(&token).await.unwrap_err();
            assert!(expected(&error), "{name}: {error:?}");
            assert!(
                !error.to_string().contains(&token),
                "{name} echoed the token"
            );
        }
        // Within the leeway is still fine.
        assert!(
            verifier
                .verify(&with("exp", json!(now() - 5)))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn unknown_kids_refetch_the_key_set_at_most_once_per_interval() {
        let issuer = Issuer::start().await;
        let old = TestKey::ed25519("old");
        publish(&issuer, &[&old]);
        let interval = Duration::from_millis(300);
        let verifier = verifier(&issuer)
            .jwks_refetch_interval(interval)
            .build()
            .unwrap();
        verifier.prefetch().await.unwrap();
        assert_eq!(issuer.jwks_requests(), 1);

        let bogus = |n: usize| {
            let mut header = old.header();
            header.kid = Some(format!("bogus-{n}"));
            jsonwebtoken::encode(&header, &claims(&issuer.url), &old.encoding).unwrap()
        };
        // Right after a fetch: no refetch, however many bogus kids.
        for n in 0..20 {
            let error = verifier.verify(&bogus(n)).await.unwrap_err();
            assert!(matches!(error, VerifyError::UnknownKey), "{error:?}");
        }
        assert_eq!(issuer.jwks_requests(), 1);

        // A rotation: the new key is published, and after the interval a
        // burst of tokens signed with it causes exactly one refetch.
        let new = TestKey::es256("new");
        publish(&issuer, &[&old, &new]);
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let token = new.sign(&claims(&issuer.url));
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let verifier = verifier.clone();
                let token = token.clone();
                tokio::spawn(async move { verifier.verify(&token).await })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(issuer.jwks_requests(), 2);

        // And a flood of bogus kids right after does not refetch either.
        let calls: Vec<_> = (0..50)
            .map(|n| {
                let verifier = verifier.clone();
                let token = bogus(n);
                tokio::spawn(async move { verifier.verify(&token).await })
            })
            .collect();
        for call in calls {
            assert!(call.await.unwrap().is_err());
        }
        assert_eq!(issuer.jwks_requests(), 2);
        // The old key still verifies.
        verifier
            .verify(&old.sign(&claims(&issuer.url)))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_key_set_is_kept_for_its_max_age() {
        let issuer = Issuer::start().await;
        let key = TestKey::ed25519("ed");
        publish(&issuer, &[&key]);
        *issuer.state.jwks_cache_control.lock().unwrap() = Some("public, max-age=1".into());
        let verifier = verifier(&issuer)
            .jwks_refetch_interval(Duration::from_millis(100))
            .build()
            .unwrap();
        let token = key.sign(&claims(&issuer.url));
        verifier.verify(&token).await.unwrap();
        verifier.verify(&token).await.unwrap();
        assert_eq!(issuer.jwks_requests(), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        verifier.verify(&token).await.unwrap();
        assert_eq!(issuer.jwks_requests(), 2);
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let headers = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(
            max_age(&headers("public, max-age=600")),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age(&headers("no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(&headers("public")), None);
        assert_eq!(max_age(&http::HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn the_issuer_being_down_is_unavailable_not_unauthenticated() {
        let verifier = Verifier::builder("http://127.0.0.1:1", AUDIENCE)
            .build()
            .unwrap();
        let key = TestKey::ed25519("ed");
        let error = verifier
            .verify(&key.sign(&claims("http://127.0.0.1:1")))
            .await
            .unwrap_err();
        assert!(
            matches!(error, VerifyError::KeySetUnavailable(_)),
            "{error:?}"
        );
        let response: Response<String> = refusal(&error, true);
        assert_eq!(response.headers()["grpc-status"], "14");
    }

    /// A service behind the layer that answers with the verified subject.
    fn protected(
        verifier: &Verifier,
    ) -> impl Service<
        Request<String>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        VerifyLayer::new(verifier.clone()).layer(tower::service_fn(
            |request: Request<String>| async move {
                let claims = request.extensions().get::<VerifiedClaims>().cloned();
                Ok::<_, Infallible>(Response::new(claims.map(|c| c.sub).unwrap_or_default()))
            },
        ))
    }

    fn request(token: Option<&str>, content_type: &str) -> Request<String> {
        let mut request = Request::post("/tollgate.v1.Things/GetThing")
            .header(header::CONTENT_TYPE, content_type);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(String::new()).unwrap()
    }

    #[tokio::test]
    async fn the_layer_inserts_claims_and_refuses_per_protocol() {
        let issuer = Issuer::start().await;
        let key = TestKey::ed25519("ed");
        publish(&issuer, &[&key]);
        let verifier = verifier(&issuer).build().unwrap();
        let good = key.sign(&claims(&issuer.url));
        let mut expired = claims(&issuer.url);
        expired["exp"] = json!(now() - 120);
        let expired = key.sign(&expired);

        let response = protected(&verifier)
            .oneshot(request(Some(&good), "application/grpc"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), SUB);
        assert!(!response.headers().contains_key("grpc-status"));

        // gRPC: 200, UNAUTHENTICATED in the (trailers-only) headers.
        let response = protected(&verifier)
            .oneshot(request(Some(&expired), "application/grpc+proto"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(response.headers()["grpc-message"], "token expired");
        assert_eq!(response.body(), "");

        // Plain HTTP: 401 with an RFC 6750 challenge.
        let response = protected(&verifier)
            .oneshot(request(Some(&expired), "application/json"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"token expired\""
        );

        // No token at all: no error code (RFC 6750 section 3.1).
        let response = protected(&verifier)
            .oneshot(request(None, "application/json"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let response = protected(&verifier)
            .oneshot(request(None, "application/grpc"))
            .await
            .unwrap();
        assert_eq!(response.headers()["grpc-status"], "16");

        // A required scope the token lacks: 403 / PERMISSION_DENIED.
        let scoped = Verifier::builder(&issuer.url, AUDIENCE)
            .required_scope("admin")
            .build()
            .unwrap();
        let response = protected(&scoped)
            .oneshot(request(Some(&good), "application/json"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap();
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        let response = protected(&scoped)
            .oneshot(request(Some(&good), "application/grpc"))
            .await
            .unwrap();
        assert_eq!(response.headers()["grpc-status"], "7");
    }

    #[tokio::test]
    async fn a_token_from_the_token_source_verifies() {
        let issuer = Issuer::start().await;
        let key = Arc::new(TestKey::rs256("rsa"));
        publish(&issuer, &[&key]);
        let url = issuer.url.clone();
        let signer = key.clone();
        *issuer.state.signer.lock().unwrap() = Some(Box::new(move |_| signer.sign(&claims(&url))));
        let tokens = ClientCredentials::builder("organizations/acme/clients/billing", "secret")
            .issuer(&issuer.url)
            .build()
            .unwrap();
        let token = tokens.access_token().await.unwrap();
        let claims = verifier(&issuer)
            .build()
            .unwrap()
            .verify(token.token().secret())
            .await
            .unwrap();
        assert_eq!(claims.sub, SUB);
    }

    #[tokio::test]
    async fn a_tonic_server_behind_the_layer_serves_a_client_with_a_token_source() {
        use tokio_stream::wrappers::TcpListenerStream;
        use tonic::service::interceptor::InterceptedService;

        use crate::{Client, health::HealthCheckRequest};

        let issuer = Issuer::start().await;
        let key = Arc::new(TestKey::ed25519("ed"));
        publish(&issuer, &[&key]);
        let url = issuer.url.clone();
        let signer = key.clone();
        *issuer.state.signer.lock().unwrap() = Some(Box::new(move |_| signer.sign(&claims(&url))));

        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let verifier = verifier(&issuer).build().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(verifier.layer())
                .add_service(InterceptedService::new(
                    health,
                    move |request: tonic::Request<()>| {
                        let claims = request.extensions().get::<VerifiedClaims>().cloned();
                        log.lock().unwrap().push(claims.map(|c| c.sub));
                        Ok(request)
                    },
                ))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );

        let tokens = ClientCredentials::builder("organizations/acme/clients/billing", "secret")
            .issuer(&issuer.url)
            .build()
            .unwrap();
        let client = Client::builder(format!("http://{address}"))
            .token_source(Arc::new(tokens))
            .connect()
            .await
            .unwrap();
        for _ in 0..3 {
            client
                .health()
                .check(HealthCheckRequest::default())
                .await
                .unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), vec![Some(SUB.to_owned()); 3]);
        assert_eq!(issuer.token_requests(), 1);

        let anonymous = Client::builder(format!("http://{address}"))
            .connect()
            .await
            .unwrap();
        let status = anonymous
            .health()
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(status.message(), "missing bearer token");
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(percent_encode("100% bad\n"), "100%25 bad%0A");
        assert_eq!(quote("say \"hi\"\n"), "say 'hi'?");
    }
}
