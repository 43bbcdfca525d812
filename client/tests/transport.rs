//! The client against a real tonic server on `127.0.0.1:0` (see
//! `support`): credentials, deadlines and retries end to end.

mod support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use support::{KEY, Script, create, get, serve, serve_on};
use tokio::net::TcpListener;
use tollgate_client::{
    BoxError, Client, Settings, Token, TokenSource,
    health::{HealthCheckRequest, ServingStatus},
    tonic::{self, Code, Request, Status, transport::Endpoint},
    v1::ListOrganizationsRequest,
};

#[tokio::test]
async fn credential_header_arrives_on_every_call() -> anyhow::Result<()> {
    let server = serve(Script {
        expect_authorization: Some(format!("Bearer {KEY}")),
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;

    let org = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?
        .into_inner();
    assert_eq!(org.name, "organizations/acme");
    client
        .organizations()
        .create_organization(create("acme"))
        .await?;
    client
        .organizations()
        .list_organizations(ListOrganizationsRequest::default())
        .await?;

    let seen = server.seen.authorization.lock().unwrap().clone();
    assert_eq!(seen, vec![Some(format!("Bearer {KEY}")); 3]);
    Ok(())
}

#[tokio::test]
async fn bearer_token_is_sent_the_same_way() -> anyhow::Result<()> {
    let server = serve(Script {
        expect_authorization: Some("Bearer eyJhbGciOi.jwt.sig".to_owned()),
        ..Script::default()
    })
    .await?;
    let client = Client::builder(&server.url)
        .bearer_token("eyJhbGciOi.jwt.sig")
        .connect()
        .await?;
    client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_call_may_bring_its_own_authorization() -> anyhow::Result<()> {
    let server = serve(Script::default()).await?;
    let client = server.client().connect().await?;
    let mut request = Request::new(get("organizations/acme"));
    request
        .metadata_mut()
        .insert("authorization", "Bearer tg_other".parse()?);
    client.organizations().get_organization(request).await?;
    assert_eq!(
        *server.seen.authorization.lock().unwrap(),
        vec![Some("Bearer tg_other".to_owned())]
    );
    Ok(())
}

#[tokio::test]
async fn without_a_credential_no_header_is_sent() -> anyhow::Result<()> {
    let server = serve(Script::default()).await?;
    let client = Client::builder(&server.url).connect().await?;
    client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?;
    assert_eq!(*server.seen.authorization.lock().unwrap(), vec![None]);
    Ok(())
}

#[tokio::test]
async fn get_is_retried_on_unavailable_until_it_succeeds() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 2,
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;

    let org = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?
        .into_inner();

    assert_eq!(org.name, "organizations/acme");
    assert_eq!(server.attempts(), 3);
    // Every attempt carried the credential, not only the first.
    assert_eq!(
        *server.seen.authorization.lock().unwrap(),
        vec![Some(format!("Bearer {KEY}")); 3]
    );
    Ok(())
}

#[tokio::test]
async fn list_is_retried_on_unavailable() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 1,
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;
    let page = client
        .organizations()
        .list_organizations(ListOrganizationsRequest::default())
        .await?
        .into_inner();
    assert_eq!(page.organizations.len(), 1);
    assert_eq!(server.attempts(), 2);
    Ok(())
}

#[tokio::test]
async fn create_is_never_retried() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 1,
        ..Script::default()
    })
    .await?;
    let client = server.client().max_retries(5).connect().await?;

    let status = client
        .organizations()
        .create_organization(create("acme"))
        .await
        .expect_err("the server said UNAVAILABLE");

    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "scripted outage");
    assert_eq!(server.attempts(), 1);
    Ok(())
}

#[tokio::test]
async fn retries_stop_after_max_retries() -> anyhow::Result<()> {
    for max_retries in [0, 1, 2, 3] {
        let server = serve(Script {
            fail_first: usize::MAX,
            ..Script::default()
        })
        .await?;
        let client = server.client().max_retries(max_retries).connect().await?;

        let status = client
            .organizations()
            .get_organization(get("organizations/acme"))
            .await
            .expect_err("the server is always UNAVAILABLE");

        // The caller sees the server's own last answer.
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "scripted outage");
        assert_eq!(server.attempts(), max_retries as usize + 1);
    }
    Ok(())
}

#[tokio::test]
async fn default_max_retries_is_three() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: usize::MAX,
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;
    let _ = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await;
    assert_eq!(server.attempts(), 4);
    Ok(())
}

