//! The main listener against hostile and ordinary clients
//! (`security-probe-1.md`, D1 and D3): a flood of body-less HTTP/2 streams,
//! idle and half-open connections, slowloris, the connection cap, HTTP/1.1
//! and h2c on one port, request timeouts, HTTP/2 keep-alive pings,
//! draining at shutdown, and TLS
//! with a certificate reloaded from disk.
//!
//! Every test starts its own server, on SQLite (the listener does not care
//! about the backend), with the limits it exercises lowered so it runs in
//! seconds. Figures (RSS, latencies) are printed; run with `--nocapture`
//! to see them.

use std::{
    collections::VecDeque,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, ensure};
use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinHandle,
};
use tollgate_client::health::{HealthCheckRequest, ServingStatus};
use tollgate_e2e::{Backend, Client, TestServer, http};

// ===== helpers =====

/// The whole test process's resident set, in kB (the server runs in it).
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One health check on a new connection, bounded to `limit`; its latency.
async fn health_check(client: &Client, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let reply = tokio::time::timeout(limit, client.health().check(HealthCheckRequest::default()))
        .await
        .map_err(|_| anyhow!("no health answer within {limit:?}"))?
        .map_err(|status| anyhow!("health check failed: {status:?}"))?
        .into_inner();
    ensure!(
        reply.status == ServingStatus::Serving as i32,
        "not serving: {reply:?}"
    );
    Ok(start.elapsed())
}

/// A health check on a fresh connection of its own.
async fn honest_check(server: &TestServer, limit: Duration) -> anyhow::Result<Duration> {
    health_check(&server.anonymous(), limit).await
}

/// An HTTP/2 (prior knowledge) connection made with the `h2` crate, which
/// lets a test do what no well-behaved client would.
async fn h2_connect(addr: SocketAddr) -> anyhow::Result<(SendRequest<Bytes>, JoinHandle<()>)> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = h2::client::handshake(tcp).await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((send, task))
}

/// The headers of a `grpc.health.v1.Health/Check` call.
fn health_request(addr: SocketAddr, grpc_timeout: Option<&str>) -> ::http::Request<()> {
    let mut req = ::http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = grpc_timeout {
        req = req.header("grpc-timeout", t);
    }
    req.body(()).expect("a valid request")
}

/// `HealthCheckRequest {}` as one gRPC message: uncompressed, length 0.
const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

/// How a raw HTTP/2 call ended: its HTTP status and `grpc-status`.
#[derive(Debug)]
struct Outcome {
    http: u16,
    grpc: Option<String>,
}

async fn outcome(response: ResponseFuture) -> anyhow::Result<Outcome> {
    let response = response.await?;
    let http = response.status().as_u16();
    if let Some(code) = response.headers().get("grpc-status") {
        return Ok(Outcome {
            http,
            grpc: Some(code.to_str()?.to_owned()),
        });
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await?;
    Ok(Outcome {
        http,
        grpc: trailers
            .and_then(|t| t.get("grpc-status").cloned())
            .map(|v| v.to_str().unwrap_or("?").to_owned()),
    })
}

/// Reads until the server closes the connection; when it did, or `None`
/// if it was still open after `limit`. A reset counts as closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, read_all)
        .await
        .ok()
        .map(|()| Instant::now())
}

/// The value of the `/metrics` sample `name` with every one of `labels`.
async fn metric(server: &TestServer, name: &str, labels: &[&str]) -> f64 {
    let body = http::get(server.admin_addr(), "/metrics")
        .await
        .expect("GET /metrics")
        .body;
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits up to `limit` for `check` to hold.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Installs the subscriber that writes WARN and above into the captured
/// log (see [`tollgate_e2e::logs`]).
fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
            .with_ansi(false)
            .with_writer(|| tollgate_e2e::logs::Capture)
            .try_init();
    });
}

