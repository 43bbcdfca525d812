//! What the listener does to every request before the router sees it, and
//! to every response after: the peer address and the deadline go into the
//! request extensions (as one [`Arrival`]), the request timeout is
//! enforced, and the request is counted as in flight on its connection
//! until its response body ends.
//! Past [`super::Limits::max_requests_in_flight`] over the whole listener,
//! a request is answered at once (RESOURCE_EXHAUSTED, or 503) instead of
//! being served: load shedding, the bound on memory that the per-connection
//! stream limit alone does not give when a client opens many connections.
//!
//! The in-flight count is what the idle timeout reads. hyper has no idle
//! timeout for servers: HTTP/2 keepalive pings only prove the peer is
//! alive, and HTTP/1's header read timeout only runs between requests. A
//! connection is idle when no request is in flight, and a request is in
//! flight until its response *body* is finished or dropped, not when its
//! head is sent, or a long server stream (WatchEvents) would look idle.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::{Stats, Throttle};
use crate::domain;

/// What the listener knows of a request when it arrives, in the request
/// extensions of every request it serves. One extension rather than one
/// per fact: each costs the request an allocation, a map insert and a
/// free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The peer's address: rate limits and audit records key on its IP.
    pub peer: SocketAddr,
    /// The instant the request must have its response head, and its whole
    /// request body, by: the request timeout or a shorter `grpc-timeout`;
    /// `None` without either. Handlers can see how long they have, and the
    /// trace layer can tell a call cut at its deadline from one the client
    /// abandoned.
    pub deadline: Option<Instant>,
}

impl Arrival {
    /// The peer's IP address, when the request came through the listener
    /// (requests made in-process carry no [`Arrival`]).
    pub fn peer_ip(extensions: &http::Extensions) -> Option<std::net::IpAddr> {
        extensions.get::<Self>().map(|a| a.peer.ip())
    }
}

/// One connection's requests, as the idle and handshake timeouts see
/// them.
#[derive(Debug)]
pub(super) struct ConnState {
    opened: Instant,
    stats: Arc<Stats>,
    in_flight: AtomicUsize,
    seen_request: AtomicBool,
    /// When the last request ended, in milliseconds since `opened`.
    last_active_ms: AtomicU64,
}

impl ConnState {
    pub(super) fn new(stats: Arc<Stats>) -> Self {
        Self {
            opened: Instant::now(),
            stats,
            in_flight: AtomicUsize::new(0),
            seen_request: AtomicBool::new(false),
            last_active_ms: AtomicU64::new(0),
        }
    }

    /// Whether a complete request head has arrived on this connection.
    pub(super) fn seen_request(&self) -> bool {
        self.seen_request.load(Ordering::Acquire)
    }

    /// Requests whose response body is not finished yet.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// When the last request ended (or the connection opened).
    pub(super) fn last_active(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_active_ms.load(Ordering::Acquire))
    }

    fn touch(&self) {
        // Idle timeouts are seconds: the coarse clock (see `clock`).
        let elapsed = crate::clock::coarse_now().saturating_duration_since(self.opened);
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Release);
    }
}

/// A request in flight; dropping it ends the request.
pub(super) struct InFlight(Arc<ConnState>);

impl InFlight {
    /// Counts a new request; also returns how many are in flight on the
    /// whole listener, this one included.
    fn new(conn: &Arc<ConnState>) -> (Self, usize) {
        conn.seen_request.store(true, Ordering::Release);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        let total = conn.stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        (Self(conn.clone()), total)
    }
}

/// What the listener does past its in-flight limit.
pub(super) struct Shedding {
    /// Requests in flight on the whole listener before shedding starts.
    pub(super) max: usize,
    /// The listener's name, for the log line.
    pub(super) name: &'static str,
    /// `tollgate_requests_shed_total{listener}`.
    pub(super) counter: metrics::Counter,
    /// At most one `request limit reached` line per 10 s.
    pub(super) log: Mutex<Throttle>,
}

