//! The Prometheus output of a process that runs one server, as in
//! production. This binary must hold this one test only: the metrics
//! recorder is process-wide, and the first server started in a process is
//! the case under test.

use tollgate_e2e::{Code, TestServer, backends, fixtures::probe, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_server_in_a_process_exports_latency_histograms() {
    // Only the first server of the process is the production case; later
    // ones find the recorder already installed.
    let backend = backends().into_iter().next().expect("a backend");
    let server = TestServer::start(&backend).await.expect("start");
    for _ in 0..2 {
        assert_eq!(probe(&server.admin(), "root").await, Code::Ok);
    }
    let metrics = http::get(server.admin_addr(), "/metrics")
        .await
        .expect("GET /metrics")
        .body;
    let method = "method=\"/tollgate.v1.OrganizationService/GetOrganization\"";
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tollgate_grpc_requests_total{") && l.contains(method)),
        "requests are counted:\n{metrics}"
    );
    let count = metrics
        .lines()
        .find(|l| {
            l.starts_with("tollgate_grpc_request_duration_seconds_count{") && l.contains(method)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(
        count.is_some_and(|c| c >= 2.0),
        "no tollgate_grpc_request_duration_seconds histogram for {method} (count {count:?}) in:\n{metrics}"
    );
    assert!(
        metrics.contains("tollgate_grpc_request_duration_seconds_bucket{")
            && metrics.contains("le=\"0.005\""),
        "the histogram has the configured buckets:\n{metrics}"
    );
}