#[tokio::test]
async fn other_errors_are_not_retried() -> anyhow::Result<()> {
    let server = serve(Script {
        expect_authorization: Some("Bearer someone-else".to_owned()),
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?;
    let status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("wrong credential");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(server.attempts(), 1);
    Ok(())
}

#[tokio::test]
async fn slow_server_hits_the_timeout() -> anyhow::Result<()> {
    let server = serve(Script {
        delay: Duration::from_secs(5),
        ..Script::default()
    })
    .await?;
    let client = server
        .client()
        .timeout(Duration::from_millis(200))
        .connect()
        .await?;

    let started = Instant::now();
    let status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("the server is too slow");
    let elapsed = started.elapsed();

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    // A timeout is not retried: the deadline covers the whole call.
    assert_eq!(server.attempts(), 1);
    // The server was told how long it had.
    let sent = server.seen.grpc_timeout.lock().unwrap().clone();
    let sent = sent[0].as_deref().expect("grpc-timeout header");
    assert!(sent.ends_with('u') || sent.ends_with('n'), "{sent}");
    Ok(())
}

#[tokio::test]
async fn a_shorter_request_timeout_wins() -> anyhow::Result<()> {
    let server = serve(Script {
        delay: Duration::from_secs(5),
        ..Script::default()
    })
    .await?;
    let client = server.client().connect().await?; // 10 s default
    let mut request = Request::new(get("organizations/acme"));
    request.set_timeout(Duration::from_millis(200));

    let started = Instant::now();
    let status = client
        .organizations()
        .get_organization(request)
        .await
        .expect_err("the server is too slow");

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn retries_never_run_past_the_deadline() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: usize::MAX,
        ..Script::default()
    })
    .await?;
    let client = Client::builder(&server.url)
        .timeout(Duration::from_millis(300))
        .max_retries(1000)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(100))
        .connect()
        .await?;

    let started = Instant::now();
    let status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("the server is always UNAVAILABLE");

    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(server.attempts() > 1);
    assert!(server.attempts() < 1000);
    Ok(())
}

#[tokio::test]
async fn reads_are_retried_over_connection_errors() -> anyhow::Result<()> {
    // Reserve a port, then leave it closed so the first attempts are refused.
    let reserved = TcpListener::bind("127.0.0.1:0").await?;
    let addr = reserved.local_addr()?;
    drop(reserved);

    let client = Client::builder(format!("http://{addr}"))
        .max_retries(50)
        .retry_backoff(Duration::from_millis(20), Duration::from_millis(40))
        .connect_lazy()?;
    let call = tokio::spawn(async move {
        client
            .organizations()
            .get_organization(get("organizations/acme"))
            .await
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = serve_on(TcpListener::bind(addr).await?, addr, Script::default());

    let org = call.await??.into_inner();
    assert_eq!(org.name, "organizations/acme");
    assert_eq!(server.attempts(), 1);
    Ok(())
}

#[tokio::test]
async fn writes_are_not_retried_over_connection_errors() -> anyhow::Result<()> {
    let reserved = TcpListener::bind("127.0.0.1:0").await?;
    let addr = reserved.local_addr()?;
    drop(reserved);

    // A backoff this long would show up in the elapsed time if the call
    // were retried even once.
    let client = Client::builder(format!("http://{addr}"))
        .retry_backoff(Duration::from_secs(5), Duration::from_secs(5))
        .connect_lazy()?;
    let started = Instant::now();
    let status = client
        .organizations()
        .create_organization(create("acme"))
        .await
        .expect_err("nothing listens");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn eager_connect_to_a_closed_port_fails() -> anyhow::Result<()> {
    let reserved = TcpListener::bind("127.0.0.1:0").await?;
    let addr = reserved.local_addr()?;
    drop(reserved);
    let error = Client::builder(format!("http://{addr}"))
        .connect()
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(error, tollgate_client::Error::Transport { .. }),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn health_check_goes_through_the_same_transport() -> anyhow::Result<()> {
    let server = serve(Script::default()).await?;
    let client = server.client().connect().await?;
    let response = client
        .health()
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(response.status(), ServingStatus::Serving);
    Ok(())
}

#[tokio::test]
async fn clones_share_one_client() -> anyhow::Result<()> {
    let server = serve(Script::default()).await?;
    let client = Client::builder(&server.url).api_key(KEY).connect().await?;
    let calls = (0..8).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .organizations()
                .get_organization(get(&format!("organizations/org-{i}")))
                .await
        })
    });
    for call in calls {
        call.await??;
    }
    assert_eq!(server.attempts(), 8);
    Ok(())
}

#[tokio::test]
async fn extreme_settings_do_not_panic() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 1,
        ..Script::default()
    })
    .await?;
    // A zero backoff retries at once; huge timeouts and backoffs saturate.
    let client = Client::builder(&server.url)
        .timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .max_retries(u32::MAX)
        .retry_backoff(Duration::ZERO, Duration::ZERO)
        .connect()
        .await?;
    client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?;
    assert_eq!(server.attempts(), 2);

    // With a backoff longer than the deadline the first failure is final:
    // a fresh server, so its one scripted failure has not been used up.
    let server = serve(Script {
        fail_first: 1,
        ..Script::default()
    })
    .await?;
    // (A finite deadline: with an unbounded one the drawn wait, anywhere
    // up to centuries, may well fit inside it.)
    let client = Client::builder(&server.url)
        .timeout(Duration::from_secs(10))
        .retry_backoff(Duration::MAX, Duration::MAX)
        .connect_lazy()?;
    let status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("the one failure is not retried");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "scripted outage");
    assert_eq!(server.attempts(), 1);
    Ok(())
}