/// Captured log lines that contain every one of `needles`.
fn log_lines(needles: &[&str]) -> Vec<String> {
    tollgate_e2e::logs::captured()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

// ===== D1: streams =====

/// What one attacking connection achieved.
#[derive(Debug, Default)]
struct AttackReport {
    /// Streams opened (HEADERS sent, no body ever).
    sent: usize,
    /// Streams the server refused (REFUSED_STREAM): over its limit.
    refused: usize,
    /// Streams the server ended with DEADLINE_EXCEEDED.
    answered: usize,
    /// Connections the server closed on the attacker.
    reconnects: usize,
    /// The largest `SETTINGS_MAX_CONCURRENT_STREAMS` the server sent.
    advertised: Option<usize>,
    /// Streams held open at the end, on a fresh connection.
    held: usize,
}

/// An attacking connection, still holding its last streams open.
struct Attacker {
    _send: SendRequest<Bytes>,
    conn: JoinHandle<()>,
    _held: VecDeque<Held>,
}

/// Waits (up to 2 s) for the server's SETTINGS, which arrive just after
/// the handshake; until then h2 assumes no stream limit.
async fn settings_received(send: &SendRequest<Bytes>) {
    let waited = Instant::now();
    while send.current_max_send_streams() == usize::MAX && waited.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A stream the attacker holds open.
type Held = (ResponseFuture, h2::SendStream<Bytes>);

/// Opens `streams` body-less `Health/Check` streams over one connection,
/// as an attacker would: it takes every slot the server's SETTINGS allow
/// (capped at the probe's 20,000 per connection), never sends a body, and
/// waits for a stream to end when every slot is taken (counting those the
/// server refuses). Each stream carries
/// `grpc-timeout: 50m`, so the server ends it after 50 ms instead of
/// holding it for the request timeout (60 s), and the flood goes through
/// in seconds. Finally, on a fresh connection and with no deadline, it
/// opens every stream it may and holds them, as the probe's flood did.
///
/// It never gives a stream up itself: resetting streams faster than the
/// server accepts them is the rapid-reset attack, which h2 answers with a
/// GOAWAY ("too_many_resets") after 20; if the server closes the
/// connection anyway, it comes back on a new one.
async fn attack(addr: SocketAddr, streams: usize) -> anyhow::Result<(Attacker, AttackReport)> {
    const PER_CONNECTION: usize = 20_000;
    let mut report = AttackReport::default();
    let mut held: VecDeque<Held> = VecDeque::new();
    let (mut send, mut conn) = h2_connect(addr).await?;
    settings_received(&send).await;
    while report.sent < streams {
        let advertised = send.current_max_send_streams();
        if advertised != usize::MAX {
            report.advertised = Some(report.advertised.unwrap_or(0).max(advertised));
        }
        let slots = advertised.min(PER_CONNECTION);
        // Every slot taken: wait for the oldest stream to end (they all
        // have the same deadline). h2 would queue more streams in the
        // client rather than make `ready` wait.
        while held.len() >= slots {
            let Some((response, _stream)) = held.pop_front() else {
                break;
            };
            match response.await {
                Ok(answer) => {
                    if answer
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|code| code == "4")
                    {
                        report.answered += 1;
                    }
                }
                Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
                    report.refused += 1;
                }
                Err(_) => {}
            }
        }
        let sent = match send.ready().await {
            Ok(mut ready) => ready
                .send_request(health_request(addr, Some("50m")), false)
                .map(|pair| (ready, pair)),
            Err(e) => Err(e),
        };
        match sent {
            Ok((ready, stream)) => {
                send = ready;
                held.push_back(stream);
                report.sent += 1;
            }
            Err(_) => {
                report.reconnects += 1;
                ensure!(
                    report.reconnects < 100,
                    "the server keeps closing: {report:?}"
                );
                held.clear();
                conn.abort();
                (send, conn) = h2_connect(addr).await?;
                settings_received(&send).await;
            }
        }
    }

    held.clear();
    conn.abort();
    (send, conn) = h2_connect(addr).await?;
    settings_received(&send).await;
    let slots = send.current_max_send_streams().min(PER_CONNECTION);
    for _ in 0..slots {
        let mut ready = send.ready().await?;
        held.push_back(ready.send_request(health_request(addr, None), false)?);
        send = ready;
        report.held += 1;
    }
    Ok((
        Attacker {
            _send: send,
            conn,
            _held: held,
        },
        report,
    ))
}

