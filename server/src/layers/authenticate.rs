//! Authentication as a tower layer: who is calling?
//!
//! Reads `authorization: Bearer <key>` or `x-api-key: <key>`, resolves the
//! principal (cached) and leaves the outcome, an [`Authentication`], in
//! the call's [`Call`] (made by the trace layer) for `authorize`. It
//! refuses nothing itself: whether a method needs a caller at all is the
//! method's policy, which the `authorize` layer applies next. Keeping the two apart lets JWTs join API keys here without
//! touching the permission logic.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use http::Request;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use tollgate::tollgate::v1::RevokedToken;

use super::{BoxFuture, call::Call};
use crate::{
    domain::{Error, api_key::PresentedKey, authz::Principal, names::PrincipalName},
    events::WriteContext,
    oauth::{
        claims::AccessClaims,
        verifier::{AccessTokens, VerifiedAccess, looks_like_jwt},
    },
    store::Store,
};

/// When a revoked access token would have expired, in seconds.
pub fn expire_seconds(revoked: &RevokedToken) -> i64 {
    revoked.expire_time.as_ref().map_or(0, |t| t.seconds)
}

/// What `authenticate` found out about the caller; `authorize` decides
/// what it means for the method called.
#[derive(Debug, Clone)]
pub enum Authentication {
    /// No credential was presented.
    Anonymous,
    /// A valid credential of this principal.
    Principal(Arc<Principal>),
    /// A credential was presented and refused; the error says why.
    Refused(Error),
}

/// Resolves presented credentials (API keys, and Tollgate's access
/// tokens) to principals: for the authenticate layer, and for the
/// services that take a credential as data (AuthorizationService.Check,
/// introspection). Cheap to clone.
#[derive(Clone)]
pub struct Credentials {
    store: Store,
    tokens: Option<Arc<AccessTokens>>,
}

impl Credentials {
    /// Resolves API keys against `store`'s keys and principals; access
    /// tokens are refused until [`Credentials::with_access_tokens`].
    pub fn new(store: Store) -> Self {
        Self {
            store,
            tokens: None,
        }
    }

