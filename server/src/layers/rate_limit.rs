//! Rate limiting as a tower layer, after `authorize`: charges each call
//! the `cost` its method's `(tollgate.v1.policy)` option declares against
//! the caller's organization's policies, refuses what is over
//! (RESOURCE_EXHAUSTED with `RetryInfo` and `QuotaFailure`; UNAVAILABLE
//! when a fail-closed policy cannot be decided), and tells every caller
//! where it stands with the IETF `RateLimit-Policy` and `RateLimit`
//! headers (as gRPC metadata, which the HTTP protocols pass as headers).

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::extract::ConnectInfo;
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{authorize::Caller, call::Call};
use crate::{
    policy::Policies,
    ratelimit::{Facts, RateLimiter, Verdict, headers, refusal::Refusal},
};

/// Builds [`RateLimit`] services.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    policies: Arc<Policies>,
}

impl RateLimitLayer {
    /// Limits calls with `limiter`; `policies` give the cost of public
    /// methods (the permit carries it for the others).
    pub fn new(limiter: RateLimiter, policies: Arc<Policies>) -> Self {
        Self { limiter, policies }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
            policies: self.policies.clone(),
        }
    }
}

/// Charges calls and refuses those over their limits.
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: RateLimiter,
    policies: Arc<Policies>,
}

pin_project! {
    /// The future of [`RateLimit`]: a refusal ready at once, or the inner
    /// future, whose response gets the rate-limit headers.
    pub struct RateLimitFuture<F, ResB> {
        #[pin]
        inner: Option<F>,
        refused: Option<Response<ResB>>,
        headers: Option<(HeaderValue, HeaderValue)>,
    }
}

impl<F, ResB, E> Future for RateLimitFuture<F, ResB>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = Result<Response<ResB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(response) = this.refused.take() {
            return Poll::Ready(Ok(response));
        }
        let Some(future) = this.inner.as_pin_mut() else {
            // Polled after completion: a caller bug; stay pending rather
            // than panic.
            return Poll::Pending;
        };
        let mut response = std::task::ready!(future.poll(cx))?;
        if let Some((policy, state)) = this.headers.take() {
            let h = response.headers_mut();
            h.insert(headers::RATELIMIT_POLICY, policy);
            h.insert(headers::RATELIMIT, state);
        }
        Poll::Ready(Ok(response))
    }
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
    type Future = RateLimitFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let verdict = self.decide(&req);
        let headers = verdict.as_ref().and_then(headers::values);
        match verdict {
            Some(v) if !v.allowed() => {
                let mut response = Refusal::from(&v).into_http::<ResB>();
                if let Some((policy, state)) = headers {
                    let h = response.headers_mut();
                    h.insert(headers::RATELIMIT_POLICY, policy);
                    h.insert(headers::RATELIMIT, state);
                }
                if let Some(retry) = headers::retry_after(&v) {
                    response
                        .headers_mut()
                        .insert(http::header::RETRY_AFTER, retry);
                }
                RateLimitFuture {
                    inner: None,
                    refused: Some(response),
                    headers: None,
                }
            }
            _ => RateLimitFuture {
                inner: Some(self.inner.call(req)),
                refused: None,
                headers,
            },
        }
    }
}

impl<S> RateLimit<S> {
    /// The verdict for `req`; `None` when nothing is charged (a path we
    /// do not serve: the router answers it).
    fn decide<B>(&self, req: &Request<B>) -> Option<Verdict> {
        let ext = req.extensions();
        let call = ext.get::<Arc<Call>>();
        let (cost, path) = match ext.get::<Caller>() {
            Some(caller) => (caller.policy().declared.cost, caller.policy().path.as_ref()),
            None => {
                let policy = self.policies.get(req.uri().path())?;
                (policy.declared.cost, policy.path.as_ref())
            }
        };
        if cost == 0 {
            // Free methods (health, reflection, Envoy's checks) are never
            // limited, so nothing is counted for them either.
            return None;
        }
        let principal = call.and_then(|c| c.principal()).map(|p| p.as_ref());
        let source = ext
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let facts = Facts {
            org: None,
            principal,
            method: path,
            source,
            headers: Some(req.headers()),
            descriptors: None,
        };
        Some(self.limiter.check(&facts, u64::from(cost), false))
    }
}
