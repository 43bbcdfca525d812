//! Trace export over OTLP/HTTP (protobuf), and a collector that goes down:
//! calls go on as fast as before, and the spans that could not be sent are
//! dropped and counted. Its own binary: the tracer is process-wide, and
//! this one exports over HTTP to a receiver the test takes down.

use std::time::{Duration, Instant};

use tollgate_client::v1::GetOrganizationRequest;
use tollgate_e2e::{
    Backend, TestServer,
    otlp::{Receiver, SERVER},
};
use tollgate_server::config::OtlpProtocol;

/// `tollgate_trace_spans_dropped_total{reason="export_failed"}`.
async fn dropped(server: &TestServer) -> f64 {
    let body = tollgate_e2e::http::get(server.admin_addr(), "/metrics")
        .await
        .expect("metrics")
        .body;
    body.lines()
        .filter(|l| {
            l.starts_with("tollgate_trace_spans_dropped_total{")
                && l.contains("reason=\"export_failed\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The median latency of `n` reads.
async fn median_latency(server: &TestServer, n: usize) -> Duration {
    let client = server.admin();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        client
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: "organizations/root".into(),
            })
            .await
            .expect("a call succeeds whatever the collector does");
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn http_export_works_and_a_collector_down_costs_calls_nothing() {
    let receiver = Receiver::start().await.expect("receiver");
    let endpoint = receiver.http_url();
    let server = TestServer::start_configured(&Backend::Sqlite, move |c| {
        c.otlp_endpoint = Some(endpoint.clone());
        c.otlp_protocol = Some(OtlpProtocol::HttpProtobuf);
        c.trace_sample_ratio = Some(1.0);
    })
    .await
    .expect("start");

    // Up: spans arrive over HTTP.
    let up = median_latency(&server, 100).await;
    tollgate_server::otel::flush(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !receiver
        .spans()
        .iter()
        .any(|s| s.kind == SERVER && s.name == "tollgate.v1.OrganizationService/GetOrganization")
    {
        assert!(Instant::now() < deadline, "no server span over OTLP/HTTP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = dropped(&server).await;

    // Down: every export fails.
    receiver.refuse(true);
    let down = median_latency(&server, 100).await;
    tollgate_server::otel::flush(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = dropped(&server).await;
    while after < before + 100.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = dropped(&server).await;
    }
    assert!(
        after >= before + 100.0,
        "the 100 calls' spans are counted as dropped: {before} → {after}"
    );
    // The same class of latency: a call never waits on the exporter (a
    // wait would cost a round trip to the collector, or its timeout).
    assert!(
        down < up * 3 + Duration::from_millis(5),
        "median latency with the collector down {down:?}, up {up:?}"
    );

    // Back up: spans flow again.
    receiver.refuse(false);
    let seen = receiver.spans().len();
    median_latency(&server, 5).await;
    tollgate_server::otel::flush(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.spans().len() <= seen {
        assert!(Instant::now() < deadline, "export did not resume");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
