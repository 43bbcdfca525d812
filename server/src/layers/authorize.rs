//! Authorization as a tower layer: may this caller call this method?
//!
//! Looks the method's [`Policy`] up once, applies it to what `authenticate`
//! found, and hands the decision inward as a [`Caller`] permit (linkerd's
//! route permits): the rate limiter reads the cost from it and the handler
//! finishes the check against the organization the call targets, which
//! only the handler can read from the decoded message. Handlers never name
//! a permission: it travels in the permit, straight from the proto.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use super::{
    authenticate::{Authentication, CREDENTIALS_REQUIRED},
    call::Call,
    request_id::RequestId,
};
use crate::{
    domain::{self, Error, authz::Principal},
    events::WriteContext,
    policy::{Policies, Policy},
};

/// What `authorize` decided for one call to a non-public method: who calls
/// and under which policy. Cheap to clone. The principal is private so a
/// handler cannot act for the caller without scoping it to an organization
/// first.
#[derive(Debug, Clone)]
pub struct Caller {
    principal: Arc<Principal>,
    policy: Arc<Policy>,
    request_id: RequestId,
}

impl Caller {
    /// A permit for `principal` under `policy`; the layer makes these, and
    /// tests of handlers may too.
    pub fn new(principal: Arc<Principal>, policy: Arc<Policy>, request_id: RequestId) -> Self {
        Self {
            principal,
            policy,
            request_id,
        }
    }

    /// Who writes and for which request, for the events of the call's
    /// writes. Names the caller but grants nothing.
    pub fn write_context(&self) -> WriteContext {
        WriteContext::new(self.principal.name(), self.request_id.to_string())
    }

    /// The org-scoped check, with the permission the proto declares for
    /// this method: may the caller do it to resources of `org`? Callers
    /// outside `org` learn nothing about it.
    pub fn authorize(&self, org: &str) -> domain::Result<&Arc<Principal>> {
        if let Some(permission) = &self.policy.permission {
            self.principal.authorize(permission, org)?;
        }
        Ok(&self.principal)
    }

    /// The org-scoped check against the caller's own organization, for
    /// methods whose target is the caller's own business (introspecting a
    /// token it holds).
    pub fn authorize_own(&self) -> domain::Result<&Arc<Principal>> {
        self.authorize(&self.principal.org)
    }

    /// For collections that span organizations (ListOrganizations): a
    /// platform admin sees all (`None`), anyone else only their own
    /// organization, and only if the permission holds there.
    pub fn authorize_platform_or_own(&self) -> domain::Result<Option<&str>> {
        if self.principal.is_platform_admin() {
            return Ok(None);
        }
        self.authorize(&self.principal.org)?;
        Ok(Some(&self.principal.org))
    }

    /// The same permit for `principal`: the caller's credential resolved
    /// again, for a call that lasts (a watch) to check it still holds.
    pub fn with_principal(&self, principal: Arc<Principal>) -> Caller {
        Caller {
            principal,
            policy: self.policy.clone(),
            request_id: self.request_id.clone(),
        }
    }

    /// The method's policy, for its cost.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The method's policy, shared.
    pub fn policy_arc(&self) -> &Arc<Policy> {
        &self.policy
    }
}

/// Builds [`Authorize`] services.
#[derive(Clone)]
pub struct AuthorizeLayer {
    policies: Arc<Policies>,
}

impl AuthorizeLayer {
    /// Enforces `policies`.
    pub fn new(policies: Arc<Policies>) -> Self {
        Self { policies }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            policies: self.policies.clone(),
        }
    }
}

/// Refuses calls the method's policy does not allow, and leaves the
/// [`Caller`] permit in the call's [`Call`] for those it does.
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    policies: Arc<Policies>,
}

/// The outcome for one call.
enum Decision {
    /// Public method: no permit needed.
    Pass,
    /// Authenticated call to a path we do not serve: the router answers
    /// UNIMPLEMENTED, to authenticated callers only, so anonymous scanners
    /// learn nothing about which methods exist.
    Unrouted,
    Permit(Caller),
    Refuse(Status),
}

fn decide(
    policy: Option<&Arc<Policy>>,
    authentication: Authentication,
    request_id: impl FnOnce() -> RequestId,
) -> Decision {
    if policy.is_some_and(|p| p.is_public()) {
        return Decision::Pass;
    }
    let principal = match authentication {
        Authentication::Anonymous => {
            return Decision::Refuse(Error::Unauthenticated(CREDENTIALS_REQUIRED.into()).into());
        }
        Authentication::Refused(e) => return Decision::Refuse(e.clone().into()),
        Authentication::Principal(p) => p,
    };
    let Some(policy) = policy else {
        return Decision::Unrouted;
    };
    // The coarse check: could any organization let this caller do it? The
    // handler narrows it to the target organization.
    if let Some(permission) = &policy.permission
        && let Err(e) = principal.may(permission)
    {
        return Decision::Refuse(e.into());
    }
    Decision::Permit(Caller::new(principal, policy.clone(), request_id()))
}

// === impl Authorize ===

pin_project! {
    /// The future of [`Authorize`]: a refusal ready at once, or the inner
    /// service's future untouched (no allocation on the path every call
    /// takes). One or the other, not both side by side: the futures of
    /// the layers nest, and each byte is copied at every layer outward.
    pub struct AuthorizeFuture<F, ResB> {
        #[pin]
        state: AuthorizeState<F, ResB>,
    }
}