/// The tests of this file run one at a time: several load the machine and
/// measure this process's memory and timing, which any test running
/// beside them would skew.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bodyless_streams_stays_bounded() {
    let _alone = HEAVY.lock().await;
    const CONNECTIONS: usize = 5;
    const STREAMS: usize = 100_000;
    const RSS_BOUND_KB: u64 = 150 * 1024;
    let server = TestServer::start(&Backend::Sqlite).await.expect("start");
    let addr = server.grpc_addr();
    let stats = server.listener_stats();
    honest_check(&server, Duration::from_secs(5))
        .await
        .expect("warm-up");
    let rss_before = rss_kb();
    let started = Instant::now();

    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|_| tokio::spawn(attack(addr, STREAMS / CONNECTIONS)))
        .collect();
    // Meanwhile an honest client, on a new connection each time.
    let (mut latencies, mut peak_in_flight, mut peak_rss) = (Vec::new(), 0, rss_before);
    while !attackers.iter().all(JoinHandle::is_finished) {
        let latency = honest_check(&server, Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("during the flood, after {:?}: {e:#}", started.elapsed()));
        latencies.push(latency);
        peak_in_flight = peak_in_flight.max(stats.in_flight());
        peak_rss = peak_rss.max(rss_kb());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let flood_took = started.elapsed();
    let mut held = Vec::new();
    let mut total = AttackReport::default();
    for attacker in attackers {
        let (attacker, report) = attacker.await.expect("attacker task").expect("attack");
        assert_eq!(
            report.advertised,
            Some(100),
            "SETTINGS_MAX_CONCURRENT_STREAMS: {report:?}"
        );
        total.sent += report.sent;
        total.refused += report.refused;
        total.answered += report.answered;
        total.reconnects += report.reconnects;
        total.held += report.held;
        held.push(attacker);
    }
    // Every attacking connection now holds all the streams it may, each
    // waiting for a body that never comes.
    assert_eq!(total.held, CONNECTIONS * 100);
    assert!(
        eventually(Duration::from_secs(5), || stats.in_flight() == total.held).await,
        "the held streams are not all being served: {} in flight",
        stats.in_flight()
    );
    let held_in_flight = stats.in_flight();
    let rss_held = rss_kb();
    peak_rss = peak_rss.max(rss_held);
    peak_in_flight = peak_in_flight.max(held_in_flight);
    latencies.sort();
    let max_latency = latencies.last().copied().unwrap_or_default();
    eprintln!(
        "flood: {} streams over {CONNECTIONS} connections in {flood_took:?} \
         ({} refused, {} DEADLINE_EXCEEDED, {} reconnects), then {} held; \
         in flight at most {peak_in_flight}, {held_in_flight} while held; RSS before \
         {rss_before} kB, peak {peak_rss} kB (+{} kB); {} honest checks, slowest {max_latency:?}",
        total.sent,
        total.refused,
        total.answered,
        total.reconnects,
        total.held,
        peak_rss.saturating_sub(rss_before),
        latencies.len(),
    );
    assert_eq!(total.sent, STREAMS);
    // Each stream ended at its deadline, but for the last ones each
    // connection had open when it moved on, and a few the server refused
    // (a slot the client saw free a moment before the server did).
    assert!(
        total.answered + total.refused + CONNECTIONS * 100 >= STREAMS,
        "streams not ended at their deadline: {total:?}"
    );
    assert!(total.refused < STREAMS / 100, "{total:?}");
    assert!(
        peak_in_flight <= CONNECTIONS * 100 + 10,
        "more streams in flight than {CONNECTIONS} x 100: {peak_in_flight}"
    );
    assert!(
        peak_rss.saturating_sub(rss_before) < RSS_BOUND_KB,
        "RSS grew from {rss_before} kB to {peak_rss} kB"
    );
    assert!(
        !latencies.is_empty(),
        "no honest check ran during the flood"
    );

    // The attacker leaves: every stream it held ends.
    for attacker in held {
        attacker.conn.abort();
        drop(attacker);
    }
    assert!(
        eventually(Duration::from_secs(5), || stats.in_flight() == 0).await,
        "{} requests still in flight after the attackers left",
        stats.in_flight()
    );
    honest_check(&server, Duration::from_secs(1))
        .await
        .expect("after the flood");
    eprintln!("after the attackers left: RSS {} kB", rss_kb());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_limit_are_shed() {
    let _alone = HEAVY.lock().await;
    const LIMIT: usize = 50;
    capture_logs();
    let server = TestServer::start_configured(&Backend::Sqlite, |c| {
        c.limits.max_requests_in_flight = LIMIT;
    })
    .await
    .expect("start");
    let addr = server.grpc_addr();
    let stats = server.listener_stats();

    // Every slot of the listener taken by streams that never send a body.
    let (mut send, conn) = h2_connect(addr).await.expect("connect");
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        send = send.ready().await.expect("ready");
        held.push(
            send.send_request(health_request(addr, None), false)
                .expect("send"),
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || stats.in_flight() == LIMIT).await,
        "{} in flight",
        stats.in_flight()
    );

    // Anything more is answered at once, unserved, on any connection.
    let (mut other, _other_conn) = h2_connect(addr).await.expect("connect");
    let started = Instant::now();
    for _ in 0..10 {
        other = other.ready().await.expect("ready");
        let (response, _body) = other
            .send_request(health_request(addr, None), false)
            .expect("send");
        let ended = outcome(response).await.expect("an answer");
        assert_eq!(ended.grpc.as_deref(), Some("8"), "{ended:?}");
    }
    let status = server
        .anonymous()
        .health()
        .check(HealthCheckRequest::default())
        .await
        .expect_err("shed");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let shed_took = started.elapsed();
    assert!(shed_took < Duration::from_secs(2), "{shed_took:?}");
    assert!(stats.shed() >= 11);
    let lines = log_lines(&["request limit reached", "max_requests_in_flight=50"]);
    assert_eq!(lines.len(), 1, "one rate-limited warning: {lines:#?}");

    // The hog leaves: served again.
    drop(held);
    conn.abort();
    assert!(
        eventually(Duration::from_secs(5), || stats.in_flight() == 0).await,
        "{} in flight",
        stats.in_flight()
    );
    honest_check(&server, Duration::from_secs(1))
        .await
        .expect("served once the hog left");
    eprintln!("shed: 11 calls refused in {shed_took:?} while {LIMIT} were held");
}