#[tokio::test]
async fn from_channel_adds_credential_deadline_and_retries() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 1,
        expect_authorization: Some(format!("Bearer {KEY}")),
        ..Script::default()
    })
    .await?;
    // A channel configured by the caller, with settings the builder does
    // not offer.
    let channel = Endpoint::from_shared(server.url.clone())?
        .http2_keep_alive_interval(Duration::from_secs(30))
        .tcp_nodelay(true)
        .connect()
        .await?;
    let client = Client::from_channel(
        channel,
        Settings::new()
            .api_key(KEY)
            .retry_backoff(Duration::from_millis(1), Duration::from_millis(5)),
    )?;

    let org = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?
        .into_inner();
    assert_eq!(org.name, "organizations/acme");
    // Retried once after the scripted UNAVAILABLE, with the credential on
    // both attempts and a deadline sent to the server.
    assert_eq!(server.attempts(), 2);
    assert_eq!(
        *server.seen.authorization.lock().unwrap(),
        vec![Some(format!("Bearer {KEY}")); 2]
    );
    assert!(
        server
            .seen
            .grpc_timeout
            .lock()
            .unwrap()
            .iter()
            .all(Option::is_some)
    );

    // Writes are still sent once.
    let status = client
        .organizations()
        .create_organization(create("acme"))
        .await;
    assert!(status.is_ok(), "{status:?}");
    assert_eq!(server.attempts(), 3);
    Ok(())
}

#[tokio::test]
async fn from_channel_applies_the_timeout() -> anyhow::Result<()> {
    let server = serve(Script {
        delay: Duration::from_secs(5),
        ..Script::default()
    })
    .await?;
    let channel = Endpoint::from_shared(server.url.clone())?.connect_lazy();
    let client =
        Client::from_channel(channel, Settings::new().timeout(Duration::from_millis(200)))?;
    let started = Instant::now();
    let status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("the server is too slow");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

/// Hands out `token-1`, `token-2`, ... and counts how often it was asked,
/// as a source that refreshes an access token would.
#[derive(Default)]
struct Rotating {
    asked: AtomicUsize,
}

#[tonic::async_trait]
impl TokenSource for Rotating {
    async fn token(&self) -> Result<Token, BoxError> {
        let n = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Token::new(format!("token-{n}")))
    }
}

#[tokio::test]
async fn a_token_source_is_asked_on_every_attempt() -> anyhow::Result<()> {
    let server = serve(Script {
        fail_first: 1,
        ..Script::default()
    })
    .await?;
    let source = Arc::new(Rotating::default());
    let client = Client::builder(&server.url)
        .token_source(source.clone())
        .retry_backoff(Duration::from_millis(1), Duration::from_millis(5))
        .connect()
        .await?;

    // Attempt 1 fails with UNAVAILABLE; the retry asks for a new token.
    client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await?;
    client
        .organizations()
        .create_organization(create("acme"))
        .await?;
    client
        .organizations()
        .list_organizations(ListOrganizationsRequest::default())
        .await?;

    let seen = server.seen.authorization.lock().unwrap().clone();
    let expected: Vec<_> = (1..=4).map(|n| Some(format!("Bearer token-{n}"))).collect();
    assert_eq!(seen, expected);
    assert_eq!(source.asked.load(Ordering::SeqCst), 4);

    // A call with its own `authorization` does not ask the source.
    let mut request = Request::new(get("organizations/acme"));
    request
        .metadata_mut()
        .insert("authorization", "Bearer tg_other".parse()?);
    client.organizations().get_organization(request).await?;
    assert_eq!(source.asked.load(Ordering::SeqCst), 4);
    assert_eq!(
        server.seen.authorization.lock().unwrap().last(),
        Some(&Some("Bearer tg_other".to_owned()))
    );
    Ok(())
}

/// A source whose identity provider is down; it knows a secret it must
/// never leak.
struct Broken {
    calls: Mutex<usize>,
}

#[tonic::async_trait]
impl TokenSource for Broken {
    async fn token(&self) -> Result<Token, BoxError> {
        *self.calls.lock().map_err(|_| "poisoned")? += 1;
        Err("identity provider unreachable".into())
    }
}

#[tokio::test]
async fn a_failing_token_source_fails_the_call_before_sending_it() -> anyhow::Result<()> {
    let server = serve(Script::default()).await?;
    let source = Arc::new(Broken {
        calls: Mutex::new(0),
    });
    let client = Client::builder(&server.url)
        .token_source(source.clone())
        .connect()
        .await?;
    let status: Status = client
        .organizations()
        .get_organization(get("organizations/acme"))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("identity provider unreachable"),
        "{status:?}"
    );
    // Nothing reached the server, and a failed source is not retried.
    assert_eq!(server.attempts(), 0);
    assert_eq!(*source.calls.lock().unwrap(), 1);
    // The builder's Debug does not expose the source either.
    let debug = format!(
        "{:?}",
        Client::builder(&server.url).token_source(source.clone())
    );
    assert!(debug.contains("<token source>"), "{debug}");
    Ok(())
}
