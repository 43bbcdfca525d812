//! Rate limiting as a tower layer, after `authorize`: charges each call
//! the `cost` its method's `(tollgate.v1.policy)` option declares against
//! the caller's organization's policies, refuses what is over
//! (RESOURCE_EXHAUSTED with `RetryInfo` and `QuotaFailure`; UNAVAILABLE
//! when a fail-closed policy cannot be decided), and tells every caller
//! where it stands with the IETF `RateLimit-Policy` and `RateLimit`
//! headers (as gRPC metadata, which the HTTP protocols pass as headers).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{BoxFuture, authorize::Caller, call::Call};
use crate::{
    domain::authz::Principal,
    policy::{Policies, Policy},
    ratelimit::{Facts, RateLimiter, Verdict, headers, limiter::Plan, refusal::Refusal},
    usage::Usage,
};

/// Builds [`RateLimit`] services.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    policies: Arc<Policies>,
    usage: Usage,
    enabled: bool,
}

impl RateLimitLayer {
    /// Limits calls with `limiter` and counts them in `usage`; `policies`
    /// give the cost of public methods (the permit carries it for the
    /// others).
    pub fn new(limiter: RateLimiter, policies: Arc<Policies>, usage: Usage) -> Self {
        Self {
            limiter,
            policies,
            usage,
            enabled: true,
        }
    }

    /// With `enabled` false, the services pass every call through
    /// unlimited and without headers, but still count it for usage
    /// (`--rate-limiting false`): a gateway in front may do the limiting,
    /// but usage figures and keys' last use must not stop.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            policies: self.policies.clone(),
            usage: self.usage.clone(),
            enabled: self.enabled,
        }
    }
}

/// Charges calls and refuses those over their limits.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
    policies: Arc<Policies>,
    usage: Usage,
    enabled: bool,
}

pin_project! {
    /// The future of [`RateLimit`]: a refusal ready at once, the inner
    /// future (its response gets the rate-limit headers), or, with a
    /// shared store, the awaited decision first.
    pub struct RateLimitFuture<F, S, B, ResB> {
        #[pin]
        state: State<F, S, B, ResB>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, B, ResB> {
        Refused { response: Option<Response<ResB>> },
        Deciding {
            decision: BoxFuture<Verdict>,
            // The readied service and the request, until the verdict;
            // boxed, as only calls waiting on a shared store need them
            // and every call's future is copied outward layer by layer.
            pending: Option<Box<(S, Request<B>)>>,
        },
        Calling {
            #[pin]
            future: F,
            headers: Option<(HeaderValue, HeaderValue)>,
        },
    }
}

impl<S, B, ResB> Future for RateLimitFuture<S::Future, S, B, ResB>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: Default,
{
    type Output = Result<Response<ResB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Refused { response } => {
                    return match response.take() {
                        Some(r) => Poll::Ready(Ok(r)),
                        // Polled after completion: a caller bug; stay
                        // pending rather than panic.
                        None => Poll::Pending,
                    };
                }
                StateProj::Calling { future, headers } => {
                    let mut response = std::task::ready!(future.poll(cx))?;
                    if let Some((policy, state)) = headers.take() {
                        let h = response.headers_mut();
                        h.insert(headers::RATELIMIT_POLICY_NAME.clone(), policy);
                        h.insert(headers::RATELIMIT_NAME.clone(), state);
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Deciding { decision, pending } => {
                    let verdict = std::task::ready!(decision.as_mut().poll(cx));
                    let next = match pending.take().map(|p| *p) {
                        Some((mut service, request)) => match respond(&verdict) {
                            Err(response) => State::Refused {
                                response: Some(response),
                            },
                            Ok(headers) => State::Calling {
                                future: service.call(request),
                                headers,
                            },
                        },
                        None => State::Refused { response: None },
                    };
                    this.state.set(next);
                }
            }
        }
    }
}

/// Calls `inner` with `req`; its response gets `headers`.
fn pass<S, B, ResB>(
    inner: &mut S,
    req: Request<B>,
    headers: Option<(HeaderValue, HeaderValue)>,
) -> RateLimitFuture<S::Future, S, B, ResB>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    RateLimitFuture {
        state: State::Calling {
            future: inner.call(req),
            headers,
        },
    }
}

/// The headers for an allowed verdict, or the refusal to answer with.
fn respond<ResB: Default>(
    verdict: &Verdict,
) -> Result<Option<(HeaderValue, HeaderValue)>, Response<ResB>> {
    let values = headers::values(verdict);
    if verdict.allowed() {
        return Ok(values);
    }
    if crate::security::admit("rate_limited") {
        let policy = verdict
            .outcomes
            .iter()
            .find(|o| o.refuses())
            .map(|o| &*o.policy)
            .or(verdict.unavailable.as_deref())
            .unwrap_or("");
        tracing::info!(
            target: "tollgate::security",
            event = "rate_limited",
            policy,
            unavailable = verdict.unavailable.is_some(),
            retry_after_ms = verdict.retry_after().map_or(0, |d| d.as_millis() as u64),
            "call refused by a rate limit"
        );
    }
    let mut response = Refusal::from(verdict).into_http::<ResB>();
    let h = response.headers_mut();
    if let Some((policy, state)) = values {
        h.insert(headers::RATELIMIT_POLICY_NAME.clone(), policy);
        h.insert(headers::RATELIMIT_NAME.clone(), state);
    }
    if let Some(retry) = headers::retry_after(verdict) {
        h.insert(http::header::RETRY_AFTER, retry);
    }
    Err(response)
}

