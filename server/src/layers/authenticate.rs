//! Authentication and the coarse authorization check, as a tower layer.
//!
//! Reads `authorization: Bearer <key>` or `x-api-key: <key>`, resolves the
//! principal (cached), checks that its roles grant the method's permission
//! somewhere, and inserts `Arc<Principal>` into the request extensions.
//! Handlers then check the permission against the target organization,
//! which only they can read from the message.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::{Status, body::Body};
use tower_layer::Layer;
use tower_service::Service;

use super::BoxFuture;
use crate::{
    domain::{Error, api_key::PresentedKey, authz::Principal},
    policy::Policies,
    store::Store,
};

/// Services that anyone may call: health checks and reflection.
const PUBLIC_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

struct Shared {
    store: Store,
    policies: Arc<Policies>,
}

/// Builds [`Authenticate`] services.
#[derive(Clone)]
pub struct AuthenticateLayer {
    shared: Arc<Shared>,
}

impl AuthenticateLayer {
    pub fn new(store: Store, policies: Arc<Policies>) -> Self {
        Self {
            shared: Arc::new(Shared { store, policies }),
        }
    }
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Refuses unauthenticated or unauthorized calls with a gRPC status.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    shared: Arc<Shared>,
}

// === impl Authenticate ===

impl<S> Service<Request<Body>> for Authenticate<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The clone is not ready yet; keep the one that is (tower's
        // clone-and-swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let checked = shared.check(req.uri().path(), req.headers()).await;
            match checked {
                Ok(Some(principal)) => {
                    tracing::Span::current().record("principal", principal.name());
                    req.extensions_mut().insert(principal);
                    inner.call(req).await
                }
                Ok(None) => inner.call(req).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

impl Shared {
    /// `Ok(None)` for public methods, the principal otherwise.
    async fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Arc<Principal>>, Status> {
        if PUBLIC_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Ok(None);
        }
        // Unknown methods still need credentials: the router then answers
        // UNIMPLEMENTED to authenticated callers only.
        let permission = match self.policies.get(path) {
            Some(p) if p.public => return Ok(None),
            Some(p) => Some(p.permission.as_str()),
            None => None,
        };
        let token = credential(headers)?;
        let key = PresentedKey::parse(token).ok_or_else(|| {
            Status::from(Error::Unauthenticated(
                "unsupported credential: expected a Tollgate API key (tg_…)".into(),
            ))
        })?;
        let principal = self.store.authenticate_key(&key).await?;
        if let Some(permission) = permission.filter(|p| !principal.may(p)) {
            return Err(Error::PermissionDenied(format!(
                "{} lacks permission {permission}",
                principal.name()
            ))
            .into());
        }
        Ok(Some(principal))
    }
}

/// The presented credential: `authorization: Bearer …` wins over
/// `x-api-key`.
fn credential(headers: &http::HeaderMap) -> Result<&str, Status> {
    let missing = || {
        Status::from(Error::Unauthenticated(
            "credentials required: send 'authorization: Bearer <API key>' or 'x-api-key: <API key>'"
                .into(),
        ))
    };
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| missing())?;
        let (scheme, token) = v.split_once(' ').ok_or_else(missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Error::Unauthenticated(format!(
                "unsupported authorization scheme '{scheme}'; use Bearer"
            ))
            .into());
        }
        return Ok(token.trim());
    }
    if let Some(v) = headers.get("x-api-key") {
        return v.to_str().map(str::trim).map_err(|_| missing());
    }
    Err(missing())
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
            "tg_x"
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  tg_x ")])).unwrap(),
            "tg_x"
        );
        assert_eq!(
            credential(&headers(&[("x-api-key", "tg_y")])).unwrap(),
            "tg_y"
        );
        assert_eq!(
            credential(&headers(&[
                ("authorization", "Bearer a"),
                ("x-api-key", "b")
            ]))
            .unwrap(),
            "a"
        );
        assert_eq!(
            credential(&headers(&[])).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Basic dXNlcjpwYXNz")]))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
    }
}