impl Shedding {
    fn shed(&self, stats: &Stats, grpc: bool) -> Response<axum::body::Body> {
        stats.shed.fetch_add(1, Ordering::Relaxed);
        self.counter.increment(1);
        let shed = self.log.lock().unwrap_or_else(|e| e.into_inner()).hit();
        if let Some(shed) = shed {
            tracing::warn!(
                listener = self.name,
                max_requests_in_flight = self.max,
                shed,
                "request limit reached; new requests are refused until some finish"
            );
        }
        busy(grpc)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first, so an idle check that sees the count reach zero
        // also sees when it did.
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The hyper service of one connection: the router, behind the
/// bookkeeping above.
pub(super) struct ConnService<S> {
    /// The connection's own copy of the router. hyper calls with a shared
    /// reference and tower wants a mutable one; a clone per request would
    /// copy every protocol's layer stack (dozens of reference counts,
    /// shared with the other connections' calls), while this lock is only
    /// ever taken by the connection's own task, so it never waits.
    pub(super) router: Mutex<S>,
    pub(super) conn: Arc<ConnState>,
    pub(super) peer: SocketAddr,
    pub(super) request_timeout: Option<Duration>,
    pub(super) shedding: Arc<Shedding>,
}

impl<S: super::HttpService> hyper::service::Service<Request<Incoming>> for ConnService<S> {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let (guard, in_flight) = InFlight::new(&self.conn);
        let grpc = is_grpc(req.headers());
        if in_flight > self.shedding.max {
            return ResponseFuture {
                inner: None,
                sleep: None,
                deadline: None,
                grpc,
                shed: Some(Box::new(self.shedding.shed(&self.conn.stats, grpc))),
                guard: Some(guard),
            };
        }
        let timeout = match (self.request_timeout, grpc_timeout(req.headers(), grpc)) {
            (Some(limit), Some(asked)) => Some(limit.min(asked)),
            (limit, asked) => limit.or(asked),
        };
        let deadline = timeout.map(|t| Instant::now() + t);
        req.extensions_mut().insert(Arrival {
            peer: self.peer,
            deadline,
        });
        let req = req.map(|inner| DeadlineBody {
            inner,
            sleep: None,
            deadline,
        });
        let inner = {
            // A panic inside `call` leaves a router that is still whole:
            // the layers keep no state between calls.
            let mut router = self.router.lock().unwrap_or_else(|e| e.into_inner());
            tower_service::Service::call(&mut *router, req)
        };
        ResponseFuture {
            inner: Some(inner),
            sleep: None,
            deadline,
            grpc,
            shed: None,
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// The router's future, bounded by the request deadline. The timer is
    /// only armed when the router does not answer at once, so calls served
    /// from caches cost no timer.
    ///
    /// What only the rare paths need (the timer, a shed request's answer)
    /// is boxed: this future is moved into hyper's stream task on every
    /// call, and every byte of it is copied there.
    pub(super) struct ResponseFuture<F> {
        // `None` when the request is shed.
        #[pin]
        inner: Option<F>,
        sleep: Option<Pin<Box<Sleep>>>,
        deadline: Option<Instant>,
        grpc: bool,
        // The answer of a shed request.
        shed: Option<Box<Response<axum::body::Body>>>,
        guard: Option<InFlight>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<axum::body::Body>, Infallible>>,
{
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(response) = this.shed.take() {
            let guard = this.guard.take();
            return Poll::Ready(Ok((*response).map(|inner| TrackedBody { inner, guard })));
        }
        // The deadline first: when it has passed, the listener answers,
        // whatever the handler would make of its request body failing at
        // the same instant, so a timed-out request always looks the same.
        let mut expired = this
            .sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if let (false, Some(inner)) = (expired, this.inner.as_mut().as_pin_mut()) {
            match inner.poll(cx) {
                Poll::Ready(Ok(response)) => {
                    let guard = this.guard.take();
                    return Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, guard })));
                }
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => {}
            }
            match *this.deadline {
                Some(deadline) if this.sleep.is_none() => {
                    let sleep = this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep_until(deadline.into())));
                    // Polled once to register the wake-up (or to find a
                    // deadline already past, as with `grpc-timeout: 0n`).
                    expired = sleep.as_mut().poll(cx).is_ready();
                }
                _ => {}
            }
        }
        if !expired {
            return Poll::Pending;
        }
        // Dropping the router's future (hyper does, once this returns)
        // cancels the handler.
        let guard = this.guard.take();
        Poll::Ready(Ok(
            timed_out(*this.grpc).map(|inner| TrackedBody { inner, guard })
        ))
    }
}

/// The answer to a request that ran out of time: a gRPC status, or for
/// the HTTP protocols the same status in grpc-gateway's JSON (504).
fn timed_out(grpc: bool) -> Response<axum::body::Body> {
    let status = tonic::Status::from(deadline_exceeded());
    if grpc {
        status.into_http()
    } else {
        crate::http::error::gateway_error(&status, None)
    }
}

/// The answer to a request shed at the in-flight limit: RESOURCE_EXHAUSTED
/// with RetryInfo, or for the HTTP protocols 503 with `Retry-After` and
/// the status in grpc-gateway's JSON.
fn busy(grpc: bool) -> Response<axum::body::Body> {
    let status = tonic::Status::from(domain::Error::ResourceExhausted {
        reason: "SERVER_BUSY",
        message: "the server has too many requests in flight; retry later".into(),
        retry_after: Duration::from_secs(1),
    });
    if grpc {
        status.into_http()
    } else {
        let mut response =
            crate::http::error::gateway_error(&status, Some(StatusCode::SERVICE_UNAVAILABLE));
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        response
    }
}