pin_project! {
    #[project = AuthorizeProj]
    enum AuthorizeState<F, ResB> {
        // Allowed (or public): the inner service's future.
        Inner {
            #[pin]
            future: F,
        },
        // Refused: the answer, until taken.
        Refused {
            response: Option<Response<ResB>>,
        },
    }
}

impl<F, ResB, E> Future for AuthorizeFuture<F, ResB>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            AuthorizeProj::Inner { future } => future.poll(cx),
            AuthorizeProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled after the refusal completed: a caller bug; stay
                // pending rather than panic.
                None => Poll::Pending,
            },
        }
    }
}

impl<S, B, ResB> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = AuthorizeFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let call = req.extensions().get::<Arc<Call>>();
        let authentication = call.map_or(Authentication::Anonymous, |c| c.take_authentication());
        let request_id = || {
            call.map(|c| c.request_id().clone())
                .unwrap_or_else(RequestId::assign)
        };
        let decision = decide(
            self.policies.get(req.uri().path()),
            authentication,
            request_id,
        );
        match decision {
            Decision::Refuse(status) => AuthorizeFuture {
                state: AuthorizeState::Refused {
                    response: Some(status.into_http()),
                },
            },
            decision => {
                if let (Decision::Permit(caller), Some(call)) = (decision, call) {
                    call.set_permit(caller);
                }
                // Called at once: the service `poll_ready` readied, no clone.
                AuthorizeFuture {
                    state: AuthorizeState::Inner {
                        future: self.inner.call(req),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::domain::{
        authz::{ROOT_ORG, Role, Roles},
        names::PrincipalKind,
    };

    fn principal(org: &str, roles: &[Role]) -> Arc<Principal> {
        Arc::new(Principal::new(
            org.into(),
            PrincipalKind::ServiceAccount,
            "p".into(),
            Roles::new(roles.to_vec()),
        ))
    }

    fn policies() -> Policies {
        Policies::load(tollgate::FILE_DESCRIPTOR_SET).unwrap()
    }

    fn refused(d: Decision) -> Code {
        match d {
            Decision::Refuse(s) => s.code(),
            _ => Code::Ok,
        }
    }

    #[test]
    fn public_methods_need_no_caller() {
        let p = policies();
        let health = p.get("/grpc.health.v1.Health/Check");
        assert!(matches!(
            decide(health, Authentication::Anonymous, RequestId::assign),
            Decision::Pass
        ));
        let bad = Authentication::Refused(Error::Unauthenticated("x".into()));
        assert!(matches!(
            decide(health, bad, RequestId::assign),
            Decision::Pass
        ));
    }

    #[test]
    fn private_methods_need_a_principal_with_the_permission() {
        let p = policies();
        let create = p.get("/tollgate.v1.UserService/CreateUser");
        assert_eq!(
            refused(decide(create, Authentication::Anonymous, RequestId::assign)),
            Code::Unauthenticated
        );
        assert_eq!(
            refused(decide(
                create,
                Authentication::Refused(Error::Unauthenticated("invalid API key".into())),
                RequestId::assign
            )),
            Code::Unauthenticated
        );
        let viewer = principal("acme", &[Role::Viewer]);
        assert_eq!(
            refused(decide(
                create,
                Authentication::Principal(viewer),
                RequestId::assign
            )),
            Code::PermissionDenied
        );
        let editor = principal("acme", &[Role::Editor]);
        let Decision::Permit(caller) =
            decide(create, Authentication::Principal(editor), RequestId::assign)
        else {
            panic!("editor may create users")
        };
        assert_eq!(
            caller.policy().path.as_ref(),
            "/tollgate.v1.UserService/CreateUser"
        );
        assert!(caller.authorize("acme").is_ok());
        assert!(matches!(
            caller.authorize("other"),
            Err(Error::PermissionDenied(_))
        ));
    }

    #[test]
    fn unknown_paths_need_credentials_and_reach_the_router() {
        assert_eq!(
            refused(decide(None, Authentication::Anonymous, RequestId::assign)),
            Code::Unauthenticated
        );
        let admin = principal(ROOT_ORG, &[Role::Admin]);
        assert!(matches!(
            decide(None, Authentication::Principal(admin), RequestId::assign),
            Decision::Unrouted
        ));
    }

    #[test]
    fn platform_or_own_organization() {
        let p = policies();
        let list = p
            .get("/tollgate.v1.OrganizationService/ListOrganizations")
            .unwrap()
            .clone();
        let root = Caller::new(
            principal(ROOT_ORG, &[Role::Admin]),
            list.clone(),
            RequestId::assign(),
        );
        assert_eq!(root.authorize_platform_or_own().unwrap(), None);
        let viewer = Caller::new(
            principal("acme", &[Role::Viewer]),
            list.clone(),
            RequestId::assign(),
        );
        assert_eq!(viewer.authorize_platform_or_own().unwrap(), Some("acme"));
        let nobody = Caller::new(principal("acme", &[]), list, RequestId::assign());
        assert!(nobody.authorize_platform_or_own().is_err());
    }
}
