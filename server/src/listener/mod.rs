//! The listeners' accept loop and connection tasks, over hyper-util: one
//! port serving HTTP/1.1 and HTTP/2 (prior-knowledge h2c, or either one
//! over TLS by ALPN), with upgrades, bounded by [`Limits`].
//!
//! Our own loop rather than `tonic::transport::Server` because the same
//! port serves more than gRPC (gRPC-Web, Connect, HTTP/JSON, WebSocket
//! upgrades need HTTP/1.1), and because the hostile-client probe found
//! the tonic server unbounded (`security-probe-1.md`, D1 and D3): no
//! stream, connection or time limit, and a busy loop at the fd limit.
//!
//! - [`limits`]: the bounds and their defaults.
//! - [`tls`]: rustls acceptor with a certificate reloaded from disk.
//! - `request`: per-request bookkeeping (peer address, deadline, in-flight
//!   count) between hyper and the router.
//!
//! Shutdown: cancelling the token stops the accept loop and closes the
//! listening socket at once; every connection is told to finish
//! (HTTP/2 GOAWAY, HTTP/1.1 close after the current response), in-flight
//! requests get up to `grace` to complete, then what is left is closed.
//!
//! An HTTP/1.1 upgrade (WebSocket) leaves hyper once the 101 is sent, and
//! with it this connection task: its slot, idle timeout and drain end
//! there. Whatever serves the upgraded socket must bound it itself (or
//! carry the slot along).

pub mod limits;
mod request;
pub mod tls;

pub use limits::Limits;
pub use request::{Arrival, DeadlineBody};
pub use tls::Tls;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::Poll,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use request::{ConnService, ConnState, Shedding};

/// What a listener serves: a tower service over hyper's requests (their
/// bodies bounded by the request deadline), cloned per connection. The
/// main listener serves [`crate::http::Served`], the admin one an axum
/// router.
pub trait HttpService:
    tower_service::Service<
        http::Request<DeadlineBody>,
        Response = http::Response<axum::body::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> HttpService for T where
    T: tower_service::Service<
            http::Request<DeadlineBody>,
            Response = http::Response<axum::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// How long a connection asked to close (shutdown, idle or handshake
/// timeout) may linger with nothing in flight before it is dropped: time
/// for a GOAWAY and its ping to cross, not for a peer that stopped
/// reading.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// At most one `connection limit reached` or accept-error line per this
/// long, each with the count since the last one.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// TCP keepalive probes start after this much silence, as tonic's server
/// had them: HTTP/1.1 has no pings, and a peer that vanished without a FIN
/// would otherwise hold a streaming response's connection until the
/// kernel gives up retransmitting.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The first and the longest pause after an accept error such as EMFILE.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Live counts of one listener, for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    shed: AtomicU64,
    limit_waits: AtomicU64,
    closed_handshake: AtomicU64,
    closed_idle: AtomicU64,
}

impl Stats {
    /// Connections open now (accepted, not yet closed).
    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests in flight now on every connection: HTTP/2 streams and
    /// HTTP/1.1 requests whose response body has not ended.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests answered at once, unserved, because
    /// `max_requests_in_flight` were in flight.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// How many times the accept loop had to wait for a connection to
    /// close because `max_connections` were open.
    pub fn limit_waits(&self) -> u64 {
        self.limit_waits.load(Ordering::Relaxed)
    }

    /// Connections closed because they sent no complete request head in
    /// time.
    pub fn closed_for_handshake(&self) -> u64 {
        self.closed_handshake.load(Ordering::Relaxed)
    }

    /// Connections closed because they were idle too long.
    pub fn closed_for_idle(&self) -> u64 {
        self.closed_idle.load(Ordering::Relaxed)
    }
}