    /// Accepts Tollgate's access tokens too.
    pub fn with_access_tokens(mut self, tokens: Arc<AccessTokens>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Verifies an access token, resolving its principal as it is now;
    /// the answer is cached until a change is applied or the token
    /// expires, for any audience (introspection and token exchange read
    /// the same cache the authenticate layer does).
    pub async fn verify_access_token(&self, token: &str) -> Result<Arc<VerifiedAccess>, Error> {
        let tokens = self.access_tokens()?;
        // Read before resolving: a change applied meanwhile makes this
        // entry stale rather than letting it outlive the change.
        let epoch = self.store.caches.epoch();
        if let Some(hit) = tokens.cached(token, epoch) {
            return Ok(hit);
        }
        let claims = tokens.verify_claims(token)?;
        if tokens.revocations_overflowed() && self.store.is_revoked(&claims.jti).await? {
            return Err(Error::Unauthenticated("token revoked".into()));
        }
        let principal = Arc::new(self.principal_of(&claims).await?);
        Ok(tokens.remember(token, claims, principal, epoch))
    }

    /// An access token as a credential for Tollgate: verified (cached),
    /// and meant for Tollgate.
    async fn resolve_jwt(&self, token: &str) -> Result<Arc<Principal>, Error> {
        let verified = self.verify_access_token(token).await?;
        if verified.for_tollgate {
            Ok(verified.principal.clone())
        } else {
            Err(AccessTokens::wrong_audience())
        }
    }

    /// Revokes the access token `revoked.jti` of `org` on this replica at
    /// once; others learn it from its `token.revoked` event through the
    /// bus, or from the database within [`REVOCATION_POLL`].
    pub async fn revoke_access_token(
        &self,
        ctx: &WriteContext,
        org: &str,
        revoked: RevokedToken,
    ) -> Result<(), Error> {
        let (jti, exp) = (revoked.jti.clone(), expire_seconds(&revoked));
        self.store.revoke_jti(ctx, org, revoked).await?;
        if let Some(tokens) = &self.tokens {
            tokens.note_revoked(jti, exp);
        }
        self.store.caches.bump();
        Ok(())
    }

    /// Learns the revocations other replicas recorded, until `shutdown`:
    /// at once from their `token.revoked` events (through the bus, see
    /// [`Store::subscribe_token_revocations`]), and from the database
    /// every [`REVOCATION_POLL`] for when the bus is down.
    pub async fn poll_revocations(self, shutdown: tokio_util::sync::CancellationToken) {
        let Some(tokens) = self.tokens.clone() else {
            return;
        };
        let mut events = self.store.subscribe_token_revocations();
        let mut since = 0;
        loop {
            match self.store.revoked_jtis_since(since).await {
                Ok(rows) => {
                    let fresh = !rows.is_empty();
                    for (jti, exp, revoked) in rows {
                        since = since.max(revoked);
                        tokens.note_revoked(jti, exp.div_euclid(1_000_000));
                    }
                    if fresh {
                        self.store.caches.bump();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "loading token revocations"),
            }
            let next_poll = tokio::time::Instant::now() + REVOCATION_POLL;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(next_poll) => break,
                    event = events.recv() => match event {
                        Ok((jti, exp)) => {
                            tokens.note_revoked(jti, exp);
                            self.store.caches.bump();
                        }
                        // Missed some: the database has them all.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            since = 0;
                            break;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            tokio::time::sleep_until(next_poll).await;
                            break;
                        }
                    },
                }
            }
        }
    }

    fn access_tokens(&self) -> Result<&AccessTokens, Error> {
        self.tokens
            .as_deref()
            .ok_or_else(|| Error::Unauthenticated("access tokens are not accepted here".into()))
    }

    /// The principal an access token acts as now: it must still exist
    /// (same uid), be active, in an active organization.
    async fn principal_of(&self, claims: &AccessClaims) -> Result<Principal, Error> {
        let gone = || Error::Unauthenticated("the token's principal no longer exists".into());
        let name = AccessTokens::subject(claims)?;
        let record = self
            .store
            .principal_record(name.clone())
            .await?
            .ok_or_else(gone)?;
        if !record.active {
            return Err(Error::Unauthenticated(format!("{name} is disabled")));
        }
        match self.store.get_organization(&name.org).await {
            Ok(org) if org.row.is_active() => {}
            Ok(_) => {
                return Err(Error::PermissionDenied(format!(
                    "organizations/{} is suspended",
                    name.org
                )));
            }
            Err(Error::NotFound { .. }) => return Err(gone()),
            Err(e) => return Err(e),
        }
        AccessTokens::principal_of(claims, &record.principal, &record.uid)
    }

    /// The store credentials resolve against.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Resolves a bearer credential to its (capped, scoped) principal;
    /// UNAUTHENTICATED when it is not a valid one.
    pub async fn resolve(&self, token: &str) -> Result<Arc<Principal>, Error> {
        match self.first_step(token) {
            Step::Known(Authentication::Principal(p)) => Ok(p),
            Step::Known(Authentication::Refused(e)) => Err(e),
            Step::Known(Authentication::Anonymous) => {
                Err(Error::Unauthenticated(CREDENTIALS_REQUIRED.into()))
            }
            Step::Lookup(lookup) => self.lookup(lookup).await,
        }
    }

    async fn lookup(&self, lookup: Lookup) -> Result<Arc<Principal>, Error> {
        match lookup {
            Lookup::Key(key) => self.store.authenticate_key(&key).await,
            Lookup::Jwt(token) => self.resolve_jwt(&token).await,
        }
    }

    /// Answers from the caches when they can.
    fn first_step(&self, token: &str) -> Step {
        if !token.starts_with(crate::domain::api_key::PREFIX)
            && let Some(tokens) = &self.tokens
        {
            // The cache first: a hit was well-formed when it was verified,
            // so the shape check (a scan of the whole token) is for misses.
            match tokens.cached(token, self.store.caches.epoch()) {
                Some(hit) if hit.for_tollgate => {
                    return Step::Known(Authentication::Principal(hit.principal.clone()));
                }
                Some(_) => {
                    return Step::Known(Authentication::Refused(AccessTokens::wrong_audience()));
                }
                None if looks_like_jwt(token) => {
                    return Step::Lookup(Lookup::Jwt(token.to_owned()));
                }
                None => {}
            }
        } else if self.tokens.is_none() && looks_like_jwt(token) {
            return Step::Known(Authentication::Refused(Error::Unauthenticated(
                "access tokens are not accepted here".into(),
            )));
        }
        let Some(key) = PresentedKey::parse(token) else {
            return Step::Known(Authentication::Refused(Error::Unauthenticated(
                "unsupported credential: expected an access token (JWT) or a Tollgate API key (tg_…)"
                    .into(),
            )));
        };
        match self.store.resolved_key(&key) {
            Some(Ok(principal)) => Step::Known(Authentication::Principal(principal)),
            Some(Err(e)) => Step::Known(Authentication::Refused(e)),
            None => Step::Lookup(Lookup::Key(key)),
        }
    }

    /// The principal named `name` with its roles, when it can act now:
    /// `Ok(Err(reason))` when it does not exist, is disabled or its
    /// organization is suspended.
    pub async fn principal(
        &self,
        name: PrincipalName,
    ) -> Result<Result<Arc<Principal>, String>, Error> {
        let shown = name.to_string();
        let Some(record) = self.store.principal_record(name.clone()).await? else {
            return Ok(Err(format!("{shown} does not exist")));
        };
        if !record.active {
            return Ok(Err(format!("{shown} is disabled")));
        }
        match self.store.get_organization(&name.org).await {
            Ok(org) if org.row.is_active() => Ok(Ok(record.principal.clone())),
            Ok(_) => Ok(Err(format!("organizations/{} is suspended", name.org))),
            Err(Error::NotFound { .. }) => Ok(Err(format!("{shown} does not exist"))),
            Err(e) => Err(e),
        }
    }
}