// ===== D1: request timeout =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_end_at_the_request_timeout_but_streams_do_not() {
    let _alone = HEAVY.lock().await;
    const CHECK: &str = "method=\"/grpc.health.v1.Health/Check\"";
    const DEADLINE: &str = "code=\"DEADLINE_EXCEEDED\"";
    let server = TestServer::start_configured(&Backend::Sqlite, |c| {
        c.limits.request_timeout = Some(Duration::from_secs(1));
    })
    .await
    .expect("start");
    let addr = server.grpc_addr();
    let counted = metric(&server, "tollgate_grpc_requests_total", &[CHECK, DEADLINE]).await;
    let (mut send, _conn) = h2_connect(addr).await.expect("connect");

    // No body ever: DEADLINE_EXCEEDED at the request timeout.
    let started = Instant::now();
    let (response, _body) = send
        .send_request(health_request(addr, None), false)
        .expect("send");
    let ended = outcome(response).await.expect("an answer");
    let took = started.elapsed();
    assert_eq!(ended.grpc.as_deref(), Some("4"), "{ended:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A shorter grpc-timeout wins.
    let started = Instant::now();
    let (response, _body) = send
        .send_request(health_request(addr, Some("200m")), false)
        .expect("send");
    let ended = outcome(response).await.expect("an answer");
    let took = started.elapsed();
    assert_eq!(ended.grpc.as_deref(), Some("4"), "{ended:?}");
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(900),
        "grpc-timeout 200m took {took:?}"
    );

    // A call that sends its body is answered.
    let (response, mut body) = send
        .send_request(health_request(addr, None), false)
        .expect("send");
    body.send_data(Bytes::from_static(EMPTY_MESSAGE), true)
        .expect("body");
    let ended = outcome(response).await.expect("an answer");
    assert_eq!((ended.http, ended.grpc.as_deref()), (200, Some("0")));

    // Both cut calls are counted as DEADLINE_EXCEEDED, not CANCELLED.
    assert!(
        metric(&server, "tollgate_grpc_requests_total", &[CHECK, DEADLINE]).await >= counted + 2.0,
        "cut calls not counted as DEADLINE_EXCEEDED"
    );

    // A server stream that is sending outlives the request timeout.
    let channel = tonic::transport::Channel::from_shared(server.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("first update");
    assert!(first.is_some(), "the watch ended at once");
    let later = tokio::time::timeout(Duration::from_millis(2500), watch.message()).await;
    assert!(
        later.is_err(),
        "the watch stream ended past the request timeout: {later:?}"
    );

    // Not gRPC (by its content type): an HTTP/1.1 request whose body never
    // completes gets a 504. The body starts like a gRPC message of 100
    // bytes, so the service waits for the rest.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: x\r\n\
          content-type: application/json\r\ncontent-length: 105\r\n\r\n\0\0\0\0\x64",
    )
    .await
    .expect("write");
    let mut head = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut head))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
}

// ===== D3: connections =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let _alone = HEAVY.lock().await;
    const IDLE: usize = 1000;
    let server = TestServer::start_configured(&Backend::Sqlite, |c| {
        c.limits.handshake_timeout = Duration::from_secs(1);
        c.limits.idle_timeout = Some(Duration::from_secs(1));
    })
    .await
    .expect("start");
    let addr = server.grpc_addr();
    let stats = server.listener_stats();

    let opened = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let connect_took = opened.elapsed();
    // Served while they sit there.
    let latency = honest_check(&server, Duration::from_secs(1))
        .await
        .expect("health with 1000 idle connections");
    // Accepted: open still, or already closed at the handshake timeout
    // (on a loaded machine opening 1000 may take longer than it).
    let accepted = || stats.open_connections() + stats.closed_for_handshake() as usize;
    assert!(
        eventually(Duration::from_secs(2), || accepted() >= IDLE).await,
        "only {} connections accepted",
        accepted()
    );

    // An HTTP/2 client that made one call, then went quiet.
    let (mut send, conn) = h2_connect(addr).await.expect("connect");
    let (response, mut body) = send
        .send_request(health_request(addr, None), false)
        .expect("send");
    body.send_data(Bytes::from_static(EMPTY_MESSAGE), true)
        .expect("body");
    assert_eq!(
        outcome(response).await.expect("answer").grpc.as_deref(),
        Some("0")
    );
    let quiet_since = Instant::now();

    // Every silent connection is closed soon after the handshake timeout.
    let closes = futures::future::join_all(
        idle.iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(6))),
    )
    .await;
    let open = closes.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of {IDLE} idle connections still open");
    let first_closed = closes.iter().flatten().min().map(|t| *t - opened);
    let all_closed = closes.iter().flatten().max().map(|t| *t - opened);
    let (Some(first_closed), Some(all_closed)) = (first_closed, all_closed) else {
        panic!("no close seen")
    };
    assert!(
        first_closed >= Duration::from_millis(900),
        "closed before the handshake timeout: {first_closed:?}"
    );
    assert!(
        all_closed < Duration::from_secs(5),
        "closing took {all_closed:?}"
    );
    // The quiet HTTP/2 connection gets a GOAWAY after the idle timeout.
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle HTTP/2 connection was not closed")
        .expect("connection task");
    let quiet_for = quiet_since.elapsed();
    assert!(quiet_for >= Duration::from_millis(900), "{quiet_for:?}");
    assert!(stats.closed_for_handshake() >= IDLE as u64);
    assert!(stats.closed_for_idle() >= 1);
    eprintln!(
        "idle: {IDLE} connections opened in {connect_took:?}, health answered in {latency:?} \
         among them, all closed {all_closed:?} after the first opened; the quiet HTTP/2 \
         connection closed after {quiet_for:?}"
    );
    assert!(
        eventually(Duration::from_secs(2), || stats.open_connections() == 0).await,
        "{} connections still counted open",
        stats.open_connections()
    );
}

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// One HTTP/2 frame as read off the wire.
struct RawFrame {
    kind: u8,
    flags: u8,
}