fn deadline_exceeded() -> domain::Error {
    domain::Error::DeadlineExceeded("the request did not complete within its deadline".into())
}

/// gRPC, gRPC-Web and their `+proto`/`+json` variants.
fn is_grpc(headers: &HeaderMap) -> bool {
    crate::http::headers::find(headers, &header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The deadline the client asked for: gRPC's `grpc-timeout` (HTTP/JSON
/// forwards it from `Grpc-Timeout`) or Connect's `connect-timeout-ms`,
/// parsed as the protocol layers parse them. A malformed one is ignored
/// here, as tonic's own server did; the protocol layers refuse it.
/// `connect-timeout-ms` is Connect's, never gRPC's: it is looked for only
/// when the content type is not gRPC (a header lookup less per gRPC call).
fn grpc_timeout(headers: &HeaderMap, grpc: bool) -> Option<Duration> {
    if !grpc
        && let Some(ms) =
            crate::http::headers::find(headers, &crate::http::headers::CONNECT_TIMEOUT_MS)
    {
        return crate::http::headers::parse_connect_timeout(ms);
    }
    crate::http::headers::parse_grpc_timeout(crate::http::headers::find(
        headers,
        &crate::http::headers::GRPC_TIMEOUT,
    )?)
}

pin_project! {
    /// A request body that fails with DEADLINE_EXCEEDED when it has not
    /// ended by the request deadline: a client that sends headers and
    /// never the body (the probe's D1 flood) holds a stream no longer
    /// than that. The timer is armed only when a read has to wait (and
    /// boxed then: the body is moved on every call, the timer seldom
    /// needed).
    pub struct DeadlineBody {
        #[pin]
        inner: Incoming,
        sleep: Option<Pin<Box<Sleep>>>,
        deadline: Option<Instant>,
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let Some(deadline) = *this.deadline else {
            return Poll::Pending;
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        ready!(sleep.as_mut().poll(cx));
        // A status in the error's source chain is what tonic answers with.
        let status = tonic::Status::from(deadline_exceeded());
        Poll::Ready(Some(Err(Box::new(status))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// A response body that keeps its request in flight until it ends or
    /// is dropped.
    pub struct TrackedBody {
        #[pin]
        inner: axum::body::Body,
        guard: Option<InFlight>,
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn grpc_timeouts_parse_per_the_spec() {
        let t = |v: &'static str| grpc_timeout(&headers(&[("grpc-timeout", v)]), true);
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S", "+1S"] {
            assert_eq!(
                grpc_timeout(&headers(&[("grpc-timeout", bad)]), true),
                None,
                "{bad:?}"
            );
        }
        assert_eq!(grpc_timeout(&HeaderMap::new(), true), None);
    }

    #[test]
    fn connects_timeout_is_read_for_connect_calls_only() {
        let both = headers(&[("connect-timeout-ms", "1500"), ("grpc-timeout", "2S")]);
        // A Connect (or HTTP/JSON) call: Connect's header.
        assert_eq!(
            grpc_timeout(&both, false),
            Some(Duration::from_millis(1500))
        );
        // A gRPC call: gRPC's only.
        assert_eq!(grpc_timeout(&both, true), Some(Duration::from_secs(2)));
        let connect_only = headers(&[("connect-timeout-ms", "1500")]);
        assert_eq!(grpc_timeout(&connect_only, true), None);
    }

    #[test]
    fn grpc_is_told_by_its_content_type() {
        assert!(is_grpc(&headers(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&headers(&[(
            "content-type",
            "application/grpc-web+proto"
        )])));
        assert!(!is_grpc(&headers(&[("content-type", "application/json")])));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn a_timed_out_call_answers_deadline_exceeded_or_504() {
        let grpc = timed_out(true);
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "4");
        let plain = timed_out(false);
        assert_eq!(plain.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn a_shed_call_answers_resource_exhausted_or_503() {
        let grpc = busy(true);
        assert_eq!(grpc.headers()["grpc-status"], "8");
        let plain = busy(false);
        assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(plain.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_request_is_in_flight_until_its_guard_drops() {
        let conn = Arc::new(ConnState::new(Arc::new(Stats::default())));
        assert!(!conn.seen_request());
        let (first, one) = InFlight::new(&conn);
        let (second, two) = InFlight::new(&conn);
        assert_eq!((one, two), (1, 2));
        assert!(conn.seen_request());
        assert_eq!((conn.in_flight(), conn.stats.in_flight()), (2, 2));
        drop(first);
        drop(second);
        assert_eq!((conn.in_flight(), conn.stats.in_flight()), (0, 0));
        assert!(conn.last_active() >= conn.opened);
    }
}
