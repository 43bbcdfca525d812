//! [`TollgateChannel`]: the one transport under every typed client. It wraps
//! a tonic [`Channel`] and adds, per call, the credential header, a deadline
//! and retries of methods the protos declare free of side effects.
//!
//! # Why the retry loop is hand-written
//!
//! `tower::retry` needs to clone the request for every attempt, and tonic's
//! request body (`tonic::body::Body`, an encoding stream) is not `Clone`.
//! So for the methods we retry, all unary reads, we collect the small
//! encoded body into [`Bytes`] once and rebuild the request from it for
//! each attempt. Other calls pass through unbuffered.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, header::AUTHORIZATION};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tonic::{Status, body::Body, transport::Channel};
use tower::ServiceExt;
use tower_service::Service;

use crate::{
    Credential,
    credential::REDACTED,
    retry::{self, Backoff},
};

/// The error type of [`TollgateChannel`]. tonic turns it into a
/// [`Status`] (transport errors become UNAVAILABLE or UNKNOWN, an expired
/// deadline stays DEADLINE_EXCEEDED).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The future returned by [`TollgateChannel::call`].
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// The longest deadline a call gets, whatever the timeout says.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Per-call settings shared by every clone of a [`TollgateChannel`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallPolicy {
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
}

/// The transport every typed client of a [`Client`](crate::Client) runs on:
/// a `tower::Service<http::Request<tonic::body::Body>>` over a tonic
/// [`Channel`].
///
/// For every call it
/// - sets `authorization: Bearer <credential>` unless the request already
///   carries an `authorization` header (so one call can act as someone
///   else). A [`TokenSource`](crate::TokenSource) is asked on every attempt;
/// - bounds the call by the configured timeout, or by the caller's shorter
///   `grpc-timeout` (`tonic::Request::set_timeout`), and sends the time left
///   as `grpc-timeout` so the server gives up too. The bound covers the
///   wait for the response head; the body of a stream is not cut off by it.
///   An expired deadline fails with DEADLINE_EXCEEDED;
/// - retries the methods whose proto declares
///   `idempotency_level = NO_SIDE_EFFECTS` (every `Get*` and `List*` of
///   `tollgate.v1`) and `grpc.health.v1.Health/Check`, when they fail with
///   UNAVAILABLE or a transport error, up to `max_retries` times with
///   exponential backoff and full jitter, and never past the deadline.
///   Other methods are sent exactly once.
///
/// Name it when you store a typed client:
/// `OrganizationServiceClient<TollgateChannel>`. Cloning is cheap; clones
/// share the connection.
#[derive(Clone)]
pub struct TollgateChannel {
    inner: Channel,
    credential: Option<Credential>,
    policy: CallPolicy,
}

// === impl TollgateChannel ===

impl TollgateChannel {
    pub(crate) fn new(inner: Channel, credential: Option<Credential>, policy: CallPolicy) -> Self {
        Self {
            inner,
            credential,
            policy,
        }
    }
}

impl fmt::Debug for TollgateChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TollgateChannel")
            .field("inner", &self.inner)
            .field("credential", &self.credential.as_ref().map(|_| REDACTED))
            .field("timeout", &self.policy.timeout)
            .field("max_retries", &self.policy.max_retries)
            .field("backoff", &self.policy.backoff)
            .finish()
    }
}

impl Service<Request<Body>> for TollgateChannel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // Clone-and-swap: `self.inner` is the clone that `poll_ready` made
        // ready, so that one goes into the future and `self` keeps a fresh
        // clone for its next `poll_ready`.
        let clone = self.inner.clone();
        let channel = std::mem::replace(&mut self.inner, clone);
        // The caller's span becomes the parent of Tollgate's.
        crate::trace_context::inject_current(request.headers_mut());
        // A call that brings its own `authorization` keeps it, and a token
        // source is not even asked.
        let credential = match (
            &self.credential,
            request.headers().contains_key(AUTHORIZATION),
        ) {
            (Some(Credential::Static(value)), false) => {
                request.headers_mut().insert(AUTHORIZATION, value.clone());
                None
            }
            (Some(source @ Credential::Source(_)), false) => Some(source.clone()),
            _ => None,
        };
        Box::pin(send(channel, request, credential, self.policy))
    }
}