/// One listener's settings.
#[derive(Clone)]
pub struct Listener {
    /// Names the listener in logs and metrics (`main`, `admin`).
    pub name: &'static str,
    /// The bounds on its clients.
    pub limits: Limits,
    /// TLS, or plaintext when `None`.
    pub tls: Option<TlsAcceptor>,
    /// How long in-flight requests may finish after shutdown begins.
    pub grace: Duration,
    /// Where its live counts go.
    pub stats: Arc<Stats>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("tls", &self.tls.is_some())
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Serves `router` on `listener` until `token` is cancelled, then
    /// drains (see the module docs). Fails only on invalid limits.
    pub async fn serve<S: HttpService>(
        self,
        router: S,
        listener: TcpListener,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        self.limits.validate().context("listener limits")?;
        let local = listener.local_addr().ok();
        let shedding = Arc::new(Shedding {
            max: self.limits.max_requests_in_flight,
            name: self.name,
            counter: metrics::counter!("tollgate_requests_shed_total", "listener" => self.name),
            log: std::sync::Mutex::default(),
        });
        let shared = Arc::new(Shared {
            builder: builder(&self.limits),
            router,
            tls: self.tls,
            limits: self.limits,
            stats: self.stats,
            shutdown: token.clone(),
            force: CancellationToken::new(),
            name: self.name,
            open_gauge: metrics::gauge!("tollgate_open_connections", "listener" => self.name),
            shedding,
        });
        let max = shared.limits.max_connections;
        let slots = Arc::new(Semaphore::new(max));

        accept_loop(&shared, &listener, &slots, local).await;
        // Closing the socket now makes the kernel refuse new clients at
        // once, instead of queueing them for a server that will not answer.
        drop(listener);

        let open = shared.stats.open_connections();
        if open > 0 {
            tracing::info!(listener = shared.name, open, "draining connections");
        }
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.grace, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                listener = shared.name,
                grace = ?self.grace,
                open = shared.stats.open_connections(),
                "in-flight calls did not drain in time; closing them"
            );
            shared.force.cancel();
            let _ = tokio::time::timeout(CLOSE_LINGER, slots.acquire_many(all)).await;
        }
        Ok(())
    }
}

/// What every connection task of a listener shares.
struct Shared<S> {
    builder: Builder<TokioExecutor>,
    router: S,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stats: Arc<Stats>,
    /// Cancelled at shutdown: connections finish what is in flight.
    shutdown: CancellationToken,
    /// Cancelled when the grace period is over: connections close now.
    force: CancellationToken,
    name: &'static str,
    open_gauge: metrics::Gauge,
    shedding: Arc<Shedding>,
}

/// The hyper connection builder for `limits`.
fn builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Without a timer hyper enforces no HTTP/1 timeout at all.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.http1_buffer());
    builder
        .http2()
        // Read on every frame received: the coarse clock (see `clock`).
        .timer(crate::clock::CoarseTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.max_local_error_reset_streams)
        .max_header_list_size(limits.max_header_bytes)
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    builder
}

/// Accepts until `shared.shutdown` is cancelled, one permit of `slots`
/// per connection.
async fn accept_loop<S: HttpService>(
    shared: &Arc<Shared<S>>,
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    local: Option<SocketAddr>,
) {
    let mut at_limit = Throttle::default();
    let mut accept_errors = Throttle::default();
    let mut backoff = BACKOFF_MIN;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Not accepting leaves new clients in the kernel's backlog
                // (and refused once it is full) instead of costing a task
                // and a file descriptor each.
                shared.stats.limit_waits.fetch_add(1, Ordering::Relaxed);
                if let Some(waited) = at_limit.hit() {
                    tracing::warn!(
                        listener = shared.name,
                        addr = local.map(tracing::field::display),
                        max_connections = shared.limits.max_connections,
                        waited,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                }
            }
        };
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = BACKOFF_MIN;
                tokio::spawn(connection(shared.clone(), tcp, peer, permit));
            }
            // The client gave up between SYN and accept: nothing to do.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying at once would
                // spin a core (the probe measured 5 CPU-seconds in 5 s);
                // waiting lets connections close and free descriptors.
                if let Some(errors) = accept_errors.hit() {
                    tracing::error!(
                        listener = shared.name,
                        error = %e,
                        errors,
                        pause = ?backoff,
                        "cannot accept connections"
                    );
                }
                tokio::select! {
                    () = shared.shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Errors of one connection that does not exist any more, as opposed to
/// the listener running out of something.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    )
}

/// Counts events and says when to log them: the first at once, then at
/// most once per [`LOG_EVERY`], with how many happened since.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + LOG_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

/// Why the server closes a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    Handshake,
    Idle,
}

