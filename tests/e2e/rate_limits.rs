//! Rate limits as callers see them on the wire: exact counts, gRPC
//! RESOURCE_EXHAUSTED with `RetryInfo` and `QuotaFailure`, HTTP 429 with
//! `Retry-After`, and the IETF `RateLimit-Policy` / `RateLimit` headers on
//! allowed responses too.

use std::time::Duration;

use tollgate_e2e::{
    Code, TestServer, backends, curl,
    fixtures::{org_name, sa_with_key},
    v1::GetOrganizationRequest,
};

/// A server whose principals get `limit` calls (of cost 1) per minute
/// when no policy matches.
async fn limited(backend: &tollgate_e2e::Backend, limit: &'static str) -> TestServer {
    TestServer::start_configured(backend, move |c| {
        c.principal_rate_limit = limit.into();
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_over_the_limit_get_resource_exhausted_with_retry_info() {
    for backend in backends() {
        // The admin is limited too: its four calls make both principals.
        let mut server = limited(&backend, "4/m").await;
        let key = sa_with_key(&server.admin(), "root", "caller", &["viewer"]).await;
        let other = sa_with_key(&server.admin(), "root", "other", &["viewer"]).await;
        let client = server.client(&key);
        let mut allowed = 0;
        let mut refusals = Vec::new();
        for _ in 0..6 {
            let req = GetOrganizationRequest {
                name: org_name("root"),
            };
            match client.organizations().get_organization(req).await {
                Ok(r) => {
                    allowed += 1;
                    // Allowed answers say where the caller stands.
                    let md = r.metadata();
                    assert_eq!(
                        md.get("ratelimit-policy").unwrap().to_str().unwrap(),
                        "\"default\";q=4;w=60"
                    );
                    assert!(md.get("ratelimit").is_some());
                }
                Err(s) => refusals.push(s),
            }
        }
        assert_eq!(allowed, 4, "exactly the burst");
        assert_eq!(refusals.len(), 2);
        for s in &refusals {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            let retry = tonic_types::StatusExt::get_details_retry_info(s)
                .and_then(|r| r.retry_delay)
                .expect("RetryInfo");
            // One unit every 15 s.
            assert!(
                retry <= Duration::from_secs(15) && retry > Duration::from_secs(14),
                "{retry:?}"
            );
            let quota = tonic_types::StatusExt::get_details_quota_failure(s).expect("QuotaFailure");
            assert_eq!(quota.violations[0].subject, "default");
            let info = tonic_types::StatusExt::get_details_error_info(s).expect("ErrorInfo");
            assert_eq!(info.reason, "RATE_LIMITED");
        }
        // Another principal has its own allowance.
        let ok = server
            .client(&other)
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: org_name("root"),
            })
            .await;
        assert!(ok.is_ok(), "{ok:?}");
        server.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_get_429_retry_after_and_ratelimit_headers() {
    let Some(_) = curl::bin() else {
        return;
    };
    let backend = backends().remove(0);
    let mut server = limited(&backend, "2/h").await;
    let key = sa_with_key(&server.admin(), "root", "http-caller", &["viewer"]).await;
    let url = format!("http://{}/v1/organizations/root", server.grpc_addr());
    let header = format!("x-api-key: {key}");
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let r = curl::request(curl::Version::Http1, &url, &["-H", &header])
            .await
            .unwrap();
        statuses.push(r.status);
        if r.status == 200 {
            assert_eq!(r.header("ratelimit-policy"), Some("\"default\";q=2;w=3600"));
            let state = r.header("ratelimit").unwrap();
            assert!(state.starts_with("\"default\";r="), "{state}");
        }
        last = Some(r);
    }
    assert_eq!(statuses, [200, 200, 429]);
    let r = last.unwrap();
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1799..=1800).contains(&retry),
        "one unit every 30 min: {retry}"
    );
    assert_eq!(r.header("ratelimit"), Some("\"default\";r=0;t=3600"));
    let body = r.json().unwrap();
    assert_eq!(body["code"], 8, "{body}");
    assert!(
        body["details"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["@type"] == "type.googleapis.com/google.rpc.QuotaFailure"),
        "{body}"
    );
    server.stop().await.unwrap();
}