/// Sends one logical call: once, or with retries for idempotent reads, all
/// within one deadline. `source` is a token source to ask before each
/// attempt; a static credential is already in the headers.
async fn send(
    mut channel: Channel,
    request: Request<Body>,
    source: Option<Credential>,
    policy: CallPolicy,
) -> Result<Response<Body>, BoxError> {
    let budget = retry::grpc_timeout(request.headers())
        .map_or(policy.timeout, |caller| caller.min(policy.timeout));
    // `Instant + Duration` panics on overflow; a timeout of a century is
    // as good as none.
    let deadline = Instant::now() + budget.min(FOREVER);
    let attempts = async {
        if policy.max_retries > 0 && retry::is_idempotent(request.uri().path()) {
            send_with_retries(&mut channel, request, source.as_ref(), policy, deadline).await
        } else {
            attempt(&mut channel, request, source.as_ref(), deadline).await
        }
    };
    let deadline_exceeded = || -> BoxError {
        Status::deadline_exceeded(format!("Tollgate did not answer within {budget:?}")).into()
    };
    match tokio::time::timeout_at(deadline, attempts).await {
        // The channel enforces the `grpc-timeout` we send, too, and may
        // notice first; tonic would report that as CANCELLED.
        Ok(Err(error)) if is_timeout(&*error) => Err(deadline_exceeded()),
        Ok(result) => result,
        Err(_elapsed) => Err(deadline_exceeded()),
    }
}

/// Whether `error` is the channel's own `grpc-timeout` expiring.
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tonic::TimeoutExpired>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Buffers the (small, unary) request body, then sends the request until it
/// succeeds, fails for a reason a retry cannot fix, runs out of retries, or
/// would run past `deadline`. The last outcome is returned as is, so the
/// caller sees the server's own UNAVAILABLE status after the final attempt.
async fn send_with_retries(
    channel: &mut Channel,
    request: Request<Body>,
    source: Option<&Credential>,
    policy: CallPolicy,
    deadline: Instant,
) -> Result<Response<Body>, BoxError> {
    let (parts, body) = request.into_parts();
    let body: Bytes = body.collect().await?.to_bytes();
    let mut retry = 0;
    loop {
        let request = Request::from_parts(parts.clone(), Body::new(Full::new(body.clone())));
        let outcome = attempt(channel, request, source, deadline).await;
        let retryable = match &outcome {
            Ok(response) => retry::is_unavailable(response),
            // A failed token source is final: asking it again at once would
            // most likely fail the same way.
            Err(error) if error.is::<Status>() => false,
            // Besides an expired deadline, every error the channel returns
            // is a transport failure (refused, reset, stream refused,
            // connection lost): for a read, sending it again is always safe.
            Err(error) => !is_timeout(&**error),
        };
        if !retryable || retry >= policy.max_retries {
            return outcome;
        }
        let delay = policy.backoff.delay(retry);
        if Instant::now()
            .checked_add(delay)
            .is_none_or(|wake| wake >= deadline)
        {
            return outcome;
        }
        drop(outcome);
        tokio::time::sleep(delay).await;
        retry += 1;
    }
}

/// One attempt on the wire: asks the token source (if any) for this
/// attempt's credential, then sends the request, telling the server how much
/// time is left. A token source's failure is returned as the [`Status`] the
/// call fails with.
async fn attempt(
    channel: &mut Channel,
    mut request: Request<Body>,
    source: Option<&Credential>,
    deadline: Instant,
) -> Result<Response<Body>, BoxError> {
    if let Some(source) = source {
        let value = source.header().await?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let left = deadline.saturating_duration_since(Instant::now());
    request
        .headers_mut()
        .insert(retry::GRPC_TIMEOUT, retry::encode_grpc_timeout(left));
    Ok(channel.ready().await?.call(request).await?)
}