/// One connection, from accept to close; holds its slot until then.
async fn connection<S: HttpService>(
    shared: Arc<Shared<S>>,
    tcp: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let _open = OpenConnection::new(&shared);
    // Small replies must not wait for Nagle's algorithm (40 ms stalls).
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%peer, error = %e, "cannot set TCP keepalive");
    }
    let handshake_deadline = tokio::time::Instant::now() + shared.limits.handshake_timeout;
    match &shared.tls {
        None => drive(&shared, TokioIo::new(tcp), peer, handshake_deadline).await,
        Some(acceptor) => {
            // The TLS handshake counts against the handshake timeout.
            let tls = tokio::select! {
                () = shared.shutdown.cancelled() => return,
                tls = tokio::time::timeout_at(handshake_deadline, acceptor.accept(tcp)) => tls,
            };
            match tls {
                Ok(Ok(tls)) => drive(&shared, TokioIo::new(tls), peer, handshake_deadline).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => {
                    shared
                        .stats
                        .closed_handshake
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        }
    }
}

/// Counts an open connection while it lives.
struct OpenConnection<S>(Arc<Shared<S>>);

impl<S> OpenConnection<S> {
    fn new(shared: &Arc<Shared<S>>) -> Self {
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        shared.open_gauge.increment(1.0);
        Self(shared.clone())
    }
}

impl<S> Drop for OpenConnection<S> {
    fn drop(&mut self) {
        self.0.stats.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.open_gauge.decrement(1.0);
    }
}

/// Serves HTTP on `io` until the peer closes, the connection times out
/// (handshake, idle), or the listener shuts down.
async fn drive<S, I>(
    shared: &Shared<S>,
    io: I,
    peer: SocketAddr,
    handshake_deadline: tokio::time::Instant,
) where
    S: HttpService,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new(shared.stats.clone()));
    let service = ConnService {
        router: std::sync::Mutex::new(shared.router.clone()),
        conn: state.clone(),
        peer,
        request_timeout: shared.limits.request_timeout,
        shedding: shared.shedding.clone(),
    };
    let conn = shared.builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    // A token's check takes its node's lock: the listener's tokens are
    // shared by every connection, so each connection checks a child of its
    // own, which nobody else locks.
    let (force, shutdown) = (shared.force.child_token(), shared.shutdown.child_token());
    let forced = force.cancelled();
    tokio::pin!(forced);
    let shutting_down = shutdown.cancelled();
    tokio::pin!(shutting_down);
    // When the connection was asked to close, if it was.
    let mut closing: Option<tokio::time::Instant> = None;
    let check = tokio::time::sleep_until(handshake_deadline);
    tokio::pin!(check);
    // The connection wakes the task for nearly every request; the tokens
    // and the timer are polled only when one of them woke it (see
    // `crate::wake`).
    let quiet = crate::wake::Quiet::new();
    loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Done(done));
            }
            if quiet.take(cx) {
                let mut cx = quiet.context();
                if forced.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(Event::Forced);
                }
                if closing.is_none() && shutting_down.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(Event::ShuttingDown);
                }
                if check.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(Event::Check);
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Done(done) => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            Event::Forced => return,
            Event::ShuttingDown => {
                conn.as_mut().graceful_shutdown();
                let now = tokio::time::Instant::now();
                closing = Some(now);
                check.as_mut().reset(now + CLOSE_LINGER);
            }
            Event::Check => {
                let now = tokio::time::Instant::now();
                match next_step(&shared.limits, &state, now, handshake_deadline, closing) {
                    Step::CheckAt(at) => check.as_mut().reset(at),
                    Step::Drop => return,
                    Step::Close(why) => {
                        let counter = match why {
                            Close::Handshake => &shared.stats.closed_handshake,
                            Close::Idle => &shared.stats.closed_idle,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, reason = ?why, "closing the connection");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(now);
                        check.as_mut().reset(now + CLOSE_LINGER);
                    }
                }
            }
        }
        // Whatever happened, a future was reset or is due again: the next
        // pass polls them all once.
        quiet.touch();
    }
}

/// What woke a connection task, in the order it is checked.
enum Event<E> {
    /// The connection ended.
    Done(Result<(), E>),
    /// The drain's grace ran out: drop the connection.
    Forced,
    /// Shutdown began: ask the connection to finish.
    ShuttingDown,
    /// The timer fired.
    Check,
}

/// What the connection task does when its timer fires.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Look again then.
    CheckAt(tokio::time::Instant),
    /// Ask the connection to close (GOAWAY, or close after the response).
    Close(Close),
    /// Close the socket now.
    Drop,
}