/// Builds [`Authenticate`] services.
#[derive(Clone)]
pub struct AuthenticateLayer {
    credentials: Credentials,
}

impl AuthenticateLayer {
    /// Resolves credentials with `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self { credentials }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            credentials: self.credentials.clone(),
        }
    }
}

/// Leaves the caller's [`Authentication`] in the call's [`Call`].
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    credentials: Credentials,
}

// === impl Authenticate ===

pin_project! {
    /// The future of [`Authenticate`]: the inner service's future when the
    /// answer was known at once (no credential, a malformed one, or a key
    /// already resolved: the path nearly every call takes, without an
    /// allocation), or a boxed lookup in the store first.
    pub struct AuthenticateFuture<F, T> {
        #[pin]
        state: AuthenticateState<F, T>,
    }
}

pin_project! {
    #[project = AuthenticateProj]
    enum AuthenticateState<F, T> {
        // Known at once: the inner service's future.
        Inner {
            #[pin]
            future: F,
        },
        // The lookup, then the inner service's future.
        Lookup {
            future: BoxFuture<T>,
        },
    }
}

impl<F, T> Future for AuthenticateFuture<F, T>
where
    F: Future<Output = T>,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.project().state.project() {
            AuthenticateProj::Inner { future } => future.poll(cx),
            AuthenticateProj::Lookup { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, B> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = AuthenticateFuture<S::Future, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (kind, step) = match credential(req.headers()) {
            Ok(Some(token)) => (
                CredentialKind::of(token),
                self.credentials.first_step(token),
            ),
            Ok(None) => (CredentialKind::None, Step::Known(Authentication::Anonymous)),
            Err(e) => (
                CredentialKind::Malformed,
                Step::Known(Authentication::Refused(e)),
            ),
        };
        match step {
            // Called at once, the inner service is the one `poll_ready`
            // readied: no clone (cloning the router's route allocates).
            Step::Known(authentication) => {
                note(&req, kind, authentication);
                AuthenticateFuture {
                    state: AuthenticateState::Inner {
                        future: self.inner.call(req),
                    },
                }
            }
            Step::Lookup(lookup) => {
                // Called later: take the ready service along and leave a
                // clone (tower's clone-and-swap).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let credentials = self.credentials.clone();
                AuthenticateFuture {
                    state: AuthenticateState::Lookup {
                        future: Box::pin(async move {
                            let authentication = match credentials.lookup(lookup).await {
                                Ok(principal) => Authentication::Principal(principal),
                                Err(e) => Authentication::Refused(e),
                            };
                            note(&req, kind, authentication);
                            inner.call(req).await
                        }),
                    },
                }
            }
        }
    }
}

/// What kind of credential a call presented, for the metrics and the
/// security log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CredentialKind {
    /// A Tollgate API key (`tg_…`).
    ApiKey,
    /// Anything else in `authorization: Bearer`: an access token.
    AccessToken,
    /// None at all.
    None,
    /// A header that is not a credential.
    Malformed,
}

impl CredentialKind {
    const ALL: [CredentialKind; 4] = [
        CredentialKind::ApiKey,
        CredentialKind::AccessToken,
        CredentialKind::None,
        CredentialKind::Malformed,
    ];

    fn of(token: &str) -> Self {
        if token.starts_with(crate::domain::api_key::PREFIX) {
            CredentialKind::ApiKey
        } else {
            CredentialKind::AccessToken
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::AccessToken => "access_token",
            CredentialKind::None => "none",
            CredentialKind::Malformed => "malformed",
        }
    }
}

/// `tollgate_auth_total{credential, outcome}`, registered once so a call
/// costs one atomic add: by credential kind, `ok` (a principal),
/// `refused` or `anonymous` (no credential).
fn count(kind: CredentialKind, authentication: &Authentication) {
    static COUNTERS: OnceLock<Vec<[metrics::Counter; 3]>> = OnceLock::new();
    let counters = COUNTERS.get_or_init(|| {
        CredentialKind::ALL
            .iter()
            .map(|k| {
                ["ok", "refused", "anonymous"].map(|outcome| {
                    metrics::counter!("tollgate_auth_total", "credential" => k.as_str(), "outcome" => outcome)
                })
            })
            .collect()
    });
    let outcome = match authentication {
        Authentication::Principal(_) => 0,
        Authentication::Refused(_) => 1,
        Authentication::Anonymous => 2,
    };
    if let Some(row) = counters.get(kind as usize) {
        row[outcome].increment(1);
    }
}