/// Reads frames until the server closes the connection or `limit` has
/// passed; each with when it arrived, and when the connection closed.
async fn frames_until_closed(
    tcp: &mut TcpStream,
    limit: Duration,
) -> (Vec<(Instant, RawFrame)>, Option<Instant>) {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, tcp.read(&mut chunk)).await {
            Err(_) => return (frames, None),
            Ok(Ok(0) | Err(_)) => return (frames, Some(Instant::now())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            frames.push((
                Instant::now(),
                RawFrame {
                    kind: buf[3],
                    flags: buf[4],
                },
            ));
            buf.drain(..9 + len);
        }
    }
}

/// An HTTP/2 frame header and payload.
fn raw_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A string literal in HPACK, without Huffman coding.
fn hpack_str(s: &str) -> Vec<u8> {
    let mut out = vec![u8::try_from(s.len()).expect("short")];
    out.extend_from_slice(s.as_bytes());
    out
}

// ===== HTTP/2 keep-alive =====

/// A peer that stops answering while a call is in flight is pinged after
/// the keep-alive interval and cut after the keep-alive timeout; one that
/// answers the pings keeps its connection. Written with raw frames, so
/// the silent peer really never acknowledges a PING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_pings_cut_a_peer_that_stops_answering() {
    let _alone = HEAVY.lock().await;
    let server = TestServer::start_configured(&Backend::Sqlite, |c| {
        c.limits.http2_keepalive_interval = Some(Duration::from_secs(1));
        c.limits.http2_keepalive_timeout = Duration::from_secs(1);
        c.limits.request_timeout = Some(Duration::from_secs(30));
    })
    .await
    .expect("start");
    let addr = server.grpc_addr();

    // The silent peer: preface, empty SETTINGS, then a Check whose body
    // never comes, so the call stays in flight; nothing is ever answered.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    block.push(0x04); // :path, literal without indexing
    block.extend(hpack_str("/grpc.health.v1.Health/Check"));
    block.push(0x01); // :authority
    block.extend(hpack_str("x"));
    block.extend([0x0f, 0x10]); // content-type (static index 31)
    block.extend(hpack_str("application/grpc"));
    block.push(0x00); // te, a new name
    block.extend(hpack_str("te"));
    block.extend(hpack_str("trailers"));
    let mut hello = PREFACE.to_vec();
    hello.extend(raw_frame(0x4, 0, 0, &[]));
    hello.extend(raw_frame(0x1, 0x4, 1, &block)); // END_HEADERS, no END_STREAM
    silent.write_all(&hello).await.expect("write");
    let sent = Instant::now();

    // The honest peer: h2 answers pings; its call is in flight too.
    let (mut send, honest) = h2_connect(addr).await.expect("connect");
    let (honest_response, _honest_body) = send
        .send_request(health_request(addr, None), false)
        .expect("send");

    let (frames, closed) = frames_until_closed(&mut silent, Duration::from_secs(8)).await;
    let ping = frames
        .iter()
        .find(|(_, f)| f.kind == 0x6 && f.flags & 0x1 == 0)
        .map(|(at, _)| *at)
        .expect("a PING from the server");
    let closed = closed.expect("the silent peer's connection was not closed");
    let (pinged_after, cut_after) = (ping - sent, closed - ping);
    assert!(
        pinged_after >= Duration::from_millis(900) && pinged_after < Duration::from_secs(3),
        "pinged after {pinged_after:?}"
    );
    assert!(
        cut_after >= Duration::from_millis(900) && cut_after < Duration::from_secs(3),
        "cut {cut_after:?} after the ping"
    );

    // Pinged as often and answering, the honest peer is still there, its
    // call still waiting for its body.
    assert!(!honest.is_finished(), "the answering peer was cut");
    let waiting = tokio::time::timeout(Duration::from_millis(100), honest_response).await;
    assert!(waiting.is_err(), "the in-flight call ended: {waiting:?}");
    eprintln!("keep-alive: pinged after {pinged_after:?}, cut {cut_after:?} after the ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_preface_is_closed_at_the_handshake_timeout() {
    let _alone = HEAVY.lock().await;
    let server = TestServer::start_configured(&Backend::Sqlite, |c| {
        c.limits.handshake_timeout = Duration::from_secs(1);
    })
    .await
    .expect("start");
    let addr = server.grpc_addr();

    // Half the preface.
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(&PREFACE[..12]).await.expect("write");
    // The whole preface, but no SETTINGS and no request.
    let mut whole = TcpStream::connect(addr).await.expect("connect");
    whole.write_all(PREFACE).await.expect("write");

    let sent = Instant::now();
    let (half_closed, whole_closed) = tokio::join!(
        closed_within(&mut half, Duration::from_secs(5)),
        closed_within(&mut whole, Duration::from_secs(5)),
    );
    let half_closed = half_closed.expect("the half preface was never closed") - sent;
    let whole_closed = whole_closed.expect("the silent HTTP/2 connection was never closed") - sent;
    eprintln!("preface: half closed after {half_closed:?}, silent after {whole_closed:?}");
    for took in [half_closed, whole_closed] {
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_millis(3500),
            "{took:?}"
        );
    }
    honest_check(&server, Duration::from_secs(1))
        .await
        .expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_at_the_header_timeout() {
    let _alone = HEAVY.lock().await;
    let server = TestServer::start_configured(&Backend::Sqlite, |c| {
        c.limits.header_read_timeout = Duration::from_secs(1);
        // Longer, so it is the header timeout that closes.
        c.limits.handshake_timeout = Duration::from_secs(30);
    })
    .await
    .expect("start");
    let addr = server.grpc_addr();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = tcp.into_split();
    let drip = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nhost: localhost\r\nx-slow: ";
        let mut sent = 0usize;
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            if sent > 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sent
    });
    let started = Instant::now();
    // Health answers meanwhile.
    let latency = honest_check(&server, Duration::from_secs(1))
        .await
        .expect("health during slowloris");
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    let took = started.elapsed();
    assert!(closed.is_ok(), "the slow client is still connected");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drip.abort();
    eprintln!("slowloris: closed after {took:?}; health answered in {latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_makes_extra_clients_wait() {
    let _alone = HEAVY.lock().await;
    const CAP: usize = 20;
    const CLIENTS: usize = 50;
    capture_logs();
    let server = TestServer::start_configured(&Backend::Sqlite, |c| {
        c.limits.max_connections = CAP;
    })
    .await
    .expect("start");
    let addr = server.grpc_addr();
    let stats = server.listener_stats();
    let port = format!(":{}", addr.port());

    // Keep-alive HTTP/1.1 requests, so every answered client keeps its
    // connection (and its slot).
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .expect("write");
        clients.push(tcp);
    }
    let started = Instant::now();
    let first = answered(&mut clients, Duration::from_millis(1500)).await;
    let served: usize = first.iter().filter(|a| **a).count();
    assert_eq!(served, CAP, "answered while the cap holds");
    assert_eq!(stats.open_connections(), CAP);
    assert!(stats.limit_waits() >= 1);

    // The served ones leave; waiting ones are served in their place.
    let mut waiting: Vec<TcpStream> = clients
        .into_iter()
        .zip(&first)
        .filter(|(_, served)| !**served)
        .map(|(tcp, _)| tcp)
        .collect();
    let second = answered(&mut waiting, Duration::from_secs(3)).await;
    let later: usize = second.iter().filter(|a| **a).count();
    assert_eq!(later, CAP, "served once the first ones left");

    // Everyone leaves; a new client is served.
    drop(waiting);
    assert!(
        eventually(Duration::from_secs(3), || stats.open_connections() == 0).await,
        "{} still open",
        stats.open_connections()
    );
    honest_check(&server, Duration::from_secs(2))
        .await
        .expect("a new client after the cap");

    let lines = log_lines(&["connection limit reached", &port]);
    if started.elapsed() < Duration::from_secs(10) {
        assert_eq!(lines.len(), 1, "one rate-limited warning: {lines:#?}");
    } else {
        assert!(!lines.is_empty(), "no warning");
    }
    assert!(lines[0].contains("max_connections=20"), "{}", lines[0]);
}