/// The handshake and idle rules, for a connection in `state` at `now`.
fn next_step(
    limits: &Limits,
    state: &ConnState,
    now: tokio::time::Instant,
    handshake_deadline: tokio::time::Instant,
    closing: Option<tokio::time::Instant>,
) -> Step {
    let in_flight = state.in_flight();
    let last_active = tokio::time::Instant::from_std(state.last_active());
    if let Some(since) = closing {
        // hyper closes by itself once the GOAWAY is through and the last
        // stream ends; a peer that half-sent its preface or stopped
        // answering pings would keep it forever, so wait only while a
        // request is still being answered.
        let until = (since + CLOSE_LINGER).max(last_active + CLOSE_LINGER);
        return if in_flight == 0 && now >= until {
            Step::Drop
        } else {
            Step::CheckAt(until.max(now + CLOSE_LINGER / 4))
        };
    }
    if !state.seen_request() {
        return if now >= handshake_deadline {
            Step::Close(Close::Handshake)
        } else {
            Step::CheckAt(handshake_deadline)
        };
    }
    let Some(idle) = limits.idle_timeout else {
        // Nothing to enforce until shutdown, which has its own branch.
        return Step::CheckAt(now + Duration::from_secs(3600));
    };
    if in_flight > 0 {
        return Step::CheckAt(now + idle);
    }
    let idle_until = last_active + idle;
    if now >= idle_until {
        Step::Close(Close::Idle)
    } else {
        Step::CheckAt(idle_until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_logs_the_first_event_then_counts() {
        let mut t = Throttle::default();
        assert_eq!(t.hit(), Some(1));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        t.last = Some(Instant::now() - LOG_EVERY);
        assert_eq!(t.hit(), Some(3), "the two held back, and this one");
    }

    #[test]
    fn only_per_connection_accept_errors_are_retried_at_once() {
        use std::io::{Error, ErrorKind};
        assert!(is_connection_error(&Error::from(
            ErrorKind::ConnectionAborted
        )));
        // EMFILE
        assert!(!is_connection_error(&Error::from_raw_os_error(24)));
    }

    /// Serves `router` with `limits` on a loopback port; the token stops it.
    async fn serve(
        router: axum::Router,
        limits: Limits,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let token = CancellationToken::new();
        let settings = Listener {
            name: "test",
            limits,
            tls: None,
            grace: Duration::from_secs(1),
            stats: Arc::default(),
        };
        let task = tokio::spawn({
            let token = token.clone();
            async move { settings.serve(router, listener, token).await.unwrap() }
        });
        (addr, token, task)
    }

    /// One HTTP/1.1 GET with `Connection: close`; the whole response.
    async fn get(addr: SocketAddr, path: &str) -> (SocketAddr, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let me = tcp.local_addr().unwrap();
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        (me, out)
    }

    #[tokio::test]
    async fn requests_carry_the_peer_address_and_their_deadline() {
        use axum::{Extension, routing::get as route};
        let router = axum::Router::new().route(
            "/",
            route(|Extension(arrival): Extension<Arrival>| async move {
                let left = arrival
                    .deadline
                    .map(|d| d.saturating_duration_since(Instant::now()));
                format!(
                    "peer={} left={}",
                    arrival.peer,
                    left.map_or(0, |l| l.as_secs())
                )
            }),
        );
        let limits = Limits {
            request_timeout: Some(Duration::from_secs(30)),
            ..Limits::default()
        };
        let (addr, token, task) = serve(router, limits).await;
        let (me, response) = get(addr, "/").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains(&format!("peer={me} ")), "{response}");
        // The deadline is the request timeout from now (minus a moment).
        assert!(response.contains("left=29"), "{response}");
        token.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_slow_handler_gets_a_504_while_others_are_served() {
        use axum::routing::get as route;
        let router = axum::Router::new()
            .route(
                "/slow",
                route(|| async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    "late"
                }),
            )
            .route("/fast", route(|| async { "fast" }));
        let limits = Limits {
            request_timeout: Some(Duration::from_millis(300)),
            ..Limits::default()
        };
        let (addr, token, task) = serve(router, limits).await;
        let started = Instant::now();
        let (_, slow) = get(addr, "/slow").await;
        assert!(slow.starts_with("HTTP/1.1 504"), "{slow}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let (_, fast) = get(addr, "/fast").await;
        assert!(fast.starts_with("HTTP/1.1 200"), "{fast}");
        token.cancel();
        task.await.unwrap();
    }

    #[test]
    fn handshake_then_idle_then_close() {
        let limits = Limits {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(120)),
            ..Limits::default()
        };
        let state = ConnState::new(Arc::new(Stats::default()));
        let start = tokio::time::Instant::now();
        let hs = start + limits.handshake_timeout;
        // No request yet: wait for the handshake deadline, then close.
        assert_eq!(
            next_step(&limits, &state, start, hs, None),
            Step::CheckAt(hs)
        );
        assert_eq!(
            next_step(&limits, &state, hs, hs, None),
            Step::Close(Close::Handshake)
        );
        // Once closing, nothing in flight: dropped after the linger.
        assert_eq!(
            next_step(&limits, &state, hs + CLOSE_LINGER, hs, Some(hs)),
            Step::Drop
        );
    }
}
