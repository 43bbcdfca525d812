//! Rate limits as callers see them on the wire: exact counts, gRPC
//! RESOURCE_EXHAUSTED with `RetryInfo` and `QuotaFailure`, HTTP 429 with
//! `Retry-After`, and the IETF `RateLimit-Policy` / `RateLimit` headers on
//! allowed responses too.

use std::time::Duration;

use tollgate_client::v1::usage_service_client::UsageServiceClient;
use tollgate_e2e::{
    Code, TestServer, backends, curl,
    fixtures::{org_name, sa_with_key},
    v1::{GetOrganizationRequest, GetUsageRequest},
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
async fn rate_limiting_off_serves_every_call_without_headers_but_counts_usage() {
    let backend = backends().remove(0);
    let mut server = TestServer::start_configured(&backend, |c| {
        c.principal_rate_limit = "2/h".into();
        c.rate_limiting = false;
    })
    .await
    .unwrap();
    let key = sa_with_key(&server.admin(), "root", "unlimited", &["viewer"]).await;
    let client = server.client(&key);
    for i in 0..5 {
        let r = client
            .organizations()
            .get_organization(GetOrganizationRequest {
                name: org_name("root"),
            })
            .await
            .unwrap_or_else(|s| panic!("call {i} refused with the layer off: {s:?}"));
        assert!(r.metadata().get("ratelimit-policy").is_none());
        assert!(r.metadata().get("ratelimit").is_none());
    }
    // Not limiting is not metering less: the calls are in the usage.
    assert!(
        server.flush_usage().await.unwrap() >= 1,
        "usage rows written"
    );
    let usage = UsageServiceClient::new(server.admin().channel())
        .get_usage(GetUsageRequest {
            parent: org_name("root"),
            granularity: "total".into(),
            method: "/tollgate.v1.OrganizationService/GetOrganization".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((usage.total_calls, usage.total_cost), (5, 5), "{usage:?}");
    server.stop().await.unwrap();
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

mod policies {
    use std::time::Duration;

    use serde_json::json;
    use tollgate_e2e::{
        Client, Code, TestServer, each_backend,
        fixtures::{org_name, sa_with_key},
        rpc::RpcResult as _,
        v1::{
            CheckRateLimitRequest, CreateRateLimitPolicyRequest, DeleteRateLimitPolicyRequest,
            GetOrganizationRequest, RateLimit, RateLimitDescriptor, RateLimitPolicy,
            RateLimitQuota, RateLimitSelector, rate_limit,
            rate_limit_descriptor::Entry,
            rate_limit_policy::{Algorithm, KeyBy},
            rate_limit_quota,
            rate_limit_service_client::RateLimitServiceClient,
            rate_limit_status::Code as StatusCode,
        },
    };

    const GET_ORG: &str = "/tollgate.v1.OrganizationService/GetOrganization";

    async fn create(client: &Client, id: &str, policy: RateLimitPolicy) -> String {
        client
            .rate_limit_policies()
            .create_rate_limit_policy(CreateRateLimitPolicyRequest {
                parent: org_name("root"),
                rate_limit_policy_id: id.into(),
                rate_limit_policy: Some(policy),
            })
            .await
            .expect_ok()
            .name
    }

    fn per_minute(limit: i64) -> Option<RateLimit> {
        Some(RateLimit {
            limit,
            period: rate_limit::Period::Minute as i32,
            burst: None,
        })
    }

    fn on_get_org() -> Option<RateLimitSelector> {
        Some(RateLimitSelector {
            method: GET_ORG.into(),
            ..Default::default()
        })
    }

    /// Calls GetOrganization `n` times with `client`: the codes.
    async fn calls(client: &Client, n: usize) -> Vec<Code> {
        let mut codes = Vec::new();
        for _ in 0..n {
            let r = client
                .organizations()
                .get_organization(GetOrganizationRequest {
                    name: org_name("root"),
                })
                .await;
            codes.push(r.map_or_else(|s| s.code(), |_| Code::Ok));
        }
        codes
    }

    fn allowed(codes: &[Code]) -> usize {
        codes.iter().filter(|c| **c == Code::Ok).count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_policy_limits_exactly_and_applies_and_lifts_without_a_restart() {
        each_backend(async |server: &mut TestServer| {
            let admin = server.admin();
            let key = sa_with_key(&admin, "root", "limited", &["viewer"]).await;
            let caller = server.client(&key);
            let name = create(
                &admin,
                "get-org",
                RateLimitPolicy {
                    selector: on_get_org(),
                    limit: per_minute(3),
                    ..Default::default()
                },
            )
            .await;
            let codes = calls(&caller, 5).await;
            assert_eq!(allowed(&codes), 3, "{codes:?}");
            // The refusal names the policy.
            let s = caller
                .organizations()
                .get_organization(GetOrganizationRequest {
                    name: org_name("root"),
                })
                .await
                .unwrap_err();
            let quota = tonic_types::StatusExt::get_details_quota_failure(&s).unwrap();
            assert_eq!(quota.violations[0].subject, name);
            // Other methods are not selected.
            assert!(
                caller
                    .users()
                    .list_users(tollgate_e2e::v1::ListUsersRequest {
                        parent: org_name("root"),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
            );
            // Deleting it lifts the limit at once.
            admin
                .rate_limit_policies()
                .delete_rate_limit_policy(DeleteRateLimitPolicyRequest {
                    name,
                    etag: String::new(),
                })
                .await
                .expect_ok();
            // The replica reloads on its own write's signal: within
            // moments, not at the next poll.
            let deadline = std::time::Instant::now() + Duration::from_millis(500);
            while allowed(&calls(&caller, 1).await) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the deletion did not apply"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(allowed(&calls(&caller, 3).await), 3);
            Ok(())
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sliding_windows_shadows_and_quotas() {
        each_backend(async |server: &mut TestServer| {
            let admin = server.admin();
            let a = sa_with_key(&admin, "root", "sliding", &["viewer"]).await;
            let b = sa_with_key(&admin, "root", "shadowed", &["viewer"]).await;
            let c = sa_with_key(&admin, "root", "quota", &["viewer"]).await;
            let principal = |id: &str| format!("organizations/root/serviceAccounts/{id}");
            create(
                &admin,
                "sliding",
                RateLimitPolicy {
                    selector: Some(RateLimitSelector {
                        principal: principal("sliding"),
                        ..Default::default()
                    }),
                    limit: per_minute(4),
                    algorithm: Algorithm::SlidingWindow as i32,
                    ..Default::default()
                },
            )
            .await;
            create(
                &admin,
                "shadow",
                RateLimitPolicy {
                    selector: Some(RateLimitSelector {
                        principal: principal("shadowed"),
                        ..Default::default()
                    }),
                    limit: per_minute(1),
                    shadow: true,
                    ..Default::default()
                },
            )
            .await;
            create(
                &admin,
                "daily",
                RateLimitPolicy {
                    selector: Some(RateLimitSelector {
                        principal: principal("quota"),
                        ..Default::default()
                    }),
                    quota: Some(RateLimitQuota {
                        limit: 2,
                        period: rate_limit_quota::Period::Day as i32,
                    }),
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(
                allowed(&calls(&server.client(&a), 6).await),
                4,
                "hard count"
            );
            // The metrics registry is the process's, shared by every test
            // server in it: compare before and after.
            let shadow_refused = async || -> anyhow::Result<u64> {
                let metrics = tollgate_e2e::http::get(server.admin_addr(), "/metrics").await?;
                Ok(metrics
                    .body
                    .lines()
                    .find(|l| {
                        l.starts_with("tollgate_ratelimit_decisions_total")
                            && l.contains("rateLimitPolicies/shadow\"")
                            && l.contains("shadow_refused")
                    })
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0))
            };
            let before = shadow_refused().await?;
            assert_eq!(
                allowed(&calls(&server.client(&b), 4).await),
                4,
                "shadow never refuses"
            );
            // … but counts: three of the four were over its limit.
            assert_eq!(shadow_refused().await? - before, 3);
            let quota = server.client(&c);
            assert_eq!(allowed(&calls(&quota, 3).await), 2, "daily quota");
            let s = quota
                .organizations()
                .get_organization(GetOrganizationRequest {
                    name: org_name("root"),
                })
                .await
                .unwrap_err();
            assert_eq!(s.code(), Code::ResourceExhausted);
            let retry = tonic_types::StatusExt::get_details_retry_info(&s)
                .and_then(|r| r.retry_delay)
                .unwrap();
            assert!(retry <= Duration::from_secs(86_400) && retry > Duration::ZERO);
            let md = s.metadata();
            assert_eq!(
                md.get("ratelimit-policy").unwrap().to_str().unwrap(),
                "\"daily\";q=2;w=86400"
            );
            Ok(())
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn descriptors_through_check_rate_limit_and_envoy() {
        let grpcurl = tollgate_e2e::peers::grpcurl();
        each_backend(async |server: &mut TestServer| {
            let admin = server.admin();
            let name = create(
                &admin,
                "tenants",
                RateLimitPolicy {
                    selector: Some(RateLimitSelector {
                        descriptors: [("tenant".to_owned(), String::new())].into(),
                        ..Default::default()
                    }),
                    limit: per_minute(3),
                    key_by: KeyBy::Descriptor as i32,
                    ..Default::default()
                },
            )
            .await;
            let key = sa_with_key(&admin, "root", "asker", &["viewer"]).await;
            let mut rl = RateLimitServiceClient::new(server.client(&key).channel());
            let ask = |tenant: &str, hits: u32, dry_run: bool| CheckRateLimitRequest {
                parent: org_name("root"),
                descriptors: vec![RateLimitDescriptor {
                    entries: vec![Entry {
                        key: "tenant".into(),
                        value: tenant.into(),
                    }],
                }],
                hits_addend: hits,
                dry_run,
            };
            let r = rl.check_rate_limit(ask("t1", 2, false)).await.expect_ok();
            assert_eq!(r.overall_code, StatusCode::Ok as i32);
            assert_eq!(r.statuses[0].policy, name);
            assert_eq!(r.statuses[0].remaining, 1);
            // A dry run takes nothing.
            let r = rl.check_rate_limit(ask("t1", 1, true)).await.expect_ok();
            assert_eq!(r.statuses[0].remaining, 0);
            let r = rl.check_rate_limit(ask("t1", 2, false)).await.expect_ok();
            assert_eq!(r.overall_code, StatusCode::OverLimit as i32);
            assert!(r.statuses[0].retry_after.is_some());
            // Another tenant has its own counter.
            let r = rl.check_rate_limit(ask("t2", 3, false)).await.expect_ok();
            assert_eq!(r.overall_code, StatusCode::Ok as i32);
            // A request without descriptors is refused, naming the field.
            let bad = rl
                .check_rate_limit(CheckRateLimitRequest {
                    descriptors: vec![],
                    ..ask("t1", 1, false)
                })
                .await
                .unwrap_err();
            assert_eq!(bad.code(), Code::InvalidArgument);

            // Envoy's API, from grpcurl: the same policy, the same counters.
            if let Some(bin) = &grpcurl {
                let body = json!({"domain": "root", "hitsAddend": 2, "descriptors": [
                    {"entries": [{"key": "tenant", "value": "t1"}]},
                    {"entries": [{"key": "tenant", "value": "t3"}]},
                    {"entries": [{"key": "other", "value": "x"}]}
                ]});
                let mut cmd = std::process::Command::new(bin);
                cmd.args(["-plaintext", "-d"])
                    .arg(body.to_string())
                    .arg(server.grpc_addr().to_string())
                    .arg("envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit");
                let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let r: serde_json::Value = serde_json::from_slice(&out.stdout)?;
                assert_eq!(r["overallCode"], "OVER_LIMIT", "{r}");
                assert_eq!(r["statuses"][0]["code"], "OVER_LIMIT");
                assert_eq!(r["statuses"][0]["currentLimit"]["requestsPerUnit"], 3);
                assert_eq!(r["statuses"][0]["currentLimit"]["unit"], "MINUTE");
                assert!(r["statuses"][0]["durationUntilReset"].is_string());
                assert_eq!(r["statuses"][1]["code"], "OK");
                assert_eq!(r["statuses"][1]["limitRemaining"], 1);
                assert_eq!(r["statuses"][2]["code"], "OK");
                assert!(r["statuses"][2].get("currentLimit").is_none());
                let headers = r["responseHeadersToAdd"].as_array().unwrap();
                assert!(headers.iter().any(|h| h["key"] == "retry-after"), "{r}");
            }
            Ok(())
        })
        .await;
    }
}