/// Which of `clients` read the start of an HTTP/1.1 response within
/// `wait`.
async fn answered(clients: &mut [TcpStream], wait: Duration) -> Vec<bool> {
    let reads = clients.iter_mut().map(|tcp| async move {
        let mut buf = [0u8; 512];
        matches!(
            tokio::time::timeout(wait, tcp.read(&mut buf)).await,
            Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/1.1 ")
        )
    });
    futures::future::join_all(reads).await
}

// ===== one port, two protocols =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_share_the_port() {
    let _alone = HEAVY.lock().await;
    let server = TestServer::start(&Backend::Sqlite).await.expect("start");
    let addr = server.grpc_addr();

    // HTTP/1.1 reaches the service: an HTTP answer, not a reset.
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 "), "{answer:?}");

    // gRPC over h2c, anonymous and authenticated.
    honest_check(&server, Duration::from_secs(2))
        .await
        .expect("h2c health");
    let org = server
        .admin()
        .organizations()
        .get_organization(tollgate_e2e::v1::GetOrganizationRequest {
            name: "organizations/root".into(),
        })
        .await
        .expect("GetOrganization")
        .into_inner();
    assert_eq!(org.name, "organizations/root");

    // Heads above 16 KiB are refused on both versions.
    let big = "a".repeat(20 * 1024);
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(format!("GET / HTTP/1.1\r\nhost: localhost\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = vec![0u8; 64];
    let n = tcp.read(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let (mut send, _conn) = h2_connect(addr).await.expect("connect");
    let mut req = health_request(addr, None);
    req.headers_mut()
        .insert("x-big", big.parse().expect("a header value"));
    let (response, _body) = send.send_request(req, true).expect("send");
    let response = response.await.expect("an answer");
    assert_eq!(response.status(), 431);
}

// ===== shutdown =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_calls_and_cuts_stuck_ones() {
    let _alone = HEAVY.lock().await;
    let mut server = TestServer::start(&Backend::Sqlite).await.expect("start");
    let addr = server.grpc_addr();
    let stats = server.listener_stats();
    // A call in flight: its body comes after shutdown began.
    let (mut send, _conn) = h2_connect(addr).await.expect("connect");
    let (response, mut body) = send
        .send_request(health_request(addr, None), false)
        .expect("send");
    // A call that never sends its body (the request timeout is 60 s).
    let (mut stuck_send, _stuck_conn) = h2_connect(addr).await.expect("connect");
    let (stuck, _stuck_body) = stuck_send
        .send_request(health_request(addr, None), false)
        .expect("send");
    assert!(
        eventually(Duration::from_secs(2), || stats.in_flight() == 2).await,
        "{} in flight",
        stats.in_flight()
    );

    let started = Instant::now();
    let (stopped, drained) = tokio::join!(server.stop(), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let refused = TcpStream::connect(addr).await.is_err();
        body.send_data(Bytes::from_static(EMPTY_MESSAGE), true)?;
        let ended = outcome(response).await?;
        Ok::<_, anyhow::Error>((refused, ended, started.elapsed()))
    });
    let stop_took = started.elapsed();
    stopped.expect("a clean stop");
    let (refused, ended, answered_after) = drained.expect("the in-flight call");
    assert!(refused, "new connections are refused once shutdown began");
    assert_eq!(
        (ended.http, ended.grpc.as_deref()),
        (200, Some("0")),
        "the in-flight call finished"
    );
    // The stuck call held the drain until the grace period (5 s in the
    // harness), then was cut.
    assert!(
        stop_took >= Duration::from_millis(4500) && stop_took < Duration::from_secs(9),
        "{stop_took:?}"
    );
    assert!(stuck.await.is_err(), "the stuck call was cut");
    eprintln!(
        "drain: in-flight call answered {answered_after:?} after shutdown began; stop took {stop_took:?}"
    );
}

