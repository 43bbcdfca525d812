//! Rate limits on the real Redis (`TOLLGATE_TEST_REDIS_URL`): replicas
//! share one limit, and when Redis goes away (a proxy the test cuts or
//! stalls) fail-open policies keep serving on local limits, fail-closed
//! ones refuse with UNAVAILABLE, no call waits longer than the configured
//! bound, and the limit is shared again once Redis is back.

use std::{
    net::{SocketAddr, ToSocketAddrs as _},
    time::{Duration, Instant},
};

use tollgate_e2e::{
    Client, Code, TestServer, backends,
    fixtures::{org_name, sa_with_key},
    peers,
    proxy::{Mode, Proxy},
    rpc::RpcResult as _,
    v1::{
        CreateRateLimitPolicyRequest, GetOrganizationRequest, RateLimit, RateLimitPolicy,
        RateLimitSelector, rate_limit, rate_limit_policy::FailureMode,
    },
};

/// The bound a decision waits for Redis in these tests.
const TIMEOUT: Duration = Duration::from_millis(25);
/// What a call may take beyond it on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(750);

fn redis_addr(url: &str) -> SocketAddr {
    let rest = url.trim_start_matches("redis://");
    let host = rest.split('/').next().unwrap_or(rest);
    host.to_socket_addrs().unwrap().next().unwrap()
}

async fn policy(admin: &Client, id: &str, principal: &str, limit: i64, mode: FailureMode) {
    admin
        .rate_limit_policies()
        .create_rate_limit_policy(CreateRateLimitPolicyRequest {
            parent: org_name("root"),
            rate_limit_policy_id: id.into(),
            rate_limit_policy: Some(RateLimitPolicy {
                selector: Some(RateLimitSelector {
                    principal: format!("organizations/root/serviceAccounts/{principal}"),
                    ..Default::default()
                }),
                limit: Some(RateLimit {
                    limit,
                    period: rate_limit::Period::Minute as i32,
                    burst: None,
                }),
                failure_mode: mode as i32,
                ..Default::default()
            }),
        })
        .await
        .expect_ok();
}

/// One GetOrganization: its code and how long it took.
async fn call(client: &Client) -> (Code, Duration) {
    let start = Instant::now();
    let r = client
        .organizations()
        .get_organization(GetOrganizationRequest {
            name: org_name("root"),
        })
        .await;
    (r.map_or_else(|s| s.code(), |_| Code::Ok), start.elapsed())
}

/// Waits until `replica` sees the policies written through the other
/// server (it polls every second).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit() {
    let Some(url) = peers::redis_url() else {
        return;
    };
    for backend in backends() {
        let configure = {
            let url = url.clone();
            move |c: &mut tollgate_server::Config| {
                c.redis_url = Some(url.clone());
                c.redis_timeout = Duration::from_millis(250);
            }
        };
        let mut a = TestServer::start_configured(&backend, configure.clone())
            .await
            .unwrap();
        let mut b = a.start_replica(configure).await.unwrap();
        let admin = a.admin();
        let key = sa_with_key(&admin, "root", "shared", &["viewer"]).await;
        policy(&admin, "shared", "shared", 4, FailureMode::FailOpen).await;
        settle().await;
        let (on_a, on_b) = (a.client(&key), b.client(&key));
        let mut codes = Vec::new();
        for client in [&on_a, &on_b, &on_a, &on_b, &on_b, &on_a] {
            codes.push(call(client).await.0);
        }
        assert_eq!(
            codes,
            [
                Code::Ok,
                Code::Ok,
                Code::Ok,
                Code::Ok,
                Code::ResourceExhausted,
                Code::ResourceExhausted
            ],
            "one limit of 4 across both replicas"
        );
        b.stop().await.unwrap();
        a.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_open_or_closed_within_the_bound_and_heals() {
    let Some(url) = peers::redis_url() else {
        return;
    };
    let backend = backends().remove(0);
    let proxy = Proxy::start(redis_addr(&url)).await.unwrap();
    let via_proxy = format!("redis://{}", proxy.addr);
    let configure = move |c: &mut tollgate_server::Config| {
        c.redis_url = Some(via_proxy.clone());
        c.redis_timeout = TIMEOUT;
    };
    let mut server = TestServer::start_configured(&backend, configure)
        .await
        .unwrap();
    let admin = server.admin();
    let open_key = sa_with_key(&admin, "root", "open", &["viewer"]).await;
    let closed_key = sa_with_key(&admin, "root", "closed", &["viewer"]).await;
    policy(&admin, "open", "open", 3, FailureMode::FailOpen).await;
    policy(&admin, "closed", "closed", 1000, FailureMode::FailClosed).await;
    let (open, closed) = (server.client(&open_key), server.client(&closed_key));
    assert_eq!(call(&open).await.0, Code::Ok);
    assert_eq!(call(&closed).await.0, Code::Ok);

    for mode in [Mode::Stall, Mode::Cut] {
        proxy.set(mode);
        // Fail-closed: UNAVAILABLE, never a long wait.
        for _ in 0..3 {
            let (code, took) = call(&closed).await;
            assert_eq!(code, Code::Unavailable, "{mode:?}");
            assert!(took < TIMEOUT + SLACK, "{mode:?}: {took:?}");
        }
        // Fail-open: served on this replica's own counters, which still
        // hold the limit.
        let mut codes = Vec::new();
        for _ in 0..5 {
            let (code, took) = call(&open).await;
            assert!(took < TIMEOUT + SLACK, "{mode:?}: {took:?}");
            codes.push(code);
        }
        // Never UNAVAILABLE; the first outage starts the replica's own
        // counter (3 a minute) afresh, the second finds it spent.
        assert!(!codes.contains(&Code::Unavailable), "{mode:?}: {codes:?}");
        if mode == Mode::Stall {
            assert_eq!(codes[..3], [Code::Ok; 3], "{codes:?}");
        }
        assert!(
            codes.contains(&Code::ResourceExhausted),
            "{mode:?}: local limits hold: {codes:?}"
        );
    }

    // Redis is back: the limiter reconnects on its own.
    proxy.set(Mode::Open);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if call(&closed).await.0 == Code::Ok {
            break;
        }
        assert!(Instant::now() < deadline, "the limiter did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And limits are shared again: a replica on the same Redis counts
    // with this server.
    let mut replica = server
        .start_replica(move |c: &mut tollgate_server::Config| {
            c.redis_url = Some(url.clone());
            c.redis_timeout = Duration::from_millis(250);
        })
        .await
        .unwrap();
    let again = sa_with_key(&admin, "root", "again", &["viewer"]).await;
    policy(&admin, "again", "again", 2, FailureMode::FailClosed).await;
    settle().await;
    let codes = [
        call(&server.client(&again)).await.0,
        call(&replica.client(&again)).await.0,
        call(&server.client(&again)).await.0,
    ];
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::ResourceExhausted]);
    replica.stop().await.unwrap();
    server.stop().await.unwrap();
}