/// Records the outcome for the layers inside, the metrics, the call's log
/// line, and a refusal in the security log.
fn note<B>(req: &Request<B>, kind: CredentialKind, authentication: Authentication) {
    count(kind, &authentication);
    if let Authentication::Refused(e) = &authentication
        && crate::security::admit("credential_refused")
    {
        let call = req.extensions().get::<Arc<Call>>();
        tracing::info!(
            target: "tollgate::security",
            event = "credential_refused",
            credential = kind.as_str(),
            reason = %e,
            request_id = %call.map(|c| c.request_id().to_string()).unwrap_or_default(),
            source = ?source(req),
            "credential refused"
        );
    }
    // The call's span is a debug span (see `trace`): when debug is off
    // there is nothing to record into, and finding the current span costs
    // a thread-local lookup per call.
    if let Authentication::Principal(p) = &authentication
        && tracing::level_enabled!(tracing::Level::DEBUG)
    {
        tracing::Span::current().record("principal", p.name());
    }
    // The trace layer outside made the call; without it nothing was
    // recorded and `authorize` sees an anonymous caller.
    if let Some(call) = req.extensions().get::<Arc<Call>>() {
        if let Authentication::Principal(p) = &authentication {
            call.set_principal(p.clone());
        }
        call.set_authentication(authentication);
    }
}

/// The peer's address, when the listener recorded it.
fn source<B>(req: &Request<B>) -> Option<std::net::IpAddr> {
    crate::listener::Arrival::peer_ip(req.extensions())
}

/// What can be decided without waiting.
enum Step {
    /// Decided.
    Known(Authentication),
    /// A well-formed credential the caches do not know yet.
    Lookup(Lookup),
}

/// What must be looked up.
enum Lookup {
    /// An API key.
    Key(PresentedKey),
    /// An access token to verify.
    Jwt(String),
}

/// How soon a revocation on another replica takes effect here.
pub const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// The message for a call that needs credentials and has none.
pub const CREDENTIALS_REQUIRED: &str = "credentials required: send 'authorization: Bearer <access token or API key>' or 'x-api-key: <API key>'";

/// The presented credential, `None` when there is none: `authorization:
/// Bearer …` wins over `x-api-key`. A malformed header is refused rather
/// than treated as absent, so a typo never silently downgrades a caller to
/// anonymous.
pub fn credential(headers: &http::HeaderMap) -> Result<Option<&str>, Error> {
    let malformed = || Error::Unauthenticated(CREDENTIALS_REQUIRED.into());
    // UTF-8 rather than `HeaderValue::to_str`'s visible-ASCII check: the
    // latter walks a 700-byte JWT byte by byte on every call, and what
    // follows (the key's shape, the token cache, the JWT's shape) refuses
    // anything a token may not contain anyway.
    if let Some(v) = crate::http::headers::find(headers, &http::header::AUTHORIZATION) {
        let v = header_text(v).ok_or_else(malformed)?;
        let (scheme, token) = v.split_once(' ').ok_or_else(malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Unauthenticated(format!(
                "unsupported authorization scheme '{scheme}'; use Bearer"
            )));
        }
        return Ok(Some(token.trim()));
    }
    if let Some(v) = crate::http::headers::find(headers, &crate::http::headers::X_API_KEY) {
        return header_text(v).map(|t| Some(t.trim())).ok_or_else(malformed);
    }
    Ok(None)
}

/// A header value as text (see [`credential`]).
fn header_text(v: &http::HeaderValue) -> Option<&str> {
    std::str::from_utf8(v.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn credentials_are_read_from_either_header() {
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer tg_x")])).unwrap(),
            Some("tg_x")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  tg_x ")])).unwrap(),
            Some("tg_x")
        );
        assert_eq!(
            credential(&headers(&[("x-api-key", "tg_y")])).unwrap(),
            Some("tg_y")
        );
        assert_eq!(
            credential(&headers(&[
                ("authorization", "Bearer a"),
                ("x-api-key", "b")
            ]))
            .unwrap(),
            Some("a")
        );
        assert_eq!(credential(&headers(&[])).unwrap(), None);
        assert!(matches!(
            credential(&headers(&[("authorization", "Basic dXNlcjpwYXNz")])),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            credential(&headers(&[("authorization", "Bearer")])),
            Err(Error::Unauthenticated(_))
        ));
    }
}
