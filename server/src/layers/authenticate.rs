//! Authentication as a tower layer: who is calling?
//!
//! Reads `authorization: Bearer <key>` or `x-api-key: <key>`, resolves the
//! principal (cached) and records the outcome in the request extensions as
//! an [`Authentication`]. It refuses nothing itself: whether a method needs
//! a caller at all is the method's policy, which the `authorize` layer
//! applies next. Keeping the two apart lets JWTs join API keys here without
//! touching the permission logic.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::Request;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{BoxFuture, call::Call};
use crate::{
    domain::{Error, api_key::PresentedKey, authz::Principal, names::PrincipalName},
    store::Store,
};

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
}

impl Credentials {
    /// Resolves against `store`'s keys and principals.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// The store credentials resolve against.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Resolves a bearer credential to its (capped, scoped) principal;
    /// UNAUTHENTICATED when it is not a valid one.
    pub async fn resolve(&self, token: &str) -> Result<Arc<Principal>, Error> {
        match first_step(&self.store, token) {
            Step::Known(Authentication::Principal(p)) => Ok(p),
            Step::Known(Authentication::Refused(e)) => Err(e),
            Step::Known(Authentication::Anonymous) => {
                Err(Error::Unauthenticated(CREDENTIALS_REQUIRED.into()))
            }
            Step::Lookup(key) => self.store.authenticate_key(&key).await,
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

/// Inserts the caller's [`Authentication`] into the request extensions.
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
        inner: Option<F>,
        lookup: Option<BoxFuture<T>>,
    }
}

impl<F, T> Future for AuthenticateFuture<F, T>
where
    F: Future<Output = T>,
{
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.project();
        if let Some(lookup) = this.lookup.as_mut() {
            return lookup.as_mut().poll(cx);
        }
        match this.inner.as_pin_mut() {
            Some(inner) => inner.poll(cx),
            // Never built that way; stay pending rather than panic.
            None => Poll::Pending,
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let step = match credential(req.headers()) {
            Ok(Some(token)) => first_step(&self.credentials.store, token),
            Ok(None) => Step::Known(Authentication::Anonymous),
            Err(e) => Step::Known(Authentication::Refused(e)),
        };
        match step {
            // Called at once, the inner service is the one `poll_ready`
            // readied: no clone (cloning the router's route allocates).
            Step::Known(authentication) => {
                note(&mut req, authentication);
                AuthenticateFuture {
                    inner: Some(self.inner.call(req)),
                    lookup: None,
                }
            }
            Step::Lookup(key) => {
                // Called later: take the ready service along and leave a
                // clone (tower's clone-and-swap).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let store = self.credentials.store.clone();
                AuthenticateFuture {
                    inner: None,
                    lookup: Some(Box::pin(async move {
                        let authentication = match store.authenticate_key(&key).await {
                            Ok(principal) => Authentication::Principal(principal),
                            Err(e) => Authentication::Refused(e),
                        };
                        note(&mut req, authentication);
                        inner.call(req).await
                    })),
                }
            }
        }
    }
}

/// Records the outcome for the layers inside and for the call's log line.
fn note<B>(req: &mut Request<B>, authentication: Authentication) {
    if let Authentication::Principal(p) = &authentication {
        tracing::Span::current().record("principal", p.name());
        if let Some(call) = req.extensions().get::<Arc<Call>>() {
            call.set_principal(p.clone());
        }
    }
    req.extensions_mut().insert(authentication);
}

/// What can be decided without waiting.
enum Step {
    /// Decided.
    Known(Authentication),
    /// A well-formed key the caches do not know yet.
    Lookup(PresentedKey),
}

/// Answers from the caches when they can.
fn first_step(store: &Store, token: &str) -> Step {
    let Some(key) = PresentedKey::parse(token) else {
        return Step::Known(Authentication::Refused(Error::Unauthenticated(
            "unsupported credential: expected a Tollgate API key (tg_…)".into(),
        )));
    };
    match store.resolved_key(&key) {
        Some(Ok(principal)) => Step::Known(Authentication::Principal(principal)),
        Some(Err(e)) => Step::Known(Authentication::Refused(e)),
        None => Step::Lookup(key),
    }
}

/// The message for a call that needs credentials and has none.
pub const CREDENTIALS_REQUIRED: &str =
    "credentials required: send 'authorization: Bearer <API key>' or 'x-api-key: <API key>'";

/// The presented credential, `None` when there is none: `authorization:
/// Bearer …` wins over `x-api-key`. A malformed header is refused rather
/// than treated as absent, so a typo never silently downgrades a caller to
/// anonymous.
fn credential(headers: &http::HeaderMap) -> Result<Option<&str>, Error> {
    let malformed = || Error::Unauthenticated(CREDENTIALS_REQUIRED.into());
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| malformed())?;
        let (scheme, token) = v.split_once(' ').ok_or_else(malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Unauthenticated(format!(
                "unsupported authorization scheme '{scheme}'; use Bearer"
            )));
        }
        return Ok(Some(token.trim()));
    }
    if let Some(v) = headers.get("x-api-key") {
        return v.to_str().map(|t| Some(t.trim())).map_err(|_| malformed());
    }
    Ok(None)
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