impl<S, B, ResB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResB: Default + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, S, B, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !self.enabled {
            self.with_parts(&req, |policy, principal| {
                meter(&self.usage, principal.map(|p| &**p), policy, false);
            });
            return pass(&mut self.inner, req, None);
        }
        if !self.limiter.is_shared() {
            return match self.decide_here(&req) {
                None => pass(&mut self.inner, req, None),
                Some(verdict) => match respond(&verdict) {
                    Ok(headers) => pass(&mut self.inner, req, headers),
                    Err(response) => RateLimitFuture {
                        state: State::Refused {
                            response: Some(response),
                        },
                    },
                },
            };
        }
        let Some(charged) = self.charged(&req) else {
            return pass(&mut self.inner, req, None);
        };
        let Charged {
            plan,
            principal,
            policy,
        } = charged;
        if plan.is_empty() {
            meter(&self.usage, principal.as_deref(), &policy, false);
            return pass(&mut self.inner, req, None);
        }
        // The readied service goes into the future; a clone stays.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        let usage = self.usage.clone();
        RateLimitFuture {
            state: State::Deciding {
                decision: Box::pin(async move {
                    let cost = u64::from(policy.declared.cost);
                    let verdict = limiter.execute(plan, cost, false).await;
                    meter(&usage, principal.as_deref(), &policy, !verdict.allowed());
                    verdict
                }),
                pending: Some(Box::new((service, req))),
            },
        }
    }
}

/// What one call is charged, and by whom.
struct Charged {
    plan: Plan,
    principal: Option<Arc<Principal>>,
    policy: Arc<Policy>,
}

/// Counts a call of `policy`'s method by `principal` for usage (calls of
/// no principal are not metered), charged the cost its option declares.
fn meter(usage: &Usage, principal: Option<&Principal>, policy: &Policy, refused: bool) {
    if let Some(p) = principal {
        usage.record(p, &policy.path, policy.declared.cost, refused);
    }
}

impl<S> RateLimit<S> {
    /// Runs `f` on the method's policy (from the permit, or for public
    /// methods from `policies`) and the caller of `req`, borrowed; `None`
    /// for a path we do not serve (the router answers it).
    fn with_parts<B, T>(
        &self,
        req: &Request<B>,
        f: impl FnOnce(&Arc<Policy>, Option<&Arc<Principal>>) -> T,
    ) -> Option<T> {
        let call = req.extensions().get::<Arc<Call>>();
        let principal = call.and_then(|c| c.principal());
        let run = |permit: Option<&Caller>| {
            let policy = match permit {
                Some(caller) => caller.policy_arc(),
                None => self.policies.get(req.uri().path())?,
            };
            Some(f(policy, principal))
        };
        match call {
            Some(c) => c.with_permit(run),
            None => run(None),
        }
    }

    /// The charges of a call of `policy` by `principal`. Free methods
    /// (health, reflection, Envoy's checks) plan none: they are never
    /// limited, only counted.
    fn plan<B>(&self, req: &Request<B>, policy: &Policy, principal: Option<&Principal>) -> Plan {
        if policy.declared.cost == 0 {
            return Plan::default();
        }
        let source = crate::listener::Arrival::peer_ip(req.extensions());
        self.limiter.plan(&Facts {
            org: None,
            principal,
            method: &policy.path,
            source,
            headers: Some(req.headers()),
            descriptors: None,
        })
    }

    /// Decides `req` on this replica's counters and counts it for usage,
    /// all from borrowed parts: the policy and principal are shared by
    /// every concurrent call of the same caller, and each reference count
    /// taken would be a cache line the cores pass back and forth. `None`
    /// when nothing limits the call.
    fn decide_here<B>(&self, req: &Request<B>) -> Option<Verdict> {
        self.with_parts(req, |policy, principal| {
            let cost = policy.declared.cost;
            let plan = self.plan(req, policy, principal.map(|p| &**p));
            let verdict = (!plan.is_empty())
                .then(|| self.limiter.execute_local(plan, u64::from(cost), false));
            let refused = verdict.as_ref().is_some_and(|v| !v.allowed());
            meter(&self.usage, principal.map(|p| &**p), policy, refused);
            verdict
        })?
    }

    /// What `req` is charged, owned, for a decision awaited on the shared
    /// store; `None` for a path we do not serve.
    fn charged<B>(&self, req: &Request<B>) -> Option<Charged> {
        self.with_parts(req, |policy, principal| Charged {
            plan: self.plan(req, policy, principal.map(|p| &**p)),
            principal: principal.cloned(),
            policy: policy.clone(),
        })
    }
}