// ===== TLS =====

/// A CA minted for one test, and server certificates it signs.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: tempfile::TempDir,
}

/// A server certificate and its key, PEM, and the certificate's DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Tollgate test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(Self {
            ca,
            dir: tempfile::tempdir()?,
        })
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn ca_path(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("ca.pem");
        std::fs::write(&path, self.ca_pem())?;
        Ok(path)
    }

    /// A certificate for `localhost` and 127.0.0.1 named `name`, with
    /// serial `serial`.
    fn leaf(&self, name: &str, serial: u64) -> anyhow::Result<Leaf> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &*self.ca)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        })
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// Installs `leaf` as the server's files, each replaced atomically
    /// (written aside, then renamed), key first.
    fn install(&self, leaf: &Leaf) -> anyhow::Result<()> {
        for (path, text) in [
            (self.key_path(), &leaf.key_pem),
            (self.cert_path(), &leaf.cert_pem),
        ] {
            let aside = path.with_extension("new");
            std::fs::File::create(&aside)?.write_all(text.as_bytes())?;
            std::fs::rename(&aside, &path)?;
        }
        Ok(())
    }
}

/// The certificate the server at `addr` presents to a client that trusts
/// `ca` and offers `alpn`, and the protocol negotiated.
async fn handshake(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> anyhow::Result<(CertificateDer<'static>, Option<Vec<u8>>)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let tls = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (_, conn) = tls.get_ref();
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no certificate presented")?
        .clone()
        .into_owned();
    Ok((leaf, conn.alpn_protocol().map(<[u8]>::to_vec)))
}

/// `curl` over HTTPS to `https://localhost:<port><path>` trusting `ca`,
/// with `version` (`--http1.1`, `--http2`); the HTTP version curl reports,
/// the status and the body.
fn curl(port: u16, path: &str, ca: &Path, version: &str) -> anyhow::Result<(String, String)> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", version, "--cacert"])
        .arg(ca)
        .args([
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("https://localhost:{port}{path}"),
        ])
        .output()
        .context("running curl")?;
    ensure!(
        out.status.success(),
        "curl {version} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').context("curl's -w line")?;
    Ok((tail.to_owned(), body.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_grpc_and_both_http_versions_and_reloads_its_certificate() {
    let _alone = HEAVY.lock().await;
    let pki = Pki::new().expect("a CA");
    let first = pki.leaf("tollgate-1", 1).expect("a certificate");
    pki.install(&first).expect("files");
    let (cert, key) = (pki.cert_path(), pki.key_path());
    let server = TestServer::start_configured(&Backend::Sqlite, move |c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await
    .expect("start with TLS");
    let addr = server.grpc_addr();
    let ca_der = pki.ca.der().clone();
    let ca_path = pki.ca_path().expect("CA file");

    // gRPC through the client crate, trusting the test CA.
    let client = Client::builder(format!("https://localhost:{}", addr.port()))
        .ca_certificate(pki.ca_pem())
        .api_key(server.admin_key())
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("a TLS client");
    health_check(&client, Duration::from_secs(2))
        .await
        .expect("health over TLS");
    let org = client
        .organizations()
        .get_organization(tollgate_e2e::v1::GetOrganizationRequest {
            name: "organizations/root".into(),
        })
        .await
        .expect("GetOrganization over TLS")
        .into_inner();
    assert_eq!(org.name, "organizations/root");
    // Plain h2c is not served on the TLS port.
    let plain = Client::builder(server.grpc_url())
        .timeout(Duration::from_secs(2))
        .connect_lazy()
        .expect("client");
    assert!(
        health_check(&plain, Duration::from_secs(3)).await.is_err(),
        "plaintext gRPC answered on the TLS port"
    );

    // ALPN picks h2 when offered, http/1.1 otherwise; curl agrees.
    let (presented, alpn) = handshake(addr, &ca_der, &[b"h2", b"http/1.1"])
        .await
        .expect("handshake");
    assert_eq!(presented, first.der);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (_, alpn) = handshake(addr, &ca_der, &[b"http/1.1"])
        .await
        .expect("handshake");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let port = addr.port();
    let ca = ca_path.clone();
    // The HTTP routes (here the OpenAPI document) over both versions.
    let (h1, h2) = tokio::task::spawn_blocking(move || {
        (
            curl(port, "/openapi.json", &ca, "--http1.1"),
            curl(port, "/openapi.json", &ca, "--http2"),
        )
    })
    .await
    .expect("curl task");
    let (h1, doc) = h1.expect("curl --http1.1");
    let (h2, _) = h2.expect("curl --http2");
    assert_eq!(h1, "1.1 200", "{doc}");
    assert_eq!(h2, "2 200");
    assert!(doc.contains("\"openapi\""), "{doc}");
    // Connect over TLS: a health check in JSON.
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&ca_path)
        .args([
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
            "-H",
            "content-type: application/json",
            "-d",
            "{}",
            &format!("https://localhost:{port}/grpc.health.v1.Health/Check"),
        ])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"SERVING\""), "Connect over TLS: {body}");

    // A new certificate on disk is presented without a restart.
    let second = pki.leaf("tollgate-2", 2).expect("a certificate");
    assert_ne!(first.der, second.der);
    pki.install(&second).expect("files");
    let swapped = Instant::now();
    let mut seen = first.der.clone();
    while seen != second.der && swapped.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = handshake(addr, &ca_der, &[b"h2"])
            .await
            .expect("handshake")
            .0;
    }
    let reload_took = swapped.elapsed();
    assert!(
        seen == second.der,
        "the new certificate was not presented within {reload_took:?}"
    );
    assert!(reload_took < Duration::from_secs(5), "{reload_took:?}");

    // Files that do not load leave the current certificate in place.
    std::fs::write(pki.cert_path(), "not a certificate").expect("write");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (still, _) = handshake(addr, &ca_der, &[b"h2"])
        .await
        .expect("handshake after a broken file");
    assert_eq!(still, second.der, "a broken file replaced the certificate");
    health_check(&client, Duration::from_secs(2))
        .await
        .expect("health after the swaps");
    eprintln!("tls: curl {h1} / {h2}; new certificate presented after {reload_took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tls_and_tls_settings_are_checked_at_start() {
    let _alone = HEAVY.lock().await;
    let pki = Pki::new().expect("a CA");
    pki.install(&pki.leaf("tollgate-admin", 7).expect("a certificate"))
        .expect("files");
    let ca_path = pki.ca_path().expect("CA file");
    let dir = tempfile::tempdir().expect("a directory");
    let config = tollgate_server::Config {
        database_url: format!("sqlite://{}", dir.path().join("t.db").display()),
        tls_cert: Some(pki.cert_path()),
        tls_key: Some(pki.key_path()),
        admin_tls: true,
        health_interval: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(2),
        ..Default::default()
    };

    // One file without the other is a start-up error naming the flag.
    let half = tollgate_server::Config {
        tls_key: None,
        ..config.clone()
    };
    let e = tollgate_server::prepare(half)
        .await
        .err()
        .expect("a certificate without a key is refused");
    assert!(format!("{e:#}").contains("--tls-key"), "{e:#}");
    // A certificate file that is not one names the file.
    let broken = dir.path().join("broken.pem");
    std::fs::write(&broken, "garbage").expect("write");
    let e = tollgate_server::prepare(tollgate_server::Config {
        tls_cert: Some(broken),
        ..config.clone()
    })
    .await
    .err()
    .expect("a broken certificate is refused");
    assert!(format!("{e:#}").contains("broken.pem"), "{e:#}");

    let app = tollgate_server::prepare(config).await.expect("prepare");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin_port = admin.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tollgate_server::run(app, grpc, admin, async move {
        let _ = stopped.await;
    }));
    let ready = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match curl(admin_port, "/readyz", &ca_path, "--http1.1") {
                Ok((status, body)) if status.ends_with(" 200") => return Ok(body),
                other if Instant::now() > deadline => return Err(anyhow!("{other:?}")),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
    .await
    .expect("curl task");
    let body = ready.expect("/readyz over TLS");
    assert_eq!(body, "ready\n");
    // Plain HTTP is not served on the admin port any more.
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let plain = http::get(admin_addr, "/healthz").await;
    assert!(
        !plain.as_ref().is_ok_and(|r| r.status == 200),
        "plain HTTP answered on the TLS admin port: {plain:?}"
    );
    let _ = stop.send(());
    task.await.expect("run task").expect("run");
    // The pool closes its SQLite connections in the background; let it
    // finish before the directory goes.
    let wal = dir.path().join("t.db-wal");
    let deadline = Instant::now() + Duration::from_secs(10);
    while wal.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
