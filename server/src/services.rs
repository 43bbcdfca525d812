//! Every gRPC service Tollgate serves, behind one dispatch on the service
//! name in the path.
//!
//! Written by hand instead of tonic's `Routes` (an axum router): that
//! router matched the path, cloned a boxed route and boxed its future at
//! two levels (once around the layers, once around each service) on every
//! call, about a microsecond of a cached call's twenty. Here the
//! `tollgate.v1` services are called directly; health, reflection and
//! services added by tests go through a boxed service, which is fine off
//! the hot path.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use http::{Request, Response};
use tollgate::tollgate::v1::{
    api_key_service_server::ApiKeyServiceServer,
    organization_service_server::OrganizationServiceServer,
    service_account_service_server::ServiceAccountServiceServer,
    user_service_server::UserServiceServer,
};
use tower::{ServiceExt as _, util::BoxCloneSyncService};
use tower_service::Service;

use crate::api::{
    api_keys::ApiKeys, organizations::Organizations, service_accounts::ServiceAccounts,
    users::Users,
};

/// A service off the hot path, boxed.
pub type Boxed =
    BoxCloneSyncService<Request<axum::body::Body>, Response<tonic::body::Body>, Infallible>;

/// The response future of every service.
pub type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<Response<tonic::body::Body>, Infallible>> + Send>>;

struct Inner {
    organizations: OrganizationServiceServer<Organizations>,
    users: UserServiceServer<Users>,
    service_accounts: ServiceAccountServiceServer<ServiceAccounts>,
    api_keys: ApiKeyServiceServer<ApiKeys>,
    /// Health, reflection and any extra service, by full service name.
    others: Vec<(String, Boxed)>,
}

/// Every gRPC service; cloning it is one reference count.
#[derive(Clone)]
pub struct Services(Arc<Inner>);

impl Services {
    /// The `tollgate.v1` services, and `others` by full service name.
    pub fn new(
        organizations: OrganizationServiceServer<Organizations>,
        users: UserServiceServer<Users>,
        service_accounts: ServiceAccountServiceServer<ServiceAccounts>,
        api_keys: ApiKeyServiceServer<ApiKeys>,
        others: Vec<(String, Boxed)>,
    ) -> Self {
        Services(Arc::new(Inner {
            organizations,
            users,
            service_accounts,
            api_keys,
            others,
        }))
    }

    /// Boxes a service off the hot path.
    pub fn boxed<S, ResB>(service: S) -> Boxed
    where
        S: Service<Request<axum::body::Body>, Response = Response<ResB>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        ResB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        ResB::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        BoxCloneSyncService::new(
            service.map_response(|r: Response<ResB>| r.map(tonic::body::Body::new)),
        )
    }
}

impl<B> Service<Request<B>> for Services
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // tonic's generated servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ServiceFuture {
        // The service is the path's first segment. A byte scan: `split`'s
        // char searcher cost twice as much on every call.
        let path = request.uri().path().strip_prefix('/').unwrap_or("");
        let service = path
            .as_bytes()
            .iter()
            .position(|b| *b == b'/')
            .and_then(|end| path.get(..end))
            .unwrap_or(path);
        let inner = &self.0;
        // Each generated server is a reference count to clone; `call`
        // needs it mutable.
        match service {
            "tollgate.v1.OrganizationService" => inner.organizations.clone().call(request),
            "tollgate.v1.UserService" => inner.users.clone().call(request),
            "tollgate.v1.ServiceAccountService" => inner.service_accounts.clone().call(request),
            "tollgate.v1.ApiKeyService" => inner.api_keys.clone().call(request),
            name => match inner.others.iter().find(|(n, _)| n == name) {
                Some((_, other)) => {
                    Box::pin(other.clone().oneshot(request.map(axum::body::Body::new)))
                }
                None => {
                    let path = request.uri().path().to_owned();
                    Box::pin(async move {
                        Ok(
                            tonic::Status::from(crate::http::error::HttpError::Unsupported(
                                format!("no such gRPC method: {path}"),
                            ))
                            .into_http(),
                        )
                    })
                }
            },
        }
    }
}

/// A service built on its first call. For reflection: each of its two
/// versions decodes every descriptor with its comments when built, a
/// tenth of a cold start and about a megabyte each, for a service most
/// replicas never answer. The first reflection call pays the build (a few
/// milliseconds, once).
#[derive(Clone)]
pub struct Lazy {
    built: Arc<OnceLock<Result<Boxed, String>>>,
    build: Arc<dyn Fn() -> Result<Boxed, String> + Send + Sync>,
}

impl Lazy {
    /// A service that `build` makes on the first call; a build that fails
    /// answers every call INTERNAL (its reason logged, as for every
    /// internal error).
    pub fn new(build: impl Fn() -> Result<Boxed, String> + Send + Sync + 'static) -> Self {
        Self {
            built: Arc::default(),
            build: Arc::new(build),
        }
    }

    /// The service, built now if it was not yet.
    pub fn get(&self) -> Result<&Boxed, &str> {
        self.built
            .get_or_init(|| (self.build)())
            .as_ref()
            .map_err(String::as_str)
    }
}

impl Service<Request<axum::body::Body>> for Lazy {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<axum::body::Body>) -> ServiceFuture {
        match self.get() {
            Ok(service) => Box::pin(service.clone().oneshot(request)),
            Err(reason) => {
                let status = tonic::Status::from(crate::domain::Error::Internal(format!(
                    "cannot build {}: {reason}",
                    request.uri().path()
                )));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lazy_service_is_built_once_on_its_first_call() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = builds.clone();
        let lazy = Lazy::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let echo = tower::service_fn(|_: Request<axum::body::Body>| async {
                Ok::<_, Infallible>(Response::new(tonic::body::Body::empty()))
            });
            Ok(BoxCloneSyncService::new(echo))
        });
        assert_eq!(builds.load(Ordering::SeqCst), 0, "built before any call");
        for _ in 0..3 {
            let response = lazy
                .clone()
                .oneshot(Request::new(axum::body::Body::empty()))
                .await
                .unwrap();
            assert_eq!(response.status(), http::StatusCode::OK);
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lazy_service_that_cannot_be_built_answers_internal() {
        let lazy = Lazy::new(|| Err("no descriptors".to_owned()));
        let response = lazy
            .clone()
            .oneshot(
                Request::builder()
                    .uri("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        // The reason is logged, never sent, as for every internal error.
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("no descriptors"), "{status:?}");
    }
}
